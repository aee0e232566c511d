//! The EGI Check-in stand-in: an OIDC provider on 127.0.0.1 for `kelp console`'s login
//! (authorization code with PKCE S256) and the EGI driver's refresh-token grant.
//!
//! | URL | what |
//! | --- | --- |
//! | `GET /.well-known/openid-configuration` | discovery; the issuer is [`Checkin::issuer`] |
//! | `GET /authorize` | checks the request, shows the login form (`#username`, `#password`, `#login`) |
//! | `POST /authorize` | the form: right password → 303 to `redirect_uri?code=..&state=..` |
//! | `POST /token` | `authorization_code` (client secret, redirect URI, PKCE) and `refresh_token` |
//! | `GET /userinfo` | the Bearer token's user, with `eduperson_entitlement` |
//! | `GET /logout` | end of session: back to `post_logout_redirect_uri` |
//!
//! Errors follow RFC 6749: a bad `client_id` or `redirect_uri` is a 400 page (never a
//! redirect to an unchecked URI); other authorization errors go back to the client as
//! `?error=...&state=...`; the token endpoint answers `{"error": ...}`. An authorization
//! code is spent by its first redemption, successful or not, as Check-in (Keycloak) does.
//! ID tokens are HS256 JWTs signed with the client's secret ([`verify_id_token`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// A client of the provider (the console, a test's own relying party).
#[derive(Clone, Debug)]
pub struct OidcClient {
    pub client_id: String,
    pub client_secret: String,
    /// Compared exactly, as Check-in does.
    pub redirect_uris: Vec<String>,
}

/// An account that can log in.
#[derive(Clone, Debug)]
pub struct OidcUser {
    pub username: String,
    pub password: String,
    pub sub: String,
    pub name: String,
    pub email: String,
    /// e.g. `urn:mace:egi.eu:group:vo.imagine-ai.eu:role=member#aai.egi.eu`.
    pub entitlements: Vec<String>,
}

impl OidcUser {
    /// `username` with password `password`, a Check-in-like `sub`, and membership of
    /// `vo.imagine-ai.eu`.
    pub fn new(username: &str, password: &str) -> OidcUser {
        OidcUser {
            username: username.into(),
            password: password.into(),
            sub: format!("{username}-0123456789abcdef@egi.eu"),
            name: format!("Researcher {username}"),
            email: format!("{username}@example.org"),
            entitlements: vec![entitlement("vo.imagine-ai.eu", "member")],
        }
    }

    pub fn with_entitlements(mut self, entitlements: &[&str]) -> OidcUser {
        self.entitlements = entitlements.iter().map(|e| e.to_string()).collect();
        self
    }
}

/// An EGI entitlement: `urn:mace:egi.eu:group:<vo>:role=<role>#aai.egi.eu`.
pub fn entitlement(vo: &str, role: &str) -> String {
    format!("urn:mace:egi.eu:group:{vo}:role={role}#aai.egi.eu")
}

/// A request the token endpoint received, for assertions.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    /// The form fields, as sent.
    pub form: BTreeMap<String, String>,
    /// The client id of an `Authorization: Basic` header, if one came.
    pub basic_client_id: Option<String>,
}

struct Code {
    client_id: String,
    redirect_uri: String,
    username: String,
    nonce: Option<String>,
    challenge: String,
    scope: String,
    expires: Instant,
}

struct Access {
    username: String,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    issuer: String,
    /// Refresh token → access token (the refresh grant's accounts).
    refresh: HashMap<String, String>,
    clients: HashMap<String, OidcClient>,
    users: HashMap<String, OidcUser>,
    codes: HashMap<String, Code>,
    access: HashMap<String, Access>,
    calls: BTreeMap<&'static str, u64>,
    last_token: Option<TokenRequest>,
    code_ttl: Duration,
    token_ttl: Duration,
}

type Shared = Arc<Mutex<Inner>>;

