//! Two `kelp run` replicas with leader election, against the test API server and moto's
//! EC2: only the Lease holder reconciles; `kill -9` of the leader in the middle of a
//! scale-up hands over within a lease duration and a grace, with no instance doubled or
//! leaked, at 10 kill moments from a printed seed; SIGTERM hands over by releasing the
//! Lease (the successor takes a free Lease, not an expired one). Takeover times are
//! printed (min, median, max), never asserted.

mod common;

use std::time::{Duration, Instant};

use common::process::KelpRun;
use k8s_openapi::api::coordination::v1::Lease;
use kelp_cloud_drivers::{CloudDriver, MachineState, tags};
use kelp_crds::Cluster;
use kelp_testapi::TestApiServer;
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};

const NS: &str = "kelp-system";
/// Short leases so that the test's ten crashes take seconds, not minutes.
const LEASE: &[&str] = &["--lease-duration=4", "--lease-renew-grace=1"];
const DURATION: Duration = Duration::from_secs(4);
const GRACE: Duration = Duration::from_secs(1);

async fn setup() -> (TestApiServer, Client) {
    common::process::api_server(&[NS]).await
}

/// A replica; kube-lease-manager's debug lines say how a Lease was taken (a free one
/// "orphaned", or an "expired" one of a holder that stopped renewing). moto lists new
/// instances at once, so a short create grace is safe: a leader killed after recording a
/// batch and before sending it leaves a pending create that its successor drops and
/// sends again after 5 s, rather than after the default 120 s.
async fn replica(server: &TestApiServer) -> KelpRun {
    KelpRun::start_with_env(
        &server.kubeconfig(),
        NS,
        LEASE,
        "info,kube_lease_manager=debug",
        &[("KELP_CREATE_GRACE_SECONDS", "5")],
    )
    .await
}

const TOOK_FREE: &str = "try to lock orphaned lease";
const TOOK_EXPIRED: &str = "release expired lease lock";

