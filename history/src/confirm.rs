//! Admissions confirmed by the controller.
//!
//! The admission webhook logs a `spec.changed` entry before the API server
//! stores a change, so an admission entry says what was *asked*: the change
//! may still have been refused after the webhook admitted it (by another
//! webhook, a quota, a name already taken), and an entry could be forged by
//! anyone who got past the webhook's defences. The controller's entry for a
//! generation says what was *stored*, and names (`confirms`) the admission
//! entries whose patches, applied in log order to the spec recorded before,
//! give that generation's spec: [`chain`] finds them. An admission entry
//! that no controller entry names was never seen to take effect;
//! [`Confirmations`] finds those in a log.
//!
//! Each stored change of the spec moves `metadata.generation` on by one, and
//! the API server shows a validating webhook the new object, generation
//! included; so the admissions behind generations `P+1 … G` are one per
//! generation, in log order (each was computed from the object the one
//! before produced, so it was logged after it). Refused or forged entries
//! can sit anywhere between them, with the generation of the change they
//! failed to make, so [`chain`] looks for a subsequence, one admission per
//! generation, whose patches lead to the stored spec, and prefers the one
//! that comes first in the log. A change through the `scale` subresource is
//! shown the Scale, which carries no generation: such an admission may
//! stand for any one generation of the chain.
//!
//! Only `CREATE` and `UPDATE` admissions (those that change a spec) are
//! confirmed this way; a `DELETE` admission is followed by the controller's
//! `model.retired`.

use std::collections::BTreeSet;

use openmodel_ledger::entry::{Entry, EntryBody, Operation, Source};
use openmodel_ledger::store::StoredEntry;
use serde_json::{Value, json};

use crate::spec::apply;

/// Most admission entries of one object [`chain`] considers: those not yet
/// confirmed, logged after the last one confirmed, newest kept.
pub const MAX_CANDIDATES: usize = 64;

/// Most patch applications one [`chain`] search makes; beyond it the
/// search gives up and confirms nothing (a log with that many unconfirmed
/// admissions in a row needs a person's look, not a guess).
const MAX_STEPS: usize = 4096;

/// An admission entry waiting to be confirmed.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    /// The entry's index.
    pub index: u64,
    /// The generation the change would make (the admitted object's), when
    /// the entry says (a change through `scale` does not).
    pub generation: Option<i64>,
    /// Its JSON Patch.
    pub patch: Vec<Value>,
}

/// `entry`, logged at `index`, as an admission that may be confirmed, if it
/// is one: a `spec.changed` of `CREATE` or `UPDATE` through the webhook.
pub fn admission(index: u64, entry: &Entry) -> Option<Pending> {
    match &entry.body {
        EntryBody::SpecChanged(change)
            if entry.source == Source::Admission && change.operation != Operation::Delete =>
        {
            Some(Pending {
                index,
                generation: entry.object.as_ref().and_then(|o| o.generation),
                patch: change.patch.clone(),
            })
        }
        _ => None,
    }
}

/// The spec recorded before a generation, and the one stored at it.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    /// The `{"spec": …}` document the ledger recorded last (`None`: none).
    pub previous: Option<&'a Value>,
    /// Its generation (0 when none was recorded).
    pub from: i64,
    /// The document stored at generation `to`.
    pub current: &'a Value,
    /// The generation the controller records.
    pub to: i64,
}

/// The indexes of the `pending` admissions (in log order), one for each
/// generation from `step.from + 1` to `step.to`, whose patches applied one
/// after the other to `step.previous` (`{}` when none) give `step.current`:
/// the first such subsequence in log order. Empty when none does (a change
/// the webhook did not see, or history it cannot account for).
pub fn chain(step: Step<'_>, pending: &[Pending]) -> Vec<u64> {
    if step.to <= step.from {
        return Vec::new();
    }
    let start = step.previous.cloned().unwrap_or_else(|| json!({}));
    let mut search = Search {
        step,
        path: Vec::new(),
        steps: MAX_STEPS,
    };
    if search.from(&start, step.from + 1, pending) {
        search.path
    } else {
        Vec::new()
    }
}

/// A depth-first search for [`chain`].
struct Search<'a> {
    step: Step<'a>,
    /// The admissions chosen so far.
    path: Vec<u64>,
    /// Patch applications left.
    steps: usize,
}

impl Search<'_> {
    /// Whether a chain goes on from `document` (the spec before
    /// `generation`) through `pending`, trying each admission that may make
    /// `generation`, in log order.
    fn from(&mut self, document: &Value, generation: i64, pending: &[Pending]) -> bool {
        for (i, admission) in pending.iter().enumerate() {
            if admission.generation.is_some_and(|g| g != generation) {
                continue;
            }
            if self.steps == 0 {
                return false;
            }
            self.steps -= 1;
            let mut next = document.clone();
            if apply(&mut next, &admission.patch, "an admission").is_err() {
                continue;
            }
            self.path.push(admission.index);
            let done = if generation == self.step.to {
                next == *self.step.current
            } else {
                self.from(&next, generation + 1, &pending[i + 1..])
            };
            if done {
                return true;
            }
            self.path.pop();
        }
        false
    }
}

/// Which admission entries of a log the controller confirmed, folded from
/// its entries in log order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confirmations {
    /// Admission entries that may be confirmed, by index.
    admissions: BTreeSet<u64>,
    /// Indexes the controller's entries confirm.
    confirmed: BTreeSet<u64>,
}

