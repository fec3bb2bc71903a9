//! What an admission request for an OpenModel means for the ledger (pure):
//! the `spec.changed` entry to append before the change may be admitted,
//! with the requesting user, or none.

use kube::ResourceExt;
use kube::core::admission::{AdmissionRequest, Operation as AdmissionOperation};
use openmodel_ledger::entry::{Actor, Entry, EntryBody, Operation, Source, SpecChanged};
use serde_json::{Value, json};

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
    let user = &request.user_info;
    let mut object = object_ref(model);
    // A create is seen before the name is generated, when generateName is
    // used; the request names the object in any case.
    if object.name.is_empty() {
        object.name = request.name.clone();
    }
    if object.namespace.is_empty() {
        object.namespace = request.namespace.clone().unwrap_or_default();
    }
    Ok(Entry {
        time: None,
        cluster: cluster.to_string(),
        object: Some(object),
        actor: Some(Actor {
            groups: user.groups.clone().unwrap_or_default(),
            uid: user.uid.clone().filter(|uid| !uid.is_empty()),
            username: user.username.clone().unwrap_or_default(),
        }),
        source: Source::Admission,
        // One entry per admission request, however often it is retried.
        dedupe_key: Some(format!(
            "{}/spec.changed/admission/{}",
            model.uid().unwrap_or_default(),
            request.uid
        )),
        body: EntryBody::SpecChanged(SpecChanged {
            operation,
            patch,
            request_uid: Some(request.uid.clone()),
        }),
    })
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
        assert_eq!(change.request_uid.as_deref(), Some("7f0c-request"));
        assert_eq!(change.patch[0]["path"], "/spec");
        assert_eq!(
            entry.dedupe_key.as_deref(),
            Some("uid-1/spec.changed/admission/7f0c-request")
        );
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
}
