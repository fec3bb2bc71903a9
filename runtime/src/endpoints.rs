//! The plain-HTTP endpoints every server binary has on its own port:
//! `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (it can do its work), on axum.
//!
//! What they report comes from the binary as two functions, so this module
//! knows nothing of what is measured or what "ready" means.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::Error;

/// Content type of the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes the metrics as Prometheus text.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;
/// `Ok` when ready, else why not.
pub type ReadyFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the endpoints report from.
#[derive(Clone)]
pub struct Endpoints {
    metrics: MetricsFn,
    ready: ReadyFn,
}

impl Endpoints {
    /// Endpoints that serve `metrics` and answer `/readyz` with `ready`.
    pub fn new(
        metrics: impl Fn() -> String + Send + Sync + 'static,
        ready: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Endpoints {
        Endpoints {
            metrics: Arc::new(metrics),
            ready: Arc::new(ready),
        }
    }

    /// The router, to serve alone or to merge into another.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
    }

    /// Binds `listen` (port 0 picks a free one).
    pub async fn bind(self, listen: SocketAddr) -> Result<BoundEndpoints, Error> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
        Ok(BoundEndpoints {
            listener,
            addr,
            endpoints: self,
        })
    }
}

/// Endpoints bound to their port, ready to serve.
pub struct BoundEndpoints {
    listener: TcpListener,
    addr: SocketAddr,
    endpoints: Endpoints,
}

impl BoundEndpoints {
    /// The address they listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        tracing::info!(listen = %self.addr, "serving /metrics, /healthz and /readyz");
        axum::serve(self.listener, self.endpoints.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Listen {
                addr: self.addr,
                source,
            })
    }
}

async fn metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        (endpoints.metrics)(),
    )
}

async fn readyz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    match (endpoints.ready)() {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn get(url: &str) -> (u16, String) {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut response = agent.get(url).call().unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_health_and_readiness_are_served_from_the_binary_s_functions() {
        let ready = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ready);
        let endpoints = Endpoints::new(
            || "# EOF\n".to_string(),
            move || {
                if flag.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("still loading".into())
                }
            },
        );
        let bound = endpoints
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let base = format!("http://{}", bound.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        let answers = tokio::task::spawn_blocking(move || {
            let before = get(&format!("{base}/readyz"));
            ready.store(true, Ordering::Relaxed);
            (
                get(&format!("{base}/metrics")),
                get(&format!("{base}/healthz")),
                before,
                get(&format!("{base}/readyz")),
            )
        })
        .await
        .unwrap();
        assert_eq!(answers.0, (200, "# EOF\n".to_string()));
        assert_eq!(answers.1, (200, "ok".to_string()));
        assert_eq!(answers.2, (503, "still loading".to_string()));
        assert_eq!(answers.3, (200, "ok".to_string()));
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_port_in_use_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let error = Endpoints::new(String::new, || Ok(()))
            .bind(addr)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains(&addr.to_string()), "{error}");
    }
}
