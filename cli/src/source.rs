//! Where answers come from: a ledger file (`--ledger`) or the ledger
//! service (`--server`). Each command is written once against [`Source`].
//!
//! A file is checked against its latest signed checkpoint when opened, with
//! its own key (or `--key`, which it must match); a server's answers are
//! checked as they arrive (see [`crate::remote`]).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use openmodel_ledger::checkpoint::SignedCheckpoint;
use openmodel_ledger::hash::Hash;
use openmodel_ledger::note::Verifier;
use openmodel_ledger::proof_file::TlogProof;
use openmodel_ledger::query::{Page, Query};
use openmodel_ledger::store::OpenCheck;
use openmodel_ledger::{Error as LedgerError, Ledger};

use crate::cli::ServerArgs;
use crate::remote::Remote;

/// A ledger file or a ledger service.
pub enum Source {
    /// A ledger file, read-only.
    Local(Ledger),
    /// The ledger service.
    Remote(Remote),
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

impl Source {
    /// Opens the source the command line names; `key` is the key to trust.
    pub fn open(
        ledger: Option<&PathBuf>,
        server: &ServerArgs,
        key: Option<Verifier>,
    ) -> Result<Source> {
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
                Ok(Source::Local(ledger))
            }
            Choice::Server(url) => Ok(Source::Remote(Remote::connect(server, url, key)?)),
        }
    }

    /// Where answers come from, for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Local(l) => format!("the ledger file {}", l.path().display()),
            Source::Remote(r) => r.describe(),
        }
    }

    /// The key answers are checked with (`None` for a server with
    /// `--no-verify`).
    pub fn verifier(&self) -> Option<&Verifier> {
        match self {
            Source::Local(l) => Some(l.verifier()),
            Source::Remote(r) => r.verifier(),
        }
    }

    /// Whether each entry shown is proven included in its checkpoint.
    pub fn proves_entries(&self) -> bool {
        matches!(self, Source::Remote(r) if r.verifies())
    }

    /// The latest signed checkpoint.
    pub fn checkpoint(&mut self) -> Result<SignedCheckpoint> {
        match self {
            Source::Local(l) => Ok(l.checkpoint()?),
            Source::Remote(r) => r.checkpoint(),
        }
    }

    /// One page of `query`; with `prove_entries`, a server's entries are
    /// each proven included in the page's checkpoint.
    pub fn query(&mut self, query: &Query, prove_entries: bool) -> Result<Page> {
        match self {
            Source::Local(l) => Ok(l.query(query)?),
            Source::Remote(r) => r.query(query, prove_entries),
        }
    }

    /// A tlog-proof of entry `index` in the latest checkpoint, carrying the
    /// entry, and that checkpoint (the proof checked, unless `--no-verify`).
    pub fn prove(&mut self, index: u64) -> Result<(TlogProof, SignedCheckpoint)> {
        match self {
            Source::Local(l) => {
                let proof = l.prove(index)?;
                let checkpoint = proof.verify(l.verifier(), None)?;
                Ok((proof, checkpoint))
            }
            Source::Remote(r) => r.prove(index),
        }
    }

    /// A consistency proof from the tree of `old` leaves to the signed tree
    /// of `new` leaves.
    pub fn consistency(&mut self, old: u64, new: u64) -> Result<Vec<Hash>> {
        match self {
            Source::Local(l) => Ok(l.consistency_proof(old, new)?),
            Source::Remote(r) => r.consistency(old, new),
        }
    }

    /// For `verify`: what the last checkpoint seen was, as a sentence.
    pub fn seen(&self) -> Option<String> {
        match self {
            Source::Local(_) => None,
            Source::Remote(r) => r.seen().map(|cp| {
                format!(
                    "the latest checkpoint seen of {} (size {}) is kept for the next check",
                    cp.checkpoint.origin, cp.checkpoint.size
                )
            }),
        }
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
