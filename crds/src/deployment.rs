//! Deployment: a Module running on a Cluster.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Condition, ConfigMapKeySelector, LocalObjectReference, SecretKeySelector, SecretReference,
};

/// A Module running on a Cluster: replicas, resources, environment, storage and exposure.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "kelp.imagine-ai.eu",
    version = "v1alpha1",
    kind = "Deployment",
    plural = "deployments",
    namespaced,
    status = "DeploymentStatus",
    shortname = "kdep",
    category = "kelp",
    doc = "A Module running on a Cluster, managed by kelp.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas"
    ),
    printcolumn(name = "Module", type_ = "string", json_path = ".spec.moduleRef.name"),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".status.cluster",
        description = "The Cluster the workload runs on (clusterRef, or the one placement chose)"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Ready replicas / desired replicas"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // The name is the workload's Deployment, Service and Ingress name and a label value
    // in the target cluster: a Service name is a DNS-1035 label (63 characters, starting
    // with a letter); the Secrets `<name>-env`, `<name>-pull` and
    // `<name>-rclone-<storage>` stay within 253.
    validation = Rule::new("self.metadata.name.size() <= 63")
        .message("metadata.name: a Deployment name must be no more than 63 characters (it names the workload's Service and labels in the target cluster)"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name: a Deployment name must be a DNS label starting with a letter: lower-case letters, digits and '-', no '.' (it names the workload's Service)")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.clusterRef) != has(self.placement)")
    .message("exactly one of spec.clusterRef (one Cluster) or spec.placement (an ordered list of Clusters) must be set"))]
pub struct DeploymentSpec {
    /// The Module to run, in the same namespace.
    pub module_ref: LocalObjectReference,
    /// The Cluster to run it on, in the same namespace. Exactly one of clusterRef and
    /// placement is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<LocalObjectReference>,
    /// Node pool to run on; otherwise the smallest pool that fits the GPU need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
    /// Number of serving replicas.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Overrides of the Module's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceOverrides>,
    /// Image tag overriding the Module's tag and gpuTag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub image_tag: Option<String>,
    /// Environment variables of the module container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,
    /// Remote storage mounted into the container with rclone. Names are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub storage: Vec<StorageMount>,
    /// How the module is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Expose>,
    /// Workload recipe rendering the Kubernetes objects.
    #[serde(default = "default_recipe")]
    #[schemars(length(min = 1, max = 63))]
    pub recipe: String,
    /// Clusters to choose from, instead of one clusterRef: the first (or cheapest) that
    /// can run the workload; the next when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

impl DeploymentSpec {
    /// The Clusters the Deployment may run on: its clusterRef, or its placement's list.
    pub fn candidates(&self) -> Vec<&str> {
        match (&self.cluster_ref, &self.placement) {
            (Some(r), _) => vec![r.name.as_str()],
            (None, Some(p)) => p.clusters.iter().map(|c| c.name.as_str()).collect(),
            (None, None) => Vec::new(),
        }
    }
}

impl Deployment {
    /// The Cluster the workload is on (or on its way to): its clusterRef, else the
    /// Cluster placement chose, as the status records it.
    pub fn target_cluster(&self) -> Option<&str> {
        if let Some(r) = &self.spec.cluster_ref {
            return Some(&r.name);
        }
        let st = self.status.as_ref()?;
        st.placement
            .iter()
            .find(|p| p.result == PlacementResult::Waiting)
            .or_else(|| {
                st.placement
                    .iter()
                    .find(|p| p.result == PlacementResult::Running)
            })
            .map(|p| p.cluster.as_str())
    }

    /// Every Cluster the workload has objects on now: the target, and during a move
    /// (placement's, or a changed clusterRef) the Cluster it still runs on
    /// (`status.cluster`).
    pub fn clusters_in_use(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.target_cluster().into_iter().collect();
        if let Some(c) = self.status.as_ref().and_then(|s| s.cluster.as_deref())
            && !out.contains(&c)
        {
            out.push(c);
        }
        out
    }
}

/// Where a Deployment may run: candidate Clusters and how to choose among them.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Candidate Clusters in the same namespace, in order of preference; names unique.
    #[schemars(length(min = 1, max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub clusters: Vec<LocalObjectReference>,
    /// `Ordered`: the first Cluster that can run it; `Cheapest`: the lowest price per
    /// hour among those that can (unknown prices count as the most expensive).
    #[serde(default)]
    pub policy: PlacementPolicy,
    /// How long a Cluster may take to make the workload Ready before the next one is
    /// tried, in seconds.
    #[serde(default = "default_fallback_after")]
    #[schemars(range(min = 1, max = 604800))]
    pub fallback_after_seconds: i64,
}

