//! `kelp dev` driven by kubectl, the way the README tells a new user to try it: apply the
//! examples, wait for the sim Cluster and the Deployment, look into the sim Cluster's own
//! Kubernetes, delete everything again. Needs `kubectl` on PATH; touches only 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs kubectl against `kubeconfig`, with a discovery cache inside `cache`, nothing from
/// the user's environment.
fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs (is it installed?)")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running `kelp dev` in its own temporary directory; killed and cleaned up on drop.
struct Dev {
    child: Child,
    dir: PathBuf,
}

impl Dev {
    fn start() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("kelp-dev-kubectl-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("cache")).unwrap();
        let stdout = std::fs::File::create(dir.join("stdout")).unwrap();
        let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kelp"))
            .arg("dev")
            .arg("--kubeconfig")
            .arg(dir.join("kc"))
            .args(["--port", "0"])
            .current_dir(&dir)
            .env("RUST_LOG", "warn")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("kelp dev starts");
        Dev { child, dir }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kc")
    }

    /// Fails the test with `msg` and what kelp dev logged.
    fn fail(&mut self, msg: &str) -> ! {
        let exited = self.child.try_wait().ok().flatten();
        let stderr = std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default();
        let stdout = std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default();
        panic!(
            "{msg}\n--- kelp dev (exited: {exited:?}) stdout ---\n{stdout}\n--- kelp dev stderr ---\n{stderr}"
        );
    }

    /// kubectl against the kelp dev API server (or the kubeconfig `kc`), raw.
    fn run(&self, kc: Option<&Path>, args: &[&str]) -> Output {
        let own = self.kubeconfig();
        kubectl(kc.unwrap_or(&own), &self.dir.join("cache"), args)
    }

