//! The catalog's HTTP API (axum): `kiln catalog serve`.
//!
//! Every request is parsed into a typed [`action::Action`] first ([`action::parse`]); then the token is
//! checked against the scope the action needs; then the action runs on a blocking thread against the
//! [`Catalog`]. Errors are problem documents ([`problem::Problem`]). The API is described by
//! `catalog/openapi.json`, served at `/api/v1/openapi.json` and checked against these routes in tests.

pub mod action;
pub mod download;
pub mod problem;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode},
    Router,
};
use futures_util::StreamExt as _;

use self::{
    action::{Action, NotesFormat},
    problem::Problem,
};
use crate::{
    model::{Day, Scope, Timestamp, TokenRecord},
    store::AuditQuery,
    Catalog, CatalogError,
};

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Largest JSON body the API reads (a publish lists every file of a bundle).
const MAX_JSON_BODY: usize = 16 << 20;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Reads (families, versions, files, resolve) without a token. Off: they need the `read` scope.
    pub public_reads: bool,
    /// How often unreferenced blobs are collected, and how old they must be.
    pub gc_every: Duration,
    pub gc_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self { public_reads: true, gc_every: Duration::from_secs(3600), gc_grace: Duration::from_secs(3600) }
    }
}

/// What every handler of the server shares.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) opts: ServeOptions,
}

/// The API as an axum router (for `serve` and tests).
pub fn router(catalog: Arc<Catalog>, opts: ServeOptions) -> Router {
    let state = Arc::new(State { catalog, opts });
    Router::new().fallback(move |req: Request<Body>| {
        let state = Arc::clone(&state);
        async move { handle(state, req).await }
    })
}

/// Serve the API on `listener` until the process ends; collects garbage every `gc_every`.
pub async fn serve(
    catalog: Arc<Catalog>,
    listener: tokio::net::TcpListener,
    opts: ServeOptions,
) -> std::io::Result<()> {
    let gc_catalog = Arc::clone(&catalog);
    let (every, grace) = (opts.gc_every, opts.gc_grace);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let c = Arc::clone(&gc_catalog);
            match tokio::task::spawn_blocking(move || c.gc(grace)).await {
                Ok(Ok(r)) => tracing::info!(
                    "gc: removed {} blob(s) ({} bytes), {} upload(s), {} staging folder(s), {} boot cache folder(s)",
                    r.blobs_removed,
                    r.bytes_removed,
                    r.uploads_removed,
                    r.staging_removed,
                    r.boot_cache_removed
                ),
                Ok(Err(e)) => tracing::warn!("gc: {}", problem::chain(&e)),
                Err(e) => tracing::warn!("gc: {e}"),
            }
        }
    });
    // Without TCP_NODELAY, an answer written in two parts (the headers, then a streamed file) waits for the
    // client's delayed ACK of the first: ~40 ms added to every file download on a kept-alive connection.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, router(catalog, opts).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown())
        .await
}

/// SIGINT or SIGTERM: stop taking connections, finish the requests in flight.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Serve on `listen` from a runtime of its own, calling `on_ready` with the bound address (port 0 picks a
/// free one) before the first request.
pub fn run_blocking(
    catalog: Arc<Catalog>,
    listen: &str,
    opts: ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        on_ready(listener.local_addr()?);
        serve(catalog, listener, opts).await
    })
}

pub(crate) fn problem_response(p: &Problem) -> Response<Body> {
    let mut r = Response::new(Body::from(serde_json::to_vec(p).unwrap_or_default()));
    *r.status_mut() = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    if let Some(allow) = p.allow.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
        r.headers_mut().insert(header::ALLOW, allow);
    }
    r
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn text_response(content_type: &'static str, text: String) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Run blocking catalog work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Problem::from(&e)),
        Err(e) => Err(Problem::new(500, "Internal error", e.to_string())),
    }
}

async fn handle(state: Arc<State>, req: Request<Body>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match respond(state, req).await {
        Ok(r) => r,
        Err(p) => {
            if p.status >= 500 {
                tracing::error!("{method} {path}: {}", p.detail);
            } else {
                tracing::debug!("{method} {path}: {} {}", p.status, p.detail);
            }
            problem_response(&p)
        }
    }
}

