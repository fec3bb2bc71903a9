//! The admission webhook against the real kube-apiserver: people change
//! OpenModels with kubectl (client certificates of their own, and `--as`
//! impersonation) and scale them (`kubectl scale`, the `scale`
//! subresource), and the ledger says who changed what, with the credential
//! used, before the change was admitted; dry runs and changes the API
//! server refuses are not recorded; with the webhook down and
//! `failurePolicy: Fail`, changes are refused rather than admitted
//! unrecorded. Only the API server may call the webhook: it presents the
//! client certificate its AdmissionConfiguration names, and an
//! AdmissionReview posted by anyone else (naming any user) is refused at
//! the handshake and appends nothing.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use openmodel_history::confirm::Confirmations;
use openmodel_ledger::Ledger;
use openmodel_ledger::entry::{EntryBody, Operation, Source, WeightsVerified};
use openmodel_ledger::note::Signer;
use openmodel_ledger::store::{OpenCheck, StoredEntry};
use openmodel_operator::crd::OpenModel;
use openmodel_operator::journal::LedgerLocation;
use openmodel_operator::webhook::review::change_key;
use openmodel_operator::webhook::{CertificateSource, PATH, WebhookConfig};
use openmodel_runtime::https::ClientAuth;
use openmodel_tests::operator::{
    EXAMPLE_PATH, Operator, control_plane, ledger_entries, namespace, wait_for,
};
use openmodel_tests::{ControlPlane, LedgerService, WEBHOOK_CLIENT_NAME};
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
                "resources": ["openmodels", "openmodels/scale"],
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
            "resources": ["openmodels", "openmodels/scale"],
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
    control_plane: &ControlPlane,
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
        clients: Some(ClientAuth::read(
            control_plane.webhook_client_ca(),
            &[WEBHOOK_CLIENT_NAME.into()],
        )?),
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

    let (mut operator, configuration) = start_operator(control_plane, &client, &ns, None).await?;
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
    // Which credential: the API server names her certificate.
    let credential = actor
        .extra
        .get("authentication.kubernetes.io/credential-id")
        .and_then(|ids| ids.first())
        .with_context(|| format!("no credential id in {actor:?}"))?;
    ensure!(credential.starts_with("X509SHA256="), "{credential}");

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

    // Someone who could write to the ledger claims the dedupe key of
    // carol's next change first, with an entry that records something
    // else: the change is refused with a message naming that entry, never
    // admitted as if the claim recorded it.
    let claimed = claim_next_change_key(&client, &ns, &ledger, &entries[2]).await?;
    let six = r#"{"spec":{"runtime":{"replicas":6}}}"#;
    let output = kubectl_patch(
        control_plane,
        control_plane.kubeconfig(),
        &ns,
        six,
        &["--as", "carol", "--as-group", EDITORS],
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success()
            && stderr.contains(&format!(
                "already used by a different entry at index {claimed}"
            ))
            && stderr.contains(&format!("openmodel audit show {claimed}")),
        "a change whose key was claimed must be refused, naming the claim: {stderr}"
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

    // bob scales it through the scale subresource, as an autoscaler would.
    succeeded(&kubectl(
        control_plane,
        &bob,
        &["scale", "openmodel", "minilm", "-n", &ns, "--replicas=4"],
    )?)?;
    let entries = wait_for_admissions(&ledger, &ns, 5).await?;
    assert_eq!(
        summary(&entries[4]),
        (
            "bob".into(),
            Operation::Update,
            json!([{"op": "replace", "path": "/spec/runtime/replicas", "value": 4}])
        )
    );

    // alice creates the model again: the webhook admits and records the
    // CREATE, then the API server refuses it (the name is taken). The
    // controller confirms every admission that took effect (its entries
    // name them), never that one: it shows as unconfirmed.
    let output = kubectl(
        control_plane,
        &alice,
        &["create", "-n", &ns, "-f", EXAMPLE_PATH],
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("already exists"),
        "a second create of the same name must be refused: {stderr}"
    );
    let entries = wait_for_admissions(&ledger, &ns, 6).await?;
    assert_eq!(summary(&entries[5]).1, Operation::Create);
    wait_for_confirmations(&ledger, &ns, &[entries[5].index]).await?;

    // Someone on the network posts an AdmissionReview naming alice: without
    // the API server's client certificate it is refused at the handshake,
    // with a certificate the cluster CA signed for a user too.
    let forged = forged_review(&ns);
    let ca = webhook_ca(&webhooks, &configuration).await?;
    let url = format!(
        "https://127.0.0.1:{}{PATH}",
        operator.webhook_addr().context("no webhook")?.port()
    );
    for client in [None, Some(user_certificate(&alice)?)] {
        let presented = client.is_some();
        let answer = post_review(url.clone(), ca.clone(), client, forged.clone()).await;
        ensure!(
            answer.is_err(),
            "a review posted without the API server's certificate (a certificate: {presented}) was answered: {answer:?}"
        );
    }
    // The API server's own certificate is answered (here: a review that is
    // not one, refused as such), so the refusals above were the handshake's.
    let apiserver = user_certificate(
        &control_plane
            .data_dir()
            .join("pki")
            .join("admission-kubeconfig.yaml"),
    )?;
    let (status, body) = post_review(url.clone(), ca.clone(), Some(apiserver), json!({})).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        admissions(&ledger, &ns)?.len(),
        6,
        "a forged review must append nothing"
    );

    // bob deletes it: recorded as his DELETE, and retired by the controller.
    succeeded(&kubectl(
        control_plane,
        &bob,
        &["delete", "openmodel", "minilm", "-n", &ns, "--wait=false"],
    )?)?;
    let entries = wait_for_admissions(&ledger, &ns, 7).await?;
    let (user, operation, _) = summary(&entries[6]);
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

