//! The simulated cloud through its public API, as the operator uses it.
//!
//! Time is paused (tokio test-util), so delays advance only when every task waits:
//! the boot and termination tests are exact, never timing-sensitive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kelp_cloud_drivers::metered::verbs;
use kelp_cloud_drivers::sim::catalogue;
use kelp_cloud_drivers::{
    CloudDriver, CloudError, CreateRequest, MachineState, Metered, Owner, Requirements, SimCloud,
    SimConfig, choose, sim_config_from, tags,
};

fn pool_tags(pool: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            tags::MANAGED_BY.to_string(),
            tags::MANAGED_BY_VALUE.to_string(),
        ),
        (tags::CLUSTER_UID.to_string(), "uid-1".to_string()),
        (tags::POOL.to_string(), pool.to_string()),
    ])
}

fn request(pool: &str, instance_type: &str, count: u32, key: &str) -> CreateRequest {
    CreateRequest {
        count,
        instance_type: instance_type.to_string(),
        image: None,
        user_data: "#cloud-config\n".to_string(),
        owner: Owner::from_tags(&pool_tags(pool)).expect("kelp tags"),
        name_prefix: format!("c1-{pool}"),
        idempotency_key: key.to_string(),
        disk_gb: None,
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn create_list_delete_by_tags() {
    let cloud = SimCloud::new(SimConfig::fast());
    let d = cloud.driver();
    assert_eq!(d.name(), "sim");

    let gpus = d.create(&request("gpu", "sim.t4-4", 3, "")).await.unwrap();
    let cpus = d.create(&request("cpu", "sim.cpu-2", 2, "")).await.unwrap();
    assert_eq!(gpus.len(), 3);
    for m in &gpus {
        assert!(m.id.starts_with("sim-") && m.id.len() == 12, "{}", m.id);
        assert!(m.id[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(m.provider_id, format!("sim:///{}", m.id));
        let suffix = m.name.strip_prefix("c1-gpu-").unwrap();
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(m.instance_type, "sim.t4-4");
        assert_eq!(m.state, MachineState::Pending);
        assert_eq!(m.tags, pool_tags("gpu"));
        assert_eq!(m.addresses.len(), 1);
        assert_eq!(m.addresses[0].kind, "InternalIP");
        assert!(m.addresses[0].address.starts_with("10."));
        assert!(
            m.created_at.ends_with('Z') && m.created_at.contains('T'),
            "{}",
            m.created_at
        );
    }
    let mut ips: Vec<String> = gpus
        .iter()
        .chain(&cpus)
        .map(|m| m.addresses[0].address.clone())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 5, "addresses are unique");

    // All tags must match; an empty filter lists everything.
    let listed = d.list(&pool_tags("gpu")).await.unwrap();
    assert_eq!(
        listed.iter().map(|m| &m.id).collect::<Vec<_>>(),
        gpus.iter().map(|m| &m.id).collect::<Vec<_>>()
    );
    let uid_only = BTreeMap::from([(tags::CLUSTER_UID.to_string(), "uid-1".to_string())]);
    assert_eq!(d.list(&uid_only).await.unwrap().len(), 5);
    assert_eq!(d.list(&BTreeMap::new()).await.unwrap().len(), 5);
    let other = BTreeMap::from([(tags::CLUSTER_UID.to_string(), "uid-2".to_string())]);
    assert!(d.list(&other).await.unwrap().is_empty());

    // Delete: unknown IDs are fine; deleted machines are Terminating, then gone.
    let ids = vec![gpus[0].id.clone(), "sim-deadbeef".to_string()];
    d.delete(&ids).await.unwrap();
    let listed = d.list(&pool_tags("gpu")).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].state, MachineState::Terminating);
    assert_eq!(
        cloud.machines().len(),
        4,
        "terminating machines hold no capacity"
    );
    assert_eq!(cloud.all_machines().len(), 5);
    sleep_ms(20).await;
    let listed = d.list(&pool_tags("gpu")).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|m| m.id != gpus[0].id));
    // Deleting again, or deleting what is gone, is still success.
    d.delete(&ids).await.unwrap();
    assert_eq!(cloud.all_created(), 5);
}

