//! Placement across Clusters: which of a Deployment's candidate Clusters (its
//! `spec.placement`) the workload goes to, when it moves to the next, and what the
//! status says of each. Pure.
//!
//! - A candidate is passed over (Skipped) when it is Stalled, being deleted, out of
//!   capacity or quota for the workload's pool, or has not made the workload Ready
//!   within `fallbackAfterSeconds`; it is Unfit when no pool of it fits the workload,
//!   or it does not exist.
//! - The workload stays where it is while that Cluster can run it: there is no move
//!   back to a Cluster earlier in the list once it recovers.
//! - A move is make-before-break: the controller keeps the workload on the Cluster it
//!   runs on (`status.cluster`) until it is Ready on the new one.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kelp_crds::condition_types as ct;
use kelp_crds::{
    Cluster, Deployment, Module, Placement, PlacementPolicy, PlacementResult, PlacementStatus,
};
use kube::ResourceExt;

use super::build;
use crate::conditions;

/// Reasons a candidate is passed over that are remembered for a while: they come from
/// trying (the cloud had no room, the workload was not Ready in time), not from what
/// the Cluster shows now.
const STICKY: [&str; 3] = ["InsufficientCapacity", "QuotaExceeded", "Timeout"];

/// What placement decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The Cluster to apply the workload to now; None when no candidate can run it.
    pub target: Option<String>,
    /// One entry per candidate, in the order of `spec.placement.clusters`.
    pub entries: Vec<PlacementStatus>,
    /// Set when the target changed in this decision: from where, and why.
    pub moved: Option<(Option<String>, String)>,
}

