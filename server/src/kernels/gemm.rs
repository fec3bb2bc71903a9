//! Single-precision matrix multiplication for the encoder: `C = A·B` followed
//! by a fused epilogue (bias, GELU, residual).
//!
//! The shape of the work decides the design. B is almost always a weight
//! matrix, constant for the life of the server, so it is packed once at load
//! into column panels of [`NR`] floats, k-major: the micro-kernel then reads
//! B strictly sequentially. A (the activations) is packed per call into
//! row blocks of [`MR`] rows, also k-major, so one pointer walks it. The
//! micro-kernel keeps an `MR × NR` tile of C in registers (24 AVX-512
//! registers) and does `MR · NR` FMAs per step of k. The epilogue runs on
//! the finished tile while it is hot in L1.
//!
//! On x86-64 CPUs with AVX-512 the micro-kernel uses it; elsewhere a portable
//! kernel (compiled for AVX2+FMA when the CPU has them) gives the same
//! results up to rounding.

use std::ops::Range;

use rayon::prelude::*;

use super::elementwise::gelu_in_place;
use super::isa::{Isa, Level};

/// Width of a packed B panel (two AVX-512 registers of f32).
pub const NR: usize = 32;
/// Rows of A per micro-kernel call.
const MR: usize = 12;
/// Rows per call for the last rows of A, so that few rows are wasted.
const MR_TAIL: usize = 4;
/// Rows of A packed and swept across all panels at a time (fits L2 for k up
/// to a few thousand).
const MC: usize = MR * 8;
/// Depth of one micro-kernel call: a `KC × NR` chunk of a B panel (24 KiB)
/// and the `MC / MR` tiles stay in L1 between calls.
const KC: usize = 192;

/// A row-major matrix view: element `(i, j)` is `data[i * ld + j]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between the starts of two rows.
    pub ld: usize,
}

impl<'a> MatRef<'a> {
    /// A densely stored `rows × cols` matrix.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> MatRef<'a> {
        MatRef {
            data,
            rows,
            cols,
            ld: cols,
        }
    }

    fn assert_fits(&self) {
        assert!(self.ld >= self.cols, "row stride shorter than a row");
        if self.rows > 0 {
            assert!(
                (self.rows - 1) * self.ld + self.cols <= self.data.len(),
                "matrix view outside its slice"
            );
        }
    }
}

/// The B operand, packed into panels of [`NR`] columns, each stored k-major
/// (`k` rows of `NR` floats, zero-padded past the last column).
#[derive(Clone, Debug, Default)]
pub struct PackedB {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl PackedB {
    /// Packs `w` read as `[n, k]`, i.e. B = wᵀ: a linear layer's weight
    /// (`out_features × in_features`), or attention keys.
    pub fn from_transposed(w: MatRef<'_>) -> PackedB {
        let mut packed = PackedB::default();
        packed.pack_transposed(w);
        packed
    }

    /// Re-packs this buffer (keeping its allocation) from `w` read as `[n, k]`.
    pub fn pack_transposed(&mut self, w: MatRef<'_>) {
        w.assert_fits();
        let (n, k) = (w.rows, w.cols);
        self.reset(k, n);
        for (p, panel) in self.data.chunks_exact_mut(k * NR).enumerate() {
            for c in 0..NR.min(n - p * NR) {
                let row = &w.data[(p * NR + c) * w.ld..][..k];
                for (kk, v) in row.iter().enumerate() {
                    panel[kk * NR + c] = *v;
                }
            }
        }
    }

    /// Re-packs this buffer (keeping its allocation) from `b` read as `[k, n]`.
    pub fn pack(&mut self, b: MatRef<'_>) {
        b.assert_fits();
        let (k, n) = (b.rows, b.cols);
        self.reset(k, n);
        for (p, panel) in self.data.chunks_exact_mut(k * NR).enumerate() {
            let width = NR.min(n - p * NR);
            for kk in 0..k {
                panel[kk * NR..][..width].copy_from_slice(&b.data[kk * b.ld + p * NR..][..width]);
            }
        }
    }

    fn reset(&mut self, k: usize, n: usize) {
        self.k = k;
        self.n = n;
        self.data.clear();
        self.data.resize(n.div_ceil(NR) * k * NR, 0.0);
    }

    /// Inner dimension.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of columns of B (and of the product).
    pub fn n(&self) -> usize {
        self.n
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * NR..][..self.k * NR]
    }
}

