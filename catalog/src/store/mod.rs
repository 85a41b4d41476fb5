//! Where the catalog keeps things: metadata ([`MetaStore`]: families, versions, channels, notes, audit,
//! tokens, the OCI registry's manifests, tags, repository blobs and uploads) and content ([`BlobStore`]:
//! every file of a published bundle and every blob pushed to the registry, by sha256 or sha512).
//!
//! Both are traits so the scale-out backends plug in beside the embedded default: [`sqlite::SqliteStore`]
//! (WAL, one file) and [`blobs::FsBlobs`] (a content-addressed folder); scaled out,
//! [`postgres::PostgresStore`] (one PostgreSQL database several replicas share) and
//! [`ocireg::RegistryBlobs`] (blobs in a repository of an OCI registry). [`Backends`] says which. Writes to metadata happen in one
//! transaction ([`MetaStore::write`]): the catalog's rules run inside it on what the transaction reads, so
//! two writers never act on stale state, and a crash leaves the catalog as it was before the transaction.

pub mod blobs;
pub mod ocireg;
pub mod postgres;
pub mod registry;
pub mod sqlite;

use std::{
    collections::BTreeSet,
    io::Read,
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::model::{
    AuditEntry, ChannelMove, FamilyState, FamilySummary, Lifecycle, ReleaseNotes, TokenRecord, VersionRecord,
};

pub use registry::{Algorithm, RegistryManifest, Upload};

/// A storage failure (not a rule of the catalog being broken).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("catalog database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("catalog database {path}: stored {what} is corrupt: {reason}")]
    Corrupt { path: PathBuf, what: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {digest} is not in the catalog")]
    BlobMissing { digest: String },
    #[error("blob upload for {expected}: the content's digest is {found}")]
    BlobDigest { expected: String, found: String },
    #[error("blob upload for {digest}: {found} bytes, {expected} announced")]
    BlobSize { digest: String, expected: u64, found: u64 },
    #[error("`{0}` is not a digest (sha256:<64 hex> or sha512:<128 hex>)")]
    BadDigest(String),
    #[error("no upload {id} in progress")]
    UploadUnknown { id: String },
    /// A chunk that does not start where the upload stands (`size` bytes received).
    #[error("upload {id} has {size} bytes; a chunk starting at {start} is out of order")]
    UploadRange { id: String, size: u64, start: u64 },
    /// A chunk whose length is not what its `Content-Range`/`Content-Length` announced (nothing kept).
    #[error("upload {id}: the chunk has {found} bytes, {expected} announced")]
    UploadLength { id: String, expected: u64, found: u64 },
    /// Another request is writing to the upload.
    #[error("upload {id} is being written by another request")]
    UploadBusy { id: String, size: u64 },
    #[error("catalog database {path} was written by a newer kiln (schema {found}, this kiln knows {known})")]
    Schema { path: PathBuf, found: i64, known: i64 },
    /// PostgreSQL failed (`database` is the connection string without its credentials).
    #[error("catalog database {database}: {source}")]
    Postgres {
        database: String,
        #[source]
        source: ::postgres::Error,
    },
    /// The TLS asked for by the connection string cannot be set up (`sslrootcert` unreadable, …).
    #[error("catalog database {database}: TLS: {message}")]
    PostgresTls { database: String, message: String },
    /// A row that may exist once exists already (another replica wrote it first).
    #[error("{what} exists already")]
    Duplicate { what: String },
    /// The OCI registry holding the blobs failed (`registry` without credentials).
    #[error("blob registry {registry}: {message}")]
    Registry { registry: String, message: String },
}

/// Where a catalog keeps its metadata and its blobs, beside its data folder (trusted keys, staging, the
/// admin token). The defaults are the embedded stores in the data folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backends {
    /// A PostgreSQL connection string (`postgres://user:password@host:port/db` or `host=… dbname=…`):
    /// metadata there instead of `DATA/catalog.db`.
    pub postgres: Option<String>,
    /// An OCI registry (`http[s]://[user:password@]host[:port]`): blobs there instead of `DATA/blobs`.
    /// Its ledger (which blobs are stored, since when; upload sessions) is kept in PostgreSQL, so this
    /// needs [`Backends::postgres`].
    pub blob_registry: Option<String>,
    /// The registry's repository the blobs are pushed to ([`ocireg::DEFAULT_REPOSITORY`] when `None`).
    pub blob_repository: Option<String>,
}

/// A metadata store and a blob store.
pub type Stores = (Box<dyn MetaStore>, Box<dyn BlobStore>);

