//! The controllers over real HTTP against the test API server, with the sim cloud.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::core::v1::{Node, Secret};
use kelp_cloud_drivers::tags;
use kelp_crds::{Cluster, ClusterPhase, Deployment, DeploymentPhase, Module};
use kelp_operator::conditions;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_and_a_gpu_deployment_become_ready() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.apply_yaml(&cluster("c1", 1, 2)).await;
    h.apply_yaml(&deployment("fish", "c1", 1)).await;

    let c = h.cluster_ready("c1").await;
    let st = c.status.clone().unwrap();
    assert_eq!(st.phase, Some(ClusterPhase::Ready));
    assert_eq!(st.ready.as_deref(), Some("3/3"));
    assert_eq!(st.cloud.as_deref(), Some("sim"));
    let gpu = st.node_pools.iter().find(|p| p.name == "gpu-t4").unwrap();
    assert_eq!(
        gpu.instance_type.as_deref(),
        Some("sim.t4-8"),
        "cheapest type with 8 vCPU and a T4"
    );
    assert!(gpu.price_per_hour.is_some());
    assert_eq!(gpu.machines.len(), 2);
    assert!(gpu.machines.iter().all(|m| {
        m.state.as_deref() == Some("running")
            && m.provider_id
                .as_deref()
                .is_some_and(|p| p.starts_with("sim:///"))
            && !m.addresses.is_empty()
    }));
    for t in [
        "Ready",
        "CloudReachable",
        "ControlPlaneReady",
        "NodePoolsReady",
    ] {
        assert!(
            conditions::is_true(&st.conditions, t),
            "{t}: {:?}",
            st.conditions
        );
    }
    assert!(!conditions::is_true(&st.conditions, "Stalled"));

    // The cloud has exactly the machines asked for, tagged for this Cluster.
    let sim = h.sim("c1").await;
    let by_pool = machines_by_pool(&sim);
    assert_eq!(by_pool.get("cpu"), Some(&1));
    assert_eq!(by_pool.get("gpu-t4"), Some(&2));
    assert_eq!(by_pool.get("control-plane"), Some(&1));
    assert_eq!(sim.all_created(), 4, "no machine created twice");
    for m in sim.machines() {
        assert_eq!(m.tags[tags::CLUSTER_UID], c.uid().unwrap());
        assert_eq!(m.tags[tags::MANAGED_BY], "kelp");
    }

    // The Cluster's Kubernetes has a Node per pool machine, with GPU capacity.
    let target = h.target("c1").await;
    let nodes = Api::<Node>::all(target.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(nodes.len(), 3);
    let gpu_nodes: Vec<&Node> = nodes
        .iter()
        .filter(|n| {
            n.labels()
                .get("kelp.imagine-ai.eu/pool")
                .map(String::as_str)
                == Some("gpu-t4")
        })
        .collect();
    assert_eq!(gpu_nodes.len(), 2);
    let cap = gpu_nodes[0]
        .status
        .as_ref()
        .unwrap()
        .capacity
        .as_ref()
        .unwrap();
    assert_eq!(cap["nvidia.com/gpu"].0, "1");
    assert_eq!(
        gpu_nodes[0].spec.as_ref().unwrap().taints.as_ref().unwrap()[0].key,
        "nvidia.com/gpu"
    );

    // The Deployment runs there: GPU image, GPU limit, rclone credentials from the Secret.
    let d = h.deployment_ready("fish").await;
    let ds = d.status.unwrap();
    assert_eq!(ds.phase, Some(DeploymentPhase::Ready));
    assert_eq!(ds.node_pool.as_deref(), Some("gpu-t4"));
    assert_eq!(ds.image.as_deref(), Some("ai4oshub/ai4os-yolov8-torch:gpu"));
    assert_eq!(ds.ready.as_deref(), Some("1/1"));
    assert!(
        ds.endpoint
            .as_deref()
            .is_some_and(|e| e.ends_with("/default/fish/")),
        "{:?}",
        ds.endpoint
    );
    let work = Api::<AppsDeployment>::namespaced(target.clone(), "default")
        .get("fish")
        .await
        .unwrap();
    let pod = work.spec.template.spec.unwrap();
    let main = &pod.containers[0];
    assert_eq!(
        main.image.as_deref(),
        Some("ai4oshub/ai4os-yolov8-torch:gpu")
    );
    assert_eq!(
        main.resources.as_ref().unwrap().limits.as_ref().unwrap()["nvidia.com/gpu"].0,
        "1"
    );
    assert!(
        pod.containers
            .iter()
            .any(|c| c.image.as_deref().is_some_and(|i| i.starts_with("rclone/")))
    );
    let rclone = Api::<Secret>::namespaced(target.clone(), "default")
        .get("fish-rclone-rshare")
        .await
        .unwrap();
    let data = rclone.data.unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    assert_eq!(text("RCLONE_CONFIG_RSHARE_TYPE"), "webdav");
    assert_eq!(text("RCLONE_CONFIG_RSHARE_VENDOR"), "nextcloud");
    assert_eq!(text("RCLONE_CONFIG_RSHARE_USER"), "alice");
    let pass = text("RCLONE_CONFIG_RSHARE_PASS");
    assert_ne!(pass, "s3cret pass", "the password is obscured");
    assert_eq!(kelp_recipes::rclone::reveal(&pass).unwrap(), "s3cret pass");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_scale_up_and_down() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(&cluster("c2", 2, 0)).await;
    h.cluster_ready("c2").await;
    let sim = h.sim("c2").await;
    assert_eq!(machines_by_pool(&sim).get("cpu"), Some(&2));

    h.patch_spec::<Cluster>("c2", serde_json::json!({"nodePools": [
        {"name": "cpu", "replicas": 5, "machine": {"cpu": 4, "memoryMB": 8000}},
        {"name": "gpu-t4", "replicas": 1, "machine": {"cpu": 8, "memoryMB": 32000, "gpu": {"count": 1, "model": "T4"}}},
    ]}))
    .await;
    let c = h.cluster_ready("c2").await;
    assert_eq!(c.status.unwrap().ready.as_deref(), Some("6/6"));
    let by_pool = machines_by_pool(&sim);
    assert_eq!(
        (by_pool.get("cpu"), by_pool.get("gpu-t4")),
        (Some(&5), Some(&1))
    );
    assert_eq!(
        sim.all_created(),
        1 + 2 + 3 + 1,
        "exactly the missing machines were added"
    );

    h.patch_spec::<Cluster>("c2", serde_json::json!({"nodePools": [
        {"name": "cpu", "replicas": 1, "machine": {"cpu": 4, "memoryMB": 8000}},
        {"name": "gpu-t4", "replicas": 0, "machine": {"cpu": 8, "memoryMB": 32000, "gpu": {"count": 1, "model": "T4"}}},
    ]}))
    .await;
    let c = h.cluster_ready("c2").await;
    assert_eq!(c.status.unwrap().ready.as_deref(), Some("1/1"));
    let by_pool = machines_by_pool(&sim);
    assert_eq!(
        (by_pool.get("cpu"), by_pool.get("gpu-t4")),
        (Some(&1), None)
    );
    // The Nodes of deleted machines are gone too.
    let target = h.target("c2").await;
    let nodes = Api::<Node>::all(target)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(
        nodes.len(),
        1,
        "{:?}",
        nodes.iter().map(|n| n.name_any()).collect::<Vec<_>>()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_module_image_rolls_the_workload() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.apply_yaml(&cluster("c3", 1, 1)).await;
    h.apply_yaml(&deployment("fish", "c3", 1)).await;
    h.deployment_ready("fish").await;
    h.patch_spec::<Module>("yolov8", serde_json::json!({"image": {"gpuTag": "gpu-v2"}}))
        .await;
    h.wait::<Deployment>("fish", "new image", |d| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| s.image.as_deref())
            == Some("ai4oshub/ai4os-yolov8-torch:gpu-v2")
    })
    .await;
    let target = h.target("c3").await;
    let api = Api::<AppsDeployment>::namespaced(target, "default");
    for _ in 0..100 {
        let image = api
            .get("fish")
            .await
            .unwrap()
            .spec
            .template
            .spec
            .unwrap()
            .containers[0]
            .image
            .clone();
        if image.as_deref() == Some("ai4oshub/ai4os-yolov8-torch:gpu-v2") {
            h.deployment_ready("fish").await;
            h.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the workload never got the new image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_deployment_without_a_gpu_pool_stays_pending_with_a_reason() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.apply_yaml(&cluster("cpu-only", 1, 0).replace(
        "    - name: gpu-t4\n      replicas: 0\n      machine: {cpu: 8, memoryMB: 32000, gpu: {count: 1, vendor: NVIDIA, model: T4}}\n      taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]\n",
        "",
    ))
    .await;
    h.apply_yaml(&deployment("needs-gpu", "cpu-only", 1)).await;
    h.cluster_ready("cpu-only").await;
    let d = h
        .wait::<Deployment>("needs-gpu", "NoPoolFits", |d| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| conditions::get(&s.conditions, "Scheduled"))
                .is_some_and(|c| c.reason == "NoPoolFits")
        })
        .await
        .unwrap();
    let st = d.status.unwrap();
    assert_eq!(st.phase, Some(DeploymentPhase::Pending));
    let ready = conditions::get(&st.conditions, "Ready").unwrap();
    assert_eq!(ready.reason, "NoPoolFits");
    assert!(
        ready.message.contains("1 GPU(s)") && ready.message.contains("cpu (0 GPU(s))"),
        "{}",
        ready.message
    );
    // Nothing was deployed.
    let target = h.target("cpu-only").await;
    assert!(
        Api::<AppsDeployment>::namespaced(target, "default")
            .get_opt("needs-gpu")
            .await
            .unwrap()
            .is_none()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cluster_deletes_every_machine_before_the_finalizer_goes() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(&cluster("c4", 2, 1)).await;
    h.cluster_ready("c4").await;
    let sim = h.sim("c4").await;
    assert_eq!(sim.machines().len(), 4);
    let c = h.api::<Cluster>().get("c4").await.unwrap();
    assert_eq!(c.finalizers(), ["kelp.imagine-ai.eu/cluster"]);
    h.delete::<Cluster>("c4").await;
    h.wait::<Cluster>("c4", "gone", |c| c.is_none()).await;
    assert!(
        sim.all_machines().is_empty(),
        "every machine is gone before the Cluster: {:?}",
        sim.all_machines()
    );
    let secrets = h
        .api::<Secret>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        secrets.iter().all(|s| !s.name_any().starts_with("c4-")),
        "owned Secrets deleted"
    );
    assert_eq!(
        h.env.sim_kube.as_ref().unwrap().control_planes().await,
        0,
        "sim control plane stopped"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_leaves_the_machines_and_says_so() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(&cluster("keep", 1, 0).replace("  cloud:", "  deletionPolicy: Retain\n  cloud:"))
        .await;
    h.cluster_ready("keep").await;
    let sim = h.sim("keep").await;
    h.delete::<Cluster>("keep").await;
    h.wait::<Cluster>("keep", "gone", |c| c.is_none()).await;
    assert_eq!(
        sim.machines().len(),
        2,
        "control plane and cpu machine retained"
    );
    let events = Api::<k8s_openapi::api::events::v1::Event>::default_namespaced(h.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(events.items.iter().any(|e| {
        e.reason.as_deref() == Some("Retained")
            && e.note
                .as_deref()
                .is_some_and(|n| n.contains("2 machine(s)"))
    }));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_cluster_is_left_alone() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(&cluster("p", 2, 0).replace("  cloud:", "  paused: true\n  cloud:"))
        .await;
    let c = h
        .wait::<Cluster>("p", "Paused", |c| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| conditions::get(&s.conditions, "Ready"))
                .is_some_and(|c| c.reason == "Paused")
        })
        .await
        .unwrap();
    assert!(
        h.env
            .sims
            .get(&c.uid().unwrap())
            .is_none_or(|s| s.machines().is_empty()),
        "no machine while paused"
    );
    h.patch_spec::<Cluster>("p", serde_json::json!({"paused": false}))
        .await;
    h.cluster_ready("p").await;
    assert_eq!(h.sim("p").await.machines().len(), 3);
    // Paused again: a scale change is not carried out.
    h.patch_spec::<Cluster>("p", serde_json::json!({"paused": true}))
        .await;
    h.wait::<Cluster>("p", "Paused", |c| {
        c.and_then(|c| c.status.as_ref())
            .and_then(|s| conditions::get(&s.conditions, "Ready"))
            .is_some_and(|c| c.reason == "Paused")
    })
    .await;
    h.patch_spec::<Cluster>("p", serde_json::json!({"nodePools": [{"name": "cpu", "replicas": 4, "machine": {"cpu": 4, "memoryMB": 8000}}]}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.sim("p").await.machines().len(), 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_reported_with_the_field_named() {
    let mut h = Harness::new().await;
    h.start();
    // A Module whose repository carries a tag.
    h.apply_yaml(&MODULE.replace(
        "repository: ai4oshub/ai4os-yolov8-torch",
        "repository: 'ai4oshub/ai4os-yolov8-torch:gpu'",
    ))
    .await;
    let m = h
        .wait::<Module>("yolov8", "Stalled", |m| {
            m.and_then(|m| m.status.as_ref())
                .is_some_and(|s| conditions::is_true(&s.conditions, "Stalled"))
        })
        .await
        .unwrap();
    let stalled = conditions::get(&m.status.as_ref().unwrap().conditions, "Stalled")
        .unwrap()
        .clone();
    assert!(
        stalled.message.contains("spec.image.repository"),
        "{}",
        stalled.message
    );
    h.apply_yaml(MODULE).await;

    // A Deployment whose storage Secret does not exist.
    h.apply_yaml(&cluster("c5", 1, 1)).await;
    h.apply_yaml(&deployment("no-secret", "c5", 1)).await;
    let d = h
        .wait::<Deployment>("no-secret", "SecretNotFound", |d| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| conditions::get(&s.conditions, "Stalled"))
                .is_some_and(|c| c.reason == "SecretNotFound")
        })
        .await
        .unwrap();
    let msg = conditions::get(&d.status.unwrap().conditions, "Stalled")
        .unwrap()
        .message
        .clone();
    assert!(
        msg.contains("spec.storage[rshare].webdav.credentialsSecretRef")
            && msg.contains("nextcloud-alice"),
        "{msg}"
    );
    // Creating the Secret unblocks it.
    h.apply_yaml(SECRET).await;
    h.deployment_ready("no-secret").await;

    // A pool nothing in the cloud can satisfy.
    h.apply_yaml(&cluster("c6", 1, 0).replace(
        "machine: {cpu: 4, memoryMB: 8000}",
        "machine: {cpu: 4, memoryMB: 8000, gpu: {count: 2, vendor: AMD, model: MI300X}}",
    ))
    .await;
    let c = h
        .wait::<Cluster>("c6", "Stalled", |c| {
            c.and_then(|c| c.status.as_ref())
                .is_some_and(|s| conditions::is_true(&s.conditions, "Stalled"))
        })
        .await
        .unwrap();
    let stalled = conditions::get(&c.status.unwrap().conditions, "Stalled")
        .unwrap()
        .clone();
    assert_eq!(stalled.reason, "NoInstanceType");
    assert!(
        stalled.message.contains("pool cpu") && stalled.message.contains("MI300X"),
        "{}",
        stalled.message
    );
    h.stop().await;
}

