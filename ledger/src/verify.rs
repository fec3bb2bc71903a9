//! Full verification: of a ledger file, and of an exported bundle offline.
//!
//! Both replay every entry in index order through [`Replay`], which checks
//! that the leaf parses as an entry, is canonical JSON and does not go back
//! in time, and recomputes every stored hash. The ledger check compares them
//! with the `tree_nodes` table, the query columns and every signed
//! checkpoint; the bundle check compares them with the hash tiles and the
//! bundle's signed checkpoint, and checks consistency with an older
//! checkpoint the auditor kept. The first difference is reported with the
//! first entry index it affects.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use rusqlite::Connection;

use crate::checkpoint::SignedCheckpoint;
use crate::entry::{Entry, Timestamp};
use crate::hash::{HASH_SIZE, Hash, empty_root, leaf_hash};
use crate::note::Verifier;
use crate::store::{Ledger, entry_refs};
use crate::tiles::{self, TILE_WIDTH, Tile};
use crate::tree::{Frontier, Node};
use crate::{Error, Result};

/// What the order-independent check of one leaf found.
pub struct CheckedLeaf {
    /// The parsed entry.
    pub entry: Entry,
    /// Its leaf hash.
    pub hash: Hash,
}

/// Checks one leaf on its own: it parses as a logged entry and is exactly
/// that entry's canonical form. Independent of other leaves, so verifiers
/// run it in parallel.
pub fn check_leaf(index: u64, leaf: &[u8]) -> Result<CheckedLeaf> {
    let tampered = |detail: String| Error::Tampered { index, detail };
    let entry =
        Entry::parse_logged(leaf).map_err(|e| tampered(format!("entry does not parse: {e}")))?;
    if !entry.is_canonical_form_of(leaf) {
        return Err(tampered(
            "entry bytes are not the RFC 8785 canonical form of the entry".into(),
        ));
    }
    Ok(CheckedLeaf {
        hash: leaf_hash(leaf),
        entry,
    })
}

/// Replays a log from its first entry: the order-dependent checks.
#[derive(Default)]
pub struct Replay {
    frontier: Frontier,
    last_time: Option<Timestamp>,
}

impl Replay {
    /// Entries replayed so far.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Root of the entries replayed so far.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Appends the next checked leaf after checking that time did not go
    /// backwards; returns the stored hashes it creates (from
    /// `Node { level: 0, index }.stored_index()` on).
    pub fn push(&mut self, leaf: &CheckedLeaf) -> Result<Vec<Hash>> {
        let index = self.frontier.size();
        let time = leaf.entry.time.expect("logged entries carry time");
        if let Some(last) = self.last_time.filter(|last| time < *last) {
            return Err(Error::Tampered {
                index,
                detail: format!(
                    "time {time} is earlier than the previous entry's {last}; the ledger never goes back in time"
                ),
            });
        }
        self.last_time = Some(time);
        Ok(self.frontier.push(leaf.hash))
    }
}

/// What a successful ledger check covered.
#[derive(Clone, Debug)]
pub struct LedgerReport {
    /// The latest signed checkpoint.
    pub checkpoint: Option<SignedCheckpoint>,
    /// Signed checkpoints checked against the recomputed tree.
    pub checkpoints: u64,
}

impl Ledger {
    /// Recomputes the whole stored tree and checks every row against it.
    pub fn verify_stored(&self) -> Result<LedgerReport> {
        self.verify_stored_with(&self.verifier().clone())
    }

    /// As [`Ledger::verify_stored`], with the auditor's own copy of the key.
    pub fn verify_stored_with(&self, verifier: &Verifier) -> Result<LedgerReport> {
        self.read(|c| verify_ledger(c, verifier))
    }
}

fn column_check(
    index: u64,
    column: &str,
    stored: Option<&str>,
    derived: Option<&str>,
) -> Result<()> {
    if stored != derived {
        return Err(Error::Tampered {
            index,
            detail: format!("column {column} holds {stored:?} but the entry says {derived:?}"),
        });
    }
    Ok(())
}