impl Backends {
    /// The metadata and blob stores these name; blobs in the folder `root` when no registry is named.
    pub fn open(&self, root: &Path) -> Result<Stores, StoreError> {
        let pg = match &self.postgres {
            Some(url) => Some(postgres::PostgresStore::open(url)?),
            None => None,
        };
        let blobs: Box<dyn BlobStore> = match (&self.blob_registry, &pg) {
            (Some(registry), Some(pg)) => Box::new(ocireg::RegistryBlobs::open(
                registry,
                self.blob_repository.as_deref().unwrap_or(ocireg::DEFAULT_REPOSITORY),
                std::sync::Arc::new(pg.clone()),
            )?),
            (Some(registry), None) => {
                return Err(StoreError::Registry {
                    registry: ocireg::redact(registry),
                    message: "blobs in a registry keep their ledger in PostgreSQL: give --postgres too"
                        .into(),
                })
            }
            (None, _) => Box::new(blobs::FsBlobs::open(root)?),
        };
        let meta: Box<dyn MetaStore> = match pg {
            Some(pg) => Box::new(pg),
            None => Box::new(sqlite::SqliteStore::open(&root.join("catalog.db"))?),
        };
        Ok((meta, blobs))
    }
}

/// An audit entry to append (the store numbers it).
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub at: crate::model::Timestamp,
    pub actor: String,
    pub action: &'static str,
    pub family: Option<String>,
    pub version: Option<semver::Version>,
    pub detail: serde_json::Value,
}

/// Which audit entries to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub family: Option<String>,
    pub version: Option<semver::Version>,
    /// Entries with `seq` below this (paging backwards); `None`: from the newest.
    pub before: Option<u64>,
    pub limit: usize,
}

/// The reads and writes of one metadata transaction.
pub trait Tx {
    /// The whole family (every version, channels).
    fn family(&mut self, name: &str) -> Result<Option<FamilyState>, StoreError>;
    /// One version.
    fn version(
        &mut self,
        family: &str,
        version: &semver::Version,
    ) -> Result<Option<VersionRecord>, StoreError>;
    /// The newest version of `family` below `version`.
    fn previous(
        &mut self,
        family: &str,
        version: &semver::Version,
    ) -> Result<Option<VersionRecord>, StoreError>;
    /// Versions (of any family) built FROM `family@version`.
    fn children(&mut self, family: &str, version: &semver::Version)
        -> Result<Vec<VersionRecord>, StoreError>;
    fn insert_version(&mut self, record: &VersionRecord, notes: &ReleaseNotes) -> Result<(), StoreError>;
    fn set_lifecycle(
        &mut self,
        family: &str,
        version: &semver::Version,
        lifecycle: &Lifecycle,
    ) -> Result<(), StoreError>;
    fn move_channel(&mut self, family: &str, channel: &str, mv: &ChannelMove) -> Result<(), StoreError>;
    fn append_audit(&mut self, entry: &NewAudit) -> Result<u64, StoreError>;
    fn insert_token(&mut self, token: &TokenRecord) -> Result<(), StoreError>;
    /// Remove a token by id; whether it existed.
    fn delete_token(&mut self, id: &str) -> Result<bool, StoreError>;

    // The OCI registry (`catalog/src/registry`).
    /// Record a manifest in its repository (replacing the same digest's record) with what it refers to.
    fn registry_put_manifest(&mut self, manifest: &RegistryManifest) -> Result<(), StoreError>;
    /// Point `tag` of `repo` at `digest`.
    fn registry_set_tag(&mut self, repo: &str, tag: &str, digest: &str) -> Result<(), StoreError>;
    /// Make the blob `digest` a member of `repo` (pushed or mounted there, or published into a family).
    fn registry_add_blob(&mut self, repo: &str, digest: &str) -> Result<(), StoreError>;
    /// Remove a manifest and the tags pointing at it; whether it was there.
    fn registry_delete_manifest(&mut self, repo: &str, digest: &str) -> Result<bool, StoreError>;
    fn registry_delete_tag(&mut self, repo: &str, tag: &str) -> Result<bool, StoreError>;
    /// Remove the blob from the repository (its content stays while anything else refers to it).
    fn registry_delete_blob(&mut self, repo: &str, digest: &str) -> Result<bool, StoreError>;
    fn registry_start_upload(&mut self, upload: &Upload) -> Result<(), StoreError>;
    fn registry_end_upload(&mut self, id: &str) -> Result<bool, StoreError>;
}

/// The catalog's metadata.
pub trait MetaStore: Send + Sync + std::fmt::Debug {
    fn families(&self) -> Result<Vec<FamilySummary>, StoreError>;
    /// The family's revision, bumped by every change to it; `None` when there is no such family.
    fn family_revision(&self, name: &str) -> Result<Option<u64>, StoreError>;
    /// Whether reads are queries of a local file that take microseconds (SQLite), which callers may run on
    /// an async thread rather than pay for a handoff to a blocking thread and back; not a database across
    /// the network.
    fn local_reads(&self) -> bool {
        false
    }
    fn family(&self, name: &str) -> Result<Option<FamilyState>, StoreError>;
    fn notes(&self, family: &str, version: &semver::Version) -> Result<Option<ReleaseNotes>, StoreError>;
    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Every blob digest a version or a registry manifest refers to (manifests themselves included).
    fn referenced_blobs(&self) -> Result<BTreeSet<String>, StoreError>;

