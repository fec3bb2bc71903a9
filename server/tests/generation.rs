//! Text generation end to end: the real binary serving the real
//! SmolLM2-135M-Instruct GGUF (scripts/fetch-smollm2.sh), called by the
//! unmodified tritonclient[grpc] and openai packages
//! (scripts/client-venv.sh; tests/clients/generate_check.py says what they
//! check), and the engine in-process: 16 concurrent greedy requests of
//! mixed lengths give exactly the tokens each gives alone, and prefix
//! caching changes no logit.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::server::Binary;
use common::{client_python, client_script, smollm2_dir};
use openmodel_server::generate::Model;
use openmodel_server::generate::engine::{self, EngineHandle, EngineLimits, Event, Request};
use openmodel_server::generate::params::{GenerationBounds, SamplingParams};
use openmodel_server::generate::prefix::{self, CacheSalt};
use openmodel_server::generate::sampler::Sampler;
use openmodel_server::manifest::Manifest;
use openmodel_server::metrics::Metrics;
use openmodel_server::model::decoder::config::KvDtype;
use openmodel_server::model::decoder::trace::argmax;
use openmodel_server::model::decoder::{KvCache, Logits, Step};
use tokio::sync::mpsc;

const NAME: &str = "smollm2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_and_openai_stream_and_complete_with_provenance() {
    let dir = smollm2_dir();
    let digest = Manifest::of_folder(&dir).unwrap().digest;
    let mut server = Binary::start_model(
        &dir,
        NAME,
        &[
            "--ledger-index",
            "41",
            "--max-prompt-tokens",
            "128",
            "--threads",
            "2",
        ],
        &[],
    );
    server.ready_client().await;
    let out = Command::new(client_python())
        .arg(client_script("generate_check.py"))
        .arg(format!("127.0.0.1:{}", server.port))
        .arg(format!("http://127.0.0.1:{}", server.http_port))
        .arg(format!("http://127.0.0.1:{}/metrics", server.metrics_port))
        .args([NAME, &digest, "41"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "generate_check.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    eprintln!("the clients saw: {seen}");
    assert!(seen["stream_pieces"].as_u64().unwrap() >= 8, "{seen}");
    let answer = seen["chat_answer"].as_str().unwrap();
    assert!(!answer.trim().is_empty(), "{seen}");
    let salted = &seen["cache_salt_cached_tokens"];
    assert_eq!(
        (salted[0].as_u64(), salted[1].as_u64()),
        (Some(0), Some(0)),
        "{seen}"
    );
    assert!(salted[2].as_u64().unwrap() >= 16, "{seen}");
    assert!(server.is_running());
}

/// An engine on `model`: 16 sequences, chunks of 64 tokens, 1 GiB of KV
/// cache, prefix caching as `prefix_caching` says.
fn start(model: &Arc<Model>, prefix_caching: bool, metrics: Arc<Metrics>) -> EngineHandle {
    engine::start(
        Arc::clone(model),
        EngineLimits {
            max_sequences: 16,
            max_waiting: 64,
            max_batched_tokens: 64,
            kv_cache_bytes: 1 << 30,
            prefix_caching,
        },
        metrics,
    )
    .unwrap()
}

/// Runs `prompts` greedily through one engine without prefix caching, all
/// at once; the text of each.
async fn generate_all(model: &Arc<Model>, prompts: &[Vec<u32>], max_tokens: u32) -> Vec<String> {
    let handle = start(model, false, Metrics::new());
    generate_on(&handle, model, prompts, max_tokens).await
}

/// Runs `prompts` greedily through `handle`'s engine, all at once; the
/// text of each.
async fn generate_on(
    handle: &EngineHandle,
    model: &Model,
    prompts: &[Vec<u32>],
    max_tokens: u32,
) -> Vec<String> {
    generate_salted(handle, model, prompts, max_tokens, None).await
}

/// [`generate_on`] with each request's `cache_salt`.
async fn generate_salted(
    handle: &EngineHandle,
    model: &Model,
    prompts: &[Vec<u32>],
    max_tokens: u32,
    cache_salt: Option<&str>,
) -> Vec<String> {
    let params = SamplingParams {
        temperature: 0.0,
        ignore_eos: true,
        max_tokens: Some(max_tokens),
        ..SamplingParams::default()
    }
    .validate(&GenerationBounds::default())
    .unwrap();
    let mut streams = Vec::new();
    for prompt in prompts {
        let (tx, rx) = mpsc::unbounded_channel();
        handle
            .submit(Request {
                prompt: prompt.clone(),
                params: params.clone(),
                max_tokens,
                sampler: Sampler::with_seed(&params, &model.eos, 0),
                events: tx,
                arrived: std::time::Instant::now(),
                cache_salt: cache_salt.map(|s| CacheSalt::parse(s.into()).unwrap()),
            })
            .unwrap();
        streams.push(rx);
    }
    let mut texts = Vec::new();
    for mut rx in streams {
        let mut text = String::new();
        loop {
            match rx.recv().await.unwrap() {
                Event::Text { text: piece, .. } => text.push_str(&piece),
                Event::Finished { usage, .. } => {
                    assert_eq!(usage.completion_tokens, max_tokens as usize);
                    break;
                }
                Event::Failed(e) => panic!("{e}"),
            }
        }
        texts.push(text);
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_batching_changes_no_greedy_token() {
    let model = Arc::new(Model::load(&smollm2_dir()).unwrap());
    let base = "Once upon a time in a land far away, there lived a curious engineer who";
    let prompts: Vec<Vec<u32>> = (0..16)
        .map(|i| {
            let text = format!(
                "{} {}",
                base.repeat(1 + i % 4),
                ["built", "asked", "wrote", "found"][i % 4]
            );
            model.encode(&text[..text.len() - i]).unwrap()
        })
        .collect();
    let together = generate_all(&model, &prompts, 12).await;
    for (i, prompt) in prompts.iter().enumerate() {
        let alone = generate_all(&model, std::slice::from_ref(prompt), 12).await;
        assert_eq!(together[i], alone[0], "request {i} changed when batched");
    }
}

/// The start of a prompt several requests share (more than 32 tokens).
const SYSTEM: &str = "You are a careful assistant for a team of platform engineers. Answer \
                      in one short sentence, name your sources when you can, and say so \
                      when you do not know. Question: ";

/// Prefix caching changes no logit: a prompt's logits, and those of 8
/// greedy steps after it, are the same bit for bit whether the keys and
/// values of its first tokens were computed in its own pass or copied from
/// another sequence's cache, with the f32 and the f16 cache.
#[test]
fn a_copied_prefix_gives_the_same_logits_bit_for_bit() {
    for dtype in [KvDtype::F32, KvDtype::F16] {
        let mut model = Model::load(&smollm2_dir()).unwrap();
        model.decoder.set_kv_dtype(dtype).unwrap();
        let config = model.decoder.config().clone();
        let encode = |q: &str| model.encode(&format!("{SYSTEM}{q}")).unwrap();
        let (donor_prompt, prompt) = (encode("Why is the sky blue?"), encode("Who wrote Hamlet?"));
        let mut donor = KvCache::new(&config, 64);
        model
            .decoder
            .forward(&mut [Step {
                tokens: &donor_prompt,
                cache: &mut donor,
                logits: Logits::None,
            }])
            .unwrap();
        let shared = prefix::reusable(&prompt, &donor_prompt);
        assert_eq!(shared, 32, "{prompt:?} / {donor_prompt:?}");
        // The prompt from `from` on, then 8 greedy steps: every logit's bits.
        let run = |cache: &mut KvCache, from: usize| {
            let mut bits = Vec::new();
            let mut tokens = prompt[from..].to_vec();
            for _ in 0..9 {
                let logits = model
                    .decoder
                    .forward(&mut [Step {
                        tokens: &tokens,
                        cache: &mut *cache,
                        logits: Logits::Last,
                    }])
                    .unwrap()
                    .remove(0);
                bits.extend(logits.iter().map(|l| l.to_bits()));
                tokens = vec![argmax(&logits)];
            }
            bits
        };
        let mut computed = KvCache::new(&config, 64);
        let mut copied = KvCache::new(&config, 64);
        copied.copy_prefix(&donor, shared).unwrap();
        assert_eq!(copied.len(), shared);
        assert!(
            run(&mut computed, 0) == run(&mut copied, shared),
            "{dtype:?}: a copied prefix changed the logits"
        );
        let mut half_tile = KvCache::new(&config, 64);
        let refused = half_tile.copy_prefix(&donor, 24).unwrap_err();
        assert!(refused.to_string().contains("whole tiles"), "{refused}");
    }
}

/// A counter's value in the metrics' Prometheus text.
fn counter(metrics: &Metrics, name: &str) -> u64 {
    let text = metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} is not in\n{text}"))
        .parse()
        .unwrap()
}

/// Through the engine: requests whose prompts begin with the same system
/// prompt as a finished one's take its first 32 tokens' keys and values,
/// a chat's next turn takes its earlier turn's, the metrics count the
/// tokens queried and shared, and every text is the one generated without
/// prefix caching; so do four requests arriving at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_caching_shares_a_system_prompt_and_a_chat_s_earlier_turn() {
    let model = Arc::new(Model::load(&smollm2_dir()).unwrap());
    let questions = [
        "Why is the sky blue during the day, and why does it turn red and orange when the sun \
         sets in the evening?",
        "What is a Kubernetes operator?",
        "Who wrote Hamlet?",
        "How do tides work?",
    ];
    let texts: Vec<String> = questions.iter().map(|q| format!("{SYSTEM}{q}")).collect();
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| model.encode(t).unwrap()).collect();
    let metrics = Metrics::new();
    let handle = start(&model, true, Arc::clone(&metrics));
    let first = generate_on(&handle, &model, &prompts[..1], 12).await;
    assert_eq!(counter(&metrics, "vllm:prefix_cache_hits_total"), 0);
    // Admitted together, the others find only the finished one's cache.
    let others = generate_on(&handle, &model, &prompts[1..], 12).await;
    let expected: usize = prompts[1..]
        .iter()
        .map(|p| prefix::reusable(p, &prompts[0]))
        .sum();
    assert_eq!(expected, 3 * 32);
    let hits = counter(&metrics, "vllm:prefix_cache_hits_total");
    assert_eq!(hits, expected as u64);
    let queried: usize = prompts.iter().map(Vec::len).sum();
    assert_eq!(
        counter(&metrics, "vllm:prefix_cache_queries_total"),
        queried as u64
    );
    // The next turn of the first chat: its prompt, answer and a question.
    let turn = model
        .encode(&format!("{}{} And why at sunset?", texts[0], first[0]))
        .unwrap();
    let next = generate_on(&handle, &model, std::slice::from_ref(&turn), 12).await;
    let more = counter(&metrics, "vllm:prefix_cache_hits_total") - hits;
    let system_only = prefix::reusable(&turn, &prompts[1]);
    assert!(
        more as usize >= KvCache::shareable(prompts[0].len() - 1) && more as usize > system_only,
        "the next turn shared {more} tokens, the system prompt alone {system_only}"
    );
    let mut all = first;
    all.extend(others);
    all.extend(next);
    let mut every = prompts.clone();
    every.push(turn);
    let plain = generate_all(&model, &every, 12).await;
    assert_eq!(all, plain);
    // A burst on a new engine: nothing is cached when the four are
    // admitted, so each looks again before its first chunk, and those read
    // after the first pass (64 tokens of prompts) share what it read.
    let metrics = Metrics::new();
    let handle = start(&model, true, Arc::clone(&metrics));
    let burst = generate_on(&handle, &model, &prompts, 12).await;
    assert_eq!(burst, plain[..4]);
    let hits = counter(&metrics, "vllm:prefix_cache_hits_total");
    assert!(hits >= 32, "a burst shared {hits} tokens");
}

