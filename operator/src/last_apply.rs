//! What the operator last applied for a model, and whether applying again
//! would change anything (pure; the clock is passed in).
//!
//! Every reconcile used to apply the Deployment and the Service, even when
//! nothing had changed: the five-minute recheck of every Ready model then
//! cost two writes each, which at 10,000 models took a third of an API
//! server (docs/benchmarks.md). Now an apply is skipped while the objects
//! are as the last one left them:
//! - the desired objects are the same (their [`fingerprint`]);
//! - the Deployment is the same object at the same generation: its spec
//!   is untouched (status updates do not count);
//! - the Service is at the same resource version;
//! - and the last apply is younger than [`REAPPLY_AFTER`].

use std::hash::{Hash as _, Hasher as _};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;

/// How long an apply is trusted without applying again. Past it the objects
/// are applied anyway, which also restores what the watches cannot see
/// change: the PodDisruptionBudget, and labels or annotations edited on the
/// Deployment.
pub const REAPPLY_AFTER: Duration = Duration::from_secs(3600);

/// The objects of one model as the API server answered the last apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastApply {
    desired: u64,
    deployment: (Option<String>, Option<i64>),
    service: Option<String>,
    at: Instant,
}

impl LastApply {
    /// The apply of the objects with `desired` fingerprint at `at`, as the
    /// API server answered it.
    pub fn new(desired: u64, deployment: &Deployment, service: &Service, at: Instant) -> Self {
        LastApply {
            desired,
            deployment: deployment_version(deployment),
            service: service.resource_version(),
            at,
        }
    }

    /// Whether applying the objects with `desired` fingerprint again, at
    /// `now`, would change nothing: the cached Deployment and Service are
    /// as this apply left them.
    pub fn still_holds(
        &self,
        desired: u64,
        deployment: Option<&Deployment>,
        service: Option<&Service>,
        now: Instant,
    ) -> bool {
        let (Some(deployment), Some(service)) = (deployment, service) else {
            return false;
        };
        self.desired == desired
            && deployment_version(deployment) == self.deployment
            && service.resource_version().is_some()
            && service.resource_version() == self.service
            && now.saturating_duration_since(self.at) < REAPPLY_AFTER
    }
}

/// What changes when a Deployment's spec does: its identity and generation.
fn deployment_version(deployment: &Deployment) -> (Option<String>, Option<i64>) {
    (deployment.uid(), deployment.metadata.generation)
}

/// A fingerprint of the objects a model should have, to tell whether they
/// changed since the last apply (within this process).
pub fn fingerprint(
    deployment: &Deployment,
    service: &Service,
    budget: Option<&PodDisruptionBudget>,
) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    for document in [
        serde_json::to_vec(deployment),
        serde_json::to_vec(service),
        serde_json::to_vec(&budget),
    ] {
        // The objects are plain data; serializing them cannot fail, and if
        // it did the empty document would only cost an extra apply.
        document.unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::{deployment_of, model};
    use crate::resources::{pod_disruption_budget, service};

    /// The objects as the API server answers an apply.
    fn answered(model: &crate::crd::OpenModel) -> (Deployment, Service) {
        let mut d = deployment_of(model);
        d.metadata.uid = Some("d-1".into());
        d.metadata.generation = Some(1);
        d.metadata.resource_version = Some("100".into());
        let mut s = service(model);
        s.metadata.uid = Some("s-1".into());
        s.metadata.resource_version = Some("101".into());
        (d, s)
    }

    #[test]
    fn nothing_changed_means_nothing_to_apply() {
        let model = model();
        let (d, s) = answered(&model);
        let desired = fingerprint(&deployment_of(&model), &service(&model), None);
        let start = Instant::now();
        let last = LastApply::new(desired, &d, &s, start);
        let later = start + Duration::from_secs(300);
        assert!(last.still_holds(desired, Some(&d), Some(&s), later));

        // The Deployment's status moved on: no spec changed.
        let mut rolled = d.clone();
        rolled.metadata.resource_version = Some("150".into());
        rolled.status = Some(Default::default());
        assert!(last.still_holds(desired, Some(&rolled), Some(&s), later));
    }

    #[test]
    fn any_change_means_apply_again() {
        let model = model();
        let (d, s) = answered(&model);
        let desired = fingerprint(
            &deployment_of(&model),
            &service(&model),
            pod_disruption_budget(&model).as_ref(),
        );
        let start = Instant::now();
        let last = LastApply::new(desired, &d, &s, start);
        let soon = start + Duration::from_secs(1);

        // The model's spec changed what it should have.
        let mut scaled = model.clone();
        scaled.spec.runtime.replicas = 5;
        let other = fingerprint(
            &deployment_of(&scaled),
            &service(&scaled),
            pod_disruption_budget(&scaled).as_ref(),
        );
        assert_ne!(other, desired);
        assert!(!last.still_holds(other, Some(&d), Some(&s), soon));

        // Someone edited the Deployment's spec, or deleted and recreated it.
        let mut edited = d.clone();
        edited.metadata.generation = Some(2);
        assert!(!last.still_holds(desired, Some(&edited), Some(&s), soon));
        let mut recreated = d.clone();
        recreated.metadata.uid = Some("d-2".into());
        assert!(!last.still_holds(desired, Some(&recreated), Some(&s), soon));

        // Someone changed the Service, or an object is gone.
        let mut changed = s.clone();
        changed.metadata.resource_version = Some("200".into());
        assert!(!last.still_holds(desired, Some(&d), Some(&changed), soon));
        assert!(!last.still_holds(desired, None, Some(&s), soon));
        assert!(!last.still_holds(desired, Some(&d), None, soon));

        // And however quiet, it is applied again after REAPPLY_AFTER.
        assert!(!last.still_holds(desired, Some(&d), Some(&s), start + REAPPLY_AFTER));
    }
}
