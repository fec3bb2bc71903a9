//! The AVX2 kernels for a whole tile of 4 activation rows, in assembly:
//! the same instructions as [`super::x86_panels::avx2`]'s in the same
//! arithmetic order (so the same results, bit for bit), but scheduled by
//! hand. Both compilers we tried (rustc's LLVM and GCC) spill these loops
//! to the stack and hoist their loads until they wait on themselves: their
//! 16 registers are exactly the tile's 4 sums of products, 4 float
//! accumulators, one group of weights, 2 constants and the temporaries. On
//! the AVX2 EPYC of `docs/benchmarks.md` the 4-bit loop alone (in cache,
//! one core) ran at 30.4 multiply-adds per cycle against the intrinsics'
//! 22.7.
//!
//! Per block column and half panel (8 weight rows), group by group (4
//! quant bytes of the 8 rows), the group's weights are made ready once and
//! multiplied with each activation row's 4 broadcast activations
//! (`vpmaddubsw`, pairs of products added in i16):
//! - 4-bit formats: the low and high nibbles, unsigned; the pair sums add
//!   up in i16 over the block (16 products of at most 15·127 per lane: no
//!   overflow), then go to i32 (`vpmaddwd` with ones), minus `8·Σq_x` for
//!   `Q4_0`, to f32, times `d_w·d_x`, plus `m_w·s_x` for `Q4_1`;
//! - `Q8_0`: the magnitudes of the weights, whose signs go to the
//!   activations (`vpsignb`), each group to i32 on its own; then to f32,
//!   times `d_w·d_x`.

use std::arch::asm;
use std::arch::x86_64::*;

use super::blocks::{Activations, BLOCK, QuantFormat};
use super::panels::{PANEL, column_layout};

/// Rows per half panel.
const HALF: usize = PANEL / 2;

/// `$row!` for each of the 4 rows: its activations' pointer and its sums'
/// register.
macro_rules! each_row {
    ($row:ident, $g:literal) => {
        concat!(
            $row!($g, "y0", "ymm8"),
            $row!($g, "y1", "ymm9"),
            $row!($g, "y2", "ymm10"),
            $row!($g, "y3", "ymm11"),
        )
    };
}

/// `$scale!` for each of the 4 rows: its sums, its `d_x` pointer and its
/// accumulator.
macro_rules! each_scale {
    ($scale:ident) => {
        concat!(
            $scale!("ymm8", "d0", "ymm0"),
            $scale!("ymm9", "d1", "ymm1"),
            $scale!("ymm10", "d2", "ymm2"),
            $scale!("ymm11", "d3", "ymm3"),
        )
    };
}

/// The 4 rows' sums set to zero.
macro_rules! zero_sums {
    () => {
        concat!(
            "vpxor ymm8, ymm8, ymm8\n",
            "vpxor ymm9, ymm9, ymm9\n",
            "vpxor ymm10, ymm10, ymm10\n",
            "vpxor ymm11, ymm11, ymm11\n",
        )
    };
}

/// Into `$reg`, the 4 activations at `$at$g` bytes from row pointer `$y`
/// in every 32-bit lane.
macro_rules! broadcast {
    ($reg:literal, $y:literal, $at:literal, $g:literal) => {
        concat!(
            "vpbroadcastd ",
            $reg,
            ", dword ptr [{",
            $y,
            "} + ",
            $at,
            $g,
            "]\n"
        )
    };
}

/// One activation row's products with an unpacked group `$g` (low nibbles
/// in ymm12, high in ymm13), added to its sums `$p`.
macro_rules! row {
    ($g:literal, $y:literal, $p:literal) => {
        concat!(
            broadcast!("ymm4", $y, "4*", $g),
            "vpmaddubsw ymm4, ymm12, ymm4\n",
            broadcast!("ymm5", $y, "16 + 4*", $g),
            "vpmaddubsw ymm5, ymm13, ymm5\n",
            "vpaddw ymm5, ymm4, ymm5\n",
            "vpaddw ",
            $p,
            ", ",
            $p,
            ", ymm5\n",
        )
    };
}

