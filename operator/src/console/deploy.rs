//! The deploy form, pure: what the researcher filled in becomes the manifests to apply
//! (Secrets for the credentials typed in, the Module when the image has none yet, a new
//! Cluster when one is asked for, the Deployment), or errors naming the form's fields.
//! Nothing here talks to Kubernetes; the page applies the result as the user.

use serde::Deserialize;
use serde_json::{Value, json};

/// The annotation on the Cluster and Secrets the console created for a Deployment: the
/// Deployment's name. The delete page offers to remove them with it.
pub const CREATED_FOR: &str = "kelp.imagine-ai.eu/console-created-for";
/// The field manager of everything the console applies.
pub const MANAGER: &str = "kelp-console";

/// The deploy form, as posted. Every field is text, as a browser sends it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeployForm {
    #[serde(rename = "_csrf")]
    pub csrf: String,
    pub name: String,
    /// A Module in the user's namespace or the catalogue.
    pub module: String,
    /// An image without a Module yet (from the dashboard link).
    pub image: String,
    /// `existing` or `new`.
    pub target: String,
    pub cluster: String,
    /// `sim`, `egi`, `openstack` or `ec2`.
    pub cloud: String,
    pub egi_site: String,
    pub egi_vo: String,
    pub egi_refresh_token: String,
    pub egi_client_id: String,
    pub os_auth_url: String,
    pub os_region: String,
    pub os_credential_id: String,
    pub os_credential_secret: String,
    pub ec2_region: String,
    pub ec2_access_key_id: String,
    pub ec2_secret_access_key: String,
    pub cpu: String,
    pub memory_gb: String,
    pub gpu: String,
    pub gpu_model: String,
    pub replicas: String,
    pub storage_url: String,
    pub storage_user: String,
    pub storage_password: String,
}

impl DeployForm {
    /// The form with every credential field emptied: what may be shown again in a page.
    pub fn without_credentials(&self) -> DeployForm {
        DeployForm {
            egi_refresh_token: String::new(),
            os_credential_secret: String::new(),
            ec2_secret_access_key: String::new(),
            storage_password: String::new(),
            ..self.clone()
        }
    }
}

/// A field the researcher has to correct, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// What the form's Module is: one that exists (in the user's namespace or the
/// catalogue), or an image to make one for.
#[derive(Clone, Debug, PartialEq)]
pub enum ModuleChoice {
    /// A Module of the user's namespace.
    Own(String),
    /// A catalogue Module, copied into the user's namespace (a Deployment's moduleRef is
    /// in its own namespace). Its spec as JSON.
    Catalogue(String, Value),
    /// A new Module for this image.
    Image(String),
}

/// What the deploy form becomes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifests {
    /// In apply order: Secrets, Module, Cluster, Deployment.
    pub objects: Vec<Value>,
    pub deployment: String,
    /// The new Cluster's name, if one is made.
    pub new_cluster: Option<String>,
}

/// A Module name for an image: its last path segment, without tag, as a DNS label.
pub fn module_name_for_image(image: &str) -> String {
    let repo = image_repository(image);
    let last = repo.rsplit('/').next().unwrap_or(&repo);
    let mut s: String = last
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.truncate(50);
    let s = s.trim_matches('-').to_string();
    if s.is_empty() { "module".into() } else { s }
}

/// An image reference's repository (without tag or digest).
pub fn image_repository(image: &str) -> String {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some((repo, tag)) if !tag.contains('/') => repo.to_string(),
        _ => image.to_string(),
    }
}

/// An image reference's tag, if it has one.
pub fn image_tag(image: &str) -> Option<String> {
    let repo = image_repository(image);
    image
        .strip_prefix(&repo)
        .and_then(|t| t.strip_prefix(':'))
        .map(String::from)
}

