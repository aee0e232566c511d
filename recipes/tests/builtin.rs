//! Rendering of the built-in recipes from the YAML fixtures.

use kelp_recipes::{
    Catalog, NodeContext, NodeRole, RecipeUse, WorkloadContext, default_node_recipes,
};
use serde_json::Value;

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn node_uses(ctx: &NodeContext) -> Vec<RecipeUse> {
    default_node_recipes(ctx.pool.gpu_count, ctx.kubernetes.role)
}

fn parse_user_data(text: &str) -> serde_yaml_ng::Value {
    assert!(text.starts_with("#cloud-config\n"), "{text}");
    serde_yaml_ng::from_str(text).unwrap()
}

fn runcmd_text(doc: &serde_yaml_ng::Value) -> Vec<String> {
    doc["runcmd"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect()
}

fn file<'a>(doc: &'a serde_yaml_ng::Value, path: &str) -> Option<&'a serde_yaml_ng::Value> {
    doc["write_files"]
        .as_sequence()?
        .iter()
        .find(|f| f["path"].as_str() == Some(path))
}

#[test]
fn builtin_catalog_has_the_six_recipes() {
    let catalog = Catalog::builtin();
    let names: Vec<_> = catalog.list().map(|r| r.name.as_str()).collect();
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
    for r in catalog.list() {
        assert!(!r.description.is_empty(), "{}", r.name);
        assert!(!r.version.is_empty(), "{}", r.name);
    }
}

