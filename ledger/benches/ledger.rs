//! Ledger benchmark: `cargo bench -p openmodel-ledger --bench ledger [-- --entries N]`.
//!
//! Prints, side by side with a peer and the goal from the ledger issue:
//! - durable appends/s with one appender and with 64 concurrent appenders
//!   (group commit), against the same rows in a plain SQLite table with the
//!   same durability (WAL, synchronous=FULL, one transaction per append);
//! - inclusion-proof generation p50/p99 on an N-entry ledger (default
//!   1,000,000), against reading one row by index from that plain table;
//! - full offline verification of an N-entry export, against only hashing
//!   the same entry bytes (no parsing, no tree, no tiles).
//!
//! Files go to a temporary folder on the disk that holds the system's temp
//! directory (set TMPDIR to measure another disk).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openmodel_ledger::Ledger;
use openmodel_ledger::entry::{Entry, EntryBody, ObjectRef, Source, WeightsVerified};
use openmodel_ledger::hash::leaf_hash;
use openmodel_ledger::note::Signer;
use openmodel_ledger::store::{OpenCheck, PendingAppend};
use openmodel_ledger::verify::verify_bundle;
use rusqlite::Connection;

const CONCURRENCY: usize = 64;

fn entry(i: u64) -> Entry {
    Entry {
        appender: None,
        time: None,
        cluster: "bench-cluster".into(),
        object: Some(ObjectRef {
            api_version: "serving.openmodel.dev/v1alpha1".into(),
            kind: "OpenModel".into(),
            namespace: format!("team-{}", i % 97),
            name: format!("model-{}", i % 1013),
            uid: Some(format!("{:032x}", i * 7919)),
            generation: Some((i % 50) as i64),
        }),
        actor: None,
        source: Source::Controller,
        dedupe_key: Some(format!("bench/{i}")),
        body: EntryBody::WeightsVerified(WeightsVerified {
            digest: format!("sha256:{:064x}", i),
            source: format!("hf://org-{}/model-{}@{:040x}", i % 31, i % 1013, i),
            pod: Some(format!("model-{}-5d8f7c9b6-{:05}", i % 1013, i % 99991)),
        }),
    }
}

fn new_ledger(dir: &std::path::Path, name: &str) -> (Ledger, Signer) {
    let signer = Signer::generate("bench.openmodel/ledger").unwrap();
    let ledger = Ledger::create(&dir.join(name), signer.clone(), "bench-cluster").unwrap();
    (ledger, signer)
}

/// The peer: the same entry bytes in a plain table, same durability settings.
fn plain_table(path: &std::path::Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c.busy_timeout(Duration::from_secs(60)).unwrap();
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, body BLOB NOT NULL)",
    )
    .unwrap();
    c
}

