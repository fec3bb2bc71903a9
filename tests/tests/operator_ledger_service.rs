//! The operator writing to the ledger service (`openmodel-ledger serve`)
//! instead of a file of its own, against the real kube-apiserver: it
//! appends as its service account (TokenReview), and when the service
//! restarts while a change is being recorded, the append is retried until
//! it lands, once: no acknowledged entry lost, none duplicated; and when
//! its connection goes silent, the change is late, never lost.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use kube::api::PostParams;
use openmodel_ledger::store::StoredEntry;
use openmodel_operator::journal::LedgerLocation;
use openmodel_tests::LedgerService;
use openmodel_tests::operator::{Operator, control_plane, example, models, namespace, patch_spec};
use openmodel_tests::relay::Relay;
use serde_json::json;

/// The entries about the example model in the service's ledger (fully
/// verified on every read).
fn entries(service: &LedgerService, ns: &str) -> Result<Vec<StoredEntry>> {
    let ledger = service.read_ledger()?;
    let mut entries = Vec::new();
    for index in 0..ledger.checkpoint()?.checkpoint.size {
        let entry = ledger.entry(index)?;
        if entry
            .entry
            .object
            .as_ref()
            .is_some_and(|o| o.namespace == ns && o.name == "minilm")
        {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// Waits until the service's ledger holds `count` controller entries about
/// the model.
async fn wait_for_entries(
    service: &LedgerService,
    ns: &str,
    count: usize,
) -> Result<Vec<StoredEntry>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = entries(service, ns)?;
        if found.len() >= count {
            return Ok(found);
        }
        ensure!(
            Instant::now() < deadline,
            "{} entries after 60 s, expected {count}: {:?}",
            found.len(),
            found.iter().map(|e| e.entry.kind()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_appends_through_the_service_and_survives_its_restart() -> Result<()> {
    let control_plane = control_plane().await;
    let client = control_plane.client()?;
    let ns = namespace(&client, "via_service").await?;
    let (mut service, location) = LedgerService::for_operator(&client, &ns).await?;
    let mut operator = Operator::start_with_ledger(&client, &ns, location).await?;

    models(&client, &ns)
        .create(&PostParams::default(), &example(&ns)?)
        .await?;
    let first = wait_for_entries(&service, &ns, 3).await?;
    let kinds: Vec<_> = first.iter().map(|e| e.entry.kind()).collect();
    assert_eq!(
        kinds,
        ["spec.changed", "dataset.referenced", "dataset.referenced"]
    );

    // The service goes away; a change is made while it is down; it comes
    // back, and the operator's retried append lands once.
    let restarting = service.restart(Duration::from_secs(3));
    let changing = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        patch_spec(&client, &ns, json!({"runtime": {"replicas": 3}})).await
    };
    let (restarted, changed) = tokio::join!(restarting, changing);
    restarted?;
    changed?;
    let after = wait_for_entries(&service, &ns, 4).await?;
    ensure!(
        after.len() == 4,
        "exactly one new entry: {:?}",
        after.iter().map(|e| e.entry.kind()).collect::<Vec<_>>()
    );
    assert_eq!(after[3].entry.kind(), "spec.changed");
    let keys: HashSet<_> = after.iter().map(|e| e.entry.dedupe_key.clone()).collect();
    assert_eq!(keys.len(), after.len(), "no entry twice");

    // A restarted operator records nothing again.
    operator.restart().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(entries(&service, &ns)?.len(), 4);
    operator.stop().await?;
    service.stop().await?;
    Ok(())
}

/// A connection to the ledger service that goes silent (no FIN, no RST: the
/// service's node vanished from the network) while a change waits to be
/// recorded costs the change a deadline, never the change: the operator
/// gives up on the call, finds the connection dead, connects again and
/// records it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_connection_gone_silent_delays_a_change_but_never_strands_it() -> Result<()> {
    let control_plane = control_plane().await;
    let client = control_plane.client()?;
    let ns = namespace(&client, "silent_ledger").await?;
    let (service, location) = LedgerService::for_operator(&client, &ns).await?;
    let relay = Relay::start(service.grpc_addr()).await?;
    let LedgerLocation::Service {
        ca_file,
        token_file,
        ..
    } = location
    else {
        anyhow::bail!("the service's location is no service");
    };
    let through_relay = LedgerLocation::Service {
        endpoint: format!("https://{}", relay.addr()),
        ca_file,
        token_file,
    };
    let mut operator = Operator::start_with_ledger(&client, &ns, through_relay).await?;
    models(&client, &ns)
        .create(&PostParams::default(), &example(&ns)?)
        .await?;
    wait_for_entries(&service, &ns, 3).await?;

    let connections = relay.connections();
    relay.silence_open_connections();
    let silenced = Instant::now();
    patch_spec(&client, &ns, json!({"runtime": {"replicas": 3}})).await?;
    let after = wait_for_entries(&service, &ns, 4).await?;
    eprintln!(
        "the change was recorded {:.1} s after the connection went silent",
        silenced.elapsed().as_secs_f64()
    );
    ensure!(
        after.len() == 4 && after[3].entry.kind() == "spec.changed",
        "exactly the change: {:?}",
        after.iter().map(|e| e.entry.kind()).collect::<Vec<_>>()
    );
    ensure!(
        relay.connections() > connections,
        "the change went through a new connection"
    );
    operator.stop().await?;
    // The service's pings close the silent connection on its side too, so
    // it stops without waiting on it for good.
    service.stop().await?;
    Ok(())
}
