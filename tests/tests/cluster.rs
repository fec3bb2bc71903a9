//! End to end on a real single-node cluster (`scripts/cluster.sh`: kubelet,
//! containerd, runc, kube-proxy and CoreDNS beside the control plane): the
//! chart installed with helm, models applied by people with their own
//! credentials, the server's pods fetching the weights over HTTP and
//! verifying them, a Triton client answered through the Service, and the
//! whole story read back from the ledger service with proofs and verified
//! offline.
//!
//! Needs root, the images (`scripts/build-images.sh --profile debug`), the
//! cluster binaries (`scripts/build-control-plane.sh`), helm
//! (`scripts/fetch-helm.sh`), the model (`scripts/fetch-model.sh`) and the
//! client venv (`scripts/client-venv.sh`); `scripts/test.sh` prepares them
//! all. A missing one fails the test with the command that provides it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use openmodel_ledger::entry::{Entry, EntryBody, Operation, Source};
use openmodel_ledger::note::Signer;
use openmodel_ledger_service::DEFAULT_TOKEN_AUDIENCE;
use openmodel_tests::cluster::{Cluster, HttpFolder, NODE_IP, kubectl, workspace_binary};
use openmodel_tests::helm::{chart_dir, helm};
use openmodel_tests::workspace;
use serde_json::Value;

const NAMESPACE: &str = "search";
const SYSTEM: &str = "openmodel-system";
const LEDGER_NAME: &str = "openmodel-ledger.openmodel-system.svc";
/// The manifest digest of the all-MiniLM-L6-v2 folder `scripts/fetch-model.sh` caches.
const DIGEST: &str = "sha256:8a36265b0b7aa0d00dce7ed1f5db75f01433046b4518e00f63248b2d0c866cb2";
const IMAGE: &str = concat!("openmodel/openmodel-server:", env!("CARGO_PKG_VERSION"));

/// Runs `command`; its standard output, or an error with both outputs.
fn run(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// Polls `check` every second until it returns `Some`, for at most `limit`.
fn wait<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let started = Instant::now();
    loop {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) if started.elapsed() < limit => {}
            Ok(None) => bail!("{what}: not after {limit:?}"),
            Err(err) if started.elapsed() < limit => eprintln!("{what}: {err:#}"),
            Err(err) => return Err(err.context(format!("{what}: not after {limit:?}"))),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// An object as JSON (`kubectl get -o json`).
fn get(cluster: &Cluster, args: &[&str]) -> Result<Value> {
    let text = run(cluster.kubectl().args(["get", "-o", "json"]).args(args))?;
    Ok(serde_json::from_str(&text)?)
}

/// The decoded value of `key` in Secret `name` of the chart's namespace.
fn secret_value(cluster: &Cluster, name: &str, key: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let secret = get(cluster, &["secret", name, "-n", SYSTEM])?;
    let encoded = secret["data"][key]
        .as_str()
        .with_context(|| format!("no {key} in Secret {SYSTEM}/{name}"))?;
    Ok(base64::engine::general_purpose::STANDARD.decode(encoded)?)
}

/// The condition `kind` of an OpenModel: (status, reason, message).
fn condition(model: &Value, kind: &str) -> Option<(String, String, String)> {
    model["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| {
            let text = |f: &str| c[f].as_str().unwrap_or_default().to_owned();
            (text("status"), text("reason"), text("message"))
        })
}

/// Waits until OpenModel `name` is Ready for its current generation with
/// `replicas` ready replicas; returns it.
fn wait_ready(cluster: &Cluster, name: &str, replicas: i64) -> Result<Value> {
    wait(
        &format!("OpenModel {name} Ready with {replicas} replicas"),
        Duration::from_secs(300),
        || {
            let model = get(cluster, &["openmodel", name, "-n", NAMESPACE])?;
            let ready = condition(&model, "Ready").is_some_and(|c| c.0 == "True")
                && model["status"]["observedGeneration"] == model["metadata"]["generation"]
                && model["status"]["readyReplicas"].as_i64() == Some(replicas);
            Ok(ready.then_some(model))
        },
    )
}

