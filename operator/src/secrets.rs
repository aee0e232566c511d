//! One metadata-only watch of Secrets for every controller. A controller learns which
//! Secret (namespace, name) changed and re-reconciles the objects that read it; the data
//! is read only by the reconcile that needs it, so no Secret's data is cached or even
//! streamed to kelp by the watch.

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
}

impl Default for SecretChanges {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BUFFER).0,
        }
    }
}

impl SecretChanges {
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
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "watching Secrets");
                continue;
            }
        };
        let changed = match event {
            watcher::Event::Init => continue,
            watcher::Event::InitDone => {
                first_list = false;
                continue;
            }
            watcher::Event::InitApply(_) if first_list => continue,
            watcher::Event::InitApply(m) | watcher::Event::Apply(m) | watcher::Event::Delete(m) => {
                m
            }
        };
        ctx.secrets
            .send((changed.namespace().unwrap_or_default(), changed.name_any()));
    }
}
