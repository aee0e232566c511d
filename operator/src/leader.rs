//! Leader election: of several `kelp run` replicas, only the one holding the Lease
//! (`kelp-operator` in the operator's namespace) runs the controllers.
//!
//! - The Lease is taken and renewed with kube-lease-manager: a free Lease by a
//!   server-side apply under the replica's own field manager, so that of two replicas
//!   taking it at once the second gets a conflict and stays a follower.
//! - Fail-stop: the leader watches its own Lease and gives up (the caller exits the
//!   process) as soon as someone else holds it, or when it has not seen its own renewal
//!   for longer than the lease allows. No reconcile runs after the Lease is gone.
//! - On shutdown the controllers stop, then the Lease is released; a follower sees the
//!   release on its watch of the Lease and takes over at once, not a lease duration later.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};

use crate::health::{Health, Role};
use crate::metrics::Metrics;

/// How a replica takes part in the election.
#[derive(Clone, Debug)]
pub struct Election {
    /// The Lease's name.
    pub lease: String,
    /// Its namespace (the operator's).
    pub namespace: String,
    /// This replica's identity in `holderIdentity`: the Pod name, else the host name,
    /// with a random suffix so that a restarted process is a new holder.
    pub identity: String,
    /// How long a holder's lease lasts without renewal.
    pub duration: Duration,
    /// How long before expiry the holder renews (and the clock skew tolerated).
    pub grace: Duration,
}

/// Why [`lead`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Shutdown was asked for; the controllers stopped and the Lease was released.
    Shutdown,
    /// The Lease was lost while leading: the caller must stop everything now.
    Lost(String),
}

/// The field manager of this replica's writes to the Lease. It is the replica's own: a
/// replica takes a free Lease by a server-side apply without force, which the API server
/// refuses (409) when another manager already owns `holderIdentity`. Two replicas under
/// one manager would both succeed, and both lead.
pub fn field_manager(identity: &str) -> String {
    format!("kelp-leader-election-{identity}")
}

/// The default identity of this replica.
pub fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "kelp".into());
    format!("{base}-{}", &uuid_like())
}

fn uuid_like() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(8)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect()
}

/// What this replica last saw of the Lease.
#[derive(Clone, Debug, Default)]
struct Seen {
    holder: Option<String>,
    /// When the holder's lease runs out, by its renewTime and duration.
    expires: Option<SystemTime>,
}

fn seen(lease: &Lease) -> Seen {
    let spec = lease.spec.clone().unwrap_or_default();
    let expires = match (spec.renew_time, spec.lease_duration_seconds) {
        (Some(t), Some(d)) => {
            let renewed: SystemTime = t.0.into();
            Some(renewed + Duration::from_secs(d.max(0) as u64))
        }
        _ => None,
    };
    Seen {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        expires,
    }
}

