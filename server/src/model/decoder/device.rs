//! The decoder on a candle device: the GPU path (`--device cuda` in a
//! build with the `cuda` feature), and candle's CPU kernels
//! (`--device candle-cpu`), which is how the tests check this code against
//! the same references as the native decoder on a machine without a GPU.
//!
//! The same pass as the native decoder: every sequence's new rows stacked
//! for the products, norms and rotary embedding (GGML weights through
//! candle's quantized matmul, the others dense in the chosen precision),
//! attention sequence by sequence over a key/value cache preallocated on
//! the device for the tokens the sequence reserved. Activations of GGUF
//! models are f32 (what candle's quantized kernels take); safetensors
//! models compute in `dtype` (f32, f16 or bf16), with the softmax in f32.

use candle_core::quantized::{GgmlDType, QMatMul, ggml_file::qtensor_from_ggml};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::kv_cache::KvCache as DeviceLayerCache;

use super::config::DecoderConfig;
use super::linear::{RawData, Stacked, StackedData};
use super::parts::{BlockParts, TopParts};
use super::{PassLogits, Step, wanted_rows};
use crate::Result;
use crate::kernels::decoder::{Rope, RopeStyle};
use crate::kernels::quant::QuantFormat;

/// A weight on the device, applied as `y = x · Wᵀ`.
enum DeviceLinear {
    /// GGML blocks, multiplied by candle's quantized kernels.
    Quant(QMatMul),
    /// Dense, `out × in`.
    Dense(Tensor),
}

impl DeviceLinear {
    fn new(weight: Stacked, device: &Device, dtype: DType) -> Result<DeviceLinear> {
        Ok(match weight.data {
            StackedData::Ggml(format, bytes) => {
                let q = qtensor_from_ggml(
                    ggml_dtype(format),
                    &bytes,
                    vec![weight.rows, weight.cols],
                    device,
                )?;
                DeviceLinear::Quant(QMatMul::from_qtensor(q)?)
            }
            StackedData::F32(values) => DeviceLinear::Dense(
                Tensor::from_vec(values, (weight.rows, weight.cols), device)?.to_dtype(dtype)?,
            ),
        })
    }

    /// `x`: `rows × in` → `rows × out`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            DeviceLinear::Quant(w) => w.forward(x)?,
            DeviceLinear::Dense(w) => x.matmul(&w.t()?)?,
        })
    }
}

fn ggml_dtype(format: QuantFormat) -> GgmlDType {
    match format {
        QuantFormat::Q4_0 => GgmlDType::Q4_0,
        QuantFormat::Q4_1 => GgmlDType::Q4_1,
        QuantFormat::Q8_0 => GgmlDType::Q8_0,
    }
}

/// One transformer block on the device.
struct DeviceBlock {
    attn_norm: Tensor,
    qkv: DeviceLinear,
    qkv_bias: Option<Tensor>,
    qk_norm: Option<(Tensor, Tensor)>,
    o: DeviceLinear,
    ffn_norm: Tensor,
    gate_up: DeviceLinear,
    down: DeviceLinear,
}

/// The weights on a candle device.
pub struct DeviceWeights {
    device: Device,
    dtype: DType,
    embedding: Tensor,
    blocks: Vec<DeviceBlock>,
    norm: Tensor,
    output: DeviceLinear,
    /// Cosines and sines per position, `positions × head_dim/2`.
    cos: Tensor,
    sin: Tensor,
    rope_style: RopeStyle,
}

