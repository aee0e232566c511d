//! The driver contract, after Karpenter's CloudProvider: instance types with GPU facts,
//! images, create a batch of machines, list machines by ownership tags, delete.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Tag keys every machine kelp creates carries, so a restarted operator adopts what
/// exists instead of creating it again.
pub mod tags {
    /// Always `kelp`.
    pub const MANAGED_BY: &str = "kelp.imagine-ai.eu/managed-by";
    /// The owning Cluster's UID.
    pub const CLUSTER_UID: &str = "kelp.imagine-ai.eu/cluster-uid";
    /// `namespace/name` of the owning Cluster.
    pub const CLUSTER: &str = "kelp.imagine-ai.eu/cluster";
    /// The node pool (or `control-plane`).
    pub const POOL: &str = "kelp.imagine-ai.eu/pool";
    /// `server` on the machine that runs the k3s server (the one that needs a public
    /// address when the cloud hands them out separately).
    pub const ROLE: &str = "kelp.imagine-ai.eu/role";
    /// The idempotency key of the create batch the machine came from: a batch kelp asked
    /// for counts as seen once the cloud lists machines with it.
    pub const BATCH: &str = "kelp.imagine-ai.eu/batch";
    /// The value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "kelp";
}

/// The role a machine plays in its Cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// A k3s agent: a worker of its pool.
    #[default]
    Agent,
    /// The k3s server (the machine that needs a public address when the cloud hands
    /// them out separately).
    Server,
}

/// Whom a machine belongs to: its Cluster, pool, role and create batch. kelp writes it
/// to the cloud as the [`tags`] (metadata on OpenStack) and reads it back from what the
/// cloud lists, so neither the controller nor a driver digs tag keys out of a map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// The owning Cluster's UID: how kelp finds its machines (a renamed or restored
    /// Cluster is never confused with another).
    pub cluster_uid: String,
    /// `namespace/name` of the Cluster, for people reading the cloud console.
    pub cluster: Option<String>,
    /// The node pool (or `control-plane`); None selects every pool.
    pub pool: Option<String>,
    /// What the machine runs.
    pub role: Role,
    /// The idempotency key of the batch the machine came from.
    pub batch: Option<String>,
}

impl Owner {
    /// Every machine of the Cluster with this UID.
    pub fn cluster(uid: &str) -> Self {
        Owner {
            cluster_uid: uid.to_string(),
            ..Default::default()
        }
    }

    /// The machines of one pool of the Cluster with this UID.
    pub fn pool(uid: &str, pool: &str) -> Self {
        Owner {
            pool: Some(pool.to_string()),
            ..Owner::cluster(uid)
        }
    }

    /// The tags that say so; also the filter [`CloudDriver::list`] takes, since a
    /// machine carries all of them.
    pub fn tags(&self) -> BTreeMap<String, String> {
        let mut t = kelp_selector();
        t.insert(tags::CLUSTER_UID.to_string(), self.cluster_uid.clone());
        let optional = [
            (tags::CLUSTER, self.cluster.as_deref()),
            (tags::POOL, self.pool.as_deref()),
            (tags::BATCH, self.batch.as_deref()),
            (tags::ROLE, (self.role == Role::Server).then_some("server")),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                t.insert(k.to_string(), v.to_string());
            }
        }
        t
    }

    /// The owner a machine's tags name; None when kelp did not tag it.
    pub fn from_tags(t: &BTreeMap<String, String>) -> Option<Self> {
        if t.get(tags::MANAGED_BY).map(String::as_str) != Some(tags::MANAGED_BY_VALUE) {
            return None;
        }
        Some(Owner {
            cluster_uid: t.get(tags::CLUSTER_UID)?.clone(),
            cluster: t.get(tags::CLUSTER).cloned(),
            pool: t.get(tags::POOL).cloned(),
            role: match t.get(tags::ROLE).map(String::as_str) {
                Some("server") => Role::Server,
                _ => Role::Agent,
            },
            batch: t.get(tags::BATCH).cloned(),
        })
    }
}

