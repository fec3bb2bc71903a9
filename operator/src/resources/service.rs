//! The Service in front of a model's server pods: gRPC (Open Inference
//! Protocol), the OpenAI-compatible HTTP API and Prometheus metrics.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{GRPC_PORT, HTTP_PORT, METRICS_PORT, owned_metadata, selector_labels};
use crate::crd::OpenModel;

/// The ClusterIP Service named after `model`.
pub fn service(model: &OpenModel) -> Service {
    let port = |name: &str, number: i32, app_protocol: &str| ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        app_protocol: Some(app_protocol.into()),
        ..ServicePort::default()
    };
    Service {
        metadata: owned_metadata(model),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(model)),
            ports: Some(vec![
                port("grpc", GRPC_PORT, "kubernetes.io/h2c"),
                port("http", HTTP_PORT, "http"),
                port("metrics", METRICS_PORT, "http"),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::model;

    #[test]
    fn grpc_http_and_metrics_ports_select_the_model_pods() {
        let s = service(&model());
        let spec = s.spec.unwrap();
        let ports: Vec<_> = spec
            .ports
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.port))
            .collect();
        assert_eq!(
            ports,
            [
                ("grpc".into(), 8001),
                ("http".into(), 8000),
                ("metrics".into(), 9090)
            ]
        );
        assert_eq!(
            spec.selector.unwrap()["serving.openmodel.dev/model"],
            "minilm"
        );
        assert_eq!(s.metadata.owner_references.unwrap()[0].name, "minilm");
    }
}
