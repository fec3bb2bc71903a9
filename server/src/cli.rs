//! The command line of `openmodel-server`, in the library so that the
//! operator's tests parse the arguments it generates with this very
//! definition. Flags the operator passes are named by
//! [`openmodel_contract`]; the ports default to the contract's.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use openmodel_contract::{GRPC_PORT, HTTP_PORT, METRICS_PORT, fetch, serve};
use openmodel_runtime::logging::LogArgs;

use crate::Result;
use crate::batching::Limits;
use crate::generate::engine::EngineLimits;
use crate::generate::params::{self, GenerationBounds};
use crate::limits::{self, RequestLimits};
use crate::model::decoder::config::KvDtype;
use crate::model::engine::Engine;
use crate::server::{Config, GenerationConfig, TaskChoice};

/// OpenModel's data plane: fetch and verify model weights, and serve them.
///
/// A model's identity is its manifest digest, sha256-manifest-v2:…,
/// SHA-256 over every file's path, size and SHA-256 in path order (hidden
/// files excluded, symbolic links refused), each file named by its path as
/// in OpenSSF model signing. The first version, sha256:…, covered the
/// contents but not the names; digests pinned in it are still checked by
/// its rule. The same digest goes in the OpenModel resource, the audit
/// ledger and every inference response.
#[derive(Parser, Debug)]
#[command(name = "openmodel-server", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve an embedding model over the Open Inference Protocol (gRPC).
    ///
    /// Computes the folder's manifest digest first (and refuses to start on a
    /// mismatch with --expect-digest), starts listening at once (live, not
    /// ready: grpc.health.v1 NOT_SERVING), loads and warms up the model,
    /// then reports ready. SIGTERM stops accepting, finishes what is in
    /// flight and exits.
    #[command(name = serve::COMMAND)]
    Serve(Box<ServeArgs>),
    /// Print the manifest digest of a model folder (sha256-manifest-v2:…;
    /// --v1 for the first version, sha256:…).
    Digest(DigestArgs),
    /// Download a model into a folder and verify its digest (the init container).
    ///
    /// Exit code 0 only when the folder's manifest digest equals
    /// --expect-digest; the digest (or the error) is written to
    /// --termination-log so Kubernetes shows it in the pod status. The
    /// source is not trusted: paths that would leave --dest are refused,
    /// files are cut at the size their listing announces, and every wait
    /// is bounded (--connect-timeout-secs, --timeout-secs,
    /// --idle-timeout-secs, --total-timeout-secs).
    #[command(name = fetch::COMMAND)]
    Fetch(FetchArgs),
    /// Run a text-generation model offline and print, as JSON, its logits
    /// after a prompt and after each of --steps greedy tokens.
    ///
    /// For checking a device against a reference implementation (e.g.
    /// transformers on the same GPU, as scripts/gpu-check.sh does): the
    /// output is {"prompt": [ids], "tokens": [greedy ids], "logits":
    /// [[vocab floats] × (steps + 1)], "device": "…"}.
    Logits(LogitsArgs),
}

/// The arguments of `logits`.
#[derive(Args, Debug)]
pub struct LogitsArgs {
    /// The model: a `.gguf` file, or a folder with one, or a Hugging Face
    /// folder (config.json, *.safetensors).
    #[arg(long = serve::MODEL_DIR)]
    pub model_dir: PathBuf,
    /// Where it runs: cpu, cuda, cuda:N or candle-cpu (as for serve).
    #[arg(long = serve::DEVICE, default_value = "cpu")]
    pub device: String,
    /// Precision on a candle device: auto, f32, f16 or bf16 (as for serve).
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// The prompt's token ids, comma-separated (e.g. 1,17,42).
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub prompt_ids: Vec<u32>,
    /// Greedy steps after the prompt (at most 4096).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub steps: u32,
}

