//! The Deployment controller: a Module running on a Cluster.
//!
//! Each reconcile is four steps:
//! - dereference: the Module, the Cluster, the Secrets and ConfigMaps the spec names, and
//!   what kelp left on the Cluster's Kubernetes, in one [`Observed`];
//! - plan (pure, [`plan::plan`]): the pool, the image, the objects to apply (recipe
//!   objects, rclone and env Secrets), or why it cannot go on;
//! - apply: the ownership check, server-side apply to the Cluster's Kubernetes, prune;
//! - status (pure, [`status::compute`]): readiness and endpoint from that cluster.

pub mod build;
pub mod placement;
pub mod plan;
pub mod status;
mod workloads;

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
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::conditions;
use crate::context::{Ctx, Error, Result, reconcile_with_finalizer};
use build::{DEPLOYMENT_LABEL, NAMESPACE_LABEL};
pub use plan::{Blocked, Kind};
use plan::{Observed, Plan, Readiness, Work};
use status::Outcome;

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
    // Each Deployment seen also tells the Cluster it runs on, whose pools may follow demand.
    let seen = ctx.clone();
    let deployments = deployments.inspect(move |d| {
        if let Ok(d) = d {
            seen.demand.saw(d);
        }
    });
    let controller = Controller::for_stream(deployments, store.clone())
        .with_config(crate::context::controller_config());
    // The Module and Cluster caches the reconcile reads: each is written by the watch
    // that wakes the Deployments, before the wake, so a woken reconcile reads what woke
    // it.
    let (modules, module_cache) = reflector::store();
    let (clusters, cluster_cache) = reflector::store();
    let (workloads, workload_wakes) = workloads::Workloads::new();
    ctx.demand.share(store.clone(), modules.clone());
    let views = Views {
        modules,
        clusters,
        workloads: workloads.clone(),
    };
    let modules_synced = ctx.demand.modules_synced_flag();
    let module_changes = watcher(
        Api::<Module>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(crate::context::trim)
    .reflect(module_cache)
    .inspect(move |e| {
        if let Ok(watcher::Event::InitDone) = e {
            modules_synced.store(true, std::sync::atomic::Ordering::Release);
        }
    })
    .applied_objects();
    let by_module = store.clone();
    let by_cluster = store.clone();
    let by_secret = store;
    controller
        .watches_stream(module_changes, move |m: Module| {
            let (ns, name) = (m.namespace(), m.name_any());
            by_module
                .state()
                .into_iter()
                .filter(|d| d.namespace() == ns && d.spec.module_ref.name == name)
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>()
        })
        // A Cluster's change that a Deployment reads (its own pool's Ready machines, not
        // the other pools'); not each machine's progress. A workload already applied
        // and watched on the target learns of new machines from the target itself (its
        // status changes once they take it).
        .reconcile_on(
            cluster_changes(&ctx, cluster_cache, workloads.clone()).flat_map(
                move |(ns, name, uid, woken)| {
                    let refs: Vec<ObjectRef<Deployment>> = by_cluster
                        .state()
                        .into_iter()
                        .filter(|d| {
                            d.namespace() == ns
                                && d.spec.candidates().contains(&name.as_str())
                                && concerns(d, &woken)
                        })
                        .map(|d| ObjectRef::from_obj(d.as_ref()))
                        .filter(|d| woken == Woken::All || !workloads.follows(&uid, d))
                        .collect();
                    futures::stream::iter(refs)
                },
            ),
        )
        // Its workload's readiness changed on the target.
        .reconcile_on(futures::stream::unfold(
            workload_wakes,
            |mut rx| async move { rx.recv().await.map(|dep| (dep, rx)) },
        ))
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
        .run(
            move |dep, ctx| reconcile(dep, ctx, views.clone()),
            crate::context::error_policy,
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                crate::context::log_controller_error("deployment", &e);
            }
        })
        .await;
}

/// What of a Cluster its Deployments read: its spec, whether it is being deleted, its
/// control plane's readiness, endpoint and kubeconfig Secret, whether it is Stalled or
/// short of capacity (placement passes it over then) (`common`), and, once the
/// control plane is ready, how many machines of each pool are Ready (room for
/// workloads). A change of anything else (a machine's address or state, the cloud's
/// condition, machines joining before there is a control plane) wakes no Deployment.
#[derive(Clone, Debug, PartialEq)]
struct ClusterView {
    common: String,
    pools: BTreeMap<String, i32>,
}

