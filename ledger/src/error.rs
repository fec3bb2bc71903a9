//! The one error type of the ledger crate.
//!
//! Every message says what was wrong and, where there is something to do,
//! what to do about it. [`Error::is_verification_failure`] separates "the log
//! is not what it claims to be" (tampering, forks, bad signatures, proofs that
//! do not verify) from plain bad input or I/O, so command-line tools can map
//! them to distinct exit codes.

use std::path::PathBuf;

/// Everything that can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An entry's canonical JSON is longer than an entry bundle can hold.
    #[error(
        "entry is {size} bytes of canonical JSON; the limit is {max} bytes (tlog-tiles entry \
         bundles store a 16-bit length): shorten it, e.g. move bulky data out and reference it by digest"
    )]
    EntryTooLarge {
        /// Size of the canonical JSON.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An entry does not follow the entry schema.
    #[error("invalid entry: {0}")]
    InvalidEntry(String),
    /// A key string is malformed or its key hash does not match.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A signed note is malformed.
    #[error("invalid signed note: {0}")]
    InvalidNote(String),
    /// A checkpoint body is malformed.
    #[error("invalid checkpoint: {0}")]
    InvalidCheckpoint(String),
    /// A proof is malformed (as opposed to well-formed but wrong).
    #[error("invalid proof: {0}")]
    InvalidProof(String),
    /// A well-formed proof does not prove what it claims.
    #[error("proof does not verify: {0}")]
    ProofFailed(String),
    /// A note carries no valid signature by the expected key.
    #[error("signature check failed: {0}")]
    BadSignature(String),
    /// Stored or exported data does not match what was signed.
    #[error("tampering detected at index {index}: {detail}")]
    Tampered {
        /// The first entry index that is affected.
        index: u64,
        /// What differs.
        detail: String,
    },
    /// Entries and hashes agree with each other but not with the signed root.
    #[error("root mismatch: {0}")]
    RootMismatch(String),
    /// Two views of the log cannot both be true.
    #[error("FORK DETECTED: {0}")]
    Fork(String),
    /// A retried append reused a dedupe key for a different entry.
    #[error(
        "dedupe key {key:?} already names entry {index}, whose content differs: a retry must \
         send the same entry; use a new dedupe key for a new event"
    )]
    DedupeConflict {
        /// The dedupe key.
        key: String,
        /// The index of the entry that already holds it.
        index: u64,
    },
    /// An index beyond the current tree.
    #[error("index {index} is beyond the tree of size {size}")]
    IndexOutOfRange {
        /// The requested index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// An export bundle is incomplete or malformed.
    #[error("invalid bundle: {0}")]
    InvalidBundle(String),
    /// A query filter is malformed.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A tlog-tiles path is malformed.
    #[error("invalid tile path {0}")]
    InvalidTilePath(String),
    /// Something asked for is not in the log (yet).
    #[error("not found: {0}")]
    NotFound(String),
    /// The ledger file was made by a newer build.
    #[error(
        "ledger schema version {found} is newer than this build supports ({supported}): upgrade openmodel"
    )]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The file is not a ledger or was opened with the wrong key.
    #[error("cannot use ledger: {0}")]
    Unusable(String),
    /// A batch of appends could not be committed; none of it was logged.
    #[error("append not committed (nothing from this batch was logged): {0}")]
    CommitFailed(String),
    /// The writer thread is gone (its database failed or the ledger is closing).
    #[error("the ledger writer has stopped: {0}")]
    WriterStopped(String),
    /// A read ran past the ledger's read time limit and was stopped.
    #[error(
        "the read ran longer than {limit:?} and was stopped: ask for less (a namespace, a kind, \
         a time range, a smaller page)"
    )]
    ReadTimedOut {
        /// The limit it ran past.
        limit: std::time::Duration,
    },
    /// An SQLite failure.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// True when the error means the log (or a proof about it) is not what it
    /// claims to be, rather than bad input or a failed read.
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            Error::ProofFailed(_)
                | Error::BadSignature(_)
                | Error::Tampered { .. }
                | Error::RootMismatch(_)
                | Error::Fork(_)
        )
    }

    /// True when the error reports a fork (two views of one log).
    pub fn is_fork(&self) -> bool {
        matches!(self, Error::Fork(_))
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for the ledger crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