/// The arguments of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The model folder (config.json, tokenizer.json, *.safetensors, sentence-transformers modules).
    #[arg(long = serve::MODEL_DIR, env = "OPENMODEL_MODEL_DIR")]
    pub model_dir: PathBuf,
    /// Refuse to start unless the folder has this digest (sha256-manifest-v2:…,
    /// or sha256:… checked by the first version's rule, or a manifest JSON
    /// file); answers then carry the digest in that version.
    #[arg(long = serve::EXPECT_DIGEST, env = "OPENMODEL_EXPECT_DIGEST", value_name = "DIGEST|FILE")]
    pub expect_digest: Option<String>,
    /// Name clients use for the model (default: the folder's name).
    #[arg(long = serve::MODEL_NAME, env = "OPENMODEL_MODEL_NAME")]
    pub model_name: Option<String>,
    /// gRPC address.
    #[arg(
        long = serve::GRPC_LISTEN,
        env = "OPENMODEL_GRPC_LISTEN",
        default_value_t = SocketAddr::from((Ipv4Addr::UNSPECIFIED, GRPC_PORT))
    )]
    pub grpc_listen: SocketAddr,
    /// What the model does. `auto`: text generation for a folder holding a
    /// .gguf file or whose config.json names a *ForCausalLM architecture,
    /// embeddings otherwise.
    #[arg(long = serve::TASK, env = "OPENMODEL_TASK", value_enum, default_value_t = TaskChoice::Auto)]
    pub task: TaskChoice,
    /// OpenAI-compatible HTTP API address (/v1/completions,
    /// /v1/chat/completions, /v1/embeddings, /v1/models).
    #[arg(
        long = serve::HTTP_LISTEN,
        env = "OPENMODEL_HTTP_LISTEN",
        default_value_t = SocketAddr::from((Ipv4Addr::UNSPECIFIED, HTTP_PORT))
    )]
    pub http_listen: SocketAddr,
    /// Most bytes of one HTTP request body; more answers 413.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_http_body_bytes: usize,
    /// Text generation.
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// Prometheus metrics address (GET /metrics; also /healthz and /readyz).
    #[arg(
        long = serve::METRICS_LISTEN,
        env = "OPENMODEL_METRICS_LISTEN",
        default_value_t = SocketAddr::from((Ipv4Addr::UNSPECIFIED, METRICS_PORT))
    )]
    pub metrics_listen: SocketAddr,
    /// Most tokens in one batch, padding included.
    #[arg(long = serve::MAX_BATCH_TOKENS, default_value_t = 16384)]
    pub max_batch_tokens: usize,
    /// Most texts in one batch.
    #[arg(long = serve::MAX_BATCH_REQUESTS, default_value_t = 64)]
    pub max_batch_requests: usize,
    /// Requests in flight beyond this answer RESOURCE_EXHAUSTED.
    #[arg(long = serve::MAX_CONCURRENT_REQUESTS, default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Most texts in one request (text-embeddings-inference's default);
    /// more is INVALID_ARGUMENT, before any work.
    #[arg(long = serve::MAX_CLIENT_BATCH_SIZE, default_value_t = limits::DEFAULT_MAX_TEXTS)]
    pub max_client_batch_size: usize,
    /// Most bytes (UTF-8) in one text; a longer one is INVALID_ARGUMENT,
    /// before it is tokenized, whatever `truncate` says. The default is 512
    /// tokens (the longest input of BERT-family encoders) × 128 bytes per
    /// token: generous for any language, yet one request holds at most
    /// 2 MiB of text.
    #[arg(long = serve::MAX_TEXT_BYTES, default_value_t = limits::DEFAULT_MAX_TEXT_BYTES)]
    pub max_text_bytes: usize,
    /// Most texts waiting for the model, over all requests; a request whose
    /// texts do not all fit answers RESOURCE_EXHAUSTED before it is
    /// tokenized. At least --max-client-batch-size.
    #[arg(long = serve::MAX_QUEUED_TEXTS, default_value_t = 8192)]
    pub max_queued_texts: usize,
    /// Requests tokenized at once, each on a thread of its own beside the
    /// async workers, so that long texts never delay the health checks
    /// (default: the compute threads).
    #[arg(long, env = "OPENMODEL_TOKENIZATION_WORKERS")]
    pub tokenization_workers: Option<usize>,
    /// Compute threads (default: the container's CPU limit, else the cores present).
    #[arg(long, env = "OPENMODEL_THREADS")]
    pub threads: Option<usize>,
    /// Where the model runs: `cpu` (native kernels, AVX-512 when the CPU
    /// has it), `cuda` / `cuda:N` (candle on a GPU; needs a build with
    /// `--features cuda`), or `candle-cpu` (candle's CPU kernels, for
    /// comparison).
    #[arg(long = serve::DEVICE, env = "OPENMODEL_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Precision of the weights and activations on a candle device:
    /// `auto` (f16 on a GPU, f32 on candle-cpu), `f32`, `f16` or `bf16`.
    /// The native CPU kernels compute in f32 (GGML weights stay in their
    /// blocks), and a GGUF model computes in f32 on any device.
    #[arg(long, env = "OPENMODEL_DTYPE", default_value = "auto")]
    pub dtype: String,
    /// Index of the `weights.verified` entry of these weights in the
    /// audit ledger, returned with every response (ModelInfer parameter
    /// `ledger_index`, ModelMetadata header `ledger-index`) so a client
    /// can fetch the entry and its proof with `openmodel audit show
    /// INDEX --server …`. Without it (and without the annotation below)
    /// responses carry no index.
    #[arg(
        long,
        env = "OPENMODEL_LEDGER_INDEX",
        value_name = "INDEX",
        value_parser = parse_ledger_index
    )]
    pub ledger_index: Option<u64>,
    /// The pod's annotations as a Kubernetes downward-API volume writes
    /// them (`fieldRef: metadata.annotations`, e.g.
    /// /etc/openmodel/podinfo/annotations). Reread every 2 s: once the
    /// operator annotates the pod with
    /// `serving.openmodel.dev/weights-entry: "INDEX"`, that index is
    /// served instead of --ledger-index, without a restart. An unreadable
    /// file or value is reported and ignored.
    #[arg(long = serve::POD_ANNOTATIONS, env = "OPENMODEL_POD_ANNOTATIONS", value_name = "FILE")]
    pub pod_annotations: Option<PathBuf>,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// The text-generation engine's limits (vLLM's flag names where vLLM has
