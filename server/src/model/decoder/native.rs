//! The decoder on our own CPU kernels: GGML blocks multiplied by our
//! quantized kernels, f32 weights by our GEMM, attention and norms by the
//! kernels of [`crate::kernels::decoder`].

use std::sync::Arc;

use rayon::prelude::*;

use super::config::DecoderConfig;
use super::linear::{Linear, RawData};
use super::parts::{BlockParts, TopParts};
use super::{PassLogits, Step, wanted_rows};
use crate::Result;
use crate::kernels::decoder::{
    Heads, Rope, causal_attention, rms_norm_in_place, rms_norm_into, silu_mul,
};
use crate::kernels::isa::Isa;
use crate::kernels::quant::QuantMatrix;
use crate::kernels::rows_per_chunk;

/// The token-embedding table.
enum Embedding {
    /// GGML rows, dequantized on lookup (shared with a tied output).
    Quant(Arc<QuantMatrix>),
    /// f32 rows.
    Dense(Vec<f32>),
}

/// One transformer block.
struct Block {
    attn_norm: Vec<f32>,
    /// Q, K and V stacked.
    qkv: Linear,
    /// Q, K and V biases stacked (Qwen2).
    qkv_bias: Option<Vec<f32>>,
    /// Per-head norms of Q and K (Qwen3).
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    o: Linear,
    ffn_norm: Vec<f32>,
    /// Gate and up stacked.
    gate_up: Linear,
    down: Linear,
}

impl Block {
    fn new(parts: BlockParts) -> Result<Block> {
        Ok(Block {
            attn_norm: parts.attn_norm,
            qkv: Linear::from_stacked(parts.qkv)?,
            qkv_bias: parts.qkv_bias,
            qk_norm: parts.qk_norm,
            o: Linear::from_stacked(parts.o)?,
            ffn_norm: parts.ffn_norm,
            gate_up: Linear::from_stacked(parts.gate_up)?,
            down: Linear::from_stacked(parts.down)?,
        })
    }
}

/// The weights, packed for our kernels.
pub struct NativeWeights {
    embedding: Embedding,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    output: Linear,
}

