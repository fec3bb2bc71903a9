//! Backup and restore of a ledger file as docs/install.md describes them:
//! a copy of the stopped service's files, and a crash-consistent snapshot
//! taken while it runs. A restored copy verifies in full, holds every
//! acknowledged entry, keeps growing consistently with the checkpoints
//! clients saw before the backup, and refuses another key.

mod common;

use std::path::Path;

use common::*;
use openmodel_ledger::note::Signer;
use openmodel_ledger::store::OpenCheck;
use openmodel_ledger::tree::verify_consistency;
use openmodel_ledger::{Error, Ledger};

/// Copies the ledger's files (the database and, when present, its WAL and
/// shared-memory index) from `from` to `to`, as `kubectl cp` of the volume
/// or a volume snapshot would.
fn copy_files(from: &Path, to: &Path) -> usize {
    std::fs::create_dir_all(to).unwrap();
    let mut copied = 0;
    for suffix in ["", "-wal", "-shm"] {
        let source = from.join(format!("ledger.sqlite{suffix}"));
        if source.exists() {
            std::fs::copy(&source, to.join(format!("ledger.sqlite{suffix}"))).unwrap();
            copied += 1;
        }
    }
    copied
}

/// Opens the restored copy with full verification and checks it against
/// the checkpoint seen before the backup.
fn check_restored(signer: &Signer, restored: &Path, seen_size: u64, seen_root: &[u8]) {
    let ledger = Ledger::open(
        &restored.join("ledger.sqlite"),
        signer.clone(),
        OpenCheck::Full,
    )
    .expect("a restored copy opens with full verification");
    assert_eq!(ledger.checkpoint().unwrap().checkpoint.size, seen_size);
    // It keeps growing, consistently with what clients saw.
    ledger.append(weights("search", "minilm", 999)).unwrap();
    let latest = ledger.checkpoint().unwrap().checkpoint;
    let (proof, _) = ledger.prove_consistency(seen_size, None).unwrap();
    verify_consistency(seen_size, latest.size, seen_root, &latest.root.0, &proof).unwrap();
}

#[test]
fn a_copy_of_the_stopped_ledger_restores_and_verifies() {
    let t = TestLedger::new();
    for n in 1..=50 {
        t.ledger.append(weights("search", "minilm", n)).unwrap();
    }
    let seen = t.ledger.checkpoint().unwrap().checkpoint;
    let TestLedger {
        dir,
        ledger,
        signer,
        ..
    } = t;
    drop(ledger); // the service stopped: everything committed and closed
    let backup = tempfile::tempdir().unwrap();
    assert!(copy_files(dir.path(), backup.path()) >= 1);
    check_restored(&signer, backup.path(), seen.size, &seen.root.0);
}

#[test]
fn a_snapshot_taken_while_it_runs_keeps_every_acknowledged_entry() {
    let t = TestLedger::new();
    for n in 1..=50 {
        t.ledger.append(weights("search", "minilm", n)).unwrap();
    }
    // Every append above was acknowledged (committed with fsync); the copy
    // is taken with the ledger still open, as a volume snapshot would be.
    let seen = t.ledger.checkpoint().unwrap().checkpoint;
    let snapshot = tempfile::tempdir().unwrap();
    copy_files(t.dir.path(), snapshot.path());
    check_restored(&t.signer, snapshot.path(), seen.size, &seen.root.0);
}

#[test]
fn a_restored_copy_refuses_another_key() {
    let t = TestLedger::new();
    t.ledger.append(weights("search", "minilm", 1)).unwrap();
    let backup = tempfile::tempdir().unwrap();
    copy_files(t.dir.path(), backup.path());
    let other = Signer::generate(ORIGIN).unwrap();
    let refused = Ledger::open(&backup.path().join("ledger.sqlite"), other, OpenCheck::Full);
    assert!(
        matches!(&refused, Err(Error::Unusable(m)) if m.contains("key")),
        "{:?}",
        refused.err()
    );
}