/// Whether a candidate can take the workload now, and at what price per hour (of one
/// machine of the pool it would use).
enum Fit {
    Yes(Option<f64>),
    No(PlacementResult, &'static str, String),
}

fn fit(
    ns: &str,
    name: &str,
    cluster: Option<&Cluster>,
    dep: &Deployment,
    module: Option<&Module>,
) -> Fit {
    let Some(c) = cluster else {
        return Fit::No(
            PlacementResult::Unfit,
            "ClusterNotFound",
            format!("Cluster {ns}/{name} not found"),
        );
    };
    if c.metadata.deletion_timestamp.is_some() {
        return Fit::No(
            PlacementResult::Skipped,
            "ClusterDeleting",
            format!("Cluster {name} is being deleted"),
        );
    }
    let st = c.status.as_ref();
    let conds = st.map(|s| s.conditions.as_slice()).unwrap_or_default();
    if let Some(s) = conditions::get(conds, ct::STALLED)
        .filter(|s| conditions::is_true(conds, ct::STALLED) && !s.message.is_empty())
    {
        return Fit::No(
            PlacementResult::Skipped,
            "Stalled",
            format!("Cluster {name} is Stalled: {}", s.message),
        );
    }
    let Some(module) = module else {
        // Without the Module, its needs are unknown: the Cluster is taken as it is.
        return Fit::Yes(None);
    };
    let pool = match build::choose_pool(c, dep.spec.node_pool.as_deref(), build::need(dep, module))
    {
        Ok(p) => p,
        Err(m) => return Fit::No(PlacementResult::Unfit, "NoPoolFits", m),
    };
    for (cond, reasons) in [
        (ct::READY, &["InsufficientCapacity", "QuotaExceeded"][..]),
        (ct::CLOUD_REACHABLE, &["QuotaExceeded"][..]),
    ] {
        if let Some(c) = conditions::get(conds, cond)
            && c.status == kelp_crds::ConditionStatus::False
            && reasons.contains(&c.reason.as_str())
            && (c.reason == "QuotaExceeded" || c.message.contains(&format!("pool {}:", pool.name)))
        {
            let reason = if c.reason == "QuotaExceeded" {
                "QuotaExceeded"
            } else {
                "InsufficientCapacity"
            };
            return Fit::No(
                PlacementResult::Skipped,
                reason,
                format!("Cluster {name}: {}", c.message),
            );
        }
    }
    let price = st
        .and_then(|s| s.node_pools.iter().find(|p| p.name == pool.name))
        .and_then(|p| p.price_per_hour);
    Fit::Yes(price)
}

fn entry(
    cluster: &str,
    result: PlacementResult,
    reason: &str,
    message: String,
    since: String,
) -> PlacementStatus {
    PlacementStatus {
        cluster: cluster.to_string(),
        result,
        reason: reason.to_string(),
        message,
        since,
    }
}

/// Decides where `dep` runs among `clusters` (each candidate of `placement` with the
/// Cluster as cached, None when it does not exist), given whether the workload is
/// Ready on the current target (`ready`, from the last reconcile) and the time.
pub fn decide(
    dep: &Deployment,
    placement: &Placement,
    clusters: &[(String, Option<Arc<Cluster>>)],
    module: Option<&Module>,
    ready: bool,
    now: Timestamp,
) -> Decision {
    let ns = dep.namespace().unwrap_or_default();
    let before: Vec<PlacementStatus> = dep
        .status
        .as_ref()
        .map(|s| s.placement.clone())
        .unwrap_or_default();
    let prev = |name: &str| before.iter().find(|e| e.cluster == name);
    let now_s = now.to_string();
    // `since` stays while the result does.
    let keep_since = |name: &str, result: PlacementResult| {
        prev(name)
            .filter(|e| e.result == result)
            .map_or(now_s.clone(), |e| e.since.clone())
    };
    let fallback = std::time::Duration::from_secs(placement.fallback_after_seconds.max(1) as u64);
    let older_than = |since: &str, d: std::time::Duration| {
        since.parse::<Timestamp>().is_ok_and(|t| {
            now.duration_since(t)
                >= k8s_openapi::jiff::SignedDuration::try_from(d).unwrap_or_default()
        })
    };
    let current = dep.target_cluster().map(str::to_string);
    let fits: Vec<(String, Fit)> = clusters
        .iter()
        .map(|(name, c)| (name.clone(), fit(&ns, name, c.as_deref(), dep, module)))
        .collect();

    let mut entries: Vec<PlacementStatus> = Vec::new();
    let mut target: Option<String> = None;
    let mut left_because: Option<String> = None;
    // The current target: stays while it can run the workload and it is Ready, or is
    // still within its time to become Ready.
    if let Some(cur) = &current
        && let Some((_, f)) = fits.iter().find(|(n, _)| n == cur)
    {
        match f {
            Fit::Yes(_) if ready => {
                entries.push(entry(
                    cur,
                    PlacementResult::Running,
                    "Ready",
                    format!("the workload is Ready on Cluster {cur}"),
                    keep_since(cur, PlacementResult::Running),
                ));
                target = Some(cur.clone());
            }
            Fit::Yes(_) => {
                let since = match prev(cur) {
                    // Running before and no longer Ready: the time to recover starts now.
                    Some(e) if e.result == PlacementResult::Waiting => e.since.clone(),
                    _ => now_s.clone(),
                };
                if older_than(&since, fallback) {
                    let why = format!(
                        "the workload was not Ready on Cluster {cur} within {}s (fallbackAfterSeconds)",
                        fallback.as_secs()
                    );
                    left_because = Some(why.clone());
                    entries.push(entry(
                        cur,
                        PlacementResult::Skipped,
                        "Timeout",
                        why,
                        now_s.clone(),
                    ));
                } else {
                    entries.push(entry(
                        cur,
                        PlacementResult::Waiting,
                        "Deploying",
                        format!("waiting for the workload to be Ready on Cluster {cur}"),
                        since,
                    ));
                    target = Some(cur.clone());
                }
            }
            Fit::No(result, reason, message) => {
                left_because = Some(message.clone());
                entries.push(entry(
                    cur,
                    *result,
                    reason,
                    message.clone(),
                    keep_since(cur, *result),
                ));
            }
        }
    }
    // Otherwise the next candidate in the policy's order that can run it.
    let mut moved = None;
    if target.is_none() {
        let mut order: Vec<(usize, &String, Option<f64>)> = fits
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| Some(n) != current.as_ref())
            .filter_map(|(i, (n, f))| match f {
                Fit::Yes(p) => Some((i, n, *p)),
                Fit::No(..) => None,
            })
            // Passed over for capacity or time a while ago: not again before the
            // fallback time has passed.
            .filter(|(_, n, _)| {
                !prev(n).is_some_and(|e| {
                    e.result == PlacementResult::Skipped
                        && STICKY.contains(&e.reason.as_str())
                        && !older_than(&e.since, fallback)
                })
            })
            .collect();
        if placement.policy == PlacementPolicy::Cheapest {
            order.sort_by(|a, b| {
                let p = |x: Option<f64>| x.unwrap_or(f64::INFINITY);
                p(a.2).total_cmp(&p(b.2)).then(a.0.cmp(&b.0))
            });
        }
        if let Some((_, n, _)) = order.first() {
            target = Some((*n).clone());
            let why = left_because
                .clone()
                .unwrap_or_else(|| match placement.policy {
                    PlacementPolicy::Ordered => "the first candidate that can run it".into(),
                    PlacementPolicy::Cheapest => "the cheapest candidate that can run it".into(),
                });
            moved = Some((current.clone(), why));
            entries.push(entry(
                n,
                PlacementResult::Waiting,
                "Deploying",
                format!("waiting for the workload to be Ready on Cluster {n}"),
                now_s.clone(),
            ));
        } else if let Some(cur) = &current {
            // Nowhere else to go: stay and keep trying where it is.
            target = Some(cur.clone());
        }
    }
    // Every other candidate: what it is now, or what it was passed over for.
    let mut out = Vec::new();
    for (name, f) in &fits {
        if let Some(e) = entries.iter().find(|e| &e.cluster == name) {
            out.push(e.clone());
            continue;
        }
        let e = match (f, prev(name)) {
            (Fit::No(result, reason, message), _) => entry(
                name,
                *result,
                reason,
                message.clone(),
                keep_since(name, *result),
            ),
            (Fit::Yes(_), Some(p))
                if p.result == PlacementResult::Skipped && STICKY.contains(&p.reason.as_str()) =>
            {
                p.clone()
            }
            (Fit::Yes(_), Some(p))
                if matches!(
                    p.result,
                    PlacementResult::Running | PlacementResult::Waiting
                ) =>
            {
                // Where it ran before a move: passed over, as the move said.
                entry(
                    name,
                    PlacementResult::Skipped,
                    &p.reason,
                    p.message.clone(),
                    p.since.clone(),
                )
            }
            (Fit::Yes(_), _) => entry(
                name,
                PlacementResult::Untried,
                "Untried",
                String::new(),
                keep_since(name, PlacementResult::Untried),
            ),
        };
        out.push(e);
    }
    Decision {
        target,
        entries: out,
        moved,
    }
}

