//! The x86-64 tiles of four weight rows, which do most of the work: the
//! same block of the four rows shares registers, so that its unpacking and
//! the activations' loads serve all four rows.

/// 4-bit tiles of four weight rows in 512-bit registers (AVX-512 VNNI):
/// one register holds the same block of the four rows, 16 nibble bytes
/// each, so that one `vpdpbusd` multiplies the low nibbles of all four with
/// the block's first 16 activations (broadcast to the four 128-bit lanes)
/// and a second the high nibbles with the last 16. Each row then sums in
/// four i32 lanes, and the block's unpacking serves all four rows.
pub mod vnni512 {
    use std::arch::x86_64::*;

    use super::super::blocks::{Activations, BLOCK};

    /// A tile of `R` activation rows × 4 weight rows of 4-bit weights:
    /// `Q4_1` if `MIN`, else `Q4_0`.
    ///
    /// # Safety
    /// Every `w[c]` must be valid for `acts.blocks` blocks, and every
    /// `rows[r]` a row of `acts`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    pub unsafe fn q4<const R: usize, const N: usize, const MIN: bool>(
        w: [*const u8; 4],
        acts: &Activations,
        rows: &[usize; R],
        out: &mut [f32; N],
    ) {
        let (bytes, quants) = if MIN { (20, 4) } else { (18, 2) };
        let nb = acts.blocks;
        let mut acc = [_mm512_setzero_ps(); R];
        let mut mins = [_mm_setzero_ps(); R];
        let nibble = _mm512_set1_epi8(0x0F);
        // d of row c (lane 2c of the converted heads) to lanes 4c..4c+4.
        let spread = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
        let odd = _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7);
        for b in 0..nb {
            let mut head = [0u32; 4];
            // SAFETY: block b of each row is inside it (contract).
            let q = unsafe {
                let p = w.map(|row| row.add(b * bytes));
                for (h, p) in head.iter_mut().zip(p) {
                    *h = if MIN {
                        p.cast::<u32>().read_unaligned()
                    } else {
                        u32::from(p.cast::<u16>().read_unaligned())
                    };
                }
                let q01 = _mm256_loadu2_m128i(p[1].add(quants).cast(), p[0].add(quants).cast());
                let q23 = _mm256_loadu2_m128i(p[3].add(quants).cast(), p[2].add(quants).cast());
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q01), q23)
            };
            let low = _mm512_and_si512(q, nibble);
            let high = _mm512_and_si512(_mm512_srli_epi16::<4>(q), nibble);
            // SAFETY: `head` is 16 bytes.
            let dm = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(head.as_ptr().cast()) });
            let dw = _mm512_permutexvar_ps(spread, _mm512_castps256_ps512(dm));
            let m = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(dm, odd));
            for r in 0..R {
                let i = rows[r] * nb + b;
                // SAFETY: block i of the activations exists (contract).
                let (y_low, y_high, dx, sum, s) = unsafe {
                    let y = acts.qs.as_ptr().add(i * BLOCK);
                    (
                        _mm512_broadcast_i32x4(_mm_loadu_si128(y.cast())),
                        _mm512_broadcast_i32x4(_mm_loadu_si128(y.add(16).cast())),
                        *acts.d.get_unchecked(i),
                        *acts.sum.get_unchecked(i),
                        *acts.s.get_unchecked(i),
                    )
                };
                // Σ(q−8)·y: each of a row's 4 lanes starts at −2·Σy.
                let start = if MIN {
                    _mm512_setzero_si512()
                } else {
                    _mm512_set1_epi32(-2 * sum)
                };
                let v = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(start, low, y_low), high, y_high);
                let d = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), d, acc[r]);
                if MIN {
                    mins[r] = _mm_fmadd_ps(m, _mm_set1_ps(s), mins[r]);
                }
            }
        }
        for r in 0..R {
            let (mut lanes, mut extra) = ([0f32; 16], [0f32; 4]);
            // SAFETY: `lanes` is 16 floats, `extra` 4.
            unsafe {
                _mm512_storeu_ps(lanes.as_mut_ptr(), acc[r]);
                _mm_storeu_ps(extra.as_mut_ptr(), mins[r]);
            }
            for c in 0..4 {
                out[r * 4 + c] = lanes[4 * c..][..4].iter().sum::<f32>() + extra[c];
            }
        }
    }
    /// A tile of `R` activation rows × 4 weight rows of `Q8_0` weights,
    /// two rows' blocks per register. `vpdpbusd` wants unsigned weights:
    /// it multiplies `q + 128` (the sign bit flipped), and each of a row's
    /// 8 lanes starts at `−16·Σy` to take the `128·Σy` back out.
    ///
    /// # Safety
    /// As for [`q4`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    pub unsafe fn q8<const R: usize, const N: usize>(
        w: [*const u8; 4],
        acts: &Activations,
        rows: &[usize; R],
        out: &mut [f32; N],
    ) {
        let nb = acts.blocks;
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let flip = _mm512_set1_epi8(i8::MIN);
        // d of rows 2h, 2h+1 to 8 lanes each.
        let spread = [
            _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
            _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3),
        ];
        let mut unsigned = [_mm512_setzero_si512(); 2];
        for b in 0..nb {
            let mut head = [0u16; 8];
            // SAFETY: block b of each row is inside it (contract).
            unsafe {
                let p = w.map(|row| row.add(b * 34));
                for (h, p) in head.iter_mut().zip(p) {
                    *h = p.cast::<u16>().read_unaligned();
                }
                for h in 0..2 {
                    let first = _mm256_loadu_si256(p[2 * h].add(2).cast());
                    let second = _mm256_loadu_si256(p[2 * h + 1].add(2).cast());
                    let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(first), second);
                    unsigned[h] = _mm512_xor_si512(q, flip);
                }
            }
            // SAFETY: `head` is 16 bytes.
            let d = _mm_cvtph_ps(unsafe { _mm_loadu_si128(head.as_ptr().cast()) });
            let dw = [
                _mm512_permutexvar_ps(spread[0], _mm512_castps128_ps512(d)),
                _mm512_permutexvar_ps(spread[1], _mm512_castps128_ps512(d)),
            ];
            for r in 0..R {
                let i = rows[r] * nb + b;
                // SAFETY: block i of the activations exists (contract).
                let (y, dx, sum) = unsafe {
                    (
                        _mm512_broadcast_i64x4(_mm256_loadu_si256(
                            acts.qs.as_ptr().add(i * BLOCK).cast(),
                        )),
                        *acts.d.get_unchecked(i),
                        *acts.sum.get_unchecked(i),
                    )
                };
                let start = _mm512_set1_epi32(-16 * sum);
                let dx = _mm512_set1_ps(dx);
                for h in 0..2 {
                    let v = _mm512_dpbusd_epi32(start, unsigned[h], y);
                    let d = _mm512_mul_ps(dw[h], dx);
                    acc[r][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), d, acc[r][h]);
                }
            }
        }
        for r in 0..R {
            let mut lanes = [0f32; 32];
            // SAFETY: `lanes` is 32 floats.
            unsafe {
                _mm512_storeu_ps(lanes.as_mut_ptr(), acc[r][0]);
                _mm512_storeu_ps(lanes.as_mut_ptr().add(16), acc[r][1]);
            }
            for c in 0..4 {
                out[r * 4 + c] = lanes[8 * c..][..8].iter().sum::<f32>();
            }
        }
    }
}

