//! The object store: one global resourceVersion, typed writes with Kubernetes
//! semantics, deletion with finalizers, and the event history that watches replay.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::patch::{self, SchemaInfo};
use crate::schema;
use crate::status::ApiError;
use crate::types::{self, ResourceType};

/// Tunables of the server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Events kept for watches that resume from a resourceVersion; older ones get 410 Expired.
    pub history: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            history: 10_000,
            bookmark_interval: std::time::Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change to one object, as watches see it.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub key: (String, String),
    pub kind: EventType,
    /// Shared with the store (an event copies no object).
    pub object: Arc<Value>,
    /// The object before the change, so selector-filtered watches can tell objects
    /// entering or leaving their selection.
    pub old: Option<Arc<Value>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

/// Options common to writes.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub field_manager: String,
    pub field_validation: FieldValidation,
    pub dry_run: bool,
    pub force: bool,
}

/// The result of a write: the stored object, whether it was created, and warnings.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

type ObjKey = (String, String);

/// Events to send first, the receiver of later ones, and the resourceVersion at the start.
pub type WatchStart = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>, u64);

struct Inner {
    rv: u64,
    types: Vec<ResourceType>,
    /// Shared with the watch events that carry them: a write copies no object.
    objects: HashMap<(String, String), BTreeMap<ObjKey, Arc<Value>>>,
    history: VecDeque<Arc<Event>>,
    next_ip: u32,
    terminating: bool,
    /// Set while aggregated ClusterRoles are being rewritten (their writes do not recurse).
    aggregating: bool,
}

/// The server's state, shared by all request handlers.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    pub config: Config,
    /// Tokens and the ServiceAccount token key.
    pub auth: crate::auth::Auth,
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn is_cluster_role(rt: &ResourceType) -> bool {
    rt.group == "rbac.authorization.k8s.io" && rt.plural == "clusterroles"
}

fn meta(obj: &Value) -> &Value {
    &obj["metadata"]
}

fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && subdomain_syntax(name)
}

/// The characters and dots of an RFC 1123 subdomain, whatever its length.
fn subdomain_syntax(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Whether `a` and `b` are equal in every top-level field but those in `skip`.
/// Compares in place (objects can be large).
fn equal_but(a: &Value, b: &Value, skip: &[&str]) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let kept = |m: &'_ serde_json::Map<String, Value>| {
        m.iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .count()
    };
    kept(a) == kept(b)
        && a.iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Whether the two have the same spec: everything but metadata and status, what
/// bumps metadata.generation.
fn same_spec(a: &Value, b: &Value) -> bool {
    equal_but(a, b, &["metadata", "status", "apiVersion", "kind"])
}

/// Whether a write changed nothing: the objects are equal but for what changes on
/// every write (resourceVersion, and the times in managedFields).
fn unchanged(a: &Value, b: &Value) -> bool {
    fn meta(v: &Value) -> &Value {
        v.get("metadata").unwrap_or(&Value::Null)
    }
    fn managed(v: &Value) -> &Value {
        meta(v).get("managedFields").unwrap_or(&Value::Null)
    }
    let same_managed = match (managed(a), managed(b)) {
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| equal_but(a, b, &["time"]))
        }
        (a, b) => a == b,
    };
    same_managed
        && equal_but(a, b, &["metadata"])
        && equal_but(meta(a), meta(b), &["resourceVersion", "managedFields"])
}

fn random_suffix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(5)
        .collect()
}

