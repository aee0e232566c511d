//! The seam between kelp's controllers and the Kubernetes side of the simulated cloud.
//!
//! On a real cloud, k3s on the machines provides a Cluster's Kubernetes: an API server
//! on the control-plane machine, a Node per agent that joins. The sim cloud's machines
//! run nothing, so something must stand in for k3s. The controllers ask for that
//! through [`SimKubernetes`] and know nothing of what is behind it. kelp's `dev` build
//! (the default features) provides in-process test API servers and Node registration
//! (`sim_kube`); a build without it (the release image) has none, and a sim Cluster is
//! then Stalled with a message saying so.
//!
//! Scheduling is not the operator's part, as it is not on a real cloud: the simulated
//! kubelet that makes workloads Ready runs beside the API server it serves
//! (`sim_kube::spawn_kubelet`), started with every sim control plane and by whatever
//! hosts an API server that sim Clusters join as `Existing` (`kelp dev`, test harnesses,
//! benchmarks). The operator process runs none.

use std::collections::BTreeMap;

use async_trait::async_trait;
use kube::Client;

use crate::context::Result;

/// Label on every Node kelp's node recipes register (and the simulation registers): the
/// owning Cluster's UID.
pub const NODE_CLUSTER_LABEL: &str = "kelp.imagine-ai.eu/cluster-uid";
/// Label on every such Node: its pool.
pub const NODE_POOL_LABEL: &str = "kelp.imagine-ai.eu/pool";

/// A Node to register for a running sim machine, as its k3s agent would.
#[derive(Clone, Debug, PartialEq)]
pub struct SimNode {
    pub name: String,
    pub provider_id: String,
    pub pool: String,
    pub labels: BTreeMap<String, String>,
    /// (key, value, effect)
    pub taints: Vec<(String, Option<String>, String)>,
    pub cpu: u32,
    pub memory_mb: u64,
    pub gpu: u32,
    pub internal_ip: Option<String>,
}

/// What stands in for k3s on the sim cloud's machines.
#[async_trait]
pub trait SimKubernetes: Send + Sync {
    /// The control plane of the sim Cluster `uid`, started on first use: its URL and an
    /// admin kubeconfig.
    async fn control_plane(&self, uid: &str, cluster_name: &str) -> Result<(String, String)>;
    /// Stops the control plane of `uid` (the Cluster is gone).
    async fn stop_control_plane(&self, uid: &str);
    /// Registers `nodes` for the Cluster `uid` on `client`'s API server and removes the
    /// Nodes of machines that are gone.
    async fn sync_nodes(&self, client: &Client, uid: &str, nodes: &[SimNode]) -> Result<()>;
    /// Control planes running (for tests and benchmarks).
    async fn control_planes(&self) -> usize;
}

/// The simulation this build provides, if any.
pub fn builtin() -> Option<std::sync::Arc<dyn SimKubernetes>> {
    #[cfg(feature = "dev")]
    {
        Some(std::sync::Arc::new(crate::sim_kube::SimKube::default()))
    }
    #[cfg(not(feature = "dev"))]
    {
        None
    }
}
