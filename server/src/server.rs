//! The inference server as a value: built from a [`Config`], bound to its
//! ports ([`Server::bind`], port 0 picks free ones), run until a shutdown
//! future completes ([`Server::run`]). The binary drives it with SIGTERM;
//! tests start it in-process.
//!
//! Start-up: [`Server::new`] computes the manifest digest (and refuses
//! weights other than `--expect-digest`, by the rule of its version, in
//! which the digest is then served) and reads the pod annotations
//! once; [`Server::run`] opens the gRPC port at once (live, not ready:
//! health NOT_SERVING) and the metrics port, loads and warms up the model
//! on the blocking pool, then reports ready (health SERVING). Shutdown:
//! new requests answer UNAVAILABLE, health goes NOT_SERVING, no new
//! connections are accepted, requests in flight finish, `run` returns. A
//! model that fails to load ends `run` with the error.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use openmodel_contract::{flag, serve};
use openmodel_proto::inference::FILE_DESCRIPTOR_SET;
use openmodel_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use openmodel_runtime::endpoints::{BoundEndpoints, Endpoints};
use openmodel_runtime::shutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::batching::{BatchObserver, Batcher, Limits};
use crate::generate::Model as GenerationModel;
use crate::generate::engine::{EngineLimits, start as start_engine};
use crate::generate::params::GenerationBounds;
use crate::grpc::InferenceService;
use crate::inference::Generator;
use crate::inference::{Bounds, Inference, Loaded};
use crate::limits::RequestLimits;
use crate::manifest::{Expectation, Manifest};
use crate::metrics::Metrics;
use crate::model::decoder::config::KvDtype;
use crate::model::decoder::{KvCache, Logits, Step};
use crate::model::embedding::Embedder;
use crate::model::engine::Engine;
use crate::openai;
use crate::provenance::{self, AnnotationsFile, LedgerIndex, Update};
use crate::{Error, Result};
use axum::serve::ListenerExt;

/// Largest gRPC message accepted or sent (a batch of long texts, or of embeddings).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Which task to serve (`--task`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskChoice {
    /// From the folder: text generation for a `.gguf` file or a
    /// `*ForCausalLM` config.json, embeddings otherwise.
    Auto,
    /// Sentence embeddings.
    Embeddings,
    /// Text generation.
    TextGeneration,
}

/// The text-generation settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerationConfig {
    /// The engine's limits.
    pub engine: EngineLimits,
    /// What sampling parameters may ask.
    pub bounds: GenerationBounds,
    /// Longest prompt, in tokens.
    pub max_prompt_tokens: usize,
    /// The element type of the CPU decoder's key/value caches.
    pub kv_cache_dtype: KvDtype,
}

impl Default for GenerationConfig {
    fn default() -> GenerationConfig {
        GenerationConfig {
            engine: EngineLimits {
                max_sequences: 32,
                max_waiting: 256,
                max_batched_tokens: 256,
                kv_cache_bytes: 2 << 30,
                prefix_caching: true,
            },
            bounds: GenerationBounds::default(),
            max_prompt_tokens: 8192,
            kv_cache_dtype: KvDtype::F32,
        }
    }
}

