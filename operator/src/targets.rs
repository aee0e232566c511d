//! Clients for the Kubernetes of each Cluster (the "target"), built from its kubeconfig
//! Secret and cached until the Secret changes.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kelp_crds::{Cluster, KubernetesMode};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};

use crate::context::{Error, Result};

/// The default key of a kubeconfig Secret.
pub const KUBECONFIG_KEY: &str = "value";

#[derive(Default)]
pub struct Targets {
    cache: Mutex<HashMap<String, (String, Client)>>,
}

/// Where a Cluster's kubeconfig lives: (Secret name, key).
pub fn kubeconfig_secret(cluster: &Cluster) -> Option<(String, String)> {
    match cluster.spec.kubernetes.mode {
        KubernetesMode::Existing => cluster
            .spec
            .kubernetes
            .kubeconfig_secret_ref
            .as_ref()
            .map(|r| (r.name.clone(), r.key.clone())),
        KubernetesMode::Provision => cluster
            .status
            .as_ref()
            .and_then(|s| s.kubeconfig_secret_ref.as_ref())
            .map(|r| (r.name.clone(), KUBECONFIG_KEY.to_string())),
    }
}

impl Targets {
    /// A client for `cluster`'s Kubernetes; Err(Target) while there is no kubeconfig yet.
    pub async fn client(&self, client: &Client, cluster: &Cluster) -> Result<Client> {
        let ns = cluster.namespace().unwrap_or_default();
        let (name, key) = kubeconfig_secret(cluster)
            .ok_or_else(|| Error::Target("the cluster has no kubeconfig yet".into()))?;
        let secret = Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt(&name)
            .await?
            .ok_or_else(|| Error::Target(format!("kubeconfig Secret {ns}/{name} not found")))?;
        let version = secret.resource_version().unwrap_or_default();
        let cache_key = format!("{ns}/{name}/{key}");
        if let Some((v, c)) = self.cache.lock().unwrap().get(&cache_key)
            && *v == version
        {
            return Ok(c.clone());
        }
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&key))
            .ok_or_else(|| {
                Error::Target(format!("kubeconfig Secret {ns}/{name} has no key {key:?}"))
            })?;
        let text = String::from_utf8_lossy(&bytes.0);
        let target = client_from_kubeconfig(&text).await?;
        self.cache
            .lock()
            .unwrap()
            .insert(cache_key, (version, target.clone()));
        Ok(target)
    }
}

/// A kube Client from kubeconfig text.
pub async fn client_from_kubeconfig(text: &str) -> Result<Client> {
    let kc = Kubeconfig::from_yaml(text)
        .map_err(|e| Error::Target(format!("invalid kubeconfig: {e}")))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Target(format!("unusable kubeconfig: {e}")))?;
    Client::try_from(config).map_err(|e| Error::Target(e.to_string()))
}
