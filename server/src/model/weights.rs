//! Loading a folder's weights: every tensor of its `*.safetensors` files,
//! read into memory (not memory-mapped, so a file changed on disk cannot
//! change a running model), and a reader that hands them out by name as
//! f32 values, checking each shape against what the configuration implies.
//!
//! The engines build their models from these: candle takes the tensors as
//! they are, the native engine reads them through [`Weights`].

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::model::folder::ModelSpec;
use crate::{Error, Result};

/// Every tensor of the folder's safetensors files, on `device`.
pub fn load_tensors(spec: &ModelSpec, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut tensors = HashMap::new();
    for path in &spec.weights {
        let loaded = candle_core::safetensors::load(path, device)
            .map_err(|e| Error::BadModel(format!("{}: {e}", path.display())))?;
        tensors.extend(loaded);
    }
    Ok(tensors)
}

/// Named tensors on the CPU, read as f32 with their shapes checked.
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: String,
}

impl Weights {
    /// Loads the folder's tensors. Checkpoints saved from a task class
    /// (`BertForMaskedLM`, …) prefix every name; the first of `prefixes`
    /// under which `marker` exists is taken for every name.
    pub fn load(spec: &ModelSpec, prefixes: &[&str], marker: &str) -> Result<Weights> {
        let tensors = load_tensors(spec, &Device::Cpu)?;
        let prefix = prefixes
            .iter()
            .find(|p| tensors.contains_key(&format!("{p}{marker}")))
            .ok_or_else(|| {
                Error::BadModel(format!(
                    "no tensor {marker} in the safetensors files (tried the prefixes {prefixes:?}): not a checkpoint of this architecture"
                ))
            })?;
        Ok(Weights {
            prefix: prefix.to_string(),
            tensors,
        })
    }

    /// The shape of tensor `name`, when there is one.
    pub fn dims(&self, name: &str) -> Option<&[usize]> {
        self.tensors
            .get(&format!("{}{name}", self.prefix))
            .map(Tensor::dims)
    }

    /// The tensor `name` (or its old `gamma`/`beta` spelling for LayerNorm
    /// weights) as f32 values; an error unless its shape is `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let old = name
            .replace("LayerNorm.weight", "LayerNorm.gamma")
            .replace("LayerNorm.bias", "LayerNorm.beta");
        let tensor = [name, old.as_str()]
            .iter()
            .find_map(|n| self.tensors.get(&format!("{}{n}", self.prefix)))
            .ok_or_else(|| Error::BadModel(format!("weights lack tensor {}{name}", self.prefix)))?;
        if tensor.dims() != shape {
            return Err(Error::BadModel(format!(
                "tensor {}{name} has shape {:?}, the configuration implies {shape:?}",
                self.prefix,
                tensor.dims()
            )));
        }
        Ok(tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    }
}
