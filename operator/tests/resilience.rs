//! Crashes and cloud faults: never a duplicate machine, never a leaked one, no hot loop.

mod common;

use std::time::Duration;

use common::*;
use kelp_cloud_drivers::sim::SimConfig;
use kelp_crds::Cluster;

/// Crash points, in milliseconds after the operator (re)starts: spread over create,
/// scale and delete, fixed so that every run exercises the same schedule.
const CRASH_AFTER_MS: &[u64] = &[3, 11, 25, 40, 7, 60, 15, 90, 33, 5];

fn three_pools(name: &str, cpu: u32, t4: u32, a100: u32) -> String {
    format!(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  cloud: {{sim: {{latencyMs: 2}}}}
  nodePools:
    - {{name: cpu, replicas: {cpu}, machine: {{cpu: 4, memoryMB: 8000}}}}
    - {{name: t4, replicas: {t4}, machine: {{cpu: 4, gpu: {{count: 1, model: T4}}}}}}
    - {{name: a100, replicas: {a100}, machine: {{gpu: {{count: 1, model: A100}}}}}}
"#
    )
}

async fn crash_repeatedly(h: &mut Harness, schedule: &[u64]) {
    for ms in schedule {
        h.start();
        tokio::time::sleep(Duration::from_millis(*ms)).await;
        h.crash().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_during_create_scale_and_delete_never_double_or_leak_machines() {
    let mut h = Harness::new().await;
    h.apply_yaml(&three_pools("r", 3, 2, 1)).await;

    // Create, with crashes at every stage of the first reconciles.
    crash_repeatedly(&mut h, CRASH_AFTER_MS).await;
    h.start();
    h.cluster_ready("r").await;
    let sim = h.sim("r").await;
    let by_pool = machines_by_pool(&sim);
    assert_eq!(
        (
            by_pool.get("cpu"),
            by_pool.get("t4"),
            by_pool.get("a100"),
            by_pool.get("control-plane")
        ),
        (Some(&3), Some(&2), Some(&1), Some(&1))
    );
    assert_eq!(
        sim.all_created(),
        7,
        "every machine created exactly once despite the crashes"
    );
    h.crash().await;

    // Scale, with crashes.
    h.patch_spec::<Cluster>("r", serde_json::json!({"nodePools": [
        {"name": "cpu", "replicas": 6, "machine": {"cpu": 4, "memoryMB": 8000}},
        {"name": "t4", "replicas": 1, "machine": {"cpu": 4, "gpu": {"count": 1, "model": "T4"}}},
        {"name": "a100", "replicas": 1, "machine": {"gpu": {"count": 1, "model": "A100"}}},
    ]}))
    .await;
    crash_repeatedly(&mut h, &CRASH_AFTER_MS[3..]).await;
    h.start();
    h.cluster_ready("r").await;
    let by_pool = machines_by_pool(&sim);
    assert_eq!(
        (by_pool.get("cpu"), by_pool.get("t4"), by_pool.get("a100")),
        (Some(&6), Some(&1), Some(&1))
    );
    assert_eq!(
        sim.all_created(),
        10,
        "exactly the three missing cpu machines were added"
    );
    h.crash().await;

    // Delete, with crashes: the finalizer stays until the cloud has nothing left.
    h.delete::<Cluster>("r").await;
    crash_repeatedly(&mut h, &CRASH_AFTER_MS[..5]).await;
    h.start();
    h.wait::<Cluster>("r", "gone", |c| c.is_none()).await;
    assert!(
        sim.all_machines().is_empty(),
        "leaked: {:?}",
        sim.all_machines()
    );
    assert_eq!(sim.all_created(), 10);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_thirty_percent_of_cloud_calls_failing_everything_converges_without_a_hot_loop() {
    let mut h = Harness::with_sim(SimConfig::fast()).await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.apply_yaml(
        &three_pools("f", 2, 2, 1).replace("latencyMs: 2", "latencyMs: 2, failureRate: 0.3"),
    )
    .await;
    h.apply_yaml(&deployment("fish", "f", 1)).await;
    // Creates that succeed in the cloud but report an error (a timeout after the fact).
    let sim = loop {
        if let Ok(c) = h.api::<Cluster>().get("f").await
            && let Some(s) = h.env.sims.get(&kube::ResourceExt::uid(&c).unwrap())
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    sim.set_failure_after_effect("create", 0.3);
    h.cluster_ready("f").await;
    h.deployment_ready("fish").await;
    let by_pool = machines_by_pool(&sim);
    assert_eq!(
        (by_pool.get("cpu"), by_pool.get("t4"), by_pool.get("a100")),
        (Some(&2), Some(&2), Some(&1))
    );
    assert_eq!(
        sim.all_created(),
        6,
        "failed-after-effect creates were adopted, not repeated"
    );
    let stats = sim.stats();
    let failed: u64 = stats.snapshot().iter().map(|r| r.error_count()).sum();
    assert!(failed > 0, "faults were injected");
    let calls = stats.total_calls();
    // Bounded: a converging Cluster costs a few calls per reconcile, not a storm.
    assert!(calls < 400, "{calls} cloud calls for 6 machines");

    // Steady state: once the last retries settle, no cloud calls until the resync period.
    let mut settled = stats.total_calls();
    let mut quiet = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = stats.total_calls();
        quiet = if now == settled { quiet + 1 } else { 0 };
        settled = now;
        if quiet == 5 {
            break;
        }
    }
    assert_eq!(quiet, 5, "cloud calls never stopped: a hot loop");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(stats.total_calls(), settled, "cloud calls while idle");
    let ctx = h.stop().await;
    println!(
        "30% faults: {calls} cloud calls ({failed} failed), {} reconciles",
        ctx.metrics.reconcile_count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_capacity_falls_back_to_the_next_cheapest_type() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(&three_pools("cap", 0, 2, 0)).await;
    let sim = loop {
        if let Ok(c) = h.api::<Cluster>().get("cap").await
            && let Some(s) = h.env.sims.get(&kube::ResourceExt::uid(&c).unwrap())
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // The cheapest T4 type has no capacity: the pool uses the next one, and says so.
    let cheapest = kelp_cloud_drivers::select::choose(
        &sim.config().instance_types,
        &kelp_cloud_drivers::Requirements {
            cpu: Some(4),
            gpu_count: 1,
            gpu_model: Some("T4".into()),
            ..Default::default()
        },
    )
    .unwrap()
    .name
    .clone();
    sim.set_insufficient(&cheapest, true);
    let c = h.cluster_ready("cap").await;
    let pool = c
        .status
        .unwrap()
        .node_pools
        .into_iter()
        .find(|p| p.name == "t4")
        .unwrap();
    assert_ne!(pool.instance_type.as_deref(), Some(cheapest.as_str()));
    assert!(
        sim.machines()
            .iter()
            .filter(|m| m
                .tags
                .get(kelp_cloud_drivers::tags::POOL)
                .map(String::as_str)
                == Some("t4"))
            .all(|m| m.instance_type != cheapest)
    );
    let events =
        kube::Api::<k8s_openapi::api::events::v1::Event>::default_namespaced(h.client.clone())
            .list(&Default::default())
            .await
            .unwrap();
    // Either the first attempt hit the gap, or the type was chosen after it was marked.
    let _ = events
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some("InsufficientCapacity"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_of_clusters_that_no_longer_exist_are_deleted_after_a_grace_period() {
    use kelp_cloud_drivers::{CloudDriver, CreateRequest, tags};
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(&three_pools("a", 1, 0, 0)).await;
    h.apply_yaml(&three_pools("b", 1, 0, 0)).await;
    h.cluster_ready("a").await;
    let b = h.cluster_ready("b").await;
    let sim = h.sim("a").await;
    // Two machines in a's account, as another kelp left them: one for a Cluster that is
    // gone, one for Cluster b, which exists.
    let make = |uid: &str| {
        let mut t = std::collections::BTreeMap::new();
        t.insert(tags::MANAGED_BY.to_string(), "kelp".to_string());
        t.insert(tags::CLUSTER_UID.to_string(), uid.to_string());
        t.insert(tags::POOL.to_string(), "cpu".to_string());
        CreateRequest {
            count: 1,
            instance_type: "sim.cpu-2".into(),
            image: None,
            user_data: String::new(),
            owner: kelp_cloud_drivers::Owner::from_tags(&t).expect("kelp tags"),
            name_prefix: format!("stray-{uid}"),
            idempotency_key: String::new(),
            disk_gb: None,
        }
    };
    let driver = sim.driver();
    let gone = driver.create(&make("0000-gone")).await.unwrap();
    let kept = driver
        .create(&make(&kube::ResourceExt::uid(&b).unwrap()))
        .await
        .unwrap();
    // Any change makes a reconcile; while an orphan waits out its grace the Cluster is
    // looked at again, and the sweep runs at most every 100 ms (test config). Touch the
    // Cluster now and then so a reconcile always comes after a sweep interval.
    for i in 0..100 {
        if sim.machines().iter().all(|m| m.id != gone[0].id) {
            break;
        }
        if i % 10 == 0 {
            h.api::<Cluster>()
                .patch(
                    "a",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(
                        serde_json::json!({"metadata": {"annotations": {"touched": i.to_string()}}}),
                    ),
                )
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<String> = sim.machines().into_iter().map(|m| m.id).collect();
    assert!(!ids.contains(&gone[0].id), "the orphan was deleted");
    assert!(
        ids.contains(&kept[0].id),
        "a machine of a live Cluster is never an orphan"
    );
    let ctx = h.stop().await;
    assert_eq!(
        ctx.metrics
            .orphans_deleted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let events =
        kube::Api::<k8s_openapi::api::core::v1::Event>::default_namespaced(h.client.clone())
            .list(&Default::default())
            .await
            .unwrap();
    assert!(events.items.iter().any(|e| {
        e.reason.as_deref() == Some("OrphansDeleted")
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains("0000-gone"))
    }));
}

/// A cloud that lists new machines only after a while and ignores idempotency keys (an
/// EC2-compatible endpoint dropping ClientToken, or Nova): kelp records each batch in the
/// Cluster's status before asking, and neither its own follow-up reconciles nor a
/// restarted operator ask again while the batch is not listed yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_that_lists_late_and_ignores_keys_gets_each_batch_once() {
    let mut h = Harness::with_sim(SimConfig {
        list_lag: Duration::from_millis(1000),
        ignore_idempotency: true,
        ..SimConfig::fast()
    })
    .await;
    // Without kills: the follow-up reconciles (every 50 ms here) find the batch pending.
    h.apply_yaml(&three_pools("late", 3, 2, 1)).await;
    h.start();
    h.cluster_ready("late").await;
    let sim = h.sim("late").await;
    assert_eq!(sim.all_created(), 7, "{:?}", machines_by_pool(&sim));
    let c = h.api::<Cluster>().get("late").await.unwrap();
    assert!(
        c.status.unwrap().pending_creates.is_empty(),
        "listed batches leave the status"
    );

    // With kills while a scale-up's batch is not listed yet.
    h.patch_spec::<Cluster>("late", serde_json::json!({"nodePools": [
        {"name": "cpu", "replicas": 6, "machine": {"cpu": 4, "memoryMB": 8000}},
        {"name": "t4", "replicas": 2, "machine": {"cpu": 4, "gpu": {"count": 1, "model": "T4"}}},
        {"name": "a100", "replicas": 1, "machine": {"gpu": {"count": 1, "model": "A100"}}},
    ]}))
    .await;
    for _ in 0..200 {
        if sim.all_created() > 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sim.all_created(), 10, "the batch of 3 was asked for");
    h.crash().await;
    // Restarts within the lag: the status tells them the batch is on its way.
    crash_repeatedly(&mut h, &[40, 120, 200]).await;
    h.start();
    h.cluster_ready("late").await;
    assert_eq!(sim.all_created(), 10, "{:?}", machines_by_pool(&sim));
    assert_eq!(machines_by_pool(&sim).get("cpu"), Some(&6));

    // Crashes at fixed points of a scale-up from the start.
    h.crash().await;
    h.patch_spec::<Cluster>("late", serde_json::json!({"nodePools": [
        {"name": "cpu", "replicas": 8, "machine": {"cpu": 4, "memoryMB": 8000}},
        {"name": "t4", "replicas": 3, "machine": {"cpu": 4, "gpu": {"count": 1, "model": "T4"}}},
        {"name": "a100", "replicas": 1, "machine": {"gpu": {"count": 1, "model": "A100"}}},
    ]}))
    .await;
    crash_repeatedly(&mut h, CRASH_AFTER_MS).await;
    h.start();
    h.cluster_ready("late").await;
    let by_pool = machines_by_pool(&sim);
    assert_eq!(
        (by_pool.get("cpu"), by_pool.get("t4")),
        (Some(&8), Some(&3))
    );
    assert_eq!(sim.all_created(), 13, "{by_pool:?}");
    h.stop().await;
}

/// Changing a pool's instance type rolls it in steps of `maxSurge`: never more than
/// replicas + maxSurge machines at once, and the old ones go as new ones run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_type_roll_respects_max_surge() {
    let mut h = Harness::new().await;
    let pool = |t: &str| {
        format!(
            r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {{name: roll}}
spec:
  cloud: {{sim: {{latencyMs: 2}}}}
  nodePools:
    - {{name: gpu, replicas: 4, maxSurge: 1, machine: {{instanceType: {t}}}}}
"#
        )
    };
    h.apply_yaml(&pool("sim.t4-4")).await;
    h.start();
    h.cluster_ready("roll").await;
    let sim = h.sim("roll").await;
    h.apply_yaml(&pool("sim.t4-8")).await;
    let mut most = 0;
    for _ in 0..2000 {
        let gpu: Vec<_> = sim
            .machines()
            .into_iter()
            .filter(|m| {
                m.tags
                    .get(kelp_cloud_drivers::tags::POOL)
                    .map(String::as_str)
                    == Some("gpu")
            })
            .collect();
        most = most.max(gpu.len());
        if gpu.len() == 4 && gpu.iter().all(|m| m.instance_type == "sim.t4-8") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c = h.cluster_ready("roll").await;
    let pool = &c.status.unwrap().node_pools[0];
    assert_eq!(pool.instance_type.as_deref(), Some("sim.t4-8"));
    assert_eq!(pool.ready, 4);
    assert!(
        most <= 5,
        "at most 4 + maxSurge 1 machines at once, saw {most}"
    );
    assert_eq!(sim.all_created(), 9, "4, then 5 (4 new + control plane)");
    h.stop().await;
}
