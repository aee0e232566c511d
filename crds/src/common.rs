//! Types shared by the three kinds: references, conditions and phases.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object by name, in the namespace of the referring object.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct LocalObjectReference {
    /// Name of the referenced object, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to a Secret in the namespace of the referring object. Credentials are
/// only ever read from Secrets, never written inline in a spec.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct SecretReference {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to one key of a Secret in the namespace of the referring object.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct SecretKeySelector {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A reference to one key of a ConfigMap in the namespace of the referring object.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct ConfigMapKeySelector {
    /// Name of the ConfigMap, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the ConfigMap's data.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Status of a condition.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// A standard Kubernetes condition, readable by kstatus-aware tools (Argo CD, Flux).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition, e.g. Ready, Reconciling, Stalled.
    pub r#type: String,
    /// Whether the condition holds: True, False or Unknown.
    pub status: ConditionStatus,
    /// A CamelCase machine-readable reason for the last transition.
    #[serde(default)]
    pub reason: String,
    /// A human-readable message with details about the last transition.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The metadata.generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Condition types used by every kelp kind.
pub mod condition_types {
    /// The object is fully reconciled and serving.
    pub const READY: &str = "Ready";
    /// kelp is working towards the desired state.
    pub const RECONCILING: &str = "Reconciling";
    /// kelp cannot make progress without a change from the user.
    pub const STALLED: &str = "Stalled";
    /// Cluster: the cloud API answered the last request.
    pub const CLOUD_REACHABLE: &str = "CloudReachable";
    /// Cluster: the Kubernetes control plane answers.
    pub const CONTROL_PLANE_READY: &str = "ControlPlaneReady";
    /// Cluster: every node pool has its desired machines running.
    pub const NODE_POOLS_READY: &str = "NodePoolsReady";
    /// Cluster: a pool wants machines that would take the Cluster over its budget.
    pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";
    /// Deployment: a node pool that fits the workload was chosen.
    pub const SCHEDULED: &str = "Scheduled";
    /// Deployment: the desired replicas are available.
    pub const AVAILABLE: &str = "Available";
}

/// Values of any JSON type, kept as they are (recipe inputs).
pub(crate) fn preserve_unknown_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {"x-kubernetes-preserve-unknown-fields": true}
    })
}

/// A count, or a percentage of another count (`25%`), as Kubernetes' `maxSurge`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrPercent {
    Int(i32),
    Percent(String),
}

impl schemars::JsonSchema for IntOrPercent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrPercent".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+%$"}]
        })
    }
}