/// `cache_salt`, as vLLM's: a finished request's prompt is shared only
/// with requests that sent the same salt, and an unsalted one's only with
/// unsalted ones; the texts are the same whatever was shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_salt_shares_a_prompt_only_with_the_same_salt() {
    let model = Arc::new(Model::load(&smollm2_dir()).unwrap());
    let prompt = vec![model.encode(&format!("{SYSTEM}Who wrote Hamlet?")).unwrap()];
    let tiles = KvCache::shareable(prompt[0].len() - 1) as u64;
    assert!(tiles >= 32, "the prompt shares {tiles} tokens");
    let metrics = Metrics::new();
    let handle = start(&model, true, Arc::clone(&metrics));
    let hits = || counter(&metrics, "vllm:prefix_cache_hits_total");
    let mut texts = Vec::new();
    // Each one after the first, with the hits it must find: tenant a's
    // cache is kept, but neither b nor an unsalted request may read it,
    // nor b's; a second "a" reads a's, a second unsalted one the first's.
    for (salt, shared) in [
        (Some("tenant-a"), 0),
        (Some("tenant-b"), 0),
        (None, 0),
        (Some("tenant-a"), tiles),
        (None, tiles),
    ] {
        let before = hits();
        texts.extend(generate_salted(&handle, &model, &prompt, 8, salt).await);
        assert_eq!(hits() - before, shared, "salt {salt:?}");
    }
    assert!(texts.iter().all(|t| *t == texts[0]), "{texts:?}");
}