/// The filter for every machine kelp made, whichever Cluster it is for.
pub fn kelp_selector() -> BTreeMap<String, String> {
    BTreeMap::from([(
        tags::MANAGED_BY.to_string(),
        tags::MANAGED_BY_VALUE.to_string(),
    )])
}

/// GPUs of one instance type.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuInfo {
    /// GPUs per machine.
    pub count: u32,
    /// e.g. NVIDIA.
    pub vendor: String,
    /// e.g. T4, A100.
    pub model: String,
    /// Memory per GPU in MB.
    pub memory_mb: u64,
}

/// A machine size the cloud offers (EC2 instance type, OpenStack flavor).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceType {
    /// The cloud's name for it (`g4dn.xlarge`, `m1.large`).
    pub name: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MB.
    pub memory_mb: u64,
    /// Root disk in GB when the type fixes it (OpenStack flavors), else None.
    pub disk_gb: Option<u32>,
    /// None for CPU-only types.
    pub gpu: Option<GpuInfo>,
    /// On-demand price per hour in USD (an estimate), when known.
    pub price_per_hour: Option<f64>,
}

impl InstanceType {
    /// GPUs per machine (0 for CPU-only types).
    pub fn gpu_count(&self) -> u32 {
        self.gpu.as_ref().map_or(0, |g| g.count)
    }

    /// Whether one of `names` names this type, ignoring ASCII case and surrounding
    /// blanks (as an explicit `instanceType` is matched).
    pub fn is_one_of(&self, names: &[String]) -> bool {
        names
            .iter()
            .any(|n| self.name.eq_ignore_ascii_case(n.trim()))
    }
}

/// How long an instance-type catalogue is used before it is read again: the EC2
/// driver's own cache and the operator's shared one both keep it this long.
pub const CATALOGUE_TTL: Duration = Duration::from_secs(3600);

/// An OS image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// The cloud's image ID.
    pub id: String,
    /// The image name (several images may share one).
    pub name: String,
    /// RFC 3339 creation time, when known (newest wins when a name matches several).
    pub created_at: Option<String>,
}

/// What a pool's machines must offer (the Cluster's `machine` block, in plain values).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirements {
    /// An explicit instance type or flavor: wins over everything else.
    pub instance_type: Option<String>,
    /// Minimum vCPUs.
    pub cpu: Option<u32>,
    /// Minimum memory in MB.
    pub memory_mb: Option<u64>,
    /// Minimum root disk in GB.
    pub disk_gb: Option<u32>,
    /// GPUs per machine; 0 asks for a CPU-only type.
    pub gpu_count: u32,
    /// GPU vendor, e.g. NVIDIA (ignoring case).
    pub gpu_vendor: Option<String>,
    /// GPU model, e.g. A100 (ignoring case; a word of the type's model matches).
    pub gpu_model: Option<String>,
    /// Minimum memory per GPU in MB.
    pub gpu_memory_mb: Option<u64>,
}

/// One batch of identical machines to create.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    /// How many machines (>= 1).
    pub count: u32,
    /// The instance type or flavor name.
    pub instance_type: String,
    /// Image ID or name; None: the cloud's default image.
    pub image: Option<String>,
    /// cloud-init user-data, plain text (drivers encode it as their cloud needs).
    pub user_data: String,
    /// Whom the machines belong to, put on each as tags (and on every object created
    /// with them).
    pub owner: Owner,
    /// Machines are named `<name_prefix>-<suffix>`.
    pub name_prefix: String,
    /// The same key for a retried request: a cloud that honours it never creates the
    /// batch twice. Callers must still list by tags first; clouds forget keys.
    pub idempotency_key: String,
    /// Root disk size in GB (the pool's `machine.diskGB`); None: the image's or flavor's.
    pub disk_gb: Option<u32>,
}

/// Lifecycle of a machine as the cloud reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MachineState {
    #[default]
    /// Created, not yet booted.
    Pending,
    /// Booted.
    Running,
    /// Being deleted.
    Terminating,
    /// The cloud gave up on it (OpenStack ERROR); it should be deleted and replaced.
    Failed,
}

