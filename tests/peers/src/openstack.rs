//! The OpenStack peer as the tests see it: Keystone, Nova (fake virt driver) and
//! Placement for real, Glance and Neutron stand-ins, started by
//! `tests/peers/openstack/peer.sh start` (`.ci/run` does it) which writes the fixtures
//! to `$KELP_OS_STATE/peer.env`. The EGI Check-in the tests serve themselves is
//! [`Checkin`], from [`crate::oidc`].
//!
//! Tests sharing the peer take [`OsPeer::lock`] so project-wide counts (servers, ports,
//! floating IPs, security groups) are theirs alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

pub use crate::oidc::Checkin;

/// Serialises the tests of one process that use the peer.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The running peer's fixtures and an admin view of it.
#[derive(Clone, Debug)]
pub struct OsPeer {
    vars: BTreeMap<String, String>,
    http: reqwest::Client,
}

fn env_file() -> PathBuf {
    let state = std::env::var_os("KELP_OS_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/kelp-os-state"));
    state.join("peer.env")
}

impl OsPeer {
    /// The running peer, or None (with a note) when it is not running; panics instead
    /// when `KELP_REQUIRE_OPENSTACK` is set, so CI cannot skip these tests silently.
    pub async fn get() -> Option<OsPeer> {
        let missing = |why: String| {
            if std::env::var_os("KELP_REQUIRE_OPENSTACK").is_some() {
                panic!("the OpenStack peer is required (KELP_REQUIRE_OPENSTACK) but {why}");
            }
            eprintln!("note: skipping: {why}; start it with tests/peers/openstack/peer.sh start");
            None
        };
        let path = env_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => return missing(format!("{} cannot be read ({e})", path.display())),
        };
        let vars: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let peer = OsPeer { vars, http };
        match peer.http.get(peer.auth_url()).send().await {
            Ok(r) if r.status().is_success() || r.status().as_u16() == 300 => Some(peer),
            Ok(r) => missing(format!("Keystone answers HTTP {}", r.status())),
            Err(e) => missing(format!(
                "Keystone at {} does not answer ({e})",
                peer.auth_url()
            )),
        }
    }

    /// The running peer, used exclusively, with the project named by `project_var`
    /// (a peer.env key) emptied: what most tests start with.
    pub async fn claim(
        project_var: &str,
    ) -> Option<(OsPeer, tokio::sync::MutexGuard<'static, ()>, String)> {
        let peer = OsPeer::get().await?;
        let lock = peer.lock().await;
        let project = peer.var(project_var);
        peer.purge(&project).await;
        Some((peer, lock, project))
    }

    /// Exclusive use of the peer within this process.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'static, ()> {
        LOCK.lock().await
    }

    /// A fixture value from peer.env.
    pub fn var(&self, key: &str) -> String {
        self.vars
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("peer.env has no {key}"))
    }

    pub fn auth_url(&self) -> String {
        self.vars
            .get("OS_AUTH_URL")
            .cloned()
            .unwrap_or_else(|| "http://127.0.0.1:5001/v3".into())
    }

    /// The Nova port on 127.0.0.1 (for a fault proxy in front of it).
    pub fn nova_port(&self) -> u16 {
        reqwest::Url::parse(&self.nova_url())
            .ok()
            .and_then(|u| u.port())
            .unwrap_or(8774)
    }

    /// A token of `admin`, scoped to the admin project.
    pub async fn admin_token(&self) -> String {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"name": "Default"},
                "password": self.vars.get("OS_ADMIN_PASSWORD").cloned().unwrap_or_else(|| "adminpw".into())}}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}});
        let r = self
            .http
            .post(format!("{}/auth/tokens", self.auth_url()))
            .json(&body)
            .send()
            .await
            .expect("Keystone answers");
        assert!(r.status().is_success(), "admin login: {}", r.status());
        r.headers()["x-subject-token"].to_str().unwrap().to_string()
    }

    async fn admin_get(&self, url: String) -> Value {
        let token = self.admin_token().await;
        let r = self
            .http
            .get(&url)
            .header("X-Auth-Token", token)
            .header("X-OpenStack-Nova-API-Version", "2.67")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Every server of `project` (not deleted), as Nova shows them to the admin.
    pub async fn servers(&self, project: &str) -> Vec<Value> {
        let v = self
            .admin_get(format!(
                "{}/servers/detail?all_tenants=1&project_id={project}",
                self.nova_url()
            ))
            .await;
        v["servers"].as_array().cloned().unwrap_or_default()
    }

    /// The servers of `project` that are not on their way out. Nova's compute service
    /// saves a deleted server as `DELETED` before it destroys the row, so a listing
    /// can show one for a moment after it is gone for every client: those are waited
    /// for (up to 30 s), and only what is still there, or not `DELETED`, is returned.
    pub async fn servers_left(&self, project: &str) -> Vec<Value> {
        let mut left = self.servers(project).await;
        for _ in 0..60 {
            if left.is_empty() || left.iter().any(|s| s["status"] != "DELETED") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            left = self.servers(project).await;
        }
        left
    }

    /// Every object of a Neutron collection (`ports`, `floatingips`, `security-groups`)
    /// of `project`.
    pub async fn neutron(&self, collection: &str, project: &str) -> Vec<Value> {
        let v = self
            .admin_get(format!(
                "{}/v2.0/{collection}?project_id={project}",
                self.neutron_url()
            ))
            .await;
        let key = collection.replace('-', "_");
        v[&key].as_array().cloned().unwrap_or_default()
    }

    /// Security groups of `project` other than `default`.
    pub async fn extra_groups(&self, project: &str) -> Vec<Value> {
        self.neutron("security-groups", project)
            .await
            .into_iter()
            .filter(|g| g["name"] != "default")
            .collect()
    }

    pub fn nova_url(&self) -> String {
        self.vars
            .get("NOVA_URL")
            .cloned()
            .unwrap_or_else(|| "http://127.0.0.1:8774/v2.1".into())
    }

    pub fn neutron_url(&self) -> String {
        self.vars
            .get("NEUTRON_URL")
            .cloned()
            .unwrap_or_else(|| "http://127.0.0.1:9696".into())
    }

    /// Deletes every server, floating IP and extra security group of `project` and
    /// waits until the servers are gone: a clean slate for the next test.
    pub async fn purge(&self, project: &str) {
        let token = self.admin_token().await;
        for s in self.servers(project).await {
            let _ = self
                .http
                .delete(format!(
                    "{}/servers/{}",
                    self.nova_url(),
                    s["id"].as_str().unwrap()
                ))
                .header("X-Auth-Token", &token)
                .send()
                .await;
        }
        for _ in 0..240 {
            if self.servers(project).await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for f in self.neutron("floatingips", project).await {
            let _ = self
                .http
                .delete(format!(
                    "{}/v2.0/floatingips/{}",
                    self.neutron_url(),
                    f["id"].as_str().unwrap()
                ))
                .header("X-Auth-Token", &token)
                .send()
                .await;
        }
        for g in self.extra_groups(project).await {
            let _ = self
                .http
                .delete(format!(
                    "{}/v2.0/security-groups/{}",
                    self.neutron_url(),
                    g["id"].as_str().unwrap()
                ))
                .header("X-Auth-Token", &token)
                .send()
                .await;
        }
    }
}
