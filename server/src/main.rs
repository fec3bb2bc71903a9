//! `openmodel-server`: the OpenModel data plane binary.
//!
//! `serve` (the gRPC inference server), `digest` (the manifest digest of a
//! model folder) and `fetch` (the init container's download-and-verify step).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod serve;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use openmodel_server::fetch::{self, Options, Source};
use openmodel_server::manifest::{Expectation, Manifest};

/// OpenModel's data plane: fetch and verify model weights.
///
/// A model's identity is its manifest digest: SHA-256 of every file in the
/// folder (hidden files excluded, symbolic links refused), combined in path
/// order as in OpenSSF model signing. The same digest goes in the OpenModel
/// resource, the audit ledger and every inference response.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Output {
    /// Just the digest.
    Text,
    /// The whole manifest (per-file digests), to publish beside the files or
    /// pass to --expect-digest so mismatches name the file.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve an embedding model over the Open Inference Protocol (gRPC).
    ///
    /// Computes the folder's manifest digest first (and refuses to start on a
    /// mismatch with --expect-digest), starts listening at once (live, not
    /// ready: grpc.health.v1 NOT_SERVING), loads and warms up the model,
    /// then reports ready. SIGTERM stops accepting, finishes what is in
    /// flight and exits.
    Serve {
        /// The model folder (config.json, tokenizer.json, *.safetensors, sentence-transformers modules).
        #[arg(long, env = "OPENMODEL_MODEL_DIR")]
        model_dir: PathBuf,
        /// Refuse to start unless the folder has this digest (sha256:… or a manifest JSON file).
        #[arg(long, env = "OPENMODEL_EXPECT_DIGEST", value_name = "DIGEST|FILE")]
        expect_digest: Option<String>,
        /// Name clients use for the model (default: the folder's name).
        #[arg(long, env = "OPENMODEL_MODEL_NAME")]
        model_name: Option<String>,
        /// gRPC address.
        #[arg(long, env = "OPENMODEL_GRPC_LISTEN", default_value = "0.0.0.0:8001")]
        grpc_listen: std::net::SocketAddr,
        /// Prometheus metrics address (GET /metrics).
        #[arg(long, env = "OPENMODEL_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
        metrics_listen: std::net::SocketAddr,
        /// Most tokens in one batch, padding included.
        #[arg(long, default_value_t = 16384)]
        max_batch_tokens: usize,
        /// Most texts in one batch.
        #[arg(long, default_value_t = 64)]
        max_batch_requests: usize,
        /// Requests in flight beyond this answer RESOURCE_EXHAUSTED.
        #[arg(long, default_value_t = 512)]
        max_concurrent_requests: usize,
        /// Compute threads (default: the container's CPU limit, else the cores present).
        #[arg(long, env = "OPENMODEL_THREADS")]
        threads: Option<usize>,
        /// Where the model runs: `cpu` (native kernels, AVX-512 when the CPU
        /// has it), `cuda` / `cuda:N` (candle on a GPU; needs a build with
        /// `--features cuda`), or `candle-cpu` (candle's CPU kernels, for
        /// comparison).
        #[arg(long, env = "OPENMODEL_DEVICE", default_value = "cpu")]
        device: String,
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
        ledger_index: Option<u64>,
        /// The pod's annotations as a Kubernetes downward-API volume writes
        /// them (`fieldRef: metadata.annotations`, e.g.
        /// /etc/openmodel/podinfo/annotations). Reread every 2 s: once the
        /// operator annotates the pod with
        /// `serving.openmodel.dev/weights-entry: "INDEX"`, that index is
        /// served instead of --ledger-index, without a restart. An unreadable
        /// file or value is reported and ignored.
        #[arg(long, env = "OPENMODEL_POD_ANNOTATIONS", value_name = "FILE")]
        pod_annotations: Option<PathBuf>,
    },
    /// Print the manifest digest of a model folder.
    Digest {
        /// The model folder.
        dir: PathBuf,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Download a model into a folder and verify its digest (the init container).
    ///
    /// Exit code 0 only when the folder's manifest digest equals
    /// --expect-digest; the digest (or the error) is written to
    /// --termination-log so Kubernetes shows it in the pod status.
    Fetch {
        /// file:///folder, http(s)://host/folder/ (listed by .openmodel-manifest.json)
        /// or hf://org/repo@revision.
        #[arg(long)]
        source: String,
        /// Destination folder (created; must hold no other model files).
        #[arg(long)]
        dest: PathBuf,
        /// sha256:<hex> manifest digest, or a manifest JSON file (names the first differing file).
        #[arg(long, value_name = "DIGEST|FILE")]
        expect_digest: String,
        /// File to write the verified digest (or the failure) to, e.g. /dev/termination-log.
        #[arg(long, value_name = "PATH")]
        termination_log: Option<PathBuf>,
        /// Attempts per file after the first (timeouts, dropped connections, 5xx).
        #[arg(long, default_value_t = 5)]
        retries: u32,
        /// Connect/response timeout per request, in seconds.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// First wait between attempts, in milliseconds (doubles each retry).
        #[arg(long, default_value_t = 500)]
        backoff_ms: u64,
        /// Hub endpoint for hf:// sources (the Hub or a mirror).
        #[arg(long, env = "HF_ENDPOINT")]
        hf_endpoint: Option<String>,
    },
}

