//! Pure steps of the Cluster reconcile: requirements, batch planning, idempotency keys.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kelp_cloud_drivers::{InstanceType, Machine, MachineState, Owner, Requirements, Role, select};
use kelp_crds::{Cluster, KubernetesMode, NodePool, PendingCreate};
use kelp_recipes::{NodeRole, RecipeUse};
use sha2::{Digest, Sha256};

pub mod demand;

/// The pool name that tags a separate control-plane machine.
pub const CONTROL_PLANE_POOL: &str = "control-plane";

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

/// The owner of a Cluster's machines (pool None: every machine of the Cluster).
pub fn owner(uid: &str, pool: Option<&str>) -> Owner {
    match pool {
        Some(p) => Owner::pool(uid, p),
        None => Owner::cluster(uid),
    }
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
    /// Extra machines kept for now because they are younger than the grace period.
    pub held: u32,
}

/// Plans a pool: `desired` machines, given what the cloud lists for it. Machines being
/// terminated count for nothing; failed ones are replaced.
pub fn plan_pool(desired: u32, machines: &[Machine]) -> PoolPlan {
    plan_pool_with(desired, machines, 0, |_| true)
}

/// [`plan_pool`] with the machines of batches asked for but not listed yet (`in_flight`,
/// which count as alive), and with extra machines removed only once `settled` (older
/// than the grace period in which a cloud may still be catching up): a young extra is
/// kept, and counted in `held`, until then.
pub fn plan_pool_with(
    desired: u32,
    machines: &[Machine],
    in_flight: u32,
    settled: impl Fn(&Machine) -> bool,
) -> PoolPlan {
    let mut plan = plan_listed(desired, machines);
    if plan.create > 0 {
        plan.create = plan.create.saturating_sub(in_flight);
    }
    let by_id: BTreeMap<&str, &Machine> = machines.iter().map(|m| (m.id.as_str(), m)).collect();
    let (go, young): (Vec<String>, Vec<String>) = plan
        .scale_down
        .into_iter()
        .partition(|id| by_id.get(id.as_str()).is_none_or(|m| settled(m)));
    plan.held = young.len() as u32;
    plan.alive += plan.held;
    plan.scale_down = go;
    plan
}

fn plan_listed(desired: u32, machines: &[Machine]) -> PoolPlan {
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
            held: 0,
        }
    } else {
        PoolPlan {
            create: desired - n,
            scale_down: Vec::new(),
            failed,
            alive: n,
            held: 0,
        }
    }
}

/// Machines of the pending batches for `pool` that the cloud does not list yet, counting
/// only batches younger than `grace`.
pub fn in_flight(
    pending: &[PendingCreate],
    pool: &str,
    listed: &[Machine],
    now: Timestamp,
    grace: std::time::Duration,
) -> u32 {
    pending
        .iter()
        .filter(|p| p.pool == pool && young(&p.requested_at, now, grace))
        .map(|p| (p.count.max(0) as u32).saturating_sub(visible(p, listed)))
        .sum()
}

/// The pending batches still to wait for: younger than `grace` and not fully listed.
/// A batch the cloud lists goes; so does one it has not shown within the grace period
/// (the cloud never made it, and asking again is safe).
pub fn still_pending(
    pending: &[PendingCreate],
    listed: &[Machine],
    now: Timestamp,
    grace: std::time::Duration,
) -> Vec<PendingCreate> {
    let mut out: Vec<PendingCreate> = pending
        .iter()
        .filter(|p| {
            young(&p.requested_at, now, grace) && visible(p, listed) < p.count.max(0) as u32
        })
        .cloned()
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| a.key == b.key);
    out
}

fn visible(p: &PendingCreate, listed: &[Machine]) -> u32 {
    listed
        .iter()
        .filter(|m| m.batch() == Some(p.key.as_str()))
        .count() as u32
}

