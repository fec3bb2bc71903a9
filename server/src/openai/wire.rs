//! The OpenAI API's JSON, as far as this server serves it: completions,
//! chat completions (both streamed as `chunk` objects), models, embeddings,
//! and errors. Requests refuse fields they do not know, and fields whose
//! meaning this server does not implement (`logprobs`, `n` > 1, tools…),
//! rather than ignore them.

use serde::{Deserialize, Serialize};

use crate::generate::chat::Message;
use crate::generate::params::SamplingParams;
use crate::generate::prefix::CacheSalt;
use crate::{Error, Result};

/// One string or a list of them (`prompt`, `stop`, `input`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// A list of strings.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` and no choices.
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling fields both generation endpoints share: OpenAI's names,
/// and vLLM's extra ones (with `user` and vLLM's `cache_salt`, the other
/// fields they share).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// Tokens to generate at most.
    pub max_tokens: Option<u32>,
    /// Temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// vLLM: top-k.
    pub top_k: Option<i32>,
    /// vLLM: min-p.
    pub min_p: Option<f32>,
    /// Seed for reproducible draws.
    pub seed: Option<u64>,
    /// Presence penalty.
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// vLLM: repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// Stop strings.
    pub stop: Option<OneOrMany>,
    /// vLLM: stop token ids.
    pub stop_token_ids: Option<Vec<u32>>,
    /// vLLM: do not stop at EOS.
    pub ignore_eos: Option<bool>,
    /// vLLM: no stop before this many tokens.
    pub min_tokens: Option<u32>,
    /// vLLM: keep the stop string in the output.
    pub include_stop_str_in_output: Option<bool>,
    /// vLLM: leave special tokens out of the text.
    pub skip_special_tokens: Option<bool>,
    /// Choices per prompt; only 1.
    pub n: Option<u32>,
    /// Not served: refused when set.
    pub logprobs: Option<serde_json::Value>,
    /// Not served: refused when set.
    pub logit_bias: Option<serde_json::Value>,
    /// An end-user id; accepted and not used.
    pub user: Option<String>,
    /// vLLM: prefix caching shares this request's prompt only with requests
    /// that sent the same salt (not a sampling parameter, but sent beside
    /// them by both endpoints).
    pub cache_salt: Option<String>,
}

impl Sampling {
    /// The checked `cache_salt`, taken out.
    pub fn take_cache_salt(&mut self) -> Result<Option<CacheSalt>> {
        self.cache_salt.take().map(CacheSalt::parse).transpose()
    }

    /// vLLM's sampling parameters for these fields (validated later by
    /// the core against the server's bounds).
    pub fn params(self) -> Result<SamplingParams> {
        if self
            .logprobs
            .as_ref()
            .is_some_and(|v| !v.is_null() && *v != serde_json::Value::Bool(false))
        {
            return Err(Error::BadInput(
                "logprobs are not served by this server; leave logprobs out".into(),
            ));
        }
        if self.logit_bias.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(Error::BadInput(
                "logit_bias is not served by this server; leave it out".into(),
            ));
        }
        let mut p = SamplingParams {
            max_tokens: self.max_tokens,
            seed: self.seed,
            ..SamplingParams::default()
        };
        set(&mut p.n, self.n);
        set(&mut p.temperature, self.temperature);
        set(&mut p.top_p, self.top_p);
        set(&mut p.top_k, self.top_k);
        set(&mut p.min_p, self.min_p);
        set(&mut p.presence_penalty, self.presence_penalty);
        set(&mut p.frequency_penalty, self.frequency_penalty);
        set(&mut p.repetition_penalty, self.repetition_penalty);
        set(&mut p.stop, self.stop.map(OneOrMany::into_vec));
        set(&mut p.stop_token_ids, self.stop_token_ids);
        set(&mut p.ignore_eos, self.ignore_eos);
        set(&mut p.min_tokens, self.min_tokens);
        set(
            &mut p.include_stop_str_in_output,
            self.include_stop_str_in_output,
        );
        set(&mut p.skip_special_tokens, self.skip_special_tokens);
        Ok(p)
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// `POST /v1/completions`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    /// The model's name.
    pub model: String,
    /// The prompt (one).
    pub prompt: OneOrMany,
    /// Stream chunks as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Put the prompt in front of the text.
    #[serde(default)]
    pub echo: bool,
    /// Sampling.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `content` of a chat message: a string, or a list of parts of which only
/// text is served.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Content {
    /// Text.
    Text(String),
    /// Parts.
    Parts(Vec<Part>),
}

