//! Scale benchmark on a simulated cluster: the real control plane (etcd,
//! kube-apiserver), kube-controller-manager and kube-scheduler, kwok playing
//! the kubelet of M fake GPU nodes, and the release `openmodel-operator`
//! binary with its embedded file ledger. N OpenModels (one GPU each) are
//! applied at once; the bench measures the time until every one has
//! condition `Ready=True`, with the milestones on the way (Deployments
//! created, pods bound, pods ready, Deployments available), the operator's
//! CPU time and peak RSS, every process's CPU time, the ledger entries
//! written and the time to verify the ledger afterwards.
//!
//! kwok's pod stage is replaced by one that also reports what the `fetch`
//! init container of a real pod reports: exit 0, reason `Completed` and the
//! digest it verified as its termination message (the value of its own
//! `--expect-digest` argument, which is what `openmodel-server fetch` writes
//! on success). Nothing runs in the pods: the nodes and pods are simulated.
//!
//! `cargo bench -p openmodel-operator --bench scale [-- --models N --nodes M]`
//!
//! Options (defaults in brackets): `--models N` [1000], `--replicas R` [1],
//! `--gpus-per-node G` [8], `--pods-per-node P` [110], `--nodes M` [enough
//! for every pod's GPU and at least 100], `--timeout S` seconds to wait for
//! Ready [1800], `--settle S` seconds of idle cluster measured before the
//! burst [10], `--logs DIR` to keep every component's log. Needs
//! `scripts/build-control-plane.sh` and `scripts/fetch-kwok.sh`. Goals from
//! the operator issue: 1,000 models converged ≤ 60 s, RSS ≤ 100 MiB.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt as _};
use openmodel_ledger::Ledger;
use openmodel_ledger::store::OpenCheck;
use openmodel_operator::crd::OpenModel;
use openmodel_tests::cluster_components::{
    ClusterComponent, cpu_time, machine_busy_time, peak_rss_mib,
};
use openmodel_tests::operator::{CRD_PATH, create_burst, example, http_get};
use openmodel_tests::operator_process::OperatorProcess;
use openmodel_tests::{ControlPlane, create_namespace, install_crds};
use serde_json::json;

/// Creates in flight at once (models and nodes).
const CONCURRENCY: usize = 16;

/// kwok's stages for pods: its `pod-ready` stage (from kwok's "fast" pod
/// stages) with the termination message of the `fetch` init container
/// added, and its `pod-delete` stage unchanged. Node stages are kwok's
/// defaults.
const KWOK_STAGES: &str = r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.podIP'
      operator: 'DoesNotExist'
  next:
    statusTemplate: |
      {{ $now := Now }}

      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: ContainersReady
      {{ range .spec.readinessGates }}
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: {{ .conditionType | Quote }}
      {{ end }}

      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        started: true
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}

      initContainerStatuses:
      {{ range .spec.initContainers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        {{ if eq .restartPolicy "Always" }}
        started: true
        state:
          running:
            startedAt: {{ $now | Quote }}
        {{ else }}
        state:
          terminated:
            exitCode: 0
            finishedAt: {{ $now | Quote }}
            reason: Completed
            startedAt: {{ $now | Quote }}
            {{ $next := false }}
            {{ range .args }}{{ if $next }}message: {{ . | Quote }}{{ end }}{{ $next = eq . "--expect-digest" }}{{ end }}
        {{ end }}
      {{ end }}

      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  next:
    finalizers:
      empty: true
    delete: true
"#;

/// The command line.
struct Options {
    models: usize,
    replicas: i32,
    gpus_per_node: usize,
    pods_per_node: usize,
    nodes: usize,
    timeout: Duration,
    settle: Duration,
    logs: Option<PathBuf>,
}

impl Options {
    fn parse() -> Result<Options> {
        let args: Vec<String> = std::env::args().collect();
        let value = |flag: &str| -> Result<Option<&str>> {
            match args.iter().position(|a| a == flag) {
                Some(i) => Ok(Some(
                    args.get(i + 1)
                        .with_context(|| format!("{flag} needs a value"))?,
                )),
                None => Ok(None),
            }
        };
        let number = |flag: &str, default: usize| -> Result<usize> {
            value(flag)?.map_or(Ok(default), |v| {
                v.parse().with_context(|| format!("{flag} {v}"))
            })
        };
        let models = number("--models", 1000)?;
        let replicas = number("--replicas", 1)?;
        let gpus_per_node = number("--gpus-per-node", 8)?.max(1);
        let pods_per_node = number("--pods-per-node", 110)?.max(1);
        let pods = models * replicas;
        let needed = pods
            .div_ceil(gpus_per_node)
            .max(pods.div_ceil(pods_per_node));
        Ok(Options {
            models,
            replicas: i32::try_from(replicas)?,
            gpus_per_node,
            pods_per_node,
            nodes: number("--nodes", needed.max(100))?,
            timeout: Duration::from_secs(number("--timeout", 1800)? as u64),
            settle: Duration::from_secs(number("--settle", 10)? as u64),
            logs: value("--logs")?.map(PathBuf::from),
        })
    }
}

/// When each object of a kind first met a condition, by name.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Watches every object of `api` and records in the returned map when
/// each first satisfies `done`.
fn record<K>(
    api: Api<K>,
    done: impl Fn(&K) -> bool + Send + 'static,
) -> (Seen, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let seen: Seen = Arc::default();
    let recorded = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            if let Ok(object) = event
                && done(&object)
            {
                recorded
                    .lock()
                    .unwrap()
                    .entry(object.name_any())
                    .or_insert_with(Instant::now);
            }
        }
    });
    (seen, task)
}

