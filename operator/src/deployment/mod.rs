//! The Deployment controller: a Module running on a Cluster.
//!
//! fetch (Module, Cluster, Secrets) -> validate (pool, image) -> build (recipe objects,
//! rclone and env Secrets) -> apply (server-side apply to the Cluster's Kubernetes, prune)
//! -> status (readiness and endpoint from that cluster).

pub mod build;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kelp_crds::condition_types as ct;
use kelp_crds::{Cluster, Deployment, DeploymentPhase, DeploymentStatus, Module};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::conditions;
use crate::context::{Ctx, Error, Result, reconcile_with_finalizer};
use build::{DEPLOYMENT_LABEL, NAMESPACE_LABEL};
use status::{Outcome, Rollout};

/// The finalizer kelp puts on Deployments: the workload is removed from the target first.
pub const FINALIZER: &str = "kelp.imagine-ai.eu/deployment";
/// The field manager of everything kelp applies.
pub const MANAGER: &str = crate::context::MANAGER;

/// Kinds kelp prunes on a target cluster when a recipe no longer renders them.
const PRUNED: &[(&str, &str, &str, &str)] = &[
    ("apps", "v1", "Deployment", "deployments"),
    ("", "v1", "Service", "services"),
    ("networking.k8s.io", "v1", "Ingress", "ingresses"),
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "ConfigMap", "configmaps"),
];

/// Runs the Deployment controller until `shutdown` resolves. Module and Cluster changes
/// re-reconcile the Deployments that reference them.
pub async fn run(
    ctx: Ctx,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Deployment> = Api::all(ctx.client.clone());
    let (store, deployments) = crate::context::main_watch(
        &ctx,
        "deployment",
        api,
        watcher::Config::default().any_semantic(),
    );
    let controller = Controller::for_stream(deployments, store.clone())
        .with_config(crate::context::controller_config());
    let by_module = store.clone();
    let by_cluster = store.clone();
    let by_secret = store;
    controller
        .watches(
            Api::<Module>::all(ctx.client.clone()),
            watcher::Config::default(),
            move |m: Module| {
                let (ns, name) = (m.namespace(), m.name_any());
                by_module
                    .state()
                    .into_iter()
                    .filter(|d| d.namespace() == ns && d.spec.module_ref.name == name)
                    .map(|d| ObjectRef::from_obj(d.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        // A Cluster's change that a Deployment reads; not each machine's progress.
        .reconcile_on(cluster_changes(&ctx).flat_map(move |(ns, name)| {
            let refs: Vec<ObjectRef<Deployment>> = by_cluster
                .state()
                .into_iter()
                .filter(|d| d.namespace() == ns && d.spec.cluster_ref.name == name)
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect();
            futures::stream::iter(refs)
        }))
        // Credentials created or rotated after the Deployment.
        .reconcile_on(ctx.secrets.subscribe().flat_map(move |(ns, name)| {
            let refs: Vec<ObjectRef<Deployment>> = by_secret
                .state()
                .into_iter()
                .filter(|d| d.namespace().as_deref() == Some(ns.as_str()) && uses_secret(d, &name))
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect();
            futures::stream::iter(refs)
        }))
        // A user recipe loaded, fixed or broken: everything may render differently.
        .reconcile_all_on(crate::recipes::changes(&ctx))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, crate::context::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                crate::context::log_controller_error("deployment", &e);
            }
        })
        .await;
}

/// What of a Cluster its Deployments read: its spec, whether it is being deleted, its
/// control plane's readiness, endpoint and kubeconfig Secret, and how many machines of
/// each pool run (room for workloads). A change of anything else (a machine's address
/// or state, the cloud's condition) wakes no Deployment.
fn cluster_fingerprint(c: &Cluster) -> String {
    let s = c.status.clone().unwrap_or_default();
    let pools: Vec<(String, i32)> = s
        .node_pools
        .iter()
        .map(|p| (p.name.clone(), p.ready))
        .collect();
    format!(
        "{:?}|{}|{}|{:?}|{:?}|{:?}|{:?}",
        c.metadata.generation,
        c.metadata.deletion_timestamp.is_some(),
        conditions::is_true(&s.conditions, ct::CONTROL_PLANE_READY),
        s.api_endpoint,
        s.kubeconfig_secret_ref.map(|r| r.name),
        s.ready,
        pools
    )
}

/// `(namespace, name)` of each Cluster whose [fingerprint](cluster_fingerprint) changed,
/// was created or was deleted.
fn cluster_changes(
    ctx: &Ctx,
) -> impl futures::Stream<Item = (Option<String>, String)> + Send + 'static {
    use kube::runtime::WatchStreamExt;
    let api = Api::<Cluster>::all(ctx.client.clone());
    let mut seen: std::collections::HashMap<(Option<String>, String), String> = Default::default();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let changed = match event {
                Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => {
                    let key = (c.namespace(), c.name_any());
                    let print = cluster_fingerprint(&c);
                    (seen.get(&key) != Some(&print)).then(|| {
                        seen.insert(key.clone(), print);
                        key
                    })
                }
                Ok(watcher::Event::Delete(c)) => {
                    let key = (c.namespace(), c.name_any());
                    seen.remove(&key);
                    Some(key)
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "Cluster watch for Deployments");
                    None
                }
            };
            std::future::ready(changed)
        })
}

