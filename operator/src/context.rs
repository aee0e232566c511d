//! The one Context every controller shares, the operator's error type, and per-object backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kelp_cloud_drivers::CloudError;
use kube::Client;
use kube::Resource;
use kube::runtime::controller::Action;

use crate::drivers::Drivers;
use crate::targets::Targets;

/// Tunables of a running operator.
#[derive(Clone, Debug)]
pub struct Config {
    /// How soon to look again while something is still converging (machines booting,
    /// pods starting).
    pub poll: Duration,
    /// How often a converged object is looked at again to catch drift in the cloud.
    pub resync: Duration,
    /// First and largest delay of the per-object exponential backoff on transient errors.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long a machine tagged for a Cluster that no longer exists may live before kelp
    /// deletes it (it may belong to a Cluster being restored from a backup, or moved).
    pub orphan_grace: Duration,
    /// How often each Cluster's cloud account is swept for such machines.
    pub orphan_sweep_interval: Duration,
    /// How long a batch of machines kelp asked for may stay unlisted before kelp asks
    /// again, and how young an extra machine is kept before it is removed
    /// (`KELP_CREATE_GRACE_SECONDS`, default 120): clouds list new machines late (EC2's
    /// eventual consistency), and not every cloud honours an idempotency key.
    pub create_grace: Duration,
    /// The operator's namespace, where users' recipe ConfigMaps live: `KELP_NAMESPACE`,
    /// else `POD_NAMESPACE`, else `kelp-system`.
    pub namespace: String,
    /// OpenStack service endpoints that replace the service catalogue's, for every
    /// OpenStack and EGI Cluster (service type -> URL): for clouds whose catalogue lists
    /// addresses the operator cannot reach. `KELP_OPENSTACK_ENDPOINTS`, e.g.
    /// `compute=https://nova.example.org:8774/v2.1,network=https://neutron.example.org:9696`.
    pub openstack_endpoints: std::collections::BTreeMap<String, String>,
    /// Where fresh EGI site data is published (`KELP_EGI_SITES_URL`), read hourly; it
    /// replaces shipped entries of the same sites, and the `kelp-egi-sites` ConfigMap
    /// replaces both.
    pub egi_sites_url: Option<String>,
}

/// `service=url,service=url` as a map; malformed parts are skipped with a warning.
pub fn parse_endpoints(text: &str) -> std::collections::BTreeMap<String, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter_map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                Some((k.trim().to_string(), v.trim().to_string()))
            }
            _ => {
                tracing::warn!(part = p, "KELP_OPENSTACK_ENDPOINTS: expected service=url");
                None
            }
        })
        .collect()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(5),
            resync: Duration::from_secs(300),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(120),
            orphan_grace: Duration::from_secs(600),
            orphan_sweep_interval: Duration::from_secs(300),
            create_grace: Duration::from_secs(
                std::env::var("KELP_CREATE_GRACE_SECONDS")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(120),
            ),
            namespace: std::env::var("KELP_NAMESPACE")
                .or_else(|_| std::env::var("POD_NAMESPACE"))
                .unwrap_or_else(|_| "kelp-system".into()),
            openstack_endpoints: std::env::var("KELP_OPENSTACK_ENDPOINTS")
                .map(|v| parse_endpoints(&v))
                .unwrap_or_default(),
            egi_sites_url: std::env::var("KELP_EGI_SITES_URL")
                .ok()
                .filter(|v| !v.trim().is_empty()),
        }
    }
}

