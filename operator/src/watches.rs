//! The watch caches the reconciles read instead of the API server: the
//! Deployments and Services the operator owns and the pods of every model.
//!
//! The same watches trigger the reconciles (see [`crate::controller::run`]),
//! and a cache is updated before the reconcile its change triggers, so a
//! reconcile never sees an object older than the event that woke it. Their
//! `managedFields` are dropped: nothing reads them, and at 10,000 models they
//! would be most of the operator's memory.

use std::sync::Arc;

use futures::Stream;
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
use crate::resources::{MODEL_LABEL, selector_labels};

/// The caches, for reading.
#[derive(Clone)]
pub struct Caches {
    deployments: Store<Deployment>,
    services: Store<Service>,
    pods: Store<Pod>,
}

/// The caches, for the watches that fill them ([`Writers::watch`]).
pub struct Writers {
    deployments: Writer<Deployment>,
    services: Writer<Service>,
    pods: Writer<Pod>,
}

/// Empty caches and their writers.
pub fn caches() -> (Caches, Writers) {
    let (deployments, deployment_writer) = reflector::store();
    let (services, service_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    (
        Caches {
            deployments,
            services,
            pods,
        },
        Writers {
            deployments: deployment_writer,
            services: service_writer,
            pods: pod_writer,
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
            deployments: cached(api(client, namespace), owned.clone(), self.deployments),
            services: cached(api(client, namespace), owned, self.services),
            pods: cached(
                api(client, namespace),
                watcher::Config::default().labels(MODEL_LABEL),
                self.pods,
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

/// One watch filling `writer`, with managedFields dropped.
fn cached<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
) -> impl Stream<Item = Changes<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    watcher(api, config)
        .default_backoff()
        .modify(|object: &mut K| object.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects()
}

impl Caches {
    /// Waits until every cache holds the cluster's state, so that a reconcile
    /// never takes "not cached yet" for "does not exist".
    pub async fn ready(&self) -> Result<(), Error> {
        let closed = |_| Error::CacheClosed;
        self.deployments.wait_until_ready().await.map_err(closed)?;
        self.services.wait_until_ready().await.map_err(closed)?;
        self.pods.wait_until_ready().await.map_err(closed)
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
        let namespace = model.namespace();
        let selector = selector_labels(model);
        self.pods
            .state_filter(|pod| {
                pod.namespace() == namespace
                    && selector
                        .iter()
                        .all(|(key, value)| pod.labels().get(key) == Some(value))
            })
            .into_iter()
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
