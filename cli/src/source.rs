//! Where answers come from: a ledger file (`--ledger`) or the ledger
//! service (`--server`), both asked through the one ledger client
//! ([`AuditLog`]: a [`LocalLog`] or a [`RemoteLog`]) on a small Tokio
//! runtime. Each command is written once against [`Source`].
//!
//! What is checked here before an answer is used:
//!
//! - a file: its latest signed checkpoint when it is opened, with its own
//!   key (or `--key`, which it must match);
//! - a server (unless `--no-verify`): every checkpoint's signature, with the
//!   trusted key ([`Trust`]), and its consistency with the last checkpoint
//!   this computer saw; every entry shown, by an inclusion proof in that
//!   checkpoint computed from the leaf bytes as received (the service's own
//!   hashes are never used); proofs handed out (`audit proof`) before they
//!   are written.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use openmodel_ledger::checkpoint::{Checkpoint, SignedCheckpoint};
use openmodel_ledger::entry::{EntryBody, KeyEvent};
use openmodel_ledger::hash::Hash;
use openmodel_ledger::note::Verifier;
use openmodel_ledger::proof_file::TlogProof;
use openmodel_ledger::query::{Page, Query};
use openmodel_ledger::store::{OpenCheck, StoredEntry};
use openmodel_ledger::tree::verify_inclusion;
use openmodel_ledger::{Error as LedgerError, Ledger};
use openmodel_ledger_service::Error as ClientError;
use openmodel_ledger_service::client::{
    AuditLog, Credentials, LocalLog, RemoteLog, connect_expecting,
};
use tokio::runtime::Runtime;
use tonic::Code;

use crate::cli::ServerArgs;
use crate::kubeconfig::{self, Token};
use crate::trust::{Store, Trust};

/// Inclusion proofs asked for at once: half the calls one caller may have
/// in progress at the ledger service by default (`--max-calls-per-caller`
/// 8), leaving room for the caller's other calls.
const PROOFS_IN_FLIGHT: usize = 4;

/// A ledger file or a ledger service, and what is checked of its answers.
pub struct Source {
    runtime: Runtime,
    log: Box<dyn AuditLog>,
    checks: Checks,
}

/// What is checked of a source's answers.
enum Checks {
    /// A ledger file, opened read-only and checked with its key.
    File {
        /// The file's key.
        key: Verifier,
    },
    /// The ledger service.
    Server {
        /// Its address, for messages.
        endpoint: String,
        /// Why no token was sent, if none was.
        no_token: Option<String>,
        /// `None` with `--no-verify`.
        trust: Option<Trust>,
    },
}

