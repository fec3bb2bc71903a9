//! Dynamic batching, the way text-embeddings-inference does it, for any
//! [`Task`].
//!
//! Requests are split into one job per text. A request first reserves room
//! for all its texts in the queue ([`Batcher::reserve`]): beyond
//! `max_queued` texts waiting it is refused with [`Error::QueueFull`]
//! before it is tokenized. A batcher thread keeps the waiting jobs in a
//! [`queue::Queue`] and forms batches under a token budget
//! (`max_batch_tokens`, counting padding: a batch costs `jobs × longest`)
//! and a size cap (`max_batch_requests`), starting from the oldest job so
//! nothing starves and adding the waiting jobs closest to its length so
//! little is spent on padding, at a cost that grows with the batch, not
//! with the queue. Jobs whose caller has gone away are dropped before they
//! cost anything. The model runs on its own thread behind a channel of
//! depth one, so the next batch is formed while the current one runs.

pub mod queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::model::task::Task;
use crate::{Error, Result};
use queue::Queue;

/// Batch size and queue limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most tokens in one batch, padding included.
    pub max_batch_tokens: usize,
    /// Most inputs in one batch.
    pub max_batch_requests: usize,
    /// Most inputs waiting for the model (reserved, queued, not yet in a
    /// batch).
    pub max_queued: usize,
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

/// Handle to the batcher of a task whose outputs are `O`: reserve room in
/// its queue, then queue jobs into it. The threads stop once every handle
/// (and every [`Reservation`]) is dropped.
pub struct Batcher<O> {
    jobs: mpsc::Sender<Job<O>>,
    /// Inputs reserved and not yet taken out of the queue.
    waiting: Arc<AtomicUsize>,
    max_queued: usize,
}

impl<O> Clone for Batcher<O> {
    fn clone(&self) -> Self {
        Batcher {
            jobs: self.jobs.clone(),
            waiting: Arc::clone(&self.waiting),
            max_queued: self.max_queued,
        }
    }
}

/// Room for some inputs in a batcher's queue; what is not used is given
/// back when it is dropped.
pub struct Reservation<O> {
    jobs: mpsc::Sender<Job<O>>,
    waiting: Arc<AtomicUsize>,
    left: usize,
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
        let waiting = Arc::new(AtomicUsize::new(0));
        let (obs, left) = (observer.clone(), Arc::clone(&waiting));
        std::thread::Builder::new()
            .name("batcher".into())
            .spawn(move || form_batches(incoming, batches, limits, &left, obs))
            .map_err(|e| Error::Thread(format!("starting the batcher thread: {e}")))?;
        std::thread::Builder::new()
            .name("model".into())
            .spawn(move || run_model(&*task, to_model, observer))
            .map_err(|e| Error::Thread(format!("starting the model thread: {e}")))?;
        Ok(Batcher {
            jobs,
            waiting,
            max_queued: limits.max_queued,
        })
    }

    /// Reserves room for `inputs` jobs, all or none: [`Error::QueueFull`]
    /// when the queue would then hold more than `max_queued`.
    pub fn reserve(&self, inputs: usize) -> Result<Reservation<O>> {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                waiting
                    .checked_add(inputs)
                    .filter(|&total| total <= self.max_queued)
            })
            .map_err(|_| Error::QueueFull {
                capacity: self.max_queued,
            })?;
        Ok(Reservation {
            jobs: self.jobs.clone(),
            waiting: Arc::clone(&self.waiting),
            left: inputs,
        })
    }
}

impl<O> Reservation<O> {
    /// Queues the token ids of one reserved input; the receiver gets what
    /// the task makes of it. [`Error::Unavailable`] once the model thread
    /// stopped; [`Error::Thread`] beyond the inputs reserved.
    pub fn submit(&mut self, ids: Vec<u32>) -> Result<oneshot::Receiver<Result<O>>> {
        if self.left == 0 {
            return Err(Error::Thread(
                "more inputs submitted than reserved in the batch queue".into(),
            ));
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            ids,
            reply,
            queued: Instant::now(),
        };
        self.jobs.send(job).map_err(|_| {
            Error::Unavailable("the model has stopped: the server is shutting down".into())
        })?;
        // The batcher counts it down once it leaves the queue.
        self.left -= 1;
        Ok(answer)
    }
}

