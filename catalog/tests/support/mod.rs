//! Fixtures of the catalog's integration tests, with no image build: real bundles (a build output as
//! `kiln test` and `kiln sign` leave it: `manifest.json`, a raw disk, an SPDX SBOM, a certification report,
//! signatures from `kiln_sign`) made in a temporary folder, each of the ways a bundle can be wrong, and the
//! HTTP API served on `127.0.0.1:0` over a temporary catalog, with the helpers to talk to it.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use kiln_blueprint::{
    manifest::{Artifact, ArtifactKind, Manifest, Parent, MANIFEST_FILE},
    model::LifecyclePolicy,
};
use kiln_catalog::{
    client::Client,
    http::{router, ServeOptions},
    model::{FileRecord, Timestamp},
    Catalog,
};
use kiln_sign::{PublicKey, SigningKey};
use serde_json::{json, Value};

/// The disk artifact of every fixture bundle.
pub const DISK: &str = "disk.raw";
pub const SBOM: &str = "sbom.spdx.json";
pub const CERTIFICATION: &str = "report/certification.json";
/// The default boot entry of a bootable fixture disk.
pub const BOOT_ENTRY: &str = "fixture-6.1.0-2.conf";

/// A Debian package of an image: (name, version, architecture).
pub type Package = (String, String, String);

/// Packages from `(name, version, arch)` literals.
pub fn packages(list: &[(&str, &str, &str)]) -> Vec<Package> {
    list.iter().map(|(n, v, a)| (n.to_string(), v.to_string(), a.to_string())).collect()
}

/// What a fixture bundle is: the image's name and version, what it claims and what its certification says,
/// its parent, the packages its SBOM lists, and its disk (size and content).
#[derive(Debug, Clone)]
pub struct BundleSpec {
    pub name: String,
    pub version: String,
    /// Contract requests the manifest claims (`base-os@^1`).
    pub claimed: Vec<String>,
    /// Contracts the certification report certifies (`base-os@1.0.0`); empty when it did not pass.
    pub certified: Vec<String>,
    pub passed: bool,
    pub parent: Option<Parent>,
    pub packages: Vec<Package>,
    /// Bytes of `disk.raw`.
    pub disk_size: usize,
    /// Mixed into the disk's bytes: two bundles of the same name and version with different salts are two
    /// different images.
    pub salt: String,
    /// The blueprint's lifecycle policy, as the build records it in the manifest.
    pub lifecycle: Option<LifecyclePolicy>,
    /// The disk is a GPT disk whose ESP has a default boot entry (see [`BundleSpec::bootable`]).
    pub bootable: bool,
}

