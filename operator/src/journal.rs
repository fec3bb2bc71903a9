//! The operator's side of the audit ledger: the entries of
//! [`crate::records`] appended, and the recorded spec history read back.
//! The ledger is either
//! - a file this process opens for appending with the log's signing key
//!   (local runs; only the leader opens it, see [`crate::leader`], so the
//!   ledger has one writer at a time), or
//! - the ledger service (`openmodel-ledger serve`), which owns the file:
//!   appends go through its `AuditService`, authenticated with this pod's
//!   service-account token, and are retried while it is unavailable (a
//!   restart); retries are safe because every entry carries a dedupe key.
//!
//! Both are the one ledger client, [`AuditLog`] (a [`LocalLog`] or a
//! [`RemoteLog`]); this module only remembers what it recorded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use kube::ResourceExt;
use openmodel_history::spec::replay;
use openmodel_ledger::Ledger;
use openmodel_ledger::entry::Entry;
use openmodel_ledger::note::Signer;
use openmodel_ledger::query::Query;
use openmodel_ledger::store::OpenCheck;
use openmodel_ledger_service::client::{
    Appended, AuditClient, AuditLog, Credentials, LocalLog, RemoteLog, connect, query_all,
};
use serde_json::Value;

use crate::crd::{LedgerStatus, OpenModel};
use crate::{Error, lock};

/// Where the ledger is, and which cluster name entries carry.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// The ledger.
    pub ledger: LedgerLocation,
    /// The cluster name written into every entry.
    pub cluster: String,
}

/// The ledger the operator writes.
#[derive(Clone, Debug)]
pub enum LedgerLocation {
    /// A SQLite ledger file this process appends to.
    File {
        /// The file.
        path: PathBuf,
        /// The file holding the log's private key (`PRIVATE+KEY+…`, as
        /// written by `openmodel ledger init`).
        key_file: PathBuf,
        /// Create the ledger (origin: the key's name) when the file is missing.
        create: bool,
    },
    /// The ledger service.
    Service {
        /// Its gRPC address, `https://host:port`.
        endpoint: String,
        /// The CA certificates (PEM) its serving certificate is checked against.
        ca_file: PathBuf,
        /// The bearer token to send (re-read as it rotates): the operator's
        /// service-account token, which the service lets append.
        token_file: PathBuf,
    },
}

/// How long a call waits for an unavailable ledger service to come back
/// before the reconcile fails (and is retried later).
const SERVICE_PATIENCE: Duration = Duration::from_secs(30);

/// How long the operator waits at start-up for the ledger service to accept
/// connections (installed together, the service often starts later).
const SERVICE_STARTUP_PATIENCE: Duration = Duration::from_secs(120);

/// Connects to the ledger service, retrying about every 2 s (jittered) for
/// [`SERVICE_STARTUP_PATIENCE`] while it refuses or cannot be reached.
async fn connect_patiently(
    endpoint: &str,
    ca: &[u8],
    token_file: &Path,
) -> Result<AuditClient, Error> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(2))
        .with_factor(1.0)
        .with_jitter()
        .without_max_times()
        .with_total_delay(Some(SERVICE_STARTUP_PATIENCE));
    let attempt = || connect(endpoint, ca, Credentials::token_file(token_file));
    Ok(attempt
        .retry(backoff)
        .when(|e| matches!(e, openmodel_ledger_service::Error::Transport(_)))
        .notify(|error, _| tracing::warn!(%error, "waiting for the ledger service"))
        .await?)
}

/// An open ledger, shared by every reconcile.
#[derive(Clone)]
pub struct Journal {
    log: Arc<dyn AuditLog>,
    /// Whether entries recorded together may be appended at once (a file:
    /// one group commit) rather than one after the other (the service,
    /// which then logs them in the order given).
    concurrent: bool,
    cluster: String,
    /// Where each dedupe key this process appended (or found) lives, so a
    /// repeated reconcile does not even ask the ledger again.
    recorded: Arc<Mutex<HashMap<String, LedgerStatus>>>,
}

