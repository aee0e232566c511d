//! [`plan`](super::plan) from YAML fixtures: a Cluster, the types its cloud offers, and
//! what the cloud lists for each pool.

use super::*;

const TYPES: &str = r#"
- {name: cpu-4, vcpus: 4, memoryMb: 16384, pricePerHour: 0.2}
- {name: t4-1, vcpus: 8, memoryMb: 32768, gpu: {count: 1, vendor: NVIDIA, model: T4, memoryMb: 16384}, pricePerHour: 0.5}
- {name: t4-1-big, vcpus: 16, memoryMb: 65536, gpu: {count: 1, vendor: NVIDIA, model: T4, memoryMb: 16384}, pricePerHour: 0.9}
- {name: a10-1, vcpus: 8, memoryMb: 32768, gpu: {count: 1, vendor: NVIDIA, model: A10, memoryMb: 24576}, pricePerHour: 1.1}
"#;

/// A Cluster in namespace `ns` with UID `u` whose `spec` is `spec` (YAML).
fn cluster(spec: &str) -> Cluster {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Cluster\nmetadata: {{name: c, namespace: ns, generation: 1, uid: u}}\nspec:\n{spec}"
    ))
    .unwrap()
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml_ng::from_str(text).unwrap()
}

/// A machine line: `id state type created-seconds-after-09:00 [server]`.
fn machines(lines: &str) -> Vec<Machine> {
    lines
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let owner = Owner {
                role: if f.get(4) == Some(&"server") {
                    Role::Server
                } else {
                    Role::Agent
                },
                ..Owner::pool("u", "gpu")
            };
            yaml(&format!(
                "{{id: {id}, providerId: 'sim:///{id}', name: m-{id}, instanceType: {ty}, state: {st}, addresses: [], tags: {tags}, createdAt: '2026-01-01T09:{mm:02}:{ss:02}Z'}}",
                id = f[0],
                st = f[1],
                ty = f[2],
                tags = serde_json::to_string(&owner.tags()).unwrap(),
                mm = f[3].parse::<u32>().unwrap() / 60,
                ss = f[3].parse::<u32>().unwrap() % 60,
            ))
        })
        .collect()
}

/// Plans `cluster` with one pool's `listed` machines, the `pending` batches, at 09:10.
fn run(cluster: &Cluster, listed: &str, pending: &str) -> PoolActions {
    run_with(cluster, listed, pending, Some(&[]), &BTreeMap::new())
}

/// [`run`] with the pool's Deployments (`wants`; None: not known) and what the target
/// shows of each machine.
fn run_with(
    cluster: &Cluster,
    listed: &str,
    pending: &str,
    wants: Option<&[demand::Want]>,
    usage: &BTreeMap<String, demand::Usage>,
) -> PoolActions {
    let types: Vec<InstanceType> = yaml(TYPES);
    let pending: Vec<PendingCreate> = if pending.is_empty() {
        Vec::new()
    } else {
        yaml(pending)
    };
    let machines = vec![machines(listed)];
    let plan = plan(
        cluster,
        &Observed {
            types: &types,
            machines: &machines,
            pending: &pending,
            can_join: true,
            now: "2026-01-01T09:10:00Z".parse().unwrap(),
            grace: std::time::Duration::from_secs(120),
            wants: wants.map(|w| vec![w.to_vec()]).as_deref(),
            usage,
            other_price_per_hour: 0.0,
        },
    );
    plan.pools.into_iter().next().unwrap()
}

const GPU3: &str = "  cloud: {sim: {}}\n  nodePools: [{name: gpu, replicas: 3, machine: {gpu: {count: 1, model: T4}}}]\n";

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn agents(count: u32, alive: u32) -> Create {
    Create {
        batch_pool: "gpu".into(),
        role: Role::Agent,
        count,
        alive,
    }
}

#[test]
fn scale_up_is_one_batch_of_the_cheapest_type() {
    let p = run(&cluster(GPU3), "a running t4-1 0", "");
    assert_eq!(p.creates, vec![agents(2, 1)]);
    assert!(p.deletes.is_empty());
    let names: Vec<&str> = p.candidates.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["t4-1", "t4-1-big"]);
}

#[test]
fn the_type_the_pool_runs_is_tried_first() {
    let p = run(&cluster(GPU3), "a running t4-1-big 0", "");
    assert_eq!(p.candidates[0].name, "t4-1-big");
    assert_eq!(p.creates, vec![agents(2, 1)]);
}

#[test]
fn nothing_is_created_while_the_control_plane_takes_no_joins() {
    let types: Vec<InstanceType> = yaml(TYPES);
    let plan = plan(
        &cluster(GPU3),
        &Observed {
            types: &types,
            machines: &[Vec::new()],
            pending: &[],
            can_join: false,
            now: Timestamp::now(),
            grace: std::time::Duration::from_secs(120),
            wants: None,
            usage: &BTreeMap::new(),
            other_price_per_hour: 0.0,
        },
    );
    let p = &plan.pools[0];
    assert!(p.creates.is_empty() && p.deletes.is_empty());
    assert_eq!(p.desired, 3);
}