/// Whether an extra machine of `pool` may go now: while a batch of the pool is pending,
/// the cloud's list is not to be trusted, and extras younger than the grace period are
/// kept until they are older.
pub fn settled(
    pending: &[PendingCreate],
    pool: &str,
    now: Timestamp,
    grace: std::time::Duration,
) -> impl Fn(&Machine) -> bool + use<> {
    let unsure = pending.iter().any(|p| p.pool == pool);
    move |m: &Machine| !unsure || !young(&m.created_at, now, grace)
}

/// Whether an RFC 3339 time lies less than `grace` before `now`; an unreadable time
/// counts as old.
pub fn young(at: &str, now: Timestamp, grace: std::time::Duration) -> bool {
    at.parse::<Timestamp>().is_ok_and(|t| {
        now.duration_since(t)
            < k8s_openapi::jiff::SignedDuration::try_from(grace).unwrap_or_default()
    })
}

/// Machines a roll may run beyond `desired`: `maxSurge` as a number, or a percentage of
/// `desired` rounded up; at least 1. An unreadable value counts as the default, 25%.
pub fn max_surge(surge: &kelp_crds::IntOrPercent, desired: u32) -> u32 {
    let n = match surge {
        kelp_crds::IntOrPercent::Int(n) => (*n).max(0) as u32,
        kelp_crds::IntOrPercent::Percent(p) => {
            let pct: u32 = p.trim_end_matches('%').parse().unwrap_or(25);
            (desired * pct).div_ceil(100)
        }
    };
    n.max(1)
}

/// One step of replacing `outdated` machines (a type that no longer meets the pool's
/// requirements) with `current` ones, never running more than `desired + surge` at once
/// and never fewer than `desired` running while the old ones still serve.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RollStep {
    /// New machines the surge allows now (at most what the pool plan wants).
    pub create: u32,
    /// Outdated machines to delete now.
    pub delete: Vec<String>,
}

pub fn roll_step(
    desired: u32,
    surge: u32,
    current: &[Machine],
    outdated: &[Machine],
    in_flight: u32,
    wanted: u32,
) -> RollStep {
    let alive = |m: &&Machine| matches!(m.state, MachineState::Pending | MachineState::Running);
    let cur_alive = current.iter().filter(alive).count() as u32 + in_flight;
    let cur_running = current
        .iter()
        .filter(|m| m.state == MachineState::Running)
        .count() as u32;
    let mut old: Vec<&Machine> = outdated.iter().filter(alive).collect();
    // Pending old machines go first (they serve nothing), then the oldest.
    old.sort_by(|a, b| {
        let rank = |m: &Machine| (m.state == MachineState::Running) as u8;
        rank(a)
            .cmp(&rank(b))
            .then(a.created_at.cmp(&b.created_at))
            .then(a.id.cmp(&b.id))
    });
    let old_running = old
        .iter()
        .filter(|m| m.state == MachineState::Running)
        .count() as u32;
    let old_pending = old.len() as u32 - old_running;
    // Running machines beyond `desired` may go; pending old ones always may.
    let spare = (cur_running + old_running).saturating_sub(desired);
    let n_delete = (old_pending + spare).min(old.len() as u32);
    let delete: Vec<String> = old[..n_delete as usize]
        .iter()
        .map(|m| m.id.clone())
        .collect();
    let old_left = old.len() as u32 - n_delete;
    let room = (desired + surge).saturating_sub(cur_alive + old_left);
    RollStep {
        create: wanted.min(room),
        delete,
    }
}

/// The idempotency key of a batch: the Cluster, pool, generation, count of machines
/// already alive, type, and when the batch was first asked for (`at`). The key is recorded
/// in `status.pendingCreates` before the cloud is asked, and a batch is not asked for
/// again while that record is young, so a crash or a retry never sends a second request
/// for it; `at` keeps a later batch of the same shape (a pool that follows demand grows,
/// shrinks and grows again at one generation) from being taken by the cloud for the old
/// one, whose machines are gone.
pub fn idempotency_key(
    uid: &str,
    pool: &str,
    generation: i64,
    alive: u32,
    attempt_type: &str,
    at: Timestamp,
) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "{uid}/{pool}/{generation}/{alive}/{attempt_type}/{}",
        at.as_nanosecond()
    ));
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
                    crate::simulated::NODE_CLUSTER_LABEL.to_string(),
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

