//! The scale-out blob store: every blob in one repository of an OCI registry (Debian's `docker-registry`,
//! Harbor, a cloud registry), through `oci-client`, so stateless catalog replicas share their blobs.
//!
//! - `put`: the content streams into the registry's upload session (one monolithic `PUT` when its size is
//!   known, chunks otherwise), hashed on the way; when the digest or the size is wrong the upload is
//!   abandoned before it is committed, and the registry checks the digest again itself, so a blob is whole
//!   or absent. A blob already stored is hashed, not sent again, and its age refreshed.
//! - Each stored blob is *pinned*: an image manifest (pushed by digest, untagged, its one layer the blob)
//!   keeps it from the registry's own garbage collector, which removes blobs no manifest refers to.
//! - `open`: a reader that `GET`s the blob from where it stands, again with a `Range` after a seek (the
//!   download and registry code seek to the start of a range, then read).
//! - `stat`/`touch`/`list`: a registry cannot list its blobs, so a ledger in the metadata database
//!   ([`BlobLedger`], PostgreSQL's `blob_ledger`) records each blob once it is stored: its size and when a
//!   publish last named it. Garbage collection reads it like the folder store's file times; `stat` and
//!   `touch` also ask the registry (`HEAD`).
//! - `delete`: the pin manifest, then the blob (`DELETE`; docker-registry needs
//!   `storage.delete.enabled: true`); a registry refusing deletes makes `gc` fail and say so.
//! - Upload sessions of the catalog's own registry API (`upload_*`): each chunk a client sends becomes a
//!   blob of its own in the registry (streamed, counted; a chunk shorter or longer than announced is never
//!   committed), and the session's chunk list is a row of the ledger (`blob_sessions`) that a request
//!   holds locked while it appends, so any replica can take the next chunk and two never append at once.
//!   Finishing a session of one chunk whose digest is the blob's (what skopeo and podman send) is
//!   immediate; otherwise the chunks are read back in order into the blob's upload (hashed, checked).
//!   Chunks are recorded in the ledger like blobs, so garbage collection removes them once unreferenced
//!   and older than its grace period.
//! - `local_path` is `None`: the HTTP code streams through `open`.
//!
//! The trait is synchronous and called from blocking threads; the store drives `oci-client` on a small
//! runtime of its own.

use std::{
    fmt,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use axum::body::Bytes;
use futures_util::{stream::BoxStream, StreamExt as _};
use oci_client::{
    client::{BlobResponse, ClientConfig, ClientProtocol},
    errors::OciDistributionError,
    secrets::RegistryAuth,
    Reference, RegistryOperation,
};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::{parse_digest, Algorithm, BlobStore, ReadSeek, StoreError, StoredBlob};

/// The repository blobs go to unless another is named.
pub const DEFAULT_REPOSITORY: &str = "kiln-blobs";

/// The empty JSON object (`{}`), the config of the manifests that pin blobs.
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// What [`RegistryBlobs`] keeps beside the registry, in the metadata database: which blobs are stored
/// (a registry cannot list them), since when they were last named, and upload sessions.
pub trait BlobLedger: Send + Sync + fmt::Debug {
    /// The blob is stored (now; its age starts again).
    fn blob_recorded(&self, digest: &str, size: u64) -> Result<(), StoreError>;
    fn blob_size(&self, digest: &str) -> Result<Option<u64>, StoreError>;
    /// Refresh a recorded blob's age; its size.
    fn blob_touch(&self, digest: &str) -> Result<Option<u64>, StoreError>;
    /// Every recorded blob, by digest.
    fn blob_list(&self) -> Result<Vec<StoredBlob>, StoreError>;
    fn blob_forget(&self, digest: &str) -> Result<(), StoreError>;
    /// A new, empty upload session.
    fn session_create(&self, id: &str) -> Result<(), StoreError>;
    fn session(&self, id: &str) -> Result<Option<Session>, StoreError>;
    /// Hold the session (another request holding it: [`StoreError::UploadBusy`]; no such session:
    /// [`StoreError::UploadUnknown`]) while `f` makes its next state; `None` ends it. Nothing changes when
    /// `f` fails.
    fn session_update(
        &self,
        id: &str,
        f: &mut dyn FnMut(Session) -> Result<Option<Session>, StoreError>,
    ) -> Result<(), StoreError>;
    /// End sessions untouched since `older_than` (not those being written); how many.
    fn session_sweep(&self, older_than: SystemTime) -> Result<usize, StoreError>;
}

/// An upload session: the chunks received, in order (each a blob in the registry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Session {
    pub chunks: Vec<Chunk>,
}

