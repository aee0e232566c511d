//! One watch per target cluster of the workloads kelp applied there, so that a
//! Deployment learns that its workload became ready (or stopped being ready) when the
//! target's Deployment status changes, instead of polling for it.
//!
//! A watch event wakes a Deployment only when the workload's readiness differs from
//! what that Deployment's last reconcile saw; the events of kelp's own applies carry
//! what the apply's answer already showed, and wake nothing. A reconcile that saw less
//! than the watch had already delivered (the target's status changed between the apply
//! and the reconcile's record of it) is woken again at once. While a cluster's watch
//! is not listing (its API refuses the watch, or it is down), the Deployments on it
//! poll, as they would without it. A watch just started is trusted for its first list:
//! the Deployments reconciled meanwhile do not poll, since the list wakes those whose
//! workload differs from what they saw; if the watch fails before it has listed, they
//! are woken at once and poll from then on.
//!
//! Beside it, label-selected metadata watches of the other kinds kelp applies and prunes
//! (Services, Ingresses, Secrets, ConfigMaps) keep an index of what kelp applied there
//! for each Deployment ([`Workloads::owned`]): a first apply after a start prunes from
//! it instead of listing every kind for each Deployment. While any of those watches is
//! not listed and watching, the index is not used and the apply lists, as before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kelp_crds::Deployment;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;

use super::build::{DEPLOYMENT_LABEL, NAMESPACE_LABEL};
use super::plan::Readiness;

/// A workload's readiness as the last reconcile saw it and as its watch last delivered it.
#[derive(Clone, Debug, Default)]
struct Seen {
    reconciled: Option<Readiness>,
    watched: Option<Readiness>,
}

struct Watch {
    task: tokio::task::JoinHandle<()>,
    /// The watches of the other applied kinds, which feed `owned`.
    others: Vec<tokio::task::JoinHandle<()>>,
    owned: Arc<Mutex<Owned>>,
    /// Listed and watching: the Deployments on this cluster need not poll.
    live: Arc<AtomicBool>,
    /// Until the first list is complete (or the watch fails first): the Deployments
    /// that wait for it instead of polling.
    first_list: Arc<Mutex<Option<Vec<ObjectRef<Deployment>>>>>,
}

/// The workload watches of every target cluster, and what each Deployment's last
/// reconcile saw of its workload.
pub struct Workloads {
    watches: Mutex<Watches>,
    seen: Arc<Mutex<HashMap<ObjectRef<Deployment>, Seen>>>,
    wake: mpsc::UnboundedSender<ObjectRef<Deployment>>,
}