/// What happens to each element of `A·B` before it is stored in C.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    /// Store as is.
    Store,
    /// Add `bias[j]`.
    Bias(&'a [f32]),
    /// Add `bias[j]`, then apply exact (erf) GELU.
    BiasGelu(&'a [f32]),
    /// Add `bias[j]` and `residual(i, j)`.
    BiasResidual(&'a [f32], MatRef<'a>),
}

impl Epilogue<'_> {
    fn check(&self, rows: usize, n: usize) {
        match self {
            Epilogue::Store => {}
            Epilogue::Bias(b) | Epilogue::BiasGelu(b) => assert_eq!(b.len(), n, "bias length"),
            Epilogue::BiasResidual(b, r) => {
                assert_eq!(b.len(), n, "bias length");
                assert!(r.rows == rows && r.cols == n, "residual shape");
                r.assert_fits();
            }
        }
    }

    /// Finishes a tile (row `t` of `tile` is row `rows.start + t` of the
    /// product, `NR` apart, of which `cols` are real): the element-wise
    /// parts per row, GELU over the whole tile at once (padding columns
    /// included; they are dropped afterwards).
    fn apply(&self, isa: Isa, rows: Range<usize>, cols: Range<usize>, tile: &mut [f32; MR * NR]) {
        let width = cols.len();
        for (t, i) in rows.clone().enumerate() {
            let out = &mut tile[t * NR..][..width];
            match self {
                Epilogue::Store => {}
                Epilogue::Bias(b) | Epilogue::BiasGelu(b) => add(out, &b[cols.clone()]),
                Epilogue::BiasResidual(b, r) => {
                    add(out, &b[cols.clone()]);
                    add(out, &r.data[i * r.ld + cols.start..][..width]);
                }
            }
        }
        if let Epilogue::BiasGelu(_) = self {
            gelu_in_place(isa, &mut tile[..rows.len() * NR]);
        }
    }
}

fn add(out: &mut [f32], x: &[f32]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o += v;
    }
}

/// The output C: `rows × n`, row stride `ld`, as a raw pointer so that tasks
/// can write disjoint tiles of it in parallel.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    ld: usize,
}

// SAFETY: tasks only write disjoint tiles (distinct rows or distinct column
// panels), and the borrow of C outlives every task (rayon joins them).
unsafe impl Send for Out {}
// SAFETY: as for Send: shared references only lead to writes of disjoint
// tiles, and C outlives them.
unsafe impl Sync for Out {}

/// Buffers a matrix multiplication needs besides its operands (the packed
/// rows of A, the output tiles), kept between calls so that many small
/// products (attention) do not allocate.
#[derive(Default)]
pub struct Scratch {
    packed_a: Vec<f32>,
    blocks: Vec<RowBlock>,
    tiles: Vec<[f32; MR * NR]>,
}

/// Rows of A handled by one micro-kernel call, and where they are packed.
#[derive(Clone)]
struct RowBlock {
    rows: Range<usize>,
    /// [`MR`] or [`MR_TAIL`]: the kernel's height (≥ `rows.len()`).
    height: usize,
    offset: usize,
}

/// `C = epilogue(A·B)` on the calling thread. `c` holds `a.rows` rows of
/// `b.n()` values, `ldc` apart; `layout` says how A is read.
pub fn matmul(
    a: MatRef<'_>,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue<'_>,
    scratch: &mut Scratch,
    layout: Layout,
) {
    let isa = Isa::detect();
    let layout = if isa.level() == Level::Avx512 {
        layout
    } else {
        Layout::Packed
    };
    matmul_with(isa, a, b, c, ldc, epilogue, scratch, layout)
}

/// How the micro-kernel reads A.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Copied into k-major blocks first: the best for large products, where
    /// each block meets many panels of B.
    Packed,
    /// Straight from its rows: better when A meets few panels of B and
    /// packing would cost as much as the arithmetic (attention). AVX-512
    /// only; other CPUs pack anyway.
    InPlace,
}

#[allow(clippy::too_many_arguments)]
fn matmul_with(
    isa: Isa,
    a: MatRef<'_>,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue<'_>,
    scratch: &mut Scratch,
    layout: Layout,
) {
    let out = check_shapes(a, b, c, ldc, &epilogue);
    let whole = Task {
        rows: 0..a.rows,
        panels: 0..b.panels(),
    };
    // SAFETY: `check_shapes` proved that every tile lies inside `c`.
    unsafe { matmul_block(isa, a, b, out, &epilogue, whole, scratch, layout) };
}

