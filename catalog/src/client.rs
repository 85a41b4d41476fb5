//! A catalog as the CLI reaches it: a local folder (the embedded catalog, opened directly: whoever can
//! write the folder administers it) or a URL (the HTTP API, with the token from `KILN_TOKEN`). Both answer
//! with the API's JSON, so `kiln … --json` prints the same documents either way.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde_json::Value;

use crate::{
    bundle,
    http::{action::API, problem::chain},
    known_issues::KnownIssue,
    lifecycle::LifecycleChange,
    model::{Day, Scope, Timestamp},
    resolve::ResolveRequest,
    service::{PublishOutcome, PublishRequest},
    store::AuditQuery,
    Catalog, CatalogError,
};

/// Why a catalog call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{method} {url}: {source}")]
    Http {
        method: &'static str,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// The server answered with a problem document.
    #[error(transparent)]
    Problem(Box<RemoteProblem>),
    #[error("{method} {url}: unexpected answer: {reason}")]
    Answer { method: &'static str, url: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The HTTP status (or the status the local error maps to).
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Problem(p) => Some(p.status),
            Self::Catalog(e) => Some(crate::http::problem::Problem::from(e).status),
            _ => None,
        }
    }
}

/// A problem document a server answered with.
#[derive(Debug, thiserror::Error)]
#[error("{method} {url}: {status} {title}: {detail}")]
pub struct RemoteProblem {
    pub method: &'static str,
    pub url: String,
    pub status: u16,
    pub title: String,
    pub detail: String,
    pub field: Option<String>,
    pub missing: Vec<String>,
}

/// Progress of a publish's uploads.
pub trait Progress {
    /// About to upload `total` bytes (files the catalog lacks).
    fn start(&self, total: u64);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// No progress display.
#[derive(Debug)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// A catalog to talk to.
#[derive(Debug)]
pub enum Client {
    Local { catalog: Arc<Catalog>, actor: String },
    Remote(Remote),
}

/// The HTTP API of a catalog.
#[derive(Debug)]
pub struct Remote {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

fn to_value(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Client {
    /// `target` is a URL (`http://…`) or a catalog folder (created when missing).
    pub fn open(target: &str, token: Option<String>) -> Result<Self, ClientError> {
        if target.starts_with("http://") || target.starts_with("https://") {
            let config = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(10)))
                .build();
            return Ok(Self::Remote(Remote {
                base: target.trim_end_matches('/').to_owned(),
                token: token.filter(|t| !t.trim().is_empty()),
                agent: ureq::Agent::new_with_config(config),
            }));
        }
        let catalog = Catalog::open(Path::new(target))?;
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        Ok(Self::Local { catalog: Arc::new(catalog), actor: format!("local:{user}") })
    }

    /// Publish the signed, certified build output in `dir`.
    pub fn publish(
        &self,
        dir: &Path,
        known_issues: Vec<KnownIssue>,
        progress: &dyn Progress,
    ) -> Result<PublishOutcome, ClientError> {
        match self {
            Self::Local { catalog, actor } => {
                Ok(catalog.publish_dir(dir, known_issues, actor, Timestamp::now())?)
            }
            Self::Remote(r) => r.publish(dir, known_issues, progress),
        }
    }

    pub fn families(&self) -> Result<Value, ClientError> {
        match self {
            Self::Local { catalog, .. } => {
                Ok(serde_json::json!({ "families": catalog.meta().families().map_err(CatalogError::from)? }))
            }
            Self::Remote(r) => r.get_json(&format!("{API}/families")),
        }
    }

    pub fn versions(&self, family: &str) -> Result<Value, ClientError> {
        match self {
            Self::Local { catalog, .. } => {
                Ok(crate::http::versions_json(&*catalog.family(family)?, Day::of(Timestamp::now())))
            }
            Self::Remote(r) => r.get_json(&format!("{API}/families/{family}/versions")),
        }
    }

    pub fn version(&self, family: &str, version: &semver::Version) -> Result<Value, ClientError> {
        match self {
            Self::Local { catalog, .. } => {
                Ok(crate::http::version_json(&catalog.version(family, version)?, Day::of(Timestamp::now())))
            }
            Self::Remote(r) => r.get_json(&format!("{API}/families/{family}/versions/{version}")),
        }
    }

    pub fn channels(&self, family: &str) -> Result<Value, ClientError> {
        match self {
            Self::Local { catalog, .. } => Ok(crate::http::channels_json(&*catalog.family(family)?)),
            Self::Remote(r) => r.get_json(&format!("{API}/families/{family}/channels")),
        }
    }

