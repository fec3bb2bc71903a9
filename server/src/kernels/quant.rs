//! Matrix products with GGML-quantized weights (`Q4_0`, `Q4_1`, `Q8_0`), for
//! GGUF text-generation models: the weights keep the GGUF file's bytes
//! (moved into panels of 16 rows at load, never requantized), and the
//! activations are quantized to 8 bits per 32-block on each call,
//! so that every product is an integer dot product per block, scaled in
//! f32, with llama.cpp's arithmetic (greedy decoding then picks the same
//! tokens).
//!
//! - [`blocks`]: the formats byte for byte, GGML's reference quantization,
//!   dequantization, and the 8-bit activations;
//! - [`panels`]: the weights repacked at load into panels of 16 rows, the
//!   same bytes of the 16 rows side by side;
//! - [`dot`]: the per-block dot products of one panel with a tile of
//!   activation rows, and which instruction set computes them (the
//!   portable code is there);
//! - `x86_panels`: the AVX2 and AVX-512 VNNI kernels;
//! - `x86_activations`: the activations' quantizing in AVX2 registers;
//! - `x86_asm`: the AVX2 kernels for whole tiles of 4 rows, in assembly
//!   (the compilers spilled them);
//! - [`matmul`]: the threaded driver.
//!
//! A decode step (one activation row) streams each weight once at memory
//! bandwidth; several rows (batched decode, prefill chunks) share each
//! weight block while it is in L1.

mod blocks;
mod dot;
mod matmul;
mod panels;
#[cfg(target_arch = "x86_64")]
mod x86_activations;
#[cfg(target_arch = "x86_64")]
mod x86_asm;
#[cfg(target_arch = "x86_64")]
mod x86_panels;

pub use blocks::{Activations, QuantFormat};

use super::isa::Isa;
use crate::{Error, Result};
use blocks::BLOCK;
use matmul::Weights;

/// A weight matrix of `rows` output features × `cols` inputs, each row
/// `cols / 32` GGML blocks as stored in a GGUF file, held in panels of 16
/// rows ([`panels`]).
#[derive(Clone, Debug)]
pub struct QuantMatrix {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    panels: Vec<u8>,
}

