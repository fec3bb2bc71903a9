//! The desired state of an `OpenModel`: what to serve, where it came from,
//! how to run it. Written by people (`kubectl apply`), read by the builders
//! and the ledger records.
//!
//! Every rule the API server enforces is declared here, next to its field,
//! as a CEL rule (`x-kubernetes-validations`) with a message that says what
//! to write instead; `crds/openmodel.yaml` is generated from these types.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::OpenModelStatus;

/// A model served over the Open Inference Protocol and an OpenAI-compatible
/// HTTP API (sentence embeddings or text generation), with its provenance;
/// every change and every digest that goes live is recorded in the audit
/// ledger.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "serving.openmodel.dev",
    version = "v1alpha1",
    kind = "OpenModel",
    namespaced,
    shortname = "om",
    category = "openmodel",
    status = "OpenModelStatus",
    derive = "PartialEq",
    doc = "A model served by OpenModel: weights pinned by digest, provenance recorded in the audit ledger.",
    scale(
        spec_replicas_path = ".spec.runtime.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Task", "type": "string", "jsonPath": ".spec.model.task"}"#,
    printcolumn = r#"{"name": "Digest", "type": "string", "jsonPath": ".status.servedDigest"}"#,
    printcolumn = r#"{"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(
    "has(self.model.digest) || (has(self.policy) && has(self.policy.requireDigest) && !self.policy.requireDigest)"
).message("spec.model.digest is required (policy.requireDigest is true): set it to the output of `openmodel-server digest DIR`"))]
#[x_kube(validation = Rule::new(
    "!has(self.generation) || self.model.task == 'text-generation'"
).message("spec.generation applies to text generation only: set spec.model.task to text-generation, or remove spec.generation"))]
#[x_kube(validation = Rule::new(
    "!has(self.generation) || !has(self.generation.kvCacheDtype) || self.generation.kvCacheDtype == 'f32' || self.runtime.resources.gpu == 0"
).message("spec.generation.kvCacheDtype f16 is for CPU pods: with runtime.resources.gpu > 0 the KV cache is in the model's dtype; remove kvCacheDtype or set it to f32"))]
#[serde(rename_all = "camelCase")]
pub struct OpenModelSpec {
    /// The weights to serve.
    pub model: ModelSpec,
    /// Where the model came from: license, owner, datasets, training recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// How the server pods run.
    pub runtime: Runtime,
    /// Batching and admission limits of the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<Serving>,
    /// Limits of text generation (task `text-generation` only).
    // Beside `serving`, not in it: these are the generation engine's own
    // settings (vLLM's names), none of which means anything to an embedding
    // model, so one rule on the whole object refuses them for one; `serving`
    // keeps the embedding batcher's limits and the server-wide cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<Generation>,
    /// What the operator insists on before serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

/// The weights: where to fetch them and the digest they must have.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new(
    "!self.source.startsWith('hf://') || (self.source.contains('@') != has(self.revision))"
).message("an hf:// source needs exactly one revision: hf://<org>/<repo>@<commit>, or hf://<org>/<repo> with spec.model.revision"))]
#[x_kube(validation = Rule::new(
    "!has(self.format) || self.format != 'gguf' || self.task == 'text-generation'"
).message("format gguf is served for task text-generation only: set spec.model.task to text-generation, or give an embedding model as safetensors"))]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// `hf://<org>/<repo>[@<revision>]`, `https://…/` or `http://…/` (a folder
    /// listed by `.openmodel-manifest.json`), or `file:///<absolute path>`.
    #[x_kube(validation = Rule::new(
        "self.matches('^(hf://[^/@]+/[^/@]+(@[^/@]+)?|https?://[^/]+.*|file:///.*)$')"
    ).message("source must be hf://<org>/<repo>@<revision>, https://<host>/<folder>/, http://<host>/<folder>/ or file:///<absolute path>"))]
    #[schemars(length(max = 2048))]
    pub source: String,
    /// What the model computes.
    pub task: Task,
    /// How the weights are stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// The manifest digest the weights must have, as printed by
    /// `openmodel-server digest DIR`: `sha256-manifest-v2:<64 hex>` (covers
    /// each file's path, size and content), or `sha256:<64 hex>` (the first
    /// version, contents only) for weights pinned before it. Pods refuse
    /// other weights.
    #[x_kube(validation = Rule::new(openmodel_contract::digest::CEL_RULE)
        .message("digest must be sha256: followed by 64 lowercase hex digits (the first version) or sha256-manifest-v2: followed by 64 lowercase hex digits (openmodel-server digest DIR prints it)"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = openmodel_contract::digest::MAX_LEN))]
    pub digest: Option<String>,
    /// The revision of an `hf://` source given without `@<revision>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub revision: Option<String>,
    /// The most the model's files may take, as a Kubernetes quantity of
    /// bytes (`500Mi`, `20Gi`, `1G`): the fetch refuses a source that holds
    /// more, and the pod's weights volume is given that size (an `emptyDir`
    /// `sizeLimit`, with a little room beside it), so no source can fill the
    /// node's disk. Default 20Gi.
    #[x_kube(validation = Rule::new(
        "self.matches('^[1-9][0-9]{0,15}(Ki|Mi|Gi|Ti|k|M|G|T)?$')"
    ).message("size must be a whole number of bytes with an optional unit: Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T (powers of 1000), e.g. 500Mi"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 18))]
    pub size: Option<String>,
}

