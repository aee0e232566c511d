//! The Module controller: validates the serving contract and the image reference and
//! resolves the CPU and GPU image references Deployments use.

use std::sync::Arc;
use std::sync::LazyLock;

use futures::StreamExt;
use kelp_crds::condition_types as ct;
use kelp_crds::{Module, ModuleSpec, ModuleStatus, ResolvedImage, ServingProtocol};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use regex::Regex;

use crate::conditions;
use crate::context::{Ctx, Result, key};

/// Runs the Module controller until `shutdown` resolves.
pub async fn run(
    ctx: Ctx,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Module> = Api::all(ctx.client.clone());
    let (store, modules) = crate::context::main_watch(
        &ctx,
        "module",
        api,
        watcher::Config::default().any_semantic(),
    );
    Controller::for_stream(modules, store)
        .with_config(crate::context::controller_config())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, crate::context::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                crate::context::log_controller_error("module", &e);
            }
        })
        .await;
}

// Docker reference grammar: [host[:port]/]path[/path...]; tags separately.
static REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$").unwrap()
});
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[\w][\w.-]{0,127}$").unwrap());

/// Checks the spec and resolves the images (pure). Every problem is reported at once,
/// joined with "; ", so a user fixes them in one edit.
pub fn resolve(spec: &ModuleSpec) -> Result<ResolvedImage, String> {
    let repo = &spec.image.repository;
    let mut errors = Vec::new();
    if repo.contains('@')
        || repo
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
    {
        errors.push(format!(
            "spec.image.repository {repo:?} must not carry a tag or digest: put the tag in spec.image.tag"
        ));
    } else if !REPOSITORY.is_match(repo) {
        errors.push(format!(
            "spec.image.repository {repo:?} is not a valid image repository (lowercase path, optional registry host)"
        ));
    }
    if !TAG.is_match(&spec.image.tag) {
        errors.push(format!(
            "spec.image.tag {:?} is not a valid image tag",
            spec.image.tag
        ));
    }
    if let Some(t) = &spec.image.gpu_tag
        && !TAG.is_match(t)
    {
        errors.push(format!("spec.image.gpuTag {t:?} is not a valid image tag"));
    }
    if spec.serving.protocol == ServingProtocol::Deepaas
        && spec.serving.ui_port == Some(spec.serving.port)
    {
        errors.push("spec.serving.uiPort must differ from spec.serving.port".into());
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(ResolvedImage {
        cpu: format!("{repo}:{}", spec.image.tag),
        gpu: format!(
            "{repo}:{}",
            spec.image.gpu_tag.as_deref().unwrap_or(&spec.image.tag)
        ),
    })
}

#[tracing::instrument(skip_all, fields(namespace = module.namespace(), name = %module.name_any(), generation = module.metadata.generation))]
async fn reconcile(module: Arc<Module>, ctx: Ctx) -> Result<Action> {
    crate::context::measured(&ctx.clone(), "module", reconcile_module(module, ctx)).await
}

async fn reconcile_module(module: Arc<Module>, ctx: Ctx) -> Result<Action> {
    let generation = module.metadata.generation;
    let mut status: ModuleStatus = module.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    match resolve(&module.spec) {
        Ok(images) => {
            status.resolved_image = Some(images.clone());
            conditions::set(
                &mut status.conditions,
                ct::READY,
                true,
                "Resolved",
                format!("CPU image {}, GPU image {}", images.cpu, images.gpu),
                generation,
            );
            conditions::set(
                &mut status.conditions,
                ct::STALLED,
                false,
                "Resolved",
                "",
                generation,
            );
        }
        Err(msg) => {
            status.resolved_image = None;
            conditions::set(
                &mut status.conditions,
                ct::READY,
                false,
                "InvalidSpec",
                msg.clone(),
                generation,
            );
            conditions::set(
                &mut status.conditions,
                ct::STALLED,
                true,
                "InvalidSpec",
                msg.clone(),
                generation,
            );
            if module.status.as_ref() != Some(&status) {
                ctx.event(module.as_ref(), true, "InvalidSpec", "Validate", msg)
                    .await;
            }
        }
    }
    conditions::set(
        &mut status.conditions,
        ct::RECONCILING,
        false,
        "Reconciled",
        "",
        generation,
    );
    if module.status.as_ref() != Some(&status) {
        crate::context::apply_status(&ctx, &*module, &status).await?;
    }
    ctx.reset_backoff(&key(module.as_ref()));
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ModuleSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn resolves_cpu_and_gpu_images() {
        let s = spec(
            "{title: t, summary: s, image: {repository: ai4oshub/ai4os-yolov8-torch, tag: latest, gpuTag: gpu}}",
        );
        let r = resolve(&s).unwrap();
        assert_eq!(r.cpu, "ai4oshub/ai4os-yolov8-torch:latest");
        assert_eq!(r.gpu, "ai4oshub/ai4os-yolov8-torch:gpu");
        let s = spec(
            "{title: t, summary: s, image: {repository: registry.example.org:5000/team/model, tag: v1}}",
        );
        assert_eq!(
            resolve(&s).unwrap().gpu,
            "registry.example.org:5000/team/model:v1"
        );
    }

    #[test]
    fn rejects_bad_references_naming_the_field() {
        for (yaml, field) in [
            (
                "{title: t, summary: s, image: {repository: ai4oshub/Model}}",
                "spec.image.repository",
            ),
            (
                "{title: t, summary: s, image: {repository: 'ai4oshub/model:gpu'}}",
                "spec.image.repository",
            ),
            (
                "{title: t, summary: s, image: {repository: ai4oshub/model, tag: 'a b'}}",
                "spec.image.tag",
            ),
            (
                "{title: t, summary: s, image: {repository: ai4oshub/model, gpuTag: '-x'}}",
                "spec.image.gpuTag",
            ),
            (
                "{title: t, summary: s, image: {repository: m}, serving: {port: 5000, uiPort: 5000}}",
                "spec.serving.uiPort",
            ),
        ] {
            let err = resolve(&spec(yaml)).unwrap_err();
            assert!(err.contains(field), "{yaml}: {err}");
        }
    }

    #[test]
    fn reports_every_image_error_at_once() {
        let err = resolve(&spec(
            "{title: t, summary: s, image: {repository: 'Ai4oshub/Model:v1', tag: 'a b', gpuTag: '-x'}}",
        ))
        .unwrap_err();
        let parts: Vec<&str> = err.split("; ").collect();
        assert_eq!(parts.len(), 3, "{err}");
        assert!(parts[0].starts_with("spec.image.repository"), "{err}");
        assert!(parts[1].starts_with("spec.image.tag"), "{err}");
        assert!(parts[2].starts_with("spec.image.gpuTag"), "{err}");
    }
}