/// Whether the Deployment reads the Secret `name` (storage credentials or env).
fn uses_secret(dep: &Deployment, name: &str) -> bool {
    dep.spec.storage.iter().any(|s| {
        s.webdav
            .as_ref()
            .is_some_and(|w| w.credentials_secret_ref.name == name)
    }) || dep.spec.env.iter().any(|e| {
        e.value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
            .is_some_and(|r| r.name == name)
    })
}

#[tracing::instrument(skip_all, fields(namespace = dep.namespace(), name = %dep.name_any(), generation = dep.metadata.generation))]
async fn reconcile(dep: Arc<Deployment>, ctx: Ctx) -> Result<Action> {
    let c = ctx.clone();
    crate::context::measured(
        &c,
        "deployment",
        reconcile_with_finalizer(dep, ctx, FINALIZER, apply, cleanup),
    )
    .await
}

/// What kind of wait a [`Blocked`] Deployment is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum Kind {
    /// Waiting for another object (a Module resolving, a Cluster booting): normal.
    Waiting,
    /// Needs a change from the user (Stalled).
    Stalled,
    /// The workload no longer runs anywhere (its Cluster is gone or going).
    Gone,
}

/// A reason the Deployment cannot go on yet, shown in its conditions.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Blocked {
    pub reason: String,
    pub message: String,
    pub kind: Kind,
}

fn blocked(reason: &str, message: impl Into<String>, kind: Kind) -> Blocked {
    Blocked {
        reason: reason.to_string(),
        message: message.into(),
        kind,
    }
}

fn waiting(reason: &str, message: impl Into<String>) -> Blocked {
    blocked(reason, message, Kind::Waiting)
}

fn stalled(reason: &str, message: impl Into<String>) -> Blocked {
    blocked(reason, message, Kind::Stalled)
}

/// The Deployment's Cluster is gone or being deleted, and the workload with it.
fn cluster_gone(reason: &str, message: String) -> Blocked {
    blocked(reason, message, Kind::Gone)
}

/// Why `deploy` stopped before the end: a condition to show, or an error to retry.
enum Stop {
    Blocked(Blocked),
    Failed(Error),
}

