//! `kelp dev`: a whole kelp on one laptop. The Kubernetes-API test server, kelp's CRDs,
//! and the operator with the simulated cloud, in one process.

#[cfg(feature = "dev")]
use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
#[cfg(feature = "dev")]
use kelp_testapi::{Config as ApiConfig, TestApiServer};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

/// Server-side applies one manifest as field manager `manager`: a namespaced object goes to
/// its own `metadata.namespace`, else to `namespace`; a cluster-scoped kind (Namespace,
/// ClusterRole, ClusterRoleBinding, CRD) to the cluster. The plural is the lowercased kind
/// plus "s".
pub async fn apply_manifest(
    client: &Client,
    namespace: &str,
    manager: &str,
    doc: &serde_json::Value,
) -> Result<(), kube::Error> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    const CLUSTER_SCOPED: &[&str] = &[
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Node",
    ];
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()));
    let api: Api<DynamicObject> = if CLUSTER_SCOPED.contains(&kind) {
        Api::all_with(client.clone(), &ar)
    } else {
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or(namespace);
        Api::namespaced_with(client.clone(), ns, &ar)
    };
    api.patch(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(doc),
    )
    .await?;
    Ok(())
}

/// Installs (server-side applies) kelp's CRDs and waits until they are served.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kelp_crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply(crate::context::MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await?;
    }
    for crd in kelp_crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = |c: &CustomResourceDefinition| {
            c.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        };
        for _ in 0..100 {
            if established(&api.get(&name).await?) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Starts the test API server on `127.0.0.1:port` (0: any free port), writes its kubeconfig
/// to `kubeconfig`, installs the CRDs. Returns the server and a client for it.
#[cfg(feature = "dev")]
pub async fn start(port: u16, kubeconfig: &Path) -> anyhow::Result<(TestApiServer, Client)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let server = TestApiServer::start_with(ApiConfig::default(), addr)
        .await
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                " (another kelp dev may be running; choose another port with --port)"
            } else {
                ""
            };
            anyhow::anyhow!("kelp dev cannot listen on {addr}: {e}{hint}")
        })?;
    std::fs::write(kubeconfig, server.kubeconfig())?;
    let client = crate::targets::client_from_kubeconfig(&server.kubeconfig())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    install_crds(&client).await?;
    // kelp dev's own Kubernetes schedules the workloads of sim Clusters that join it.
    crate::sim_kube::spawn_kubelet(client.clone());
    // Where users' recipe ConfigMaps go.
    let ns = crate::context::Config::default().namespace;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let obj =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    namespaces
        .patch(
            &ns,
            &PatchParams::apply(crate::context::MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await?;
    Ok((server, client))
}

/// A kube config from kubeconfig text.
#[cfg(feature = "dev")]
async fn config_of(text: &str) -> anyhow::Result<kube::Config> {
    let kc = crate::targets::parse_kubeconfig(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
}

/// Starts kelp dev's web console on `listen` (default 127.0.0.1:8090, else any free
/// port); returns its URL.
/// - Without `oidc`: one local user, `dev`, in namespace `default`, with the admin's
///   credentials (`kelp console --dev-user dev`).
/// - With `oidc`: users log in there. The console runs as the ServiceAccount
///   `kelp-console`, which may only impersonate; kelp dev, as the administrator, makes
///   each user's namespace and RoleBinding at their first login.
#[cfg(feature = "dev")]
pub async fn console(
    server: &TestApiServer,
    admin: &Client,
    listen: Option<std::net::SocketAddr>,
    oidc: Option<crate::console::auth::OidcConfig>,
    namespace_mode: crate::console::NamespaceMode,
    namespace_prefix: &str,
) -> anyhow::Result<String> {
    use crate::console::{AuthMode, ConsoleConfig, rbac};
    for role in rbac::cluster_roles() {
        apply_manifest(admin, "default", crate::context::MANAGER, &role).await?;
    }
    let (auth, base, provisioner) = match oidc {
        None => (
            AuthMode::Dev {
                user: "dev".into(),
                namespace: "default".into(),
            },
            config_of(&server.kubeconfig()).await?,
            None,
        ),
        Some(oidc) => {
            let ns = crate::context::Config::default().namespace;
            let docs = [
                serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": rbac::CONSOLE_ROLE, "namespace": ns}}),
                serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": rbac::CONSOLE_ROLE},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac::CONSOLE_ROLE},
                    "subjects": [{"kind": "ServiceAccount", "name": rbac::CONSOLE_ROLE, "namespace": ns}]}),
            ];
            for doc in &docs {
                apply_manifest(admin, &ns, crate::context::MANAGER, doc).await?;
            }
            let req = axum::http::Request::builder()
                .method("POST")
                .uri(format!(
                    "/api/v1/namespaces/{ns}/serviceaccounts/{}/token",
                    rbac::CONSOLE_ROLE
                ))
                .header("content-type", "application/json")
                .body(
                    serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
                        .to_string()
                        .into_bytes(),
                )?;
            let out: serde_json::Value = admin.request(req).await?;
            let token = out["status"]["token"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("the TokenRequest for the console gave no token"))?;
            let kc = kelp_testapi::kubeconfig_for(&server.url(), server.ca_pem(), token);
            (
                AuthMode::Oidc(oidc),
                config_of(&kc).await?,
                Some(admin.clone()),
            )
        }
    };
    // The default port, else any: a second kelp dev on this machine still starts.
    let listen = match listen {
        Some(l) => l,
        None => match std::net::TcpListener::bind(("127.0.0.1", 8090)) {
            Ok(_) => std::net::SocketAddr::from(([127, 0, 0, 1], 8090)),
            Err(_) => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        },
    };
    let config = ConsoleConfig {
        listen,
        public_url: String::new(),
        auth,
        namespace_mode,
        namespace_prefix: namespace_prefix.to_string(),
        catalogue_namespace: Some("default".into()),
        allow_sim: true,
    };
    let addr = crate::console::spawn(config, base, provisioner).await?;
    Ok(format!("http://{addr}"))
}

/// What to try next, printed once kelp dev is up.
#[cfg(feature = "dev")]
pub fn banner(url: &str, kubeconfig: &Path, console: &str) -> String {
    let kc = kubeconfig.display();
    format!(
        "kelp dev is running: Kubernetes API (test server) at {url}, simulated cloud, operator.\n\
         Web console: {console}\n\
         \n\
         Try:\n\
         \x20 export KUBECONFIG={kc}\n\
         \x20 kubectl apply -f examples/\n\
         \x20 kubectl get kelp\n\
         \x20 kubectl get kdep -w\n\
         \x20 kubectl wait --for=condition=Ready deployment.kelp.imagine-ai.eu/fish-detector --timeout=120s\n\
         \x20 kubectl describe kcl sim-gpu\n\
         \n\
         The sim Cluster's own Kubernetes (its nodes and the module's workload):\n\
         \x20 kubectl get secret sim-gpu-kubeconfig -o jsonpath='{{.data.value}}' | base64 -d > sim-gpu.kubeconfig\n\
         \x20 kubectl --kubeconfig sim-gpu.kubeconfig get nodes,deployments -A\n\
         \n\
         Everything is in memory and simulated; Ctrl-C stops it.\n"
    )
}
