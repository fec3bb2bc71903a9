//! The jobs waiting for the model, and the batch planner over them: pure
//! data structure, no threads, tested alone.
//!
//! Jobs are kept in one FIFO bucket per token count, and in one list of
//! arrivals. A batch starts from the oldest job (so nothing starves) and
//! adds the waiting jobs closest to its length (so little is spent on
//! padding; equal distances go to the older job) while `jobs × longest ≤
//! max_batch_tokens` and `jobs ≤ max_batch_requests`. Walking the buckets
//! outwards from the first job's length visits only the jobs it takes (or
//! drops) and at most one more per side, so forming a batch costs
//! O(batch × log lengths), whatever the number of jobs waiting: there is no
//! sort or scan of the whole queue per batch.
//!
//! Jobs whose caller has gone (`gone`) are dropped when the planner meets
//! them, never run.

use std::collections::{BTreeMap, VecDeque};

use super::Limits;

/// Waiting items of type `T`, each with its token count.
pub struct Queue<T> {
    /// Items by token count, oldest first within a count; no empty bucket.
    buckets: BTreeMap<usize, VecDeque<(u64, T)>>,
    /// `(arrival, tokens)` of every item in arrival order, and of some
    /// already taken (skipped lazily: an entry is live only while it is the
    /// front of its bucket or behind a live entry).
    arrivals: VecDeque<(u64, usize)>,
    next_arrival: u64,
    len: usize,
}

/// What [`Queue::next_batch`] took out of the queue.
pub struct Planned<T> {
    /// The batch, oldest item first, then in the order they were chosen.
    pub batch: Vec<T>,
    /// How many items whose caller had gone were dropped.
    pub dropped: usize,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            buckets: BTreeMap::new(),
            arrivals: VecDeque::new(),
            next_arrival: 0,
            len: 0,
        }
    }
}

/// Which way from the first item's length a candidate lies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// As long or shorter.
    Down,
    /// Longer.
    Up,
}

impl<T> Queue<T> {
    /// An empty queue.
    pub fn new() -> Queue<T> {
        Queue::default()
    }

    /// Number of items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `item` of `tokens` tokens.
    pub fn push(&mut self, tokens: usize, item: T) {
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.buckets
            .entry(tokens)
            .or_default()
            .push_back((arrival, item));
        self.arrivals.push_back((arrival, tokens));
        self.len += 1;
    }

    /// Takes the next batch under `limits`, dropping the items met on the
    /// way for which `gone` is true. The oldest live item always goes first,
    /// even alone over the token budget (it was admitted, so it runs). The
    /// batch is empty only when no live item is left.
    pub fn next_batch(&mut self, limits: Limits, gone: impl Fn(&T) -> bool) -> Planned<T> {
        let mut planned = Planned {
            batch: Vec::new(),
            dropped: 0,
        };
        let Some(first) = self.oldest_live(&gone, &mut planned.dropped) else {
            return planned;
        };
        let (mut longest, item) = self.pop_front_of(first);
        planned.batch.push(item);
        // The next candidate on each side: keys ≤ `down`, keys ≥ `up`;
        // `None` once nothing more on that side can fit.
        let mut down = Some(first);
        let mut up = first.checked_add(1);
        while planned.batch.len() < limits.max_batch_requests {
            let Some((tokens, side)) = self.closest(first, down, up) else {
                break;
            };
            let front = &self.buckets[&tokens].front().expect("no empty bucket").1;
            if gone(front) {
                self.pop_front_of(tokens);
                planned.dropped += 1;
                continue;
            }
            let new_longest = longest.max(tokens);
            if new_longest.saturating_mul(planned.batch.len() + 1) > limits.max_batch_tokens {
                // Further out on this side is as long or longer, and the
                // batch only grows: nothing there fits either.
                match side {
                    Side::Down => down = None,
                    Side::Up => up = None,
                }
                continue;
            }
            planned.batch.push(self.pop_front_of(tokens).1);
            longest = new_longest;
        }
        planned
    }

    /// The token count of the oldest item whose caller is still there,
    /// dropping the gone ones before it and skipping stale arrivals.
    fn oldest_live(&mut self, gone: &impl Fn(&T) -> bool, dropped: &mut usize) -> Option<usize> {
        while let Some(&(arrival, tokens)) = self.arrivals.front() {
            let front = self.buckets.get(&tokens).and_then(VecDeque::front);
            match front {
                Some((a, item)) if *a == arrival => {
                    if !gone(item) {
                        return Some(tokens);
                    }
                    self.pop_front_of(tokens);
                    *dropped += 1;
                }
                // Taken earlier by a batch that started from an older item.
                _ => {
                    self.arrivals.pop_front();
                }
            }
        }
        None
    }

    /// The nearest non-empty bucket to `first` among keys ≤ `down` and keys
    /// ≥ `up`; equally near, the one whose front arrived first.
    fn closest(
        &self,
        first: usize,
        down: Option<usize>,
        up: Option<usize>,
    ) -> Option<(usize, Side)> {
        let front =
            |(k, v): (&usize, &VecDeque<(u64, T)>)| (*k, v.front().map_or(u64::MAX, |f| f.0));
        let below = down.and_then(|d| self.buckets.range(..=d).next_back().map(front));
        let above = up.and_then(|u| self.buckets.range(u..).next().map(front));
        match (below, above) {
            (None, None) => None,
            (Some((k, _)), None) => Some((k, Side::Down)),
            (None, Some((k, _))) => Some((k, Side::Up)),
            (Some((d, da)), Some((u, ua))) => {
                if (first - d, da) <= (u - first, ua) {
                    Some((d, Side::Down))
                } else {
                    Some((u, Side::Up))
                }
            }
        }
    }

