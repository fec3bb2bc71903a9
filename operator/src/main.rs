//! `openmodel-operator`: runs the OpenModel operator, or prints its CRD.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use openmodel_operator::journal::{JournalConfig, LedgerLocation};
use openmodel_operator::leader::LeaseConfig;
use openmodel_operator::resources::gpu::{self, DEFAULT_GPU_RESOURCE, GpuDefaults};
use openmodel_operator::webhook::{CertificateSource, WebhookConfig};
use openmodel_operator::{Config, crd};
use openmodel_runtime::https::ClientAuth;
use openmodel_runtime::logging::{self, LogArgs};
use openmodel_runtime::shutdown;

/// The OpenModel operator: serves `OpenModel` resources from Deployments of
/// `openmodel-server` pods and records every spec change, dataset, verified
/// digest, rollout and retirement in the audit ledger.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator (leader election first; only the leader reconciles
    /// and writes the ledger). SIGTERM or Ctrl-C finish the reconciles in
    /// flight, commit the ledger and release the Lease.
    Run(Box<RunArgs>),
    /// Print the OpenModel CustomResourceDefinition as YAML (the source of
    /// crds/openmodel.yaml).
    Crd,
}

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("ledger-location").required(true).args(["ledger", "ledger_server"]))]
struct RunArgs {
    /// The ledger file (SQLite) this process appends to (local runs); or
    /// use --ledger-server.
    #[arg(long, env = "OPENMODEL_LEDGER", requires = "ledger_key_file")]
    ledger: Option<PathBuf>,
    /// The ledger's private key file (PRIVATE+KEY+…), as written by
    /// `openmodel ledger init` (with --ledger).
    #[arg(long, env = "OPENMODEL_LEDGER_KEY_FILE")]
    ledger_key_file: Option<PathBuf>,
    /// Create the ledger when the file does not exist (origin: the key's
    /// name; with --ledger).
    #[arg(long, env = "OPENMODEL_CREATE_LEDGER")]
    create_ledger: bool,
    /// The ledger service (`openmodel-ledger serve`) to append to,
    /// https://host:port; it owns the ledger file.
    #[arg(long, env = "OPENMODEL_LEDGER_SERVER", conflicts_with = "ledger")]
    ledger_server: Option<String>,
    /// The CA certificates (PEM) of the ledger service's TLS certificate.
    #[arg(
        long,
        env = "OPENMODEL_LEDGER_CA_FILE",
        default_value = "/etc/openmodel/ledger-ca/ca.crt"
    )]
    ledger_ca_file: PathBuf,
    /// The bearer token for the ledger service, re-read as it rotates: the
    /// operator's service-account token, best a projected one issued for the
    /// ledger's audience (the chart mounts one for `openmodel-ledger`), so
    /// the ledger never holds a token that works against the API server.
    #[arg(
        long,
        env = "OPENMODEL_LEDGER_TOKEN_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    ledger_token_file: PathBuf,
    /// The cluster name recorded in every ledger entry.
    #[arg(long, env = "OPENMODEL_CLUSTER", default_value = "kubernetes")]
    cluster: String,
    /// Only reconcile OpenModels in this namespace (default: all).
    #[arg(long, env = "OPENMODEL_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// The namespace of the leader Lease.
    #[arg(
        long,
        env = "OPENMODEL_LEASE_NAMESPACE",
        default_value = "openmodel-system"
    )]
    lease_namespace: String,
    /// The name of the leader Lease.
    #[arg(
        long,
        env = "OPENMODEL_LEASE_NAME",
        default_value = "openmodel-operator"
    )]
    lease_name: String,
    /// This instance's identity in the Lease (default: the host name, which
    /// is the pod name in a cluster).
    #[arg(long, env = "OPENMODEL_IDENTITY")]
    identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "OPENMODEL_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,
    /// Seconds the leader keeps trying to renew before it stops leading.
    #[arg(long, env = "OPENMODEL_RENEW_DEADLINE", default_value_t = 10)]
    renew_deadline: u64,
    /// Seconds between leader-election attempts.
    #[arg(long, env = "OPENMODEL_RETRY_PERIOD", default_value_t = 2)]
    retry_period: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "OPENMODEL_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    http_listen: SocketAddr,
    /// Most models reconciled at once (0: no limit). Bounds the load a burst
    /// of changes puts on the API server, the ledger and this process.
    #[arg(long, env = "OPENMODEL_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Serve the validating admission webhook on this address (HTTPS),
    /// while this instance leads: every OpenModel change is recorded with the
    /// requesting user before it is admitted. Off when not set.
    #[arg(long, env = "OPENMODEL_WEBHOOK_LISTEN")]
    webhook_listen: Option<SocketAddr>,
    /// Take the webhook's certificate from tls.crt and tls.key in this folder
    /// (e.g. a cert-manager Secret) instead of the operator's own.
    #[arg(long, env = "OPENMODEL_WEBHOOK_CERT_DIR")]
    webhook_cert_dir: Option<PathBuf>,
    /// The Secret (in --lease-namespace) where the operator keeps the
    /// webhook's CA and certificate, made when missing.
    #[arg(
        long,
        env = "OPENMODEL_WEBHOOK_SECRET",
        default_value = "openmodel-webhook-tls"
    )]
    webhook_secret: String,
    /// Host names (or addresses) the operator's webhook certificate is for;
    /// default: openmodel-webhook.<lease namespace>.svc.
    #[arg(long, env = "OPENMODEL_WEBHOOK_HOSTS", value_delimiter = ',')]
    webhook_host: Vec<String>,
    /// The ValidatingWebhookConfiguration whose caBundle the operator fills
    /// with its CA (leave unset when cert-manager injects it).
    #[arg(long, env = "OPENMODEL_WEBHOOK_CONFIGURATION")]
    webhook_configuration: Option<String>,
    /// Accept only webhook clients whose certificate chains to a CA in this
    /// PEM file: the certificate the API server presents to webhooks (set by
    /// its --admission-control-config-file, kubeConfigFile). Without it any
    /// client that reaches the port can post an AdmissionReview naming any
    /// user, and the ledger would record it.
    #[arg(long, env = "OPENMODEL_WEBHOOK_CLIENT_CA")]
    webhook_client_ca: Option<PathBuf>,
    /// Accept only client certificates naming one of these DNS names (or
    /// addresses) in their subjectAltName; needed when the CA also signs
    /// other clients (a cluster CA signs kubelets' and users' certificates).
    #[arg(
        long,
        env = "OPENMODEL_WEBHOOK_CLIENT_NAMES",
        value_delimiter = ',',
        requires = "webhook_client_ca"
    )]
    webhook_client_name: Vec<String>,
    /// The extended resource GPUs are asked for as (and whose taint GPU
    /// pods tolerate) for models whose spec.runtime.resources.gpuResource
    /// is unset: another vendor's device plugin, or MIG slices.
    #[arg(long, env = "OPENMODEL_GPU_RESOURCE", default_value = DEFAULT_GPU_RESOURCE, value_parser = name_parser(gpu::is_extended_resource_name, "an extended resource name: <domain>/<name> outside kubernetes.io, e.g. nvidia.com/gpu or amd.com/gpu"))]
    gpu_resource: String,
    /// The RuntimeClass of the pods of models with GPUs whose
    /// spec.runtime.runtimeClassName is unset (e.g. `nvidia`, where the
    /// NVIDIA container runtime is not the nodes' default). Unset: the
    /// nodes' default runtime.
    #[arg(long, env = "OPENMODEL_GPU_RUNTIME_CLASS_NAME", value_parser = name_parser(gpu::is_dns_subdomain, "a RuntimeClass name: a DNS subdomain of lowercase letters, digits, '-' and '.', e.g. nvidia"))]
    gpu_runtime_class_name: Option<String>,
    #[command(flatten)]
    log: LogArgs,
}

