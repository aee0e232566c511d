//! EGI Check-in to a project-scoped Keystone token at an EGI FedCloud site.
//!
//! 1. Check-in: the refresh token (and OIDC client) buys an access token at the token
//!    endpoint (`grant_type=refresh_token`).
//! 2. Keystone federation: the access token, as a bearer token, buys an unscoped token
//!    at `/v3/OS-FEDERATION/identity_providers/<idp>/protocols/<protocol>/auth`.
//! 3. `GET /v3/auth/projects` lists the projects the account may use; the VO's project
//!    (from the site data, else by name) is chosen.
//! 4. A token-method login scoped to that project gives the token and catalogue the
//!    OpenStack driver uses, renewed before the unscoped token expires.
//!
//! A refresh token Check-in refuses (expired, revoked) is remembered: later calls fail
//! at once with the same message instead of asking Check-in again, until the Secret
//! changes and a new driver is built.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use osauth::common::IdOrName;
use osauth::{AuthType, EndpointFilters, ErrorKind};
use reqwest::{Client, RequestBuilder, Url};
use serde::Deserialize;
use tokio::sync::RwLock;

use crate::openstack::api::message_of;

/// EGI Check-in's production token endpoint.
pub const CHECKIN_TOKEN_URL: &str =
    "https://aai.egi.eu/auth/realms/egi/protocol/openid-connect/token";
/// A scoped login is renewed when its unscoped token has less than this left.
const RENEW_BEFORE_SECS: i64 = 15 * 60;

/// The OIDC client and refresh token of an EGI Check-in account.
#[derive(Clone)]
pub struct CheckinCredentials {
    pub refresh_token: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// The token endpoint; [`CHECKIN_TOKEN_URL`] by default.
    pub token_url: String,
}

impl fmt::Debug for CheckinCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckinCredentials")
            .field("client_id", &self.client_id)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

/// Where and as whom to log in.
#[derive(Clone, Debug)]
pub struct FederatedLogin {
    pub checkin: CheckinCredentials,
    /// Keystone v3 URL of the site.
    pub auth_url: String,
    pub identity_provider: String,
    pub protocol: String,
    pub vo: String,
    /// The VO's project at the site, when the site data names it.
    pub project_id: Option<String>,
    /// The site, for messages.
    pub site: String,
}

struct Scoped {
    token: Arc<osauth::identity::Token>,
    expires_at: DateTime<Utc>,
}

/// An osauth authentication type that logs in through EGI Check-in.
pub struct EgiAuth {
    login: FederatedLogin,
    state: RwLock<Option<Scoped>>,
    refused: Mutex<Option<String>>,
    checkin_calls: AtomicU64,
    logins: AtomicU64,
}

impl fmt::Debug for EgiAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgiAuth")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

fn fail(kind: ErrorKind, msg: impl Into<String>) -> osauth::Error {
    osauth::Error::new(kind, msg.into())
}

fn transport(what: &str, e: reqwest::Error) -> osauth::Error {
    fail(ErrorKind::OperationFailed, format!("{what}: {e}"))
}

impl EgiAuth {
    pub fn new(login: FederatedLogin) -> Result<Self, osauth::Error> {
        for (what, url) in [
            ("Check-in token URL", &login.checkin.token_url),
            ("authUrl", &login.auth_url),
        ] {
            Url::parse(url)
                .map_err(|e| fail(ErrorKind::InvalidConfig, format!("{what} {url:?}: {e}")))?;
        }
        Ok(Self {
            login,
            state: RwLock::new(None),
            refused: Mutex::new(None),
            checkin_calls: AtomicU64::new(0),
            logins: AtomicU64::new(0),
        })
    }

    /// Requests sent to the Check-in token endpoint.
    pub fn checkin_calls(&self) -> u64 {
        self.checkin_calls.load(Ordering::Relaxed)
    }

    /// Federated logins (unscoped tokens obtained).
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    fn v3(&self, path: &str) -> String {
        format!("{}/{path}", self.login.auth_url.trim_end_matches('/'))
    }

