//! `openmodel-ledger`: runs the ledger service over a ledger file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use openmodel_ledger_service::limits::parse_bytes;
use openmodel_ledger_service::{
    Config, DEFAULT_APPEND_USER, DEFAULT_TOKEN_AUDIENCE, KubeAccess, Limits,
};
use openmodel_runtime::logging::{self, LogArgs};
use openmodel_runtime::shutdown;

const AFTER_HELP: &str = "\
Authorization: callers send `authorization: Bearer <token>`; the Kubernetes API server
checks it (TokenReview) and says whether the user may `get` openmodels/audit (API group
serving.openmodel.dev) in the namespace asked about, or cluster-wide (SubjectAccessReview).
The service's own identity needs the ClusterRole system:auth-delegator for that.

Limits: every answer, call, watch, read and request without a token is bounded (the
--max-*, --*-timeout, --read-connections, --public-* and --*-cache-* flags); beyond a
bound a call gets RESOURCE_EXHAUSTED (HTTP 429 with Retry-After) saying which. The users
who may append are never refused for load. Readiness: GET /readyz on the tiles port,
answered from memory. Sizes take Ki, Mi or Gi (1Mi = 1048576 bytes); times are seconds.
Docs: docs/ledger-service.md (RPCs and what each needs, tiles, flags), docs/ledger.md (format).";

/// The OpenModel ledger service: the one writer of an audit ledger file,
/// serving it to the operator, auditors, mirrors and witnesses.
#[derive(Parser, Debug)]
#[command(name = "openmodel-ledger", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the ledger: the gRPC AuditService (append, list, get, watch,
    /// checkpoints, inclusion and consistency proofs) and the C2SP
    /// tlog-tiles over HTTPS (/checkpoint, /tile/…). TLS on every port,
    /// there is no plaintext mode. SIGTERM or Ctrl-C stop accepting, finish
    /// the requests in flight and commit every acknowledged append.
    Serve(Box<ServeArgs>),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// The ledger file (SQLite); this process must be its only writer.
    #[arg(long, env = "OPENMODEL_LEDGER", value_name = "FILE")]
    ledger: PathBuf,
    /// The ledger's private key file (PRIVATE+KEY+…), as written by
    /// `openmodel ledger init`; in a cluster, mounted from a Secret.
    #[arg(long, env = "OPENMODEL_LEDGER_KEY_FILE", value_name = "FILE")]
    key_file: PathBuf,
    /// Create the ledger when the file does not exist (origin: the key's
    /// name).
    #[arg(long, env = "OPENMODEL_CREATE_LEDGER")]
    create: bool,
    /// The cluster name recorded in a new ledger's first entry.
    #[arg(long, env = "OPENMODEL_CLUSTER", default_value = "kubernetes")]
    cluster: String,
    /// Address of the gRPC AuditService (TLS).
    #[arg(long, env = "OPENMODEL_GRPC_LISTEN", default_value = "0.0.0.0:8443")]
    grpc_listen: SocketAddr,
    /// Address of the tiles (HTTPS).
    #[arg(long, env = "OPENMODEL_HTTP_LISTEN", default_value = "0.0.0.0:8444")]
    http_listen: SocketAddr,
    /// The serving certificate chain (PEM), for both ports; e.g. tls.crt of
    /// a kubernetes.io/tls Secret. Required: TLS on every port.
    #[arg(long, env = "OPENMODEL_TLS_CERT", value_name = "FILE")]
    tls_cert: PathBuf,
    /// The serving certificate's private key (PEM); e.g. tls.key of the same
    /// Secret. Required: TLS on every port.
    #[arg(long, env = "OPENMODEL_TLS_KEY", value_name = "FILE")]
    tls_key: PathBuf,
    /// A Kubernetes user name that may append (repeat the flag, or separate
    /// with commas in the variable).
    #[arg(
        long = "append-user",
        env = "OPENMODEL_APPEND_USERS",
        value_name = "USER",
        value_delimiter = ',',
        default_value = DEFAULT_APPEND_USER
    )]
    append_users: Vec<String>,
    /// An audience the bearer tokens of callers may be issued for (repeat
    /// the flag, or separate with commas in the variable): tokens are
    /// reviewed for these only, so a token sent here is not one that works
    /// against the Kubernetes API server. The operator sends a projected
    /// service-account token for the first; add the audiences of people's
    /// tokens (an OIDC client id, or the API server's own audience to take
    /// any service-account token). Make one: kubectl create token SA
    /// --audience openmodel-ledger.
    #[arg(
        long = "token-audience",
        env = "OPENMODEL_TOKEN_AUDIENCES",
        value_name = "AUDIENCE",
        value_delimiter = ',',
        default_value = DEFAULT_TOKEN_AUDIENCE
    )]
    token_audiences: Vec<String>,
    /// The kubeconfig for the TokenReviews and SubjectAccessReviews
    /// (default: in-cluster, or $KUBECONFIG, or ~/.kube/config).
    #[arg(long, env = "OPENMODEL_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    log: LogArgs,
}

