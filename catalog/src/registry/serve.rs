//! Running registry actions against the catalog: credentials, then each route's handler, then the
//! spec's headers (`Docker-Distribution-API-Version`, `Docker-Content-Digest`, `Location`, `Range`,
//! `OCI-Subject`, `Link`). Blocking store work runs off the async threads; bodies are streamed into the
//! blob store.

use std::{collections::BTreeMap, io::Read, path::PathBuf, sync::Arc};

use axum::{
    body::Body,
    http::{header, request::Parts, HeaderMap, HeaderValue, Request, Response, StatusCode},
};

use super::{
    action::{self, Access, Action, Chunk, Headers, Reference, UploadStart},
    error::{upload_range, Code, RegistryError},
    manifest::{inspect, MAX_MANIFEST, OCI_INDEX},
    publish,
};
use crate::{
    http::{download::StreamError, State},
    model::{Day, LifecycleState, Scope, Timestamp, TokenRecord, VersionRecord},
    retired::{verdict, Retired, Verdict},
    store::{parse_digest, RegistryManifest, StoreError, Upload},
    CatalogError,
};

/// The token the token endpoint hands out without credentials (reads only, when they are public).
pub const ANONYMOUS: &str = "anonymous";
/// The `service` of the token flow.
const SERVICE: &str = "kiln";

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Answer one `/v2` request.
pub(crate) async fn respond(state: Arc<State>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut r = match handle(&state, &parts, body).await {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                tracing::error!("{} {}: {}", parts.method, parts.uri.path(), e.message);
            } else {
                tracing::debug!("{} {}: {} {}", parts.method, parts.uri.path(), e.status, e.message);
            }
            error_response(&e)
        }
    };
    r.headers_mut().insert("Docker-Distribution-API-Version", HeaderValue::from_static("registry/2.0"));
    r
}

