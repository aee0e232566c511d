//! OpenStack pool benchmark (prints figures, asserts nothing): a 20-machine GPU pool on
//! the OpenStack peer (real Keystone and Nova with the fake virt driver, on 127.0.0.1;
//! start it with `tests/peers/openstack/peer.sh start`). For one machine (the
//! baseline), for 20 machines in kelp's one batched request, and for 20 machines
//! created one request each (how a serial provisioner boots them), it prints the API
//! calls by service and verb and the time until every server is ACTIVE, as ratios
//! against the baseline of the same run.
//!
//! ```sh
//! cargo bench -p kelp-cloud-drivers --bench openstack_pool
//! KELP_BENCH_MACHINES=10 cargo bench -p kelp-cloud-drivers --bench openstack_pool
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kelp_cloud_drivers::openstack::{OpenStackAuth, OpenStackDriver, OpenStackSettings};
use kelp_cloud_drivers::{CloudDriver, CreateRequest, MachineState, Owner, tags};
use kelp_test_peers::openstack::OsPeer;

fn owner(uid: &str) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    t.insert(tags::MANAGED_BY.to_string(), "kelp".to_string());
    t.insert(tags::CLUSTER_UID.to_string(), uid.to_string());
    t.insert(tags::POOL.to_string(), "gpu".to_string());
    t
}

struct Run {
    to_active: Duration,
    calls: BTreeMap<String, u64>,
    errors: usize,
}

/// Creates `n` gpu.t4 servers in `batches` requests, lists every 500 ms until all are
/// ACTIVE (or ERROR), then deletes them and waits until they are gone.
async fn scenario(peer: &OsPeer, label: &str, n: u32, batches: u32) -> Run {
    let d = OpenStackDriver::new(OpenStackSettings {
        network: Some("private".into()),
        ..OpenStackSettings::new(
            peer.auth_url(),
            OpenStackAuth::ApplicationCredential {
                id: peer.var("OS_APP_CRED_ID"),
                secret: peer.var("OS_APP_CRED_SECRET"),
            },
        )
    })
    .unwrap();
    let uid = format!("0b5e1d2a-bench-4000-8000-{label:0>12}");
    let start = Instant::now();
    d.instance_types().await.unwrap();
    let per = n / batches;
    for b in 0..batches {
        let req = CreateRequest {
            count: per,
            instance_type: "gpu.t4".into(),
            image: None,
            user_data: "#cloud-config\n{}\n".into(),
            owner: Owner::from_tags(&owner(&uid)).expect("kelp tags"),
            name_prefix: format!("bench-{label}"),
            idempotency_key: format!("kelp-bench-{label}-{b}"),
            disk_gb: None,
        };
        d.create(&req).await.unwrap();
    }
    let (to_active, errors) = loop {
        let ms = d.list(&owner(&uid)).await.unwrap();
        if ms.len() == n as usize
            && ms
                .iter()
                .all(|m| matches!(m.state, MachineState::Running | MachineState::Failed))
        {
            let errors = ms
                .iter()
                .filter(|m| m.state == MachineState::Failed)
                .count();
            break (start.elapsed(), errors);
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{label}: servers never settled"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let calls = d.calls().snapshot();
    let ids: Vec<String> = d
        .list(&owner(&uid))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    d.delete(&ids).await.unwrap();
    while !d.list(&owner(&uid)).await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    d.release(&owner(&uid)).await.unwrap();
    Run {
        to_active,
        calls,
        errors,
    }
}

fn total(r: &Run) -> u64 {
    r.calls.values().sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(peer) = OsPeer::get().await else {
        eprintln!("the OpenStack peer is not running: tests/peers/openstack/peer.sh start");
        return;
    };
    let n: u32 = std::env::var("KELP_BENCH_MACHINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    peer.purge(&peer.var("OS_PROJECT_ID")).await;
    let one = scenario(&peer, "one", 1, 1).await;
    let batch = scenario(&peer, "batch", n, 1).await;
    let serial = scenario(&peer, "serial", n, n).await;
    println!("OpenStack pool on the Nova peer (fake virt driver), gpu.t4, {n} machines");
    println!();
    println!(
        "{:<46} {:>10} {:>10} {:>12}",
        "API calls until all ACTIVE",
        "1 machine",
        format!("{n} batched"),
        format!("{n} one-by-one")
    );
    let mut keys: Vec<&String> = one
        .calls
        .keys()
        .chain(batch.calls.keys())
        .chain(serial.calls.keys())
        .collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let g = |r: &Run| r.calls.get(k).copied().unwrap_or(0);
        println!(
            "{:<46} {:>10} {:>10} {:>12}",
            k,
            g(&one),
            g(&batch),
            g(&serial)
        );
    }
    println!(
        "{:<46} {:>10} {:>10} {:>12}",
        "total",
        total(&one),
        total(&batch),
        total(&serial)
    );
    println!();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "time to all ACTIVE: 1 machine {:.1} s (1.00); {n} batched {:.1} s ({:.2}x); {n} one-by-one {:.1} s ({:.2}x)",
        one.to_active.as_secs_f64(),
        batch.to_active.as_secs_f64(),
        ratio(batch.to_active.as_secs_f64(), one.to_active.as_secs_f64()),
        serial.to_active.as_secs_f64(),
        ratio(serial.to_active.as_secs_f64(), one.to_active.as_secs_f64()),
    );
    println!(
        "API calls: {n} batched = {:.2}x one machine; {n} one-by-one = {:.2}x one machine",
        ratio(total(&batch) as f64, total(&one) as f64),
        ratio(total(&serial) as f64, total(&one) as f64),
    );
    println!(
        "servers in ERROR: 1 machine {}, batched {}, one-by-one {}",
        one.errors, batch.errors, serial.errors
    );
}