impl Session {
    /// The bytes received.
    pub fn size(&self) -> u64 {
        self.chunks.iter().map(|c| c.size).sum()
    }
}

/// One chunk of an upload session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub digest: String,
    pub size: u64,
}

/// A registry URL without its credentials.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => url.rsplit_once('@').map_or(url, |(_, host)| host).to_owned(),
    }
}

/// Blobs in one repository of an OCI registry; see the module documentation.
pub struct RegistryBlobs {
    shared: Arc<Shared>,
    ledger: Arc<dyn BlobLedger>,
}

/// What readers share with the store.
struct Shared {
    /// `scheme://host[:port]` without credentials.
    base: String,
    repository: String,
    reference: Reference,
    auth: RegistryAuth,
    /// Pushes of a known size (one `PUT`), pulls.
    whole: oci_client::Client,
    /// Pushes of an unknown size (chunks).
    chunked: oci_client::Client,
    http: reqwest::Client,
    /// Always present until dropped (taken out to shut it down without blocking: the last reference may
    /// go on an async thread, when a server stops).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl fmt::Debug for RegistryBlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBlobs")
            .field("registry", &self.shared.base)
            .field("repository", &self.shared.repository)
            .field("ledger", &self.ledger)
            .finish()
    }
}

impl Shared {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime is there until the store is dropped")
    }

    fn err(&self, message: impl fmt::Display) -> StoreError {
        StoreError::Registry { registry: self.base.clone(), message: message.to_string() }
    }

    fn at(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_owned(),
            self.repository.clone(),
            digest.to_owned(),
        )
    }

    /// Whether the registry has the blob (`HEAD`).
    fn exists(&self, digest: &str) -> Result<bool, StoreError> {
        self.rt().block_on(self.whole.blob_exists(&self.reference, digest)).map_err(|e| self.err(e))
    }

    /// `DELETE /v2/REPO/KIND/DIGEST`: whether it was there.
    fn delete(&self, kind: &str, digest: &str) -> Result<bool, StoreError> {
        let url = format!("{}/v2/{}/{kind}/{digest}", self.base, self.repository);
        let status = self.rt().block_on(async {
            let send = |bearer: Option<String>| {
                let mut req = self.http.delete(&url);
                req = match (&self.auth, bearer) {
                    (_, Some(token)) => req.bearer_auth(token),
                    (RegistryAuth::Bearer(token), None) => req.bearer_auth(token),
                    (RegistryAuth::Basic(user, password), None) => req.basic_auth(user, Some(password)),
                    (RegistryAuth::Anonymous, None) => req,
                };
                req.send()
            };
            let mut resp = send(None).await?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                // A registry with the token flow: a push token allows deletes.
                let token = self
                    .whole
                    .auth(&self.reference, &self.auth, RegistryOperation::Push)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .ok()
                    .flatten();
                if token.is_some() {
                    resp = send(token).await?;
                }
            }
            Ok::<_, reqwest::Error>(resp.status())
        });
        match status.map_err(|e| self.err(e))? {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            StatusCode::METHOD_NOT_ALLOWED => Err(self.err(format!(
                "the registry does not allow deleting {kind} (docker-registry: storage.delete.enabled: true)"
            ))),
            s => Err(self.err(format!("DELETE {url}: {s}"))),
        }
    }

    /// The blob's bytes from `offset`, and how many to skip first (a registry ignoring `Range`).
    fn stream(
        &self,
        digest: &str,
        offset: u64,
    ) -> Result<(BoxStream<'static, std::io::Result<Bytes>>, u64), StoreError> {
        let r = &self.reference;
        self.rt()
            .block_on(async {
                if offset == 0 {
                    // From the start: the whole blob, checked against its digest at the end.
                    return Ok((self.whole.pull_blob_stream(r, digest).await?.stream, 0));
                }
                Ok(match self.whole.pull_blob_stream_partial(r, digest, offset, None).await? {
                    BlobResponse::Partial(s) => (s.stream, 0),
                    BlobResponse::Full(s) => (s.stream, offset),
                })
            })
            .map_err(|e: OciDistributionError| self.err(e))
    }
}

