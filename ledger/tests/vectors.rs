//! Known-answer tests against the shared test vectors:
//! - every inclusion and consistency vector of transparency-dev/merkle
//!   (`../shared/testdata/merkle-vectors/testdata`), negative cases included;
//! - Go's `sumdb/note` known answer, byte for byte
//!   (`../shared/testdata/signed-note/go-sumdb-note-kat.json`).
//!
//! The vectors are not in this repository. Set `OPENMODEL_TESTDATA` to the
//! folder holding them if it is not `../shared/testdata` beside the checkout;
//! without them these tests fail and say so.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openmodel_ledger::note::{Signer, Verifier};
use openmodel_ledger::tree::{verify_consistency, verify_inclusion};
use serde_json::Value;

fn testdata() -> PathBuf {
    let dir = std::env::var_os("OPENMODEL_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata"));
    assert!(
        dir.join("merkle-vectors").is_dir(),
        "test vectors not found at {}: they live in the shared folder beside the checkout \
         (../shared/testdata); set OPENMODEL_TESTDATA to their location",
        dir.display()
    );
    dir
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

fn proof(v: &Value) -> Vec<Vec<u8>> {
    // `null` in a few vectors means an empty proof.
    v.as_array()
        .map_or_else(Vec::new, |a| a.iter().map(b64).collect())
}

fn run_vectors(kind: &str, check: impl Fn(&Value) -> bool) -> usize {
    let mut files = Vec::new();
    json_files(
        &testdata().join("merkle-vectors/testdata").join(kind),
        &mut files,
    );
    files.sort();
    let mut failures = Vec::new();
    for f in &files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let verified = check(&v);
        if verified == v["wantErr"].as_bool().unwrap() {
            failures.push(format!(
                "{} ({}): verified={verified}",
                f.display(),
                v["desc"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors disagree:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    files.len()
}

#[test]
fn every_inclusion_vector() {
    let n = run_vectors("inclusion", |v| {
        verify_inclusion(
            v["leafIdx"].as_u64().unwrap(),
            v["treeSize"].as_u64().unwrap(),
            &b64(&v["leafHash"]),
            &proof(&v["proof"]),
            &b64(&v["root"]),
        )
        .is_ok()
    });
    assert!(n > 50, "only {n} inclusion vectors found");
}

#[test]
fn every_consistency_vector() {
    let n = run_vectors("consistency", |v| {
        verify_consistency(
            v["size1"].as_u64().unwrap(),
            v["size2"].as_u64().unwrap(),
            &b64(&v["root1"]),
            &b64(&v["root2"]),
            &proof(&v["proof"]),
        )
        .is_ok()
    });
    assert!(n > 50, "only {n} consistency vectors found");
}

#[test]
fn go_sumdb_note_known_answer() {
    let kat: Value = serde_json::from_str(
        &std::fs::read_to_string(testdata().join("signed-note/go-sumdb-note-kat.json")).unwrap(),
    )
    .unwrap();
    let signer: Signer = kat["signer_key"].as_str().unwrap().parse().unwrap();
    let verifier: Verifier = kat["verifier_key"].as_str().unwrap().parse().unwrap();
    assert_eq!(signer.to_string(), kat["signer_key"].as_str().unwrap());
    assert_eq!(verifier.to_string(), kat["verifier_key"].as_str().unwrap());
    assert_eq!(signer.verifier(), verifier);
    let signed = signer.sign(kat["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        signed,
        kat["signed_note"].as_str().unwrap(),
        "signed note differs from Go's"
    );
    assert_eq!(
        verifier.open(&signed).unwrap().text,
        kat["text"].as_str().unwrap()
    );
    for key in kat["other_verifier_keys_that_must_parse"]
        .as_array()
        .unwrap()
    {
        let key = key.as_str().unwrap();
        let v: Verifier = key.parse().unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(v.to_string(), key);
        assert!(matches!(
            v.open(&signed),
            Err(openmodel_ledger::Error::BadSignature(_))
        ));
    }
}