impl NativeWeights {
    /// Packs the model's tensors, reading each block with `next_block`.
    pub fn new(
        c: &DecoderConfig,
        top: TopParts,
        mut next_block: impl FnMut(usize) -> Result<BlockParts>,
    ) -> Result<NativeWeights> {
        let embed = top.embed;
        let embedding = match &embed.data {
            RawData::Ggml(format, bytes) => Embedding::Quant(Arc::new(QuantMatrix::from_ggml(
                *format, c.vocab, c.hidden, bytes,
            )?)),
            _ => Embedding::Dense(embed.to_f32()?),
        };
        let output = match (top.output, &embedding) {
            (Some(output), _) => Linear::from_stacked(output)?,
            (None, Embedding::Quant(m)) => Linear::Quant(Arc::clone(m)),
            (None, Embedding::Dense(_)) => Linear::stack(&[(&embed, c.vocab)], c.hidden)?,
        };
        drop(embed);
        let blocks = (0..c.layers)
            .map(|i| Block::new(next_block(i)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(NativeWeights {
            embedding,
            blocks,
            norm: top.norm,
            output,
        })
    }

    /// One pass over `steps` (already checked), each step's keys and values
    /// appended to its cache's layers and its logits into `logits`; the
    /// caller advances the caches' lengths. Runs inside the rayon pool.
    pub fn forward(
        &self,
        c: &DecoderConfig,
        rope: &Rope,
        steps: &mut [Step<'_>],
        logits: &mut PassLogits,
    ) -> Result<()> {
        let isa = Isa::detect();
        let rows: usize = steps.iter().map(|s| s.tokens.len()).sum();
        let (h, qw, kw) = (c.hidden, c.q_width(), c.kv_width());
        let qkv_width = qw + 2 * kw;
        let mut x = vec![0f32; rows * h];
        for (token, row) in steps
            .iter()
            .flat_map(|s| s.tokens.iter())
            .zip(x.chunks_exact_mut(h))
        {
            match &self.embedding {
                Embedding::Quant(m) => m.dequantize_row(*token as usize, row),
                Embedding::Dense(t) => row.copy_from_slice(&t[*token as usize * h..][..h]),
            }
        }
        let mut normed = vec![0f32; rows * h];
        let mut qkv = vec![0f32; rows * qkv_width];
        let mut context = vec![0f32; rows * qw];
        let mut projected = vec![0f32; rows * h];
        let mut gate_up = vec![0f32; rows * 2 * c.intermediate];
        let mut act = vec![0f32; rows * c.intermediate];
        let shape = Heads {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
        };
        for (layer, block) in self.blocks.iter().enumerate() {
            let (attn_norm, ffn_norm) = (&block.attn_norm, &block.ffn_norm);
            by_rows(&x, h, &mut normed, h, |x, out| {
                rms_norm_into(isa, x, attn_norm, c.rms_eps, out)
            });
            block.qkv.forward(&normed, rows, &mut qkv);
            // Each sequence's rows positioned and cached, the sequences in
            // parallel (appending a key touches a cache line per element,
            // most of them not in cache: serial, it took as long as a
            // quarter of the attention at 16 sequences).
            let mut per_step = Vec::with_capacity(steps.len());
            let mut rest = &mut qkv[..];
            for step in steps.iter_mut() {
                let (mine, tail) = rest.split_at_mut(step.tokens.len() * qkv_width);
                rest = tail;
                per_step.push((step, mine));
            }
            per_step.into_par_iter().try_for_each(|(step, rows)| {
                position_and_cache(isa, c, rope, block, layer, step, rows)
            })?;
            attention(isa, steps, layer, &qkv, qkv_width, shape, &mut context)?;
            block.o.forward(&context, rows, &mut projected);
            by_rows(&projected, h, &mut x, h, add);
            by_rows(&x, h, &mut normed, h, |x, out| {
                rms_norm_into(isa, x, ffn_norm, c.rms_eps, out)
            });
            block.gate_up.forward(&normed, rows, &mut gate_up);
            let inter = c.intermediate;
            by_rows(&gate_up, 2 * inter, &mut act, inter, |pairs, out| {
                for (pair, out) in pairs
                    .chunks_exact(2 * inter)
                    .zip(out.chunks_exact_mut(inter))
                {
                    let (gate, up) = pair.split_at(inter);
                    silu_mul(isa, gate, up, out);
                }
            });
            block.down.forward(&act, rows, &mut projected);
            by_rows(&projected, h, &mut x, h, add);
        }
        // Logits of the rows asked for.
        let wanted = wanted_rows(steps);
        let picked_rows: usize = wanted.iter().map(|r| r.len()).sum();
        let mut final_rows = Vec::with_capacity(picked_rows * h);
        for range in &wanted {
            final_rows.extend_from_slice(&x[range.start * h..range.end * h]);
        }
        let mut normed_final = vec![0f32; picked_rows * h];
        by_rows(&final_rows, h, &mut normed_final, h, |x, out| {
            rms_norm_into(isa, x, &self.norm, c.rms_eps, out)
        });
        let logits = logits.prepare(&wanted, c.vocab);
        if picked_rows > 0 {
            self.output.forward(&normed_final, picked_rows, logits);
        }
        Ok(())
    }
}

/// The new `rows` of `step` (their fused Q, K and V projections): biases
/// added, Q and K normed per head (Qwen3) and rotated to their positions,
/// and K and V appended to the step's cache at `layer`.
fn position_and_cache(
    isa: Isa,
    c: &DecoderConfig,
    rope: &Rope,
    block: &Block,
    layer: usize,
    step: &mut Step<'_>,
    rows: &mut [f32],
) -> Result<()> {
    let (qw, kw) = (c.q_width(), c.kv_width());
    let start = step.cache.len;
    for (i, row) in rows.chunks_exact_mut(qw + 2 * kw).enumerate() {
        if let Some(bias) = &block.qkv_bias {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
        let (q, kv) = row.split_at_mut(qw);
        let k = &mut kv[..kw];
        if let Some((qn, kn)) = &block.qk_norm {
            rms_norm_in_place(isa, q, qn, c.rms_eps);
            rms_norm_in_place(isa, k, kn, c.rms_eps);
        }
        rope.apply(q, start + i);
        rope.apply(k, start + i);
        let (k, v) = kv.split_at(kw);
        step.cache.host_append(layer, start + i, k, v)?;
    }
    Ok(())
}

/// Attention of every step's new rows (`qkv`: their fused projections)
/// over its cache at `layer`, into `context` (`rows × heads·head_dim`), in
/// parallel: each sequence's rows in chunks, so that one long prompt uses
/// every core evenly; and when there are fewer rows than threads' worth of
/// work (a few decoding sequences), single rows split by heads.
fn attention(
    isa: Isa,
    steps: &[Step<'_>],
    layer: usize,
    qkv: &[f32],
    qkv_width: usize,
    shape: Heads,
    context: &mut [f32],
) -> Result<()> {
    let qw = shape.heads * shape.head_dim;
    let rows: usize = steps.iter().map(|s| s.tokens.len()).sum();
    let threads = rayon::current_num_threads().max(1);
    // A prompt's rows in chunks of at least 16 (attended together, each
    // tile of keys read once for them), 8 chunks per thread or more: a
    // row sees every row before it, so the last chunks take the longest,
    // and with one chunk per thread the first thread waited half the time.
    let chunk = rows.div_ceil(8 * threads).max(16);
    let row_jobs: usize = steps.iter().map(|s| s.tokens.len().div_ceil(chunk)).sum();
    // Two jobs per thread at least, so that neither waits long for the other.
    let head_parts = (2 * threads).div_ceil(row_jobs).clamp(1, shape.heads);
    let heads_per_part = shape.heads.div_ceil(head_parts);
    let mut jobs = Vec::with_capacity(row_jobs * head_parts);
    let (mut rest, mut offset) = (context, 0);
    for step in steps {
        let n = step.tokens.len();
        let start = step.cache.len;
        let mut done = 0;
        while done < n {
            let take = chunk.min(n - done);
            let (mine, tail) = rest.split_at_mut(take * qw);
            rest = tail;
            let cache = step.cache.host_layer(layer)?;
            if take == 1 {
                let mut mine = mine;
                let mut h = 0;
                while h < shape.heads {
                    let end = (h + heads_per_part).min(shape.heads);
                    let (part, tail) = mine.split_at_mut((end - h) * shape.head_dim);
                    mine = tail;
                    jobs.push((offset + done, 1, start + done, cache, h..end, part));
                    h = end;
                }
            } else {
                jobs.push((
                    offset + done,
                    take,
                    start + done,
                    cache,
                    0..shape.heads,
                    mine,
                ));
            }
            done += take;
        }
        offset += n;
    }
    jobs.into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(queries, scores), (row, n, first, cache, heads, out)| {
            queries.clear();
            for r in 0..n {
                queries.extend_from_slice(&qkv[(row + r) * qkv_width..][..qw]);
            }
            causal_attention(isa, queries, first, cache, shape, heads, out, scores);
        },
    );
    Ok(())
}

/// `f` over the rows of `input` (`in_width` wide) and of `out`
/// (`out_width` wide): in chunks of rows on every thread from
/// [`crate::kernels::PARALLEL_VALUES`] output values on ([`rows_per_chunk`]),
/// else all at once on this thread (the rows of a few sequences: a fork
/// would cost more than the pass).
fn by_rows(
    input: &[f32],
    in_width: usize,
    out: &mut [f32],
    out_width: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    let rows = input.len() / in_width;
    debug_assert_eq!(
        out.len(),
        rows * out_width,
        "as many output rows as input rows"
    );
    let Some(chunk) = rows_per_chunk(rows, out_width) else {
        f(input, out);
        return;
    };
    input
        .par_chunks(chunk * in_width)
        .zip(out.par_chunks_mut(chunk * out_width))
        .for_each(|(input, out)| f(input, out));
}

/// `x += y`, element by element.
fn add(y: &[f32], x: &mut [f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
