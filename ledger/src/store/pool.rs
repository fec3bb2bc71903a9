//! The read-only connections of a ledger: a small pool, so that a slow read
//! holds up its own connection only, never appends (the writer has its
//! own) nor the reads on the other connections. Each read may be given a
//! deadline, after which SQLite stops it ([`Error::ReadTimedOut`]).
//!
//! A read takes an idle connection ([`ReadPool::lease`], waiting while all
//! are busy) and gives it back when done. The deadline is checked by a
//! SQLite progress handler every [`PROGRESS_OPS`] virtual-machine steps, so
//! a read never runs far past it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::{Error, Result};

/// Most read connections a ledger may open.
pub const MAX_READ_CONNECTIONS: usize = 64;

/// SQLite virtual-machine steps between two checks of a read's deadline.
const PROGRESS_OPS: i32 = 10_000;

/// How a ledger reads: how many read-only connections it keeps (reads in
/// parallel) and how long one read may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Read-only connections, 1 to [`MAX_READ_CONNECTIONS`].
    pub connections: usize,
    /// Longest one read may run before SQLite stops it; `None`: no limit.
    pub timeout: Option<Duration>,
}

impl Default for ReadLimits {
    /// One connection, no time limit: what a command-line tool needs.
    fn default() -> Self {
        ReadLimits {
            connections: 1,
            timeout: None,
        }
    }
}

impl ReadLimits {
    /// Refuses limits the pool cannot honour, naming them.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_READ_CONNECTIONS).contains(&self.connections) {
            return Err(Error::Unusable(format!(
                "{} read connections asked for; a ledger keeps 1 to {MAX_READ_CONNECTIONS}",
                self.connections
            )));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::Unusable(
                "a read timeout of zero would stop every read; give a positive one or none".into(),
            ));
        }
        Ok(())
    }
}

/// One read-only connection and the deadline its progress handler checks.
struct Reader {
    conn: Connection,
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl Reader {
    fn new(mut conn: Connection) -> Result<Reader> {
        let deadline: Arc<Mutex<Option<Instant>>> = Arc::default();
        let checked = Arc::clone(&deadline);
        conn.progress_handler(
            PROGRESS_OPS,
            Some(move || lock(&checked).is_some_and(|d| Instant::now() >= d)),
        )?;
        Ok(Reader { conn, deadline })
    }
}

/// The idle connections, and a way to wait for one.
pub(crate) struct ReadPool {
    idle: Mutex<Vec<Reader>>,
    returned: Condvar,
    timeout: Option<Duration>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the data usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ReadPool {
    /// A pool of `connections`, each opened by `open`.
    pub(crate) fn new(
        limits: ReadLimits,
        mut open: impl FnMut() -> Result<Connection>,
    ) -> Result<ReadPool> {
        limits.validate()?;
        let idle = (0..limits.connections)
            .map(|_| Reader::new(open()?))
            .collect::<Result<Vec<_>>>()?;
        Ok(ReadPool {
            idle: Mutex::new(idle),
            returned: Condvar::new(),
            timeout: limits.timeout,
        })
    }

    /// An idle connection, waiting while every one is busy; its deadline
    /// starts now.
    pub(crate) fn lease(&self) -> Lease<'_> {
        let mut idle = lock(&self.idle);
        let reader = loop {
            match idle.pop() {
                Some(reader) => break reader,
                None => {
                    idle = self
                        .returned
                        .wait(idle)
                        .unwrap_or_else(PoisonError::into_inner)
                }
            }
        };
        drop(idle);
        *lock(&reader.deadline) = self.timeout.map(|t| Instant::now() + t);
        Lease {
            pool: self,
            reader: Some(reader),
        }
    }

    /// The time limit of one read, if any.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// A connection taken from the pool; given back when dropped.
pub(crate) struct Lease<'p> {
    pool: &'p ReadPool,
    reader: Option<Reader>,
}

impl Lease<'_> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut Connection {
        &mut self
            .reader
            .as_mut()
            .expect("a lease holds its reader until dropped")
            .conn
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            *lock(&reader.deadline) = None;
            lock(&self.pool.idle).push(reader);
            self.pool.returned.notify_one();
        }
    }
}

/// True when SQLite stopped a statement because its progress handler said
/// so (the read's deadline passed).
pub(crate) fn is_interrupted(error: &Error) -> bool {
    matches!(error, Error::Sqlite(rusqlite::Error::SqliteFailure(f, _))
        if f.code == rusqlite::ErrorCode::OperationInterrupted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_the_pool_are_refused() {
        for connections in [0, MAX_READ_CONNECTIONS + 1] {
            let limits = ReadLimits {
                connections,
                timeout: None,
            };
            let err = limits.validate().unwrap_err().to_string();
            assert!(err.contains("read connections"), "{err}");
        }
        let zero = ReadLimits {
            connections: 1,
            timeout: Some(Duration::ZERO),
        };
        assert!(zero.validate().is_err());
        ReadLimits::default().validate().unwrap();
    }

    #[test]
    fn a_read_past_its_deadline_is_interrupted_and_the_connection_recovers() {
        let limits = ReadLimits {
            connections: 1,
            timeout: Some(Duration::from_millis(50)),
        };
        let pool = ReadPool::new(limits, || Ok(Connection::open_in_memory()?)).unwrap();
        let started = Instant::now();
        let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                       SELECT count(*) FROM n";
        let err: Error = pool
            .lease()
            .conn()
            .query_row(endless, [], |r| r.get::<_, i64>(0))
            .unwrap_err()
            .into();
        assert!(is_interrupted(&err), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // The next lease starts a new deadline.
        let one: i64 = pool
            .lease()
            .conn()
            .query_row("SELECT 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(one, 1);
    }

    #[test]
    fn a_busy_pool_hands_out_its_other_connections_and_waits_when_all_are_taken() {
        let limits = ReadLimits {
            connections: 2,
            timeout: None,
        };
        let pool = Arc::new(ReadPool::new(limits, || Ok(Connection::open_in_memory()?)).unwrap());
        let first = pool.lease();
        let second = pool.lease();
        let waiter = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let started = Instant::now();
                drop(pool.lease());
                started.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        drop(first);
        let waited = waiter.join().unwrap();
        assert!(waited >= Duration::from_millis(80), "{waited:?}");
        drop(second);
    }
}
