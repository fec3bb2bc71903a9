//! What was live at a moment: the models serving then, with the weights
//! digest and the datasets behind each, replayed from the log.
//!
//! Pure: [`inventory`] folds entries (in log order, as read from a ledger,
//! an export or the ledger service) into an [`Inventory`]; nothing is read
//! or written. `openmodel audit inventory --at T` prints it after proving
//! that the entries it read are the complete signed log up to `T`.
//!
//! The rules, for the entries logged at or before `at`:
//!
//! - **A model** is one Kubernetes object, named by namespace and name (and
//!   told apart from a later object of the same name by its uid). It is
//!   **live** once a `spec.changed` or `model.deployed` entry about it is
//!   seen, and stops being live at its `model.retired`.
//! - **Its digest** is that of its last `model.deployed` (what the rollout
//!   put in front of clients); before its first rollout, that of its last
//!   `weights.verified`, and the answer says which kind it came from.
//! - **Its datasets** are those its spec declared at that moment, each
//!   answered with its latest `dataset.referenced` entry (the evidence) where
//!   there is one. The spec is rebuilt by applying JSON Patches in log order,
//!   as the operator does: those of the controller's `spec.changed` entries
//!   (`source: controller`, one per stored generation); for a model that has
//!   none, those of its other `spec.changed` entries (admission, cli). The
//!   admission webhook's entries say who asked for a change, the
//!   controller's what was stored; both carry the same patch, so only one
//!   kind is applied. If no `spec.changed` was logged for the model, or a
//!   patch does not apply to the spec rebuilt so far (the answer then carries
//!   a warning), every dataset it ever referenced is listed instead (latest
//!   entry per dataset name).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use openmodel_ledger::entry::{DatasetReferenced, EntryBody, Operation, Source, Timestamp};
use openmodel_ledger::store::StoredEntry;

use crate::confirm::Confirmations;
use crate::spec::{self, DATASETS_POINTER};

/// Every model live at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// The moment: entries logged at or before it count.
    #[serde(serialize_with = "as_text")]
    pub at: Timestamp,
    /// The entries that were replayed: indexes `0..entries`.
    pub entries: u64,
    /// The live models, by namespace and name.
    pub models: Vec<LiveModel>,
}

/// One live model.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveModel {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The object's uid, when the entries carry it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The latest `metadata.generation` an entry recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When the first entry that made it live was logged.
    #[serde(serialize_with = "as_text")]
    pub live_since: Timestamp,
    /// The weights it served, when any were recorded.
    pub digest: Option<Served>,
    /// The datasets behind it.
    pub datasets: Vec<DatasetInForce>,
    /// Its admission entries (changes asked for through the webhook) that
    /// no controller entry logged by then confirms: changes refused after
    /// the webhook admitted them, forged requests, or changes not
    /// reconciled yet ([`crate::confirm`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed_admissions: Vec<u64>,
    /// What could not be replayed exactly (empty when all went well).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The weights digest of a live model and the entry that says so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    /// `sha256:<hex>` manifest digest.
    pub digest: String,
    /// `model.deployed`, or `weights.verified` before the first rollout.
    pub kind: &'static str,
    /// Index of that entry.
    pub index: u64,
    /// When it was logged.
    #[serde(serialize_with = "as_text")]
    pub time: Timestamp,
}

/// A dataset behind a live model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetInForce {
    /// Short name, unique within the model.
    pub name: String,
    /// Where it lives.
    pub uri: String,
    /// Content digest, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// What it was used for (training, evaluation, …).
    pub role: String,
    /// Its license, when declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Index of its latest `dataset.referenced` entry; `None` when only the
    /// spec names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<u64>,
}

fn as_text<S: Serializer>(time: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(time)
}

/// A spec rebuilt from one kind of `spec.changed` entries.
#[derive(Default)]
struct SpecReplay {
    /// `{"spec": …}` so far; `None` before the first patch.
    document: Option<Value>,
    /// Why a patch did not apply; the spec is unknown from then on.
    broken: Option<String>,
}

