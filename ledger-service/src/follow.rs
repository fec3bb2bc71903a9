//! `WatchEntries`: page through the matching entries already logged, then
//! wait for the tree to grow and page on. Growth is announced on the
//! service's watch channel of tree sizes (the service is the ledger's one
//! writer, so every append passes by it).
//!
//! The permission is checked again before each message (a cached decision
//! costs nothing), so revoking it ends the stream within the cache's TTL.
//! The stream ends by itself when an `until` bound has been passed, when the
//! client goes away, and when the service stops.

use std::sync::Arc;

use openmodel_proto::audit::WatchEntriesResponse;
use tokio::sync::mpsc;
use tonic::Status;

use crate::authz::{Need, User};
use crate::filter::logged;
use crate::grpc::status;
use openmodel_runtime::shutdown::until_stopped;

use crate::{Access, Shared};
use crate::{Error, Result};
use openmodel_ledger::query::Query;

/// Most entries in one message.
pub(crate) const PAGE: usize = 1000;

/// Where the stream stands after one page.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// More is logged already: read on.
    Read,
    /// Caught up with the tree of this size: wait until it grows.
    WaitBeyond(u64),
    /// The `until` bound lies inside the tree: no later entry can match.
    Done,
}

/// What to do after a page that scanned up to `scanned_end` of a tree of
/// `size` entries, with or without more to read.
fn next_step(more: bool, scanned_end: u64, size: u64) -> Next {
    if more {
        Next::Read
    } else if scanned_end < size {
        // Without `more`, a scan stops short of the tree only at `until`:
        // times never decrease, so every later entry is past it too.
        Next::Done
    } else {
        Next::WaitBeyond(size)
    }
}

/// Streams the entries matching `query` to `tx` (see the module docs).
pub(crate) async fn follow<A: Access>(
    shared: Arc<Shared<A>>,
    user: User,
    need: Need,
    query: Query,
    tx: mpsc::Sender<Result<WatchEntriesResponse, Status>>,
) {
    if let Err(error) = run(&shared, &user, &need, query, &tx).await {
        let _ = tx.send(Err(status(error))).await;
    }
}

async fn run<A: Access>(
    shared: &Shared<A>,
    user: &User,
    need: &Need,
    mut query: Query,
    tx: &mpsc::Sender<Result<WatchEntriesResponse, Status>>,
) -> Result<()> {
    let mut sizes = shared.size.subscribe();
    let mut stopping = shared.stopping.clone();
    loop {
        // Mark the current size seen before reading, so an append that
        // commits during the read wakes the wait below.
        sizes.borrow_and_update();
        let page_query = query.clone();
        let page = shared.read(move |l| l.query(&page_query)).await?;
        query.start = query.start.max(page.next.unwrap_or(page.scanned.end));
        let size = page.checkpoint.checkpoint.size;
        if !page.entries.is_empty() {
            shared.gate.authorize(user, need).await?;
            let message = WatchEntriesResponse {
                entries: page.entries.into_iter().map(logged).collect(),
                checkpoint: page.checkpoint.note,
                scanned_end: query.start,
            };
            if tx.send(Ok(message)).await.is_err() {
                return Ok(()); // The client went away.
            }
        }
        let beyond = match next_step(page.next.is_some(), page.scanned.end, size) {
            Next::Read => continue,
            Next::Done => return Ok(()),
            Next::WaitBeyond(size) => size,
        };
        while *sizes.borrow_and_update() <= beyond {
            tokio::select! {
                changed = sizes.changed() => if changed.is_err() {
                    return Ok(()); // The service is gone.
                },
                () = tx.closed() => return Ok(()),
                () = until_stopped(&mut stopping) => {
                    return Err(Error::Transport(format!(
                        "the ledger service is shutting down; watch again from index {}",
                        query.start
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_reads_on_waits_or_ends() {
        assert_eq!(next_step(true, 10, 50), Next::Read);
        assert_eq!(next_step(false, 50, 50), Next::WaitBeyond(50));
        assert_eq!(next_step(false, 30, 50), Next::Done, "until lies at 30");
    }
}
