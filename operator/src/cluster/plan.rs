//! Pure steps of the Cluster reconcile: requirements, batch planning, idempotency keys.

use std::collections::BTreeMap;

use kelp_cloud_drivers::{InstanceType, Machine, MachineState, Requirements, select, tags};
use kelp_crds::{Cluster, KubernetesMode, NodePool};
use kelp_recipes::{NodeRole, RecipeUse};
use sha2::{Digest, Sha256};

/// The pool name that tags a separate control-plane machine.
pub const CONTROL_PLANE_POOL: &str = "control-plane";
/// Tag marking the machine that runs the k3s server.
pub const ROLE_TAG: &str = kelp_cloud_drivers::tags::ROLE;

/// A pool's `machine` block as driver requirements.
pub fn requirements(pool: &NodePool) -> Requirements {
    let m = &pool.machine;
    let gpu = m.gpu.clone().unwrap_or_default();
    Requirements {
        instance_type: m.instance_type.clone(),
        cpu: m.cpu.map(|c| c.max(0) as u32),
        memory_mb: m.memory_mb.map(|v| v.max(0) as u64),
        disk_gb: m.disk_gb.map(|v| v.max(0) as u32),
        gpu_count: gpu.count.max(0) as u32,
        gpu_vendor: gpu.vendor,
        gpu_model: gpu.model,
        gpu_memory_mb: gpu.memory_mb.map(|v| v.max(0) as u64),
    }
}

/// Ownership tags of a Cluster's machines (pool None: every machine of the Cluster).
pub fn ownership_tags(uid: &str, pool: Option<&str>) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    t.insert(
        tags::MANAGED_BY.to_string(),
        tags::MANAGED_BY_VALUE.to_string(),
    );
    t.insert(tags::CLUSTER_UID.to_string(), uid.to_string());
    if let Some(pool) = pool {
        t.insert(tags::POOL.to_string(), pool.to_string());
    }
    t
}

/// What to do with one pool's machines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolPlan {
    /// Machines to create in one batch.
    pub create: u32,
    /// Extra machines to delete (pending ones first, then the newest).
    pub scale_down: Vec<String>,
    /// Machines the cloud gave up on: delete and replace.
    pub failed: Vec<String>,
    /// Machines alive (pending or running) after the plan, before creation.
    pub alive: u32,
}

/// Plans a pool: `desired` machines, given what the cloud lists for it. Machines being
/// terminated count for nothing; failed ones are replaced.
pub fn plan_pool(desired: u32, machines: &[Machine]) -> PoolPlan {
    let failed: Vec<String> = machines
        .iter()
        .filter(|m| m.state == MachineState::Failed)
        .map(|m| m.id.clone())
        .collect();
    let mut alive: Vec<&Machine> = machines
        .iter()
        .filter(|m| matches!(m.state, MachineState::Pending | MachineState::Running))
        .collect();
    let n = alive.len() as u32;
    if n > desired {
        // Pending before running, then newest first, then by id for determinism.
        alive.sort_by(|a, b| {
            let rank = |m: &Machine| (m.state == MachineState::Running) as u8;
            rank(a)
                .cmp(&rank(b))
                .then(b.created_at.cmp(&a.created_at))
                .then(b.id.cmp(&a.id))
        });
        let extra = (n - desired) as usize;
        PoolPlan {
            create: 0,
            scale_down: alive[..extra].iter().map(|m| m.id.clone()).collect(),
            failed,
            alive: desired,
        }
    } else {
        PoolPlan {
            create: desired - n,
            scale_down: Vec::new(),
            failed,
            alive: n,
        }
    }
}

/// The idempotency key of a batch: the same Cluster, pool, generation and count of machines
/// already alive give the same key, so a retried create is the same request to the cloud.
pub fn idempotency_key(
    uid: &str,
    pool: &str,
    generation: i64,
    alive: u32,
    attempt_type: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(format!("{uid}/{pool}/{generation}/{alive}/{attempt_type}"));
    format!("kelp-{}", &hex::encode(h.finalize())[..32])
}

/// `name-pool`, shortened to fit cloud name limits.
pub fn name_prefix(cluster: &str, pool: &str) -> String {
    let mut s = format!("{cluster}-{pool}");
    s.truncate(50);
    s.trim_end_matches('-').to_string()
}

