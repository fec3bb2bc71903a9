//! Dot products of one panel of 16 weight rows ([`super::panels`]) with
//! `R` quantized activation rows at a time: each weight block is unpacked
//! once for the `R` rows, and each activation row's 16 results sit in the
//! lanes of one register.
//!
//! Per block the products are summed in integers, then scaled in f32, as
//! llama.cpp does: `d_w·d_x·Σq_w·q_x`, plus `m_w·s_x` for `Q4_1` (whose
//! nibbles are unsigned), minus `8·d_w·d_x·Σq_x` for `Q4_0`, taken out in
//! integers. The x86-64 kernels are in `super::x86_panels`; the portable
//! one is here.

use super::super::isa::{Isa, Level};
use super::blocks::{Activations, BLOCK, QuantFormat, f16_at};
use super::panels::{GROUP, PANEL, column_layout};
#[cfg(target_arch = "x86_64")]
use super::x86_asm;
#[cfg(target_arch = "x86_64")]
use super::x86_panels::{avx2, vnni};

/// Which code computes the tiles. Only [`Kernel::best`] and
/// [`Kernel::all`] make one, from a detected [`Isa`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel(Which);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Generic,
    /// AVX2, FMA and F16C (also used at the AVX-512 level without VNNI).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 (F, BW) with VNNI's `vpdpbusd` on 512-bit registers.
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl Kernel {
    /// The fastest kernel `isa` can run.
    pub fn best(isa: Isa) -> Kernel {
        Kernel::all(isa)[0]
    }

    /// Every kernel `isa` can run, fastest first.
    pub fn all(isa: Isa) -> Vec<Kernel> {
        let mut all = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if isa.avx512_vnni() {
                all.push(Kernel(Which::Vnni));
            }
            if isa.level() >= Level::Avx2 {
                all.push(Kernel(Which::Avx2));
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (isa, Level::Generic);
        all.push(Kernel(Which::Generic));
        all
    }

    /// A short name for test messages.
    #[cfg(test)]
    pub fn name(self) -> &'static str {
        match self.0 {
            Which::Generic => "generic",
            #[cfg(target_arch = "x86_64")]
            Which::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Which::Vnni => "avx512-vnni",
        }
    }
}

/// `out[r][c]` = ⟨weight row `c` of `panel`, activation row `rows[r]`⟩,
/// for `R` activation rows (1 to 4 in the driver). `panel` holds
/// `acts.blocks` block columns of `format`.
pub fn tile<const R: usize>(
    kernel: Kernel,
    format: QuantFormat,
    panel: &[u8],
    acts: &Activations,
    rows: &[usize; R],
    out: &mut [[f32; PANEL]; R],
) {
    assert!(
        panel.len() >= acts.blocks * column_layout(format).bytes,
        "panel too short"
    );
    assert!(
        rows.iter().all(|r| (r + 1) * acts.blocks <= acts.d.len()),
        "activation row out of range"
    );
    assert_eq!(acts.qs.len(), acts.d.len() * BLOCK);
    match kernel.0 {
        Which::Generic => generic(format, panel, acts, rows, out),
        #[cfg(target_arch = "x86_64")]
        Which::Avx2 => {
            let panel = panel.as_ptr();
            // SAFETY: `Which::Avx2` comes from an `Isa` of level AVX2 or more
            // (detected: AVX2, FMA and F16C), and the panel's length and the
            // row indices were checked above.
            unsafe {
                match (format, <&[usize; 4]>::try_from(&rows[..])) {
                    // A whole tile: the assembly (same results, faster).
                    (_, Ok(four)) => {
                        let out = <&mut [[f32; PANEL]; 4]>::try_from(&mut out[..])
                            .expect("as many output rows as rows");
                        x86_asm::tile(format, panel, acts, four, out)
                    }
                    (QuantFormat::Q4_0, _) => avx2::q4::<R, false>(panel, acts, rows, out),
                    (QuantFormat::Q4_1, _) => avx2::q4::<R, true>(panel, acts, rows, out),
                    (QuantFormat::Q8_0, _) => avx2::q8::<R>(panel, acts, rows, out),
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Which::Vnni => {
            let panel = panel.as_ptr();
            // SAFETY: `Which::Vnni` comes from an `Isa` that detected
            // AVX-512 (F, VL, BW) with VNNI besides AVX2, FMA and F16C;
            // bounds as for Avx2.
            unsafe {
                match format {
                    QuantFormat::Q4_0 => vnni::q4::<R, false>(panel, acts, rows, out),
                    QuantFormat::Q4_1 => vnni::q4::<R, true>(panel, acts, rows, out),
                    QuantFormat::Q8_0 => vnni::q8::<R>(panel, acts, rows, out),
                }
            }
        }
    }
}

/// The portable kernel: one integer dot product per block, row and lane.
fn generic<const R: usize>(
    format: QuantFormat,
    panel: &[u8],
    acts: &Activations,
    rows: &[usize; R],
    out: &mut [[f32; PANEL]; R],
) {
    let layout = column_layout(format);
    for (row, out) in rows.iter().zip(out.iter_mut()) {
        *out = [0.0; PANEL];
        for (b, column) in panel
            .chunks_exact(layout.bytes)
            .take(acts.blocks)
            .enumerate()
        {
            let i = row * acts.blocks + b;
            let y = acts.block(*row, b);
            for (lane, acc) in out.iter_mut().enumerate() {
                let quants = |g: usize| &column[layout.qs + g * GROUP + 4 * lane..][..4];
                let d = f16_at(column, 2 * lane) * acts.d[i];
                let dot: i32 = match format {
                    QuantFormat::Q8_0 => (0..layout.groups)
                        .flat_map(|g| quants(g).iter().zip(&y[4 * g..]))
                        .map(|(q, y)| i32::from(*q as i8) * i32::from(*y))
                        .sum(),
                    QuantFormat::Q4_0 | QuantFormat::Q4_1 => (0..layout.groups)
                        .flat_map(|g| quants(g).iter().enumerate().map(move |(j, q)| (g, j, q)))
                        .map(|(g, j, q)| {
                            i32::from(q & 0x0F) * i32::from(y[4 * g + j])
                                + i32::from(q >> 4) * i32::from(y[16 + 4 * g + j])
                        })
                        .sum(),
                };
                *acc += match (format, layout.m) {
                    (QuantFormat::Q4_0, _) => d * (dot - 8 * acts.sum[i]) as f32,
                    (QuantFormat::Q4_1, Some(m)) => {
                        d * dot as f32 + f16_at(column, m + 2 * lane) * acts.s[i]
                    }
                    _ => d * dot as f32,
                };
            }
        }
    }
}
