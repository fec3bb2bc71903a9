//! Audit queries: filter the log, page through it, and say exactly what was
//! covered.
//!
//! Every [`Page`] names the signed checkpoint it was answered against and the
//! index range `scanned`: every entry in that range of that tree which
//! matches the filter is in the page. Because the ledger assigns entry times
//! and they never decrease along the log (full verification checks this), a
//! time window is one contiguous index range; "all changes between T1 and T2"
//! is then the union of pages whose ranges tile that index range, and an
//! auditor can recheck it against an export of the same checkpoint.

use std::ops::Range;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params_from_iter};

use crate::checkpoint::SignedCheckpoint;
use crate::entry::{KINDS, Timestamp, check_model_digest};
use crate::store::{Ledger, StoredEntry, leaf};
use crate::{Error, Result};

/// Largest page.
pub const MAX_LIMIT: usize = 10_000;

/// A filter over the log; every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Namespace and, optionally, name of the object.
    pub object: Option<(String, Option<String>)>,
    /// Entry kind, e.g. `weights.verified`.
    pub kind: Option<String>,
    /// Entries at or after this time.
    pub since: Option<Timestamp>,
    /// Entries strictly before this time.
    pub until: Option<Timestamp>,
    /// Entries mentioning this digest (weights or dataset).
    pub digest: Option<String>,
    /// Entries referencing this dataset URI.
    pub dataset: Option<String>,
    /// Entries made by this user name.
    pub actor: Option<String>,
    /// First index to consider (the `next` of the previous page).
    pub start: u64,
    /// Most entries in a page (1..=[`MAX_LIMIT`]).
    pub limit: usize,
}

/// One page of answers: parsed entries ([`StoredEntry`], from
/// [`Ledger::query_within`]) or leaf bytes as stored ([`Leaf`], from
/// [`Ledger::query_leaves`]).
#[derive(Clone, Debug)]
pub struct Page<E = StoredEntry> {
    /// Matching entries, in index order.
    pub entries: Vec<E>,
    /// The checkpoint the answer is consistent with.
    pub checkpoint: SignedCheckpoint,
    /// Every matching entry with an index in this range is in `entries`.
    pub scanned: Range<u64>,
    /// Where the next page starts, when there is more.
    pub next: Option<u64>,
}

/// An entry as stored, not parsed: for a server that passes leaves on to
/// clients who check them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Its index.
    pub index: u64,
    /// Its leaf bytes.
    pub bytes: Vec<u8>,
}

/// Parses `namespace/name` or `namespace/` (every object in a namespace).
pub fn parse_object(s: &str) -> Result<(String, Option<String>)> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), (!name.is_empty()).then(|| name.to_owned())))
        }
        _ => Err(Error::InvalidQuery(format!(
            "model {s:?} must be namespace/name (or namespace/ for a whole namespace)"
        ))),
    }
}

impl Query {
    fn validate(&self) -> Result<()> {
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(Error::InvalidQuery(format!(
                "limit must be 1..={MAX_LIMIT}, got {}",
                self.limit
            )));
        }
        if let Some(kind) = &self.kind
            && !KINDS.contains(&kind.as_str())
        {
            return Err(Error::InvalidQuery(format!(
                "unknown kind {kind:?}; kinds are {KINDS:?}"
            )));
        }
        if let Some(d) = &self.digest {
            check_model_digest("digest", d).map_err(|e| Error::InvalidQuery(e.to_string()))?;
        }
        if let (Some(s), Some(u)) = (self.since, self.until)
            && u < s
        {
            return Err(Error::InvalidQuery(format!(
                "until ({u}) is before since ({s})"
            )));
        }
        Ok(())
    }
}

/// First index whose time is at or after `t` (or `size` if none).
fn first_index_at(c: &Connection, t: Timestamp, size: u64) -> Result<u64> {
    let idx: Option<i64> = c.query_row(
        "SELECT min(idx) FROM entries WHERE time_us >= ?1",
        [t.0],
        |r| r.get(0),
    )?;
    Ok(idx.map_or(size, |i| (i as u64).min(size)))
}

impl Ledger {
    /// Answers `query` against the latest checkpoint: at most `query.limit`
    /// entries.
    pub fn query(&self, query: &Query) -> Result<Page> {
        self.query_within(query, usize::MAX)
    }

