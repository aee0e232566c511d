//! Cases a new user meets, each of which kelp once got wrong: names too long to work,
//! Deployments of a deleted Cluster, pools nothing fits, endpoints, Events that tell the
//! current text, startup without warnings, unknown recipes, objects kelp does not own,
//! kubeconfig Secrets that are broken, shared or rewritten.

mod common;

use std::collections::BTreeMap;

use common::*;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kelp_crds::{Cluster, Deployment};
use kelp_operator::conditions;
use kelp_testapi::TestApiServer;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

/// The condition `type` of a Cluster or Deployment status.
fn condition<'a>(
    conditions: &'a [kelp_crds::Condition],
    type_: &str,
) -> Option<&'a kelp_crds::Condition> {
    conditions::get(conditions, type_)
}

fn cluster_condition(c: Option<&Cluster>, type_: &str) -> Option<kelp_crds::Condition> {
    c.and_then(|c| c.status.as_ref())
        .and_then(|s| condition(&s.conditions, type_).cloned())
}

fn deployment_condition(d: Option<&Deployment>, type_: &str) -> Option<kelp_crds::Condition> {
    d.and_then(|d| d.status.as_ref())
        .and_then(|s| condition(&s.conditions, type_).cloned())
}

/// Server-side applies one manifest as the test user; the API server's refusal, if any.
async fn try_apply(h: &Harness, yaml: &str) -> Result<(), Box<kube::core::Status>> {
    let doc = kelp_crds::parse::documents(yaml).unwrap().remove(0);
    match kelp_operator::dev::apply_manifest(&h.client, "default", "test", &doc).await {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(s)) => Err(s),
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_cannot_work_are_refused_at_apply_and_63_characters_work() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;

    // 64 characters: the CRD refuses the Deployment; nothing is stored, nothing runs.
    let long = format!("d{}", "x".repeat(63));
    let err = try_apply(&h, &deployment(&long, "c", 1)).await.unwrap_err();
    assert_eq!(err.code, 422, "{err:?}");
    assert!(
        err.message
            .contains("a Deployment name must be no more than 63 characters"),
        "{}",
        err.message
    );
    let err = try_apply(&h, &cluster(&"c".repeat(70), 1, 0))
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("a Cluster name must be no more than 63 characters"),
        "{}",
        err.message
    );
    let err = try_apply(&h, &deployment("web.v2", "c", 0))
        .await
        .unwrap_err();
    assert!(err.message.contains("DNS label"), "{}", err.message);
    assert!(
        h.api::<Deployment>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        h.api::<Cluster>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // 300 characters: the length is what is wrong, and the server says so.
    let err = try_apply(&h, &deployment(&"y".repeat(300), "c", 1))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("must be no more than 253 characters")
            && !err.message.contains("RFC 1123"),
        "{}",
        err.message
    );

    // 63 characters is enough for everything the names become.
    let cname = format!("c{}", "7".repeat(62));
    let dname = format!("d{}", "7".repeat(62));
    h.apply_yaml(&cluster(&cname, 1, 1)).await;
    h.apply_yaml(&deployment(&dname, &cname, 1)).await;
    h.cluster_ready(&cname).await;
    let d = h.deployment_ready(&dname).await;
    assert_eq!(d.status.unwrap().ready.as_deref(), Some("1/1"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_of_a_deleted_cluster_turn_not_ready_and_say_why() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.apply_yaml(&cluster("going", 1, 1)).await;
    h.apply_yaml(&deployment("fish", "going", 1)).await;
    let d = h.deployment_ready("fish").await;
    assert!(d.status.unwrap().endpoint.is_some());

    h.delete::<Cluster>("going").await;
    h.wait::<Cluster>("going", "gone", |c| c.is_none()).await;
    let d = h
        .wait::<Deployment>("fish", "ClusterNotFound", |d| {
            deployment_condition(d, "Ready").is_some_and(|c| c.reason == "ClusterNotFound")
        })
        .await
        .unwrap();
    let st = d.status.unwrap();
    let ready = condition(&st.conditions, "Ready").unwrap();
    assert!(
        ready.message.contains("Cluster default/going not found"),
        "{}",
        ready.message
    );
    let available = condition(&st.conditions, "Available").unwrap();
    assert_eq!(available.status, kelp_crds::ConditionStatus::False);
    assert_eq!(st.ready.as_deref(), Some("0/1"));
    assert_eq!(st.ready_replicas, 0);
    assert_eq!(st.endpoint, None);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_created_while_a_pool_is_unfit() {
    let mut h = Harness::new().await;
    h.start();
    let unfit = cluster("wishful", 1, 1).replace(
        "gpu: {count: 1, vendor: NVIDIA, model: T4}",
        "gpu: {count: 16, vendor: NVIDIA, model: A100}",
    );
    h.apply_yaml(&unfit).await;
    let c = h
        .wait::<Cluster>("wishful", "Stalled", |c| {
            cluster_condition(c, "Stalled")
                .is_some_and(|s| s.status == kelp_crds::ConditionStatus::True)
        })
        .await
        .unwrap();
    let stalled = cluster_condition(Some(&c), "Stalled").unwrap();
    assert_eq!(stalled.reason, "NoInstanceType");
    assert!(
        stalled.message.contains("pool gpu-t4"),
        "{}",
        stalled.message
    );
    // A few more reconciles: still nothing in the cloud and no Secret.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let uid = c.uid().unwrap();
    if let Some(sim) = h.env.sims.get(&uid) {
        assert!(sim.machines().is_empty(), "{:?}", sim.machines());
    }
    let secrets = Api::<Secret>::namespaced(h.client.clone(), "default");
    for s in ["wishful-kelp-pki", "wishful-kubeconfig"] {
        assert!(secrets.get_opt(s).await.unwrap().is_none(), "{s} created");
    }
    assert_eq!(
        events(&h, "wishful")
            .await
            .iter()
            .filter(|e| e.1 == "NoInstanceType")
            .count(),
        1,
        "one Event when the Cluster became stuck"
    );

    // Fixing the pool lets everything start.
    h.apply_yaml(&cluster("wishful", 1, 1)).await;
    h.cluster_ready("wishful").await;
    assert!(secrets.get_opt("wishful-kelp-pki").await.unwrap().is_some());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_without_expose_shows_its_in_cluster_url() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.apply_yaml(&cluster("inside", 1, 1)).await;
    h.apply_yaml(
        &deployment("quiet", "inside", 1).replace("  expose: {path: /, public: true}\n", ""),
    )
    .await;
    let d = h.deployment_ready("quiet").await;
    let url = "http://quiet.default.svc.cluster.local:5000/";
    assert_eq!(d.status.unwrap().endpoint.as_deref(), Some(url));
    // The Event is written after the status: give it a moment.
    let mut ready = Vec::new();
    for _ in 0..100 {
        ready = events(&h, "quiet")
            .await
            .into_iter()
            .filter(|e| e.1 == "Ready")
            .collect();
        if !ready.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        ready.iter().any(|e| e.2.contains(url)),
        "the Ready Event names the URL: {ready:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_what_happened_each_time() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(&cluster("grows", 0, 2)).await;
    h.cluster_ready("grows").await;
    h.patch_spec::<Cluster>(
        "grows",
        serde_json::json!({"nodePools": [
            {"name": "cpu", "replicas": 0, "machine": {"cpu": 4, "memoryMB": 8000}},
            {"name": "gpu-t4", "replicas": 3, "machine": {"cpu": 8, "memoryMB": 32000, "gpu": {"count": 1, "vendor": "NVIDIA", "model": "T4"}},
             "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}
        ]}),
    )
    .await;
    h.cluster_ready_with("grows", "3/3").await;
    // Events are written after the status; give the last one a moment.
    let mut notes = Vec::new();
    for _ in 0..100 {
        notes = events(&h, "grows").await;
        if notes.iter().any(|e| e.1 == "Ready" && e.2.contains("3/3")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let created: Vec<&str> = notes
        .iter()
        .filter(|e| e.1 == "MachinesCreated")
        .map(|e| e.2.as_str())
        .collect();
    assert!(
        created
            .iter()
            .any(|n| n.contains("pool gpu-t4: created 2 "))
            && created
                .iter()
                .any(|n| n.contains("pool gpu-t4: created 1 ")),
        "each batch has its own text: {notes:#?}"
    );
    let ready: Vec<&str> = notes
        .iter()
        .filter(|e| e.1 == "Ready")
        .map(|e| e.2.as_str())
        .collect();
    assert!(
        ready.iter().any(|n| n.contains("2/2")) && ready.iter().any(|n| n.contains("3/3")),
        "{notes:#?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_start_warns_about_nothing() {
    let mut h = Harness::new().await;
    h.start();
    // Everything at once, Deployment first, as `kubectl apply -f dir/` may order it.
    h.apply_yaml(&deployment("fish", "all-at-once", 1)).await;
    h.apply_yaml(&cluster("all-at-once", 1, 1)).await;
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.deployment_ready("fish").await;
    h.cluster_ready("all-at-once").await;
    let warnings: Vec<_> = Api::<Event>::namespaced(h.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| (e.reason, e.note))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_recipe_lists_the_known_ones() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.apply_yaml(&cluster("r", 1, 1)).await;
    h.apply_yaml(&format!(
        "{}  recipe: deepaas\n",
        deployment("typo", "r", 1)
    ))
    .await;
    let d = h
        .wait::<Deployment>("typo", "Stalled", |d| {
            deployment_condition(d, "Stalled")
                .is_some_and(|c| c.status == kelp_crds::ConditionStatus::True)
        })
        .await
        .unwrap();
    let msg = deployment_condition(Some(&d), "Stalled").unwrap().message;
    assert!(
        msg.contains("spec.recipe")
            && msg.contains("unknown recipe \"deepaas\"")
            && msg.contains("known workload recipes: deepaas-inference"),
        "{msg}"
    );
    h.stop().await;
}

/// A Secret holding kubeconfigs under the given keys.
fn kubeconfig_secret(name: &str, data: &[(&str, String)]) -> String {
    let data: BTreeMap<&str, &String> = data.iter().map(|(k, v)| (*k, v)).collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {}\n",
        serde_json::to_string(&data).unwrap()
    )
}

/// An Existing-mode sim Cluster reading `secret`/`key`.
fn existing(name: &str, secret: &str, key: &str) -> String {
    cluster(name, 1, 0).replace(
        "  cloud:",
        &format!(
            "  kubernetes: {{mode: Existing, kubeconfigSecretRef: {{name: {secret}, key: {key}}}}}\n  cloud:"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_kelp_did_not_create_are_refused_and_never_deleted() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(&kubeconfig_secret(
        "self-kubeconfig",
        &[("value", h.server.kubeconfig())],
    ))
    .await;
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    // The user's own Secret, named as kelp would name the Deployment's env Secret.
    h.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: web-env, labels: {team: mine}}\nstringData: {notes: keep me}\n",
    )
    .await;
    h.apply_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n",
    )
    .await;
    h.apply_yaml(&existing("here", "self-kubeconfig", "value"))
        .await;
    h.apply_yaml(&format!(
        "{}  env: [{{name: MODE, valueFrom: {{configMapKeyRef: {{name: settings, key: mode}}}}}}]\n",
        deployment("web", "here", 0)
    ))
    .await;
    let d = h
        .wait::<Deployment>("web", "ObjectNotOwned", |d| {
            deployment_condition(d, "Stalled").is_some_and(|c| c.reason == "ObjectNotOwned")
        })
        .await
        .unwrap();
    let msg = deployment_condition(Some(&d), "Stalled").unwrap().message;
    assert!(msg.contains("Secret default/web-env"), "{msg}");
    let secrets = Api::<Secret>::namespaced(h.client.clone(), "default");
    let theirs = secrets.get("web-env").await.unwrap();
    assert_eq!(
        theirs.labels().get("team").map(String::as_str),
        Some("mine")
    );
    assert!(
        !theirs
            .labels()
            .contains_key("kelp.imagine-ai.eu/deployment")
    );
    let data = kelp_operator::targets::secret_data(&theirs);
    assert_eq!(data.keys().collect::<Vec<_>>(), ["notes"]);
    // Nothing else of the workload was created either.
    let apps =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(h.client.clone(), "default");
    assert!(apps.get_opt("web").await.unwrap().is_none());

    // Deleting the kelp Deployment leaves the user's Secret alone.
    h.delete::<Deployment>("web").await;
    h.wait::<Deployment>("web", "gone", |d| d.is_none()).await;
    let theirs = secrets.get("web-env").await.unwrap();
    assert_eq!(
        kelp_operator::targets::secret_data(&theirs)["notes"],
        "keep me"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_reading_one_secret_with_different_keys_use_their_own_servers() {
    let mut h = Harness::new().await;
    let a = TestApiServer::start().await.unwrap();
    let b = TestApiServer::start().await.unwrap();
    h.start();
    h.apply_yaml(&kubeconfig_secret(
        "shared",
        &[("a", a.kubeconfig()), ("b", b.kubeconfig())],
    ))
    .await;
    h.apply_yaml(&existing("on-a", "shared", "a")).await;
    h.apply_yaml(&existing("on-b", "shared", "b")).await;
    let ca = h.cluster_ready("on-a").await;
    let cb = h.cluster_ready("on-b").await;
    assert_eq!(ca.status.clone().unwrap().api_endpoint, Some(a.url()));
    assert_eq!(cb.status.clone().unwrap().api_endpoint, Some(b.url()));
    for (server, own, other) in [(&a, &ca, &cb), (&b, &cb, &ca)] {
        let client = kelp_operator::targets::client_from_kubeconfig(&server.kubeconfig())
            .await
            .unwrap();
        let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        let owners: Vec<String> = nodes
            .iter()
            .filter_map(|n| {
                n.labels()
                    .get(kelp_operator::sim_kube::NODE_CLUSTER_LABEL)
                    .cloned()
            })
            .collect();
        assert_eq!(owners, [own.uid().unwrap()], "{}", server.url());
        assert!(!owners.contains(&other.uid().unwrap()));
    }
    h.stop().await;
}

/// Whether `server` holds the apps/v1 Deployment `name` in the default namespace.
async fn workload_on(server: &TestApiServer, name: &str) -> bool {
    let client = kelp_operator::targets::client_from_kubeconfig(&server.kubeconfig())
        .await
        .unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client, "default")
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_kubeconfig_secret_moves_the_workload_to_the_new_server() {
    // kelp keeps one client per kubeconfig Secret and reads the Secret again only when
    // the Secret watch shows a new version: a rewrite must reach the Deployments.
    let mut h = Harness::new().await;
    let a = TestApiServer::start().await.unwrap();
    let b = TestApiServer::start().await.unwrap();
    h.start();
    h.apply_yaml(&kubeconfig_secret("moving", &[("value", a.kubeconfig())]))
        .await;
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.apply_yaml(&existing("mover", "moving", "value")).await;
    h.apply_yaml(&deployment("web", "mover", 0)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !workload_on(&a, "web").await {
        assert!(std::time::Instant::now() < deadline, "never applied to a");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    h.apply_yaml(&kubeconfig_secret("moving", &[("value", b.kubeconfig())]))
        .await;
    while !workload_on(&b, "web").await {
        assert!(std::time::Instant::now() < deadline, "never applied to b");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let c = h
        .wait::<Cluster>("mover", "the new endpoint", |c| {
            c.and_then(|c| c.status.as_ref())
                .is_some_and(|s| s.api_endpoint.as_deref() == Some(b.url().as_str()))
        })
        .await;
    assert!(c.is_some());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_kubeconfig_secret_is_named_never_quoted_and_stalls() {
    let mut h = Harness::new().await;
    h.start();
    // A YAML error on line 3, in a text that holds a token.
    let broken = "apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: s3cr3t-t0ken}\nclusters: []\n";
    h.apply_yaml(&kubeconfig_secret("broken", &[("value", broken.into())]))
        .await;
    h.apply_yaml(&existing("bad", "broken", "value")).await;
    let c = h
        .wait::<Cluster>("bad", "Stalled", |c| {
            cluster_condition(c, "Stalled").is_some_and(|s| s.reason == "InvalidKubeconfig")
        })
        .await
        .unwrap();
    let st = c.status.clone().unwrap();
    let cp = condition(&st.conditions, "ControlPlaneReady").unwrap();
    assert!(
        cp.message.contains("default/broken")
            && cp.message.contains("\"value\"")
            && cp.message.contains("line"),
        "{}",
        cp.message
    );
    let all = serde_json::to_string(&st).unwrap();
    assert!(
        !all.contains("s3cr3t"),
        "the status quotes the Secret: {all}"
    );
    for e in events(&h, "bad").await {
        assert!(!e.2.contains("s3cr3t"), "an Event quotes the Secret: {e:?}");
    }

    // A Secret without the named key: a condition naming the Secret and the key.
    h.apply_yaml(&kubeconfig_secret(
        "keyless",
        &[("config", h.server.kubeconfig())],
    ))
    .await;
    h.apply_yaml(&existing("nokey", "keyless", "value")).await;
    let c = h
        .wait::<Cluster>("nokey", "ControlPlaneReady False", |c| {
            cluster_condition(c, "ControlPlaneReady")
                .is_some_and(|s| s.status == kelp_crds::ConditionStatus::False)
        })
        .await
        .unwrap();
    let cp = cluster_condition(Some(&c), "ControlPlaneReady").unwrap();
    assert!(
        cp.message.contains("default/keyless") && cp.message.contains("no key \"value\""),
        "{}",
        cp.message
    );
    let stalled = cluster_condition(Some(&c), "Stalled").unwrap();
    assert_eq!(stalled.reason, "InvalidKubeconfig");

    // Fixing the Secret lets the Cluster go on.
    Api::<Secret>::namespaced(h.client.clone(), "default")
        .patch(
            "keyless",
            &PatchParams::apply("test").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keyless"},
                "stringData": {"config": h.server.kubeconfig(), "value": h.server.kubeconfig()}
            })),
        )
        .await
        .unwrap();
    h.cluster_ready("nokey").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_cloud_never_answered_deletes_without_it() {
    let mut h = Harness::new().await;
    h.start();
    // Every call fails, transiently: the cloud never answers.
    h.apply_yaml(&cluster("dark", 1, 0).replace(
        "{sim: {latencyMs: 1}}",
        "{sim: {latencyMs: 1, failureRate: 1.0}}",
    ))
    .await;
    h.wait::<Cluster>("dark", "CloudReachable False", |c| {
        cluster_condition(c, "CloudReachable")
            .is_some_and(|s| s.status == kelp_crds::ConditionStatus::False)
    })
    .await;
    h.delete::<Cluster>("dark").await;
    h.wait::<Cluster>("dark", "deleted", |c| c.is_none()).await;
    let notes = events(&h, "dark").await;
    assert!(
        notes
            .iter()
            .any(|e| e.1 == "DeletedWithoutCloud" && e.2.contains("never created a machine")),
        "{notes:#?}"
    );
    h.stop().await;
}

/// A build without the `dev` feature has no simulator: a sim Cluster says so and starts
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_without_the_simulator_stalls_sim_clusters() {
    let mut h = Harness::new().await;
    h.env.sim_kube = None;
    h.start();
    h.apply_yaml(&cluster("nosim", 1, 0)).await;
    let c = h
        .wait::<Cluster>("nosim", "Stalled", |c| {
            cluster_condition(c, "Stalled").is_some_and(|s| s.reason == "NoSimulator")
        })
        .await
        .unwrap();
    let msg = cluster_condition(Some(&c), "Stalled").unwrap().message;
    assert!(
        msg.contains("spec.cloud.sim") && msg.contains("`dev` feature"),
        "{msg}"
    );
    assert!(
        h.env.sims.get(&c.uid().unwrap()).is_none(),
        "no sim cloud was used"
    );
    h.stop().await;
}
