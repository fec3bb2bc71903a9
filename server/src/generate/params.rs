//! What a client may ask of one generation: vLLM's `SamplingParams`, with
//! vLLM's names and defaults, checked against the server's bounds.
//!
//! Two ways in:
//!
//! - [`SamplingParams::from_json`]: the `sampling_parameters` input of
//!   Triton's vLLM backend, a JSON object given as a string, e.g.
//!   `{"temperature": "0.7", "max_tokens": 32, "stop": ["\n\n"]}`. Triton
//!   clients often send every value as a string, so each scalar may be a
//!   JSON number or boolean, or a string holding one;
//! - [`SamplingParams::validate`]: for a protocol that fills the fields
//!   itself (the OpenAI API) starting from [`SamplingParams::default`].
//!
//! Either way the result is checked: values out of range, unknown keys and
//! values beyond the server's [`GenerationBounds`] are [`Error::BadInput`]
//! naming the field, its value, what is allowed and what to do. Where the
//! parameters go: [`super::sampler::Sampler`] (the sampling fields),
//! [`super::stop::StopChecker`] (stops and lengths) and
//! [`super::detok::IncrementalDecoder`] (`skip_special_tokens`).

use openmodel_contract::flag;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// The flag (without its `--`) of [`GenerationBounds::max_tokens`], the
/// one the operator passes.
pub use openmodel_contract::serve::MAX_NEW_TOKENS;
/// The flag (without its `--`) of [`GenerationBounds::max_stop_strings`].
pub const MAX_STOP_STRINGS: &str = "max-stop-strings";
/// The flag (without its `--`) of [`GenerationBounds::max_stop_string_bytes`].
pub const MAX_STOP_STRING_BYTES: &str = "max-stop-string-bytes";
/// The flag (without its `--`) of [`GenerationBounds::max_stop_token_ids`].
pub const MAX_STOP_TOKEN_IDS: &str = "max-stop-token-ids";

/// The default of `--max-new-tokens`.
pub const DEFAULT_MAX_NEW_TOKENS: u32 = 4096;
/// The default of `--max-stop-strings`.
pub const DEFAULT_MAX_STOP_STRINGS: usize = 16;
/// The default of `--max-stop-string-bytes`.
pub const DEFAULT_MAX_STOP_STRING_BYTES: usize = 256;
/// The default of `--max-stop-token-ids`.
pub const DEFAULT_MAX_STOP_TOKEN_IDS: usize = 64;

/// Temperatures below this mean greedy decoding (vLLM's `_SAMPLING_EPS`).
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// The server's bounds on what one request may ask, each set by a flag:
///
/// - `--max-new-tokens` ([`MAX_NEW_TOKENS`]): most tokens one request may
///   generate; also what `max_tokens: null` asks for;
/// - `--max-stop-strings` ([`MAX_STOP_STRINGS`]): most entries of `stop`;
/// - `--max-stop-string-bytes` ([`MAX_STOP_STRING_BYTES`]): most UTF-8
///   bytes in one stop string;
/// - `--max-stop-token-ids` ([`MAX_STOP_TOKEN_IDS`]): most entries of
///   `stop_token_ids`.
///
/// The stop bounds keep the per-token cost of stop checking bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerationBounds {
    /// `--max-new-tokens`.
    pub max_tokens: u32,
    /// `--max-stop-strings`.
    pub max_stop_strings: usize,
    /// `--max-stop-string-bytes`.
    pub max_stop_string_bytes: usize,
    /// `--max-stop-token-ids`.
    pub max_stop_token_ids: usize,
}

impl Default for GenerationBounds {
    fn default() -> Self {
        GenerationBounds {
            max_tokens: DEFAULT_MAX_NEW_TOKENS,
            max_stop_strings: DEFAULT_MAX_STOP_STRINGS,
            max_stop_string_bytes: DEFAULT_MAX_STOP_STRING_BYTES,
            max_stop_token_ids: DEFAULT_MAX_STOP_TOKEN_IDS,
        }
    }
}