/// The operator started, and the Cluster `here` (`kubernetes: Existing`, the API server
/// kelp runs against) with the Deployment `fish` on it, applied.
async fn fish_on_the_api_server_kelp_runs_against() -> Harness {
    let mut h = Harness::new().await;
    h.start();
    h.apply_self_kubeconfig().await;
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.apply_yaml(&cluster("here", 1, 1).replace(
        "  cloud:",
        "  kubernetes: {mode: Existing, kubeconfigSecretRef: {name: self-kubeconfig}}\n  cloud:",
    ))
    .await;
    h.apply_yaml(&deployment("fish", "here", 1)).await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_cluster_can_be_the_api_server_kelp_runs_against() {
    let mut h = fish_on_the_api_server_kelp_runs_against().await;
    let c = h.cluster_ready("here").await;
    let st = c.status.unwrap();
    assert_eq!(st.api_endpoint.as_deref(), Some(h.server.url().as_str()));
    // No control-plane machine for an existing cluster.
    assert_eq!(
        machines_by_pool(&*h.sim("here").await).get("control-plane"),
        None
    );
    // The pool machines joined the very API server kelp runs against.
    let nodes = Api::<Node>::all(h.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(nodes.len(), 2);
    let d = h.deployment_ready("fish").await;
    assert_eq!(d.status.unwrap().ready.as_deref(), Some("1/1"));
    let work = Api::<AppsDeployment>::namespaced(h.client.clone(), "default")
        .get("fish")
        .await
        .unwrap();
    assert_eq!(work.labels()["kelp.imagine-ai.eu/deployment"], "fish");

    // Deleting the Deployment removes its workload from the cluster.
    h.delete::<Deployment>("fish").await;
    h.wait::<Deployment>("fish", "gone", |d| d.is_none()).await;
    let apps = Api::<AppsDeployment>::namespaced(h.client.clone(), "default");
    assert!(apps.get_opt("fish").await.unwrap().is_none());
    let secrets = Api::<Secret>::namespaced(h.client.clone(), "default");
    assert!(
        secrets
            .get_opt("fish-rclone-rshare")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        secrets.get_opt("nextcloud-alice").await.unwrap().is_some(),
        "the user's own Secret stays"
    );
    h.stop().await;
}

/// A Ready Deployment is looked at again only at the resync (5 min here), so only the
/// watch of its workload on the target can tell it, within the test's wait, that the
/// workload lost its replicas: here every Node goes, and the kubelet marks the workload
/// unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_that_loses_its_replicas_on_the_target_turns_the_deployment_not_ready_at_once() {
    let mut h = fish_on_the_api_server_kelp_runs_against().await;
    h.cluster_ready("here").await;
    h.deployment_ready("fish").await;
    let nodes = Api::<Node>::all(h.client.clone());
    for n in nodes.list(&ListParams::default()).await.unwrap().items {
        nodes
            .delete(&n.name_any(), &Default::default())
            .await
            .unwrap();
    }
    let d = h
        .wait::<Deployment>("fish", "not Ready", |d| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| !conditions::is_true(&s.conditions, "Ready"))
        })
        .await
        .unwrap();
    let st = d.status.unwrap();
    assert_eq!(st.ready.as_deref(), Some("0/1"));
    assert_eq!(st.phase, Some(DeploymentPhase::Degraded));
    let ready = conditions::get(&st.conditions, "Ready").unwrap();
    assert!(ready.message.contains("no node with"), "{}", ready.message);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_recipe_input_stalls_the_pool_naming_the_input() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(&cluster("typo", 1, 1).replace(
        "      taints:",
        "      recipes: [{name: base}, {name: nvidia-gpu, inputs: {driverBranch: 550}}]\n      taints:",
    ))
    .await;
    let c = h
        .wait::<Cluster>("typo", "Stalled", |c| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| conditions::get(&s.conditions, "Stalled"))
                .is_some_and(|c| c.reason == "RecipeError")
        })
        .await
        .unwrap();
    let msg = conditions::get(&c.status.as_ref().unwrap().conditions, "Stalled")
        .unwrap()
        .message
        .clone();
    assert!(
        msg.contains("pool gpu-t4") && msg.contains("driverBranch"),
        "{msg}"
    );
    // The other pool is not held up, and nothing half-rendered reached the cloud.
    let by_pool = machines_by_pool(&*h.sim("typo").await);
    assert_eq!(by_pool.get("gpu-t4"), None);
    h.wait::<Cluster>("typo", "cpu pool running", |c| {
        c.and_then(|c| c.status.as_ref())
            .is_some_and(|s| s.node_pools.iter().any(|p| p.name == "cpu" && p.ready == 1))
    })
    .await;
    // Fixing the input unblocks it.
    h.patch_spec::<Cluster>("typo", serde_json::json!({"nodePools": [
        {"name": "cpu", "replicas": 1, "machine": {"cpu": 4, "memoryMB": 8000}},
        {"name": "gpu-t4", "replicas": 1, "machine": {"cpu": 8, "memoryMB": 32000, "gpu": {"count": 1, "model": "T4"}},
         "recipes": [{"name": "base"}, {"name": "nvidia-gpu", "inputs": {"driverBranch": "550"}}]},
    ]}))
    .await;
    h.cluster_ready("typo").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_waiting_for_a_free_gpu_says_so() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.apply_yaml(&cluster("one-gpu", 0, 1)).await;
    h.apply_yaml(&deployment("first", "one-gpu", 1)).await;
    h.deployment_ready("first").await;
    h.apply_yaml(&deployment("second", "one-gpu", 1)).await;
    let d = h
        .wait::<Deployment>("second", "waiting for a GPU", |d| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| conditions::get(&s.conditions, "Ready"))
                .is_some_and(|c| c.message.contains("GPU free"))
        })
        .await
        .unwrap();
    let st = d.status.unwrap();
    assert_eq!(st.phase, Some(DeploymentPhase::Deploying));
    assert_eq!(st.ready.as_deref(), Some("0/1"));
    // A second GPU machine lets it run.
    h.patch_spec::<Cluster>("one-gpu", serde_json::json!({"nodePools": [
        {"name": "cpu", "replicas": 0, "machine": {"cpu": 4, "memoryMB": 8000}},
        {"name": "gpu-t4", "replicas": 2, "machine": {"cpu": 8, "memoryMB": 32000, "gpu": {"count": 1, "vendor": "NVIDIA", "model": "T4"}},
         "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
    ]}))
    .await;
    h.deployment_ready("second").await;
    h.stop().await;
}

