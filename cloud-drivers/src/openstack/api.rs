//! One authenticated OpenStack session: requests by service with kelp's error mapping,
//! a single token refresh on 401, and a count of every call by service and verb.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osauth::services::ServiceType;
use osauth::{ErrorKind, Session};
use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::driver::CloudError;

/// The Nova API microversion kelp speaks: server tags at create (2.52), flavor extra
/// specs in flavor lists (2.61), flavor details in servers (2.47). OpenStack Stein and
/// later.
pub const NOVA_MICROVERSION: &str = "2.67";

/// Calls made, by `service METHOD /path` (IDs written as `{id}`).
#[derive(Debug, Default)]
pub struct ApiCalls(Mutex<BTreeMap<String, u64>>);

impl ApiCalls {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn add(&self, key: String) {
        *self.0.lock().unwrap().entry(key).or_default() += 1;
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }

    /// All calls counted.
    pub fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }

    pub fn reset(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// A request: the service, method, path below the service's versioned root, query and
/// body; `label` is the path with IDs replaced, for the call count.
pub struct Call<'a> {
    pub method: Method,
    pub path: Vec<String>,
    pub label: &'a str,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, path: &[&str], label: &'a str) -> Self {
        Self {
            method,
            path: path.iter().map(|s| s.to_string()).collect(),
            label,
            query: Vec::new(),
            body: None,
        }
    }

    pub fn get(path: &[&str], label: &'a str) -> Self {
        Self::new(Method::GET, path, label)
    }

    pub fn query(mut self, k: &str, v: impl Into<String>) -> Self {
        self.query.push((k.to_string(), v.into()));
        self
    }

    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

pub struct Api {
    pub session: Session,
    pub calls: Arc<ApiCalls>,
    pub timeout: Duration,
    /// Keystone, when it judges the credentials itself (for messages).
    pub auth_url: Option<String>,
}