/// one).
#[derive(Args, Debug)]
#[command(next_help_heading = "Text generation")]
pub struct GenerationArgs {
    /// Sequences generated at once (the running batch).
    #[arg(long = serve::MAX_NUM_SEQS, default_value_t = 32)]
    pub max_num_seqs: usize,
    /// Tokens one forward pass processes: one per running sequence, the
    /// rest for chunks of prompts, so long prompts never stall streams.
    #[arg(long, default_value_t = 256)]
    pub max_num_batched_tokens: usize,
    /// Requests waiting for room in the batch; more answer
    /// RESOURCE_EXHAUSTED (HTTP 429).
    #[arg(long, default_value_t = 256)]
    pub max_waiting_requests: usize,
    /// Bytes of KV cache all sequences may hold. Each request reserves
    /// room for its prompt and max_tokens when it starts; requests wait
    /// while the budget is full, and one that could never fit is refused.
    #[arg(long = serve::KV_CACHE_BYTES, default_value_t = 2 << 30)]
    pub kv_cache_bytes: usize,
    /// Prefix caching (vLLM's flag; on unless --no-enable-prefix-caching):
    /// a request whose prompt begins as a running or recently finished
    /// request's did (a shared system prompt, a chat's earlier turns)
    /// starts from a copy of those keys and values, in whole tiles of 16
    /// tokens. The tokens generated are the same bit for bit; only the
    /// time to the first one changes. Finished requests' caches stay in
    /// the free part of --kv-cache-bytes until a new request needs it. On
    /// our CPU kernels only (not with --device cuda). Where clients must
    /// not learn anything of each other's prompts, turn it off: a client
    /// can time whether another sent the same first tokens before it.
    #[arg(long = serve::ENABLE_PREFIX_CACHING, overrides_with = "no_enable_prefix_caching")]
    pub enable_prefix_caching: bool,
    /// Turns prefix caching off (see --enable-prefix-caching).
    #[arg(long = serve::NO_ENABLE_PREFIX_CACHING, overrides_with = "enable_prefix_caching")]
    pub no_enable_prefix_caching: bool,
    /// Longest prompt, in tokens.
    #[arg(long = serve::MAX_PROMPT_TOKENS, default_value_t = 8192)]
    pub max_prompt_tokens: usize,
    /// Element type of the KV cache on our CPU kernels: f32 (the model's
    /// own arithmetic), or f16 (half the memory, so twice the tokens in
    /// --kv-cache-bytes, and half the bytes each decode step reads, as
    /// llama.cpp's default; each key and value rounded to f16 once). On a
    /// candle device (--device cuda) the cache is in --dtype and only f32
    /// is accepted here.
    #[arg(long = serve::KV_CACHE_DTYPE, value_enum, default_value_t = KvDtype::F32)]
    pub kv_cache_dtype: KvDtype,
    /// Most tokens one request may generate (and what max_tokens: null
    /// asks for, within the model's context).
    #[arg(long = params::MAX_NEW_TOKENS, default_value_t = params::DEFAULT_MAX_NEW_TOKENS)]
    pub max_new_tokens: u32,
    /// Most stop strings in one request.
    #[arg(long = params::MAX_STOP_STRINGS, default_value_t = params::DEFAULT_MAX_STOP_STRINGS)]
    pub max_stop_strings: usize,
    /// Most bytes of one stop string.
    #[arg(long = params::MAX_STOP_STRING_BYTES, default_value_t = params::DEFAULT_MAX_STOP_STRING_BYTES)]
    pub max_stop_string_bytes: usize,
    /// Most stop token ids in one request.
    #[arg(long = params::MAX_STOP_TOKEN_IDS, default_value_t = params::DEFAULT_MAX_STOP_TOKEN_IDS)]
    pub max_stop_token_ids: usize,
}

