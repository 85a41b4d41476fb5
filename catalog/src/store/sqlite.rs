//! The embedded metadata store: one SQLite database in WAL mode (`DATA/catalog.db`).
//!
//! Versions are kept as their JSON record (the API's shape) beside the columns queries need (family,
//! version, parent, the files' digests for garbage collection). Every transaction is `BEGIN IMMEDIATE`
//! with `synchronous=FULL`: committed means on disk, and a crash at any point leaves the last commit.
//!
//! The OCI registry's tables (schema 2): `registry_manifests` (a manifest in a repository: media type,
//! artifact type, subject, size, annotations), `registry_refs` (what each manifest refers to, for garbage
//! collection), `registry_tags`, `registry_blobs` (repository membership: pushed, mounted or published)
//! and `registry_uploads` (sessions in progress; their bytes are in the blob store).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Mutex,
};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{AuditQuery, MetaStore, NewAudit, RegistryManifest, StoreError, Tx, Upload};
use crate::{
    model::{
        AuditEntry, Channel, ChannelMove, FamilyState, FamilySummary, Lifecycle, ReleaseNotes, Scope,
        Timestamp, TokenRecord, VersionRecord,
    },
    CatalogError,
};

const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS families (
    name TEXT PRIMARY KEY,
    revision INTEGER NOT NULL
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
    seq INTEGER NOT NULL,
    move TEXT NOT NULL,
    PRIMARY KEY (family, channel, seq)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
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
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_manifests (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    size INTEGER NOT NULL,
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
    started_at INTEGER NOT NULL
);
";

/// SQLite metadata store.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    /// Open (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Self::connect(path)?;
        let sq = |source| StoreError::Sqlite { path: path.to_owned(), source };
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sq)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Schema { path: path.to_owned(), found, known: SCHEMA_VERSION });
        }
        conn.execute_batch(SCHEMA).map_err(sq)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sq)?;
        Ok(Self { path: path.to_owned(), writer: Mutex::new(conn), readers: Mutex::new(Vec::new()) })
    }

    fn connect(path: &Path) -> Result<Connection, StoreError> {
        let sq = |source| StoreError::Sqlite { path: path.to_owned(), source };
        let conn = Connection::open(path).map_err(sq)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(sq)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sq)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(sq)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(sq)?;
        Ok(conn)
    }

    /// Run `f` on a reader connection (WAL: readers see the last commit and never block the writer).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => Self::connect(&self.path)?,
        };
        let out = f(&conn);
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        out
    }

    fn sq(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite { path: self.path.clone(), source }
    }
}

fn corrupt(path: &Path, what: &str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt { path: path.to_owned(), what: what.to_owned(), reason: reason.to_string() }
}

fn parse_record(path: &Path, json: &str) -> Result<VersionRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| corrupt(path, "version record", e))
}

