//! The one error type of the ledger service and its client.
//!
//! What the log itself says (a malformed query, an index beyond the tree,
//! tampering) stays the ledger's own error, wrapped whole in
//! [`Error::Ledger`], so callers can still tell a fork from a refusal.

use tonic::Code;

/// Everything that can go wrong serving a ledger or talking to one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log refused or failed (bad input, tampering, storage).
    #[error(transparent)]
    Ledger(#[from] openmodel_ledger::Error),
    /// A caller did not prove who they are.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A caller may not do what they asked.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A caller, or all callers together, reached one of the service's
    /// limits (calls at once, watches, entry bundles, an unread watch).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The Kubernetes API server could not be asked who a caller is or what
    /// they may do.
    #[error("cannot check the caller with the Kubernetes API server: {0}")]
    AuthorizationUnavailable(String),
    /// The configuration is unusable (TLS files, key file, flags, token).
    #[error("configuration: {0}")]
    Config(String),
    /// A network listener, connection or transport failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The service answered a call with an error status.
    #[error("{doing}: the ledger service answered {code:?}: {message}")]
    Refused {
        /// What the client was doing.
        doing: String,
        /// The gRPC status code.
        code: Code,
        /// The service's message.
        message: String,
    },
}

impl From<openmodel_runtime::Error> for Error {
    fn from(error: openmodel_runtime::Error) -> Error {
        match error {
            openmodel_runtime::Error::Listen { .. } => Error::Transport(error.to_string()),
            _ => Error::Config(error.to_string()),
        }
    }
}

impl Error {
    /// True when the error means the log (or a proof about it) is not what
    /// it claims to be.
    pub fn is_verification_failure(&self) -> bool {
        matches!(self, Error::Ledger(e) if e.is_verification_failure())
    }

    /// The gRPC status code of this error (the HTTPS port maps it on).
    pub fn code(&self) -> Code {
        use openmodel_ledger::Error as L;
        match self {
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::AuthorizationUnavailable(_) | Error::Transport(_) => Code::Unavailable,
            Error::Refused { code, .. } => *code,
            Error::Config(_) => Code::Internal,
            Error::Ledger(e) => match e {
                L::WriterStopped(_) | L::CommitFailed(_) => Code::Unavailable,
                L::InvalidQuery(_)
                | L::InvalidEntry(_)
                | L::EntryTooLarge { .. }
                | L::InvalidProof(_)
                | L::InvalidTilePath(_) => Code::InvalidArgument,
                L::IndexOutOfRange { .. } => Code::OutOfRange,
                L::ReadTimedOut { .. } => Code::ResourceExhausted,
                L::NotFound(_) => Code::NotFound,
                L::DedupeConflict { .. } => Code::AlreadyExists,
                _ => Code::Internal,
            },
        }
    }
}

/// Result alias for the ledger service.
pub type Result<T, E = Error> = std::result::Result<T, E>;
