//! The control-plane harness against the real etcd, kube-apiserver and
//! kubectl: versions, the kubeconfig, CRDs with OpenAPI and CEL validation,
//! and RBAC for service-account tokens. All tests share one control plane.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Api, ResourceExt};
use openmodel_tests::{
    ControlPlane, TEST_LABEL, create_namespace, install_crds, service_account_token,
};
use serde_json::{Value, json};

async fn control_plane() -> &'static ControlPlane {
    ControlPlane::shared()
        .await
        .unwrap_or_else(|err| panic!("starting the control plane: {err}"))
}

/// Runs kubectl against the control plane and parses its JSON output.
fn kubectl_json(control_plane: &ControlPlane, args: &[&str]) -> Result<Value> {
    let output: Output = control_plane
        .kubectl()
        .args(args)
        .args(["-o", "json"])
        .output()
        .context("running kubectl")?;
    ensure!(
        output.status.success(),
        "kubectl {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).context("kubectl's JSON")
}

/// The Kubernetes version tools/k8s/go.mod builds.
fn built_version() -> Result<String> {
    let go_mod = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/k8s/go.mod");
    let text = std::fs::read_to_string(go_mod).context("reading tools/k8s/go.mod")?;
    text.lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("k8s.io/kubernetes"))
                .then(|| words.next())
                .flatten()
                .map(str::to_string)
        })
        .context("k8s.io/kubernetes is not required in tools/k8s/go.mod")
}

/// The API error a request failed with.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Result<Box<kube::core::Status>> {
    match result {
        Err(kube::Error::Api(status)) => Ok(status),
        other => bail!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_server_and_kubectl_report_the_version_built_from_go_mod() -> Result<()> {
    let control_plane = control_plane().await;
    let expected = built_version()?;
    ensure!(
        expected.starts_with("v1.36."),
        "tools/k8s builds {expected}"
    );

    let info = control_plane.client()?.apiserver_version().await?;
    assert_eq!(info.git_version, expected);
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "36"));

    let version = kubectl_json(control_plane, &["version"])?;
    assert_eq!(version["clientVersion"]["gitVersion"], json!(expected));
    assert_eq!(version["serverVersion"]["gitVersion"], json!(expected));
    assert_eq!(version["clientVersion"]["minor"], json!("36"));
    Ok(())
}

#[tokio::test]
async fn a_config_map_written_with_the_rust_client_is_read_by_kubectl() -> Result<()> {
    let control_plane = control_plane().await;
    let client = control_plane.client()?;
    let namespace = create_namespace(&client, "config_map_round_trip").await?;
    assert!(
        namespace.starts_with("config-map-round-trip-"),
        "{namespace}"
    );

    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            ("model".to_string(), "all-MiniLM-L6-v2".to_string()),
            ("replicas".to_string(), "2".to_string()),
        ])),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(client, &namespace)
        .create(&PostParams::default(), &config_map)
        .await?;

    let read = kubectl_json(
        control_plane,
        &["get", "configmap", "settings", "-n", &namespace],
    )?;
    assert_eq!(read["metadata"]["namespace"], json!(namespace));
    assert_eq!(
        read["data"],
        json!({"model": "all-MiniLM-L6-v2", "replicas": "2"})
    );

    let namespace_object = kubectl_json(control_plane, &["get", "namespace", &namespace])?;
    assert_eq!(
        namespace_object["metadata"]["labels"][TEST_LABEL],
        json!("config-map-round-trip")
    );
    Ok(())
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.openmodel.dev
spec:
  group: test.openmodel.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [replicas, maxReplicas]
              properties:
                replicas: {type: integer, minimum: 0}
                maxReplicas: {type: integer, minimum: 1}
              x-kubernetes-validations:
                - rule: self.replicas <= self.maxReplicas
                  message: replicas must not exceed maxReplicas
"#;

