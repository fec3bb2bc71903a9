//! From the wire to the ledger and back, defined once for both ends: a
//! [`Query`] becomes an `EntryFilter` ([`entry_filter`], the client's side)
//! and an `EntryFilter` becomes the [`Query`] plus the [`Scope`] its answer
//! needs ([`query`], the service's side); an entry travels as a
//! `LoggedEntry` (index and leaf bytes), and a [`StoredEntry`] names the
//! scope reading it needs.

use openmodel_proto::audit::{EntryFilter, LoggedEntry};

use crate::Scope;
use openmodel_ledger::Error as LedgerError;
use openmodel_ledger::entry::Timestamp;
use openmodel_ledger::query::Query;
use openmodel_ledger::store::StoredEntry;

use crate::{Error, Result};

/// The page size when a request asks for none (`limit: 0`).
pub(crate) const DEFAULT_LIMIT: usize = 100;

/// `Some(s)` for a set (non-empty) string field.
fn set(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn time(field: &str, s: &str) -> Result<Option<Timestamp>> {
    set(s)
        .map(|t| {
            Timestamp::parse(&t).map_err(|e| {
                Error::Ledger(LedgerError::InvalidQuery(format!("filter.{field}: {e}")))
            })
        })
        .transpose()
}

/// The query a filter asks for, from `start`, at most `limit` entries (0:
/// [`DEFAULT_LIMIT`]), and where its answer may be read: in the filter's
/// namespace, or cluster-wide when it names none.
pub(crate) fn query(
    filter: Option<&EntryFilter>,
    start: u64,
    limit: u32,
) -> Result<(Query, Scope)> {
    let default = EntryFilter::default();
    let f = filter.unwrap_or(&default);
    let object = match (set(&f.namespace), set(&f.name)) {
        (Some(ns), name) => Some((ns, name)),
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Error::Ledger(LedgerError::InvalidQuery(
                "filter.name needs filter.namespace: names are unique only within a namespace"
                    .into(),
            )));
        }
    };
    let scope = match &object {
        Some((ns, _)) => Scope::Namespace(ns.clone()),
        None => Scope::Cluster,
    };
    let query = Query {
        object,
        kind: set(&f.kind),
        since: time("since", &f.since)?,
        until: time("until", &f.until)?,
        digest: set(&f.digest),
        dataset: set(&f.dataset),
        actor: set(&f.actor),
        start,
        limit: if limit == 0 {
            DEFAULT_LIMIT
        } else {
            usize::try_from(limit).unwrap_or(usize::MAX)
        },
    };
    Ok((query, scope))
}

/// The filter that asks for `query` (its `start` and `limit` travel
/// beside it): the inverse of [`query`].
pub(crate) fn entry_filter(query: &Query) -> EntryFilter {
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    let (namespace, name) = query.object.clone().unwrap_or_default();
    EntryFilter {
        namespace,
        name: name.unwrap_or_default(),
        kind: text(&query.kind),
        since: query.since.map(|t| t.to_string()).unwrap_or_default(),
        until: query.until.map(|t| t.to_string()).unwrap_or_default(),
        digest: text(&query.digest),
        dataset: text(&query.dataset),
        actor: text(&query.actor),
    }
}

/// Where reading `entry` is allowed: its object's namespace, or
/// cluster-wide for entries about no object (`ledger.key`).
pub(crate) fn entry_scope(entry: &StoredEntry) -> Scope {
    match &entry.entry.object {
        Some(object) => Scope::Namespace(object.namespace.clone()),
        None => Scope::Cluster,
    }
}

