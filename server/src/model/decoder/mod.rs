//! Decoder-only language models (Llama, Qwen2, Qwen3) on our own CPU
//! kernels, from a GGUF file or a Hugging Face safetensors folder.
//!
//! One forward pass takes any number of sequences at once, each with its
//! own [`KvCache`] and any number of new tokens (a prefill chunk, or the
//! one token of a decode step): their rows are stacked so every weight is
//! read once per pass, and only attention runs sequence by sequence. That
//! is what continuous batching needs: sequences of different lengths share
//! a step.
//!
//! - [`config`]: the model's shape, from GGUF metadata or `config.json`;
//! - [`source`]: its tensors by role, from either file format;
//! - [`linear`]: a weight as GGML blocks or packed f32, fused where layers
//!   share an input.

pub mod config;
pub mod linear;
pub mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::kernels::decoder::{
    Heads, Rope, causal_attention, rms_norm_in_place, rms_norm_into, silu_mul,
};
use crate::kernels::isa::Isa;
use crate::kernels::quant::QuantMatrix;
use crate::model::gguf::Gguf;
use crate::{Error, Result};
use config::{Architecture, DecoderConfig};
use linear::{Linear, RawData};
use source::{Part, Source};

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

/// A loaded decoder-only model.
pub struct Decoder {
    config: DecoderConfig,
    embedding: Embedding,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    output: Linear,
    rope: Rope,
}

/// A sequence's cached keys and values, every layer, f32.
pub struct KvCache {
    /// Per layer: keys, then values, `len × kv_width` each.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for up to `capacity` tokens of `config`'s model;
    /// memory is taken as tokens arrive.
    pub fn new(config: &DecoderConfig, capacity: usize) -> KvCache {
        KvCache {
            layers: (0..config.layers)
                .map(|_| (Vec::new(), Vec::new()))
                .collect(),
            len: 0,
            capacity,
        }
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Which rows' logits a sequence wants from a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (a prefill chunk that is not the prompt's last).
    None,
    /// The last new token's (the next token's distribution).
    Last,
    /// Every new token's (tests comparing with a reference).
    All,
}

/// One sequence's part of a forward pass.
pub struct Step<'a> {
    /// Its new tokens.
    pub tokens: &'a [u32],
    /// Its cache, extended by the pass.
    pub cache: &'a mut KvCache,
    /// Which logits it wants.
    pub logits: Logits,
}

impl Decoder {
    /// Loads a model: `path` is a `.gguf` file, or a folder holding either
    /// one `.gguf` file or `config.json` with `*.safetensors`.
    pub fn load(path: &Path) -> Result<Decoder> {
        let (config, mut source) = open(path)?;
        Decoder::build(config, &mut source)
    }