impl<O> Drop for Reservation<O> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(self.left, Ordering::AcqRel);
    }
}

fn form_batches<O>(
    incoming: Receiver<Job<O>>,
    batches: SyncSender<Vec<Job<O>>>,
    limits: Limits,
    waiting: &AtomicUsize,
    observer: Option<Arc<dyn BatchObserver>>,
) {
    let mut pending = Queue::new();
    loop {
        // Wait for work only when there is none.
        if pending.is_empty() {
            match incoming.recv() {
                Ok(job) => pending.push(job.ids.len(), job),
                Err(_) => return,
            }
        }
        // Reservations bound what can arrive here to `max_queued`.
        for job in incoming.try_iter() {
            pending.push(job.ids.len(), job);
        }
        let planned = pending.next_batch(limits, |j: &Job<O>| j.reply.is_closed());
        waiting.fetch_sub(planned.batch.len() + planned.dropped, Ordering::AcqRel);
        if let Some(o) = &observer {
            if planned.dropped > 0 {
                o.dropped(planned.dropped);
            }
            o.queue_size(pending.len());
        }
        if planned.batch.is_empty() {
            continue;
        }
        // Blocks while the model runs one batch and the next already waits;
        // new jobs queue up in the channel meanwhile.
        if batches.send(planned.batch).is_err() {
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
    use std::sync::Mutex;

    use super::*;
    use crate::model::task::Tokens;

    /// A task that runs a batch only when let through, and answers each
    /// input with its length.
    struct Gated(Mutex<Receiver<()>>);

    impl Task for Gated {
        type Output = usize;

        fn tokenize(&self, _: &str, _: bool) -> Result<Tokens> {
            unreachable!("the batcher never tokenizes")
        }

        fn run(&self, batch: &[&[u32]]) -> Result<Vec<usize>> {
            let _ = self.0.lock().unwrap().recv();
            Ok(batch.iter().map(|ids| ids.len()).collect())
        }
    }

    #[tokio::test]
    async fn the_queue_holds_at_most_max_queued_inputs_reserved_all_or_none() {
        let (open, gate) = mpsc::channel();
        let limits = Limits {
            max_batch_tokens: 1000,
            max_batch_requests: 1,
            max_queued: 5,
        };
        let batcher = Batcher::start(Arc::new(Gated(Mutex::new(gate))), limits, None).unwrap();
        let full = batcher.reserve(6).err().unwrap();
        assert!(matches!(full, Error::QueueFull { capacity: 5 }), "{full}");
        assert!(full.to_string().contains("--max-queued-texts"), "{full}");

        let mut five = batcher.reserve(5).unwrap();
        assert!(batcher.reserve(1).is_err(), "all five places are reserved");
        let answers: Vec<_> = (1..=5).map(|n| five.submit(vec![0; n]).unwrap()).collect();
        assert!(
            matches!(five.submit(vec![1]), Err(Error::Thread(_))),
            "no more than reserved"
        );
        drop(five);
        // The model holds the first job, the channel to it (depth one) the
        // second, the batcher the third: two jobs still wait in the queue,
        // and count.
        let until = Instant::now() + Duration::from_secs(10);
        let three = loop {
            if let Ok(r) = batcher.reserve(3) {
                break r;
            }
            assert!(
                Instant::now() < until,
                "the batcher never took jobs out of the queue"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(batcher.reserve(1).is_err(), "two queued + three reserved");
        drop(three);
        for _ in 0..5 {
            open.send(()).unwrap();
        }
        let mut lengths = Vec::new();
        for answer in answers {
            lengths.push(answer.await.unwrap().unwrap());
        }
        assert_eq!(lengths, [1, 2, 3, 4, 5], "oldest first");
        drop(batcher.reserve(5).unwrap());
    }
}
