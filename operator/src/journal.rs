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
//!
//! A dedupe key the log already holds answers with the logged entry only
//! when that entry records the same event ([`records::same_event`]);
//! a different entry under the key is [`Error::DedupeConflict`], never
//! "recorded", so whoever claims the key of a change first cannot make the
//! change pass unrecorded. Appends for an admission (`source: admission`)
//! give up after [`ADMISSION_PATIENCE`], before the API server stops
//! waiting for the webhook.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use kube::ResourceExt;
use openmodel_history::confirm::Pending;
use openmodel_history::spec::Replay;
use openmodel_ledger::Ledger;
use openmodel_ledger::entry::{Entry, MAX_ENTRY_SIZE, Source};
use openmodel_ledger::note::Signer;
use openmodel_ledger::query::Query;
use openmodel_ledger::store::OpenCheck;
use openmodel_ledger_service::client::{
    Appended, AuditClient, AuditLog, Credentials, LocalLog, RemoteLog, connect,
};
use serde_json::Value;

use crate::crd::{LedgerStatus, OpenModel};
use crate::records;
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

/// How long the append of an admission's entry may take in all, retries of
/// an unavailable ledger service included, before the webhook denies the
/// change. It must be shorter than the webhook's `timeoutSeconds` (the
/// chart's `webhook.timeoutSeconds`, 10 s by default): the webhook then
/// answers before the API server gives up on it, and no append is still
/// being retried for a change the API server has already refused.
pub const ADMISSION_PATIENCE: Duration = Duration::from_secs(7);

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

/// The ledger for the controller's entries, the same for the admission
/// webhook's (retrying for less long), and whether entries may be appended
/// at once.
type Logs = (Arc<dyn AuditLog>, Arc<dyn AuditLog>, bool);