/// What to serve, and how.
#[derive(Clone, Debug)]
pub struct Config {
    /// Which task (`--task`).
    pub task: TaskChoice,
    /// The OpenAI-compatible HTTP API's address.
    pub http_listen: SocketAddr,
    /// Most bytes of one HTTP request body.
    pub max_http_body_bytes: usize,
    /// Text-generation settings.
    pub generation: GenerationConfig,
    /// The model folder.
    pub model_dir: PathBuf,
    /// The manifest digest the folder must have (`sha256:…` or a manifest file).
    pub expect_digest: Option<String>,
    /// The name clients use (default: the folder's name).
    pub model_name: Option<String>,
    /// The gRPC address.
    pub grpc_listen: SocketAddr,
    /// The `/metrics`, `/healthz` and `/readyz` address.
    pub metrics_listen: SocketAddr,
    /// Batch and queue limits.
    pub limits: Limits,
    /// What one request may hold (texts, bytes per text).
    pub request_limits: RequestLimits,
    /// Requests in flight beyond this answer RESOURCE_EXHAUSTED.
    pub max_concurrent_requests: usize,
    /// Requests tokenized at once, each on a thread of the blocking pool.
    pub tokenization_workers: usize,
    /// Compute threads (the global rayon pool, when this process has not
    /// sized it yet).
    pub threads: usize,
    /// Which engine runs the model.
    pub engine: Engine,
    /// `--ledger-index`: the `weights.verified` entry's index, when known at start.
    pub ledger_index: Option<u64>,
    /// `--pod-annotations`: the downward-API file to follow for a newer index.
    pub pod_annotations: Option<PathBuf>,
}

/// The addresses a server listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addresses {
    /// gRPC.
    pub grpc: SocketAddr,
    /// The OpenAI-compatible HTTP API.
    pub http: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: SocketAddr,
}

struct Bound {
    grpc: TcpListener,
    http: TcpListener,
    endpoints: BoundEndpoints,
    addresses: Addresses,
}

/// An inference server, checked and ready to bind and run.
pub struct Server {
    config: Config,
    core: Arc<Inference>,
    ledger_index: Arc<LedgerIndex>,
    annotations: Option<AnnotationsFile>,
    bound: Option<Bound>,
}

impl Server {
    /// Checks the configuration, computes the folder's manifest digest
    /// (blocking: a few seconds for large weights) and refuses weights
    /// other than the expected ones, and reads the pod annotations once so
    /// that the first answers carry the ledger index already.
    pub fn new(config: Config) -> Result<Server> {
        check_config(&config)?;
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads.max(1))
            .build_global()
        {
            tracing::debug!(error = %e, "the compute thread pool was sized before");
        }
        // Served (and returned with every answer) in the version the
        // expectation names, the one the ledger records.
        let mut manifest = Manifest::of_folder(&config.model_dir)?;
        if let Some(expect) = &config.expect_digest {
            manifest = Expectation::parse(expect)?
                .check(&manifest)
                .map_err(|e| Error::Refused(Box::new(e)))?;
        }
        let model_name = match &config.model_name {
            Some(n) => n.clone(),
            None => config
                .model_dir
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                .ok_or_else(|| {
                    Error::BadConfig(
                        "cannot name the model after its folder; pass --model-name".into(),
                    )
                })?,
        };
        tracing::info!(
            model = %model_name,
            digest = %manifest.digest,
            grpc = %config.grpc_listen,
            metrics = %config.metrics_listen,
            threads = config.threads,
            engine = %config.engine.describe(),
            "serving {model_name} ({}) with {} compute threads, {}",
            manifest.digest,
            config.threads,
            config.engine.describe()
        );

