//! The server against real clients: the unmodified `tritonclient[grpc]`
//! from PyPI (scripts/client-venv.sh; it also reads the digest and the
//! ledger index from the response) and overload, on the binary; digest
//! refusal at start and graceful shutdown on SIGTERM, on the binary; a
//! graceful shutdown in-process (requests in flight finish, later ones are
//! refused); clients that give up (their inputs are dropped before they
//! cost model time), in-process.

mod common;

use common::server::*;
use common::*;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openmodel_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use openmodel_proto::inference::infer_parameter::ParameterChoice;
use openmodel_server::manifest::Version;

#[test]
fn tritonclient_gets_correct_embeddings_and_the_digest() {
    let mut server = Binary::start(&["--expect-digest", &digest(), "--ledger-index", "7"]);
    let port = server.port;
    let fixture = fixture_path();
    let check = client_script("tritonclient_check.py");
    let out = Command::new(client_python())
        .arg(check)
        .args([&format!("127.0.0.1:{port}"), MODEL])
        .arg(fixture)
        .arg(digest())
        .arg("7")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tritonclient check failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        block_on(health(&server.url())),
        Ok(tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    );
    let metrics = block_on(server.scrape());
    for needle in [
        "openmodel_requests_total{outcome=\"success\"}",
        "openmodel_requests_total{outcome=\"invalid_argument\"}",
        "openmodel_requests_total{outcome=\"not_found\"}",
        "openmodel_batch_tokens_bucket",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }
    // Graceful shutdown: SIGTERM, then a clean exit.
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        out.status.success(),
        "tritonclient check failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    assert!(
        status.success(),
        "server exited with {status} after SIGTERM"
    );
}

/// Runs `f` to completion on a runtime of its own.
fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn overload_answers_resource_exhausted() {
    let server = Binary::start(&["--max-concurrent-requests", "2"]);
    let check = client_script("overload_check.py");
    let out = Command::new(client_python())
        .arg(check)
        .args([&format!("127.0.0.1:{}", server.port), MODEL])
        .output()
        .unwrap();
    drop(server);
    assert!(
        out.status.success(),
        "overload check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_digest_mismatch_refuses_to_start_in_either_version() {
    for (version, prefix) in [
        (Version::V2, "sha256-manifest-v2:"),
        (Version::V1, "sha256:"),
    ] {
        let wrong = format!("{prefix}{}", "0".repeat(64));
        let out = Command::new(env!("CARGO_BIN_EXE_openmodel-server"))
            .args([
                "serve",
                "--grpc-listen",
                "127.0.0.1:0",
                "--expect-digest",
                &wrong,
            ])
            .arg("--model-dir")
            .arg(model_dir())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        // Checked by the rule of the expected version, so it names the
        // folder's digest in that version.
        assert!(
            err.contains(&wrong)
                && err.contains(&format!("got {}", digest_in(version)))
                && err.contains("refusing to serve"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn answers_name_the_weights_in_the_version_the_expectation_pins() {
    let v1 = digest_in(Version::V1);
    let server = InProcess::start(|c| c.expect_digest = Some(v1.clone())).await;
    let mut client = server.ready_client().await;
    let answer = client
        .model_infer(infer_request(text_input(&[b"pinned before v2"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.parameters["model_digest"].parameter_choice,
        Some(ParameterChoice::StringParam(v1)),
        "a model pinned by its v1 digest is served and named by it, as the ledger records it"
    );
}

/// Deadlines of the successive bursts of requests that give up: the first
/// is the realistic one; longer ones make sure the texts reach the queue
/// before their client goes, even on a machine slowed down by other work.
const GIVE_UP_AFTER_MS: [u64; 5] = [5, 20, 50, 100, 200];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_whose_client_gave_up_are_dropped_before_inference() {
    // Small batches (8 texts of 256 tokens) so the queue turns over quickly.
    let server = InProcess::start(|c| c.limits.max_batch_tokens = 2048).await;
    let client = server.ready_client().await;

    // Keep the model busy: three clients sending 8 long texts each, again
    // and again, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|c| {
            let mut client = client.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let texts: Vec<Vec<u8>> = (0..8)
                    .map(|i| {
                        format!("{c} {i} {}", "embedding servers batch texts ".repeat(80))
                            .into_bytes()
                    })
                    .collect();
                let texts: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
                while !stop.load(Ordering::Relaxed) {
                    let mut req = infer_request(text_input(&texts));
                    req.parameters
                        .insert("truncate".into(), param(ParameterChoice::BoolParam(true)));
                    client
                        .model_infer(req)
                        .await
                        .expect("a request keeping the model busy failed");
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut outcomes = Vec::new();
    let mut dropped = 0.0;
    for ms in GIVE_UP_AFTER_MS {
        let deadline = Duration::from_millis(ms);
        let burst: Vec<_> = (0..16)
            .map(|i| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    let text = format!("a client that gives up after {ms} ms ({i})");
                    let mut req = tonic::Request::new(infer_request(text_input(&[
                        text.as_bytes(),
                        b"and its second text",
                    ])));
                    // The deadline travels as grpc-timeout, which the server
                    // enforces; the client stops waiting at the same time.
                    req.set_timeout(deadline);
                    match tokio::time::timeout(deadline, client.model_infer(req)).await {
                        Err(_) => "client stopped waiting".to_owned(),
                        Ok(Ok(_)) => "answered in time".to_owned(),
                        Ok(Err(status)) => format!("{:?}", status.code()),
                    }
                })
            })
            .collect();
        for request in burst {
            outcomes.push(format!("{ms} ms: {}", request.await.unwrap()));
        }
        // The batcher notices when it next looks at its queue, after the
        // batch in progress.
        let until = Instant::now() + Duration::from_secs(30);
        while dropped == 0.0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
            dropped = metric(&server.scrape().await, "openmodel_dropped_inputs_total");
        }
        if dropped > 0.0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(
        dropped > 0.0,
        "openmodel_dropped_inputs_total stayed 0 after bursts of 16 requests giving up after \
         {GIVE_UP_AFTER_MS:?} ms while the model was busy: inputs whose client went away were \
         not dropped. Outcomes: {outcomes:?}"
    );
    eprintln!("{dropped} inputs dropped; outcomes of the requests that gave up: {outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_then_stops() {
    let mut server = InProcess::start(|_| {}).await;
    let client = server.ready_client().await;
    // Long texts, so that the request is still in flight when shutdown begins.
    let texts: Vec<String> = (0..32)
        .map(|i| format!("{i} {}", "a text that keeps the model busy ".repeat(30)))
        .collect();
    let in_flight = {
        let mut client = client.clone();
        tokio::spawn(async move {
            let texts: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
            let mut req = infer_request(text_input(&texts));
            req.parameters
                .insert("truncate".into(), param(ParameterChoice::BoolParam(true)));
            client.model_infer(req).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.begin_shutdown();
    let answer = in_flight.await.unwrap();
    let answer = answer.expect("a request in flight when shutdown began must be answered");
    assert_eq!(answer.into_inner().outputs[0].shape, vec![32, 384]);
    tokio::time::timeout(Duration::from_secs(20), server.stopped())
        .await
        .expect("the server did not stop within 20 s of the shutdown")
        .expect("the server stopped on an error");
    assert!(
        GrpcInferenceServiceClient::connect(server.url())
            .await
            .is_err(),
        "the gRPC port still accepts connections after the server stopped"
    );
}
