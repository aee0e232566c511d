//! Real Prometheus (Debian's 2.42) scrapes a `kelp run` that reconciles a sim Cluster, a
//! Deployment and an EC2 Cluster on moto; PromQL through its HTTP API finds the reconciles
//! of all three controllers and the EC2 calls. `promtool check metrics` lints the
//! exposition.

mod common;

use std::io::Write;
use std::time::Duration;

use common::process::{KelpRun, free_port, http_get};
use kelp_crds::{Cluster, Deployment};
use kube::Api;
use serde_json::{Value, json};

const NS: &str = "kelp-system";

/// Debian's prometheus and promtool; None (skipped) unless `KELP_REQUIRE_PROMETHEUS`.
fn tools() -> Option<()> {
    let ok = |bin: &str| {
        std::process::Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok("prometheus") && ok("promtool") {
        return Some(());
    }
    assert!(
        std::env::var_os("KELP_REQUIRE_PROMETHEUS").is_none(),
        "KELP_REQUIRE_PROMETHEUS is set but prometheus or promtool does not run"
    );
    eprintln!("skipped: Debian's prometheus is not installed (.ci/run installs it)");
    None
}

async fn query(port: u16, promql: &str) -> Vec<Value> {
    let q: String = form_urlencoded(promql);
    match http_get(port, &format!("/api/v1/query?query={q}")).await {
        Some((200, body)) => serde_json::from_str::<Value>(&body).unwrap()["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        _ => vec![],
    }
}

fn form_urlencoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_reconciles_and_cloud_calls() {
    if tools().is_none() {
        return;
    }
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    let endpoint = moto.endpoint();
    let (server, admin) = common::process::api_server(&[NS]).await;
    let op = KelpRun::start(&server.kubeconfig(), NS, &[], "info").await;
    let kubelets = common::kubelets::register(admin.clone(), &endpoint);
    for yaml in [
        common::MODULE.to_string(),
        common::SECRET.to_string(),
        common::cluster("sim-gpu", 0, 1),
        common::deployment("detector", "sim-gpu", 1),
        common::process::ec2_cluster(
            "on-ec2",
            &endpoint,
            2,
            ("testing", "testing"),
            &server.kubeconfig(),
        ),
    ] {
        common::process::apply(&admin, &yaml).await;
    }
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    for _ in 0..900 {
        let d = deployments.get("detector").await.unwrap();
        let ready_dep = d
            .status
            .as_ref()
            .is_some_and(|s| kelp_operator::conditions::is_true(&s.conditions, "Ready"));
        if ready_dep && common::is_ready_cluster(&clusters.get("on-ec2").await.unwrap()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        common::is_ready_cluster(&clusters.get("on-ec2").await.unwrap()),
        "{}",
        op.log()
    );

    // promtool lints what a plain scraper gets.
    let (code, classic) = op.get("/metrics").await.unwrap();
    assert_eq!(code, 200);
    let mut lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(classic.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{classic}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // No label holds an object's name or UID: the series do not grow with the objects.
    let uid = clusters.get("on-ec2").await.unwrap().metadata.uid.unwrap();
    for name in ["detector", "sim-gpu", "on-ec2", "yolov8", uid.as_str()] {
        assert!(
            !classic.contains(&format!("\"{name}\"")),
            "{name} is a label value:\n{classic}"
        );
    }
    println!("a sample of /metrics:");
    for line in classic
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
        .take(30)
    {
        println!("  {line}");
    }

    // Prometheus scrapes it (asking for OpenMetrics, as it does).
    let dir = std::env::temp_dir().join(format!("kelp-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: kelp\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n",
            op.health_port
        ),
    )
    .unwrap();
    let web = free_port();
    let mut prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .arg("--log.level=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    let mut controllers = Vec::new();
    let mut ec2 = Vec::new();
    for _ in 0..600 {
        let r = query(web, "kelp_reconcile_total").await;
        controllers = r
            .iter()
            .filter_map(|s| s["metric"]["controller"].as_str().map(String::from))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        ec2 = query(
            web,
            "sum by (verb) (kelp_cloud_requests_total{driver=\"ec2\"})",
        )
        .await;
        if controllers.len() == 3 && !ec2.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        controllers,
        vec!["cluster", "deployment", "module"],
        "kelp_reconcile_total in Prometheus"
    );
    let verbs: Vec<&str> = ec2
        .iter()
        .filter_map(|s| s["metric"]["verb"].as_str())
        .collect();
    assert!(
        verbs.contains(&"create") && verbs.contains(&"list"),
        "EC2 calls: {ec2:?}"
    );
    let up = query(web, "up{job=\"kelp\"}").await;
    assert_eq!(up[0]["value"][1], json!("1"), "{up:?}");
    let leader = query(web, "kelp_leader").await;
    assert_eq!(leader[0]["value"][1], json!("1"), "{leader:?}");
    let machines = query(web, "sum(kelp_machines{driver=\"ec2\"})").await;
    assert_eq!(machines[0]["value"][1], json!("2"), "{machines:?}");
    println!("Prometheus: controllers {controllers:?}, EC2 verbs {verbs:?}");

    let _ = prometheus.kill().await;
    kubelets.abort();
    op.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
