//! A Hugging Face tokenizer built from a GGUF file's metadata, for GGUF
//! files that come without `tokenizer.json`: byte-level BPE
//! (`tokenizer.ggml.model = gpt2`) with the vocabulary, merges and token
//! types of the file, and the pre-tokenizer its `tokenizer.ggml.pre` names
//! (the regular expressions llama.cpp uses for each, which are those of
//! the model's own `tokenizer.json`).
//!
//! Control and user-defined tokens (types 3 and 4) become added tokens, so
//! `<|im_start|>` in a rendered chat template is one token, as in
//! transformers and llama.cpp.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::model::gguf::{Gguf, Value};
use crate::{Error, Result};

/// GGUF token type of control tokens (`<|im_start|>`, `</s>`).
const CONTROL: u64 = 3;
/// GGUF token type of user-defined tokens (matched whole, not special).
const USER_DEFINED: u64 = 4;

/// The Qwen2 family's split (also llama.cpp's `qwen2` pre-tokenizer).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split (llama.cpp's `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What the GGUF says about its tokenizer beyond the tokenizer itself.
pub struct GgufTokenizer {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The beginning-of-sequence token and whether prompts start with it.
    pub bos: Option<u32>,
    /// Whether to add [`GgufTokenizer::bos`] in front of prompts.
    pub add_bos: bool,
    /// The end-of-sequence token.
    pub eos: Option<u32>,
    /// The chat template, when the file has one.
    pub chat_template: Option<String>,
}

/// Builds the tokenizer of a GGUF file.
pub fn from_gguf(gguf: &Gguf) -> Result<GgufTokenizer> {
    let model = gguf.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::BadModel(format!(
            "GGUF tokenizer model {model:?}: only byte-level BPE (gpt2) is built from GGUF metadata; put the model's tokenizer.json beside the file"
        )));
    }
    let tokens = strings(
        gguf.array("tokenizer.ggml.tokens")?,
        "tokenizer.ggml.tokens",
    )?;
    let merges = strings(
        gguf.array("tokenizer.ggml.merges")?,
        "tokenizer.ggml.merges",
    )?;
    let types = match gguf.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(types)) => types
            .iter()
            .map(|t| match t {
                Value::Uint(v) => *v,
                Value::Int(v) => *v as u64,
                _ => 1,
            })
            .collect(),
        _ => vec![1; tokens.len()],
    };
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.to_string(), id as u32))
        .collect();
    let merges: Merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::BadModel(format!("GGUF merge {m:?} is not two tokens")))
        })
        .collect::<Result<_>>()?;
    let pre = gguf
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| match v {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("default");
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre == "llama-bpe")
        .build()
        .map_err(|e| Error::BadModel(format!("GGUF vocabulary: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| **t == CONTROL || **t == USER_DEFINED)
        .map(|(token, t)| AddedToken::from(token.to_string(), *t == CONTROL).normalized(false))
        .collect();
    tokenizer
        .add_special_tokens(added)
        .map_err(|e| Error::BadModel(format!("GGUF special tokens: {e}")))?;
    let id = |key: &str| gguf.uint(key).ok().map(|v| v as u32);
    let flag = |key: &str| matches!(gguf.metadata.get(key), Some(Value::Bool(true)));
    Ok(GgufTokenizer {
        tokenizer,
        bos: id("tokenizer.ggml.bos_token_id"),
        add_bos: flag("tokenizer.ggml.add_bos_token"),
        eos: id("tokenizer.ggml.eos_token_id"),
        chat_template: gguf
            .string("tokenizer.chat_template")
            .ok()
            .map(str::to_string),
    })
}

fn strings<'a>(values: &'a [Value], key: &str) -> Result<Vec<&'a str>> {
    values
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.as_str()),
            _ => Err(Error::BadModel(format!("GGUF {key} holds a non-string"))),
        })
        .collect()
}

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre = name`.
fn pre_tokenizer(name: &str) -> Result<PreTokenizerWrapper> {
    let byte_level =
        |regex: bool| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, regex));
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        Split::new(
            SplitPattern::Regex(pattern.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map(PreTokenizerWrapper::Split)
        .map_err(|e| Error::BadModel(format!("pre-tokenizer {name}: {e}")))
    };
    Ok(match name {
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        "smollm" | "starcoder" | "refact" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level(true),
        ])),
        "qwen2" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split(QWEN2_SPLIT)?,
            byte_level(false),
        ])),
        "llama-bpe" | "llama3" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split(LLAMA3_SPLIT)?,
            byte_level(false),
        ])),
        other => {
            return Err(Error::BadModel(format!(
                "GGUF pre-tokenizer {other:?} is not known here (known: default, gpt2, smollm, starcoder, refact, qwen2, llama-bpe); put the model's tokenizer.json beside the file"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf::tests::write;

    fn gguf(pre: &str) -> Gguf {
        let s = |v: &str| Value::String(v.into());
        let tokens = [
            "<|endoftext|>",
            "<|im_start|>",
            "a",
            "b",
            "ab",
            "Ġ",
            "Ġab",
            "1",
            "2",
        ];
        let bytes = write(
            &[
                ("tokenizer.ggml.model", s("gpt2")),
                ("tokenizer.ggml.pre", s(pre)),
                (
                    "tokenizer.ggml.tokens",
                    Value::Array(tokens.iter().map(|t| s(t)).collect()),
                ),
                (
                    "tokenizer.ggml.token_type",
                    Value::Array([3, 3, 1, 1, 1, 1, 1, 1, 1].map(Value::Uint).to_vec()),
                ),
                (
                    "tokenizer.ggml.merges",
                    Value::Array(vec![s("a b"), s("Ġ ab")]),
                ),
                ("tokenizer.ggml.eos_token_id", Value::Uint(0)),
            ],
            &[],
        );
        Gguf::read(&bytes[..], bytes.len() as u64).unwrap()
    }

    #[test]
    fn byte_level_bpe_with_control_tokens_and_single_digits() {
        let t = from_gguf(&gguf("smollm")).unwrap();
        let ids = t.tokenizer.encode("<|im_start|>ab ab12", false).unwrap();
        assert_eq!(ids.get_ids(), &[1, 4, 6, 7, 8]);
        assert_eq!(t.eos, Some(0));
        assert!(!t.add_bos);
        let text = t.tokenizer.decode(&[4, 6], true).unwrap();
        assert_eq!(text, "ab ab");
        let with_special = t.tokenizer.decode(&[1, 4], false).unwrap();
        assert_eq!(with_special, "<|im_start|>ab");
    }

    #[test]
    fn unknown_pre_tokenizers_and_models_are_refused_with_the_way_out() {
        let e = from_gguf(&gguf("klingon")).err().unwrap().to_string();
        assert!(e.contains("klingon") && e.contains("tokenizer.json"), "{e}");
        for known in ["default", "qwen2", "llama-bpe"] {
            assert!(from_gguf(&gguf(known)).is_ok(), "{known}");
        }
    }
}
