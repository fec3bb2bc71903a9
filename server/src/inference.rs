//! The protocol-neutral inference core: what a request goes through between
//! a protocol's decoding and its encoding.
//!
//! 1. [`Inference::admit`]: a permit under `--max-concurrent-requests`
//!    ([`Error::Overloaded`]), refused once shutdown began
//!    ([`Error::Unavailable`]);
//! 2. [`Inference::check_model`]: the name and version asked for (Triton's
//!    rules: [`Error::ModelNotFound`] or [`Error::BadInput`]);
//! 3. [`Inference::embed`]: check the texts against the
//!    [`RequestLimits`] (count, then bytes each: [`Error::BadInput`]),
//!    reserve room for all of them in the batch queue
//!    ([`Error::QueueFull`]), tokenize them on tokio's blocking pool under
//!    a semaphore of `--tokenization-workers` permits (never on the async
//!    workers, and never more at once than that, so the health service and
//!    the other requests stay responsive), submit one job per text to the
//!    batcher, await them all, then post-process once: normalize each
//!    vector if asked and lay them end to end.
//!
//! It also holds what every answer carries: the model's name, the manifest
//! digest and the ledger index of the served weights. The protocols
//! (today [`crate::grpc`]) only map their wire format to and from these
//! calls and [`crate::Error`] to their status codes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod generation;

pub use generation::{Generator, Prompt, Stream};

use crate::batching::Batcher;
use crate::limits::RequestLimits;
use crate::metrics::Metrics;
use crate::model::embedding::Embedder;
use crate::model::pooling::normalize;
use crate::provenance::LedgerIndex;
use crate::{Error, Result};

/// The model once loaded and warmed up, with what runs it.
pub enum Loaded {
    /// An embedding model and the batcher running it.
    Embedding {
        /// The model.
        embedder: Arc<Embedder>,
        /// Its batcher.
        batcher: Batcher<Vec<f32>>,
    },
    /// A generative model and its engine.
    Generation(Generator),
}

impl Loaded {
    /// A loaded embedder and the batcher running it.
    pub fn new(embedder: Arc<Embedder>, batcher: Batcher<Vec<f32>>) -> Loaded {
        Loaded::Embedding { embedder, batcher }
    }
}

/// The kinds of model a server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServedTask {
    /// Sentence embeddings.
    Embedding,
    /// Text generation.
    Generation,
}

/// Options of an embedding request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbedOptions {
    /// Cut texts longer than the model's maximum instead of refusing them.
    pub truncate: bool,
    /// L2-normalize the vectors; `None`: as the folder's Normalize module says.
    pub normalize: Option<bool>,
}

/// The embeddings of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// Width of one vector.
    pub dimension: usize,
    /// The vectors, one after another (`texts × dimension` values).
    pub values: Vec<f32>,
    /// Tokens of all the texts, special tokens included.
    pub tokens: usize,
}

/// How much the core takes on at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Requests in flight (`--max-concurrent-requests`).
    pub max_concurrent: usize,
    /// What one request may hold.
    pub request: RequestLimits,
    /// Requests tokenized at once (`--tokenization-workers`).
    pub tokenization_workers: usize,
}

/// The inference core shared by every protocol and the server's lifecycle.
pub struct Inference {
    model_name: String,
    digest: String,
    ledger_index: Arc<LedgerIndex>,
    loaded: OnceLock<Loaded>,
    permits: Arc<Semaphore>,
    tokenizers: Arc<Semaphore>,
    bounds: Bounds,
    accepting: AtomicBool,
    metrics: Arc<Metrics>,
}

/// A request's place under `--max-concurrent-requests`, held until it is
/// answered.
pub struct Permit {
    _held: OwnedSemaphorePermit,
}

impl Inference {
    /// A core serving `model_name` (weights with manifest `digest`), with
    /// no model loaded yet.
    pub fn new(
        model_name: String,
        digest: String,
        ledger_index: Arc<LedgerIndex>,
        bounds: Bounds,
        metrics: Arc<Metrics>,
    ) -> Inference {
        Inference {
            model_name,
            digest,
            ledger_index,
            loaded: OnceLock::new(),
            permits: Arc::new(Semaphore::new(bounds.max_concurrent)),
            tokenizers: Arc::new(Semaphore::new(bounds.tokenization_workers.max(1))),
            bounds,
            accepting: AtomicBool::new(true),
            metrics,
        }
    }

