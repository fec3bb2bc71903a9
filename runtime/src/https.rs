//! HTTPS serving, shared by the ledger service's tiles port and the
//! operator's admission webhook: rustls (ring) in front of an axum router,
//! HTTP/2 and HTTP/1.1, a handshake timeout, and a graceful drain.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::shutdown::until_stopped;
use crate::tls::HANDSHAKE_TIMEOUT;

pub use crate::tls::{ClientAuth, acceptor, authenticating_acceptor};

/// Longest requests in flight may take to finish when the server stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` over TLS on `listener` until `stopping` turns true, then
/// lets requests in flight finish (at most [`DRAIN_TIMEOUT`]). Each
/// connection's handshake runs in its own task, so a slow client holds up
/// no one.
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    app: Router,
    mut stopping: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let http = auto::Builder::new(TokioExecutor::new());
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(%error, "accepting an HTTPS connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = until_stopped(&mut stopping) => break,
        };
        let (tls, http, service, watcher) = (
            tls.clone(),
            http.clone(),
            TowerToHyperService::new(app.clone()),
            graceful.watcher(),
        );
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => return tracing::debug!("TLS handshake timed out"),
            };
            let connection = http.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%error, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTPS requests still running after {DRAIN_TIMEOUT:?}; closing them");
    }
}
