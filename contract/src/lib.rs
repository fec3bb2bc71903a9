//! The contract between the operator and the inference server: every name
//! one of them writes and the other reads, defined once.
//!
//! - [`serve`] and [`fetch`]: the server's subcommands and the flags the
//!   operator passes to them in the pods it generates (the server's clap
//!   definition uses the same constants, and the operator's tests parse
//!   the generated arguments with it);
//! - [`GRPC_PORT`], [`HTTP_PORT`] and [`METRICS_PORT`]: the ports the
//!   server listens on by default and the operator exposes;
//! - [`WEIGHTS_ENTRY_ANNOTATION`]: the pod annotation the operator sets and
//!   the server follows;
//! - [`response`]: what every answer carries about the served weights;
//! - [`digest`]: the forms of the manifest digest that names a model's
//!   weights, and the rule that validates them (the CRD uses it).
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

/// The OpenAI-compatible HTTP port (completions and chat of
/// text-generation models, embeddings of embedding models): the server's
/// default `--http-listen` port (vLLM's) and the one the operator's
/// Service exposes.
pub const HTTP_PORT: u16 = 8000;

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
    /// The manifest digest the folder must have (either form of
    /// [`digest`](crate::digest), or a manifest JSON file); the server
    /// refuses to start otherwise.
    pub const EXPECT_DIGEST: &str = "expect-digest";
    /// The name clients use for the model.
    pub const MODEL_NAME: &str = "model-name";
    /// The gRPC address (`host:port`).
    pub const GRPC_LISTEN: &str = "grpc-listen";
    /// The Prometheus metrics address (`host:port`).
    pub const METRICS_LISTEN: &str = "metrics-listen";
    /// The OpenAI-compatible HTTP API's address.
    pub const HTTP_LISTEN: &str = "http-listen";
    /// What the model does: `auto`, [`TASK_EMBEDDINGS`] or
    /// [`TASK_TEXT_GENERATION`].
    pub const TASK: &str = "task";
    /// The `--task` value for sentence embeddings.
    pub const TASK_EMBEDDINGS: &str = "embeddings";
    /// The `--task` value for text generation.
    pub const TASK_TEXT_GENERATION: &str = "text-generation";
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
    /// Text generation: sequences generated at once (vLLM's name).
    pub const MAX_NUM_SEQS: &str = "max-num-seqs";
    /// Text generation: bytes of KV cache all sequences may hold.
    pub const KV_CACHE_BYTES: &str = "kv-cache-bytes";
    /// Text generation: the element type of the KV cache on the CPU
    /// kernels, [`KV_CACHE_DTYPE_F32`] (the default) or
    /// [`KV_CACHE_DTYPE_F16`].
    pub const KV_CACHE_DTYPE: &str = "kv-cache-dtype";
    /// The `--kv-cache-dtype` value for a cache in f32.
    pub const KV_CACHE_DTYPE_F32: &str = "f32";
    /// The `--kv-cache-dtype` value for a cache in f16.
    pub const KV_CACHE_DTYPE_F16: &str = "f16";
    /// Text generation: prefix caching on (the default; vLLM's flag).
    pub const ENABLE_PREFIX_CACHING: &str = "enable-prefix-caching";
    /// Text generation: prefix caching off.
    pub const NO_ENABLE_PREFIX_CACHING: &str = "no-enable-prefix-caching";
    /// Text generation: the longest prompt, in tokens.
    pub const MAX_PROMPT_TOKENS: &str = "max-prompt-tokens";
    /// Text generation: most tokens one request may generate.
    pub const MAX_NEW_TOKENS: &str = "max-new-tokens";
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
    /// The manifest digest they must have (either form of
    /// [`digest`](crate::digest)).
    pub const EXPECT_DIGEST: &str = "expect-digest";
    /// Where the verified digest (in the form of the expected one) or the
    /// failure is written; the operator reads it from the container's
    /// termination message.
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
    /// HTTP response header of the OpenAI-compatible API: the manifest
    /// digest of the served weights.
    pub const HTTP_DIGEST_HEADER: &str = "x-openmodel-model-digest";
    /// HTTP response header of the OpenAI-compatible API (decimal): the
    /// ledger index of the `weights.verified` entry, once known.
    pub const HTTP_LEDGER_INDEX_HEADER: &str = "x-openmodel-ledger-index";
}

