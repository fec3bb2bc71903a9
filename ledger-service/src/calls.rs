//! How many calls run at once: at most `--max-calls` in all and
//! `--max-calls-per-caller` per caller, a caller being a bearer token
//! (by its SHA-256; all callers without one are one caller). A call holds
//! its [`CallPermit`] until its answer has been sent (see `held.rs`), so
//! answers a client does not read count too.
//!
//! The users who may append (the operator) are never counted: recording a
//! change must not fail because readers are busy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::{Error, Result};

/// A caller: the SHA-256 of its bearer token.
pub(crate) type CallerKey = [u8; 32];

/// Counts calls in progress.
pub(crate) struct CallLimiter {
    max_calls: usize,
    max_per_caller: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_caller: HashMap<CallerKey, usize>,
}

/// A call in progress; dropping it ends the call.
pub(crate) struct CallPermit {
    counted: Option<(Arc<CallLimiter>, CallerKey)>,
}

impl CallLimiter {
    /// At most `max_calls` in all and `max_per_caller` per caller.
    pub(crate) fn new(max_calls: usize, max_per_caller: usize) -> Arc<CallLimiter> {
        Arc::new(CallLimiter {
            max_calls,
            max_per_caller,
            counts: Mutex::default(),
        })
    }

    /// Starts a call for `caller`, or refuses it (`RESOURCE_EXHAUSTED`)
    /// when the caller or the service is at its limit; an `exempt` caller
    /// (one who may append) is let through uncounted.
    pub(crate) fn start(self: &Arc<Self>, caller: CallerKey, exempt: bool) -> Result<CallPermit> {
        if exempt {
            return Ok(CallPermit { counted: None });
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = counts.per_caller.get(&caller).copied().unwrap_or(0);
        if mine >= self.max_per_caller {
            return Err(Error::ResourceExhausted(format!(
                "this caller (bearer token) has {mine} calls in progress, the most one caller may \
                 have (--max-calls-per-caller): wait for one to finish, and read the answers of \
                 open watches"
            )));
        }
        if counts.total >= self.max_calls {
            return Err(Error::ResourceExhausted(format!(
                "the ledger service has {} calls in progress, its limit (--max-calls): retry in a \
                 moment",
                counts.total
            )));
        }
        counts.total += 1;
        *counts.per_caller.entry(caller).or_default() += 1;
        Ok(CallPermit {
            counted: Some((Arc::clone(self), caller)),
        })
    }

    /// Calls in progress, in all.
    #[cfg(test)]
    fn total(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl CallPermit {
    /// Whether the call was let through uncounted: its caller may append.
    pub(crate) fn is_exempt(&self) -> bool {
        self.counted.is_none()
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        let Some((limiter, caller)) = self.counted.take() else {
            return;
        };
        let mut counts = limiter
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        if let Some(mine) = counts.per_caller.get_mut(&caller) {
            *mine -= 1;
            if *mine == 0 {
                counts.per_caller.remove(&caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_held_to_their_share_and_the_service_to_its_total() {
        let limiter = CallLimiter::new(3, 2);
        let (alice, bob, carol) = ([1; 32], [2; 32], [3; 32]);
        let a1 = limiter.start(alice, false).unwrap();
        let _a2 = limiter.start(alice, false).unwrap();
        let err = limiter.start(alice, false).err().unwrap();
        assert!(
            matches!(&err, Error::ResourceExhausted(m) if m.contains("--max-calls-per-caller")),
            "{err}"
        );
        let _b1 = limiter.start(bob, false).unwrap();
        let err = limiter.start(carol, false).err().unwrap();
        assert!(
            matches!(&err, Error::ResourceExhausted(m) if m.contains("--max-calls)")),
            "{err}"
        );
        // Those who may append pass uncounted, even now.
        let exempt = limiter.start(carol, true).unwrap();
        assert!(exempt.is_exempt() && !a1.is_exempt());
        assert_eq!(limiter.total(), 3);
        drop(exempt);
        assert_eq!(limiter.total(), 3);
        // A finished call makes room for the same caller and for others.
        drop(a1);
        let _c1 = limiter.start(carol, false).unwrap();
        assert!(limiter.start(alice, false).is_err(), "the total is reached");
        assert_eq!(limiter.total(), 3);
    }

    #[test]
    fn finished_callers_are_forgotten() {
        let limiter = CallLimiter::new(10, 10);
        let permits: Vec<_> = (0..5u8)
            .map(|i| limiter.start([i; 32], false).unwrap())
            .collect();
        drop(permits);
        let counts = limiter.counts.lock().unwrap();
        assert_eq!((counts.total, counts.per_caller.len()), (0, 0));
    }
}