fn number<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
    errors: &mut Vec<FieldError>,
    field: &'static str,
    label: &str,
    text: &str,
    default: T,
    min: T,
    max: T,
) -> T {
    let text = text.trim();
    if text.is_empty() {
        return default;
    }
    match text.parse::<T>() {
        Ok(v) if v >= min && v <= max => v,
        _ => {
            errors.push(err(
                field,
                format!("{label} must be a number from {min} to {max}, not {text:?}"),
            ));
            default
        }
    }
}

fn dns_label_error(field: &'static str, what: &str, name: &str, max: usize) -> Option<FieldError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    (!ok).then(|| {
        err(
            field,
            format!(
                "{what} must be 1 to {max} lowercase letters, digits or dashes, starting and ending with a letter or digit (not {name:?})"
            ),
        )
    })
}

fn required(errors: &mut Vec<FieldError>, field: &'static str, label: &str, value: &str) {
    if value.trim().is_empty() {
        errors.push(err(field, format!("{label} is required")));
    }
}

/// The resources the form asks for: (cpu, memory MB, gpu, gpu model).
pub fn resources(
    form: &DeployForm,
    errors: &mut Vec<FieldError>,
) -> (u32, u64, u32, Option<String>) {
    let cpu = number(errors, "cpu", "CPUs", &form.cpu, 1u32, 1, 512);
    let gb = number(
        errors,
        "memory_gb",
        "Memory (GB)",
        &form.memory_gb,
        2f64,
        0.5,
        4096.0,
    );
    let gpu = number(errors, "gpu", "GPUs", &form.gpu, 0u32, 0, 16);
    let model = Some(form.gpu_model.trim().to_string()).filter(|m| !m.is_empty() && gpu > 0);
    (cpu, (gb * 1000.0).round() as u64, gpu, model)
}

