//! The ledger entries the operator writes about a model, built from what it
//! knows (pure; [`crate::journal`] appends them).
//!
//! Every entry carries a dedupe key naming the event it records, so a
//! repeated reconcile or a restarted operator appends it at most once:
//!
//! | kind | once per | dedupe key |
//! |---|---|---|
//! | `spec.changed` | generation | `<uid>/spec.changed/<generation>` |
//! | `dataset.referenced` | generation and new or changed dataset | `<uid>/dataset.referenced/<generation>/<name>` |
//! | `weights.verified` | generation and digest | `<uid>/weights.verified/<generation>/<digest>` |
//! | `model.deployed` | generation and digest | `<uid>/model.deployed/<generation>/<digest>` |
//! | `model.retired` | object | `<uid>/model.retired` |
//!
//! `spec.changed` carries an RFC 6902 JSON Patch from the previously
//! recorded `{"spec": …}` document to the current one; the previous document
//! is rebuilt by replaying the object's earlier `spec.changed` patches
//! ([`openmodel_history::spec::replay`]),
//! so the ledger alone holds the whole history of every spec.

use kube::{Resource, ResourceExt};
use openmodel_history::confirm::{self, Pending, Step};
use openmodel_history::spec::DATASETS_POINTER;
use openmodel_ledger::entry::{
    DatasetReferenced, Entry, EntryBody, ModelDeployed, ModelRetired, ObjectRef, Operation, Source,
    SpecChanged, WeightsVerified,
};
use serde_json::{Value, json};

use crate::crd::{DatasetRef, OpenModel, OpenModelSpec};
use crate::observe::VerifiedWeights;

/// The object an entry is about: the model at its current generation.
pub fn object_ref(model: &OpenModel) -> ObjectRef {
    ObjectRef {
        api_version: OpenModel::api_version(&()).into_owned(),
        generation: model.metadata.generation,
        kind: OpenModel::kind(&()).into_owned(),
        name: model.name_any(),
        namespace: model.namespace().unwrap_or_default(),
        uid: model.uid(),
    }
}

/// The document `spec.changed` patches describe: `{"spec": …}`.
pub fn spec_document(spec: &OpenModelSpec) -> Value {
    json!({ "spec": spec })
}

/// A controller entry about `model`, deduplicated by
/// `<uid>/<kind>[/<event>]`.
fn entry(model: &OpenModel, cluster: &str, event: Option<String>, body: EntryBody) -> Entry {
    let mut key = format!("{}/{}", model.uid().unwrap_or_default(), body.kind());
    if let Some(event) = event {
        key = format!("{key}/{event}");
    }
    Entry {
        appender: None,
        time: None,
        cluster: cluster.to_string(),
        object: Some(object_ref(model)),
        actor: None,
        source: Source::Controller,
        dedupe_key: Some(key),
        body,
    }
}

/// The entries for the model's current generation, given the spec the
/// ledger last recorded for it (`None` if it has none): `spec.changed` when
/// the spec differs, then `dataset.referenced` for every dataset that is new
/// or changed.
/// The `spec.changed` entry names the admission entries it `confirms`
/// ([`confirmed_admissions`]).
pub fn spec_entries(
    model: &OpenModel,
    previous: Option<&Value>,
    confirms: Vec<u64>,
    cluster: &str,
) -> Vec<Entry> {
    let generation = model.metadata.generation.unwrap_or(0);
    let current = spec_document(&model.spec);
    let empty = json!({});
    let patch = json_patch::diff(previous.unwrap_or(&empty), &current);
    if patch.0.is_empty() {
        return Vec::new();
    }
    let patch = match serde_json::to_value(&patch) {
        Ok(Value::Array(operations)) => operations,
        _ => unreachable!("a JSON Patch serializes to an array"),
    };
    let operation = if previous.is_some() {
        Operation::Update
    } else {
        Operation::Create
    };
    let mut entries = vec![entry(
        model,
        cluster,
        Some(generation.to_string()),
        EntryBody::SpecChanged(SpecChanged {
            confirms,
            operation,
            patch,
            request_uid: None,
        }),
    )];
    let recorded: Vec<DatasetRef> = previous
        .and_then(|doc| doc.pointer(DATASETS_POINTER))
        .and_then(|datasets| serde_json::from_value(datasets.clone()).ok())
        .unwrap_or_default();
    let datasets = model.spec.provenance.iter().flat_map(|p| &p.datasets);
    for dataset in datasets.filter(|d| !recorded.contains(d)) {
        entries.push(entry(
            model,
            cluster,
            Some(format!("{generation}/{}", dataset.name)),
            EntryBody::DatasetReferenced(DatasetReferenced {
                digest: dataset.digest.clone(),
                license: dataset.license.clone(),
                name: dataset.name.clone(),
                role: dataset.role.as_str().into(),
                uri: dataset.uri.clone(),
            }),
        ));
    }
    entries
}

