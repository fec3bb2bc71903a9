//! Picking each next token from the model's logits, as vLLM does.
//!
//! A [`Sampler`] belongs to one sequence: it is built from the request's
//! [`SamplingParams`] and the model's end-of-sequence tokens, and turns each
//! step's logits (one per vocabulary entry) into a token id. In vLLM's
//! order:
//!
//! 1. before `min_tokens` output tokens, the stop tokens (end-of-sequence
//!    unless `ignore_eos`, and `stop_token_ids`) cannot be drawn (vLLM's
//!    min-tokens logits processor);
//! 2. the repetition penalty, over the tokens of the prompt and the output:
//!    positive logits divided by it, negative ones multiplied;
//! 3. the frequency and presence penalties, over the output:
//!    `logit -= frequency_penalty * count + presence_penalty`;
//! 4. greedy (argmax, the lowest id on ties) when the temperature is below
//!    [`GREEDY_TEMPERATURE`](super::params::GREEDY_TEMPERATURE); otherwise
//!    the logits divided by the temperature, then top-k, top-p, min-p
//!    (vLLM's V0 order), and one draw from what is left.
//!
//! Steps 2 and 3 change the caller's logits in place. A NaN logit counts as
//! minus infinity; plus infinity as the largest finite `f32`. The cost of a
//! step is O(vocabulary + prompt + output): top-k is a partial selection,
//! and top-p a bisection by partial selections that sorts only the last few
//! candidates around its cut. The scratch space (8 bytes per vocabulary
//! entry, 4 more with penalties) lives only during a call, so a sequence
//! waiting for its next step holds none.
//!
//! The draws come from xoshiro256** (Blackman and Vigna), seeded through
//! SplitMix64 from the request's `seed`, or from the OS when it has none:
//! the same seed and the same logits give the same tokens.

use std::cmp::Ordering;

use super::params::SamplingParams;
use crate::{Error, Result};

/// Top-p sorts the candidates once its bisection has narrowed the cut down
/// to this many.
const TOP_P_SORTED: usize = 64;

/// One sequence's token picker.
#[derive(Clone, Debug)]
pub struct Sampler {
    greedy: bool,
    temperature: f64,
    /// 0: off.
    top_k: usize,
    top_p: f64,
    min_p: f64,
    repetition_penalty: f32,
    frequency_penalty: f32,
    presence_penalty: f32,
    min_tokens: usize,
    /// Masked before `min_tokens`.
    stop_token_ids: Vec<u32>,
    seed: u64,
    rng: Xoshiro256StarStar,
}

impl Sampler {
    /// A sampler for `params` (validated), drawing its seed from the OS when
    /// `params.seed` is `None`. `eos_token_ids` are the model's
    /// end-of-sequence tokens, kept from being drawn before `min_tokens`.
    /// Fails only when the OS has no randomness to give
    /// ([`Error::Unavailable`]).
    pub fn new(params: &SamplingParams, eos_token_ids: &[u32]) -> Result<Sampler> {
        let seed = match params.seed {
            Some(seed) => seed,
            None => getrandom::u64().map_err(|e| {
                Error::Unavailable(format!(
                    "the operating system's random number generator failed ({e}); retry, or \
                     send a seed"
                ))
            })?,
        };
        Ok(Sampler::with_seed(params, eos_token_ids, seed))
    }

    /// A sampler for `params` (validated) whose draws follow `seed`,
    /// whatever `params.seed` says.
    pub fn with_seed(params: &SamplingParams, eos_token_ids: &[u32], seed: u64) -> Sampler {
        let mut stop_token_ids = params.stop_token_ids.clone();
        if !params.ignore_eos {
            stop_token_ids.extend_from_slice(eos_token_ids);
        }
        Sampler {
            greedy: params.is_greedy(),
            temperature: f64::from(params.temperature),
            top_k: usize::try_from(params.top_k).unwrap_or(0),
            top_p: f64::from(params.top_p),
            min_p: f64::from(params.min_p),
            repetition_penalty: params.repetition_penalty,
            frequency_penalty: params.frequency_penalty,
            presence_penalty: params.presence_penalty,
            min_tokens: usize::try_from(params.min_tokens).unwrap_or(usize::MAX),
            stop_token_ids,
            seed,
            rng: Xoshiro256StarStar::new(seed),
        }
    }

