//! The log as C2SP tlog-tiles over HTTPS, for mirrors and witnesses
//! (c2sp.org/tlog-tiles; the same files `openmodel audit export` writes):
//!
//! | path | needs | caching |
//! |---|---|---|
//! | `/checkpoint` | nothing (hashes only) | `no-cache` |
//! | `/tile/<L>/<N>[.p/<W>]` | nothing (hashes only) | public, immutable |
//! | `/tile/entries/<N>[.p/<W>]` | a bearer token allowed `get openmodels/audit` cluster-wide | private, immutable |
//!
//! Entry bundles hold entries of every namespace, hence the cluster-wide
//! permission. Tiles are read from the ledger file on request; any tile of
//! the latest checkpoint's tree is served (a narrower partial tile is a
//! prefix of a wider one, so it is as immutable).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tonic::Code;

use crate::authz::Need;
use crate::{Access, Scope, Shared};
use openmodel_ledger::Error as LedgerError;
use openmodel_ledger::tiles::TileResource;

use crate::{Error, Result};

/// A year: tiles never change.
const IMMUTABLE_PUBLIC: &str = "public, max-age=31536000, immutable";
const IMMUTABLE_PRIVATE: &str = "private, max-age=31536000, immutable";
const OCTET_STREAM: &str = "application/octet-stream";

/// The routes, over the service's shared state.
pub(crate) fn router<A: Access>(shared: Arc<Shared<A>>) -> Router {
    Router::new()
        .route("/checkpoint", get(checkpoint::<A>))
        .route("/tile/{*path}", get(tile::<A>))
        .fallback(|| async {
            error_response(Error::Ledger(LedgerError::NotFound(
                "this service serves /checkpoint and /tile/… (c2sp.org/tlog-tiles); entries and \
                 proofs are on its gRPC port"
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
    if status == StatusCode::UNAUTHORIZED {
        return (status, [(WWW_AUTHENTICATE, "Bearer")], body).into_response();
    }
    (status, body).into_response()
}

async fn checkpoint<A: Access>(State(shared): State<Arc<Shared<A>>>) -> Response {
    match shared.read(|l| l.checkpoint()).await {
        Ok(cp) => (
            [
                (CONTENT_TYPE, "text/plain; charset=utf-8"),
                (CACHE_CONTROL, "no-cache"),
            ],
            cp.note,
        )
            .into_response(),
        Err(error) => error_response(error),
    }
}

async fn tile<A: Access>(
    State(shared): State<Arc<Shared<A>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers.get(AUTHORIZATION).map(|v| v.as_bytes());
    match read_tile(&shared, &path, authorization).await {
        Ok((bytes, cache)) => (
            [(CONTENT_TYPE, OCTET_STREAM), (CACHE_CONTROL, cache)],
            bytes,
        )
            .into_response(),
        Err(error) => error_response(error),
    }
}

/// The bytes of `tile/<path>` and how they may be cached, authorizing
/// entry bundles.
async fn read_tile<A: Access>(
    shared: &Shared<A>,
    path: &str,
    authorization: Option<&[u8]>,
) -> Result<(Vec<u8>, &'static str)> {
    let resource = TileResource::parse(&format!("tile/{path}"))?;
    let cache = match resource {
        TileResource::Hashes(_) => IMMUTABLE_PUBLIC,
        TileResource::Entries(_) => {
            shared
                .gate
                .check(authorization, &Need::Read(Scope::Cluster))
                .await?;
            IMMUTABLE_PRIVATE
        }
    };
    let bytes = shared.read(move |l| l.tile(resource)).await?;
    Ok((bytes, cache))
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
    }
}
