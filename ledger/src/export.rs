//! Export bundles: everything an auditor needs to verify the log offline.
//!
//! ```text
//! DIR/checkpoint            signed checkpoint (C2SP tlog-checkpoint)
//! DIR/tile/<L>/<N>[.p/<W>]  hash tiles (C2SP tlog-tiles)
//! DIR/tile/entries/<N>[.p/<W>]  entry bundles (C2SP tlog-tiles)
//! DIR/entries.jsonl         one line per entry: {"index","leafHash","entry"}
//! DIR/entries.csv           the same as a table, for spreadsheets
//! DIR/README.txt            how to verify
//! ```
//!
//! The tiles and checkpoint are the evidence; the JSONL and CSV files are
//! conveniences for humans and are not covered by the signature.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use crate::checkpoint::SignedCheckpoint;
use crate::entry::Entry;
use crate::hash::{HASH_SIZE, Hash, leaf_hash};
use crate::store::{Ledger, StoredEntry};
use crate::tiles::{self, TILE_WIDTH};
use crate::tree::{Node, stored_hash_count};
use crate::{Error, Result};

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct ExportReport {
    /// The checkpoint the bundle is consistent with.
    pub checkpoint: SignedCheckpoint,
    /// Hash tiles written.
    pub tiles: u64,
}

fn write(dir: &Path, rel: &str, data: &[u8]) -> Result<()> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    fs::write(&path, data).map_err(|e| Error::io(path, e))
}

const README: &str = "This is an export of an OpenModel audit ledger in the C2SP tlog-tiles layout.\n\
The evidence is `checkpoint` (signed) and `tile/`; entries.jsonl and entries.csv are conveniences.\n\
Verify it offline with the ledger's public key (obtained independently, not from this folder):\n\n\
    openmodel audit verify --bundle . --key '<name>+<id>+<base64>' [--since-checkpoint OLD]\n\n\
Keep the checkpoint after verifying and pass it as --since-checkpoint next time to prove\n\
the log only grew in between.\n";

/// Column names of the CSV form of entries.
pub const CSV_HEADER: [&str; 11] = [
    "index",
    "time",
    "kind",
    "cluster",
    "namespace",
    "name",
    "actor",
    "source",
    "digests",
    "datasets",
    "leaf_hash",
];

/// One entry as a CSV record (columns of [`CSV_HEADER`]).
pub fn csv_row(e: &StoredEntry) -> [String; 11] {
    let entry: &Entry = &e.entry;
    let object = entry.object.as_ref();
    [
        e.index.to_string(),
        entry.time.map(|t| t.to_string()).unwrap_or_default(),
        entry.kind().to_owned(),
        entry.cluster.clone(),
        object.map(|o| o.namespace.clone()).unwrap_or_default(),
        object.map(|o| o.name.clone()).unwrap_or_default(),
        entry
            .actor
            .as_ref()
            .map(|a| a.username.clone())
            .unwrap_or_default(),
        serde_json::to_value(entry.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        entry.digests().join(" "),
        entry.dataset_uris().join(" "),
        leaf_hash(&e.leaf).to_base64(),
    ]
}

/// Entries as CSV text (columns of [`CSV_HEADER`]), with the header when `header`.
pub fn to_csv(entries: &[StoredEntry], header: bool) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    if header {
        w.write_record(CSV_HEADER).expect("writing to memory");
    }
    for e in entries {
        w.write_record(csv_row(e)).expect("writing to memory");
    }
    String::from_utf8(w.into_inner().expect("writing to memory")).expect("CSV of UTF-8 strings")
}

/// Writes a bundle into a folder, one entry and one stored hash at a time:
/// what [`Ledger::export`] does from the file, and what a client does with
/// entries fetched from the ledger service and hashes it recomputed.
///
/// Entries must come in index order; stored hashes in any order. Each entry
/// bundle and hash tile is written once complete; [`BundleWriter::finish`]
/// writes the partial ones, the JSONL and CSV files, the README and, last,
/// the checkpoint, so a bundle whose writing failed has no checkpoint and
/// verifies as incomplete.
pub struct BundleWriter {
    dir: std::path::PathBuf,
    checkpoint: SignedCheckpoint,
    widths: BTreeMap<(u8, u64), tiles::Tile>,
    tiles: BTreeMap<(u8, u64), Vec<u8>>,
    jsonl: Vec<u8>,
    csv: csv::Writer<Vec<u8>>,
    bundle: Vec<Vec<u8>>,
    entries: u64,
    tiles_written: u64,
}

impl BundleWriter {
    /// Starts a bundle of the tree `checkpoint` signed in `dir`, which must
    /// not exist or be empty.
    pub fn create(dir: &Path, checkpoint: SignedCheckpoint) -> Result<BundleWriter> {
        if dir.exists()
            && fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .next()
                .is_some()
        {
            return Err(Error::Unusable(format!(
                "{} is not empty; export into a new folder",
                dir.display()
            )));
        }
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(CSV_HEADER)
            .map_err(|e| Error::InvalidBundle(e.to_string()))?;
        Ok(BundleWriter {
            dir: dir.to_owned(),
            widths: tiles::tiles_for_size(checkpoint.checkpoint.size)
                .into_iter()
                .map(|t| ((t.level, t.index), t))
                .collect(),
            checkpoint,
            tiles: BTreeMap::new(),
            jsonl: Vec::new(),
            csv,
            bundle: Vec::with_capacity(TILE_WIDTH as usize),
            entries: 0,
            tiles_written: 0,
        })
    }