impl From<Blocked> for Stop {
    fn from(b: Blocked) -> Self {
        Stop::Blocked(b)
    }
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

impl From<kube::Error> for Stop {
    fn from(e: kube::Error) -> Self {
        Stop::Failed(e.into())
    }
}

async fn apply(dep: Arc<Deployment>, ctx: Ctx) -> Result<Action> {
    let mut status = dep.status.clone().unwrap_or_default();
    status.observed_generation = dep.metadata.generation;
    let outcome = match deploy(&dep, &ctx, &mut status).await {
        Ok(rollout) => Outcome::Rolled(rollout),
        Err(Stop::Blocked(b)) => Outcome::Blocked(b),
        // Retried with per-object backoff; a status write would wake the controller at once.
        Err(Stop::Failed(e)) => return Err(e),
    };
    let status = status::compute(&dep, status, &outcome);
    if let Outcome::Blocked(b) = &outcome
        && dep
            .status
            .as_ref()
            .and_then(|s| conditions::get(&s.conditions, ct::READY))
            .map(|c| c.reason.as_str())
            != Some(b.reason.as_str())
    {
        // Waiting for another object (a Module resolving, a Cluster booting) is
        // normal; only what needs the user's change is a Warning.
        ctx.event(
            dep.as_ref(),
            b.kind == Kind::Stalled,
            &b.reason,
            "Reconcile",
            b.message.clone(),
        )
        .await;
    }
    write_status(&ctx, &dep, status).await?;
    Ok(ctx.requeue(
        &crate::context::key(dep.as_ref()),
        status::requeue(&outcome),
    ))
}

/// Deploys: the workload's state, or why it cannot go on ([`Stop`]).
async fn deploy(
    dep: &Deployment,
    ctx: &Ctx,
    status: &mut DeploymentStatus,
) -> Result<Rollout, Stop> {
    let ns = dep.namespace().unwrap_or_default();
    let name = dep.name_any();
    let g = dep.metadata.generation;
    let module = Api::<Module>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&dep.spec.module_ref.name)
        .await?
        .ok_or_else(|| {
            waiting(
                "ModuleNotFound",
                format!(
                    "spec.moduleRef: Module {ns}/{} not found",
                    dep.spec.module_ref.name
                ),
            )
        })?;
    let cluster = Api::<Cluster>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&dep.spec.cluster_ref.name)
        .await?
        .ok_or_else(|| {
            cluster_gone(
                "ClusterNotFound",
                format!(
                    "spec.clusterRef: Cluster {ns}/{} not found; the workload runs nowhere",
                    dep.spec.cluster_ref.name
                ),
            )
        })?;
    if cluster.metadata.deletion_timestamp.is_some() {
        return Err(cluster_gone(
            "ClusterDeleting",
            format!(
                "Cluster {} is being deleted, and the workload with it",
                cluster.name_any()
            ),
        )
        .into());
    }
    let need = build::need(dep, &module);
    let pool = build::choose_pool(&cluster, dep.spec.node_pool.as_deref(), need)
        .map_err(|m| {
            blocked(
                "NoPoolFits",
                m,
                if dep.spec.node_pool.is_some() {
                    Kind::Stalled
                } else {
                    Kind::Waiting
                },
            )
        })?
        .clone();
    status.node_pool = Some(pool.name.clone());
    conditions::set(
        &mut status.conditions,
        ct::SCHEDULED,
        true,
        "PoolChosen",
        format!("node pool {}", pool.name),
        g,
    );
    let image = build::image(dep, &module, need).ok_or_else(|| {
        let why = module
            .status
            .as_ref()
            .and_then(|s| conditions::get(&s.conditions, ct::READY))
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "not resolved yet".into());
        waiting(
            "ModuleNotReady",
            format!("Module {}: {why}", module.name_any()),
        )
    })?;
    status.image = Some(image.clone());
    let cp_ready = cluster
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, ct::CONTROL_PLANE_READY));
    if !cp_ready {
        return Err(waiting(
            "ClusterNotReady",
            format!(
                "Cluster {}: waiting for its control plane",
                cluster.name_any()
            ),
        )
        .into());
    }
    let target = ctx.targets.client(&ctx.client, &cluster).await?;

    // Secrets first: copied credentials, then the objects that use them.
    let mut secrets: Vec<Value> = Vec::new();
    for s in dep.spec.storage.iter() {
        let Some(webdav) = &s.webdav else { continue };
        let field = format!("spec.storage[{}].webdav.credentialsSecretRef", s.name);
        let creds = read_secret(ctx, &ns, &webdav.credentials_secret_ref.name, &field).await?;
        let get = |k: &str| {
            creds.get(k).cloned().ok_or_else(|| {
                stalled(
                    "SecretKeyMissing",
                    format!(
                        "{field}: Secret {} has no key {k:?}",
                        webdav.credentials_secret_ref.name
                    ),
                )
            })
        };
        let (user, password) = (get("user")?, get("password")?);
        let secret_name = build::rclone_secret_name(&name, &s.name);
        let remote = s.name.to_uppercase().replace(['-', '.'], "_");
        let prefix = format!("RCLONE_CONFIG_{remote}_");
        // rclone obscure uses a random IV: keep the stored value while it still reveals to the password.
        let existing = Api::<Secret>::namespaced(target.clone(), &ns)
            .get_opt(&secret_name)
            .await
            .ok()
            .flatten();
        let pass_key = format!("{prefix}PASS");
        let obscured = existing
            .and_then(|s| s.data)
            .and_then(|d| {
                d.get(&pass_key)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            })
            .filter(|old| {
                kelp_recipes::rclone::reveal(old).ok().as_deref() == Some(password.as_str())
            })
            .unwrap_or_else(|| kelp_recipes::rclone::obscure(&password));
        let vendor = match webdav.vendor {
            kelp_crds::WebdavVendor::Nextcloud => "nextcloud",
            kelp_crds::WebdavVendor::Owncloud => "owncloud",
            kelp_crds::WebdavVendor::Other => "other",
        };
        secrets.push(secret(
            &secret_name,
            "Opaque",
            Some(
                [
                    (format!("{prefix}TYPE"), "webdav".to_string()),
                    (format!("{prefix}URL"), webdav.url.clone()),
                    (format!("{prefix}VENDOR"), vendor.to_string()),
                    (format!("{prefix}USER"), user),
                    (pass_key, obscured),
                ]
                .into(),
            ),
            None,
        ));
    }
    let mut env_values = BTreeMap::new();
    for (i, e) in dep.spec.env.iter().enumerate() {
        let Some(from) = &e.value_from else { continue };
        if let Some(r) = &from.secret_key_ref {
            let field = format!("spec.env[{i}].valueFrom.secretKeyRef");
            let data = read_secret(ctx, &ns, &r.name, &field).await?;
            let v = data.get(&r.key).cloned().ok_or_else(|| {
                stalled(
                    "SecretKeyMissing",
                    format!("{field}: Secret {} has no key {:?}", r.name, r.key),
                )
            })?;
            env_values.insert(build::env_key(&r.name, &r.key), v);
        } else if let Some(r) = &from.config_map_key_ref {
            let field = format!("spec.env[{i}].valueFrom.configMapKeyRef");
            let cm = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&r.name)
                .await?
                .ok_or_else(|| {
                    stalled(
                        "ConfigMapNotFound",
                        format!("{field}: ConfigMap {} not found", r.name),
                    )
                })?;
            let v = cm
                .data
                .unwrap_or_default()
                .get(&r.key)
                .cloned()
                .ok_or_else(|| {
                    stalled(
                        "ConfigMapKeyMissing",
                        format!("{field}: ConfigMap {} has no key {:?}", r.name, r.key),
                    )
                })?;
            env_values.insert(build::env_key(&r.name, &r.key), v);
        }
    }
    if !env_values.is_empty() {
        secrets.push(secret(
            &build::env_secret_name(&name),
            "Opaque",
            Some(env_values),
            None,
        ));
    }
    let mut pull = None;
    if let Some(r) = &module.spec.image.pull_secret_ref {
        let src = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&r.name)
            .await?
            .ok_or_else(|| {
                stalled(
                    "SecretNotFound",
                    format!(
                        "Module {} spec.image.pullSecretRef: Secret {} not found",
                        module.name_any(),
                        r.name
                    ),
                )
            })?;
        let pull_name = format!("{name}-pull");
        secrets.push(secret(
            &pull_name,
            src.type_.as_deref().unwrap_or("Opaque"),
            None,
            src.data,
        ));
        pull = Some(pull_name);
    }

    let mut wctx = build::workload_context(dep, &module, &pool, need, image, pull);
    // Pool names repeat across Clusters that share one Kubernetes: pin this Cluster's Nodes.
    wctx.node_selector.insert(
        crate::simulated::NODE_CLUSTER_LABEL.to_string(),
        cluster.uid().unwrap_or_default(),
    );
    let recipe = kelp_recipes::RecipeUse {
        name: dep.spec.recipe.clone(),
        inputs: BTreeMap::new(),
    };
    let objects = ctx
        .recipes
        .check([recipe.name.as_str()])
        .and_then(|()| ctx.recipes.catalog().render_workload(&recipe, &wctx))
        .map_err(|e| {
            stalled(
                "RecipeError",
                format!("spec.recipe {}: {e}", dep.spec.recipe),
            )
        })?;

    let objects: Vec<Value> = secrets
        .into_iter()
        .chain(objects)
        .map(|mut obj| {
            obj["metadata"]["namespace"] = json!(ns);
            let mut labels = obj["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            labels.insert(DEPLOYMENT_LABEL.into(), json!(name));
            labels.insert(NAMESPACE_LABEL.into(), json!(ns));
            labels.insert("app.kubernetes.io/managed-by".into(), json!("kelp"));
            obj["metadata"]["labels"] = Value::Object(labels);
            obj
        })
        .collect();
    // Never take over what kelp did not create: every object is checked before any is
    // applied, and only objects carrying this Deployment's labels are ever pruned.
    let owned = owned(&target, &ns, &name).await?;
    for obj in &objects {
        if !owned.contains(&object_id(obj))
            && let Some(what) = foreign(&target, obj).await?
        {
            return Err(stalled("ObjectNotOwned", format!(
                    "{what} already exists in Cluster {} and kelp did not create it (it lacks the label {DEPLOYMENT_LABEL}={name}): kelp neither changes nor deletes it; rename the Deployment or remove that object",
                    cluster.name_any()
                )).into());
        }
    }
    ensure_namespace(&target, &ns).await?;
    let mut applied = BTreeSet::new();
    for obj in &objects {
        applied.insert(server_side_apply(&target, obj).await?);
    }
    prune(&target, &ns, &owned, &applied).await?;

    // Readiness and endpoint from the target cluster.
    let workload = Api::<AppsDeployment>::namespaced(target.clone(), &ns)
        .get_opt(&name)
        .await?;
    let st = workload
        .as_ref()
        .and_then(|w| w.status.clone())
        .unwrap_or_default();
    let observed = workload
        .as_ref()
        .is_some_and(|w| st.observed_generation >= w.metadata.generation);
    status.replicas = dep.spec.replicas.max(0);
    status.ready_replicas = if observed {
        st.ready_replicas.unwrap_or(0)
    } else {
        0
    };
    status.endpoint = build::endpoint(&cluster, &wctx);
    let unavailable = st
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("False"))
        .and_then(|c| c.message);
    let ready = observed && status.ready_replicas >= status.replicas;
    Ok(Rollout {
        ready,
        why_not: if ready { None } else { unavailable },
    })
}