/// What a model computes: `embedding` (sentence embeddings) or
/// `text-generation` (a decoder-only model).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Sentence embeddings (the BERT family, e.g. all-MiniLM-L6-v2).
    Embedding,
    /// Text generation by a decoder-only model (Llama, Qwen2, Qwen3, e.g.
    /// SmolLM2-135M-Instruct), served over the OpenAI-compatible HTTP API
    /// and the Open Inference Protocol.
    TextGeneration,
}

impl Task {
    /// The server's `--task` value for this task.
    pub fn serve_task(self) -> &'static str {
        match self {
            Task::Embedding => openmodel_contract::serve::TASK_EMBEDDINGS,
            Task::TextGeneration => openmodel_contract::serve::TASK_TEXT_GENERATION,
        }
    }
}

/// How a model's weights are stored: `gguf` (one `.gguf` file, text
/// generation only) or `safetensors` (the Hugging Face layout). The server
/// finds the files in the folder itself; this says what the folder holds,
/// so that the API server refuses a combination the server cannot serve and
/// the ledger records it with the rest of the spec.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One `.gguf` file holding the weights (possibly quantized: GGML
    /// Q4_0, Q4_1, Q8_0), the tokenizer and the chat template; text
    /// generation only.
    Gguf,
    /// `*.safetensors` files with `config.json` and `tokenizer.json` (the
    /// Hugging Face layout).
    Safetensors,
}

/// Where a model came from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// The weights' license (SPDX identifier, e.g. `apache-2.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub license: Option<String>,
    /// Who answers for the model (a team or an address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub owner: Option<String>,
    /// Datasets the model was trained, tuned or evaluated on; each is
    /// recorded in the ledger as `dataset.referenced`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))")
        .message("dataset names must be unique"))]
    pub datasets: Vec<DatasetRef>,
    /// How the model was trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
}

/// A dataset a model declares.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatasetRef {
    /// A short name, unique within the model.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Where the dataset lives, pinned if possible
    /// (`hf://datasets/<org>/<name>@<commit>`, `https://…`, `s3://…`, `gs://…`, `file:///…`).
    #[x_kube(validation = Rule::new("self.matches('^(hf|https?|s3|gs|file)://.+$')")
        .message("dataset uri must start with hf://, https://, http://, s3://, gs:// or file://"))]
    #[schemars(length(max = 2048))]
    pub uri: String,
    /// The dataset's content digest, `sha256:<64 hex>`, when known.
    #[x_kube(validation = Rule::new("self.matches('^sha256:[0-9a-f]{64}$')")
        .message("dataset digest must be sha256: followed by 64 lowercase hex digits"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 71))]
    pub digest: Option<String>,
    /// The dataset's license.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub license: Option<String>,
    /// What the dataset was used for.
    pub role: DatasetRole,
}

/// What a dataset was used for.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetRole {
    /// Pre-training or training.
    Training,
    /// Fine-tuning.
    FineTuning,
    /// Evaluation or testing.
    Evaluation,
    /// Anything else (calibration, distillation, …).
    Other,
}

impl DatasetRole {
    /// The name used in the resource and the ledger, e.g. `fine-tuning`.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetRole::Training => "training",
            DatasetRole::FineTuning => "fine-tuning",
            DatasetRole::Evaluation => "evaluation",
            DatasetRole::Other => "other",
        }
    }
}

/// How a model was trained.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Training {
    /// The training recipe, pinned (`https://…/train.py@<commit>`).
    #[x_kube(validation = Rule::new("self.matches('^(hf|https?|s3|gs|file)://.+$')")
        .message("training recipe must be a URI (hf://, https://, http://, s3://, gs:// or file://)"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub recipe: Option<String>,
}

/// How the server pods run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Runtime {
    /// The `openmodel-server` image (`<registry>/openmodel-server:<version>`):
    /// it fetches the weights, and serves them unless `resources.gpu` > 0
    /// and `cudaImage` is set.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// The CUDA build of the server (`<registry>/openmodel-server:<version>-cuda`),
    /// which serves instead of `image` when `resources.gpu` > 0. The weights
    /// are still fetched with `image`: the CUDA build needs the GPU driver
    /// to start, and only the serving container gets a GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub cuda_image: Option<String>,
    /// The pods' RuntimeClass (e.g. `nvidia`, where the NVIDIA container
    /// runtime is not the node's default); default, for pods with GPUs:
    /// the operator's `--gpu-runtime-class-name`, if any.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("runtimeClassName must be a DNS subdomain: lowercase letters, digits, '-' and '.'"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub runtime_class_name: Option<String>,
    /// Server pods (0 stops serving but keeps the model).
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 0").message("replicas must be 0 or more"))]
    pub replicas: i32,
    /// CPU, memory and GPUs of each server pod.
    #[serde(default)]
    pub resources: Resources,
    /// Nodes the pods may run on, by label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate (GPU nodes' `nvidia.com/gpu` taint is
    /// tolerated automatically when `resources.gpu` > 0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Scheduling constraints of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Extra environment of the fetch and serve containers (e.g.
    /// `HF_ENDPOINT`, a token from a Secret).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

