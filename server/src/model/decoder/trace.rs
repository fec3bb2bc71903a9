//! A greedy run of a decoder with every step's logits: what
//! `openmodel-server logits` prints, so that a device (a GPU, candle's CPU
//! kernels) can be checked against a reference implementation offline.

use serde::Serialize;

use super::{Decoder, KvCache, Logits, Step};
use crate::{Error, Result};

/// The logits after the prompt and after each greedy token.
#[derive(Clone, Debug, Serialize)]
pub struct GreedyTrace {
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// The greedy tokens, one per step.
    pub tokens: Vec<u32>,
    /// `steps + 1` rows of `vocab` logits: after the prompt, then after
    /// each greedy token.
    pub logits: Vec<Vec<f32>>,
}

/// Runs `prompt` through `decoder`, then `steps` greedy steps (the largest
/// logit; the lowest id on a tie).
pub fn greedy_trace(decoder: &Decoder, prompt: &[u32], steps: usize) -> Result<GreedyTrace> {
    if prompt.is_empty() {
        return Err(Error::BadInput("the prompt has no tokens".into()));
    }
    let mut cache = KvCache::new(decoder.config(), prompt.len() + steps);
    let mut trace = GreedyTrace {
        prompt: prompt.to_vec(),
        tokens: Vec::with_capacity(steps),
        logits: Vec::with_capacity(steps + 1),
    };
    let mut input = prompt.to_vec();
    for step in 0..=steps {
        let logits = decoder
            .forward(&mut [Step {
                tokens: &input,
                cache: &mut cache,
                logits: Logits::Last,
            }])?
            .remove(0);
        if step < steps {
            let next = argmax(&logits);
            trace.tokens.push(next);
            input = vec![next];
        }
        trace.logits.push(logits);
    }
    Ok(trace)
}

/// The index of the largest value (the first of equals): the greedy
/// choice.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        assert_eq!(argmax(&[0.5, 2.0, -1.0, 2.0]), 1);
        assert_eq!(argmax(&[3.0]), 0);
    }
}
