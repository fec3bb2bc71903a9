//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Sources: a ledger file (--ledger FILE) or the ledger service (--server https://host:port).
Answers from a server are verified by default: each entry shown is proven included in a
checkpoint signed by the log's key (--key, or the key pinned on first use), and each
checkpoint is proven consistent with the last one this computer saw for that log, kept in
$XDG_CONFIG_HOME/openmodel/ (or ~/.config/openmodel/). A server token comes from --token,
--token-file or the current kubeconfig context's user.

As a kubectl plugin: ln -s \"$(command -v openmodel)\" ~/.local/bin/kubectl-openmodel, then
kubectl openmodel audit log --server ...

Exit codes: 0 success (for verify: verified), 1 verification failed (tampering, bad
signature, proof does not hold, a changed key), 2 usage error, 3 fork detected (two
histories of one log), 4 other errors (including UNAUTHENTICATED and PERMISSION_DENIED).

Environment: OPENMODEL_LEDGER (ledger file), OPENMODEL_LEDGER_KEY_FILE (signing key file),
OPENMODEL_SERVER, OPENMODEL_CA_FILE, OPENMODEL_TOKEN, OPENMODEL_LEDGER_KEY (verifier key),
KUBECONFIG, XDG_CONFIG_HOME.
Docs: docs/compliance.md (the questions and their commands), docs/ledger.md (format, threat
model, how to verify as a third party).";

/// OpenModel: model serving with an accountable memory.
///
/// The audit ledger records every config change (and who made it), every
/// dataset reference and every weight digest that went live, in an
/// append-only Merkle log with signed checkpoints that anyone holding the
/// public key can verify offline.
#[derive(Parser, Debug)]
#[command(version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Ledger file (SQLite) to read or write.
    #[arg(long, global = true, env = "OPENMODEL_LEDGER", value_name = "FILE")]
    pub ledger: Option<PathBuf>,

    #[command(flatten)]
    pub server: ServerArgs,

    /// The log's verifier key (name+id+base64), or a file holding it. Get it from
    /// the log's operator through a channel you trust. Needed by `audit verify`;
    /// with --server, pinned on first use when absent.
    #[arg(long, global = true, env = "OPENMODEL_LEDGER_KEY", value_name = "VKEY")]
    pub key: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// Where the ledger service is and how to authenticate to it.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// Ask the ledger service instead of a file: its gRPC address, https://host:port.
    #[arg(long, global = true, env = "OPENMODEL_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// PEM file with the CA certificate(s) that signed the service's TLS certificate.
    #[arg(long, global = true, env = "OPENMODEL_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,

    /// Check the service's certificate for this name instead of the host in
    /// --server (e.g. openmodel-ledger.openmodel-system.svc when --server is a
    /// cluster IP or a port-forward), as `kubectl --tls-server-name`.
    #[arg(
        long,
        global = true,
        env = "OPENMODEL_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,

    /// Bearer token for the service (a Kubernetes token, e.g. from `kubectl create
    /// token`). Default: --token-file, else the token of the kubeconfig's current
    /// context's user.
    #[arg(
        long,
        global = true,
        env = "OPENMODEL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// File holding the bearer token (re-read as it rotates); not with --token.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Kubeconfig to take the token from (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to take the token from (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// UNSAFE: do not check the server's answers (signatures, inclusion and
    /// consistency proofs). Answers then prove nothing; use it only to look at a
    /// log whose key you do not have.
    #[arg(long, global = true)]
    pub no_verify: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create and check ledger files.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Record, query, prove, export and verify audit entries.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Create a new ledger with a new Ed25519 signing key.
    ///
    /// Writes the private key to --key-file (mode 0600; keep it secret and
    /// backed up) and the public verifier key to <key-file>.pub (give it to
    /// auditors). The first entry records the key.
    Init {
        /// The log's origin: a unique name, e.g. openmodel.example.com/prod-ledger.
        #[arg(long)]
        origin: String,
        /// Where to write the new private key; must not exist.
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        /// Cluster name recorded in entries made by this command.
        #[arg(long, env = "OPENMODEL_CLUSTER", default_value = "local")]
        cluster: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
    /// CSV for spreadsheets.
    Csv,
}