impl SpecReplay {
    /// Whether any patch was applied (or failed to apply).
    fn started(&self) -> bool {
        self.document.is_some() || self.broken.is_some()
    }

    fn apply(&mut self, index: u64, patch: &[Value]) {
        if self.broken.is_some() {
            return;
        }
        let mut document = self
            .document
            .take()
            .unwrap_or_else(|| Value::Object(Default::default()));
        match spec::apply(&mut document, patch, &format!("entry {index}")) {
            Ok(()) => self.document = Some(document),
            Err(e) => {
                self.broken = Some(format!(
                    "{e} (to the spec rebuilt from the entries before it); datasets are every \
                     dataset.referenced recorded for the model"
                ));
            }
        }
    }
}

/// What the replay knows about one model.
struct State {
    uid: Option<String>,
    generation: Option<i64>,
    live_since: Option<Timestamp>,
    deployed: Option<Served>,
    verified: Option<Served>,
    /// The spec from the controller's `spec.changed` entries.
    stored_spec: SpecReplay,
    /// The spec from the other `spec.changed` entries.
    requested_spec: SpecReplay,
    /// Latest `dataset.referenced` per dataset name.
    referenced: BTreeMap<String, (u64, DatasetReferenced)>,
    /// Its admission entries that may be confirmed.
    admissions: Vec<u64>,
    warnings: Vec<String>,
}

