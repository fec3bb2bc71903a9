//! The one error type of the runtime crate.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What can go wrong while setting up a server's common parts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// A file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        /// What the file is for (names the flag that points at it).
        what: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A listening address could not be bound or served.
    #[error("cannot serve on {addr}: {source} (is another process using the port?)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}
