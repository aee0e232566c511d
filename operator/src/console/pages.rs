//! The console's routes. Each handler finds the session, reads or writes Kubernetes as
//! the user, and renders a page; every POST carries the session's CSRF token.

// Handlers refuse with the page to show, a `Response`, as their error; boxing it would
// only move the allocation.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::Stream;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kelp_crds::{Cluster, Deployment, Module};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Session, User};
use super::deploy::{self, DeployForm, FieldError, ModuleChoice};
use super::{AuthMode, Console};

/// The console as the routes share it.
pub type SharedConsole = Arc<Console>;
type Shared = SharedConsole;

/// Every route of the console.
pub fn routes(console: Shared) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/healthz", get(|| async { "ok" }))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/logout", post(logout))
        .route("/modules", get(modules))
        .route("/configure", get(configure))
        .route("/deploy", get(deploy_page).post(deploy_submit))
        .route("/deploy/preview", post(deploy_preview))
        .route("/deployments", get(deployments))
        .route("/deployments/live", get(deployments_live))
        .route("/deployments/{name}", get(detail))
        .route("/deployments/{name}/live", get(detail_live))
        .route("/deployments/{name}/delete", post(delete))
        .route(
            "/import",
            get(super::import::page).post(super::import::upload),
        )
        .route("/import/apply", post(super::import::apply))
        .with_state(console)
}

/// The session of a request, and a cookie to set when it was just made (dev mode).
pub struct Current {
    pub session: Session,
    pub set_cookie: Option<String>,
}

impl Console {
    /// The session of this request. OIDC mode without one: a GET is sent to log in (and
    /// back), anything else is refused. Dev mode: a session for the dev user is made.
    pub fn current(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        method_get: bool,
    ) -> Result<Current, Response> {
        if let Some(s) =
            auth::cookie(headers, auth::SESSION_COOKIE).and_then(|id| self.sessions.get(&id))
        {
            return Ok(Current {
                session: s,
                set_cookie: None,
            });
        }
        match &self.config.auth {
            AuthMode::Dev { user, namespace } => {
                let user = User {
                    name: user.clone(),
                    display: user.clone(),
                    groups: Vec::new(),
                    vos: Vec::new(),
                    namespace: namespace.clone(),
                    impersonate: false,
                };
                let id = self.sessions.create(user);
                let session = self.sessions.get(&id).expect("just made");
                Ok(Current {
                    session,
                    set_cookie: Some(auth::set_cookie(
                        auth::SESSION_COOKIE,
                        &id,
                        auth::SESSION_TTL,
                    )),
                })
            }
            AuthMode::Oidc(_) if method_get => {
                let to = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let mut url = reqwest::Url::parse("http://console/login").expect("url");
                url.query_pairs_mut().append_pair("return_to", to);
                Err(
                    Redirect::to(&format!("/login?{}", url.query().unwrap_or_default()))
                        .into_response(),
                )
            }
            AuthMode::Oidc(_) => Err(self.error(
                StatusCode::UNAUTHORIZED,
                None,
                "Not logged in",
                "Your session has ended or this browser has none. Log in again.",
                true,
            )),
        }
    }

    /// A page: the layout's data (user, CSRF token) merged into `data`.
    pub fn page(&self, current: &Current, template: &str, mut data: Value) -> Response {
        let s = &current.session;
        data["user"] = json!({"display": s.user.display, "namespace": s.user.namespace});
        data["csrf"] = json!(s.csrf);
        data["logout"] = json!(matches!(self.config.auth, AuthMode::Oidc(_)));
        let r = Html(self.views.render(template, &data)).into_response();
        match &current.set_cookie {
            Some(c) => with_cookie(r, c),
            None => r,
        }
    }

    /// An error page.
    pub fn error(
        &self,
        status: StatusCode,
        current: Option<&Current>,
        heading: &str,
        message: &str,
        login: bool,
    ) -> Response {
        let data =
            json!({"title": heading, "heading": heading, "message": message, "login": login});
        let mut r = match current {
            Some(c) => self.page(c, "error", data),
            None => Html(self.views.render("error", &data)).into_response(),
        };
        *r.status_mut() = status;
        r
    }

    /// The page for a Kubernetes error: a 403 says who may not do what, and how access is
    /// given.
    pub fn kube_error(&self, current: &Current, what: &str, e: &kube::Error) -> Response {
        let (status, message) = match e {
            kube::Error::Api(ae) if ae.code == 403 => (
                StatusCode::FORBIDDEN,
                format!(
                    "You may not {what} in namespace {}: {}. An administrator gives you access to it (see docs/console.md, \"Namespaces and access\").",
                    current.session.user.namespace, ae.message
                ),
            ),
            kube::Error::Api(ae) => (
                StatusCode::from_u16(ae.code).unwrap_or(StatusCode::BAD_GATEWAY),
                format!("Kubernetes refused to {what}: {}", ae.message),
            ),
            other => (
                StatusCode::BAD_GATEWAY,
                format!(
                    "Kubernetes could not be reached to {what}: {}",
                    crate::context::error_chain(other)
                ),
            ),
        };
        self.error(status, Some(current), "Not possible", &message, false)
    }

