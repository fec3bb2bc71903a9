//! What the pods of a model with GPUs get when its spec leaves it to the
//! cluster: the GPU resource and the RuntimeClass, from the operator's
//! flags (`--gpu-resource`, `--gpu-runtime-class-name`; the chart's `gpu`
//! values). A model's own `spec.runtime` always wins.

use crate::crd::Runtime;

/// The NVIDIA device plugin's resource, and the taint of its nodes.
pub const DEFAULT_GPU_RESOURCE: &str = "nvidia.com/gpu";

/// The cluster's defaults for GPU pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuDefaults {
    /// The extended resource GPUs are asked for as, and the taint tolerated.
    pub resource: String,
    /// The RuntimeClass of GPU pods (none: the nodes' default runtime).
    pub runtime_class_name: Option<String>,
}

impl Default for GpuDefaults {
    fn default() -> Self {
        GpuDefaults {
            resource: DEFAULT_GPU_RESOURCE.into(),
            runtime_class_name: None,
        }
    }
}

impl GpuDefaults {
    /// The GPU resource of `runtime`'s pods: its own, else the default.
    pub fn resource_for<'a>(&'a self, runtime: &'a Runtime) -> &'a str {
        runtime
            .resources
            .gpu_resource
            .as_deref()
            .unwrap_or(&self.resource)
    }

    /// The RuntimeClass of `runtime`'s pods: its own, else the default
    /// when they get GPUs.
    pub fn runtime_class_for(&self, runtime: &Runtime) -> Option<String> {
        runtime.runtime_class_name.clone().or_else(|| {
            runtime
                .uses_gpu()
                .then(|| self.runtime_class_name.clone())
                .flatten()
        })
    }
}

/// Whether `name` is an extended resource name a device plugin may offer,
/// `<domain>/<name>` outside `kubernetes.io` (what the CRD's
/// `gpuResource` rule accepts).
pub fn is_extended_resource_name(name: &str) -> bool {
    let Some((domain, resource)) = name.split_once('/') else {
        return false;
    };
    let edges_alphanumeric = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
    };
    name.len() <= 253
        && edges_alphanumeric(domain)
        && domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && domain != "kubernetes.io"
        && !domain.ends_with(".kubernetes.io")
        && edges_alphanumeric(resource)
        && resource
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `name` is a DNS subdomain, as RuntimeClass names are.
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::model;

    #[test]
    fn the_spec_wins_over_the_defaults_and_runtime_classes_go_to_gpu_pods() {
        let defaults = GpuDefaults {
            resource: "amd.com/gpu".into(),
            runtime_class_name: Some("nvidia".into()),
        };
        let mut runtime = model().spec.runtime;
        assert_eq!(defaults.resource_for(&runtime), "amd.com/gpu");
        // A CPU model keeps the nodes' default runtime.
        assert_eq!(defaults.runtime_class_for(&runtime), None);
        runtime.resources.gpu = 1;
        assert_eq!(
            defaults.runtime_class_for(&runtime).as_deref(),
            Some("nvidia")
        );
        runtime.resources.gpu_resource = Some("nvidia.com/mig-1g.18gb".into());
        runtime.runtime_class_name = Some("kata-nvidia".into());
        assert_eq!(defaults.resource_for(&runtime), "nvidia.com/mig-1g.18gb");
        assert_eq!(
            defaults.runtime_class_for(&runtime).as_deref(),
            Some("kata-nvidia")
        );
        assert_eq!(
            GpuDefaults::default().resource_for(&model().spec.runtime),
            DEFAULT_GPU_RESOURCE
        );
    }
}
