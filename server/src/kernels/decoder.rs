//! The element-wise kernels of decoder-only language models (Llama, Qwen):
//! RMSNorm, SwiGLU's `silu(gate) · up`, rotary position embeddings, and
//! causal attention of new tokens over a sequence's cached keys and values
//! (grouped-query: several query heads share one key/value head).

#[cfg(test)]
use super::elementwise::softmax_in_place;
use super::elementwise::{LANES, exp, softmax_inline, sum_of};
use half::f16;

use super::isa::{Isa, Level, multiversion, prefetch, prefetch_far};

multiversion! {
    /// RMSNorm of each `weight.len()`-wide row of `x` into `out`:
    /// `x / √(mean(x²) + eps) · weight`.
    pub(crate) fn rms_norm_into(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let width = weight.len();
        for (row, dst) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
            let mean = sum_of(row, |v| v * v) / width as f32;
            let inv = 1.0 / (mean + eps).sqrt();
            for ((o, v), w) in dst.iter_mut().zip(row).zip(weight) {
                *o = *v * inv * *w;
            }
        }
    }
}

/// RMSNorm of each row of `x` in place (Qwen3's per-head norms of Q and K).
pub fn rms_norm_in_place(isa: Isa, x: &mut [f32], weight: &[f32], eps: f32) {
    let copy = x.to_vec();
    rms_norm_into(isa, &copy, weight, eps, x);
}

multiversion! {
    /// `out = silu(gate) · up`, element by element (SwiGLU), in one pass
    /// of whole lanes.
    pub(crate) fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let whole = out.len() / LANES * LANES;
        let lanes = out[..whole]
            .chunks_exact_mut(LANES)
            .zip(gate.chunks_exact(LANES))
            .zip(up.chunks_exact(LANES));
        for ((out, gate), up) in lanes {
            for l in 0..LANES {
                out[l] = silu_times(gate[l], up[l]);
            }
        }
        for i in whole..out.len() {
            out[i] = silu_times(gate[i], up[i]);
        }
    }
}

/// `silu(g) · u`.
#[inline(always)]
fn silu_times(g: f32, u: f32) -> f32 {
    g / (1.0 + exp(-g)) * u
}

/// Which elements rotary embeddings rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Element `i` with `i + d/2` (transformers' `rotate_half`; GGUF Qwen).
    Half,
    /// Element `2i` with `2i + 1` (GGUF Llama, whose Q and K rows
    /// llama.cpp's converter permuted to this order).
    Interleaved,
}

/// Rotary position embeddings: cosines and sines per position, computed
/// once up to the longest context.
#[derive(Clone, Debug)]
pub struct Rope {
    head_dim: usize,
    style: RopeStyle,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// The table for `positions` positions of heads `head_dim` wide, base
    /// `theta`: frequency `i` is `theta^(−2i/d)`, as transformers computes
    /// it (in f32, then the angle `position · frequency` in f32).
    pub fn new(head_dim: usize, theta: f32, positions: usize, style: RopeStyle) -> Rope {
        let half = head_dim / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for f in &freqs {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Rope {
            head_dim,
            style,
            cos,
            sin,
        }
    }

    /// Positions the table covers.
    pub fn positions(&self) -> usize {
        self.cos.len() / (self.head_dim / 2).max(1)
    }

    /// The cosines and sines, `positions × head_dim/2` each, row-major.
    pub fn tables(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }

    /// Rotates every head of `row` (`heads × head_dim`) for `position`.
    pub fn apply(&self, row: &mut [f32], position: usize) {
        let half = self.head_dim / 2;
        let cos = &self.cos[position * half..][..half];
        let sin = &self.sin[position * half..][..half];
        for head in row.chunks_exact_mut(self.head_dim) {
            match self.style {
                RopeStyle::Half => {
                    let (a, b) = head.split_at_mut(half);
                    for i in 0..half {
                        let (x, y) = (a[i], b[i]);
                        a[i] = x * cos[i] - y * sin[i];
                        b[i] = y * cos[i] + x * sin[i];
                    }
                }
                RopeStyle::Interleaved => {
                    for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                        let (x, y) = (pair[0], pair[1]);
                        pair[0] = x * cos[i] - y * sin[i];
                        pair[1] = y * cos[i] + x * sin[i];
                    }
                }
            }
        }
    }
}

/// Positions per tile of a key cache.
pub const KEY_TILE: usize = 16;

/// An element of a key/value cache: f32, or f16 (half the memory, and half
/// the bytes attention reads at every step).
pub trait KvElement: Copy + Default + Send + Sync + 'static {
    /// `x` as an element (to nearest, ties to even).
    fn from_f32(x: f32) -> Self;
    /// Its value.
    fn to_f32(self) -> f32;
    /// The values of 8 elements, in the kernels' inner loops.
    #[inline(always)]
    fn to_f32_x8(from: &[Self; 8]) -> [f32; 8] {
        let mut out = [0f32; 8];
        for l in 0..8 {
            out[l] = from[l].to_f32();
        }
        out
    }
}

impl KvElement for f32 {
    #[inline(always)]
    fn from_f32(x: f32) -> f32 {
        x
    }

    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl KvElement for f16 {
    #[inline(always)]
    fn from_f32(x: f32) -> f16 {
        f16::from_f32(x)
    }

    /// The portable conversion, used below the AVX2 level (F16c reads
    /// the cache above it).
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// An f16 of a cache that [`causal_attention`] hands to the kernels at
/// the AVX2 or AVX-512 level, read with F16C's one instruction and no
/// check in the loop (the portable conversion cost more than the halved
/// memory saved). Private: only that function makes these, and only at
/// those levels, where F16C was detected.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct F16c(f16);

impl F16c {
    /// `values`, as read with F16C.
    fn slice(values: &[f16]) -> &[F16c] {
        // SAFETY: F16c is a transparent wrapper of f16: the same size,
        // alignment and bit validity.
        unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), values.len()) }
    }
}