    fn build(config: DecoderConfig, source: &mut Source) -> Result<Decoder> {
        let c = &config;
        let embed = source.read(Part::Embed)?;
        if (embed.rows, embed.cols) != (c.vocab, c.hidden) {
            return Err(Error::BadModel(format!(
                "tensor {} is {}×{}; the configuration implies {}×{}",
                embed.name, embed.rows, embed.cols, c.vocab, c.hidden
            )));
        }
        let embedding = match &embed.data {
            RawData::Ggml(format, bytes) => Embedding::Quant(Arc::new(QuantMatrix::from_ggml(
                *format,
                c.vocab,
                c.hidden,
                bytes.clone(),
            )?)),
            _ => Embedding::Dense(embed.to_f32()?),
        };
        let output = if source.has(Part::Output) {
            Linear::stack(&[(&source.read(Part::Output)?, c.vocab)], c.hidden)?
        } else {
            match &embedding {
                Embedding::Quant(m) => Linear::Quant(Arc::clone(m)),
                Embedding::Dense(_) => Linear::stack(&[(&embed, c.vocab)], c.hidden)?,
            }
        };
        drop(embed);
        let mut blocks = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            blocks.push(Decoder::block(c, source, i)?);
        }
        let norm = source.read(Part::Norm)?.vector(c.hidden)?;
        let positions = c.context.min(1 << 17);
        let rope = Rope::new(c.head_dim, c.rope_theta, positions, c.rope_style);
        Ok(Decoder {
            config,
            embedding,
            blocks,
            norm,
            output,
            rope,
        })
    }

    fn block(c: &DecoderConfig, source: &mut Source, i: usize) -> Result<Block> {
        let (q, k, v) = (
            source.read(Part::Q(i))?,
            source.read(Part::K(i))?,
            source.read(Part::V(i))?,
        );
        let qkv = Linear::stack(
            &[(&q, c.q_width()), (&k, c.kv_width()), (&v, c.kv_width())],
            c.hidden,
        )?;
        let qkv_bias = if c.arch == Architecture::Qwen2 {
            let mut bias = source.read(Part::QBias(i))?.vector(c.q_width())?;
            bias.extend(source.read(Part::KBias(i))?.vector(c.kv_width())?);
            bias.extend(source.read(Part::VBias(i))?.vector(c.kv_width())?);
            Some(bias)
        } else {
            None
        };
        let qk_norm = if c.arch == Architecture::Qwen3 {
            Some((
                source.read(Part::QNorm(i))?.vector(c.head_dim)?,
                source.read(Part::KNorm(i))?.vector(c.head_dim)?,
            ))
        } else {
            None
        };
        let (gate, up) = (source.read(Part::Gate(i))?, source.read(Part::Up(i))?);
        Ok(Block {
            attn_norm: source.read(Part::AttnNorm(i))?.vector(c.hidden)?,
            qkv,
            qkv_bias,
            qk_norm,
            o: Linear::stack(&[(&source.read(Part::O(i))?, c.hidden)], c.q_width())?,
            ffn_norm: source.read(Part::FfnNorm(i))?.vector(c.hidden)?,
            gate_up: Linear::stack(&[(&gate, c.intermediate), (&up, c.intermediate)], c.hidden)?,
            down: Linear::stack(&[(&source.read(Part::Down(i))?, c.hidden)], c.intermediate)?,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Longest sequence (prompt and output) a cache may hold.
    pub fn max_positions(&self) -> usize {
        self.rope.positions()
    }

    /// Runs one pass over `steps`: appends each step's tokens to its cache
    /// and returns, per step, the logits it asked for (`rows × vocab`).
    ///
    /// The pass runs on a thread of the rayon pool, so that each of its
    /// parallel products is a fork of that worker (the idle workers are
    /// still spinning) rather than a job handed in from outside, for which
    /// the caller sleeps and is woken: ~120 of those per decode step cost a
    /// fifth of its time.
    pub fn forward(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        rayon::scope(|_| self.forward_in_pool(steps))
    }

    fn forward_in_pool(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let isa = Isa::detect();
        for step in steps.iter() {
            if step.tokens.is_empty() {
                return Err(Error::BadInput("a step without tokens".into()));
            }
            if let Some(bad) = step.tokens.iter().find(|t| **t as usize >= c.vocab) {
                return Err(Error::BadInput(format!(
                    "token id {bad} is outside the vocabulary of {} tokens",
                    c.vocab
                )));
            }
            let end = step.cache.len + step.tokens.len();
            if end > step.cache.capacity || end > self.max_positions() {
                return Err(Error::BadInput(format!(
                    "{end} tokens exceed the sequence's room ({} reserved, {} positions)",
                    step.cache.capacity,
                    self.max_positions()
                )));
            }
        }
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
            rms_norm_into(isa, &x, &block.attn_norm, c.rms_eps, &mut normed);
            block.qkv.forward(&normed, rows, &mut qkv);
            let mut row_index = 0;
            for step in steps.iter_mut() {
                let start = step.cache.len;
                for (i, row) in qkv[row_index * qkv_width..]
                    .chunks_exact_mut(qkv_width)
                    .take(step.tokens.len())
                    .enumerate()
                {
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
                    self.rope.apply(q, start + i);
                    self.rope.apply(k, start + i);
                    let (keys, values) = &mut step.cache.layers[layer];
                    keys.extend_from_slice(k);
                    values.extend_from_slice(&kv[kw..]);
                }
                row_index += step.tokens.len();
            }
            attention(isa, steps, layer, &qkv, qkv_width, shape, &mut context);
            block.o.forward(&context, rows, &mut projected);
            add(&mut x, &projected);
            rms_norm_into(isa, &x, &block.ffn_norm, c.rms_eps, &mut normed);
            block.gate_up.forward(&normed, rows, &mut gate_up);
            let inter = c.intermediate;
            for (pair, out) in gate_up
                .chunks_exact_mut(2 * inter)
                .zip(act.chunks_exact_mut(inter))
            {
                let (gate, up) = pair.split_at_mut(inter);
                silu_mul(isa, gate, up);
                out.copy_from_slice(gate);
            }
            block.down.forward(&act, rows, &mut projected);
            add(&mut x, &projected);
        }
        for step in steps.iter_mut() {
            step.cache.len += step.tokens.len();
        }
        // Logits of the rows asked for.
        let mut wanted = Vec::new();
        let mut row_index = 0;
        for step in steps.iter() {
            let n = step.tokens.len();
            let picked = match step.logits {
                Logits::None => 0..0,
                Logits::Last => row_index + n - 1..row_index + n,
                Logits::All => row_index..row_index + n,
            };
            wanted.push(picked);
            row_index += n;
        }
        let picked_rows: usize = wanted.iter().map(|r| r.len()).sum();
        let mut final_rows = Vec::with_capacity(picked_rows * h);
        for range in &wanted {
            final_rows.extend_from_slice(&x[range.start * h..range.end * h]);
        }
        let mut normed_final = vec![0f32; picked_rows * h];
        rms_norm_into(isa, &final_rows, &self.norm, c.rms_eps, &mut normed_final);
        let mut logits = vec![0f32; picked_rows * c.vocab];
        if picked_rows > 0 {
            self.output.forward(&normed_final, picked_rows, &mut logits);
        }
        let mut out = Vec::with_capacity(steps.len());
        let mut taken = 0;
        for range in wanted {
            out.push(logits[taken * c.vocab..(taken + range.len()) * c.vocab].to_vec());
            taken += range.len();
        }
        Ok(out)
    }
}

/// Attention of every step's new rows (`qkv`: their fused projections)
/// over its cache at `layer`, into `context` (`rows × heads·head_dim`), in
/// parallel: each sequence's rows in chunks, so that one long prompt uses
/// every core; and when there are fewer rows than threads' worth of work
/// (a few decoding sequences), single rows split by heads.
fn attention(
    isa: Isa,
    steps: &[Step<'_>],
    layer: usize,
    qkv: &[f32],
    qkv_width: usize,
    shape: Heads,
    context: &mut [f32],
) {
    let qw = shape.heads * shape.head_dim;
    let rows: usize = steps.iter().map(|s| s.tokens.len()).sum();
    let threads = rayon::current_num_threads().max(1);
    let chunk = rows.div_ceil(threads).max(8);
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
            let cache = &step.cache.layers[layer];
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
        |(queries, scores), (row, n, first, (keys, values), heads, out)| {
            queries.clear();
            for r in 0..n {
                queries.extend_from_slice(&qkv[(row + r) * qkv_width..][..qw]);
            }
            causal_attention(isa, queries, first, keys, values, shape, heads, out, scores);
        },
    );
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// The configuration and tensor source of `path`.
fn open(path: &Path) -> Result<(DecoderConfig, Source)> {
    let gguf_file = if path.is_file() {
        Some(path.to_path_buf())
    } else {
        single_gguf(path)?
    };
    if let Some(file) = gguf_file {
        let header = Gguf::open(&file)?;
        let config = DecoderConfig::from_gguf(&header)?;
        return Ok((config, Source::gguf(header, &file)?));
    }
    let config_path = path.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| Error::BadModel(format!("{}: {e}", config_path.display())))?;
    let config = DecoderConfig::from_hf_json(&text)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::BadModel(format!("{}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::BadModel(format!(
            "{}: no .gguf file and no .safetensors files",
            path.display()
        )));
    }
    Ok((config, Source::safetensors(&files)?))
}

/// The one `.gguf` file in folder `dir`, if there is one.
pub fn single_gguf(dir: &Path) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::BadModel(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(Error::BadModel(format!(
            "{}: {n} .gguf files; a model folder holds one",
            dir.display()
        ))),
    }
}