impl Store {
    pub fn new(config: Config) -> Arc<Self> {
        let (tx, _) = broadcast::channel(config.history.max(1024));
        let store = Store {
            inner: Mutex::new(Inner {
                rv: 1,
                types: types::builtin_types(),
                objects: HashMap::new(),
                history: VecDeque::new(),
                next_ip: 1,
                terminating: false,
                aggregating: false,
            }),
            tx,
            config,
            auth: crate::auth::Auth::default(),
        };
        let ns_type = store.resolve("", "v1", "namespaces").unwrap();
        let opts = WriteOptions {
            field_manager: "kelp-testapi".into(),
            field_validation: FieldValidation::Ignore,
            dry_run: false,
            force: false,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            store
                .create(&ns_type, None, obj, &opts)
                .expect("built-in namespace");
        }
        // The bootstrap roles are aggregated once, after all are stored, not again after
        // each one (which made every new API server's start quadratic in them).
        store.lock().aggregating = true;
        for obj in crate::auth::bootstrap_objects() {
            let plural = match obj["kind"].as_str() {
                Some("ClusterRole") => "clusterroles",
                _ => "clusterrolebindings",
            };
            let rt = store
                .resolve("rbac.authorization.k8s.io", "v1", plural)
                .unwrap();
            store
                .create(&rt, None, obj, &opts)
                .expect("bootstrap RBAC object");
        }
        let roles = store
            .resolve("rbac.authorization.k8s.io", "v1", "clusterroles")
            .expect("the clusterroles type");
        {
            let mut inner = store.lock();
            inner.aggregating = false;
            store.aggregate_cluster_roles(&mut inner, &roles);
        }
        Arc::new(store)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    pub fn types(&self) -> Vec<ResourceType> {
        self.lock().types.clone()
    }

    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.lock()
            .types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// Whether the changes since `rv` are no longer all in the history: a watch from it
    /// is refused (410), and so is the next page of a list made at it.
    pub fn expired(&self, rv: u64) -> bool {
        self.lock().expired(rv)
    }

    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let inner = self.lock();
        inner
            .get(rt, ns, name)
            .map(|o| with_version(o.clone(), rt))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Objects of a type (in a namespace, or all), in key order, after `after` (for paging).
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        filter: &dyn Fn(&Value) -> bool,
        after: Option<&ObjKey>,
        limit: Option<usize>,
    ) -> (Vec<Value>, u64, Option<ObjKey>, usize) {
        let inner = self.lock();
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0;
        if let Some(objs) = inner.objects.get(&rt.store_key()) {
            for (key, obj) in objs {
                if ns.is_some_and(|n| n != key.0) || after.is_some_and(|a| key <= a) || !filter(obj)
                {
                    continue;
                }
                if limit.is_some_and(|l| items.len() >= l) {
                    remaining += 1;
                    continue;
                }
                if limit.is_some_and(|l| items.len() + 1 == l) {
                    next = Some(key.clone());
                }
                items.push(with_version((**obj).clone(), rt));
            }
        }
        if remaining == 0 {
            next = None;
        }
        (items, inner.rv, next, remaining)
    }