impl KvElement for F16c {
    #[inline(always)]
    fn from_f32(x: f32) -> F16c {
        F16c(f16::from_f32(x))
    }

    #[inline(always)]
    fn to_f32(self) -> f32 {
        KvElement::to_f32(self.0)
    }

    #[inline(always)]
    fn to_f32_x8(from: &[F16c; 8]) -> [f32; 8] {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{__m256, _mm_loadu_si128, _mm256_cvtph_ps};
            // SAFETY: F16c values reach the kernels only from
            // causal_attention at the AVX2 or AVX-512 level, which an
            // Isa has only where F16C was detected; `from` is 16 bytes, and
            // the result 8 f32, the size of the array.
            unsafe {
                std::mem::transmute::<__m256, [f32; 8]>(_mm256_cvtph_ps(_mm_loadu_si128(
                    from.as_ptr().cast(),
                )))
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        std::array::from_fn(|l| from[l].to_f32())
    }
}

/// Appends the key of `position` (`kv_heads × head_dim`, the positions
/// before it already there) to `keys`, a sequence's cached keys in tiles
/// of [`KEY_TILE`] positions: in a tile, each key/value head's `head_dim`
/// elements one after the other, each as [`KEY_TILE`] lanes, one per
/// position (element `d` of head `h` of position `p` at
/// `(p / KEY_TILE)·KEY_TILE·kv_width + (h·head_dim + d)·KEY_TILE + p % KEY_TILE`).
/// So one load holds one element of 16 positions, and the scores of 16
/// positions are 16 lanes of multiply-adds, with no sum across lanes. A
/// new tile starts as zeros; the positions not yet written score against
/// nothing (they are never visible).
pub fn append_key<E: KvElement>(keys: &mut Vec<E>, position: usize, key: &[f32]) {
    let kv_width = key.len();
    let tile = position / KEY_TILE;
    let lane = position % KEY_TILE;
    if lane == 0 {
        debug_assert_eq!(
            keys.len(),
            tile * KEY_TILE * kv_width,
            "keys appended in order"
        );
        keys.resize((tile + 1) * KEY_TILE * kv_width, E::default());
    }
    let base = &mut keys[tile * KEY_TILE * kv_width..][..KEY_TILE * kv_width];
    for (e, v) in key.iter().enumerate() {
        base[e * KEY_TILE + lane] = E::from_f32(*v);
    }
}

/// The shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// A sequence's cached keys (in tiles, as [`append_key`] lays them out) and
/// values (`positions × kv_heads·head_dim`) at one layer, in the cache's
/// element type.
#[derive(Clone, Copy)]
pub enum KvSlices<'a> {
    /// Keys and values in f32.
    F32(&'a [f32], &'a [f32]),
    /// Keys and values in f16.
    F16(&'a [f16], &'a [f16]),
}

/// Causal attention of `queries` (`rows × heads·head_dim`, positions
/// `first`, `first + 1`, … of a sequence) over its cached keys and values
/// (`cache`, at least up to the last query's position), for the query
/// heads `only` (all of them, or a part, so that one decoded row can be
/// shared between threads), into `out` (`rows × only.len()·head_dim`).
/// `scores` is scratch space. An f16 cache is read with F16C's conversion
/// inlined into the loops at the AVX2 and AVX-512 levels (each of which
/// implies F16C), with the portable one below them. As many query heads
/// are attended together as the level's registers hold the sums of (the
/// level's `Fit`).
#[allow(clippy::too_many_arguments)]
pub fn causal_attention(
    isa: Isa,
    queries: &[f32],
    first: usize,
    cache: KvSlices<'_>,
    shape: Heads,
    only: std::ops::Range<usize>,
    out: &mut [f32],
    scores: &mut Vec<f32>,
) {
    let fit = Fit::of(isa);
    match cache {
        KvSlices::F32(keys, values) => attention_of(
            isa, queries, first, keys, values, shape, only, fit, out, scores,
        ),
        KvSlices::F16(keys, values) if isa.level() >= Level::Avx2 => {
            let (keys, values) = (F16c::slice(keys), F16c::slice(values));
            attention_of(
                isa, queries, first, keys, values, shape, only, fit, out, scores,
            )
        }
        KvSlices::F16(keys, values) => attention_of(
            isa, queries, first, keys, values, shape, only, fit, out, scores,
        ),
    }
}

