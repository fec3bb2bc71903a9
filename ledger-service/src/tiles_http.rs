//! The log as C2SP tlog-tiles over HTTPS, for mirrors and witnesses
//! (c2sp.org/tlog-tiles; the same files `openmodel audit export` writes),
//! and the readiness probe:
//!
//! | path | needs | caching |
//! |---|---|---|
//! | `/readyz` | nothing; never limited, answered from memory | `no-store` |
//! | `/checkpoint` | nothing (hashes only) | `no-cache` |
//! | `/tile/<L>/<N>[.p/<W>]` | nothing (hashes only) | public, immutable |
//! | `/tile/entries/<N>[.p/<W>]` | a bearer token allowed `get openmodels/audit` cluster-wide | private, immutable |
//!
//! Entry bundles hold entries of every namespace, hence the cluster-wide
//! permission. Any tile of the latest checkpoint's tree is served (a
//! narrower partial tile is a prefix of a wider one, so it is as
//! immutable).
//!
//! Bounds: requests without a token share `--public-requests-per-second`
//! (beyond it `429 Too Many Requests` with `Retry-After`); requests with one
//! count as calls of their caller (`--max-calls-per-caller`, `--max-calls`);
//! at most `--max-bundle-requests` entry bundles are read or sent at once;
//! the checkpoint comes from memory and hash tiles from a cache of
//! `--tile-cache-bytes`, so most requests never read the file. A request
//! holds what it counts against until its answer has been sent.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Code;
use tonic::codegen::Bytes;

use crate::authz::{Need, bearer_token, token_key};
use crate::calls::CallPermit;
use crate::held::HeldBody;
use crate::rate::retry_after_seconds;
use crate::{Access, Scope, Shared};
use openmodel_ledger::Error as LedgerError;
use openmodel_ledger::tiles::TileResource;

use crate::{Error, Result};

/// A year: tiles never change.
const IMMUTABLE_PUBLIC: &str = "public, max-age=31536000, immutable";
const IMMUTABLE_PRIVATE: &str = "private, max-age=31536000, immutable";
const OCTET_STREAM: &str = "application/octet-stream";
const TEXT: &str = "text/plain; charset=utf-8";

/// The routes, over the service's shared state.
pub(crate) fn router<A: Access>(shared: Arc<Shared<A>>) -> Router {
    Router::new()
        .route("/readyz", get(readyz::<A>))
        .route("/checkpoint", get(checkpoint::<A>))
        .route("/tile/{*path}", get(tile::<A>))
        .fallback(|| async {
            error_response(Error::Ledger(LedgerError::NotFound(
                "this service serves /checkpoint, /tile/… (c2sp.org/tlog-tiles) and /readyz; \
                 entries and proofs are on its gRPC port"
                    .into(),
            )))
        })
        .with_state(shared)
}

/// The HTTP status of an error: its gRPC code, mapped as gRPC-over-HTTP
/// gateways do.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound | Code::OutOfRange => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(error: Error) -> Response {
    let status = http_status(error.code());
    if status.is_server_error() {
        tracing::warn!(%error, "tile request failed");
    }
    let body = format!("{error}\n");
    match status {
        StatusCode::UNAUTHORIZED => (status, [(WWW_AUTHENTICATE, "Bearer")], body).into_response(),
        StatusCode::TOO_MANY_REQUESTS => too_many(Duration::from_secs(1), body),
        _ => (status, body).into_response(),
    }
}

/// `429 Too Many Requests`, to retry after `wait`.
fn too_many(wait: Duration, body: String) -> Response {
    let seconds = retry_after_seconds(wait).to_string();
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(RETRY_AFTER, seconds.as_str()), (CONTENT_TYPE, TEXT)],
        body,
    )
        .into_response()
}

/// What a request was let in as: without a token, within the public rate
/// (`None`), or as an authenticated caller, counted until its answer has
/// been sent.
type Admitted = Option<CallPermit>;

/// `response`, holding `held` until its body has been sent.
fn holding<H: Send + Sync + Unpin + 'static>(response: Response, held: H) -> Response {
    response.map(|body| Body::new(HeldBody::new(body, held)))
}

/// Lets a request in: with a token as a counted call of a caller who has
/// what `need` asks for; without one, only for what any caller may have
/// (hashes) and within the public rate. A refusal is the answer to send.
async fn admit<A: Access>(
    shared: &Shared<A>,
    headers: &HeaderMap,
    need: &Need,
) -> Result<Admitted, Response> {
    let Some(header) = headers.get(AUTHORIZATION).map(|v| v.as_bytes()) else {
        if *need != Need::Authenticated {
            // Refused unread: refusing costs nothing, so no rate is spent.
            return Err(error_response(bearer_token(None).err().unwrap_or_else(
                || Error::Unauthenticated("no bearer token".into()),
            )));
        }
        let taken = shared
            .public
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(Instant::now());
        return match taken {
            Ok(()) => Ok(None),
            Err(wait) => Err(too_many(
                wait,
                format!(
                    "too many requests without a bearer token: the service answers {} a second \
                     of those (--public-requests-per-second); retry later, or send \
                     `authorization: Bearer <token>`\n",
                    shared.limits.public_requests_per_second
                ),
            )),
        };
    };
    let caller = token_key(Some(header));
    let permit = shared
        .calls
        .start(caller, shared.gate.is_known_appender(&caller))
        .map_err(error_response)?;
    shared
        .gate
        .check(Some(header), need)
        .await
        .map_err(error_response)?;
    Ok(Some(permit))
}