fn verify_ledger(c: &Connection, verifier: &Verifier) -> Result<LedgerReport> {
    let mut checkpoints = BTreeMap::new();
    let mut stmt = c.prepare("SELECT size, note FROM checkpoints ORDER BY size")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (size, note): (i64, String) = (row.get(0)?, row.get(1)?);
        let signed = SignedCheckpoint::open(&note, verifier).map_err(|e| match e {
            Error::BadSignature(m) => {
                Error::BadSignature(format!("checkpoint of size {size}: {m}"))
            }
            other => other,
        })?;
        if signed.checkpoint.size != size as u64 {
            return Err(Error::Tampered {
                index: size as u64,
                detail: format!(
                    "checkpoint row {size} holds a checkpoint of size {}",
                    signed.checkpoint.size
                ),
            });
        }
        checkpoints.insert(size as u64, signed);
    }
    let latest = checkpoints.values().next_back().cloned();
    let size = latest.as_ref().map_or(0, |cp| cp.checkpoint.size);

    let mut entries = c.prepare(
        "SELECT idx, leaf, kind, time_us, namespace, name, actor, dedupe_key FROM entries ORDER BY idx",
    )?;
    let mut entries = entries.query([])?;
    let mut nodes = c.prepare("SELECT id, hash FROM tree_nodes ORDER BY id")?;
    let mut nodes = nodes.query([])?;
    let mut refs =
        c.prepare("SELECT idx, field, value FROM entry_refs ORDER BY idx, field, value")?;
    let mut refs = refs.query([])?;
    let mut pending_ref: Option<(u64, String, String)> = None;
    let mut replay = Replay::default();
    let mut prev_checkpoint = 0;

    while let Some(row) = entries.next()? {
        let index = replay.size();
        let idx = row.get::<_, i64>(0)? as u64;
        if idx != index {
            return Err(Error::Tampered {
                index,
                detail: format!("entry {index} is missing (next stored index is {idx})"),
            });
        }
        if index >= size {
            return Err(Error::Tampered {
                index,
                detail: format!("entry beyond the latest signed checkpoint (size {size})"),
            });
        }
        let leaf: Vec<u8> = row.get(1)?;
        let checked = check_leaf(index, &leaf)?;
        let created = replay.push(&checked)?;
        let entry = checked.entry;
        column_check(
            index,
            "kind",
            row.get::<_, Option<String>>(2)?.as_deref(),
            Some(entry.kind()),
        )?;
        let time: i64 = row.get(3)?;
        if Some(Timestamp(time)) != entry.time {
            return Err(Error::Tampered {
                index,
                detail: format!(
                    "column time_us holds {time} but the entry says {:?}",
                    entry.time
                ),
            });
        }
        let object = entry.object.as_ref();
        column_check(
            index,
            "namespace",
            row.get::<_, Option<String>>(4)?.as_deref(),
            object.map(|o| o.namespace.as_str()),
        )?;
        column_check(
            index,
            "name",
            row.get::<_, Option<String>>(5)?.as_deref(),
            object.map(|o| o.name.as_str()),
        )?;
        let actor = entry.actor.as_ref().map(|a| a.username.as_str());
        column_check(
            index,
            "actor",
            row.get::<_, Option<String>>(6)?.as_deref(),
            actor,
        )?;
        column_check(
            index,
            "dedupe_key",
            row.get::<_, Option<String>>(7)?.as_deref(),
            entry.dedupe_key.as_deref(),
        )?;

        for (field, value) in entry_refs(&entry) {
            let next = match pending_ref.take() {
                Some(r) => Some(r),
                None => refs
                    .next()?
                    .map(|r| {
                        Ok::<_, rusqlite::Error>((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
                    })
                    .transpose()?,
            };
            if next.as_ref().map(|(i, f, v)| (*i, f.as_str(), v.as_str()))
                != Some((index, field, value))
            {
                return Err(Error::Tampered {
                    index,
                    detail: format!("query reference {field}={value} is missing or altered"),
                });
            }
        }
        if pending_ref.is_none() {
            pending_ref = refs
                .next()?
                .map(|r| {
                    Ok::<_, rusqlite::Error>((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
                })
                .transpose()?;
        }
        if let Some((i, f, v)) = &pending_ref
            && *i <= index
        {
            return Err(Error::Tampered {
                index: *i,
                detail: format!("extra query reference {f}={v}"),
            });
        }

        let first = Node { level: 0, index }.stored_index();
        for (k, want) in created.iter().enumerate() {
            let id = first + k as u64;
            let node = Node::from_stored_index(id);
            let stored = nodes.next()?;
            let (got_id, got): (i64, Vec<u8>) = match stored {
                Some(r) => (r.get(0)?, r.get(1)?),
                None => (-1, Vec::new()),
            };
            if got_id != id as i64 {
                return Err(Error::Tampered {
                    index: node.first_leaf(),
                    detail: format!("stored hash {id} (node {node:?}) is missing"),
                });
            }
            if got != want.0 {
                return Err(Error::Tampered {
                    index: node.first_leaf(),
                    detail: format!(
                        "stored {} differs from the one recomputed from the entries",
                        node.describe()
                    ),
                });
            }
        }
        if let Some(cp) = checkpoints.get(&replay.size()) {
            if cp.checkpoint.root != replay.root() {
                return Err(Error::Tampered {
                    index: prev_checkpoint,
                    detail: format!(
                        "entries {prev_checkpoint}..{} no longer hash to the root signed in the checkpoint of size {}: they were rewritten",
                        replay.size(),
                        replay.size()
                    ),
                });
            }
            prev_checkpoint = replay.size();
        }
    }
    if replay.size() != size {
        return Err(Error::Tampered {
            index: replay.size(),
            detail: format!(
                "{} entries stored, the latest signed checkpoint covers {size}",
                replay.size()
            ),
        });
    }
    if let Some(r) = nodes.next()? {
        let id: i64 = r.get(0)?;
        return Err(Error::Tampered {
            index: Node::from_stored_index(id as u64).first_leaf(),
            detail: format!("stored hash {id} lies beyond the tree"),
        });
    }
    if let Some((i, f, v)) = pending_ref {
        return Err(Error::Tampered {
            index: i,
            detail: format!("extra query reference {f}={v}"),
        });
    }
    Ok(LedgerReport {
        checkpoints: checkpoints.len() as u64,
        checkpoint: latest,
    })
}

/// What a successful bundle check covered.
#[derive(Clone, Debug)]
pub struct BundleReport {
    /// The bundle's signed checkpoint (keep it for the next check).
    pub checkpoint: SignedCheckpoint,
    /// The older checkpoint proven consistent with it, when one was given.
    pub consistent_with: Option<SignedCheckpoint>,
}

/// Reads hash tiles of one level in order, keeping only the current tile.
struct TileCursor {
    tile: Option<(u64, Vec<u8>)>,
}

fn read_file(dir: &Path, rel: &str) -> Result<Vec<u8>> {
    let path = dir.join(rel);
    fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::InvalidBundle(format!("{rel} is missing from the bundle"))
        } else {
            Error::io(path, e)
        }
    })
}