const MOTD_RECIPE: &str = r#"
name: motd
description: A message of the day on every machine of the pool
version: 1.0.0
kind: node
inputs:
  - {name: message, type: string, required: true, description: The message}
templates:
  - name: motd
    template: |
      write_files:
        - path: /etc/motd
          content: {{json inputs.message}}
"#;

async fn recipe_configmap(h: &Harness, name: &str, recipe: &str) {
    let cm = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "kelp-system", "labels": {"kelp.imagine-ai.eu/recipe": "true"}},
        "data": {"recipe.yaml": recipe},
    });
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(h.client.clone(), "kelp-system")
        .patch(
            name,
            &kube::api::PatchParams::apply("test").force(),
            &kube::api::Patch::Apply(&cm),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_recipes_from_configmaps_render_and_broken_ones_are_reported() {
    let mut h = Harness::new().await;
    h.start();
    // Broken first: a typo in an input type.
    recipe_configmap(
        &h,
        "motd",
        &MOTD_RECIPE.replace("type: string", "type: strng"),
    )
    .await;
    h.apply_yaml(&cluster("u", 1, 0).replace(
        "machine: {cpu: 4, memoryMB: 8000}}",
        "machine: {cpu: 4, memoryMB: 8000}, recipes: [{name: base}, {name: motd, inputs: {message: \"welcome: it's kelp\"}}]}",
    ))
    .await;
    let c = h
        .wait::<Cluster>("u", "RecipeError", |c| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| conditions::get(&s.conditions, "Stalled"))
                .is_some_and(|c| c.reason == "RecipeError")
        })
        .await
        .unwrap();
    let msg = conditions::get(&c.status.unwrap().conditions, "Stalled")
        .unwrap()
        .message
        .clone();
    assert!(
        msg.contains("pool cpu") && msg.contains("motd") && msg.contains("ConfigMap motd"),
        "{msg}"
    );
    assert_eq!(
        machines_by_pool(&*h.sim("u").await).get("cpu"),
        None,
        "nothing half-applied"
    );
    let events =
        Api::<k8s_openapi::api::core::v1::Event>::namespaced(h.client.clone(), "kelp-system")
            .list(&ListParams::default())
            .await
            .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("RecipeInvalid")
                && e.involved_object.name.as_deref() == Some("motd"))
    );

    // Fixed: the Cluster re-renders on its own and the machines get the recipe.
    recipe_configmap(&h, "motd", MOTD_RECIPE).await;
    h.cluster_ready("u").await;
    let sim = h.sim("u").await;
    let cpu = sim
        .machines()
        .into_iter()
        .find(|m| m.tags.get(tags::POOL).map(String::as_str) == Some("cpu"))
        .unwrap();
    let user_data = sim.user_data(&cpu.id).unwrap();
    assert!(user_data.starts_with("#cloud-config\n"));
    let doc: serde_json::Value = serde_yaml_ng::from_str(&user_data).unwrap();
    let motd = doc["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/motd")
        .unwrap();
    assert_eq!(motd["content"], "welcome: it's kelp");
    h.stop().await;
}

