//! Forward-pass benchmark of the encoders on the real all-MiniLM-L6-v2
//! weights: the native kernels beside candle-transformers, then where the
//! native forward pass spends its time (each kernel timed alone at the
//! model's shapes), in GFLOP/s and as a fraction of the FP32 peak.
//!
//! `cargo bench -p openmodel-server --bench encoder [-- --peak-gflops G]`
//! (the peak defaults to the nominal one: cores × lanes × 2 FMA units × 2 ×
//! base clock)
//! (model from `OPENMODEL_MODEL_DIR`, default `.cache/models/all-MiniLM-L6-v2`;
//! run `scripts/fetch-model.sh` first).

use std::path::PathBuf;
use std::time::Duration;

use openmodel_server::kernels::attention::attention;
use openmodel_server::kernels::elementwise::{gelu, layer_norm};
use openmodel_server::kernels::gemm::{Epilogue, MatRef, PackedB, matmul_parallel};
use openmodel_server::kernels::isa::{Isa, Level};
use openmodel_server::model::embedding::Embedder;
use openmodel_server::model::engine::Engine;

mod common;
use common::{Timing, time};

/// f32 lanes per vector register of the kernels in use.
fn lanes() -> usize {
    match Isa::detect().level() {
        Level::Avx512 => 16,
        Level::Avx2 => 8,
        Level::Generic => 4,
    }
}

/// Nominal FP32 peak in GFLOP/s of `cores` cores: lanes × 2 FMA units × 2
/// FLOP per FMA × the base clock from /proc/cpuinfo (turbo can exceed it).
fn nominal_peak(cores: usize) -> f64 {
    let mhz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN);
    cores as f64 * lanes() as f64 * 2.0 * 2.0 * mhz / 1000.0
}

fn model_dir() -> PathBuf {
    std::env::var_os("OPENMODEL_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-MiniLM-L6-v2")
        })
}

/// Token ids of `count` inputs of `len` tokens ([CLS] … [SEP]).
fn batch(count: usize, len: usize) -> Vec<Vec<u32>> {
    (0..count)
        .map(|i| {
            let mut ids = vec![101u32];
            ids.extend((0..len - 2).map(|j| 1000 + ((i * 131 + j * 17) % 20000) as u32));
            ids.push(102);
            ids
        })
        .collect()
}

/// Matrix-multiplication FLOPs of one token through MiniLM-L6 (h 384, ffn
/// 1536, 6 layers) in a sequence of `len` tokens.
fn flops_per_token(len: usize) -> f64 {
    let (h, f, layers) = (384.0, 1536.0, 6.0);
    let dense = 2.0 * (3.0 * h * h + h * h + 2.0 * h * f);
    let attention = 2.0 * 2.0 * len as f64 * h;
    layers * (dense + attention)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = rayon::current_num_threads();
    let peak: f64 = args
        .iter()
        .position(|a| a == "--peak-gflops")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| nominal_peak(threads));
    let dir = model_dir();
    assert!(
        dir.join("model.safetensors").exists(),
        "{} has no model: run scripts/fetch-model.sh (or set OPENMODEL_MODEL_DIR)",
        dir.display()
    );
    println!(
        "encoder forward pass, all-MiniLM-L6-v2, {threads} threads, kernels: {}",
        Isa::detect().name()
    );
    println!(
        "{:<14} {:>16} {:>16} {:>10}",
        "shape", "native", "candle", "ratio"
    );
    let native = Embedder::load(&dir, &Engine::Native).expect("native engine");
    let candle = Embedder::load(
        &dir,
        &Engine::Candle(candle_core::Device::Cpu, candle_core::DType::F32),
    )
    .expect("candle engine");
    let mut gflops_32x128 = 0.0;
    for (count, len) in [(1, 16), (1, 128), (32, 16), (32, 128)] {
        let ids = batch(count, len);
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let budget = Duration::from_secs(3);
        let t_native = time(budget, || drop(native.embed_tokens(&refs, true).unwrap())).wall;
        let t_candle = time(budget, || drop(candle.embed_tokens(&refs, true).unwrap())).wall;
        let tokens = (count * len) as f64;
        let show = |t: Duration| {
            format!(
                "{:.2} ms {:>6.0} tok/s",
                t.as_secs_f64() * 1e3,
                tokens / t.as_secs_f64()
            )
        };
        println!(
            "{:<14} {:>16} {:>16} {:>9.2}x",
            format!("{count} x {len}"),
            show(t_native),
            show(t_candle),
            t_candle.as_secs_f64() / t_native.as_secs_f64()
        );
        if (count, len) == (32, 128) {
            gflops_32x128 = tokens * flops_per_token(len) / t_native.as_secs_f64() / 1e9;
        }
    }
    println!(
        "native at 32 x 128: {gflops_32x128:.1} GFLOP/s (matrix multiplications only counted)"
    );
    println!(
        "= {:.0}% of the nominal FP32 peak of {peak:.1} GFLOP/s ({threads} cores x {} lanes x 2 FMA units x 2 FLOP x base clock; override with --peak-gflops)",
        100.0 * gflops_32x128 / peak,
        lanes()
    );
    profile(32, 128);
}