    async fn access_token(&self, client: &Client) -> Result<String, osauth::Error> {
        if let Some(msg) = self.refused.lock().unwrap().clone() {
            return Err(fail(ErrorKind::AuthenticationFailed, msg));
        }
        #[derive(Deserialize)]
        struct Answer {
            access_token: String,
        }
        let c = &self.login.checkin;
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", c.refresh_token.as_str()),
            ("client_id", c.client_id.as_str()),
        ];
        if let Some(s) = &c.client_secret {
            form.push(("client_secret", s.as_str()));
        }
        self.checkin_calls.fetch_add(1, Ordering::Relaxed);
        let what = format!("EGI Check-in token endpoint {}", c.token_url);
        let resp = client
            .post(&c.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| transport(&what, e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| transport(&what, e))?;
        if status.is_success() {
            return serde_json::from_str::<Answer>(&body)
                .map(|a| a.access_token)
                .map_err(|e| fail(ErrorKind::InvalidResponse, format!("{what}: {e}")));
        }
        #[derive(Deserialize, Default)]
        struct OidcError {
            #[serde(default)]
            error: String,
            #[serde(default)]
            error_description: String,
        }
        let err: OidcError = serde_json::from_str(&body).unwrap_or_default();
        if status.is_client_error() {
            let msg = format!(
                "EGI Check-in refused the refresh token of client {:?} ({} {}: {}): it expired or was revoked; \
                 put a new refreshToken in the Secret",
                c.client_id,
                status.as_u16(),
                if err.error.is_empty() {
                    "error"
                } else {
                    &err.error
                },
                if err.error_description.is_empty() {
                    message_of(&body)
                } else {
                    err.error_description.clone()
                }
            );
            *self.refused.lock().unwrap() = Some(msg.clone());
            return Err(fail(ErrorKind::AuthenticationFailed, msg));
        }
        Err(fail(
            ErrorKind::OperationFailed,
            format!("{what}: HTTP {}: {}", status.as_u16(), message_of(&body)),
        ))
    }

    /// Check-in, federation, project choice and the scoped login.
    async fn log_in(&self, client: &Client) -> Result<Scoped, osauth::Error> {
        let l = &self.login;
        let access = self.access_token(client).await?;
        let url = self.v3(&format!(
            "OS-FEDERATION/identity_providers/{}/protocols/{}/auth",
            l.identity_provider, l.protocol
        ));
        let what = format!("site {} Keystone {}", l.site, l.auth_url);
        let resp = client
            .post(&url)
            .bearer_auth(&access)
            .send()
            .await
            .map_err(|e| transport(&what, e))?;
        let status = resp.status();
        let unscoped = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().await.map_err(|e| transport(&what, e))?;
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Err(fail(
                ErrorKind::AuthenticationFailed,
                format!(
                    "{what} refused the EGI Check-in account (HTTP {}: {}): is the account a member of VO {}? \
                     (identity provider {:?}, protocol {:?})",
                    status.as_u16(),
                    message_of(&body),
                    l.vo,
                    l.identity_provider,
                    l.protocol
                ),
            ));
        }
        if status.as_u16() == 404 {
            return Err(fail(
                ErrorKind::InvalidConfig,
                format!(
                    "{what} has no identity provider {:?} with protocol {:?} (HTTP 404): set identityProvider/protocol",
                    l.identity_provider, l.protocol
                ),
            ));
        }
        if !status.is_success() {
            return Err(fail(
                ErrorKind::OperationFailed,
                format!(
                    "{what}: federated login: HTTP {}: {}",
                    status.as_u16(),
                    message_of(&body)
                ),
            ));
        }
        let unscoped = unscoped.ok_or_else(|| {
            fail(
                ErrorKind::InvalidResponse,
                format!("{what}: no X-Subject-Token in the federated login answer"),
            )
        })?;
        #[derive(Deserialize)]
        struct TokenRoot {
            token: TokenBody,
        }
        #[derive(Deserialize)]
        struct TokenBody {
            expires_at: DateTime<Utc>,
        }
        let expires_at = serde_json::from_str::<TokenRoot>(&body)
            .map(|t| t.token.expires_at)
            .map_err(|e| {
                fail(
                    ErrorKind::InvalidResponse,
                    format!("{what}: token body: {e}"),
                )
            })?;
        self.logins.fetch_add(1, Ordering::Relaxed);

