//! `cargo bench -p openmodel-server --bench quant`
//!
//! The quantized matrix products (`kernels::quant`) at SmolLM2-135M's
//! shapes (Q4_1 linear layers, the Q8_0 tied output projection), beside
//! candle's `QMatMul` on the same GGML bytes: for m = 1, 4, 16 and 64
//! activation rows, time per call (median wall, and CPU time of all
//! threads), GB/s of weights streamed, and candle's time over ours; once
//! per instruction set this CPU has (`OPENMODEL_ISA=avx2|generic` caps it).
//! The weights are random (the arithmetic does not depend on them) and
//! small enough to stay in cache except the output projection (28 MiB).
//! Then what each product does first: its activations quantized to 8 bits
//! per 32-block (`Activations::quantize_into`), for a decode step's 16
//! rows of 576 and of 1536 and a prompt chunk's 256 of 1536, in ns a value
//! (on the pool's threads from 8,192 values on, as the products run it),
//! beside candle's quantizing of activations to `Q8_0` (one thread).

use std::time::Duration;

use candle_core::quantized::GgmlType;
use candle_core::quantized::k_quants::BlockQ8_0;
use candle_core::quantized::{GgmlDType, QMatMul, ggml_file};
use candle_core::{Device, Module, Tensor};
use openmodel_server::kernels::isa::Isa;
use openmodel_server::kernels::quant::{Activations, QuantFormat, QuantMatrix};

mod common;
use common::{Timing, time};

/// Deterministic values in [-scale, scale].
fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn main() {
    let shapes = [
        (QuantFormat::Q4_1, 576, 576, "attention q, o"),
        (QuantFormat::Q4_1, 192, 576, "attention k, v"),
        (QuantFormat::Q4_1, 1536, 576, "MLP gate, up"),
        (QuantFormat::Q4_1, 576, 1536, "MLP down"),
        (QuantFormat::Q8_0, 49152, 576, "output (tied)"),
    ];
    let budget = Duration::from_millis(300);
    println!(
        "quantized matmul, {} threads, best ISA {}",
        rayon::current_num_threads(),
        Isa::detect().name()
    );
    println!(
        "{:<8} {:<5} {:>11} {:>3} {:>10} {:>10} {:>7} {:>11} {:>8}   layer",
        "isa", "fmt", "rows×cols", "m", "ours µs", "cpu µs", "GB/s", "candle µs", "candle/us"
    );
    for (format, rows, cols, what) in shapes {
        let w = QuantMatrix::quantize(format, rows, cols, &values(rows * cols, 1, 0.1));
        let dtype = match format {
            QuantFormat::Q4_0 => GgmlDType::Q4_0,
            QuantFormat::Q4_1 => GgmlDType::Q4_1,
            QuantFormat::Q8_0 => GgmlDType::Q8_0,
        };
        let qtensor =
            ggml_file::qtensor_from_ggml(dtype, &w.to_ggml(), vec![rows, cols], &Device::Cpu)
                .expect("candle takes the GGML bytes");
        let candle = QMatMul::from_qtensor(qtensor).expect("candle QMatMul");
        for m in [1, 4, 16, 64] {
            let x = values(m * cols, 2, 1.0);
            let xt = Tensor::from_slice(&x, (m, cols), &Device::Cpu).expect("input tensor");
            let theirs = time(budget, || {
                std::hint::black_box(candle.forward(&xt).expect("candle forward"));
            });
            let reference: Vec<f32> = candle
                .forward(&xt)
                .and_then(|t| t.flatten_all()?.to_vec1())
                .expect("candle output");
            for isa in Isa::all_detected() {
                let mut out = vec![0f32; m * rows];
                let ours = time(budget, || w.matmul(isa, &x, m, &mut out));
                // Same quantized arithmetic as candle's (up to f32 summation order).
                let scale = reference.iter().fold(0f32, |a, v| a.max(v.abs()));
                let worst = out
                    .iter()
                    .zip(&reference)
                    .fold(0f32, |a, (o, r)| a.max((o - r).abs()));
                assert!(
                    worst <= 1e-3 * scale,
                    "{} {rows}×{cols} m={m}: off candle by {worst} (of {scale})",
                    isa.name()
                );
                let gbs = w.weight_bytes() as f64 / ours.wall.as_secs_f64() / 1e9;
                println!(
                    "{:<8} {:<5} {:>11} {:>3} {:>10.1} {:>10.1} {:>7.1} {:>11.1} {:>8.2}   {what}",
                    isa.name(),
                    format.name(),
                    format!("{rows}×{cols}"),
                    m,
                    ours.wall.as_secs_f64() * 1e6,
                    ours.cpu.as_secs_f64() * 1e6,
                    gbs,
                    theirs.wall.as_secs_f64() * 1e6,
                    theirs.wall.as_secs_f64() / ours.wall.as_secs_f64(),
                );
            }
        }
    }
    quantizing(budget);
}

/// [`Activations::quantize_into`] at a decode step's and a prompt chunk's
/// shapes, per instruction set, beside candle's `Q8_0` quantizing.
fn quantizing(budget: Duration) {
    println!("\nactivations quantized to 8 bits per 32-block, ns a value");
    println!(
        "{:<8} {:>11} {:>10} {:>14}",
        "isa", "rows×cols", "ours ns", "candle Q8_0 ns"
    );
    for (m, cols) in [(16, 576), (16, 1536), (256, 1536)] {
        let x = values(m * cols, 3, 4.0);
        let mut blocks = vec![BlockQ8_0::zeros(); m * cols / 32];
        let theirs = time(budget, || {
            BlockQ8_0::from_float(&x, &mut blocks);
            std::hint::black_box(&blocks);
        });
        let per_value = |t: Timing| t.wall.as_secs_f64() * 1e9 / (m * cols) as f64;
        for isa in Isa::all_detected() {
            // On a worker of the pool, as a forward pass runs (its forks
            // then cost what they cost the engine).
            let ours = rayon::scope(|_| {
                let mut acts = Activations::default();
                time(budget, || {
                    acts.quantize_into(isa, &x, m, cols);
                    std::hint::black_box(&acts);
                })
            });
            println!(
                "{:<8} {:>11} {:>10.3} {:>14.3}",
                isa.name(),
                format!("{m}×{cols}"),
                per_value(ours),
                per_value(theirs),
            );
        }
    }
}
