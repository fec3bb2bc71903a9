//! Dynamic batching, the way text-embeddings-inference does it, for any
//! [`Task`].
//!
//! Requests are split into one job per text and queued. A batcher thread
//! forms batches under a token budget (`max_batch_tokens`, counting padding:
//! a batch costs `jobs × longest`) and a size cap (`max_batch_requests`),
//! starting from the oldest job so nothing starves and adding the waiting
//! jobs closest to its length so little is spent on padding. Jobs whose
//! caller has gone away are dropped before they cost anything. The model
//! runs on its own thread behind a channel of depth one, so the next batch
//! is formed while the current one runs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::model::task::Task;
use crate::{Error, Result};

/// Batch size limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most tokens in one batch, padding included.
    pub max_batch_tokens: usize,
    /// Most inputs in one batch.
    pub max_batch_requests: usize,
}

/// Chooses the next batch from waiting jobs, given their token counts in
/// arrival order. Returns indexes into `lengths`; empty only if `lengths` is.
///
/// The oldest job always goes first (even alone over budget: it was
/// admitted, so it runs); then, while the budget allows, the job whose
/// length is closest to the batch's longest so far.
pub fn plan_batch(lengths: &[usize], limits: Limits) -> Vec<usize> {
    let Some(&first) = lengths.first() else {
        return Vec::new();
    };
    let mut chosen = vec![0];
    let mut longest = first;
    let mut rest: Vec<usize> = (1..lengths.len()).collect();
    // Closest length first; arrival order breaks ties.
    rest.sort_by_key(|&i| (lengths[i].abs_diff(first), i));
    for i in rest {
        if chosen.len() >= limits.max_batch_requests {
            break;
        }
        let new_longest = longest.max(lengths[i]);
        if new_longest * (chosen.len() + 1) > limits.max_batch_tokens {
            continue;
        }
        chosen.push(i);
        longest = new_longest;
    }
    chosen
}

/// One tokenized text waiting for the model; `O` is what the task makes of it.
pub struct Job<O> {
    /// Its token ids.
    pub ids: Vec<u32>,
    /// Where the result goes.
    pub reply: oneshot::Sender<Result<O>>,
    /// When it was queued.
    pub queued: Instant,
}

/// Observations for metrics, reported per batch.
pub trait BatchObserver: Send + Sync + 'static {
    /// A batch of `inputs` inputs and `tokens` tokens (padding included) ran
    /// in `inference`; its jobs had waited `queue_waits`.
    fn batch_done(
        &self,
        inputs: usize,
        tokens: usize,
        inference: Duration,
        queue_waits: &[Duration],
    );
    /// Jobs dropped because their caller went away.
    fn dropped(&self, jobs: usize);
    /// Jobs still waiting after a batch was formed.
    fn queue_size(&self, waiting: usize);
}

/// Handle to the batcher of a task whose outputs are `O`: queue jobs into
/// it. The threads stop once every handle is dropped.
pub struct Batcher<O> {
    jobs: mpsc::Sender<Job<O>>,
}

impl<O> Clone for Batcher<O> {
    fn clone(&self) -> Self {
        Batcher {
            jobs: self.jobs.clone(),
        }
    }
}

impl<O: Send + 'static> Batcher<O> {
    /// Starts the batcher and model threads for `task`.
    pub fn start<T: Task<Output = O>>(
        task: Arc<T>,
        limits: Limits,
        observer: Option<Arc<dyn BatchObserver>>,
    ) -> Result<Batcher<O>> {
        let (jobs, incoming) = mpsc::channel::<Job<O>>();
        let (batches, to_model) = mpsc::sync_channel::<Vec<Job<O>>>(1);
        let obs = observer.clone();
        std::thread::Builder::new()
            .name("batcher".into())
            .spawn(move || form_batches(incoming, batches, limits, obs))
            .map_err(|e| Error::Thread(format!("starting the batcher thread: {e}")))?;
        std::thread::Builder::new()
            .name("model".into())
            .spawn(move || run_model(&*task, to_model, observer))
            .map_err(|e| Error::Thread(format!("starting the model thread: {e}")))?;
        Ok(Batcher { jobs })
    }

    /// Queues one job; [`Error::Unavailable`] once the model thread stopped.
    pub fn submit(&self, job: Job<O>) -> Result<()> {
        self.jobs.send(job).map_err(|_| {
            Error::Unavailable("the model has stopped: the server is shutting down".into())
        })
    }
}