    /// Release notes as `markdown`, `html` or `json`.
    pub fn notes(
        &self,
        family: &str,
        version: &semver::Version,
        format: &str,
    ) -> Result<String, ClientError> {
        match self {
            Self::Local { catalog, .. } => {
                catalog.version(family, version)?;
                let n =
                    catalog.meta().notes(family, version).map_err(CatalogError::from)?.ok_or_else(|| {
                        CatalogError::not_found(format!("release notes of {family}@{version}"))
                    })?;
                Ok(match format {
                    "html" => n.html,
                    "json" => serde_json::to_string_pretty(&n).unwrap_or_default(),
                    _ => n.markdown,
                })
            }
            Self::Remote(r) => {
                let url = format!(
                    "{}{API}/families/{family}/versions/{version}/release-notes?format={format}",
                    r.base
                );
                let resp = r.call("GET", &url, |req| req.call())?;
                r.text(resp, "GET", &url)
            }
        }
    }

    pub fn promote(
        &self,
        family: &str,
        channel: &str,
        version: &semver::Version,
    ) -> Result<Value, ClientError> {
        match self {
            Self::Local { catalog, actor } => {
                let moved = catalog.promote(family, channel, version, actor, Timestamp::now())?;
                Ok(serde_json::json!({ "changed": moved.is_some(), "move": moved }))
            }
            Self::Remote(r) => r.send_json(
                "PUT",
                &format!("{API}/families/{family}/channels/{channel}"),
                &serde_json::json!({ "version": version }),
            ),
        }
    }

    pub fn lifecycle(
        &self,
        family: &str,
        version: &semver::Version,
        change: &LifecycleChange,
    ) -> Result<Value, ClientError> {
        match self {
            Self::Local { catalog, actor } => {
                let now = Timestamp::now();
                let (v, flagged) = catalog.change_lifecycle(family, version, change, actor, now)?;
                Ok(serde_json::json!({
                    "version": v.version, "lifecycle": v.lifecycle, "state": v.lifecycle.state_on(Day::of(now)), "flagged": flagged,
                }))
            }
            Self::Remote(r) => r.send_json(
                "PATCH",
                &format!("{API}/families/{family}/versions/{version}/lifecycle"),
                &to_value(change),
            ),
        }
    }

    pub fn resolve(&self, family: &str, req: &ResolveRequest) -> Result<Value, ClientError> {
        match self {
            Self::Local { catalog, .. } => {
                Ok(to_value(catalog.resolve(family, req, Day::of(Timestamp::now()))?))
            }
            Self::Remote(r) => {
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.append_pair("family", family);
                for c in &req.contracts {
                    q.append_pair("contract", &c.to_string());
                }
                if let Some(ch) = &req.channel {
                    q.append_pair("channel", ch);
                }
                if let Some(d) = req.supported_until {
                    q.append_pair("supported_until", &d.to_string());
                }
                if !req.include.is_empty() {
                    let inc: Vec<String> = req.include.iter().map(|i| i.to_string()).collect();
                    q.append_pair("include", &inc.join(","));
                }
                q.append_pair("limit", &req.limit.to_string());
                r.get_json(&format!("{API}/resolve?{}", q.finish()))
            }
        }
    }

    pub fn audit(&self, query: &AuditQuery) -> Result<Value, ClientError> {
        match self {
            Self::Local { catalog, .. } => {
                Ok(serde_json::json!({ "entries": catalog.meta().audit(query).map_err(CatalogError::from)? }))
            }
            Self::Remote(r) => {
                let mut q = form_urlencoded::Serializer::new(String::new());
                if let Some(f) = &query.family {
                    q.append_pair("family", f);
                }
                if let Some(v) = &query.version {
                    q.append_pair("version", &v.to_string());
                }
                if let Some(b) = query.before {
                    q.append_pair("before", &b.to_string());
                }
                q.append_pair("limit", &query.limit.to_string());
                r.get_json(&format!("{API}/audit?{}", q.finish()))
            }
        }
    }

    pub fn create_token(&self, name: &str, scopes: &[Scope]) -> Result<Value, ClientError> {
        match self {
            Self::Local { catalog, actor } => {
                let (token, record) = catalog.create_token(name, scopes, actor, Timestamp::now())?;
                Ok(serde_json::json!({ "token": token, "record": record }))
            }
            Self::Remote(r) => r.send_json(
                "POST",
                &format!("{API}/tokens"),
                &serde_json::json!({ "name": name, "scopes": scopes }),
            ),
        }
    }

