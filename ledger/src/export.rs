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
use crate::hash::leaf_hash;
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

impl Ledger {
    /// Writes a bundle of the log at its latest checkpoint into `dir`, which
    /// must not exist or be empty.
    pub fn export(&self, dir: &Path) -> Result<ExportReport> {
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
        self.read(|c| {
            let checkpoint = self.checkpoint_in(c)?;
            let size = checkpoint.checkpoint.size;

            let mut jsonl = Vec::new();
            let mut csv = csv::Writer::from_writer(Vec::new());
            csv.write_record(CSV_HEADER)
                .map_err(|e| Error::InvalidBundle(e.to_string()))?;
            let mut stmt =
                c.prepare("SELECT idx, leaf FROM entries WHERE idx < ?1 ORDER BY idx")?;
            let mut rows = stmt.query([size as i64])?;
            let mut bundle: Vec<Vec<u8>> = Vec::with_capacity(TILE_WIDTH as usize);
            let mut bundle_index = 0;
            let flush = |bundle: &mut Vec<Vec<u8>>, index: u64| -> Result<()> {
                let tile = tiles::Tile {
                    level: 0,
                    index,
                    width: bundle.len() as u64,
                };
                write(
                    dir,
                    &tile.entries_path(),
                    &tiles::encode_bundle(bundle.iter().map(Vec::as_slice))?,
                )?;
                bundle.clear();
                Ok(())
            };
            while let Some(row) = rows.next()? {
                let e = StoredEntry::from_leaf(row.get::<_, i64>(0)? as u64, row.get(1)?)?;
                writeln!(jsonl, "{}", e.to_json_line()).expect("writing to memory");
                csv.write_record(csv_row(&e))
                    .map_err(|err| Error::InvalidBundle(err.to_string()))?;
                bundle.push(e.leaf);
                if bundle.len() as u64 == TILE_WIDTH {
                    flush(&mut bundle, bundle_index)?;
                    bundle_index += 1;
                }
            }
            if !bundle.is_empty() {
                flush(&mut bundle, bundle_index)?;
            }

            let widths: BTreeMap<(u8, u64), tiles::Tile> = tiles::tiles_for_size(size)
                .into_iter()
                .map(|t| ((t.level, t.index), t))
                .collect();
            let mut buffers: BTreeMap<(u8, u64), Vec<u8>> = BTreeMap::new();
            let mut stmt =
                c.prepare("SELECT id, hash FROM tree_nodes WHERE id < ?1 ORDER BY id")?;
            let mut rows = stmt.query([stored_hash_count(size) as i64])?;
            while let Some(row) = rows.next()? {
                let node = Node::from_stored_index(row.get::<_, i64>(0)? as u64);
                let Some((tile_level, tile_index, _)) = tiles::tile_position(node) else {
                    continue;
                };
                let key = (tile_level, tile_index);
                let buf = buffers.entry(key).or_default();
                buf.extend_from_slice(&row.get::<_, Vec<u8>>(1)?);
                let tile = widths.get(&key).ok_or_else(|| Error::Tampered {
                    index: node.first_leaf(),
                    detail: format!("stored node {node:?} lies outside the signed tree"),
                })?;
                if buf.len() as u64 == tile.width * 32 {
                    write(dir, &tile.path(), buf)?;
                    buffers.remove(&key);
                }
            }
            if let Some((key, _)) = buffers.into_iter().next() {
                return Err(Error::Tampered {
                    index: key.1 * TILE_WIDTH,
                    detail: format!("stored hashes for tile {key:?} are incomplete"),
                });
            }

            write(dir, "entries.jsonl", &jsonl)?;
            write(
                dir,
                "entries.csv",
                &csv.into_inner()
                    .map_err(|e| Error::InvalidBundle(e.to_string()))?,
            )?;
            write(dir, "README.txt", README.as_bytes())?;
            write(dir, "checkpoint", checkpoint.note.as_bytes())?;
            Ok(ExportReport {
                tiles: widths.len() as u64,
                checkpoint,
            })
        })
    }
}
