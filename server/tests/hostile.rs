//! The real `openmodel-server serve` binary against hostile clients, with
//! real gRPC clients (tonic, and the unmodified tritonclient[grpc] from
//! scripts/client-venv.sh):
//!
//! - a request of 1,000,000 one-character texts, and one of a 50 MB text,
//!   in both encodings of BYTES, are refused with INVALID_ARGUMENT naming
//!   the limit and its flag, within seconds;
//! - 64 clients sending large texts at once leave the health check SERVING
//!   throughout and the process's memory bounded;
//! - requests beyond the queue's room answer RESOURCE_EXHAUSTED.

mod common;

use common::server::*;
use common::*;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openmodel_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use openmodel_proto::inference::infer_parameter::ParameterChoice;
use openmodel_proto::inference::{ModelInferRequest, ModelInferResponse};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

/// How fast an oversized request must be refused, sending included.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

/// Peak resident memory allowed while 64 clients send large texts. The
/// server holds the model (130 MiB resident once ready), the activations of
/// a full batch (--max-batch-tokens 16384 tokens through 384-wide layers
/// and a 1536-wide feed-forward: most of the rest), 64 requests of
/// 2 × 60 kB decoded and copied, the tokenizations of
/// --tokenization-workers requests, and the token ids of the queue:
/// measured 312 MiB at the peak on x86-64 with 2 compute threads (442 MiB
/// with 4 texts a request). Without
/// the limits, one request of a 50 MB text alone would hold its tokenizer
/// output, several hundred bytes per token.
const RSS_BOUND_KIB: u64 = 768 * 1024;

/// A multi-threaded runtime for the clients.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// `raw_input_contents` of `count` texts, each `text`, under `shape`.
fn raw_request(shape: i64, text: &[u8], count: usize) -> ModelInferRequest {
    let mut raw = Vec::with_capacity(count * (4 + text.len()));
    for _ in 0..count {
        raw.extend_from_slice(&(text.len() as u32).to_le_bytes());
        raw.extend_from_slice(text);
    }
    let mut input = text_input(&[]);
    input.shape = vec![shape];
    input.contents = None;
    ModelInferRequest {
        raw_input_contents: vec![raw],
        ..infer_request(input)
    }
}

/// `count` copies of `text` in `contents.bytes_contents`.
fn bytes_request(text: &[u8], count: usize) -> ModelInferRequest {
    infer_request(text_input(&vec![text; count]))
}

fn truncated(mut request: ModelInferRequest) -> ModelInferRequest {
    request
        .parameters
        .insert("truncate".into(), param(ParameterChoice::BoolParam(true)));
    request
}

/// Sends `request`; it must be refused with `code` and a message holding
/// every needle, within [`REFUSED_WITHIN`]. Returns how long it took.
async fn refused(
    client: &mut GrpcInferenceServiceClient<Channel>,
    what: &str,
    request: ModelInferRequest,
    code: Code,
    needles: &[&str],
) -> Duration {
    let started = Instant::now();
    let answer = client.model_infer(request).await;
    let took = started.elapsed();
    let status = match answer {
        Ok(_) => panic!("{what}: answered instead of refused"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{what}: {status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "{what}: {needle:?} missing from {:?}",
            status.message()
        );
    }
    assert!(took < REFUSED_WITHIN, "{what}: refused only after {took:?}");
    eprintln!("{what}: {code:?} in {took:?}: {}", status.message());
    took
}

/// A client that sends and accepts messages as large as the server does.
async fn big_client(server: &mut Binary) -> GrpcInferenceServiceClient<Channel> {
    server
        .ready_client()
        .await
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20)
}

