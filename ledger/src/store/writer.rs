//! The writer thread and group commit.
//!
//! Appenders send entries over a channel and wait for their receipt. The
//! writer takes every request that is waiting, appends them all in one
//! immediate transaction (rows, stored hashes, a new signed checkpoint),
//! commits with a full fsync, and only then answers each appender. Under
//! load, requests that arrive while a commit is being synced form the next
//! batch, so many appenders share one fsync.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::entry::{Entry, LeafTemplate, Timestamp};
use crate::hash::{Hash, leaf_hash};
use crate::note::Signer;
use crate::store::nodes::{SqlHashes, entry_count};
use crate::store::{LastCheckpoint, remember};
use crate::tree::{Frontier, Node};
use crate::{Error, Result};

/// Most appends committed in one transaction.
pub const MAX_BATCH: usize = 4096;

/// Longest a batch waits for appenders of the previous batch to come back.
pub const COMMIT_DELAY: Duration = Duration::from_micros(300);

/// Proof that an entry is in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The entry's index.
    pub index: u64,
    /// Its leaf hash.
    pub leaf_hash: Hash,
    /// The time the ledger assigned.
    pub time: Timestamp,
    /// Size of the signed tree that includes it.
    pub tree_size: u64,
    /// True when the dedupe key named an entry already logged, which is
    /// what this receipt describes; nothing new was appended.
    pub existing: bool,
}

/// Where the answer to one append goes: a thread blocked in
/// [`crate::Ledger::append`] (a std channel, so it may block anywhere, even
/// on a thread that runs an async runtime) or a future awaiting it.
pub enum ReplyTo {
    /// A blocking appender.
    Blocking(std::sync::mpsc::SyncSender<Result<Receipt>>),
    /// An async appender (or one that waits with [`crate::store::PendingAppend`]).
    Async(oneshot::Sender<Result<Receipt>>),
}

