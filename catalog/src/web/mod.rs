//! The catalog's web pages, served by `kiln catalog serve` beside the JSON API: `/` (every family),
//! `/families/FAMILY` (versions on a lifecycle timeline, channels and their history) and
//! `/families/FAMILY/VERSION` (release notes, artifacts and signatures, parent and descendants, commands
//! to pull, boot and verify it). Server-rendered HTML with inline CSS; no scripts.
//!
//! A request is parsed into a typed [`action::PageRequest`] first; reads follow the server's
//! `public_reads` (a token with the `read` scope otherwise); then, on a blocking thread, the model is read,
//! turned into a view ([`view`], pure) and rendered ([`render`], pure). Errors are HTML pages too.

pub mod action;
pub mod render;
pub mod timeline;
pub mod view;

use std::sync::Arc;

use axum::{
    body::Body,
    http::{header, request::Parts, HeaderMap, HeaderValue, Response, StatusCode},
};

pub use action::is_page_path;
use action::{Page, PageError, PageRequest};
use view::{Families, Site};

use crate::{
    http::{problem::chain, State},
    model::{Day, FamilyState, Scope, Timestamp},
    Catalog, CatalogError,
};

/// The pages load nothing but themselves: no scripts at all, styles and SVG inline.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

fn internal(e: &CatalogError) -> PageError {
    PageError::Internal { detail: chain(e) }
}

/// Run blocking catalog work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PageError> + Send + 'static,
) -> Result<T, PageError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(PageError::Internal { detail: e.to_string() }))
}

/// Public reads, or a token with the `read` scope.
async fn authorize(state: &State, token: Option<String>) -> Result<(), PageError> {
    if state.opts.public_reads {
        return Ok(());
    }
    let token = token.ok_or(PageError::Unauthorized)?;
    let c = Arc::clone(&state.catalog);
    let record = blocking(move || {
        c.authenticate(&token).map_err(|e| match e {
            CatalogError::Unauthenticated => PageError::Unauthorized,
            e => internal(&e),
        })
    })
    .await?;
    if record.allows(Scope::Read) {
        Ok(())
    } else {
        Err(PageError::Forbidden)
    }
}

/// Every family of the catalog, by name (one that disappears while they are read is left out).
fn all_families(c: &Catalog) -> Result<Vec<Arc<FamilyState>>, PageError> {
    let names = c.meta().families().map_err(|e| internal(&e.into()))?;
    let mut out = Vec::with_capacity(names.len());
    for s in names {
        match c.family(&s.name) {
            Ok(f) => out.push(f),
            Err(CatalogError::NotFound { .. }) => {}
            Err(e) => return Err(internal(&e)),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn no_family(name: &str) -> PageError {
    PageError::NotFound { detail: format!("there is no family named `{name}`") }
}

/// Read what the page shows, make its view and render it.
fn build(c: &Catalog, req: PageRequest, public_reads: bool, today: Day) -> Result<String, PageError> {
    let render_err = |e: render::RenderError| PageError::Internal { detail: chain(&e) };
    let all = all_families(c)?;
    let refs: Vec<&FamilyState> = all.iter().map(|f| &**f).collect();
    let families = Families(&refs);
    match req.page {
        Page::Index => render::index(&view::index(&refs, today)).map_err(render_err),
        Page::Family { family } => {
            let f = refs.iter().find(|f| f.name == family).ok_or_else(|| no_family(&family))?;
            render::family(&view::family(f, families, today)).map_err(render_err)
        }
        Page::Version { family, version } => {
            let f = refs.iter().find(|f| f.name == family).ok_or_else(|| no_family(&family))?;
            let v = f.version(&version).ok_or_else(|| PageError::NotFound {
                detail: format!("{family} has no version {version}"),
            })?;
            let origin = req.origin.ok_or_else(|| PageError::BadRequest {
                field: "Host".into(),
                detail: "the page's commands name the catalog's address: send a Host header".into(),
            })?;
            let notes = c.meta().notes(&family, &version).map_err(|e| internal(&e.into()))?;
            let site = Site { host: origin.host, tls: origin.tls, public_reads };
            let input = view::VersionInput {
                family: f,
                version: v,
                notes: notes.as_ref(),
                all: families,
                site: &site,
            };
            render::version(&view::version(&input, today)).map_err(render_err)
        }
    }
}

fn html_response(status: u16, html: String) -> Response<Body> {
    let mut r = Response::new(Body::from(html));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn error_response(e: &PageError, today: Day) -> Response<Body> {
    let html = render::error(&view::error(e, today)).unwrap_or_else(|r| {
        tracing::error!("{}", chain(&r));
        format!("<!DOCTYPE html>\n<title>{}</title>\n<p>{}</p>\n", e.status(), e.title())
    });
    let mut r = html_response(e.status(), html);
    match e {
        PageError::Unauthorized => {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"kiln catalog\""));
        }
        PageError::MethodNotAllowed { .. } => {
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        _ => {}
    }
    r
}

/// Answer a request for a page (a path [`is_page_path`] takes).
pub(crate) async fn respond(state: Arc<State>, parts: &Parts) -> Response<Body> {
    let today = Day::of(Timestamp::now());
    let header = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let origin = action::OriginHeaders {
        host: header(header::HOST).or_else(|| parts.uri.authority().map(|a| a.as_str())),
        forwarded_host: header(header::HeaderName::from_static("x-forwarded-host")),
        forwarded_proto: header(header::HeaderName::from_static("x-forwarded-proto")),
    };
    let parsed = action::parse(parts.method.as_str(), parts.uri.path(), parts.uri.query(), origin);
    let result = match parsed {
        Ok(req) => match authorize(&state, bearer(&parts.headers)).await {
            Ok(()) => {
                let c = Arc::clone(&state.catalog);
                let public_reads = state.opts.public_reads;
                blocking(move || build(&c, req, public_reads, today)).await
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(html) => html_response(200, html),
        Err(e) => {
            if e.status() >= 500 {
                tracing::error!("{} {}: {e}", parts.method, parts.uri.path());
            }
            error_response(&e, today)
        }
    }
}

#[cfg(test)]
mod tests;
