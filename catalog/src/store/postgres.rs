//! The scale-out metadata store: one PostgreSQL database that several `kiln catalog serve` replicas share.
//!
//! The tables are those of [`super::sqlite::SqliteStore`] (versions as their JSON record beside the columns
//! queries need; the OCI registry's manifests, refs, tags, repository blobs and uploads), created or
//! migrated on open under an advisory lock so replicas starting together migrate once. Every
//! [`MetaStore::write`] is one `SERIALIZABLE` transaction: the catalog's rules run on what it reads, and
//! when another replica's concurrent transaction makes that stale, PostgreSQL refuses the commit
//! (serialization failure) and the whole write runs again on fresh state, a few times at most. Reads of a
//! family run in one `REPEATABLE READ` snapshot, so a family and its revision always agree.
//!
//! Two more tables serve [`super::ocireg::RegistryBlobs`] (its [`BlobLedger`]): `blob_ledger` (which blobs
//! the registry holds, their size and when a publish last named them: what garbage collection reads, as a
//! registry cannot list its blobs) and `blob_sessions` (registry upload sessions: their chunks; a request
//! appending holds the session's row lock, so two replicas never append to one session at once).
//!
//! The first admin token is guarded by a unique index (one token created by `catalog`), so two replicas
//! initialising an empty database together make one. The `postgres` crate is the synchronous client (it
//! drives tokio-postgres on a small runtime of its own); the store is called from blocking threads.
//! Connections are pooled; one that broke is dropped.
//!
//! TLS: with `sslmode=require` (or libpq's `verify-ca`/`verify-full`) in the connection string, connections
//! are TLS (native-tls: the system's OpenSSL) and the server's certificate and host name are verified,
//! against the system's CAs and those of `sslrootcert=PATH` (a PEM file, as libpq names it); the server
//! must offer TLS. Without it (`disable`, or libpq's default `prefer`), connections are plain: keep those to
//! loopback or a private network.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use postgres::{error::SqlState, GenericClient, IsolationLevel, NoTls};

use super::{
    ocireg::{BlobLedger, Session},
    AuditQuery, MetaStore, NewAudit, RegistryManifest, StoreError, StoredBlob, Tx, Upload,
};
use crate::{
    model::{
        AuditEntry, Channel, ChannelMove, FamilyState, FamilySummary, Lifecycle, ReleaseNotes, Scope,
        Timestamp, TokenRecord, VersionRecord,
    },
    CatalogError,
};

const SCHEMA_VERSION: i32 = 1;

/// The advisory lock migrations take (any constant of kiln's own).
const MIGRATION_LOCK: i64 = 0x6b69_6c6e_0001;

/// How many times a write runs when concurrent transactions keep invalidating what it read.
const WRITE_ATTEMPTS: u32 = 20;

/// The unique index that lets one token only be created by the catalog itself (the first admin token).
const FIRST_ADMIN_INDEX: &str = "tokens_first_admin";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS families (
    name TEXT PRIMARY KEY,
    revision BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    family TEXT NOT NULL REFERENCES families(name),
    version TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    parent_family TEXT,
    parent_version TEXT,
    record TEXT NOT NULL,
    PRIMARY KEY (family, version)
);
CREATE INDEX IF NOT EXISTS versions_parent ON versions (parent_family, parent_version);
CREATE TABLE IF NOT EXISTS files (
    family TEXT NOT NULL,
    version TEXT NOT NULL,
    path TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (family, version, path)
);
CREATE INDEX IF NOT EXISTS files_digest ON files (digest);
CREATE TABLE IF NOT EXISTS notes (
    family TEXT NOT NULL,
    version TEXT NOT NULL,
    markdown TEXT NOT NULL,
    html TEXT NOT NULL,
    PRIMARY KEY (family, version)
);
CREATE TABLE IF NOT EXISTS channel_moves (
    family TEXT NOT NULL,
    channel TEXT NOT NULL,
    seq BIGINT NOT NULL,
    move TEXT NOT NULL,
    PRIMARY KEY (family, channel, seq)
);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    family TEXT,
    version TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_family ON audit (family, seq);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_first_admin ON tokens (created_by) WHERE created_by = 'catalog';