multiversion! {
    /// [`causal_attention`] for caches of any element type, the rows a
    /// block of [`ROW_BLOCK`] at a time. For each row,
    /// the scores of every head a tile of [`KEY_TILE`] positions at a time,
    /// then the weighted sums of every head a block of [`VALUE_BLOCK`]
    /// positions at a time: the keys of a tile (and the values of a block)
    /// of all key/value heads lie together, so that the cache is read once,
    /// front to back, as the hardware streams it best. (Read one key/value
    /// head after the other, each pass taking a third of every run of
    /// bytes, the f32 caches of a 16-sequence decode step, far from every
    /// CPU cache, were read at 9.8 GB/s by one core of an AVX2 EPYC whose
    /// plain read of them reaches 18 GB/s; now at 11.5 GB/s: `cargo bench
    /// --bench attention`, docs/benchmarks.md.)
    #[allow(clippy::too_many_arguments)]
    fn attention_of<E: KvElement>(
        queries: &[f32],
        first: usize,
        keys: &[E],
        values: &[E],
        shape: Heads,
        only: std::ops::Range<usize>,
        fit: Fit,
        out: &mut [f32],
        scores: &mut Vec<f32>,
    ) {
        let Heads { heads, kv_heads, head_dim } = shape;
        let q_width = heads * head_dim;
        let kv_width = kv_heads * head_dim;
        let out_width = only.len() * head_dim;
        let rows = queries.len() / q_width;
        debug_assert!(first + rows <= keys.len() / kv_width, "queries past the cache");
        debug_assert!(only.end <= heads && out.len() == rows * out_width, "head range");
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut block = 0..rows.min(ROW_BLOCK);
        while !block.is_empty() {
            // Each row's scores (`only.len() × visible`), one after the other.
            let visible = |r: usize| first + r + 1;
            let spans: Vec<std::ops::Range<usize>> = block
                .clone()
                .scan(0, |at, r| {
                    let span = *at..*at + only.len() * visible(r);
                    *at = span.end;
                    Some(span)
                })
                .collect();
            scores.clear();
            scores.resize(spans[spans.len() - 1].end, 0.0);
            let row = |r: usize| Row {
                q: &queries[r * q_width..][..q_width],
                keys,
                values,
                shape,
                only: only.clone(),
                fit,
                visible: visible(r),
            };
            // Each tile of keys (and block of values) meets every row of
            // the block that sees it while it is in the L1 cache; the first
            // row to read it asks for the next one ahead, the others find
            // it in cache.
            let widest = visible(block.end - 1);
            for tile in 0..widest.div_ceil(KEY_TILE) {
                let mut ahead = true;
                for (r, span) in block.clone().zip(&spans) {
                    if tile * KEY_TILE < visible(r) {
                        let o = &mut out[r * out_width..][..out_width];
                        row(r).pass(Part::Scores { tile, ahead }, &mut scores[span.clone()], o);
                        ahead = false;
                    }
                }
            }
            for (r, span) in block.clone().zip(&spans) {
                for head_scores in scores[span.clone()].chunks_exact_mut(visible(r)) {
                    softmax_inline(head_scores, scale);
                }
            }
            let mut from = 0;
            while from < widest {
                let to = from + VALUE_BLOCK;
                let mut ahead = true;
                for (r, span) in block.clone().zip(&spans) {
                    if from < visible(r) {
                        let o = &mut out[r * out_width..][..out_width];
                        let positions = from..to.min(visible(r));
                        row(r).pass(Part::Sums { positions, ahead }, &mut scores[span.clone()], o);
                        ahead = false;
                    }
                }
                from = to;
            }
            block = block.end..rows.min(block.end + ROW_BLOCK);
        }
    }
}

/// Query rows of one sequence attended together ([`attention_of`]): a
/// prompt's rows see the same keys and values, and each tile of them read
/// from memory is used by all the block's rows that see it (one row at a
/// time, a 2048-token prompt read every layer's keys and values once per
/// row, from the L3 cache at best). Each row's numbers are computed as
/// when it is alone, in the same order.
const ROW_BLOCK: usize = 16;

/// One row's queries and what it attends to.
struct Row<'a, E> {
    q: &'a [f32],
    keys: &'a [E],
    values: &'a [E],
    shape: Heads,
    only: std::ops::Range<usize>,
    /// How the kernels fit the registers.
    fit: Fit,
    visible: usize,
}

impl<E: KvElement> Row<'_, E> {
    /// `part` for every head of `only`: the query heads of one key/value
    /// head up to `fit.pack` at a time, each key and value loaded once for
    /// them. (A method, not a closure: a closure is compiled without its
    /// caller's instruction set.)
    #[inline(always)]
    fn pass(&self, part: Part, scores: &mut [f32], out: &mut [f32]) {
        let Heads {
            heads,
            kv_heads,
            head_dim,
        } = self.shape;
        let (group, visible, only) = (heads / kv_heads, self.visible, &self.only);
        let mut h = only.start;
        while h < only.end {
            let kvh = h / group;
            let end = ((kvh + 1) * group).min(only.end).min(h + self.fit.pack);
            let mine = (h - only.start)..(end - only.start);
            let pack = Pack {
                q: &self.q[h * head_dim..end * head_dim],
                cache: Cache {
                    keys: &self.keys[kvh * head_dim * KEY_TILE..],
                    values: &self.values[kvh * head_dim..],
                    stride: kv_heads * head_dim,
                    visible,
                },
                scores: &mut scores[mine.start * visible..mine.end * visible],
                out: &mut out[mine.start * head_dim..mine.end * head_dim],
            };
            let width = self.fit.sum_width;
            match (end - h, self.fit.score_lanes) {
                (1, HALF_TILE) => pack.attend::<1, HALF_TILE>(part.clone(), width),
                (2, HALF_TILE) => pack.attend::<2, HALF_TILE>(part.clone(), width),
                (3, HALF_TILE) => pack.attend::<3, HALF_TILE>(part.clone(), width),
                (_, HALF_TILE) => pack.attend::<4, HALF_TILE>(part.clone(), width),
                (1, _) => pack.attend::<1, KEY_TILE>(part.clone(), width),
                (2, _) => pack.attend::<2, KEY_TILE>(part.clone(), width),
                (3, _) => pack.attend::<3, KEY_TILE>(part.clone(), width),
                _ => pack.attend::<4, KEY_TILE>(part.clone(), width),
            }
            h = end;
        }
    }
}

