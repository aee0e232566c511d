//! Cluster: one cloud, one Kubernetes, several node pools of (GPU) machines.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, SecretReference};

/// Where modules run: the cloud account, the Kubernetes on it and its node pools.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "kelp.imagine-ai.eu",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    shortname = "kcl",
    category = "kelp",
    doc = "A Kubernetes cluster on one cloud with node pools of (GPU) machines, managed by kelp.",
    printcolumn(name = "Cloud", type_ = "string", json_path = ".status.cloud"),
    printcolumn(
        name = "Pools",
        type_ = "string",
        json_path = ".spec.nodePools[*].name"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Running machines / desired machines"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "$/H",
        type_ = "number",
        json_path = ".status.pricePerHour",
        description = "Estimated price per hour of every machine, when prices are known"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // The name is part of machine names (host names), the Secrets
    // `<name>-kubeconfig` and `<name>-kelp-pki`, and the cloud tag
    // `kelp.imagine-ai.eu/cluster=<namespace>/<name>`: a DNS label fits them all.
    validation = Rule::new("self.metadata.name.size() <= 63")
        .message("metadata.name: a Cluster name must be no more than 63 characters (it names machines, Secrets and cloud tags)"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name: a Cluster name must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit, no '.'")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.kubernetes) || !has(self.kubernetes.controlPlane) || !has(self.kubernetes.controlPlane.pool) || self.nodePools.exists(p, p.name == self.kubernetes.controlPlane.pool)"
).message("kubernetes.controlPlane.pool must name one of the nodePools"))]
pub struct ClusterSpec {
    /// The cloud the machines run in: exactly one of sim, ec2, openstack, egi.
    pub cloud: Cloud,
    /// The Kubernetes that pool machines join.
    #[serde(default)]
    pub kubernetes: KubernetesSpec,
    /// SSH public keys installed for the default user of every machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// Node pools: groups of identical machines. Pool names are unique.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub node_pools: Vec<NodePool>,
    /// When true, kelp leaves the cloud alone: no machine is created or deleted.
    #[serde(default)]
    pub paused: bool,
    /// What happens to the machines when the Cluster is deleted: `Delete` them, or
    /// `Retain` them in the cloud.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// A ceiling on the Cluster's estimated price per hour: kelp creates no machine that
    /// would take it over, and deletes none because of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// A price ceiling.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// The most the Cluster's machines may cost per hour together, in the currency of the
    /// price tables (US dollars for EC2 and the sim).
    #[schemars(range(min = 0.0))]
    pub max_price_per_hour: f64,
}

/// What happens to cloud machines when their Cluster is deleted.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete every machine and every other cloud object kelp created.
    #[default]
    Delete,
    /// Leave the machines running; kelp forgets them.
    Retain,
}

/// The cloud a Cluster runs in. Exactly one field is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[x_kube(validation = Rule::new(
    "(has(self.sim) ? 1 : 0) + (has(self.ec2) ? 1 : 0) + (has(self.openstack) ? 1 : 0) + (has(self.egi) ? 1 : 0) == 1"
).message("exactly one of cloud.sim, cloud.ec2, cloud.openstack, cloud.egi must be set"))]
pub struct Cloud {
    /// kelp's built-in simulated cloud, for local development and tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim: Option<SimCloud>,
    /// Amazon EC2 or an EC2-compatible cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2: Option<Ec2Cloud>,
    /// An OpenStack cloud (Nova, Glance, Neutron).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openstack: Option<OpenStackCloud>,
    /// An EGI FedCloud site: OpenStack behind EGI Check-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egi: Option<EgiCloud>,
}

impl Cloud {
    /// The name of the cloud kind that is set: sim, ec2, openstack or egi.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Cloud { sim: Some(_), .. } => Some("sim"),
            Cloud { ec2: Some(_), .. } => Some("ec2"),
            Cloud {
                openstack: Some(_), ..
            } => Some("openstack"),
            Cloud { egi: Some(_), .. } => Some("egi"),
            _ => None,
        }
    }
}

