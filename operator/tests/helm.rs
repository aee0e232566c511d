//! The chart with real Helm 4 and kubectl against kelp's test API server: lint, template
//! applied with a server-side dry run, install, upgrade and uninstall (what stays, what
//! goes), the values schema, capability-gated templates, and the console's part against
//! the console's code (its RBAC rules and its command line).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kelp_testapi::TestApiServer;
use serde_json::Value;

const NS: &str = "kelp-system";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Helm and kubectl against one test API server, each with its own config and caches.
struct Tools {
    helm: PathBuf,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Tools {
    fn new(helm: PathBuf, server: Option<&TestApiServer>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kelp-helm-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        if let Some(s) = server {
            std::fs::write(&kubeconfig, s.kubeconfig()).unwrap();
        }
        Tools {
            helm,
            dir,
            kubeconfig,
        }
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.dir)
            .env("HELM_CACHE_HOME", self.dir.join("cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("config"))
            .env("HELM_DATA_HOME", self.dir.join("data"));
    }

    fn helm(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.helm);
        cmd.args(args);
        self.env(&mut cmd);
        cmd.output().unwrap()
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        self.env(&mut cmd);
        let mut child = cmd.spawn().expect("kubectl is installed");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    fn ok(&self, out: Output, what: &str) -> String {
        assert!(
            out.status.success(),
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all, None);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }
}

impl Drop for Tools {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chart() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/kelp")
}

/// Every optional part of the chart switched on.
const ALL_ON: &[&str] = &[
    "--set",
    "serviceMonitor.enabled=true",
    "--set",
    "networkPolicy.enabled=true",
    "--set",
    "networkPolicy.apiServerCIDRs={192.0.2.10/32}",
    "--set",
    "networkPolicy.cloudCIDRs={198.51.100.0/24,203.0.113.0/24}",
    "--set",
    "logFormat=json",
    "--set",
    "openstackEndpoints=compute=https://nova.example.org:8774/v2.1",
    "--set",
    "egiSitesUrl=https://sites.example.org/egi-sites.yaml",
    "--set",
    "image.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
    "--set",
    "serviceAccount.annotations.example\\.org/role=kelp",
    "--set",
    "podLabels.team=ops",
    "--set",
    "console.enabled=true",
    "--set",
    "console.publicUrl=https://console.example.org",
    "--set",
    "console.oidc.clientSecret.name=kelp-console-oidc",
    "--set",
    "console.catalogueNamespace=kelp-catalogue",
    "--set",
    "console.ingress.enabled=true",
    "--set",
    "console.ingress.tlsSecretName=console-tls",
    "--set",
    "console.tenants[0].namespace=kelp-vo-imagine-ai-eu",
    "--set",
    "console.tenants[0].groups={vo.imagine-ai.eu}",
    "--set",
    "console.tenants[0].users={0123abcd@egi.eu}",
    "--api-versions",
    "monitoring.coreos.com/v1/ServiceMonitor",
];

/// The console's part of [`ALL_ON`].
fn console_on() -> Vec<&'static str> {
    ALL_ON
        .chunks(2)
        .filter(|pair| pair[1].starts_with("console."))
        .flatten()
        .copied()
        .collect()
}

fn documents(yaml: &str) -> Vec<Value> {
    kelp_crds::parse::documents(yaml).unwrap()
}

#[test]
fn helm_lint_passes_strictly_with_defaults_and_with_everything_on() {
    let Some(helm) = common::helm() else { return };
    let t = Tools::new(helm, None);
    t.ok(t.helm(&["lint", "--strict", chart()]), "helm lint --strict");
    let mut args = vec!["lint", "--strict", chart()];
    args.extend(
        ALL_ON
            .iter()
            .filter(|a| **a != "--api-versions" && !a.starts_with("monitoring")),
    );
    t.ok(t.helm(&args), "helm lint --strict (everything on)");
}

#[test]
fn the_values_schema_refuses_wrong_types() {
    let Some(helm) = common::helm() else { return };
    let t = Tools::new(helm, None);
    for (set, field) in [
        ("replicas=two", "/replicas"),
        ("crds.install=maybe", "/crds/install"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("healthPort=70000", "/healthPort"),
        (
            "networkPolicy.cloudCIDRs={not-a-cidr}",
            "/networkPolicy/cloudCIDRs/0",
        ),
        ("unknownValue=1", "unknownValue"),
        ("console.namespaceMode=team", "/console/namespaceMode"),
        ("console.enabled=yes", "/console/enabled"),
        ("console.replicas=2", "/console/replicas"),
        ("console.listenPort=0", "/console/listenPort"),
        ("console.service.type=External", "/console/service/type"),
        (
            "console.tenants[0].namespace=Not_A_Name",
            "/console/tenants/0",
        ),
        (
            "console.oidc.clientSecret=hunter2",
            "/console/oidc/clientSecret",
        ),
    ] {
        let out = t.helm(&["template", "kelp", chart(), "--set", set]);
        assert!(!out.status.success(), "--set {set} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "--set {set}: {err}");
    }
}

#[test]
fn templates_render_what_each_switch_says() {
    let Some(helm) = common::helm() else { return };
    let t = Tools::new(helm, None);
    let kinds = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["template", "kelp", chart(), "-n", NS];
        all.extend_from_slice(args);
        let out = t.ok(t.helm(&all), "helm template");
        documents(&out)
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let default = kinds(&[]);
    for k in [
        "CustomResourceDefinition/modules.kelp.imagine-ai.eu",
        "CustomResourceDefinition/clusters.kelp.imagine-ai.eu",
        "CustomResourceDefinition/deployments.kelp.imagine-ai.eu",
        "Deployment/kelp",
        "ServiceAccount/kelp",
        "ClusterRole/kelp",
        "ClusterRoleBinding/kelp",
        "Role/kelp",
        "RoleBinding/kelp",
        "ClusterRole/kelp-view",
        "ClusterRole/kelp-edit",
        "Service/kelp",
        "PodDisruptionBudget/kelp",
    ] {
        assert!(
            default.contains(&k.to_string()),
            "{k} not rendered: {default:?}"
        );
    }
    assert!(
        !default.iter().any(|k| k.starts_with("ServiceMonitor")
            || k.starts_with("NetworkPolicy")
            || k.contains("console")
            || k.starts_with("Namespace/")),
        "{default:?}"
    );
    // A ServiceMonitor only where the cluster serves monitoring.coreos.com/v1.
    let asked = kinds(&[]);
    assert!(
        !asked.iter().any(|k| k.starts_with("ServiceMonitor")),
        "{asked:?}"
    );
    let all = kinds(ALL_ON);
    assert!(all.contains(&"ServiceMonitor/kelp".to_string()), "{all:?}");
    assert!(all.contains(&"NetworkPolicy/kelp".to_string()), "{all:?}");
    for k in [
        "ServiceAccount/kelp-console",
        "ClusterRole/kelp-console",
        "ClusterRoleBinding/kelp-console",
        "ClusterRole/kelp-console-user",
        "Deployment/kelp-console",
        "Service/kelp-console",
        "Ingress/kelp-console",
        "Namespace/kelp-vo-imagine-ai-eu",
        "RoleBinding/kelp-console-user",
    ] {
        assert!(all.contains(&k.to_string()), "{k} not rendered: {all:?}");
    }
    let none = kinds(&[
        "--set",
        "crds.install=false",
        "--set",
        "rbac.create=false",
        "--set",
        "podDisruptionBudget.enabled=false",
    ]);
    assert!(
        !none
            .iter()
            .any(|k| k.starts_with("CustomResourceDefinition")
                || k.contains("Role")
                || k.starts_with("PodDisruptionBudget")),
        "{none:?}"
    );

    // The operator Pod: hardened, probed, told its namespace.
    let out = t.ok(
        t.helm(&[
            "template",
            "kelp",
            chart(),
            "-n",
            NS,
            "--show-only",
            "templates/deployment.yaml",
            "--set",
            "image.tag=1.2.3",
        ]),
        "helm template",
    );
    let d = &documents(&out)[0];
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "kelp:1.2.3");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        c["args"],
        serde_json::json!([
            "run",
            "--health-address=0.0.0.0:8081",
            "--leader-election=true",
            "--lease-name=kelp-operator",
            "--lease-duration=15",
            "--lease-renew-grace=5"
        ])
    );
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert!(c["env"].to_string().contains("metadata.namespace"));
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);

