//! Pools that follow demand: how many machines a pool with `autoscaling` needs for the
//! kelp Deployments placed on it, and which idle machines scale-down may remove. Pure.

use kelp_cloud_drivers::{InstanceType, Machine, MachineState};
use kelp_crds::{Autoscaling, Cluster, Deployment, Module, NodePool};

use crate::deployment::build::{self, Need};

/// Replicas of one kelp Deployment that run on a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// `namespace/name` of the Deployment.
    pub deployment: String,
    pub replicas: u32,
    /// What each replica requests.
    pub need: Need,
}

/// The Deployments each pool of `cluster` carries, in the order of `spec.nodePools`: every
/// kelp Deployment of the Cluster's namespace on it (its `clusterRef`, or where its
/// placement put it, both Clusters during a move), not being deleted, on the pool the Deployment controller chooses for it ([`build::choose_pool`]).
/// None when a Deployment's Module is not known (not cached yet): demand is then unknown.
pub fn wants<'a>(
    cluster: &Cluster,
    deployments: impl IntoIterator<Item = &'a Deployment>,
    module: impl Fn(&str, &str) -> Option<std::sync::Arc<Module>>,
) -> Option<Vec<Vec<Want>>> {
    let ns = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let pools = &cluster.spec.node_pools;
    let mut out: Vec<Vec<Want>> = vec![Vec::new(); pools.len()];
    for d in deployments {
        if d.metadata.namespace.as_deref() != Some(ns)
            || !d.clusters_in_use().contains(&name)
            || d.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let m = module(ns, &d.spec.module_ref.name)?;
        let need = build::need(d, &m);
        let Ok(pool) = build::choose_pool(cluster, d.spec.node_pool.as_deref(), need) else {
            continue;
        };
        let Some(i) = pools.iter().position(|p| p.name == pool.name) else {
            continue;
        };
        out[i].push(Want {
            deployment: format!("{ns}/{}", d.metadata.name.as_deref().unwrap_or_default()),
            replicas: d.spec.replicas.max(0) as u32,
            need,
        });
    }
    Some(out)
}

/// A Pod on the target cluster the scheduler could not place for lack of resources
/// (`PodScheduled=False`, reason `Unschedulable`), other than kelp's own workload Pods
/// (those count through their Deployments).
#[derive(Clone, Debug, PartialEq)]
pub struct PendingPod {
    /// `namespace/name`.
    pub name: String,
    pub node_selector: std::collections::BTreeMap<String, String>,
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    pub need: Need,
}

/// The Pending Pods that select `pool` of the Cluster with UID `uid` (every key of
/// their node selector is a label of the pool's Nodes, and one of them is the pool's
/// own: its `kelp.imagine-ai.eu/pool` label or one of `labels`) and tolerate its
/// taints: they count as demand, one replica each (Karpenter's rule).
pub fn pending_wants(pool: &NodePool, uid: &str, pods: &[PendingPod]) -> Vec<Want> {
    let mut labels = pool.labels.clone();
    labels.insert(crate::simulated::NODE_POOL_LABEL.into(), pool.name.clone());
    labels.insert(crate::simulated::NODE_CLUSTER_LABEL.into(), uid.into());
    let own = |k: &str| k == crate::simulated::NODE_POOL_LABEL || pool.labels.contains_key(k);
    pods.iter()
        .filter(|p| {
            !p.node_selector.is_empty()
                && p.node_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
                && p.node_selector.keys().any(|k| own(k))
        })
        .filter(|p| {
            pool.taints.iter().all(|t| {
                let effect = format!("{:?}", t.effect);
                effect == "PreferNoSchedule"
                    || p.tolerations.iter().any(|tol| {
                        let (key, op, value, eff) =
                            (&tol.key, &tol.operator, &tol.value, &tol.effect);
                        let key_ok = match key.as_deref() {
                            None | Some("") => op.as_deref() == Some("Exists"),
                            Some(k) => k == t.key,
                        };
                        let value_ok = op.as_deref() == Some("Exists")
                            || value.as_deref().unwrap_or_default()
                                == t.value.as_deref().unwrap_or_default();
                        let effect_ok = eff.as_deref().is_none_or(|e| e.is_empty() || e == effect);
                        key_ok && value_ok && effect_ok
                    })
            })
        })
        .map(|p| Want {
            deployment: format!("pod {}", p.name),
            replicas: 1,
            need: p.need,
        })
        .collect()
}

