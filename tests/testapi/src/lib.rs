//! kelp-testapi: a Kubernetes-API test server for kelp's tests and local development.
//!
//! It is a test double, not a production API server: plain HTTP on 127.0.0.1, no
//! authentication, everything in memory, and no controllers behind the built-in
//! kinds (no garbage collection by owner references, no pods behind Deployments).
//! What it does honour is the API semantics kelp, kube-runtime and kubectl rely on;
//! see the README next to this crate.
#![forbid(unsafe_code)]

pub mod discovery;
pub mod http;
pub mod patch;
pub mod schema;
pub mod selectors;
pub mod status;
pub mod store;
pub mod table;
pub mod types;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

pub use store::{Config, Store};

/// A running test server. Dropping it (or calling [`TestApiServer::shutdown`]) stops it.
pub struct TestApiServer {
    addr: SocketAddr,
    store: Arc<Store>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestApiServer {
    /// Starts a server on 127.0.0.1 with a free port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(Config::default(), "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts a server with the given tunables on `addr`.
    pub async fn start_with(config: Config, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let store = Store::new(config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = {
            let store = store.clone();
            axum::Router::new().fallback(move |method, uri, headers, body| {
                http::handle(store.clone(), method, uri, headers, body)
            })
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            store,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Direct access to the stored objects, for assertions in tests.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A kubeconfig pointing at this server (context `kelp-testapi`, namespace default).
    pub fn kubeconfig(&self) -> String {
        kubeconfig_for(&self.url())
    }

    /// Stops accepting requests and ends open watches.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A kubeconfig for a server at `url`.
pub fn kubeconfig_for(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kelp-testapi\n  cluster:\n    server: {url}\nusers:\n- name: kelp-testapi\n  user: {{}}\ncontexts:\n- name: kelp-testapi\n  context:\n    cluster: kelp-testapi\n    user: kelp-testapi\n    namespace: default\ncurrent-context: kelp-testapi\n"
    )
}
