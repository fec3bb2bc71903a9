//! The Helm chart (`charts/openmodel`) with the real helm (v4, from
//! `scripts/fetch-helm.sh`): its CRD is `crds/openmodel.yaml`, it lints and
//! renders with the default values and with a values file that sets every
//! option, its schema refuses bad values with clear messages, the values
//! reference in docs/install.md names every value, and it installs into the
//! real kube-apiserver (in a namespace enforcing Pod Security "restricted"),
//! upgrades keeping the ledger's key and volume, and uninstalls keeping the
//! CRD, the volume and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context as _, Result, ensure};
use openmodel_ledger::note::Signer;
use openmodel_tests::helm::{chart_dir, helm};
use openmodel_tests::{ControlPlane, create_namespace};
use serde_json::{Value, json};

const ALL_OPTIONS: &str = "ci/all-options-values.yaml";
const CRD_NAME: &str = "openmodels.serving.openmodel.dev";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn run(mut command: Command) -> Result<Output> {
    let shown = format!("{command:?}");
    command.output().with_context(|| format!("running {shown}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs helm with `args` in the chart's folder; fails unless it succeeds.
fn helm_ok(args: &[&str]) -> Result<Output> {
    let output = helm_run(args)?;
    ensure!(
        output.status.success(),
        "helm {args:?} failed:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
    Ok(output)
}

fn helm_run(args: &[&str]) -> Result<Output> {
    let mut command = helm()?;
    command.current_dir(chart_dir()).args(args);
    run(command)
}

/// The documents of a multi-document YAML stream, empty ones left out.
fn documents(yaml: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).context("parsing helm's output")?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// `helm template` with `args`, as documents.
fn template(args: &[&str]) -> Result<Vec<Value>> {
    let mut all = vec!["template", "om", ".", "--namespace", "openmodel-system"];
    all.extend_from_slice(args);
    documents(&stdout(&helm_ok(&all)?))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .filter_map(|d| d["kind"].as_str().map(str::to_owned))
        .collect()
}

/// Checks a pod template against Pod Security "restricted" and the chart's
/// own rules (limits, read-only root filesystem).
fn check_pod_template(what: &str, template: &Value) -> Result<()> {
    let spec = &template["spec"];
    ensure!(
        spec["securityContext"]["runAsNonRoot"] == true,
        "{what}: runAsNonRoot"
    );
    ensure!(
        spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
        "{what}: seccomp"
    );
    let containers = spec["containers"].as_array().context("containers")?;
    ensure!(!containers.is_empty(), "{what}: no containers");
    for container in containers {
        let context = &container["securityContext"];
        ensure!(
            context["allowPrivilegeEscalation"] == false,
            "{what}: allowPrivilegeEscalation"
        );
        ensure!(
            context["readOnlyRootFilesystem"] == true,
            "{what}: readOnlyRootFilesystem"
        );
        ensure!(
            context["capabilities"]["drop"] == json!(["ALL"]),
            "{what}: capabilities"
        );
        for bound in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                ensure!(
                    !container["resources"][bound][resource].is_null(),
                    "{what}: resources.{bound}.{resource}"
                );
            }
        }
    }
    Ok(())
}

fn arg_value<'a>(args: &'a [Value], flag: &str) -> Option<&'a str> {
    args.iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

#[test]
fn chart_crd_is_crds_openmodel_yaml() -> Result<()> {
    let root = workspace();
    let source = std::fs::read(root.join("crds/openmodel.yaml"))?;
    let chart = std::fs::read(root.join("charts/openmodel/crds/openmodel.yaml"))?;
    ensure!(
        source == chart,
        "charts/openmodel/crds/openmodel.yaml differs from crds/openmodel.yaml: \
         cp crds/openmodel.yaml charts/openmodel/crds/openmodel.yaml"
    );
    Ok(())
}

#[test]
fn lint_and_template_pass_with_default_values() -> Result<()> {
    helm_ok(&["lint", "--strict", "."])?;
    let docs = template(&[])?;
    let expected: BTreeSet<String> = [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
        "StatefulSet",
        "ValidatingWebhookConfiguration",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(kinds(&docs), expected);

    let operator = find(&docs, "Deployment", "om-openmodel-operator").context("operator")?;
    assert_eq!(operator["spec"]["replicas"], 2);
    let pod_template = &operator["spec"]["template"];
    check_pod_template("operator", pod_template)?;
    let container = &pod_template["spec"]["containers"][0];
    assert_eq!(container["image"], "openmodel/openmodel-operator:0.1.0");
    let args = container["args"].as_array().context("args")?;
    assert_eq!(
        arg_value(args, "--ledger-server"),
        Some("https://om-openmodel-ledger.openmodel-system.svc:8443")
    );
    assert_eq!(
        arg_value(args, "--webhook-configuration"),
        Some("om-openmodel-openmodel-system")
    );
    assert_eq!(
        arg_value(args, "--webhook-host"),
        Some("om-openmodel-webhook.openmodel-system.svc")
    );
    assert_eq!(
        arg_value(args, "--lease-namespace"),
        Some("openmodel-system")
    );
    assert_eq!(arg_value(args, "--gpu-resource"), Some("nvidia.com/gpu"));
    assert_eq!(arg_value(args, "--gpu-runtime-class-name"), None);

    let ledger = find(&docs, "StatefulSet", "om-openmodel-ledger").context("ledger")?;
    assert_eq!(ledger["spec"]["replicas"], 1);
    check_pod_template("ledger", &ledger["spec"]["template"])?;
    let args = ledger["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .context("args")?;
    assert_eq!(
        arg_value(args, "--append-user"),
        Some("system:serviceaccount:openmodel-system:om-openmodel-operator")
    );

    // The generated signing key is a valid note key named by the origin.
    let secret = find(&docs, "Secret", "om-openmodel-ledger-signing-key").context("signing key")?;
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let key = decode(&secret["data"]["ledger.key"])?;
    let signer: Signer = key.parse().context("the generated key")?;
    assert_eq!(
        signer.name(),
        "openmodel-system.kubernetes/om-openmodel-ledger"
    );
    // A second rendering generates another key.
    let again = template(&[])?;
    let other = find(&again, "Secret", "om-openmodel-ledger-signing-key").context("key")?;
    assert_ne!(other["data"], secret["data"]);

    // The generated TLS certificate, its CA, and the operator trusting it.
    let tls = find(&docs, "Secret", "om-openmodel-ledger-tls").context("tls")?;
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        ensure!(
            decode(&tls["data"][key])?.starts_with("-----BEGIN"),
            "{key} is PEM"
        );
    }

    let view = find(
        &docs,
        "ClusterRole",
        "om-openmodel-openmodel-system-audit-view",
    )
    .context("audit view role")?;
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    assert_eq!(
        view["rules"],
        json!([{"apiGroups": ["serving.openmodel.dev"], "resources": ["openmodels/audit"], "verbs": ["get"]}])
    );
    let webhook_role = find(
        &docs,
        "ClusterRole",
        "om-openmodel-openmodel-system-operator-webhook",
    )
    .context("webhook role")?;
    assert_eq!(
        webhook_role["rules"][0]["resourceNames"],
        json!(["om-openmodel-openmodel-system"])
    );
    Ok(())
}

fn decode(value: &Value) -> Result<String> {
    use base64::Engine as _;
    let text = value.as_str().context("a base64 string")?;
    Ok(String::from_utf8(
        base64::engine::general_purpose::STANDARD.decode(text)?,
    )?)
}

#[test]
fn lint_and_template_pass_with_every_option() -> Result<()> {
    helm_ok(&["lint", "--strict", ".", "-f", ALL_OPTIONS])?;
    let docs = template(&["-f", ALL_OPTIONS])?;
    ensure!(kinds(&docs).contains("ServiceMonitor"), "ServiceMonitor");
    // Existing key and TLS Secrets: the chart makes none.
    ensure!(
        !docs.iter().any(|d| d["kind"] == "Secret"),
        "no chart-made Secret with existing ones"
    );
    let operator = find(&docs, "Deployment", "om-all-operator").context("operator")?;
    assert_eq!(operator["spec"]["replicas"], 3);
    check_pod_template("operator", &operator["spec"]["template"])?;
    let container = &operator["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "registry.example.internal/mirror/openmodel-operator@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    );
    let args = container["args"].as_array().context("args")?;
    assert_eq!(arg_value(args, "--watch-namespace"), Some("search"));
    // The cluster's GPU defaults, for models that name none.
    assert_eq!(
        arg_value(args, "--gpu-resource"),
        Some("nvidia.com/mig-1g.18gb")
    );
    assert_eq!(arg_value(args, "--gpu-runtime-class-name"), Some("nvidia"));
    assert_eq!(
        arg_value(args, "--webhook-secret"),
        Some("om-webhook-certs")
    );
    // Only the API server may call the webhook: its client CA and name.
    assert_eq!(
        arg_value(args, "--webhook-client-ca"),
        Some("/etc/openmodel/webhook-client-ca/ca.crt")
    );
    assert_eq!(
        arg_value(args, "--webhook-client-name"),
        Some("kube-apiserver-webhook-client")
    );
    let client_ca = find(&docs, "ConfigMap", "om-all-webhook-client-ca").context("client CA")?;
    ensure!(
        client_ca["data"]["ca.crt"]
            .as_str()
            .is_some_and(|pem| pem.starts_with("-----BEGIN CERTIFICATE-----")),
        "{client_ca}"
    );
    let policy = find(&docs, "NetworkPolicy", "om-all-operator").context("operator policy")?;
    assert_eq!(
        policy["spec"]["ingress"][0]["from"],
        json!([{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "10.0.0.11/32"}}])
    );
    let ledger = find(&docs, "StatefulSet", "om-all-ledger").context("ledger")?;
    check_pod_template("ledger", &ledger["spec"]["template"])?;
    let spec = &ledger["spec"]["template"]["spec"];
    assert_eq!(spec["securityContext"]["runAsUser"], 10001);
    assert_eq!(
        spec["containers"][0]["image"],
        "registry.example.internal/mirror/openmodel-ledger:0.1.0-rc1"
    );
    let args = spec["containers"][0]["args"].as_array().context("args")?;
    assert_eq!(
        arg_value(args, "--key-file"),
        Some("/etc/openmodel/ledger-key/key")
    );
    let volumes = spec["volumes"].as_array().context("volumes")?;
    ensure!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "om-ledger-key"),
        "key from the existing Secret"
    );
    ensure!(
        !kinds(&docs).contains("ClusterRole")
            || find(&docs, "ClusterRole", "om-all-openmodel-system-audit-view").is_none(),
        "aggregation off"
    );
    let pvc = find(&docs, "PersistentVolumeClaim", "om-all-ledger-data").context("pvc")?;
    assert_eq!(pvc["spec"]["storageClassName"], "fast-ssd");
    Ok(())
}

