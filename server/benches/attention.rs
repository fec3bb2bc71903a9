//! `cargo bench -p openmodel-server --bench attention`
//!
//! The decode step's attention (`kernels::decoder::causal_attention`) at
//! SmolLM2-135M's shape (9 query heads of 64 over 3 key/value heads, 30
//! layers): one new row per sequence over its cache of 192 positions, for
//! 16 sequences (480 caches of a layer each, 141 MB in f32: far from every
//! CPU cache, as a 16-stream decode step finds them) and for 1 sequence
//! (30 caches, 8.8 MB: in the L3 cache). One thread, once per instruction
//! set this CPU has (`OPENMODEL_ISA=avx2|generic` caps it), f32 and f16
//! caches. Beside it the peer that bounds it: a plain read of the same
//! bytes (their sum, eight lanes at a time in four chains), so that the
//! printout says how close to memory speed attention runs. Then a prompt's
//! attention: 128 rows, each over itself and the rows before it, all 30
//! layers (f32, in cache: arithmetic, not memory), as milliseconds and
//! multiply-adds per second.

use std::time::{Duration, Instant};

use half::f16;
use openmodel_server::kernels::decoder::{Heads, KvSlices, append_key, causal_attention};
use openmodel_server::kernels::isa::Isa;

const SHAPE: Heads = Heads {
    heads: 9,
    kv_heads: 3,
    head_dim: 64,
};
const LAYERS: usize = 30;
const POSITIONS: usize = 192;

/// One layer's cache of one sequence, in f32 and f16.
struct LayerCache {
    keys: Vec<f32>,
    values: Vec<f32>,
    keys16: Vec<f16>,
    values16: Vec<f16>,
}

impl LayerCache {
    fn new(seed: usize) -> LayerCache {
        let width = SHAPE.kv_heads * SHAPE.head_dim;
        let mut keys = Vec::new();
        for p in 0..POSITIONS {
            let key: Vec<f32> = (0..width)
                .map(|i| ((i * 7 + p * 13 + seed) as f32 * 0.01).sin())
                .collect();
            append_key(&mut keys, p, &key);
        }
        let values: Vec<f32> = (0..POSITIONS * width)
            .map(|i| ((i + seed * 31) as f32 * 0.02).cos())
            .collect();
        let half = |x: &[f32]| x.iter().map(|v| f16::from_f32(*v)).collect();
        LayerCache {
            keys16: half(&keys),
            values16: half(&values),
            keys,
            values,
        }
    }

    fn slices(&self, f16: bool) -> KvSlices<'_> {
        if f16 {
            KvSlices::F16(&self.keys16, &self.values16)
        } else {
            KvSlices::F32(&self.keys, &self.values)
        }
    }

    fn bytes(&self, f16: bool) -> usize {
        let elements = self.keys.len() + self.values.len();
        elements * if f16 { 2 } else { 4 }
    }
}

/// The median of `runs` timings of `f` (after one warm-up).
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples[runs / 2]
}

/// The median time `isa`'s attention takes for `queries` (rows at
/// positions `first`, `first + 1`, …) over each of `caches` in turn.
fn attended(isa: Isa, queries: &[f32], first: usize, caches: &[LayerCache], f16: bool) -> Duration {
    let mut out = vec![0f32; queries.len()];
    let mut scores = Vec::new();
    median(9, || {
        for cache in caches {
            causal_attention(
                isa,
                queries,
                first,
                cache.slices(f16),
                SHAPE,
                0..SHAPE.heads,
                &mut out,
                &mut scores,
            );
        }
        std::hint::black_box(&out);
    })
}

/// The sum of `bytes` read as u64 words in four chains: a plain read.
fn plain_read(bytes: &[u8]) -> u64 {
    let mut sums = [0u64; 4];
    for chunk in bytes.chunks_exact(32) {
        for (s, word) in sums.iter_mut().zip(chunk.chunks_exact(8)) {
            *s = s.wrapping_add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
    }
    sums.iter().fold(0, |a, s| a.wrapping_add(*s))
}

fn main() {
    println!(
        "decode attention, one thread, {} query heads of {} over {} key/value heads, \
         {POSITIONS} positions, {LAYERS} layers",
        SHAPE.heads, SHAPE.head_dim, SHAPE.kv_heads
    );
    println!(
        "{:<8} {:>4} {:>5} {:>9} {:>10} {:>7} {:>14} {:>12}",
        "isa", "seqs", "cache", "MB", "ours ms", "GB/s", "plain read ms", "plain GB/s"
    );
    let q_width = SHAPE.heads * SHAPE.head_dim;
    let query: Vec<f32> = (0..q_width).map(|i| (i as f32 * 0.1).sin()).collect();
    for sequences in [16, 1] {
        let caches: Vec<LayerCache> = (0..sequences * LAYERS).map(LayerCache::new).collect();
        for f16 in [false, true] {
            let bytes: usize = caches.iter().map(|c| c.bytes(f16)).sum();
            // The same number of bytes, laid out as one buffer per cache.
            let raw: Vec<Vec<u8>> = caches.iter().map(|c| vec![1u8; c.bytes(f16)]).collect();
            let read = median(9, || {
                let sum: u64 = raw.iter().map(|r| plain_read(r)).sum();
                std::hint::black_box(sum);
            });
            for isa in Isa::all_detected() {
                let ours = attended(isa, &query, POSITIONS - 1, &caches, f16);
                let gbs = |t: Duration| bytes as f64 / t.as_secs_f64() / 1e9;
                println!(
                    "{:<8} {:>4} {:>5} {:>9.1} {:>10.2} {:>7.1} {:>14.2} {:>12.1}",
                    isa.name(),
                    sequences,
                    if f16 { "f16" } else { "f32" },
                    bytes as f64 / 1e6,
                    ours.as_secs_f64() * 1e3,
                    gbs(ours),
                    read.as_secs_f64() * 1e3,
                    gbs(read),
                );
            }
        }
    }
    prompt_attention();
}

/// Rows of the prompt whose attention [`prompt_attention`] times.
const PROMPT_ROWS: usize = 128;

/// A prompt's attention: [`PROMPT_ROWS`] rows, each over itself and the
/// rows before it, at every layer; one thread, f32, in cache.
fn prompt_attention() {
    println!(
        "\nprompt attention, one thread: {PROMPT_ROWS} rows over themselves, {LAYERS} layers, f32"
    );
    println!("{:<8} {:>10} {:>12}", "isa", "ours ms", "GMAC/s");
    let q_width = SHAPE.heads * SHAPE.head_dim;
    let queries: Vec<f32> = (0..PROMPT_ROWS * q_width)
        .map(|i| (i as f32 * 0.1).sin())
        .collect();
    let caches: Vec<LayerCache> = (0..LAYERS).map(LayerCache::new).collect();
    // Each row's scores and weighted sums: a multiply-add per element of a
    // query head for each position it sees.
    let macs = PROMPT_ROWS * (PROMPT_ROWS + 1) / 2 * q_width * 2 * LAYERS;
    for isa in Isa::all_detected() {
        let t = attended(isa, &queries, 0, &caches, false);
        println!(
            "{:<8} {:>10.2} {:>12.1}",
            isa.name(),
            t.as_secs_f64() * 1e3,
            macs as f64 / t.as_secs_f64() / 1e9
        );
    }
}
