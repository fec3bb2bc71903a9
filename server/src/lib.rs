//! The OpenModel data plane: the inference server, and the download and
//! verification of the weights it serves.
//!
//! One request's path, top to bottom:
//!
//! - [`server`]: the [`Server`] built from a [`server::Config`] (the binary
//!   makes it from [`cli`]): binds the ports, loads the model, runs until a
//!   shutdown future completes;
//! - [`grpc`]: the Open Inference Protocol (embeddings, and generation with
//!   Triton's vLLM-backend tensors, streamed on ModelStreamInfer); maps the
//!   wire to and from the core, and [`Error`]s to status codes;
//! - [`openai`]: the OpenAI-compatible HTTP API (completions, chat,
//!   embeddings, models; Server-Sent Events);
//! - [`limits`]: what one request may hold (texts, bytes per text),
//!   checked before any work;
//! - [`inference`]: the protocol-neutral core: admission, the model check,
//!   tokenization on a bounded blocking pool, the batcher, post-processing;
//! - [`generate`]: text generation: sampling parameters, sampler, stops,
//!   incremental detokenization, chat templates, and the continuous-batching
//!   engine;
//! - [`batching`]: token-budget dynamic batching over a bounded queue with
//!   the model on its own thread, for any [`model::task::Task`];
//! - [`model`]: tasks (embeddings), engines (native CPU kernels, candle),
//!   weight loading, the folder's description and pooling;
//! - [`kernels`]: GEMM with packed weights and fused epilogues, GELU,
//!   softmax, LayerNorm and attention for the native engine.
//!
//! Beside it:
//!
//! - [`metrics`]: Prometheus metrics, served with `/healthz` and `/readyz`
//!   by `openmodel_runtime::endpoints`;
//! - [`provenance`]: the audit-ledger index of the `weights.verified` entry
//!   for the served weights, from a flag or a pod annotation that
//!   [`podinfo`] reads from the downward API;
//! - [`cpu`]: how many threads the container's CPU limit allows;
//! - [`manifest`]: the manifest digest of a model folder in either version
//!   (v2 binds each file's path, size and content; v1, the first, the
//!   contents in path order only), and how two manifests differ;
//! - [`fetch`]: download a model folder from `file://`, `http(s)://` or
//!   `hf://` into a directory, resuming and retrying, and verify it; the
//!   source is not trusted ([`fetch::paths`]: nothing lands outside the
//!   directory; [`fetch::http`]: sizes and waits bounded).

pub mod batching;
pub mod cli;
pub mod cpu;
mod error;
pub mod fetch;
pub mod generate;
pub mod grpc;
pub mod inference;
#[allow(unsafe_code)]
pub mod kernels;
pub mod limits;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod podinfo;
pub mod provenance;
pub mod server;

pub use error::{Error, Result};
pub use server::{Addresses, Config, Server};
