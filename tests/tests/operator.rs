//! The operator against the real kube-apiserver: server-side apply of the
//! owned objects, the status it derives from pods and the Deployment (the
//! test plays the kubelet and the Deployment controller), the ledger entries
//! it writes (checked with the ledger's own verifier) and the finalizer,
//! with the operator in-process. The binary itself (JSON logs, SIGTERM,
//! leader election between two processes) is tested in
//! `operator/tests/binary.rs`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Resource;
use kube::{Client, ResourceExt};
use openmodel_ledger::entry::Entry;
use openmodel_operator::crd::{OpenModel, Policy};
use openmodel_operator::journal::{HISTORY_PAGE, Journal, JournalConfig, LedgerLocation};
use openmodel_operator::records::{spec_document, spec_entries};
use openmodel_operator::resources::WEIGHTS_ENTRY_ANNOTATION;
use openmodel_tests::audit_access::{Grant, audit_reader};
use openmodel_tests::operator::{
    Operator, control_plane, create_pod, data, example, finish_fetch, http_get, kinds,
    lease_holder, ledger_entries, metric, models, namespace, patch_spec, rollout_status, wait_for,
    wait_for_ledger,
};
use openmodel_tests::{LedgerService, service_account_user};
use serde_json::json;

const DIGEST: &str = "sha256:8a36265b0b7aa0d00dce7ed1f5db75f01433046b4518e00f63248b2d0c866cb2";

