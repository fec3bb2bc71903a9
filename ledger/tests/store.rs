//! The ledger on real SQLite files: appends, group commit under concurrency,
//! idempotent retries, queries with completeness ranges, proofs, exports and
//! their offline verification, and refusal of UPDATE/DELETE.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use openmodel_ledger::query::Query;
use openmodel_ledger::store::OpenCheck;
use openmodel_ledger::tiles::{TileResource, bundles_for_size, tiles_for_size};
use openmodel_ledger::tree::verify_consistency;
use openmodel_ledger::verify::verify_bundle;
use openmodel_ledger::{Error, Ledger};

#[test]
fn appends_are_durable_and_survive_reopen() {
    let t = TestLedger::new();
    let r = t.ledger.append(weights("search", "minilm", 1)).unwrap();
    assert_eq!(r.index, 1, "index 0 is the ledger.key entry");
    assert_eq!(r.tree_size, 2);
    let t = t.reopen();
    let e = t.ledger.entry(1).unwrap();
    assert_eq!(e.entry.kind(), "weights.verified");
    assert_eq!(t.ledger.checkpoint().unwrap().checkpoint.size, 2);
    let r2 = t.ledger.append(weights("search", "minilm", 2)).unwrap();
    assert_eq!(r2.index, 2);
    assert!(r2.time >= r.time);
}

/// A ledger closed cleanly is one self-contained file: its WAL is folded
/// in and removed, so copying the `.sqlite` file alone (as an auditor or a
/// backup does) copies every entry. Its connections used to close at once
/// and could each skip that, leaving the last entries only in `-wal`; the
/// race is rare, so it is tried many times.
#[test]
fn a_closed_ledger_is_one_self_contained_file() {
    let TestLedger {
        dir,
        path,
        signer,
        ledger,
    } = TestLedger::new();
    drop(ledger);
    let wal = path.with_extension("sqlite-wal");
    let copy = dir.path().join("copy.sqlite");
    for round in 0..40u64 {
        let ledger = Ledger::open(&path, signer.clone(), OpenCheck::Quick).unwrap();
        ledger.append(weights("ns", "m", round)).unwrap();
        drop(ledger);
        assert!(!wal.exists(), "round {round}: {} was left", wal.display());
        std::fs::copy(&path, &copy).unwrap();
        let copied = Ledger::open_read_only(&copy, OpenCheck::Full).unwrap();
        assert_eq!(copied.checkpoint().unwrap().checkpoint.size, round + 2);
        drop(copied);
        std::fs::remove_file(&copy).unwrap();
    }
}

/// Blocking appends (and `Ledger::create`, which appends the key entry) work
/// on a thread that runs an async runtime; tokio's own blocking receive
/// would panic there.
#[tokio::test(flavor = "current_thread")]
async fn blocking_appends_work_inside_an_async_runtime() {
    let t = TestLedger::new();
    let blocking = t.ledger.append(weights("search", "minilm", 1)).unwrap();
    let not_blocking = t
        .ledger
        .append_async(weights("search", "minilm", 2))
        .await
        .unwrap();
    assert_eq!((blocking.index, not_blocking.index), (1, 2));
}