    /// Starts a watch: the events to send first (replayed history after `rv`, or the
    /// current objects as ADDED when `rv` is None), and a receiver for what follows.
    pub fn watch(&self, rt: &ResourceType, rv: Option<u64>) -> Result<WatchStart, ApiError> {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let key = rt.store_key();
        let first = match rv {
            None => inner
                .objects
                .get(&key)
                .into_iter()
                .flatten()
                .map(|(_, obj)| {
                    Arc::new(Event {
                        rv: obj["metadata"]["resourceVersion"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0),
                        key: key.clone(),
                        kind: EventType::Added,
                        object: obj.clone(),
                        old: None,
                    })
                })
                .collect(),
            Some(rv) => {
                if inner.expired(rv) {
                    let oldest = inner.history.front().map(|e| e.rv).unwrap_or(inner.rv + 1);
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        oldest.saturating_sub(1)
                    )));
                }
                inner
                    .history
                    .iter()
                    .filter(|e| e.rv > rv && e.key == key)
                    .cloned()
                    .collect()
            }
        };
        Ok((first, rx, inner.rv))
    }

    pub fn create(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut inner = self.lock();
        inner.check_body(rt, &body)?;
        let mut obj = body;
        if obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            match obj["metadata"]["generateName"].as_str() {
                Some(prefix) if !prefix.is_empty() => {
                    obj["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()))
                }
                _ => {
                    return Err(ApiError::invalid_field(
                        rt,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            }
        }
        let name = name_of(&obj).to_string();
        let ns = inner.namespace_for_write(rt, ns, &obj, true)?;
        if inner.get(rt, ns.as_deref(), &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        if let Some(ns) = &ns {
            obj["metadata"]["namespace"] = json!(ns);
        }
        self.commit(&mut inner, rt, None, obj, opts, None, false)
    }

    pub fn update(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut inner = self.lock();
        inner.check_body(rt, &body)?;
        if name_of(&body) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&body)
            )));
        }
        let Some(old) = inner.get(rt, ns, name).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && Some(rv) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::stale(rt, name));
        }
        let mut new = body;
        new["metadata"]["namespace"] = old["metadata"]["namespace"].clone();
        self.commit(&mut inner, rt, Some(old), new, opts, subresource, false)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        kind: PatchType,
        body: &Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut inner = self.lock();
        let old = inner.get(rt, ns, name).cloned();
        let schema_info: Box<dyn SchemaInfo + '_> = match &rt.schema {
            Some(s) => Box::new(patch::CrdSchema(s)),
            None => Box::new(patch::Builtin),
        };
        if kind == PatchType::Apply {
            inner.check_body(rt, body)?;
            // The API server checks the name of the applied result: a body without one
            // applies to the object the URL names.
            if !name_of(body).is_empty() && name_of(body) != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    name_of(body)
                )));
            }
            if opts.field_manager.is_empty() {
                return Err(ApiError::bad_request(
                    "PATCH, application/apply-patch+yaml requires fieldManager",
                ));
            }
            let ns = inner.namespace_for_write(rt, ns, body, old.is_none())?;
            let mut applied = body.clone();
            if name_of(&applied).is_empty() {
                if !applied["metadata"].is_object() {
                    applied["metadata"] = json!({});
                }
                applied["metadata"]["name"] = json!(name);
            }
            // Apply on the main resource ignores status, and on /status everything else.
            if rt.status
                && let Some(m) = applied.as_object_mut()
            {
                if subresource == Some("status") {
                    m.retain(|k, _| {
                        k == "status" || k == "apiVersion" || k == "kind" || k == "metadata"
                    });
                } else {
                    m.remove("status");
                }
            }
            let api_version = rt.api_version();
            let ts = now();
            let mut new = patch::apply(patch::ApplyRequest {
                current: old.as_ref(),
                applied: &applied,
                manager: &opts.field_manager,
                force: opts.force,
                subresource,
                api_version: &api_version,
                now: &ts,
                schema: schema_info.as_ref(),
            })
            .map_err(|conflicts| {
                let mut err = ApiError::new(409, "Conflict", patch::conflict_message(&conflicts));
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {:?}", c.manager), "field": c.field}))
                    .collect();
                err.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}));
                err
            })?;
            if let Some(ns) = &ns {
                new["metadata"]["namespace"] = json!(ns);
            }
            new["metadata"]["name"] = json!(name);
            return self.commit(&mut inner, rt, old, new, opts, subresource, true);
        }
        let Some(old) = old else {
            return Err(ApiError::not_found(rt, name));
        };
        let mut new = old.clone();
        match kind {
            PatchType::Json => patch::json_patch(&mut new, body).map_err(|e| match e {
                patch::PatchError::TestFailed(m) => ApiError::invalid_field(
                    rt,
                    name,
                    "",
                    format!("the server rejected our request due to an error in our request: {m}"),
                ),
                patch::PatchError::Invalid(m) => ApiError::invalid_field(rt, name, "", m),
                patch::PatchError::BadRequest(m) => ApiError::bad_request(m),
            })?,
            PatchType::Merge => patch::merge_patch(&mut new, body),
            PatchType::Strategic => {
                if rt.is_custom() {
                    return Err(ApiError::unsupported_media_type(
                        "application/strategic-merge-patch+json",
                    ));
                }
                patch::strategic_merge_patch(&mut new, body, schema_info.as_ref()).map_err(|e| {
                    match e {
                        patch::PatchError::BadRequest(m) => ApiError::bad_request(m),
                        patch::PatchError::Invalid(m) | patch::PatchError::TestFailed(m) => {
                            ApiError::invalid_field(rt, name, "", m)
                        }
                    }
                })?
            }
            PatchType::Apply => unreachable!(),
        }
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
            && kind != PatchType::Json
            && Some(rv) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::stale(rt, name));
        }
        self.commit(&mut inner, rt, Some(old), new, opts, subresource, false)
    }

    /// Deletes an object: with finalizers it is only marked (deletionTimestamp) until
    /// the last finalizer goes. Returns the object as last stored.
    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        preconditions: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let Some(old) = inner.get(rt, ns, name).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        if let Some(uid) = preconditions["uid"].as_str()
            && Some(uid) != old["metadata"]["uid"].as_str()
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old["metadata"]["uid"].as_str().unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = preconditions["resourceVersion"].as_str()
            && Some(rv) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    old["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                ),
            ));
        }
        if dry_run {
            return Ok(with_version(old, rt));
        }
        let out = self.delete_locked(&mut inner, rt, old);
        self.reap(&mut inner);
        Ok(with_version(out, rt))
    }

    fn delete_locked(&self, inner: &mut Inner, rt: &ResourceType, old: Value) -> Value {
        let cascade = rt.group.is_empty() && rt.plural == "namespaces"
            || rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions";
        let out = if finalizers(&old).is_empty() && !cascade {
            self.remove(inner, rt, &old)
        } else if old["metadata"]["deletionTimestamp"].is_string() {
            old
        } else {
            let mut new = old.clone();
            new["metadata"]["deletionTimestamp"] = json!(now());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if cascade && rt.plural == "namespaces" {
                new["status"]["phase"] = json!("Terminating");
            }
            self.store(inner, rt, new)
        };
        if cascade && out["metadata"]["deletionTimestamp"].is_string() {
            inner.terminating = true;
            let name = name_of(&out).to_string();
            let doomed: Vec<(ResourceType, Value)> = if rt.plural == "namespaces" {
                let mut seen = std::collections::HashSet::new();
                inner
                    .types
                    .iter()
                    .filter(|t| t.namespaced && seen.insert(t.store_key()))
                    .flat_map(|t| {
                        inner
                            .objects
                            .get(&t.store_key())
                            .into_iter()
                            .flatten()
                            .filter(|(k, _)| k.0 == name)
                            .map(|(_, o)| (t.clone(), (**o).clone()))
                    })
                    .collect()
            } else {
                let types: Vec<ResourceType> = inner
                    .types
                    .iter()
                    .filter(|t| t.crd.as_deref() == Some(name.as_str()))
                    .cloned()
                    .collect();
                types
                    .first()
                    .map(|t| {
                        inner
                            .objects
                            .get(&t.store_key())
                            .into_iter()
                            .flatten()
                            .map(|(_, o)| (t.clone(), (**o).clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for (t, obj) in doomed {
                self.delete_locked(inner, &t, obj);
            }
        }
        out
    }

    /// Finishes namespaces and CRDs that are terminating and now empty.
    fn reap(&self, inner: &mut Inner) {
        while inner.terminating {
            inner.terminating = false;
            let ns_type = inner
                .types
                .iter()
                .find(|t| t.group.is_empty() && t.plural == "namespaces")
                .cloned()
                .unwrap();
            let crd_type = inner
                .types
                .iter()
                .find(|t| t.plural == "customresourcedefinitions")
                .cloned()
                .unwrap();
            for (rt, is_ns) in [(ns_type, true), (crd_type, false)] {
                let candidates: Vec<Value> = inner
                    .objects
                    .get(&rt.store_key())
                    .into_iter()
                    .flatten()
                    .filter(|(_, o)| o["metadata"]["deletionTimestamp"].is_string())
                    .map(|(_, o)| (**o).clone())
                    .collect();
                for obj in candidates {
                    let name = name_of(&obj).to_string();
                    let empty = if is_ns {
                        inner.objects.iter().all(|((g, p), objs)| {
                            (g.is_empty() && p == "namespaces") || objs.keys().all(|k| k.0 != name)
                        })
                    } else {
                        let keys: Vec<_> = inner
                            .types
                            .iter()
                            .filter(|t| t.crd.as_deref() == Some(name.as_str()))
                            .map(|t| t.store_key())
                            .collect();
                        keys.iter()
                            .all(|k| inner.objects.get(k).is_none_or(|o| o.is_empty()))
                    };
                    if empty {
                        if finalizers(&obj).is_empty() {
                            self.remove(inner, &rt, &obj);
                        }
                    } else {
                        inner.terminating = true;
                    }
                }
            }
            // Only loop again when a removal may have emptied something else.
            if inner.terminating {
                break;
            }
        }
    }

    pub fn delete_collection(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        filter: &dyn Fn(&Value) -> bool,
        dry_run: bool,
    ) -> Result<Vec<Value>, ApiError> {
        let (items, ..) = self.list(rt, ns, filter, None, None);
        if dry_run {
            return Ok(items);
        }
        let mut inner = self.lock();
        let mut out = Vec::new();
        for item in items {
            let ns = item["metadata"]["namespace"].as_str().map(String::from);
            if let Some(obj) = inner.get(rt, ns.as_deref(), name_of(&item)).cloned() {
                out.push(self.delete_locked(&mut inner, rt, obj));
            }
        }
        self.reap(&mut inner);
        Ok(out)
    }

    /// The shared tail of every write: system metadata, schema, generation,
    /// managedFields, no-op detection, finalizer rules, then store and notify.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        old: Option<Value>,
        mut new: Value,
        opts: &WriteOptions,
        subresource: Option<&str>,
        applied: bool,
    ) -> Result<Written, ApiError> {
        let name = name_of(&new).to_string();
        let mut warnings = Vec::new();
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        // RBAC objects (`system:discovery`) only need a valid path segment.
        let path_segment = rt.group == "rbac.authorization.k8s.io"
            && !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains(['/', '%']);
        let any_name = rt.group.is_empty() && rt.plural == "events";
        if !is_dns_subdomain(&name) && !any_name && !path_segment {
            // As apimachinery's IsDNS1123Subdomain: one error per broken rule.
            let mut errors = Vec::new();
            let invalid = |detail: &str| crate::schema::FieldError {
                field: "metadata.name".into(),
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {name:?}: {detail}"),
            };
            if name.len() > 253 {
                errors.push(invalid("must be no more than 253 characters"));
            }
            if !subdomain_syntax(&name) {
                errors.push(invalid(
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                ));
            }
            return Err(ApiError::invalid(rt, &name, &errors));
        }
        // Subresources: the main endpoint keeps the stored status, /status keeps the rest.
        match (&old, subresource) {
            (Some(old), Some("status")) => {
                let status = new.get("status").cloned();
                let managed = new["metadata"]["managedFields"].clone();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        new.as_object_mut().unwrap().remove("status");
                    }
                }
                if applied {
                    new["metadata"]["managedFields"] = managed;
                }
            }
            (Some(old), _) if rt.status => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().unwrap().remove("status");
                }
            },
            (None, _) if rt.status && rt.is_custom() => {
                new.as_object_mut().unwrap().remove("status");
            }
            _ => {}
        }
        // System-owned metadata.
        let m = new["metadata"].as_object_mut().unwrap();
        m.remove("selfLink");
        match &old {
            Some(old) => {
                for key in [
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                ] {
                    match old["metadata"].get(key) {
                        Some(v) => m.insert(key.into(), v.clone()),
                        None => m.remove(key),
                    };
                }
                if !applied {
                    m.insert(
                        "managedFields".into(),
                        old["metadata"]["managedFields"].clone(),
                    );
                }
            }
            None => {
                m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
                m.insert("creationTimestamp".into(), json!(now()));
                m.insert("generation".into(), json!(1));
                m.remove("deletionTimestamp");
                m.remove("deletionGracePeriodSeconds");
                if !applied {
                    m.remove("managedFields");
                }
            }
        }
        if m.get("managedFields").is_some_and(Value::is_null) {
            m.remove("managedFields");
        }
        self.builtin_defaults(inner, rt, &mut new);
        // CRD schema: prune unknown fields, default, validate.
        if let Some(schema_v) = &rt.schema {
            let unknown = schema::prune(schema_v, &mut new);
            if !unknown.is_empty() {
                match opts.field_validation {
                    FieldValidation::Strict => {
                        let list: Vec<String> = unknown
                            .iter()
                            .map(|u| format!("unknown field {u:?}"))
                            .collect();
                        return Err(ApiError::bad_request(format!(
                            "strict decoding error: {}",
                            list.join(", ")
                        )));
                    }
                    FieldValidation::Warn => {
                        warnings.extend(unknown.iter().map(|u| format!("unknown field {u:?}")))
                    }
                    FieldValidation::Ignore => {}
                }
            }
            schema::apply_defaults(schema_v, &mut new);
            let errors = schema_v.validate(&new, old.as_ref());
            if !errors.is_empty() {
                return Err(ApiError::invalid(rt, &name, &errors));
            }
        }
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            let errors = types::check_crd(&new);
            if !errors.is_empty() {
                let errs: Vec<schema::FieldError> = errors
                    .into_iter()
                    .map(|(field, message)| schema::FieldError {
                        field,
                        reason: "FieldValueInvalid",
                        message,
                    })
                    .collect();
                return Err(ApiError::invalid(rt, &name, &errs));
            }
            accept_crd(&mut new, old.as_ref());
        }
        if let Some(old) = &old {
            let was_deleting = old["metadata"]["deletionTimestamp"].is_string();
            let before = finalizers(old);
            if was_deleting && finalizers(&new).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid_field(
                    rt,
                    &name,
                    "metadata.finalizers",
                    "Forbidden: no new finalizers can be added if the object is being deleted",
                ));
            }
            if !same_spec(old, &new) {
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                new["metadata"]["generation"] = json!(generation + 1);
            }
        }
        if !applied {
            let schema_info: Box<dyn SchemaInfo + '_> = match &rt.schema {
                Some(s) => Box::new(patch::CrdSchema(s)),
                None => Box::new(patch::Builtin),
            };
            patch::record_update(
                old.as_ref(),
                &mut new,
                &opts.field_manager,
                subresource,
                &rt.api_version(),
                &now(),
                schema_info.as_ref(),
            );
        }
        if let Some(old) = &old {
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            if unchanged(old, &new) {
                return Ok(Written {
                    object: with_version(old.clone(), rt),
                    created: false,
                    warnings,
                });
            }
        }
        if opts.dry_run {
            return Ok(Written {
                object: with_version(new, rt),
                created: old.is_none(),
                warnings,
            });
        }
        let created = old.is_none();
        let deleting_done =
            new["metadata"]["deletionTimestamp"].is_string() && finalizers(&new).is_empty();
        let is_cascading = rt.group.is_empty() && rt.plural == "namespaces"
            || rt.plural == "customresourcedefinitions";
        let stored = if deleting_done && !is_cascading {
            let stored = self.store(inner, rt, new);
            self.remove(inner, rt, &stored)
        } else {
            self.store(inner, rt, new)
        };
        if deleting_done && is_cascading {
            inner.terminating = true;
        }
        if rt.plural == "customresourcedefinitions" && !deleting_done {
            inner.register_crd(&stored);
        }
        self.reap(inner);
        Ok(Written {
            object: with_version(stored, rt),
            created,
            warnings,
        })
    }

    /// Server-side defaults of built-in kinds that clients rely on.
    fn builtin_defaults(&self, inner: &mut Inner, rt: &ResourceType, obj: &mut Value) {
        if !rt.group.is_empty() || rt.is_custom() {
            return;
        }
        match rt.plural.as_str() {
            "secrets" => {
                if let Some(Value::Object(string_data)) =
                    obj.as_object_mut().and_then(|o| o.remove("stringData"))
                {
                    let engine = base64::engine::general_purpose::STANDARD;
                    for (k, v) in string_data {
                        obj["data"][k] = json!(engine.encode(v.as_str().unwrap_or_default()));
                    }
                }
                if obj["type"].is_null() {
                    obj["type"] = json!("Opaque");
                }
            }
            "namespaces" if obj["status"]["phase"].is_null() => {
                obj["status"] = json!({"phase": "Active"});
            }
            "services" => {
                if obj["spec"]["clusterIP"].is_null() {
                    let n = inner.next_ip;
                    inner.next_ip += 1;
                    obj["spec"]["clusterIP"] = json!(format!("10.96.{}.{}", n / 250, n % 250 + 1));
                }
                if obj["spec"]["type"].is_null() {
                    obj["spec"]["type"] = json!("ClusterIP");
                }
            }
            _ => {}
        }
    }

    /// Stores `new` as the next version (the event's old object is the one it replaces).
    fn store(&self, inner: &mut Inner, rt: &ResourceType, mut new: Value) -> Value {
        inner.rv += 1;
        let rv = inner.rv;
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (
            new["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            name_of(&new).to_string(),
        );
        let new = Arc::new(new);
        let old = inner
            .objects
            .entry(rt.store_key())
            .or_default()
            .insert(key, new.clone());
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.push(inner, rt, kind, new.clone(), old);
        if rt.group == "events.k8s.io" && rt.plural == "events" {
            self.mirror_event(inner, &new);
        }
        if is_cluster_role(rt) {
            self.aggregate_cluster_roles(inner, rt);
        }
        (*new).clone()
    }

    /// What Kubernetes' clusterrole-aggregation controller does: the rules of a ClusterRole
    /// with an `aggregationRule` are the union of the rules of the ClusterRoles it selects.
    fn aggregate_cluster_roles(&self, inner: &mut Inner, rt: &ResourceType) {
        if inner.aggregating {
            return;
        }
        inner.aggregating = true;
        let roles: Vec<Value> = inner
            .objects
            .get(&rt.store_key())
            .map(|m| m.values().map(|o| (**o).clone()).collect())
            .unwrap_or_default();
        for (name, rules) in crate::auth::aggregate(&roles) {
            let Some(old) = inner.get(rt, None, &name).cloned() else {
                continue;
            };
            let mut new = old.clone();
            new["rules"] = Value::Array(rules);
            self.store(inner, rt, new);
        }
        inner.aggregating = false;
    }

    /// The API server keeps one store for Events and serves it as both core/v1 and
    /// events.k8s.io/v1; here an events.k8s.io Event is mirrored into a core/v1 Event
    /// (so `kubectl describe` and `kubectl get events` show what controllers record).
    fn mirror_event(&self, inner: &mut Inner, ev: &Value) {
        let Some(core) = inner
            .types
            .iter()
            .find(|t| t.group.is_empty() && t.plural == "events")
            .cloned()
        else {
            return;
        };
        let ns = ev["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = name_of(ev).to_string();
        let old = inner
            .objects
            .get(&core.store_key())
            .and_then(|o| o.get(&(ns, name)))
            .cloned();
        let series = &ev["series"];
        let last = series["lastObservedTime"]
            .as_str()
            .or(ev["eventTime"].as_str())
            .map(|t| {
                t.split('.')
                    .next()
                    .unwrap_or(t)
                    .trim_end_matches('Z')
                    .to_string()
                    + "Z"
            });
        let first = ev["deprecatedFirstTimestamp"]
            .as_str()
            .map(String::from)
            .or_else(|| {
                ev["eventTime"].as_str().map(|t| {
                    t.split('.')
                        .next()
                        .unwrap_or(t)
                        .trim_end_matches('Z')
                        .to_string()
                        + "Z"
                })
            });
        let mut metadata = ev["metadata"].clone();
        if let Some(m) = metadata.as_object_mut() {
            m.remove("resourceVersion");
            m.remove("managedFields");
            if let Some(o) = &old {
                m.insert("uid".into(), o["metadata"]["uid"].clone());
                m.insert(
                    "creationTimestamp".into(),
                    o["metadata"]["creationTimestamp"].clone(),
                );
            }
        }
        let controller = ev["reportingController"].clone();
        let core_event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": metadata,
            "involvedObject": ev["regarding"],
            "related": ev["related"],
            "reason": ev["reason"],
            "message": ev["note"],
            "type": ev["type"],
            "action": ev["action"],
            "eventTime": ev["eventTime"],
            "reportingComponent": controller,
            "reportingInstance": ev["reportingInstance"],
            "source": {"component": controller},
            "count": series["count"].as_i64().unwrap_or(1),
            "firstTimestamp": first,
            "lastTimestamp": last,
        });
        let core_event = strip_nulls(core_event);
        self.store(inner, &core, core_event);
    }

    fn remove(&self, inner: &mut Inner, rt: &ResourceType, obj: &Value) -> Value {
        inner.rv += 1;
        let mut gone = obj.clone();
        gone["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let key = (
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            name_of(obj).to_string(),
        );
        let removed = inner
            .objects
            .get_mut(&rt.store_key())
            .and_then(|objs| objs.remove(&key));
        if rt.plural == "customresourcedefinitions" {
            let name = name_of(obj).to_string();
            inner
                .types
                .retain(|t| t.crd.as_deref() != Some(name.as_str()));
        }
        if rt.group.is_empty() && rt.plural == "namespaces"
            || rt.plural == "customresourcedefinitions"
        {
            inner.terminating = true;
        }
        self.push(
            inner,
            rt,
            EventType::Deleted,
            Arc::new(gone.clone()),
            Some(removed.unwrap_or_else(|| Arc::new(obj.clone()))),
        );
        if is_cluster_role(rt) {
            self.aggregate_cluster_roles(inner, rt);
        }
        gone
    }

    fn push(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        kind: EventType,
        object: Arc<Value>,
        old: Option<Arc<Value>>,
    ) {
        let event = Arc::new(Event {
            rv: inner.rv,
            key: rt.store_key(),
            kind,
            object,
            old,
        });
        inner.history.push_back(event.clone());
        while inner.history.len() > self.config.history {
            inner.history.pop_front();
        }
        let _ = self.tx.send(event);
    }
}