/// Why no candidate can run the workload, for the Deployment's conditions.
pub fn nowhere(entries: &[PlacementStatus]) -> String {
    let each: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e.cluster,
                if e.message.is_empty() {
                    &e.reason
                } else {
                    &e.message
                }
            )
        })
        .collect();
    format!(
        "spec.placement: no candidate Cluster can run the workload ({})",
        each.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, status: &str) -> Option<Arc<Cluster>> {
        let mut c: Cluster = serde_yaml_ng::from_str(&format!(
            "apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  cloud: {{sim: {{}}}}\n  nodePools: [{{name: gpu, machine: {{gpu: {{count: 1, model: A100}}}}}}]\n"
        ))
        .unwrap();
        c.status = (!status.is_empty()).then(|| serde_yaml_ng::from_str(status).unwrap());
        Some(Arc::new(c))
    }

    fn module() -> Module {
        serde_yaml_ng::from_str(
            "apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Module\nmetadata: {name: m, namespace: ns}\nspec: {title: t, summary: s, image: {repository: r}, resources: {cpu: 1, memoryMB: 1000, gpu: 1}}\n",
        )
        .unwrap()
    }

    fn dep(policy: &str, placement_status: &str) -> Deployment {
        let mut d: Deployment = serde_yaml_ng::from_str(&format!(
            "apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Deployment\nmetadata: {{name: d, namespace: ns}}\nspec: {{moduleRef: {{name: m}}, placement: {{clusters: [{{name: a}}, {{name: b}}, {{name: c}}], policy: {policy}, fallbackAfterSeconds: 900}}}}\n"
        ))
        .unwrap();
        if !placement_status.is_empty() {
            d.status = Some(serde_yaml_ng::from_str(placement_status).unwrap());
        }
        d
    }

    const NO_CAPACITY: &str = "conditions: [{type: Ready, status: 'False', reason: InsufficientCapacity, message: 'pool gpu: no capacity for any matching type (sim.a100-16); retrying', lastTransitionTime: '2026-01-01T09:00:00Z'}]";

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    /// Candidates a, b and c with these statuses.
    fn abc(a: &str, b: &str, c: &str) -> Vec<(String, Option<Arc<Cluster>>)> {
        vec![
            ("a".to_string(), cluster("a", a)),
            ("b".to_string(), cluster("b", b)),
            ("c".to_string(), cluster("c", c)),
        ]
    }

    /// [`decide`] for `d` over `cs` at time `t`.
    fn run(
        d: &Deployment,
        cs: &[(String, Option<Arc<Cluster>>)],
        ready: bool,
        t: &str,
    ) -> Decision {
        let p = d.spec.placement.clone().unwrap();
        decide(d, &p, cs, Some(&module()), ready, at(t))
    }

    fn results(d: &Decision) -> Vec<(String, PlacementResult, String)> {
        d.entries
            .iter()
            .map(|e| (e.cluster.clone(), e.result, e.reason.clone()))
            .collect()
    }

    #[test]
    fn the_first_that_can_run_it_is_chosen_in_order() {
        let d = dep("Ordered", "");
        let cs = vec![
            ("a".to_string(), cluster("a", NO_CAPACITY)),
            ("b".to_string(), None),
            ("c".to_string(), cluster("c", "")),
        ];
        let out = run(&d, &cs, false, "2026-01-01T09:00:00Z");
        assert_eq!(out.target.as_deref(), Some("c"));
        assert_eq!(
            results(&out),
            [
                (
                    "a".into(),
                    PlacementResult::Skipped,
                    "InsufficientCapacity".into()
                ),
                ("b".into(), PlacementResult::Unfit, "ClusterNotFound".into()),
                ("c".into(), PlacementResult::Waiting, "Deploying".into()),
            ]
        );
        assert!(out.entries[0].message.contains("no capacity"));
    }

    #[test]
    fn cheapest_picks_the_lowest_known_price() {
        let d = dep("Cheapest", "");
        let priced = |v: f64| format!("nodePools: [{{name: gpu, pricePerHour: {v}}}]");
        let cs = vec![
            ("a".to_string(), cluster("a", "")),
            ("b".to_string(), cluster("b", &priced(3.0))),
            ("c".to_string(), cluster("c", &priced(1.5))),
        ];
        let out = run(&d, &cs, false, "2026-01-01T09:00:00Z");
        assert_eq!(
            out.target.as_deref(),
            Some("c"),
            "unknown price counts as the most expensive"
        );
    }

    #[test]
    fn a_target_that_runs_it_is_kept_and_one_out_of_time_is_left() {
        let waiting = "placement: [{cluster: a, result: Waiting, reason: Deploying, since: '2026-01-01T09:00:00Z'}, {cluster: b, result: Untried, reason: Untried, since: '2026-01-01T09:00:00Z'}, {cluster: c, result: Untried, reason: Untried, since: '2026-01-01T09:00:00Z'}]";
        let d = dep("Ordered", waiting);
        let cs = abc("", "", "");
        // Within the fallback time: stays.
        let out = run(&d, &cs, false, "2026-01-01T09:10:00Z");
        assert_eq!(out.target.as_deref(), Some("a"));
        assert!(out.moved.is_none());
        // Ready: Running.
        let out = run(&d, &cs, true, "2026-01-01T09:10:00Z");
        assert_eq!(out.entries[0].result, PlacementResult::Running);
        // Past it: the next one, saying why.
        let out = run(&d, &cs, false, "2026-01-01T09:16:00Z");
        assert_eq!(out.target.as_deref(), Some("b"));
        assert_eq!(out.entries[0].reason, "Timeout");
        let (from, why) = out.moved.unwrap();
        assert_eq!(from.as_deref(), Some("a"));
        assert!(why.contains("within 900s"), "{why}");
    }

    #[test]
    fn there_is_no_move_back_once_the_first_recovers() {
        let moved = "placement: [{cluster: a, result: Skipped, reason: InsufficientCapacity, message: m, since: '2026-01-01T09:00:00Z'}, {cluster: b, result: Running, reason: Ready, since: '2026-01-01T09:01:00Z'}, {cluster: c, result: Untried, reason: Untried, since: '2026-01-01T09:00:00Z'}]";
        let d = dep("Ordered", moved);
        // a has capacity again (its Ready no longer says otherwise): b stays.
        let out = run(&d, &abc("", "", ""), true, "2026-01-02T09:00:00Z");
        assert_eq!(out.target.as_deref(), Some("b"));
        assert_eq!(out.entries[0].result, PlacementResult::Skipped);
        assert!(out.moved.is_none());
    }

    #[test]
    fn nothing_fits_anywhere_is_said_per_candidate() {
        let d = dep("Ordered", "");
        let cs = vec![
            ("a".to_string(), None),
            ("b".to_string(), None),
            ("c".to_string(), cluster("c", NO_CAPACITY)),
        ];
        let out = run(&d, &cs, false, "2026-01-01T09:00:00Z");
        assert_eq!(out.target, None);
        let msg = nowhere(&out.entries);
        assert!(msg.starts_with("spec.placement: no candidate Cluster can run the workload (a: Cluster ns/a not found;"), "{msg}");
    }
}