/// The running provider; stopped on drop.
pub struct Checkin {
    port: u16,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Checkin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Checkin {
    /// A fresh provider on a free port of 127.0.0.1, with no clients and no users.
    pub async fn start() -> Checkin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Mutex::new(Inner {
            issuer: format!("http://127.0.0.1:{port}"),
            code_ttl: Duration::from_secs(60),
            token_ttl: Duration::from_secs(3600),
            ..Inner::default()
        }));
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize).post(login))
            .route("/token", axum::routing::post(token))
            .route("/userinfo", get(userinfo).post(userinfo))
            .route("/logout", get(logout))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Checkin { port, inner, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// The issuer, also the base URL: `http://127.0.0.1:<port>`.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    pub fn authorize_url(&self) -> String {
        format!("{}/authorize", self.issuer())
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer())
    }

    pub fn userinfo_url(&self) -> String {
        format!("{}/userinfo", self.issuer())
    }

    pub fn logout_url(&self) -> String {
        format!("{}/logout", self.issuer())
    }

    /// Registers (or replaces) a client.
    pub fn add_client(&self, client_id: &str, client_secret: &str, redirect_uris: &[&str]) {
        let client = OidcClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: redirect_uris.iter().map(|u| u.to_string()).collect(),
        };
        self.lock().clients.insert(client_id.into(), client);
    }

    /// Registers (or replaces) a user, by username.
    pub fn add_user(&self, user: OidcUser) {
        self.lock().users.insert(user.username.clone(), user);
    }

    /// `refresh` buys `access` (the refresh-token grant, for the EGI driver).
    pub fn add(&self, refresh: &str, access: &str) {
        self.lock().refresh.insert(refresh.into(), access.into());
    }

    /// `refresh` is refused from now on.
    pub fn revoke(&self, refresh: &str) {
        self.lock().refresh.remove(refresh);
    }

    /// How long an authorization code may wait for its redemption (60 s unless set).
    pub fn set_code_lifetime(&self, ttl: Duration) {
        self.lock().code_ttl = ttl;
    }

    /// How long access and ID tokens last (an hour unless set).
    pub fn set_token_lifetime(&self, ttl: Duration) {
        self.lock().token_ttl = ttl;
    }

    /// Token requests answered so far.
    pub fn calls(&self) -> u64 {
        self.calls_to("/token")
    }

    /// Requests to one of the provider's paths (`/authorize` counts both the form and
    /// its posts) answered so far.
    pub fn calls_to(&self, path: &str) -> u64 {
        self.lock().calls.get(path).copied().unwrap_or(0)
    }

    /// The last request to the token endpoint.
    pub fn last_token_request(&self) -> Option<TokenRequest> {
        self.lock().last_token.clone()
    }
}

/// The claims of an ID token of this provider when its HS256 signature is `secret`'s,
/// else None. Expiry is not checked here.
pub fn verify_id_token(token: &str, secret: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (header, payload, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let h: Value = serde_json::from_slice(&B64.decode(header).ok()?).ok()?;
    if h["alg"] != "HS256" {
        return None;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(format!("{header}.{payload}").as_bytes());
    mac.verify_slice(&B64.decode(sig).ok()?).ok()?;
    serde_json::from_slice(&B64.decode(payload).ok()?).ok()
}

/// The S256 code challenge of a PKCE verifier (RFC 7636 4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}

fn sign_hs256(claims: &Value, secret: &str) -> String {
    let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = B64.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{header}.{payload}").as_bytes());
    let sig = B64.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{sig}")
}

fn random_token() -> String {
    B64.encode(rand::random::<[u8; 24]>())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn count(inner: &Shared, path: &'static str) {
    *inner.lock().unwrap().calls.entry(path).or_default() += 1;
}

async fn discovery(State(inner): State<Shared>) -> axum::Json<Value> {
    count(&inner, "/.well-known/openid-configuration");
    let iss = inner.lock().unwrap().issuer.clone();
    axum::Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "userinfo_endpoint": format!("{iss}/userinfo"),
        "end_session_endpoint": format!("{iss}/logout"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["HS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "email", "eduperson_entitlement", "offline_access"],
        "claims_supported": ["sub", "name", "email", "preferred_username", "eduperson_entitlement"],
    }))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn error_page(status: StatusCode, error: &str, description: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><title>Check-in error</title></head><body>\
         <h1>Cannot log in</h1><p id=\"error\">{}: {}</p></body></html>",
        escape(error),
        escape(description)
    );
    (status, Html(body)).into_response()
}

/// `uri` with `params` added to its query.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse(uri).expect("registered redirect URIs are URLs");
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

/// What `/authorize` carries from the form to its post.
const CARRIED: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

/// What is wrong with an authorization request, as the response: a 400 page, or the
/// error redirect to the client. None when it is fine.
fn authorize_error(inner: &Inner, q: &HashMap<String, String>) -> Option<Response> {
    let client_id = q.get("client_id").map(String::as_str).unwrap_or_default();
    let Some(client) = inner.clients.get(client_id) else {
        return Some(error_page(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            &format!("unknown client_id {client_id:?}"),
        ));
    };
    let redirect_uri = q
        .get("redirect_uri")
        .map(String::as_str)
        .unwrap_or_default();
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Some(error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("redirect_uri {redirect_uri:?} is not registered for {client_id}"),
        ));
    }
    let back = |error: &str, description: &str| {
        let mut params = vec![("error", error), ("error_description", description)];
        if let Some(state) = q.get("state") {
            params.push(("state", state));
        }
        Some(Redirect::to(&with_query(redirect_uri, &params)).into_response())
    };
    if q.get("response_type").map(String::as_str) != Some("code") {
        return back(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    if !q
        .get("scope")
        .is_some_and(|s| s.split(' ').any(|s| s == "openid"))
    {
        return back("invalid_scope", "the openid scope is required");
    }
    if q.get("code_challenge").is_none_or(|c| c.is_empty()) {
        return back("invalid_request", "PKCE code_challenge is required");
    }
    if q.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return back("invalid_request", "code_challenge_method must be S256");
    }
    None
}

fn login_form(q: &HashMap<String, String>, error: Option<&str>, username: &str) -> Response {
    let hidden: String = CARRIED
        .iter()
        .filter_map(|k| q.get(*k).map(|v| (k, v)))
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">\n",
                escape(v)
            )
        })
        .collect();
    let error = error
        .map(|e| format!("<p id=\"error\" role=\"alert\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>EGI Check-in</title></head>\n\
         <body><h1>EGI Check-in</h1>\n<p>Log in to continue to {client}.</p>\n{error}\
         <form method=\"post\" action=\"/authorize\">\n{hidden}\
         <label for=\"username\">Username</label>\n\
         <input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" value=\"{user}\">\n\
         <label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">\n\
         <button id=\"login\" type=\"submit\">Log in</button>\n</form></body></html>\n",
        client = escape(q.get("client_id").map(String::as_str).unwrap_or_default()),
        user = escape(username),
    );
    Html(body).into_response()
}

