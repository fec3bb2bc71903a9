//! Text-generation metrics under the names vLLM gives them (`vllm:` and
//! all), so dashboards and autoscalers written for vLLM read them as they
//! are: time to first token, inter-token latency, end-to-end latency,
//! queue time, prompt and generation tokens, running and waiting requests,
//! KV-cache usage, prefix-cache queries and hits, and finished requests by
//! reason.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label of finished requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Finished {
    /// `stop`, `length` or `abort`.
    pub finished_reason: String,
}

/// The generation engine's metrics.
pub struct GenerationMetrics {
    time_to_first_token: Histogram,
    inter_token_latency: Histogram,
    e2e_latency: Histogram,
    queue_time: Histogram,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    running: Gauge,
    waiting: Gauge,
    kv_cache_usage: Gauge<f64, AtomicU64>,
    prefix_cache_queries: Counter,
    prefix_cache_hits: Counter,
    finished: Family<Finished, Counter>,
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

impl GenerationMetrics {
    /// The metrics, registered in `registry` (one without a prefix: the
    /// names carry vLLM's own).
    pub fn new(registry: &mut Registry) -> GenerationMetrics {
        let m = GenerationMetrics {
            time_to_first_token: seconds(),
            inter_token_latency: seconds(),
            e2e_latency: seconds(),
            queue_time: seconds(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            running: Gauge::default(),
            waiting: Gauge::default(),
            kv_cache_usage: Gauge::default(),
            prefix_cache_queries: Counter::default(),
            prefix_cache_hits: Counter::default(),
            finished: Family::default(),
        };
        registry.register(
            "vllm:time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token",
            m.time_to_first_token.clone(),
        );
        registry.register(
            "vllm:inter_token_latency_seconds",
            "Time between two generated tokens of one request",
            m.inter_token_latency.clone(),
        );
        registry.register(
            "vllm:e2e_request_latency_seconds",
            "Time from a request's arrival to its last token",
            m.e2e_latency.clone(),
        );
        registry.register(
            "vllm:request_queue_time_seconds",
            "Time a request waited for admission (KV budget, sequence limit)",
            m.queue_time.clone(),
        );
        registry.register(
            "vllm:prompt_tokens",
            "Prompt tokens of finished requests",
            m.prompt_tokens.clone(),
        );
        registry.register(
            "vllm:generation_tokens",
            "Generated tokens of finished requests",
            m.generation_tokens.clone(),
        );
        registry.register(
            "vllm:num_requests_running",
            "Sequences in the running batch",
            m.running.clone(),
        );
        registry.register(
            "vllm:num_requests_waiting",
            "Requests waiting for admission",
            m.waiting.clone(),
        );
        registry.register(
            "vllm:kv_cache_usage_perc",
            "Fraction of the KV-cache budget reserved (1 = full)",
            m.kv_cache_usage.clone(),
        );
        registry.register(
            "vllm:prefix_cache_queries",
            "Prompt tokens of sequences admitted with prefix caching on",
            m.prefix_cache_queries.clone(),
        );
        registry.register(
            "vllm:prefix_cache_hits",
            "Of those, tokens whose keys and values were copied from a cached prefix",
            m.prefix_cache_hits.clone(),
        );
        registry.register(
            "vllm:request_success",
            "Finished requests by finish reason",
            m.finished.clone(),
        );
        m
    }

    /// A request admitted after waiting `secs`.
    pub fn queued(&self, secs: f64) {
        self.queue_time.observe(secs);
    }

    /// Running and waiting counts and the KV budget's reserved fraction.
    pub fn occupancy(&self, running: usize, waiting: usize, kv_used: f64) {
        self.running.set(running as i64);
        self.waiting.set(waiting as i64);
        self.kv_cache_usage.set(kv_used);
    }

    /// A sequence admitted with prefix caching on: `queried` prompt
    /// tokens, of which `hit` came from a cached prefix.
    pub fn prefix_cache(&self, queried: usize, hit: usize) {
        self.prefix_cache_queries.inc_by(queried as u64);
        self.prefix_cache_hits.inc_by(hit as u64);
    }

    /// A first token, `secs` after its request arrived.
    pub fn first_token(&self, secs: f64) {
        self.time_to_first_token.observe(secs);
    }

    /// A later token, `secs` after the one before.
    pub fn inter_token(&self, secs: f64) {
        self.inter_token_latency.observe(secs);
    }

    /// A request finished (or aborted) for `reason`.
    pub fn finished(&self, reason: &str) {
        self.finished
            .get_or_create(&Finished {
                finished_reason: reason.to_owned(),
            })
            .inc();
    }

    /// Tokens of a finished request.
    pub fn tokens(&self, prompt: usize, generated: usize) {
        self.prompt_tokens.inc_by(prompt as u64);
        self.generation_tokens.inc_by(generated as u64);
    }

    /// A request's whole time.
    pub fn end_to_end(&self, secs: f64) {
        self.e2e_latency.observe(secs);
    }
}