    pub fn tokens(&self) -> Result<Value, ClientError> {
        match self {
            Self::Local { catalog, .. } => {
                Ok(serde_json::json!({ "tokens": catalog.meta().tokens().map_err(CatalogError::from)? }))
            }
            Self::Remote(r) => r.get_json(&format!("{API}/tokens")),
        }
    }

    pub fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        match self {
            Self::Local { catalog, actor } => Ok(catalog.revoke_token(id, actor, Timestamp::now())?),
            Self::Remote(r) => {
                let url = format!("{}{API}/tokens/{id}", r.base);
                let resp = r.call("DELETE", &url, |req| req.call())?;
                r.check(resp, "DELETE", &url).map(|_| ())
            }
        }
    }

    pub fn gc(&self, grace: Duration) -> Result<Value, ClientError> {
        match self {
            Self::Local { catalog, .. } => Ok(to_value(catalog.gc(grace)?)),
            Self::Remote(r) => {
                r.send_json("POST", &format!("{API}/gc?grace_secs={}", grace.as_secs()), &Value::Null)
            }
        }
    }
}

/// Which version of a family a build starts FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseSelector {
    /// An exact version (`1.2.0`) or a range (`^1`).
    Version(String),
    Channel(String),
}

/// The image layout [`Client::fetch_layout`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedLayout {
    pub version: semver::Version,
    /// The image's tag in the layout (its version).
    pub tag: String,
    /// The image manifest digest.
    pub image_digest: String,
}

fn pick_version(
    family: &str,
    selector: &BaseSelector,
    versions: &Value,
    channels: &Value,
) -> Result<semver::Version, ClientError> {
    let bad = |m: String| ClientError::Catalog(CatalogError::not_found(m));
    let list: Vec<(semver::Version, String)> = versions
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let ver = v.get("version")?.as_str()?.parse().ok()?;
            Some((ver, v.get("state")?.as_str()?.to_owned()))
        })
        .collect();
    match selector {
        BaseSelector::Channel(c) => {
            let v = channels
                .get(c)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("family {family} has no channel `{c}`")))?;
            let v: semver::Version =
                v.parse().map_err(|_| bad(format!("channel {c} of {family} names `{v}`")))?;
            match list.iter().find(|(x, _)| *x == v) {
                Some(_) => Ok(v),
                None => Err(bad(format!("channel {c} of {family} names {v}, which is not in the catalog"))),
            }
        }
        BaseSelector::Version(text) => {
            if let Ok(exact) = text.parse::<semver::Version>() {
                return match list.iter().find(|(x, _)| *x == exact) {
                    Some(_) => Ok(exact),
                    None => Err(bad(format!("version {family}@{exact}"))),
                };
            }
            let req: semver::VersionReq = text.parse().map_err(|e| {
                ClientError::Catalog(CatalogError::invalid("version", format!("`{text}`: {e}")))
            })?;
            list.iter()
                .filter(|(v, state)| req.matches(v) && (state == "candidate" || state == "supported"))
                .map(|(v, _)| v.clone())
                .max()
                .ok_or_else(|| bad(format!("no candidate or supported version of {family} matches {text}")))
        }
    }
}

impl Client {
    /// The version record `family@selector` names: a channel's version or an exact version, whatever its
    /// state (the caller decides what a retired one means), or the newest candidate or supported version in a
    /// range.
    pub fn pick(
        &self,
        family: &str,
        selector: &BaseSelector,
    ) -> Result<crate::model::VersionRecord, ClientError> {
        let versions = self.versions(family)?;
        let channels = match self {
            Self::Local { catalog, .. } => {
                let f = catalog.family(family)?;
                serde_json::to_value(
                    f.channels
                        .iter()
                        .map(|(k, c)| (k.clone(), c.version.to_string()))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                )
                .unwrap_or(Value::Null)
            }
            Self::Remote(r) => r
                .get_json(&format!("{API}/families/{family}"))?
                .get("channels")
                .cloned()
                .unwrap_or(Value::Null),
        };
        let version = pick_version(family, selector, &versions, &channels)?;
        serde_json::from_value(self.version(family, &version)?).map_err(|e| ClientError::Answer {
            method: "GET",
            url: format!("{family}@{version}"),
            reason: e.to_string(),
        })
    }

