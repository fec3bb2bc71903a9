//! Reading stored tree hashes and entry rows from SQLite.

use rusqlite::{Connection, OptionalExtension, params};

use crate::checkpoint::SignedCheckpoint;
use crate::hash::Hash;
use crate::note::Verifier;
use crate::tree::{HashReader, Node};
use crate::{Error, Result};

/// A [`HashReader`] over the `tree_nodes` table.
pub struct SqlHashes<'c>(pub &'c Connection);

impl HashReader for SqlHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT hash FROM tree_nodes WHERE id = ?1")?;
        indexes
            .iter()
            .map(|&id| {
                let blob: Option<Vec<u8>> = stmt
                    .query_row(params![id as i64], |r| r.get(0))
                    .optional()?;
                let node = Node::from_stored_index(id);
                let blob = blob.ok_or_else(|| Error::Tampered {
                    index: node.first_leaf(),
                    detail: format!("stored hash of node {node:?} is missing"),
                })?;
                Hash::from_slice(&blob).ok_or_else(|| Error::Tampered {
                    index: node.first_leaf(),
                    detail: format!("stored hash of node {node:?} has {} bytes", blob.len()),
                })
            })
            .collect()
    }
}

/// Number of entries (one past the highest index).
pub fn entry_count(conn: &Connection) -> Result<u64> {
    let n: i64 = conn.query_row("SELECT coalesce(max(idx) + 1, 0) FROM entries", [], |r| {
        r.get(0)
    })?;
    Ok(n as u64)
}

/// Reads a `meta` value.
pub fn meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// The ledger's verifier key as stored in `meta`.
pub fn stored_verifier(conn: &Connection) -> Result<Verifier> {
    let key = meta(conn, "verifier_key")?.ok_or_else(|| {
        Error::Unusable("no verifier key in the file: it is not an OpenModel ledger".into())
    })?;
    key.parse()
}

/// The signed note of the largest checkpoint, unverified.
pub fn latest_note(conn: &Connection) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?)
}

/// The largest signed checkpoint, verified with `verifier`.
pub fn latest_checkpoint(
    conn: &Connection,
    verifier: &Verifier,
) -> Result<Option<SignedCheckpoint>> {
    latest_note(conn)?
        .map(|n| SignedCheckpoint::open(&n, verifier))
        .transpose()
}

/// The leaf bytes of entry `index`.
pub fn leaf(conn: &Connection, index: u64) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT leaf FROM entries WHERE idx = ?1")?
        .query_row([index as i64], |r| r.get(0))
        .optional()?)
}
