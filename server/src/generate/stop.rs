//! When a sequence ends, and which of its text may be sent so far.
//!
//! A [`StopChecker`] belongs to one sequence. After each generated token the
//! caller hands it the token and the token's new text (from
//! [`super::detok::IncrementalDecoder`]); it answers with a [`Step`]: the
//! text that may be sent now and, when the sequence is over, why
//! ([`FinishReason`]). As vLLM decides:
//!
//! - an end-of-sequence token (unless `ignore_eos`) or one of
//!   `stop_token_ids` ends it ([`FinishReason::Stop`]); that token's text is
//!   not sent;
//! - a stop string in the output ends it ([`FinishReason::Stop`]); the text
//!   is sent up to the stop string (through it with
//!   `include_stop_str_in_output`). Text that may yet turn out to be the
//!   start of a stop string is held back until it cannot;
//! - the `max_tokens`-th token ends it ([`FinishReason::Length`]), unless
//!   one of the above ends it at the same token;
//! - before `min_tokens` tokens nothing but the length ends it, and a stop
//!   string counts only when it ends in the text of a token from the
//!   `min_tokens`-th on.
//!
//! When several stop strings appear at once, the one that ends first wins
//! (the longest of those ending at the same place), so the outcome does not
//! depend on how the text is split into tokens. Everything held back is
//! sent when the sequence ends for another reason, and nothing after it
//! ends.

use super::params::SamplingParams;

/// Why a sequence ended, as OpenAI's API and Triton's vLLM backend name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// An end-of-sequence token, a stop token or a stop string.
    Stop,
    /// `max_tokens`, or the model's context, reached.
    Length,
    /// The request was cancelled (the client left, or the server is
    /// shutting down).
    Abort,
}

impl FinishReason {
    /// `"stop"`, `"length"` or `"abort"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// What one token adds: the text to send now (possibly empty) and, on the
/// last token, why the sequence ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Text to send now.
    pub text: String,
    /// `Some` when the sequence is over; later steps send nothing.
    pub finish: Option<FinishReason>,
}

/// One sequence's stop conditions and the text it has generated.
#[derive(Clone, Debug)]
pub struct StopChecker {
    stop: Vec<String>,
    /// The caller's end-of-sequence tokens (unless `ignore_eos`) and
    /// `stop_token_ids`.
    stop_token_ids: Vec<u32>,
    min_tokens: u32,
    max_tokens: u32,
    include_stop_str: bool,
    /// The output's text so far.
    text: String,
    /// Bytes of `text` already sent.
    sent: usize,
    tokens: u32,
    finish: Option<FinishReason>,
}

impl StopChecker {
    /// A checker for `params` (validated) on a model whose end-of-sequence
    /// tokens are `eos_token_ids`, ending the sequence at `max_tokens`
    /// tokens (from [`SamplingParams::token_budget`]).
    pub fn new(params: &SamplingParams, eos_token_ids: &[u32], max_tokens: u32) -> StopChecker {
        let mut stop_token_ids = params.stop_token_ids.clone();
        if !params.ignore_eos {
            stop_token_ids.extend_from_slice(eos_token_ids);
        }
        StopChecker {
            // Validated parameters have no empty stop string; one would
            // match everywhere.
            stop: params
                .stop
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            stop_token_ids,
            min_tokens: params.min_tokens,
            max_tokens,
            include_stop_str: params.include_stop_str_in_output,
            text: String::new(),
            sent: 0,
            tokens: 0,
            finish: None,
        }
    }

