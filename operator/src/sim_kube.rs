//! The Kubernetes side of the `sim` cloud. **A simulation**, for `kelp dev` and tests:
//!
//! - a sim Cluster with `kubernetes: Provision` gets an in-process test API server as its
//!   "control-plane machine";
//! - every running sim machine appears there as a Node with its pool's labels and taints and
//!   its instance type's CPU, memory and `nvidia.com/gpu` capacity (what a real k3s agent
//!   would register);
//! - a small simulated kubelet marks apps/v1 Deployments ready when nodes with enough free
//!   CPU, memory and GPU (and matching node selectors and tolerated taints) exist, and not
//!   otherwise. No container ever runs.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::core::v1::Node;
use kelp_testapi::TestApiServer;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::context::{Error, Result};

use crate::simulated::SimKubernetes;
pub use crate::simulated::{NODE_CLUSTER_LABEL, NODE_POOL_LABEL, SimNode};

/// In-process control planes, each with its simulated kubelet, shared across operator
/// restarts in tests.
#[derive(Default)]
pub struct SimKube {
    planes: tokio::sync::Mutex<HashMap<String, Plane>>,
}

/// A sim Cluster's control plane and the kubelet that schedules its workloads.
struct Plane {
    server: TestApiServer,
    kubelet: tokio::task::JoinHandle<()>,
}

#[async_trait::async_trait]
impl SimKubernetes for SimKube {
    /// The control plane of the sim Cluster `uid`: started on first use. Returns its URL and
    /// an admin kubeconfig.
    async fn control_plane(&self, uid: &str, cluster_name: &str) -> Result<(String, String)> {
        let mut planes = self.planes.lock().await;
        if !planes.contains_key(uid) {
            let server = TestApiServer::start().await.map_err(|e| {
                Error::Target(format!("could not start the sim control plane: {e}"))
            })?;
            let client = crate::targets::client_from_kubeconfig(&server.kubeconfig()).await?;
            tracing::info!(cluster = cluster_name, url = %server.url(), "sim control plane started");
            let kubelet = spawn_kubelet(client);
            planes.insert(uid.to_string(), Plane { server, kubelet });
        }
        let server = &planes[uid].server;
        // The sim's stand-in for the admin client certificate: the server's admin token.
        let kubeconfig = crate::pki::kubeconfig(
            cluster_name,
            &server.url(),
            Some(server.ca_pem()),
            crate::pki::Credentials::Token(server.admin_token()),
        );
        Ok((server.url(), kubeconfig))
    }

    /// Stops the control plane of `uid` (the Cluster is gone).
    async fn stop_control_plane(&self, uid: &str) {
        let plane = self.planes.lock().await.remove(uid);
        if let Some(plane) = plane {
            plane.kubelet.abort();
            plane.server.shutdown().await;
        }
    }

    /// Number of control planes running (for tests and benchmarks).
    async fn control_planes(&self) -> usize {
        self.planes.lock().await.len()
    }

    /// Registers `nodes` for the Cluster `uid` on `client`'s API server and removes the
    /// Nodes of machines that are gone.
    async fn sync_nodes(&self, client: &Client, uid: &str, nodes: &[SimNode]) -> Result<()> {
        let api: Api<Node> = Api::all(client.clone());
        let existing = api
            .list(&ListParams::default().labels(&format!("{NODE_CLUSTER_LABEL}={uid}")))
            .await?;
        for node in nodes {
            let current = existing.items.iter().find(|n| n.name_any() == node.name);
            let desired = node_object(uid, node);
            if current.is_some_and(|c| same_node(c, &desired)) {
                continue;
            }
            let pp = PatchParams::apply("kelp-sim-kubelet").force();
            api.patch(&node.name, &pp, &Patch::Apply(&desired)).await?;
            api.patch_status(&node.name, &pp, &Patch::Apply(&desired))
                .await?;
        }
        for stale in existing
            .items
            .iter()
            .filter(|n| !nodes.iter().any(|d| d.name == n.name_any()))
        {
            match api
                .delete(&stale.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

fn same_node(current: &Node, desired: &Value) -> bool {
    let labels = serde_json::to_value(&current.metadata.labels).unwrap_or_default();
    let ready = current
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready && labels == desired["metadata"]["labels"]
}

fn node_object(uid: &str, node: &SimNode) -> Value {
    let mut labels = node.labels.clone();
    labels.insert(NODE_CLUSTER_LABEL.into(), uid.into());
    labels.insert(NODE_POOL_LABEL.into(), node.pool.clone());
    labels.insert("kubernetes.io/hostname".into(), node.name.clone());
    labels.insert("node.kubernetes.io/instance-type".into(), "sim".into());
    let taints: Vec<Value> = node
        .taints
        .iter()
        .map(|(k, v, e)| json!({"key": k, "value": v, "effect": e}))
        .collect();
    let mut capacity = json!({
        "cpu": node.cpu.to_string(),
        "memory": format!("{}Mi", node.memory_mb),
        "pods": "110",
    });
    if node.gpu > 0 {
        capacity["nvidia.com/gpu"] = json!(node.gpu.to_string());
    }
    let addresses: Vec<Value> = node
        .internal_ip
        .iter()
        .map(|ip| json!({"type": "InternalIP", "address": ip}))
        .chain(std::iter::once(
            json!({"type": "Hostname", "address": node.name}),
        ))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels},
        "spec": {"providerID": node.provider_id, "taints": taints},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": addresses,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "simulated kubelet is posting ready status",
                "lastHeartbeatTime": crate::conditions::now(),
                "lastTransitionTime": crate::conditions::now(),
            }],
            "nodeInfo": {"kubeletVersion": "v1.31.4+k3s1 (kelp sim)"},
        },
    })
}

