//! The generation side of the inference core: a prompt (text, or a
//! conversation rendered by the model's chat template) tokenized on the
//! bounded blocking pool, checked against the prompt and context limits,
//! `max_tokens` resolved, then queued for the engine; the caller reads the
//! events as they come. Dropping the [`Stream`] cancels the sequence.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::{Inference, Loaded, Permit};
use crate::generate::Model;
use crate::generate::chat::Message;
use crate::generate::engine::{EngineHandle, Event, Request};
use crate::generate::params::{GenerationBounds, SamplingParams};
use crate::generate::prefix::CacheSalt;
use crate::generate::sampler::Sampler;
use crate::{Error, Result};

/// A generative model served, with its engine and limits.
pub struct Generator {
    /// The model.
    pub model: Arc<Model>,
    /// Its engine.
    pub engine: EngineHandle,
    /// What sampling parameters may ask for.
    pub bounds: GenerationBounds,
    /// Longest prompt, in tokens (`--max-prompt-tokens`).
    pub max_prompt_tokens: usize,
}

/// What to continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// Plain text, tokenized as it is.
    Text(String),
    /// A conversation, rendered with the model's chat template and the
    /// assistant's turn opened.
    Chat(Vec<Message>),
}

/// A running generation: its events, and what the answer reports.
pub struct Stream {
    /// Events until [`Event::Finished`] or [`Event::Failed`].
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// The prompt as text (rendered, for a conversation).
    pub prompt_text: String,
    _permit: Permit,
}

impl Inference {
    /// The generator, or why this server has none.
    pub fn generator(&self) -> Result<&Generator> {
        match self.loaded()? {
            Loaded::Generation(g) => Ok(g),
            Loaded::Embedding { .. } => Err(Error::BadInput(format!(
                "model {:?} computes embeddings, it does not generate text; send the input tensor \"text\" (or use /v1/embeddings)",
                self.model_name
            ))),
        }
    }

    /// Starts generating: `params` are validated here against the
    /// server's bounds; `max_tokens` unset (`None`) means as many as the
    /// context leaves after the prompt, up to `--max-new-tokens`. With a
    /// `cache_salt`, prefix caching shares only with requests that sent
    /// the same.
    pub async fn generate(
        &self,
        permit: Permit,
        prompt: Prompt,
        params: SamplingParams,
        cache_salt: Option<CacheSalt>,
    ) -> Result<Stream> {
        let generator = self.generator()?;
        let params = params.validate(&generator.bounds)?;
        let text_bytes = match &prompt {
            Prompt::Text(t) => t.len(),
            Prompt::Chat(messages) => messages
                .iter()
                .map(|m| m.content.len() + m.role.len())
                .sum(),
        };
        self.bounds.request.check_text(0, text_bytes)?;
        let model = Arc::clone(&generator.model);
        let held = Arc::clone(&self.tokenizers)
            .acquire_owned()
            .await
            .map_err(|_| Error::Thread("the tokenization pool is closed".into()))?;
        let tokenizing = Instant::now();
        let (prompt_text, ids) = tokio::task::spawn_blocking(move || {
            let _held = held;
            let text = match prompt {
                Prompt::Text(t) => t,
                Prompt::Chat(messages) => model
                    .chat
                    .as_ref()
                    .ok_or_else(|| {
                        Error::BadInput(
                            "this model has no chat template; send a plain prompt (/v1/completions, or Triton's text_input)".into(),
                        )
                    })?
                    .render(&messages, true)?,
            };
            let ids = model.encode(&text)?;
            Ok::<_, Error>((text, ids))
        })
        .await
        .map_err(|e| Error::Thread(format!("tokenizing crashed: {e}")))??;
        self.metrics.tokenized(tokenizing.elapsed());
        let context = generator.model.decoder.max_positions();
        if ids.is_empty() {
            return Err(Error::BadInput(
                "the prompt is empty; send at least one token of text".into(),
            ));
        }
        if ids.len() > generator.max_prompt_tokens {
            return Err(Error::BadInput(format!(
                "the prompt is {} tokens; at most {} are accepted (--max-prompt-tokens); shorten it",
                ids.len(),
                generator.max_prompt_tokens
            )));
        }
        let max_tokens = params.token_budget(&generator.bounds, ids.len(), context)?;
        let sampler = Sampler::new(&params, &generator.model.eos)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let prompt_tokens = ids.len();
        generator.engine.submit(Request {
            prompt: ids,
            params,
            max_tokens,
            sampler,
            events: tx,
            arrived: Instant::now(),
            cache_salt,
        })?;
        Ok(Stream {
            events: rx,
            prompt_tokens,
            prompt_text,
            _permit: permit,
        })
    }
}