/// The service's bounds (`openmodel_ledger_service::Limits`; defaults
/// there, repeated here for --help).
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// Most bytes in one answer (512Ki to 16Mi): a ListEntries page or a
    /// WatchEntries message stops early to stay within it, its `next` or
    /// `scanned_end` saying where to go on.
    #[arg(long, env = "OPENMODEL_MAX_RESPONSE_BYTES", value_name = "SIZE", default_value = "1Mi", value_parser = parse_bytes)]
    max_response_bytes: usize,
    /// Most bytes in one WatchEntries message (128Ki up to
    /// --max-response-bytes); a watch whose client does not read holds up
    /// to two until it is dropped.
    #[arg(long, env = "OPENMODEL_WATCH_MESSAGE_BYTES", value_name = "SIZE", default_value = "256Ki", value_parser = parse_bytes)]
    watch_message_bytes: usize,
    /// Most bytes in one gRPC request (an Append carries one entry of at
    /// most 64 KiB).
    #[arg(long, env = "OPENMODEL_MAX_REQUEST_BYTES", value_name = "SIZE", default_value = "128Ki", value_parser = parse_bytes)]
    max_request_bytes: usize,
    /// gRPC calls and HTTPS requests with a token in progress at once, in
    /// all, answers still being sent included (appenders not counted).
    #[arg(
        long,
        env = "OPENMODEL_MAX_CALLS",
        value_name = "N",
        default_value_t = 128
    )]
    max_calls: usize,
    /// The same per caller (per bearer token).
    #[arg(
        long,
        env = "OPENMODEL_MAX_CALLS_PER_CALLER",
        value_name = "N",
        default_value_t = 8
    )]
    max_calls_per_caller: usize,
    /// WatchEntries streams open at once.
    #[arg(
        long,
        env = "OPENMODEL_MAX_WATCHES",
        value_name = "N",
        default_value_t = 64
    )]
    max_watches: usize,
    /// Seconds a watch waits for its client to take a message; then the
    /// client is dropped with RESOURCE_EXHAUSTED saying where to go on.
    #[arg(
        long,
        env = "OPENMODEL_WATCH_SEND_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    watch_send_timeout: u64,
    /// Seconds a unary gRPC call may take.
    #[arg(
        long,
        env = "OPENMODEL_CALL_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    call_timeout: u64,
    /// Bytes of entries read per second for callers who may not append,
    /// together (pages, watch messages, entry bundles); readers beyond it
    /// wait, appends never do.
    #[arg(long, env = "OPENMODEL_READ_BYTES_PER_SECOND", value_name = "SIZE", default_value = "16Mi", value_parser = parse_bytes)]
    read_bytes_per_second: usize,
    /// Read-only SQLite connections: reads that run at once (1 to 64).
    #[arg(
        long,
        env = "OPENMODEL_READ_CONNECTIONS",
        value_name = "N",
        default_value_t = 4
    )]
    read_connections: usize,
    /// Seconds one SQLite read may run before it is stopped.
    #[arg(
        long,
        env = "OPENMODEL_READ_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    read_timeout: u64,
    /// Requests without a token (/checkpoint, hash tiles) answered per
    /// second, in all; beyond it 429 with Retry-After. /readyz is never
    /// limited.
    #[arg(
        long,
        env = "OPENMODEL_PUBLIC_REQUESTS_PER_SECOND",
        value_name = "N",
        default_value_t = 100
    )]
    public_requests_per_second: u32,
    /// Requests without a token answered at once after a quiet spell.
    #[arg(
        long,
        env = "OPENMODEL_PUBLIC_BURST",
        value_name = "N",
        default_value_t = 200
    )]
    public_burst: u32,
    /// Bytes of hash tiles kept in memory.
    #[arg(long, env = "OPENMODEL_TILE_CACHE_BYTES", value_name = "SIZE", default_value = "16Mi", value_parser = parse_bytes)]
    tile_cache_bytes: usize,
    /// Entry bundles (up to 16 MiB each) read or sent at once.
    #[arg(
        long,
        env = "OPENMODEL_MAX_BUNDLE_REQUESTS",
        value_name = "N",
        default_value_t = 2
    )]
    max_bundle_requests: usize,
    /// TokenReviews and SubjectAccessReviews in flight at once; callers
    /// beyond wait.
    #[arg(
        long,
        env = "OPENMODEL_MAX_REVIEWS",
        value_name = "N",
        default_value_t = 16
    )]
    max_reviews: usize,
    /// Answers remembered per kind (accepted tokens, refused tokens,
    /// permission decisions); the oldest are forgotten first.
    #[arg(
        long,
        env = "OPENMODEL_AUTH_CACHE_ENTRIES",
        value_name = "N",
        default_value_t = 10_000
    )]
    auth_cache_entries: usize,
}