/// A pool's size from demand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// Machines wanted, within the bounds.
    pub desired: u32,
    /// Machines the replicas need, before the bounds.
    pub needed: u32,
    /// Why, for `status.nodePools[].demand`.
    pub message: String,
}

/// How many machines of type `machine` hold `wants`: replicas bin-packed first-fit,
/// largest first, onto the type's vCPUs, memory and GPUs, then clamped to the bounds. A
/// replica larger than one machine counts for nothing and is named in the message.
/// `start` (the pool has never been sized) keeps at least `replicas`, the starting size.
pub fn size(
    pool: &NodePool,
    bounds: &Autoscaling,
    machine: Option<&InstanceType>,
    wants: &[Want],
    start: bool,
) -> Sizing {
    let (min, max) = (
        bounds.min_replicas.max(0) as u32,
        bounds.max_replicas.max(0) as u32,
    );
    let replicas: u32 = wants.iter().map(|w| w.replicas).sum();
    let mut items: Vec<Need> = wants
        .iter()
        .flat_map(|w| std::iter::repeat_n(w.need, w.replicas as usize))
        .collect();
    items.sort_by_key(|n| std::cmp::Reverse((n.gpu, n.cpu, n.memory_mb)));
    let mut too_big = 0u32;
    let mut bins: Vec<(u64, u64, u64)> = Vec::new();
    if let Some(t) = machine {
        let cap = (u64::from(t.vcpus), t.memory_mb, u64::from(t.gpu_count()));
        for n in &items {
            let (c, m, g) = (u64::from(n.cpu), n.memory_mb, u64::from(n.gpu));
            if c > cap.0 || m > cap.1 || g > cap.2 {
                too_big += 1;
                continue;
            }
            match bins.iter_mut().find(|b| b.0 >= c && b.1 >= m && b.2 >= g) {
                Some(b) => {
                    b.0 -= c;
                    b.1 -= m;
                    b.2 -= g;
                }
                None => bins.push((cap.0 - c, cap.1 - m, cap.2 - g)),
            }
        }
    }
    let needed = bins.len() as u32;
    let floor = if start {
        min.max(pool.replicas.max(0) as u32)
    } else {
        min
    };
    let desired = needed.max(floor).min(max);
    let bounds_text = format!("bounds {min}..{max}");
    let of = match machine {
        Some(t) => format!(" of type {}", t.name),
        None => String::new(),
    };
    let mut message = if replicas == 0 {
        format!("{desired} machine(s): no kelp Deployment runs on the pool ({bounds_text})")
    } else {
        let each = describe(wants);
        let base = format!("{needed} machine(s){of} for {replicas} replica(s){each}",);
        if needed > max {
            format!("{desired} machine(s), the most autoscaling allows: {base} ({bounds_text})")
        } else if desired > needed {
            let why = if start && desired == pool.replicas.max(0) as u32 && desired > min {
                "the starting size (replicas)"
            } else {
                "minReplicas"
            };
            format!("{desired} machine(s), {why}: {base} ({bounds_text})")
        } else {
            format!("{base} ({bounds_text})")
        }
    };
    if machine.is_none() && replicas > 0 {
        message = format!(
            "{desired} machine(s): no instance type known for the pool yet, so {replicas} replica(s) cannot be packed ({bounds_text})"
        );
    }
    if too_big > 0 {
        message.push_str(&format!(
            "; {too_big} replica(s) need more than one machine{of} offers and are not counted"
        ));
    }
    Sizing {
        desired,
        needed,
        message,
    }
}