fn condition(model: &OpenModel, type_: &str) -> Option<(String, String)> {
    let c = model.status.as_ref()?.condition(type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

fn has_condition(type_: &'static str, status: &'static str) -> impl Fn(&OpenModel) -> bool {
    move |m| condition(m, type_).is_some_and(|(s, _)| s == status)
}

/// The Deployment has been changed `generation - 1` times since created.
fn generation_applied(generation: i64) -> impl Fn(&Deployment) -> bool {
    move |d| d.metadata.generation.unwrap_or(0) >= generation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_update_roll_through_server_side_apply_and_the_ledger() -> Result<()> {
    let client = control_plane().await.client()?;
    let ns = namespace(&client, "apply_and_update").await?;
    let mut operator = Operator::start(&client, &ns).await?;
    models(&client, &ns)
        .create(&PostParams::default(), &example(&ns)?)
        .await?;

    // Created: Deployment, Service, budget (2 replicas), finalizer, status.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment = wait_for(&deployments, "minilm", "the Deployment", |_| true).await?;
    let owner = &deployment.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("OpenModel", Some(true))
    );
    let managers: Vec<_> = deployment
        .managed_fields()
        .iter()
        .filter_map(|f| f.manager.clone())
        .collect();
    assert_eq!(managers, ["openmodel-operator"]);
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let fetch = &pod.init_containers.as_ref().unwrap()[0];
    let args = fetch.args.as_ref().unwrap();
    assert!(
        args.windows(2).any(|w| w == ["--expect-digest", DIGEST]),
        "{args:?}"
    );
    assert!(
        args.windows(2)
            .any(|w| w == ["--termination-log", "/dev/termination-log"])
    );
    let server = &pod.containers[0];
    assert_eq!(
        server
            .readiness_probe
            .as_ref()
            .unwrap()
            .grpc
            .as_ref()
            .unwrap()
            .port,
        8001
    );
    let args = server.args.as_ref().unwrap();
    for expected in [["--task", "embeddings"], ["--http-listen", "0.0.0.0:8000"]] {
        assert!(args.windows(2).any(|w| w == expected), "{args:?}");
    }
    let env = server.env.as_ref().unwrap();
    assert_eq!(
        (env[0].name.as_str(), env[0].value.as_deref()),
        ("OPENMODEL_THREADS", Some("2"))
    );
    let service = Api::<Service>::namespaced(client.clone(), &ns)
        .get("minilm")
        .await?;
    let ports: Vec<_> = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [8001, 8000, 9090]);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    assert!(budgets.get_opt("minilm").await?.is_some());
    let model = wait_for(&models(&client, &ns), "minilm", "the first status", |m| {
        m.status.as_ref().and_then(|s| s.observed_generation) == Some(1)
    })
    .await?;
    assert_eq!(model.finalizers(), ["serving.openmodel.dev/retire"]);
    let status = model.status.as_ref().unwrap();
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("minilm.{ns}.svc:8001").as_str())
    );
    assert_eq!(condition(&model, "Ready").unwrap().0, "False");
    assert_eq!(
        condition(&model, "Progressing").unwrap(),
        ("True".into(), "RollingOut".into())
    );

    let ledger = operator.ledger_path();
    let entries = wait_for_ledger(
        &ledger,
        &ns,
        "minilm",
        &["spec.changed", "dataset.referenced", "dataset.referenced"],
    )
    .await?;
    let created = data(&entries[0]);
    assert_eq!(created["operation"], "CREATE");
    assert_eq!(created["patch"][0]["path"], "/spec");
    assert_eq!(
        created["patch"][0]["value"],
        serde_json::to_value(&model.spec)?
    );
    assert_eq!(data(&entries[1])["name"], "ms_marco");
    assert_eq!(status.ledger.unwrap().index, entries[2].index);

    // An update: one replica (the budget goes) and a node selector.
    patch_spec(
        &client,
        &ns,
        json!({"runtime": {"replicas": 1, "nodeSelector": {"pool": "cpu"}}}),
    )
    .await?;
    let deployment = wait_for(&deployments, "minilm", "the update", generation_applied(2)).await?;
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    let selector = spec.template.spec.as_ref().unwrap().node_selector.clone();
    assert_eq!(
        selector,
        Some(BTreeMap::from([("pool".to_string(), "cpu".to_string())]))
    );
    let entries = wait_for_ledger(
        &ledger,
        &ns,
        "minilm",
        &[
            "spec.changed",
            "dataset.referenced",
            "dataset.referenced",
            "spec.changed",
        ],
    )
    .await?;
    let update = data(&entries[3]);
    assert_eq!(update["operation"], "UPDATE");
    assert_eq!(
        update["patch"],
        json!([
            {"op": "add", "path": "/spec/runtime/nodeSelector", "value": {"pool": "cpu"}},
            {"op": "replace", "path": "/spec/runtime/replicas", "value": 1}
        ])
    );
    assert_eq!(
        entries[3].entry.object.as_ref().unwrap().generation,
        Some(2)
    );
    wait_for(
        &models(&client, &ns),
        "minilm",
        "generation 2 observed",
        |m| m.status.as_ref().and_then(|s| s.observed_generation) == Some(2),
    )
    .await?;
    ensure!(
        budgets.get_opt("minilm").await?.is_none(),
        "the budget outlived replicas: 1"
    );

    // Removing a field removes it from the Deployment too.
    patch_spec(&client, &ns, json!({"runtime": {"nodeSelector": null}})).await?;
    let deployment = wait_for(&deployments, "minilm", "the removal", generation_applied(3)).await?;
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.node_selector, None);
    let entries = wait_for_ledger(
        &ledger,
        &ns,
        "minilm",
        &[
            "spec.changed",
            "dataset.referenced",
            "dataset.referenced",
            "spec.changed",
            "spec.changed",
        ],
    )
    .await?;
    assert_eq!(
        data(&entries[4])["patch"],
        json!([{"op": "remove", "path": "/spec/runtime/nodeSelector"}])
    );

    operator.stop().await?;
    Ok(())
}

/// An operator in a fresh namespace, serving `/metrics` on `metrics`, with
/// the example model (one replica, no provenance) created and its
/// Deployment applied.
struct OneReplica {
    client: Client,
    ns: String,
    operator: Operator,
    metrics: SocketAddr,
    deployment: Deployment,
}

async fn one_replica_deployed(test: &str) -> Result<OneReplica> {
    let client = control_plane().await.client()?;
    let ns = namespace(&client, test).await?;
    let metrics = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let operator = Operator::start_with_http(&client, &ns, Some(metrics)).await?;
    let mut model = example(&ns)?;
    model.spec.provenance = None;
    model.spec.runtime.replicas = 1;
    models(&client, &ns)
        .create(&PostParams::default(), &model)
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment = wait_for(&deployments, "minilm", "the Deployment", |_| true).await?;
    Ok(OneReplica {
        client,
        ns,
        operator,
        metrics,
        deployment,
    })
}

/// A controller owner reference to `owner`.
fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Plays the Deployment controller: a ReplicaSet `name` of `deployment`'s
/// selector and pod template, controlled by `owner` (the Deployment, or
/// none for one made by hand).
async fn replica_set(
    client: &Client,
    deployment: &Deployment,
    name: &str,
    owner: Option<&Deployment>,
) -> Result<ReplicaSet> {
    let spec = deployment.spec.clone().unwrap_or_default();
    let replica_set = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone()),
            owner_references: owner.map(|d| vec![controller_reference(d)]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(1),
            selector: spec.selector,
            template: Some(spec.template),
            ..ReplicaSetSpec::default()
        }),
        status: None,
    };
    let namespace = deployment.namespace().unwrap_or_default();
    Ok(Api::<ReplicaSet>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &replica_set)
        .await?)
}

