//! EC2 pool benchmark (prints figures, asserts nothing): one Cluster with a 50-instance
//! GPU pool on moto's EC2 server (127.0.0.1, never AWS), through a proxy that counts
//! every EC2 call. Prints the calls by action until every instance runs, the time it
//! took, and the calls per resync in steady state, against the one-instance baseline of
//! the same run.
//!
//! ```sh
//! cargo bench -p kelp-operator --bench ec2_pool        # needs moto_server (see .ci/run)
//! KELP_BENCH_INSTANCES=10 cargo bench -p kelp-operator --bench ec2_pool
//! ```

use std::time::{Duration, Instant};

use kelp_crds::Cluster;
use kelp_operator::Environment;
use kelp_operator::context::Config;
use kelp_test_peers::proxy::Proxy;
use kube::api::Api;

#[path = "../tests/common/kubelets.rs"]
mod kubelets;

async fn apply(client: &kube::Client, doc: serde_json::Value) {
    kelp_operator::dev::apply_manifest(client, "default", "bench", &doc)
        .await
        .unwrap();
}

/// Creates a Cluster with one pool of `n` T4 instances and waits until it is Ready.
/// Returns (time to all running, EC2 calls by action until then, calls in `idle` after).
async fn scenario(
    client: &kube::Client,
    proxy: &Proxy,
    name: &str,
    n: usize,
    idle: Duration,
) -> (Duration, std::collections::BTreeMap<String, usize>, usize) {
    proxy.reset();
    let start = Instant::now();
    apply(client, serde_json::json!({"apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Cluster", "metadata": {"name": name},
        "spec": {"cloud": {"ec2": {"region": "us-east-1", "endpointUrl": proxy.endpoint(), "credentialsSecretRef": {"name": "aws"}}},
                 "kubernetes": {"mode": "Existing", "kubeconfigSecretRef": {"name": "here"}},
                 "nodePools": [{"name": "t4", "replicas": n, "machine": {"cpu": 4, "gpu": {"count": 1, "model": "T4"}}}]}})).await;
    let clusters: Api<Cluster> = Api::default_namespaced(client.clone());
    let mut took = None;
    while start.elapsed() < Duration::from_secs(300) {
        let c = clusters.get(name).await.unwrap();
        let running = c
            .status
            .as_ref()
            .map(|s| {
                s.node_pools
                    .iter()
                    .flat_map(|p| &p.machines)
                    .filter(|m| m.state.as_deref() == Some("running"))
                    .count()
            })
            .unwrap_or(0);
        if running == n {
            took = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = proxy.summary();
    let before = proxy.total();
    tokio::time::sleep(idle).await;
    let mut after = proxy.summary();
    for (k, v) in &calls {
        if let Some(a) = after.get_mut(k) {
            *a -= v;
        }
    }
    after.retain(|_, v| *v > 0);
    println!("  ({name}: idle calls by action {after:?})");
    (took.unwrap_or(Duration::MAX), calls, proxy.total() - before)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("KELP_BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let Some(moto) = kelp_test_peers::start_moto().await else {
        println!("moto_server not installed: nothing to measure (see .ci/run)");
        return;
    };
    let proxy = Proxy::start(moto.port).await;
    let server = kelp_testapi::TestApiServer::start().await.unwrap();
    let client = kelp_operator::targets::client_from_kubeconfig(&server.kubeconfig())
        .await
        .unwrap();
    kelp_operator::dev::install_crds(&client).await.unwrap();
    apply(
        &client,
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws"},
        "stringData": {"accessKeyId": "testing", "secretAccessKey": "testing"}}),
    )
    .await;
    apply(
        &client,
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "here"},
        "stringData": {"value": server.kubeconfig()}}),
    )
    .await;
    // Resync every 2 s so that the steady state shows several resyncs in the idle window.
    let resync = Duration::from_secs(2);
    let env = Environment {
        config: Config {
            resync,
            poll: Duration::from_millis(500),
            ..Default::default()
        },
        ..Default::default()
    };
    // The machines' kubelets: Nodes join, so the Clusters become Ready and settle into
    // their resync.
    let kubelets = kubelets::register(client.clone(), &moto.endpoint());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let op = tokio::spawn(kelp_operator::run(client.clone(), env, async {
        let _ = rx.await;
    }));
    let idle = Duration::from_secs(10);
    let (t1, calls1, idle1) = scenario(&client, &proxy, "one", 1, idle).await;
    let (tn, callsn, idlen) = scenario(&client, &proxy, "many", n, idle).await;
    let _ = tx.send(());
    let _ = op.await;
    kubelets.abort();
    let total = |c: &std::collections::BTreeMap<String, usize>| c.values().sum::<usize>();
    let resyncs = idle.as_secs_f64() / resync.as_secs_f64();
    println!(
        "kelp EC2 pool on moto (EC2 calls counted at a proxy; resync {} s)",
        resync.as_secs()
    );
    println!(
        "  1 instance : Ready after {:.1} s; {} EC2 calls {:?}",
        t1.as_secs_f64(),
        total(&calls1),
        calls1
    );
    println!(
        "  {n} instances: Ready after {:.1} s ({:.2} x one); {} EC2 calls ({:.2} x one) {:?}",
        tn.as_secs_f64(),
        tn.as_secs_f64() / t1.as_secs_f64().max(0.001),
        total(&callsn),
        total(&callsn) as f64 / total(&calls1).max(1) as f64,
        callsn
    );
    println!(
        "  steady state: {:.1} EC2 calls per resync with 2 Clusters ({idle1} calls in {}s before the big pool, {idlen} after)",
        idlen as f64 / resyncs,
        idle.as_secs()
    );
}
