//! The EGI FedCloud site catalogue: for each site (its GOCDB name), the Keystone
//! endpoint and, for each Virtual Organisation (VO) it supports, the OpenStack project
//! a member of that VO is scoped to.
//!
//! The entries have the form of the site files of EGI's fedcloud-catchall-operations
//! repository (`sites/*.yaml`):
//!
//! ```yaml
//! gocdb: IFCA-LCG2
//! endpoint: https://api.cloud.ifca.es:5000/v3/
//! # optional: region, protocol
//! vos:
//!   - name: vo.imagine-ai.eu
//!     auth:
//!       project_id: 2f9d982c4a654c38aad616f5a1f7146d
//! ```
//!
//! kelp ships a copy of those files (`data/egi-sites.yaml`, [`SiteCatalog::builtin`]);
//! more entries (a fresh copy of the upstream files, a site of your own) are read with
//! [`SiteCatalog::from_yaml`] and laid over it with [`SiteCatalog::merge`].
//!
//! Reading is lenient where the upstream files vary: unknown keys (`images`, ...) are
//! ignored, `vos` may also be a map from VO name to `{auth: {project_id}}` (the older
//! upstream layout), and a VO without a `project_id` (a site that uses application
//! credentials) is skipped, since it cannot be resolved to a project.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

/// The shipped catalogue, a copy of the upstream site files.
const BUILTIN_YAML: &str = include_str!("../../data/egi-sites.yaml");

/// One EGI FedCloud site: an OpenStack cloud behind EGI Check-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSite")]
pub struct Site {
    /// The site's name in GOCDB (`IFCA-LCG2`).
    pub gocdb: String,
    /// The Keystone endpoint as the site file gives it (with or without `/v3`, a
    /// trailing slash or not); [`keystone_v3`] gives the form ending in `/v3`.
    pub endpoint: String,
    /// The OpenStack region, when the site names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The federation protocol of the Keystone identity provider (`openid`, `oidc`),
    /// when it is not the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The VOs the site supports, in the file's order.
    pub vos: Vec<SiteVo>,
}

/// A VO at a site and the project its members are scoped to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteVo {
    /// The VO name (`vo.imagine-ai.eu`).
    pub name: String,
    pub auth: SiteVoAuth,
}

/// How a VO member authenticates at the site: the project to scope the token to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteVoAuth {
    /// The OpenStack project ID.
    pub project_id: String,
}

impl Site {
    /// The entry of `vo` (compared ignoring ASCII case), if the site supports it.
    pub fn vo(&self, vo: &str) -> Option<&SiteVo> {
        let vo = vo.trim();
        self.vos.iter().find(|v| v.name.eq_ignore_ascii_case(vo))
    }
}

/// A site entry as written in a file, before checks and normalisation.
#[derive(Deserialize)]
struct RawSite {
    gocdb: String,
    endpoint: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    vos: Option<Value>,
}

#[derive(Deserialize)]
struct RawVo {
    name: String,
    #[serde(default)]
    auth: Option<RawAuth>,
}

#[derive(Deserialize)]
struct RawVoBody {
    #[serde(default)]
    auth: Option<RawAuth>,
}

#[derive(Deserialize)]
struct RawAuth {
    #[serde(default)]
    project_id: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A VO entry with a project, or `None` (no project ID: skipped).
fn vo_entry(name: String, auth: Option<RawAuth>, at: &str) -> Result<Option<SiteVo>, String> {
    let name = name.trim().to_string();
    if name.is_empty() {
        return Err(format!("{at}: the VO name is empty"));
    }
    Ok(
        non_empty(auth.and_then(|a| a.project_id)).map(|project_id| SiteVo {
            name,
            auth: SiteVoAuth { project_id },
        }),
    )
}

impl TryFrom<RawSite> for Site {
    type Error = String;

