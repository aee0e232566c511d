//! Login and sessions: the OIDC authorization-code flow with PKCE (S256) against EGI
//! Check-in, the session cookie, CSRF tokens, and who a user is to Kubernetes.
//!
//! The ID token comes straight from the provider's token endpoint over the back channel,
//! so its issuer is the one the console asked (OIDC Core 3.1.3.7: TLS validation of the
//! token endpoint stands in for the signature); its `iss`, `aud`, `exp` and `nonce` are
//! checked. VO membership comes from the userinfo endpoint's `eduperson_entitlement`, as
//! Check-in publishes it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::NamespaceMode;

/// The cookie that carries the session id.
pub const SESSION_COOKIE: &str = "kelp_session";
/// The cookie that binds a login in progress to the browser that started it.
pub const LOGIN_COOKIE: &str = "kelp_login";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// How long a login may take, from the redirect to the provider to the callback.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);

/// The OIDC client the console is. Its `Debug` leaves the client secret out.
#[derive(Clone)]
pub struct OidcConfig {
    /// The issuer URL; `<issuer>/.well-known/openid-configuration` is read.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    /// VOs whose members may use the console; empty: every authenticated user.
    pub allowed_vos: Vec<String>,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<hidden>"),
            )
            .field("scopes", &self.scopes)
            .field("allowed_vos", &self.allowed_vos)
            .finish()
    }
}

/// What the provider's discovery document says.
#[derive(Clone, Debug, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
}

/// Who a user is to Kubernetes, and where they work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The Kubernetes user name (`oidc:<sub>`; the `--dev-user` name in dev mode).
    pub name: String,
    /// What pages show: the name or e-mail from the token.
    pub display: String,
    /// The Kubernetes groups impersonated with the user.
    pub groups: Vec<String>,
    /// The user's VOs (from `eduperson_entitlement`), allowed ones only.
    pub vos: Vec<String>,
    /// The namespace the user works in.
    pub namespace: String,
    /// Requests are made through impersonation (OIDC users), or with the console's own
    /// credentials (the dev user).
    pub impersonate: bool,
}

/// A logged-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: User,
    pub csrf: String,
    expires: Instant,
}

#[derive(Clone, Debug)]
struct PendingLogin {
    verifier: String,
    nonce: String,
    return_to: String,
    expires: Instant,
}

/// The sessions and logins in progress, in memory: a restart logs everyone out.
#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, PendingLogin>>,
}

impl Sessions {
    /// Starts a session for `user`; returns its id.
    pub fn create(&self, user: User) -> String {
        let id = random_token();
        let session = Session {
            user,
            csrf: random_token(),
            expires: Instant::now() + SESSION_TTL,
        };
        let mut all = self.sessions.lock().expect("sessions");
        all.retain(|_, s| s.expires > Instant::now());
        all.insert(id.clone(), session);
        id
    }

    /// The live session of id `id`.
    pub fn get(&self, id: &str) -> Option<Session> {
        let all = self.sessions.lock().expect("sessions");
        all.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub fn remove(&self, id: &str) {
        self.sessions.lock().expect("sessions").remove(id);
    }

    /// Records a login in progress under `state`.
    fn begin(&self, state: &str, login: PendingLogin) {
        let mut all = self.pending.lock().expect("logins");
        all.retain(|_, p| p.expires > Instant::now());
        all.insert(state.to_string(), login);
    }

    /// Takes the login in progress of `state` (once).
    fn finish(&self, state: &str) -> Option<PendingLogin> {
        let mut all = self.pending.lock().expect("logins");
        all.remove(state).filter(|p| p.expires > Instant::now())
    }
}

/// 32 random bytes, base64url without padding.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of a verifier (RFC 7636 4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: HttpOnly, Secure, SameSite=Lax (the provider's redirect back is a
/// top-level navigation from another site, which Strict would strip), path `/`.
/// `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
        max_age.as_secs()
    )
}