#[test]
fn concurrent_appenders_get_distinct_gap_free_indexes() {
    let t = TestLedger::new();
    let ledger = Arc::new(t.ledger);
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || {
                (0..25)
                    .map(|j| {
                        ledger
                            .append(weights("ns", &format!("m{i}"), j))
                            .unwrap()
                            .index
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in threads {
        for idx in t.join().unwrap() {
            assert!(all.insert(idx), "index {idx} handed out twice");
        }
    }
    assert_eq!(all.len(), 64 * 25);
    assert_eq!(
        all.iter().copied().collect::<Vec<_>>(),
        (1..=64 * 25).collect::<Vec<u64>>()
    );
    let report = ledger.verify_stored().unwrap();
    assert_eq!(report.checkpoint.unwrap().checkpoint.size, 64 * 25 + 1);
    assert!(
        report.checkpoints < 64 * 25,
        "group commit should batch appends, got one checkpoint per append"
    );
}

#[test]
fn retried_appends_are_idempotent_and_conflicts_refused() {
    let t = TestLedger::new();
    let first = t.ledger.append(weights("ns", "m", 7)).unwrap();
    let again = t.ledger.append(weights("ns", "m", 7)).unwrap();
    assert!(again.existing);
    assert_eq!(
        (again.index, again.leaf_hash, again.time),
        (first.index, first.leaf_hash, first.time)
    );
    let mut different = weights("ns", "m", 8);
    different.dedupe_key = weights("ns", "m", 7).dedupe_key;
    let err = t.ledger.append(different).unwrap_err();
    assert!(
        matches!(err, Error::DedupeConflict { index, .. } if index == first.index),
        "{err}"
    );
    assert_eq!(t.ledger.checkpoint().unwrap().checkpoint.size, 2);
}

#[test]
fn queries_filter_page_and_state_what_they_cover() {
    let t = TestLedger::new();
    for i in 0..30 {
        t.ledger
            .append(weights("search", if i % 2 == 0 { "a" } else { "b" }, i))
            .unwrap();
        t.ledger
            .append(spec_change(
                "search",
                "a",
                if i % 3 == 0 { "alice" } else { "bob" },
                i,
            ))
            .unwrap();
    }
    t.ledger
        .append(dataset("search", "a", "hf://datasets/ms_marco@abc"))
        .unwrap();
    let size = t.ledger.checkpoint().unwrap().checkpoint.size;

    let q = Query {
        object: Some(("search".into(), Some("a".into()))),
        kind: Some("weights.verified".into()),
        limit: 4,
        ..Query::default()
    };
    let mut seen = Vec::new();
    let mut start = 0;
    loop {
        let page = t.ledger.query(&Query { start, ..q.clone() }).unwrap();
        assert_eq!(page.scanned.start, start.min(size));
        assert_eq!(page.checkpoint.checkpoint.size, size);
        seen.extend(page.entries.iter().map(|e| e.index));
        assert!(page.entries.iter().all(|e| page.scanned.contains(&e.index)));
        match page.next {
            Some(n) => start = n,
            None => {
                assert_eq!(page.scanned.end, size);
                break;
            }
        }
    }
    assert_eq!(seen.len(), 15);

    let alice = t
        .ledger
        .query(&Query {
            actor: Some("alice".into()),
            limit: 100,
            ..Query::default()
        })
        .unwrap();
    assert_eq!(alice.entries.len(), 10);
    let by_digest = t
        .ledger
        .query(&Query {
            digest: Some(digest(3)),
            limit: 100,
            ..Query::default()
        })
        .unwrap();
    assert_eq!(by_digest.entries.len(), 1);
    let by_dataset = t
        .ledger
        .query(&Query {
            dataset: Some("hf://datasets/ms_marco@abc".into()),
            limit: 100,
            ..Query::default()
        })
        .unwrap();
    assert_eq!(by_dataset.entries.len(), 1);

    // Time windows map to contiguous index ranges.
    let t10 = t.ledger.entry(10).unwrap().entry.time.unwrap();
    let t20 = t.ledger.entry(20).unwrap().entry.time.unwrap();
    let window = t
        .ledger
        .query(&Query {
            since: Some(t10),
            until: Some(t20),
            limit: 100,
            ..Query::default()
        })
        .unwrap();
    assert!(
        window
            .entries
            .iter()
            .all(|e| e.entry.time.unwrap() >= t10 && e.entry.time.unwrap() < t20)
    );
    assert_eq!(window.scanned.start, window.entries.first().unwrap().index);
}

/// A page stops at its byte budget as it does at its count: `next` says
/// where to go on, the scanned range ends there, and the pages together
/// hold every match once. An entry larger than the budget still makes a
/// page of its own.
#[test]
fn pages_stop_at_a_byte_budget_and_say_where_to_go_on() {
    let t = TestLedger::new();
    for i in 0..20 {
        t.ledger.append(weights("search", "a", i)).unwrap();
    }
    let leaf = t.ledger.entry(1).unwrap().leaf.len();
    let all = Query {
        limit: 100,
        ..Query::default()
    };
    let size = t.ledger.checkpoint().unwrap().checkpoint.size;

    let mut seen = Vec::new();
    let mut start = 0;
    let mut pages = 0;
    loop {
        let page = t
            .ledger
            .query_within(
                &Query {
                    start,
                    ..all.clone()
                },
                3 * leaf + leaf / 2,
            )
            .unwrap();
        pages += 1;
        let bytes: usize = page.entries.iter().map(|e| e.leaf.len()).sum();
        assert!(bytes <= 3 * leaf + leaf / 2, "{bytes} bytes in a page");
        assert!(!page.entries.is_empty());
        assert!(page.entries.iter().all(|e| page.scanned.contains(&e.index)));
        seen.extend(page.entries.iter().map(|e| e.index));
        match page.next {
            Some(next) => {
                assert_eq!(page.scanned.end, next);
                start = next;
            }
            None => {
                assert_eq!(page.scanned.end, size);
                break;
            }
        }
    }
    assert_eq!(seen, (0..size).collect::<Vec<_>>());
    assert!(pages >= 7, "{pages} pages of at most 3 entries for {size}");

    // A budget smaller than one entry: one entry per page, never none.
    let page = t.ledger.query_within(&all, 1).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.next, Some(1));
    // The count still bounds a page when the bytes do not.
    let page = t
        .ledger
        .query_within(
            &Query {
                limit: 2,
                ..all.clone()
            },
            usize::MAX,
        )
        .unwrap();
    assert_eq!((page.entries.len(), page.next), (2, Some(2)));
    // A budget the whole answer fits in: no next.
    let page = t.ledger.query_within(&all, usize::MAX).unwrap();
    assert_eq!((page.entries.len() as u64, page.next), (size, None));
}

/// Reads run on a pool of their own connections: one held by a slow read
/// does not hold up a read on another, nor an append; a read past the time
/// limit is stopped and says so; the latest checkpoint is known without
/// reading.
#[test]
fn a_slow_read_holds_up_only_its_own_connection() {
    use std::sync::mpsc;
    use std::time::Duration;

    use openmodel_ledger::store::ReadLimits;

    let TestLedger {
        dir: _dir, ledger, ..
    } = TestLedger::new();
    let ledger = Arc::new(
        ledger
            .with_read_limits(ReadLimits {
                connections: 2,
                timeout: Some(Duration::from_millis(300)),
            })
            .unwrap(),
    );
    let (holding, held) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let slow = {
        let ledger = Arc::clone(&ledger);
        std::thread::spawn(move || {
            ledger
                .read(|_| {
                    holding.send(()).unwrap();
                    released.recv().unwrap();
                    Ok(())
                })
                .unwrap();
        })
    };
    held.recv().unwrap();
    // An append and reads beside the held connection, with a deadline (one
    // connection only would make them wait forever).
    let (done, finished) = mpsc::channel();
    let beside = {
        let ledger = Arc::clone(&ledger);
        std::thread::spawn(move || {
            let receipt = ledger.append(weights("search", "a", 1)).unwrap();
            assert_eq!(
                ledger.checkpoint().unwrap().checkpoint.size,
                receipt.tree_size
            );
            assert_eq!(ledger.entry(1).unwrap().index, 1);
            done.send(receipt).unwrap();
        })
    };
    let receipt = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("an append and reads beside a held read connection");
    beside.join().unwrap();
    let last = ledger.last_checkpoint().expect("a checkpoint in memory");
    assert_eq!(last.checkpoint.size, receipt.tree_size);
    release.send(()).unwrap();
    slow.join().unwrap();

    let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                   SELECT count(*) FROM n";
    let err = ledger
        .read(|c| Ok(c.query_row(endless, [], |r| r.get::<_, i64>(0))?))
        .unwrap_err();
    assert!(matches!(err, Error::ReadTimedOut { .. }), "{err}");
    assert!(err.to_string().contains("300ms"), "{err}");
    // The connection serves the next read.
    assert_eq!(ledger.entry(0).unwrap().index, 0);

    let err = Arc::try_unwrap(ledger)
        .ok()
        .unwrap()
        .with_read_limits(ReadLimits {
            connections: 0,
            timeout: None,
        })
        .err()
        .unwrap();
    assert!(err.to_string().contains("read connections"), "{err}");
}

#[test]
fn proofs_verify_against_signed_checkpoints() {
    let t = TestLedger::new();
    for i in 0..100 {
        t.ledger.append(weights("ns", "m", i)).unwrap();
    }
    let verifier = t.signer.verifier();
    for index in [0, 1, 50, 100] {
        let proof = t.ledger.prove(index).unwrap();
        let parsed = openmodel_ledger::proof_file::TlogProof::parse(&proof.encode()).unwrap();
        parsed.verify(&verifier, None).unwrap();
        let wrong = t.ledger.entry((index + 1) % 101).unwrap().leaf;
        assert!(
            parsed
                .verify(&verifier, Some(&wrong))
                .unwrap_err()
                .is_verification_failure()
        );
    }
    let old = t
        .ledger
        .checkpoint_at(40)
        .unwrap()
        .expect("one checkpoint per append here");
    let new = t.ledger.checkpoint().unwrap();
    let proof = t.ledger.consistency_proof(40, 101).unwrap();
    verify_consistency(
        40,
        101,
        &old.checkpoint.root.0,
        &new.checkpoint.root.0,
        &proof,
    )
    .unwrap();
}

#[test]
fn exports_verify_offline_and_prove_consistency() {
    let t = TestLedger::new();
    for i in 0..300 {
        t.ledger
            .append(weights("ns", &format!("m{}", i % 7), i))
            .unwrap();
    }
    let old = t.ledger.checkpoint().unwrap();
    for i in 300..700 {
        t.ledger
            .append(spec_change("ns", "m1", "carol", i))
            .unwrap();
    }
    let dir = t.dir.path().join("bundle");
    let report = t.ledger.export(&dir).unwrap();
    assert_eq!(report.checkpoint.checkpoint.size, 701);
    assert!(dir.join("tile/0/000").is_file() && dir.join("tile/0/002.p/189").is_file());
    assert!(dir.join("tile/1/000.p/2").is_file() && dir.join("tile/entries/002.p/189").is_file());
    let verified = verify_bundle(&dir, &t.signer.verifier(), Some(&old.note)).unwrap();
    assert_eq!(verified.checkpoint.checkpoint.size, 701);
    let jsonl = std::fs::read_to_string(dir.join("entries.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 701);
    for (i, line) in jsonl.lines().enumerate().step_by(97) {
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            parsed,
            t.ledger.entry(i as u64).unwrap().to_json(),
            "line {i}"
        );
    }
    let csv = std::fs::read_to_string(dir.join("entries.csv")).unwrap();
    assert_eq!(csv.lines().count(), 702);
    assert!(
        t.ledger.export(&dir).is_err(),
        "export refuses a non-empty folder"
    );
}

#[test]
fn single_tiles_read_from_the_file_match_the_export() {
    let t = TestLedger::new();
    for i in 0..700 {
        t.ledger
            .append(weights("ns", &format!("m{}", i % 5), i))
            .unwrap();
    }
    let dir = t.dir.path().join("bundle");
    t.ledger.export(&dir).unwrap();
    let size = t.ledger.checkpoint().unwrap().checkpoint.size;
    let resources = tiles_for_size(size)
        .into_iter()
        .map(TileResource::Hashes)
        .chain(
            bundles_for_size(size)
                .into_iter()
                .map(TileResource::Entries),
        );
    for resource in resources {
        let path = resource.path();
        assert_eq!(TileResource::parse(&path).unwrap(), resource);
        let exported = std::fs::read(dir.join(&path)).unwrap();
        assert_eq!(t.ledger.tile(resource).unwrap(), exported, "{path}");
    }
    // A narrower prefix of the rightmost tile is served too (it is the
    // partial tile of an earlier size); anything beyond the tree is not.
    let prefix = t
        .ledger
        .tile(TileResource::parse("tile/0/002.p/10").unwrap())
        .unwrap();
    let full = std::fs::read(dir.join("tile/0/002.p/189")).unwrap();
    assert_eq!(prefix, full[..320]);
    for beyond in [
        "tile/0/002.p/190",
        "tile/0/002",
        "tile/0/003.p/1",
        "tile/1/000",
        "tile/2/000.p/1",
        "tile/63/000.p/1",
        "tile/entries/003.p/1",
        "tile/0/x018/x446/x744/x073/x709/x551/615",
    ] {
        let err = t
            .ledger
            .tile(TileResource::parse(beyond).unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{beyond}: {err}");
    }
}

#[test]
fn proofs_at_signed_sizes_and_consistency_to_them() {
    let t = TestLedger::new();
    for i in 0..20 {
        t.ledger.append(weights("ns", "m", i)).unwrap();
    }
    let verifier = t.signer.verifier();
    let at_10 = t.ledger.checkpoint_at(10).unwrap().unwrap();
    let proof = t.ledger.prove_at(3, Some(10)).unwrap();
    assert_eq!(proof.checkpoint, at_10.note);
    proof.verify(&verifier, None).unwrap();
    assert_eq!(
        t.ledger.prove_at(3, None).unwrap(),
        t.ledger.prove(3).unwrap()
    );
    assert!(matches!(
        t.ledger.prove_at(10, Some(10)).unwrap_err(),
        Error::IndexOutOfRange {
            index: 10,
            size: 10
        }
    ));
    assert!(matches!(
        t.ledger.prove_at(3, Some(500)).unwrap_err(),
        Error::NotFound(_)
    ));

    let (hashes, latest) = t.ledger.prove_consistency(10, None).unwrap();
    assert_eq!(latest, t.ledger.checkpoint().unwrap());
    verify_consistency(
        10,
        latest.checkpoint.size,
        &at_10.checkpoint.root.0,
        &latest.checkpoint.root.0,
        &hashes,
    )
    .unwrap();
    let (hashes, at_15) = t.ledger.prove_consistency(10, Some(15)).unwrap();
    assert_eq!(at_15.checkpoint.size, 15);
    verify_consistency(
        10,
        15,
        &at_10.checkpoint.root.0,
        &at_15.checkpoint.root.0,
        &hashes,
    )
    .unwrap();
    assert!(t.ledger.prove_consistency(0, None).is_err());
    assert!(t.ledger.prove_consistency(16, Some(15)).is_err());
}

#[test]
fn the_file_refuses_update_and_delete() {
    let t = TestLedger::new();
    t.ledger.append(weights("ns", "m", 1)).unwrap();
    let conn = rusqlite::Connection::open(&t.path).unwrap();
    for sql in [
        "UPDATE entries SET kind = 'model.retired'",
        "DELETE FROM entries",
        "DELETE FROM tree_nodes",
        "UPDATE checkpoints SET note = ''",
        "DELETE FROM meta",
    ] {
        let err = conn.execute(sql, []).unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
}

#[test]
fn read_only_opens_refuse_appends_and_wrong_keys_are_refused() {
    let t = TestLedger::new();
    let ro = Ledger::open_read_only(&t.path, OpenCheck::Full).unwrap();
    assert!(ro.append(weights("ns", "m", 1)).is_err());
    let other = openmodel_ledger::note::Signer::generate(ORIGIN).unwrap();
    let err = Ledger::open(&t.path, other, OpenCheck::Quick)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not this ledger's key"), "{err}");
    let missing = t.dir.path().join("nope.sqlite");
    let err = Ledger::open_read_only(&missing, OpenCheck::Quick)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn corrupted_bundles_fail_cleanly() {
    let t = TestLedger::new();
    for i in 0..20 {
        t.ledger.append(weights("ns", "m", i)).unwrap();
    }
    let dir = t.dir.path().join("bundle");
    t.ledger.export(&dir).unwrap();
    let verifier = t.signer.verifier();
    let files = ["tile/entries/000.p/21", "tile/0/000.p/21", "checkpoint"];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..600 {
        let which = round % files.len();
        let mut data = originals[which].clone();
        match next() % 3 {
            0 => {
                let at = (next() as usize) % data.len();
                data[at] ^= 1 << (next() % 8);
            }
            1 => data.truncate((next() as usize) % data.len()),
            _ => data.insert((next() as usize) % data.len(), next() as u8),
        }
        std::fs::write(dir.join(files[which]), &data).unwrap();
        let result = verify_bundle(&dir, &verifier, None);
        assert!(
            result.is_err(),
            "round {round}: a corrupted {} verified",
            files[which]
        );
        std::fs::write(dir.join(files[which]), &originals[which]).unwrap();
    }
    verify_bundle(&dir, &verifier, None).unwrap();
}
