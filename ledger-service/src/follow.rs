//! `WatchEntries`: page through the matching entries already logged, then
//! wait for the tree to grow and page on. Growth is announced on the
//! service's watch channel of tree sizes (the service is the ledger's one
//! writer, so every append passes by it).
//!
//! Each message holds at most `--watch-message-bytes` (the page stops early
//! and the next one goes on from there), and the stream holds at most one
//! message its client has not taken (an [`Outbox`] of one slot): a client
//! that takes nothing for `--watch-send-timeout` is dropped, the untaken
//! message replaced by a `RESOURCE_EXHAUSTED` status that says from where
//! to watch again.
//!
//! The permission is checked again before each message (a cached decision
//! costs nothing), so revoking it ends the stream within the cache's TTL.
//! The stream ends by itself when an `until` bound has been passed, when the
//! client goes away, and when the service stops.

use std::sync::Arc;

use openmodel_proto::audit::WatchEntriesResponse;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

use crate::authz::{Need, User};
use crate::filter::logged;
use crate::grpc::status;
use crate::outbox::{Outbox, Unsent};
use openmodel_runtime::shutdown::until_stopped;

use crate::{Access, Shared};
use crate::{Error, Result};
use openmodel_ledger::query::Query;

/// Most entries in one message.
pub(crate) const PAGE: usize = 1000;

/// What a watch sends.
type Item = Result<WatchEntriesResponse, Status>;

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

/// How far the client has been served: the `scanned_end` of the last
/// message it took, and of the last one put in its outbox (taken or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Served {
    taken: u64,
    put: u64,
}

impl Served {
    fn from(start: u64) -> Served {
        Served {
            taken: start,
            put: start,
        }
    }

    /// A message reaching `end` went into an empty slot: whatever was put
    /// before has been taken.
    fn put(&mut self, end: u64) {
        self.taken = self.put;
        self.put = end;
    }
}

/// Why a watch stopped before its end.
enum Stop {
    /// The client went away.
    Gone,
    /// The client did not take a message in time.
    Unread,
    /// Reading or authorizing failed, or the service is stopping.
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Stop {
        Stop::Failed(error)
    }
}

/// The status of a client dropped for not reading.
fn unread(timeout: std::time::Duration, served: Served) -> Status {
    status(Error::ResourceExhausted(format!(
        "this watch was dropped: its client took no message for {timeout:?} \
         (--watch-send-timeout); watch again from index {}, the scanned_end of the last message \
         received",
        served.taken
    )))
}

/// Streams the entries matching `query` into `outbox` (see the module
/// docs), holding `open` (its place among the open watches) until it ends.
pub(crate) async fn follow<A: Access>(
    shared: Arc<Shared<A>>,
    user: User,
    need: Need,
    query: Query,
    outbox: Outbox<Item>,
    open: OwnedSemaphorePermit,
) {
    let patience = shared.limits.watch_send_timeout;
    let mut served = Served::from(query.start);
    match run(&shared, &user, &need, query, &outbox, &mut served).await {
        Ok(()) | Err(Stop::Gone) => {}
        Err(Stop::Unread) => outbox.finish_with(Err(unread(patience, served))),
        Err(Stop::Failed(error)) => {
            if let Err(Unsent::Unread(_)) = outbox.send(Err(status(error)), patience).await {
                outbox.finish_with(Err(unread(patience, served)));
            }
        }
    }
    drop(open);
}

async fn run<A: Access>(
    shared: &Shared<A>,
    user: &User,
    need: &Need,
    mut query: Query,
    outbox: &Outbox<Item>,
    served: &mut Served,
) -> Result<(), Stop> {
    let mut sizes = shared.size.subscribe();
    let mut stopping = shared.stopping.clone();
    let budget = shared.limits.watch_budget(query.limit);
    loop {
        // Mark the current size seen before reading, so an append that
        // commits during the read wakes the wait below.
        sizes.borrow_and_update();
        let page_query = query.clone();
        let page = shared.read_page(user, page_query, budget).await?;
        query.start = query.start.max(page.next.unwrap_or(page.scanned.end));
        let size = page.checkpoint.checkpoint.size;
        if !page.entries.is_empty() {
            shared.gate.authorize(user, need).await?;
            let message = WatchEntriesResponse {
                entries: page
                    .entries
                    .into_iter()
                    .map(|e| logged(e.index, e.bytes))
                    .collect(),
                checkpoint: page.checkpoint.note,
                scanned_end: query.start,
            };
            match outbox
                .send(Ok(message), shared.limits.watch_send_timeout)
                .await
            {
                Ok(()) => served.put(query.start),
                Err(Unsent::Gone) => return Err(Stop::Gone),
                Err(Unsent::Unread(_)) => return Err(Stop::Unread),
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
                () = outbox.closed() => return Err(Stop::Gone),
                () = until_stopped(&mut stopping) => {
                    return Err(Stop::Failed(Error::Transport(format!(
                        "the ledger service is shutting down; watch again from index {}",
                        query.start
                    ))));
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

    #[test]
    fn a_dropped_client_is_told_to_go_on_from_the_last_message_it_took() {
        let mut served = Served::from(5);
        served.put(10);
        assert_eq!(served, Served { taken: 5, put: 10 });
        served.put(20);
        assert_eq!(served, Served { taken: 10, put: 20 }, "10 was taken");
        let status = unread(std::time::Duration::from_secs(10), served);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("from index 10")
                && status.message().contains("--watch-send-timeout"),
            "{}",
            status.message()
        );
    }
}
