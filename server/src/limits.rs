//! What one request may hold: at most `--max-client-batch-size` texts of at
//! most `--max-text-bytes` bytes each.
//!
//! The protocols check both while they decode (the count from the tensor's
//! shape, before its elements are looked at; each text's length before it
//! is copied or checked as UTF-8), and the inference core checks them again
//! before it tokenizes, so no protocol can forget them. A request beyond
//! either is [`Error::BadInput`] naming the limit and the flag that sets it.

use openmodel_contract::{flag, serve};

use crate::{Error, Result};

/// The default of `--max-client-batch-size`: text-embeddings-inference's.
pub const DEFAULT_MAX_TEXTS: usize = 32;

/// The default of `--max-text-bytes`: 512 tokens (the longest input of
/// BERT-family encoders) × 128 bytes per token, a generous bound (English
/// averages 4 to 5 bytes per WordPiece token, CJK 3 per character) that
/// still keeps the largest request at 32 × 64 KiB = 2 MiB of text.
pub const DEFAULT_MAX_TEXT_BYTES: usize = 512 * 128;

/// The bounds of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most texts in one request.
    pub max_texts: usize,
    /// Most bytes (UTF-8) in one text.
    pub max_text_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_texts: DEFAULT_MAX_TEXTS,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
        }
    }
}

impl RequestLimits {
    /// Checks the number of texts of a request.
    pub fn check_count(&self, texts: usize) -> Result<()> {
        if texts <= self.max_texts {
            return Ok(());
        }
        Err(Error::BadInput(format!(
            "the request has {texts} texts, more than this server's limit of {} texts per request ({}); \
             send at most {} texts per request",
            self.max_texts,
            flag(serve::MAX_CLIENT_BATCH_SIZE),
            self.max_texts
        )))
    }

    /// Checks the length of text `index` (its UTF-8 bytes).
    pub fn check_text(&self, index: usize, bytes: usize) -> Result<()> {
        if bytes <= self.max_text_bytes {
            return Ok(());
        }
        Err(Error::BadInput(format!(
            "text[{index}] is {bytes} bytes, more than this server's limit of {} bytes per text ({}); \
             shorten it before sending (the limit applies before tokenizing, so truncate=true does not lift it)",
            self.max_text_bytes,
            flag(serve::MAX_TEXT_BYTES)
        )))
    }

    /// Checks a whole request: its count, then each text.
    pub fn check_texts<T: AsRef<[u8]>>(&self, texts: &[T]) -> Result<()> {
        self.check_count(texts.len())?;
        texts
            .iter()
            .enumerate()
            .try_for_each(|(i, t)| self.check_text(i, t.as_ref().len()))
    }

    /// Checks that the limits can be met at all.
    pub fn validate(&self) -> Result<()> {
        if self.max_texts == 0 || self.max_text_bytes == 0 {
            return Err(Error::BadConfig(format!(
                "{} and {} must be at least 1",
                flag(serve::MAX_CLIENT_BATCH_SIZE),
                flag(serve::MAX_TEXT_BYTES)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: RequestLimits = RequestLimits {
        max_texts: 2,
        max_text_bytes: 4,
    };

    #[test]
    fn limits_are_inclusive_and_their_errors_name_the_flag() {
        L.check_texts(&["abcd", "ab"]).unwrap();
        let many = L.check_texts(&["a", "b", "c"]).unwrap_err().to_string();
        assert!(
            many.contains("3 texts")
                && many.contains("limit of 2 texts per request")
                && many.contains("--max-client-batch-size"),
            "{many}"
        );
        let long = L.check_texts(&["a", "abcde"]).unwrap_err().to_string();
        assert!(
            long.contains("text[1] is 5 bytes")
                && long.contains("limit of 4 bytes per text")
                && long.contains("--max-text-bytes"),
            "{long}"
        );
        // The count is checked first: a request of many long texts names it.
        let both = L.check_texts(&["abcde"; 3]).unwrap_err().to_string();
        assert!(both.contains("3 texts"), "{both}");
        assert!(matches!(
            RequestLimits { max_texts: 0, ..L }.validate(),
            Err(Error::BadConfig(_))
        ));
        RequestLimits::default().validate().unwrap();
    }
}