    /// The user's client.
    pub fn client(&self, current: &Current) -> Result<kube::Client, Response> {
        self.clients.of(&current.session.user).map_err(|e| {
            self.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(current),
                "Not possible",
                &e.to_string(),
                false,
            )
        })
    }

    /// The session of this request and the user's client (see [`Console::current`]).
    pub fn user(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        method_get: bool,
    ) -> Result<(Current, kube::Client), Response> {
        let cur = self.current(headers, uri, method_get)?;
        let client = self.client(&cur)?;
        Ok((cur, client))
    }

    /// Refuses a POST whose CSRF token is not the session's.
    pub fn check_csrf(&self, current: &Current, token: Option<&str>) -> Result<(), Response> {
        if auth::csrf_ok(&current.session, token) {
            Ok(())
        } else {
            Err(self.error(
                StatusCode::FORBIDDEN,
                Some(current),
                "Form expired",
                "This form does not belong to your session (its security token does not match). Open the page again and resubmit.",
                false,
            ))
        }
    }

    /// The provider's discovery document (read once), or the page saying login is not
    /// available.
    async fn discovery(&self) -> Result<&auth::Discovery, Response> {
        let found = match &self.config.auth {
            AuthMode::Oidc(cfg) => {
                self.oidc
                    .get_or_try_init(|| auth::discover(&self.http, &cfg.issuer))
                    .await
            }
            AuthMode::Dev { .. } => {
                Err("this console has no login: it serves one local user".into())
            }
        };
        found.map_err(|e| {
            self.error(
                StatusCode::BAD_GATEWAY,
                None,
                "Login is not available",
                &e,
                false,
            )
        })
    }

    fn redirect_uri(&self) -> String {
        format!("{}/callback", self.config.public_url)
    }
}

fn with_cookie(mut r: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn home(State(c): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    match c.current(&headers, &uri, true) {
        Ok(cur) => {
            let r = Redirect::to("/deployments").into_response();
            match &cur.set_cookie {
                Some(k) => with_cookie(r, k),
                None => r,
            }
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    return_to: String,
}

async fn login(State(c): State<Shared>, Query(q): Query<LoginQuery>) -> Response {
    let AuthMode::Oidc(cfg) = &c.config.auth else {
        return Redirect::to("/").into_response();
    };
    let discovery = match c.discovery().await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let (url, state) =
        auth::begin_login(&c.sessions, discovery, cfg, &c.redirect_uri(), &q.return_to);
    with_cookie(
        Redirect::to(&url).into_response(),
        &auth::set_cookie(auth::LOGIN_COOKIE, &state, auth::LOGIN_TTL),
    )
}

#[derive(Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

async fn callback(
    State(c): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let AuthMode::Oidc(cfg) = &c.config.auth else {
        return Redirect::to("/").into_response();
    };
    if !q.error.is_empty() {
        let m = format!(
            "The identity provider said: {} {}",
            q.error, q.error_description
        );
        return c.error(StatusCode::UNAUTHORIZED, None, "Login failed", &m, true);
    }
    let discovery = match c.discovery().await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let login_cookie = auth::cookie(&headers, auth::LOGIN_COOKIE);
    let (claims, to) = match auth::finish_login(
        &c.http,
        &c.sessions,
        discovery,
        cfg,
        &c.redirect_uri(),
        &auth::Callback {
            code: &q.code,
            state: &q.state,
            login_cookie: login_cookie.as_deref(),
        },
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return c.error(StatusCode::UNAUTHORIZED, None, "Login failed", &e, true),
    };
    let user = match auth::oidc_user(
        &claims.sub,
        &claims.display,
        &claims.entitlements,
        &cfg.allowed_vos,
        c.config.namespace_mode,
        &c.config.namespace_prefix,
    ) {
        Ok(u) => u,
        Err(e) => return c.error(StatusCode::FORBIDDEN, None, "No access", &e, false),
    };
    if let Some(admin) = &c.provisioner {
        for doc in super::rbac::tenant(&user, c.config.namespace_mode) {
            if let Err(e) =
                crate::dev::apply_manifest(admin, &user.namespace, deploy::MANAGER, &doc).await
            {
                let m = format!(
                    "kelp dev could not make your namespace {}: {}",
                    user.namespace,
                    api_message(&e)
                );
                return c.error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    None,
                    "No namespace",
                    &m,
                    false,
                );
            }
        }
    }
    tracing::info!(user = %user.name, namespace = %user.namespace, "console login");
    let id = c.sessions.create(user);
    let r = Redirect::to(&to).into_response();
    let r = with_cookie(
        r,
        &auth::set_cookie(auth::SESSION_COOKIE, &id, auth::SESSION_TTL),
    );
    with_cookie(r, &auth::set_cookie(auth::LOGIN_COOKIE, "", Duration::ZERO))
}

#[derive(Deserialize, Default)]
struct CsrfForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    with_cluster: String,
}

async fn logout(
    State(c): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Form(f): Form<CsrfForm>,
) -> Response {
    let cur = match c.current(&headers, &uri, false) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(r) = c.check_csrf(&cur, Some(&f.csrf)) {
        return r;
    }
    if let Some(id) = auth::cookie(&headers, auth::SESSION_COOKIE) {
        c.sessions.remove(&id);
    }
    let r = c.error(
        StatusCode::OK,
        None,
        "Logged out",
        "You are logged out of kelp.",
        true,
    );
    with_cookie(
        r,
        &auth::set_cookie(auth::SESSION_COOKIE, "", Duration::ZERO),
    )
}

/// A Module as the pages show it; `from` is the catalogue namespace for a shared one.
fn module_view(m: &Module, from: Option<&str>) -> Value {
    let r = &m.spec.resources;
    json!({
        "name": m.metadata.name,
        "title": m.spec.title,
        "summary": m.spec.summary,
        "image": format!("{}:{}", m.spec.image.repository, m.spec.image.tag),
        "repository": m.spec.image.repository,
        "cpu": r.cpu,
        "memory": format!("{:.1}", r.memory_mb as f64 / 1000.0),
        "gpu": r.gpu,
        "from": from,
        "tags": m.spec.catalog.as_ref().map(|c| c.tags.join(", ")),
    })
}

/// The user's Modules and the catalogue's (those of the same name as the user's left
/// out). The catalogue is skipped when the user may not read it.
async fn visible_modules(
    c: &Console,
    client: &kube::Client,
    ns: &str,
) -> Result<(Vec<Module>, Vec<Module>), kube::Error> {
    let own = Api::<Module>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    let mut shared = Vec::new();
    if let Some(cat) = c
        .config
        .catalogue_namespace
        .as_deref()
        .filter(|cat| *cat != ns)
        && let Ok(l) = Api::<Module>::namespaced(client.clone(), cat)
            .list(&ListParams::default())
            .await
    {
        shared = l
            .items
            .into_iter()
            .filter(|m| !own.iter().any(|o| o.metadata.name == m.metadata.name))
            .collect();
    }
    Ok((own, shared))
}

async fn modules(State(c): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    let (cur, client) = match c.user(&headers, &uri, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ns = cur.session.user.namespace.clone();
    let (own, shared) = match visible_modules(&c, &client, &ns).await {
        Ok(x) => x,
        Err(e) => return c.kube_error(&cur, "list Modules", &e),
    };
    let cat = c.config.catalogue_namespace.clone();
    let list: Vec<Value> = own
        .iter()
        .map(|m| module_view(m, None))
        .chain(shared.iter().map(|m| module_view(m, cat.as_deref())))
        .collect();
    c.page(
        &cur,
        "modules",
        json!({"title": "Modules", "modules": list, "catalogue": cat}),
    )
}

#[derive(Deserialize, Default)]
struct DeployQuery {
    #[serde(default)]
    module: String,
    #[serde(default)]
    from: String,
}

/// Everything the deploy form shows besides the form's own values.
struct FormContext {
    own: Vec<Module>,
    shared: Vec<Module>,
    clusters: Vec<Cluster>,
    deployments: Vec<String>,
}

async fn form_context(
    c: &Console,
    client: &kube::Client,
    ns: &str,
) -> Result<FormContext, kube::Error> {
    let (own, shared) = visible_modules(c, client, ns).await?;
    let clusters = Api::<Cluster>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect();
    Ok(FormContext {
        own,
        shared,
        clusters,
        deployments,
    })
}

/// A name not yet taken by a Deployment: `base`, else `base-2`, `base-3`...
fn free_name(base: &str, taken: &[String]) -> String {
    let base: String = base
        .chars()
        .take(36)
        .collect::<String>()
        .trim_matches('-')
        .to_string();
    if !taken.contains(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken.contains(n))
        .expect("a free name")
}

/// The deploy form's defaults for a Module's resources.
fn defaults_from_module(form: &mut DeployForm, m: &Module) {
    let r = &m.spec.resources;
    form.cpu = r.cpu.to_string();
    form.memory_gb = format!("{}", (r.memory_mb as f64 / 1000.0 * 2.0).round() / 2.0);
    form.gpu = r.gpu.to_string();
}

/// Which Module the form means.
fn module_choice(form: &DeployForm, ctx: &FormContext) -> ModuleChoice {
    let image = form.image.trim();
    if !image.is_empty() {
        let repo = deploy::image_repository(image);
        if let Some(m) = ctx.own.iter().find(|m| m.spec.image.repository == repo) {
            return ModuleChoice::Own(m.metadata.name.clone().unwrap_or_default());
        }
        if let Some(m) = ctx.shared.iter().find(|m| m.spec.image.repository == repo) {
            return catalogue_choice(m);
        }
        return ModuleChoice::Image(image.to_string());
    }
    if let Some(name) = form.module.strip_prefix("catalogue:") {
        if let Some(m) = ctx
            .own
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some(name))
        {
            return ModuleChoice::Own(m.metadata.name.clone().unwrap_or_default());
        }
        if let Some(m) = ctx
            .shared
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some(name))
        {
            return catalogue_choice(m);
        }
    }
    ModuleChoice::Own(form.module.clone())
}