/// What a separate control-plane machine needs: its explicit type, else 2 vCPUs and
/// 4 GB unless the spec asks for more.
pub fn control_plane_requirements(cp: &kelp_crds::ControlPlane) -> Requirements {
    Requirements {
        instance_type: cp.instance_type.clone(),
        cpu: Some(cp.cpu.unwrap_or(2).max(1) as u32),
        memory_mb: Some(cp.memory_mb.unwrap_or(4096).max(1) as u64),
        ..Default::default()
    }
}

/// Why pools (or the separate control plane) have no instance type that fits, one
/// message each naming the pool; empty when every one fits.
pub fn unsatisfiable(cluster: &Cluster, types: &[InstanceType]) -> Vec<String> {
    let mut out: Vec<String> = cluster
        .spec
        .node_pools
        .iter()
        .filter_map(|p| {
            select::candidates(types, &requirements(p))
                .err()
                .map(|e| format!("pool {}: {e}", p.name))
        })
        .collect();
    let k8s = &cluster.spec.kubernetes;
    let cp = k8s.control_plane.clone().unwrap_or_default();
    if k8s.mode == KubernetesMode::Provision
        && cp.pool.is_none()
        && let Err(e) = select::candidates(types, &control_plane_requirements(&cp))
    {
        out.push(format!("control plane: {e}"));
    }
    out
}

/// What a machine needs to join the cluster's Kubernetes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Join {
    pub server_url: String,
    pub token: String,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
}

/// The node recipes of a pool (None: the separate control-plane machine) for `role`:
/// the pool's list, or base + nvidia-gpu (with GPUs) by default; the k3s join recipe
/// for the role always comes last, once, keeping the pool's inputs for it.
pub fn node_recipes(cluster: &Cluster, pool: Option<&NodePool>, role: NodeRole) -> Vec<RecipeUse> {
    let gpu_count = pool.map_or(0, |p| p.machine.gpu_count().max(0) as u32);
    let (join, other) = match role {
        NodeRole::Server => ("k3s-server", "k3s-agent"),
        NodeRole::Agent => ("k3s-agent", "k3s-server"),
    };
    let mut uses = match pool.and_then(|p| p.recipes.as_ref()) {
        Some(list) => list
            .iter()
            .map(|r| RecipeUse {
                name: r.name.clone(),
                inputs: r.inputs.clone(),
            })
            .collect(),
        None => kelp_recipes::default_node_recipes(gpu_count, role),
    };
    let mut join_use = uses
        .iter()
        .find(|u| u.name == join)
        .cloned()
        .unwrap_or_else(|| RecipeUse::new(join));
    uses.retain(|u| u.name != join && u.name != other);
    // A CPU control plane still serves GPU agents: it must deploy the device plugin.
    let any_gpu = cluster
        .spec
        .node_pools
        .iter()
        .any(|p| p.machine.gpu_count() > 0);
    if role == NodeRole::Server && any_gpu && !join_use.inputs.contains_key("nvidiaDevicePlugin") {
        join_use
            .inputs
            .insert("nvidiaDevicePlugin".into(), "always".into());
    }
    uses.push(join_use);
    uses
}