/// Objects are stored once per (group, plural) and shown in the version asked for.
fn with_version(mut obj: Value, rt: &ResourceType) -> Value {
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    obj
}

/// A CRD is served as soon as it is stored: names accepted and established.
fn accept_crd(crd: &mut Value, old: Option<&Value>) {
    let ts = now();
    let prev = |t: &str| -> Option<String> {
        old?["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == t)?["lastTransitionTime"]
            .as_str()
            .map(String::from)
    };
    let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "reason": reason, "message": msg, "lastTransitionTime": prev(t).unwrap_or_else(|| ts.clone())});
    let versions: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == json!(true))
        .map(|v| v["name"].clone())
        .collect();
    crd["status"] = json!({
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": crd["spec"]["names"].clone(),
        "storedVersions": versions,
    });
}

impl Inner {
    fn expired(&self, rv: u64) -> bool {
        let oldest = self.history.front().map(|e| e.rv).unwrap_or(self.rv + 1);
        rv < self.rv && oldest > rv + 1
    }

    fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Option<&Value> {
        let ns = if rt.namespaced {
            ns.unwrap_or("default")
        } else {
            ""
        };
        self.objects
            .get(&rt.store_key())?
            .get(&(ns.to_string(), name.to_string()))
            .map(|o| o.as_ref())
    }

