//! The EC2 driver against moto's EC2 server on 127.0.0.1 (never AWS).
//!
//! Each test starts its own `moto_server` (killed on drop) with a small AMI catalogue
//! written here, so tests do not see each other's machines. moto_server is found via
//! `KELP_MOTO_SERVER`, then `/var/tmp/kelp-venv/bin/moto_server`, then PATH; when it
//! is missing the tests pass with a note, unless `KELP_REQUIRE_MOTO` is set.
//!
//! Some tests go through a small HTTP proxy that counts EC2 actions and injects
//! throttling, 5xx responses and stalls.
#![cfg(feature = "ec2")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, InstanceAttributeName};
use base64::Engine as _;
use kelp_cloud_drivers::ec2::{CANONICAL_OWNER, Ec2Credentials, Ec2Driver, Ec2Settings};
use kelp_cloud_drivers::metered::verbs;
use kelp_cloud_drivers::{
    CloudDriver, CloudError, CreateRequest, MachineState, Metered, Owner, Requirements, choose,
    tags,
};
use tokio::time::Instant;

use kelp_test_peers::REGION;

// ---------------------------------------------------------------- moto_server

use kelp_test_peers::{NOBLE_NEWEST, free_port, start_moto};

fn settings(endpoint: &str) -> Ec2Settings {
    Ec2Settings {
        endpoint_url: Some(endpoint.to_string()),
        credentials: Some(Ec2Credentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: None,
        }),
        // moto answers DescribeInstanceTypes (1,400 types) in seconds, and slower with
        // several servers busy on two cores: more room than the 30 s default.
        operation_timeout: Duration::from_secs(120),
        ..Ec2Settings::new(REGION)
    }
}

fn driver(endpoint: &str) -> Ec2Driver {
    Ec2Driver::new(settings(endpoint)).unwrap()
}

fn owner_tags(uid: &str, pool: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            tags::MANAGED_BY.to_string(),
            tags::MANAGED_BY_VALUE.to_string(),
        ),
        (tags::CLUSTER_UID.to_string(), uid.to_string()),
        (tags::CLUSTER.to_string(), format!("default/{uid}")),
        (tags::POOL.to_string(), pool.to_string()),
    ])
}

fn request(count: u32, instance_type: &str, tags: BTreeMap<String, String>) -> CreateRequest {
    CreateRequest {
        count,
        instance_type: instance_type.to_string(),
        image: None,
        user_data: "#cloud-config\nruncmd:\n  - echo kelp\n".to_string(),
        owner: Owner::from_tags(&tags).unwrap_or_default(),
        name_prefix: "demo-gpu".to_string(),
        idempotency_key: "kelp-0123456789abcdef0123456789abcdef".to_string(),
        disk_gb: None,
    }
}

fn ids_of(m: &[kelp_cloud_drivers::Machine]) -> BTreeSet<String> {
    m.iter().map(|m| m.id.clone()).collect()
}

// ---------------------------------------------------------------- fault proxy

