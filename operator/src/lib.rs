//! OpenModel's control plane: the `OpenModel` custom resource and the
//! operator that serves it, recording what goes live in the audit ledger.
//!
//! Pure parts, testable without a cluster:
//! - [`crd`]: the resource's types and the generated CRD manifest.
//! - [`resources`]: the Deployment, Service and PodDisruptionBudget of a model.
//! - [`observe`]: what a Deployment and its pods say (rollout, verified
//!   digest, problems).
//! - [`status`]: the status and its conditions, and which changes deserve an Event.
//! - [`records`]: the ledger entries and their dedupe keys.
//! - [`leader`]: the leader-election decision.
//! - [`last_apply`]: whether the owned objects need applying again.
//! - [`pod_index`]: each model's pods, from the pod watch's events.
//!
//! The edges:
//! - [`journal`]: the ledger file.
//! - [`controller`]: the reconcile loop against the API server.
//! - [`watches`]: the watch caches the reconciles read.
//! - [`webhook`]: the validating admission webhook that records who changed
//!   what before the change is admitted.
//! - [`metrics`]: the metrics behind `/metrics` (served with `/healthz` and
//!   `/readyz` by `openmodel_runtime::endpoints`).
//! - [`mod@run`]: all of it, behind leader election ([`run()`]).
//!
//! `docs/operator.md` explains how it reconciles; `docs/crd.md` every field.

pub mod controller;
pub mod crd;
mod error;
pub mod journal;
pub mod last_apply;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod pod_index;
pub mod records;
pub mod resources;
pub mod run;
pub mod status;
pub mod watches;
pub mod webhook;

pub use error::Error;

/// Locks `mutex`. A task that panicked holding it left plain data behind
/// (caches and counters), so the data is used as it is.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
pub use run::{Config, run};
