//! The operator's side of the audit ledger: an `openmodel-ledger` file
//! opened for appending with the log's signing key, the entries of
//! [`crate::records`] appended to it, and the recorded spec history read
//! back from it.
//!
//! Only the leader opens the file (see [`crate::leader`]): the ledger has one
//! writer at a time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use openmodel_ledger::Ledger;
use openmodel_ledger::entry::Entry;
use openmodel_ledger::note::Signer;
use openmodel_ledger::query::{MAX_LIMIT, Query};
use openmodel_ledger::store::OpenCheck;
use serde_json::Value;

use crate::Error;
use crate::crd::{LedgerStatus, OpenModel};
use crate::records::replay;

/// Where the ledger is and how to open it.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// The SQLite ledger file.
    pub path: PathBuf,
    /// The file holding the log's private key (`PRIVATE+KEY+…`, as written by
    /// `openmodel ledger init`).
    pub key_file: PathBuf,
    /// The cluster name written into every entry.
    pub cluster: String,
    /// Create the ledger (origin: the key's name) when the file is missing.
    pub create: bool,
}

/// An open ledger, shared by every reconcile.
#[derive(Clone)]
pub struct Journal {
    ledger: Arc<Ledger>,
    cluster: String,
    /// Where each dedupe key this process appended (or found) lives, so a
    /// repeated reconcile does not even ask the ledger again.
    recorded: Arc<Mutex<HashMap<String, LedgerStatus>>>,
}

impl JournalConfig {
    /// Reads the signing key; also run at start-up, so a bad key file or a
    /// missing ledger is reported at once rather than after winning the
    /// Lease.
    pub fn signer(&self) -> Result<Signer, Error> {
        let key = std::fs::read_to_string(&self.key_file).map_err(|source| Error::KeyFile {
            path: self.key_file.clone(),
            source,
        })?;
        let signer = key.trim().parse()?;
        if !self.create && !self.path.exists() {
            return Err(Error::LedgerMissing(self.path.clone()));
        }
        Ok(signer)
    }
}

impl Journal {
    /// Opens (or, when allowed, creates) the ledger.
    pub async fn open(config: &JournalConfig) -> Result<Journal, Error> {
        let signer = config.signer()?;
        let (path, cluster, create) = (config.path.clone(), config.cluster.clone(), config.create);
        // Creating appends the key entry and waits for it: not on the runtime.
        let ledger = blocking(move || {
            if create && !path.exists() {
                tracing::warn!(path = %path.display(), "creating a new ledger");
                Ledger::create(&path, signer, &cluster)
            } else {
                Ledger::open(&path, signer, OpenCheck::Quick)
            }
        })
        .await?;
        Ok(Journal {
            ledger: Arc::new(ledger),
            cluster: config.cluster.clone(),
            recorded: Arc::default(),
        })
    }

