//! The embedding task: texts in, embeddings out. Tokenize (Hugging Face
//! tokenizers, from the folder's `tokenizer.json`), run the encoder on a
//! batch, pool and normalize as the folder's sentence-transformers modules
//! say.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::model::engine::{self, Encoder, Engine};
use crate::model::folder::ModelSpec;
use crate::model::pooling::normalize;
use crate::model::task::{Task, Tokens};
use crate::{Error, Result};

/// A loaded embedding model.
pub struct Embedder {
    spec: ModelSpec,
    tokenizer: Tokenizer,
    truncating: Tokenizer,
    encoder: Box<dyn Encoder>,
}

impl Embedder {
    /// Loads the model folder `dir` for `engine`.
    pub fn load(dir: &Path, engine: &Engine) -> Result<Embedder> {
        let spec = ModelSpec::read(dir)?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| Error::BadModel(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::BadModel(format!("tokenizer.json: {e}")))?;
        let mut truncating = tokenizer.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                max_length: spec.max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::BadModel(format!("tokenizer.json: {e}")))?;
        let encoder = engine::load(&spec, engine)?;
        Ok(Embedder {
            spec,
            tokenizer,
            truncating,
            encoder,
        })
    }

    /// What the folder describes.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Tokenizes one text (see [`Task::tokenize`]).
    pub fn tokenize(&self, text: &str, truncate: bool) -> Result<Tokens> {
        if text.is_empty() {
            return Err(Error::BadInput(
                "empty text: every input needs at least one character".into(),
            ));
        }
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::BadInput(format!("cannot tokenize: {e}")))?;
        let max = self.spec.max_seq_length;
        if encoding.len() <= max {
            return Ok(Tokens {
                ids: encoding.get_ids().to_vec(),
                truncated: false,
            });
        }
        if !truncate {
            return Err(Error::BadInput(format!(
                "input has {} tokens, more than this model's maximum of {max}: shorten it or set the parameter truncate=true",
                encoding.len()
            )));
        }
        let cut = self
            .truncating
            .encode(text, true)
            .map_err(|e| Error::BadInput(format!("cannot tokenize: {e}")))?;
        Ok(Tokens {
            ids: cut.get_ids().to_vec(),
            truncated: true,
        })
    }

    /// Embeds already tokenized inputs as one batch (each input at least
    /// one token).
    pub fn embed_tokens(&self, batch: &[&[u32]], normalize_output: bool) -> Result<Vec<Vec<f32>>> {
        if let Some(i) = batch.iter().position(|ids| ids.is_empty()) {
            return Err(Error::BadInput(format!("input {i} has no tokens")));
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let states = self.encoder.forward(batch)?;
        let lengths: Vec<usize> = batch.iter().map(|ids| ids.len()).collect();
        let mut pooled = self
            .spec
            .pooling
            .apply(&states, &lengths, self.encoder.hidden_size());
        if normalize_output {
            pooled.iter_mut().for_each(|row| normalize(row));
        }
        Ok(pooled)
    }

    /// Embeds texts; `normalize` overrides the folder's Normalize module.
    pub fn embed(
        &self,
        texts: &[&str],
        truncate: bool,
        normalize: Option<bool>,
    ) -> Result<Vec<Vec<f32>>> {
        let tokens = texts
            .iter()
            .map(|t| self.tokenize(t, truncate))
            .collect::<Result<Vec<_>>>()?;
        let batch: Vec<&[u32]> = tokens.iter().map(|t| t.ids.as_slice()).collect();
        self.embed_tokens(&batch, normalize.unwrap_or(self.spec.normalize))
    }
}

/// Batches run pooled and not normalized: whether to normalize is each
/// request's choice, applied once to its own vectors.
impl Task for Embedder {
    type Output = Vec<f32>;

    fn tokenize(&self, text: &str, truncate: bool) -> Result<Tokens> {
        Embedder::tokenize(self, text, truncate)
    }

    fn run(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        self.embed_tokens(batch, false)
    }
}
