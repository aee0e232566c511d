//! Operator memory benchmark (prints figures, asserts nothing): `kelp run` as its own
//! process against kelp's test API server (in this process), so the figure is the
//! operator's alone. The N sim Clusters use `kubernetes: Existing` pointing at that same
//! API server, so no sim control plane lives in the operator process, and that server's
//! simulated kubelet runs in this process, beside it; M Deployments are
//! spread over them. The baseline is the same operator process idle, before any object.
//! The last line sums it up for scripts: `BENCH operator_rss clusters=N deployments=M
//! idle_mib=... loaded_mib=...`.
//!
//! ```sh
//! cargo bench -p kelp-operator --bench operator_rss
//! KELP_BENCH_CLUSTERS=10 KELP_BENCH_DEPLOYMENTS=100 cargo bench -p kelp-operator --bench operator_rss
//! KELP_BENCH_HEAPTRACK=/tmp/kelp.heap cargo bench -p kelp-operator --bench operator_rss
//! heaptrack_print /tmp/kelp.heap.zst | less     # where the operator's heap goes
//! ```
//!
//! With `KELP_BENCH_HEAPTRACK=FILE`, the operator runs under `heaptrack -o FILE` (RSS
//! figures then include heaptrack's own memory; read them from a run without it).

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use kelp_crds::{Cluster, Deployment};
use kube::api::{Api, ListParams};

/// The loaded figures measured last (release build), by Deployments (100 Clusters):
/// what `vs_last` compares with. At 1,000, before the caches were trimmed and the
/// kubelet paged, it was 165.7 MiB.
const LAST_LOADED_MIB: &[(usize, f64)] = &[(1_000, 52.8), (10_000, 126.5)];
/// The targets, by Deployments (100 Clusters).
const TARGET_MIB: &[(usize, f64)] = &[(1_000, 64.0), (10_000, 256.0)];

/// The figure of `table` for `m` Deployments: the entry of the nearest scale point.
fn at_scale(table: &[(usize, f64)], m: usize) -> f64 {
    table
        .iter()
        .min_by_key(|(k, _)| k.abs_diff(m))
        .map_or(0.0, |(_, v)| *v)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// VmHWM (peak RSS) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn ready(c: Option<&Vec<kelp_crds::Condition>>) -> bool {
    c.is_some_and(|c| kelp_operator::conditions::is_true(c, "Ready"))
}