impl Workloads {
    /// The watches, and the stream of Deployments they wake.
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<ObjectRef<Deployment>>) {
        let (wake, rx) = mpsc::unbounded_channel();
        let w = Workloads {
            watches: Mutex::default(),
            seen: Arc::default(),
            wake,
        };
        (Arc::new(w), rx)
    }

    /// Records what a reconcile of `dep` saw of its workload (None: no workload), and
    /// wakes it again when the watch had already delivered something else.
    pub fn saw(&self, dep: ObjectRef<Deployment>, workload: Option<Readiness>) {
        if reconciled(&self.seen, &dep, workload) {
            let _ = self.wake.send(dep);
        }
    }

    /// Forgets `dep` (deleted).
    pub fn forget(&self, dep: &ObjectRef<Deployment>) {
        self.seen.lock().unwrap().remove(dep);
    }

    /// Whether the workloads on the Cluster `uid` are watched (listed and watching).
    pub fn watched(&self, uid: &str) -> bool {
        self.watches
            .lock()
            .unwrap()
            .get(uid)
            .is_some_and(|w| !w.task.is_finished() && w.live.load(Ordering::Relaxed))
    }

    /// Whether a change of `dep`'s workload on the Cluster `uid` will wake `dep`, so it
    /// need not poll: the watch is live, or still on its first list (then `dep` is woken
    /// should the watch fail before it has listed).
    pub fn wakes(&self, uid: &str, dep: &ObjectRef<Deployment>) -> bool {
        let watches = self.watches.lock().unwrap();
        let Some(w) = watches.get(uid).filter(|w| !w.task.is_finished()) else {
            return false;
        };
        if w.live.load(Ordering::Relaxed) {
            return true;
        }
        match w.first_list.lock().unwrap().as_mut() {
            Some(waiting) => {
                waiting.push(dep.clone());
                true
            }
            None => false,
        }
    }

    /// Whether `dep`'s workload on the Cluster `uid` is applied and watched: a change of
    /// its status wakes `dep`.
    pub fn follows(&self, uid: &str, dep: &ObjectRef<Deployment>) -> bool {
        self.watched(uid)
            && self
                .seen
                .lock()
                .unwrap()
                .get(dep)
                .is_some_and(|s| s.reconciled.is_some())
    }

    /// Starts watching the workloads on the Cluster `uid` through `target`, unless a
    /// watch of it runs already. `identity` says which Kubernetes `target` talks to, as
    /// whom ([`crate::targets::Targets::identity`]): Clusters of one identity share one
    /// set of watches, and a Cluster whose identity changes moves to the new one.
    pub fn ensure(&self, uid: &str, identity: &str, target: &Client) {
        let mut watches = self.watches.lock().unwrap();
        watches.assign(uid, identity);
        if watches.get(uid).is_some_and(|w| !w.task.is_finished()) {
            return;
        }
        let live = Arc::new(AtomicBool::new(false));
        let first_list = Arc::new(Mutex::new(Some(Vec::new())));
        let owned = Arc::new(Mutex::new(Owned::default()));
        let task = tokio::spawn(watch(
            target.clone(),
            Liveness {
                live: live.clone(),
                first_list: first_list.clone(),
            },
            self.seen.clone(),
            self.wake.clone(),
            owned.clone(),
        ));
        let others = vec![
            tokio::spawn(watch_owned::<Service>(target.clone(), owned.clone())),
            tokio::spawn(watch_owned::<Ingress>(target.clone(), owned.clone())),
            tokio::spawn(watch_owned::<Secret>(target.clone(), owned.clone())),
            tokio::spawn(watch_owned::<ConfigMap>(target.clone(), owned.clone())),
        ];
        watches.by_identity.insert(
            identity.to_string(),
            Watch {
                task,
                others,
                owned,
                live,
                first_list,
            },
        );
    }

    /// What kelp applied on the Cluster `uid` for `dep` in its namespace
    /// (`apiVersion/kind/name`, as [`super::owned`] lists it), when every kind's watch
    /// has listed and is watching; None otherwise (list instead). Objects applied moments
    /// ago may not be in it yet: what this process applied itself it knows anyway.
    pub fn owned(&self, uid: &str, dep: &ObjectRef<Deployment>) -> Option<BTreeSet<String>> {
        let watches = self.watches.lock().unwrap();
        let w = watches.get(uid).filter(|w| w.running())?;
        w.owned.lock().unwrap().of(dep)
    }

    /// The readiness the watch last delivered of `dep`'s workload, when the objects
    /// `wrote` (`apiVersion/kind/name` -> the version an apply wrote) are all on the
    /// Cluster `uid`, watched, and unchanged since: applying them again would change
    /// nothing. None otherwise (apply them).
    pub fn unchanged(
        &self,
        uid: &str,
        dep: &ObjectRef<Deployment>,
        wrote: &BTreeMap<String, Version>,
    ) -> Option<Readiness> {
        {
            let watches = self.watches.lock().unwrap();
            let w = watches.get(uid).filter(|w| w.running())?;
            if !w.owned.lock().unwrap().unchanged(dep, wrote) {
                return None;
            }
        }
        self.seen.lock().unwrap().get(dep)?.watched.clone()
    }

    /// Stops the watch of the Cluster `uid` (deleted), unless another Cluster shares it.
    pub fn stop(&self, uid: &str) {
        self.watches.lock().unwrap().unassign(uid);
    }
}

/// The watches by target identity, and each Cluster's identity.
#[derive(Default)]
struct Watches {
    by_identity: HashMap<String, Watch>,
    identity_of: HashMap<String, String>,
}

impl Watches {
    /// The watch of the Cluster `uid`.
    fn get(&self, uid: &str) -> Option<&Watch> {
        self.by_identity.get(self.identity_of.get(uid)?)
    }

    fn assign(&mut self, uid: &str, identity: &str) {
        if self.identity_of.get(uid).map(String::as_str) != Some(identity) {
            self.unassign(uid);
            self.identity_of
                .insert(uid.to_string(), identity.to_string());
        }
    }

