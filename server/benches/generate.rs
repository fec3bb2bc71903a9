//! Text-generation benchmark of our engine on a GGUF model (default
//! SmolLM2-135M-Instruct Q4_1 from scripts/fetch-smollm2.sh; another with
//! `OPENMODEL_GEN_MODEL_DIR`): time to first token of a 128-token prompt
//! (prefill) and of 512 and 2048 tokens (the prompt repeated), decode
//! tokens/s of one stream, and aggregate generated
//! tokens/s of 1, 4 and 16 concurrent greedy streams of 128 new tokens
//! through the continuous-batching engine (prefill included, as serving
//! benchmarks count it), their prompts different from the first token so
//! that prefix caching has nothing to share; then 16 streams again with the
//! KV cache in f16 (`--kv-cache-dtype f16`), and 16 whose prompts share
//! their first 127 tokens (a system prompt; prefix caching shares 112).
//! The concurrent figures are medians of 3 rounds, each round running every
//! configuration once (on a shared machine one run alone moved by 20 %).
//!
//! `cargo bench -p openmodel-server --bench generate [-- --json]`
//! (`-- --streams=N [--kv-cache-dtype=f16]`: only the aggregate of N
//! streams, to profile); the
//! threads are the rayon pool's (`RAYON_NUM_THREADS`).
//! `scripts/bench-generate.sh` runs it beside llama.cpp on the same file
//! and threads and prints both.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openmodel_server::generate::Model;
use openmodel_server::generate::engine::{self, EngineLimits, Event, Request};
use openmodel_server::generate::params::{GenerationBounds, SamplingParams};
use openmodel_server::generate::sampler::Sampler;
use openmodel_server::kernels::isa::Isa;
use openmodel_server::metrics::Metrics;
use openmodel_server::model::decoder::config::KvDtype;
use openmodel_server::model::decoder::trace::argmax;
use openmodel_server::model::decoder::{KvCache, Logits, Step};
use tokio::sync::mpsc;

const PROMPT_TOKENS: usize = 128;
/// Lengths of the long prompts whose prefill is timed too (the
/// 128-token prompt repeated): where attention over the prompt weighs.
const LONG_PROMPTS: [usize; 2] = [512, 2048];
const NEW_TOKENS: usize = 128;

fn model_dir() -> PathBuf {
    std::env::var_os("OPENMODEL_GEN_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../.cache/models-smollm2/SmolLM2-135M-Instruct")
        })
}

/// A prompt of exactly [`PROMPT_TOKENS`] tokens.
fn prompt(model: &Model) -> Vec<u32> {
    let text = "The history of computing is a story of people who wanted to calculate faster \
                than they could by hand, from the abacus to mechanical calculators, punched \
                cards, vacuum tubes, transistors and integrated circuits. ";
    let mut ids = Vec::new();
    while ids.len() < PROMPT_TOKENS {
        ids.extend(model.encode(text).unwrap());
    }
    ids.truncate(PROMPT_TOKENS);
    ids
}

/// Rounds of the concurrent measurements.
const ROUNDS: usize = 3;

/// One configuration's aggregate tokens/s over the rounds.
#[derive(Clone, Copy)]
struct Figure {
    median: f64,
    lowest: f64,
    highest: f64,
}

impl Figure {
    fn of(mut rounds: Vec<f64>) -> Figure {
        rounds.sort_by(f64::total_cmp);
        Figure {
            median: rounds[rounds.len() / 2],
            lowest: rounds[0],
            highest: rounds[rounds.len() - 1],
        }
    }
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} ({:.1}–{:.1})",
            self.median, self.lowest, self.highest
        )
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Prefill time and decode tokens/s of one sequence, straight on the model.
fn single(model: &Model, prompt: &[u32]) -> (Duration, f64) {
    let config = model.decoder.config();
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for _ in 0..5 {
        let mut cache = KvCache::new(config, PROMPT_TOKENS + NEW_TOKENS + 1);
        let started = Instant::now();
        let mut logits = model
            .decoder
            .forward(&mut [Step {
                tokens: prompt,
                cache: &mut cache,
                logits: Logits::Last,
            }])
            .unwrap()
            .remove(0);
        prefill.push(started.elapsed());
        let started = Instant::now();
        for _ in 0..NEW_TOKENS {
            let token = argmax(&logits);
            logits = model
                .decoder
                .forward(&mut [Step {
                    tokens: &[token],
                    cache: &mut cache,
                    logits: Logits::Last,
                }])
                .unwrap()
                .remove(0);
        }
        decode.push(started.elapsed());
    }
    let decode = median(decode);
    (median(prefill), NEW_TOKENS as f64 / decode.as_secs_f64())
}

