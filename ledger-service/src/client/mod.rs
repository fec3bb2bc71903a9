//! One client of the audit log, whichever side of the network it is on.
//!
//! [`AuditLog`] is what the operator's journal and the `openmodel` CLI ask
//! of a ledger: append, query a page, the latest checkpoint, inclusion and
//! consistency proofs. Two implementations:
//!
//! - [`LocalLog`]: a ledger file opened in this process; SQLite calls run on
//!   the blocking pool, never on the async workers.
//! - [`RemoteLog`]: the ledger service over gRPC ([`connect`]), which owns
//!   the mapping of queries to `EntryFilter`s, retries of calls that may be
//!   retried (with jittered, capped back-off), and the
//!   `openmodel-existing-index` answer of an append whose dedupe key is
//!   taken.
//!
//! Errors stay typed end to end: the log's own errors arrive as
//! [`Error::Ledger`], a refusal by the service as [`Error::Refused`] with its
//! gRPC code (see [`Error::code`]).
//!
//! Neither checks signatures: a caller that must not trust the other side
//! opens each [`SignedCheckpoint`] with the log's key and proves entries
//! included (the CLI does; see its `remote` module).

mod connect;
mod local;
mod remote;

use futures::future::BoxFuture;
use openmodel_ledger::checkpoint::SignedCheckpoint;
use openmodel_ledger::entry::Entry;
use openmodel_ledger::hash::Hash;
use openmodel_ledger::proof_file::TlogProof;
use openmodel_ledger::query::{MAX_LIMIT, Page, Query};
use openmodel_ledger::store::StoredEntry;

pub(crate) use connect::error_chain;
pub use connect::{
    AuditClient, Credentials, MAX_REQUEST_BYTES, TOKEN_FILE_REFRESH, append_request, connect,
    connect_expecting, stored_entry,
};
pub(crate) use connect::{PING_INTERVAL, PING_TIMEOUT};
pub use local::LocalLog;
pub(crate) use local::read_blocking;
pub use remote::RemoteLog;

use crate::Result;

/// What an append came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Appended now, at `index`, in a tree of `tree_size` entries.
    New {
        /// The entry's index.
        index: u64,
        /// The tree size of the commit that holds it.
        tree_size: u64,
    },
    /// The dedupe key names an identical entry already logged.
    Existing {
        /// The logged entry's index.
        index: u64,
        /// The tree size when this was answered.
        tree_size: u64,
    },
    /// The dedupe key names an entry logged with other content.
    Conflict {
        /// The logged entry's index.
        index: u64,
        /// The tree size when this was answered.
        tree_size: u64,
    },
}

impl Appended {
    /// The index of the entry that holds the event, and the tree size.
    pub fn position(self) -> (u64, u64) {
        match self {
            Appended::New { index, tree_size }
            | Appended::Existing { index, tree_size }
            | Appended::Conflict { index, tree_size } => (index, tree_size),
        }
    }

    fn from_receipt(index: u64, tree_size: u64, existing: bool) -> Appended {
        if existing {
            Appended::Existing { index, tree_size }
        } else {
            Appended::New { index, tree_size }
        }
    }
}

/// An audit log, local or remote. Object-safe, so callers can hold either
/// as `Arc<dyn AuditLog>`.
pub trait AuditLog: Send + Sync {
    /// Where the log is, for messages ("the ledger file …", "the ledger
    /// service at …").
    fn describe(&self) -> String;

    /// Appends `entry` (valid, no time: the log assigns it). A dedupe key
    /// already taken answers [`Appended::Existing`] or
    /// [`Appended::Conflict`], never an error.
    fn append(&self, entry: Entry) -> BoxFuture<'_, Result<Appended>>;

    /// One page of `query` (at most [`MAX_LIMIT`] entries), against the
    /// latest checkpoint. The ledger service may stop a page early to keep
    /// its answer within its size limit; `next` then says where to go on.
    fn query(&self, query: Query) -> BoxFuture<'_, Result<Page>>;

    /// The latest signed checkpoint.
    fn checkpoint(&self) -> BoxFuture<'_, Result<SignedCheckpoint>>;

    /// A tlog-proof of entry `index`, carrying the entry, under the latest
    /// checkpoint (`tree_size` `None`) or the signed checkpoint of exactly
    /// `tree_size` entries.
    fn prove(&self, index: u64, tree_size: Option<u64>) -> BoxFuture<'_, Result<TlogProof>>;

    /// A consistency proof from the tree of `old_size` entries to that of
    /// `new_size` (at most the latest checkpoint's size).
    fn consistency(&self, old_size: u64, new_size: u64) -> BoxFuture<'_, Result<Vec<Hash>>>;
}

/// Every entry `query` matches from `query.start`, following pages of
/// [`MAX_LIMIT`] until the end of the latest checkpoint.
pub async fn query_all(log: &dyn AuditLog, mut query: Query) -> Result<Vec<StoredEntry>> {
    query.limit = MAX_LIMIT;
    let mut entries = Vec::new();
    loop {
        let page = log.query(query.clone()).await?;
        entries.extend(page.entries);
        match page.next {
            Some(next) => query.start = next,
            None => return Ok(entries),
        }
    }
}