async fn authorize(
    State(inner): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    count(&inner, "/authorize");
    let error = authorize_error(&inner.lock().unwrap(), &q);
    error.unwrap_or_else(|| login_form(&q, None, ""))
}

async fn login(State(inner): State<Shared>, Form(f): Form<HashMap<String, String>>) -> Response {
    count(&inner, "/authorize");
    let mut inner = inner.lock().unwrap();
    // The hidden fields come back from the browser: check them again.
    if let Some(r) = authorize_error(&inner, &f) {
        return r;
    }
    let username = f.get("username").cloned().unwrap_or_default();
    let password = f.get("password").map(String::as_str).unwrap_or_default();
    if inner
        .users
        .get(&username)
        .is_none_or(|u| u.password != password)
    {
        return login_form(&f, Some("Wrong username or password."), &username);
    }
    let code = random_token();
    let expires = Instant::now() + inner.code_ttl;
    let redirect_uri = f["redirect_uri"].clone();
    inner.codes.insert(
        code.clone(),
        Code {
            client_id: f["client_id"].clone(),
            redirect_uri: redirect_uri.clone(),
            username,
            nonce: f.get("nonce").cloned(),
            challenge: f["code_challenge"].clone(),
            scope: f.get("scope").cloned().unwrap_or_default(),
            expires,
        },
    );
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = f.get("state") {
        params.push(("state", state));
    }
    Redirect::to(&with_query(&redirect_uri, &params)).into_response()
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
    r
}

/// The client id and secret of an `Authorization: Basic` header (RFC 6749 2.3.1: each
/// form-urlencoded before base64).
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let decode = |s: &str| {
        reqwest::Url::parse(&format!("http://x/?v={s}"))
            .ok()
            .and_then(|u| u.query_pairs().next().map(|(_, v)| v.into_owned()))
            .unwrap_or_default()
    };
    Some((decode(id), decode(secret)))
}

async fn token(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    count(&inner, "/token");
    let basic = basic_auth(&headers);
    let mut inner = inner.lock().unwrap();
    inner.last_token = Some(TokenRequest {
        form: form.clone().into_iter().collect(),
        basic_client_id: basic.as_ref().map(|(id, _)| id.clone()),
    });
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => refresh_grant(&inner, &form),
        Some("authorization_code") => code_grant(&mut inner, &form, basic),
        _ => token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token",
        ),
    }
}

/// The EGI driver's grant: a known refresh token buys its access token (the Keystone
/// peer's OIDC front accepts `fake:<sub>:<entitlement>`); any client id will do.
fn refresh_grant(inner: &Inner, form: &HashMap<String, String>) -> Response {
    if form.get("client_id").is_none_or(|c| c.is_empty()) {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client credentials",
        );
    }
    let refresh = form.get("refresh_token").cloned().unwrap_or_default();
    match inner.refresh.get(&refresh) {
        Some(access) => (
            StatusCode::OK,
            axum::Json(json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600})),
        )
            .into_response(),
        None => token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Token is not active",
        ),
    }
}

