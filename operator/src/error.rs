//! The one error type of the operator library. Each variant maps to a
//! metric label ([`Error::metric_label`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CRD could not be written as YAML.
    #[error("writing the CRD as YAML: {0}")]
    CrdYaml(serde_saphyr::SerializeError),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The ledger refused an append or a read.
    #[error("ledger: {0}")]
    Ledger(#[from] openmodel_ledger::Error),
    /// The ledger's key file could not be read.
    #[error(
        "reading the ledger key {}: {source} (write one with `openmodel ledger init --key-file …`)",
        path.display()
    )]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The ledger file does not exist and creating it was not asked for.
    #[error(
        "the ledger {} does not exist; pass --create-ledger to start a new one, or restore the file",
        .0.display()
    )]
    LedgerMissing(PathBuf),
    /// The recorded `spec.changed` patches of a model do not apply in order:
    /// the ledger's history of that model is inconsistent.
    #[error("replaying the recorded spec history: {0}")]
    Replay(#[from] openmodel_history::Error),
    /// Adding or removing the finalizer, or the reconcile inside it, failed.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A blocking ledger task panicked or was cancelled.
    #[error("ledger task: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The HTTP endpoint could not listen or serve.
    #[error("HTTP endpoint {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The ledger (file or service) refused or failed a request.
    #[error("{0}")]
    LedgerService(#[from] openmodel_ledger_service::Error),
    /// The entry's dedupe key already names a different entry in the log:
    /// another event was recorded under this one's key first, so this one
    /// cannot be recorded truthfully (and must not count as recorded).
    #[error(
        "the dedupe key {key:?} of this {kind} entry was already used by a different entry at index {index}, so this {kind} cannot be recorded: look at that entry with `openmodel audit show {index}`; an entry under another event's key is a forgery or a bug, so tell the ledger's administrators"
    )]
    DedupeConflict {
        /// The entry's kind.
        kind: &'static str,
        /// The dedupe key.
        key: String,
        /// The index of the entry that holds the key.
        index: u64,
    },
    /// An append had to be answered sooner than the ledger answered it.
    #[error(
        "the ledger did not record this {kind} entry within {} s (is the ledger service up? see the openmodel-operator's logs)",
        waited.as_secs()
    )]
    LedgerTimeout {
        /// The entry's kind.
        kind: &'static str,
        /// How long it waited.
        waited: Duration,
    },
    /// A reconcile ran past its deadline and was abandoned.
    #[error(
        "the reconcile did not finish within {} s and was abandoned; it is retried (see the operator's logs for the call that hung)",
        waited.as_secs()
    )]
    ReconcileTimeout {
        /// How long it ran.
        waited: Duration,
    },
    /// A file the ledger client needs cannot be read.
    #[error("{} ({flag}): {source}", path.display())]
    LedgerFile {
        /// The file.
        path: PathBuf,
        /// The flag that names it.
        flag: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The metrics and health endpoints, or the webhook's TLS, could not be
    /// set up.
    #[error("{0}")]
    Serving(#[from] openmodel_runtime::Error),
    /// The admission webhook could not be set up.
    #[error("admission webhook: {0}")]
    Webhook(String),
    /// A watch cache will never be filled: its watch stopped, as it does
    /// when the operator stops.
    #[error("a watch cache closed (the operator is stopping)")]
    CacheClosed,
    /// This instance stopped leading (it could not renew its Lease).
    #[error("lost the leader Lease; exiting so that a new instance can take over")]
    LeadershipLost,
}

impl Error {
    /// A short label for the `reconcile_errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::CrdYaml(_) => "crd",
            Error::Kube(_) => "kube",
            Error::Ledger(_)
            | Error::Join(_)
            | Error::LedgerService(_)
            | Error::LedgerFile { .. }
            | Error::LedgerTimeout { .. } => "ledger",
            Error::DedupeConflict { .. } => "dedupe",
            Error::KeyFile { .. } | Error::LedgerMissing(_) => "key",
            Error::Replay(_) => "replay",
            Error::Finalizer(inner) => match &**inner {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
            Error::Listen { .. } | Error::Serving(_) => "http",
            Error::Webhook(_) => "webhook",
            Error::CacheClosed => "cache",
            Error::ReconcileTimeout { .. } => "timeout",
            Error::LeadershipLost => "leadership",
        }
    }
}
