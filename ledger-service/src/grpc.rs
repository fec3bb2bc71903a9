//! The gRPC `AuditService`: each RPC authenticates the caller, reads or
//! appends, and authorizes what it is about to answer before answering.
//! What each RPC needs is in docs/ledger-service.md and audit.proto.

use std::sync::Arc;

use openmodel_proto::audit::audit_service_server::AuditService;
use openmodel_proto::audit::{
    AppendRequest, AppendResponse, GetCheckpointRequest, GetCheckpointResponse,
    GetConsistencyProofRequest, GetConsistencyProofResponse, GetEntryRequest, GetEntryResponse,
    GetInclusionProofRequest, GetInclusionProofResponse, ListEntriesRequest, ListEntriesResponse,
    WatchEntriesRequest, WatchEntriesResponse,
};
use tonic::codegen::BoxStream;
use tonic::{Code, Request, Response, Status};

use crate::EXISTING_INDEX_HEADER;
use crate::authz::Need;
use crate::filter::{entry_scope, logged, query};
use crate::outbox::{Inbox, outbox};
use crate::{Access, Shared, follow};
use crate::{Error, Result};
use openmodel_ledger::entry::{Appender, Entry};

/// The service; one per server, shared by every connection.
pub(crate) struct AuditApi<A> {
    shared: Arc<Shared<A>>,
}

impl<A> AuditApi<A> {
    pub(crate) fn new(shared: Arc<Shared<A>>) -> Self {
        AuditApi { shared }
    }
}

/// The `authorization` metadata of a request.
fn authorization<T>(request: &Request<T>) -> Option<&[u8]> {
    request
        .metadata()
        .get("authorization")
        .map(|value| value.as_bytes())
}

/// The gRPC status of an error, with its message; a dedupe conflict also
/// names the existing entry's index in [`EXISTING_INDEX_HEADER`].
pub(crate) fn status(error: Error) -> Status {
    let code = error.code();
    match code {
        Code::Internal | Code::Unavailable => tracing::warn!(%error, "request failed"),
        _ => tracing::debug!(%error, "request refused"),
    }
    let mut status = Status::new(code, error.to_string());
    if let Error::Ledger(openmodel_ledger::Error::DedupeConflict { index, .. }) = error
        && let Ok(value) = index.to_string().parse()
    {
        status.metadata_mut().insert(EXISTING_INDEX_HEADER, value);
    }
    status
}

fn answer<T>(result: Result<T>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(status)
}

impl<A: Access> AuditApi<A> {
    async fn append_entry(&self, request: Request<AppendRequest>) -> Result<AppendResponse> {
        let user = self
            .shared
            .gate
            .check(authorization(&request), &Need::Append)
            .await?;
        // Only the --append-user identities get here (the operator), so
        // only they write admission and controller entries; each entry
        // names the one that appended it, as the API server authenticated
        // them (a draft naming an appender is refused).
        let mut entry = Entry::parse_draft(&request.get_ref().entry)?;
        entry.appender = Some(Appender {
            uid: user.uid.clone(),
            username: user.username.clone(),
        });
        let kind = entry.kind();
        let receipt = self.shared.append(entry).await?;
        tracing::info!(
            user = user.username,
            kind,
            index = receipt.index,
            existing = receipt.existing,
            "append"
        );
        Ok(AppendResponse {
            index: receipt.index,
            leaf_hash: receipt.leaf_hash.0.to_vec(),
            time: receipt.time.to_string(),
            tree_size: receipt.tree_size,
            existing: receipt.existing,
        })
    }

    async fn list(&self, request: Request<ListEntriesRequest>) -> Result<ListEntriesResponse> {
        let gate = &self.shared.gate;
        let user = gate.authenticate(authorization(&request)).await?;
        let r = request.get_ref();
        let (query, scope) = query(r.filter.as_ref(), r.start, r.limit)?;
        gate.authorize(&user, &Need::Read(scope)).await?;
        let budget = self.shared.limits.page_budget(query.limit);
        let page = self.shared.read_page(&user, query, budget).await?;
        Ok(ListEntriesResponse {
            entries: page
                .entries
                .into_iter()
                .map(|e| logged(e.index, e.bytes))
                .collect(),
            checkpoint: page.checkpoint.note,
            scanned_start: page.scanned.start,
            scanned_end: page.scanned.end,
            next: page.next,
        })
    }