fn cluster_view(c: &Cluster) -> ClusterView {
    let cp_ready = plan::control_plane_ready(c);
    let s = c.status.clone().unwrap_or_default();
    // The endpoint and kubeconfig are read only once the control plane is ready: their
    // arrival while it boots changes nothing for a Deployment.
    let target = cp_ready.then(|| (s.api_endpoint, s.kubeconfig_secret_ref.map(|r| r.name)));
    // What placement passes a Cluster over for: Stalled, or short of capacity or quota.
    let stalled = conditions::is_true(&s.conditions, ct::STALLED);
    let short = conditions::get(&s.conditions, ct::READY)
        .is_some_and(|r| matches!(r.reason.as_str(), "InsufficientCapacity" | "QuotaExceeded"));
    ClusterView {
        common: format!(
            "{:?}|{}|{cp_ready}|{target:?}|{stalled}|{short}",
            c.metadata.generation,
            c.metadata.deletion_timestamp.is_some(),
        ),
        // Room on the pools matters only once there is a control plane to apply to.
        pools: s
            .node_pools
            .iter()
            .filter(|_| cp_ready)
            .map(|p| (p.name.clone(), p.ready))
            .collect(),
    }
}

/// Which of a Cluster's Deployments a change concerns.
#[derive(Clone, Debug, PartialEq)]
enum Woken {
    /// All of them: the Cluster appeared, went, or changed in `common`.
    All,
    /// Those on these pools (and those without a pool yet): only Ready counts changed.
    Pools(BTreeSet<String>),
}

fn woken(old: Option<&ClusterView>, new: Option<&ClusterView>) -> Option<Woken> {
    match (old, new) {
        (Some(o), Some(n)) if o == n => None,
        (Some(o), Some(n)) if o.common == n.common => {
            let names: BTreeSet<&String> = o.pools.keys().chain(n.pools.keys()).collect();
            Some(Woken::Pools(
                names
                    .into_iter()
                    .filter(|p| o.pools.get(*p) != n.pools.get(*p))
                    .cloned()
                    .collect(),
            ))
        }
        _ => Some(Woken::All),
    }
}

/// Whether `dep` is among the Deployments a change of its Cluster concerns.
fn concerns(dep: &Deployment, w: &Woken) -> bool {
    let pool = dep
        .status
        .as_ref()
        .and_then(|s| s.node_pool.as_deref())
        .or(dep.spec.node_pool.as_deref());
    match (w, pool) {
        (Woken::All, _) | (Woken::Pools(_), None) => true,
        (Woken::Pools(changed), Some(p)) => changed.contains(p),
    }
}

