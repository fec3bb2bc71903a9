//! The batcher with the real model: many concurrent inputs of mixed lengths
//! come back each with its own embedding (equal to the reference fixture),
//! in batches that respect the limits; inputs whose caller went away are
//! dropped and never run.

mod common;

use common::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openmodel_server::batching::{BatchObserver, Batcher, Limits};
use openmodel_server::model::embedding::Embedder;
use openmodel_server::model::engine::Engine;
use openmodel_server::model::pooling::normalize;

#[derive(Default)]
struct Seen {
    batches: Mutex<Vec<(usize, usize)>>,
    dropped: AtomicUsize,
}

impl BatchObserver for Seen {
    fn batch_done(&self, inputs: usize, tokens: usize, _inference: Duration, _waits: &[Duration]) {
        self.batches.lock().unwrap().push((inputs, tokens));
    }
    fn dropped(&self, jobs: usize) {
        self.dropped.fetch_add(jobs, Ordering::Relaxed);
    }
    fn queue_size(&self, _waiting: usize) {}
}

/// Tokenizes `text` and queues it; the receiver gets its embedding (pooled,
/// not normalized).
fn submit(
    batcher: &Batcher<Vec<f32>>,
    embedder: &Embedder,
    text: &str,
) -> tokio::sync::oneshot::Receiver<openmodel_server::Result<Vec<f32>>> {
    let ids = embedder.tokenize(text, true).unwrap().ids;
    batcher.reserve(1).unwrap().submit(ids).unwrap()
}

#[test]
fn concurrent_inputs_are_batched_within_limits_and_answered_correctly() {
    let dir = model_dir();
    let fixture = fixture();
    let embedder = Arc::new(Embedder::load(&dir, &Engine::Native).unwrap());
    let seen = Arc::new(Seen::default());
    let limits = Limits {
        max_batch_tokens: 2048,
        max_batch_requests: 16,
        max_queued: 1000,
    };
    let batcher = Batcher::start(
        Arc::clone(&embedder),
        limits,
        Some(Arc::clone(&seen) as Arc<dyn BatchObserver>),
    )
    .unwrap();

    let cases: Vec<(String, Vec<f32>)> = fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .take(60)
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_owned(),
                vector(&c["embedding"]),
            )
        })
        .collect();
    let mut receivers = Vec::new();
    for (text, want) in &cases {
        receivers.push((submit(&batcher, &embedder, text), want.clone()));
    }
    for (rx, want) in receivers {
        let mut got = rx.blocking_recv().unwrap().unwrap();
        normalize(&mut got);
        let dot: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
        assert!(dot > 0.9999, "cosine {dot}");
    }
    let batches = seen.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().map(|b| b.0).sum::<usize>(), 60);
    assert!(
        batches.iter().any(|b| b.0 > 1),
        "inputs should share batches: {batches:?}"
    );
    for (inputs, tokens) in &batches {
        assert!(*inputs <= 16);
        assert!(
            *tokens <= 2048 || *inputs == 1,
            "batch over the token budget: {batches:?}"
        );
    }
}

#[test]
fn inputs_whose_caller_went_away_are_dropped_before_they_run() {
    let embedder = Arc::new(Embedder::load(&model_dir(), &Engine::Native).unwrap());
    let seen = Arc::new(Seen::default());
    // 8 long inputs a batch: the 64 keep the model busy for several batches.
    let batcher = Batcher::start(
        Arc::clone(&embedder),
        Limits {
            max_batch_tokens: 2048,
            max_batch_requests: 16,
            max_queued: 1000,
        },
        Some(Arc::clone(&seen) as Arc<dyn BatchObserver>),
    )
    .unwrap();
    let submit = |text: &str| submit(&batcher, &embedder, text);
    let long: Vec<_> = (0..64)
        .map(|i| {
            submit(&format!(
                "{i} {}",
                "a long input that fills the model ".repeat(60)
            ))
        })
        .collect();
    let gone: Vec<_> = (0..10)
        .map(|i| submit(&format!("a caller that goes away {i}")))
        .collect();
    drop(gone);

    for rx in long {
        assert_eq!(rx.blocking_recv().unwrap().unwrap().len(), 384);
    }
    let started = Instant::now();
    while seen.dropped.load(Ordering::Relaxed) < 10 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let batches = seen.batches.lock().unwrap().clone();
    assert_eq!(
        seen.dropped.load(Ordering::Relaxed),
        10,
        "the 10 inputs whose caller went away must be reported dropped; batches: {batches:?}"
    );
    assert_eq!(
        batches.iter().map(|b| b.0).sum::<usize>(),
        64,
        "only the 64 inputs still awaited may run: {batches:?}"
    );
}