fn error_response(e: &RegistryError) -> Response<Body> {
    let mut r = Response::new(Body::from(serde_json::to_vec(&e.body()).unwrap_or_default()));
    *r.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in &e.headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.append(*k, v);
        }
    }
    r
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(state: &Arc<State>, parts: &Parts, body: Body) -> Result<Response<Body>> {
    let h = &parts.headers;
    let headers = Headers {
        content_type: header_str(h, "content-type"),
        content_length: header_str(h, "content-length"),
        content_range: header_str(h, "content-range"),
        range: header_str(h, "range"),
        allow_retired: header_str(h, action::ALLOW_RETIRED_HEADER),
    };
    let action = action::parse(parts.method.as_str(), parts.uri.path(), parts.uri.query(), &headers)?;
    let realm = format!("{}/v2/token", base_url(h));
    let creds = credentials(h)?;
    let token = match &creds {
        Credentials::Token(t) => {
            let c = Arc::clone(&state.catalog);
            let t = t.clone();
            match tokio::task::spawn_blocking(move || c.authenticate(&t)).await {
                Ok(Ok(r)) => Some(r),
                Ok(Err(CatalogError::Unauthenticated)) => {
                    return Err(challenge(&realm, &action, "the token is not a token of this catalog"))
                }
                Ok(Err(e)) => return Err(RegistryError::from(&e)),
                Err(e) => return Err(internal(e)),
            }
        }
        _ => None,
    };
    let public = state.opts.public_reads;
    match action.access() {
        Access::Own => {}
        Access::Pull => {
            if !public {
                match &token {
                    None => {
                        return Err(challenge(&realm, &action, "pulling from this catalog needs a token"))
                    }
                    Some(t) if !(t.allows(Scope::Read) || t.allows(Scope::Publish)) => {
                        return Err(denied(Scope::Read))
                    }
                    Some(_) => {}
                }
            }
        }
        Access::Push => match &token {
            None => return Err(challenge(&realm, &action, "pushing needs a token with the `publish` scope")),
            Some(t) if !t.allows(Scope::Publish) => return Err(denied(Scope::Publish)),
            Some(_) => {}
        },
    }
    let cx = Cx { state: Arc::clone(state), token };
    match action {
        Action::Base => match (&creds, &cx.token) {
            (_, Some(_)) => Ok(empty(StatusCode::OK)),
            (Credentials::Anonymous, None) if public => Ok(empty(StatusCode::OK)),
            _ => Err(challenge(&realm, &Action::Base, "authenticate with a catalog token")),
        },
        Action::Token { .. } => token_endpoint(&cx, &creds),
        Action::GetManifest { name, reference, head, allow_retired } => {
            get_manifest(&cx, name, reference, head, allow_retired).await
        }
        Action::PutManifest { name, reference, media_type, tags } => {
            put_manifest(&cx, name, reference, media_type, tags, body).await
        }
        Action::DeleteManifest { name, reference } => delete_manifest(&cx, name, reference).await,
        Action::GetBlob { name, digest, head, range } => get_blob(&cx, name, digest, head, range).await,
        Action::DeleteBlob { name, digest } => delete_blob(&cx, name, digest).await,
        Action::StartUpload { name, start, length } => start_upload(&cx, name, start, length, body).await,
        Action::UploadStatus { name, id } => {
            let size = session(&cx, &name, &id).await?;
            Ok(upload_answer(StatusCode::NO_CONTENT, &name, &id, size))
        }
        Action::PatchUpload { name, id, chunk } => {
            session(&cx, &name, &id).await?;
            let size = append(&cx, &id, chunk, body).await?;
            Ok(upload_answer(StatusCode::ACCEPTED, &name, &id, size))
        }
        Action::FinishUpload { name, id, digest, chunk } => {
            finish_upload(&cx, name, id, digest, chunk, body).await
        }
        Action::CancelUpload { name, id } => {
            session(&cx, &name, &id).await?;
            let i = id.clone();
            blocking(&cx, move |c| {
                c.blobs().upload_cancel(&i)?;
                c.meta()
                    .write(&mut |tx| tx.registry_end_upload(&i).map(|_| ()).map_err(CatalogError::from))?;
                Ok(())
            })
            .await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Action::ListTags { name, n, last } => list_tags(&cx, name, n, last).await,
        Action::Referrers { name, digest, artifact_type } => {
            referrers(&cx, name, digest, artifact_type).await
        }
    }
}

/// What a handler works with.
struct Cx {
    state: Arc<State>,
    token: Option<TokenRecord>,
}

/// Credentials of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Credentials {
    None,
    /// The anonymous token of the token flow.
    Anonymous,
    Token(String),
}

fn unauthorized(message: &str) -> RegistryError {
    RegistryError::new(Code::Unauthorized, message)
}

/// `Authorization: Basic base64(USER:TOKEN)` (the user is not looked at) or `Bearer TOKEN`.
fn credentials(h: &HeaderMap) -> Result<Credentials> {
    use base64::Engine as _;
    let Some(v) = header_str(h, "authorization") else { return Ok(Credentials::None) };
    let (scheme, value) = v.trim().split_once(' ').unwrap_or((v, ""));
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(if value == ANONYMOUS {
            Credentials::Anonymous
        } else {
            Credentials::Token(value.to_owned())
        });
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| unauthorized("Basic credentials are not base64"))?;
        let text = String::from_utf8(bytes).map_err(|_| unauthorized("Basic credentials are not UTF-8"))?;
        let (_, password) =
            text.split_once(':').ok_or_else(|| unauthorized("Basic credentials without `:`"))?;
        return Ok(match password {
            "" => Credentials::None,
            ANONYMOUS => Credentials::Anonymous,
            p => Credentials::Token(p.to_owned()),
        });
    }
    Err(unauthorized("Authorization must be Basic or Bearer"))
}

/// `http://HOST` as the client reached the server (`X-Forwarded-Proto`/`-Host` when a proxy says so).
fn base_url(h: &HeaderMap) -> String {
    let proto = header_str(h, "x-forwarded-proto").unwrap_or("http");
    let host = header_str(h, "x-forwarded-host").or_else(|| header_str(h, "host")).unwrap_or("localhost");
    format!("{proto}://{host}")
}