/// Builds the manifests of a filled-in form for namespace `ns`. `with_secrets` false
/// leaves the Secrets out (the price preview needs no credentials). `vos` are the VOs
/// the user may choose for an EGI Cluster (empty: any).
pub fn manifests(
    form: &DeployForm,
    module: &ModuleChoice,
    ns: &str,
    vos: &[String],
    allow_sim: bool,
    with_secrets: bool,
) -> Result<Manifests, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = form.name.trim().to_string();
    if let Some(e) = dns_label_error("name", "The name", &name, 40) {
        errors.push(e);
    }
    let (cpu, memory_mb, gpu, gpu_model) = resources(form, &mut errors);
    let replicas = number(
        &mut errors,
        "replicas",
        "Replicas",
        &form.replicas,
        1i64,
        0,
        50,
    );
    let mut objects = Vec::new();
    let mut secret = |suffix: &str, data: Value| -> String {
        let secret_name = format!("{name}-{suffix}");
        if with_secrets {
            objects.push(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": secret_name, "namespace": ns,
                    "labels": {"app.kubernetes.io/managed-by": MANAGER},
                    "annotations": {CREATED_FOR: name}},
                "type": "Opaque",
                "stringData": data,
            }));
        }
        secret_name
    };

    // Storage: a Nextcloud folder mounted at /storage.
    let storage_url = form.storage_url.trim();
    let mut storage = Vec::new();
    if !storage_url.is_empty() {
        if !storage_url.starts_with("https://") {
            errors.push(err(
                "storage_url",
                "The Nextcloud URL must start with https://",
            ));
        }
        if with_secrets {
            required(
                &mut errors,
                "storage_user",
                "The Nextcloud user",
                &form.storage_user,
            );
            required(
                &mut errors,
                "storage_password",
                "The Nextcloud app password",
                &form.storage_password,
            );
        }
        let s = secret(
            "storage",
            json!({"user": form.storage_user.trim(), "password": form.storage_password}),
        );
        storage.push(
            json!({"name": "rshare", "webdav": {"url": storage_url, "vendor": "nextcloud",
            "credentialsSecretRef": {"name": s}}, "mountPath": "/storage"}),
        );
    }

    // Where it runs.
    let mut new_cluster = None;
    let cluster_name = match form.target.as_str() {
        "existing" => {
            required(&mut errors, "cluster", "The Cluster", &form.cluster);
            form.cluster.trim().to_string()
        }
        "new" => {
            let cloud = match form.cloud.as_str() {
                "sim" if allow_sim => Some(json!({"sim": {"latencyMs": 200}})),
                "sim" => {
                    errors.push(err(
                        "cloud",
                        "this console does not offer the simulated cloud",
                    ));
                    None
                }
                "egi" => {
                    required(&mut errors, "egi_site", "The EGI site", &form.egi_site);
                    required(&mut errors, "egi_vo", "The VO", &form.egi_vo);
                    if !vos.is_empty() && !vos.iter().any(|v| v == form.egi_vo.trim()) {
                        errors.push(err(
                            "egi_vo",
                            format!(
                                "you are not a member of VO {:?} (yours: {})",
                                form.egi_vo,
                                vos.join(", ")
                            ),
                        ));
                    }
                    if with_secrets {
                        required(
                            &mut errors,
                            "egi_refresh_token",
                            "The Check-in refresh token",
                            &form.egi_refresh_token,
                        );
                    }
                    let client = Some(form.egi_client_id.trim())
                        .filter(|c| !c.is_empty())
                        .unwrap_or("token-portal");
                    let s = secret(
                        "egi-checkin",
                        json!({"refreshToken": form.egi_refresh_token.trim(), "clientId": client}),
                    );
                    Some(
                        json!({"egi": {"site": form.egi_site.trim(), "vo": form.egi_vo.trim(),
                        "credentialsSecretRef": {"name": s}}}),
                    )
                }
                "openstack" => {
                    required(
                        &mut errors,
                        "os_auth_url",
                        "The Keystone URL",
                        &form.os_auth_url,
                    );
                    if with_secrets {
                        required(
                            &mut errors,
                            "os_credential_id",
                            "The application credential ID",
                            &form.os_credential_id,
                        );
                        required(
                            &mut errors,
                            "os_credential_secret",
                            "The application credential secret",
                            &form.os_credential_secret,
                        );
                    }
                    let s = secret(
                        "openstack",
                        json!({"applicationCredentialId": form.os_credential_id.trim(),
                            "applicationCredentialSecret": form.os_credential_secret}),
                    );
                    let mut os = json!({"authUrl": form.os_auth_url.trim(), "credentialsSecretRef": {"name": s}});
                    if !form.os_region.trim().is_empty() {
                        os["region"] = json!(form.os_region.trim());
                    }
                    Some(json!({"openstack": os}))
                }
                "ec2" => {
                    required(
                        &mut errors,
                        "ec2_region",
                        "The AWS region",
                        &form.ec2_region,
                    );
                    if with_secrets {
                        required(
                            &mut errors,
                            "ec2_access_key_id",
                            "The access key ID",
                            &form.ec2_access_key_id,
                        );
                        required(
                            &mut errors,
                            "ec2_secret_access_key",
                            "The secret access key",
                            &form.ec2_secret_access_key,
                        );
                    }
                    let s = secret(
                        "aws",
                        json!({"accessKeyId": form.ec2_access_key_id.trim(),
                            "secretAccessKey": form.ec2_secret_access_key}),
                    );
                    Some(
                        json!({"ec2": {"region": form.ec2_region.trim(), "credentialsSecretRef": {"name": s}}}),
                    )
                }
                other => {
                    errors.push(err("cloud", format!("choose a cloud (not {other:?})")));
                    None
                }
            };
            if let Some(cloud) = cloud {
                let mut machine = json!({
                    // Headroom for the system and the storage mount beside the module.
                    "cpu": cpu + 1,
                    "memoryMB": memory_mb + 2000,
                });
                if gpu > 0 {
                    let mut g = json!({"count": gpu, "vendor": "NVIDIA"});
                    if let Some(m) = &gpu_model {
                        g["model"] = json!(m);
                    }
                    machine["gpu"] = g;
                }
                let mut pool = json!({
                    "name": "main",
                    "replicas": replicas.max(1),
                    "machine": machine,
                });
                if gpu > 0 {
                    pool["taints"] = json!([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]);
                }
                objects.push(json!({
                    "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Cluster",
                    "metadata": {"name": name, "namespace": ns,
                        "labels": {"app.kubernetes.io/managed-by": MANAGER},
                        "annotations": {CREATED_FOR: name}},
                    "spec": {
                        "cloud": cloud,
                        // One machine is a whole cluster: the k3s server runs on the
                        // pool's first machine, as IM's single-VM template does.
                        "kubernetes": {"mode": "Provision", "controlPlane": {"pool": "main"}},
                        "nodePools": [pool],
                        "deletionPolicy": "Delete",
                    }
                }));
                new_cluster = Some(name.clone());
            }
            name.clone()
        }
        _ => {
            errors.push(err("target", "choose an existing Cluster or a new one"));
            String::new()
        }
    };

    // The Module.
    let module_name = match module {
        ModuleChoice::Own(m) => m.clone(),
        ModuleChoice::Catalogue(m, spec) => {
            objects.push(json!({
                "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Module",
                "metadata": {"name": m, "namespace": ns,
                    "labels": {"app.kubernetes.io/managed-by": MANAGER}},
                "spec": spec,
            }));
            m.clone()
        }
        ModuleChoice::Image(image) => {
            let repo = image_repository(image);
            if repo.trim().is_empty() {
                errors.push(err("module", "choose a module"));
            }
            let m = module_name_for_image(image);
            let mut img = json!({"repository": repo});
            if let Some(t) = image_tag(image) {
                img["tag"] = json!(t);
            }
            objects.push(json!({
                "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Module",
                "metadata": {"name": m, "namespace": ns,
                    "labels": {"app.kubernetes.io/managed-by": MANAGER}},
                "spec": {
                    "title": m,
                    "summary": format!("The image {image}, from the deploy link"),
                    "image": img,
                    "resources": {"cpu": cpu, "memoryMB": memory_mb, "gpu": gpu},
                }
            }));
            m
        }
    };

    let mut spec = json!({
        "moduleRef": {"name": module_name},
        "clusterRef": {"name": cluster_name},
        "replicas": replicas,
        "resources": {"cpu": cpu, "memoryMB": memory_mb, "gpu": gpu},
        "expose": {"public": true},
    });
    if !storage.is_empty() {
        spec["storage"] = json!(storage);
    }
    objects.push(json!({
        "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": MANAGER}},
        "spec": spec,
    }));
    if !errors.is_empty() {
        return Err(errors);
    }
    // The typed API is the last word on what the form made.
    for o in &objects {
        if o["kind"] != "Secret"
            && let Err(e) = kelp_crds::KelpResource::from_value(o.clone())
        {
            return Err(vec![err("name", e.to_string())]);
        }
    }
    Ok(Manifests {
        objects,
        deployment: name,
        new_cluster,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> DeployForm {
        DeployForm {
            name: "fish".into(),
            target: "new".into(),
            cloud: "ec2".into(),
            ec2_region: "us-east-1".into(),
            ec2_access_key_id: "AKIAEXAMPLE".into(),
            ec2_secret_access_key: "s3cr3t-value".into(),
            cpu: "4".into(),
            memory_gb: "8".into(),
            gpu: "1".into(),
            gpu_model: "T4".into(),
            replicas: "1".into(),
            storage_url: "https://share.example.org/remote.php/dav/files/alice".into(),
            storage_user: "alice".into(),
            storage_password: "app-password".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_ec2_cluster_with_storage() {
        let m = manifests(
            &form(),
            &ModuleChoice::Own("yolov8".into()),
            "kelp-u-a",
            &[],
            false,
            true,
        )
        .unwrap();
        let kinds: Vec<_> = m
            .objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["Secret", "Secret", "Cluster", "Deployment"]);
        let cluster = &m.objects[2];
        assert_eq!(
            cluster["spec"]["cloud"]["ec2"]["credentialsSecretRef"]["name"],
            "fish-aws"
        );
        assert_eq!(
            cluster["spec"]["nodePools"][0]["machine"]["gpu"]["model"],
            "T4"
        );
        assert_eq!(cluster["metadata"]["annotations"][CREATED_FOR], "fish");
        let dep = &m.objects[3];
        assert_eq!(
            dep["spec"]["storage"][0]["webdav"]["credentialsSecretRef"]["name"],
            "fish-storage"
        );
        assert_eq!(dep["spec"]["resources"]["memoryMB"], 8000);
        // Credentials are only in the Secrets.
        for o in &m.objects[2..] {
            let text = o.to_string();
            assert!(
                !text.contains("s3cr3t-value") && !text.contains("app-password"),
                "{text}"
            );
        }
        assert_eq!(m.new_cluster.as_deref(), Some("fish"));
    }

    #[test]
    fn the_preview_needs_no_credentials() {
        let f = DeployForm {
            ec2_secret_access_key: String::new(),
            storage_password: String::new(),
            ..form()
        };
        assert!(manifests(&f, &ModuleChoice::Own("m".into()), "ns", &[], false, true).is_err());
        let m = manifests(&f, &ModuleChoice::Own("m".into()), "ns", &[], false, false).unwrap();
        assert!(m.objects.iter().all(|o| o["kind"] != "Secret"));
    }

    #[test]
    fn errors_name_the_fields() {
        let f = DeployForm {
            name: "Fish_1".into(),
            cpu: "lots".into(),
            cloud: "egi".into(),
            egi_vo: "vo.other.eu".into(),
            ..form()
        };
        let e = manifests(
            &f,
            &ModuleChoice::Own("m".into()),
            "ns",
            &["vo.imagine-ai.eu".into()],
            false,
            true,
        )
        .unwrap_err();
        let fields: Vec<_> = e.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["name", "cpu", "egi_site", "egi_vo", "egi_refresh_token"],
            "{e:?}"
        );
        assert!(e[3].message.contains("vo.imagine-ai.eu"), "{e:?}");
    }

    #[test]
    fn sim_only_when_offered_and_existing_clusters() {
        let f = DeployForm {
            cloud: "sim".into(),
            ..form()
        };
        let e = manifests(&f, &ModuleChoice::Own("m".into()), "ns", &[], false, false).unwrap_err();
        assert_eq!(e[0].field, "cloud");
        assert!(manifests(&f, &ModuleChoice::Own("m".into()), "ns", &[], true, false).is_ok());
        let f = DeployForm {
            target: "existing".into(),
            cluster: "c1".into(),
            storage_url: String::new(),
            ..form()
        };
        let m = manifests(&f, &ModuleChoice::Own("m".into()), "ns", &[], false, true).unwrap();
        assert_eq!(m.objects.len(), 1);
        assert_eq!(m.objects[0]["spec"]["clusterRef"]["name"], "c1");
        assert_eq!(m.new_cluster, None);
    }

    #[test]
    fn images_become_modules() {
        assert_eq!(
            module_name_for_image("ai4oshub/ai4os-yolov8-torch:latest"),
            "ai4os-yolov8-torch"
        );
        assert_eq!(
            image_repository("registry.example:5000/a/b"),
            "registry.example:5000/a/b"
        );
        assert_eq!(
            image_tag("registry.example:5000/a/b:gpu").as_deref(),
            Some("gpu")
        );
        assert_eq!(image_tag("a/b"), None);
        let f = DeployForm {
            target: "existing".into(),
            cluster: "c".into(),
            storage_url: String::new(),
            ..form()
        };
        let m = manifests(
            &f,
            &ModuleChoice::Image("ai4oshub/fish:1.0".into()),
            "ns",
            &[],
            false,
            true,
        )
        .unwrap();
        assert_eq!(m.objects[0]["kind"], "Module");
        assert_eq!(
            m.objects[0]["spec"]["image"],
            json!({"repository": "ai4oshub/fish", "tag": "1.0"})
        );
        assert_eq!(m.objects[1]["spec"]["moduleRef"]["name"], "fish");
    }
}