impl MachineState {
    /// The lowercase name, for logs and status.
    pub fn as_str(&self) -> &'static str {
        match self {
            MachineState::Pending => "pending",
            MachineState::Running => "running",
            MachineState::Terminating => "terminating",
            MachineState::Failed => "failed",
        }
    }
}

/// A machine address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// `InternalIP` or `ExternalIP`, as in Kubernetes Node addresses.
    pub kind: String,
    /// The IP address.
    pub address: String,
}

/// A machine the cloud has (terminated machines are never returned).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// The cloud's ID (what [`CloudDriver::delete`] takes).
    pub id: String,
    /// Kubernetes provider ID, e.g. `aws:///us-east-1a/i-0123`, `openstack:///<uuid>`, `sim:///<id>`.
    pub provider_id: String,
    /// The machine's name (hostname).
    pub name: String,
    /// The instance type or flavor it runs as.
    pub instance_type: String,
    /// Where it is in its lifecycle.
    pub state: MachineState,
    /// Its IP addresses.
    pub addresses: Vec<Address>,
    /// The tags it carries (ownership tags among them).
    pub tags: BTreeMap<String, String>,
    /// RFC 3339.
    pub created_at: String,
}

impl Machine {
    /// Whom the machine's tags say it belongs to; None when kelp did not tag it.
    pub fn owner(&self) -> Option<Owner> {
        Owner::from_tags(&self.tags)
    }

    /// Whether it runs the k3s server.
    pub fn is_server(&self) -> bool {
        self.owner().is_some_and(|o| o.role == Role::Server)
    }

    /// The create batch it came from, as its tags say.
    pub fn batch(&self) -> Option<&str> {
        self.tags.get(tags::BATCH).map(String::as_str)
    }
}

/// Typed driver errors: the controller decides what to do from the variant alone.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CloudError {
    #[error("not found: {0}")]
    /// The cloud does not know the object.
    NotFound(String),
    #[error("insufficient capacity for {instance_type}: {message}")]
    /// The cloud has no room for the batch now.
    InsufficientCapacity {
        /// The type that ran out.
        instance_type: String,
        /// The cloud's explanation.
        message: String,
    },
    #[error("quota exceeded: {0}")]
    /// An account limit would be exceeded.
    QuotaExceeded(String),
    #[error("throttled: {message}")]
    /// Too many requests: slow down.
    Throttled {
        /// The cloud's explanation.
        message: String,
        /// How long the cloud asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    #[error("unauthorized: {0}")]
    /// Credentials missing, expired or refused.
    Unauthorized(String),
    #[error("invalid request: {0}")]
    /// The request can never succeed as it is.
    Invalid(String),
    /// Anything else: network errors, 5xx, timeouts. Retried with backoff.
    #[error("cloud error: {0}")]
    Transient(String),
}

impl CloudError {
    /// A short stable label for metrics and Events.
    pub fn label(&self) -> &'static str {
        match self {
            CloudError::NotFound(_) => "NotFound",
            CloudError::InsufficientCapacity { .. } => "InsufficientCapacity",
            CloudError::QuotaExceeded(_) => "QuotaExceeded",
            CloudError::Throttled { .. } => "Throttled",
            CloudError::Unauthorized(_) => "Unauthorized",
            CloudError::Invalid(_) => "Invalid",
            CloudError::Transient(_) => "Transient",
        }
    }

    /// Worth retrying soon with backoff (as opposed to waiting for a spec or credential change).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CloudError::Throttled { .. } | CloudError::Transient(_) | CloudError::NotFound(_)
        )
    }
}

/// One cloud account/project/region. Implementations are cheap to share (`Arc`).
#[async_trait]
pub trait CloudDriver: Send + Sync {
    /// `sim`, `ec2`, `openstack` or `egi`: the label of metrics.
    fn name(&self) -> &str;

    /// The instance types (flavors) this account can start, with GPU facts and prices.
    async fn instance_types(&self) -> Result<Vec<InstanceType>, CloudError>;

