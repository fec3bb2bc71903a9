//! The Deployment of server pods.
//!
//! Each pod runs `openmodel-server fetch` as an init container, which
//! downloads the weights into an `emptyDir` at `/model`, refuses them unless
//! their manifest digest is the expected one, and writes the verified digest
//! (or why it failed) to its termination log, where the operator reads it.
//! Then `openmodel-server serve --task <task>` loads `/model`, checks the
//! digest again and reports ready over the standard gRPC health protocol
//! once warmed up; it answers over gRPC and the OpenAI-compatible HTTP API.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EmptyDirVolumeSource, EnvVar, GRPCAction, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, Toleration,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use openmodel_contract::{fetch, flag, serve};
use sha2::{Digest, Sha256};

use super::gpu::GpuDefaults;
use super::quantity::{bytes, whole_cpus};
use super::{GRPC_PORT, HTTP_PORT, METRICS_PORT, labels, owned_metadata, selector_labels};
use crate::crd::{OpenModel, OpenModelSpec};

/// The init container that fetches and verifies the weights.
pub const FETCH_CONTAINER: &str = "fetch";

/// The container that serves the model.
pub const SERVER_CONTAINER: &str = "server";

/// The pod-template annotation holding [`template_hash`]: the operator tells
/// the pods of the current template from older ones by it.
pub const TEMPLATE_HASH_ANNOTATION: &str = "serving.openmodel.dev/template-hash";

pub use openmodel_contract::WEIGHTS_ENTRY_ANNOTATION;

/// Where the pod's annotations appear inside the server container (a
/// downward-API volume; the kubelet keeps the file current).
const PODINFO_DIR: &str = "/etc/openmodel/podinfo";

/// Where the weights live inside the pod.
const MODEL_DIR: &str = "/model";

/// The user the containers run as (no root, no shell needed).
const NON_ROOT_UID: i64 = 65532;

/// Seconds between startup probes, and how many may fail: ten minutes for
/// the server to compute the digest, load and warm up the model before the
/// liveness probe takes over.
const STARTUP_PERIOD_SECONDS: i32 = 10;
const STARTUP_FAILURE_THRESHOLD: i32 = 60;

/// The most a model's files may take when its spec gives no `size`.
pub const DEFAULT_MODEL_SIZE: u64 = 20 << 30;

/// Room on the weights volume beside the model's files (the fetch's
/// listing and partial files): a sixteenth of the size, at least 64 MiB.
fn volume_room(size: u64) -> u64 {
    (size / 16).max(64 << 20)
}

/// The bytes `model`'s files may take: its `size`, or
/// [`DEFAULT_MODEL_SIZE`] (the CRD refuses a `size` this cannot read).
pub fn model_size(model: &OpenModel) -> u64 {
    model
        .spec
        .model
        .size
        .as_deref()
        .and_then(bytes)
        .unwrap_or(DEFAULT_MODEL_SIZE)
}

/// How long a rollout may make no progress before the Deployment reports
/// `ProgressDeadlineExceeded` (fetching large weights takes a while).
const PROGRESS_DEADLINE_SECONDS: i32 = 1200;

/// The Deployment serving `model`, named after it; `gpu` fills in what a
/// GPU model's spec leaves to the cluster.
pub fn deployment(model: &OpenModel, gpu: &GpuDefaults) -> Deployment {
    let spec = &model.spec;
    let mut template = pod_template(model, gpu);
    let hash = template_hash(&template);
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(TEMPLATE_HASH_ANNOTATION.into(), hash);
    Deployment {
        metadata: owned_metadata(model),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.runtime.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(model)),
                ..LabelSelector::default()
            },
            strategy: Some(strategy(spec)),
            progress_deadline_seconds: Some(PROGRESS_DEADLINE_SECONDS),
            template,
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// A short hash of a pod template (before the hash annotation is added):
/// equal templates, equal hashes.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).expect("a pod template serializes to JSON");
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// Rolling updates that never exceed the replica count when pods need GPUs
/// (there is rarely a spare one to surge onto), and never drop below it
/// otherwise.
fn strategy(spec: &OpenModelSpec) -> DeploymentStrategy {
    let (max_surge, max_unavailable) = if spec.runtime.uses_gpu() {
        (0, 1)
    } else {
        (1, 0)
    };
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(max_surge)),
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
        }),
    }
}