impl BundleSpec {
    /// A passing bundle certified for `base-os@1.0.0`, with a few packages and a 64 KiB disk.
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            claimed: vec!["base-os@^1".into()],
            certified: vec!["base-os@1.0.0".into()],
            passed: true,
            parent: None,
            packages: packages(&[
                ("base-files", "12.4+deb12u5", "amd64"),
                ("libc6", "2.36-9+deb12u4", "amd64"),
                ("systemd", "252.22-1~deb12u1", "amd64"),
            ]),
            disk_size: 64 << 10,
            salt: String::new(),
            lifecycle: None,
            bootable: false,
        }
    }

    /// Certified for these contracts (`name@version`); the claims become `name@^MAJOR`.
    pub fn certified(mut self, contracts: &[&str]) -> Self {
        self.certified = contracts.iter().map(|c| c.to_string()).collect();
        self.claimed = contracts
            .iter()
            .map(|c| {
                let (name, version) = c.split_once('@').expect("name@version");
                format!("{name}@^{}", version.split('.').next().unwrap_or("0"))
            })
            .collect();
        self
    }

    /// A certification that failed: one check failed, nothing certified.
    pub fn failing(mut self) -> Self {
        self.passed = false;
        self.certified.clear();
        self
    }

    /// Built FROM `name@version` (whose image manifest digest is `digest`).
    pub fn parent(mut self, name: &str, version: &str, digest: &str) -> Self {
        self.parent = Some(Parent {
            reference: format!("catalog:{name}@{version}"),
            name: name.into(),
            version: version.into(),
            digest: digest.into(),
        });
        self
    }

    pub fn packages(mut self, list: &[(&str, &str, &str)]) -> Self {
        self.packages = packages(list);
        self
    }

    pub fn disk_size(mut self, bytes: usize) -> Self {
        self.disk_size = bytes;
        self
    }

    pub fn salt(mut self, salt: &str) -> Self {
        self.salt = salt.into();
        self
    }

    /// The lifecycle policy: end of life `support_months` after publication, deprecated
    /// `deprecate_after_days` after a successor becomes stable.
    pub fn lifecycle(mut self, support_months: Option<u32>, deprecate_after_days: Option<u32>) -> Self {
        self.lifecycle = Some(LifecyclePolicy { support_months, deprecate_after_days });
        self
    }

    /// A bootable disk: a GPT with a FAT32 ESP holding systemd-boot's `loader/loader.conf`, the Boot Loader
    /// Specification entry [`BOOT_ENTRY`] (kernel [`BundleSpec::kernel_bytes`], initrd
    /// [`BundleSpec::initrd_bytes`], options [`BundleSpec::boot_options`]) and an older entry that is not
    /// the default; 36 MiB, mostly holes.
    pub fn bootable(mut self) -> Self {
        self.bootable = true;
        self
    }

    /// The fixture kernel's bytes (depend on the name, version and salt).
    pub fn kernel_bytes(&self) -> Vec<u8> {
        format!("fixture kernel {} {} {}\n", self.name, self.version, self.salt).repeat(3000).into_bytes()
    }

    pub fn initrd_bytes(&self) -> Vec<u8> {
        format!("fixture initrd {} {} {}\n", self.name, self.version, self.salt).repeat(5000).into_bytes()
    }

    /// The default entry's kernel command line.
    pub fn boot_options(&self) -> String {
        format!("root=PARTLABEL=root console=ttyS0 rw kiln.fixture={}", self.name)
    }

    /// The raw disk of [`BundleSpec::bootable`].
    fn bootable_disk(&self) -> Vec<u8> {
        use kiln_disk::{DiskLayout, DiskSpec, EspFile, EspOptions, ImageIdentity, MIB};
        let spec = DiskSpec { size: Some(36 * MIB), esp_size: 33 * MIB, extra: Vec::new() };
        let identity = ImageIdentity::new(&self.name, &self.version, &self.salt);
        let layout = DiskLayout::plan(&spec, 0, &identity).unwrap();
        let file = |path: &str, data: Vec<u8>| EspFile { path: path.into(), data };
        let files = [
            file("loader/loader.conf", b"timeout 0\ndefault fixture-*\n".to_vec()),
            file(
                &format!("loader/entries/{BOOT_ENTRY}"),
                format!(
                    "title fixture\nlinux /vmlinuz-6.1.0-2\ninitrd /initrd.img-6.1.0-2\noptions {}\n",
                    self.boot_options()
                )
                .into_bytes(),
            ),
            file(
                "loader/entries/fixture-6.1.0-1.conf",
                b"title old\nlinux /vmlinuz-6.1.0-1\noptions old\n".to_vec(),
            ),
            file("vmlinuz-6.1.0-2", self.kernel_bytes()),
            file("initrd.img-6.1.0-2", self.initrd_bytes()),
            file("vmlinuz-6.1.0-1", b"old kernel".to_vec()),
        ];
        let opts = EspOptions { label: "ESP".into(), volume_id: identity.u32("esp"), epoch: 0 };
        let mut out = std::io::Cursor::new(Vec::new());
        kiln_disk::write_raw_disk(&mut out, &layout, &files, &opts, &mut std::io::empty()).unwrap();
        let mut bytes = out.into_inner();
        bytes.resize(layout.size as usize, 0);
        bytes
    }

    /// The disk's bytes: a header naming the image, then a pattern that depends on the salt (or, when
    /// [`BundleSpec::bootable`], a bootable disk).
    pub fn disk_bytes(&self) -> Vec<u8> {
        if self.bootable {
            return self.bootable_disk();
        }
        let mut out =
            format!("kiln fixture disk {} {} {}\n", self.name, self.version, self.salt).into_bytes();
        let seed = self.salt.bytes().fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
        let mut i = 0usize;
        while out.len() < self.disk_size {
            out.push((i as u8).wrapping_mul(13).wrapping_add(seed));
            i += 1;
        }
        out.truncate(self.disk_size);
        out
    }

    /// The SBOM, shaped as `kiln_sign::sbom` writes it: the image package (OPERATING_SYSTEM), the parent
    /// image when there is one, and one package per Debian package with its `pkg:deb` purl.
    pub fn sbom(&self) -> Vec<u8> {
        let mut list = vec![json!({
            "SPDXID": kiln_sign::sbom::IMAGE_ID, "name": self.name, "versionInfo": self.version,
            "downloadLocation": "NOASSERTION", "filesAnalyzed": false, "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION", "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "OPERATING_SYSTEM",
        })];
        let mut relationships = vec![json!({"spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES", "relatedSpdxElement": kiln_sign::sbom::IMAGE_ID})];
        if let Some(p) = &self.parent {
            list.push(json!({
                "SPDXID": kiln_sign::sbom::PARENT_ID, "name": p.name, "versionInfo": p.version,
                "downloadLocation": "NOASSERTION", "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": p.digest.trim_start_matches("sha256:")}],
                "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION", "primaryPackagePurpose": "CONTAINER",
            }));
            relationships.push(json!({"spdxElementId": kiln_sign::sbom::IMAGE_ID,
                "relationshipType": "DESCENDANT_OF", "relatedSpdxElement": kiln_sign::sbom::PARENT_ID}));
        }
        for (name, version, arch) in &self.packages {
            let id = kiln_sign::sbom::package_id(name, arch);
            list.push(json!({
                "SPDXID": id, "name": name, "versionInfo": version,
                "downloadLocation": "NOASSERTION", "filesAnalyzed": false,
                "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                    "referenceLocator": kiln_sign::sbom::purl(name, version, arch, None)}],
            }));
            relationships.push(json!({"spdxElementId": kiln_sign::sbom::IMAGE_ID,
                "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        }
        let doc = json!({
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": format!("{}-{}", self.name, self.version),
            "documentNamespace": format!("https://kiln.invalid/spdx/{}/{}", self.name, self.version),
            "creationInfo": {"created": "2026-01-01T00:00:00Z", "creators": ["Tool: kiln"]},
            "packages": list,
            "relationships": relationships,
        });
        pretty(&doc)
    }

    /// `report/certification.json` (schema `kiln.certification/v1`, as the certifier writes it) over the
    /// manifest's artifacts at test time.
    pub fn certification(&self, tested: &[Artifact]) -> Vec<u8> {
        let check = |outcome: &str| {
            let mut c = json!({
                "declared_by": "base-os@1.0.0", "description": "/etc/shadow is not world-readable",
                "severity": "major", "artifact": DISK, "id": "shadow-mode", "kind": "file-mode",
                "outcome": outcome, "duration_secs": 0.0,
            });
            if outcome == "fail" {
                c["expected"] = "mode 0640".into();
                c["found"] = "mode 0644".into();
            }
            c
        };
        let outcome = if self.passed { "pass" } else { "fail" };
        let contracts: Vec<Value> = self
            .claimed
            .iter()
            .enumerate()
            .map(|(i, requested)| {
                let contract = self.certified.get(i).cloned().unwrap_or_else(|| requested.clone());
                json!({"requested": requested, "contract": contract, "includes": [contract],
                    "passed": self.passed, "checks": [check(outcome)]})
            })
            .collect();
        let n = contracts.len();
        let doc = json!({
            "schema": "kiln.certification/v1",
            "image": {"name": self.name, "version": self.version},
            "artifacts": tested,
            "contracts": contracts,
            "artifact_checks": [],
            "summary": {"pass": if self.passed { n } else { 0 }, "fail": if self.passed { 0 } else { n },
                "skip": 0, "error": 0},
            "passed": self.passed,
            "certified": if self.passed { self.certified.clone() } else { Vec::new() },
        });
        pretty(&doc)
    }

    /// Write the bundle (not signed yet) into `dir`, which must not exist or be empty.
    pub fn write(&self, dir: &Path) -> Bundle {
        fs_err::create_dir_all(dir.join("report")).unwrap();
        let digest = |tag: &str| {
            use sha2::Digest as _;
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(format!("{tag} {}", self.name))))
        };
        let mut m = Manifest::new(&self.name, &self.version, &digest("blueprint"), &digest("plan"));
        m.contracts = self.claimed.clone();
        m.parent = self.parent.clone();
        m.lifecycle = self.lifecycle.clone();
        let add = |m: &mut Manifest, kind: ArtifactKind, rel: &str, bytes: &[u8]| {
            let path = dir.join(rel);
            fs_err::write(&path, bytes).unwrap();
            let (sha256, size) = kiln_blueprint::manifest::sha256_file(&path).unwrap();
            m.put(Artifact { kind, path: rel.into(), sha256, size }).unwrap();
        };
        add(&mut m, ArtifactKind::Raw, DISK, &self.disk_bytes());
        add(&mut m, ArtifactKind::Sbom, SBOM, &self.sbom());
        let tested = m.artifacts.clone();
        add(&mut m, ArtifactKind::Report, CERTIFICATION, &self.certification(&tested));
        m.write(dir).unwrap();
        Bundle { dir: dir.to_owned(), manifest: m }
    }

    /// Write the bundle into `dir` and sign it with `key`.
    pub fn signed(&self, dir: &Path, key: &SigningKey) -> Bundle {
        let b = self.write(dir);
        b.sign(key);
        b
    }
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap();
    out.push(b'\n');
    out
}

