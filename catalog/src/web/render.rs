//! The web pages' HTML: the views of [`super::view`] rendered with the minijinja templates in
//! `catalog/templates/web/` (carried in the binary), every value HTML-escaped. Pure.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use super::view::{ErrorView, FamilyView, IndexView, VersionView};

/// Every template, by the name the others refer to it with.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html.j2", include_str!("../../templates/web/base.html.j2")),
    ("macros.html.j2", include_str!("../../templates/web/macros.html.j2")),
    ("index.html.j2", include_str!("../../templates/web/index.html.j2")),
    ("family.html.j2", include_str!("../../templates/web/family.html.j2")),
    ("version.html.j2", include_str!("../../templates/web/version.html.j2")),
    ("error.html.j2", include_str!("../../templates/web/error.html.j2")),
];

/// A template that does not render (a bug of the templates, not of the request).
#[derive(Debug, thiserror::Error)]
#[error("rendering the web page template {template}")]
pub struct RenderError {
    pub template: &'static str,
    #[source]
    pub source: minijinja::Error,
}

fn environment() -> Result<Environment<'static>, RenderError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_formatter(crate::notes::html_formatter);
    for (name, source) in TEMPLATES {
        env.add_template(name, source).map_err(|source| RenderError { template: name, source })?;
    }
    Ok(env)
}

fn render(template: &'static str, view: &impl Serialize) -> Result<String, RenderError> {
    let err = |source| RenderError { template, source };
    let env = environment()?;
    let html = env.get_template(template).and_then(|t| t.render(view)).map_err(err)?;
    Ok(html)
}

pub fn index(view: &IndexView) -> Result<String, RenderError> {
    render("index.html.j2", view)
}

pub fn family(view: &FamilyView) -> Result<String, RenderError> {
    render("family.html.j2", view)
}

pub fn version(view: &VersionView) -> Result<String, RenderError> {
    render("version.html.j2", view)
}

pub fn error(view: &ErrorView) -> Result<String, RenderError> {
    render("error.html.j2", view)
}
