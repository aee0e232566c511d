//! Golden files: the rendered output of every built-in recipe with the fixed inputs of
//! `tests/fixtures/`, compared byte for byte with `tests/golden/<recipe>-<fixture>.yaml`.
//!
//! After an intended change to a recipe or the renderer, refresh them with
//!
//! ```sh
//! KELP_UPDATE_GOLDEN=1 cargo test -p kelp-recipes --test golden
//! ```
//!
//! and review the diff (`git diff recipes/tests/golden`) before committing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kelp_recipes::{
    Catalog, NodeContext, RecipeKind, RecipeUse, WorkloadContext, default_node_recipes,
};

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// A fixed rclone-obscured password ("potato", from rclone's own test vectors):
/// `obscure` uses a random IV, golden files cannot.
const OBSCURED: &str = "YmJiYmJiYmJiYmJiYmJiYp3gcEWbAw";

/// The fixed inputs a node recipe is rendered with alone.
fn fixed_inputs(name: &str) -> RecipeUse {
    match name {
        "rclone-webdav" => RecipeUse::new(name)
            .with_input(
                "url",
                "https://share.services.ai4os.eu/remote.php/dav/files/alice",
            )
            .with_input("user", "alice")
            .with_input("password", OBSCURED),
        _ => RecipeUse::new(name),
    }
}

const NODE_FIXTURES: [&str; 3] = ["node-gpu-agent", "node-gpu-server", "node-cpu-server"];
const WORKLOAD_FIXTURES: [&str; 2] = ["workload-gpu", "workload-cpu"];

/// Every golden file's name and expected content.
fn render_all() -> BTreeMap<String, String> {
    let catalog = Catalog::builtin();
    let mut out = BTreeMap::new();
    for fx in NODE_FIXTURES {
        let ctx: NodeContext = fixture(fx);
        // The default set the pool gets, merged.
        let uses = default_node_recipes(ctx.pool.gpu_count, ctx.kubernetes.role);
        out.insert(
            format!("default-node-recipes-{fx}.yaml"),
            catalog.render_node(&uses, &ctx).unwrap(),
        );
        // Each node recipe alone, where its requirements hold.
        for r in catalog.list().filter(|r| r.kind == RecipeKind::Node) {
            let u = fixed_inputs(&r.name);
            if catalog.check_node(&u, &ctx).is_ok() {
                out.insert(
                    format!("{}-{fx}.yaml", r.name),
                    catalog.render_node(&[u], &ctx).unwrap(),
                );
            }
        }
    }
    for fx in WORKLOAD_FIXTURES {
        let ctx: WorkloadContext = fixture(fx);
        for r in catalog.list().filter(|r| r.kind == RecipeKind::Workload) {
            let objects = catalog
                .render_workload(&RecipeUse::new(&r.name), &ctx)
                .unwrap();
            let text: Vec<String> = objects
                .iter()
                .map(|o| serde_yaml_ng::to_string(o).unwrap())
                .collect();
            out.insert(format!("{}-{fx}.yaml", r.name), text.join("---\n"));
        }
    }
    out
}

#[test]
fn rendering_is_deterministic() {
    // No randomness, no clock, no map-order effects: two catalogs, same bytes.
    assert_eq!(render_all(), render_all());
}

#[test]
fn golden_files_match() {
    let dir = golden_dir();
    let expected = render_all();
    // Every node and workload recipe has at least one golden file.
    for r in Catalog::builtin().list() {
        assert!(
            expected
                .keys()
                .any(|k| k.starts_with(&format!("{}-", r.name))),
            "no golden file for {}",
            r.name
        );
    }
    if std::env::var_os("KELP_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && !expected.contains_key(&name) {
                std::fs::remove_file(&path).unwrap();
            }
        }
        for (name, text) in &expected {
            std::fs::write(dir.join(name), text).unwrap();
        }
        eprintln!(
            "KELP_UPDATE_GOLDEN: wrote {} files to {}",
            expected.len(),
            dir.display()
        );
        return;
    }
    let mut problems = Vec::new();
    for (name, text) in &expected {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(old) if &old == text => {}
            Ok(old) => {
                let line = old
                    .lines()
                    .zip(text.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or_else(|| old.lines().count().min(text.lines().count()));
                problems.push(format!(
                    "{name}: differs from line {}\n  golden:   {:?}\n  rendered: {:?}",
                    line + 1,
                    old.lines().nth(line).unwrap_or("<end of file>"),
                    text.lines().nth(line).unwrap_or("<end of file>"),
                ));
            }
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    for entry in std::fs::read_dir(&dir).into_iter().flatten() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !expected.contains_key(&name) {
            problems.push(format!("{name}: stale golden file, no recipe renders it"));
        }
    }
    assert!(
        problems.is_empty(),
        "rendered output differs from the golden files in {}:\n{}\n\nIf the change is intended: \
         KELP_UPDATE_GOLDEN=1 cargo test -p kelp-recipes --test golden, then review the diff.",
        dir.display(),
        problems.join("\n")
    );
}
