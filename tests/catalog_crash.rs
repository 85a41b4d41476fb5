//! Crash safety of publishing: a publish killed at any moment leaves no visible partial version and no
//! orphan that garbage collection never removes.
//!
//! One signed, certified synthetic bundle (a raw artifact of a few MB) is published over and over, and
//! something is killed with SIGKILL after a random delay spread over the publish's measured duration:
//! `kiln publish --catalog DATA` itself, `kiln publish --catalog URL` (the server keeps running), or the
//! `kiln catalog serve` process the client is talking to (restarted on the same data folder afterwards).
//! The delays come from a seeded generator; the seed is printed and `KILN_CRASH_SEED=N` replays a run,
//! `KILN_CRASH_ITERATIONS` changes how many kills there are.
//!
//! After every kill the catalog must open and the version must be absent (no record, no notes, no audit
//! entry, 404 over HTTP) or complete (its record lists exactly the bundle's files, each a blob whose sha256
//! is its digest, readable through the API; notes and one publish audit entry present), and every blob
//! must be whole (its content hashes to its name). Once a kill lands after the commit, that data folder is
//! collected with `kiln catalog gc --grace 0` (exactly the referenced blobs stay; no upload, no staging
//! folder) and the next kills go to a fresh one. At the end the publish runs to completion on the last
//! folder, gc leaves exactly what the version refers to, and publishing again changes nothing.

mod common;

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Output, Stdio},
    time::{Duration, Instant},
};

use kiln_blueprint::manifest::{Artifact, ArtifactKind, Manifest};
use kiln_catalog::{model::FileRecord, store::AuditQuery, Catalog, CatalogError};
use kiln_sign::SigningKey;
use serde_json::{json, Value};
use sha2::Digest as _;

const FAMILY: &str = "crash-image";
const VERSION: &str = "1.0.0";
/// Size of the bundle's raw artifact: big enough that a publish takes a few hundred milliseconds.
const ARTIFACT_MB: usize = 24;
const DEFAULT_ITERATIONS: usize = 40;

/// splitmix64: a small seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn sha256_reader(mut r: impl std::io::Read) -> (String, u64) {
    let mut h = sha2::Sha256::new();
    let n = std::io::copy(&mut r, &mut h).unwrap();
    (format!("sha256:{}", hex::encode(h.finalize())), n)
}

fn artifact(kind: ArtifactKind, dir: &Path, path: &str) -> Artifact {
    let bytes = fs_err::read(dir.join(path)).unwrap();
    Artifact { kind, path: path.to_owned(), sha256: sha256(&bytes), size: bytes.len() as u64 }
}