/// An error with the end of its log if a component has exited.
fn check_all(components: &mut [ClusterComponent]) -> Result<()> {
    for component in components {
        component.check_running()?;
    }
    Ok(())
}

/// Whether a list of conditions holds `type_ = True` (as `(type, status)`
/// pairs).
fn is_true<'a>(mut conditions: impl Iterator<Item = (&'a str, &'a str)>, type_: &str) -> bool {
    conditions.any(|(t, s)| t == type_ && s == "True")
}

/// A fake GPU node that kwok manages: its capacity (8 CPUs and 64 GiB per
/// GPU, as an 8-GPU server with 64 cores and 512 GiB), pod CIDR, and the
/// `nvidia.com/gpu` taint GPU node pools carry.
fn fake_node(index: usize, options: &Options) -> Result<Node> {
    let name = format!("kwok-gpu-{index:05}");
    let resources = json!({
        "cpu": (8 * options.gpus_per_node).to_string(),
        "memory": format!("{}Gi", 64 * options.gpus_per_node),
        "ephemeral-storage": "1Ti",
        "nvidia.com/gpu": options.gpus_per_node.to_string(),
        "pods": options.pods_per_node.to_string(),
    });
    // 100.64.0.0/10: 16,384 node /24s outside the service range.
    let cidr = format!("100.{}.{}.0/24", 64 + index / 256, index % 256);
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.present": "true",
            },
        },
        "spec": {
            "podCIDR": cidr,
            "podCIDRs": [cidr],
            "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        },
        "status": {"capacity": resources, "allocatable": resources},
    }))?)
}