/// A model folder served over HTTP with its `.openmodel-manifest.json`
/// listing, as a model store would.
fn model_store(dir: &Path) -> Result<HttpFolder> {
    let model = workspace().join(".cache/models/all-MiniLM-L6-v2");
    ensure!(
        model.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-model.sh",
        model.display()
    );
    let folder = dir.join("all-MiniLM-L6-v2");
    run(Command::new("cp").arg("-r").arg(&model).arg(&folder))?;
    let manifest = run(Command::new(workspace_binary("openmodel-server")?)
        .args(["digest", "-o", "json"])
        .arg(&folder))?;
    std::fs::write(folder.join(".openmodel-manifest.json"), manifest)?;
    Ok(HttpFolder::serve(dir)?)
}

/// The OpenModel `name` as YAML: the served folder, `replicas`, `datasets`
/// (name, uri) and `digest`.
fn model_yaml(
    name: &str,
    source: &str,
    digest: &str,
    replicas: u32,
    datasets: &[(&str, &str)],
) -> String {
    let datasets: String = datasets
        .iter()
        .map(|(name, uri)| format!("      - {{name: {name}, uri: \"{uri}\", role: training}}\n"))
        .collect();
    format!(
        "apiVersion: serving.openmodel.dev/v1alpha1
kind: OpenModel
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  model: {{source: \"{source}\", task: embedding, digest: \"{digest}\"}}
  provenance:
    license: apache-2.0
    owner: search-team@example.com
    datasets:
{datasets}  runtime:
    replicas: {replicas}
    image: {IMAGE}
    resources: {{cpu: 500m, memory: 1Gi, gpu: 0}}
  policy: {{requireDigest: true}}
"
    )
}

/// `kubectl apply` of `yaml` as the user of `kubeconfig`.
fn apply_as(kubeconfig: &Path, yaml: &str, dir: &Path, name: &str) -> Result<()> {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml)?;
    run(kubectl(kubeconfig).arg("apply").arg("-f").arg(&file))?;
    Ok(())
}

/// The Triton client (`tritonclient[grpc]`, unmodified) against the model's
/// Service: embeddings equal to the sentence-transformers fixture, the
/// digest and the ledger index in every answer.
fn triton_check(cluster: &Cluster, name: &str, ledger_index: &str) -> Result<String> {
    let python = workspace().join(".cache/venv-client/bin/python");
    ensure!(
        python.is_file(),
        "{} is missing: run scripts/client-venv.sh",
        python.display()
    );
    let service = get(cluster, &["service", name, "-n", NAMESPACE])?;
    let ip = service["spec"]["clusterIP"]
        .as_str()
        .context("the Service's cluster IP")?;
    run(Command::new(python)
        .arg(workspace().join("server/tests/clients/tritonclient_check.py"))
        .arg(format!("{ip}:8001"))
        .arg(name)
        .arg(workspace().join("server/tests/fixtures/minilm_reference.json"))
        .arg(DIGEST)
        .arg(ledger_index))
}

/// The `serving.openmodel.dev/weights-entry` annotation of the model's pods
/// (all the same), once every pod of the current spec has it.
fn weights_entry(cluster: &Cluster, name: &str, replicas: usize) -> Result<String> {
    wait(
        "the pods' weights-entry annotation",
        Duration::from_secs(60),
        || {
            let pods = get(
                cluster,
                &[
                    "pods",
                    "-n",
                    NAMESPACE,
                    "-l",
                    &format!("serving.openmodel.dev/model={name}"),
                ],
            )?;
            let entries: Vec<String> = pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter_map(|p| {
                    p["metadata"]["annotations"]["serving.openmodel.dev/weights-entry"].as_str()
                })
                .map(str::to_owned)
                .collect();
            Ok(
                (entries.len() == replicas && entries.iter().all(|e| *e == entries[0]))
                    .then(|| entries[0].clone()),
            )
        },
    )
}

/// The `openmodel` CLI against the ledger service through its cluster IP,
/// with `token`, its own config folder (pinned keys) and the service's CA.
struct Auditor {
    cli: PathBuf,
    server: String,
    ca: PathBuf,
    token: String,
    /// The log's verifier key (a namespace auditor cannot read the log's
    /// first entry, which carries it).
    key: String,
    home: PathBuf,
}

impl Auditor {
    fn run(&self, args: &[&str]) -> Result<String> {
        run(Command::new(&self.cli)
            .args(args)
            .arg("--server")
            .arg(&self.server)
            .arg("--ca-file")
            .arg(&self.ca)
            .args(["--tls-server-name", LEDGER_NAME])
            .arg("--token")
            .arg(&self.token)
            .arg("--key")
            .arg(&self.key)
            .env("XDG_CONFIG_HOME", &self.home)
            .env_remove("KUBECONFIG"))
    }

    /// Every entry about `model` (namespace/name), proven included.
    fn story(&self, model: &str) -> Result<Vec<Entry>> {
        let page: Value = serde_json::from_str(
            &self.run(&["audit", "log", "--model", model, "--all", "-o", "json"])?,
        )?;
        page["entries"]
            .as_array()
            .context("entries")?
            .iter()
            .map(|e| Ok(Entry::parse_logged(&serde_json::to_vec(&e["entry"])?)?))
            .collect()
    }
}

/// (kind, who) of each entry: the user for admission entries, `controller` else.
fn outline(entries: &[Entry]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            let who = match e.source {
                Source::Admission => e
                    .actor
                    .as_ref()
                    .map(|a| a.username.clone())
                    .unwrap_or_default(),
                _ => "controller".into(),
            };
            (e.body.kind().to_owned(), who)
        })
        .collect()
}

