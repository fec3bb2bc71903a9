//! The OpenModel data plane.
//!
//! - [`manifest`]: the manifest digest of a model folder (SHA-256 per file,
//!   root over the per-file digests in path order, as in OpenSSF model
//!   signing's file serialization), and how two manifests differ.
//! - [`fetch`]: download a model folder from `file://`, `http(s)://` or
//!   `hf://` into a directory, resuming and retrying, and verify it.
//!
//! - [`cpu`]: how many threads the container's CPU limit allows.
//! - [`batching`]: token-budget dynamic batching with the model on its own
//!   thread.
//! - [`model`]: load a Hugging Face / sentence-transformers folder and turn
//!   texts into embeddings on candle.
//!
//! - [`kernels`]: GEMM with packed weights and fused epilogues, GELU,
//!   softmax and LayerNorm for the native CPU encoder.
//! - [`grpc`]: the Open Inference Protocol service over them.
//! - [`metrics`]: Prometheus metrics on their own port.
//! - [`provenance`]: the audit-ledger index of the `weights.verified` entry
//!   for the served weights, from a flag or a pod annotation that
//!   [`podinfo`] reads from the downward API.

pub mod batching;
pub mod cpu;
mod error;
pub mod fetch;
pub mod grpc;
pub mod kernels;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod podinfo;
pub mod provenance;

pub use error::{Error, Result};
