//! A model's tensors read by role and checked against its configuration:
//! what both implementations (our CPU kernels, candle on a device) build
//! their weights from, one block at a time so that a model is never held
//! twice.

use super::config::{Architecture, DecoderConfig};
use super::linear::{Raw, Stacked};
use super::source::{Part, Source};
use crate::{Error, Result};

/// The tensors outside the blocks.
pub struct TopParts {
    /// Token embeddings, checked to be `vocab × hidden`.
    pub embed: Raw,
    /// The output projection, `vocab × hidden`; `None` when tied to the
    /// embeddings.
    pub output: Option<Stacked>,
    /// The final RMSNorm.
    pub norm: Vec<f32>,
}

/// One transformer block's tensors.
pub struct BlockParts {
    /// RMSNorm before attention.
    pub attn_norm: Vec<f32>,
    /// Q, K and V stacked.
    pub qkv: Stacked,
    /// Q, K and V biases stacked (Qwen2).
    pub qkv_bias: Option<Vec<f32>>,
    /// Per-head norms of Q and K (Qwen3).
    pub qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    /// Attention output projection.
    pub o: Stacked,
    /// RMSNorm before the MLP.
    pub ffn_norm: Vec<f32>,
    /// Gate and up stacked.
    pub gate_up: Stacked,
    /// The MLP's down projection.
    pub down: Stacked,
}

/// Reads the embeddings, the output projection and the final norm.
pub fn read_top(c: &DecoderConfig, source: &mut Source) -> Result<TopParts> {
    let embed = source.read(Part::Embed)?;
    if (embed.rows, embed.cols) != (c.vocab, c.hidden) {
        return Err(Error::BadModel(format!(
            "tensor {} is {}×{}; the configuration implies {}×{}",
            embed.name, embed.rows, embed.cols, c.vocab, c.hidden
        )));
    }
    let output = if source.has(Part::Output) {
        Some(Stacked::new(
            &[(&source.read(Part::Output)?, c.vocab)],
            c.hidden,
        )?)
    } else {
        None
    };
    let norm = source.read(Part::Norm)?.vector(c.hidden)?;
    Ok(TopParts {
        embed,
        output,
        norm,
    })
}

/// Reads block `i`.
pub fn read_block(c: &DecoderConfig, source: &mut Source, i: usize) -> Result<BlockParts> {
    let (q, k, v) = (
        source.read(Part::Q(i))?,
        source.read(Part::K(i))?,
        source.read(Part::V(i))?,
    );
    let qkv = Stacked::new(
        &[(&q, c.q_width()), (&k, c.kv_width()), (&v, c.kv_width())],
        c.hidden,
    )?;
    drop((q, k, v));
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
    let gate_up = Stacked::new(&[(&gate, c.intermediate), (&up, c.intermediate)], c.hidden)?;
    drop((gate, up));
    Ok(BlockParts {
        attn_norm: source.read(Part::AttnNorm(i))?.vector(c.hidden)?,
        qkv,
        qkv_bias,
        qk_norm,
        o: Stacked::new(&[(&source.read(Part::O(i))?, c.hidden)], c.q_width())?,
        ffn_norm: source.read(Part::FfnNorm(i))?.vector(c.hidden)?,
        gate_up,
        down: Stacked::new(&[(&source.read(Part::Down(i))?, c.hidden)], c.intermediate)?,
    })
}