impl GenerationBounds {
    /// Checks that the bounds can be met at all: a request must be able to
    /// generate one token, and a stop string to hold one byte. (Zero stop
    /// strings or stop token ids is allowed: it turns them off.)
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens == 0 || self.max_stop_string_bytes == 0 {
            return Err(Error::BadConfig(format!(
                "{} and {} must be at least 1",
                flag(MAX_NEW_TOKENS),
                flag(MAX_STOP_STRING_BYTES)
            )));
        }
        Ok(())
    }
}

/// How to generate one sequence: vLLM's `SamplingParams` (the subset this
/// server implements), with vLLM's names and defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Sequences to generate for the prompt; only 1 is supported.
    pub n: u32,
    /// Divides the logits; below [`GREEDY_TEMPERATURE`] means greedy
    /// (argmax). At least 0; default 1.
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens whose probabilities
    /// add up to `top_p`. In (0, 1]; default 1 (off).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens; 0 or -1 turns it off (the
    /// default). [`SamplingParams::validate`] turns -1 into 0.
    pub top_k: i32,
    /// Drop tokens less likely than `min_p` times the most likely one's
    /// probability. In [0, 1]; default 0 (off).
    pub min_p: f32,
    /// Seed of the sequence's random draws; `None` draws one from the OS.
    pub seed: Option<u64>,
    /// Subtracted from the logit of every token already in the output. In
    /// [-2, 2]; default 0.
    pub presence_penalty: f32,
    /// Subtracted from the logit of every token once per time it is in the
    /// output. In [-2, 2]; default 0.
    pub frequency_penalty: f32,
    /// Divides the positive logits (multiplies the negative ones) of the
    /// tokens in the prompt or the output. Above 0 and finite; default 1
    /// (off).
    pub repetition_penalty: f32,
    /// Strings that end the sequence; the output stops before them (or
    /// after them, with `include_stop_str_in_output`).
    pub stop: Vec<String>,
    /// Tokens that end the sequence, besides the model's end-of-sequence
    /// tokens; their text is not output.
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past the model's end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Most tokens to generate; `None` asks for as many as the server and
    /// the model's context allow ([`SamplingParams::token_budget`]).
    /// At least 1; default 16.
    pub max_tokens: Option<u32>,
    /// No stop (end-of-sequence, stop token, stop string) ends the
    /// sequence before this many tokens. At most `max_tokens`; default 0.
    pub min_tokens: u32,
    /// Output the stop string that ended the sequence.
    pub include_stop_str_in_output: bool,
    /// Leave special tokens out of the output text (default true).
    pub skip_special_tokens: bool,
    /// Accepted for compatibility with vLLM (default true); the
    /// tokenizer's own decoder decides the spacing.
    pub spaces_between_special_tokens: bool,
}

impl Default for SamplingParams {
    /// vLLM's defaults.
    fn default() -> Self {
        SamplingParams {
            n: 1,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            max_tokens: Some(16),
            min_tokens: 0,
            include_stop_str_in_output: false,
            skip_special_tokens: true,
            spaces_between_special_tokens: true,
        }
    }
}

/// The keys [`SamplingParams::from_json`] knows, in the struct's order.
const KNOWN_KEYS: [&str; 17] = [
    "n",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "max_tokens",
    "min_tokens",
    "include_stop_str_in_output",
    "skip_special_tokens",
    "spaces_between_special_tokens",
];

/// Most characters of a client's value or key quoted back in an error.
const QUOTE_CHARS: usize = 64;