/// Group `$g` of the block column (quant bytes from `$qs`): unpacked once,
/// then multiplied with the 4 rows.
macro_rules! group {
    ($qs:literal, $g:literal) => {
        concat!(
            "vmovdqu ymm12, ymmword ptr [{col} + 2*{h} + ",
            $qs,
            " + 64*",
            $g,
            "]\n",
            "vpsrlw ymm13, ymm12, 4\n",
            "vpand ymm12, ymm12, ymm15\n",
            "vpand ymm13, ymm13, ymm15\n",
            each_row!(row, $g),
        )
    };
}

/// The block column's integer sums of the 4 rows into ymm8..ymm11.
macro_rules! products {
    ($qs:literal) => {
        concat!(
            zero_sums!(),
            group!($qs, 0),
            group!($qs, 1),
            group!($qs, 2),
            group!($qs, 3),
        )
    };
}

/// `acc += ymm4·(d·d_x)`: the row's sums (as f32, in ymm4) times the
/// weights' scales (ymm12) and the row's `d_x` (at `$d`).
macro_rules! times_scale {
    ($d:literal, $acc:literal) => {
        concat!(
            "vbroadcastss ymm5, dword ptr [{",
            $d,
            "}]\n",
            "vmulps ymm5, ymm12, ymm5\n",
            "vfmadd231ps ",
            $acc,
            ", ymm4, ymm5\n",
        )
    };
}

/// `Q4_1`'s scaling of one row's sums `$p` into its accumulator `$acc`
/// (`d` in ymm12, `m` in ymm13): `acc += f32(Σ)·(d·d_x)`, then
/// `acc += m·s_x` (`s_x` at `aux` bytes from `d_x`).
macro_rules! scale_min {
    ($p:literal, $d:literal, $acc:literal) => {
        concat!(
            "vpmaddwd ymm4, ",
            $p,
            ", ymm14\n",
            "vcvtdq2ps ymm4, ymm4\n",
            times_scale!($d, $acc),
            "vbroadcastss ymm6, dword ptr [{",
            $d,
            "} + {aux}]\n",
            "vfmadd231ps ",
            $acc,
            ", ymm13, ymm6\n",
        )
    };
}

/// `Q4_0`'s: `acc += f32(Σ − 8·Σq_x)·(d·d_x)` (`Σq_x` at `aux` bytes from
/// `d_x`).
macro_rules! scale_offset {
    ($p:literal, $d:literal, $acc:literal) => {
        concat!(
            "vpmaddwd ymm4, ",
            $p,
            ", ymm14\n",
            "vpbroadcastd ymm6, dword ptr [{",
            $d,
            "} + {aux}]\n",
            "vpslld ymm6, ymm6, 3\n",
            "vpsubd ymm4, ymm4, ymm6\n",
            "vcvtdq2ps ymm4, ymm4\n",
            times_scale!($d, $acc),
        )
    };
}

/// One activation row's products with the `Q8_0` group (signed weights in
/// ymm12, their magnitudes in ymm13), added to its i32 sums `$p`.
macro_rules! q8_row {
    ($g:literal, $y:literal, $p:literal) => {
        concat!(
            broadcast!("ymm4", $y, "4*", $g),
            "vpsignb ymm4, ymm4, ymm12\n",
            "vpmaddubsw ymm4, ymm13, ymm4\n",
            "vpmaddwd ymm4, ymm4, ymm14\n",
            "vpaddd ",
            $p,
            ", ",
            $p,
            ", ymm4\n",
        )
    };
}

/// `Q8_0` group `$g` of the block column: loaded once, then multiplied
/// with the 4 rows.
macro_rules! q8_group {
    ($g:literal) => {
        concat!(
            "vmovdqu ymm12, ymmword ptr [{col} + 2*{h} + 32 + 64*",
            $g,
            "]\n",
            "vpsignb ymm13, ymm12, ymm12\n",
            each_row!(q8_row, $g),
        )
    };
}

