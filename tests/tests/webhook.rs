//! The admission webhook against the real kube-apiserver: people change
//! OpenModels with kubectl (client certificates of their own, and `--as`
//! impersonation), and the ledger says who changed what, before the change
//! was admitted; dry runs and changes the API server refuses are not
//! recorded; with the webhook down and `failurePolicy: Fail`, changes are
//! refused rather than admitted unrecorded.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, PostParams};
use openmodel_ledger::entry::{EntryBody, Operation, Source};
use openmodel_ledger::store::StoredEntry;
use openmodel_operator::journal::LedgerLocation;
use openmodel_operator::webhook::{CertificateSource, PATH, WebhookConfig};
use openmodel_tests::operator::{
    EXAMPLE_PATH, Operator, control_plane, ledger_entries, namespace, wait_for,
};
use openmodel_tests::{ControlPlane, LedgerService};
use serde_json::{Value, json};

/// The group whose members may edit OpenModels in the test namespace.
const EDITORS: &str = "search-team";

/// Runs kubectl with `kubeconfig` (a user's) and `args`.
fn kubectl(control_plane: &ControlPlane, kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    let mut command = control_plane.kubectl();
    // The last --kubeconfig wins.
    command.arg("--kubeconfig").arg(kubeconfig).args(args);
    command.output().context("running kubectl")
}

fn succeeded(output: &Output) -> Result<()> {
    ensure!(
        output.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Runs `kubectl patch` (merge) of the example model in `ns` with `body`,
/// as the user of `kubeconfig`, with `extra` arguments.
fn kubectl_patch(
    control_plane: &ControlPlane,
    kubeconfig: &Path,
    ns: &str,
    body: &str,
    extra: &[&str],
) -> Result<Output> {
    let mut args = vec![
        "patch",
        "openmodel",
        "minilm",
        "-n",
        ns,
        "--type=merge",
        "-p",
        body,
    ];
    args.extend_from_slice(extra);
    kubectl(control_plane, kubeconfig, &args)
}

/// The admission entries about the example model, in log order.
fn admissions(ledger: &Path, ns: &str) -> Result<Vec<StoredEntry>> {
    Ok(ledger_entries(ledger, ns, Some("minilm"))?
        .into_iter()
        .filter(|e| e.entry.source == Source::Admission)
        .collect())
}

/// Who, which operation, which patch.
fn summary(entry: &StoredEntry) -> (String, Operation, Value) {
    let EntryBody::SpecChanged(change) = &entry.entry.body else {
        panic!("an admission entry is spec.changed: {entry:?}");
    };
    (
        entry
            .entry
            .actor
            .as_ref()
            .map(|a| a.username.clone())
            .unwrap_or_default(),
        change.operation,
        Value::Array(change.patch.clone()),
    )
}

/// Waits until the ledger holds `count` admission entries.
async fn wait_for_admissions(ledger: &Path, ns: &str, count: usize) -> Result<Vec<StoredEntry>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let entries = if ledger.exists() {
            admissions(ledger, ns)?
        } else {
            Vec::new()
        };
        if entries.len() >= count {
            return Ok(entries);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{} admission entries after 30 s, expected {count}",
            entries.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The webhook configuration for OpenModels of `ns` only (the control plane
/// is shared with other tests), calling `url`, failing closed.
async fn register(client: &Client, name: &str, ns: &str, url: &str) -> Result<()> {
    let configuration: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "openmodels.serving.openmodel.dev",
            "clientConfig": {"url": url},
            "rules": [{
                "apiGroups": ["serving.openmodel.dev"],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
                "resources": ["openmodels"],
                "scope": "Namespaced",
            }],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "failurePolicy": "Fail",
            "sideEffects": "NoneOnDryRun",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }],
    }))?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &configuration)
        .await?;
    Ok(())
}