/// Objects kelp applied that the Deployment no longer renders are deleted from the
/// target: when the spec changes, and, after a restart, when an earlier process left
/// one behind (this process has applied nothing there yet, so it lists what is there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_the_deployment_no_longer_renders_are_pruned_also_after_a_restart() {
    let (mut h, target) = fish_ready_on_c1().await;
    let secrets: Api<Secret> = Api::namespaced(target.clone(), "default");
    let rclone = "fish-rclone-rshare";
    assert!(secrets.get_opt(rclone).await.unwrap().is_some());
    let gone = |name: &'static str| {
        let secrets = secrets.clone();
        async move {
            for _ in 0..100 {
                if secrets.get_opt(name).await.unwrap().is_none() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    h.patch_spec::<Deployment>("fish", serde_json::json!({"storage": []}))
        .await;
    assert!(
        gone(rclone).await,
        "the rclone Secret stayed after its storage went"
    );

    // A labelled leftover of an earlier operator process, found after a restart.
    h.stop().await;
    let leftover = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "fish-leftover", "namespace": "default", "labels": {
            "kelp.imagine-ai.eu/deployment": "fish", "kelp.imagine-ai.eu/namespace": "default"}},
        "stringData": {"k": "v"}});
    secrets
        .patch(
            "fish-leftover",
            &kube::api::PatchParams::apply("test"),
            &kube::api::Patch::Apply(&leftover),
        )
        .await
        .unwrap();
    h.start();
    assert!(
        gone("fish-leftover").await,
        "the leftover was not pruned after a restart"
    );
    // A leftover of a Deployment this process has not applied yet, on a target whose
    // watches of the applied kinds are live by now: found in them, not by listing.
    h.deployment_ready("fish").await;
    let mut shrimp_leftover = leftover.clone();
    shrimp_leftover["metadata"]["name"] = "shrimp-leftover".into();
    shrimp_leftover["metadata"]["labels"]["kelp.imagine-ai.eu/deployment"] = "shrimp".into();
    secrets
        .patch(
            "shrimp-leftover",
            &kube::api::PatchParams::apply("test"),
            &kube::api::Patch::Apply(&shrimp_leftover),
        )
        .await
        .unwrap();
    // (It need not run: there is no GPU left for it. Its first apply prunes.)
    h.apply_yaml(&deployment("shrimp", "c1", 1)).await;
    assert!(
        gone("shrimp-leftover").await,
        "the leftover of a Deployment first applied after the watches were live stayed"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_changed_on_the_target_are_applied_again_by_the_next_reconcile() {
    use kube::api::{Patch, PatchParams};
    let (mut h, target) = fish_ready_on_c1().await;
    let workloads: Api<AppsDeployment> = Api::namespaced(target.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(target.clone(), "default");
    let by_hand = PatchParams::default();

    // The workload's spec changed by hand: its watch wakes the Deployment, which
    // applies it again.
    workloads
        .patch(
            "fish",
            &by_hand,
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert!(
        eventually(15, || async {
            workloads.get("fish").await.unwrap().spec.replicas == Some(1)
        })
        .await,
        "the workload's replicas changed by hand were not set back"
    );

    // A Secret's value changed by hand, then anything that reconciles the Deployment:
    // the changed Secret is applied again (the workload, unchanged, need not be).
    let rclone = secrets.get("fish-rclone-rshare").await.unwrap();
    // (Not the password: kelp keeps the obscured one it finds there.)
    let (key, value) = rclone
        .data
        .clone()
        .unwrap()
        .into_iter()
        .find(|(k, _)| !k.ends_with("PASS"))
        .unwrap();
    secrets
        .patch(
            "fish-rclone-rshare",
            &by_hand,
            &Patch::Merge(serde_json::json!({"data": {&key: "Y2hhbmdlZA=="}})),
        )
        .await
        .unwrap();
    h.api::<Deployment>()
        .patch(
            "fish",
            &by_hand,
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"touched": "1"}}})),
        )
        .await
        .unwrap();
    assert!(
        eventually(15, || async {
            let data = secrets.get("fish-rclone-rshare").await.unwrap().data;
            data.unwrap().get(&key) == Some(&value)
        })
        .await,
        "the Secret's value changed by hand was not set back"
    );
    h.stop().await;
}

