//! The I/O side of pools that follow demand ([`super::plan::demand`] is the pure side):
//! the Deployment and Module caches the Cluster controller sizes pools from, the wake of
//! a Cluster when a Deployment on it changes, what the target shows of each machine, and
//! the cordon and drain before an idle machine goes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures::Stream;
use k8s_openapi::api::core::v1::{Node, Pod};
use kelp_cloud_drivers::Machine;
use kelp_crds::{Cluster, Deployment, Module};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::broadcast;

use super::plan::demand::{PendingPod, Usage, Want};
use crate::deployment::build::DEPLOYMENT_LABEL;

/// What of a Deployment decides its demand: the Clusters it is or may be on, its
/// generation (its spec), whether it is being deleted.
type Seen = (BTreeSet<String>, Option<i64>, bool);

/// The caches of the Deployment controller that pools are sized from, and the wakes of
/// the Clusters whose demand changed. Shared in the Context.
pub struct Demand {
    deployments: OnceLock<Store<Deployment>>,
    modules: OnceLock<Store<Module>>,
    modules_synced: Arc<AtomicBool>,
    /// Each Deployment's (namespace, name) last seen demand.
    seen: Mutex<HashMap<(String, String), Seen>>,
    tx: broadcast::Sender<(String, String)>,
}

