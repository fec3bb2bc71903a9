//! The whole operator: HTTP endpoints, leader election, and — while this
//! instance leads — the ledger and the controller.
//!
//! The ledger is opened only after the Lease is won and dropped (all queued
//! appends committed) when leading stops, so there is one writer at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::Future;
use futures::future::FutureExt;
use kube::Client;
use tokio::sync::watch;

use crate::Error;
use crate::controller::{self, Context};
use crate::journal::{Journal, JournalConfig, LedgerLocation};
use crate::leader::{Elector, LeaseConfig};
use crate::metrics::Metrics;
use crate::resources::gpu::GpuDefaults;
use crate::webhook::{Webhook, WebhookConfig};
use openmodel_runtime::endpoints::Endpoints;
use openmodel_runtime::shutdown;

/// Everything the operator is configured with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Only reconcile models in this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// The ledger.
    pub journal: JournalConfig,
    /// The leader Lease.
    pub lease: LeaseConfig,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (none when `None`).
    pub http_listen: Option<SocketAddr>,
    /// Most models reconciled at once (0: no limit). A bound keeps the API
    /// server, the ledger and the operator's memory even under a burst.
    pub concurrency: u16,
    /// The admission webhook, served while this instance leads (it writes
    /// the ledger); none when `None`.
    pub webhook: Option<WebhookConfig>,
    /// What GPU pods get when their model's spec leaves it to the cluster.
    pub gpu: GpuDefaults,
}

/// Runs the operator until `shutdown` completes (then finishes the
/// reconciles in flight, commits the ledger and releases the Lease), or
/// until it loses the Lease ([`Error::LeadershipLost`]).
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // A bad key file or a missing ledger is reported now, not after the
    // Lease is won.
    config.journal.check()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // With the ledger service any instance may record admissions, so every
    // instance serves the webhook, leader or not; with a ledger file only
    // the leader writes, so only it serves the webhook (see `lead`).
    let everywhere = match (&config.webhook, &config.journal.ledger) {
        (Some(webhook), LedgerLocation::Service { .. }) => {
            let journal = Journal::open(&config.journal).await?;
            let webhook = Webhook::start(&client, journal, webhook).await?;
            Some(tokio::spawn(webhook.serve(stop_rx.clone())))
        }
        _ => None,
    };
    let leader_webhook = everywhere.is_none();
    let stopped = move || shutdown::stopped(&stop_rx);
    tokio::spawn(shutdown.then(move |()| async move {
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    }));

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let server = match config.http_listen {
        Some(listen) => {
            let endpoints = endpoints(metrics.clone(), ready.clone())
                .bind(listen)
                .await?;
            Some(tokio::spawn(endpoints.serve(stopped())))
        }
        None => None,
    };

    let mut elector = Elector::new(client.clone(), config.lease.clone());
    let reachable = |ok: bool| ready.store(ok, Ordering::Relaxed);
    let leading = tokio::select! {
        () = elector.acquire(reachable) => true,
        () = stopped() => false,
    };
    let result = if leading {
        lead(
            client,
            &config,
            leader_webhook,
            metrics,
            &mut elector,
            stopped(),
        )
        .await
    } else {
        Ok(())
    };
    if let Some(server) = server {
        server.abort();
    }
    if let Some(webhook) = everywhere
        && result.is_ok()
    {
        let _ = webhook.await;
    }
    result
}

/// Leads: opens the ledger, serves the webhook (`with_webhook`), runs the
/// controller, keeps the Lease.
async fn lead(
    client: Client,
    config: &Config,
    with_webhook: bool,
    metrics: Arc<Metrics>,
    elector: &mut Elector,
    stopped: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    tracing::info!(identity = %config.lease.identity, "leading");
    let journal = Journal::open(&config.journal).await?;
    tracing::info!(ledger = %journal.describe(), "ledger open");
    let (webhook_stop, webhook_stopping) = watch::channel(false);
    let webhook = match config.webhook.as_ref().filter(|_| with_webhook) {
        Some(webhook) => {
            let webhook = Webhook::start(&client, journal.clone(), webhook).await?;
            Some(tokio::spawn(webhook.serve(webhook_stopping)))
        }
        None => None,
    };
    let (context, writers) = Context::new(
        client,
        journal,
        metrics,
        &config.lease.identity,
        config.gpu.clone(),
    );
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let lost = async move {
        let _ = lost_rx.wait_for(|lost| *lost).await;
    };
    let stop = futures::future::select(Box::pin(stopped), Box::pin(lost)).map(|_| ());
    let controller = controller::run(
        Arc::new(context),
        writers,
        config.namespace.as_deref(),
        config.concurrency,
        stop,
    );
    tokio::pin!(controller);
    let lost = tokio::select! {
        () = &mut controller => false,
        () = elector.hold() => true,
    };
    // The webhook writes the ledger too: it stops with the controller.
    let _ = webhook_stop.send(true);
    if let Some(webhook) = webhook {
        let _ = webhook.await;
    }
    if lost {
        // Stop reconciling (and writing) before anyone else may take over.
        let _ = lost_tx.send(true);
        controller.await;
        return Err(Error::LeadershipLost);
    }
    if let Err(e) = elector.release().await {
        tracing::warn!(error = %e, "releasing the Lease failed");
    }
    Ok(())
}

/// `/metrics` from the operator's metrics; `/readyz` ready while the last
/// attempt to reach the API server (as leader or standby) succeeded.
fn endpoints(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Endpoints {
    Endpoints::new(
        move || metrics.encode(),
        move || {
            if ready.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("the API server is not reachable".into())
            }
        },
    )
}
