//! Which audit-ledger entry vouches for the served weights.
//!
//! The operator appends a `weights.verified` entry once a pod's init
//! container has verified the weights, so after the pod started. Its index in
//! the ledger reaches the server in one of two ways:
//!
//! 1. `--ledger-index N` (`OPENMODEL_LEDGER_INDEX`): fixed at start, for local
//!    runs and for pods created after the entry existed;
//! 2. the pod annotation [`WEIGHTS_ENTRY_ANNOTATION`], which the operator sets
//!    on a running pod and the kubelet writes into the downward-API file given
//!    by `--pod-annotations` (`OPENMODEL_POD_ANNOTATIONS`);
//!    [`AnnotationsFile::poll`] rereads it every [`POLL_INTERVAL`], so the
//!    index arrives without a restart.
//!
//! A present, valid annotation wins over the fixed value; a file or value
//! that cannot be read counts as no annotation. The current index lives in a
//! [`LedgerIndex`], which the gRPC service reads for every response
//! (parameter `ledger_index`, header `ledger-index`, named in
//! [`openmodel_contract::response`]); unknown means absent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::podinfo::parse_annotations;
use crate::{Error, Result};

pub use openmodel_contract::WEIGHTS_ENTRY_ANNOTATION;

/// How often the annotations file is reread.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The largest index that can be served: responses carry it as an int64.
pub const MAX_INDEX: u64 = i64::MAX as u64;

/// Parses a ledger index: decimal digits only, from 0 to [`MAX_INDEX`].
pub fn parse_index(text: &str) -> Result<u64> {
    let bad = || {
        Error::BadLedgerIndex(format!(
            "ledger index {text:?} is not a whole number from 0 to {MAX_INDEX}"
        ))
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse::<u64>()
        .ok()
        .filter(|&i| i <= MAX_INDEX)
        .ok_or_else(bad)
}

/// The index given by a downward-API annotations file: `None` when the file
/// has no [`WEIGHTS_ENTRY_ANNOTATION`].
pub fn index_from_annotations(text: &str) -> Result<Option<u64>> {
    parse_annotations(text)?
        .get(WEIGHTS_ENTRY_ANNOTATION)
        .map(|value| {
            parse_index(value).map_err(|e| {
                Error::BadAnnotations(format!("annotation {WEIGHTS_ENTRY_ANNOTATION}: {e}"))
            })
        })
        .transpose()
}

/// The current ledger index, shared between the annotations watcher (writer)
/// and the gRPC service (readers) without a lock.
#[derive(Debug)]
pub struct LedgerIndex(AtomicU64);

/// Stored for "unknown"; above [`MAX_INDEX`], so never a real index.
const UNKNOWN: u64 = u64::MAX;

impl LedgerIndex {
    /// A cell holding `index`.
    pub fn new(index: Option<u64>) -> LedgerIndex {
        let cell = LedgerIndex(AtomicU64::new(UNKNOWN));
        cell.set(index);
        cell
    }

    /// The current index; `None` when unknown.
    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&i| i <= MAX_INDEX)
    }

    /// Replaces the index. An index above [`MAX_INDEX`] (which
    /// [`parse_index`] never returns) is stored as unknown.
    pub fn set(&self, index: Option<u64>) {
        let stored = index.filter(|&i| i <= MAX_INDEX).unwrap_or(UNKNOWN);
        self.0.store(stored, Ordering::Relaxed);
    }
}

/// The outcome of reading the annotations file after it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The index to serve from now on.
    pub index: Option<u64>,
    /// Why the file was ignored, when it was.
    pub problem: Option<String>,
}

/// Follows a downward-API annotations file.
#[derive(Debug)]
pub struct AnnotationsFile {
    path: PathBuf,
    fallback: Option<u64>,
    /// The content (or read error) seen last, to act only on changes.
    last: Option<Result<String, String>>,
}

impl AnnotationsFile {
    /// Follows `path`; `fallback` (the `--ledger-index` value) applies while
    /// the file has no valid annotation.
    pub fn new(path: PathBuf, fallback: Option<u64>) -> AnnotationsFile {
        AnnotationsFile {
            path,
            fallback,
            last: None,
        }
    }