/// Shared by every reconcile as `Arc<Context>`.
pub struct Context {
    pub client: Client,
    pub events: crate::events::Events,
    pub config: Config,
    pub drivers: Drivers,
    pub recipes: crate::recipes::Recipes,
    /// Which Secrets changed, from one metadata watch ([`crate::secrets`]).
    pub secrets: crate::secrets::SecretChanges,
    pub sim_kube: Option<Arc<dyn crate::simulated::SimKubernetes>>,
    pub targets: Targets,
    backoff: Mutex<HashMap<String, u32>>,
    /// Consecutive polls per object, for the poll backoff.
    polls: Mutex<HashMap<String, u32>>,
    /// The resourceVersions of this process's own writes of each object.
    written: Mutex<HashMap<String, Written>>,
    /// The objects this process is writing right now (sent, not answered yet), and the
    /// signal of each answer: a watch event can arrive before its write's answer.
    writing: Mutex<HashMap<String, usize>>,
    answered: tokio::sync::Notify,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What `/readyz` reports.
    pub health: Arc<crate::health::Health>,
    /// Orphan sweeps: when each Cluster last swept, and when each orphan was first seen.
    pub orphans: Mutex<Orphans>,
    /// What pools that follow demand are sized from ([`crate::cluster::demand`]).
    pub demand: crate::cluster::demand::Demand,
    /// What this process last applied for each Deployment, and where.
    pub applied: Mutex<HashMap<String, crate::deployment::Applied>>,
    /// Each Cluster's pending creates as this process last wrote them (by UID), in case
    /// the cache has not caught up with that status write yet.
    pending: Mutex<HashMap<String, Vec<kelp_crds::PendingCreate>>>,
}

/// State of the orphan sweeps.
#[derive(Default)]
pub struct Orphans {
    pub last_sweep: HashMap<String, std::time::Instant>,
    pub first_seen: HashMap<String, std::time::Instant>,
    /// Clusters whose account has orphans still within their grace period.
    pub waiting: std::collections::HashSet<String>,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        drivers: Drivers,
        sim_kube: Option<Arc<dyn crate::simulated::SimKubernetes>>,
    ) -> Self {
        Self {
            events: crate::events::Events::new(client.clone()),
            client,
            config,
            drivers,
            recipes: crate::recipes::Recipes::default(),
            secrets: Default::default(),
            sim_kube,
            targets: Targets::default(),
            backoff: Mutex::default(),
            polls: Mutex::default(),
            written: Mutex::default(),
            writing: Mutex::default(),
            answered: tokio::sync::Notify::new(),
            metrics: Arc::default(),
            health: Arc::default(),
            orphans: Mutex::default(),
            demand: Default::default(),
            applied: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    /// A Cluster's pending creates: its status's, and those this process recorded that
    /// the cached copy may not show yet.
    pub fn pending_creates(&self, cluster: &kelp_crds::Cluster) -> Vec<kelp_crds::PendingCreate> {
        let mut out = cluster
            .status
            .as_ref()
            .map(|s| s.pending_creates.clone())
            .unwrap_or_default();
        let uid = cluster.metadata.uid.clone().unwrap_or_default();
        if let Some(mine) = self.pending.lock().unwrap().get(&uid) {
            for p in mine {
                if !out.iter().any(|o| o.key == p.key) {
                    out.push(p.clone());
                }
            }
        }
        out
    }

    /// Remembers what was last written as a Cluster's pending creates.
    pub fn remember_pending(&self, uid: &str, pending: &[kelp_crds::PendingCreate]) {
        let mut map = self.pending.lock().unwrap();
        if pending.is_empty() {
            map.remove(uid);
        } else {
            map.insert(uid.to_string(), pending.to_vec());
        }
    }

    /// Publishes an Event on `obj`; failures are logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let regarding = obj.object_ref(&());
        if let Err(e) = self
            .events
            .publish(&regarding, warning, reason, action, note)
            .await
        {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        self.backoff.lock().unwrap().remove(key);
    }

    /// The Action for a reconcile that ended with `requeue`: polls start a quarter second
    /// after the change and back off to `poll` while something stays on its way (a
    /// machine that boots in seconds is seen at once; one that takes a minute costs a
    /// poll per `poll`); a resync forgets the streak.
    pub fn requeue(&self, key: &str, requeue: Requeue) -> Action {
        let mut polls = self.polls.lock().unwrap();
        match requeue {
            Requeue::Resync => {
                polls.remove(key);
                Action::requeue(self.config.resync)
            }
            Requeue::After(d) => {
                polls.remove(key);
                Action::requeue(d.min(self.config.resync))
            }
            Requeue::Poll => {
                let n = polls.entry(key.to_string()).or_default();
                let delay = poll_delay(*n, self.config.poll);
                *n = n.saturating_add(1);
                Action::requeue(delay)
            }
        }
    }

    /// The next delay for `key`: base * 2^failures, capped, with up to 20% jitter.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let mut map = self.backoff.lock().unwrap();
        let n = map.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << (*n - 1).min(16))
            .min(self.config.backoff_max);
        let jitter = exp.mul_f64(rand::random::<f64>() * 0.2);
        exp + jitter
    }

    /// What the controllers do after an error: transient errors back off per object;
    /// errors that need a user's change wait for one (they are already in a condition).
    pub fn error_action(&self, key: &str, err: &Error) -> Action {
        match err {
            Error::Waiting(_) => Action::requeue(self.config.poll),
            Error::Stale(_) => Action::requeue(Duration::from_millis(100)),
            e if e.is_transient() => Action::requeue(self.next_backoff(key)),
            _ => Action::requeue(self.config.resync),
        }
    }
}