fn catalogue_choice(m: &Module) -> ModuleChoice {
    ModuleChoice::Catalogue(
        m.metadata.name.clone().unwrap_or_default(),
        serde_json::to_value(&m.spec).unwrap_or_default(),
    )
}

/// The deploy page's data.
fn deploy_data(
    c: &Console,
    user: &User,
    ctx: &FormContext,
    form: &DeployForm,
    errors: &[FieldError],
    from_link: Option<String>,
) -> Value {
    let choice = module_choice(form, ctx);
    let selected = |v: &str| form.module == v;
    let modules: Vec<Value> = ctx
        .own
        .iter()
        .map(|m| {
            let n = m.metadata.name.clone().unwrap_or_default();
            json!({"value": n, "name": n, "title": m.spec.title, "selected": selected(&n)})
        })
        .chain(ctx.shared.iter().map(|m| {
            let n = m.metadata.name.clone().unwrap_or_default();
            let v = format!("catalogue:{n}");
            json!({"value": v, "name": n, "title": m.spec.title, "from": true, "selected": selected(&v)})
        }))
        .collect();
    let title = match &choice {
        ModuleChoice::Own(n) | ModuleChoice::Catalogue(n, _) => ctx
            .own
            .iter()
            .chain(&ctx.shared)
            .find(|m| m.metadata.name.as_deref() == Some(n))
            .map(|m| m.spec.title.clone()),
        ModuleChoice::Image(i) => Some(deploy::module_name_for_image(i)),
    };
    let clusters: Vec<Value> = ctx
        .clusters
        .iter()
        .map(|cl| {
            let n = cl.metadata.name.clone().unwrap_or_default();
            json!({"name": n, "cloud": cl.spec.cloud.kind().unwrap_or("?"),
                "phase": cl.status.as_ref().and_then(|s| s.phase.as_ref()).map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into()),
                "selected": form.cluster == n})
        })
        .collect();
    let mut clouds = Vec::new();
    if c.config.allow_sim {
        clouds.push(("sim", "Simulated cloud (kelp dev)"));
    }
    clouds.extend([
        ("egi", "EGI FedCloud site"),
        ("openstack", "OpenStack"),
        ("ec2", "AWS EC2"),
    ]);
    let clouds: Vec<Value> = clouds
        .iter()
        .map(|(v, l)| json!({"value": v, "label": l, "selected": form.cloud == *v}))
        .collect();
    let catalog = kelp_cloud_drivers::egi::sites::SiteCatalog::builtin();
    let egi_sites: Vec<Value> = catalog
        .sites()
        .filter(|s| user.vos.is_empty() || user.vos.iter().any(|vo| s.vo(vo).is_some()))
        .map(|s| {
            // The site's VOs the user is in (all of them for the dev user).
            let vos: Vec<&str> = s
                .vos
                .iter()
                .map(|v| v.name.as_str())
                .filter(|v| user.vos.is_empty() || user.vos.iter().any(|u| u == v))
                .collect();
            json!({"name": s.gocdb, "vos": vos.join(", "), "selected": form.egi_site == s.gocdb})
        })
        .collect();
    let vos: Vec<String> = if user.vos.is_empty() {
        vec!["vo.imagine-ai.eu".into(), "vo.ai4eosc.eu".into()]
    } else {
        user.vos.clone()
    };
    let (image_module, new_module) = match &choice {
        ModuleChoice::Image(i) => (None, Some(deploy::module_name_for_image(i))),
        ModuleChoice::Own(n) | ModuleChoice::Catalogue(n, _) => (Some(n.clone()), None),
    };
    json!({
        "title": "Deploy",
        "module_title": title,
        "modules": modules,
        "image": (!form.image.is_empty()).then_some(&form.image),
        "image_module": image_module,
        "new_module": new_module,
        "clusters": clusters,
        "target_existing": form.target == "existing",
        "clouds": clouds,
        "egi_sites": egi_sites,
        "vos": vos.iter().map(|v| json!({"value": v, "selected": form.egi_vo == *v})).collect::<Vec<_>>(),
        "form": serde_json::to_value(form.without_credentials()).unwrap_or_default(),
        "errors": errors.iter().map(|e| json!({"field": e.field, "message": e.message})).collect::<Vec<_>>(),
        "from_link": from_link,
    })
}

