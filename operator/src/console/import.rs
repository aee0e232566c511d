//! TOSCA in the console: the dashboard link's templates give the deploy form its
//! defaults, and an uploaded template becomes manifests (the same `kelp import tosca`
//! does), shown first and applied as the user on confirmation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::deploy::DeployForm;
use super::pages::Current;
use crate::tosca::{self, Template};

/// The templates the AI4OS dashboard's link names, as kelp ships them.
/// (The public templates as `kelp import tosca`'s tests use them.)
const KNOWN: &[(&str, &str)] = &[
    (
        "simple-node-disk.yml",
        include_str!("../../tests/fixtures/tosca/simple-node-disk.yml"),
    ),
    (
        "ai4eoscvm.yaml",
        include_str!("../../tests/fixtures/tosca/ai4eoscvm.yaml"),
    ),
];

/// How long an import waits for its confirmation.
const IMPORT_TTL: Duration = Duration::from_secs(1800);

/// Imports shown and not yet confirmed, by token: the user they are for and the objects.
#[derive(Default)]
pub struct Pending(Mutex<HashMap<String, Shown>>);

/// An import shown: the Kubernetes user it is for, its objects, when it was shown.
type Shown = (String, Vec<Value>, Instant);

/// The image of the dashboard link's `ai4eosc_model_image`, as the ai4eosc template's
/// playbook runs it.
pub fn dashboard_image(image: &str) -> String {
    let image = image.trim();
    if image.is_empty() || image.contains('/') {
        image.to_string()
    } else {
        format!("{}{image}", tosca::map::AI4OS_PREFIX)
    }
}

/// The deploy form's defaults from the link's templates: their inputs' defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defaults {
    pub cpu: Option<String>,
    pub memory_gb: Option<String>,
    pub gpu: Option<String>,
    pub gpu_model: Option<String>,
    pub replicas: Option<String>,
}

impl Defaults {
    pub fn apply(&self, form: &mut DeployForm) {
        let set = |f: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                *f = v.clone();
            }
        };
        set(&mut form.cpu, &self.cpu);
        set(&mut form.memory_gb, &self.memory_gb);
        set(&mut form.gpu, &self.gpu);
        set(&mut form.gpu_model, &self.gpu_model);
        set(&mut form.replicas, &self.replicas);
    }
}

fn known(name: &str) -> Result<Template, String> {
    let base = name.rsplit('/').next().unwrap_or(name);
    KNOWN
        .iter()
        .find(|(n, _)| *n == base)
        .map(|(n, t)| Template {
            name: n.to_string(),
            text: t.to_string(),
        })
        .ok_or_else(|| {
            format!(
                "kelp does not know the template {name:?} (it knows {}); the form shows kelp's defaults",
                KNOWN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )
        })
}

/// The form defaults of the link's templates (`selected_tosca` and `childs`).
pub fn template_defaults(selected: &str, childs: &[String]) -> Result<Defaults, String> {
    if selected.is_empty() {
        return Ok(Defaults::default());
    }
    let mut templates = vec![known(selected)?];
    for c in childs {
        templates.push(known(c)?);
    }
    let inputs = tosca::inputs(&templates).map_err(|f| f.to_string())?;
    let get = |name: &str| {
        inputs
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.default.clone())
    };
    let text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let memory_gb = get("mem_size").and_then(|v| {
        tosca::units::bytes(&text(v))
            .ok()
            .map(|b| format!("{}", (b / 1e9 * 2.0).round() / 2.0))
    });
    let gpu_model = get("gpu_model").map(text).filter(|m| !m.is_empty());
    // The ai4eosc child's GPU switch asks for one GPU when the host's count is left at 0.
    let gpu_support = get("ai4eosc_gpu_support").is_some_and(|v| v == Value::Bool(true));
    let gpu = get("num_gpus")
        .map(text)
        .filter(|g| !(gpu_support && g == "0"))
        .or(gpu_support.then(|| "1".to_string()));
    Ok(Defaults {
        cpu: get("num_cpus").map(text),
        memory_gb,
        gpu,
        gpu_model,
        replicas: get("num_instances").map(text),
    })
}

