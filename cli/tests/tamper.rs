//! Tamper evidence. Changing any byte of any entry, leaf hash or stored node
//! in the SQLite file (with the append-only triggers dropped) is caught by
//! `openmodel audit verify`, which names the first bad index; a history
//! re-signed with another key fails against the auditor's key; forks (two
//! checkpoints of one size with different roots, a rewritten prefix, a
//! rolled-back log) are reported as forks with their own exit code.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use openmodel_ledger::note::Signer;
use openmodel_ledger::store::OpenCheck;
use openmodel_ledger::tree::Node;
use openmodel_ledger::{Error, Ledger};
use rusqlite::Connection;

const VERIFICATION_FAILED: i32 = 1;
const FORK: i32 = 3;

/// A ledger with 40 entries of mixed kinds.
fn populated() -> Workspace {
    let ws = Workspace::new();
    let lines: Vec<String> = (0..40)
        .map(|i| {
            if i % 3 == 0 {
                change_json("ns", "m", "alice", i)
            } else {
                weights_json("ns", &format!("m{}", i % 4), i)
            }
        })
        .collect();
    ws.record(&lines);
    ws
}

/// Copies the ledger and applies `sql` to the copy with the triggers dropped.
fn tampered_copy(ws: &Workspace, name: &str, sql: &str) -> PathBuf {
    let copy = ws.path(name);
    std::fs::copy(ws.ledger(), &copy).unwrap();
    let conn = Connection::open(&copy).unwrap();
    let triggers: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for t in triggers {
        conn.execute_batch(&format!("DROP TRIGGER {t}")).unwrap();
    }
    conn.execute_batch(sql).unwrap();
    copy
}

/// Verifies a (tampered) ledger copy in-process, as `audit verify` does.
fn verify_copy(path: &Path, vkey: &str) -> Result<(), Error> {
    let ledger = Ledger::open_read_only(path, OpenCheck::Quick)?;
    assert_eq!(ledger.verifier().to_string(), vkey);
    ledger.verify_stored().map(|_| ())
}

/// Reads a blob, flips one bit of one byte, writes it back (triggers dropped).
fn flip(
    ws: &Workspace,
    name: &str,
    table: &str,
    column: &str,
    key: &str,
    id: u64,
    byte: usize,
) -> PathBuf {
    let copy = tampered_copy(ws, name, "");
    let conn = Connection::open(&copy).unwrap();
    let mut blob: Vec<u8> = conn
        .query_row(
            &format!("SELECT {column} FROM {table} WHERE {key} = ?1"),
            [id as i64],
            |r| r.get(0),
        )
        .unwrap();
    blob[byte] ^= 0x01;
    conn.execute(
        &format!("UPDATE {table} SET {column} = ?1 WHERE {key} = ?2"),
        rusqlite::params![blob, id as i64],
    )
    .unwrap();
    copy
}