impl serde::Serialize for DeployForm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let f = self;
        let fields: [(&str, &str); 20] = [
            ("name", &f.name),
            ("module", &f.module),
            ("image", &f.image),
            ("target", &f.target),
            ("cluster", &f.cluster),
            ("cloud", &f.cloud),
            ("egi_site", &f.egi_site),
            ("egi_vo", &f.egi_vo),
            ("egi_client_id", &f.egi_client_id),
            ("os_auth_url", &f.os_auth_url),
            ("os_region", &f.os_region),
            ("os_credential_id", &f.os_credential_id),
            ("ec2_region", &f.ec2_region),
            ("ec2_access_key_id", &f.ec2_access_key_id),
            ("cpu", &f.cpu),
            ("memory_gb", &f.memory_gb),
            ("gpu", &f.gpu),
            ("gpu_model", &f.gpu_model),
            ("replicas", &f.replicas),
            ("storage_url", &f.storage_url),
        ];
        // The credential fields are never serialized: no page can show them.
        let mut m = s.serialize_map(Some(fields.len() + 1))?;
        for (k, v) in fields {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry("storage_user", &f.storage_user)?;
        m.end()
    }
}

/// A fresh form for a module (or an image), with defaults.
fn new_form(ctx: &FormContext, module: &str, image: &str) -> DeployForm {
    let mut form = DeployForm {
        module: module.to_string(),
        image: image.to_string(),
        target: if ctx.clusters.is_empty() {
            "new".into()
        } else {
            "existing".into()
        },
        cluster: ctx
            .clusters
            .first()
            .and_then(|c| c.metadata.name.clone())
            .unwrap_or_default(),
        cpu: "1".into(),
        memory_gb: "2".into(),
        gpu: "0".into(),
        replicas: "1".into(),
        ..Default::default()
    };
    let choice = module_choice(&form, ctx);
    let (base, m) = match &choice {
        ModuleChoice::Own(n) | ModuleChoice::Catalogue(n, _) => (
            n.clone(),
            ctx.own
                .iter()
                .chain(&ctx.shared)
                .find(|m| m.metadata.name.as_deref() == Some(n)),
        ),
        ModuleChoice::Image(i) => (deploy::module_name_for_image(i), None),
    };
    if let Some(m) = m {
        defaults_from_module(&mut form, m);
    }
    form.name = free_name(
        if base.is_empty() { "module" } else { &base },
        &ctx.deployments,
    );
    form
}

