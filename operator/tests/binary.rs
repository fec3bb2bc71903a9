//! The `openmodel-operator` binary as a cluster runs it, against the real
//! kube-apiserver of the test harness: its flags and their errors, JSON
//! logs, `/metrics`, a clean exit on SIGTERM (reconciles finished, ledger
//! committed, Lease released), and leader election between two processes
//! where the leader is killed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use openmodel_tests::operator::{
    PATIENCE, control_plane, data, example, http_get, lease_holder, ledger_entries, ledger_key,
    models, namespace, patch_spec, wait_for, wait_for_ledger,
};
use openmodel_tests::operator_process::OperatorProcess;
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_openmodel-operator");

/// Runs the binary with `args` and returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> Result<(Option<i32>, String, String)> {
    let output = Command::new(BINARY)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .context("running openmodel-operator")?;
    Ok((
        output.status.code(),
        String::from_utf8(output.stdout)?,
        String::from_utf8(output.stderr)?,
    ))
}

#[test]
fn help_explains_every_flag_and_its_environment_variable() -> Result<()> {
    let (code, out, _) = run(&["run", "--help"])?;
    assert_eq!(code, Some(0));
    for flag in [
        "--ledger <LEDGER>",
        "[env: OPENMODEL_LEDGER=]",
        "--ledger-key-file",
        "--create-ledger",
        "--watch-namespace",
        "--lease-duration",
        "--http-listen",
        "--log-format",
    ] {
        ensure!(out.contains(flag), "no {flag:?} in:\n{out}");
    }
    let (code, out, _) = run(&["--help"])?;
    assert_eq!(code, Some(0));
    ensure!(out.contains("run") && out.contains("crd"), "{out}");
    Ok(())
}

#[test]
fn bad_flags_and_files_are_named_before_anything_runs() -> Result<()> {
    let (code, _, err) = run(&["run"])?;
    assert_eq!(code, Some(2), "{err}");
    ensure!(err.contains("--ledger <LEDGER>"), "{err}");

    let dir = tempfile::tempdir()?;
    let ledger = dir.path().join("ledger.sqlite");
    let missing_key = dir.path().join("missing.key");
    let (code, _, err) = run(&[
        "run",
        "--ledger",
        ledger.to_str().context("path")?,
        "--ledger-key-file",
        missing_key.to_str().context("path")?,
        "--identity",
        "x",
    ])?;
    assert_eq!(code, Some(1), "{err}");
    ensure!(
        err.contains("missing.key") && err.contains("openmodel ledger init"),
        "{err}"
    );

    // A good key but no ledger, and no --create-ledger.
    let key = ledger_key(dir.path())?;
    let (code, _, err) = run(&[
        "run",
        "--ledger",
        ledger.to_str().context("path")?,
        "--ledger-key-file",
        key.to_str().context("path")?,
        "--identity",
        "x",
    ])?;
    assert_eq!(code, Some(1), "{err}");
    ensure!(err.contains("--create-ledger"), "{err}");
    ensure!(!ledger.exists(), "nothing may be created");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_json_serves_metrics_and_exits_cleanly_on_sigterm() -> Result<()> {
    let control_plane = control_plane().await;
    let client = control_plane.client()?;
    let ns = namespace(&client, "binary").await?;
    let dir = tempfile::tempdir()?;
    let mut operator =
        OperatorProcess::start(Path::new(BINARY), control_plane, &ns, dir.path(), "only")?;
    operator.wait_for_log("leading", PATIENCE).await?;
    models(&client, &ns)
        .create(&PostParams::default(), &example(&ns)?)
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for(&deployments, "minilm", "the Deployment", |_| true).await?;
    operator
        .wait_for_log("ledger entry appended", PATIENCE)
        .await?;

    let addr = operator.http_addr();
    let metrics = tokio::task::spawn_blocking(move || http_get(addr, "/metrics")).await??;
    ensure!(metrics.starts_with("HTTP/1.0 200"), "{metrics}");
    ensure!(
        metrics.contains("openmodel_operator_reconciles_total"),
        "{metrics}"
    );

    let status = operator.terminate(PATIENCE).await?;
    ensure!(status.success(), "SIGTERM ended it with {status}");
    let logs = operator.json_logs()?;
    let messages: Vec<&str> = logs
        .iter()
        .map(|l| l["fields"]["message"].as_str().unwrap_or_default())
        .collect();
    for line in &logs {
        ensure!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "a log line without timestamp or level: {line}"
        );
    }
    let appended = logs
        .iter()
        .find(|l| l["fields"]["message"] == "ledger entry appended")
        .context("no append logged")?;
    assert_eq!(appended["fields"]["kind"], "spec.changed");
    let position = |m: &str| messages.iter().position(|x| *x == m);
    let (Some(shutting_down), Some(stopped)) = (position("shutting down"), position("stopped"))
    else {
        anyhow::bail!("shutdown not logged: {messages:?}");
    };
    ensure!(shutting_down < stopped, "out of order: {messages:?}");
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("openmodel-operator")
        .await?;
    assert_eq!(lease_holder(&lease), None, "the Lease must be released");
    let entries = ledger_entries(operator.ledger_path(), &ns, Some("minilm"))?;
    ensure!(
        entries.first().map(|e| e.entry.kind()) == Some("spec.changed"),
        "{entries:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_is_killed() -> Result<()> {
    let control_plane = control_plane().await;
    let client = control_plane.client()?;
    let ns = namespace(&client, "leader_election").await?;
    let dir = tempfile::tempdir()?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let binary = Path::new(BINARY);

    let mut first = OperatorProcess::start(binary, control_plane, &ns, dir.path(), "first")?;
    wait_for(&leases, "openmodel-operator", "the first leader", |l| {
        lease_holder(l) == Some("first")
    })
    .await?;
    let mut second = OperatorProcess::start(binary, control_plane, &ns, dir.path(), "second")?;
    models(&client, &ns)
        .create(&PostParams::default(), &example(&ns)?)
        .await?;
    let ledger = dir.path().join("ledger.sqlite");
    let before = ["spec.changed", "dataset.referenced", "dataset.referenced"];
    wait_for_ledger(&ledger, &ns, "minilm", &before).await?;
    let lease = leases.get("openmodel-operator").await?;
    assert_eq!(
        lease_holder(&lease),
        Some("first"),
        "the standby must not lead"
    );

    // Kill the leader; the standby takes over within the lease duration
    // (3 s) plus its retry period (1 s).
    first.kill();
    let killed = Instant::now();
    wait_for(&leases, "openmodel-operator", "the take-over", |l| {
        lease_holder(l) == Some("second")
    })
    .await?;
    let took = killed.elapsed();
    ensure!(
        took <= Duration::from_secs(5),
        "the take-over took {took:?}"
    );

    // The new leader reconciles and records the next generation, once.
    patch_spec(&client, &ns, json!({"runtime": {"replicas": 3}})).await?;
    let mut after = before.to_vec();
    after.push("spec.changed");
    let entries = wait_for_ledger(&ledger, &ns, "minilm", &after).await?;
    assert_eq!(
        data(&entries[3])["patch"],
        json!([{"op": "replace", "path": "/spec/runtime/replicas", "value": 3}])
    );
    let keys: std::collections::HashSet<_> =
        entries.iter().map(|e| e.entry.dedupe_key.clone()).collect();
    assert_eq!(keys.len(), entries.len(), "duplicate dedupe keys");
    second.kill();
    ledger_entries(&ledger, &ns, None)?;
    Ok(())
}
