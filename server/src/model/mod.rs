//! Models: from a Hugging Face / sentence-transformers folder to embeddings.
//!
//! - [`folder`]: what the folder says (architecture, pooling, normalization,
//!   maximum sequence length), read from its JSON files.
//! - [`pooling`]: sentence-transformers' pooling over token states.
//! - [`encoder`]: the transformer forward pass behind the [`encoder::Encoder`]
//!   trait, so more architectures plug in beside BERT.
//! - [`embedder`]: tokenize → encode → pool → normalize, the pipeline the
//!   server calls with a batch of texts.

pub mod embedder;
pub mod encoder;
pub mod folder;
pub mod native_bert;
pub mod pooling;