/// A running operator with the Deployment fish Ready on the Cluster c1, and a client
/// for c1's Kubernetes.
async fn fish_ready_on_c1() -> (Harness, kube::Client) {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.apply_yaml(&cluster("c1", 1, 1)).await;
    h.apply_yaml(&deployment("fish", "c1", 1)).await;
    h.deployment_ready("fish").await;
    let target = h.target("c1").await;
    (h, target)
}

/// A sim Cluster whose T4 pool (`gpus` per machine) follows demand (0..4, idle machines
/// go after 2 s), with an optional budget line.
fn autoscaling_cluster(name: &str, gpus: u32, budget: &str) -> String {
    format!(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  cloud: {{sim: {{latencyMs: 1}}}}
  {budget}
  kubernetes: {{controlPlane: {{cpu: 2}}}}
  nodePools:
    - name: gpu-t4
      replicas: 0
      autoscaling: {{minReplicas: 0, maxReplicas: 4, scaleDownDelaySeconds: 2}}
      machine: {{cpu: 8, memoryMB: 32000, gpu: {{count: {gpus}, vendor: NVIDIA, model: T4}}}}
      taints: [{{key: nvidia.com/gpu, value: present, effect: NoSchedule}}]
"#
    )
}

fn pool_status(c: &Cluster) -> Option<&kelp_crds::NodePoolStatus> {
    c.status
        .as_ref()?
        .node_pools
        .iter()
        .find(|p| p.name == "gpu-t4")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_follows_demand_grows_with_the_replicas_and_shrinks_when_idle() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    // Machines of 2 T4 each: 5 one-GPU replicas need 3.
    h.apply_yaml(&autoscaling_cluster("auto", 2, "")).await;
    // No demand: no GPU machine, and the pool says why.
    let c = h.cluster_ready_with("auto", "0/0").await;
    assert_eq!(
        pool_status(&c).and_then(|p| p.demand.as_deref()),
        Some("0 machine(s): no kelp Deployment runs on the pool (bounds 0..4)")
    );
    h.apply_yaml(&deployment("fish", "auto", 1)).await;
    h.patch_spec::<Deployment>("fish", serde_json::json!({"replicas": 5}))
        .await;
    let d = h
        .wait::<Deployment>("fish", "5/5 ready", |d| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.ready.as_deref() == Some("5/5"))
        })
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().phase, Some(DeploymentPhase::Ready));
    let c = h.cluster_ready_with("auto", "3/3").await;
    let pool = pool_status(&c).unwrap();
    assert_eq!(pool.desired, 3);
    assert_eq!(
        pool.demand.as_deref(),
        Some("3 machine(s) of type sim.t4x2-16 for 5 replica(s) needing 1 GPU each (bounds 0..4)")
    );
    let sim = h.sim("auto").await;
    assert_eq!(machines_by_pool(&sim).get("gpu-t4"), Some(&3));
    assert_eq!(
        sim.all_created(),
        1 + 3,
        "one batch of 3 after the control plane"
    );
    // More than the bounds allow: the pool stops at 4 and says so.
    h.patch_spec::<Deployment>("fish", serde_json::json!({"replicas": 9}))
        .await;
    let c = h
        .wait::<Cluster>("auto", "4 machines", |c| {
            c.and_then(pool_status)
                .is_some_and(|p| p.desired == 4 && p.ready == 4)
        })
        .await
        .unwrap();
    assert!(
        pool_status(&c)
            .and_then(|p| p.demand.as_deref())
            .is_some_and(|m| m.starts_with("4 machine(s), the most autoscaling allows")),
        "{:?}",
        pool_status(&c)
    );
    assert_eq!(
        machines_by_pool(&sim).get("gpu-t4"),
        Some(&4),
        "never above max"
    );
    // Down to one replica: the idle machines go once idle for the delay, to one.
    h.patch_spec::<Deployment>("fish", serde_json::json!({"replicas": 1}))
        .await;
    let c = h.cluster_ready_with("auto", "1/1").await;
    assert_eq!(machines_by_pool(&sim).get("gpu-t4"), Some(&1));
    assert!(
        pool_status(&c)
            .unwrap()
            .machines
            .iter()
            .all(|m| m.idle_since.is_some()),
        "the sim shows no Pods: every machine counts as idle"
    );
    h.deployment_ready("fish").await;
    // Growing the same way twice at one generation of the Cluster: the second batch is
    // a new one, not the first one's (gone) machines that the cloud remembers by its
    // idempotency key.
    for _ in 0..2 {
        h.patch_spec::<Deployment>("fish", serde_json::json!({"replicas": 3}))
            .await;
        h.wait::<Deployment>("fish", "3/3 ready again", |d| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.ready.as_deref() == Some("3/3"))
        })
        .await;
        h.patch_spec::<Deployment>("fish", serde_json::json!({"replicas": 1}))
            .await;
        h.cluster_ready_with("auto", "1/1").await;
    }
    // The Deployment deleted: no demand, no GPU machine.
    h.delete::<Deployment>("fish").await;
    h.cluster_ready_with("auto", "0/0").await;
    assert_eq!(machines_by_pool(&sim).get("gpu-t4"), None);
    assert_eq!(
        sim.all_created(),
        1 + 3 + 1 + 1 + 1,
        "control plane, 3, then 1 more, then 1 more twice"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_caps_the_machines_and_says_which_pool_hit_it() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    // The control plane (sim.cpu-2) and two T4 machines fit; a third does not.
    let types = kelp_cloud_drivers::sim::catalogue();
    let price = |n: &str| {
        types
            .iter()
            .find(|t| t.name == n)
            .unwrap()
            .price_per_hour
            .unwrap()
    };
    let cap = price("sim.cpu-2") + 2.0 * price("sim.t4-8") + 0.01;
    h.apply_yaml(&autoscaling_cluster(
        "capped",
        1,
        &format!("budget: {{maxPricePerHour: {cap}}}"),
    ))
    .await;
    h.apply_yaml(&deployment("fish", "capped", 1)).await;
    h.patch_spec::<Deployment>("fish", serde_json::json!({"replicas": 3}))
        .await;
    let c = h
        .wait::<Cluster>("capped", "BudgetExceeded", |c| {
            c.and_then(|c| c.status.as_ref())
                .is_some_and(|s| conditions::is_true(&s.conditions, "BudgetExceeded"))
                && c.and_then(pool_status).is_some_and(|p| p.ready == 2)
        })
        .await
        .unwrap();
    let st = c.status.unwrap();
    let msg = &conditions::get(&st.conditions, "BudgetExceeded")
        .unwrap()
        .message;
    assert!(
        msg.starts_with(
            "pool gpu-t4: 1 more machine(s) of type sim.t4-8 would take the Cluster to"
        ),
        "{msg}"
    );
    assert!(
        msg.ends_with(&format!("over its budget of {cap:.2}")),
        "{msg}"
    );
    let sim = h.sim("capped").await;
    assert_eq!(machines_by_pool(&sim).get("gpu-t4"), Some(&2));
    let total = st.price_per_hour.unwrap();
    assert!(total <= cap, "{total} within {cap}");
    // Raising the budget lets the third machine come.
    h.patch_spec::<Cluster>(
        "capped",
        serde_json::json!({"budget": {"maxPricePerHour": 100.0}}),
    )
    .await;
    let c = h.cluster_ready_with("capped", "3/3").await;
    let st = c.status.unwrap();
    assert!(!conditions::is_true(&st.conditions, "BudgetExceeded"));
    h.deployment_ready("fish").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pods_that_select_a_pool_that_follows_demand_grow_it() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams, PostParams};
    let mut h = Harness::new().await;
    h.start();
    h.apply_self_kubeconfig().await;
    h.apply_yaml(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {name: shared}
spec:
  cloud: {sim: {latencyMs: 1}}
  kubernetes: {mode: Existing, kubeconfigSecretRef: {name: self-kubeconfig}}
  nodePools:
    - name: gpu
      replicas: 0
      autoscaling: {minReplicas: 0, maxReplicas: 3, scaleDownDelaySeconds: 1}
      machine: {gpu: {count: 1, model: T4}}
      labels: {accelerator: t4}
"#,
    )
    .await;
    h.cluster_ready_with("shared", "0/0").await;
    // Someone else's Pod on the same Kubernetes waits for a T4 Node.
    let pods = Api::<Pod>::default_namespaced(h.client.clone());
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "notebook"},
        "spec": {"nodeSelector": {"accelerator": "t4"},
                 "containers": [{"name": "c", "image": "jupyter",
                                 "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods.patch_status(
        "notebook",
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/0 nodes are available"}]}}),
        ),
    )
    .await
    .unwrap();
    // A Pod wakes no Cluster: it is seen at the Cluster's next reconcile (at the latest
    // the resync). Here a spec change brings that on.
    h.patch_spec::<Cluster>(
        "shared",
        serde_json::json!({"budget": {"maxPricePerHour": 100.0}}),
    )
    .await;
    let c = h
        .wait::<Cluster>("shared", "one machine for the Pod", |c| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| s.node_pools.first())
                .is_some_and(|p| p.desired == 1)
        })
        .await
        .unwrap();
    let pool = &c.status.unwrap().node_pools[0];
    assert!(
        pool.demand
            .as_deref()
            .is_some_and(|d| d.contains("1 replica(s) needing 1 GPU each")),
        "{pool:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_cluster_ref_moves_the_workload_and_removes_it_from_the_old_cluster() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    h.apply_yaml(&cluster("old", 0, 1)).await;
    // The new Cluster has no GPU machine yet: the workload cannot be Ready there.
    h.apply_yaml(&cluster("new", 0, 0)).await;
    h.apply_yaml(&deployment("fish", "old", 1)).await;
    let d = h.deployment_ready("fish").await;
    assert_eq!(d.status.unwrap().cluster.as_deref(), Some("old"));
    let on = |target: kube::Client| async move {
        Api::<AppsDeployment>::namespaced(target, "default")
            .get_opt("fish")
            .await
            .unwrap()
            .is_some()
    };
    assert!(on(h.target("old").await).await);
    h.patch_spec::<Deployment>("fish", serde_json::json!({"clusterRef": {"name": "new"}}))
        .await;
    // Make-before-break: applied on the new Cluster, still running on the old one.
    assert!(
        eventually(10, || async { on(h.target("new").await).await }).await,
        "applied to the new Cluster"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        on(h.target("old").await).await,
        "the old workload stays meanwhile"
    );
    let st = h
        .api::<Deployment>()
        .get("fish")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.cluster.as_deref(), Some("old"), "{st:?}");
    // The new Cluster gets its GPU machine: the move finishes.
    h.patch_spec::<Cluster>("new", serde_json::json!({"nodePools": [
        {"name": "cpu", "replicas": 0, "machine": {"cpu": 4, "memoryMB": 8000}},
        {"name": "gpu-t4", "replicas": 1, "machine": {"cpu": 8, "memoryMB": 32000, "gpu": {"count": 1, "vendor": "NVIDIA", "model": "T4"}},
         "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
    ]}))
    .await;
    h.wait::<Deployment>("fish", "Ready on new", |d| {
        d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
            s.cluster.as_deref() == Some("new") && conditions::is_true(&s.conditions, "Ready")
        })
    })
    .await;
    assert!(
        eventually(10, || async { !on(h.target("old").await).await }).await,
        "the old Cluster's workload is deleted once the new one is Ready"
    );
    let events = events(&h, "fish").await;
    assert!(
        events
            .iter()
            .any(|(_, r, n, _)| r == "Moved" && n.contains("from Cluster old to Cluster new")),
        "{events:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_machine_is_cordoned_and_drained_before_it_goes() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;
    let mut h = Harness::new().await;
    h.start();
    h.apply_self_kubeconfig().await;
    // Starts with one machine; with no demand it goes once idle for 10 s.
    h.apply_yaml(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {name: shared}
spec:
  cloud: {sim: {latencyMs: 1}}
  kubernetes: {mode: Existing, kubeconfigSecretRef: {name: self-kubeconfig}}
  nodePools:
    - {name: cpu, replicas: 1, autoscaling: {minReplicas: 0, maxReplicas: 2, scaleDownDelaySeconds: 10}, machine: {cpu: 2}}
"#,
    )
    .await;
    // Its starting machine joins; demand alone (none) sizes the pool from then on.
    let c = h
        .wait::<Cluster>("shared", "the starting machine's Node Ready", |c| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| s.node_pools.first())
                .is_some_and(|p| p.ready == 1)
        })
        .await
        .unwrap();
    let pool = &c.status.unwrap().node_pools[0];
    assert_eq!(pool.desired, 0, "{pool:?}");
    let node = pool.machines[0].name.clone();
    // Someone's Pod (not kelp's workload) runs on that Node.
    let pods = Api::<Pod>::default_namespaced(h.client.clone());
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "batch-job"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let sim = h.sim("shared").await;
    let gone = eventually(30, || async { !machines_by_pool(&sim).contains_key("cpu") }).await;
    if !gone {
        let c = h.api::<Cluster>().get("shared").await.unwrap();
        let n = Api::<Node>::all(h.client.clone())
            .get_opt(&node)
            .await
            .unwrap();
        panic!(
            "the idle machine goes: {:#?}\npod: {:?}\nnode spec: {:?}",
            c.status,
            pods.get_opt("batch-job")
                .await
                .unwrap()
                .map(|p| p.metadata.name),
            n.map(|n| n.spec)
        );
    }
    // It was drained first: the Pod was evicted.
    assert!(pods.get_opt("batch-job").await.unwrap().is_none());
    let events = events(&h, "shared").await;
    assert!(
        events.iter().any(|(_, r, n, _)| r == "MachinesDeleted"
            && n.contains(
                "scaling down to 0 for demand; no kelp workload on them for at least 10s"
            )),
        "{events:?}"
    );
    h.cluster_ready_with("shared", "0/0").await;
    h.stop().await;
}