#[test]
fn oversized_requests_are_refused_fast_naming_the_limit() {
    let mut server = Binary::start(&[]);
    runtime().block_on(async {
        let mut client = big_client(&mut server).await;
        let million = 1_000_000;
        let fifty_mb = vec![b'x'; 50_000_000];
        let many = [
            "1000000 texts",
            "limit of 32 texts per request",
            "--max-client-batch-size",
        ];
        let long = [
            "text[0] is 50000000 bytes",
            "limit of 65536 bytes per text",
            "--max-text-bytes",
        ];
        let cases: Vec<(&str, ModelInferRequest, &[&str])> = vec![
            (
                "1,000,000 one-character texts in raw_input_contents",
                raw_request(million as i64, b"a", million),
                &many,
            ),
            (
                "1,000,000 one-character texts in bytes_contents",
                bytes_request(b"a", million),
                &many,
            ),
            (
                "1,000,000 one-character texts under a shape of [1]",
                raw_request(1, b"a", million),
                &["shape says 1 texts but 1000000 were sent"],
            ),
            (
                "33 texts",
                bytes_request(b"a", 33),
                &["33 texts", "limit of 32 texts per request"],
            ),
            (
                "one 50 MB text in raw_input_contents",
                raw_request(1, &fifty_mb, 1),
                &long,
            ),
            (
                "one 50 MB text in bytes_contents, with truncate",
                truncated(bytes_request(&fifty_mb, 1)),
                &long,
            ),
            (
                "a text of 65537 bytes",
                truncated(bytes_request(&vec![b'x'; 65_537], 1)),
                &["text[0] is 65537 bytes", "--max-text-bytes"],
            ),
        ];
        for (what, request, needles) in cases {
            refused(&mut client, what, request, Code::InvalidArgument, needles).await;
        }
        // The limits are inclusive, and the server still serves.
        let at_limits = truncated(bytes_request(
            &"word ".repeat(13_107).into_bytes()[..65_535],
            32,
        ));
        let answer = client
            .model_infer(at_limits)
            .await
            .expect("32 texts of 65,535 bytes are within the limits");
        assert_eq!(answer.into_inner().outputs[0].shape, vec![32, 384]);
    });

    // The same with the unmodified tritonclient, as the issue reproduced it.
    let out = Command::new(client_python())
        .arg(client_script("hostile_check.py"))
        .arg(format!("127.0.0.1:{}", server.port))
        .arg(MODEL)
        .arg(REFUSED_WITHIN.as_secs().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tritonclient hostile check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

/// `field` of /proc/PID/status (`VmRSS`, `VmHWM`), in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status (Linux only): {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
}

/// A text of about `bytes` bytes (never more), different for each `seed`:
/// words, accents and CJK, so the tokenizer has real work.
fn large_text(seed: usize, bytes: usize) -> String {
    let mut text = format!("request {seed}: ");
    let words = [
        "embedding",
        "servers",
        "tokenize",
        "naïve",
        "café",
        "東京",
        "Zürich",
        "texts",
        "batching",
        "under",
        "load",
        "déjà",
        "vu",
    ];
    let mut i = seed;
    loop {
        let word = words[i % words.len()];
        if text.len() + word.len() + 1 > bytes {
            return text;
        }
        text.push_str(word);
        text.push(' ');
        i = i.wrapping_mul(31).wrapping_add(7);
    }
}

/// Checks the health of the server at `url` every 100 ms until `stop`;
/// returns every answer (or failure) with how long it took.
fn poll_health(url: String, stop: Arc<AtomicBool>) -> Vec<(Duration, Result<i32, String>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut answers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let answer = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), health(&url))
                .await
                .unwrap_or_else(|_| Err("no answer within 2 s".into()))
        });
        answers.push((started.elapsed(), answer));
        std::thread::sleep(Duration::from_millis(100));
    }
    answers
}