use kelp_test_peers::proxy::{Fault, Proxy};

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn instance_types_from_moto_catalogue_match_gpu_requests() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let d = driver(&moto.endpoint());
    let types = d.instance_types().await.unwrap();
    let gpu_types = types.iter().filter(|t| t.gpu.is_some()).count();
    let priced = types.iter().filter(|t| t.price_per_hour.is_some()).count();
    println!(
        "catalogue: {} types offered in {REGION}, {gpu_types} with GPUs, {priced} priced",
        types.len()
    );
    assert!(types.len() > 100, "{}", types.len());

    let g4 = types.iter().find(|t| t.name == "g4dn.xlarge").unwrap();
    assert_eq!((g4.vcpus, g4.memory_mb), (4, 16384));
    let gpu = g4.gpu.as_ref().unwrap();
    assert_eq!(
        (
            gpu.count,
            gpu.vendor.as_str(),
            gpu.model.as_str(),
            gpu.memory_mb
        ),
        (1, "NVIDIA", "T4", 16384)
    );
    assert_eq!(g4.price_per_hour, Some(0.526));

    let one_16g = Requirements {
        gpu_count: 1,
        gpu_vendor: Some("NVIDIA".into()),
        gpu_memory_mb: Some(16 * 1024),
        ..Default::default()
    };
    let t = choose(&types, &one_16g).unwrap();
    println!(
        "1x NVIDIA >= 16 GiB -> {} (${:?}/h)",
        t.name, t.price_per_hour
    );
    assert!(
        t.name.starts_with("g4dn.") || t.name.starts_with("g5."),
        "{}",
        t.name
    );

    let eight_a100 = Requirements {
        gpu_count: 8,
        gpu_model: Some("A100".into()),
        ..Default::default()
    };
    let t = choose(&types, &eight_a100).unwrap();
    println!("8x A100 -> {} ({:?})", t.name, t.gpu);
    assert_eq!(t.name, "p4d.24xlarge");
    assert_eq!(t.gpu.as_ref().unwrap().memory_mb, 40960);

    let cpu = Requirements {
        cpu: Some(4),
        memory_mb: Some(8 * 1024),
        ..Default::default()
    };
    let t = choose(&types, &cpu).unwrap();
    println!(
        "4 vCPU / 8 GiB, no GPU -> {} ({} vCPU, {} MiB, ${:?}/h)",
        t.name, t.vcpus, t.memory_mb, t.price_per_hour
    );
    assert!(t.gpu.is_none() && t.vcpus >= 4 && t.memory_mb >= 8192);
    assert!(t.price_per_hour.is_some());

    // Overrides beat the table; a zone offers a subset of the region.
    let mut s = settings(&moto.endpoint());
    s.price_overrides.insert("p4d.24xlarge".into(), 20.0);
    s.availability_zone = Some("us-east-1a".into());
    let zonal = Ec2Driver::new(s).unwrap().instance_types().await.unwrap();
    println!("us-east-1a offers {} types", zonal.len());
    assert!(!zonal.is_empty() && zonal.len() <= types.len());
    if let Some(p4) = zonal.iter().find(|t| t.name == "p4d.24xlarge") {
        assert_eq!(p4.price_per_hour, Some(20.0));
    }
}

#[tokio::test]
async fn images_default_by_id_and_by_name() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let d = driver(&moto.endpoint());

    // Canonical's newest 24.04 amd64: not the newer 25.04, the arm64 build, the
    // 22.04 build or another account's look-alike.
    let img = d.resolve_image(None).await.unwrap();
    println!("default image: {} {}", img.id, img.name);
    assert_eq!(img.id, NOBLE_NEWEST);
    assert!(img.name.contains("noble-24.04-amd64"), "{}", img.name);

    let by_id = d.resolve_image(Some("ami-0c0ffee000000003")).await.unwrap();
    assert!(by_id.name.contains("jammy"), "{by_id:?}");

    let by_name = d.resolve_image(Some("kelp-gpu-node-*")).await.unwrap();
    assert_eq!(by_name.name, "kelp-gpu-node-v2");
    let exact = d.resolve_image(Some("kelp-gpu-node-v1")).await.unwrap();
    assert_eq!(exact.id, "ami-0c0ffee000000007");

    let err = d
        .resolve_image(Some("ami-0123456789abcdef0"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CloudError::Invalid("image ami-0123456789abcdef0 does not exist in us-east-1".into())
    );
    let err = d.resolve_image(Some("no-such-image-*")).await.unwrap_err();
    assert_eq!(err.label(), "Invalid");
    assert!(err.to_string().contains("no-such-image-*"), "{err}");

    // Names resolve only to the configured owners.
    let mut s = settings(&moto.endpoint());
    s.image_owners = vec![CANONICAL_OWNER.to_string()];
    let canonical_only = Ec2Driver::new(s).unwrap();
    assert_eq!(
        canonical_only
            .resolve_image(Some("kelp-gpu-node-*"))
            .await
            .unwrap_err()
            .label(),
        "Invalid"
    );
}

