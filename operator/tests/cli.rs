//! The `kelp` command as a user runs it.

use std::process::Command;

fn kelp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(args)
        .output()
        .expect("kelp runs")
}

#[test]
fn kelp_crds_prints_the_committed_yaml() {
    let out = kelp(&["crds"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/kelp-crds.yaml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[test]
fn kelp_crds_output_is_three_crds() {
    let out = kelp(&["crds"]);
    let docs = kelp_crds::parse::documents(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "modules.kelp.imagine-ai.eu",
            "clusters.kelp.imagine-ai.eu",
            "deployments.kelp.imagine-ai.eu"
        ]
    );
    assert!(docs.iter().all(|d| d["kind"] == "CustomResourceDefinition"));
}

#[test]
fn help_documents_every_subcommand() {
    let out = kelp(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("crds"), "{help}");
    let out = kelp(&["no-such-command"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}
