//! Pure steps of the Cluster reconcile: requirements, batch planning, idempotency keys.

use std::collections::BTreeMap;

use kelp_cloud_drivers::{Machine, MachineState, Requirements, tags};
use kelp_crds::NodePool;
use sha2::{Digest, Sha256};

/// The pool name that tags a separate control-plane machine.
pub const CONTROL_PLANE_POOL: &str = "control-plane";
/// Tag marking the machine that runs the k3s server.
pub const ROLE_TAG: &str = "kelp.imagine-ai.eu/role";

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
pub fn ownership_tags(
    uid: &str,
    namespace: &str,
    name: &str,
    pool: Option<&str>,
) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    t.insert(
        tags::MANAGED_BY.to_string(),
        tags::MANAGED_BY_VALUE.to_string(),
    );
    t.insert(tags::CLUSTER_UID.to_string(), uid.to_string());
    if let Some(pool) = pool {
        t.insert(tags::POOL.to_string(), pool.to_string());
    }
    // Kept out of list filters: a renamed namespace/name must not hide machines.
    let _ = (namespace, name);
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