#[tokio::test]
async fn create_list_delete_three_machines() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let mut s = settings(&moto.endpoint());
    s.root_volume_gb = Some(100);
    let d = Ec2Driver::new(s).unwrap();
    let mine = owner_tags("uid-a", "gpu");
    let theirs = owner_tags("uid-b", "gpu");
    let req = request(3, "g4dn.xlarge", mine.clone());

    let made = d.create(&req).await.unwrap();
    assert_eq!(made.len(), 3);
    for m in &made {
        assert_eq!(m.instance_type, "g4dn.xlarge");
        assert!(matches!(
            m.state,
            MachineState::Pending | MachineState::Running
        ));
        assert!(
            m.provider_id.starts_with("aws:///us-east-1"),
            "{}",
            m.provider_id
        );
        assert!(m.provider_id.ends_with(&format!("/{}", m.id)));
        assert_eq!(m.name, m.id);
        assert!(m.addresses.iter().any(|a| a.kind == "InternalIP"), "{m:?}");
        assert!(
            m.created_at.contains('T') && m.created_at.ends_with('Z'),
            "{}",
            m.created_at
        );
        for (k, v) in &mine {
            assert_eq!(m.tags.get(k), Some(v), "{k}");
        }
        assert_eq!(m.tags.get("Name").map(String::as_str), Some("demo-gpu"));
    }
    let other = d
        .create(&request(1, "t3.medium", theirs.clone()))
        .await
        .unwrap();

    // The driver's view: tags separate clusters.
    let listed = d.list(&mine).await.unwrap();
    assert_eq!(ids_of(&listed), ids_of(&made));
    assert_eq!(ids_of(&d.list(&theirs).await.unwrap()), ids_of(&other));
    // By IDs: only those IDs, only with all the tags, an unknown one left out.
    let mut ids: Vec<String> = made.iter().map(|m| m.id.clone()).take(2).collect();
    ids.push(other[0].id.clone());
    ids.push("i-0000000000000dead".into());
    let by_id = d.list_ids(&mine, &ids).await.unwrap();
    assert_eq!(ids_of(&by_id), ids[..2].iter().cloned().collect());
    assert_eq!(
        by_id,
        listed
            .iter()
            .filter(|m| ids[..2].contains(&m.id))
            .cloned()
            .collect::<Vec<_>>(),
        "by IDs, a machine is what the list by tags shows"
    );
    let all_kelp = BTreeMap::from([(tags::MANAGED_BY.to_string(), "kelp".to_string())]);
    assert_eq!(d.list(&all_kelp).await.unwrap().len(), 4);

    // EC2's view, raw through the SDK.
    let raw = d
        .client()
        .describe_instances()
        .filters(
            Filter::builder()
                .name(format!("tag:{}", tags::CLUSTER_UID))
                .values("uid-a")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let instances: Vec<_> = raw
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .collect();
    assert_eq!(instances.len(), 3);
    assert_eq!(
        raw.reservations().len(),
        1,
        "one RunInstances, one reservation"
    );
    for i in &instances {
        assert_eq!(i.instance_type().unwrap().as_str(), "g4dn.xlarge");
        assert_eq!(i.image_id(), Some(NOBLE_NEWEST));
        let attr = d
            .client()
            .describe_instance_attribute()
            .instance_id(i.instance_id().unwrap())
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let encoded = attr.user_data().and_then(|u| u.value()).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), req.user_data);
    }
    let volumes = d
        .client()
        .describe_volumes()
        .filters(
            Filter::builder()
                .name(format!("tag:{}", tags::CLUSTER_UID))
                .values("uid-a")
                .build(),
        )
        .send()
        .await
        .unwrap();
    println!("volumes tagged for uid-a: {}", volumes.volumes().len());
    assert_eq!(
        volumes.volumes().len(),
        3,
        "one root volume per machine, tagged"
    );
    for v in volumes.volumes() {
        assert_eq!(v.size(), Some(100), "root_volume_gb: {v:?}");
    }

    // Delete; deleting again, and deleting IDs EC2 never knew, is success.
    let ids: Vec<String> = made.iter().map(|m| m.id.clone()).collect();
    d.delete(&ids).await.unwrap();
    let left = d.list(&mine).await.unwrap();
    assert!(
        left.iter().all(|m| m.state == MachineState::Terminating),
        "{left:?}"
    );
    println!(
        "after delete: {} listed (shutting-down ones only)",
        left.len()
    );
    d.delete(&ids).await.unwrap();
    d.delete(&["i-0123456789abcdef0".to_string()])
        .await
        .unwrap();
    d.delete(&[]).await.unwrap();

    // A batch mixing a live ID with unknown and malformed ones still terminates the
    // live one.
    let mixed = vec![
        "i-0badbadbadbadbad0".to_string(),
        other[0].id.clone(),
        "i-0badbadbadbadbad1".to_string(),
    ];
    d.delete(&mixed).await.unwrap();
    d.delete(&["not-an-instance-id".to_string(), other[0].id.clone()])
        .await
        .unwrap();
    assert!(
        d.list(&theirs)
            .await
            .unwrap()
            .iter()
            .all(|m| m.state == MachineState::Terminating)
    );
    let states = d
        .client()
        .describe_instances()
        .instance_ids(other[0].id.clone())
        .send()
        .await
        .unwrap();
    let state = states.reservations()[0].instances()[0]
        .state()
        .and_then(|s| s.name())
        .unwrap()
        .as_str()
        .to_string();
    assert!(state == "terminated" || state == "shutting-down", "{state}");
    assert!(
        d.list(&all_kelp)
            .await
            .unwrap()
            .iter()
            .all(|m| m.state == MachineState::Terminating)
    );
}

