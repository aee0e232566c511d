//! `kelp import tosca` on the public IM templates: golden outputs, the errors a user
//! sees, and the output accepted by a real API server (`kubectl apply --dry-run=server`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kelp_operator::tosca::{self, Template};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tosca")
}

fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

fn template(name: &str) -> Template {
    Template {
        name: name.into(),
        text: std::fs::read_to_string(fixtures().join(name)).unwrap(),
    }
}

fn kelp(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(args)
        .output()
        .expect("kelp runs")
}

fn inputs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The AI4OS dashboard's "deploy on your own cloud" link: simple-node-disk.yml with the
/// child ai4eoscvm.yaml and the module's image.
const AI4OS: &[&str] = &["simple-node-disk.yml", "ai4eoscvm.yaml"];

/// A golden case: its name, the templates (main first), the inputs.
type Case = (
    &'static str,
    Vec<&'static str>,
    Vec<(&'static str, &'static str)>,
);

/// The golden cases.
fn cases() -> Vec<Case> {
    vec![
        (
            "ai4os-egi-gpu",
            AI4OS.to_vec(),
            vec![
                ("ai4eosc_model_image", "ai4os-yolov8-torch"),
                ("ai4eosc_gpu_support", "true"),
                ("num_cpus", "8"),
                ("mem_size", "16 GB"),
                ("disk_size", "50 GiB"),
                ("num_gpus", "1"),
                ("gpu_vendor", "NVIDIA"),
                ("gpu_model", "T4"),
                (
                    "kelp.cloud",
                    "egi://IFCA-LCG2/ubuntu-22.04?vo.imagine-ai.eu",
                ),
            ],
        ),
        (
            "ai4os-defaults-sim",
            AI4OS.to_vec(),
            vec![("kelp.cloud", "sim://")],
        ),
        (
            "vm-only-openstack",
            vec!["simple-node-disk.yml"],
            vec![
                ("num_instances", "3"),
                ("instance_type", "m1.large"),
                (
                    "kelp.cloud",
                    "ost://cloud.recas.ba.infn.it/1113d7e8-fc5d-43b9-8d26-61906d89d479",
                ),
            ],
        ),
        (
            "deepaas-vm-aws-webdav",
            vec!["vm_docker_deepaas.yml"],
            vec![
                (
                    "dockerhub_img",
                    "deephdc/deep-oc-plants-classification-tf:cpu",
                ),
                ("cpus", "4"),
                ("mem", "8 GB"),
                (
                    "rclone_url",
                    "https://share.services.ai4os.eu/remote.php/dav/files/alice",
                ),
                ("rclone_user", "alice"),
                ("kelp.cloud", "aws://eu-west-1/ami-0773391ae604c49a4"),
            ],
        ),
        (
            "marathon-webdav-sim",
            vec!["deep-oc-marathon-webdav.yml"],
            vec![
                ("docker_image", "deephdc/deep-oc-generic-dev"),
                ("num_gpus", "1"),
                ("kelp.cloud", "sim://"),
            ],
        ),
    ]
}

fn args_of(templates: &[&str], inputs: &[(&str, &str)], ns: &str) -> Vec<String> {
    let mut args = vec!["import".to_string(), "tosca".into(), fixture(templates[0])];
    for c in &templates[1..] {
        args.push("--child".into());
        args.push(fixture(c));
    }
    for (k, v) in inputs {
        args.push("--input".into());
        args.push(format!("{k}={v}"));
    }
    args.push("-n".into());
    args.push(ns.into());
    args
}

