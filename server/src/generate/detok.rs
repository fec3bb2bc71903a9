//! Turning a stream of generated tokens into a stream of text.
//!
//! Decoding token by token and concatenating is wrong twice over: a token
//! may hold part of a character (byte-level and byte-fallback vocabularies
//! split multi-byte UTF-8 characters across tokens), and a token's text may
//! depend on its neighbours (SentencePiece's leading `▁` becomes a space
//! except at the start, WordPiece's `##` joins a word). An
//! [`IncrementalDecoder`] keeps the method of Hugging Face TGI and vLLM: it
//! decodes a short window of the latest tokens twice, without and with the
//! new token, and sends what the new token added: `prefix_offset` marks the
//! window's start (the tokens before the ones last sent, kept as context),
//! `read_offset` the end of what was sent. While the decoded window ends in
//! U+FFFD (an incomplete character) nothing is sent and the window grows,
//! so the pieces together are the decoded output, each piece whole
//! characters.
//!
//! The tokenizer sits behind the [`Decode`] trait (implemented for
//! `tokenizers::Tokenizer`), so that tests can use a fake.

use std::sync::Arc;

use crate::{Error, Result};

/// How many of the prompt's last tokens an [`IncrementalDecoder`] starts
/// with as context (vLLM's `INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET`), so
/// that the first output token decodes as it reads after the prompt (with
/// its leading space, say).
pub const PROMPT_CONTEXT_TOKENS: usize = 5;

/// Token ids to text: what an [`IncrementalDecoder`] needs of a tokenizer.
pub trait Decode {
    /// The text of `ids`, leaving out the special tokens when
    /// `skip_special_tokens`.
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String>;
}

impl Decode for tokenizers::Tokenizer {
    /// The tokenizer's decoder; its failure is [`Error::BadModel`] (the ids
    /// come from the model, not the client).
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        (**self).decode(ids, skip_special_tokens).map_err(|e| {
            Error::BadModel(format!("the tokenizer cannot decode tokens {ids:?}: {e}"))
        })
    }
}

impl<T: Decode + ?Sized> Decode for &T {
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        (**self).decode(ids, skip_special_tokens)
    }
}

impl<T: Decode + ?Sized> Decode for Arc<T> {
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        (**self).decode(ids, skip_special_tokens)
    }
}

/// One sequence's detokenizer: [`push`](IncrementalDecoder::push) each
/// generated token, send what it returns.
#[derive(Clone, Debug)]
pub struct IncrementalDecoder<D> {
    decoder: D,
    skip_special_tokens: bool,
    /// The window: context tokens, then tokens not yet sent. Tokens before
    /// it are dropped once sent, so it stays short.
    ids: Vec<u32>,
    /// Where the tokens already sent but kept as context end, in `ids`.
    read_offset: usize,
    /// The text of `ids[..read_offset]`, once decoded.
    prefix_text: Option<String>,
}

impl<D: Decode> IncrementalDecoder<D> {
    /// A detokenizer for the output that follows `prompt` (of which it
    /// keeps the last [`PROMPT_CONTEXT_TOKENS`] as context).
    pub fn new(decoder: D, prompt: &[u32], skip_special_tokens: bool) -> Self {
        let context = &prompt[prompt.len().saturating_sub(PROMPT_CONTEXT_TOKENS)..];
        IncrementalDecoder {
            decoder,
            skip_special_tokens,
            ids: context.to_vec(),
            read_offset: context.len(),
            prefix_text: None,
        }
    }