/// ` needing 1 GPU each` when every replica needs the same, otherwise ` of N Deployments`
/// (or Pending Pods).
fn describe(wants: &[Want]) -> String {
    let needs: std::collections::BTreeSet<(u32, u32, u64)> = wants
        .iter()
        .filter(|w| w.replicas > 0)
        .map(|w| (w.need.gpu, w.need.cpu, w.need.memory_mb))
        .collect();
    match needs.iter().next() {
        Some(&(gpu, cpu, mem)) if needs.len() == 1 => {
            if gpu > 0 {
                format!(" needing {gpu} GPU each")
            } else {
                format!(" needing {cpu} CPU and {mem} MB each")
            }
        }
        _ => {
            let pods = wants
                .iter()
                .filter(|w| w.deployment.starts_with("pod "))
                .count();
            let deps = wants.iter().filter(|w| w.replicas > 0).count() - pods;
            match (deps, pods) {
                (d, 0) => format!(" of {d} Deployments"),
                (0, p) => format!(" of {p} Pending Pods"),
                (d, p) => format!(" of {d} Deployments and {p} Pending Pods"),
            }
        }
    }
}

/// What the target cluster shows of one machine: whether its Node carries kelp workload
/// Pods (None: not known, e.g. Pods cannot be listed there).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// kelp workload Pods on the machine's Node.
    pub kelp_pods: Option<u32>,
    /// The machine's Node, once it has joined.
    pub node: Option<String>,
    /// Its Node carries kelp's scale-down cordon (a scale-down not finished).
    pub cordoned: bool,
}

/// When each machine has been idle since, in pools with autoscaling: the time recorded
/// before (`before`, by machine name) while it stays idle, `now` when it turns idle, None
/// while it carries kelp Pods. Unknown usage keeps what was recorded.
pub fn idle_since(
    machine: &Machine,
    usage: Option<&Usage>,
    before: Option<&str>,
    now: &str,
) -> Option<String> {
    match usage.and_then(|u| u.kelp_pods) {
        Some(0) => Some(before.unwrap_or(now).to_string()),
        Some(_) => None,
        None if machine.state == MachineState::Pending => Some(before.unwrap_or(now).to_string()),
        None => before.map(str::to_string),
    }
}

