//! [`AuditLog`] over the ledger service's gRPC `AuditService`.
//!
//! Each attempt of a call gets its answer within [`CALL_DEADLINE`] or fails
//! with DEADLINE_EXCEEDED: a connection that went silent costs a deadline,
//! never a caller stuck for good (the connection's pings close it
//! meanwhile, and the next attempt connects again). Attempts that fail with
//! a status that says "try again" (UNAVAILABLE, a transport failure, a
//! deadline, ABORTED) are retried with jittered exponential back-off
//! (100 ms doubling to at most 2 s) until the client's patience is spent
//! (wall-clock time since the first attempt); every call may be retried,
//! appends included, because an append retried after it committed answers
//! `existing` (its dedupe key is taken). Answers are parsed here but not
//! trusted: checkpoints come back unverified (see the module above).

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable as _};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use openmodel_ledger::checkpoint::SignedCheckpoint;
use openmodel_ledger::entry::Entry;
use openmodel_ledger::hash::Hash;
use openmodel_ledger::proof_file::TlogProof;
use openmodel_ledger::query::{Page, Query};
use openmodel_proto::audit::{
    GetCheckpointRequest, GetConsistencyProofRequest, GetInclusionProofRequest, ListEntriesRequest,
};
use tonic::{Code, Status};

use super::{Appended, AuditClient, AuditLog, append_request, stored_entry};
use crate::filter::entry_filter;
use crate::{EXISTING_INDEX_HEADER, Error, Result};

/// How long calls are retried while the service is unavailable, by default.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(30);

/// How long one attempt of a call waits for its answer. The service answers
/// a page or an append in milliseconds; ten seconds is a service that is not
/// answering.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// The ledger service, through a connected [`AuditClient`].
#[derive(Clone)]
pub struct RemoteLog {
    client: AuditClient,
    endpoint: String,
    patience: Duration,
}

/// Whether a failed call may succeed if sent again.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Aborted
    )
}

/// What an attempt that got no answer within [`CALL_DEADLINE`] fails with.
fn unanswered() -> Status {
    Status::deadline_exceeded(format!(
        "the ledger service sent no answer within {} s (the connection may have gone silent; it is pinged and replaced when dead)",
        CALL_DEADLINE.as_secs()
    ))
}

/// A refusal, with what the client was doing.
fn refused(doing: &str, status: &Status) -> Error {
    Error::Refused {
        doing: doing.to_owned(),
        code: status.code(),
        message: status.message().to_owned(),
    }
}

/// Proof hashes as received: 32 bytes each.
fn hashes(raw: Vec<Vec<u8>>) -> Result<Vec<Hash>> {
    raw.iter()
        .map(|h| {
            Hash::from_slice(h).ok_or_else(|| {
                Error::Ledger(openmodel_ledger::Error::InvalidProof(format!(
                    "the service sent a proof hash of {} bytes; hashes are 32",
                    h.len()
                )))
            })
        })
        .collect()
}

impl RemoteLog {
    /// The service at `endpoint` (for messages), through `client`.
    pub fn new(client: AuditClient, endpoint: &str) -> RemoteLog {
        RemoteLog {
            client,
            endpoint: endpoint.to_owned(),
            patience: DEFAULT_PATIENCE,
        }
    }

    /// Retries unavailable calls for at most `patience` (zero: never).
    pub fn with_patience(mut self, patience: Duration) -> RemoteLog {
        self.patience = patience;
        self
    }

    /// Runs `call` on a fresh client handle, each attempt within
    /// [`CALL_DEADLINE`], retrying while it may succeed later and patience lasts.
    async fn call<T, F, Fut>(&self, doing: &str, call: F) -> Result<T>
    where
        F: Fn(AuditClient) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_status(doing, call)
            .await
            .map_err(|status| refused(doing, &status))
    }

    /// [`RemoteLog::call`], answering the last status as it came.
    async fn call_status<T, F, Fut>(&self, doing: &str, call: F) -> Result<T, Status>
    where
        F: Fn(AuditClient) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        let started = Instant::now();
        let attempt = || {
            let answer = call(self.client.clone());
            async move {
                tokio::time::timeout(CALL_DEADLINE, answer)
                    .await
                    .unwrap_or_else(|_| Err(unanswered()))
            }
        };
        let answer = attempt
            .retry(backoff)
            .when(|status| retryable(status) && started.elapsed() < self.patience)
            .notify(|status, pause| {
                tracing::warn!(
                    endpoint = %self.endpoint,
                    error = %status.message(),
                    retry_in = ?pause,
                    "the ledger service is unavailable while {doing}; retrying"
                );
            })
            .await;
        answer.map(tonic::Response::into_inner)
    }
}