/// When to look at an object again, as a reconcile's pure status step decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Something is on its way: soon (with a short backoff while it lasts).
    Poll,
    /// Converged or stalled: at the next resync (or on a change).
    Resync,
    /// Converged until a known time (an idle machine's scale-down delay ends): then, or
    /// at the next resync if that comes first.
    After(Duration),
}

/// The delay of the `n`th consecutive poll (0-based): 250 ms doubling up to `max`, so a
/// machine that boots in seconds is seen within a fraction of a second of it, and one
/// that takes a minute costs a poll every `max`.
pub fn poll_delay(n: u32, max: Duration) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1u64 << n.min(16))).min(max)
}

/// The operator's errors; each variant has a short stable label for metrics and Events.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cloud: {0}")]
    Cloud(#[from] CloudError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Recipe(#[from] kelp_recipes::RecipeError),
    /// Not an error: something the reconcile waits for (machines still terminating).
    #[error("waiting: {0}")]
    Waiting(String),
    #[error("target cluster: {0}")]
    Target(String),
    /// A kubeconfig Secret that cannot work as it is (no such key, not a kubeconfig):
    /// the user must fix it. The message names the Secret, the key and the line, never
    /// the content.
    #[error("{0}")]
    Kubeconfig(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The object changed since the cached copy the reconcile started from.
    #[error("stale object: {0}")]
    Stale(String),
}

impl Error {
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 401 => "Unauthorized",
            Error::Kube(kube::Error::Api(s)) if s.code == 403 => "Forbidden",
            Error::Kube(kube::Error::Api(s)) if s.code == 422 => "KubeInvalid",
            Error::Kube(_) => "KubeError",
            Error::Cloud(e) => e.label(),
            Error::Invalid(_) => "Invalid",
            Error::Recipe(_) => "RecipeError",
            Error::Waiting(_) => "Waiting",
            Error::Target(_) => "TargetUnreachable",
            Error::Kubeconfig(_) => "InvalidKubeconfig",
            Error::Finalizer(_) => "FinalizerError",
            Error::Stale(_) => "StaleObject",
        }
    }

    /// The API server refused kelp itself (401, 403): a change of RBAC or credentials, not
    /// a retry, fixes it. The message names the verb, resource and user.
    pub fn refused(&self) -> Option<&str> {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => Some(&s.message),
            _ => None,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            // Refused or invalid requests come out the same until something changes.
            Error::Kube(kube::Error::Api(s)) if matches!(s.code, 401 | 403 | 422) => false,
            Error::Kube(_)
            | Error::Target(_)
            | Error::Finalizer(_)
            | Error::Waiting(_)
            | Error::Stale(_) => true,
            Error::Cloud(e) => e.is_transient(),
            Error::Invalid(_) | Error::Recipe(_) | Error::Kubeconfig(_) => false,
        }
    }
}

/// Runs one reconcile of `controller` and records it: count, duration, and the error's
/// label. Waiting and a stale cache are not failures.
pub async fn measured(
    ctx: &Ctx,
    controller: &'static str,
    reconcile: impl std::future::Future<Output = Result<Action>>,
) -> Result<Action> {
    let start = std::time::Instant::now();
    let result = reconcile.await;
    let error = match &result {
        Err(Error::Waiting(_) | Error::Stale(_)) | Ok(_) => None,
        Err(e) => Some(e.label()),
    };
    ctx.metrics.reconciled(controller, start.elapsed(), error);
    result
}

