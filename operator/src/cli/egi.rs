//! `kelp egi sites`: the EGI FedCloud site catalogue (`kelp_cloud_drivers::egi::sites`)
//! from the command line: which sites support a VO, their Keystone endpoints and the
//! project the VO gets there.

use super::recipe::table;
use std::fmt::Write as _;
use std::path::PathBuf;

use kelp_cloud_drivers::egi::sites::{Site, SiteCatalog, closest};

use super::{Failure, Outcome, read_file};

/// How `kelp egi sites` prints the sites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns with a header line.
    #[default]
    Table,
    /// A YAML list of site entries, in the site-file form (usable with `--file`).
    Yaml,
    /// The same list as JSON.
    Json,
}

/// The arguments of `kelp egi sites`.
#[derive(Clone, Debug, Default)]
pub struct SitesArgs {
    /// Only the sites supporting this VO, with its project there.
    pub vo: Option<String>,
    /// Site files laid over the shipped catalogue, in order.
    pub files: Vec<PathBuf>,
    pub format: Format,
}

/// The shipped catalogue with the site files laid over it, in order, and a note per
/// file saying which sites it adds and which shipped entries it replaces. All file
/// errors are reported together.
pub fn catalog_with_files(files: &[PathBuf]) -> Result<(SiteCatalog, Vec<String>), Failure> {
    let mut catalog = SiteCatalog::builtin().clone();
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let text = match read_file(path) {
            Ok(text) => text,
            Err(f) => {
                errors.extend(f.errors);
                continue;
            }
        };
        let extra = match SiteCatalog::from_yaml(&text) {
            Ok(extra) => extra,
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        if extra.is_empty() {
            warnings.push(format!("{}: no site entries", path.display()));
            continue;
        }
        let (mut added, mut replaced) = (Vec::new(), Vec::new());
        for site in extra.sites() {
            match catalog.site(&site.gocdb) {
                Some(_) => replaced.push(site.gocdb.clone()),
                None => added.push(site.gocdb.clone()),
            }
        }
        catalog.merge(extra);
        let mut note = format!("{}:", path.display());
        if !added.is_empty() {
            let _ = write!(note, " adds {}", added.join(", "));
        }
        if !replaced.is_empty() {
            let sep = if added.is_empty() { "" } else { ";" };
            let _ = write!(note, "{sep} replaces {}", replaced.join(", "));
        }
        notes.push(note);
    }
    if errors.is_empty() {
        Ok((catalog, notes))
    } else {
        Err(Failure { errors, warnings })
    }
}

fn serialize(sites: &[Site], format: Format) -> Result<String, Failure> {
    match format {
        Format::Table => unreachable!("tables are printed by the caller"),
        Format::Yaml => serde_yaml_ng::to_string(sites)
            .map_err(|e| Failure::new(format!("cannot write YAML: {e}"))),
        Format::Json => serde_json::to_string_pretty(sites)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| Failure::new(format!("cannot write JSON: {e}"))),
    }
}