impl State {
    fn new(uid: Option<String>) -> State {
        State {
            uid,
            generation: None,
            live_since: None,
            deployed: None,
            verified: None,
            stored_spec: SpecReplay::default(),
            requested_spec: SpecReplay::default(),
            referenced: BTreeMap::new(),
            admissions: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The datasets in force: those the rebuilt spec declares, or every
    /// dataset referenced when the spec is unknown. A declared dataset that
    /// is not `{name, uri, role, …}` is reported as a warning.
    fn datasets(&mut self) -> Vec<DatasetInForce> {
        let from_entry = |(index, d): &(u64, DatasetReferenced)| DatasetInForce {
            name: d.name.clone(),
            uri: d.uri.clone(),
            digest: d.digest.clone(),
            role: d.role.clone(),
            license: d.license.clone(),
            entry: Some(*index),
        };
        let spec = if self.stored_spec.started() {
            &self.stored_spec
        } else {
            &self.requested_spec
        };
        if let Some(broken) = &spec.broken {
            self.warnings.push(broken.clone());
        }
        let Some(spec) = spec.document.as_ref().filter(|_| spec.broken.is_none()) else {
            return self.referenced.values().map(from_entry).collect();
        };
        let declared = match spec.pointer(DATASETS_POINTER) {
            Some(Value::Array(list)) => list.clone(),
            _ => Vec::new(),
        };
        let mut datasets = Vec::new();
        for value in declared {
            match serde_json::from_value::<DatasetInForce>(value.clone()) {
                Ok(d) => datasets.push(match self.referenced.get(&d.name) {
                    Some(r) if r.1.uri == d.uri => from_entry(r),
                    _ => d,
                }),
                Err(e) => self.warnings.push(format!(
                    "a dataset the spec declares is not {{name, uri, role, …}} ({e}): {value}"
                )),
            }
        }
        datasets
    }

    /// The model as answered, if it is live.
    fn into_live(
        mut self,
        namespace: String,
        name: String,
        confirmations: &Confirmations,
    ) -> Option<LiveModel> {
        let live_since = self.live_since?;
        let unconfirmed_admissions = self
            .admissions
            .iter()
            .copied()
            .filter(|index| !confirmations.is_confirmed(*index))
            .collect();
        Some(LiveModel {
            datasets: self.datasets(),
            namespace,
            name,
            uid: self.uid,
            generation: self.generation,
            live_since,
            digest: self.deployed.or(self.verified),
            unconfirmed_admissions,
            warnings: self.warnings,
        })
    }
}

/// Replays `entries` (in log order) up to and including time `at`: the
/// models live then. Entries logged after `at` are ignored, as are entries
/// about no object (`ledger.key`).
pub fn inventory<'a>(
    entries: impl IntoIterator<Item = &'a StoredEntry>,
    at: Timestamp,
) -> Inventory {
    let mut models: BTreeMap<(String, String), State> = BTreeMap::new();
    let mut replayed = 0;
    let mut confirmations = Confirmations::default();
    for stored in entries {
        let entry = &stored.entry;
        if entry.time.is_none_or(|t| t > at) {
            continue;
        }
        replayed = replayed.max(stored.index + 1);
        confirmations.read(stored);
        let Some(object) = &entry.object else {
            continue;
        };
        let key = (object.namespace.clone(), object.name.clone());
        let state = models
            .entry(key)
            .or_insert_with(|| State::new(object.uid.clone()));
        // Another uid under the same name is another object: start over.
        if object.uid.is_some() && state.uid.is_some() && object.uid != state.uid {
            *state = State::new(object.uid.clone());
        }
        if state.uid.is_none() {
            state.uid = object.uid.clone();
        }
        if object.generation.is_some() {
            state.generation = object.generation;
        }
        let time = entry.time.unwrap_or(at);
        let served = |digest: &str| Served {
            digest: digest.to_owned(),
            kind: entry.kind(),
            index: stored.index,
            time,
        };
        match &entry.body {
            EntryBody::SpecChanged(change) => {
                state.live_since.get_or_insert(time);
                if confirmations.is_admission(stored.index) {
                    state.admissions.push(stored.index);
                }
                if change.operation != Operation::Delete {
                    let spec = match entry.source {
                        Source::Controller => &mut state.stored_spec,
                        Source::Admission | Source::Cli => &mut state.requested_spec,
                    };
                    spec.apply(stored.index, &change.patch);
                }
            }
            EntryBody::DatasetReferenced(d) => {
                state
                    .referenced
                    .insert(d.name.clone(), (stored.index, d.clone()));
            }
            EntryBody::WeightsVerified(w) => state.verified = Some(served(&w.digest)),
            EntryBody::ModelDeployed(m) => {
                state.live_since.get_or_insert(time);
                state.deployed = Some(served(&m.digest));
            }
            EntryBody::ModelRetired(_) => *state = State::new(state.uid.clone()),
            EntryBody::LedgerKey(_) => {}
        }
    }
    let models = models
        .into_iter()
        .filter_map(|((namespace, name), state)| state.into_live(namespace, name, &confirmations))
        .collect();
    Inventory {
        at,
        entries: replayed,
        models,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use openmodel_ledger::entry::Entry;

    /// A logged entry by the controller at `index`, time `index` seconds,
    /// about `ns/name`.
    fn logged(index: u64, name: &str, uid: &str, kind: &str, data: Value) -> StoredEntry {
        logged_by(index, None, name, uid, kind, data)
    }

    /// The same, recorded at admission for `user` when there is one.
    fn logged_by(
        index: u64,
        user: Option<&str>,
        name: &str,
        uid: &str,
        kind: &str,
        data: Value,
    ) -> StoredEntry {
        let (source, actor) = match user {
            Some(user) => ("admission", json!({"username": user, "groups": []})),
            None => ("controller", Value::Null),
        };
        let entry = json!({
            "v": 1, "kind": kind, "cluster": "c", "source": source, "actor": actor,
            "time": Timestamp(index as i64 * 1_000_000).to_string(),
            "object": {"apiVersion": "serving.openmodel.dev/v1alpha1", "kind": "OpenModel",
                       "namespace": "ns", "name": name, "uid": uid},
            "data": data,
        });
        let entry = Entry::parse_logged(entry.to_string().as_bytes()).unwrap();
        StoredEntry {
            index,
            leaf: entry.canonical_bytes().unwrap(),
            entry,
        }
    }

    fn digest(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    fn dataset(name: &str, uri: &str) -> Value {
        json!({"name": name, "uri": uri, "role": "training"})
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp(seconds * 1_000_000)
    }

    /// A history: `a` created with datasets x and y, deployed, then x
    /// replaced by z and redeployed; `b` created, verified, retired; `c`
    /// only verified (never live).
    fn history() -> Vec<StoredEntry> {
        let create = json!({"operation": "CREATE", "patch": [
            {"op": "add", "path": "/spec", "value": {"provenance": {"datasets": [
                dataset("x", "hf://datasets/x@1"), dataset("y", "hf://datasets/y@1")]}}}]});
        let update = json!({"operation": "UPDATE", "patch": [
            {"op": "remove", "path": "/spec/provenance/datasets/0"},
            {"op": "add", "path": "/spec/provenance/datasets/-", "value": dataset("z", "s3://z")}]});
        vec![
            logged(1, "a", "uid-a", "spec.changed", create),
            logged(
                2,
                "a",
                "uid-a",
                "dataset.referenced",
                dataset("x", "hf://datasets/x@1"),
            ),
            logged(
                3,
                "a",
                "uid-a",
                "dataset.referenced",
                dataset("y", "hf://datasets/y@1"),
            ),
            logged(
                4,
                "a",
                "uid-a",
                "weights.verified",
                json!({"digest": digest(1), "source": "hf://a@1"}),
            ),
            logged(
                5,
                "a",
                "uid-a",
                "model.deployed",
                json!({"digest": digest(1), "replicas": 1}),
            ),
            logged(
                6,
                "b",
                "uid-b",
                "spec.changed",
                json!({"operation": "CREATE", "patch": [{"op": "add", "path": "/spec", "value": {}}]}),
            ),
            logged(
                7,
                "b",
                "uid-b",
                "weights.verified",
                json!({"digest": digest(2), "source": "hf://b@1"}),
            ),
            logged(8, "a", "uid-a", "spec.changed", update),
            logged(
                9,
                "a",
                "uid-a",
                "dataset.referenced",
                dataset("z", "s3://z"),
            ),
            logged(
                10,
                "a",
                "uid-a",
                "weights.verified",
                json!({"digest": digest(3), "source": "hf://a@2"}),
            ),
            logged(
                11,
                "b",
                "uid-b",
                "model.retired",
                json!({"reason": "deleted"}),
            ),
            logged(
                12,
                "a",
                "uid-a",
                "model.deployed",
                json!({"digest": digest(3), "replicas": 2}),
            ),
            logged(
                13,
                "c",
                "uid-c",
                "weights.verified",
                json!({"digest": digest(4), "source": "hf://c@1"}),
            ),
        ]
    }

    fn names(inv: &Inventory) -> Vec<&str> {
        inv.models.iter().map(|m| m.name.as_str()).collect()
    }

    fn dataset_names(m: &LiveModel) -> Vec<(&str, Option<u64>)> {
        m.datasets
            .iter()
            .map(|d| (d.name.as_str(), d.entry))
            .collect()
    }

    #[test]
    fn nothing_is_live_before_the_first_change() {
        let inv = inventory(&history(), at(0));
        assert!(inv.models.is_empty());
        assert_eq!(inv.entries, 0);
    }

    #[test]
    fn live_models_digests_and_datasets_follow_the_log() {
        let h = history();
        // After a's first rollout and b's creation.
        let inv = inventory(&h, at(7));
        assert_eq!(names(&inv), ["a", "b"]);
        assert_eq!(inv.entries, 8);
        let a = &inv.models[0];
        assert_eq!(a.live_since, at(1));
        let served = a.digest.as_ref().unwrap();
        assert_eq!(
            (served.digest.as_str(), served.kind, served.index),
            (digest(1).as_str(), "model.deployed", 5)
        );
        assert_eq!(dataset_names(a), [("x", Some(2)), ("y", Some(3))]);
        // b was never rolled out: its verified weights, said to be only verified.
        let b = &inv.models[1];
        let served = b.digest.as_ref().unwrap();
        assert_eq!((served.kind, served.index), ("weights.verified", 7));
        assert!(b.datasets.is_empty());

        // Weights verified but not yet rolled out do not replace the served ones.
        let inv = inventory(&h, at(10));
        assert_eq!(inv.models[0].digest.as_ref().unwrap().index, 5);
        assert_eq!(
            dataset_names(&inv.models[0]),
            [("y", Some(3)), ("z", Some(9))]
        );

        // b retired, a redeployed; c never became live.
        let inv = inventory(&h, at(100));
        assert_eq!(names(&inv), ["a"]);
        assert_eq!(inv.models[0].digest.as_ref().unwrap().digest, digest(3));
        assert!(inv.models[0].warnings.is_empty());
        assert_eq!(inv.entries, 14);
    }

    #[test]
    fn a_new_object_under_an_old_name_starts_over() {
        let mut h = history();
        h.push(logged(
            14,
            "b",
            "uid-b2",
            "spec.changed",
            json!({"operation": "CREATE", "patch": [{"op": "add", "path": "/spec", "value": {}}]}),
        ));
        let inv = inventory(&h, at(14));
        let b = &inv.models[1];
        assert_eq!(
            (b.name.as_str(), b.uid.as_deref(), b.live_since),
            ("b", Some("uid-b2"), at(14))
        );
        assert_eq!(b.digest, None);
    }

    #[test]
    fn an_unreplayable_patch_falls_back_to_every_reference_with_a_warning() {
        let mut h = history();
        h.insert(
            5,
            logged(5, "a", "uid-a", "spec.changed", json!({"operation": "UPDATE", "patch": [{"op": "remove", "path": "/spec/nothing"}]})),
        );
        let inv = inventory(&h, at(100));
        let a = &inv.models[0];
        assert_eq!(
            dataset_names(a),
            [("x", Some(2)), ("y", Some(3)), ("z", Some(9))]
        );
        assert_eq!(a.warnings.len(), 1);
        assert!(a.warnings[0].contains("entry 5"), "{:?}", a.warnings);
    }

    #[test]
    fn the_stored_spec_wins_over_the_requested_one_so_no_patch_applies_twice() {
        // Every change as the webhook records it (alice asked) and as the
        // controller records it (what was stored): the same patches.
        let mut h = Vec::new();
        for entry in history() {
            if let EntryBody::SpecChanged(change) = &entry.entry.body {
                let data = serde_json::to_value(change).unwrap();
                let object = entry.entry.object.clone().unwrap();
                let uid = object.uid.as_deref().unwrap();
                h.push(logged_by(
                    entry.index,
                    Some("alice"),
                    &object.name,
                    uid,
                    "spec.changed",
                    data,
                ));
            }
            h.push(entry);
        }
        let inv = inventory(&h, at(1000));
        assert_eq!(
            dataset_names(&inv.models[0]),
            [("y", Some(3)), ("z", Some(9))]
        );
        assert!(
            inv.models[0].warnings.is_empty(),
            "{:?}",
            inv.models[0].warnings
        );

        // Only requested changes (no controller entries): those are replayed.
        let requested: Vec<StoredEntry> = h
            .iter()
            .filter(|e| e.entry.kind() != "spec.changed" || e.entry.actor.is_some())
            .cloned()
            .collect();
        let inv = inventory(&requested, at(1000));
        assert_eq!(
            dataset_names(&inv.models[0]),
            [("y", Some(3)), ("z", Some(9))]
        );
    }

    #[test]
    fn datasets_named_only_by_the_spec_are_listed_without_an_entry() {
        let h = &history()[..1];
        let inv = inventory(h, at(1));
        assert_eq!(dataset_names(&inv.models[0]), [("x", None), ("y", None)]);
        let json = serde_json::to_value(&inv).unwrap();
        assert_eq!(json["at"], "1970-01-01T00:00:01.000000Z");
        assert_eq!(
            json["models"][0]["datasets"][0],
            dataset("x", "hf://datasets/x@1")
        );
    }
}