CREATE TABLE IF NOT EXISTS registry_manifests (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    size BIGINT NOT NULL,
    annotations TEXT,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX IF NOT EXISTS registry_manifests_subject ON registry_manifests (repo, subject);
CREATE TABLE IF NOT EXISTS registry_refs (
    repo TEXT NOT NULL,
    manifest TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (repo, manifest, digest)
);
CREATE INDEX IF NOT EXISTS registry_refs_digest ON registry_refs (digest);
CREATE TABLE IF NOT EXISTS registry_tags (
    repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (repo, tag)
);
CREATE INDEX IF NOT EXISTS registry_tags_digest ON registry_tags (repo, digest);
CREATE TABLE IF NOT EXISTS registry_blobs (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX IF NOT EXISTS registry_blobs_digest ON registry_blobs (digest);
CREATE TABLE IF NOT EXISTS registry_uploads (
    id TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    started_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_ledger (
    digest TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    touched_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_sessions (
    id TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    chunks TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
"#;

/// PostgreSQL metadata store (cheap to clone: clones share the connection pool).
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: postgres::Config,
    /// The TLS connector when the connection string asks for TLS.
    tls: Option<postgres_native_tls::MakeTlsConnector>,
    /// The connection string without its password, for errors.
    database: String,
    pool: Mutex<Vec<postgres::Client>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A client closes its connection by blocking on its own runtime, which panics on an async thread
        // (where the last reference to the catalog may go when a server stops): close them on a thread.
        let clients = std::mem::take(self.pool.get_mut().unwrap_or_else(|e| e.into_inner()));
        if !clients.is_empty() {
            let _ =
                std::thread::Builder::new().name("kiln-postgres-close".into()).spawn(move || drop(clients));
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("database", &self.inner.database).finish()
    }
}

/// What kiln reads from a connection string before tokio-postgres parses it: `sslrootcert` (which it
/// does not know) taken out, and libpq's `sslmode=verify-ca|verify-full` as `require` (kiln always
/// verifies when it uses TLS). The connection string left, and the root certificate file.
fn tls_options(url: &str) -> (String, Option<PathBuf>) {
    let is_url = url.contains("://");
    let mut root = None;
    let mut keep = |kv: &str| -> Option<String> {
        match kv.split_once('=') {
            Some(("sslrootcert", path)) => {
                root = Some(PathBuf::from(if is_url {
                    form_urlencoded::parse(format!("p={path}").as_bytes())
                        .next()
                        .map_or_else(|| path.to_owned(), |(_, p)| p.into_owned())
                } else {
                    path.to_owned()
                }));
                None
            }
            Some(("sslmode", "verify-ca" | "verify-full")) => Some("sslmode=require".to_owned()),
            _ => Some(kv.to_owned()),
        }
    };
    let rest = if is_url {
        match url.split_once('?') {
            Some((base, query)) => {
                let params: Vec<String> =
                    query.split('&').filter(|kv| !kv.is_empty()).filter_map(&mut keep).collect();
                if params.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", params.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        url.split_whitespace().filter_map(&mut keep).collect::<Vec<_>>().join(" ")
    };
    (rest, root)
}

/// A connection string without its password (`postgres://user@host/db`, `host=… user=…`).
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                format!("{}@{host}", userinfo.split_once(':').map_or(userinfo, |(u, _)| u))
            }
            None => authority.to_owned(),
        };
        let path = path.split('?').next().unwrap_or("");
        format!("{scheme}://{authority}/{path}")
    } else {
        url.split_whitespace().filter(|kv| !kv.starts_with("password=")).collect::<Vec<_>>().join(" ")
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// A pooled connection, back in the pool when dropped (unless it broke).
struct Conn<'a> {
    store: &'a Inner,
    client: Option<postgres::Client>,
}

impl Conn<'_> {
    fn get(&mut self) -> &mut postgres::Client {
        self.client.as_mut().expect("a pooled connection is present until dropped")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take().filter(|c| !c.is_closed()) {
            self.store.pool.lock().unwrap_or_else(|e| e.into_inner()).push(c);
        }
    }
}

fn corrupt(database: &str, what: &str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt { path: PathBuf::from(database), what: what.to_owned(), reason: reason.to_string() }
}

fn parse_record(database: &str, json: &str) -> Result<VersionRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| corrupt(database, "version record", e))
}

/// Whether a failed write may succeed when run again: another transaction invalidated what it read.
fn retryable(e: &CatalogError) -> bool {
    let CatalogError::Store(StoreError::Postgres { source, .. }) = e else { return false };
    matches!(
        source.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    ) || (source.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && source.as_db_error().and_then(|d| d.constraint()) != Some(FIRST_ADMIN_INDEX))
}

impl PostgresStore {
    /// Connect to the database `url` and create or migrate kiln's tables.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let database = redact(url);
        let (url, root_cert) = tls_options(url);
        let mut config: postgres::Config =
            url.parse().map_err(|source| StoreError::Postgres { database: database.clone(), source })?;
        let tls = match config.get_ssl_mode() {
            postgres::config::SslMode::Require => {
                let tls_error =
                    |message: String| StoreError::PostgresTls { database: database.clone(), message };
                let mut builder = native_tls::TlsConnector::builder();
                if let Some(path) = &root_cert {
                    let pem = fs_err::read(path).map_err(|e| tls_error(e.to_string()))?;
                    let cert = native_tls::Certificate::from_pem(&pem)
                        .map_err(|e| tls_error(format!("sslrootcert {}: {e}", path.display())))?;
                    builder.add_root_certificate(cert);
                }
                let connector = builder.build().map_err(|e| tls_error(e.to_string()))?;
                Some(postgres_native_tls::MakeTlsConnector::new(connector))
            }
            _ => None,
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let store = Self { inner: Arc::new(Inner { config, tls, database, pool: Mutex::new(Vec::new()) }) };
        store.migrate()?;
        Ok(store)
    }