/// A Secret kelp copies to the target cluster, as the JSON the recipes' objects are.
fn secret(
    name: &str,
    type_: &str,
    string_data: Option<BTreeMap<String, String>>,
    data: Option<BTreeMap<String, k8s_openapi::ByteString>>,
) -> Value {
    let s = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        type_: Some(type_.to_string()),
        string_data,
        data,
        ..Default::default()
    };
    serde_json::to_value(s).expect("a Secret serializes")
}

async fn read_secret(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    field: &str,
) -> Result<BTreeMap<String, String>, Stop> {
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await?
        .ok_or_else(|| {
            stalled(
                "SecretNotFound",
                format!("{field}: Secret {ns}/{name} not found"),
            )
        })?;
    Ok(crate::targets::secret_data(&secret))
}

async fn ensure_namespace(target: &Client, ns: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(target.clone());
    if api.get_opt(ns).await?.is_none() {
        let obj = k8s_openapi::api::core::v1::Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(ns.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.patch(
            ns,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await?;
    }
    Ok(())
}

fn api_resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = PRUNED
        .iter()
        .find(|(g, v, k, _)| *g == group && *v == version && *k == kind)
        .map(|(_, _, _, p)| p.to_string())
        .unwrap_or_else(|| format!("{}s", kind.to_lowercase()));
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural)
}