/// The context node recipes render from.
pub fn node_context(
    cluster: &Cluster,
    pool: Option<&NodePool>,
    role: NodeRole,
    join: &Join,
) -> kelp_recipes::NodeContext {
    let gpu_count = pool.map_or(0, |p| p.machine.gpu_count().max(0) as u32);
    let vendor = pool
        .and_then(|p| p.machine.gpu.as_ref())
        .and_then(|g| g.vendor.clone());
    kelp_recipes::NodeContext {
        cluster: kelp_recipes::ClusterInfo {
            name: cluster.metadata.name.clone().unwrap_or_default(),
            namespace: cluster.metadata.namespace.clone().unwrap_or_default(),
            uid: cluster.metadata.uid.clone().unwrap_or_default(),
        },
        pool: kelp_recipes::PoolInfo {
            name: pool.map_or(CONTROL_PLANE_POOL.to_string(), |p| p.name.clone()),
            // The cluster-uid label lets kelp find its own Nodes in a shared cluster.
            labels: {
                let mut labels = pool.map(|p| p.labels.clone()).unwrap_or_default();
                labels.insert(
                    crate::sim_kube::NODE_CLUSTER_LABEL.to_string(),
                    cluster.metadata.uid.clone().unwrap_or_default(),
                );
                labels
            },
            taints: pool
                .map(|p| {
                    p.taints
                        .iter()
                        .map(|t| kelp_recipes::TaintInfo {
                            key: t.key.clone(),
                            value: t.value.clone(),
                            effect: format!("{:?}", t.effect),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            gpu_count,
            gpu_vendor: vendor.or_else(|| (gpu_count > 0).then(|| "NVIDIA".to_string())),
        },
        ssh_authorized_keys: cluster.spec.ssh_authorized_keys.clone(),
        kubernetes: kelp_recipes::KubernetesJoin {
            role,
            version: cluster.spec.kubernetes.version.clone(),
            server_url: join.server_url.clone(),
            token: join.token.clone(),
            ca_cert_pem: join.ca_cert_pem.clone(),
            ca_key_pem: (role == NodeRole::Server).then(|| join.ca_key_pem.clone()),
        },
    }
}

/// The user-data one machine of `pool` gets: its node recipes rendered and merged.
pub fn user_data(
    catalog: &kelp_recipes::Catalog,
    cluster: &Cluster,
    pool: Option<&NodePool>,
    role: NodeRole,
    join: &Join,
) -> Result<String, kelp_recipes::RecipeError> {
    let uses = node_recipes(cluster, pool, role);
    catalog.render_node(&uses, &node_context(cluster, pool, role, join))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machines(yaml: &str) -> Vec<Machine> {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const FIXTURE: &str = r#"
- {id: a, providerId: "sim:///a", name: p-a, instanceType: t, state: running, addresses: [], tags: {}, createdAt: "2026-01-01T00:00:01Z"}
- {id: b, providerId: "sim:///b", name: p-b, instanceType: t, state: running, addresses: [], tags: {}, createdAt: "2026-01-01T00:00:03Z"}
- {id: c, providerId: "sim:///c", name: p-c, instanceType: t, state: pending, addresses: [], tags: {}, createdAt: "2026-01-01T00:00:02Z"}
- {id: d, providerId: "sim:///d", name: p-d, instanceType: t, state: failed, addresses: [], tags: {}, createdAt: "2026-01-01T00:00:00Z"}
- {id: e, providerId: "sim:///e", name: p-e, instanceType: t, state: terminating, addresses: [], tags: {}, createdAt: "2026-01-01T00:00:00Z"}
"#;

    #[test]
    fn scale_up_creates_the_missing_ones_and_replaces_failed() {
        let plan = plan_pool(5, &machines(FIXTURE));
        assert_eq!(plan.create, 2);
        assert_eq!(plan.failed, vec!["d"]);
        assert!(plan.scale_down.is_empty());
    }

    #[test]
    fn scale_down_removes_pending_first_then_newest() {
        let plan = plan_pool(1, &machines(FIXTURE));
        assert_eq!(plan.create, 0);
        assert_eq!(plan.scale_down, vec!["c", "b"]);
        let plan = plan_pool(0, &machines(FIXTURE));
        assert_eq!(plan.scale_down, vec!["c", "b", "a"]);
    }

    #[test]
    fn steady_state_does_nothing() {
        let plan = plan_pool(3, &machines(FIXTURE));
        assert_eq!(
            plan,
            PoolPlan {
                create: 0,
                scale_down: vec![],
                failed: vec!["d".into()],
                alive: 3
            }
        );
    }

    #[test]
    fn idempotency_keys_are_stable_and_distinct() {
        let k = idempotency_key("uid", "gpu", 3, 1, "sim.t4-4");
        assert_eq!(k, idempotency_key("uid", "gpu", 3, 1, "sim.t4-4"));
        assert_ne!(k, idempotency_key("uid", "gpu", 3, 2, "sim.t4-4"));
        assert_ne!(k, idempotency_key("uid", "gpu", 4, 1, "sim.t4-4"));
        assert_ne!(k, idempotency_key("uid", "gpu", 3, 1, "sim.t4-8"));
        assert!(k.len() <= 64, "EC2 ClientToken limit");
    }

    const SINGLE_MACHINE: &str = r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {name: solo, namespace: research, uid: 4f1c}
spec:
  cloud: {sim: {}}
  kubernetes: {mode: Provision, controlPlane: {pool: gpu}}
  nodePools:
    - name: gpu
      replicas: 1
      machine: {cpu: 8, gpu: {count: 1, vendor: NVIDIA, model: T4}}
      labels: {kelp.imagine-ai.eu/accelerator: t4}
"#;

    fn join() -> Join {
        Join {
            server_url: "https://10.0.0.5:6443".into(),
            token: "tok".into(),
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            ca_key_pem: "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n".into(),
        }
    }

    #[test]
    fn default_recipes_end_with_the_join_recipe_for_the_role() {
        let c: Cluster = serde_yaml_ng::from_str(SINGLE_MACHINE).unwrap();
        let pool = &c.spec.node_pools[0];
        let names = |r: NodeRole| {
            node_recipes(&c, Some(pool), r)
                .into_iter()
                .map(|u| u.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(NodeRole::Server),
            ["base", "nvidia-gpu", "k3s-server"]
        );
        assert_eq!(names(NodeRole::Agent), ["base", "nvidia-gpu", "k3s-agent"]);
        // The separate CPU control plane of a cluster with GPU pools deploys the device plugin.
        let cp = node_recipes(&c, None, NodeRole::Server);
        assert_eq!(cp.last().unwrap().inputs["nvidiaDevicePlugin"], "always");
    }

    #[test]
    fn a_pools_own_list_keeps_its_join_inputs_and_drops_the_wrong_role() {
        let mut c: Cluster = serde_yaml_ng::from_str(SINGLE_MACHINE).unwrap();
        c.spec.node_pools[0].recipes = Some(
            serde_yaml_ng::from_str(
                "[{name: k3s-agent, inputs: {x: 1}}, {name: base}, {name: k3s-server}]",
            )
            .unwrap(),
        );
        let uses = node_recipes(&c, Some(&c.spec.node_pools[0]), NodeRole::Agent);
        assert_eq!(
            uses.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            ["base", "k3s-agent"]
        );
        assert_eq!(uses[1].inputs["x"], 1);
    }

    #[test]
    fn a_single_gpu_machine_is_a_whole_cluster() {
        // controlPlane.pool: the pool's first machine runs the k3s server, the NVIDIA stack
        // and the device plugin, and takes workloads: the single-VM case.
        let c: Cluster = serde_yaml_ng::from_str(SINGLE_MACHINE).unwrap();
        let catalog = kelp_recipes::Catalog::builtin();
        let text = user_data(
            &catalog,
            &c,
            Some(&c.spec.node_pools[0]),
            NodeRole::Server,
            &join(),
        )
        .unwrap();
        assert!(text.starts_with("#cloud-config\n"));
        let doc: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        let all = text.as_str();
        assert!(all.contains("get.k3s.io"), "k3s installed");
        assert!(
            all.contains("server-ca.crt"),
            "the operator's CA written for the server"
        );
        assert!(all.contains("nvidia-container-toolkit"), "GPU stack");
        assert!(all.contains("k8s-device-plugin"), "device plugin deployed");
        assert!(
            !all.contains("noSchedule")
                && !all.contains("node-role.kubernetes.io/control-plane:NoSchedule"),
            "the server takes workloads"
        );
        assert!(
            all.contains("kelp.imagine-ai.eu/pool"),
            "pool label for workload placement"
        );
        let runcmd = doc["runcmd"].as_array().unwrap();
        assert!(
            runcmd
                .last()
                .unwrap()
                .to_string()
                .contains("cloud-init-done"),
            "completion marker last"
        );
    }

    #[test]
    fn requirements_from_a_pool() {
        let pool: NodePool = serde_yaml_ng::from_str(
            "{name: gpu, machine: {cpu: 4, memoryMB: 16000, gpu: {count: 1, vendor: NVIDIA, model: T4}}}",
        )
        .unwrap();
        let r = requirements(&pool);
        assert_eq!(r.cpu, Some(4));
        assert_eq!(r.gpu_count, 1);
        assert_eq!(r.gpu_model.as_deref(), Some("T4"));
        let cpu: NodePool = serde_yaml_ng::from_str("{name: cpu}").unwrap();
        assert_eq!(requirements(&cpu).gpu_count, 0);
    }
}