/// Unwraps kube-runtime's finalizer error into ours.
pub fn from_finalizer(e: kube::runtime::finalizer::Error<Error>) -> Error {
    use kube::runtime::finalizer::Error as F;
    match e {
        F::ApplyFailed(e) | F::CleanupFailed(e) => e,
        // The JSON patch `test` against a cached copy that is behind the API server: look
        // again shortly, once the watch has caught up (no backoff, it is not a failure).
        F::AddFinalizer(kube::Error::Api(s)) | F::RemoveFinalizer(kube::Error::Api(s))
            if s.code == 422 || s.code == 409 =>
        {
            Error::Stale(s.message.clone())
        }
        F::AddFinalizer(e) | F::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::Finalizer(other.to_string()),
    }
}

/// The resourceVersions of kelp's own writes of one object, whose watch events wake no
/// reconcile: the reconcile that wrote them has already acted on what they hold.
#[derive(Clone, Copy, Debug, Default)]
struct Written {
    /// The newest (a status write or the finalizer's addition).
    last: u64,
    /// The addition of kelp's finalizer, by the reconcile that went on to `apply`.
    finalizer: Option<u64>,
}

/// Adds `finalizer_name` to `obj` (a JSON patch that tests the list it read first, as
/// kube-runtime's finalizer helper does) and returns the object as written. The
/// reconcile goes on with it, so the finalizer costs no reconcile of its own, and its
/// watch event is known as kelp's own.
async fn add_finalizer<K>(
    ctx: &Context,
    api: &kube::Api<K>,
    obj: &K,
    finalizer_name: &str,
) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let finalizers = obj.meta().finalizers.clone().unwrap_or_default();
    let patch = if finalizers.is_empty() {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer_name]},
        ])
    } else {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer_name},
        ])
    };
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|e| Error::Finalizer(e.to_string()))?;
    let name = obj.meta().name.clone().unwrap_or_default();
    let _writing = ctx.writing(key(obj));
    let mut written = match api
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(o) => o,
        // The `test` against a cached copy that is behind the API server: look again
        // shortly, once the watch has caught up (no backoff, it is not a failure).
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => {
            return Err(Error::Stale(s.message));
        }
        Err(e) => return Err(e.into()),
    };
    trim(&mut written);
    record_write(ctx, obj, &written, true);
    Ok(written)
}

/// The shape of every kelp reconcile: count it, add the finalizer `finalizer_name` and go
/// on, run `apply` or `cleanup` under it (kube-runtime's helper removes it only after
/// `cleanup` succeeded), and forget the object's backoff after a success.
pub async fn reconcile_with_finalizer<K, A, FA, C, FC>(
    obj: Arc<K>,
    ctx: Ctx,
    finalizer_name: &str,
    apply: A,
    cleanup: C,
) -> Result<Action>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    A: FnOnce(Arc<K>, Ctx) -> FA,
    FA: std::future::Future<Output = Result<Action>>,
    C: FnOnce(Arc<K>, Ctx) -> FC,
    FC: std::future::Future<Output = Result<Action>>,
{
    use kube::runtime::finalizer::{Event as Finalizer, finalizer};
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let api: kube::Api<K> = kube::Api::namespaced(ctx.client.clone(), &ns);
    let k = key(obj.as_ref());
    // The cache is behind kelp's own last write of it (the watch has not delivered it
    // yet): read the object itself rather than start from a status already replaced.
    let obj = if is_stale(&ctx, obj.as_ref()) {
        let name = obj.meta().name.clone().unwrap_or_default();
        match api.get_opt(&name).await? {
            Some(mut fresh) => {
                trim(&mut fresh);
                Arc::new(fresh)
            }
            None => return Ok(Action::await_change()),
        }
    } else {
        obj
    };
    let has = obj
        .meta()
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == finalizer_name));
    let obj = if !has && obj.meta().deletion_timestamp.is_none() {
        Arc::new(add_finalizer(&ctx, &api, obj.as_ref(), finalizer_name).await?)
    } else {
        obj
    };
    let action = finalizer(&api, finalizer_name, obj, |event| async {
        match event {
            Finalizer::Apply(o) => apply(o, ctx.clone()).await,
            Finalizer::Cleanup(o) => cleanup(o, ctx.clone()).await,
        }
    })
    .await
    .map_err(from_finalizer)?;
    ctx.reset_backoff(&k);
    Ok(action)
}