/// The bytes the peer stores: the entry's canonical JSON (with a time).
fn plain_bytes(i: u64) -> Vec<u8> {
    let mut e = entry(i);
    e.time = Some(openmodel_ledger::entry::Timestamp::now());
    e.canonical_bytes().unwrap()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

// Entries (and the peer's rows) are built before the clock starts: the
// benchmark measures storing them, not making up test data.

fn appends_one(ledger: &Ledger, n: usize, offset: u64) -> f64 {
    let entries: Vec<Entry> = (0..n as u64).map(|i| entry(offset + i)).collect();
    let start = Instant::now();
    for e in entries {
        ledger.append(e).unwrap();
    }
    rate(n, start.elapsed())
}

fn appends_many(ledger: &Arc<Ledger>, per_thread: usize, offset: u64) -> f64 {
    let start = Instant::now();
    let threads: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let ledger = Arc::clone(ledger);
            std::thread::spawn(move || {
                for i in 0..per_thread as u64 {
                    ledger
                        .append(entry(offset + (t * per_thread) as u64 + i))
                        .unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    rate(CONCURRENCY * per_thread, start.elapsed())
}

fn plain_one(path: &std::path::Path, n: usize) -> f64 {
    let c = plain_table(path);
    let rows: Vec<Vec<u8>> = (0..n as u64).map(plain_bytes).collect();
    let start = Instant::now();
    for row in rows {
        c.execute("INSERT INTO audit (body) VALUES (?1)", [row])
            .unwrap();
    }
    rate(n, start.elapsed())
}

fn plain_many(path: &std::path::Path, per_thread: usize) -> f64 {
    drop(plain_table(path));
    let barrier = Arc::new(std::sync::Barrier::new(CONCURRENCY + 1));
    let threads: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let path = path.to_owned();
            let barrier = Arc::clone(&barrier);
            let first = (t * per_thread) as u64;
            let rows: Vec<Vec<u8>> = (first..first + per_thread as u64)
                .map(plain_bytes)
                .collect();
            std::thread::spawn(move || {
                let c = plain_table(&path);
                barrier.wait();
                for row in rows {
                    c.execute("INSERT INTO audit (body) VALUES (?1)", [row])
                        .unwrap();
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    threads.into_iter().for_each(|t| t.join().unwrap());
    rate(CONCURRENCY * per_thread, start.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn fmt_rate(r: f64) -> String {
    let s = format!("{:.0}", r);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out}/s")
}

fn fmt_us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries: u64 = args
        .iter()
        .position(|a| a == "--entries")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--entries takes a number"))
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    println!(
        "OpenModel ledger benchmark: {}; ledger files in {}",
        machine(),
        dir.path().display()
    );
    let mut rows: Vec<[String; 4]> = Vec::new();

    // 1. Durable appends.
    let (ledger, _) = new_ledger(dir.path(), "appends.sqlite");
    let one = appends_one(&ledger, 2_000, 0);
    let ledger = Arc::new(ledger);
    let before = ledger.verify_stored().unwrap().checkpoints;
    let many = appends_many(&ledger, 500, 10_000);
    let batches = ledger.verify_stored().unwrap().checkpoints - before;
    eprintln!(
        "avg batch {:.1}",
        (CONCURRENCY * 500) as f64 / batches as f64
    );
    let plain1 = plain_one(&dir.path().join("plain1.sqlite"), 2_000);
    let plain64 = plain_many(&dir.path().join("plain64.sqlite"), 100);
    rows.push([
        "durable appends, 1 appender".into(),
        fmt_rate(one),
        fmt_rate(plain1),
        "≥ 1,000/s".into(),
    ]);
    rows.push([
        format!("durable appends, {CONCURRENCY} appender threads"),
        fmt_rate(many),
        fmt_rate(plain64),
        "≥ 20,000/s".into(),
    ]);
    drop(ledger);

    // 2. A large ledger: pipelined appends (group commit batches them).
    eprintln!("building a {entries}-entry ledger …");
    let (big, signer) = new_ledger(dir.path(), "big.sqlite");
    let start = Instant::now();
    let mut pending: std::collections::VecDeque<PendingAppend> = Default::default();
    for i in 1..entries {
        pending.push_back(big.submit(entry(1_000_000_000 + i)).unwrap());
        if pending.len() >= 8192 {
            pending.pop_front().unwrap().wait().unwrap();
        }
    }
    pending.into_iter().for_each(|p| {
        p.wait().unwrap();
    });
    let build = start.elapsed();
    rows.push([
        format!("bulk load {entries} entries (pipelined)"),
        fmt_rate(rate(entries as usize, build)),
        "-".into(),
        "-".into(),
    ]);
    drop(big);
    let big = Ledger::open(
        &dir.path().join("big.sqlite"),
        signer.clone(),
        OpenCheck::Quick,
    )
    .unwrap();
    let size = big.checkpoint().unwrap().checkpoint.size;
    assert_eq!(size, entries);

    // 3. Inclusion proofs at random indexes.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut samples = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let t = Instant::now();
        let p = big.prove(state % size).unwrap();
        samples.push(t.elapsed());
        assert!(!p.path.is_empty());
    }
    samples.sort();
    let plain = plain_table(&dir.path().join("plain1.sqlite"));
    let mut lookups = Vec::with_capacity(10_000);
    for i in 0..10_000u64 {
        let t = Instant::now();
        let _: Vec<u8> = plain
            .query_row(
                "SELECT body FROM audit WHERE id = ?1",
                [(i % 2000 + 1) as i64],
                |r| r.get(0),
            )
            .unwrap();
        lookups.push(t.elapsed());
    }
    lookups.sort();
    rows.push([
        format!("inclusion proof p50 / p99 ({entries})"),
        format!(
            "{} / {}",
            fmt_us(percentile(&samples, 0.5)),
            fmt_us(percentile(&samples, 0.99))
        ),
        format!(
            "{} / {}",
            fmt_us(percentile(&lookups, 0.5)),
            fmt_us(percentile(&lookups, 0.99))
        ),
        "≤ 1 ms p99".into(),
    ]);

    // 4. Export, then full offline verification.
    let bundle = dir.path().join("bundle");
    let t = Instant::now();
    big.export(&bundle).unwrap();
    let export = t.elapsed();
    let t = Instant::now();
    let report = verify_bundle(&bundle, &signer.verifier(), None).unwrap();
    let verify = t.elapsed();
    assert_eq!(report.checkpoint.checkpoint.size, entries);
    let t = Instant::now();
    let mut leaves = 0u64;
    for tile in openmodel_ledger::tiles::bundles_for_size(entries) {
        let data = std::fs::read(bundle.join(tile.entries_path())).unwrap();
        for leaf in openmodel_ledger::tiles::decode_bundle(&data, tile.width).unwrap() {
            std::hint::black_box(leaf_hash(leaf));
            leaves += 1;
        }
    }
    let hash_only = t.elapsed();
    assert_eq!(leaves, entries);
    rows.push([
        format!("export ({entries} entries)"),
        format!("{:.2} s", export.as_secs_f64()),
        "-".into(),
        "-".into(),
    ]);
    rows.push([
        format!("full offline verification ({entries})"),
        format!("{:.2} s", verify.as_secs_f64()),
        format!("{:.2} s", hash_only.as_secs_f64()),
        "≤ 10 s".into(),
    ]);

    let header = ["metric", "openmodel ledger", "peer", "goal"];
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let print = |cells: &[&str]| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    println!();
    print(&header);
    for r in &rows {
        print(&r.each_ref().map(String::as_str));
    }
    println!();
    println!(
        "peer: appends = the same entry bytes INSERTed into a plain SQLite table, same WAL + synchronous=FULL, one transaction each;"
    );
    println!(
        "      proofs = reading one row by index from that table; verification = SHA-256 of every entry bundle's entries only."
    );
}