/// `Q8_0`'s scaling of one row's sums `$p` (`d` in ymm12):
/// `acc += f32(Σ)·(d·d_x)`.
macro_rules! q8_scale {
    ($p:literal, $d:literal, $acc:literal) => {
        concat!("vcvtdq2ps ymm4, ", $p, "\n", times_scale!($d, $acc),)
    };
}

/// The next block column (`$bytes` on): every pointer one block on.
macro_rules! advance {
    ($bytes:literal) => {
        concat!(
            "add {col}, ",
            $bytes,
            "\n",
            "add {y0}, 32\n",
            "add {y1}, 32\n",
            "add {y2}, 32\n",
            "add {y3}, 32\n",
            "add {d0}, 4\n",
            "add {d1}, 4\n",
            "add {d2}, 4\n",
            "add {d3}, 4\n",
            "dec {n}\n",
        )
    };
}

/// 4 activation rows × one panel of `format`'s weights: what
/// [`super::x86_panels::avx2`]'s kernels compute for 4 rows.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `panel` must hold `acts.blocks`
/// block columns of `format`, and every `rows[r]` be a row of `acts`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile(
    format: QuantFormat,
    panel: *const u8,
    acts: &Activations,
    rows: &[usize; 4],
    out: &mut [[f32; PANEL]; 4],
) {
    let nb = acts.blocks;
    if nb == 0 {
        *out = [[0.0; PANEL]; 4];
        return;
    }
    let nibble = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    // The second per-block number a row needs, at a fixed distance from its
    // d_x: Q4_1's s_x, Q4_0's Σq_x (both 4 bytes per block).
    let from_d = |at: *const u8| at.addr().wrapping_sub(acts.d.as_ptr().addr());
    let (s, sum) = (
        from_d(acts.s.as_ptr().cast()),
        from_d(acts.sum.as_ptr().cast()),
    );
    for half in 0..2 {
        let h = 2 * half * HALF;
        let y = rows.map(|row| acts.qs.as_ptr().wrapping_add(row * nb * BLOCK));
        let d = rows.map(|row| acts.d.as_ptr().wrapping_add(row * nb));
        let mut acc = [_mm256_setzero_ps(); 4];
        // The loop over the half panel's block columns, `$body` for each
        // (ending with `advance!`), with the operands every format takes
        // (this pass's pointers, named here), and `aux` for those that read
        // a second per-block number of the activations.
        macro_rules! block_loop {
            ([$($body:expr),* $(,)?] $(, aux = $aux:expr)?) => {
                asm!(
                    "2:",
                    $($body,)*
                    "jnz 2b",
                    col = inout(reg) panel => _,
                    h = in(reg) h,
                    y0 = inout(reg) y[0] => _,
                    y1 = inout(reg) y[1] => _,
                    y2 = inout(reg) y[2] => _,
                    y3 = inout(reg) y[3] => _,
                    d0 = inout(reg) d[0] => _,
                    d1 = inout(reg) d[1] => _,
                    d2 = inout(reg) d[2] => _,
                    d3 = inout(reg) d[3] => _,
                    $(aux = in(reg) $aux,)?
                    n = inout(reg) nb => _,
                    inout("ymm0") acc[0],
                    inout("ymm1") acc[1],
                    inout("ymm2") acc[2],
                    inout("ymm3") acc[3],
                    out("ymm4") _, out("ymm5") _, out("ymm6") _,
                    out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                    out("ymm12") _, out("ymm13") _,
                    in("ymm14") ones,
                    in("ymm15") nibble,
                    options(nostack, readonly),
                )
            };
        }
        // SAFETY: each loop reads nb block columns of the panel from
        // `panel` on, and nb blocks of each row's activations (the
        // caller's contract; nb ≥ 1, checked above), writes only the named
        // registers and the pointers it was given by value, and leaves the
        // stack alone.
        unsafe {
            match format {
                QuantFormat::Q4_1 => block_loop!(
                    [
                        products!("64"),
                        "vcvtph2ps ymm12, xmmword ptr [{col} + {h}]",
                        "vcvtph2ps ymm13, xmmword ptr [{col} + {h} + 32]",
                        each_scale!(scale_min),
                        advance!("320"),
                    ],
                    aux = s
                ),
                QuantFormat::Q4_0 => block_loop!(
                    [
                        products!("32"),
                        "vcvtph2ps ymm12, xmmword ptr [{col} + {h}]",
                        each_scale!(scale_offset),
                        advance!("288"),
                    ],
                    aux = sum
                ),
                QuantFormat::Q8_0 => block_loop!([
                    zero_sums!(),
                    q8_group!(0),
                    q8_group!(1),
                    q8_group!(2),
                    q8_group!(3),
                    q8_group!(4),
                    q8_group!(5),
                    q8_group!(6),
                    q8_group!(7),
                    "vcvtph2ps ymm12, xmmword ptr [{col} + {h}]",
                    each_scale!(q8_scale),
                    advance!("544"),
                ]),
            }
        }
        for (out, acc) in out.iter_mut().zip(acc) {
            // SAFETY: out[8·half..] is 8 floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(half * HALF), acc) };
        }
    }
}

