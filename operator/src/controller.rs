//! The reconcile loop: for each `OpenModel`, put its spec into effect,
//! record what happened in the ledger, and report it in its status.
//!
//! One reconcile, top to bottom (`apply`):
//! 1. record a new generation: `spec.changed` (JSON Patch against the spec
//!    the ledger last recorded) and `dataset.referenced`;
//! 2. server-side apply the Deployment, the Service and (replicas > 1) the
//!    PodDisruptionBudget, with field manager [`FIELD_MANAGER`], forced: what
//!    the spec no longer says disappears from the objects (skipped while
//!    they are as the last apply left them: [`last_apply`](crate::last_apply));
//! 3. read the Deployment's and the pods' status ([`observe`]) from the
//!    watch caches ([`watches`](crate::watches)), keeping only the pods the
//!    model's Deployment made (owner references to one of its ReplicaSets,
//!    looked up once each: [`observe::made_by`]);
//! 4. record `weights.verified` for a digest a current pod verified, and
//!    `model.deployed` once the status says Ready;
//! 5. apply the status ([`status::derive`]) and publish an Event for every
//!    condition that changed.
//!
//! Deletion runs through the finalizer [`FINALIZER`]: `model.retired` is
//! recorded before the object may go.
//!
//! A reconcile that has not finished after [`RECONCILE_DEADLINE`] is
//! abandoned and fails (and is retried like any failure): every call it
//! makes has a deadline of its own, so this is the net under them, and no
//! model waits on one stuck call for good. Abandoning is safe where a crash
//! is: every step is idempotent and every ledger entry deduplicated.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Future, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::{PredicateConfig, WatchStreamExt as _};
use kube::runtime::{reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{LedgerStatus, OpenModel, OpenModelStatus};
use crate::journal::Journal;
use crate::last_apply::{LastApply, fingerprint};
use crate::metrics::Metrics;
use crate::observe::{self, observe, pods_to_annotate};
use crate::records;
use crate::resources::gpu::GpuDefaults;
use crate::resources::{self, MODEL_LABEL, TEMPLATE_HASH_ANNOTATION, WEIGHTS_ENTRY_ANNOTATION};
use crate::status::{self, Blocker, READY, StatusInput};
use crate::watches::{self, Caches, Writers, api};
use crate::{Error, lock};

/// The field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "openmodel-operator";

/// The finalizer that records `model.retired` before a model goes.
pub const FINALIZER: &str = "serving.openmodel.dev/retire";

/// How often a model is looked at again without any change (the watches
/// of the model, its Deployment, Service and pods trigger a reconcile on
/// every change; this is the safety net): every minute while it is not
/// Ready, every five once it is. A recheck that finds nothing changed reads
/// only the caches: no request to the API server or the ledger.
const RECHECK_NOT_READY: Duration = Duration::from_secs(60);
const RECHECK_READY: Duration = Duration::from_secs(300);

/// The longest one reconcile may run (see the module documentation): well
/// beyond its calls' own bounds (a ledger call gives up after about 45 s, an
/// API call after kube's read timeout), and beyond a replay of a long spec
/// history in pages.
pub const RECONCILE_DEADLINE: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The ledger.
    pub journal: Journal,
    /// Publishes Events on the models.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// What GPU pods get when their model's spec leaves it to the cluster.
    pub gpu: GpuDefaults,
    /// The Deployments, Services and pods, as the watches last saw them.
    caches: Caches,
    /// What was last applied for each model (`namespace/name`).
    last_applies: Mutex<HashMap<String, LastApply>>,
    /// Models (`namespace/name`) known to have no PodDisruptionBudget, so
    /// reconciles do not ask the API server to delete one again.
    without_budget: Mutex<HashSet<String>>,
    /// For each model (`namespace/name`), the ReplicaSets its Deployment is
    /// known to control, so each is looked up once.
    replica_sets: Mutex<HashMap<String, DeploymentReplicaSets>>,
}

/// The ReplicaSets (uids) one Deployment (uid) is known to control.
#[derive(Clone, Default)]
struct DeploymentReplicaSets {
    deployment: String,
    replica_sets: HashSet<String>,
}

