//! Every object a workload recipe renders is the Kubernetes object it claims to be:
//! it deserializes into its k8s-openapi type without losing a field, and kelp's test
//! API server (`tests/testapi`, in-process on 127.0.0.1) accepts it with a server-side
//! apply using `fieldValidation=Strict`.
//!
//! The test server validates custom resources against their CRD schemas but stores
//! built-in kinds schemaless, so the k8s-openapi round trip is the check of the
//! fields; the server checks the request as a whole (GVK known and served, namespaced,
//! names, server-side apply semantics).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kelp_recipes::{Catalog, ExposeInfo, RecipeUse, StorageInfo, WorkloadContext};
use kube::api::{
    Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams, ValidationDirective,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn fixture(name: &str) -> WorkloadContext {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The workload contexts: the GPU and CPU fixtures, a CPU module with storage, a UI
/// port and a public expose on a third port without host, and a GPU module that is
/// not exposed at all.
fn contexts() -> Vec<(String, WorkloadContext, RecipeUse)> {
    let gpu = fixture("workload-gpu.yaml");
    let cpu = fixture("workload-cpu.yaml");

    let mut cpu_public = cpu.clone();
    cpu_public.name = "text-classifier-public".into();
    cpu_public.labels.insert(
        "kelp.imagine-ai.eu/deployment".into(),
        cpu_public.name.clone(),
    );
    cpu_public.ui_port = Some(8888);
    cpu_public.storage = vec![StorageInfo {
        name: "rshare".into(),
        mount_path: "/storage".into(),
        read_only: true,
        config_secret: "text-classifier-public-rclone-rshare".into(),
    }];
    cpu_public.expose = Some(ExposeInfo {
        port: 9000,
        path: "/text".into(),
        public: true,
        host: None,
    });
    cpu_public.command = Some(vec!["python".into(), "-m".into(), "serve".into()]);
    cpu_public.args = Some(vec![]);

    let mut gpu_private = gpu.clone();
    gpu_private.name = "fish-detector-private".into();
    gpu_private.labels.insert(
        "kelp.imagine-ai.eu/deployment".into(),
        gpu_private.name.clone(),
    );
    gpu_private.expose = None;
    gpu_private.ui_port = None;
    gpu_private.image_pull_secret = None;
    gpu_private.gpu = 4;

    let default = RecipeUse::new("deepaas-inference");
    let tuned = RecipeUse::new("deepaas-inference")
        .with_input("ingressClassName", "nginx")
        .with_input("startupSeconds", 1200)
        .with_input("rcloneImage", "registry.example.org/rclone:1.68.2");
    vec![
        ("gpu".into(), gpu, default.clone()),
        ("cpu".into(), cpu, default.clone()),
        ("cpu-public".into(), cpu_public, tuned.clone()),
        ("gpu-private".into(), gpu_private, default),
    ]
}

/// `v` without `null` values (k8s-openapi omits absent fields; a server-side apply
/// treats `null` as "not set").
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), strip_nulls(x)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Whether `have` holds everything in `want` (the server adds defaults such as a
/// Service's clusterIP).
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(a, b)| contains(a, b))
        }
        (h, w) => h == w,
    }
}

/// Deserializes as `T` with no unknown field and no field that changes on the way
/// back: the round trip gives the same JSON.
fn strict_roundtrip<T: DeserializeOwned + Serialize>(what: &str, obj: &Value) {
    let typed: T = serde_path_to_error::deserialize(obj.clone())
        .unwrap_or_else(|e| panic!("{what}: {}: {}", e.path(), e.inner()));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        back,
        strip_nulls(obj),
        "{what}: fields were lost or changed in the k8s-openapi round trip"
    );
}

fn check_type(what: &str, obj: &Value) {
    match (
        obj["apiVersion"].as_str().unwrap(),
        obj["kind"].as_str().unwrap(),
    ) {
        ("apps/v1", "Deployment") => strict_roundtrip::<Deployment>(what, obj),
        ("v1", "Service") => strict_roundtrip::<Service>(what, obj),
        ("networking.k8s.io/v1", "Ingress") => strict_roundtrip::<Ingress>(what, obj),
        ("v1", "Secret") => strict_roundtrip::<Secret>(what, obj),
        ("v1", "ConfigMap") => strict_roundtrip::<ConfigMap>(what, obj),
        ("v1", "PersistentVolumeClaim") => strict_roundtrip::<PersistentVolumeClaim>(what, obj),
        (api, kind) => panic!("{what}: the built-in recipes render no {api} {kind}"),
    }
}

async fn client_for(server: &kelp_testapi::TestApiServer) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_workload_objects_are_accepted_with_strict_field_validation() {
    let server = kelp_testapi::TestApiServer::start().await.unwrap();
    let client = client_for(&server).await;
    let catalog = Catalog::builtin();
    let strict = PatchParams {
        field_manager: Some("kelp".into()),
        field_validation: Some(ValidationDirective::Strict),
        ..PatchParams::default()
    };

    let mut kinds = std::collections::BTreeSet::new();
    for (what, ctx, recipe) in contexts() {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        if namespaces.get_opt(&ctx.namespace).await.unwrap().is_none() {
            let ns: Namespace =
                serde_json::from_value(json!({"metadata": {"name": ctx.namespace}})).unwrap();
            namespaces
                .create(&PostParams::default(), &ns)
                .await
                .unwrap();
        }
        let objects = catalog.render_workload(&recipe, &ctx).unwrap();
        assert!(objects.len() >= 2, "{what}: {objects:?}");
        for obj in &objects {
            let api_version = obj["apiVersion"].as_str().unwrap();
            let kind = obj["kind"].as_str().unwrap();
            let name = obj["metadata"]["name"].as_str().unwrap();
            let label = format!("{what}: {kind}/{name}");
            check_type(&label, obj);
            kinds.insert(kind.to_string());

            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let (resource, caps) = kube::discovery::pinned_kind(&client, &gvk)
                .await
                .unwrap_or_else(|e| panic!("{label}: not served: {e}"));
            assert_eq!(
                caps.scope,
                kube::discovery::Scope::Namespaced,
                "{label}: the renderer sets a namespace, so the kind must be namespaced"
            );
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &ctx.namespace, &resource);
            let applied = api
                .patch(name, &strict, &Patch::Apply(obj))
                .await
                .unwrap_or_else(|e| panic!("{label}: server-side apply refused: {e}"));
            let stored = serde_json::to_value(&applied).unwrap();
            for field in ["spec", "data", "stringData"] {
                if !obj[field].is_null() {
                    assert!(
                        contains(&stored[field], &strip_nulls(&obj[field])),
                        "{label}: the server stored a different {field}:\n{}\nsent:\n{}",
                        stored[field],
                        obj[field]
                    );
                }
            }
            assert_eq!(stored["metadata"]["labels"], obj["metadata"]["labels"]);

            // Applying the same object again changes nothing.
            let again = api.patch(name, &strict, &Patch::Apply(obj)).await.unwrap();
            assert_eq!(
                again.metadata.resource_version, applied.metadata.resource_version,
                "{label}: re-applying the same object changed it"
            );
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["Deployment", "Ingress", "Service"]
    );
    server.shutdown().await;
}