    /// kubectl that must succeed; returns its stdout.
    fn ok(&mut self, kc: Option<&Path>, args: &[&str]) -> String {
        let out = self.run(kc, args);
        if !out.status.success() {
            self.fail(&format!(
                "kubectl {} failed: {}",
                args.join(" "),
                text(&out)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `check` every 250 ms until it returns Ok, at most WAIT long.
    fn wait_until<T>(
        &mut self,
        what: &str,
        mut check: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        loop {
            match check(self) {
                Ok(v) => return v,
                Err(last) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        self.fail(&format!(
                            "kelp dev exited ({status}) while waiting for {what}"
                        ));
                    }
                    if start.elapsed() > WAIT {
                        self.fail(&format!(
                            "timed out after {WAIT:?} waiting for {what}; last: {last}"
                        ));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn kubectl_applies_the_examples_to_kelp_dev_and_deletes_them() {
    let mut dev = Dev::start();
    let examples = repo().join("examples");
    let examples = examples.to_str().unwrap().to_string();

    // Up: the kubeconfig is written and the three CRDs are served.
    dev.wait_until("the kubeconfig file", |d| {
        if d.kubeconfig().exists() {
            Ok(())
        } else {
            Err("not written yet".into())
        }
    });
    dev.wait_until("the 3 kelp CRDs", |d| {
        let out = d.run(None, &["get", "crd", "-o", "name"]);
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        let want = [
            "modules.kelp.imagine-ai.eu",
            "clusters.kelp.imagine-ai.eu",
            "deployments.kelp.imagine-ai.eu",
        ];
        if out.status.success() && want.iter().all(|c| listed.contains(c)) {
            Ok(())
        } else {
            Err(text(&out))
        }
    });

    // Apply the examples (not examples/clouds/: no -R) and wait for Ready.
    let applied = dev.ok(None, &["apply", "-f", &examples]);
    for what in [
        "cluster.kelp.imagine-ai.eu/sim-gpu",
        "module.kelp.imagine-ai.eu/yolov8",
        "deployment.kelp.imagine-ai.eu/fish-detector",
        "secret/nextcloud-alice",
    ] {
        assert!(applied.contains(what), "{what} not applied: {applied}");
    }
    assert!(
        !applied.contains("ec2"),
        "examples/clouds applied: {applied}"
    );
    for obj in [
        "cluster.kelp.imagine-ai.eu/sim-gpu",
        "deployment.kelp.imagine-ai.eu/fish-detector",
    ] {
        dev.ok(
            None,
            &["wait", "--for=condition=Ready", obj, "--timeout=120s"],
        );
    }

    let endpoint = dev.ok(
        None,
        &[
            "get",
            "kdep",
            "fish-detector",
            "-o",
            "jsonpath={.status.endpoint}",
        ],
    );
    assert!(!endpoint.trim().is_empty(), "fish-detector has no endpoint");

    let listing = dev.ok(None, &["get", "kelp"]);
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|n| n.ends_with(name))
            })
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("sim-gpu").split_whitespace().any(|c| c == "Ready"),
        "kubectl get kelp: no Ready phase for sim-gpu:\n{listing}"
    );
    assert!(
        line("fish-detector")
            .split_whitespace()
            .any(|c| c == "Ready"),
        "kubectl get kelp: no Ready phase for fish-detector:\n{listing}"
    );
    assert!(listing.contains("yolov8"), "{listing}");

    // Inside the sim Cluster: its nodes and the module's workload.
    let encoded = dev.ok(
        None,
        &[
            "get",
            "secret",
            "sim-gpu-kubeconfig",
            "-o",
            "jsonpath={.data.value}",
        ],
    );
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .expect("the kubeconfig Secret is base64");
    let sim_kc = dev.dir.join("sim-gpu.kubeconfig");
    std::fs::write(&sim_kc, decoded).unwrap();
    let nodes_jsonpath = r#"jsonpath={range .items[*]}{.metadata.name}{" "}{.metadata.labels.kelp\.imagine-ai\.eu/pool}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#;
    let nodes = dev.wait_until("3 Ready nodes in sim-gpu", |d| {
        let out = d.run(Some(&sim_kc), &["get", "nodes", "-o", nodes_jsonpath]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let ready: Vec<String> = stdout
            .lines()
            .filter(|l| l.ends_with(" True"))
            .map(String::from)
            .collect();
        if out.status.success() && ready.len() == 3 {
            Ok(ready)
        } else {
            Err(text(&out))
        }
    });
    let pools: Vec<&str> = nodes
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        pools.iter().filter(|p| **p == "cpu").count(),
        1,
        "{nodes:?}"
    );
    assert_eq!(
        pools.iter().filter(|p| **p == "gpu-t4").count(),
        2,
        "{nodes:?}"
    );
    // kubectl's default (Table) output agrees.
    let table = dev.ok(Some(&sim_kc), &["get", "nodes"]);
    assert_eq!(
        table.lines().filter(|l| !l.starts_with("NAME")).count(),
        3,
        "{table}"
    );
    let workload = dev.ok(
        Some(&sim_kc),
        &[
            "get",
            "deployments.apps",
            "-n",
            "default",
            "fish-detector",
            "-o",
            "name",
        ],
    );
    assert_eq!(workload.trim(), "deployment.apps/fish-detector");

    // Delete: the Cluster's finalizer keeps it until kelp has deleted the machines.
    dev.ok(None, &["delete", "-f", &examples, "--wait=false"]);
    dev.wait_until("the Cluster to be gone", |d| {
        let out = d.run(None, &["get", "kcl"]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && all.contains("No resources found") {
            Ok(())
        } else {
            Err(text(&out))
        }
    });
    dev.wait_until("every kelp object to be gone", |d| {
        let out = d.run(None, &["get", "kelp"]);
        if out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("No resources found")
        {
            Ok(())
        } else {
            Err(text(&out))
        }
    });
}

/// Every `kubectl create ...` the README and docs/ tell a user to type, in an `sh` block
/// (backslash continuations joined), in order.
fn documented_creates() -> Vec<String> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut in_sh = false;
        let mut pending = String::new();
        for line in text.lines() {
            if line.starts_with("```") {
                in_sh = line.trim() == "```sh";
                continue;
            }
            if !in_sh {
                continue;
            }
            let line = line.trim();
            if pending.is_empty() && !line.starts_with("kubectl create") {
                continue;
            }
            match line.strip_suffix('\\') {
                Some(head) => pending.push_str(head),
                None => {
                    pending.push_str(line);
                    out.push(std::mem::take(&mut pending));
                }
            }
        }
    }
    out
}

/// kubectl's built-in creates send protobuf; kelp dev's API server takes them, and the
/// tokens and RBAC they create behave as on a real cluster.
#[test]
fn kubectl_create_commands_work_against_kelp_dev() {
    let mut dev = Dev::start();
    dev.wait_until("the kubeconfig file", |d| {
        if d.kubeconfig().exists() && d.run(None, &["get", "ns"]).status.success() {
            Ok(())
        } else {
            Err("not up yet".into())
        }
    });
    let documented = documented_creates();
    assert!(
        documented
            .iter()
            .any(|c| c.contains("create secret generic")),
        "docs/install.md's credentials commands are found: {documented:?}"
    );
    for cmd in &documented {
        let words: Vec<&str> = cmd.split_whitespace().skip(1).collect();
        let out = dev.run(None, &words);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // kelp dev makes kelp-system itself; docs/install.md creates it on a new cluster.
        if !out.status.success() && !stderr.contains("AlreadyExists") {
            dev.fail(&format!("documented `{cmd}` failed: {}", text(&out)));
        }
    }

    for args in [
        &["create", "namespace", "team-b"][..],
        &[
            "create",
            "secret",
            "generic",
            "creds",
            "-n",
            "team-b",
            "--from-literal=password=s3cret pass",
        ],
        &[
            "create",
            "configmap",
            "settings",
            "-n",
            "team-b",
            "--from-literal=threshold=0.5",
        ],
        &["create", "serviceaccount", "viewer", "-n", "team-b"],
        &[
            "create",
            "deployment",
            "web",
            "-n",
            "team-b",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=8080",
        ],
        &[
            "create",
            "role",
            "reader",
            "-n",
            "team-b",
            "--verb=get,list",
            "--resource=configmaps,deployments.apps",
        ],
        &[
            "create",
            "rolebinding",
            "viewer-reads",
            "-n",
            "team-b",
            "--role=reader",
            "--serviceaccount=team-b:viewer",
        ],
    ] {
        dev.ok(None, args);
    }
    let secret = dev.ok(
        None,
        &[
            "get",
            "secret",
            "creds",
            "-n",
            "team-b",
            "-o",
            "jsonpath={.data.password}",
        ],
    );
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .unwrap(),
        b"s3cret pass"
    );
    let replicas = dev.ok(
        None,
        &[
            "get",
            "deployment",
            "web",
            "-n",
            "team-b",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].ports[0].containerPort}",
        ],
    );
    assert_eq!(replicas.trim(), "2 8080");

