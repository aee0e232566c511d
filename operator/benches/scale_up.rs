//! Scale-up benchmark (prints figures, asserts nothing): how long a Deployment takes from
//! `replicas` raised to its new replicas Ready, when its pool follows demand and must
//! grow, against the time the sim cloud takes to boot a machine (set to a known value).
//!
//! ```sh
//! cargo bench -p kelp-operator --bench scale_up
//! KELP_BENCH_BOOT_MS=2000 KELP_BENCH_ROUNDS=3 cargo bench -p kelp-operator --bench scale_up
//! ```
//!
//! One sim Cluster with a one-GPU pool that follows demand (0..8 machines, idle machines
//! go after 1 s) and one Deployment of a one-GPU Module at 1 replica. Each round raises
//! it to 5 replicas (4 machines to boot), waits for 5/5 Ready, then lowers it to 1 and
//! waits for the pool to shrink back. The ratio is the time to Ready over the boot time:
//! 1.0 would mean kelp adds nothing on top of the cloud. The last line sums it up for
//! scripts: `BENCH scale_up boot_ms=... rounds=... ratio_p50=... ratio_max=...`.
//!
//! Environment: KELP_BENCH_BOOT_MS (2000), KELP_BENCH_ROUNDS (3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kelp_crds::{Cluster, Deployment, Module};
use kelp_operator::Environment;
use kelp_operator::context::{Config, Context};
use kelp_operator::drivers::SimClouds;
use kelp_testapi::TestApiServer;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const NAMESPACE: &str = "default";
const REPLICAS: i32 = 5;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

async fn until(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond().await {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn ready_replicas(d: &Deployment) -> Option<(i32, bool)> {
    let s = d.status.as_ref()?;
    Some((
        s.ready_replicas,
        kelp_operator::conditions::is_true(&s.conditions, "Ready")
            && s.observed_generation == d.metadata.generation,
    ))
}

async fn bench() {
    let boot = Duration::from_millis(env_u64("KELP_BENCH_BOOT_MS", 2000));
    let rounds = env_u64("KELP_BENCH_ROUNDS", 3).max(1) as usize;
    println!(
        "kelp scale-up benchmark: 1 sim Cluster, a one-GPU pool that follows demand, 1 -> {REPLICAS} replicas ({} machines to boot), sim boot time {} ms, {rounds} round(s), {} CPU(s)",
        REPLICAS - 1,
        boot.as_millis(),
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let server = TestApiServer::start().await.expect("test API server");
    let client: Client = kelp_operator::targets::client_from_kubeconfig(&server.kubeconfig())
        .await
        .expect("client");
    kelp_operator::dev::install_crds(&client)
        .await
        .expect("CRDs");
    let sim = kelp_cloud_drivers::sim::SimConfig {
        boot_delay: boot,
        ..kelp_cloud_drivers::sim::SimConfig::fast()
    };
    let env = Environment {
        sims: SimClouds::new(sim),
        sim_kube: kelp_operator::simulated::builtin(),
        health: Default::default(),
        metrics: Default::default(),
        config: Config {
            poll: Duration::from_millis(200),
            ..Default::default()
        },
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let operator: tokio::task::JoinHandle<Arc<Context>> =
        tokio::spawn(kelp_operator::run(client.clone(), env, async move {
            let _ = rx.await;
        }));

    let pp = PostParams::default();
    let module: Module = serde_json::from_value(json!({
        "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Module",
        "metadata": {"name": "m", "namespace": NAMESPACE},
        "spec": {"title": "Bench", "summary": "A one-GPU module",
                 "image": {"repository": "ai4oshub/ai4os-demo-app", "tag": "latest"},
                 "resources": {"cpu": 2, "memoryMB": 4000, "gpu": 1}},
    }))
    .unwrap();
    Api::<Module>::namespaced(client.clone(), NAMESPACE)
        .create(&pp, &module)
        .await
        .unwrap();
    let cluster: Cluster = serde_json::from_value(json!({
        "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "c", "namespace": NAMESPACE},
        "spec": {"cloud": {"sim": {"latencyMs": 1}},
                 "kubernetes": {"controlPlane": {"cpu": 2}},
                 "nodePools": [{"name": "gpu", "replicas": 1,
                                "autoscaling": {"minReplicas": 0, "maxReplicas": 8, "scaleDownDelaySeconds": 1},
                                "machine": {"cpu": 4, "gpu": {"count": 1, "model": "T4"}}}]},
    }))
    .unwrap();
    Api::<Cluster>::namespaced(client.clone(), NAMESPACE)
        .create(&pp, &cluster)
        .await
        .unwrap();
    let deps = Api::<Deployment>::namespaced(client.clone(), NAMESPACE);
    let dep: Deployment = serde_json::from_value(json!({
        "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": NAMESPACE},
        "spec": {"moduleRef": {"name": "m"}, "clusterRef": {"name": "c"}, "replicas": 1},
    }))
    .unwrap();
    deps.create(&pp, &dep).await.unwrap();
    let clusters = Api::<Cluster>::namespaced(client.clone(), NAMESPACE);
    let timeout = Duration::from_secs(120) + boot * 10;
    let at = |n: i32| {
        let deps = deps.clone();
        async move || {
            deps.get("d")
                .await
                .ok()
                .and_then(|d| ready_replicas(&d))
                .is_some_and(|(r, ok)| r == n && ok)
        }
    };
    let first = until("the first replica", timeout, at(1)).await;
    println!(
        "warm-up: Cluster, control plane and 1 replica Ready in {:.2} s",
        first.as_secs_f64()
    );
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let scale = |n: i32| json!({"spec": {"replicas": n}});
        let t = Instant::now();
        deps.patch("d", &PatchParams::default(), &Patch::Merge(scale(REPLICAS)))
            .await
            .unwrap();
        until("the new replicas", timeout, at(REPLICAS)).await;
        let took = t.elapsed();
        let ratio = took.as_secs_f64() / boot.as_secs_f64();
        println!(
            "round {round}: 1 -> {REPLICAS} replicas Ready in {:.2} s = {ratio:.2}x the boot time",
            took.as_secs_f64()
        );
        ratios.push(ratio);
        deps.patch("d", &PatchParams::default(), &Patch::Merge(scale(1)))
            .await
            .unwrap();
        let clusters = clusters.clone();
        until("the pool back at 1 machine", timeout, async || {
            clusters.get("c").await.ok().is_some_and(|c| {
                c.status.as_ref().is_some_and(|s| {
                    s.node_pools
                        .first()
                        .is_some_and(|p| p.machines.len() == 1 && p.ready == 1)
                })
            })
        })
        .await;
        until("1 replica Ready", timeout, at(1)).await;
    }
    let _ = stop.send(());
    let ctx = operator.await.unwrap();
    ratios.sort_by(f64::total_cmp);
    let p50 = ratios[ratios.len() / 2];
    let max = ratios[ratios.len() - 1];
    println!(
        "{} reconciles, {} cloud calls in all",
        ctx.metrics.reconcile_count(),
        ctx.drivers.stats.total_calls()
    );
    println!(
        "BENCH scale_up boot_ms={} rounds={rounds} replicas={REPLICAS} ratio_p50={p50:.2} ratio_max={max:.2} target_ratio=1.2",
        boot.as_millis()
    );
    drop(server);
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}
