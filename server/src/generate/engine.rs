//! The generation engine: continuous batching on one thread.
//!
//! Requests wait in a bounded queue. Between two forward passes the engine
//! takes in new requests, drops those whose client went away, and admits
//! waiting ones while the KV budget and the sequence limit allow (each
//! reserves room for its prompt and its `max_tokens` at admission, so a
//! running sequence never runs out of memory). A pass advances every
//! running sequence by one token and spends what is left of its token
//! budget on prompt chunks of sequences still prefilling, oldest first, so
//! a long prompt never stalls the decodes. Each sequence samples with its
//! own sampler, detokenizes incrementally and checks its stop conditions;
//! what it may show goes to its client as soon as it exists.
//!
//! With prefix caching ([`super::prefix`]), a sequence admitted with a
//! prompt that begins as a running or recently finished sequence's did
//! starts from a copy of those keys and values; finished sequences' caches
//! stay in the KV budget's free room until a new sequence needs it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use tokenizers::Tokenizer;
use tokio::sync::mpsc;

use super::detok::IncrementalDecoder;
use super::params::SamplingParams;
use super::prefix::{self, CacheSalt, Kept, Retained};
use super::sampler::Sampler;
use super::stop::{FinishReason, StopChecker};
use super::{Model, Usage};
use crate::metrics::Metrics;
use crate::model::decoder::{KvCache, Logits, PassLogits, Step};
use crate::{Error, Result};

/// How much the engine takes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineLimits {
    /// Sequences running at once (`--max-num-seqs`).
    pub max_sequences: usize,
    /// Requests waiting for admission (`--max-waiting-requests`).
    pub max_waiting: usize,
    /// Tokens one forward pass processes (`--max-num-batched-tokens`):
    /// one per running decode, the rest for prompt chunks.
    pub max_batched_tokens: usize,
    /// Bytes of KV cache all sequences may reserve (`--kv-cache-bytes`).
    pub kv_cache_bytes: usize,
    /// Whether sequences share cached prompt prefixes
    /// (`--enable-prefix-caching`; only where the decoder can,
    /// [`crate::model::decoder::Decoder::shares_prefixes`]).
    pub prefix_caching: bool,
}

/// What a client receives: pieces of text as they become final, then the
/// end.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// New text that became final.
    Text {
        /// The text.
        text: String,
        /// Tokens generated so far.
        generated: usize,
    },
    /// The sequence ended.
    Finished {
        /// Why.
        reason: FinishReason,
        /// Tokens of the prompt and of the output.
        usage: Usage,
    },
    /// The sequence failed; nothing follows.
    Failed(String),
}

/// A request for the engine: a tokenized prompt and how to continue it.
pub struct Request {
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// Validated sampling parameters.
    pub params: SamplingParams,
    /// Tokens it may generate (its `max_tokens`, resolved).
    pub max_tokens: u32,
    /// Its sampler (seeded).
    pub sampler: Sampler,
    /// Where its events go; dropping the receiver cancels it.
    pub events: mpsc::UnboundedSender<Event>,
    /// When it arrived (for the queue-time metric).
    pub arrived: Instant,
    /// Its `cache_salt`: prefix caching shares only with requests that
    /// sent the same ([`prefix`]).
    pub cache_salt: Option<CacheSalt>,
}

impl Request {
    /// Tokens of KV cache it reserves: the room ([`KvCache::room`]) of its
    /// prompt and `max_tokens`.
    fn kv_tokens(&self) -> usize {
        KvCache::room(self.prompt.len() + self.max_tokens as usize)
    }
}

/// The sending side, shared by the protocols.
#[derive(Clone)]
pub struct EngineHandle {
    submit: mpsc::Sender<Request>,
    limits: EngineLimits,
    kv_bytes_per_token: usize,
}

