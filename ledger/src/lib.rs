//! OpenModel's audit ledger: an append-only, tamper-evident log of what was
//! served, who changed it and which data it came from.
//!
//! The construction is Certificate Transparency's (RFC 6962 / RFC 9162
//! Merkle tree, signed checkpoints), with the C2SP formats used by Go's
//! checksum database and Sigstore: checkpoints in signed notes, tiles for
//! publication and export, and tlog-proof files for single entries.
//!
//! Pure parts, usable without storage:
//! - [`hash`]: RFC 6962 leaf and node hashes.
//! - [`tree`]: roots, inclusion and consistency proofs, stored-hash layout.
//! - [`note`], [`checkpoint`]: Ed25519 signed notes and checkpoints.
//! - [`entry`]: the entry schema and its canonical bytes.
//! - [`tiles`], [`proof_file`]: the tlog-tiles layout and tlog-proof files.
//!
//! Storage and its users:
//! - [`store`]: the SQLite log with group commit ([`Ledger`]).
//! - [`query`]: filtered, paginated queries with a completeness statement.
//! - [`export`], [`verify`]: bundles for auditors and their offline check.
//!
//! No network and no Kubernetes here: the ledger service
//! (`openmodel-ledger-service`) serves a ledger, and `openmodel-history`
//! reads what its entries say about models.

pub mod checkpoint;
pub mod entry;
mod error;
pub mod export;
pub mod hash;
pub mod note;
pub mod proof_file;
pub mod query;
pub mod store;
pub mod tiles;
pub mod tree;
pub mod verify;

pub use error::{Error, Result};
pub use store::Ledger;
