//! The watch caches the reconciles read instead of the API server: the
//! Deployments and Services the operator owns and the pods of every model.
//!
//! The same watches trigger the reconciles (see [`crate::controller::run`]),
//! and a cache is updated before the reconcile its change triggers, so a
//! reconcile never sees an object older than the event that woke it.
//!
//! A model's pods are found through [`PodIndex`], not by filtering them all.
//!
//! The caches keep only what the reconciles read ([`trim_deployment`],
//! [`trim_pod`]): no `managedFields`, pod specs or pod templates. Caching
//! whole objects took the operator's peak RSS to 131 MiB at 1,000 models in
//! the kwok bench; trimmed, it is 75 MiB (docs/benchmarks.md).

use std::sync::Arc;

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt as _, Stream, StreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::utils::WatchStreamExt as _;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::Error;
use crate::crd::OpenModel;
use crate::pod_index::PodIndex;
use crate::resources::MODEL_LABEL;

/// The caches, for reading.
#[derive(Clone)]
pub struct Caches {
    deployments: Store<Deployment>,
    services: Store<Service>,
    pods: Store<Pod>,
    pods_by_model: Arc<PodIndex>,
    /// True once all three are filled, false if a watch stopped first: one
    /// future that every reconcile awaits (see [`Caches::ready`]).
    ready: Shared<BoxFuture<'static, bool>>,
}

/// The caches, for the watches that fill them ([`Writers::watch`]).
pub struct Writers {
    deployments: Writer<Deployment>,
    services: Writer<Service>,
    pods: Writer<Pod>,
    pods_by_model: Arc<PodIndex>,
}

/// Empty caches and their writers.
pub fn caches() -> (Caches, Writers) {
    let (deployments, deployment_writer) = reflector::store();
    let (services, service_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let pods_by_model = Arc::new(PodIndex::default());
    let ready = {
        let (deployments, services, pods) = (deployments.clone(), services.clone(), pods.clone());
        async move {
            deployments.wait_until_ready().await.is_ok()
                && services.wait_until_ready().await.is_ok()
                && pods.wait_until_ready().await.is_ok()
        }
        .boxed()
        .shared()
    };
    (
        Caches {
            deployments,
            services,
            pods,
            pods_by_model: pods_by_model.clone(),
            ready,
        },
        Writers {
            deployments: deployment_writer,
            services: service_writer,
            pods: pod_writer,
            pods_by_model,
        },
    )
}

/// The watch streams that fill the caches; each yields every object it
/// sees change, to trigger a reconcile.
pub struct Streams<D, S, P> {
    /// The Deployments.
    pub deployments: D,
    /// The Services.
    pub services: S,
    /// The pods.
    pub pods: P,
}

type Changes<K> = Result<K, watcher::Error>;

impl Writers {
    /// Watches, in `namespace` (all when `None`), the Deployments and
    /// Services the operator manages and the pods of every model, filling
    /// the caches.
    pub fn watch(
        self,
        client: &Client,
        namespace: Option<&str>,
    ) -> Streams<
        impl Stream<Item = Changes<Deployment>> + Send + 'static,
        impl Stream<Item = Changes<Service>> + Send + 'static,
        impl Stream<Item = Changes<Pod>> + Send + 'static,
    > {
        let owned = watcher::Config::default().labels(MANAGED_BY_OPERATOR);
        Streams {
            deployments: cached(
                api(client, namespace),
                owned.clone(),
                self.deployments,
                trim_deployment,
                |_| {},
            ),
            services: cached(
                api(client, namespace),
                owned,
                self.services,
                |service| service.managed_fields_mut().clear(),
                |_| {},
            ),
            pods: cached(
                api(client, namespace),
                watcher::Config::default().labels(MODEL_LABEL),
                self.pods,
                trim_pod,
                move |event| self.pods_by_model.apply(event),
            ),
        }
    }
}

/// The label selector of the objects the operator manages.
const MANAGED_BY_OPERATOR: &str = "app.kubernetes.io/managed-by=openmodel-operator";

/// The API of `K` in `namespace`, or in all namespaces when `None`.
pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What the reconciles read of a Deployment: its metadata (without
/// managedFields), its replica count and its status; not its pod template.
pub fn trim_deployment(deployment: &mut Deployment) {
    deployment.managed_fields_mut().clear();
    if let Some(spec) = deployment.spec.as_mut() {
        spec.template = Default::default();
    }
}

/// What the reconciles read of a pod: its metadata (without managedFields)
/// and its status; not its spec.
pub fn trim_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.spec = None;
}

/// One watch filling `writer` with objects cut down by `trim`, and showing
/// each event to `index` once the cache holds it.
fn cached<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    trim: impl FnMut(&mut K) + Send + 'static,
    index: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> impl Stream<Item = Changes<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                index(event);
            }
        })
        .touched_objects()
}