    fn check_body(&self, rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be an object",
            ));
        }
        if let Some(av) = body["apiVersion"].as_str()
            && av != rt.api_version()
            && !(rt.group.is_empty() && av == "v1")
        {
            // Any served version of the same group is accepted.
            let group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            if group != rt.group {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    rt.api_version()
                )));
            }
        }
        if let Some(kind) = body["kind"].as_str()
            && kind != rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        Ok(())
    }

    /// The namespace a write goes to; it must exist, and new objects may not be
    /// created in a terminating namespace.
    fn namespace_for_write(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        body: &Value,
        creating: bool,
    ) -> Result<Option<String>, ApiError> {
        if !rt.namespaced {
            return Ok(None);
        }
        let url_ns = ns.unwrap_or("default");
        if let Some(body_ns) = meta(body)["namespace"].as_str()
            && !body_ns.is_empty()
            && body_ns != url_ns
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({url_ns})"
            )));
        }
        let ns_obj = self
            .objects
            .get(&(String::new(), "namespaces".into()))
            .and_then(|o| o.get(&(String::new(), url_ns.to_string())));
        match ns_obj {
            None => Err(ApiError::namespace_not_found(url_ns)),
            Some(n) if creating && n["metadata"]["deletionTimestamp"].is_string() => {
                Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {url_ns} because it is being terminated",
                    rt.qualified(),
                    name_of(body)
                )))
            }
            Some(_) => Ok(Some(url_ns.to_string())),
        }
    }

    fn register_crd(&mut self, crd: &Value) {
        let name = name_of(crd).to_string();
        self.types
            .retain(|t| t.crd.as_deref() != Some(name.as_str()));
        self.types.extend(types::crd_types(crd));
    }
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_starts_with_its_bootstrap_roles_aggregated() {
        let store = Store::new(Config::default());
        let rt = store
            .resolve("rbac.authorization.k8s.io", "v1", "clusterroles")
            .unwrap();
        let (roles, ..) = store.list(&rt, None, &|_| true, None, None);
        let aggregating: Vec<&Value> = roles
            .iter()
            .filter(|r| r.get("aggregationRule").is_some())
            .collect();
        assert!(!aggregating.is_empty());
        assert!(
            aggregating
                .iter()
                .all(|r| r["rules"].as_array().is_some_and(|a| !a.is_empty())),
            "{aggregating:?}"
        );
        assert_eq!(crate::auth::aggregate(&roles), Vec::new());
    }

    #[test]
    fn a_write_is_a_no_op_only_when_nothing_but_versions_and_times_changed() {
        let old = json!({"apiVersion": "v1", "kind": "K", "spec": {"a": 1}, "status": {"s": 1},
            "metadata": {"name": "n", "resourceVersion": "1", "labels": {"l": "1"},
                "managedFields": [{"manager": "m", "time": "t1", "fieldsV1": {"f:spec": {}}}]}});
        let mut same = old.clone();
        same["metadata"]["resourceVersion"] = json!("2");
        same["metadata"]["managedFields"][0]["time"] = json!("t2");
        assert!(unchanged(&old, &same));
        for (path, value) in [
            ("/spec/a", json!(2)),
            ("/status/s", json!(2)),
            ("/metadata/labels/l", json!("2")),
            ("/metadata/managedFields/0/manager", json!("other")),
        ] {
            let mut changed = old.clone();
            *changed.pointer_mut(path).unwrap() = value;
            assert!(!unchanged(&old, &changed), "{path}");
        }
        let mut added = old.clone();
        added["metadata"]["annotations"] = json!({"a": "b"});
        assert!(!unchanged(&old, &added));
        let mut fewer = old.clone();
        fewer["metadata"]["managedFields"] = json!([]);
        assert!(!unchanged(&old, &fewer));
    }

    #[test]
    fn only_a_change_outside_metadata_and_status_is_a_new_spec() {
        let old = json!({"apiVersion": "v1", "kind": "K", "spec": {"a": 1}, "status": {"s": 1},
            "metadata": {"name": "n", "labels": {"l": "1"}}});
        let mut same = old.clone();
        same["status"]["s"] = json!(2);
        same["metadata"]["labels"]["l"] = json!("2");
        same["apiVersion"] = json!("v2");
        assert!(same_spec(&old, &same));
        let mut changed = old.clone();
        changed["spec"]["a"] = json!(2);
        assert!(!same_spec(&old, &changed));
        let mut extra = old.clone();
        extra["data"] = json!({"k": "v"});
        assert!(!same_spec(&old, &extra));
        assert!(!same_spec(&extra, &old));
    }
}
