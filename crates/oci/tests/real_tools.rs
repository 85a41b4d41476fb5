//! Images written by kiln-oci are accepted by real OCI tools: `skopeo inspect`, `skopeo copy` and
//! `umoci unpack` (install with `apt-get install -y skopeo umoci`).
//!
//! umoci 0.4 cannot read zstd layers ("blob is not correct mediatype"), so zstd images are unpacked by
//! umoci only after skopeo has converted them to gzip, which makes skopeo decompress every zstd layer.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{build_tree, long_path, EPOCH};
use kiln_oci::{
    unpack::UnpackOptions, write_derived_image, write_image, CompressOptions, Compression, ImageSpec, Parent,
    RuntimeConfig, WrittenImage,
};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (install the tools: apt-get install -y skopeo umoci)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn spec(tag: &str) -> ImageSpec {
    let mut s = ImageSpec::new(tag, EPOCH);
    s.version = Some(tag.into());
    s.source = Some("https://example.invalid/kiln".into());
    s.config = RuntimeConfig {
        env: vec!["PATH=/usr/bin:/bin".into()],
        entrypoint: Some(vec!["/usr/bin/env".into()]),
        cmd: Some(vec!["sh".into()]),
        labels: [("org.example.role".to_string(), "test".to_string())].into(),
        user: Some("0:0".into()),
        workdir: Some("/".into()),
        exposed_ports: vec!["8080/tcp".into()],
    };
    s
}

fn write(tree: &Path, out: &Path, c: Compression) -> WrittenImage {
    let opts = CompressOptions::new(c);
    write_image(tree, out, &spec("1.0"), &opts, "kiln rootfs").unwrap()
}

fn skopeo_inspect(layout: &Path, tag: &str) -> serde_json::Value {
    let out = run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:{tag}", layout.display())));
    serde_json::from_str(&out).unwrap()
}

fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle));
    bundle.join("rootfs")
}

fn check_skopeo(layout: &Path, w: &WrittenImage, work: &Path) {
    let info = skopeo_inspect(layout, "1.0");
    assert_eq!(info["Digest"], w.manifest_digest().to_string());
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Layers"][0], w.layer.digest.to_string());
    assert_eq!(info["Labels"]["org.example.role"], "test");
    assert_eq!(info["Created"], "2023-11-14T22:13:20Z");

    let copy = work.join("copy");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:1.0", layout.display()))
        .arg(format!("oci:{}:1.0", copy.display())));
    let copied = skopeo_inspect(&copy, "1.0");
    assert_eq!(copied["Layers"], info["Layers"], "skopeo kept the layer blob as is");
}

fn check_rootfs(rootfs: &Path) {
    assert_eq!(std::fs::read(rootfs.join("etc/hostname")).unwrap(), b"kiln\n");
    assert_eq!(std::fs::read(rootfs.join(long_path())).unwrap(), b"long");
    assert_eq!(
        std::fs::read_link(rootfs.join("etc/os-release")).unwrap(),
        Path::new("../usr/lib/os-release")
    );
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(rootfs.join("usr/bin/python3")).unwrap();
    let b = std::fs::metadata(rootfs.join("usr/bin/python3.11")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link unpacked as a link");
    assert_eq!(std::fs::metadata(rootfs.join("usr/bin/su")).unwrap().mode() & 0o7777, 0o4755);
    assert!(rootfs.join("var/cache/apt/pkgcache.bin").is_file());
}

#[test]
fn gzip_image_is_accepted_by_skopeo_and_umoci() {
    let tree = tempfile::tempdir().unwrap();
    build_tree(tree.path());
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    let w = write(tree.path(), &layout, Compression::Gzip);
    check_skopeo(&layout, &w, work.path());
    check_rootfs(&umoci_unpack(&layout, "1.0", &work.path().join("bundle")));
}

/// `skopeo copy` to a gzip image: skopeo reads (decompresses) every layer of `layout`.
fn skopeo_to_gzip(layout: &Path, tag: &str, dest: &Path) {
    run(Command::new("skopeo")
        .args(["copy", "--dest-compress-format", "gzip"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("oci:{}:{tag}", dest.display())));
}

#[test]
fn zstd_image_is_accepted_by_skopeo() {
    let tree = tempfile::tempdir().unwrap();
    build_tree(tree.path());
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    let w = write(tree.path(), &layout, Compression::Zstd);
    check_skopeo(&layout, &w, work.path());
    let gz = work.path().join("as-gzip");
    skopeo_to_gzip(&layout, "1.0", &gz);
    let converted = skopeo_inspect(&gz, "1.0");
    assert_ne!(converted["Layers"][0], w.layer.digest.to_string());
    check_rootfs(&umoci_unpack(&gz, "1.0", &work.path().join("bundle")));
}

#[test]
fn derived_image_whiteouts_are_honoured_by_umoci() {
    let tree = tempfile::tempdir().unwrap();
    build_tree(tree.path());
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    write(tree.path(), &base, Compression::Gzip);

    let parent = Parent::open(&base, "1.0", "oci-layout:base:1.0").unwrap();
    let child = work.path().join("child");
    let parent_index = parent.unpack(&child, &UnpackOptions::default()).unwrap();
    std::fs::remove_file(child.join("etc/shadow")).unwrap();
    std::fs::remove_dir_all(child.join("home/user")).unwrap();
    std::fs::remove_file(child.join("var/cache/apt/pkgcache.bin")).unwrap();
    std::fs::remove_file(child.join("var/cache/apt/srcpkgcache.bin")).unwrap();
    std::fs::write(child.join("var/cache/apt/fresh.bin"), b"fresh").unwrap();
    std::fs::write(child.join("etc/hostname"), b"derived\n").unwrap();

    for c in [Compression::Gzip, Compression::Zstd] {
        let derived = work.path().join(format!("derived-{c:?}"));
        let w = write_derived_image(
            &child,
            &derived,
            &spec("2.0"),
            &CompressOptions::new(c),
            "kiln steps",
            &parent,
            &parent_index,
        )
        .unwrap();
        let info = skopeo_inspect(&derived, "2.0");
        assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
        assert_eq!(info["Layers"][1], w.layer.digest.to_string());

        let readable = if c == Compression::Zstd {
            let gz = work.path().join(format!("derived-{c:?}-as-gzip"));
            skopeo_to_gzip(&derived, "2.0", &gz);
            gz
        } else {
            derived
        };
        let rootfs = umoci_unpack(&readable, "2.0", &work.path().join(format!("bundle-{c:?}")));
        assert!(!rootfs.join("etc/shadow").exists(), "whiteout removed etc/shadow");
        assert!(!rootfs.join("home/user").exists(), "whiteout removed a directory");
        assert!(rootfs.join("home").is_dir());
        let mut cache: Vec<_> = std::fs::read_dir(rootfs.join("var/cache/apt"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        cache.sort();
        assert_eq!(cache, ["fresh.bin"], "opaque directory hid the parent's files");
        assert_eq!(std::fs::read(rootfs.join("etc/hostname")).unwrap(), b"derived\n");
        assert!(rootfs.join("etc/os-release").is_symlink(), "parent layer still applies");
    }
}