/// Compares a form's CSRF token with the session's, in constant time.
pub fn csrf_ok(session: &Session, token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    let (a, b) = (session.csrf.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The VO of an EGI entitlement, `urn:mace:egi.eu:group:<vo>[:<subgroup>...][:role=<r>]#<authority>`.
pub fn entitlement_vo(entitlement: &str) -> Option<String> {
    let rest = entitlement.strip_prefix("urn:mace:egi.eu:group:")?;
    let rest = rest.split('#').next().unwrap_or(rest);
    let vo = rest.split(':').next()?;
    (!vo.is_empty() && !vo.starts_with("role=")).then(|| vo.to_string())
}

/// A DNS label from `s`: lowercase letters, digits and dashes, at most `max` characters,
/// no dash at either end.
fn dns_label(s: &str, max: usize) -> String {
    let mut out: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(max);
    out.trim_matches('-').to_string()
}

/// The namespace of a user (`User` mode): the prefix, `u-`, a readable part of the subject
/// and 8 hex digits of its SHA-256, so that two subjects never share one.
pub fn user_namespace(prefix: &str, sub: &str) -> String {
    let hash = hex::encode(&Sha256::digest(sub.as_bytes())[..4]);
    let room = 63usize.saturating_sub(prefix.len() + 2 + 1 + hash.len());
    let readable = dns_label(sub, room.min(30));
    if readable.is_empty() {
        format!("{prefix}u-{hash}")
    } else {
        format!("{prefix}u-{readable}-{hash}")
    }
}

/// The namespace of a VO (`Vo` mode): the prefix and the VO's name, dots as dashes.
pub fn vo_namespace(prefix: &str, vo: &str) -> String {
    let room = 63usize.saturating_sub(prefix.len());
    format!("{prefix}{}", dns_label(vo, room))
}

/// The user of an OIDC login: Kubernetes name `oidc:<sub>`, groups `oidc:vo:<vo>` for each
/// allowed VO (and `oidc:<entitlement>` for each entitlement of one, as the API server's
/// own OIDC authenticator with prefix `oidc:` would name them). Refused, with what to do,
/// when `allowed_vos` is set and the user is in none of them.
pub fn oidc_user(
    sub: &str,
    display: &str,
    entitlements: &[String],
    allowed_vos: &[String],
    mode: NamespaceMode,
    prefix: &str,
) -> Result<User, String> {
    if sub.is_empty() {
        return Err("the identity provider sent no subject (sub)".into());
    }
    let allowed = |vo: &str| allowed_vos.is_empty() || allowed_vos.iter().any(|a| a == vo);
    let mut vos: Vec<String> = entitlements
        .iter()
        .filter_map(|e| entitlement_vo(e))
        .filter(|vo| allowed(vo))
        .collect();
    vos.sort();
    vos.dedup();
    if !allowed_vos.is_empty() && vos.is_empty() {
        return Err(format!(
            "your account is not a member of a VO this console serves ({}); enrol in one of them in EGI Check-in, then log in again",
            allowed_vos.join(", ")
        ));
    }
    let mut groups: Vec<String> = vos.iter().map(|vo| format!("oidc:vo:{vo}")).collect();
    groups.extend(
        entitlements
            .iter()
            .filter(|e| entitlement_vo(e).is_some_and(|vo| allowed(&vo)))
            .map(|e| format!("oidc:{e}")),
    );
    let namespace = match (mode, vos.first()) {
        (NamespaceMode::Vo, Some(vo)) => vo_namespace(prefix, vo),
        (NamespaceMode::Vo, None) => {
            return Err(
                "this console gives each VO a namespace, and your account is in no VO; enrol in one in EGI Check-in".into(),
            );
        }
        (NamespaceMode::User, _) => user_namespace(prefix, sub),
    };
    Ok(User {
        name: format!("oidc:{sub}"),
        display: if display.is_empty() { sub } else { display }.to_string(),
        groups,
        vos,
        namespace,
        impersonate: true,
    })
}

/// Reads the provider's discovery document.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Discovery, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let r = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("the identity provider at {url} does not answer: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("{url} answered {}", r.status()));
    }
    let d: Discovery = r
        .json()
        .await
        .map_err(|e| format!("{url} is not an OIDC discovery document: {e}"))?;
    if d.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(format!("{url} names issuer {}, not {issuer}", d.issuer));
    }
    Ok(d)
}

/// Starts a login: records state, nonce and PKCE verifier, and returns the provider URL
/// to redirect to, and the state (for the login cookie).
pub fn begin_login(
    sessions: &Sessions,
    discovery: &Discovery,
    config: &OidcConfig,
    redirect_uri: &str,
    return_to: &str,
) -> (String, String) {
    let (state, nonce, verifier) = (random_token(), random_token(), random_token());
    let mut url = reqwest::Url::parse(&discovery.authorization_endpoint)
        .unwrap_or_else(|_| reqwest::Url::parse("http://invalid/").expect("url"));
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &config.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &config.scopes.join(" "))
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &pkce_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    sessions.begin(
        &state,
        PendingLogin {
            verifier,
            nonce,
            return_to: safe_return(return_to),
            expires: Instant::now() + LOGIN_TTL,
        },
    );
    (url.to_string(), state)
}

/// A return path after login: only a path on this console (no `//host`, no scheme).
pub fn safe_return(to: &str) -> String {
    // No control or space characters either: browsers drop tabs and newlines from a URL,
    // which would turn `/\t/host` into `//host`.
    if to.starts_with('/')
        && !to.starts_with("//")
        && !to.contains('\\')
        && !to.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        to.to_string()
    } else {
        "/".to_string()
    }
}