/// Which of `replicas` says it leads (kelp_leader 1); waits for one.
async fn leader(replicas: &[KelpRun]) -> usize {
    for _ in 0..300 {
        for (i, r) in replicas.iter().enumerate() {
            if r.metric("kelp_leader{lease=\"kelp-operator\"}").await == Some(1.0) {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs: Vec<String> = replicas.iter().map(|r| r.log()).collect();
    panic!("no replica leads:\n{}", logs.join("\n----\n"));
}

async fn holder(admin: &Client) -> Option<String> {
    Api::<Lease>::namespaced(admin.clone(), NS)
        .get_opt("kelp-operator")
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

fn ec2_cluster(endpoint: &str, replicas: usize, kubeconfig: &str) -> String {
    common::process::ec2_cluster(
        "gpu",
        endpoint,
        replicas,
        ("testing", "testing"),
        kubeconfig,
    )
}

async fn apply(admin: &Client, yaml: &str) {
    common::process::apply(admin, yaml).await
}

/// Instances kelp made for the Cluster `uid` that are not going away.
async fn alive(endpoint: &str, uid: &str) -> usize {
    let t = [(tags::CLUSTER_UID.to_string(), uid.to_string())].into();
    common::kubelets::driver(endpoint)
        .list(&t)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.state != MachineState::Terminating)
        .count()
}

async fn ready_with(admin: &Client, replicas: usize) -> bool {
    let c = Api::<Cluster>::namespaced(admin.clone(), "default")
        .get("gpu")
        .await
        .unwrap();
    common::is_ready_cluster(&c)
        && c.status.as_ref().is_some_and(|s| {
            s.node_pools.iter().map(|p| p.machines.len()).sum::<usize>() == replicas
        })
}

/// A small deterministic generator: the seed printed reproduces the kill moments.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn summary(what: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: &Duration| d.as_millis();
    format!(
        "{what}: min {} ms, median {} ms, max {} ms over {}",
        ms(&v[0]),
        ms(&v[v.len() / 2]),
        ms(&v[v.len() - 1]),
        v.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_reconciles_and_kill_9_mid_scale_up_doubles_nothing() {
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    let endpoint = moto.endpoint();
    let (server, admin) = setup().await;
    let kubelets = common::kubelets::register(admin.clone(), &endpoint);
    let mut replicas = vec![replica(&server).await, replica(&server).await];
    let first = leader(&replicas).await;
    let follower = 1 - first;
    // Every replica is ready: the leader once its caches synced, the follower as such.
    for r in &replicas {
        for _ in 0..300 {
            if r.get("/readyz").await.is_some_and(|(c, _)| c == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            r.get("/readyz").await.map(|(c, _)| c),
            Some(200),
            "{}",
            r.log()
        );
        assert_eq!(r.get("/healthz").await.map(|(c, _)| c), Some(200));
    }
    let id = holder(&admin).await.expect("the Lease has a holder");
    assert!(
        replicas[first].log().contains(&id),
        "the leader's identity {id} is in the Lease"
    );

    apply(&admin, &ec2_cluster(&endpoint, 2, &server.kubeconfig())).await;
    for _ in 0..900 {
        if ready_with(&admin, 2).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready_with(&admin, 2).await, "{}", replicas[first].log());
    let uid = Api::<Cluster>::namespaced(admin.clone(), "default")
        .get("gpu")
        .await
        .unwrap()
        .uid()
        .unwrap();
    // The follower has made no cloud call and reconciled nothing.
    let cloud_calls = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("kelp_cloud_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (_, follower_metrics) = replicas[follower].get("/metrics").await.unwrap();
    assert_eq!(cloud_calls(&follower_metrics), 0.0, "{follower_metrics}");
    assert!(
        !follower_metrics.contains("kelp_reconcile_total{"),
        "{follower_metrics}"
    );
    let (_, leader_metrics) = replicas[first].get("/metrics").await.unwrap();
    assert!(cloud_calls(&leader_metrics) > 0.0);

    let seed = std::env::var("KELP_FAILOVER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    println!("failover seed={seed} (KELP_FAILOVER_SEED={seed} repeats these kill moments)");
    let mut rng = Lcg(seed);
    let mut takeovers = Vec::new();
    let mut want = 2usize;
    for round in 0..10 {
        want += 1 + rng.next(3) as usize;
        let kill_after = Duration::from_millis(rng.next(1500));
        let current = leader(&replicas).await;
        apply(&admin, &ec2_cluster(&endpoint, want, &server.kubeconfig())).await;
        tokio::time::sleep(kill_after).await;
        let killed = replicas.remove(current);
        let seen: Vec<usize> = replicas.iter().map(|r| r.log().len()).collect();
        let killed_at = Instant::now();
        killed.kill().await;
        let next = leader(&replicas).await;
        let took = killed_at.elapsed();
        takeovers.push(took);
        println!(
            "round {round}: scale to {want}, leader killed {} ms in, taken over after {} ms",
            kill_after.as_millis(),
            took.as_millis()
        );
        // A killed leader releases nothing: the successor waited for its Lease to expire.
        let taken = replicas[next].log()[seen[next]..].to_string();
        assert!(taken.contains(TOOK_EXPIRED), "round {round}: {taken}");
        // A replacement replica, as the kubelet would restart the Pod.
        replicas.push(replica(&server).await);
        for _ in 0..900 {
            if ready_with(&admin, want).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ready_with(&admin, want).await {
            let c = Api::<Cluster>::namespaced(admin.clone(), "default")
                .get("gpu")
                .await
                .unwrap();
            let logs: Vec<String> = replicas.iter().map(|r| r.log()).collect();
            panic!(
                "round {round}: not Ready with {want}; status: {}\nlogs:\n{}",
                serde_json::to_string_pretty(&c.status).unwrap(),
                logs.join("\n----\n")
            );
        }
        assert_eq!(
            alive(&endpoint, &uid).await,
            want,
            "round {round}: exactly {want} instances, none doubled"
        );
    }
    // Measured, not asserted: a crashed leader's successor waits for its Lease to expire
    // (lease duration, then the grace to notice).
    println!(
        "{} (lease {} s, grace {} s)",
        summary("kill -9 takeover", takeovers.clone()),
        DURATION.as_secs(),
        GRACE.as_secs()
    );

    // Deleting leaves nothing behind.
    Api::<Cluster>::namespaced(admin.clone(), "default")
        .delete("gpu", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..900 {
        if Api::<Cluster>::namespaced(admin.clone(), "default")
            .get_opt("gpu")
            .await
            .unwrap()
            .is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alive(&endpoint, &uid).await, 0, "nothing leaked");
    kubelets.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_and_the_follower_takes_over_at_once() {
    let (server, admin) = setup().await;
    let mut takeovers = Vec::new();
    let mut replicas = vec![replica(&server).await, replica(&server).await];
    for round in 0..5 {
        let current = leader(&replicas).await;
        let old_holder = holder(&admin).await.unwrap();
        let stopping = replicas.remove(current);
        let seen: Vec<usize> = replicas.iter().map(|r| r.log().len()).collect();
        let start = Instant::now();
        let log = stopping.terminate().await;
        assert!(log.contains("released the leader Lease"), "{log}");
        let next = leader(&replicas).await;
        takeovers.push(start.elapsed());
        // It took a free Lease, at once; not an expired one, a lease duration later.
        let taken = replicas[next].log()[seen[next]..].to_string();
        assert!(
            taken.contains(TOOK_FREE) && !taken.contains(TOOK_EXPIRED),
            "round {round}: {taken}"
        );
        let lease = Api::<Lease>::namespaced(admin.clone(), NS)
            .get("kelp-operator")
            .await
            .unwrap();
        let spec = lease.spec.unwrap();
        assert_ne!(
            spec.holder_identity.as_deref(),
            Some(old_holder.as_str()),
            "round {round}"
        );
        replicas.push(replica(&server).await);
    }
    println!("{}", summary("SIGTERM handover", takeovers.clone()));
    for r in replicas {
        r.terminate().await;
    }
}

/// Replicas that start together race for a free Lease, as the two Pods of a fresh install
/// do: exactly one of them leads, and none takes it only to lose it a moment later. Twenty
/// Leases with six contenders each, all at once (the race is lost by chance, so this part
/// finds the bug in some runs; the first part finds it in every run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_elect_exactly_one() {
    use kelp_operator::leader::{self, Election, Outcome};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (_server, admin) = setup().await;
    // The rule it rests on: a replica takes a free Lease by a server-side apply without
    // force, under its own field manager, so a second replica's apply is refused.
    let api = Api::<Lease>::namespaced(admin.clone(), NS);
    let take = |who: &str| {
        let patch = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "free"},
            "spec": {"holderIdentity": who, "leaseDurationSeconds": 2},
        });
        let params = kube::api::PatchParams::apply(&leader::field_manager(who));
        let api = api.clone();
        async move {
            api.patch("free", &params, &kube::api::Patch::Apply(patch))
                .await
        }
    };
    take("replica-a").await.unwrap();
    match take("replica-b").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
        other => panic!("a second replica took a held Lease: {other:?}"),
    }

    let leases: Vec<String> = (0..20).map(|i| format!("race-{i}")).collect();
    let mut leading = Vec::new();
    let mut tasks = Vec::new();
    for lease in &leases {
        let count = Arc::new(AtomicUsize::new(0));
        leading.push(count.clone());
        for _ in 0..6 {
            let election = Election {
                lease: lease.clone(),
                namespace: NS.into(),
                identity: leader::identity(),
                duration: Duration::from_secs(2),
                grace: Duration::from_secs(1),
            };
            let (client, count) = (admin.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                leader::lead(
                    client,
                    election,
                    Default::default(),
                    Default::default(),
                    std::future::pending::<()>(),
                    move |stop| async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        stop.await;
                    },
                )
                .await
            }));
        }
    }
    for lease in &leases {
        let mut held = false;
        for _ in 0..300 {
            let spec = api.get_opt(lease).await.unwrap().and_then(|l| l.spec);
            if spec.and_then(|s| s.holder_identity).is_some() {
                held = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(held, "Lease {lease} was taken");
    }
    // Every contender has made its first attempt by the time the holder renews (a lease
    // duration less the grace); wait past that.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (lease, count) in leases.iter().zip(&leading) {
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "Lease {lease}: exactly one replica started its controllers"
        );
    }
    for task in tasks {
        if task.is_finished() {
            let outcome = task.await.unwrap();
            assert!(
                !matches!(outcome, Ok(Outcome::Lost(_))),
                "a replica took the Lease and then lost it: {outcome:?}"
            );
        } else {
            task.abort();
        }
    }
}