/// A bundle in a folder.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Bundle {
    /// Sign every file the manifest lists, then the manifest (`kiln sign` without OCI images).
    pub fn sign(&self, key: &SigningKey) {
        kiln_sign::sign_files(&self.dir, key).unwrap();
    }

    /// Change the disk after signing: the bytes no longer match the signed manifest.
    pub fn change_artifact(&self) {
        let path = self.dir.join(DISK);
        let mut bytes = fs_err::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs_err::write(&path, bytes).unwrap();
    }

    /// Every file of the bundle as a publish names it.
    pub fn files(&self) -> Vec<FileRecord> {
        kiln_catalog::bundle::scan(&self.dir).unwrap()
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        fs_err::read(self.dir.join(rel)).unwrap()
    }

    /// `sha256:…` of `manifest.json`: the version's identity in the catalog.
    pub fn manifest_digest(&self) -> String {
        kiln_blueprint::manifest::sha256_file(&self.dir.join(MANIFEST_FILE)).unwrap().0
    }
}

/// Fixture bundles under one temporary folder, signed by the catalog's trusted key unless asked otherwise.
#[derive(Debug)]
pub struct Bundles {
    pub root: tempfile::TempDir,
    pub trusted: SigningKey,
    /// A key the catalog does not trust.
    pub other: SigningKey,
    count: std::cell::Cell<usize>,
}