/// `--kv-cache-dtype f16`: half the bytes per cached token, the same
/// prompts through the batched engine begin the same greedy text as with
/// the f32 cache, and batching still changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_f16_kv_cache_takes_half_the_bytes_and_keeps_the_greedy_text() {
    let full = Arc::new(Model::load(&smollm2_dir()).unwrap());
    let mut half = Model::load(&smollm2_dir()).unwrap();
    half.decoder.set_kv_dtype(KvDtype::F16).unwrap();
    let half = Arc::new(half);
    assert_eq!(
        2 * half.decoder.config().kv_bytes_per_token(),
        full.decoder.config().kv_bytes_per_token()
    );
    let prompts: Vec<Vec<u32>> = [
        "The capital of France is",
        "def fibonacci(n):",
        "Write a haiku about the sea.",
        "Kubernetes operators reconcile",
    ]
    .iter()
    .map(|p| full.encode(p).unwrap())
    .collect();
    let (f32_texts, f16_texts) = (
        generate_all(&full, &prompts, 16).await,
        generate_all(&half, &prompts, 16).await,
    );
    // Rounding each key and value once moves near-ties: measured, 2 of the
    // 4 texts are the same for all 16 tokens and the other two part after
    // "Paris.\n\nThe " and after a dozen words (llama.cpp's own f16 and f32
    // caches part as often, docs/generation.md).
    let same = f32_texts
        .iter()
        .zip(&f16_texts)
        .filter(|(a, b)| a == b)
        .count();
    eprintln!(
        "f16 KV cache: {same} of {} greedy texts as with f32",
        prompts.len()
    );
    assert!(same >= 2, "{f32_texts:?}\n{f16_texts:?}");
    for (a, b) in f32_texts.iter().zip(&f16_texts) {
        let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
        assert!(
            common >= 10,
            "parted after {common} characters: {a:?} / {b:?}"
        );
    }
    let alone = generate_all(&half, &prompts[1..2], 16).await;
    assert_eq!(
        alone[0], f16_texts[1],
        "batching changed an f16 cache's tokens"
    );
}