fn default_fallback_after() -> i64 {
    900
}

/// How placement orders its candidate Clusters.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum PlacementPolicy {
    #[default]
    Ordered,
    Cheapest,
}

fn default_replicas() -> i32 {
    1
}

fn default_recipe() -> String {
    "deepaas-inference".into()
}

/// Overrides of a Module's resources; unset fields keep the Module's values.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceOverrides {
    /// CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub cpu: Option<i32>,
    /// Memory in MB.
    #[serde(rename = "memoryMB", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub memory_mb: Option<i64>,
    /// Number of GPUs; 0 runs on CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub gpu: Option<i32>,
}

/// An environment variable: a literal value, or a value from a Secret or ConfigMap.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.value) && has(self.valueFrom))")
    .message("an env entry sets value or valueFrom, not both"))]
pub struct EnvVar {
    /// Variable name.
    #[schemars(length(min = 1), regex(pattern = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"))]
    pub name: String,
    /// Literal value. Do not put credentials here: use valueFrom.secretKeyRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where the value comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// The source of an environment variable's value. Exactly one field is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)")
    .message("valueFrom sets exactly one of secretKeyRef, configMapKeyRef"))]
pub struct EnvVarSource {
    /// A key of a Secret in the Deployment's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
    /// A key of a ConfigMap in the Deployment's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeySelector>,
}

/// Remote storage mounted into the module container.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.webdav)").message("a storage entry needs a backend: webdav"))]
pub struct StorageMount {
    /// rclone remote name, unique within the Deployment (AI4OS: `rshare`).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_]*$"))]
    pub name: String,
    /// A WebDAV share such as Nextcloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webdav: Option<WebdavStorage>,
    /// Absolute path of the mount in the container.
    #[serde(default = "default_mount_path")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("mountPath must be an absolute path"))]
    #[schemars(length(min = 1, max = 4096))]
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

fn default_mount_path() -> String {
    "/storage".into()
}

/// The WebDAV server software, which rclone handles slightly differently.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebdavVendor {
    #[default]
    Nextcloud,
    Owncloud,
    Other,
}

/// A WebDAV share.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebdavStorage {
    /// WebDAV URL, e.g. https://share.services.ai4os.eu/remote.php/dav/files/alice.
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')")
        .message("webdav.url must be an http(s) URL"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// nextcloud, owncloud or other.
    #[serde(default)]
    pub vendor: WebdavVendor,
    /// Secret with keys `user` and `password` (a Nextcloud app password, in clear; kelp
    /// obscures it for rclone).
    pub credentials_secret_ref: SecretReference,
}

/// How a Deployment is reached.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Expose {
    /// Container port to expose; the Module's serving port otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// URL path prefix on the cluster's ingress.
    #[serde(default = "default_path")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("expose.path must start with '/'"))]
    pub path: String,
    /// Reachable from outside the cluster through an Ingress.
    #[serde(default)]
    pub public: bool,
}

fn default_path() -> String {
    "/".into()
}

/// Lifecycle phase of a Deployment.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum DeploymentPhase {
    #[default]
    Pending,
    Deploying,
    Ready,
    Degraded,
    Deleting,
    Failed,
}

/// Observed state of a Deployment.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Deploying, Ready, Degraded, Deleting or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DeploymentPhase>,
    /// The node pool the workload runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
    /// The full image reference in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Replicas that exist on the cluster.
    #[serde(default)]
    pub replicas: i32,
    /// Replicas that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Ready replicas over desired replicas, e.g. 1/1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// URL the module answers on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Ready, Reconciling, Stalled, Scheduled and Available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The Cluster the workload runs on now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// With placement: one entry per candidate Cluster, what kelp made of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["cluster"]))]
    pub placement: Vec<PlacementStatus>,
}

/// What placement made of one candidate Cluster.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// The candidate Cluster.
    pub cluster: String,
    /// Running, Skipped, Unfit, Waiting or Untried.
    pub result: PlacementResult,
    /// Why, in one word (e.g. Ready, InsufficientCapacity, Stalled, NoPoolFits, Timeout).
    pub reason: String,
    /// Why, in a sentence.
    #[serde(default)]
    pub message: String,
    /// When the result last changed (RFC 3339).
    pub since: String,
}

/// The outcome for one candidate Cluster.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum PlacementResult {
    /// The workload runs there, Ready.
    Running,
    /// Passed over: it could not run it (capacity, quota, Stalled, or not Ready in time).
    Skipped,
    /// No pool of it fits the workload.
    Unfit,
    /// The workload is on its way there.
    Waiting,
    /// Not tried yet.
    #[default]
    Untried,
}
