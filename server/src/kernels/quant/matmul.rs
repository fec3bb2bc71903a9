//! The threaded driver: quantizes the activation rows once, splits the
//! weight rows into chunks over the rayon pool, and walks each chunk a
//! tile of weight rows at a time, every activation row meeting a weight
//! tile while it is in L1, so that the weights stream from memory once.

use rayon::prelude::*;

use super::super::isa::Isa;
use super::blocks::{Activations, BLOCK, QuantFormat};
use super::dot::{Kernel, tile};

/// Activation rows per tile (fewer only for the last rows).
const TILE_ROWS: usize = 4;
/// Weight rows per tile (fewer only for the last rows).
const TILE_COLS: usize = 4;
/// Fewest weight rows a thread takes (a multiple of every tile width).
const MIN_CHUNK: usize = 16;
/// How many weight tiles ahead of the one being multiplied the driver asks
/// the cache for: at one activation row, the products wait on memory
/// rather than arithmetic, and the hardware prefetcher alone left the
/// weights streaming at half the speed a plain read of them reaches.
const PREFETCH_TILES: usize = 2;
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
    /// `rows` rows of `cols / 32` blocks.
    pub bytes: &'a [u8],
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

/// `out[m × rows] = x[m × cols] · wᵀ` with `kernel`.
pub fn matmul_with(kernel: Kernel, isa: Isa, w: Weights<'_>, x: &[f32], m: usize, out: &mut [f32]) {
    assert_eq!(x.len(), m * w.cols, "input is not m × cols");
    assert_eq!(out.len(), m * w.rows, "output is not m × rows");
    let row_bytes = w.cols / BLOCK * w.format.block_bytes();
    assert_eq!(w.bytes.len(), w.rows * row_bytes, "weight bytes");
    if m == 0 || w.rows == 0 {
        return;
    }
    let acts = Activations::quantize(isa, x, m, w.cols);
    let threads = rayon::current_num_threads().max(1);
    let chunk = if m * w.rows * w.cols <= SERIAL_WORK || threads == 1 {
        w.rows
    } else {
        // About four chunks per thread, so that a slow thread delays little;
        // one for a single tile of activation rows (a decode step of a few
        // sequences), whose chunks are too short to pay for more forks.
        let per_thread = if m <= TILE_ROWS { 1 } else { 4 };
        w.rows
            .div_ceil(per_thread * threads)
            .next_multiple_of(MIN_CHUNK)
            .max(MIN_CHUNK)
    };
    let out = Out(out.as_mut_ptr());
    let task = |start: usize| {
        let end = (start + chunk).min(w.rows);
        let mut j = start;
        while j < end {
            let c = if end - j >= TILE_COLS { TILE_COLS } else { 1 };
            let ahead = (j + PREFETCH_TILES * TILE_COLS) * row_bytes;
            if ahead < w.bytes.len() {
                let until = (ahead + TILE_COLS * row_bytes).min(w.bytes.len());
                prefetch(&w.bytes[ahead..until]);
            }
            let mut weights: [&[u8]; TILE_COLS] = [&[]; TILE_COLS];
            for (k, row) in weights.iter_mut().take(c).enumerate() {
                *row = &w.bytes[(j + k) * row_bytes..][..row_bytes];
            }
            let mut i = 0;
            while i < m {
                let r = if m - i >= TILE_ROWS { TILE_ROWS } else { 1 };
                let rows = [i, i + 1, i + 2, i + 3];
                let mut results = [0f32; TILE_ROWS * TILE_COLS];
                let results = &mut results[..r * c];
                tile(kernel, w.format, &weights[..c], &acts, &rows[..r], results);
                for (k, values) in results.chunks_exact(c).enumerate() {
                    // SAFETY: row i + k < m, columns j..j + c < rows: inside
                    // `out` (length checked above), and only this task
                    // writes columns start..end.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(out.at((i + k) * w.rows + j), c) };
                    dst.copy_from_slice(values);
                }
                i += r;
            }
            j += c;
        }
    };
    if chunk >= w.rows {
        task(0);
    } else {
        (0..w.rows).into_par_iter().step_by(chunk).for_each(task);
    }
}

/// Asks the cache for the lines of `bytes` (a hint: it changes no result).
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch reads nothing architecturally; the address is
        // inside `bytes`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}