    // Read-wide, write-narrow: no `*` anywhere in the rules.
    let out = t.ok(
        t.helm(&[
            "template",
            "kelp",
            chart(),
            "--show-only",
            "templates/clusterrole.yaml",
            "--show-only",
            "templates/role.yaml",
            "--show-only",
            "templates/aggregated-roles.yaml",
        ]),
        "helm template",
    );
    for doc in documents(&out) {
        if let Some(rules) = doc["rules"].as_array() {
            for r in rules {
                assert!(
                    !r.to_string().contains("\"*\""),
                    "wildcard in {}: {r}",
                    doc["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn the_console_needs_its_public_url() {
    let Some(helm) = common::helm() else { return };
    let t = Tools::new(helm, None);
    let out = t.helm(&["template", "kelp", chart(), "--set", "console.enabled=true"]);
    assert!(!out.status.success(), "rendered without console.publicUrl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("console.enabled needs console.publicUrl: the URL users reach the console at"),
        "{err}"
    );
}

/// The console's part of the chart against the console's code: the ClusterRoles' rules
/// are rbac.rs's, the tenants' RoleBindings bind the names the console impersonates, and
/// the rendered command line is one `kelp console` takes and serves /healthz with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_chart_matches_the_console_code() {
    use kelp_operator::console::rbac;
    use serde_json::json;
    let Some(helm) = common::helm() else { return };
    let server = TestApiServer::start().await.unwrap();
    let t = Tools::new(helm, Some(&server));
    let port = common::process::free_port();
    let listen = format!("console.listenPort={port}");
    let mut args = vec![
        "template",
        "kelp",
        chart(),
        "-n",
        NS,
        "--show-only",
        "templates/console.yaml",
        "--set",
        &listen,
    ];
    args.extend(console_on());
    let docs = documents(&t.ok(t.helm(&args), "helm template"));
    let find = |kind: &str, name: &str| -> &Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind}/{name}"))
    };

    assert_eq!(
        find("ClusterRole", rbac::CONSOLE_ROLE)["rules"],
        rbac::console_rules()
    );
    assert_eq!(
        find("ClusterRole", rbac::USER_ROLE)["rules"],
        rbac::user_rules()
    );
    let crb = find("ClusterRoleBinding", "kelp-console");
    assert_eq!(crb["roleRef"]["name"], rbac::CONSOLE_ROLE);
    assert_eq!(
        crb["subjects"],
        json!([{"kind": "ServiceAccount", "name": "kelp-console", "namespace": NS}])
    );
    let tenant = find("Namespace", "kelp-vo-imagine-ai-eu");
    assert_eq!(
        tenant["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let rb = find("RoleBinding", rbac::USER_ROLE);
    assert_eq!(rb["metadata"]["namespace"], "kelp-vo-imagine-ai-eu");
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac::USER_ROLE})
    );
    assert_eq!(
        rb["subjects"],
        json!([
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "oidc:0123abcd@egi.eu"},
            {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "oidc:vo:vo.imagine-ai.eu"},
        ])
    );

