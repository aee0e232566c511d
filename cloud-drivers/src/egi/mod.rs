//! EGI FedCloud: OpenStack sites behind EGI Check-in. `sites` is the catalogue of
//! sites, their Keystone endpoints and the project each Virtual Organisation (VO) gets;
//! `auth` turns a Check-in refresh token into a project-scoped Keystone token; the
//! machines themselves are the OpenStack driver's, with that token.

pub mod auth;
pub mod sites;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use auth::{CHECKIN_TOKEN_URL, CheckinCredentials, EgiAuth, FederatedLogin};
pub use sites::{SiteCatalog, SiteError, keystone_v3};

use crate::driver::CloudError;
use crate::openstack::{OpenStackAuth, OpenStackDriver, OpenStackSettings};

/// The driver's name, the label of its metrics.
pub const DRIVER_NAME: &str = "egi";

/// Site data published at `url` (site files, one or more YAML documents, or a list of
/// entries, as [`SiteCatalog::from_yaml`] reads them).
pub async fn fetch_sites(url: &str) -> Result<SiteCatalog, String> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("EGI site data at {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("EGI site data at {url}: HTTP {}", resp.status()));
    }
    let text = resp
        .text()
        .await
        .map_err(|e| format!("EGI site data at {url}: {e}"))?;
    SiteCatalog::from_yaml(&text).map_err(|e| format!("EGI site data at {url}: {e}"))
}
/// The Keystone federation protocol EGI sites use unless their site file says otherwise.
pub const DEFAULT_PROTOCOL: &str = "openid";

/// An EGI Cluster's cloud: the site and VO, the Check-in account, and the OpenStack
/// choices of the Cluster.
#[derive(Clone, Debug)]
pub struct EgiSettings {
    pub site: String,
    pub vo: String,
    pub checkin: CheckinCredentials,
    /// The site's Keystone URL, overriding the site catalogue.
    pub auth_url: Option<String>,
    pub identity_provider: String,
    pub protocol: String,
    pub network: Option<String>,
    pub floating_ip_pool: Option<String>,
    pub key_name: Option<String>,
    pub price_overrides: BTreeMap<String, f64>,
    /// Service type -> URL, overriding the site's catalogue.
    pub endpoint_overrides: BTreeMap<String, String>,
}

/// The OpenStack driver for an EGI site, logging in through Check-in, and its login
/// (for its counters). The site's endpoint and the VO's project come from `catalog`
/// unless `auth_url` is set; an unknown site or a VO the site does not support is an
/// Invalid error naming the field.
pub fn driver(
    s: &EgiSettings,
    catalog: &SiteCatalog,
) -> Result<(OpenStackDriver, Arc<EgiAuth>), CloudError> {
    let (endpoint, project_id, protocol, region) = match catalog.project_for(&s.site, &s.vo) {
        Ok((endpoint, project)) => {
            let site = catalog.site(&s.site);
            (
                endpoint.to_string(),
                Some(project.to_string()),
                site.and_then(|x| x.protocol.clone()),
                site.and_then(|x| x.region.clone()),
            )
        }
        Err(e) => match &s.auth_url {
            // An explicit endpoint: the project is found by the VO's name.
            Some(url) => (url.clone(), None, None, None),
            None => {
                let field = match e {
                    SiteError::UnknownSite { .. } => "site",
                    SiteError::VoNotSupported { .. } => "vo",
                };
                return Err(CloudError::Invalid(format!(
                    "{field}: {e} (or set authUrl to the site's Keystone)"
                )));
            }
        },
    };
    let auth_url = keystone_v3(s.auth_url.as_deref().unwrap_or(&endpoint));
    let protocol = match protocol {
        Some(p) if s.protocol == DEFAULT_PROTOCOL => p,
        _ => s.protocol.clone(),
    };
    let login = FederatedLogin {
        checkin: s.checkin.clone(),
        auth_url: auth_url.clone(),
        identity_provider: s.identity_provider.clone(),
        protocol,
        vo: s.vo.clone(),
        project_id,
        site: s.site.clone(),
    };
    let auth = Arc::new(EgiAuth::new(login).map_err(|e| CloudError::Invalid(e.to_string()))?);
    let settings = OpenStackSettings {
        name: DRIVER_NAME.into(),
        region,
        network: s.network.clone(),
        floating_ip_pool: s.floating_ip_pool.clone(),
        key_name: s.key_name.clone(),
        price_overrides: s.price_overrides.clone(),
        endpoint_overrides: s.endpoint_overrides.clone(),
        ..OpenStackSettings::new(auth_url, OpenStackAuth::Custom(auth.clone()))
    };
    Ok((OpenStackDriver::new(settings)?, auth))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `body` with `status` to every request on 127.0.0.1.
    async fn serve(status: &'static str, body: &'static str) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
            }
        });
        format!("http://127.0.0.1:{port}/sites.yaml")
    }

    #[tokio::test]
    async fn site_data_from_a_url() {
        let url = serve(
            "200 OK",
            "---\ngocdb: NEW-SITE\nendpoint: https://keystone.new.example.org:5000/v3/\nvos:\n- name: vo.imagine-ai.eu\n  auth:\n    project_id: abc123\n",
        )
        .await;
        let c = fetch_sites(&url).await.unwrap();
        assert_eq!(
            c.project_for("new-site", "vo.imagine-ai.eu").unwrap().1,
            "abc123"
        );
        let bad = serve("404 Not Found", "no").await;
        assert!(fetch_sites(&bad).await.unwrap_err().contains("HTTP 404"));
        let broken = serve("200 OK", "gocdb: [").await;
        assert!(
            fetch_sites(&broken)
                .await
                .unwrap_err()
                .contains("EGI site data at")
        );
    }
}