#[tokio::test(start_paused = true)]
async fn pending_then_running() {
    let cloud = SimCloud::new(SimConfig::fast());
    let d = cloud.driver();
    let made = d.create(&request("p", "sim.cpu-4", 1, "")).await.unwrap();
    assert_eq!(made[0].state, MachineState::Pending);
    sleep_ms(5).await;
    assert_eq!(
        d.list(&pool_tags("p")).await.unwrap()[0].state,
        MachineState::Pending
    );
    sleep_ms(20).await;
    assert_eq!(
        d.list(&pool_tags("p")).await.unwrap()[0].state,
        MachineState::Running
    );

    assert!(cloud.set_machine_failed(&made[0].id));
    assert!(!cloud.set_machine_failed("sim-00000000"));
    assert_eq!(cloud.machines()[0].state, MachineState::Failed);
}

#[tokio::test(start_paused = true)]
async fn idempotency_key_returns_first_batch() {
    let cloud = SimCloud::new(SimConfig::fast());
    let d = cloud.driver();
    let req = request("gpu", "sim.t4-4", 2, "uid-1/gpu/gen1/batch0");
    let first = d.create(&req).await.unwrap();
    let again = d.create(&req).await.unwrap();
    assert_eq!(
        first.iter().map(|m| &m.id).collect::<Vec<_>>(),
        again.iter().map(|m| &m.id).collect::<Vec<_>>()
    );
    assert_eq!(cloud.all_created(), 2);
    assert_eq!(cloud.machines().len(), 2);

    // A new driver (a restarted operator) over the same cloud sees the same keys.
    let restarted = cloud.driver();
    assert_eq!(restarted.create(&req).await.unwrap().len(), 2);
    assert_eq!(cloud.all_created(), 2);

    // Same key, other parameters: refused, as EC2's IdempotentParameterMismatch.
    let changed = CreateRequest {
        count: 3,
        ..req.clone()
    };
    let err = d.create(&changed).await.unwrap_err();
    assert_eq!(err.label(), "Invalid");

    // Without a key every call creates.
    let keyless = CreateRequest {
        idempotency_key: String::new(),
        ..req
    };
    d.create(&keyless).await.unwrap();
    d.create(&keyless).await.unwrap();
    assert_eq!(cloud.all_created(), 6);
}

#[tokio::test(start_paused = true)]
async fn capacity_is_all_or_nothing_and_freed_by_delete() {
    let cloud = SimCloud::new(SimConfig {
        capacity: BTreeMap::from([("t4".to_string(), 4)]),
        ..SimConfig::fast()
    });
    let d = cloud.driver();
    d.create(&request("a", "sim.t4-4", 3, "")).await.unwrap();
    // Two more would make five: none is created.
    let err = d
        .create(&request("b", "sim.t4-8", 2, ""))
        .await
        .unwrap_err();
    match &err {
        CloudError::InsufficientCapacity {
            instance_type,
            message,
        } => {
            assert_eq!(instance_type, "sim.t4-8");
            assert!(message.contains("3 of 4"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(cloud.machines().len(), 3);
    // Other models are not limited by the T4 key.
    d.create(&request("c", "sim.v100-8", 5, "")).await.unwrap();
    // One still fits; after a delete, capacity is back at once.
    d.create(&request("b", "sim.t4-8", 1, "")).await.unwrap();
    assert!(d.create(&request("b", "sim.t4-8", 1, "")).await.is_err());
    let a = d.list(&pool_tags("a")).await.unwrap();
    d.delete(&[a[0].id.clone()]).await.unwrap();
    d.create(&request("b", "sim.t4-8", 1, "")).await.unwrap();

    // An instance type name is a key too; so is `cpu`.
    cloud.set_capacity("sim.cpu-2", Some(1));
    cloud.set_capacity("cpu", Some(2));
    d.create(&request("cpu", "sim.cpu-2", 1, "")).await.unwrap();
    assert!(d.create(&request("cpu", "sim.cpu-2", 1, "")).await.is_err());
    d.create(&request("cpu", "sim.cpu-4", 1, "")).await.unwrap();
    assert!(d.create(&request("cpu", "sim.cpu-8", 1, "")).await.is_err());
    cloud.set_capacity("cpu", None);
    d.create(&request("cpu", "sim.cpu-8", 1, "")).await.unwrap();

    // Insufficient types refuse whatever the capacity.
    cloud.set_insufficient("sim.h100-26", true);
    let err = d
        .create(&request("h", "sim.h100-26", 1, ""))
        .await
        .unwrap_err();
    assert_eq!(err.label(), "InsufficientCapacity");
    cloud.set_insufficient("sim.h100-26", false);
    d.create(&request("h", "sim.h100-26", 1, "")).await.unwrap();
    assert_eq!(cloud.stats().errors_labelled("InsufficientCapacity"), 5);
}

#[tokio::test(start_paused = true)]
async fn quotas() {
    let cloud = SimCloud::new(SimConfig {
        quota_machines: Some(3),
        quota_vcpus: Some(12),
        ..SimConfig::fast()
    });
    let d = cloud.driver();
    d.create(&request("a", "sim.cpu-4", 2, "")).await.unwrap(); // 8 vCPUs
    let err = d
        .create(&request("a", "sim.cpu-8", 1, ""))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::QuotaExceeded(m) if m.contains("vCPUs")),
        "{err}"
    );
    d.create(&request("a", "sim.cpu-2", 1, "")).await.unwrap(); // 10 vCPUs, 3 machines
    let err = d
        .create(&request("a", "sim.cpu-2", 1, ""))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::QuotaExceeded(m) if m.contains("machines")),
        "{err}"
    );
    assert_eq!(cloud.all_created(), 3);
}

