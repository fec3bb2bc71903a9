//! BERT-family encoders on the CPU with our own kernels (as TEI writes its
//! own model modules): Q, K and V fused into one matrix multiplication,
//! weights packed once at load, bias/GELU/residual fused into the matrix
//! multiplications, and no padding at all: the inputs of a batch are laid
//! end to end (`[Σ tokens, hidden]`), every dense layer runs on that, and
//! attention runs per input, so a batch of unequal lengths wastes nothing
//! and needs no mask.

use rayon::prelude::*;
use serde::Deserialize;

use crate::kernels::attention::attention;
use crate::kernels::elementwise::layer_norm_in_place;
use crate::kernels::gemm::{Epilogue, MatRef, PackedB, matmul_parallel};
use crate::kernels::isa::Isa;
use crate::model::engine::Encoder;
use crate::model::folder::ModelSpec;
use crate::model::weights::Weights;
use crate::{Error, Result};

/// The parts of a BERT `config.json` the forward pass needs.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the token states.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// The feed-forward activation; only `gelu` (exact, erf) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Longest input in tokens.
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` is supported.
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}

/// LayerNorm weights.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// A dense layer: packed weight and bias.
struct Dense {
    weight: PackedB,
    bias: Vec<f32>,
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    ffn_in: Dense,
    ffn_out: Dense,
    output_norm: Norm,
}

/// The intermediate results of one layer, allocated once per forward pass
/// (every element is overwritten before it is read, in every layer).
struct Buffers {
    qkv: Vec<f32>,
    context: Vec<f32>,
    attended: Vec<f32>,
    hidden: Vec<f32>,
}

impl Buffers {
    fn new(config: &BertConfig, tokens: usize) -> Buffers {
        let h = config.hidden_size;
        Buffers {
            qkv: vec![0.0; tokens * 3 * h],
            context: vec![0.0; tokens * h],
            attended: vec![0.0; tokens * h],
            hidden: vec![0.0; tokens * config.intermediate_size],
        }
    }
}

/// A BERT encoder ready to run on the CPU.
pub struct NativeBert {
    config: BertConfig,
    eps: f32,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

/// The native engine's view of the weights: LayerNorms and dense layers.
trait BertWeights {
    fn norm(&self, name: &str, width: usize) -> Result<Norm>;
    fn dense(&self, names: &[String], out: usize, input: usize) -> Result<Dense>;
}

impl BertWeights for Weights {
    fn norm(&self, name: &str, width: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: self.get(&format!("{name}.weight"), &[width])?,
            beta: self.get(&format!("{name}.bias"), &[width])?,
        })
    }

    /// Dense layers `names` (each `[out, input]`) stacked into one.
    fn dense(&self, names: &[String], out: usize, input: usize) -> Result<Dense> {
        let mut weight = Vec::with_capacity(names.len() * out * input);
        let mut bias = Vec::with_capacity(names.len() * out);
        for name in names {
            weight.extend(self.get(&format!("{name}.weight"), &[out, input])?);
            bias.extend(self.get(&format!("{name}.bias"), &[out])?);
        }
        Ok(Dense {
            weight: PackedB::from_transposed(MatRef::dense(&weight, names.len() * out, input)),
            bias,
        })
    }
}

impl NativeBert {
    /// Loads and packs the weights of a BERT folder.
    pub fn load(spec: &ModelSpec) -> Result<NativeBert> {
        let path = spec.dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| {
            Error::BadModel(format!("config.json is not a BERT configuration: {e}"))
        })?;
        if config.hidden_act != "gelu" {
            return Err(Error::BadModel(format!(
                "hidden_act {:?} is not supported by the native CPU encoder (only \"gelu\")",
                config.hidden_act
            )));
        }
        if config.position_embedding_type != "absolute" {
            return Err(Error::BadModel(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                config.position_embedding_type
            )));
        }
        let (h, heads) = (config.hidden_size, config.num_attention_heads);
        if heads == 0 || h % heads != 0 {
            return Err(Error::BadModel(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {heads}"
            )));
        }
        let w = Weights::load(
            spec,
            &["", "bert.", "model."],
            "embeddings.word_embeddings.weight",
        )?;
        let type_vocab = w
            .dims("embeddings.token_type_embeddings.weight")
            .and_then(|d| d.first().copied())
            .unwrap_or(0);
        let token_type = if type_vocab > 0 {
            let all = w.get("embeddings.token_type_embeddings.weight", &[type_vocab, h])?;
            all[..h].to_vec()
        } else {
            vec![0.0; h]
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                let (inter, att) = (config.intermediate_size, format!("{p}.attention"));
                Ok(Layer {
                    qkv: w.dense(
                        &["query", "key", "value"].map(|n| format!("{att}.self.{n}")),
                        h,
                        h,
                    )?,
                    attention_out: w.dense(&[format!("{att}.output.dense")], h, h)?,
                    attention_norm: w.norm(&format!("{att}.output.LayerNorm"), h)?,
                    ffn_in: w.dense(&[format!("{p}.intermediate.dense")], inter, h)?,
                    ffn_out: w.dense(&[format!("{p}.output.dense")], h, inter)?,
                    output_norm: w.norm(&format!("{p}.output.LayerNorm"), h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(NativeBert {
            eps: config.layer_norm_eps as f32,
            word: w.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: w.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type,
            embedding_norm: w.norm("embeddings.LayerNorm", h)?,
            layers,
            config,
        })
    }

    /// Word + position + token-type embeddings, normalized: `[Σ tokens, hidden]`.
    fn embed(&self, isa: Isa, batch: &[&[u32]]) -> Result<Vec<f32>> {
        let h = self.config.hidden_size;
        let total: usize = batch.iter().map(|ids| ids.len()).sum();
        let mut x = Vec::with_capacity(total * h);
        for ids in batch {
            if ids.len() > self.config.max_position_embeddings {
                return Err(Error::BadInput(format!(
                    "input has {} tokens, more than the model's {} positions",
                    ids.len(),
                    self.config.max_position_embeddings
                )));
            }
            for (pos, id) in ids.iter().enumerate() {
                let id = *id as usize;
                if id >= self.config.vocab_size {
                    return Err(Error::BadInput(format!(
                        "token id {id} is outside the vocabulary of {} tokens",
                        self.config.vocab_size
                    )));
                }
                let word = &self.word[id * h..][..h];
                let position = &self.position[pos * h..][..h];
                x.extend(
                    word.iter()
                        .zip(position)
                        .zip(&self.token_type)
                        .map(|((w, p), t)| w + p + t),
                );
            }
        }
        self.norm_rows(isa, &mut x, &self.embedding_norm);
        Ok(x)
    }

    /// One transformer layer, `x` (`[Σ tokens, hidden]`) in place; the
    /// intermediate results go to `buffers`, reused from layer to layer.
    fn layer(
        &self,
        isa: Isa,
        layer: &Layer,
        x: &mut [f32],
        lengths: &[usize],
        buffers: &mut Buffers,
    ) {
        let h = self.config.hidden_size;
        let total = x.len() / h;
        let dense = |input: &[f32], dense: &Dense, out: &mut [f32], epilogue: Epilogue<'_>| {
            let k = dense.weight.k();
            matmul_parallel(
                MatRef::dense(input, total, k),
                &dense.weight,
                out,
                dense.weight.n(),
                epilogue,
            );
        };
        let Buffers {
            qkv,
            context,
            attended,
            hidden,
        } = buffers;
        dense(x, &layer.qkv, qkv, Epilogue::Bias(&layer.qkv.bias));
        attention(isa, qkv, lengths, self.config.num_attention_heads, context);
        let residual = MatRef::dense(x, total, h);
        dense(
            context,
            &layer.attention_out,
            attended,
            Epilogue::BiasResidual(&layer.attention_out.bias, residual),
        );
        self.norm_rows(isa, attended, &layer.attention_norm);
        dense(
            attended,
            &layer.ffn_in,
            hidden,
            Epilogue::BiasGelu(&layer.ffn_in.bias),
        );
        let residual = MatRef::dense(attended, total, h);
        dense(
            hidden,
            &layer.ffn_out,
            x,
            Epilogue::BiasResidual(&layer.ffn_out.bias, residual),
        );
        self.norm_rows(isa, x, &layer.output_norm);
    }

    /// LayerNorm over rows, spread over the thread pool in blocks of rows.
    fn norm_rows(&self, isa: Isa, x: &mut [f32], norm: &Norm) {
        let block = 64 * self.config.hidden_size;
        x.par_chunks_mut(block)
            .for_each(|rows| layer_norm_in_place(isa, rows, &norm.gamma, &norm.beta, self.eps));
    }
}

impl Encoder for NativeBert {
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<f32>> {
        let isa = Isa::detect();
        let lengths: Vec<usize> = batch.iter().map(|ids| ids.len()).collect();
        let mut x = self.embed(isa, batch)?;
        let mut buffers = Buffers::new(&self.config, x.len() / self.config.hidden_size);
        for layer in &self.layers {
            self.layer(isa, layer, &mut x, &lengths, &mut buffers);
        }
        Ok(x)
    }
}
