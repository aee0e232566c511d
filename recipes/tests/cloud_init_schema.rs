//! Rendered user-data must pass `cloud-init schema` (Debian package `cloud-init`), and
//! kelp's own key check must catch what cloud-init's does not (unknown top-level keys).
//! Without cloud-init installed the cloud-init parts say so and pass, unless
//! `KELP_REQUIRE_CLOUD_INIT=1` (set by `.ci/run`, which installs it) makes that a failure.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use kelp_recipes::{
    Catalog, InputType, KNOWN_CLOUD_CONFIG_KEYS, NodeContext, NodeRole, RecipeError, RecipeKind,
    RecipeUse, TaintInfo, UserDataError, default_node_recipes, validate_user_data,
};
use serde_json::Value;

fn fixture(name: &str) -> NodeContext {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Whether `cloud-init` can be run; `false` (with a note) when it is not installed and
/// `KELP_REQUIRE_CLOUD_INIT` is unset.
fn cloud_init_available() -> bool {
    let ok = Command::new("cloud-init")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("KELP_REQUIRE_CLOUD_INIT").is_none(),
            "KELP_REQUIRE_CLOUD_INIT is set but cloud-init is not installed"
        );
        eprintln!(
            "NOTE: cloud-init is not installed; skipping `cloud-init schema` (apt-get install cloud-init)"
        );
    }
    ok
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kelp-recipes-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `cloud-init schema --config-file` on `text`: Ok, or Err(its output).
fn cloud_init_schema(dir: &std::path::Path, name: &str, text: &str) -> Result<(), String> {
    let path = dir.join(format!("{name}.user-data"));
    std::fs::write(&path, text).unwrap();
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && stdout.contains("Valid cloud-config") {
        Ok(())
    } else {
        Err(format!("stdout: {stdout}\nstderr: {stderr}"))
    }
}