impl EngineHandle {
    /// Queues `request`; [`Error::QueueFull`] when `--max-waiting-requests`
    /// wait already, [`Error::BadInput`] when it could never fit the KV
    /// budget, [`Error::Unavailable`] when the engine stopped.
    pub fn submit(&self, request: Request) -> Result<()> {
        let need = request.kv_tokens() * self.kv_bytes_per_token;
        if need > self.limits.kv_cache_bytes {
            return Err(Error::BadInput(format!(
                "the prompt ({} tokens) and max_tokens ({}) need {} MiB of KV cache; this server has {} MiB (--kv-cache-bytes): shorten the prompt or lower max_tokens",
                request.prompt.len(),
                request.max_tokens,
                need >> 20,
                self.limits.kv_cache_bytes >> 20
            )));
        }
        self.submit.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::QueueFull {
                capacity: self.limits.max_waiting,
            },
            mpsc::error::TrySendError::Closed(_) => {
                Error::Unavailable("the generation engine stopped".into())
            }
        })
    }
}

/// One admitted sequence.
struct Sequence {
    request: Request,
    cache: KvCache,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    output: Vec<u32>,
    decoder: IncrementalDecoder<Arc<Tokenizer>>,
    stop: StopChecker,
    reserved_tokens: usize,
    last_token: Option<Instant>,
    /// Nothing was cached for its prompt at admission: it looks again
    /// before reading its first chunk.
    fresh: bool,
    /// Prompt tokens copied from a cached prefix.
    cached_tokens: usize,
}

impl Sequence {
    fn prefilling(&self) -> bool {
        self.prefilled < self.request.prompt.len()
    }

    /// What its cache offers a request salted `salt`: the part of its
    /// prompt whose keys and values it holds, if the salts match.
    fn offered<'a>(&'a self, salt: Option<&CacheSalt>) -> &'a [u32] {
        let cached = &self.request.prompt[..self.cache.len().min(self.request.prompt.len())];
        prefix::offered(cached, self.request.cache_salt.as_ref(), salt)
    }

    /// Its cache, to keep for later prompts, with the tokens it holds.
    fn into_kept(self) -> Kept {
        let mut tokens = self.request.prompt;
        tokens.extend_from_slice(&self.output);
        tokens.truncate(self.cache.len());
        Kept {
            tokens,
            salt: self.request.cache_salt,
            cache: self.cache,
            room: self.reserved_tokens,
        }
    }
}

/// Starts the engine on its own thread; it stops when every handle is
/// dropped and no sequence is left.
pub fn start(
    model: Arc<Model>,
    limits: EngineLimits,
    metrics: Arc<Metrics>,
) -> Result<EngineHandle> {
    let (tx, rx) = mpsc::channel(limits.max_waiting.max(1));
    let kv_bytes_per_token = model.decoder.config().kv_bytes_per_token();
    let sharing = limits.prefix_caching && model.decoder.shares_prefixes();
    std::thread::Builder::new()
        .name("generation".into())
        .spawn(move || {
            Engine {
                model,
                limits,
                metrics,
                incoming: rx,
                waiting: VecDeque::new(),
                running: Vec::new(),
                reserved_tokens: 0,
                kv_bytes_per_token,
                sharing,
                retained: Retained::default(),
                logits: PassLogits::default(),
            }
            .run()
        })
        .map_err(|e| Error::Thread(format!("starting the generation thread: {e}")))?;
    Ok(EngineHandle {
        submit: tx,
        limits,
        kv_bytes_per_token,
    })
}

struct Engine {
    model: Arc<Model>,
    limits: EngineLimits,
    metrics: Arc<Metrics>,
    incoming: mpsc::Receiver<Request>,
    waiting: VecDeque<Request>,
    running: Vec<Sequence>,
    reserved_tokens: usize,
    kv_bytes_per_token: usize,
    /// Whether prefixes are shared (asked for, and the decoder can).
    sharing: bool,
    /// Finished sequences' caches, while the budget has room for them.
    retained: Retained,
    /// The last pass's logits (kept: its buffer serves the next pass).
    logits: PassLogits,
}