    fn try_from(raw: RawSite) -> Result<Site, String> {
        let gocdb = raw.gocdb.trim().to_string();
        if gocdb.is_empty() {
            return Err("gocdb: the site name is empty".into());
        }
        let endpoint = raw.endpoint.trim().to_string();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(format!(
                "endpoint: {endpoint:?} is not an http(s) URL of a Keystone endpoint"
            ));
        }
        let mut entries = Vec::new();
        match raw.vos {
            None | Some(Value::Null) => {}
            Some(Value::Sequence(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    let at = format!("vos[{i}]");
                    let vo: RawVo =
                        serde_yaml_ng::from_value(item).map_err(|e| format!("{at}: {e}"))?;
                    entries.push(vo_entry(vo.name, vo.auth, &at)?);
                }
            }
            Some(Value::Mapping(map)) => {
                for (key, body) in map {
                    let Value::String(name) = key else {
                        return Err(format!("vos: the VO name {key:?} is not a string"));
                    };
                    let at = format!("vos.{name}");
                    let body: Option<RawVoBody> =
                        serde_yaml_ng::from_value(body).map_err(|e| format!("{at}: {e}"))?;
                    entries.push(vo_entry(name, body.and_then(|b| b.auth), &at)?);
                }
            }
            Some(_) => {
                return Err(
                    "vos: expected a list of {name, auth: {project_id}} entries".to_string()
                );
            }
        }
        // A VO listed twice: the later entry wins, in the earlier one's place.
        let mut vos: Vec<SiteVo> = Vec::new();
        for vo in entries.into_iter().flatten() {
            match vos
                .iter_mut()
                .find(|v| v.name.eq_ignore_ascii_case(&vo.name))
            {
                Some(existing) => *existing = vo,
                None => vos.push(vo),
            }
        }
        Ok(Site {
            gocdb,
            endpoint,
            region: non_empty(raw.region),
            protocol: non_empty(raw.protocol),
            vos,
        })
    }
}

/// Why a (site, VO) pair does not resolve to a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteError {
    /// No site of that name; `closest` holds up to five known names, closest first.
    UnknownSite { name: String, closest: Vec<String> },
    /// The site does not list the VO; `supported` holds the VOs it lists, sorted.
    VoNotSupported {
        site: String,
        vo: String,
        supported: Vec<String>,
    },
}

impl fmt::Display for SiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SiteError::UnknownSite { name, closest } if closest.is_empty() => {
                write!(
                    f,
                    "unknown EGI site {name:?}; the EGI site catalogue is empty"
                )
            }
            SiteError::UnknownSite { name, closest } => write!(
                f,
                "unknown EGI site {name:?}; closest known sites: {}",
                closest.join(", ")
            ),
            SiteError::VoNotSupported {
                site,
                vo,
                supported,
            } if supported.is_empty() => {
                write!(
                    f,
                    "EGI site {site} does not support VO {vo:?}; it lists no VO with a project"
                )
            }
            SiteError::VoNotSupported {
                site,
                vo,
                supported,
            } => write!(
                f,
                "EGI site {site} does not support VO {vo:?}; it supports: {}",
                supported.join(", ")
            ),
        }
    }
}

impl std::error::Error for SiteError {}

/// The EGI FedCloud sites kelp knows, one entry per GOCDB name (compared ignoring
/// case), iterated in name order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteCatalog {
    /// Keyed by the lowercased GOCDB name.
    sites: BTreeMap<String, Site>,
}