/// 401 with the token flow's challenge for what `action` needs.
fn challenge(realm: &str, action: &Action, message: &str) -> RegistryError {
    let mut value = format!("Bearer realm=\"{realm}\",service=\"{SERVICE}\"");
    if let Some(repo) = action.repo() {
        let actions = if action.access() == Access::Push { "push,pull" } else { "pull" };
        value.push_str(&format!(",scope=\"repository:{repo}:{actions}\""));
    }
    unauthorized(message).with_header("WWW-Authenticate", value)
}

fn denied(scope: Scope) -> RegistryError {
    RegistryError::new(Code::Denied, format!("this token lacks the `{}` scope", scope.as_str()))
}

fn internal(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::new(Code::Unsupported, e.to_string()).with_status(500)
}

/// `GET /v2/token`: the catalog token back (see the module's documentation), or `anonymous`.
fn token_endpoint(cx: &Cx, creds: &Credentials) -> Result<Response<Body>> {
    let token = match (creds, &cx.token) {
        (_, Some(_)) => match creds {
            Credentials::Token(t) => t.clone(),
            _ => unreachable!("a token record comes from a token"),
        },
        (Credentials::None | Credentials::Anonymous, None) if cx.state.opts.public_reads => {
            ANONYMOUS.to_owned()
        }
        _ => {
            return Err(unauthorized("give a catalog token as the password of HTTP Basic credentials")
                .with_header("WWW-Authenticate", format!("Basic realm=\"{SERVICE}\"")))
        }
    };
    Ok(json(StatusCode::OK, &serde_json::json!({ "token": token, "access_token": token })))
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn set(r: &mut Response<Body>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

/// Run blocking catalog work off the async threads.
async fn blocking<T: Send + 'static>(
    cx: &Cx,
    f: impl FnOnce(&crate::Catalog) -> Result<T> + Send + 'static,
) -> Result<T> {
    let c = Arc::clone(&cx.state.catalog);
    tokio::task::spawn_blocking(move || f(&c)).await.map_err(internal)?
}

/// A short read of the catalog (what a pull looks up): on this async thread when the stores are local,
/// where the queries and a small file read take microseconds, less than a handoff to a blocking thread
/// and back (which halved the manifest GETs a second); else on a blocking thread.
async fn lookup<T: Send + 'static>(
    cx: &Cx,
    f: impl FnOnce(&crate::Catalog) -> Result<T> + Send + 'static,
) -> Result<T> {
    if cx.state.catalog.quick_reads() {
        f(&cx.state.catalog)
    } else {
        blocking(cx, f).await
    }
}

