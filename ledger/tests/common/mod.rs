//! Helpers shared by the ledger's integration tests: real SQLite files in
//! temporary folders and realistic entries.

#![allow(dead_code)]

use std::path::PathBuf;

use openmodel_ledger::Ledger;
use openmodel_ledger::entry::{
    Actor, DatasetReferenced, Entry, EntryBody, ObjectRef, Operation, Source, SpecChanged,
    WeightsVerified,
};
use openmodel_ledger::note::Signer;
use openmodel_ledger::store::OpenCheck;

pub const ORIGIN: &str = "ledger.test/openmodel";

pub struct TestLedger {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub signer: Signer,
    pub ledger: Ledger,
}

impl TestLedger {
    pub fn new() -> TestLedger {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let signer = Signer::generate(ORIGIN).unwrap();
        let ledger = Ledger::create(&path, signer.clone(), "test-cluster").unwrap();
        TestLedger {
            dir,
            path,
            signer,
            ledger,
        }
    }

    pub fn reopen(self) -> TestLedger {
        let TestLedger {
            dir,
            path,
            signer,
            ledger,
        } = self;
        drop(ledger);
        let ledger = Ledger::open(&path, signer.clone(), OpenCheck::Full).unwrap();
        TestLedger {
            dir,
            path,
            signer,
            ledger,
        }
    }
}

pub fn object(ns: &str, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: "serving.openmodel.dev/v1alpha1".into(),
        kind: "OpenModel".into(),
        namespace: ns.into(),
        name: name.into(),
        uid: Some(format!("uid-{ns}-{name}")),
        generation: Some(1),
    }
}

pub fn digest(n: u64) -> String {
    format!("sha256:{n:064x}")
}

/// A `weights.verified` entry for model `ns/name` with digest `n`.
pub fn weights(ns: &str, name: &str, n: u64) -> Entry {
    Entry {
        appender: None,
        time: None,
        cluster: "test-cluster".into(),
        object: Some(object(ns, name)),
        actor: None,
        source: Source::Controller,
        dedupe_key: Some(format!("{ns}/{name}/weights/{n}")),
        body: EntryBody::WeightsVerified(WeightsVerified {
            digest: digest(n),
            source: format!("file:///models/{name}"),
            pod: Some(format!("{name}-0")),
        }),
    }
}

/// A `spec.changed` entry by `user`.
pub fn spec_change(ns: &str, name: &str, user: &str, replicas: u64) -> Entry {
    Entry {
        appender: None,
        time: None,
        cluster: "test-cluster".into(),
        object: Some(object(ns, name)),
        actor: Some(Actor {
            username: user.into(),
            uid: None,
            groups: vec!["system:authenticated".into()],
            extra: Default::default(),
        }),
        source: Source::Admission,
        dedupe_key: None,
        body: EntryBody::SpecChanged(SpecChanged {
            operation: Operation::Update,
            patch: vec![
                serde_json::json!({"op": "replace", "path": "/spec/runtime/replicas", "value": replicas}),
            ],
            confirms: Vec::new(),
            request_uid: None,
        }),
    }
}

/// A `dataset.referenced` entry.
pub fn dataset(ns: &str, name: &str, uri: &str) -> Entry {
    Entry {
        appender: None,
        time: None,
        cluster: "test-cluster".into(),
        object: Some(object(ns, name)),
        actor: None,
        source: Source::Controller,
        dedupe_key: None,
        body: EntryBody::DatasetReferenced(DatasetReferenced {
            name: "ms_marco".into(),
            uri: uri.into(),
            digest: None,
            license: Some("cc-by-4.0".into()),
            role: "training".into(),
        }),
    }
}