/// The machines scale-down removes to bring `alive` down towards `desired`: only those
/// idle for at least `delay` (as `idle` says), emptiest first (pending, then fewest kelp
/// Pods), then newest. The others stay until they are idle long enough.
pub fn removable(
    desired: u32,
    machines: &[Machine],
    idle: impl Fn(&Machine) -> Option<(std::time::Duration, u32)>,
    delay: std::time::Duration,
) -> Vec<String> {
    let alive: Vec<&Machine> = machines
        .iter()
        .filter(|m| matches!(m.state, MachineState::Pending | MachineState::Running))
        .collect();
    let extra = (alive.len() as u32).saturating_sub(desired) as usize;
    if extra == 0 {
        return Vec::new();
    }
    let mut idle_long: Vec<(&Machine, u32)> = alive
        .into_iter()
        .filter_map(|m| {
            idle(m)
                .filter(|(for_, _)| *for_ >= delay)
                .map(|(_, pods)| (m, pods))
        })
        .collect();
    idle_long.sort_by(|(a, pa), (b, pb)| {
        let rank = |m: &Machine| (m.state == MachineState::Running) as u8;
        rank(a)
            .cmp(&rank(b))
            .then(pa.cmp(pb))
            .then(b.created_at.cmp(&a.created_at))
            .then(b.id.cmp(&a.id))
    });
    idle_long
        .into_iter()
        .take(extra)
        .map(|(m, _)| m.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t4() -> InstanceType {
        serde_yaml_ng::from_str(
            "{name: g-t4, vcpus: 4, memoryMb: 16384, gpu: {count: 1, vendor: NVIDIA, model: T4, memoryMb: 16384}, pricePerHour: 0.5}",
        )
        .unwrap()
    }

    fn pool(replicas: i32) -> NodePool {
        NodePool {
            name: "gpu".into(),
            replicas,
            ..Default::default()
        }
    }

    fn bounds(min: i32, max: i32) -> Autoscaling {
        Autoscaling {
            min_replicas: min,
            max_replicas: max,
            ..Default::default()
        }
    }

    fn want(name: &str, replicas: u32, cpu: u32, mem: u64, gpu: u32) -> Want {
        Want {
            deployment: format!("ns/{name}"),
            replicas,
            need: Need {
                cpu,
                memory_mb: mem,
                gpu,
            },
        }
    }

    #[test]
    fn gpu_replicas_take_one_machine_each_and_the_bounds_clamp() {
        let s = size(
            &pool(1),
            &bounds(0, 4),
            Some(&t4()),
            &[want("a", 3, 1, 2048, 1)],
            false,
        );
        assert_eq!((s.desired, s.needed), (3, 3));
        assert_eq!(
            s.message,
            "3 machine(s) of type g-t4 for 3 replica(s) needing 1 GPU each (bounds 0..4)"
        );
        let s = size(
            &pool(1),
            &bounds(0, 4),
            Some(&t4()),
            &[want("a", 5, 1, 2048, 1)],
            false,
        );
        assert_eq!((s.desired, s.needed), (4, 5));
        assert!(
            s.message
                .starts_with("4 machine(s), the most autoscaling allows: 5 machine(s)")
        );
    }

    #[test]
    fn cpu_replicas_share_machines_and_no_demand_means_min() {
        // 4 vCPUs each: 2+2 | 2+1 | 1 ... first fit, largest first.
        let s = size(
            &pool(1),
            &bounds(0, 10),
            Some(&t4()),
            &[want("a", 3, 2, 1024, 0), want("b", 2, 1, 1024, 0)],
            false,
        );
        assert_eq!(s.needed, 2);
        assert!(s.message.contains("of 2 Deployments"), "{}", s.message);
        let s = size(&pool(2), &bounds(0, 4), Some(&t4()), &[], false);
        assert_eq!(s.desired, 0);
        assert_eq!(
            s.message,
            "0 machine(s): no kelp Deployment runs on the pool (bounds 0..4)"
        );
        let s = size(&pool(2), &bounds(1, 4), Some(&t4()), &[], false);
        assert_eq!(s.desired, 1);
    }

    #[test]
    fn a_new_pool_starts_at_replicas_and_replicas_too_big_are_named() {
        let s = size(
            &pool(2),
            &bounds(0, 4),
            Some(&t4()),
            &[want("a", 1, 1, 1024, 1)],
            true,
        );
        assert_eq!(s.desired, 2);
        assert!(s.message.contains("the starting size"), "{}", s.message);
        let s = size(
            &pool(0),
            &bounds(0, 4),
            Some(&t4()),
            &[want("a", 2, 1, 1024, 2)],
            false,
        );
        assert_eq!(s.desired, 0);
        assert!(
            s.message.ends_with(
                "2 replica(s) need more than one machine of type g-t4 offers and are not counted"
            ),
            "{}",
            s.message
        );
    }

    fn machines(yaml: &str) -> Vec<Machine> {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn scale_down_takes_only_long_idle_machines_emptiest_and_newest_first() {
        let ms = machines(
            r#"
- {id: a, providerId: "sim:///a", name: a, instanceType: t, state: running, addresses: [], tags: {}, createdAt: "2026-01-01T00:00:01Z"}
- {id: b, providerId: "sim:///b", name: b, instanceType: t, state: running, addresses: [], tags: {}, createdAt: "2026-01-01T00:00:03Z"}
- {id: c, providerId: "sim:///c", name: c, instanceType: t, state: running, addresses: [], tags: {}, createdAt: "2026-01-01T00:00:02Z"}
- {id: d, providerId: "sim:///d", name: d, instanceType: t, state: pending, addresses: [], tags: {}, createdAt: "2026-01-01T00:00:00Z"}
"#,
        );
        let delay = std::time::Duration::from_secs(600);
        let long = std::time::Duration::from_secs(601);
        // a carries Pods; b and c idle long; d pending and idle long.
        let idle = |m: &Machine| match m.id.as_str() {
            "a" => None,
            "b" | "c" | "d" => Some((long, 0)),
            _ => unreachable!(),
        };
        assert_eq!(removable(2, &ms, idle, delay), vec!["d", "b"]);
        assert_eq!(removable(0, &ms, idle, delay), vec!["d", "b", "c"]);
        // Idle, but not for long enough: nothing goes.
        let short = |_: &Machine| Some((std::time::Duration::from_secs(10), 0));
        assert!(removable(0, &ms, short, delay).is_empty());
        assert!(removable(4, &ms, idle, delay).is_empty());
    }

    #[test]
    fn idle_time_starts_when_the_pods_go_and_is_kept_while_unknown() {
        let m = &machines(
            r#"[{id: a, providerId: "sim:///a", name: a, instanceType: t, state: running, addresses: [], tags: {}, createdAt: "2026-01-01T00:00:01Z"}]"#,
        )[0];
        let busy = Usage {
            kelp_pods: Some(2),
            node: None,
            cordoned: false,
        };
        let empty = Usage {
            kelp_pods: Some(0),
            node: None,
            cordoned: false,
        };
        assert_eq!(idle_since(m, Some(&busy), Some("t0"), "t1"), None);
        assert_eq!(
            idle_since(m, Some(&empty), None, "t1").as_deref(),
            Some("t1")
        );
        assert_eq!(
            idle_since(m, Some(&empty), Some("t0"), "t1").as_deref(),
            Some("t0")
        );
        assert_eq!(idle_since(m, None, Some("t0"), "t1").as_deref(), Some("t0"));
        assert_eq!(idle_since(m, None, None, "t1"), None);
    }

    #[test]
    fn pending_pods_that_select_the_pool_and_tolerate_it_count() {
        let mut pool = pool(0);
        pool.labels.insert("accelerator".into(), "t4".into());
        pool.taints.push(kelp_crds::Taint {
            key: "nvidia.com/gpu".into(),
            value: Some("present".into()),
            effect: kelp_crds::TaintEffect::NoSchedule,
        });
        let pod = |name: &str, selector: &[(&str, &str)], tolerates: bool| PendingPod {
            name: format!("ns/{name}"),
            node_selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tolerations: if tolerates {
                vec![k8s_openapi::api::core::v1::Toleration {
                    key: Some("nvidia.com/gpu".into()),
                    operator: Some("Exists".into()),
                    ..Default::default()
                }]
            } else {
                vec![]
            },
            need: Need {
                cpu: 1,
                memory_mb: 1024,
                gpu: 1,
            },
        };
        let pods = [
            pod("mine", &[("accelerator", "t4")], true),
            pod("by-pool", &[("kelp.imagine-ai.eu/pool", "gpu")], true),
            pod("untolerated", &[("accelerator", "t4")], false),
            pod("anywhere", &[], true),
            pod("other-pool", &[("kelp.imagine-ai.eu/pool", "cpu")], true),
            pod(
                "only-the-cluster",
                &[("kelp.imagine-ai.eu/cluster-uid", "u")],
                true,
            ),
        ];
        let w = pending_wants(&pool, "u", &pods);
        let names: Vec<&str> = w.iter().map(|w| w.deployment.as_str()).collect();
        assert_eq!(names, ["pod ns/mine", "pod ns/by-pool"]);
        let s = size(&pool, &bounds(0, 4), Some(&t4()), &w, false);
        assert_eq!(s.desired, 2);
        assert!(s.message.contains("needing 1 GPU each"), "{}", s.message);
    }
}