/// The simulated cloud: instance types with GPUs, capacity, latency and faults.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SimCloud {
    /// Simulated latency of every cloud call, in milliseconds.
    #[serde(default = "default_latency_ms")]
    #[schemars(range(min = 0, max = 60000))]
    pub latency_ms: i64,
    /// Fraction of cloud calls that fail with a transient error (0.0 to 1.0).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub failure_rate: f64,
    /// Machines available per GPU model (e.g. T4: 8); models not listed are unlimited.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, i64>,
}

impl Default for SimCloud {
    fn default() -> Self {
        Self {
            latency_ms: default_latency_ms(),
            failure_rate: 0.0,
            capacity: BTreeMap::new(),
        }
    }
}

fn default_latency_ms() -> i64 {
    200
}

/// Amazon EC2 or an EC2-compatible cloud.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ec2Cloud {
    /// Region, e.g. us-east-1.
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Secret with keys `accessKeyId`, `secretAccessKey` and optionally `sessionToken`.
    /// When unset, the operator's ambient AWS credentials are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
    /// Endpoint of an EC2-compatible API, overriding the region's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Subnet the machines are started in; the default VPC's subnet otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Security groups attached to every machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_group_ids: Vec<String>,
    /// Name of an existing EC2 key pair for SSH access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
}

/// An OpenStack cloud.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenStackCloud {
    /// Keystone v3 URL, e.g. https://keystone.example.org:5000/v3.
    #[schemars(length(min = 1))]
    pub auth_url: String,
    /// Region in the service catalogue; the first region otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Secret with `applicationCredentialId` and `applicationCredentialSecret`, or with
    /// `username`, `password`, `projectName` and optionally `userDomainName` and
    /// `projectDomainName` (both `Default` when unset).
    pub credentials_secret_ref: SecretReference,
    /// Network (name or ID) the machines attach to; the project's only network otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// External network to allocate floating IPs from; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floating_ip_pool: Option<String>,
    /// Name of an existing Nova key pair for SSH access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
}

/// An EGI FedCloud site, reached with an EGI Check-in token.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EgiCloud {
    /// Site name as in GOCDB, e.g. IFCA-LCG2.
    #[schemars(length(min = 1, max = 128))]
    pub site: String,
    /// Virtual organisation whose project the machines are started in, e.g. vo.imagine-ai.eu.
    #[schemars(length(min = 1, max = 255))]
    pub vo: String,
    /// Secret with keys `refreshToken`, `clientId` and optionally `clientSecret` (EGI Check-in)
    /// and `tokenEndpoint` (Check-in's token endpoint by default).
    pub credentials_secret_ref: SecretReference,
    /// Keystone URL overriding the one from the EGI site list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    /// Keystone identity provider of EGI Check-in at the site.
    #[serde(default = "default_identity_provider")]
    pub identity_provider: String,
    /// Keystone federation protocol of EGI Check-in at the site.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Network (name or ID) the machines attach to; the project's only network otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// External network to allocate floating IPs from; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floating_ip_pool: Option<String>,
    /// Name of an existing Nova key pair for SSH access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
}

fn default_identity_provider() -> String {
    "egi.eu".into()
}

fn default_protocol() -> String {
    "openid".into()
}

/// How the Cluster gets its Kubernetes.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum KubernetesMode {
    /// kelp starts a k3s control plane and writes its admin kubeconfig to a Secret.
    #[default]
    Provision,
    /// Pool machines join an existing cluster given by a kubeconfig Secret.
    Existing,
}

/// The Kubernetes that pool machines join.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.mode != 'Existing' || has(self.kubeconfigSecretRef)"
).message("kubernetes.kubeconfigSecretRef is required when kubernetes.mode is Existing"))]
pub struct KubernetesSpec {
    /// `Provision` a k3s control plane, or join an `Existing` cluster.
    #[serde(default)]
    pub mode: KubernetesMode,
    /// k3s version to install (Provision), e.g. v1.31.4+k3s1; kelp's default otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^v[0-9]+\.[0-9]+\.[0-9]+.*$"))]
    pub version: Option<String>,
    /// Where the k3s server runs (Provision): a separate machine, or the first machine
    /// of a node pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlane>,
    /// Secret holding the kubeconfig of the existing cluster (Existing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<KubeconfigSecretReference>,
}