/// A part of a message's content.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// `text` (the only type served).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: Option<String>,
}

/// A chat message as sent.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`.
    pub role: String,
    /// The content.
    pub content: Content,
    /// A participant's name; accepted and not used.
    pub name: Option<String>,
}

impl ChatMessage {
    /// The message with its text content.
    pub fn into_message(self, index: usize) -> Result<Message> {
        let content = match self.content {
            Content::Text(t) => t,
            Content::Parts(parts) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(Error::BadInput(format!(
                                "messages[{index}]: content parts of type {kind:?} are not served; send text"
                            )));
                        }
                    }
                }
                text
            }
        };
        Ok(Message {
            role: self.role,
            content,
        })
    }
}

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The model's name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Stream chunks as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// The newer name of `max_tokens`.
    pub max_completion_tokens: Option<u32>,
    /// Not served: refused when true.
    pub top_logprobs: Option<u32>,
    /// Sampling.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `POST /v1/embeddings`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    /// The model's name.
    pub model: String,
    /// One text or several.
    pub input: OneOrMany,
    /// `float` (the default) or `base64` (little-endian f32).
    pub encoding_format: Option<String>,
    /// An end-user id; accepted and not used.
    pub user: Option<String>,
}

/// Token counts.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Both.
    pub total_tokens: usize,
    /// What the prompt's tokens were.
    pub prompt_tokens_details: PromptTokensDetails,
}

/// OpenAI's `usage.prompt_tokens_details`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose keys and values came from a cached prefix
    /// (prefix caching), not computed for this request.
    pub cached_tokens: usize,
}

impl From<crate::generate::Usage> for Usage {
    fn from(u: crate::generate::Usage) -> Usage {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: u.cached_tokens,
            },
        }
    }
}

/// The error body: `{"error": {...}}`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// What to change.
    pub message: String,
    /// `invalid_request_error`, `not_found_error`, `rate_limit_error`,
    /// `service_unavailable`, `internal_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The field at fault, when known.
    pub param: Option<String>,
    /// The HTTP status, as a code.
    pub code: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_requests_map_to_vllm_params_and_refuse_the_unknown() {
        let r: CompletionRequest = serde_json::from_str(
            r#"{"model":"m","prompt":"hi","max_tokens":5,"temperature":0,"stop":"\n","top_k":3,"seed":1,"user":"u"}"#,
        )
        .unwrap();
        let p = r.sampling.params().unwrap();
        assert_eq!(p.max_tokens, Some(5));
        assert_eq!(p.temperature, 0.0);
        assert_eq!(p.stop, vec!["\n".to_string()]);
        assert_eq!((p.top_k, p.seed), (3, Some(1)));
        let unknown = serde_json::from_str::<CompletionRequest>(
            r#"{"model":"m","prompt":"x","temprature":1}"#,
        );
        assert!(unknown.unwrap_err().to_string().contains("temprature"));
        let logprobs: CompletionRequest =
            serde_json::from_str(r#"{"model":"m","prompt":"x","logprobs":2}"#).unwrap();
        assert!(
            logprobs
                .sampling
                .params()
                .unwrap_err()
                .to_string()
                .contains("logprobs")
        );
    }

    #[test]
    fn chat_content_parts_of_text_are_joined_and_others_refused() {
        let r = serde_json::from_str::<ChatRequest>(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        );
        // An image part has a field a text part lacks: refused at parsing.
        assert!(r.is_err());
        let r: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        )
        .unwrap();
        let m = r
            .messages
            .into_iter()
            .next()
            .unwrap()
            .into_message(0)
            .unwrap();
        assert_eq!(m.content, "ab");
    }
}
