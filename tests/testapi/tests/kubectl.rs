//! The real kubectl against the test server: apply, re-apply, server-side apply,
//! get with printer columns, explain, wait, watch and delete with a finalizer.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kelp_testapi::TestApiServer;
use tokio::io::{AsyncBufReadExt, BufReader};

struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    async fn new(server: &TestApiServer) -> Self {
        let dir = std::env::temp_dir().join(format!("kelp-kubectl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
        Kubectl { kubeconfig }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.kubeconfig.parent().unwrap())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl; panics with its output unless it exits as `expect_ok` says.
    async fn run_expect(&self, args: &[&str], stdin: Option<&str>, expect_ok: bool) -> String {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl is installed");
        if let Some(input) = stdin {
            use tokio::io::AsyncWriteExt;
            let mut s = child.stdin.take().unwrap();
            s.write_all(input.as_bytes()).await.unwrap();
        }
        drop(child.stdin.take());
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finished")
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.success(),
            expect_ok,
            "kubectl {}:\n{text}",
            args.join(" ")
        );
        text
    }

    async fn run(&self, args: &[&str]) -> String {
        self.run_expect(args, None, true).await
    }
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drives_the_test_server() {
    let server = TestApiServer::start().await.unwrap();
    let k = Kubectl::new(&server).await;

    let out = k.run(&["apply", "-f", &repo("crds")]).await;
    assert_eq!(out.matches("created").count(), 3, "{out}");
    k.run(&[
        "wait",
        "--for=condition=Established",
        "crd/modules.kelp.imagine-ai.eu",
        "--timeout=10s",
    ])
    .await;

    let out = k.run(&["apply", "-f", &repo("examples")]).await;
    for obj in [
        "module.kelp.imagine-ai.eu/yolov8 created",
        "cluster.kelp.imagine-ai.eu/sim-gpu created",
        "deployment.kelp.imagine-ai.eu/fish-detector created",
        "secret/nextcloud-alice created",
    ] {
        assert!(out.contains(obj), "{out}");
    }
    let out = k.run(&["apply", "-f", &repo("examples")]).await;
    // A Secret written with stringData is reported `configured` on every client-side
    // apply, as with any API server: the live object keeps only `data`.
    assert_eq!(
        out.matches("unchanged").count(),
        3,
        "re-apply changes nothing:\n{out}"
    );
    assert!(out.contains("secret/nextcloud-alice configured"), "{out}");

    let changed = std::fs::read_to_string(repo("examples/module-yolov8.yaml"))
        .unwrap()
        .replace("cpu: 4", "cpu: 8");
    let out = k
        .run_expect(&["apply", "-f", "-"], Some(&changed), true)
        .await;
    assert!(
        out.contains("module.kelp.imagine-ai.eu/yolov8 configured"),
        "{out}"
    );
    let cpu = k
        .run(&[
            "get",
            "kmod",
            "yolov8",
            "-o",
            "jsonpath={.spec.resources.cpu}",
        ])
        .await;
    assert_eq!(cpu.trim(), "8");

    let out = k
        .run(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &repo("examples"),
        ])
        .await;
    assert!(out.contains("serverside-applied"), "{out}");

    let out = k.run(&["get", "kelp", "-A"]).await;
    for needle in [
        "module.kelp.imagine-ai.eu/yolov8",
        "cluster.kelp.imagine-ai.eu/sim-gpu",
        "deployment.kelp.imagine-ai.eu/fish-detector",
        "IMAGE",
        "ai4oshub/ai4os-yolov8-torch",
        "POOLS",
        "cpu,gpu-t4",
        "ENDPOINT",
    ] {
        assert!(out.contains(needle), "{needle} missing in:\n{out}");
    }

    let out = k
        .run(&["explain", "cluster.spec.nodePools.machine.gpu"])
        .await;
    assert!(
        out.contains("GPUs a machine must have") || out.contains("GPU requirements"),
        "{out}"
    );
    assert!(out.contains("count"), "{out}");

    // Invalid input is rejected with the field named.
    let bad = changed.replace("port: 5000", "port: 0");
    let out = k.run_expect(&["apply", "-f", "-"], Some(&bad), false).await;
    assert!(out.contains("spec.serving.port"), "{out}");
    let unknown = changed.replace(
        "  title: YoloV8 model",
        "  title: YoloV8 model\n  colour: blue",
    );
    let out = k
        .run_expect(&["apply", "-f", "-"], Some(&unknown), false)
        .await;
    assert!(out.contains("colour"), "strict field validation: {out}");

    // Watch in the background while the status changes, then wait for Ready.
    let mut watch = k.command(&["get", "kmod", "-w", "--output-watch-events"]);
    watch.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = watch.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        first.contains("EVENT") || first.contains("yolov8"),
        "{first}"
    );
    let status = r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Resolved","message":"image resolved","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    k.run(&[
        "patch",
        "kmod",
        "yolov8",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])
    .await;
    k.run(&[
        "wait",
        "--for=condition=Ready",
        "kmod/yolov8",
        "--timeout=10s",
    ])
    .await;
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("MODIFIED")) {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("watch line")
            .unwrap()
            .unwrap();
        seen.push(line);
    }
    assert!(seen.last().unwrap().contains("True"), "{seen:?}");
    child.kill().await.unwrap();

    // Delete with a finalizer: marked first, gone once the finalizer is removed.
    k.run(&[
        "patch",
        "kcl",
        "sim-gpu",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["kelp.imagine-ai.eu/cleanup"]}}"#,
    ])
    .await;
    k.run(&["delete", "kcl", "sim-gpu", "--wait=false"]).await;
    let ts = k
        .run(&[
            "get",
            "kcl",
            "sim-gpu",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ])
        .await;
    assert!(!ts.trim().is_empty(), "deletionTimestamp set");
    k.run(&[
        "patch",
        "kcl",
        "sim-gpu",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await;
    let out = k.run_expect(&["get", "kcl", "sim-gpu"], None, false).await;
    assert!(
        out.contains("NotFound") || out.contains("not found"),
        "{out}"
    );

    // sim-gpu is already gone; the rest of the examples are deleted.
    let out = k
        .run(&["delete", "--ignore-not-found", "-f", &repo("examples")])
        .await;
    assert_eq!(out.matches("deleted").count(), 3, "{out}");
    let out = k.run(&["get", "kelp", "-A"]).await;
    assert!(out.contains("No resources found"), "{out}");
    server.shutdown().await;
}

/// Every example, and manifests that leave out the defaults inside lists, re-applied with
/// client-side `kubectl apply`: nothing but the stringData Secrets is `configured`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplying_every_example_changes_nothing() {
    let server = TestApiServer::start().await.unwrap();
    let k = with_crds(&server).await;
    // Defaults omitted inside list items: pool replicas, gpu.count, autoscaling's
    // minReplicas, a storage mount's mountPath, readOnly and webdav.vendor.
    let sparse = r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {name: sparse}
spec:
  cloud: {sim: {}}
  nodePools:
    - name: cpu
    - name: gpu
      machine: {gpu: {model: T4}}
      autoscaling: {maxReplicas: 3}
      taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
---
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Deployment
metadata: {name: sparse}
spec:
  moduleRef: {name: yolov8}
  clusterRef: {name: sparse}
  storage:
    - name: rshare
      webdav: {url: "https://share.example.org/dav", credentialsSecretRef: {name: s}}
"#;
    let dir = std::env::temp_dir().join(format!("kelp-sparse-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sparse.yaml");
    std::fs::write(&file, sparse).unwrap();
    let file = file.to_string_lossy().into_owned();
    let examples = repo("examples");
    let first = k.run(&["apply", "-R", "-f", &examples, "-f", &file]).await;
    let created = first.matches(" created").count();
    assert!(created >= 10, "{first}");
    let again = k.run(&["apply", "-R", "-f", &examples, "-f", &file]).await;
    for line in again.lines() {
        if line.starts_with("secret/") {
            // The live Secret keeps only `data`: configured on every apply, as with any
            // API server.
            continue;
        }
        assert!(
            line.ends_with(" unchanged"),
            "re-apply changed {line}:\n{again}"
        );
    }
    assert_eq!(again.lines().count(), created, "{again}");
}

/// What kubectl prints for invalid objects: each field once, and the rule that is
/// broken (a name's length before its characters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_reported_as_a_real_server_reports_them() {
    let server = TestApiServer::start().await.unwrap();
    let k = with_crds(&server).await;
    let dep = |name: &str, replicas: i32| {
        format!(
            "apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Deployment\nmetadata: {{name: {name}}}\n\
             spec: {{moduleRef: {{name: m}}, clusterRef: {{name: c}}, replicas: {replicas}}}\n"
        )
    };
    let out = k
        .run_expect(&["apply", "-f", "-"], Some(&dep("fish", -1)), false)
        .await;
    assert!(out.contains("spec.replicas: Invalid value: -1"), "{out}");
    assert_eq!(
        out.matches("spec.replicas").count(),
        2,
        "field once per line: {out}"
    );
    assert!(!out.contains("spec.replicas: spec.replicas"), "{out}");

    let out = k
        .run_expect(
            &["apply", "-f", "-"],
            Some(&dep(&"f".repeat(300), 1)),
            false,
        )
        .await;
    assert!(out.contains("must be no more than 253 characters"), "{out}");
    assert!(!out.contains("RFC 1123"), "{out}");

    let out = k
        .run_expect(&["apply", "-f", "-"], Some(&dep(&"f".repeat(64), 1)), false)
        .await;
    assert!(
        out.contains("a Deployment name must be no more than 63 characters"),
        "{out}"
    );
    let out = k.run(&["get", "kdep", "-o", "name"]).await;
    assert!(
        out.trim().is_empty() || out.contains("No resources"),
        "{out}"
    );
}

