//! The one error type of the server library.

use std::path::PathBuf;

/// Everything that can go wrong fetching, checking, loading or serving a
/// model. The inference core's errors ([`Error::BadInput`],
/// [`Error::ModelNotFound`], [`Error::Overloaded`], [`Error::QueueFull`],
/// [`Error::Unavailable`])
/// are what a protocol maps to its status codes; any other answers as an
/// internal error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The model folder cannot be digested as it is.
    #[error("{0}")]
    BadFolder(String),
    /// A digest or manifest given by the user is malformed.
    #[error("{0}")]
    BadExpectation(String),
    /// The weights are not the expected ones.
    #[error("digest mismatch: expected {expected}, got {actual}{}", first_difference.as_ref().map(|d| format!("; first differing file: {d}")).unwrap_or_default())]
    DigestMismatch {
        /// The expected manifest digest.
        expected: String,
        /// The digest of what is on disk.
        actual: String,
        /// The first file that differs, when the expected manifest is known.
        first_difference: Option<String>,
    },
    /// The folder's weights are not the expected ones: the server refuses
    /// to serve them.
    #[error("refusing to serve these weights: {0}")]
    Refused(Box<Error>),
    /// A source URI is malformed or unsupported.
    #[error("{0}")]
    BadSource(String),
    /// The model folder cannot be served as it is.
    #[error("model: {0}")]
    BadModel(String),
    /// A pod annotations file (downward API) or a value in it is malformed.
    #[error("{0}")]
    BadAnnotations(String),
    /// A ledger index that is not a whole number from 0 to 2^63 - 1.
    #[error("{0}")]
    BadLedgerIndex(String),
    /// An input the model cannot take, or a request that is malformed.
    #[error("{0}")]
    BadInput(String),
    /// The request names a model (or version) this server does not serve.
    #[error("{0}")]
    ModelNotFound(String),
    /// Too many requests in flight.
    #[error(
        "the server is at its limit of {limit} concurrent requests; retry later or raise --max-concurrent-requests"
    )]
    Overloaded {
        /// `--max-concurrent-requests`.
        limit: usize,
    },
    /// The batch queue has no room for a request's texts.
    #[error(
        "the batch queue is full (at most {capacity} texts may wait for the model); retry later or on another replica, or raise {}",
        openmodel_contract::flag(openmodel_contract::serve::MAX_QUEUED_TEXTS)
    )]
    QueueFull {
        /// `--max-queued-texts`.
        capacity: usize,
    },
    /// The server cannot answer now (still loading, or shutting down); a
    /// retry, here later or on another replica, may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// A thread could not be started, or a task of the server crashed.
    #[error("{0}")]
    Thread(String),
    /// A server setting is out of range.
    #[error("{0}")]
    BadConfig(String),
    /// The gRPC port could not be bound or served.
    #[error("gRPC on {addr}: {reason}")]
    Grpc {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// The metrics endpoint failed (from openmodel-runtime).
    #[error(transparent)]
    Endpoints(#[from] openmodel_runtime::Error),
    /// The tensor library failed.
    #[error("inference: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A source lists a path that no model folder holds, or that would
    /// leave the destination.
    #[error(
        "refusing the path {path:?} from the source's listing: it {reason}; a model's files are relative paths inside its folder"
    )]
    UnsafePath {
        /// The path as listed.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A source's listing cannot be used as it is.
    #[error("refusing the source's listing: {0}")]
    BadListing(String),
    /// A download failed for good (after retries, or a status that retrying cannot fix).
    #[error("download of {url} failed: {reason}")]
    Download {
        /// What was being downloaded.
        url: String,
        /// Why it failed.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for the server library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