impl SamplingParams {
    /// Parses Triton's `sampling_parameters` (a JSON object; keys not
    /// given keep their defaults) and [validates](SamplingParams::validate)
    /// the result.
    pub fn from_json(json: &str, bounds: &GenerationBounds) -> Result<SamplingParams> {
        let object: Map<String, Value> = serde_json::from_str(json).map_err(|e| {
            bad(format!(
                "sampling_parameters is not a JSON object ({e}); send an object such as \
                 {{\"temperature\": 0.7, \"max_tokens\": 32}}"
            ))
        })?;
        let mut p = SamplingParams::default();
        for (key, v) in &object {
            match key.as_str() {
                "n" => p.n = uint(key, v)?,
                "temperature" => p.temperature = float(key, v)?,
                "top_p" => p.top_p = float(key, v)?,
                "top_k" => p.top_k = int(key, v)?,
                "min_p" => p.min_p = float(key, v)?,
                "seed" => p.seed = optional(v, |v| uint(key, v))?,
                "presence_penalty" => p.presence_penalty = float(key, v)?,
                "frequency_penalty" => p.frequency_penalty = float(key, v)?,
                "repetition_penalty" => p.repetition_penalty = float(key, v)?,
                "stop" => p.stop = strings(key, v, bounds)?,
                "stop_token_ids" => p.stop_token_ids = token_ids(key, v, bounds)?,
                "ignore_eos" => p.ignore_eos = boolean(key, v)?,
                "max_tokens" => p.max_tokens = optional(v, |v| uint(key, v))?,
                "min_tokens" => p.min_tokens = uint(key, v)?,
                "include_stop_str_in_output" => p.include_stop_str_in_output = boolean(key, v)?,
                "skip_special_tokens" => p.skip_special_tokens = boolean(key, v)?,
                "spaces_between_special_tokens" => {
                    p.spaces_between_special_tokens = boolean(key, v)?
                }
                _ => {
                    return Err(bad(format!(
                        "unknown sampling parameter {}; this server knows {}",
                        quote(&Value::String(key.clone())),
                        KNOWN_KEYS.join(", ")
                    )));
                }
            }
        }
        p.validate(bounds)
    }

    /// Checks every field against its range and the server's bounds, and
    /// returns the parameters with `top_k = -1` turned into 0 (both mean
    /// off).
    pub fn validate(mut self, bounds: &GenerationBounds) -> Result<SamplingParams> {
        if self.n != 1 {
            return Err(bad(format!(
                "n is {}, but this server generates one sequence per request; send n = 1 \
                 (or leave it out) and send several requests for several sequences",
                self.n
            )));
        }
        check(
            "temperature",
            self.temperature,
            self.temperature >= 0.0,
            "at least 0 (0 means greedy)",
        )?;
        check(
            "top_p",
            self.top_p,
            self.top_p > 0.0 && self.top_p <= 1.0,
            "in (0, 1] (1 turns it off)",
        )?;
        if self.top_k < -1 {
            return Err(bad(format!(
                "top_k is {}, but must be at least 1, or 0 or -1 to turn it off",
                self.top_k
            )));
        }
        self.top_k = self.top_k.max(0);
        check(
            "min_p",
            self.min_p,
            (0.0..=1.0).contains(&self.min_p),
            "in [0, 1] (0 turns it off)",
        )?;
        for (name, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            check(
                name,
                value,
                (-2.0..=2.0).contains(&value),
                "in [-2, 2] (0 turns it off)",
            )?;
        }
        check(
            "repetition_penalty",
            self.repetition_penalty,
            self.repetition_penalty > 0.0,
            "above 0 (1 turns it off)",
        )?;
        self.check_stops(bounds)?;
        let max_tokens = match self.max_tokens {
            Some(0) => {
                return Err(bad(
                    "max_tokens is 0, but must be at least 1; send at least 1, or null for as \
                     many as the server allows"
                        .to_string(),
                ));
            }
            Some(m) if m > bounds.max_tokens => {
                return Err(bad(format!(
                    "max_tokens is {m}, more than this server's limit of {} new tokens per \
                     request ({}); send at most {}, or null for as many as the server allows",
                    bounds.max_tokens,
                    flag(MAX_NEW_TOKENS),
                    bounds.max_tokens
                )));
            }
            Some(m) => m,
            None => bounds.max_tokens,
        };
        if self.min_tokens > max_tokens {
            return Err(bad(format!(
                "min_tokens is {}, more than max_tokens ({max_tokens}{}); send a min_tokens of \
                 at most max_tokens",
                self.min_tokens,
                if self.max_tokens.is_none() {
                    format!(", this server's {}", flag(MAX_NEW_TOKENS))
                } else {
                    String::new()
                }
            )));
        }
        Ok(self)
    }