/// A value parser accepting the names `valid` accepts; `what` says what
/// a name must be, with an example.
fn name_parser(
    valid: fn(&str) -> bool,
    what: &'static str,
) -> impl Fn(&str) -> Result<String, String> + Clone + Send + Sync + 'static {
    move |name| {
        if valid(name) {
            Ok(name.into())
        } else {
            Err(format!("'{name}' is not {what}"))
        }
    }
}

async fn run(args: RunArgs) -> Result<()> {
    logging::init(args.log.log_format);
    let identity = match args.identity {
        Some(identity) => identity,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name for --identity")?
            .trim()
            .to_string(),
    };
    let clients = args
        .webhook_client_ca
        .as_deref()
        .map(|ca| ClientAuth::read(ca, &args.webhook_client_name))
        .transpose()
        .context("--webhook-client-ca")?;
    let webhook = args.webhook_listen.map(|listen| WebhookConfig {
        listen,
        certificate: match args.webhook_cert_dir {
            Some(dir) => CertificateSource::Dir(dir),
            None => CertificateSource::Secret {
                hosts: if args.webhook_host.is_empty() {
                    vec![format!("openmodel-webhook.{}.svc", args.lease_namespace)]
                } else {
                    args.webhook_host
                },
                namespace: args.lease_namespace.clone(),
                name: args.webhook_secret,
            },
        },
        configuration: args.webhook_configuration,
        clients,
    });
    let config = Config {
        namespace: args.watch_namespace,
        journal: JournalConfig {
            ledger: match (args.ledger, args.ledger_server) {
                (Some(path), _) => LedgerLocation::File {
                    path,
                    key_file: args.ledger_key_file.unwrap_or_default(),
                    create: args.create_ledger,
                },
                (None, endpoint) => LedgerLocation::Service {
                    endpoint: endpoint.unwrap_or_default(),
                    ca_file: args.ledger_ca_file,
                    token_file: args.ledger_token_file,
                },
            },
            cluster: args.cluster,
        },
        lease: LeaseConfig {
            namespace: args.lease_namespace,
            name: args.lease_name,
            identity,
            duration: Duration::from_secs(args.lease_duration),
            renew_deadline: Duration::from_secs(args.renew_deadline),
            retry_period: Duration::from_secs(args.retry_period),
        },
        http_listen: Some(args.http_listen),
        concurrency: args.concurrency,
        webhook,
        gpu: GpuDefaults {
            resource: args.gpu_resource,
            runtime_class_name: args.gpu_runtime_class_name,
        },
    };
    // Before connecting: a bad key file or a missing ledger is the first
    // thing to report.
    config.journal.check()?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
    match openmodel_operator::run(client, config, shutdown::signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "stopped on an error");
            Err(e.into())
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(*args).await,
        Command::Crd => {
            print!("{}", crd::manifest()?);
            Ok(())
        }
    }
}
