//! The bounds of the ledger service: how much one answer may hold, how
//! many calls may run at once (in all and per caller), how long a call, a
//! read and an unread watch message may take, how often callers without a
//! token are answered, and how much is cached. Every one is a flag of
//! `openmodel-ledger serve` (docs/ledger-service.md §4 has the table);
//! [`Limits::default`] holds the defaults.
//!
//! Why these: one namespace viewer must not be able to exhaust the
//! service's memory (a 512 MiB limit in the chart) or starve its readiness
//! probe, because while the ledger is down every OpenModel change is
//! refused.

use std::time::Duration;

use openmodel_ledger::store::{MAX_READ_CONNECTIONS, ReadLimits};
use openmodel_ledger::tiles::MAX_ENTRY_SIZE;

use crate::{Error, Result};

/// The most any gRPC message may hold, either way: the protocol's own
/// bound. Clients accept answers up to this size, so `--max-response-bytes`
/// may not exceed it.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The least `--max-response-bytes` may be: room for the largest entry and
/// the page's own fields ([`page_budget`]).
pub const MIN_RESPONSE_BYTES: usize = 512 << 10;

/// The least `--watch-message-bytes` may be: room for the largest entry in
/// a message of up to `follow::PAGE` entries.
pub const MIN_WATCH_MESSAGE_BYTES: usize = 128 << 10;

/// What a page's answer holds besides its leaves: the signed checkpoint and
/// the fields around them.
const PAGE_RESERVE: usize = 16 << 10;

/// The protobuf fields around one entry of a page (index, length, tags),
/// rounded up.
const PER_ENTRY_OVERHEAD: usize = 32;

/// The service's bounds. Sizes are bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes in one answer: a `ListEntries` page or a `WatchEntries`
    /// message stops early to stay under it (its `next` or `scanned_end`
    /// says where to go on); gRPC refuses to send more.
    pub max_response_bytes: usize,
    /// Most bytes in one `WatchEntries` message, at most
    /// `max_response_bytes`: smaller, because a watch whose client does not
    /// read holds up to two of them until it is dropped.
    pub watch_message_bytes: usize,
    /// Most bytes in one gRPC request (an `Append` holds one entry of at
    /// most 64 KiB).
    pub max_request_bytes: usize,
    /// gRPC calls and authenticated HTTPS requests in progress at once, in
    /// all, answers still being sent included. The users who may append are
    /// not counted (the operator's appends are never refused for load).
    pub max_calls: usize,
    /// The same per caller (per bearer token).
    pub max_calls_per_caller: usize,
    /// `WatchEntries` streams open at once.
    pub max_watches: usize,
    /// How long a watch waits for its client to take a message before it
    /// drops the client with `RESOURCE_EXHAUSTED`.
    pub watch_send_timeout: Duration,
    /// Longest a unary gRPC call may take.
    pub call_timeout: Duration,
    /// Bytes of entries read per second for callers who may not append,
    /// together (pages, watch messages, entry bundles): readers beyond it
    /// wait, so no reader can take the CPU that appends need.
    pub read_bytes_per_second: usize,
    /// Read-only SQLite connections (reads that run at once).
    pub read_connections: usize,
    /// Longest one SQLite read may run.
    pub read_timeout: Duration,
    /// Requests without a bearer token (`/checkpoint`, hash tiles) answered
    /// per second, in all; beyond it, `429 Too Many Requests` with
    /// `Retry-After`.
    pub public_requests_per_second: u32,
    /// How many such requests may come at once after a quiet spell.
    pub public_burst: u32,
    /// Bytes of hash tiles kept in memory.
    pub tile_cache_bytes: usize,
    /// Entry bundles (up to 16 MiB each) being read or sent at once.
    pub max_bundle_requests: usize,
    /// TokenReviews and SubjectAccessReviews in flight at once; callers
    /// beyond wait.
    pub max_reviews: usize,
    /// Answers remembered per kind (accepted tokens, refused tokens,
    /// permission decisions).
    pub auth_cache_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_response_bytes: 1 << 20,
            watch_message_bytes: 256 << 10,
            max_request_bytes: 128 << 10,
            max_calls: 128,
            max_calls_per_caller: 8,
            max_watches: 64,
            watch_send_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            read_bytes_per_second: 16 << 20,
            read_connections: 4,
            read_timeout: Duration::from_secs(10),
            public_requests_per_second: 100,
            public_burst: 200,
            tile_cache_bytes: 16 << 20,
            max_bundle_requests: 2,
            max_reviews: 16,
            auth_cache_entries: 10_000,
        }
    }
}

