//! Dot products of weight rows (GGML blocks) with quantized activation
//! rows, a tile of `R` activation rows × `C` weight rows at a time: each
//! weight block is unpacked once for the `R` rows, each activation block
//! loaded once for the `C` weight rows.
//!
//! Per block the products are summed in integers, then scaled in f32, as
//! llama.cpp does: `d_w·d_x·Σq_w·q_x`, plus `m_w·s_x` for `Q4_1` (whose
//! nibbles are unsigned), minus `8·d_w·d_x·Σq_x` for `Q4_0`, taken out in
//! integers. On x86-64, 4-bit weights are unpacked to one byte each and
//! multiplied with `vpmaddubsw` + `vpmaddwd` (AVX2) or `vpdpbusd`
//! (AVX-512 VNNI), which take one unsigned operand: 8-bit weights first
//! lend their sign to the activations (`vpsignb`), or, four rows at a time
//! with VNNI, are offset by 128 (taken back out with `128·Σq_x`). Tiles of
//! four weight rows (`super::x86_quad`) do most of the work; other widths
//! (the last rows of a matrix) go one row per register (`super::x86`).

use super::super::isa::{Isa, Level};
use super::blocks::{Activations, BLOCK, QuantFormat, f16_at};
#[cfg(target_arch = "x86_64")]
use super::x86::{avx2, vnni};
#[cfg(target_arch = "x86_64")]
use super::x86_quad::{avx2x4, vnni512};

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
    /// As `Avx2`, with `vpdpbusd` (AVX-512 VNNI on 256-bit registers) and
    /// the 32 vector registers of AVX-512.
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

/// `out[r·C + c] = ⟨weight row w[c], activation row rows[r]⟩` for the tile
/// shapes the driver uses: `R ∈ {1, 4}` activation rows × `C ∈ {1, 4}`
/// weight rows. Each weight row holds `acts.blocks` blocks of `format`.
pub fn tile(
    kernel: Kernel,
    format: QuantFormat,
    w: &[&[u8]],
    acts: &Activations,
    rows: &[usize],
    out: &mut [f32],
) {
    let row_bytes = acts.blocks * format.block_bytes();
    assert!(
        w.iter().all(|row| row.len() >= row_bytes),
        "weight row too short"
    );
    assert!(
        rows.iter().all(|r| (r + 1) * acts.blocks <= acts.d.len()),
        "activation row out of range"
    );
    assert_eq!(acts.qs.len(), acts.d.len() * BLOCK);
    assert_eq!(out.len(), rows.len() * w.len(), "tile output length");
    macro_rules! shapes {
        ($(($r:literal, $c:literal)),*) => {
            match (rows.len(), w.len()) {
                $(($r, $c) => {
                    let w: &[&[u8]; $c] = w.try_into().expect("tile width");
                    let rows: &[usize; $r] = rows.try_into().expect("tile height");
                    let out: &mut [f32; $r * $c] = out.try_into().expect("tile size");
                    shaped::<$r, $c, { $r * $c }>(kernel, format, w, acts, rows, out)
                })*
                shape => panic!("no {shape:?} tile"),
            }
        };
    }
    shapes!((1, 1), (1, 4), (4, 1), (4, 4))
}

/// [`tile`] for one shape (`N = R·C`); the bounds are checked.
fn shaped<const R: usize, const C: usize, const N: usize>(
    kernel: Kernel,
    format: QuantFormat,
    w: &[&[u8]; C],
    acts: &Activations,
    rows: &[usize; R],
    out: &mut [f32; N],
) {
    match kernel.0 {
        Which::Generic => generic::<R, C, N>(format, w, acts, rows, out),
        #[cfg(target_arch = "x86_64")]
        Which::Avx2 => {
            let w = w.map(<[u8]>::as_ptr);
            // SAFETY: `Which::Avx2` comes from an `Isa` of level AVX2 or more
            // (detected: AVX2, FMA and F16C), and `tile` checked that every
            // weight row holds `acts.blocks` blocks and every row index is
            // inside `acts`.
            unsafe {
                match (format, <[*const u8; 4]>::try_from(&w[..])) {
                    (QuantFormat::Q4_0, Ok(w)) => avx2x4::q4::<R, N, false>(w, acts, rows, out),
                    (QuantFormat::Q4_1, Ok(w)) => avx2x4::q4::<R, N, true>(w, acts, rows, out),
                    (QuantFormat::Q4_0, _) => avx2::q4::<R, C, N, false>(w, acts, rows, out),
                    (QuantFormat::Q4_1, _) => avx2::q4::<R, C, N, true>(w, acts, rows, out),
                    (QuantFormat::Q8_0, _) => avx2::q8::<R, C, N>(w, acts, rows, out),
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Which::Vnni => {
            let w = w.map(<[u8]>::as_ptr);
            // SAFETY: `Which::Vnni` comes from an `Isa` that detected
            // AVX-512 (F, VL, BW) with VNNI besides AVX2, FMA and F16C;
            // bounds as for Avx2.
            unsafe {
                match (format, <[*const u8; 4]>::try_from(&w[..])) {
                    (QuantFormat::Q4_0, Ok(w)) => vnni512::q4::<R, N, false>(w, acts, rows, out),
                    (QuantFormat::Q4_1, Ok(w)) => vnni512::q4::<R, N, true>(w, acts, rows, out),
                    (QuantFormat::Q4_0, _) => vnni::q4::<R, C, N, false>(w, acts, rows, out),
                    (QuantFormat::Q4_1, _) => vnni::q4::<R, C, N, true>(w, acts, rows, out),
                    (QuantFormat::Q8_0, Ok(w)) => vnni512::q8::<R, N>(w, acts, rows, out),
                    (QuantFormat::Q8_0, _) => vnni::q8::<R, C, N>(w, acts, rows, out),
                }
            }
        }
    }
}

/// The portable tile: one integer dot product per block and pair of rows.
fn generic<const R: usize, const C: usize, const N: usize>(
    format: QuantFormat,
    w: &[&[u8]; C],
    acts: &Activations,
    rows: &[usize; R],
    out: &mut [f32; N],
) {
    let bytes = format.block_bytes();
    for (r, row) in rows.iter().enumerate() {
        for (c, weights) in w.iter().enumerate() {
            let mut acc = 0f32;
            for (b, block) in weights.chunks_exact(bytes).take(acts.blocks).enumerate() {
                let i = row * acts.blocks + b;
                let y = acts.block(*row, b);
                let d = f16_at(block, 0) * acts.d[i];
                acc += match format {
                    QuantFormat::Q4_0 => d * (nibble_dot(&block[2..], y) - 8 * acts.sum[i]) as f32,
                    QuantFormat::Q4_1 => {
                        d * nibble_dot(&block[4..], y) as f32 + f16_at(block, 2) * acts.s[i]
                    }
                    QuantFormat::Q8_0 => {
                        let q = block[2..][..BLOCK].iter().zip(y);
                        d * q
                            .map(|(q, y)| i32::from(*q as i8) * i32::from(*y))
                            .sum::<i32>() as f32
                    }
                };
            }
            out[r * C + c] = acc;
        }
    }
}

/// `Σ q_j·y_j` over the 32 unsigned nibbles of 16 bytes.
fn nibble_dot(q: &[u8], y: &[i8]) -> i32 {
    let (low, high) = y.split_at(BLOCK / 2);
    q[..BLOCK / 2]
        .iter()
        .zip(low.iter().zip(high))
        .map(|(q, (lo, hi))| {
            i32::from(q & 0x0F) * i32::from(*lo) + i32::from(q >> 4) * i32::from(*hi)
        })
        .sum()
}
