//! Where a decoder's tensors come from: a GGUF file (llama.cpp's names) or
//! a Hugging Face folder of safetensors (transformers' names), read as
//! [`Raw`] tensors by one logical name.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::linear::{Raw, RawData};
use crate::kernels::quant::QuantFormat;
use crate::model::gguf::{Gguf, TensorType};
use crate::{Error, Result};

/// A tensor of the model, by its role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Token embeddings.
    Embed,
    /// The output projection (absent when tied to the embeddings).
    Output,
    /// The final RMSNorm.
    Norm,
    /// A block's RMSNorm before attention.
    AttnNorm(usize),
    /// Query projection.
    Q(usize),
    /// Key projection.
    K(usize),
    /// Value projection.
    V(usize),
    /// Attention output projection.
    O(usize),
    /// Query bias (Qwen2).
    QBias(usize),
    /// Key bias (Qwen2).
    KBias(usize),
    /// Value bias (Qwen2).
    VBias(usize),
    /// Per-head RMSNorm of queries (Qwen3).
    QNorm(usize),
    /// Per-head RMSNorm of keys (Qwen3).
    KNorm(usize),
    /// A block's RMSNorm before the MLP.
    FfnNorm(usize),
    /// MLP gate projection.
    Gate(usize),
    /// MLP up projection.
    Up(usize),
    /// MLP down projection.
    Down(usize),
}

impl Part {
    fn gguf_name(self) -> String {
        let blk = |i: usize, s: &str| format!("blk.{i}.{s}");
        match self {
            Part::Embed => "token_embd.weight".into(),
            Part::Output => "output.weight".into(),
            Part::Norm => "output_norm.weight".into(),
            Part::AttnNorm(i) => blk(i, "attn_norm.weight"),
            Part::Q(i) => blk(i, "attn_q.weight"),
            Part::K(i) => blk(i, "attn_k.weight"),
            Part::V(i) => blk(i, "attn_v.weight"),
            Part::O(i) => blk(i, "attn_output.weight"),
            Part::QBias(i) => blk(i, "attn_q.bias"),
            Part::KBias(i) => blk(i, "attn_k.bias"),
            Part::VBias(i) => blk(i, "attn_v.bias"),
            Part::QNorm(i) => blk(i, "attn_q_norm.weight"),
            Part::KNorm(i) => blk(i, "attn_k_norm.weight"),
            Part::FfnNorm(i) => blk(i, "ffn_norm.weight"),
            Part::Gate(i) => blk(i, "ffn_gate.weight"),
            Part::Up(i) => blk(i, "ffn_up.weight"),
            Part::Down(i) => blk(i, "ffn_down.weight"),
        }
    }

    fn hf_name(self) -> String {
        let layer = |i: usize, s: &str| format!("model.layers.{i}.{s}");
        match self {
            Part::Embed => "model.embed_tokens.weight".into(),
            Part::Output => "lm_head.weight".into(),
            Part::Norm => "model.norm.weight".into(),
            Part::AttnNorm(i) => layer(i, "input_layernorm.weight"),
            Part::Q(i) => layer(i, "self_attn.q_proj.weight"),
            Part::K(i) => layer(i, "self_attn.k_proj.weight"),
            Part::V(i) => layer(i, "self_attn.v_proj.weight"),
            Part::O(i) => layer(i, "self_attn.o_proj.weight"),
            Part::QBias(i) => layer(i, "self_attn.q_proj.bias"),
            Part::KBias(i) => layer(i, "self_attn.k_proj.bias"),
            Part::VBias(i) => layer(i, "self_attn.v_proj.bias"),
            Part::QNorm(i) => layer(i, "self_attn.q_norm.weight"),
            Part::KNorm(i) => layer(i, "self_attn.k_norm.weight"),
            Part::FfnNorm(i) => layer(i, "post_attention_layernorm.weight"),
            Part::Gate(i) => layer(i, "mlp.gate_proj.weight"),
            Part::Up(i) => layer(i, "mlp.up_proj.weight"),
            Part::Down(i) => layer(i, "mlp.down_proj.weight"),
        }
    }
}

/// A model file (or folder) to read tensors from.
pub enum Source {
    /// A GGUF file and its header.
    Gguf {
        /// The header.
        header: Gguf,
        /// The open file.
        file: File,
        /// Its path, for errors.
        path: PathBuf,
    },
    /// The tensors of a folder's safetensors files.
    Safetensors(HashMap<String, Tensor>),
}

impl Source {
    /// The GGUF file at `path`, whose header is `header`.
    pub fn gguf(header: Gguf, path: &Path) -> Result<Source> {
        let file =
            File::open(path).map_err(|e| Error::BadModel(format!("{}: {e}", path.display())))?;
        Ok(Source::Gguf {
            header,
            file,
            path: path.to_path_buf(),
        })
    }

    /// Every tensor of the safetensors `files`.
    pub fn safetensors(files: &[PathBuf]) -> Result<Source> {
        let mut tensors = HashMap::new();
        for path in files {
            let loaded = candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| Error::BadModel(format!("{}: {e}", path.display())))?;
            tensors.extend(loaded);
        }
        Ok(Source::Safetensors(tensors))
    }

    /// Whether the model has `part`.
    pub fn has(&self, part: Part) -> bool {
        match self {
            Source::Gguf { header, .. } => header.tensors.contains_key(&part.gguf_name()),
            Source::Safetensors(t) => t.contains_key(&part.hf_name()),
        }
    }

    /// The tensor of `part`.
    pub fn read(&mut self, part: Part) -> Result<Raw> {
        match self {
            Source::Gguf { header, file, path } => {
                let name = part.gguf_name();
                let (bytes, info) = header
                    .tensor_bytes(file, &name)
                    .map_err(|e| Error::BadModel(format!("{}: {e}", path.display())))?;
                let cols = info.dims.first().copied().unwrap_or(1) as usize;
                let rows = info.dims.iter().skip(1).product::<u64>() as usize;
                let data = match info.kind {
                    TensorType::F32 => RawData::F32(
                        bytes
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    ),
                    TensorType::F16 => RawData::F16(bytes),
                    TensorType::Bf16 => RawData::Bf16(bytes),
                    TensorType::Q4_0 => RawData::Ggml(QuantFormat::Q4_0, bytes),
                    TensorType::Q4_1 => RawData::Ggml(QuantFormat::Q4_1, bytes),
                    TensorType::Q8_0 => RawData::Ggml(QuantFormat::Q8_0, bytes),
                    TensorType::Other(code) => {
                        return Err(Error::BadModel(format!(
                            "tensor {name} has GGML type {code}, not served"
                        )));
                    }
                };
                Ok(Raw {
                    name,
                    rows,
                    cols,
                    data,
                })
            }
            Source::Safetensors(tensors) => {
                let name = part.hf_name();
                let tensor = tensors
                    .get(&name)
                    .ok_or_else(|| Error::BadModel(format!("the weights lack tensor {name}")))?;
                let dims = tensor.dims();
                let (rows, cols) = match dims {
                    [n] => (1, *n),
                    [r, c] => (*r, *c),
                    other => {
                        return Err(Error::BadModel(format!(
                            "tensor {name} has shape {other:?}; a vector or matrix is expected"
                        )));
                    }
                };
                let values = tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                Ok(Raw {
                    name,
                    rows,
                    cols,
                    data: RawData::F32(values),
                })
            }
        }
    }
}