/// Fails with a message naming `flag` unless `ok`.
fn check(ok: bool, flag: &str, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!("{flag}: {}", what())))
    }
}

impl Limits {
    /// Refuses bounds that cannot work, naming the flag.
    pub fn validate(&self) -> Result<()> {
        check(
            (MIN_RESPONSE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.max_response_bytes),
            "--max-response-bytes",
            || {
                format!(
                    "{} is outside {MIN_RESPONSE_BYTES}..={MAX_MESSAGE_BYTES} (room for the \
                     largest entry, and no more than clients accept)",
                    self.max_response_bytes
                )
            },
        )?;
        check(
            (MIN_WATCH_MESSAGE_BYTES..=self.max_response_bytes).contains(&self.watch_message_bytes),
            "--watch-message-bytes",
            || {
                format!(
                    "{} is outside {MIN_WATCH_MESSAGE_BYTES}..={} (room for the largest entry, \
                     and no more than --max-response-bytes)",
                    self.watch_message_bytes, self.max_response_bytes
                )
            },
        )?;
        let least_request = MAX_ENTRY_SIZE + 1024;
        check(
            (least_request..=MAX_MESSAGE_BYTES).contains(&self.max_request_bytes),
            "--max-request-bytes",
            || {
                format!(
                    "{} is outside {least_request}..={MAX_MESSAGE_BYTES} (an append carries an \
                     entry of up to {MAX_ENTRY_SIZE} bytes)",
                    self.max_request_bytes
                )
            },
        )?;
        for (value, flag) in [
            (self.max_calls, "--max-calls"),
            (self.max_calls_per_caller, "--max-calls-per-caller"),
            (self.max_watches, "--max-watches"),
            (self.tile_cache_bytes, "--tile-cache-bytes"),
            (self.read_bytes_per_second, "--read-bytes-per-second"),
            (self.max_bundle_requests, "--max-bundle-requests"),
            (self.max_reviews, "--max-reviews"),
            (self.auth_cache_entries, "--auth-cache-entries"),
        ] {
            check(value > 0, flag, || "must be at least 1".into())?;
        }
        for (value, flag) in [
            (
                self.public_requests_per_second,
                "--public-requests-per-second",
            ),
            (self.public_burst, "--public-burst"),
        ] {
            check(value > 0, flag, || "must be at least 1".into())?;
        }
        check(
            self.max_calls_per_caller <= self.max_calls,
            "--max-calls-per-caller",
            || {
                format!(
                    "{} exceeds --max-calls ({})",
                    self.max_calls_per_caller, self.max_calls
                )
            },
        )?;
        for (value, flag) in [
            (self.watch_send_timeout, "--watch-send-timeout"),
            (self.call_timeout, "--call-timeout"),
            (self.read_timeout, "--read-timeout"),
        ] {
            check(!value.is_zero(), flag, || {
                "must be at least 1 second".into()
            })?;
        }
        check(
            (1..=MAX_READ_CONNECTIONS).contains(&self.read_connections),
            "--read-connections",
            || {
                format!(
                    "{} is outside 1..={MAX_READ_CONNECTIONS}",
                    self.read_connections
                )
            },
        )
    }

    /// How the ledger reads under these limits.
    pub fn read_limits(&self) -> ReadLimits {
        ReadLimits {
            connections: self.read_connections,
            timeout: Some(self.read_timeout),
        }
    }

    /// The bytes of leaves a page of at most `limit` entries may hold, so
    /// that its answer stays within `max_response_bytes`.
    pub fn page_budget(&self, limit: usize) -> usize {
        page_budget(self.max_response_bytes, limit)
    }

    /// The same for a watch message, within `watch_message_bytes`.
    pub fn watch_budget(&self, limit: usize) -> usize {
        page_budget(self.watch_message_bytes, limit)
    }
}

/// The bytes of leaves a page of at most `limit` entries may hold so that
/// its answer, with the checkpoint and every entry's fields, stays within
/// `max_response_bytes`; never less than the largest entry, so a page
/// always moves on.
pub fn page_budget(max_response_bytes: usize, limit: usize) -> usize {
    max_response_bytes
        .saturating_sub(PAGE_RESERVE)
        .saturating_sub(limit.saturating_mul(PER_ENTRY_OVERHEAD))
        .max(MAX_ENTRY_SIZE)
}

