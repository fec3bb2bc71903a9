//! Setting up what tests run in: CRDs from YAML manifests and a namespace of
//! their own.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::Error;

/// The field manager of everything the harness applies.
const FIELD_MANAGER: &str = "openmodel-tests";

/// How long a CRD gets to become Established.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);

/// The label that marks a test namespace with the test it belongs to.
pub const TEST_LABEL: &str = "openmodel.dev/test";

/// Applies every CustomResourceDefinition in a YAML file (one or more
/// documents separated by `---`; anything that is not a CRD is an error) with
/// server-side apply, then waits until each is Established, so that its
/// resources can be used at once. Returns the CRDs as the server has them.
pub async fn install_crds(
    client: &Client,
    path: impl AsRef<Path>,
) -> Result<Vec<CustomResourceDefinition>, Error> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))?;
    let crds: Vec<CustomResourceDefinition> =
        serde_saphyr::from_multiple(&text).map_err(|source| Error::Manifest {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for crd in &crds {
        api.patch(&crd.name_any(), &apply, &Patch::Apply(crd))
            .await?;
    }
    let mut installed = Vec::with_capacity(crds.len());
    for crd in &crds {
        installed.push(wait_established(&api, &crd.name_any()).await?);
    }
    Ok(installed)
}

/// Polls a CRD until its `Established` condition is `True`.
async fn wait_established(
    api: &Api<CustomResourceDefinition>,
    name: &str,
) -> Result<CustomResourceDefinition, Error> {
    let started = Instant::now();
    loop {
        let crd = api.get(name).await?;
        let conditions = crd
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .map(|conditions| {
                conditions
                    .iter()
                    .map(|c| (c.type_.clone(), c.status.clone()))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default();
        if conditions.get("Established").map(String::as_str) == Some("True") {
            return Ok(crd);
        }
        if started.elapsed() > ESTABLISHED_TIMEOUT {
            return Err(Error::Timeout {
                what: format!("CustomResourceDefinition {name}"),
                waited: started.elapsed(),
                detail: format!("conditions {conditions:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a namespace for one test, named after it with a random suffix
/// chosen by the API server (`generateName`), labelled
/// `openmodel.dev/test=<test>`, and returns its name. Tests that share a
/// control plane stay out of each other's way by working in their own
/// namespace.
///
/// The namespace is not deleted afterwards: without kube-controller-manager
/// a deleted namespace stays `Terminating` for ever, and it disappears with
/// the control plane anyway.
pub async fn create_namespace(client: &Client, test: &str) -> Result<String, Error> {
    let base = dns_label(test);
    let namespace = Namespace {
        metadata: ObjectMeta {
            generate_name: Some(format!("{base}-")),
            labels: Some(BTreeMap::from([(TEST_LABEL.to_string(), base)])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let created = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(created.name_any())
}

/// `text` as an RFC 1123 label short enough for a `generateName` prefix and
/// a label value: lower case letters, digits and `-`, at most 50 characters,
/// starting and ending with a letter or digit.
fn dns_label(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed: String = mapped
        .trim_matches('-')
        .chars()
        .take(50)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string();
    if trimmed.is_empty() {
        "test".to_string()
    } else {
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_become_dns_labels() {
        assert_eq!(dns_label("configmap_round_trip"), "configmap-round-trip");
        assert_eq!(dns_label("::Tests::A__b::"), "tests--a--b");
        assert_eq!(dns_label("___"), "test");
        let long = dns_label(&"x_".repeat(40));
        assert!(long.len() <= 50 && !long.ends_with('-'), "{long}");
    }

    #[test]
    fn crd_manifests_may_hold_several_documents() {
        let crd = |name: &str| {
            format!(
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
                 metadata: {{name: {name}}}\nspec:\n  group: example.com\n  scope: Namespaced\n  \
                 names: {{plural: a, kind: A}}\n  versions: []\n"
            )
        };
        let text = format!(
            "---\n{}---\n{}---\n",
            crd("a.example.com"),
            crd("b.example.com")
        );
        let crds: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&text).unwrap();
        let names: Vec<_> = crds.iter().map(|c| c.name_any()).collect();
        assert_eq!(names, ["a.example.com", "b.example.com"]);
    }

    #[test]
    fn other_kinds_are_not_crds() {
        let err = serde_saphyr::from_multiple::<CustomResourceDefinition>(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("expected apiextensions.k8s.io/v1"), "{err}");
    }
}