/// Reads and checks entry bundles in parallel, keeping their order. Each
/// bundle yields its leaves' results up to and including the first failure.
fn check_bundles(
    dir: &Path,
    bundles: &[Tile],
    workers: usize,
) -> Vec<Result<Vec<Result<CheckedLeaf>>>> {
    let check = |bundle: &Tile| -> Result<Vec<Result<CheckedLeaf>>> {
        let data = read_file(dir, &bundle.entries_path())?;
        let leaves = tiles::decode_bundle(&data, bundle.width).map_err(|e| Error::Tampered {
            index: bundle.index * TILE_WIDTH,
            detail: format!("{}: {e}", bundle.entries_path()),
        })?;
        let mut out = Vec::with_capacity(leaves.len());
        for (k, leaf) in leaves.iter().enumerate() {
            let checked = check_leaf(bundle.index * TILE_WIDTH + k as u64, leaf);
            let failed = checked.is_err();
            out.push(checked);
            if failed {
                break;
            }
        }
        Ok(out)
    };
    let mut results: Vec<Option<Result<Vec<Result<CheckedLeaf>>>>> =
        bundles.iter().map(|_| None).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    bundles
                        .iter()
                        .enumerate()
                        .skip(w)
                        .step_by(workers)
                        .map(|(i, b)| (i, check(b)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, r) in h.join().expect("bundle checker panicked") {
                results[i] = Some(r);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every bundle checked"))
        .collect()
}

/// Verifies an export bundle offline with only the log's verifier key, and
/// optionally its consistency with an older signed checkpoint `since`.
pub fn verify_bundle(dir: &Path, verifier: &Verifier, since: Option<&str>) -> Result<BundleReport> {
    let note = String::from_utf8(read_file(dir, "checkpoint")?)
        .map_err(|_| Error::InvalidBundle("checkpoint is not UTF-8".into()))?;
    let checkpoint = SignedCheckpoint::open(&note, verifier)?;
    let size = checkpoint.checkpoint.size;
    let old = since
        .map(|n| {
            SignedCheckpoint::open(n, verifier).map_err(|e| match e {
                Error::BadSignature(m) => {
                    Error::BadSignature(format!("the older checkpoint you kept: {m}"))
                }
                other => other,
            })
        })
        .transpose()?;
    if let Some(old) = &old {
        let (m, r) = (old.checkpoint.size, old.checkpoint.root);
        if m > size {
            return Err(Error::Fork(format!(
                "the checkpoint you kept has {m} entries but the bundle's has only {size}: the log was rolled back, or you are being shown a different log"
            )));
        }
        if m == 0 && r != empty_root() {
            return Err(Error::Fork(format!(
                "the checkpoint you kept claims an empty tree with root {r}, not SHA-256(\"\")"
            )));
        }
        if m == size && r != checkpoint.checkpoint.root {
            return Err(Error::Fork(format!(
                "two signed checkpoints of size {size} with different roots ({} and {}): the log has forked",
                r, checkpoint.checkpoint.root
            )));
        }
    }

    let widths: BTreeMap<(u8, u64), Tile> = tiles::tiles_for_size(size)
        .into_iter()
        .map(|t| ((t.level, t.index), t))
        .collect();
    let mut cursors: Vec<TileCursor> = Vec::new();
    let mut replay = Replay::default();
    let bundles = tiles::bundles_for_size(size);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    for round in bundles.chunks(workers * 16) {
        for leaves in check_bundles(dir, round, workers) {
            for leaf in leaves? {
                let leaf = leaf?;
                let index = replay.size();
                let created = replay.push(&leaf)?;
                let first = Node { level: 0, index }.stored_index();
                for (k, h) in created.iter().enumerate() {
                    let node = Node::from_stored_index(first + k as u64);
                    let Some((tile_level, tile_index, position)) = tiles::tile_position(node)
                    else {
                        continue;
                    };
                    let tile = widths[&(tile_level, tile_index)];
                    if cursors.len() <= usize::from(tile_level) {
                        cursors
                            .resize_with(usize::from(tile_level) + 1, || TileCursor { tile: None });
                    }
                    let cursor = &mut cursors[usize::from(tile_level)];
                    if cursor.tile.as_ref().is_none_or(|(i, _)| *i != tile_index) {
                        let bytes = read_file(dir, &tile.path())?;
                        if bytes.len() as u64 != tile.width * HASH_SIZE as u64 {
                            return Err(Error::Tampered {
                                index: node.first_leaf(),
                                detail: format!(
                                    "{} has {} bytes, expected {}",
                                    tile.path(),
                                    bytes.len(),
                                    tile.width * HASH_SIZE as u64
                                ),
                            });
                        }
                        cursor.tile = Some((tile_index, bytes));
                    }
                    let (_, bytes) = cursor.tile.as_ref().expect("loaded");
                    let at = position * HASH_SIZE;
                    if bytes[at..at + HASH_SIZE] != h.0 {
                        return Err(Error::Tampered {
                            index: node.first_leaf(),
                            detail: format!(
                                "{} holds a {} that differs from the one recomputed from the entries",
                                tile.path(),
                                node.describe()
                            ),
                        });
                    }
                }
                if let Some(old) = &old
                    && replay.size() == old.checkpoint.size
                    && replay.root() != old.checkpoint.root
                {
                    return Err(Error::Fork(format!(
                        "the first {} entries of the bundle hash to {}, but the checkpoint you kept signed {}: the log was rewritten, not appended to",
                        replay.size(),
                        replay.root(),
                        old.checkpoint.root
                    )));
                }
            }
        }
    }
    if replay.root() != checkpoint.checkpoint.root {
        return Err(Error::RootMismatch(format!(
            "the bundle's {size} entries hash to {}, but its checkpoint signed {}: entries and tiles were rewritten together",
            replay.root(),
            checkpoint.checkpoint.root
        )));
    }
    Ok(BundleReport {
        checkpoint,
        consistent_with: old,
    })
}