async fn deploy_page(
    State(c): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<DeployQuery>,
) -> Response {
    let (cur, client) = match c.user(&headers, &uri, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ctx = match form_context(&c, &client, &cur.session.user.namespace).await {
        Ok(x) => x,
        Err(e) => return c.kube_error(&cur, "read your Modules and Clusters", &e),
    };
    let module = if q.from.is_empty()
        || ctx
            .own
            .iter()
            .any(|m| m.metadata.name.as_deref() == Some(&q.module))
    {
        q.module.clone()
    } else {
        format!("catalogue:{}", q.module)
    };
    let module = if module.is_empty() {
        ctx.own
            .first()
            .and_then(|m| m.metadata.name.clone())
            .or_else(|| {
                ctx.shared
                    .first()
                    .and_then(|m| m.metadata.name.clone())
                    .map(|n| format!("catalogue:{n}"))
            })
            .unwrap_or_default()
    } else {
        module
    };
    let form = new_form(&ctx, &module, "");
    let data = deploy_data(&c, &cur.session.user, &ctx, &form, &[], None);
    c.page(&cur, "deploy", data)
}

/// The AI4OS dashboard's link: `/configure?selected_tosca=...&childs=...&ai4eosc_model_image=IMAGE`.
async fn configure(
    State(c): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let (cur, client) = match c.user(&headers, &uri, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ctx = match form_context(&c, &client, &cur.session.user.namespace).await {
        Ok(x) => x,
        Err(e) => return c.kube_error(&cur, "read your Modules and Clusters", &e),
    };
    let image = q.get("ai4eosc_model_image").cloned().unwrap_or_default();
    let image = super::import::dashboard_image(&image);
    let selected = q.get("selected_tosca").cloned().unwrap_or_default();
    let childs: Vec<String> = q
        .get("childs")
        .map(|c| {
            c.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut form = new_form(&ctx, "", &image);
    let mut notes = Vec::new();
    match super::import::template_defaults(&selected, &childs) {
        Ok(d) => d.apply(&mut form),
        Err(e) => notes.push(e),
    }
    let link = format!(
        "template {selected}{}",
        if childs.is_empty() {
            String::new()
        } else {
            format!(" with {}", childs.join(", "))
        }
    );
    let mut data = deploy_data(&c, &cur.session.user, &ctx, &form, &[], Some(link));
    data["notes"] = json!(notes);
    c.page(&cur, "deploy", data)
}

/// Reads the form of a POST to /deploy or /deploy/preview, and its context.
async fn posted(
    c: &Console,
    headers: &HeaderMap,
    uri: &Uri,
    form: &DeployForm,
) -> Result<(Current, kube::Client, FormContext), Response> {
    let cur = c.current(headers, uri, false)?;
    c.check_csrf(&cur, Some(&form.csrf))?;
    let client = c.client(&cur)?;
    let ctx = form_context(c, &client, &cur.session.user.namespace)
        .await
        .map_err(|e| c.kube_error(&cur, "read your Modules and Clusters", &e))?;
    Ok((cur, client, ctx))
}

fn money(v: f64) -> String {
    format!("${v:.2}")
}

/// What `kelp plan` says the form's manifests do, for the page.
async fn preview(client: &kube::Client, objects: &[Value], new_cluster: Option<&str>) -> Value {
    use crate::cli::plan;
    let mut m = plan::Manifests::default();
    for o in objects {
        match o["kind"].as_str() {
            Some("Module") => m
                .modules
                .extend(serde_json::from_value::<Module>(o.clone()).ok()),
            Some("Cluster") => m
                .clusters
                .extend(serde_json::from_value::<Cluster>(o.clone()).ok()),
            Some("Deployment") => m
                .deployments
                .extend(serde_json::from_value::<Deployment>(o.clone()).ok()),
            _ => {}
        }
    }
    let mut notes = Vec::new();
    let offline = plan::offline(m.clone());
    let mut inputs = plan::gather(client, m).await;
    // A new Cluster's credentials are not a Secret yet: its cloud's built-in catalogue
    // (EC2, the sim) prices it.
    for (k, t) in offline.types {
        if t.is_ok() && inputs.types.get(&k).is_some_and(|x| x.is_err()) {
            inputs.types.insert(k, t);
        }
    }
    if new_cluster.is_some() && inputs.types.values().any(|t| t.is_err()) {
        notes.push("The new Cluster's cloud is asked for its machine types and prices once its credentials are stored; the prices appear on the Deployment's page.".to_string());
    }
    let p = plan::plan(&inputs, k8s_openapi::jiff::Timestamp::now());
    let clusters: Vec<Value> = p
        .clusters
        .iter()
        .map(|cl| {
            let pools: Vec<Value> = cl
                .pools
                .iter()
                .map(|r| {
                    json!({"pool": r.pool, "instance_type": r.instance_type.clone().unwrap_or_else(|| "?".into()),
                        "vcpus": r.vcpus, "memory": r.memory_mb.map(|m| format!("{:.1} GB", m as f64 / 1024.0)),
                        "gpus": r.gpus, "gpu_model": r.gpu_model, "now": r.now, "after": r.after,
                        "price_per_hour": r.price_per_hour.map(money), "price_per_30_days": r.price_per_30_days.map(money),
                        "action": r.action})
                })
                .collect();
            json!({"name": cl.name, "cloud": cl.cloud, "exists": cl.exists, "pools": pools,
                "problems": cl.problems.iter().chain(&cl.unfit).collect::<Vec<_>>()})
        })
        .collect();
    let deployments: Vec<Value> = p
        .deployments
        .iter()
        .map(
            |d| json!({"name": d.name, "cluster": d.cluster, "pool": d.pool, "problem": d.problem}),
        )
        .collect();
    json!({"clusters": clusters, "deployments": deployments, "total": money(p.price_per_hour),
        "total_30_days": money(p.price_per_30_days), "unpriced": (!p.unpriced.is_empty()).then(|| p.unpriced.join(", ")),
        "notes": notes})
}

async fn deploy_preview(
    State(c): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<DeployForm>,
) -> Response {
    let (cur, client, ctx) = match posted(&c, &headers, &uri, &form).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let user = &cur.session.user;
    let choice = module_choice(&form, &ctx);
    let typed_credentials = !form.egi_refresh_token.is_empty()
        || !form.os_credential_secret.is_empty()
        || !form.ec2_secret_access_key.is_empty()
        || !form.storage_password.is_empty();
    let (errors, plan) = match deploy::manifests(
        &form,
        &choice,
        &user.namespace,
        &user.vos,
        c.config.allow_sim,
        false,
    ) {
        Ok(m) => (
            Vec::new(),
            Some(preview(&client, &m.objects, m.new_cluster.as_deref()).await),
        ),
        Err(e) => (e, None),
    };
    let mut data = deploy_data(&c, user, &ctx, &form, &errors, None);
    data["preview"] = json!(plan);
    data["reenter"] = json!(typed_credentials);
    c.page(&cur, "deploy", data)
}

async fn deploy_submit(
    State(c): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<DeployForm>,
) -> Response {
    let (cur, client, ctx) = match posted(&c, &headers, &uri, &form).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let user = cur.session.user.clone();
    let choice = module_choice(&form, &ctx);
    let refuse = |errors: Vec<FieldError>| {
        let mut data = deploy_data(&c, &user, &ctx, &form, &errors, None);
        data["reenter"] = json!(true);
        let mut r = c.page(&cur, "deploy", data);
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        r
    };
    let mut m = match deploy::manifests(
        &form,
        &choice,
        &user.namespace,
        &user.vos,
        c.config.allow_sim,
        true,
    ) {
        Ok(m) => m,
        Err(e) => return refuse(e),
    };
    if ctx.deployments.contains(&m.deployment) {
        return refuse(vec![FieldError {
            field: "name",
            message: format!(
                "a Deployment named {} exists already; choose another name",
                m.deployment
            ),
        }]);
    }
    if m.new_cluster.is_some()
        && ctx
            .clusters
            .iter()
            .any(|cl| cl.metadata.name.as_deref() == Some(&m.deployment))
    {
        return refuse(vec![FieldError {
            field: "name",
            message: format!(
                "a Cluster named {} exists already; choose another name, or deploy on it",
                m.deployment
            ),
        }]);
    }
    if let Err(message) = apply_all(&client, &user.namespace, &mut m.objects).await {
        return refuse(vec![FieldError {
            field: "name",
            message,
        }]);
    }
    if let Some(cluster) = &m.new_cluster {
        own_secrets_by_cluster(&client, &user.namespace, cluster, &m.objects).await;
    }
    tracing::info!(user = %user.name, namespace = %user.namespace, deployment = %m.deployment, "console deploy");
    Redirect::to(&format!("/deployments/{}", m.deployment)).into_response()
}

/// Applies objects as the user: all of them as a dry run first, so that nothing is made
/// unless the API server accepts every one; then for real. The error names the object.
pub async fn apply_all(
    client: &kube::Client,
    ns: &str,
    objects: &mut [Value],
) -> Result<(), String> {
    for dry_run in [true, false] {
        for o in objects.iter_mut() {
            if let Err(e) = apply(client, ns, o, dry_run).await {
                let what = format!(
                    "{} {}",
                    o["kind"].as_str().unwrap_or("object"),
                    o["metadata"]["name"].as_str().unwrap_or("")
                );
                return Err(format!(
                    "Kubernetes refused the {what}: {}",
                    api_message(&e)
                ));
            }
        }
    }
    Ok(())
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(ae) => ae.message.clone(),
        other => crate::context::error_chain(other),
    }
}

/// Server-side applies one object as the user (field manager `kelp-console`). A real
/// apply writes back the server's answer (uid included).
async fn apply(
    client: &kube::Client,
    ns: &str,
    o: &mut Value,
    dry_run: bool,
) -> Result<(), kube::Error> {
    let mut params = PatchParams::apply(deploy::MANAGER);
    params.dry_run = dry_run;
    let name = o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let meta = match o["kind"].as_str() {
        Some("Secret") => patch_as::<Secret>(client, ns, &name, &params, o).await?,
        Some("Module") => patch_as::<Module>(client, ns, &name, &params, o).await?,
        Some("Cluster") => patch_as::<Cluster>(client, ns, &name, &params, o).await?,
        _ => patch_as::<Deployment>(client, ns, &name, &params, o).await?,
    };
    if !dry_run {
        o["metadata"]["uid"] = json!(meta.uid);
    }
    Ok(())
}

/// Server-side applies `o` as a `K` and returns the stored object's metadata.
async fn patch_as<K>(
    client: &kube::Client,
    ns: &str,
    name: &str,
    params: &PatchParams,
    o: &Value,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let stored = Api::<K>::namespaced(client.clone(), ns)
        .patch(name, params, &Patch::Apply(o))
        .await?;
    Ok(stored.meta().clone())
}

/// The credentials Secrets of a new Cluster get it as their owner, so that Kubernetes'
/// garbage collector removes them once the Cluster (and its machines) are gone, and not
/// before: the operator needs them to delete the machines.
async fn own_secrets_by_cluster(client: &kube::Client, ns: &str, cluster: &str, objects: &[Value]) {
    let Some(uid) = objects
        .iter()
        .find(|o| o["kind"] == "Cluster")
        .and_then(|o| o["metadata"]["uid"].as_str())
    else {
        return;
    };
    let refs = json!({"metadata": {"ownerReferences": [{"apiVersion": "kelp.imagine-ai.eu/v1alpha1",
        "kind": "Cluster", "name": cluster, "uid": uid}]}});
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    for o in objects.iter().filter(|o| o["kind"] == "Secret") {
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        if name.ends_with("-storage") {
            continue;
        }
        if let Err(e) = secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&refs))
            .await
        {
            tracing::warn!(secret = name, error = %api_message(&e), "console: could not give the Secret its Cluster as owner");
        }
    }
}

/// A Deployment as the list shows it.
fn row(d: &Deployment) -> Value {
    let v = serde_json::to_value(d).unwrap_or_default();
    let st = &v["status"];
    let ready_cond = st["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    let message = if ready_cond["status"] == "True" {
        Value::Null
    } else {
        ready_cond["message"].clone()
    };
    json!({
        "name": d.metadata.name,
        "module": d.spec.module_ref.name,
        "cluster": st["cluster"].as_str().map(String::from).or_else(|| d.spec.cluster_ref.as_ref().map(|c| c.name.clone())),
        "ready": format!("{}/{}", st["readyReplicas"].as_i64().unwrap_or(0), d.spec.replicas),
        "phase": st["phase"].as_str().unwrap_or("Pending"),
        "endpoint": st["endpoint"],
        "message": message,
    })
}

async fn rows_html(c: &Console, client: &kube::Client, ns: &str) -> Result<String, kube::Error> {
    let mut list = Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let rows: Vec<Value> = list.iter().map(row).collect();
    Ok(c.views.render("rows", &json!({"deployments": rows})))
}

async fn deployments(State(c): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    let (cur, client) = match c.user(&headers, &uri, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut list = match Api::<Deployment>::namespaced(client, &cur.session.user.namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(e) => return c.kube_error(&cur, "list Deployments", &e),
    };
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let rows: Vec<Value> = list.iter().map(row).collect();
    let v = version(&c.views.render("rows", &json!({"deployments": rows})));
    c.page(
        &cur,
        "deployments",
        json!({"title": "Deployments", "deployments": rows, "version": v}),
    )
}

/// How often a live page is refreshed from the API server.
const LIVE_PERIOD: Duration = Duration::from_secs(1);

/// The version of a live fragment: the page carries the one it was rendered with, so
/// that the stream sends nothing until the fragment changes (replacing it with the same
/// HTML would only disturb the page).
fn version(html: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(html.as_bytes())[..8])
}

#[derive(Deserialize, Default)]
struct LiveQuery {
    #[serde(default)]
    v: String,
}

/// A server-sent event stream of `event` whenever `render` gives new HTML (unlike the
/// version `seen` the page has).
fn live<F, Fut>(
    event: &'static str,
    seen: String,
    render: F,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<String>> + Send,
{
    let stream = futures::stream::unfold(
        (render, seen, true),
        move |(render, last, first)| async move {
            let mut first = first;
            loop {
                if !first {
                    tokio::time::sleep(LIVE_PERIOD).await;
                }
                first = false;
                // An error (a deleted object, a lost permission) ends the stream.
                let html = render().await?;
                let v = version(&html);
                if last != v {
                    let ev = SseEvent::default().event(event).data(html);
                    return Some((Ok(ev), (render, v, false)));
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn deployments_live(
    State(c): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<LiveQuery>,
) -> Response {
    let (cur, client) = match c.user(&headers, &uri, false) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ns = cur.session.user.namespace.clone();
    let console = c.clone();
    live("rows", q.v, move || {
        let (c, client, ns) = (console.clone(), client.clone(), ns.clone());
        async move { rows_html(&c, &client, &ns).await.ok() }
    })
    .into_response()
}

/// The detail page's live part and the delete section's facts.
async fn detail_data(client: &kube::Client, ns: &str, name: &str) -> Result<Value, kube::Error> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    let mut data = row(&d);
    let v = serde_json::to_value(&d).unwrap_or_default();
    data["conditions"] = v["status"]["conditions"].clone();
    data["image"] = v["status"]["image"].clone();
    data["pool"] = v["status"]["nodePool"].clone();
    let cluster_name = data["cluster"].as_str().unwrap_or_default().to_string();
    let cluster = if cluster_name.is_empty() {
        None
    } else {
        Api::<Cluster>::namespaced(client.clone(), ns)
            .get_opt(&cluster_name)
            .await?
    };
    if let Some(cl) = &cluster {
        let cv = serde_json::to_value(cl).unwrap_or_default();
        let pool_price = cv["status"]["nodePools"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == v["status"]["nodePool"]))
            .and_then(|p| p["pricePerHour"].as_f64());
        let total = cv["status"]["pricePerHour"].as_f64();
        data["price"] = match (total, pool_price) {
            (Some(t), Some(p)) => json!(format!(
                "{} for its Cluster {cluster_name} ({} a machine of its pool)",
                money(t),
                money(p)
            )),
            (Some(t), None) => json!(format!("{} for its Cluster {cluster_name}", money(t))),
            _ => Value::Null,
        };
    }
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    let mut events: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                (r.kind.as_deref() == Some("Deployment") && r.name.as_deref() == Some(name))
                    || (r.kind.as_deref() == Some("Cluster")
                        && r.name.as_deref() == Some(&cluster_name))
            })
        })
        .collect();
    let when = |e: &Event| {
        e.series
            .as_ref()
            .map(|s| s.last_observed_time.0.to_string())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
            .unwrap_or_default()
    };
    events.sort_by_key(|e| std::cmp::Reverse(when(e)));
    data["events"] = json!(events
        .iter()
        .take(30)
        .map(|e| json!({"time": when(e), "type": e.type_, "reason": e.reason,
            "object": e.regarding.as_ref().map(|r| format!("{}/{}", r.kind.clone().unwrap_or_default(), r.name.clone().unwrap_or_default())),
            "note": e.note}))
        .collect::<Vec<_>>());
    // Read once: the storage Secret for the delete section, all of them for the Cluster.
    let secrets = created_secrets(client, ns, name).await?;
    let storage: Vec<&String> = secrets.iter().filter(|s| s.ends_with("-storage")).collect();
    data["storage_secret"] = json!((!storage.is_empty()).then(|| {
        storage
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }));
    // The Cluster made for this Deployment, which deleting may remove too.
    if let Some(cl) = cluster.filter(|cl| {
        cl.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(deploy::CREATED_FOR))
            .map(String::as_str)
            == Some(name)
    }) {
        let cv = serde_json::to_value(&cl).unwrap_or_default();
        let machines: usize = cv["status"]["nodePools"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["machines"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
        let others: Vec<String> = Api::<Deployment>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|o| o.metadata.name.as_deref() != Some(name))
            .filter(|o| row(o)["cluster"].as_str() == Some(&cluster_name))
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        data["created_cluster"] = json!({
            "name": cluster_name, "machines": machines,
            "price": cv["status"]["pricePerHour"].as_f64().map(money),
            "secrets": if secrets.is_empty() { "none".to_string() } else { secrets.join(", ") },
            "others": (!others.is_empty()).then(|| others.join(", ")),
        });
    }
    Ok(data)
}

/// Deletes the Secrets the console made for Deployment `name` once its Cluster is gone
/// (checked every 2 s, for at most an hour). Kubernetes' garbage collector does the same
/// through their owner reference; this covers an API server without one. A Secret
/// already gone is fine.
fn forget_credentials_after(client: kube::Client, ns: String, cluster: String, name: String) {
    tokio::spawn(async move {
        let clusters = Api::<Cluster>::namespaced(client.clone(), &ns);
        for _ in 0..1800 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            match clusters.get_opt(&cluster).await {
                Ok(None) => break,
                Ok(Some(_)) => continue,
                Err(_) => return,
            }
        }
        if clusters.get_opt(&cluster).await.ok().flatten().is_some() {
            return;
        }
        if let Ok(secrets) = created_secrets(&client, &ns, &name).await {
            let api = Api::<Secret>::namespaced(client.clone(), &ns);
            // The cloud credentials only: the storage Secret went with the Deployment,
            // and one of that name now belongs to a newer Deployment.
            for s in secrets.into_iter().filter(|s| !s.ends_with("-storage")) {
                let _ = api.delete(&s, &DeleteParams::default()).await;
            }
        }
    });
}