/// Appends to `ledger` (beside the operator, as a second writer would)
/// an entry that is not a change under the dedupe key the webhook will give
/// the change of the model's replicas to 6 by the user of `previous` (an
/// admission entry of that user): the index of the claim.
async fn claim_next_change_key(
    client: &Client,
    ns: &str,
    ledger: &Path,
    previous: &StoredEntry,
) -> Result<u64> {
    let model = Api::<OpenModel>::namespaced(client.clone(), ns)
        .get("minilm")
        .await?;
    let actor = previous.entry.actor.clone().context("an actor")?;
    let patch = vec![json!({"op": "replace", "path": "/spec/runtime/replicas", "value": 6})];
    let key = change_key(
        &model.uid().context("a uid")?,
        &model.metadata.generation.unwrap_or(0).to_string(),
        Operation::Update,
        &actor,
        &patch,
    );
    let key_file = ledger.with_file_name("ledger.key");
    let signer: Signer = std::fs::read_to_string(&key_file)?.trim().parse()?;
    let mut claim = previous.entry.clone();
    claim.time = None;
    claim.source = Source::Controller;
    claim.actor = None;
    claim.dedupe_key = Some(key);
    claim.body = EntryBody::WeightsVerified(WeightsVerified {
        digest: format!("sha256:{}", "c".repeat(64)),
        pod: None,
        source: "hf://someone/else@1".into(),
    });
    let ledger = ledger.to_owned();
    let receipt = tokio::task::spawn_blocking(move || {
        Ledger::open(&ledger, signer, OpenCheck::Quick)?.append(claim)
    })
    .await??;
    Ok(receipt.index)
}

/// Waits (at most 30 s) until the admission entries about `ns` that no
/// controller entry confirms are exactly `left`.
async fn wait_for_confirmations(ledger: &Path, ns: &str, left: &[u64]) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut confirmations = Confirmations::default();
        for entry in ledger_entries(ledger, ns, None)? {
            confirmations.read(&entry);
        }
        let unconfirmed: Vec<u64> = confirmations.unconfirmed().collect();
        if unconfirmed == left {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "after 30 s the unconfirmed admissions are {unconfirmed:?}, not {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An AdmissionReview as the API server would send it for alice's change
/// of the model in `ns`, made up by someone else.
fn forged_review(ns: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "f0f0-forged",
            "kind": {"group": "serving.openmodel.dev", "version": "v1alpha1", "kind": "Scale"},
            "resource": {"group": "serving.openmodel.dev", "version": "v1alpha1", "resource": "openmodels"},
            "subResource": "scale",
            "name": "minilm",
            "namespace": ns,
            "operation": "UPDATE",
            "userInfo": {"username": "alice", "groups": [EDITORS]},
            "object": {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "minilm", "namespace": ns, "uid": "forged", "resourceVersion": "1"}, "spec": {"replicas": 9}},
            "oldObject": {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "minilm", "namespace": ns, "uid": "forged", "resourceVersion": "1"}, "spec": {"replicas": 1}},
        }
    })
}

/// The CA the operator put into the webhook configuration's `caBundle`.
async fn webhook_ca(
    webhooks: &Api<ValidatingWebhookConfiguration>,
    configuration: &str,
) -> Result<Vec<u8>> {
    let configuration = webhooks.get(configuration).await?;
    let bundle = configuration
        .webhooks
        .into_iter()
        .flatten()
        .find_map(|w| w.client_config.ca_bundle)
        .context("no caBundle")?;
    Ok(bundle.0)
}

/// The client certificate and key (PEM) of the first user of a kubeconfig.
fn user_certificate(kubeconfig: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let config: Value = serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig)?)?;
    let decode = |field: &str| -> Result<Vec<u8>> {
        let data = config["users"][0]["user"][field]
            .as_str()
            .with_context(|| format!("no {field} in {}", kubeconfig.display()))?;
        Ok(BASE64.decode(data)?)
    };
    Ok((
        decode("client-certificate-data")?,
        decode("client-key-data")?,
    ))
}

/// POSTs `review` to the webhook at `url`, trusting `ca`, presenting
/// `client` (certificate and key, PEM) if given: the status and body.
async fn post_review(
    url: String,
    ca: Vec<u8>,
    client: Option<(Vec<u8>, Vec<u8>)>,
    review: Value,
) -> Result<(u16, String)> {
    tokio::task::spawn_blocking(move || {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let ca = Certificate::from_pem(&ca)?.to_owned();
        let mut tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![ca])));
        if let Some((cert, key)) = client {
            tls = tls.client_cert(Some(ClientCert::new_with_certs(
                &[Certificate::from_pem(&cert)?.to_owned()],
                PrivateKey::from_pem(&key)?.to_owned(),
            )));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut response = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(review.to_string())?;
        let body = response.body_mut().read_to_string()?;
        Ok((response.status().as_u16(), body))
    })
    .await?
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

    let (mut operator, configuration) =
        start_operator(control_plane, &client, &ns, Some(location)).await?;
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