/// Runs the schema check on every case, on all cores; panics listing every failure.
fn assert_all_valid(test: &str, cases: Vec<(String, String)>) {
    let dir = temp_dir(test);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = cases.len().div_ceil(threads).max(1);
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .chunks(chunk)
            .map(|part| {
                let dir = &dir;
                s.spawn(move || {
                    part.iter()
                        .filter_map(|(name, text)| {
                            cloud_init_schema(dir, name, text)
                                .err()
                                .map(|e| format!("{name}: cloud-init schema failed\n{e}\n{text}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Typical and edge machines: GPU/CPU, server/agent, with and without SSH keys, labels,
/// taints, version, CA key, declared GPU vendor; long label values.
fn contexts() -> Vec<(&'static str, NodeContext)> {
    let gpu_agent = fixture("node-gpu-agent.yaml");
    let gpu_server = fixture("node-gpu-server.yaml");
    let cpu_server = fixture("node-cpu-server.yaml");

    let mut cpu_agent_bare = gpu_agent.clone();
    cpu_agent_bare.pool.gpu_count = 0;
    cpu_agent_bare.pool.gpu_vendor = None;
    cpu_agent_bare.pool.labels.clear();
    cpu_agent_bare.pool.taints.clear();
    cpu_agent_bare.ssh_authorized_keys.clear();
    cpu_agent_bare.kubernetes.version = None;

    let mut gpu_agent_big = gpu_agent.clone();
    gpu_agent_big.pool.gpu_count = 8;
    gpu_agent_big.pool.gpu_vendor = None;
    gpu_agent_big.pool.name = "p".repeat(63);
    gpu_agent_big.pool.labels = BTreeMap::from([
        (format!("example.org/{}", "k".repeat(63)), "v".repeat(63)),
        ("kelp.imagine-ai.eu/notes".into(), "x".repeat(20_000)),
        ("empty".into(), String::new()),
    ]);
    gpu_agent_big.pool.taints = ["NoSchedule", "PreferNoSchedule", "NoExecute"]
        .iter()
        .enumerate()
        .map(|(i, effect)| TaintInfo {
            key: format!("example.org/t{i}"),
            value: i.is_multiple_of(2).then(|| "v".repeat(63)),
            effect: effect.to_string(),
        })
        .collect();
    gpu_agent_big.ssh_authorized_keys = (0..50)
        .map(|i| format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{i:040} user{i}@example.org"))
        .collect();

    let mut cpu_server_no_ca_key = cpu_server.clone();
    cpu_server_no_ca_key.kubernetes.ca_key_pem = None;
    cpu_server_no_ca_key.kubernetes.version = Some("v1.30.8+k3s1".into());
    cpu_server_no_ca_key.pool.taints.clear();

    let mut gpu_server_bare = gpu_server.clone();
    gpu_server_bare.ssh_authorized_keys.clear();
    gpu_server_bare.pool.labels.clear();
    gpu_server_bare.pool.gpu_count = 1;
    gpu_server_bare.pool.gpu_vendor = Some("NVIDIA".into());
    assert_eq!(gpu_server_bare.kubernetes.role, NodeRole::Server);

    let mut hostile = gpu_agent.clone();
    hostile.ssh_authorized_keys =
        vec!["ssh-ed25519 AAAA \"x\": {{y}}\n- z &a *a <<: *a !!python/object:os.system".into()];
    hostile
        .pool
        .labels
        .insert("a: b".into(), "'\"\n#}} ---\n".into());
    hostile.kubernetes.token = "K10::server:'\"\n&x *x".into();

    vec![
        ("hostile", hostile),
        ("gpu-agent", gpu_agent),
        ("gpu-server", gpu_server),
        ("cpu-server", cpu_server),
        ("cpu-agent-bare", cpu_agent_bare),
        ("gpu-agent-big", gpu_agent_big),
        ("cpu-server-no-ca-key", cpu_server_no_ca_key),
        ("gpu-server-bare", gpu_server_bare),
    ]
}

/// Inputs for `recipe`, variant `v`: enum inputs take their `v`-th value (cycled);
/// string inputs are empty (edge) on even variants where optional, a typical value
/// otherwise; required inputs always get a value.
fn inputs(catalog: &Catalog, recipe: &str, v: usize) -> RecipeUse {
    let mut u = RecipeUse::new(recipe);
    for spec in &catalog.get(recipe).unwrap().inputs {
        let value: Value = match (spec.ty, spec.name.as_str()) {
            (InputType::Enum, _) => spec.values[v % spec.values.len()].clone().into(),
            (InputType::String, "password") => {
                kelp_recipes::rclone::obscure(&"p".repeat(v * 40)).into()
            }
            (InputType::String, "url") => format!(
                "https://share.services.ai4os.eu/remote.php/dav/files/{}",
                "a".repeat(1 + v * 100)
            )
            .into(),
            (InputType::String, "mountPath") => "/mnt/kelp storage/data".into(),
            (InputType::String, _) if v.is_multiple_of(2) && !spec.required => "".into(),
            (InputType::String, "extraPackages") => "htop nvtop  build-essential".into(),
            (InputType::String, "disable") => "traefik,servicelb".into(),
            (InputType::String, "driverBranch") => "535".into(),
            (InputType::String, "devicePluginImage") => {
                "registry.example.org/nvidia/k8s-device-plugin:v0.16.2".into()
            }
            (InputType::String, _) => "alice@example.org".into(),
            (InputType::Integer, _) => (v as i64 * 7).into(),
            (InputType::Boolean, _) => (v.is_multiple_of(2)).into(),
            (InputType::Secret, _) => continue,
        };
        u.inputs.insert(spec.name.clone(), value);
    }
    u
}

/// Every node recipe that applies to `ctx`, in the default order, plus rclone-webdav.
fn full_set(catalog: &Catalog, ctx: &NodeContext, v: usize) -> Vec<RecipeUse> {
    let mut uses: Vec<RecipeUse> = default_node_recipes(ctx.pool.gpu_count, ctx.kubernetes.role)
        .into_iter()
        .map(|u| inputs(catalog, &u.name, v))
        .collect();
    uses.push(inputs(catalog, "rclone-webdav", v));
    uses
}

#[test]
fn every_builtin_node_recipe_passes_cloud_init_schema() {
    let catalog = Catalog::builtin();
    let node_recipes: Vec<&str> = catalog
        .list()
        .filter(|r| r.kind == RecipeKind::Node)
        .map(|r| r.name.as_str())
        .collect();
    // Enough variants for every enum value of every input to be used at least once.
    let variants = catalog
        .list()
        .flat_map(|r| r.inputs.iter().map(|i| i.values.len()))
        .max()
        .unwrap()
        .max(2);
    let mut cases: Vec<(String, String)> = Vec::new();
    let mut rendered_alone = BTreeMap::<&str, usize>::new();
    for (ctx_name, ctx) in contexts() {
        // The default set each pool gets.
        let uses = default_node_recipes(ctx.pool.gpu_count, ctx.kubernetes.role);
        cases.push((
            format!("{ctx_name}-defaults"),
            catalog.render_node(&uses, &ctx).unwrap(),
        ));
        // Each recipe alone on the typical machines, where its requirements hold.
        let typical = ["gpu-agent", "gpu-server", "cpu-server"].contains(&ctx_name);
        for name in node_recipes.iter().filter(|_| typical) {
            let u = inputs(&catalog, name, 1);
            if catalog.check_node(&u, &ctx).is_err() {
                continue;
            }
            *rendered_alone.entry(name).or_default() += 1;
            cases.push((
                format!("{ctx_name}-{name}"),
                catalog.render_node(&[u], &ctx).unwrap(),
            ));
        }
        // Everything together, with every enum value and empty/typical strings.
        for v in 0..variants {
            let uses = full_set(&catalog, &ctx, v);
            cases.push((
                format!("{ctx_name}-all-v{v}"),
                catalog.render_node(&uses, &ctx).unwrap(),
            ));
        }
    }
    assert_eq!(
        rendered_alone.keys().copied().collect::<Vec<_>>(),
        {
            let mut n = node_recipes.clone();
            n.sort();
            n
        },
        "every node recipe is rendered alone at least once"
    );
    // kelp's own check holds for all of them, whether or not cloud-init is here.
    for (name, text) in &cases {
        validate_user_data(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Identical documents (a recipe alone on similar machines) are checked once.
    let mut seen = std::collections::BTreeSet::new();
    cases.retain(|(_, text)| seen.insert(text.clone()));
    if cloud_init_available() {
        eprintln!("cloud-init schema: {} distinct documents", cases.len());
        assert_all_valid("schema", cases);
    }
}

/// A user recipe kelp accepts (only known keys) but whose values are wrong.
const BROKEN: &str = r#"
name: broken
kind: node
inputs:
  - {name: what, type: enum, values: [runcmd, permissions, packages], default: runcmd}
templates:
  - name: t
    template: |
      {{#if (eq inputs.what "runcmd")}}
      runcmd: 5
      {{/if}}
      {{#if (eq inputs.what "permissions")}}
      write_files:
        - path: /etc/x
          permissions: 755
          content: x
      {{/if}}
      {{#if (eq inputs.what "packages")}}
      packages:
        - {name: htop}
      {{/if}}
"#;

#[test]
fn cloud_init_schema_catches_a_broken_part() {
    if !cloud_init_available() {
        return;
    }
    let dir = temp_dir("broken");
    // The checker itself: hand-written broken documents are refused...
    for (name, text) in [
        ("runcmd-5", "#cloud-config\nruncmd: 5\n"),
        (
            "permissions-int",
            "#cloud-config\nwrite_files: [{path: /etc/x, permissions: 755}]\n",
        ),
    ] {
        assert!(
            cloud_init_schema(&dir, name, text).is_err(),
            "{name}: cloud-init schema accepted a broken document"
        );
    }
    // ...and a valid one is accepted, so the refusals above are about the values.
    cloud_init_schema(&dir, "fine", "#cloud-config\nruncmd: [[echo, hi]]\n").unwrap();

    // A broken part from a recipe, merged with the built-ins, is caught in the whole
    // user-data (kelp's key check cannot see it: the keys are all known).
    let mut catalog = Catalog::builtin();
    catalog.add_yaml(BROKEN).unwrap();
    let ctx = fixture("node-gpu-agent.yaml");
    for what in ["runcmd", "permissions", "packages"] {
        let mut uses = default_node_recipes(ctx.pool.gpu_count, ctx.kubernetes.role);
        uses.insert(1, RecipeUse::new("broken").with_input("what", what));
        let text = catalog
            .render_node(&uses, &ctx)
            .or_else(|e| match e {
                // runcmd: 5 cannot even be merged with the built-ins' runcmd lists.
                RecipeError::Merge { .. } => catalog.render_node(&uses[1..2], &ctx),
                other => Err(other),
            })
            .unwrap();
        validate_user_data(&text).unwrap();
        let err = cloud_init_schema(&dir, what, &text)
            .expect_err(&format!("{what}: cloud-init schema accepted\n{text}"));
        assert!(err.contains("schema errors"), "{what}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_top_level_keys_are_refused_by_kelp() {
    let mut catalog = Catalog::builtin();
    catalog
        .add_yaml(
            "name: monitoring\nkind: node\ntemplates:\n  - name: install\n    template: |\n      packges: [prometheus-node-exporter]\n      runcmd: [[systemctl, enable, --now, prometheus-node-exporter]]\n",
        )
        .unwrap();
    let ctx = fixture("node-gpu-agent.yaml");
    let mut uses = default_node_recipes(ctx.pool.gpu_count, ctx.kubernetes.role);
    uses.push(RecipeUse::new("monitoring"));
    let err = catalog.render_node(&uses, &ctx).unwrap_err();
    assert_eq!(
        err,
        RecipeError::UnknownCloudConfigKey {
            recipe: "monitoring".into(),
            template: "install".into(),
            key: "packges".into(),
            suggestion: Some("packages".into()),
        }
    );
    assert_eq!(err.label(), "UnknownCloudConfigKey");
    assert_eq!(err.recipe(), Some("monitoring"));
    assert_eq!(
        err.to_string(),
        "recipe monitoring, template install: unknown cloud-config key \"packges\" (did you mean \"packages\"?)"
    );

    // Keys no known key is close to, and non-string keys.
    for (template, key) in [
        ("kubernetes: {version: v1}", "kubernetes"),
        ("'true': 1", "true"),
        ("true: 1", "true"),
        ("7: x", "7"),
        ("<<: {runcmd: [a]}", "<<"),
    ] {
        let mut c = Catalog::empty();
        c.add_yaml(&format!(
            "name: odd\nkind: node\ntemplates:\n  - name: t\n    template: {}\n",
            serde_json::to_string(template).unwrap()
        ))
        .unwrap();
        match c.render_node(&[RecipeUse::new("odd")], &ctx) {
            Err(RecipeError::UnknownCloudConfigKey { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{template}: {other:?}"),
        }
    }

    // The public check on a whole user-data.
    assert!(matches!(
        validate_user_data("#cloud-config\npackages: [a]\npackges: [b]\n"),
        Err(UserDataError::UnknownKey { key, .. }) if key == "packges"
    ));

    // Why kelp needs its own check: cloud-init's schema accepts the misspelt key.
    if cloud_init_available() {
        let dir = temp_dir("unknown-key");
        cloud_init_schema(
            &dir,
            "packges",
            "#cloud-config\npackges: [prometheus-node-exporter]\n",
        )
        .expect("cloud-init schema now flags unknown keys; kelp's check is still right");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Every allow-listed key is a key of the installed cloud-init's schema (a key only
/// newer cloud-init versions know is listed here).
#[test]
fn allow_list_keys_are_cloud_init_module_keys() {
    const NEWER_THAN_22_4: &[&str] = &["ubuntu_pro"];
    if !cloud_init_available() {
        return;
    }
    let script = "import json, os, cloudinit\n\
        p = os.path.join(os.path.dirname(cloudinit.__file__), 'config', 'schemas', 'schema-cloud-config-v1.json')\n\
        s = json.load(open(p))\n\
        keys = set()\n\
        for r in s['allOf']:\n    keys |= set(s['$defs'][r['$ref'].split('/')[-1]].get('properties', {}))\n\
        print('\\n'.join(sorted(keys)))\n";
    let out = Command::new("python3").args(["-c", script]).output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        eprintln!("NOTE: cannot read cloud-init's schema file; skipping");
        return;
    };
    let known: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(known.len() > 50, "{known:?}");
    let missing: Vec<&&str> = KNOWN_CLOUD_CONFIG_KEYS
        .iter()
        .filter(|k| !known.iter().any(|x| x == **k) && !NEWER_THAN_22_4.contains(k))
        .collect();
    assert!(missing.is_empty(), "not cloud-init keys: {missing:?}");
}
