//! Models: from a Hugging Face / sentence-transformers folder to the work a
//! task does on batches of token ids.
//!
//! - [`task`]: the [`task::Task`] trait the inference core and the batcher
//!   see (tokenize one text; run one batch); one implementation per kind of
//!   work.
//! - [`embedding`]: the embedding task: tokenize → encode → pool →
//!   normalize.
//! - [`engine`]: the [`engine::Encoder`] trait (token ids → token states),
//!   the [`engine::Engine`] choice and the factory, with one module per
//!   engine: [`engine::native_bert`] (our CPU kernels) and
//!   [`engine::candle_bert`] (candle, CPU or GPU).
//! - [`weights`]: the folder's safetensors, loaded and read by name.
//! - [`folder`]: what the folder says (architecture, pooling, normalization,
//!   maximum sequence length), read from its JSON files.
//! - [`decoder`]: decoder-only language models (Llama, Qwen2, Qwen3) on
//!   our kernels, from GGUF or safetensors, batched across sequences;
//! - [`gguf`]: GGUF headers read from untrusted files, and tensor bytes;
//! - [`gguf_tokenizer`]: the tokenizer a GGUF file describes.
//! - [`pooling`]: sentence-transformers' pooling over token states, and L2
//!   normalization.

pub mod decoder;
pub mod embedding;
pub mod engine;
pub mod folder;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod pooling;
pub mod task;
pub mod weights;