#[tokio::test(start_paused = true)]
async fn invalid_requests() {
    let cloud = SimCloud::new(SimConfig::fast());
    let d = cloud.driver();
    let err = d
        .create(&request("a", "m5.large", 1, ""))
        .await
        .unwrap_err();
    assert_eq!(err.label(), "Invalid");
    let err = d
        .create(&request("a", "sim.cpu-2", 0, ""))
        .await
        .unwrap_err();
    assert_eq!(err.label(), "Invalid");
    let bad_image = CreateRequest {
        image: Some("windows-11".to_string()),
        ..request("a", "sim.cpu-2", 1, "")
    };
    assert_eq!(d.create(&bad_image).await.unwrap_err().label(), "Invalid");
    let good_image = CreateRequest {
        image: Some("debian-12".to_string()),
        ..request("a", "sim.cpu-2", 1, "")
    };
    d.create(&good_image).await.unwrap();
    assert_eq!(cloud.all_created(), 1);
}

#[tokio::test(start_paused = true)]
async fn images_and_instance_types() {
    let cloud = SimCloud::new(SimConfig::fast());
    let d = cloud.driver();
    let default = d.resolve_image(None).await.unwrap();
    assert_eq!(default.name, "ubuntu-24.04");
    assert_eq!(default.id, "sim-img-ubuntu-2404-20250301", "newest wins");
    let by_id = d
        .resolve_image(Some("sim-img-ubuntu-2404-20240601"))
        .await
        .unwrap();
    assert_eq!(by_id.created_at.as_deref(), Some("2024-06-01T00:00:00Z"));
    assert_eq!(
        d.resolve_image(Some("Debian-12")).await.unwrap().name,
        "debian-12"
    );
    let err = d.resolve_image(Some("nope")).await.unwrap_err();
    assert_eq!(err.label(), "NotFound");

    let types = d.instance_types().await.unwrap();
    assert_eq!(types, catalogue());
    // The catalogue works with selection as a user would ask.
    let t4 = Requirements {
        gpu_count: 1,
        gpu_model: Some("T4".to_string()),
        ..Default::default()
    };
    assert_eq!(choose(&types, &t4).unwrap().name, "sim.t4-4");
    let a100 = Requirements {
        gpu_count: 1,
        gpu_model: Some("A100".to_string()),
        gpu_memory_mb: Some(80000),
        ..Default::default()
    };
    assert_eq!(choose(&types, &a100).unwrap().name, "sim.a100-80g-12");
    let small = Requirements {
        cpu: Some(2),
        memory_mb: Some(4096),
        ..Default::default()
    };
    assert_eq!(choose(&types, &small).unwrap().name, "sim.cpu-2");
}