fn code_grant(
    inner: &mut Inner,
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
) -> Response {
    let (client_id, secret) = match (basic, form.get("client_secret")) {
        (Some(_), Some(_)) => {
            return token_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "use one client authentication method, not two",
            );
        }
        (Some((id, secret)), None) => {
            if form.get("client_id").is_some_and(|c| *c != id) {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id differs from the authenticated client",
                );
            }
            (id, secret)
        }
        (None, secret) => (
            form.get("client_id").cloned().unwrap_or_default(),
            secret.cloned().unwrap_or_default(),
        ),
    };
    let Some(client) = inner
        .clients
        .get(&client_id)
        .filter(|c| c.client_secret == secret)
        .cloned()
    else {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client credentials",
        );
    };
    let invalid = |d: &str| token_error(StatusCode::BAD_REQUEST, "invalid_grant", d);
    // Spent by this redemption whatever its outcome.
    let Some(code) = form.get("code").and_then(|c| inner.codes.remove(c)) else {
        return invalid("Code not valid (unknown or already used)");
    };
    if code.expires < Instant::now() {
        return invalid("Code not valid (expired)");
    }
    if code.client_id != client.client_id {
        return invalid("Code was issued to another client");
    }
    if form.get("redirect_uri") != Some(&code.redirect_uri) {
        return invalid("Incorrect redirect_uri");
    }
    match form.get("code_verifier") {
        None => return invalid("PKCE code verifier not specified"),
        Some(v) if pkce_challenge(v) != code.challenge => {
            return invalid("PKCE verification failed");
        }
        Some(_) => {}
    }
    let Some(user) = inner.users.get(&code.username).cloned() else {
        return invalid("User not found");
    };
    let access = random_token();
    let ttl = inner.token_ttl;
    inner.access.insert(
        access.clone(),
        Access {
            username: user.username.clone(),
            expires: Instant::now() + ttl,
        },
    );
    let now = now_secs();
    let mut claims = json!({
        "iss": inner.issuer,
        "sub": user.sub,
        "aud": client.client_id,
        "exp": now + ttl.as_secs(),
        "iat": now,
        "auth_time": now,
        "name": user.name,
        "email": user.email,
        "preferred_username": user.username,
    });
    if let Some(nonce) = &code.nonce {
        claims["nonce"] = json!(nonce);
    }
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "scope": code.scope,
        "id_token": sign_hs256(&claims, &client.client_secret),
    });
    if code.scope.split(' ').any(|s| s == "offline_access") {
        let refresh = random_token();
        inner.refresh.insert(refresh.clone(), access);
        body["refresh_token"] = json!(refresh);
    }
    let mut r = (StatusCode::OK, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
    r
}

async fn userinfo(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    count(&inner, "/userinfo");
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
            axum::Json(json!({"error": "invalid_token"})),
        )
            .into_response()
    };
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return unauthorized();
    };
    let inner = inner.lock().unwrap();
    let Some(user) = inner
        .access
        .get(token.trim())
        .filter(|a| a.expires > Instant::now())
        .and_then(|a| inner.users.get(&a.username))
    else {
        return unauthorized();
    };
    axum::Json(json!({
        "sub": user.sub,
        "name": user.name,
        "email": user.email,
        "preferred_username": user.username,
        "eduperson_entitlement": user.entitlements,
    }))
    .into_response()
}

async fn logout(State(inner): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    count(&inner, "/logout");
    let registered = {
        let inner = inner.lock().unwrap();
        q.get("post_logout_redirect_uri")
            .filter(|u| {
                inner
                    .clients
                    .values()
                    .any(|c| c.redirect_uris.iter().any(|r| same_origin(r, u)))
            })
            .cloned()
    };
    match registered {
        Some(uri) => {
            let params: Vec<(&str, &str)> = q
                .get("state")
                .map(|s| ("state", s.as_str()))
                .into_iter()
                .collect();
            Redirect::to(&with_query(&uri, &params)).into_response()
        }
        None => Html(
            "<!doctype html><html><head><title>EGI Check-in</title></head>\
             <body><p id=\"logged-out\">You have been logged out.</p></body></html>",
        )
        .into_response(),
    }
}

/// Whether `b` is on the origin of `a` (post-logout redirects go back to a client).
fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}
