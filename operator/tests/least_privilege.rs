//! `kelp run` as its own process with a ServiceAccount token bound only to the chart's
//! RBAC (rendered by real Helm), never the admin kubeconfig: the sim and EC2 scenarios go
//! to Ready and are deleted; then each of the chart's rules is removed in turn, and kelp
//! says which verb and resource it was refused, without retrying as if it were transient.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use kelp_crds::{Cluster, Deployment};
use kelp_testapi::TestApiServer;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const NS: &str = "kelp-system";

fn repo(path: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
}

/// The chart's ServiceAccount, ClusterRole, Role and bindings, as `helm template` renders them.
fn chart_rbac(helm: &PathBuf) -> Vec<Value> {
    let out = std::process::Command::new(helm)
        .args(["template", "kelp"])
        .arg(repo("helm/kelp"))
        .args([
            "--namespace",
            NS,
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/clusterrole.yaml",
            "--show-only",
            "templates/role.yaml",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kelp_crds::parse::documents(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

async fn apply(client: &Client, doc: &Value) {
    kelp_operator::dev::apply_manifest(client, "default", "test", doc)
        .await
        .unwrap();
}

/// A kubeconfig for the ServiceAccount `kelp` of the chart, from a TokenRequest.
async fn service_account_kubeconfig(server: &TestApiServer, admin: &Client) -> String {
    let req = http::Request::builder()
        .method("POST")
        .uri(format!(
            "/api/v1/namespaces/{NS}/serviceaccounts/kelp/token"
        ))
        .header("content-type", "application/json")
        .body(
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
                .to_string()
                .into_bytes(),
        )
        .unwrap();
    let out: Value = admin.request(req).await.unwrap();
    let token = out["status"]["token"].as_str().unwrap();
    kelp_testapi::kubeconfig_for(&server.url(), server.ca_pem(), token)
}

/// `kelp run` with the ServiceAccount's kubeconfig, in the chart's namespace.
async fn operator(kubeconfig: &str) -> common::process::KelpRun {
    common::process::KelpRun::start(kubeconfig, NS, &[], "info").await
}

/// The scenario's objects in namespace `ns`: a Module, storage and env sources, a sim
/// Cluster and a Deployment whose env reads a ConfigMap.
fn scenario(ns: &str) -> Vec<Value> {
    let yaml = format!(
        "{}\n---\n{}\n---\n{}\n---\n{}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{threshold: \"0.5\"}}\n",
        common::MODULE,
        common::SECRET,
        common::cluster("sim-gpu", 1, 1),
        common::deployment("detector", "sim-gpu", 1).replace(
            "  expose:",
            "  env:\n    - {name: THRESHOLD, valueFrom: {configMapKeyRef: {name: settings, key: threshold}}}\n  expose:"
        ),
    );
    kelp_crds::parse::documents(&yaml)
        .unwrap()
        .into_iter()
        .map(|mut d| {
            d["metadata"]["namespace"] = json!(ns);
            d
        })
        .collect()
}

async fn admin_setup() -> (TestApiServer, Client) {
    let server = TestApiServer::start().await.unwrap();
    let admin = kelp_operator::targets::client_from_kubeconfig(&server.kubeconfig())
        .await
        .unwrap();
    kelp_operator::dev::install_crds(&admin).await.unwrap();
    apply(
        &admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .await;
    (server, admin)
}

async fn namespace(admin: &Client, ns: &str) {
    apply(
        admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await;
}

fn ready(status_conditions: Option<&[kelp_crds::Condition]>) -> bool {
    status_conditions.is_some_and(|c| kelp_operator::conditions::is_true(c, "Ready"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kelp_runs_with_only_the_charts_rbac() {
    let Some(helm) = common::helm() else { return };
    let (server, admin) = admin_setup().await;
    for doc in chart_rbac(&helm) {
        apply(&admin, &doc).await;
    }
    let kubeconfig = service_account_kubeconfig(&server, &admin).await;
    let op = operator(&kubeconfig).await;

    namespace(&admin, "team-a").await;
    for doc in scenario("team-a") {
        apply(&admin, &doc).await;
    }
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), "team-a");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "team-a");
    common::eventually(90, || async {
        let c = clusters.get("sim-gpu").await.unwrap();
        let d = deployments.get("detector").await.unwrap();
        ready(c.status.as_ref().map(|s| s.conditions.as_slice()))
            && ready(d.status.as_ref().map(|s| s.conditions.as_slice()))
    })
    .await;
    let d = deployments.get("detector").await.unwrap();
    assert!(
        ready(d.status.as_ref().map(|s| s.conditions.as_slice())),
        "not Ready with the chart's RBAC: {:#?}\noperator log:\n{}",
        d.status,
        op.log()
    );
    // Events reached the API (events.k8s.io create/patch).
    let events: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        "team-a",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
            "events",
        ),
    );
    assert!(
        !events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    deployments
        .delete("detector", &DeleteParams::default())
        .await
        .unwrap();
    clusters
        .delete("sim-gpu", &DeleteParams::default())
        .await
        .unwrap();
    common::eventually(60, || async {
        clusters.get_opt("sim-gpu").await.unwrap().is_none()
            && deployments.get_opt("detector").await.unwrap().is_none()
    })
    .await;
    assert!(
        clusters.get_opt("sim-gpu").await.unwrap().is_none(),
        "{}",
        op.log()
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), "team-a");
    assert!(secrets.get_opt("sim-gpu-kelp-pki").await.unwrap().is_none());
    let log = op.kill().await;
    assert!(!log.contains("refused"), "nothing was refused:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ec2_cluster_runs_with_only_the_charts_rbac() {
    let Some(helm) = common::helm() else { return };
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    let endpoint = moto.endpoint();
    let (server, admin) = admin_setup().await;
    for doc in chart_rbac(&helm) {
        apply(&admin, &doc).await;
    }
    let kubeconfig = service_account_kubeconfig(&server, &admin).await;
    let op = operator(&kubeconfig).await;
    // The machines' kubelets: a Node per running instance.
    let kubelets = common::kubelets::register(admin.clone(), &endpoint);
    namespace(&admin, "team-b").await;
    let docs = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: aws, namespace: team-b}}\nstringData: {{accessKeyId: testing, secretAccessKey: testing}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: self-kubeconfig, namespace: team-b}}\nstringData:\n  value: {}\n---\n\
         apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Cluster\nmetadata: {{name: gpu, namespace: team-b}}\nspec:\n  cloud:\n    ec2: {{region: us-east-1, endpointUrl: \"{endpoint}\", credentialsSecretRef: {{name: aws}}}}\n  kubernetes: {{mode: Existing, kubeconfigSecretRef: {{name: self-kubeconfig}}}}\n  nodePools:\n    - {{name: t4, replicas: 2, machine: {{cpu: 4, gpu: {{count: 1, vendor: NVIDIA, model: T4}}}}}}\n",
        serde_json::to_string(&server.kubeconfig()).unwrap()
    );
    for doc in kelp_crds::parse::documents(&docs).unwrap() {
        apply(&admin, &doc).await;
    }
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), "team-b");
    common::eventually(90, || async {
        common::is_ready_cluster(&clusters.get("gpu").await.unwrap())
    })
    .await;
    let c = clusters.get("gpu").await.unwrap();
    assert!(
        common::is_ready_cluster(&c),
        "{:#?}\n{}",
        c.status,
        op.log()
    );
    let uid = c.uid().unwrap();
    let driver = common::kubelets::driver(&endpoint);
    let owned = |uid: String| {
        let driver = &driver;
        async move {
            let tags = [(kelp_cloud_drivers::tags::CLUSTER_UID.to_string(), uid)].into();
            kelp_cloud_drivers::CloudDriver::list(driver, &tags)
                .await
                .unwrap()
                .into_iter()
                .filter(|m| m.state != kelp_cloud_drivers::MachineState::Terminating)
                .count()
        }
    };
    assert_eq!(owned(uid.clone()).await, 2);
    clusters
        .delete("gpu", &DeleteParams::default())
        .await
        .unwrap();
    common::eventually(90, || async {
        clusters.get_opt("gpu").await.unwrap().is_none()
    })
    .await;
    assert!(
        clusters.get_opt("gpu").await.unwrap().is_none(),
        "{}",
        op.log()
    );
    assert_eq!(owned(uid).await, 0, "every instance terminated");
    kubelets.abort();
    let log = op.kill().await;
    assert!(!log.contains("refused"), "nothing was refused:\n{log}");
}

/// One rule at a time is taken out of the chart's ClusterRole or Role: kelp then logs that
/// the API refused it, naming one of the rule's verbs and resources, and does not retry
/// that request as if it were transient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_of_the_chart_is_needed_and_its_absence_is_named() {
    let Some(helm) = common::helm() else { return };
    let (server, admin) = admin_setup().await;
    let rbac = chart_rbac(&helm);
    for doc in &rbac {
        apply(&admin, doc).await;
    }
    let kubeconfig = service_account_kubeconfig(&server, &admin).await;
    let mut checked = 0;
    for (doc_index, doc) in rbac.iter().enumerate() {
        let kind = doc["kind"].as_str().unwrap();
        if kind != "ClusterRole" && kind != "Role" {
            continue;
        }
        let rules = doc["rules"].as_array().unwrap().clone();
        for (i, rule) in rules.iter().enumerate() {
            let resources: Vec<String> = rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect();
            let verbs: Vec<String> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            let mut without = doc.clone();
            without["rules"].as_array_mut().unwrap().remove(i);
            apply(&admin, &without).await;

            let ns = format!("rule-{doc_index}-{i}");
            namespace(&admin, &ns).await;
            // Each run starts with no Lease: the previous one's would hold off this one
            // until it expired, and the create rule is needed only when there is none.
            let _ = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin.clone(), NS)
                .delete("kelp-operator", &DeleteParams::default())
                .await;
            let op = operator(&kubeconfig).await;
            for obj in scenario(&ns) {
                apply(&admin, &obj).await;
            }
            let named = |log: &str| {
                verbs.iter().any(|v| {
                    resources.iter().any(|r| {
                        log.contains(&format!("cannot {v} resource \\\"{r}\\\""))
                            || log.contains(&format!("cannot {v} resource \"{r}\""))
                    })
                })
            };
            // Secrets are deleted only when a Cluster goes: delete it once it has some.
            let clusters: Api<Cluster> = Api::namespaced(admin.clone(), &ns);
            let mut deleted = false;
            for _ in 0..600 {
                if named(&op.log()) {
                    break;
                }
                if !deleted
                    && resources.iter().any(|r| r == "secrets")
                    && verbs.iter().any(|v| v == "delete")
                {
                    let c = clusters.get("sim-gpu").await.unwrap();
                    if ready(c.status.as_ref().map(|s| s.conditions.as_slice())) {
                        clusters
                            .delete("sim-gpu", &DeleteParams::default())
                            .await
                            .unwrap();
                        deleted = true;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let log = op.log();
            if let Some(line) = log.lines().find(|l| named(l)) {
                eprintln!("without {kind} rule {rule}:\n  {line}");
            }
            assert!(
                named(&log),
                "without the rule {rule} of {kind} kelp never said which of {verbs:?} on {resources:?} was refused:\n{log}"
            );
            // A refused reconcile waits for the resync, not a transient backoff: a few
            // seconds on, the same refusal has not been retried over and over.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let refusals = op
                .log()
                .lines()
                .filter(|l| l.contains("refused kelp:") && l.contains("object="))
                .fold(
                    std::collections::BTreeMap::<String, usize>::new(),
                    |mut m, l| {
                        let object = l
                            .split("object=")
                            .nth(1)
                            .unwrap_or_default()
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        *m.entry(object).or_default() += 1;
                        m
                    },
                );
            for (object, n) in &refusals {
                assert!(
                    *n <= 2,
                    "{object} was retried {n} times after a refusal:\n{}",
                    op.log()
                );
            }
            op.kill().await;
            apply(&admin, doc).await;
            checked += 1;
        }
    }
    assert!(checked >= 6, "checked {checked} rules");
}
