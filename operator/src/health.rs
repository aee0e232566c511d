//! `/healthz`, `/readyz` and `/metrics` on their own port (`kelp run --health-address`):
//! alive while the process runs, ready once every controller's cache has its first full
//! list (or, on a replica that does not lead, once it follows the leader Lease), and the
//! Prometheus metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::IntoResponse;

/// A replica's part in leader election.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// No leader election (`--leader-election=false`, `kelp dev`): the controllers run.
    #[default]
    Single,
    /// Holds the Lease: the controllers run.
    Leader,
    /// Waits for the Lease: no controller runs, and that is healthy.
    Follower,
}

/// What the probes report. Shared through the Context.
#[derive(Default)]
pub struct Health {
    /// Controller name -> whether its cache has synced.
    synced: Mutex<BTreeMap<&'static str, bool>>,
    role: Mutex<Role>,
    /// Why the process is no longer healthy, once it is not.
    failed: Mutex<Option<String>>,
}

impl Health {
    pub fn set_role(&self, role: Role) {
        *self.role.lock().unwrap() = role;
        if role != Role::Leader {
            // A new term starts with fresh caches.
            for v in self.synced.lock().unwrap().values_mut() {
                *v = false;
            }
        }
    }

    pub fn role(&self) -> Role {
        *self.role.lock().unwrap()
    }

    /// Marks the process unhealthy for good (`/healthz` fails, the kubelet restarts it).
    pub fn fail(&self, why: impl Into<String>) {
        let why = why.into();
        tracing::error!(reason = %why, "unhealthy");
        *self.failed.lock().unwrap() = Some(why);
    }

    /// Why `/healthz` fails, if it does.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap().clone()
    }

    /// Registers a controller whose cache is not synced yet.
    pub fn expect(&self, controller: &'static str) {
        self.synced
            .lock()
            .unwrap()
            .entry(controller)
            .or_insert(false);
    }

    pub fn synced(&self, controller: &'static str) {
        self.synced.lock().unwrap().insert(controller, true);
        tracing::debug!(controller, "cache synced");
    }

    /// Whether `controller`'s cache holds its first full list.
    pub fn is_synced(&self, controller: &str) -> bool {
        self.synced
            .lock()
            .unwrap()
            .get(controller)
            .copied()
            .unwrap_or(false)
    }

    /// The controllers whose caches have not synced yet (empty: ready). A follower runs
    /// none and is ready.
    pub fn waiting(&self) -> Vec<&'static str> {
        if self.role() == Role::Follower {
            return vec![];
        }
        let synced = self.synced.lock().unwrap();
        if synced.is_empty() {
            return vec!["controllers"];
        }
        synced
            .iter()
            .filter(|(_, ok)| !**ok)
            .map(|(name, _)| *name)
            .collect()
    }
}

/// Binds `addr` (its error names the address) and serves the probes until the process ends.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("health address {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let alive = health.clone();
    let app = axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(move || {
                let alive = alive.clone();
                async move {
                    match alive.failure() {
                        None => (StatusCode::OK, "ok".to_string()).into_response(),
                        Some(why) => (StatusCode::INTERNAL_SERVER_ERROR, why).into_response(),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let metrics = metrics.clone();
                async move {
                    let accept = headers
                        .get(axum::http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let (content_type, body) = metrics.exposition(accept);
                    ([(axum::http::header::CONTENT_TYPE, content_type)], body)
                }
            }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || {
                let health = health.clone();
                async move {
                    let waiting = health.waiting();
                    if waiting.is_empty() {
                        (StatusCode::OK, "ok".to_string()).into_response()
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("waiting for the caches of: {}", waiting.join(", ")),
                        )
                            .into_response()
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    tracing::info!(address = %bound, "serving /healthz, /readyz and /metrics");
    Ok(bound)
}