async fn apply(client: &kube::Client, doc: serde_json::Value) {
    kelp_operator::dev::apply_manifest(client, "default", "bench", &doc)
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let n = env_usize("KELP_BENCH_CLUSTERS", 100).max(1);
    let m = env_usize("KELP_BENCH_DEPLOYMENTS", 1000);
    let server = kelp_testapi::TestApiServer::start().await.unwrap();
    let client = kelp_operator::targets::client_from_kubeconfig(&server.kubeconfig())
        .await
        .unwrap();
    kelp_operator::dev::install_crds(&client).await.unwrap();
    // The simulated kubelet of that API server runs here, beside it, as a real cluster's
    // scheduler runs beside its API server: the operator process runs none.
    kelp_operator::sim_kube::spawn_kubelet(client.clone());
    let dir = std::env::temp_dir().join(format!("kelp-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    std::fs::write(&kc, server.kubeconfig()).unwrap();
    let heaptrack = std::env::var("KELP_BENCH_HEAPTRACK").ok();
    let mut cmd = match &heaptrack {
        Some(out) => {
            let mut c = std::process::Command::new("heaptrack");
            c.args(["-o", out]).arg(env!("CARGO_BIN_EXE_kelp"));
            c
        }
        None => std::process::Command::new(env!("CARGO_BIN_EXE_kelp")),
    };
    let mut child = cmd
        .arg("run")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["--leader-election=false", "--health-address=127.0.0.1:0"])
        .env("RUST_LOG", "error")
        // Its own process group, so that heaptrack and the operator stop together.
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = peak_rss_mib(pid);

    let start = Instant::now();
    apply(
        &client,
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "here"},
        "stringData": {"value": server.kubeconfig()}}),
    )
    .await;
    apply(&client, serde_json::json!({"apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Module", "metadata": {"name": "m"},
        "spec": {"title": "t", "summary": "s", "image": {"repository": "ai4oshub/ai4os-demo-app"}, "resources": {"cpu": 1, "memoryMB": 1000, "gpu": 0}}})).await;
    let per_cluster = m.div_ceil(n);
    let cpu_machines = per_cluster.div_ceil(3).max(1);
    for i in 0..n {
        apply(&client, serde_json::json!({"apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Cluster", "metadata": {"name": format!("c{i}")},
            "spec": {"cloud": {"sim": {"latencyMs": 5}},
                     "kubernetes": {"mode": "Existing", "kubeconfigSecretRef": {"name": "here"}},
                     "nodePools": [
                        {"name": "cpu", "replicas": cpu_machines, "machine": {"cpu": 4, "memoryMB": 8000}},
                        {"name": "gpu-t4", "replicas": 1, "machine": {"cpu": 8, "memoryMB": 32000, "gpu": {"count": 1, "model": "T4"}}},
                        {"name": "gpu-a100", "replicas": 0, "machine": {"gpu": {"count": 1, "model": "A100"}}}]}})).await;
    }
    for j in 0..m {
        apply(&client, serde_json::json!({"apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Deployment", "metadata": {"name": format!("d{j}")},
            "spec": {"moduleRef": {"name": "m"}, "clusterRef": {"name": format!("c{}", j % n)}, "nodePool": "cpu"}})).await;
    }
    let created = start.elapsed();
    let clusters: Api<Cluster> = Api::default_namespaced(client.clone());
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let (mut clusters_ready, mut all_ready) = (None, None);
    while start.elapsed() < Duration::from_secs(900) {
        let c = clusters.list(&ListParams::default()).await.unwrap().items;
        if clusters_ready.is_none()
            && c.iter()
                .all(|c| ready(c.status.as_ref().map(|s| &s.conditions)))
        {
            clusters_ready = Some(start.elapsed());
        }
        let d = deployments
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        if d.iter()
            .all(|d| ready(d.status.as_ref().map(|s| &s.conditions)))
        {
            all_ready = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let peak = peak_rss_mib(pid);
    if heaptrack.is_some() {
        // SIGINT: the operator shuts down and heaptrack writes its file.
        std::process::Command::new("kill")
            .args(["-INT", "--", &format!("-{pid}")])
            .status()
            .ok();
    } else {
        child.kill().ok();
    }
    child.wait().ok();
    let _ = std::fs::remove_dir_all(&dir);
    let s = |d: Option<Duration>| {
        d.map_or("not reached".to_string(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        })
    };
    println!("kelp operator process (kelp run), {n} sim Clusters (Existing) and {m} Deployments");
    println!(
        "  objects created in        : {:.1} s",
        created.as_secs_f64()
    );
    println!("  all Clusters Ready after  : {}", s(clusters_ready));
    println!("  all Deployments Ready after: {}", s(all_ready));
    println!("  operator peak RSS idle    : {idle:.1} MiB (1.00, baseline)");
    println!(
        "  operator peak RSS loaded  : {peak:.1} MiB ({:.2} x idle)",
        peak / idle.max(0.001)
    );
    let secs =
        |d: Option<Duration>| d.map_or("none".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
    let (last, target) = (at_scale(LAST_LOADED_MIB, m), at_scale(TARGET_MIB, m));
    println!(
        "BENCH operator_rss clusters={n} deployments={m} idle_mib={idle:.1} loaded_mib={peak:.1} ratio={:.2} clusters_ready_s={} deployments_ready_s={} last_loaded_mib={last} vs_last={:.2} target_mib={target}",
        peak / idle.max(0.001),
        secs(clusters_ready),
        secs(all_ready),
        peak / last
    );
}
