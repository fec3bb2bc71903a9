//! The shape of a decoder-only model, from GGUF metadata or a Hugging Face
//! `config.json`.

use serde::Deserialize;

use crate::kernels::decoder::RopeStyle;
use crate::model::gguf::Gguf;
use crate::{Error, Result};

/// The architectures served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Llama, Mistral, SmolLM2.
    Llama,
    /// Qwen2 and Qwen2.5: biases on Q, K and V.
    Qwen2,
    /// Qwen3: RMSNorm of each head of Q and K, no biases.
    Qwen3,
}

impl Architecture {
    /// The name in GGUF metadata and logs.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
        }
    }

    fn parse(name: &str) -> Result<Architecture> {
        match name {
            "llama" | "LlamaForCausalLM" | "MistralForCausalLM" => Ok(Architecture::Llama),
            "qwen2" | "Qwen2ForCausalLM" => Ok(Architecture::Qwen2),
            "qwen3" | "Qwen3ForCausalLM" => Ok(Architecture::Qwen3),
            other => Err(Error::BadModel(format!(
                "architecture {other:?} is not served for text generation (llama, qwen2 and qwen3 are)"
            ))),
        }
    }
}

/// The shape of a decoder-only transformer.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    /// Which architecture.
    pub arch: Architecture,
    /// Vocabulary size (rows of the embedding).
    pub vocab: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Width of the MLP.
    pub intermediate: usize,
    /// RoPE base.
    pub rope_theta: f32,
    /// Which elements RoPE pairs.
    pub rope_style: RopeStyle,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Longest context the model was trained for.
    pub context: usize,
    /// The element type of the CPU decoder's key/value cache (not the
    /// model's: a serving choice, f32 unless set).
    pub kv_dtype: KvDtype,
}

/// The element type of a key/value cache on the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KvDtype {
    /// 4 bytes a value: the model's own arithmetic (what the parity tests
    /// hold to transformers' FP32).
    #[default]
    F32,
    /// 2 bytes a value: half the memory, so twice the tokens in a KV
    /// budget, and half the bytes attention reads at every step (llama.cpp's
    /// default); each key and value rounded to f16 once, as it is cached.
    F16,
}

impl KvDtype {
    /// Bytes one element takes.
    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }

    /// Its name, as `--kv-cache-dtype` takes it.
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => openmodel_contract::serve::KV_CACHE_DTYPE_F32,
            KvDtype::F16 => openmodel_contract::serve::KV_CACHE_DTYPE_F16,
        }
    }
}

