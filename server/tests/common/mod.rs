//! Helpers shared by the server's integration tests: the real model, the
//! sentence-transformers reference fixture, and the real server binary
//! ([`server`]).

#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// The all-MiniLM-L6-v2 folder made by scripts/fetch-model.sh.
pub fn model_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "the all-MiniLM-L6-v2 weights are missing at {}: run scripts/fetch-model.sh",
        dir.display()
    );
    dir
}

/// SmolLM2-135M-Instruct (GGUF Q4_1) made by scripts/fetch-smollm2.sh.
pub fn smollm2_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.cache/models-smollm2/SmolLM2-135M-Instruct");
    assert!(
        dir.join("SmolLM2-135M-Instruct.Q4_1.gguf").is_file(),
        "the SmolLM2-135M-Instruct GGUF is missing at {}: run scripts/fetch-smollm2.sh",
        dir.display()
    );
    dir
}

/// The Python of the tritonclient virtualenv made by scripts/client-venv.sh.
pub fn client_python() -> PathBuf {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/venv-client/bin/python");
    assert!(
        py.is_file(),
        "the tritonclient virtualenv is missing: run scripts/client-venv.sh"
    );
    py
}

/// A client script of tests/clients/.
pub fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Path of the reference fixture.
pub fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json")
}

/// The reference fixture (see tests/fixtures/README.md).
pub fn fixture() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_path()).unwrap()).unwrap()
}

/// A fixture vector: base64 of little-endian f32.
pub fn vector(v: &serde_json::Value) -> Vec<f32> {
    B64.decode(v.as_str().unwrap())
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