impl Default for Bundles {
    fn default() -> Self {
        Self::new()
    }
}

impl Bundles {
    pub fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
            trusted: SigningKey::generate(),
            other: SigningKey::generate(),
            count: std::cell::Cell::new(0),
        }
    }

    fn fresh_dir(&self, spec: &BundleSpec) -> PathBuf {
        let n = self.count.get();
        self.count.set(n + 1);
        self.root.path().join(format!("{n}-{}-{}", spec.name, spec.version))
    }

    /// Signed by the trusted key.
    pub fn good(&self, spec: &BundleSpec) -> Bundle {
        spec.signed(&self.fresh_dir(spec), &self.trusted)
    }

    /// Not signed at all.
    pub fn unsigned(&self, spec: &BundleSpec) -> Bundle {
        spec.write(&self.fresh_dir(spec))
    }

    /// Signed by a key the catalog does not trust.
    pub fn untrusted(&self, spec: &BundleSpec) -> Bundle {
        spec.signed(&self.fresh_dir(spec), &self.other)
    }

    /// Signed by the trusted key, then its disk changed.
    pub fn changed_after_signing(&self, spec: &BundleSpec) -> Bundle {
        let b = self.good(spec);
        b.change_artifact();
        b
    }

    pub fn trusted_public(&self) -> PublicKey {
        self.trusted.public_key()
    }
}