/// Positions of values summed for every head before the next ones: their
/// values of all key/value heads stay in the L1 cache while each head's
/// are summed (16 positions of SmolLM2's 3 heads of 64 f32 are 12 KiB).
const VALUE_BLOCK: usize = 16;

/// How attention's sums fit an instruction set's vector registers: the
/// most query heads attended together (`pack`, each key and value loaded
/// and widened once for them), the positions of a tile of keys scored in
/// one pass (`score_lanes`: the whole tile or each half in turn; each
/// position's score is the same number either way, its lane's chains of
/// sums, [`tile_scores`]) and the widest weighted sums (`sum_width`
/// elements of each head kept in registers). None of them changes a
/// number: only how many registers the sums take.
#[derive(Clone, Copy, Debug)]
struct Fit {
    pack: usize,
    score_lanes: usize,
    sum_width: usize,
}

impl Fit {
    /// The fit of `isa`'s level:
    /// - AVX-512 (32 registers of 16 lanes): 4 heads, each with the 4
    ///   chains of score sums of a whole tile (16 registers) and sums 64
    ///   wide (16);
    /// - AVX2 (16 registers of 8 lanes): 3 heads (SmolLM2's group), each
    ///   with the score sums of half a tile (12 registers, the half's keys
    ///   and a query element in 2 more) and sums 16 wide (6). A whole tile
    ///   and sums 64 wide took 24 registers each way for 3 heads, spilled
    ///   to the stack at every multiply-add; one head at a time read each
    ///   key and value 3 times from the L1 cache and widened an f16
    ///   cache's 3 times (`cargo bench --bench attention` on the AVX2
    ///   EPYC, one head at a time → 3, with the loops' bounds checked once:
    ///   a decode step in cache 0.54 → 0.42 ms in f32, 0.48 → 0.34 in f16;
    ///   16 sequences far from cache 12.0–12.6 → 11.4–11.6 ms in f32,
    ///   8.7 → 6.6 in f16);
    /// - below it, one head.
    fn of(isa: Isa) -> Fit {
        match isa.level() {
            Level::Avx512 => Fit {
                pack: 4,
                score_lanes: KEY_TILE,
                sum_width: 64,
            },
            Level::Avx2 => Fit {
                pack: 3,
                score_lanes: HALF_TILE,
                sum_width: 16,
            },
            _ => Fit {
                pack: 1,
                score_lanes: KEY_TILE,
                sum_width: 64,
            },
        }
    }
}

/// Half a tile of keys' positions.
const HALF_TILE: usize = KEY_TILE / 2;

/// The cached keys and values of one key/value head, `visible`
/// positions: position `p`'s values at `values[p·stride..]`, its keys in
/// tile `p / KEY_TILE` at `keys[(p / KEY_TILE)·KEY_TILE·stride..]`, element
/// `d` at lane `p % KEY_TILE` of `[d·KEY_TILE..]` there.
#[derive(Clone, Copy)]
struct Cache<'a, E> {
    keys: &'a [E],
    values: &'a [E],
    stride: usize,
    visible: usize,
}

/// One part of a row's attention for a pack of query heads.
#[derive(Clone)]
enum Part {
    /// The scores of one tile of positions; the next tile asked of the
    /// cache `ahead` of its use.
    Scores { tile: usize, ahead: bool },
    /// The weighted sums of the values of these positions, added to those
    /// of the positions before them; the next block's asked for `ahead`.
    Sums {
        positions: std::ops::Range<usize>,
        ahead: bool,
    },
}

/// `G` query heads of one row that share one key/value head: their
/// queries (`G × head_dim`), the cache of their key/value head, their
/// scores (`G × visible`: raw, then softmaxed in place) and their outputs
/// (`G × head_dim`).
struct Pack<'a, E> {
    q: &'a [f32],
    cache: Cache<'a, E>,
    scores: &'a mut [f32],
    out: &'a mut [f32],
}

impl<E: KvElement> Pack<'_, E> {
    /// Computes `part` for `G` heads. Plain loops: a closure handed to an
    /// iterator adapter is compiled apart, without the caller's instruction
    /// set (its mul_add became a call to a software fmaf). Each head's
    /// numbers are summed in the same order whatever `G` is (so that a row
    /// split between threads by heads, or attended one head at a time,
    /// gives the same numbers).
    #[inline(always)]
    fn attend<const G: usize, const L: usize>(self, part: Part, sum_width: usize) {
        let Pack {
            q,
            cache,
            scores,
            out,
        } = self;
        let dim = q.len() / G;
        let visible = cache.visible;
        match part {
            Part::Scores { tile, ahead } => {
                let at = tile * KEY_TILE * cache.stride;
                let keys = &cache.keys[at..][..dim * KEY_TILE];
                // The next tile's rows are asked for one by one as this
                // one's are read: a sequence's keys are too many to stay in
                // cache between steps, and the hardware alone left the
                // loads waiting.
                let next = if ahead && (tile + 1) * KEY_TILE < visible {
                    &cache.keys[at + KEY_TILE * cache.stride..][..dim * KEY_TILE]
                } else {
                    &[]
                };
                let mut lane = 0;
                while lane < KEY_TILE {
                    let from = tile * KEY_TILE + lane;
                    if from >= visible {
                        break;
                    }
                    let tile_scores = if lane == 0 && !next.is_empty() {
                        tile_scores::<G, L, E, true>(q, keys, lane, next)
                    } else {
                        tile_scores::<G, L, E, false>(q, keys, lane, &[])
                    };
                    let n = L.min(visible - from);
                    for (g, s) in tile_scores.iter().enumerate() {
                        scores[g * visible + from..][..n].copy_from_slice(&s[..n]);
                    }
                    lane += L;
                }
            }
            Part::Sums { positions, ahead } => {
                let mut done = 0;
                while sum_width >= 64 && dim - done >= 64 {
                    weighted_sums::<G, 64, E>(scores, cache, positions.clone(), ahead, done, out);
                    done += 64;
                }
                while dim - done >= 16 {
                    weighted_sums::<G, 16, E>(scores, cache, positions.clone(), ahead, done, out);
                    done += 16;
                }
                while done < dim {
                    weighted_sums::<G, 1, E>(scores, cache, positions.clone(), ahead, done, out);
                    done += 1;
                }
            }
        }
    }
}