/// Each kernel of one layer alone at the shapes of a `count × len` batch,
/// times the layer count: where the forward pass goes.
fn profile(count: usize, len: usize) {
    let (h, f, heads, layers) = (384usize, 1536usize, 12usize, 6.0);
    let d = h / heads;
    let m = count * len;
    let isa = Isa::detect();
    let input = |rows: usize, cols: usize| -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
            .collect()
    };
    let weight = |n: usize, k: usize| PackedB::from_transposed(MatRef::dense(&input(n, k), n, k));
    let budget = Duration::from_secs(2);
    let mut rows: Vec<(&str, Timing, f64)> = Vec::new();
    for (name, k, n, gelu) in [
        ("qkv", h, 3 * h, false),
        ("attention out", h, h, false),
        ("ffn in + gelu", h, f, true),
        ("(ffn in, no gelu)", h, f, false),
        ("ffn out", f, h, false),
    ] {
        let (a, w, bias) = (input(m, k), weight(n, k), vec![0.1f32; n]);
        let residual = input(m, n);
        let mut c = vec![0f32; m * n];
        let t = time(budget, || {
            let epi = match (gelu, n == h) {
                (true, _) => Epilogue::BiasGelu(&bias),
                (false, true) => Epilogue::BiasResidual(&bias, MatRef::dense(&residual, m, n)),
                _ => Epilogue::Bias(&bias),
            };
            matmul_parallel(MatRef::dense(&a, m, k), &w, &mut c, n, epi);
        });
        rows.push((name, t, 2.0 * (m * k * n) as f64));
    }
    let qkv = input(m, 3 * h);
    let mut context = vec![0f32; m * h];
    let lengths = vec![len; count];
    let t = time(budget, || {
        attention(isa, &qkv, &lengths, heads, &mut context)
    });
    rows.push((
        "attention",
        t,
        (count * heads * 2 * 2 * len * len * d) as f64,
    ));
    let mut big = input(m, f);
    let t = time(budget, || {
        use rayon::prelude::*;
        big.par_chunks_mut(64 * f).for_each(gelu);
    });
    rows.push(("(gelu alone)", t, 0.0));
    let mut x = input(m, h);
    let (g, b) = (vec![1.0f32; h], vec![0.0f32; h]);
    let t = time(budget, || {
        use rayon::prelude::*;
        x.par_chunks_mut(64 * h)
            .for_each(|r| layer_norm(r, &g, &b, 1e-12));
    });
    rows.push((
        "2 x layer norm",
        Timing {
            wall: t.wall * 2,
            cpu: t.cpu * 2,
        },
        0.0,
    ));
    // Rows in parentheses are comparisons, not part of the forward pass.
    let total: Duration = rows
        .iter()
        .filter(|r| !r.0.starts_with('('))
        .map(|r| r.1.wall)
        .sum();
    println!(
        "\nprofile of one {count} x {len} forward pass ({layers} layers, each kernel timed alone;"
    );
    println!("GFLOP per CPU-second is the rate per busy core, immune to other load):");
    println!(
        "{:<16} {:>10} {:>7} {:>10} {:>12}",
        "kernel", "ms", "share", "GFLOP/s", "GFLOP/CPU-s"
    );
    for (name, t, flops) in &rows {
        let rate = |d: Duration| {
            if *flops > 0.0 {
                format!("{:.1}", flops / d.as_secs_f64() / 1e9)
            } else {
                "-".into()
            }
        };
        println!(
            "{:<16} {:>10.2} {:>6.1}% {:>10} {:>12}",
            name,
            t.wall.as_secs_f64() * 1e3 * layers,
            100.0 * t.wall.as_secs_f64() / total.as_secs_f64(),
            rate(t.wall),
            rate(t.cpu)
        );
    }
    println!(
        "{:<16} {:>10.2}  (rows in parentheses not counted)",
        "sum",
        total.as_secs_f64() * 1e3 * layers
    );
}
