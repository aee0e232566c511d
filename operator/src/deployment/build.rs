//! Pure steps of the Deployment reconcile: resources, pool choice, image, workload context.

use std::collections::BTreeMap;

use kelp_crds::{Cluster, Deployment, Module, NodePool};
use kelp_recipes::{EnvInfo, ExposeInfo, KeyRef, StorageInfo, TaintInfo, WorkloadContext};

/// Label on every object kelp applies to a target cluster for a Deployment.
pub const DEPLOYMENT_LABEL: &str = "kelp.imagine-ai.eu/deployment";
/// Label naming the namespace of the kelp Deployment (objects may share a target cluster).
pub const NAMESPACE_LABEL: &str = "kelp.imagine-ai.eu/namespace";

/// CPU cores, memory and GPUs one replica needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub cpu: u32,
    pub memory_mb: u64,
    pub gpu: u32,
}

/// The Deployment's overrides on top of the Module's resources.
pub fn need(dep: &Deployment, module: &Module) -> Need {
    let m = &module.spec.resources;
    let o = dep.spec.resources.clone().unwrap_or_default();
    Need {
        cpu: o.cpu.unwrap_or(m.cpu).max(0) as u32,
        memory_mb: o.memory_mb.unwrap_or(m.memory_mb).max(0) as u64,
        gpu: o.gpu.unwrap_or(m.gpu).max(0) as u32,
    }
}

fn pool_gpus(p: &NodePool) -> u32 {
    p.machine.gpu_count().max(0) as u32
}

/// What a pool's machines offer, as far as the spec (or the chosen type in status) tells.
fn pool_size(cluster: &Cluster, p: &NodePool) -> (u32, u64) {
    let cpu = p.machine.cpu.map(|c| c.max(0) as u32);
    let mem = p.machine.memory_mb.map(|m| m.max(0) as u64);
    let _ = cluster;
    (cpu.unwrap_or(u32::MAX), mem.unwrap_or(u64::MAX))
}

