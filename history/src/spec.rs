//! A model's spec rebuilt from the ledger: `spec.changed` entries carry an
//! RFC 6902 JSON Patch from the previously recorded `{"spec": …}` document
//! to the new one, so applying them in log order to `{}` gives the spec of
//! every recorded generation.
//!
//! The controller's entries (`source: controller`) say what was stored, one
//! per generation; the admission webhook's say what was asked for (a request
//! may still have failed). [`replay`] applies the controller's.
//!
//! A [`Replay`] can go on where it stopped: the operator keeps one per model
//! and, for each new generation, reads only the entries logged since (page
//! by page, [`Replay::read_page`]) instead of the model's whole history.
//! Reading one page at a time or the whole log at once gives the same
//! document: reading stops at the object's first controller entry of the
//! generation asked for or a later one, and goes on from that entry next
//! time.

use openmodel_ledger::entry::{Entry, EntryBody, Source};
use openmodel_ledger::store::StoredEntry;
use serde_json::{Value, json};

use crate::Error;
use crate::confirm::{self, MAX_CANDIDATES, Pending};

/// Where a spec document lists the model's datasets.
pub const DATASETS_POINTER: &str = "/spec/provenance/datasets";

/// Applies one recorded patch to `document`; `what` names the entry in the
/// error. On error `document` may be partly patched: drop it.
pub fn apply(document: &mut Value, patch: &[Value], what: &str) -> Result<(), Error> {
    let failed = |why: String| Error::Patch {
        what: what.to_owned(),
        why,
    };
    let operations: json_patch::Patch =
        serde_json::from_value(Value::Array(patch.to_vec())).map_err(|e| failed(e.to_string()))?;
    json_patch::patch(document, &operations.0).map_err(|e| failed(e.to_string()))
}

/// The `{"spec": …}` document the ledger records for object `uid` before
/// `generation`: the object's controller `spec.changed` patches applied to
/// `{}` in log order, up to its first entry of `generation` or later. A
/// late entry of a generation older than one already applied is skipped.
/// `None` when there are none.
pub fn replay<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    uid: &str,
    generation: i64,
) -> Result<Option<Value>, Error> {
    let mut replay = Replay::new(uid);
    for (index, entry) in (0..).zip(entries) {
        if !replay.read(index, entry, generation)? {
            break;
        }
    }
    Ok(replay.document)
}

/// A replay of one object's spec that can go on where it stopped: the
/// document its controller `spec.changed` entries built so far, and where
/// in the log to read on.
#[derive(Clone, Debug)]
pub struct Replay {
    uid: String,
    document: Option<Value>,
    /// The generation of the last patch applied.
    applied: Option<i64>,
    /// Every entry before this index has been read.
    next: u64,
    /// The object's admission entries read and not yet confirmed, logged
    /// after the last confirmed one (at most [`MAX_CANDIDATES`], the newest).
    pending: Vec<Pending>,
}

impl Replay {
    /// A replay of object `uid` from the start of the log.
    pub fn new(uid: &str) -> Replay {
        Replay {
            uid: uid.to_owned(),
            document: None,
            applied: None,
            next: 0,
            pending: Vec::new(),
        }
    }

    /// The object's uid.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Where reading goes on: every entry before this index has been read.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Whether going on from here gives the spec before `generation`, as a
    /// replay from the start would: only when no patch of `generation` or
    /// later has been applied.
    pub fn can_go_on_to(&self, generation: i64) -> bool {
        self.applied.is_none_or(|applied| generation > applied)
    }

    /// The document rebuilt so far (`None` before the first patch).
    pub fn document(&self) -> Option<&Value> {
        self.document.as_ref()
    }

    /// The generation of the last patch applied (`None` before the first).
    pub fn applied(&self) -> Option<i64> {
        self.applied
    }