/// kubectl on `server`, once kelp's CRDs are applied and established.
async fn with_crds(server: &TestApiServer) -> Kubectl {
    let k = Kubectl::new(server).await;
    k.run(&["apply", "-f", &repo("crds")]).await;
    k.run(&[
        "wait",
        "--for=condition=Established",
        "crd/deployments.kelp.imagine-ai.eu",
        "--timeout=10s",
    ])
    .await;
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_cordons_and_evicts() {
    let server = TestApiServer::start().await.unwrap();
    let k = Kubectl::new(&server).await;
    k.run_expect(
        &["apply", "-f", "-"],
        Some(
            r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: job, namespace: default}
spec:
  nodeName: n1
  containers: [{name: c, image: busybox}]
"#,
        ),
        true,
    )
    .await;
    let out = k
        .run(&[
            "drain",
            "n1",
            "--force",
            "--ignore-daemonsets",
            "--timeout=30s",
        ])
        .await;
    // kubectl found the eviction subresource in discovery and used it.
    assert!(out.contains("evicting pod default/job"), "{out}");
    assert!(out.contains("node/n1 drained"), "{out}");
    let out = k
        .run(&["get", "node", "n1", "-o", "jsonpath={.spec.unschedulable}"])
        .await;
    assert_eq!(out.trim(), "true");
    let out = k
        .run_expect(&["get", "pod", "job", "-n", "default"], None, false)
        .await;
    assert!(out.contains("NotFound"), "{out}");
}