impl Engine {
    fn run(mut self) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match self.incoming.blocking_recv() {
                    Some(r) => self.waiting.push_back(r),
                    None => return,
                }
            }
            while let Ok(r) = self.incoming.try_recv() {
                self.waiting.push_back(r);
            }
            self.drop_cancelled();
            self.admit();
            self.report();
            if !self.running.is_empty() {
                self.step();
            }
        }
    }

    fn drop_cancelled(&mut self) {
        self.waiting.retain(|r| !r.events.is_closed());
        if self.running.iter().any(|s| s.request.events.is_closed()) {
            let metrics = Arc::clone(&self.metrics);
            self.release_ended(true, |_, seq| {
                let closed = seq.request.events.is_closed();
                if closed {
                    metrics.generation().finished(FinishReason::Abort.as_str());
                }
                closed
            });
        }
    }

    /// Takes the running sequences that `ended` picks (by index) out of
    /// the batch, the others staying in order, and returns their
    /// reservations to the budget; their caches are kept for later prompts
    /// if `keep` (they hold what their tokens computed) and prefixes are
    /// shared.
    fn release_ended(&mut self, keep: bool, mut ended: impl FnMut(usize, &Sequence) -> bool) {
        for (i, seq) in std::mem::take(&mut self.running).into_iter().enumerate() {
            if !ended(i, &seq) {
                self.running.push(seq);
                continue;
            }
            self.reserved_tokens -= seq.reserved_tokens;
            if keep && self.sharing {
                self.retained.keep(seq.into_kept());
            }
        }
    }

    /// Tokens of KV cache the budget holds.
    fn budget_tokens(&self) -> usize {
        self.limits.kv_cache_bytes / self.kv_bytes_per_token.max(1)
    }

    fn admit(&mut self) {
        let budget_tokens = self.budget_tokens();
        while self.running.len() < self.limits.max_sequences {
            let Some(front) = self.waiting.front() else {
                break;
            };
            let tokens = front.kv_tokens();
            if self.reserved_tokens + tokens > budget_tokens {
                break;
            }
            let request = self.waiting.pop_front().expect("front exists");
            self.metrics
                .generation()
                .queued(request.arrived.elapsed().as_secs_f64());
            self.reserved_tokens += tokens;
            let seq = self.sequence(request, tokens);
            self.running.push(seq);
        }
    }

    /// Copies into the empty `cache` the longest prefix of `prompt` a
    /// running sequence or a kept cache salted as `salt` holds (the running
    /// one on a tie); returns its tokens. With `evict` (at admission, when the running
    /// reservations just grew), kept caches are then evicted, least
    /// recently used first and the donor last, until the reservations and
    /// the kept caches fit the budget again.
    fn take_prefix(
        &mut self,
        prompt: &[u32],
        salt: Option<&CacheSalt>,
        cache: &mut KvCache,
        evict: bool,
    ) -> usize {
        let budget = self.budget_tokens();
        let over = |e: &Engine| evict && e.reserved_tokens + e.retained.room() > budget;
        let running = prefix::best(prompt, self.running.iter().map(|s| s.offered(salt)));
        let kept = prefix::best(prompt, self.retained.offered(salt));
        let (donor, shared) = match (running, kept) {
            (Some((i, n)), k) if n >= k.map_or(0, |(_, n)| n) => (Some(&self.running[i].cache), n),
            (_, Some((i, n))) => {
                self.retained.touch(i);
                while over(self) && self.retained.evict_oldest(true) > 0 {}
                (self.retained.newest(), n)
            }
            _ => (None, 0),
        };
        let shared = match donor.map(|d| cache.copy_prefix(d, shared)) {
            Some(Ok(())) => shared,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "a cached prefix could not be shared; computing it");
                0
            }
            None => 0,
        };
        while over(self) && self.retained.evict_oldest(false) > 0 {}
        shared
    }

    /// Sequence `i`, about to read the first chunk of its prompt, for
    /// which nothing was cached at its admission: takes the longest prefix
    /// cached now (what the sequences admitted with it have read since).
    fn take_prefix_late(&mut self, i: usize) {
        let seq = &mut self.running[i];
        seq.fresh = false;
        let prompt = std::mem::take(&mut seq.request.prompt);
        let salt = seq.request.cache_salt.clone();
        let mut cache =
            std::mem::replace(&mut seq.cache, KvCache::new(self.model.decoder.config(), 0));
        let shared = self.take_prefix(&prompt, salt.as_ref(), &mut cache, false);
        self.metrics.generation().prefix_cache(prompt.len(), shared);
        let seq = &mut self.running[i];
        (seq.request.prompt, seq.cache) = (prompt, cache);
        (seq.prefilled, seq.cached_tokens) = (shared, shared);
    }

    fn sequence(&mut self, request: Request, tokens: usize) -> Sequence {
        let stop = StopChecker::new(&request.params, &self.model.eos, request.max_tokens);
        let decoder = IncrementalDecoder::new(
            Arc::clone(&self.model.tokenizer),
            &request.prompt,
            request.params.skip_special_tokens,
        );
        let mut cache = KvCache::new(self.model.decoder.config(), tokens);
        let mut prefilled = 0;
        if self.sharing {
            let salt = request.cache_salt.as_ref();
            prefilled = self.take_prefix(&request.prompt, salt, &mut cache, true);
            if prefilled > 0 {
                self.metrics
                    .generation()
                    .prefix_cache(request.prompt.len(), prefilled);
            }
        }
        Sequence {
            fresh: self.sharing && prefilled == 0,
            cached_tokens: prefilled,
            cache,
            prefilled,
            output: Vec::new(),
            decoder,
            stop,
            reserved_tokens: tokens,
            last_token: None,
            request,
        }
    }

    fn report(&self) {
        let kv_used = self.reserved_tokens as f64
            / (self.limits.kv_cache_bytes / self.kv_bytes_per_token.max(1)).max(1) as f64;
        self.metrics
            .generation()
            .occupancy(self.running.len(), self.waiting.len(), kv_used);
    }

    /// One forward pass over every running sequence.
    fn step(&mut self) {
        let decodes = self.running.iter().filter(|s| !s.prefilling()).count();
        let mut prompt_budget = self
            .limits
            .max_batched_tokens
            .saturating_sub(decodes)
            .max(1);
        // Where each prompt chunk of this pass ends, oldest sequence first;
        // a sequence about to read its first chunk looks for a prefix first.
        let mut chunk_ends = vec![None; self.running.len()];
        for (i, chunk_end) in chunk_ends.iter_mut().enumerate() {
            if prompt_budget == 0 {
                break;
            }
            if !self.running[i].prefilling() {
                continue;
            }
            if self.running[i].fresh {
                self.take_prefix_late(i);
            }
            let seq = &self.running[i];
            let end = seq.request.prompt.len().min(seq.prefilled + prompt_budget);
            prompt_budget -= end - seq.prefilled;
            *chunk_end = Some(end);
        }
        let mut steps = Vec::with_capacity(self.running.len());
        // Per step: the sequence, how far its prompt is in the cache after
        // the pass, and whether it samples.
        let mut order = Vec::with_capacity(self.running.len());
        for (i, seq) in self.running.iter_mut().enumerate() {
            let Sequence {
                request,
                cache,
                prefilled,
                output,
                ..
            } = seq;
            if *prefilled < request.prompt.len() {
                let Some(end) = chunk_ends[i] else {
                    continue;
                };
                let last = end == request.prompt.len();
                steps.push(Step {
                    tokens: &request.prompt[*prefilled..end],
                    cache,
                    logits: if last { Logits::Last } else { Logits::None },
                });
                order.push((i, end, last));
            } else if let Some(token) = output.last() {
                steps.push(Step {
                    tokens: std::slice::from_ref(token),
                    cache,
                    logits: Logits::Last,
                });
                order.push((i, *prefilled, true));
            }
        }
        let outcome = self
            .model
            .decoder
            .forward_into(&mut steps, &mut self.logits);
        drop(steps);
        let computed = outcome.is_ok();
        let done = match outcome {
            Err(e) => {
                let mut done = vec![false; self.running.len()];
                for (i, _, _) in &order {
                    let _ = self.running[*i]
                        .request
                        .events
                        .send(Event::Failed(e.to_string()));
                    done[*i] = true;
                }
                done
            }
            Ok(()) => {
                // Each sequence's logits, if it samples from them.
                let mut sampled: Vec<Option<&mut [f32]>> = std::iter::repeat_with(|| None)
                    .take(self.running.len())
                    .collect();
                for ((i, prefilled, samples), logits) in
                    order.into_iter().zip(self.logits.steps_mut())
                {
                    self.running[i].prefilled = prefilled;
                    if samples {
                        sampled[i] = Some(logits);
                    }
                }
                let sampling = sampled.iter().flatten().count();
                let metrics = &self.metrics;
                let advanced = |(seq, logits): (&mut Sequence, Option<&mut [f32]>)| {
                    logits.is_some_and(|logits| advance(metrics, seq, logits))
                };
                if sampling >= PARALLEL_SAMPLING {
                    self.running
                        .par_iter_mut()
                        .zip(sampled)
                        .map(advanced)
                        .collect()
                } else {
                    self.running.iter_mut().zip(sampled).map(advanced).collect()
                }
            }
        };
        if done.contains(&true) {
            self.release_ended(computed, |i, _| done[i]);
        }
    }
}