#[test]
fn default_node_recipes_follow_gpu_and_role() {
    let names = |g, r| {
        default_node_recipes(g, r)
            .into_iter()
            .map(|u| u.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(0, NodeRole::Agent), ["base", "k3s-agent"]);
    assert_eq!(
        names(2, NodeRole::Agent),
        ["base", "nvidia-gpu", "k3s-agent"]
    );
    assert_eq!(
        names(1, NodeRole::Server),
        ["base", "nvidia-gpu", "k3s-server"]
    );
}

#[test]
fn gpu_agent_user_data() {
    let catalog = Catalog::builtin();
    let ctx: NodeContext = fixture("node-gpu-agent.yaml");
    let text = catalog.render_node(&node_uses(&ctx), &ctx).unwrap();
    if std::env::var_os("KELP_PRINT").is_some() {
        println!("{text}");
    }
    let doc = parse_user_data(&text);
    assert_eq!(doc["package_update"], serde_yaml_ng::Value::Bool(true));
    assert_eq!(doc["timezone"].as_str(), Some("UTC"));
    assert!(doc["final_message"].as_str().unwrap().contains("kelp"));
    assert_eq!(
        doc["ssh_authorized_keys"][0].as_str(),
        Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 alice@example.org")
    );
    let runcmd = runcmd_text(&doc);
    // base first, then nvidia-gpu, then k3s, and the completion marker last.
    let pos = |needle: &str| {
        runcmd
            .iter()
            .position(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in {runcmd:#?}"))
    };
    assert_eq!(pos("mkdir"), 0);
    assert!(pos("nvidia-driver-550-server") < pos("get.k3s.io"));
    assert!(pos("nvidia-ctk") < pos("get.k3s.io"));
    assert_eq!(pos("cloud-init-done"), runcmd.len() - 1);
    assert!(runcmd[pos("get.k3s.io")].contains("v1.31.4+k3s1"));
    assert!(runcmd[pos("get.k3s.io")].contains("sh -s - agent"));

    let config = file(&doc, "/etc/rancher/k3s/config.yaml").expect("k3s config");
    assert_eq!(config["permissions"].as_str(), Some("0600"));
    let k3s: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(config["content"].as_str().unwrap()).unwrap();
    assert_eq!(k3s["server"].as_str(), Some("https://203.0.113.7:6443"));
    assert_eq!(
        k3s["token"].as_str(),
        Some("K10aa11bb22cc33::server:0123456789abcdef")
    );
    assert_eq!(k3s["default-runtime"].as_str(), Some("nvidia"));
    let labels: Vec<_> = k3s["node-label"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "kelp.imagine-ai.eu/pool=gpu-t4",
            "kelp.imagine-ai.eu/gpu=true",
            "kelp.imagine-ai.eu/accelerator=t4"
        ]
    );
    assert_eq!(
        k3s["node-taint"][0].as_str(),
        Some("nvidia.com/gpu=present:NoSchedule")
    );
    let list = file(
        &doc,
        "/etc/apt/sources.list.d/nvidia-container-toolkit.list",
    )
    .unwrap();
    assert!(
        list["content"]
            .as_str()
            .unwrap()
            .contains("https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /")
    );
    // An agent never holds the CA key.
    assert!(!text.contains("PRIVATE KEY"));
}

#[test]
fn cpu_server_user_data() {
    let catalog = Catalog::builtin();
    let ctx: NodeContext = fixture("node-cpu-server.yaml");
    let text = catalog.render_node(&node_uses(&ctx), &ctx).unwrap();
    if std::env::var_os("KELP_PRINT").is_some() {
        println!("{text}");
    }
    let doc = parse_user_data(&text);
    assert!(!text.contains("nvidia"), "{text}");
    assert!(doc.get("ssh_authorized_keys").is_none());
    for f in [
        "server-ca.crt",
        "server-ca.key",
        "client-ca.crt",
        "client-ca.key",
    ] {
        let path = format!("/var/lib/rancher/k3s/server/tls/{f}");
        let entry = file(&doc, &path).unwrap_or_else(|| panic!("{path}"));
        let content = entry["content"].as_str().unwrap();
        assert!(content.starts_with("-----BEGIN "), "{content}");
        assert_eq!(
            entry["permissions"].as_str(),
            Some(if f.ends_with(".key") { "0600" } else { "0644" })
        );
    }
    let runcmd = runcmd_text(&doc);
    let install = runcmd.iter().find(|c| c.contains("get.k3s.io")).unwrap();
    assert!(install.contains("sh -s - server"));
    assert!(install.ends_with(",\"\"]"), "stable channel: {install}");
    let k3s: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        file(&doc, "/etc/rancher/k3s/config.yaml").unwrap()["content"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        k3s["node-taint"][0].as_str(),
        Some("node-role.kubernetes.io/control-plane:NoSchedule")
    );
    assert!(k3s.get("default-runtime").is_none());
}

#[test]
fn gpu_server_deploys_the_device_plugin_and_cpu_server_does_not() {
    let catalog = Catalog::builtin();
    let gpu: NodeContext = fixture("node-gpu-server.yaml");
    let text = catalog.render_node(&node_uses(&gpu), &gpu).unwrap();
    let doc = parse_user_data(&text);
    let plugin = file(
        &doc,
        "/var/lib/rancher/k3s/server/manifests/nvidia-device-plugin.yaml",
    )
    .expect("device plugin manifest");
    let ds: k8s_openapi::api::apps::v1::DaemonSet =
        serde_yaml_ng::from_str(plugin["content"].as_str().unwrap()).unwrap();
    let spec = ds.spec.template.spec.unwrap();
    assert_eq!(
        spec.node_selector.unwrap()["kelp.imagine-ai.eu/gpu"],
        "true"
    );
    assert!(
        spec.containers[0]
            .image
            .as_ref()
            .unwrap()
            .contains("k8s-device-plugin")
    );

    let cpu: NodeContext = fixture("node-cpu-server.yaml");
    let text = catalog.render_node(&node_uses(&cpu), &cpu).unwrap();
    assert!(!text.contains("nvidia-device-plugin"));
    // ... unless asked for, e.g. because GPU agents join this server.
    let mut uses = node_uses(&cpu);
    uses[1] = RecipeUse::new("k3s-server").with_input("nvidiaDevicePlugin", "always");
    let text = catalog.render_node(&uses, &cpu).unwrap();
    assert!(text.contains("nvidia-device-plugin"));
}

#[test]
fn rclone_webdav_node_recipe() {
    let catalog = Catalog::builtin();
    let ctx: NodeContext = fixture("node-gpu-agent.yaml");
    let password = kelp_recipes::rclone::obscure("app-password");
    let mut uses = node_uses(&ctx);
    uses.push(
        RecipeUse::new("rclone-webdav")
            .with_input(
                "url",
                "https://share.services.ai4os.eu/remote.php/dav/files/alice",
            )
            .with_input("user", "alice")
            .with_input("password", password.clone()),
    );
    let text = catalog.render_node(&uses, &ctx).unwrap();
    let doc = parse_user_data(&text);
    let conf = file(&doc, "/etc/rclone/rclone.conf").unwrap();
    assert_eq!(conf["permissions"].as_str(), Some("0600"));
    let conf = conf["content"].as_str().unwrap();
    assert!(conf.starts_with("[rshare]\ntype = webdav\n"), "{conf}");
    assert!(conf.contains("vendor = nextcloud\n"));
    assert!(conf.contains(&format!("pass = {password}\n")));
    let mount: Value = serde_json::from_str(
        file(&doc, "/etc/kelp/rclone-mount.json").unwrap()["content"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        mount,
        serde_json::json!({"remote": "rshare", "mountPath": "/storage"})
    );
    assert!(file(&doc, "/etc/systemd/system/kelp-rclone-mount.service").is_some());
    let packages = doc["packages"].as_sequence().unwrap();
    assert!(packages.iter().any(|p| p.as_str() == Some("rclone")));
    let runcmd = runcmd_text(&doc);
    assert!(runcmd.last().unwrap().contains("cloud-init-done"));
}

fn workload(name: &str) -> (WorkloadContext, Vec<Value>) {
    let catalog = Catalog::builtin();
    let ctx: WorkloadContext = fixture(name);
    let objs = catalog
        .render_workload(&RecipeUse::new("deepaas-inference"), &ctx)
        .unwrap();
    if std::env::var_os("KELP_PRINT").is_some() {
        for o in &objs {
            println!("---\n{}", serde_yaml_ng::to_string(o).unwrap());
        }
    }
    (ctx, objs)
}

fn by_kind<'a>(objs: &'a [Value], kind: &str) -> Option<&'a Value> {
    objs.iter().find(|o| o["kind"] == kind)
}

#[test]
fn gpu_workload_objects() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::networking::v1::Ingress;

    let (ctx, objs) = workload("workload-gpu.yaml");
    assert_eq!(objs.len(), 3);
    for o in &objs {
        assert_eq!(o["metadata"]["namespace"], "research");
        assert_eq!(o["metadata"]["name"], "fish-detector");
        for (k, v) in &ctx.labels {
            assert_eq!(o["metadata"]["labels"][k], v.as_str());
        }
    }
    let d: Deployment =
        serde_json::from_value(by_kind(&objs, "Deployment").unwrap().clone()).unwrap();
    let spec = d.spec;
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    assert_eq!(spec.selector.match_labels.as_ref(), Some(&ctx.labels));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
    assert_eq!(
        pod.node_selector.unwrap()["kelp.imagine-ai.eu/pool"],
        "gpu-t4"
    );
    let tol = pod.tolerations.unwrap();
    assert_eq!(tol[0].operator.as_deref(), Some("Equal"));
    assert_eq!(tol[0].value.as_deref(), Some("present"));
    assert_eq!(tol[1].operator.as_deref(), Some("Exists"));
    assert_eq!(pod.containers.len(), 3, "module + two rclone sidecars");
    let main = &pod.containers[0];
    assert_eq!(
        main.image.as_deref(),
        Some("ai4oshub/ai4os-yolov8-torch:gpu")
    );
    assert_eq!(
        main.command.as_deref(),
        Some(&["deep-start".to_string()][..])
    );
    assert_eq!(main.args.as_deref(), Some(&["--deepaas".to_string()][..]));
    let res = main.resources.as_ref().unwrap();
    let limits = res.limits.as_ref().unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    assert_eq!(limits["memory"].0, "8000Mi");
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "4");
    let probe = main
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/v2/"));
    assert_eq!(
        probe.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(5000)
    );
    assert!(main.liveness_probe.is_some());
    let env = main.env.as_ref().unwrap();
    assert_eq!(env[0].value.as_deref(), Some("small"));
    let secret_ref = env[1]
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (secret_ref.name.as_str(), secret_ref.key.as_str()),
        ("mlflow", "password")
    );
    assert!(
        env[2]
            .value_from
            .as_ref()
            .unwrap()
            .config_map_key_ref
            .is_some()
    );
    let mounts = main.volume_mounts.as_ref().unwrap();
    assert_eq!(mounts[0].mount_path, "/dev/shm");
    assert_eq!(mounts[1].mount_path, "/storage");
    assert_eq!(
        mounts[1].mount_propagation.as_deref(),
        Some("HostToContainer")
    );
    let volumes = pod.volumes.unwrap();
    let shm = volumes[0].empty_dir.as_ref().unwrap();
    assert_eq!(shm.medium.as_deref(), Some("Memory"));
    assert_eq!(shm.size_limit.as_ref().unwrap().0, "4000Mi");

    let rw = &pod.containers[1];
    assert!(rw.image.as_ref().unwrap().starts_with("rclone/rclone"));
    let args = rw.args.as_ref().unwrap();
    assert_eq!(args[..3], ["mount", "rshare:", "/storage"]);
    assert!(args.contains(&"--allow-other".to_string()));
    assert!(!args.contains(&"--read-only".to_string()));
    assert_eq!(rw.security_context.as_ref().unwrap().privileged, Some(true));
    assert_eq!(
        rw.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name,
        "fish-detector-rclone-rshare"
    );
    assert_eq!(
        rw.volume_mounts.as_ref().unwrap()[0]
            .mount_propagation
            .as_deref(),
        Some("Bidirectional")
    );
    let ro = &pod.containers[2];
    assert!(
        ro.args
            .as_ref()
            .unwrap()
            .contains(&"--read-only".to_string())
    );

    let svc: Service = serde_json::from_value(by_kind(&objs, "Service").unwrap().clone()).unwrap();
    let svc = svc.spec.unwrap();
    assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(svc.selector.as_ref(), Some(&ctx.labels));
    let ports: Vec<_> = svc.ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, [5000, 8888]);

    let ing: Ingress = serde_json::from_value(by_kind(&objs, "Ingress").unwrap().clone()).unwrap();
    let rule = &ing.spec.unwrap().rules.unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("models.example.org"));
    let path = &rule.http.as_ref().unwrap().paths[0];
    assert_eq!(path.path.as_deref(), Some("/research/fish-detector"));
    assert_eq!(path.path_type, "Prefix");
    let backend = path.backend.service.as_ref().unwrap();
    assert_eq!(backend.name, "fish-detector");
    assert_eq!(backend.port.as_ref().unwrap().number, Some(5000));
}