    let d = find("Deployment", "kelp-console");
    assert_eq!(d["metadata"]["namespace"], NS);
    // Sessions are in memory: one replica, never two at once.
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "kelp-console");
    // The operator's Service, PodDisruptionBudget and NetworkPolicy select
    // name=kelp: the console's Pods are not theirs.
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "kelp-console");
    assert_eq!(
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "kelp-console"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    // The operator's image, which holds `kelp console` too.
    assert_eq!(c["image"], "kelp:0.1.0");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    let listen_arg = format!("--listen=0.0.0.0:{port}");
    assert_eq!(
        c["args"],
        json!([
            "console",
            listen_arg,
            "--public-url=https://console.example.org",
            "--oidc-issuer=https://aai.egi.eu/auth/realms/egi",
            "--oidc-client-id=kelp-console",
            "--oidc-scopes=openid profile email eduperson_entitlement",
            "--allowed-vo=vo.imagine-ai.eu",
            "--namespace-mode=user",
            "--namespace-prefix=kelp-",
            "--catalogue-namespace=kelp-catalogue",
        ])
    );
    // The client secret comes from its Secret, never from a value.
    let secret = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "KELP_OIDC_CLIENT_SECRET")
        .expect("KELP_OIDC_CLIENT_SECRET");
    assert_eq!(
        secret["valueFrom"]["secretKeyRef"],
        json!({"name": "kelp-console-oidc", "key": "client-secret"})
    );
    assert!(secret.get("value").is_none());
    assert_eq!(c["ports"][0]["containerPort"], port);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            c[probe]["httpGet"],
            json!({"path": "/healthz", "port": "http"})
        );
    }

    let svc = find("Service", "kelp-console");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        svc["spec"]["ports"][0],
        json!({"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"})
    );
    let ing = find("Ingress", "kelp-console");
    assert_eq!(ing["spec"]["rules"][0]["host"], "console.example.org");
    assert_eq!(
        ing["spec"]["tls"],
        json!([{"hosts": ["console.example.org"], "secretName": "console-tls"}])
    );
    assert_eq!(
        ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"],
        json!({"name": "kelp-console", "port": {"name": "http"}})
    );

    // `kelp console` with the Pod's command line (and its env: the API server from the
    // kubeconfig instead of the in-cluster account) serves /healthz on the Pod's port.
    let argv: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let log = t.dir.join("console.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(&argv)
        .env("KUBECONFIG", &t.kubeconfig)
        .env("KELP_OIDC_CLIENT_SECRET", "not-a-real-secret")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(&url).send().await {
            assert!(r.status().is_success(), "{url}: {}", r.status());
            assert_eq!(r.text().await.unwrap(), "ok");
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "kelp console {argv:?} exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kelp console did not serve {url}:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_template_passes_a_server_side_dry_run() {
    let Some(helm) = common::helm() else { return };
    let server = TestApiServer::start().await.unwrap();
    let t = Tools::new(helm, Some(&server));
    t.ok(
        t.kubectl(&["create", "namespace", NS], None),
        "kubectl create namespace",
    );
    let mut args = vec!["template", "kelp", chart(), "-n", NS];
    args.extend(
        ALL_ON
            .iter()
            .filter(|a| !a.contains("ServiceMonitor") && **a != "--api-versions")
            .copied(),
    );
    // The cluster has no Prometheus Operator: no ServiceMonitor either.
    let rendered = t.ok(t.helm(&args), "helm template");
    // A dry run makes no namespace, so the tenant's RoleBinding needs it to exist; its
    // Namespace is then a dry-run update.
    t.ok(
        t.kubectl(&["create", "namespace", "kelp-vo-imagine-ai-eu"], None),
        "kubectl create namespace",
    );
    // Every namespaced object names its namespace (a tenant's is its own), so no `-n`.
    let out = t.ok(
        t.kubectl(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(rendered.as_bytes()),
        ),
        "kubectl apply --dry-run=server",
    );
    for k in [
        "deployment.apps/kelp created (server dry run)",
        "clusterrole.rbac.authorization.k8s.io/kelp-view created (server dry run)",
        "networkpolicy.networking.k8s.io/kelp created (server dry run)",
        "customresourcedefinition.apiextensions.k8s.io/clusters.kelp.imagine-ai.eu created (server dry run)",
        "serviceaccount/kelp-console created (server dry run)",
        "clusterrole.rbac.authorization.k8s.io/kelp-console created (server dry run)",
        "clusterrole.rbac.authorization.k8s.io/kelp-console-user created (server dry run)",
        "clusterrolebinding.rbac.authorization.k8s.io/kelp-console created (server dry run)",
        "deployment.apps/kelp-console created (server dry run)",
        "service/kelp-console created (server dry run)",
        "ingress.networking.k8s.io/kelp-console created (server dry run)",
        "namespace/kelp-vo-imagine-ai-eu configured (server dry run)",
        "rolebinding.rbac.authorization.k8s.io/kelp-console-user created (server dry run)",
    ] {
        assert!(out.contains(k), "{k}: {out}");
    }
    // A dry run stores nothing.
    assert!(t.get(&["deployment", "kelp", "-n", NS]).is_none());
    assert!(t.get(&["deployment", "kelp-console", "-n", NS]).is_none());
    assert!(
        t.get(&[
            "rolebinding",
            "kelp-console-user",
            "-n",
            "kelp-vo-imagine-ai-eu"
        ])
        .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_and_uninstall() {
    let Some(helm) = common::helm() else { return };
    let server = TestApiServer::start().await.unwrap();
    let t = Tools::new(helm, Some(&server));
    t.ok(
        t.kubectl(&["create", "namespace", NS], None),
        "kubectl create namespace",
    );
    let out = t.ok(
        t.helm(&["install", "kelp", chart(), "-n", NS]),
        "helm install",
    );
    assert!(out.contains("STATUS: deployed"), "{out}");
    for (what, args) in [
        ("Deployment", vec!["deployment", "kelp", "-n", NS]),
        ("ServiceAccount", vec!["serviceaccount", "kelp", "-n", NS]),
        ("Role", vec!["role", "kelp", "-n", NS]),
        ("ClusterRole", vec!["clusterrole", "kelp"]),
        ("PodDisruptionBudget", vec!["pdb", "kelp", "-n", NS]),
        ("CRD", vec!["crd", "clusters.kelp.imagine-ai.eu"]),
        (
            "release Secret",
            vec!["secret", "sh.helm.release.v1.kelp.v1", "-n", NS],
        ),
    ] {
        assert!(t.get(&args).is_some(), "{what} not installed");
    }
    let crd = t.get(&["crd", "modules.kelp.imagine-ai.eu"]).unwrap();
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    // kelp-view is aggregated into `view`.
    let view = t.get(&["clusterrole", "view"]).unwrap();
    assert!(
        view["rules"].to_string().contains("kelp.imagine-ai.eu"),
        "{view}"
    );
    // The kelp kinds are served: a user can apply the examples right away.
    let examples = repo("examples/module-yolov8.yaml");
    t.ok(
        t.kubectl(
            &["apply", "-n", "default", "-f", examples.to_str().unwrap()],
            None,
        ),
        "kubectl apply",
    );

    let out = t.ok(
        t.helm(&[
            "upgrade",
            "kelp",
            chart(),
            "-n",
            NS,
            "--set",
            "logLevel=debug",
            "--set",
            "replicas=0",
            "--set",
            "rbac.aggregatedRoles=false",
            "--set",
            "podDisruptionBudget.enabled=false",
        ]),
        "helm upgrade",
    );
    assert!(out.contains("REVISION: 2"), "{out}");
    let d = t.get(&["deployment", "kelp", "-n", NS]).unwrap();
    assert_eq!(d["spec"]["replicas"], 0);
    assert!(
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .to_string()
            .contains("\"debug\"")
    );
    assert!(
        t.get(&["clusterrole", "kelp-view"]).is_none(),
        "kelp-view removed by the upgrade"
    );
    assert!(t.get(&["pdb", "kelp", "-n", NS]).is_none());
    let view = t.get(&["clusterrole", "view"]).unwrap();
    assert!(
        !view["rules"].to_string().contains("kelp.imagine-ai.eu"),
        "{view}"
    );

    let out = t.ok(t.helm(&["uninstall", "kelp", "-n", NS]), "helm uninstall");
    assert!(out.contains("kept due to the resource policy"), "{out}");
    for (what, args) in [
        ("Deployment", vec!["deployment", "kelp", "-n", NS]),
        ("ServiceAccount", vec!["serviceaccount", "kelp", "-n", NS]),
        ("ClusterRole", vec!["clusterrole", "kelp"]),
        ("ClusterRoleBinding", vec!["clusterrolebinding", "kelp"]),
        (
            "release Secret",
            vec!["secret", "sh.helm.release.v1.kelp.v2", "-n", NS],
        ),
    ] {
        assert!(t.get(&args).is_none(), "{what} left after uninstall");
    }
    // What stays: the CRDs, and so the users' objects.
    assert!(t.get(&["crd", "modules.kelp.imagine-ai.eu"]).is_some());
    assert!(t.get(&["kmod", "yolov8", "-n", "default"]).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_monitor_is_installed_where_prometheus_operator_is() {
    let Some(helm) = common::helm() else { return };
    let server = TestApiServer::start().await.unwrap();
    let t = Tools::new(helm, Some(&server));
    t.ok(
        t.kubectl(&["create", "namespace", NS], None),
        "kubectl create namespace",
    );
    let crd = r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"servicemonitors.monitoring.coreos.com"},
      "spec":{"group":"monitoring.coreos.com","scope":"Namespaced","names":{"kind":"ServiceMonitor","plural":"servicemonitors","singular":"servicemonitor","listKind":"ServiceMonitorList"},
      "versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}"#;
    t.ok(
        t.kubectl(&["apply", "-f", "-"], Some(crd.as_bytes())),
        "kubectl apply the ServiceMonitor CRD",
    );
    t.ok(
        t.helm(&[
            "install",
            "kelp",
            chart(),
            "-n",
            NS,
            "--set",
            "serviceMonitor.enabled=true",
        ]),
        "helm install",
    );
    let sm = t
        .get(&["servicemonitors.monitoring.coreos.com", "kelp", "-n", NS])
        .expect("ServiceMonitor installed");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-health");
}

/// The chart `helm create` writes, as a plain user would try Helm first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_helm_create_writes_installs_and_uninstalls() {
    let Some(helm) = common::helm() else { return };
    let server = TestApiServer::start().await.unwrap();
    let t = Tools::new(helm, Some(&server));
    let demo = t.dir.join("demo");
    t.ok(t.helm(&["create", demo.to_str().unwrap()]), "helm create");
    t.ok(
        t.helm(&["install", "demo", demo.to_str().unwrap()]),
        "helm install",
    );
    assert!(t.get(&["deployment", "demo", "-n", "default"]).is_some());
    t.ok(t.helm(&["uninstall", "demo"]), "helm uninstall");
    assert!(t.get(&["deployment", "demo", "-n", "default"]).is_none());
}
