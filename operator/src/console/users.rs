//! Kubernetes clients that act as the logged-in user. An OIDC user's client carries
//! `Impersonate-User` and `Impersonate-Group`; the API server checks that the console may
//! impersonate, then authorizes the request as the user. Clients are kept per user and
//! group set, so that a page does not build a TLS client each time.

use std::collections::HashMap;
use std::sync::Mutex;

use super::auth::User;

/// The console's clients, per impersonated identity.
pub struct Clients {
    base: kube::Config,
    cache: Mutex<HashMap<(String, Vec<String>), kube::Client>>,
}

impl Clients {
    pub fn new(base: kube::Config) -> Self {
        Self {
            base,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The client that acts as `user`.
    pub fn of(&self, user: &User) -> Result<kube::Client, kube::Error> {
        let key = if user.impersonate {
            (user.name.clone(), user.groups.clone())
        } else {
            (String::new(), Vec::new())
        };
        if let Some(c) = self.cache.lock().expect("clients").get(&key) {
            return Ok(c.clone());
        }
        let mut config = self.base.clone();
        if user.impersonate {
            config.auth_info.impersonate = Some(user.name.clone());
            config.auth_info.impersonate_groups = Some(user.groups.clone());
        }
        let client = kube::Client::try_from(config)?;
        let mut cache = self.cache.lock().expect("clients");
        if cache.len() > 1000 {
            cache.clear();
        }
        cache.insert(key, client.clone());
        Ok(client)
    }
}
