//! The catalog's operations over its stores: publish (verify, then record in one transaction), promote,
//! change lifecycles (revocation flags descendants), resolve, tokens, and garbage collection. The HTTP API
//! and `kiln publish --catalog PATH` both call these, so a local publish and a remote one follow the same
//! rules.
//!
//! Publishing is atomic and idempotent. The bundle's files are blobs first (content-addressed, each whole
//! or absent); the version becomes visible only when its record commits, after the bundle verified with a
//! trusted key and its certification passed. A publish killed before the commit leaves blobs no version
//! refers to, which [`Catalog::gc`] collects once they are older than its grace period.

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use kiln_blueprint::manifest::{ArtifactKind, Manifest, MANIFEST_FILE};
use kiln_sign::PublicKey;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::{
    known_issues::KnownIssue,
    lifecycle::{self, LifecycleChange},
    model::{
        ArtifactRecord, ChannelMove, ContractId, Day, FamilyState, FileRecord, LifecyclePolicy, ParentRef,
        Scope, Timestamp, TokenRecord, VersionRecord,
    },
    notes,
    resolve::{self, Resolution, ResolveRequest},
    store::{blobs::FsBlobs, digest_hex, sqlite::SqliteStore, BlobStore, MetaStore, NewAudit, StoreError},
    CatalogError,
};

/// The file a new catalog writes its first admin token to.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The folder of the catalog's trusted public keys (`*.pub`, PEM).
pub const TRUSTED_KEYS_DIR: &str = "trusted-keys";
/// Where a publish puts a bundle together to verify it.
const STAGING_DIR: &str = "staging";
/// The certification report inside a bundle.
const CERTIFICATION: &str = "report/certification.json";

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// A publish: every file of the signed build output, already uploaded as blobs, and the known issues the
/// publisher selected from the runbook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub files: Vec<FileRecord>,
    #[serde(default)]
    pub known_issues: Vec<KnownIssue>,
}

/// What a publish did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishOutcome {
    /// `false`: the same image was already published under this version (nothing changed).
    pub created: bool,
    pub version: VersionRecord,
}

/// What garbage collection removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub bytes_removed: u64,
    pub uploads_removed: usize,
    pub staging_removed: usize,
    /// Unreferenced blobs kept because they are younger than the grace period (a publish may be using them).
    pub blobs_kept_young: usize,
    /// Cached network-boot files of versions that cannot be booted any more ([`crate::boot::ipxe::sweep`]).
    pub boot_cache_removed: usize,
}

/// A store that does not answer ([`Catalog::check`]).
#[derive(Debug, thiserror::Error)]
#[error("the {store} store does not answer")]
pub struct Unhealthy {
    /// `metadata` or `blobs`.
    pub store: &'static str,
    #[source]
    pub source: Box<StoreError>,
}

/// The catalog.
#[derive(Debug)]
pub struct Catalog {
    root: PathBuf,
    meta: Box<dyn MetaStore>,
    blobs: Box<dyn BlobStore>,
    trusted: Vec<PublicKey>,
    cache: Mutex<HashMap<String, Arc<FamilyState>>>,
    /// Resolve answers by family, for the revision and day they were computed on.
    answers: Mutex<HashMap<String, Answers>>,
}

/// How many resolve answers a family keeps (different requests on one revision and day).
const ANSWERS_PER_FAMILY: usize = 256;

/// The resolve answers of one family at one revision, on one day, by request.
#[derive(Debug, Default)]
struct Answers {
    revision: u64,
    today: Option<Day>,
    json: HashMap<String, Arc<[u8]>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Store(StoreError::Io { path: path.to_owned(), source })
}

/// sha256 of a token, as stored.
pub fn token_hash(token: &str) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(token.as_bytes())))
}

fn new_token() -> Result<String, CatalogError> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    let path = Path::new("/dev/urandom");
    fs_err::File::open(path).and_then(|mut f| f.read_exact(&mut bytes)).map_err(io(path))?;
    Ok(format!("kiln_{}", hex::encode(bytes)))
}

/// A relative, `/`-separated path that stays inside its folder.
fn check_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && !path.contains('\0')
}

/// The parts of `report/certification.json` the catalog relies on.
#[derive(Debug, Deserialize)]
struct CertificationSummary {
    schema: String,
    image: CertifiedImage,
    artifacts: Vec<CertifiedArtifact>,
    passed: bool,
    certified: Vec<ContractId>,
}

#[derive(Debug, Deserialize)]
struct CertifiedImage {
    name: String,
    version: String,
}

#[derive(Debug, Deserialize)]
struct CertifiedArtifact {
    path: String,
    sha256: String,
}

