//! The decoder against transformers, in FP32: tiny random Llama, Qwen2 and
//! Qwen3 checkpoints, made here by tools/reference/tiny_checkpoint.py
//! (plain Python, deterministic from a seed; the files' SHA-256 are pinned
//! in the fixture), give the logits transformers gave
//! (server/tests/fixtures/tiny_generation_reference.json, made by
//! scripts/make-generation-reference.sh) within 1e-4 at the prompt and at
//! each of 32 greedy steps, and the same 32 greedy tokens. Prefill in
//! chunks and decode in a batch with another sequence change nothing. The
//! same weights as a GGUF file laid out as llama.cpp's converter lays them
//! out (`--gguf`: llama.cpp's names, Llama's Q and K rows permuted for its
//! RoPE; the fixture pins its SHA-256 and records that transformers reads
//! it back as the same model) give the same logits through the GGUF path.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use openmodel_server::model::decoder::config::KvDtype;
use openmodel_server::model::decoder::trace::argmax;
use openmodel_server::model::decoder::{Decoder, KvCache, Logits, Step};
use sha2::{Digest, Sha256};

const TOLERANCE: f32 = 1e-4;
/// With keys and values rounded to f16 (11 significant bits) as cached.
const F16_KV_TOLERANCE: f32 = 1e-3;

fn fixture() -> serde_json::Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_generation_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; it is committed, made by scripts/make-generation-reference.sh",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// How a tiny checkpoint is written.
#[derive(Clone, Copy)]
enum Layout {
    /// transformers' folder: config.json and model.safetensors.
    HuggingFace,
    /// One GGUF file, as llama.cpp's converter writes it.
    Gguf,
}

/// Writes the checkpoint of `arch` with `seed` into a new folder, and
/// checks its files' SHA-256s against `expected`.
fn checkpoint(
    arch: &str,
    seed: u64,
    layout: Layout,
    expected: &serde_json::Value,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/reference/tiny_checkpoint.py");
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .args(["--arch", arch, "--seed", &seed.to_string(), "--out"])
        .arg(dir.path());
    if let Layout::Gguf = layout {
        command.arg("--gguf");
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to write the tiny checkpoints: {e}"));
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    for (file, sha) in expected.as_object().unwrap() {
        let bytes = std::fs::read(dir.path().join(file)).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            sha.as_str().unwrap(),
            "{arch}: {file} differs from the one the reference was made from"
        );
    }
    let path = dir.path().to_path_buf();
    (dir, path)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn one(decoder: &Decoder, tokens: &[u32], cache: &mut KvCache) -> Vec<f32> {
    decoder
        .forward(&mut [Step {
            tokens,
            cache,
            logits: Logits::Last,
        }])
        .unwrap()
        .remove(0)
}

#[test]
fn tiny_checkpoints_give_transformers_logits_and_greedy_tokens() {
    check_against_transformers("native", Layout::HuggingFace, TOLERANCE, |path| {
        Decoder::load(path).unwrap()
    });
}

/// The GGUF path of each architecture (llama.cpp's names, Llama's permuted
/// Q and K, Qwen2's biases, Qwen3's Q/K norms), on our kernels and on
/// candle's.
#[test]
fn tiny_gguf_files_give_transformers_logits_and_greedy_tokens() {
    check_against_transformers("native, GGUF", Layout::Gguf, TOLERANCE, |path| {
        Decoder::load(path).unwrap()
    });
    check_against_transformers("candle-cpu f32, GGUF", Layout::Gguf, TOLERANCE, |path| {
        Decoder::load_on(path, &Device::Cpu, DType::F32).unwrap()
    });
}

/// With the KV cache in f16 (`--kv-cache-dtype f16`), on our kernels from
/// both file formats: each key and value rounded to f16 once moved the
/// logits by at most 4e-4 here (measured; the bound is 1e-3), and the
/// greedy tokens stay the same. A decoder on a candle device refuses it.
#[test]
fn an_f16_kv_cache_stays_within_rounding_of_transformers() {
    let half = |path: &Path| {
        let mut decoder = Decoder::load(path).unwrap();
        decoder.set_kv_dtype(KvDtype::F16).unwrap();
        decoder
    };
    check_against_transformers(
        "native, f16 KV",
        Layout::HuggingFace,
        F16_KV_TOLERANCE,
        half,
    );
    check_against_transformers("native, GGUF, f16 KV", Layout::Gguf, F16_KV_TOLERANCE, half);
    let fixture = fixture();
    let (arch, reference) = fixture["archs"].as_object().unwrap().iter().next().unwrap();
    let seed = reference["seed"].as_u64().unwrap();
    let (_dir, path) = checkpoint(arch, seed, Layout::HuggingFace, &reference["files_sha256"]);
    let mut on_candle = Decoder::load_on(&path, &Device::Cpu, DType::F32).unwrap();
    let refused = on_candle
        .set_kv_dtype(KvDtype::F16)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("--kv-cache-dtype f16"), "{refused}");
    on_candle.set_kv_dtype(KvDtype::F32).unwrap();
}

/// The decoder on a candle device (the code `--device cuda` runs), here on
/// candle's CPU kernels: the same references, the same tolerance.
#[test]
fn on_a_candle_device_tiny_checkpoints_give_transformers_logits_and_greedy_tokens() {
    check_against_transformers("candle-cpu f32", Layout::HuggingFace, TOLERANCE, |path| {
        Decoder::load_on(path, &Device::Cpu, DType::F32).unwrap()
    });
}

