//! The recipe catalog of a running operator: the built-in recipes plus users' recipes from
//! ConfigMaps labelled `kelp.imagine-ai.eu/recipe: "true"` in the operator's namespace.
//!
//! A user recipe is validated when loaded. A broken one is not loaded (never half-applied):
//! it gets a Warning Event on its ConfigMap, and every Cluster or Deployment that uses a
//! recipe of that name reports it in a condition until it is fixed.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kelp_recipes::{Catalog, RecipeError};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

/// The label that marks a recipe ConfigMap.
pub const RECIPE_LABEL: &str = "kelp.imagine-ai.eu/recipe";
/// The ConfigMap data key holding the recipe YAML.
pub const RECIPE_KEY: &str = "recipe.yaml";

/// The current catalog, and what is wrong with the user recipes that did not load.
pub struct Recipes {
    catalog: RwLock<Arc<Catalog>>,
    /// Recipe name (or ConfigMap name when the YAML has none) -> error.
    broken: RwLock<BTreeMap<String, String>>,
    changed: watch::Sender<u64>,
}

impl Default for Recipes {
    fn default() -> Self {
        Self {
            catalog: RwLock::new(Arc::new(Catalog::builtin())),
            broken: RwLock::default(),
            changed: watch::channel(0).0,
        }
    }
}

/// One ConfigMap's recipe, loaded or not.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub configmap: String,
    pub name: String,
    pub error: Option<String>,
}

impl Recipes {
    /// The catalog to render with.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap().clone()
    }

    /// Why the user recipe `name` did not load, when it did not.
    pub fn broken(&self, name: &str) -> Option<String> {
        self.broken.read().unwrap().get(name).cloned()
    }

    /// The first broken recipe among `names`, as a RecipeError naming it.
    pub fn check<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<(), RecipeError> {
        for name in names {
            if let Some(message) = self.broken(name) {
                return Err(RecipeError::Invalid {
                    recipe: name.to_string(),
                    message,
                });
            }
        }
        Ok(())
    }

    /// Ticks whenever the catalog changes (controllers re-reconcile everything then).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Rebuilds the catalog from the recipe ConfigMaps (name -> recipe YAML).
    pub fn load(&self, configmaps: &BTreeMap<String, Option<String>>) -> Vec<Loaded> {
        let mut catalog = Catalog::builtin();
        let mut broken = BTreeMap::new();
        let mut loaded = Vec::new();
        for (cm, text) in configmaps {
            let name = text
                .as_deref()
                .and_then(|t| serde_yaml_ng::from_str::<serde_json::Value>(t).ok())
                .and_then(|v| v["name"].as_str().map(String::from))
                .unwrap_or_else(|| cm.clone());
            let result = match text {
                None => Err(format!("ConfigMap {cm} has no data key {RECIPE_KEY:?}")),
                Some(t) => catalog.add_yaml(t).map_err(|e| e.to_string()),
            };
            let error = result
                .err()
                .map(|e| format!("user recipe from ConfigMap {cm} is invalid: {e}"));
            if let Some(e) = &error {
                broken.insert(name.clone(), e.clone());
            }
            loaded.push(Loaded {
                configmap: cm.clone(),
                name,
                error,
            });
        }
        *self.catalog.write().unwrap() = Arc::new(catalog);
        *self.broken.write().unwrap() = broken;
        self.changed.send_modify(|n| *n += 1);
        loaded
    }
}

/// A stream that yields whenever the catalog changes after now.
pub fn changes(ctx: &crate::context::Ctx) -> impl futures::Stream<Item = ()> + Send + 'static {
    let mut rx = ctx.recipes.subscribe();
    rx.mark_unchanged();
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

/// Keeps `ctx.recipes` in step with the recipe ConfigMaps of `namespace`.
pub async fn watch_configmaps(ctx: crate::context::Ctx, client: Client, namespace: String) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(&format!("{RECIPE_LABEL}=true"));
    let mut current: BTreeMap<String, ConfigMap> = BTreeMap::new();
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listing: Option<BTreeMap<String, ConfigMap>> = None;
    ctx.health.expect("recipes");
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "watching recipe ConfigMaps");
                continue;
            }
        };
        match event {
            watcher::Event::Init => {
                listing = Some(BTreeMap::new());
                continue;
            }
            watcher::Event::InitApply(cm) => {
                if let Some(l) = listing.as_mut() {
                    l.insert(cm.name_any(), cm);
                }
                continue;
            }
            watcher::Event::InitDone => {
                current = listing.take().unwrap_or_default();
                ctx.health.synced("recipes");
            }
            watcher::Event::Apply(cm) => {
                current.insert(cm.name_any(), cm);
            }
            watcher::Event::Delete(cm) => {
                current.remove(&cm.name_any());
            }
        }
        let texts: BTreeMap<String, Option<String>> = current
            .iter()
            .map(|(name, cm)| {
                let text = cm.data.as_ref().and_then(|d| d.get(RECIPE_KEY).cloned());
                (name.clone(), text)
            })
            .collect();
        for l in ctx.recipes.load(&texts) {
            match &l.error {
                Some(e) => {
                    tracing::warn!(configmap = %l.configmap, error = %e, "user recipe not loaded");
                    if let Some(cm) = current.get(&l.configmap) {
                        ctx.event(cm, true, "RecipeInvalid", "LoadRecipe", e.clone())
                            .await;
                    }
                }
                None => {
                    tracing::info!(configmap = %l.configmap, recipe = %l.name, "user recipe loaded")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: hello
description: says hello
version: 1.0.0
kind: node
inputs:
  - {name: greeting, type: string, default: hello}
templates:
  - name: main
    template: |
      runcmd:
        - [echo, {{json inputs.greeting}}]
"#;

    #[test]
    fn good_recipes_load_and_broken_ones_are_reported_not_loaded() {
        let r = Recipes::default();
        let mut rx = r.subscribe();
        let mut cms = BTreeMap::new();
        cms.insert("hello-cm".to_string(), Some(GOOD.to_string()));
        cms.insert(
            "typo-cm".to_string(),
            Some(
                GOOD.replace("name: hello", "name: typo")
                    .replace("type: string", "type: strng"),
            ),
        );
        cms.insert("empty-cm".to_string(), None);
        let loaded = r.load(&cms);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert!(r.catalog().get("hello").is_some());
        assert!(r.catalog().get("typo").is_none(), "never half-applied");
        assert!(r.catalog().get("base").is_some(), "built-ins stay");
        let typo = loaded.iter().find(|l| l.configmap == "typo-cm").unwrap();
        assert_eq!(typo.name, "typo");
        assert!(typo.error.as_deref().unwrap().contains("typo-cm"));
        assert!(r.broken("typo").is_some());
        assert!(r.broken("empty-cm").unwrap().contains("recipe.yaml"));
        let err = r.check(["base", "typo"]).unwrap_err();
        assert!(err.to_string().contains("typo"), "{err}");
        // Fixed: loads, no longer broken.
        cms.insert(
            "typo-cm".to_string(),
            Some(GOOD.replace("name: hello", "name: typo")),
        );
        r.load(&cms);
        assert!(r.catalog().get("typo").is_some());
        assert!(r.check(["typo"]).is_ok());
    }
}
