//! The threaded driver: quantizes the activation rows once, splits the
//! weight panels into chunks over the rayon pool, and walks each chunk a
//! panel of 16 weight rows at a time, every activation row meeting a panel
//! while it is in cache, so that the weights stream from memory once.

use rayon::prelude::*;

use super::super::isa::{Isa, prefetch};
use super::blocks::{Activations, BLOCK, QuantFormat};
use super::dot::{Kernel, tile};
use super::panels::{PANEL, column_layout, panels_len};

/// Activation rows per tile (fewer only for the last rows).
const TILE_ROWS: usize = 4;
/// Chunks of panels per thread when there are more rows than a tile.
const CHUNKS_PER_THREAD: usize = 32;
/// Below this many multiply-adds, one thread does it all: waking the pool
/// would cost more than it saves.
const SERIAL_WORK: usize = 1 << 16;

/// The weights, as [`super::QuantMatrix`] holds them.
#[derive(Clone, Copy)]
pub struct Weights<'a> {
    /// Their block format.
    pub format: QuantFormat,
    /// Output features.
    pub rows: usize,
    /// Inputs (a multiple of 32).
    pub cols: usize,
    /// The panels of 16 rows ([`super::panels`]).
    pub panels: &'a [u8],
}

/// The output, as a raw pointer so that tasks can write their disjoint
/// column ranges of it in parallel.
#[derive(Clone, Copy)]
struct Out(*mut f32);

// SAFETY: tasks write disjoint weight-row ranges (output columns) only, and
// the borrow of the output outlives them (rayon joins them before
// `matmul_with` returns).
unsafe impl Send for Out {}
// SAFETY: as for Send.
unsafe impl Sync for Out {}

impl Out {
    /// The element at `offset`, as a pointer.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `out[m × rows] = x[m × cols] · wᵀ` with `kernel`: the panels split into
/// chunks over the pool; in a chunk, each panel meets every activation row
/// (a tile of rows at a time) while it is in cache, and the next panel is
/// asked for ahead, a part before each tile, so that it streams in while
/// this one is computed (at a few rows the products wait on memory: the
/// hardware prefetcher alone streamed the weights at half the speed a
/// plain read of them reaches; at 16 rows, asking for the whole panel at
/// once gained nothing, a part per tile 9 % of a 16-stream decode).
pub fn matmul_with(kernel: Kernel, isa: Isa, w: Weights<'_>, x: &[f32], m: usize, out: &mut [f32]) {
    assert_eq!(x.len(), m * w.cols, "input is not m × cols");
    assert_eq!(out.len(), m * w.rows, "output is not m × rows");
    let blocks = w.cols / BLOCK;
    assert_eq!(
        w.panels.len(),
        panels_len(w.format, w.rows, blocks),
        "panel bytes"
    );
    if m == 0 || w.rows == 0 {
        return;
    }
    let panel_bytes = blocks * column_layout(w.format).bytes;
    let panels = w.rows.div_ceil(PANEL);
    // This thread's kept buffers (a fresh one if a product running on it
    // already holds them: rayon may start one while this one waits).
    let mut acts = KEPT.take().unwrap_or_default();
    acts.quantize_into(isa, x, m, w.cols);
    let threads = rayon::current_num_threads().max(1);
    let chunk = if m * w.rows * w.cols <= SERIAL_WORK || threads == 1 {
        panels
    } else {
        // 32 chunks per thread, so that the thread done first takes work
        // from the other until little is left (rayon steals whole chunks:
        // with 4, a 128-token prefill on two threads of the AVX2 EPYC took
        // 134.0 ms at best against 125.6, and 16 streams' median was 342
        // against 353 tokens/s); one for a single tile of activation rows
        // (a decode step of a few sequences), whose chunks are too short
        // to pay for more forks.
        let per_thread = if m <= TILE_ROWS { 1 } else { CHUNKS_PER_THREAD };
        panels.div_ceil(per_thread * threads)
    };
    let tiles = m.div_ceil(TILE_ROWS);
    let out = Out(out.as_mut_ptr());
    let task = |start: usize| {
        for p in start..(start + chunk).min(panels) {
            // The next panel asked for a part before each tile of this one.
            let next = w
                .panels
                .get((p + 1) * panel_bytes..(p + 2) * panel_bytes)
                .unwrap_or(&[]);
            let part = next.len().div_ceil(tiles).next_multiple_of(64);
            let ask = |tile: usize| {
                if let Some(bytes) = next.get(tile * part..) {
                    prefetch(&bytes[..part.min(bytes.len())]);
                }
            };
            let panel = &w.panels[p * panel_bytes..][..panel_bytes];
            let first = p * PANEL;
            let width = PANEL.min(w.rows - first);
            let write = |i: usize, results: &[[f32; PANEL]]| {
                for (k, values) in results.iter().enumerate() {
                    // SAFETY: row i + k < m, columns first..first + width <=
                    // rows: inside `out` (length checked above), and only
                    // this task writes these columns.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out.at((i + k) * w.rows + first), width)
                    };
                    // A whole panel's width as one fixed-size copy (a
                    // slice's copy of 64 bytes was a call to memmove).
                    if let Ok(whole) = <&mut [f32; PANEL]>::try_from(&mut *dst) {
                        *whole = *values;
                    } else {
                        dst.copy_from_slice(&values[..width]);
                    }
                }
            };
            // Whole tiles of rows, then the last 1 to 3 rows in one tile
            // (three one-row passes would unpack the panel three times).
            let mut i = 0;
            while m - i >= TILE_ROWS {
                ask(i / TILE_ROWS);
                rows_tile::<TILE_ROWS>(kernel, w.format, panel, &acts, i, write);
                i += TILE_ROWS;
            }
            if m > i {
                ask(i / TILE_ROWS);
            }
            match m - i {
                3 => rows_tile::<3>(kernel, w.format, panel, &acts, i, write),
                2 => rows_tile::<2>(kernel, w.format, panel, &acts, i, write),
                1 => rows_tile::<1>(kernel, w.format, panel, &acts, i, write),
                _ => {}
            }
        }
    };
    if chunk >= panels {
        task(0);
    } else {
        (0..panels).into_par_iter().step_by(chunk).for_each(task);
    }
    KEPT.set(Some(acts));
}

thread_local! {
    /// Per thread, the quantized activations of its last product, whose
    /// memory the next one reuses: as large as the largest inputs it has
    /// quantized (in the server, a pass's rows, at most
    /// `--max-num-batched-tokens`: 0.4 MiB for 256 rows of SmolLM2's widest
    /// layer, 1536 wide).
    static KEPT: std::cell::Cell<Option<Activations>> = const { std::cell::Cell::new(None) };
}

/// Activation rows `first..first + R` against one panel, handed to `write`.
fn rows_tile<const R: usize>(
    kernel: Kernel,
    format: QuantFormat,
    panel: &[u8],
    acts: &Activations,
    first: usize,
    write: impl Fn(usize, &[[f32; PANEL]]),
) {
    let mut results = [[0f32; PANEL]; R];
    tile(
        kernel,
        format,
        panel,
        acts,
        &std::array::from_fn(|k| first + k),
        &mut results,
    );
    write(first, &results);
}
