//! The transformer forward pass, behind a small trait so that more
//! architectures (and, next, our own faster kernels) plug in.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};

use crate::model::folder::ModelSpec;
use crate::{Error, Result};

/// Turns padded token ids into token states.
pub trait Encoder: Send + Sync {
    /// `ids` and `mask` are `[batch, tokens]` (`u32`; mask 1 = real token);
    /// returns `[batch, tokens, hidden]` in `f32`.
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor>;
}

/// BERT-family encoders (BERT, MiniLM, …) via candle-transformers.
pub struct Bert {
    model: BertModel,
}

impl Encoder for Bert {
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let token_types = ids.zeros_like()?;
        Ok(self.model.forward(ids, &token_types, Some(mask))?)
    }
}

/// Loads the weights of every safetensors file (read into memory, not
/// memory-mapped, so a file changed on disk cannot change a running model).
fn var_builder(spec: &ModelSpec, device: &Device) -> Result<VarBuilder<'static>> {
    let mut tensors = std::collections::HashMap::new();
    for path in &spec.weights {
        let loaded = candle_core::safetensors::load(path, device)
            .map_err(|e| Error::BadModel(format!("{}: {e}", path.display())))?;
        tensors.extend(loaded);
    }
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}

/// The encoder for the folder's architecture.
pub fn load(spec: &ModelSpec, device: &Device) -> Result<Box<dyn Encoder>> {
    match spec.model_type.as_str() {
        "bert" => {
            let text = std::fs::read_to_string(spec.dir.join("config.json"))
                .map_err(|e| Error::io(spec.dir.join("config.json"), e))?;
            let config: BertConfig = serde_json::from_str(&text).map_err(|e| {
                Error::BadModel(format!("config.json is not a BERT configuration: {e}"))
            })?;
            let model = BertModel::load(var_builder(spec, device)?, &config)
                .map_err(|e| Error::BadModel(format!("loading BERT weights: {e}")))?;
            Ok(Box::new(Bert { model }))
        }
        other => Err(Error::BadModel(format!(
            "no encoder for model_type {other:?}"
        ))),
    }
}