    fn check_stops(&self, bounds: &GenerationBounds) -> Result<()> {
        if self.stop.len() > bounds.max_stop_strings {
            return Err(too_many_stop_strings(self.stop.len(), bounds));
        }
        for (i, s) in self.stop.iter().enumerate() {
            if s.is_empty() {
                return Err(bad(format!(
                    "stop[{i}] is the empty string, which would end every sequence at once; \
                     remove it"
                )));
            }
            if s.len() > bounds.max_stop_string_bytes {
                return Err(bad(format!(
                    "stop[{i}] is {} bytes, more than this server's limit of {} bytes per stop \
                     string ({}); send shorter stop strings",
                    s.len(),
                    bounds.max_stop_string_bytes,
                    flag(MAX_STOP_STRING_BYTES)
                )));
            }
        }
        if self.stop_token_ids.len() > bounds.max_stop_token_ids {
            return Err(too_many_stop_token_ids(self.stop_token_ids.len(), bounds));
        }
        Ok(())
    }

    /// Whether decoding is greedy (argmax): `temperature` below
    /// [`GREEDY_TEMPERATURE`].
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE
    }

    /// The most tokens this sequence may generate, for a prompt of
    /// `prompt_tokens` tokens and a model that holds `context_len` tokens:
    /// `max_tokens`, or, when it is `None`, as many as the model's context
    /// and `--max-new-tokens` allow. A prompt that leaves no room, a
    /// `max_tokens` beyond the room left, or a `min_tokens` that cannot fit
    /// is [`Error::BadInput`] (as vLLM answers).
    pub fn token_budget(
        &self,
        bounds: &GenerationBounds,
        prompt_tokens: usize,
        context_len: usize,
    ) -> Result<u32> {
        let room = context_len.saturating_sub(prompt_tokens);
        let context = || {
            format!(
                "this model's context holds {context_len} tokens and the prompt has \
                 {prompt_tokens}"
            )
        };
        if room == 0 {
            return Err(bad(format!(
                "{}, which leaves no room to generate; shorten the prompt",
                context()
            )));
        }
        let room = u32::try_from(room).unwrap_or(u32::MAX);
        let budget = match self.max_tokens {
            Some(m) if m > room => {
                return Err(bad(format!(
                    "max_tokens is {m}, but {}, which leaves room for {room}; send a max_tokens \
                     of at most {room} or shorten the prompt",
                    context()
                )));
            }
            Some(m) => m,
            None => room.min(bounds.max_tokens),
        };
        if self.min_tokens > budget {
            return Err(bad(format!(
                "min_tokens is {}, but {}, which leaves room for {budget}; send a min_tokens of \
                 at most {budget} or shorten the prompt",
                self.min_tokens,
                context()
            )));
        }
        Ok(budget)
    }
}

fn bad(message: String) -> Error {
    Error::BadInput(message)
}

fn too_many_stop_strings(count: usize, bounds: &GenerationBounds) -> Error {
    bad(format!(
        "stop has {count} strings, more than this server's limit of {} ({}); send at most {}",
        bounds.max_stop_strings,
        flag(MAX_STOP_STRINGS),
        bounds.max_stop_strings
    ))
}

fn too_many_stop_token_ids(count: usize, bounds: &GenerationBounds) -> Error {
    bad(format!(
        "stop_token_ids has {count} ids, more than this server's limit of {} ({}); send at \
         most {}",
        bounds.max_stop_token_ids,
        flag(MAX_STOP_TOKEN_IDS),
        bounds.max_stop_token_ids
    ))
}

