//! `kelp console`: the researcher's web console. Server-rendered pages (handlebars) on
//! axum, with a little progressive JavaScript for live status (server-sent events).
//!
//! - **Login** ([`auth`]): OIDC authorization-code flow with PKCE against EGI Check-in
//!   (any OIDC provider), or one local user with no login (`--dev-user`, as `kelp dev`
//!   runs it).
//! - **Acting as the user** ([`users`]): every Kubernetes request is made as the logged-in
//!   user, through impersonation (`Impersonate-User: oidc:<sub>`, groups from the VOs of
//!   the token's `eduperson_entitlement`). The console's own identity needs nothing but
//!   the `impersonate` verb; the API server's RBAC authorizes every request.
//! - **Pages** ([`pages`]): the Module catalogue, the deploy form (with the instance types
//!   and prices `kelp plan` would choose), the Deployments with live status, a
//!   Deployment's detail, and TOSCA import. The AI4OS dashboard's "deploy on your own
//!   cloud" link (`/configure?...&ai4eosc_model_image=IMAGE`) opens the deploy form
//!   prefilled.
//!
//! Credentials typed into a form go into Secrets in the user's namespace, and never into
//! logs, pages, or a Module or Cluster spec. `docs/console.md` documents it.

pub mod auth;
pub mod deploy;
pub mod import;
pub mod pages;
pub mod rbac;
pub mod users;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;

/// How users log in.
#[derive(Clone, Debug)]
pub enum AuthMode {
    /// One local user, no login: every request is this user, with the kubeconfig's own
    /// credentials (no impersonation), in `namespace`.
    Dev { user: String, namespace: String },
    /// OIDC login; requests are made as the user through impersonation.
    Oidc(auth::OidcConfig),
}

/// Which namespace a logged-in user works in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceMode {
    /// One namespace per user: `<prefix>u-<sub>-<hash>`.
    User,
    /// One namespace per VO, shared by its members: `<prefix><vo>` (dots as dashes).
    Vo,
}

/// Everything `kelp console` is configured with.
#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    /// The URL users reach the console at (the OIDC redirect URI is `<public_url>/callback`).
    pub public_url: String,
    pub auth: AuthMode,
    pub namespace_mode: NamespaceMode,
    pub namespace_prefix: String,
    /// A namespace whose Modules every user may deploy (read-only catalogue), if any.
    pub catalogue_namespace: Option<String>,
    /// Offer the simulated cloud in the deploy form (`kelp dev`).
    pub allow_sim: bool,
}

/// The console's shared state.
pub struct Console {
    pub config: ConsoleConfig,
    pub base: kube::Config,
    pub sessions: auth::Sessions,
    pub clients: users::Clients,
    pub views: view::Views,
    pub http: reqwest::Client,
    pub oidc: tokio::sync::OnceCell<auth::Discovery>,
    pub imports: import::Pending,
    /// `kelp dev` only: an administrator's client that makes a user's namespace and
    /// RoleBinding at their first login ([`rbac::tenant`]).
    pub provisioner: Option<kube::Client>,
}

/// Builds the console's router: its state and every page.
pub fn router(
    config: ConsoleConfig,
    base: kube::Config,
    provisioner: Option<kube::Client>,
) -> anyhow::Result<axum::Router> {
    let mut config = config;
    if config.public_url.is_empty() {
        config.public_url = format!("http://{}", config.listen);
    }
    config.public_url = config.public_url.trim_end_matches('/').to_string();
    let console = Arc::new(Console {
        clients: users::Clients::new(base.clone()),
        views: view::Views::new()?,
        sessions: auth::Sessions::default(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(15))
            .build()?,
        oidc: tokio::sync::OnceCell::new(),
        imports: import::Pending::default(),
        provisioner,
        config,
        base,
    });
    Ok(pages::routes(console))
}

/// Serves the console on `config.listen` until `stop` resolves. Binding errors name the
/// address.
pub async fn serve(
    config: ConsoleConfig,
    base: kube::Config,
    provisioner: Option<kube::Client>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (listener, config) = bind(config).await?;
    let listen = config.listen;
    let app = router(config, base, provisioner)?;
    tracing::info!(address = %listen, "kelp console serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}

/// Binds `listen` and serves the console in the background; returns the bound address.
pub async fn spawn(
    config: ConsoleConfig,
    base: kube::Config,
    provisioner: Option<kube::Client>,
) -> anyhow::Result<SocketAddr> {
    let (listener, config) = bind(config).await?;
    let addr = config.listen;
    let app = router(config, base, provisioner)?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "kelp console stopped");
        }
    });
    Ok(addr)
}

/// Binds the listening socket; `config.listen` becomes the bound address (port 0: the
/// one chosen).
async fn bind(
    mut config: ConsoleConfig,
) -> anyhow::Result<(tokio::net::TcpListener, ConsoleConfig)> {
    let listen = config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("kelp console cannot listen on {listen}: {e}"))?;
    config.listen = listener.local_addr()?;
    Ok((listener, config))
}