/// Plays the ReplicaSet controller: a pod `name` of `deployment`'s
/// template, adopted by `replica_set` (none: left without an owner).
async fn pod_of(
    client: &Client,
    deployment: &Deployment,
    name: &str,
    replica_set: Option<&ReplicaSet>,
) -> Result<Pod> {
    let pod = create_pod(client, deployment, name).await?;
    let Some(replica_set) = replica_set else {
        return Ok(pod);
    };
    let adopt = json!({"metadata": {"ownerReferences": [controller_reference(replica_set)]}});
    Ok(
        Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default())
            .patch(name, &PatchParams::default(), &Patch::Merge(&adopt))
            .await?,
    )
}

/// A pod as the Deployment makes it: through a ReplicaSet it controls.
async fn deployment_pod(client: &Client, deployment: &Deployment, name: &str) -> Result<Pod> {
    let replica_set =
        replica_set(client, deployment, &format!("{name}-rs"), Some(deployment)).await?;
    pod_of(client, deployment, name, Some(&replica_set)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_only_looks_like_the_model_s_verifies_nothing() -> Result<()> {
    let OneReplica {
        client,
        ns,
        mut operator,
        metrics,
        deployment,
    } = one_replica_deployed("faked_pods").await?;
    const RECONCILES: &str = "openmodel_operator_reconciles_total";
    let before = metric(metrics, RECONCILES).await?;

    // Two pods with the model's labels and template annotation whose fetch
    // "verified" the digest: one made by hand, one of a ReplicaSet that is
    // not the Deployment's. Their names sort first.
    let by_hand = pod_of(&client, &deployment, "minilm-0-by-hand", None).await?;
    let stray = replica_set(&client, &deployment, "minilm-0-stray", None).await?;
    let strays = pod_of(&client, &deployment, "minilm-0-stray-a", Some(&stray)).await?;
    for fake in [&by_hand, &strays] {
        finish_fetch(&client, fake, 0, DIGEST).await?;
    }
    // Their changes reconcile the model; no reconcile believes them. (Had
    // one, the entry below would name a fake: they sort first.)
    let started = Instant::now();
    while metric(metrics, RECONCILES).await? < before + 1.0 {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the pod changes did not reconcile the model within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let model = models(&client, &ns).get("minilm").await?;
    ensure!(
        !has_condition("WeightsVerified", "True")(&model),
        "pods the Deployment did not make verified the weights: {:?}",
        condition(&model, "WeightsVerified")
    );
    let ledger = operator.ledger_path();
    assert_eq!(
        kinds(&ledger_entries(&ledger, &ns, Some("minilm"))?),
        ["spec.changed"]
    );

    // The Deployment's own pod does.
    let ours = deployment_pod(&client, &deployment, "minilm-7d9f-c").await?;
    finish_fetch(&client, &ours, 0, DIGEST).await?;
    wait_for(
        &models(&client, &ns),
        "minilm",
        "WeightsVerified",
        has_condition("WeightsVerified", "True"),
    )
    .await?;
    let entries = wait_for_ledger(
        &ledger,
        &ns,
        "minilm",
        &["spec.changed", "weights.verified"],
    )
    .await?;
    assert_eq!(data(&entries[1])["pod"], "minilm-7d9f-c");
    let index = entries[1].index.to_string();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_for(
        &pods,
        "minilm-7d9f-c",
        "the weights-entry annotation",
        |p| p.annotations().get(WEIGHTS_ENTRY_ANNOTATION) == Some(&index),
    )
    .await?;
    for fake in ["minilm-0-by-hand", "minilm-0-stray-a"] {
        let pod = pods.get(fake).await?;
        ensure!(
            !pod.annotations().contains_key(WEIGHTS_ENTRY_ANNOTATION),
            "{fake} was told the weights entry"
        );
    }
    operator.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_rollout_is_ready_deployed_once_and_retired_on_delete() -> Result<()> {
    let OneReplica {
        client,
        ns,
        mut operator,
        metrics,
        deployment,
    } = one_replica_deployed("verified_rollout").await?;

    // The kubelet: the fetch step verified the digest; the rollout is not done.
    let pod = deployment_pod(&client, &deployment, "minilm-7d9f-a").await?;
    finish_fetch(&client, &pod, 0, DIGEST).await?;
    let model = wait_for(
        &models(&client, &ns),
        "minilm",
        "WeightsVerified",
        has_condition("WeightsVerified", "True"),
    )
    .await?;
    assert_eq!(condition(&model, "Ready").unwrap().0, "False");
    let ledger = operator.ledger_path();
    let entries = wait_for_ledger(
        &ledger,
        &ns,
        "minilm",
        &["spec.changed", "weights.verified"],
    )
    .await?;
    assert_eq!(data(&entries[1])["digest"], DIGEST);
    assert_eq!(data(&entries[1])["pod"], "minilm-7d9f-a");
    let weights_index = entries[1].index;
    // The pod is told the entry's index, for the server to return to clients.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_for(
        &pods,
        "minilm-7d9f-a",
        "the weights-entry annotation",
        |p| p.annotations().get(WEIGHTS_ENTRY_ANNOTATION) == Some(&weights_index.to_string()),
    )
    .await?;

    // The Deployment controller: the rollout completed.
    rollout_status(&client, &deployment, 1, 1).await?;
    let model = wait_for(
        &models(&client, &ns),
        "minilm",
        "Ready",
        has_condition("Ready", "True"),
    )
    .await?;
    let status = model.status.as_ref().unwrap();
    assert_eq!(status.served_digest.as_deref(), Some(DIGEST));
    assert_eq!(condition(&model, "Degraded").unwrap().0, "False");
    let entries = wait_for_ledger(
        &ledger,
        &ns,
        "minilm",
        &["spec.changed", "weights.verified", "model.deployed"],
    )
    .await?;
    let deployed = data(&entries[2]);
    assert_eq!(deployed["digest"], DIGEST);
    assert_eq!(deployed["replicas"], 1);
    assert_eq!(deployed["weightsEntry"], weights_index);

    // Events for the transitions.
    events_with_reasons(&client, &ns, "Normal", &["DigestVerified", "Serving"]).await?;

    // Reconciles that find the objects as the last apply left them send
    // nothing to the API server; a Deployment edited behind the operator's
    // back is put back at once.
    nothing_reapplied_until_changed(&client, &ns, metrics).await?;

    // A restarted operator reconciles again (it puts back a deleted
    // Service) but records nothing twice.
    operator.restart().await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services.delete("minilm", &DeleteParams::default()).await?;
    wait_for(&services, "minilm", "the Service put back", |_| true).await?;
    let after = ledger_entries(&ledger, &ns, Some("minilm"))?;
    assert_eq!(
        kinds(&after),
        ["spec.changed", "weights.verified", "model.deployed"]
    );

    // Delete: model.retired through the finalizer, then the object is gone.
    models(&client, &ns)
        .delete("minilm", &DeleteParams::default())
        .await?;
    let started = Instant::now();
    while models(&client, &ns).get_opt("minilm").await?.is_some() {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the model was not released"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let entries = wait_for_ledger(
        &ledger,
        &ns,
        "minilm",
        &[
            "spec.changed",
            "weights.verified",
            "model.deployed",
            "model.retired",
        ],
    )
    .await?;
    assert_eq!(data(&entries[3])["lastDigest"], DIGEST);

    // A clean shutdown hands the Lease back.
    operator.stop().await?;
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("openmodel-operator")
        .await?;
    assert_eq!(lease_holder(&lease), None);
    Ok(())
}

/// Waits (10 s at most) until the namespace holds Events of `type_` with
/// every one of `reasons`. The operator publishes them right after the
/// status they report, so a test that saw the status may be a moment early.
async fn events_with_reasons(
    client: &Client,
    ns: &str,
    type_: &str,
    reasons: &[&str],
) -> Result<()> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    loop {
        let seen: Vec<String> = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some(type_))
            .filter_map(|e| e.reason)
            .collect();
        if reasons.iter().all(|r| seen.iter().any(|s| s == r)) {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "no {type_} events {reasons:?} after 10 s; seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pokes a Ready model's pod three times (each change reconciles the
/// model) and sees no apply sent; then scales its Deployment by hand and
/// sees the operator apply the model's replica count again.
async fn nothing_reapplied_until_changed(
    client: &Client,
    ns: &str,
    metrics: SocketAddr,
) -> Result<()> {
    const SENT: &str = "openmodel_operator_applies_total{result=\"applied\"}";
    const SKIPPED: &str = "openmodel_operator_applies_total{result=\"unchanged\"}";
    let sent = metric(metrics, SENT).await?;
    let skipped = metric(metrics, SKIPPED).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for poke in 0..3 {
        let label = json!({"metadata": {"labels": {"poked": poke.to_string()}}});
        pods.patch(
            "minilm-7d9f-a",
            &PatchParams::default(),
            &Patch::Merge(&label),
        )
        .await?;
        let started = Instant::now();
        while metric(metrics, SKIPPED).await? < skipped + f64::from(poke) + 1.0 {
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "no reconcile skipped its apply within 30 s of poke {poke}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        metric(metrics, SENT).await?,
        sent,
        "an unchanged model was applied again"
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let generation = deployments
        .get("minilm")
        .await?
        .metadata
        .generation
        .unwrap_or(0);
    let scaled = json!({"spec": {"replicas": 4}});
    deployments
        .patch("minilm", &PatchParams::default(), &Patch::Merge(&scaled))
        .await?;
    wait_for(&deployments, "minilm", "the replica count put back", |d| {
        d.metadata.generation.unwrap_or(0) >= generation + 2
            && d.spec.as_ref().and_then(|s| s.replicas) == Some(1)
    })
    .await?;
    ensure!(
        metric(metrics, SENT).await? > sent,
        "the edit was not applied over"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_digest_degrades_and_is_never_deployed() -> Result<()> {
    let OneReplica {
        client,
        ns,
        mut operator,
        deployment,
        ..
    } = one_replica_deployed("wrong_digest").await?;

    let pod = deployment_pod(&client, &deployment, "minilm-7d9f-b").await?;
    let got = format!("sha256:{}", "0".repeat(64));
    let message = format!(
        "fetch failed: digest mismatch: expected {DIGEST}, got {got}; first differing file: model.safetensors"
    );
    finish_fetch(&client, &pod, 1, &message).await?;
    // Even a Deployment that reports completion does not make it Ready.
    rollout_status(&client, &deployment, 1, 1).await?;
    let model = wait_for(
        &models(&client, &ns),
        "minilm",
        "Degraded",
        has_condition("Degraded", "True"),
    )
    .await?;
    assert_eq!(condition(&model, "Degraded").unwrap().1, "DigestMismatch");
    assert_eq!(
        condition(&model, "WeightsVerified").unwrap(),
        ("False".into(), "DigestMismatch".into())
    );
    assert_eq!(condition(&model, "Ready").unwrap().0, "False");
    let degraded = model
        .status
        .as_ref()
        .unwrap()
        .condition("Degraded")
        .unwrap();
    assert!(degraded.message.contains(&got), "{}", degraded.message);
    assert_eq!(model.status.as_ref().unwrap().served_digest, None);

    events_with_reasons(&client, &ns, "Warning", &["DigestMismatch"]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let entries = ledger_entries(&operator.ledger_path(), &ns, Some("minilm"))?;
    assert_eq!(kinds(&entries), ["spec.changed"]);
    operator.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints_answer() -> Result<()> {
    let client = control_plane().await.client()?;
    let ns = namespace(&client, "endpoints").await?;
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut operator = Operator::start_with_http(&client, &ns, Some(addr)).await?;
    models(&client, &ns)
        .create(&PostParams::default(), &example(&ns)?)
        .await?;
    wait_for(&models(&client, &ns), "minilm", "a status", |m| {
        m.status.is_some()
    })
    .await?;
    let started = Instant::now();
    let metrics = loop {
        let metrics = tokio::task::spawn_blocking(move || http_get(addr, "/metrics")).await??;
        if metrics.contains("openmodel_operator_models{condition=\"Ready\",status=\"False\"} 1")
            || started.elapsed() > Duration::from_secs(10)
        {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(metrics.starts_with("HTTP/1.0 200"), "{metrics}");
    for needle in [
        "openmodel_operator_reconciles_total",
        "openmodel_operator_reconcile_duration_seconds_bucket",
        "openmodel_operator_models{condition=\"Ready\",status=\"False\"} 1",
    ] {
        ensure!(metrics.contains(needle), "no {needle} in {metrics}");
    }
    for path in ["/healthz", "/readyz"] {
        let answer = tokio::task::spawn_blocking(move || http_get(addr, path)).await??;
        ensure!(
            answer.starts_with("HTTP/1.0 200") && answer.ends_with("ok"),
            "{path}: {answer}"
        );
    }
    operator.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_a_digest_is_held_back_with_the_reason() -> Result<()> {
    let client = control_plane().await.client()?;
    let ns = namespace(&client, "no_digest").await?;
    let mut operator = Operator::start(&client, &ns).await?;
    let mut model = example(&ns)?;
    model.spec.model.digest = None;
    model.spec.policy = Some(Policy {
        require_digest: false,
    });
    models(&client, &ns)
        .create(&PostParams::default(), &model)
        .await?;
    let model = wait_for(
        &models(&client, &ns),
        "minilm",
        "Degraded",
        has_condition("Degraded", "True"),
    )
    .await?;
    assert_eq!(condition(&model, "Degraded").unwrap().1, "DigestMissing");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(deployments.get_opt("minilm").await?.is_none());
    operator.stop().await?;
    Ok(())
}

/// The example model in `ns` at `generation`: each generation has its own
/// replica count and image tag.
fn at_generation(ns: &str, generation: i64) -> Result<OpenModel> {
    let mut model = example(ns)?;
    model.metadata.uid = Some("0e6f2c4a-long-history".into());
    model.metadata.generation = Some(generation);
    model.spec.runtime.replicas = i32::try_from(generation)?;
    model.spec.runtime.image = format!("registry.example/openmodel-server:0.{generation}.0");
    Ok(model)
}

/// The controller's `spec.changed` entries for generations
/// `1..=generations` of the model.
fn recorded_history(ns: &str, generations: i64) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut previous = None;
    for generation in 1..=generations {
        let model = at_generation(ns, generation)?;
        entries.extend(spec_entries(
            &model,
            previous.as_ref(),
            Vec::new(),
            "test-cluster",
        ));
        previous = Some(spec_document(&model.spec));
    }
    Ok(entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_history_of_20_000_generations_is_read_back_through_the_ledger_service() -> Result<()>
{
    const GENERATIONS: i64 = 20_000;
    let client = control_plane().await.client()?;
    let ns = namespace(&client, "long_history").await?;
    let account = "openmodel-operator";
    let token = audit_reader(&client, &ns, account, Grant::Namespace(&ns)).await?;
    let history = recorded_history(&ns, GENERATIONS)?;
    // Twice what one gRPC message may hold by default: it must come in pages.
    let bytes: usize = history
        .iter()
        .map(|e| e.canonical_bytes().map(|b| b.len()))
        .sum::<Result<_, _>>()?;
    ensure!(bytes > 8 << 20, "the history is only {bytes} bytes");
    let seeding = Instant::now();
    let service = LedgerService::start(
        client.clone(),
        history,
        vec![service_account_user(&ns, account)],
    )
    .await?;
    let seeded = seeding.elapsed();
    let dir = tempfile::tempdir()?;
    let (ca_file, token_file) = (dir.path().join("ca.crt"), dir.path().join("token"));
    std::fs::write(&ca_file, service.ca_pem())?;
    std::fs::write(&token_file, token)?;
    let journal = Journal::open(&JournalConfig {
        ledger: LedgerLocation::Service {
            endpoint: service.grpc_endpoint(),
            ca_file,
            token_file,
        },
        cluster: "test-cluster".into(),
    })
    .await?;

    // The operator's first read after a start: the whole history.
    let started = Instant::now();
    let recorded = journal
        .recorded_spec(&at_generation(&ns, GENERATIONS + 1)?)
        .await?;
    let first = started.elapsed();
    let last = at_generation(&ns, GENERATIONS)?;
    assert_eq!(recorded, Some(spec_document(&last.spec)));

    // The next generation is recorded against it, and read back.
    let next = at_generation(&ns, GENERATIONS + 1)?;
    journal
        .record_all(spec_entries(
            &next,
            recorded.as_ref(),
            Vec::new(),
            "test-cluster",
        ))
        .await?;
    let started = Instant::now();
    let recorded = journal
        .recorded_spec(&at_generation(&ns, GENERATIONS + 2)?)
        .await?;
    let then = started.elapsed();
    assert_eq!(recorded, Some(spec_document(&next.spec)));
    eprintln!(
        "{GENERATIONS} generations, {bytes} bytes (seeded in {seeded:.1?}): the first read through the ledger service took {first:.1?} in pages of {HISTORY_PAGE}; the next generation's {then:.1?}"
    );
    service.stop().await?;
    Ok(())
}