/// Whether `repo` is a kiln family's repository.
fn family_of(c: &crate::Catalog, repo: &str) -> Result<Option<Arc<crate::model::FamilyState>>> {
    match c.family(repo) {
        Ok(f) => {
            recorded(c, &f)?;
            Ok(Some(f))
        }
        Err(CatalogError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Families (catalog root, name) whose versions are known to be in the registry, at that revision.
static RECORDED: std::sync::Mutex<BTreeMap<(PathBuf, String), u64>> = std::sync::Mutex::new(BTreeMap::new());

/// Make sure every version of `family` with an OCI image is registry content: versions published before
/// the catalog was a registry are recorded from their bundle's blobs the first time their family is
/// pulled from (what a publish records in its own transaction now).
fn recorded(c: &crate::Catalog, family: &crate::model::FamilyState) -> Result<()> {
    let key = (c.root().to_owned(), family.name.clone());
    if RECORDED.lock().unwrap_or_else(|e| e.into_inner()).get(&key) == Some(&family.revision) {
        return Ok(());
    }
    for v in &family.versions {
        let Some(image) = &v.image_digest else { continue };
        if c.meta().registry_manifest(&family.name, image)?.is_some() {
            continue;
        }
        let read = |rel: &str| -> std::io::Result<Vec<u8>> {
            let missing =
                || std::io::Error::new(std::io::ErrorKind::NotFound, format!("{rel} is not in the bundle"));
            let f = v.file(rel).ok_or_else(missing)?;
            let mut out = Vec::new();
            c.blobs().open(&f.digest).map_err(std::io::Error::other)?.read_to_end(&mut out)?;
            Ok(out)
        };
        let content = publish::published(v, &read)?;
        c.meta().write(&mut |tx| Ok(content.write(tx)?))?;
        tracing::info!("registry: recorded {} from its bundle", v.id());
    }
    RECORDED.lock().unwrap_or_else(|e| e.into_inner()).insert(key, family.revision);
    Ok(())
}

fn read_only(repo: &str) -> RegistryError {
    RegistryError::new(
        Code::Denied,
        format!("{repo} is a kiln family: its images are published with `kiln publish`, not pushed"),
    )
}

/// Refuse writes to a family's repository.
async fn writable(cx: &Cx, repo: &str) -> Result<()> {
    let r = repo.to_owned();
    let family = blocking(cx, move |c| Ok(c.meta().family_revision(&r)?.is_some())).await?;
    if family {
        Err(read_only(repo))
    } else {
        Ok(())
    }
}

fn manifest_unknown(name: &str, reference: &str) -> RegistryError {
    RegistryError::new(Code::ManifestUnknown, format!("{name} has no manifest {reference}"))
        .with_detail(serde_json::json!({ "name": name, "reference": reference }))
}

/// A family's version a manifest belongs to: the version or channel a tag names, or (by digest) the
/// version whose image it is (the most alive one when several versions are the same image).
fn version_of(
    family: &crate::model::FamilyState,
    reference: &Reference,
    digest: &str,
    today: Day,
) -> Option<VersionRecord> {
    let by_image = |d: &str| {
        family
            .versions
            .iter()
            .filter(|v| v.image_digest.as_deref() == Some(d))
            .min_by_key(|v| {
                let s = v.lifecycle.state_on(today);
                (
                    matches!(s, LifecycleState::EndOfLife | LifecycleState::Revoked),
                    s,
                    std::cmp::Reverse(v.version.clone()),
                )
            })
            .cloned()
    };
    match reference {
        Reference::Tag(t) => family
            .versions
            .iter()
            .find(|v| &action::version_tag(&v.version) == t && v.image_digest.as_deref() == Some(digest))
            .or_else(|| {
                let ch = family.channels.get(t)?;
                family.version(&ch.version).filter(|v| v.image_digest.as_deref() == Some(digest))
            })
            .cloned(),
        Reference::Digest(d) => by_image(d),
    }
}

/// 410 for a pull of a retired version, naming why and how to get it anyway.
fn refused(v: &VersionRecord, Retired { why, state }: Retired) -> RegistryError {
    let l = &v.lifecycle;
    RegistryError::new(
        Code::Denied,
        format!("{why}; pull it by digest with the header `Kiln-Allow-Retired: true` to get it anyway"),
    )
    .with_status(410)
    .with_detail(serde_json::json!({
        "family": v.family,
        "version": v.version.to_string(),
        "state": state,
        "end_of_life_on": l.end_of_life_on,
        "revoked": l.revoked,
    }))
}

async fn get_manifest(
    cx: &Cx,
    name: String,
    reference: Reference,
    head: bool,
    allow_retired: bool,
) -> Result<Response<Body>> {
    let today = Day::of(Timestamp::now());
    let overridden = allow_retired && matches!(reference, Reference::Digest(_));
    let (n, r) = (name.clone(), reference.clone());
    // The lookups, the lifecycle's verdict and the manifest's bytes (small: at most MAX_MANIFEST) together;
    // a refused version's bytes are not read.
    let (m, extra, bytes) = lookup(cx, move |c| {
        let family = family_of(c, &n)?;
        let digest = match &r {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(t) => match c.meta().registry_tag(&n, t)? {
                Some(d) => Some(d),
                None => family.as_ref().and_then(|f| {
                    let ch = f.channels.get(t)?;
                    f.version(&ch.version)?.image_digest.clone()
                }),
            },
        };
        let Some(digest) = digest else { return Err(manifest_unknown(&n, r.as_str())) };
        let m = c.meta().registry_manifest(&n, &digest)?.ok_or_else(|| manifest_unknown(&n, r.as_str()))?;
        let extra = match family.as_ref().and_then(|f| version_of(f, &r, &digest, today)) {
            None => Vec::new(),
            Some(v) => match verdict(&v, today, overridden) {
                Verdict::Serve(h) => h,
                Verdict::Refuse(retired) => return Err(refused(&v, retired)),
            },
        };
        let bytes = if head {
            Vec::new()
        } else {
            let mut bytes = Vec::with_capacity(usize::try_from(m.size).unwrap_or(0).min(MAX_MANIFEST));
            c.blobs().open(&m.digest)?.take(m.size).read_to_end(&mut bytes).map_err(internal)?;
            bytes
        };
        Ok((m, extra, bytes))
    })
    .await?;
    let mut r = Response::new(if head { Body::empty() } else { Body::from(bytes) });
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(m.size));
    set(&mut r, "content-type", &m.media_type);
    set(&mut r, "docker-content-digest", &m.digest);
    set(&mut r, "etag", &format!("\"{}\"", m.digest));
    for (k, v) in extra {
        set(&mut r, k, &v);
    }
    Ok(r)
}

/// The bytes of a stored blob (all of it, or the inclusive `span`), streamed.
async fn blob_body(cx: &Cx, digest: &str, span: Option<(u64, u64)>, size: u64) -> Result<Response<Body>> {
    let (start, len) = span.map_or((0, size), |(a, b)| (a, b - a + 1));
    let body = crate::http::download::stream_blob(&cx.state.catalog, None, digest, start, len)
        .await
        .map_err(|e| match e {
            StreamError::Missing => {
                RegistryError::new(Code::BlobUnknown, format!("blob {digest} is not stored"))
            }
            StreamError::Failed(message) => internal(message),
        })?;
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(r)
}

async fn get_blob(
    cx: &Cx,
    name: String,
    digest: String,
    head: bool,
    range: Option<action::ByteRange>,
) -> Result<Response<Body>> {
    let (n, d) = (name.clone(), digest.clone());
    let size = lookup(cx, move |c| {
        family_of(c, &n)?;
        if !c.meta().registry_has_blob(Some(&n), &d)? {
            return Ok(None);
        }
        Ok(c.blobs().stat(&d)?)
    })
    .await?;
    let Some(size) = size else {
        return Err(RegistryError::new(Code::BlobUnknown, format!("{name} has no blob {digest}"))
            .with_detail(serde_json::json!({ "digest": digest })));
    };
    let span = match range {
        None => None,
        Some(r) => Some(r.span(size).ok_or_else(|| {
            RegistryError::new(Code::SizeInvalid, format!("the range is outside the blob's {size} bytes"))
                .with_status(416)
                .with_header("Content-Range", format!("bytes */{size}"))
        })?),
    };
    let mut r = if head {
        let mut r = Response::new(Body::empty());
        let len = span.map_or(size, |(a, b)| b - a + 1);
        r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        r
    } else {
        blob_body(cx, &digest, span, size).await?
    };
    if let Some((a, b)) = span {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        set(&mut r, "content-range", &format!("bytes {a}-{b}/{size}"));
    }
    set(&mut r, "content-type", "application/octet-stream");
    set(&mut r, "docker-content-digest", &digest);
    set(&mut r, "accept-ranges", "bytes");
    set(&mut r, "etag", &format!("\"{digest}\""));
    Ok(r)
}

/// Stream `body` into `f`, which reads it on a blocking thread ([`crate::http::stream_into`]).
async fn stream_into<T: Send + 'static>(
    cx: &Cx,
    body: Body,
    f: impl FnOnce(&crate::Catalog, &mut dyn Read) -> Result<T> + Send + 'static,
) -> Result<T> {
    let c = Arc::clone(&cx.state.catalog);
    crate::http::stream_into(body, move |reader| f(&c, reader)).await.map_err(internal)?
}

fn location(r: &mut Response<Body>, name: &str, kind: &str, what: &str) {
    set(r, "location", &format!("/v2/{name}/{kind}/{what}"));
}

fn upload_answer(status: StatusCode, name: &str, id: &str, size: u64) -> Response<Body> {
    let mut r = empty(status);
    location(&mut r, name, "blobs/uploads", id);
    set(&mut r, "range", &upload_range(size));
    set(&mut r, "docker-upload-uuid", id);
    r
}

fn created_blob(name: &str, digest: &str) -> Response<Body> {
    let mut r = empty(StatusCode::CREATED);
    location(&mut r, name, "blobs", digest);
    set(&mut r, "docker-content-digest", digest);
    r
}

fn new_upload_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    fs_err::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).map_err(internal)?;
    Ok(hex::encode(bytes))
}