/// The node pool for the workload: the explicit one, or the smallest that fits the GPU
/// need (CPU-only workloads go to CPU pools first). Errors say what is missing.
pub fn choose_pool<'a>(
    cluster: &'a Cluster,
    explicit: Option<&str>,
    need: Need,
) -> Result<&'a NodePool, String> {
    let pools = &cluster.spec.node_pools;
    if let Some(name) = explicit {
        let pool = pools.iter().find(|p| p.name == name).ok_or_else(|| {
            format!(
                "spec.nodePool: Cluster {} has no node pool {name:?} (pools: {})",
                cluster.metadata.name.as_deref().unwrap_or_default(),
                pools
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        if pool_gpus(pool) < need.gpu {
            return Err(format!(
                "spec.nodePool: pool {name} has {} GPU(s) per machine; the Deployment needs {}",
                pool_gpus(pool),
                need.gpu
            ));
        }
        return Ok(pool);
    }
    let mut fitting: Vec<&NodePool> = pools
        .iter()
        .filter(|p| {
            let (cpu, mem) = pool_size(cluster, p);
            pool_gpus(p) >= need.gpu && cpu >= need.cpu && mem >= need.memory_mb
        })
        .collect();
    fitting.sort_by_key(|p| {
        let (cpu, mem) = pool_size(cluster, p);
        (pool_gpus(p), cpu, mem, p.name.clone())
    });
    fitting.first().copied().ok_or_else(|| {
        format!(
            "no node pool fits {} CPU, {} MB and {} GPU(s) per replica: {}",
            need.cpu,
            need.memory_mb,
            need.gpu,
            pools
                .iter()
                .map(|p| format!("{} ({} GPU(s))", p.name, pool_gpus(p)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// The image: the Deployment's tag override, else the Module's GPU or CPU image.
pub fn image(dep: &Deployment, module: &Module, need: Need) -> Option<String> {
    if let Some(tag) = &dep.spec.image_tag {
        return Some(format!("{}:{tag}", module.spec.image.repository));
    }
    let resolved = module.status.as_ref()?.resolved_image.as_ref()?;
    Some(if need.gpu > 0 {
        resolved.gpu.clone()
    } else {
        resolved.cpu.clone()
    })
}

/// Name of the target-cluster Secret holding the rclone config of one storage mount.
pub fn rclone_secret_name(dep: &str, storage: &str) -> String {
    format!("{dep}-rclone-{storage}")
}

/// Name of the target-cluster Secret holding env values copied from Secrets/ConfigMaps.
pub fn env_secret_name(dep: &str) -> String {
    format!("{dep}-env")
}

/// Key in the env Secret for a value copied from `source`/`key`.
pub fn env_key(source: &str, key: &str) -> String {
    format!("{source}.{key}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The context the workload recipe renders from.
pub fn workload_context(
    dep: &Deployment,
    module: &Module,
    pool: &NodePool,
    need: Need,
    image: String,
    pull_secret: Option<String>,
) -> WorkloadContext {
    let name = dep.metadata.name.clone().unwrap_or_default();
    let ns = dep.metadata.namespace.clone().unwrap_or_default();
    let serving = &module.spec.serving;
    let mut labels = BTreeMap::new();
    labels.insert("app.kubernetes.io/name".to_string(), name.clone());
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "kelp".to_string(),
    );
    labels.insert(DEPLOYMENT_LABEL.to_string(), name.clone());
    labels.insert(NAMESPACE_LABEL.to_string(), ns.clone());
    let mut node_selector = BTreeMap::new();
    node_selector.insert(
        crate::simulated::NODE_POOL_LABEL.to_string(),
        pool.name.clone(),
    );
    let env = dep
        .spec
        .env
        .iter()
        .map(|e| {
            let from = e.value_from.as_ref();
            let secret = from
                .and_then(|f| f.secret_key_ref.as_ref())
                .map(|r| (r.name.clone(), r.key.clone()));
            let config = from
                .and_then(|f| f.config_map_key_ref.as_ref())
                .map(|r| (r.name.clone(), r.key.clone()));
            // Values from Secrets and ConfigMaps are copied into one Secret on the target.
            let copied = secret.or(config).map(|(src, key)| KeyRef {
                name: env_secret_name(&name),
                key: env_key(&src, &key),
            });
            EnvInfo {
                name: e.name.clone(),
                value: if copied.is_some() {
                    None
                } else {
                    Some(e.value.clone().unwrap_or_default())
                },
                secret_key_ref: copied,
                config_map_key_ref: None,
            }
        })
        .collect();
    let storage = dep
        .spec
        .storage
        .iter()
        .filter(|s| s.webdav.is_some())
        .map(|s| StorageInfo {
            name: s.name.clone(),
            mount_path: s.mount_path.clone(),
            read_only: s.read_only,
            config_secret: rclone_secret_name(&name, &s.name),
        })
        .collect();
    let expose = dep.spec.expose.as_ref().map(|e| ExposeInfo {
        port: e.port.unwrap_or(serving.port).clamp(1, 65535) as u16,
        path: ingress_path(&ns, &name, &e.path),
        public: e.public,
        host: None,
    });
    WorkloadContext {
        name,
        namespace: ns,
        labels,
        image,
        image_pull_secret: pull_secret,
        command: serving.command.clone(),
        args: serving.args.clone(),
        protocol: match serving.protocol {
            kelp_crds::ServingProtocol::Deepaas => "deepaas".into(),
            kelp_crds::ServingProtocol::Custom => "custom".into(),
        },
        port: serving.port.clamp(1, 65535) as u16,
        health_path: serving.health_path.clone(),
        ui_port: serving.ui_port.map(|p| p.clamp(1, 65535) as u16),
        replicas: dep.spec.replicas,
        cpu: need.cpu,
        memory_mb: need.memory_mb,
        gpu: need.gpu,
        node_selector,
        tolerations: pool
            .taints
            .iter()
            .map(|t| TaintInfo {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: format!("{:?}", t.effect),
            })
            .collect(),
        env,
        storage,
        expose,
    }
}

/// Ingress path of a Deployment: `/<namespace>/<name>` plus the exposed path.
pub fn ingress_path(ns: &str, name: &str, path: &str) -> String {
    let rest = path.trim_start_matches('/');
    format!("/{ns}/{name}/{rest}")
}

/// Where users reach the Deployment: the Ingress URL when exposed publicly, else the
/// in-cluster Service URL (on the exposed port, or the Module's serving port when the
/// Deployment has no `expose`).
pub fn endpoint(cluster: &Cluster, ctx: &WorkloadContext) -> Option<String> {
    let Some(e) = ctx.expose.as_ref() else {
        return Some(format!(
            "http://{}.{}.svc.cluster.local:{}/",
            ctx.name, ctx.namespace, ctx.port
        ));
    };
    if e.public {
        let api = cluster.status.as_ref()?.api_endpoint.as_deref()?;
        let host = api
            .split("://")
            .nth(1)
            .unwrap_or(api)
            .split(['/', ':'])
            .next()
            .unwrap_or_default();
        Some(format!("https://{host}{}", e.path))
    } else {
        Some(format!(
            "http://{}.{}.svc.cluster.local:{}/",
            ctx.name, ctx.namespace, e.port
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {name: c, namespace: research}
spec:
  cloud: {sim: {}}
  nodePools:
    - {name: big-gpu, machine: {cpu: 16, memoryMB: 64000, gpu: {count: 4}}}
    - {name: cpu, machine: {cpu: 4, memoryMB: 8000}}
    - {name: gpu-t4, machine: {cpu: 4, memoryMB: 16000, gpu: {count: 1, model: T4}}, taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]}
status: {apiEndpoint: "https://203.0.113.7:6443"}
"#;

    fn cluster() -> Cluster {
        serde_yaml_ng::from_str(CLUSTER).unwrap()
    }

    fn need(cpu: u32, gpu: u32) -> Need {
        Need {
            cpu,
            memory_mb: 4000,
            gpu,
        }
    }

    #[test]
    fn picks_the_smallest_pool_that_fits() {
        let c = cluster();
        assert_eq!(choose_pool(&c, None, need(2, 0)).unwrap().name, "cpu");
        assert_eq!(choose_pool(&c, None, need(2, 1)).unwrap().name, "gpu-t4");
        assert_eq!(choose_pool(&c, None, need(2, 2)).unwrap().name, "big-gpu");
        assert_eq!(choose_pool(&c, None, need(8, 0)).unwrap().name, "big-gpu");
        let err = choose_pool(&c, None, need(2, 8)).unwrap_err();
        assert!(
            err.contains("8 GPU(s)") && err.contains("gpu-t4 (1 GPU(s))"),
            "{err}"
        );
    }

    #[test]
    fn an_explicit_pool_wins_but_must_fit() {
        let c = cluster();
        assert_eq!(
            choose_pool(&c, Some("big-gpu"), need(1, 0)).unwrap().name,
            "big-gpu"
        );
        let err = choose_pool(&c, Some("cpu"), need(1, 1)).unwrap_err();
        assert!(err.starts_with("spec.nodePool"), "{err}");
        let err = choose_pool(&c, Some("nope"), need(1, 0)).unwrap_err();
        assert!(err.contains("no node pool \"nope\""), "{err}");
    }

    #[test]
    fn public_endpoint_uses_the_cluster_address_and_path() {
        let c = cluster();
        let dep: Deployment = serde_yaml_ng::from_str(
            "{apiVersion: kelp.imagine-ai.eu/v1alpha1, kind: Deployment, metadata: {name: fish, namespace: research}, spec: {moduleRef: {name: m}, clusterRef: {name: c}, expose: {path: /, public: true}, env: [{name: A, value: b}, {name: P, valueFrom: {secretKeyRef: {name: mlflow, key: password}}}]}}",
        )
        .unwrap();
        let module: Module = serde_yaml_ng::from_str(
            "{apiVersion: kelp.imagine-ai.eu/v1alpha1, kind: Module, metadata: {name: m}, spec: {title: t, summary: s, image: {repository: r}}}",
        )
        .unwrap();
        let pool = &c.spec.node_pools[2];
        let ctx = workload_context(&dep, &module, pool, need(1, 1), "r:gpu".into(), None);
        assert_eq!(
            endpoint(&c, &ctx).unwrap(),
            "https://203.0.113.7/research/fish/"
        );
        assert_eq!(ctx.tolerations.len(), 1);
        assert_eq!(
            ctx.node_selector[crate::simulated::NODE_POOL_LABEL],
            "gpu-t4"
        );
        let mut internal = ctx.clone();
        internal.expose = None;
        assert_eq!(
            endpoint(&c, &internal).unwrap(),
            format!("http://fish.research.svc.cluster.local:{}/", ctx.port)
        );
        assert_eq!(ctx.env[0].value.as_deref(), Some("b"));
        let r = ctx.env[1].secret_key_ref.as_ref().unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("fish-env", "mlflow.password")
        );
    }
}