/// `kelp egi sites [--vo VO] [--file FILE]... [-o table|yaml|json]`.
///
/// With `--vo`: one line per site supporting the VO (`SITE  ENDPOINT  PROJECT`), in
/// site name order, or, as YAML/JSON, those site entries with only that VO; no such
/// site is an error naming the closest known VOs. Without: every site with the number
/// and names of its VOs (`SITE  ENDPOINT  COUNT  VOS`), or all entries.
pub fn sites(args: &SitesArgs) -> Result<Outcome, Failure> {
    let (catalog, mut notes) = catalog_with_files(&args.files)?;
    let Some(vo) = args.vo.as_deref() else {
        let sites: Vec<Site> = catalog.sites().cloned().collect();
        let stdout = if args.format == Format::Table {
            let mut rows = vec![vec![
                "SITE".to_string(),
                "ENDPOINT".into(),
                "COUNT".into(),
                "VOS".into(),
            ]];
            for site in &sites {
                let mut names: Vec<&str> = site.vos.iter().map(|v| v.name.as_str()).collect();
                names.sort_unstable();
                rows.push(vec![
                    site.gocdb.clone(),
                    site.endpoint.clone(),
                    site.vos.len().to_string(),
                    names.join(","),
                ]);
            }
            notes.push(format!(
                "{} sites, {} VOs; `kelp egi sites --vo VO` prints the project of a VO at each site",
                catalog.len(),
                catalog.vos().len()
            ));
            table(&rows)
        } else {
            serialize(&sites, args.format)?
        };
        return Ok(Outcome {
            stdout,
            notes,
            ..Outcome::default()
        });
    };

    let vo = vo.trim();
    if vo.is_empty() {
        return Err(Failure::new("--vo: the VO name is empty"));
    }
    let found = catalog.sites_for_vo(vo);
    if found.is_empty() {
        let vos = catalog.vos();
        let near = closest(vo, vos.iter().copied(), 5);
        let mut msg = format!(
            "no EGI site in the catalogue supports VO {vo:?} ({} sites, {} VOs)",
            catalog.len(),
            vos.len()
        );
        if !near.is_empty() {
            let _ = write!(msg, "; closest known VOs: {}", near.join(", "));
        }
        return Err(Failure::new(msg));
    }
    let stdout = if args.format == Format::Table {
        let mut rows = vec![vec![
            "SITE".to_string(),
            "ENDPOINT".into(),
            "PROJECT".into(),
        ]];
        for (site, entry) in &found {
            rows.push(vec![
                site.gocdb.clone(),
                site.endpoint.clone(),
                entry.auth.project_id.clone(),
            ]);
        }
        table(&rows)
    } else {
        let sites: Vec<Site> = found
            .iter()
            .map(|(site, entry)| Site {
                vos: vec![(*entry).clone()],
                ..(*site).clone()
            })
            .collect();
        serialize(&sites, args.format)?
    };
    Ok(Outcome {
        stdout,
        notes,
        ..Outcome::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(vo: Option<&str>, format: Format) -> Result<Outcome, Failure> {
        sites(&SitesArgs {
            vo: vo.map(str::to_string),
            files: Vec::new(),
            format,
        })
    }

    #[test]
    fn imagine_table() {
        let out = run(Some("vo.imagine-ai.eu"), Format::Table).unwrap();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["SITE", "ENDPOINT", "PROJECT"]
        );
        assert!(lines[1].starts_with("IFCA-LCG2 "), "{}", out.stdout);
        assert_eq!(lines.len(), 4, "{}", out.stdout);
    }

    #[test]
    fn unknown_vo_fails_naming_close_vos() {
        let err = run(Some("vo.imagine.eu"), Format::Table).unwrap_err();
        assert_eq!(err.errors.len(), 1);
        assert!(
            err.errors[0]
                .starts_with("no EGI site in the catalogue supports VO \"vo.imagine.eu\" ("),
            "{err}"
        );
        assert!(
            err.errors[0].contains("; closest known VOs: vo.imagine-ai.eu"),
            "{err}"
        );
        assert_eq!(
            run(Some("  "), Format::Table).unwrap_err().errors,
            ["--vo: the VO name is empty"]
        );
    }

    #[test]
    fn yaml_output_reads_back_as_a_site_file() {
        let out = run(Some("vo.imagine-ai.eu"), Format::Yaml).unwrap();
        let back = SiteCatalog::from_yaml(&out.stdout).unwrap();
        assert_eq!(back.len(), 3);
        assert!(back.sites().all(|s| s.vos.len() == 1));
        let all = run(None, Format::Yaml).unwrap();
        assert_eq!(
            &SiteCatalog::from_yaml(&all.stdout).unwrap(),
            SiteCatalog::builtin()
        );
    }
}
