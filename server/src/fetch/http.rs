//! Downloads over HTTP(S) from a source that may fail or lie, within
//! bounds:
//!
//! - time: connecting (`--connect-timeout-secs`), waiting for an answer's
//!   headers (`--timeout-secs`), any gap in the data (`--idle-timeout-secs`:
//!   a stalled connection), and the whole fetch, retries and back-off
//!   included (`--total-timeout-secs`: a source that trickles);
//! - bytes: a file may not grow past the size its listing announces (a
//!   body longer than announced is cut, its partial file removed, and the
//!   fetch refused), a file of unknown size past what is left of
//!   `--max-bytes`, and a listing past [`MAX_LISTING_BYTES`].
//!
//! Transient failures (timeouts but the total one, dropped connections,
//! 5xx, 408, 429) are retried with exponential back-off; a file whose
//! connection dropped resumes with a `Range` request.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use ureq::Timeout;

use super::Options;
use crate::{Error, Result};

/// Largest listing (a manifest JSON, the Hub's answer) read, in bytes.
pub const MAX_LISTING_BYTES: u64 = 16 << 20;

/// An attempt's failure: whether another attempt may succeed, and why.
type Failure = (bool, String);

/// An HTTP client with the deadline and the byte budget of one fetch.
pub struct Client<'a> {
    agent: ureq::Agent,
    opts: &'a Options,
    deadline: Instant,
    /// Bytes still allowed under `--max-bytes`.
    budget: u64,
}

fn failure(url: &str, reason: impl std::fmt::Display) -> Error {
    Error::Download {
        url: url.to_owned(),
        reason: reason.to_string(),
    }
}

