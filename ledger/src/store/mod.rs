//! The ledger on SQLite: one file, WAL, `synchronous=FULL`, group commit.
//!
//! A [`Ledger`] opened for writing owns a writer thread (see [`writer`]);
//! [`Ledger::append`] returns only once the entry is durable, with its index.
//! Reads (entries, proofs, queries, exports) go through read-only
//! connections of their own (a small pool, [`ReadLimits`]), so a slow read
//! never holds up appends or the other reads, and always answer against one
//! signed checkpoint. The latest checkpoint is also kept in memory
//! ([`Ledger::last_checkpoint`]) for answers that must not wait on SQLite.
//!
//! On open the stored tree is checked against the latest signed checkpoint:
//! sizes, the number of stored hashes and the root (O(log n) reads). With
//! [`OpenCheck::Full`] every entry and stored hash is recomputed. A mismatch
//! refuses the open and names the first bad index.

mod nodes;
mod pool;
mod publish;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use futures_channel::oneshot;
use rusqlite::{Connection, OpenFlags, params};

use crate::checkpoint::SignedCheckpoint;
use crate::entry::{Entry, EntryBody, KeyEvent, LedgerKey, Source};
use crate::hash::{Hash, leaf_hash};
use crate::note::{Signer, Verifier};
use crate::proof_file::TlogProof;
use crate::tree::{self, stored_hash_count};
use crate::{Error, Result};

pub use nodes::{SqlHashes, entry_count, latest_checkpoint, latest_note, leaf, stored_verifier};
pub use pool::{MAX_READ_CONNECTIONS, ReadLimits};
pub use schema::SCHEMA_VERSION;
pub use writer::{MAX_BATCH, Receipt, entry_refs};

/// How much to check when opening.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OpenCheck {
    /// Sizes, stored-hash count and root against the latest checkpoint: O(log n).
    #[default]
    Quick,
    /// Also recompute every entry's leaf hash and every stored hash: O(n).
    Full,
}

/// An entry as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEntry {
    /// Its index.
    pub index: u64,
    /// The leaf bytes (canonical JSON).
    pub leaf: Vec<u8>,
    /// The parsed entry.
    pub entry: Entry,
}

impl StoredEntry {
    /// Parses leaf bytes read from storage.
    pub fn from_leaf(index: u64, leaf: Vec<u8>) -> Result<StoredEntry> {
        let entry = Entry::parse_logged(&leaf).map_err(|e| Error::Tampered {
            index,
            detail: format!("stored entry does not parse: {e}"),
        })?;
        Ok(StoredEntry { index, leaf, entry })
    }

    /// `{"index", "leafHash", "entry"}`: the form of `entries.jsonl` and of
    /// JSON query output.
    pub fn to_json(&self) -> serde_json::Value {
        let entry: serde_json::Value = serde_json::from_slice(&self.leaf)
            .expect("stored leaves were parsed as JSON when read");
        serde_json::json!({
            "index": self.index,
            "leafHash": self.leaf_hash().to_base64(),
            "entry": entry,
        })
    }

    /// [`StoredEntry::to_json`] as one line of text, with the leaf bytes
    /// embedded as they are (they are canonical JSON) instead of reparsed:
    /// the form of `entries.jsonl`.
    pub fn to_json_line(&self) -> String {
        format!(
            "{{\"entry\":{},\"index\":{},\"leafHash\":\"{}\"}}",
            String::from_utf8_lossy(&self.leaf),
            self.index,
            self.leaf_hash().to_base64()
        )
    }

    /// Its RFC 6962 leaf hash.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.leaf)
    }
}

/// An append in flight; [`PendingAppend::wait`] blocks until it is durable.
pub struct PendingAppend(oneshot::Receiver<Result<Receipt>>);

impl PendingAppend {
    /// Blocks until the entry is committed. Not on an async runtime's
    /// worker thread, which it would hold (use [`PendingAppend::wait_async`]
    /// there).
    pub fn wait(self) -> Result<Receipt> {
        futures_executor::block_on(self.0)
            .map_err(|_| Error::WriterStopped("it exited before answering".into()))?
    }