/// A signed build output that passed certification for base-os@1.0.0, as `kiln sign` leaves it; the
/// key's public PEM is written to `pub_path`.
fn make_bundle(dir: &Path, pub_path: &Path) {
    fs_err::create_dir_all(dir.join("report")).unwrap();
    // Pseudo-random content (no zero runs the blob store could skip as holes).
    let mut rng = Rng(0x6b69_6c6e);
    let raw: Vec<u8> = (0..ARTIFACT_MB << 17).flat_map(|_| rng.next().to_le_bytes()).collect();
    fs_err::write(dir.join("disk.raw"), &raw).unwrap();
    let sbom = json!({
        "spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "name": FAMILY,
        "packages": [
            {"SPDXID": "SPDXRef-Image", "name": FAMILY, "versionInfo": VERSION,
             "downloadLocation": "NOASSERTION", "primaryPackagePurpose": "OPERATING_SYSTEM"},
            {"SPDXID": "SPDXRef-Package-deb-base-files.amd64", "name": "base-files", "versionInfo": "12.4+deb12u5",
             "downloadLocation": "NOASSERTION"},
        ],
    });
    fs_err::write(dir.join("sbom.spdx.json"), serde_json::to_vec_pretty(&sbom).unwrap()).unwrap();
    let mut manifest = Manifest::new(FAMILY, VERSION, &sha256(b"blueprint"), &sha256(b"plan"));
    manifest.contracts = vec!["base-os@^1".into()];
    let raw_artifact = artifact(ArtifactKind::Raw, dir, "disk.raw");
    let report = json!({
        "schema": "kiln.certification/v1",
        "image": {"name": FAMILY, "version": VERSION},
        "artifacts": [{"path": raw_artifact.path, "sha256": raw_artifact.sha256}],
        "contracts": [], "artifact_checks": [],
        "summary": {"pass": 1, "fail": 0, "skip": 0, "error": 0},
        "passed": true,
        "certified": ["base-os@1.0.0"],
    });
    let report_path = "report/certification.json";
    fs_err::write(dir.join(report_path), serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    manifest.put(raw_artifact).unwrap();
    manifest.put(artifact(ArtifactKind::Sbom, dir, "sbom.spdx.json")).unwrap();
    manifest.put(artifact(ArtifactKind::Report, dir, report_path)).unwrap();
    manifest.write(dir).unwrap();
    let key = SigningKey::generate();
    kiln_sign::sign_files(dir, &key).unwrap();
    fs_err::write(pub_path, key.public_key().to_pem()).unwrap();
}

/// A running `kiln catalog serve`, killed when dropped.
struct Server {
    child: Child,
    url: String,
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Who a publish talks to, and what gets killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `kiln publish --catalog DATA`, killed.
    Local,
    /// `kiln publish --catalog URL`, the client killed (the server keeps running).
    Client,
    /// `kiln publish --catalog URL`, the server killed (and restarted).
    Server,
}

struct Harness {
    work: PathBuf,
    bundle: PathBuf,
    pub_key: PathBuf,
    /// The bundle's files as a publish names them.
    files: Vec<FileRecord>,
    data: PathBuf,
    epoch: usize,
    server: Option<Server>,
}

impl Harness {
    fn kiln(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        // No runbook/known-issues.toml above the scratch folder; no catalog or token from the environment.
        c.current_dir(&self.work).env_remove("KILN_CATALOG").env_remove("KILN_TOKEN");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.kiln().args(args).output().expect("run kiln")
    }

    fn run_ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kiln {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("kiln {args:?}: not JSON: {e}"))
    }

    /// A fresh data folder trusting the bundle's key.
    fn init(&self, data: &Path) {
        let _ = std::fs::remove_dir_all(data);
        self.run_ok(&[
            "--json",
            "catalog",
            "init",
            "--data",
            &data.display().to_string(),
            "--trust-key",
            &self.pub_key.display().to_string(),
        ]);
    }

    fn start_server(&mut self) -> String {
        if let Some(s) = &self.server {
            return s.url.clone();
        }
        let mut child = self
            .kiln()
            .args(["catalog", "serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&self.data)
            .arg("--trust-key")
            .arg(&self.pub_key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kiln catalog serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line.trim().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "kiln catalog serve printed {line:?}");
        self.server = Some(Server { child, url: url.clone(), _stdout: stdout });
        url
    }

    fn token(&self) -> String {
        fs_err::read_to_string(self.data.join("admin-token")).unwrap().trim().to_owned()
    }

    /// `kiln publish BUNDLE` to the data folder or the server, started (not waited for).
    fn spawn_publish(&mut self, remote: bool) -> Child {
        let target = if remote { self.start_server() } else { self.data.display().to_string() };
        let mut c = self.kiln();
        c.args(["--json", "publish"]).arg(&self.bundle).args(["--catalog", &target]);
        if remote {
            c.env("KILN_TOKEN", self.token());
        }
        c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start kiln publish")
    }

    /// Publish to completion; `created` of the answer.
    fn publish(&mut self, remote: bool) -> bool {
        let out = self.spawn_publish(remote).wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kiln publish: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["version"]["version"], VERSION, "{v}");
        v["created"].as_bool().unwrap()
    }

    /// Start a publish, wait `delay`, SIGKILL the publisher or the server; whether the publish had
    /// already finished when the kill came.
    fn kill_publish(&mut self, kind: Kind, delay: Duration) -> bool {
        let mut child = self.spawn_publish(kind != Kind::Local);
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        if kind == Kind::Server {
            // Dropping the server SIGKILLs it; the client then fails (or had finished).
            drop(self.server.take());
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "kiln publish hangs after its server was killed");
                std::thread::sleep(Duration::from_millis(5));
            }
        } else {
            let _ = child.kill();
            child.wait().unwrap();
        }
        finished
    }

    /// The catalog's invariants; whether the version is there (complete).
    fn check(&mut self, what: &str) -> bool {
        // Every blob is whole: its content hashes to its name.
        for digest in stored_blobs(&self.data) {
            let (algorithm, hex) = digest.split_once(':').unwrap();
            let f = fs_err::File::open(self.data.join("blobs").join(algorithm).join(hex)).unwrap();
            let found = match algorithm {
                "sha256" => sha256_reader(f).0,
                _ => {
                    let mut h = sha2::Sha512::new();
                    std::io::copy(&mut { f }, &mut h).unwrap();
                    format!("sha512:{}", hex::encode(h.finalize()))
                }
            };
            assert_eq!(found, digest, "{what}: blob {digest} is not whole");
        }

        // A publish the server finishes for a killed client may commit while this looks, so each look
        // must show the version absent or complete, and once seen it must stay. The notes and the audit
        // are read before the record: had they been there, the record would be too.
        let catalog =
            Catalog::open(&self.data).unwrap_or_else(|e| panic!("{what}: the catalog does not open: {e}"));
        let version: semver::Version = VERSION.parse().unwrap();
        let publishes = |c: &Catalog| {
            let q = AuditQuery { family: Some(FAMILY.into()), limit: 1000, ..Default::default() };
            c.meta().audit(&q).unwrap().into_iter().filter(|e| e.action == "publish").collect::<Vec<_>>()
        };
        let notes_before = catalog.meta().notes(FAMILY, &version).unwrap();
        let publishes_before = publishes(&catalog);
        let record = match catalog.version(FAMILY, &version) {
            Ok(r) => Some(r),
            Err(CatalogError::NotFound { .. }) => None,
            Err(e) => panic!("{what}: reading the version: {e}"),
        };
        match &record {
            None => {
                assert!(notes_before.is_none(), "{what}: release notes of an absent version");
                assert_eq!(publishes_before, [], "{what}: a publish audit entry for an absent version");
            }
            Some(r) => {
                assert_eq!(r.files, self.files, "{what}: the record does not list the bundle's files");
                let manifest = self.files.iter().find(|f| f.path == "manifest.json").unwrap();
                assert_eq!(r.manifest_digest, manifest.digest, "{what}");
                for f in &r.files {
                    let blob = catalog
                        .blobs()
                        .open(&f.digest)
                        .unwrap_or_else(|e| panic!("{what}: {} of a published version: {e}", f.path));
                    assert_eq!(sha256_reader(blob), (f.digest.clone(), f.size), "{what}: {}", f.path);
                }
                let notes = catalog.meta().notes(FAMILY, &version).unwrap();
                assert!(notes.is_some_and(|n| n.markdown.contains(VERSION)), "{what}: no release notes");
                assert_eq!(publishes(&catalog).len(), 1, "{what}: one publish audit entry");
            }
        }
        drop(catalog);
        let mut present = record.is_some();

        // What a consumer sees agrees: `kiln resolve` (from the folder, or from the server when one runs),
        // the version list and every file over HTTP.
        let target = match &self.server {
            Some(s) => s.url.clone(),
            None => self.data.display().to_string(),
        };
        let resolve =
            self.run(&["--json", "resolve", FAMILY, "--contract", "base-os@^1", "--catalog", &target]);
        let answer = String::from_utf8_lossy(&resolve.stdout);
        if resolve.status.success() {
            let v: Value = serde_json::from_slice(&resolve.stdout).unwrap();
            assert_eq!(v["chosen"]["version"], VERSION, "{what}: {v}");
            present = true;
        } else {
            assert!(!present, "{what}: kiln resolve does not find a published version: {answer}");
            assert!(answer.contains("not found"), "{what}: kiln resolve: {answer}");
        }
        if let Some(s) = &self.server {
            let (status, body) = http_get(&s.url, &format!("/api/v1/families/{FAMILY}/versions"));
            match status {
                200 => {
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    let versions: Vec<&str> = v["versions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x["version"].as_str().unwrap())
                        .collect();
                    assert_eq!(versions, [VERSION], "{what}: {v}");
                    present = true;
                }
                404 => assert!(!present, "{what}: the versions of a published family: 404"),
                other => panic!("{what}: GET versions: {other}"),
            }
            let base = format!("/api/v1/families/{FAMILY}/versions/{VERSION}");
            let (status, _) = http_get(&s.url, &format!("{base}/manifest"));
            match status {
                200 => {
                    for f in &self.files {
                        let (status, body) = http_get(&s.url, &format!("{base}/files/{}", f.path));
                        assert_eq!(status, 200, "{what}: GET {}", f.path);
                        assert_eq!(sha256(&body), f.digest, "{what}: GET {}", f.path);
                    }
                    present = true;
                }
                404 => assert!(!present, "{what}: GET manifest of a published version: 404"),
                other => panic!("{what}: GET manifest: {other}"),
            }
        }
        present
    }

    /// `kiln catalog gc --grace 0` (nothing running): exactly the blobs the versions refer to remain, no
    /// upload, no staging folder.
    fn collect(&mut self, what: &str) {
        drop(self.server.take());
        let data = self.data.display().to_string();
        self.run_ok(&["--json", "catalog", "gc", "--grace", "0", "--catalog", &data]);
        let catalog = Catalog::open(&self.data).unwrap();
        let referenced: BTreeSet<String> = match catalog.family(FAMILY) {
            Ok(f) => f.versions.iter().flat_map(|v| v.files.iter().map(|f| f.digest.clone())).collect(),
            Err(CatalogError::NotFound { .. }) => BTreeSet::new(),
            Err(e) => panic!("{what}: {e}"),
        };
        let left = |dir: &str| -> Vec<String> {
            match std::fs::read_dir(self.data.join(dir)) {
                Ok(entries) => entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => panic!("{dir}: {e}"),
            }
        };
        assert_eq!(
            stored_blobs(&self.data),
            referenced,
            "{what}: after gc --grace 0 the blobs are not exactly the referenced ones"
        );
        assert_eq!(left("uploads"), Vec::<String>::new(), "{what}: uploads left after gc --grace 0");
        assert_eq!(left("staging"), Vec::<String>::new(), "{what}: staging folders left after gc --grace 0");
        // Nothing else anywhere: the database (and its WAL), the stores, the keys and the admin token.
        let known = [
            "admin-token",
            "blobs",
            "catalog.db",
            "catalog.db-shm",
            "catalog.db-wal",
            "staging",
            "trusted-keys",
            "uploads",
        ];
        for name in left(".") {
            assert!(known.contains(&name.as_str()), "{what}: {name} left in the data folder");
        }
        assert_eq!(left("trusted-keys").len(), 1, "{what}: {:?}", left("trusted-keys"));
    }

    /// What killed publishes left for garbage collection while the version is absent: (upload files,
    /// staging folders, blobs).
    fn leftovers(&self) -> (usize, usize, usize) {
        let count = |dir: &str| std::fs::read_dir(self.data.join(dir)).map_or(0, |d| d.count());
        (count("uploads"), count("staging"), stored_blobs(&self.data).len())
    }

    /// Collect the current data folder and start a fresh one.
    fn next_epoch(&mut self) {
        self.collect(&format!("data folder {}", self.epoch));
        fs_err::remove_dir_all(&self.data).unwrap();
        self.epoch += 1;
        self.data = self.work.join(format!("data-{}", self.epoch));
        self.init(&self.data.clone());
    }
}