        #[derive(Deserialize)]
        struct Projects {
            projects: Vec<Project>,
        }
        #[derive(Deserialize)]
        struct Project {
            id: String,
            name: String,
            #[serde(default = "yes")]
            enabled: bool,
        }
        fn yes() -> bool {
            true
        }
        let resp = client
            .get(self.v3("auth/projects"))
            .header("X-Auth-Token", &unscoped)
            .send()
            .await
            .map_err(|e| transport(&what, e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| transport(&what, e))?;
        if !status.is_success() {
            return Err(fail(
                ErrorKind::OperationFailed,
                format!(
                    "{what}: GET /v3/auth/projects: HTTP {}: {}",
                    status.as_u16(),
                    message_of(&body)
                ),
            ));
        }
        let projects: Vec<Project> = serde_json::from_str::<Projects>(&body)
            .map_err(|e| fail(ErrorKind::InvalidResponse, format!("{what}: projects: {e}")))?
            .projects
            .into_iter()
            .filter(|p| p.enabled)
            .collect();
        let names = || {
            let n: Vec<String> = projects
                .iter()
                .map(|p| format!("{} ({})", p.name, p.id))
                .collect();
            if n.is_empty() {
                "none".to_string()
            } else {
                n.join(", ")
            }
        };
        let chosen = match &l.project_id {
            Some(id) => projects.iter().find(|p| &p.id == id).ok_or_else(|| {
                fail(
                    ErrorKind::AccessDenied,
                    format!(
                        "{what}: the account may not use project {id} of VO {} (its projects: {})",
                        l.vo,
                        names()
                    ),
                )
            })?,
            None => {
                let vo = l.vo.to_ascii_lowercase();
                let by_name: Vec<&Project> = projects
                    .iter()
                    .filter(|p| p.name.to_ascii_lowercase() == vo)
                    .chain(projects.iter().filter(|p| {
                        let n = p.name.to_ascii_lowercase();
                        n != vo && n.contains(&vo)
                    }))
                    .collect();
                match (by_name.first(), projects.len()) {
                    (Some(p), _) => p,
                    (None, 1) => &projects[0],
                    _ => {
                        return Err(fail(
                            ErrorKind::AccessDenied,
                            format!(
                                "{what}: no project of VO {} among the account's projects ({})",
                                l.vo,
                                names()
                            ),
                        ));
                    }
                }
            }
        };
        let token = osauth::identity::Token::new(&l.auth_url, unscoped)?
            .with_project_scope(IdOrName::from_id(chosen.id.clone()), None);
        token.refresh(client).await?;
        Ok(Scoped {
            token: Arc::new(token),
            expires_at,
        })
    }

    async fn scoped(
        &self,
        client: &Client,
        force: bool,
    ) -> Result<Arc<osauth::identity::Token>, osauth::Error> {
        let fresh = |s: &Option<Scoped>| {
            s.as_ref()
                .filter(|s| (s.expires_at - Utc::now()).num_seconds() > RENEW_BEFORE_SECS)
                .map(|s| s.token.clone())
        };
        if !force && let Some(t) = fresh(&*self.state.read().await) {
            return Ok(t);
        }
        let mut state = self.state.write().await;
        if !force && let Some(t) = fresh(&state) {
            return Ok(t);
        }
        let s = self.log_in(client).await?;
        let t = s.token.clone();
        *state = Some(s);
        Ok(t)
    }
}

#[async_trait]
impl AuthType for EgiAuth {
    async fn authenticate(
        &self,
        client: &Client,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, osauth::Error> {
        self.scoped(client, false)
            .await?
            .authenticate(client, request)
            .await
    }

    async fn get_endpoint(
        &self,
        client: &Client,
        service_type: &str,
        filters: &EndpointFilters,
    ) -> Result<Url, osauth::Error> {
        self.scoped(client, false)
            .await?
            .get_endpoint(client, service_type, filters)
            .await
    }

    async fn refresh(&self, client: &Client) -> Result<(), osauth::Error> {
        self.scoped(client, true).await.map(|_| ())
    }
}
