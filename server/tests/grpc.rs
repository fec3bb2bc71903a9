//! `openmodel-server serve` against real clients: the unmodified
//! `tritonclient[grpc]` from PyPI (scripts/client-venv.sh), digest refusal at
//! start, and graceful shutdown on SIGTERM.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn model_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "run scripts/fetch-model.sh to get the model"
    );
    dir
}

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
    let (mut server, port) = start_server(&["--expect-digest", &digest()]);
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

/// Starts `serve` on a free port with extra flags; returns the child and port.
fn start_server(extra: &[&str]) -> (std::process::Child, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_openmodel-server"))
        .args([
            "serve",
            "--model-name",
            "minilm",
            "--grpc-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
        .arg("--model-dir")
        .arg(model_dir())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    (child, port)
}

#[test]
fn overload_answers_resource_exhausted() {
    let (mut server, port) = start_server(&["--max-concurrent-requests", "2"]);
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
