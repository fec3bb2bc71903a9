//! The PodDisruptionBudget of a model with more than one replica: voluntary
//! disruptions (drains, upgrades) take at most one server pod at a time.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{owned_metadata, selector_labels};
use crate::crd::OpenModel;

/// The budget for `model`, or `None` with one replica or fewer (a budget
/// would then block every drain).
pub fn pod_disruption_budget(model: &OpenModel) -> Option<PodDisruptionBudget> {
    (model.spec.runtime.replicas > 1).then(|| PodDisruptionBudget {
        metadata: owned_metadata(model),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(model)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::model;

    #[test]
    fn only_with_more_than_one_replica() {
        let mut m = model();
        let pdb = pod_disruption_budget(&m).unwrap();
        assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
        m.spec.runtime.replicas = 1;
        assert!(pod_disruption_budget(&m).is_none());
    }
}