/// moto ignores ClientToken: the same key twice starts the batch twice. (EC2 itself
/// returns the first batch again.) Either way the operator lists by tags before it
/// creates, which is what prevents duplicates; this test pins moto's behaviour so a
/// change in it is noticed.
#[tokio::test]
async fn client_token_behaviour() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let d = driver(&moto.endpoint());
    let mine = owner_tags("uid-token", "gpu");
    let req = request(3, "g4dn.xlarge", mine.clone());
    let first = d.create(&req).await.unwrap();
    let second = d.create(&req).await.unwrap();
    let listed = d.list(&mine).await.unwrap();
    println!(
        "same ClientToken twice: {} + {} returned, {} exist",
        first.len(),
        second.len(),
        listed.len()
    );
    if ids_of(&first) == ids_of(&second) {
        assert_eq!(listed.len(), 3, "ClientToken honoured");
    } else {
        assert_eq!(listed.len(), 6, "moto ignores ClientToken");
    }
}

#[tokio::test]
async fn bad_input_is_invalid() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let d = driver(&moto.endpoint());

    let mut s = settings(&moto.endpoint());
    s.endpoint_url = None;
    s.region = "us-east-one".into();
    let err = Ec2Driver::new(s).unwrap_err();
    assert_eq!(err.label(), "Invalid");
    assert!(err.to_string().contains("us-east-one"), "{err}");

    let mut req = request(1, "t3.medium", owner_tags("uid-bad", "cpu"));
    req.image = Some("ami-0123456789abcdef0".into());
    let err = d.create(&req).await.unwrap_err();
    assert_eq!(
        err,
        CloudError::Invalid("image ami-0123456789abcdef0 does not exist in us-east-1".into())
    );

    let mut req = request(1, "x9.enormous", owner_tags("uid-bad", "cpu"));
    req.image = Some(NOBLE_NEWEST.into());
    let err = d.create(&req).await.unwrap_err();
    println!("unknown instance type: {err}");
    assert_eq!(err.label(), "Invalid", "{err}");

    let err = d
        .create(&request(0, "t3.medium", BTreeMap::new()))
        .await
        .unwrap_err();
    assert_eq!(err.label(), "Invalid");
    assert!(
        d.list(&owner_tags("uid-bad", "cpu"))
            .await
            .unwrap()
            .is_empty()
    );

    // Nothing listens there: Transient, not a panic.
    let dead = driver(&format!("http://127.0.0.1:{}", free_port()));
    let err = dead.list(&BTreeMap::new()).await.unwrap_err();
    println!("dead endpoint: {err}");
    assert_eq!(err.label(), "Transient");
}