fn blob_len(ws: &Workspace, table: &str, column: &str, key: &str, id: u64) -> usize {
    let conn = Connection::open(ws.ledger()).unwrap();
    conn.query_row(
        &format!("SELECT length({column}) FROM {table} WHERE {key} = ?1"),
        [id as i64],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as usize
}

/// Flips one byte of a copy of the ledger (`(table, column, key, id, byte)`)
/// and checks that verification names `index`.
fn assert_flip_caught(
    ws: &Workspace,
    vkey: &str,
    at: (&str, &str, &str, u64, usize),
    index: u64,
    what: &str,
) {
    let (table, column, key, id, byte) = at;
    let copy = flip(ws, "t.sqlite", table, column, key, id, byte);
    expect_tampered_at(verify_copy(&copy, vkey), index, what);
    std::fs::remove_file(copy).unwrap();
}

fn expect_tampered_at(result: Result<(), Error>, index: u64, what: &str) {
    match result {
        Err(Error::Tampered { index: got, .. }) if got == index => {}
        other => panic!("{what}: expected tampering at index {index}, got {other:?}"),
    }
}

#[test]
fn every_byte_of_entries_leaf_hashes_and_nodes_is_covered() {
    let ws = populated();
    let vkey = ws.vkey();
    let size = 41u64;
    // Every byte of three entries (first, middle, last).
    for index in [0, 17, size - 1] {
        for byte in 0..blob_len(&ws, "entries", "leaf", "idx", index) {
            assert_flip_caught(
                &ws,
                &vkey,
                ("entries", "leaf", "idx", index, byte),
                index,
                &format!("entry {index} byte {byte}"),
            );
        }
    }
    // Every byte of three leaf hashes, and one byte of every stored hash.
    for index in [0, 17, size - 1] {
        let id = Node { level: 0, index }.stored_index();
        for byte in 0..32 {
            assert_flip_caught(
                &ws,
                &vkey,
                ("tree_nodes", "hash", "id", id, byte),
                index,
                &format!("leaf hash {index} byte {byte}"),
            );
        }
    }
    for id in 0..openmodel_ledger::tree::stored_hash_count(size) {
        let node = Node::from_stored_index(id);
        let at = ("tree_nodes", "hash", "id", id, (id % 32) as usize);
        assert_flip_caught(&ws, &vkey, at, node.first_leaf(), &format!("node {node:?}"));
    }
}

#[test]
fn audit_verify_names_the_first_bad_index() {
    let ws = populated();
    let vkey = ws.vkey();
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            flip(&ws, "entry.sqlite", "entries", "leaf", "idx", 7, 40),
            "index 7",
        ),
        (
            flip(
                &ws,
                "leafhash.sqlite",
                "tree_nodes",
                "hash",
                "id",
                Node {
                    level: 0,
                    index: 12,
                }
                .stored_index(),
                3,
            ),
            "index 12",
        ),
        (
            flip(
                &ws,
                "node.sqlite",
                "tree_nodes",
                "hash",
                "id",
                Node { level: 2, index: 3 }.stored_index(),
                0,
            ),
            "index 12",
        ),
        (
            tampered_copy(
                &ws,
                "kind.sqlite",
                "UPDATE entries SET kind = 'model.retired' WHERE idx = 9",
            ),
            "index 9",
        ),
        (
            tampered_copy(
                &ws,
                "actor.sqlite",
                "UPDATE entries SET actor = 'mallory' WHERE idx = 3",
            ),
            "index 3",
        ),
        (
            tampered_copy(
                &ws,
                "refs.sqlite",
                "UPDATE entry_refs SET value = 'sha256:' || printf('%064x', 999) WHERE idx = 5",
            ),
            "index 5",
        ),
        (
            tampered_copy(
                &ws,
                "deleted.sqlite",
                "DELETE FROM entries WHERE idx = 40; DELETE FROM entry_refs WHERE idx = 40;",
            ),
            "index 40",
        ),
        (
            tampered_copy(
                &ws,
                "gap.sqlite",
                "DELETE FROM entries WHERE idx = 20; DELETE FROM entry_refs WHERE idx = 20;",
            ),
            "index 20",
        ),
    ];
    for (copy, needle) in cases {
        let run = ws.run(&[
            "--ledger",
            copy.to_str().unwrap(),
            "audit",
            "verify",
            "--key",
            &vkey,
        ]);
        assert_eq!(
            run.code,
            VERIFICATION_FAILED,
            "{}: {}{}",
            copy.display(),
            run.stdout,
            run.stderr
        );
        assert!(
            run.stderr.contains(needle),
            "{}: expected {needle:?} in {}",
            copy.display(),
            run.stderr
        );
        assert!(run.stderr.contains("VERIFICATION FAILED"), "{}", run.stderr);
    }
    // An altered checkpoint signature.
    let copy = tampered_copy(
        &ws,
        "cp.sqlite",
        "UPDATE checkpoints SET note = replace(note, 'cli.test/openmodel\n41', 'cli.test/openmodel\n42')",
    );
    let run = ws.run(&[
        "--ledger",
        copy.to_str().unwrap(),
        "audit",
        "verify",
        "--key",
        &vkey,
    ]);
    assert_eq!(run.code, VERIFICATION_FAILED, "{}", run.stderr);
    // The untouched original still verifies.
    let run = ws.run(&["audit", "verify", "--key", &vkey]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn a_history_resigned_with_another_key_fails() {
    let real = populated();
    // The attacker rewrites history under the same origin with their own key.
    let fake = Workspace::new();
    fake.record(&[change_json("ns", "m", "alice", 99)]);
    let run = fake.run(&["audit", "verify", "--key", &real.vkey()]);
    assert_eq!(run.code, VERIFICATION_FAILED, "{}", run.stderr);
    assert!(
        run.stderr.contains("not the key you trust"),
        "{}",
        run.stderr
    );
    fake.run(&["audit", "export", "bundle"]).ok();
    let run = fake.run(&[
        "audit",
        "verify",
        "--bundle",
        "bundle",
        "--key",
        &real.vkey(),
    ]);
    assert_eq!(run.code, VERIFICATION_FAILED, "{}", run.stderr);
    assert!(
        run.stderr.contains("no signature by cli.test/openmodel"),
        "{}",
        run.stderr
    );
}

#[test]
fn tampered_bundles_are_caught() {
    let ws = populated();
    ws.run(&["audit", "export", "bundle"]).ok();
    let vkey = ws.vkey();
    ws.run(&["audit", "verify", "--bundle", "bundle", "--key", &vkey])
        .ok();
    let copy = |name: &str| {
        let dst = ws.path(name);
        copy_dir(&ws.path("bundle"), &dst);
        dst
    };
    // A byte of entry 13 inside the entry bundle.
    let b = copy("b1");
    let bundle_file = b.join("tile/entries/000.p/41");
    let mut data = std::fs::read(&bundle_file).unwrap();
    let offset = {
        let mut at = 0;
        for _ in 0..13 {
            at += 2 + u16::from_be_bytes([data[at], data[at + 1]]) as usize;
        }
        at + 2 + 30
    };
    data[offset] ^= 0x01;
    std::fs::write(&bundle_file, &data).unwrap();
    let run = verify_bundle(&ws, &b, &vkey);
    assert_eq!(run.code, VERIFICATION_FAILED, "{}", run.stderr);
    assert!(run.stderr.contains("index 13"), "{}", run.stderr);
    // A leaf hash in the hash tile.
    let b = copy("b2");
    let tile = b.join("tile/0/000.p/41");
    let mut data = std::fs::read(&tile).unwrap();
    data[32 * 21 + 5] ^= 0x80;
    std::fs::write(&tile, &data).unwrap();
    let run = verify_bundle(&ws, &b, &vkey);
    assert_eq!(run.code, VERIFICATION_FAILED, "{}", run.stderr);
    assert!(run.stderr.contains("index 21"), "{}", run.stderr);
    // A missing tile is an incomplete bundle, not a pass.
    let b = copy("b3");
    std::fs::remove_file(b.join("tile/0/000.p/41")).unwrap();
    let run = verify_bundle(&ws, &b, &vkey);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("tile/0/000.p/41 is missing"),
        "{}",
        run.stderr
    );
}