impl DecoderConfig {
    /// From a GGUF file's metadata.
    pub fn from_gguf(gguf: &Gguf) -> Result<DecoderConfig> {
        let arch_name = gguf.string("general.architecture")?;
        let arch = Architecture::parse(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let uint = |k: &str| -> Result<usize> { Ok(gguf.uint(&key(k))? as usize) };
        let hidden = uint("embedding_length")?;
        let heads = uint("attention.head_count")?;
        let head_dim = gguf
            .uint(&key("attention.key_length"))
            .map(|v| v as usize)
            .unwrap_or(hidden / heads.max(1));
        let vocab = match gguf.uint(&key("vocab_size")) {
            Ok(v) => v as usize,
            Err(_) => gguf.array("tokenizer.ggml.tokens")?.len(),
        };
        let config = DecoderConfig {
            arch,
            vocab,
            hidden,
            layers: uint("block_count")?,
            heads,
            kv_heads: gguf
                .uint(&key("attention.head_count_kv"))
                .map(|v| v as usize)
                .unwrap_or(heads),
            head_dim,
            intermediate: uint("feed_forward_length")?,
            rope_theta: gguf.float(&key("rope.freq_base")).unwrap_or(10_000.0) as f32,
            // llama.cpp's converter permutes Llama's Q and K rows to pair
            // neighbours; Qwen's are left in transformers' order.
            rope_style: match arch {
                Architecture::Llama => RopeStyle::Interleaved,
                Architecture::Qwen2 | Architecture::Qwen3 => RopeStyle::Half,
            },
            rms_eps: gguf.float(&key("attention.layer_norm_rms_epsilon"))? as f32,
            context: uint("context_length")?,
            kv_dtype: KvDtype::F32,
        };
        config.check()
    }

    /// From a Hugging Face `config.json`.
    pub fn from_hf_json(text: &str) -> Result<DecoderConfig> {
        #[derive(Deserialize)]
        struct Hf {
            architectures: Vec<String>,
            vocab_size: usize,
            hidden_size: usize,
            num_hidden_layers: usize,
            num_attention_heads: usize,
            num_key_value_heads: Option<usize>,
            head_dim: Option<usize>,
            intermediate_size: usize,
            rope_theta: Option<f32>,
            rms_norm_eps: f32,
            max_position_embeddings: usize,
            rope_scaling: Option<serde_json::Value>,
            hidden_act: Option<String>,
        }
        let hf: Hf =
            serde_json::from_str(text).map_err(|e| Error::BadModel(format!("config.json: {e}")))?;
        let first = hf.architectures.first().map(String::as_str).unwrap_or("");
        let arch = Architecture::parse(first)?;
        if let Some(scaling) = hf.rope_scaling.filter(|v| !v.is_null()) {
            return Err(Error::BadModel(format!(
                "config.json: rope_scaling {scaling} is not served (only plain RoPE)"
            )));
        }
        if let Some(act) = hf.hidden_act.filter(|a| a != "silu") {
            return Err(Error::BadModel(format!(
                "config.json: hidden_act {act:?}; only silu is served"
            )));
        }
        DecoderConfig {
            arch,
            vocab: hf.vocab_size,
            hidden: hf.hidden_size,
            layers: hf.num_hidden_layers,
            heads: hf.num_attention_heads,
            kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim: hf
                .head_dim
                .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
            intermediate: hf.intermediate_size,
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            rope_style: RopeStyle::Half,
            rms_eps: hf.rms_norm_eps,
            context: hf.max_position_embeddings,
            kv_dtype: KvDtype::F32,
        }
        .check()
    }

    fn check(self) -> Result<DecoderConfig> {
        let ok = self.vocab > 0
            && self.hidden > 0
            && self.layers > 0
            && self.heads > 0
            && self.kv_heads > 0
            && self.heads.is_multiple_of(self.kv_heads)
            && self.head_dim > 0
            && self.head_dim.is_multiple_of(2)
            && self.intermediate > 0
            && self.context > 0
            && self.rope_theta > 0.0
            && self.rms_eps > 0.0;
        // Bounds that keep a hostile file from asking for absurd buffers.
        let sane = self.hidden <= 1 << 16
            && self.layers <= 1024
            && self.heads <= 1024
            && self.head_dim <= 1024
            && self.vocab <= 1 << 22
            && self.intermediate <= 1 << 20
            && self.context <= 1 << 22;
        if ok && sane {
            Ok(self)
        } else {
            Err(Error::BadModel(format!(
                "the model's shape is inconsistent or out of bounds: {self:?}"
            )))
        }
    }

    /// Width of all query heads.
    pub fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of all key (or value) heads.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Bytes of keys and values one cached token takes (every layer, in
    /// [`DecoderConfig::kv_dtype`]).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.layers * 2 * self.kv_width() * self.kv_dtype.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_configs_of_the_three_families_are_read_and_bad_ones_refused() {
        let base = r#""vocab_size":256,"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,"rms_norm_eps":1e-6,"max_position_embeddings":512,"rope_theta":10000.0"#;
        for (arch, want) in [
            ("LlamaForCausalLM", Architecture::Llama),
            ("Qwen2ForCausalLM", Architecture::Qwen2),
            ("Qwen3ForCausalLM", Architecture::Qwen3),
        ] {
            let c =
                DecoderConfig::from_hf_json(&format!(r#"{{"architectures":["{arch}"],{base}}}"#))
                    .unwrap();
            assert_eq!(c.arch, want);
            assert_eq!((c.head_dim, c.kv_width(), c.q_width()), (16, 32, 64));
            assert_eq!(c.kv_bytes_per_token(), 2 * 2 * 32 * 4);
            let half = DecoderConfig {
                kv_dtype: KvDtype::F16,
                ..c
            };
            assert_eq!(half.kv_bytes_per_token(), 2 * 2 * 32 * 2);
        }
        let gpt = DecoderConfig::from_hf_json(&format!(
            r#"{{"architectures":["GPT2LMHeadModel"],{base}}}"#
        ));
        assert!(gpt.unwrap_err().to_string().contains("GPT2LMHeadModel"));
        let scaled = DecoderConfig::from_hf_json(&format!(
            r#"{{"architectures":["LlamaForCausalLM"],"rope_scaling":{{"type":"yarn"}},{base}}}"#
        ));
        assert!(scaled.unwrap_err().to_string().contains("rope_scaling"));
        let odd = base.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":3");
        let odd = DecoderConfig::from_hf_json(&format!(
            r#"{{"architectures":["LlamaForCausalLM"],{odd}}}"#
        ));
        assert!(odd.unwrap_err().to_string().contains("inconsistent"));
    }
}