#[test]
fn schema_rejects_bad_values() -> Result<()> {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "operator.replicas=two"],
            "at '/operator/replicas': got string, want integer",
        ),
        (
            &["--set", "operator.replicas=0"],
            "at '/operator/replicas': minimum",
        ),
        (
            &["--set", "operator.replicaz=2"],
            "at '/operator': additional properties 'replicaz' not allowed",
        ),
        (
            &["--set", "webhook.failurePolicy=Sometimes"],
            "at '/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'",
        ),
        (
            &["--set", "webhook.clientAuth.caBundle=not-a-certificate"],
            "at '/webhook/clientAuth/caBundle': ",
        ),
        (
            &["--set", "webhook.apiServerCIDRs={10.0.0.1}"],
            "at '/webhook/apiServerCIDRs/0': ",
        ),
        (
            &["--set", "operator.image.pullPolicy=Sometimes"],
            "at '/operator/image/pullPolicy': value must be one of",
        ),
        (
            &["--set", "ledger.signingKey.privateKey=not-a-key"],
            "at '/ledger/signingKey/privateKey'",
        ),
        (
            &["--set", "ledger.service.grpcPort=70000"],
            "at '/ledger/service/grpcPort': maximum",
        ),
        (
            &["--set", "ledger.origin=bad origin"],
            "at '/ledger/origin'",
        ),
        (
            &["--set", "operator.gpu.resourceName=kubernetes.io/gpu"],
            "at '/operator/gpu/resourceName'",
        ),
        (
            &["--set", "operator.gpu.resourceName=gpu"],
            "at '/operator/gpu/resourceName'",
        ),
        (
            &["--set", "operator.gpu.runtimeClassName=Nvidia"],
            "at '/operator/gpu/runtimeClassName'",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["template", "om", "."];
        all.extend_from_slice(args);
        let output = helm_run(&all)?;
        ensure!(!output.status.success(), "{args:?} was accepted");
        let err = stderr(&output);
        ensure!(
            err.contains(message),
            "{args:?}: expected {message:?} in:\n{err}"
        );
    }
    // Both key sources at once: refused by the chart, naming both.
    let output = helm_run(&[
        "template",
        "om",
        ".",
        "--set",
        "ledger.signingKey.existingSecret=k",
        "--set",
        "ledger.signingKey.privateKey=PRIVATE+KEY+a+01234567+AAAA",
    ])?;
    ensure!(!output.status.success());
    ensure!(
        stderr(&output).contains("set either existingSecret or privateKey, not both"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

/// Every value path in values.schema.json (leaves), with its description.
fn schema_paths(schema: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match schema["properties"].as_object() {
        Some(properties) if schema["additionalProperties"] == false => {
            for (name, sub) in properties {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                schema_paths(sub, &path, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned(), schema.clone());
        }
    }
}

#[test]
fn install_doc_names_every_value_of_the_schema() -> Result<()> {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(
        chart_dir().join("values.schema.json"),
    )?)?;
    let mut paths = BTreeMap::new();
    schema_paths(&schema, "", &mut paths);
    ensure!(paths.len() > 50, "{} value paths", paths.len());
    let doc = std::fs::read_to_string(workspace().join("docs/install.md"))?;
    let documented: BTreeSet<&str> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
        .collect();
    let missing: Vec<_> = paths
        .keys()
        .filter(|p| *p != "global" && !documented.contains(p.as_str()))
        .collect();
    ensure!(
        missing.is_empty(),
        "docs/install.md's values reference lacks {missing:?}"
    );
    let unknown: Vec<_> = documented
        .iter()
        .filter(|p| p.contains('.') || paths.contains_key(**p))
        .filter(|p| !paths.contains_key(**p))
        .collect();
    ensure!(
        unknown.is_empty(),
        "docs/install.md names values the schema does not have: {unknown:?}"
    );
    // And values.yaml sets exactly those values (the schema's
    // additionalProperties: false refuses any other at lint).
    Ok(())
}

// ---- against the real control plane ----

fn kubectl(control_plane: &ControlPlane, args: &[&str]) -> Result<Output> {
    let mut command = control_plane.kubectl();
    command.args(args);
    run(command)
}

fn kubectl_ok(control_plane: &ControlPlane, args: &[&str]) -> Result<Output> {
    let output = kubectl(control_plane, args)?;
    ensure!(
        output.status.success(),
        "kubectl {args:?}: {}",
        stderr(&output)
    );
    Ok(output)
}

fn get_json(control_plane: &ControlPlane, args: &[&str]) -> Result<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    Ok(serde_json::from_str(&stdout(&kubectl_ok(
        control_plane,
        &all,
    )?))?)
}

fn not_found(control_plane: &ControlPlane, args: &[&str]) -> Result<bool> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let output = kubectl(control_plane, &all)?;
    Ok(!output.status.success() && stderr(&output).contains("NotFound"))
}

