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
//! - **TLS** on both ports, from one certificate and key.
//! - **Limits** (`limits.rs`, every one a flag): bytes per answer, calls at
//!   once in all and per caller (`calls.rs`, held until the answer is sent:
//!   `held.rs`), open watches and how long a watch waits for a client that
//!   does not read (`outbox.rs`), time per call and per read, a rate for
//!   callers without a token (`rate.rs`) and a cache of hash tiles
//!   (`tile_cache.rs`).
//!
//! Data flow: requests come in on either port, are counted against the
//! limits, authorized by the gate (`authz.rs`), and read the [`Ledger`] on
//! blocking threads, each on a read-only SQLite connection of its own;
//! appends go to the ledger's writer thread (group commit), and each
//! committed tree size is published on a watch channel that `WatchEntries`
//! streams follow. The latest signed checkpoint is answered from memory
//! (`/checkpoint`, `/readyz`, `GetCheckpoint`), never waiting on a read.
//! [`client`] is the other end.
//!
//! ```no_run
//! # async fn run(config: openmodel_ledger_service::Config) -> openmodel_ledger_service::Result<()> {
//! use openmodel_ledger_service::{DEFAULT_TOKEN_AUDIENCE, KubeAccess, Server};
//!
//! let client = kube::Client::try_default().await.expect("a kubeconfig");
//! let access = KubeAccess::new(client, vec![DEFAULT_TOKEN_AUDIENCE.into()]);
//! let server = Server::bind(config, access).await?;
//! println!("gRPC on {}, tiles on {}", server.grpc_addr(), server.http_addr());
//! server.run(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

mod authz;
mod calls;
pub mod client;
mod config;
mod error;
mod filter;
mod follow;
mod grpc;
mod held;
pub mod limits;
mod outbox;
mod rate;
mod tile_cache;
mod tiles_http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openmodel_proto::audit::FILE_DESCRIPTOR_SET;
use openmodel_proto::audit::audit_service_server::AuditServiceServer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tonic::transport::server::TcpIncoming;

pub use authz::{
    ALLOWED_TTL, AUDIT_API_GROUP, AUDIT_RESOURCE, AUDIT_SUBRESOURCE, AUDIT_VERB, Access,
    DENIED_TTL, KubeAccess, MAX_TOKEN_BYTES, Scope, User,
};
pub use config::{Config, DEFAULT_APPEND_USER, DEFAULT_TOKEN_AUDIENCE};
pub use limits::Limits;

use authz::Gate;
use calls::CallLimiter;
pub use error::{Error, Result};
use openmodel_ledger::checkpoint::SignedCheckpoint;
use openmodel_ledger::entry::Entry;
use openmodel_ledger::query::{Leaf, Page, Query};
use openmodel_ledger::store::Receipt;
use openmodel_ledger::{Error as LedgerError, Ledger};
use openmodel_runtime::https;
use openmodel_runtime::shutdown::{self, until_stopped};
use openmodel_runtime::tls::TlsFiles;

/// What both ports share.
struct Shared<A> {
    ledger: Arc<Ledger>,
    gate: Gate<A>,
    limits: Limits,
    /// Calls in progress, in all and per caller.
    calls: Arc<CallLimiter>,
    /// Open `WatchEntries` streams.
    watches: Arc<Semaphore>,
    /// Reads in progress: one per read connection, so a read waits here,
    /// where waiting can be cancelled, rather than on a blocking thread.
    reads: Semaphore,
    /// Entry bundles being read or sent.
    bundles: Arc<Semaphore>,
    /// Requests without a token.
    public: Mutex<rate::TokenBucket>,
    /// Bytes read for callers who may not append.
    read_rate: Mutex<rate::TokenBucket>,
    /// Hash tiles served lately.
    tiles: tile_cache::TileCache,
    /// The tree size of the latest commit, fed by appends through this
    /// service (its one writer).
    size: watch::Sender<u64>,
    /// Turns true when the service begins to stop; long-lived streams end.
    stopping: watch::Receiver<bool>,
}

