//! Reading a model folder: `config.json`, `tokenizer.json`, `*.safetensors`
//! and, when present, sentence-transformers' `modules.json`,
//! `sentence_bert_config.json` and the Pooling module's `config.json`.
//!
//! Without `modules.json` the folder is treated as a plain Hugging Face
//! encoder: mean pooling, no normalization, as sentence-transformers does
//! when it wraps such a model.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::pooling::Pooling;
use crate::{Error, Result};

/// Architectures with an encoder implementation.
pub const SUPPORTED_ARCHITECTURES: [&str; 1] = ["bert"];

/// What a model folder describes.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// The folder.
    pub dir: PathBuf,
    /// `model_type` from config.json (lowercase).
    pub model_type: String,
    /// How token states become one vector.
    pub pooling: Pooling,
    /// Whether a Normalize module follows pooling.
    pub normalize: bool,
    /// Longest input in tokens, special tokens included.
    pub max_seq_length: usize,
    /// Width of the transformer's hidden states.
    pub hidden_size: usize,
    /// The safetensors files holding the weights.
    pub weights: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct ConfigJson {
    model_type: Option<String>,
    hidden_size: usize,
    max_position_embeddings: Option<usize>,
}

#[derive(Deserialize)]
struct ModuleJson {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::BadModel(format!("{}: {e}", path.display())))
}

impl ModelSpec {
    /// Reads the folder's description; refuses what it cannot serve faithfully.
    pub fn read(dir: &Path) -> Result<ModelSpec> {
        for required in ["config.json", "tokenizer.json"] {
            if !dir.join(required).is_file() {
                return Err(Error::BadModel(format!(
                    "{} has no {required}; a model folder needs config.json, tokenizer.json and *.safetensors",
                    dir.display()
                )));
            }
        }
        let config: ConfigJson = read_json(&dir.join("config.json"))?;
        let model_type = config.model_type.unwrap_or_default().to_lowercase();
        if !SUPPORTED_ARCHITECTURES.contains(&model_type.as_str()) {
            return Err(Error::BadModel(format!(
                "model_type {model_type:?} is not supported yet; supported: {SUPPORTED_ARCHITECTURES:?}"
            )));
        }
        let mut weights: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        weights.sort();
        if weights.is_empty() {
            return Err(Error::BadModel(format!(
                "{} has no *.safetensors weights (PyTorch .bin files are not loaded: convert them to safetensors)",
                dir.display()
            )));
        }

        let (pooling, normalize) = if dir.join("modules.json").is_file() {
            Self::read_modules(dir, config.hidden_size)?
        } else {
            (Pooling::mean(), false)
        };
        let position_limit = config.max_position_embeddings.unwrap_or(512);
        let max_seq_length = if dir.join("sentence_bert_config.json").is_file() {
            let st: SentenceBertConfig = read_json(&dir.join("sentence_bert_config.json"))?;
            st.max_seq_length.unwrap_or(position_limit)
        } else {
            position_limit
        };
        if max_seq_length > position_limit || max_seq_length < 2 {
            return Err(Error::BadModel(format!(
                "max_seq_length {max_seq_length} does not fit the model's {position_limit} positions"
            )));
        }
        Ok(ModelSpec {
            dir: dir.to_owned(),
            model_type,
            pooling,
            normalize,
            max_seq_length,
            hidden_size: config.hidden_size,
            weights,
        })
    }

    /// Pooling and normalization from sentence-transformers' module list.
    fn read_modules(dir: &Path, hidden_size: usize) -> Result<(Pooling, bool)> {
        let modules: Vec<ModuleJson> = read_json(&dir.join("modules.json"))?;
        let mut pooling = None;
        let mut normalize = false;
        for (i, m) in modules.iter().enumerate() {
            let kind = m.kind.rsplit('.').next().unwrap_or(&m.kind);
            match (i, kind) {
                (0, "Transformer") => {}
                (_, "Pooling") => {
                    pooling = Some(Pooling::from_config(
                        &dir.join(&m.path).join("config.json"),
                        hidden_size,
                    )?);
                }
                (_, "Normalize") => normalize = true,
                _ => {
                    return Err(Error::BadModel(format!(
                        "modules.json: module {i} ({}) is not supported; supported: Transformer, Pooling, Normalize",
                        m.kind
                    )));
                }
            }
        }
        let pooling =
            pooling.ok_or_else(|| Error::BadModel("modules.json has no Pooling module".into()))?;
        Ok((pooling, normalize))
    }

    /// Width of the embeddings this model produces.
    pub fn dimension(&self) -> usize {
        self.pooling.output_dimension(self.hidden_size)
    }
}