/// Where the k3s server runs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.pool) || !(has(self.instanceType) || has(self.cpu) || has(self.memoryMB))"
).message("controlPlane.pool cannot be combined with instanceType, cpu or memoryMB"))]
pub struct ControlPlane {
    /// Run the k3s server on the first machine of this node pool, so that one machine
    /// can be a whole cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Explicit instance type or flavor of a separate control-plane machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Minimum vCPUs of a separate control-plane machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub cpu: Option<i32>,
    /// Minimum memory in MB of a separate control-plane machine.
    #[serde(rename = "memoryMB", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub memory_mb: Option<i64>,
}

/// A reference to a kubeconfig stored in a Secret.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct KubeconfigSecretReference {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the kubeconfig within the Secret.
    #[serde(default = "default_kubeconfig_key")]
    pub key: String,
}

fn default_kubeconfig_key() -> String {
    "value".into()
}

/// A group of identical machines.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
// No schema defaults inside list items (see the crate docs): replicas is 1 and
// autoscaling.minReplicas 0 when omitted.
#[x_kube(validation = Rule::new(
    "!has(self.autoscaling) || ((has(self.replicas) ? self.replicas : 1) >= (has(self.autoscaling.minReplicas) ? self.autoscaling.minReplicas : 0) && (has(self.replicas) ? self.replicas : 1) <= self.autoscaling.maxReplicas)"
).message("replicas must lie within autoscaling.minReplicas and autoscaling.maxReplicas"))]
pub struct NodePool {
    /// Name of the pool, a DNS label unique within the Cluster.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Number of machines.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Bounds within which kelp may scale the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// What each machine must offer, or an explicit instance type.
    #[serde(default)]
    pub machine: MachineRequirements,
    /// OS image (ID or name); the cloud's default Ubuntu LTS otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Kubernetes labels given to the pool's nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Kubernetes taints given to the pool's nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Node recipes applied to each machine, in order. When unset: base, nvidia-gpu
    /// (when gpu.count > 0) and k3s-agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipes: Option<Vec<RecipeRef>>,
    /// Extra machines a roll to a new instance type may run at once: a number, or a
    /// percentage of `replicas` rounded up (`25%` when unset); at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<crate::common::IntOrPercent>,
}

impl NodePool {
    /// `maxSurge`, or its default of 25%.
    pub fn max_surge(&self) -> crate::common::IntOrPercent {
        self.max_surge
            .clone()
            .unwrap_or_else(|| crate::common::IntOrPercent::Percent("25%".into()))
    }
}

fn default_replicas() -> i32 {
    1
}

/// Scaling bounds of a node pool.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.minReplicas) ? self.minReplicas : 0) <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct Autoscaling {
    /// Fewest machines.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most machines.
    #[schemars(range(min = 0, max = 1000))]
    pub max_replicas: i32,
    /// How long a machine must have carried no kelp workload before scale-down removes
    /// it, in seconds (600 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 604800))]
    pub scale_down_delay_seconds: Option<i64>,
}

impl Autoscaling {
    /// `scaleDownDelaySeconds`, or its default of 600.
    pub fn scale_down_delay(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.scale_down_delay_seconds.unwrap_or(600).max(0) as u64)
    }
}

/// What a pool's machines must offer. An explicit `instanceType` wins; otherwise the
/// cheapest type that meets every requirement is chosen.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineRequirements {
    /// Explicit EC2 instance type or OpenStack flavor name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Minimum vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub cpu: Option<i32>,
    /// Minimum memory in MB.
    #[serde(rename = "memoryMB", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub memory_mb: Option<i64>,
    /// Root disk size in GB.
    #[serde(rename = "diskGB", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub disk_gb: Option<i32>,
    /// GPU requirements; absent for CPU-only machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequirements>,
}

impl MachineRequirements {
    /// GPUs per machine (0 when `gpu` is absent).
    pub fn gpu_count(&self) -> i32 {
        self.gpu.as_ref().map_or(0, |g| g.count)
    }
}

/// GPUs a machine must have.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpuRequirements {
    /// Number of GPUs per machine; 0 for CPU-only machines.
    #[serde(default)]
    #[schemars(range(min = 0, max = 64))]
    pub count: i32,
    /// GPU vendor, e.g. NVIDIA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// GPU model, e.g. T4, A100, V100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Minimum memory per GPU in MB.
    #[serde(rename = "memoryMB", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub memory_mb: Option<i64>,
}

