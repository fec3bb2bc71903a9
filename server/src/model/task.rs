//! What a model task is to the rest of the server: texts are tokenized one
//! by one (on a blocking pool, by the inference core), the token ids of
//! many requests are batched (by [`crate::batching`]), and each batch runs
//! at once on the model's thread. Embeddings ([`crate::model::embedding`])
//! are one task; text generation plugs in beside it as another
//! implementation of [`Task`], with its own output type.

use crate::Result;

/// Token ids of one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// Ids including special tokens.
    pub ids: Vec<u32>,
    /// True when the input was cut to the maximum length.
    pub truncated: bool,
}

/// A loaded model doing one kind of work on batches of tokenized inputs.
pub trait Task: Send + Sync + 'static {
    /// What one input becomes.
    type Output: Send + 'static;

    /// Tokenizes one text. Longer than the model's maximum: cut when
    /// `truncate`, otherwise [`crate::Error::BadInput`] saying by how much.
    fn tokenize(&self, text: &str, truncate: bool) -> Result<Tokens>;

    /// Runs one batch (each input at least one token): one output per
    /// input, in order.
    fn run(&self, batch: &[&[u32]]) -> Result<Vec<Self::Output>>;
}