#[tokio::test]
async fn throttling_5xx_and_stalls_are_typed_and_not_retried_underneath() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let mine = owner_tags("uid-faults", "gpu");
    // moto's first EC2 request loads its backend (seconds on a busy machine): warm
    // it up before the short timeout below applies.
    driver(&moto.endpoint()).list(&mine).await.unwrap();
    let proxy = Proxy::start(moto.port).await;
    let mut s = settings(&proxy.endpoint());
    s.operation_timeout = Duration::from_secs(4);
    let d = Ec2Driver::new(s).unwrap();

    proxy.fail(
        "DescribeInstances",
        Fault::Error(503, "RequestLimitExceeded"),
    );
    let err = d.list(&mine).await.unwrap_err();
    assert!(
        matches!(
            err,
            CloudError::Throttled {
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        proxy.count("DescribeInstances"),
        1,
        "no SDK retry underneath"
    );
    d.list(&mine).await.unwrap();

    proxy.fail("DescribeInstances", Fault::Bare503);
    let err = d.list(&mine).await.unwrap_err();
    assert_eq!(err.label(), "Transient", "{err:?}");
    proxy.fail("DescribeInstances", Fault::Error(500, "InternalError"));
    assert_eq!(d.list(&mine).await.unwrap_err().label(), "Transient");
    d.list(&mine).await.unwrap();

    proxy.fail(
        "RunInstances",
        Fault::Error(500, "InsufficientInstanceCapacity"),
    );
    let err = d
        .create(&request(2, "p4d.24xlarge", mine.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::InsufficientCapacity { instance_type, .. } if instance_type == "p4d.24xlarge"),
        "{err:?}"
    );
    proxy.fail("RunInstances", Fault::Error(400, "VcpuLimitExceeded"));
    assert_eq!(
        d.create(&request(2, "p4d.24xlarge", mine.clone()))
            .await
            .unwrap_err()
            .label(),
        "QuotaExceeded"
    );
    proxy.fail("RunInstances", Fault::Error(401, "AuthFailure"));
    assert_eq!(
        d.create(&request(2, "g4dn.xlarge", mine.clone()))
            .await
            .unwrap_err()
            .label(),
        "Unauthorized"
    );
    proxy.fail("RunInstances", Fault::Error(503, "RequestLimitExceeded"));
    assert_eq!(
        d.create(&request(2, "g4dn.xlarge", mine.clone()))
            .await
            .unwrap_err()
            .label(),
        "Throttled"
    );
    assert_eq!(
        proxy.count("RunInstances"),
        4,
        "one request per failed create"
    );
    let made = d
        .create(&request(2, "g4dn.xlarge", mine.clone()))
        .await
        .unwrap();
    assert_eq!(made.len(), 2);

    let started = Instant::now();
    proxy.fail("DescribeInstances", Fault::Stall(Duration::from_secs(30)));
    let err = d.list(&mine).await.unwrap_err();
    println!("stalled call: {err} after {:?}", started.elapsed());
    assert_eq!(err.label(), "Transient");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(d.list(&mine).await.unwrap().len(), 2);

    proxy.fail(
        "TerminateInstances",
        Fault::Error(503, "RequestLimitExceeded"),
    );
    let ids: Vec<String> = made.iter().map(|m| m.id.clone()).collect();
    assert_eq!(d.delete(&ids).await.unwrap_err().label(), "Throttled");
    d.delete(&ids).await.unwrap();
    println!("requests seen by the proxy: {:?}", proxy.summary());
}

#[tokio::test]
async fn call_counts_for_fifty_machines() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let proxy = Proxy::start(moto.port).await;
    let images = kelp_cloud_drivers::ImageCache::default();
    let d = Metered::new(driver(&proxy.endpoint()).with_images(images.clone()));
    let mine = owner_tags("uid-fifty", "gpu");

    let t0 = Instant::now();
    let types = d.instance_types().await.unwrap();
    let first = t0.elapsed();
    let t1 = Instant::now();
    let again = d.instance_types().await.unwrap();
    let cached = t1.elapsed();
    assert_eq!(types, again);
    assert_eq!(proxy.count("DescribeInstanceTypes"), 1, "cached");
    assert_eq!(proxy.count("DescribeInstanceTypeOfferings"), 1, "cached");
    println!(
        "instance_types: {} types, {first:?} first, {cached:?} cached; requests {:?}",
        types.len(),
        proxy.summary()
    );

    proxy.reset();
    let t = Instant::now();
    let made = d
        .create(&request(50, "g4dn.xlarge", mine.clone()))
        .await
        .unwrap();
    let create_time = t.elapsed();
    assert_eq!(made.len(), 50);
    assert_eq!(proxy.count("RunInstances"), 1);
    assert_eq!(
        proxy.count("DescribeImages"),
        1,
        "default image found by the first pattern"
    );
    assert_eq!(proxy.total(), 2, "{:?}", proxy.summary());
    println!("create 50: {create_time:?}; requests {:?}", proxy.summary());

    proxy.reset();
    let t = Instant::now();
    let listed = d.list(&mine).await.unwrap();
    let list_time = t.elapsed();
    assert_eq!(listed.len(), 50);
    assert_eq!(proxy.count("DescribeInstances"), 1);
    assert_eq!(proxy.total(), 1);
    println!("list 50: {list_time:?}; requests {:?}", proxy.summary());

    proxy.reset();
    let t = Instant::now();
    let ids: Vec<String> = made.iter().map(|m| m.id.clone()).collect();
    d.delete(&ids).await.unwrap();
    let delete_time = t.elapsed();
    assert_eq!(proxy.count("TerminateInstances"), 1);
    println!("delete 50: {delete_time:?}; requests {:?}", proxy.summary());

    // The next create of the same image (a scale-up, a roll) resolves it from the cache.
    proxy.reset();
    let more = d
        .create(&request(2, "g4dn.xlarge", mine.clone()))
        .await
        .unwrap();
    assert_eq!(proxy.count("DescribeImages"), 0, "{:?}", proxy.summary());
    assert_eq!(proxy.total(), 1, "{:?}", proxy.summary());
    let ids: Vec<String> = more.iter().map(|m| m.id.clone()).collect();
    d.delete(&ids).await.unwrap();

    // So does another driver given the same cache (the operator shares one per account,
    // region and endpoint); a driver with its own cache asks.
    for (cache, asks) in [(images.clone(), 0), (Default::default(), 1)] {
        proxy.reset();
        let other = driver(&proxy.endpoint()).with_images(cache);
        let made = other
            .create(&request(1, "g4dn.xlarge", mine.clone()))
            .await
            .unwrap();
        assert_eq!(proxy.count("DescribeImages"), asks, "{:?}", proxy.summary());
        let ids: Vec<String> = made.iter().map(|m| m.id.clone()).collect();
        other.delete(&ids).await.unwrap();
    }
    assert_eq!(images.len(), 1);

    let s = d.stats();
    assert_eq!(s.calls(verbs::INSTANCE_TYPES), 2);
    assert_eq!(s.calls(verbs::CREATE), 2);
    assert_eq!(s.calls(verbs::LIST), 1);
    assert_eq!(s.calls(verbs::DELETE), 2);
    assert_eq!(s.errors_labelled("Transient"), 0);
    for r in s.snapshot() {
        println!(
            "metered {}/{}: {} call(s), max {:?}",
            r.driver, r.verb, r.calls, r.max_latency
        );
    }
}

