//! What operator tests need: a namespace with the OpenModel CRD installed,
//! the operator running in-process on a ledger of its own, waiting for the
//! API server or the ledger to show something, and playing the kubelet's
//! part (there are no nodes at this level: pods are created from the
//! Deployment's template and their status is written by the test).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{ControlPlane, Error, create_namespace, install_crds};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use openmodel_ledger::Ledger;
use openmodel_ledger::note::Signer;
use openmodel_ledger::query::{MAX_LIMIT, Query};
use openmodel_ledger::store::{OpenCheck, StoredEntry};
use openmodel_operator::crd::OpenModel;
use openmodel_operator::journal::{JournalConfig, LedgerLocation};
use openmodel_operator::leader::LeaseConfig;
use openmodel_operator::resources::gpu::GpuDefaults;
use openmodel_operator::webhook::WebhookConfig;
use serde_json::{Value, json};

type Result<T, E = Error> = std::result::Result<T, E>;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The committed CRD manifest.
pub const CRD_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/openmodel.yaml");

/// The example model, `examples/minilm.yaml`.
pub const EXAMPLE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/minilm.yaml");

/// The example model as the Rust type, placed in `namespace`.
pub fn example(namespace: &str) -> Result<OpenModel> {
    let text = std::fs::read_to_string(EXAMPLE_PATH)
        .map_err(Error::io(format!("reading {EXAMPLE_PATH}")))?;
    let mut model: OpenModel = serde_saphyr::from_str(&text).map_err(|source| Error::Manifest {
        path: EXAMPLE_PATH.into(),
        source: Box::new(source),
    })?;
    model.metadata.namespace = Some(namespace.into());
    Ok(model)
}

/// The control plane shared by the tests of one test binary; panics with
/// the harness's message (how to build the binaries) when it cannot start.
pub async fn control_plane() -> &'static ControlPlane {
    ControlPlane::shared()
        .await
        .unwrap_or_else(|err| panic!("starting the control plane: {err}"))
}

/// The OpenModels of `namespace`.
pub fn models(client: &Client, namespace: &str) -> Api<OpenModel> {
    Api::namespaced(client.clone(), namespace)
}

