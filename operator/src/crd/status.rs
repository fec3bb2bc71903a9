//! The observed state of an `OpenModel`, written only by the operator
//! (server-side apply on the status subresource) from what
//! [`crate::status::derive`] makes of the Deployment, its pods and the ledger.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator last saw of a model.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OpenModelStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `WeightsVerified`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Server pods that exist (any version).
    #[serde(default)]
    pub replicas: i32,
    /// Server pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The label selector of the server pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The in-cluster gRPC address: `<name>.<namespace>.svc:8001`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The manifest digest the completed rollout serves, as verified by the
    /// pods' fetch step (read from its termination message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_digest: Option<String>,
    /// The newest ledger entry about this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerStatus>,
}

/// Where the model's history ends in the ledger.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LedgerStatus {
    /// Index of the newest entry about this model.
    pub index: u64,
    /// Size of the signed tree that includes it.
    pub tree_size: u64,
}

/// One condition, as in `metav1.Condition`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `WeightsVerified`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word for programs.
    pub reason: String,
    /// What happened, for people.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The `metadata.generation` it was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl OpenModelStatus {
    /// The condition of this type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// True when the condition of this type has status `True`.
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}