/// Starts a simulated kubelet for the API server `client` talks to: it marks apps/v1
/// Deployments ready when Nodes with room for them exist. Every sim control plane gets
/// one; whatever hosts an API server that sim Clusters join as `kubernetes: Existing`
/// (`kelp dev`, a test harness, a benchmark) starts one beside it, as a real cluster
/// has its own scheduler and kubelets. The operator never runs one itself.
pub fn spawn_kubelet(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(kubelet(client))
}

/// Recomputes placement whenever a Deployment or a Node changes. The watches are of
/// metadata alone: they only say that something changed.
async fn kubelet(client: Client) {
    use kube::core::PartialObjectMeta;
    let deployments: Api<PartialObjectMeta<AppsDeployment>> = Api::all(client.clone());
    let nodes: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
    // With backoff: an API server that has gone (a test's end) fails every request at
    // once, and the drain below would otherwise never yield.
    let d = watcher(deployments, watcher::Config::default())
        .default_backoff()
        .map(|_| ())
        .boxed();
    let n = watcher(nodes, watcher::Config::default())
        .default_backoff()
        .map(|_| ())
        .boxed();
    let mut events = futures::stream::select(d, n);
    loop {
        let tick = tokio::time::sleep(Duration::from_secs(2));
        tokio::select! {
            e = events.next() => if e.is_none() { return },
            _ = tick => {},
        }
        // Let a burst of events settle into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..10_000 {
            if !matches!(
                futures::FutureExt::now_or_never(events.next()),
                Some(Some(_))
            ) {
                break;
            }
        }
        if let Err(e) = schedule(&client).await {
            tracing::debug!(error = %e, "sim kubelet pass failed");
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Res {
    cpu: f64,
    memory: f64,
    gpu: f64,
}

/// What a placement pass needs of an apps/v1 Deployment, without the rest of it.
struct Workload {
    namespace: String,
    name: String,
    created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    generation: Option<i64>,
    want: i32,
    need: Res,
    selector: std::collections::BTreeMap<String, String>,
    tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    /// readyReplicas, observedGeneration and the Available message as they are now.
    current: (Option<i32>, Option<i64>, Option<String>),
}

impl Workload {
    fn of(dep: AppsDeployment) -> Self {
        let pod = dep.spec.template.spec.clone().unwrap_or_default();
        let mut need = Res::default();
        for c in &pod.containers {
            let r = c.resources.clone().unwrap_or_default();
            let req = r.requests.unwrap_or_default();
            let lim = r.limits.unwrap_or_default();
            let q = |k: &str| {
                req.get(k)
                    .or_else(|| lim.get(k))
                    .map(|q| parse_quantity(&q.0))
                    .unwrap_or(0.0)
            };
            need.cpu += q("cpu");
            need.memory += q("memory");
            need.gpu += q("nvidia.com/gpu");
        }
        let status = dep.status.as_ref();
        Workload {
            namespace: dep.namespace().unwrap_or_default(),
            name: dep.name_any(),
            created: dep.metadata.creation_timestamp.clone(),
            generation: dep.metadata.generation,
            want: dep.spec.replicas.unwrap_or(1).max(0),
            need,
            selector: pod.node_selector.unwrap_or_default(),
            tolerations: pod.tolerations.unwrap_or_default(),
            current: (
                status.and_then(|s| s.ready_replicas),
                status.and_then(|s| s.observed_generation),
                status
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.first())
                    .and_then(|c| c.message.clone()),
            ),
        }
    }
}

/// Every object of a kind, a page at a time, each turned into what the pass keeps.
async fn list_compact<K, T>(api: &Api<K>, keep: impl Fn(K) -> T) -> Result<Vec<T>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(200);
    loop {
        let page = api.list(&lp).await?;
        out.extend(page.items.into_iter().map(&keep));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// One placement pass over every Deployment, oldest first; writes status where it changed.
/// Reads a page at a time and keeps only what placement needs, so a pass over thousands
/// of workloads holds a few hundred whole objects at most.
pub async fn schedule(client: &Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deployments: Api<AppsDeployment> = Api::all(client.clone());
    let mut free: Vec<(Node, Res)> = list_compact(&nodes, |mut n: Node| {
        crate::context::trim(&mut n);
        n
    })
    .await?
    .into_iter()
    .filter(crate::cluster::node_ready)
    .map(|n| {
        let alloc = n
            .status
            .as_ref()
            .and_then(|s| s.allocatable.clone())
            .unwrap_or_default();
        let get = |k: &str| alloc.get(k).map(|q| parse_quantity(&q.0)).unwrap_or(0.0);
        let r = Res {
            cpu: get("cpu"),
            memory: get("memory"),
            gpu: get("nvidia.com/gpu"),
        };
        (n, r)
    })
    .collect();
    let mut deps = list_compact(&deployments, Workload::of).await?;
    deps.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    for dep in deps {
        let (want, need) = (dep.want, &dep.need);
        let (selector, tolerations) = (&dep.selector, &dep.tolerations);
        let mut placed = 0;
        for _ in 0..want {
            let slot = free.iter_mut().find(|(node, f)| {
                let labels = node.metadata.labels.clone().unwrap_or_default();
                let selected = selector.iter().all(|(k, v)| labels.get(k) == Some(v));
                let tolerated = node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_none_or(|taints| {
                        taints.iter().all(|t| {
                            t.effect == "PreferNoSchedule"
                                || tolerations.iter().any(|tol| {
                                    let key_ok = tol.key.as_deref().is_none_or(|k| k == t.key)
                                        || tol.key.as_deref() == Some("");
                                    let op_exists = tol.operator.as_deref() == Some("Exists");
                                    let value_ok = op_exists || tol.value == t.value;
                                    let effect_ok = tol
                                        .effect
                                        .as_deref()
                                        .is_none_or(|e| e.is_empty() || e == t.effect);
                                    key_ok && value_ok && effect_ok
                                })
                        })
                    });
                selected
                    && tolerated
                    && f.cpu + 1e-9 >= need.cpu
                    && f.memory + 1e-9 >= need.memory
                    && f.gpu + 1e-9 >= need.gpu
            });
            match slot {
                Some((_, f)) => {
                    f.cpu -= need.cpu;
                    f.memory -= need.memory;
                    f.gpu -= need.gpu;
                    placed += 1;
                }
                None => break,
            }
        }
        let available = placed >= want;
        let (reason, message) = if available {
            (
                "MinimumReplicasAvailable",
                format!("{placed}/{want} replicas running (simulated)"),
            )
        } else {
            (
                "Unschedulable",
                format!(
                    "{placed}/{want} replicas scheduled: no node with {} CPU, {} MiB memory and {} GPU free that matches the node selector and tolerations",
                    need.cpu,
                    (need.memory / 1048576.0).round(),
                    need.gpu
                ),
            )
        };
        let status = json!({
            "observedGeneration": dep.generation,
            "replicas": placed,
            "updatedReplicas": placed,
            "readyReplicas": placed,
            "availableReplicas": placed,
            "unavailableReplicas": want - placed,
            "conditions": [{
                "type": "Available",
                "status": if available { "True" } else { "False" },
                "reason": reason,
                "message": message,
                "lastUpdateTime": "1970-01-01T00:00:00Z",
                "lastTransitionTime": "1970-01-01T00:00:00Z",
            }],
        });
        let now = (Some(placed), dep.generation, Some(message));
        if dep.current == now {
            continue;
        }
        let api: Api<AppsDeployment> = Api::namespaced(client.clone(), &dep.namespace);
        api.patch_status(
            &dep.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("4"), 4.0);
        assert_eq!(parse_quantity("500m"), 0.5);
        assert_eq!(parse_quantity("8000Mi"), 8000.0 * 1048576.0);
        assert_eq!(parse_quantity("2Gi"), 2.0 * 1073741824.0);
        assert_eq!(parse_quantity("1k"), 1000.0);
    }
}