/// The scores (unscaled dot products) of `G` query heads (`q`:
/// `G × dim`) against `L` positions of one tile of keys (`keys`: `dim`
/// rows of [`KEY_TILE`] lanes; the positions of lanes `lane..lane + L`):
/// each position's sum in its own lane, element by element, so that
/// nothing is summed across lanes (a dot product per position spent most
/// of its time adding its lanes together). Each head sums in `CHAINS` sets
/// of lanes (elements `d` with the same `d % CHAINS`) added at the end: one
/// chain of multiply-adds waits on the one before it, several keep the unit
/// busy. Row by row, when `ASK`, the same row of `next` (the next tile) is
/// asked of the cache. (`ASK` a constant, not a test of `next` in the loop:
/// the test split the loop into blocks across which LLVM kept 9 of AVX2's
/// 12 chains on the stack; a 128-row prompt's attention at AVX2, one
/// thread, 14.5 → 12.5 ms, `cargo bench --bench attention`.)
#[inline(always)]
fn tile_scores<const G: usize, const L: usize, E: KvElement, const ASK: bool>(
    q: &[f32],
    keys: &[E],
    lane: usize,
    next: &[E],
) -> [[f32; L]; G] {
    const CHAINS: usize = 4;
    let dim = keys.len() / KEY_TILE;
    assert!(
        keys.len() == dim * KEY_TILE && q.len() == G * dim && lane + L <= KEY_TILE,
        "a tile of keys and G heads' queries"
    );
    assert!(!ASK || next.len() == keys.len(), "the next tile");
    // The element `d` of head `g`'s query (in bounds: `q` is G × dim).
    let query = |g: usize, d: usize| {
        debug_assert!(g < G && d < dim);
        // SAFETY: g < G and d < dim, and q.len() == G·dim (asserted).
        unsafe { *q.get_unchecked(g * dim + d) }
    };
    // The L lanes of row `d` of the tile (in bounds: d < dim), as f32.
    let key_row = |d: usize| {
        debug_assert!(d < dim);
        let at = d * KEY_TILE + lane;
        // SAFETY: d·KEY_TILE + lane + L <= dim·KEY_TILE == keys.len()
        // (asserted above).
        widen::<L, E>(unsafe { keys.get_unchecked(at..at + L) })
    };
    let mut chains = [[[0f32; L]; CHAINS]; G];
    let whole = dim / CHAINS * CHAINS;
    for d0 in (0..whole).step_by(CHAINS) {
        for c in 0..CHAINS {
            if ASK {
                // SAFETY: next.len() == keys.len() (asserted), d0 + c < dim.
                prefetch(unsafe {
                    next.get_unchecked((d0 + c) * KEY_TILE..(d0 + c + 1) * KEY_TILE)
                });
            }
            let k = key_row(d0 + c);
            for (g, head) in chains.iter_mut().enumerate() {
                let x = query(g, d0 + c);
                let chain = &mut head[c];
                for l in 0..L {
                    chain[l] = x.mul_add(k[l], chain[l]);
                }
            }
        }
    }
    for d in whole..dim {
        let k = key_row(d);
        for (g, head) in chains.iter_mut().enumerate() {
            let x = query(g, d);
            let chain = &mut head[0];
            for l in 0..L {
                chain[l] = x.mul_add(k[l], chain[l]);
            }
        }
    }
    let mut sums = [[0f32; L]; G];
    for g in 0..G {
        for chain in &chains[g] {
            for l in 0..L {
                sums[g][l] += chain[l];
            }
        }
    }
    sums
}

/// The first `N` elements of `from` as f32 (a plain loop, so that it is
/// compiled with the caller's instruction set and vectorized with it).
#[inline(always)]
fn widen<const N: usize, E: KvElement>(from: &[E]) -> [f32; N] {
    let from = &from[..N];
    let mut out = [0f32; N];
    let whole = N / 8 * 8;
    for l in (0..whole).step_by(8) {
        let eight: &[E; 8] = from[l..l + 8].try_into().expect("8 elements");
        out[l..l + 8].copy_from_slice(&E::to_f32_x8(eight));
    }
    for l in whole..N {
        out[l] = from[l].to_f32();
    }
    out
}

/// Positions ahead whose values are asked of the cache while one is summed:
/// the next block's.
const VALUES_AHEAD: usize = VALUE_BLOCK;

