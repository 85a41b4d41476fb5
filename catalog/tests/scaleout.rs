//! The scale-out catalog: metadata in a real PostgreSQL and blobs in a real OCI registry (Debian's
//! `docker-registry`), both started on loopback for each test.
//!
//! - The catalog's rules (publish, idempotency and conflicts, concurrent publishes, promotion, lifecycle,
//!   revocation of descendants, tokens, audit, the registry's manifests, tags, blobs and uploads, garbage
//!   collection) run the same test over SQLite, over PostgreSQL, and over PostgreSQL with the registry.
//! - The blob stores (a folder, the registry) pass the same test.
//! - Two replicas on one PostgreSQL and one registry: what is published or pushed through one is resolved,
//!   downloaded and pulled (skopeo) through the other, the same bytes.
//! - Replicas killed with SIGKILL in the middle of an upload, a registry chunk and a publish: the other
//!   replica serves everything committed, the interrupted work finishes through it, nothing is half there.
//!
//! PostgreSQL (`initdb`, `postgres`) and `docker-registry` come from Debian's packages (scripts/lib.sh
//! installs them); without them the tests say so and pass without running.

mod support;

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use kiln_catalog::{
    http::ServeOptions,
    lifecycle::LifecycleChange,
    model::{Scope, Timestamp},
    store::{
        blobs::FsBlobs, Algorithm, AuditQuery, Backends, BlobStore, RegistryManifest, StoreError, Upload,
    },
    Catalog, CatalogError,
};
use serde_json::{json, Value};
use support::{sha256, Answer, Bundle, BundleSpec, Bundles, Http, Server};

// ---------------------------------------------------------------------------------------------------------
// The services

/// A free TCP port on loopback (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The newest PostgreSQL server's programs (Debian keeps them out of PATH).
fn postgres_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("postgres").is_file() && d.join("initdb").is_file())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    dirs.pop()
}