/// What the reconcile read before planning the pools: the cloud's types and machines,
/// and the batches asked for but not yet listed.
pub struct Observed<'a> {
    /// The instance types the Cluster's cloud offers.
    pub types: &'a [InstanceType],
    /// Each pool's machines as listed, in the order of `spec.nodePools`.
    pub machines: &'a [Vec<Machine>],
    /// Batches asked for and not yet listed (from the status and this process's memory).
    pub pending: &'a [PendingCreate],
    /// Whether the control plane takes joins: without it, nothing is created.
    pub can_join: bool,
    /// When the reconcile started.
    pub now: Timestamp,
    /// How long a batch, or a new machine, may take to show in the cloud's list.
    pub grace: std::time::Duration,
    /// The kelp Deployments each pool carries, in the order of `spec.nodePools` (pools
    /// with `autoscaling` are sized from them); None while they are not known.
    pub wants: Option<&'a [Vec<demand::Want>]>,
    /// What the target cluster shows of each machine (by machine id), for scale-down;
    /// empty when it could not be read.
    pub usage: &'a BTreeMap<String, demand::Usage>,
    /// What the Cluster's machines outside the pools (the separate control plane) cost
    /// per hour: part of the total a budget caps.
    pub other_price_per_hour: f64,
}

/// Why machines are deleted: the Event and its wording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// The cloud reports the machines failed; they are replaced.
    Failed,
    /// The server machine failed; it is replaced.
    ServerFailed,
    /// A second server machine (pool with the k3s server).
    ExtraServer,
    /// More machines than the pool's `replicas`.
    ScaleDown { to: u32 },
    /// More machines than demand needs, idle for at least the scale-down delay.
    Idle { to: u32, delay_s: u64 },
    /// Their type no longer meets the pool's requirements (a roll).
    Replaced,
}

impl DeleteReason {
    /// The Event's reason.
    pub fn event_reason(&self) -> &'static str {
        match self {
            DeleteReason::Failed | DeleteReason::ServerFailed => "MachineFailed",
            DeleteReason::ExtraServer
            | DeleteReason::ScaleDown { .. }
            | DeleteReason::Idle { .. } => "MachinesDeleted",
            DeleteReason::Replaced => "MachinesReplaced",
        }
    }

    /// What the Event says of the machines.
    pub fn why(&self) -> String {
        match self {
            DeleteReason::Failed => {
                "the cloud reports these machines failed; replacing them".into()
            }
            DeleteReason::ServerFailed => "replacing the failed server machine".into(),
            DeleteReason::ExtraServer => "removing an extra server machine".into(),
            DeleteReason::ScaleDown { to } => format!("scaling down to {to}"),
            DeleteReason::Idle { to, delay_s } => format!(
                "scaling down to {to} for demand; no kelp workload on them for at least {delay_s}s"
            ),
            DeleteReason::Replaced => {
                "their instance type no longer meets the pool's requirements".into()
            }
        }
    }
}

/// Machines to delete, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub ids: Vec<String>,
    pub reason: DeleteReason,
}

/// One batch to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Create {
    /// The pool the batch counts for: the pool, or `<pool>-server` for its server.
    pub batch_pool: String,
    pub role: Role,
    pub count: u32,
    /// Machines of the batch pool alive before it (part of the idempotency key).
    pub alive: u32,
}

/// What to do with one pool, in order: deletes, then creates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolActions {
    /// The machines the pool should have (`replicas`).
    pub desired: u32,
    /// The types that fit, best first, the type the pool already runs ahead of the rest:
    /// a batch tries them in this order when the cloud has no capacity.
    pub candidates: Vec<InstanceType>,
    pub deletes: Vec<Delete>,
    pub creates: Vec<Create>,
    /// Batch pools with extra machines kept until they are older than the grace period.
    pub held: Vec<String>,
    /// Set while machines of a type that no longer fits are being replaced.
    pub rolling: Option<String>,
    /// Why the pool has this size, when it follows demand.
    pub demand: Option<String>,
    /// A pool that follows demand has had machines (see `NodePoolStatus::started`).
    pub started: bool,
    /// Since when each machine (by name) has carried no kelp workload, in pools with
    /// `autoscaling`.
    pub idle_since: BTreeMap<String, String>,
    /// Machines the budget kept from being created, and why.
    pub over_budget: Option<String>,
    /// When the next extra idle machine will have been idle for the scale-down delay.
    pub scale_down_in: Option<std::time::Duration>,
}

