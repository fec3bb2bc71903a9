//! The OpenModel CRD (crds/openmodel.yaml) in the real kube-apiserver: the
//! examples (embedding and text generation) apply with kubectl and
//! round-trip through the Rust client, the printer columns and the scale
//! subresource work, and invalid models are refused with the CEL rules'
//! messages.

use std::process::Output;

use anyhow::{Context as _, Result, bail, ensure};
use kube::api::{Api, PostParams};
use openmodel_operator::crd::{
    DatasetRef, DatasetRole, Format, Generation, KvCacheDtype, OpenModel, Policy, Provenance, Task,
};
use openmodel_tests::ControlPlane;
use openmodel_tests::operator::{EXAMPLE_PATH as EXAMPLE, example, namespace};

async fn control_plane() -> &'static ControlPlane {
    ControlPlane::shared()
        .await
        .unwrap_or_else(|err| panic!("starting the control plane: {err}"))
}

fn kubectl(control_plane: &ControlPlane, args: &[&str]) -> Result<Output> {
    control_plane
        .kubectl()
        .args(args)
        .output()
        .context("running kubectl")
}

#[tokio::test]
async fn kubectl_applies_the_example_and_prints_its_columns() -> Result<()> {
    let control_plane = control_plane().await;
    let client = control_plane.client()?;
    let ns = namespace(&client, "kubectl_example").await?;
    let applied = kubectl(control_plane, &["apply", "-n", &ns, "-f", EXAMPLE])?;
    ensure!(
        applied.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let table = kubectl(control_plane, &["get", "om", "-n", &ns])?;
    let header = String::from_utf8_lossy(&table.stdout);
    let columns: Vec<_> = header
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        columns,
        ["NAME", "READY", "TASK", "DIGEST", "REPLICAS", "AGE"]
    );
    assert!(
        header.contains("minilm") && header.contains("embedding"),
        "{header}"
    );

    // The Rust client reads back what kubectl wrote.
    let stored = Api::<OpenModel>::namespaced(client.clone(), &ns)
        .get("minilm")
        .await?;
    assert_eq!(stored.spec, example(&ns)?.spec);

    // The scale subresource moves spec.runtime.replicas.
    let scaled = kubectl(
        control_plane,
        &["scale", "-n", &ns, "om/minilm", "--replicas=3"],
    )?;
    ensure!(
        scaled.status.success(),
        "{}",
        String::from_utf8_lossy(&scaled.stderr)
    );
    let stored = Api::<OpenModel>::namespaced(client, &ns)
        .get("minilm")
        .await?;
    assert_eq!(stored.spec.runtime.replicas, 3);
    Ok(())
}

const GENERATION_EXAMPLES: [(&str, &str); 2] = [
    (
        "smollm2",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/smollm2.yaml"),
    ),
    (
        "smollm2-gpu",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/smollm2-gpu.yaml"),
    ),
];

