//! The catalog's registry with real registry clients against `kiln catalog serve`: skopeo pushes an OCI
//! layout (made with umoci) with `--dest-creds` and copies it back out to an `oci:` layout with the same
//! digests (checked with `skopeo inspect` and `umoci unpack`); podman pulls it with the token flow; and a
//! kiln family published with `kiln publish` is pulled by podman and skopeo as `FAMILY:VERSION` and as
//! `FAMILY:stable`, the image kiln signed. Needs skopeo, umoci and podman (scripts/lib.sh installs them).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use kiln_blueprint::manifest::{sha256_file, Artifact, ArtifactKind, Manifest};
use serde_json::{json, Value};

mod common;
use common::{kiln_ok, s, serve, succeeded, work};

const PASSWORD: &str = "registry-clients-test";

/// Run `program args`, which must succeed; its output.
fn run(program: &str, args: &[&str]) -> Output {
    let o = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("{program} could not run ({e}): scripts/lib.sh installs skopeo, umoci and podman")
    });
    succeeded(program, args, o)
}

fn kiln(args: &[&str]) -> Output {
    kiln_ok(PASSWORD, args)
}

/// The digest and size of the manifest tagged `tag` in the OCI layout at `layout`.
fn layout_manifest(layout: &Path, tag: &str) -> (String, u64) {
    let index: Value = serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("{tag} not in {index}"));
    (entry["digest"].as_str().unwrap().to_owned(), entry["size"].as_u64().unwrap())
}

/// A one-layer image at `layout:tag` holding `/hello.txt` with `text`.
fn umoci_image(w: &Path, layout: &Path, tag: &str, text: &str) {
    let file = w.join(format!("hello-{tag}.txt"));
    fs_err::write(&file, text).unwrap();
    if !layout.join("index.json").exists() {
        run("umoci", &["init", "--layout", s(layout)]);
    }
    let image = format!("{}:{tag}", s(layout));
    run("umoci", &["new", "--image", &image]);
    run("umoci", &["insert", "--image", &image, s(&file), "/hello.txt"]);
}

/// podman's storage for this test: a short path (podman refuses a run root over 50 characters), removed
/// when dropped.
struct PodmanStore(PathBuf);