/// Prefill time of a `len`-token prompt (the prompt repeated), median of 3.
fn long_prefill(model: &Model, prompt: &[u32], len: usize) -> Duration {
    let long: Vec<u32> = prompt.iter().copied().cycle().take(len).collect();
    let times = (0..3)
        .map(|_| {
            let mut cache = KvCache::new(model.decoder.config(), len);
            let started = Instant::now();
            model
                .decoder
                .forward(&mut [Step {
                    tokens: &long,
                    cache: &mut cache,
                    logits: Logits::Last,
                }])
                .unwrap();
            started.elapsed()
        })
        .collect();
    median(times)
}

/// How the concurrent streams' prompts differ.
#[derive(Clone, Copy)]
enum Prompts {
    /// From their first token: nothing for prefix caching to share.
    Distinct,
    /// Only in their last token.
    SharedPrefix,
}

/// Aggregate generated tokens/s of `streams` concurrent greedy requests.
async fn concurrent(model: &Arc<Model>, prompt: &[u32], streams: usize, prompts: Prompts) -> f64 {
    let handle = engine::start(
        Arc::clone(model),
        EngineLimits {
            max_sequences: streams.max(1),
            max_waiting: 64,
            max_batched_tokens: 256,
            kv_cache_bytes: 4 << 30,
            prefix_caching: true,
        },
        Metrics::new(),
    )
    .unwrap();
    let params = SamplingParams {
        temperature: 0.0,
        ignore_eos: true,
        max_tokens: Some(NEW_TOKENS as u32),
        ..SamplingParams::default()
    }
    .validate(&GenerationBounds::default())
    .unwrap();
    let started = Instant::now();
    let mut receivers = Vec::new();
    for i in 0..streams {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut ids = prompt.to_vec();
        // Different prompts, the same length.
        let at = match prompts {
            Prompts::Distinct => 0,
            Prompts::SharedPrefix => PROMPT_TOKENS - 1,
        };
        ids[at] = (ids[at] + i as u32) % 1000 + 100;
        handle
            .submit(Request {
                prompt: ids,
                params: params.clone(),
                max_tokens: NEW_TOKENS as u32,
                sampler: Sampler::with_seed(&params, &model.eos, 0),
                events: tx,
                arrived: Instant::now(),
                cache_salt: None,
            })
            .unwrap();
        receivers.push(rx);
    }
    let mut generated = 0;
    for mut rx in receivers {
        loop {
            match rx.recv().await.unwrap() {
                Event::Text { .. } => {}
                Event::Finished { usage, .. } => {
                    generated += usage.completion_tokens;
                    break;
                }
                Event::Failed(e) => panic!("{e}"),
            }
        }
    }
    generated as f64 / started.elapsed().as_secs_f64()
}

