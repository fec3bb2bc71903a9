//! The GGML block formats byte for byte, their reference quantization and
//! dequantization, and the 8-bit activations the kernels multiply them with.
//!
//! A block holds 32 consecutive weights of a row, little endian:
//!
//! | format | bytes | layout                                   | weight `j`                  |
//! |--------|-------|------------------------------------------|-----------------------------|
//! | Q4_0   | 18    | f16 `d`, 16 bytes of nibbles             | `d · (q_j − 8)`             |
//! | Q4_1   | 20    | f16 `d`, f16 `m`, 16 bytes of nibbles    | `d · q_j + m`               |
//! | Q8_0   | 34    | f16 `d`, 32 × i8                         | `d · q_j`                   |
//!
//! Nibble byte `i` (0..16) holds weight `i` in its low half and weight
//! `i + 16` in its high half.

use half::f16;
use half::slice::HalfFloatSliceExt;

use rayon::prelude::*;

use super::super::isa::{Isa, Level};
use super::super::rows_per_chunk;

/// Weights per block, in every format.
pub const BLOCK: usize = 32;

/// A GGML block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// 4-bit weights, one scale per block: 4.5 bits per weight.
    Q4_0,
    /// 4-bit weights, a scale and a minimum per block: 5 bits per weight.
    Q4_1,
    /// 8-bit weights, one scale per block: 8.5 bits per weight.
    Q8_0,
}

impl QuantFormat {
    /// Bytes of one block of 32 weights.
    pub const fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q4_0 => 18,
            QuantFormat::Q4_1 => 20,
            QuantFormat::Q8_0 => 34,
        }
    }

    /// GGML's name for it.
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q4_0 => "Q4_0",
            QuantFormat::Q4_1 => "Q4_1",
            QuantFormat::Q8_0 => "Q8_0",
        }
    }
}

/// The f16 at `bytes[at..at + 2]`, as f32.
#[inline]
pub fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// Each of `values` rounded to the nearest f16, as f32 (what GGML
/// stores), through `half`'s slice conversions: F16C's where the CPU has
/// it, with one check of the CPU per slice (a value at a time, it was two
/// checks of the CPU and two calls per block of 32 values).
fn through_f16(values: &mut [f32]) {
    let mut halves = [f16::ZERO; 64];
    for chunk in values.chunks_mut(halves.len()) {
        let halves = &mut halves[..chunk.len()];
        halves.convert_from_f32_slice(chunk);
        halves.convert_to_f32_slice(chunk);
    }
}

/// Writes the 32 weights of `block` (in `format`) to `out`.
pub fn dequantize_block(format: QuantFormat, block: &[u8], out: &mut [f32]) {
    let out = &mut out[..BLOCK];
    let d = f16_at(block, 0);
    match format {
        QuantFormat::Q4_0 | QuantFormat::Q4_1 => {
            let (offset, min) = match format {
                QuantFormat::Q4_0 => (-8.0 * d, 2),
                _ => (f16_at(block, 2), 4),
            };
            let (low, high) = out.split_at_mut(BLOCK / 2);
            for ((q, lo), hi) in block[min..][..BLOCK / 2].iter().zip(low).zip(high) {
                *lo = d * f32::from(q & 0x0F) + offset;
                *hi = d * f32::from(q >> 4) + offset;
            }
        }
        QuantFormat::Q8_0 => {
            for (q, o) in block[2..][..BLOCK].iter().zip(out) {
                *o = d * f32::from(*q as i8);
            }
        }
    }
}