fn one() -> i32 {
    1
}

/// Resources of each server pod; requests equal limits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU (e.g. `2`, `1500m`); also sets the server's thread count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory (e.g. `4Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// GPUs (of `gpuResource`); with GPUs, rollouts replace pods one at a
    /// time without surging (`maxSurge: 0`) and the server runs on the
    /// first one (`--device cuda`).
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("gpu must be 0 or more"))]
    pub gpu: i32,
    /// The extended resource the device plugin offers GPUs as, and the
    /// taint tolerated on GPU nodes (a MIG slice, e.g.
    /// `nvidia.com/mig-1g.18gb`, also works); default: the operator's
    /// `--gpu-resource`, `nvidia.com/gpu` unless the chart says otherwise.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$') && !self.matches('^([^/]*[.])?kubernetes[.]io/')")
        .message("gpuResource must be an extended resource name, <domain>/<name> (e.g. nvidia.com/gpu), outside kubernetes.io"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 253))]
    pub gpu_resource: Option<String>,
}

impl Runtime {
    /// Whether the pods get GPUs.
    pub fn uses_gpu(&self) -> bool {
        self.resources.gpu > 0
    }

    /// The image of the serving container: `cudaImage` on GPUs when set,
    /// else `image`.
    pub fn server_image(&self) -> &str {
        match &self.cuda_image {
            Some(cuda) if self.uses_gpu() => cuda,
            _ => &self.image,
        }
    }
}

/// Batching and admission limits, passed to `openmodel-server serve`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Serving {
    /// Most tokens in one batch, padding included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_batch_tokens: Option<u32>,
    /// Most texts in one batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_batch_requests: Option<u32>,
    /// Requests in flight beyond this are refused with RESOURCE_EXHAUSTED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent_requests: Option<u32>,
}

/// Limits of text generation, passed to `openmodel-server serve` (each
/// unset one keeps the server's default).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Generation {
    /// Most tokens one request may generate, and what a request that
    /// names no `max_tokens` gets (`--max-new-tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 131072))]
    pub max_tokens: Option<u32>,
    /// Longest prompt, in tokens (`--max-prompt-tokens`); a longer one is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub context_length: Option<u32>,
    /// Memory for the KV cache of all running sequences, as a Kubernetes
    /// quantity of bytes (`512Mi`, `2Gi`; `--kv-cache-bytes`): each request
    /// reserves room for its prompt and `max_tokens` when it starts, others
    /// wait while it is full. Counts against `runtime.resources.memory`.
    #[x_kube(validation = Rule::new(
        "self.matches('^([1-9][0-9]{0,18}|[1-9][0-9]{0,6}(Ki|Mi|Gi|Ti|k|M|G|T))$')"
    ).message("kvCacheBytes must be a whole number of bytes (at most 19 digits) or a whole number of at most 7 digits with a unit: Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T (powers of 1000), e.g. 2Gi"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 19))]
    pub kv_cache_bytes: Option<String>,
    /// Sequences generated at once, the running batch (`--max-num-seqs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_num_seqs: Option<u32>,
    /// Element type of the KV cache on CPU pods (`--kv-cache-dtype`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_dtype: Option<KvCacheDtype>,
    /// Prefix caching (`--enable-prefix-caching`, the server's default, or
    /// `--no-enable-prefix-caching`): a request whose prompt begins as a
    /// running or recently finished request's did starts from a copy of
    /// those keys and values; the tokens generated are the same, only the
    /// time to the first one changes. Set `false` where clients must not
    /// learn anything of each other's prompts (one can time whether
    /// another sent the same first tokens). CPU pods only; GPU pods never
    /// share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_caching: Option<bool>,
}

/// Element type of the KV cache on CPU pods (`--kv-cache-dtype`): `f32`
/// (the server's default) or `f16`: half the memory a token takes, so
/// twice the tokens in `kvCacheBytes`, and faster decoding of many
/// sequences; each key and value rounded to f16 once (llama.cpp's default
/// cache). Pods with GPUs keep the cache in the model's dtype: only `f32`
/// with `resources.gpu` > 0.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KvCacheDtype {
    /// 32-bit floats: the model's own arithmetic.
    F32,
    /// 16-bit floats: half the memory and half the bytes read per step.
    F16,
}

impl KvCacheDtype {
    /// The server's `--kv-cache-dtype` value.
    pub fn serve_value(self) -> &'static str {
        match self {
            KvCacheDtype::F32 => openmodel_contract::serve::KV_CACHE_DTYPE_F32,
            KvCacheDtype::F16 => openmodel_contract::serve::KV_CACHE_DTYPE_F16,
        }
    }
}

/// What the operator insists on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Refuse (at admission) a model without `spec.model.digest`. Default true.
    #[serde(default = "yes")]
    pub require_digest: bool,
}

fn yes() -> bool {
    true
}