/// A verified bundle, staged.
struct Verified {
    manifest: Manifest,
    manifest_digest: String,
    key: String,
    certified: Vec<ContractId>,
}

/// Removes a staging folder when dropped.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Catalog {
    /// Open (creating) the embedded catalog in `root`: SQLite metadata (`catalog.db`), blobs, trusted keys.
    pub fn open(root: &Path) -> Result<Self, CatalogError> {
        fs_err::create_dir_all(root).map_err(io(root))?;
        let meta = SqliteStore::open(&root.join("catalog.db"))?;
        let blobs = FsBlobs::open(root)?;
        Self::with_stores(root, Box::new(meta), Box::new(blobs))
    }

    /// Open the catalog whose data folder is `root` over the stores `backends` name (the embedded ones
    /// in `root` by default; PostgreSQL and an OCI registry scaled out, shared by several replicas).
    pub fn open_with(root: &Path, backends: &crate::store::Backends) -> Result<Self, CatalogError> {
        fs_err::create_dir_all(root).map_err(io(root))?;
        let (meta, blobs) = backends.open(root)?;
        Self::with_stores(root, meta, blobs)
    }

    /// A catalog over other stores (the scale-out backends); `root` holds the trusted keys, the admin
    /// token and staging.
    pub fn with_stores(
        root: &Path,
        meta: Box<dyn MetaStore>,
        blobs: Box<dyn BlobStore>,
    ) -> Result<Self, CatalogError> {
        fs_err::create_dir_all(root).map_err(io(root))?;
        let mut trusted = Vec::new();
        let keys = root.join(TRUSTED_KEYS_DIR);
        if keys.is_dir() {
            let mut paths: Vec<PathBuf> = fs_err::read_dir(&keys)
                .map_err(io(&keys))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "pub"))
                .collect();
            paths.sort();
            for p in paths {
                let pem = fs_err::read_to_string(&p).map_err(io(&p))?;
                let key = PublicKey::from_pem(&pem).map_err(|e| {
                    CatalogError::invalid(p.display().to_string(), format!("not a public key: {e}"))
                })?;
                trusted.push(key);
            }
        }
        Ok(Self {
            root: root.to_owned(),
            meta,
            blobs,
            trusted,
            cache: Mutex::new(HashMap::new()),
            answers: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn meta(&self) -> &dyn MetaStore {
        &*self.meta
    }

    pub fn blobs(&self) -> &dyn BlobStore {
        &*self.blobs
    }

    /// Fingerprints of the trusted keys.
    pub fn trusted_keys(&self) -> Vec<String> {
        self.trusted.iter().map(PublicKey::fingerprint).collect()
    }

    /// Trust `key` from now on (kept in `ROOT/trusted-keys/`); already trusted keys are a no-op.
    pub fn trust(&mut self, key: PublicKey) -> Result<(), CatalogError> {
        let fp = key.fingerprint();
        if self.trusted.iter().any(|k| k.fingerprint() == fp) {
            return Ok(());
        }
        let dir = self.root.join(TRUSTED_KEYS_DIR);
        fs_err::create_dir_all(&dir).map_err(io(&dir))?;
        let name: String = fp.chars().filter(char::is_ascii_alphanumeric).collect();
        let path = dir.join(format!("{name}.pub"));
        let tmp = dir.join(format!(".{name}.pub.tmp"));
        fs_err::write(&tmp, key.to_pem()).map_err(io(&tmp))?;
        fs_err::rename(&tmp, &path).map_err(io(&path))?;
        self.trusted.push(key);
        Ok(())
    }

    /// On a catalog without tokens, create an admin token and write it to `ROOT/admin-token` (mode 0600);
    /// the path when it did. Replicas starting together on one database make one: the store lets only one
    /// token be created by the catalog itself.
    pub fn ensure_admin_token(&self, now: Timestamp) -> Result<Option<PathBuf>, CatalogError> {
        if !self.meta.tokens()?.is_empty() {
            return Ok(None);
        }
        let path = self.root.join(ADMIN_TOKEN_FILE);
        let token = match self.create_token("admin", &[Scope::Admin], "catalog", now) {
            Ok((token, _)) => token,
            // Another replica sharing the database made the first token at the same moment.
            Err(CatalogError::Store(StoreError::Duplicate { .. })) => return Ok(None),
            Err(e) => return Err(e),
        };
        write_private(&path, format!("{token}\n").as_bytes())?;
        Ok(Some(path))
    }

    /// A new token; returns it (shown once) and its record.
    pub fn create_token(
        &self,
        name: &str,
        scopes: &[Scope],
        actor: &str,
        now: Timestamp,
    ) -> Result<(String, TokenRecord), CatalogError> {
        if name.trim().is_empty() {
            return Err(CatalogError::invalid("name", "a token needs a name"));
        }
        if scopes.is_empty() {
            return Err(CatalogError::invalid("scopes", "a token needs at least one scope"));
        }
        let token = new_token()?;
        let hash = token_hash(&token);
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let record = TokenRecord {
            id: hash["sha256:".len().."sha256:".len() + 12].to_owned(),
            name: name.to_owned(),
            scopes,
            created_at: now,
            created_by: actor.to_owned(),
            hash,
        };
        self.meta.write(&mut |tx| {
            tx.insert_token(&record)?;
            tx.append_audit(&NewAudit {
                at: now,
                actor: actor.to_owned(),
                action: "token-create",
                family: None,
                version: None,
                detail: serde_json::json!({"id": record.id, "name": record.name, "scopes": record.scopes}),
            })?;
            Ok(())
        })?;
        Ok((token, record))
    }

    /// The token's record, or `Unauthenticated`.
    pub fn authenticate(&self, token: &str) -> Result<TokenRecord, CatalogError> {
        self.meta.token_by_hash(&token_hash(token.trim()))?.ok_or(CatalogError::Unauthenticated)
    }

    pub fn revoke_token(&self, id: &str, actor: &str, now: Timestamp) -> Result<(), CatalogError> {
        self.meta.write(&mut |tx| {
            if !tx.delete_token(id)? {
                return Err(CatalogError::not_found(format!("token {id}")));
            }
            tx.append_audit(&NewAudit {
                at: now,
                actor: actor.to_owned(),
                action: "token-revoke",
                family: None,
                version: None,
                detail: serde_json::json!({"id": id}),
            })?;
            Ok(())
        })
    }

    /// Whether short reads (a few metadata queries, a small blob) are local work of microseconds: SQLite and
    /// the blob folder, not stores across the network.
    pub fn quick_reads(&self) -> bool {
        self.meta.local_reads() && self.blobs.is_local()
    }

    /// Whether both stores answer now: the metadata store (one query) and the blob store. The first
    /// failure, with the store it came from.
    pub fn check(&self) -> Result<(), Unhealthy> {
        let failed = |store| move |e: StoreError| Unhealthy { store, source: Box::new(e) };
        self.meta.family_revision("").map_err(failed("metadata"))?;
        self.blobs.check().map_err(failed("blobs"))
    }

    /// The family, from a cache kept current by the family's revision (one small query per call).
    pub fn family(&self, name: &str) -> Result<Arc<FamilyState>, CatalogError> {
        let not_found = || CatalogError::not_found(format!("family {name}"));
        let revision = self.meta.family_revision(name)?.ok_or_else(not_found)?;
        if let Some(f) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            if f.revision == revision {
                return Ok(Arc::clone(f));
            }
        }
        let family = Arc::new(self.meta.family(name)?.ok_or_else(not_found)?);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), Arc::clone(&family));
        Ok(family)
    }

    /// One version.
    pub fn version(&self, family: &str, version: &semver::Version) -> Result<VersionRecord, CatalogError> {
        self.family(family)?
            .version(version)
            .cloned()
            .ok_or_else(|| CatalogError::not_found(format!("version {family}@{version}")))
    }

    /// Resolve a request against the family as it is now.
    pub fn resolve(
        &self,
        family: &str,
        req: &ResolveRequest,
        today: Day,
    ) -> Result<Resolution, CatalogError> {
        let state = self.family(family)?;
        Ok(resolve::resolve(&state, req, today)?)
    }

    /// [`Catalog::resolve`] as the API sends it: the [`Resolution`] as pretty JSON and a newline. Answers
    /// are kept for the family's revision and the day (any change to the family bumps its revision), so a
    /// request asked again costs the revision lookup, not the walk and the serialization of its answer.
    pub fn resolve_json(
        &self,
        family: &str,
        req: &ResolveRequest,
        today: Day,
    ) -> Result<Arc<[u8]>, CatalogError> {
        let state = self.family(family)?;
        let key = serde_json::to_string(req).map_err(|e| CatalogError::invalid("request", e.to_string()))?;
        let current = |a: &Answers| a.revision == state.revision && a.today == Some(today);
        if let Some(json) = self
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(family)
            .filter(|a| current(a))
            .and_then(|a| a.json.get(&key))
        {
            return Ok(Arc::clone(json));
        }
        let resolution = resolve::resolve(&state, req, today)?;
        let mut json = serde_json::to_vec_pretty(&resolution)
            .map_err(|e| CatalogError::invalid("request", format!("the answer does not serialize: {e}")))?;
        json.push(b'\n');
        let json: Arc<[u8]> = json.into();
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let a = answers.entry(family.to_owned()).or_default();
        // An answer computed on an older revision than the kept ones (a change came meanwhile) is not kept.
        if state.revision >= a.revision {
            if !current(a) || a.json.len() >= ANSWERS_PER_FAMILY {
                *a = Answers { revision: state.revision, today: Some(today), json: HashMap::new() };
            }
            a.json.insert(key, Arc::clone(&json));
        }
        Ok(json)
    }

    /// Upload every file of the build output `dir` as blobs and publish it (a publish from this machine).
    pub fn publish_dir(
        &self,
        dir: &Path,
        known_issues: Vec<KnownIssue>,
        actor: &str,
        now: Timestamp,
    ) -> Result<PublishOutcome, CatalogError> {
        let files = crate::bundle::scan(dir).map_err(io(dir))?;
        for f in &files {
            let path = dir.join(&f.path);
            self.blobs.put_file(&f.digest, &path)?;
        }
        self.publish(&PublishRequest { files, known_issues }, actor, now)
    }

    /// Publish a bundle whose files are uploaded: verify it, then record the version in one transaction.
    pub fn publish(
        &self,
        req: &PublishRequest,
        actor: &str,
        now: Timestamp,
    ) -> Result<PublishOutcome, CatalogError> {
        // Checked in the request's order, so `files[i]` names the entry as the client sent it.
        let mut paths: HashMap<&str, usize> = HashMap::with_capacity(req.files.len());
        for (i, f) in req.files.iter().enumerate() {
            if !check_path(&f.path) {
                return Err(CatalogError::invalid(
                    format!("files[{i}].path"),
                    format!("`{}` is not a relative path inside the bundle", f.path),
                ));
            }
            if digest_hex(&f.digest).is_err() {
                return Err(CatalogError::invalid(
                    format!("files[{i}].digest"),
                    format!("`{}` is not sha256:<64 hex>", f.digest),
                ));
            }
            if let Some(first) = paths.insert(&f.path, i) {
                return Err(CatalogError::invalid(
                    format!("files[{i}].path"),
                    format!("`{}` is listed twice (also files[{first}])", f.path),
                ));
            }
        }
        // A file is no folder: `a` and `a/b` cannot both be files of a bundle.
        for (i, f) in req.files.iter().enumerate() {
            let mut dir = f.path.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                if let Some(j) = paths.get(parent) {
                    return Err(CatalogError::invalid(
                        format!("files[{i}].path"),
                        format!("`{}` is inside `{parent}`, which files[{j}] lists as a file", f.path),
                    ));
                }
                dir = parent;
            }
        }
        let mut files = req.files.clone();
        files.sort();
        if !files.iter().any(|f| f.path == MANIFEST_FILE) {
            return Err(CatalogError::invalid("files", "the bundle has no manifest.json"));
        }
        let mut missing = Vec::new();
        for f in &files {
            match self.blobs.touch(&f.digest)? {
                Some(size) if size == f.size => {}
                _ => missing.push(f.digest.clone()),
            }
        }
        if !missing.is_empty() {
            missing.dedup();
            return Err(CatalogError::MissingBlobs { missing });
        }

        let staging = self.stage(&files)?;
        let verified = self.verify_bundle(&staging.0, &files)?;
        let record = self.record(&verified, files, actor, now)?;
        let current = Bytes::read(&staging.0, &record)?;
        // The version's OCI image becomes pullable from the registry in the same transaction.
        let registry =
            crate::registry::publish::published(&record, &|rel| std::fs::read(staging.0.join(rel)))?;

        let mut outcome = None;
        self.meta.write(&mut |tx| {
            if let Some(existing) = tx.version(&record.family, &record.version)? {
                if existing.manifest_digest == record.manifest_digest {
                    outcome = Some(PublishOutcome { created: false, version: existing });
                    return Ok(());
                }
                return Err(CatalogError::Conflict {
                    message: format!(
                        "{} is already published as another image (manifest {}, this one is {}); publish a new version",
                        record.id(),
                        existing.manifest_digest,
                        record.manifest_digest
                    ),
                });
            }
            let previous = tx.previous(&record.family, &record.version)?;
            let previous_bytes = match &previous {
                Some(p) => Some(Bytes::from_blobs(&*self.blobs, p)?),
                None => None,
            };
            let mut record = record.clone();
            record.lifecycle = lifecycle::on_publish(&record.policy, Day::of(now));
            let known: Vec<KnownIssue> = crate::known_issues::select(&req.known_issues, &record.family, &record.version)
                .into_iter()
                .cloned()
                .collect();
            let notes = notes::render(&notes::NotesInput {
                family: &record.family,
                version: &record.version,
                published_at: now,
                parent: record.parent.as_ref(),
                lifecycle: &record.lifecycle,
                current: current.build(),
                previous: previous.as_ref().zip(previous_bytes.as_ref()).map(|(p, b)| (p.version.clone(), b.build())),
                known_issues: &known,
            })
            .map_err(CatalogError::Notes)?;
            tx.insert_version(&record, &notes)?;
            registry.write(tx)?;
            tx.append_audit(&NewAudit {
                at: now,
                actor: actor.to_owned(),
                action: "publish",
                family: Some(record.family.clone()),
                version: Some(record.version.clone()),
                detail: serde_json::json!({
                    "manifest_digest": record.manifest_digest,
                    "certified": record.certified,
                    "signed_by": record.signed_by,
                }),
            })?;
            outcome = Some(PublishOutcome { created: true, version: record });
            Ok(())
        })?;
        drop(staging);
        outcome.ok_or_else(|| CatalogError::rejected("publish did not complete"))
    }

    /// Link (or copy) the bundle's blobs into a fresh staging folder.
    fn stage(&self, files: &[FileRecord]) -> Result<Staging, CatalogError> {
        let n = STAGING_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(STAGING_DIR).join(format!("{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir).map_err(io(&dir))?;
        let staging = Staging(dir);
        for f in files {
            let dest = staging.0.join(&f.path);
            if let Some(parent) = dest.parent() {
                fs_err::create_dir_all(parent).map_err(io(parent))?;
            }
            let linked =
                self.blobs.local_path(&f.digest).is_some_and(|src| std::fs::hard_link(src, &dest).is_ok());
            if !linked {
                let mut src = self.blobs.open(&f.digest)?;
                let mut out = fs_err::File::create(&dest).map_err(io(&dest))?;
                std::io::copy(&mut src, &mut out).map_err(io(&dest))?;
            }
        }
        Ok(staging)
    }

    /// Verify a staged bundle with the trusted keys and check its certification.
    fn verify_bundle(&self, dir: &Path, files: &[FileRecord]) -> Result<Verified, CatalogError> {
        if self.trusted.is_empty() {
            return Err(CatalogError::rejected(
                "this catalog trusts no signing key yet (serve it with --trust-key PUB)",
            ));
        }
        let mut errors = Vec::new();
        let mut report = None;
        for key in &self.trusted {
            match kiln_sign::verify_dir(dir, key, None) {
                Ok(r) => {
                    report = Some(r);
                    break;
                }
                Err(e) => errors.push(e),
            }
        }
        let Some(report) = report else {
            let keyed = errors.into_iter().find(|e| {
                !matches!(
                    e,
                    kiln_sign::VerifyError::WrongKey { .. } | kiln_sign::VerifyError::ManifestEdited { .. }
                )
            });
            return Err(match keyed {
                Some(e) => CatalogError::Rejected {
                    message: "the bundle does not verify".into(),
                    source: Some(Box::new(e)),
                },
                None => CatalogError::rejected(format!(
                    "not signed by a key this catalog trusts ({})",
                    self.trusted_keys().join(", ")
                )),
            });
        };
        let manifest = Manifest::read(dir).map_err(|e| CatalogError::Rejected {
            message: "manifest.json".into(),
            source: Some(Box::new(e)),
        })?;
        let manifest_digest =
            files.iter().find(|f| f.path == MANIFEST_FILE).map(|f| f.digest.clone()).unwrap_or_default();
        if !manifest.artifacts.iter().any(|a| a.kind == ArtifactKind::Report && a.path == CERTIFICATION) {
            return Err(CatalogError::rejected(format!(
                "{} {} has no certification report ({CERTIFICATION} is not in its signed manifest): run `kiln test` before signing",
                manifest.name, manifest.version
            )));
        }
        let path = dir.join(CERTIFICATION);
        let bytes = fs_err::read(&path).map_err(io(&path))?;
        let cert: CertificationSummary = serde_json::from_slice(&bytes).map_err(|e| {
            CatalogError::rejected(format!("{CERTIFICATION}: not a certification report: {e}"))
        })?;
        if cert.schema != "kiln.certification/v1" {
            return Err(CatalogError::rejected(format!(
                "{CERTIFICATION}: schema `{}` is not supported",
                cert.schema
            )));
        }
        if cert.image.name != manifest.name || cert.image.version != manifest.version {
            return Err(CatalogError::rejected(format!(
                "{CERTIFICATION} certifies {} {}, not {} {}",
                cert.image.name, cert.image.version, manifest.name, manifest.version
            )));
        }
        if !cert.passed || cert.certified.is_empty() {
            return Err(CatalogError::rejected(format!(
                "{} {} did not pass certification (see {CERTIFICATION}); only certified images are published",
                manifest.name, manifest.version
            )));
        }
        for a in &cert.artifacts {
            match manifest.artifacts.iter().find(|m| m.path == a.path) {
                Some(m) if m.sha256 == a.sha256 => {}
                Some(m) => {
                    return Err(CatalogError::rejected(format!(
                        "{}: certified as {} but the signed manifest lists {}: the certified artifact is not the one published",
                        a.path, a.sha256, m.sha256
                    )))
                }
                None => {
                    return Err(CatalogError::rejected(format!(
                        "{}: certified but not in the signed manifest",
                        a.path
                    )))
                }
            }
        }
        let mut certified = cert.certified;
        certified.sort();
        certified.dedup();
        Ok(Verified { manifest, manifest_digest, key: report.key, certified })
    }

    fn record(
        &self,
        v: &Verified,
        files: Vec<FileRecord>,
        actor: &str,
        now: Timestamp,
    ) -> Result<VersionRecord, CatalogError> {
        let m = &v.manifest;
        if !crate::model::is_name(&m.name) {
            return Err(CatalogError::rejected(format!("`{}` is not a valid family name", m.name)));
        }
        let version = m
            .version
            .parse::<semver::Version>()
            .map_err(|e| CatalogError::rejected(format!("version `{}` is not semver: {e}", m.version)))?;
        let parent = match &m.parent {
            Some(p) => Some(ParentRef {
                family: p.name.clone(),
                version: p.version.parse().map_err(|e| {
                    CatalogError::rejected(format!("parent version `{}` is not semver: {e}", p.version))
                })?,
                digest: p.digest.clone(),
                reference: p.reference.clone(),
            }),
            None => None,
        };
        Ok(VersionRecord {
            family: m.name.clone(),
            version,
            manifest_digest: v.manifest_digest.clone(),
            image_digest: m.artifacts.iter().find(|a| a.kind == ArtifactKind::Oci).map(|a| a.sha256.clone()),
            published_at: now,
            published_by: actor.to_owned(),
            signed_by: v.key.clone(),
            parent,
            claimed: m.contracts.clone(),
            certified: v.certified.clone(),
            artifacts: m.artifacts.iter().map(ArtifactRecord::from).collect(),
            files,
            policy: policy_of(m),
            lifecycle: Default::default(),
        })
    }

    /// Move `channel` of `family` to `version` (creating the channel); `None` when it already points there.
    pub fn promote(
        &self,
        family: &str,
        channel: &str,
        version: &semver::Version,
        actor: &str,
        now: Timestamp,
    ) -> Result<Option<ChannelMove>, CatalogError> {
        if !crate::model::is_name(channel) {
            return Err(CatalogError::invalid("channel", format!("`{channel}` is not a valid channel name")));
        }
        let mut moved = None;
        self.meta.write(&mut |tx| {
            let state = tx.family(family)?.ok_or_else(|| CatalogError::not_found(format!("family {family}")))?;
            let Some(p) = lifecycle::promote(&state, channel, version, now, actor)? else {
                return Ok(());
            };
            tx.move_channel(family, channel, &p.channel_move)?;
            for (v, l) in &p.lifecycle_updates {
                tx.set_lifecycle(family, v, l)?;
            }
            tx.append_audit(&NewAudit {
                at: now,
                actor: actor.to_owned(),
                action: "promote",
                family: Some(family.to_owned()),
                version: Some(version.clone()),
                detail: serde_json::json!({
                    "channel": channel,
                    "from": p.channel_move.from,
                    "to": p.channel_move.to,
                    "lifecycle": p.lifecycle_updates.iter().map(|(v, l)| serde_json::json!({"version": v, "lifecycle": l})).collect::<Vec<_>>(),
                }),
            })?;
            moved = Some(p.channel_move.clone());
            Ok(())
        })?;
        Ok(moved)
    }

    /// Change a version's lifecycle by hand; a revocation flags every image built FROM it (transitively).
    /// Returns the version and the descendants flagged.
    pub fn change_lifecycle(
        &self,
        family: &str,
        version: &semver::Version,
        change: &LifecycleChange,
        actor: &str,
        now: Timestamp,
    ) -> Result<(VersionRecord, Vec<String>), CatalogError> {
        let mut out = None;
        self.meta.write(&mut |tx| {
            let mut record = tx
                .version(family, version)?
                .ok_or_else(|| CatalogError::not_found(format!("version {family}@{version}")))?;
            let before = record.lifecycle.clone();
            record.lifecycle = lifecycle::apply_change(&before, change, now, actor)?;
            tx.set_lifecycle(family, version, &record.lifecycle)?;
            let revoked_now = before.revoked.is_none() && record.lifecycle.revoked.is_some();
            tx.append_audit(&NewAudit {
                at: now,
                actor: actor.to_owned(),
                action: if revoked_now { "revoke" } else { "lifecycle" },
                family: Some(family.to_owned()),
                version: Some(version.clone()),
                detail: serde_json::json!({"from": before, "to": record.lifecycle}),
            })?;
            let mut flagged = Vec::new();
            if let (true, Some(revocation)) = (revoked_now, &record.lifecycle.revoked) {
                let origin = record.id();
                let mut queue = VecDeque::from([(family.to_owned(), version.clone())]);
                while let Some((f, v)) = queue.pop_front() {
                    for child in tx.children(&f, &v)? {
                        queue.push_back((child.family.clone(), child.version.clone()));
                        let Some(l) = lifecycle::flag_descendant(&child.lifecycle, revocation, &origin) else {
                            continue;
                        };
                        tx.set_lifecycle(&child.family, &child.version, &l)?;
                        tx.append_audit(&NewAudit {
                            at: now,
                            actor: actor.to_owned(),
                            action: "revoke",
                            family: Some(child.family.clone()),
                            version: Some(child.version.clone()),
                            detail: serde_json::json!({"inherited_from": origin, "reason": revocation.reason}),
                        })?;
                        flagged.push(child.id());
                    }
                }
            }
            out = Some((record, flagged));
            Ok(())
        })?;
        out.ok_or_else(|| CatalogError::not_found(format!("version {family}@{version}")))
    }

    /// Remove what no version refers to: blobs older than `grace` (younger ones may belong to a publish in
    /// progress), unfinished uploads and staging folders older than `grace`; and the boot files extracted
    /// for versions that are retired now.
    pub fn gc(&self, grace: Duration) -> Result<GcReport, CatalogError> {
        let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let referenced = self.meta.referenced_blobs()?;
        let mut report = GcReport::default();
        for b in self.blobs.list()? {
            if referenced.contains(&b.digest) {
                continue;
            }
            if b.modified >= cutoff {
                report.blobs_kept_young += 1;
                continue;
            }
            self.blobs.delete(&b.digest)?;
            report.blobs_removed += 1;
            report.bytes_removed += b.size;
        }
        report.uploads_removed = self.blobs.sweep_uploads(cutoff)?;
        let staging = self.root.join(STAGING_DIR);
        if let Ok(entries) = std::fs::read_dir(&staging) {
            for e in entries.flatten() {
                let old = e.metadata().and_then(|m| m.modified()).map(|t| t < cutoff).unwrap_or(true);
                if old && std::fs::remove_dir_all(e.path()).is_ok() {
                    report.staging_removed += 1;
                }
            }
        }
        report.boot_cache_removed = crate::boot::ipxe::sweep(self, Day::of(Timestamp::now()), cutoff)?;
        Ok(report)
    }
}

/// The family's lifecycle policy as the build recorded it from the blueprint.
fn policy_of(m: &Manifest) -> LifecyclePolicy {
    m.lifecycle.as_ref().map_or_else(LifecyclePolicy::default, |p| LifecyclePolicy {
        support_months: p.support_months,
        deprecate_after_days: p.deprecate_after_days,
    })
}

/// The bytes release notes read from a version's bundle.
struct Bytes {
    sbom: Vec<u8>,
    certification: Vec<u8>,
    blueprint: Option<(String, String)>,
}

impl Bytes {
    fn sbom_path(record: &VersionRecord) -> Option<String> {
        record.artifacts.iter().find(|a| a.kind == ArtifactKind::Sbom).map(|a| a.path.clone())
    }

    fn blueprint_path(record: &VersionRecord) -> Option<String> {
        record.files.iter().find(|f| f.path.starts_with("build/blueprint/")).map(|f| f.path.clone())
    }

    /// The SBOM, certification report and blueprint of `record`, each read with `read` (a bundle path in,
    /// its bytes out).
    fn collect(
        record: &VersionRecord,
        read: impl Fn(&str) -> Result<Vec<u8>, CatalogError>,
    ) -> Result<Self, CatalogError> {
        let sbom = match Self::sbom_path(record) {
            Some(p) => read(&p)?,
            None => Vec::new(),
        };
        let blueprint = match Self::blueprint_path(record) {
            Some(p) => Some((p.clone(), String::from_utf8_lossy(&read(&p)?).into_owned())),
            None => None,
        };
        Ok(Self { sbom, certification: read(CERTIFICATION)?, blueprint })
    }

    /// From a staged bundle.
    fn read(dir: &Path, record: &VersionRecord) -> Result<Self, CatalogError> {
        let read = |rel: &str| {
            let p = dir.join(rel);
            fs_err::read(&p).map_err(io(&p))
        };
        Self::collect(record, read)
    }

    /// From the blob store (an earlier version).
    fn from_blobs(blobs: &dyn BlobStore, record: &VersionRecord) -> Result<Self, CatalogError> {
        let read = |rel: &str| -> Result<Vec<u8>, CatalogError> {
            use std::io::Read as _;
            let Some(f) = record.file(rel) else { return Ok(Vec::new()) };
            let mut out = Vec::new();
            blobs
                .open(&f.digest)?
                .read_to_end(&mut out)
                .map_err(|source| StoreError::Io { path: PathBuf::from(&f.digest), source })?;
            Ok(out)
        };
        Self::collect(record, read)
    }

    fn build(&self) -> notes::Build<'_> {
        notes::Build {
            sbom: &self.sbom,
            certification: &self.certification,
            blueprint: self.blueprint.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
        }
    }
}