pub async fn page(
    State(c): State<super::pages::SharedConsole>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let cur = match c.current(&headers, &uri, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    c.page(&cur, "import", json!({"title": "Import TOSCA"}))
}

/// A Secret with its given values hidden (placeholders stay, they say what to put).
fn hide_secret_values(o: &Value) -> Value {
    let mut o = o.clone();
    if o["kind"] == "Secret"
        && let Some(data) = o["stringData"].as_object_mut()
    {
        for v in data.values_mut() {
            if !v
                .as_str()
                .is_some_and(|s| s.starts_with('<') && s.ends_with('>'))
            {
                *v = json!("<given, hidden>");
            }
        }
    }
    o
}

/// The input lines shown again: those naming a password, token, secret or key left out.
fn shown_inputs(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let name = l.split('=').next().unwrap_or_default().to_lowercase();
            !["pass", "token", "secret", "key"]
                .iter()
                .any(|w| name.contains(w))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses `name=value` lines.
fn input_lines(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("input line {l:?} is not name=value"))
        })
        .collect()
}

pub async fn upload(
    State(c): State<super::pages::SharedConsole>,
    headers: HeaderMap,
    uri: Uri,
    mut form: Multipart,
) -> Response {
    let cur = match c.current(&headers, &uri, false) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (mut csrf, mut main, mut children, mut inputs) = (None, None, Vec::new(), String::new());
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return c.error(
                    StatusCode::BAD_REQUEST,
                    Some(&cur),
                    "Upload failed",
                    &e.to_string(),
                    false,
                );
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        let file = field.file_name().unwrap_or("template.yaml").to_string();
        let text = match field.text().await {
            Ok(t) => t,
            Err(e) => {
                return c.error(
                    StatusCode::BAD_REQUEST,
                    Some(&cur),
                    "Upload failed",
                    &e.to_string(),
                    false,
                );
            }
        };
        match name.as_str() {
            "_csrf" => csrf = Some(text),
            "template" if !text.trim().is_empty() => main = Some(Template { name: file, text }),
            "child" if !text.trim().is_empty() => children.push(Template { name: file, text }),
            "inputs" => inputs = text,
            _ => {}
        }
    }
    if let Err(r) = c.check_csrf(&cur, csrf.as_deref()) {
        return r;
    }
    let refuse = |errors: Vec<String>, inputs: &str| {
        let mut r = c.page(
            &cur,
            "import",
            json!({"title": "Import TOSCA", "errors": errors, "inputs": shown_inputs(inputs)}),
        );
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        r
    };
    let Some(main) = main else {
        return refuse(vec!["choose a template file".into()], &inputs);
    };
    let pairs = match input_lines(&inputs) {
        Ok(p) => p,
        Err(e) => return refuse(vec![e], &inputs),
    };
    let mut templates = vec![main];
    templates.extend(children);
    let imported = match tosca::import(&templates, &pairs, &cur.session.user.namespace) {
        Ok(i) => i,
        Err(f) => return refuse(f.errors, &inputs),
    };
    let token = super::auth::random_token();
    {
        let mut pending = c.imports.0.lock().expect("imports");
        pending.retain(|_, (_, _, at)| at.elapsed() < IMPORT_TTL);
        pending.insert(
            token.clone(),
            (
                cur.session.user.name.clone(),
                imported.manifests.clone(),
                Instant::now(),
            ),
        );
    }
    // What the page shows holds no credential: Secret values given are hidden.
    let shown = tosca::Imported {
        manifests: imported.manifests.iter().map(hide_secret_values).collect(),
        notes: imported.notes.clone(),
        warnings: imported.warnings.clone(),
    };
    let inputs = shown_inputs(&inputs);
    c.page(
        &cur,
        "import",
        json!({"title": "Import TOSCA", "inputs": inputs, "manifests": tosca::to_yaml(&shown),
            "notes": imported.notes, "warnings": imported.warnings, "token": token}),
    )
}