impl From<LimitArgs> for Limits {
    fn from(a: LimitArgs) -> Limits {
        Limits {
            max_response_bytes: a.max_response_bytes,
            watch_message_bytes: a.watch_message_bytes,
            max_request_bytes: a.max_request_bytes,
            max_calls: a.max_calls,
            max_calls_per_caller: a.max_calls_per_caller,
            max_watches: a.max_watches,
            watch_send_timeout: Duration::from_secs(a.watch_send_timeout),
            call_timeout: Duration::from_secs(a.call_timeout),
            read_bytes_per_second: a.read_bytes_per_second,
            read_connections: a.read_connections,
            read_timeout: Duration::from_secs(a.read_timeout),
            public_requests_per_second: a.public_requests_per_second,
            public_burst: a.public_burst,
            tile_cache_bytes: a.tile_cache_bytes,
            max_bundle_requests: a.max_bundle_requests,
            max_reviews: a.max_reviews,
            auth_cache_entries: a.auth_cache_entries,
        }
    }
}

async fn kube_client(kubeconfig: Option<PathBuf>) -> Result<kube::Client> {
    let Some(path) = kubeconfig else {
        return kube::Client::try_default().await.context(
            "connecting to the Kubernetes API (in-cluster, $KUBECONFIG or ~/.kube/config)",
        );
    };
    let file = kube::config::Kubeconfig::read_from(&path)
        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("using the kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("making a Kubernetes client")
}

async fn serve(args: ServeArgs) -> Result<()> {
    logging::init(args.log.log_format);
    let client = kube_client(args.kubeconfig).await?;
    let config = Config {
        ledger: args.ledger,
        key_file: args.key_file,
        create: args.create,
        cluster: args.cluster,
        grpc_listen: args.grpc_listen,
        http_listen: args.http_listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        append_users: args.append_users,
        limits: args.limits.into(),
    };
    let access = KubeAccess::new(client, args.token_audiences);
    openmodel_ledger_service::serve(config, access, shutdown::signal()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(*args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults are the library's: one place decides them.
    #[test]
    fn the_flag_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from([
            "openmodel-ledger",
            "serve",
            "--ledger=l",
            "--key-file=k",
            "--tls-cert=c",
            "--tls-key=k",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command;
        assert_eq!(Limits::from(args.limits), Limits::default());
    }
}