/// Read everything `from` gives into `buf` (until it is full or `from` ends); how many bytes.
fn fill(from: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut k = 0;
    while k < buf.len() {
        match from.read(&mut buf[k..]) {
            Ok(0) => break,
            Ok(n) => k += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(k)
}

const BUFFER: usize = 1 << 20;

impl RegistryBlobs {
    /// Blobs in `repository` of the registry at `url` (`http[s]://[user:password@]host[:port]`; a
    /// password is sent as HTTP Basic credentials, or for a bearer token where the registry asks), with
    /// their ledger in `ledger`. Checks that the registry takes pushes.
    pub fn open(url: &str, repository: &str, ledger: Arc<dyn BlobLedger>) -> Result<Self, StoreError> {
        let registry = redact(url);
        let bad = |m: &str| StoreError::Registry { registry: registry.clone(), message: m.to_owned() };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("not an http:// or https:// URL"))?;
        let protocol = match scheme {
            "http" => ClientProtocol::Http,
            "https" => ClientProtocol::Https,
            _ => return Err(bad("not an http:// or https:// URL")),
        };
        let rest = rest.trim_end_matches('/');
        let (auth, host) = match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (RegistryAuth::Basic(user.to_owned(), password.to_owned()), host)
            }
            None => (RegistryAuth::Anonymous, rest),
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad("the URL names a registry, not a path in it (use --blob-repository)"));
        }
        if Reference::try_from(format!("{host}/{repository}:latest")).is_err()
            || repository != repository.to_lowercase()
        {
            return Err(bad(&format!("`{repository}` is not a repository name")));
        }
        let reference = Reference::with_tag(host.to_owned(), repository.to_owned(), "latest".to_owned());
        let config = |monolithic| ClientConfig {
            protocol: protocol.clone(),
            use_monolithic_push: monolithic,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..Default::default()
        };
        let (whole, chunked) =
            (oci_client::Client::new(config(true)), oci_client::Client::new(config(false)));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kiln-blob-registry")
            .enable_all()
            .build()
            .map_err(|e| bad(&format!("cannot start its client: {e}")))?;
        rt.block_on(async {
            whole.store_auth_if_needed(host, &auth).await;
            chunked.store_auth_if_needed(host, &auth).await;
        });
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| bad(&format!("cannot start its client: {e}")))?;
        let shared = Shared {
            base: format!("{scheme}://{host}"),
            repository: repository.to_owned(),
            reference,
            auth,
            whole,
            chunked,
            http,
            runtime: Some(rt),
        };
        let store = Self { shared: Arc::new(shared), ledger };
        // The pins' config, and the proof that the registry takes pushes from us.
        let empty = Algorithm::Sha256.digest(EMPTY_CONFIG);
        let s = &store.shared;
        s.rt().block_on(s.whole.push_blob(&s.reference, EMPTY_CONFIG, &empty)).map_err(|e| s.err(e))?;
        Ok(store)
    }

    /// The manifest that pins a blob: its bytes and digest (the same for the same blob every time).
    fn pin_manifest(digest: &str, size: u64) -> (Vec<u8>, String) {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": EMPTY_MEDIA_TYPE,
                "digest": Algorithm::Sha256.digest(EMPTY_CONFIG),
                "size": EMPTY_CONFIG.len(),
            },
            "layers": [{ "mediaType": "application/octet-stream", "digest": digest, "size": size }],
            "annotations": { "org.opencontainers.image.title": "kiln blob" },
        });
        let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let digest = Algorithm::Sha256.digest(&bytes);
        (bytes, digest)
    }

    /// Pin a stored blob and record it in the ledger.
    fn keep(&self, digest: &str, size: u64) -> Result<(), StoreError> {
        let s = &self.shared;
        let (bytes, manifest) = Self::pin_manifest(digest, size);
        let content_type = reqwest::header::HeaderValue::from_static(MANIFEST_MEDIA_TYPE);
        s.rt()
            .block_on(s.whole.push_manifest_raw(&s.at(&manifest), bytes, content_type))
            .map_err(|e| s.err(e))?;
        self.ledger.blob_recorded(digest, size)
    }

    /// Whether the blob is stored: recorded in the ledger and in the registry; its size.
    fn present(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        match self.ledger.blob_size(digest)? {
            Some(size) if self.shared.exists(digest)? => Ok(Some(size)),
            _ => Ok(None),
        }
    }

    /// Stream `content` into a new upload (one `PUT` when `size` is known), hashing it with `alg`; the
    /// upload is committed only when the content is `digest` (and `size` bytes when given). With `digest`
    /// `None` the content is a chunk: committed under its sha256, whatever it is, when `size` matches.
    /// The digest and size stored.
    fn push(
        &self,
        digest: Option<&str>,
        size: Option<u64>,
        first: &[u8],
        content: &mut dyn Read,
    ) -> Result<(String, u64), StoreError> {
        let s = &self.shared;
        let alg = match digest {
            Some(d) => parse_digest(d)?.0,
            None => Algorithm::Sha256,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, OciDistributionError>>(4);
        let body =
            futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        let reference = s.reference.clone();
        let task = match digest {
            Some(d) => {
                let (client, d) = if size.is_some() {
                    (s.whole.clone(), d.to_owned())
                } else {
                    (s.chunked.clone(), d.to_owned())
                };
                s.rt().spawn(async move {
                    client.push_blob_stream(&reference, body, &d, size).await.map(|_| (d, None))
                })
            }
            None => {
                let client = s.chunked.clone();
                s.rt().spawn(async move {
                    client
                        .push_blob_stream_chunked(&reference, body)
                        .await
                        .map(|r| (r.blob_digest, Some(r.size)))
                })
            }
        };
        let mut hasher = alg.hasher();
        let mut n = 0u64;
        let mut failure = None;
        let mut chunk = first.to_vec();
        let mut buf = vec![0u8; BUFFER];
        loop {
            if !chunk.is_empty() {
                hasher.update(&chunk);
                n += chunk.len() as u64;
                if tx.blocking_send(Ok(Bytes::from(std::mem::take(&mut chunk)))).is_err() {
                    // The upload failed already: its error says why.
                    break;
                }
            }
            match fill(content, &mut buf) {
                Ok(0) => break,
                Ok(k) => chunk = buf[..k].to_vec(),
                Err(source) => {
                    failure =
                        Some(StoreError::Io { path: PathBuf::from(digest.unwrap_or("upload")), source });
                    break;
                }
            }
        }
        let found = hasher.finish();
        let name = digest.unwrap_or(&found).to_owned();
        if failure.is_none() {
            if let Some(expected) = size.filter(|s| *s != n) {
                failure = Some(match digest {
                    Some(_) => StoreError::BlobSize { digest: name.clone(), expected, found: n },
                    None => StoreError::UploadLength { id: String::new(), expected, found: n },
                });
            } else if digest.is_some_and(|d| d != found) {
                failure = Some(StoreError::BlobDigest { expected: name.clone(), found: found.clone() });
            }
        }
        if let Some(f) = &failure {
            // Ends the upload's body with an error: the registry never commits it.
            let _ = tx.blocking_send(Err(OciDistributionError::GenericError(Some(f.to_string()))));
        }
        drop(tx);
        let pushed = s.rt().block_on(task);
        if let Some(f) = failure {
            return Err(f);
        }
        match pushed {
            Ok(Ok((d, _))) => Ok((d, n)),
            Ok(Err(e)) => Err(s.err(e)),
            Err(e) => Err(s.err(e)),
        }
    }

    /// Hash `content` (a blob the registry has already), checking it is `digest` of `size` bytes.
    fn verify_only(digest: &str, size: Option<u64>, content: &mut dyn Read) -> Result<u64, StoreError> {
        let (alg, _) = parse_digest(digest)?;
        let mut h = alg.hasher();
        let mut buf = vec![0u8; BUFFER];
        let mut n = 0u64;
        loop {
            let k = fill(content, &mut buf)
                .map_err(|source| StoreError::Io { path: PathBuf::from(digest), source })?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        let found = h.finish();
        if found != digest {
            return Err(StoreError::BlobDigest { expected: digest.to_owned(), found });
        }
        if let Some(expected) = size.filter(|s| *s != n) {
            return Err(StoreError::BlobSize { digest: digest.to_owned(), expected, found: n });
        }
        Ok(n)
    }

    /// A session's chunks, one after the other.
    fn chunks_reader<'a>(&'a self, chunks: &'a [Chunk]) -> impl Read + 'a {
        ChunksReader { store: self, chunks, next: 0, current: None }
    }

    /// The blob `digest` from a finished session's chunks; its size.
    fn assemble(&self, session: &Session, digest: &str) -> Result<u64, StoreError> {
        let (alg, _) = parse_digest(digest)?;
        match session.chunks.as_slice() {
            [one] if one.digest == digest => {
                self.keep(digest, one.size)?;
                Ok(one.size)
            }
            [one] if alg == Algorithm::Sha256 => {
                Err(StoreError::BlobDigest { expected: digest.to_owned(), found: one.digest.clone() })
            }
            chunks => self.put(digest, Some(session.size()), &mut self.chunks_reader(chunks)),
        }
    }
}

/// Reads the chunks of a session in order.
struct ChunksReader<'a> {
    store: &'a RegistryBlobs,
    chunks: &'a [Chunk],
    next: usize,
    current: Option<Box<dyn ReadSeek>>,
}