    /// What one request may hold; protocols check it while decoding.
    pub fn request_limits(&self) -> &RequestLimits {
        &self.bounds.request
    }

    /// The name clients use.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The manifest digest of the served weights.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The ledger index of their `weights.verified` entry, once known.
    pub fn ledger_index(&self) -> Option<u64> {
        self.ledger_index.get()
    }

    /// The request and batch metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serves `model` from now on (the first call wins).
    pub fn set_loaded(&self, model: Loaded) {
        let _ = self.loaded.set(model);
    }

    /// Whether the model is loaded and warmed up.
    pub fn is_loaded(&self) -> bool {
        self.loaded.get().is_some()
    }

    /// `Ok` when loaded and not shutting down, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.accepting.load(Ordering::Relaxed) {
            Err("shutting down".into())
        } else if !self.is_loaded() {
            Err("the model is still loading".into())
        } else {
            Ok(())
        }
    }

    /// From now on new requests answer [`Error::Unavailable`]; those
    /// admitted before finish.
    pub fn begin_shutdown(&self) {
        self.accepting.store(false, Ordering::Relaxed);
    }

    /// Admits one request.
    pub fn admit(&self) -> Result<Permit> {
        let permit =
            Arc::clone(&self.permits)
                .try_acquire_owned()
                .map_err(|_| Error::Overloaded {
                    limit: self.bounds.max_concurrent,
                })?;
        if !self.accepting.load(Ordering::Relaxed) {
            return Err(Error::Unavailable(
                "the server is shutting down; retry on another replica".into(),
            ));
        }
        Ok(Permit { _held: permit })
    }

    /// Checks the model name and version a request asks for: the served
    /// name, and version empty or `1`. Another name, or another whole
    /// number, is [`Error::ModelNotFound`]; a version that is not a whole
    /// number ≥ 0 is [`Error::BadInput`] (as Triton).
    pub fn check_model(&self, name: &str, version: &str) -> Result<()> {
        if name != self.model_name {
            return Err(Error::ModelNotFound(format!(
                "unknown model {name:?}; this server serves {:?}",
                self.model_name
            )));
        }
        if version.is_empty() {
            return Ok(());
        }
        match version.parse::<i64>() {
            Ok(1) => Ok(()),
            Ok(v) if v >= 0 => Err(Error::ModelNotFound(format!(
                "model {name:?} has only version \"1\", not {version:?}; ask for \"1\" or leave the version empty"
            ))),
            _ => Err(Error::BadInput(format!(
                "model version {version:?} is not a whole number ≥ 0; ask for \"1\" or leave the version empty"
            ))),
        }
    }

    /// [`Error::Unavailable`] until the model is loaded.
    pub fn check_loaded(&self) -> Result<()> {
        self.loaded().map(drop)
    }

    fn loaded(&self) -> Result<&Loaded> {
        self.loaded.get().ok_or_else(|| {
            Error::Unavailable("the model is still loading; retry when ServerReady is true".into())
        })
    }

    /// The embedding model, or why this server has none.
    fn embedding(&self) -> Result<(&Arc<Embedder>, &Batcher<Vec<f32>>)> {
        match self.loaded()? {
            Loaded::Embedding { embedder, batcher } => Ok((embedder, batcher)),
            Loaded::Generation(_) => Err(Error::BadInput(format!(
                "model {:?} generates text; send text_input (Triton's generate tensors) or use /v1/completions",
                self.model_name
            ))),
        }
    }

    /// Which task the loaded model does, once loaded.
    pub fn task(&self) -> Result<ServedTask> {
        Ok(match self.loaded()? {
            Loaded::Embedding { .. } => ServedTask::Embedding,
            Loaded::Generation(_) => ServedTask::Generation,
        })
    }

    /// Width of the embeddings, once the model is loaded.
    pub fn dimension(&self) -> Result<usize> {
        Ok(self.embedding()?.0.spec().dimension())
    }

    /// Embeds `texts`: checked against the request limits, given room in
    /// the batch queue, tokenized on the bounded blocking pool, batched with
    /// other requests' texts, normalized once at the end if asked.
    pub async fn embed(&self, texts: Vec<String>, options: EmbedOptions) -> Result<Embeddings> {
        let (embedder, batcher) = self.embedding()?;
        self.bounds.request.check_texts(&texts)?;
        let normalize_output = options.normalize.unwrap_or(embedder.spec().normalize);
        // Room for every text before any work on them: a full queue refuses
        // the request before it costs a tokenization.
        let mut reservation = batcher.reserve(texts.len())?;
        let tokenized = self
            .tokenize(Arc::clone(embedder), texts, options.truncate)
            .await?;
        let tokens = tokenized.iter().map(Vec::len).sum();
        let mut replies = Vec::with_capacity(tokenized.len());
        for ids in tokenized {
            replies.push(reservation.submit(ids)?);
        }
        drop(reservation);
        let dimension = embedder.spec().dimension();
        let mut values = Vec::with_capacity(replies.len() * dimension);
        for answer in replies {
            let mut vector = answer
                .await
                .map_err(|_| Error::Thread("the model thread stopped".into()))??;
            if normalize_output {
                normalize(&mut vector);
            }
            values.extend(vector);
        }
        Ok(Embeddings {
            dimension,
            values,
            tokens,
        })
    }

    /// Tokenizes `texts` on tokio's blocking pool once one of the
    /// `--tokenization-workers` permits is free. The permit goes with the
    /// work: a request whose client leaves still holds it until its texts
    /// are tokenized, so no more than that many tokenize at once.
    async fn tokenize(
        &self,
        embedder: Arc<Embedder>,
        texts: Vec<String>,
        truncate: bool,
    ) -> Result<Vec<Vec<u32>>> {
        let permit = Arc::clone(&self.tokenizers)
            .acquire_owned()
            .await
            .map_err(|_| Error::Thread("the tokenization pool is closed".into()))?;
        let tokenizing = Instant::now();
        let tokenized = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            texts
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    embedder
                        .tokenize(text, truncate)
                        .map(|tokens| tokens.ids)
                        .map_err(|e| Error::BadInput(format!("text[{i}]: {e}")))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::Thread(format!("tokenizing crashed: {e}")))??;
        self.metrics.tokenized(tokenizing.elapsed());
        Ok(tokenized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> Inference {
        Inference::new(
            "minilm".into(),
            "sha256:00".into(),
            Arc::new(LedgerIndex::new(None)),
            Bounds {
                max_concurrent: 1,
                request: RequestLimits::default(),
                tokenization_workers: 1,
            },
            Metrics::new(),
        )
    }

    #[test]
    fn models_and_versions_follow_triton() {
        let core = core();
        assert!(core.check_model("minilm", "").is_ok());
        assert!(core.check_model("minilm", "1").is_ok());
        assert!(matches!(
            core.check_model("nope", ""),
            Err(Error::ModelNotFound(_))
        ));
        assert!(matches!(
            core.check_model("minilm", "2"),
            Err(Error::ModelNotFound(_))
        ));
        assert!(matches!(
            core.check_model("minilm", "latest"),
            Err(Error::BadInput(_))
        ));
    }

    #[tokio::test]
    async fn loading_overload_and_shutdown_are_told_apart() {
        let core = core();
        assert_eq!(core.readiness(), Err("the model is still loading".into()));
        assert!(matches!(core.dimension(), Err(Error::Unavailable(_))));
        let held = core.admit().unwrap();
        assert!(matches!(core.admit(), Err(Error::Overloaded { limit: 1 })));
        let embed = core.embed(vec!["hi".into()], EmbedOptions::default()).await;
        assert!(matches!(embed, Err(Error::Unavailable(_))));
        drop(held);
        core.begin_shutdown();
        assert_eq!(core.readiness(), Err("shutting down".into()));
        let refused = core.admit().err().unwrap();
        assert!(
            matches!(&refused, Error::Unavailable(m) if m.contains("shutting down")),
            "{refused}"
        );
    }
}