#[derive(Deserialize)]
pub struct ApplyForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    token: String,
}

pub async fn apply(
    State(c): State<super::pages::SharedConsole>,
    headers: HeaderMap,
    uri: Uri,
    Form(f): Form<ApplyForm>,
) -> Response {
    let cur: Current = match c.current(&headers, &uri, false) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(r) = c.check_csrf(&cur, Some(&f.csrf)) {
        return r;
    }
    let objects = {
        let mut pending = c.imports.0.lock().expect("imports");
        match pending.remove(&f.token) {
            Some((user, objects, at))
                if user == cur.session.user.name && at.elapsed() < IMPORT_TTL =>
            {
                objects
            }
            _ => {
                return c.error(
                    StatusCode::GONE,
                    Some(&cur),
                    "Import expired",
                    "This import is no longer waiting; upload the template again.",
                    false,
                );
            }
        }
    };
    let client = match c.client(&cur) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ns = cur.session.user.namespace.clone();
    // A Secret the template could only give placeholders for is not created: an existing
    // one of that name is used, else the page says which credentials are still needed.
    let secrets = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns);
    let mut missing = Vec::new();
    let mut kept = Vec::new();
    for o in objects {
        if o["kind"] == "Secret" && has_placeholders(&o) {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match secrets.get_opt(&name).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let keys: Vec<&str> = o["stringData"]
                        .as_object()
                        .map(|m| m.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    missing.push(format!("{name} (keys {})", keys.join(", ")));
                }
                Err(e) => return c.kube_error(&cur, "read your Secrets", &e),
            }
            continue;
        }
        kept.push(o);
    }
    let mut objects = kept;
    if let Err(message) = super::pages::apply_all(&client, &ns, &mut objects).await {
        return c.error(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(&cur),
            "Not created",
            &message,
            false,
        );
    }
    let made: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    let dep = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .and_then(|o| o["metadata"]["name"].as_str());
    match (dep, missing.is_empty()) {
        (Some(d), true) => Redirect::to(&format!("/deployments/{d}")).into_response(),
        (None, true) => Redirect::to("/deployments").into_response(),
        (_, false) => c.error(
            StatusCode::OK,
            Some(&cur),
            "Created, credentials needed",
            &format!(
                "Created {}. The template names no credentials, so these Secrets are still needed in {ns} before the Cluster can reach its cloud: {}.",
                made.join(", "),
                missing.join("; ")
            ),
            false,
        ),
    }
}

/// Whether a Secret template still has `<placeholder>` values.
fn has_placeholders(secret: &Value) -> bool {
    secret["stringData"].as_object().is_some_and(|m| {
        m.values().any(|v| {
            v.as_str()
                .is_some_and(|s| s.starts_with('<') && s.ends_with('>'))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_import_page_shows_no_credential() {
        let s = json!({"kind": "Secret", "stringData": {"user": "alice", "password": "hunter2-app", "refreshToken": "<your EGI Check-in refresh token>"}});
        let shown = hide_secret_values(&s).to_string();
        assert!(
            !shown.contains("hunter2-app") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(
            shown.contains("<your EGI Check-in refresh token>"),
            "{shown}"
        );
        let m = json!({"kind": "Module", "spec": {"title": "x"}});
        assert_eq!(hide_secret_values(&m), m);
        assert_eq!(
            shown_inputs("kelp.cloud=sim://\nrclone_password=hunter2\nnum_cpus=2\naccess_token=x"),
            "kelp.cloud=sim://\nnum_cpus=2"
        );
    }

    #[test]
    fn the_dashboard_image_rule() {
        assert_eq!(
            dashboard_image("ai4os-yolov8-torch"),
            "ai4oshub/ai4os-yolov8-torch"
        );
        assert_eq!(dashboard_image("deephdc/x:gpu"), "deephdc/x:gpu");
    }
}
