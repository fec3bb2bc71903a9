//! Pooling token states into one vector per input, exactly as
//! sentence-transformers' `Pooling` module does, plus L2 normalization.
//!
//! Modes are concatenated in sentence-transformers' order: CLS token, max,
//! mean, mean with sqrt(length).

use std::path::Path;

use candle_core::{D, DType, Tensor};
use serde::Deserialize;

use crate::{Error, Result};

/// Which poolings to apply (at least one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pooling {
    /// The first token's state.
    pub cls: bool,
    /// Element-wise max over real tokens.
    pub max: bool,
    /// Mean over real tokens.
    pub mean: bool,
    /// Sum over real tokens divided by sqrt(token count).
    pub mean_sqrt_len: bool,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    word_embedding_dimension: Option<usize>,
}

impl Pooling {
    /// Mean pooling only.
    pub fn mean() -> Pooling {
        Pooling {
            cls: false,
            max: false,
            mean: true,
            mean_sqrt_len: false,
        }
    }

    /// Reads a Pooling module's `config.json`.
    pub fn from_config(path: &Path, hidden_size: usize) -> Result<Pooling> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let c: PoolingConfig = serde_json::from_str(&text)
            .map_err(|e| Error::BadModel(format!("{}: {e}", path.display())))?;
        if c.pooling_mode_weightedmean_tokens || c.pooling_mode_lasttoken {
            return Err(Error::BadModel(format!(
                "{}: weighted-mean and last-token pooling are not supported yet",
                path.display()
            )));
        }
        if let Some(dim) = c.word_embedding_dimension.filter(|d| *d != hidden_size) {
            return Err(Error::BadModel(format!(
                "{}: word_embedding_dimension {dim} differs from the model's hidden size {hidden_size}",
                path.display()
            )));
        }
        let p = Pooling {
            cls: c.pooling_mode_cls_token,
            max: c.pooling_mode_max_tokens,
            mean: c.pooling_mode_mean_tokens,
            mean_sqrt_len: c.pooling_mode_mean_sqrt_len_tokens,
        };
        if !(p.cls || p.max || p.mean || p.mean_sqrt_len) {
            return Err(Error::BadModel(format!(
                "{}: no pooling mode is enabled",
                path.display()
            )));
        }
        Ok(p)
    }

    /// Output width for token states of width `hidden`.
    pub fn output_dimension(&self, hidden: usize) -> usize {
        hidden
            * [self.cls, self.max, self.mean, self.mean_sqrt_len]
                .iter()
                .filter(|m| **m)
                .count()
    }

    /// Pools `states` `[batch, tokens, hidden]` with `mask` `[batch, tokens]`
    /// (1 for real tokens, 0 for padding) into `[batch, output_dimension]`.
    pub fn apply(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?; // [b, t, 1]
        let mut parts = Vec::new();
        if self.cls {
            parts.push(states.narrow(1, 0, 1)?.squeeze(1)?);
        }
        if self.max {
            // Padding must never win the max: push it far down.
            let penalty = ((mask.ones_like()? - &mask)? * -1e9f64)?;
            parts.push(states.broadcast_add(&penalty)?.max(1)?);
        }
        if self.mean || self.mean_sqrt_len {
            let sum = states.broadcast_mul(&mask)?.sum(1)?; // [b, h]
            let count = mask.sum(1)?.clamp(1e-9, f64::MAX)?; // [b, 1]
            if self.mean {
                parts.push(sum.broadcast_div(&count)?);
            }
            if self.mean_sqrt_len {
                parts.push(sum.broadcast_div(&count.sqrt()?)?);
            }
        }
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// Smallest norm divided by, as torch's `F.normalize`.
pub const NORM_EPSILON: f64 = 1e-12;

/// L2-normalizes each row of `[batch, dim]` (as torch's `F.normalize`).
pub fn normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(NORM_EPSILON, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(data: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn poolings_ignore_padding() {
        // One input of 2 real tokens + 1 padding token, hidden 2.
        let states = t(&[1.0, 2.0, 3.0, 4.0, 100.0, -100.0], &[1, 3, 2]);
        let mask = t(&[1.0, 1.0, 0.0], &[1, 3]);
        let all = Pooling {
            cls: true,
            max: true,
            mean: true,
            mean_sqrt_len: true,
        };
        let out: Vec<f32> = all
            .apply(&states, &mask)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let s2 = 2f32.sqrt();
        let expected = [1.0, 2.0, 3.0, 4.0, 2.0, 3.0, 4.0 / s2, 6.0 / s2];
        for (a, b) in out.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{out:?}");
        }
        assert_eq!(all.output_dimension(2), 8);
    }

    #[test]
    fn normalize_gives_unit_rows() {
        let x = t(&[3.0, 4.0, 0.0, 0.0], &[2, 2]);
        let out: Vec<f32> = normalize(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(out, vec![0.6, 0.8, 0.0, 0.0]);
    }
}