/// A crash between kelp's cordon and the machine's delete leaves a cordoned Node; a
/// machine that carries a kelp workload Pod is never removed, and kelp takes back its
/// own cordon of a machine that stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_with_kelp_workload_is_never_removed_and_kelps_cordon_is_taken_back() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams, PostParams};
    let mut h = Harness::new().await;
    h.start();
    h.apply_self_kubeconfig().await;
    h.apply_yaml(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {name: shared}
spec:
  cloud: {sim: {latencyMs: 1}}
  kubernetes: {mode: Existing, kubeconfigSecretRef: {name: self-kubeconfig}}
  nodePools:
    - {name: cpu, replicas: 1, autoscaling: {minReplicas: 0, maxReplicas: 2, scaleDownDelaySeconds: 2}, machine: {cpu: 2}}
"#,
    )
    .await;
    let c = h
        .wait::<Cluster>("shared", "the starting machine's Node Ready", |c| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| s.node_pools.first())
                .is_some_and(|p| p.ready == 1)
        })
        .await
        .unwrap();
    let node = c.status.unwrap().node_pools[0].machines[0].name.clone();
    // A kelp workload Pod runs there, and the Node carries kelp's cordon, as a crash
    // right after the cordon would leave it.
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "fish-abc", "labels": {"kelp.imagine-ai.eu/deployment": "fish"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "yolo"}]},
    }))
    .unwrap();
    Api::<Pod>::default_namespaced(h.client.clone())
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let nodes = Api::<Node>::all(h.client.clone());
    nodes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {"kelp.imagine-ai.eu/cordoned-for-scale-down": "true"}},
                "spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    h.patch_spec::<Cluster>(
        "shared",
        serde_json::json!({"budget": {"maxPricePerHour": 100.0}}),
    )
    .await;
    assert!(
        eventually(10, || async {
            let n = nodes.get(&node).await.unwrap();
            n.spec.and_then(|s| s.unschedulable) == Some(false)
                && !n
                    .metadata
                    .annotations
                    .unwrap_or_default()
                    .contains_key("kelp.imagine-ai.eu/cordoned-for-scale-down")
        })
        .await,
        "kelp's cordon is taken back"
    );
    // Well past the delay, the machine that carries the Pod is still there.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sim = h.sim("shared").await;
    assert_eq!(machines_by_pool(&sim).get("cpu"), Some(&1));
    let st = h
        .api::<Cluster>()
        .get("shared")
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(st.node_pools[0].machines[0].idle_since.is_none(), "{st:?}");
    h.stop().await;
}

