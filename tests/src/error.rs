//! The harness's one error type.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while starting, using or stopping a control
/// plane. Each message says what to do about it where there is something to
/// do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A control-plane binary is not where the harness looks for it.
    #[error(
        "{binary} not found at {path}: run scripts/build-control-plane.sh to build etcd, kube-apiserver \
         and kubectl into .cache/k8s/bin, or set {env} to a folder that holds them"
    )]
    MissingBinary {
        /// The binary's file name.
        binary: &'static str,
        /// Where it was expected.
        path: PathBuf,
        /// The variable that overrides the folder.
        env: &'static str,
    },
    /// helm is not where the chart tests look for it.
    #[error(
        "helm not found at {path}: run scripts/fetch-helm.sh to unpack helm into .cache/helm/bin, \
         or set {env} to a folder that holds it"
    )]
    MissingHelm {
        /// Where it was expected.
        path: PathBuf,
        /// The variable that overrides the folder.
        env: &'static str,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Generating the test PKI failed.
    #[error("generating the test certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A control-plane process exited while the harness waited for it.
    #[error("{process} exited before it was ready ({status}); the end of {log}:\n{tail}")]
    Exited {
        /// `etcd` or `kube-apiserver`.
        process: &'static str,
        /// How it ended.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// Something did not become ready in time.
    #[error("{what} was not ready after {waited:?}: {detail}")]
    Timeout {
        /// What the harness waited for.
        what: String,
        /// How long it waited.
        waited: Duration,
        /// The last observation (a log tail, an error, a condition).
        detail: String,
    },
    /// The kubeconfig the harness wrote could not be turned into a client
    /// configuration.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A YAML manifest could not be parsed.
    #[error("{}: {source}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// The parser's error (boxed: it is large).
        source: Box<serde_saphyr::Error>,
    },
    /// The kubeconfig could not be written as YAML.
    #[error("writing the kubeconfig {}: {source}", path.display())]
    WriteKubeconfig {
        /// Where it was to be written.
        path: PathBuf,
        /// The serializer's error.
        source: serde_saphyr::SerializeError,
    },
    /// The single-node cluster (`scripts/cluster.sh`) or what the
    /// end-to-end test runs on it failed; the message says what to do.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The ledger under test refused a read or a key.
    #[error("ledger: {0}")]
    Ledger(#[from] openmodel_ledger::Error),
    /// The ledger service under test, or its client, failed.
    #[error("ledger service: {0}")]
    LedgerService(#[from] openmodel_ledger_service::Error),
    /// The operator under test failed.
    #[error("operator: {0}")]
    Operator(#[from] openmodel_operator::Error),
}

impl Error {
    /// Wraps an I/O error with what the harness was doing.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
