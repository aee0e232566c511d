//! Rendered user-data must pass `cloud-init schema` (Debian package `cloud-init`).
//! Without cloud-init installed the test says so and passes, unless
//! `KELP_REQUIRE_CLOUD_INIT=1` (set by `.ci/run`, which installs it) makes that a failure.

use std::process::Command;

use kelp_recipes::{Catalog, NodeContext, RecipeUse, default_node_recipes};

fn fixture(name: &str) -> NodeContext {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn cloud_init_available() -> bool {
    Command::new("cloud-init")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn rendered_user_data_passes_cloud_init_schema() {
    if !cloud_init_available() {
        assert!(
            std::env::var_os("KELP_REQUIRE_CLOUD_INIT").is_none(),
            "KELP_REQUIRE_CLOUD_INIT is set but cloud-init is not installed"
        );
        eprintln!(
            "NOTE: cloud-init is not installed; skipping `cloud-init schema` (apt-get install cloud-init)"
        );
        return;
    }
    let catalog = Catalog::builtin();
    let dir = std::env::temp_dir().join(format!("kelp-recipes-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cases = Vec::new();
    for name in [
        "node-gpu-agent.yaml",
        "node-gpu-server.yaml",
        "node-cpu-server.yaml",
    ] {
        let ctx = fixture(name);
        let uses = default_node_recipes(ctx.pool.gpu_count, ctx.kubernetes.role);
        cases.push((name.to_string(), catalog.render_node(&uses, &ctx).unwrap()));
    }
    let ctx = fixture("node-gpu-agent.yaml");
    let mut uses = default_node_recipes(1, ctx.kubernetes.role);
    uses.push(
        RecipeUse::new("rclone-webdav")
            .with_input(
                "url",
                "https://share.services.ai4os.eu/remote.php/dav/files/alice",
            )
            .with_input("user", "alice")
            .with_input("password", kelp_recipes::rclone::obscure("pw")),
    );
    cases.push((
        "with-rclone".into(),
        catalog.render_node(&uses, &ctx).unwrap(),
    ));
    let mut hostile = ctx.clone();
    hostile.ssh_authorized_keys = vec!["ssh-ed25519 AAAA \"x\": {{y}}\n- z".into()];
    hostile.pool.labels.insert("a: b".into(), "'\"\n#".into());
    cases.push((
        "hostile".into(),
        catalog
            .render_node(&default_node_recipes(1, ctx.kubernetes.role), &hostile)
            .unwrap(),
    ));

    for (name, text) in cases {
        let path = dir.join(format!("{name}.user-data"));
        std::fs::write(&path, &text).unwrap();
        let out = Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("Valid cloud-config"),
            "{name}: cloud-init schema failed\nstdout: {stdout}\nstderr: {stderr}\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