    /// The file followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file: `None` when it reads as it did the last time (so a
    /// problem is reported once per distinct content), else what to serve.
    pub fn poll(&mut self) -> Option<Update> {
        let read = std::fs::read(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned()));
        if self.last.as_ref() == Some(&read) {
            return None;
        }
        let update = match &read {
            Err(e) => Update {
                index: self.fallback,
                problem: Some(format!("cannot read {}: {e}", self.path.display())),
            },
            Ok(text) => match index_from_annotations(text) {
                Ok(found) => Update {
                    index: found.or(self.fallback),
                    problem: None,
                },
                Err(e) => Update {
                    index: self.fallback,
                    problem: Some(format!("{}: {e}", self.path.display())),
                },
            },
        };
        self.last = Some(read);
        Some(update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_plain_decimal_within_int64() {
        assert_eq!(parse_index("0").unwrap(), 0);
        assert_eq!(parse_index("42").unwrap(), 42);
        assert_eq!(parse_index("007").unwrap(), 7);
        assert_eq!(parse_index(&MAX_INDEX.to_string()).unwrap(), MAX_INDEX);
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "0x10",
            "forty-two",
            "9223372036854775808",
            "99999999999999999999999",
        ] {
            let err = parse_index(bad).unwrap_err().to_string();
            assert!(
                err.contains("not a whole number from 0 to 9223372036854775807"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn the_annotation_is_found_among_others() {
        let with = "a=\"x\"\nserving.openmodel.dev/weights-entry=\"42\"\nz=\"\"";
        assert_eq!(index_from_annotations(with).unwrap(), Some(42));
        assert_eq!(index_from_annotations("a=\"x\"").unwrap(), None);
        assert_eq!(index_from_annotations("").unwrap(), None);
        let err = index_from_annotations("serving.openmodel.dev/weights-entry=\"-3\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("annotation serving.openmodel.dev/weights-entry")
                && err.contains("\"-3\""),
            "{err}"
        );
        assert!(index_from_annotations("garbage").is_err());
    }

    #[test]
    fn the_cell_holds_an_index_or_nothing() {
        let cell = LedgerIndex::new(None);
        assert_eq!(cell.get(), None);
        cell.set(Some(0));
        assert_eq!(cell.get(), Some(0));
        cell.set(Some(MAX_INDEX));
        assert_eq!(cell.get(), Some(MAX_INDEX));
        cell.set(Some(MAX_INDEX + 1));
        assert_eq!(cell.get(), None);
        cell.set(Some(7));
        cell.set(None);
        assert_eq!(cell.get(), None);
        assert_eq!(LedgerIndex::new(Some(7)).get(), Some(7));
        assert_eq!(LedgerIndex::new(Some(u64::MAX)).get(), None);
    }

    #[test]
    fn polling_acts_on_changes_only_and_the_annotation_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("annotations");
        let mut file = AnnotationsFile::new(path.clone(), Some(7));
        let seen = |file: &mut AnnotationsFile| file.poll().map(|u| (u.index, u.problem.is_some()));

        // Missing: the fallback, and one report.
        assert_eq!(seen(&mut file), Some((Some(7), true)));
        assert_eq!(seen(&mut file), None);
        // No annotation yet.
        std::fs::write(&path, "kubernetes.io/config.source=\"api\"").unwrap();
        assert_eq!(seen(&mut file), Some((Some(7), false)));
        assert_eq!(seen(&mut file), None);
        // The operator annotated the pod.
        std::fs::write(
            &path,
            "kubernetes.io/config.source=\"api\"\nserving.openmodel.dev/weights-entry=\"42\"",
        )
        .unwrap();
        assert_eq!(seen(&mut file), Some((Some(42), false)));
        assert_eq!(seen(&mut file), None);
        // A bad value is reported once and ignored.
        std::fs::write(&path, "serving.openmodel.dev/weights-entry=\"x\"").unwrap();
        let bad = file.poll().unwrap();
        assert_eq!(bad.index, Some(7));
        let problem = bad.problem.unwrap();
        assert!(
            problem.contains(&path.display().to_string()) && problem.contains("\"x\""),
            "{problem}"
        );
        assert_eq!(seen(&mut file), None);
        // Not UTF-8, then a malformed file.
        std::fs::write(&path, b"a=\"\xff\"").unwrap();
        assert_eq!(seen(&mut file), Some((Some(7), true)));
        std::fs::write(&path, "no equals sign").unwrap();
        assert_eq!(seen(&mut file), Some((Some(7), true)));
        assert_eq!(seen(&mut file), None);
        // Without a fallback, no annotation means unknown.
        let mut file = AnnotationsFile::new(path.clone(), None);
        assert_eq!(seen(&mut file), Some((None, true)));
        std::fs::write(&path, "serving.openmodel.dev/weights-entry=\"3\"").unwrap();
        assert_eq!(seen(&mut file), Some((Some(3), false)));
        assert_eq!(file.path(), path);
    }
}