/// As [`matmul`], spread over the rayon pool: blocks of rows when there are
/// enough rows, otherwise ranges of column panels (so that a short input
/// still uses every core, each reading part of the weights). A is read in
/// place on AVX-512, packed elsewhere.
pub fn matmul_parallel(
    a: MatRef<'_>,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue<'_>,
) {
    let isa = Isa::detect();
    // Reading A in place measured 3–25 % faster than packing it on every
    // encoder shape (the packing transposes scalar by scalar).
    let layout = if isa.level() == Level::Avx512 {
        Layout::InPlace
    } else {
        Layout::Packed
    };
    let out = check_shapes(a, b, c, ldc, &epilogue);
    let threads = rayon::current_num_threads().max(1);
    let row_blocks = a.rows.div_ceil(MC);
    let panels = b.panels();
    let tasks: Vec<Task> = if threads == 1 || a.rows * b.n() < 4096 {
        vec![Task {
            rows: 0..a.rows,
            panels: 0..panels,
        }]
    } else if row_blocks >= 2 * threads {
        (0..row_blocks)
            .map(|blk| Task {
                rows: blk * MC..((blk + 1) * MC).min(a.rows),
                panels: 0..panels,
            })
            .collect()
    } else {
        let count = threads.min(panels);
        (0..count)
            .map(|t| Task {
                rows: 0..a.rows,
                panels: t * panels / count..(t + 1) * panels / count,
            })
            .collect()
    };
    tasks
        .into_par_iter()
        .for_each_init(Scratch::default, |scratch, task| {
            // SAFETY: the tasks cover disjoint rows or disjoint panels.
            unsafe { matmul_block(isa, a, b, out, &epilogue, task, scratch, layout) };
        });
}

/// A part of C one thread computes.
struct Task {
    rows: Range<usize>,
    panels: Range<usize>,
}

fn check_shapes(
    a: MatRef<'_>,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
) -> Out {
    a.assert_fits();
    assert_eq!(a.cols, b.k(), "inner dimensions differ");
    assert!(ldc >= b.n(), "output row stride shorter than a row");
    if a.rows > 0 {
        assert!((a.rows - 1) * ldc + b.n() <= c.len(), "output too small");
    }
    epilogue.check(a.rows, b.n());
    Out {
        ptr: c.as_mut_ptr(),
        ld: ldc,
    }
}

/// Computes the rows and panels of `task` in C.
///
/// # Safety
/// `out` must be valid for every element of those rows and panels' columns
/// (below `b.n()`), and no other thread may touch them meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_block(
    isa: Isa,
    a: MatRef<'_>,
    b: &PackedB,
    out: Out,
    epilogue: &Epilogue<'_>,
    task: Task,
    scratch: &mut Scratch,
    layout: Layout,
) {
    let k = a.cols;
    let Scratch {
        packed_a,
        blocks,
        tiles,
    } = scratch;
    let mut start = task.rows.start;
    while start < task.rows.end {
        let end = (start + MC).min(task.rows.end);
        row_blocks(start..end, blocks);
        if layout == Layout::Packed {
            let needed = blocks.iter().map(|blk| blk.height * k).sum::<usize>();
            if packed_a.len() < needed {
                // Only grows; pack_a overwrites every element it is given.
                packed_a.resize(needed, 0.0);
            }
            for blk in blocks.iter() {
                let dst = &mut packed_a[blk.offset * k..][..blk.height * k];
                pack_a(a, blk.rows.start, blk.rows.len(), blk.height, dst);
            }
        }
        tiles.resize(blocks.len(), [0f32; MR * NR]);
        for p in task.panels.clone() {
            let bp = b.panel(p);
            let cols = p * NR..((p + 1) * NR).min(b.n());
            // k in chunks of KC: the chunk of the B panel stays in L1 while
            // every row block of this MC block streams past it.
            for kc in (0..k).step_by(KC) {
                let depth = KC.min(k - kc);
                for (blk, tile) in blocks.iter().zip(tiles.iter_mut()) {
                    let bk = &bp[kc * NR..];
                    if layout == Layout::InPlace {
                        kernel_in_place(isa, a, blk, kc, depth, bk, tile, kc > 0);
                    } else {
                        let ap =
                            &packed_a[blk.offset * k + kc * blk.height..][..depth * blk.height];
                        micro_kernel(isa, blk.height, depth, ap, bk, tile, kc > 0);
                    }
                }
            }
            for (blk, tile) in blocks.iter().zip(tiles.iter_mut()) {
                epilogue.apply(isa, blk.rows.clone(), cols.clone(), tile);
                for (t, i) in blk.rows.clone().enumerate() {
                    // SAFETY: row i, columns `cols` belong to this task (caller's contract).
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            out.ptr.add(i * out.ld + cols.start),
                            cols.len(),
                        )
                    };
                    let finished = &tile[t * NR..][..NR];
                    if let Ok(full) = <&mut [f32; NR]>::try_from(&mut *dst) {
                        // A constant length: inlined vector moves, not a memcpy call.
                        full.copy_from_slice(finished);
                    } else {
                        dst.copy_from_slice(&finished[..cols.len()]);
                    }
                }
            }
        }
        start = end;
    }
}

