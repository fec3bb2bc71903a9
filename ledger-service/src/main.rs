//! `openmodel-ledger`: runs the ledger service over a ledger file.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use openmodel_ledger_service::{Config, DEFAULT_APPEND_USER, KubeAccess};
use openmodel_runtime::logging::{self, LogArgs};
use openmodel_runtime::shutdown;

const AFTER_HELP: &str = "\
Authorization: callers send `authorization: Bearer <token>`; the Kubernetes API server
checks it (TokenReview) and says whether the user may `get` openmodels/audit (API group
serving.openmodel.dev) in the namespace asked about, or cluster-wide (SubjectAccessReview).
The service's own identity needs the ClusterRole system:auth-delegator for that.
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
    /// The kubeconfig for the TokenReviews and SubjectAccessReviews
    /// (default: in-cluster, or $KUBECONFIG, or ~/.kube/config).
    #[arg(long, env = "OPENMODEL_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
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
    };
    openmodel_ledger_service::serve(config, KubeAccess::new(client), shutdown::signal()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(*args).await,
    }
}