/// Positions ahead whose values are asked of the outer caches while one is
/// summed (3 blocks), so that the next block's, asked for one block ahead,
/// come from there rather than from memory: a block's sums take too little
/// time to wait out memory's latency alone. The f32 caches of a 16-sequence
/// decode step, one thread, `cargo bench --bench attention` on the
/// AVX-512 EPYC: 12.6–13.9 → 10.0–11.5 ms at AVX2 and at AVX-512, f16
/// caches unchanged; docs/benchmarks.md. (Into L1, 32 or 48 positions
/// ahead instead of 16 were slower: with the block in use, more than its
/// 32 KiB hold.)
const VALUES_FAR: usize = 3 * VALUE_BLOCK;

/// `out[g·dim + at..][..W] += Σₚ scores[g·visible + p] · values[p·stride + at..][..W]`
/// over `positions` for each of the `G` heads (from zero at position 0),
/// the sums kept in registers (summing into `out` in memory made each
/// position wait for the store of the one before) and each value chunk
/// loaded once for all heads. Continuing from `out` chains every position's
/// multiply-add after the one before, as one loop over all positions does.
#[inline(always)]
fn weighted_sums<const G: usize, const W: usize, E: KvElement>(
    scores: &[f32],
    cache: Cache<'_, E>,
    positions: std::ops::Range<usize>,
    ahead: bool,
    at: usize,
    out: &mut [f32],
) {
    let dim = out.len() / G;
    let (visible, stride) = (cache.visible, cache.stride);
    assert!(
        positions.end <= visible
            && at + W <= dim.min(stride)
            && scores.len() >= G * visible
            && cache.values.len() >= (visible - 1) * stride + at + W,
        "weighted sums inside the scores, values and output"
    );
    // The W values of position `p` from `at` on (in bounds: p < visible).
    let values_at = |p: usize| {
        debug_assert!(p < visible);
        // SAFETY: p·stride + at + W <= (visible − 1)·stride + at + W <=
        // values.len() (asserted above).
        unsafe {
            cache
                .values
                .get_unchecked(p * stride + at..p * stride + at + W)
        }
    };
    let mut sums = [[0f32; W]; G];
    if positions.start > 0 {
        for g in 0..G {
            sums[g].copy_from_slice(&out[g * dim + at..][..W]);
        }
    }
    for p in positions {
        if ahead && p + VALUES_AHEAD < visible {
            prefetch(values_at(p + VALUES_AHEAD));
            if p + VALUES_FAR < visible {
                prefetch_far(values_at(p + VALUES_FAR));
            }
        }
        let v = widen::<W, E>(values_at(p));
        for (g, sum) in sums.iter_mut().enumerate() {
            // SAFETY: g·visible + p < G·visible <= scores.len() (asserted).
            let w = unsafe { *scores.get_unchecked(g * visible + p) };
            for l in 0..W {
                sum[l] = w.mul_add(v[l], sum[l]);
            }
        }
    }
    for g in 0..G {
        out[g * dim + at..][..W].copy_from_slice(&sums[g]);
    }
}

