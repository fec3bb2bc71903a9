//! `openmodel-server`: the OpenModel data plane binary.
//!
//! `serve` (the gRPC inference server, [`openmodel_server::Server`]),
//! `digest` (the manifest digest of a model folder) and `fetch` (the init
//! container's download-and-verify step). Argument parsing and wiring only;
//! the command line is [`openmodel_server::cli`].

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use openmodel_runtime::{logging, shutdown};
use openmodel_server::Server;
use openmodel_server::cli::{Cli, Command, DigestArgs, FetchArgs, LogitsArgs, Output, ServeArgs};
use openmodel_server::fetch::{self, Options, Source};
use openmodel_server::manifest::{Expectation, Manifest, Version};
use openmodel_server::model::decoder::Decoder;
use openmodel_server::model::decoder::trace::greedy_trace;
use openmodel_server::model::engine::Engine;

fn serve(args: ServeArgs) -> Result<()> {
    logging::init(args.log.log_format);
    let threads = args.threads();
    // SAFETY: no other thread exists yet; candle's CPU kernels size their
    // work from this variable, as rayon sizes its pool.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string())
    };
    let server = Server::new(args.config()?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = runtime.block_on(server.run(shutdown::signal()));
    // A model still loading on the blocking pool is not waited for.
    runtime.shutdown_background();
    Ok(served?)
}

fn digest(args: DigestArgs) -> Result<()> {
    let version = if args.v1 {
        Version::V1
    } else {
        Version::CURRENT
    };
    let m = Manifest::of_folder(&args.dir)?.in_version(version)?;
    match args.output {
        Output::Text => println!("{}", m.digest),
        Output::Json => println!("{}", serde_json::to_string_pretty(&m)?),
    }
    Ok(())
}

fn logits(args: LogitsArgs) -> Result<()> {
    let engine = Engine::parse(&args.device, &args.dtype)?;
    let decoder = Decoder::load_for(&args.model_dir, &engine)?;
    let trace = greedy_trace(&decoder, &args.prompt_ids, args.steps as usize)?;
    let mut out = serde_json::to_value(&trace)?;
    out["device"] = decoder.describe().into();
    println!("{out}");
    Ok(())
}

fn write_termination_log(path: Option<&Path>, message: &str) {
    if let Some(path) = path {
        // Kubernetes keeps the last 4096 bytes; keep it short and useful.
        let text: String = message.chars().take(4000).collect();
        if let Err(e) = std::fs::write(path, text) {
            tracing::warn!("cannot write the termination log {}: {e}", path.display());
        }
    }
}

fn fetch(args: FetchArgs) -> Result<()> {
    logging::init(args.log.log_format);
    let result = (|| -> Result<Manifest> {
        let source = Source::parse(&args.source)?;
        let expect = Expectation::parse(&args.expect_digest)?;
        let opts = Options {
            retries: args.retries,
            timeout: Duration::from_secs(args.timeout_secs),
            connect_timeout: Duration::from_secs(args.connect_timeout_secs),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            total_timeout: Duration::from_secs(args.total_timeout_secs),
            backoff: Duration::from_millis(args.backoff_ms),
            max_bytes: args.max_bytes,
            hf_endpoint: args.hf_endpoint,
        };
        Ok(fetch::fetch(&source, &args.dest, &expect, &opts)?)
    })();
    let log = args.termination_log.as_deref();
    match result {
        Ok(m) => {
            write_termination_log(log, &m.digest);
            println!(
                "verified {} ({} files) in {}",
                m.digest,
                m.files.len(),
                args.dest.display()
            );
            Ok(())
        }
        Err(e) => {
            write_termination_log(log, &format!("fetch failed: {e:#}"));
            Err(e).context(format!("fetching into {}", args.dest.display()))
        }
    }
}

/// Errors end the process with exit code 1 and the error's chain on
/// standard error (also logged, for `serve` and `fetch`).
fn main() -> Result<()> {
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(*args),
        Command::Digest(args) => digest(args),
        Command::Fetch(args) => fetch(args),
        Command::Logits(args) => logits(args),
    };
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    result
}