/// Watches the Lease into a channel: followers learn of a release at once, the leader of
/// its own renewals (and of anyone taking the Lease).
fn watch_lease(api: Api<Lease>, name: &str) -> tokio::sync::watch::Receiver<Seen> {
    let (tx, rx) = tokio::sync::watch::channel(Seen::default());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => {
                    let _ = tx.send(seen(&l));
                }
                Ok(watcher::Event::Delete(_)) => {
                    let _ = tx.send(Seen::default());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watching the leader Lease"),
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// Runs `controllers` (given a future that resolves when they must stop) only while this
/// replica holds the Lease. Returns on `shutdown` (after stopping the controllers and
/// releasing the Lease), or as soon as the Lease is lost.
pub async fn lead<C, F>(
    client: Client,
    election: Election,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
    controllers: C,
) -> anyhow::Result<Outcome>
where
    C: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>) -> F,
    F: std::future::Future<Output = ()>,
{
    let grace = election.grace.as_secs().max(1);
    let duration = election.duration.as_secs().max(grace + 1);
    let build = || async {
        LeaseManagerBuilder::new(client.clone(), &election.lease)
            .with_namespace(&election.namespace)
            .with_identity(&election.identity)
            .with_duration(duration)
            .with_grace(grace)
            .with_field_manager(field_manager(&election.identity))
            .build()
            .await
            .map(Arc::new)
            .map_err(|e| {
                anyhow::anyhow!(
                    "leader election: Lease {}/{}: {e}",
                    election.namespace,
                    election.lease
                )
            })
    };
    let mut manager = build().await?;
    let api: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
    let mut lease = watch_lease(api, &election.lease);
    let me = election.identity.clone();
    tokio::pin!(shutdown);
    metrics.set_leader(&election.lease, false);
    health.set_role(Role::Follower);
    tracing::info!(identity = %me, lease = %election.lease, namespace = %election.namespace, "waiting for the leader Lease");

    // Follow until this replica holds the Lease. A release seen on the watch restarts the
    // attempt at once, with a manager that reads the Lease afresh (one that saw it held
    // trusts that until the old holder's expiry).
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(Outcome::Shutdown),
            taken = manager.changed() => match taken {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            changed = lease.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the watch of the leader Lease ended");
                }
                if lease.borrow_and_update().holder.is_none() {
                    match build().await {
                        Ok(fresh) => manager = fresh,
                        Err(e) => tracing::warn!(error = %e, "leader election"),
                    }
                }
            }
        }
    }

    tracing::info!(identity = %me, lease = %election.lease, "leading: starting the controllers");
    metrics.set_leader(&election.lease, true);
    health.set_role(Role::Leader);
    let taken_at = SystemTime::now();
    // Give up when nobody can show this replica still holds the Lease: half the grace
    // before its expiry, so a follower's clock may run that much ahead.
    let margin = Duration::from_secs(grace) / 2;
    // The manager renews the Lease in its own task; it returns when the Lease is no longer
    // this replica's.
    let renewer = {
        let manager = manager.clone();
        tokio::spawn(async move {
            loop {
                match manager.changed().await {
                    Ok(false) => return "the Lease changed hands".to_string(),
                    Ok(true) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "renewing the leader Lease");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        })
    };
    let stop_renewing = renewer.abort_handle();
    let lost = {
        let me = me.clone();
        let mut lease = lease.clone();
        async move {
            tokio::pin!(renewer);
            let mut deadline = taken_at + Duration::from_secs(duration) - margin;
            loop {
                let wait = deadline
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                tokio::select! {
                    why = &mut renewer => return why.unwrap_or_else(|e| format!("the Lease renewal stopped: {e}")),
                    changed = lease.changed() => {
                        if changed.is_err() {
                            return "the watch of the leader Lease ended".into();
                        }
                        let s = lease.borrow_and_update().clone();
                        match (s.holder, s.expires) {
                            (Some(h), Some(e)) if h == me => deadline = e - margin,
                            (Some(h), _) if h != me => return format!("{h} holds the Lease now"),
                            _ => {}
                        }
                    }
                    _ = tokio::time::sleep(wait) => {
                        return "no renewal of the Lease was seen before its deadline".into();
                    }
                }
            }
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>> =
        Box::pin(async move {
            let _ = stop_rx.await;
        });
    let run = controllers(stop);
    tokio::pin!(run);
    tokio::pin!(lost);
    tokio::select! {
        biased;
        why = &mut lost => {
            metrics.set_leader(&election.lease, false);
            health.set_role(Role::Follower);
            return Ok(Outcome::Lost(why));
        }
        _ = &mut shutdown => {}
        _ = &mut run => {
            tracing::warn!("the controllers stopped by themselves");
        }
    }
    // Shutdown: let in-flight reconciles finish while the Lease is still ours (unless it
    // is lost meanwhile), then hand it over.
    let _ = stop_tx.send(());
    tokio::select! {
        biased;
        why = &mut lost => {
            metrics.set_leader(&election.lease, false);
            return Ok(Outcome::Lost(why));
        }
        _ = &mut run => {}
    }
    stop_renewing.abort();
    release(&manager, &election).await;
    metrics.set_leader(&election.lease, false);
    Ok(Outcome::Shutdown)
}

async fn release(manager: &LeaseManager, election: &Election) {
    match manager.release().await {
        Ok(()) => tracing::info!(lease = %election.lease, "released the leader Lease"),
        Err(e) => {
            tracing::warn!(error = %e, "could not release the leader Lease; it expires by itself")
        }
    }
}