/// The Secrets the console made for Deployment `name`.
async fn created_secrets(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Vec<String>, kube::Error> {
    let lp =
        ListParams::default().labels(&format!("app.kubernetes.io/managed-by={}", deploy::MANAGER));
    Ok(Api::<Secret>::namespaced(client.clone(), ns)
        .list_metadata(&lp)
        .await?
        .items
        .into_iter()
        .filter(|s| {
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(deploy::CREATED_FOR))
                .map(String::as_str)
                == Some(name)
        })
        .filter_map(|s| s.metadata.name)
        .collect())
}

async fn detail(
    State(c): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
) -> Response {
    let (cur, client) = match c.user(&headers, &uri, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut data = match detail_data(&client, &cur.session.user.namespace, &name).await {
        Ok(d) => d,
        Err(kube::Error::Api(ae)) if ae.code == 404 => {
            return c.error(
                StatusCode::NOT_FOUND,
                Some(&cur),
                "Not found",
                &format!("There is no Deployment {name} in your namespace."),
                false,
            );
        }
        Err(e) => return c.kube_error(&cur, "read the Deployment", &e),
    };
    data["title"] = json!(format!("Deployment {name}"));
    data["version"] = json!(version(&c.views.render("detail_live", &data)));
    c.page(&cur, "detail", data)
}

async fn detail_live(
    State(c): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
    Query(q): Query<LiveQuery>,
) -> Response {
    let (cur, client) = match c.user(&headers, &uri, false) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ns = cur.session.user.namespace.clone();
    let console = c.clone();
    live("detail", q.v, move || {
        let (c, client, ns, name) = (console.clone(), client.clone(), ns.clone(), name.clone());
        async move {
            let data = detail_data(&client, &ns, &name).await.ok()?;
            Some(c.views.render("detail_live", &data))
        }
    })
    .into_response()
}

async fn delete(
    State(c): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let cur = match c.current(&headers, &uri, false) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(r) = c.check_csrf(&cur, Some(&f.csrf)) {
        return r;
    }
    let client = match c.client(&cur) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ns = cur.session.user.namespace.clone();
    let data = match detail_data(&client, &ns, &name).await {
        Ok(d) => d,
        Err(e) => return c.kube_error(&cur, "read the Deployment", &e),
    };
    if let Err(e) = Api::<Deployment>::namespaced(client.clone(), &ns)
        .delete(&name, &DeleteParams::default())
        .await
    {
        return c.kube_error(&cur, "delete the Deployment", &e);
    }
    let mut removed = vec![format!("the Deployment {name}")];
    if f.with_cluster == "yes"
        && let Some(cluster) = data["created_cluster"]["name"].as_str()
    {
        if let Err(e) = Api::<Cluster>::namespaced(client.clone(), &ns)
            .delete(cluster, &DeleteParams::default())
            .await
        {
            return c.kube_error(&cur, "delete the Cluster", &e);
        }
        removed.push(format!(
            "the Cluster {cluster} (its machines are being deleted)"
        ));
        // The cloud credentials go with the Cluster (their owner), once the operator
        // has deleted its machines.
        forget_credentials_after(
            client.clone(),
            ns.clone(),
            cluster.to_string(),
            name.clone(),
        );
    }
    // The storage credentials go with the Deployment.
    if let Ok(secrets) = created_secrets(&client, &ns, &name).await {
        for s in secrets.iter().filter(|s| s.ends_with("-storage")) {
            if Api::<Secret>::namespaced(client.clone(), &ns)
                .delete(s, &DeleteParams::default())
                .await
                .is_ok()
            {
                removed.push(format!("the Secret {s}"));
            }
        }
    }
    tracing::info!(user = %cur.session.user.name, namespace = %ns, deployment = %name, "console delete");
    c.page(
        &cur,
        "error",
        json!({"title": "Deleted", "heading": format!("Deleting {name}"), "message": format!("kelp is removing {}.", removed.join(", "))}),
    )
}