    /// Takes the next generated token; returns the text it completes
    /// (often its own text; empty while a character is incomplete or the
    /// token has no text, such as a skipped special token).
    ///
    /// The trailing bytes of a character that the sequence never completes
    /// are never sent (as in vLLM).
    pub fn push(&mut self, token: u32) -> Result<String> {
        self.ids.push(token);
        let prefix = match self.prefix_text.take() {
            Some(prefix) => prefix,
            None => self
                .decoder
                .decode(&self.ids[..self.read_offset], self.skip_special_tokens)?,
        };
        let text = self.decoder.decode(&self.ids, self.skip_special_tokens)?;
        if text.len() <= prefix.len() || text.ends_with(char::REPLACEMENT_CHARACTER) {
            self.prefix_text = Some(prefix);
            return Ok(String::new());
        }
        let new = if text.starts_with(&prefix) {
            &text[prefix.len()..]
        } else {
            // The context decodes differently once followed by the new
            // tokens (a tokenizer whose decoding is not prefix-stable):
            // as TGI and vLLM do, send the text past the prefix's length,
            // here from the character boundary at or before it.
            let mut at = prefix.len();
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            &text[at..]
        };
        let new = new.to_string();
        // The tokens just sent become the context; those before are dropped.
        self.ids.drain(..self.read_offset);
        self.read_offset = self.ids.len();
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A byte-level vocabulary: ids below 256 are bytes; the others are
    /// multi-byte tokens, whole or partial characters; 300 and 301 are
    /// special; 666 fails to decode.
    struct Bytes;

    const SPECIAL_BOS: u32 = 300;
    const SPECIAL_EOS: u32 = 301;
    const FAILS: u32 = 666;

    fn token_bytes(id: u32) -> Vec<u8> {
        match id {
            0..=255 => vec![id as u8],
            256 => "é".into(),
            257 => " the".into(),
            258 => vec![0xF0, 0x9F], // the first half of 😀
            259 => vec![0x98, 0x80], // its second half
            260 => "日本".into(),
            SPECIAL_BOS => "<s>".into(),
            SPECIAL_EOS => "</s>".into(),
            _ => Vec::new(),
        }
    }

    impl Decode for Bytes {
        fn decode(&self, ids: &[u32], skip: bool) -> Result<String> {
            let mut bytes = Vec::new();
            for &id in ids {
                if id == FAILS {
                    return Err(Error::BadModel(format!("no token {id}")));
                }
                if !(skip && (id == SPECIAL_BOS || id == SPECIAL_EOS)) {
                    bytes.extend(token_bytes(id));
                }
            }
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
    }

    /// SentencePiece-like: `▁` is a space, and the text's first space is
    /// dropped.
    struct Pieces(&'static [&'static str]);

    impl Decode for Pieces {
        fn decode(&self, ids: &[u32], _: bool) -> Result<String> {
            let text: String = ids.iter().map(|&i| self.0[i as usize]).collect();
            let text = text.replace('▁', " ");
            Ok(text.strip_prefix(' ').unwrap_or(&text).to_string())
        }
    }

    /// WordPiece-like: tokens joined by spaces, `##` tokens joined to the
    /// word before (but not at the start).
    struct WordPiece(&'static [&'static str]);

    impl Decode for WordPiece {
        fn decode(&self, ids: &[u32], _: bool) -> Result<String> {
            let mut text = String::new();
            for (n, &i) in ids.iter().enumerate() {
                let t = self.0[i as usize];
                match t.strip_prefix("##") {
                    Some(rest) if n > 0 => text.push_str(rest),
                    _ if n > 0 => {
                        text.push(' ');
                        text.push_str(t);
                    }
                    _ => text.push_str(t),
                }
            }
            Ok(text)
        }
    }

