//! What an admission request for an OpenModel means for the ledger (pure):
//! the `spec.changed` entry to append before the change may be admitted,
//! with the requesting user, or none. Changes of the model itself
//! ([`admission_entry`]) and of its replicas through the `scale`
//! subresource (`kubectl scale`, a HorizontalPodAutoscaler:
//! [`scale_entry`]) are both recorded.

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation as AdmissionOperation};
use kube::{Resource, ResourceExt};
use openmodel_ledger::entry::{Actor, Entry, EntryBody, ObjectRef, Operation, Source, SpecChanged};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::crd::OpenModel;
use crate::records::{object_ref, spec_document};

/// The entry recording `request`, or why none is needed (`Err` with the
/// reason, for the log): dry runs change nothing, updates that leave the
/// spec as it was (labels, finalizers, the status) change no spec, and
/// CONNECT is not a change.
pub fn admission_entry(
    request: &AdmissionRequest<OpenModel>,
    cluster: &str,
) -> Result<Entry, &'static str> {
    if request.dry_run {
        return Err("a dry run changes nothing");
    }
    let (operation, model) = match request.operation {
        AdmissionOperation::Create => (Operation::Create, request.object.as_ref()),
        AdmissionOperation::Update => (Operation::Update, request.object.as_ref()),
        AdmissionOperation::Delete => (Operation::Delete, request.old_object.as_ref()),
        AdmissionOperation::Connect => return Err("CONNECT is not a change"),
    };
    let model = model.ok_or("the request carries no object")?;
    let document = |m: Option<&OpenModel>| m.map_or_else(|| json!({}), |m| spec_document(&m.spec));
    let old = document(request.old_object.as_ref());
    let new = document(request.object.as_ref());
    let patch = json_patch::diff(&old, &new);
    if patch.0.is_empty() && operation == Operation::Update {
        return Err("the spec is unchanged");
    }
    let patch = match serde_json::to_value(&patch) {
        Ok(Value::Array(operations)) => operations,
        _ => return Err("the JSON Patch did not serialize to an array"),
    };
    let actor = actor(&request.user_info);
    let mut object = object_ref(model);
    // A create is seen before the name is generated, when generateName is
    // used; the request names the object in any case.
    if object.name.is_empty() {
        object.name = request.name.clone();
    }
    if object.namespace.is_empty() {
        object.namespace = request.namespace.clone().unwrap_or_default();
    }
    let from = request
        .old_object
        .as_ref()
        .and_then(|old| old.metadata.generation)
        .unwrap_or(0);
    let uid = model.uid().unwrap_or_default();
    let dedupe_key = change_key(&uid, &from.to_string(), operation, &actor, &patch);
    Ok(spec_changed(
        cluster, object, actor, dedupe_key, operation, patch,
    ))
}

/// The path of the replicas in the document `spec.changed` patches
/// describe: the CRD's scale subresource's `specReplicasPath`
/// (`.spec.runtime.replicas`) as a JSON Pointer.
pub const REPLICAS_POINTER: &str = "/spec/runtime/replicas";