/// The filters of `audit log`.
#[derive(Args, Debug)]
pub struct Filters {
    /// Only entries about this model: namespace/name, or namespace/ for a whole namespace.
    #[arg(long, value_name = "NS/NAME")]
    pub model: Option<String>,
    /// Only entries of this kind (spec.changed, dataset.referenced, weights.verified,
    /// model.deployed, model.retired, ledger.key).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only entries at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    /// Only entries before this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub until: Option<String>,
    /// Only entries mentioning this weights or dataset digest (sha256:<hex>).
    #[arg(long)]
    pub digest: Option<String>,
    /// Only entries referencing this dataset URI.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Only entries made by this user.
    #[arg(long)]
    pub actor: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Append entries from JSON (for tests and manual events).
    ///
    /// Reads one entry (a JSON object without "time", which the ledger
    /// assigns) from --file or standard input, or with --jsonl one entry per
    /// line, answering each as soon as it is durable. Prints the index.
    Record {
        /// The ledger's private signing key.
        #[arg(long, env = "OPENMODEL_LEDGER_KEY_FILE", value_name = "FILE")]
        key_file: PathBuf,
        /// Read the entry from this file instead of standard input.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// One entry per line; each is acknowledged (index printed) once durable.
        #[arg(long)]
        jsonl: bool,
    },
    /// List entries, filtered; states which index range it covered.
    ///
    /// From a --server, each entry shown is first proven included in the
    /// signed checkpoint the answer names (its leaf bytes hashed here), and that
    /// checkpoint proven consistent with the last one seen.
    Log {
        #[command(flatten)]
        filters: Filters,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
        /// Most entries to show (1..=10000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start at this index (the "next" of a previous page).
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Page through everything instead of stopping at --limit.
        #[arg(long)]
        all: bool,
    },
    /// Show one entry in full, proven included in the latest signed checkpoint.
    Show {
        /// Entry index.
        index: u64,
        /// Output format (table shows the canonical JSON pretty-printed).
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Write a C2SP tlog-proof that entry N is in the log (the entry travels in it).
    ///
    /// Anyone holding the log's public key can check the file offline with
    /// `audit verify --proof FILE --key VKEY`.
    Proof {
        /// Entry index.
        index: u64,
        /// Write to this file instead of standard output.
        #[arg(long, short = 'f', value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Export the log as a C2SP tlog-tiles bundle (+ JSONL and CSV) into a new folder.
    ///
    /// Every entry is read, the whole tree recomputed from them and checked
    /// against the signed checkpoint before the checkpoint is written; the
    /// bundle verifies offline with `audit verify --bundle DIR --key VKEY`.
    /// From a --server this needs permission to read the whole log.
    Export {
        /// Folder to create (must be absent or empty).
        dir: PathBuf,
    },
    /// Every model live at a moment, with its weights digest and datasets.
    ///
    /// Replays the log up to --at: a model is live from its first spec.changed
    /// or model.deployed until its model.retired; its digest is that of its last
    /// model.deployed (before a first rollout, its last weights.verified); its
    /// datasets are those its spec declared then, each with its dataset.referenced
    /// entry. The entries replayed are proven to be the whole signed log up to
    /// that moment, so from a --server it needs permission to read the whole log.
    Inventory {
        /// The moment (RFC 3339 or YYYY-MM-DD); entries logged at or before it count.
        /// Default: now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Only this model: namespace/name, or namespace/ for a whole namespace.
        #[arg(long, value_name = "NS/NAME")]
        model: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Verify a bundle offline, a single proof, a ledger file, or a server's whole log.
    ///
    /// With --bundle: check the checkpoint signature, recompute the whole tree
    /// from the entries, compare every tile, and with --since-checkpoint prove
    /// the log only grew since a checkpoint you kept. With --proof: check one
    /// tlog-proof file. With --server: read every entry, recompute the tree,
    /// check it against the signed checkpoint and that checkpoint against the
    /// last one seen. Otherwise: check the --ledger file row by row. --key is
    /// required except with --server (which uses the pinned key).
    Verify {
        /// Export bundle to verify.
        #[arg(long, value_name = "DIR", conflicts_with = "proof")]
        bundle: Option<PathBuf>,
        /// tlog-proof file to verify.
        #[arg(long, value_name = "FILE")]
        proof: Option<PathBuf>,
        /// An older signed checkpoint you kept: prove the bundle is consistent with it.
        #[arg(long, value_name = "FILE", requires = "bundle")]
        since_checkpoint: Option<PathBuf>,
        /// After verifying, save the bundle's checkpoint here for next time.
        #[arg(long, value_name = "FILE", requires = "bundle")]
        save_checkpoint: Option<PathBuf>,
    },
}
