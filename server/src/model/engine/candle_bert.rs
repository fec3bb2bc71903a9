//! BERT-family encoders through candle-transformers, on any candle device:
//! the GPU path (with the `cuda` feature), and an implementation independent
//! of ours that the tests compare the native engine with. Pads each batch
//! to its longest input and masks the padding.
//!
//! candle-transformers' encoder layers, with the embeddings and the
//! attention mask done here: its `BertModel` masks with `f32::MIN`, which
//! is `-inf` in f16 and bf16, and `0 × -inf` made every embedding NaN in
//! half precision. Here the mask is the dtype's own lowest finite value, as
//! transformers does (`torch.finfo(dtype).min`).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder, embedding, layer_norm};
use candle_transformers::models::bert::{BertEncoder, Config as CandleBertConfig};

use crate::model::engine::Encoder;
use crate::model::folder::ModelSpec;
use crate::model::weights::load_tensors;
use crate::{Error, Result};

/// candle-transformers' BERT with its weights on a device.
pub struct CandleBert {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    norm: LayerNorm,
    encoder: BertEncoder,
    dtype: DType,
    device: Device,
    hidden: usize,
}

/// The lowest finite value of `dtype`, as f32 (what a masked score gets).
fn lowest(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => half::f16::MIN.to_f32(),
        DType::BF16 => half::bf16::MIN.to_f32(),
        _ => f32::MIN,
    }
}

impl CandleBert {
    /// Loads a BERT folder onto `device`, computing in `dtype`.
    pub fn load(spec: &ModelSpec, device: &Device, dtype: DType) -> Result<CandleBert> {
        let path = spec.dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let config: CandleBertConfig = serde_json::from_str(&text).map_err(|e| {
            Error::BadModel(format!("config.json is not a BERT configuration: {e}"))
        })?;
        let vb = VarBuilder::from_tensors(load_tensors(spec, device)?, dtype, device);
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let loaded = (|| -> candle_core::Result<CandleBert> {
            let e = vb.pp("embeddings");
            let c = &config;
            Ok(CandleBert {
                words: embedding(c.vocab_size, c.hidden_size, e.pp("word_embeddings"))?,
                positions: embedding(
                    c.max_position_embeddings,
                    c.hidden_size,
                    e.pp("position_embeddings"),
                )?,
                token_types: embedding(
                    c.type_vocab_size,
                    c.hidden_size,
                    e.pp("token_type_embeddings"),
                )?,
                norm: layer_norm(c.hidden_size, c.layer_norm_eps, e.pp("LayerNorm"))?,
                encoder: BertEncoder::load(vb.pp("encoder"), c)?,
                dtype,
                device: device.clone(),
                hidden: spec.hidden_size,
            })
        })();
        loaded.map_err(|e| Error::BadModel(format!("loading BERT weights: {e}")))
    }
}

impl Encoder for CandleBert {
    fn hidden_size(&self) -> usize {
        self.hidden
    }

    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<f32>> {
        let longest = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        if longest == 0 {
            return Ok(Vec::new());
        }
        let mut ids = Vec::with_capacity(batch.len() * longest);
        let mut mask = Vec::with_capacity(batch.len() * longest);
        for row in batch {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(0u32, longest - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - row.len()));
        }
        let ids = Tensor::from_vec(ids, (batch.len(), longest), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch.len(), longest), &self.device)?;
        let positions = Tensor::arange(0u32, longest as u32, &self.device)?;
        let states = self
            .words
            .forward(&ids)?
            .add(&self.token_types.forward(&ids.zeros_like()?)?)?
            .broadcast_add(&self.positions.forward(&positions)?)?;
        let states = self.norm.forward(&states)?;
        // 0 where attended, the lowest finite value where padded:
        // batch × 1 × 1 × longest, added to every head's scores.
        let masked = (1.0 - mask.to_dtype(DType::F32)?)?;
        let mask = (masked * f64::from(lowest(self.dtype)))?
            .to_dtype(self.dtype)?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        let states = self.encoder.forward(&states, &mask)?;
        let padded: Vec<f32> = states.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let h = self.hidden;
        Ok(batch
            .iter()
            .enumerate()
            .flat_map(|(i, row)| padded[i * longest * h..][..row.len() * h].iter().copied())
            .collect())
    }
}
