//! `/healthz` and `/readyz` on their own port (`kelp run --health-address`), for the
//! kubelet's probes: alive while the process runs, ready once every controller's cache
//! has its first full list.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::IntoResponse;

/// What the probes report. Shared through the Context.
#[derive(Default)]
pub struct Health {
    /// Controller name -> whether its cache has synced.
    synced: Mutex<BTreeMap<&'static str, bool>>,
}

impl Health {
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

    /// The controllers whose caches have not synced yet (empty: ready).
    pub fn waiting(&self) -> Vec<&'static str> {
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
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("health address {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
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
    tracing::info!(address = %bound, "serving /healthz and /readyz");
    Ok(bound)
}
