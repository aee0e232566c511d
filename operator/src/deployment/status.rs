//! The Deployment's status from what one reconcile found. Pure: no I/O, so every phase
//! and condition is reachable from a fixture (see the tests below).
//!
//! Phases:
//! - `Pending`: waiting for another object (its Module resolving, its Cluster booting or
//!   coming back);
//! - `Deploying`: the workload is applied and its replicas are on their way, for this
//!   generation;
//! - `Ready`: every replica is ready;
//! - `Degraded`: it was Ready for this generation and no longer is (a replica failed or
//!   its node left); a spec change (new generation) is Deploying again;
//! - `Failed`: Stalled, a change of the spec, a Secret or a ConfigMap is needed;
//! - `Deleting` is set by the cleanup, not here.

use kelp_crds::condition_types as ct;
use kelp_crds::{Deployment, DeploymentPhase, DeploymentStatus};
use serde::Deserialize;

use super::{Blocked, Kind};
use crate::conditions;
use crate::context::Requeue;

/// The workload's state on the target cluster.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Rollout {
    /// Every replica is ready, for the workload's current generation.
    pub ready: bool,
    /// The workload's own reason when it is not available (e.g. no node with a free GPU).
    pub why_not: Option<String>,
    /// No machine of its node pool is Ready yet: nothing can change before one is, and
    /// the Cluster's status saying so wakes the Deployment.
    pub pool_empty: bool,
}

/// How one reconcile ended.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The workload is applied; this is its state.
    Rolled(Rollout),
    /// It could not be applied (yet).
    Blocked(Blocked),
}

/// The status before [`compute`] completes it: the previous one with what this reconcile
/// found: the observed generation, the pool chosen (Scheduled), the image, and, when
/// the workload was applied (`rolled`: its ready replicas and endpoint), the counts.
pub fn base(
    dep: &Deployment,
    plan: &super::Plan,
    rolled: Option<(i32, Option<String>)>,
) -> DeploymentStatus {
    let g = dep.metadata.generation;
    let mut status = dep.status.clone().unwrap_or_default();
    status.observed_generation = g;
    if let Some(pool) = &plan.pool {
        status.node_pool = Some(pool.clone());
        conditions::set(
            &mut status.conditions,
            ct::SCHEDULED,
            true,
            "PoolChosen",
            format!("node pool {pool}"),
            g,
        );
    }
    if let Some(image) = &plan.image {
        status.image = Some(image.clone());
    }
    if let Some((ready_replicas, endpoint)) = rolled {
        status.replicas = dep.spec.replicas.max(0);
        status.ready_replicas = ready_replicas;
        status.endpoint = endpoint;
    }
    status
}

/// The Deployment's status: `base` (the previous status with what this reconcile found:
/// observed generation, pool, image, replica counts, endpoint) completed from `outcome`.
/// The phase before this reconcile is read from `dep`.
pub fn compute(
    dep: &Deployment,
    mut status: DeploymentStatus,
    outcome: &Outcome,
) -> DeploymentStatus {
    let g = dep.metadata.generation;
    let desired = dep.spec.replicas.max(0);
    let c = &mut status.conditions;
    match outcome {
        Outcome::Rolled(Rollout { ready, why_not, .. }) => {
            let ready = *ready;
            let counts = format!("{}/{desired} replicas ready", status.ready_replicas);
            let message = match why_not {
                Some(why) => format!("{counts}: {why}"),
                None => counts,
            };
            let was_ready = dep.status.as_ref().is_some_and(|s| {
                matches!(
                    s.phase,
                    Some(DeploymentPhase::Ready | DeploymentPhase::Degraded)
                ) && s.observed_generation == g
            });
            let phase = if ready {
                DeploymentPhase::Ready
            } else if was_ready {
                DeploymentPhase::Degraded
            } else {
                DeploymentPhase::Deploying
            };
            let reason = match phase {
                DeploymentPhase::Ready => "Ready",
                DeploymentPhase::Degraded => "Degraded",
                _ => "Deploying",
            };
            conditions::set(c, ct::STALLED, false, "Progressing", "", g);
            conditions::set(
                c,
                ct::AVAILABLE,
                ready,
                if ready {
                    "MinimumReplicasAvailable"
                } else {
                    "ReplicasNotReady"
                },
                message.clone(),
                g,
            );
            conditions::set(c, ct::READY, ready, reason, message, g);
            conditions::set(
                c,
                ct::RECONCILING,
                !ready,
                if ready { "Reconciled" } else { reason },
                "",
                g,
            );
            status.phase = Some(phase);
        }
        Outcome::Blocked(b) => {
            let stalled = b.kind == Kind::Stalled;
            if b.kind == Kind::Gone {
                // Nothing runs any more: no replicas, no endpoint, not available.
                status.ready_replicas = 0;
                status.replicas = 0;
                status.endpoint = None;
                conditions::set(c, ct::AVAILABLE, false, &b.reason, b.message.clone(), g);
            }
            conditions::set(c, ct::READY, false, &b.reason, b.message.clone(), g);
            conditions::set(
                c,
                ct::STALLED,
                stalled,
                &b.reason,
                if stalled {
                    b.message.clone()
                } else {
                    String::new()
                },
                g,
            );
            conditions::set(
                c,
                ct::RECONCILING,
                !stalled,
                &b.reason,
                b.message.clone(),
                g,
            );
            if b.reason == "NoPoolFits" {
                conditions::set(c, ct::SCHEDULED, false, &b.reason, b.message.clone(), g);
            }
            status.phase = Some(if stalled {
                DeploymentPhase::Failed
            } else {
                DeploymentPhase::Pending
            });
        }
    }
    status.ready = Some(format!("{}/{desired}", status.ready_replicas));
    status
}

