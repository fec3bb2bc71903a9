//! Property tests: parsers of notes, keys, checkpoints, proofs and entries
//! never panic on arbitrary or mutated input, and a mutated signed note or
//! proof never verifies as something else.

use openmodel_ledger::checkpoint::{Checkpoint, SignedCheckpoint};
use openmodel_ledger::hash::leaf_hash;
use openmodel_ledger::note::{Signer, Verifier};
use openmodel_ledger::proof_file::TlogProof;
use openmodel_ledger::tree::{verify_consistency, verify_inclusion};
use proptest::prelude::*;

fn signer() -> Signer {
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
        .parse()
        .unwrap()
}

fn checkpoint() -> Checkpoint {
    Checkpoint {
        origin: "PeterNeumann".into(),
        size: 5,
        root: leaf_hash(b"r"),
        extensions: vec![],
    }
}

fn signed_checkpoint() -> String {
    checkpoint().sign(&signer()).unwrap()
}

/// Replaces, inserts or deletes one character.
fn mutate(text: &str, pos: usize, op: u8, c: char) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let at = pos % (chars.len() + 1);
    match op % 3 {
        0 if at < chars.len() => chars[at] = c,
        1 => chars.insert(at, c),
        _ if at < chars.len() => {
            chars.remove(at);
        }
        _ => chars.push(c),
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn key_parsers_never_panic(s in ".{0,120}") {
        let _ = s.parse::<Verifier>();
        let _ = s.parse::<Signer>();
        let _ = format!("PRIVATE+KEY+{s}").parse::<Signer>();
        let _ = format!("name+c74f20a3+{s}").parse::<Verifier>();
    }

    #[test]
    fn mutated_keys_are_refused_or_identical(pos in 0usize..100, op in 0u8..3, c in any::<char>()) {
        let key = signer().verifier().to_string();
        let m = mutate(&key, pos, op, c);
        if let Ok(v) = m.parse::<Verifier>() {
            // Only mutations that do not change the key itself may parse
            // (e.g. a trailing newline, which key files commonly have).
            prop_assert_eq!(v.to_string(), key);
        }
    }

    #[test]
    fn note_opening_never_panics(s in "(?s).{0,300}") {
        let v = signer().verifier();
        let _ = v.open(&s);
        let _ = Checkpoint::parse(&s);
        let _ = TlogProof::parse(&s);
    }

    #[test]
    fn mutated_signed_notes_never_verify_as_other_text(pos in 0usize..400, op in 0u8..3, c in any::<char>()) {
        let s = signer();
        let note = s.sign("If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n").unwrap();
        let m = mutate(&note, pos, op, c);
        if let Ok(opened) = s.verifier().open(&m) {
            prop_assert!(note.starts_with(&opened.text));
            prop_assert_eq!(opened.text.len(), note.find("\n\n").unwrap() + 1);
        }
    }

    #[test]
    fn mutated_checkpoints_never_verify_with_other_values(pos in 0usize..300, op in 0u8..3, c in any::<char>()) {
        let m = mutate(&signed_checkpoint(), pos, op, c);
        if let Ok(opened) = SignedCheckpoint::open(&m, &signer().verifier()) {
            prop_assert_eq!(opened.checkpoint, checkpoint());
        }
    }

    #[test]
    fn proof_verifiers_never_panic(index in any::<u64>(), size in any::<u64>(), proof in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..70)) {
        let leaf = leaf_hash(b"x");
        let _ = verify_inclusion(index, size, &leaf.0, &proof, &leaf.0);
        let _ = verify_consistency(index, size, &leaf.0, &leaf.0, &proof);
    }

    #[test]
    fn mutated_tlog_proofs_never_panic(pos in 0usize..2000, op in 0u8..3, c in any::<char>()) {
        let p = TlogProof { extra: Some(b"{\"a\":1}".to_vec()), index: 3, path: vec![leaf_hash(b"a"), leaf_hash(b"b")], checkpoint: signed_checkpoint() };
        let m = mutate(&p.encode(), pos, op, c);
        if let Ok(parsed) = TlogProof::parse(&m) {
            let _ = parsed.verify(&signer().verifier(), None);
        }
    }
}