/// The API served over a temporary catalog; stopped when dropped.
#[derive(Debug)]
pub struct Server {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The first admin token (what `DATA/admin-token` holds).
    pub admin_token: String,
    /// The catalog's data folder.
    pub data: PathBuf,
    /// The catalog the server runs on (for what the API cannot reach).
    pub catalog: Arc<Catalog>,
    pub http: Http,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Serve a new catalog trusting `trusted`, with `opts`.
    pub fn start(trusted: &[PublicKey], opts: ServeOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("catalog");
        let mut catalog = Catalog::open(&data).unwrap();
        for k in trusted {
            catalog.trust(k.clone()).unwrap();
        }
        let token_file = catalog.ensure_admin_token(Timestamp::now()).unwrap().expect("a new catalog");
        let admin_token = fs_err::read_to_string(token_file).unwrap().trim().to_owned();
        Self::serve(catalog, admin_token, opts, dir)
    }

    /// Serve `catalog` (opened over any stores; `dir` holds its data folder and goes with the server).
    pub fn serve(catalog: Catalog, admin_token: String, opts: ServeOptions, dir: tempfile::TempDir) -> Self {
        let data = catalog.root().to_owned();
        let catalog = Arc::new(catalog);

        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = Arc::clone(&catalog);
        std::thread::Builder::new()
            .name("catalog-api".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    ready_tx.send(listener.local_addr().unwrap()).unwrap();
                    axum::serve(listener, router(served, opts))
                        .with_graceful_shutdown(async {
                            let _ = stop_rx.await;
                        })
                        .await
                        .unwrap();
                });
            })
            .unwrap();
        let addr = ready_rx.recv_timeout(Duration::from_secs(30)).expect("the API starts");
        let url = format!("http://{addr}");
        Self { http: Http::new(&url), url, admin_token, data, catalog, stop: Some(stop_tx), _dir: dir }
    }

    /// Public reads, trusting `bundles`' trusted key.
    pub fn for_bundles(bundles: &Bundles) -> Self {
        Self::start(&[bundles.trusted_public()], ServeOptions::default())
    }

    /// A client of the API with `token`.
    pub fn client(&self, token: Option<&str>) -> Client {
        Client::open(&self.url, token.map(str::to_owned)).unwrap()
    }

    /// A client with the admin token.
    pub fn admin(&self) -> Client {
        self.client(Some(&self.admin_token))
    }

    /// A new token with `scopes`, made by the admin over the API.
    pub fn token(&self, name: &str, scopes: &[&str]) -> String {
        let a = self.http.send(
            "POST",
            "/api/v1/tokens",
            Some(&self.admin_token),
            &json!({"name": name, "scopes": scopes}),
        );
        assert_eq!(a.status, 201, "{}", a.text());
        a.json()["token"].as_str().unwrap().to_owned()
    }

    /// Publish `bundle` with the admin token; the outcome's JSON.
    pub fn publish(&self, bundle: &Bundle) -> kiln_catalog::PublishOutcome {
        self.admin().publish(&bundle.dir, Vec::new(), &kiln_catalog::client::NoProgress).unwrap_or_else(|e| {
            panic!("publishing {}: {}", bundle.dir.display(), kiln_catalog::client::describe(&e))
        })
    }

    /// Upload every file of `bundle` with `PUT /api/v1/blobs/DIGEST`, each answering 201.
    pub fn upload(&self, bundle: &Bundle, token: &str) {
        for f in bundle.files() {
            let a = self.http.put_bytes(
                &format!("/api/v1/blobs/{}", f.digest),
                Some(token),
                bundle.read(&f.path),
            );
            assert_eq!(a.status, 201, "{}: {}", f.path, a.text());
        }
    }

    /// `POST /api/v1/publish` of `bundle`'s files (uploaded or not).
    pub fn post_publish(&self, bundle: &Bundle, token: &str) -> Answer {
        self.http.send("POST", "/api/v1/publish", Some(token), &json!({ "files": bundle.files() }))
    }

    /// Upload and publish over raw HTTP with the admin token.
    pub fn publish_raw(&self, bundle: &Bundle) -> Answer {
        self.upload(bundle, &self.admin_token);
        self.post_publish(bundle, &self.admin_token)
    }

    /// The audit log, oldest first.
    pub fn audit(&self) -> Vec<Value> {
        let a = self.http.get("/api/v1/audit?limit=1000", Some(&self.admin_token));
        assert_eq!(a.status, 200, "{}", a.text());
        let mut entries = a.json()["entries"].as_array().unwrap().clone();
        entries.reverse();
        entries
    }

    /// Every file under the data folder, relative, with its bytes.
    pub fn data_files(&self) -> Vec<(String, Vec<u8>)> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            for e in fs_err::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    out.push((rel, std::fs::read(&p).unwrap_or_default()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data, &self.data, &mut out);
        out.sort();
        out
    }

    /// Digests of the blobs stored.
    pub fn blobs(&self) -> Vec<String> {
        self.data_files()
            .into_iter()
            .filter_map(|(p, _)| p.strip_prefix("blobs/sha256/").map(|h| format!("sha256:{h}")))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// Read the answer to a `method` request (a HEAD's body is not read).
    pub fn read(method: &str, resp: ureq::http::Response<ureq::Body>) -> Self {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            resp.into_body().with_config().limit(1 << 30).read_to_vec().unwrap()
        };
        Self { status, headers, body }
    }

    /// The OCI distribution spec's error body with this status: its first error's code.
    pub fn registry_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        let e = &v["errors"][0];
        assert!(e["message"].is_string(), "{v}");
        e["code"].as_str().unwrap_or_else(|| panic!("no code: {v}")).to_owned()
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    /// A problem document with this status: its JSON.
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.content_type(), "application/problem+json", "{}", self.text());
        let p = self.json();
        assert_eq!(p["status"], status, "{p}");
        assert!(p["title"].is_string() && p["detail"].is_string(), "{p}");
        p
    }
}

