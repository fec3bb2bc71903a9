//! Automatic prefix caching, as vLLM's `--enable-prefix-caching`: a new
//! sequence whose prompt begins as another's tokens did starts from a copy
//! of that sequence's cached keys and values instead of computing them
//! again (a shared system prompt, the earlier turns of a chat). The donor
//! is a running sequence or a finished one whose cache was kept while the
//! KV budget had room for it. Prefixes are shared in whole tiles of 16
//! positions ([`KvCache::shareable`], vLLM's block), and never the last
//! prompt token, whose logits the new sequence needs.
//!
//! On our CPU kernels a row's keys and values depend only on the tokens up
//! to it, bit for bit, so a sequence generates the same tokens with or
//! without a shared prefix; only its time to first token changes.
//!
//! That time is what another client could measure: whether someone sent
//! the same first tokens. A request's [`CacheSalt`] (vLLM's `cache_salt`)
//! keeps it apart: it shares only with requests that sent the same salt,
//! and requests without one only with each other.

use std::collections::VecDeque;

use crate::model::decoder::KvCache;
use crate::{Error, Result};

/// The longest `cache_salt` accepted, in bytes.
pub const MAX_CACHE_SALT_BYTES: usize = 256;

/// A request's `cache_salt`: prefix caching shares its prompt's keys and
/// values only with requests that sent the same salt (a tenant's, a
/// user's, a session's secret). Checked: non-empty, at most
/// [`MAX_CACHE_SALT_BYTES`], no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSalt(String);

impl CacheSalt {
    /// Checks a salt as a client sent it.
    pub fn parse(salt: String) -> Result<CacheSalt> {
        if salt.is_empty() {
            return Err(Error::BadInput(
                "cache_salt is empty; send a non-empty string, or leave it out".into(),
            ));
        }
        if salt.len() > MAX_CACHE_SALT_BYTES {
            return Err(Error::BadInput(format!(
                "cache_salt is {} bytes; at most {MAX_CACHE_SALT_BYTES} are accepted",
                salt.len()
            )));
        }
        if salt.chars().any(char::is_control) {
            return Err(Error::BadInput(
                "cache_salt holds a control character; send printable text".into(),
            ));
        }
        Ok(CacheSalt(salt))
    }
}

/// What a cache holding `cached` (for a request salted `theirs`) offers a
/// request salted `mine`: its tokens when the salts are the same (or both
/// absent), nothing otherwise.
pub fn offered<'a>(
    cached: &'a [u32],
    theirs: Option<&CacheSalt>,
    mine: Option<&CacheSalt>,
) -> &'a [u32] {
    if theirs == mine { cached } else { &[] }
}

/// Tokens of `prompt` a sequence can take from a cache holding `cached`
/// (the tokens whose keys and values it holds, in order): their common
/// beginning, without the prompt's last token, in whole tiles.
pub fn reusable(prompt: &[u32], cached: &[u32]) -> usize {
    let limit = prompt.len().saturating_sub(1).min(cached.len());
    let common = prompt[..limit]
        .iter()
        .zip(cached)
        .take_while(|(a, b)| a == b)
        .count();
    KvCache::shareable(common)
}

/// The best donor for `prompt` among `candidates` (each one's cached
/// tokens): its index and the tokens it gives, the first of the longest;
/// `None` when none gives a whole tile.
pub fn best<'a>(
    prompt: &[u32],
    candidates: impl IntoIterator<Item = &'a [u32]>,
) -> Option<(usize, usize)> {
    let mut found: Option<(usize, usize)> = None;
    for (i, cached) in candidates.into_iter().enumerate() {
        let tokens = reusable(prompt, cached);
        if tokens > found.map_or(0, |(_, t)| t) {
            found = Some((i, tokens));
        }
    }
    found
}

/// A finished sequence's cache, kept for later prompts.
pub struct Kept {
    /// The tokens its cache holds, in order.
    pub tokens: Vec<u32>,
    /// Its request's salt: it is offered only to requests with the same.
    pub salt: Option<CacheSalt>,
    /// The cache.
    pub cache: KvCache,
    /// Tokens of the KV budget it holds (its reservation).
    pub room: usize,
}

/// Finished sequences' caches, most recently used first, holding
/// [`Retained::room`] tokens of the KV budget until evicted (oldest use
/// first) to make room for a sequence that needs it.
#[derive(Default)]
pub struct Retained {
    kept: VecDeque<Kept>,
    room: usize,
}

impl Retained {
    /// Keeps a finished sequence's cache, as the most recently used.
    pub fn keep(&mut self, kept: Kept) {
        self.room += kept.room;
        self.kept.push_front(kept);
    }

    /// Tokens of the KV budget the kept caches hold.
    pub fn room(&self) -> usize {
        self.room
    }

    /// What each kept cache offers a request salted `salt`
    /// ([`offered`]), most recently used first (the index
    /// [`Retained::touch`] takes).
    pub fn offered<'a>(&'a self, salt: Option<&'a CacheSalt>) -> impl Iterator<Item = &'a [u32]> {
        self.kept
            .iter()
            .map(move |k| offered(&k.tokens, k.salt.as_ref(), salt))
    }

    /// Marks kept cache `i` as the most recently used.
    pub fn touch(&mut self, i: usize) {
        if let Some(kept) = self.kept.remove(i) {
            self.kept.push_front(kept);
        }
    }

    /// The most recently used kept cache.
    pub fn newest(&self) -> Option<&KvCache> {
        self.kept.front().map(|k| &k.cache)
    }