/// The admission entries among `pending` (the model's not yet confirmed, in
/// log order) that the `spec.changed` of its current generation confirms:
/// one per generation since `previous` (recorded at `previous_generation`),
/// whose patches lead to the current spec
/// ([`openmodel_history::confirm::chain`]).
pub fn confirmed_admissions(
    model: &OpenModel,
    previous: Option<&Value>,
    previous_generation: i64,
    pending: &[Pending],
) -> Vec<u64> {
    let current = spec_document(&model.spec);
    let step = Step {
        previous,
        from: previous_generation,
        current: &current,
        to: model.metadata.generation.unwrap_or(0),
    };
    confirm::chain(step, pending)
}

/// `weights.verified`: a pod of the current generation fetched the weights
/// and their digest matched.
pub fn weights_verified(model: &OpenModel, verified: &VerifiedWeights, cluster: &str) -> Entry {
    entry(
        model,
        cluster,
        Some(format!(
            "{}/{}",
            model.metadata.generation.unwrap_or(0),
            verified.digest
        )),
        EntryBody::WeightsVerified(WeightsVerified {
            digest: verified.digest.clone(),
            pod: Some(verified.pod.clone()),
            source: model.spec.model.source.clone(),
        }),
    )
}

/// `model.deployed`: the rollout of the current generation completed with
/// verified weights; `weights_entry` is the index of their
/// `weights.verified` entry.
pub fn model_deployed(
    model: &OpenModel,
    digest: &str,
    weights_entry: Option<u64>,
    cluster: &str,
) -> Entry {
    entry(
        model,
        cluster,
        Some(format!(
            "{}/{digest}",
            model.metadata.generation.unwrap_or(0)
        )),
        EntryBody::ModelDeployed(ModelDeployed {
            digest: digest.to_string(),
            image: Some(model.spec.runtime.server_image().into()),
            replicas: u32::try_from(model.spec.runtime.replicas).unwrap_or(0),
            weights_entry,
        }),
    )
}

/// Whether `logged`, the entry the log holds under the dedupe key of
/// `entry`, records the same event: equal but for what the log added (the
/// time, the authenticated appender) and what two observers of one event
/// may see differently (which pod verified a digest; which admissions a
/// generation confirms, when one observer read admissions logged later).
/// Anything else under the key is another event's entry, and `entry` is not
/// recorded by it.
pub fn same_event(logged: &Entry, entry: &Entry) -> bool {
    let event = |entry: &Entry| {
        let mut event = entry.clone();
        event.time = None;
        event.appender = None;
        match &mut event.body {
            EntryBody::WeightsVerified(verified) => verified.pod = None,
            EntryBody::SpecChanged(changed) => changed.confirms.clear(),
            _ => {}
        }
        event
    };
    event(logged) == event(entry)
}