/// The layouts the assembly's constants assume.
const _: () = {
    assert!(column_layout(QuantFormat::Q4_1).qs == 64);
    assert!(column_layout(QuantFormat::Q4_1).bytes == 320);
    assert!(matches!(column_layout(QuantFormat::Q4_1).m, Some(32)));
    assert!(column_layout(QuantFormat::Q4_0).qs == 32);
    assert!(column_layout(QuantFormat::Q4_0).bytes == 288);
    assert!(column_layout(QuantFormat::Q8_0).qs == 32);
    assert!(column_layout(QuantFormat::Q8_0).bytes == 544);
    assert!(PANEL == 16 && BLOCK == 32);
};

#[cfg(test)]
mod tests {
    use super::super::QuantMatrix;
    use super::super::x86_panels::avx2;
    use super::*;
    use crate::kernels::isa::{Isa, Level};

    /// The assembly gives the intrinsics' results bit for bit, for every
    /// format, any 4 rows (not only consecutive ones), 1 to 40 blocks and
    /// extreme activations (blocks of ±127 and of zeros).
    #[test]
    fn the_assembly_equals_the_intrinsics_bit_for_bit() {
        let isa = Isa::detect();
        assert!(
            isa.level() >= Level::Avx2,
            "this test needs an x86-64 CPU with AVX2, FMA and F16C (it has {})",
            isa.name()
        );
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        for format in [QuantFormat::Q4_1, QuantFormat::Q4_0, QuantFormat::Q8_0] {
            for blocks in [1, 2, 3, 18, 40] {
                let cols = blocks * BLOCK;
                let values: Vec<f32> = (0..PANEL * cols).map(|_| next()).collect();
                let w = QuantMatrix::quantize(format, PANEL, cols, &values);
                let mut x: Vec<f32> = (0..6 * cols).map(|_| 3.0 * next()).collect();
                x[..BLOCK].fill(0.0);
                x[cols..cols + BLOCK].fill(1.0);
                x[2 * cols + BLOCK / 2] = -1e4;
                let acts = Activations::quantize(isa, &x, 6, cols);
                let rows = [4, 0, 2, 5];
                let (mut asm_out, mut intrinsics) = ([[0f32; PANEL]; 4], [[0f32; PANEL]; 4]);
                // SAFETY: AVX2, FMA and F16C were detected (asserted above);
                // the panel holds `blocks` columns and rows are < 6.
                unsafe {
                    let panel = w.panels.as_ptr();
                    tile(format, panel, &acts, &rows, &mut asm_out);
                    match format {
                        QuantFormat::Q4_1 => {
                            avx2::q4::<4, true>(panel, &acts, &rows, &mut intrinsics)
                        }
                        QuantFormat::Q4_0 => {
                            avx2::q4::<4, false>(panel, &acts, &rows, &mut intrinsics)
                        }
                        QuantFormat::Q8_0 => avx2::q8::<4>(panel, &acts, &rows, &mut intrinsics),
                    }
                }
                for (a, b) in asm_out.iter().flatten().zip(intrinsics.iter().flatten()) {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{} over {blocks} blocks: {a} vs {b}",
                        format.name()
                    );
                }
            }
        }
    }
}