impl Default for Demand {
    fn default() -> Self {
        Self {
            deployments: OnceLock::new(),
            modules: OnceLock::new(),
            modules_synced: Arc::new(AtomicBool::new(false)),
            seen: Mutex::default(),
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Demand {
    /// Set by the Deployment controller when it starts: its caches.
    pub fn share(&self, deployments: Store<Deployment>, modules: Store<Module>) {
        let _ = self.deployments.set(deployments);
        let _ = self.modules.set(modules);
    }

    /// The flag the Module watch raises once its first full list is in.
    pub fn modules_synced_flag(&self) -> Arc<AtomicBool> {
        self.modules_synced.clone()
    }

    /// Called for every Deployment the Deployment watch delivers: wakes its Cluster when
    /// what the Cluster sizes pools from may have changed (a new Deployment, a spec
    /// change, a delete).
    pub fn saw(&self, dep: &Deployment) {
        let ns = dep.namespace().unwrap_or_default();
        let key = (ns.clone(), dep.name_any());
        let now: Seen = (
            dep.clusters_in_use()
                .into_iter()
                .chain(dep.spec.candidates())
                .map(str::to_string)
                .collect(),
            dep.metadata.generation,
            dep.metadata.deletion_timestamp.is_some(),
        );
        let before = self.seen.lock().unwrap().insert(key, now.clone());
        if before.as_ref() == Some(&now) {
            return;
        }
        let mut clusters: BTreeSet<String> = now.0;
        if let Some((old, ..)) = before {
            clusters.extend(old);
        }
        for c in clusters {
            self.wake(&ns, &c);
        }
    }

    /// Wakes the Cluster `namespace/name`: the demand on its pools changed.
    pub fn wake(&self, namespace: &str, name: &str) {
        let _ = self.tx.send((namespace.to_string(), name.to_string()));
    }

    /// The Clusters (namespace, name) whose demand may have changed, from now on.
    pub fn changes(&self) -> impl Stream<Item = (String, String)> + Send + 'static {
        futures::stream::unfold(self.tx.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(c) => return Some((c, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// The Deployments each pool of `cluster` carries; None until both caches hold their
    /// first full list (`deployments_synced` for the Deployments'), or while a
    /// Deployment's Module is not cached.
    pub fn wants(&self, cluster: &Cluster, deployments_synced: bool) -> Option<Vec<Vec<Want>>> {
        if !deployments_synced || !self.modules_synced.load(Ordering::Acquire) {
            return None;
        }
        let (deps, modules) = (self.deployments.get()?, self.modules.get()?);
        let all = deps.state();
        super::plan::demand::wants(cluster, all.iter().map(|d| d.as_ref()), |ns, name| {
            modules.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
        })
    }
}

/// What the target shows of each machine (by machine id): its Node, and how many kelp
/// workload Pods run there. Empty when the Nodes cannot be read; each Usage has no Pod
/// count when the Pods cannot be (the scale-down then waits).
pub async fn usage(target: &Client, uid: &str, machines: &[&Machine]) -> BTreeMap<String, Usage> {
    let selector = format!("{}={uid}", crate::simulated::NODE_CLUSTER_LABEL);
    let Ok(nodes) = Api::<Node>::all(target.clone())
        .list(&ListParams::default().labels(&selector))
        .await
    else {
        return BTreeMap::new();
    };
    let nodes = nodes.items;
    let pods: Option<HashMap<String, u32>> = Api::<Pod>::all(target.clone())
        .list(&ListParams::default().labels(DEPLOYMENT_LABEL))
        .await
        .ok()
        .map(|l| {
            let mut by_node: HashMap<String, u32> = HashMap::new();
            for p in l.items {
                let done = p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
                if let Some(n) = p.spec.and_then(|s| s.node_name)
                    && !done
                {
                    *by_node.entry(n).or_default() += 1;
                }
            }
            by_node
        });
    machines
        .iter()
        .map(|m| {
            let n = nodes.iter().find(|n| is_node_of(n, m));
            let node = n.map(|n| n.name_any());
            let cordoned = n.is_some_and(|n| n.annotations().contains_key(CORDONED));
            let kelp_pods = pods
                .as_ref()
                .map(|p| node.as_ref().and_then(|n| p.get(n).copied()).unwrap_or(0));
            (
                m.id.clone(),
                Usage {
                    kelp_pods,
                    node,
                    cordoned,
                },
            )
        })
        .collect()
}

/// Whether Node `n` is machine `m`: by provider ID, or by internal address (k3s without a
/// cloud provider names its Nodes `k3s://<hostname>`).
pub fn is_node_of(n: &Node, m: &Machine) -> bool {
    n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(m.provider_id.as_str())
        || n.status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .is_some_and(|a| {
                a.iter().any(|a| {
                    a.type_ == "InternalIP"
                        && m.addresses
                            .iter()
                            .any(|ma| ma.kind == "InternalIP" && ma.address == a.address)
                })
            })
}

/// The annotation on a Node kelp cordoned to remove its machine: a cordon kelp made,
/// which it takes back when the machine is to stay after all.
pub const CORDONED: &str = "kelp.imagine-ai.eu/cordoned-for-scale-down";

/// Where a drain stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// Nothing but DaemonSet and mirror Pods is left: the machine may go.
    Done,
    /// Pods are being evicted (or a PodDisruptionBudget holds them): look again.
    Evicting,
    /// A kelp workload Pod landed there before the cordon: the machine carries
    /// workload, and stays (uncordoned).
    Busy,
}

/// Cordons `node` (marked with [`CORDONED`]) and evicts its Pods (DaemonSet and mirror
/// Pods stay, as `kubectl drain` leaves them). A kelp workload Pod found there after the
/// cordon (scheduled between the look at the Node and the cordon) means the machine is
/// not idle after all: it is uncordoned, and stays.
pub async fn drain(target: &Client, node: &str) -> Result<Drain, kube::Error> {
    cordon(target, node, true).await?;
    let pods = Api::<Pod>::all(target.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    if pods
        .items
        .iter()
        .any(|p| p.labels().contains_key(DEPLOYMENT_LABEL))
    {
        cordon(target, node, false).await?;
        return Ok(Drain::Busy);
    }
    let mut left = 0;
    for p in pods.items {
        let daemon = p
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o.kind == "DaemonSet"));
        let mirror = p.annotations().contains_key("kubernetes.io/config.mirror");
        if daemon || mirror {
            continue;
        }
        let ns = p.namespace().unwrap_or_default();
        match Api::<Pod>::namespaced(target.clone(), &ns)
            .evict(&p.name_any(), &EvictParams::default())
            .await
        {
            Ok(_) => left += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(kube::Error::Api(e)) if e.code == 429 => left += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(if left == 0 {
        Drain::Done
    } else {
        Drain::Evicting
    })
}

/// Cordons `node` for a scale-down (marked with [`CORDONED`]), or takes kelp's cordon back.
pub async fn cordon(target: &Client, node: &str, on: bool) -> Result<(), kube::Error> {
    let patch = if on {
        serde_json::json!({"metadata": {"annotations": {CORDONED: "true"}}, "spec": {"unschedulable": true}})
    } else {
        serde_json::json!({"metadata": {"annotations": {CORDONED: null}}, "spec": {"unschedulable": false}})
    };
    Api::<Node>::all(target.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// A Kubernetes quantity in base units (cores, bytes, count).
pub fn parse_quantity(q: &str) -> f64 {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().unwrap_or(0.0);
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => 1.0,
    };
    n * mult
}

/// The Pods of the target that wait for room: Pending, not bound, `PodScheduled=False`
/// with reason `Unschedulable`, and not kelp workload Pods. Empty when Pods cannot be
/// listed.
pub async fn pending_pods(target: &Client) -> Vec<PendingPod> {
    let Ok(list) = Api::<Pod>::all(target.clone())
        .list(&ListParams::default().fields("status.phase=Pending"))
        .await
    else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|p| !p.labels().contains_key(DEPLOYMENT_LABEL))
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.reason.as_deref() == Some("Unschedulable")
                    })
                })
        })
        .filter_map(|p| {
            let name = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
            let spec = p.spec?;
            if spec.node_name.is_some() {
                return None;
            }
            let (mut cpu, mut mem, mut gpu) = (0.0, 0.0, 0.0);
            for c in &spec.containers {
                let r = c.resources.clone().unwrap_or_default();
                let (req, lim) = (r.requests.unwrap_or_default(), r.limits.unwrap_or_default());
                let q = |k: &str| {
                    req.get(k)
                        .or_else(|| lim.get(k))
                        .map_or(0.0, |q| parse_quantity(&q.0))
                };
                cpu += q("cpu");
                mem += q("memory");
                gpu += q("nvidia.com/gpu");
            }
            Some(PendingPod {
                name,
                node_selector: spec.node_selector.unwrap_or_default(),
                tolerations: spec.tolerations.unwrap_or_default(),
                need: crate::deployment::build::Need {
                    cpu: cpu.ceil() as u32,
                    memory_mb: (mem / 1048576.0).ceil() as u64,
                    gpu: gpu.ceil() as u32,
                },
            })
        })
        .collect()
}