impl Context {
    /// A context whose Events name `instance` as the reporting instance,
    /// and the writers of its caches, for [`run`].
    pub fn new(
        client: Client,
        journal: Journal,
        metrics: Arc<Metrics>,
        instance: &str,
        gpu: GpuDefaults,
    ) -> (Self, Writers) {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(instance.into()),
        };
        let (caches, writers) = watches::caches();
        let context = Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            journal,
            metrics,
            gpu,
            caches,
            last_applies: Mutex::default(),
            without_budget: Mutex::default(),
            replica_sets: Mutex::default(),
        };
        (context, writers)
    }

    /// The last apply for the model `key`, if this process made one.
    fn last_apply(&self, key: &str) -> Option<LastApply> {
        lock(&self.last_applies).get(key).cloned()
    }

    /// Notes the last apply for the model `key` (none: forget it).
    fn set_last_apply(&self, key: &str, apply: Option<LastApply>) {
        let mut applies = lock(&self.last_applies);
        match apply {
            Some(apply) => applies.insert(key.to_string(), apply),
            None => applies.remove(key),
        };
    }

    /// Whether the model `key` is known to have no PodDisruptionBudget.
    fn is_without_budget(&self, key: &str) -> bool {
        self.budgets().contains(key)
    }

    /// Notes whether the model `key` is known to have no budget.
    fn set_without_budget(&self, key: &str, without: bool) {
        if without {
            self.budgets().insert(key.to_string());
        } else {
            self.budgets().remove(key);
        }
    }

    fn budgets(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        lock(&self.without_budget)
    }

    /// The ReplicaSets known to be controlled by the Deployment `deployment`
    /// (uid) of the model `key`.
    fn known_replica_sets(&self, key: &str, deployment: &str) -> HashSet<String> {
        lock(&self.replica_sets)
            .get(key)
            .filter(|known| known.deployment == deployment)
            .map(|known| known.replica_sets.clone())
            .unwrap_or_default()
    }

    /// Notes the ReplicaSets known to be controlled by the model's
    /// Deployment (none: forget them).
    fn set_known_replica_sets(&self, key: &str, known: Option<DeploymentReplicaSets>) {
        let mut replica_sets = lock(&self.replica_sets);
        match known {
            Some(known) => replica_sets.insert(key.to_string(), known),
            None => replica_sets.remove(key),
        };
    }
}