/// Raw HTTP to the API (no client logic in between).
#[derive(Debug)]
pub struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    pub fn new(base: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .timeout_global(Some(Duration::from_secs(120)))
            .build();
        Self { base: base.trim_end_matches('/').to_owned(), agent: ureq::Agent::new_with_config(config) }
    }

    /// `method path` (with its query) with an optional token and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        let mut req = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let result = match body {
            Some((content_type, bytes)) => {
                let req = req.header("Content-Type", content_type).body(bytes).unwrap();
                self.agent.run(req)
            }
            // A request without a body that could have one says so (`Content-Length: 0`): sent as an empty
            // chunked body instead, a server that answers without reading it closes the connection, and the
            // next request on it fails.
            None if !matches!(method, "GET" | "HEAD" | "DELETE") => {
                self.agent.run(req.body(Vec::new()).unwrap())
            }
            None => self.agent.run(req.body(()).unwrap()),
        };
        Answer::read(method, result.unwrap_or_else(|e| panic!("{method} {path}: {e}")))
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.request("GET", path, token, None)
    }

    /// A JSON body.
    pub fn send(&self, method: &str, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.request(method, path, token, Some(("application/json", serde_json::to_vec(body).unwrap())))
    }

    /// Raw bytes.
    pub fn put_bytes(&self, path: &str, token: Option<&str>, bytes: Vec<u8>) -> Answer {
        self.request("PUT", path, token, Some(("application/octet-stream", bytes)))
    }
}

/// `sha256:…` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