fn pod_template(model: &OpenModel, gpu: &GpuDefaults) -> PodTemplateSpec {
    let runtime = &model.spec.runtime;
    let mut tolerations = runtime.tolerations.clone();
    if runtime.uses_gpu() {
        tolerations.push(Toleration {
            key: Some(gpu.resource_for(runtime).into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        });
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(model)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            init_containers: Some(vec![fetch_container(model)]),
            containers: vec![server_container(model, gpu)],
            volumes: Some(vec![
                sized_empty_dir("model", model_size(model)),
                empty_dir("tmp"),
                podinfo(),
            ]),
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NON_ROOT_UID),
                run_as_group: Some(NON_ROOT_UID),
                fs_group: Some(NON_ROOT_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            node_selector: (!runtime.node_selector.is_empty())
                .then(|| runtime.node_selector.clone()),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            affinity: runtime.affinity.clone(),
            runtime_class_name: gpu.runtime_class_for(runtime),
            ..PodSpec::default()
        }),
    }
}

/// `openmodel-server fetch`: download, verify, report the digest.
fn fetch_container(model: &OpenModel) -> Container {
    let args = [
        fetch::COMMAND.to_string(),
        flag(fetch::SOURCE),
        fetch_source(&model.spec),
        flag(fetch::DEST),
        MODEL_DIR.into(),
        flag(fetch::EXPECT_DIGEST),
        model.spec.model.digest.clone().unwrap_or_default(),
        flag(fetch::TERMINATION_LOG),
        "/dev/termination-log".into(),
        flag(fetch::MAX_BYTES),
        model_size(model).to_string(),
    ];
    Container {
        name: FETCH_CONTAINER.into(),
        args: Some(args.into()),
        volume_mounts: Some(vec![
            mount("model", MODEL_DIR, false),
            mount("tmp", "/tmp", false),
        ]),
        resources: Some(resources(&model.spec, None)),
        ..base_container(model)
    }
}