/// Prefix caching's premise, on each tiny checkpoint in both layouts: a
/// row's keys and values are the same bit for bit whatever pass computed
/// them, so a sequence whose first 32 positions are copied from another's
/// cache (read there in chunks of 5) gets the logits of computing all 40
/// tokens in one pass, bit for bit, and so does the step after.
#[test]
fn a_copied_prefix_gives_the_same_logits_bit_for_bit() {
    let bits = |logits: &[f32]| logits.iter().map(|l| l.to_bits()).collect::<Vec<_>>();
    let fixture = fixture();
    for (arch, reference) in fixture["archs"].as_object().unwrap() {
        let seed = reference["seed"].as_u64().unwrap();
        for (layout, files) in [
            (Layout::HuggingFace, "files_sha256"),
            (Layout::Gguf, "gguf_sha256"),
        ] {
            let (_dir, path) = checkpoint(arch, seed, layout, &reference[files]);
            let decoder = Decoder::load(&path).unwrap();
            let mut tokens = ids(&reference["prompt"]);
            tokens.extend(ids(&reference["greedy_tokens"]));
            assert_eq!(tokens.len(), 40);
            let mut donor = KvCache::new(decoder.config(), 64);
            for chunk in tokens[..36].chunks(5) {
                one(&decoder, chunk, &mut donor);
            }
            let mut computed = KvCache::new(decoder.config(), 64);
            let whole = one(&decoder, &tokens, &mut computed);
            let mut copied = KvCache::new(decoder.config(), 64);
            copied.copy_prefix(&donor, 32).unwrap();
            let rest = one(&decoder, &tokens[32..], &mut copied);
            assert!(bits(&whole) == bits(&rest), "{arch} ({files}): prompt");
            let next = [argmax(&whole)];
            assert!(
                bits(&one(&decoder, &next, &mut computed))
                    == bits(&one(&decoder, &next, &mut copied)),
                "{arch} ({files}): the step after"
            );
        }
    }
}

fn check_against_transformers(
    label: &str,
    layout: Layout,
    tolerance: f32,
    load: impl Fn(&Path) -> Decoder,
) {
    let fixture = fixture();
    for (arch, reference) in fixture["archs"].as_object().unwrap() {
        let seed = reference["seed"].as_u64().unwrap();
        let files = match layout {
            Layout::HuggingFace => &reference["files_sha256"],
            Layout::Gguf => &reference["gguf_sha256"],
        };
        let (_dir, path) = checkpoint(arch, seed, layout, files);
        let arch = &format!("{arch} ({label})");
        let decoder = load(&path);
        let prompt = ids(&reference["prompt"]);
        let greedy = ids(&reference["greedy_tokens"]);
        let rows: Vec<Vec<f32>> = reference["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let mut cache = KvCache::new(decoder.config(), 64);
        let mut logits = one(&decoder, &prompt, &mut cache);
        let mut worst = 0f32;
        for (step, expected_token) in greedy.iter().enumerate() {
            let diff = max_diff(&logits, &rows[step]);
            worst = worst.max(diff);
            assert!(
                diff <= tolerance,
                "{arch}: logits at step {step} differ by {diff}"
            );
            let token = argmax(&logits);
            assert_eq!(token, *expected_token, "{arch}: greedy token {step}");
            logits = one(&decoder, &[token], &mut cache);
        }
        let diff = max_diff(&logits, &rows[greedy.len()]);
        assert!(diff <= tolerance, "{arch}: last logits differ by {diff}");
        eprintln!(
            "{arch}: 33 rows of logits within {worst:e} of transformers, 32 greedy tokens equal"
        );

        // Prefill in chunks of 3, and decode beside another sequence.
        let mut chunked = KvCache::new(decoder.config(), 64);
        let mut last = Vec::new();
        for chunk in prompt.chunks(3) {
            last = one(&decoder, chunk, &mut chunked);
        }
        assert!(
            max_diff(&last, &rows[0]) <= tolerance,
            "{arch}: chunked prefill"
        );
        let mut other = KvCache::new(decoder.config(), 64);
        one(&decoder, &prompt[..5], &mut other);
        let both = decoder
            .forward(&mut [
                Step {
                    tokens: &greedy[..1],
                    cache: &mut chunked,
                    logits: Logits::Last,
                },
                Step {
                    tokens: &[7, 8],
                    cache: &mut other,
                    logits: Logits::All,
                },
            ])
            .unwrap();
        assert!(
            max_diff(&both[0], &rows[1]) <= tolerance,
            "{arch}: batched decode"
        );
        assert_eq!(both[1].len(), 2 * decoder.config().vocab);
    }
}

#[test]
fn a_cache_refuses_tokens_past_its_room_and_ids_past_the_vocabulary() {
    let fixture = fixture();
    let reference = &fixture["archs"]["llama"];
    let (_dir, path) = checkpoint("llama", 7, Layout::HuggingFace, &reference["files_sha256"]);
    let decoder = Decoder::load(&path).unwrap();
    let mut cache = KvCache::new(decoder.config(), 4);
    let e = decoder
        .forward(&mut [Step {
            tokens: &[1, 2, 3, 4, 5],
            cache: &mut cache,
            logits: Logits::Last,
        }])
        .unwrap_err();
    assert!(e.to_string().contains("exceed"), "{e}");
    let e = decoder
        .forward(&mut [Step {
            tokens: &[256],
            cache: &mut cache,
            logits: Logits::Last,
        }])
        .unwrap_err();
    assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    assert!(cache.is_empty(), "a refused step left tokens in the cache");
}
