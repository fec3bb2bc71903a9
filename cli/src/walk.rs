//! Reads the log in order and proves that what was read is exactly the
//! signed tree, or with a time bound its prefix up to that time: for
//! `export`, `inventory` and `verify` against a server.
//!
//! Every leaf is checked on its own (it parses, it is canonical), time must
//! not go back, and the tree is recomputed from the leaves as received. At
//! the end the recomputed root must be the checkpoint's; for a prefix (the
//! walk stopped at the first entry after the time bound), a consistency
//! proof from the recomputed prefix root to the checkpoint's root shows the
//! prefix is the signed log's. Because the ledger's times never decrease,
//! that prefix holds every entry logged up to the bound.

use std::ops::ControlFlow;

use anyhow::Result;
use openmodel_ledger::Error as LedgerError;
use openmodel_ledger::checkpoint::SignedCheckpoint;
use openmodel_ledger::entry::Timestamp;
use openmodel_ledger::hash::Hash;
use openmodel_ledger::query::{MAX_LIMIT, Query};
use openmodel_ledger::store::StoredEntry;
use openmodel_ledger::tree::{Node, verify_consistency};
use openmodel_ledger::verify::{Replay, check_leaf};

use crate::source::Source;

/// Calls `visit` with each entry of the tree `checkpoint` signed, in index
/// order, and the stored hashes (nodes) the entry completes; with `until`,
/// stops before the first entry logged after it. Returns how many entries
/// were visited, once they are proven to be the signed log (or its prefix).
pub fn walk(
    source: &mut Source,
    checkpoint: &SignedCheckpoint,
    until: Option<Timestamp>,
    mut visit: impl FnMut(&StoredEntry, &[(Node, Hash)]) -> Result<()>,
) -> Result<u64> {
    let cp = &checkpoint.checkpoint;
    let mut replay = Replay::default();
    let mut read = |replay: &mut Replay, entry: &StoredEntry| -> Result<ControlFlow<()>> {
        let index = replay.size();
        if entry.index != index {
            return Err(LedgerError::Tampered {
                index,
                detail: format!(
                    "entry {index} is missing from the answer (entry {} came instead)",
                    entry.index
                ),
            }
            .into());
        }
        let checked = check_leaf(index, &entry.leaf)?;
        if until.is_some_and(|t| checked.entry.time.is_some_and(|time| time > t)) {
            return Ok(ControlFlow::Break(()));
        }
        let first = Node { level: 0, index }.stored_index();
        let nodes: Vec<(Node, Hash)> = replay
            .push(&checked)?
            .into_iter()
            .enumerate()
            .map(|(k, hash)| (Node::from_stored_index(first + k as u64), hash))
            .collect();
        visit(entry, &nodes)?;
        Ok(ControlFlow::Continue(()))
    };
    'pages: while replay.size() < cp.size {
        let query = Query {
            start: replay.size(),
            limit: MAX_LIMIT,
            ..Query::default()
        };
        let page = source.query(&query, false)?;
        let entries: Vec<&StoredEntry> = page
            .entries
            .iter()
            .take_while(|e| e.index < cp.size)
            .collect();
        if entries.is_empty() {
            return Err(LedgerError::Tampered {
                index: replay.size(),
                detail: format!(
                    "{} answered no entries from index {} on, but its checkpoint covers {}",
                    source.describe(),
                    replay.size(),
                    cp.size
                ),
            }
            .into());
        }
        for entry in entries {
            if read(&mut replay, entry)?.is_break() {
                break 'pages;
            }
        }
    }
    let walked = replay.size();
    if walked == cp.size {
        if replay.root() != cp.root {
            return Err(LedgerError::RootMismatch(format!(
                "the {walked} entries {} served hash to {}, but its checkpoint signed {}",
                source.describe(),
                replay.root(),
                cp.root
            ))
            .into());
        }
    } else if walked > 0 {
        let proof = source.consistency(walked, cp.size)?;
        verify_consistency(walked, cp.size, &replay.root().0, &cp.root.0, &proof).map_err(|e| {
            LedgerError::ProofFailed(format!(
                "the first {walked} entries {} served are not the start of its signed tree of \
                 size {}: {e}",
                source.describe(),
                cp.size
            ))
        })?;
    }
    Ok(walked)
}
