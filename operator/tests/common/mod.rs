//! Test harness: the Kubernetes-API test server with kelp's CRDs, and the operator with a
//! fast sim cloud, which a test can stop, crash and restart on the same server and cloud.
#![allow(dead_code)]

pub mod browser;
pub mod kubelets;
pub mod process;

use std::sync::Arc;
use std::time::Duration;

use kelp_cloud_drivers::sim::{SimCloud, SimConfig};
use kelp_crds::{Cluster, Deployment};
use kelp_operator::Environment;
use kelp_operator::context::{Config, Context};
use kelp_operator::drivers::SimClouds;
use kelp_testapi::TestApiServer;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;

pub struct Harness {
    pub server: TestApiServer,
    pub client: Client,
    pub env: Environment,
    operator: Option<(
        tokio::task::JoinHandle<Arc<Context>>,
        tokio::sync::oneshot::Sender<()>,
    )>,
}

impl Harness {
    /// A test API server with the CRDs, and a fast sim cloud; the operator is not started.
    pub async fn new() -> Self {
        Self::with_sim(SimConfig::fast()).await
    }

    pub async fn with_sim(sim: SimConfig) -> Self {
        let server = TestApiServer::start().await.unwrap();
        let client = kelp_operator::targets::client_from_kubeconfig(&server.kubeconfig())
            .await
            .unwrap();
        kelp_operator::dev::install_crds(&client).await.unwrap();
        // Schedules the workloads of sim Clusters that join this server as `Existing`.
        kelp_operator::sim_kube::spawn_kubelet(client.clone());
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kelp-system"}});
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .patch(
                "kelp-system",
                &PatchParams::apply("test"),
                &Patch::Apply(&ns),
            )
            .await
            .unwrap();
        let env = Environment {
            sims: SimClouds::new(sim),
            sim_kube: kelp_operator::simulated::builtin(),
            health: Default::default(),
            metrics: Default::default(),
            config: Config {
                poll: Duration::from_millis(50),
                resync: Duration::from_secs(300),
                backoff_base: Duration::from_millis(20),
                backoff_max: Duration::from_millis(400),
                namespace: "kelp-system".into(),
                orphan_grace: Duration::from_millis(300),
                orphan_sweep_interval: Duration::from_millis(100),
                create_grace: Duration::from_secs(3),
                openstack_endpoints: Default::default(),
                egi_sites_url: None,
            },
        };
        Self {
            server,
            client,
            env,
            operator: None,
        }
    }

    /// Starts the operator (a fresh process-equivalent: new Context, caches and backoff).
    pub fn start(&mut self) {
        assert!(self.operator.is_none(), "operator already running");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(kelp_operator::run(
            self.client.clone(),
            self.env.clone(),
            async {
                let _ = rx.await;
            },
        ));
        self.operator = Some((task, tx));
    }

    /// Graceful stop; returns the stopped operator's Context (metrics).
    pub async fn stop(&mut self) -> Arc<Context> {
        let (task, tx) = self.operator.take().expect("operator running");
        let _ = tx.send(());
        task.await.unwrap()
    }

    /// A crash: the operator task is dropped wherever it is.
    pub async fn crash(&mut self) {
        let (task, _tx) = self.operator.take().expect("operator running");
        task.abort();
        let _ = task.await;
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::default_namespaced(self.client.clone())
    }

    /// The Secret `self-kubeconfig`: a kubeconfig of this API server, for Clusters that
    /// join it as `kubernetes: Existing`.
    pub async fn apply_self_kubeconfig(&self) {
        self.apply_yaml(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: self-kubeconfig}}\nstringData:\n  value: {}\n",
            serde_json::to_string(&self.server.kubeconfig()).unwrap()
        ))
        .await;
    }

    /// Server-side applies a YAML manifest as the test user.
    pub async fn apply_yaml(&self, yaml: &str) {
        for doc in kelp_crds::parse::documents(yaml).unwrap() {
            kelp_operator::dev::apply_manifest(&self.client, "default", "test", &doc)
                .await
                .unwrap();
        }
    }

    /// Merge-patches the spec of a kelp object.
    pub async fn patch_spec<K>(&self, name: &str, spec: serde_json::Value)
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": spec})),
            )
            .await
            .unwrap();
    }

    pub async fn delete<K>(&self, name: &str)
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Waits until `cond` holds for the object (None: absent), or panics with its last state.
    pub async fn wait<K>(
        &self,
        name: &str,
        what: &str,
        cond: impl Fn(Option<&K>) -> bool,
    ) -> Option<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>();
        let mut last = None;
        // Up to 90 s: moto answers its first catalogue call slowly on a loaded machine.
        for _ in 0..1800 {
            last = api.get_opt(name).await.unwrap();
            if cond(last.as_ref()) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {name}: {what}; last state: {last:#?}");
    }

    pub async fn cluster_ready(&self, name: &str) -> Cluster {
        self.wait::<Cluster>(name, "Ready", |c| c.is_some_and(is_ready_cluster))
            .await
            .unwrap()
    }

    /// Ready at its generation with `ready` machines (e.g. `5/5`).
    pub async fn cluster_ready_with(&self, name: &str, ready: &str) -> Cluster {
        self.wait::<Cluster>(name, ready, |c| {
            c.is_some_and(is_ready_cluster)
                && c.and_then(|c| c.status.as_ref())
                    .is_some_and(|s| s.ready.as_deref() == Some(ready))
        })
        .await
        .unwrap()
    }

    pub async fn deployment_ready(&self, name: &str) -> Deployment {
        self.wait::<Deployment>(name, "Ready", |d| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| kelp_operator::conditions::is_true(&s.conditions, "Ready"))
        })
        .await
        .unwrap()
    }

    /// The sim cloud of a Cluster.
    pub async fn sim(&self, cluster: &str) -> Arc<SimCloud> {
        let c = self.api::<Cluster>().get(cluster).await.unwrap();
        self.env
            .sims
            .get(&c.uid().unwrap())
            .expect("sim cloud exists")
    }

    /// A client for the Cluster's (simulated) Kubernetes.
    pub async fn target(&self, cluster: &str) -> Client {
        let c = self.api::<Cluster>().get(cluster).await.unwrap();
        kelp_operator::targets::Targets::default()
            .client(&self.client, &Default::default(), &c)
            .await
            .unwrap()
    }
}