/// `openmodel-server serve` on the fetched folder.
fn server_container(model: &OpenModel, gpu: &GpuDefaults) -> Container {
    let spec = &model.spec;
    let mut args = vec![
        serve::COMMAND.to_string(),
        flag(serve::MODEL_DIR),
        MODEL_DIR.into(),
        flag(serve::EXPECT_DIGEST),
        spec.model.digest.clone().unwrap_or_default(),
        flag(serve::MODEL_NAME),
        model.name_any(),
        flag(serve::TASK),
        spec.model.task.serve_task().into(),
        flag(serve::GRPC_LISTEN),
        format!("0.0.0.0:{GRPC_PORT}"),
        flag(serve::HTTP_LISTEN),
        format!("0.0.0.0:{HTTP_PORT}"),
        flag(serve::METRICS_LISTEN),
        format!("0.0.0.0:{METRICS_PORT}"),
        flag(serve::POD_ANNOTATIONS),
        format!("{PODINFO_DIR}/annotations"),
    ];
    if let Some(serving) = &spec.serving {
        for (name, value) in [
            (serve::MAX_BATCH_TOKENS, serving.max_batch_tokens),
            (serve::MAX_BATCH_REQUESTS, serving.max_batch_requests),
            (
                serve::MAX_CONCURRENT_REQUESTS,
                serving.max_concurrent_requests,
            ),
        ] {
            if let Some(value) = value {
                args.extend([flag(name), value.to_string()]);
            }
        }
    }
    if let Some(generation) = &spec.generation {
        let kv_cache_bytes = generation.kv_cache_bytes.as_deref().and_then(bytes);
        for (name, value) in [
            (serve::MAX_NEW_TOKENS, generation.max_tokens.map(u64::from)),
            (
                serve::MAX_PROMPT_TOKENS,
                generation.context_length.map(u64::from),
            ),
            (serve::KV_CACHE_BYTES, kv_cache_bytes),
            (serve::MAX_NUM_SEQS, generation.max_num_seqs.map(u64::from)),
        ] {
            if let Some(value) = value {
                args.extend([flag(name), value.to_string()]);
            }
        }
        if let Some(dtype) = generation.kv_cache_dtype {
            args.extend([flag(serve::KV_CACHE_DTYPE), dtype.serve_value().into()]);
        }
        if let Some(on) = generation.prefix_caching {
            args.push(flag(if on {
                serve::ENABLE_PREFIX_CACHING
            } else {
                serve::NO_ENABLE_PREFIX_CACHING
            }));
        }
    }
    if spec.runtime.uses_gpu() {
        args.extend([flag(serve::DEVICE), serve::DEVICE_CUDA.into()]);
    }
    let mut container = Container {
        name: SERVER_CONTAINER.into(),
        args: Some(args),
        ports: Some(vec![
            port("grpc", GRPC_PORT),
            port("http", HTTP_PORT),
            port("metrics", METRICS_PORT),
        ]),
        volume_mounts: Some(vec![
            mount("model", MODEL_DIR, true),
            mount("tmp", "/tmp", false),
            mount("podinfo", PODINFO_DIR, true),
        ]),
        resources: Some(resources(spec, Some(gpu.resource_for(&spec.runtime)))),
        startup_probe: Some(Probe {
            period_seconds: Some(STARTUP_PERIOD_SECONDS),
            failure_threshold: Some(STARTUP_FAILURE_THRESHOLD),
            ..grpc_probe()
        }),
        readiness_probe: Some(Probe {
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..grpc_probe()
        }),
        liveness_probe: Some(Probe {
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..grpc_probe()
        }),
        image: Some(spec.runtime.server_image().into()),
        ..base_container(model)
    };
    if let Some(threads) = spec.runtime.resources.cpu.as_ref().and_then(whole_cpus) {
        container.env.get_or_insert_with(Vec::new).insert(
            0,
            EnvVar {
                name: "OPENMODEL_THREADS".into(),
                value: Some(threads.to_string()),
                ..EnvVar::default()
            },
        );
    }
    container
}