/// Creates `count` copies of `template` named `m00000`, `m00001`, …, with
/// `concurrency` creates in flight (a burst, as the benchmarks apply it);
/// returns each name with the moment its create was sent.
pub async fn create_burst(
    models: &Api<OpenModel>,
    template: &OpenModel,
    count: usize,
    concurrency: usize,
) -> Result<Vec<(String, Instant)>> {
    use futures::{StreamExt as _, TryStreamExt as _};
    Ok(futures::stream::iter(0..count)
        .map(|i| {
            let (models, mut model) = (models.clone(), template.clone());
            let name = format!("m{i:05}");
            model.metadata.name = Some(name.clone());
            async move {
                let at = Instant::now();
                models.create(&PostParams::default(), &model).await?;
                Ok::<_, kube::Error>((name, at))
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?)
}

/// Changes the spec of the example model (`minilm`) with a merge patch.
pub async fn patch_spec(client: &Client, namespace: &str, spec: Value) -> Result<()> {
    models(client, namespace)
        .patch(
            "minilm",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await?;
    Ok(())
}

/// The response (status line, headers, body) to an HTTP/1.0 GET of `path`
/// on `addr`; the operator's `/metrics`, `/healthz` and `/readyz`.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let what = || format!("GET http://{addr}{path}");
    let mut stream = TcpStream::connect(addr).map_err(Error::io(what()))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(Error::io(what()))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(Error::io(what()))?;
    Ok(response)
}

/// The value of one series (`name{labels}`) in the operator's `/metrics`
/// on `addr`; 0 for a series not yet created.
pub async fn metric(addr: SocketAddr, series: &str) -> Result<f64> {
    let text = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .map_err(|e| Error::io("reading /metrics".to_string())(std::io::Error::other(e)))??;
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(Ok(0.0), str::parse)
        .map_err(|e| Error::io(format!("the value of {series}"))(std::io::Error::other(e)))?;
    Ok(value)
}

/// Who holds a leader Lease, if anyone.
pub fn lease_holder(lease: &k8s_openapi::api::coordination::v1::Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

/// How long a test waits for the operator to react.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A namespace of this test's own, with the CRD installed and a `default`
/// ServiceAccount (pods need one; without kube-controller-manager nobody
/// makes it).
pub async fn namespace(client: &Client, test: &str) -> Result<String> {
    install_crds(client, CRD_PATH).await?;
    let namespace = create_namespace(client, test).await?;
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &account)
        .await?;
    Ok(namespace)
}

/// A fresh ledger signing key in `dir`; returns its file.
pub fn ledger_key(dir: &Path) -> Result<PathBuf> {
    let signer = Signer::generate("test.openmodel.dev/ledger")?;
    let path = dir.join("ledger.key");
    std::fs::write(&path, format!("{signer}\n"))
        .map_err(Error::io(format!("writing {}", path.display())))?;
    Ok(path)
}

/// The operator configuration for one namespace: it watches only that
/// namespace and keeps its Lease there, with short lease timings.
pub fn config(namespace: &str, dir: &Path, identity: &str) -> Result<openmodel_operator::Config> {
    let key_file = dir.join("ledger.key");
    if !key_file.exists() {
        ledger_key(dir)?;
    }
    Ok(openmodel_operator::Config {
        namespace: Some(namespace.into()),
        journal: JournalConfig {
            ledger: LedgerLocation::File {
                path: dir.join("ledger.sqlite"),
                key_file,
                create: true,
            },
            cluster: "test".into(),
        },
        lease: LeaseConfig {
            namespace: namespace.into(),
            name: "openmodel-operator".into(),
            identity: identity.into(),
            duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
        },
        http_listen: None,
        concurrency: 16,
        webhook: None,
        gpu: GpuDefaults::default(),
    })
}

/// The operator, running in-process on a ledger in a temporary folder.
pub struct Operator {
    /// Holds the ledger and its key.
    pub dir: TempDir,
    client: Client,
    namespace: String,
    http_listen: Option<SocketAddr>,
    webhook: Option<WebhookConfig>,
    ledger: Option<LedgerLocation>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), openmodel_operator::Error>>>,
}

impl Operator {
    /// Starts an operator for `namespace` on a new ledger.
    pub async fn start(client: &Client, namespace: &str) -> Result<Operator> {
        Self::start_with_http(client, namespace, None).await
    }

    /// Starts an operator for `namespace` on a new ledger that also serves
    /// `/metrics`, `/healthz` and `/readyz` on `http_listen`.
    pub async fn start_with_http(
        client: &Client,
        namespace: &str,
        http_listen: Option<SocketAddr>,
    ) -> Result<Operator> {
        Self::start_with(client, namespace, http_listen, None, None)
    }

    /// Starts an operator for `namespace` that writes to `ledger` (say, the
    /// ledger service) instead of a file of its own.
    pub async fn start_with_ledger(
        client: &Client,
        namespace: &str,
        ledger: LedgerLocation,
    ) -> Result<Operator> {
        Self::start_with(client, namespace, None, None, Some(ledger))
    }

    /// Starts an operator for `namespace`, optionally serving `/metrics`
    /// on `http_listen` and the admission webhook, and writing to `ledger`
    /// (default: a ledger file of its own).
    pub fn start_with(
        client: &Client,
        namespace: &str,
        http_listen: Option<SocketAddr>,
        webhook: Option<WebhookConfig>,
        ledger: Option<LedgerLocation>,
    ) -> Result<Operator> {
        let dir = tempfile::tempdir().map_err(Error::io("creating the operator's folder"))?;
        let mut operator = Operator {
            dir,
            client: client.clone(),
            namespace: namespace.into(),
            http_listen,
            webhook,
            ledger,
            shutdown: None,
            task: None,
        };
        operator.launch()?;
        Ok(operator)
    }

    /// Stops the operator cleanly and starts a new one on the same ledger,
    /// as a restarted pod would.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.launch()
    }

    fn launch(&mut self) -> Result<()> {
        let mut config = config(&self.namespace, self.dir.path(), "in-process")?;
        config.http_listen = self.http_listen;
        config.webhook = self.webhook.clone();
        if let Some(ledger) = &self.ledger {
            config.journal.ledger = ledger.clone();
        }
        let (shutdown, stopped) = oneshot::channel();
        self.task = Some(tokio::spawn(openmodel_operator::run(
            self.client.clone(),
            config,
            async {
                let _ = stopped.await;
            },
        )));
        self.shutdown = Some(shutdown);
        Ok(())
    }

    /// The ledger file.
    pub fn ledger_path(&self) -> PathBuf {
        self.dir.path().join("ledger.sqlite")
    }

    /// The address of the admission webhook it serves, if any.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook.as_ref().map(|w| w.listen)
    }

    /// Shuts the operator down cleanly and returns how it ended.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let ended = tokio::time::timeout(PATIENCE, task)
                .await
                .map_err(|_| Error::Timeout {
                    what: "the operator's shutdown".into(),
                    waited: PATIENCE,
                    detail: "it was still running".into(),
                })?;
            ended.map_err(|e| Error::Io {
                what: "the operator task".into(),
                source: std::io::Error::other(e),
            })??;
        }
        Ok(())
    }
}