/// Splits rows into micro-kernel blocks: full [`MR`] blocks, then
/// [`MR_TAIL`] blocks (the last one possibly partial), packed one after
/// another (`offset` counts packed rows).
fn row_blocks(rows: Range<usize>, blocks: &mut Vec<RowBlock>) {
    blocks.clear();
    let (mut i, mut offset) = (rows.start, 0);
    while i < rows.end {
        let height = if rows.end - i >= MR { MR } else { MR_TAIL };
        let count = height.min(rows.end - i);
        blocks.push(RowBlock {
            rows: i..i + count,
            height,
            offset,
        });
        i += count;
        offset += height;
    }
}

/// Packs `count` rows of `a` from `row` into `dst`, k-major with `height`
/// floats per k (the block height the kernel uses: [`MR`] or [`MR_TAIL`]).
/// Rows past `count` are zero.
fn pack_a(a: MatRef<'_>, row: usize, count: usize, height: usize, dst: &mut [f32]) {
    let k = a.cols;
    let mut rows: [&[f32]; MR] = [&[]; MR];
    for (r, src) in rows.iter_mut().enumerate().take(count) {
        *src = &a.data[(row + r) * a.ld..][..k];
    }
    // Sequential writes, one read stream per row.
    for (kk, column) in dst.chunks_exact_mut(height).take(k).enumerate() {
        for (r, v) in column.iter_mut().enumerate() {
            *v = if r < count { rows[r][kk] } else { 0.0 };
        }
    }
}

/// `tile[r][c] (+)= Σ_k a[k][r] · b[k][c]` for a `height × NR` tile: added
/// to the tile's contents when `accumulate`, else replacing them.
fn micro_kernel(
    isa: Isa,
    height: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    tile: &mut [f32; MR * NR],
    accumulate: bool,
) {
    let full = height == MR;
    let h = if full { MR } else { MR_TAIL };
    assert!(a.len() >= k * h && b.len() >= k * NR);
    #[cfg(target_arch = "x86_64")]
    if isa.level() == Level::Avx512 {
        // SAFETY: the CPU has AVX-512F (detected), and the asserts above
        // bound every read; the tile holds MR × NR floats.
        unsafe {
            let (a, b, t) = (a.as_ptr(), b.as_ptr(), tile.as_mut_ptr());
            if full {
                avx512::kernel::<MR>(k, a, b, t, accumulate);
            } else {
                avx512::kernel::<MR_TAIL>(k, a, b, t, accumulate);
            }
        }
        return;
    }
    if full {
        portable::kernel::<MR>(isa, k, a, b, tile, accumulate);
    } else {
        portable::kernel::<MR_TAIL>(isa, k, a, b, tile, accumulate);
    }
}