fn verify_bundle(ws: &Workspace, dir: &Path, vkey: &str) -> Run {
    ws.run(&[
        "audit",
        "verify",
        "--bundle",
        dir.to_str().unwrap(),
        "--key",
        vkey,
    ])
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

#[test]
fn forks_are_reported_as_forks() {
    let ws = populated();
    let vkey = ws.vkey();
    ws.run(&["audit", "export", "honest-41"]).ok();
    ws.run(&[
        "audit",
        "verify",
        "--bundle",
        "honest-41",
        "--key",
        &vkey,
        "--save-checkpoint",
        "cp-41",
    ])
    .ok();

    // Someone holding the (stolen) key builds a second history of the same size.
    let signer: Signer = std::fs::read_to_string(ws.path("key"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let forked = ws.path("forked.sqlite");
    let ledger = Ledger::create(&forked, signer, "test").unwrap();
    for i in 0..40 {
        let e =
            openmodel_ledger::entry::Entry::parse_draft(weights_json("ns", "evil", i).as_bytes())
                .unwrap();
        ledger.append(e).unwrap();
    }
    let fork_export = |dir: &str| {
        ws.run(&["--ledger", forked.to_str().unwrap(), "audit", "export", dir])
            .ok();
    };
    fork_export("fork-41");
    let run = ws.run(&[
        "audit",
        "verify",
        "--bundle",
        "fork-41",
        "--key",
        &vkey,
        "--since-checkpoint",
        "cp-41",
    ]);
    assert_eq!(run.code, FORK, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("two signed checkpoints of size 41 with different roots"),
        "{}",
        run.stderr
    );

    // The forked history grows: it is larger but not an extension of what the auditor saw.
    for i in 40..60 {
        let e =
            openmodel_ledger::entry::Entry::parse_draft(weights_json("ns", "evil", i).as_bytes())
                .unwrap();
        ledger.append(e).unwrap();
    }
    fork_export("fork-61");
    let run = ws.run(&[
        "audit",
        "verify",
        "--bundle",
        "fork-61",
        "--key",
        &vkey,
        "--since-checkpoint",
        "cp-41",
    ]);
    assert_eq!(run.code, FORK, "{}", run.stderr);
    assert!(
        run.stderr.contains("rewritten, not appended to"),
        "{}",
        run.stderr
    );

    // The honest log grows: consistent. Then a rolled-back view is a fork.
    ws.record(&[weights_json("ns", "m", 1000)]);
    ws.run(&["audit", "export", "honest-42"]).ok();
    let out = ws
        .run(&[
            "audit",
            "verify",
            "--bundle",
            "honest-42",
            "--key",
            &vkey,
            "--since-checkpoint",
            "cp-41",
            "--save-checkpoint",
            "cp-42",
        ])
        .ok();
    assert!(out.contains("CONSISTENT"), "{out}");
    let run = ws.run(&[
        "audit",
        "verify",
        "--bundle",
        "honest-41",
        "--key",
        &vkey,
        "--since-checkpoint",
        "cp-42",
    ]);
    assert_eq!(run.code, FORK, "{}", run.stderr);
    assert!(run.stderr.contains("rolled back"), "{}", run.stderr);
}