    // The OCI registry's reads.
    fn registry_manifest(&self, repo: &str, digest: &str) -> Result<Option<RegistryManifest>, StoreError>;
    /// The digest `tag` of `repo` points at.
    fn registry_tag(&self, repo: &str, tag: &str) -> Result<Option<String>, StoreError>;
    /// Every tag of `repo`, in byte order.
    fn registry_tags(&self, repo: &str) -> Result<Vec<String>, StoreError>;
    /// Whether the blob is a member of `repo`; with `repo` `None`, of any repository.
    fn registry_has_blob(&self, repo: Option<&str>, digest: &str) -> Result<bool, StoreError>;
    /// The manifests of `repo` whose `subject` is `digest`, by digest.
    fn registry_referrers(&self, repo: &str, digest: &str) -> Result<Vec<RegistryManifest>, StoreError>;
    /// Whether `repo` holds anything (a manifest, a tag or a blob).
    fn registry_repo_exists(&self, repo: &str) -> Result<bool, StoreError>;
    fn registry_upload(&self, id: &str) -> Result<Option<Upload>, StoreError>;
    /// Run `f` in one transaction and commit when it returns `Ok`; roll back otherwise.
    fn write(
        &self,
        f: &mut dyn FnMut(&mut dyn Tx) -> Result<(), crate::CatalogError>,
    ) -> Result<(), crate::CatalogError>;
}

/// A blob in the store, for garbage collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// Content-addressed storage of bundle files.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Whether the store answers now (a health check: the folder is there, the registry responds).
    fn check(&self) -> Result<(), StoreError>;
    /// The blob's size when present.
    fn stat(&self, digest: &str) -> Result<Option<u64>, StoreError>;
    /// Refresh a present blob's age (a publish about to refer to it keeps it from collection); its size.
    fn touch(&self, digest: &str) -> Result<Option<u64>, StoreError>;
    /// Store `content` under `digest`, verifying both digest and (when given) size; nothing is visible
    /// under the digest unless all of it arrived and matched. Storing a present blob refreshes its age (a
    /// publish in progress keeps it from collection).
    fn put(&self, digest: &str, size: Option<u64>, content: &mut dyn Read) -> Result<u64, StoreError>;
    /// Store the local file at `path` (a publish from this machine): like [`BlobStore::put`].
    fn put_file(&self, digest: &str, path: &Path) -> Result<u64, StoreError>;
    /// Read a blob.
    fn open(&self, digest: &str) -> Result<Box<dyn ReadSeek>, StoreError>;
    /// The blob's local path, when the store is a local folder (streamed from the file, linked into a
    /// verification folder).
    fn local_path(&self, digest: &str) -> Option<PathBuf>;
    /// Whether blobs are local files ([`BlobStore::local_path`] answers).
    fn is_local(&self) -> bool {
        false
    }
    fn list(&self) -> Result<Vec<StoredBlob>, StoreError>;
    fn delete(&self, digest: &str) -> Result<(), StoreError>;
    /// Remove unfinished uploads older than `older_than`; how many.
    fn sweep_uploads(&self, older_than: SystemTime) -> Result<usize, StoreError>;

    // Registry uploads: a session's bytes, appended in order, then checked against the digest the client
    // names and moved into place.
    /// Start an empty upload session `id`.
    fn upload_create(&self, id: &str) -> Result<(), StoreError>;
    /// The bytes a session has received; `None` when there is no such session.
    fn upload_size(&self, id: &str) -> Result<Option<u64>, StoreError>;
    /// Append `content` to the session. `start` (when the client gave a range) must be the session's size
    /// ([`StoreError::UploadRange`] otherwise); `length` (when announced) must be what arrives, or nothing
    /// of the chunk is kept. The new size.
    fn upload_append(
        &self,
        id: &str,
        start: Option<u64>,
        length: Option<u64>,
        content: &mut dyn Read,
    ) -> Result<u64, StoreError>;
    /// End the session: its bytes become the blob `digest` when they match it (the session is gone either
    /// way); the blob's size.
    fn upload_finish(&self, id: &str, digest: &str) -> Result<u64, StoreError>;
    /// Drop a session; whether it existed.
    fn upload_cancel(&self, id: &str) -> Result<bool, StoreError>;
}

/// `Read + Seek` as one object type.
pub trait ReadSeek: Read + std::io::Seek + Send {}
impl<T: Read + std::io::Seek + Send> ReadSeek for T {}

/// The hex part of a `sha256:<64 hex>` or `sha512:<128 hex>` digest (lowercase).
pub fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    parse_digest(digest).map(|(_, hex)| hex)
}

/// The algorithm and hex part of a `sha256:<64 hex>` or `sha512:<128 hex>` digest (lowercase).
pub fn parse_digest(digest: &str) -> Result<(Algorithm, &str), StoreError> {
    let bad = || StoreError::BadDigest(digest.to_owned());
    let (alg, hex) = digest.split_once(':').ok_or_else(bad)?;
    let alg = Algorithm::from_name(alg).ok_or_else(bad)?;
    if hex.len() == alg.hex_len() && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok((alg, hex))
    } else {
        Err(bad())
    }
}