async fn start_upload(
    cx: &Cx,
    name: String,
    start: UploadStart,
    length: Option<u64>,
    body: Body,
) -> Result<Response<Body>> {
    writable(cx, &name).await?;
    match start {
        UploadStart::Monolithic { digest } => {
            let (n, d) = (name.clone(), digest.clone());
            stream_into(cx, body, move |c, reader| {
                c.blobs().put(&d, length, reader)?;
                c.meta().write(&mut |tx| Ok(tx.registry_add_blob(&n, &d)?))?;
                Ok(())
            })
            .await?;
            return Ok(created_blob(&name, &digest));
        }
        UploadStart::Mount { digest, from } => {
            let (n, d) = (name.clone(), digest.clone());
            let mounted = blocking(cx, move |c| {
                let member = c.meta().registry_has_blob(from.as_deref(), &d)?;
                if !member || c.blobs().stat(&d)?.is_none() {
                    return Ok(false);
                }
                c.meta().write(&mut |tx| Ok(tx.registry_add_blob(&n, &d)?))?;
                Ok(true)
            })
            .await?;
            if mounted {
                return Ok(created_blob(&name, &digest));
            }
        }
        UploadStart::Session => {}
    }
    let id = new_upload_id()?;
    let (n, i) = (name.clone(), id.clone());
    blocking(cx, move |c| {
        c.blobs().upload_create(&i)?;
        let u = Upload { id: i.clone(), repo: n.clone(), started_at: Timestamp::now() };
        c.meta().write(&mut |tx| Ok(tx.registry_start_upload(&u)?))?;
        Ok(())
    })
    .await?;
    Ok(upload_answer(StatusCode::ACCEPTED, &name, &id, 0))
}

