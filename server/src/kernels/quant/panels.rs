//! The weights as the kernels read them: panels of [`PANEL`] weight rows,
//! block column by block column, each block's numbers of the 16 rows side
//! by side, so that one 512-bit register holds the same 4 bytes of 16 rows
//! and one `vpdpbusd` multiplies all 16 rows with 4 broadcast activations.
//! The GGML blocks are repacked once, at load; nothing is requantized
//! (the bytes are the file's, moved).
//!
//! A panel holds `blocks` block columns, one after the other; a block
//! column of 16 rows is:
//!
//! | format | bytes | layout                                                        |
//! |--------|-------|---------------------------------------------------------------|
//! | Q4_0   | 288   | 16 × f16 `d`, then 4 groups × 16 rows × 4 nibble bytes         |
//! | Q4_1   | 320   | 16 × f16 `d`, 16 × f16 `m`, then the groups as Q4_0's          |
//! | Q8_0   | 544   | 16 × f16 `d`, then 8 groups × 16 rows × 4 bytes (i8)           |
//!
//! Group `g` of a row is its block's quant bytes `4g..4g + 4`: for the
//! 4-bit formats, weights `4g..4g + 4` in the low nibbles and
//! `16 + 4g..16 + 4g + 4` in the high ones (GGML's nibble order); for
//! `Q8_0`, weights `4g..4g + 4`. Rows past the matrix's last (the last
//! panel's padding) are zero blocks, which add nothing.

use super::blocks::{BLOCK, QuantFormat};

/// Weight rows per panel.
pub const PANEL: usize = 16;

/// Bytes of one group of 16 rows (4 quant bytes each).
pub const GROUP: usize = 4 * PANEL;

/// Where a block column's parts are, in bytes from its start (the 16
/// scales `d`, f16, come first, at 0). Each part is the GGML block's part
/// of the 16 rows side by side, in the block's order, so every offset is
/// the block's offset times 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnLayout {
    /// The 16 minimums `m` (f16), `Q4_1` only.
    pub m: Option<usize>,
    /// The first group of quant bytes.
    pub qs: usize,
    /// Groups of quant bytes (4 for 4-bit formats, 8 for `Q8_0`).
    pub groups: usize,
    /// Bytes of the whole column.
    pub bytes: usize,
}

/// The layout of one block column of `format`.
pub const fn column_layout(format: QuantFormat) -> ColumnLayout {
    let (m, qs) = ggml_parts(format);
    ColumnLayout {
        m: match m {
            Some(m) => Some(m * PANEL),
            None => None,
        },
        qs: qs * PANEL,
        groups: (format.block_bytes() - qs) / 4,
        bytes: format.block_bytes() * PANEL,
    }
}

/// Offsets of a GGML block's parts after its `d` (at 0): its `m` (`Q4_1`)
/// and its quant bytes.
const fn ggml_parts(format: QuantFormat) -> (Option<usize>, usize) {
    match format {
        QuantFormat::Q4_0 | QuantFormat::Q8_0 => (None, 2),
        QuantFormat::Q4_1 => (Some(2), 4),
    }
}

/// Bytes of the panels of a `rows × (blocks·32)` matrix.
pub fn panels_len(format: QuantFormat, rows: usize, blocks: usize) -> usize {
    rows.div_ceil(PANEL) * blocks * column_layout(format).bytes
}

/// Byte offsets of (row, block)'s parts in the panels: `d`, `m`, and for
/// each group `g` the 4 quant bytes at `qs + g·64`.
fn parts_of(
    format: QuantFormat,
    blocks: usize,
    row: usize,
    block: usize,
) -> (usize, Option<usize>, usize) {
    let layout = column_layout(format);
    let column = (row / PANEL * blocks + block) * layout.bytes;
    let lane = row % PANEL;
    (
        column + 2 * lane,
        layout.m.map(|m| column + m + 2 * lane),
        column + layout.qs + 4 * lane,
    )
}

