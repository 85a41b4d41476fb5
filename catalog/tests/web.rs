//! The catalog's web pages as a browser shows them: a catalog with real signed bundles published over the
//! API (a base family with a raw disk, a qcow2 and an OCI image; a derived family built FROM it), its pages
//! rendered by headless Chromium (`chromium --headless=new --dump-dom`, Debian package `chromium`), and the
//! DOM checked for the families, lifecycle states, contract badges, release notes, lineage and commands;
//! every link on the pages answers; unknown names, private reads and other methods get their HTML pages.
//! One page is also written as a screenshot under the target folder, to look at.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use kiln_blueprint::manifest::{Artifact, ArtifactKind, Manifest};
use kiln_catalog::http::ServeOptions;
use serde_json::json;
use support::{sha256, Bundle, BundleSpec, Bundles, Server};

/// Headless Chromium with a profile of its own (concurrent tests do not share one).
struct Browser {
    profile: tempfile::TempDir,
}

impl Browser {
    fn new() -> Self {
        Self { profile: tempfile::tempdir().unwrap() }
    }

    /// Run chromium with `args` and the URL; its stdout. Killed after two minutes.
    fn run(&self, args: &[&str], url: &str) -> String {
        let mut child = Command::new("chromium")
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(args)
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium runs (Debian package chromium, in scripts/lib.sh)");
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("chromium {args:?} {url}: no answer in two minutes");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "chromium {args:?} {url}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The DOM after rendering.
    fn dom(&self, url: &str) -> String {
        let dom = self.run(&["--dump-dom"], url);
        assert!(dom.contains("</html>"), "{url}: not a page:\n{dom}");
        dom
    }

    fn screenshot(&self, url: &str, file: &Path) {
        let _ = std::fs::remove_file(file);
        self.run(&[&format!("--screenshot={}", file.display()), "--window-size=1280,1600"], url);
        let png = fs_err::read(file).unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
            "{}: not a screenshot",
            file.display()
        );
    }
}