impl DeviceWeights {
    /// Moves the model's tensors to `device`, reading each block with
    /// `next_block`. `dtype` is the precision of dense weights and of the
    /// activations; a model with GGML weights computes in f32.
    pub fn new(
        c: &DecoderConfig,
        rope: &Rope,
        top: TopParts,
        mut next_block: impl FnMut(usize) -> Result<BlockParts>,
        device: &Device,
        dtype: DType,
    ) -> Result<DeviceWeights> {
        let quantized = matches!(top.embed.data, RawData::Ggml(..));
        let dtype = if quantized { DType::F32 } else { dtype };
        let vector = |v: Vec<f32>| -> Result<Tensor> {
            let n = v.len();
            Ok(Tensor::from_vec(v, n, device)?.to_dtype(dtype)?)
        };
        let embedding =
            Tensor::from_vec(top.embed.to_f32()?, (c.vocab, c.hidden), device)?.to_dtype(dtype)?;
        let output = match top.output {
            Some(output) => DeviceLinear::new(output, device, dtype)?,
            None if quantized => DeviceLinear::new(
                Stacked::new(&[(&top.embed, c.vocab)], c.hidden)?,
                device,
                dtype,
            )?,
            None => DeviceLinear::Dense(embedding.clone()),
        };
        let mut blocks = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let p = next_block(i)?;
            blocks.push(DeviceBlock {
                attn_norm: vector(p.attn_norm)?,
                qkv: DeviceLinear::new(p.qkv, device, dtype)?,
                qkv_bias: p.qkv_bias.map(vector).transpose()?,
                qk_norm: match p.qk_norm {
                    Some((q, k)) => Some((vector(q)?, vector(k)?)),
                    None => None,
                },
                o: DeviceLinear::new(p.o, device, dtype)?,
                ffn_norm: vector(p.ffn_norm)?,
                gate_up: DeviceLinear::new(p.gate_up, device, dtype)?,
                down: DeviceLinear::new(p.down, device, dtype)?,
            });
        }
        let (cos, sin) = rope.tables();
        let half = c.head_dim / 2;
        let positions = cos.len() / half.max(1);
        let table = |t: &[f32]| -> Result<Tensor> {
            Ok(Tensor::from_slice(t, (positions, half), device)?.to_dtype(dtype)?)
        };
        Ok(DeviceWeights {
            device: device.clone(),
            dtype,
            cos: table(cos)?,
            sin: table(sin)?,
            rope_style: c.rope_style,
            embedding,
            blocks,
            norm: vector(top.norm)?,
            output,
        })
    }

    /// The precision activations are computed in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// One pass over `steps` (already checked), each step's keys and values
    /// appended to its cache on the device; the caller advances the
    /// caches' lengths.
    ///
    /// Everything but attention runs once for all the pass's rows, the
    /// rotary embedding too (each row rotated by its own position's
    /// angles); attention runs sequence by sequence over the sequence's
    /// cache as it lies on the device, query heads grouped per key/value
    /// head, so a decode step costs each sequence a handful of kernel
    /// launches per layer: on a GPU, launches, not arithmetic, are what a
    /// small model's step waits on.
    pub fn forward(
        &self,
        c: &DecoderConfig,
        steps: &mut [Step<'_>],
        logits: &mut PassLogits,
    ) -> Result<()> {
        let ids: Vec<u32> = steps
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let rows = ids.len();
        let ids = Tensor::from_vec(ids, rows, &self.device)?;
        let mut x = self.embedding.index_select(&ids, 0)?;
        let (qw, kw) = (c.q_width(), c.kv_width());
        let (cos, sin) = self.angles(steps)?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        for (layer, block) in self.blocks.iter().enumerate() {
            let normed = candle_nn::ops::rms_norm(&x, &block.attn_norm, c.rms_eps)?;
            let mut qkv = block.qkv.forward(&normed)?;
            if let Some(bias) = &block.qkv_bias {
                qkv = qkv.broadcast_add(bias)?;
            }
            // rows × count·head_dim → rows × count × 1 × head_dim: each row
            // a batch of one position, for the rotary embedding's angles
            // per row
            let heads = |from: usize, width: usize, count: usize| -> Result<Tensor> {
                Ok(qkv
                    .narrow(1, from, width)?
                    .contiguous()?
                    .reshape((rows, count, 1, c.head_dim))?)
            };
            let mut q = heads(0, qw, c.heads)?;
            let mut k = heads(qw, kw, c.kv_heads)?;
            let v = heads(qw + kw, kw, c.kv_heads)?;
            if let Some((qn, kn)) = &block.qk_norm {
                q = candle_nn::ops::rms_norm(&q, qn, c.rms_eps)?;
                k = candle_nn::ops::rms_norm(&k, kn, c.rms_eps)?;
            }
            let rotate = match self.rope_style {
                RopeStyle::Half => candle_nn::rotary_emb::rope,
                RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i,
            };
            let q = (rotate(&q, &cos, &sin)? * scale)?.reshape((rows, c.heads, c.head_dim))?;
            let k = rotate(&k, &cos, &sin)?.reshape((rows, c.kv_heads, c.head_dim))?;
            let v = v.reshape((rows, c.kv_heads, c.head_dim))?;
            let mut contexts = Vec::with_capacity(steps.len());
            let mut row = 0;
            for step in steps.iter_mut() {
                let n = step.tokens.len();
                let start = step.cache.len;
                let cache = &mut step.cache.device_mut(c.layers)?[layer];
                let (keys, values) = cache.append(
                    &by_head(&k.narrow(0, row, n)?)?,
                    &by_head(&v.narrow(0, row, n)?)?,
                )?;
                contexts.push(self.attention(c, &q.narrow(0, row, n)?, &keys, &values, start)?);
                row += n;
            }
            let context = Tensor::cat(&contexts, 0)?;
            x = (x + block.o.forward(&context)?)?;
            let normed = candle_nn::ops::rms_norm(&x, &block.ffn_norm, c.rms_eps)?;
            let gate_up = block.gate_up.forward(&normed)?;
            let gate = gate_up.narrow(1, 0, c.intermediate)?;
            let up = gate_up.narrow(1, c.intermediate, c.intermediate)?;
            let act = (candle_nn::ops::silu(&gate)? * up)?;
            x = (x + block.down.forward(&act)?)?;
        }
        let wanted = wanted_rows(steps);
        let picked: Vec<u32> = wanted
            .iter()
            .flat_map(|r| r.start as u32..r.end as u32)
            .collect();
        let out = logits.prepare(&wanted, c.vocab);
        if picked.is_empty() {
            return Ok(());
        }
        let count = picked.len();
        let picked = Tensor::from_vec(picked, count, &self.device)?;
        let last = x.index_select(&picked, 0)?;
        let normed = candle_nn::ops::rms_norm(&last, &self.norm, c.rms_eps)?;
        let computed: Vec<f32> = self
            .output
            .forward(&normed)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        out.copy_from_slice(&computed);
        Ok(())
    }

    /// The rotary embedding's cosines and sines for every row of the pass
    /// (row `i` at its sequence's position), `rows × 1 × head_dim/2`: the
    /// same for every layer.
    fn angles(&self, steps: &[Step<'_>]) -> Result<(Tensor, Tensor)> {
        let positions: Vec<u32> = steps
            .iter()
            .flat_map(|s| (s.cache.len..s.cache.len + s.tokens.len()).map(|p| p as u32))
            .collect();
        let rows = positions.len();
        let positions = Tensor::from_vec(positions, rows, &self.device)?;
        let half = self.cos.dim(1)?;
        let pick = |table: &Tensor| -> Result<Tensor> {
            Ok(table
                .index_select(&positions, 0)?
                .reshape((rows, 1, half))?)
        };
        Ok((pick(&self.cos)?, pick(&self.sin)?))
    }

    /// Causal attention of one sequence's `q` (`n × heads × head_dim`,
    /// positions `start..start + n`, already scaled by 1/√head_dim) over
    /// its cached `keys` and `values` (`1 × kv_heads × (start + n) ×
    /// head_dim`, views of the cache): `n × heads·head_dim`. The query
    /// heads that share a key/value head are one matrix against it, so
    /// the cache is read where it lies, never copied or repeated per head.
    fn attention(
        &self,
        c: &DecoderConfig,
        q: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        start: usize,
    ) -> Result<Tensor> {
        let n = q.dim(0)?;
        let total = start + n;
        let group = c.heads / c.kv_heads;
        let (kv_heads, dim) = (c.kv_heads, c.head_dim);
        // n × kv_heads·group × dim → kv_heads × group·n × dim (rows of one
        // key/value head together; for one row, only a reshape)
        let q = if n == 1 {
            q.reshape((kv_heads, group, dim))?
        } else {
            q.reshape((n, kv_heads, group, dim))?
                .permute((1, 2, 0, 3))?
                .contiguous()?
                .reshape((kv_heads, group * n, dim))?
        };
        let (keys, values) = (keys.squeeze(0)?, values.squeeze(0)?);
        let mut scores = q.matmul(&keys.t()?)?;
        if self.device.is_cpu() {
            // candle's CUDA softmax computes in f32 whatever the tensor
            // holds (two conversions there would be two more launches per
            // sequence and layer); its CPU softmax computes in the tensor's
            // own type, so there the scores are widened first
            scores = scores.to_dtype(DType::F32)?;
        }
        if n > 1 {
            let mask: Vec<f32> = (0..n)
                .flat_map(|i| {
                    (0..total).map(move |j| {
                        if j > start + i {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let mask =
                Tensor::from_vec(mask, (n, total), &self.device)?.to_dtype(scores.dtype())?;
            scores = scores
                .reshape((kv_heads, group, n, total))?
                .broadcast_add(&mask)?
                .reshape((kv_heads, group * n, total))?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(self.dtype)?;
        let context = probs.matmul(&values)?;
        Ok(if n == 1 {
            context.reshape((1, c.heads * dim))?
        } else {
            context
                .reshape((kv_heads, group, n, dim))?
                .permute((2, 0, 1, 3))?
                .contiguous()?
                .reshape((n, c.heads * dim))?
        })
    }
}

/// `n × kv_heads × head_dim` rows → `1 × kv_heads × n × head_dim`, as the
/// cache holds them (contiguous, as the cache's copy needs; for one row,
/// only a reshape).
fn by_head(rows: &Tensor) -> Result<Tensor> {
    Ok(rows.transpose(0, 1)?.contiguous()?.unsqueeze(0)?)
}

/// A sequence's cache on the device: per layer, keys and values
/// `1 × kv_heads × capacity × head_dim`, allocated on the first append.
pub fn new_layer_caches(layers: usize, capacity: usize) -> Vec<DeviceLayerCache> {
    (0..layers)
        .map(|_| DeviceLayerCache::new(2, capacity.max(1)))
        .collect()
}