    async fn entry(&self, request: Request<GetEntryRequest>) -> Result<GetEntryResponse> {
        let gate = &self.shared.gate;
        let user = gate.authenticate(authorization(&request)).await?;
        let index = request.get_ref().index;
        let entry = self.shared.read(move |l| l.entry(index)).await?;
        gate.authorize(&user, &Need::Read(entry_scope(&entry)))
            .await?;
        Ok(GetEntryResponse {
            entry: Some(logged(entry.index, entry.leaf)),
        })
    }

    async fn checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<GetCheckpointResponse> {
        self.shared
            .gate
            .check(authorization(&request), &Need::Authenticated)
            .await?;
        let signed = self.shared.checkpoint().await?;
        let cp = signed.checkpoint;
        Ok(GetCheckpointResponse {
            checkpoint: signed.note,
            origin: cp.origin,
            tree_size: cp.size,
            root_hash: cp.root.0.to_vec(),
        })
    }

    async fn inclusion_proof(
        &self,
        request: Request<GetInclusionProofRequest>,
    ) -> Result<GetInclusionProofResponse> {
        let gate = &self.shared.gate;
        let user = gate.authenticate(authorization(&request)).await?;
        let GetInclusionProofRequest { index, tree_size } = *request.get_ref();
        let tree_size = (tree_size != 0).then_some(tree_size);
        let (entry, proof) = self
            .shared
            .read(move |l| Ok((l.entry(index)?, l.prove_at(index, tree_size)?)))
            .await?;
        gate.authorize(&user, &Need::Read(entry_scope(&entry)))
            .await?;
        Ok(GetInclusionProofResponse {
            entry: Some(logged(entry.index, entry.leaf)),
            hashes: proof.path.iter().map(|h| h.0.to_vec()).collect(),
            tlog_proof: proof.encode(),
            checkpoint: proof.checkpoint,
        })
    }

    async fn consistency_proof(
        &self,
        request: Request<GetConsistencyProofRequest>,
    ) -> Result<GetConsistencyProofResponse> {
        self.shared
            .gate
            .check(authorization(&request), &Need::Authenticated)
            .await?;
        let GetConsistencyProofRequest { old_size, new_size } = *request.get_ref();
        let new_size = (new_size != 0).then_some(new_size);
        let (hashes, checkpoint) = self
            .shared
            .read(move |l| l.prove_consistency(old_size, new_size))
            .await?;
        Ok(GetConsistencyProofResponse {
            hashes: hashes.iter().map(|h| h.0.to_vec()).collect(),
            checkpoint: checkpoint.note,
        })
    }

    async fn watch(
        &self,
        request: Request<WatchEntriesRequest>,
    ) -> Result<Inbox<Result<WatchEntriesResponse, Status>>> {
        let gate = &self.shared.gate;
        let user = gate.authenticate(authorization(&request)).await?;
        let r = request.get_ref();
        let (query, scope) = query(r.filter.as_ref(), r.start, follow::PAGE as u32)?;
        let need = Need::Read(scope);
        gate.authorize(&user, &need).await?;
        let open = Arc::clone(&self.shared.watches)
            .try_acquire_owned()
            .map_err(|_| {
                Error::ResourceExhausted(format!(
                    "{} watches are open, the most this service keeps (--max-watches): retry \
                     later, or read pages with ListEntries",
                    self.shared.limits.max_watches
                ))
            })?;
        let (outbox, inbox) = outbox();
        tokio::spawn(follow::follow(
            self.shared.clone(),
            user,
            need,
            query,
            outbox,
            open,
        ));
        Ok(inbox)
    }
}

#[tonic::async_trait]
impl<A: Access> AuditService for AuditApi<A> {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        answer(self.append_entry(request).await)
    }

    async fn list_entries(
        &self,
        request: Request<ListEntriesRequest>,
    ) -> Result<Response<ListEntriesResponse>, Status> {
        answer(self.list(request).await)
    }

    async fn get_entry(
        &self,
        request: Request<GetEntryRequest>,
    ) -> Result<Response<GetEntryResponse>, Status> {
        answer(self.entry(request).await)
    }

    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<GetCheckpointResponse>, Status> {
        answer(self.checkpoint(request).await)
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<GetInclusionProofRequest>,
    ) -> Result<Response<GetInclusionProofResponse>, Status> {
        answer(self.inclusion_proof(request).await)
    }

    async fn get_consistency_proof(
        &self,
        request: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<GetConsistencyProofResponse>, Status> {
        answer(self.consistency_proof(request).await)
    }

    async fn watch_entries(
        &self,
        request: Request<WatchEntriesRequest>,
    ) -> Result<Response<BoxStream<WatchEntriesResponse>>, Status> {
        answer(
            self.watch(request)
                .await
                .map(|s| Box::pin(s) as BoxStream<_>),
        )
    }
}