/// Appends the block GGML's reference code (`quantize_row_*_ref`) makes of
/// 32 values.
pub fn quantize_block(format: QuantFormat, x: &[f32], out: &mut Vec<u8>) {
    let x = &x[..BLOCK];
    match format {
        QuantFormat::Q4_0 => {
            // The value of largest magnitude, with its sign, maps to -8.
            let max = x
                .iter()
                .fold(0f32, |max, v| if v.abs() > max.abs() { *v } else { max });
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
            out.extend((0..BLOCK / 2).map(|j| q(x[j]) | (q(x[j + 16]) << 4)));
        }
        QuantFormat::Q4_1 => {
            let min = x.iter().fold(f32::MAX, |a, v| a.min(*v));
            let max = x.iter().fold(-f32::MAX, |a, v| a.max(*v));
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
            let q = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
            out.extend((0..BLOCK / 2).map(|j| q(x[j]) | (q(x[j + 16]) << 4)));
        }
        QuantFormat::Q8_0 => {
            // The largest magnitude, compared as bits (for floats without
            // their sign, the same order): a reduction that vectorizes,
            // where `f32::max`'s NaN rules kept it scalar.
            let mut top = 0u32;
            for v in x {
                top = top.max(v.to_bits() & 0x7FFF_FFFF);
            }
            let amax = f32::from_bits(top);
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
        }
    }
}

/// Rows of activations quantized to 8 bits per 32-block, as llama.cpp's
/// x86 code does for its `Q8_0`/`Q8_1` operands: `d = max|x| / 127`,
/// `q = round_half_even(x / d)`, `d` rounded to f16. Stored as arrays rather
/// than GGML blocks, so that the kernels load 32 aligned-enough bytes and
/// broadcast scalars.
#[derive(Debug, Default)]
#[cfg_attr(test, derive(PartialEq))]
pub struct Activations {
    /// Blocks per row.
    pub blocks: usize,
    /// The 8-bit values, `blocks · 32` per row.
    pub qs: Vec<i8>,
    /// Per block: the scale `d` (f16-exact).
    pub d: Vec<f32>,
    /// Per block: `Σq`, for offsets (`Q4_0`'s 8) taken out in integers.
    pub sum: Vec<i32>,
    /// Per block: `d · Σq` rounded to f16, `Q8_1`'s `s` (times `Q4_1`'s `m`).
    pub s: Vec<f32>,
}

impl Activations {
    /// Quantizes `m` rows of `cols` values (`cols % 32 == 0`) into new
    /// buffers (the tests' way; products keep theirs, [`Self::quantize_into`]).
    #[cfg(test)]
    pub fn quantize(isa: Isa, x: &[f32], m: usize, cols: usize) -> Activations {
        let mut acts = Activations::default();
        acts.quantize_into(isa, x, m, cols);
        acts
    }

    /// [`Activations::quantize`] into this value's buffers, which keep
    /// their memory from call to call. A pass's products each took four
    /// fresh zeroed vectors (a prefill's from `mmap`, a page fault per
    /// page), zeroed on one thread while the others waited: `memset` was
    /// 1.5–2.1 % of a 16-stream run's samples at the AVX2 cap, 0.3–0.8 %
    /// with the buffers kept (`perf record`, docs/benchmarks.md).
    pub fn quantize_into(&mut self, isa: Isa, x: &[f32], m: usize, cols: usize) {
        assert_eq!(cols % BLOCK, 0, "columns not a multiple of {BLOCK}");
        assert_eq!(x.len(), m * cols, "activation length");
        let blocks = m * cols / BLOCK;
        self.blocks = cols / BLOCK;
        // Every element is written below: only memory not had before is
        // zeroed.
        fit(&mut self.qs, m * cols);
        fit(&mut self.d, blocks);
        fit(&mut self.sum, blocks);
        fit(&mut self.s, blocks);
        let Some(rows) = rows_per_chunk(m, cols) else {
            quantize_rows(
                isa,
                x,
                &mut self.qs,
                (&mut self.d, &mut self.sum, &mut self.s),
            );
            return;
        };
        // A prefill's rows, or a batch of decoding rows, in parallel (alone,
        // they were 3 % of a 128-token prefill's time on two threads, one of
        // them waiting).
        let per_rows = rows * cols / BLOCK;
        x.par_chunks(rows * cols)
            .zip(self.qs.par_chunks_mut(rows * cols))
            .zip(self.d.par_chunks_mut(per_rows))
            .zip(self.sum.par_chunks_mut(per_rows))
            .zip(self.s.par_chunks_mut(per_rows))
            .for_each(|((((x, qs), d), sum), s)| quantize_rows(isa, x, qs, (d, sum, s)));
    }