impl GenerationArgs {
    fn config(&self) -> GenerationConfig {
        GenerationConfig {
            engine: EngineLimits {
                max_sequences: self.max_num_seqs,
                max_waiting: self.max_waiting_requests,
                max_batched_tokens: self.max_num_batched_tokens,
                kv_cache_bytes: self.kv_cache_bytes,
                prefix_caching: !self.no_enable_prefix_caching,
            },
            bounds: GenerationBounds {
                max_tokens: self.max_new_tokens,
                max_stop_strings: self.max_stop_strings,
                max_stop_string_bytes: self.max_stop_string_bytes,
                max_stop_token_ids: self.max_stop_token_ids,
            },
            max_prompt_tokens: self.max_prompt_tokens,
            kv_cache_dtype: self.kv_cache_dtype,
        }
    }
}

/// clap's parser for --ledger-index: the same rules as the pod annotation.
fn parse_ledger_index(text: &str) -> Result<u64, String> {
    crate::provenance::parse_index(text).map_err(|e| e.to_string())
}

impl ServeArgs {
    /// The compute threads: `--threads`, else the container's CPU limit.
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(crate::cpu::default_threads)
            .max(1)
    }

    /// The server's configuration; fails on a `--device` it cannot use.
    pub fn config(self) -> Result<Config> {
        let threads = self.threads();
        Ok(Config {
            threads,
            task: self.task,
            http_listen: self.http_listen,
            max_http_body_bytes: self.max_http_body_bytes,
            generation: self.generation.config(),
            engine: Engine::parse(&self.device, &self.dtype)?,
            model_dir: self.model_dir,
            expect_digest: self.expect_digest,
            model_name: self.model_name,
            grpc_listen: self.grpc_listen,
            metrics_listen: self.metrics_listen,
            limits: Limits {
                max_batch_tokens: self.max_batch_tokens,
                max_batch_requests: self.max_batch_requests,
                max_queued: self.max_queued_texts,
            },
            request_limits: RequestLimits {
                max_texts: self.max_client_batch_size,
                max_text_bytes: self.max_text_bytes,
            },
            max_concurrent_requests: self.max_concurrent_requests,
            tokenization_workers: self.tokenization_workers.unwrap_or(threads),
            ledger_index: self.ledger_index,
            pod_annotations: self.pod_annotations,
        })
    }
}