/// `apiVersion/kind/name` of a manifest.
fn object_id(obj: &Value) -> String {
    format!(
        "{}/{}/{}",
        obj["apiVersion"].as_str().unwrap_or_default(),
        obj["kind"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// The API, kind and name an `apiVersion/kind/name` id points to.
fn api_for_id(target: &Client, ns: &str, id: &str) -> (Api<DynamicObject>, String) {
    let mut parts = id.rsplitn(3, '/');
    let name = parts.next().unwrap_or_default().to_string();
    let kind = parts.next().unwrap_or_default();
    let api_version = parts.next().unwrap_or_default();
    let ar = api_resource(api_version, kind);
    (Api::namespaced_with(target.clone(), ns, &ar), name)
}

/// Server-side applies `obj` with field manager `kelp`; returns `apiVersion/kind/name`.
async fn server_side_apply(target: &Client, obj: &Value) -> Result<String> {
    let id = object_id(obj);
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let (api, name) = api_for_id(target, ns, &id);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await?;
    tracing::debug!(%id, ns, "applied");
    Ok(id)
}

/// `Kind namespace/name` when `obj` exists on the target without being kelp's.
async fn foreign(target: &Client, obj: &Value) -> Result<Option<String>> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let (api, name) = api_for_id(target, ns, &object_id(obj));
    Ok(api
        .get_opt(&name)
        .await?
        .map(|_| format!("{} {ns}/{name}", obj["kind"].as_str().unwrap_or_default())))
}

/// What kelp applied for this Deployment, found by its labels: `apiVersion/kind/name`.
async fn owned(target: &Client, ns: &str, name: &str) -> Result<BTreeSet<String>> {
    let selector = format!("{DEPLOYMENT_LABEL}={name},{NAMESPACE_LABEL}={ns}");
    let mut out = BTreeSet::new();
    for (group, version, kind, _) in PRUNED {
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        let ar = api_resource(&api_version, kind);
        let api: Api<DynamicObject> = Api::namespaced_with(target.clone(), ns, &ar);
        for obj in api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
        {
            out.insert(format!("{api_version}/{kind}/{}", obj.name_any()));
        }
    }
    Ok(out)
}

/// Deletes the objects kelp applied for this Deployment earlier (`owned`) that the recipe
/// no longer renders (not in `keep`).
async fn prune(
    target: &Client,
    ns: &str,
    owned: &BTreeSet<String>,
    keep: &BTreeSet<String>,
) -> Result<usize> {
    let mut deleted = 0;
    for id in owned.difference(keep) {
        tracing::debug!(%id, "pruning");
        let (api, name) = api_for_id(target, ns, id);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(deleted)
}

async fn write_status(ctx: &Ctx, dep: &Deployment, mut status: DeploymentStatus) -> Result<()> {
    conditions::ensure_ready(&mut status.conditions, status.observed_generation);
    if dep.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let old = dep
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let became_ready = conditions::became_true(&old, &status.conditions, ct::READY);
    let note = format!(
        "{} replicas ready at {}",
        status.ready.as_deref().unwrap_or_default(),
        status.endpoint.as_deref().unwrap_or("no endpoint")
    );
    let degraded = status.phase == Some(DeploymentPhase::Degraded)
        && dep.status.as_ref().and_then(|s| s.phase) != Some(DeploymentPhase::Degraded);
    crate::context::apply_status(ctx, dep, &status).await?;
    if became_ready {
        ctx.event(dep, false, "Ready", "Reconcile", note).await;
    }
    if degraded {
        let why = conditions::get(&status.conditions, ct::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.event(
            dep,
            true,
            "Degraded",
            "Reconcile",
            format!("no longer ready: {why}"),
        )
        .await;
    }
    Ok(())
}

/// Removes the workload from the target cluster. A Cluster that is gone (or has no
/// Kubernetes yet) has nothing left to remove.
async fn cleanup(dep: Arc<Deployment>, ctx: Ctx) -> Result<Action> {
    let ns = dep.namespace().unwrap_or_default();
    // Deleting, for as long as the workload takes to go (or its Cluster to answer).
    let mut status = dep.status.clone().unwrap_or_default();
    status.phase = Some(DeploymentPhase::Deleting);
    write_status(&ctx, &dep, status).await?;
    let cluster = Api::<Cluster>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&dep.spec.cluster_ref.name)
        .await?;
    if let Some(cluster) = cluster
        && let Ok(target) = ctx.targets.client(&ctx.client, &cluster).await
    {
        let pruned = match owned(&target, &ns, &dep.name_any()).await {
            Ok(owned) => prune(&target, &ns, &owned, &BTreeSet::new()).await,
            Err(e) => Err(e),
        };
        match pruned {
            Ok(n) => {
                if n > 0 {
                    ctx.event(
                        dep.as_ref(),
                        false,
                        "WorkloadDeleted",
                        "Delete",
                        format!("deleted {n} object(s) from Cluster {}", cluster.name_any()),
                    )
                    .await;
                }
            }
            // An unreachable cluster that is itself being deleted takes the workload with it.
            Err(e) if cluster.metadata.deletion_timestamp.is_some() => {
                tracing::info!(error = %e, "cluster going away")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Action::await_change())
}
