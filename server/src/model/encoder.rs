//! The transformer forward pass, behind a small trait so that more
//! architectures (and engines) plug in.
//!
//! Two engines: [`NativeBert`], our own CPU kernels (the default, and the
//! fast one), and candle-transformers' BERT on any candle device (the GPU
//! path with the `cuda` feature, and an independent implementation the tests
//! compare the native one with).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as CandleBertConfig};

use crate::model::folder::ModelSpec;
use crate::model::native_bert::NativeBert;
use crate::{Error, Result};

/// Turns token ids into token states.
pub trait Encoder: Send + Sync {
    /// Width of a token state.
    fn hidden_size(&self) -> usize;

    /// Token states of every input of `batch` (ids including special
    /// tokens), one input after another: `[Σ lengths, hidden]`, row-major.
    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<f32>>;
}

/// Which implementation runs the model.
#[derive(Clone, Debug)]
pub enum Engine {
    /// Our own kernels on the CPU.
    Native,
    /// candle-transformers on a candle device (CPU, or CUDA with the `cuda`
    /// feature).
    Candle(Device),
}

impl Engine {
    /// Parses `cpu` (native kernels), `candle-cpu`, or `cuda` / `cuda:N`.
    pub fn parse(device: &str) -> Result<Engine> {
        match device {
            "cpu" => Ok(Engine::Native),
            "candle-cpu" => Ok(Engine::Candle(Device::Cpu)),
            cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
                let ordinal = match cuda.strip_prefix("cuda:") {
                    Some(n) => n.parse::<usize>().map_err(|_| {
                        Error::BadModel(format!(
                            "device {cuda:?}: the GPU ordinal must be a number, e.g. cuda:0"
                        ))
                    })?,
                    None => 0,
                };
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::BadModel(format!(
                        "device {cuda:?}: this openmodel-server was built without the `cuda` feature (cargo build --features cuda)"
                    )));
                }
                Ok(Engine::Candle(Device::new_cuda(ordinal)?))
            }
            other => Err(Error::BadModel(format!(
                "unknown device {other:?}: use cpu, cuda, cuda:N or candle-cpu"
            ))),
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Engine::Native => format!(
                "native CPU kernels ({})",
                crate::kernels::isa::Isa::detect().name()
            ),
            Engine::Candle(Device::Cpu) => "candle on the CPU".into(),
            Engine::Candle(d) => format!("candle on {d:?}"),
        }
    }
}

/// BERT-family encoders via candle-transformers.
pub struct CandleBert {
    model: BertModel,
    device: Device,
    hidden: usize,
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

/// Every tensor of the folder's safetensors files, on `device` (read into
/// memory, not memory-mapped, so a file changed on disk cannot change a
/// running model).
pub(crate) fn load_tensors(spec: &ModelSpec, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut tensors = HashMap::new();
    for path in &spec.weights {
        let loaded = candle_core::safetensors::load(path, device)
            .map_err(|e| Error::BadModel(format!("{}: {e}", path.display())))?;
        tensors.extend(loaded);
    }
    Ok(tensors)
}

/// The encoder for the folder's architecture on `engine`.
pub fn load(spec: &ModelSpec, engine: &Engine) -> Result<Box<dyn Encoder>> {
    if spec.model_type != "bert" {
        return Err(Error::BadModel(format!(
            "no encoder for model_type {:?} (supported: bert)",
            spec.model_type
        )));
    }
    match engine {
        Engine::Native => Ok(Box::new(NativeBert::load(spec)?)),
        Engine::Candle(device) => {
            let text = std::fs::read_to_string(spec.dir.join("config.json"))
                .map_err(|e| Error::io(spec.dir.join("config.json"), e))?;
            let config: CandleBertConfig = serde_json::from_str(&text).map_err(|e| {
                Error::BadModel(format!("config.json is not a BERT configuration: {e}"))
            })?;
            let model = BertModel::load(
                VarBuilder::from_tensors(load_tensors(spec, device)?, DType::F32, device),
                &config,
            )
            .map_err(|e| Error::BadModel(format!("loading BERT weights: {e}")))?;
            Ok(Box::new(CandleBert {
                model,
                device: device.clone(),
                hidden: spec.hidden_size,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_or_say_what_to_pass() {
        assert!(matches!(Engine::parse("cpu"), Ok(Engine::Native)));
        assert!(matches!(
            Engine::parse("candle-cpu"),
            Ok(Engine::Candle(Device::Cpu))
        ));
        let err = Engine::parse("tpu").err().unwrap().to_string();
        assert!(err.contains("cpu, cuda, cuda:N or candle-cpu"), "{err}");
        let err = Engine::parse("cuda:x").err().unwrap().to_string();
        assert!(err.contains("ordinal must be a number"), "{err}");
        if !candle_core::utils::cuda_is_available() {
            let err = Engine::parse("cuda").err().unwrap().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