/// Effect of a taint on pods that do not tolerate it.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum TaintEffect {
    #[default]
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// A Kubernetes node taint.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Taint {
    /// Taint key, e.g. nvidia.com/gpu.
    #[schemars(length(min = 1, max = 316))]
    pub key: String,
    /// Taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    pub effect: TaintEffect,
}

/// A recipe to apply, with its inputs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct RecipeRef {
    /// Recipe name: built-in (base, nvidia-gpu, k3s-agent, rclone-webdav...) or from a
    /// recipe ConfigMap.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Input values, checked against the recipe's typed inputs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::common::preserve_unknown_map")]
    pub inputs: BTreeMap<String, serde_json::Value>,
}

/// Lifecycle phase of a Cluster.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ClusterPhase {
    #[default]
    Pending,
    Provisioning,
    Ready,
    Degraded,
    Deleting,
    Failed,
}

/// Observed state of a Cluster.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Provisioning, Ready, Degraded, Deleting or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// The cloud kind in use: sim, ec2, openstack or egi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<String>,
    /// Running machines over desired machines, e.g. 3/4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// URL of the Kubernetes API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    /// Secret holding the admin kubeconfig of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretReference>,
    /// Observed state of each node pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub node_pools: Vec<NodePoolStatus>,
    /// Ready, Reconciling, Stalled, CloudReachable, ControlPlaneReady, NodePoolsReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Batches of machines kelp asked the cloud for and has not seen listed yet. Written
    /// before the cloud is asked, so that neither a follow-up reconcile nor a restarted
    /// operator asks again while the cloud catches up (EC2 lists new instances only after
    /// a while, and not every cloud honours an idempotency key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["key"]))]
    pub pending_creates: Vec<PendingCreate>,
    /// The separate control-plane machine (pool `control-plane`) as last listed, with
    /// any extra one: recorded from the moment the cloud lists it, before it has an
    /// address, so that a delete without the cloud never forgets it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub control_plane_machines: Vec<MachineStatus>,
    /// Estimated price per hour of every machine of the Cluster, when prices are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_hour: Option<f64>,
}

/// A batch of machines asked for and not yet listed by the cloud.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingCreate {
    /// The batch's idempotency key, also the machines' `kelp.imagine-ai.eu/batch` tag.
    pub key: String,
    /// The pool the machines are for (`control-plane`, or `<pool>-server` for a pool's
    /// k3s server).
    pub pool: String,
    /// Machines in the batch.
    pub count: i32,
    /// The instance type asked for.
    pub instance_type: String,
    /// When kelp asked (RFC 3339).
    pub requested_at: String,
}

/// Observed state of a node pool.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// Pool name.
    pub name: String,
    /// The instance type or flavor kelp chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Estimated on-demand price per machine and hour, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_hour: Option<f64>,
    /// Machines wanted: `replicas`, or the size computed from demand when the pool has
    /// `autoscaling`.
    #[serde(default)]
    pub desired: i32,
    /// Machines running.
    #[serde(default)]
    pub ready: i32,
    /// Every machine of the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub machines: Vec<MachineStatus>,
    /// Why the pool has the size it has, when it follows demand, e.g. `3 machines for 5
    /// replicas needing 1 GPU each (bounds 0..4)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand: Option<String>,
    /// A pool that follows demand has had machines: from then on demand alone sizes it
    /// (`replicas` is only its starting size).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub started: bool,
}

/// Observed state of one machine.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// Machine name, e.g. ifca-gpu-gpu-t4-0.
    pub name: String,
    /// Cloud identifier, e.g. aws:///us-east-1a/i-0123 or openstack:///<uuid>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Cloud state: pending, running, stopping, terminated, error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Addresses of the machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<MachineAddress>,
    /// When the cloud created the machine (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Since when the machine has carried no kelp workload (RFC 3339), in pools with
    /// `autoscaling`: scale-down removes it once this is `scaleDownDelaySeconds` old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<String>,
}

/// One address of a machine.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct MachineAddress {
    /// ExternalIP, InternalIP or Hostname.
    pub r#type: String,
    /// The address.
    pub address: String,
}
