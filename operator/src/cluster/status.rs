//! The Cluster's status from what one reconcile found and did. Pure: no I/O, so every
//! phase and condition is reachable from a fixture (see the tests below).
//!
//! Phases:
//! - `Pending`: nothing made yet (no machine listed, no batch asked for), not stalled;
//! - `Provisioning`: machines or the control plane on their way for this generation;
//! - `Ready`: every machine runs and is a Ready Node, the control plane answers;
//! - `Degraded`: it was Ready for this generation and no longer is (a machine failed or
//!   left); a spec change (new generation) is Provisioning again;
//! - `Failed`: Stalled, a change of the spec or a Secret is needed;
//! - `Deleting` is set by the cleanup, not here.

use kelp_cloud_drivers::{InstanceType, Machine, MachineState};
use kelp_crds::condition_types as ct;
use kelp_crds::{
    Cluster, ClusterPhase, ClusterStatus, MachineAddress, MachineStatus, NodePool, NodePoolStatus,
    PendingCreate,
};
use serde::Deserialize;

use crate::conditions::{self, Finding};
use crate::context::Requeue;

/// Why a reconcile that reached its end must look again soon although the status may
/// read Ready.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Unsettled {
    /// Extra machines younger than the create grace period are kept until it passes.
    HeldExtras { pool: String },
    /// Machines of the pool that are not running (booting, failed or terminating).
    NotRunning { pool: String },
    /// Orphaned machines of a deleted Cluster wait for their grace period.
    OrphansWaiting,
    /// Pools follow demand, and the Deployments they carry are not read yet.
    DemandUnknown,
    /// Idle machines of the pool are being drained before they go.
    Draining { pool: String },
}

/// What one reconcile found and did, in the terms the status is made of.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Outcome {
    /// Each pool's machines, desired and Ready-Node counts.
    pub pools: Vec<NodePoolStatus>,
    /// Whether the target cluster's Nodes could be read (readiness is unknown otherwise).
    pub nodes_read: bool,
    /// ControlPlaneReady as found this time; None leaves the condition as it was.
    pub control_plane: Option<Finding>,
    /// Machines of the separate control plane (pool `control-plane`) the cloud lists;
    /// None when they were not listed this time (the status keeps what it had).
    pub control_plane_machines: Option<Vec<MachineStatus>>,
    /// What needs a user's change, first one first.
    pub stalled: Vec<Finding>,
    /// What the Cluster waits for (capacity), shown in the Ready condition.
    pub waiting: Vec<String>,
    /// Pools rolling to a new instance type, shown in the Ready condition.
    pub rolling: Vec<String>,
    /// Batches asked for and not yet listed.
    pub pending_creates: Vec<PendingCreate>,
    /// Reasons to look again soon.
    pub unsettled: Vec<Unsettled>,
    /// Seconds until the next idle machine of a pool that follows demand may go.
    pub scale_down_in_s: Option<u64>,
    /// Pools whose creates the budget held back, and why.
    pub over_budget: Vec<String>,
    /// What the separate control-plane machines cost per hour, as far as known.
    pub control_plane_price_per_hour: f64,
}

/// One pool's status from the machines it has after its plan ran: its instance type (the
/// one its machines run, or the first candidate), price and machines, oldest first.
/// Ready-Node counts are filled in once the Nodes are read.
pub fn pool(
    pool: &NodePool,
    actions: &crate::cluster::plan::PoolActions,
    machines: &[Machine],
    types: &[InstanceType],
) -> NodePoolStatus {
    let alive: Vec<&Machine> = machines
        .iter()
        .filter(|m| m.state != MachineState::Terminating)
        .collect();
    let type_name = alive
        .iter()
        .find(|m| m.state == MachineState::Running)
        .or(alive.first())
        .map(|m| m.instance_type.clone())
        .or_else(|| actions.candidates.first().map(|t| t.name.clone()));
    let mut listed: Vec<&Machine> = machines.iter().collect();
    listed.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
    NodePoolStatus {
        name: pool.name.clone(),
        desired: actions.desired as i32,
        price_per_hour: type_name
            .as_ref()
            .and_then(|n| types.iter().find(|t| &t.name == n))
            .and_then(|t| t.price_per_hour),
        instance_type: type_name,
        machines: listed
            .into_iter()
            .map(|m| MachineStatus {
                idle_since: actions.idle_since.get(&m.name).cloned(),
                ..machine(m)
            })
            .collect(),
        demand: actions.demand.clone(),
        started: actions.started,
        ..Default::default()
    }
}

