//! Input validation, requirements, user recipes and the merge rules.

use kelp_recipes::{Catalog, InputType, NodeContext, RecipeError, RecipeUse, WorkloadContext};
use serde_json::json;

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

const TYPED: &str = r#"
name: typed
description: every input type
version: 0.1.0
kind: node
inputs:
  - {name: s, type: string, default: "x"}
  - {name: n, type: integer, default: 3}
  - {name: b, type: boolean, default: false}
  - {name: e, type: enum, values: [a, b], default: a}
  - {name: cred, type: secret}
  - {name: must, type: string, required: true}
templates:
  - name: t
    template: |
      write_files:
        - path: /etc/typed.json
          content: {{json (json inputs)}}
"#;

fn typed_catalog() -> Catalog {
    let mut c = Catalog::builtin();
    c.add_yaml(TYPED).unwrap();
    c
}

fn render_typed(inputs: serde_json::Value) -> Result<String, RecipeError> {
    let ctx: NodeContext = fixture("node-gpu-agent.yaml");
    let mut u = RecipeUse::new("typed");
    for (k, v) in inputs.as_object().unwrap() {
        u.inputs.insert(k.clone(), v.clone());
    }
    typed_catalog().render_node(&[u], &ctx)
}

#[test]
fn defaults_are_applied_and_optional_inputs_are_null() {
    let text = render_typed(json!({"must": "m"})).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let content: serde_json::Value =
        serde_json::from_str(doc["write_files"][0]["content"].as_str().unwrap()).unwrap();
    assert_eq!(
        content,
        json!({"s": "x", "n": 3, "b": false, "e": "a", "cred": null, "must": "m"})
    );
    let text = render_typed(
        json!({"must": "m", "cred": {"name": "sec", "key": "k"}, "n": 7, "b": true, "e": "b"}),
    )
    .unwrap();
    assert!(
        text.contains(r#"\"cred\": {\"name\": \"sec\", \"key\": \"k\"}"#) || text.contains("sec"),
        "{text}"
    );
}

#[test]
fn every_input_error_names_recipe_and_input() {
    let cases = [
        (json!({"must": "m", "typo": 1}), "UnknownInput", "typo"),
        (json!({}), "MissingInput", "must"),
        (json!({"must": null}), "MissingInput", "must"),
        (json!({"must": "m", "n": "3"}), "InputWrongType", "n"),
        (json!({"must": "m", "n": 1.5}), "InputWrongType", "n"),
        (json!({"must": "m", "s": 5}), "InputWrongType", "s"),
        (json!({"must": "m", "b": "true"}), "InputWrongType", "b"),
        (json!({"must": "m", "e": "c"}), "InputNotInEnum", "e"),
        (json!({"must": "m", "e": 1}), "InputWrongType", "e"),
        (
            json!({"must": "m", "cred": "secret-name"}),
            "InputWrongType",
            "cred",
        ),
        (
            json!({"must": "m", "cred": {"name": "x"}}),
            "InputWrongType",
            "cred",
        ),
        (
            json!({"must": "m", "cred": {"name": "x", "key": "k", "extra": 1}}),
            "InputWrongType",
            "cred",
        ),
    ];
    for (inputs, label, input) in cases {
        let err = render_typed(inputs.clone()).unwrap_err();
        assert_eq!(err.label(), label, "{inputs}: {err}");
        assert_eq!(err.recipe(), Some("typed"));
        let msg = err.to_string();
        assert!(
            msg.contains("recipe typed") && msg.contains(&format!("{input:?}")),
            "{msg}"
        );
    }
    let err = render_typed(json!({"must": "m", "n": "3"})).unwrap_err();
    assert!(matches!(
        err,
        RecipeError::WrongType {
            expected: InputType::Integer,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        r#"recipe typed: input "n" must be an integer, got string "3""#
    );
    let err = render_typed(json!({"must": "m", "e": "c"})).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"recipe typed: input "e" is "c", expected one of ["a", "b"]"#
    );
}

#[test]
fn builtin_input_errors() {
    let c = Catalog::builtin();
    let ctx: NodeContext = fixture("node-gpu-agent.yaml");
    let err = c
        .render_node(
            &[RecipeUse::new("nvidia-gpu").with_input("driverBranch", 550)],
            &ctx,
        )
        .unwrap_err();
    assert_eq!(err.label(), "InputWrongType", "{err}");
    let err = c
        .render_node(
            &[RecipeUse::new("rclone-webdav").with_input("url", "https://x")],
            &ctx,
        )
        .unwrap_err();
    assert_eq!(
        err,
        RecipeError::MissingInput {
            recipe: "rclone-webdav".into(),
            input: "user".into()
        }
    );
    let err = c
        .render_node(
            &[RecipeUse::new("rclone-webdav")
                .with_input("url", "https://x")
                .with_input("user", "u")
                .with_input("password", "p")
                .with_input("vendor", "dropbox")],
            &ctx,
        )
        .unwrap_err();
    assert_eq!(err.label(), "InputNotInEnum");
    let w: WorkloadContext = fixture("workload-cpu.yaml");
    let err = c
        .render_workload(
            &RecipeUse::new("deepaas-inference").with_input("startupSeconds", "600"),
            &w,
        )
        .unwrap_err();
    assert_eq!(err.label(), "InputWrongType");
}

#[test]
fn requirements_and_kinds() {
    let c = Catalog::builtin();
    let mut cpu: NodeContext = fixture("node-gpu-agent.yaml");
    cpu.pool.gpu_count = 0;
    let err = c
        .render_node(&[RecipeUse::new("nvidia-gpu")], &cpu)
        .unwrap_err();
    assert_eq!(err.label(), "RequirementNotMet");
    assert!(err.to_string().starts_with("recipe nvidia-gpu: "), "{err}");
    let mut amd: NodeContext = fixture("node-gpu-agent.yaml");
    amd.pool.gpu_vendor = Some("AMD".into());
    assert_eq!(
        c.render_node(&[RecipeUse::new("nvidia-gpu")], &amd)
            .unwrap_err()
            .label(),
        "RequirementNotMet"
    );
    let mut lower: NodeContext = fixture("node-gpu-agent.yaml");
    lower.pool.gpu_vendor = Some("nvidia".into());
    c.render_node(&[RecipeUse::new("nvidia-gpu")], &lower)
        .unwrap();
    lower.pool.gpu_vendor = None;
    c.render_node(&[RecipeUse::new("nvidia-gpu")], &lower)
        .unwrap();

    let agent: NodeContext = fixture("node-gpu-agent.yaml");
    let err = c
        .render_node(&[RecipeUse::new("k3s-server")], &agent)
        .unwrap_err();
    assert_eq!(err.label(), "RequirementNotMet");
    assert!(c.check_node(&RecipeUse::new("k3s-agent"), &agent).is_ok());

    let err = c
        .render_node(&[RecipeUse::new("deepaas-inference")], &agent)
        .unwrap_err();
    assert_eq!(err.label(), "WrongRecipeKind");
    let w: WorkloadContext = fixture("workload-cpu.yaml");
    let err = c.render_workload(&RecipeUse::new("base"), &w).unwrap_err();
    assert_eq!(
        err.to_string(),
        "recipe base is a node recipe, expected a workload recipe"
    );
    let err = c
        .render_node(&[RecipeUse::new("nope")], &agent)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown recipe \"nope\"; known node recipes: base, k3s-agent, k3s-server, nvidia-gpu, rclone-webdav"
    );
    let err = c
        .render_workload(&RecipeUse::new("deepaas"), &w)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown recipe \"deepaas\"; known workload recipes: deepaas-inference"
    );
}