/// stderr as YAML comments, then stdout: what a golden file holds.
fn run_case(templates: &[&str], inputs: &[(&str, &str)]) -> String {
    let out = kelp(&args_of(templates, inputs, "research"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        out.status.success(),
        "kelp import tosca {templates:?} failed:\n{stderr}"
    );
    let mut text = String::new();
    for line in stderr.lines() {
        text.push_str(&format!("# {line}\n"));
    }
    text.push_str(&String::from_utf8(out.stdout).unwrap());
    text
}

#[test]
fn golden_outputs() {
    let mut stale = Vec::new();
    for (name, templates, inputs) in cases() {
        let text = run_case(&templates, &inputs);
        let path = fixtures().join(format!("{name}.golden.yaml"));
        if std::env::var_os("KELP_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != text {
            stale.push(format!("{}:\n{text}", path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "kelp import tosca output differs from the golden files (KELP_UPDATE_GOLDEN=1 rewrites them):\n{}",
        stale.join("\n")
    );
}

fn import(
    templates: &[&str],
    given: &[(&str, &str)],
) -> Result<tosca::Imported, kelp_operator::cli::Failure> {
    let ts: Vec<Template> = templates.iter().map(|t| template(t)).collect();
    tosca::import(&ts, &inputs(given), "research")
}

fn kind<'a>(imported: &'a tosca::Imported, kind: &str) -> Vec<&'a Value> {
    imported
        .manifests
        .iter()
        .filter(|m| m["kind"] == kind)
        .collect()
}

#[test]
fn the_dashboard_link_maps_image_prefix_gpu_and_sizes() {
    let i = import(
        AI4OS,
        &[
            ("ai4eosc_model_image", "plants-classification"),
            ("ai4eosc_gpu_support", "true"),
            ("num_gpus", "2"),
            ("mem_size", "8 GB"),
            ("disk_size", "100 GiB"),
            ("num_instances", "2"),
            ("kelp.cloud", "egi://IFCA-LCG2?vo.imagine-ai.eu"),
        ],
    )
    .unwrap();
    let module = kind(&i, "Module")[0];
    assert_eq!(
        module["spec"]["image"]["repository"],
        "ai4oshub/plants-classification"
    );
    let cluster = kind(&i, "Cluster")[0];
    let pool = &cluster["spec"]["nodePools"][0];
    assert_eq!(pool["replicas"], 2);
    // 8 GB is 8×10⁹ bytes: 7630 MiB; 100 GiB is 100.
    assert_eq!(pool["machine"]["memoryMB"], 7630);
    assert_eq!(pool["machine"]["diskGB"], 100);
    assert_eq!(pool["machine"]["gpu"]["count"], 2);
    assert_eq!(cluster["spec"]["cloud"]["egi"]["site"], "IFCA-LCG2");
    assert_eq!(cluster["spec"]["cloud"]["egi"]["vo"], "vo.imagine-ai.eu");
    let dep = kind(&i, "Deployment")[0];
    assert_eq!(dep["spec"]["resources"]["gpu"], 2);
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(dep["spec"]["expose"]["port"], 5000);
    // An image with a registry path keeps it.
    let i = import(
        AI4OS,
        &[
            ("ai4eosc_model_image", "me/my-model:v1"),
            ("kelp.cloud", "sim://"),
        ],
    )
    .unwrap();
    let module = kind(&i, "Module")[0];
    assert_eq!(module["spec"]["image"]["repository"], "me/my-model");
    assert_eq!(module["spec"]["image"]["tag"], "v1");
    // No GPU support: the Deployment takes none.
    assert_eq!(kind(&i, "Deployment")[0]["spec"]["resources"]["gpu"], 0);
}

#[test]
fn constraint_errors_name_the_input_the_value_and_the_constraint_all_at_once() {
    let f = import(
        AI4OS,
        &[
            ("num_cpus", "3"),
            ("mem_size", "5 GB"),
            ("num_gpus", "9"),
            ("gpu_vendor", "Intel"),
            ("ai4eosc_gpu_support", "perhaps"),
            ("kelp.cloud", "sim://"),
        ],
    )
    .unwrap_err();
    for want in [
        "input num_cpus: 3 does not meet the constraint valid_values [2, 4, 8, 16, 32, 64, 1]",
        "input mem_size: 5 GB does not meet the constraint valid_values [4 GB, 8 GB, 16 GB, 32 GB, 64 GB, 128 GB, 256 GB, 512 GB, 2 GB]",
        "input num_gpus: 9 does not meet the constraint valid_values [0, 1, 2, 3, 4]",
        "input gpu_vendor: Intel does not meet the constraint valid_values [\"\", NVIDIA, AMD]",
        "input ai4eosc_gpu_support: perhaps is not a boolean (true or false)",
    ] {
        assert!(
            f.errors.iter().any(|e| e == want),
            "{want}\n{:#?}",
            f.errors
        );
    }
    assert_eq!(f.errors.len(), 5, "{:#?}", f.errors);
}

#[test]
fn an_unknown_input_lists_the_known_ones() {
    let f = import(AI4OS, &[("num_cpu", "4"), ("kelp.cloud", "sim://")]).unwrap_err();
    assert_eq!(f.errors.len(), 1, "{:?}", f.errors);
    let e = &f.errors[0];
    assert!(
        e.starts_with("--input num_cpu: the template has no input \"num_cpu\" (its inputs: "),
        "{e}"
    );
    for known in ["ai4eosc_model_image", "num_cpus", "mem_size", "kelp.cloud"] {
        assert!(e.contains(known), "{known}: {e}");
    }
}

#[test]
fn a_node_kelp_cannot_map_is_named_with_its_type() {
    let mut main = template("simple-node-disk.yml");
    main.text = main.text.replace(
        "    my_block_storage:",
        "    galaxy:\n      type: tosca.nodes.indigo.GalaxyPortal\n      requirements:\n        - host: simple_node\n\n    my_block_storage:",
    );
    let f = tosca::import(&[main], &inputs(&[("kelp.cloud", "sim://")]), "default").unwrap_err();
    assert!(
        f.errors.iter().any(|e| e.starts_with(
            "node galaxy: type tosca.nodes.indigo.GalaxyPortal has no kelp equivalent"
        )),
        "{:?}",
        f.errors
    );
    // Another playbook of an ec3 Application is refused too.
    let mut child = template("ai4eoscvm.yaml");
    child.text = child
        .text
        .replace("artifacts/ai4eosc.yml", "artifacts/mlflow.yml");
    let f = tosca::import(
        &[template("simple-node-disk.yml"), child],
        &inputs(&[("kelp.cloud", "sim://")]),
        "default",
    )
    .unwrap_err();
    assert!(
        f.errors[0].starts_with("node ai4eosc_model: type tosca.nodes.ec3.Application runs the playbook https://raw.githubusercontent.com/grycap/tosca/main/artifacts/mlflow.yml, which kelp cannot map"),
        "{:?}",
        f.errors
    );
}

#[test]
fn the_cloud_left_to_the_user_or_unknown_says_what_to_give() {
    let f = import(AI4OS, &[]).unwrap_err();
    assert_eq!(f.errors.len(), 1, "{:?}", f.errors);
    assert!(f.errors[0].starts_with("node simple_node: capabilities.os.properties.image is not set, so kelp cannot tell which cloud to use; the template leaves the site to the deployer: give --input kelp.cloud=URL"), "{}", f.errors[0]);
    // An image in the template with a scheme kelp does not drive.
    let mut main = template("simple-node-disk.yml");
    main.text = main.text.replace(
        "            type: linux\n",
        "            type: linux\n            image: one://opennebula.example.org/42\n",
    );
    let f = tosca::import(&[main.clone()], &[], "default").unwrap_err();
    assert!(
        f.errors[0].starts_with("node simple_node: capabilities.os.properties.image: \"one://opennebula.example.org/42\": one:// is not a cloud kelp drives"),
        "{:?}",
        f.errors
    );
    // The template's own image picks the cloud without kelp.cloud.
    let main_ok = Template {
        text: main
            .text
            .replace("one://opennebula.example.org/42", "aws://us-east-1/ami-123"),
        ..main
    };
    let i = tosca::import(&[main_ok], &[], "default").unwrap();
    let cluster = kind(&i, "Cluster")[0];
    assert_eq!(cluster["spec"]["cloud"]["ec2"]["region"], "us-east-1");
    assert_eq!(cluster["spec"]["nodePools"][0]["image"], "ami-123");
    let secret = kind(&i, "Secret")[0];
    assert_eq!(
        secret["metadata"]["name"],
        cluster["spec"]["cloud"]["ec2"]["credentialsSecretRef"]["name"]
    );
    assert!(
        secret["stringData"]["accessKeyId"]
            .as_str()
            .unwrap()
            .starts_with('<')
    );
    // A Marathon template names no machines: the cloud must be given.
    let f = import(&["deep-oc-marathon-webdav.yml"], &[("docker_image", "a/b")]).unwrap_err();
    assert!(
        f.errors[0].contains("give --input kelp.cloud=URL"),
        "{:?}",
        f.errors
    );
}

#[test]
fn an_extra_disk_is_refused_naming_its_input() {
    let f = import(
        AI4OS,
        &[("storage_size", "50 GiB"), ("kelp.cloud", "sim://")],
    )
    .unwrap_err();
    assert_eq!(
        f.errors,
        [
            "node my_block_storage (tosca.nodes.BlockStorage): a 50 GiB extra disk (from --input storage_size); kelp machines have no extra volumes (set the size to 0, or grow the root disk with disk_size)"
        ]
    );
}

#[test]
fn the_webdav_password_is_never_inline_in_the_deployment() {
    let password = "correct-horse-battery";
    for (templates, given) in [
        (
            vec!["vm_docker_deepaas.yml"],
            vec![
                ("dockerhub_img", "deephdc/deep-oc-x"),
                ("rclone_url", "https://nc.example.org/remote.php/webdav/"),
                ("rclone_user", "bob"),
                ("rclone_password", password),
                ("kelp.cloud", "sim://"),
            ],
        ),
        (
            vec!["deep-oc-marathon-webdav.yml"],
            vec![
                ("docker_image", "deephdc/deep-oc-x"),
                ("rclone_user", "bob"),
                ("rclone_password", password),
                ("jupyter_password", password),
                ("kelp.cloud", "sim://"),
            ],
        ),
    ] {
        let i = import(&templates, &given).unwrap();
        for m in &i.manifests {
            let text = m.to_string();
            if m["kind"] == "Secret" {
                continue;
            }
            assert!(
                !text.contains(password),
                "{templates:?}: a {} holds the password: {text}",
                m["kind"]
            );
        }
        let dep = kind(&i, "Deployment")[0];
        let secret_name = dep["spec"]["storage"][0]["webdav"]["credentialsSecretRef"]["name"]
            .as_str()
            .unwrap();
        let secret = i
            .manifests
            .iter()
            .find(|m| m["kind"] == "Secret" && m["metadata"]["name"] == secret_name)
            .unwrap();
        assert_eq!(secret["stringData"]["password"], password);
        assert_eq!(secret["stringData"]["user"], "bob");
        assert!(
            i.notes
                .iter()
                .any(|n| n.contains(secret_name) && n.contains("credential")),
            "{:?}",
            i.notes
        );
    }
    // Without a password given, the Secret has a placeholder.
    let i = import(
        &["vm_docker_deepaas.yml"],
        &[
            ("dockerhub_img", "a/b"),
            ("rclone_url", "https://nc.example.org/dav"),
            ("kelp.cloud", "sim://"),
        ],
    )
    .unwrap();
    let secret = kind(&i, "Secret")[0];
    assert!(
        secret["stringData"]["password"]
            .as_str()
            .unwrap()
            .starts_with("<WebDAV password")
    );
}

#[test]
fn the_form_gets_every_input_with_defaults_and_constraints() {
    let ts: Vec<Template> = AI4OS.iter().map(|t| template(t)).collect();
    let infos = tosca::inputs(&ts).unwrap();
    let by = |n: &str| infos.iter().find(|i| i.name == n).unwrap();
    assert_eq!(
        by("ai4eosc_model_image").default,
        Some(Value::from("plants-classification"))
    );
    assert_eq!(by("mem_size").type_, "scalar-unit.size");
    assert_eq!(
        by("num_cpus").constraints[0].to_string(),
        "valid_values [2, 4, 8, 16, 32, 64, 1]"
    );
    assert!(by("kelp.cloud").required);
    assert_eq!(infos.last().unwrap().name, "kelp.cloud");
}

#[test]
fn unit_sizes_reach_the_machine_requirements() {
    for (mem, mib) in [("2 GB", 1908), ("4 GB", 3815), ("32 GB", 30518)] {
        let i = import(AI4OS, &[("mem_size", mem), ("kelp.cloud", "sim://")]).unwrap();
        assert_eq!(
            kind(&i, "Cluster")[0]["spec"]["nodePools"][0]["machine"]["memoryMB"],
            mib,
            "{mem}"
        );
    }
    let i = import(
        &["deep-oc-marathon-webdav.yml"],
        &[
            ("docker_image", "a/b"),
            ("mem_size", "2048 MB"),
            ("kelp.cloud", "sim://"),
        ],
    )
    .unwrap();
    assert_eq!(
        kind(&i, "Deployment")[0]["spec"]["resources"]["memoryMB"],
        1954
    );
}

/// Every golden case's output is accepted by the API server with kelp's CRDs: kubectl
/// sends it with `--dry-run=server`, so the CRD schemas and CEL rules are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_passes_a_server_side_dry_run() {
    let server = kelp_testapi::TestApiServer::start().await.unwrap();
    let client = kelp_operator::targets::client_from_kubeconfig(&server.kubeconfig())
        .await
        .unwrap();
    kelp_operator::dev::install_crds(&client).await.unwrap();
    let dir = std::env::temp_dir().join(format!("kelp-tosca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    std::fs::write(&kc, server.kubeconfig()).unwrap();
    let kubectl = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs (is it installed?)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = kubectl(&["create", "namespace", "research"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, templates, inputs) in cases() {
        let out = kelp(&args_of(&templates, &inputs, "research"));
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let yaml = String::from_utf8(out.stdout).unwrap();
        let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: kubectl apply --dry-run=server refused it:\n{}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = yaml.matches("\n---\n").count() + 1;
        assert_eq!(
            stdout.matches("created (server dry run)").count(),
            docs,
            "{name}: {stdout}"
        );
    }
    // The check is real: a Deployment with a negative replica count is refused.
    let (_, templates, inputs) = &cases()[1];
    let yaml = String::from_utf8(kelp(&args_of(templates, inputs, "research")).stdout).unwrap();
    let bad = yaml.replace(
        "  replicas: 1\n  resources:",
        "  replicas: -1\n  resources:",
    );
    assert_ne!(bad, yaml);
    let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&bad));
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}