#[test]
fn a_model_applied_with_kubectl_serves_a_triton_client_and_the_ledger_tells_its_story() -> Result<()>
{
    let cluster = Cluster::up()?;
    let work = tempfile::tempdir()?;
    let admin = cluster.kubeconfig().to_owned();

    // The chart, as a platform team installs it.
    run(helm()?
        .args(["install", "openmodel"])
        .arg(chart_dir())
        .args([
            "-n",
            SYSTEM,
            "--create-namespace",
            "--wait",
            "--timeout",
            "5m",
        ])
        // Only kube-apiserver may call the webhook (scripts/cluster.sh
        // gives it a client certificate for webhooks).
        .arg("--set-file")
        .arg(format!(
            "webhook.clientAuth.caBundle={}",
            cluster.dir().join("pki/ca.crt").display()
        ))
        .args([
            "--set",
            "webhook.clientAuth.names={kube-apiserver-webhook-client}",
        ])
        .arg("--kubeconfig")
        .arg(&admin))?;
    // The operator put its CA into the webhook configuration.
    let webhooks = get(
        &cluster,
        &[
            "validatingwebhookconfigurations",
            "-l",
            "app.kubernetes.io/instance=openmodel",
        ],
    )?;
    ensure!(
        webhooks["items"][0]["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .is_some_and(|b| !b.is_empty()),
        "the operator did not fill the webhook's caBundle: {webhooks}"
    );

    // People: alice and bob edit the namespace, carol too; a service
    // account reads the namespace's audit trail (view, by aggregation), and
    // a compliance account the whole log.
    run(cluster.kubectl().args(["create", "namespace", NAMESPACE]))?;
    let alice = cluster.user("alice", &["search-team"])?;
    let bob = cluster.user("bob", &["search-team"])?;
    let carol = cluster.user("carol", &["interns"])?;
    run(cluster.kubectl().args([
        "create",
        "rolebinding",
        "editors",
        "--clusterrole",
        "edit",
        "-n",
        NAMESPACE,
        "--user",
        "alice",
        "--user",
        "bob",
        "--user",
        "carol",
    ]))?;
    run(cluster
        .kubectl()
        .args(["create", "serviceaccount", "auditor", "-n", NAMESPACE]))?;
    run(cluster.kubectl().args([
        "create",
        "rolebinding",
        "auditors",
        "--clusterrole",
        "view",
        "-n",
        NAMESPACE,
        &format!("--serviceaccount={NAMESPACE}:auditor"),
    ]))?;
    run(cluster
        .kubectl()
        .args(["create", "serviceaccount", "compliance", "-n", SYSTEM]))?;
    run(cluster.kubectl().args([
        "create",
        "clusterrolebinding",
        "compliance",
        "--clusterrole",
        "view",
        &format!("--serviceaccount={SYSTEM}:compliance"),
    ]))?;
    // The aggregation controller folds the chart's roles into edit and view.
    wait(
        "alice may create OpenModels",
        Duration::from_secs(60),
        || {
            let answer = kubectl(&alice)
                .args(["auth", "can-i", "create", "openmodels", "-n", NAMESPACE])
                .output()?;
            Ok(String::from_utf8_lossy(&answer.stdout)
                .trim()
                .eq("yes")
                .then_some(()))
        },
    )?;

    // alice applies the model; its pods fetch it from the store over HTTP.
    let store = model_store(work.path())?;
    let source = format!("{}all-MiniLM-L6-v2/", store.url());
    ensure!(
        source.starts_with(&format!("http://{NODE_IP}:")),
        "{source}"
    );
    let ms_marco = (
        "ms_marco",
        "hf://datasets/microsoft/ms_marco@a47ee7aae8d7d466ba15f9f0bfac3b3681087b3a",
    );
    apply_as(
        &alice,
        &model_yaml("minilm", &source, DIGEST, 1, &[ms_marco]),
        work.path(),
        "minilm-1",
    )?;
    let model = wait_ready(&cluster, "minilm", 1)?;
    assert_eq!(model["status"]["servedDigest"], DIGEST);
    let verified_at = weights_entry(&cluster, "minilm", 1)?;
    let answer = triton_check(&cluster, "minilm", &verified_at)?;
    assert!(
        answer.contains(&format!("digest {DIGEST}, ledger index {verified_at}")),
        "{answer}"
    );

    // bob scales it out and declares a second dataset: the rollout, the
    // status and the ledger follow.
    let stsb = (
        "stsb",
        "https://huggingface.co/datasets/sentence-transformers/stsb",
    );
    apply_as(
        &bob,
        &model_yaml("minilm", &source, DIGEST, 2, &[ms_marco, stsb]),
        work.path(),
        "minilm-2",
    )?;
    let model = wait_ready(&cluster, "minilm", 2)?;
    assert_eq!(model["status"]["observedGeneration"], 2);
    let deployment = get(&cluster, &["deployment", "minilm", "-n", NAMESPACE])?;
    assert_eq!(deployment["status"]["readyReplicas"], 2, "{deployment}");
    let verified_at = weights_entry(&cluster, "minilm", 2)?;
    triton_check(&cluster, "minilm", &verified_at)?;

    // carol applies weights that are not what the digest says: refused,
    // with the reason in the status, and never deployed.
    let wrong = format!("sha256:{}", "0".repeat(64));
    apply_as(
        &carol,
        &model_yaml("minilm-tampered", &source, &wrong, 1, &[]),
        work.path(),
        "tampered",
    )?;
    let (status, _, message) = wait(
        "the tampered model refused",
        Duration::from_secs(180),
        || {
            let model = get(&cluster, &["openmodel", "minilm-tampered", "-n", NAMESPACE])?;
            Ok(condition(&model, "WeightsVerified").filter(|c| c.1 == "DigestMismatch"))
        },
    )?;
    assert_eq!(status, "False");
    assert!(
        message.contains(DIGEST) || message.contains(&wrong),
        "{message}"
    );
    let tampered = get(&cluster, &["openmodel", "minilm-tampered", "-n", NAMESPACE])?;
    assert_eq!(
        condition(&tampered, "Ready").map(|c| c.0).as_deref(),
        Some("False"),
        "{tampered}"
    );

    // alice retires the model.
    run(kubectl(&alice).args([
        "delete",
        "openmodel",
        "minilm",
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout",
        "120s",
    ]))?;

    // The audit trail, from the ledger service, every entry proven.
    let ca = work.path().join("ledger-ca.crt");
    std::fs::write(
        &ca,
        secret_value(&cluster, "openmodel-ledger-tls", "ca.crt")?,
    )?;
    let ledger_ip =
        get(&cluster, &["service", "openmodel-ledger", "-n", SYSTEM])?["spec"]["clusterIP"]
            .as_str()
            .context("the ledger's cluster IP")?
            .to_owned();
    let token = |account: &str, ns: &str| {
        run(cluster
            .kubectl()
            .args(["create", "token", account, "-n", ns])
            .args(["--audience", DEFAULT_TOKEN_AUDIENCE]))
    };
    // The log's verifier key, as its operator publishes it to auditors: the
    // public half of the key the chart generated.
    let key_text = String::from_utf8(secret_value(
        &cluster,
        "openmodel-ledger-signing-key",
        "ledger.key",
    )?)?;
    let signer: Signer = key_text.trim().parse().context("the chart's signing key")?;
    let auditor = Auditor {
        cli: workspace_binary("openmodel")?,
        server: format!("https://{ledger_ip}:8443"),
        ca: ca.clone(),
        token: token("auditor", NAMESPACE)?.trim().to_owned(),
        key: signer.verifier().to_string(),
        home: work.path().join("auditor-home"),
    };
    let story = wait(
        "model.retired in the ledger",
        Duration::from_secs(60),
        || {
            let story = auditor.story(&format!("{NAMESPACE}/minilm"))?;
            Ok(story
                .iter()
                .any(|e| e.body.kind() == "model.retired")
                .then_some(story))
        },
    )?;
    let minilm_outline = outline(&story);
    eprintln!("the story of {NAMESPACE}/minilm: {minilm_outline:?}");
    let admissions: Vec<(String, Operation)> = story
        .iter()
        .filter_map(|e| match (&e.source, &e.body) {
            (Source::Admission, EntryBody::SpecChanged(change)) => Some((
                e.actor
                    .as_ref()
                    .map(|a| a.username.clone())
                    .unwrap_or_default(),
                change.operation,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        admissions,
        [
            ("alice".to_owned(), Operation::Create),
            ("bob".to_owned(), Operation::Update),
            ("alice".to_owned(), Operation::Delete),
        ],
        "{minilm_outline:?}"
    );
    for kind in [
        "dataset.referenced",
        "weights.verified",
        "model.deployed",
        "model.retired",
    ] {
        assert!(
            minilm_outline.iter().any(|(k, _)| k == kind),
            "no {kind}: {minilm_outline:?}"
        );
    }
    let datasets: Vec<String> = story
        .iter()
        .filter_map(|e| match &e.body {
            EntryBody::DatasetReferenced(d) => Some(d.name.clone()),
            _ => None,
        })
        .collect();
    assert!(
        datasets.contains(&"ms_marco".into()) && datasets.contains(&"stsb".into()),
        "{datasets:?}"
    );
    // The one-line table a person reads names the same users.
    let table = auditor.run(&[
        "audit",
        "log",
        "--model",
        &format!("{NAMESPACE}/minilm"),
        "--all",
    ])?;
    assert!(table.contains("alice") && table.contains("bob"), "{table}");

    // The tampered model: refused at verification, never deployed.
    let tampered = auditor.story(&format!("{NAMESPACE}/minilm-tampered"))?;
    let tampered_outline = outline(&tampered);
    assert!(
        tampered_outline.contains(&("spec.changed".into(), "carol".into())),
        "{tampered_outline:?}"
    );
    assert!(
        !tampered_outline
            .iter()
            .any(|(k, _)| k == "model.deployed" || k == "weights.verified"),
        "{tampered_outline:?}"
    );

    // The namespace auditor may not read the whole log; compliance may.
    let export_dir = work.path().join("export");
    let export = [
        "audit",
        "export",
        export_dir.to_str().context("a UTF-8 path")?,
    ];
    let denied = format!(
        "{:#}",
        auditor
            .run(&export)
            .expect_err("a namespace auditor exports")
    );
    assert!(denied.contains("PERMISSION_DENIED"), "{denied}");
    let compliance = Auditor {
        token: token("compliance", SYSTEM)?.trim().to_owned(),
        home: work.path().join("compliance-home"),
        ..auditor
    };
    compliance.run(&export)?;
    let verified = run(Command::new(&compliance.cli)
        .args(["audit", "verify", "--bundle"])
        .arg(&export_dir)
        .arg("--key")
        .arg(&compliance.key))?;
    eprintln!("{verified}");
    Ok(())
}
