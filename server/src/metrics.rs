//! Prometheus metrics, served as text on their own HTTP port (`/metrics`,
//! with `/healthz` and `/readyz`, by `openmodel_runtime::endpoints`).
//!
//! `openmodel_requests_total{outcome}` counts inference requests by outcome
//! (`success` or the gRPC status: `invalid_argument`, `not_found`,
//! `resource_exhausted`, `unavailable`, `internal`); histograms time whole
//! requests, tokenization, queueing and inference, and size batches in
//! inputs and tokens; a gauge shows the queue. Text generation adds
//! vLLM's metrics under vLLM's names ([`GenerationMetrics`]).

mod generation;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::batching::BatchObserver;
pub use generation::GenerationMetrics;

/// Label of `openmodel_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `success` or a gRPC status in snake case.
    pub outcome: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    vllm: Registry,
    generation: GenerationMetrics,
    requests: Family<Outcome, Counter>,
    request_duration: Histogram,
    tokenization_duration: Histogram,
    queue_duration: Histogram,
    inference_duration: Histogram,
    batch_inputs: Histogram,
    batch_tokens: Histogram,
    queue_size: Gauge,
    dropped: Counter,
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("openmodel");
        let mut vllm = Registry::default();
        let generation = GenerationMetrics::new(&mut vllm);
        let m = Metrics {
            vllm: Registry::default(),
            generation,
            requests: Family::default(),
            request_duration: seconds(),
            tokenization_duration: seconds(),
            queue_duration: seconds(),
            inference_duration: seconds(),
            batch_inputs: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            batch_tokens: Histogram::new(exponential_buckets(16.0, 2.0, 14)),
            queue_size: Gauge::default(),
            dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Inference requests by outcome",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Whole ModelInfer requests",
            m.request_duration.clone(),
        );
        registry.register(
            "tokenization_duration_seconds",
            "Tokenizing one request",
            m.tokenization_duration.clone(),
        );
        registry.register(
            "queue_duration_seconds",
            "Time an input waited for a batch",
            m.queue_duration.clone(),
        );
        registry.register(
            "inference_duration_seconds",
            "Forward pass of one batch",
            m.inference_duration.clone(),
        );
        registry.register("batch_inputs", "Inputs per batch", m.batch_inputs.clone());
        registry.register(
            "batch_tokens",
            "Tokens per batch, padding included",
            m.batch_tokens.clone(),
        );
        registry.register(
            "queue_size",
            "Inputs waiting for a batch",
            m.queue_size.clone(),
        );
        registry.register(
            "dropped_inputs",
            "Inputs dropped because their caller went away",
            m.dropped.clone(),
        );
        Arc::new(Metrics {
            registry,
            vllm,
            ..m
        })
    }

    /// Counts one request and its duration.
    pub fn request(&self, outcome: &str, took: Duration) {
        self.requests
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.request_duration.observe(took.as_secs_f64());
    }

    /// The text-generation metrics (vLLM's names).
    pub fn generation(&self) -> &GenerationMetrics {
        &self.generation
    }

    /// Records the tokenization time of one request.
    pub fn tokenized(&self, took: Duration) {
        self.tokenization_duration.observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        // Both registries end in `# EOF`; keep the last one only.
        if let Some(body) = out.strip_suffix("# EOF\n") {
            out.truncate(body.len());
        }
        encode(&mut out, &self.vllm).expect("writing to a String");
        out
    }
}

impl BatchObserver for Metrics {
    fn batch_done(
        &self,
        inputs: usize,
        tokens: usize,
        inference: Duration,
        queue_waits: &[Duration],
    ) {
        self.batch_inputs.observe(inputs as f64);
        self.batch_tokens.observe(tokens as f64);
        self.inference_duration.observe(inference.as_secs_f64());
        for w in queue_waits {
            self.queue_duration.observe(w.as_secs_f64());
        }
    }

    fn dropped(&self, jobs: usize) {
        self.dropped.inc_by(jobs as u64);
    }

    fn queue_size(&self, waiting: usize) {
        self.queue_size.set(waiting as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.request("success", Duration::from_millis(3));
        m.request("invalid_argument", Duration::from_millis(1));
        m.batch_done(
            4,
            128,
            Duration::from_millis(2),
            &[Duration::from_millis(1)],
        );
        m.queue_size(7);
        let text = m.render();
        for needle in [
            "openmodel_requests_total{outcome=\"success\"} 1",
            "openmodel_requests_total{outcome=\"invalid_argument\"} 1",
            "openmodel_batch_inputs_count 1",
            "openmodel_queue_size 7",
            "openmodel_inference_duration_seconds_bucket",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
