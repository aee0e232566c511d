//! kelp-testapi: a Kubernetes-API test server for kelp's tests and local development.
//!
//! It is a test double, not a production API server: HTTPS on 127.0.0.1, bearer
//! tokens and RBAC as a real server has them, everything in memory, and no controllers behind the built-in
//! kinds (no garbage collection by owner references, no pods behind Deployments).
//! What it does honour is the API semantics kelp, kube-runtime and kubectl rely on;
//! see the README next to this crate.
#![forbid(unsafe_code)]

pub mod auth;
pub mod discovery;
pub mod http;
pub mod patch;
pub mod proto;
pub mod reviews;
pub mod schema;
pub mod selectors;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;
pub mod types;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

pub use store::{Config, Store};

/// A running test server. Dropping it (or calling [`TestApiServer::shutdown`]) stops it.
pub struct TestApiServer {
    addr: SocketAddr,
    store: Arc<Store>,
    ca_pem: String,
    ca_der: Vec<u8>,
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
        let tls = tls::ServerTls::generate()?;
        let store = Store::new(config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = {
            let store = store.clone();
            axum::Router::new().fallback(move |method, uri, headers, body| {
                http::handle(store.clone(), method, uri, headers, body)
            })
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        let task = tokio::spawn(serve(listener, acceptor, app, rx));
        Ok(Self {
            addr,
            store,
            ca_pem: tls.ca_pem,
            ca_der: tls.ca_der,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA certificate (PEM) the server's certificate is signed with.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER-encoded (what `kube::Config::root_cert` takes).
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// Direct access to the stored objects, for assertions in tests.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A kubeconfig pointing at this server (context `kelp-testapi`, namespace default),
    /// with the admin token: user `kelp-admin` in `system:masters`, never restricted by RBAC.
    pub fn kubeconfig(&self) -> String {
        kubeconfig_for(&self.url(), &self.ca_pem, self.admin_token())
    }

    /// The bearer token of the admin user.
    pub fn admin_token(&self) -> &str {
        self.store.auth.admin_token()
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

/// Accepts TLS connections and serves HTTP/1.1 and HTTP/2 on them until `shutdown` fires;
/// then every open connection (and so every watch) ends.
async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        }
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
}

/// A kubeconfig for a server at `url` with CA `ca_pem`, whose user authenticates with
/// a bearer `token`.
pub fn kubeconfig_for(url: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kelp-testapi\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: kelp-testapi\n  user:\n    token: {token}\ncontexts:\n- name: kelp-testapi\n  context:\n    cluster: kelp-testapi\n    user: kelp-testapi\n    namespace: default\ncurrent-context: kelp-testapi\n"
    )
}