    /// Forgets the Cluster `uid`; stops its watch when no other Cluster uses it.
    fn unassign(&mut self, uid: &str) {
        if let Some(old) = self.identity_of.remove(uid)
            && !self.identity_of.values().any(|i| *i == old)
            && let Some(w) = self.by_identity.remove(&old)
        {
            w.abort();
        }
    }
}

impl Watch {
    /// Whether every one of its watches still runs.
    fn running(&self) -> bool {
        !self.task.is_finished() && !self.others.iter().any(|t| t.is_finished())
    }

    fn abort(&self) {
        self.task.abort();
        for t in &self.others {
            t.abort();
        }
    }
}

impl Drop for Workloads {
    fn drop(&mut self) {
        for (_, w) in self.watches.lock().unwrap().by_identity.drain() {
            w.abort();
        }
    }
}

/// The kinds kelp applies, as `Owned` indexes them: the workload's watch feeds the first.
const KINDS: usize = 5;

/// One kind's entries in `Owned`: each object's `namespace/name` -> (its Deployment,
/// its id, its version).
type KindIndex = HashMap<String, (ObjectRef<Deployment>, String, Version)>;

/// The version of an object on a target, as an apply wrote it or a watch delivered it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Version {
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
}

impl Version {
    pub fn of(meta: &kube::api::ObjectMeta) -> Self {
        Version {
            resource_version: meta.resource_version.clone(),
            generation: meta.generation,
        }
    }

    /// Whether `self` is still what was written as `wrote`: the same resourceVersion,
    /// or, for a kind with a generation, the same generation (a status write changes
    /// the version, not what kelp applied).
    fn unchanged_since(&self, wrote: &Version) -> bool {
        (self.resource_version.is_some() && self.resource_version == wrote.resource_version)
            || (self.generation.is_some() && self.generation == wrote.generation)
    }
}

/// An index of the objects on one target that carry kelp's labels, by the kelp
/// Deployment they were applied for, fed by one watch per kind.
#[derive(Default)]
struct Owned {
    /// Kinds whose watch has listed and is watching now.
    live: [bool; KINDS],
    /// Objects being listed again (after an `Init`), by kind: they replace the kind's
    /// entries at `InitDone`.
    relisting: [Option<KindIndex>; KINDS],
    /// By kind, each object's `namespace/name` -> (its Deployment, its id, its version).
    objects: [KindIndex; KINDS],
}

impl Owned {
    fn of(&self, dep: &ObjectRef<Deployment>) -> Option<BTreeSet<String>> {
        Some(self.of_dep(dep)?.map(|(id, _)| id.clone()).collect())
    }

    /// `dep`'s objects (id, version) of every kind, when every kind is listed and
    /// watched; None otherwise.
    fn of_dep<'a>(
        &'a self,
        dep: &'a ObjectRef<Deployment>,
    ) -> Option<impl Iterator<Item = (&'a String, &'a Version)> + 'a> {
        self.live.iter().all(|l| *l).then(|| {
            self.objects
                .iter()
                .flat_map(|m| m.values())
                .filter(move |(d, _, _)| d == dep)
                .map(|(_, id, v)| (id, v))
        })
    }

    /// Whether every kind is watched and each object in `wrote` is there for `dep`,
    /// unchanged since it was written.
    fn unchanged(&self, dep: &ObjectRef<Deployment>, wrote: &BTreeMap<String, Version>) -> bool {
        let Some(objects) = self.of_dep(dep) else {
            return false;
        };
        let now: HashMap<&str, &Version> = objects.map(|(id, v)| (id.as_str(), v)).collect();
        wrote
            .iter()
            .all(|(id, w)| now.get(id.as_str()).is_some_and(|v| v.unchanged_since(w)))
    }

    /// Applies one watch event of the kind `kind` (`apiVersion/Kind`).
    fn event<K: kube::Resource>(
        &mut self,
        i: usize,
        kind: &str,
        event: &Result<watcher::Event<K>, watcher::Error>,
    ) {
        let entry = |o: &K| {
            let meta = o.meta();
            let key = format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            );
            let labels = meta.labels.as_ref();
            let dep = labels
                .and_then(|l| Some((l.get(DEPLOYMENT_LABEL)?, l.get(NAMESPACE_LABEL)?)))
                // Listed in its Deployment's namespace only, as the lists were.
                .filter(|(_, ns)| meta.namespace.as_deref() == Some(ns.as_str()))
                .map(|(name, ns)| ObjectRef::new(name).within(ns));
            let id = format!("{kind}/{}", meta.name.as_deref().unwrap_or_default());
            (key, dep.map(|d| (d, id, Version::of(meta))))
        };
        match event {
            Ok(watcher::Event::Init) => {
                self.live[i] = false;
                self.relisting[i] = Some(HashMap::new());
            }
            Ok(watcher::Event::InitApply(o)) => {
                if let (key, Some(v)) = entry(o)
                    && let Some(r) = self.relisting[i].as_mut()
                {
                    r.insert(key, v);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(r) = self.relisting[i].take() {
                    self.objects[i] = r;
                }
                self.live[i] = true;
            }
            Ok(watcher::Event::Apply(o)) => {
                match entry(o) {
                    (key, Some(v)) => self.objects[i].insert(key, v),
                    (key, None) => self.objects[i].remove(&key),
                };
            }
            Ok(watcher::Event::Delete(o)) => {
                self.objects[i].remove(&entry(o).0);
            }
            // Events may have been missed until the watch lists or resumes again.
            Err(_) => self.live[i] = false,
        }
    }
}