/// The plan for every pool of the Cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// One entry per `spec.nodePools`, in that order.
    pub pools: Vec<PoolActions>,
}

/// Plans every pool of the Cluster from what was observed. Pure: the rules for how a
/// pool scales live here (the server-machine rule, the roll of outdated types within
/// `maxSurge`, the order types are tried in, and which machines go on scale-down).
pub fn plan(cluster: &Cluster, observed: &Observed) -> Plan {
    let pools = cluster
        .spec
        .node_pools
        .iter()
        .enumerate()
        .map(|(i, pool)| {
            let machines = observed.machines.get(i).map_or(&[][..], Vec::as_slice);
            plan_one(cluster, pool, i, machines, observed)
        })
        .collect();
    let mut plan = Plan { pools };
    if let Some(b) = &cluster.spec.budget {
        within_budget(&mut plan, cluster, observed, b.max_price_per_hour);
    }
    plan
}

/// The price per hour of one machine of `type_name`, when the cloud's table has it.
pub fn price_of(types: &[InstanceType], type_name: &str) -> Option<f64> {
    types
        .iter()
        .find(|t| t.name == type_name)
        .and_then(|t| t.price_per_hour)
}

/// Trims the plan's creates so that the Cluster's estimated price per hour stays within
/// `cap`: what its machines cost now (the control plane, alive pool machines and batches
/// in flight, after this plan's deletes), plus each create in pool order while it fits. Machines already there are
/// never deleted for the budget. A pool whose type has no known price creates nothing
/// while a budget is set.
fn within_budget(plan: &mut Plan, cluster: &Cluster, o: &Observed, cap: f64) {
    let mut total = o.other_price_per_hour;
    for (i, actions) in plan.pools.iter().enumerate() {
        let machines = o.machines.get(i).map_or(&[][..], Vec::as_slice);
        let gone: std::collections::HashSet<&String> = actions.deleted().collect();
        for m in machines {
            if matches!(m.state, MachineState::Pending | MachineState::Running)
                && !gone.contains(&m.id)
            {
                total += price_of(o.types, &m.instance_type).unwrap_or_default();
            }
        }
        let pool = &cluster.spec.node_pools[i];
        let flying: u32 = [pool.name.clone(), format!("{}-server", pool.name)]
            .iter()
            .map(|bp| in_flight(o.pending, bp, machines, o.now, o.grace))
            .sum();
        let t = actions.candidates.first().map(|t| t.name.as_str());
        total += f64::from(flying) * t.and_then(|t| price_of(o.types, t)).unwrap_or_default();
    }
    for (i, actions) in plan.pools.iter_mut().enumerate() {
        let pool = &cluster.spec.node_pools[i].name;
        let Some(t) = actions.candidates.first().cloned() else {
            continue;
        };
        let wanted: u32 = actions.creates.iter().map(|c| c.count).sum();
        if wanted == 0 {
            continue;
        }
        let Some(price) = t.price_per_hour else {
            actions.creates.clear();
            actions.over_budget = Some(format!(
                "pool {pool}: {wanted} machine(s) of type {} not created: its price is not known, and the Cluster has a budget of {cap:.2} per hour",
                t.name
            ));
            continue;
        };
        let mut allowed = 0u32;
        while allowed < wanted && total + price * f64::from(allowed + 1) <= cap + 1e-9 {
            allowed += 1;
        }
        if allowed < wanted {
            let reach = total + price * f64::from(wanted);
            actions.over_budget = Some(format!(
                "pool {pool}: {} more machine(s) of type {} would take the Cluster to {reach:.2} per hour, over its budget of {cap:.2}",
                wanted - allowed,
                t.name
            ));
            let mut left = allowed;
            for c in &mut actions.creates {
                c.count = c.count.min(left);
                left -= c.count;
            }
            actions.creates.retain(|c| c.count > 0);
        }
        total += price * f64::from(allowed);
    }
}