/// The micro-kernel on `depth` columns of A from `kc`, read in place from the
/// rows of `blk` (rows past the last real one repeat it; their results are
/// never stored).
#[allow(clippy::too_many_arguments)]
fn kernel_in_place(
    isa: Isa,
    a: MatRef<'_>,
    blk: &RowBlock,
    kc: usize,
    depth: usize,
    b: &[f32],
    tile: &mut [f32; MR * NR],
    accumulate: bool,
) {
    assert!(isa.level() == Level::Avx512 && kc + depth <= a.cols && b.len() >= depth * NR);
    let row = |r: usize| {
        let i = blk.rows.start + r.min(blk.rows.len() - 1);
        a.data[i * a.ld + kc..][..depth].as_ptr()
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is there (asserted: only chosen when detected); each
    // row pointer has `depth` floats (sliced above), B was checked, the tile
    // holds MR × NR floats.
    unsafe {
        if blk.height == MR {
            let rows = std::array::from_fn::<_, MR, _>(row);
            avx512::kernel_rows::<MR>(depth, rows, b.as_ptr(), tile.as_mut_ptr(), accumulate);
        } else {
            let rows = std::array::from_fn::<_, MR_TAIL, _>(row);
            avx512::kernel_rows::<MR_TAIL>(depth, rows, b.as_ptr(), tile.as_mut_ptr(), accumulate);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::NR;

    /// # Safety
    /// AVX-512F must be available; `a` must hold `k · R` floats, `b` `k · NR`
    /// and `tile` `R · NR`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel<const R: usize>(
        k: usize,
        a: *const f32,
        b: *const f32,
        tile: *mut f32,
        accumulate: bool,
    ) {
        // SAFETY: as the caller guarantees.
        let mut acc = unsafe { load::<R>(tile, accumulate) };
        let (mut a, mut b) = (a, b);
        for _ in 0..k {
            // SAFETY: within the bounds the caller guarantees.
            unsafe {
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_loadu_ps(b.add(16));
                for (r, row) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a.add(r));
                    row[0] = _mm512_fmadd_ps(x, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(x, b1, row[1]);
                }
                a = a.add(R);
                b = b.add(NR);
            }
        }
        store(&acc, tile);
    }

    /// As [`kernel`], with A read in place: row `r` at `rows[r]`, its k
    /// elements contiguous.
    ///
    /// # Safety
    /// AVX-512F must be available; every `rows[r]` must hold `k` floats,
    /// `b` `k · NR` and `tile` `R · NR`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_rows<const R: usize>(
        k: usize,
        rows: [*const f32; R],
        b: *const f32,
        tile: *mut f32,
        accumulate: bool,
    ) {
        // SAFETY: as the caller guarantees.
        let mut acc = unsafe { load::<R>(tile, accumulate) };
        let mut b = b;
        for kk in 0..k {
            // SAFETY: within the bounds the caller guarantees.
            unsafe {
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_loadu_ps(b.add(16));
                for (row, src) in acc.iter_mut().zip(rows) {
                    let x = _mm512_set1_ps(*src.add(kk));
                    row[0] = _mm512_fmadd_ps(x, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(x, b1, row[1]);
                }
                b = b.add(NR);
            }
        }
        store(&acc, tile);
    }

    /// The tile's contents when `accumulate`, else zeros.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load<const R: usize>(tile: *const f32, accumulate: bool) -> [[__m512; 2]; R] {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        if accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: the tile holds R × NR floats.
                unsafe {
                    row[0] = _mm512_loadu_ps(tile.add(r * NR));
                    row[1] = _mm512_loadu_ps(tile.add(r * NR + 16));
                }
            }
        }
        acc
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn store<const R: usize>(acc: &[[__m512; 2]; R], tile: *mut f32) {
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: the tile holds R × NR floats.
            unsafe {
                _mm512_storeu_ps(tile.add(r * NR), row[0]);
                _mm512_storeu_ps(tile.add(r * NR + 16), row[1]);
            }
        }
    }
}

mod portable {
    use super::super::isa::{Isa, Level};
    use super::{MR, NR};

