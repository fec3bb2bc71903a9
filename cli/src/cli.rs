//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit codes: 0 success (for verify: verified), 1 verification failed (tampering, bad
signature, proof does not hold), 2 usage error, 3 fork detected, 4 other errors.

Environment: OPENMODEL_LEDGER (ledger file), OPENMODEL_LEDGER_KEY_FILE (signing key file).
Docs: docs/ledger.md (format, threat model, how to verify as a third party).";

/// OpenModel: model serving with an accountable memory.
///
/// The audit ledger records every config change (and who made it), every
/// dataset reference and every weight digest that went live, in an
/// append-only Merkle log with signed checkpoints that anyone holding the
/// public key can verify offline.
#[derive(Parser, Debug)]
#[command(version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Ledger file (SQLite).
    #[arg(long, global = true, env = "OPENMODEL_LEDGER", value_name = "FILE")]
    pub ledger: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
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

/// Filters shared by `audit log`.
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
    /// Show one entry in full.
    Show {
        /// Entry index.
        index: u64,
        /// Output format (table shows the canonical JSON pretty-printed).
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Write a C2SP tlog-proof that entry N is in the log (the entry travels in it).
    Proof {
        /// Entry index.
        index: u64,
        /// Write to this file instead of standard output.
        #[arg(long, short = 'f', value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Export the log as a C2SP tlog-tiles bundle (+ JSONL and CSV) into a new folder.
    Export {
        /// Folder to create (must be absent or empty).
        dir: PathBuf,
    },
    /// Verify a bundle offline, a ledger file, or a single proof.
    ///
    /// With --bundle: check the checkpoint signature, recompute the whole tree
    /// from the entries, compare every tile, and with --since-checkpoint prove
    /// the log only grew since a checkpoint you kept. With --proof: check one
    /// tlog-proof file. Otherwise: check the --ledger file row by row.
    Verify {
        /// Export bundle to verify.
        #[arg(long, value_name = "DIR", conflicts_with = "proof")]
        bundle: Option<PathBuf>,
        /// tlog-proof file to verify.
        #[arg(long, value_name = "FILE")]
        proof: Option<PathBuf>,
        /// The log's verifier key (name+id+base64), or a file holding it.
        /// Get it from the log operator through a channel you trust.
        #[arg(long, value_name = "VKEY")]
        key: String,
        /// An older signed checkpoint you kept: prove the bundle is consistent with it.
        #[arg(long, value_name = "FILE", requires = "bundle")]
        since_checkpoint: Option<PathBuf>,
        /// After verifying, save the bundle's checkpoint here for next time.
        #[arg(long, value_name = "FILE", requires = "bundle")]
        save_checkpoint: Option<PathBuf>,
    },
}