    fn pg(&self) -> impl Fn(postgres::Error) -> StoreError + '_ {
        |source| StoreError::Postgres { database: self.inner.database.clone(), source }
    }

    fn conn(&self) -> Result<Conn<'_>, StoreError> {
        let pooled = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let client = match pooled {
            Some(c) => c,
            None => match &self.inner.tls {
                Some(tls) => self.inner.config.connect(tls.clone()),
                None => self.inner.config.connect(NoTls),
            }
            .map_err(self.pg())?,
        };
        Ok(Conn { store: &self.inner, client: Some(client) })
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.get().transaction().map_err(self.pg())?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(self.pg())?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS kiln_schema (version INTEGER NOT NULL)")
            .map_err(self.pg())?;
        let found: Option<i32> =
            tx.query_opt("SELECT version FROM kiln_schema", &[]).map_err(self.pg())?.map(|r| r.get(0));
        if let Some(found) = found.filter(|f| *f > SCHEMA_VERSION) {
            return Err(StoreError::Schema {
                path: PathBuf::from(&self.inner.database),
                found: found.into(),
                known: SCHEMA_VERSION.into(),
            });
        }
        tx.batch_execute(SCHEMA).map_err(self.pg())?;
        tx.execute("DELETE FROM kiln_schema", &[]).map_err(self.pg())?;
        tx.execute("INSERT INTO kiln_schema (version) VALUES ($1)", &[&SCHEMA_VERSION]).map_err(self.pg())?;
        tx.commit().map_err(self.pg())
    }

    /// Run `f` on a connection outside a transaction.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client, &str) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        f(conn.get(), &self.inner.database)
    }

    /// Run `f` in one read-only snapshot (its queries agree with each other).
    fn snapshot<T>(
        &self,
        f: impl FnOnce(&mut postgres::Transaction<'_>, &str) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn
            .get()
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(self.pg())?;
        let out = f(&mut tx, &self.inner.database)?;
        tx.commit().map_err(self.pg())?;
        Ok(out)
    }

    /// One attempt of a write.
    fn attempt(
        &self,
        f: &mut dyn FnMut(&mut dyn Tx) -> Result<(), CatalogError>,
    ) -> Result<(), CatalogError> {
        let mut conn = self.conn()?;
        let tx = conn
            .get()
            .build_transaction()
            .isolation_level(IsolationLevel::Serializable)
            .start()
            .map_err(self.pg())?;
        let mut t = PgTx { tx, database: &self.inner.database };
        f(&mut t)?;
        t.tx.commit().map_err(self.pg())?;
        Ok(())
    }
}

fn pg_err(database: &str) -> impl Fn(postgres::Error) -> StoreError + '_ {
    move |source| StoreError::Postgres { database: database.to_owned(), source }
}

fn load_family(
    c: &mut impl GenericClient,
    database: &str,
    name: &str,
) -> Result<Option<FamilyState>, StoreError> {
    let pg = pg_err(database);
    let Some(revision) = c
        .query_opt("SELECT revision FROM families WHERE name = $1", &[&name])
        .map_err(&pg)?
        .map(|r| r.get::<_, i64>(0))
    else {
        return Ok(None);
    };
    let mut versions = c
        .query("SELECT record FROM versions WHERE family = $1", &[&name])
        .map_err(&pg)?
        .iter()
        .map(|r| parse_record(database, r.get(0)))
        .collect::<Result<Vec<_>, _>>()?;
    versions.sort_by(|a, b| a.version.cmp(&b.version));
    let mut channels: BTreeMap<String, Channel> = BTreeMap::new();
    for row in c
        .query("SELECT channel, move FROM channel_moves WHERE family = $1 ORDER BY channel, seq", &[&name])
        .map_err(&pg)?
    {
        let channel: String = row.get(0);
        let mv: ChannelMove =
            serde_json::from_str(row.get(1)).map_err(|e| corrupt(database, "channel move", e))?;
        let c = channels.entry(channel.clone()).or_insert_with(|| Channel {
            name: channel,
            version: mv.to.clone(),
            history: Vec::new(),
        });
        c.version = mv.to.clone();
        c.history.push(mv);
    }
    Ok(Some(FamilyState { name: name.to_owned(), versions, channels, revision: revision as u64 }))
}

fn token_from_row(database: &str, r: &postgres::Row) -> Result<TokenRecord, StoreError> {
    let scopes = r
        .get::<_, &str>(3)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Scope>().map_err(|e| corrupt(database, "token scopes", e)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TokenRecord {
        id: r.get(0),
        hash: r.get(1),
        name: r.get(2),
        scopes,
        created_at: Timestamp(r.get(4)),
        created_by: r.get(5),
    })
}

/// The columns of `registry_manifests`, in [`manifest_from_row`]'s order.
const MANIFEST_COLUMNS: &str = "repo, digest, media_type, artifact_type, subject, size, annotations";