    #[inline(always)]
    fn body<const R: usize>(
        k: usize,
        a: &[f32],
        b: &[f32],
        tile: &mut [f32; MR * NR],
        accumulate: bool,
    ) {
        let mut acc = [[0f32; NR]; R];
        if accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                row.copy_from_slice(&tile[r * NR..][..NR]);
            }
        }
        for (ak, bk) in a.chunks_exact(R).zip(b.chunks_exact(NR)).take(k) {
            for (row, x) in acc.iter_mut().zip(ak) {
                for (c, y) in row.iter_mut().zip(bk) {
                    *c = x.mul_add(*y, *c);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            tile[r * NR..][..NR].copy_from_slice(row);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn body_avx2<const R: usize>(
        k: usize,
        a: &[f32],
        b: &[f32],
        tile: &mut [f32; MR * NR],
        accumulate: bool,
    ) {
        body::<R>(k, a, b, tile, accumulate)
    }

    /// The micro-kernel in plain Rust, vectorized by the compiler.
    pub fn kernel<const R: usize>(
        isa: Isa,
        k: usize,
        a: &[f32],
        b: &[f32],
        tile: &mut [f32; MR * NR],
        accumulate: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if isa.level() >= Level::Avx2 {
            // SAFETY: AVX2 and FMA were detected (an `Isa` comes from detection
            // only, and every level from Avx2 up has them).
            unsafe { body_avx2::<R>(k, a, b, tile, accumulate) };
            return;
        }
        let _ = isa;
        body::<R>(k, a, b, tile, accumulate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(a: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|kk| a[i * k + kk] as f64 * w[j * k + kk] as f64)
                    .sum::<f64>() as f32;
            }
        }
        c
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32
                    / 1000.0
                    - 1.0
            })
            .collect()
    }

    fn check(m: usize, k: usize, n: usize, parallel: bool) {
        for isa in Isa::all_supported() {
            check_with(
                isa,
                Layout::Packed,
                m,
                k,
                n,
                parallel && isa == Isa::detect(),
            );
            if isa.level() == Level::Avx512 {
                check_with(isa, Layout::InPlace, m, k, n, false);
            }
        }
    }

    fn check_with(isa: Isa, layout: Layout, m: usize, k: usize, n: usize, parallel: bool) {
        let a = values(m * k, 1);
        let w = values(n * k, 7);
        let bias = values(n, 3);
        let packed = PackedB::from_transposed(MatRef::dense(&w, n, k));
        let mut c = vec![f32::NAN; m * n];
        let epi = Epilogue::Bias(&bias);
        if parallel {
            matmul_parallel(MatRef::dense(&a, m, k), &packed, &mut c, n, epi);
        } else {
            matmul_with(
                isa,
                MatRef::dense(&a, m, k),
                &packed,
                &mut c,
                n,
                epi,
                &mut Scratch::default(),
                layout,
            );
        }
        let want = naive(&a, m, k, &w, n);
        for i in 0..m {
            for j in 0..n {
                let (got, want) = (c[i * n + j], want[i * n + j] + bias[j]);
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{isa:?} ({i},{j}) of {m}x{k}x{n}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn encoder_shapes() {
        check(200, 384, 1152, true);
        check(16, 1536, 384, true);
        check(5, 32, 7, false);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_shape_matches_naive(m in 1usize..40, k in 1usize..70, n in 1usize..100, par in any::<bool>()) {
            check(m, k, n, par);
        }
    }

    #[test]
    fn packing_from_k_major_equals_transposed() {
        let (k, n) = (9, 40);
        let b = values(k * n, 5);
        let mut bt = vec![0f32; n * k];
        for kk in 0..k {
            for j in 0..n {
                bt[j * k + kk] = b[kk * n + j];
            }
        }
        let mut packed = PackedB::default();
        packed.pack(MatRef::dense(&b, k, n));
        assert_eq!(
            packed.data,
            PackedB::from_transposed(MatRef::dense(&bt, n, k)).data
        );
    }

    #[test]
    fn residual_and_gelu_epilogues() {
        let (m, k, n) = (3, 4, 5);
        let a = values(m * k, 1);
        let w = values(n * k, 2);
        let bias = values(n, 3);
        let res = values(m * n, 4);
        let packed = PackedB::from_transposed(MatRef::dense(&w, n, k));
        let base = naive(&a, m, k, &w, n);
        let mut c = vec![0f32; m * n];
        matmul(
            MatRef::dense(&a, m, k),
            &packed,
            &mut c,
            n,
            Epilogue::BiasResidual(&bias, MatRef::dense(&res, m, n)),
            &mut Scratch::default(),
            Layout::Packed,
        );
        for i in 0..m * n {
            assert!((c[i] - (base[i] + bias[i % n] + res[i])).abs() < 1e-5);
        }
        matmul(
            MatRef::dense(&a, m, k),
            &packed,
            &mut c,
            n,
            Epilogue::BiasGelu(&bias),
            &mut Scratch::default(),
            Layout::Packed,
        );
        for i in 0..m * n {
            let x = (base[i] + bias[i % n]) as f64;
            let want = 0.5
                * x
                * (1.0 + super::super::elementwise::tests::erf64(x / std::f64::consts::SQRT_2));
            assert!((c[i] as f64 - want).abs() < 1e-5, "{} vs {want}", c[i]);
        }
    }
}