    fn pieces<D: Decode>(d: &mut IncrementalDecoder<D>, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&t| d.push(t).unwrap()).collect()
    }

    #[test]
    fn split_characters_wait_for_their_last_byte() {
        let mut d = IncrementalDecoder::new(Bytes, &[], true);
        let smile = "😀".as_bytes().iter().map(|&b| u32::from(b));
        let ids: Vec<u32> = [u32::from(b'a')]
            .into_iter()
            .chain(smile)
            .chain([258, 259, 256, 257])
            .collect();
        assert_eq!(
            pieces(&mut d, &ids),
            ["a", "", "", "", "😀", "", "😀", "é", " the"]
        );
    }

    #[test]
    fn special_tokens_are_skipped_or_kept() {
        let ids = [SPECIAL_BOS, u32::from(b'h'), SPECIAL_EOS];
        let mut d = IncrementalDecoder::new(Bytes, &[], true);
        assert_eq!(pieces(&mut d, &ids), ["", "h", ""]);
        let mut d = IncrementalDecoder::new(Bytes, &[], false);
        assert_eq!(pieces(&mut d, &ids), ["<s>", "h", "</s>"]);
    }

    #[test]
    fn the_prompt_gives_context() {
        const VOCAB: &[&str] = &["▁Hello", "▁there", "!", "▁world"];
        let mut d = IncrementalDecoder::new(Pieces(VOCAB), &[0, 3, 0], true);
        assert_eq!(pieces(&mut d, &[1, 2]), [" there", "!"]);
        // Without a prompt the first space goes, as in decode(output).
        let mut d = IncrementalDecoder::new(Pieces(VOCAB), &[], true);
        let out = pieces(&mut d, &[1, 2, 3]);
        assert_eq!(out, ["there", "!", " world"]);
        assert_eq!(
            out.concat(),
            Pieces(VOCAB).decode(&[1, 2, 3], true).unwrap()
        );
    }

    #[test]
    fn word_pieces_join() {
        const VOCAB: &[&str] = &["hel", "##lo", "world", "##s", "!"];
        let ids = [0, 1, 2, 3, 4];
        let mut d = IncrementalDecoder::new(WordPiece(VOCAB), &[], true);
        let out = pieces(&mut d, &ids);
        assert_eq!(out, ["hel", "lo", " world", "s", " !"]);
        assert_eq!(out.concat(), WordPiece(VOCAB).decode(&ids, true).unwrap());
    }

    #[test]
    fn decoder_errors_pass_through() {
        let mut d = IncrementalDecoder::new(Bytes, &[], true);
        assert!(matches!(d.push(FAILS), Err(Error::BadModel(_))));
    }

    #[test]
    fn decodes_with_a_real_tokenizer() {
        use tokenizers::models::wordlevel::WordLevel;
        let vocab = [("<unk>", 0), ("hello", 1), ("world", 2), ("</s>", 3)]
            .into_iter()
            .map(|(t, i)| (t.to_string(), i))
            .collect();
        let model = WordLevel::builder()
            .vocab(vocab)
            .unk_token("<unk>".into())
            .build()
            .unwrap();
        let mut tokenizer = tokenizers::Tokenizer::new(model);
        tokenizer
            .add_special_tokens([tokenizers::AddedToken::from("</s>", true)])
            .unwrap();
        assert_eq!(
            Decode::decode(&tokenizer, &[1, 2, 3], true).unwrap(),
            "hello world"
        );
        assert_eq!(
            Decode::decode(&tokenizer, &[1, 3], false).unwrap(),
            "hello </s>"
        );
        let shared = Arc::new(tokenizer);
        let mut d = IncrementalDecoder::new(Arc::clone(&shared), &[1], true);
        assert_eq!(pieces(&mut d, &[2, 3]), [" world", ""]);
    }

    proptest! {
        #[test]
        fn the_pieces_make_the_decoded_text(
            ids in proptest::collection::vec(
                prop_oneof![0u32..256, 256u32..261, Just(SPECIAL_BOS), Just(SPECIAL_EOS)],
                0..40,
            ),
            text in ".{0,12}",
            skip in any::<bool>(),
        ) {
            // Valid text split into bytes, then anything (invalid UTF-8 too).
            let ids: Vec<u32> = text.bytes().map(u32::from).chain(ids).collect();
            let mut d = IncrementalDecoder::new(Bytes, &[], skip);
            let mut sent = String::new();
            for &t in &ids {
                let piece = d.push(t).unwrap();
                prop_assert!(!piece.ends_with(char::REPLACEMENT_CHARACTER));
                sent.push_str(&piece);
            }
            let full = Bytes.decode(&ids, skip).unwrap();
            if full.ends_with(char::REPLACEMENT_CHARACTER) {
                prop_assert!(full.starts_with(&sent), "{sent:?} vs {full:?}");
            } else {
                prop_assert_eq!(sent, full);
            }
        }
    }
}