    /// Waits asynchronously until the entry is committed.
    pub async fn wait_async(self) -> Result<Receipt> {
        self.0
            .await
            .map_err(|_| Error::WriterStopped("it exited before answering".into()))?
    }
}

/// The writer and checkpointer threads; dropping it stops both after the
/// appends already queued are committed.
struct WriterHandle {
    tx: Option<Sender<writer::Request>>,
    stop_checkpointer: Option<Sender<()>>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
}

impl Drop for WriterHandle {
    /// Stops the checkpointer first, then the writer, one after the other:
    /// the writer's connection is then the last one this handle closes, and
    /// SQLite folds the WAL into the database file when its last connection
    /// closes. Two connections closing at once can each see the other and
    /// both skip that, leaving committed entries only in `-wal` (a copy of
    /// the `.sqlite` file alone would then miss them).
    fn drop(&mut self) {
        drop(self.stop_checkpointer.take());
        if let Some(t) = self.checkpointer.take() {
            let _ = t.join();
        }
        drop(self.tx.take());
        if let Some(t) = self.writer.take() {
            let _ = t.join();
        }
    }
}

/// How often the checkpointer copies committed WAL frames into the database.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// WAL pages after which the writer checkpoints by itself, should the
/// checkpointer fall behind (SQLite's default is 1000).
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// Copies the WAL into the database file in the background, so the writer's
/// commits rarely pay for it. Starts with a checkpoint, so a WAL left by a
/// crashed process is folded in at once. PASSIVE checkpoints never block
/// appends or readers.
fn run_checkpointer(conn: Connection, stop: mpsc::Receiver<()>) {
    loop {
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        if !matches!(
            stop.recv_timeout(CHECKPOINT_INTERVAL),
            Err(mpsc::RecvTimeoutError::Timeout)
        ) {
            return;
        }
    }
}

/// The largest signed checkpoint a ledger handle has seen, shared with its
/// writer thread, which puts each checkpoint it signs here.
pub(crate) type LastCheckpoint = Arc<Mutex<Option<SignedCheckpoint>>>;

/// Keeps `checkpoint` in `last` unless `last` holds a larger tree already
/// (a read in an older snapshot finishing late).
pub(crate) fn remember(last: &LastCheckpoint, checkpoint: &SignedCheckpoint) {
    let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
    if last
        .as_ref()
        .is_none_or(|cp| cp.checkpoint.size <= checkpoint.checkpoint.size)
    {
        *last = Some(checkpoint.clone());
    }
}

/// An open ledger file.
pub struct Ledger {
    path: PathBuf,
    verifier: Verifier,
    readers: pool::ReadPool,
    writer: Option<WriterHandle>,
    /// The largest checkpoint whose signature was checked (or which this
    /// handle's writer signed): reads that find the same note do not verify
    /// it again, and [`Ledger::last_checkpoint`] answers from it.
    verified: LastCheckpoint,
}