/// Whether `pool` also runs the k3s server (a provisioned cluster without a separate
/// control-plane machine).
pub fn runs_server(cluster: &Cluster, pool: &NodePool) -> bool {
    let k = &cluster.spec.kubernetes;
    k.mode == KubernetesMode::Provision
        && k.control_plane.as_ref().and_then(|c| c.pool.as_deref()) == Some(pool.name.as_str())
}

fn plan_one(
    cluster: &Cluster,
    pool: &NodePool,
    index: usize,
    machines: &[Machine],
    o: &Observed,
) -> PoolActions {
    let mut desired = pool.replicas.max(0) as u32;
    // An unfit pool is Stalled by `unsatisfiable`: nothing to create, but the machines
    // already there are still reported.
    let mut candidates: Vec<InstanceType> = select::candidates(o.types, &requirements(pool))
        .map(|c| c.into_iter().cloned().collect())
        .unwrap_or_default();
    let fits: std::collections::HashSet<String> =
        candidates.iter().map(|t| t.name.clone()).collect();
    // Prefer the type the pool already runs, so a pool does not flip between types.
    if let Some(current) = machines
        .iter()
        .find(|m| matches!(m.state, MachineState::Pending | MachineState::Running))
        && let Some(pos) = candidates
            .iter()
            .position(|t| t.name == current.instance_type)
    {
        let t = candidates.remove(pos);
        candidates.insert(0, t);
    }
    let previous = cluster
        .status
        .as_ref()
        .and_then(|s| s.node_pools.iter().find(|p| p.name == pool.name));
    let mut idle_since = BTreeMap::new();
    let mut demand_known = true;
    let mut demand_text = None;
    if let Some(bounds) = &pool.autoscaling {
        // The pool follows demand: its size comes from the Deployments it carries.
        match o.wants.and_then(|w| w.get(index)) {
            Some(wants) => {
                // `replicas` is the starting size until the pool first has machines.
                let start = !previous.is_some_and(|p| p.started) && machines.is_empty();
                let s = demand::size(pool, bounds, candidates.first(), wants, start);
                desired = s.desired;
                demand_text = Some(s.message);
            }
            None => {
                // Not known yet (the Deployments are still being read): keep the size.
                demand_known = false;
                desired = previous.map_or(desired, |p| p.desired.max(0) as u32);
                demand_text = Some(format!(
                    "{desired} machine(s), kept while the Deployments on the pool are read"
                ));
            }
        }
        let now = o.now.to_string();
        let before: BTreeMap<&str, &str> = previous
            .map(|p| {
                p.machines
                    .iter()
                    .filter_map(|m| Some((m.name.as_str(), m.idle_since.as_deref()?)))
                    .collect()
            })
            .unwrap_or_default();
        for m in machines {
            if m.state == MachineState::Terminating {
                continue;
            }
            if let Some(t) = demand::idle_since(
                m,
                o.usage.get(&m.id),
                before.get(m.name.as_str()).copied(),
                &now,
            ) {
                idle_since.insert(m.name.clone(), t);
            }
        }
    }
    let started =
        pool.autoscaling.is_some() && (previous.is_some_and(|p| p.started) || !machines.is_empty());
    let mut out = PoolActions {
        desired,
        candidates,
        demand: demand_text,
        idle_since,
        started,
        ..Default::default()
    };
    if !o.can_join || out.candidates.is_empty() {
        return out;
    }
    let in_flight = |batch_pool: &str, listed: &[Machine]| {
        in_flight(o.pending, batch_pool, listed, o.now, o.grace)
    };
    let settled = |batch_pool: &str| settled(o.pending, batch_pool, o.now, o.grace);
    let (servers, rest): (Vec<Machine>, Vec<Machine>) =
        machines.iter().cloned().partition(Machine::is_server);

    // The k3s server of a single-machine style cluster is the pool's first machine.
    let mut agents_desired = desired;
    if runs_server(cluster, pool) && desired > 0 {
        agents_desired -= 1;
        let server_pool = format!("{}-server", pool.name);
        let s = plan_pool_with(
            1,
            &servers,
            in_flight(&server_pool, &servers),
            settled(&server_pool),
        );
        if s.held > 0 {
            out.held.push(server_pool.clone());
        }
        out.push_delete(s.failed, DeleteReason::ServerFailed);
        out.push_delete(s.scale_down, DeleteReason::ExtraServer);
        if s.create > 0 {
            out.creates.push(Create {
                batch_pool: server_pool,
                role: Role::Server,
                count: 1,
                alive: 0,
            });
        }
    }

    // Machines of a type that no longer meets the pool's requirements are replaced: new
    // ones first, the old ones go once enough new ones run.
    let (agents, outdated): (Vec<Machine>, Vec<Machine>) = rest
        .into_iter()
        .partition(|m| fits.contains(&m.instance_type) || m.state == MachineState::Terminating);
    let outdated: Vec<Machine> = outdated
        .into_iter()
        .filter(|m| m.state != MachineState::Terminating)
        .collect();
    let flying = in_flight(&pool.name, &agents);
    let mut p = plan_pool_with(agents_desired, &agents, flying, settled(&pool.name));
    if p.held > 0 {
        out.held.push(pool.name.clone());
    }
    if !outdated.is_empty() {
        // A roll, in steps of at most maxSurge extra machines.
        let surge = max_surge(&pool.max_surge(), agents_desired);
        let step = roll_step(agents_desired, surge, &agents, &outdated, flying, p.create);
        p.create = step.create;
        out.rolling = Some(format!(
            "pool {}: replacing {} machine(s) whose type no longer fits, at most {surge} extra at a time (maxSurge)",
            pool.name,
            outdated.len()
        ));
        out.push_delete(step.delete, DeleteReason::Replaced);
    }
    if let Some(bounds) = &pool.autoscaling {
        // Scale-down for demand: only machines idle for the delay, emptiest first; none
        // while demand is not known.
        let delay = bounds.scale_down_delay();
        let idle = |m: &Machine| {
            let since: Timestamp = out.idle_since.get(&m.name)?.parse().ok()?;
            let for_ =
                std::time::Duration::try_from(o.now.duration_since(since)).unwrap_or_default();
            let pods = o.usage.get(&m.id).and_then(|u| u.kelp_pods).unwrap_or(0);
            Some((for_, pods))
        };
        let alive_now = agents
            .iter()
            .filter(|m| matches!(m.state, MachineState::Pending | MachineState::Running))
            .count() as u32;
        let mut go = Vec::new();
        if demand_known && alive_now > agents_desired {
            // A young extra stays while the cloud may still be catching up (as above).
            let ok = settled(&pool.name);
            go = demand::removable(agents_desired, &agents, idle, delay)
                .into_iter()
                .filter(|id| agents.iter().any(|m| &m.id == id && ok(m)))
                .collect();
            // When the next idle machine will have waited long enough.
            out.scale_down_in = agents
                .iter()
                .filter(|m| !go.contains(&m.id))
                .filter_map(|m| idle(m).map(|(for_, _)| delay.saturating_sub(for_)))
                .filter(|left| !left.is_zero())
                .min();
        }
        if alive_now > agents_desired {
            p.alive = alive_now - go.len() as u32;
            p.held = 0;
            out.held.retain(|h| h != &pool.name);
        }
        p.scale_down = Vec::new();
        out.push_delete(
            go,
            DeleteReason::Idle {
                to: desired,
                delay_s: delay.as_secs(),
            },
        );
    }
    out.push_delete(p.failed, DeleteReason::Failed);
    out.push_delete(p.scale_down, DeleteReason::ScaleDown { to: desired });
    if p.create > 0 {
        out.creates.push(Create {
            batch_pool: pool.name.clone(),
            role: Role::Agent,
            count: p.create,
            alive: p.alive,
        });
    }
    out
}