/// clap's parser for --ledger-index: the same rules as the pod annotation.
fn parse_ledger_index(text: &str) -> Result<u64, String> {
    openmodel_server::provenance::parse_index(text).map_err(|e| e.to_string())
}

fn write_termination_log(path: Option<&Path>, message: &str) {
    if let Some(path) = path {
        // Kubernetes keeps the last 4096 bytes; keep it short and useful.
        let text: String = message.chars().take(4000).collect();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!(
                "warning: cannot write the termination log {}: {e}",
                path.display()
            );
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve {
            model_dir,
            expect_digest,
            model_name,
            grpc_listen,
            metrics_listen,
            max_batch_tokens,
            max_batch_requests,
            max_concurrent_requests,
            threads,
            device,
            ledger_index,
            pod_annotations,
        } => serve::run(serve::Config {
            model_dir,
            expect_digest,
            model_name,
            grpc_listen,
            metrics_listen,
            limits: openmodel_server::batching::Limits {
                max_batch_tokens,
                max_batch_requests,
            },
            max_concurrent_requests,
            threads,
            engine: openmodel_server::model::encoder::Engine::parse(&device)?,
            ledger_index,
            pod_annotations,
        }),
        Command::Digest { dir, output } => {
            let m = Manifest::of_folder(&dir)?;
            match output {
                Output::Text => println!("{}", m.digest),
                Output::Json => println!("{}", serde_json::to_string_pretty(&m)?),
            }
            Ok(())
        }
        Command::Fetch {
            source,
            dest,
            expect_digest,
            termination_log,
            retries,
            timeout_secs,
            backoff_ms,
            hf_endpoint,
        } => {
            let result = (|| -> Result<Manifest> {
                let source = Source::parse(&source)?;
                let expect = Expectation::parse(&expect_digest)?;
                let opts = Options {
                    retries,
                    timeout: Duration::from_secs(timeout_secs),
                    backoff: Duration::from_millis(backoff_ms),
                    hf_endpoint,
                };
                Ok(fetch::fetch(&source, &dest, &expect, &opts)?)
            })();
            match result {
                Ok(m) => {
                    write_termination_log(termination_log.as_deref(), &m.digest);
                    println!(
                        "verified {} ({} files) in {}",
                        m.digest,
                        m.files.len(),
                        dest.display()
                    );
                    Ok(())
                }
                Err(e) => {
                    write_termination_log(
                        termination_log.as_deref(),
                        &format!("fetch failed: {e:#}"),
                    );
                    Err(e).context(format!("fetching into {}", dest.display()))
                }
            }
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