    /// The 32 values of block `b` of row `r`.
    #[inline]
    pub fn block(&self, r: usize, b: usize) -> &[i8] {
        &self.qs[(r * self.blocks + b) * BLOCK..][..BLOCK]
    }
}

/// `v` at length `len`, zeroing only what it grows by.
fn fit<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
    v.truncate(len);
    v.resize(len, T::default());
}

/// `x.round_ties_even() as i32` for `|x| < 2²²` (here at most 127), in
/// float and integer adds that vectorize: `x + 1.5·2²³` lands in the binade
/// where one unit is one step of the mantissa, so the hardware's rounding
/// to nearest, ties to even, leaves the integer in the low bits. Rust's
/// saturating `as i32` (a NaN and range check per value) kept the whole
/// quantizing loop scalar. A NaN gives some integer, never undefined
/// behaviour.
#[inline(always)]
fn round_small(x: f32) -> i32 {
    ((x + MAGIC).to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32)
}

/// 1.5·2²³, [`round_small`]'s shift.
pub(super) const MAGIC: f32 = 12_582_912.0;

/// A block's scale `amax / 127` and the factor `127 / amax` that takes its
/// values to integers, from `top`, the bits of its largest magnitude. The
/// factor is 0 where it is no number: a block of zeros, or one so small
/// that its scale is 0 as an f16 anyway (a subnormal `amax` made every
/// value infinite, and `Σq` overflow).
#[inline(always)]
pub(super) fn block_scales(top: u32) -> (f32, f32) {
    let amax = f32::from_bits(top);
    let id = 127.0 / amax;
    (amax / 127.0, if id.is_finite() { id } else { 0.0 })
}

/// A run of blocks' scales `d`, sums `Σq` and `d·Σq` (`s`), in
/// [`Activations`]' arrays.
pub(super) type Numbers<'a> = (&'a mut [f32], &'a mut [i32], &'a mut [f32]);

/// Quantizes consecutive 32-blocks of `x` into `qs` and the [`Numbers`]
/// (`d` and `s` rounded to f16 once all are known): on x86 with AVX2 in
/// registers ([`super::x86_activations`], at the AVX-512 level too),
/// elsewhere with [`quantize_blocks`], the same numbers.
fn quantize_rows(isa: Isa, x: &[f32], qs: &mut [i8], (d, sum, s): Numbers<'_>) {
    match isa.level() {
        // SAFETY: an `Isa` comes only from runtime detection: at these
        // levels the CPU has AVX2.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx2 => unsafe {
            super::x86_activations::quantize_blocks(x, qs, (d, sum, s))
        },
        _ => quantize_blocks(x, qs, (d, sum, s)),
    }
    through_f16(d);
    through_f16(s);
}

/// Runs `block` over consecutive 32-blocks of `x` and `qs` (it quantizes
/// one, writing its 32 bytes, and gives its scale and `Σq`), and writes
/// each block's [`Numbers`].
#[inline(always)]
pub(super) fn each_block(
    x: &[f32],
    qs: &mut [i8],
    (d, sum, s): Numbers<'_>,
    mut block: impl FnMut(&[f32], &mut [i8]) -> (f32, i32),
) {
    let blocks = x.chunks_exact(BLOCK).zip(qs.chunks_exact_mut(BLOCK));
    let numbers = d.iter_mut().zip(sum).zip(s.iter_mut());
    for ((x, q), ((d, sum), s)) in blocks.zip(numbers) {
        let (scale, total) = block(x, q);
        (*d, *sum, *s) = (scale, total, scale * total as f32);
    }
}

