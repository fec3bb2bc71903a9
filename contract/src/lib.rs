//! The contract between the operator and the inference server: every name
//! one of them writes and the other reads, defined once.
//!
//! - [`serve`] and [`fetch`]: the server's subcommands and the flags the
//!   operator passes to them in the pods it generates (the server's clap
//!   definition uses the same constants, and the operator's tests parse
//!   the generated arguments with it);
//! - [`GRPC_PORT`] and [`METRICS_PORT`]: the ports the server listens on by
//!   default and the operator exposes;
//! - [`WEIGHTS_ENTRY_ANNOTATION`]: the pod annotation the operator sets and
//!   the server follows;
//! - [`response`]: what every answer carries about the served weights.
//!
//! Flag names are given without their leading `--` (as clap's `long`
//! takes them); [`flag`] adds it.
//!
//! No dependencies, so that anything may depend on it.

/// The command line flag `--name` for a flag name of this crate.
///
/// ```
/// assert_eq!(openmodel_contract::flag(openmodel_contract::serve::MODEL_DIR), "--model-dir");
/// ```
pub fn flag(name: &str) -> String {
    format!("--{name}")
}

/// The gRPC (Open Inference Protocol) port: the server's default
/// `--grpc-listen` port and the one the operator's Service and probes use.
pub const GRPC_PORT: u16 = 8001;

/// The Prometheus port (`GET /metrics`): the server's default
/// `--metrics-listen` port and the one the operator's Service exposes.
pub const METRICS_PORT: u16 = 9090;

/// The pod annotation holding the audit-ledger index of the
/// `weights.verified` entry of the weights the pod serves: the operator sets
/// it once the entry exists, the kubelet writes it into the pod's
/// downward-API file (`serve --pod-annotations`), and the server returns it
/// to clients next to the digest.
pub const WEIGHTS_ENTRY_ANNOTATION: &str = "serving.openmodel.dev/weights-entry";

/// `openmodel-server serve`: the server container's command and flags.
pub mod serve {
    /// The subcommand.
    pub const COMMAND: &str = "serve";
    /// The model folder to serve.
    pub const MODEL_DIR: &str = "model-dir";
    /// The manifest digest the folder must have (`sha256:…` or a manifest
    /// JSON file); the server refuses to start otherwise.
    pub const EXPECT_DIGEST: &str = "expect-digest";
    /// The name clients use for the model.
    pub const MODEL_NAME: &str = "model-name";
    /// The gRPC address (`host:port`).
    pub const GRPC_LISTEN: &str = "grpc-listen";
    /// The Prometheus metrics address (`host:port`).
    pub const METRICS_LISTEN: &str = "metrics-listen";
    /// The downward-API file of the pod's annotations, followed for
    /// [`WEIGHTS_ENTRY_ANNOTATION`](crate::WEIGHTS_ENTRY_ANNOTATION).
    pub const POD_ANNOTATIONS: &str = "pod-annotations";
    /// Most tokens in one batch.
    pub const MAX_BATCH_TOKENS: &str = "max-batch-tokens";
    /// Most texts in one batch.
    pub const MAX_BATCH_REQUESTS: &str = "max-batch-requests";
    /// Requests in flight beyond this answer RESOURCE_EXHAUSTED.
    pub const MAX_CONCURRENT_REQUESTS: &str = "max-concurrent-requests";
    /// Most texts in one request (as text-embeddings-inference names it);
    /// more is INVALID_ARGUMENT, before any work.
    pub const MAX_CLIENT_BATCH_SIZE: &str = "max-client-batch-size";
    /// Most bytes in one text; a longer one is INVALID_ARGUMENT, before
    /// tokenizing.
    pub const MAX_TEXT_BYTES: &str = "max-text-bytes";
    /// Most texts waiting for the model; a request that would queue more
    /// answers RESOURCE_EXHAUSTED.
    pub const MAX_QUEUED_TEXTS: &str = "max-queued-texts";
    /// Where the model runs (`cpu`, [`DEVICE_CUDA`], …).
    pub const DEVICE: &str = "device";
    /// The `--device` value for the first GPU.
    pub const DEVICE_CUDA: &str = "cuda";
}

/// `openmodel-server fetch`: the init container's command and flags.
pub mod fetch {
    /// The subcommand.
    pub const COMMAND: &str = "fetch";
    /// Where the weights come from (`file://`, `http(s)://`, `hf://`).
    pub const SOURCE: &str = "source";
    /// The folder they go to.
    pub const DEST: &str = "dest";
    /// The manifest digest they must have.
    pub const EXPECT_DIGEST: &str = "expect-digest";
    /// Where the verified digest (or the failure) is written; the operator
    /// reads it from the container's termination message.
    pub const TERMINATION_LOG: &str = "termination-log";
    /// Most bytes the whole model may have: the operator passes the size
    /// it gives the destination volume, so a source cannot fill the node's
    /// disk.
    pub const MAX_BYTES: &str = "max-bytes";
}

/// What every inference answer says about the weights that produced it.
pub mod response {
    /// ModelInfer response parameter (string): the manifest digest of the
    /// served weights.
    pub const DIGEST_PARAMETER: &str = "model_digest";
    /// ModelMetadata response header: the manifest digest of the served
    /// weights.
    pub const DIGEST_HEADER: &str = "model-digest";
    /// ModelInfer response parameter (int64): the ledger index of the
    /// `weights.verified` entry of the served weights, once known.
    pub const LEDGER_INDEX_PARAMETER: &str = "ledger_index";
    /// ModelMetadata response header (decimal): the ledger index of the
    /// `weights.verified` entry of the served weights, once known.
    pub const LEDGER_INDEX_HEADER: &str = "ledger-index";
}