/// The upload session `id` of repository `name`: its size.
async fn session(cx: &Cx, name: &str, id: &str) -> Result<u64> {
    let (n, i) = (name.to_owned(), id.to_owned());
    blocking(cx, move |c| {
        let unknown = || RegistryError::new(Code::BlobUploadUnknown, format!("{n} has no upload {i}"));
        match c.meta().registry_upload(&i)? {
            Some(u) if u.repo == n => match c.blobs().upload_size(&i)? {
                Some(size) => Ok(size),
                None => {
                    // Its bytes were swept as abandoned: the record goes too.
                    c.meta().write(&mut |tx| {
                        tx.registry_end_upload(&i).map(|_| ()).map_err(CatalogError::from)
                    })?;
                    Err(unknown())
                }
            },
            _ => Err(unknown()),
        }
    })
    .await
}

async fn append(cx: &Cx, id: &str, chunk: Chunk, body: Body) -> Result<u64> {
    let i = id.to_owned();
    stream_into(cx, body, move |c, reader| {
        Ok(c.blobs().upload_append(&i, chunk.start, chunk.length, reader)?)
    })
    .await
}

async fn finish_upload(
    cx: &Cx,
    name: String,
    id: String,
    digest: String,
    chunk: Chunk,
    body: Body,
) -> Result<Response<Body>> {
    session(cx, &name, &id).await?;
    append(cx, &id, chunk, body).await?;
    let (n, i, d) = (name.clone(), id.clone(), digest.clone());
    blocking(cx, move |c| {
        let finished = c.blobs().upload_finish(&i, &d);
        c.meta().write(&mut |tx| {
            tx.registry_end_upload(&i)?;
            if finished.is_ok() {
                tx.registry_add_blob(&n, &d)?;
            }
            Ok(())
        })?;
        finished.map(|_| ()).map_err(|e| match e {
            StoreError::BlobDigest { .. } => {
                RegistryError::new(Code::DigestInvalid, crate::http::problem::chain(&e))
                    .with_detail(serde_json::json!({ "digest": d }))
            }
            e => e.into(),
        })
    })
    .await?;
    Ok(created_blob(&name, &digest))
}

