//! [`AuditLog`] over a ledger file opened in this process.

use std::sync::Arc;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use openmodel_ledger::checkpoint::SignedCheckpoint;
use openmodel_ledger::entry::Entry;
use openmodel_ledger::hash::Hash;
use openmodel_ledger::proof_file::TlogProof;
use openmodel_ledger::query::{Page, Query};
use openmodel_ledger::{Error as LedgerError, Ledger};

use super::{Appended, AuditLog};
use crate::{Error, Result};

/// A ledger file: appends go to its writer thread (group commit), reads to
/// SQLite on the blocking pool.
#[derive(Clone)]
pub struct LocalLog(Arc<Ledger>);

impl LocalLog {
    /// Serves `ledger`.
    pub fn new(ledger: Arc<Ledger>) -> LocalLog {
        LocalLog(ledger)
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.0
    }

    /// Runs a blocking read of the ledger off the async workers.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Ledger) -> openmodel_ledger::Result<T> + Send + 'static,
    ) -> Result<T> {
        read_blocking(&self.0, read).await
    }
}

/// Runs `read` on `ledger` on the blocking pool (SQLite blocks), never on
/// the async workers. The service's reads go through here too.
pub(crate) async fn read_blocking<T: Send + 'static>(
    ledger: &Arc<Ledger>,
    read: impl FnOnce(&Ledger) -> openmodel_ledger::Result<T> + Send + 'static,
) -> Result<T> {
    let ledger = Arc::clone(ledger);
    tokio::task::spawn_blocking(move || read(&ledger))
        .await
        .map_err(|e| {
            Error::Ledger(LedgerError::Unusable(format!(
                "a ledger read did not finish: {e}"
            )))
        })?
        .map_err(Error::Ledger)
}

impl AuditLog for LocalLog {
    fn describe(&self) -> String {
        format!("the ledger file {}", self.0.path().display())
    }

    fn append(&self, entry: Entry) -> BoxFuture<'_, Result<Appended>> {
        async move {
            match self.0.append_async(entry).await {
                Ok(receipt) => Ok(Appended::from_receipt(
                    receipt.index,
                    receipt.tree_size,
                    receipt.existing,
                )),
                Err(LedgerError::DedupeConflict { index, .. }) => {
                    let tree_size = self.read(|l| l.checkpoint()).await?.checkpoint.size;
                    Ok(Appended::Conflict { index, tree_size })
                }
                Err(e) => Err(e.into()),
            }
        }
        .boxed()
    }

    fn query(&self, query: Query) -> BoxFuture<'_, Result<Page>> {
        self.read(move |l| l.query(&query)).boxed()
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<SignedCheckpoint>> {
        self.read(|l| l.checkpoint()).boxed()
    }

    fn prove(&self, index: u64, tree_size: Option<u64>) -> BoxFuture<'_, Result<TlogProof>> {
        self.read(move |l| l.prove_at(index, tree_size)).boxed()
    }

    fn consistency(&self, old_size: u64, new_size: u64) -> BoxFuture<'_, Result<Vec<Hash>>> {
        self.read(move |l| l.consistency_proof(old_size, new_size))
            .boxed()
    }
}
