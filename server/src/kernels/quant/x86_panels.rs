//! The x86-64 kernels: `R` activation rows against one panel of 16 weight
//! rows ([`super::panels`]), each activation row's 16 results in the 16
//! lanes of one register (or two halves), so that nothing is summed across
//! lanes. A block column's weights are unpacked once for the `R` rows; an
//! activation block's 4-byte groups are broadcast from memory.
//!
//! Per block the products are summed in integers and scaled in f32:
//! `d_w·d_x·Σq_w·q_x`, plus `m_w·s_x` for `Q4_1`, minus `8·Σq_x` (in
//! integers, before scaling) for `Q4_0`.

use super::blocks::QuantFormat;
use super::panels::{ColumnLayout, column_layout};

/// The column layout of the 4-bit format: `Q4_1` if `min`, else `Q4_0`.
const fn four_bit(min: bool) -> ColumnLayout {
    column_layout(if min {
        QuantFormat::Q4_1
    } else {
        QuantFormat::Q4_0
    })
}

/// The 4 activations `y[at..at + 4]` as one 32-bit value, to broadcast.
///
/// # Safety
/// `y[at..at + 4]` must be readable.
#[inline(always)]
unsafe fn group(y: *const i8, at: usize) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { y.add(at).cast::<i32>().read_unaligned() }
}

/// AVX-512 with VNNI: one `vpdpbusd` multiplies the same 4 weights of the
/// 16 rows with 4 broadcast activations. It takes unsigned weights: the
/// nibbles are, and `Q8_0`'s bytes are offset by 128 (the sign bit
/// flipped), taken back out with `128·Σq_x`.
pub mod vnni {
    use std::arch::x86_64::*;

    use super::super::blocks::{Activations, BLOCK, QuantFormat};
    use super::super::panels::{GROUP, PANEL, column_layout};

    /// The 4 activations of `y[at..at + 4]` in every 32-bit lane.
    ///
    /// # Safety
    /// `y[at..at + 4]` must be readable.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn broadcast(y: *const i8, at: usize) -> __m512i {
        // SAFETY: the caller's contract.
        _mm512_set1_epi32(unsafe { super::group(y, at) })
    }

    /// `R` activation rows × one panel of 4-bit weights: `Q4_1` if `MIN`,
    /// else `Q4_0`.
    ///
    /// # Safety
    /// `panel` must hold `acts.blocks` block columns, and every `rows[r]`
    /// be a row of `acts`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    pub unsafe fn q4<const R: usize, const MIN: bool>(
        panel: *const u8,
        acts: &Activations,
        rows: &[usize; R],
        out: &mut [[f32; PANEL]; R],
    ) {
        let layout = super::four_bit(MIN);
        let nb = acts.blocks;
        let nibble = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); R];
        let mut low = [_mm512_setzero_si512(); 4];
        let mut high = [_mm512_setzero_si512(); 4];
        for b in 0..nb {
            // SAFETY: block column b is inside the panel (contract).
            let (d, m) = unsafe {
                let column = panel.add(b * layout.bytes);
                for g in 0..4 {
                    let q = _mm512_loadu_si512(column.add(layout.qs + g * GROUP).cast());
                    low[g] = _mm512_and_si512(q, nibble);
                    high[g] = _mm512_and_si512(_mm512_srli_epi16::<4>(q), nibble);
                }
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(column.cast()));
                let m = match layout.m {
                    Some(at) if MIN => _mm512_cvtph_ps(_mm256_loadu_si256(column.add(at).cast())),
                    _ => _mm512_setzero_ps(),
                };
                (d, m)
            };
            for r in 0..R {
                let i = rows[r] * nb + b;
                // SAFETY: block i of the activations exists (contract).
                let (y, dx, sum, s) = unsafe {
                    (
                        acts.qs.as_ptr().add(i * BLOCK),
                        *acts.d.get_unchecked(i),
                        *acts.sum.get_unchecked(i),
                        *acts.s.get_unchecked(i),
                    )
                };
                // Two chains of products, so that each waits less.
                let mut v_low = if MIN {
                    _mm512_setzero_si512()
                } else {
                    _mm512_set1_epi32(-8 * sum)
                };
                let mut v_high = _mm512_setzero_si512();
                for g in 0..4 {
                    // SAFETY: y is a whole block of 32 activations.
                    unsafe {
                        v_low = _mm512_dpbusd_epi32(v_low, low[g], broadcast(y, 4 * g));
                        v_high = _mm512_dpbusd_epi32(v_high, high[g], broadcast(y, 16 + 4 * g));
                    }
                }
                let v = _mm512_add_epi32(v_low, v_high);
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(dx));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), scale, acc[r]);
                if MIN {
                    acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(s), acc[r]);
                }
            }
        }
        for r in 0..R {
            // SAFETY: out[r] is 16 floats.
            unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]) };
        }
    }

    /// `R` activation rows × one panel of `Q8_0` weights.
    ///
    /// # Safety
    /// As for [`q4`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    pub unsafe fn q8<const R: usize>(
        panel: *const u8,
        acts: &Activations,
        rows: &[usize; R],
        out: &mut [[f32; PANEL]; R],
    ) {
        let layout = column_layout(QuantFormat::Q8_0);
        let nb = acts.blocks;
        let flip = _mm512_set1_epi8(i8::MIN);
        let mut acc = [_mm512_setzero_ps(); R];
        let mut unsigned = [_mm512_setzero_si512(); 8];
        for b in 0..nb {
            // SAFETY: block column b is inside the panel (contract).
            let d = unsafe {
                let column = panel.add(b * layout.bytes);
                for (g, u) in unsigned.iter_mut().enumerate() {
                    let q = _mm512_loadu_si512(column.add(layout.qs + g * GROUP).cast());
                    *u = _mm512_xor_si512(q, flip);
                }
                _mm512_cvtph_ps(_mm256_loadu_si256(column.cast()))
            };
            for r in 0..R {
                let i = rows[r] * nb + b;
                // SAFETY: block i of the activations exists (contract).
                let (y, dx, sum) = unsafe {
                    (
                        acts.qs.as_ptr().add(i * BLOCK),
                        *acts.d.get_unchecked(i),
                        *acts.sum.get_unchecked(i),
                    )
                };
                let mut v = [_mm512_set1_epi32(-128 * sum), _mm512_setzero_si512()];
                for (g, u) in unsigned.iter().enumerate() {
                    // SAFETY: y is a whole block of 32 activations.
                    v[g % 2] = _mm512_dpbusd_epi32(v[g % 2], *u, unsafe { broadcast(y, 4 * g) });
                }
                let v = _mm512_add_epi32(v[0], v[1]);
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(dx));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), scale, acc[r]);
            }
        }
        for r in 0..R {
            // SAFETY: out[r] is 16 floats.
            unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]) };
        }
    }
}