    /// The instance types among `names` (see [`InstanceType::is_one_of`]) that this
    /// account can start, for a caller that needs no others (every pool names its
    /// type). Names the cloud does not offer are left out: a caller that must say what
    /// is offered instead reads [`instance_types`](Self::instance_types).
    ///
    /// The default filters `instance_types`; a driver whose API can ask for named
    /// types alone (EC2) reads only those.
    async fn instance_types_named(
        &self,
        names: &[String],
    ) -> Result<Vec<InstanceType>, CloudError> {
        let mut types = self.instance_types().await?;
        types.retain(|t| t.is_one_of(names));
        Ok(types)
    }

    /// Resolves an image by ID or name (newest wins); None asks for the cloud's default.
    async fn resolve_image(&self, image: Option<&str>) -> Result<Image, CloudError>;

    /// Starts `req.count` machines in one call; returns them (possibly still pending).
    async fn create(&self, req: &CreateRequest) -> Result<Vec<Machine>, CloudError>;

    /// Every non-terminated machine carrying all of `tags`.
    async fn list(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Machine>, CloudError>;

    /// The machines among `ids` that [`list`](Self::list) of `tags` would show now: a
    /// batch just created, looked at again. An ID the cloud does not show yet is left
    /// out, never an error. The default lists `tags` and keeps those IDs; a cloud that
    /// can ask for the IDs alone does (EC2: an `instance-id` filter, which a cloud
    /// answers faster than a tag filter over the whole account).
    async fn list_ids(
        &self,
        tags: &BTreeMap<String, String>,
        ids: &[String],
    ) -> Result<Vec<Machine>, CloudError> {
        let mut listed = self.list(tags).await?;
        listed.retain(|m| ids.contains(&m.id));
        Ok(listed)
    }

    /// Deletes machines by ID; IDs the cloud no longer knows are success.
    async fn delete(&self, ids: &[String]) -> Result<(), CloudError>;

    /// Deletes what the driver made besides machines for the owner in `tags` (security
    /// groups, floating IPs). Called once the owner's machines are gone.
    async fn release(&self, tags: &BTreeMap<String, String>) -> Result<(), CloudError> {
        let _ = tags;
        Ok(())
    }
}

/// Forwards every method of [`CloudDriver`] from a smart pointer to what it points to.
macro_rules! forward_driver {
    ($pointer:ty) => {
        #[async_trait]
        impl<T: CloudDriver + ?Sized> CloudDriver for $pointer {
            fn name(&self) -> &str {
                (**self).name()
            }

            async fn instance_types(&self) -> Result<Vec<InstanceType>, CloudError> {
                (**self).instance_types().await
            }

            async fn instance_types_named(
                &self,
                names: &[String],
            ) -> Result<Vec<InstanceType>, CloudError> {
                (**self).instance_types_named(names).await
            }

            async fn resolve_image(&self, image: Option<&str>) -> Result<Image, CloudError> {
                (**self).resolve_image(image).await
            }

            async fn create(&self, req: &CreateRequest) -> Result<Vec<Machine>, CloudError> {
                (**self).create(req).await
            }

            async fn list(
                &self,
                tags: &BTreeMap<String, String>,
            ) -> Result<Vec<Machine>, CloudError> {
                (**self).list(tags).await
            }

            async fn list_ids(
                &self,
                tags: &BTreeMap<String, String>,
                ids: &[String],
            ) -> Result<Vec<Machine>, CloudError> {
                (**self).list_ids(tags, ids).await
            }

            async fn delete(&self, ids: &[String]) -> Result<(), CloudError> {
                (**self).delete(ids).await
            }

            async fn release(&self, tags: &BTreeMap<String, String>) -> Result<(), CloudError> {
                (**self).release(tags).await
            }
        }
    };
}

// A shared or boxed driver is a driver, so wrappers such as
// `Metered<Arc<dyn CloudDriver>>` work, and a driver's own overrides (EC2's narrow
// catalogue) are reached through them.
forward_driver!(std::sync::Arc<T>);
forward_driver!(Box<T>);
