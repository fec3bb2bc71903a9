//! The OpenModel data plane.
//!
//! - [`manifest`]: the manifest digest of a model folder (SHA-256 per file,
//!   root over the per-file digests in path order, as in OpenSSF model
//!   signing's file serialization), and how two manifests differ.
//! - [`fetch`]: download a model folder from `file://`, `http(s)://` or
//!   `hf://` into a directory, resuming and retrying, and verify it.
//!
//! The gRPC inference server (Open Inference Protocol on candle) is built on
//! these in a later step.

mod error;
pub mod fetch;
pub mod manifest;

pub use error::{Error, Result};