impl PodmanStore {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("kiln-podman-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// `podman ARGS` with this storage (vfs, no daemon, no systemd).
    fn run(&self, args: &[&str]) -> Output {
        let (root, runroot) = (self.0.join("root"), self.0.join("run"));
        let mut all = vec![
            "--storage-driver",
            "vfs",
            "--root",
            s(&root),
            "--runroot",
            s(&runroot),
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ];
        all.extend_from_slice(args);
        run("podman", &all)
    }

    fn digest(&self, reference: &str) -> String {
        let o = self.run(&["image", "inspect", "--format", "{{.Digest}}", reference]);
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for PodmanStore {
    fn drop(&mut self) {
        // vfs layers may hold read-only folders: podman removes its own images first.
        let _ = Command::new("podman")
            .args([
                "--storage-driver",
                "vfs",
                "--root",
                s(&self.0.join("root")),
                "--runroot",
                s(&self.0.join("run")),
            ])
            .args(["system", "reset", "--force"])
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A kiln bundle whose one image is the umoci layout `oci/` (tag = version), certified and signed, ready
/// to publish: manifest.json, an SPDX SBOM, a passing certification report.
fn bundle(w: &Path, name: &str, version: &str, key: &Path) -> (PathBuf, String) {
    let dir = w.join(format!("bundle-{name}-{version}"));
    fs_err::create_dir_all(dir.join("report")).unwrap();
    umoci_image(w, &dir.join("oci"), version, &format!("{name} {version}\n"));
    let (digest, size) = layout_manifest(&dir.join("oci"), version);
    let mut m = Manifest::new(
        name,
        version,
        &format!("sha256:{}", "1".repeat(64)),
        &format!("sha256:{}", "2".repeat(64)),
    );
    m.contracts = vec!["base-os@^1".into()];
    m.put(Artifact { kind: ArtifactKind::Oci, path: "oci".into(), sha256: digest.clone(), size }).unwrap();
    let sbom = json!({
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{name}-{version}"), "documentNamespace": format!("https://kiln.invalid/spdx/{name}/{version}"),
        "creationInfo": {"created": "2026-01-01T00:00:00Z", "creators": ["Tool: kiln"]},
        "packages": [], "relationships": [],
    });
    let add = |m: &mut Manifest, kind: ArtifactKind, rel: &str, bytes: &[u8]| {
        fs_err::write(dir.join(rel), bytes).unwrap();
        let (sha256, size) = sha256_file(&dir.join(rel)).unwrap();
        m.put(Artifact { kind, path: rel.into(), sha256, size }).unwrap();
    };
    add(&mut m, ArtifactKind::Sbom, "sbom.spdx.json", &serde_json::to_vec_pretty(&sbom).unwrap());
    let report = json!({
        "schema": "kiln.certification/v1",
        "image": {"name": name, "version": version},
        "artifacts": [], "contracts": [], "artifact_checks": [],
        "summary": {"pass": 1, "fail": 0, "skip": 0, "error": 0},
        "passed": true,
        "certified": ["base-os@1.0.0"],
    });
    add(
        &mut m,
        ArtifactKind::Report,
        "report/certification.json",
        &serde_json::to_vec_pretty(&report).unwrap(),
    );
    m.write(&dir).unwrap();
    kiln(&["-q", "sign", s(&dir), "--key", s(key)]);
    (dir, digest)
}

#[test]
fn registry_clients_push_and_pull_through_the_catalog() {
    let w = work("registry_clients", "push-pull");
    fs_err::create_dir_all(&w).unwrap();
    kiln(&["keygen", "--out", s(&w.join("release"))]);
    let catalog = serve(&w.join("catalog"), &w.join("release.pub"));
    let creds = format!("anyone:{}", catalog.token);

    // skopeo pushes a layout umoci made, with the catalog token as the password.
    let layout = w.join("layout");
    umoci_image(&w, &layout, "v1", "hello from the registry test\n");
    let (digest, _) = layout_manifest(&layout, "v1");
    let remote = format!("docker://{}/team/app:v1", catalog.host);
    run(
        "skopeo",
        &[
            "copy",
            "--dest-creds",
            &creds,
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", s(&layout)),
            &remote,
        ],
    );
    // Pushing without credentials is refused.
    let o = Command::new("skopeo")
        .args([
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", s(&layout)),
            &format!("docker://{}/team/other:v1", catalog.host),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success(), "an anonymous push went through");

    // What skopeo reads back is the same image, byte for byte.
    let inspected: Value =
        serde_json::from_slice(&run("skopeo", &["inspect", "--tls-verify=false", &remote]).stdout).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());
    let raw = run("skopeo", &["inspect", "--raw", "--tls-verify=false", &remote]).stdout;
    assert_eq!(raw, fs_err::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap());
    let back = w.join("back");
    run("skopeo", &["copy", "--src-tls-verify=false", &remote, &format!("oci:{}:v1", s(&back))]);
    assert_eq!(layout_manifest(&back, "v1").0, digest);
    let unpacked = w.join("unpacked");
    run("umoci", &["unpack", "--image", &format!("{}:v1", s(&back)), s(&unpacked)]);
    assert_eq!(
        fs_err::read_to_string(unpacked.join("rootfs/hello.txt")).unwrap(),
        "hello from the registry test\n"
    );

    // podman pulls it (the ping's challenge, then the token endpoint, anonymously: reads are public).
    let podman = PodmanStore::new();
    let pulled = format!("{}/team/app:v1", catalog.host);
    podman.run(&["pull", "-q", "--tls-verify=false", &pulled]);
    assert_eq!(podman.digest(&pulled), digest);

    // A published kiln family: by version and by channel, the image kiln signed.
    let (dir, image) = bundle(&w, "registry-web", "1.0.0", &w.join("release.key"));
    kiln(&["-q", "publish", s(&dir), "--catalog", &catalog.url, "--token", &catalog.token]);
    kiln(&[
        "-q",
        "promote",
        "registry-web",
        "1.0.0",
        "--channel",
        "stable",
        "--catalog",
        &catalog.url,
        "--token",
        &catalog.token,
    ]);
    for tag in ["1.0.0", "stable"] {
        let reference = format!("{}/registry-web:{tag}", catalog.host);
        podman.run(&["pull", "-q", "--tls-verify=false", &reference]);
        assert_eq!(podman.digest(&reference), image, "{tag}");
        let inspected: Value = serde_json::from_slice(
            &run("skopeo", &["inspect", "--tls-verify=false", &format!("docker://{reference}")]).stdout,
        )
        .unwrap();
        assert_eq!(inspected["Digest"], image.as_str(), "{tag}");
    }
    // The cosign signature kiln sign wrote is there under cosign's tag.
    let tags: Value = serde_json::from_slice(
        &run(
            "skopeo",
            &["list-tags", "--tls-verify=false", &format!("docker://{}/registry-web", catalog.host)],
        )
        .stdout,
    )
    .unwrap();
    let sig = format!("sha256-{}.sig", &image[7..]);
    assert_eq!(tags["Tags"], json!(["1.0.0", sig, "stable"]));
}