    /// The object's admission entries read so far that no controller entry
    /// has confirmed, in log order: what the controller's entry for the
    /// generation asked for may confirm ([`crate::confirm::chain`]).
    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }

    /// Reads `entry`, logged at `index`, the log's next one about the
    /// object, towards the spec before `generation`. False when reading
    /// must stop at it: it is the object's controller entry of `generation`
    /// or later, read again when a later generation is asked for.
    pub fn read(&mut self, index: u64, entry: &Entry, generation: i64) -> Result<bool, Error> {
        let Some(object) = entry.object.as_ref() else {
            return Ok(true);
        };
        let EntryBody::SpecChanged(change) = &entry.body else {
            return Ok(true);
        };
        if object.uid.as_deref() != Some(&self.uid) {
            return Ok(true);
        }
        if let Some(admission) = confirm::admission(index, entry) {
            if self.pending.len() == MAX_CANDIDATES {
                self.pending.remove(0);
            }
            self.pending.push(admission);
            return Ok(true);
        }
        if entry.source != Source::Controller {
            return Ok(true);
        }
        let of = object.generation.unwrap_or(0);
        if of >= generation {
            return Ok(false);
        }
        // Admissions logged before the last one confirmed can no longer be:
        // the next stored change was logged after it.
        if let Some(&last) = change.confirms.last() {
            self.pending.retain(|pending| pending.index > last);
        }
        if self.applied.is_some_and(|applied| of <= applied) {
            return Ok(true);
        }
        let document = self.document.get_or_insert_with(|| json!({}));
        apply(document, &change.patch, &format!("generation {of}"))?;
        self.applied = Some(of);
        Ok(true)
    }

    /// Reads one page of the log from [`Replay::next`] (entries in index
    /// order; every entry about the object below `end` is in it). True
    /// when reading stopped inside the page ([`Replay::read`]): the pages
    /// after it are not needed for `generation`.
    pub fn read_page(
        &mut self,
        entries: &[StoredEntry],
        end: u64,
        generation: i64,
    ) -> Result<bool, Error> {
        let from = self.next;
        for stored in entries.iter().filter(|stored| stored.index >= from) {
            if !self.read(stored.index, &stored.entry, generation)? {
                self.next = stored.index;
                return Ok(true);
            }
            self.next = stored.index + 1;
        }
        self.next = self.next.max(end);
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use openmodel_ledger::entry::{ObjectRef, Operation, SpecChanged};
    use openmodel_ledger::store::StoredEntry;

    use super::*;

    fn change(source: Source, uid: &str, generation: i64, patch: Value) -> Entry {
        Entry {
            appender: None,
            time: None,
            cluster: "c".into(),
            object: Some(ObjectRef {
                api_version: "serving.openmodel.dev/v1alpha1".into(),
                kind: "OpenModel".into(),
                namespace: "ns".into(),
                name: "m".into(),
                uid: Some(uid.into()),
                generation: Some(generation),
            }),
            actor: None,
            source,
            dedupe_key: None,
            body: EntryBody::SpecChanged(SpecChanged {
                operation: if generation == 1 {
                    Operation::Create
                } else {
                    Operation::Update
                },
                patch: patch.as_array().unwrap().clone(),
                confirms: Vec::new(),
                request_uid: None,
            }),
        }
    }

    #[test]
    fn the_controller_s_patches_rebuild_each_generation_of_one_object() {
        let log = [
            change(
                Source::Controller,
                "u1",
                1,
                json!([{"op": "add", "path": "/spec", "value": {"replicas": 1}}]),
            ),
            // The webhook's entry for the same change is not applied twice.
            change(
                Source::Admission,
                "u1",
                2,
                json!([{"op": "replace", "path": "/spec/replicas", "value": 9}]),
            ),
            change(
                Source::Controller,
                "u1",
                2,
                json!([{"op": "replace", "path": "/spec/replicas", "value": 2}]),
            ),
        ];
        assert_eq!(replay(&log, "u1", 1).unwrap(), None);
        assert_eq!(
            replay(&log, "u1", 2).unwrap(),
            Some(json!({"spec": {"replicas": 1}}))
        );
        assert_eq!(
            replay(&log, "u1", 3).unwrap(),
            Some(json!({"spec": {"replicas": 2}}))
        );
        // Another object of the same name (a new uid) starts afresh.
        assert_eq!(replay(&log, "u2", 3).unwrap(), None);
    }

    /// The log of object `u1`: generations 1..=`generations`, each setting
    /// replicas to its number, with the webhook's entry before each and
    /// another object's between.
    fn long_log(generations: i64) -> Vec<StoredEntry> {
        let mut log = Vec::new();
        for g in 1..=generations {
            let patch = if g == 1 {
                json!([{"op": "add", "path": "/spec", "value": {"replicas": 1}}])
            } else {
                json!([{"op": "replace", "path": "/spec/replicas", "value": g}])
            };
            log.push(change(Source::Admission, "u1", g - 1, patch.clone()));
            log.push(change(Source::Controller, "u2", g, patch.clone()));
            log.push(change(Source::Controller, "u1", g, patch));
        }
        log.into_iter()
            .enumerate()
            .map(|(index, entry)| StoredEntry {
                index: index as u64,
                leaf: Vec::new(),
                entry,
            })
            .collect()
    }

    /// Reads `log` into `replay` for `generation` in pages of `page`
    /// entries from where it stopped, as the operator does; the document.
    fn read_on(
        replay: &mut Replay,
        log: &[StoredEntry],
        page: usize,
        generation: i64,
    ) -> Option<Value> {
        let mut start = replay.next() as usize;
        while start < log.len() {
            let end = (start + page).min(log.len());
            if replay
                .read_page(&log[start..end], end as u64, generation)
                .unwrap()
            {
                break;
            }
            start = end;
        }
        replay.document().cloned()
    }

    #[test]
    fn going_on_page_by_page_gives_what_a_replay_from_the_start_gives() {
        let log = long_log(40);
        let entries: Vec<Entry> = log.iter().map(|s| s.entry.clone()).collect();
        for page in [1, 2, 7, 1000] {
            let mut kept = Replay::new("u1");
            for generation in 1..=41 {
                assert!(kept.can_go_on_to(generation));
                let from_start = replay(&entries, "u1", generation).unwrap();
                assert_eq!(
                    read_on(&mut kept, &log, page, generation),
                    from_start,
                    "generation {generation}, pages of {page}"
                );
                // Asked again (a reconcile that failed to record), the same.
                assert_eq!(read_on(&mut kept, &log, page, generation), from_start);
            }
            assert_eq!(kept.document(), Some(&json!({"spec": {"replicas": 40}})));
        }
        // Each generation read on from the entry that stopped the last one.
        let mut kept = Replay::new("u1");
        read_on(&mut kept, &log, 1000, 10);
        assert_eq!(kept.next(), 3 * 9 + 2, "stopped at generation 10's entry");
        assert!(!kept.can_go_on_to(9), "generation 9 is applied already");
    }

    #[test]
    fn a_late_entry_of_an_applied_generation_is_skipped() {
        let set = |g: i64| json!([{"op": "replace", "path": "/spec/replicas", "value": g}]);
        let log = [
            change(
                Source::Controller,
                "u1",
                1,
                json!([{"op": "add", "path": "/spec", "value": {"replicas": 1}}]),
            ),
            change(Source::Controller, "u1", 3, set(3)),
            // Logged late (an append that landed after a newer one).
            change(
                Source::Controller,
                "u1",
                2,
                json!([{"op": "remove", "path": "/spec/gone"}]),
            ),
            change(Source::Controller, "u1", 4, set(4)),
        ];
        assert_eq!(
            replay(&log, "u1", 5).unwrap(),
            Some(json!({"spec": {"replicas": 4}}))
        );
    }

    #[test]
    fn admissions_wait_for_the_controller_entry_that_confirms_them() {
        let create = json!([{"op": "add", "path": "/spec", "value": {"replicas": 1}}]);
        let set = |g: i64| json!([{"op": "replace", "path": "/spec/replicas", "value": g}]);
        let mut confirming = change(Source::Controller, "u1", 1, create.clone());
        if let EntryBody::SpecChanged(c) = &mut confirming.body {
            c.confirms = vec![0];
        }
        let log: Vec<StoredEntry> = [
            change(Source::Admission, "u1", 1, create),
            confirming,
            change(Source::Admission, "u1", 2, set(7)), // refused after admission
            change(Source::Admission, "u2", 2, set(2)), // another object
            change(Source::Admission, "u1", 2, set(2)),
        ]
        .into_iter()
        .zip(0..)
        .map(|(entry, index)| StoredEntry {
            index,
            leaf: Vec::new(),
            entry,
        })
        .collect();
        let mut replay = Replay::new("u1");
        assert!(!replay.read_page(&log, 5, 2).unwrap());
        let pending: Vec<u64> = replay.pending().iter().map(|p| p.index).collect();
        assert_eq!(pending, [2, 4], "0 was confirmed; 3 is another object's");
        let current = json!({"spec": {"replicas": 2}});
        let step = crate::confirm::Step {
            previous: replay.document(),
            from: replay.applied().unwrap_or(0),
            current: &current,
            to: 2,
        };
        let chain = crate::confirm::chain(step, replay.pending());
        assert_eq!(chain, [4], "the refused change is not confirmed");
    }

    #[test]
    fn a_patch_that_does_not_apply_names_its_generation() {
        let log = [change(
            Source::Controller,
            "u1",
            1,
            json!([{"op": "remove", "path": "/spec/missing"}]),
        )];
        let error = replay(&log, "u1", 2).unwrap_err().to_string();
        assert!(error.contains("generation 1"), "{error}");
    }
}