#[test]
fn cpu_workload_objects() {
    use k8s_openapi::api::apps::v1::Deployment;
    let (_, objs) = workload("workload-cpu.yaml");
    let kinds: Vec<_> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Deployment", "Service"], "not public: no Ingress");
    let d: Deployment = serde_json::from_value(objs[0].clone()).unwrap();
    let spec = d.spec;
    assert_eq!(
        spec.strategy.unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.containers.len(), 1);
    let main = &pod.containers[0];
    assert!(
        main.command.is_none(),
        "custom protocol keeps the image entrypoint"
    );
    let limits = main.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert!(!limits.contains_key("nvidia.com/gpu"));
    assert!(pod.image_pull_secrets.is_none());
    let probe = main
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/healthz"));
}

#[test]
fn workload_context_command_and_args_override_deepaas_defaults() {
    let catalog = Catalog::builtin();
    let mut ctx: WorkloadContext = fixture("workload-gpu.yaml");
    ctx.command = Some(vec!["python".into(), "-m".into(), "serve".into()]);
    ctx.args = Some(vec![]);
    let objs = catalog
        .render_workload(&RecipeUse::new("deepaas-inference"), &ctx)
        .unwrap();
    let c = &objs[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"], serde_json::json!(["python", "-m", "serve"]));
}
