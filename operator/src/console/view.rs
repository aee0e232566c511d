//! The console's pages: handlebars templates compiled into the binary, rendered from JSON.
//! Handlebars escapes every `{{value}}` for HTML, so nothing a user or the cluster wrote
//! can inject markup.

use handlebars::Handlebars;
use serde_json::Value;

const TEMPLATES: &[(&str, &str)] = &[
    ("layout", include_str!("templates/layout.hbs")),
    ("error", include_str!("templates/error.hbs")),
    ("modules", include_str!("templates/modules.hbs")),
    ("deploy", include_str!("templates/deploy.hbs")),
    ("deployments", include_str!("templates/deployments.hbs")),
    ("rows", include_str!("templates/rows.hbs")),
    ("detail", include_str!("templates/detail.hbs")),
    ("detail_live", include_str!("templates/detail_live.hbs")),
    ("import", include_str!("templates/import.hbs")),
];

/// The compiled templates.
pub struct Views(Handlebars<'static>);

impl Views {
    pub fn new() -> anyhow::Result<Views> {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(false);
        for (name, text) in TEMPLATES {
            hb.register_template_string(name, *text)
                .map_err(|e| anyhow::anyhow!("console template {name}: {e}"))?;
        }
        Ok(Views(hb))
    }

    /// Renders template `name` with `data`; a rendering error becomes a short page.
    pub fn render(&self, name: &str, data: &Value) -> String {
        self.0.render(name, data).unwrap_or_else(|e| {
            tracing::error!(template = name, error = %e, "console template failed");
            "<!doctype html><title>kelp</title><p>This page could not be shown.</p>".into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_template_compiles_and_escapes() {
        let v = Views::new().unwrap();
        let html = v.render(
            "error",
            &json!({"title": "x", "heading": "<b>", "message": "<script>alert(1)</script>"}),
        );
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>alert"), "{html}");
    }
}