/// The claims the console reads from a login.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    pub sub: String,
    pub display: String,
    pub entitlements: Vec<String>,
}

/// What the provider's redirect back brought, and the browser's login cookie.
#[derive(Clone, Copy, Debug)]
pub struct Callback<'a> {
    pub code: &'a str,
    pub state: &'a str,
    pub login_cookie: Option<&'a str>,
}

/// Finishes a login: the callback's state must be the one this browser started (its
/// login cookie), the code is exchanged with the PKCE verifier, the ID token's claims
/// are checked and userinfo read. Returns the claims and where to go next.
pub async fn finish_login(
    http: &reqwest::Client,
    sessions: &Sessions,
    discovery: &Discovery,
    config: &OidcConfig,
    redirect_uri: &str,
    callback: &Callback<'_>,
) -> Result<(Claims, String), String> {
    let Callback {
        code,
        state,
        login_cookie,
    } = *callback;
    if login_cookie != Some(state) {
        return Err(
            "this login was not started in this browser (its state does not match); start again"
                .into(),
        );
    }
    let pending = sessions
        .finish(state)
        .ok_or("this login is unknown or took longer than 10 minutes; start again")?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("client_id", config.client_id.as_str()),
        ("code_verifier", pending.verifier.as_str()),
    ];
    if let Some(secret) = &config.client_secret {
        form.push(("client_secret", secret.as_str()));
    }
    let r = http
        .post(&discovery.token_endpoint)
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("the identity provider's token endpoint does not answer: {e}"))?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!(
            "the identity provider refused the login: {} {}",
            body["error"].as_str().unwrap_or(status.as_str()),
            body["error_description"].as_str().unwrap_or_default()
        ));
    }
    let id_token = body["id_token"]
        .as_str()
        .ok_or("the identity provider sent no ID token (is the openid scope asked?)")?;
    let claims = jwt_claims(id_token)?;
    check_claims(&claims, discovery, config, &pending.nonce, now_secs())?;
    let mut entitlements = strings(&claims["eduperson_entitlement"]);
    let mut display = claims["name"]
        .as_str()
        .or(claims["email"].as_str())
        .unwrap_or_default()
        .to_string();
    if let (Some(userinfo), Some(access)) =
        (&discovery.userinfo_endpoint, body["access_token"].as_str())
    {
        let r = http
            .get(userinfo)
            .bearer_auth(access)
            .send()
            .await
            .map_err(|e| {
                format!("the identity provider's userinfo endpoint does not answer: {e}")
            })?;
        if r.status().is_success() {
            let info: Value = r.json().await.unwrap_or(Value::Null);
            if info["sub"].as_str() != claims["sub"].as_str() {
                return Err(
                    "the identity provider's userinfo names another subject than the ID token"
                        .into(),
                );
            }
            entitlements.extend(strings(&info["eduperson_entitlement"]));
            if display.is_empty() {
                display = info["name"]
                    .as_str()
                    .or(info["email"].as_str())
                    .unwrap_or_default()
                    .to_string();
            }
        }
    }
    entitlements.sort();
    entitlements.dedup();
    Ok((
        Claims {
            sub: claims["sub"].as_str().unwrap_or_default().to_string(),
            display,
            entitlements,
        },
        pending.return_to,
    ))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// The payload of a JWT (not its signature: see the module's doc).
pub fn jwt_claims(jwt: &str) -> Result<Value, String> {
    let payload = jwt.split('.').nth(1).ok_or("the ID token is not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the ID token's payload is not base64url")?;
    serde_json::from_slice(&bytes).map_err(|_| "the ID token's payload is not JSON".to_string())
}