fn form_batches<O>(
    incoming: Receiver<Job<O>>,
    batches: SyncSender<Vec<Job<O>>>,
    limits: Limits,
    observer: Option<Arc<dyn BatchObserver>>,
) {
    let mut pending: VecDeque<Job<O>> = VecDeque::new();
    loop {
        // Wait for work only when there is none.
        if pending.is_empty() {
            match incoming.recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => return,
            }
        }
        pending.extend(incoming.try_iter());
        let before = pending.len();
        pending.retain(|j| !j.reply.is_closed());
        if let Some(o) = observer.as_ref().filter(|_| before > pending.len()) {
            o.dropped(before - pending.len());
        }
        if pending.is_empty() {
            continue;
        }
        let lengths: Vec<usize> = pending.iter().map(|j| j.ids.len()).collect();
        let mut picked = plan_batch(&lengths, limits);
        picked.sort_unstable_by(|a, b| b.cmp(a));
        let batch: Vec<Job<O>> = picked
            .into_iter()
            .filter_map(|i| pending.remove(i))
            .collect();
        if let Some(o) = &observer {
            o.queue_size(pending.len());
        }
        // Blocks while the model runs one batch and the next already waits;
        // new jobs queue up in the channel meanwhile.
        if batches.send(batch).is_err() {
            return;
        }
    }
}

fn run_model<T: Task>(
    task: &T,
    batches: Receiver<Vec<Job<T::Output>>>,
    observer: Option<Arc<dyn BatchObserver>>,
) {
    for batch in batches {
        // Callers may have gone away while this batch waited for the model.
        let formed = batch.len();
        let live: Vec<Job<T::Output>> =
            batch.into_iter().filter(|j| !j.reply.is_closed()).collect();
        if let Some(o) = observer.as_ref().filter(|_| formed > live.len()) {
            o.dropped(formed - live.len());
        }
        if live.is_empty() {
            continue;
        }
        let waits: Vec<Duration> = live.iter().map(|j| j.queued.elapsed()).collect();
        let ids: Vec<&[u32]> = live.iter().map(|j| j.ids.as_slice()).collect();
        let tokens = live.len() * ids.iter().map(|i| i.len()).max().unwrap_or(0);
        let started = Instant::now();
        let result = task.run(&ids);
        let took = started.elapsed();
        if let Some(o) = &observer {
            o.batch_done(live.len(), tokens, took, &waits);
        }
        match result {
            Ok(outputs) => {
                for (job, output) in live.into_iter().zip(outputs) {
                    let _ = job.reply.send(Ok(output));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in live {
                    let _ = job.reply.send(Err(Error::BadModel(msg.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_batch_tokens: 100,
        max_batch_requests: 4,
    };

    #[test]
    fn oldest_first_then_closest_lengths_within_budget() {
        // Oldest is 10 tokens; 11 and 9 are closest; 30 and 50 would blow the
        // budget once padded to their length (4 × 30 > 100).
        assert_eq!(plan_batch(&[10, 50, 11, 9, 30], L), vec![0, 2, 3]);
        // The 30-token job waits; the cap of 4 is reached with 12.
        assert_eq!(plan_batch(&[10, 30, 11, 9, 12], L), vec![0, 2, 3, 4]);
    }

    #[test]
    fn caps_and_edge_cases() {
        assert!(plan_batch(&[], L).is_empty());
        assert_eq!(
            plan_batch(&[500, 1], L),
            vec![0],
            "an admitted job runs even alone over budget"
        );
        assert_eq!(
            plan_batch(&[1; 10], L).len(),
            4,
            "max_batch_requests caps the batch"
        );
        let all = plan_batch(
            &[5, 7, 6, 5, 9, 8],
            Limits {
                max_batch_tokens: 1000,
                max_batch_requests: 100,
            },
        );
        assert_eq!(all.len(), 6);
    }
}
