//! `openmodel-server serve` against real clients: the unmodified
//! `tritonclient[grpc]` from PyPI (scripts/client-venv.sh), digest refusal at
//! start, and graceful shutdown on SIGTERM.

mod common;

use common::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn client_python() -> PathBuf {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/venv-client/bin/python");
    assert!(
        py.is_file(),
        "the tritonclient virtualenv is missing: run scripts/client-venv.sh"
    );
    py
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn digest() -> String {
    openmodel_server::manifest::Manifest::of_folder(&model_dir())
        .unwrap()
        .digest
}

#[test]
fn tritonclient_gets_correct_embeddings_and_the_digest() {
    let (mut server, port, metrics_port) = start_server(&["--expect-digest", &digest()]);
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json");
    let check = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/tritonclient_check.py");
    let out = Command::new(client_python())
        .arg(check)
        .args([&format!("127.0.0.1:{port}"), "minilm"])
        .arg(fixture)
        .arg(digest())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tritonclient check failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        health(port),
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let metrics = scrape(metrics_port);
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
    let pid = server.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
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

/// Starts `serve` on free ports with extra flags; returns the child, the
/// gRPC port and the metrics port.
fn start_server(extra: &[&str]) -> (std::process::Child, u16, u16) {
    let (port, metrics) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_openmodel-server"))
        .args(["serve", "--model-name", "minilm"])
        .args(["--grpc-listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(extra)
        .arg("--model-dir")
        .arg(model_dir())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    (child, port, metrics)
}

/// GET /metrics.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// grpc.health.v1 status of the whole server ("").
fn health(port: u16) -> i32 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let resp = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        resp.into_inner().status
    })
}

#[test]
fn overload_answers_resource_exhausted() {
    let (mut server, port, _) = start_server(&["--max-concurrent-requests", "2"]);
    let check = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/overload_check.py");
    let out = Command::new(client_python())
        .arg(check)
        .args([&format!("127.0.0.1:{port}"), "minilm"])
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(
        out.status.success(),
        "overload check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_digest_mismatch_refuses_to_start() {
    let wrong = format!("sha256:{}", "0".repeat(64));
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
    assert!(
        err.contains(&wrong) && err.contains(&digest()) && err.contains("refusing to serve"),
        "{err}"
    );
}