/// AVX2 (with FMA and F16C): the panel as two halves of 8 rows in 256-bit
/// registers, multiplied with `vpmaddubsw` (pairs of products added in
/// i16) and summed to i32 with `vpmaddwd`. A 4-bit block's 16 products per
/// i16 lane stay under 16·15·127 = 30,480, so all of them add up in i16
/// before one `vpmaddwd`; `Q8_0`'s weights lend their sign to the
/// activations (`vpsignb`) and each group goes to i32 on its own.
pub mod avx2 {
    use std::arch::x86_64::*;

    use super::super::blocks::{Activations, BLOCK, QuantFormat};
    use super::super::panels::{GROUP, PANEL, column_layout};

    /// Rows per half panel.
    const HALF: usize = PANEL / 2;

    /// The 4 activations of `y[at..at + 4]` in every 32-bit lane.
    ///
    /// # Safety
    /// `y[at..at + 4]` must be readable.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn broadcast(y: *const i8, at: usize) -> __m256i {
        // SAFETY: the caller's contract.
        _mm256_set1_epi32(unsafe { super::group(y, at) })
    }

    /// `R` activation rows × one panel of 4-bit weights: `Q4_1` if `MIN`,
    /// else `Q4_0`. A block's groups are unpacked one at a time, each used
    /// by the `R` rows at once, so that the `R` rows' sums and the unpacked
    /// group fit the 16 registers (the block's 8 unpacked registers held
    /// at once spilled to the stack).
    ///
    /// # Safety
    /// `panel` must hold `acts.blocks` block columns, and every `rows[r]`
    /// be a row of `acts`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4<const R: usize, const MIN: bool>(
        panel: *const u8,
        acts: &Activations,
        rows: &[usize; R],
        out: &mut [[f32; PANEL]; R],
    ) {
        let layout = super::four_bit(MIN);
        let nb = acts.blocks;
        let nibble = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        for half in 0..2 {
            let mut acc = [_mm256_setzero_ps(); R];
            for b in 0..nb {
                let column = panel.wrapping_add(b * layout.bytes);
                let blocks: [usize; R] = std::array::from_fn(|r| rows[r] * nb + b);
                // SAFETY: block blocks[r] of the activations exists (contract).
                let ys = blocks.map(|i| unsafe { acts.qs.as_ptr().add(i * BLOCK) });
                let mut products = [_mm256_setzero_si256(); R];
                for g in 0..4 {
                    // SAFETY: block column b is inside the panel, and each
                    // ys[r] is a whole block of 32 activations (contract).
                    unsafe {
                        let at = layout.qs + g * GROUP + half * 4 * HALF;
                        let q = _mm256_loadu_si256(column.add(at).cast());
                        let low = _mm256_and_si256(q, nibble);
                        let high = _mm256_and_si256(_mm256_srli_epi16::<4>(q), nibble);
                        for r in 0..R {
                            let y_low = _mm256_maddubs_epi16(low, broadcast(ys[r], 4 * g));
                            let y_high = _mm256_maddubs_epi16(high, broadcast(ys[r], 16 + 4 * g));
                            products[r] =
                                _mm256_add_epi16(products[r], _mm256_add_epi16(y_low, y_high));
                        }
                    }
                }
                // SAFETY: as above.
                let (d, m) = unsafe {
                    let scales = |at: usize| {
                        _mm256_cvtph_ps(_mm_loadu_si128(column.add(at + 2 * half * HALF).cast()))
                    };
                    let m = match layout.m {
                        Some(at) if MIN => scales(at),
                        _ => _mm256_setzero_ps(),
                    };
                    (scales(0), m)
                };
                for r in 0..R {
                    let i = blocks[r];
                    // SAFETY: block i of the activations exists (contract).
                    let (dx, sum, s) = unsafe {
                        (
                            *acts.d.get_unchecked(i),
                            *acts.sum.get_unchecked(i),
                            *acts.s.get_unchecked(i),
                        )
                    };
                    let mut v = _mm256_madd_epi16(products[r], ones);
                    if !MIN {
                        v = _mm256_add_epi32(v, _mm256_set1_epi32(-8 * sum));
                    }
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(dx));
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), scale, acc[r]);
                    if MIN {
                        acc[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(s), acc[r]);
                    }
                }
            }
            for r in 0..R {
                // SAFETY: out[r][8·half..] is 8 floats.
                unsafe { _mm256_storeu_ps(out[r].as_mut_ptr().add(half * HALF), acc[r]) };
            }
        }
    }

    /// `R` activation rows × one panel of `Q8_0` weights, a group at a
    /// time for the `R` rows as in [`q4`].
    ///
    /// # Safety
    /// As for [`q4`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8<const R: usize>(
        panel: *const u8,
        acts: &Activations,
        rows: &[usize; R],
        out: &mut [[f32; PANEL]; R],
    ) {
        let layout = column_layout(QuantFormat::Q8_0);
        let nb = acts.blocks;
        let ones = _mm256_set1_epi16(1);
        for half in 0..2 {
            let mut acc = [_mm256_setzero_ps(); R];
            for b in 0..nb {
                let column = panel.wrapping_add(b * layout.bytes);
                let blocks: [usize; R] = std::array::from_fn(|r| rows[r] * nb + b);
                // SAFETY: block blocks[r] of the activations exists (contract).
                let ys = blocks.map(|i| unsafe { acts.qs.as_ptr().add(i * BLOCK) });
                let mut v = [_mm256_setzero_si256(); R];
                for g in 0..8 {
                    // SAFETY: block column b is inside the panel, and each
                    // ys[r] is a whole block of 32 activations (contract).
                    unsafe {
                        let at = layout.qs + g * GROUP + half * 4 * HALF;
                        let signed = _mm256_loadu_si256(column.add(at).cast());
                        let magnitude = _mm256_sign_epi8(signed, signed);
                        for r in 0..R {
                            let y = _mm256_sign_epi8(broadcast(ys[r], 4 * g), signed);
                            let pairs = _mm256_maddubs_epi16(magnitude, y);
                            v[r] = _mm256_add_epi32(v[r], _mm256_madd_epi16(pairs, ones));
                        }
                    }
                }
                // SAFETY: as above.
                let d =
                    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(column.add(2 * half * HALF).cast())) };
                for r in 0..R {
                    // SAFETY: block blocks[r] of the activations exists (contract).
                    let dx = unsafe { *acts.d.get_unchecked(blocks[r]) };
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(dx));
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v[r]), scale, acc[r]);
                }
            }
            for r in 0..R {
                // SAFETY: out[r][8·half..] is 8 floats.
                unsafe { _mm256_storeu_ps(out[r].as_mut_ptr().add(half * HALF), acc[r]) };
            }
        }
    }
}