/// The manifest digest that names a model's weights: its forms, one per
/// version, each with its own prefix so that a digest says which rule made
/// it, and the rule that validates them (the operator's CRD uses
/// [`digest::CEL_RULE`]).
///
/// - [`Version::V2`](digest::Version::V2), `sha256-manifest-v2:<64 hex>`,
///   the default: covers each file's path, size and content;
/// - [`Version::V1`](digest::Version::V1), `sha256:<64 hex>`, the first
///   form: covers the files' contents in path order, not their names (a
///   file renamed, order kept, keeps it); still accepted where a model
///   pins it, with that meaning.
///
/// The server (`openmodel-server digest`, `fetch`, `serve`) computes both.
pub mod digest {
    /// A version of the manifest digest.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Version {
        /// `sha256:`: SHA-256 over the files' SHA-256 digests in path order.
        V1,
        /// `sha256-manifest-v2:`: SHA-256 over every file's path, size and
        /// SHA-256 digest in path order.
        V2,
    }

    /// The prefix of a version 1 digest.
    pub const V1_PREFIX: &str = "sha256:";

    /// The prefix of a version 2 digest.
    pub const V2_PREFIX: &str = "sha256-manifest-v2:";

    /// Hex digits after the prefix (a SHA-256).
    pub const HEX_DIGITS: usize = 64;

    /// Length of the longest digest (version 2).
    pub const MAX_LEN: usize = V2_PREFIX.len() + HEX_DIGITS;

    /// The regular expression of both forms.
    pub const PATTERN: &str = "^(sha256|sha256-manifest-v2):[0-9a-f]{64}$";

    /// A Kubernetes CEL rule accepting both forms.
    pub const CEL_RULE: &str = "self.matches('^(sha256|sha256-manifest-v2):[0-9a-f]{64}$')";

    /// The forms in words, for error messages.
    pub const FORMS: &str = "sha256-manifest-v2:<64 lowercase hex digits> (or, as pinned before version 2, sha256:<64 lowercase hex digits>)";

    impl Version {
        /// The newest version: what `openmodel-server digest` prints.
        pub const CURRENT: Version = Version::V2;

        /// The prefix of this version's digests.
        pub const fn prefix(self) -> &'static str {
            match self {
                Version::V1 => V1_PREFIX,
                Version::V2 => V2_PREFIX,
            }
        }

        /// The version of a well-formed digest (its prefix and 64 lowercase
        /// hex digits); `None` for anything else.
        ///
        /// ```
        /// use openmodel_contract::digest::Version;
        /// let hex = "0".repeat(64);
        /// assert_eq!(Version::of(&format!("sha256-manifest-v2:{hex}")), Some(Version::V2));
        /// assert_eq!(Version::of(&format!("sha256:{hex}")), Some(Version::V1));
        /// assert_eq!(Version::of("sha256:abc"), None);
        /// ```
        pub fn of(digest: &str) -> Option<Version> {
            [Version::V2, Version::V1].into_iter().find(|v| {
                digest.strip_prefix(v.prefix()).is_some_and(|hex| {
                    hex.len() == HEX_DIGITS
                        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                })
            })
        }

        /// The digest of this version whose hash is `hex`.
        pub fn format(self, hex: &str) -> String {
            format!("{}{hex}", self.prefix())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_rules_accept_exactly_the_two_forms() {
            let hex = "0123456789abcdef".repeat(4);
            for v in [Version::V1, Version::V2] {
                let digest = v.format(&hex);
                assert_eq!(Version::of(&digest), Some(v));
                assert!(digest.len() <= MAX_LEN);
                let name = v.prefix().trim_end_matches(':');
                assert!(
                    PATTERN.contains(name) && CEL_RULE.contains(PATTERN),
                    "{name}"
                );
            }
            for bad in [
                format!("sha256:{}", &hex[1..]),
                format!("sha256:{}", hex.to_uppercase()),
                format!("sha256-manifest-v3:{hex}"),
                format!("md5:{hex}"),
                format!("sha256:{hex}0"),
            ] {
                assert_eq!(Version::of(&bad), None, "{bad}");
            }
        }
    }
}