impl Read for ChunksReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(r) = &mut self.current {
                match r.read(buf)? {
                    0 => self.current = None,
                    n => return Ok(n),
                }
            }
            let Some(c) = self.chunks.get(self.next) else { return Ok(0) };
            self.next += 1;
            self.current = Some(self.store.open(&c.digest).map_err(std::io::Error::other)?);
        }
    }
}

/// A blob read from the registry: `GET` from the position, again after a seek.
struct RangeReader {
    shared: Arc<Shared>,
    digest: String,
    size: u64,
    pos: u64,
    stream: Option<BoxStream<'static, std::io::Result<Bytes>>>,
    /// Bytes to drop from the stream before `pos` (a registry that answered a range with everything).
    skip: u64,
    pending: Bytes,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        while self.pending.is_empty() {
            if self.stream.is_none() {
                let (stream, skip) =
                    self.shared.stream(&self.digest, self.pos).map_err(std::io::Error::other)?;
                self.stream = Some(stream);
                self.skip = skip;
            }
            let Some(stream) = self.stream.as_mut() else { continue };
            match self.shared.rt().block_on(stream.next()) {
                Some(Ok(mut b)) => {
                    let drop = self.skip.min(b.len() as u64) as usize;
                    self.skip -= drop as u64;
                    self.pending = b.split_off(drop);
                }
                Some(Err(e)) => {
                    self.stream = None;
                    return Err(e);
                }
                None => {
                    self.stream = None;
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("blob {} ended at {} of {} bytes", self.digest, self.pos, self.size),
                    ));
                }
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
        }
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        if pos != self.pos {
            self.stream = None;
            self.pending = Bytes::new();
            self.pos = pos;
        }
        Ok(pos)
    }
}