/// The entry recording a change of a model's replicas through its `scale`
/// subresource (an `autoscaling/v1` Scale), or why none is needed: dry
/// runs, and updates that leave the replicas as they were (an autoscaler
/// writes the same count again). The patch is the one the same change made
/// through the model itself would have.
pub fn scale_entry(
    request: &AdmissionRequest<DynamicObject>,
    cluster: &str,
) -> Result<Entry, &'static str> {
    if request.dry_run {
        return Err("a dry run changes nothing");
    }
    if request.operation != AdmissionOperation::Update {
        return Err("only an UPDATE changes a scale");
    }
    let scale = request
        .object
        .as_ref()
        .ok_or("the request carries no Scale")?;
    fn replicas(scale: Option<&DynamicObject>) -> Option<&Value> {
        scale.and_then(|s| s.data.pointer("/spec/replicas"))
    }
    let new = replicas(Some(scale)).ok_or("the Scale carries no spec.replicas")?;
    let old = replicas(request.old_object.as_ref());
    if old == Some(new) {
        return Err("the replicas are unchanged");
    }
    let op = if old.is_some() { "replace" } else { "add" };
    let patch = vec![json!({"op": op, "path": REPLICAS_POINTER, "value": new})];
    let actor = actor(&request.user_info);
    let uid = scale.metadata.uid.clone().filter(|uid| !uid.is_empty());
    let object = ObjectRef {
        api_version: OpenModel::api_version(&()).into_owned(),
        generation: None,
        kind: OpenModel::kind(&()).into_owned(),
        name: request.name.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        uid: uid.clone(),
    };
    // The Scale's resourceVersion is its model's: it names the state the
    // change starts from, as the generation does for other changes (a
    // scale does not always move the generation's base in a way a retry
    // repeats).
    let from = request
        .old_object
        .as_ref()
        .and_then(|old| old.metadata.resource_version.clone())
        .unwrap_or_default();
    let dedupe_key = change_key(
        uid.as_deref().unwrap_or_default(),
        &format!("scale/{from}"),
        Operation::Update,
        &actor,
        &patch,
    );
    Ok(spec_changed(
        cluster,
        object,
        actor,
        dedupe_key,
        Operation::Update,
        patch,
    ))
}

/// Who asked, as the API server authenticated them: name, uid, groups and
/// the authenticator's extra attributes (the credential id, what an
/// impersonator set).
fn actor(user: &UserInfo) -> Actor {
    Actor {
        extra: user.extra.clone().unwrap_or_default(),
        groups: user.groups.clone().unwrap_or_default(),
        uid: user.uid.clone().filter(|uid| !uid.is_empty()),
        username: user.username.clone().unwrap_or_default(),
    }
}

/// An admission's `spec.changed` entry.
fn spec_changed(
    cluster: &str,
    object: ObjectRef,
    actor: Actor,
    dedupe_key: String,
    operation: Operation,
    patch: Vec<Value>,
) -> Entry {
    Entry {
        appender: None,
        time: None,
        cluster: cluster.to_string(),
        object: Some(object),
        actor: Some(actor),
        source: Source::Admission,
        dedupe_key: Some(dedupe_key),
        body: EntryBody::SpecChanged(SpecChanged {
            operation,
            patch,
            confirms: Vec::new(),
            request_uid: None,
        }),
    }
}

