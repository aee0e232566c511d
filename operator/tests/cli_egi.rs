//! `kelp egi sites` as a user runs it: the built binary, its stdout, stderr and exit
//! status.

use std::process::{Command, Output};

fn kelp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(args)
        .output()
        .expect("kelp runs")
}

/// stdout of a successful run (panics with stderr otherwise).
fn ok(args: &[&str]) -> String {
    let out = kelp(args);
    assert!(
        out.status.success(),
        "kelp {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// stderr of a failed run; a failure prints nothing on stdout and exits with 1.
fn fails(args: &[&str]) -> String {
    let out = kelp(args);
    assert_eq!(out.status.code(), Some(1), "kelp {args:?} should fail");
    assert!(
        out.stdout.is_empty(),
        "a failure prints no partial output: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// The whitespace-separated cells of each line.
fn cells(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

fn temp_file(name: &str, text: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-egi-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn sites_for_imagine_lists_known_sites_with_endpoints_and_projects() {
    let out = ok(&["egi", "sites", "--vo", "vo.imagine-ai.eu"]);
    assert_eq!(
        cells(&out),
        [
            vec!["SITE", "ENDPOINT", "PROJECT"],
            vec![
                "IFCA-LCG2",
                "https://api.cloud.ifca.es:5000/v3/",
                "2f9d982c4a654c38aad616f5a1f7146d"
            ],
            vec![
                "NCG-INGRID-PT",
                "https://stratus.ncg.ingrid.pt:5000/v3",
                "009f77df459b4a6389910e0fb20ddcaf"
            ],
            vec![
                "WALTON-CLOUD",
                "https://egi.waltoncloud.eu:5000/v3",
                "f0e338d86f8146e1b3e7126a31aa34b3"
            ],
        ],
        "{out}"
    );
    // Columns are aligned: the endpoints start at the same offset.
    let col: Vec<usize> = out.lines().map(|l| l.find("  ").unwrap()).collect();
    assert!(out.lines().skip(1).all(|l| l.contains("https://")));
    let starts: Vec<usize> = out
        .lines()
        .zip(&col)
        .map(|(l, c)| c + l[*c..].find(|ch: char| ch != ' ').unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] == w[1]), "{out}");
}

#[test]
fn sites_for_ai4eosc_and_access() {
    let out = ok(&["egi", "sites", "--vo", "vo.ai4eosc.eu"]);
    let sites: Vec<&str> = cells(&out).iter().skip(1).map(|r| r[0]).collect();
    assert_eq!(sites, ["IFCA-LCG2", "NCG-INGRID-PT"]);
    let out = ok(&["egi", "sites", "--vo", "vo.access.egi.eu"]);
    let sites: Vec<&str> = cells(&out).iter().skip(1).map(|r| r[0]).collect();
    assert!(sites.len() >= 15, "{out}");
    let mut sorted = sites.clone();
    sorted.sort_by_key(|s| s.to_lowercase());
    assert_eq!(sites, sorted, "sorted by site name");
}

#[test]
fn unknown_vo_fails_with_a_clear_message() {
    let err = fails(&["egi", "sites", "--vo", "vo.imagine.eu"]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: no EGI site in the catalogue supports VO \"vo.imagine.eu\" ("),
        "{err}"
    );
    assert!(
        err.contains("; closest known VOs: vo.imagine-ai.eu"),
        "{err}"
    );
}

#[test]
fn without_vo_every_site_is_listed_with_its_vos() {
    let out = kelp(&["egi", "sites"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows = cells(&stdout);
    assert_eq!(rows[0], ["SITE", "ENDPOINT", "COUNT", "VOS"]);
    assert!(rows.len() > 30, "{stdout}");
    let ifca = rows
        .iter()
        .find(|r| r[0] == "IFCA-LCG2")
        .expect("IFCA-LCG2");
    let vos: Vec<&str> = ifca[3].split(',').collect();
    assert_eq!(ifca[2], vos.len().to_string());
    assert!(vos.contains(&"vo.imagine-ai.eu"), "{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("note: "), "{stderr}");
}

#[test]
fn a_site_file_adds_and_replaces_sites() {
    // Two upstream-style site files concatenated: a new site and a replacement.
    let file = temp_file(
        "extra.yaml",
        "---
gocdb: EXAMPLE-SITE
endpoint: https://keystone.example.org:5000/v3
images:
  sync: true
vos:
  - name: vo.imagine-ai.eu
    auth:
      project_id: 0123456789abcdef0123456789abcdef
---
gocdb: walton-cloud
endpoint: https://keystone.walton.example.org/v3
vos:
  - name: ops
    auth:
      project_id: ffffffffffffffffffffffffffffffff
",
    );
    let out = kelp(&["egi", "sites", "--vo", "vo.imagine-ai.eu", "--file", &file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows = cells(&stdout);
    let sites: Vec<&str> = rows.iter().skip(1).map(|r| r[0]).collect();
    assert_eq!(
        sites,
        ["EXAMPLE-SITE", "IFCA-LCG2", "NCG-INGRID-PT"],
        "{stdout}"
    );
    assert_eq!(
        rows[1],
        [
            "EXAMPLE-SITE",
            "https://keystone.example.org:5000/v3",
            "0123456789abcdef0123456789abcdef"
        ]
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!("note: {file}: adds EXAMPLE-SITE; replaces walton-cloud\n")
    );

    let err = fails(&["egi", "sites", "--file", "/no/such/sites.yaml"]);
    assert!(err.starts_with("error: /no/such/sites.yaml: "), "{err}");
    let bad = temp_file("bad.yaml", "gocdb: BAD\nvos: []\n");
    let err = fails(&["egi", "sites", "--file", &bad]);
    assert_eq!(
        err,
        format!("error: {bad}: site entry 1 (BAD): missing field `endpoint`\n")
    );
}

#[test]
fn json_and_yaml_output_parse() {
    let out = ok(&["egi", "sites", "--vo", "vo.imagine-ai.eu", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let sites = json.as_array().expect("a list of sites");
    assert_eq!(sites.len(), 3);
    assert_eq!(sites[0]["gocdb"], "IFCA-LCG2");
    assert_eq!(sites[0]["endpoint"], "https://api.cloud.ifca.es:5000/v3/");
    assert_eq!(
        sites[0]["vos"],
        serde_json::json!([{"name": "vo.imagine-ai.eu", "auth": {"project_id": "2f9d982c4a654c38aad616f5a1f7146d"}}])
    );

    let all = ok(&["egi", "sites", "-o", "json"]);
    let all: serde_json::Value = serde_json::from_str(&all).expect("JSON");
    assert!(all.as_array().unwrap().len() > 30);

    // YAML output is itself a site file: feeding it back changes nothing.
    let yaml = ok(&[
        "egi",
        "sites",
        "--vo",
        "vo.imagine-ai.eu",
        "--output",
        "yaml",
    ]);
    let file = temp_file("roundtrip.yaml", &yaml);
    let again = ok(&[
        "egi",
        "sites",
        "--vo",
        "vo.imagine-ai.eu",
        "-o",
        "yaml",
        "--file",
        &file,
    ]);
    assert_eq!(again, yaml);
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(parsed.as_sequence().unwrap().len(), 3);
}

#[test]
fn help_shows_the_egi_command() {
    let help = ok(&["--help"]);
    assert!(help.contains("egi"), "{help}");
    let help = ok(&["egi", "sites", "--help"]);
    for option in ["--vo", "--file", "--output"] {
        assert!(help.contains(option), "{help}");
    }
}