pub fn is_ready_cluster(c: &Cluster) -> bool {
    c.status.as_ref().is_some_and(|s| {
        kelp_operator::conditions::is_true(&s.conditions, "Ready")
            && s.observed_generation == c.metadata.generation
    })
}

/// Alive machines of a sim cloud per pool tag.
pub fn machines_by_pool(sim: &SimCloud) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for m in sim.machines() {
        let pool = m
            .tags
            .get(kelp_cloud_drivers::tags::POOL)
            .cloned()
            .unwrap_or_default();
        *out.entry(pool).or_default() += 1;
    }
    out
}

pub const MODULE: &str = r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Module
metadata: {name: yolov8}
spec:
  title: YoloV8 model
  summary: Object detection
  image: {repository: ai4oshub/ai4os-yolov8-torch, tag: latest, gpuTag: gpu}
  resources: {cpu: 2, memoryMB: 4000, gpu: 1}
"#;

pub const SECRET: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: nextcloud-alice}
stringData: {user: alice, password: "s3cret pass"}
"#;

/// A sim Cluster with a CPU pool and a T4 pool.
pub fn cluster(name: &str, cpu: u32, gpu: u32) -> String {
    format!(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  cloud: {{sim: {{latencyMs: 1}}}}
  nodePools:
    - {{name: cpu, replicas: {cpu}, machine: {{cpu: 4, memoryMB: 8000}}}}
    - name: gpu-t4
      replicas: {gpu}
      machine: {{cpu: 8, memoryMB: 32000, gpu: {{count: 1, vendor: NVIDIA, model: T4}}}}
      taints: [{{key: nvidia.com/gpu, value: present, effect: NoSchedule}}]
"#
    )
}

pub fn deployment(name: &str, cluster: &str, gpu: u32) -> String {
    format!(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Deployment
metadata: {{name: {name}}}
spec:
  moduleRef: {{name: yolov8}}
  clusterRef: {{name: {cluster}}}
  resources: {{gpu: {gpu}}}
  storage:
    - name: rshare
      webdav: {{url: "https://share.example.org/remote.php/dav/files/alice", credentialsSecretRef: {{name: nextcloud-alice}}}}
  expose: {{path: /, public: true}}
"#
    )
}

/// Real Helm: `KELP_HELM`, else `helm` on PATH. None (the test is skipped, with a note)
/// unless `KELP_REQUIRE_HELM` is set, as `.ci/run` sets it.
pub fn helm() -> Option<std::path::PathBuf> {
    let candidate = std::env::var_os("KELP_HELM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("helm"));
    let ok = std::process::Command::new(&candidate)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(candidate);
    }
    assert!(
        std::env::var_os("KELP_REQUIRE_HELM").is_none(),
        "KELP_REQUIRE_HELM is set but Helm ({}) does not run",
        candidate.display()
    );
    eprintln!("skipped: Helm is not installed (set KELP_HELM; .ci/run installs it)");
    None
}

/// Polls `cond` every 100 ms for up to `secs` seconds; whether it came true.
pub async fn eventually<F, Fut>(secs: u64, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..secs * 10 {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Every Event about `name` in the default namespace: (type, reason, note, count).
pub async fn events(h: &Harness, name: &str) -> Vec<(String, String, String, i32)> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(h.client.clone(), "default")
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.series.map_or(1, |s| s.count),
            )
        })
        .collect()
}