async fn delete_blob(cx: &Cx, name: String, digest: String) -> Result<Response<Body>> {
    writable(cx, &name).await?;
    let (n, d) = (name.clone(), digest.clone());
    let removed = blocking(cx, move |c| {
        let mut removed = false;
        c.meta().write(&mut |tx| {
            removed = tx.registry_delete_blob(&n, &d)?;
            Ok(())
        })?;
        Ok(removed)
    })
    .await?;
    if !removed {
        return Err(RegistryError::new(Code::BlobUnknown, format!("{name} has no blob {digest}")));
    }
    Ok(empty(StatusCode::ACCEPTED))
}

async fn put_manifest(
    cx: &Cx,
    name: String,
    reference: Reference,
    media_type: Option<String>,
    tags: Vec<String>,
    body: Body,
) -> Result<Response<Body>> {
    writable(cx, &name).await?;
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST).await.map_err(|e| {
        RegistryError::new(Code::SizeInvalid, format!("a manifest is at most {MAX_MANIFEST} bytes: {e}"))
            .with_status(413)
    })?;
    let i = inspect(&bytes, media_type.as_deref())?;
    let digest = match &reference {
        Reference::Digest(d) => {
            let (alg, _) =
                parse_digest(d).map_err(|e| RegistryError::new(Code::DigestInvalid, e.to_string()))?;
            let found = alg.digest(&bytes);
            if &found != d {
                return Err(RegistryError::new(
                    Code::DigestInvalid,
                    format!("the manifest's digest is {found}, not {d}"),
                )
                .with_detail(serde_json::json!({ "digest": d })));
            }
            found
        }
        Reference::Tag(_) => crate::store::Algorithm::Sha256.digest(&bytes),
    };
    let mut all_tags = tags;
    if let Reference::Tag(t) = &reference {
        all_tags.insert(0, t.clone());
    }
    let record = RegistryManifest {
        repo: name.clone(),
        digest: digest.clone(),
        media_type: i.media_type.clone(),
        artifact_type: i.artifact_type.clone(),
        subject: i.subject.as_ref().map(|s| s.digest.clone()),
        size: bytes.len() as u64,
        annotations: i.annotations.clone(),
        refs: i.refs(),
    };
    let subject = record.subject.clone();
    let (n, t) = (name.clone(), all_tags.clone());
    blocking(cx, move |c| {
        for b in i.blobs.iter().filter(|b| !b.foreign) {
            if !c.meta().registry_has_blob(Some(&n), &b.digest)? || c.blobs().stat(&b.digest)?.is_none() {
                return Err(RegistryError::new(
                    Code::ManifestBlobUnknown,
                    format!("the manifest refers to blob {}, which {n} does not have", b.digest),
                )
                .with_detail(serde_json::json!({ "digest": b.digest })));
            }
        }
        for m in &i.manifests {
            if c.meta().registry_manifest(&n, &m.digest)?.is_none() {
                return Err(RegistryError::new(
                    Code::ManifestBlobUnknown,
                    format!("the index refers to manifest {}, which {n} does not have", m.digest),
                )
                .with_detail(serde_json::json!({ "digest": m.digest })));
            }
        }
        c.blobs().put(&record.digest, Some(bytes.len() as u64), &mut &bytes[..])?;
        c.meta().write(&mut |tx| {
            tx.registry_put_manifest(&record)?;
            for tag in &t {
                tx.registry_set_tag(&n, tag, &record.digest)?;
            }
            Ok(())
        })?;
        Ok(())
    })
    .await?;
    let mut r = empty(StatusCode::CREATED);
    location(&mut r, &name, "manifests", &digest);
    set(&mut r, "docker-content-digest", &digest);
    if let Some(s) = &subject {
        set(&mut r, "oci-subject", s);
    }
    for t in all_tags.iter().skip(usize::from(matches!(reference, Reference::Tag(_)))) {
        if let Ok(v) = HeaderValue::from_str(t) {
            r.headers_mut().append("oci-tag", v);
        }
    }
    Ok(r)
}