    /// Answers `query` against the latest checkpoint, at most `query.limit`
    /// entries whose leaves hold at most `max_bytes` together: a page stops
    /// early at whichever bound it meets first, and its `next` says where to
    /// continue. A page holds at least one entry when any matches, however
    /// large, so paging always moves on.
    pub fn query_within(&self, query: &Query, max_bytes: usize) -> Result<Page> {
        let page = self.query_leaves(query, max_bytes)?;
        let entries = page
            .entries
            .into_iter()
            .map(|leaf| StoredEntry::from_leaf(leaf.index, leaf.bytes))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            entries,
            checkpoint: page.checkpoint,
            scanned: page.scanned,
            next: page.next,
        })
    }

    /// [`Ledger::query_within`], with the leaves as stored, not parsed:
    /// what a server sends on, its clients checking each leaf.
    pub fn query_leaves(&self, query: &Query, max_bytes: usize) -> Result<Page<Leaf>> {
        query.validate()?;
        self.read(|c| {
            let checkpoint = self.checkpoint_in(c)?;
            let size = checkpoint.checkpoint.size;
            let mut lo = query.start.min(size);
            let mut hi = size;
            if let Some(t) = query.since {
                lo = lo.max(first_index_at(c, t, size)?);
            }
            if let Some(t) = query.until {
                hi = hi.min(first_index_at(c, t, size)?);
            }
            let hi = hi.max(lo);
            // The matching indexes and leaf sizes first: sorting them (when
            // the planner filters through an index) moves integers, not
            // leaves; then the leaves of those that fit the budget.
            let mut sql =
                String::from("SELECT idx, length(leaf) FROM entries WHERE idx >= ? AND idx < ?");
            let mut args: Vec<SqlValue> = vec![(lo as i64).into(), (hi as i64).into()];
            let mut filter = |clause: &str, value: &str| {
                sql.push_str(clause);
                args.push(value.to_owned().into());
            };
            if let Some((ns, name)) = &query.object {
                filter(" AND namespace = ?", ns);
                if let Some(name) = name {
                    filter(" AND name = ?", name);
                }
            }
            if let Some(kind) = &query.kind {
                filter(" AND kind = ?", kind);
            }
            if let Some(actor) = &query.actor {
                filter(" AND actor = ?", actor);
            }
            if let Some(d) = &query.digest {
                filter(" AND idx IN (SELECT idx FROM entry_refs WHERE field = 'digest' AND value = ?)", d);
            }
            if let Some(u) = &query.dataset {
                filter(" AND idx IN (SELECT idx FROM entry_refs WHERE field = 'dataset' AND value = ?)", u);
            }
            sql.push_str(" ORDER BY idx LIMIT ?");
            args.push((query.limit as i64 + 1).into());
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(params_from_iter(args))?;
            let mut fitting = Vec::new();
            let mut bytes = 0usize;
            let mut cut = false;
            while let Some(row) = rows.next()? {
                let (idx, len): (i64, i64) = (row.get(0)?, row.get(1)?);
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                let over_budget = !fitting.is_empty() && bytes.saturating_add(len) > max_bytes;
                if fitting.len() == query.limit || over_budget {
                    cut = true;
                    break;
                }
                bytes = bytes.saturating_add(len);
                fitting.push(idx as u64);
            }
            let entries = fitting
                .into_iter()
                .map(|index| {
                    let bytes = leaf(c, index)?.ok_or_else(|| Error::Tampered {
                        index,
                        detail: "the entry vanished while it was read".into(),
                    })?;
                    Ok(Leaf { index, bytes })
                })
                .collect::<Result<Vec<_>>>()?;
            let (scanned, next) = match entries.last() {
                Some(last) if cut => (lo..last.index + 1, Some(last.index + 1)),
                _ => (lo..hi, None),
            };
            Ok(Page {
                entries,
                checkpoint,
                scanned,
                next,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_filters_parse() {
        assert_eq!(
            parse_object("ns/name").unwrap(),
            ("ns".into(), Some("name".into()))
        );
        assert_eq!(parse_object("ns/").unwrap(), ("ns".into(), None));
        for bad in ["name", "/name", "a/b/c", ""] {
            assert!(parse_object(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_queries_are_refused() {
        let q = |f: fn(&mut Query)| {
            let mut q = Query {
                limit: 10,
                ..Query::default()
            };
            f(&mut q);
            q.validate()
        };
        assert!(q(|_| {}).is_ok());
        assert!(q(|q| q.limit = 0).is_err());
        assert!(q(|q| q.kind = Some("nope".into())).is_err());
        assert!(q(|q| q.digest = Some("md5:abc".into())).is_err());
        assert!(
            q(|q| {
                q.since = Some(Timestamp(10));
                q.until = Some(Timestamp(5));
            })
            .is_err()
        );
    }
}