impl ReplyTo {
    /// Answers the appender; one that stopped waiting is not an error.
    fn send(self, result: Result<Receipt>) {
        match self {
            ReplyTo::Blocking(tx) => {
                let _ = tx.send(result);
            }
            ReplyTo::Async(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// An answer to one appender.
type Reply = (ReplyTo, Result<Receipt>);

/// One append waiting for the writer.
pub struct Request {
    pub(crate) entry: Entry,
    /// The entry's canonical bytes, made by the appender; the writer only
    /// fills in the time.
    pub(crate) template: LeafTemplate,
    pub(crate) reply: ReplyTo,
}

/// State owned by the writer thread.
pub struct Writer {
    conn: Connection,
    signer: Signer,
    frontier: Frontier,
    last_time: Timestamp,
    /// Where each checkpoint it signs is published once committed.
    published: LastCheckpoint,
}

/// What happened to one request inside a batch, before the commit.
enum Outcome {
    Appended(Receipt),
    Done(Result<Receipt>),
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        signer: Signer,
        published: LastCheckpoint,
    ) -> Result<Writer> {
        let mut w = Writer {
            conn,
            signer,
            frontier: Frontier::new(),
            last_time: Timestamp(i64::MIN),
            published,
        };
        let tx = w.conn.transaction()?;
        Self::catch_up(&tx, &mut w.frontier, &mut w.last_time)?;
        tx.commit()?;
        Ok(w)
    }

    /// Reloads the frontier when the file grew outside this writer.
    fn catch_up(
        tx: &Transaction<'_>,
        frontier: &mut Frontier,
        last_time: &mut Timestamp,
    ) -> Result<()> {
        let size = entry_count(tx)?;
        if size != frontier.size() {
            *frontier = Frontier::load(size, &SqlHashes(tx))?;
            let t: Option<i64> = tx
                .query_row(
                    "SELECT time_us FROM entries WHERE idx = ?1",
                    [size as i64 - 1],
                    |r| r.get(0),
                )
                .optional()?;
            *last_time = Timestamp(t.unwrap_or(i64::MIN));
        }
        Ok(())
    }

    /// Runs until every sender is gone.
    ///
    /// After the first request of a batch, it collects what is waiting; if
    /// fewer appenders are back than joined the previous batch, it yields
    /// the CPU for up to [`COMMIT_DELAY`] so they can requeue and share this
    /// commit. A lone appender never waits (its previous batch was 1).
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        let mut last_batch = 1;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let deadline = Instant::now() + COMMIT_DELAY;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(TryRecvError::Empty)
                        if batch.len() < last_batch && Instant::now() < deadline =>
                    {
                        std::thread::yield_now();
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            last_batch = batch.len();
            for (reply, result) in self.commit(batch) {
                reply.send(result);
            }
        }
    }

    /// Commits a batch and returns the answers to send.
    fn commit(&mut self, batch: Vec<Request>) -> Vec<Reply> {
        let (frontier, last_time) = (self.frontier.clone(), self.last_time);
        match self.try_commit(&batch) {
            Ok(outcomes) => batch
                .into_iter()
                .zip(outcomes)
                .map(|(req, outcome)| {
                    let result = match outcome {
                        Outcome::Appended(mut r) => {
                            r.tree_size = self.frontier.size();
                            Ok(r)
                        }
                        Outcome::Done(r) => r,
                    };
                    (req.reply, result)
                })
                .collect(),
            Err(e) => {
                // Nothing of the batch is durable: forget it and tell everyone.
                self.frontier = frontier;
                self.last_time = last_time;
                let msg = e.to_string();
                batch
                    .into_iter()
                    .map(|req| (req.reply, Err(Error::CommitFailed(msg.clone()))))
                    .collect()
            }
        }
    }

    fn try_commit(&mut self, batch: &[Request]) -> Result<Vec<Outcome>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::catch_up(&tx, &mut self.frontier, &mut self.last_time)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let start_size = self.frontier.size();
        for req in batch {
            let time = Timestamp::now().max(self.last_time);
            let leaf = req.template.with_time(time).map_or_else(
                || {
                    let mut entry = req.entry.clone();
                    entry.time = Some(time);
                    entry.canonical_bytes()
                },
                Ok,
            );
            let leaf = match leaf {
                Ok(leaf) => leaf,
                Err(e) => {
                    outcomes.push(Outcome::Done(Err(e)));
                    continue;
                }
            };
            let index = self.frontier.size();
            // A retried append shows up as a clash on the unique dedupe key
            // (also with an entry earlier in this same transaction).
            if let Some(key) = req.entry.dedupe_key.as_deref() {
                if let Err(e) = insert_entry(&tx, index, &req.entry, &leaf, time) {
                    if !is_unique_violation(&e) {
                        return Err(e);
                    }
                    let (index, leaf): (i64, Vec<u8>) = tx
                        .prepare_cached("SELECT idx, leaf FROM entries WHERE dedupe_key = ?1")?
                        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    outcomes.push(Outcome::Done(existing_receipt(
                        &req.entry,
                        index as u64,
                        &leaf,
                        self.frontier.size(),
                    )));
                    continue;
                }
            } else {
                insert_entry(&tx, index, &req.entry, &leaf, time)?;
            }
            let lh = leaf_hash(&leaf);
            let first = Node { level: 0, index }.stored_index();
            let mut stmt =
                tx.prepare_cached("INSERT INTO tree_nodes (id, hash) VALUES (?1, ?2)")?;
            for (i, h) in self.frontier.push(lh).iter().enumerate() {
                stmt.execute(params![(first + i as u64) as i64, &h.0[..]])?;
            }
            self.last_time = time;
            outcomes.push(Outcome::Appended(Receipt {
                index,
                leaf_hash: lh,
                time,
                tree_size: 0,
                existing: false,
            }));
        }
        let mut signed = None;
        if self.frontier.size() > start_size {
            let checkpoint = Checkpoint {
                origin: self.signer.name().to_owned(),
                size: self.frontier.size(),
                root: self.frontier.root(),
                extensions: vec![],
            };
            let cp = SignedCheckpoint::sign(checkpoint, &self.signer)?;
            tx.prepare_cached("INSERT INTO checkpoints (size, note) VALUES (?1, ?2)")?
                .execute(params![self.frontier.size() as i64, cp.note])?;
            signed = Some(cp);
        }
        tx.commit()?;
        if let Some(cp) = signed {
            remember(&self.published, &cp);
        }
        Ok(outcomes)
    }
}

/// True when an insert failed on a UNIQUE index (the dedupe key).
fn is_unique_violation(e: &Error) -> bool {
    matches!(e, Error::Sqlite(rusqlite::Error::SqliteFailure(f, _))
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

/// The receipt for a retried append whose dedupe key is already logged.
fn existing_receipt(entry: &Entry, index: u64, leaf: &[u8], tree_size: u64) -> Result<Receipt> {
    let mut logged = Entry::parse_logged(leaf)?;
    let time = logged.time.take().expect("logged entries carry time");
    let mut retried = entry.clone();
    retried.time = None;
    if logged != retried {
        return Err(Error::DedupeConflict {
            key: entry.dedupe_key.clone().unwrap_or_default(),
            index,
        });
    }
    Ok(Receipt {
        index,
        leaf_hash: leaf_hash(leaf),
        time,
        tree_size,
        existing: true,
    })
}

/// Inserts the entry row and its query references.
fn insert_entry(
    tx: &Transaction<'_>,
    index: u64,
    entry: &Entry,
    leaf: &[u8],
    time: Timestamp,
) -> Result<()> {
    let (namespace, name) = match &entry.object {
        Some(o) => (Some(o.namespace.as_str()), Some(o.name.as_str())),
        None => (None, None),
    };
    tx.prepare_cached(
        "INSERT INTO entries (idx, leaf, kind, time_us, namespace, name, actor, dedupe_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        index as i64,
        leaf,
        entry.kind(),
        time.0,
        namespace,
        name,
        entry.actor.as_ref().map(|a| a.username.as_str()),
        entry.dedupe_key,
    ])?;
    let mut refs = tx.prepare_cached(
        "INSERT OR IGNORE INTO entry_refs (field, value, idx) VALUES (?1, ?2, ?3)",
    )?;
    for (field, value) in entry_refs(entry) {
        refs.execute(params![field, value, index as i64])?;
    }
    Ok(())
}

/// The `(field, value)` query references of an entry.
pub fn entry_refs(entry: &Entry) -> Vec<(&'static str, &str)> {
    let digests = entry.digests().into_iter().map(|d| ("digest", d));
    let datasets = entry.dataset_uris().into_iter().map(|u| ("dataset", u));
    let mut refs: Vec<_> = digests.chain(datasets).collect();
    refs.sort_unstable();
    refs.dedup();
    refs
}