/// 4-bit tiles of four weight rows in pairs of 256-bit registers (AVX2):
/// as [`vnni512`], two rows per register, multiplied with
/// `vpmaddubsw` (the low and high nibbles' products added in i16: at most
/// 2·(2·15·127), no saturation) and summed to i32 with `vpmaddwd`.
pub mod avx2x4 {
    use std::arch::x86_64::*;

    use super::super::blocks::{Activations, BLOCK};

    /// A tile of `R` activation rows × 4 weight rows of 4-bit weights:
    /// `Q4_1` if `MIN`, else `Q4_0`.
    ///
    /// # Safety
    /// Every `w[c]` must be valid for `acts.blocks` blocks, and every
    /// `rows[r]` a row of `acts`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4<const R: usize, const N: usize, const MIN: bool>(
        w: [*const u8; 4],
        acts: &Activations,
        rows: &[usize; R],
        out: &mut [f32; N],
    ) {
        let (bytes, quants) = if MIN { (20, 4) } else { (18, 2) };
        let nb = acts.blocks;
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let mut mins = [_mm_setzero_ps(); R];
        let nibble = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        // d of rows 2h, 2h+1 (lanes 4h, 4h+2 of the heads) to 4 lanes each.
        let spread = [
            _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2),
            _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6),
        ];
        let odd = _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7);
        let mut low = [_mm256_setzero_si256(); 2];
        let mut high = [_mm256_setzero_si256(); 2];
        for b in 0..nb {
            let mut head = [0u32; 4];
            // SAFETY: block b of each row is inside it (contract).
            unsafe {
                let p = w.map(|row| row.add(b * bytes));
                for (h, p) in head.iter_mut().zip(p) {
                    *h = if MIN {
                        p.cast::<u32>().read_unaligned()
                    } else {
                        u32::from(p.cast::<u16>().read_unaligned())
                    };
                }
                for h in 0..2 {
                    let q = _mm256_loadu2_m128i(
                        p[2 * h + 1].add(quants).cast(),
                        p[2 * h].add(quants).cast(),
                    );
                    low[h] = _mm256_and_si256(q, nibble);
                    high[h] = _mm256_and_si256(_mm256_srli_epi16::<4>(q), nibble);
                }
            }
            // SAFETY: `head` is 16 bytes.
            let dm = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(head.as_ptr().cast()) });
            let dw = [
                _mm256_permutevar8x32_ps(dm, spread[0]),
                _mm256_permutevar8x32_ps(dm, spread[1]),
            ];
            let m = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(dm, odd));
            for r in 0..R {
                let i = rows[r] * nb + b;
                // SAFETY: block i of the activations exists (contract).
                let (y_low, y_high, dx, sum, s) = unsafe {
                    let y = acts.qs.as_ptr().add(i * BLOCK);
                    (
                        _mm256_broadcastsi128_si256(_mm_loadu_si128(y.cast())),
                        _mm256_broadcastsi128_si256(_mm_loadu_si128(y.add(16).cast())),
                        *acts.d.get_unchecked(i),
                        *acts.sum.get_unchecked(i),
                        *acts.s.get_unchecked(i),
                    )
                };
                // Σ(q−8)·y: each of a row's 4 lanes gives up 2·Σy.
                let start = _mm256_set1_epi32(if MIN { 0 } else { -2 * sum });
                let dx = _mm256_set1_ps(dx);
                for h in 0..2 {
                    let products = _mm256_add_epi16(
                        _mm256_maddubs_epi16(low[h], y_low),
                        _mm256_maddubs_epi16(high[h], y_high),
                    );
                    let v = _mm256_add_epi32(start, _mm256_madd_epi16(products, ones));
                    let d = _mm256_mul_ps(dw[h], dx);
                    acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), d, acc[r][h]);
                }
                if MIN {
                    mins[r] = _mm_fmadd_ps(m, _mm_set1_ps(s), mins[r]);
                }
            }
        }
        for r in 0..R {
            let (mut lanes, mut extra) = ([0f32; 16], [0f32; 4]);
            // SAFETY: `lanes` is 16 floats, `extra` 4.
            unsafe {
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][0]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[r][1]);
                _mm_storeu_ps(extra.as_mut_ptr(), mins[r]);
            }
            for c in 0..4 {
                out[r * 4 + c] = lanes[4 * c..][..4].iter().sum::<f32>() + extra[c];
            }
        }
    }
}