/// An entry as it travels: index and leaf bytes.
pub(crate) fn logged(index: u64, leaf: Vec<u8>) -> LoggedEntry {
    LoggedEntry { index, leaf }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openmodel_ledger::entry::{
        Entry, EntryBody, KeyEvent, LedgerKey, ObjectRef, Source, WeightsVerified,
    };

    #[test]
    fn a_query_travels_as_a_filter_and_comes_back_the_same() {
        let queries = [
            Query::default(),
            Query {
                object: Some(("a".into(), None)),
                start: 3,
                limit: 7,
                ..Query::default()
            },
            Query {
                object: Some(("a".into(), Some("m".into()))),
                kind: Some("spec.changed".into()),
                since: Some(Timestamp::parse("2026-11-28T00:00:00Z").unwrap()),
                until: Some(Timestamp::parse("2026-11-29T00:00:00.5Z").unwrap()),
                digest: Some(format!("sha256:{}", "0".repeat(64))),
                dataset: Some("hf://datasets/x@1".into()),
                actor: Some("alice".into()),
                start: 9,
                limit: 10_000,
            },
        ];
        for sent in queries {
            let limit = u32::try_from(sent.limit).unwrap();
            let (received, _) = query(Some(&entry_filter(&sent)), sent.start, limit).unwrap();
            let expected = Query {
                limit: if sent.limit == 0 {
                    DEFAULT_LIMIT
                } else {
                    sent.limit
                },
                ..sent.clone()
            };
            assert_eq!(received, expected);
        }
    }

    #[test]
    fn a_namespace_filter_needs_that_namespace_and_no_filter_the_cluster() {
        let (q, scope) = query(None, 0, 0).unwrap();
        assert_eq!(scope, Scope::Cluster);
        assert_eq!((q.object, q.limit), (None, DEFAULT_LIMIT));

        let filter = EntryFilter {
            namespace: "a".into(),
            name: "m".into(),
            kind: "weights.verified".into(),
            since: "2026-11-28".into(),
            until: "2026-11-29T00:00:00.5Z".into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            dataset: "hf://datasets/x@1".into(),
            actor: "alice".into(),
        };
        let (q, scope) = query(Some(&filter), 7, 50).unwrap();
        assert_eq!(scope, Scope::Namespace("a".into()));
        assert_eq!(q.object, Some(("a".into(), Some("m".into()))));
        assert_eq!(q.kind.as_deref(), Some("weights.verified"));
        assert_eq!(
            q.since,
            Some(Timestamp::parse("2026-11-28T00:00:00Z").unwrap())
        );
        assert_eq!(
            q.until,
            Some(Timestamp::parse("2026-11-29T00:00:00.500000Z").unwrap())
        );
        assert_eq!((q.start, q.limit), (7, 50));
        assert_eq!(q.actor.as_deref(), Some("alice"));

        // Every other field leaves the scope cluster-wide.
        let (_, scope) = query(
            Some(&EntryFilter {
                kind: "model.deployed".into(),
                actor: "alice".into(),
                ..EntryFilter::default()
            }),
            0,
            1,
        )
        .unwrap();
        assert_eq!(scope, Scope::Cluster);
    }

    #[test]
    fn malformed_filters_are_refused_with_the_field_named() {
        let name_only = EntryFilter {
            name: "m".into(),
            ..EntryFilter::default()
        };
        let err = query(Some(&name_only), 0, 0).unwrap_err().to_string();
        assert!(err.contains("filter.name needs filter.namespace"), "{err}");
        let bad_time = EntryFilter {
            until: "yesterday".into(),
            ..EntryFilter::default()
        };
        let err = query(Some(&bad_time), 0, 0).unwrap_err().to_string();
        assert!(err.contains("filter.until"), "{err}");
    }

    #[test]
    fn entries_are_read_in_their_namespace_or_cluster_wide() {
        let leaf = |body, object| {
            let entry = Entry {
                appender: None,
                time: Some(Timestamp(1)),
                cluster: "c".into(),
                object,
                actor: None,
                source: Source::Controller,
                dedupe_key: None,
                body,
            };
            StoredEntry {
                index: 3,
                leaf: entry.canonical_bytes().unwrap(),
                entry,
            }
        };
        let key = leaf(
            EntryBody::LedgerKey(LedgerKey {
                event: KeyEvent::Created,
                key: "k".into(),
            }),
            None,
        );
        assert_eq!(entry_scope(&key), Scope::Cluster);
        let weights = leaf(
            EntryBody::WeightsVerified(WeightsVerified {
                digest: format!("sha256:{}", "1".repeat(64)),
                source: "hf://m@1".into(),
                pod: None,
            }),
            Some(ObjectRef {
                api_version: "serving.openmodel.dev/v1alpha1".into(),
                generation: None,
                kind: "OpenModel".into(),
                name: "m".into(),
                namespace: "a".into(),
                uid: None,
            }),
        );
        assert_eq!(entry_scope(&weights), Scope::Namespace("a".into()));
        let wire = logged(weights.index, weights.leaf.clone());
        assert_eq!((wire.index, wire.leaf), (3, weights.leaf));
    }
}
