//! Text generation: a decoder-only model with its tokenizer and chat
//! template, and the engine that serves many streams at once.
//!
//! - [`params`]: vLLM's `SamplingParams` (names, defaults, ranges), parsed
//!   from Triton's JSON or built by the OpenAI API, bounded by the server;
//! - [`sampler`]: penalties, temperature, top-k, top-p, min-p, seeded draws;
//! - [`stop`]: EOS, stop tokens, stop strings (held back until they cannot
//!   match), `max_tokens`, and the finish reason;
//! - [`detok`]: incremental detokenization, only whole characters;
//! - [`chat`]: chat templates rendered with minijinja;
//! - [`engine`]: continuous batching on one thread;
//! - [`prefix`]: prefix caching, a new sequence starting from the keys and
//!   values another cached for the same first tokens.

pub mod chat;
pub mod detok;
pub mod engine;
pub mod params;
pub mod prefix;
pub mod sampler;
pub mod stop;

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::model::decoder::{Decoder, single_gguf};
use crate::model::engine::Engine;
use crate::model::gguf::Gguf;
use crate::model::gguf_tokenizer;
use crate::{Error, Result};
use chat::ChatTemplate;

/// Tokens of a request, as the protocols report them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Of the prompt's tokens, those whose keys and values were copied
    /// from a cached prefix ([`prefix`]).
    pub cached_tokens: usize,
}

/// A loaded generative model: weights, tokenizer, end tokens, template.
pub struct Model {
    /// The network.
    pub decoder: Decoder,
    /// Its tokenizer (shared with every sequence's detokenizer).
    pub tokenizer: Arc<Tokenizer>,
    /// Tokens that end a sequence (unless `ignore_eos`).
    pub eos: Vec<u32>,
    /// The token put in front of every prompt, when the model wants one.
    bos: Option<u32>,
    /// The chat template, when the model has one.
    pub chat: Option<ChatTemplate>,
}

/// What `tokenizer_config.json` says beside `tokenizer.json`.
#[derive(Default, Deserialize)]
struct TokenizerConfig {
    chat_template: Option<String>,
    bos_token: Option<serde_json::Value>,
    eos_token: Option<serde_json::Value>,
    #[serde(default)]
    add_bos_token: bool,
}

impl Model {
    /// Loads the model at `path`: a `.gguf` file or a folder holding one
    /// (its tokenizer from `tokenizer.json` when the folder has one, else
    /// from the file's metadata), or a Hugging Face folder (`config.json`,
    /// `*.safetensors`, `tokenizer.json`, `tokenizer_config.json`); the
    /// decoder on our CPU kernels.
    pub fn load(path: &Path) -> Result<Model> {
        Model::load_for(path, &Engine::Native)
    }

    /// Loads the model at `path` (as [`Model::load`]) for `engine`: our
    /// CPU kernels, or a candle device in its precision.
    pub fn load_for(path: &Path, engine: &Engine) -> Result<Model> {
        let folder = if path.is_file() {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            path.to_path_buf()
        };
        let gguf = if path.is_file() {
            Some(path.to_path_buf())
        } else {
            single_gguf(path)?
        };
        let decoder = Decoder::load_for(path, engine)?;
        let json = folder.join("tokenizer.json");
        let mut model = if json.is_file() {
            Model::with_tokenizer_json(decoder, &folder)?
        } else if let Some(file) = gguf {
            Model::with_gguf_tokenizer(decoder, &file)?
        } else {
            return Err(Error::BadModel(format!(
                "{}: no tokenizer.json and no GGUF file to build a tokenizer from",
                folder.display()
            )));
        };
        model.eos.extend(generation_config_eos(&folder)?);
        model.eos.sort_unstable();
        model.eos.dedup();
        Ok(model)
    }

    fn with_gguf_tokenizer(decoder: Decoder, file: &Path) -> Result<Model> {
        let header = Gguf::open(file)?;
        let t = gguf_tokenizer::from_gguf(&header)?;
        let token_text = |id: Option<u32>| {
            id.and_then(|id| t.tokenizer.id_to_token(id))
                .unwrap_or_default()
        };
        let chat = t
            .chat_template
            .as_deref()
            .map(|source| ChatTemplate::new(source, token_text(t.bos), token_text(t.eos)))
            .transpose()?;
        Ok(Model {
            decoder,
            eos: t.eos.into_iter().collect(),
            bos: t.bos.filter(|_| t.add_bos),
            chat,
            tokenizer: Arc::new(t.tokenizer),
        })
    }

    fn with_tokenizer_json(decoder: Decoder, folder: &Path) -> Result<Model> {
        let path = folder.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| Error::BadModel(format!("{}: {e}", path.display())))?;
        let config_path = folder.join("tokenizer_config.json");
        let config: TokenizerConfig = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| Error::BadModel(format!("{}: {e}", config_path.display())))?,
            Err(_) => TokenizerConfig::default(),
        };
        let special = |v: &Option<serde_json::Value>| -> String {
            match v {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Object(o)) => o
                    .get("content")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            }
        };
        let (bos_text, eos_text) = (special(&config.bos_token), special(&config.eos_token));
        let eos = tokenizer.token_to_id(&eos_text).into_iter().collect();
        let bos = tokenizer
            .token_to_id(&bos_text)
            .filter(|_| config.add_bos_token);
        let chat = config
            .chat_template
            .as_deref()
            .map(|source| ChatTemplate::new(source, bos_text.clone(), eos_text.clone()))
            .transpose()?;
        Ok(Model {
            decoder,
            tokenizer: Arc::new(tokenizer),
            eos,
            bos,
            chat,
        })
    }

    /// The token ids of a prompt (with the BOS token the model wants).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::BadInput(format!("the prompt could not be tokenized: {e}")))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        ids.extend(self.bos);
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }
}

/// `eos_token_id` of `generation_config.json` (a number or a list), if any.
fn generation_config_eos(folder: &Path) -> Result<Vec<u32>> {
    let path = folder.join("generation_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::BadModel(format!("{}: {e}", path.display())))?;
    Ok(match value.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| v as u32).into_iter().collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect(),
        _ => Vec::new(),
    })
}
