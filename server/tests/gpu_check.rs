//! The GPU check's dry run: scripts/gpu-check.sh dry-run packs this build's
//! binary as it would travel to a lent GPU machine, unpacks it, and runs
//! tools/gpu-check/check.py on the CPU (`--device candle-cpu`, PyTorch on
//! the CPU from the reference virtualenv, scripts/reference-venv.sh): the
//! models made on the spot, the parity checks against transformers, the
//! speed runs beside it and the JSON they write. So the script a GPU
//! machine runs does not rot while no GPU is lent.

use std::path::Path;
use std::process::Command;

#[test]
fn the_gpu_check_runs_end_to_end_on_the_cpu() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(root.join("scripts/gpu-check.sh"))
        .args([
            "dry-run",
            "--binary",
            env!("CARGO_BIN_EXE_openmodel-server"),
            "--out",
        ])
        .arg(out.path())
        .status()
        .expect("scripts/gpu-check.sh");
    assert!(
        status.success(),
        "scripts/gpu-check.sh dry-run failed (above); it needs the reference virtualenv: scripts/reference-venv.sh"
    );
    let path = out.path().join("gpu-check.json");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(report["mode"], "dry-run");
    assert_eq!(report["ok"], true, "{report:#}");
    for arch in ["llama", "qwen2", "qwen3"] {
        let parity = &report["generation_parity"][arch];
        assert!(
            parity["max_abs_logit_diff"].as_f64().unwrap() <= 1e-3,
            "{arch}: {parity}"
        );
        assert_eq!(parity["greedy_identical"], true, "{arch}: {parity}");
    }
    for (dtype, floor) in [("f32", 0.9999), ("f16", 0.999)] {
        let e = &report["embeddings"][dtype];
        assert!(e["min_cosine"].as_f64().unwrap() >= floor, "{dtype}: {e}");
        for who in ["openmodel", "transformers"] {
            assert!(
                e["tokens_per_s"][who].as_f64().unwrap() > 0.0,
                "{dtype}: {e}"
            );
        }
    }
    for streams in ["1", "4"] {
        let d = &report["decode"][streams];
        assert!(d["openmodel_tokens_per_s"].as_f64().unwrap() > 0.0, "{d}");
        assert!(
            d["transformers_tokens_per_s"].as_f64().unwrap() > 0.0,
            "{d}"
        );
    }
}
