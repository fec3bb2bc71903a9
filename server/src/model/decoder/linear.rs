//! A linear layer's weight as the decoder holds it: GGML blocks multiplied
//! by our quantized kernels, or f32 packed for our GEMM; and the raw tensors
//! (from GGUF or safetensors) it is built from, fused where layers share an
//! input (Q, K and V; gate and up) so that one product reads them all.

use std::sync::Arc;

use half::{bf16, f16};

use crate::kernels::gemm::{Epilogue, MatRef, PackedB, matmul_parallel};
use crate::kernels::isa::Isa;
use crate::kernels::quant::{QuantFormat, QuantMatrix};
use crate::{Error, Result};

/// How a raw tensor's elements are stored.
#[derive(Clone, Debug)]
pub enum RawData {
    /// f32 values.
    F32(Vec<f32>),
    /// IEEE half floats, little-endian bytes.
    F16(Vec<u8>),
    /// bfloat16, little-endian bytes.
    Bf16(Vec<u8>),
    /// GGML blocks.
    Ggml(QuantFormat, Vec<u8>),
}

/// A tensor as read from the file: `rows × cols` (a vector is one row).
#[derive(Clone, Debug)]
pub struct Raw {
    /// Its name, for errors.
    pub name: String,
    /// Rows (output features of a weight).
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
    /// The elements.
    pub data: RawData,
}

impl Raw {
    /// The values as f32.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let halves = |bytes: &[u8], f: fn([u8; 2]) -> f32| -> Vec<f32> {
            bytes.chunks_exact(2).map(|c| f([c[0], c[1]])).collect()
        };
        Ok(match &self.data {
            RawData::F32(v) => v.clone(),
            RawData::F16(b) => halves(b, |c| f16::from_le_bytes(c).to_f32()),
            RawData::Bf16(b) => halves(b, |c| bf16::from_le_bytes(c).to_f32()),
            RawData::Ggml(format, bytes) => {
                let m = QuantMatrix::from_ggml(*format, self.rows, self.cols, bytes)?;
                let mut out = vec![0f32; self.rows * self.cols];
                for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
                    m.dequantize_row(r, row);
                }
                out
            }
        })
    }

    /// The values, checked to be a vector of `len`.
    pub fn vector(&self, len: usize) -> Result<Vec<f32>> {
        if self.rows * self.cols != len {
            return Err(Error::BadModel(format!(
                "tensor {} has {}×{} elements; the configuration implies {len}",
                self.name, self.rows, self.cols
            )));
        }
        self.to_f32()
    }
}

/// A weight `out × in`, applied as `y = x · Wᵀ`.
#[derive(Clone, Debug)]
pub enum Linear {
    /// GGML blocks (shared when an embedding is tied to the output).
    Quant(Arc<QuantMatrix>),
    /// f32, packed for the GEMM.
    Dense(PackedB),
}

/// The weights of several tensors stacked (their rows one after
/// another), before either implementation packs them: GGML blocks when all
/// parts share one format, else f32.
#[derive(Clone, Debug)]
pub struct Stacked {
    /// Rows (output features) of all parts together.
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
    /// The elements.
    pub data: StackedData,
}

/// How a [`Stacked`] weight's elements are stored.
#[derive(Clone, Debug)]
pub enum StackedData {
    /// GGML blocks of one format.
    Ggml(QuantFormat, Vec<u8>),
    /// f32 values, row-major.
    F32(Vec<f32>),
}

impl Stacked {
    /// The weights of `parts` stacked, each checked to be `rows × cols` as
    /// given.
    pub fn new(parts: &[(&Raw, usize)], cols: usize) -> Result<Stacked> {
        for (raw, rows) in parts {
            if raw.rows != *rows || raw.cols != cols {
                return Err(Error::BadModel(format!(
                    "tensor {} is {}×{}; the configuration implies {rows}×{cols}",
                    raw.name, raw.rows, raw.cols
                )));
            }
        }
        let rows: usize = parts.iter().map(|(_, r)| r).sum();
        let formats: Vec<Option<QuantFormat>> = parts
            .iter()
            .map(|(raw, _)| match raw.data {
                RawData::Ggml(f, _) => Some(f),
                _ => None,
            })
            .collect();
        if let Some(Some(format)) = formats.first().copied()
            && formats.iter().all(|f| *f == Some(format))
        {
            let mut bytes = Vec::new();
            for (raw, _) in parts {
                if let RawData::Ggml(_, b) = &raw.data {
                    bytes.extend_from_slice(b);
                }
            }
            return Ok(Stacked {
                rows,
                cols,
                data: StackedData::Ggml(format, bytes),
            });
        }
        let mut values = Vec::with_capacity(rows * cols);
        for (raw, _) in parts {
            values.extend(raw.to_f32()?);
        }
        Ok(Stacked {
            rows,
            cols,
            data: StackedData::F32(values),
        })
    }
}

impl Linear {
    /// The weights of `parts` stacked (see [`Stacked::new`]) and packed for
    /// our kernels.
    pub fn stack(parts: &[(&Raw, usize)], cols: usize) -> Result<Linear> {
        Linear::from_stacked(Stacked::new(parts, cols)?)
    }

    /// `weight` packed for our kernels.
    pub fn from_stacked(weight: Stacked) -> Result<Linear> {
        Ok(match weight.data {
            StackedData::Ggml(format, bytes) => Linear::Quant(Arc::new(QuantMatrix::from_ggml(
                format,
                weight.rows,
                weight.cols,
                &bytes,
            )?)),
            StackedData::F32(values) => Linear::Dense(PackedB::from_transposed(MatRef::dense(
                &values,
                weight.rows,
                weight.cols,
            ))),
        })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        match self {
            Linear::Quant(m) => m.rows(),
            Linear::Dense(p) => p.n(),
        }
    }

    /// `out[m × out_features] = x[m × in_features] · Wᵀ`.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32]) {
        match self {
            Linear::Quant(w) => w.matmul(Isa::detect(), x, m, out),
            Linear::Dense(p) => {
                let n = p.n();
                matmul_parallel(MatRef::dense(x, m, p.k()), p, out, n, Epilogue::Store);
            }
        }
    }
}