    // The admin may; the ServiceAccount may only what its Role says.
    assert_eq!(
        dev.ok(None, &["auth", "can-i", "delete", "nodes"]).trim(),
        "yes"
    );
    let sa = "system:serviceaccount:team-b:viewer";
    assert_eq!(
        dev.ok(
            None,
            &[
                "auth",
                "can-i",
                "list",
                "configmaps",
                "-n",
                "team-b",
                "--as",
                sa
            ]
        )
        .trim(),
        "yes"
    );
    let out = dev.run(
        None,
        &[
            "auth", "can-i", "list", "secrets", "-n", "team-b", "--as", sa,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no",
        "{}",
        text(&out)
    );

    // A token for the ServiceAccount, used as a kubeconfig's credential.
    let token = dev.ok(None, &["create", "token", "viewer", "-n", "team-b"]);
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
    let sa_kc = dev.dir.join("viewer.kubeconfig");
    let admin_kc = std::fs::read_to_string(dev.kubeconfig()).unwrap();
    let kc: serde_json::Value = serde_yaml_ng::from_str(&admin_kc).unwrap();
    let mut kc = kc;
    kc["users"][0]["user"] = serde_json::json!({"token": token.trim()});
    std::fs::write(&sa_kc, serde_yaml_ng::to_string(&kc).unwrap()).unwrap();
    let whoami = dev.ok(Some(&sa_kc), &["auth", "whoami"]);
    assert!(whoami.contains(sa), "{whoami}");
    dev.ok(Some(&sa_kc), &["get", "configmaps", "-n", "team-b"]);
    let out = dev.run(Some(&sa_kc), &["get", "secrets", "-n", "team-b"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "secrets is forbidden: User \"system:serviceaccount:team-b:viewer\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team-b\""
        ),
        "{}",
        text(&out)
    );
}