impl SiteCatalog {
    /// The catalogue shipped with kelp (`data/egi-sites.yaml`, a copy of the upstream
    /// site files), parsed on first use.
    pub fn builtin() -> &'static SiteCatalog {
        static BUILTIN: OnceLock<SiteCatalog> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            SiteCatalog::from_yaml(BUILTIN_YAML)
                .unwrap_or_else(|e| panic!("data/egi-sites.yaml does not parse: {e}"))
        })
    }

    /// Reads site entries: a YAML list of entries, a single entry, or a multi-document
    /// stream of either (site files concatenated with `---` between them, as a
    /// ConfigMap may hold them). Empty documents are skipped. A GOCDB name given twice:
    /// the later entry wins. Errors name the entry (1-based, across documents).
    pub fn from_yaml(text: &str) -> Result<SiteCatalog, String> {
        let mut catalog = SiteCatalog::default();
        let mut entry = 0usize;
        for (d, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let value = Value::deserialize(document).map_err(|e| match d {
                0 => e.to_string(),
                _ => format!("document {}: {e}", d + 1),
            })?;
            let items = match value {
                Value::Null => continue,
                Value::Sequence(items) => items,
                Value::Mapping(_) => vec![value],
                _ => {
                    return Err(format!(
                        "document {}: expected a site entry (gocdb, endpoint, vos) or a list of them",
                        d + 1
                    ));
                }
            };
            for item in items {
                entry += 1;
                let name = item
                    .get("gocdb")
                    .and_then(Value::as_str)
                    .map(|n| format!(" ({})", n.trim()))
                    .unwrap_or_default();
                let site: Site = serde_yaml_ng::from_value(item)
                    .map_err(|e| format!("site entry {entry}{name}: {e}"))?;
                catalog.insert(site);
            }
        }
        Ok(catalog)
    }

    /// Adds a site; an entry of the same GOCDB name (ignoring case) is replaced.
    /// Returns the replaced entry.
    pub fn insert(&mut self, site: Site) -> Option<Site> {
        self.sites.insert(site.gocdb.to_lowercase(), site)
    }

    /// Lays `other` over this catalogue: its entries replace same-named ones (GOCDB
    /// name, ignoring case), the others are added.
    pub fn merge(&mut self, other: SiteCatalog) {
        for (key, site) in other.sites {
            self.sites.insert(key, site);
        }
    }

    /// The sites, in name order (ignoring case).
    pub fn sites(&self) -> impl Iterator<Item = &Site> {
        self.sites.values()
    }

    pub fn len(&self) -> usize {
        self.sites.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// The site of that GOCDB name, ignoring case.
    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.get(&name.trim().to_lowercase())
    }

    /// Every site supporting `vo` (ignoring ASCII case) with its entry for it, in site
    /// name order.
    pub fn sites_for_vo(&self, vo: &str) -> Vec<(&Site, &SiteVo)> {
        self.sites()
            .filter_map(|site| site.vo(vo).map(|v| (site, v)))
            .collect()
    }

    /// Every VO name some site lists, sorted, each once.
    pub fn vos(&self) -> Vec<&str> {
        let names: BTreeSet<&str> = self
            .sites()
            .flat_map(|s| s.vos.iter().map(|v| v.name.as_str()))
            .collect();
        names.into_iter().collect()
    }

    /// The site's endpoint (as given) and the project ID of `vo` there.
    pub fn project_for(&self, site: &str, vo: &str) -> Result<(&str, &str), SiteError> {
        let Some(entry) = self.site(site) else {
            return Err(SiteError::UnknownSite {
                name: site.trim().to_string(),
                closest: closest(site, self.sites().map(|s| s.gocdb.as_str()), 5)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            });
        };
        match entry.vo(vo) {
            Some(v) => Ok((entry.endpoint.as_str(), v.auth.project_id.as_str())),
            None => {
                let mut supported: Vec<String> = entry.vos.iter().map(|v| v.name.clone()).collect();
                supported.sort();
                Err(SiteError::VoNotSupported {
                    site: entry.gocdb.clone(),
                    vo: vo.trim().to_string(),
                    supported,
                })
            }
        }
    }
}

/// The Keystone v3 URL of a site endpoint: the endpoint without trailing slashes,
/// with `/v3` appended unless it already ends so.
/// `https://api.cloud.ifca.es:5000/v3/` and `https://api.cloud.ifca.es:5000` both give
/// `https://api.cloud.ifca.es:5000/v3`.
pub fn keystone_v3(endpoint: &str) -> String {
    let base = endpoint.trim().trim_end_matches('/');
    if base.ends_with("/v3") {
        base.to_string()
    } else {
        format!("{base}/v3")
    }
}