#[test]
fn a_batch_asked_for_and_not_listed_is_not_asked_again() {
    let pending =
        "[{key: k1, pool: gpu, count: 2, instanceType: t4-1, requestedAt: '2026-01-01T09:09:30Z'}]";
    let p = run(&cluster(GPU3), "a running t4-1 0", pending);
    assert!(p.creates.is_empty(), "{p:?}");
    // Once older than the grace period, it is asked for again.
    let old =
        "[{key: k1, pool: gpu, count: 2, instanceType: t4-1, requestedAt: '2026-01-01T09:00:00Z'}]";
    assert_eq!(
        run(&cluster(GPU3), "a running t4-1 0", old).creates,
        vec![agents(2, 1)]
    );
}

#[test]
fn failed_machines_are_deleted_and_replaced() {
    let p = run(
        &cluster(GPU3),
        "a running t4-1 0\nb failed t4-1 1\nc running t4-1 2",
        "",
    );
    assert_eq!(
        p.deletes,
        vec![Delete {
            ids: ids(&["b"]),
            reason: DeleteReason::Failed
        }]
    );
    assert_eq!(p.creates, vec![agents(1, 2)]);
}

#[test]
fn scale_down_removes_pending_then_newest_and_holds_young_extras_while_a_batch_is_pending() {
    let one = "  cloud: {sim: {}}\n  nodePools: [{name: gpu, replicas: 1, machine: {gpu: {count: 1, model: T4}}}]\n";
    let listed = "a running t4-1 0\nb running t4-1 300\nc pending t4-1 200";
    let p = run(&cluster(one), listed, "");
    assert_eq!(
        p.deletes,
        vec![Delete {
            ids: ids(&["c", "b"]),
            reason: DeleteReason::ScaleDown { to: 1 }
        }]
    );
    assert!(p.creates.is_empty() && p.held.is_empty());
    // While a batch of the pool is pending, a machine younger than the grace period
    // (b, 5 minutes old, is not; d, 30 s old, is) may be what the cloud is catching up on.
    let pending =
        "[{key: k1, pool: gpu, count: 1, instanceType: t4-1, requestedAt: '2026-01-01T09:09:30Z'}]";
    let p = run(
        &cluster(one),
        "a running t4-1 0\nb running t4-1 300\nd running t4-1 570",
        pending,
    );
    assert_eq!(p.deleted().collect::<Vec<_>>(), ["b"]);
    assert_eq!(p.held, ["gpu"]);
}

#[test]
fn a_pool_that_runs_the_server_has_one_server_machine_and_agents_for_the_rest() {
    let spec = "  cloud: {sim: {}}\n  kubernetes: {mode: Provision, controlPlane: {pool: gpu}}\n  nodePools: [{name: gpu, replicas: 3, machine: {gpu: {count: 1, model: T4}}}]\n";
    let p = run(&cluster(spec), "", "");
    assert_eq!(
        p.creates,
        vec![
            Create {
                batch_pool: "gpu-server".into(),
                role: Role::Server,
                count: 1,
                alive: 0
            },
            agents(2, 0)
        ]
    );
    // A failed server is replaced; the agents count apart from it.
    let p = run(
        &cluster(spec),
        "s failed t4-1 0 server\na running t4-1 1\nb running t4-1 2",
        "",
    );
    assert_eq!(
        p.deletes,
        vec![Delete {
            ids: ids(&["s"]),
            reason: DeleteReason::ServerFailed
        }]
    );
    assert_eq!(p.creates.len(), 1);
    assert_eq!(p.creates[0].role, Role::Server);
}

#[test]
fn a_type_that_no_longer_fits_is_rolled_within_max_surge() {
    // The pool asks for T4 now; it runs four A10 machines.
    let spec = "  cloud: {sim: {}}\n  nodePools: [{name: gpu, replicas: 4, maxSurge: 1, machine: {gpu: {count: 1, model: T4}}}]\n";
    let old = "o1 running a10-1 0\no2 running a10-1 1\no3 running a10-1 2\no4 running a10-1 3";
    let p = run(&cluster(spec), old, "");
    assert_eq!(p.creates, vec![agents(1, 0)], "one new machine first");
    assert!(
        p.deletes.is_empty(),
        "no old one goes before a new one runs"
    );
    assert!(p.rolling.as_deref().unwrap().contains("at most 1 extra"));
    // One new machine runs: one old one goes, and the next new one starts.
    let p = run(&cluster(spec), &format!("{old}\nn1 running t4-1 400"), "");
    assert_eq!(
        p.deletes,
        vec![Delete {
            ids: ids(&["o1"]),
            reason: DeleteReason::Replaced
        }]
    );
    assert_eq!(p.creates, vec![agents(1, 1)]);
}

const AUTO: &str = "  cloud: {sim: {}}\n  nodePools: [{name: gpu, replicas: 1, autoscaling: {minReplicas: 0, maxReplicas: 4, scaleDownDelaySeconds: 300}, machine: {gpu: {count: 1, model: T4}}}]\n";

