//! The ledger service as a source of answers: AuditService calls on a
//! small Tokio runtime, each answer checked here before it is used (unless
//! `--no-verify`):
//!
//! - every checkpoint's signature, with the trusted key ([`Trust`]), and its
//!   consistency with the last checkpoint this computer saw;
//! - every entry shown, by an inclusion proof in that checkpoint computed
//!   from the leaf bytes as received (the service's own hashes are never
//!   used);
//! - proofs handed out (`audit proof`) before they are written.

use anyhow::{Context as _, Result, anyhow, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use openmodel_ledger::checkpoint::{Checkpoint, SignedCheckpoint};
use openmodel_ledger::entry::{EntryBody, KeyEvent};
use openmodel_ledger::hash::Hash;
use openmodel_ledger::note::Verifier;
use openmodel_ledger::proof_file::TlogProof;
use openmodel_ledger::query::{Page, Query};
use openmodel_ledger::service::client::{
    AuditClient, Credentials, connect_expecting, stored_entry,
};
use openmodel_ledger::store::StoredEntry;
use openmodel_ledger::tree::verify_inclusion;
use openmodel_proto::audit::{
    EntryFilter, GetCheckpointRequest, GetConsistencyProofRequest, GetInclusionProofRequest,
    ListEntriesRequest,
};
use tokio::runtime::Runtime;
use tonic::{Code, Status};

use crate::cli::ServerArgs;
use crate::kubeconfig::{self, Token};
use crate::trust::{Store, Trust};

/// Inclusion proofs asked for at once.
const PROOFS_IN_FLIGHT: usize = 16;

/// A connected ledger service.
pub struct Remote {
    runtime: Runtime,
    client: AuditClient,
    endpoint: String,
    /// Why no token was sent, if none was.
    no_token: Option<String>,
    /// `None` with `--no-verify`.
    trust: Option<Trust>,
}

/// A checkpoint note's body, without checking its signature (`--no-verify`).
fn unverified(note: &str) -> Result<SignedCheckpoint> {
    let (text, _) = note
        .split_once("\n\n")
        .context("the service sent a checkpoint that is no signed note")?;
    Ok(SignedCheckpoint {
        checkpoint: Checkpoint::parse(&format!("{text}\n"))?,
        note: note.to_owned(),
    })
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

impl Remote {
    /// Connects to `args.server` and establishes trust in its log: `key`
    /// or the pinned key, else the key in the log's first entry (pinned on
    /// first use); the service's checkpoint is checked at once.
    pub fn connect(args: &ServerArgs, server: &str, key: Option<Verifier>) -> Result<Remote> {
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the network runtime")?;
        let client = runtime.block_on(connect_expecting(
            server,
            &ca,
            credentials,
            args.tls_server_name.as_deref(),
        ))?;
        let mut remote = Remote {
            runtime,
            client,
            endpoint: server.to_owned(),
            no_token,
            trust: None,
        };
        if args.no_verify {
            eprintln!(
                "WARNING: --no-verify: answers from {server} are not checked against the log's \
                 key; they prove nothing"
            );
            return Ok(remote);
        }
        let note = remote.call(
            remote
                .client
                .clone()
                .get_checkpoint(GetCheckpointRequest {}),
        )?;
        let origin = unverified(&note.checkpoint)?.checkpoint.origin;
        let trust = Trust::establish(Store::for_user()?, &origin, key, || {
            remote.learn_key(&origin)
        })?;
        let checkpoint = trust.open(&note.checkpoint).with_context(|| {
            format!(
                "the key trusted for {origin} ({}) did not sign the checkpoint {server} sent: \
                 the log was re-keyed, or it is not the log you know",
                trust.key()
            )
        })?;
        remote.trust = Some(trust);
        remote.accept(&checkpoint)?;
        Ok(remote)
    }

    /// Where answers come from, for messages.
    pub fn describe(&self) -> String {
        format!("the ledger service at {}", self.endpoint)
    }

    /// The trusted key (`None` with `--no-verify`).
    pub fn verifier(&self) -> Option<&Verifier> {
        self.trust.as_ref().map(Trust::key)
    }

    /// Whether answers are checked.
    pub fn verifies(&self) -> bool {
        self.trust.is_some()
    }

    /// Where the last checkpoint seen is kept, and that checkpoint.
    pub fn seen(&self) -> Option<&SignedCheckpoint> {
        self.trust.as_ref().and_then(Trust::seen)
    }

    /// Runs one call, turning a refusal into a message that says what to do.
    fn call<T>(&self, call: impl Future<Output = Result<tonic::Response<T>, Status>>) -> Result<T> {
        self.runtime
            .block_on(call)
            .map(tonic::Response::into_inner)
            .map_err(|status| self.refused(&status))
    }

    fn refused(&self, status: &Status) -> anyhow::Error {
        let code = code_name(status.code());
        let what = format!("{code} from {}: {}", self.endpoint, status.message());
        match status.code() {
            Code::Unauthenticated => match &self.no_token {
                Some(why) => anyhow!(
                    "{what}\nNo bearer token was sent: {why}. Pass --token \"$(kubectl create \
                     token <service-account> -n <namespace>)\", --token-file FILE or \
                     OPENMODEL_TOKEN, or use a kubeconfig context whose user has a token."
                ),
                None => anyhow!(
                    "{what}\nThe token was refused: it may have expired or be for another \
                     cluster; get a new one (kubectl create token <service-account> -n <namespace>)."
                ),
            },
            _ => anyhow!("{what}"),
        }
    }

    /// Reads the log's key from its first entry (`ledger.key`, `created`),
    /// proven included in a checkpoint that key signed.
    fn learn_key(&self, origin: &str) -> Result<Verifier> {
        let request = GetInclusionProofRequest {
            index: 0,
            tree_size: 0,
        };
        let answer = self
            .call(self.client.clone().get_inclusion_proof(request))
            .context(
                "cannot read the log's key from its first entry; pass --key (or set \
                 OPENMODEL_LEDGER_KEY) with the verifier key the log's operator publishes",
            )?;
        let proof = TlogProof::parse(&answer.tlog_proof)?;
        let entry = StoredEntry::from_leaf(0, proof.extra.clone().unwrap_or_default())?;
        let key = match &entry.entry.body {
            EntryBody::LedgerKey(k) if k.event == KeyEvent::Created => k.key.parse::<Verifier>()?,
            _ => bail!(openmodel_ledger::Error::BadSignature(format!(
                "the first entry of {origin} is a {} entry, not the ledger.key entry every log \
                 starts with",
                entry.entry.kind()
            ))),
        };
        proof.verify(&key, None)?;
        Ok(key)
    }

    /// Checks a checkpoint note the service sent.
    fn open(&self, note: &str) -> Result<SignedCheckpoint> {
        match &self.trust {
            Some(trust) => trust.open(note),
            None => unverified(note),
        }
    }

    /// Proves `checkpoint` consistent with the last one seen and keeps it.
    fn accept(&mut self, checkpoint: &SignedCheckpoint) -> Result<()> {
        let Some(mut trust) = self.trust.take() else {
            return Ok(());
        };
        let source = self.describe();
        let result = trust.accept(&source, checkpoint, |old, new| {
            let request = GetConsistencyProofRequest {
                old_size: old,
                new_size: new,
            };
            match self
                .runtime
                .block_on(self.client.clone().get_consistency_proof(request))
            {
                Ok(answer) => hashes(answer.into_inner().hashes).map(Some),
                Err(s) if matches!(s.code(), Code::NotFound | Code::OutOfRange) => Ok(None),
                Err(s) => Err(self.refused(&s)),
            }
        });
        self.trust = Some(trust);
        result
    }

    /// The latest checkpoint, checked and accepted.
    pub fn checkpoint(&mut self) -> Result<SignedCheckpoint> {
        let answer = self.call(self.client.clone().get_checkpoint(GetCheckpointRequest {}))?;
        let checkpoint = self.open(&answer.checkpoint)?;
        self.accept(&checkpoint)?;
        Ok(checkpoint)
    }

    /// One page of `query`; with `prove_entries`, every entry in it is
    /// proven included in the page's checkpoint.
    pub fn query(&mut self, query: &Query, prove_entries: bool) -> Result<Page> {
        let text = |s: &Option<String>| s.clone().unwrap_or_default();
        let (namespace, name) = query.object.clone().unwrap_or_default();
        let request = ListEntriesRequest {
            filter: Some(EntryFilter {
                namespace,
                name: name.unwrap_or_default(),
                kind: text(&query.kind),
                since: query.since.map(|t| t.to_string()).unwrap_or_default(),
                until: query.until.map(|t| t.to_string()).unwrap_or_default(),
                digest: text(&query.digest),
                dataset: text(&query.dataset),
                actor: text(&query.actor),
            }),
            start: query.start,
            limit: u32::try_from(query.limit).unwrap_or(u32::MAX),
        };
        let answer = self.call(self.client.clone().list_entries(request))?;
        let checkpoint = self.open(&answer.checkpoint)?;
        self.accept(&checkpoint)?;
        let entries = answer
            .entries
            .into_iter()
            .map(stored_entry)
            .collect::<openmodel_ledger::Result<Vec<_>>>()?;
        if prove_entries && self.verifies() {
            self.prove_included(&entries, &checkpoint.checkpoint)?;
        }
        Ok(Page {
            entries,
            checkpoint,
            scanned: answer.scanned_start..answer.scanned_end,
            next: answer.next,
        })
    }

    /// Proves each of `entries` included in `checkpoint`'s tree, hashing
    /// the leaf bytes as received.
    fn prove_included(&self, entries: &[StoredEntry], checkpoint: &Checkpoint) -> Result<()> {
        let (size, root) = (checkpoint.size, checkpoint.root);
        let checks = entries.iter().map(|entry| {
            let mut client = self.client.clone();
            let (index, leaf) = (entry.index, entry.leaf_hash());
            async move {
                let request = GetInclusionProofRequest {
                    index,
                    tree_size: size,
                };
                let answer = client
                    .get_inclusion_proof(request)
                    .await
                    .map_err(|s| self.refused(&s))?
                    .into_inner();
                verify_inclusion(index, size, &leaf.0, &hashes(answer.hashes)?, &root.0)
                    .with_context(|| {
                        format!("entry {index} as served is not in the tree of size {size} the service signed")
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

    /// A tlog-proof of entry `index` in the latest checkpoint, checked, and
    /// that checkpoint.
    pub fn prove(&mut self, index: u64) -> Result<(TlogProof, SignedCheckpoint)> {
        let request = GetInclusionProofRequest {
            index,
            tree_size: 0,
        };
        let answer = self.call(self.client.clone().get_inclusion_proof(request))?;
        let proof = TlogProof::parse(&answer.tlog_proof)?;
        if proof.index != index || proof.extra.is_none() {
            bail!(openmodel_ledger::Error::ProofFailed(format!(
                "asked for a proof of entry {index} with the entry in it, the service sent a \
                 proof of entry {} {} it",
                proof.index,
                if proof.extra.is_some() {
                    "with"
                } else {
                    "without"
                }
            )));
        }
        let checkpoint = match &self.trust {
            Some(trust) => proof.verify(trust.key(), None)?,
            None => unverified(&proof.checkpoint)?,
        };
        self.accept(&checkpoint)?;
        Ok((proof, checkpoint))
    }

    /// A consistency proof between two signed tree sizes (not checked
    /// here: the caller holds both roots).
    pub fn consistency(&mut self, old: u64, new: u64) -> Result<Vec<Hash>> {
        let request = GetConsistencyProofRequest {
            old_size: old,
            new_size: new,
        };
        hashes(
            self.call(self.client.clone().get_consistency_proof(request))?
                .hashes,
        )
    }
}

/// Proof hashes as received: 32 bytes each.
fn hashes(raw: Vec<Vec<u8>>) -> Result<Vec<Hash>> {
    raw.iter()
        .map(|h| {
            Hash::from_slice(h).ok_or_else(|| {
                anyhow!(openmodel_ledger::Error::InvalidProof(format!(
                    "the service sent a proof hash of {} bytes; hashes are 32",
                    h.len()
                )))
            })
        })
        .collect()
}