/// Polls until `progress()` counts `want`, printing its detail every
/// 10 s; `false` after `patience`, an error as soon as `alive` fails.
async fn wait_until(
    what: &str,
    want: usize,
    patience: Duration,
    mut progress: impl FnMut() -> (usize, String),
    mut alive: impl FnMut() -> Result<()>,
) -> Result<bool> {
    let started = Instant::now();
    let mut report = started;
    loop {
        let (have, detail) = progress();
        if have >= want {
            return Ok(true);
        }
        alive()?;
        if started.elapsed() > patience {
            eprintln!("  {what}: only {have} of {want} after {patience:?} {detail}");
            return Ok(false);
        }
        if report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {what}: {have} of {want} after {:.0} s {detail}",
                started.elapsed().as_secs_f64()
            );
            report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// kube-apiserver's `apiserver_request_total` from its `/metrics`, summed
/// by resource (with subresource) and verb.
async fn request_counts(client: &Client) -> Result<HashMap<(String, String), f64>> {
    let request = axum::http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut counts = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let (resource, sub) = (label("resource"), label("subresource"));
        let resource = if sub.is_empty() {
            resource
        } else {
            format!("{resource}/{sub}")
        };
        *counts.entry((resource, label("verb"))).or_default() +=
            value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(counts)
}

/// The latest of the recorded instants, as time since `start`.
fn last(seen: &Seen, start: Instant) -> Duration {
    seen.lock()
        .unwrap()
        .values()
        .max()
        .map(|t| t.saturating_duration_since(start))
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let options = Options::parse()?;
    ensure!(options.models > 0, "--models must be 1 or more");
    let pod_count = options.models * options.replicas as usize;
    ensure!(
        options.nodes * options.gpus_per_node >= pod_count,
        "{} nodes of {} GPUs cannot hold {pod_count} one-GPU pods",
        options.nodes,
        options.gpus_per_node
    );
    eprintln!(
        "scale: {} models × {} replicas on {} kwok nodes ({} GPUs, {} pods each)",
        options.models,
        options.replicas,
        options.nodes,
        options.gpus_per_node,
        options.pods_per_node
    );

    let plane = ControlPlane::start().await?;
    let client = plane.client()?;
    let mut components = vec![
        ClusterComponent::controller_manager(&plane)?,
        ClusterComponent::scheduler(&plane)?,
    ];
    let kwok_config = plane.data_dir().join("kwok.yaml");
    std::fs::write(&kwok_config, KWOK_STAGES)?;
    components.push(ClusterComponent::kwok(&plane, &kwok_config)?);

    // The fake nodes, made Ready by kwok.
    let setup = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    let (ready_nodes, node_watch) = record(nodes.clone(), |node: &Node| {
        let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
        is_true(
            conditions
                .into_iter()
                .flatten()
                .map(|c| (c.type_.as_str(), c.status.as_str())),
            "Ready",
        )
    });
    futures::stream::iter(0..options.nodes)
        .map(|i| {
            let nodes = nodes.clone();
            let node = fake_node(i, &options);
            async move {
                nodes
                    .create(&PostParams::default(), &node?)
                    .await
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    wait_until(
        "kwok nodes Ready",
        options.nodes,
        Duration::from_secs(600),
        || (ready_nodes.lock().unwrap().len(), String::new()),
        || check_all(&mut components),
    )
    .await?
    .then_some(())
    .context("kwok did not make every node Ready in 10 minutes")?;
    node_watch.abort();

    // The namespace, with the `default` ServiceAccount the controller
    // manager makes.
    install_crds(&client, CRD_PATH).await?;
    let ns = create_namespace(&client, "scale").await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    while accounts.get_opt("default").await?.is_none() {
        check_all(&mut components)?;
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "kube-controller-manager made no default ServiceAccount in {ns}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "scale: cluster ready in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let mut operator = OperatorProcess::start_leading(
        Path::new(env!("CARGO_BIN_EXE_openmodel-operator")),
        &plane,
        &ns,
        dir.path(),
        "bench",
    )
    .await?;

    // Milestones, each recorded the first time a watch sees it.
    let replicas = options.replicas;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let models: Api<OpenModel> = Api::namespaced(client.clone(), &ns);
    let (deployed, w1) = record(deployments.clone(), |_| true);
    let (bound, w2) = record(pods.clone(), |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some()
    });
    let (pods_ready, w3) = record(pods, |pod: &Pod| {
        let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
        is_true(
            conditions
                .into_iter()
                .flatten()
                .map(|c| (c.type_.as_str(), c.status.as_str())),
            "Ready",
        )
    });
    let (available, w4) = record(deployments, move |d: &Deployment| {
        d.status.as_ref().and_then(|s| s.available_replicas) >= Some(replicas)
    });
    let (ready, w5) = record(models.clone(), |model: &OpenModel| {
        let conditions = model.status.as_ref().map(|s| &s.conditions);
        is_true(
            conditions
                .into_iter()
                .flatten()
                .map(|c| (c.type_.as_str(), c.status.as_str())),
            "Ready",
        )
    });

    let mut processes: Vec<(&str, u32)> = plane
        .process_ids()
        .into_iter()
        .zip(["etcd", "kube-apiserver"])
        .map(|(pid, name)| (name, pid))
        .collect();
    processes.extend(components.iter().map(|c| (c.name(), c.pid())));
    processes.push(("openmodel-operator", operator.pid()));
    processes.push(("this bench (load, watches)", std::process::id()));
    let cpu_now = || -> Vec<Duration> {
        processes
            .iter()
            .map(|(_, pid)| cpu_time(*pid).unwrap_or_default())
            .collect()
    };
    // The idle cluster first (start-up work done, kwok's node heartbeats
    // going on), for the baseline every process costs.
    let idle_start = cpu_now();
    tokio::time::sleep(options.settle).await;
    let cpu_before = cpu_now();
    let machine_before = machine_busy_time();
    let requests_before = request_counts(&client).await?;
    let idle: Vec<f64> = cpu_before
        .iter()
        .zip(&idle_start)
        .map(|(after, before)| (*after - *before).as_secs_f64() / options.settle.as_secs_f64())
        .collect();

    // The burst: every model at once, CONCURRENCY creates in flight.
    let mut template = example(&ns)?;
    template.spec.runtime.replicas = options.replicas;
    template.spec.runtime.resources.gpu = 1;
    let start = Instant::now();
    let created: HashMap<String, Instant> =
        create_burst(&models, &template, options.models, CONCURRENCY)
            .await?
            .into_iter()
            .collect();
    let all_created = start.elapsed();

    let count = |seen: &Seen| seen.lock().unwrap().len();
    let complete = wait_until(
        "OpenModels Ready",
        options.models,
        options.timeout,
        || {
            let detail = format!(
                "(Deployments {}, pods bound {}, pods ready {}, Deployments available {})",
                count(&deployed),
                count(&bound),
                count(&pods_ready),
                count(&available),
            );
            (count(&ready), detail)
        },
        || {
            check_all(&mut components)?;
            ensure!(
                openmodel_tests::is_running(operator.pid()),
                "the operator exited"
            );
            Ok(())
        },
    )
    .await?;
    let converged = start.elapsed();
    let requests_after = request_counts(&client).await?;
    for watch in [w1, w2, w3, w4, w5] {
        watch.abort();
    }
    let cpu_used: Vec<Duration> = cpu_now()
        .iter()
        .zip(&cpu_before)
        .map(|(now, before)| now.saturating_sub(*before))
        .collect();
    let rss: Vec<Option<f64>> = processes
        .iter()
        .map(|(_, pid)| peak_rss_mib(*pid))
        .collect();
    let ready_count = count(&ready);
    let mut latencies: Vec<Duration> = {
        let ready = ready.lock().unwrap();
        created
            .iter()
            .filter_map(|(name, at)| Some(ready.get(name)?.saturating_duration_since(*at)))
            .collect()
    };
    ensure!(!latencies.is_empty(), "no OpenModel became Ready");
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];

    let addr = operator.http_addr();
    let metrics = tokio::task::spawn_blocking(move || http_get(addr, "/metrics")).await??;
    let reconciles = metrics
        .lines()
        .find_map(|l| l.strip_prefix("openmodel_operator_reconciles_total "))
        .unwrap_or("?")
        .to_string();
    let operator_cpu = operator.cpu_time().context("the operator exited")?;
    let operator_rss = operator.peak_rss_mib().context("the operator exited")?;
    let warnings = operator
        .json_logs()?
        .iter()
        .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
        .count();
    let status = operator.terminate(Duration::from_secs(60)).await?;
    ensure!(status.success(), "the operator ended with {status}");

    // The ledger, after the operator let go of it.
    let ledger = Ledger::open_read_only(operator.ledger_path(), OpenCheck::Quick)?;
    let entries = ledger.checkpoint()?.checkpoint.size;
    let verify_start = Instant::now();
    ledger.verify_stored()?;
    let verified_in = verify_start.elapsed();

    if let Some(logs) = &options.logs {
        std::fs::create_dir_all(logs)?;
        for entry in std::fs::read_dir(plane.data_dir())?.chain(std::fs::read_dir(dir.path())?) {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                std::fs::copy(&path, logs.join(path.file_name().unwrap_or_default()))?;
            }
        }
        eprintln!("scale: logs copied to {}", logs.display());
    }

    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    // Per-model figures are per model that became Ready (all of them
    // unless the run timed out).
    let n = ready_count as f64;
    println!(
        "operator on a kwok cluster: {} OpenModels × {} replica(s), 1 GPU each, applied at once ({CONCURRENCY} creates in flight), {} simulated nodes of {} GPUs",
        options.models, options.replicas, options.nodes, options.gpus_per_node
    );
    println!(
        "{:<52} {:>14} {:>22}",
        "", "measured", "goal (1,000 models)"
    );
    let row = |what: &str, value: String, goal: &str| println!("{what:<52} {value:>14} {goal:>22}");
    row("all creates accepted", secs(all_created), "");
    // When the last object reached a milestone (how many did, when the run
    // timed out).
    let milestone = |what: &str, seen: &Seen| {
        let label = if complete {
            format!("all {what}")
        } else {
            format!("{what}: {} of {}", count(seen), options.models)
        };
        row(&label, secs(last(seen, start)), "");
    };
    milestone("Deployments created (operator)", &deployed);
    milestone("pods bound (scheduler)", &bound);
    milestone("pods Ready (kwok)", &pods_ready);
    milestone("Deployments available (controller manager)", &available);
    if complete {
        row(
            "all OpenModels Ready=True (converged)",
            secs(converged),
            "≤ 60 s",
        );
    } else {
        row(
            &format!("NOT converged: Ready after {}", secs(converged)),
            format!("{ready_count} of {}", options.models),
            "≤ 60 s",
        );
    }
    row("create → Ready p50", secs(percentile(0.5)), "");
    row("create → Ready p99", secs(percentile(0.99)), "");
    row(
        "wall time per Ready model",
        format!("{:.1} ms", converged.as_secs_f64() * 1e3 / n),
        "≤ 60 ms",
    );
    row(
        "operator peak RSS",
        format!("{operator_rss:.0} MiB"),
        "≤ 100 MiB",
    );
    row("operator CPU time, whole run", secs(operator_cpu), "");
    row(
        "operator CPU per Ready model (burst)",
        format!(
            "{:.2} ms",
            processes
                .iter()
                .zip(&cpu_used)
                .find(|((name, _), _)| *name == "openmodel-operator")
                .map_or(0.0, |(_, used)| used.as_secs_f64())
                * 1e3
                / n
        ),
        "",
    );
    row("operator reconciles, whole run", reconciles, "");
    row("operator WARN/ERROR log lines", warnings.to_string(), "");
    row("ledger entries written", entries.to_string(), "");
    row(
        "ledger full verification",
        format!("{:.0} ms", verified_in.as_secs_f64() * 1e3),
        "",
    );
    println!();
    println!(
        "CPU time from the first create to the last Ready ({:.1} s wall, {} cores):",
        converged.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<30} {:>10} {:>8} {:>12} {:>12}",
        "process", "CPU", "share", "idle CPU", "peak RSS"
    );
    let total: f64 = cpu_used.iter().map(Duration::as_secs_f64).sum();
    for ((((name, _), used), idle), rss) in processes.iter().zip(&cpu_used).zip(&idle).zip(&rss) {
        println!(
            "{name:<30} {:>10} {:>7.0}% {:>11.0}% {:>12}",
            secs(*used),
            used.as_secs_f64() * 100.0 / total.max(f64::EPSILON),
            idle * 100.0,
            rss.map_or("–".into(), |r| format!("{r:.0} MiB"))
        );
    }
    println!("{:<30} {:>10}", "total", format!("{total:.1} s"));
    if let (Some(before), Some(after)) = (machine_before, machine_busy_time()) {
        println!(
            "{:<30} {:>10}   (the machine's busy time minus the above)",
            "other processes on the machine",
            secs((after - before).saturating_sub(Duration::from_secs_f64(total)))
        );
    }
    println!(
        "(idle CPU: share of one core over {:.0} s of the idle cluster before the burst)",
        options.settle.as_secs_f64()
    );
    let mut requests: Vec<((String, String), f64)> = requests_after
        .into_iter()
        .map(|(key, after)| {
            let before = requests_before.get(&key).copied().unwrap_or(0.0);
            (key, after - before)
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    requests.sort_by(|a, b| b.1.total_cmp(&a.1));
    let all: f64 = requests.iter().map(|(_, n)| n).sum();
    println!();
    println!(
        "kube-apiserver requests from the first create to the end: {all:.0} ({:.1} per Ready model, {:.0}/s); the most frequent:",
        all / n,
        all / converged.as_secs_f64()
    );
    println!(
        "{:<36} {:<8} {:>9} {:>10}",
        "resource", "verb", "requests", "per model"
    );
    for ((resource, verb), count) in requests.iter().take(16) {
        println!("{resource:<36} {verb:<8} {count:>9.0} {:>10.2}", count / n);
    }
    Ok(())
}
