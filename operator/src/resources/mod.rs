//! Pure builders of the objects an `OpenModel` owns: a Deployment of server
//! pods, a Service in front of them and, with more than one replica, a
//! PodDisruptionBudget. No IO: the reconciler applies what these return.
//!
//! Every object carries the same labels and a controller owner reference to
//! its `OpenModel`, so it is garbage-collected with it.

mod deployment;
pub mod gpu;
mod pdb;
mod quantity;
mod service;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::OpenModel;

pub use deployment::{
    FETCH_CONTAINER, SERVER_CONTAINER, TEMPLATE_HASH_ANNOTATION, WEIGHTS_ENTRY_ANNOTATION,
    deployment, template_hash,
};
pub use pdb::pod_disruption_budget;
pub use service::service;

/// The label naming the model a pod, Deployment or Service belongs to; also
/// the pods' selector.
pub const MODEL_LABEL: &str = "serving.openmodel.dev/model";

/// The gRPC (Open Inference Protocol) port of the server.
pub const GRPC_PORT: i32 = openmodel_contract::GRPC_PORT as i32;

/// The OpenAI-compatible HTTP port of the server.
pub const HTTP_PORT: i32 = openmodel_contract::HTTP_PORT as i32;

/// The Prometheus metrics port of the server.
pub const METRICS_PORT: i32 = openmodel_contract::METRICS_PORT as i32;

/// The labels of every object (and pod) of a model.
pub fn labels(model: &OpenModel) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "openmodel-server".into()),
        ("app.kubernetes.io/instance".into(), model.name_any()),
        (
            "app.kubernetes.io/managed-by".into(),
            "openmodel-operator".into(),
        ),
        (MODEL_LABEL.into(), model.name_any()),
    ])
}

/// The pods' selector: just the model label (selectors are immutable, so it
/// never carries anything that could change).
pub fn selector_labels(model: &OpenModel) -> BTreeMap<String, String> {
    BTreeMap::from([(MODEL_LABEL.into(), model.name_any())])
}

/// The selector as a string, e.g. for the scale subresource.
pub fn selector_string(model: &OpenModel) -> String {
    format!("{MODEL_LABEL}={}", model.name_any())
}

/// Metadata of an owned object: the model's name and namespace, labels and
/// a controller owner reference.
fn owned_metadata(model: &OpenModel) -> ObjectMeta {
    ObjectMeta {
        name: Some(model.name_any()),
        namespace: model.namespace(),
        labels: Some(labels(model)),
        owner_references: model.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::gpu::GpuDefaults;
    use crate::crd::{ModelSpec, OpenModel, OpenModelSpec, Resources, Runtime, Task};

    /// `model`'s Deployment with the operator's default flags.
    pub fn deployment_of(model: &OpenModel) -> Deployment {
        super::deployment(model, &GpuDefaults::default())
    }

    /// A digest used throughout the tests.
    pub const DIGEST: &str =
        "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    /// A small CPU model with two replicas.
    pub fn model() -> OpenModel {
        let mut model = OpenModel::new(
            "minilm",
            OpenModelSpec {
                model: ModelSpec {
                    source: "hf://sentence-transformers/all-MiniLM-L6-v2@c9745ed".into(),
                    task: Task::Embedding,
                    format: None,
                    digest: Some(DIGEST.into()),
                    revision: None,
                    size: None,
                },
                provenance: None,
                runtime: Runtime {
                    image: "registry.example/openmodel-server:0.1.0".into(),
                    cuda_image: None,
                    runtime_class_name: None,
                    replicas: 2,
                    resources: Resources::default(),
                    node_selector: Default::default(),
                    tolerations: vec![],
                    affinity: None,
                    env: vec![],
                },
                serving: None,
                generation: None,
                policy: None,
            },
        );
        model.metadata = ObjectMeta {
            name: Some("minilm".into()),
            namespace: Some("search".into()),
            uid: Some("uid-1".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        model
    }
}