async fn delete_manifest(cx: &Cx, name: String, reference: Reference) -> Result<Response<Body>> {
    writable(cx, &name).await?;
    let (n, r) = (name.clone(), reference.clone());
    let removed = blocking(cx, move |c| {
        let mut removed = false;
        c.meta().write(&mut |tx| {
            removed = match &r {
                Reference::Digest(d) => tx.registry_delete_manifest(&n, d)?,
                Reference::Tag(t) => tx.registry_delete_tag(&n, t)?,
            };
            Ok(())
        })?;
        Ok(removed)
    })
    .await?;
    if !removed {
        return Err(manifest_unknown(&name, reference.as_str()));
    }
    Ok(empty(StatusCode::ACCEPTED))
}

async fn list_tags(cx: &Cx, name: String, n: Option<usize>, last: Option<String>) -> Result<Response<Body>> {
    let repo = name.clone();
    let tags = blocking(cx, move |c| {
        let family = family_of(c, &repo)?;
        if family.is_none() && !c.meta().registry_repo_exists(&repo)? {
            return Err(RegistryError::new(Code::NameUnknown, format!("no repository {repo}"))
                .with_detail(serde_json::json!({ "name": repo })));
        }
        let mut tags = c.meta().registry_tags(&repo)?;
        if let Some(f) = family {
            // Channels are tags of the family's repository (a stored tag of the same name wins).
            tags.extend(f.channels.keys().filter(|ch| action::is_tag(ch)).cloned());
            tags.sort();
            tags.dedup();
        }
        Ok(tags)
    })
    .await?;
    let (page, more) = action::page(&tags, n, last.as_deref());
    let mut r = json(StatusCode::OK, &serde_json::json!({ "name": name, "tags": page }));
    if let (true, Some(n), Some(last)) = (more, n, page.last()) {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("n", &n.to_string())
            .append_pair("last", last)
            .finish();
        set(&mut r, "link", &format!("</v2/{name}/tags/list?{q}>; rel=\"next\""));
    }
    Ok(r)
}

async fn referrers(
    cx: &Cx,
    name: String,
    digest: String,
    artifact_type: Option<String>,
) -> Result<Response<Body>> {
    let (n, d) = (name.clone(), digest.clone());
    let list = blocking(cx, move |c| {
        family_of(c, &n)?;
        Ok(c.meta().registry_referrers(&n, &d)?)
    })
    .await?;
    let manifests: Vec<serde_json::Value> = list
        .iter()
        .filter(|m| artifact_type.is_none() || m.artifact_type == artifact_type)
        .map(|m| {
            let mut d = serde_json::json!({ "mediaType": m.media_type, "digest": m.digest, "size": m.size });
            if let Some(t) = &m.artifact_type {
                d["artifactType"] = t.clone().into();
            }
            if let Some(a) =
                m.annotations.as_deref().and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut r = json(StatusCode::OK, &index);
    set(&mut r, "content-type", OCI_INDEX);
    if artifact_type.is_some() {
        set(&mut r, "oci-filters-applied", "artifactType");
    }
    Ok(r)
}