/// 200 once the ledger has a signed checkpoint, from memory: neither a busy
/// reader nor the request rate can fail it.
async fn readyz<A: Access>(State(shared): State<Arc<Shared<A>>>) -> Response {
    match shared.ledger.last_checkpoint() {
        Some(cp) => (
            [(CONTENT_TYPE, TEXT), (CACHE_CONTROL, "no-store")],
            format!("ready: tree size {}\n", cp.checkpoint.size),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the ledger has no signed checkpoint yet\n",
        )
            .into_response(),
    }
}

async fn checkpoint<A: Access>(
    State(shared): State<Arc<Shared<A>>>,
    headers: HeaderMap,
) -> Response {
    let admitted = match admit(&shared, &headers, &Need::Authenticated).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let response = match shared.checkpoint().await {
        Ok(cp) => ([(CONTENT_TYPE, TEXT), (CACHE_CONTROL, "no-cache")], cp.note).into_response(),
        Err(error) => error_response(error),
    };
    holding(response, admitted)
}

async fn tile<A: Access>(
    State(shared): State<Arc<Shared<A>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let resource = match TileResource::parse(&format!("tile/{path}")) {
        Ok(resource) => resource,
        Err(error) => return error_response(error.into()),
    };
    match resource {
        TileResource::Hashes(_) => hash_tile(&shared, resource, &headers).await,
        TileResource::Entries(_) => entry_bundle(&shared, resource, &headers).await,
    }
}

/// A hash tile, from the cache when it holds it.
async fn hash_tile<A: Access>(
    shared: &Shared<A>,
    resource: TileResource,
    headers: &HeaderMap,
) -> Response {
    let admitted = match admit(shared, headers, &Need::Authenticated).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let path = resource.path();
    let bytes = match shared.tiles.get(&path) {
        Some(bytes) => Ok(bytes),
        None => shared.read(move |l| l.tile(resource)).await.map(|tile| {
            let bytes = Bytes::from(tile);
            shared.tiles.insert(&path, bytes.clone());
            bytes
        }),
    };
    holding(tile_response(bytes, IMMUTABLE_PUBLIC), admitted)
}

/// An entry bundle, for a caller allowed to read every namespace, while a
/// bundle slot is free.
async fn entry_bundle<A: Access>(
    shared: &Shared<A>,
    resource: TileResource,
    headers: &HeaderMap,
) -> Response {
    let admitted = match admit(shared, headers, &Need::Read(Scope::Cluster)).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let Ok(slot) = Arc::clone(&shared.bundles).try_acquire_owned() else {
        return error_response(Error::ResourceExhausted(format!(
            "{} entry bundles are being served, the most at once (--max-bundle-requests): retry \
             in a moment",
            shared.limits.max_bundle_requests
        )));
    };
    // A bundle needs a token, so the request was admitted as a call.
    let exempt = admitted.as_ref().is_some_and(CallPermit::is_exempt);
    let bytes = shared
        .paced_read(exempt, move |l| l.tile(resource), Vec::len)
        .await
        .map(Bytes::from);
    let held: (Admitted, OwnedSemaphorePermit) = (admitted, slot);
    holding(tile_response(bytes, IMMUTABLE_PRIVATE), held)
}

fn tile_response(bytes: Result<Bytes>, cache: &'static str) -> Response {
    match bytes {
        Ok(bytes) => (
            [(CONTENT_TYPE, OCTET_STREAM), (CACHE_CONTROL, cache)],
            bytes,
        )
            .into_response(),
        Err(error) => error_response(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_http_statuses() {
        let status = |e: Error| http_status(e.code());
        assert_eq!(
            status(Error::Unauthenticated("x".into())),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(Error::PermissionDenied("x".into())),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(LedgerError::InvalidTilePath("x".into()).into()),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(LedgerError::NotFound("x".into()).into()),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(Error::AuthorizationUnavailable("x".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(LedgerError::Unusable("x".into()).into()),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let unauthorized = error_response(Error::Unauthenticated("no token".into()));
        assert_eq!(unauthorized.headers()[WWW_AUTHENTICATE], "Bearer");
        assert_eq!(
            status(Error::ResourceExhausted("x".into())),
            StatusCode::TOO_MANY_REQUESTS
        );
        let busy = error_response(Error::ResourceExhausted("busy".into()));
        assert_eq!(busy.headers()[RETRY_AFTER], "1");
        let busy = too_many(Duration::from_millis(2500), String::new());
        assert_eq!(busy.headers()[RETRY_AFTER], "3");
    }
}
