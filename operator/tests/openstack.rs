//! Clusters on OpenStack and EGI FedCloud, against the OpenStack peer (real Keystone,
//! Nova with the fake virt driver, Placement; Glance and Neutron stand-ins) started by
//! `tests/peers/openstack/peer.sh start`. The Clusters use `kubernetes: Existing` (the
//! test API server): kelp never connects to the machines' addresses. Their kubelets are
//! played by a task registering a Node per ACTIVE server.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use kelp_cloud_drivers::CloudDriver;
use kelp_cloud_drivers::egi::{self, CheckinCredentials, EgiSettings, SiteCatalog};
use kelp_cloud_drivers::openstack::{OpenStackAuth, OpenStackDriver, OpenStackSettings};
use kelp_crds::Cluster;
use kelp_test_peers::openstack::{Checkin, OsPeer};
use kelp_test_peers::proxy::{Fault, Proxy};

fn os_driver(peer: &OsPeer) -> OpenStackDriver {
    OpenStackDriver::new(OpenStackSettings::new(
        peer.auth_url(),
        OpenStackAuth::ApplicationCredential {
            id: peer.var("OS_APP_CRED_ID"),
            secret: peer.var("OS_APP_CRED_SECRET"),
        },
    ))
    .unwrap()
}

async fn secrets(h: &Harness, peer: &OsPeer) {
    h.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: os-creds}}\nstringData: {{applicationCredentialId: {}, applicationCredentialSecret: {}}}\n",
        peer.var("OS_APP_CRED_ID"),
        peer.var("OS_APP_CRED_SECRET")
    ))
    .await;
    h.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: self-kubeconfig}}\nstringData:\n  value: {}\n",
        serde_json::to_string(&h.server.kubeconfig()).unwrap()
    ))
    .await;
}

/// Flavor prices in the operator's namespace.
async fn prices(h: &Harness, prices: &[(&str, &str)]) {
    let data: BTreeMap<&str, &str> = prices.iter().copied().collect();
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kelp-openstack-prices", "namespace": "kelp-system"}, "data": data});
    kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(h.client.clone(), "kelp-system")
        .patch(
            "kelp-openstack-prices",
            &kube::api::PatchParams::apply("test").force(),
            &kube::api::Patch::Apply(&cm),
        )
        .await
        .unwrap();
}

fn os_cluster(name: &str, peer: &OsPeer, gpu: u32, cpu: u32) -> String {
    format!(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  cloud:
    openstack: {{authUrl: "{}", credentialsSecretRef: {{name: os-creds}}, network: private}}
  kubernetes: {{mode: Existing, kubeconfigSecretRef: {{name: self-kubeconfig}}}}
  nodePools:
    - {{name: gpu, replicas: {gpu}, machine: {{cpu: 4, gpu: {{count: 1, vendor: NVIDIA, model: T4}}}}}}
    - {{name: cpu, replicas: {cpu}, machine: {{cpu: 2, memoryMB: 4000}}}}
"#,
        peer.auth_url()
    )
}

/// The Cluster's servers in the peer.
async fn servers_of(peer: &OsPeer, project: &str, uid: &str) -> Vec<serde_json::Value> {
    peer.servers(project)
        .await
        .into_iter()
        .filter(|s| s["metadata"]["kelp.imagine-ai.eu:cluster-uid"] == uid)
        .collect()
}

async fn condition(h: &Harness, name: &str, kind: &str, status: &str) -> String {
    let c = h
        .wait::<Cluster>(name, kind, |c| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| kelp_operator::conditions::get(&s.conditions, kind))
                .is_some_and(|c| format!("{:?}", c.status) == status)
        })
        .await
        .unwrap();
    kelp_operator::conditions::get(&c.status.unwrap().conditions, kind)
        .unwrap()
        .message
        .clone()
}

async fn nothing_left(peer: &OsPeer, project: &str) {
    let left = peer.servers_left(project).await;
    assert!(left.is_empty(), "servers left: {left:?}");
    assert!(
        peer.neutron("ports", project).await.is_empty(),
        "ports left"
    );
    assert!(
        peer.neutron("floatingips", project).await.is_empty(),
        "floating IPs left"
    );
    assert!(
        peer.extra_groups(project).await.is_empty(),
        "security groups left"
    );
}

