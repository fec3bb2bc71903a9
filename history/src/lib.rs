//! What the ledger's entries say about OpenModel resources. The log
//! (`openmodel-ledger`) stores entries and proves them; it does not know the
//! OpenModel spec. This crate does, once, for everyone who reads a model's
//! history:
//!
//! - [`spec`]: the `{"spec": …}` document a model had at a generation,
//!   rebuilt by applying its `spec.changed` JSON Patches in log order (the
//!   operator's next patch is computed against it);
//! - [`confirm`]: which admission entries the controller's entries
//!   confirm (the changes the API server stored), and which no entry does;
//! - [`inventory`]: every model live at a moment, with the weights digest
//!   and the datasets behind each (`openmodel audit inventory`).
//!
//! Pure: entries in, answers out; nothing is read or written.

pub mod confirm;
mod error;
pub mod inventory;
pub mod spec;

pub use error::Error;
