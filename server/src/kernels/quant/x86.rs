//! The x86-64 tiles of [`super::dot`] with any number of weight rows, one
//! block of one row per 256-bit register: for AVX2 (`vpmaddubsw` +
//! `vpmaddwd`) and for AVX-512 VNNI (`vpdpbusd`), one body for both. The
//! four-row tiles that do most of the work are in [`super::x86_quad`].

use std::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_set1_epi16,
};

/// `acc` plus unsigned × signed bytes summed in fours, eight i32
/// (`vpmaddubsw` saturates pairs at ±32767, never reached here: the
/// activations lie within ±127 and the unsigned side within 128, so a pair
/// is at most 2·128·127).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_maddubs(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
    _mm256_add_epi32(acc, sums)
}

/// `acc` plus unsigned × signed bytes summed in fours, eight i32, exactly.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
fn dot_vnni(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    std::arch::x86_64::_mm256_dpbusd_epi32(acc, u, s)
}

/// The x86-64 tiles, compiled for the target features given, multiplying
/// bytes with `$dot`.
macro_rules! x86_tiles {
    ($module:ident, $features:literal, $dot:path) => {
        pub mod $module {
            use std::arch::x86_64::*;

            use super::super::blocks::{Activations, BLOCK};

            /// The 32 nibbles of the 16 bytes at `p`, one per byte, in
            /// weight order (low halves, then high halves).
            ///
            /// # Safety
            /// `p` must be valid for 16 bytes.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn nibbles(p: *const u8) -> __m256i {
                // SAFETY: the caller's contract.
                let raw = unsafe { _mm_loadu_si128(p.cast()) };
                let both = _mm256_inserti128_si256::<1>(
                    _mm256_castsi128_si256(raw),
                    _mm_srli_epi16::<4>(raw),
                );
                _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
            }

            /// The sum of the eight lanes.
            #[inline]
            #[target_feature(enable = $features)]
            fn hsum(v: __m256) -> f32 {
                let x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
                _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)))
            }

            /// The accumulators' sums into `out`, plus `extra[r][c]`.
            #[inline]
            #[target_feature(enable = $features)]
            fn finish<const R: usize, const C: usize, const N: usize>(
                acc: &[[__m256; C]; R],
                extra: &[[f32; 4]; R],
                out: &mut [f32; N],
            ) {
                for r in 0..R {
                    for c in 0..C {
                        out[r * C + c] = hsum(acc[r][c]) + extra[r][c];
                    }
                }
            }

            /// A tile of 4-bit weights: `Q4_1` if `MIN`, else `Q4_0`.
            ///
            /// # Safety
            /// Every `w[c]` must be valid for `acts.blocks` blocks, and
            /// every `rows[r]` a row of `acts`.
            #[target_feature(enable = $features)]
            pub unsafe fn q4<const R: usize, const C: usize, const N: usize, const MIN: bool>(
                w: [*const u8; C],
                acts: &Activations,
                rows: &[usize; R],
                out: &mut [f32; N],
            ) {
                let (bytes, quants) = if MIN { (20, 4) } else { (18, 2) };
                let nb = acts.blocks;
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                let mut mins = [_mm_setzero_ps(); R];
                let mut scales = [0f32; 8];
                let mut q = [_mm256_setzero_si256(); C];
                for b in 0..nb {
                    // f16 d (and m) of the C blocks, in one conversion.
                    let mut head = [0u32; 4];
                    for c in 0..C {
                        // SAFETY: block b of row c is inside it (contract).
                        unsafe {
                            let p = w[c].add(b * bytes);
                            head[c] = if MIN {
                                p.cast::<u32>().read_unaligned()
                            } else {
                                u32::from(p.cast::<u16>().read_unaligned())
                            };
                            q[c] = nibbles(p.add(quants));
                        }
                    }
                    // SAFETY: `head` is 16 bytes.
                    let dm = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(head.as_ptr().cast()) });
                    let m = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(
                        dm,
                        _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7),
                    ));
                    for r in 0..R {
                        let i = rows[r] * nb + b;
                        // SAFETY: block i of the activations exists (contract).
                        let (y, dx, sum, s) = unsafe {
                            (
                                _mm256_loadu_si256(acts.qs.as_ptr().add(i * BLOCK).cast()),
                                *acts.d.get_unchecked(i),
                                *acts.sum.get_unchecked(i),
                                *acts.s.get_unchecked(i),
                            )
                        };
                        // d_w·d_x for the C weight rows at once, then
                        // broadcast from memory (a load, not a shuffle).
                        let ds = _mm256_mul_ps(dm, _mm256_set1_ps(dx));
                        // SAFETY: `scales` is 8 floats.
                        unsafe { _mm256_storeu_ps(scales.as_mut_ptr(), ds) };
                        // Σ(q−8)·y: each of the 8 lanes starts at −Σy.
                        let start = if MIN {
                            _mm256_setzero_si256()
                        } else {
                            _mm256_set1_epi32(-sum)
                        };
                        if MIN {
                            mins[r] = _mm_fmadd_ps(m, _mm_set1_ps(s), mins[r]);
                        }
                        for c in 0..C {
                            let v = _mm256_cvtepi32_ps($dot(start, q[c], y));
                            acc[r][c] =
                                _mm256_fmadd_ps(v, _mm256_set1_ps(scales[2 * c]), acc[r][c]);
                        }
                    }
                }
                let mut extra = [[0f32; 4]; R];
                for r in 0..R {
                    // SAFETY: `extra[r]` is 4 floats.
                    unsafe { _mm_storeu_ps(extra[r].as_mut_ptr(), mins[r]) };
                }
                finish(&acc, &extra, out);
            }

            /// A tile of `Q8_0` weights.
            ///
            /// # Safety
            /// As for [`q4`].
            #[target_feature(enable = $features)]
            pub unsafe fn q8<const R: usize, const C: usize, const N: usize>(
                w: [*const u8; C],
                acts: &Activations,
                rows: &[usize; R],
                out: &mut [f32; N],
            ) {
                let nb = acts.blocks;
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                let mut scales = [0f32; 4];
                let mut signed = [_mm256_setzero_si256(); C];
                let mut magnitude = [_mm256_setzero_si256(); C];
                let zero = _mm256_setzero_si256();
                for b in 0..nb {
                    let mut head = [0u16; 8];
                    for c in 0..C {
                        // SAFETY: block b of row c is inside it (contract).
                        unsafe {
                            let p = w[c].add(b * 34);
                            head[c] = p.cast::<u16>().read_unaligned();
                            signed[c] = _mm256_loadu_si256(p.add(2).cast());
                        }
                        magnitude[c] = _mm256_sign_epi8(signed[c], signed[c]);
                    }
                    // SAFETY: `head` is 16 bytes.
                    let dw = _mm_cvtph_ps(unsafe { _mm_loadu_si128(head.as_ptr().cast()) });

                    for r in 0..R {
                        let i = rows[r] * nb + b;
                        // SAFETY: block i of the activations exists (contract).
                        let (y, dx) = unsafe {
                            (
                                _mm256_loadu_si256(acts.qs.as_ptr().add(i * BLOCK).cast()),
                                *acts.d.get_unchecked(i),
                            )
                        };
                        let ds = _mm_mul_ps(dw, _mm_set1_ps(dx));
                        // SAFETY: `scales` is 4 floats.
                        unsafe { _mm_storeu_ps(scales.as_mut_ptr(), ds) };
                        for c in 0..C {
                            let v = $dot(zero, magnitude[c], _mm256_sign_epi8(y, signed[c]));
                            let v = _mm256_cvtepi32_ps(v);
                            acc[r][c] = _mm256_fmadd_ps(v, _mm256_set1_ps(scales[c]), acc[r][c]);
                        }
                    }
                }
                finish(&acc, &[[0f32; 4]; R], out);
            }
        }
    };
}

x86_tiles!(avx2, "avx2,fma,f16c", super::dot_maddubs);
x86_tiles!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni",
    super::dot_vnni
);