impl AuditLog for RemoteLog {
    fn describe(&self) -> String {
        format!("the ledger service at {}", self.endpoint)
    }

    fn append(&self, entry: Entry) -> BoxFuture<'_, Result<Appended>> {
        async move {
            let request = append_request(&entry)?;
            let appended = self
                .call_status("appending", |mut c| {
                    let request = request.clone();
                    async move { c.append(request).await }
                })
                .await;
            match appended {
                Ok(r) => Ok(Appended::from_receipt(r.index, r.tree_size, r.existing)),
                Err(status) if status.code() == Code::AlreadyExists => {
                    let index = status
                        .metadata()
                        .get(EXISTING_INDEX_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| refused("appending", &status))?;
                    let tree_size = self.checkpoint().await?.checkpoint.size;
                    Ok(Appended::Conflict { index, tree_size })
                }
                Err(status) => Err(refused("appending", &status)),
            }
        }
        .boxed()
    }

    fn query(&self, query: Query) -> BoxFuture<'_, Result<Page>> {
        async move {
            let request = ListEntriesRequest {
                filter: Some(entry_filter(&query)),
                start: query.start,
                limit: u32::try_from(query.limit).unwrap_or(u32::MAX),
            };
            let answer = self
                .call("listing entries", |mut c| {
                    let request = request.clone();
                    async move { c.list_entries(request).await }
                })
                .await?;
            let entries = answer
                .entries
                .into_iter()
                .map(stored_entry)
                .collect::<Result<Vec<_>>>()?;
            Ok(Page {
                entries,
                checkpoint: SignedCheckpoint::parse_unverified(&answer.checkpoint)?,
                scanned: answer.scanned_start..answer.scanned_end,
                next: answer.next,
            })
        }
        .boxed()
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<SignedCheckpoint>> {
        async move {
            let answer = self
                .call("reading the checkpoint", |mut c| async move {
                    c.get_checkpoint(GetCheckpointRequest {}).await
                })
                .await?;
            Ok(SignedCheckpoint::parse_unverified(&answer.checkpoint)?)
        }
        .boxed()
    }

    fn prove(&self, index: u64, tree_size: Option<u64>) -> BoxFuture<'_, Result<TlogProof>> {
        async move {
            let request = GetInclusionProofRequest {
                index,
                tree_size: tree_size.unwrap_or(0),
            };
            let answer = self
                .call("proving an entry included", |mut c| async move {
                    c.get_inclusion_proof(request).await
                })
                .await?;
            Ok(TlogProof::parse(&answer.tlog_proof)?)
        }
        .boxed()
    }

    fn consistency(&self, old_size: u64, new_size: u64) -> BoxFuture<'_, Result<Vec<Hash>>> {
        async move {
            let request = GetConsistencyProofRequest { old_size, new_size };
            let answer = self
                .call("proving two tree sizes consistent", |mut c| async move {
                    c.get_consistency_proof(request).await
                })
                .await?;
            hashes(answer.hashes)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_statuses_that_may_pass_later_are_retried() {
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::DeadlineExceeded,
            Code::Aborted,
        ] {
            assert!(retryable(&Status::new(code, "")), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::NotFound,
            Code::OutOfRange,
        ] {
            assert!(!retryable(&Status::new(code, "")), "{code:?}");
        }
    }

    #[test]
    fn proof_hashes_must_be_32_bytes() {
        assert_eq!(hashes(vec![vec![7; 32]]).unwrap().len(), 1);
        let error = hashes(vec![vec![7; 31]]).unwrap_err().to_string();
        assert!(error.contains("31 bytes"), "{error}");
    }
}