    /// The seed of the draws (to report, or to replay a sequence).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The next token after `prompt` and `output` (the tokens generated so
    /// far), from `logits`, one per vocabulary entry. On return `logits`
    /// holds the penalized logits (steps 1 to 3 of the module's list).
    /// Token ids beyond the vocabulary in `prompt` or `output` are ignored;
    /// when no token has a logit above minus infinity (or `logits` is
    /// empty), the answer is 0.
    pub fn sample(&mut self, logits: &mut [f32], prompt: &[u32], output: &[u32]) -> u32 {
        if output.len() < self.min_tokens {
            for &t in &self.stop_token_ids {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        self.apply_penalties(logits, prompt, output);
        if self.greedy {
            return argmax(logits);
        }
        self.draw(logits)
    }

    fn apply_penalties(&self, logits: &mut [f32], prompt: &[u32], output: &[u32]) {
        let repetition = self.repetition_penalty != 1.0;
        let frequency = self.frequency_penalty != 0.0 || self.presence_penalty != 0.0;
        if !repetition && !frequency {
            return;
        }
        let vocab = logits.len();
        let in_vocab = |t: &u32| (*t as usize) < vocab;
        // Per vocabulary entry: seen (repetition), then counts (frequency).
        let mut marks = vec![0u32; vocab];
        if repetition {
            let r = self.repetition_penalty;
            for t in prompt.iter().chain(output).copied().filter(in_vocab) {
                let (mark, l) = (&mut marks[t as usize], &mut logits[t as usize]);
                if *mark == 0 {
                    *mark = 1;
                    *l = if *l > 0.0 { *l / r } else { *l * r };
                }
            }
            if frequency {
                marks.fill(0);
            }
        }
        if frequency {
            for t in output.iter().copied().filter(in_vocab) {
                marks[t as usize] += 1;
            }
            for t in output.iter().copied().filter(in_vocab) {
                let count = std::mem::take(&mut marks[t as usize]);
                if count > 0 {
                    // Counts of at most a sequence's length: exact enough in f32.
                    logits[t as usize] -=
                        self.frequency_penalty * count as f32 + self.presence_penalty;
                }
            }
        }
    }

    /// Temperature, top-k, top-p, min-p, then a draw.
    fn draw(&mut self, logits: &[f32]) -> u32 {
        // (token, logit, then unnormalized probability); NaN and minus
        // infinity are no candidates.
        let mut c: Vec<(u32, f32)> = (0u32..)
            .zip(logits)
            .filter(|&(_, &l)| l > f32::NEG_INFINITY)
            .map(|(t, &l)| (t, l.min(f32::MAX)))
            .collect();
        if self.top_k > 0 && self.top_k < c.len() {
            c.select_nth_unstable_by(self.top_k - 1, descending);
            c.truncate(self.top_k);
        }
        let Some(max) = c.iter().map(|&(_, l)| l).reduce(f32::max) else {
            return 0;
        };
        let mut total = 0.0;
        for (_, x) in c.iter_mut() {
            // In f64, where (x - max) / temperature cannot overflow; the
            // largest is exp(0) = 1, the others in [0, 1].
            let p = ((f64::from(*x) - f64::from(max)) / self.temperature).exp();
            *x = p as f32;
            total += f64::from(*x);
        }
        if self.top_p < 1.0 {
            let kept = top_p_prefix(&mut c, total, self.top_p);
            c.truncate(kept);
        }
        if self.min_p > 0.0 {
            // The most likely token (probability 1 here) is always kept.
            let cut = self.min_p;
            c.retain(|&(_, p)| f64::from(p) >= cut);
        }
        let total: f64 = c.iter().map(|&(_, p)| f64::from(p)).sum();
        let mut u = self.rng.next_f64() * total;
        for &(t, p) in &c {
            let p = f64::from(p);
            if u < p {
                return t;
            }
            u -= p;
        }
        // Rounding left `u` past the end: the last candidate.
        c.last().map_or(0, |&(t, _)| t)
    }
}

/// Largest first; ties by the lower id, so the order is total.
fn descending(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The lowest index of the largest logit (NaN below everything); 0 when
/// none is above minus infinity.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = (0, f32::NEG_INFINITY);
    for (t, &l) in (0u32..).zip(logits) {
        if l > best.1 {
            best = (t, l);
        }
    }
    best.0
}

/// Moves the candidates top-p keeps to the front and returns how many they
/// are: a candidate is kept when those larger than it hold less than
/// `top_p` of `total` (vLLM's rule, which always keeps the largest).
///
/// A bisection by partial selection, O(candidates): each round splits the
/// range where the cut must lie at its middle rank and keeps the half that
/// holds it; the last few are sorted.
fn top_p_prefix(c: &mut [(u32, f32)], total: f64, top_p: f64) -> usize {
    let target = top_p * total;
    // c[..lo] are the lo largest, holding `before` (< target unless the
    // cut is at lo); the cut is in lo..=hi and c[lo..hi] are the ranks
    // lo..hi.
    let (mut lo, mut hi, mut before) = (0, c.len(), 0.0);
    while hi - lo > TOP_P_SORTED {
        let mid = lo + (hi - lo) / 2;
        c[lo..hi].select_nth_unstable_by(mid - lo, descending);
        let above: f64 = c[lo..mid].iter().map(|&(_, p)| f64::from(p)).sum();
        if before + above >= target {
            // Those above rank `mid` hold enough: it is not kept.
            hi = mid;
        } else {
            lo = mid + 1;
            before += above + f64::from(c[mid].1);
        }
    }
    c[lo..hi].sort_unstable_by(descending);
    for (i, &(_, p)) in c[lo..hi].iter().enumerate() {
        if before >= target {
            return lo + i;
        }
        before += f64::from(p);
    }
    hi
}

/// xoshiro256** 1.0 (David Blackman and Sebastiano Vigna, 2018,
/// <https://prng.di.unimi.it/>): 256 bits of state, period 2^256 - 1, fast
/// and statistically strong; not for secrets, which sampling has none of.
#[derive(Clone, Debug)]
struct Xoshiro256StarStar {
    s: [u64; 4],
}

impl Xoshiro256StarStar {
    /// The state from a 64-bit seed through SplitMix64, as the authors
    /// advise (never all zeros).
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut splitmix64 = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Xoshiro256StarStar {
            s: [splitmix64(), splitmix64(), splitmix64(), splitmix64()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1): the top 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::params::GenerationBounds;

    fn params(p: SamplingParams) -> SamplingParams {
        p.validate(&GenerationBounds::default()).unwrap()
    }

    fn sampler(p: SamplingParams) -> Sampler {
        Sampler::with_seed(&params(p), &[], 7)
    }

    /// Token frequencies over `draws` draws from the same logits.
    fn frequencies(s: &mut Sampler, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            let t = s.sample(&mut logits.to_vec(), &[], &[]);
            counts[t as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    fn ln(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| p.ln() as f32).collect()
    }

    #[test]
    fn xoshiro_matches_the_reference() {
        // The reference implementation's first outputs from state {1, 2, 3, 4}.
        let mut r = Xoshiro256StarStar { s: [1, 2, 3, 4] };
        let out: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(out, [11520, 0, 1509978240, 1215971899390074240]);
        let mut r = Xoshiro256StarStar::new(0);
        for _ in 0..1000 {
            let u = r.next_f64();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn greedy_is_argmax_lowest_index_on_ties() {
        let mut s = sampler(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 3.0], &[], &[]), 1);
        assert_eq!(s.sample(&mut [f32::NAN, -1.0, f32::NAN], &[], &[]), 1);
        assert_eq!(s.sample(&mut [f32::NAN; 3], &[], &[]), 0);
        assert_eq!(s.sample(&mut [], &[], &[]), 0);
        assert_eq!(s.sample(&mut [1.0, f32::INFINITY], &[], &[]), 1);
    }

    #[test]
    fn top_k_1_is_greedy() {
        let mut greedy = sampler(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        let mut top1 = sampler(SamplingParams {
            top_k: 1,
            temperature: 1.5,
            ..Default::default()
        });
        let mut r = Xoshiro256StarStar::new(3);
        for _ in 0..200 {
            let logits: Vec<f32> = (0..1000)
                .map(|_| (r.next_f64() * 20.0 - 10.0) as f32)
                .collect();
            assert_eq!(
                top1.sample(&mut logits.clone(), &[], &[]),
                greedy.sample(&mut logits.clone(), &[], &[])
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let p = params(SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            seed: Some(1234),
            ..Default::default()
        });
        let run = |mut s: Sampler| -> Vec<u32> {
            let mut r = Xoshiro256StarStar::new(99);
            (0..100)
                .map(|_| {
                    let mut logits: Vec<f32> =
                        (0..5000).map(|_| (r.next_f64() * 8.0) as f32).collect();
                    s.sample(&mut logits, &[], &[])
                })
                .collect()
        };
        let a = run(Sampler::new(&p, &[]).unwrap());
        assert_eq!(a, run(Sampler::new(&p, &[]).unwrap()));
        assert_ne!(a, run(Sampler::with_seed(&p, &[], 1235)));
        // Without a seed, one is drawn: two samplers differ.
        let unseeded = SamplingParams { seed: None, ..p };
        let (x, y) = (
            Sampler::new(&unseeded, &[]).unwrap(),
            Sampler::new(&unseeded, &[]).unwrap(),
        );
        assert_ne!(x.seed(), y.seed());
    }

    #[test]
    fn draws_follow_the_softmax_at_the_temperature() {
        let logits = [1.0f32, 2.0, 0.0, 1.5];
        let t = 2.0;
        let e: Vec<f64> = logits.iter().map(|&l| (f64::from(l) / t).exp()).collect();
        let z: f64 = e.iter().sum();
        let mut s = sampler(SamplingParams {
            temperature: t as f32,
            ..Default::default()
        });
        let f = frequencies(&mut s, &logits, 40_000);
        for (i, p) in e.iter().map(|x| x / z).enumerate() {
            assert!((f[i] - p).abs() < 0.01, "token {i}: {} vs {p}", f[i]);
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_set_holding_p() {
        // 0.5 + 0.3 reach 0.75: tokens 2 and 3 are cut.
        let logits = ln(&[0.5, 0.3, 0.15, 0.05]);
        let mut s = sampler(SamplingParams {
            top_p: 0.75,
            ..Default::default()
        });
        let f = frequencies(&mut s, &logits, 20_000);
        assert_eq!((f[2], f[3]), (0.0, 0.0));
        assert!((f[0] - 0.625).abs() < 0.015, "{f:?}");
        // A p below the largest probability keeps it alone.
        let mut s = sampler(SamplingParams {
            top_p: 0.1,
            ..Default::default()
        });
        assert_eq!(frequencies(&mut s, &logits, 1000)[0], 1.0);
    }

    #[test]
    fn top_p_over_a_large_flat_vocabulary() {
        // 1000 equal tokens and p = 0.5: the 500 lowest ids (ties go to the
        // lower id) are kept, which takes several rounds of the prefix.
        let logits = vec![0.0f32; 1000];
        let mut s = sampler(SamplingParams {
            top_p: 0.5,
            ..Default::default()
        });
        let f = frequencies(&mut s, &logits, 20_000);
        assert!(f[500..].iter().all(|&x| x == 0.0));
        assert!(f[..500].iter().filter(|&&x| x > 0.0).count() > 490);
    }

    #[test]
    fn min_p_cuts_below_its_share_of_the_top() {
        // 0.2 × 0.5 = 0.1: token 3 (0.05) is cut, token 2 (0.15) is not.
        let logits = ln(&[0.5, 0.3, 0.15, 0.05]);
        let mut s = sampler(SamplingParams {
            min_p: 0.2,
            ..Default::default()
        });
        let f = frequencies(&mut s, &logits, 20_000);
        assert_eq!(f[3], 0.0);
        assert!((f[2] - 0.15 / 0.95).abs() < 0.015, "{f:?}");
    }

    #[test]
    fn top_k_keeps_the_k_largest() {
        let logits = ln(&[0.1, 0.4, 0.2, 0.3]);
        let mut s = sampler(SamplingParams {
            top_k: 2,
            ..Default::default()
        });
        let f = frequencies(&mut s, &logits, 20_000);
        assert_eq!((f[0], f[2]), (0.0, 0.0));
        assert!((f[1] - 4.0 / 7.0).abs() < 0.015, "{f:?}");
    }

    #[test]
    fn nan_and_infinite_logits_do_not_panic() {
        let mut s = sampler(SamplingParams {
            top_p: 0.9,
            top_k: 3,
            min_p: 0.1,
            ..Default::default()
        });
        for _ in 0..100 {
            assert_eq!(s.sample(&mut [f32::NAN, 1.0, f32::NAN], &[], &[]), 1);
            assert_eq!(s.sample(&mut [f32::NAN, f32::NEG_INFINITY], &[], &[]), 0);
            assert_eq!(s.sample(&mut [0.0, f32::INFINITY, 3.0], &[], &[]), 1);
            assert_eq!(s.sample(&mut [], &[5], &[6]), 0);
        }
    }

    #[test]
    fn penalties_follow_vllms_formulas() {
        let mut s = sampler(SamplingParams {
            temperature: 0.0,
            repetition_penalty: 2.0,
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            ..Default::default()
        });
        let mut logits = [2.0, -2.0, 0.5, 1.0, 3.0];
        // Token 0 in the prompt, 1 once and 2 twice in the output, 9 is
        // beyond the vocabulary.
        let t = s.sample(&mut logits, &[0, 0, 9], &[1, 2, 2, 9]);
        // 0: 2 / 2; 1: -2 × 2 - 0.5 - 0.25; 2: 0.5 / 2 - 2 × 0.5 - 0.25.
        assert_eq!(logits, [1.0, -4.75, -1.0, 1.0, 3.0]);
        assert_eq!(t, 4);
        // The marks are reset: the same call gives the same logits.
        let mut again = [2.0, -2.0, 0.5, 1.0, 3.0];
        s.sample(&mut again, &[0, 0, 9], &[1, 2, 2, 9]);
        assert_eq!(again, logits);
        // Greedy after penalties: 0 and 3 tie at 1.0 once 4 (1.5 / 2) is
        // penalized too, and the lower id wins.
        let mut logits = [2.0, -2.0, 0.5, 1.0, 1.5];
        assert_eq!(s.sample(&mut logits, &[0, 4], &[1, 2, 2]), 0);
    }

    #[test]
    fn stop_tokens_wait_for_min_tokens() {
        let p = params(SamplingParams {
            temperature: 0.0,
            min_tokens: 2,
            stop_token_ids: vec![1],
            ..Default::default()
        });
        let mut s = Sampler::with_seed(&p, &[2], 0);
        let logits = [0.0, 5.0, 6.0, 1.0];
        assert_eq!(s.sample(&mut logits.clone(), &[], &[3]), 3);
        assert_eq!(s.sample(&mut logits.clone(), &[], &[3, 3]), 2);
        // With ignore_eos, the end of sequence is an ordinary token.
        let p = SamplingParams {
            ignore_eos: true,
            ..p
        };
        let mut s = Sampler::with_seed(&p, &[2], 0);
        assert_eq!(s.sample(&mut logits.clone(), &[], &[]), 2);
    }

    proptest::proptest! {
        #[test]
        fn top_p_keeps_what_a_full_sort_keeps(
            probs in proptest::collection::vec(0u8..8, 1..400),
            top_p in 0.01f64..1.0,
        ) {
            // Whole numbers, so that sums are exact in any order.
            let mut c: Vec<(u32, f32)> = (0u32..).zip(probs.iter().map(|&p| f32::from(p))).collect();
            let total: f64 = c.iter().map(|&(_, p)| f64::from(p)).sum();
            proptest::prop_assume!(total > 0.0);
            let mut sorted = c.clone();
            sorted.sort_by(descending);
            let mut before = 0.0;
            let want = sorted.iter().take_while(|&&(_, p)| {
                let keep = before < top_p * total;
                before += f64::from(p);
                keep
            }).count();
            let kept = top_p_prefix(&mut c, total, top_p);
            let mut got: Vec<u32> = c[..kept].iter().map(|&(t, _)| t).collect();
            got.sort_unstable();
            let mut want: Vec<u32> = sorted[..want].iter().map(|&(t, _)| t).collect();
            want.sort_unstable();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