/// What both containers share: the image (`runtime.image`; the server's
/// own may be the CUDA build), command, the user's environment and a
/// locked-down security context.
fn base_container(model: &OpenModel) -> Container {
    let runtime = &model.spec.runtime;
    Container {
        image: Some(runtime.image.clone()),
        command: Some(vec!["openmodel-server".into()]),
        env: (!runtime.env.is_empty()).then(|| runtime.env.clone()),
        termination_message_policy: Some("File".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The source `fetch` gets: an `hf://` source given without `@revision`
/// takes `spec.model.revision`.
fn fetch_source(spec: &OpenModelSpec) -> String {
    let source = &spec.model.source;
    match &spec.model.revision {
        Some(revision) if source.starts_with("hf://") && !source.contains('@') => {
            format!("{source}@{revision}")
        }
        _ => source.clone(),
    }
}

/// Requests equal limits (guaranteed QoS); GPUs, as `gpu_resource`, only
/// for the server.
fn resources(spec: &OpenModelSpec, gpu_resource: Option<&str>) -> ResourceRequirements {
    let wanted = &spec.runtime.resources;
    let mut amounts = BTreeMap::new();
    if let Some(cpu) = &wanted.cpu {
        amounts.insert("cpu".to_string(), cpu.clone());
    }
    if let Some(memory) = &wanted.memory {
        amounts.insert("memory".to_string(), memory.clone());
    }
    let mut limits = amounts.clone();
    if let Some(gpu_resource) = gpu_resource.filter(|_| wanted.gpu > 0) {
        limits.insert(gpu_resource.into(), Quantity(wanted.gpu.to_string()));
    }
    ResourceRequirements {
        requests: (!amounts.is_empty()).then_some(amounts),
        limits: (!limits.is_empty()).then_some(limits),
        ..ResourceRequirements::default()
    }
}

/// A native gRPC health probe on the server's port (the server answers
/// NOT_SERVING until the model is loaded and warmed up).
fn grpc_probe() -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: GRPC_PORT,
            service: None,
        }),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The pod's annotations as a file, `annotations` (downward API).
fn podinfo() -> Volume {
    Volume {
        name: "podinfo".into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![DownwardAPIVolumeFile {
                path: "annotations".into(),
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.annotations".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..DownwardAPIVolumeFile::default()
            }]),
            ..DownwardAPIVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// An `emptyDir` for `size` bytes of files: its `sizeLimit` is the size and
/// a little room (the kubelet evicts a pod that writes more).
fn sized_empty_dir(name: &str, size: u64) -> Volume {
    let limit = size.saturating_add(volume_room(size));
    Volume {
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(limit.to_string())),
            ..EmptyDirVolumeSource::default()
        }),
        ..empty_dir(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Format, Generation, KvCacheDtype, Task};
    use crate::resources::fixtures::{DIGEST, deployment_of, model};

    fn pod_spec(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
    }

    fn arg_after<'a>(container: &'a Container, flag: &str) -> Option<&'a str> {
        let args = container.args.as_ref()?;
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1).map(String::as_str)
    }

    #[test]
    fn fetch_then_serve_with_the_expected_digest() {
        let d = deployment_of(&model());
        let pod = pod_spec(&d);
        let fetch = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(fetch.name, FETCH_CONTAINER);
        assert_eq!(fetch.args.as_ref().unwrap()[0], "fetch");
        assert_eq!(arg_after(fetch, "--dest"), Some("/model"));
        assert_eq!(arg_after(fetch, "--expect-digest"), Some(DIGEST));
        assert_eq!(
            arg_after(fetch, "--termination-log"),
            Some("/dev/termination-log")
        );
        assert_eq!(
            arg_after(fetch, "--source"),
            Some("hf://sentence-transformers/all-MiniLM-L6-v2@c9745ed")
        );
        let server = &pod.containers[0];
        assert_eq!(server.name, SERVER_CONTAINER);
        assert_eq!(server.args.as_ref().unwrap()[0], "serve");
        assert_eq!(arg_after(server, "--model-dir"), Some("/model"));
        assert_eq!(arg_after(server, "--expect-digest"), Some(DIGEST));
        assert_eq!(
            server.volume_mounts.as_ref().unwrap()[0].read_only,
            Some(true)
        );
        for probe in [
            &server.readiness_probe,
            &server.liveness_probe,
            &server.startup_probe,
        ] {
            assert_eq!(probe.as_ref().unwrap().grpc.as_ref().unwrap().port, 8001);
        }
        let startup = server.startup_probe.as_ref().unwrap();
        let budget = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
        assert!(budget >= 600, "startup budget {budget}s");
    }

    #[test]
    fn the_weights_volume_and_the_fetch_are_bounded_by_the_model_size() {
        let limit = |d: &Deployment| {
            let volume = &pod_spec(d).volumes.as_ref().unwrap()[0];
            assert_eq!(volume.name, "model");
            let quantity = volume.empty_dir.as_ref().unwrap().size_limit.clone();
            quantity.unwrap().0.parse::<u64>().unwrap()
        };
        let max_bytes = |d: &Deployment| {
            let fetch = &pod_spec(d).init_containers.as_ref().unwrap()[0];
            arg_after(fetch, "--max-bytes")
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        // No size: 20 GiB, and a sixteenth more of room.
        let d = deployment_of(&model());
        assert_eq!(max_bytes(&d), 20 << 30);
        assert_eq!(limit(&d), (20 << 30) + (20 << 30) / 16);
        // A small model: its size and at least 64 MiB of room.
        let mut small = model();
        small.spec.model.size = Some("100Mi".into());
        let d = deployment_of(&small);
        assert_eq!(max_bytes(&d), 100 << 20);
        assert_eq!(limit(&d), (100 << 20) + (64 << 20));
    }

    #[test]
    fn containers_are_locked_down() {
        let d = deployment_of(&model());
        let pod = pod_spec(&d);
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        for c in pod
            .containers
            .iter()
            .chain(pod.init_containers.as_ref().unwrap())
        {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
        }
    }

    #[test]
    fn gpus_get_limits_tolerations_and_no_surge() {
        let mut m = model();
        m.spec.runtime.resources.gpu = 1;
        m.spec.runtime.resources.cpu = Some(Quantity("2500m".into()));
        let d = deployment_of(&m);
        let pod = pod_spec(&d);
        let server = &pod.containers[0];
        let limits = server.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["nvidia.com/gpu"], Quantity("1".into()));
        let fetch = &pod.init_containers.as_ref().unwrap()[0];
        let fetch_limits = fetch.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert!(!fetch_limits.contains_key("nvidia.com/gpu"));
        let env = server.env.as_ref().unwrap();
        assert_eq!(env[0].name, "OPENMODEL_THREADS");
        assert_eq!(env[0].value.as_deref(), Some("2"));
        assert!(pod.tolerations.as_ref().unwrap()[0].key.as_deref() == Some("nvidia.com/gpu"));
        let rolling = d.spec.as_ref().unwrap().strategy.as_ref().unwrap();
        let rolling = rolling.rolling_update.as_ref().unwrap();
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(0)));
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(arg_after(server, "--device"), Some("cuda"));
    }

    #[test]
    fn gpu_clusters_get_their_resource_runtime_class_and_cuda_image() {
        let mut m = model();
        m.spec.runtime.resources.gpu = 2;
        m.spec.runtime.resources.gpu_resource = Some("nvidia.com/mig-3g.71gb".into());
        m.spec.runtime.runtime_class_name = Some("nvidia".into());
        m.spec.runtime.cuda_image = Some("registry.example/openmodel-server:1.0.0-cuda".into());
        let d = deployment_of(&m);
        let pod = pod_spec(&d);
        assert_eq!(pod.runtime_class_name.as_deref(), Some("nvidia"));
        let server = &pod.containers[0];
        let limits = server.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["nvidia.com/mig-3g.71gb"], Quantity("2".into()));
        assert!(!limits.contains_key("nvidia.com/gpu"));
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("nvidia.com/mig-3g.71gb")
        );
        assert_eq!(
            server.image.as_deref(),
            Some("registry.example/openmodel-server:1.0.0-cuda")
        );
        // The fetch runs without a GPU, so with the CPU build.
        let fetch = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(fetch.image, Some(m.spec.runtime.image.clone()));

        // Without GPUs the CUDA image and the resource name change nothing
        // but the runtime class.
        m.spec.runtime.resources.gpu = 0;
        let d = deployment_of(&m);
        let pod = pod_spec(&d);
        assert_eq!(pod.containers[0].image, Some(m.spec.runtime.image.clone()));
        assert_no_gpu(pod);
        assert_eq!(pod.runtime_class_name.as_deref(), Some("nvidia"));

        // What the spec leaves unset, the operator's flags give GPU pods.
        let defaults = GpuDefaults {
            resource: "amd.com/gpu".into(),
            runtime_class_name: Some("gpu-runtime".into()),
        };
        m.spec.runtime.resources.gpu = 1;
        m.spec.runtime.resources.gpu_resource = None;
        m.spec.runtime.runtime_class_name = None;
        let d = deployment(&m, &defaults);
        let pod = pod_spec(&d);
        assert_eq!(pod.runtime_class_name.as_deref(), Some("gpu-runtime"));
        let limits = &pod.containers[0].resources.as_ref().unwrap().limits;
        assert_eq!(
            limits.as_ref().unwrap()["amd.com/gpu"],
            Quantity("1".into())
        );
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("amd.com/gpu")
        );
    }

    /// The server asks for nothing beyond CPU and memory (here, nothing at
    /// all) and tolerates no GPU taint.
    fn assert_no_gpu(pod: &PodSpec) {
        let limits = &pod.containers[0].resources.as_ref().unwrap().limits;
        assert!(limits.is_none(), "{limits:?}");
        assert!(pod.tolerations.is_none(), "{:?}", pod.tolerations);
    }

    #[test]
    fn cpu_models_surge_and_get_no_gpu() {
        let d = deployment_of(&model());
        let pod = pod_spec(&d);
        assert_no_gpu(pod);
        let rolling = d.spec.as_ref().unwrap().strategy.as_ref().unwrap();
        assert_eq!(
            rolling.rolling_update.as_ref().unwrap().max_surge,
            Some(IntOrString::Int(1))
        );
    }

    /// `container`'s command line, parsed by the server's own definition.
    fn parse(container: &Container) -> openmodel_server::cli::Command {
        use clap::Parser as _;
        let mut argv = container.command.clone().unwrap();
        argv.extend(container.args.clone().unwrap());
        openmodel_server::cli::Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{}: {argv:?} does not parse:\n{e}", container.name))
            .command
    }

    /// The arguments of both containers parse with the server's own command
    /// line, so a flag renamed on one side fails here.
    #[test]
    fn the_server_s_command_line_accepts_the_generated_arguments() {
        use openmodel_server::cli::Command;
        use openmodel_server::server::TaskChoice;

        let mut m = model();
        m.spec.runtime.resources.gpu = 1;
        m.spec.serving = Some(crate::crd::Serving {
            max_batch_tokens: Some(4096),
            max_batch_requests: Some(16),
            max_concurrent_requests: Some(128),
        });
        let d = deployment_of(&m);
        let pod = pod_spec(&d);
        match parse(&pod.containers[0]) {
            Command::Serve(args) => {
                assert_eq!(args.model_dir, std::path::Path::new(MODEL_DIR));
                assert_eq!(args.expect_digest.as_deref(), Some(DIGEST));
                assert_eq!(args.task, TaskChoice::Embeddings);
                assert_eq!(args.grpc_listen.port(), openmodel_contract::GRPC_PORT);
                assert_eq!(args.http_listen.port(), openmodel_contract::HTTP_PORT);
                assert!(args.http_listen.ip().is_unspecified());
                assert_eq!(args.metrics_listen.port(), openmodel_contract::METRICS_PORT);
                assert_eq!((args.max_batch_tokens, args.max_batch_requests), (4096, 16));
                assert_eq!(args.max_concurrent_requests, 128);
                assert_eq!(args.device, "cuda");
                assert!(args.pod_annotations.is_some());
            }
            other => panic!("the server container runs {other:?}, not serve"),
        }
        match parse(&pod.init_containers.as_ref().unwrap()[0]) {
            Command::Fetch(args) => {
                assert_eq!(args.dest, std::path::Path::new(MODEL_DIR));
                assert_eq!(args.expect_digest, DIGEST);
                assert!(args.termination_log.is_some());
            }
            other => panic!("the init container runs {other:?}, not fetch"),
        }
    }

    /// A text-generation model: `--task text-generation`, its generation
    /// limits as the server reads them (the KV cache in bytes), the HTTP
    /// port named `http`, and the probes on gRPC as for any model.
    #[test]
    fn text_generation_passes_the_task_and_its_limits() {
        use openmodel_server::cli::Command;
        use openmodel_server::model::decoder::config::KvDtype;
        use openmodel_server::server::TaskChoice;

        let mut m = model();
        m.spec.model.task = Task::TextGeneration;
        m.spec.model.format = Some(Format::Gguf);
        m.spec.generation = Some(Generation {
            max_tokens: Some(512),
            context_length: Some(4096),
            kv_cache_bytes: Some("1536Mi".into()),
            max_num_seqs: Some(8),
            kv_cache_dtype: Some(KvCacheDtype::F16),
            prefix_caching: Some(false),
        });
        let d = deployment_of(&m);
        let server = &pod_spec(&d).containers[0];
        match parse(server) {
            Command::Serve(args) => {
                assert_eq!(args.task, TaskChoice::TextGeneration);
                assert_eq!(args.http_listen.port(), openmodel_contract::HTTP_PORT);
                let g = &args.generation;
                assert_eq!(g.max_new_tokens, 512);
                assert_eq!(g.max_prompt_tokens, 4096);
                assert_eq!(g.kv_cache_bytes, 1536 << 20);
                assert_eq!(g.max_num_seqs, 8);
                assert_eq!(g.kv_cache_dtype, KvDtype::F16);
                assert!(g.no_enable_prefix_caching && !g.enable_prefix_caching);
            }
            other => panic!("the server container runs {other:?}, not serve"),
        }
        let ports: Vec<_> = server
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.as_deref().unwrap(), p.container_port))
            .collect();
        assert_eq!(ports, [("grpc", 8001), ("http", 8000), ("metrics", 9090)]);
        assert_eq!(
            server
                .readiness_probe
                .as_ref()
                .unwrap()
                .grpc
                .as_ref()
                .unwrap()
                .port,
            8001
        );

        // The largest KV caches the CRD accepts still fit in bytes.
        for (text, expected) in [
            ("9999999Ti", 9_999_999_u64 << 40),
            ("9999999999999999999", 9_999_999_999_999_999_999),
        ] {
            m.spec.generation.as_mut().unwrap().kv_cache_bytes = Some(text.into());
            let d = deployment_of(&m);
            let server = &pod_spec(&d).containers[0];
            assert_eq!(
                arg_after(server, "--kv-cache-bytes"),
                Some(expected.to_string().as_str())
            );
        }

        // Unset limits keep the server's defaults: no flag at all.
        m.spec.generation = Some(Generation {
            max_tokens: Some(64),
            ..Generation::default()
        });
        let d = deployment_of(&m);
        let server = &pod_spec(&d).containers[0];
        assert_eq!(arg_after(server, "--max-new-tokens"), Some("64"));
        for absent in [
            "--max-prompt-tokens",
            "--kv-cache-bytes",
            "--max-num-seqs",
            "--kv-cache-dtype",
        ] {
            assert_eq!(arg_after(server, absent), None, "{absent}");
        }
    }

    #[test]
    fn an_hf_revision_completes_the_source() {
        let mut m = model();
        m.spec.model.source = "hf://org/repo".into();
        m.spec.model.revision = Some("abc123".into());
        let d = deployment_of(&m);
        let fetch = &pod_spec(&d).init_containers.as_ref().unwrap()[0];
        assert_eq!(arg_after(fetch, "--source"), Some("hf://org/repo@abc123"));
    }

    #[test]
    fn owned_by_the_model_and_selected_by_its_label() {
        let d = deployment_of(&model());
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "OpenModel");
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(owner.controller, Some(true));
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        let selector = spec.selector.match_labels.as_ref().unwrap();
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in selector {
            assert_eq!(template_labels.get(k), Some(v));
        }
    }

    #[test]
    fn the_template_hash_follows_the_pod_template() {
        let hash = |m: &OpenModel| {
            deployment_of(m)
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[TEMPLATE_HASH_ANNOTATION]
                .clone()
        };
        let base = model();
        let mut scaled = model();
        scaled.spec.runtime.replicas = 5;
        let mut new_digest = model();
        new_digest.spec.model.digest = Some(format!("sha256:{}", "2".repeat(64)));
        assert_eq!(hash(&base), hash(&scaled));
        assert_ne!(hash(&base), hash(&new_digest));
    }
}