/// Runs the controller over the models of `namespace` (all when `None`),
/// at most `concurrency` reconciles at once (0: no limit), until `shutdown`
/// completes; reconciles in flight then finish. `writers` are the context's
/// ([`Context::new`]).
pub async fn run(
    context: Arc<Context>,
    writers: Writers,
    namespace: Option<&str>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    // The models, cached without their managedFields (nothing reads them,
    // and they are a large part of each object); only a new
    // generation (which deletion also makes) or a changed finalizer list
    // starts a reconcile: the operator's own status writes do not.
    let (reader, writer) = reflector::store();
    let models = watcher(
        api::<OpenModel>(&client, namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|model| model.managed_fields_mut().clear())
    .reflect(writer)
    .applied_objects()
    .predicate_filter(spec_or_finalizers, PredicateConfig::default());
    // The owned objects and the pods fill the caches the reconciles read.
    let watched = writers.watch(&client, namespace);
    Controller::for_stream(models, reader)
        .with_config(controller::Config::default().concurrency(concurrency))
        .owns_stream(watched.deployments)
        .owns_stream(watched.services)
        .watches_stream(watched.pods, |pod| {
            let model = pod.labels().get(MODEL_LABEL)?.clone();
            Some(ObjectRef::new(&model).within(&pod.namespace()?))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// What of a model is worth a reconcile when it changes: its generation (the
/// spec, and the deletion mark) and its finalizers.
fn spec_or_finalizers(model: &OpenModel) -> Option<u64> {
    let mut hasher = std::hash::DefaultHasher::new();
    (model.metadata.generation, model.finalizers()).hash(&mut hasher);
    Some(hasher.finish())
}

/// Reconciles one model within [`RECONCILE_DEADLINE`].
async fn reconcile(model: Arc<OpenModel>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = tokio::time::timeout(RECONCILE_DEADLINE, reconcile_model(model, &context))
        .await
        .unwrap_or(Err(Error::ReconcileTimeout {
            waited: RECONCILE_DEADLINE,
        }));
    context.metrics.reconciled(started.elapsed());
    result
}

/// Reconciles one model, through the finalizer.
async fn reconcile_model(model: Arc<OpenModel>, context: &Context) -> Result<Action, Error> {
    let namespace = model.namespace().unwrap_or_default();
    let api: Api<OpenModel> = Api::namespaced(context.client.clone(), &namespace);
    // A new model gets the finalizer first; it is then put into effect at
    // once, not a watch round trip later.
    let adding = model.metadata.deletion_timestamp.is_none()
        && !model.finalizers().iter().any(|f| f == FINALIZER);
    let result = finalizer(&api, FINALIZER, model.clone(), |event| async {
        match event {
            finalizer::Event::Apply(model) => apply(&model, context).await,
            finalizer::Event::Cleanup(model) => retire(&model, context).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    match result {
        Ok(_) if adding => apply(&model, context).await,
        other => other,
    }
}

/// Retries a failed reconcile after a pause, and counts the failure.
fn error_policy(model: Arc<OpenModel>, error: &Error, context: Arc<Context>) -> Action {
    tracing::warn!(model = %ObjectRef::from_obj(&*model), error = %error, "reconcile failed");
    context.metrics.failed(error.metric_label());
    Action::requeue(Duration::from_secs(5))
}

/// The reconcile proper (see the module documentation).
async fn apply(model: &OpenModel, context: &Context) -> Result<Action, Error> {
    let journal = &context.journal;
    context.caches.ready().await?;
    // The newest entry about the model: it only moves forward.
    let mut newest: Option<LedgerStatus> = model.status.as_ref().and_then(|s| s.ledger);
    let mut keep_newest = |recorded: LedgerStatus| {
        if newest.is_none_or(|n| recorded.index > n.index) {
            newest = Some(recorded);
        }
        recorded
    };

    // 1. A new generation goes into the ledger first.
    let observed = model.status.as_ref().and_then(|s| s.observed_generation);
    if observed != model.metadata.generation {
        let recorded = journal.recorded(model).await?;
        let previous = recorded.document.as_ref();
        let confirms =
            records::confirmed_admissions(model, previous, recorded.generation, &recorded.pending);
        let entries = records::spec_entries(model, previous, confirms, journal.cluster());
        for recorded in journal.record_all(entries).await? {
            keep_newest(recorded);
        }
    }

    // 2. The owned objects; applying the Deployment answers with its status.
    let desired = resources::deployment(model, &context.gpu);
    let namespace = model.namespace().unwrap_or_default();
    let (blocker, deployment) = match model.spec.model.digest {
        None => (Some(Blocker::DigestMissing), None),
        Some(_) => match apply_owned(model, &desired, context).await? {
            Applied::Deployment(deployment) => (None, Some(*deployment)),
            Applied::Refused(blocker) => (Some(blocker), None),
        },
    };

    // 3. What the cluster says.
    let deployment =
        deployment.or_else(|| context.caches.deployment(model).map(Arc::unwrap_or_clone));
    let pods = deployment_pods(model, deployment.as_ref(), context).await?;
    let template_hash = desired
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(TEMPLATE_HASH_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    let expected = model.spec.model.digest.clone().unwrap_or_default();
    let observation = observe(deployment.as_ref(), &pods, &template_hash, &expected);

    // 4. Runtime events into the ledger.
    let weights_entry = match &observation.verified {
        Some(verified) => Some(
            keep_newest(
                journal
                    .record(records::weights_verified(
                        model,
                        verified,
                        journal.cluster(),
                    ))
                    .await?,
            )
            .index,
        ),
        None => None,
    };
    if let (Some(index), Some(verified)) = (weights_entry, &observation.verified) {
        annotate_pods(
            &namespace,
            &pods,
            &template_hash,
            &verified.digest,
            index,
            context,
        )
        .await?;
    }
    let now = Timestamp::now().to_string();
    let mut status = status::derive(&StatusInput {
        model,
        observation: &observation,
        blocker: blocker.as_ref(),
        now: &now,
    });
    if status.is_true(READY)
        && let Some(verified) = &observation.verified
    {
        let entry =
            records::model_deployed(model, &verified.digest, weights_entry, journal.cluster());
        keep_newest(journal.record(entry).await?);
    }
    status.ledger = newest;

    // 5. Status and Events.
    write_status(model, &status, context).await?;
    let key = model_key(model);
    context.metrics.set_conditions(&key, Some(&status));
    Ok(Action::requeue(if status.is_true(READY) {
        RECHECK_READY
    } else {
        RECHECK_NOT_READY
    }))
}

/// Tells the serving pods the ledger index of their weights'
/// `weights.verified` entry ([`WEIGHTS_ENTRY_ANNOTATION`]); the server reads
/// it from its downward-API file and returns it to clients.
async fn annotate_pods(
    namespace: &str,
    pods: &[Pod],
    template_hash: &str,
    digest: &str,
    index: u64,
    context: &Context,
) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    let patch = json!({"metadata": {"annotations": {WEIGHTS_ENTRY_ANNOTATION: index.to_string()}}});
    for name in pods_to_annotate(pods, template_hash, digest, index) {
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            // A pod that went away meanwhile needs no annotation.
            Err(e) if is_status(&e, 404) => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// The model's pods that its Deployment made ([`observe::made_by`]): the
/// pods labelled as the model's, less any whose controller is not one of
/// the ReplicaSets the Deployment controls, the Deployment being the one
/// the model controls. Each ReplicaSet is read (its metadata) the first
/// time a pod names it, and remembered while the Deployment is the same
/// object; one that is not the Deployment's is read again next time (the
/// Deployment may adopt it).
async fn deployment_pods(
    model: &OpenModel,
    deployment: Option<&Deployment>,
    context: &Context,
) -> Result<Vec<Pod>, Error> {
    let key = model_key(model);
    let model_uid = model.uid().unwrap_or_default();
    let Some(deployment_uid) = deployment
        .filter(|d| observe::controlled_by(&d.metadata, "OpenModel", &model_uid))
        .and_then(|d| d.metadata.uid.clone())
    else {
        context.set_known_replica_sets(&key, None);
        return Ok(Vec::new());
    };
    let pods = context.caches.pods(model);
    let named = observe::replica_sets_of(&pods);
    let mut known = context.known_replica_sets(&key, &deployment_uid);
    known.retain(|uid| named.contains_key(uid));
    let api: Api<ReplicaSet> = Api::namespaced(
        context.client.clone(),
        &model.namespace().unwrap_or_default(),
    );
    for (uid, name) in &named {
        if known.contains(uid) {
            continue;
        }
        let replica_set = api.get_metadata_opt(name).await?;
        if replica_set.is_some_and(|rs| {
            rs.metadata.uid.as_deref() == Some(uid)
                && observe::controlled_by(&rs.metadata, "Deployment", &deployment_uid)
        }) {
            known.insert(uid.clone());
        }
    }
    let pods = observe::made_by(pods, &known);
    context.set_known_replica_sets(
        &key,
        Some(DeploymentReplicaSets {
            deployment: deployment_uid,
            replica_sets: known,
        }),
    );
    Ok(pods)
}

/// What applying the owned objects came to.
enum Applied {
    /// All applied; the Deployment as the API server answered it.
    Deployment(Box<Deployment>),
    /// The API server refused an object as invalid.
    Refused(Blocker),
}

/// Applies the Deployment, Service and PodDisruptionBudget (or deletes a
/// budget no longer wanted), unless they are as the last apply left them.
/// An object the API server refuses as invalid becomes a [`Blocker`] to
/// report; other failures are errors to retry.
async fn apply_owned(
    model: &OpenModel,
    deployment: &Deployment,
    context: &Context,
) -> Result<Applied, Error> {
    let namespace = model.namespace().unwrap_or_default();
    let name = model.name_any();
    let key = model_key(model);
    let service = resources::service(model);
    let budget = resources::pod_disruption_budget(model);
    let desired = fingerprint(deployment, &service, budget.as_ref());
    let cached = context.caches.deployment(model);
    if let Some(last) = context.last_apply(&key)
        && let Some(cached) = &cached
        && last.still_holds(
            desired,
            Some(cached),
            context.caches.service(model).as_deref(),
            Instant::now(),
        )
    {
        context.metrics.applied(false);
        return Ok(Applied::Deployment(Box::new((**cached).clone())));
    }
    let client = &context.client;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = async {
        let deployment = Api::<Deployment>::namespaced(client.clone(), &namespace)
            .patch(&name, &params, &Patch::Apply(deployment))
            .await?;
        let service = Api::<Service>::namespaced(client.clone(), &namespace)
            .patch(&name, &params, &Patch::Apply(&service))
            .await?;
        let budgets = Api::<PodDisruptionBudget>::namespaced(client.clone(), &namespace);
        match budget {
            Some(budget) => {
                context.set_without_budget(&key, false);
                budgets
                    .patch(&name, &params, &Patch::Apply(&budget))
                    .await?;
            }
            // Only ask to delete a budget that may exist.
            None if !context.is_without_budget(&key) => {
                if let Err(e) = budgets.delete(&name, &DeleteParams::default()).await
                    && !is_status(&e, 404)
                {
                    return Err(e);
                }
                context.set_without_budget(&key, true);
            }
            None => {}
        }
        Ok::<_, kube::Error>((deployment, service))
    };
    match applied.await {
        Ok((deployment, service)) => {
            let last = LastApply::new(desired, &deployment, &service, Instant::now());
            context.set_last_apply(&key, Some(last));
            context.metrics.applied(true);
            Ok(Applied::Deployment(Box::new(deployment)))
        }
        Err(e) if is_status(&e, 422) || is_status(&e, 400) => {
            Ok(Applied::Refused(Blocker::ApplyFailed(e.to_string())))
        }
        Err(e) => Err(e.into()),
    }
}

/// The model's key in the operator's per-model memory: `namespace/name`.
fn model_key(model: &OpenModel) -> String {
    format!(
        "{}/{}",
        model.namespace().unwrap_or_default(),
        model.name_any()
    )
}

/// True for an API error with this HTTP status.
fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Applies `status` to the status subresource (unless it is what the model
/// already says) and publishes an Event per changed condition.
async fn write_status(
    model: &OpenModel,
    status: &OpenModelStatus,
    context: &Context,
) -> Result<(), Error> {
    if model.status.as_ref() == Some(status) {
        // Nothing changed: no write, and no transition to publish.
        return Ok(());
    }
    let api: Api<OpenModel> = Api::namespaced(
        context.client.clone(),
        &model.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": OpenModel::api_version(&()),
        "kind": OpenModel::kind(&()),
        "status": status,
    });
    api.patch_status(
        &model.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    let reference = model.object_ref(&());
    for transition in status::transitions(model.status.as_ref(), status) {
        let event = Event {
            type_: if transition.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: transition.reason.clone(),
            note: Some(
                format!(
                    "{} is {}: {}",
                    transition.type_, transition.status, transition.message
                )
                .chars()
                .take(1000)
                .collect(),
            ),
            action: transition.type_.clone(),
            secondary: None,
        };
        if let Err(e) = context.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "publishing an event failed");
        }
    }
    Ok(())
}

/// Records `model.retired` (with the digest it served last) so the
/// finalizer can let the model go.
async fn retire(model: &OpenModel, context: &Context) -> Result<Action, Error> {
    let journal = &context.journal;
    let last_digest = model
        .status
        .as_ref()
        .and_then(|s| s.served_digest.as_deref());
    journal
        .record(records::model_retired(
            model,
            last_digest,
            journal.cluster(),
        ))
        .await?;
    let key = model_key(model);
    context.metrics.set_conditions(&key, None);
    context.set_without_budget(&key, false);
    context.set_last_apply(&key, None);
    context.set_known_replica_sets(&key, None);
    Ok(Action::await_change())
}