        let ledger_index = Arc::new(LedgerIndex::new(None));
        let annotations = match &config.pod_annotations {
            Some(path) => {
                tracing::info!(
                    "following {} for the annotation {}",
                    path.display(),
                    provenance::WEIGHTS_ENTRY_ANNOTATION
                );
                let mut file = AnnotationsFile::new(path.clone(), config.ledger_index);
                apply_annotations(&mut file, &ledger_index);
                Some(file)
            }
            None => {
                serve_index(&ledger_index, config.ledger_index);
                None
            }
        };
        let bounds = Bounds {
            max_concurrent: config.max_concurrent_requests,
            request: config.request_limits,
            tokenization_workers: config.tokenization_workers,
        };
        let core = Arc::new(Inference::new(
            model_name,
            manifest.digest,
            Arc::clone(&ledger_index),
            bounds,
            Metrics::new(),
        ));
        Ok(Server {
            config,
            core,
            ledger_index,
            annotations,
            bound: None,
        })
    }

    /// Binds the gRPC and metrics ports (once; again returns the same
    /// addresses).
    pub async fn bind(&mut self) -> Result<Addresses> {
        if let Some(bound) = &self.bound {
            return Ok(bound.addresses);
        }
        let listen = self.config.grpc_listen;
        let grpc_error = |e: std::io::Error| Error::Grpc {
            addr: listen,
            reason: format!("{e} (is another process using the port?)"),
        };
        let grpc = TcpListener::bind(listen).await.map_err(grpc_error)?;
        let grpc_addr = grpc.local_addr().map_err(grpc_error)?;
        let http_listen = self.config.http_listen;
        let http_error = |e: std::io::Error| Error::Grpc {
            addr: http_listen,
            reason: format!("HTTP API: {e} (is another process using the port?)"),
        };
        let http = TcpListener::bind(http_listen).await.map_err(http_error)?;
        let http_addr = http.local_addr().map_err(http_error)?;
        let (metrics, ready) = (Arc::clone(&self.core), Arc::clone(&self.core));
        let endpoints = Endpoints::new(
            move || metrics.metrics().render(),
            move || ready.readiness(),
        )
        .bind(self.config.metrics_listen)
        .await?;
        let addresses = Addresses {
            grpc: grpc_addr,
            http: http_addr,
            metrics: endpoints.local_addr(),
        };
        tracing::info!(grpc = %addresses.grpc, http = %addresses.http, metrics = %addresses.metrics, "listening");
        self.bound = Some(Bound {
            grpc,
            http,
            endpoints,
            addresses,
        });
        Ok(addresses)
    }

    /// Serves (binding first if [`Server::bind`] was not called) until
    /// `shutdown` completes and the requests in flight are answered, or
    /// until the model fails to load (that error is returned).
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        self.bind().await?;
        let Bound {
            grpc: listener,
            http,
            endpoints,
            addresses,
        } = self.bound.take().expect("bound above");
        let core = Arc::clone(&self.core);
        let grpc_error = |e: tonic::transport::Error| Error::Grpc {
            addr: addresses.grpc,
            reason: e.to_string(),
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        set_serving(&health, ServingStatus::NotServing).await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| Error::Grpc {
                addr: addresses.grpc,
                reason: format!("reflection: {e}"),
            })?;

        let (stop, stopping) = watch::channel(false);
        let stopped = move || shutdown::stopped(&stopping);
        let mut metrics = tokio::spawn(endpoints.serve(stopped()));
        let api = openai::router(Arc::clone(&core), self.config.max_http_body_bytes);
        let mut http_api = tokio::spawn(
            axum::serve(
                http.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY on an HTTP connection");
                    }
                }),
                api,
            )
            .with_graceful_shutdown(stopped())
            .into_future(),
        );
        if let Some(file) = self.annotations.take() {
            tokio::spawn(follow_annotations(
                file,
                Arc::clone(&self.ledger_index),
                stopped(),
            ));
        }
        let loading = load(self.config.clone(), Arc::clone(&core), health.clone());
        let service = GrpcInferenceServiceServer::new(InferenceService::new(Arc::clone(&core)))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let serving = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(service)
            // TCP_NODELAY: a small answer must not wait on Nagle's algorithm
            // for the client's delayed ACK (about 40 ms a request).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopped(),
            );
        tokio::pin!(loading, serving, shutdown);

        // Serve until asked to stop, or until something fails.
        let failure = loop {
            tokio::select! {
                () = &mut shutdown => break None,
                loaded = &mut loading, if !core.is_loaded() => match loaded {
                    Ok(()) => continue,
                    Err(e) => break Some(e),
                },
                served = &mut serving => {
                    // Ends only on an error before the stop signal.
                    return served.map_err(grpc_error);
                }
                ended = &mut http_api => {
                    return match ended {
                        Ok(result) => result.map_err(|e| Error::Thread(format!("the HTTP API failed: {e}"))),
                        Err(e) => Err(Error::Thread(format!("the HTTP API crashed: {e}"))),
                    };
                }
                ended = &mut metrics => {
                    return match ended {
                        Ok(result) => result.map_err(Error::from),
                        Err(e) => Err(Error::Thread(format!("the metrics endpoint crashed: {e}"))),
                    };
                }
            }
        };
        match &failure {
            None => tracing::info!("shutting down: finishing requests in flight"),
            Some(e) => tracing::error!(error = %e, "loading the model failed; stopping"),
        }
        core.begin_shutdown();
        set_serving(&health, ServingStatus::NotServing).await;
        let _ = stop.send(true);
        let served = serving.await.map_err(grpc_error);
        if let Err(e) = http_api.await {
            tracing::warn!(error = %e, "the HTTP API crashed while stopping");
        }
        let metrics_ended = metrics
            .await
            .map_err(|e| Error::Thread(format!("the metrics endpoint crashed: {e}")))?;
        tracing::info!("stopped");
        match failure {
            Some(e) => Err(e),
            None => served.and(metrics_ended.map_err(Error::from)),
        }
    }
}

