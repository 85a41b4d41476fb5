//! Where the catalog keeps things: metadata ([`MetaStore`]: families, versions, channels, notes, audit,
//! tokens) and content ([`BlobStore`]: every file of a published bundle, by sha256).
//!
//! Both are traits so the scale-out backends plug in beside the embedded default: [`sqlite::SqliteStore`]
//! (WAL, one file) and [`blobs::FsBlobs`] (a content-addressed folder). Writes to metadata happen in one
//! transaction ([`MetaStore::write`]): the catalog's rules run inside it on what the transaction reads, so
//! two writers never act on stale state, and a crash leaves the catalog as it was before the transaction.

pub mod blobs;
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
    #[error("`{0}` is not a sha256 digest (sha256:<64 hex>)")]
    BadDigest(String),
    #[error("catalog database {path} was written by a newer kiln (schema {found}, this kiln knows {known})")]
    Schema { path: PathBuf, found: i64, known: i64 },
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
}

/// The catalog's metadata.
pub trait MetaStore: Send + Sync + std::fmt::Debug {
    fn families(&self) -> Result<Vec<FamilySummary>, StoreError>;
    /// The family's revision, bumped by every change to it; `None` when there is no such family.
    fn family_revision(&self, name: &str) -> Result<Option<u64>, StoreError>;
    fn family(&self, name: &str) -> Result<Option<FamilyState>, StoreError>;
    fn notes(&self, family: &str, version: &semver::Version) -> Result<Option<ReleaseNotes>, StoreError>;
    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Every blob digest a version refers to.
    fn referenced_blobs(&self) -> Result<BTreeSet<String>, StoreError>;
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
    /// The blob's local path, when the store is a local folder (served with sendfile, linked into a
    /// verification folder).
    fn local_path(&self, digest: &str) -> Option<PathBuf>;
    fn list(&self) -> Result<Vec<StoredBlob>, StoreError>;
    fn delete(&self, digest: &str) -> Result<(), StoreError>;
    /// Remove unfinished uploads older than `older_than`; how many.
    fn sweep_uploads(&self, older_than: SystemTime) -> Result<usize, StoreError>;
}

/// `Read + Seek` as one object type.
pub trait ReadSeek: Read + std::io::Seek + Send {}
impl<T: Read + std::io::Seek + Send> ReadSeek for T {}

/// The hex part of a `sha256:<64 hex>` digest.
pub fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
            Ok(h)
        }
        _ => Err(StoreError::BadDigest(digest.to_owned())),
    }
}