    /// The cluster name entries carry.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        self.ledger.path()
    }

    /// Appends `entry` once: a dedupe key this process already recorded, or
    /// one already in the log, answers with that entry's index. A key whose logged entry differs in detail (say,
    /// another pod verified the same digest first) counts as recorded too:
    /// the key names the event, and the event is in the log.
    pub async fn record(&self, entry: Entry) -> Result<LedgerStatus, Error> {
        let key = entry.dedupe_key.clone();
        if let Some(known) = key.as_deref().and_then(|key| self.known(key)) {
            return Ok(known);
        }
        let kind = entry.kind();
        let recorded = match self.ledger.append_async(entry).await {
            Ok(receipt) => {
                if !receipt.existing {
                    tracing::info!(kind, index = receipt.index, "ledger entry appended");
                }
                LedgerStatus {
                    index: receipt.index,
                    tree_size: receipt.tree_size,
                }
            }
            Err(openmodel_ledger::Error::DedupeConflict { key, index }) => {
                tracing::warn!(
                    kind,
                    key,
                    index,
                    "event already recorded with other details"
                );
                let ledger = self.ledger.clone();
                let size = blocking(move || ledger.checkpoint()).await?.checkpoint.size;
                LedgerStatus {
                    index,
                    tree_size: size,
                }
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(key) = key {
            let mut known = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
            known.insert(key, recorded);
        }
        Ok(recorded)
    }

    /// Where an event with this dedupe key was recorded, if this process
    /// knows.
    fn known(&self, key: &str) -> Option<LedgerStatus> {
        let recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        recorded.get(key).copied()
    }

    /// The `{"spec": …}` document the ledger holds for `model` before its
    /// current generation, rebuilt from its `spec.changed` entries.
    pub async fn recorded_spec(&self, model: &OpenModel) -> Result<Option<Value>, Error> {
        let ledger = self.ledger.clone();
        let namespace = model.namespace().unwrap_or_default();
        let name = model.name_any();
        let changes = blocking(move || {
            let mut query = Query {
                object: Some((namespace, Some(name))),
                kind: Some("spec.changed".into()),
                limit: MAX_LIMIT,
                ..Query::default()
            };
            let mut entries = Vec::new();
            loop {
                let page = ledger.query(&query)?;
                entries.extend(page.entries.into_iter().map(|stored| stored.entry));
                match page.next {
                    Some(next) => query.start = next,
                    None => return Ok(entries),
                }
            }
        })
        .await?;
        replay(
            &changes,
            &model.uid().unwrap_or_default(),
            model.metadata.generation.unwrap_or(0),
        )
    }
}

/// Runs a blocking ledger read off the async runtime.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> openmodel_ledger::Result<T> + Send + 'static,
) -> Result<T, Error> {
    Ok(tokio::task::spawn_blocking(read)
        .await
        .map_err(Error::Join)??)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::VerifiedWeights;
    use crate::records::{spec_document, spec_entries, weights_verified};
    use crate::resources::fixtures::{DIGEST, model};

    /// The journal in `dir`, created with a new key the first time.
    async fn journal(dir: &Path) -> Journal {
        let key_file = dir.join("key");
        if !key_file.exists() {
            let signer = Signer::generate("unit.test/ledger").unwrap();
            std::fs::write(&key_file, format!("{signer}\n")).unwrap();
        }
        Journal::open(&JournalConfig {
            path: dir.join("ledger.sqlite"),
            key_file,
            cluster: "unit".into(),
            create: true,
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn events_are_recorded_once_even_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let m = model();
        let verified = |pod: &str| VerifiedWeights {
            digest: DIGEST.into(),
            pod: pod.into(),
        };
        let first = journal(dir.path()).await;
        let recorded = first
            .record(weights_verified(&m, &verified("a"), "unit"))
            .await
            .unwrap();
        let again = first
            .record(weights_verified(&m, &verified("a"), "unit"))
            .await
            .unwrap();
        assert_eq!(recorded, again);
        drop(first);
        // A new process: the ledger's dedupe key answers, even when another
        // pod verified the same digest.
        let second = journal(dir.path()).await;
        let other_pod = second
            .record(weights_verified(&m, &verified("b"), "unit"))
            .await
            .unwrap();
        assert_eq!(other_pod.index, recorded.index);
        assert_eq!(second.ledger.checkpoint().unwrap().checkpoint.size, 2);
    }

    #[tokio::test]
    async fn the_recorded_spec_is_the_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        let journal = journal(dir.path()).await;
        let mut m = model();
        assert_eq!(journal.recorded_spec(&m).await.unwrap(), None);
        for entry in spec_entries(&m, None, "unit") {
            journal.record(entry).await.unwrap();
        }
        let first = spec_document(&m.spec);
        m.metadata.generation = Some(2);
        m.spec.runtime.replicas = 4;
        assert_eq!(
            journal.recorded_spec(&m).await.unwrap(),
            Some(first.clone())
        );
        for entry in spec_entries(&m, Some(&first), "unit") {
            journal.record(entry).await.unwrap();
        }
        m.metadata.generation = Some(3);
        let second = journal.recorded_spec(&m).await.unwrap().unwrap();
        assert_eq!(second["spec"]["runtime"]["replicas"], 4);
    }
}
