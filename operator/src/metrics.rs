//! Prometheus metrics of the operator, served at `/metrics` by
//! [`crate::http`]: reconciles (count, duration, errors by kind), applies of
//! the owned objects (made, or skipped as unchanged) and models by
//! condition.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::OpenModelStatus;
use crate::lock;

/// The labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

/// The labels of the applies counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApplyLabels {
    result: &'static str,
}

/// The labels of the models-by-condition gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    condition: String,
    status: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<ErrorLabels, Counter>,
    applies: Family<ApplyLabels, Counter>,
    duration: Histogram,
    by_condition: Family<ConditionLabels, Gauge>,
    /// Each model's last reported (condition, status) pairs, so the gauge
    /// moves a model from one bucket to another instead of counting twice.
    models: Mutex<HashMap<String, Vec<ConditionLabels>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("openmodel_operator");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let applies = Family::<ApplyLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let by_condition = Family::<ConditionLabels, Gauge>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "applies",
            "Applies of a model's Deployment, Service and budget: result=applied (sent to the API server) or unchanged (skipped: the objects were as the last apply left them)",
            applies.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile takes",
            duration.clone(),
        );
        registry.register(
            "models",
            "OpenModels by condition and status",
            by_condition.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            applies,
            duration,
            by_condition,
            models: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Counts one reconcile that took `elapsed`.
    pub fn reconciled(&self, elapsed: Duration) {
        self.reconciles.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts one failed reconcile.
    pub fn failed(&self, kind: &'static str) {
        self.failures.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// Counts one apply of a model's objects: sent to the API server, or
    /// skipped because nothing changed.
    pub fn applied(&self, sent: bool) {
        let result = if sent { "applied" } else { "unchanged" };
        self.applies.get_or_create(&ApplyLabels { result }).inc();
    }

    /// Records a model's conditions (`None`: the model is gone).
    pub fn set_conditions(&self, model: &str, status: Option<&OpenModelStatus>) {
        let labels: Vec<ConditionLabels> = status
            .iter()
            .flat_map(|s| &s.conditions)
            .map(|c| ConditionLabels {
                condition: c.type_.clone(),
                status: c.status.clone(),
            })
            .collect();
        let mut models = lock(&self.models);
        for old in models.remove(model).unwrap_or_default() {
            self.by_condition.get_or_create(&old).dec();
        }
        for new in &labels {
            self.by_condition.get_or_create(new).inc();
        }
        if !labels.is_empty() {
            models.insert(model.to_string(), labels);
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Condition;

    fn status(ready: &str) -> OpenModelStatus {
        OpenModelStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: "x".into(),
                message: String::new(),
                last_transition_time: "t".into(),
                observed_generation: None,
            }],
            ..OpenModelStatus::default()
        }
    }

    #[test]
    fn models_move_between_condition_buckets() {
        let m = Metrics::default();
        m.set_conditions("a/x", Some(&status("False")));
        m.set_conditions("a/x", Some(&status("True")));
        m.set_conditions("a/y", Some(&status("True")));
        m.reconciled(Duration::from_millis(3));
        m.failed("kube");
        let text = m.encode();
        assert!(
            text.contains("openmodel_operator_models{condition=\"Ready\",status=\"True\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("openmodel_operator_models{condition=\"Ready\",status=\"False\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("openmodel_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains("openmodel_operator_reconcile_errors_total{kind=\"kube\"} 1"),
            "{text}"
        );
        m.set_conditions("a/y", None);
        assert!(
            m.encode()
                .contains("openmodel_operator_models{condition=\"Ready\",status=\"True\"} 1")
        );
    }
}