/// How `digest` prints.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Output {
    /// Just the digest.
    Text,
    /// The whole manifest (per-file digests), to publish beside the files or
    /// pass to --expect-digest so mismatches name the file.
    Json,
}

/// The arguments of `digest`.
#[derive(Args, Debug)]
pub struct DigestArgs {
    /// The model folder.
    pub dir: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// Print the first version of the digest (sha256:…), as models pinned
    /// before version 2 record it; it covers the files' contents in path
    /// order, not their names.
    #[arg(long)]
    pub v1: bool,
}

/// The arguments of `fetch`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// file:///folder, http(s)://host/folder/ (listed by .openmodel-manifest.json)
    /// or hf://org/repo@revision.
    #[arg(long = fetch::SOURCE)]
    pub source: String,
    /// Destination folder (created; must hold no other model files).
    #[arg(long = fetch::DEST)]
    pub dest: PathBuf,
    /// The manifest digest (sha256-manifest-v2:…, or sha256:… checked by the
    /// first version's rule), or a manifest JSON file (names the first
    /// differing file); the verified digest is written in that version.
    #[arg(long = fetch::EXPECT_DIGEST, value_name = "DIGEST|FILE")]
    pub expect_digest: String,
    /// File to write the verified digest (or the failure) to, e.g. /dev/termination-log.
    #[arg(long = fetch::TERMINATION_LOG, value_name = "PATH")]
    pub termination_log: Option<PathBuf>,
    /// Attempts per file after the first (timeouts, dropped connections, 5xx).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Longest wait for a server to start answering a request (its
    /// headers), in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
    /// Longest wait for a connection (TCP and TLS), in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_secs: u64,
    /// Longest gap in the data of an answer, in seconds: a stalled
    /// connection fails (and is retried, resuming the file) after it.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// Longest the whole fetch may take, every file, retry and wait
    /// included, in seconds: a source that trickles fails after it.
    #[arg(long, default_value_t = 7200, value_parser = clap::value_parser!(u64).range(1..))]
    pub total_timeout_secs: u64,
    /// First wait between attempts, in milliseconds (doubles each retry).
    #[arg(long, default_value_t = 500)]
    pub backoff_ms: u64,
    /// Most bytes the whole model may have (the default: 256 GiB). A
    /// listing announcing more is refused before any download; a file
    /// growing past the size its listing announces (or, unannounced, past
    /// what is left of this) is cut and refused.
    #[arg(
        long = fetch::MAX_BYTES,
        default_value_t = 256 << 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_bytes: u64,
    /// Hub endpoint for hf:// sources (the Hub or a mirror).
    #[arg(long, env = "HF_ENDPOINT")]
    pub hf_endpoint: Option<String>,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent_and_defaults_to_the_contract_s_ports() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["openmodel-server", "serve", "--model-dir", "/m"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.grpc_listen.port(), GRPC_PORT);
        assert_eq!(args.metrics_listen.port(), METRICS_PORT);
    }

    #[test]
    fn prefix_caching_is_on_unless_turned_off_and_the_last_flag_wins() {
        let caching = |flags: &[&str]| {
            let args = ["openmodel-server", "serve", "--model-dir", "/m"];
            let cli = Cli::try_parse_from(args.iter().chain(flags)).unwrap();
            let Command::Serve(args) = cli.command else {
                panic!("not serve")
            };
            args.generation.config().engine.prefix_caching
        };
        assert!(caching(&[]));
        assert!(caching(&["--enable-prefix-caching"]));
        assert!(!caching(&["--no-enable-prefix-caching"]));
        assert!(caching(&[
            "--no-enable-prefix-caching",
            "--enable-prefix-caching"
        ]));
        assert!(!caching(&[
            "--enable-prefix-caching",
            "--no-enable-prefix-caching"
        ]));
    }
}