    /// Removes the front item of bucket `tokens` (which must exist), and
    /// the bucket once empty; returns its token count and the item.
    fn pop_front_of(&mut self, tokens: usize) -> (usize, T) {
        let bucket = self.buckets.get_mut(&tokens).expect("an existing bucket");
        let (_, item) = bucket.pop_front().expect("no empty bucket");
        if bucket.is_empty() {
            self.buckets.remove(&tokens);
        }
        self.len -= 1;
        if self.len == 0 {
            // Everything left in the arrivals is stale.
            self.arrivals.clear();
        }
        (tokens, item)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;

    const L: Limits = Limits {
        max_batch_tokens: 100,
        max_batch_requests: 4,
        max_queued: 1000,
    };

    /// A queue of items `0..` with these token counts, in this order.
    fn queue(lengths: &[usize]) -> Queue<usize> {
        let mut q = Queue::new();
        for (i, &n) in lengths.iter().enumerate() {
            q.push(n, i);
        }
        q
    }

    fn plan(lengths: &[usize], limits: Limits) -> Vec<usize> {
        queue(lengths).next_batch(limits, |_| false).batch
    }

    /// The planner as first written: sort every waiting job by distance per
    /// batch. O(queue log queue); the reference the bucket walk must equal.
    fn reference(lengths: &[usize], limits: Limits) -> Vec<usize> {
        let Some(&first) = lengths.first() else {
            return Vec::new();
        };
        let mut chosen = vec![0];
        let mut longest = first;
        let mut rest: Vec<usize> = (1..lengths.len()).collect();
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

    #[test]
    fn oldest_first_then_closest_lengths_within_budget() {
        // Oldest is 10 tokens; 11 and 9 are closest; 30 and 50 would blow the
        // budget once padded to their length (4 × 30 > 100).
        assert_eq!(plan(&[10, 50, 11, 9, 30], L), vec![0, 2, 3]);
        // The 30-token job waits; the cap of 4 is reached with 12.
        assert_eq!(plan(&[10, 30, 11, 9, 12], L), vec![0, 2, 3, 4]);
        // Equally near: the older first.
        assert_eq!(plan(&[10, 12, 8, 11, 9], L), vec![0, 3, 4, 1]);
    }

    #[test]
    fn caps_and_edge_cases() {
        assert!(plan(&[], L).is_empty());
        assert_eq!(
            plan(&[500, 1], L),
            vec![0],
            "an admitted job runs even alone over budget"
        );
        assert_eq!(
            plan(&[1; 10], L).len(),
            4,
            "max_batch_requests caps the batch"
        );
        let roomy = Limits {
            max_batch_tokens: 1000,
            max_batch_requests: 100,
            max_queued: 1000,
        };
        assert_eq!(plan(&[5, 7, 6, 5, 9, 8], roomy).len(), 6);
    }

    #[test]
    fn gone_items_are_dropped_where_the_planner_meets_them() {
        let mut q = queue(&[10, 10, 11, 60]);
        let gone = |i: &usize| *i == 0 || *i == 2;
        let planned = q.next_batch(L, gone);
        assert_eq!(
            planned.batch,
            vec![1],
            "60 does not fit beside 10 (2 × 60 > 100)"
        );
        assert_eq!(planned.dropped, 2);
        assert_eq!(q.len(), 1);
        let rest = q.next_batch(L, gone);
        assert_eq!((rest.batch, rest.dropped), (vec![3], 0));
        assert!(q.is_empty());
        assert!(q.next_batch(L, gone).batch.is_empty());
    }

    #[test]
    fn the_planner_looks_only_at_what_it_takes() {
        // 200,000 jobs of 200 lengths; each batch must look at its own jobs
        // and a few more, never the whole queue.
        let lengths: Vec<usize> = (0..200_000).map(|i| 8 + (i * 7919) % 200).collect();
        let mut q = queue(&lengths);
        let looked = Cell::new(0usize);
        let limits = Limits {
            max_batch_tokens: 4096,
            max_batch_requests: 64,
            max_queued: usize::MAX,
        };
        let started = Instant::now();
        let mut batches = 0;
        while !q.is_empty() {
            let before = looked.get();
            let planned = q.next_batch(limits, |_| {
                looked.set(looked.get() + 1);
                false
            });
            assert!(!planned.batch.is_empty());
            assert!(
                looked.get() - before <= planned.batch.len() + 2,
                "batch {batches} of {} jobs looked at {} jobs",
                planned.batch.len(),
                looked.get() - before
            );
            batches += 1;
        }
        assert!(batches > 3000);
        // The sort-per-batch planner took minutes here.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "draining 200,000 jobs took {:?}",
            started.elapsed()
        );
    }

    proptest! {
        /// Batch after batch, the bucket walk takes exactly what the
        /// sort-per-batch planner would, on the same remaining jobs.
        #[test]
        fn equals_the_sorting_planner(
            lengths in prop::collection::vec(1usize..40, 0..60),
            max_batch_tokens in 1usize..200,
            max_batch_requests in 1usize..10,
        ) {
            let limits = Limits { max_batch_tokens, max_batch_requests, max_queued: 1000 };
            let mut q = queue(&lengths);
            let mut waiting: Vec<usize> = (0..lengths.len()).collect();
            while !waiting.is_empty() {
                let left: Vec<usize> = waiting.iter().map(|&i| lengths[i]).collect();
                let want: Vec<usize> = reference(&left, limits).into_iter().map(|k| waiting[k]).collect();
                let got = q.next_batch(limits, |_| false).batch;
                prop_assert_eq!(&got, &want);
                waiting.retain(|i| !got.contains(i));
                prop_assert_eq!(q.len(), waiting.len());
            }
            prop_assert!(q.next_batch(limits, |_| false).batch.is_empty());
        }
    }
}