/// Repacks `rows` rows of `blocks` GGML blocks of `format` into panels.
pub fn from_ggml(format: QuantFormat, rows: usize, blocks: usize, ggml: &[u8]) -> Vec<u8> {
    let block_bytes = format.block_bytes();
    assert_eq!(ggml.len(), rows * blocks * block_bytes, "GGML bytes");
    let (gm, gq) = ggml_parts(format);
    let groups = column_layout(format).groups;
    let mut out = vec![0u8; panels_len(format, rows, blocks)];
    for row in 0..rows {
        for b in 0..blocks {
            let src = &ggml[(row * blocks + b) * block_bytes..][..block_bytes];
            let (d, m, qs) = parts_of(format, blocks, row, b);
            out[d..d + 2].copy_from_slice(&src[..2]);
            if let (Some(m), Some(gm)) = (m, gm) {
                out[m..m + 2].copy_from_slice(&src[gm..gm + 2]);
            }
            for g in 0..groups {
                out[qs + g * GROUP..][..4].copy_from_slice(&src[gq + 4 * g..][..4]);
            }
        }
    }
    out
}

/// Writes the GGML block (`format.block_bytes()` bytes) of `row`, block
/// `block`, from the panels into `out`.
pub fn ggml_block(
    format: QuantFormat,
    blocks: usize,
    panels: &[u8],
    row: usize,
    block: usize,
    out: &mut [u8],
) {
    let (gm, gq) = ggml_parts(format);
    let groups = column_layout(format).groups;
    let (d, m, qs) = parts_of(format, blocks, row, block);
    out[..2].copy_from_slice(&panels[d..d + 2]);
    if let (Some(m), Some(gm)) = (m, gm) {
        out[gm..gm + 2].copy_from_slice(&panels[m..m + 2]);
    }
    for g in 0..groups {
        out[gq + 4 * g..][..4].copy_from_slice(&panels[qs + g * GROUP..][..4]);
    }
}

/// The GGML bytes of all `rows` rows again (the inverse of [`from_ggml`]).
pub fn to_ggml(format: QuantFormat, rows: usize, blocks: usize, panels: &[u8]) -> Vec<u8> {
    let block_bytes = format.block_bytes();
    let mut out = vec![0u8; rows * blocks * block_bytes];
    for (i, block) in out.chunks_exact_mut(block_bytes).enumerate() {
        ggml_block(format, blocks, panels, i / blocks, i % blocks, block);
    }
    out
}

// The groups above cover a block of 32 weights.
const _: () = assert!(BLOCK == 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_layouts_are_the_table_above() {
        let layout = |f| {
            let l = column_layout(f);
            (l.m, l.qs, l.groups, l.bytes)
        };
        assert_eq!(layout(QuantFormat::Q4_0), (None, 32, 4, 288));
        assert_eq!(layout(QuantFormat::Q4_1), (Some(32), 64, 4, 320));
        assert_eq!(layout(QuantFormat::Q8_0), (None, 32, 8, 544));
    }

    #[test]
    fn panels_hold_the_ggml_bytes_and_give_them_back() {
        for format in [QuantFormat::Q4_0, QuantFormat::Q4_1, QuantFormat::Q8_0] {
            for (rows, blocks) in [(1, 1), (16, 2), (19, 3), (40, 1)] {
                let len = rows * blocks * format.block_bytes();
                let ggml: Vec<u8> = (0..len).map(|i| (i * 7 + i / 13) as u8).collect();
                let panels = from_ggml(format, rows, blocks, &ggml);
                assert_eq!(
                    panels.len(),
                    rows.div_ceil(PANEL) * blocks * column_layout(format).bytes
                );
                assert_eq!(
                    to_ggml(format, rows, blocks, &panels),
                    ggml,
                    "{format:?} {rows}x{blocks}"
                );
                // Row 1's block 0, group 1 (its quant bytes 4..8), sits in
                // lane 1 of the second group of the first column.
                if rows > 1 {
                    let layout = column_layout(format);
                    let (_, gq) = ggml_parts(format);
                    let at = layout.qs + GROUP + 4;
                    let src = blocks * format.block_bytes() + gq + 4;
                    assert_eq!(panels[at..at + 4], ggml[src..src + 4]);
                }
                // The padding rows are zeros.
                let last = (rows..rows.div_ceil(PANEL) * PANEL).all(|row| {
                    (0..blocks).all(|b| {
                        let mut block = vec![1u8; format.block_bytes()];
                        ggml_block(format, blocks, &panels, row, b, &mut block);
                        block.iter().all(|v| *v == 0)
                    })
                });
                assert!(last, "{format:?}: padding");
            }
        }
    }
}