/// `model.retired`: the model was deleted; `last_digest` is what it served.
pub fn model_retired(model: &OpenModel, last_digest: Option<&str>, cluster: &str) -> Entry {
    entry(
        model,
        cluster,
        None,
        EntryBody::ModelRetired(ModelRetired {
            last_digest: last_digest.map(str::to_string),
            reason: Some("the OpenModel was deleted".into()),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DatasetRole, Format, Generation, Provenance, Task};
    use crate::resources::fixtures::{DIGEST, model};

    fn patch_of(entry: &Entry) -> Value {
        match &entry.body {
            EntryBody::SpecChanged(c) => Value::Array(c.patch.clone()),
            other => panic!("not spec.changed: {other:?}"),
        }
    }

    fn dataset(name: &str, uri: &str) -> DatasetRef {
        DatasetRef {
            name: name.into(),
            uri: uri.into(),
            digest: None,
            license: None,
            role: DatasetRole::Training,
        }
    }

    #[test]
    fn the_first_generation_is_a_create_of_the_whole_spec() {
        let m = model();
        let entries = spec_entries(&m, None, Vec::new(), "prod");
        assert_eq!(entries.len(), 1);
        let change = &entries[0];
        assert_eq!(change.dedupe_key.as_deref(), Some("uid-1/spec.changed/1"));
        assert_eq!(
            patch_of(change),
            json!([{"op": "add", "path": "/spec", "value": serde_json::to_value(&m.spec).unwrap()}])
        );
        change.validate().unwrap();
    }

    #[test]
    fn an_update_records_the_patch_and_new_datasets_only() {
        let mut m = model();
        m.spec.provenance = Some(Provenance {
            datasets: vec![dataset("a", "hf://datasets/x/a@1")],
            ..Provenance::default()
        });
        let previous = spec_document(&m.spec);
        m.metadata.generation = Some(2);
        m.spec.runtime.replicas = 3;
        m.spec
            .provenance
            .as_mut()
            .unwrap()
            .datasets
            .push(dataset("b", "https://example.com/b"));
        let entries = spec_entries(&m, Some(&previous), Vec::new(), "prod");
        assert_eq!(
            patch_of(&entries[0]),
            json!([
                {"op": "add", "path": "/spec/provenance/datasets/1", "value": {"name": "b", "uri": "https://example.com/b", "role": "training"}},
                {"op": "replace", "path": "/spec/runtime/replicas", "value": 3}
            ])
        );
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[1].dedupe_key.as_deref(),
            Some("uid-1/dataset.referenced/2/b")
        );
        for e in &entries {
            e.validate().unwrap();
        }
        // Nothing changed: nothing to record.
        assert!(spec_entries(&m, Some(&spec_document(&m.spec)), Vec::new(), "prod").is_empty());
    }

    /// Moving a model onto GPUs records the new fields in the spec patch,
    /// and the deployment names the image that serves: the CUDA build.
    #[test]
    fn gpu_settings_are_recorded_and_the_serving_image_deployed() {
        let mut m = model();
        let previous = spec_document(&m.spec);
        m.metadata.generation = Some(2);
        m.spec.runtime.resources.gpu = 1;
        m.spec.runtime.resources.gpu_resource = Some("amd.com/gpu".into());
        m.spec.runtime.runtime_class_name = Some("nvidia".into());
        m.spec.runtime.cuda_image = Some("r.example/openmodel-server:1-cuda".into());
        let entries = spec_entries(&m, Some(&previous), Vec::new(), "c");
        assert_eq!(
            patch_of(&entries[0]),
            json!([
                {"op": "add", "path": "/spec/runtime/cudaImage", "value": "r.example/openmodel-server:1-cuda"},
                {"op": "replace", "path": "/spec/runtime/resources/gpu", "value": 1},
                {"op": "add", "path": "/spec/runtime/resources/gpuResource", "value": "amd.com/gpu"},
                {"op": "add", "path": "/spec/runtime/runtimeClassName", "value": "nvidia"}
            ])
        );
        let deployed = model_deployed(&m, &format!("sha256:{}", "a".repeat(64)), Some(4), "c");
        match &deployed.body {
            EntryBody::ModelDeployed(d) => {
                assert_eq!(
                    d.image.as_deref(),
                    Some("r.example/openmodel-server:1-cuda")
                )
            }
            other => panic!("not model.deployed: {other:?}"),
        }
        deployed.validate().unwrap();
    }

    /// A model that becomes a text generator, then changes a generation
    /// limit: each patch names the new fields, and replaying them gives the
    /// spec back.
    #[test]
    fn generation_settings_are_recorded_and_replayed() {
        let mut m = model();
        let mut log = spec_entries(&m, None, Vec::new(), "c");
        let first = spec_document(&m.spec);
        m.metadata.generation = Some(2);
        m.spec.model.task = Task::TextGeneration;
        m.spec.model.format = Some(Format::Gguf);
        m.spec.generation = Some(Generation {
            max_tokens: Some(256),
            ..Generation::default()
        });
        let second_entries = spec_entries(&m, Some(&first), Vec::new(), "c");
        assert_eq!(
            patch_of(&second_entries[0]),
            json!([
                {"op": "add", "path": "/spec/generation", "value": {"maxTokens": 256}},
                {"op": "add", "path": "/spec/model/format", "value": "gguf"},
                {"op": "replace", "path": "/spec/model/task", "value": "text-generation"}
            ])
        );
        log.extend(second_entries);
        let second = spec_document(&m.spec);
        m.metadata.generation = Some(3);
        m.spec.generation.as_mut().unwrap().max_tokens = Some(1024);
        let third_entries = spec_entries(&m, Some(&second), Vec::new(), "c");
        assert_eq!(
            patch_of(&third_entries[0]),
            json!([{"op": "replace", "path": "/spec/generation/maxTokens", "value": 1024}])
        );
        log.extend(third_entries);
        assert_eq!(
            openmodel_history::spec::replay(&log, "uid-1", 4).unwrap(),
            Some(spec_document(&m.spec))
        );
    }

    #[test]
    fn replaying_recorded_patches_rebuilds_each_generation() {
        let mut m = model();
        let mut log = spec_entries(&m, None, Vec::new(), "c");
        let first = spec_document(&m.spec);
        m.metadata.generation = Some(2);
        m.spec.runtime.replicas = 5;
        log.extend(spec_entries(&m, Some(&first), Vec::new(), "c"));
        let second = spec_document(&m.spec);
        assert_eq!(
            openmodel_history::spec::replay(&log, "uid-1", 1).unwrap(),
            None
        );
        assert_eq!(
            openmodel_history::spec::replay(&log, "uid-1", 2).unwrap(),
            Some(first)
        );
        assert_eq!(
            openmodel_history::spec::replay(&log, "uid-1", 3).unwrap(),
            Some(second)
        );
        // Another object with the same name (a new uid) starts afresh.
        assert_eq!(
            openmodel_history::spec::replay(&log, "uid-2", 3).unwrap(),
            None
        );
    }

    #[test]
    fn only_the_pod_that_verified_may_differ_within_one_event() {
        let m = model();
        let verified = |pod: &str| {
            weights_verified(
                &m,
                &VerifiedWeights {
                    digest: DIGEST.into(),
                    pod: pod.into(),
                },
                "c",
            )
        };
        let mut logged = verified("a");
        logged.time = Some(openmodel_ledger::entry::Timestamp(1_000_000));
        assert!(same_event(&logged, &verified("a")));
        assert!(same_event(&logged, &verified("b")));
        let mut other_source = verified("a");
        if let EntryBody::WeightsVerified(w) = &mut other_source.body {
            w.source = "hf://someone/else@1".into();
        }
        assert!(!same_event(&logged, &other_source));

        // A change's entry must match in full: another user or another
        // patch under its key is another change.
        let change = spec_entries(&m, None, Vec::new(), "c").remove(0);
        let mut forged = change.clone();
        forged.actor = Some(openmodel_ledger::entry::Actor {
            extra: Default::default(),
            groups: vec![],
            uid: None,
            username: "mallory".into(),
        });
        assert!(same_event(&change, &change.clone()));
        assert!(!same_event(&forged, &change));
        let mut other_patch = change.clone();
        if let EntryBody::SpecChanged(c) = &mut other_patch.body {
            c.patch = vec![json!({"op": "add", "path": "/spec", "value": {}})];
        }
        assert!(!same_event(&other_patch, &change));
    }

    #[test]
    fn runtime_events_are_keyed_by_generation_and_digest() {
        let m = model();
        let verified = VerifiedWeights {
            digest: DIGEST.into(),
            pod: "minilm-abc".into(),
        };
        let w = weights_verified(&m, &verified, "c");
        assert_eq!(
            w.dedupe_key.as_deref(),
            Some(format!("uid-1/weights.verified/1/{DIGEST}").as_str())
        );
        let d = model_deployed(&m, DIGEST, Some(7), "c");
        assert_eq!(
            d.dedupe_key.as_deref(),
            Some(format!("uid-1/model.deployed/1/{DIGEST}").as_str())
        );
        let r = model_retired(&m, Some(DIGEST), "c");
        assert_eq!(r.dedupe_key.as_deref(), Some("uid-1/model.retired"));
        for e in [w, d, r] {
            e.validate().unwrap();
        }
    }
}