    /// Adds the next entry (index `0, 1, …` in turn).
    pub fn entry(&mut self, e: &StoredEntry) -> Result<()> {
        if e.index != self.entries || e.index >= self.checkpoint.checkpoint.size {
            return Err(Error::Tampered {
                index: self.entries,
                detail: format!(
                    "entry {} came where entry {} of the tree of size {} was due",
                    e.index, self.entries, self.checkpoint.checkpoint.size
                ),
            });
        }
        writeln!(self.jsonl, "{}", e.to_json_line()).expect("writing to memory");
        self.csv
            .write_record(csv_row(e))
            .map_err(|err| Error::InvalidBundle(err.to_string()))?;
        self.bundle.push(e.leaf.clone());
        self.entries += 1;
        if self.bundle.len() as u64 == TILE_WIDTH {
            self.flush_bundle()?;
        }
        Ok(())
    }

    fn flush_bundle(&mut self) -> Result<()> {
        let tile = tiles::Tile {
            level: 0,
            index: (self.entries - 1) / TILE_WIDTH,
            width: self.bundle.len() as u64,
        };
        write(
            &self.dir,
            &tile.entries_path(),
            &tiles::encode_bundle(self.bundle.iter().map(Vec::as_slice))?,
        )?;
        self.bundle.clear();
        Ok(())
    }

    /// Adds stored hash `node` (those in no tile are skipped).
    pub fn hash(&mut self, node: Node, hash: &Hash) -> Result<()> {
        let Some((tile_level, tile_index, position)) = tiles::tile_position(node) else {
            return Ok(());
        };
        let key = (tile_level, tile_index);
        let tile = self.widths.get(&key).ok_or_else(|| Error::Tampered {
            index: node.first_leaf(),
            detail: format!("stored node {node:?} lies outside the signed tree"),
        })?;
        let buf = self.tiles.entry(key).or_default();
        if buf.len() != position * HASH_SIZE {
            return Err(Error::Tampered {
                index: node.first_leaf(),
                detail: format!("stored node {node:?} came out of order"),
            });
        }
        buf.extend_from_slice(&hash.0);
        if buf.len() as u64 == tile.width * HASH_SIZE as u64 {
            write(&self.dir, &tile.path(), buf)?;
            self.tiles.remove(&key);
            self.tiles_written += 1;
        }
        Ok(())
    }

    /// Writes what remains and the checkpoint; every entry and every tiled
    /// hash of the tree must have been added.
    pub fn finish(mut self) -> Result<ExportReport> {
        let size = self.checkpoint.checkpoint.size;
        if self.entries != size {
            return Err(Error::Tampered {
                index: self.entries,
                detail: format!(
                    "{} entries for a tree of size {size}: entries are missing",
                    self.entries
                ),
            });
        }
        if !self.bundle.is_empty() {
            self.flush_bundle()?;
        }
        if let Some((key, _)) = self.tiles.iter().next() {
            return Err(Error::Tampered {
                index: key.1 * TILE_WIDTH,
                detail: format!("stored hashes for tile {key:?} are incomplete"),
            });
        }
        if self.tiles_written != self.widths.len() as u64 {
            return Err(Error::Tampered {
                index: 0,
                detail: format!(
                    "stored hashes are missing: {} of the {} hash tiles of the tree were filled",
                    self.tiles_written,
                    self.widths.len()
                ),
            });
        }
        let csv = self
            .csv
            .into_inner()
            .map_err(|e| Error::InvalidBundle(e.to_string()))?;
        write(&self.dir, "entries.jsonl", &self.jsonl)?;
        write(&self.dir, "entries.csv", &csv)?;
        write(&self.dir, "README.txt", README.as_bytes())?;
        write(&self.dir, "checkpoint", self.checkpoint.note.as_bytes())?;
        Ok(ExportReport {
            tiles: self.tiles_written,
            checkpoint: self.checkpoint,
        })
    }
}

impl Ledger {
    /// Writes a bundle of the log at its latest checkpoint into `dir`, which
    /// must not exist or be empty.
    pub fn export(&self, dir: &Path) -> Result<ExportReport> {
        self.read(|c| {
            let checkpoint = self.checkpoint_in(c)?;
            let size = checkpoint.checkpoint.size;
            let mut writer = BundleWriter::create(dir, checkpoint)?;
            let mut stmt =
                c.prepare("SELECT idx, leaf FROM entries WHERE idx < ?1 ORDER BY idx")?;
            let mut rows = stmt.query([size as i64])?;
            while let Some(row) = rows.next()? {
                writer.entry(&StoredEntry::from_leaf(
                    row.get::<_, i64>(0)? as u64,
                    row.get(1)?,
                )?)?;
            }
            let mut stmt =
                c.prepare("SELECT id, hash FROM tree_nodes WHERE id < ?1 ORDER BY id")?;
            let mut rows = stmt.query([stored_hash_count(size) as i64])?;
            while let Some(row) = rows.next()? {
                let node = Node::from_stored_index(row.get::<_, i64>(0)? as u64);
                let bytes: Vec<u8> = row.get(1)?;
                let hash = Hash::from_slice(&bytes).ok_or_else(|| Error::Tampered {
                    index: node.first_leaf(),
                    detail: format!("stored {} is not 32 bytes", node.describe()),
                })?;
                writer.hash(node, &hash)?;
            }
            writer.finish()
        })
    }
}
