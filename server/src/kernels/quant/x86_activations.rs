//! The activations' quantizing ([`super::blocks::Activations`]) in AVX2,
//! for the AVX2 and AVX-512 levels: a 32-block at a time in four
//! registers. Written out because the compiler vectorized the portable
//! loop across blocks, gathering each block's values from 32 floats apart
//! (~1.2 ns a value, 6 % of a 16-stream run's time with AVX-512); here a
//! value takes 0.23 ns on one thread of a Zen 4 (`cargo bench -p
//! openmodel-server --bench quant`, docs/benchmarks.md), where the same in
//! AVX-512 registers took 0.29 (its 16-lane reductions and `vpmovdb` cost
//! more than they save), so there is no AVX-512 version.
//!
//! The results are the portable code's bit for bit, through the same
//! operations in the same order: the largest magnitude compared as bits,
//! the scales from it ([`super::blocks::block_scales`]), each value's
//! product with `127 / amax` and then its sum with 1.5·2²³ (two roundings,
//! never fused), the integers' low bytes, and their wrapping sum.

use std::arch::x86_64::*;

use super::blocks::{MAGIC, Numbers, block_scales, each_block};

/// The 8 lanes of `v` folded with `op` (a lane-wise maximum or sum),
/// halves first.
#[inline]
#[target_feature(enable = "avx2")]
fn fold_lanes(v: __m256i, op: impl Fn(__m128i, __m128i) -> __m128i) -> i32 {
    let v = op(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let v = op(v, _mm_shuffle_epi32::<0b01_00_11_10>(v));
    let v = op(v, _mm_shuffle_epi32::<0b10_11_00_01>(v));
    _mm_cvtsi128_si32(v)
}

/// Quantizes consecutive 32-blocks of `x` into `qs` and `numbers` (`d`
/// and `s` not yet rounded to f16), as the portable code does.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_blocks(x: &[f32], qs: &mut [i8], numbers: Numbers<'_>) {
    let magnitude = _mm256_set1_epi32(0x7FFF_FFFF);
    let low_byte = _mm256_set1_epi32(0xFF);
    let magic = _mm256_set1_ps(MAGIC);
    let magic_bits = _mm256_set1_epi32(MAGIC.to_bits() as i32);
    // The packs below leave each register's two halves' bytes 16
    // apart: this puts the 8 groups of 4 back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    each_block(x, qs, numbers, |x, q| {
        // SAFETY: x is 32 floats and q 32 bytes (whole blocks).
        unsafe {
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
            let bits = v.map(|v| _mm256_and_si256(_mm256_castps_si256(v), magnitude));
            let top = fold_lanes(
                _mm256_max_epu32(
                    _mm256_max_epu32(bits[0], bits[1]),
                    _mm256_max_epu32(bits[2], bits[3]),
                ),
                |a, b| _mm_max_epu32(a, b),
            ) as u32;
            let (scale, id) = block_scales(top);
            let id = _mm256_set1_ps(id);
            let r = v.map(|v| {
                let shifted = _mm256_add_ps(_mm256_mul_ps(v, id), magic);
                _mm256_sub_epi32(_mm256_castps_si256(shifted), magic_bits)
            });
            let total = fold_lanes(
                _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3])),
                |a, b| _mm_add_epi32(a, b),
            );
            // Each integer's low byte (0..=255, which the unsigned
            // saturating packs keep as they are): `r as i8`.
            let b = r.map(|r| _mm256_and_si256(r, low_byte));
            let packed = _mm256_packus_epi16(
                _mm256_packus_epi32(b[0], b[1]),
                _mm256_packus_epi32(b[2], b[3]),
            );
            let bytes = _mm256_permutevar8x32_epi32(packed, order);
            _mm256_storeu_si256(q.as_mut_ptr().cast(), bytes);
            (scale, total)
        }
    });
}
