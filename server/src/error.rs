//! The one error type of the server library.

use std::path::PathBuf;

/// Everything that can go wrong fetching or checking a model.
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
    /// An input the model cannot take.
    #[error("{0}")]
    BadInput(String),
    /// The tensor library failed.
    #[error("inference: {0}")]
    Tensor(#[from] candle_core::Error),
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