/// The error policy of every kelp controller: log, count, and back off per object. A
/// request the API server refused is a warning and an Event on the object (when kelp may
/// still write Events), and is looked at again only at the next resync.
pub fn error_policy<K>(obj: Arc<K>, err: &Error, ctx: Ctx) -> Action
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let k = key(obj.as_ref());
    if let Some(message) = err.refused() {
        tracing::warn!(object = %k, "the Kubernetes API refused kelp: {message}; kelp's RBAC (the chart's ClusterRole and Role) must allow it");
        let note = format!("the Kubernetes API refused kelp: {message}");
        let ctx = ctx.clone();
        tokio::spawn(async move {
            ctx.event(obj.as_ref(), true, "Forbidden", "Reconcile", note)
                .await;
        });
    } else if let Error::Waiting(what) | Error::Stale(what) = err {
        // Waiting (machines terminating, a workload going, the watch catching up) is not
        // a failure.
        tracing::debug!(object = %k, "waiting: {what}");
    } else {
        tracing::info!(object = %k, error = %err, "reconcile failed");
    }
    ctx.error_action(&k, err)
}

/// Logs what a controller's stream reports besides reconcile results: a watch the API
/// server refuses (kelp's RBAC lacks `list` or `watch`) is a warning naming the verb and
/// resource; the watch is retried with backoff.
pub fn log_controller_error<E: std::fmt::Display, Q: std::error::Error + 'static>(
    controller: &str,
    err: &kube::runtime::controller::Error<E, Q>,
) {
    use kube::runtime::controller::Error as C;
    match err {
        C::QueueError(q) => {
            let mut source: Option<&dyn std::error::Error> = Some(q);
            while let Some(e) = source {
                if let Some(kube::Error::Api(s)) = e.downcast_ref::<kube::Error>()
                    && (s.code == 401 || s.code == 403)
                {
                    tracing::warn!(
                        controller,
                        "the Kubernetes API refused kelp's watch: {}; kelp's RBAC (the chart's ClusterRole and Role) must allow it",
                        s.message
                    );
                    return;
                }
                source = e.source();
            }
            tracing::warn!(controller, error = %q, "watch failed");
        }
        other => tracing::debug!(controller, error = %other, "reconcile"),
    }
}

/// The watch a controller reconciles from, and its cache: `/readyz` learns from the
/// stream itself when the first full list is in (the store's own readiness wakes only one
/// waiter, the controller's runner, and must not be waited on twice).
///
/// An object as kelp's own last status write left it does not trigger a reconcile: the
/// reconcile that wrote it has already said when to look again, and nothing else
/// changed. (The cache still takes it.)
pub fn main_watch<K>(
    ctx: &Ctx,
    controller: &'static str,
    api: kube::Api<K>,
    config: kube::runtime::watcher::Config,
) -> (
    kube::runtime::reflector::Store<K>,
    impl futures::Stream<Item = std::result::Result<K, kube::runtime::watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    ctx.health.expect(controller);
    let health = ctx.health.clone();
    let (reader, writer) = reflector::store();
    let own = ctx.clone();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                health.synced(controller);
            }
        })
        .reflect(writer)
        .applied_objects()
        .filter(move |obj| {
            let probe = obj.as_ref().ok().map(|o| (key(o), resource_version(o)));
            let own = own.clone();
            async move {
                match probe {
                    Some((k, rv)) => {
                        own.answered(&k).await;
                        !own.is_own_write(&k, rv)
                    }
                    None => true,
                }
            }
        });
    (reader, stream)
}

/// Drops what kelp never reads from an object before it is cached: its managedFields
/// (one JSON tree per field manager, the largest part of a cached object with a long
/// status) and kubectl's last-applied-configuration copy of the spec.
pub fn trim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// How many objects of one kind reconcile at once: bounds memory and the load on the API
/// servers and clouds when thousands of objects change together.
pub const CONCURRENCY: u16 = 16;