/// The values of the `<prefix>.<n>` parameters of one request.
fn values(params: &[(String, String)], prefix: &str) -> BTreeSet<String> {
    params
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|(_, v)| v.clone())
        .collect()
}

#[tokio::test]
async fn named_instance_types_are_read_alone() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let proxy = Proxy::start(moto.port).await;
    let d = Metered::new(driver(&proxy.endpoint()));
    let asked: Vec<String> = ["g4dn.xlarge", " G5.XLARGE", "g4dn.xlarg", "p4d.*"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let named = d.instance_types_named(&asked).await.unwrap();
    let got: Vec<&str> = named.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(got, ["g4dn.xlarge", "g5.xlarge"], "not offered: left out");
    assert_eq!(proxy.total(), 2, "{:?}", proxy.summary());

    // The offerings of the names (lower case, no wildcard) in the region, then the
    // offered types alone.
    let offerings = &proxy.params("DescribeInstanceTypeOfferings")[0];
    assert!(
        offerings.contains(&("Filter.1.Name".into(), "instance-type".into())),
        "{offerings:?}"
    );
    assert_eq!(
        values(offerings, "Filter.1.Value"),
        BTreeSet::from([
            "g4dn.xlarg".into(),
            "g4dn.xlarge".into(),
            "g5.xlarge".into()
        ])
    );
    let described = &proxy.params("DescribeInstanceTypes")[0];
    assert_eq!(
        values(described, "InstanceType"),
        BTreeSet::from(["g4dn.xlarge".into(), "g5.xlarge".into()])
    );
    assert!(
        !described
            .iter()
            .any(|(k, _)| k == "MaxResults" || k == "NextToken"),
        "{described:?}"
    );

    // The same facts and prices as the whole catalogue has.
    let whole = d.instance_types().await.unwrap();
    for t in &named {
        assert_eq!(Some(t), whole.iter().find(|w| w.name == t.name));
    }
    assert_eq!(named[0].price_per_hour, Some(0.526));
    // With the whole catalogue cached, named types cost no call.
    proxy.reset();
    let p4 = d
        .instance_types_named(&["p4d.24xlarge".to_string()])
        .await
        .unwrap();
    assert_eq!(p4.len(), 1);
    assert_eq!(proxy.total(), 0, "{:?}", proxy.summary());
    assert_eq!(d.stats().calls(verbs::INSTANCE_TYPES), 3);

    // Nothing offered: no DescribeInstanceTypes at all.
    let fresh = driver(&proxy.endpoint());
    let none = fresh
        .instance_types_named(&["g4dn.xlarg".to_string()])
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(proxy.count("DescribeInstanceTypeOfferings"), 1);
    assert_eq!(proxy.count("DescribeInstanceTypes"), 0);
}