/// An open ledger, shared by every reconcile.
#[derive(Clone)]
pub struct Journal {
    /// The ledger, for the controller's entries.
    log: Arc<dyn AuditLog>,
    /// The same ledger, retrying for at most [`ADMISSION_PATIENCE`]: for
    /// the admission webhook's entries.
    admission_log: Arc<dyn AuditLog>,
    /// Whether entries recorded together may be appended at once (a file:
    /// one group commit) rather than one after the other (the service,
    /// which then logs them in the order given).
    concurrent: bool,
    cluster: String,
    /// Where each dedupe key this process appended (or found) lives, so a
    /// repeated reconcile does not even ask the ledger again.
    recorded: Arc<Mutex<HashMap<String, LedgerStatus>>>,
    /// Each model's spec replay, to go on from.
    replays: Arc<Replays>,
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
        let (log, admission_log, concurrent): Logs = match &config.ledger {
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
                let log = Arc::new(LocalLog::new(Arc::new(ledger)));
                (log.clone(), log, true)
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
                let remote = RemoteLog::new(client, endpoint);
                let admissions = remote.clone().with_patience(ADMISSION_PATIENCE);
                let controller = remote.with_patience(SERVICE_PATIENCE);
                (Arc::new(controller), Arc::new(admissions), false)
            }
        };
        Ok(Journal {
            log,
            admission_log,
            concurrent,
            cluster: config.cluster.clone(),
            recorded: Arc::default(),
            replays: Arc::default(),
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
    /// one the log holds for the same event ([`records::same_event`]),
    /// answers with that entry's index. A key the log holds for a different
    /// entry is [`Error::DedupeConflict`]. An admission's entry that is not
    /// recorded within [`ADMISSION_PATIENCE`] is [`Error::LedgerTimeout`].
    pub async fn record(&self, entry: Entry) -> Result<LedgerStatus, Error> {
        let key = entry.dedupe_key.clone();
        if let Some(known) = key.as_deref().and_then(|key| self.known(key)) {
            return Ok(known);
        }
        let recorded = if entry.source == Source::Admission {
            let kind = entry.kind();
            tokio::time::timeout(
                ADMISSION_PATIENCE,
                append_once(self.admission_log.as_ref(), entry),
            )
            .await
            .map_err(|_| Error::LedgerTimeout {
                kind,
                waited: ADMISSION_PATIENCE,
            })??
        } else {
            append_once(self.log.as_ref(), entry).await?
        };
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

    /// The `{"spec": …}` document the ledger holds for `model` before its
    /// current generation, rebuilt from its controller `spec.changed`
    /// entries. The replay of each model is kept ([`Replays`]), so a new
    /// generation reads only the entries logged since the last one, in
    /// pages of [`HISTORY_PAGE`] entries.
    pub async fn recorded_spec(&self, model: &OpenModel) -> Result<Option<Value>, Error> {
        Ok(self.recorded(model).await?.document)
    }

    /// [`Journal::recorded_spec`], with the model's admission entries read
    /// on the way that no controller entry has confirmed yet (in log
    /// order): those the entry of the current generation may confirm.
    pub async fn recorded(&self, model: &OpenModel) -> Result<Recorded, Error> {
        let uid = model.uid().unwrap_or_default();
        let generation = model.metadata.generation.unwrap_or(0);
        let mut replay = self
            .replays
            .take(&uid)
            .filter(|replay| replay.can_go_on_to(generation))
            .unwrap_or_else(|| Replay::new(&uid));
        let mut query = Query {
            object: Some((
                model.namespace().unwrap_or_default(),
                Some(model.name_any()),
            )),
            kind: Some("spec.changed".into()),
            start: replay.next(),
            limit: HISTORY_PAGE,
            ..Query::default()
        };
        // A replay that failed half-way is dropped: the next one starts over.
        loop {
            let page = self.log.query(query.clone()).await?;
            let stopped = replay.read_page(&page.entries, page.scanned.end, generation)?;
            match page.next {
                Some(next) if !stopped => query.start = next,
                _ => break,
            }
        }
        let recorded = Recorded {
            document: replay.document().cloned(),
            generation: replay.applied().unwrap_or(0),
            pending: replay.pending().to_vec(),
        };
        self.replays.put(replay);
        Ok(recorded)
    }
}

/// What the ledger holds about a model before its current generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    /// The `{"spec": …}` document of the last recorded generation.
    pub document: Option<Value>,
    /// That generation (0 when none was recorded).
    pub generation: i64,
    /// Its admission entries not yet confirmed, in log order.
    pub pending: Vec<Pending>,
}

/// The most entries one page of a model's spec history asks for: a page of
/// entries of the largest size the ledger takes ([`MAX_ENTRY_SIZE`], 64 KiB)
/// still fits in the 4 MiB a gRPC client accepts by default, whatever the
/// service's own bound on pages. Each entry is read once per model
/// ([`Replays`]), so small pages cost little.
pub const HISTORY_PAGE: usize = (4 << 20) / (MAX_ENTRY_SIZE + PAGE_OVERHEAD_PER_ENTRY);

/// Room per entry for its framing in a page and the page's checkpoint.
const PAGE_OVERHEAD_PER_ENTRY: usize = 1024;

/// How many models' replays are kept (the least recently used goes first).
const KEPT_REPLAYS: usize = 1024;

/// Each model's spec replay (by uid) as the last reconcile left it, so the
/// next generation goes on from there instead of reading the model's whole
/// history again; at most [`KEPT_REPLAYS`], the least recently used dropped.
#[derive(Default)]
struct Replays(Mutex<ReplaysByUid>);

#[derive(Default)]
struct ReplaysByUid {
    /// uid → (replay, when it was last put back).
    kept: HashMap<String, (Replay, u64)>,
    /// Counts puts, as a clock for "least recently used".
    clock: u64,
}

impl Replays {
    /// The replay kept for `uid`, taken out (one reconcile at a time reads a
    /// model).
    fn take(&self, uid: &str) -> Option<Replay> {
        lock(&self.0).kept.remove(uid).map(|(replay, _)| replay)
    }

    /// Keeps `replay`, dropping the least recently used one when full.
    fn put(&self, replay: Replay) {
        let mut replays = lock(&self.0);
        if replays.kept.len() >= KEPT_REPLAYS
            && let Some(oldest) = replays
                .kept
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(uid, _)| uid.clone())
        {
            replays.kept.remove(&oldest);
        }
        replays.clock += 1;
        let used = replays.clock;
        replays.kept.insert(replay.uid().to_owned(), (replay, used));
    }
}

/// Appends `entry` to `log`. A dedupe key already taken answers with the
/// logged entry when it records the same event, and is
/// [`Error::DedupeConflict`] otherwise (or when the logged entry cannot be
/// read back to tell).
async fn append_once(log: &dyn AuditLog, entry: Entry) -> Result<LedgerStatus, Error> {
    let kind = entry.kind();
    let appended = log.append(entry.clone()).await?;
    let (index, tree_size) = appended.position();
    match appended {
        Appended::New { .. } => tracing::info!(kind, index, "ledger entry appended"),
        Appended::Existing { .. } => {}
        Appended::Conflict { .. } => {
            let key = entry.dedupe_key.clone().unwrap_or_default();
            let same = match logged_entry(log, index).await {
                Ok(logged) => records::same_event(&logged, &entry),
                Err(error) => {
                    tracing::warn!(%error, index, "reading back the entry that holds a dedupe key");
                    false
                }
            };
            if !same {
                tracing::warn!(
                    kind,
                    key,
                    index,
                    "the dedupe key already names a different entry; not recorded"
                );
                return Err(Error::DedupeConflict { kind, key, index });
            }
            tracing::info!(
                kind,
                key,
                index,
                "event already recorded by another observer"
            );
        }
    }
    Ok(LedgerStatus { index, tree_size })
}

