//! Clients for the Kubernetes of each Cluster (the "target"), built from its kubeconfig
//! Secret and cached until the Secret changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kelp_crds::{Cluster, KubernetesMode};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};

use crate::context::{Error, Result};

/// The default key of a kubeconfig Secret.
pub const KUBECONFIG_KEY: &str = "value";

#[derive(Default)]
pub struct Targets {
    /// By Secret and key: the Secret's version the client was built from, the client,
    /// and [`Targets::identity`]'s answer for it.
    cache: Mutex<HashMap<String, (String, Client, String)>>,
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
    /// The Secret is read only when the client cached for it was built from another
    /// version than the one `secrets` last watched (or the watch has not seen it).
    pub async fn client(
        &self,
        client: &Client,
        secrets: &crate::secrets::SecretChanges,
        cluster: &Cluster,
    ) -> Result<Client> {
        let ns = cluster.namespace().unwrap_or_default();
        if let Some((name, key)) = kubeconfig_secret(cluster)
            && let Some(watched) = secrets.version(&ns, &name)
            && let Some((v, c, _)) = self
                .cache
                .lock()
                .unwrap()
                .get(&cache_key(&format!("{ns}/{name}"), &key))
            && *v == watched
        {
            return Ok(c.clone());
        }
        let kc = read(client, cluster).await?;
        self.client_for(&kc).await
    }

    /// A client from an already read kubeconfig Secret, cached until the Secret changes.
    /// The cache key is everything the client is built from: the Secret, the key, and
    /// (compared on use) the Secret's resourceVersion. Two Clusters reading one Secret
    /// with different keys get different clients.
    pub async fn client_for(&self, kc: &KubeconfigSecret) -> Result<Client> {
        let cache_key = cache_key(&kc.id, &kc.key);
        if let Some((v, c, _)) = self.cache.lock().unwrap().get(&cache_key)
            && *v == kc.version
        {
            return Ok(c.clone());
        }
        let text = kc.kubeconfig().ok_or_else(|| {
            Error::Kubeconfig(format!(
                "kubeconfig Secret {} has no key {:?} (its keys: {})",
                kc.id,
                kc.key,
                kc.data.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let target = client_from_kubeconfig(text).await.map_err(|e| match e {
            Error::Kubeconfig(why) => Error::Kubeconfig(format!(
                "kubeconfig Secret {} key {:?}: {why}",
                kc.id, kc.key
            )),
            other => other,
        })?;
        let identity = hex::encode(Sha256::digest(text.as_bytes()));
        self.cache
            .lock()
            .unwrap()
            .insert(cache_key, (kc.version.clone(), target.clone(), identity));
        Ok(target)
    }

    /// Which Kubernetes, seen with which credentials, the client last built for
    /// `cluster` talks to: a digest of its kubeconfig, equal for Clusters whose
    /// kubeconfigs are the same (then one set of watches serves them all). None before a
    /// client was built for it.
    pub fn identity(&self, cluster: &Cluster) -> Option<String> {
        let ns = cluster.namespace().unwrap_or_default();
        let (name, key) = kubeconfig_secret(cluster)?;
        self.cache
            .lock()
            .unwrap()
            .get(&cache_key(&format!("{ns}/{name}"), &key))
            .map(|(_, _, identity)| identity.clone())
    }
}

/// The cache's key of a client: the Secret (`namespace/name`) and its key.
fn cache_key(secret: &str, key: &str) -> String {
    format!("{secret}#{key}")
}

/// A Cluster's kubeconfig Secret, as read.
pub struct KubeconfigSecret {
    /// `namespace/name`.
    pub id: String,
    /// The key holding the kubeconfig.
    pub key: String,
    pub version: String,
    pub data: BTreeMap<String, String>,
}

impl KubeconfigSecret {
    /// The kubeconfig text, when the key is there.
    pub fn kubeconfig(&self) -> Option<&str> {
        self.data.get(&self.key).map(String::as_str)
    }
}

/// Reads `cluster`'s kubeconfig Secret; Err(Target) while there is none.
pub async fn read(client: &Client, cluster: &Cluster) -> Result<KubeconfigSecret> {
    let ns = cluster.namespace().unwrap_or_default();
    let (name, key) = kubeconfig_secret(cluster)
        .ok_or_else(|| Error::Target("the cluster has no kubeconfig yet".into()))?;
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await?
        .ok_or_else(|| Error::Target(format!("kubeconfig Secret {ns}/{name} not found")))?;
    Ok(KubeconfigSecret {
        id: format!("{ns}/{name}"),
        key,
        version: secret.resource_version().unwrap_or_default(),
        data: secret_data(&secret),
    })
}

/// A Secret's data and stringData as text.
pub fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    out.extend(secret.string_data.clone().unwrap_or_default());
    out
}

/// A kube Client from kubeconfig text. A text that is not a kubeconfig is an
/// `Error::Kubeconfig` naming the line, never quoting the text (it holds credentials).
pub async fn client_from_kubeconfig(text: &str) -> Result<Client> {
    let kc = parse_kubeconfig(text).map_err(Error::Kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(format!("unusable kubeconfig: {e}")))?;
    Client::try_from(config).map_err(|e| Error::Target(e.to_string()))
}

/// Parses a kubeconfig; the error says where, not what (parsers quote the text they
/// trip over, and a kubeconfig's text is a credential).
pub fn parse_kubeconfig(text: &str) -> std::result::Result<Kubeconfig, String> {
    let at = |e: &serde_yaml_ng::Error| {
        e.location()
            .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
            .unwrap_or_default()
    };
    serde_yaml_ng::from_str::<Kubeconfig>(text).map_err(|e| {
        let kind = if serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).is_ok() {
            "not a kubeconfig"
        } else {
            "not valid YAML"
        };
        format!("{kind}{} (content not shown)", at(&e))
    })
}

/// A kubeconfig for a server at `url`, with a token, for unit tests.
#[cfg(test)]
pub(crate) fn test_kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{url}\"}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_secret_is_read_again_only_when_its_watched_version_moved() {
        let cluster: Cluster = serde_yaml_ng::from_str(
            "apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Cluster\nmetadata: {name: c, namespace: ns}\nspec:\n  cloud: {sim: {}}\n  kubernetes: {mode: Existing, kubeconfigSecretRef: {name: kc, key: value}}\n  nodePools: []\n",
        )
        .unwrap();
        // kelp's own API server is unreachable: a read of the Secret fails.
        let unreachable = client_from_kubeconfig(&test_kubeconfig("https://127.0.0.1:9"))
            .await
            .unwrap();
        let targets = Targets::default();
        let secrets = crate::secrets::SecretChanges::default();
        let kc = KubeconfigSecret {
            id: "ns/kc".into(),
            key: "value".into(),
            version: "5".into(),
            data: [("value".to_string(), test_kubeconfig("https://127.0.0.1:10"))].into(),
        };
        targets.client_for(&kc).await.unwrap();
        // Not watched yet: read.
        assert!(
            targets
                .client(&unreachable, &secrets, &cluster)
                .await
                .is_err()
        );
        // Watched at the version the client was built from: no read.
        secrets.saw(("ns".into(), "kc".into()), "5".into());
        targets
            .client(&unreachable, &secrets, &cluster)
            .await
            .unwrap();
        // The Secret changed: read again.
        secrets.saw(("ns".into(), "kc".into()), "6".into());
        assert!(
            targets
                .client(&unreachable, &secrets, &cluster)
                .await
                .is_err()
        );
    }
}