/// Feeds `owned` with the objects of the kind `K` that carry kelp's labels.
async fn watch_owned<K>(target: Client, owned: Arc<Mutex<Owned>>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let (i, kind) = match K::kind(&()).as_ref() {
        "Service" => (1, "v1/Service"),
        "Ingress" => (2, "networking.k8s.io/v1/Ingress"),
        "Secret" => (3, "v1/Secret"),
        _ => (4, "v1/ConfigMap"),
    };
    // An Api of PartialObjectMeta asks for metadata only.
    let api: Api<PartialObjectMeta<K>> = Api::all(target);
    let config = watcher::Config::default().labels(DEPLOYMENT_LABEL);
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        if let Err(e) = &event {
            tracing::debug!(error = %e, kind, "watching applied objects on a target cluster");
        }
        owned.lock().unwrap().event(i, kind, &event);
    }
}

/// The watch's side of [`Watch`]'s `live` and `first_list`.
struct Liveness {
    live: Arc<AtomicBool>,
    first_list: Arc<Mutex<Option<Vec<ObjectRef<Deployment>>>>>,
}

async fn watch(
    target: Client,
    liveness: Liveness,
    seen: Arc<Mutex<HashMap<ObjectRef<Deployment>, Seen>>>,
    wake: mpsc::UnboundedSender<ObjectRef<Deployment>>,
    owned: Arc<Mutex<Owned>>,
) {
    let api: Api<AppsDeployment> = Api::all(target);
    let config = watcher::Config::default().labels(DEPLOYMENT_LABEL);
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        owned.lock().unwrap().event(0, "apps/v1/Deployment", &event);
        let w = match event {
            Ok(watcher::Event::InitDone) => {
                liveness.live.store(true, Ordering::Relaxed);
                // Those that waited were woken by the list where their workload differed.
                liveness.first_list.lock().unwrap().take();
                continue;
            }
            Ok(watcher::Event::Apply(w) | watcher::Event::InitApply(w)) => w,
            // A workload deleted under kelp: its Deployment re-applies it.
            Ok(watcher::Event::Delete(w)) => {
                if let Some(dep) = owner(&w)
                    && seen
                        .lock()
                        .unwrap()
                        .remove(&dep)
                        .is_some_and(|s| s.reconciled.is_some())
                {
                    let _ = wake.send(dep);
                }
                continue;
            }
            Ok(watcher::Event::Init) => continue,
            Err(e) => {
                liveness.live.store(false, Ordering::Relaxed);
                let waiting = liveness.first_list.lock().unwrap().take();
                for dep in waiting.into_iter().flatten() {
                    let _ = wake.send(dep);
                }
                tracing::debug!(error = %e, "watching workloads on a target cluster");
                continue;
            }
        };
        let Some(dep) = owner(&w) else { continue };
        let changed = watched(&seen, &dep, Readiness::of(&w));
        if changed && wake.send(dep).is_err() {
            return;
        }
    }
}

/// Records what the watch delivered of `dep`'s workload; whether it differs from what
/// `dep`'s last reconcile saw. A Deployment not reconciled with a workload by this
/// process yet is not woken: its own reconcile is still to come.
fn watched(
    seen: &Mutex<HashMap<ObjectRef<Deployment>, Seen>>,
    dep: &ObjectRef<Deployment>,
    now: Readiness,
) -> bool {
    let mut seen = seen.lock().unwrap();
    let s = seen.entry(dep.clone()).or_default();
    let differs = s.reconciled.as_ref().is_some_and(|r| *r != now);
    s.watched = Some(now);
    differs
}