impl PoolActions {
    fn push_delete(&mut self, ids: Vec<String>, reason: DeleteReason) {
        if !ids.is_empty() {
            self.deletes.push(Delete { ids, reason });
        }
    }

    /// Every machine the plan deletes.
    pub fn deleted(&self) -> impl Iterator<Item = &String> {
        self.deletes.iter().flat_map(|d| d.ids.iter())
    }
}

#[cfg(test)]
mod fixtures;

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
                alive: 3,
                held: 0,
            }
        );
    }

    fn now() -> Timestamp {
        "2026-01-01T00:00:10Z".parse().unwrap()
    }

    const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

    fn pending(yaml: &str) -> Vec<PendingCreate> {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    /// Two batches for pool p: k1 (3 machines, 8 s ago, 1 listed) is past the grace of
    /// 5 s; k2 (2 machines, 2 s ago, none listed) is not.
    const PENDING: &str = r#"
- {key: k1, pool: p, count: 3, instanceType: t, requestedAt: "2026-01-01T00:00:02Z"}
- {key: k2, pool: p, count: 2, instanceType: t, requestedAt: "2026-01-01T00:00:08Z"}
- {key: k3, pool: other, count: 4, instanceType: t, requestedAt: "2026-01-01T00:00:09Z"}
"#;

    const LISTED: &str = r#"
- {id: x, providerId: "sim:///x", name: p-x, instanceType: t, state: pending, addresses: [], tags: {kelp.imagine-ai.eu/batch: k1}, createdAt: "2026-01-01T00:00:03Z"}
- {id: y, providerId: "sim:///y", name: p-y, instanceType: t, state: running, addresses: [], tags: {}, createdAt: "2026-01-01T00:00:01Z"}
"#;

    #[test]
    fn batches_not_listed_yet_count_as_alive_until_the_grace_ends() {
        let (p, listed) = (pending(PENDING), machines(LISTED));
        // k1 is past its grace; k2's 2 machines are in flight; k3 is another pool's.
        assert_eq!(in_flight(&p, "p", &listed, now(), GRACE), 2);
        // 4 wanted, 2 listed alive, 2 in flight: nothing to create.
        let plan = plan_pool_with(4, &listed, 2, |_| true);
        assert_eq!(plan.create, 0);
        // Once the grace has passed, k2 no longer holds creation back.
        let later: Timestamp = "2026-01-01T00:00:30Z".parse().unwrap();
        assert_eq!(in_flight(&p, "p", &listed, later, GRACE), 0);
    }

    #[test]
    fn a_pending_batch_goes_once_listed_or_once_its_grace_ends() {
        let mut p = pending(PENDING);
        let keys = |v: Vec<PendingCreate>| v.into_iter().map(|p| p.key).collect::<Vec<_>>();
        assert_eq!(
            keys(still_pending(&p, &machines(LISTED), now(), GRACE)),
            ["k2", "k3"]
        );
        // k2 fully listed.
        p[1].requested_at = "2026-01-01T00:00:09Z".into();
        let mut listed = machines(LISTED);
        for id in ["v", "w"] {
            let mut m = listed[0].clone();
            m.id = id.into();
            m.tags
                .insert(kelp_cloud_drivers::tags::BATCH.into(), "k2".into());
            listed.push(m);
        }
        assert_eq!(keys(still_pending(&p, &listed, now(), GRACE)), ["k3"]);
    }

    #[test]
    fn young_extra_machines_are_held_until_the_grace_ends() {
        let listed = machines(FIXTURE);
        let settled = |m: &Machine| m.created_at.as_str() < "2026-01-01T00:00:02Z";
        // 1 wanted: c (pending, 00:02) and b (00:03) are extra and both young.
        let plan = plan_pool_with(1, &listed, 0, settled);
        assert!(plan.scale_down.is_empty(), "{plan:?}");
        assert_eq!(plan.held, 2);
        // 0 wanted: a (00:01) is settled and goes now; c and b wait.
        let plan = plan_pool_with(0, &listed, 0, settled);
        assert_eq!(plan.scale_down, vec!["a"]);
        assert_eq!(plan.held, 2);
    }

    #[test]
    fn max_surge_is_a_number_or_a_rounded_up_percentage_and_at_least_one() {
        use kelp_crds::IntOrPercent::*;
        assert_eq!(max_surge(&Percent("25%".into()), 100), 25);
        assert_eq!(max_surge(&Percent("25%".into()), 5), 2);
        assert_eq!(max_surge(&Percent("25%".into()), 1), 1);
        assert_eq!(max_surge(&Percent("0%".into()), 10), 1);
        assert_eq!(max_surge(&Int(3), 10), 3);
        assert_eq!(max_surge(&Int(0), 10), 1);
    }

    fn fleet(prefix: &str, kind: &str, running: usize, pending: usize) -> Vec<Machine> {
        let mut yaml = String::new();
        for i in 0..running + pending {
            let state = if i < running { "running" } else { "pending" };
            yaml.push_str(&format!(
                "- {{id: {prefix}{i}, providerId: \"sim:///{prefix}{i}\", name: n, instanceType: {kind}, state: {state}, addresses: [], tags: {{}}, createdAt: \"2026-01-01T00:00:0{i}Z\"}}\n"
            ));
        }
        machines(&yaml)
    }

    #[test]
    fn a_roll_never_runs_more_than_desired_plus_surge() {
        // 4 old machines, none new yet, surge 1: one new machine, nothing deleted.
        let old = fleet("o", "old", 4, 0);
        let step = roll_step(4, 1, &[], &old, 0, 4);
        assert_eq!(
            step,
            RollStep {
                create: 1,
                delete: vec![]
            }
        );
        // The new one is still booting (or in flight): nothing more to do.
        let new = fleet("n", "new", 0, 1);
        assert_eq!(roll_step(4, 1, &new, &old, 0, 3), RollStep::default());
        assert_eq!(roll_step(4, 1, &[], &old, 1, 3), RollStep::default());
        // It runs: the oldest old one goes, and the next new one may start.
        let new = fleet("n", "new", 1, 0);
        let step = roll_step(4, 1, &new, &old, 0, 3);
        assert_eq!(
            step,
            RollStep {
                create: 1,
                delete: vec!["o0".into()]
            }
        );
        // All new ones run: the rest of the old ones go.
        let new = fleet("n", "new", 4, 0);
        let step = roll_step(4, 1, &new, &old[3..], 0, 0);
        assert_eq!(
            step,
            RollStep {
                create: 0,
                delete: vec!["o3".into()]
            }
        );
        // A surge of 25% of 100 starts 25 at once, never 100.
        let old = fleet("o", "old", 100, 0);
        assert_eq!(roll_step(100, 25, &[], &old, 0, 100).create, 25);
    }

    #[test]
    fn idempotency_keys_are_stable_and_distinct() {
        let t: Timestamp = "2026-01-01T09:00:00Z".parse().unwrap();
        // A pool can shrink and grow again within one second.
        let later: Timestamp = "2026-01-01T09:00:00.3Z".parse().unwrap();
        let k = idempotency_key("uid", "gpu", 3, 1, "sim.t4-4", t);
        assert_eq!(k, idempotency_key("uid", "gpu", 3, 1, "sim.t4-4", t));
        assert_ne!(k, idempotency_key("uid", "gpu", 3, 2, "sim.t4-4", t));
        assert_ne!(k, idempotency_key("uid", "gpu", 4, 1, "sim.t4-4", t));
        assert_ne!(k, idempotency_key("uid", "gpu", 3, 1, "sim.t4-8", t));
        // The same shape asked for again later (after a scale-down) is a new batch.
        assert_ne!(k, idempotency_key("uid", "gpu", 3, 1, "sim.t4-4", later));
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