/// kill -9 at random points while a pool that follows demand scales down: the machine
/// that carries a kelp workload Pod is never removed, nothing is created again, and the
/// idle one goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_during_a_scale_down_never_remove_a_machine_that_carries_workload() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;
    let mut h = Harness::new().await;
    h.start();
    h.apply_self_kubeconfig().await;
    h.apply_yaml(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {name: shared}
spec:
  cloud: {sim: {latencyMs: 1}}
  kubernetes: {mode: Existing, kubeconfigSecretRef: {name: self-kubeconfig}}
  nodePools:
    - {name: cpu, replicas: 2, autoscaling: {minReplicas: 0, maxReplicas: 3, scaleDownDelaySeconds: 1}, machine: {cpu: 2}}
"#,
    )
    .await;
    let c = h
        .wait::<Cluster>("shared", "the two starting machines' Nodes Ready", |c| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| s.node_pools.first())
                .is_some_and(|p| p.ready == 2)
        })
        .await
        .unwrap();
    let busy = c.status.unwrap().node_pools[0].machines[0].name.clone();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "fish-abc", "labels": {"kelp.imagine-ai.eu/deployment": "fish"}},
        "spec": {"nodeName": busy, "containers": [{"name": "c", "image": "yolo"}]},
    }))
    .unwrap();
    Api::<Pod>::default_namespaced(h.client.clone())
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let sim = h.sim("shared").await;
    for _ in 0..12 {
        let wait = rand::random_range(0..600);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        h.crash().await;
        h.start();
        let names: Vec<String> = sim.machines().into_iter().map(|m| m.name).collect();
        assert!(names.contains(&busy), "the busy machine went: {names:?}");
    }
    assert!(
        eventually(30, || async { sim.machines().len() == 1 }).await,
        "the idle machine goes: {:?}",
        sim.machines()
    );
    assert_eq!(sim.machines()[0].name, busy);
    assert_eq!(sim.all_created(), 2, "nothing was created again");
    h.stop().await;
}