/// Refuses settings that cannot work: a zero limit, or a queue that cannot
/// hold one whole request.
fn check_config(config: &Config) -> Result<()> {
    let limits = config.limits;
    if limits.max_batch_tokens == 0
        || limits.max_batch_requests == 0
        || config.max_concurrent_requests == 0
        || config.tokenization_workers == 0
    {
        return Err(Error::BadConfig(format!(
            "{}, {}, {} and --tokenization-workers must be at least 1",
            flag(serve::MAX_BATCH_TOKENS),
            flag(serve::MAX_BATCH_REQUESTS),
            flag(serve::MAX_CONCURRENT_REQUESTS)
        )));
    }
    config.request_limits.validate()?;
    let engine = config.generation.engine;
    if engine.max_sequences == 0
        || engine.max_waiting == 0
        || engine.max_batched_tokens == 0
        || engine.kv_cache_bytes == 0
        || config.generation.max_prompt_tokens == 0
        || config.max_http_body_bytes == 0
    {
        return Err(Error::BadConfig(
            "--max-num-seqs, --max-waiting-requests, --max-num-batched-tokens, --kv-cache-bytes, --max-prompt-tokens and --max-http-body-bytes must be at least 1".into(),
        ));
    }
    config.generation.bounds.validate()?;
    if limits.max_queued < config.request_limits.max_texts {
        return Err(Error::BadConfig(format!(
            "{} ({}) is smaller than {} ({}): a full request could never be queued; raise the first or lower the second",
            flag(serve::MAX_QUEUED_TEXTS),
            limits.max_queued,
            flag(serve::MAX_CLIENT_BATCH_SIZE),
            config.request_limits.max_texts
        )));
    }
    Ok(())
}

/// Sets the status of the whole server (`""`) and of the inference service.
async fn set_serving(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    match status {
        ServingStatus::Serving => {
            health
                .set_serving::<GrpcInferenceServiceServer<InferenceService>>()
                .await
        }
        _ => {
            health
                .set_not_serving::<GrpcInferenceServiceServer<InferenceService>>()
                .await
        }
    }
}

/// Loads and warms up the model on the blocking pool, starts its batcher,
/// then serves it and reports ready.
async fn load(config: Config, core: Arc<Inference>, health: HealthReporter) -> Result<()> {
    let observer: Arc<dyn BatchObserver> = core.metrics().clone();
    let metrics = Arc::clone(core.metrics());
    let (dir, engine, limits) = (config.model_dir, config.engine, config.limits);
    let (task, generation) = (config.task, config.generation);
    let loaded = tokio::task::spawn_blocking(move || -> Result<Loaded> {
        if resolve_task(task, &dir)? == TaskChoice::TextGeneration {
            return load_generator(&dir, &engine, generation, metrics);
        }
        let embedder = Arc::new(Embedder::load(&dir, &engine)?);
        embedder.embed(&["warm-up"], true, None)?;
        let batcher = Batcher::start(Arc::clone(&embedder), limits, Some(observer))?;
        Ok(Loaded::new(embedder, batcher))
    })
    .await
    .map_err(|e| Error::Thread(format!("the model loader crashed: {e}")))??;
    core.set_loaded(loaded);
    set_serving(&health, ServingStatus::Serving).await;
    tracing::info!("model loaded and warmed up: ready");
    Ok(())
}