/// Up to `n` of `candidates` closest to `query`, ignoring case: those containing it
/// (or contained in it) first, then by edit distance, then by name.
pub fn closest<'a>(
    query: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    n: usize,
) -> Vec<&'a str> {
    let q = query.trim().to_lowercase();
    let mut scored: Vec<(bool, usize, String, &'a str)> = candidates
        .into_iter()
        .map(|c| {
            let lc = c.to_lowercase();
            let related = !q.is_empty() && (lc.contains(&q) || q.contains(&lc));
            (!related, edit_distance(&q, &lc), lc, c)
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.3 == b.3);
    scored.into_iter().take(n).map(|s| s.3).collect()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const IFCA_FILE: &str = "\
---
gocdb: IFCA-LCG2
endpoint: https://api.cloud.ifca.es:5000/v3/
images:
  sync: true
vos:
  - name: vo.imagine-ai.eu
    auth:
      project_id: 2f9d982c4a654c38aad616f5a1f7146d
  - name: ops
    auth:
      project_id: a372c1e2fba040e58fd0cb524a3ccd34
";

    const EXAMPLE_FILE: &str = "\
---
gocdb: EXAMPLE-SITE
endpoint: https://keystone.example.org:5000
region: RegionTwo
protocol: openid
vos:
  - name: vo.imagine-ai.eu
    auth:
      project_id: 0123456789abcdef0123456789abcdef
";

    #[test]
    fn builtin_parses_and_every_entry_is_usable() {
        let catalog = SiteCatalog::builtin();
        assert!(catalog.len() >= 30, "{} sites", catalog.len());
        for site in catalog.sites() {
            assert!(
                site.endpoint.starts_with("https://"),
                "{}: {}",
                site.gocdb,
                site.endpoint
            );
            assert!(!site.vos.is_empty(), "{} lists no VO", site.gocdb);
            for vo in &site.vos {
                assert!(!vo.name.is_empty(), "{}", site.gocdb);
                let id = &vo.auth.project_id;
                assert!(
                    id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
                    "{} {}: project_id {id:?}",
                    site.gocdb,
                    vo.name
                );
            }
        }
        // Every entry of the file made it (no GOCDB name twice).
        assert_eq!(
            catalog.len(),
            BUILTIN_YAML
                .lines()
                .filter(|l| l.starts_with("- gocdb:"))
                .count()
        );
    }

    #[test]
    fn builtin_has_the_vos_kelp_is_used_with() {
        let catalog = SiteCatalog::builtin();
        let sites = |vo| -> Vec<&str> {
            catalog
                .sites_for_vo(vo)
                .into_iter()
                .map(|(s, _)| s.gocdb.as_str())
                .collect()
        };
        assert_eq!(
            sites("vo.imagine-ai.eu"),
            ["IFCA-LCG2", "NCG-INGRID-PT", "WALTON-CLOUD"]
        );
        assert_eq!(sites("vo.ai4eosc.eu"), ["IFCA-LCG2", "NCG-INGRID-PT"]);
        assert!(sites("vo.access.egi.eu").len() >= 15);
    }

    #[test]
    fn lookup_by_site_ignores_case() {
        let catalog = SiteCatalog::builtin();
        let site = catalog.site("ifca-lcg2").expect("IFCA-LCG2");
        assert_eq!(site.gocdb, "IFCA-LCG2");
        assert_eq!(catalog.site(" IFCA-LCG2 "), Some(site));
        assert_eq!(
            catalog.site("FEDCLOUD.SRCE.HR").unwrap().gocdb,
            "fedcloud.srce.hr"
        );
    }

    #[test]
    fn imagine_resolves_at_ifca() {
        let catalog = SiteCatalog::builtin();
        let (endpoint, project) = catalog
            .project_for("IFCA-LCG2", "vo.imagine-ai.eu")
            .unwrap();
        assert_eq!(endpoint, "https://api.cloud.ifca.es:5000/v3/");
        assert_eq!(project, "2f9d982c4a654c38aad616f5a1f7146d");
        assert_eq!(keystone_v3(endpoint), "https://api.cloud.ifca.es:5000/v3");
        assert_eq!(
            catalog
                .project_for("ncg-ingrid-pt", "VO.IMAGINE-AI.EU")
                .unwrap(),
            (
                "https://stratus.ncg.ingrid.pt:5000/v3",
                "009f77df459b4a6389910e0fb20ddcaf"
            )
        );
    }

    #[test]
    fn sites_for_vo_is_sorted_by_site_name() {
        let catalog = SiteCatalog::builtin();
        let names: Vec<String> = catalog
            .sites_for_vo("vo.access.egi.eu")
            .into_iter()
            .map(|(s, _)| s.gocdb.to_lowercase())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(catalog.sites_for_vo("vo.no-such-vo.eu").is_empty());
    }

    #[test]
    fn unknown_site_error_names_close_sites() {
        let err = SiteCatalog::builtin()
            .project_for("IFCA", "vo.imagine-ai.eu")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown EGI site \"IFCA\"; closest known sites: IFCA-LCG2, BIFI, SCAI, CENI, CESGA"
        );
        let err = SiteCatalog::default()
            .project_for("IFCA", "ops")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown EGI site \"IFCA\"; the EGI site catalogue is empty"
        );
    }

    #[test]
    fn unsupported_vo_error_lists_the_sites_vos() {
        let err = SiteCatalog::builtin()
            .project_for("walton-cloud", "vo.ai4eosc.eu")
            .unwrap_err();
        assert_eq!(
            err,
            SiteError::VoNotSupported {
                site: "WALTON-CLOUD".into(),
                vo: "vo.ai4eosc.eu".into(),
                supported: vec![
                    "ops".into(),
                    "vo.access.egi.eu".into(),
                    "vo.eurosea.marine.ie".into(),
                    "vo.imagine-ai.eu".into()
                ],
            }
        );
        assert_eq!(
            err.to_string(),
            "EGI site WALTON-CLOUD does not support VO \"vo.ai4eosc.eu\"; it supports: \
             ops, vo.access.egi.eu, vo.eurosea.marine.ie, vo.imagine-ai.eu"
        );
    }

    #[test]
    fn list_single_entry_and_multi_document_forms_parse() {
        let single = SiteCatalog::from_yaml(IFCA_FILE).unwrap();
        assert_eq!(single.len(), 1);
        let site = single.site("IFCA-LCG2").unwrap();
        assert_eq!(site.vos.len(), 2);
        assert_eq!(site.region, None);

        let stream = format!("{IFCA_FILE}{EXAMPLE_FILE}---\n");
        let multi = SiteCatalog::from_yaml(&stream).unwrap();
        assert_eq!(
            multi.sites().map(|s| s.gocdb.as_str()).collect::<Vec<_>>(),
            ["EXAMPLE-SITE", "IFCA-LCG2"]
        );
        let example = multi.site("example-site").unwrap();
        assert_eq!(example.region.as_deref(), Some("RegionTwo"));
        assert_eq!(example.protocol.as_deref(), Some("openid"));
        assert_eq!(
            keystone_v3(&example.endpoint),
            "https://keystone.example.org:5000/v3"
        );

        // The same entries as one list, e.g. the catalogue's own YAML.
        let sites: Vec<&Site> = multi.sites().collect();
        let list = serde_yaml_ng::to_string(&sites).unwrap();
        assert_eq!(SiteCatalog::from_yaml(&list).unwrap(), multi);
        // JSON is YAML too.
        let json = serde_json::to_string(&sites).unwrap();
        assert_eq!(SiteCatalog::from_yaml(&json).unwrap(), multi);

        assert!(SiteCatalog::from_yaml("").unwrap().is_empty());
        assert!(SiteCatalog::from_yaml("---\n---\n").unwrap().is_empty());
    }

    #[test]
    fn older_upstream_layouts_are_read() {
        // `vos` as a map (the older upstream layout), keys in another order, a VO
        // without a project ID (application credentials), unknown keys.
        let text = "\
endpoint: https://cloud.example.org:5000/v3/
gocdb: OLD-SITE
auth: v3applicationcredential
vos:
  fedcloud.egi.eu:
    auth:
      project_id: 7cfb9087632a4df5b738fbd0b795f2ad
  ops:
    auth:
      region: RegionOne
  dteam:
";
        let catalog = SiteCatalog::from_yaml(text).unwrap();
        let site = catalog.site("old-site").unwrap();
        assert_eq!(
            site.vos,
            [SiteVo {
                name: "fedcloud.egi.eu".into(),
                auth: SiteVoAuth {
                    project_id: "7cfb9087632a4df5b738fbd0b795f2ad".into()
                }
            }]
        );
        assert!(
            SiteCatalog::from_yaml("gocdb: EMPTY\nendpoint: https://e.example.org/v3\nvos: {}\n")
                .unwrap()
                .site("EMPTY")
                .unwrap()
                .vos
                .is_empty()
        );
    }

    #[test]
    fn bad_entries_are_errors_naming_the_entry() {
        let err = SiteCatalog::from_yaml(&format!("{IFCA_FILE}---\ngocdb: NO-ENDPOINT\nvos: []\n"))
            .unwrap_err();
        assert_eq!(err, "site entry 2 (NO-ENDPOINT): missing field `endpoint`");
        let err = SiteCatalog::from_yaml("- gocdb: X\n  endpoint: keystone:5000\n").unwrap_err();
        assert_eq!(
            err,
            "site entry 1 (X): endpoint: \"keystone:5000\" is not an http(s) URL of a Keystone endpoint"
        );
        let err = SiteCatalog::from_yaml(
            "gocdb: X\nendpoint: https://x.example.org/v3\nvos:\n  - auth:\n      project_id: abc\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("site entry 1 (X): vos[0]: missing field `name`"),
            "{err}"
        );
        let err = SiteCatalog::from_yaml("just a string\n").unwrap_err();
        assert_eq!(
            err,
            "document 1: expected a site entry (gocdb, endpoint, vos) or a list of them"
        );
    }

    #[test]
    fn merge_replaces_by_site_name_ignoring_case() {
        let mut catalog = SiteCatalog::builtin().clone();
        let before = catalog.len();
        let replacement = SiteCatalog::from_yaml(
            "gocdb: ifca-lcg2\nendpoint: https://keystone.example.org/v3\nvos:\n  - name: vo.imagine-ai.eu\n    auth:\n      project_id: ffffffffffffffffffffffffffffffff\n",
        )
        .unwrap();
        catalog.merge(replacement);
        catalog.merge(SiteCatalog::from_yaml(EXAMPLE_FILE).unwrap());
        assert_eq!(catalog.len(), before + 1);
        assert_eq!(
            catalog
                .project_for("IFCA-LCG2", "vo.imagine-ai.eu")
                .unwrap(),
            (
                "https://keystone.example.org/v3",
                "ffffffffffffffffffffffffffffffff"
            )
        );
        assert_eq!(catalog.site("IFCA-LCG2").unwrap().vos.len(), 1);
        assert!(catalog.site("EXAMPLE-SITE").is_some());
        // The shipped catalogue itself is untouched.
        assert_eq!(SiteCatalog::builtin().len(), before);
    }

    #[test]
    fn keystone_v3_appends_once() {
        assert_eq!(
            keystone_v3("https://a.example.org:5000/v3/"),
            "https://a.example.org:5000/v3"
        );
        assert_eq!(
            keystone_v3("https://a.example.org:5000/v3"),
            "https://a.example.org:5000/v3"
        );
        assert_eq!(
            keystone_v3("https://a.example.org:5000/"),
            "https://a.example.org:5000/v3"
        );
        assert_eq!(
            keystone_v3("https://a.example.org:5000"),
            "https://a.example.org:5000/v3"
        );
        assert_eq!(
            keystone_v3(" https://a.example.org/identity/v3// "),
            "https://a.example.org/identity/v3"
        );
    }

    #[test]
    fn closest_prefers_related_names() {
        let names = ["IFCA-LCG2", "CESGA", "CESGA-CLOUD", "SCAI"];
        assert_eq!(closest("cesga-cloud", names, 2), ["CESGA-CLOUD", "CESGA"]);
        assert_eq!(closest("ifca", names, 1), ["IFCA-LCG2"]);
        assert!(closest("x", Vec::<&str>::new(), 5).is_empty());
    }
}
