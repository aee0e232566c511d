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

use crate::cluster::demand::parse_quantity;
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

/// One change the kubelet's watches saw, reduced at once to what placement keeps.
enum Seen {
    Node(watcher::Event<(String, Slot)>),
    Workload(watcher::Event<((String, String), Workload)>),
}

/// A watch event with its object turned into what the kubelet keeps.
fn reduce<K, T>(event: watcher::Event<K>, keep: impl Fn(K) -> T) -> watcher::Event<T> {
    match event {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(keep(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
        watcher::Event::Apply(o) => watcher::Event::Apply(keep(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(keep(o)),
    }
}

/// Keeps what placement needs of every Node and Deployment, from watches of the whole
/// objects (reduced at once to [`Slot`] and [`Workload`]), and recomputes placement after
/// each burst of changes. A pass is a computation over that view; the API server only
/// sees the status writes that change something.
async fn kubelet(client: Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let deployments: Api<AppsDeployment> = Api::all(client.clone());
    // With backoff: an API server that has gone (a test's end) fails every request at
    // once, and the drain below would otherwise never yield.
    let n = watcher(nodes, watcher::Config::default())
        .default_backoff()
        .filter_map(|e| async move {
            e.ok()
                .map(|e| Seen::Node(reduce(e, |n: Node| (n.name_any(), Slot::of(n)))))
        })
        .boxed();
    let d = watcher(deployments, watcher::Config::default())
        .default_backoff()
        .filter_map(|e| async move {
            e.ok().map(|e| {
                Seen::Workload(reduce(e, |d: AppsDeployment| {
                    let key = (d.namespace().unwrap_or_default(), d.name_any());
                    (key, Workload::of(d))
                }))
            })
        })
        .boxed();
    let mut events = futures::stream::select(n, d);
    let mut view = View::default();
    loop {
        let tick = tokio::time::sleep(Duration::from_secs(2));
        tokio::select! {
            e = events.next() => match e {
                Some(e) => view.see(e),
                None => return,
            },
            _ = tick => {},
        }
        // Let a burst of events settle into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..10_000 {
            match futures::FutureExt::now_or_never(events.next()) {
                Some(Some(e)) => view.see(e),
                Some(None) => return,
                None => break,
            }
        }
        if !view.synced() {
            continue;
        }
        for (key, status, now) in place(&view) {
            let api: Api<AppsDeployment> = Api::namespaced(client.clone(), &key.0);
            let written = api
                .patch_status(
                    &key.1,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await;
            match written {
                // Seen as written, so a pass before the watch brings it back does not
                // write it again.
                Ok(_) => {
                    if let Some(w) = view.workloads.get_mut(&key) {
                        w.current = now;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "sim kubelet status write failed"),
            }
        }
    }
}

/// What a placement pass knows of the cluster: every Node and every Deployment, reduced.
#[derive(Default)]
struct View {
    nodes: HashMap<String, Slot>,
    workloads: HashMap<(String, String), Workload>,
    /// Objects of a watch's (re)list, kept apart until it is complete.
    listing_nodes: Option<HashMap<String, Slot>>,
    listing_workloads: Option<HashMap<(String, String), Workload>>,
    nodes_synced: bool,
    workloads_synced: bool,
}

impl View {
    fn see(&mut self, seen: Seen) {
        match seen {
            Seen::Node(e) => Self::apply(
                e,
                &mut self.nodes,
                &mut self.listing_nodes,
                &mut self.nodes_synced,
            ),
            Seen::Workload(e) => Self::apply(
                e,
                &mut self.workloads,
                &mut self.listing_workloads,
                &mut self.workloads_synced,
            ),
        }
    }

    /// One watch event into one map: a relist replaces the map when it is complete.
    fn apply<Key: std::hash::Hash + Eq, T>(
        event: watcher::Event<(Key, T)>,
        map: &mut HashMap<Key, T>,
        listing: &mut Option<HashMap<Key, T>>,
        synced: &mut bool,
    ) {
        match event {
            watcher::Event::Init => *listing = Some(HashMap::new()),
            watcher::Event::InitApply((k, v)) => {
                listing.get_or_insert_default().insert(k, v);
            }
            watcher::Event::InitDone => {
                *map = listing.take().unwrap_or_default();
                *synced = true;
            }
            watcher::Event::Apply((k, v)) => {
                map.insert(k, v);
            }
            watcher::Event::Delete((k, _)) => {
                map.remove(&k);
            }
        }
    }

    /// Both watches have listed once.
    fn synced(&self) -> bool {
        self.nodes_synced && self.workloads_synced
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Res {
    cpu: f64,
    memory: f64,
    gpu: f64,
}

/// What a placement pass needs of a Node.
struct Slot {
    labels: std::collections::BTreeMap<String, String>,
    taints: Vec<k8s_openapi::api::core::v1::Taint>,
    allocatable: Res,
    ready: bool,
}

impl Slot {
    fn of(node: Node) -> Self {
        // A cordoned Node takes no new pods, as the scheduler has it.
        let cordoned = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        let ready = crate::cluster::node_ready(&node) && !cordoned;
        let alloc = node.status.and_then(|s| s.allocatable).unwrap_or_default();
        let get = |k: &str| alloc.get(k).map(|q| parse_quantity(&q.0)).unwrap_or(0.0);
        Slot {
            allocatable: Res {
                cpu: get("cpu"),
                memory: get("memory"),
                gpu: get("nvidia.com/gpu"),
            },
            labels: node.metadata.labels.unwrap_or_default(),
            taints: node.spec.and_then(|s| s.taints).unwrap_or_default(),
            ready,
        }
    }

    /// Whether a pod with these tolerations may run here (taints other than
    /// PreferNoSchedule must be tolerated).
    fn tolerates(&self, tolerations: &[k8s_openapi::api::core::v1::Toleration]) -> bool {
        self.taints.iter().all(|t| {
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
    }
}

/// What a placement pass needs of an apps/v1 Deployment, without the rest of it.
struct Workload {
    created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    name: String,
    generation: Option<i64>,
    want: i32,
    need: Res,
    selector: std::collections::BTreeMap<String, String>,
    tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    /// readyReplicas, observedGeneration and the Available message as they are now.
    current: Shown,
}

/// readyReplicas, observedGeneration and the Available message of a Deployment's status.
type Shown = (Option<i32>, Option<i64>, Option<String>);

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
            created: dep.metadata.creation_timestamp.clone(),
            name: dep.name_any(),
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

/// One placement pass over every Deployment, oldest first, onto the ready Nodes: the
/// status each Deployment should show, for those whose status shows something else.
fn place(view: &View) -> Vec<((String, String), Value, Shown)> {
    // Nodes by name, so every pass places the same way.
    let mut free: Vec<(&String, &Slot, Res)> = view
        .nodes
        .iter()
        .filter(|(_, n)| n.ready)
        .map(|(name, n)| (name, n, n.allocatable.clone()))
        .collect();
    free.sort_by_key(|f| f.0);
    let mut deps: Vec<(&(String, String), &Workload)> = view.workloads.iter().collect();
    deps.sort_by(|a, b| (&a.1.created, &a.1.name).cmp(&(&b.1.created, &b.1.name)));
    let mut out = Vec::new();
    for (key, dep) in deps {
        let (want, need) = (dep.want, &dep.need);
        let mut placed = 0;
        for _ in 0..want {
            let slot = free.iter_mut().find(|(_, node, f)| {
                let selected = dep
                    .selector
                    .iter()
                    .all(|(k, v)| node.labels.get(k) == Some(v));
                selected
                    && node.tolerates(&dep.tolerations)
                    && f.cpu + 1e-9 >= need.cpu
                    && f.memory + 1e-9 >= need.memory
                    && f.gpu + 1e-9 >= need.gpu
            });
            match slot {
                Some((_, _, f)) => {
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
        let now = (Some(placed), dep.generation, Some(message.clone()));
        if dep.current == now {
            continue;
        }
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
        out.push((key.clone(), status, now));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view from YAML lists of Nodes and apps/v1 Deployments.
    fn view(nodes: &str, deployments: &str) -> View {
        let nodes: Vec<Node> = serde_yaml_ng::from_str(nodes).unwrap();
        let deps: Vec<AppsDeployment> = serde_yaml_ng::from_str(deployments).unwrap();
        View {
            nodes: nodes
                .into_iter()
                .map(|n| (n.name_any(), Slot::of(n)))
                .collect(),
            workloads: deps
                .into_iter()
                .map(|d| {
                    (
                        (d.namespace().unwrap_or_default(), d.name_any()),
                        Workload::of(d),
                    )
                })
                .collect(),
            nodes_synced: true,
            workloads_synced: true,
            ..Default::default()
        }
    }

    const NODES: &str = r#"
- metadata: {name: cpu-1, labels: {pool: cpu}}
  status:
    allocatable: {cpu: "2", memory: 4Gi}
    conditions: [{type: Ready, status: "True"}]
- metadata: {name: gpu-1, labels: {pool: gpu}}
  spec: {taints: [{key: nvidia.com/gpu, value: "true", effect: NoSchedule}]}
  status:
    allocatable: {cpu: "8", memory: 32Gi, nvidia.com/gpu: "1"}
    conditions: [{type: Ready, status: "True"}]
- metadata: {name: gpu-2, labels: {pool: gpu}}
  status:
    allocatable: {cpu: "8", memory: 32Gi, nvidia.com/gpu: "1"}
    conditions: [{type: Ready, status: "False"}]
"#;

    fn workload(name: &str, created: &str, replicas: i32, gpu: bool, status: &str) -> String {
        let (limits, tolerations) = if gpu {
            (
                "{cpu: \"1\", nvidia.com/gpu: \"1\"}",
                "[{key: nvidia.com/gpu, operator: Exists}]",
            )
        } else {
            ("{cpu: \"1\"}", "[]")
        };
        format!(
            "- metadata: {{name: {name}, namespace: ns, generation: 1, creationTimestamp: \"{created}\"}}\n  spec:\n    replicas: {replicas}\n    selector: {{}}\n    template:\n      spec:\n        tolerations: {tolerations}\n        containers: [{{name: c, resources: {{limits: {limits}}}}}]\n  status: {status}\n"
        )
    }

    #[test]
    fn placement_fills_ready_nodes_oldest_first_and_writes_only_what_changed() {
        let running = "{observedGeneration: 1, readyReplicas: 2, conditions: [{type: Available, status: \"True\", message: 2/2 replicas running (simulated)}]}";
        let deps = [
            workload("web", "2026-01-01T00:00:00Z", 2, false, running),
            workload("detector", "2026-01-02T00:00:00Z", 2, true, "{}"),
            workload("late", "2026-01-03T00:00:00Z", 1, false, "{}"),
        ]
        .concat();
        let out = place(&view(NODES, &deps));
        let by_name: HashMap<&str, &Value> =
            out.iter().map(|(k, s, _)| (k.1.as_str(), s)).collect();
        // web already shows 2/2 on cpu-1: nothing to write.
        assert!(!by_name.contains_key("web"));
        // One GPU node is Ready and tolerated; the other is not Ready.
        let detector = by_name["detector"];
        assert_eq!(detector["readyReplicas"], 1);
        assert_eq!(detector["conditions"][0]["reason"], "Unschedulable");
        assert!(
            detector["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with("1/2 replicas scheduled: no node with 1 CPU")
        );
        // cpu-1 is full with web: late fits on the GPU node's spare CPUs only if it
        // tolerates the taint, which it does not.
        assert_eq!(by_name["late"]["readyReplicas"], 0);
        // Seen as written: the next pass writes nothing.
        let mut v = view(NODES, &deps);
        for (key, _, now) in out {
            v.workloads.get_mut(&key).unwrap().current = now;
        }
        assert!(place(&v).is_empty());
    }

    #[test]
    fn a_relist_replaces_what_the_watch_knew_once_it_is_complete() {
        let mut v = View::default();
        let slot = |name: &str| {
            let n: Node = serde_yaml_ng::from_str(&format!("metadata: {{name: {name}}}")).unwrap();
            (name.to_string(), Slot::of(n))
        };
        v.see(Seen::Node(watcher::Event::Init));
        v.see(Seen::Node(watcher::Event::InitApply(slot("a"))));
        v.see(Seen::Node(watcher::Event::InitDone));
        v.see(Seen::Workload(watcher::Event::InitDone));
        assert!(v.synced());
        v.see(Seen::Node(watcher::Event::Apply(slot("b"))));
        assert_eq!(v.nodes.len(), 2);
        // A relist after a lost watch: b went meanwhile.
        v.see(Seen::Node(watcher::Event::Init));
        v.see(Seen::Node(watcher::Event::InitApply(slot("a"))));
        assert_eq!(
            v.nodes.len(),
            2,
            "the old view holds until the list is complete"
        );
        v.see(Seen::Node(watcher::Event::InitDone));
        assert_eq!(v.nodes.keys().collect::<Vec<_>>(), ["a"]);
        v.see(Seen::Node(watcher::Event::Delete(slot("a"))));
        assert!(v.nodes.is_empty());
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("4"), 4.0);
        assert_eq!(parse_quantity("500m"), 0.5);
        assert_eq!(parse_quantity("8000Mi"), 8000.0 * 1048576.0);
        assert_eq!(parse_quantity("2Gi"), 2.0 * 1073741824.0);
        assert_eq!(parse_quantity("1k"), 1000.0);
    }
}