/// Records what a reconcile saw of `dep`'s workload; whether the watch has delivered
/// something else (the reconcile read an older state, or the watch lags behind it: one
/// more reconcile either way, never a missed change).
fn reconciled(
    seen: &Mutex<HashMap<ObjectRef<Deployment>, Seen>>,
    dep: &ObjectRef<Deployment>,
    now: Option<Readiness>,
) -> bool {
    let mut seen = seen.lock().unwrap();
    let s = seen.entry(dep.clone()).or_default();
    let differs = match (&now, &s.watched) {
        (Some(now), Some(w)) => w != now,
        _ => false,
    };
    s.reconciled = now;
    differs
}

/// The kelp Deployment a workload was applied for, from its labels.
fn owner(w: &AppsDeployment) -> Option<ObjectRef<Deployment>> {
    let labels = w.labels();
    let name = labels.get(DEPLOYMENT_LABEL)?;
    let ns = labels.get(NAMESPACE_LABEL)?;
    Some(ObjectRef::new(name).within(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(
        generation: i64,
        observed: i64,
        ready: i32,
        unavailable: Option<&str>,
    ) -> AppsDeployment {
        let conditions = match unavailable {
            Some(m) => format!("[{{type: Available, status: \"False\", message: \"{m}\"}}]"),
            None => "[{type: Available, status: \"True\"}]".into(),
        };
        serde_yaml_ng::from_str(&format!(
            "metadata: {{name: fish, namespace: ns, generation: {generation}, labels: {{{DEPLOYMENT_LABEL}: fish, {NAMESPACE_LABEL}: ns}}}}\nstatus: {{observedGeneration: {observed}, readyReplicas: {ready}, conditions: {conditions}}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn readiness_counts_ready_replicas_of_the_current_generation_only() {
        assert_eq!(Readiness::of(&workload(2, 1, 3, None)).ready_replicas, None);
        assert_eq!(
            Readiness::of(&workload(2, 2, 3, None)).ready_replicas,
            Some(3)
        );
        assert_eq!(
            Readiness::of(&workload(1, 1, 0, Some("no node")))
                .unavailable
                .as_deref(),
            Some("no node")
        );
        assert_eq!(
            owner(&workload(1, 1, 0, None)),
            Some(ObjectRef::new("fish").within("ns"))
        );
    }

    #[tokio::test]
    async fn a_watch_on_its_first_list_is_trusted_and_wakes_its_waiters_if_it_fails() {
        let (w, mut rx) = Workloads::new();
        let dep = ObjectRef::<Deployment>::new("fish").within("ns");
        // A target whose API is not there: the watch fails on its first list.
        let kubeconfig = crate::targets::test_kubeconfig("https://127.0.0.1:9");
        let target = crate::targets::client_from_kubeconfig(&kubeconfig)
            .await
            .unwrap();
        assert!(!w.wakes("uid", &dep), "no watch: poll");
        w.ensure("uid", "id", &target);
        // The task has not run yet: the watch is on its first list.
        assert!(w.wakes("uid", &dep));
        let woken = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("woken when the watch failed");
        assert_eq!(woken, Some(dep.clone()));
        assert!(!w.wakes("uid", &dep), "failed before listing: poll");
    }

    #[tokio::test]
    async fn clusters_of_one_identity_share_one_set_of_watches() {
        let (w, _rx) = Workloads::new();
        let dep = ObjectRef::<Deployment>::new("fish").within("ns");
        let kubeconfig = crate::targets::test_kubeconfig("https://127.0.0.1:9");
        let target = crate::targets::client_from_kubeconfig(&kubeconfig)
            .await
            .unwrap();
        let running = |w: &Workloads| w.watches.lock().unwrap().by_identity.len();
        w.ensure("a", "same", &target);
        w.ensure("b", "same", &target);
        assert_eq!(running(&w), 1, "one Kubernetes, one set of watches");
        assert!(w.wakes("a", &dep) && w.wakes("b", &dep));
        w.stop("a");
        assert_eq!(running(&w), 1, "still used by b");
        assert!(!w.wakes("a", &dep) && w.wakes("b", &dep));
        // b's kubeconfig now points elsewhere: it moves, and the old watch stops.
        w.ensure("b", "other", &target);
        assert_eq!(running(&w), 1);
        assert!(w.watches.lock().unwrap().by_identity.contains_key("other"));
        w.stop("b");
        assert_eq!(running(&w), 0);
    }

    #[test]
    fn the_owned_index_answers_only_while_every_kind_is_listed_and_follows_labels() {
        let meta = |name: &str, ns: &str, dep: Option<(&str, &str)>| -> PartialObjectMeta<Secret> {
            let labels = dep.map_or(String::new(), |(d, dns)| {
                format!(", labels: {{{DEPLOYMENT_LABEL}: {d}, {NAMESPACE_LABEL}: {dns}}}")
            });
            serde_yaml_ng::from_str(&format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}{labels}}}\n"
            ))
            .unwrap()
        };
        let fish = ObjectRef::<Deployment>::new("fish").within("ns");
        let ids = |o: &Owned| o.of(&fish).map(|s| s.into_iter().collect::<Vec<_>>());
        let mut o = Owned::default();
        let ev = |o: &mut Owned, i: usize, e: watcher::Event<PartialObjectMeta<Secret>>| {
            o.event(i, "v1/Secret", &Ok(e))
        };
        for i in 0..KINDS {
            ev(&mut o, i, watcher::Event::Init);
        }
        ev(
            &mut o,
            3,
            watcher::Event::InitApply(meta("fish-env", "ns", Some(("fish", "ns")))),
        );
        // Labelled for fish, but outside its namespace: not fish's (the lists were namespaced).
        ev(
            &mut o,
            3,
            watcher::Event::InitApply(meta("stray", "other", Some(("fish", "ns")))),
        );
        for i in 0..KINDS - 1 {
            ev(&mut o, i, watcher::Event::InitDone);
        }
        assert_eq!(ids(&o), None, "one kind not listed yet: list instead");
        ev(&mut o, 4, watcher::Event::InitDone);
        assert_eq!(ids(&o), Some(vec!["v1/Secret/fish-env".to_string()]));
        ev(
            &mut o,
            3,
            watcher::Event::Apply(meta("fish-rclone", "ns", Some(("fish", "ns")))),
        );
        // Its labels were taken off: no longer kelp's.
        ev(
            &mut o,
            3,
            watcher::Event::Apply(meta("fish-env", "ns", None)),
        );
        assert_eq!(ids(&o), Some(vec!["v1/Secret/fish-rclone".to_string()]));
        ev(
            &mut o,
            3,
            watcher::Event::Delete(meta("fish-rclone", "ns", Some(("fish", "ns")))),
        );
        assert_eq!(ids(&o), Some(vec![]));
        // A failed watch may have missed events until it lists or resumes again.
        o.event::<PartialObjectMeta<Secret>>(
            3,
            "v1/Secret",
            &Err(watcher::Error::NoResourceVersion),
        );
        assert_eq!(ids(&o), None);
        // A relist replaces what the kind knew.
        ev(&mut o, 3, watcher::Event::Init);
        ev(
            &mut o,
            3,
            watcher::Event::InitApply(meta("fish-new", "ns", Some(("fish", "ns")))),
        );
        assert_eq!(ids(&o), None);
        ev(&mut o, 3, watcher::Event::InitDone);
        assert_eq!(ids(&o), Some(vec!["v1/Secret/fish-new".to_string()]));
    }

    #[test]
    fn objects_count_as_unchanged_only_while_watched_as_written() {
        let fish = ObjectRef::<Deployment>::new("fish").within("ns");
        let obj = |kind: &str, rv: &str, generation: Option<i64>, labelled: bool| {
            let labels = if labelled {
                format!(", labels: {{{DEPLOYMENT_LABEL}: fish, {NAMESPACE_LABEL}: ns}}")
            } else {
                String::new()
            };
            let generation = generation.map_or(String::new(), |g| format!(", generation: {g}"));
            serde_yaml_ng::from_str::<PartialObjectMeta<ConfigMap>>(&format!(
                "apiVersion: v1\nkind: {kind}\nmetadata: {{name: fish, namespace: ns, resourceVersion: \"{rv}\"{generation}{labels}}}\n"
            ))
            .unwrap()
        };
        let version = |rv: &str, generation: Option<i64>| Version {
            resource_version: Some(rv.into()),
            generation,
        };
        let wrote = BTreeMap::from([
            (
                "apps/v1/Deployment/fish".to_string(),
                version("10", Some(1)),
            ),
            ("v1/ConfigMap/fish".to_string(), version("11", None)),
        ]);
        let mut o = Owned::default();
        let ev = |o: &mut Owned, i: usize, kind: &str, e| o.event(i, kind, &Ok(e));
        // The workload (kind 0) and the ConfigMap (kind 4) at a version, as watched.
        let workload = |o: &mut Owned, rv: &str, generation: i64| {
            let w = obj("Deployment", rv, Some(generation), true);
            ev(o, 0, "apps/v1/Deployment", watcher::Event::Apply(w))
        };
        let config_map = |o: &mut Owned, rv: &str, labelled: bool| {
            let c = obj("ConfigMap", rv, None, labelled);
            ev(o, 4, "v1/ConfigMap", watcher::Event::Apply(c))
        };
        for i in 0..KINDS {
            ev(&mut o, i, "x", watcher::Event::Init);
        }
        let listed = obj("Deployment", "10", Some(1), true);
        ev(
            &mut o,
            0,
            "apps/v1/Deployment",
            watcher::Event::InitApply(listed),
        );
        let listed = obj("ConfigMap", "11", None, true);
        ev(&mut o, 4, "v1/ConfigMap", watcher::Event::InitApply(listed));
        for i in 0..KINDS - 1 {
            ev(&mut o, i, "x", watcher::Event::InitDone);
        }
        assert!(!o.unchanged(&fish, &wrote), "one kind not listed yet");
        ev(&mut o, 4, "x", watcher::Event::InitDone);
        assert!(o.unchanged(&fish, &wrote));
        // A status write: a new version of the same generation.
        workload(&mut o, "12", 1);
        assert!(o.unchanged(&fish, &wrote));
        // Someone changed its spec.
        workload(&mut o, "13", 2);
        assert!(!o.unchanged(&fish, &wrote));
        workload(&mut o, "10", 1);
        assert!(o.unchanged(&fish, &wrote));
        // A kind without a generation: any new version is a change.
        config_map(&mut o, "14", true);
        assert!(!o.unchanged(&fish, &wrote));
        config_map(&mut o, "11", true);
        assert!(o.unchanged(&fish, &wrote));
        // Its labels taken off, or deleted: gone for kelp.
        config_map(&mut o, "11", false);
        assert!(!o.unchanged(&fish, &wrote));
        config_map(&mut o, "11", true);
        let gone = obj("ConfigMap", "11", None, true);
        ev(&mut o, 4, "v1/ConfigMap", watcher::Event::Delete(gone));
        assert!(!o.unchanged(&fish, &wrote));
        // Missed events: not known to be unchanged.
        config_map(&mut o, "11", true);
        assert!(o.unchanged(&fish, &wrote));
        let missed = watcher::Error::NoResourceVersion;
        o.event::<PartialObjectMeta<ConfigMap>>(4, "v1/ConfigMap", &Err(missed));
        assert!(!o.unchanged(&fish, &wrote));
    }

    #[test]
    fn only_a_readiness_the_last_reconcile_did_not_see_wakes_the_deployment() {
        let (w, _rx) = Workloads::new();
        let dep = ObjectRef::<Deployment>::new("fish").within("ns");
        let applied = workload(1, 1, 0, Some("0/1 scheduled"));
        let ready = workload(1, 1, 1, None);
        let event = |e: &AppsDeployment| watched(&w.seen, &dep, Readiness::of(e));
        let reconcile = |e: &AppsDeployment| reconciled(&w.seen, &dep, Some(Readiness::of(e)));
        // Not reconciled yet: nothing to wake.
        assert!(!event(&applied));
        // The reconcile saw what the watch delivered (its own apply).
        assert!(!reconcile(&applied));
        assert!(!event(&applied));
        // The kubelet's status write.
        assert!(event(&ready));
        assert!(!reconcile(&ready));
        assert!(!event(&ready));
        // The status changed between an apply and the reconcile's record of it.
        w.forget(&dep);
        assert!(!reconcile(&applied));
        assert!(event(&ready));
        // A reconcile that read the older state after the watch delivered Ready.
        assert!(reconcile(&applied), "woken again");
        assert!(!reconcile(&ready));
    }
}
