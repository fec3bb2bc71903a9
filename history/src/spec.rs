//! A model's spec rebuilt from the ledger: `spec.changed` entries carry an
//! RFC 6902 JSON Patch from the previously recorded `{"spec": …}` document
//! to the new one, so applying them in log order to `{}` gives the spec of
//! every recorded generation.
//!
//! The controller's entries (`source: controller`) say what was stored, one
//! per generation; the admission webhook's say what was asked for (a request
//! may still have failed). [`replay`] applies the controller's.

use openmodel_ledger::entry::{Entry, EntryBody, Source};
use serde_json::{Value, json};

use crate::Error;

/// Where a spec document lists the model's datasets.
pub const DATASETS_POINTER: &str = "/spec/provenance/datasets";

/// Applies one recorded patch to `document`; `what` names the entry in the
/// error. On error `document` may be partly patched: drop it.
pub fn apply(document: &mut Value, patch: &[Value], what: &str) -> Result<(), Error> {
    let failed = |why: String| Error::Patch {
        what: what.to_owned(),
        why,
    };
    let operations: json_patch::Patch =
        serde_json::from_value(Value::Array(patch.to_vec())).map_err(|e| failed(e.to_string()))?;
    json_patch::patch(document, &operations.0).map_err(|e| failed(e.to_string()))
}

/// The `{"spec": …}` document the ledger records for object `uid` before
/// `generation`: the object's earlier controller `spec.changed` patches (in
/// log order) applied to `{}`. `None` when there are none.
pub fn replay<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    uid: &str,
    generation: i64,
) -> Result<Option<Value>, Error> {
    let mut document: Option<Value> = None;
    for entry in entries {
        let Some(object) = entry.object.as_ref() else {
            continue;
        };
        let EntryBody::SpecChanged(change) = &entry.body else {
            continue;
        };
        if entry.source != Source::Controller
            || object.uid.as_deref() != Some(uid)
            || object.generation.unwrap_or(0) >= generation
        {
            continue;
        }
        let doc = document.get_or_insert_with(|| json!({}));
        apply(
            doc,
            &change.patch,
            &format!("generation {:?}", object.generation),
        )?;
    }
    Ok(document)
}

#[cfg(test)]
mod tests {
    use openmodel_ledger::entry::{ObjectRef, Operation, SpecChanged};

    use super::*;

    fn change(source: Source, uid: &str, generation: i64, patch: Value) -> Entry {
        Entry {
            time: None,
            cluster: "c".into(),
            object: Some(ObjectRef {
                api_version: "serving.openmodel.dev/v1alpha1".into(),
                kind: "OpenModel".into(),
                namespace: "ns".into(),
                name: "m".into(),
                uid: Some(uid.into()),
                generation: Some(generation),
            }),
            actor: None,
            source,
            dedupe_key: None,
            body: EntryBody::SpecChanged(SpecChanged {
                operation: if generation == 1 {
                    Operation::Create
                } else {
                    Operation::Update
                },
                patch: patch.as_array().unwrap().clone(),
                request_uid: None,
            }),
        }
    }

    #[test]
    fn the_controller_s_patches_rebuild_each_generation_of_one_object() {
        let log = [
            change(
                Source::Controller,
                "u1",
                1,
                json!([{"op": "add", "path": "/spec", "value": {"replicas": 1}}]),
            ),
            // The webhook's entry for the same change is not applied twice.
            change(
                Source::Admission,
                "u1",
                2,
                json!([{"op": "replace", "path": "/spec/replicas", "value": 9}]),
            ),
            change(
                Source::Controller,
                "u1",
                2,
                json!([{"op": "replace", "path": "/spec/replicas", "value": 2}]),
            ),
        ];
        assert_eq!(replay(&log, "u1", 1).unwrap(), None);
        assert_eq!(
            replay(&log, "u1", 2).unwrap(),
            Some(json!({"spec": {"replicas": 1}}))
        );
        assert_eq!(
            replay(&log, "u1", 3).unwrap(),
            Some(json!({"spec": {"replicas": 2}}))
        );
        // Another object of the same name (a new uid) starts afresh.
        assert_eq!(replay(&log, "u2", 3).unwrap(), None);
    }

    #[test]
    fn a_patch_that_does_not_apply_names_its_generation() {
        let log = [change(
            Source::Controller,
            "u1",
            1,
            json!([{"op": "remove", "path": "/spec/missing"}]),
        )];
        let error = replay(&log, "u1", 2).unwrap_err().to_string();
        assert!(error.contains("generation Some(1)"), "{error}");
    }
}