/// Checks a float field: finite, and `ok`.
fn check(name: &str, value: f32, ok: bool, allowed: &str) -> Result<()> {
    if value.is_finite() && ok {
        return Ok(());
    }
    Err(bad(format!(
        "{name} is {value}, but must be {allowed}; send a {name} in that range"
    )))
}

/// A client's value as JSON, cut to [`QUOTE_CHARS`] characters.
fn quote(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

fn wrong_type(key: &str, v: &Value, expected: &str) -> Error {
    bad(format!(
        "{key} is {}, not {expected}; send {expected} (a JSON value or a string holding one)",
        quote(v)
    ))
}

/// A scalar as a number: a JSON number, or a string holding one.
fn number(key: &str, v: &Value, expected: &str) -> Result<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    n.ok_or_else(|| wrong_type(key, v, expected))
}

/// A float field: a finite number that fits an `f32`.
fn float(key: &str, v: &Value) -> Result<f32> {
    let x = number(key, v, "a number")?;
    if !x.is_finite() || x.abs() > f64::from(f32::MAX) {
        return Err(bad(format!(
            "{key} is {}, not a finite number (or too large for 32 bits); send a finite number",
            quote(v)
        )));
    }
    // In range: the cast rounds to the nearest f32.
    Ok(x as f32)
}

/// An integer field of type `T`: a whole number (`32`, `32.0`, `"32"`)
/// that fits `T`.
fn integer<T: TryFrom<i128>>(key: &str, v: &Value, expected: &str) -> Result<T> {
    let whole = match v {
        Value::Number(n) => n
            .as_u64()
            .map(i128::from)
            .or_else(|| n.as_i64().map(i128::from))
            .or_else(|| n.as_f64().and_then(whole_f64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i128>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(whole_f64))
        }
        _ => None,
    };
    whole
        .and_then(|w| T::try_from(w).ok())
        .ok_or_else(|| wrong_type(key, v, expected))
}

/// `x` as an integer, when it is a whole number of modest size.
fn whole_f64(x: f64) -> Option<i128> {
    // Within ±2^63 every whole f64 converts exactly.
    (x.fract() == 0.0 && x.abs() < 9.2e18).then_some(x as i128)
}

fn uint<T: TryFrom<i128>>(key: &str, v: &Value) -> Result<T> {
    integer(key, v, "a whole number of at least 0")
}

fn int(key: &str, v: &Value) -> Result<i32> {
    integer(key, v, "a whole number")
}

fn boolean(key: &str, v: &Value) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(wrong_type(key, v, "true or false")),
    }
}

fn optional<T>(v: &Value, parse: impl FnOnce(&Value) -> Result<T>) -> Result<Option<T>> {
    match v {
        Value::Null => Ok(None),
        v => parse(v).map(Some),
    }
}

/// `stop`: one string, or a list of them (at most the bound, checked
/// before the strings are copied).
fn strings(key: &str, v: &Value, bounds: &GenerationBounds) -> Result<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => {
            if items.len() > bounds.max_stop_strings {
                return Err(too_many_stop_strings(items.len(), bounds));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(wrong_type(&format!("{key}[{i}]"), item, "a string")),
                })
                .collect()
        }
        _ => Err(wrong_type(key, v, "a string or a list of strings")),
    }
}