async fn respond(state: Arc<State>, req: Request<Body>) -> Result<Response<Body>, Problem> {
    // The catalog's other surfaces (registry API, boot, simplestreams, web pages) each parse their own
    // requests into typed actions; the JSON API below is `/api/v1` and `/healthz`.
    let p = req.uri().path();
    if p == "/v2" || p.starts_with("/v2/") {
        return Ok(crate::registry::respond(state, req).await);
    }
    let (parts, body) = req.into_parts();
    if crate::web::is_page_path(parts.uri.path()) {
        return Ok(crate::web::respond(state, &parts).await);
    }
    let method = parts.method.as_str();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    if crate::boot::action::handles(&path) {
        let retired =
            parts.headers.get(crate::boot::action::ALLOW_RETIRED_HEADER).and_then(|v| v.to_str().ok());
        let action = crate::boot::action::parse(method, &path, query.as_deref(), retired)?;
        authorize_scope(&state, (!state.opts.public_reads).then_some(Scope::Read), &parts.headers).await?;
        return crate::boot::run(&state, action, &parts.headers).await;
    }
    // Blob uploads stream; other bodies are small JSON documents.
    let is_upload = parts.method == Method::PUT && path.starts_with(&format!("{}/blobs/", action::API));
    let (body_bytes, stream) = if is_upload {
        (Bytes::new(), Some(body))
    } else {
        let b = axum::body::to_bytes(body, MAX_JSON_BODY).await.map_err(|e| {
            Problem::new(413, "Payload too large", format!("body over {MAX_JSON_BODY} bytes: {e}"))
        })?;
        (b, None)
    };
    let action = action::parse(method, &path, query.as_deref(), &body_bytes)?;
    let token = authorize(&state, &action, &parts.headers).await?;
    let actor = token.as_ref().map_or_else(|| "anonymous".to_owned(), |t| format!("token:{}", t.name));
    let head = parts.method == Method::HEAD;
    run(&state, action, actor, stream, &parts.headers, head).await
}

/// Check the request's token against what the action needs.
async fn authorize(
    state: &State,
    action: &Action,
    headers: &HeaderMap,
) -> Result<Option<TokenRecord>, Problem> {
    let needed = match action.scope() {
        Some(s) => Some(s),
        None if action.is_read() && !state.opts.public_reads => Some(Scope::Read),
        None => None,
    };
    authorize_scope(state, needed, headers).await
}

/// The request's token, required to have `needed` when given.
async fn authorize_scope(
    state: &State,
    needed: Option<Scope>,
    headers: &HeaderMap,
) -> Result<Option<TokenRecord>, Problem> {
    let token = bearer(headers).map(str::to_owned);
    let record = match token {
        Some(t) => {
            let c = Arc::clone(&state.catalog);
            Some(blocking(move || c.authenticate(&t)).await?)
        }
        None => None,
    };
    if let Some(scope) = needed {
        let Some(r) = &record else {
            return Err(Problem::from(&CatalogError::Unauthenticated));
        };
        if !r.allows(scope) {
            return Err(Problem::from(&CatalogError::Forbidden { scope }));
        }
    }
    Ok(record)
}

/// Stream `body` into `f`, which reads it on a blocking thread (blob uploads here and in the registry); what
/// `f` returned, or why its thread failed. A body that breaks off is an error (`ConnectionAborted`) to `f`'s
/// reads; when `f` stops reading, the rest of the body is not read.
pub(crate) async fn stream_into<T: Send + 'static>(
    body: Body,
    f: impl FnOnce(&mut dyn std::io::Read) -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let worker = tokio::task::spawn_blocking(move || f(&mut ChannelReader { rx, current: Bytes::new() }));
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let item = frame.map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e));
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    worker.await
}