/// Which source the command line names: `--server` or `--ledger`.
pub enum Choice<'a> {
    /// A ledger file.
    File(&'a Path),
    /// A ledger service.
    Server(&'a str),
}

/// The source named by `ledger` and `server`.
pub fn choose<'a>(ledger: Option<&'a PathBuf>, server: &'a ServerArgs) -> Result<Choice<'a>> {
    match (ledger, server.server.as_deref()) {
        (Some(_), Some(_)) => bail!(
            "both a ledger file (--ledger or OPENMODEL_LEDGER) and a server (--server or \
             OPENMODEL_SERVER) are set: pass only one"
        ),
        (Some(file), None) => Ok(Choice::File(file)),
        (None, Some(url)) => Ok(Choice::Server(url)),
        (None, None) => bail!(
            "no ledger: pass --ledger FILE (or set OPENMODEL_LEDGER), or --server \
             https://host:port (or set OPENMODEL_SERVER) for the ledger service"
        ),
    }
}

/// The gRPC name of a status code, as grpcurl and the docs write it.
fn code_name(code: Code) -> String {
    match code {
        Code::Unauthenticated => "UNAUTHENTICATED".into(),
        Code::PermissionDenied => "PERMISSION_DENIED".into(),
        Code::Unavailable => "UNAVAILABLE".into(),
        Code::InvalidArgument => "INVALID_ARGUMENT".into(),
        Code::NotFound => "NOT_FOUND".into(),
        Code::OutOfRange => "OUT_OF_RANGE".into(),
        other => format!("{other:?}"),
    }
}

impl Source {
    /// Opens the source the command line names; `key` is the key to trust.
    pub fn open(
        ledger: Option<&PathBuf>,
        server: &ServerArgs,
        key: Option<Verifier>,
    ) -> Result<Source> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the runtime the ledger client runs on")?;
        match choose(ledger, server)? {
            Choice::File(path) => {
                let ledger = Ledger::open_read_only(path, OpenCheck::Quick)?;
                if let Some(key) = key
                    && ledger.verifier() != &key
                {
                    bail!(LedgerError::BadSignature(format!(
                        "{} is signed with {}, not the key you trust ({key})",
                        path.display(),
                        ledger.verifier()
                    )));
                }
                let key = ledger.verifier().clone();
                Ok(Source {
                    runtime,
                    log: Box::new(LocalLog::new(Arc::new(ledger))),
                    checks: Checks::File { key },
                })
            }
            Choice::Server(url) => Source::connect(runtime, server, url, key),
        }
    }

    /// Connects to the service at `endpoint` and establishes trust in its
    /// log: `key` or the pinned key, else the key in the log's first entry
    /// (pinned on first use); the service's checkpoint is checked at once.
    fn connect(
        runtime: Runtime,
        args: &ServerArgs,
        endpoint: &str,
        key: Option<Verifier>,
    ) -> Result<Source> {
        let ca_file = args.ca_file.as_deref().context(
            "--server needs --ca-file (or OPENMODEL_CA_FILE): the PEM file of the CA that signed \
             the ledger service's TLS certificate",
        )?;
        let ca = std::fs::read(ca_file)
            .with_context(|| format!("cannot read the CA file {}", ca_file.display()))?;
        let (credentials, no_token) = match kubeconfig::token(args)? {
            Token::Value(token) => (
                Credentials::token(&token).context("the bearer token")?,
                None,
            ),
            Token::File(path) => (Credentials::token_file(&path), None),
            Token::None(why) => (Credentials::none(), Some(why)),
        };
        let client = runtime.block_on(connect_expecting(
            endpoint,
            &ca,
            credentials,
            args.tls_server_name.as_deref(),
        ))?;
        // A person is waiting: an unavailable service is reported at once.
        let log = RemoteLog::new(client, endpoint).with_patience(Duration::ZERO);
        let mut source = Source {
            runtime,
            log: Box::new(log),
            checks: Checks::Server {
                endpoint: endpoint.to_owned(),
                no_token,
                trust: None,
            },
        };
        if args.no_verify {
            eprintln!(
                "WARNING: --no-verify: answers from {endpoint} are not checked against the log's \
                 key; they prove nothing"
            );
            return Ok(source);
        }
        let served = source.call(source.log.checkpoint())?;
        let origin = served.checkpoint.origin;
        let trust = Trust::establish(Store::for_user()?, &origin, key, || {
            source.learn_key(&origin)
        })?;
        let checkpoint = trust.open(&served.note).with_context(|| {
            format!(
                "the key trusted for {origin} ({}) did not sign the checkpoint {endpoint} sent: \
                 the log was re-keyed, or it is not the log you know",
                trust.key()
            )
        })?;
        if let Checks::Server { trust: slot, .. } = &mut source.checks {
            *slot = Some(trust);
        }
        source.accept(&checkpoint)?;
        Ok(source)
    }

    /// Where answers come from, for messages.
    pub fn describe(&self) -> String {
        self.log.describe()
    }

    /// The trust in a server's log (`None` for a file, or with `--no-verify`).
    fn trust(&self) -> Option<&Trust> {
        match &self.checks {
            Checks::File { .. } => None,
            Checks::Server { trust, .. } => trust.as_ref(),
        }
    }

    /// The key answers are checked with (`None` for a server with
    /// `--no-verify`).
    pub fn verifier(&self) -> Option<&Verifier> {
        match &self.checks {
            Checks::File { key } => Some(key),
            Checks::Server { trust, .. } => trust.as_ref().map(Trust::key),
        }
    }

    /// Whether each entry shown is proven included in its checkpoint.
    pub fn proves_entries(&self) -> bool {
        self.trust().is_some()
    }

    /// Runs one call of the client, turning a refusal into a message that
    /// says what to do; the log's own errors stay typed (exit codes).
    fn call<T>(&self, call: impl Future<Output = Result<T, ClientError>>) -> Result<T> {
        self.runtime.block_on(call).map_err(|e| self.failed(e))
    }

    fn failed(&self, error: ClientError) -> anyhow::Error {
        let (endpoint, no_token) = match &self.checks {
            Checks::Server {
                endpoint, no_token, ..
            } => (endpoint.as_str(), no_token),
            Checks::File { .. } => ("", &None),
        };
        let (code, message) = match error {
            ClientError::Ledger(e) => return anyhow!(e),
            ClientError::Refused { code, message, .. } => (code, message),
            other => return anyhow!(other),
        };
        let what = format!("{} from {endpoint}: {message}", code_name(code));
        match (code, no_token) {
            (Code::Unauthenticated, Some(why)) => anyhow!(
                "{what}\nNo bearer token was sent: {why}. To send one, {}.",
                kubeconfig::make_one()
            ),
            (Code::Unauthenticated, None) => anyhow!(
                "{what}\nThe token was refused (the service says why above); to send another, \
                 {}.",
                kubeconfig::make_one()
            ),
            _ => anyhow!("{what}"),
        }
    }

    /// Reads the log's key from its first entry (`ledger.key`, `created`),
    /// proven included in a checkpoint that key signed.
    fn learn_key(&self, origin: &str) -> Result<Verifier> {
        let proof = self.call(self.log.prove(0, None)).context(
            "cannot read the log's key from its first entry; pass --key (or set \
             OPENMODEL_LEDGER_KEY) with the verifier key the log's operator publishes",
        )?;
        let entry = StoredEntry::from_leaf(0, proof.extra.clone().unwrap_or_default())?;
        let key = match &entry.entry.body {
            EntryBody::LedgerKey(k) if k.event == KeyEvent::Created => k.key.parse::<Verifier>()?,
            _ => bail!(LedgerError::BadSignature(format!(
                "the first entry of {origin} is a {} entry, not the ledger.key entry every log \
                 starts with",
                entry.entry.kind()
            ))),
        };
        proof.verify(&key, None)?;
        Ok(key)
    }

    /// Checks a checkpoint a server sent (a file's are its own).
    fn open_served(&self, served: SignedCheckpoint) -> Result<SignedCheckpoint> {
        match self.trust() {
            Some(trust) => trust.open(&served.note),
            None => Ok(served),
        }
    }

    /// Proves `checkpoint` consistent with the last one seen and keeps it.
    fn accept(&mut self, checkpoint: &SignedCheckpoint) -> Result<()> {
        let Checks::Server { trust, .. } = &mut self.checks else {
            return Ok(());
        };
        let Some(mut trust) = trust.take() else {
            return Ok(());
        };
        let source = self.describe();
        let result = trust.accept(&source, checkpoint, |old, new| {
            match self.runtime.block_on(self.log.consistency(old, new)) {
                Ok(hashes) => Ok(Some(hashes)),
                Err(e) if matches!(e.code(), Code::NotFound | Code::OutOfRange) => Ok(None),
                Err(e) => Err(self.failed(e)),
            }
        });
        if let Checks::Server { trust: slot, .. } = &mut self.checks {
            *slot = Some(trust);
        }
        result
    }

    /// The latest signed checkpoint.
    pub fn checkpoint(&mut self) -> Result<SignedCheckpoint> {
        let served = self.call(self.log.checkpoint())?;
        let checkpoint = self.open_served(served)?;
        self.accept(&checkpoint)?;
        Ok(checkpoint)
    }

    /// One page of `query`; with `prove_entries`, a server's entries are
    /// each proven included in the page's checkpoint.
    pub fn query(&mut self, query: &Query, prove_entries: bool) -> Result<Page> {
        let mut page = self.call(self.log.query(query.clone()))?;
        page.checkpoint = self.open_served(page.checkpoint)?;
        self.accept(&page.checkpoint)?;
        if prove_entries && self.proves_entries() {
            self.prove_included(&page.entries, &page.checkpoint.checkpoint)?;
        }
        Ok(page)
    }

    /// Proves each of `entries` included in `checkpoint`'s tree, hashing
    /// the leaf bytes as received.
    fn prove_included(&self, entries: &[StoredEntry], checkpoint: &Checkpoint) -> Result<()> {
        let (size, root) = (checkpoint.size, checkpoint.root);
        let checks = entries.iter().map(|entry| {
            let (index, leaf) = (entry.index, entry.leaf_hash());
            async move {
                let proof = self
                    .log
                    .prove(index, Some(size))
                    .await
                    .map_err(|e| self.failed(e))?;
                verify_inclusion(index, size, &leaf.0, &proof.path, &root.0).with_context(|| {
                    format!(
                        "entry {index} as served is not in the tree of size {size} the service \
                         signed"
                    )
                })
            }
        });
        self.runtime.block_on(
            futures::stream::iter(checks)
                .buffer_unordered(PROOFS_IN_FLIGHT)
                .try_collect::<Vec<()>>(),
        )?;
        Ok(())
    }

    /// A tlog-proof of entry `index` in the latest checkpoint, carrying the
    /// entry, and that checkpoint (the proof checked, unless `--no-verify`).
    pub fn prove(&mut self, index: u64) -> Result<(TlogProof, SignedCheckpoint)> {
        let proof = self.call(self.log.prove(index, None))?;
        if proof.index != index || proof.extra.is_none() {
            bail!(LedgerError::ProofFailed(format!(
                "asked for a proof of entry {index} with the entry in it, {} sent a proof of \
                 entry {} {} it",
                self.describe(),
                proof.index,
                if proof.extra.is_some() {
                    "with"
                } else {
                    "without"
                }
            )));
        }
        let checkpoint = match self.verifier() {
            Some(key) => proof.verify(key, None)?,
            None => SignedCheckpoint::parse_unverified(&proof.checkpoint)?,
        };
        self.accept(&checkpoint)?;
        Ok((proof, checkpoint))
    }

    /// A consistency proof from the tree of `old` leaves to the signed tree
    /// of `new` leaves (not checked here: the caller holds both roots).
    pub fn consistency(&mut self, old: u64, new: u64) -> Result<Vec<Hash>> {
        self.call(self.log.consistency(old, new))
    }

    /// For `verify`: what the last checkpoint seen was, as a sentence.
    pub fn seen(&self) -> Option<String> {
        self.trust().and_then(Trust::seen).map(|cp| {
            format!(
                "the latest checkpoint seen of {} (size {}) is kept for the next check",
                cp.checkpoint.origin, cp.checkpoint.size
            )
        })
    }
}

/// A verifier key given inline or as a file holding it.
pub fn parse_verifier(key: &str) -> Result<Verifier> {
    let text = if Path::new(key).is_file() {
        std::fs::read_to_string(key).with_context(|| format!("cannot read {key}"))?
    } else {
        key.to_owned()
    };
    Ok(text.trim().parse::<Verifier>()?)
}