impl BlobStore for RegistryBlobs {
    fn check(&self) -> Result<(), StoreError> {
        // A HEAD of a blob nobody has: an answer (404) is health; a refused connection or a 5xx is not.
        self.shared.exists(&format!("sha256:{}", "0".repeat(64))).map(|_| ())
    }

    fn stat(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        parse_digest(digest)?;
        self.present(digest)
    }

    fn touch(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        parse_digest(digest)?;
        match self.ledger.blob_touch(digest)? {
            Some(size) if self.shared.exists(digest)? => Ok(Some(size)),
            _ => Ok(None),
        }
    }

    fn put(&self, digest: &str, size: Option<u64>, content: &mut dyn Read) -> Result<u64, StoreError> {
        parse_digest(digest)?;
        if self.present(digest)?.is_some() {
            let n = Self::verify_only(digest, size, content)?;
            self.ledger.blob_touch(digest)?;
            return Ok(n);
        }
        let (_, n) = self.push(Some(digest), size, &[], content)?;
        self.keep(digest, n)?;
        Ok(n)
    }

    fn put_file(&self, digest: &str, path: &Path) -> Result<u64, StoreError> {
        if let Some(size) = self.touch(digest)? {
            return Ok(size);
        }
        let io = |source| StoreError::Io { path: path.to_owned(), source };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        self.put(digest, Some(size), &mut f)
    }