impl<A> Shared<A> {
    /// Runs a ledger read on a blocking thread (SQLite blocks), once one of
    /// the read connections is free.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Ledger) -> openmodel_ledger::Result<T> + Send + 'static,
    ) -> Result<T> {
        let _reading = self
            .reads
            .acquire()
            .await
            .map_err(|_| Error::Transport("the ledger service is shutting down".into()))?;
        client::read_blocking(&self.ledger, read).await
    }

    /// A read of entries for a caller who may (`exempt`) or may not append:
    /// the latter's reads are paced to `--read-bytes-per-second` together,
    /// waiting before they read while the reads before them are over the
    /// rate, and then charged the bytes `size` counts in what they read.
    async fn paced_read<T: Send + 'static>(
        &self,
        exempt: bool,
        read: impl FnOnce(&Ledger) -> openmodel_ledger::Result<T> + Send + 'static,
        size: impl FnOnce(&T) -> usize,
    ) -> Result<T> {
        if exempt {
            return self.read(read).await;
        }
        loop {
            let wait = self.read_rate_bucket().wait(Instant::now());
            if wait.is_zero() {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        let answer = self.read(read).await?;
        let bytes = u64::try_from(size(&answer)).unwrap_or(u64::MAX);
        self.read_rate_bucket().charge(bytes, Instant::now());
        Ok(answer)
    }

    /// One page of leaves of `query` for `user`, within `budget` bytes;
    /// paced unless `user` may append.
    async fn read_page(&self, user: &User, query: Query, budget: usize) -> Result<Page<Leaf>>
    where
        A: Access,
    {
        self.paced_read(
            self.gate.may_append(user),
            move |l| l.query_leaves(&query, budget),
            |page| page.entries.iter().map(|e| e.bytes.len()).sum(),
        )
        .await
    }

    fn read_rate_bucket(&self) -> std::sync::MutexGuard<'_, rate::TokenBucket> {
        self.read_rate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The latest signed checkpoint, from memory (the ledger keeps the last
    /// one its writer signed); read from the file only if none is known.
    async fn checkpoint(&self) -> Result<SignedCheckpoint> {
        match self.ledger.last_checkpoint() {
            Some(checkpoint) => Ok(checkpoint),
            None => self.read(|l| l.checkpoint()).await,
        }
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

/// The most header bytes a gRPC request may carry: room for a bearer token
/// of [`MAX_TOKEN_BYTES`] and the usual headers.
const HEADER_LIST_BYTES: u32 = 2 * MAX_TOKEN_BYTES as u32;

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
    /// Checks the limits, reads the TLS files, binds both ports and opens
    /// (or creates) the ledger; every configuration error shows here, before
    /// serving.
    pub async fn bind(config: Config, access: A) -> Result<Server<A>> {
        config.limits.validate()?;
        let tls = TlsFiles::read(&config.tls_cert, &config.tls_key)?;
        let (grpc, grpc_addr) = listen(config.grpc_listen, "--grpc-listen").await?;
        let (http, http_addr) = listen(config.http_listen, "--http-listen").await?;
        let append_users = config.append_users.clone();
        let limits = config.limits.clone();
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
                gate: Gate::new(
                    access,
                    append_users,
                    limits.max_reviews,
                    limits.auth_cache_entries,
                ),
                calls: CallLimiter::new(limits.max_calls, limits.max_calls_per_caller),
                watches: Arc::new(Semaphore::new(limits.max_watches)),
                reads: Semaphore::new(limits.read_connections),
                bundles: Arc::new(Semaphore::new(limits.max_bundle_requests)),
                public: Mutex::new(rate::TokenBucket::new(
                    limits.public_requests_per_second.into(),
                    limits.public_burst.into(),
                    Instant::now(),
                )),
                read_rate: Mutex::new(rate::TokenBucket::new(
                    limits.read_bytes_per_second as u64,
                    limits.read_bytes_per_second as u64,
                    Instant::now(),
                )),
                tiles: tile_cache::TileCache::new(limits.tile_cache_bytes),
                limits,
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
        let limits = &shared.limits;
        let streams = u32::try_from(limits.max_calls).unwrap_or(u32::MAX);
        let mut grpc_server = tonic::transport::Server::builder()
            .tls_config(tls.grpc())
            .map_err(|e| Error::Config(format!("TLS for gRPC: {e}")))?
            .timeout(limits.call_timeout)
            // A client whose connection went silent is found out as the
            // clients find out the service (HTTP/2 pings), so that its
            // connection neither lingers nor holds up a graceful stop.
            .http2_keepalive_interval(Some(client::PING_INTERVAL))
            .http2_keepalive_timeout(Some(client::PING_TIMEOUT))
            .max_concurrent_streams(streams)
            .http2_max_header_list_size(HEADER_LIST_BYTES);
        let audit = AuditServiceServer::new(grpc::AuditApi::new(shared.clone()))
            .max_decoding_message_size(limits.max_request_bytes)
            .max_encoding_message_size(limits.max_response_bytes);
        let grpc = grpc_server
            .add_service(held::Limited::new(audit, shared.clone()))
            .add_service(held::Limited::new(reflection, shared.clone()))
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY a small answer waits on Nagle's
                // algorithm for the client's delayed ACK (about 40 ms a call).
                TcpIncoming::from(grpc).with_nodelay(Some(true)),
                shutdown::stopped(&shared.stopping),
            );
        let (acceptor, router) = (tls.http(), tiles_http::router(shared.clone()));
        let stopping = shared.stopping.clone();
        let http = serve_apart(http, move |listener| {
            https::serve(listener, acceptor, router, stopping)
        })?;
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
            let result = http.await;
            stop.send_replace(true);
            result
        };
        let ((), grpc, http) = tokio::join!(trigger, grpc, http);
        // Dropping the last handle on the ledger joins its writer thread.
        let _ = tokio::task::spawn_blocking(move || drop(shared)).await;
        grpc.and(http)
    }
}

/// Runs `serve` on `listener` (the tiles port) on a thread and runtime of
/// its own: what that port is sent (a flood of requests without a token,
/// each answered 429) is handled there, so it never queues ahead of the
/// gRPC port's calls, the operator's appends among them, on the same
/// workers. The future returned ends when `serve` does.
fn serve_apart<F>(
    listener: TcpListener,
    serve: impl FnOnce(TcpListener) -> F + Send + 'static,
) -> Result<impl Future<Output = Result<()>>>
where
    F: Future<Output = ()>,
{
    let failed = |what: &str, e: std::io::Error| Error::Transport(format!("{what}: {e}"));
    let listener = listener
        .into_std()
        .map_err(|e| failed("handing the tiles port to its thread", e))?;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ledger-tiles".into())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| failed("starting the tiles port's runtime", e))
                .and_then(|runtime| {
                    runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener)
                            .map_err(|e| failed("serving the tiles port", e))?;
                        serve(listener).await;
                        Ok(())
                    })
                });
            let _ = done.send(served);
        })
        .map_err(|e| failed("starting the tiles port's thread", e))?;
    Ok(async move {
        finished
            .await
            .unwrap_or_else(|_| Err(Error::Transport("the tiles port's thread panicked".into())))
    })
}

/// [`Server::bind`], then [`Server::run`].
pub async fn serve<A: Access>(
    config: Config,
    access: A,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    Server::bind(config, access).await?.run(shutdown).await
}
