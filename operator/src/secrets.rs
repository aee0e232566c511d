//! One metadata-only watch of Secrets for every controller. A controller learns which
//! Secret (namespace, name) changed and re-reconciles the objects that read it; the data
//! is read only by the reconcile that needs it, so no Secret's data is cached or even
//! streamed to kelp by the watch. The watch also keeps each Secret's resourceVersion, so a
//! reader holding something built from a Secret (a target cluster's client) knows whether
//! it is still current without reading the Secret again.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::broadcast;

/// A changed Secret: (namespace, name).
pub type Changed = (String, String);

/// Room for changes not yet read by the slowest controller; past it, a controller misses
/// changes (logged) and catches up at its resync.
const BUFFER: usize = 4096;

/// The Secret changes every controller subscribes to.
pub struct SecretChanges {
    tx: broadcast::Sender<Changed>,
    /// The resourceVersion of every Secret, as the watch last saw it; empty until its
    /// first list is complete.
    versions: Mutex<HashMap<Changed, String>>,
}

impl Default for SecretChanges {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BUFFER).0,
            versions: Default::default(),
        }
    }
}

impl SecretChanges {
    /// The resourceVersion of Secret `namespace/name` as last watched; None when the
    /// watch has not seen it (or is not running), so the caller reads the Secret.
    pub fn version(&self, namespace: &str, name: &str) -> Option<String> {
        self.versions()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Records the resourceVersion the watch saw of a Secret.
    pub fn saw(&self, secret: Changed, version: String) {
        self.versions().insert(secret, version);
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<Changed, String>> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The changes from now on.
    pub fn subscribe(&self) -> impl Stream<Item = Changed> + Send + 'static {
        futures::stream::unfold(self.tx.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(changed) => return Some((changed, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::info!(
                            missed = n,
                            "Secret changes came faster than reconciles; the resync catches up"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    fn send(&self, changed: Changed) {
        // No subscriber yet: nothing to wake.
        let _ = self.tx.send(changed);
    }
}

/// Watches the metadata of every Secret and tells the subscribers what changed. The first
/// full list is not passed on (every controller reconciles all its objects when it
/// starts); a later re-list is, since changes may have been missed meanwhile.
pub async fn watch(ctx: crate::context::Ctx) {
    // An Api of PartialObjectMeta asks for metadata only (as=PartialObjectMetadata).
    let api: Api<PartialObjectMeta<Secret>> = Api::all(ctx.client.clone());
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut first_list = true;
    let mut listing: HashMap<Changed, String> = HashMap::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "watching Secrets");
                continue;
            }
        };
        let key = |m: &PartialObjectMeta<Secret>| (m.namespace().unwrap_or_default(), m.name_any());
        let version = |m: &PartialObjectMeta<Secret>| m.resource_version().unwrap_or_default();
        let changed = match event {
            watcher::Event::Init => {
                listing.clear();
                continue;
            }
            watcher::Event::InitDone => {
                first_list = false;
                *ctx.secrets.versions() = std::mem::take(&mut listing);
                continue;
            }
            watcher::Event::InitApply(m) => {
                listing.insert(key(&m), version(&m));
                if first_list {
                    continue;
                }
                key(&m)
            }
            watcher::Event::Apply(m) => {
                ctx.secrets.saw(key(&m), version(&m));
                key(&m)
            }
            watcher::Event::Delete(m) => {
                ctx.secrets.versions().remove(&key(&m));
                key(&m)
            }
        };
        ctx.secrets.send(changed);
    }
}