impl Api {
    /// Sends `call` to `service`; a 401 refreshes the token once and resends.
    pub async fn send<S>(&self, service: S, call: &Call<'_>) -> Result<Response, CloudError>
    where
        S: ServiceType + Send + Sync + Clone + 'static,
    {
        let what = format!("{} {} {}", service.catalog_type(), call.method, call.label);
        for attempt in 0..2 {
            self.calls.add(what.clone());
            let mut rb = self
                .session
                .request(service.clone(), call.method.clone(), call.path.clone())
                .timeout(self.timeout);
            if !call.query.is_empty() {
                rb = rb.query(&call.query);
            }
            if let Some(b) = &call.body {
                rb = rb.json(b);
            }
            if service.catalog_type() == "compute" {
                rb = rb
                    .header("X-OpenStack-Nova-API-Version", NOVA_MICROVERSION)
                    .header(
                        "OpenStack-API-Version",
                        format!("compute {NOVA_MICROVERSION}"),
                    );
            }
            let resp = rb
                .send_unchecked()
                .await
                .map_err(|e| from_osauth(&e, &what, self.auth_url.as_deref()))?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                // A token revoked or expired early: get a new one, once.
                self.session
                    .auth_type()
                    .refresh(self.session.client().inner())
                    .await
                    .map_err(|e| from_osauth(&e, &what, self.auth_url.as_deref()))?;
                continue;
            }
            return check(resp, &what).await;
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Sends `call` and decodes the JSON answer.
    pub async fn json<S, T>(&self, service: S, call: &Call<'_>) -> Result<T, CloudError>
    where
        S: ServiceType + Send + Sync + Clone + 'static,
        T: DeserializeOwned,
    {
        let what = format!("{} {} {}", service.catalog_type(), call.method, call.label);
        let resp = self.send(service, call).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CloudError::Transient(format!("{what}: reading the answer: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            CloudError::Transient(format!(
                "{what}: unexpected answer ({e}): {}",
                snippet(&String::from_utf8_lossy(&bytes))
            ))
        })
    }

    /// Sends `call`; NotFound is success (for deletes).
    pub async fn send_ignore_missing<S>(
        &self,
        service: S,
        call: &Call<'_>,
    ) -> Result<(), CloudError>
    where
        S: ServiceType + Send + Sync + Clone + 'static,
    {
        match self.send(service, call).await {
            Ok(_) | Err(CloudError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

async fn check(resp: Response, what: &str) -> Result<Response, CloudError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp.text().await.unwrap_or_default();
    Err(classify(
        status.as_u16(),
        &message_of(&text),
        retry_after,
        what,
    ))
}

/// The human part of an OpenStack error body: Nova's `{"badRequest": {"message": ..}}`,
/// Neutron's `{"NeutronError": {"message": ..}}`, Keystone's `{"error": {"message": ..}}`,
/// or the text itself.
pub fn message_of(text: &str) -> String {
    fn find(v: &Value) -> Option<String> {
        match v {
            Value::Object(m) => {
                for k in ["message", "faultstring", "title", "error_description"] {
                    if let Some(Value::String(s)) = m.get(k) {
                        return Some(s.clone());
                    }
                }
                m.values().find_map(find)
            }
            _ => None,
        }
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => find(&v).unwrap_or_else(|| snippet(text)),
        Err(_) => snippet(text),
    }
}

fn snippet(text: &str) -> String {
    let t = text.trim().replace('\n', " ");
    if t.len() > 300 {
        let mut end = 300;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &t[..end])
    } else {
        t
    }
}

/// An OpenStack error answer as a typed error.
pub fn classify(
    status: u16,
    message: &str,
    retry_after: Option<Duration>,
    what: &str,
) -> CloudError {
    let lower = message.to_ascii_lowercase();
    let quota = lower.contains("quota")
        || lower.contains("limit exceeded")
        || lower.contains("no more ip addresses");
    let msg = format!("{what}: {message}");
    match status {
        400 if lower.contains("no valid host") => CloudError::InsufficientCapacity {
            instance_type: String::new(),
            message: msg,
        },
        400 | 422 if quota => CloudError::QuotaExceeded(msg),
        400 | 422 => CloudError::Invalid(msg),
        401 => CloudError::Unauthorized(msg),
        403 | 409 | 413 if quota => CloudError::QuotaExceeded(msg),
        403 => CloudError::Unauthorized(format!("{msg} (the credentials lack a permission)")),
        404 => CloudError::NotFound(msg),
        406 => CloudError::Invalid(format!(
            "{msg} (the cloud does not speak compute API microversion {NOVA_MICROVERSION}: kelp needs OpenStack Stein or later)"
        )),
        413 | 429 => CloudError::Throttled {
            message: msg,
            retry_after,
        },
        _ => CloudError::Transient(format!("{msg} (HTTP {status})")),
    }
}

/// An error of the session layer (authentication, catalogue, transport) as a typed error.
/// `auth_url` names Keystone in the message when it is Keystone that judged the
/// credentials (not for federated logins, whose messages say who refused).
pub fn from_osauth(e: &osauth::Error, what: &str, auth_url: Option<&str>) -> CloudError {
    let msg = format!("{what}: {e}");
    match e.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::AccessDenied => match auth_url {
            Some(url) => CloudError::Unauthorized(format!(
                "{msg} (Keystone at {url} refused the credentials)"
            )),
            None => CloudError::Unauthorized(msg),
        },
        ErrorKind::EndpointNotFound => CloudError::Invalid(format!(
            "{msg} (no such endpoint in the service catalogue: check the region)"
        )),
        ErrorKind::InvalidConfig | ErrorKind::InvalidInput => CloudError::Invalid(msg),
        _ => CloudError::Transient(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            message_of(
                r#"{"forbidden": {"message": "Quota exceeded for instances", "code": 403}}"#
            ),
            "Quota exceeded for instances"
        );
        assert_eq!(
            message_of(r#"{"NeutronError": {"type": "X", "message": "gone", "detail": ""}}"#),
            "gone"
        );
        assert_eq!(message_of("plain text\n"), "plain text");
    }

    #[test]
    fn classification() {
        let c = |s, m: &str| classify(s, m, None, "compute POST /servers").label();
        assert_eq!(
            c(403, "Quota exceeded for cores: Requested 8"),
            "QuotaExceeded"
        );
        assert_eq!(c(409, "Quota exceeded for instances"), "QuotaExceeded");
        assert_eq!(
            c(413, "Maximum number of ports exceeded; quota"),
            "QuotaExceeded"
        );
        assert_eq!(
            c(403, "Policy doesn't allow os_compute_api:servers:create"),
            "Unauthorized"
        );
        assert_eq!(c(400, "No valid host was found."), "InsufficientCapacity");
        assert_eq!(c(400, "Invalid flavorRef provided."), "Invalid");
        assert_eq!(
            c(401, "The request you have made requires authentication."),
            "Unauthorized"
        );
        assert_eq!(c(404, "Instance could not be found"), "NotFound");
        assert_eq!(c(429, "slow down"), "Throttled");
        assert_eq!(
            c(406, "Version 2.67 is not supported by the API"),
            "Invalid"
        );
        assert_eq!(
            c(409, "No more IP addresses available on network"),
            "QuotaExceeded"
        );
        assert_eq!(c(500, "boom"), "Transient");
        assert_eq!(c(503, ""), "Transient");
        assert_eq!(
            c(409, "Cannot 'delete' instance while it is in task_state"),
            "Transient"
        );
        assert!(
            classify(500, "boom", None, "compute GET /servers/detail")
                .to_string()
                .contains("compute GET /servers/detail: boom (HTTP 500)")
        );
    }
}