/// The entry logged at `index`, as the log holds it.
async fn logged_entry(log: &dyn AuditLog, index: u64) -> Result<Entry, Error> {
    let proof = log.prove(index, None).await?;
    let leaf = proof.extra.unwrap_or_default();
    Ok(Entry::parse_logged(&leaf)?)
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
    use openmodel_ledger::entry::Actor;
    use openmodel_ledger_service as ledger_client;
    use std::time::Instant;

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

    /// A change as the admission webhook records it, by `user`.
    fn admission(m: &OpenModel, user: &str) -> Entry {
        let mut entry = spec_entries(m, None, Vec::new(), "unit").remove(0);
        entry.source = Source::Admission;
        entry.actor = Some(Actor {
            extra: Default::default(),
            groups: vec!["system:authenticated".into()],
            uid: None,
            username: user.into(),
        });
        entry.dedupe_key = Some("uid-1/spec.changed/admission/0/5e2b".into());
        entry
    }

    #[tokio::test]
    async fn a_claimed_dedupe_key_refuses_the_real_change() {
        let dir = tempfile::tempdir().unwrap();
        let journal = journal(dir.path()).await;
        let m = model();
        // Someone appends an entry under the key of alice's change first.
        let claimed = journal
            .log
            .append(admission(&m, "mallory"))
            .await
            .unwrap()
            .position()
            .0;
        let error = journal.record(admission(&m, "alice")).await.unwrap_err();
        assert!(
            matches!(error, Error::DedupeConflict { index, .. } if index == claimed),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "already used by a different entry at index {claimed}"
            )) && message.contains(&format!("openmodel audit show {claimed}")),
            "{message}"
        );
        // Asked again, it is refused again: a conflict is never remembered
        // as recorded, and nothing was appended for it.
        assert!(matches!(
            journal.record(admission(&m, "alice")).await,
            Err(Error::DedupeConflict { .. })
        ));
        assert_eq!(
            journal.log.checkpoint().await.unwrap().checkpoint.size,
            claimed + 1
        );
        // The same change sent again by the API server is the same entry.
        let mallory = journal.record(admission(&m, "mallory")).await.unwrap();
        assert_eq!(mallory.index, claimed);
    }

    #[test]
    fn admissions_give_up_before_the_chart_s_webhook_timeout() {
        const VALUES: &str = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/openmodel/values.yaml"
        );
        let values: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(VALUES).unwrap()).unwrap();
        let timeout = values["webhook"]["timeoutSeconds"].as_u64().unwrap();
        // A second to spare for the answer to travel.
        assert!(
            ADMISSION_PATIENCE.as_secs() + 1 < timeout,
            "the chart's webhook.timeoutSeconds ({timeout} s) must exceed ADMISSION_PATIENCE ({ADMISSION_PATIENCE:?}) by more than a second"
        );
    }

    /// A [`LocalLog`] that counts the pages and entries queries answer.
    struct Counting {
        log: LocalLog,
        pages: std::sync::atomic::AtomicUsize,
        entries: std::sync::atomic::AtomicUsize,
    }

    impl Counting {
        /// (pages, entries) read since the last call.
        fn take(&self) -> (usize, usize) {
            use std::sync::atomic::Ordering::Relaxed;
            (self.pages.swap(0, Relaxed), self.entries.swap(0, Relaxed))
        }
    }

    impl AuditLog for Counting {
        fn describe(&self) -> String {
            self.log.describe()
        }
        fn append(
            &self,
            entry: Entry,
        ) -> futures::future::BoxFuture<'_, ledger_client::Result<Appended>> {
            self.log.append(entry)
        }
        fn query(
            &self,
            query: Query,
        ) -> futures::future::BoxFuture<'_, ledger_client::Result<openmodel_ledger::query::Page>>
        {
            use futures::FutureExt as _;
            use std::sync::atomic::Ordering::Relaxed;
            async move {
                let page = self.log.query(query).await?;
                self.pages.fetch_add(1, Relaxed);
                self.entries.fetch_add(page.entries.len(), Relaxed);
                Ok(page)
            }
            .boxed()
        }
        fn checkpoint(
            &self,
        ) -> futures::future::BoxFuture<
            '_,
            ledger_client::Result<openmodel_ledger::checkpoint::SignedCheckpoint>,
        > {
            self.log.checkpoint()
        }
        fn prove(
            &self,
            index: u64,
            tree_size: Option<u64>,
        ) -> futures::future::BoxFuture<
            '_,
            ledger_client::Result<openmodel_ledger::proof_file::TlogProof>,
        > {
            self.log.prove(index, tree_size)
        }
        fn consistency(
            &self,
            old_size: u64,
            new_size: u64,
        ) -> futures::future::BoxFuture<'_, ledger_client::Result<Vec<openmodel_ledger::hash::Hash>>>
        {
            self.log.consistency(old_size, new_size)
        }
    }

    /// The model at `generation`, with as many replicas.
    fn at_generation(generation: i64) -> OpenModel {
        let mut m = model();
        m.metadata.generation = Some(generation);
        m.spec.runtime.replicas = i32::try_from(generation).unwrap();
        m
    }

    /// The entries of generations `1..=generations` of the model: for
    /// each, the webhook's and then the controller's `spec.changed`.
    fn history(generations: i64) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut previous = None;
        for generation in 1..=generations {
            let m = at_generation(generation);
            let mut asked = spec_entries(&m, previous.as_ref(), Vec::new(), "unit").remove(0);
            asked.source = Source::Admission;
            asked.dedupe_key = Some(format!("uid-1/spec.changed/admission/{generation}"));
            entries.push(asked);
            entries.extend(spec_entries(&m, previous.as_ref(), Vec::new(), "unit"));
            previous = Some(spec_document(&m.spec));
        }
        entries
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_history_of_20_000_generations_is_read_in_pages_once() {
        const GENERATIONS: i64 = 20_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let signer = Signer::generate("unit.test/ledger").unwrap();
        let seeded = Instant::now();
        {
            let ledger = Ledger::create(&path, signer.clone(), "unit").unwrap();
            let pending: Vec<_> = history(GENERATIONS)
                .into_iter()
                .map(|entry| ledger.submit(entry).unwrap())
                .collect();
            for append in pending {
                append.wait_async().await.unwrap();
            }
        }
        let seeded = seeded.elapsed();
        let ledger = Ledger::open(&path, signer, OpenCheck::Quick).unwrap();
        let counting = Arc::new(Counting {
            log: LocalLog::new(Arc::new(ledger)),
            pages: Default::default(),
            entries: Default::default(),
        });
        let journal = Journal {
            log: counting.clone(),
            admission_log: counting.clone(),
            concurrent: true,
            cluster: "unit".into(),
            recorded: Arc::default(),
            replays: Arc::default(),
        };

        // The first read after a start: the whole history, page by page.
        let mut m = at_generation(GENERATIONS + 1);
        let started = Instant::now();
        let recorded = journal.recorded_spec(&m).await.unwrap();
        let first = started.elapsed();
        assert_eq!(
            recorded,
            Some(spec_document(&at_generation(GENERATIONS).spec))
        );
        let (pages, entries) = counting.take();
        assert_eq!(entries, 2 * GENERATIONS as usize, "every entry read once");
        assert_eq!(
            pages,
            entries.div_ceil(HISTORY_PAGE),
            "pages of {HISTORY_PAGE}"
        );

        // A new generation reads only what was logged since.
        let recorded = journal
            .record_all(spec_entries(&m, recorded.as_ref(), Vec::new(), "unit"))
            .await
            .unwrap();
        assert_eq!(recorded.len(), 1);
        m = at_generation(GENERATIONS + 2);
        let started = Instant::now();
        let recorded = journal.recorded_spec(&m).await.unwrap();
        let next = started.elapsed();
        assert_eq!(
            recorded,
            Some(spec_document(&at_generation(GENERATIONS + 1).spec))
        );
        assert_eq!(counting.take(), (1, 1), "only the new generation's entry");
        eprintln!(
            "{GENERATIONS} generations ({} entries, seeded in {seeded:.1?}): the first read of the spec history took {first:.1?} in {pages} pages; the next generation's {next:.1?}",
            2 * GENERATIONS
        );
    }

    #[tokio::test]
    async fn the_recorded_spec_is_the_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        let journal = journal(dir.path()).await;
        let mut m = model();
        assert_eq!(journal.recorded_spec(&m).await.unwrap(), None);
        for entry in spec_entries(&m, None, Vec::new(), "unit") {
            journal.record(entry).await.unwrap();
        }
        let first = spec_document(&m.spec);
        m.metadata.generation = Some(2);
        m.spec.runtime.replicas = 4;
        assert_eq!(
            journal.recorded_spec(&m).await.unwrap(),
            Some(first.clone())
        );
        for entry in spec_entries(&m, Some(&first), Vec::new(), "unit") {
            journal.record(entry).await.unwrap();
        }
        m.metadata.generation = Some(3);
        let second = journal.recorded_spec(&m).await.unwrap().unwrap();
        assert_eq!(second["spec"]["runtime"]["replicas"], 4);
    }
}
