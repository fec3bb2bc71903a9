//! The one error type of the history crate.

/// A recorded history that cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `spec.changed` patch is no JSON Patch or does not apply to the spec
    /// rebuilt from the entries before it: the ledger's history of that
    /// model is inconsistent.
    #[error("the spec.changed patch of {what} does not apply: {why}")]
    Patch {
        /// Which entry (generation or index).
        what: String,
        /// Why.
        why: String,
    },
}