/// Creates a Pod from a stored pod template with a server-side dry run, so
/// the namespace's Pod Security admission judges it.
fn dry_run_pod(control_plane: &ControlPlane, ns: &str, name: &str, template: &Value) -> Result<()> {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    });
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), serde_json::to_vec(&pod)?)?;
    let path = file.path().to_str().context("temporary path")?;
    let output = kubectl(
        control_plane,
        &["create", "--dry-run=server", "-f", path, "-o", "name"],
    )?;
    ensure!(
        output.status.success(),
        "the {name} pod is refused: {}",
        stderr(&output)
    );
    ensure!(
        !stderr(&output).contains("PodSecurity"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

#[tokio::test]
async fn install_upgrade_and_uninstall_on_the_control_plane() -> Result<()> {
    let control_plane = ControlPlane::shared()
        .await
        .unwrap_or_else(|err| panic!("starting the control plane: {err}"));
    let client = control_plane.client()?;
    let ns = create_namespace(&client, "helm_install").await?;
    kubectl_ok(
        control_plane,
        &[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ],
    )?;
    let kubeconfig = control_plane
        .kubeconfig()
        .to_str()
        .context("kubeconfig path")?
        .to_owned();
    let release = "om";
    let base = |verb: &'static str| -> Vec<String> {
        [
            verb,
            release,
            ".",
            "--namespace",
            &ns,
            "--kubeconfig",
            &kubeconfig,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect()
    };

    // Install.
    let args = base("install");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let installed = helm_ok(&args)?;
    let warnings = stderr(&installed);
    ensure!(
        !warnings.contains("PodSecurity") && !warnings.contains("would violate"),
        "Pod Security warnings: {warnings}"
    );
    ensure!(
        stdout(&installed).contains("Apply a first model"),
        "NOTES.txt: {}",
        stdout(&installed)
    );
    kubectl_ok(
        control_plane,
        &[
            "wait",
            "--for=condition=Established",
            &format!("crd/{CRD_NAME}"),
            "--timeout=60s",
        ],
    )?;

    let operator = get_json(
        control_plane,
        &["deployment", "om-openmodel-operator", "-n", &ns],
    )?;
    assert_eq!(operator["spec"]["replicas"], 2);
    let ledger = get_json(
        control_plane,
        &["statefulset", "om-openmodel-ledger", "-n", &ns],
    )?;
    for name in [
        "service/om-openmodel-webhook",
        "service/om-openmodel-operator-metrics",
        "service/om-openmodel-ledger",
        "serviceaccount/om-openmodel-operator",
        "serviceaccount/om-openmodel-ledger",
        "role/om-openmodel-operator",
        "rolebinding/om-openmodel-operator",
        "networkpolicy/om-openmodel-operator",
        "networkpolicy/om-openmodel-ledger",
        "poddisruptionbudget/om-openmodel-operator",
        "persistentvolumeclaim/om-openmodel-ledger-data",
        "secret/om-openmodel-ledger-tls",
    ] {
        kubectl_ok(control_plane, &["get", name, "-n", &ns])?;
    }
    let cluster_prefix = format!("om-openmodel-{ns}");
    for name in [
        format!("validatingwebhookconfiguration/{cluster_prefix}"),
        format!("clusterrole/{cluster_prefix}-operator"),
        format!("clusterrole/{cluster_prefix}-operator-webhook"),
        format!("clusterrole/{cluster_prefix}-audit-view"),
        format!("clusterrolebinding/{cluster_prefix}-operator"),
        format!("clusterrolebinding/{cluster_prefix}-operator-webhook"),
        format!("clusterrolebinding/{cluster_prefix}-ledger-auth-delegator"),
    ] {
        kubectl_ok(control_plane, &["get", &name])?;
    }
    // Both pod templates, as pods, pass "restricted" enforcement.
    dry_run_pod(
        control_plane,
        &ns,
        "operator",
        &operator["spec"]["template"],
    )?;
    dry_run_pod(control_plane, &ns, "ledger", &ledger["spec"]["template"])?;
    // And the namespace does enforce it: the same pod running as root is refused.
    let mut rooted = ledger["spec"]["template"].clone();
    rooted["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
    let refused = dry_run_pod(control_plane, &ns, "rooted", &rooted)
        .err()
        .context("a pod with runAsNonRoot: false was accepted")?;
    ensure!(
        refused
            .to_string()
            .contains("violates PodSecurity \"restricted"),
        "{refused}"
    );

    // Every object of the all-options rendering passes the API server's
    // validation too (a server-side dry run; the ServiceMonitor needs the
    // prometheus-operator's CRD, which this cluster lacks).
    let rendered = helm_ok(&["template", "om", ".", "--namespace", &ns, "-f", ALL_OPTIONS])?;
    let objects: Vec<Value> = documents(&stdout(&rendered))?
        .into_iter()
        .filter(|d| d["kind"] != "ServiceMonitor")
        .collect();
    ensure!(objects.len() > 15, "{} objects", objects.len());
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), serde_json::to_vec(&list)?)?;
    let path = file.path().to_str().context("temporary path")?;
    let checked = kubectl_ok(
        control_plane,
        &["apply", "--server-side", "--dry-run=server", "-f", path],
    )?;
    ensure!(
        stdout(&checked).contains("om-all-operator serverside-applied (server dry run)"),
        "{}",
        stdout(&checked)
    );

    let key_secret = get_json(
        control_plane,
        &["secret", "om-openmodel-ledger-signing-key", "-n", &ns],
    )?;
    let key: Signer = decode(&key_secret["data"]["ledger.key"])?
        .parse()
        .context("the installed key")?;
    assert_eq!(key.name(), format!("{ns}.kubernetes/om-openmodel-ledger"));
    let tls_secret = get_json(
        control_plane,
        &["secret", "om-openmodel-ledger-tls", "-n", &ns],
    )?;
    let pvc = get_json(
        control_plane,
        &["pvc", "om-openmodel-ledger-data", "-n", &ns],
    )?;

    // Upgrade with more operator replicas: key, certificate and volume stay.
    let mut args = base("upgrade");
    args.extend(["--set".to_owned(), "operator.replicas=3".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    helm_ok(&args)?;
    let operator = get_json(
        control_plane,
        &["deployment", "om-openmodel-operator", "-n", &ns],
    )?;
    assert_eq!(operator["spec"]["replicas"], 3);
    let key_after = get_json(
        control_plane,
        &["secret", "om-openmodel-ledger-signing-key", "-n", &ns],
    )?;
    assert_eq!(
        key_after["data"], key_secret["data"],
        "the signing key changed"
    );
    assert_eq!(key_after["metadata"]["uid"], key_secret["metadata"]["uid"]);
    let tls_after = get_json(
        control_plane,
        &["secret", "om-openmodel-ledger-tls", "-n", &ns],
    )?;
    assert_eq!(
        tls_after["data"], tls_secret["data"],
        "the TLS certificate changed"
    );
    let pvc_after = get_json(
        control_plane,
        &["pvc", "om-openmodel-ledger-data", "-n", &ns],
    )?;
    assert_eq!(pvc_after["metadata"]["uid"], pvc["metadata"]["uid"]);

    // Uninstall: the workloads go; the CRD, the volume and the key stay.
    let args = [
        "uninstall",
        release,
        "--namespace",
        &ns,
        "--kubeconfig",
        &kubeconfig,
    ];
    let uninstalled = helm_ok(&args)?;
    for (kind, name) in [
        ("deployment", "om-openmodel-operator"),
        ("statefulset", "om-openmodel-ledger"),
        ("service", "om-openmodel-webhook"),
    ] {
        ensure!(
            not_found(control_plane, &[kind, name, "-n", &ns])?,
            "{kind}/{name} is still there after uninstall"
        );
    }
    ensure!(
        not_found(
            control_plane,
            &["validatingwebhookconfiguration", &cluster_prefix]
        )?,
        "the webhook configuration is still there"
    );
    kubectl_ok(control_plane, &["get", "crd", CRD_NAME])?;
    let pvc_kept = get_json(
        control_plane,
        &["pvc", "om-openmodel-ledger-data", "-n", &ns],
    )?;
    assert_eq!(pvc_kept["metadata"]["uid"], pvc["metadata"]["uid"]);
    ensure!(
        pvc_kept["metadata"]["deletionTimestamp"].is_null(),
        "the ledger volume is being deleted"
    );
    let key_kept = get_json(
        control_plane,
        &["secret", "om-openmodel-ledger-signing-key", "-n", &ns],
    )?;
    assert_eq!(key_kept["data"], key_secret["data"]);
    let kept = stdout(&uninstalled) + &stderr(&uninstalled);
    ensure!(
        kept.contains("om-openmodel-ledger-data"),
        "helm names what it kept: {kept}"
    );

    // A new install of the same release adopts the kept key and volume.
    let args = base("install");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    helm_ok(&args)?;
    let key_again = get_json(
        control_plane,
        &["secret", "om-openmodel-ledger-signing-key", "-n", &ns],
    )?;
    assert_eq!(key_again["data"], key_secret["data"]);
    let pvc_again = get_json(
        control_plane,
        &["pvc", "om-openmodel-ledger-data", "-n", &ns],
    )?;
    assert_eq!(pvc_again["metadata"]["uid"], pvc["metadata"]["uid"]);
    Ok(())
}