/// `--streams=N`: only the aggregate of `N` streams (for profiling one
/// batch size), printed alone.
fn only_streams() -> Option<usize> {
    std::env::args()
        .find_map(|a| a.strip_prefix("--streams=").map(str::to_owned))
        .map(|n| n.parse().expect("--streams=N takes a number of streams"))
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let dir = model_dir();
    assert!(
        dir.exists(),
        "{} is missing: run scripts/fetch-smollm2.sh (or set OPENMODEL_GEN_MODEL_DIR)",
        dir.display()
    );
    let model = Arc::new(Model::load(&dir).unwrap());
    let prompt = prompt(&model);
    let threads = rayon::current_num_threads();
    // Warm-up: page the weights in.
    let mut cache = KvCache::new(model.decoder.config(), PROMPT_TOKENS);
    model
        .decoder
        .forward(&mut [Step {
            tokens: &prompt,
            cache: &mut cache,
            logits: Logits::Last,
        }])
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    if let Some(n) = only_streams() {
        let model = if std::env::args().any(|a| a == "--kv-cache-dtype=f16") {
            let mut half = Model::load(&dir).unwrap();
            half.decoder.set_kv_dtype(KvDtype::F16).unwrap();
            Arc::new(half)
        } else {
            model
        };
        let t = runtime.block_on(concurrent(&model, &prompt, n, Prompts::Distinct));
        println!("{n} streams × {NEW_TOKENS} new tokens: {t:.1} tokens/s in all");
        return;
    }
    let (prefill, decode) = single(&model, &prompt);
    let long: Vec<(usize, Duration)> = LONG_PROMPTS
        .iter()
        .map(|&len| (len, long_prefill(&model, &prompt, len)))
        .collect();
    let mut half = Model::load(&dir).unwrap();
    half.decoder.set_kv_dtype(KvDtype::F16).unwrap();
    let half = Arc::new(half);
    // Every configuration once per round, the rounds one after the other,
    // so that a slow spell of a shared machine falls on all of them alike;
    // each reported figure is the median of its rounds.
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let mut round: Vec<f64> = [1, 4, 16]
            .into_iter()
            .map(|n| runtime.block_on(concurrent(&model, &prompt, n, Prompts::Distinct)))
            .collect();
        round.push(runtime.block_on(concurrent(&half, &prompt, 16, Prompts::Distinct)));
        round.push(runtime.block_on(concurrent(&model, &prompt, 16, Prompts::SharedPrefix)));
        rounds.push(round);
    }
    let figure = |k: usize| Figure::of(rounds.iter().map(|round| round[k]).collect());
    let aggregate: Vec<(usize, Figure)> = [1, 4, 16]
        .into_iter()
        .enumerate()
        .map(|(k, n)| (n, figure(k)))
        .collect();
    let (half_16, shared_16) = (figure(3), figure(4));
    if json {
        let aggregate: serde_json::Map<String, serde_json::Value> = aggregate
            .iter()
            .map(|(n, t)| (n.to_string(), serde_json::json!(t.median)))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "engine": "openmodel",
                "isa": Isa::detect().name(),
                "threads": threads,
                "prompt_tokens": PROMPT_TOKENS,
                "prompt_ids": prompt,
                "new_tokens": NEW_TOKENS,
                "prefill_ms": prefill.as_secs_f64() * 1e3,
                "long_prefill_ms": long
                    .iter()
                    .map(|(len, t)| (len.to_string(), serde_json::json!(t.as_secs_f64() * 1e3)))
                    .collect::<serde_json::Map<_, _>>(),
                "decode_tokens_per_s": decode,
                "aggregate_tokens_per_s": aggregate,
                "aggregate_16_f16_kv_tokens_per_s": half_16.median,
                "aggregate_16_shared_prefix_tokens_per_s": shared_16.median,
                "rounds": ROUNDS,
            })
        );
        return;
    }
    println!(
        "openmodel ({}, {threads} threads): prefill of {PROMPT_TOKENS} tokens {:.1} ms, decode {decode:.1} tokens/s",
        Isa::detect().name(),
        prefill.as_secs_f64() * 1e3
    );
    for (len, t) in long {
        println!("  prefill of {len} tokens: {:.1} ms", t.as_secs_f64() * 1e3);
    }
    println!("  aggregate tokens/s, median of {ROUNDS} rounds (lowest–highest):");
    for (n, t) in aggregate {
        println!("  {n:>2} streams × {NEW_TOKENS} new tokens: {t}");
    }
    println!("  16 streams, f16 KV cache: {half_16}");
    println!("  16 streams, prompts sharing 127 tokens: {shared_16}");
}