impl JournalConfig {
    /// Checks what can be checked before connecting: the key file and the
    /// ledger file, or the CA and token files. Run at start-up, so a bad
    /// file is reported at once rather than after winning the Lease.
    pub fn check(&self) -> Result<(), Error> {
        match &self.ledger {
            LedgerLocation::File {
                path,
                key_file,
                create,
            } => {
                read_signer(key_file)?;
                if !create && !path.exists() {
                    return Err(Error::LedgerMissing(path.clone()));
                }
            }
            LedgerLocation::Service {
                ca_file,
                token_file,
                ..
            } => {
                for (file, flag) in [
                    (ca_file, "--ledger-ca-file"),
                    (token_file, "--ledger-token-file"),
                ] {
                    std::fs::metadata(file).map_err(|source| Error::LedgerFile {
                        path: file.clone(),
                        flag,
                        source,
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// The signing key in `key_file`.
fn read_signer(key_file: &std::path::Path) -> Result<Signer, Error> {
    let key = std::fs::read_to_string(key_file).map_err(|source| Error::KeyFile {
        path: key_file.to_path_buf(),
        source,
    })?;
    Ok(key.trim().parse()?)
}

impl Journal {
    /// Opens (or, when allowed, creates) the ledger file, or connects to
    /// the ledger service.
    pub async fn open(config: &JournalConfig) -> Result<Journal, Error> {
        config.check()?;
        let (log, concurrent): (Arc<dyn AuditLog>, bool) = match &config.ledger {
            LedgerLocation::File {
                path,
                key_file,
                create,
            } => {
                let signer = read_signer(key_file)?;
                let (path, cluster, create) = (path.clone(), config.cluster.clone(), *create);
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
                (Arc::new(LocalLog::new(Arc::new(ledger))), true)
            }
            LedgerLocation::Service {
                endpoint,
                ca_file,
                token_file,
            } => {
                let ca = std::fs::read(ca_file).map_err(|source| Error::LedgerFile {
                    path: ca_file.clone(),
                    flag: "--ledger-ca-file",
                    source,
                })?;
                let client = connect_patiently(endpoint, &ca, token_file).await?;
                let remote = RemoteLog::new(client, endpoint).with_patience(SERVICE_PATIENCE);
                (Arc::new(remote), false)
            }
        };
        Ok(Journal {
            log,
            concurrent,
            cluster: config.cluster.clone(),
            recorded: Arc::default(),
        })
    }

    /// Where the ledger is, for logs.
    pub fn describe(&self) -> String {
        self.log.describe()
    }

    /// The cluster name entries carry.
    pub fn cluster(&self) -> &str {
        &self.cluster
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
        let appended = self.log.append(entry).await?;
        let (index, tree_size) = appended.position();
        match appended {
            Appended::New { .. } => tracing::info!(kind, index, "ledger entry appended"),
            Appended::Existing { .. } => {}
            Appended::Conflict { .. } => tracing::warn!(
                kind,
                key = key.as_deref().unwrap_or_default(),
                index,
                "event already recorded with other details"
            ),
        }
        let recorded = LedgerStatus { index, tree_size };
        if let Some(key) = key {
            let mut known = lock(&self.recorded);
            known.insert(key, recorded);
        }
        Ok(recorded)
    }

    /// Records `entries` in order. A file ledger gets them all at once (one
    /// commit); the service gets them one after the other, so that its log
    /// keeps their order too.
    pub async fn record_all(&self, entries: Vec<Entry>) -> Result<Vec<LedgerStatus>, Error> {
        if self.concurrent {
            return futures::future::try_join_all(entries.into_iter().map(|e| self.record(e)))
                .await;
        }
        let mut recorded = Vec::with_capacity(entries.len());
        for entry in entries {
            recorded.push(self.record(entry).await?);
        }
        Ok(recorded)
    }

    /// Where an event with this dedupe key was recorded, if this process
    /// knows.
    fn known(&self, key: &str) -> Option<LedgerStatus> {
        let recorded = lock(&self.recorded);
        recorded.get(key).copied()
    }

    /// The `spec.changed` entries about `namespace/name`, in log order.
    async fn spec_changes(&self, namespace: String, name: String) -> Result<Vec<Entry>, Error> {
        let query = Query {
            object: Some((namespace, Some(name))),
            kind: Some("spec.changed".into()),
            ..Query::default()
        };
        let entries = query_all(self.log.as_ref(), query).await?;
        Ok(entries.into_iter().map(|stored| stored.entry).collect())
    }

    /// The `{"spec": …}` document the ledger holds for `model` before its
    /// current generation, rebuilt from its `spec.changed` entries.
    pub async fn recorded_spec(&self, model: &OpenModel) -> Result<Option<Value>, Error> {
        let changes = self
            .spec_changes(model.namespace().unwrap_or_default(), model.name_any())
            .await?;
        Ok(replay(
            &changes,
            &model.uid().unwrap_or_default(),
            model.metadata.generation.unwrap_or(0),
        )?)
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
    async fn journal(dir: &std::path::Path) -> Journal {
        let key_file = dir.join("key");
        if !key_file.exists() {
            let signer = Signer::generate("unit.test/ledger").unwrap();
            std::fs::write(&key_file, format!("{signer}\n")).unwrap();
        }
        Journal::open(&JournalConfig {
            ledger: LedgerLocation::File {
                path: dir.join("ledger.sqlite"),
                key_file,
                create: true,
            },
            cluster: "unit".into(),
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
        assert_eq!(second.log.checkpoint().await.unwrap().checkpoint.size, 2);
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