#[test]
fn large_texts_from_64_clients_leave_health_serving_and_memory_bounded() {
    let mut server = Binary::start(&[]);
    let pid = server.child.id();
    let url = server.url();
    runtime().block_on(async {
        let client = big_client(&mut server).await;
        let ready_kib = proc_status_kib(pid, "VmRSS");
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (url, stop) = (url.clone(), Arc::clone(&stop));
            std::thread::spawn(move || poll_health(url, stop))
        };
        let sampler = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut peak = 0;
                while !stop.load(Ordering::Relaxed) {
                    peak = peak.max(proc_status_kib(pid, "VmRSS"));
                    std::thread::sleep(Duration::from_millis(20));
                }
                peak
            })
        };

        let started = Instant::now();
        let requests: Vec<_> = (0..64)
            .map(|r| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    let texts: Vec<String> = (0..2).map(|t| large_text(r * 2 + t, 60_000)).collect();
                    let texts: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
                    let answer: Result<tonic::Response<ModelInferResponse>, _> =
                        client.model_infer(truncated(infer_request(text_input(&texts)))).await;
                    answer.map(|a| a.into_inner().outputs[0].shape.clone())
                })
            })
            .collect();
        let mut failures = Vec::new();
        for (i, request) in requests.into_iter().enumerate() {
            match request.await.unwrap() {
                Ok(shape) => assert_eq!(shape, vec![2, 384]),
                Err(status) => failures.push(format!("request {i}: {status:?}")),
            }
        }
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let checks = poller.join().unwrap();
        let peak_kib = sampler.join().unwrap();
        let hwm_kib = proc_status_kib(pid, "VmHWM");

        assert!(failures.is_empty(), "{failures:?}");
        let bad: Vec<_> = checks
            .iter()
            .filter(|(_, a)| *a != Ok(ServingStatus::Serving as i32))
            .collect();
        let slowest = checks.iter().map(|(t, _)| *t).max().unwrap_or_default();
        assert!(
            checks.len() >= 5 && bad.is_empty(),
            "{} of {} health checks during the load were not SERVING: {bad:?}",
            bad.len(),
            checks.len()
        );
        assert!(
            peak_kib < RSS_BOUND_KIB && hwm_kib < RSS_BOUND_KIB,
            "resident memory peaked at {} MiB (sampled) / {} MiB (VmHWM), over the bound of {} MiB",
            peak_kib / 1024,
            hwm_kib / 1024,
            RSS_BOUND_KIB / 1024
        );
        eprintln!(
            "64 requests of 2 × 60 kB in {took:?}; {} health checks, all SERVING, slowest {slowest:?}; \
             RSS {} MiB when ready, peak {} MiB sampled, VmHWM {} MiB",
            checks.len(),
            ready_kib / 1024,
            peak_kib / 1024,
            hwm_kib / 1024
        );
    });
}

#[test]
fn requests_beyond_the_queue_s_room_answer_resource_exhausted() {
    // Room for one request's texts: while one request is queued or being
    // tokenized, the others cannot reserve theirs.
    let mut server = Binary::start(&["--max-queued-texts", "32", "--tokenization-workers", "1"]);
    runtime().block_on(async {
        let client = big_client(&mut server).await;
        let requests: Vec<_> = (0..16)
            .map(|r| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    let texts: Vec<String> =
                        (0..32).map(|t| large_text(r * 32 + t, 8_000)).collect();
                    let texts: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
                    client
                        .model_infer(truncated(infer_request(text_input(&texts))))
                        .await
                        .map(drop)
                })
            })
            .collect();
        let (mut served, mut refused) = (0, Vec::new());
        for request in requests {
            match request.await.unwrap() {
                Ok(()) => served += 1,
                Err(status) => refused.push(status),
            }
        }
        assert!(served >= 1, "no request was served: {refused:?}");
        assert!(
            !refused.is_empty(),
            "no request was refused with room for 32 texts"
        );
        for status in &refused {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(
                status.message().contains("batch queue is full")
                    && status.message().contains("--max-queued-texts"),
                "{status:?}"
            );
        }
        eprintln!(
            "{served} served, {} refused: {}",
            refused.len(),
            refused[0].message()
        );
    });
}
