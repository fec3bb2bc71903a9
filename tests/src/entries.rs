//! Ledger entries for tests.

use openmodel_ledger::entry::{Entry, EntryBody, ObjectRef, Source, WeightsVerified};

/// A controller's `weights.verified` entry for `namespace/name` with digest
/// number `n` (and a dedupe key of its own).
pub fn weights_verified(namespace: &str, name: &str, n: u64) -> Entry {
    Entry {
        appender: None,
        time: None,
        cluster: "test-cluster".into(),
        object: Some(ObjectRef {
            api_version: "serving.openmodel.dev/v1alpha1".into(),
            generation: Some(1),
            kind: "OpenModel".into(),
            name: name.into(),
            namespace: namespace.into(),
            uid: Some(format!("uid-{namespace}-{name}")),
        }),
        actor: None,
        source: Source::Controller,
        dedupe_key: Some(format!("{namespace}/{name}/weights/{n}")),
        body: EntryBody::WeightsVerified(WeightsVerified {
            digest: format!("sha256:{n:064x}"),
            pod: None,
            source: format!("hf://org/{name}@{n}"),
        }),
    }
}