#[test]
fn add_yaml_rejects_broken_recipes_clearly() {
    let mut c = Catalog::builtin();
    let before: Vec<_> = c.list().map(|r| r.name.clone()).collect();
    let cases = [
        (
            "name: x\nkind: node\ntemplates: [\n",
            "RecipeParse",
            "recipe x: cannot parse",
        ),
        (
            "name: x\nkind: plant\ntemplates: []\n",
            "RecipeParse",
            "unknown variant `plant`",
        ),
        (
            "name: x\nkind: node\ninputs: [{name: a, type: string, requried: true}]\ntemplates: [{name: t, template: ''}]\n",
            "RecipeParse",
            "unknown field `requried`",
        ),
        (
            "name: x\nkind: node\ntemplates:\n  - name: t\n    template: \"runcmd: [{{json inputs.a}]\"\n",
            "TemplateSyntax",
            "recipe x, template t: syntax error",
        ),
        (
            "name: x\nkind: node\ntemplates:\n  - name: t\n    template: \"{{#if a}}open\"\n",
            "TemplateSyntax",
            "template t",
        ),
        (
            "name: x\nkind: node\ninputs: [{name: n, type: integer, default: \"3\"}]\ntemplates: [{name: t, template: ''}]\n",
            "RecipeInvalid",
            r#"recipe x: default of input "n" is wrong: recipe x: input "n" must be an integer, got string "3""#,
        ),
        (
            "name: x\nkind: node\ninputs: [{name: e, type: enum, values: [a], default: b}]\ntemplates: [{name: t, template: ''}]\n",
            "RecipeInvalid",
            "default of input \"e\"",
        ),
        (
            "name: x\nkind: node\ninputs: [{name: e, type: enum}]\ntemplates: [{name: t, template: ''}]\n",
            "RecipeInvalid",
            "needs a non-empty `values` list",
        ),
        (
            "name: x\nkind: node\ninputs: [{name: a, type: string}, {name: a, type: string}]\ntemplates: [{name: t, template: ''}]\n",
            "RecipeInvalid",
            "defined twice",
        ),
        (
            "name: x\nkind: workload\nrequires: {gpuVendor: NVIDIA}\ntemplates: [{name: t, template: ''}]\n",
            "RecipeInvalid",
            "node recipes only",
        ),
        (
            "name: x\nkind: node\ntemplates: []\n",
            "RecipeInvalid",
            "has no templates",
        ),
    ];
    for (text, label, needle) in cases {
        let err = c.add_yaml(text).unwrap_err();
        assert_eq!(err.label(), label, "{text}\n{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    let after: Vec<_> = c.list().map(|r| r.name.clone()).collect();
    assert_eq!(before, after, "failed adds leave the catalog unchanged");
}

#[test]
fn add_yaml_replaces_a_recipe_of_the_same_name() {
    let mut c = Catalog::builtin();
    let ctx: NodeContext = fixture("node-cpu-server.yaml");
    c.add_yaml("name: base\ndescription: mine\nkind: node\ntemplates:\n  - {name: only, template: 'timezone: Europe/Madrid'}\n")
        .unwrap();
    assert_eq!(c.get("base").unwrap().description, "mine");
    let text = c.render_node(&[RecipeUse::new("base")], &ctx).unwrap();
    assert_eq!(text, "#cloud-config\ntimezone: Europe/Madrid\n");
}

fn user_catalog() -> Catalog {
    let mut c = Catalog::empty();
    for text in [
        "name: a\nkind: node\ntemplates:\n  - name: early\n    order: first\n    template: 'runcmd: [a-first]'\n  - name: main\n    template: |\n      packages: [pa]\n      runcmd: [a1]\n      apt: {conf: one, sources: {x: {source: sx}}}\n      timezone: UTC\n  - name: end\n    order: last\n    template: 'runcmd: [a-last]'\n",
        "name: b\nkind: node\ntemplates:\n  - name: main\n    template: |\n      packages: [pb]\n      runcmd: [b1]\n      apt: {sources: {y: {source: sy}}}\n      timezone: Europe/Madrid\n      bootcmd: [b-boot]\n",
        "name: conflict\nkind: node\ntemplates:\n  - {name: main, template: 'packages: {oops: 1}'}\n",
        "name: scalar\nkind: node\ntemplates:\n  - {name: main, template: '- just a list'}\n",
        "name: strict\nkind: node\ntemplates:\n  - {name: main, template: 'x: {{json pool.nope}}'}\n",
    ] {
        c.add_yaml(text).unwrap();
    }
    c
}

#[test]
fn merge_order_and_list_concatenation() {
    let c = user_catalog();
    let ctx: NodeContext = fixture("node-cpu-server.yaml");
    let text = c
        .render_node(&[RecipeUse::new("a"), RecipeUse::new("b")], &ctx)
        .unwrap();
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(
        doc,
        json!({
            "runcmd": ["a-first", "a1", "b1", "a-last"],
            "packages": ["pa", "pb"],
            "apt": {"conf": "one", "sources": {"x": {"source": "sx"}, "y": {"source": "sy"}}},
            "timezone": "Europe/Madrid",
            "bootcmd": ["b-boot"]
        })
    );
    // Reversed use order: b's scalars lose, lists follow the use order; first/last stay.
    let text = c
        .render_node(&[RecipeUse::new("b"), RecipeUse::new("a")], &ctx)
        .unwrap();
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(doc["runcmd"], json!(["a-first", "b1", "a1", "a-last"]));
    assert_eq!(doc["timezone"], "UTC");
}

#[test]
fn merge_and_output_errors() {
    let c = user_catalog();
    let ctx: NodeContext = fixture("node-cpu-server.yaml");
    let err = c
        .render_node(&[RecipeUse::new("a"), RecipeUse::new("conflict")], &ctx)
        .unwrap_err();
    assert_eq!(err.label(), "MergeConflict");
    assert!(
        err.to_string()
            .contains("recipe conflict, template main: cannot merge packages"),
        "{err}"
    );
    let err = c
        .render_node(&[RecipeUse::new("scalar")], &ctx)
        .unwrap_err();
    assert_eq!(err.label(), "BadOutput");
    let err = c
        .render_node(&[RecipeUse::new("strict")], &ctx)
        .unwrap_err();
    assert_eq!(err.label(), "RenderFailed");
    assert!(
        err.to_string().contains("recipe strict, template main"),
        "{err}"
    );
}

#[test]
fn workload_output_errors_name_the_path() {
    let mut c = Catalog::empty();
    let w: WorkloadContext = fixture("workload-cpu.yaml");
    let cases = [
        (
            "apiVersion: v1\nkind: Service\nmetadata: {}\n",
            "document 1: metadata.name",
        ),
        (
            "kind: Service\nmetadata: {name: x}\n",
            "document 1: apiVersion",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n---\n[1]\n",
            "document 2",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: http}]}\n",
            "Service/x: spec.ports[0].port",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 1, selector: {}, template: {}}\n",
            "Deployment/x: spec.replica",
        ),
    ];
    for (i, (tpl, path)) in cases.iter().enumerate() {
        let recipe = format!(
            "name: w{i}\nkind: workload\ntemplates:\n  - name: objs\n    template: {}\n",
            serde_json::to_string(tpl).unwrap()
        );
        c.add_yaml(&recipe).unwrap();
        let err = c
            .render_workload(&RecipeUse::new(format!("w{i}")), &w)
            .unwrap_err();
        match &err {
            RecipeError::Output {
                recipe, path: p, ..
            } => {
                assert_eq!(recipe, &format!("w{i}"));
                assert_eq!(p, path, "{err}");
            }
            other => panic!("{other}"),
        }
    }
    // Other kinds pass through; namespace and labels are still set.
    c.add_yaml("name: cm\nkind: workload\ntemplates:\n  - name: o\n    template: |\n      apiVersion: example.com/v1\n      kind: Widget\n      metadata: {name: {{json name}}, labels: {own: mine}}\n      spec: {anything: [1, 2]}\n      ---\n")
        .unwrap();
    let objs = c.render_workload(&RecipeUse::new("cm"), &w).unwrap();
    assert_eq!(objs.len(), 1);
    assert_eq!(objs[0]["metadata"]["namespace"], "research");
    assert_eq!(objs[0]["metadata"]["labels"]["own"], "mine");
    assert_eq!(
        objs[0]["metadata"]["labels"]["kelp.imagine-ai.eu/deployment"],
        "text-classifier"
    );
}