impl Caches {
    /// Waits until every cache holds the cluster's state, so that a reconcile
    /// never takes "not cached yet" for "does not exist".
    ///
    /// Every caller awaits one shared future, which alone waits on the
    /// stores. `Store::wait_until_ready` (kube-runtime 5.0) keeps only the
    /// waker of the last task that polled it: of two reconciles that started
    /// before the caches were filled, the first was never woken, and its
    /// model waited until something else polled it (43 s to over 10 minutes
    /// in the end-to-end demo, when the operator was restarted just after a
    /// change). `futures`' `Shared` wakes every task that awaits it.
    pub async fn ready(&self) -> Result<(), Error> {
        if self.ready.clone().await {
            Ok(())
        } else {
            Err(Error::CacheClosed)
        }
    }

    /// The model's Deployment, as last seen.
    pub fn deployment(&self, model: &OpenModel) -> Option<Arc<Deployment>> {
        self.deployments.get(&object_ref(model))
    }

    /// The model's Service, as last seen.
    pub fn service(&self, model: &OpenModel) -> Option<Arc<Service>> {
        self.services.get(&object_ref(model))
    }

    /// The model's pods (those its selector selects), as last seen.
    pub fn pods(&self, model: &OpenModel) -> Vec<Pod> {
        let namespace = model.namespace().unwrap_or_default();
        self.pods_by_model
            .names(&namespace, &model.name_any())
            .into_iter()
            .filter_map(|name| self.pods.get(&ObjectRef::new(&name).within(&namespace)))
            .map(Arc::unwrap_or_clone)
            .collect()
    }
}

/// The reference to the object named like `model`, in its namespace.
fn object_ref<K: Resource<DynamicType = ()>>(model: &OpenModel) -> ObjectRef<K> {
    let reference = ObjectRef::new(&model.name_any());
    match model.namespace() {
        Some(namespace) => reference.within(&namespace),
        None => reference,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;
    use crate::observe::observe;
    use crate::observe::tests::{HASH, pod, terminated};
    use crate::resources::SERVER_CONTAINER;
    use crate::resources::fixtures::{DIGEST, deployment_of, model};

    #[test]
    fn trimmed_objects_are_observed_alike() {
        let mut full = deployment_of(&model());
        full.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        full.status = Some(DeploymentStatus {
            replicas: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(1),
            ..DeploymentStatus::default()
        });
        let mut pods = vec![pod("a", HASH, terminated(0, DIGEST))];
        pods[0].spec = Some(PodSpec {
            containers: vec![k8s_openapi::api::core::v1::Container {
                name: SERVER_CONTAINER.into(),
                ..Default::default()
            }],
            ..PodSpec::default()
        });
        let before = observe(Some(&full), &pods, HASH, DIGEST);

        let mut deployment = full.clone();
        trim_deployment(&mut deployment);
        let mut trimmed = pods.clone();
        trimmed.iter_mut().for_each(trim_pod);
        assert_eq!(observe(Some(&deployment), &trimmed, HASH, DIGEST), before);
        assert!(
            deployment
                .metadata
                .managed_fields
                .is_none_or(|f| f.is_empty())
        );
        assert!(trimmed[0].spec.is_none());
        assert_eq!(
            deployment.spec.as_ref().and_then(|s| s.replicas),
            full.spec.as_ref().and_then(|s| s.replicas)
        );
    }

    /// Marks every cache filled, as the first list of each watch does.
    fn fill(writers: &mut Writers) {
        writers
            .deployments
            .apply_watcher_event(&watcher::Event::InitDone);
        writers
            .services
            .apply_watcher_event(&watcher::Event::InitDone);
        writers.pods.apply_watcher_event(&watcher::Event::InitDone);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_reconcile_waiting_for_the_caches_is_woken_when_they_fill() {
        let (caches, mut writers) = caches();
        // Two reconciles start before the caches are filled, one after the
        // other, each in its own task (as the controller runs them).
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let caches = caches.clone();
                tokio::spawn(async move { caches.ready().await })
            })
            .collect();
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert!(waiting.iter().all(|task| !task.is_finished()));
        fill(&mut writers);
        for (n, task) in waiting.into_iter().enumerate() {
            let woken = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
            assert!(
                matches!(woken, Ok(Ok(Ok(())))),
                "reconcile {n} was not woken when the caches filled"
            );
        }
        // Later callers pass at once.
        caches.ready().await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_watch_that_stops_before_filling_its_cache_closes_the_wait() {
        let (caches, writers) = caches();
        drop(writers);
        assert!(matches!(caches.ready().await, Err(Error::CacheClosed)));
    }
}