    /// Evicts the least recently used cache, but not the most recently
    /// used one if `spare_newest` (a donor being copied); returns the
    /// tokens of budget freed, 0 when there was nothing to evict.
    pub fn evict_oldest(&mut self, spare_newest: bool) -> usize {
        if self.kept.len() <= usize::from(spare_newest) {
            return 0;
        }
        let kept = self.kept.pop_back().expect("one is kept");
        self.room -= kept.room;
        kept.room
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decoder::config::DecoderConfig;

    fn tiny_config() -> DecoderConfig {
        DecoderConfig::from_hf_json(
            r#"{"architectures":["LlamaForCausalLM"],"vocab_size":256,"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,"rms_norm_eps":1e-6,"max_position_embeddings":512}"#,
        )
        .unwrap()
    }

    #[test]
    fn whole_tiles_of_the_common_beginning_never_the_last_prompt_token() {
        let prompt: Vec<u32> = (0..40).collect();
        assert_eq!(reusable(&prompt, &prompt), 32, "39 shareable, 2 tiles");
        assert_eq!(reusable(&prompt[..33], &prompt), 32);
        assert_eq!(
            reusable(&prompt[..32], &prompt),
            16,
            "the last token is computed"
        );
        assert_eq!(reusable(&prompt[..17], &prompt), 16);
        assert_eq!(reusable(&prompt[..16], &prompt), 0);
        assert_eq!(reusable(&prompt, &prompt[..20]), 16, "only what is cached");
        let mut other = prompt.clone();
        other[16] = 999;
        assert_eq!(reusable(&other, &prompt), 16, "parts at token 16");
        other[15] = 999;
        assert_eq!(reusable(&other, &prompt), 0);
        assert_eq!(reusable(&[], &prompt), 0);
        assert_eq!(reusable(&prompt, &[]), 0);
    }

    #[test]
    fn the_first_of_the_longest_donors_is_chosen() {
        let prompt: Vec<u32> = (0..64).collect();
        let short: Vec<u32> = (0..20).collect();
        let long: Vec<u32> = (0..50).collect();
        let other: Vec<u32> = (1..60).collect();
        let candidates = [&other[..], &short, &long, &long];
        assert_eq!(best(&prompt, candidates), Some((2, 48)));
        assert_eq!(best(&prompt, [&other[..]]), None);
        assert_eq!(best(&prompt, std::iter::empty()), None);
    }

    fn kept(tokens: u32, room: usize) -> Kept {
        Kept {
            tokens: vec![tokens; 4],
            salt: None,
            cache: KvCache::new(&tiny_config(), room),
            room,
        }
    }

    #[test]
    fn eviction_takes_the_least_recently_used_and_spares_the_donor() {
        let mut retained = Retained::default();
        for (t, room) in [(1, 16), (2, 32), (3, 48)] {
            retained.keep(kept(t, room));
        }
        assert_eq!(retained.room(), 96);
        let firsts = |r: &Retained| r.offered(None).map(|t| t[0]).collect::<Vec<_>>();
        assert_eq!(firsts(&retained), [3, 2, 1]);
        retained.touch(2);
        assert_eq!(firsts(&retained), [1, 3, 2]);
        assert!(retained.newest().is_some());
        assert_eq!(retained.evict_oldest(true), 32, "evicts 2");
        assert_eq!(retained.evict_oldest(true), 48, "evicts 3");
        assert_eq!(firsts(&retained), [1]);
        assert_eq!(
            retained.evict_oldest(true),
            0,
            "only the spared one is left"
        );
        assert_eq!(retained.room(), 16);
        assert_eq!(retained.evict_oldest(false), 16);
        assert_eq!(retained.room(), 0);
        assert_eq!(retained.evict_oldest(false), 0);
        assert!(retained.newest().is_none());
    }

    #[test]
    fn a_salted_cache_is_offered_only_to_the_same_salt() {
        let salt = |s: &str| CacheSalt::parse(s.into()).unwrap();
        let (a, b) = (salt("tenant-a"), salt("tenant-b"));
        let cached = [1, 2, 3];
        assert_eq!(offered(&cached, None, None), cached);
        assert_eq!(offered(&cached, Some(&a), Some(&a)), cached);
        assert!(offered(&cached, Some(&a), Some(&b)).is_empty());
        assert!(offered(&cached, Some(&a), None).is_empty());
        assert!(offered(&cached, None, Some(&a)).is_empty());
        let mut retained = Retained::default();
        retained.keep(Kept {
            salt: Some(a.clone()),
            ..kept(7, 16)
        });
        retained.keep(kept(8, 16));
        let firsts = |salt: Option<&CacheSalt>| {
            retained
                .offered(salt)
                .map(|t| t.first().copied())
                .collect::<Vec<_>>()
        };
        assert_eq!(firsts(None), [Some(8), None], "indexes stay in place");
        assert_eq!(firsts(Some(&a)), [None, Some(7)]);
        assert_eq!(firsts(Some(&b)), [None, None]);
    }

    #[test]
    fn a_cache_salt_is_checked() {
        assert!(CacheSalt::parse("user 42 / session ü".into()).is_ok());
        let long = "x".repeat(MAX_CACHE_SALT_BYTES);
        assert!(CacheSalt::parse(long.clone()).is_ok());
        for (bad, says) in [
            (String::new(), "empty"),
            (long + "x", "at most 256"),
            ("a\nb".into(), "control character"),
            ("\u{0}".into(), "control character"),
        ] {
            let e = CacheSalt::parse(bad.clone()).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
