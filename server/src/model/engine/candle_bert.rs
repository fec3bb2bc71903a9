//! BERT-family encoders through candle-transformers, on any candle device:
//! the GPU path (with the `cuda` feature), and an implementation independent
//! of ours that the tests compare the native engine with. Pads each batch
//! to its longest input and masks the padding.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as CandleBertConfig};

use crate::model::engine::Encoder;
use crate::model::folder::ModelSpec;
use crate::model::weights::load_tensors;
use crate::{Error, Result};

/// candle-transformers' BERT with its weights on a device.
pub struct CandleBert {
    model: BertModel,
    device: Device,
    hidden: usize,
}

impl CandleBert {
    /// Loads a BERT folder onto `device`, computing in `dtype`.
    pub fn load(spec: &ModelSpec, device: &Device, dtype: DType) -> Result<CandleBert> {
        let path = spec.dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let config: CandleBertConfig = serde_json::from_str(&text).map_err(|e| {
            Error::BadModel(format!("config.json is not a BERT configuration: {e}"))
        })?;
        let model = BertModel::load(
            VarBuilder::from_tensors(load_tensors(spec, device)?, dtype, device),
            &config,
        )
        .map_err(|e| Error::BadModel(format!("loading BERT weights: {e}")))?;
        Ok(CandleBert {
            model,
            device: device.clone(),
            hidden: spec.hidden_size,
        })
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
        let states = self.model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        let padded: Vec<f32> = states.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let h = self.hidden;
        Ok(batch
            .iter()
            .enumerate()
            .flat_map(|(i, row)| padded[i * longest * h..][..row.len() * h].iter().copied())
            .collect())
    }
}