/// Add a qcow2 disk and an OCI image layout (one layer) to an unsigned fixture bundle, as a build of all
/// three outputs writes them, then sign it all (the image in its layout, then every file).
fn with_qcow2_and_image(bundles: &Bundles, b: Bundle) -> Bundle {
    let dir = &b.dir;
    let mut m = Manifest::read(dir).unwrap();
    let qcow2 = [b"QFI\xfb\0\0\0\x03".as_slice(), &b.read(support::DISK)[..4096]].concat();
    fs_err::write(dir.join("disk.qcow2"), &qcow2).unwrap();
    m.put(Artifact {
        kind: ArtifactKind::Qcow2,
        path: "disk.qcow2".into(),
        sha256: sha256(&qcow2),
        size: qcow2.len() as u64,
    })
    .unwrap();
    let blobs = dir.join("oci/blobs/sha256");
    fs_err::create_dir_all(&blobs).unwrap();
    let blob = |bytes: &[u8]| {
        let digest = sha256(bytes);
        fs_err::write(blobs.join(&digest["sha256:".len()..]), bytes).unwrap();
        json!({"digest": digest, "size": bytes.len()})
    };
    let layer = format!("layer of {} {}", m.name, m.version).into_bytes();
    let layer_d = blob(&layer);
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_d["digest"]]}, "config": {}}))
    .unwrap();
    let config_d = blob(&config);
    let desc =
        |mt: &str, d: &serde_json::Value| json!({"mediaType": mt, "digest": d["digest"], "size": d["size"]});
    let image = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &config_d),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar", &layer_d)],
    }))
    .unwrap();
    let image_d = blob(&image);
    let index = json!({"schemaVersion": 2,
        "manifests": [desc("application/vnd.oci.image.manifest.v1+json", &image_d)]});
    fs_err::write(dir.join("oci/index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs_err::write(dir.join("oci/oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    m.put(Artifact {
        kind: ArtifactKind::Oci,
        path: "oci".into(),
        sha256: sha256(&image),
        size: image.len() as u64,
    })
    .unwrap();
    m.write(dir).unwrap();
    kiln_sign::sign_dir(dir, &bundles.trusted, &kiln_sign::SignOptions::default()).unwrap();
    Bundle { dir: dir.clone(), manifest: m }
}

const OLD_PACKAGES: &[(&str, &str, &str)] = &[
    ("base-files", "12.4+deb12u5", "amd64"),
    ("libc6", "2.36-9+deb12u4", "amd64"),
    ("systemd", "252.22-1~deb12u1", "amd64"),
];
const NEW_PACKAGES: &[(&str, &str, &str)] = &[
    ("base-files", "12.4+deb12u5", "amd64"),
    ("libc6", "2.36-9+deb12u7", "amd64"),
    ("openssh-server", "1:9.2p1-2+deb12u3", "amd64"),
    ("systemd", "252.30-1~deb12u2", "amd64"),
];

/// debian-minimal 1.0.0 (revoked), 1.1.0 (stable: supported), 1.2.0 (candidate), each with a raw disk,
/// a qcow2 and an OCI image; web-role 1.0.0 FROM debian-minimal 1.1.0.
fn catalog() -> (Bundles, Server) {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let base = |version: &str, packages| {
        let spec = BundleSpec::new("debian-minimal", version)
            .certified(&["base-os@1.0.0", "ssh-server@1.1.0"])
            .packages(packages)
            .lifecycle(Some(12), Some(30));
        with_qcow2_and_image(&b, b.unsigned(&spec))
    };
    let v110 = base("1.1.0", NEW_PACKAGES);
    for bundle in [base("1.0.0", OLD_PACKAGES), v110.clone(), base("1.2.0", NEW_PACKAGES)] {
        s.publish(&bundle);
    }
    let image = v110.manifest.artifacts.iter().find(|a| a.kind == ArtifactKind::Oci).unwrap().sha256.clone();
    let web = BundleSpec::new("web-role", "1.0.0").certified(&["base-os@1.0.0", "web-server@1.0.0"]).parent(
        "debian-minimal",
        "1.1.0",
        &image,
    );
    s.publish(&b.good(&web));
    for (channel, version) in [("stable", "1.0.0"), ("stable", "1.1.0"), ("candidate", "1.2.0")] {
        let a = s.http.send(
            "PUT",
            &format!("/api/v1/families/debian-minimal/channels/{channel}"),
            Some(&s.admin_token),
            &json!({ "version": version }),
        );
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let a = s.http.send(
        "PATCH",
        "/api/v1/families/debian-minimal/versions/1.0.0/lifecycle",
        Some(&s.admin_token),
        &json!({"revoke": "CVE-2026-0001 in openssl"}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    (b, s)
}

/// The `href="/…"` links of a page.
fn links(dom: &str) -> Vec<String> {
    dom.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|h| h.starts_with('/'))
        .map(|h| h.replace("&amp;", "&"))
        .collect()
}

fn assert_has(dom: &str, what: &[&str], page: &str) {
    for w in what {
        assert!(dom.contains(w), "{page}: no {w:?} in the DOM:\n{dom}");
    }
}

/// Where screenshots go: under the build's target folder, out of the repository.
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-catalog-web");
    fs_err::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_browser_renders_the_families_versions_notes_and_commands() {
    let (_b, s) = catalog();
    let browser = Browser::new();
    let host = s.url.trim_start_matches("http://").to_owned();

    let index = browser.dom(&format!("{}/", s.url));
    assert_has(
        &index,
        &[
            r#"<a href="/families/debian-minimal"><strong>debian-minimal</strong></a>"#,
            r#"<a href="/families/web-role"><strong>web-role</strong></a>"#,
            // Newest version, its state, channels, what it is certified for.
            r#"<a href="/families/debian-minimal/1.2.0"><code>1.2.0</code></a>"#,
            r#"<span class="state state-candidate">candidate</span>"#,
            "stable → 1.1.0",
            "candidate → 1.2.0",
            r#"<span class="badge" title="certified">ssh-server@1.1.0</span>"#,
            r#"<span class="badge" title="certified">web-server@1.0.0</span>"#,
        ],
        "/",
    );

    let family = browser.dom(&format!("{}/families/debian-minimal", s.url));
    assert_has(
        &family,
        &[
            "<svg",
            r#"class="seg-supported"#,
            r#"class="mark-revoked"#,
            "CVE-2026-0001 in openssl",
            r#"<span class="state state-revoked">revoked</span>"#,
            r#"<span class="state state-supported">supported</span>"#,
            r#"<span class="state state-candidate">candidate</span>"#,
            r#"<span class="badge" title="certified">base-os@1.0.0</span>"#,
            "Channel history",
            "token:admin",
        ],
        "/families/debian-minimal",
    );
    // Versions newest first.
    let pos =
        |v: &str| family.find(&format!(r#"<tr id="v-{v}">"#)).unwrap_or_else(|| panic!("{v}: {family}"));
    assert!(pos("1.2.0") < pos("1.1.0") && pos("1.1.0") < pos("1.0.0"));
    // stable moved from 1.0.0 to 1.1.0.
    assert!(
        family.contains(
            r#"<td><a href="/families/debian-minimal/1.0.0"><code>1.0.0</code></a></td>
<td><a href="/families/debian-minimal/1.1.0"><code>1.1.0</code></a></td>"#
        ),
        "{family}"
    );

    let version = browser.dom(&format!("{}/families/debian-minimal/1.1.0", s.url));
    let record = s.catalog.version("debian-minimal", &"1.1.0".parse().unwrap()).unwrap();
    let image = record.image_digest.clone().unwrap();
    assert_has(
        &version,
        &[
            r#"<span class="state state-supported">supported</span>"#,
            r#"<span class="chan">stable</span>"#,
            r#"<span class="badge" title="certified">ssh-server@1.1.0</span>"#,
            &record.signed_by,
            // The stored release notes: the package changes against 1.0.0.
            "<h3>Packages</h3>",
            "openssh-server",
            "<code>252.22-1~deb12u1</code> → <code>252.30-1~deb12u2</code>",
            // Artifacts with digests, sizes and signatures.
            &record.artifacts.iter().find(|a| a.kind == ArtifactKind::Raw).unwrap().digest,
            "64.0 KiB",
            &format!(
                r#"href="/api/v1/families/debian-minimal/versions/1.1.0/files/signatures/oci/blobs/sha256/{}.sig""#,
                &image["sha256:".len()..]
            ),
            r#"href="/api/v1/families/debian-minimal/versions/1.1.0/files/signatures/disk.qcow2.sig""#,
            // Lineage.
            r#"<a href="/families/web-role/1.0.0"><code>web-role@1.0.0</code></a>"#,
            // Commands naming this catalog as the browser reached it.
            &format!("skopeo copy --src-tls-verify=false docker://{host}/debian-minimal:1.1.0 oci-archive:debian-minimal-1.1.0.tar"),
            &format!("podman pull --tls-verify=false {host}/debian-minimal:1.1.0"),
            &format!("file.driver=http,file.url=http://{host}/download/debian-minimal/1.1.0/disk.qcow2"),
            &format!("chain http://{host}/boot/debian-minimal/1.1.0.ipxe"),
            &format!("kiln verify debian-minimal@1.1.0 --catalog http://{host} --key release.pub"),
        ],
        "/families/debian-minimal/1.1.0",
    );

    let web = browser.dom(&format!("{}/families/web-role/1.0.0", s.url));
    assert_has(
        &web,
        &[
            r#"<a href="/families/debian-minimal/1.1.0"><code>debian-minimal@1.1.0</code></a>"#,
            "catalog:debian-minimal@1.1.0",
        ],
        "/families/web-role/1.0.0",
    );
    // web-role has no OCI image and no qcow2: no registry commands, QEMU on the raw disk.
    assert!(!web.contains("skopeo") && web.contains("format=raw,snapshot=on"), "{web}");

    // Every link on the pages answers, and the signature link serves the signature file.
    let mut all: Vec<String> = [&index, &family, &version, &web].iter().flat_map(|d| links(d)).collect();
    all.sort();
    all.dedup();
    assert!(all.len() > 20, "{all:?}");
    for link in &all {
        let a = s.http.get(link, None);
        assert_eq!(a.status, 200, "{link}: {}", a.text());
    }
    let sig =
        s.http.get("/api/v1/families/debian-minimal/versions/1.1.0/files/signatures/disk.qcow2.sig", None);
    let sig_file = record.file("signatures/disk.qcow2.sig").unwrap();
    assert_eq!(sha256(&sig.body), sig_file.digest);

    // The commands' URLs are the catalog's: the disk QEMU streams, the image podman pulls.
    let qcow2 = record.artifacts.iter().find(|a| a.kind == ArtifactKind::Qcow2).unwrap();
    let a = s.http.get("/download/debian-minimal/1.1.0/disk.qcow2", None);
    assert_eq!((a.status, sha256(&a.body)), (200, qcow2.digest.clone()), "{}", a.text());
    let a = s.http.request("HEAD", "/v2/debian-minimal/manifests/1.1.0", None, None);
    assert_eq!((a.status, a.header("docker-content-digest")), (200, Some(image.as_str())));
    // A revoked version's page says its downloads are refused, and they are.
    let revoked = browser.dom(&format!("{}/families/debian-minimal/1.0.0", s.url));
    assert_has(
        &revoked,
        &["debian-minimal 1.0.0 is revoked: the catalog refuses"],
        "/families/debian-minimal/1.0.0",
    );
    assert_eq!(s.http.get("/download/debian-minimal/1.0.0/disk.qcow2", None).status, 410);

    let shot = screenshot_dir().join("version.png");
    browser.screenshot(&format!("{}/families/debian-minimal/1.1.0", s.url), &shot);
    browser.screenshot(&format!("{}/families/debian-minimal", s.url), &screenshot_dir().join("family.png"));
    eprintln!("screenshots: {}", screenshot_dir().display());
}

#[test]
fn unknown_names_other_methods_and_the_api_beside_the_pages() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    s.publish(&b.good(&BundleSpec::new("web", "1.0.0")));
    for (path, says) in [
        ("/families/nope", "there is no family named `nope`"),
        ("/families/Bad_Name", "there is no family named `Bad_Name`"),
        ("/families/web/9.9.9", "web has no version 9.9.9"),
        ("/families/web/1.0.0/more", "there is no page /families/web/1.0.0/more"),
    ] {
        let a = s.http.get(path, None);
        assert_eq!((a.status, a.content_type()), (404, "text/html; charset=utf-8"), "{path}");
        assert!(a.text().contains(says) && a.text().contains("404 · Not found"), "{path}: {}", a.text());
    }
    let a = s.http.request("POST", "/families/web", None, None);
    assert_eq!((a.status, a.header("allow")), (405, Some("GET, HEAD")));
    let a = s.http.get("/families/web?tab=versions", None);
    assert_eq!(a.status, 400);
    assert!(a.text().contains("tab: the pages take no query parameters"), "{}", a.text());
    // HEAD answers like GET, without the page.
    let a = s.http.request("HEAD", "/families/web/1.0.0", None, None);
    assert_eq!((a.status, a.content_type()), (200, "text/html; charset=utf-8"));
    // No script can run on a page.
    let a = s.http.get("/", None);
    assert!(a.header("content-security-policy").unwrap().starts_with("default-src 'none'"));
    assert!(!a.text().contains("<script"));
    // The JSON API is untouched beside the pages.
    s.http.get("/api/v1/families/nope", None).problem(404);
    assert_eq!(s.http.get("/api/v1/families", None).json()["families"][0]["name"], "web");
}

#[test]
fn pages_of_a_private_catalog_need_a_token_that_may_read() {
    let b = Bundles::new();
    let s = Server::start(&[b.trusted_public()], ServeOptions { public_reads: false, ..Default::default() });
    s.publish(&b.good(&BundleSpec::new("web", "1.0.0")));
    for path in ["/", "/families/web", "/families/web/1.0.0", "/families/nope"] {
        let a = s.http.get(path, None);
        assert_eq!((a.status, a.content_type()), (401, "text/html; charset=utf-8"), "{path}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"kiln catalog\""));
        assert!(!a.text().contains("1.0.0"), "{path}: a private catalog shows nothing: {}", a.text());
        assert_eq!(s.http.get(path, Some("kiln_not_a_token")).status, 401, "{path}");
    }
    let publisher = s.token("ci", &["publish"]);
    assert_eq!(s.http.get("/families/web", Some(&publisher)).status, 403);
    let reader = s.token("viewer", &["read"]);
    let a = s.http.get("/families/web/1.0.0", Some(&reader));
    assert_eq!(a.status, 200, "{}", a.text());
    // The commands carry the token their reads need.
    assert!(a.text().contains("--token &quot;$KILN_TOKEN&quot;"), "{}", a.text());
    assert_eq!(s.http.get("/families/nope", Some(&reader)).status, 404);
}