impl Ledger {
    /// Creates a new ledger at `path` signed by `signer` (whose name is the
    /// log's origin) and logs the key as its first entry.
    pub fn create(path: &Path, signer: Signer, cluster: &str) -> Result<Ledger> {
        if path.exists() {
            return Err(Error::Unusable(format!(
                "{} already exists; a new ledger needs a new file",
                path.display()
            )));
        }
        let mut conn = Connection::open(path)?;
        schema::configure(&conn)?;
        schema::migrate(&mut conn)?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('origin', ?1), ('verifier_key', ?2)",
            params![signer.name(), signer.verifier().to_string()],
        )?;
        drop(conn);
        let key = signer.verifier().to_string();
        let ledger = Self::open(path, signer, OpenCheck::Quick)?;
        ledger.append(Entry {
            appender: None,
            time: None,
            cluster: cluster.to_owned(),
            object: None,
            actor: None,
            source: Source::Cli,
            dedupe_key: Some(format!("ledger.key/created/{key}")),
            body: EntryBody::LedgerKey(LedgerKey {
                event: KeyEvent::Created,
                key,
            }),
        })?;
        Ok(ledger)
    }

    /// Opens an existing ledger for appending with `signer`, which must be
    /// the ledger's key.
    pub fn open(path: &Path, signer: Signer, check: OpenCheck) -> Result<Ledger> {
        let mut conn = Self::connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        schema::migrate(&mut conn)?;
        let verifier = stored_verifier(&conn)?;
        if signer.verifier() != verifier {
            return Err(Error::Unusable(format!(
                "the signing key ({}) is not this ledger's key ({verifier})",
                signer.verifier()
            )));
        }
        let mut ledger = Self::open_reader(path, verifier, check)?;
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)?;
        let checkpointer = Self::connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let w = writer::Writer::new(conn, signer, Arc::clone(&ledger.verified))?;
        let (tx, rx) = mpsc::channel();
        let (stop, stopped) = mpsc::channel();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| Error::io(path, e))
        };
        let writer = spawn("ledger-writer", Box::new(move || w.run(rx)))?;
        let checkpointer = spawn(
            "ledger-checkpointer",
            Box::new(move || run_checkpointer(checkpointer, stopped)),
        )?;
        ledger.writer = Some(WriterHandle {
            tx: Some(tx),
            stop_checkpointer: Some(stop),
            writer: Some(writer),
            checkpointer: Some(checkpointer),
        });
        Ok(ledger)
    }

    /// Opens an existing ledger for reading only.
    pub fn open_read_only(path: &Path, check: OpenCheck) -> Result<Ledger> {
        let conn = Self::connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let version = schema::version(&conn)?;
        if version != SCHEMA_VERSION {
            return Err(Error::Unusable(format!(
                "schema version {version}, this build reads {SCHEMA_VERSION}: open it once for writing to migrate"
            )));
        }
        let verifier = stored_verifier(&conn)?;
        Self::open_reader(path, verifier, check)
    }

    fn connect(path: &Path, flags: OpenFlags) -> Result<Connection> {
        if !path.exists() {
            return Err(Error::Unusable(format!(
                "{} does not exist; create a ledger with `openmodel ledger init`",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        if flags.contains(OpenFlags::SQLITE_OPEN_READ_WRITE) {
            schema::configure(&conn)?;
        } else {
            conn.busy_timeout(std::time::Duration::from_secs(30))?;
        }
        Ok(conn)
    }

    fn open_reader(path: &Path, verifier: Verifier, check: OpenCheck) -> Result<Ledger> {
        let readers = Self::read_pool(path, ReadLimits::default())?;
        let ledger = Ledger {
            path: path.to_owned(),
            verifier,
            readers,
            writer: None,
            verified: Arc::default(),
        };
        match check {
            OpenCheck::Quick => ledger.quick_check()?,
            OpenCheck::Full => {
                ledger.verify_stored()?;
            }
        }
        // Remember the latest checkpoint (a new, empty ledger has none yet).
        if ledger.read(|c| Ok(latest_note(c)?.is_some()))? {
            ledger.checkpoint()?;
        }
        Ok(ledger)
    }

    fn read_pool(path: &Path, limits: ReadLimits) -> Result<pool::ReadPool> {
        pool::ReadPool::new(limits, || {
            Self::connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        })
    }

    /// Reads through `limits.connections` read-only connections from now on
    /// (reads in parallel; a slow one holds up only its own), each read
    /// stopped after `limits.timeout` with [`Error::ReadTimedOut`]. A ledger
    /// opens with one connection and no time limit.
    pub fn with_read_limits(mut self, limits: ReadLimits) -> Result<Ledger> {
        self.readers = Self::read_pool(&self.path, limits)?;
        Ok(self)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ledger's verifier key, as stored in the file.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Queues an append and returns at once; the entry is validated first.
    pub fn submit(&self, entry: Entry) -> Result<PendingAppend> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(entry, writer::ReplyTo::Async(reply))?;
        Ok(PendingAppend(rx))
    }

    /// Validates `entry` and hands it to the writer, which answers `reply`.
    fn enqueue(&self, entry: Entry, reply: writer::ReplyTo) -> Result<()> {
        entry.validate()?;
        if entry.time.is_some() {
            return Err(Error::InvalidEntry(
                "\"time\" is assigned by the ledger when the entry is appended; leave it unset"
                    .into(),
            ));
        }
        let tx = self
            .writer
            .as_ref()
            .and_then(|w| w.tx.as_ref())
            .ok_or_else(|| {
                Error::Unusable("opened read-only; open with the signing key to append".into())
            })?;
        let template = entry.canonical_template()?;
        tx.send(writer::Request {
            entry,
            template,
            reply,
        })
        .map_err(|_| Error::WriterStopped("its thread has exited".into()))
    }

    /// Appends an entry and returns once it is durable. It blocks the
    /// calling thread, which may be one that runs an async runtime (as
    /// [`Ledger::create`] does); async code should prefer
    /// [`Ledger::append_async`].
    pub fn append(&self, entry: Entry) -> Result<Receipt> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.enqueue(entry, writer::ReplyTo::Blocking(reply))?;
        rx.recv()
            .map_err(|_| Error::WriterStopped("it exited before answering".into()))?
    }

    /// Appends from async code.
    pub async fn append_async(&self, entry: Entry) -> Result<Receipt> {
        self.submit(entry)?.wait_async().await
    }

    /// Runs `f` inside one read transaction on a connection of its own from
    /// the read pool (waiting while every one is busy), so every read sees
    /// one snapshot. A read that runs past the pool's time limit is stopped
    /// with [`Error::ReadTimedOut`].
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut lease = self.readers.lease();
        let result = (|| {
            let tx = lease.conn().transaction()?;
            let out = f(&tx)?;
            tx.finish()?;
            Ok(out)
        })();
        match (result, self.readers.timeout()) {
            (Err(e), Some(limit)) if pool::is_interrupted(&e) => Err(Error::ReadTimedOut { limit }),
            (result, _) => result,
        }
    }

    /// The largest signed checkpoint this handle has seen, without reading
    /// the file: the last one its writer signed, or the latest one a read
    /// found (opening reads one). `None` only for a ledger that has no entry
    /// yet. A read-only handle does not see what another process appended
    /// until it reads again; use [`Ledger::checkpoint`] for the file's latest.
    pub fn last_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The latest signed checkpoint (an empty-tree checkpoint is never
    /// stored; a ledger always starts with its `ledger.key` entry).
    pub fn checkpoint(&self) -> Result<SignedCheckpoint> {
        self.read(|c| self.checkpoint_in(c))
    }

    /// The latest checkpoint as `conn` sees it. Its signature is checked
    /// once per distinct note: proofs and queries against an unchanged log
    /// skip the Ed25519 verification.
    pub(crate) fn checkpoint_in(&self, conn: &Connection) -> Result<SignedCheckpoint> {
        let note = latest_note(conn)?
            .ok_or_else(|| Error::Unusable("the ledger has no signed checkpoint yet".into()))?;
        if let Some(cp) = self.last_checkpoint().filter(|cp| cp.note == note) {
            return Ok(cp);
        }
        let cp = SignedCheckpoint::open(&note, &self.verifier)?;
        remember(&self.verified, &cp);
        Ok(cp)
    }

    /// The stored checkpoint of exactly `size` entries, if one was signed.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<SignedCheckpoint>> {
        self.read(|c| self.checkpoint_at_in(c, size))
    }

    fn checkpoint_at_in(&self, conn: &Connection, size: u64) -> Result<Option<SignedCheckpoint>> {
        let note: Option<String> = rusqlite::OptionalExtension::optional(conn.query_row(
            "SELECT note FROM checkpoints WHERE size = ?1",
            [size as i64],
            |r| r.get(0),
        ))?;
        note.map(|n| SignedCheckpoint::open(&n, &self.verifier))
            .transpose()
    }

    /// The latest checkpoint (`size` `None`) or the signed checkpoint of
    /// exactly `size` entries, as `conn` sees them.
    fn signed_checkpoint_in(
        &self,
        conn: &Connection,
        size: Option<u64>,
    ) -> Result<SignedCheckpoint> {
        let Some(size) = size else {
            return self.checkpoint_in(conn);
        };
        self.checkpoint_at_in(conn, size)?.ok_or_else(|| {
            Error::NotFound(format!(
                "no checkpoint of tree size {size} was signed; ask for the latest one, or for the \
                 size of a checkpoint this log gave you"
            ))
        })
    }

    /// Entry `index`.
    pub fn entry(&self, index: u64) -> Result<StoredEntry> {
        self.read(|c| {
            let size = self.checkpoint_in(c)?.checkpoint.size;
            let leaf = leaf(c, index)?.ok_or(Error::IndexOutOfRange { index, size })?;
            StoredEntry::from_leaf(index, leaf)
        })
    }

    /// A self-contained tlog-proof for entry `index` under the latest checkpoint.
    pub fn prove(&self, index: u64) -> Result<TlogProof> {
        self.prove_at(index, None)
    }

    /// A self-contained tlog-proof for entry `index` under the latest
    /// checkpoint (`tree_size` `None`) or under the signed checkpoint of
    /// exactly `tree_size` entries.
    pub fn prove_at(&self, index: u64, tree_size: Option<u64>) -> Result<TlogProof> {
        self.read(|c| {
            let cp = self.signed_checkpoint_in(c, tree_size)?;
            let size = cp.checkpoint.size;
            let leaf = leaf(c, index)?.ok_or(Error::IndexOutOfRange { index, size })?;
            let path = tree::inclusion_proof(index, size, &SqlHashes(c))?;
            Ok(TlogProof {
                extra: Some(leaf),
                index,
                path,
                checkpoint: cp.note,
            })
        })
    }

    /// Consistency proof between two tree sizes (both within the latest checkpoint).
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>> {
        self.read(|c| {
            let size = self.checkpoint_in(c)?.checkpoint.size;
            if new_size > size {
                return Err(Error::IndexOutOfRange {
                    index: new_size,
                    size,
                });
            }
            tree::consistency_proof(old_size, new_size, &SqlHashes(c))
        })
    }

    /// A consistency proof from the tree of `old_size` entries to the latest
    /// checkpoint (`new_size` `None`) or to the signed checkpoint of exactly
    /// `new_size` entries, with that checkpoint.
    pub fn prove_consistency(
        &self,
        old_size: u64,
        new_size: Option<u64>,
    ) -> Result<(Vec<Hash>, SignedCheckpoint)> {
        self.read(|c| {
            let cp = self.signed_checkpoint_in(c, new_size)?;
            let proof = tree::consistency_proof(old_size, cp.checkpoint.size, &SqlHashes(c))?;
            Ok((proof, cp))
        })
    }

    /// The O(log n) check against the latest checkpoint; on a mismatch, the
    /// full check locates the first bad index.
    fn quick_check(&self) -> Result<()> {
        let result = self.read(|c| {
            let Some(cp) = latest_checkpoint(c, &self.verifier)? else {
                let size = entry_count(c)?;
                return if size == 0 {
                    Ok(())
                } else {
                    Err(Error::Tampered {
                        index: 0,
                        detail: format!("{size} entries but no signed checkpoint"),
                    })
                };
            };
            let size = cp.checkpoint.size;
            let stored = entry_count(c)?;
            if stored != size {
                return Err(Error::Tampered {
                    index: stored.min(size),
                    detail: format!(
                        "{stored} entries stored, the latest signed checkpoint covers {size}"
                    ),
                });
            }
            let nodes: i64 = c.query_row("SELECT count(*) FROM tree_nodes", [], |r| r.get(0))?;
            if nodes as u64 != stored_hash_count(size) {
                return Err(Error::Tampered {
                    index: 0,
                    detail: format!(
                        "{nodes} stored hashes, a tree of {size} entries has {}",
                        stored_hash_count(size)
                    ),
                });
            }
            let root = tree::tree_root(size, &SqlHashes(c))?;
            if root != cp.checkpoint.root {
                return Err(Error::Tampered {
                    index: 0,
                    detail: "stored tree root differs from the signed checkpoint".into(),
                });
            }
            Ok(())
        });
        match result {
            Err(Error::Tampered { .. }) => {
                // Name the first bad index precisely when the full check can.
                self.verify_stored()?;
                result
            }
            other => other,
        }
    }
}