/// `stop_token_ids`: a list of token ids (one id is accepted too).
fn token_ids(key: &str, v: &Value, bounds: &GenerationBounds) -> Result<Vec<u32>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => {
            if items.len() > bounds.max_stop_token_ids {
                return Err(too_many_stop_token_ids(items.len(), bounds));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| uint(&format!("{key}[{i}]"), item))
                .collect()
        }
        v => Ok(vec![uint(key, v)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<SamplingParams> {
        SamplingParams::from_json(json, &GenerationBounds::default())
    }

    fn err(json: &str) -> String {
        match parse(json) {
            Err(Error::BadInput(m)) => m,
            other => panic!("{json}: expected BadInput, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_vllms() {
        let p = parse("{}").unwrap();
        assert_eq!(p, SamplingParams::default());
        assert_eq!(p.max_tokens, Some(16));
        assert!(!p.is_greedy());
        GenerationBounds::default().validate().unwrap();
        assert!(matches!(
            GenerationBounds {
                max_tokens: 0,
                ..Default::default()
            }
            .validate(),
            Err(Error::BadConfig(_))
        ));
    }

    #[test]
    fn numbers_and_booleans_may_come_as_strings() {
        let p = parse(
            r#"{"temperature": "0.7", "max_tokens": "32", "top_k": "-1", "top_p": 0.9,
                "seed": "42", "ignore_eos": "True", "skip_special_tokens": false,
                "min_tokens": 2.0, "stop": "\n", "stop_token_ids": ["7", 8],
                "repetition_penalty": "1.1", "n": "1", "min_p": 0,
                "presence_penalty": -2, "frequency_penalty": "2",
                "include_stop_str_in_output": "false",
                "spaces_between_special_tokens": true}"#,
        )
        .unwrap();
        assert_eq!(p.temperature, 0.7);
        assert_eq!(p.max_tokens, Some(32));
        assert_eq!(p.top_k, 0);
        assert_eq!(p.top_p, 0.9);
        assert_eq!(p.seed, Some(42));
        assert!(p.ignore_eos && !p.skip_special_tokens && !p.include_stop_str_in_output);
        assert_eq!(p.min_tokens, 2);
        assert_eq!(p.stop, vec!["\n".to_string()]);
        assert_eq!(p.stop_token_ids, vec![7, 8]);
        assert_eq!(p.repetition_penalty, 1.1);
        assert_eq!((p.presence_penalty, p.frequency_penalty), (-2.0, 2.0));
        assert!(parse(r#"{"temperature": 0}"#).unwrap().is_greedy());
        assert_eq!(parse(r#"{"max_tokens": null}"#).unwrap().max_tokens, None);
        assert_eq!(parse(r#"{"seed": null}"#).unwrap().seed, None);
    }

    #[test]
    fn errors_name_the_field_the_value_and_the_range() {
        for (json, needles) in [
            (r#"{"n": 2}"#, &["n is 2", "n = 1"][..]),
            (
                r#"{"temperature": -0.5}"#,
                &["temperature is -0.5", "at least 0"],
            ),
            (
                r#"{"temperature": "hot"}"#,
                &["temperature is \"hot\"", "a number"],
            ),
            (r#"{"temperature": "NaN"}"#, &["temperature", "finite"]),
            (r#"{"temperature": 1e300}"#, &["temperature", "finite"]),
            (r#"{"top_p": 0}"#, &["top_p is 0", "(0, 1]"]),
            (r#"{"top_p": 1.5}"#, &["top_p is 1.5"]),
            (r#"{"top_k": -2}"#, &["top_k is -2", "at least 1"]),
            (r#"{"top_k": 1.5}"#, &["top_k is 1.5", "whole number"]),
            (r#"{"min_p": 2}"#, &["min_p is 2", "[0, 1]"]),
            (
                r#"{"presence_penalty": 3}"#,
                &["presence_penalty is 3", "[-2, 2]"],
            ),
            (
                r#"{"frequency_penalty": "-2.5"}"#,
                &["frequency_penalty is -2.5"],
            ),
            (
                r#"{"repetition_penalty": 0}"#,
                &["repetition_penalty is 0", "above 0"],
            ),
            (r#"{"seed": -1}"#, &["seed is -1", "at least 0"]),
            (r#"{"max_tokens": 0}"#, &["max_tokens is 0"]),
            (
                r#"{"max_tokens": 5000}"#,
                &["max_tokens is 5000", "4096", "--max-new-tokens"],
            ),
            (
                r#"{"max_tokens": 99999999999}"#,
                &["max_tokens is 99999999999"],
            ),
            (
                r#"{"min_tokens": 20}"#,
                &["min_tokens is 20", "max_tokens (16)"],
            ),
            (
                r#"{"ignore_eos": "yes"}"#,
                &["ignore_eos is \"yes\"", "true or false"],
            ),
            (r#"{"ignore_eos": 1}"#, &["ignore_eos is 1"]),
            (r#"{"stop": 3}"#, &["stop is 3", "a list of strings"]),
            (r#"{"stop": ["a", 3]}"#, &["stop[1] is 3"]),
            (r#"{"stop": [""]}"#, &["stop[0] is the empty string"]),
            (
                r#"{"stop_token_ids": [1, -1]}"#,
                &["stop_token_ids[1] is -1"],
            ),
            (
                r#"{"best_of": 2}"#,
                &["unknown sampling parameter \"best_of\"", "top_k"],
            ),
            ("[1]", &["not a JSON object"]),
            ("", &["not a JSON object"]),
        ] {
            let m = err(json);
            for needle in needles {
                assert!(m.contains(needle), "{json}: {m:?} lacks {needle:?}");
            }
        }
    }

    #[test]
    fn bounds_name_their_flags() {
        let many = format!(r#"{{"stop": {:?}}}"#, vec!["x"; 17]);
        let m = err(&many);
        assert!(
            m.contains("17 strings") && m.contains("--max-stop-strings"),
            "{m}"
        );
        let long = format!(r#"{{"stop": ["ok", "{}"]}}"#, "y".repeat(257));
        let m = err(&long);
        assert!(m.contains("stop[1] is 257 bytes") && m.contains("--max-stop-string-bytes"));
        let ids = format!(r#"{{"stop_token_ids": {:?}}}"#, vec![1; 65]);
        let m = err(&ids);
        assert!(
            m.contains("65 ids") && m.contains("--max-stop-token-ids"),
            "{m}"
        );
        // At the limits, accepted.
        let at = format!(
            r#"{{"stop": {:?}, "stop_token_ids": {:?}, "max_tokens": 4096}}"#,
            vec!["z".repeat(256); 16],
            vec![1; 64]
        );
        parse(&at).unwrap();
        // A long unknown key is quoted back cut short.
        let m = err(&format!(r#"{{"{}": 1}}"#, "k".repeat(1000)));
        assert!(m.len() < 600, "{m}");
    }

    #[test]
    fn built_field_by_field_then_validated() {
        let p = SamplingParams {
            top_k: -1,
            max_tokens: None,
            min_tokens: 4096,
            ..Default::default()
        }
        .validate(&GenerationBounds::default())
        .unwrap();
        assert_eq!(p.top_k, 0);
        let e = SamplingParams {
            max_tokens: None,
            min_tokens: 4097,
            ..Default::default()
        }
        .validate(&GenerationBounds::default())
        .unwrap_err()
        .to_string();
        assert!(e.contains("--max-new-tokens"), "{e}");
        let e = SamplingParams {
            temperature: f32::INFINITY,
            ..Default::default()
        }
        .validate(&GenerationBounds::default())
        .unwrap_err()
        .to_string();
        assert!(e.contains("temperature is inf"), "{e}");
    }

    #[test]
    fn the_budget_fits_the_context() {
        let b = GenerationBounds::default();
        let p = SamplingParams::default();
        assert_eq!(p.token_budget(&b, 10, 100).unwrap(), 16);
        let e = p.token_budget(&b, 90, 100).unwrap_err().to_string();
        assert!(
            e.contains("max_tokens is 16") && e.contains("room for 10"),
            "{e}"
        );
        let e = p.token_budget(&b, 100, 100).unwrap_err().to_string();
        assert!(e.contains("no room"), "{e}");
        let open = SamplingParams {
            max_tokens: None,
            min_tokens: 5,
            ..Default::default()
        };
        assert_eq!(open.token_budget(&b, 90, 100).unwrap(), 10);
        assert_eq!(open.token_budget(&b, 10, 100_000).unwrap(), 4096);
        let e = open.token_budget(&b, 97, 100).unwrap_err().to_string();
        assert!(
            e.contains("min_tokens is 5") && e.contains("room for 3"),
            "{e}"
        );
    }
}