/// The text-generation examples, on a CPU and on a GPU, apply and read back
/// unchanged (the GPU one's runtime class, GPU resource and CUDA image
/// included).
#[tokio::test]
async fn kubectl_applies_the_text_generation_examples() -> Result<()> {
    let control_plane = control_plane().await;
    let client = control_plane.client()?;
    let ns = namespace(&client, "kubectl_generation").await?;
    for (name, path) in GENERATION_EXAMPLES {
        let applied = kubectl(control_plane, &["apply", "-n", &ns, "-f", path])?;
        ensure!(
            applied.status.success(),
            "kubectl apply {path}: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
        let table = kubectl(control_plane, &["get", "om", name, "-n", &ns])?;
        let table = String::from_utf8_lossy(&table.stdout);
        assert!(table.contains("text-generation"), "{table}");
        let expected: OpenModel = serde_saphyr::from_str(&std::fs::read_to_string(path)?)?;
        let stored = Api::<OpenModel>::namespaced(client.clone(), &ns)
            .get(name)
            .await?;
        assert_eq!(stored.spec, expected.spec, "{path}");
        let generation = stored.spec.generation.as_ref().context("spec.generation")?;
        assert!(generation.kv_cache_bytes.is_some(), "{path}");
    }
    let gpu = Api::<OpenModel>::namespaced(client, &ns)
        .get("smollm2-gpu")
        .await?;
    assert_eq!(
        gpu.spec.runtime.resources.gpu_resource.as_deref(),
        Some("nvidia.com/gpu")
    );
    assert_eq!(
        gpu.spec.runtime.runtime_class_name.as_deref(),
        Some("nvidia")
    );
    assert!(gpu.spec.runtime.server_image().ends_with("-cuda"));
    Ok(())
}

/// A text-generation model from the embedding example: `mutate` then
/// changes it.
fn generator(m: &mut OpenModel, generation: Generation) {
    m.spec.model.task = Task::TextGeneration;
    m.spec.generation = Some(generation);
}

/// The message of the API error `create` fails with.
async fn refusal(api: &Api<OpenModel>, model: &OpenModel) -> Result<String> {
    match api.create(&PostParams::default(), model).await {
        Err(kube::Error::Api(status)) => {
            ensure!(status.code == 422, "expected 422 Invalid, got {status:?}");
            Ok(status.message.clone())
        }
        other => bail!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_models_are_refused_with_the_cel_messages() -> Result<()> {
    let control_plane = control_plane().await;
    let client = control_plane.client()?;
    let ns = namespace(&client, "cel_rules").await?;
    let api: Api<OpenModel> = Api::namespaced(client, &ns);
    type Mutation = fn(&mut OpenModel);
    let cases: [(&str, Mutation, &str); 17] = [
        (
            "gpu-resource-core",
            |m| m.spec.runtime.resources.gpu_resource = Some("kubernetes.io/gpu".into()),
            "gpuResource must be an extended resource name",
        ),
        (
            "gpu-resource-bare",
            |m| m.spec.runtime.resources.gpu_resource = Some("gpu".into()),
            "gpuResource must be an extended resource name",
        ),
        (
            "runtime-class",
            |m| m.spec.runtime.runtime_class_name = Some("NVIDIA_runtime".into()),
            "runtimeClassName must be a DNS subdomain",
        ),
        (
            "bad-digest",
            |m| m.spec.model.digest = Some("sha256:abc".into()),
            "digest must be sha256: followed by 64 lowercase hex digits",
        ),
        (
            "upper-digest",
            |m| m.spec.model.digest = Some(format!("sha256:{}", "A".repeat(64))),
            "digest must be sha256: followed by 64 lowercase hex digits",
        ),
        (
            "negative",
            |m| m.spec.runtime.replicas = -1,
            "replicas must be 0 or more",
        ),
        (
            "no-digest",
            |m| m.spec.model.digest = None,
            "spec.model.digest is required (policy.requireDigest is true)",
        ),
        (
            "ftp",
            |m| m.spec.model.source = "ftp://example.com/model".into(),
            "source must be hf://<org>/<repo>@<revision>",
        ),
        (
            "unpinned",
            |m| m.spec.model.source = "hf://org/repo".into(),
            "an hf:// source needs exactly one revision",
        ),
        (
            "dataset",
            |m| {
                m.spec.provenance = Some(Provenance {
                    datasets: vec![DatasetRef {
                        name: "d".into(),
                        uri: "somewhere".into(),
                        digest: None,
                        license: None,
                        role: DatasetRole::Training,
                    }],
                    ..Provenance::default()
                })
            },
            "dataset uri must start with hf://",
        ),
        (
            "twins",
            |m| {
                let twin = m.spec.provenance.as_ref().unwrap().datasets[0].clone();
                m.spec.provenance.as_mut().unwrap().datasets.push(twin);
            },
            "dataset names must be unique",
        ),
        (
            "gguf-embedding",
            |m| m.spec.model.format = Some(Format::Gguf),
            "format gguf is served for task text-generation only",
        ),
        (
            "generation-embedding",
            |m| {
                m.spec.generation = Some(Generation {
                    max_tokens: Some(16),
                    ..Generation::default()
                })
            },
            "spec.generation applies to text generation only",
        ),
        (
            "kv-cache-unit",
            |m| {
                generator(
                    m,
                    Generation {
                        kv_cache_bytes: Some("2GB".into()),
                        ..Generation::default()
                    },
                )
            },
            "kvCacheBytes must be a whole number of bytes",
        ),
        (
            "max-tokens",
            |m| {
                generator(
                    m,
                    Generation {
                        max_tokens: Some(131_073),
                        ..Generation::default()
                    },
                )
            },
            "spec.generation.maxTokens: Invalid value",
        ),
        (
            "max-num-seqs",
            |m| {
                generator(
                    m,
                    Generation {
                        max_num_seqs: Some(0),
                        ..Generation::default()
                    },
                )
            },
            "spec.generation.maxNumSeqs: Invalid value",
        ),
        (
            "f16-on-gpu",
            |m| {
                m.spec.runtime.resources.gpu = 1;
                generator(
                    m,
                    Generation {
                        kv_cache_dtype: Some(KvCacheDtype::F16),
                        ..Generation::default()
                    },
                )
            },
            "spec.generation.kvCacheDtype f16 is for CPU pods",
        ),
    ];
    for (name, mutate, message) in cases {
        let mut model = example(&ns)?;
        model.metadata.name = Some(name.into());
        mutate(&mut model);
        let refused = refusal(&api, &model).await?;
        ensure!(refused.contains(message), "{name}: {refused}");
    }

    // What the rules allow: no digest when the policy says so, an hf://
    // source with its revision beside it, zero replicas.
    let mut model = example(&ns)?;
    model.metadata.name = Some("allowed".into());
    model.spec.model.digest = None;
    model.spec.policy = Some(Policy {
        require_digest: false,
    });
    model.spec.model.source = "hf://org/repo".into();
    model.spec.model.revision = Some("abc".into());
    model.spec.runtime.replicas = 0;
    api.create(&PostParams::default(), &model).await?;

    // A text generator from safetensors, every generation limit at its
    // largest.
    let mut model = example(&ns)?;
    model.metadata.name = Some("generator".into());
    model.spec.model.format = Some(Format::Safetensors);
    generator(
        &mut model,
        Generation {
            max_tokens: Some(131_072),
            context_length: Some(1_048_576),
            kv_cache_bytes: Some("9999999Ti".into()),
            max_num_seqs: Some(4096),
            kv_cache_dtype: Some(KvCacheDtype::F16),
            prefix_caching: Some(false),
        },
    );
    api.create(&PostParams::default(), &model).await?;

    // kubectl shows the same message.
    let bad = std::fs::read_to_string(EXAMPLE)?.replace("replicas: 2", "replicas: -2");
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), bad)?;
    let path = file.path().display().to_string();
    let applied = kubectl(control_plane, &["apply", "-n", &ns, "-f", &path])?;
    let stderr = String::from_utf8_lossy(&applied.stderr);
    ensure!(
        !applied.status.success() && stderr.contains("replicas must be 0 or more"),
        "{stderr}"
    );
    Ok(())
}
