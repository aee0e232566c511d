//! Plays the kubelets of cloud machines: registers a Ready Node for every running kelp
//! machine a driver lists (moto's instances, the OpenStack peer's servers), as the k3s
//! agent in their user-data would on a real cloud. Shared by the EC2 and OpenStack
//! tests and their benchmarks.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kelp_cloud_drivers::{CloudDriver, Ec2Credentials, Ec2Driver, Ec2Settings, MachineState, tags};
use kube::api::{Api, Patch, PatchParams};

/// An EC2 driver for moto at `endpoint`.
pub fn driver(endpoint: &str) -> Ec2Driver {
    Ec2Driver::new(Ec2Settings {
        endpoint_url: Some(endpoint.to_string()),
        credentials: Some(Ec2Credentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: None,
        }),
        ..Ec2Settings::new(kelp_test_peers::REGION)
    })
    .unwrap()
}

/// Registers Nodes on `client`'s API server for the running instances at `endpoint`
/// every 100 ms, until the task is aborted.
#[allow(dead_code)]
pub fn register(client: kube::Client, endpoint: &str) -> tokio::task::JoinHandle<()> {
    register_with(client, driver(endpoint))
}

/// Registers Nodes on `client`'s API server for the running machines `d` lists every
/// 100 ms (every 500 ms for other clouds than moto), until the task is aborted.
pub fn register_with(
    client: kube::Client,
    d: impl CloudDriver + 'static,
) -> tokio::task::JoinHandle<()> {
    register_unless(client, d, Default::default())
}

/// [`register_with`], listing nothing while `held` is set: a benchmark that times the
/// cloud's answers to kelp holds the kubelets meanwhile, so that their lists do not
/// load the cloud (moto answers one request at a time) as no kubelet loads a real one.
pub fn register_unless(
    client: kube::Client,
    d: impl CloudDriver + 'static,
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let pause = if d.name() == "ec2" { 100 } else { 500 };
    let nodes: Api<Node> = Api::all(client);
    tokio::spawn(async move {
        loop {
            if held.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            let mut managed = std::collections::BTreeMap::new();
            managed.insert(tags::MANAGED_BY.to_string(), "kelp".to_string());
            for m in d.list(&managed).await.unwrap_or_default() {
                if m.state != MachineState::Running {
                    continue;
                }
                let node = serde_json::json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": m.id, "labels": {
                        "kelp.imagine-ai.eu/cluster-uid": m.tags[tags::CLUSTER_UID],
                        "kelp.imagine-ai.eu/pool": m.tags[tags::POOL]}},
                    "spec": {"providerID": m.provider_id},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}],
                               "capacity": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                               "allocatable": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}},
                });
                let pp = PatchParams::apply("test-kubelet").force();
                let _ = nodes.patch(&m.id, &pp, &Patch::Apply(&node)).await;
                let _ = nodes.patch_status(&m.id, &pp, &Patch::Apply(&node)).await;
            }
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    })
}