/// Write a file readable by its owner only, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CatalogError> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
    fs_err::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: &str) -> VersionRecord {
        VersionRecord {
            family: "web".into(),
            version: version.parse().unwrap(),
            manifest_digest: format!("sha256:{}", "0".repeat(64)),
            image_digest: None,
            published_at: Timestamp(0),
            published_by: "test".into(),
            signed_by: "key".into(),
            parent: None,
            claimed: vec!["base-os@^1".into()],
            certified: vec!["base-os@1.0.0".parse().unwrap()],
            artifacts: Vec::new(),
            files: Vec::new(),
            policy: LifecyclePolicy::default(),
            lifecycle: Default::default(),
        }
    }

    fn chosen(json: &[u8]) -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(json).unwrap()["chosen"]["version"].clone()
    }

    #[test]
    fn resolve_answers_are_kept_until_the_family_or_the_day_changes() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let notes = crate::model::ReleaseNotes { markdown: String::new(), html: String::new() };
        c.meta()
            .write(&mut |tx| {
                for v in ["1.0.0", "1.1.0"] {
                    tx.insert_version(&record(v), &notes)?;
                }
                Ok(())
            })
            .unwrap();
        let req = ResolveRequest { contracts: vec!["base-os@^1".parse().unwrap()], ..Default::default() };
        let (january, june): (Day, Day) = ("2027-01-01".parse().unwrap(), "2027-06-01".parse().unwrap());
        let api = |day| {
            let mut json = serde_json::to_vec_pretty(&c.resolve("web", &req, day).unwrap()).unwrap();
            json.push(b'\n');
            json
        };

        let first = c.resolve_json("web", &req, january).unwrap();
        assert_eq!(first[..], api(january)[..], "the answer is the resolution as the API writes JSON");
        assert_eq!(chosen(&first), "1.1.0");
        assert!(Arc::ptr_eq(&first, &c.resolve_json("web", &req, january).unwrap()), "asked again: kept");

        // A change to the family is seen by the next request.
        let revoke = LifecycleChange { revoke: Some("CVE".into()), ..Default::default() };
        c.change_lifecycle("web", &"1.1.0".parse().unwrap(), &revoke, "test", Timestamp(0)).unwrap();
        let eol = LifecycleChange {
            end_of_life_on: Some(Some("2027-03-01".parse().unwrap())),
            ..Default::default()
        };
        c.change_lifecycle("web", &"1.0.0".parse().unwrap(), &eol, "test", Timestamp(0)).unwrap();
        let after = c.resolve_json("web", &req, january).unwrap();
        assert_eq!(chosen(&after), "1.0.0");
        assert_eq!(after[..], api(january)[..]);

        // So is another day, with no change in between: 1.0.0 is end of life in June.
        let later = c.resolve_json("web", &req, june).unwrap();
        assert_eq!(chosen(&later), serde_json::Value::Null);
        assert_eq!(later[..], api(june)[..]);
        // Other requests get their own answers.
        let any = ResolveRequest::default();
        assert_eq!(
            c.resolve_json("web", &any, january).unwrap()[..],
            {
                let mut json = serde_json::to_vec_pretty(&c.resolve("web", &any, january).unwrap()).unwrap();
                json.push(b'\n');
                json
            }[..]
        );
    }
}