fn manifest_from_row(r: &postgres::Row) -> RegistryManifest {
    RegistryManifest {
        repo: r.get(0),
        digest: r.get(1),
        media_type: r.get(2),
        artifact_type: r.get(3),
        subject: r.get(4),
        size: r.get::<_, i64>(5) as u64,
        annotations: r.get(6),
        refs: Vec::new(),
    }
}

struct PgTx<'a> {
    tx: postgres::Transaction<'a>,
    database: &'a str,
}

impl PgTx<'_> {
    fn pg(&self) -> impl Fn(postgres::Error) -> StoreError + '_ {
        pg_err(self.database)
    }

    fn bump(&mut self, family: &str) -> Result<(), StoreError> {
        let pg = pg_err(self.database);
        self.tx
            .execute(
                "INSERT INTO families (name, revision) VALUES ($1, 1)
                 ON CONFLICT (name) DO UPDATE SET revision = families.revision + 1",
                &[&family],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn records(
        &mut self,
        sql: &str,
        args: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<VersionRecord>, StoreError> {
        let pg = pg_err(self.database);
        let rows = self.tx.query(sql, args).map_err(pg)?;
        rows.iter().map(|r| parse_record(self.database, r.get(0))).collect()
    }
}

impl Tx for PgTx<'_> {
    fn family(&mut self, name: &str) -> Result<Option<FamilyState>, StoreError> {
        load_family(&mut self.tx, self.database, name)
    }

    fn version(
        &mut self,
        family: &str,
        version: &semver::Version,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let v = version.to_string();
        let r =
            self.records("SELECT record FROM versions WHERE family = $1 AND version = $2", &[&family, &v])?;
        Ok(r.into_iter().next())
    }

    fn previous(
        &mut self,
        family: &str,
        version: &semver::Version,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let pg = pg_err(self.database);
        let best = self
            .tx
            .query("SELECT version FROM versions WHERE family = $1", &[&family])
            .map_err(pg)?
            .iter()
            .filter_map(|r| r.get::<_, &str>(0).parse::<semver::Version>().ok())
            .filter(|v| v < version)
            .max();
        match best {
            Some(v) => self.version(family, &v),
            None => Ok(None),
        }
    }

    fn children(
        &mut self,
        family: &str,
        version: &semver::Version,
    ) -> Result<Vec<VersionRecord>, StoreError> {
        let v = version.to_string();
        self.records(
            "SELECT record FROM versions WHERE parent_family = $1 AND parent_version = $2",
            &[&family, &v],
        )
    }

    fn insert_version(&mut self, record: &VersionRecord, notes: &ReleaseNotes) -> Result<(), StoreError> {
        self.bump(&record.family)?;
        let pg = pg_err(self.database);
        let v = record.version.to_string();
        let json = serde_json::to_string(record).map_err(|e| corrupt(self.database, "version record", e))?;
        let parent_family = record.parent.as_ref().map(|p| p.family.clone());
        let parent_version = record.parent.as_ref().map(|p| p.version.to_string());
        self.tx
            .execute(
                "INSERT INTO versions (family, version, manifest_digest, parent_family, parent_version, record)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&record.family, &v, &record.manifest_digest, &parent_family, &parent_version, &json],
            )
            .map_err(&pg)?;
        let stmt = self
            .tx
            .prepare("INSERT INTO files (family, version, path, digest) VALUES ($1, $2, $3, $4)")
            .map_err(&pg)?;
        for f in &record.files {
            self.tx.execute(&stmt, &[&record.family, &v, &f.path, &f.digest]).map_err(&pg)?;
        }
        self.tx
            .execute(
                "INSERT INTO notes (family, version, markdown, html) VALUES ($1, $2, $3, $4)",
                &[&record.family, &v, &notes.markdown, &notes.html],
            )
            .map_err(&pg)?;
        Ok(())
    }

    fn set_lifecycle(
        &mut self,
        family: &str,
        version: &semver::Version,
        lifecycle: &Lifecycle,
    ) -> Result<(), StoreError> {
        let mut record = self.version(family, version)?.ok_or_else(|| {
            corrupt(
                self.database,
                "version record",
                format!("{family}@{version} vanished during a transaction"),
            )
        })?;
        record.lifecycle = lifecycle.clone();
        let json = serde_json::to_string(&record).map_err(|e| corrupt(self.database, "version record", e))?;
        self.bump(family)?;
        let pg = pg_err(self.database);
        self.tx
            .execute(
                "UPDATE versions SET record = $3 WHERE family = $1 AND version = $2",
                &[&family, &version.to_string(), &json],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn move_channel(&mut self, family: &str, channel: &str, mv: &ChannelMove) -> Result<(), StoreError> {
        self.bump(family)?;
        let pg = pg_err(self.database);
        let json = serde_json::to_string(mv).map_err(|e| corrupt(self.database, "channel move", e))?;
        self.tx
            .execute(
                "INSERT INTO channel_moves (family, channel, seq, move)
                 VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM channel_moves WHERE family = $1 AND channel = $2), $3)",
                &[&family, &channel, &json],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn append_audit(&mut self, e: &NewAudit) -> Result<u64, StoreError> {
        let pg = pg_err(self.database);
        let row = self
            .tx
            .query_one(
                "INSERT INTO audit (at, actor, action, family, version, detail)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
                &[
                    &e.at.0,
                    &e.actor,
                    &e.action,
                    &e.family,
                    &e.version.as_ref().map(|v| v.to_string()),
                    &e.detail.to_string(),
                ],
            )
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn insert_token(&mut self, t: &TokenRecord) -> Result<(), StoreError> {
        let scopes = t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
        let inserted = self.tx.execute(
            "INSERT INTO tokens (id, hash, name, scopes, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&t.id, &t.hash, &t.name, &scopes, &t.created_at.0, &t.created_by],
        );
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if e.as_db_error().and_then(|d| d.constraint()) == Some(FIRST_ADMIN_INDEX) => {
                Err(StoreError::Duplicate { what: "the catalog's first admin token".into() })
            }
            Err(e) => Err(self.pg()(e)),
        }
    }

    fn delete_token(&mut self, id: &str) -> Result<bool, StoreError> {
        let pg = pg_err(self.database);
        Ok(self.tx.execute("DELETE FROM tokens WHERE id = $1", &[&id]).map_err(pg)? > 0)
    }

    fn registry_put_manifest(&mut self, m: &RegistryManifest) -> Result<(), StoreError> {
        let pg = pg_err(self.database);
        self.tx
            .execute(
                "INSERT INTO registry_manifests (repo, digest, media_type, artifact_type, subject, size, annotations)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (repo, digest) DO UPDATE SET media_type = EXCLUDED.media_type,
                    artifact_type = EXCLUDED.artifact_type, subject = EXCLUDED.subject, size = EXCLUDED.size,
                    annotations = EXCLUDED.annotations",
                &[&m.repo, &m.digest, &m.media_type, &m.artifact_type, &m.subject, &(m.size as i64), &m.annotations],
            )
            .map_err(&pg)?;
        self.tx
            .execute("DELETE FROM registry_refs WHERE repo = $1 AND manifest = $2", &[&m.repo, &m.digest])
            .map_err(&pg)?;
        let stmt = self
            .tx
            .prepare(
                "INSERT INTO registry_refs (repo, manifest, digest) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .map_err(&pg)?;
        for r in &m.refs {
            self.tx.execute(&stmt, &[&m.repo, &m.digest, r]).map_err(&pg)?;
        }
        Ok(())
    }

    fn registry_set_tag(&mut self, repo: &str, tag: &str, digest: &str) -> Result<(), StoreError> {
        let pg = pg_err(self.database);
        self.tx
            .execute(
                "INSERT INTO registry_tags (repo, tag, digest) VALUES ($1, $2, $3)
                 ON CONFLICT (repo, tag) DO UPDATE SET digest = EXCLUDED.digest",
                &[&repo, &tag, &digest],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn registry_add_blob(&mut self, repo: &str, digest: &str) -> Result<(), StoreError> {
        let pg = pg_err(self.database);
        self.tx
            .execute(
                "INSERT INTO registry_blobs (repo, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&repo, &digest],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn registry_delete_manifest(&mut self, repo: &str, digest: &str) -> Result<bool, StoreError> {
        let pg = pg_err(self.database);
        let n = self
            .tx
            .execute("DELETE FROM registry_manifests WHERE repo = $1 AND digest = $2", &[&repo, &digest])
            .map_err(&pg)?;
        for sql in [
            "DELETE FROM registry_refs WHERE repo = $1 AND manifest = $2",
            "DELETE FROM registry_tags WHERE repo = $1 AND digest = $2",
        ] {
            self.tx.execute(sql, &[&repo, &digest]).map_err(&pg)?;
        }
        Ok(n > 0)
    }

    fn registry_delete_tag(&mut self, repo: &str, tag: &str) -> Result<bool, StoreError> {
        let pg = pg_err(self.database);
        let n = self
            .tx
            .execute("DELETE FROM registry_tags WHERE repo = $1 AND tag = $2", &[&repo, &tag])
            .map_err(pg)?;
        Ok(n > 0)
    }

    fn registry_delete_blob(&mut self, repo: &str, digest: &str) -> Result<bool, StoreError> {
        let pg = pg_err(self.database);
        let n = self
            .tx
            .execute("DELETE FROM registry_blobs WHERE repo = $1 AND digest = $2", &[&repo, &digest])
            .map_err(pg)?;
        Ok(n > 0)
    }

    fn registry_start_upload(&mut self, u: &Upload) -> Result<(), StoreError> {
        let pg = pg_err(self.database);
        self.tx
            .execute(
                "INSERT INTO registry_uploads (id, repo, started_at) VALUES ($1, $2, $3)",
                &[&u.id, &u.repo, &u.started_at.0],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn registry_end_upload(&mut self, id: &str) -> Result<bool, StoreError> {
        let pg = pg_err(self.database);
        Ok(self.tx.execute("DELETE FROM registry_uploads WHERE id = $1", &[&id]).map_err(pg)? > 0)
    }
}

impl MetaStore for PostgresStore {
    fn families(&self) -> Result<Vec<FamilySummary>, StoreError> {
        self.snapshot(|c, db| {
            let pg = pg_err(db);
            let mut out: BTreeMap<String, FamilySummary> = BTreeMap::new();
            for r in c.query("SELECT name FROM families", &[]).map_err(&pg)? {
                let name: String = r.get(0);
                out.insert(
                    name.clone(),
                    FamilySummary { name, versions: 0, latest: None, channels: BTreeMap::new() },
                );
            }
            for r in c.query("SELECT family, version FROM versions", &[]).map_err(&pg)? {
                let Some(f) = out.get_mut(r.get::<_, &str>(0)) else { continue };
                f.versions += 1;
                if let Ok(v) = r.get::<_, &str>(1).parse::<semver::Version>() {
                    if f.latest.as_ref().is_none_or(|l| *l < v) {
                        f.latest = Some(v);
                    }
                }
            }
            for r in c
                .query("SELECT family, channel, move FROM channel_moves ORDER BY family, channel, seq", &[])
                .map_err(&pg)?
            {
                let Some(f) = out.get_mut(r.get::<_, &str>(0)) else { continue };
                let mv: ChannelMove =
                    serde_json::from_str(r.get(2)).map_err(|e| corrupt(db, "channel move", e))?;
                f.channels.insert(r.get(1), mv.to);
            }
            Ok(out.into_values().collect())
        })
    }

    fn family_revision(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.read(|c, db| {
            Ok(c.query_opt("SELECT revision FROM families WHERE name = $1", &[&name])
                .map_err(pg_err(db))?
                .map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    fn family(&self, name: &str) -> Result<Option<FamilyState>, StoreError> {
        self.snapshot(|c, db| load_family(c, db, name))
    }

    fn notes(&self, family: &str, version: &semver::Version) -> Result<Option<ReleaseNotes>, StoreError> {
        self.read(|c, db| {
            Ok(c.query_opt(
                "SELECT markdown, html FROM notes WHERE family = $1 AND version = $2",
                &[&family, &version.to_string()],
            )
            .map_err(pg_err(db))?
            .map(|r| ReleaseNotes { markdown: r.get(0), html: r.get(1) }))
        })
    }

    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(|c, db| {
            let rows = c
                .query(
                    "SELECT seq, at, actor, action, family, version, detail FROM audit
                     WHERE ($1::TEXT IS NULL OR family = $1) AND ($2::TEXT IS NULL OR version = $2)
                       AND ($3::BIGINT IS NULL OR seq < $3)
                     ORDER BY seq DESC LIMIT $4",
                    &[
                        &q.family,
                        &q.version.as_ref().map(|v| v.to_string()),
                        &q.before.map(|b| b as i64),
                        &(q.limit as i64),
                    ],
                )
                .map_err(pg_err(db))?;
            rows.iter()
                .map(|r| {
                    Ok(AuditEntry {
                        seq: r.get::<_, i64>(0) as u64,
                        at: Timestamp(r.get(1)),
                        actor: r.get(2),
                        action: r.get(3),
                        family: r.get(4),
                        version: r
                            .get::<_, Option<&str>>(5)
                            .map(|v| v.parse().map_err(|e| corrupt(db, "audit version", e)))
                            .transpose()?,
                        detail: serde_json::from_str(r.get(6)).map_err(|e| corrupt(db, "audit detail", e))?,
                    })
                })
                .collect()
        })
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.read(|c, db| {
            c.query_opt(
                "SELECT id, hash, name, scopes, created_at, created_by FROM tokens WHERE hash = $1",
                &[&hash],
            )
            .map_err(pg_err(db))?
            .map(|r| token_from_row(db, &r))
            .transpose()
        })
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.read(|c, db| {
            c.query(
                r#"SELECT id, hash, name, scopes, created_at, created_by FROM tokens
                   ORDER BY created_at, id COLLATE "C""#,
                &[],
            )
            .map_err(pg_err(db))?
            .iter()
            .map(|r| token_from_row(db, r))
            .collect()
        })
    }

    fn referenced_blobs(&self) -> Result<BTreeSet<String>, StoreError> {
        self.read(|c, db| {
            Ok(c.query(
                "SELECT digest FROM files UNION SELECT digest FROM registry_manifests
                 UNION SELECT digest FROM registry_refs",
                &[],
            )
            .map_err(pg_err(db))?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn registry_manifest(&self, repo: &str, digest: &str) -> Result<Option<RegistryManifest>, StoreError> {
        self.snapshot(|c, db| {
            let pg = pg_err(db);
            let Some(mut m) = c
                .query_opt(
                    &format!(
                        "SELECT {MANIFEST_COLUMNS} FROM registry_manifests WHERE repo = $1 AND digest = $2"
                    ),
                    &[&repo, &digest],
                )
                .map_err(&pg)?
                .map(|r| manifest_from_row(&r))
            else {
                return Ok(None);
            };
            m.refs = c
                .query(
                    r#"SELECT digest FROM registry_refs WHERE repo = $1 AND manifest = $2
                       ORDER BY digest COLLATE "C""#,
                    &[&repo, &digest],
                )
                .map_err(&pg)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok(Some(m))
        })
    }

    fn registry_tag(&self, repo: &str, tag: &str) -> Result<Option<String>, StoreError> {
        self.read(|c, db| {
            Ok(c.query_opt("SELECT digest FROM registry_tags WHERE repo = $1 AND tag = $2", &[&repo, &tag])
                .map_err(pg_err(db))?
                .map(|r| r.get(0)))
        })
    }

    fn registry_tags(&self, repo: &str) -> Result<Vec<String>, StoreError> {
        self.read(|c, db| {
            let mut tags: Vec<String> = c
                .query("SELECT tag FROM registry_tags WHERE repo = $1", &[&repo])
                .map_err(pg_err(db))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // Byte order, whatever the database's collation.
            tags.sort();
            Ok(tags)
        })
    }

    fn registry_has_blob(&self, repo: Option<&str>, digest: &str) -> Result<bool, StoreError> {
        self.read(|c, db| {
            Ok(c.query_opt(
                "SELECT 1 FROM registry_blobs WHERE ($1::TEXT IS NULL OR repo = $1) AND digest = $2 LIMIT 1",
                &[&repo, &digest],
            )
            .map_err(pg_err(db))?
            .is_some())
        })
    }

    fn registry_referrers(&self, repo: &str, digest: &str) -> Result<Vec<RegistryManifest>, StoreError> {
        self.read(|c, db| {
            Ok(c.query(
                &format!(
                    r#"SELECT {MANIFEST_COLUMNS} FROM registry_manifests WHERE repo = $1 AND subject = $2
                       ORDER BY digest COLLATE "C""#
                ),
                &[&repo, &digest],
            )
            .map_err(pg_err(db))?
            .iter()
            .map(manifest_from_row)
            .collect())
        })
    }

    fn registry_repo_exists(&self, repo: &str) -> Result<bool, StoreError> {
        self.read(|c, db| {
            Ok(c.query_opt(
                "SELECT 1 FROM registry_manifests WHERE repo = $1
                 UNION ALL SELECT 1 FROM registry_tags WHERE repo = $1
                 UNION ALL SELECT 1 FROM registry_blobs WHERE repo = $1 LIMIT 1",
                &[&repo],
            )
            .map_err(pg_err(db))?
            .is_some())
        })
    }

    fn registry_upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        self.read(|c, db| {
            Ok(c.query_opt("SELECT id, repo, started_at FROM registry_uploads WHERE id = $1", &[&id])
                .map_err(pg_err(db))?
                .map(|r| Upload { id: r.get(0), repo: r.get(1), started_at: Timestamp(r.get(2)) }))
        })
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<(), CatalogError>) -> Result<(), CatalogError> {
        let mut attempt = 1;
        loop {
            match self.attempt(f) {
                Err(e) if attempt < WRITE_ATTEMPTS && retryable(&e) => {
                    tracing::debug!("write attempt {attempt} ran into a concurrent one, again: {e}");
                    // A little longer each time, staggered so colliding writers fall out of step.
                    let jitter = u64::from(
                        SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .unwrap_or_default()
                            .subsec_micros()
                            % 7,
                    );
                    std::thread::sleep(Duration::from_millis(u64::from(attempt) * 5 + jitter));
                    attempt += 1;
                }
                r => return r,
            }
        }
    }
}

impl BlobLedger for PostgresStore {
    fn blob_recorded(&self, digest: &str, size: u64) -> Result<(), StoreError> {
        self.read(|c, db| {
            c.execute(
                "INSERT INTO blob_ledger (digest, size, touched_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (digest) DO UPDATE SET size = EXCLUDED.size, touched_ms = EXCLUDED.touched_ms",
                &[&digest, &(size as i64), &millis(SystemTime::now())],
            )
            .map_err(pg_err(db))?;
            Ok(())
        })
    }

    fn blob_size(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        self.read(|c, db| {
            Ok(c.query_opt("SELECT size FROM blob_ledger WHERE digest = $1", &[&digest])
                .map_err(pg_err(db))?
                .map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    fn blob_touch(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        self.read(|c, db| {
            Ok(c.query_opt(
                "UPDATE blob_ledger SET touched_ms = GREATEST(touched_ms, $2) WHERE digest = $1 RETURNING size",
                &[&digest, &millis(SystemTime::now())],
            )
            .map_err(pg_err(db))?
            .map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    fn blob_list(&self) -> Result<Vec<StoredBlob>, StoreError> {
        self.read(|c, db| {
            let mut out: Vec<StoredBlob> = c
                .query("SELECT digest, size, touched_ms FROM blob_ledger", &[])
                .map_err(pg_err(db))?
                .iter()
                .map(|r| StoredBlob {
                    digest: r.get(0),
                    size: r.get::<_, i64>(1) as u64,
                    modified: from_millis(r.get(2)),
                })
                .collect();
            out.sort_by(|a, b| a.digest.cmp(&b.digest));
            Ok(out)
        })
    }

    fn blob_forget(&self, digest: &str) -> Result<(), StoreError> {
        self.read(|c, db| {
            c.execute("DELETE FROM blob_ledger WHERE digest = $1", &[&digest]).map_err(pg_err(db))?;
            Ok(())
        })
    }

    fn session_create(&self, id: &str) -> Result<(), StoreError> {
        self.read(|c, db| {
            c.execute(
                "INSERT INTO blob_sessions (id, size, chunks, updated_ms) VALUES ($1, 0, '[]', $2)",
                &[&id, &millis(SystemTime::now())],
            )
            .map_err(pg_err(db))?;
            Ok(())
        })
    }

    fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.read(|c, db| {
            c.query_opt("SELECT chunks FROM blob_sessions WHERE id = $1", &[&id])
                .map_err(pg_err(db))?
                .map(|r| serde_json::from_str(r.get(0)).map_err(|e| corrupt(db, "upload session", e)))
                .transpose()
        })
    }

    fn session_update(
        &self,
        id: &str,
        f: &mut dyn FnMut(Session) -> Result<Option<Session>, StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let db = self.inner.database.as_str();
        let mut tx = conn.get().transaction().map_err(pg_err(db))?;
        let row =
            match tx.query_opt("SELECT chunks FROM blob_sessions WHERE id = $1 FOR UPDATE NOWAIT", &[&id]) {
                Ok(row) => row,
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                    drop(tx);
                    let size = self
                        .read(|c, db| {
                            Ok(c.query_opt("SELECT size FROM blob_sessions WHERE id = $1", &[&id])
                                .map_err(pg_err(db))?
                                .map_or(0, |r| r.get::<_, i64>(0) as u64))
                        })
                        .unwrap_or(0);
                    return Err(StoreError::UploadBusy { id: id.to_owned(), size });
                }
                Err(e) => return Err(pg_err(db)(e)),
            };
        let Some(row) = row else { return Err(StoreError::UploadUnknown { id: id.to_owned() }) };
        let session: Session =
            serde_json::from_str(row.get(0)).map_err(|e| corrupt(db, "upload session", e))?;
        match f(session)? {
            Some(s) => {
                let chunks = serde_json::to_string(&s).map_err(|e| corrupt(db, "upload session", e))?;
                tx.execute(
                    "UPDATE blob_sessions SET size = $2, chunks = $3, updated_ms = $4 WHERE id = $1",
                    &[&id, &(s.size() as i64), &chunks, &millis(SystemTime::now())],
                )
                .map_err(pg_err(db))?;
            }
            None => {
                tx.execute("DELETE FROM blob_sessions WHERE id = $1", &[&id]).map_err(pg_err(db))?;
            }
        }
        tx.commit().map_err(pg_err(db))
    }

    fn session_sweep(&self, older_than: SystemTime) -> Result<usize, StoreError> {
        self.read(|c, db| {
            Ok(c.execute(
                "DELETE FROM blob_sessions WHERE id IN
                   (SELECT id FROM blob_sessions WHERE updated_ms < $1 FOR UPDATE SKIP LOCKED)",
                &[&millis(older_than)],
            )
            .map_err(pg_err(db))? as usize)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_lose_their_password_in_errors() {
        assert_eq!(
            redact("postgres://kiln:s3cret@db.example:5432/kiln?sslmode=disable"),
            "postgres://kiln@db.example:5432/kiln"
        );
        assert_eq!(redact("postgresql://db/kiln"), "postgresql://db/kiln");
        assert_eq!(
            redact("host=/tmp port=5433 user=kiln password=s3cret dbname=kiln"),
            "host=/tmp port=5433 user=kiln dbname=kiln"
        );
    }

    #[test]
    fn tls_options_are_read_before_the_driver_parses() {
        let (url, root) = tls_options(
            "postgres://k@db/kiln?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        );
        assert_eq!(url, "postgres://k@db/kiln?sslmode=require&application_name=x");
        assert_eq!(root, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            url.parse::<postgres::Config>().unwrap().get_ssl_mode(),
            postgres::config::SslMode::Require
        );
        let (url, root) = tls_options("postgres://k@db/kiln?sslrootcert=/ca.pem");
        assert_eq!((url.as_str(), root), ("postgres://k@db/kiln", Some(PathBuf::from("/ca.pem"))));
        let (url, root) = tls_options("host=db sslmode=verify-ca sslrootcert=/ca.pem dbname=kiln");
        assert_eq!(
            (url.as_str(), root),
            ("host=db sslmode=require dbname=kiln", Some(PathBuf::from("/ca.pem")))
        );
        let (url, root) = tls_options("postgres://k@db/kiln");
        assert_eq!((url.as_str(), root), ("postgres://k@db/kiln", None));
    }
}