/// Parses a size: bytes, or a number with a binary suffix as Kubernetes
/// writes them (`512Ki`, `1Mi`, `2Gi`).
pub fn parse_bytes(text: &str) -> std::result::Result<usize, String> {
    let text = text.trim();
    let (digits, shift) = match text {
        t if t.ends_with("Ki") => (&t[..t.len() - 2], 10),
        t if t.ends_with("Mi") => (&t[..t.len() - 2], 20),
        t if t.ends_with("Gi") => (&t[..t.len() - 2], 30),
        t => (t, 0),
    };
    let invalid = || format!("{text:?} is not a size: give bytes, or a number with Ki, Mi or Gi");
    let number: usize = digits.parse().map_err(|_| invalid())?;
    number.checked_mul(1 << shift).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_hold_and_each_bound_is_checked_by_its_flag() {
        Limits::default().validate().unwrap();
        let refused = |change: fn(&mut Limits), flag: &str| {
            let mut limits = Limits::default();
            change(&mut limits);
            let err = limits.validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        };
        refused(|l| l.max_response_bytes = 1024, "--max-response-bytes");
        refused(
            |l| l.max_response_bytes = MAX_MESSAGE_BYTES + 1,
            "--max-response-bytes",
        );
        refused(|l| l.max_request_bytes = 1024, "--max-request-bytes");
        refused(|l| l.watch_message_bytes = 1024, "--watch-message-bytes");
        refused(
            |l| l.watch_message_bytes = l.max_response_bytes + 1,
            "--watch-message-bytes",
        );
        refused(|l| l.max_calls = 0, "--max-calls");
        refused(|l| l.max_calls_per_caller = 0, "--max-calls-per-caller");
        refused(|l| l.max_calls_per_caller = 1000, "--max-calls-per-caller");
        refused(|l| l.max_watches = 0, "--max-watches");
        refused(
            |l| l.watch_send_timeout = Duration::ZERO,
            "--watch-send-timeout",
        );
        refused(|l| l.call_timeout = Duration::ZERO, "--call-timeout");
        refused(|l| l.read_connections = 0, "--read-connections");
        refused(|l| l.read_connections = 65, "--read-connections");
        refused(|l| l.read_timeout = Duration::ZERO, "--read-timeout");
        refused(
            |l| l.public_requests_per_second = 0,
            "--public-requests-per-second",
        );
        refused(|l| l.public_burst = 0, "--public-burst");
        refused(|l| l.tile_cache_bytes = 0, "--tile-cache-bytes");
        refused(|l| l.read_bytes_per_second = 0, "--read-bytes-per-second");
        refused(|l| l.max_bundle_requests = 0, "--max-bundle-requests");
        refused(|l| l.max_reviews = 0, "--max-reviews");
        refused(|l| l.auth_cache_entries = 0, "--auth-cache-entries");
    }

    #[test]
    fn a_full_page_fits_its_message() {
        let pages = [1, 100, openmodel_ledger::query::MAX_LIMIT];
        let watches = [1, crate::follow::PAGE];
        for (max, limits) in [
            (MIN_RESPONSE_BYTES, &pages[..]),
            (1 << 20, &pages),
            (MAX_MESSAGE_BYTES, &pages),
            (MIN_WATCH_MESSAGE_BYTES, &watches),
            (256 << 10, &watches),
        ] {
            for &limit in limits {
                let budget = page_budget(max, limit);
                assert!(budget >= MAX_ENTRY_SIZE, "{max} {limit}");
                let worst = budget + PAGE_RESERVE + limit * PER_ENTRY_OVERHEAD;
                assert!(worst <= max, "{max} {limit}: {worst}");
            }
        }
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512Ki"), Ok(512 << 10));
        assert_eq!(parse_bytes("1Mi"), Ok(1 << 20));
        assert_eq!(parse_bytes(" 2Gi "), Ok(2 << 30));
        for bad in ["", "Mi", "1MB", "-1", "1.5Mi", "99999999999999999999Gi"] {
            let err = parse_bytes(bad).unwrap_err();
            assert!(err.contains("not a size"), "{bad}: {err}");
        }
    }
}