/// A machine as the status shows it.
pub fn machine(m: &Machine) -> MachineStatus {
    MachineStatus {
        name: m.name.clone(),
        provider_id: Some(m.provider_id.clone()),
        state: Some(m.state.as_str().to_string()),
        addresses: m
            .addresses
            .iter()
            .map(|a| MachineAddress {
                r#type: a.kind.clone(),
                address: a.address.clone(),
            })
            .collect(),
        created_at: Some(m.created_at.clone()),
        idle_since: None,
    }
}

/// The Cluster's status: `base` (the previous status with what this reconcile wrote
/// directly: observed generation, cloud, endpoint, kubeconfig Secret, CloudReachable)
/// completed from `outcome`. The phase before this reconcile is read from `cluster`.
pub fn compute(cluster: &Cluster, mut base: ClusterStatus, outcome: &Outcome) -> ClusterStatus {
    let generation = cluster.metadata.generation.unwrap_or_default();
    let g = Some(generation);
    let desired: i32 = outcome.pools.iter().map(|p| p.desired).sum();
    let ready: i32 = outcome.pools.iter().map(|p| p.ready).sum();
    base.node_pools = outcome.pools.clone();
    base.pending_creates = outcome.pending_creates.clone();
    if let Some(cp) = &outcome.control_plane_machines {
        base.control_plane_machines = cp.clone();
    }
    base.ready = Some(format!("{ready}/{desired}"));
    let c = &mut base.conditions;
    if let Some(cp) = &outcome.control_plane {
        cp.set(c, ct::CONTROL_PLANE_READY, g);
    }
    let stalled = !outcome.stalled.is_empty();
    if stalled {
        Finding::yes(outcome.stalled[0].reason.clone(), stalled_message(outcome)).set(
            c,
            ct::STALLED,
            g,
        );
    } else {
        conditions::set(c, ct::STALLED, false, "Progressing", "", g);
    }
    let counts = format!("{ready}/{desired} machines ready");
    // Idle machines a pool that follows demand keeps until its scale-down delay ends
    // count as ready beyond what is desired.
    let pools_ready = ready >= desired && outcome.nodes_read;
    conditions::set(
        c,
        ct::NODE_POOLS_READY,
        pools_ready,
        if pools_ready {
            "AllReady"
        } else {
            "Provisioning"
        },
        counts.clone(),
        g,
    );
    let cp_ready = conditions::is_true(c, ct::CONTROL_PLANE_READY);
    let all = pools_ready && cp_ready && !stalled && outcome.rolling.is_empty();
    conditions::set(
        c,
        ct::RECONCILING,
        !all,
        if all { "Reconciled" } else { "Provisioning" },
        if all { String::new() } else { counts.clone() },
        g,
    );
    let phase = phase(cluster, generation, outcome, all);
    let (reason, msg) = if all {
        ("Ready".to_string(), counts)
    } else if stalled {
        (outcome.stalled[0].reason.clone(), stalled_message(outcome))
    } else if !outcome.waiting.is_empty() {
        (
            "InsufficientCapacity".to_string(),
            outcome.waiting.join("; "),
        )
    } else if !outcome.over_budget.is_empty() {
        ("BudgetExceeded".to_string(), outcome.over_budget.join("; "))
    } else if !outcome.rolling.is_empty() {
        ("Rolling".to_string(), outcome.rolling.join("; "))
    } else if !cp_ready {
        (
            "ControlPlaneNotReady".to_string(),
            "waiting for the control plane".to_string(),
        )
    } else if phase == ClusterPhase::Degraded {
        ("Degraded".to_string(), counts)
    } else {
        ("Provisioning".to_string(), counts)
    };
    conditions::set(c, ct::READY, all, &reason, msg, g);
    if let Some(b) = &cluster.spec.budget {
        let over = !outcome.over_budget.is_empty();
        let message = if over {
            outcome.over_budget.join("; ")
        } else {
            format!("within the budget of {:.2} per hour", b.max_price_per_hour)
        };
        let reason = if over { "OverBudget" } else { "WithinBudget" };
        conditions::set(c, ct::BUDGET_EXCEEDED, over, reason, message, g);
    } else {
        c.retain(|c| c.r#type != ct::BUDGET_EXCEEDED);
    }
    base.price_per_hour = price_per_hour(&base.node_pools)
        .map(|p| ((p + outcome.control_plane_price_per_hour) * 10000.0).round() / 10000.0);
    base.phase = Some(phase);
    base
}

/// What every pool's machines cost per hour together (terminating ones excepted), when
/// each pool with machines has a known price; the Cluster's total adds its control plane.
pub fn price_per_hour(pools: &[NodePoolStatus]) -> Option<f64> {
    let mut total = 0.0;
    for p in pools {
        let n = p
            .machines
            .iter()
            .filter(|m| m.state.as_deref() != Some("terminating"))
            .count();
        if n == 0 {
            continue;
        }
        total += p.price_per_hour? * n as f64;
    }
    Some((total * 10000.0).round() / 10000.0)
}

fn phase(cluster: &Cluster, generation: i64, outcome: &Outcome, all: bool) -> ClusterPhase {
    let before = cluster.status.as_ref();
    let was_ready = before.is_some_and(|s| {
        matches!(s.phase, Some(ClusterPhase::Ready | ClusterPhase::Degraded))
            && s.observed_generation == Some(generation)
    });
    let no_cp_machine = outcome.control_plane_machines.as_ref().map_or_else(
        || before.is_none_or(|s| s.control_plane_machines.is_empty()),
        Vec::is_empty,
    );
    let nothing_made = no_cp_machine
        && outcome.pools.iter().all(|p| p.machines.is_empty())
        && outcome.pending_creates.is_empty()
        && !outcome.control_plane.as_ref().is_some_and(|c| c.status);
    if !outcome.stalled.is_empty() {
        ClusterPhase::Failed
    } else if all {
        ClusterPhase::Ready
    } else if was_ready {
        ClusterPhase::Degraded
    } else if nothing_made {
        ClusterPhase::Pending
    } else {
        ClusterPhase::Provisioning
    }
}

/// Every stalled message, joined.
fn stalled_message(outcome: &Outcome) -> String {
    outcome
        .stalled
        .iter()
        .map(|f| f.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// When to look again: soon while anything is on its way (a batch, a machine that does
/// not run yet, a running machine whose Node is not Ready, held extras); otherwise a
/// Ready Cluster, or a stalled one (it waits for a change), at the resync, and anything
/// else soon. A stalled pool does not stop the others' progress from being followed.
pub fn requeue(status: &ClusterStatus, outcome: &Outcome) -> Requeue {
    let ready = conditions::is_true(&status.conditions, ct::READY);
    let joining = outcome.pools.iter().any(|p| {
        let running = p
            .machines
            .iter()
            .filter(|m| m.state.as_deref() == Some("running"))
            .count() as i32;
        p.ready < running
    });
    let moving = !status.pending_creates.is_empty() || !outcome.unsettled.is_empty() || joining;
    if !moving && (ready || !outcome.stalled.is_empty()) {
        match outcome.scale_down_in_s {
            Some(s) => Requeue::After(std::time::Duration::from_secs(s.max(1))),
            None => Requeue::Resync,
        }
    } else {
        Requeue::Poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kelp_crds::ConditionStatus;

    /// A Cluster of one pool `gpu` wanting `replicas`, at `generation`, with `status`.
    fn cluster(generation: i64, status: &str) -> Cluster {
        let mut c: Cluster = serde_yaml_ng::from_str(&format!(
            r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {{name: c, namespace: ns, generation: {generation}, uid: u}}
spec:
  cloud: {{sim: {{}}}}
  nodePools: [{{name: gpu, replicas: 2, machine: {{cpu: 4, memoryGB: 16}}}}]
"#
        ))
        .unwrap();
        c.status = (!status.is_empty()).then(|| serde_yaml_ng::from_str(status).unwrap());
        c
    }

    fn outcome(text: &str) -> Outcome {
        yaml(text)
    }

    const CP_READY: &str = "controlPlane: {status: true, reason: Ready, message: up}";

    fn run(c: &Cluster, o: &str) -> ClusterStatus {
        let base = c.status.clone().unwrap_or_default();
        compute(c, base, &outcome(o))
    }

    fn cond<'a>(s: &'a ClusterStatus, t: &str) -> Option<&'a kelp_crds::Condition> {
        conditions::get(&s.conditions, t)
    }

    /// A fixture: YAML read as JSON would be (an enum as a one-key map).
    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        let v: serde_json::Value = serde_yaml_ng::from_str(text).unwrap();
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn all_machines_ready_nodes_and_control_plane_is_ready() {
        let c = cluster(1, "");
        let s = run(
            &c,
            &format!(
                "{CP_READY}\nnodesRead: true\npools: [{{name: gpu, desired: 2, ready: 2, machines: [{{name: a}}, {{name: b}}]}}]"
            ),
        );
        assert_eq!(s.phase, Some(ClusterPhase::Ready));
        assert_eq!(s.ready.as_deref(), Some("2/2"));
        assert_eq!(cond(&s, ct::READY).unwrap().status, ConditionStatus::True);
        assert!(cond(&s, ct::RECONCILING).is_none());
        assert!(cond(&s, ct::STALLED).is_none());
        assert_eq!(requeue(&s, &outcome("{}")), Requeue::Resync);
    }

    #[test]
    fn nothing_made_yet_is_pending() {
        let c = cluster(1, "");
        let s = run(
            &c,
            "nodesRead: true\nwaiting: ['pool gpu: no capacity for any matching type (g4dn.xlarge); retrying']\npools: [{name: gpu, desired: 2}]",
        );
        assert_eq!(s.phase, Some(ClusterPhase::Pending));
        let ready = cond(&s, ct::READY).unwrap();
        assert_eq!(ready.reason, "InsufficientCapacity");
        assert!(ready.message.contains("no capacity"));
        assert_eq!(
            cond(&s, ct::RECONCILING).unwrap().status,
            ConditionStatus::True
        );
        assert_eq!(requeue(&s, &outcome("{}")), Requeue::Poll);
    }

    #[test]
    fn machines_on_their_way_are_provisioning() {
        let c = cluster(1, "");
        let s = run(
            &c,
            &format!(
                "{CP_READY}\nnodesRead: true\npools: [{{name: gpu, desired: 2, ready: 0, machines: [{{name: a, state: Pending}}]}}]\npendingCreates: [{{key: k, pool: gpu, count: 1, instanceType: t, requestedAt: '2026-01-01T00:00:00Z'}}]"
            ),
        );
        assert_eq!(s.phase, Some(ClusterPhase::Provisioning));
        assert_eq!(s.pending_creates.len(), 1);
        assert_eq!(cond(&s, ct::READY).unwrap().reason, "Provisioning");
        assert_eq!(
            cond(&s, ct::NODE_POOLS_READY).unwrap().message,
            "0/2 machines ready"
        );
    }

    const WAS_READY_AT_1: &str = "observedGeneration: 1\nphase: Ready";

    #[test]
    fn a_ready_cluster_that_loses_a_machine_is_degraded() {
        let c = cluster(1, WAS_READY_AT_1);
        let s = run(
            &c,
            &format!(
                "{CP_READY}\nnodesRead: true\npools: [{{name: gpu, desired: 2, ready: 1, machines: [{{name: a}}, {{name: c, state: Pending}}]}}]"
            ),
        );
        assert_eq!(s.phase, Some(ClusterPhase::Degraded));
        let ready = cond(&s, ct::READY).unwrap();
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("Degraded", "1/2 machines ready")
        );
        // Degraded stays Degraded until it is Ready again.
        let again = cluster(1, "observedGeneration: 1\nphase: Degraded");
        let s = run(
            &again,
            &format!(
                "{CP_READY}\nnodesRead: true\npools: [{{name: gpu, desired: 2, ready: 1, machines: [{{name: a}}]}}]"
            ),
        );
        assert_eq!(s.phase, Some(ClusterPhase::Degraded));
    }

    #[test]
    fn a_spec_change_provisions_again_rather_than_degrades() {
        let c = cluster(2, WAS_READY_AT_1);
        let s = run(
            &c,
            &format!(
                "{CP_READY}\nnodesRead: true\npools: [{{name: gpu, desired: 3, ready: 2, machines: [{{name: a}}, {{name: b}}, {{name: c, state: Pending}}]}}]"
            ),
        );
        assert_eq!(s.phase, Some(ClusterPhase::Provisioning));
    }

    #[test]
    fn stalled_is_failed_with_every_message_and_no_reconciling() {
        let c = cluster(1, "");
        let s = run(
            &c,
            "stalled: [{status: true, reason: NoInstanceType, message: 'pool gpu: no type'}, {status: true, reason: RecipeError, message: 'pool gpu: bad recipe'}]\npools: [{name: gpu, desired: 2}]",
        );
        assert_eq!(s.phase, Some(ClusterPhase::Failed));
        let st = cond(&s, ct::STALLED).unwrap();
        assert_eq!(st.reason, "NoInstanceType");
        assert_eq!(st.message, "pool gpu: no type; pool gpu: bad recipe");
        assert_eq!(cond(&s, ct::READY).unwrap().reason, "NoInstanceType");
        let mut conds = s.conditions.clone();
        conditions::ensure_ready(&mut conds, Some(1));
        assert!(conditions::get(&conds, ct::RECONCILING).is_none());
        assert_eq!(
            requeue(
                &s,
                &outcome("stalled: [{status: true, reason: NoInstanceType, message: x}]")
            ),
            Requeue::Resync
        );
    }

    #[test]
    fn a_roll_is_not_ready_and_says_so() {
        let c = cluster(2, WAS_READY_AT_1);
        let s = run(
            &c,
            &format!(
                "{CP_READY}\nnodesRead: true\nrolling: ['pool gpu: replacing 2 machine(s)']\npools: [{{name: gpu, desired: 2, ready: 2, machines: [{{name: a}}, {{name: b}}]}}]"
            ),
        );
        assert_eq!(s.phase, Some(ClusterPhase::Provisioning));
        assert_eq!(cond(&s, ct::READY).unwrap().reason, "Rolling");
    }

    #[test]
    fn the_control_plane_booting_is_waited_for() {
        let c = cluster(1, "");
        let s = run(
            &c,
            "controlPlane: {status: false, reason: Provisioning, message: booting}\nnodesRead: true\npools: [{name: gpu, desired: 0}]",
        );
        assert_eq!(cond(&s, ct::READY).unwrap().reason, "ControlPlaneNotReady");
        assert_eq!(
            cond(&s, ct::CONTROL_PLANE_READY).unwrap().message,
            "booting"
        );
        assert_eq!(s.phase, Some(ClusterPhase::Pending));
        // Its machine listed and booting: on its way.
        let s = run(
            &c,
            "controlPlane: {status: false, reason: Provisioning, message: booting}\ncontrolPlaneMachines: [{name: cp}]\nnodesRead: true\npools: [{name: gpu, desired: 2}]",
        );
        assert_eq!(s.phase, Some(ClusterPhase::Provisioning));
    }

    #[test]
    fn unread_nodes_are_not_ready() {
        let c = cluster(1, "");
        let s = run(
            &c,
            &format!(
                "{CP_READY}\nnodesRead: false\npools: [{{name: gpu, desired: 1, ready: 1, machines: [{{name: a}}]}}]"
            ),
        );
        assert_eq!(
            cond(&s, ct::NODE_POOLS_READY).unwrap().status,
            ConditionStatus::False
        );
        assert_eq!(s.phase, Some(ClusterPhase::Provisioning));
    }

    #[test]
    fn ready_with_something_on_its_way_looks_again_soon() {
        let c = cluster(1, "");
        let o = format!(
            "{CP_READY}\nnodesRead: true\npools: [{{name: gpu, desired: 1, ready: 1, machines: [{{name: a}}]}}]"
        );
        let s = run(&c, &o);
        assert_eq!(s.phase, Some(ClusterPhase::Ready));
        for extra in [
            "unsettled: [{heldExtras: {pool: gpu}}]",
            "unsettled: [orphansWaiting]",
            "unsettled: [{notRunning: {pool: gpu}}]",
        ] {
            let o = outcome(&format!("{o}\n{extra}"));
            assert_eq!(requeue(&s, &o), Requeue::Poll, "{extra}");
        }
        let mut pending = s.clone();
        pending.pending_creates.push(PendingCreate::default());
        assert_eq!(requeue(&pending, &outcome("{}")), Requeue::Poll);
    }

    #[test]
    fn a_listed_control_plane_machine_is_recorded_and_kept_while_unlisted() {
        let c = cluster(1, "");
        let o = "controlPlane: {status: false, reason: Provisioning, message: booting}\ncontrolPlaneMachines: [{name: cp, state: pending}]\nnodesRead: true\npools: [{name: gpu, desired: 2}]";
        let s = run(&c, o);
        assert_eq!(s.control_plane_machines.len(), 1);
        assert_eq!(s.phase, Some(ClusterPhase::Provisioning));
        // A reconcile that did not list it (a pool became unfit) keeps the record.
        let mut again = cluster(1, "");
        again.status = Some(s);
        let s = run(&again, "nodesRead: true\npools: [{name: gpu, desired: 2}]");
        assert_eq!(s.control_plane_machines[0].name, "cp");
        assert_ne!(s.phase, Some(ClusterPhase::Pending));
    }

    #[test]
    fn a_stalled_cluster_follows_its_other_pools_and_then_waits_for_a_change() {
        let c = cluster(1, "");
        let stalled = "stalled: [{status: true, reason: RecipeError, message: 'pool gpu: bad input'}]\nnodesRead: true";
        let booting = format!(
            "{stalled}\npools: [{{name: cpu, desired: 1, ready: 0, machines: [{{name: a, state: running}}]}}]"
        );
        let s = run(&c, &booting);
        assert_eq!(s.phase, Some(ClusterPhase::Failed));
        assert_eq!(requeue(&s, &outcome(&booting)), Requeue::Poll);
        let joined = format!(
            "{stalled}\npools: [{{name: cpu, desired: 1, ready: 1, machines: [{{name: a, state: running}}]}}]"
        );
        let s = run(&c, &joined);
        assert_eq!(requeue(&s, &outcome(&joined)), Requeue::Resync);
    }
}
