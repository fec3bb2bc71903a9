//! The SQLite schema, its migrations and the connection settings.
//!
//! Tables (all append-only; triggers abort any UPDATE or DELETE):
//! - `meta(key, value)`: `origin` and `verifier_key`.
//! - `entries(idx, leaf, kind, time_us, namespace, name, actor, dedupe_key)`:
//!   the leaf bytes plus columns derived from them for queries.
//! - `entry_refs(field, value, idx)`: digests and dataset URIs per entry.
//! - `tree_nodes(id, hash)`: every stored hash, by stored index
//!   (see [`crate::tree`]).
//! - `checkpoints(size, note)`: every signed checkpoint, one per commit.
//!
//! The schema version is SQLite's `user_version`: the number of migrations
//! applied. A newer file is refused rather than misread.

use rusqlite::Connection;

use crate::{Error, Result};

/// Migrations in order; migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE entries (
    idx        INTEGER PRIMARY KEY,
    leaf       BLOB    NOT NULL,
    kind       TEXT    NOT NULL,
    time_us    INTEGER NOT NULL,
    namespace  TEXT,
    name       TEXT,
    actor      TEXT,
    dedupe_key TEXT
) STRICT;
CREATE UNIQUE INDEX entries_by_dedupe_key ON entries (dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX entries_by_object ON entries (namespace, name, idx);
CREATE INDEX entries_by_kind ON entries (kind, idx);
CREATE INDEX entries_by_actor ON entries (actor, idx) WHERE actor IS NOT NULL;
CREATE INDEX entries_by_time ON entries (time_us);
CREATE TABLE entry_refs (
    field TEXT    NOT NULL,
    value TEXT    NOT NULL,
    idx   INTEGER NOT NULL,
    PRIMARY KEY (field, value, idx)
) STRICT, WITHOUT ROWID;
CREATE TABLE tree_nodes (id INTEGER PRIMARY KEY, hash BLOB NOT NULL) STRICT;
CREATE TABLE checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL) STRICT;
"#];

const TABLES: [&str; 5] = ["meta", "entries", "entry_refs", "tree_nodes", "checkpoints"];

/// Newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Settings for every connection: WAL, full fsync at commit, and a long
/// busy timeout so readers and the writer never fail on a passing lock.
pub fn configure(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    Ok(())
}

/// The schema version of an open database.
pub fn version(conn: &Connection) -> Result<i64> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Brings the schema up to [`SCHEMA_VERSION`] in one transaction.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for sql in &MIGRATIONS[found as usize..] {
        tx.execute_batch(sql)?;
    }
    for table in TABLES {
        tx.execute_batch(&append_only_triggers(table))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Triggers that make `table` append-only (recreated after each migration).
fn append_only_triggers(table: &str) -> String {
    ["UPDATE", "DELETE"]
        .iter()
        .map(|op| {
            let name = format!("{table}_no_{}", op.to_lowercase());
            format!(
                "DROP TRIGGER IF EXISTS {name};
                 CREATE TRIGGER {name} BEFORE {op} ON {table}
                 BEGIN SELECT RAISE(ABORT, 'the OpenModel ledger is append-only: {op} on {table} is refused'); END;"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_refuse_update_and_delete() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute("INSERT INTO meta VALUES ('a', 'b')", [])
            .unwrap();
        let err = conn.execute("UPDATE meta SET value = 'c'", []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        assert!(conn.execute("DELETE FROM meta", []).is_err());
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        migrate(&mut conn).unwrap();
    }

    #[test]
    fn newer_files_are_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(Error::SchemaTooNew { .. })
        ));
    }
}