/// How many sequences must sample from one pass before their sampling,
/// detokenizing and stop checks run on every thread of the pool rather than
/// on the engine's thread alone while the pool waits (a 16-sequence decode
/// step's 0.73 → 0.42 ms on 2 threads of the AVX-512 EPYC capped at AVX2;
/// docs/benchmarks.md). Below it, handing them to the pool costs about what
/// they take.
const PARALLEL_SAMPLING: usize = 4;

/// Samples a sequence's next token from `logits`, shows its client what
/// became final, and says whether the sequence ended.
fn advance(metrics: &Metrics, seq: &mut Sequence, logits: &mut [f32]) -> bool {
    let token = seq
        .request
        .sampler
        .sample(logits, &seq.request.prompt, &seq.output);
    seq.output.push(token);
    let now = Instant::now();
    let generation = metrics.generation();
    match seq.last_token {
        None => generation.first_token(now.duration_since(seq.request.arrived).as_secs_f64()),
        Some(previous) => generation.inter_token(now.duration_since(previous).as_secs_f64()),
    }
    seq.last_token = Some(now);
    let piece = match seq.decoder.push(token) {
        Ok(piece) => piece,
        Err(e) => {
            let _ = seq.request.events.send(Event::Failed(e.to_string()));
            return true;
        }
    };
    let verdict = seq.stop.push(token, &piece);
    if !verdict.text.is_empty() {
        let _ = seq.request.events.send(Event::Text {
            text: verdict.text,
            generated: seq.output.len(),
        });
    }
    match verdict.finish {
        Some(reason) => {
            let usage = Usage {
                prompt_tokens: seq.request.prompt.len(),
                completion_tokens: seq.output.len(),
                cached_tokens: seq.cached_tokens,
            };
            generation.finished(reason.as_str());
            generation.tokens(usage.prompt_tokens, usage.completion_tokens);
            generation.end_to_end(now.duration_since(seq.request.arrived).as_secs_f64());
            let _ = seq.request.events.send(Event::Finished { reason, usage });
            true
        }
        None => false,
    }
}