/// The portable [`quantize_rows`], before the f16 roundings.
fn quantize_blocks(x: &[f32], qs: &mut [i8], numbers: Numbers<'_>) {
    each_block(x, qs, numbers, |x, q| {
        // The largest magnitude, compared as bits (for floats without their
        // sign, the same order).
        let top = x
            .iter()
            .fold(0u32, |top, v| top.max(v.to_bits() & 0x7FFF_FFFF));
        let (scale, id) = block_scales(top);
        let mut total = 0i32;
        for (v, q) in x.iter().zip(q.iter_mut()) {
            let r = round_small(v * id);
            // Wrapping: a NaN or infinite input gives some integers, never
            // a panic.
            total = total.wrapping_add(r);
            *q = r as i8;
        }
        (scale, total)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kept_buffers_quantize_as_fresh_ones_through_any_shapes() {
        let isa = Isa::detect();
        let mut kept = Activations::default();
        // Larger, smaller, then larger again: what a buffer held before
        // never shows through.
        for (m, cols) in [(40, 1024), (1, 64), (3, 96), (45, 1024), (2, 32)] {
            let x: Vec<f32> = (0..m * cols)
                .map(|i| ((i * 31 + m) % 211) as f32 / 10.0 - 10.0)
                .collect();
            kept.quantize_into(isa, &x, m, cols);
            assert_eq!(kept, Activations::quantize(isa, &x, m, cols), "{m}x{cols}");
        }
    }

    #[test]
    fn rows_quantized_in_parallel_are_the_serial_ones() {
        let (m, cols) = (45, 1024);
        assert!(rows_per_chunk(m, cols).is_some(), "the parallel path");
        let x: Vec<f32> = (0..m * cols)
            .map(|i| ((i * 7919) % 2003) as f32 / 100.0 - 10.0)
            .collect();
        for isa in Isa::all_supported() {
            let acts = Activations::quantize(isa, &x, m, cols);
            let blocks = m * cols / BLOCK;
            let (mut qs, mut d) = (vec![0; m * cols], vec![0.0; blocks]);
            let (mut sum, mut s) = (vec![0; blocks], vec![0.0; blocks]);
            quantize_rows(isa, &x, &mut qs, (&mut d, &mut sum, &mut s));
            assert_eq!(acts.qs, qs, "{}", isa.name());
            assert_eq!(acts.d, d, "{}", isa.name());
            assert_eq!(acts.sum, sum, "{}", isa.name());
            assert_eq!(acts.s, s, "{}", isa.name());
        }
    }

    #[test]
    fn block_scales_are_the_f16_roundings_of_llama_cpp() {
        // Blocks whose scales are normal, subnormal and zero as f16, and
        // one of each sign of Σq.
        let mut x = Vec::new();
        for (b, top) in [3.7f32, 1e-3, 2e-6, 0.0, 11.0, 0.3].into_iter().enumerate() {
            x.extend((0..BLOCK).map(|i| {
                let v = top * (i as f32 - 9.5 + b as f32) / 32.0;
                if i == 5 { top } else { v }
            }));
        }
        for isa in Isa::all_supported() {
            let acts = Activations::quantize(isa, &x, 1, x.len());
            for (b, block) in x.chunks_exact(BLOCK).enumerate() {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = amax / 127.0;
                let want = |v: f32| f16::from_f32(v).to_f32();
                let what = format!("{} block {b}", isa.name());
                assert_eq!(acts.d[b].to_bits(), want(scale).to_bits(), "d, {what}");
                let total: i32 = acts.block(0, b).iter().map(|q| i32::from(*q)).sum();
                assert_eq!(acts.sum[b], total, "Σq, {what}");
                let s = want(scale * total as f32);
                assert_eq!(acts.s[b].to_bits(), s.to_bits(), "s, {what}");
            }
        }
    }

    /// Every instruction set's quantizing of `x` (one row), the same
    /// bytes and numbers as the portable code's.
    fn same_on_every_isa(x: &[f32]) -> Result<(), TestCaseError> {
        let all = Isa::all_supported();
        let portable = all
            .iter()
            .find(|i| i.level() == Level::Generic)
            .expect("the portable level is always supported");
        let want = Activations::quantize(*portable, x, 1, x.len());
        for isa in all {
            let got = Activations::quantize(isa, x, 1, x.len());
            prop_assert_eq!(&got.qs, &want.qs, "{}", isa.name());
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&got.d), bits(&want.d), "{}", isa.name());
            prop_assert_eq!(&got.sum, &want.sum, "{}", isa.name());
            prop_assert_eq!(bits(&got.s), bits(&want.s), "{}", isa.name());
        }
        Ok(())
    }

    #[test]
    fn blocks_too_small_for_an_f16_scale_and_non_numbers_never_panic() {
        let mut x: Vec<f32> = (0..BLOCK).map(|k| (k as f32 - 16.0) * 1e-41).collect();
        x.extend((0..BLOCK).map(|k| k as f32 * 1e-38));
        x.extend([f32::NAN; BLOCK]);
        x.extend((0..BLOCK).map(|k| if k == 3 { f32::INFINITY } else { 1.0 }));
        for isa in Isa::all_supported() {
            let acts = Activations::quantize(isa, &x, 1, x.len());
            for b in 0..2 {
                assert!(acts.block(0, b).iter().all(|q| *q == 0), "block {b}");
                assert_eq!(
                    (acts.d[b], acts.sum[b], acts.s[b]),
                    (0.0, 0, 0.0),
                    "block {b}"
                );
            }
        }
    }

    #[test]
    fn every_isa_quantizes_ties_zeros_and_extremes_alike() {
        // Values at exact ties of the rounding (k + ½ steps of a block
        // whose largest value is 127 steps), blocks of zeros, of one value,
        // of negative maxima, of huge and tiny magnitudes, with a NaN and
        // with an infinity.
        let mut x: Vec<f32> = (0..BLOCK).map(|k| k as f32 * 0.5 - 8.0).collect();
        x[31] = 127.0;
        x.extend([0.0; BLOCK]);
        x.extend([-3.25; BLOCK]);
        x.extend((0..BLOCK).map(|k| if k == 7 { -1e30 } else { k as f32 * 1e28 }));
        x.extend((0..BLOCK).map(|k| (k as f32 - 16.0) * 1e-41));
        // Non-numbers: the same integers and scales on every level too.
        x.extend((0..BLOCK).map(|k| if k == 5 { f32::NAN } else { k as f32 }));
        x.extend((0..BLOCK).map(|k| {
            if k == 9 {
                f32::NEG_INFINITY
            } else {
                -(k as f32)
            }
        }));
        same_on_every_isa(&x).unwrap();
    }

    proptest! {
        #[test]
        fn every_isa_quantizes_any_rows_alike(
            x in proptest::collection::vec(-100f32..100.0, BLOCK..=BLOCK * 4),
        ) {
            let whole = x.len() / BLOCK * BLOCK;
            same_on_every_isa(&x[..whole])?;
        }
    }

    #[test]
    fn small_rounding_is_round_half_to_even_at_every_tie_and_step() {
        // every tie (k + 0.5) and every 1/64 step over the range activations
        // are scaled to, and the floats just beside each tie
        for k in -130_000..=130_000 {
            let x = k as f32 / 1024.0;
            assert_eq!(round_small(x), x.round_ties_even() as i32, "{x}");
        }
        for k in -128..128 {
            let tie = k as f32 + 0.5;
            for x in [tie, tie.next_down(), tie.next_up()] {
                assert_eq!(round_small(x), x.round_ties_even() as i32, "{x}");
            }
        }
    }

    proptest! {
        #[test]
        fn small_rounding_matches_the_standard_library(x in -4_000_000f32..4_000_000f32) {
            prop_assert_eq!(round_small(x), x.round_ties_even() as i32);
        }
    }
}