/// Percent-encodes a `/`-separated path for a URL, keeping the `/`s.
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(encode_component)
        .collect::<Vec<_>>()
        .join("/")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl<'a> Client<'a> {
    /// A client whose fetch started `started`.
    pub fn new(opts: &'a Options, started: Instant) -> Client<'a> {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_recv_response(Some(opts.timeout))
            .timeout_per_read(Some(opts.idle_timeout))
            .timeout_recv_body(None)
            .build()
            .into();
        Client {
            agent,
            opts,
            deadline: started + opts.total_timeout,
            budget: opts.max_bytes,
        }
    }

    /// Bytes still allowed under `--max-bytes`.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Time left before `--total-timeout-secs`, if any.
    fn remaining(&self) -> Option<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    fn total_exceeded(&self, last: &str) -> String {
        let mut reason = format!(
            "the fetch took longer than --total-timeout-secs ({} s)",
            self.opts.total_timeout.as_secs()
        );
        if !last.is_empty() {
            reason.push_str(&format!("; the last attempt failed: {last}"));
        }
        reason
    }

    /// What went wrong, in the terms of the flags that bound it.
    fn describe(&self, e: &ureq::Error) -> String {
        match e {
            ureq::Error::Timeout(Timeout::PerRead) => format!(
                "no data for {} s (--idle-timeout-secs)",
                self.opts.idle_timeout.as_secs()
            ),
            ureq::Error::Timeout(Timeout::Connect) => format!(
                "could not connect within {} s (--connect-timeout-secs)",
                self.opts.connect_timeout.as_secs()
            ),
            ureq::Error::Timeout(Timeout::RecvResponse) => format!(
                "no answer within {} s (--timeout-secs)",
                self.opts.timeout.as_secs()
            ),
            ureq::Error::Timeout(Timeout::Global) => self.total_exceeded(""),
            other => other.to_string(),
        }
    }

    /// [`Client::describe`] for an error reading a body.
    fn describe_io(&self, e: &std::io::Error) -> String {
        match ureq_error(e) {
            Some(inner) => self.describe(inner),
            None => e.to_string(),
        }
    }

    /// [`Client::retryable`] for an error reading a body.
    fn retryable_io(&self, e: &std::io::Error) -> bool {
        ureq_error(e).is_none_or(|inner| self.retryable(inner))
    }

    /// Retries `attempt` with exponential back-off while its failure is
    /// transient, attempts are left and the total deadline allows.
    fn with_retries<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut() -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let mut wait = self.opts.backoff;
        let mut last = String::new();
        for n in 0..=self.opts.retries {
            if self.remaining().is_none() {
                return Err(failure(url, self.total_exceeded(&last)));
            }
            match attempt() {
                Ok(v) => return Ok(v),
                Err((false, reason)) => return Err(failure(url, reason)),
                Err((true, reason)) => last = reason,
            }
            if n < self.opts.retries {
                std::thread::sleep(wait.min(self.remaining().unwrap_or_default()));
                wait *= 2;
            }
        }
        Err(failure(
            url,
            format!("{last} (gave up after {} attempts)", self.opts.retries + 1),
        ))
    }

    /// `GET url`, within what is left of the total deadline.
    fn get(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        self.agent
            .get(url)
            .config()
            .timeout_global(self.remaining())
            .build()
    }

    /// Whether a failed request is worth another attempt.
    fn retryable(&self, e: &ureq::Error) -> bool {
        match e {
            ureq::Error::StatusCode(code) => *code >= 500 || *code == 429 || *code == 408,
            ureq::Error::Timeout(Timeout::Global) => false,
            _ => true,
        }
    }

    /// The body of `url` as text, at most [`MAX_LISTING_BYTES`].
    pub fn get_text(&self, url: &str) -> Result<String> {
        self.with_retries(url, || {
            let resp = self
                .get(url)
                .call()
                .map_err(|e| (self.retryable(&e), self.describe(&e)))?;
            resp.into_body()
                .into_with_config()
                .limit(MAX_LISTING_BYTES)
                .read_to_string()
                .map_err(|e| match e {
                    ureq::Error::BodyExceedsLimit(_) => (
                        false,
                        format!("the listing is larger than {MAX_LISTING_BYTES} bytes"),
                    ),
                    e => (self.retryable(&e), self.describe(&e)),
                })
        })
    }

    /// Downloads `url` to `path` (whose folder exists), resuming a partial
    /// file with a range request. `size`: what the listing announces, the
    /// most the file may hold; unknown, what is left of `--max-bytes`.
    pub fn download(&mut self, url: &str, path: &Path, size: Option<u64>) -> Result<()> {
        let cap = size.unwrap_or(self.budget);
        if cap > self.budget {
            return Err(failure(
                url,
                format!(
                    "it is announced with {cap} bytes, more than the {} left of --max-bytes ({} in all)",
                    self.budget, self.opts.max_bytes
                ),
            ));
        }
        self.with_retries(url, || self.attempt(url, path, size, cap))?;
        self.budget -= file_len(path).min(self.budget);
        Ok(())
    }

    /// One attempt of [`Client::download`].
    fn attempt(
        &self,
        url: &str,
        path: &Path,
        size: Option<u64>,
        cap: u64,
    ) -> std::result::Result<(), Failure> {
        let local = |e: std::io::Error| (false, format!("{}: {e}", path.display()));
        let mut have = file_len(path);
        if have > cap {
            // Longer than the file may be: not a prefix of it.
            fs::remove_file(path).map_err(local)?;
            have = 0;
        }
        if size == Some(have) && (have > 0 || path.exists()) {
            // Whole already (from a previous attempt or run); the digest
            // of the folder decides whether it is right.
            return Ok(());
        }
        let mut req = self.get(url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            // The partial file is already whole, or the source changed: start over.
            Err(ureq::Error::StatusCode(416)) => {
                fs::remove_file(path).map_err(local)?;
                return Err((true, "range not satisfiable; restarting the file".into()));
            }
            Err(e) => return Err((self.retryable(&e), self.describe(&e))),
        };
        let resumed = resp.status().as_u16() == 206;
        let mut got = if resumed { have } else { 0 };
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(resumed)
            .write(true)
            .truncate(!resumed)
            .open(path)
            .map_err(local)?;
        let mut body = resp.into_body().into_with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = body.read(&mut buf).map_err(|e| {
                (
                    self.retryable_io(&e),
                    format!(
                        "connection lost after {got} bytes: {}",
                        self.describe_io(&e)
                    ),
                )
            })?;
            if n == 0 {
                break;
            }
            if got + n as u64 > cap {
                drop(file);
                fs::remove_file(path).map_err(local)?;
                return Err((false, self.too_long(size, cap)));
            }
            file.write_all(&buf[..n]).map_err(local)?;
            got += n as u64;
        }
        file.sync_all().map_err(local)?;
        match size {
            Some(size) if got < size => Err((
                true,
                format!("the connection closed after {got} of {size} bytes"),
            )),
            _ => Ok(()),
        }
    }

    fn too_long(&self, size: Option<u64>, cap: u64) -> String {
        match size {
            Some(size) => format!(
                "the source sent more than the {size} bytes its listing announces; refusing the file (the partial file is removed)"
            ),
            None => format!(
                "the source sent more than {cap} bytes, what is left of --max-bytes ({} in all); \
                 raise --max-bytes if the model is really that large",
                self.opts.max_bytes
            ),
        }
    }
}

/// The client's error behind an error reading a body, if it is one.
fn ureq_error(e: &std::io::Error) -> Option<&ureq::Error> {
    e.get_ref()?.downcast_ref::<ureq::Error>()
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_encoded_but_for_their_slashes() {
        assert_eq!(
            encode_path("1_Pooling/config.json"),
            "1_Pooling/config.json"
        );
        assert_eq!(
            encode_path("a b/naïve?#%.txt"),
            "a%20b/na%C3%AFve%3F%23%25.txt"
        );
        assert_eq!(encode_component("refs/pr/1"), "refs%2Fpr%2F1");
    }
}