/// Deletes the Clusters, checks the peer holds nothing of them, stops the operator.
async fn finish(
    mut h: Harness,
    peer: &OsPeer,
    project: &str,
    clusters: &[&str],
    kubelets: tokio::task::JoinHandle<()>,
) {
    for c in clusters {
        h.delete::<Cluster>(c).await;
    }
    for c in clusters {
        h.wait::<Cluster>(c, "gone", |c| c.is_none()).await;
    }
    nothing_left(peer, project).await;
    kubelets.abort();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openstack_cluster_with_a_gpu_pool_becomes_ready_scales_and_leaves_nothing() {
    let Some((peer, _lock, project)) = OsPeer::claim("OS_PROJECT_ID").await else {
        return;
    };
    let mut h = Harness::new().await;
    secrets(&h, &peer).await;
    prices(&h, &[("gpu.t4", "0.50"), ("gpu.huge-t4", "0.90")]).await;
    let kubelets = kubelets::register_with(h.client.clone(), os_driver(&peer));
    h.start();
    h.apply_yaml(&os_cluster("os", &peer, 2, 1)).await;
    let c = h.cluster_ready("os").await;
    let uid = kube::ResourceExt::uid(&c).unwrap();
    let st = c.status.unwrap();
    assert_eq!(st.cloud.as_deref(), Some("openstack"));
    assert_eq!(st.ready.as_deref(), Some("3/3"));
    let pool = |n: &str| st.node_pools.iter().find(|p| p.name == n).unwrap().clone();
    assert_eq!(pool("gpu").instance_type.as_deref(), Some("gpu.t4"));
    assert_eq!(pool("gpu").price_per_hour, Some(0.5));
    assert_eq!(pool("cpu").instance_type.as_deref(), Some("m1.small"));
    assert!(pool("gpu").machines.iter().all(|m| {
        m.provider_id
            .as_deref()
            .is_some_and(|p| p.starts_with("openstack:///"))
    }));
    let servers = servers_of(&peer, &project, &uid).await;
    assert_eq!(servers.len(), 3);
    for s in &servers {
        assert_eq!(s["metadata"]["kelp.imagine-ai.eu:cluster"], "default/os");
        assert_eq!(s["metadata"]["kelp.imagine-ai.eu:managed-by"], "kelp");
        // The rendered node recipes are the user-data.
        use base64::Engine as _;
        let ud = base64::engine::general_purpose::STANDARD
            .decode(s["OS-EXT-SRV-ATTR:user_data"].as_str().unwrap())
            .unwrap();
        let ud = String::from_utf8(ud).unwrap();
        assert!(ud.starts_with("#cloud-config"), "{ud}");
        assert!(
            ud.contains("k3s"),
            "the k3s agent recipe is in the user-data"
        );
    }
    assert_eq!(
        peer.extra_groups(&project).await.len(),
        1,
        "one security group per Cluster"
    );

    // Scale: gpu 2 -> 3, cpu 1 -> 0.
    h.patch_spec::<Cluster>("os", serde_json::json!({"nodePools": [
        {"name": "gpu", "replicas": 3, "machine": {"cpu": 4, "gpu": {"count": 1, "vendor": "NVIDIA", "model": "T4"}}},
        {"name": "cpu", "replicas": 0, "machine": {"cpu": 2, "memoryMB": 4000}}]}))
        .await;
    h.wait::<Cluster>("os", "3/3 after scaling", |c| {
        c.is_some_and(|c| {
            is_ready_cluster(c)
                && c.status.as_ref().and_then(|s| s.ready.as_deref()) == Some("3/3")
                && c.status
                    .as_ref()
                    .unwrap()
                    .node_pools
                    .iter()
                    .all(|p| p.machines.len() as i32 == p.desired)
        })
    })
    .await;
    for _ in 0..120 {
        if servers_of(&peer, &project, &uid).await.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let flavors: Vec<String> = servers_of(&peer, &project, &uid)
        .await
        .iter()
        .map(|s| s["flavor"]["original_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(flavors, ["gpu.t4"; 3]);

    // Delete: servers, their ports and the security group go; then the finalizer.
    finish(h, &peer, &project, &["os"], kubelets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_the_create_request_never_doubles_servers() {
    let Some((peer, _lock, project)) = OsPeer::claim("OS_PROJECT_ID").await else {
        return;
    };
    let proxy = Proxy::start(peer.nova_port()).await;
    // Nova acts on the create, but the operator never sees the answer.
    proxy.fail(
        "POST /v2.1/servers",
        Fault::ForwardThenStall(Duration::from_secs(60)),
    );
    let mut h = Harness::new().await;
    h.env.config.openstack_endpoints =
        [("compute".to_string(), format!("{}/v2.1", proxy.endpoint()))].into();
    secrets(&h, &peer).await;
    prices(&h, &[("gpu.t4", "0.50"), ("gpu.huge-t4", "0.90")]).await;
    let kubelets = kubelets::register_with(h.client.clone(), os_driver(&peer));
    h.apply_yaml(&os_cluster("crash", &peer, 3, 0)).await;
    h.start();
    let uid = loop {
        if proxy.count("POST /v2.1/servers") == 1 {
            let c = h.api::<Cluster>().get("crash").await.unwrap();
            break kube::ResourceExt::uid(&c).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for _ in 0..200 {
        if servers_of(&peer, &project, &uid).await.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        servers_of(&peer, &project, &uid).await.len(),
        3,
        "Nova started the batch"
    );
    h.crash().await;

    // A new operator finds the batch by its tags and adopts it.
    h.start();
    let c = h.cluster_ready("crash").await;
    assert_eq!(c.status.unwrap().ready.as_deref(), Some("3/3"));
    assert_eq!(
        servers_of(&peer, &project, &uid).await.len(),
        3,
        "no duplicates"
    );
    assert_eq!(
        proxy.count("POST /v2.1/servers"),
        1,
        "{:?}",
        proxy.summary()
    );
    finish(h, &peer, &project, &["crash"], kubelets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_valid_host_and_server_errors_converge_on_the_next_flavor_with_bounded_calls() {
    let Some((peer, _lock, project)) = OsPeer::claim("OS_PROJECT_ID").await else {
        return;
    };
    let proxy = Proxy::start(peer.nova_port()).await;
    for _ in 0..2 {
        proxy.fail(
            "GET /v2.1/servers/detail",
            Fault::Json(503, r#"{"message": "Service Unavailable"}"#),
        );
        proxy.fail("POST /v2.1/servers", Fault::Bare503);
    }
    let mut h = Harness::new().await;
    h.env.config.openstack_endpoints =
        [("compute".to_string(), format!("{}/v2.1", proxy.endpoint()))].into();
    secrets(&h, &peer).await;
    // The flavor the scheduler can never place is the cheapest T4.
    prices(&h, &[("gpu.huge-t4", "0.10"), ("gpu.t4", "0.50")]).await;
    let kubelets = kubelets::register_with(h.client.clone(), os_driver(&peer));
    h.start();
    h.apply_yaml(&os_cluster("nvh", &peer, 2, 0)).await;
    let c = h.cluster_ready("nvh").await;
    let uid = kube::ResourceExt::uid(&c).unwrap();
    let st = c.status.unwrap();
    assert_eq!(st.node_pools[0].instance_type.as_deref(), Some("gpu.t4"));
    let events =
        kube::Api::<k8s_openapi::api::events::v1::Event>::default_namespaced(h.client.clone())
            .list(&Default::default())
            .await
            .unwrap();
    let reasons: Vec<String> = events
        .items
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    assert!(reasons.iter().any(|r| r == "MachineFailed"), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r == "InsufficientCapacity"),
        "{reasons:?}"
    );
    let flavors: Vec<String> = servers_of(&peer, &project, &uid)
        .await
        .iter()
        .map(|s| s["flavor"]["original_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        flavors, ["gpu.t4"; 2],
        "the ERROR server was deleted and replaced"
    );
    // Bounded: the injected faults and the failed flavor cost a handful of calls.
    let posts = proxy.count("POST /v2.1/servers");
    assert!((3..=5).contains(&posts), "{:?}", proxy.summary());
    // Every call but the pending machines' status list is bounded; that list is the poll
    // while the peer boots them, so its count follows how slow the peer is (a loaded
    // machine once made 195 of them in a run that was otherwise right).
    let lists = proxy.count("GET /v2.1/servers/detail");
    assert!(
        proxy.total() - lists < 40,
        "{} Nova calls besides {lists} lists: {:?}",
        proxy.total() - lists,
        proxy.summary()
    );
    finish(h, &peer, &project, &["nvh"], kubelets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_credentials_are_reported_with_the_problem_named() {
    let Some((peer, _lock, project)) = OsPeer::claim("OS_PROJECT_ID").await else {
        return;
    };
    let mut h = Harness::new().await;
    secrets(&h, &peer).await;
    h.start();
    let base = os_cluster("x", &peer, 1, 0);
    // No flavor fits: Stalled, naming the requirement and the closest flavors.
    h.apply_yaml(&base.replace("name: x}", "name: h100}").replace(
        "{count: 1, vendor: NVIDIA, model: T4}",
        "{count: 8, model: H100}",
    ))
    .await;
    let msg = condition(&h, "h100", "Stalled", "True").await;
    assert!(
        msg.contains("pool gpu") && msg.contains("8 H100 GPUs") && msg.contains("closest"),
        "{msg}"
    );
    // A Secret without the application credential's secret.
    h.apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: half}\nstringData: {applicationCredentialId: abc}\n")
        .await;
    h.apply_yaml(
        &base
            .replace("name: x}", "name: half}")
            .replace("{name: os-creds}", "{name: half}"),
    )
    .await;
    let msg = condition(&h, "half", "Stalled", "True").await;
    assert!(
        msg.contains("spec.cloud.openstack.credentialsSecretRef")
            && msg.contains("applicationCredentialSecret"),
        "{msg}"
    );
    // A wrong password: Unauthorized, Stalled.
    h.apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: wrong}\nstringData: {username: operator, password: wrong, projectName: gpu-tenant}\n")
        .await;
    h.apply_yaml(
        &base
            .replace("name: x}", "name: wrong}")
            .replace("{name: os-creds}", "{name: wrong}"),
    )
    .await;
    let msg = condition(&h, "wrong", "Stalled", "True").await;
    assert!(
        msg.contains("unauthorized") && msg.contains("127.0.0.1:5001"),
        "{msg}"
    );
    // Keystone unreachable: CloudReachable False with the address, retried with backoff.
    h.apply_yaml(
        &base
            .replace("name: x}", "name: gone}")
            .replace(&peer.auth_url(), "http://127.0.0.1:9/v3"),
    )
    .await;
    let msg = condition(&h, "gone", "CloudReachable", "False").await;
    assert!(
        msg.contains("authenticating") && msg.contains("127.0.0.1:9"),
        "{msg}"
    );
    assert!(
        peer.servers(&project).await.is_empty(),
        "nothing was started"
    );
    for n in ["h100", "half", "wrong", "gone"] {
        h.delete::<Cluster>(n).await;
    }
    h.stop().await;
}

/// The peer as EGI site KELP-TEST (a site file in the `kelp-egi-sites` ConfigMap).
async fn egi_site(h: &Harness, peer: &OsPeer) {
    let site = format!(
        "gocdb: KELP-TEST\nendpoint: {}\nvos:\n- name: {}\n  auth:\n    project_id: {}\n",
        peer.auth_url().trim_end_matches("/v3"),
        peer.var("EGI_PROJECT_NAME"),
        peer.var("EGI_PROJECT_ID")
    );
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kelp-egi-sites", "namespace": "kelp-system"}, "data": {"kelp-test.yaml": site}});
    kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(h.client.clone(), "kelp-system")
        .patch(
            "kelp-egi-sites",
            &kube::api::PatchParams::apply("test").force(),
            &kube::api::Patch::Apply(&cm),
        )
        .await
        .unwrap();
}

fn egi_cluster(name: &str, secret: &str, vo: &str) -> String {
    format!(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  cloud:
    egi: {{site: KELP-TEST, vo: {vo}, credentialsSecretRef: {{name: {secret}}}}}
  kubernetes: {{mode: Existing, kubeconfigSecretRef: {{name: self-kubeconfig}}}}
  nodePools:
    - {{name: gpu, replicas: 2, machine: {{cpu: 4, gpu: {{count: 1, model: T4}}}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egi_cluster_goes_from_a_check_in_refresh_token_to_ready() {
    let Some(peer) = OsPeer::get().await else {
        return;
    };
    let _lock = peer.lock().await;
    let project = peer.var("EGI_PROJECT_ID");
    let vo = peer.var("EGI_PROJECT_NAME");
    peer.purge(&project).await;
    let checkin = Checkin::start().await;
    checkin.add(
        "rt-alice",
        &format!("fake:alice:{}", peer.var("EGI_ENTITLEMENT")),
    );
    let mut h = Harness::new().await;
    secrets(&h, &peer).await;
    prices(&h, &[("gpu.t4", "0.50"), ("gpu.huge-t4", "0.90")]).await;
    egi_site(&h, &peer).await;
    for (name, rt) in [("egi-alice", "rt-alice"), ("egi-revoked", "rt-revoked")] {
        h.apply_yaml(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{refreshToken: {rt}, clientId: kelp-test, tokenEndpoint: \"{}\"}}\n",
            checkin.token_url()
        ))
        .await;
    }
    // The kubelets of the VO project's servers.
    let catalog = SiteCatalog::from_yaml(&format!(
        "gocdb: KELP-TEST\nendpoint: {}\nvos:\n- name: {vo}\n  auth:\n    project_id: {project}\n",
        peer.auth_url()
    ))
    .unwrap();
    let (watcher, _) = egi::driver(
        &EgiSettings {
            site: "KELP-TEST".into(),
            vo: vo.clone(),
            checkin: CheckinCredentials {
                refresh_token: "rt-alice".into(),
                client_id: "kelp-test".into(),
                client_secret: None,
                token_url: checkin.token_url(),
            },
            auth_url: None,
            identity_provider: "egi.eu".into(),
            protocol: "openid".into(),
            network: None,
            floating_ip_pool: None,
            key_name: None,
            price_overrides: BTreeMap::new(),
            endpoint_overrides: BTreeMap::new(),
        },
        &catalog,
    )
    .unwrap();
    let kubelets = kubelets::register_with(h.client.clone(), watcher);
    h.start();
    h.apply_yaml(&egi_cluster("egi", "egi-alice", &vo)).await;
    h.apply_yaml(&egi_cluster("revoked", "egi-revoked", &vo))
        .await;
    let c = h.cluster_ready("egi").await;
    let st = c.status.unwrap();
    assert_eq!(st.cloud.as_deref(), Some("egi"));
    assert_eq!(st.node_pools[0].instance_type.as_deref(), Some("gpu.t4"));
    assert_eq!(peer.servers(&project).await.len(), 2, "in the VO's project");

    // A revoked refresh token: Stalled with the reason, and Check-in is not hammered.
    let msg = condition(&h, "revoked", "Stalled", "True").await;
    assert!(
        msg.contains("EGI Check-in refused the refresh token")
            && msg.contains("put a new refreshToken"),
        "{msg}"
    );
    let calls = checkin.calls();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        checkin.calls() <= calls + 1,
        "no retry storm: {} -> {}",
        calls,
        checkin.calls()
    );

    h.delete::<Cluster>("egi").await;
    h.delete::<Cluster>("revoked").await;
    h.wait::<Cluster>("egi", "gone", |c| c.is_none()).await;
    h.wait::<Cluster>("revoked", "gone", |c| c.is_none()).await;
    nothing_left(&peer, &project).await;
    kubelets.abort();
    h.stop().await;
}

/// Nova has no idempotency key; the proxy also hides new servers from
/// `GET /servers/detail` for 1.5 s. kelp records each batch before asking and asks once,
/// with and without a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nova_that_lists_late_gets_each_batch_once() {
    let Some((peer, _lock, project)) = OsPeer::claim("OS_PROJECT_ID").await else {
        return;
    };
    let proxy = Proxy::start(peer.nova_port()).await;
    proxy.lag(Duration::from_millis(1500));
    let mut h = Harness::new().await;
    h.env.config.openstack_endpoints =
        [("compute".to_string(), format!("{}/v2.1", proxy.endpoint()))].into();
    secrets(&h, &peer).await;
    prices(&h, &[("gpu.t4", "0.50"), ("gpu.huge-t4", "0.90")]).await;
    let kubelets = kubelets::register_with(h.client.clone(), os_driver(&peer));
    h.apply_yaml(&os_cluster("late", &peer, 2, 0)).await;
    h.start();
    let c = h.cluster_ready("late").await;
    let uid = kube::ResourceExt::uid(&c).unwrap();
    assert_eq!(servers_of(&peer, &project, &uid).await.len(), 2);
    assert_eq!(
        proxy.count("POST /v2.1/servers"),
        1,
        "{:?}",
        proxy.summary()
    );

    h.apply_yaml(&os_cluster("late", &peer, 4, 0)).await;
    for _ in 0..400 {
        if proxy.count("POST /v2.1/servers") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(proxy.count("POST /v2.1/servers"), 2);
    // The proxy really hides the new servers from lists.
    let mut through_proxy = OpenStackSettings::new(
        peer.auth_url(),
        OpenStackAuth::ApplicationCredential {
            id: peer.var("OS_APP_CRED_ID"),
            secret: peer.var("OS_APP_CRED_SECRET"),
        },
    );
    through_proxy.endpoint_overrides =
        [("compute".to_string(), format!("{}/v2.1", proxy.endpoint()))].into();
    let hidden = OpenStackDriver::new(through_proxy)
        .unwrap()
        .list(
            &[(
                kelp_cloud_drivers::tags::CLUSTER_UID.to_string(),
                uid.clone(),
            )]
            .into(),
        )
        .await
        .unwrap();
    assert_eq!(hidden.len(), 2, "{hidden:?}");
    h.crash().await;
    h.start();
    let c = h.cluster_ready_with("late", "4/4").await;
    assert!(c.status.unwrap().pending_creates.is_empty());
    assert_eq!(
        servers_of(&peer, &project, &uid).await.len(),
        4,
        "no duplicates"
    );
    assert_eq!(
        proxy.count("POST /v2.1/servers"),
        2,
        "{:?}",
        proxy.summary()
    );
    finish(h, &peer, &project, &["late"], kubelets).await;
}
