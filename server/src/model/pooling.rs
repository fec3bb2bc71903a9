//! Pooling token states into one vector per input, exactly as
//! sentence-transformers' `Pooling` module does, plus L2 normalization.
//!
//! Modes are concatenated in sentence-transformers' order: CLS token, max,
//! mean, mean with sqrt(length).

use std::path::Path;

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

    /// Pools the token states of each input: `states` holds the inputs one
    /// after another (`[Σ lengths, hidden]`, row-major), `lengths` their
    /// token counts (each ≥ 1). One `output_dimension`-wide row per input.
    pub fn apply(&self, states: &[f32], lengths: &[usize], hidden: usize) -> Vec<Vec<f32>> {
        let mut out = Vec::with_capacity(lengths.len());
        let mut start = 0;
        for len in lengths {
            let rows = &states[start * hidden..][..len * hidden];
            start += len;
            let mut pooled = Vec::with_capacity(self.output_dimension(hidden));
            if self.cls {
                pooled.extend_from_slice(&rows[..hidden]);
            }
            if self.max {
                let mut max = vec![f32::NEG_INFINITY; hidden];
                for row in rows.chunks_exact(hidden) {
                    for (m, v) in max.iter_mut().zip(row) {
                        *m = m.max(*v);
                    }
                }
                pooled.extend(max);
            }
            if self.mean || self.mean_sqrt_len {
                let mut sum = vec![0f32; hidden];
                for row in rows.chunks_exact(hidden) {
                    for (s, v) in sum.iter_mut().zip(row) {
                        *s += v;
                    }
                }
                let count = (*len).max(1) as f32;
                if self.mean {
                    pooled.extend(sum.iter().map(|s| s / count));
                }
                if self.mean_sqrt_len {
                    pooled.extend(sum.iter().map(|s| s / count.sqrt()));
                }
            }
            out.push(pooled);
        }
        out
    }
}

/// Smallest norm divided by, as torch's `F.normalize`.
pub const NORM_EPSILON: f32 = 1e-12;

/// L2-normalizes `x` in place (as torch's `F.normalize`).
pub fn normalize(x: &mut [f32]) {
    let norm = x
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt()
        .max(NORM_EPSILON);
    for v in x.iter_mut() {
        *v /= norm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poolings_see_only_their_own_tokens() {
        // Two inputs (2 tokens, then 1 token), hidden 2.
        let states = [1.0, 2.0, 3.0, 4.0, 100.0, -100.0];
        let all = Pooling {
            cls: true,
            max: true,
            mean: true,
            mean_sqrt_len: true,
        };
        let out = all.apply(&states, &[2, 1], 2);
        let s2 = 2f32.sqrt();
        let first = [1.0, 2.0, 3.0, 4.0, 2.0, 3.0, 4.0 / s2, 6.0 / s2];
        for (a, b) in out[0].iter().zip(first) {
            assert!((a - b).abs() < 1e-5, "{out:?}");
        }
        assert_eq!(
            out[1],
            vec![100.0, -100.0, 100.0, -100.0, 100.0, -100.0, 100.0, -100.0]
        );
        assert_eq!(all.output_dimension(2), 8);
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zero() {
        let mut x = [3.0, 4.0];
        normalize(&mut x);
        assert_eq!(x, [0.6, 0.8]);
        let mut zero = [0.0, 0.0];
        normalize(&mut zero);
        assert_eq!(zero, [0.0, 0.0]);
    }
}