/// The blocking side of [`stream_into`]: the body's frames as a reader.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    current: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// A stored file with the shared download behaviour (ranges, conditionals, digests; `head`: headers only).
async fn file_response(
    state: &State,
    file: download::Served,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response<Body>, Problem> {
    download::serve(&state.catalog, &file, head, headers).await
}

fn served(digest: String, size: u64, content_type: &'static str, at: Option<Timestamp>) -> download::Served {
    download::Served { digest, size, content_type, last_modified: at, path: None }
}

pub(crate) fn content_type_of(path: &str) -> &'static str {
    if path.ends_with(".json") || path.ends_with(".jsonl") {
        "application/json"
    } else if path.ends_with(".xml") {
        "application/xml"
    } else if path.ends_with(".sig") || path.ends_with(".log") || path.ends_with(".pub") {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

async fn run(
    state: &State,
    action: Action,
    actor: String,
    stream: Option<Body>,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, Problem> {
    let c = Arc::clone(&state.catalog);
    let now = Timestamp::now();
    Ok(match action {
        Action::Health => match tokio::task::spawn_blocking(move || c.check()).await {
            Ok(Ok(())) => json_response(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            Ok(Err(e)) => {
                tracing::warn!("health check: {}", problem::chain(&e));
                return Err(Problem::new(503, "Unavailable", problem::chain(&e)));
            }
            Err(e) => return Err(Problem::new(500, "Internal error", e.to_string())),
        },
        Action::OpenApi => text_response("application/json", OPENAPI.to_owned()),
        Action::ListFamilies => {
            let families = blocking(move || Ok(c.meta().families()?)).await?;
            json_response(StatusCode::OK, &serde_json::json!({ "families": families }))
        }
        Action::GetFamily { family } => {
            let f = blocking(move || c.family(&family)).await?;
            let summary = crate::model::FamilySummary {
                name: f.name.clone(),
                versions: f.versions.len(),
                latest: f.versions.last().map(|v| v.version.clone()),
                channels: f.channels.iter().map(|(k, ch)| (k.clone(), ch.version.clone())).collect(),
            };
            json_response(StatusCode::OK, &summary)
        }
        Action::ListVersions { family } => {
            let f = blocking(move || c.family(&family)).await?;
            json_response(StatusCode::OK, &versions_json(&f, Day::of(now)))
        }
        Action::GetVersion { family, version } => {
            let v = blocking(move || c.version(&family, &version)).await?;
            json_response(StatusCode::OK, &version_json(&v, Day::of(now)))
        }
        Action::GetManifest { family, version } => {
            let v = blocking(move || c.version(&family, &version)).await?;
            let file = served(
                v.manifest_digest.clone(),
                manifest_size(&v),
                "application/json",
                Some(v.published_at),
            );
            file_response(state, file, head, headers).await?
        }
        Action::GetFile { family, version, path } => {
            let v = blocking(move || c.version(&family, &version)).await?;
            let Some(f) = v.file(&path) else {
                return Err(Problem::not_found(format!("{} has no file {path}", v.id())));
            };
            let file = served(f.digest.clone(), f.size, content_type_of(&path), Some(v.published_at));
            file_response(state, file, head, headers).await?
        }
        Action::GetReleaseNotes { family, version, format } => {
            let (fam, ver) = (family.clone(), version.clone());
            let notes = blocking(move || {
                c.version(&fam, &ver)?;
                c.meta()
                    .notes(&fam, &ver)?
                    .ok_or_else(|| CatalogError::not_found(format!("release notes of {fam}@{ver}")))
            })
            .await?;
            match format {
                NotesFormat::Markdown => text_response("text/markdown; charset=utf-8", notes.markdown),
                NotesFormat::Html => text_response("text/html; charset=utf-8", notes.html),
                NotesFormat::Json => json_response(StatusCode::OK, &notes),
            }
        }
        Action::ListChannels { family } => {
            let f = blocking(move || c.family(&family)).await?;
            json_response(StatusCode::OK, &channels_json(&f))
        }
        Action::Promote { family, channel, version } => {
            let moved = blocking(move || c.promote(&family, &channel, &version, &actor, now)).await?;
            json_response(StatusCode::OK, &serde_json::json!({ "changed": moved.is_some(), "move": moved }))
        }
        Action::ChangeLifecycle { family, version, change } => {
            let (v, flagged) =
                blocking(move || c.change_lifecycle(&family, &version, &change, &actor, now)).await?;
            json_response(
                StatusCode::OK,
                &serde_json::json!({ "version": v.version, "lifecycle": v.lifecycle, "state": v.lifecycle.state_on(Day::of(now)), "flagged": flagged }),
            )
        }
        Action::Resolve { family, request } => {
            let json = blocking(move || c.resolve_json(&family, &request, Day::of(now))).await?;
            let mut r = Response::new(Body::from(Bytes::from_owner(json)));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Action::Audit { family, version, before, limit } => {
            let entries =
                blocking(move || Ok(c.meta().audit(&AuditQuery { family, version, before, limit })?)).await?;
            json_response(StatusCode::OK, &serde_json::json!({ "entries": entries }))
        }
        Action::HeadBlob { digest } => {
            let d = digest.clone();
            let size = blocking(move || Ok(c.blobs().stat(&d)?)).await?;
            let Some(size) = size else {
                return Err(Problem::not_found(format!("blob {digest}")));
            };
            file_response(state, served(digest, size, "application/octet-stream", None), true, headers)
                .await?
        }
        Action::GetBlob { digest } => {
            let d = digest.clone();
            let size = blocking(move || Ok(c.blobs().stat(&d)?)).await?;
            let Some(size) = size else {
                return Err(Problem::not_found(format!("blob {digest}")));
            };
            file_response(state, served(digest, size, "application/octet-stream", None), head, headers)
                .await?
        }
        Action::PutBlob { digest } => {
            let size = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let d = digest.clone();
            let body = stream.unwrap_or_else(Body::empty);
            let stored = match stream_into(body, move |reader| c.blobs().put(&d, size, reader)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(Problem::from(&CatalogError::from(e))),
                Err(e) => return Err(Problem::new(500, "Internal error", e.to_string())),
            };
            json_response(StatusCode::CREATED, &serde_json::json!({ "digest": digest, "size": stored }))
        }
        Action::Publish { request } => {
            let outcome = blocking(move || c.publish(&request, &actor, now)).await?;
            let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
            json_response(
                status,
                &serde_json::json!({
                    "created": outcome.created,
                    "version": version_json(&outcome.version, Day::of(now)),
                }),
            )
        }
        Action::ListTokens => {
            let tokens = blocking(move || Ok(c.meta().tokens()?)).await?;
            json_response(StatusCode::OK, &serde_json::json!({ "tokens": tokens }))
        }
        Action::CreateToken { name, scopes } => {
            let (token, record) = blocking(move || c.create_token(&name, &scopes, &actor, now)).await?;
            json_response(StatusCode::CREATED, &serde_json::json!({ "token": token, "record": record }))
        }
        Action::RevokeToken { id } => {
            blocking(move || c.revoke_token(&id, &actor, now)).await?;
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Action::Gc { grace_secs } => {
            let report = blocking(move || c.gc(Duration::from_secs(grace_secs))).await?;
            json_response(StatusCode::OK, &report)
        }
    })
}

/// A version as the API shows it: the record and its state on `today`.
/// `GET …/versions`: the family's versions, newest first, with their state on `today`.
pub fn versions_json(f: &crate::model::FamilyState, today: Day) -> serde_json::Value {
    let list: Vec<_> = f
        .versions
        .iter()
        .rev()
        .map(|v| {
            serde_json::json!({
                "version": v.version,
                "state": v.lifecycle.state_on(today),
                "published_at": v.published_at,
                "manifest_digest": v.manifest_digest,
                "certified": v.certified,
            })
        })
        .collect();
    serde_json::json!({ "family": f.name, "versions": list })
}

/// `GET …/channels`: the family's channels with their history.
pub fn channels_json(f: &crate::model::FamilyState) -> serde_json::Value {
    serde_json::json!({ "family": f.name, "channels": f.channels.values().collect::<Vec<_>>() })
}

/// `GET …/versions/V`: the version record with its state on `today`.
pub fn version_json(v: &crate::model::VersionRecord, today: Day) -> serde_json::Value {
    let mut value = serde_json::to_value(v).unwrap_or_default();
    if let Some(o) = value.as_object_mut() {
        o.insert("state".into(), serde_json::to_value(v.lifecycle.state_on(today)).unwrap_or_default());
    }
    value
}

fn manifest_size(v: &crate::model::VersionRecord) -> u64 {
    v.file(kiln_blueprint::manifest::MANIFEST_FILE).map_or(0, |f| f.size)
}