#[tokio::test(start_paused = true)]
async fn failure_rate_is_roughly_honoured() {
    let cloud = SimCloud::new(SimConfig {
        failure_rate: 0.3,
        ..SimConfig::fast()
    });
    let d = cloud.driver();
    let (mut transient, mut throttled) = (0, 0);
    for _ in 0..1000 {
        match d.list(&BTreeMap::new()).await {
            Ok(_) => {}
            Err(CloudError::Transient(_)) => transient += 1,
            Err(CloudError::Throttled { retry_after, .. }) => {
                assert!(retry_after.is_some());
                throttled += 1;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    let failed = transient + throttled;
    assert!((230..=370).contains(&failed), "{failed} failures of 1000");
    assert!(
        throttled > 0 && transient > throttled,
        "{transient} {throttled}"
    );
    let stats = cloud.stats();
    assert_eq!(stats.calls(verbs::LIST), 1000);
    assert_eq!(stats.errors(verbs::LIST), failed);

    // Per-verb rates override the global one; a failed create creates nothing.
    cloud.set_failure_rate(0.0);
    cloud.set_verb_failure_rate(verbs::CREATE, Some(1.0));
    assert!(d.list(&BTreeMap::new()).await.is_ok());
    assert!(d.create(&request("a", "sim.cpu-2", 2, "")).await.is_err());
    assert_eq!(cloud.all_created(), 0);
    cloud.set_verb_failure_rate(verbs::CREATE, None);
    d.create(&request("a", "sim.cpu-2", 2, "")).await.unwrap();
    assert_eq!(cloud.all_created(), 2);
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_run() {
    async fn run() -> Vec<String> {
        let cloud = SimCloud::new(SimConfig {
            failure_rate: 0.5,
            ..SimConfig::fast()
        });
        let d = cloud.driver();
        let mut out = Vec::new();
        for _ in 0..20 {
            match d.create(&request("a", "sim.cpu-2", 1, "")).await {
                Ok(m) => out.push(format!("{} {}", m[0].id, m[0].name)),
                Err(e) => out.push(e.label().to_string()),
            }
        }
        out
    }
    assert_eq!(run().await, run().await);
}

#[tokio::test(start_paused = true)]
async fn failure_after_effect_then_list_by_tags() {
    let cloud = SimCloud::new(SimConfig::fast());
    let d = cloud.driver();
    cloud.fail_next_after_effect(verbs::CREATE, 1);
    let req = request("gpu", "sim.t4-4", 2, "k1");
    let err = d.create(&req).await.unwrap_err();
    assert_eq!(err.label(), "Transient");
    // The machines exist although the call failed: list by tags finds them.
    assert_eq!(cloud.all_created(), 2);
    assert_eq!(d.list(&pool_tags("gpu")).await.unwrap().len(), 2);
    // A retry with the same key returns them instead of creating more.
    assert_eq!(d.create(&req).await.unwrap().len(), 2);
    assert_eq!(cloud.all_created(), 2);

    // Rate-based, on delete: the machines are deleted anyway.
    cloud.set_failure_after_effect(verbs::DELETE, 1.0);
    let ids: Vec<String> = cloud.machines().into_iter().map(|m| m.id).collect();
    assert!(d.delete(&ids).await.is_err());
    assert!(cloud.machines().is_empty());

    // Forced failures before the effect: nothing happens, then the next call works.
    cloud.fail_next(verbs::CREATE, 2);
    assert!(d.create(&request("x", "sim.cpu-2", 1, "")).await.is_err());
    assert!(d.create(&request("x", "sim.cpu-2", 1, "")).await.is_err());
    assert_eq!(cloud.all_created(), 2);
    d.create(&request("x", "sim.cpu-2", 1, "")).await.unwrap();
    assert_eq!(cloud.all_created(), 3);
}

#[tokio::test(start_paused = true)]
async fn latency_and_metered_sim() {
    let cloud = SimCloud::new(SimConfig::fast());
    cloud.set_latency(Duration::from_millis(7));
    let shared: Arc<dyn CloudDriver> = Arc::new(cloud.driver());
    let m = Metered::new(shared);
    m.instance_types().await.unwrap();
    m.create(&request("a", "sim.nope", 1, ""))
        .await
        .unwrap_err();
    let snap = m.stats().snapshot();
    assert_eq!(snap.len(), 2);
    assert!(snap.iter().all(|r| r.driver == "sim" && r.calls == 1));
    let create = snap.iter().find(|r| r.verb == "create").unwrap();
    assert_eq!(create.errors.get("Invalid"), Some(&1));
    assert_eq!(create.max_latency, Duration::from_millis(7));
    // The cloud counted the same calls itself.
    assert_eq!(cloud.stats().total_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_creates_respect_capacity() {
    let cloud = SimCloud::new(SimConfig {
        capacity: BTreeMap::from([("A100".to_string(), 10)]),
        ..SimConfig::fast()
    });
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let d = cloud.driver();
            tokio::spawn(async move {
                d.create(&request(&format!("p{i}"), "sim.a100-12", 3, ""))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(cloud.machines().len(), 9);
    assert_eq!(cloud.all_created(), 9);
}

#[test]
fn config_from_cluster_fields() {
    let c = sim_config_from(5, 1.5, BTreeMap::from([("T4".to_string(), 8)]));
    assert_eq!(c.latency, Duration::from_millis(5));
    assert_eq!(c.failure_rate, 1.0, "clamped");
    assert_eq!(c.capacity.get("T4"), Some(&8));
    assert_eq!(
        sim_config_from(0, f64::NAN, BTreeMap::new()).failure_rate,
        0.0
    );
}
