//! The ledger service, `openmodel-ledger serve`: the one process that owns
//! the ledger file and serves it.
//!
//! - **gRPC** (`grpc.rs`): `openmodel.audit.v1alpha1.AuditService`
//!   (`proto/audit/…/audit.proto`): append (the operator only), list, get,
//!   watch, checkpoints and proofs; server reflection too.
//! - **HTTPS** (`tiles_http.rs`): the log as C2SP tlog-tiles, `/checkpoint`,
//!   `/tile/<L>/<N>[.p/<W>]` and `/tile/entries/<N>[.p/<W>]`, for mirrors and
//!   witnesses.
//! - **Authorization** (`authz.rs`): bearer tokens checked by the Kubernetes
//!   API server (TokenReview), permissions asked of it
//!   (SubjectAccessReview for `get openmodels/audit`), per namespace.
//! - **TLS** (`tls.rs`) on both ports, from one certificate and key.
//!
//! Data flow: requests come in on either port, are authorized by the
//! gate (`authz.rs`), and read the [`Ledger`] on blocking threads
//! (SQLite); appends go to the ledger's writer thread (group commit), and
//! each committed tree size is published on a watch channel that
//! `WatchEntries` streams follow. [`client`] is the other end.
//!
//! ```no_run
//! # async fn run(config: openmodel_ledger_service::Config) -> openmodel_ledger_service::Result<()> {
//! use openmodel_ledger_service::{KubeAccess, Server};
//!
//! let client = kube::Client::try_default().await.expect("a kubeconfig");
//! let server = Server::bind(config, KubeAccess::new(client)).await?;
//! println!("gRPC on {}, tiles on {}", server.grpc_addr(), server.http_addr());
//! server.run(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

mod authz;
pub mod client;
mod config;
mod error;
mod filter;
mod follow;
mod grpc;
mod tiles_http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use openmodel_proto::audit::FILE_DESCRIPTOR_SET;
use openmodel_proto::audit::audit_service_server::AuditServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

pub use authz::{
    ALLOWED_TTL, AUDIT_API_GROUP, AUDIT_RESOURCE, AUDIT_SUBRESOURCE, AUDIT_VERB, Access,
    DENIED_TTL, KubeAccess, Scope, User,
};
pub use config::{Config, DEFAULT_APPEND_USER};

use authz::Gate;
pub use error::{Error, Result};
use openmodel_ledger::entry::Entry;
use openmodel_ledger::store::Receipt;
use openmodel_ledger::{Error as LedgerError, Ledger};
use openmodel_runtime::https;
use openmodel_runtime::shutdown::{self, until_stopped};
use openmodel_runtime::tls::TlsFiles;

/// What both ports share.
struct Shared<A> {
    ledger: Arc<Ledger>,
    gate: Gate<A>,
    /// The tree size of the latest commit, fed by appends through this
    /// service (its one writer).
    size: watch::Sender<u64>,
    /// Turns true when the service begins to stop; long-lived streams end.
    stopping: watch::Receiver<bool>,
}

impl<A> Shared<A> {
    /// Runs a ledger read on a blocking thread (SQLite blocks).
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Ledger) -> openmodel_ledger::Result<T> + Send + 'static,
    ) -> Result<T> {
        client::read_blocking(&self.ledger, read).await
    }

    /// Appends and announces the new tree size to watchers.
    async fn append(&self, entry: Entry) -> Result<Receipt> {
        let receipt = self.ledger.append_async(entry).await?;
        self.size.send_if_modified(|size| {
            let grew = receipt.tree_size > *size;
            *size = (*size).max(receipt.tree_size);
            grew
        });
        Ok(receipt)
    }
}

/// The gRPC metadata of an `ALREADY_EXISTS` answer to `Append` that holds
/// the index of the entry already logged under the dedupe key.
pub const EXISTING_INDEX_HEADER: &str = "openmodel-existing-index";