/// The dedupe key of one change: the same for every call the API server
/// makes for it, different for any other change.
///
/// The API server calls the webhook again, with a new request uid, whenever
/// it retries a write that lost a race (for example with the operator
/// adding its finalizer), so the request uid cannot be the key. A change is
/// instead named by what it starts from (the model's `uid`, and `from`: the
/// generation of the spec it changes, or `scale/<resourceVersion>` for a
/// change through the scale subresource) and what it is (the operation, who
/// asks, and the patch): a retry repeats all of these, any other change
/// differs in one.
pub fn change_key(
    uid: &str,
    from: &str,
    operation: Operation,
    actor: &Actor,
    patch: &[Value],
) -> String {
    let what = json!({"operation": operation, "actor": actor, "patch": patch});
    let digest = Sha256::digest(what.to_string().as_bytes());
    format!(
        "{uid}/spec.changed/admission/{from}/{}",
        hex::encode(&digest[..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::model;
    use kube::core::admission::AdmissionReview;

    /// An admission request as the API server sends it.
    fn request(
        operation: &str,
        object: Option<&OpenModel>,
        old: Option<&OpenModel>,
        dry_run: bool,
    ) -> AdmissionRequest<OpenModel> {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "7f0c-request",
                "kind": {"group": "serving.openmodel.dev", "version": "v1alpha1", "kind": "OpenModel"},
                "resource": {"group": "serving.openmodel.dev", "version": "v1alpha1", "resource": "openmodels"},
                "name": "minilm",
                "namespace": "search",
                "operation": operation,
                "userInfo": {"username": "alice", "uid": "u-1", "groups": ["search-team", "system:authenticated"]},
                "object": object,
                "oldObject": old,
                "dryRun": dry_run,
            }
        });
        let review: AdmissionReview<OpenModel> = serde_json::from_value(review).unwrap();
        review.try_into().unwrap()
    }

    /// `request` as the API server sends it again for the same change, or
    /// as another user would send it.
    fn resent(
        mut request: AdmissionRequest<OpenModel>,
        uid: &str,
        user: &str,
    ) -> AdmissionRequest<OpenModel> {
        request.uid = uid.into();
        request.user_info.username = Some(user.into());
        request
    }

    fn changed(entry: &Entry) -> &SpecChanged {
        match &entry.body {
            EntryBody::SpecChanged(c) => c,
            other => panic!("not spec.changed: {other:?}"),
        }
    }

    #[test]
    fn a_create_records_the_whole_spec_and_the_user() {
        let new = model();
        let entry = admission_entry(&request("CREATE", Some(&new), None, false), "c").unwrap();
        assert_eq!(entry.source, Source::Admission);
        let actor = entry.actor.as_ref().unwrap();
        assert_eq!(actor.username, "alice");
        assert_eq!(actor.uid.as_deref(), Some("u-1"));
        assert_eq!(actor.groups, ["search-team", "system:authenticated"]);
        let change = changed(&entry);
        assert_eq!(change.operation, Operation::Create);
        assert_eq!(change.patch[0]["path"], "/spec");
        let key = entry.dedupe_key.as_deref().unwrap();
        assert!(key.starts_with("uid-1/spec.changed/admission/0/"), "{key}");
        entry.validate().unwrap();
    }

    #[test]
    fn an_update_records_only_what_changed() {
        let old = model();
        let mut new = model();
        new.spec.runtime.replicas = 4;
        let entry =
            admission_entry(&request("UPDATE", Some(&new), Some(&old), false), "c").unwrap();
        assert_eq!(
            Value::Array(changed(&entry).patch.clone()),
            json!([{"op": "replace", "path": "/spec/runtime/replicas", "value": 4}])
        );
        assert_eq!(changed(&entry).operation, Operation::Update);
    }

    /// The generation limits travel with the rest of the spec: a change of
    /// one is recorded as such, not lost on the way through the typed
    /// request.
    #[test]
    fn a_generation_limit_change_is_recorded() {
        let mut old = model();
        old.spec.model.task = crate::crd::Task::TextGeneration;
        old.spec.generation = Some(crate::crd::Generation {
            max_tokens: Some(256),
            kv_cache_bytes: Some("512Mi".into()),
            ..Default::default()
        });
        let mut new = old.clone();
        new.spec.generation.as_mut().unwrap().max_tokens = Some(1024);
        let entry =
            admission_entry(&request("UPDATE", Some(&new), Some(&old), false), "c").unwrap();
        assert_eq!(
            Value::Array(changed(&entry).patch.clone()),
            json!([{"op": "replace", "path": "/spec/generation/maxTokens", "value": 1024}])
        );
    }

    #[test]
    fn a_retried_call_for_the_same_change_gives_the_same_entry() {
        let mut old = model();
        old.metadata.generation = Some(3);
        let mut new = old.clone();
        new.spec.runtime.replicas = 4;
        new.finalizers_mut()
            .push("added.meanwhile/by-the-operator".into());
        let first = request("UPDATE", Some(&new), Some(&old), false);
        let entry = admission_entry(&first, "c").unwrap();
        // The API server's retry: a new request uid, the same change.
        let retry = admission_entry(&resent(first.clone(), "9a1d-retry", "alice"), "c").unwrap();
        assert_eq!(retry, entry);
        let key = entry.dedupe_key.as_deref().unwrap();
        assert!(key.starts_with("uid-1/spec.changed/admission/3/"), "{key}");

        // Another user making the same change is another entry.
        let bob = admission_entry(&resent(first, "5e2b-other", "bob"), "c").unwrap();
        assert_ne!(bob.dedupe_key, entry.dedupe_key);
        // So is the same change again from a later generation,
        let mut later = old.clone();
        later.metadata.generation = Some(5);
        let again = admission_entry(&request("UPDATE", Some(&new), Some(&later), false), "c");
        assert_ne!(again.unwrap().dedupe_key, entry.dedupe_key);
        // and another change from the same generation.
        let mut other = old.clone();
        other.spec.runtime.replicas = 5;
        let other = admission_entry(&request("UPDATE", Some(&other), Some(&old), false), "c");
        assert_ne!(other.unwrap().dedupe_key, entry.dedupe_key);
    }

    #[test]
    fn a_delete_records_who_deleted() {
        let old = model();
        let entry = admission_entry(&request("DELETE", None, Some(&old), false), "c").unwrap();
        assert_eq!(changed(&entry).operation, Operation::Delete);
        assert_eq!(
            Value::Array(changed(&entry).patch.clone()),
            json!([{"op": "remove", "path": "/spec"}])
        );
        assert_eq!(entry.object.unwrap().name, old.name_any());
    }

    #[test]
    fn dry_runs_and_spec_free_updates_are_not_recorded() {
        let old = model();
        assert!(admission_entry(&request("CREATE", Some(&old), None, true), "c").is_err());
        let mut labelled = old.clone();
        labelled.labels_mut().insert("team".into(), "search".into());
        assert_eq!(
            admission_entry(&request("UPDATE", Some(&labelled), Some(&old), false), "c")
                .unwrap_err(),
            "the spec is unchanged"
        );
    }

    /// A request for the `scale` subresource, as the API server sends it
    /// for `kubectl scale` (an autoscaling/v1 Scale, the model's uid and
    /// resourceVersion in its metadata).
    fn scale_request(old: i64, new: i64, dry_run: bool) -> AdmissionRequest<DynamicObject> {
        let scale = |replicas: i64| {
            json!({
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {"name": "minilm", "namespace": "search", "uid": "uid-1", "resourceVersion": "41"},
                "spec": {"replicas": replicas},
                "status": {"replicas": old},
            })
        };
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "3c1e-scale",
                "kind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                "resource": {"group": "serving.openmodel.dev", "version": "v1alpha1", "resource": "openmodels"},
                "subResource": "scale",
                "name": "minilm",
                "namespace": "search",
                "operation": "UPDATE",
                "userInfo": {
                    "username": "carol",
                    "groups": ["system:authenticated"],
                    "extra": {"authentication.kubernetes.io/credential-id": ["X509SHA256=ab12"]},
                },
                "object": scale(new),
                "oldObject": scale(old),
                "dryRun": dry_run,
            }
        });
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(review).unwrap();
        review.try_into().unwrap()
    }

    #[test]
    fn a_scale_records_the_replicas_and_who_scaled() {
        let entry = scale_entry(&scale_request(1, 3, false), "c").unwrap();
        assert_eq!(entry.source, Source::Admission);
        let actor = entry.actor.as_ref().unwrap();
        assert_eq!(actor.username, "carol");
        assert_eq!(
            actor.extra["authentication.kubernetes.io/credential-id"],
            ["X509SHA256=ab12"]
        );
        assert_eq!(
            Value::Array(changed(&entry).patch.clone()),
            json!([{"op": "replace", "path": "/spec/runtime/replicas", "value": 3}])
        );
        let object = entry.object.as_ref().unwrap();
        assert_eq!(
            (
                object.kind.as_str(),
                object.name.as_str(),
                object.namespace.as_str()
            ),
            ("OpenModel", "minilm", "search")
        );
        assert_eq!(object.uid.as_deref(), Some("uid-1"));
        let key = entry.dedupe_key.as_deref().unwrap();
        assert!(
            key.starts_with("uid-1/spec.changed/admission/scale/41/"),
            "{key}"
        );
        entry.validate().unwrap();
        // The same scale again is the same entry; another count is another.
        assert_eq!(
            scale_entry(&scale_request(1, 3, false), "c").unwrap(),
            entry
        );
        let other = scale_entry(&scale_request(1, 4, false), "c").unwrap();
        assert_ne!(other.dedupe_key, entry.dedupe_key);
    }

    #[test]
    fn dry_run_and_unchanged_scales_are_not_recorded() {
        assert!(scale_entry(&scale_request(1, 3, true), "c").is_err());
        assert_eq!(
            scale_entry(&scale_request(2, 2, false), "c").unwrap_err(),
            "the replicas are unchanged"
        );
    }
}
