//! Operator benchmark against the local control plane (real etcd and
//! kube-apiserver from `scripts/build-control-plane.sh`): latency from the
//! create of an OpenModel to its Deployment existing (p50/p99), the time for
//! N models to converge (every Deployment created), and the operator's peak
//! RSS and CPU time. The operator is the release binary in its own process,
//! as in a cluster; this process is the load generator.
//!
//! `cargo bench -p openmodel-operator --bench operator [-- --models N]`
//! (50 models applied one at a time first, for the unloaded latency, then N
//! in a burst)
//! (default 1,000; goals from the issue: p99 ≤ 100 ms, 1,000 models ≤ 60 s,
//! RSS ≤ 100 MiB).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt as _;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use openmodel_operator::crd::OpenModel;
use openmodel_tests::ControlPlane;
use openmodel_tests::operator::{create_burst, example, http_get, namespace};
use openmodel_tests::operator_process::OperatorProcess;

/// Creates in flight at once in the burst.
const CONCURRENCY: usize = 16;
/// Models applied one at a time, each waited for, before the burst.
const SINGLE: usize = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = match args.iter().position(|a| a == "--models") {
        Some(i) => args
            .get(i + 1)
            .context("--models needs a number")?
            .parse()?,
        None => 1000,
    };
    let plane = ControlPlane::start().await?;
    let client = plane.client()?;
    let ns = namespace(&client, "bench").await?;
    let dir = tempfile::tempdir()?;
    let mut operator = OperatorProcess::start_leading(
        Path::new(env!("CARGO_BIN_EXE_openmodel-operator")),
        &plane,
        &ns,
        dir.path(),
        "bench",
    )
    .await?;

    // When each Deployment first appears.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let mut events = deployments
        .watch(&WatchParams::default(), "0")
        .await?
        .boxed();
    let watch_seen = Arc::clone(&seen);
    let watcher = tokio::spawn(async move {
        while let Ok(Some(event)) = events.try_next().await {
            if let WatchEvent::Added(d) = event {
                watch_seen
                    .lock()
                    .unwrap()
                    .entry(d.name_any())
                    .or_insert_with(Instant::now);
            }
        }
    });

    let models: Api<OpenModel> = Api::namespaced(client.clone(), &ns);
    let template = example(&ns)?;

    // One at a time: the latency of a single apply on an idle operator
    // (the first, unmeasured, warms the caches and connections).
    let mut single = Vec::new();
    for i in 0..=SINGLE {
        let mut model = template.clone();
        let name = format!("single{i:03}");
        model.metadata.name = Some(name.clone());
        let at = Instant::now();
        models.create(&PostParams::default(), &model).await?;
        let deadline = at + Duration::from_secs(60);
        loop {
            if let Some(t) = seen.lock().unwrap().get(&name) {
                if i > 0 {
                    single.push(t.saturating_duration_since(at));
                }
                break;
            }
            if Instant::now() > deadline {
                bail!("no Deployment for {name} after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    single.sort();

    // A burst: `count` creates, CONCURRENCY in flight.
    let start = Instant::now();
    let created = create_burst(&models, &template, count, CONCURRENCY).await?;
    let all_created = start.elapsed();

    let deadline = Instant::now() + Duration::from_secs(600);
    while seen.lock().unwrap().len() < count + SINGLE + 1 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {count} Deployments after 10 minutes",
                seen.lock().unwrap().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let converged = seen
        .values()
        .max()
        .map(|t| t.saturating_duration_since(start))
        .unwrap_or_default();
    let mut latencies: Vec<Duration> = created
        .iter()
        .map(|(name, at)| seen[name].saturating_duration_since(*at))
        .collect();
    latencies.sort();
    let addr = operator.http_addr();
    let metrics = tokio::task::spawn_blocking(move || http_get(addr, "/metrics")).await??;
    let reconciles = metrics
        .lines()
        .find_map(|l| l.strip_prefix("openmodel_operator_reconciles_total "))
        .unwrap_or("?")
        .to_string();
    let rss = operator.peak_rss_mib().context("the operator exited")?;
    let cpu = operator.cpu_time().context("the operator exited")?;
    watcher.abort();
    let status = operator.terminate(Duration::from_secs(60)).await?;
    anyhow::ensure!(status.success(), "the operator ended with {status}");

    println!(
        "operator against the local control plane: {SINGLE} OpenModels one at a time, then {count} in a burst ({CONCURRENCY} creates in flight)"
    );
    println!("{:<48} {:>14} {:>16}", "", "measured", "goal");
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let row = |what: &str, value: String, goal: &str| println!("{what:<48} {value:>14} {goal:>16}");
    row(
        "one at a time: create → Deployment p50",
        ms(percentile(&single, 0.5)),
        "",
    );
    row(
        "one at a time: create → Deployment p99",
        ms(percentile(&single, 0.99)),
        "≤ 100 ms",
    );
    row(
        "burst: create → Deployment p50",
        ms(percentile(&latencies, 0.5)),
        "",
    );
    row(
        "burst: create → Deployment p99",
        ms(percentile(&latencies, 0.99)),
        "",
    );
    row(
        "burst: all creates accepted",
        format!("{:.1} s", all_created.as_secs_f64()),
        "",
    );
    row(
        "burst: all Deployments created (converged)",
        format!("{:.1} s", converged.as_secs_f64()),
        "≤ 60 s at 1,000",
    );
    row("operator peak RSS", format!("{rss:.0} MiB"), "≤ 100 MiB");
    row("operator reconciles, whole run", reconciles, "");
    row(
        "operator CPU time, whole run",
        format!("{:.1} s", cpu.as_secs_f64()),
        "",
    );
    Ok(())
}