/// The real binary refuses an f16 KV cache on a candle device, saying why.
#[test]
fn a_candle_device_refuses_an_f16_kv_cache() {
    let out = Command::new(env!("CARGO_BIN_EXE_openmodel-server"))
        .args(["serve", "--model-dir"])
        .arg(smollm2_dir())
        .args(["--device", "candle-cpu", "--kv-cache-dtype", "f16"])
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--kv-cache-dtype f16"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_openmodel-server"))
        .args(["serve", "--kv-cache-dtype", "f8"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("f16"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_kv_budget_makes_requests_wait_and_one_too_big_is_refused() {
    let model = Arc::new(Model::load(&smollm2_dir()).unwrap());
    let per_token = model.decoder.config().kv_bytes_per_token();
    // Room for one sequence of 40 tokens at a time.
    let handle = engine::start(
        Arc::clone(&model),
        EngineLimits {
            max_sequences: 8,
            max_waiting: 8,
            max_batched_tokens: 64,
            kv_cache_bytes: 40 * per_token,
            prefix_caching: true,
        },
        Metrics::new(),
    )
    .unwrap();
    let params = SamplingParams {
        temperature: 0.0,
        ignore_eos: true,
        ..SamplingParams::default()
    }
    .validate(&GenerationBounds::default())
    .unwrap();
    let prompt = model
        .encode("Three requests share one sequence's room:")
        .unwrap();
    let request = |max_tokens: u32, tx| Request {
        prompt: prompt.clone(),
        params: params.clone(),
        max_tokens,
        sampler: Sampler::with_seed(&params, &model.eos, 0),
        events: tx,
        arrived: std::time::Instant::now(),
        cache_salt: None,
    };
    let too_big = handle
        .submit(request(40, mpsc::unbounded_channel().0))
        .unwrap_err();
    assert!(
        too_big.to_string().contains("--kv-cache-bytes"),
        "{too_big}"
    );
    let mut receivers = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = mpsc::unbounded_channel();
        handle.submit(request(8, tx)).unwrap();
        receivers.push(rx);
    }
    for mut rx in receivers {
        loop {
            match rx.recv().await.unwrap() {
                Event::Text { .. } => {}
                Event::Finished { usage, .. } => {
                    assert_eq!(usage.completion_tokens, 8);
                    break;
                }
                Event::Failed(e) => panic!("{e}"),
            }
        }
    }
}