impl QuantMatrix {
    /// Takes a GGUF tensor's bytes: `rows` rows of `cols / 32` blocks of
    /// `format`, repacked into panels. A length that does not match, or
    /// `cols` not a multiple of 32, is a bad model.
    pub fn from_ggml(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<QuantMatrix> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(Error::BadModel(format!(
                "a {} matrix of {rows}×{cols}: the columns must be a multiple of {BLOCK}",
                format.name()
            )));
        }
        let want = rows
            .checked_mul(cols / BLOCK * format.block_bytes())
            .ok_or_else(|| Error::BadModel(format!("a matrix of {rows}×{cols} is too large")))?;
        if bytes.len() != want {
            return Err(Error::BadModel(format!(
                "a {} matrix of {rows}×{cols} takes {want} bytes, the tensor has {}",
                format.name(),
                bytes.len()
            )));
        }
        Ok(QuantMatrix {
            format,
            rows,
            cols,
            panels: panels::from_ggml(format, rows, cols / BLOCK, bytes),
        })
    }

    /// Quantizes a row-major `rows × cols` matrix with GGML's reference
    /// quantization (for tests, and to requantize f32 or f16 weights).
    ///
    /// # Panics
    /// If `cols` is not a multiple of 32 or `values` is not `rows × cols`.
    pub fn quantize(format: QuantFormat, rows: usize, cols: usize, values: &[f32]) -> QuantMatrix {
        assert_eq!(cols % BLOCK, 0, "columns not a multiple of {BLOCK}");
        assert_eq!(values.len(), rows * cols, "values are not rows × cols");
        let mut bytes = Vec::with_capacity(rows * cols / BLOCK * format.block_bytes());
        for block in values.chunks_exact(BLOCK) {
            blocks::quantize_block(format, block, &mut bytes);
        }
        QuantMatrix {
            format,
            rows,
            cols,
            panels: panels::from_ggml(format, rows, cols / BLOCK, &bytes),
        }
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The block format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// The GGML bytes, rows of blocks as in a GGUF file (a copy: the
    /// matrix holds them in panels).
    pub fn to_ggml(&self) -> Vec<u8> {
        panels::to_ggml(self.format, self.rows, self.cols / BLOCK, &self.panels)
    }

    /// Bytes the weights take.
    pub fn weight_bytes(&self) -> usize {
        self.panels.len()
    }

    /// Writes row `row` as f32 to `out` (`cols` values): an embedding
    /// lookup.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert!(row < self.rows, "row {row} of {}", self.rows);
        assert_eq!(out.len(), self.cols, "output length");
        let blocks = self.cols / BLOCK;
        let mut block = [0u8; 34];
        let block = &mut block[..self.format.block_bytes()];
        for (b, out) in out.chunks_exact_mut(BLOCK).enumerate() {
            panels::ggml_block(self.format, blocks, &self.panels, row, b, block);
            blocks::dequantize_block(self.format, block, out);
        }
    }

    /// `out[m × rows] = x[m × cols] · selfᵀ`, threaded with rayon (the
    /// global pool).
    ///
    /// # Panics
    /// If `x` is not `m × cols` or `out` not `m × rows`.
    pub fn matmul(&self, isa: Isa, x: &[f32], m: usize, out: &mut [f32]) {
        matmul::matmul_with(dot::Kernel::best(isa), isa, self.weights(), x, m, out);
    }

    fn weights(&self) -> Weights<'_> {
        Weights {
            format: self.format,
            rows: self.rows,
            cols: self.cols,
            panels: &self.panels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blocks::Activations;
    use proptest::prelude::*;

    const FORMATS: [QuantFormat; 3] = [QuantFormat::Q4_0, QuantFormat::Q4_1, QuantFormat::Q8_0];

    /// Deterministic values in [-scale, scale], with a few larger ones.
    fn values(len: usize, seed: u32, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(97));
                let v = ((h >> 8) % 2001) as f32 / 1000.0 - 1.0;
                if h.is_multiple_of(97) {
                    4.0 * v * scale
                } else {
                    v * scale
                }
            })
            .collect()
    }

    /// Every kernel of every instruction set this CPU has.
    fn kernels() -> Vec<(Isa, dot::Kernel)> {
        Isa::all_supported()
            .into_iter()
            .flat_map(|isa| dot::Kernel::all(isa).into_iter().map(move |k| (isa, k)))
            .collect()
    }

    /// The same quantized arithmetic in f64, block by block, from the
    /// dequantized weights' integers; and the sum of the terms' magnitudes
    /// (the scale of its rounding error).
    fn reference(w: &QuantMatrix, acts: &Activations, r: usize, j: usize) -> (f64, f64) {
        let bytes = w.format.block_bytes();
        let ggml = w.to_ggml();
        let row = &ggml[j * (w.cols / BLOCK) * bytes..][..(w.cols / BLOCK) * bytes];
        let (mut sum, mut size) = (0f64, 0f64);
        for (b, block) in row.chunks_exact(bytes).enumerate() {
            let i = r * acts.blocks + b;
            let d = f64::from(blocks::f16_at(block, 0));
            let q: Vec<i64> = match w.format {
                QuantFormat::Q8_0 => block[2..].iter().map(|q| i64::from(*q as i8)).collect(),
                format => {
                    let nibbles = &block[if format == QuantFormat::Q4_0 { 2 } else { 4 }..];
                    let offset = if format == QuantFormat::Q4_0 { 8 } else { 0 };
                    (0..BLOCK)
                        .map(|k| i64::from((nibbles[k % 16] >> (4 * (k / 16))) & 15) - offset)
                        .collect()
                }
            };
            let dot: i64 = q
                .iter()
                .zip(acts.block(r, b))
                .map(|(q, y)| q * i64::from(*y))
                .sum();
            let term = d * f64::from(acts.d[i]) * dot as f64;
            sum += term;
            size += term.abs();
            if w.format == QuantFormat::Q4_1 {
                let term = f64::from(blocks::f16_at(block, 2)) * f64::from(acts.s[i]);
                sum += term;
                size += term.abs();
            }
        }
        (sum, size)
    }

    /// Checks every kernel on one product against [`reference`] (relative
    /// to the terms' magnitudes: f32 sums of up to a few hundred terms) and
    /// against the f32 product of the dequantized weights with the
    /// unquantized activations.
    fn check(format: QuantFormat, rows: usize, cols: usize, m: usize, seed: u32) {
        let wf = values(rows * cols, seed, 0.5);
        let x = values(m * cols, seed + 1, 2.0);
        let w = QuantMatrix::quantize(format, rows, cols, &wf);
        let mut deq = vec![0f32; rows * cols];
        for (j, out) in deq.chunks_exact_mut(cols).enumerate() {
            w.dequantize_row(j, out);
        }
        for (isa, kernel) in kernels() {
            let acts = Activations::quantize(isa, &x, m, cols);
            let mut out = vec![f32::NAN; m * rows];
            matmul::matmul_with(kernel, isa, w.weights(), &x, m, &mut out);
            for r in 0..m {
                for j in 0..rows {
                    let got = f64::from(out[r * rows + j]);
                    let (want, size) = reference(&w, &acts, r, j);
                    let what = format!(
                        "{} {} {rows}x{cols} m={m} ({r},{j})",
                        format.name(),
                        kernel.name()
                    );
                    assert!(
                        (got - want).abs() <= 1e-4 * size + 1e-6,
                        "{what}: {got} vs {want}"
                    );
                    // Against f32: each activation is off by at most half a
                    // step d/2 = max|x|/254 of its block, plus the f16
                    // rounding of d (2⁻¹¹ of up to 127 steps, 0.06 steps):
                    // under max|x|/200 per element, times |w|. Q4_1 adds
                    // its m·s term with s rounded to f16 (2⁻¹¹ relative).
                    let (mut exact, mut bound) = (0f64, 0f64);
                    for b in 0..cols / BLOCK {
                        let xs = &x[r * cols + b * BLOCK..][..BLOCK];
                        let ws = &deq[j * cols + b * BLOCK..][..BLOCK];
                        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                        for (xv, wv) in xs.iter().zip(ws) {
                            exact += f64::from(*xv) * f64::from(*wv);
                            bound += f64::from(wv.abs() * amax) / 200.0
                                + 1e-3 * f64::from((wv * xv).abs());
                        }
                    }
                    assert!(
                        (got - exact).abs() <= bound + 1e-5,
                        "{what}: {got} vs f32 {exact} (bound {bound})"
                    );
                }
            }
        }
    }

    #[test]
    fn every_format_and_kernel_matches_the_reference_on_odd_shapes() {
        for format in FORMATS {
            for (rows, cols, m) in [
                (1, 32, 1),
                (7, 64, 3),
                (37, 96, 17),
                (70, 160, 1),
                (5, 32, 4),
                (33, 64, 9),
            ] {
                check(format, rows, cols, m, rows as u32 + 3 * m as u32);
            }
        }
    }

    #[test]
    fn threaded_shapes_match_the_reference() {
        // Enough work to split over the pool, rows not a multiple of the
        // chunk or tile.
        for format in FORMATS {
            check(format, 301, 256, 1, 11);
            check(format, 203, 192, 6, 12);
            // A prefill's rows: quantized in parallel, in chunks of 32 rows.
            check(format, 37, 1024, 41, 13);
        }
    }

    #[test]
    fn matmul_through_the_public_entry_point() {
        let (rows, cols, m) = (45, 128, 5);
        let w = QuantMatrix::quantize(QuantFormat::Q4_1, rows, cols, &values(rows * cols, 1, 1.0));
        let x = values(m * cols, 2, 1.0);
        let mut want = vec![0f32; m * rows];
        matmul::matmul_with(
            dot::Kernel::best(Isa::detect()),
            Isa::detect(),
            w.weights(),
            &x,
            m,
            &mut want,
        );
        for isa in Isa::all_supported() {
            let mut out = vec![0f32; m * rows];
            w.matmul(isa, &x, m, &mut out);
            for (a, b) in out.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{isa:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn from_ggml_refuses_wrong_lengths_and_columns() {
        for format in FORMATS {
            let n = 3 * 2 * format.block_bytes();
            assert!(QuantMatrix::from_ggml(format, 3, 64, &vec![0; n]).is_ok());
            for (cols, len) in [(64, n - 1), (64, n + 1), (64, 0), (48, n)] {
                match QuantMatrix::from_ggml(format, 3, cols, &vec![0; len]) {
                    Err(Error::BadModel(msg)) => {
                        assert!(msg.contains(&format!("3×{cols}")), "{msg}");
                    }
                    other => panic!("{} 3x{cols} with {len} bytes: {other:?}", format.name()),
                }
            }
        }
    }

    #[test]
    fn known_blocks_dequantize_exactly() {
        // Q4_1: d = 0.5, m = -1, byte j holds weight j = j, weight j+16 = 15-j.
        let mut q4 = vec![0x00, 0x38, 0x00, 0xBC];
        q4.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let w = QuantMatrix::from_ggml(QuantFormat::Q4_1, 1, 32, &q4).expect("one block");
        let mut out = [0f32; 32];
        w.dequantize_row(0, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], 0.5 * j as f32 - 1.0);
            assert_eq!(out[j + 16], 0.5 * (15 - j) as f32 - 1.0);
        }
        // Q8_0: d = 0.25, q = j - 16 (then -128 and 127 at the ends).
        let mut q8 = vec![0x00, 0x34];
        q8.extend((0..32i32).map(|j| (j - 16) as i8 as u8));
        q8[2] = 0x80;
        q8[33] = 0x7F;
        let w = QuantMatrix::from_ggml(QuantFormat::Q8_0, 1, 32, &q8).expect("one block");
        w.dequantize_row(0, &mut out);
        assert_eq!(out[0], -32.0);
        assert_eq!(out[31], 31.75);
        for (j, v) in out.iter().enumerate().take(31).skip(1) {
            assert_eq!(*v, 0.25 * (j as f32 - 16.0));
        }
    }

    #[test]
    fn quantize_then_dequantize_stays_within_half_a_step() {
        let (rows, cols) = (9, 96);
        let x = values(rows * cols, 5, 3.0);
        for format in FORMATS {
            let w = QuantMatrix::quantize(format, rows, cols, &x);
            let mut row = vec![0f32; cols];
            for j in 0..rows {
                w.dequantize_row(j, &mut row);
                for (b, (got, want)) in row
                    .chunks_exact(BLOCK)
                    .zip(x[j * cols..].chunks_exact(BLOCK))
                    .enumerate()
                {
                    let (lo, hi) = want
                        .iter()
                        .fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
                    let amax = lo.abs().max(hi.abs());
                    // One step: 2·amax/15 (Q4_0: from -8d to 7d), (hi-lo)/15,
                    // amax/127; a half step rounding plus the f16 rounding of
                    // d (and m) over up to 16 or 127 steps.
                    let step = match format {
                        QuantFormat::Q4_0 => amax / 8.0,
                        QuantFormat::Q4_1 => (hi - lo) / 15.0,
                        QuantFormat::Q8_0 => amax / 127.0,
                    };
                    // Q4_0's largest positive value can sit a full step
                    // above the last level (7d); others round to nearest.
                    let slack = if format == QuantFormat::Q4_0 {
                        1.0
                    } else {
                        0.5
                    };
                    for (g, v) in got.iter().zip(want) {
                        let bound = slack * step + 2e-3 * amax;
                        assert!(
                            (g - v).abs() <= bound,
                            "{} row {j} block {b}: {g} vs {v}",
                            format.name()
                        );
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn kernels_agree_with_each_other(
            format in 0usize..3,
            rows in 1usize..60,
            blocks in 1usize..8,
            m in 1usize..10,
            seed in any::<u32>(),
            scale in 0.01f32..100.0,
        ) {
            let (format, cols) = (FORMATS[format], blocks * BLOCK);
            let w = QuantMatrix::quantize(format, rows, cols, &values(rows * cols, seed, scale));
            let x = values(m * cols, seed ^ 0x5555, 1.0 / scale);
            let isa = Isa::detect();
            let mut first: Option<Vec<f32>> = None;
            for (isa_k, kernel) in kernels() {
                let mut out = vec![0f32; m * rows];
                matmul::matmul_with(kernel, isa_k, w.weights(), &x, m, &mut out);
                let acts = Activations::quantize(isa, &x, m, cols);
                match &first {
                    None => first = Some(out),
                    Some(want) => {
                        for r in 0..m {
                            for j in 0..rows {
                                let size = reference(&w, &acts, r, j).1;
                                let (a, b) = (out[r * rows + j], want[r * rows + j]);
                                prop_assert!(
                                    f64::from((a - b).abs()) <= 2e-4 * size + 1e-6,
                                    "{}: {} vs {}", kernel.name(), a, b
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