/// A ledger service bound to its ports, not yet serving.
pub struct Server<A> {
    shared: Arc<Shared<A>>,
    grpc: TcpListener,
    http: TcpListener,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    tls: TlsFiles,
    stop: watch::Sender<bool>,
}

/// Binds `addr`, naming the flag on failure.
async fn listen(addr: SocketAddr, flag: &str) -> Result<(TcpListener, SocketAddr)> {
    let failed =
        |e: std::io::Error| Error::Transport(format!("cannot listen on {addr} ({flag}): {e}"));
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

impl<A: Access> Server<A> {
    /// Reads the TLS files, binds both ports and opens (or creates) the
    /// ledger; every configuration error shows here, before serving.
    pub async fn bind(config: Config, access: A) -> Result<Server<A>> {
        let tls = TlsFiles::read(&config.tls_cert, &config.tls_key)?;
        let (grpc, grpc_addr) = listen(config.grpc_listen, "--grpc-listen").await?;
        let (http, http_addr) = listen(config.http_listen, "--http-listen").await?;
        let append_users = config.append_users.clone();
        let (ledger, size) = tokio::task::spawn_blocking(move || {
            let ledger = config.open_ledger()?;
            let size = ledger.checkpoint()?.checkpoint.size;
            Ok::<_, Error>((ledger, size))
        })
        .await
        .map_err(|e| LedgerError::Unusable(format!("opening the ledger did not finish: {e}")))??;
        let (stop, stopping) = watch::channel(false);
        Ok(Server {
            shared: Arc::new(Shared {
                ledger: Arc::new(ledger),
                gate: Gate::new(access, append_users),
                size: watch::Sender::new(size),
                stopping,
            }),
            grpc,
            http,
            grpc_addr,
            http_addr,
            tls,
            stop,
        })
    }

    /// Where gRPC listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where the tiles are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until `shutdown` completes (or either port fails), then stops
    /// accepting, ends `WatchEntries` streams (UNAVAILABLE: reconnect),
    /// lets requests in flight finish and closes the ledger, committing
    /// every append it acknowledged.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let Server {
            shared,
            grpc,
            http,
            grpc_addr,
            http_addr,
            tls,
            stop,
        } = self;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| Error::Transport(format!("gRPC reflection: {e}")))?;
        let mut grpc_server = tonic::transport::Server::builder()
            .tls_config(tls.grpc())
            .map_err(|e| Error::Config(format!("TLS for gRPC: {e}")))?;
        let grpc = grpc_server
            .add_service(AuditServiceServer::new(grpc::AuditApi::new(shared.clone())))
            .add_service(reflection)
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(grpc),
                shutdown::stopped(&shared.stopping),
            );
        let http = https::serve(
            http,
            tls.http(),
            tiles_http::router(shared.clone()),
            shared.stopping.clone(),
        );
        tracing::info!(
            grpc = %grpc_addr,
            http = %http_addr,
            ledger = %shared.ledger.path().display(),
            tree_size = *shared.size.borrow(),
            "ledger service serving"
        );
        let mut stopping = shared.stopping.clone();
        let trigger = async {
            tokio::select! {
                () = shutdown => tracing::info!("shutting down"),
                () = until_stopped(&mut stopping) => {}
            }
            stop.send_replace(true);
        };
        let grpc = async {
            let result = grpc
                .await
                .map_err(|e| Error::Transport(format!("gRPC server: {}", client::error_chain(&e))));
            stop.send_replace(true);
            result
        };
        let http = async {
            http.await;
            stop.send_replace(true);
        };
        let ((), grpc, ()) = tokio::join!(trigger, grpc, http);
        // Dropping the last handle on the ledger joins its writer thread.
        let _ = tokio::task::spawn_blocking(move || drop(shared)).await;
        grpc
    }
}

/// [`Server::bind`], then [`Server::run`].
pub async fn serve<A: Access>(
    config: Config,
    access: A,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    Server::bind(config, access).await?.run(shutdown).await
}