fn load_family(conn: &Connection, path: &Path, name: &str) -> Result<Option<FamilyState>, StoreError> {
    let sq = |source| StoreError::Sqlite { path: path.to_owned(), source };
    let Some(revision) = conn
        .query_row("SELECT revision FROM families WHERE name = ?1", [name], |r| r.get::<_, i64>(0))
        .optional()
        .map_err(sq)?
    else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached("SELECT record FROM versions WHERE family = ?1").map_err(sq)?;
    let mut versions = stmt
        .query_map([name], |r| r.get::<_, String>(0))
        .map_err(sq)?
        .map(|r| r.map_err(sq).and_then(|json| parse_record(path, &json)))
        .collect::<Result<Vec<_>, _>>()?;
    versions.sort_by(|a, b| a.version.cmp(&b.version));
    let mut stmt = conn
        .prepare_cached("SELECT channel, move FROM channel_moves WHERE family = ?1 ORDER BY channel, seq")
        .map_err(sq)?;
    let mut channels: BTreeMap<String, Channel> = BTreeMap::new();
    for row in stmt.query_map([name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(sq)? {
        let (channel, json) = row.map_err(sq)?;
        let mv: ChannelMove = serde_json::from_str(&json).map_err(|e| corrupt(path, "channel move", e))?;
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

fn token_from_row(path: &Path, r: &rusqlite::Row<'_>) -> Result<TokenRecord, StoreError> {
    let get =
        |i| r.get::<_, String>(i).map_err(|source| StoreError::Sqlite { path: path.to_owned(), source });
    let scopes = get(3)?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Scope>().map_err(|e| corrupt(path, "token scopes", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let int = |i| r.get::<_, i64>(i).map_err(|source| StoreError::Sqlite { path: path.to_owned(), source });
    Ok(TokenRecord {
        id: get(0)?,
        hash: get(1)?,
        name: get(2)?,
        scopes,
        created_at: Timestamp(int(4)?),
        created_by: get(5)?,
    })
}

struct SqliteTx<'a> {
    tx: rusqlite::Transaction<'a>,
    path: &'a Path,
}

impl SqliteTx<'_> {
    fn sq(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite { path: self.path.to_owned(), source }
    }

    fn bump(&self, family: &str) -> Result<(), StoreError> {
        self.tx
            .execute(
                "INSERT INTO families (name, revision) VALUES (?1, 1)
                 ON CONFLICT (name) DO UPDATE SET revision = revision + 1",
                [family],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    fn records(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<VersionRecord>, StoreError> {
        let mut stmt = self.tx.prepare_cached(sql).map_err(self.sq())?;
        let rows = stmt.query_map(args, |r| r.get::<_, String>(0)).map_err(self.sq())?;
        rows.map(|r| r.map_err(self.sq()).and_then(|json| parse_record(self.path, &json))).collect()
    }
}

impl Tx for SqliteTx<'_> {
    fn family(&mut self, name: &str) -> Result<Option<FamilyState>, StoreError> {
        load_family(&self.tx, self.path, name)
    }

    fn version(
        &mut self,
        family: &str,
        version: &semver::Version,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let r = self.records(
            "SELECT record FROM versions WHERE family = ?1 AND version = ?2",
            params![family, version.to_string()],
        )?;
        Ok(r.into_iter().next())
    }

    fn previous(
        &mut self,
        family: &str,
        version: &semver::Version,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let mut stmt =
            self.tx.prepare_cached("SELECT version FROM versions WHERE family = ?1").map_err(self.sq())?;
        let best = stmt
            .query_map([family], |r| r.get::<_, String>(0))
            .map_err(self.sq())?
            .filter_map(|v| v.ok().and_then(|v| v.parse::<semver::Version>().ok()))
            .filter(|v| v < version)
            .max();
        drop(stmt);
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
        self.records(
            "SELECT record FROM versions WHERE parent_family = ?1 AND parent_version = ?2",
            params![family, version.to_string()],
        )
    }

    fn insert_version(&mut self, record: &VersionRecord, notes: &ReleaseNotes) -> Result<(), StoreError> {
        self.bump(&record.family)?;
        let v = record.version.to_string();
        let json = serde_json::to_string(record).map_err(|e| corrupt(self.path, "version record", e))?;
        self.tx
            .execute(
                "INSERT INTO versions (family, version, manifest_digest, parent_family, parent_version, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    record.family,
                    v,
                    record.manifest_digest,
                    record.parent.as_ref().map(|p| p.family.clone()),
                    record.parent.as_ref().map(|p| p.version.to_string()),
                    json
                ],
            )
            .map_err(self.sq())?;
        let mut stmt = self
            .tx
            .prepare_cached("INSERT INTO files (family, version, path, digest) VALUES (?1, ?2, ?3, ?4)")
            .map_err(self.sq())?;
        for f in &record.files {
            stmt.execute(params![record.family, v, f.path, f.digest]).map_err(self.sq())?;
        }
        drop(stmt);
        self.tx
            .execute(
                "INSERT INTO notes (family, version, markdown, html) VALUES (?1, ?2, ?3, ?4)",
                params![record.family, v, notes.markdown, notes.html],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    fn set_lifecycle(
        &mut self,
        family: &str,
        version: &semver::Version,
        lifecycle: &Lifecycle,
    ) -> Result<(), StoreError> {
        let mut record = self.version(family, version)?.ok_or_else(|| {
            corrupt(self.path, "version record", format!("{family}@{version} vanished during a transaction"))
        })?;
        record.lifecycle = lifecycle.clone();
        let json = serde_json::to_string(&record).map_err(|e| corrupt(self.path, "version record", e))?;
        self.bump(family)?;
        self.tx
            .execute(
                "UPDATE versions SET record = ?3 WHERE family = ?1 AND version = ?2",
                params![family, version.to_string(), json],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    fn move_channel(&mut self, family: &str, channel: &str, mv: &ChannelMove) -> Result<(), StoreError> {
        self.bump(family)?;
        let json = serde_json::to_string(mv).map_err(|e| corrupt(self.path, "channel move", e))?;
        self.tx
            .execute(
                "INSERT INTO channel_moves (family, channel, seq, move)
                 VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM channel_moves WHERE family = ?1 AND channel = ?2), ?3)",
                params![family, channel, json],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    fn append_audit(&mut self, e: &NewAudit) -> Result<u64, StoreError> {
        self.tx
            .execute(
                "INSERT INTO audit (at, actor, action, family, version, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    e.at.0,
                    e.actor,
                    e.action,
                    e.family,
                    e.version.as_ref().map(|v| v.to_string()),
                    e.detail.to_string()
                ],
            )
            .map_err(self.sq())?;
        Ok(self.tx.last_insert_rowid() as u64)
    }

    fn insert_token(&mut self, t: &TokenRecord) -> Result<(), StoreError> {
        let scopes = t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
        self.tx
            .execute(
                "INSERT INTO tokens (id, hash, name, scopes, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![t.id, t.hash, t.name, scopes, t.created_at.0, t.created_by],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    fn delete_token(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self.tx.execute("DELETE FROM tokens WHERE id = ?1", [id]).map_err(self.sq())? > 0)
    }

    fn registry_put_manifest(&mut self, m: &RegistryManifest) -> Result<(), StoreError> {
        self.tx
            .execute(
                "INSERT OR REPLACE INTO registry_manifests (repo, digest, media_type, artifact_type, subject, size, annotations)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![m.repo, m.digest, m.media_type, m.artifact_type, m.subject, m.size as i64, m.annotations],
            )
            .map_err(self.sq())?;
        self.tx
            .execute("DELETE FROM registry_refs WHERE repo = ?1 AND manifest = ?2", params![m.repo, m.digest])
            .map_err(self.sq())?;
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO registry_refs (repo, manifest, digest) VALUES (?1, ?2, ?3)",
            )
            .map_err(self.sq())?;
        for r in &m.refs {
            stmt.execute(params![m.repo, m.digest, r]).map_err(self.sq())?;
        }
        Ok(())
    }

    fn registry_set_tag(&mut self, repo: &str, tag: &str, digest: &str) -> Result<(), StoreError> {
        self.tx
            .execute(
                "INSERT OR REPLACE INTO registry_tags (repo, tag, digest) VALUES (?1, ?2, ?3)",
                params![repo, tag, digest],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    fn registry_add_blob(&mut self, repo: &str, digest: &str) -> Result<(), StoreError> {
        self.tx
            .execute(
                "INSERT OR IGNORE INTO registry_blobs (repo, digest) VALUES (?1, ?2)",
                params![repo, digest],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    fn registry_delete_manifest(&mut self, repo: &str, digest: &str) -> Result<bool, StoreError> {
        let n = self
            .tx
            .execute("DELETE FROM registry_manifests WHERE repo = ?1 AND digest = ?2", params![repo, digest])
            .map_err(self.sq())?;
        for sql in [
            "DELETE FROM registry_refs WHERE repo = ?1 AND manifest = ?2",
            "DELETE FROM registry_tags WHERE repo = ?1 AND digest = ?2",
        ] {
            self.tx.execute(sql, params![repo, digest]).map_err(self.sq())?;
        }
        Ok(n > 0)
    }

    fn registry_delete_tag(&mut self, repo: &str, tag: &str) -> Result<bool, StoreError> {
        let n = self
            .tx
            .execute("DELETE FROM registry_tags WHERE repo = ?1 AND tag = ?2", params![repo, tag])
            .map_err(self.sq())?;
        Ok(n > 0)
    }

    fn registry_delete_blob(&mut self, repo: &str, digest: &str) -> Result<bool, StoreError> {
        let n = self
            .tx
            .execute("DELETE FROM registry_blobs WHERE repo = ?1 AND digest = ?2", params![repo, digest])
            .map_err(self.sq())?;
        Ok(n > 0)
    }

    fn registry_start_upload(&mut self, u: &Upload) -> Result<(), StoreError> {
        self.tx
            .execute(
                "INSERT INTO registry_uploads (id, repo, started_at) VALUES (?1, ?2, ?3)",
                params![u.id, u.repo, u.started_at.0],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    fn registry_end_upload(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self.tx.execute("DELETE FROM registry_uploads WHERE id = ?1", [id]).map_err(self.sq())? > 0)
    }
}

/// The columns of `registry_manifests`, in `manifest_from_row`'s order.
const MANIFEST_COLUMNS: &str = "repo, digest, media_type, artifact_type, subject, size, annotations";

fn manifest_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RegistryManifest> {
    Ok(RegistryManifest {
        repo: r.get(0)?,
        digest: r.get(1)?,
        media_type: r.get(2)?,
        artifact_type: r.get(3)?,
        subject: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
        annotations: r.get(6)?,
        refs: Vec::new(),
    })
}

impl MetaStore for SqliteStore {
    fn local_reads(&self) -> bool {
        true
    }

    fn families(&self) -> Result<Vec<FamilySummary>, StoreError> {
        self.read(|c| {
            let names = {
                let mut stmt =
                    c.prepare_cached("SELECT name FROM families ORDER BY name").map_err(self.sq())?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(self.sq())?;
                rows.collect::<Result<Vec<_>, _>>().map_err(self.sq())?
            };
            let mut out = Vec::new();
            for name in names {
                let versions = {
                    let mut stmt = c
                        .prepare_cached("SELECT version FROM versions WHERE family = ?1")
                        .map_err(self.sq())?;
                    let rows = stmt.query_map([&name], |r| r.get::<_, String>(0)).map_err(self.sq())?;
                    rows.filter_map(|v| v.ok().and_then(|v| v.parse::<semver::Version>().ok()))
                        .collect::<Vec<_>>()
                };
                let mut channels = BTreeMap::new();
                let mut stmt = c
                    .prepare_cached(
                        "SELECT channel, move FROM channel_moves WHERE family = ?1 ORDER BY channel, seq",
                    )
                    .map_err(self.sq())?;
                for row in stmt
                    .query_map([&name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                    .map_err(self.sq())?
                {
                    let (ch, json) = row.map_err(self.sq())?;
                    let mv: ChannelMove =
                        serde_json::from_str(&json).map_err(|e| corrupt(&self.path, "channel move", e))?;
                    channels.insert(ch, mv.to);
                }
                out.push(FamilySummary {
                    name,
                    versions: versions.len(),
                    latest: versions.into_iter().max(),
                    channels,
                });
            }
            Ok(out)
        })
    }

    fn family_revision(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT revision FROM families WHERE name = ?1").map_err(self.sq())?;
            Ok(stmt
                .query_row([name], |r| r.get::<_, i64>(0))
                .optional()
                .map_err(self.sq())?
                .map(|r| r as u64))
        })
    }

    fn family(&self, name: &str) -> Result<Option<FamilyState>, StoreError> {
        self.read(|c| load_family(c, &self.path, name))
    }

    fn notes(&self, family: &str, version: &semver::Version) -> Result<Option<ReleaseNotes>, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT markdown, html FROM notes WHERE family = ?1 AND version = ?2",
                params![family, version.to_string()],
                |r| Ok(ReleaseNotes { markdown: r.get(0)?, html: r.get(1)? }),
            )
            .optional()
            .map_err(self.sq())
        })
    }

    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, at, actor, action, family, version, detail FROM audit
                     WHERE (?1 IS NULL OR family = ?1) AND (?2 IS NULL OR version = ?2) AND (?3 IS NULL OR seq < ?3)
                     ORDER BY seq DESC LIMIT ?4",
                )
                .map_err(self.sq())?;
            let rows = stmt
                .query_map(
                    params![
                        q.family,
                        q.version.as_ref().map(|v| v.to_string()),
                        q.before.map(|b| b as i64),
                        q.limit as i64
                    ],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, String>(6)?,
                        ))
                    },
                )
                .map_err(self.sq())?;
            rows.map(|row| {
                let (seq, at, actor, action, family, version, detail) = row.map_err(self.sq())?;
                Ok(AuditEntry {
                    seq: seq as u64,
                    at: Timestamp(at),
                    actor,
                    action,
                    family,
                    version: version.map(|v| v.parse().map_err(|e| corrupt(&self.path, "audit version", e))).transpose()?,
                    detail: serde_json::from_str(&detail).map_err(|e| corrupt(&self.path, "audit detail", e))?,
                })
            })
            .collect()
        })
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, hash, name, scopes, created_at, created_by FROM tokens WHERE hash = ?1",
                )
                .map_err(self.sq())?;
            let mut rows = stmt.query([hash]).map_err(self.sq())?;
            match rows.next().map_err(self.sq())? {
                Some(r) => token_from_row(&self.path, r).map(Some),
                None => Ok(None),
            }
        })
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached("SELECT id, hash, name, scopes, created_at, created_by FROM tokens ORDER BY created_at, id")
                .map_err(self.sq())?;
            let mut rows = stmt.query([]).map_err(self.sq())?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(self.sq())? {
                out.push(token_from_row(&self.path, r)?);
            }
            Ok(out)
        })
    }

    fn referenced_blobs(&self) -> Result<BTreeSet<String>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT digest FROM files UNION SELECT digest FROM registry_manifests
                     UNION SELECT digest FROM registry_refs",
                )
                .map_err(self.sq())?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(self.sq())?;
            rows.collect::<Result<BTreeSet<_>, _>>().map_err(self.sq())
        })
    }

    fn registry_manifest(&self, repo: &str, digest: &str) -> Result<Option<RegistryManifest>, StoreError> {
        self.read(|c| {
            let mut m = c
                .query_row(
                    &format!(
                        "SELECT {MANIFEST_COLUMNS} FROM registry_manifests WHERE repo = ?1 AND digest = ?2"
                    ),
                    params![repo, digest],
                    manifest_from_row,
                )
                .optional()
                .map_err(self.sq())?;
            if let Some(m) = &mut m {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT digest FROM registry_refs WHERE repo = ?1 AND manifest = ?2 ORDER BY digest",
                    )
                    .map_err(self.sq())?;
                let rows =
                    stmt.query_map(params![repo, digest], |r| r.get::<_, String>(0)).map_err(self.sq())?;
                m.refs = rows.collect::<Result<_, _>>().map_err(self.sq())?;
            }
            Ok(m)
        })
    }

    fn registry_tag(&self, repo: &str, tag: &str) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT digest FROM registry_tags WHERE repo = ?1 AND tag = ?2",
                params![repo, tag],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(self.sq())
        })
    }

    fn registry_tags(&self, repo: &str) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached("SELECT tag FROM registry_tags WHERE repo = ?1 ORDER BY tag")
                .map_err(self.sq())?;
            let rows = stmt.query_map([repo], |r| r.get::<_, String>(0)).map_err(self.sq())?;
            let mut tags = rows.collect::<Result<Vec<_>, _>>().map_err(self.sq())?;
            // SQLite's default collation is byte order already; sorting again keeps the promise explicit.
            tags.sort();
            Ok(tags)
        })
    }

    fn registry_has_blob(&self, repo: Option<&str>, digest: &str) -> Result<bool, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT 1 FROM registry_blobs WHERE (?1 IS NULL OR repo = ?1) AND digest = ?2 LIMIT 1",
                params![repo, digest],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(self.sq())
        })
    }

    fn registry_referrers(&self, repo: &str, digest: &str) -> Result<Vec<RegistryManifest>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {MANIFEST_COLUMNS} FROM registry_manifests WHERE repo = ?1 AND subject = ?2 ORDER BY digest"
                ))
                .map_err(self.sq())?;
            let rows = stmt.query_map(params![repo, digest], manifest_from_row).map_err(self.sq())?;
            rows.collect::<Result<Vec<_>, _>>().map_err(self.sq())
        })
    }

    fn registry_repo_exists(&self, repo: &str) -> Result<bool, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT 1 FROM registry_manifests WHERE repo = ?1
                 UNION ALL SELECT 1 FROM registry_tags WHERE repo = ?1
                 UNION ALL SELECT 1 FROM registry_blobs WHERE repo = ?1 LIMIT 1",
                [repo],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(self.sq())
        })
    }

    fn registry_upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        self.read(|c| {
            c.query_row("SELECT id, repo, started_at FROM registry_uploads WHERE id = ?1", [id], |r| {
                Ok(Upload { id: r.get(0)?, repo: r.get(1)?, started_at: Timestamp(r.get(2)?) })
            })
            .optional()
            .map_err(self.sq())
        })
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<(), CatalogError>) -> Result<(), CatalogError> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(self.sq())?;
        let mut t = SqliteTx { tx, path: &self.path };
        f(&mut t)?;
        t.tx.commit().map_err(self.sq())?;
        Ok(())
    }
}