/// The same softmax as the encoder's, for tests comparing the two.
#[cfg(test)]
fn softmax_reference(x: &mut [f32], scale: f32) {
    softmax_in_place(Isa::detect(), x, scale);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{i}: {x} vs {y}");
        }
    }

    #[test]
    fn rms_norm_matches_its_formula_on_every_isa() {
        let x: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let w: Vec<f32> = (0..20).map(|i| 1.0 + i as f32 * 0.01).collect();
        let mut expected = vec![0.0; 40];
        for r in 0..2 {
            let row = &x[r * 20..][..20];
            let ms: f64 = row.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / 20.0;
            for i in 0..20 {
                expected[r * 20 + i] =
                    (f64::from(row[i]) / (ms + 1e-6).sqrt() * f64::from(w[i])) as f32;
            }
        }
        for isa in Isa::all_supported() {
            let mut out = vec![0.0; 40];
            rms_norm_into(isa, &x, &w, 1e-6, &mut out);
            close(&out, &expected, 1e-6);
        }
    }

    #[test]
    fn silu_mul_matches_its_formula() {
        let g: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 9.0).collect();
        let u: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        for isa in Isa::all_supported() {
            let mut out = vec![0.0; g.len()];
            silu_mul(isa, &g, &u, &mut out);
            let expected: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| {
                    (f64::from(*g) / (1.0 + (-f64::from(*g)).exp()) * f64::from(*u)) as f32
                })
                .collect();
            close(&out, &expected, 1e-6);
        }
    }

    #[test]
    fn rope_styles_are_the_same_rotation_of_permuted_elements() {
        let d = 8;
        let half = Rope::new(d, 10_000.0, 16, RopeStyle::Half);
        let inter = Rope::new(d, 10_000.0, 16, RopeStyle::Interleaved);
        let x: Vec<f32> = (0..2 * d).map(|i| i as f32 * 0.3 - 1.0).collect();
        // Interleaved order: (a0, b0, a1, b1, …) for the half order (a…, b…).
        let to_inter = |v: &[f32]| -> Vec<f32> {
            v.chunks(d)
                .flat_map(|h| (0..d / 2).flat_map(move |i| [h[i], h[i + d / 2]]))
                .collect()
        };
        let mut a = x.clone();
        half.apply(&mut a, 5);
        let mut b = to_inter(&x);
        inter.apply(&mut b, 5);
        close(&to_inter(&a), &b, 1e-6);
        let mut zero = x.clone();
        half.apply(&mut zero, 0);
        close(&zero, &x, 0.0);
        assert_eq!(half.positions(), 16);
    }

    #[test]
    fn causal_attention_sees_only_the_past_and_groups_heads() {
        let shape = Heads {
            heads: 4,
            kv_heads: 2,
            head_dim: 4,
        };
        let positions = 5;
        let keys: Vec<f32> = (0..positions * 8).map(|i| (i as f32 * 0.7).sin()).collect();
        let values: Vec<f32> = (0..positions * 8).map(|i| (i as f32 * 0.3).cos()).collect();
        let queries: Vec<f32> = (0..2 * 16).map(|i| (i as f32 * 0.11).sin()).collect();
        let tiled: Vec<f32> = tiled(&keys, 8);
        let mut out = vec![0.0; 32];
        let mut scores = Vec::new();
        for isa in Isa::all_supported() {
            causal_attention(
                isa,
                &queries,
                positions - 2,
                KvSlices::F32(&tiled, &values),
                shape,
                0..4,
                &mut out,
                &mut scores,
            );
            // Heads 1 and 2 alone: the same numbers, packed.
            let mut part = vec![0.0; 2 * 8];
            causal_attention(
                isa,
                &queries,
                positions - 2,
                KvSlices::F32(&tiled, &values),
                shape,
                1..3,
                &mut part,
                &mut scores,
            );
            for r in 0..2 {
                close(&part[r * 8..][..8], &out[r * 16 + 4..][..8], 0.0);
            }
            let expected = attention_reference(&queries, positions - 2, &keys, &values, shape);
            close(&out, &expected, 1e-5);
        }
    }

    /// A prompt's rows attended in blocks of [`ROW_BLOCK`] give each row's
    /// numbers bit for bit as when it is attended alone (a decode step), for
    /// f32 and f16 caches, at every instruction set, over more rows than a
    /// block and positions past several tiles.
    #[test]
    fn rows_attended_together_equal_rows_attended_alone() {
        let shape = Heads {
            heads: 6,
            kv_heads: 2,
            head_dim: 24,
        };
        let (kv_width, q_width) = (48, 144);
        let (first, rows) = (21, ROW_BLOCK + 19);
        let positions = first + rows;
        let (keys, values, queries) = inputs(positions * kv_width, rows * q_width);
        let keys32: Vec<f32> = tiled(&keys, kv_width);
        let keys16: Vec<f16> = tiled(&keys, kv_width);
        let values16: Vec<f16> = values.iter().map(|v| f16::from_f32(*v)).collect();
        let caches = [
            KvSlices::F32(&keys32, &values),
            KvSlices::F16(&keys16, &values16),
        ];
        let mut scores = Vec::new();
        for isa in Isa::all_supported() {
            for cache in caches {
                for heads in [0..6, 2..5] {
                    let width = heads.len() * shape.head_dim;
                    let mut together = vec![0.0; rows * width];
                    causal_attention(
                        isa,
                        &queries,
                        first,
                        cache,
                        shape,
                        heads.clone(),
                        &mut together,
                        &mut scores,
                    );
                    for r in 0..rows {
                        let mut alone = vec![0.0; width];
                        causal_attention(
                            isa,
                            &queries[r * q_width..][..q_width],
                            first + r,
                            cache,
                            shape,
                            heads.clone(),
                            &mut alone,
                            &mut scores,
                        );
                        for (a, b) in alone.iter().zip(&together[r * width..][..width]) {
                            assert_eq!(a.to_bits(), b.to_bits(), "{} row {r}", isa.name());
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn f16c_reads_eight_at_a_time_as_the_portable_conversion() {
        // F16c is made only at the AVX2 level and above (every x86-64 CPU
        // with AVX2 has it); causal_attention_f16's test covers the rest
        assert!(
            Isa::all_supported()
                .iter()
                .any(|isa| isa.level() >= Level::Avx2),
            "this CPU has no AVX2: the f16 cache is read with the portable conversion only"
        );
        let all: Vec<u16> = (0..=u16::MAX).collect();
        for eight in all.chunks_exact(8) {
            let h: [f16; 8] = std::array::from_fn(|l| f16::from_bits(eight[l]));
            let ours = F16c::to_f32_x8(&h.map(F16c));
            let portable = f16::to_f32_x8(&h);
            for l in 0..8 {
                assert!(
                    ours[l].to_bits() == portable[l].to_bits()
                        || (ours[l].is_nan() && portable[l].is_nan()),
                    "{:#06x}",
                    eight[l]
                );
            }
        }
    }

    #[test]
    fn an_f16_cache_attends_as_its_rounded_values_say() {
        let shape = Heads {
            heads: 6,
            kv_heads: 2,
            head_dim: 20,
        };
        let (first, rows, kv_width, q_width) = (21, 2, 40, 120);
        let positions = first + rows;
        let rounded = |v: f32| f16::from_f32(v).to_f32();
        let keys: Vec<f32> = (0..positions * kv_width)
            .map(|i| rounded((i as f32 * 0.37).sin() * 3.0))
            .collect();
        let values: Vec<f32> = (0..positions * kv_width)
            .map(|i| rounded((i as f32 * 0.13).cos()))
            .collect();
        let queries: Vec<f32> = (0..rows * q_width)
            .map(|i| (i as f32 * 0.071).sin())
            .collect();
        let expected = attention_reference(&queries, first, &keys, &values, shape);
        let half_keys: Vec<f16> = tiled(&keys, kv_width);
        let half_values: Vec<f16> = values.iter().map(|v| f16::from_f32(*v)).collect();
        let mut scores = Vec::new();
        for isa in Isa::all_supported() {
            let mut out = vec![0.0; rows * q_width];
            causal_attention(
                isa,
                &queries,
                first,
                KvSlices::F16(&half_keys, &half_values),
                shape,
                0..6,
                &mut out,
                &mut scores,
            );
            close(&out, &expected, 1e-5);
        }
    }

    /// Keys given position by position (`kv_width` each), in tiles.
    fn tiled<E: KvElement>(keys: &[f32], kv_width: usize) -> Vec<E> {
        let mut out = Vec::new();
        for (p, key) in keys.chunks_exact(kv_width).enumerate() {
            append_key(&mut out, p, key);
        }
        out
    }

    #[test]
    fn keys_are_tiled_sixteen_positions_to_a_load() {
        let kv_width = 6;
        let keys: Vec<f32> = (0..20 * kv_width).map(|i| i as f32).collect();
        let out: Vec<f32> = tiled(&keys, kv_width);
        // Two tiles; the second's last 12 positions not yet written.
        assert_eq!(out.len(), 2 * KEY_TILE * kv_width);
        for p in 0..20 {
            for e in 0..kv_width {
                let at = (p / KEY_TILE) * KEY_TILE * kv_width + e * KEY_TILE + p % KEY_TILE;
                assert_eq!(out[at], keys[p * kv_width + e], "position {p}, element {e}");
            }
        }
        let tail = &out[KEY_TILE * kv_width..];
        for e in 0..kv_width {
            assert!(tail[e * KEY_TILE + 4..][..12].iter().all(|v| *v == 0.0));
        }
    }

    /// Naive causal attention of every head of `rows` query rows (positions
    /// `first`, …), for comparison.
    fn attention_reference(
        queries: &[f32],
        first: usize,
        keys: &[f32],
        values: &[f32],
        shape: Heads,
    ) -> Vec<f32> {
        let Heads {
            heads,
            kv_heads,
            head_dim,
        } = shape;
        let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
        let rows = queries.len() / q_width;
        let mut out = vec![0.0; rows * q_width];
        for r in 0..rows {
            for h in 0..heads {
                let kvh = h / (heads / kv_heads);
                let q = &queries[r * q_width + h * head_dim..][..head_dim];
                let mut s: Vec<f32> = (0..first + r + 1)
                    .map(|p| {
                        let k = &keys[p * kv_width + kvh * head_dim..][..head_dim];
                        q.iter().zip(k).map(|(a, b)| f64::from(a * b)).sum::<f64>() as f32
                    })
                    .collect();
                softmax_reference(&mut s, 1.0 / (head_dim as f32).sqrt());
                for j in 0..head_dim {
                    out[r * q_width + h * head_dim + j] =
                        s.iter()
                            .enumerate()
                            .map(|(p, w)| f64::from(w * values[p * kv_width + kvh * head_dim + j]))
                            .sum::<f64>() as f32;
                }
            }
        }
        out
    }

    /// Deterministic keys and values (`kv` of each) and queries (`q`).
    fn inputs(kv: usize, q: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let keys = (0..kv).map(|i| (i as f32 * 0.37).sin()).collect();
        let values = (0..kv).map(|i| (i as f32 * 0.13).cos()).collect();
        let queries = (0..q).map(|i| (i as f32 * 0.071).sin() * 2.0).collect();
        (keys, values, queries)
    }

    #[test]
    fn wide_heads_and_large_groups_attend_as_the_formula_says() {
        // Six query heads per key/value head (packs of four and two), heads
        // 84 wide (the 64-, 16- and 1-wide sums), three rows of a prefill
        // over 3 tiles of keys and 3 blocks of values.
        let shape = Heads {
            heads: 12,
            kv_heads: 2,
            head_dim: 84,
        };
        let (first, rows, kv_width, q_width) = (37, 3, 2 * 84, 12 * 84);
        let positions = first + rows;
        let (keys, values, queries) = inputs(positions * kv_width, rows * q_width);
        let expected = attention_reference(&queries, first, &keys, &values, shape);
        let tiled: Vec<f32> = tiled(&keys, kv_width);
        let mut scores = Vec::new();
        for isa in Isa::all_supported() {
            let mut attend = |heads: std::ops::Range<usize>, out: &mut [f32]| {
                causal_attention(
                    isa,
                    &queries,
                    first,
                    KvSlices::F32(&tiled, &values),
                    shape,
                    heads,
                    out,
                    &mut scores,
                );
            };
            let mut out = vec![0.0; rows * q_width];
            attend(0..12, &mut out);
            close(&out, &expected, 1e-5);
            // Heads 3..9 cross the two groups mid-pack: the same numbers.
            let mut part = vec![0.0; rows * 6 * 84];
            attend(3..9, &mut part);
            for r in 0..rows {
                close(
                    &part[r * 6 * 84..][..6 * 84],
                    &out[r * q_width + 3 * 84..][..6 * 84],
                    0.0,
                );
            }
            // One to four heads attended together (AVX2 takes three,
            // AVX-512 four), a tile's scores in one pass or two halves,
            // the sums 16 or 64 wide: the same numbers.
            let fits = (1..=4).flat_map(|pack| {
                [(KEY_TILE, 64), (HALF_TILE, 16)].map(|(score_lanes, sum_width)| Fit {
                    pack,
                    score_lanes,
                    sum_width,
                })
            });
            for fit in fits {
                let mut packed = vec![0.0; rows * q_width];
                attention_of(
                    isa,
                    &queries,
                    first,
                    &tiled,
                    &values,
                    shape,
                    0..12,
                    fit,
                    &mut packed,
                    &mut scores,
                );
                close(&packed, &out, 0.0);
            }
        }
    }
}