/// The entries of the ledger at `path` about `namespace/name` (all models
/// of the namespace when `name` is `None`), after a full verification of
/// the file.
pub fn ledger_entries(
    path: &Path,
    namespace: &str,
    name: Option<&str>,
) -> Result<Vec<StoredEntry>> {
    let ledger = Ledger::open_read_only(path, OpenCheck::Full)?;
    ledger.verify_stored()?;
    let page = ledger.query(&Query {
        object: Some((namespace.into(), name.map(str::to_string))),
        limit: MAX_LIMIT,
        ..Query::default()
    })?;
    Ok(page.entries)
}

/// The kinds of a list of entries, in order.
pub fn kinds(entries: &[StoredEntry]) -> Vec<&'static str> {
    entries.iter().map(|e| e.entry.kind()).collect()
}

/// Polls `name` until `ready` holds (or the patience runs out, with the
/// last object seen in the error).
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    ready: impl Fn(&K) -> bool,
) -> Result<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let started = Instant::now();
    loop {
        let last = api.get_opt(name).await?;
        if let Some(object) = &last
            && ready(object)
        {
            return Ok(object.clone());
        }
        if started.elapsed() > PATIENCE {
            return Err(Error::Timeout {
                what: format!("{what} ({name})"),
                waited: started.elapsed(),
                detail: format!("last seen: {last:#?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until the ledger holds entries of `kinds` (in this order) about
/// the model, and returns them.
pub async fn wait_for_ledger(
    path: &Path,
    namespace: &str,
    name: &str,
    wanted: &[&str],
) -> Result<Vec<StoredEntry>> {
    let started = Instant::now();
    loop {
        let entries = ledger_entries(path, namespace, Some(name))?;
        if kinds(&entries) == wanted {
            return Ok(entries);
        }
        if started.elapsed() > PATIENCE {
            return Err(Error::Timeout {
                what: format!("ledger entries {wanted:?} about {namespace}/{name}"),
                waited: started.elapsed(),
                detail: format!("the ledger holds {:?}", kinds(&entries)),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Plays the ReplicaSet controller: creates pod `name` from the
/// Deployment's current template.
pub async fn create_pod(client: &Client, deployment: &Deployment, name: &str) -> Result<Pod> {
    let template = deployment.spec.clone().unwrap_or_default().template;
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.name = Some(name.into());
    let pod = Pod {
        metadata,
        spec: template.spec,
        status: None,
    };
    let namespace = deployment.namespace().unwrap_or_default();
    Ok(Api::<Pod>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &pod)
        .await?)
}

/// Plays the kubelet: the fetch init container of `pod` terminated with
/// `exit_code` and `message` (its termination log); when it succeeded the
/// server container runs and is ready.
pub async fn finish_fetch(client: &Client, pod: &Pod, exit_code: i32, message: &str) -> Result<()> {
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default();
    let ok = exit_code == 0;
    let status = json!({
        "status": {
            "phase": if ok { "Running" } else { "Pending" },
            "conditions": [{"type": "Ready", "status": if ok { "True" } else { "False" }}],
            "initContainerStatuses": [{
                "name": "fetch", "image": image, "imageID": "", "ready": ok, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "reason": if ok { "Completed" } else { "Error" }, "message": message}}
            }],
            "containerStatuses": [{
                "name": "server", "image": image, "imageID": "", "ready": ok, "restartCount": 0,
                "state": if ok { json!({"running": {}}) } else { json!({"waiting": {"reason": "PodInitializing"}}) }
            }]
        }
    });
    Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default())
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    Ok(())
}

/// Plays the Deployment controller: `updated` replicas of the current
/// generation exist, `available` of them available.
pub async fn rollout_status(
    client: &Client,
    deployment: &Deployment,
    updated: i32,
    available: i32,
) -> Result<()> {
    let status = json!({
        "status": {
            "observedGeneration": deployment.metadata.generation,
            "replicas": updated,
            "updatedReplicas": updated,
            "readyReplicas": available,
            "availableReplicas": available,
        }
    });
    Api::<Deployment>::namespaced(client.clone(), &deployment.namespace().unwrap_or_default())
        .patch_status(
            &deployment.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    Ok(())
}

/// The `data` of an entry as JSON.
pub fn data(entry: &StoredEntry) -> Value {
    let leaf: Value = serde_json::from_slice(&entry.leaf).expect("leaves are JSON");
    leaf["data"].clone()
}