/// Checks an ID token's claims (OIDC Core 3.1.3.7): issuer, audience, expiry, nonce.
pub fn check_claims(
    claims: &Value,
    discovery: &Discovery,
    config: &OidcConfig,
    nonce: &str,
    now: i64,
) -> Result<(), String> {
    if claims["iss"].as_str().map(|s| s.trim_end_matches('/'))
        != Some(discovery.issuer.trim_end_matches('/'))
    {
        return Err("the ID token was issued by another issuer".into());
    }
    let aud_ok = match &claims["aud"] {
        Value::String(a) => *a == config.client_id,
        Value::Array(a) => a.iter().any(|a| a.as_str() == Some(&config.client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err("the ID token is for another client".into());
    }
    if claims["exp"].as_i64().is_none_or(|exp| exp < now) {
        return Err("the ID token has expired".into());
    }
    if claims["nonce"].as_str() != Some(nonce) {
        return Err("the ID token's nonce is not this login's".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pkce_challenge_is_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn vos_come_from_egi_entitlements() {
        assert_eq!(
            entitlement_vo("urn:mace:egi.eu:group:vo.imagine-ai.eu:role=member#aai.egi.eu")
                .as_deref(),
            Some("vo.imagine-ai.eu")
        );
        assert_eq!(
            entitlement_vo("urn:mace:egi.eu:group:vo.ai4eosc.eu:admins:role=owner#aai.egi.eu")
                .as_deref(),
            Some("vo.ai4eosc.eu")
        );
        assert_eq!(entitlement_vo("urn:geant:other"), None);
    }

    #[test]
    fn users_outside_the_allowed_vos_are_refused_with_what_to_do() {
        let ent = vec!["urn:mace:egi.eu:group:vo.other.eu:role=member#aai.egi.eu".to_string()];
        let e = oidc_user(
            "abc@egi.eu",
            "Alice",
            &ent,
            &["vo.imagine-ai.eu".into()],
            NamespaceMode::User,
            "kelp-",
        )
        .unwrap_err();
        assert!(e.contains("vo.imagine-ai.eu") && e.contains("enrol"), "{e}");
    }

    #[test]
    fn a_user_gets_groups_of_their_allowed_vos_and_a_namespace() {
        let ent = vec![
            "urn:mace:egi.eu:group:vo.imagine-ai.eu:role=member#aai.egi.eu".to_string(),
            "urn:mace:egi.eu:group:vo.other.eu:role=member#aai.egi.eu".to_string(),
        ];
        let u = oidc_user(
            "0123abcd@egi.eu",
            "Alice",
            &ent,
            &["vo.imagine-ai.eu".into()],
            NamespaceMode::User,
            "kelp-",
        )
        .unwrap();
        assert_eq!(u.name, "oidc:0123abcd@egi.eu");
        assert_eq!(u.vos, vec!["vo.imagine-ai.eu"]);
        assert_eq!(
            u.groups,
            vec![
                "oidc:vo:vo.imagine-ai.eu",
                "oidc:urn:mace:egi.eu:group:vo.imagine-ai.eu:role=member#aai.egi.eu"
            ]
        );
        assert!(
            u.namespace.starts_with("kelp-u-0123abcd-egi-eu-"),
            "{}",
            u.namespace
        );
        let vo = oidc_user("x", "", &ent, &[], NamespaceMode::Vo, "kelp-").unwrap();
        assert_eq!(vo.namespace, "kelp-vo-imagine-ai-eu");
    }

    #[test]
    fn user_namespaces_are_dns_labels_and_distinct() {
        let long = "a".repeat(200);
        let ns = user_namespace("kelp-", &long);
        assert!(ns.len() <= 63, "{ns}");
        assert_ne!(
            user_namespace("kelp-", "A@x"),
            user_namespace("kelp-", "a@x")
        );
        assert!(user_namespace("kelp-", "@@@").starts_with("kelp-u-"));
    }

    #[test]
    fn claims_are_checked() {
        let d = Discovery {
            issuer: "http://127.0.0.1:1".into(),
            authorization_endpoint: String::new(),
            token_endpoint: String::new(),
            userinfo_endpoint: None,
        };
        let c = OidcConfig {
            issuer: d.issuer.clone(),
            client_id: "kelp".into(),
            client_secret: None,
            scopes: vec![],
            allowed_vos: vec![],
        };
        let good = json!({"iss": "http://127.0.0.1:1", "aud": "kelp", "exp": 100, "nonce": "n"});
        assert_eq!(check_claims(&good, &d, &c, "n", 50), Ok(()));
        assert!(
            check_claims(&good, &d, &c, "other", 50)
                .unwrap_err()
                .contains("nonce")
        );
        assert!(
            check_claims(&good, &d, &c, "n", 200)
                .unwrap_err()
                .contains("expired")
        );
        let mut other = good.clone();
        other["aud"] = json!(["someone"]);
        assert!(
            check_claims(&other, &d, &c, "n", 50)
                .unwrap_err()
                .contains("another client")
        );
        other = good.clone();
        other["iss"] = json!("http://evil");
        assert!(
            check_claims(&other, &d, &c, "n", 50)
                .unwrap_err()
                .contains("issuer")
        );
    }

    #[test]
    fn csrf_and_return_paths() {
        let s = Session {
            user: User {
                name: "u".into(),
                display: "u".into(),
                groups: vec![],
                vos: vec![],
                namespace: "n".into(),
                impersonate: false,
            },
            csrf: "abc".into(),
            expires: Instant::now(),
        };
        assert!(csrf_ok(&s, Some("abc")));
        assert!(!csrf_ok(&s, Some("abd")));
        assert!(!csrf_ok(&s, None));
        assert_eq!(safe_return("//evil.example/x"), "/");
        assert_eq!(safe_return("https://evil.example/"), "/");
        assert_eq!(safe_return("/configure?a=b"), "/configure?a=b");
        assert_eq!(safe_return("/\t/evil.example"), "/");
        assert_eq!(safe_return("/\n/evil.example"), "/");
    }
}