impl Confirmations {
    /// Reads the next entry of the log.
    pub fn read(&mut self, stored: &StoredEntry) {
        if admission(stored.index, &stored.entry).is_some() {
            self.admissions.insert(stored.index);
        }
        if let EntryBody::SpecChanged(change) = &stored.entry.body
            && stored.entry.source == Source::Controller
        {
            self.confirmed.extend(change.confirms.iter().copied());
        }
    }

    /// Whether the admission entry at `index` is confirmed by a controller
    /// entry read so far.
    pub fn is_confirmed(&self, index: u64) -> bool {
        self.confirmed.contains(&index)
    }

    /// Whether the entry at `index` is an admission that may be confirmed.
    pub fn is_admission(&self, index: u64) -> bool {
        self.admissions.contains(&index)
    }

    /// The admission entries read that no controller entry read confirms,
    /// in log order.
    pub fn unconfirmed(&self) -> impl Iterator<Item = u64> + '_ {
        self.admissions
            .iter()
            .copied()
            .filter(|index| !self.confirmed.contains(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(replicas: u64) -> Vec<Value> {
        vec![json!({"op": "replace", "path": "/spec/replicas", "value": replicas})]
    }

    /// Admissions as (index, generation, patch).
    fn pending(list: &[(u64, Option<i64>, Vec<Value>)]) -> Vec<Pending> {
        list.iter()
            .map(|(index, generation, patch)| Pending {
                index: *index,
                generation: *generation,
                patch: patch.clone(),
            })
            .collect()
    }

    fn doc(replicas: u64) -> Value {
        json!({"spec": {"replicas": replicas}})
    }

    /// From `doc(from_replicas)` at generation `from` to `doc(to_replicas)`
    /// at `to`.
    fn steps(log: &[Pending], from: (i64, u64), to: (i64, u64)) -> Vec<u64> {
        let (previous, current) = (doc(from.1), doc(to.1));
        let step = Step {
            previous: Some(&previous),
            from: from.0,
            current: &current,
            to: to.0,
        };
        chain(step, log)
    }

    #[test]
    fn a_create_is_confirmed_from_nothing() {
        let create = vec![json!({"op": "add", "path": "/spec", "value": {"replicas": 1}})];
        let current = doc(1);
        let step = Step {
            previous: None,
            from: 0,
            current: &current,
            to: 1,
        };
        assert_eq!(chain(step, &pending(&[(4, Some(1), create)])), vec![4]);
    }

    #[test]
    fn refused_and_forged_admissions_between_stored_ones_are_left_out() {
        let log = pending(&[
            (10, Some(2), set(2)), // stored: generation 2
            (11, Some(3), set(7)), // refused after the webhook (a quota)
            (12, Some(3), set(3)), // stored: generation 3
            (13, Some(4), set(9)), // forged
        ]);
        assert_eq!(steps(&log, (1, 1), (3, 3)), vec![10, 12]);
        // The controller saw generation 2 before 3 was made.
        assert_eq!(steps(&log, (1, 1), (2, 2)), vec![10]);
        // And then 3.
        assert_eq!(steps(&log[1..], (2, 2), (3, 3)), vec![12]);
    }

    #[test]
    fn a_scale_without_a_generation_stands_for_one_step() {
        let log = pending(&[(20, None, set(4)), (21, Some(3), set(5))]);
        assert_eq!(steps(&log, (1, 1), (3, 5)), vec![20, 21]);
        assert_eq!(steps(&log, (1, 1), (2, 4)), vec![20]);
    }

    #[test]
    fn the_first_chain_in_log_order_wins() {
        // Two admissions of the same change from the same spec (a write that
        // lost a race, then its retry): the first is confirmed.
        let log = pending(&[
            (5, Some(2), set(2)),
            (6, Some(2), set(2)),
            (7, Some(3), set(4)),
        ]);
        assert_eq!(steps(&log, (1, 1), (2, 2)), vec![5]);
        // The same answer when later admissions have been logged since.
        let mut longer = log.clone();
        longer.extend(pending(&[(8, Some(4), set(1))]));
        assert_eq!(steps(&longer, (1, 1), (2, 2)), vec![5]);
    }

    #[test]
    fn nothing_is_confirmed_when_no_chain_gives_the_spec() {
        let log = pending(&[(1, Some(2), set(2)), (2, Some(3), set(3))]);
        assert!(steps(&log, (1, 1), (3, 5)).is_empty());
        assert!(steps(&[], (1, 1), (2, 5)).is_empty());
        // A generation with no admission (the webhook did not see it).
        assert!(steps(&log, (1, 1), (4, 3)).is_empty());
        // A patch that does not apply is skipped, not an error.
        let remove = vec![json!({"op": "remove", "path": "/spec/missing"})];
        let log = pending(&[(1, Some(2), remove), (2, Some(2), set(5))]);
        assert_eq!(steps(&log, (1, 1), (2, 5)), vec![2]);
        // Nothing to confirm when the generation did not move.
        assert!(steps(&log, (2, 5), (2, 5)).is_empty());
    }

    #[test]
    fn the_search_is_bounded() {
        // 64 scale admissions none of which leads to the spec, over 64
        // generations: far more chains than steps, given up after
        // MAX_STEPS patch applications.
        let log: Vec<Pending> = (0..MAX_CANDIDATES as u64)
            .map(|i| Pending {
                index: i,
                generation: None,
                patch: set(100 + i),
            })
            .collect();
        let started = std::time::Instant::now();
        assert!(steps(&log, (1, 1), (33, 5)).is_empty());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
