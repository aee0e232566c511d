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

// ---- kelp recipe ... and kelp module import ------------------------------------------

fn repo_path(rel: &str) -> String {
    format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/ai4-metadata/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
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

/// `cloud-init schema --config-file` accepts `text`. Without cloud-init installed this
/// says so and passes, unless KELP_REQUIRE_CLOUD_INIT is set.
fn assert_valid_cloud_config(name: &str, text: &str) {
    let installed = Command::new("cloud-init")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        assert!(
            std::env::var_os("KELP_REQUIRE_CLOUD_INIT").is_none(),
            "KELP_REQUIRE_CLOUD_INIT is set but cloud-init is not installed"
        );
        eprintln!("NOTE: cloud-init is not installed; skipping `cloud-init schema` for {name}");
        return;
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{name}-{}.user-data", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Valid cloud-config"),
        "cloud-init schema refused {name}:\n{stdout}\n{}\n--- user-data ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_lists_the_offline_tools() {
    let help = ok(&["--help"]);
    for cmd in ["crds", "run", "dev", "recipe", "module"] {
        assert!(help.contains(cmd), "{cmd} missing from:\n{help}");
    }
    let help = ok(&["recipe", "render", "--help"]);
    assert!(
        help.contains("--for-cluster") && help.contains("--input"),
        "{help}"
    );
    let help = ok(&["module", "import", "--help"]);
    assert!(help.contains("--namespace"), "{help}");
}