#[test]
fn helpers_in_a_user_recipe() {
    let mut c = Catalog::empty();
    c.add_yaml(
        r#"
name: helpers
kind: node
inputs:
  - {name: remote, type: string, default: "rshare"}
  - {name: script, type: string, default: "echo 'hi'\necho two"}
templates:
  - name: t
    template: |
      write_files:
        - path: /etc/env
          content: {{json (concat "RCLONE_CONFIG_" (upper inputs.remote) "_TYPE=webdav")}}
        - path: /etc/b64
          encoding: b64
          content: {{json (b64 inputs.script)}}
        - path: /etc/script
          content: |
      {{indent 6 inputs.script}}
        - path: /etc/pool.yaml
          content: |
      {{#indent 6}}
      {{yaml pool}}
      {{/indent}}
      runcmd:
        - [sh, -c, {{json (concat "echo " (shq inputs.script))}}]
        - {{json (concat (div 8000 2) "Mi")}}
"#,
    )
    .unwrap();
    let ctx: NodeContext = fixture("node-gpu-agent.yaml");
    let text = c.render_node(&[RecipeUse::new("helpers")], &ctx).unwrap();
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let files = &doc["write_files"];
    assert_eq!(files[0]["content"], "RCLONE_CONFIG_RSHARE_TYPE=webdav");
    assert_eq!(files[1]["content"], "ZWNobyAnaGknCmVjaG8gdHdv");
    assert_eq!(files[2]["content"], "echo 'hi'\necho two\n");
    let pool: serde_json::Value =
        serde_yaml_ng::from_str(files[3]["content"].as_str().unwrap()).unwrap();
    assert_eq!(pool["name"], "gpu-t4");
    assert_eq!(pool["gpuCount"], 1);
    assert_eq!(
        doc["runcmd"][0][2],
        r#"echo 'echo '\''hi'\''
echo two'"#
    );
    assert_eq!(doc["runcmd"][1], "4000Mi");
}