    /// Download the files of `record` whose path starts with `prefix` into `dest` (paths relative to the
    /// prefix), each checked against its digest.
    pub fn download(
        &self,
        record: &crate::model::VersionRecord,
        prefix: &str,
        dest: &Path,
    ) -> Result<(), ClientError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ClientError::Io { path, source }
        };
        for f in record.files.iter().filter(|f| f.path.starts_with(prefix)) {
            let out = dest.join(&f.path[prefix.len()..]);
            if let Some(parent) = out.parent() {
                fs_err::create_dir_all(parent).map_err(io(parent))?;
            }
            let mut file = fs_err::File::create(&out).map_err(io(&out))?;
            match self {
                Self::Local { catalog, .. } => {
                    let mut src = catalog.blobs().open(&f.digest).map_err(CatalogError::from)?;
                    std::io::copy(&mut src, &mut file).map_err(io(&out))?;
                }
                Self::Remote(r) => {
                    let url = format!(
                        "{}{API}/families/{}/versions/{}/files/{}",
                        r.base, record.family, record.version, f.path
                    );
                    let resp = r.call("GET", &url, |req| req.call())?;
                    let resp = r.check(resp, "GET", &url)?;
                    std::io::copy(&mut resp.into_body().into_reader(), &mut file).map_err(io(&out))?;
                }
            }
            drop(file);
            let (found, _) = kiln_blueprint::manifest::sha256_file(&out).map_err(io(&out))?;
            if found != f.digest {
                return Err(ClientError::Answer {
                    method: "GET",
                    url: f.path.clone(),
                    reason: format!("sha256 {found}, the catalog lists {}", f.digest),
                });
            }
        }
        Ok(())
    }

    /// Resolve `family@selector` and write its OCI image layout (every `oci/` file of the version's
    /// bundle, each checked against its digest) into the new folder `dest`.
    pub fn fetch_layout(
        &self,
        family: &str,
        selector: &BaseSelector,
        dest: &Path,
    ) -> Result<FetchedLayout, ClientError> {
        let record = self.pick(family, selector)?;
        let state = record.lifecycle.state_on(crate::model::Day::of(crate::model::Timestamp::now()));
        if matches!(state, crate::model::LifecycleState::Revoked | crate::model::LifecycleState::EndOfLife) {
            return Err(ClientError::Catalog(CatalogError::Conflict {
                message: format!("{} is {state}: images are not built FROM it", record.id()),
            }));
        }
        let oci =
            record.artifacts.iter().find(|a| a.kind == crate::model::ArtifactKind::Oci).ok_or_else(|| {
                ClientError::Catalog(CatalogError::not_found(format!("an OCI image in {}", record.id())))
            })?;
        self.download(&record, &format!("{}/", oci.path.trim_end_matches('/')), dest)?;
        Ok(FetchedLayout {
            tag: record.version.to_string(),
            image_digest: oci.digest.clone(),
            version: record.version,
        })
    }
}

type Resp = ureq::http::Response<ureq::Body>;