/// When to look again: replicas on their way soon, unless the workloads on the target
/// are `watched` (their status change wakes the Deployment); Ready, Stalled, waiting
/// for another object, and replicas waiting for their pool's first Ready machine at the
/// resync (Module and Cluster changes wake the Deployment).
pub fn requeue(outcome: &Outcome, watched: bool) -> Requeue {
    match outcome {
        Outcome::Rolled(r) if !r.ready && !r.pool_empty && !watched => Requeue::Poll,
        _ => Requeue::Resync,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kelp_crds::ConditionStatus;

    /// A Deployment of 3 replicas at `generation` with `status` (YAML, may be empty).
    fn dep(generation: i64, status: &str) -> Deployment {
        let mut d: Deployment = serde_yaml_ng::from_str(&format!(
            r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Deployment
metadata: {{name: fish, namespace: ns, generation: {generation}}}
spec: {{moduleRef: {{name: m}}, clusterRef: {{name: c}}, replicas: 3}}
"#
        ))
        .unwrap();
        d.status = (!status.is_empty()).then(|| serde_yaml_ng::from_str(status).unwrap());
        d
    }

    /// `outcome` (YAML) on `d`, with `ready_replicas` found.
    fn run(d: &Deployment, ready_replicas: i32, outcome: &str) -> DeploymentStatus {
        let mut base = d.status.clone().unwrap_or_default();
        base.observed_generation = d.metadata.generation;
        base.replicas = 3;
        base.ready_replicas = ready_replicas;
        base.endpoint = Some("http://fish.ns.svc:5000".into());
        compute(d, base, &yaml(outcome))
    }

    fn cond<'a>(s: &'a DeploymentStatus, t: &str) -> Option<&'a kelp_crds::Condition> {
        conditions::get(&s.conditions, t)
    }

    /// A fixture: YAML read as JSON would be (an enum as a one-key map).
    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        let v: serde_json::Value = serde_yaml_ng::from_str(text).unwrap();
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_replica_ready_is_ready_and_available() {
        let s = run(&dep(1, ""), 3, "rolled: {ready: true}");
        assert_eq!(s.phase, Some(DeploymentPhase::Ready));
        assert_eq!(s.ready.as_deref(), Some("3/3"));
        assert_eq!(
            cond(&s, ct::AVAILABLE).unwrap().status,
            ConditionStatus::True
        );
        assert!(cond(&s, ct::RECONCILING).is_none());
        assert_eq!(
            requeue(
                &Outcome::Rolled(Rollout {
                    ready: true,
                    ..Default::default()
                }),
                false
            ),
            Requeue::Resync
        );
    }

    #[test]
    fn replicas_on_their_way_are_deploying_with_the_workloads_reason() {
        let s = run(
            &dep(1, ""),
            1,
            "rolled: {ready: false, whyNot: 'no node with 1 GPU free'}",
        );
        assert_eq!(s.phase, Some(DeploymentPhase::Deploying));
        let r = cond(&s, ct::READY).unwrap();
        assert_eq!(r.reason, "Deploying");
        assert_eq!(r.message, "1/3 replicas ready: no node with 1 GPU free");
        assert_eq!(
            requeue(&Outcome::Rolled(Rollout::default()), false),
            Requeue::Poll
        );
        // A watch of the target's workloads says when they change.
        assert_eq!(
            requeue(&Outcome::Rolled(Rollout::default()), true),
            Requeue::Resync
        );
        // Before the pool has a Ready machine, the Cluster's change wakes it instead.
        let empty = Rollout {
            pool_empty: true,
            ..Default::default()
        };
        assert_eq!(requeue(&Outcome::Rolled(empty), false), Requeue::Resync);
    }

    #[test]
    fn a_ready_deployment_that_loses_a_replica_is_degraded_until_ready_again() {
        let was = "observedGeneration: 1\nphase: Ready";
        let s = run(&dep(1, was), 2, "rolled: {ready: false}");
        assert_eq!(s.phase, Some(DeploymentPhase::Degraded));
        assert_eq!(cond(&s, ct::READY).unwrap().reason, "Degraded");
        assert_eq!(
            cond(&s, ct::AVAILABLE).unwrap().status,
            ConditionStatus::False
        );
        let s = run(
            &dep(1, "observedGeneration: 1\nphase: Degraded"),
            2,
            "rolled: {ready: false}",
        );
        assert_eq!(s.phase, Some(DeploymentPhase::Degraded));
        let s = run(
            &dep(1, "observedGeneration: 1\nphase: Degraded"),
            3,
            "rolled: {ready: true}",
        );
        assert_eq!(s.phase, Some(DeploymentPhase::Ready));
        // A new generation (scaled up) deploys again.
        let s = run(&dep(2, was), 2, "rolled: {ready: false}");
        assert_eq!(s.phase, Some(DeploymentPhase::Deploying));
    }

    #[test]
    fn waiting_for_another_object_is_pending_and_not_stalled() {
        let s = run(
            &dep(1, ""),
            0,
            "blocked: {reason: ClusterNotReady, message: 'Cluster c: waiting for its control plane', kind: Waiting}",
        );
        assert_eq!(s.phase, Some(DeploymentPhase::Pending));
        assert!(cond(&s, ct::STALLED).is_none());
        assert_eq!(cond(&s, ct::RECONCILING).unwrap().reason, "ClusterNotReady");
        assert_eq!(cond(&s, ct::READY).unwrap().reason, "ClusterNotReady");
    }

    #[test]
    fn what_needs_the_user_is_failed_and_stalled() {
        let s = run(
            &dep(1, ""),
            0,
            "blocked: {reason: NoPoolFits, message: 'spec.nodePool: gpu has no GPU', kind: Stalled}",
        );
        assert_eq!(s.phase, Some(DeploymentPhase::Failed));
        assert_eq!(
            cond(&s, ct::STALLED).unwrap().message,
            "spec.nodePool: gpu has no GPU"
        );
        assert!(cond(&s, ct::RECONCILING).is_none());
        assert_eq!(
            cond(&s, ct::SCHEDULED).unwrap().status,
            ConditionStatus::False
        );
    }

    #[test]
    fn a_gone_cluster_leaves_nothing_running_and_no_endpoint() {
        let was = "observedGeneration: 1\nphase: Ready\nreadyReplicas: 3\nreplicas: 3\nendpoint: http://x";
        let d = dep(1, was);
        let mut base = d.status.clone().unwrap();
        base.observed_generation = Some(1);
        let s = compute(
            &d,
            base,
            &yaml(
                "blocked: {reason: ClusterNotFound, message: 'spec.clusterRef: Cluster ns/c not found; the workload runs nowhere', kind: Gone}",
            ),
        );
        assert_eq!(s.ready.as_deref(), Some("0/3"));
        assert_eq!(s.endpoint, None);
        assert_eq!(s.phase, Some(DeploymentPhase::Pending));
        assert_eq!(cond(&s, ct::AVAILABLE).unwrap().reason, "ClusterNotFound");
    }
}