fn registry_bin() -> Option<PathBuf> {
    ["/usr/bin/docker-registry", "/usr/local/bin/docker-registry"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Whether the services can be started here; otherwise why not (the test then passes without running).
fn unavailable() -> Option<String> {
    if postgres_bin().is_none() {
        return Some("PostgreSQL is not installed (apt-get install postgresql)".into());
    }
    if registry_bin().is_none() {
        return Some("docker-registry is not installed (apt-get install docker-registry)".into());
    }
    None
}

macro_rules! require_services {
    () => {
        if let Some(why) = unavailable() {
            eprintln!("SKIP: {why}");
            return;
        }
    };
}

/// The user PostgreSQL runs as (it refuses root): the test script's unprivileged user, or `postgres`.
fn postgres_user() -> Option<String> {
    let is_root = Command::new("id").arg("-u").output().ok().is_some_and(|o| o.stdout.starts_with(b"0\n"));
    if !is_root {
        return None;
    }
    ["kiln-unprivileged", "postgres"]
        .into_iter()
        .find(|u| {
            Command::new("id")
                .arg(u)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_owned)
}

/// `program args…`, as `user` when given (`setpriv` executes the program in its place, so the child is
/// the program itself and can be signalled).
fn command_as(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let id = |flag: &str| {
                let out = Command::new("id").arg(flag).arg(u).output().unwrap();
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            };
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", id("-u")))
                .arg(format!("--regid={}", id("-g")))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool, child: &mut Child) {
    let start = Instant::now();
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited while starting: {status}");
        }
        assert!(start.elapsed() < timeout, "{what} did not start within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A PostgreSQL server and a docker-registry on loopback, in a temporary folder; stopped when dropped.
struct Services {
    _dir: tempfile::TempDir,
    postgres: Child,
    registry: Child,
    pg_port: u16,
    /// `http://127.0.0.1:PORT`
    registry_url: String,
    /// PostgreSQL's certificate (self-signed: its own CA).
    ca: PathBuf,
    databases: std::sync::atomic::AtomicUsize,
}

impl Drop for Services {
    fn drop(&mut self) {
        // PostgreSQL's immediate shutdown (SIGQUIT) ends its server processes with it.
        let _ = Command::new("kill").arg("-QUIT").arg(self.postgres.id().to_string()).status();
        let _ = self.postgres.wait();
        let _ = self.registry.kill();
        let _ = self.registry.wait();
    }
}

impl Services {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let user = postgres_user();
        let bin = postgres_bin().unwrap();
        let pg = dir.path().join("pg");
        fs_err::create_dir_all(&pg).unwrap();
        if let Some(u) = &user {
            assert!(Command::new("chown")
                .arg(format!("{u}:"))
                .arg(dir.path())
                .arg(&pg)
                .status()
                .unwrap()
                .success());
        }
        let out = command_as(user.as_deref(), &bin.join("initdb"))
            .args(["-D"])
            .arg(pg.join("data"))
            .args(["-U", "kiln", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        // A self-signed certificate for 127.0.0.1 (not for `localhost`): TLS for the connections that ask.
        let (cert, key) = (pg.join("server.crt"), pg.join("server.key"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args([
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        if let Some(u) = &user {
            assert!(Command::new("chown")
                .arg(format!("{u}:"))
                .arg(&cert)
                .arg(&key)
                .status()
                .unwrap()
                .success());
        }
        let pg_port = free_port();
        let mut postgres = command_as(user.as_deref(), &bin.join("postgres"))
            .arg("-D")
            .arg(pg.join("data"))
            .arg("-k")
            .arg(&pg)
            .args(["-h", "127.0.0.1", "-p", &pg_port.to_string()])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200", "-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("postgres://kiln@127.0.0.1:{pg_port}/postgres");
        wait_for(
            "postgres",
            Duration::from_secs(60),
            || postgres::Client::connect(&url, postgres::NoTls).is_ok(),
            &mut postgres,
        );

        let reg_port = free_port();
        let storage = dir.path().join("registry");
        fs_err::create_dir_all(&storage).unwrap();
        let config = dir.path().join("registry.yml");
        fs_err::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{reg_port}\n  secret: kiln-scaleout-test\n",
                storage.display()
            ),
        )
        .unwrap();
        let mut registry = Command::new(registry_bin().unwrap())
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry_url = format!("http://127.0.0.1:{reg_port}");
        let probe = Http::new(&registry_url);
        wait_for(
            "docker-registry",
            Duration::from_secs(60),
            || TcpStream::connect(("127.0.0.1", reg_port)).is_ok() && probe.get("/v2/", None).status == 200,
            &mut registry,
        );
        Self { _dir: dir, postgres, registry, pg_port, registry_url, ca: cert, databases: Default::default() }
    }

    /// A new, empty database; its connection string.
    fn database(&self) -> String {
        let n = self.databases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("kiln{n}");
        let mut admin = postgres::Client::connect(
            &format!("postgres://kiln@127.0.0.1:{}/postgres", self.pg_port),
            postgres::NoTls,
        )
        .unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        format!("postgres://kiln@127.0.0.1:{}/{name}", self.pg_port)
    }

    /// Backends on a new database and a repository of its own in the registry.
    fn backends(&self, with_registry: bool) -> Backends {
        let db = self.database();
        let repo = format!("kiln-blobs-{}", db.rsplit('/').next().unwrap());
        Backends {
            postgres: Some(db),
            blob_registry: with_registry.then(|| self.registry_url.clone()),
            blob_repository: with_registry.then_some(repo),
        }
    }
}

#[test]
fn the_services_start_and_stop() {
    require_services!();
    let s = Services::start();
    let db = s.database();
    let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    assert_eq!(c.query_one("SELECT 1 + 1", &[]).unwrap().get::<_, i32>(0), 2);
    assert_eq!(Http::new(&s.registry_url).get("/v2/", None).status, 200);
    let (pg, registry) = (s.pg_port, s.registry_url.trim_start_matches("http://").to_owned());
    drop(s);
    assert!(postgres::Client::connect(&db, postgres::NoTls).is_err(), "PostgreSQL stopped");
    assert!(TcpStream::connect(("127.0.0.1", pg)).is_err() && TcpStream::connect(registry).is_err());
}

/// An error and its sources, as the CLI prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(&format!(": {c}"));
        source = c.source();
    }
    s
}

#[test]
fn connections_asking_for_tls_get_it_verified() {
    require_services!();
    let s = Services::start();
    let db = s.database();
    let ca = s.ca.display().to_string();
    // With the server's CA: the store works, over TLS (PostgreSQL says so of the store's connections).
    let url = format!("{db}?sslmode=verify-full&sslrootcert={ca}&application_name=kiln-tls");
    let (c, _dir) = catalog(
        &support::Bundles::new().trusted_public(),
        &Backends { postgres: Some(url), ..Default::default() },
    );
    assert!(c.meta().families().unwrap().is_empty());
    let mut admin = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE ssl), count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE application_name = 'kiln-tls'",
            &[],
        )
        .unwrap();
    let (tls, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(all > 0 && tls == all, "{tls} of {all} connections are TLS");
    // Refused: a certificate no trusted CA signed; a host name the certificate does not name.
    let open = |url: String| {
        Catalog::open_with(
            tempfile::tempdir().unwrap().path(),
            &Backends { postgres: Some(url), ..Default::default() },
        )
    };
    let e = open(format!("{db}?sslmode=require")).map(drop).map_err(|e| chain(&e)).unwrap_err();
    assert!(e.contains("certificate"), "{e}");
    let localhost = db.replace("127.0.0.1", "localhost");
    let e = open(format!("{localhost}?sslmode=require&sslrootcert={ca}"))
        .map(drop)
        .map_err(|e| chain(&e))
        .unwrap_err();
    assert!(e.contains("hostname mismatch"), "{e}");
    // An unreadable root certificate file is named.
    let e = open(format!("{db}?sslmode=require&sslrootcert=/nonexistent/ca.pem"))
        .map(drop)
        .map_err(|e| chain(&e))
        .unwrap_err();
    assert!(e.contains("TLS") && e.contains("/nonexistent/ca.pem"), "{e}");
}

// ---------------------------------------------------------------------------------------------------------
// The same rules over every store

fn v(s: &str) -> semver::Version {
    s.parse().unwrap()
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// A catalog in a new temporary data folder over `backends`, trusting `key`.
fn catalog(key: &kiln_sign::PublicKey, backends: &Backends) -> (Catalog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Catalog::open_with(&dir.path().join("data"), backends).unwrap();
    c.trust(key.clone()).unwrap();
    (c, dir)
}

fn actions(c: &Catalog, family: Option<&str>) -> Vec<String> {
    let q = AuditQuery { family: family.map(str::to_owned), limit: 1000, ..Default::default() };
    let mut a: Vec<String> = c.meta().audit(&q).unwrap().into_iter().map(|e| e.action).collect();
    a.reverse();
    a
}

/// The catalog's rules, through [`Catalog`] and its stores, whatever they are.
fn catalog_rules(backend: &str, backends: &Backends) {
    let b = Bundles::new();
    let (c, _dir) = catalog(&b.trusted_public(), backends);
    let ctx = |what: &str| format!("{backend}: {what}");

    // The first admin token, once.
    let admin = c.ensure_admin_token(now()).unwrap().expect("a new catalog makes its admin token");
    assert!(admin.is_file());
    assert_eq!(c.ensure_admin_token(now()).unwrap(), None, "{}", ctx("a second admin token"));

    // Publish: created, then a no-op; another image under the version is a conflict.
    let web1 = b.good(&BundleSpec::new("web", "1.0.0"));
    let out = c.publish_dir(&web1.dir, Vec::new(), "test", now()).unwrap();
    assert!(out.created, "{}", ctx("first publish"));
    assert_eq!(c.meta().family_revision("web").unwrap(), Some(1));
    let again = c.publish_dir(&web1.dir, Vec::new(), "test", now()).unwrap();
    assert!(!again.created, "{}", ctx("same image again"));
    assert_eq!(again.version.manifest_digest, out.version.manifest_digest);
    let other = b.good(&BundleSpec::new("web", "1.0.0").salt("other"));
    let conflict = c.publish_dir(&other.dir, Vec::new(), "test", now());
    assert!(matches!(conflict, Err(CatalogError::Conflict { .. })), "{}: {conflict:?}", ctx("conflict"));
    assert_eq!(c.meta().family_revision("web").unwrap(), Some(1), "{}", ctx("no-ops change nothing"));

    // Concurrent publishes of one version (two images) record exactly one.
    let one = b.good(&BundleSpec::new("web", "1.1.0").salt("one"));
    let two = b.good(&BundleSpec::new("web", "1.1.0").salt("two"));
    for bundle in [&one, &two] {
        for f in bundle.files() {
            c.blobs().put_file(&f.digest, &bundle.dir.join(&f.path)).unwrap();
        }
    }
    let results: Vec<Result<bool, String>> = std::thread::scope(|scope| {
        let hs: Vec<_> = [&one, &two, &one, &two]
            .into_iter()
            .map(|bundle| {
                let c = &c;
                scope.spawn(move || {
                    let req =
                        kiln_catalog::PublishRequest { files: bundle.files(), known_issues: Vec::new() };
                    c.publish(&req, "test", now()).map(|o| o.created).map_err(|e| format!("{e}"))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| matches!(r, Ok(true))).count(),
        1,
        "{}: {results:?}",
        ctx("one image")
    );
    assert!(
        results.iter().all(|r| r.is_ok() || r.as_ref().unwrap_err().contains("already published")),
        "{results:?}"
    );
    let fam = c.family("web").unwrap();
    assert_eq!(fam.versions.len(), 2);
    assert_eq!(actions(&c, Some("web")), ["publish", "publish"], "{}", ctx("audit of publishes"));

    // Release notes are recorded with the version.
    assert!(c.meta().notes("web", &v("1.1.0")).unwrap().is_some_and(|n| n.markdown.contains("1.1.0")));

    // Promotion moves the channel once; the family's revision moves with every change.
    let before = c.meta().family_revision("web").unwrap().unwrap();
    let moved = c.promote("web", "stable", &v("1.1.0"), "test", now()).unwrap();
    assert_eq!(moved.map(|m| m.to), Some(v("1.1.0")));
    assert_eq!(c.promote("web", "stable", &v("1.1.0"), "test", now()).unwrap(), None);
    assert!(c.meta().family_revision("web").unwrap().unwrap() > before);
    let fam = c.family("web").unwrap();
    assert_eq!(fam.channels["stable"].version, v("1.1.0"), "{}", ctx("the cache follows the revision"));
    let summary = c.meta().families().unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!((summary[0].versions, summary[0].latest.clone()), (2, Some(v("1.1.0"))));
    assert_eq!(summary[0].channels["stable"], v("1.1.0"));

    // Lifecycle by hand; revocation flags the images built FROM the version, in other families.
    let deprecate =
        LifecycleChange { deprecated_on: Some(Some("2030-01-01".parse().unwrap())), ..Default::default() };
    let (rec, _) = c.change_lifecycle("web", &v("1.0.0"), &deprecate, "test", now()).unwrap();
    assert!(rec.lifecycle.deprecated_on.is_some(), "{}", ctx("deprecated"));
    let child = b.good(&BundleSpec::new("app", "2.0.0").parent("web", "1.1.0", &one.manifest_digest()));
    c.publish_dir(&child.dir, Vec::new(), "test", now()).unwrap();
    let revoke = LifecycleChange { revoke: Some("CVE-2099-0001".into()), ..Default::default() };
    let (_, flagged) = c.change_lifecycle("web", &v("1.1.0"), &revoke, "test", now()).unwrap();
    assert_eq!(flagged, ["app@2.0.0"], "{}", ctx("revocation flags descendants"));
    assert!(c.version("app", &v("2.0.0")).unwrap().lifecycle.revoked.is_some());
    assert_eq!(actions(&c, Some("app")), ["publish", "revoke"]);

    // Tokens: made, used, revoked; their hashes only.
    let (token, record) = c.create_token("ci", &[Scope::Publish, Scope::Read], "test", now()).unwrap();
    assert_eq!(c.authenticate(&token).unwrap().id, record.id);
    assert!(c.meta().tokens().unwrap().iter().all(|t| t.hash != token));
    c.revoke_token(&record.id, "test", now()).unwrap();
    assert!(matches!(c.authenticate(&token), Err(CatalogError::Unauthenticated)));
    assert!(matches!(c.revoke_token(&record.id, "test", now()), Err(CatalogError::NotFound { .. })));

    // The audit log pages backwards.
    let all = c.meta().audit(&AuditQuery { limit: 1000, ..Default::default() }).unwrap();
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq));
    let page =
        c.meta().audit(&AuditQuery { limit: 2, before: Some(all[1].seq), ..Default::default() }).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [all[2].seq, all[3].seq]);
    let web_only = c
        .meta()
        .audit(&AuditQuery { family: Some("web".into()), version: Some(v("1.1.0")), limit: 10, before: None })
        .unwrap();
    assert!(web_only.iter().all(|e| e.family.as_deref() == Some("web") && e.version == Some(v("1.1.0"))));
    assert!(web_only.iter().any(|e| e.action == "promote"));

    // The registry's records.
    let (m1, m2, layer) = (sha256(b"manifest one"), sha256(b"manifest two"), sha256(b"layer"));
    let manifest = |digest: &str, subject: Option<&str>| RegistryManifest {
        repo: "team/app".into(),
        digest: digest.into(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: Some("application/vnd.example".into()),
        subject: subject.map(str::to_owned),
        size: 42,
        annotations: Some(r#"{"a":"b"}"#.into()),
        refs: vec![layer.clone()],
    };
    c.meta()
        .write(&mut |tx| {
            tx.registry_put_manifest(&manifest(&m1, None))?;
            tx.registry_put_manifest(&manifest(&m2, Some(&m1)))?;
            tx.registry_put_manifest(&manifest(&m2, Some(&m1)))?;
            for tag in ["v1", "V2", "latest", "_x"] {
                tx.registry_set_tag("team/app", tag, &m1)?;
            }
            tx.registry_set_tag("team/app", "v1", &m2)?;
            tx.registry_add_blob("team/app", &layer)?;
            tx.registry_add_blob("team/app", &layer)?;
            tx.registry_start_upload(&Upload {
                id: "u1".into(),
                repo: "team/app".into(),
                started_at: now(),
            })?;
            Ok(())
        })
        .unwrap();
    let m = c.meta();
    assert_eq!(
        m.registry_manifest("team/app", &m2).unwrap(),
        Some(manifest(&m2, Some(&m1))),
        "{}",
        ctx("manifest")
    );
    assert_eq!(
        m.registry_tags("team/app").unwrap(),
        ["V2", "_x", "latest", "v1"],
        "{}",
        ctx("tags in byte order")
    );
    assert_eq!(m.registry_tag("team/app", "v1").unwrap(), Some(m2.clone()));
    assert_eq!(m.registry_referrers("team/app", &m1).unwrap().len(), 1);
    assert!(
        m.registry_has_blob(Some("team/app"), &layer).unwrap() && m.registry_has_blob(None, &layer).unwrap()
    );
    assert!(!m.registry_has_blob(Some("team/other"), &layer).unwrap());
    assert!(m.registry_repo_exists("team/app").unwrap() && !m.registry_repo_exists("team/other").unwrap());
    assert_eq!(m.registry_upload("u1").unwrap().map(|u| u.repo), Some("team/app".into()));
    let refs = m.referenced_blobs().unwrap();
    assert!(refs.contains(&layer) && refs.contains(&m1) && refs.contains(&web1.manifest_digest()));
    let mut removed = (false, false, false, false);
    m.write(&mut |tx| {
        removed = (
            tx.registry_delete_tag("team/app", "latest")?,
            tx.registry_delete_manifest("team/app", &m1)?,
            tx.registry_delete_blob("team/app", &layer)?,
            tx.registry_end_upload("u1")?,
        );
        Ok(())
    })
    .unwrap();
    assert_eq!(removed, (true, true, true, true));
    assert_eq!(m.registry_tags("team/app").unwrap(), ["v1"], "{}", ctx("a manifest's tags go with it"));
    assert_eq!(m.registry_upload("u1").unwrap(), None);

    // A failed write changes nothing.
    let failed = m.write(&mut |tx| {
        tx.registry_set_tag("team/app", "half", &m2)?;
        Err(CatalogError::rejected("changed my mind"))
    });
    assert!(failed.is_err());
    assert_eq!(m.registry_tag("team/app", "half").unwrap(), None, "{}", ctx("rolled back"));

    // Garbage collection keeps what versions and manifests refer to.
    let stray = b"a blob nothing refers to".to_vec();
    c.blobs().put(&sha256(&stray), None, &mut &stray[..]).unwrap();
    let report = c.gc(Duration::ZERO).unwrap();
    assert!(report.blobs_removed >= 1, "{}: {report:?}", ctx("gc removes the stray blob"));
    for f in web1.files().iter().chain(one.files().iter()).chain(child.files().iter()) {
        let w = c.blobs().stat(&f.digest).unwrap();
        let kept = fam_has(&c, &f.digest);
        assert_eq!(w.is_some(), kept, "{}: {} {}", ctx("gc"), f.path, f.digest);
    }
    assert_eq!(c.blobs().stat(&sha256(&stray)).unwrap(), None);
}

/// Whether a published version names the blob.
fn fam_has(c: &Catalog, digest: &str) -> bool {
    c.meta().referenced_blobs().unwrap().contains(digest)
}

#[test]
fn the_catalog_rules_hold_on_sqlite_postgres_and_the_registry() {
    catalog_rules("sqlite", &Backends::default());
    require_services!();
    let s = Services::start();
    catalog_rules("postgres", &s.backends(false));
    catalog_rules("postgres + registry", &s.backends(true));
}

#[test]
fn replicas_starting_together_on_one_database_make_one_admin_token() {
    require_services!();
    let s = Services::start();
    let backends = s.backends(true);
    let key = Bundles::new().trusted_public();
    let made: Vec<bool> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (b, backends) = (&key, &backends);
                scope.spawn(move || {
                    let (c, _dir) = catalog(b, backends);
                    c.ensure_admin_token(now()).unwrap().is_some()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(made.iter().filter(|m| **m).count(), 1, "{made:?}");
    let (c, _dir) = catalog(&key, &backends);
    assert_eq!(c.meta().tokens().unwrap().len(), 1);
    assert_eq!(actions(&c, None), ["token-create"]);
}

// ---------------------------------------------------------------------------------------------------------
// The same blob store behaviour on a folder and a registry

fn read_all(r: &mut dyn std::io::Read) -> Vec<u8> {
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    out
}

fn blob_rules(name: &str, s: &dyn BlobStore) {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let ctx = |what: &str| format!("{name}: {what}");
    let hello = sha256(b"hello");
    assert!(
        matches!(s.put(&hello, None, &mut &b"hellO"[..]), Err(StoreError::BlobDigest { .. })),
        "{}",
        ctx("digest")
    );
    assert!(
        matches!(s.put(&hello, Some(4), &mut &b"hello"[..]), Err(StoreError::BlobSize { .. })),
        "{}",
        ctx("size")
    );
    assert_eq!(s.stat(&hello).unwrap(), None, "{}", ctx("a refused blob is absent"));
    assert_eq!(s.put(&hello, Some(5), &mut &b"hello"[..]).unwrap(), 5);
    assert_eq!(s.stat(&hello).unwrap(), Some(5));
    assert_eq!(s.put(&hello, None, &mut &b"hello"[..]).unwrap(), 5, "{}", ctx("stored twice"));
    assert!(matches!(s.put(&hello, None, &mut &b"other"[..]), Err(StoreError::BlobDigest { .. })));
    assert!(matches!(s.open(&sha256(b"never")), Err(StoreError::BlobMissing { .. })));
    assert!(matches!(s.stat("sha256:../../etc"), Err(StoreError::BadDigest(_))));

    // A bigger blob (several of the stores' buffers), read whole, from the middle, and after seeks.
    let big: Vec<u8> =
        (0..(3 << 20) + 12_345).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let d = sha256(&big);
    assert_eq!(s.put(&d, Some(big.len() as u64), &mut &big[..]).unwrap(), big.len() as u64);
    assert_eq!(read_all(&mut *s.open(&d).unwrap()), big, "{}", ctx("read whole"));
    let mut r = s.open(&d).unwrap();
    r.seek(SeekFrom::Start(2_000_000)).unwrap();
    let mut part = vec![0u8; 100_000];
    r.read_exact(&mut part).unwrap();
    assert_eq!(part, big[2_000_000..2_100_000], "{}", ctx("a range"));
    r.seek(SeekFrom::End(-10)).unwrap();
    assert_eq!(read_all(&mut r), big[big.len() - 10..], "{}", ctx("the end"));
    r.seek(SeekFrom::Start(5)).unwrap();
    let mut five = [0u8; 5];
    r.read_exact(&mut five).unwrap();
    assert_eq!(five, big[5..10]);
    // From a file, as a local publish stores it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    fs_err::write(&file, b"from a file").unwrap();
    assert_eq!(s.put_file(&sha256(b"from a file"), &file).unwrap(), 11);
    // sha512 names.
    let d512 = Algorithm::Sha512.digest(b"hello");
    assert_eq!(s.put(&d512, Some(5), &mut &b"hello"[..]).unwrap(), 5, "{}", ctx("sha512"));
    assert_eq!(read_all(&mut *s.open(&d512).unwrap()), b"hello");

    // Upload sessions: chunks in order, a broken chunk leaves nothing, the digest decides.
    s.upload_create("abc").unwrap();
    assert_eq!(s.upload_size("abc").unwrap(), Some(0));
    assert_eq!(s.upload_append("abc", Some(0), Some(5), &mut &b"hello"[..]).unwrap(), 5);
    assert!(matches!(
        s.upload_append("abc", Some(3), None, &mut &b"xx"[..]),
        Err(StoreError::UploadRange { size: 5, start: 3, .. })
    ));
    assert!(
        matches!(
            s.upload_append("abc", Some(5), Some(9), &mut &b" wor"[..]),
            Err(StoreError::UploadLength { expected: 9, found: 4, .. })
        ),
        "{}",
        ctx("a short chunk")
    );
    assert_eq!(s.upload_size("abc").unwrap(), Some(5));
    assert_eq!(s.upload_append("abc", None, None, &mut &b" world"[..]).unwrap(), 11);
    let hw = sha256(b"hello world");
    assert_eq!(s.upload_finish("abc", &hw).unwrap(), 11, "{}", ctx("two chunks"));
    assert_eq!(s.upload_size("abc").unwrap(), None);
    assert_eq!(read_all(&mut *s.open(&hw).unwrap()), b"hello world");
    // One chunk, the whole blob (what skopeo sends), and a sha512 name over chunks.
    s.upload_create("one").unwrap();
    s.upload_append("one", None, None, &mut &big[..]).unwrap();
    assert_eq!(s.upload_finish("one", &d).unwrap(), big.len() as u64);
    s.upload_create("five").unwrap();
    s.upload_append("five", None, None, &mut &b"hel"[..]).unwrap();
    s.upload_append("five", None, None, &mut &b"lo"[..]).unwrap();
    s.upload_append("five", None, None, &mut &b""[..]).unwrap();
    assert_eq!(s.upload_finish("five", &d512).unwrap(), 5);
    // Finished under another digest: nothing stored, the session gone.
    s.upload_create("def").unwrap();
    s.upload_append("def", None, None, &mut &b"bytes"[..]).unwrap();
    assert!(
        matches!(s.upload_finish("def", &sha256(b"other")), Err(StoreError::BlobDigest { .. })),
        "{}",
        ctx("wrong digest")
    );
    assert_eq!(s.stat(&sha256(b"other")).unwrap(), None);
    assert_eq!(s.upload_size("def").unwrap(), None);
    assert!(matches!(
        s.upload_append("nope", None, None, &mut &b""[..]),
        Err(StoreError::UploadUnknown { .. })
    ));
    s.upload_create("ghi").unwrap();
    assert!(s.upload_cancel("ghi").unwrap());
    assert!(!s.upload_cancel("ghi").unwrap());
    // Abandoned sessions are swept by age.
    s.upload_create("old").unwrap();
    assert_eq!(s.sweep_uploads(SystemTime::now() + Duration::from_secs(1)).unwrap(), 1, "{}", ctx("sweep"));
    assert_eq!(s.upload_size("old").unwrap(), None);

    // Listing and deleting, for garbage collection.
    let listed: Vec<String> = s.list().unwrap().into_iter().map(|b| b.digest).collect();
    for want in [&hello, &d, &d512, &hw] {
        assert!(listed.contains(want), "{}: {want} in {listed:?}", ctx("list"));
    }
    let touched = s.list().unwrap().into_iter().find(|b| b.digest == hello).unwrap().modified;
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(s.touch(&hello).unwrap(), Some(5));
    let after = s.list().unwrap().into_iter().find(|b| b.digest == hello).unwrap().modified;
    assert!(after > touched, "{}", ctx("touch refreshes the age"));
    s.delete(&hello).unwrap();
    assert_eq!(s.stat(&hello).unwrap(), None, "{}", ctx("deleted"));
    assert!(!s.list().unwrap().iter().any(|b| b.digest == hello));
    s.delete(&hello).unwrap();
}

#[test]
fn a_folder_and_a_registry_store_blobs_alike() {
    let dir = tempfile::tempdir().unwrap();
    blob_rules("folder", &FsBlobs::open(dir.path()).unwrap());
    require_services!();
    let s = Services::start();
    let b = s.backends(true);
    let (_, blobs) = b.open(dir.path()).unwrap();
    blob_rules("registry", &*blobs);
    // The registry holds what the catalog stored: the blob answers there, by digest.
    let repo = b.blob_repository.unwrap();
    let a = Http::new(&s.registry_url).get(&format!("/v2/{repo}/blobs/{}", sha256(b"hello world")), None);
    assert_eq!((a.status, a.body.as_slice()), (200, &b"hello world"[..]));
    // Two stores on one database and registry see the same blobs, and the same upload sessions.
    let (_, other) = b_clone(&s, &repo, &b.postgres.unwrap()).open(dir.path()).unwrap();
    assert_eq!(other.stat(&sha256(b"hello world")).unwrap(), Some(11));
    blobs.upload_create("shared").unwrap();
    blobs.upload_append("shared", None, None, &mut &b"hello "[..]).unwrap();
    assert_eq!(other.upload_append("shared", Some(6), None, &mut &b"world"[..]).unwrap(), 11);
    assert_eq!(blobs.upload_finish("shared", &sha256(b"hello world")).unwrap(), 11);

    // While one replica appends to a session, another is told it is busy, and nothing it sent is kept.
    blobs.upload_create("busy").unwrap();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let first = scope.spawn(|| blobs.upload_append("busy", None, None, &mut Slow(wait, false)));
        std::thread::sleep(Duration::from_millis(500));
        let second = other.upload_append("busy", None, None, &mut &b"other"[..]);
        assert!(matches!(second, Err(StoreError::UploadBusy { .. })), "{second:?}");
        go.send(()).unwrap();
        assert_eq!(first.join().unwrap().unwrap(), 4);
    });
    assert_eq!(other.upload_size("busy").unwrap(), Some(4));
}

/// A body whose bytes (`slow`) come when it is told to.
struct Slow(std::sync::mpsc::Receiver<()>, bool);

impl std::io::Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.1 {
            return Ok(0);
        }
        let _ = self.0.recv();
        self.1 = true;
        buf[..4].copy_from_slice(b"slow");
        Ok(4)
    }
}

fn b_clone(s: &Services, repo: &str, db: &str) -> Backends {
    Backends {
        postgres: Some(db.to_owned()),
        blob_registry: Some(s.registry_url.clone()),
        blob_repository: Some(repo.to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Replicas

/// An HTTP request with any headers; (status, headers, body).
fn call(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .timeout_global(Some(Duration::from_secs(60)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = agent.run(req.body(body).unwrap()).unwrap_or_else(|e| panic!("{method} {base}{path}: {e}"));
    let a = Answer::read(method, resp);
    (a.status, a.headers, a.body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map_or("", |(_, v)| v.as_str())
}

/// Every file of `bundle` downloaded through `server`, compared with the bundle's.
fn assert_served(base: &str, bundle: &Bundle, family: &str, version: &str) {
    let http = Http::new(base);
    for f in bundle.files() {
        let a = http.get(&format!("/api/v1/families/{family}/versions/{version}/files/{}", f.path), None);
        assert_eq!(a.status, 200, "{base}: {}: {}", f.path, a.text());
        assert_eq!(a.body, bundle.read(&f.path), "{base}: {} differs", f.path);
    }
}

/// Push an image (config, one layer, manifest) to `repo:tag`, its layer in two chunks sent to alternate
/// replicas; the manifest's bytes.
fn push_across(replicas: &[&str], token: &str, repo: &str, tag: &str) -> Vec<u8> {
    // A gzip stream, as a layer is (skopeo recompresses a layer that is not).
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let plain: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut gzip = Command::new("gzip")
        .args(["-n", "-1", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = gzip.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &plain).unwrap());
    let layer = gzip.wait_with_output().unwrap().stdout;
    writer.join().unwrap();
    assert!(layer.len() > 200_000, "two chunks of some size");
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let (at, mut n) = (|n: usize| replicas[n % replicas.len()], 0);
    let (st, h, _) = call(at(n), "POST", &format!("/v2/{repo}/blobs/uploads/"), token, &[], Vec::new());
    assert_eq!(st, 202);
    let mut location = header(&h, "location").to_owned();
    for (start, part) in [(0usize, &layer[..100_000]), (100_000, &layer[100_000..])] {
        n += 1;
        let range = format!("{start}-{}", start + part.len() - 1);
        let (st, h, body) = call(
            at(n),
            "PATCH",
            &location,
            token,
            &[("Content-Range", range), ("Content-Type", "application/octet-stream".into())],
            part.to_vec(),
        );
        assert_eq!(st, 202, "PATCH on replica {}: {}", n % replicas.len(), String::from_utf8_lossy(&body));
        location = header(&h, "location").to_owned();
    }
    n += 1;
    let sep = if location.contains('?') { '&' } else { '?' };
    let (st, _, body) =
        call(at(n), "PUT", &format!("{location}{sep}digest={}", sha256(&layer)), token, &[], Vec::new());
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    n += 1;
    let (st, _, _) = call(
        at(n),
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(&config)),
        token,
        &[("Content-Type", "application/octet-stream".into())],
        config.clone(),
    );
    assert_eq!(st, 201);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    n += 1;
    let (st, _, body) = call(
        at(n),
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        token,
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json".into())],
        manifest.clone(),
    );
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    manifest
}

/// A replica in this process over `backends` (its own data folder); the first admin token when it made it.
fn replica(key: &kiln_sign::PublicKey, backends: &Backends, admin: Option<&str>) -> (Server, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Catalog::open_with(&dir.path().join("data"), backends).unwrap();
    c.trust(key.clone()).unwrap();
    let token =
        c.ensure_admin_token(now()).unwrap().map(|p| fs_err::read_to_string(p).unwrap().trim().to_owned());
    let admin = token.clone().or(admin.map(str::to_owned)).unwrap_or_default();
    let server = Server::serve(c, admin, ServeOptions::default(), dir);
    (server, token)
}

#[test]
fn two_replicas_share_one_state() {
    require_services!();
    let mut s = Services::start();
    let backends = s.backends(true);
    let b = Bundles::new();
    let (a, token) = replica(&b.trusted_public(), &backends, None);
    let token = token.expect("the first replica makes the admin token");
    let (bb, none) = replica(&b.trusted_public(), &backends, Some(&token));
    assert!(none.is_none(), "the second replica finds the first one's admin token");

    // Published through A: resolved, listed and downloaded through B, the same bytes.
    let web = b.good(&BundleSpec::new("web", "1.0.0"));
    let out =
        a.client(Some(&token)).publish(&web.dir, Vec::new(), &kiln_catalog::client::NoProgress).unwrap();
    assert!(out.created);
    assert_served(&bb.url, &web, "web", "1.0.0");
    let version = |srv: &Server| srv.http.get("/api/v1/families/web/versions/1.0.0", None).json();
    assert_eq!(version(&a), version(&bb));
    assert_eq!(version(&bb)["manifest_digest"], web.manifest_digest());
    let resolve = |srv: &Server| srv.http.get("/api/v1/resolve?family=web&contract=base-os@^1", None);
    assert_eq!(resolve(&bb).json()["chosen"]["version"], "1.0.0");
    assert_eq!(resolve(&a).body, resolve(&bb).body);
    // Published again through B: the same image, nothing new.
    let again =
        bb.client(Some(&token)).publish(&web.dir, Vec::new(), &kiln_catalog::client::NoProgress).unwrap();
    assert!(!again.created);
    // A change through B is seen by A at once (its cache follows the family's revision).
    assert_eq!(a.http.get("/api/v1/families/web/channels", None).json()["channels"], json!([]));
    let p = bb.http.send(
        "PUT",
        "/api/v1/families/web/channels/stable",
        Some(&token),
        &json!({"version": "1.0.0"}),
    );
    assert_eq!(p.status, 200, "{}", p.text());
    assert_eq!(a.http.get("/api/v1/families/web/channels", None).json()["channels"][0]["version"], "1.0.0");
    // A token made through B works on A; the audit log is one.
    let t = bb.token("ci", &["read"]);
    assert_eq!(a.http.get("/api/v1/tokens", Some(&t)).status, 403, "known to A, without the admin scope");
    assert_eq!(a.audit(), bb.audit());

    // An image pushed to the registry API chunk by chunk, alternating replicas, and pulled by skopeo
    // through the other one.
    let manifest = push_across(&[&a.url, &bb.url], &token, "team/app", "v1");
    let (st, h, body) = call(
        &bb.url,
        "GET",
        "/v2/team/app/manifests/v1",
        &token,
        &[("Accept", "application/vnd.oci.image.manifest.v1+json".into())],
        Vec::new(),
    );
    assert_eq!((st, &body), (200, &manifest));
    assert_eq!(header(&h, "docker-content-digest"), sha256(&manifest));
    if Path::new("/usr/bin/skopeo").is_file() {
        let out = tempfile::tempdir().unwrap();
        let host = bb.url.trim_start_matches("http://");
        let st = Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "--src-creds"])
            .arg(format!("kiln:{token}"))
            .arg(format!("docker://{host}/team/app:v1"))
            .arg(format!("oci:{}:v1", out.path().join("layout").display()))
            .output()
            .unwrap();
        assert!(st.status.success(), "skopeo: {}", String::from_utf8_lossy(&st.stderr));
        // skopeo may write the manifest anew; the layer it pulled is the one pushed, byte for byte.
        let pushed: Value = serde_json::from_slice(&manifest).unwrap();
        let layer = pushed["layers"][0]["digest"].as_str().unwrap();
        let file = out.path().join("layout/blobs/sha256").join(&layer["sha256:".len()..]);
        assert_eq!(sha256(&fs_err::read(file).unwrap()), layer, "skopeo pulled the pushed layer");
    }

    // Health follows the shared stores, so a load balancer takes out a replica that cannot serve: the
    // registry gone, then the database.
    for r in [&a, &bb] {
        assert_eq!(r.http.get("/healthz", None).json()["status"], "ok");
    }
    let _ = s.registry.kill();
    let _ = s.registry.wait();
    let p = bb.http.get("/healthz", None).problem(503);
    assert!(p["detail"].as_str().unwrap().starts_with("the blobs store does not answer"), "{p}");
    let _ = Command::new("kill").arg("-QUIT").arg(s.postgres.id().to_string()).status();
    let _ = s.postgres.wait();
    let p = a.http.get("/healthz", None).problem(503);
    assert!(p["detail"].as_str().unwrap().starts_with("the metadata store does not answer"), "{p}");
}

// ---------------------------------------------------------------------------------------------------------
// Replicas killed mid-request

/// The settings of a replica process, in its environment.
const REPLICA_ENV: &str = "KILN_SCALEOUT_REPLICA";

/// Not a test of its own: with [`REPLICA_ENV`] set, this test binary serves a replica until it is killed
/// (how the kill test gets replicas it can SIGKILL); without it, nothing.
#[test]
fn replica_process() {
    let Ok(settings) = std::env::var(REPLICA_ENV) else { return };
    let v: Value = serde_json::from_str(&settings).unwrap();
    let text = |k: &str| v[k].as_str().map(str::to_owned);
    let backends = Backends {
        postgres: text("postgres"),
        blob_registry: text("registry"),
        blob_repository: text("repository"),
    };
    let mut c = Catalog::open_with(Path::new(&text("data").unwrap()), &backends).unwrap();
    c.trust(kiln_sign::PublicKey::from_pem(&text("key").unwrap()).unwrap()).unwrap();
    c.ensure_admin_token(now()).unwrap();
    kiln_catalog::http::run_blocking(
        std::sync::Arc::new(c),
        "127.0.0.1:0",
        ServeOptions::default(),
        |addr| {
            // Straight to the process's stdout: the test harness captures `println!`.
            let mut out = std::io::stdout();
            let _ = std::io::Write::write_all(&mut out, format!("REPLICA http://{addr}\n").as_bytes());
            let _ = std::io::Write::flush(&mut out);
        },
    )
    .unwrap();
}

/// A replica in a process of its own; killed (SIGKILL) when dropped.
struct Process {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Process {
    fn start(key: &kiln_sign::PublicKey, backends: &Backends) -> Self {
        use std::io::BufRead as _;
        let data = tempfile::tempdir().unwrap();
        let settings = json!({
            "postgres": backends.postgres, "registry": backends.blob_registry,
            "repository": backends.blob_repository, "data": data.path().join("data"), "key": key.to_pem(),
        });
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["replica_process", "--exact", "--nocapture", "--test-threads=1"])
            .env(REPLICA_ENV, settings.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                // The harness's `test replica_process ... ` may come first on the line.
                if let Some((_, url)) = line.split_once("REPLICA ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        // Killed when dropped, also when it does not start.
        let mut process = Self { child, url: String::new(), _data: data };
        process.url = rx.recv_timeout(Duration::from_secs(60)).expect("the replica process starts");
        process
    }

    /// SIGKILL, and wait for it to be gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Send a request's headers (announcing `length` bytes) and `part` of its body; the connection, left open.
fn cut_off(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, String)],
    length: usize,
    part: &[u8],
) -> TcpStream {
    use std::io::Write as _;
    let addr = base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: {length}\r\nContent-Type: application/octet-stream\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).unwrap();
    tcp.write_all(part).unwrap();
    tcp.flush().unwrap();
    // Long enough for the replica to be writing the body into the stores.
    std::thread::sleep(Duration::from_millis(300));
    tcp
}

/// `POST /api/v1/publish` whose answer may never come (the replica dies): its status, if any.
fn try_publish(base: &str, token: &str, bundle_files: &[kiln_catalog::model::FileRecord]) -> Option<u16> {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build();
    let req = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{base}/api/v1/publish"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&json!({ "files": bundle_files })).unwrap())
        .unwrap();
    ureq::Agent::new_with_config(config).run(req).ok().map(|r| r.status().as_u16())
}

fn publishes_of(server: &Server, version: &str) -> usize {
    server.audit().iter().filter(|e| e["action"] == "publish" && e["version"] == version).count()
}

#[test]
fn a_replica_killed_mid_request_loses_nothing() {
    require_services!();
    let s = Services::start();
    let backends = s.backends(true);
    let b = Bundles::new();
    let key = b.trusted_public();
    let (survivor, token) = replica(&key, &backends, None);
    let token = token.unwrap();

    // A registry upload: a chunk through a replica, the next one cut off by its death; the session goes on
    // through the survivor from what was committed.
    let mut doomed = Process::start(&key, &backends);
    let (st, h, _) = call(&doomed.url, "POST", "/v2/team/app/blobs/uploads/", &token, &[], Vec::new());
    assert_eq!(st, 202);
    let location = header(&h, "location").to_owned();
    let (st, h, _) =
        call(&doomed.url, "PATCH", &location, &token, &[("Content-Range", "0-5".into())], b"hello ".to_vec());
    assert_eq!(st, 202);
    let location = header(&h, "location").to_owned();
    let tcp = cut_off(
        &doomed.url,
        "PATCH",
        &location,
        &token,
        &[("Content-Range", "6-1005".into())],
        1000,
        &[b'x'; 500],
    );
    doomed.kill();
    drop(tcp);
    let (st, h, _) = call(&survivor.url, "GET", &location, &token, &[], Vec::new());
    assert_eq!((st, header(&h, "range")), (204, "0-5"), "the cut-off chunk left nothing");
    let (st, h, _) = call(
        &survivor.url,
        "PATCH",
        &location,
        &token,
        &[("Content-Range", "6-10".into())],
        b"world".to_vec(),
    );
    assert_eq!(st, 202);
    let location = header(&h, "location").to_owned();
    let hw = sha256(b"hello world");
    let sep = if location.contains('?') { '&' } else { '?' };
    let (st, _, body) =
        call(&survivor.url, "PUT", &format!("{location}{sep}digest={hw}"), &token, &[], Vec::new());
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    let (st, _, body) =
        call(&survivor.url, "GET", &format!("/v2/team/app/blobs/{hw}"), &token, &[], Vec::new());
    assert_eq!((st, body.as_slice()), (200, &b"hello world"[..]));

    // A publish's upload cut off by the replica's death: the blob is absent, the version too; the publish
    // through the survivor completes.
    let web = b.good(&BundleSpec::new("web", "1.0.0").disk_size(8 << 20));
    let disk = web.files().into_iter().find(|f| f.path == support::DISK).unwrap();
    let mut doomed = Process::start(&key, &backends);
    let bytes = web.read(support::DISK);
    let tcp = cut_off(
        &doomed.url,
        "PUT",
        &format!("/api/v1/blobs/{}", disk.digest),
        &token,
        &[],
        bytes.len(),
        &bytes[..bytes.len() / 2],
    );
    doomed.kill();
    drop(tcp);
    assert_eq!(
        survivor.http.request("HEAD", &format!("/api/v1/blobs/{}", disk.digest), None, None).status,
        404
    );
    assert_eq!(survivor.http.get("/api/v1/families/web/versions/1.0.0", None).status, 404);
    assert!(
        survivor
            .client(Some(&token))
            .publish(&web.dir, Vec::new(), &kiln_catalog::client::NoProgress)
            .unwrap()
            .created
    );
    assert_served(&survivor.url, &web, "web", "1.0.0");
    assert_eq!(publishes_of(&survivor, "1.0.0"), 1);

    // Replicas killed at several moments of a publish: the version is absent or whole, and the publish
    // retried through the survivor records it once.
    for (i, delay) in [0u64, 10, 40, 120, 400].into_iter().enumerate() {
        let version = format!("1.1.{i}");
        let bundle = b.good(&BundleSpec::new("web", &version).disk_size(1 << 20));
        let mut doomed = Process::start(&key, &backends);
        let http = Http::new(&doomed.url);
        for f in bundle.files() {
            let a =
                http.put_bytes(&format!("/api/v1/blobs/{}", f.digest), Some(&token), bundle.read(&f.path));
            assert_eq!(a.status, 201, "{}", a.text());
        }
        let (url, t, files) = (doomed.url.clone(), token.clone(), bundle.files());
        let publishing = std::thread::spawn(move || try_publish(&url, &t, &files));
        std::thread::sleep(Duration::from_millis(delay));
        doomed.kill();
        let answered = publishing.join().unwrap();
        let a = survivor.http.get(&format!("/api/v1/families/web/versions/{version}"), None);
        match a.status {
            404 => assert_eq!(publishes_of(&survivor, &version), 0, "{version}: no version, no audit entry"),
            200 => {
                assert_served(&survivor.url, &bundle, "web", &version);
                assert_eq!(publishes_of(&survivor, &version), 1);
            }
            other => panic!("{version}: {other} {}", a.text()),
        }
        let out = survivor
            .client(Some(&token))
            .publish(&bundle.dir, Vec::new(), &kiln_catalog::client::NoProgress)
            .unwrap();
        assert_eq!(
            out.created,
            a.status == 404,
            "{version} (killed after {delay} ms, answered {answered:?})"
        );
        assert_served(&survivor.url, &bundle, "web", &version);
        assert_eq!(publishes_of(&survivor, &version), 1, "{version}");
    }

    // What the dead replicas left is garbage, collected; everything a version names stays.
    let c = &survivor.catalog;
    c.gc(Duration::ZERO).unwrap();
    let referenced = c.meta().referenced_blobs().unwrap();
    for blob in c.blobs().list().unwrap() {
        assert!(referenced.contains(&blob.digest), "{} is left after gc", blob.digest);
    }
    for v in &c.family("web").unwrap().versions {
        for f in &v.files {
            assert_eq!(
                c.blobs().stat(&f.digest).unwrap(),
                Some(f.size),
                "{}@{}: {}",
                v.family,
                v.version,
                f.path
            );
        }
    }
}

#[test]
fn concurrent_writes_through_two_replicas_never_act_on_stale_state() {
    require_services!();
    let s = Services::start();
    let backends = s.backends(false);
    let b = Bundles::new();
    let key = b.trusted_public();
    let (one, _d1) = catalog(&key, &backends);
    let (two, _d2) = catalog(&key, &backends);
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        one.publish_dir(&b.good(&BundleSpec::new("web", v)).dir, Vec::new(), "test", now()).unwrap();
    }
    // Promotions racing through both replicas: each move starts where the previous one ended.
    std::thread::scope(|scope| {
        for i in 0..12 {
            let c = if i % 2 == 0 { &one } else { &two };
            scope.spawn(move || {
                for round in 0..3 {
                    let to = ["1.0.0", "1.1.0", "1.2.0"][(i + round) % 3];
                    c.promote("web", "candidate", &v(to), &format!("writer-{i}"), now()).unwrap();
                }
            });
        }
    });
    let history = &two.family("web").unwrap().channels["candidate"].history;
    assert!(!history.is_empty());
    assert_eq!(history[0].from, None);
    for w in history.windows(2) {
        assert_eq!(w[1].from.as_ref(), Some(&w[0].to), "a move made on stale state: {history:?}");
        assert_ne!(w[1].from.as_ref(), Some(&w[1].to), "a move to where the channel already was");
    }
    let promotes = actions(&one, Some("web")).iter().filter(|a| *a == "promote").count();
    assert_eq!(promotes, history.len(), "one audit entry per move");
}