/// Members of [`EDITORS`] may do anything with OpenModels in `ns`.
async fn allow_editors(client: &Client, ns: &str) -> Result<()> {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "openmodel-editor", "namespace": ns},
        "rules": [{
            "apiGroups": ["serving.openmodel.dev"],
            "resources": ["openmodels"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        }],
    }))?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "openmodel-editors", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "openmodel-editor"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": EDITORS}],
    }))?;
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await?;
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// Registers a webhook configuration for `ns` and starts an operator that
/// serves it (writing to `ledger`, default a file of its own); returns once
/// the operator has filled in the configuration's CA. Also returns the
/// configuration's name, for the test to delete.
async fn start_operator(
    client: &Client,
    ns: &str,
    ledger: Option<LedgerLocation>,
) -> Result<(Operator, String)> {
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let configuration = format!("openmodel-{ns}");
    register(
        client,
        &configuration,
        ns,
        &format!("https://127.0.0.1:{}{PATH}", addr.port()),
    )
    .await?;
    let webhook = WebhookConfig {
        listen: addr,
        certificate: CertificateSource::Secret {
            namespace: ns.into(),
            name: "openmodel-webhook-tls".into(),
            hosts: vec!["127.0.0.1".into()],
        },
        configuration: Some(configuration.clone()),
    };
    let operator = Operator::start_with(client, ns, None, Some(webhook), ledger)?;
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    wait_for(&webhooks, &configuration, "the caBundle", |c| {
        c.webhooks
            .iter()
            .flatten()
            .all(|w| w.client_config.ca_bundle.is_some())
    })
    .await?;
    Ok((operator, configuration))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_says_who_changed_what_before_it_is_admitted() -> Result<()> {
    let control_plane = control_plane().await;
    let client = control_plane.client()?;
    let ns = namespace(&client, "webhook").await?;
    allow_editors(&client, &ns).await?;
    let alice = control_plane.user_kubeconfig("alice", &[EDITORS])?;
    let bob = control_plane.user_kubeconfig("bob", &[EDITORS])?;

    let (mut operator, configuration) = start_operator(&client, &ns, None).await?;
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let ledger = operator.ledger_path();

    // alice creates the model with her own certificate.
    succeeded(&kubectl(
        control_plane,
        &alice,
        &["apply", "-n", &ns, "-f", EXAMPLE_PATH],
    )?)?;
    let entries = wait_for_admissions(&ledger, &ns, 1).await?;
    let (user, operation, patch) = summary(&entries[0]);
    assert_eq!((user.as_str(), operation), ("alice", Operation::Create));
    assert_eq!(patch[0]["path"], "/spec");
    let actor = entries[0].entry.actor.clone().context("an actor")?;
    ensure!(actor.groups.contains(&EDITORS.to_string()), "{actor:?}");

    // bob scales it.
    let replicas = r#"{"spec":{"runtime":{"replicas":3}}}"#;
    succeeded(&kubectl_patch(control_plane, &bob, &ns, replicas, &[])?)?;
    let entries = wait_for_admissions(&ledger, &ns, 2).await?;
    assert_eq!(
        summary(&entries[1]),
        (
            "bob".into(),
            Operation::Update,
            json!([{"op": "replace", "path": "/spec/runtime/replicas", "value": 3}])
        )
    );

    // The administrator acts as carol, by impersonation.
    let owner = r#"{"spec":{"provenance":{"owner":"carol@example.com"}}}"#;
    succeeded(&kubectl_patch(
        control_plane,
        control_plane.kubeconfig(),
        &ns,
        owner,
        &["--as", "carol", "--as-group", EDITORS],
    )?)?;
    let entries = wait_for_admissions(&ledger, &ns, 3).await?;
    let (user, operation, _) = summary(&entries[2]);
    assert_eq!((user.as_str(), operation), ("carol", Operation::Update));
    ensure!(
        entries[2]
            .entry
            .actor
            .as_ref()
            .is_some_and(|a| a.groups.contains(&EDITORS.to_string())),
        "{:?}",
        entries[2].entry.actor
    );

    // A dry run, and a change the API server refuses (CEL: replicas ≥ 0),
    // are not recorded.
    let dry = r#"{"spec":{"runtime":{"replicas":5}}}"#;
    succeeded(&kubectl_patch(
        control_plane,
        &alice,
        &ns,
        dry,
        &["--dry-run=server"],
    )?)?;
    let refused = r#"{"spec":{"runtime":{"replicas":-1}}}"#;
    let output = kubectl_patch(control_plane, &alice, &ns, refused, &[])?;
    ensure!(!output.status.success(), "replicas -1 must be refused");
    // A change made after them shows nothing came in between.
    let two = r#"{"spec":{"runtime":{"replicas":2}}}"#;
    succeeded(&kubectl_patch(control_plane, &alice, &ns, two, &[])?)?;
    let entries = wait_for_admissions(&ledger, &ns, 4).await?;
    assert_eq!(entries.len(), 4, "only real, admitted changes are recorded");
    assert_eq!(
        summary(&entries[3]).2,
        json!([{"op": "replace", "path": "/spec/runtime/replicas", "value": 2}])
    );

    // bob deletes it: recorded as his DELETE, and retired by the controller.
    succeeded(&kubectl(
        control_plane,
        &bob,
        &["delete", "openmodel", "minilm", "-n", &ns, "--wait=false"],
    )?)?;
    let entries = wait_for_admissions(&ledger, &ns, 5).await?;
    let (user, operation, _) = summary(&entries[4]);
    assert_eq!((user.as_str(), operation), ("bob", Operation::Delete));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ledger_entries(&ledger, &ns, Some("minilm"))?
        .iter()
        .any(|e| e.entry.kind() == "model.retired")
    {
        ensure!(
            std::time::Instant::now() < deadline,
            "no model.retired after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // With the webhook down, changes are refused, not admitted unrecorded.
    operator.stop().await?;
    let before = admissions(&ledger, &ns)?.len();
    let output = kubectl(
        control_plane,
        &alice,
        &["apply", "-n", &ns, "-f", EXAMPLE_PATH],
    )?;
    ensure!(
        !output.status.success(),
        "a change must be refused while the webhook is down"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.contains("failed calling webhook"), "{stderr}");
    assert_eq!(admissions(&ledger, &ns)?.len(), before);
    webhooks.delete(&configuration, &Default::default()).await?;
    Ok(())
}

/// With the ledger service, the webhook records through it (as the
/// operator's service account), so every instance can serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ledger_service_admissions_are_recorded_there() -> Result<()> {
    let control_plane = control_plane().await;
    let client = control_plane.client()?;
    let ns = namespace(&client, "webhook_service").await?;
    allow_editors(&client, &ns).await?;
    let alice = control_plane.user_kubeconfig("alice", &[EDITORS])?;
    let (service, location) = LedgerService::for_operator(&client, &ns).await?;

    let (mut operator, configuration) = start_operator(&client, &ns, Some(location)).await?;
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    succeeded(&kubectl(
        control_plane,
        &alice,
        &["apply", "-n", &ns, "-f", EXAMPLE_PATH],
    )?)?;
    // The admission is in the service's ledger by the time kubectl returns.
    let ledger = service.read_ledger()?;
    let size = ledger.checkpoint()?.checkpoint.size;
    let admitted = (0..size)
        .map(|i| ledger.entry(i))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|e| e.entry.source == Source::Admission)
        .context("no admission entry in the service's ledger")?;
    assert_eq!(
        admitted.entry.actor.as_ref().map(|a| a.username.as_str()),
        Some("alice")
    );
    operator.stop().await?;
    webhooks.delete(&configuration, &Default::default()).await?;
    Ok(())
}