    /// Why the sequence ended, once it has.
    pub fn finish(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Takes the next generated token and its new text.
    pub fn push(&mut self, token: u32, text: &str) -> Step {
        if let Some(finish) = self.finish {
            return Step {
                text: String::new(),
                finish: Some(finish),
            };
        }
        self.tokens = self.tokens.saturating_add(1);
        let may_stop = self.tokens >= self.min_tokens;
        if may_stop && self.stop_token_ids.contains(&token) {
            // The token's text is dropped; what was held back is sent.
            return self.end(FinishReason::Stop, self.text.len());
        }
        let before = self.text.len();
        self.text.push_str(text);
        if may_stop && let Some((start, end)) = self.first_stop_string(before) {
            let cut = if self.include_stop_str { end } else { start };
            return self.end(FinishReason::Stop, cut);
        }
        if self.tokens >= self.max_tokens {
            return self.end(FinishReason::Length, self.text.len());
        }
        let hold = self.held_back_from();
        // Text already sent is never taken back, even when it turns out to
        // start a stop string (impossible unless a stop string was found
        // before min_tokens).
        let upto = hold.max(self.sent);
        let step = Step {
            text: self.text[self.sent..upto].to_string(),
            finish: None,
        };
        self.sent = upto;
        step
    }

    /// Ends the sequence, sending the text up to byte `cut`.
    fn end(&mut self, finish: FinishReason, cut: usize) -> Step {
        self.finish = Some(finish);
        let text = self
            .text
            .get(self.sent..cut)
            .unwrap_or_default()
            .to_string();
        self.sent = cut.max(self.sent);
        Step {
            text,
            finish: Some(finish),
        }
    }

    /// The stop string occurrence (start, end) that ends first among those
    /// ending after byte `before` (the new text), the longest on a tie.
    fn first_stop_string(&self, before: usize) -> Option<(usize, usize)> {
        let mut first: Option<(usize, usize)> = None;
        for s in &self.stop {
            let mut from = before.saturating_sub(s.len() - 1);
            while !self.text.is_char_boundary(from) {
                from -= 1;
            }
            let found = self.text[from..]
                .match_indices(s.as_str())
                .map(|(i, _)| (from + i, from + i + s.len()))
                .find(|&(_, end)| end > before);
            if let Some((start, end)) = found {
                let better = first.is_none_or(|(fs, fe)| end < fe || (end == fe && start < fs));
                if better {
                    first = Some((start, end));
                }
            }
        }
        first
    }

    /// Where the text that may still start a stop string begins: the
    /// earliest suffix of the text that is a proper prefix of a stop string
    /// (the text's length when none is).
    fn held_back_from(&self) -> usize {
        let t = self.text.as_bytes();
        let mut hold = t.len();
        for s in &self.stop {
            let s = s.as_bytes();
            let earliest = t.len().saturating_sub(s.len() - 1);
            if let Some(p) = (earliest..hold).find(|&p| s.starts_with(&t[p..])) {
                hold = p;
            }
        }
        hold
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const EOS: u32 = 0;

    fn checker(stop: &[&str], include: bool, min_tokens: u32, max_tokens: u32) -> StopChecker {
        let params = SamplingParams {
            stop: stop.iter().map(|s| s.to_string()).collect(),
            stop_token_ids: vec![99],
            include_stop_str_in_output: include,
            min_tokens,
            ..Default::default()
        };
        StopChecker::new(&params, &[EOS], max_tokens)
    }

    /// Pushes texts as tokens 1, 2, …; the pieces sent and the finish.
    fn run(c: &mut StopChecker, texts: &[&str]) -> (Vec<String>, Option<FinishReason>) {
        let mut pieces = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let step = c.push(i as u32 + 1, t);
            pieces.push(step.text);
            if step.finish.is_some() {
                break;
            }
        }
        (pieces, c.finish())
    }

    #[test]
    fn reasons_read_as_the_apis_name_them() {
        assert_eq!(FinishReason::Stop.as_str(), "stop");
        assert_eq!(FinishReason::Length.as_str(), "length");
        assert_eq!(FinishReason::Abort.as_str(), "abort");
    }

    #[test]
    fn end_of_sequence_and_stop_tokens_hide_their_text() {
        let mut c = checker(&["xyz"], false, 0, 10);
        assert_eq!(c.push(5, "hi x").text, "hi ");
        let step = c.push(EOS, "</s>");
        // What was held back for a possible stop string is sent.
        assert_eq!(step.text, "x");
        assert_eq!(step.finish, Some(FinishReason::Stop));
        // Nothing after the end.
        assert_eq!(c.push(5, "more").text, "");
        let mut c = checker(&[], false, 0, 10);
        assert_eq!(c.push(99, "<stop>").text, "");
        assert_eq!(c.finish(), Some(FinishReason::Stop));
        // ignore_eos: the end-of-sequence token is text like any other.
        let p = SamplingParams {
            ignore_eos: true,
            ..Default::default()
        };
        let mut c = StopChecker::new(&p, &[EOS], 10);
        assert_eq!(
            c.push(EOS, "</s>"),
            Step {
                text: "</s>".into(),
                finish: None
            }
        );
    }

    #[test]
    fn stop_strings_cut_the_text() {
        let mut c = checker(&["\n\n"], false, 0, 10);
        let (pieces, finish) = run(&mut c, &["Hello", " world\n", "\nnext"]);
        assert_eq!(pieces, ["Hello", " world", ""]);
        assert_eq!(finish, Some(FinishReason::Stop));
        let mut c = checker(&["\n\n"], true, 0, 10);
        let (pieces, _) = run(&mut c, &["Hello", " world\n", "\nnext"]);
        assert_eq!(pieces.concat(), "Hello world\n\n");
        // Held back text that turns out not to be a stop string is sent.
        let mut c = checker(&["abc"], false, 0, 10);
        let (pieces, finish) = run(&mut c, &["xa", "b", "d", "e"]);
        assert_eq!(pieces, ["x", "", "abd", "e"]);
        assert_eq!(finish, None);
        // The stop string that ends first wins, whatever the list's order.
        let mut c = checker(&["abcdef", "bcd"], false, 0, 10);
        let (pieces, _) = run(&mut c, &["zabcdefg"]);
        assert_eq!(pieces, ["za"]);
    }

    #[test]
    fn length_ends_with_all_the_text() {
        let mut c = checker(&["abc"], false, 0, 2);
        let (pieces, finish) = run(&mut c, &["x", "ab", "c"]);
        assert_eq!(pieces, ["x", "ab"]);
        assert_eq!(finish, Some(FinishReason::Length));
        // A stop at the last token wins over the length.
        let mut c = checker(&["abc"], false, 0, 2);
        let (pieces, finish) = run(&mut c, &["ab", "cd"]);
        assert_eq!(
            (pieces.concat(), finish),
            ("".into(), Some(FinishReason::Stop))
        );
    }

    #[test]
    fn nothing_stops_before_min_tokens() {
        let mut c = checker(&["b"], false, 3, 10);
        assert_eq!(c.push(EOS, "a").text, "a");
        assert_eq!(c.push(99, "b").text, "b");
        // The third token may stop; "b" ended before it and does not count.
        assert_eq!(c.push(7, "c").finish, None);
        let step = c.push(8, "xbz");
        assert_eq!(
            (step.text.as_str(), step.finish),
            ("x", Some(FinishReason::Stop))
        );
        // A stop string that started before min_tokens and ends at it counts.
        let mut c = checker(&["abc"], false, 2, 10);
        assert_eq!(c.push(1, "ab").text, "");
        assert_eq!(c.push(2, "cd").finish, Some(FinishReason::Stop));
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let mut c = checker(&["é!", "ü"], false, 0, 10);
        let (pieces, finish) = run(&mut c, &["aé", "bé", "!"]);
        assert_eq!(pieces, ["a", "éb", ""]);
        assert_eq!(finish, Some(FinishReason::Stop));
    }

    /// The text cut at the first stop string: the occurrence that ends
    /// first, the longest of those ending there.
    fn expected(text: &str, stops: &[String], include: bool) -> (String, bool) {
        let mut best: Option<(usize, usize)> = None;
        for s in stops {
            for (i, _) in text.match_indices(s.as_str()) {
                let cand = (i, i + s.len());
                if best.is_none_or(|(bs, be)| cand.1 < be || (cand.1 == be && cand.0 < bs)) {
                    best = Some(cand);
                }
            }
        }
        match best {
            Some((s, e)) => (text[..if include { e } else { s }].to_string(), true),
            None => (text.to_string(), false),
        }
    }

    proptest! {
        #[test]
        fn sent_text_is_the_text_cut_at_the_first_stop_string(
            pieces in proptest::collection::vec("[abc ]{0,4}|é|ab", 1..12),
            stops in proptest::collection::vec("[abc ]{1,3}|é|cé", 0..3),
            include in any::<bool>(),
            by_length in any::<bool>(),
        ) {
            let params = SamplingParams {
                stop: stops.clone(),
                include_stop_str_in_output: include,
                ..Default::default()
            };
            // The sequence ends at its last piece, or at an end-of-sequence
            // token after it.
            let max_tokens = if by_length { pieces.len() as u32 } else { 1000 };
            let mut c = StopChecker::new(&params, &[EOS], max_tokens);
            let mut sent = String::new();
            let mut ended = None;
            for (i, p) in pieces.iter().enumerate() {
                let step = c.push(i as u32 + 1, p);
                prop_assert!(ended.is_none() || step.text.is_empty());
                sent.push_str(&step.text);
                ended = ended.or(step.finish);
            }
            let (want, stopped) = expected(&pieces.concat(), &stops, include);
            if !by_length {
                let step = c.push(EOS, "</s>");
                prop_assert!(ended.is_none() || step.text.is_empty());
                sent.push_str(&step.text);
                ended = ended.or(step.finish);
            }
            prop_assert_eq!(sent, want);
            let reason = if stopped || !by_length { FinishReason::Stop } else { FinishReason::Length };
            prop_assert_eq!(ended, Some(reason));
            prop_assert_eq!(c.push(1, "more").text, "");
        }

        #[test]
        fn any_text_and_min_tokens_only_ever_send_a_prefix(
            pieces in proptest::collection::vec(".{0,3}", 0..10),
            stops in proptest::collection::vec(".{1,3}", 0..3),
            tokens in proptest::collection::vec(0u32..4, 10),
            min_tokens in 0u32..6,
            include in any::<bool>(),
        ) {
            let params = SamplingParams {
                stop: stops,
                stop_token_ids: vec![1],
                include_stop_str_in_output: include,
                min_tokens,
                ..Default::default()
            };
            let mut c = StopChecker::new(&params, &[EOS], 8);
            let mut sent = String::new();
            for (p, &t) in pieces.iter().zip(&tokens) {
                sent.push_str(&c.push(t, p).text);
            }
            prop_assert!(pieces.concat().starts_with(&sent));
        }
    }
}