/// The kube-runtime controller settings every kelp controller uses.
pub fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(CONCURRENCY)
}

/// `kind/namespace/name`, the key of per-object state.
pub fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
pub type Ctx = Arc<Context>;

/// An error with its sources, outermost first, without repeats: `client error (Connect):
/// tcp connect error: Connection refused (os error 111)`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The field manager of everything kelp writes with server-side apply.
pub const MANAGER: &str = "kelp";

/// Server-side applies `status` as the status of `obj` (field manager [`MANAGER`],
/// forced): the one way every controller writes its status.
pub async fn apply_status<K>(ctx: &Context, obj: &K, status: &impl serde::Serialize) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name, "namespace": ns},
        "status": status,
    });
    let _writing = ctx.writing(key(obj));
    let written = kube::Api::<K>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &name,
            &kube::api::PatchParams::apply(MANAGER).force(),
            &kube::api::Patch::Apply(&patch),
        )
        .await?;
    record_write(ctx, obj, &written, false);
    Ok(())
}

/// An object's resourceVersion as a number (what the API server's storage hands out),
/// None when it is not one.
fn resource_version<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta().resource_version.as_deref()?.parse().ok()
}

/// Remembers `written` (what the API server returned for a write of `obj`) as kelp's
/// own: the newest write, and, for the `finalizer`'s addition, that one too.
fn record_write<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    written: &K,
    finalizer: bool,
) {
    if let Some(rv) = resource_version(written) {
        let mut all = ctx.written.lock().unwrap();
        let w = all.entry(key(obj)).or_default();
        w.last = w.last.max(rv);
        if finalizer {
            w.finalizer = Some(rv);
        }
    }
}

/// A write of one object under way ([`Context::writing`]); its drop says it was answered.
struct Writing<'a> {
    ctx: &'a Context,
    key: String,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut writing = self.ctx.writing.lock().unwrap();
        if let Some(n) = writing.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                writing.remove(&self.key);
            }
        }
        drop(writing);
        self.ctx.answered.notify_waiters();
    }
}

/// How long the main watch holds an object's event back for a write of it that has not
/// been answered: past it, the event goes on (a reconcile too many, never one too few).
const ANSWER_WAIT: Duration = Duration::from_secs(2);

impl Context {
    /// Marks a write of the object `key` as under way until the guard drops (after its
    /// answer is recorded).
    fn writing(&self, key: String) -> Writing<'_> {
        *self.writing.lock().unwrap().entry(key.clone()).or_default() += 1;
        Writing { ctx: self, key }
    }

    /// Waits until no write of `key` is under way: a watch event can arrive before the
    /// answer of the write that caused it, and only the answer tells it is kelp's own.
    async fn answered(&self, key: &str) {
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        loop {
            let notified = self.answered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.writing.lock().unwrap().contains_key(key) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Whether the object `key` at resourceVersion `rv` is exactly what one of this
    /// process's own writes of it returned: its last status write, or the finalizer's
    /// addition by a reconcile that went on.
    fn is_own_write(&self, key: &str, rv: Option<u64>) -> bool {
        let written = self.written.lock().unwrap().get(key).copied();
        matches!((rv, written), (Some(seen), Some(w)) if seen == w.last || Some(seen) == w.finalizer)
    }
}

/// Whether `obj` (from the watch cache) is older than this process's last status write
/// of it: reconciling it would start from a status kelp has already replaced, and, for
/// one thing, miss that Ready had turned False in between.
pub fn is_stale<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K) -> bool {
    let written = ctx.written.lock().unwrap().get(&key(obj)).copied();
    matches!((resource_version(obj), written), (Some(seen), Some(w)) if seen < w.last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_from_a_quarter_second_to_the_poll_interval() {
        let max = Duration::from_secs(5);
        let d: Vec<u64> = (0..7)
            .map(|n| poll_delay(n, max).as_millis() as u64)
            .collect();
        assert_eq!(d, vec![250, 500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(poll_delay(u32::MAX, max), max);
        assert_eq!(poll_delay(0, Duration::from_millis(100)).as_millis(), 100);
    }
}