/// Every blob in the data folder's blob store, as `ALGORITHM:HEX` (sha256, and sha512 for registry pushes).
fn stored_blobs(data: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for algorithm in fs_err::read_dir(data.join("blobs")).unwrap() {
        let algorithm = algorithm.unwrap().file_name().into_string().unwrap();
        assert!(
            ["sha256", "sha512"].contains(&algorithm.as_str()),
            "blobs/{algorithm} in {}",
            data.display()
        );
        for e in fs_err::read_dir(data.join("blobs").join(&algorithm)).unwrap() {
            out.insert(format!("{algorithm}:{}", e.unwrap().file_name().into_string().unwrap()));
        }
    }
    out
}

/// `GET path` over HTTP/1.1: (status, body).
fn http_get(url: &str, path: &str) -> (u16, Vec<u8>) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP header");
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    assert!(!head.contains("transfer-encoding: chunked"), "GET {path}: chunked answer");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status");
    (status, raw[end + 4..].to_vec())
}

#[test]
fn a_publish_killed_at_any_moment_leaves_no_partial_version_and_no_lasting_orphan() {
    let seed = std::env::var("KILN_CRASH_SEED")
        .ok()
        .map(|s| s.parse::<u64>().expect("KILN_CRASH_SEED"))
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            t.as_nanos() as u64 ^ u64::from(std::process::id())
        });
    let iterations = std::env::var("KILN_CRASH_ITERATIONS")
        .map(|s| s.parse::<usize>().expect("KILN_CRASH_ITERATIONS"))
        .unwrap_or(DEFAULT_ITERATIONS);
    eprintln!("seed {seed} (KILN_CRASH_SEED={seed} replays this run), {iterations} kills");
    let mut rng = Rng(seed);
    let started = Instant::now();

    let work = common::work("catalog_crash", "run");
    fs_err::create_dir_all(&work).unwrap();
    let bundle = work.join("bundle");
    let pub_key = work.join("signer.pub");
    make_bundle(&bundle, &pub_key);
    let files = kiln_catalog::bundle::scan(&bundle).unwrap();
    let mut h =
        Harness { data: work.join("measure-local"), work, bundle, pub_key, files, epoch: 0, server: None };

    // How long a publish takes, each way (the median of three to fresh folders), to spread the kills over
    // it. Each of these publishes must complete and leave a complete version.
    let mut measure = |remote: bool| {
        let mut times = Vec::new();
        for n in 0..3 {
            h.data = h.work.join(format!("measure-{}-{n}", if remote { "remote" } else { "local" }));
            h.init(&h.data.clone());
            let t = Instant::now();
            assert!(h.publish(remote), "the first publish creates the version");
            times.push(t.elapsed());
            let what = format!("after a whole publish (over HTTP: {remote})");
            assert!(h.check(&what), "{what}: the version is not there");
            h.collect(&what);
            fs_err::remove_dir_all(&h.data).unwrap();
        }
        times.sort();
        times[1]
    };
    let (local, remote) = (measure(false), measure(true));
    eprintln!("a publish takes {local:?} to a folder, {remote:?} over HTTP");

    h.data = h.work.join("data-0");
    h.init(&h.data.clone());
    let (mut running, mut present_after) = (0, 0);
    // Kills that left upload files, staging folders, blobs of an absent version.
    let mut left = [0usize; 3];
    for i in 0..iterations {
        let kind = match i % 4 {
            2 => Kind::Client,
            3 => Kind::Server,
            _ => Kind::Local,
        };
        let whole = if kind == Kind::Local { local } else { remote };
        let delay = whole.mul_f64(1.1 * rng.fraction());
        let finished = h.kill_publish(kind, delay);
        running += usize::from(!finished);
        let what = format!("kill {i} ({kind:?} after {delay:?}, data folder {})", h.epoch);
        if kind == Kind::Server {
            // The killed server comes back on the same data folder.
            h.start_server();
        }
        let present = h.check(&what);
        if !present {
            let (uploads, staging, blobs) = h.leftovers();
            left[0] += usize::from(uploads > 0);
            left[1] += usize::from(staging > 0);
            left[2] += usize::from(blobs > 0);
        }
        if present {
            present_after += 1;
            h.next_epoch();
        }
    }
    eprintln!(
        "{running} of {iterations} kills hit a running publish; {present_after} left the version published; {} data folders; \
         with the version absent, {} left upload files, {} staging folders, {} unreferenced blobs",
        h.epoch + 1,
        left[0],
        left[1],
        left[2]
    );
    assert!(running * 3 >= iterations, "a third of the kills at least must land during a publish");

    // The last folder, after all its kills: a publish completes, gc leaves exactly what it refers to, and a
    // second publish changes nothing.
    drop(h.server.take());
    h.publish(false);
    assert!(h.check("after the final publish"));
    h.collect("after the final publish");
    let state = |h: &Harness| {
        let c = Catalog::open(&h.data).unwrap();
        let v = c.version(FAMILY, &VERSION.parse().unwrap()).unwrap();
        let audit = c.meta().audit(&AuditQuery { limit: 1000, ..Default::default() }).unwrap();
        (v, audit, stored_blobs(&h.data))
    };
    let before = state(&h);
    assert!(!h.publish(false), "publishing the same bundle again must be a no-op");
    assert_eq!(state(&h), before, "publishing the same bundle again changed the catalog");
    h.collect("after publishing again");
    fs_err::remove_dir_all(&h.work).unwrap();
    eprintln!("done in {:?}", started.elapsed());
}
