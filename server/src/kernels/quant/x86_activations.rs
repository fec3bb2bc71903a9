//! The activations' quantizing ([`super::blocks::Activations`]) in AVX-512
//! and AVX2: a 32-block at a time in registers. Written out because the
//! compiler vectorized the portable loop across blocks, gathering each
//! block's values from 32 floats apart (~1.2 ns a value, 6 % of a
//! 16-stream run's time with AVX-512); here a value takes 0.2–0.3 ns on
//! one thread (`cargo bench -p openmodel-server --bench quant`,
//! docs/benchmarks.md).
//!
//! The results are the portable code's bit for bit, through the same
//! operations in the same order: the largest magnitude compared as bits,
//! the scales from it ([`super::blocks::block_scales`]), each value's
//! product with `127 / amax` and then its sum with 1.5·2²³ (two roundings,
//! never fused), the integers' low bytes, and their wrapping sum.

use super::blocks::{BLOCK, MAGIC, block_scales};

/// AVX-512 (F alone): a block is two registers of 16 values.
pub mod avx512 {
    use std::arch::x86_64::*;

    use super::{BLOCK, MAGIC, block_scales};

    /// Quantizes consecutive 32-blocks of `x` into `qs`, `d`, `sum` and `s`
    /// (`d` and `s` not yet rounded to f16), as the portable code does.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn quantize_blocks(
        x: &[f32],
        qs: &mut [i8],
        d: &mut [f32],
        sum: &mut [i32],
        s: &mut [f32],
    ) {
        let magnitude = _mm512_set1_epi32(0x7FFF_FFFF);
        let magic = _mm512_set1_ps(MAGIC);
        let magic_bits = _mm512_set1_epi32(MAGIC.to_bits() as i32);
        let blocks = x.chunks_exact(BLOCK).zip(qs.chunks_exact_mut(BLOCK));
        let numbers = d.iter_mut().zip(sum).zip(s.iter_mut());
        for ((x, q), ((d, sum), s)) in blocks.zip(numbers) {
            // SAFETY: x is 32 floats and q 32 bytes (chunks_exact).
            unsafe {
                let halves = [
                    _mm512_loadu_ps(x.as_ptr()),
                    _mm512_loadu_ps(x.as_ptr().add(16)),
                ];
                let bits = halves.map(|h| _mm512_and_si512(_mm512_castps_si512(h), magnitude));
                let top = _mm512_reduce_max_epu32(_mm512_max_epu32(bits[0], bits[1]));
                let (scale, id) = block_scales(top);
                let id = _mm512_set1_ps(id);
                let r = halves.map(|h| {
                    let shifted = _mm512_add_ps(_mm512_mul_ps(h, id), magic);
                    _mm512_sub_epi32(_mm512_castps_si512(shifted), magic_bits)
                });
                _mm_storeu_si128(q.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(r[0]));
                _mm_storeu_si128(q.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(r[1]));
                let total = _mm512_reduce_add_epi32(_mm512_add_epi32(r[0], r[1]));
                (*d, *sum, *s) = (scale, total, scale * total as f32);
            }
        }
    }
}

/// AVX2: a block is four registers of 8 values.
pub mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, MAGIC, block_scales};

    /// The largest of the 8 unsigned lanes of `v`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn max_lane(v: __m256i) -> u32 {
        let v = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let v = _mm_max_epu32(v, _mm_shuffle_epi32::<0b01_00_11_10>(v));
        let v = _mm_max_epu32(v, _mm_shuffle_epi32::<0b10_11_00_01>(v));
        _mm_cvtsi128_si32(v) as u32
    }

    /// The wrapping sum of the 8 lanes of `v`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn sum_lanes(v: __m256i) -> i32 {
        let v = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0b01_00_11_10>(v));
        let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0b10_11_00_01>(v));
        _mm_cvtsi128_si32(v)
    }

    /// Quantizes consecutive 32-blocks of `x` into `qs`, `d`, `sum` and `s`
    /// (`d` and `s` not yet rounded to f16), as the portable code does.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_blocks(
        x: &[f32],
        qs: &mut [i8],
        d: &mut [f32],
        sum: &mut [i32],
        s: &mut [f32],
    ) {
        let magnitude = _mm256_set1_epi32(0x7FFF_FFFF);
        let low_byte = _mm256_set1_epi32(0xFF);
        let magic = _mm256_set1_ps(MAGIC);
        let magic_bits = _mm256_set1_epi32(MAGIC.to_bits() as i32);
        // The packs below leave each register's two halves' bytes 16
        // apart: this puts the 8 groups of 4 back in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let blocks = x.chunks_exact(BLOCK).zip(qs.chunks_exact_mut(BLOCK));
        let numbers = d.iter_mut().zip(sum).zip(s.iter_mut());
        for ((x, q), ((d, sum), s)) in blocks.zip(numbers) {
            // SAFETY: x is 32 floats and q 32 bytes (chunks_exact).
            unsafe {
                let v: [__m256; 4] =
                    std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
                let bits = v.map(|v| _mm256_and_si256(_mm256_castps_si256(v), magnitude));
                let top = max_lane(_mm256_max_epu32(
                    _mm256_max_epu32(bits[0], bits[1]),
                    _mm256_max_epu32(bits[2], bits[3]),
                ));
                let (scale, id) = block_scales(top);
                let id = _mm256_set1_ps(id);
                let r = v.map(|v| {
                    let shifted = _mm256_add_ps(_mm256_mul_ps(v, id), magic);
                    _mm256_sub_epi32(_mm256_castps_si256(shifted), magic_bits)
                });
                let total = sum_lanes(_mm256_add_epi32(
                    _mm256_add_epi32(r[0], r[1]),
                    _mm256_add_epi32(r[2], r[3]),
                ));
                // Each integer's low byte (0..=255, which the unsigned
                // saturating packs keep as they are): `r as i8`.
                let b = r.map(|r| _mm256_and_si256(r, low_byte));
                let packed = _mm256_packus_epi16(
                    _mm256_packus_epi32(b[0], b[1]),
                    _mm256_packus_epi32(b[2], b[3]),
                );
                let bytes = _mm256_permutevar8x32_epi32(packed, order);
                _mm256_storeu_si256(q.as_mut_ptr().cast(), bytes);
                (*d, *sum, *s) = (scale, total, scale * total as f32);
            }
        }
    }
}