/// The task `choice` means for the folder `dir`.
fn resolve_task(choice: TaskChoice, dir: &std::path::Path) -> Result<TaskChoice> {
    if choice != TaskChoice::Auto {
        return Ok(choice);
    }
    if dir.is_file() || crate::model::decoder::single_gguf(dir)?.is_some() {
        return Ok(TaskChoice::TextGeneration);
    }
    let causal = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|config| {
            config["architectures"].as_array().map(|a| {
                a.iter()
                    .any(|n| n.as_str().is_some_and(|n| n.ends_with("ForCausalLM")))
            })
        })
        .unwrap_or(false);
    Ok(if causal {
        TaskChoice::TextGeneration
    } else {
        TaskChoice::Embeddings
    })
}

/// Loads a generative model, warms it up (one short pass) and starts its
/// engine.
fn load_generator(
    dir: &std::path::Path,
    engine: &Engine,
    settings: GenerationConfig,
    metrics: Arc<Metrics>,
) -> Result<Loaded> {
    let mut model = GenerationModel::load_for(dir, engine)?;
    model.decoder.set_kv_dtype(settings.kv_cache_dtype)?;
    let model = Arc::new(model);
    let config = model.decoder.config().clone();
    let mut cache = KvCache::new(&config, 2);
    model.decoder.forward(&mut [Step {
        tokens: &[0],
        cache: &mut cache,
        logits: Logits::Last,
    }])?;
    tracing::info!(
        arch = config.arch.name(),
        layers = config.layers,
        vocab = config.vocab,
        context = model.decoder.max_positions(),
        runs_on = %model.decoder.describe(),
        "text-generation model loaded"
    );
    let handle = start_engine(Arc::clone(&model), settings.engine, metrics)?;
    Ok(Loaded::Generation(Generator {
        model,
        engine: handle,
        bounds: settings.bounds,
        max_prompt_tokens: settings.max_prompt_tokens,
    }))
}

/// Serves `index` from now on, saying so when it changes.
fn serve_index(cell: &LedgerIndex, index: Option<u64>) {
    if cell.get() != index {
        match index {
            Some(i) => tracing::info!("ledger index of the weights.verified entry: {i}"),
            None => tracing::info!("ledger index of the weights.verified entry: unknown"),
        }
    }
    cell.set(index);
}

/// Rereads the annotations file; serves the index it gives, reporting a
/// problem once per distinct content.
fn apply_annotations(file: &mut AnnotationsFile, cell: &LedgerIndex) {
    if let Some(Update { index, problem }) = file.poll() {
        if let Some(problem) = problem {
            tracing::warn!("ignoring the pod annotations: {problem}");
        }
        serve_index(cell, index);
    }
}

/// Rereads the annotations file every [`provenance::POLL_INTERVAL`] (on the
/// blocking pool) until `stopped` completes.
async fn follow_annotations(
    mut file: AnnotationsFile,
    cell: Arc<LedgerIndex>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(provenance::POLL_INTERVAL) => {}
        }
        let cell = Arc::clone(&cell);
        match tokio::task::spawn_blocking(move || {
            apply_annotations(&mut file, &cell);
            file
        })
        .await
        {
            Ok(f) => file = f,
            Err(e) => {
                tracing::error!(error = %e, "following the pod annotations crashed; the ledger index stays as it is");
                return;
            }
        }
    }
}