#[tokio::test]
async fn an_installed_crd_is_established_and_its_schema_and_cel_rules_are_enforced() -> Result<()> {
    let control_plane = control_plane().await;
    let client = control_plane.client()?;
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("widgets.yaml");
    std::fs::write(&manifest, WIDGET_CRD)?;

    let crds = install_crds(&client, &manifest).await?;
    assert_eq!(crds.len(), 1);
    let conditions = crds[0].status.as_ref().and_then(|s| s.conditions.clone());
    assert!(
        conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"),
        "{:?}",
        crds[0].status
    );
    // Applying the same manifest again changes nothing and still succeeds.
    install_crds(&client, &manifest).await?;

    let namespace = create_namespace(&client, "widgets").await?;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.openmodel.dev", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    let widget =
        |name: &str, spec: Value| DynamicObject::new(name, &resource).data(json!({ "spec": spec }));

    widgets
        .create(
            &PostParams::default(),
            &widget("fine", json!({"replicas": 2, "maxReplicas": 3})),
        )
        .await?;

    let cel = api_error(
        widgets
            .create(
                &PostParams::default(),
                &widget("too-many", json!({"replicas": 5, "maxReplicas": 3})),
            )
            .await,
    )?;
    assert_eq!(cel.code, 422, "{cel:?}");
    assert!(
        cel.message.contains("replicas must not exceed maxReplicas"),
        "{}",
        cel.message
    );

    let openapi = api_error(
        widgets
            .create(
                &PostParams::default(),
                &widget("negative", json!({"replicas": -1, "maxReplicas": 3})),
            )
            .await,
    )?;
    assert_eq!(openapi.code, 422, "{openapi:?}");
    assert!(
        openapi
            .message
            .contains("spec.replicas in body should be greater than or equal to 0"),
        "{}",
        openapi.message
    );

    // kubectl discovers the new resource and sees only the valid widget.
    let listed = kubectl_json(control_plane, &["get", "widgets", "-n", &namespace])?;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|item| item["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["fine"]);
    Ok(())
}

#[tokio::test]
async fn rbac_forbids_a_service_account_until_a_role_allows_it() -> Result<()> {
    let control_plane = control_plane().await;
    let admin = control_plane.client()?;
    let namespace = create_namespace(&admin, "rbac").await?;
    let token = service_account_token(&admin, &namespace, "reader").await?;
    let reader = control_plane.client_with_token(&token)?;

    // The token authenticates (issuer and signing key are wired up) ...
    let review = Api::<SelfSubjectReview>::all(reader.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let user = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username);
    let username = format!("system:serviceaccount:{namespace}:reader");
    assert_eq!(user.as_deref(), Some(username.as_str()));

    // ... but grants nothing.
    let config_maps = Api::<ConfigMap>::namespaced(reader.clone(), &namespace);
    let forbidden = api_error(config_maps.list(&ListParams::default()).await)?;
    assert_eq!(forbidden.code, 403, "{forbidden:?}");
    assert!(
        forbidden.message.contains(&format!(
            "User \"{username}\" cannot list resource \"configmaps\""
        )),
        "{}",
        forbidden.message
    );

    let role = Role {
        metadata: ObjectMeta {
            name: Some("read-config-maps".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("reader-reads-config-maps".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: role.name_any(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(namespace.clone()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &binding)
        .await?;

    // The authorizer reads roles from a cache: allow it a moment.
    let started = Instant::now();
    loop {
        match config_maps.list(&ListParams::default()).await {
            Ok(_) => break,
            Err(kube::Error::Api(status))
                if status.code == 403 && started.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => bail!("listing config maps with the role bound: {err}"),
        }
    }

    // The role is namespaced: elsewhere the account is still forbidden.
    let elsewhere = api_error(
        Api::<ConfigMap>::namespaced(reader, "default")
            .list(&ListParams::default())
            .await,
    )?;
    assert_eq!(elsewhere.code, 403, "{elsewhere:?}");
    Ok(())
}
