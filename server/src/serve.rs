//! `openmodel-server serve`: wiring of the gRPC server, health, reflection,
//! model loading and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, bail};
use openmodel_proto::inference::FILE_DESCRIPTOR_SET;
use openmodel_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use openmodel_server::batching::{Batcher, Limits};
use openmodel_server::cpu;
use openmodel_server::grpc::{InferenceService, Loaded, State};
use openmodel_server::manifest::{Expectation, Manifest};
use openmodel_server::metrics::Metrics;
use openmodel_server::model::embedder::Embedder;
use openmodel_server::model::encoder::Engine;
use openmodel_server::provenance::{self, AnnotationsFile, LedgerIndex, Update};
use tokio::sync::Semaphore;
use tonic_health::ServingStatus;

/// What `serve` was asked to do.
pub struct Config {
    pub model_dir: PathBuf,
    pub expect_digest: Option<String>,
    pub model_name: Option<String>,
    pub grpc_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub limits: Limits,
    pub max_concurrent_requests: usize,
    pub threads: Option<usize>,
    pub engine: Engine,
    /// `--ledger-index`: the `weights.verified` entry's index, when known at start.
    pub ledger_index: Option<u64>,
    /// `--pod-annotations`: the downward-API file to follow for a newer index.
    pub pod_annotations: Option<PathBuf>,
}

/// Largest gRPC message accepted or sent (a batch of long texts, or of embeddings).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

pub fn run(config: Config) -> Result<()> {
    if config.limits.max_batch_tokens == 0
        || config.limits.max_batch_requests == 0
        || config.max_concurrent_requests == 0
    {
        bail!(
            "--max-batch-tokens, --max-batch-requests and --max-concurrent-requests must be at least 1"
        );
    }
    let threads = config.threads.unwrap_or_else(cpu::default_threads).max(1);
    // SAFETY: no other thread exists yet; candle's CPU kernels size their
    // rayon pool from this variable.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };

    let manifest = Manifest::of_folder(&config.model_dir)?;
    if let Some(expect) = &config.expect_digest {
        Expectation::parse(expect)?
            .check(&manifest)
            .context("refusing to serve these weights")?;
    }
    let model_name = match config.model_name {
        Some(n) => n,
        None => config
            .model_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .context("cannot name the model after its folder; pass --model-name")?,
    };
    eprintln!(
        "serving {model_name} ({}) on {} (metrics on {}) with {threads} compute threads, {}",
        manifest.digest,
        config.grpc_listen,
        config.metrics_listen,
        config.engine.describe()
    );

    let ledger_index = Arc::new(LedgerIndex::new(None));
    match config.pod_annotations {
        Some(path) => follow_annotations(
            AnnotationsFile::new(path, config.ledger_index),
            Arc::clone(&ledger_index),
        )?,
        None => serve_index(&ledger_index, config.ledger_index),
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let state = Arc::new(State {
            model_name,
            digest: manifest.digest.clone(),
            ledger_index,
            loaded: OnceLock::new(),
            permits: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            max_concurrent: config.max_concurrent_requests,
            accepting: AtomicBool::new(true),
            metrics: Metrics::new(),
        });
        let metrics_listener =
            openmodel_server::metrics::serve(config.metrics_listen, Arc::clone(&state.metrics));
        tokio::spawn(async move {
            if let Err(e) = metrics_listener.await {
                eprintln!("error: metrics endpoint on {}: {e}", config.metrics_listen);
                std::process::exit(1);
            }
        });
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_not_serving::<GrpcInferenceServiceServer<InferenceService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;

        let loader_state = Arc::clone(&state);
        let loader_health = health.clone();
        let limits = config.limits;
        let observer: Arc<dyn openmodel_server::batching::BatchObserver> = state.metrics.clone();
        let model_dir = config.model_dir.clone();
        let engine = config.engine.clone();
        tokio::spawn(async move {
            let loaded =
                tokio::task::spawn_blocking(move || -> openmodel_server::Result<Loaded> {
                    let embedder = Arc::new(Embedder::load(&model_dir, &engine)?);
                    embedder.embed(&["warm-up"], true, None)?;
                    let batcher = Batcher::start(Arc::clone(&embedder), limits, Some(observer));
                    Ok(Loaded { embedder, batcher })
                })
                .await;
            match loaded {
                Ok(Ok(loaded)) => {
                    let _ = loader_state.loaded.set(loaded);
                    loader_health
                        .set_service_status("", ServingStatus::Serving)
                        .await;
                    loader_health
                        .set_serving::<GrpcInferenceServiceServer<InferenceService>>()
                        .await;
                    eprintln!("model loaded and warmed up: ready");
                }
                Ok(Err(e)) => {
                    eprintln!("error: loading the model failed: {e}");
                    std::process::exit(1);
                }
                Err(e) => {
                    eprintln!("error: the model loader crashed: {e}");
                    std::process::exit(1);
                }
            }
        });

        let service = GrpcInferenceServiceServer::new(InferenceService::new(Arc::clone(&state)))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let shutdown_state = Arc::clone(&state);
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(service)
            .serve_with_shutdown(config.grpc_listen, async move {
                shutdown_signal().await;
                eprintln!("shutting down: finishing requests in flight");
                shutdown_state.accepting.store(false, Ordering::Relaxed);
                health
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
            })
            .await
            .with_context(|| format!("serving gRPC on {}", config.grpc_listen))?;
        eprintln!("stopped");
        Ok(())
    })
}

/// Serves `index` from now on, saying so when it changes.
fn serve_index(cell: &LedgerIndex, index: Option<u64>) {
    if cell.get() != index {
        match index {
            Some(i) => eprintln!("ledger index of the weights.verified entry: {i}"),
            None => eprintln!("ledger index of the weights.verified entry: unknown"),
        }
    }
    cell.set(index);
}

/// Reads the annotations file once now (so the first responses carry what it
/// says), then every [`provenance::POLL_INTERVAL`] on a thread of its own,
/// serving the index it gives and reporting each distinct problem once.
fn follow_annotations(mut file: AnnotationsFile, cell: Arc<LedgerIndex>) -> Result<()> {
    eprintln!(
        "following {} for the annotation {}",
        file.path().display(),
        provenance::WEIGHTS_ENTRY_ANNOTATION
    );
    let apply = move |file: &mut AnnotationsFile| {
        if let Some(Update { index, problem }) = file.poll() {
            if let Some(problem) = problem {
                eprintln!("warning: ignoring the pod annotations: {problem}");
            }
            serve_index(&cell, index);
        }
    };
    apply(&mut file);
    std::thread::Builder::new()
        .name("pod-annotations".into())
        .spawn(move || {
            loop {
                std::thread::sleep(provenance::POLL_INTERVAL);
                apply(&mut file);
            }
        })
        .context("starting the thread that follows --pod-annotations")?;
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