impl Remote {
    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {}", t.trim())),
            None => req,
        }
    }

    fn call(
        &self,
        method: &'static str,
        url: &str,
        send: impl FnOnce(ureq::RequestBuilder<ureq::typestate::WithoutBody>) -> Result<Resp, ureq::Error>,
    ) -> Result<Resp, ClientError> {
        let req = match method {
            "DELETE" => self.agent.delete(url),
            "HEAD" => self.agent.head(url),
            _ => self.agent.get(url),
        };
        send(self.auth(req)).map_err(|e| ClientError::Http {
            method,
            url: url.to_owned(),
            source: Box::new(e),
        })
    }

    fn call_body(
        &self,
        method: &'static str,
        url: &str,
        send: impl FnOnce(ureq::RequestBuilder<ureq::typestate::WithBody>) -> Result<Resp, ureq::Error>,
    ) -> Result<Resp, ClientError> {
        let req = match method {
            "PUT" => self.agent.put(url),
            "PATCH" => self.agent.patch(url),
            _ => self.agent.post(url),
        };
        send(self.auth(req)).map_err(|e| ClientError::Http {
            method,
            url: url.to_owned(),
            source: Box::new(e),
        })
    }

    /// Turn an error status into [`ClientError::Problem`].
    fn check(&self, resp: Resp, method: &'static str, url: &str) -> Result<Resp, ClientError> {
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let text = resp.into_body().read_to_string().unwrap_or_default();
        let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
        Err(ClientError::Problem(Box::new(RemoteProblem {
            method,
            url: url.to_owned(),
            status,
            title: s("title").unwrap_or_else(|| format!("HTTP {status}")),
            detail: s("detail").unwrap_or(text),
            field: s("field"),
            missing: doc
                .get("missing")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
        })))
    }

    fn text(&self, resp: Resp, method: &'static str, url: &str) -> Result<String, ClientError> {
        let resp = self.check(resp, method, url)?;
        resp.into_body().read_to_string().map_err(|e| ClientError::Answer {
            method,
            url: url.to_owned(),
            reason: e.to_string(),
        })
    }

    fn json(&self, resp: Resp, method: &'static str, url: &str) -> Result<Value, ClientError> {
        let text = self.text(resp, method, url)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Answer {
            method,
            url: url.to_owned(),
            reason: e.to_string(),
        })
    }

    fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.call("GET", &url, |r| r.call())?;
        self.json(resp, "GET", &url)
    }

    fn send_json(&self, method: &'static str, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let bytes = if body.is_null() { Vec::new() } else { serde_json::to_vec(body).unwrap_or_default() };
        let resp =
            self.call_body(method, &url, |r| r.header("Content-Type", "application/json").send(&bytes[..]))?;
        self.json(resp, method, &url)
    }

    /// Whether the server has the blob with this size.
    fn has_blob(&self, digest: &str, size: u64) -> Result<bool, ClientError> {
        let url = format!("{}{API}/blobs/{digest}", self.base);
        let resp = self.call("HEAD", &url, |r| r.call())?;
        if resp.status().as_u16() == 404 {
            return Ok(false);
        }
        let resp = self.check(resp, "HEAD", &url)?;
        let len = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        Ok(len == Some(size))
    }

    fn upload(
        &self,
        dir: &Path,
        f: &crate::model::FileRecord,
        progress: &dyn Progress,
    ) -> Result<(), ClientError> {
        let url = format!("{}{API}/blobs/{}", self.base, f.digest);
        let path = dir.join(&f.path);
        let file =
            fs_err::File::open(&path).map_err(|source| ClientError::Io { path: path.clone(), source })?;
        let mut reader = Counting { inner: file, progress };
        let resp = self.call_body("PUT", &url, |r| {
            r.header("Content-Type", "application/octet-stream")
                .header("Content-Length", f.size.to_string())
                .send(ureq::SendBody::from_reader(&mut reader))
        })?;
        self.check(resp, "PUT", &url).map(|_| ())
    }

    fn publish(
        &self,
        dir: &Path,
        known_issues: Vec<KnownIssue>,
        progress: &dyn Progress,
    ) -> Result<PublishOutcome, ClientError> {
        let files = bundle::scan(dir).map_err(|source| ClientError::Io { path: dir.to_owned(), source })?;
        let mut todo = Vec::new();
        for f in &files {
            if !self.has_blob(&f.digest, f.size)? {
                todo.push(f);
            }
        }
        todo.sort_by(|a, b| a.digest.cmp(&b.digest));
        todo.dedup_by(|a, b| a.digest == b.digest);
        progress.start(todo.iter().map(|f| f.size).sum());
        for f in &todo {
            self.upload(dir, f, progress)?;
        }
        progress.finish();
        let request = PublishRequest { files: files.clone(), known_issues };
        let url = format!("{}{API}/publish", self.base);
        let body = serde_json::to_vec(&request).unwrap_or_default();
        // A blob collected between upload and publish (a very slow publish) is uploaded again, once.
        for attempt in 0..2 {
            let resp = self
                .call_body("POST", &url, |r| r.header("Content-Type", "application/json").send(&body[..]))?;
            match self.json(resp, "POST", &url) {
                Ok(v) => {
                    return serde_json::from_value(v).map_err(|e| ClientError::Answer {
                        method: "POST",
                        url: url.clone(),
                        reason: e.to_string(),
                    })
                }
                Err(ClientError::Problem(p)) if attempt == 0 && p.status == 409 && !p.missing.is_empty() => {
                    for f in files.iter().filter(|f| p.missing.contains(&f.digest)) {
                        self.upload(dir, f, progress)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Answer { method: "POST", url, reason: "blobs kept disappearing".into() })
    }
}

/// A reader that reports progress.
struct Counting<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// The whole chain of a client error, for one-line messages.
pub fn describe(e: &ClientError) -> String {
    chain(e)
}
