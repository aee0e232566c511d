//! What templates see besides `inputs`: the machine's or the workload's facts.
//! Fields are camelCase in templates (`pool.gpuCount`, `kubernetes.serverUrl`).
//! `Option` fields are present as `null`, so templates can test them with `#if`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Kubernetes role of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    /// Runs the k3s server (control plane).
    #[serde(alias = "server")]
    Server,
    /// Joins a server as a k3s agent.
    #[serde(alias = "agent")]
    Agent,
}

/// Context of node recipes (one machine of one pool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeContext {
    /// The Cluster resource.
    pub cluster: ClusterInfo,
    /// The node pool the machine belongs to.
    pub pool: PoolInfo,
    /// Public keys for the default user.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// How the machine gets into the cluster.
    pub kubernetes: KubernetesJoin,
}

/// The Cluster resource a machine belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    /// Cluster resource name.
    pub name: String,
    /// Cluster resource namespace.
    pub namespace: String,
    /// Cluster resource UID.
    pub uid: String,
}

/// A node pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolInfo {
    /// Pool name.
    pub name: String,
    /// Node labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    #[serde(default)]
    pub taints: Vec<TaintInfo>,
    /// GPUs per machine.
    #[serde(default)]
    pub gpu_count: u32,
    /// GPU vendor (`NVIDIA`), when declared.
    #[serde(default)]
    pub gpu_vendor: Option<String>,
}

/// A taint (on a node) or the toleration matching it (on a pod).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaintInfo {
    /// Taint key.
    pub key: String,
    /// Taint value; a toleration without value uses `operator: Exists`.
    #[serde(default)]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// The k3s join facts for a machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesJoin {
    /// Server or agent.
    pub role: NodeRole,
    /// k3s version (`v1.31.4+k3s1`); `None` installs the stable channel.
    #[serde(default)]
    pub version: Option<String>,
    /// `https://<server>:6443`; agents join it, a server puts nothing there.
    pub server_url: String,
    /// The cluster join token (a full `K10<ca-hash>::server:<secret>` token lets
    /// agents verify the server CA).
    pub token: String,
    /// The cluster CA certificate (PEM) the operator generated.
    pub ca_cert_pem: String,
    /// The cluster CA key (PEM); servers only.
    #[serde(default)]
    pub ca_key_pem: Option<String>,
}

/// Context of workload recipes (one kelp Deployment on one cluster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadContext {
    /// Name of the objects.
    pub name: String,
    /// Namespace of the objects (set by the renderer on every object).
    pub namespace: String,
    /// Put on every object and used as the pod selector.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Full image reference.
    pub image: String,
    /// Name of an image pull Secret on the target cluster.
    #[serde(default)]
    pub image_pull_secret: Option<String>,
    /// Container command; `None` uses the recipe's default.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Container args; `None` uses the recipe's default.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// `deepaas` or `custom`.
    pub protocol: String,
    /// Serving port.
    pub port: u16,
    /// Health check path (`/v2/` for DEEPaaS).
    pub health_path: String,
    /// Optional second port for a UI.
    #[serde(default)]
    pub ui_port: Option<u16>,
    /// Pod replicas.
    pub replicas: i32,
    /// CPU cores (requests and limits).
    pub cpu: u32,
    /// Memory in MiB (requests and limits).
    pub memory_mb: u64,
    /// GPUs (`nvidia.com/gpu` limit).
    #[serde(default)]
    pub gpu: u32,
    /// Pod node selector.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Pod tolerations.
    #[serde(default)]
    pub tolerations: Vec<TaintInfo>,
    /// Container environment.
    #[serde(default)]
    pub env: Vec<EnvInfo>,
    /// rclone mounts.
    #[serde(default)]
    pub storage: Vec<StorageInfo>,
    /// How to expose the service.
    #[serde(default)]
    pub expose: Option<ExposeInfo>,
}

/// One environment variable: a value, or a reference to a Secret or ConfigMap key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvInfo {
    /// Variable name.
    pub name: String,
    /// Literal value.
    #[serde(default)]
    pub value: Option<String>,
    /// Secret key reference.
    #[serde(default)]
    pub secret_key_ref: Option<KeyRef>,
    /// ConfigMap key reference.
    #[serde(default)]
    pub config_map_key_ref: Option<KeyRef>,
}

/// A key in a Secret or ConfigMap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Object name.
    pub name: String,
    /// Key in the object's data.
    pub key: String,
}

/// One rclone mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageInfo {
    /// rclone remote name (`rshare`).
    pub name: String,
    /// Where the container sees it.
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Secret on the target cluster holding `RCLONE_CONFIG_<NAME>_TYPE/_URL/_VENDOR/
    /// _USER/_PASS` (the password obscured); the operator creates it.
    pub config_secret: String,
}

/// How a workload is exposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExposeInfo {
    /// Service port to route to.
    pub port: u16,
    /// HTTP path prefix.
    pub path: String,
    /// Whether an Ingress is created.
    pub public: bool,
    /// Ingress host, when set.
    #[serde(default)]
    pub host: Option<String>,
}