fn gpu_replicas(n: u32) -> Vec<demand::Want> {
    vec![demand::Want {
        deployment: "ns/fish".into(),
        replicas: n,
        need: crate::deployment::build::Need {
            cpu: 2,
            memory_mb: 4096,
            gpu: 1,
        },
    }]
}

/// `cluster` with a status in which pool `gpu` has been sized and machine `m-<id>` has
/// been idle since the given time, for each `(id, since)`.
fn sized(cluster: &str, idle: &[(&str, &str)]) -> Cluster {
    let mut c = self::cluster(cluster);
    let machines: Vec<String> = idle
        .iter()
        .map(|(id, since)| format!("{{name: m-{id}, idleSince: '{since}'}}"))
        .collect();
    c.status = Some(yaml(&format!(
        "nodePools: [{{name: gpu, desired: 3, started: true, machines: [{}]}}]",
        machines.join(", ")
    )));
    c
}

#[test]
fn a_pool_that_follows_demand_grows_in_one_batch_within_its_bounds() {
    let c = sized(AUTO, &[]);
    let p = run_with(
        &c,
        "a running t4-1 0",
        "",
        Some(&gpu_replicas(3)),
        &BTreeMap::new(),
    );
    assert_eq!(p.desired, 3);
    assert_eq!(p.creates, vec![agents(2, 1)]);
    assert_eq!(
        p.demand.as_deref(),
        Some("3 machine(s) of type t4-1 for 3 replica(s) needing 1 GPU each (bounds 0..4)")
    );
    let p = run_with(&c, "", "", Some(&gpu_replicas(9)), &BTreeMap::new());
    assert_eq!(p.creates, vec![agents(4, 0)]);
    // A new pool starts at `replicas` even without demand.
    let p = run_with(&cluster(AUTO), "", "", Some(&[]), &BTreeMap::new());
    assert_eq!((p.desired, p.creates.clone()), (1, vec![agents(1, 0)]));
}

#[test]
fn only_machines_idle_for_the_delay_go_and_the_emptiest_first() {
    let listed = "a running t4-1 0\nb running t4-1 1\nc running t4-1 2";
    // b and c idle since 09:00 (10 minutes, over the 300 s delay); a carries Pods.
    let c = sized(
        AUTO,
        &[("b", "2026-01-01T09:00:00Z"), ("c", "2026-01-01T09:00:00Z")],
    );
    let usage: BTreeMap<String, demand::Usage> = [("a", 1), ("b", 0), ("c", 0)]
        .into_iter()
        .map(|(id, pods)| {
            (
                id.to_string(),
                demand::Usage {
                    kelp_pods: Some(pods),
                    node: Some(format!("m-{id}")),
                    cordoned: false,
                },
            )
        })
        .collect();
    let p = run_with(&c, listed, "", Some(&gpu_replicas(1)), &usage);
    assert_eq!(p.desired, 1);
    assert_eq!(
        p.deletes,
        vec![Delete {
            ids: ids(&["c", "b"]),
            reason: DeleteReason::Idle {
                to: 1,
                delay_s: 300
            },
        }]
    );
    assert_eq!(
        p.idle_since.get("m-b").map(String::as_str),
        Some("2026-01-01T09:00:00Z")
    );
    assert!(!p.idle_since.contains_key("m-a"));
    // Idle for two minutes only: nothing goes yet, and the plan says when one may.
    let c = sized(
        AUTO,
        &[("b", "2026-01-01T09:08:00Z"), ("c", "2026-01-01T09:08:00Z")],
    );
    let p = run_with(&c, listed, "", Some(&gpu_replicas(1)), &usage);
    assert!(p.deletes.is_empty(), "{p:?}");
    assert_eq!(p.scale_down_in, Some(std::time::Duration::from_secs(180)));
    // While demand is not known, nothing goes, and the size stays.
    let c = sized(
        AUTO,
        &[("b", "2026-01-01T09:00:00Z"), ("c", "2026-01-01T09:00:00Z")],
    );
    let p = run_with(&c, listed, "", None, &usage);
    assert!(p.deletes.is_empty() && p.creates.is_empty(), "{p:?}");
    assert_eq!(p.desired, 3);
}

#[test]
fn a_budget_stops_creates_and_never_deletes() {
    let spec = format!("{AUTO}  budget: {{maxPricePerHour: 1.2}}\n");
    let c = sized(&spec, &[]);
    let p = run_with(
        &c,
        "a running t4-1 0",
        "",
        Some(&gpu_replicas(4)),
        &BTreeMap::new(),
    );
    // 0.5 now; one more makes 1.0; a third would make 1.5.
    assert_eq!(p.creates, vec![agents(1, 1)]);
    assert_eq!(
        p.over_budget.as_deref(),
        Some(
            "pool gpu: 2 more machine(s) of type t4-1 would take the Cluster to 2.00 per hour, over its budget of 1.20"
        )
    );
    // Over budget already: nothing new, nothing deleted.
    let spec = format!("{GPU3}  budget: {{maxPricePerHour: 0.4}}\n");
    let p = run(&cluster(&spec), "a running t4-1 0", "");
    assert!(p.creates.is_empty() && p.deletes.is_empty(), "{p:?}");
    assert!(p.over_budget.is_some());
}
