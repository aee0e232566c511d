//! The example recipes in `docs/recipes.md` (every ```yaml block that is a whole
//! recipe) load, render with the fixtures, pass kelp's checks and, for node recipes,
//! `cloud-init schema` (when cloud-init is installed).

use std::process::Command;

use kelp_recipes::{
    Catalog, NodeContext, Recipe, RecipeKind, RecipeUse, WorkloadContext, default_node_recipes,
    validate_user_data,
};

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The ```yaml blocks of the page that are recipes.
fn examples() -> Vec<String> {
    let path = format!("{}/../docs/recipes.md", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match &mut block {
            None if line.trim_start() == "```yaml" => block = Some(String::new()),
            None => {}
            Some(_) if line.trim_start() == "```" => {
                let b = block.take().unwrap();
                if b.starts_with("name:") && b.contains("\ntemplates:") {
                    out.push(b);
                }
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    out
}

fn cloud_init_schema(name: &str, text: &str) {
    if !Command::new("cloud-init")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            std::env::var_os("KELP_REQUIRE_CLOUD_INIT").is_none(),
            "KELP_REQUIRE_CLOUD_INIT is set but cloud-init is not installed"
        );
        return;
    }
    let path = std::env::temp_dir().join(format!(
        "kelp-recipes-docs-{}-{name}.user-data",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Valid cloud-config"),
        "{name}: cloud-init schema failed: {stdout} {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn example_recipes_in_the_docs_work() {
    let examples = examples();
    let names: Vec<String> = examples
        .iter()
        .map(|e| Recipe::from_yaml(e).unwrap().name)
        .collect();
    for expected in ["node-exporter", "module-with-cache"] {
        assert!(
            names.iter().any(|n| n == expected),
            "docs/recipes.md lost the {expected} example; found {names:?}"
        );
    }
    for text in &examples {
        let mut catalog = Catalog::builtin();
        catalog.add_yaml(text).unwrap();
        let recipe = Recipe::from_yaml(text).unwrap();
        match recipe.kind {
            RecipeKind::Node => {
                for fx in [
                    "node-gpu-agent.yaml",
                    "node-cpu-server.yaml",
                    "node-gpu-server.yaml",
                ] {
                    let ctx: NodeContext = fixture(fx);
                    let mine = RecipeUse::new(&recipe.name);
                    if catalog.check_node(&mine, &ctx).is_err() {
                        continue;
                    }
                    let mut uses = default_node_recipes(ctx.pool.gpu_count, ctx.kubernetes.role);
                    uses.retain(|u| u.name != recipe.name);
                    uses.insert(1, mine);
                    let user_data = catalog
                        .render_node(&uses, &ctx)
                        .unwrap_or_else(|e| panic!("{} on {fx}: {e}", recipe.name));
                    validate_user_data(&user_data).unwrap();
                    cloud_init_schema(&recipe.name, &user_data);
                }
            }
            RecipeKind::Workload => {
                for fx in ["workload-gpu.yaml", "workload-cpu.yaml"] {
                    let ctx: WorkloadContext = fixture(fx);
                    let objects = catalog
                        .render_workload(&RecipeUse::new(&recipe.name), &ctx)
                        .unwrap_or_else(|e| panic!("{} on {fx}: {e}", recipe.name));
                    assert!(!objects.is_empty());
                }
            }
        }
    }
}

#[test]
fn node_exporter_example_inputs() {
    let text = examples()
        .into_iter()
        .find(|e| e.starts_with("name: node-exporter"))
        .unwrap();
    let mut catalog = Catalog::builtin();
    catalog.add_yaml(&text).unwrap();
    let ctx: NodeContext = fixture("node-gpu-agent.yaml");
    let u = RecipeUse::new("node-exporter")
        .with_input("port", 9101)
        .with_input("logLevel", "warn")
        .with_input("textfileNote", "a \"note\"\n: {{x}}");
    let out = catalog.render_node(&[u], &ctx).unwrap();
    let doc: serde_json::Value = serde_yaml_ng::from_str(&out).unwrap();
    assert!(
        doc["write_files"][0]["content"]
            .as_str()
            .unwrap()
            .contains("--web.listen-address=:9101 --log.level=warn"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(doc["write_files"][1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(json["note"], "a \"note\"\n: {{x}}");
    assert_eq!(json["pool"], "gpu-t4");
    let err = catalog
        .render_node(
            &[RecipeUse::new("node-exporter").with_input("logLevel", "loud")],
            &ctx,
        )
        .unwrap_err();
    assert_eq!(err.label(), "InputNotInEnum");
}