#[test]
fn recipe_list_shows_every_builtin() {
    let out = ok(&["recipe", "list"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "KIND", "VERSION", "DESCRIPTION"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(
        names,
        [
            "base",
            "deepaas-inference",
            "k3s-agent",
            "k3s-server",
            "nvidia-gpu",
            "rclone-webdav"
        ]
    );
    let kind = |n: &str| rows.iter().find(|r| r[0] == n).unwrap()[1];
    assert_eq!(kind("deepaas-inference"), "workload");
    assert_eq!(kind("nvidia-gpu"), "node");
    assert!(out.contains("NVIDIA driver"), "{out}");
}

#[test]
fn recipe_show_summarises_inputs_then_prints_the_source() {
    let out = ok(&["recipe", "show", "nvidia-gpu"]);
    assert!(
        out.starts_with("# nvidia-gpu (node recipe, version 1.0.0)"),
        "{out}"
    );
    assert!(out.contains("# requires: NVIDIA GPUs in the pool"), "{out}");
    let input_line = out
        .lines()
        .find(|l| l.starts_with("#   driverBranch"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        input_line.contains("string")
            && input_line.contains("\"550\"")
            && input_line.contains("no"),
        "{input_line}"
    );
    assert!(out.contains("enum(stable|experimental)"), "{out}");
    // The summary is comments: the whole output is the recipe file.
    let recipe = kelp_recipes::Recipe::from_yaml(&out).unwrap();
    assert_eq!(recipe.name, "nvidia-gpu");
    assert_eq!(recipe.inputs.len(), 2);

    let err = fails(&["recipe", "show", "nvidia"]);
    assert!(
        err.contains("unknown recipe \"nvidia\"")
            && err.contains("known recipes: base, deepaas-inference, k3s-agent, k3s-server, nvidia-gpu, rclone-webdav"),
        "{err}"
    );
}

#[test]
fn recipe_render_node_recipe_with_a_string_input() {
    let out = ok(&[
        "recipe",
        "render",
        "nvidia-gpu",
        "--input",
        "driverBranch=\"535\"",
    ]);
    assert!(out.starts_with("#cloud-config\n"), "{out}");
    assert!(out.contains("nvidia-driver-535-server"), "{out}");
    assert!(!out.contains("nvidia-driver-550"), "{out}");
    let doc: serde_json::Value = serde_yaml_ng::from_str(&out).unwrap();
    assert!(doc["runcmd"].is_array());
    assert_valid_cloud_config("nvidia-gpu", &out);
    // The same through --input-json.
    assert_eq!(
        ok(&[
            "recipe",
            "render",
            "nvidia-gpu",
            "--input-json",
            "driverBranch=\"535\""
        ]),
        out
    );
    // Without inputs the recipe's defaults apply; a server role example holds the CA key.
    assert!(ok(&["recipe", "render", "nvidia-gpu"]).contains("nvidia-driver-550-server"));
    let server = ok(&["recipe", "render", "k3s-server"]);
    assert!(
        server.contains("<cluster CA key, generated at provisioning>"),
        "{server}"
    );
    assert_valid_cloud_config("k3s-server", &server);
    let agent = ok(&["recipe", "render", "k3s-agent", "--gpus", "1"]);
    assert!(
        agent.contains("https://<control-plane>:6443")
            && agent.contains("<join token, generated at provisioning>"),
        "{agent}"
    );
}

#[test]
fn recipe_render_errors_name_the_recipe_and_the_input() {
    // A YAML integer for a string input.
    let err = fails(&[
        "recipe",
        "render",
        "nvidia-gpu",
        "--input",
        "driverBranch=550",
    ]);
    assert!(
        err.contains("recipe nvidia-gpu: input \"driverBranch\" must be a string, got integer 550"),
        "{err}"
    );
    assert!(
        err.contains("--input 'driverBranch=\"550\"'"),
        "hint: {err}"
    );
    let err = fails(&[
        "recipe",
        "render",
        "nvidia-gpu",
        "--input",
        "toolkitChannel=nightly",
    ]);
    assert!(
        err.contains("\"toolkitChannel\"") && err.contains("nightly"),
        "{err}"
    );
    let err = fails(&[
        "recipe",
        "render",
        "nvidia-gpu",
        "--input",
        "driverbranch=\"1\"",
    ]);
    assert!(
        err.contains("unknown input \"driverbranch\"")
            && err.contains("driverBranch, toolkitChannel"),
        "{err}"
    );
    let err = fails(&["recipe", "render", "rclone-webdav"]);
    assert!(
        err.contains("recipe rclone-webdav: input \"url\" is required"),
        "{err}"
    );
    let err = fails(&["recipe", "render", "nvidia-gpu", "--input", "driverBranch"]);
    assert!(err.contains("expected NAME=VALUE"), "{err}");
    let err = fails(&["recipe", "render", "k3s-agent", "--role", "server"]);
    assert!(
        err.contains("recipe k3s-agent: requirement not met"),
        "{err}"
    );
    let err = fails(&["recipe", "render", "nope"]);
    assert!(err.contains("known recipes: base"), "{err}");
}

#[test]
fn recipe_render_for_cluster_prints_a_pools_merged_user_data() {
    let cluster = repo_path("examples/cluster-sim.yaml");
    let out = ok(&[
        "recipe",
        "render",
        "--for-cluster",
        &cluster,
        "--pool",
        "gpu-t4",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("#cloud-config"));
    let comment = lines.next().unwrap();
    assert!(
        comment.starts_with("# ") && comment.contains("agent machine of pool gpu-t4"),
        "{comment}"
    );
    assert!(out.contains("get.k3s.io"), "k3s part: {out}");
    assert!(
        out.contains("nvidia-container-toolkit"),
        "nvidia part: {out}"
    );
    assert!(
        out.contains("nvidia-driver-550-server"),
        "the pool's input: {out}"
    );
    assert!(
        out.contains("nvidia.com/gpu=present:NoSchedule"),
        "the pool's taint: {out}"
    );
    assert!(
        out.contains("<join token, generated at provisioning>"),
        "{out}"
    );
    let doc: serde_json::Value = serde_yaml_ng::from_str(&out).unwrap();
    let runcmd = doc["runcmd"].as_array().unwrap();
    assert!(
        runcmd
            .last()
            .unwrap()
            .to_string()
            .contains("cloud-init-done"),
        "completion marker last"
    );
    assert_valid_cloud_config("cluster-sim-gpu-t4", &out);

    // --input changes the named recipe of the pool, on top of the Cluster's inputs.
    let out = ok(&[
        "recipe",
        "render",
        "nvidia-gpu",
        "--for-cluster",
        &cluster,
        "--pool",
        "gpu-t4",
        "--input",
        "driverBranch=\"535\"",
    ]);
    assert!(out.contains("nvidia-driver-535-server") && !out.contains("nvidia-driver-550"));

    // The separate control-plane machine, and the CPU pool.
    let cp = ok(&[
        "recipe",
        "render",
        "--for-cluster",
        &cluster,
        "--pool",
        "control-plane",
    ]);
    assert!(
        cp.contains("server machine") && cp.contains("server-ca.crt"),
        "{cp}"
    );
    assert!(
        cp.contains("k8s-device-plugin"),
        "a CPU server of a GPU cluster: {cp}"
    );
    assert_valid_cloud_config("cluster-sim-control-plane", &cp);
    let cpu = ok(&[
        "recipe",
        "render",
        "--for-cluster",
        &cluster,
        "--pool",
        "cpu",
    ]);
    assert!(!cpu.contains("nvidia-driver"), "{cpu}");

    let err = fails(&[
        "recipe",
        "render",
        "--for-cluster",
        &cluster,
        "--pool",
        "a100",
    ]);
    assert!(
        err.contains("no node pool \"a100\" (pools: cpu, gpu-t4, control-plane)"),
        "{err}"
    );
    let err = fails(&[
        "recipe",
        "render",
        "rclone-webdav",
        "--for-cluster",
        &cluster,
        "--pool",
        "gpu-t4",
    ]);
    assert!(
        err.contains("not among the recipes") && err.contains("base, nvidia-gpu, k3s-agent"),
        "{err}"
    );
    let err = fails(&[
        "recipe",
        "render",
        "--for-cluster",
        &cluster,
        "--pool",
        "gpu-t4",
        "--input",
        "driverBranch=\"1\"",
    ]);
    assert!(err.contains("--input needs the recipe NAME"), "{err}");
    let err = fails(&[
        "recipe",
        "render",
        "nvidia-gpu",
        "--for-cluster",
        &cluster,
        "--pool",
        "gpu-t4",
        "--input",
        "driverBranch=1",
    ]);
    assert!(
        err.contains("pool gpu-t4") && err.contains("\"driverBranch\" must be a string"),
        "{err}"
    );
    let err = fails(&[
        "recipe",
        "render",
        "--for-cluster",
        &cluster,
        "--pool",
        "cpu",
        "--role",
        "server",
    ]);
    assert!(err.contains("--pool control-plane"), "{err}");
}

#[test]
fn recipe_render_for_cluster_reports_manifest_errors_with_the_field_path() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("cli-bad-cluster-{}.yaml", std::process::id()));
    let text = std::fs::read_to_string(repo_path("examples/cluster-sim.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: two");
    std::fs::write(&path, text).unwrap();
    let err = fails(&[
        "recipe",
        "render",
        "--for-cluster",
        path.to_str().unwrap(),
        "--pool",
        "gpu-t4",
    ]);
    assert!(err.contains("spec.nodePools[1].replicas"), "{err}");
    // A single-machine cluster: the control-plane pool's machine is the server.
    let solo = dir.join(format!("cli-solo-{}.yaml", std::process::id()));
    std::fs::write(
        &solo,
        "apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Cluster\nmetadata: {name: solo}\nspec:\n  cloud: {sim: {}}\n  kubernetes: {controlPlane: {pool: gpu}}\n  nodePools:\n    - {name: gpu, machine: {gpu: {count: 1, vendor: NVIDIA}}}\n",
    )
    .unwrap();
    let out = ok(&[
        "recipe",
        "render",
        "--for-cluster",
        solo.to_str().unwrap(),
        "--pool",
        "gpu",
    ]);
    assert!(
        out.contains("server machine of pool gpu") && out.contains("nvidia-container-toolkit"),
        "{out}"
    );
    assert_valid_cloud_config("solo", &out);
    let agent = ok(&[
        "recipe",
        "render",
        "--for-cluster",
        solo.to_str().unwrap(),
        "--pool",
        "gpu",
        "--role",
        "agent",
    ]);
    assert!(agent.contains("agent machine of pool gpu"), "{agent}");
}

#[test]
fn recipe_render_workload_recipes_print_a_yaml_stream() {
    let out = ok(&["recipe", "render", "deepaas-inference"]);
    let docs = kelp_crds::parse::documents(&out).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Deployment", "Service", "Ingress"]);
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "default"));
    let err = fails(&[
        "recipe",
        "render",
        "deepaas-inference",
        "--input",
        "startupSeconds=\"600\"",
    ]);
    assert!(
        err.contains("\"startupSeconds\" must be an integer"),
        "{err}"
    );
    let startup = |args: &[&str]| {
        let docs = kelp_crds::parse::documents(&ok(args)).unwrap();
        docs[0]["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["failureThreshold"]
            .clone()
    };
    assert_eq!(startup(&["recipe", "render", "deepaas-inference"]), 60);
    assert_eq!(
        startup(&[
            "recipe",
            "render",
            "deepaas-inference",
            "--input",
            "startupSeconds=60"
        ]),
        6
    );

    // The Deployment of examples/, with the context the operator builds.
    let out = ok(&[
        "recipe",
        "render",
        "--for-deployment",
        &repo_path("examples/deployment-fish-detector.yaml"),
        "--module",
        &repo_path("examples/module-yolov8.yaml"),
        "--cluster",
        &repo_path("examples/cluster-sim.yaml"),
    ]);
    let docs = kelp_crds::parse::documents(&out).unwrap();
    let dep = &docs[0];
    assert_eq!(dep["metadata"]["name"], "fish-detector");
    let containers = dep["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers[0]["image"], "ai4oshub/ai4os-yolov8-torch:gpu");
    assert_eq!(containers[0]["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert!(
        containers
            .iter()
            .any(|c| c["name"].as_str().unwrap().contains("rclone")),
        "{out}"
    );
    assert_eq!(
        dep["spec"]["template"]["spec"]["nodeSelector"]["kelp.imagine-ai.eu/pool"],
        "gpu-t4"
    );
    let err = fails(&[
        "recipe",
        "render",
        "--for-deployment",
        &repo_path("examples/deployment-fish-detector.yaml"),
        "--module",
        &repo_path("examples/module-yolov8.yaml"),
        "--cluster",
        &repo_path("examples/module-yolov8.yaml"),
    ]);
    assert!(err.contains("no Cluster"), "{err}");
}

fn module_of(yaml: &str) -> kelp_crds::Module {
    let docs = kelp_crds::parse::documents(yaml).unwrap();
    assert_eq!(docs.len(), 1, "{yaml}");
    kelp_crds::parse::from_value(docs.into_iter().next().unwrap()).unwrap()
}

#[test]
fn module_import_v2_gpu_module() {
    let out = kelp(&["module", "import", &fixture("yolov8-gpu.yml")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "no warnings: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let m = module_of(&yaml);
    assert_eq!(m.metadata.name.as_deref(), Some("ai4os-yolov8-torch"));
    assert_eq!(m.metadata.namespace, None);
    let s = &m.spec;
    assert_eq!(s.title, "YoloV8 model");
    assert!(
        s.description
            .as_deref()
            .unwrap()
            .contains("DEEPaaS API.\nUsed in iMagine")
    );
    assert_eq!(s.image.repository, "ai4oshub/ai4os-yolov8-torch");
    assert_eq!(s.image.tag, "latest");
    assert_eq!(s.image.gpu_tag.as_deref(), Some("gpu"));
    assert_eq!(s.serving, kelp_crds::Serving::default());
    assert_eq!(
        (s.resources.cpu, s.resources.memory_mb, s.resources.gpu),
        (4, 8000, 1)
    );
    assert_eq!(s.resources.gpu_memory_mb, Some(15000));
    assert_eq!(s.resources.gpu_compute_capability.as_deref(), Some("7.0"));
    let c = s.catalog.as_ref().unwrap();
    assert_eq!(c.metadata_version.as_deref(), Some("2.3.0"));
    assert_eq!(c.tasks, ["Computer Vision"]);
    assert_eq!(c.data_type, ["Image", "Video"]);
    assert_eq!(c.libraries, ["PyTorch"]);
    assert_eq!(
        c.links["sourceCode"],
        "https://github.com/ai4os-hub/ai4os-yolov8-torch"
    );
    assert_eq!(c.links["dockerImage"], "ai4oshub/ai4os-yolov8-torch");
    assert_eq!(c.links["ai4Template"], "ai4-template/1.9.9");
    // The Module controller resolves it.
    let images = kelp_operator::module::resolve(s).unwrap();
    assert_eq!(images.gpu, "ai4oshub/ai4os-yolov8-torch:gpu");

    // --name and --namespace.
    let yaml = ok(&[
        "module",
        "import",
        &fixture("yolov8-gpu.yml"),
        "--name",
        "yolo",
        "--namespace",
        "research",
    ]);
    let m = module_of(&yaml);
    assert_eq!(m.metadata.name.as_deref(), Some("yolo"));
    assert_eq!(m.metadata.namespace.as_deref(), Some("research"));
    let err = fails(&[
        "module",
        "import",
        &fixture("yolov8-gpu.yml"),
        "--name",
        "Yolo_V8",
    ]);
    assert!(
        err.contains("--name: \"Yolo_V8\" is not a valid resource name"),
        "{err}"
    );
}

#[test]
fn module_import_v2_cpu_module() {
    let m = module_of(&ok(&["module", "import", &fixture("fish-cpu.yml")]));
    assert_eq!(m.metadata.name.as_deref(), Some("obsea-fish-detection"));
    let s = &m.spec;
    // A Docker Hub URL with a tag: repository and tag split.
    assert_eq!(s.image.repository, "ai4oshub/obsea-fish-detection");
    assert_eq!(s.image.tag, "cpu");
    assert_eq!(s.image.gpu_tag, None, "no GPU: no gpuTag");
    assert_eq!(
        (s.resources.cpu, s.resources.memory_mb, s.resources.gpu),
        (2, 4000, 0)
    );
    assert_eq!(
        s.description.as_deref(),
        Some(
            "A YOLOv8 detector fine-tuned on OBSEA camera images.\nSmall enough to serve on CPUs."
        )
    );
    // --image and --gpu-tag override.
    let m = module_of(&ok(&[
        "module",
        "import",
        &fixture("fish-cpu.yml"),
        "--image",
        "registry.example.org/fish/detector:1.2",
        "--gpu-tag",
        "1.2-gpu",
    ]));
    assert_eq!(
        m.spec.image.repository,
        "registry.example.org/fish/detector"
    );
    assert_eq!(m.spec.image.tag, "1.2");
    assert_eq!(m.spec.image.gpu_tag.as_deref(), Some("1.2-gpu"));
    assert_eq!(m.metadata.name.as_deref(), Some("detector"));
}

#[test]
fn module_import_v1_metadata_json() {
    let m = module_of(&ok(&["module", "import", &fixture("mods-v1.json")]));
    assert_eq!(m.metadata.name.as_deref(), Some("deep-oc-mods"));
    let s = &m.spec;
    assert_eq!(s.title, "DEEP OC Massive Online Data Streams");
    assert_eq!(s.image.repository, "deephdc/deep-oc-mods");
    assert_eq!(s.image.tag, "latest");
    assert_eq!(
        s.resources,
        kelp_crds::ModuleResources::default(),
        "v1 has no resources"
    );
    assert!(
        s.description
            .as_deref()
            .unwrap()
            .starts_with("Analyses online data streams")
    );
    let c = s.catalog.as_ref().unwrap();
    assert_eq!(c.metadata_version, None);
    assert_eq!(
        c.tags.iter().filter(|t| *t == "docker").count(),
        1,
        "deduplicated"
    );
    assert_eq!(c.libraries, ["TensorFlow", "Keras"]);
    assert_eq!(
        c.categories,
        ["AI4 trainable", "AI4 inference", "AI4 pre trained"]
    );
    assert_eq!(c.links["sourceCode"], "https://github.com/deephdc/mods");
    assert_eq!(
        c.links["dockerfileRepo"],
        "https://github.com/deephdc/DEEP-OC-mods"
    );
}

#[test]
fn module_import_reports_bad_and_unknown_fields() {
    let file = fixture("malformed.yml");
    let err = fails(&["module", "import", &file]);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.contains(&"warning: foo: unknown field, ignored"),
        "{err}"
    );
    assert!(
        lines.contains(
            &format!("error: {file}: resources.inference.gpu: expected an integer, got \"two\"")
                .as_str()
        ),
        "{err}"
    );
    assert!(
        lines.contains(
            &format!("error: {file}: tags[1]: expected a string, got {{\"nested\":\"map\"}}")
                .as_str()
        ),
        "{err}"
    );

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let write = |name: &str, text: &str| {
        let p = dir.join(format!("cli-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let p = write("syntax.yml", "title: [unclosed\n");
    assert!(fails(&["module", "import", &p]).contains("not valid YAML"));
    let p = write("syntax.json", "{\"title\": \"x\",}");
    assert!(fails(&["module", "import", &p]).contains("not valid JSON"));
    let p = write(
        "noimage.yml",
        "metadata_version: 2.0.0\ntitle: T\nsummary: S\nlinks: {source_code: https://x}\n",
    );
    let err = fails(&["module", "import", &p]);
    assert!(
        err.contains("links.docker_image: missing") && err.contains("--image"),
        "{err}"
    );
    let p = write("v3.yml", "metadata_version: 3.0.0\ntitle: T\nsummary: S\n");
    assert!(
        fails(&["module", "import", &p])
            .contains("metadata_version: unsupported version \"3.0.0\"")
    );
    let p = write(
        "badimage.yml",
        "metadata_version: 2.0.0\ntitle: T\nsummary: S\nlinks: {docker_image: Example/UPPER}\n",
    );
    let err = fails(&["module", "import", &p]);
    assert!(
        err.contains("links.docker_image") && err.contains("not a valid image repository"),
        "{err}"
    );
    let err = fails(&["module", "import", "/nonexistent/ai4-metadata.yml"]);
    assert!(err.contains("/nonexistent/ai4-metadata.yml"), "{err}");
}

#[test]
fn recipe_render_takes_a_users_own_recipe_file() {
    let dir = std::env::temp_dir().join(format!("kelp-cli-recipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("motd.yaml");
    std::fs::write(
        &good,
        "name: motd\ndescription: d\nversion: 1.0.0\nkind: node\ninputs:\n  - {name: message, type: string, required: true}\ntemplates:\n  - name: main\n    template: |\n      write_files:\n        - {path: /etc/motd, content: {{json inputs.message}}}\n",
    )
    .unwrap();
    let out = kelp(&[
        "recipe",
        "render",
        "motd",
        "--recipe-file",
        good.to_str().unwrap(),
        "--input",
        "message=hello there",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("#cloud-config\n") && stdout.contains("hello there"),
        "{stdout}"
    );
    let listed = kelp(&["recipe", "list", "--recipe-file", good.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("motd"));

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("type: string", "type: strng"),
    )
    .unwrap();
    let out = kelp(&["recipe", "list", "--recipe-file", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no partial output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("strng"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// `kelp egi sites` as a user runs it.

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

// ---- errors that name what they are about ----------------------------------------------

#[test]
fn kelp_dev_on_a_busy_port_names_the_port() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let kc = scratch("kc");
    let out = kelp(&["dev", "--port", &port, "--kubeconfig", kc.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("--port"),
        "{err}"
    );
}

#[test]
fn kelp_run_against_a_dead_server_names_its_url_and_the_cause() {
    // A port that nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kc = scratch("kc");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let health = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = kelp(&[
        "run",
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--leader-election=false",
        "--health-address",
        &health.to_string(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("https://127.0.0.1:{port}")), "{err}");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
}

/// A fresh path under the system's temporary folder.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("kelp-cli-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

// ---- kelp plan --------------------------------------------------------------------------

fn plan_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["plan", "-o", "json"];
    all.extend_from_slice(args);
    let out = kelp(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sim_price(name: &str) -> f64 {
    kelp_cloud_drivers::sim::catalogue()
        .into_iter()
        .find(|t| t.name == name)
        .and_then(|t| t.price_per_hour)
        .unwrap()
}

#[test]
fn kelp_plan_shows_the_examples_types_counts_and_prices_offline() {
    let plan = plan_json(&["-f", &repo_path("examples")]);
    let c = &plan["clusters"][0];
    assert_eq!(c["name"], "sim-gpu");
    let pools: Vec<(String, String, u64, String)> = c["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pool"].as_str().unwrap().to_string(),
                p["instanceType"].as_str().unwrap().to_string(),
                p["after"].as_u64().unwrap(),
                p["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        pools,
        [
            (
                "control-plane".into(),
                "sim.cpu-2".into(),
                1,
                "create 1".into()
            ),
            ("cpu".into(), "sim.cpu-4".into(), 1, "create 1".into()),
            ("gpu-t4".into(), "sim.t4-8".into(), 2, "create 2".into()),
        ]
    );
    let expected = sim_price("sim.cpu-2") + sim_price("sim.cpu-4") + 2.0 * sim_price("sim.t4-8");
    let total = plan["pricePerHour"].as_f64().unwrap();
    assert!((total - expected).abs() < 0.01, "{total} vs {expected}");
    assert!((plan["pricePer30Days"].as_f64().unwrap() - expected * 720.0).abs() < 1.0);
    assert_eq!(plan["deployments"][0]["name"], "fish-detector");
    assert_eq!(plan["deployments"][0]["pool"], "gpu-t4");
    assert!(plan["deployments"][0]["problem"].is_null());

    // The table says the same, with the total last.
    let out = kelp(&["plan", "-f", &repo_path("examples")]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("CLUSTER"), "{text}");
    assert!(
        text.contains("gpu-t4         sim.t4-8   8     32 GiB  1x T4  0    2"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with(&format!(
            "Total: {:.2} per hour, {:.2} per 30 days",
            total,
            total * 720.0
        )),
        "{text}"
    );
}

#[test]
fn kelp_plan_says_why_a_deployment_fits_nowhere_and_where_a_budget_stops() {
    let dir = scratch("plan");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("all.yaml"),
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Module
metadata: {name: yolo}
spec:
  title: YOLO
  summary: An object detector
  image: {repository: ai4oshub/yolo, tag: latest}
  resources: {cpu: 2, memoryMB: 4096, gpu: 1}
---
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {name: small}
spec:
  cloud: {sim: {}}
  budget: {maxPricePerHour: 1.0}
  kubernetes: {controlPlane: {pool: gpu}}
  nodePools:
    - {name: cpu, replicas: 1, machine: {cpu: 2}}
    - {name: gpu, replicas: 4, machine: {gpu: {count: 1, model: T4}}}
---
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Deployment
metadata: {name: fits}
spec: {moduleRef: {name: yolo}, clusterRef: {name: small}}
---
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Deployment
metadata: {name: wrong-pool}
spec: {moduleRef: {name: yolo}, clusterRef: {name: small}, nodePool: cpu}
---
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Deployment
metadata: {name: no-cluster}
spec: {moduleRef: {name: yolo}, clusterRef: {name: elsewhere}}
---
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Deployment
metadata: {name: falls-back}
spec: {moduleRef: {name: yolo}, placement: {clusters: [{name: elsewhere}, {name: small}]}}
"#,
    )
    .unwrap();
    let plan = plan_json(&["-f", dir.to_str().unwrap(), "-n", "research"]);
    let c = &plan["clusters"][0];
    assert_eq!(c["namespace"], "research");
    let gpu = &c["pools"][1];
    assert_eq!(gpu["pool"], "gpu");
    // 1.0 per hour holds the CPU machine and one T4 machine only.
    let t4 = sim_price(gpu["instanceType"].as_str().unwrap());
    let cpu = sim_price(c["pools"][0]["instanceType"].as_str().unwrap());
    let room = ((1.0 - cpu) / t4).floor() as u64;
    assert_eq!(gpu["after"].as_u64(), Some(room));
    assert_eq!(gpu["action"], format!("create {room}"));
    let problems = c["problems"].to_string();
    assert!(problems.contains("over its budget of 1.00"), "{problems}");
    let by_name = |n: &str| {
        plan["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("fits")["pool"], "gpu");
    assert_eq!(
        by_name("wrong-pool")["problem"],
        "spec.nodePool: pool cpu has 0 GPU(s) per machine; the Deployment needs 1"
    );
    assert!(
        by_name("no-cluster")["problem"]
            .as_str()
            .unwrap()
            .contains("Cluster research/elsewhere is neither in the manifests nor on the cluster")
    );
    // Placement passes over what cannot run it, and says so.
    let fb = by_name("falls-back");
    assert_eq!(
        (fb["cluster"].as_str(), fb["pool"].as_str()),
        (Some("small"), Some("gpu"))
    );
    assert!(
        fb["problem"]
            .as_str()
            .unwrap()
            .starts_with("passed over: elsewhere: Cluster research/elsewhere is neither"),
        "{fb}"
    );
    // An OpenStack Cluster needs its Secrets: offline, it says so.
    let out = kelp(&["plan", "-f", &repo_path("examples/clouds/openstack.yaml")]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("needs --kubeconfig"), "{text}");
    // An EC2 one is planned from kelp's built-in EC2 table, and the note says so.
    let out = kelp(&[
        "plan",
        "-o",
        "json",
        "-f",
        &repo_path("examples/clouds/ec2.yaml"),
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gpu = &plan["clusters"][0]["pools"][0];
    assert_eq!(
        (gpu["instanceType"].as_str(), gpu["gpus"].as_u64()),
        (Some("g4dn.xlarge"), Some(1))
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("planned from kelp's built-in EC2 table"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing to plan is an error.
    let out = kelp(&["plan", "-f", &repo_path("examples/module-yolov8.yaml")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error: no Cluster or Deployment"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `kelp plan` output against a committed golden file; `KELP_UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, args: &[&str]) {
    let out = kelp(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = format!(
        "$ kelp {}\n{}{}",
        args.join(" ").replace(&repo_path(""), ""),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8(out.stdout).unwrap()
    );
    let path = format!("{}/tests/fixtures/plan/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("KELP_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == text,
        "kelp plan output differs from {path} (KELP_UPDATE_GOLDEN=1 rewrites it):\n{text}"
    );
}

#[test]
fn kelp_plan_golden_outputs() {
    golden("examples.txt", &["plan", "-f", &repo_path("examples")]);
    golden(
        "multi-cloud.txt",
        &[
            "plan",
            "-f",
            &repo_path("examples"),
            "-f",
            &repo_path("examples/clouds"),
        ],
    );
    golden(
        "examples.json",
        &["plan", "-o", "json", "-f", &repo_path("examples")],
    );
}