    fn open(&self, digest: &str) -> Result<Box<dyn ReadSeek>, StoreError> {
        parse_digest(digest)?;
        let size = self
            .ledger
            .blob_size(digest)?
            .ok_or_else(|| StoreError::BlobMissing { digest: digest.to_owned() })?;
        Ok(Box::new(RangeReader {
            shared: Arc::clone(&self.shared),
            digest: digest.to_owned(),
            size,
            pos: 0,
            stream: None,
            skip: 0,
            pending: Bytes::new(),
        }))
    }

    fn local_path(&self, _digest: &str) -> Option<PathBuf> {
        None
    }

    fn list(&self) -> Result<Vec<StoredBlob>, StoreError> {
        self.ledger.blob_list()
    }

    fn delete(&self, digest: &str) -> Result<(), StoreError> {
        parse_digest(digest)?;
        if let Some(size) = self.ledger.blob_size(digest)? {
            self.shared.delete("manifests", &Self::pin_manifest(digest, size).1)?;
        }
        self.shared.delete("blobs", digest)?;
        self.ledger.blob_forget(digest)
    }

    fn sweep_uploads(&self, older_than: SystemTime) -> Result<usize, StoreError> {
        self.ledger.session_sweep(older_than)
    }

    fn upload_create(&self, id: &str) -> Result<(), StoreError> {
        self.ledger.session_create(id)
    }

    fn upload_size(&self, id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.ledger.session(id)?.map(|s| s.size()))
    }

    fn upload_append(
        &self,
        id: &str,
        start: Option<u64>,
        length: Option<u64>,
        content: &mut dyn Read,
    ) -> Result<u64, StoreError> {
        let mut size = 0;
        self.ledger.session_update(id, &mut |mut session| {
            let have = session.size();
            if let Some(start) = start.filter(|s| *s != have) {
                return Err(StoreError::UploadRange { id: id.to_owned(), size: have, start });
            }
            let mut first = vec![0u8; BUFFER];
            let k = fill(content, &mut first)
                .map_err(|source| StoreError::Io { path: PathBuf::from(id), source })?;
            if k == 0 {
                if let Some(expected) = length.filter(|l| *l != 0) {
                    return Err(StoreError::UploadLength { id: id.to_owned(), expected, found: 0 });
                }
            } else {
                let (digest, n) = self.push(None, length, &first[..k], content).map_err(|e| match e {
                    StoreError::UploadLength { expected, found, .. } => {
                        StoreError::UploadLength { id: id.to_owned(), expected, found }
                    }
                    e => e,
                })?;
                self.ledger.blob_recorded(&digest, n)?;
                session.chunks.push(Chunk { digest, size: n });
            }
            size = session.size();
            Ok(Some(session))
        })?;
        Ok(size)
    }

    fn upload_finish(&self, id: &str, digest: &str) -> Result<u64, StoreError> {
        parse_digest(digest)?;
        let mut out = None;
        self.ledger.session_update(id, &mut |session| {
            out = Some(self.assemble(&session, digest));
            // The session ends whatever became of it.
            Ok(None)
        })?;
        out.unwrap_or_else(|| Err(StoreError::UploadUnknown { id: id.to_owned() }))
    }

    fn upload_cancel(&self, id: &str) -> Result<bool, StoreError> {
        match self.ledger.session_update(id, &mut |_| Ok(None)) {
            Ok(()) => Ok(true),
            Err(StoreError::UploadUnknown { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_urls_lose_their_credentials_in_errors() {
        assert_eq!(redact("https://robot:s3cret@registry.example/"), "https://registry.example/");
        assert_eq!(redact("http://127.0.0.1:5000"), "http://127.0.0.1:5000");
    }

    #[test]
    fn a_blob_is_pinned_by_the_same_manifest_every_time() {
        let d = Algorithm::Sha256.digest(b"hello");
        let (bytes, digest) = RegistryBlobs::pin_manifest(&d, 5);
        assert_eq!(RegistryBlobs::pin_manifest(&d, 5).1, digest);
        assert_eq!(Algorithm::Sha256.digest(&bytes), digest);
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(m["layers"][0]["digest"], d);
        assert_eq!(m["layers"][0]["size"], 5);
        assert_ne!(RegistryBlobs::pin_manifest(&Algorithm::Sha256.digest(b"other"), 5).1, digest);
    }
}