/// `(namespace, name, uid, what)` of each Cluster whose [view](cluster_view) changed, was
/// created or was deleted.
///
/// Writes every Cluster into `cache` first, and stops the workload watch of a deleted one.
fn cluster_changes(
    ctx: &Ctx,
    cache: reflector::store::Writer<Cluster>,
    workloads: Arc<workloads::Workloads>,
) -> impl futures::Stream<Item = (Option<String>, String, String, Woken)> + Send + 'static {
    let api = Api::<Cluster>::all(ctx.client.clone());
    let mut seen: std::collections::HashMap<(Option<String>, String), ClusterView> =
        Default::default();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(crate::context::trim)
        .reflect(cache)
        .filter_map(move |event| {
            let changed = match event {
                Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => {
                    let key = (c.namespace(), c.name_any());
                    let view = cluster_view(&c);
                    let w = woken(seen.get(&key), Some(&view));
                    seen.insert(key.clone(), view);
                    w.map(|w| (key.0, key.1, c.uid().unwrap_or_default(), w))
                }
                Ok(watcher::Event::Delete(c)) => {
                    let key = (c.namespace(), c.name_any());
                    seen.remove(&key);
                    let uid = c.uid().unwrap_or_default();
                    workloads.stop(&uid);
                    Some((key.0, key.1, uid, Woken::All))
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

/// What the reconcile reads besides the API server: the Module and Cluster caches, and
/// the watches of the workloads on the target clusters.
#[derive(Clone)]
struct Views {
    modules: Store<Module>,
    clusters: Store<Cluster>,
    workloads: Arc<workloads::Workloads>,
}

#[tracing::instrument(skip_all, fields(namespace = dep.namespace(), name = %dep.name_any(), generation = dep.metadata.generation))]
async fn reconcile(dep: Arc<Deployment>, ctx: Ctx, views: Views) -> Result<Action> {
    let c = ctx.clone();
    let gone = views.clone();
    crate::context::measured(
        &c,
        "deployment",
        reconcile_with_finalizer(
            dep,
            ctx,
            FINALIZER,
            |dep, ctx| apply(dep, ctx, views),
            |dep, ctx| cleanup(dep, ctx, gone),
        ),
    )
    .await
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

/// The reconcile: dereference -> plan (pure) -> apply -> status (pure).
async fn apply(dep: Arc<Deployment>, ctx: Ctx, views: Views) -> Result<Action> {
    let (observed, target) = dereference(&dep, &ctx, &views).await?;
    let plan = plan::plan(&dep, &observed, &ctx.recipes);
    let mut rolled = None;
    let uid = observed
        .cluster
        .as_ref()
        .and_then(|c| c.uid())
        .unwrap_or_default();
    let outcome = match (&plan.step, target) {
        (Err(b), _) => Outcome::Blocked(b.clone()),
        (Ok(work), Some(target)) => {
            let identity = observed
                .cluster
                .as_ref()
                .and_then(|c| ctx.targets.identity(c))
                .unwrap_or_else(|| uid.clone());
            views.workloads.ensure(&uid, &identity, &target);
            match apply_work(&ctx, &target, &views.workloads, &dep, &uid, work).await {
                Ok(workload) => {
                    views
                        .workloads
                        .saw(ObjectRef::from_obj(dep.as_ref()), workload.clone());
                    let (ready_replicas, rollout) = plan::rollout(
                        &dep,
                        observed.cluster.as_ref(),
                        plan.pool.as_deref(),
                        workload.as_ref(),
                    );
                    rolled = Some((ready_replicas, work.endpoint.clone()));
                    Outcome::Rolled(rollout)
                }
                Err(Stop::Blocked(b)) => Outcome::Blocked(b),
                // Retried with per-object backoff; a status write would wake the controller at once.
                Err(Stop::Failed(e)) => return Err(e),
            }
        }
        (Ok(_), None) => {
            return Err(Error::Target(
                "the target cluster was not read before applying".into(),
            ));
        }
    };
    let base = status::base(&dep, &plan, rolled);
    let mut status = status::compute(&dep, base, &outcome);
    // Where it runs; with clusterRef, a Decision of one Cluster (a changed clusterRef
    // moves the workload as placement does, make-before-break).
    let decision = observed
        .placement
        .clone()
        .unwrap_or_else(|| placement::Decision {
            target: dep.target_cluster().map(str::to_string),
            entries: Vec::new(),
            moved: None,
        });
    let ready = matches!(&outcome, Outcome::Rolled(r) if r.ready);
    place(&ctx, &dep, &decision, ready, &views, &mut status).await;
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
    let before: BTreeSet<String> = dep
        .clusters_in_use()
        .into_iter()
        .map(str::to_string)
        .collect();
    let after: BTreeSet<String> = {
        let mut d = (*dep).clone();
        d.status = Some(status.clone());
        d.clusters_in_use()
            .into_iter()
            .map(str::to_string)
            .collect()
    };
    write_status(&ctx, &dep, status).await?;
    // The Clusters whose pools now carry this workload, or no longer do.
    let ns = dep.namespace().unwrap_or_default();
    for c in before.symmetric_difference(&after) {
        ctx.demand.wake(&ns, c);
    }
    Ok(ctx.requeue(
        &crate::context::key(dep.as_ref()),
        status::requeue(
            &outcome,
            views
                .workloads
                .wakes(&uid, &ObjectRef::from_obj(dep.as_ref())),
        ),
    ))
}

/// Reads everything the plan decides from: the Module, the Cluster, the Secrets and
/// ConfigMaps the spec names, and, once the Cluster's control plane is ready, what kelp
/// left on its Kubernetes (the rclone passwords it obscured), with a client for it. The
/// Module and the Cluster come from `views`' caches.
async fn dereference(
    dep: &Deployment,
    ctx: &Ctx,
    views: &Views,
) -> Result<(Observed, Option<Client>)> {
    let ns = dep.namespace().unwrap_or_default();
    let cached = |e: reflector::store::WriterDropped| Error::Stale(format!("cache: {e}"));
    views.modules.wait_until_ready().await.map_err(cached)?;
    views.clusters.wait_until_ready().await.map_err(cached)?;
    let module = views
        .modules
        .get(&ObjectRef::new(&dep.spec.module_ref.name).within(&ns))
        .map(|m| (*m).clone());
    let cached_cluster = |name: &str| views.clusters.get(&ObjectRef::new(name).within(&ns));
    let (cluster, placement) = match &dep.spec.placement {
        None => (
            dep.target_cluster()
                .and_then(cached_cluster)
                .map(|c| (*c).clone()),
            None,
        ),
        Some(p) => {
            // Placement: the candidate to apply to, from the cached Clusters and the
            // workload's readiness as the last reconcile saw it.
            let candidates: Vec<(String, Option<Arc<Cluster>>)> = p
                .clusters
                .iter()
                .map(|c| (c.name.clone(), cached_cluster(&c.name)))
                .collect();
            let ready = dep.status.as_ref().is_some_and(|s| {
                conditions::is_true(&s.conditions, ct::READY)
                    && s.observed_generation == dep.metadata.generation
            });
            let d = placement::decide(
                dep,
                p,
                &candidates,
                module.as_ref(),
                ready,
                k8s_openapi::jiff::Timestamp::now(),
            );
            let c = d
                .target
                .as_deref()
                .and_then(cached_cluster)
                .map(|c| (*c).clone());
            (c, Some(d))
        }
    };
    let mut obs = Observed {
        module,
        cluster,
        placement,
        ..Default::default()
    };
    // What the workload's objects are built from is read only once they can be applied:
    // until the control plane is ready the plan waits for it first.
    let cp_ready = obs
        .cluster
        .as_ref()
        .is_some_and(|c| c.metadata.deletion_timestamp.is_none() && plan::control_plane_ready(c));
    if cp_ready {
        let (secret_names, config_map_names) = plan::sources(dep, obs.module.as_ref());
        let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
        for name in secret_names {
            let s = secrets.get_opt(&name).await?;
            obs.secrets.insert(name, s);
        }
        let config_maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns);
        for name in config_map_names {
            let c = config_maps.get_opt(&name).await?;
            obs.config_maps.insert(name, c);
        }
    }
    let target = match (&obs.cluster, cp_ready) {
        (Some(cluster), true) => Some(
            ctx.targets
                .client(&ctx.client, &ctx.secrets, cluster)
                .await?,
        ),
        _ => None,
    };
    if let Some(target) = &target {
        let name = dep.name_any();
        let mut state = plan::TargetState::default();
        let on_target = Api::<Secret>::namespaced(target.clone(), &ns);
        for s in dep.spec.storage.iter().filter(|s| s.webdav.is_some()) {
            let secret_name = build::rclone_secret_name(&name, &s.name);
            let pass = on_target
                .get_opt(&secret_name)
                .await
                .ok()
                .flatten()
                .and_then(|s| s.data)
                .and_then(|d| {
                    d.get(&plan::rclone_pass_key(&s.name))
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                });
            if let Some(pass) = pass {
                state.rclone_pass.insert(secret_name, pass);
            }
        }
        obs.target = Some(state);
    }
    Ok((obs, target))
}

/// Applies the plan's objects to the target: refuses any that exists without this
/// Deployment's labels (before applying any), then server-side applies them in order
/// and prunes what kelp applied earlier that the recipe no longer renders. Returns the
/// workload as the API server returned it.
///
/// What this process last applied there without an error (always nothing after a
/// restart) is neither checked for ownership again nor looked up for pruning while the
/// plan renders the same set, and its namespace is known to exist: a steady reconcile
/// sends only the applies. What to prune is looked up in the target's watches of the
/// applied kinds when they are live, and listed otherwise. An apply that fails forgets it, so the next attempt checks
/// everything again.
async fn apply_work(
    ctx: &Ctx,
    target: &Client,
    workloads: &workloads::Workloads,
    dep: &Deployment,
    cluster_uid: &str,
    work: &Work,
) -> Result<Option<Readiness>, Stop> {
    let ns = dep.namespace().unwrap_or_default();
    let name = dep.name_any();
    let key = crate::context::key(dep);
    let digest = digest(&work.objects);
    // What this process applied there last time (and found or made with this
    // Deployment's labels): checked again only when it stops applying cleanly.
    let last = ctx
        .applied
        .lock()
        .unwrap()
        .get(&key)
        .filter(|a| a.cluster == cluster_uid)
        .cloned();
    // The same objects again, and the target's watches show each one as it was written:
    // applying them would change nothing. Applied again once per resync all the same.
    if let Some(last) = &last
        && last.digest == digest
        && last.at.elapsed() < ctx.config.resync
        && let Some(readiness) =
            workloads.unchanged(cluster_uid, &ObjectRef::from_obj(dep), &last.wrote)
    {
        tracing::debug!(deployment = %key, "applied objects unchanged on the target");
        return Ok(Some(readiness));
    }
    let known: BTreeSet<String> = last
        .map(|a| a.wrote.into_keys().collect())
        .unwrap_or_default();
    // Never take over what kelp did not create: every object is checked before any is
    // applied, and only objects carrying this Deployment's labels are ever pruned.
    for obj in work
        .objects
        .iter()
        .filter(|o| !known.contains(&object_id(o)))
    {
        if let Some(what) = foreign(target, obj, &ns, &name).await? {
            return Err(Stop::Blocked(Blocked {
                reason: "ObjectNotOwned".into(),
                message: format!(
                    "{what} already exists in Cluster {} and kelp did not create it (it lacks the label {DEPLOYMENT_LABEL}={name}): kelp neither changes nor deletes it; rename the Deployment or remove that object",
                    dep.target_cluster().unwrap_or_default()
                ),
                kind: Kind::Stalled,
            }));
        }
    }
    let forget = |e| {
        ctx.applied.lock().unwrap().remove(&key);
        e
    };
    if known.is_empty() {
        ensure_namespace(target, &ns).await?;
    }
    let mut wrote = BTreeMap::new();
    let mut workload = None;
    for obj in &work.objects {
        let (id, written) = server_side_apply(target, obj).await.map_err(forget)?;
        if id == format!("apps/v1/Deployment/{name}") {
            workload = serde_json::to_value(&written)
                .ok()
                .and_then(|v| serde_json::from_value::<AppsDeployment>(v).ok())
                .map(|w| Readiness::of(&w));
        }
        wrote.insert(id, workloads::Version::of(&written.metadata));
    }
    if known.is_empty() || !known.iter().eq(wrote.keys()) {
        let applied: BTreeSet<String> = wrote.keys().cloned().collect();
        // What kelp applied there: from the target's watches when they are live (with
        // what this process applied itself, which they may not show yet), else listed.
        let owned = match workloads.owned(cluster_uid, &ObjectRef::from_obj(dep)) {
            Some(watched) => watched.union(&known).cloned().collect(),
            None => owned(target, &ns, &name).await?,
        };
        prune(target, &ns, &owned, &applied).await?;
    }
    ctx.applied.lock().unwrap().insert(
        key,
        Applied {
            cluster: cluster_uid.to_string(),
            digest,
            wrote,
            at: std::time::Instant::now(),
        },
    );
    Ok(workload)
}

/// What this process last applied for a Deployment, and where: while a reconcile
/// renders the same objects for the same Cluster there is nothing to prune, and while
/// the target's watches show them as written, nothing to apply.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The Cluster's UID.
    pub cluster: String,
    /// Of the objects rendered ([`digest`]).
    pub digest: u64,
    /// Each object (`apiVersion/kind/name`) and the version its apply wrote.
    pub wrote: BTreeMap<String, workloads::Version>,
    /// When they were applied.
    pub at: std::time::Instant,
}

/// A digest of rendered objects: equal for the same objects in the same order.
fn digest(objects: &[Value]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for o in objects {
        serde_json::to_string(o).unwrap_or_default().hash(&mut h);
    }
    h.finish()
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

/// Server-side applies `obj` with field manager `kelp`; returns `apiVersion/kind/name`
/// and the object as the API server wrote it.
async fn server_side_apply(target: &Client, obj: &Value) -> Result<(String, DynamicObject)> {
    let id = object_id(obj);
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let (api, name) = api_for_id(target, ns, &id);
    let written = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?;
    tracing::debug!(%id, ns, "applied");
    Ok((id, written))
}

/// `Kind namespace/name` when `obj` exists on the target without the labels of the
/// Deployment `dep_ns/dep`.
async fn foreign(target: &Client, obj: &Value, dep_ns: &str, dep: &str) -> Result<Option<String>> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let (api, name) = api_for_id(target, ns, &object_id(obj));
    Ok(api.get_opt(&name).await?.and_then(|existing| {
        let labels = existing.labels();
        let ours = labels.get(DEPLOYMENT_LABEL).map(String::as_str) == Some(dep)
            && labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(dep_ns);
        (!ours).then(|| format!("{} {ns}/{name}", obj["kind"].as_str().unwrap_or_default()))
    }))
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
/// Completes the status of a Deployment with placement from `d`: each candidate's entry,
/// and where the workload runs. Once it is Ready on the target, a move is finished:
/// the workload is removed from the Cluster it ran on before (make-before-break), with
/// an Event. A removal that fails keeps that Cluster as where it runs, and is tried
/// again by the next reconcile.
async fn place(
    ctx: &Ctx,
    dep: &Deployment,
    d: &placement::Decision,
    ready: bool,
    views: &Views,
    status: &mut kelp_crds::DeploymentStatus,
) {
    let ns = dep.namespace().unwrap_or_default();
    status.placement = d.entries.clone();
    let before = dep.status.as_ref().and_then(|s| s.cluster.clone());
    // Where it ran, as long as that Cluster is still there.
    let running_on = before
        .clone()
        .filter(|c| views.clusters.get(&ObjectRef::new(c).within(&ns)).is_some());
    if let Some((from, why)) = &d.moved
        && let Some(to) = &d.target
    {
        let (reason, note) = match from.as_ref().or(running_on.as_ref()) {
            Some(from) if from != to => (
                "Moving",
                format!(
                    "moving from Cluster {from} to Cluster {to}: {why}; the workload keeps running on {from} until it is Ready on {to}"
                ),
            ),
            _ => ("Placed", format!("placed on Cluster {to}: {why}")),
        };
        ctx.event(dep, false, reason, "Place", note).await;
    }
    status.cluster = match (&d.target, ready) {
        (Some(to), true) => {
            if let Some(e) = status.placement.iter_mut().find(|e| &e.cluster == to)
                && e.result != kelp_crds::PlacementResult::Running
            {
                e.result = kelp_crds::PlacementResult::Running;
                e.reason = "Ready".into();
                e.message = format!("the workload is Ready on Cluster {to}");
                e.since = k8s_openapi::jiff::Timestamp::now().to_string();
            }
            match running_on.filter(|old| old != to) {
                Some(old) => match remove_from(ctx, dep, &old).await {
                    Ok(n) => {
                        ctx.event(
                            dep,
                            false,
                            "Moved",
                            "Place",
                            format!("moved from Cluster {old} to Cluster {to}: Ready on {to}; deleted {n} object(s) from {old}"),
                        )
                        .await;
                        Some(to.clone())
                    }
                    Err(e) => {
                        tracing::info!(error = %e, cluster = %old, "removing the workload after a move; retried");
                        Some(old)
                    }
                },
                None => Some(to.clone()),
            }
        }
        (Some(to), false) => running_on.or_else(|| Some(to.clone())),
        (None, _) => running_on,
    };
}

/// Deletes every object kelp applied for `dep` on the Cluster `name`: the number
/// deleted (0 when the Cluster is gone, or is being deleted and does not answer).
async fn remove_from(ctx: &Ctx, dep: &Deployment, name: &str) -> Result<usize> {
    let ns = dep.namespace().unwrap_or_default();
    let Some(cluster) = Api::<Cluster>::namespaced(ctx.client.clone(), &ns)
        .get_opt(name)
        .await?
    else {
        return Ok(0);
    };
    let target = match ctx
        .targets
        .client(&ctx.client, &ctx.secrets, &cluster)
        .await
    {
        Ok(t) => t,
        Err(_) if cluster.metadata.deletion_timestamp.is_some() => return Ok(0),
        Err(e) => return Err(e),
    };
    let pruned = match owned(&target, &ns, &dep.name_any()).await {
        Ok(owned) => prune(&target, &ns, &owned, &BTreeSet::new()).await,
        Err(e) => Err(e),
    };
    match pruned {
        Ok(n) => Ok(n),
        // An unreachable cluster that is itself being deleted takes the workload with it.
        Err(e) if cluster.metadata.deletion_timestamp.is_some() => {
            tracing::info!(error = %e, "cluster going away");
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

async fn cleanup(dep: Arc<Deployment>, ctx: Ctx, views: Views) -> Result<Action> {
    let ns = dep.namespace().unwrap_or_default();
    ctx.applied
        .lock()
        .unwrap()
        .remove(&crate::context::key(dep.as_ref()));
    views.workloads.forget(&ObjectRef::from_obj(dep.as_ref()));
    // Deleting, for as long as the workload takes to go (or its Cluster to answer).
    let mut status = dep.status.clone().unwrap_or_default();
    status.phase = Some(DeploymentPhase::Deleting);
    write_status(&ctx, &dep, status).await?;
    // Every Cluster it has objects on: its target, and during a move the one it ran on.
    for name in dep.clusters_in_use() {
        let n = remove_from(&ctx, &dep, name).await?;
        if n > 0 {
            ctx.event(
                dep.as_ref(),
                false,
                "WorkloadDeleted",
                "Delete",
                format!("deleted {n} object(s) from Cluster {name}"),
            )
            .await;
        }
        ctx.demand.wake(&ns, name);
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(cp_ready: bool, pools: &str) -> Cluster {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Cluster\nmetadata: {{name: c, namespace: ns, generation: 1}}\nspec: {{cloud: {{sim: {{}}}}, nodePools: []}}\nstatus:\n  conditions: [{{type: ControlPlaneReady, status: \"{}\", reason: r, message: m, lastTransitionTime: \"2026-01-01T00:00:00Z\"}}]\n  nodePools: {pools}\n",
            if cp_ready { "True" } else { "False" }
        ))
        .unwrap()
    }

    fn dep_on(pool: Option<&str>) -> Deployment {
        let mut d: Deployment = serde_yaml_ng::from_str(
            "apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Deployment\nmetadata: {name: d, namespace: ns}\nspec: {moduleRef: {name: m}, clusterRef: {name: c}}\n",
        )
        .unwrap();
        d.status = pool.map(|p| DeploymentStatus {
            node_pool: Some(p.into()),
            ..Default::default()
        });
        d
    }

    #[test]
    fn a_pool_coming_up_wakes_only_the_deployments_on_it() {
        let booting = cluster_view(&cluster(
            false,
            "[{name: cpu, desired: 2, ready: 0}, {name: gpu, desired: 1, ready: 0}]",
        ));
        let up = cluster_view(&cluster(
            true,
            "[{name: cpu, desired: 2, ready: 0}, {name: gpu, desired: 1, ready: 0}]",
        ));
        let cpu = cluster_view(&cluster(
            true,
            "[{name: cpu, desired: 2, ready: 2}, {name: gpu, desired: 1, ready: 0}]",
        ));
        assert_eq!(woken(None, Some(&booting)), Some(Woken::All));
        assert_eq!(woken(Some(&booting), Some(&booting)), None);
        // Machines that join while the control plane boots: nothing to apply to yet.
        let joined = cluster_view(&cluster(
            false,
            "[{name: cpu, desired: 2, ready: 2}, {name: gpu, desired: 1, ready: 1}]",
        ));
        assert_eq!(woken(Some(&booting), Some(&joined)), None);
        assert_eq!(woken(Some(&booting), Some(&up)), Some(Woken::All));
        let w = woken(Some(&up), Some(&cpu)).unwrap();
        assert_eq!(w, Woken::Pools(BTreeSet::from(["cpu".to_string()])));
        assert!(concerns(&dep_on(Some("cpu")), &w));
        assert!(!concerns(&dep_on(Some("gpu")), &w));
        // One that has not chosen a pool yet may choose this one.
        assert!(concerns(&dep_on(None), &w));
        assert!(concerns(&dep_on(Some("gpu")), &Woken::All));
    }
}
