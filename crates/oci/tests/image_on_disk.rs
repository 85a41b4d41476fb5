//! Layers and layouts written from a real tree on disk: the listing snapshot, determinism, unpacking and
//! derived images (runs as root: owners, devices and `security.*` xattrs).

mod common;

use std::path::Path;

use common::{build_tree, long_path, CAP_NET_RAW, EPOCH};
use kiln_oci::{
    compress::{compress_stream, CompressOptions, Compression},
    layer::{listing, write_tar, DirSource, LayerPlan},
    scan::{scan_tree, ScanOptions},
    unpack::UnpackOptions,
    write_derived_image, write_image, EntryKind, ImageSpec, Layout, Parent, RuntimeConfig, TreeIndex,
    TreePath,
};

fn spec(tag: &str) -> ImageSpec {
    let mut s = ImageSpec::new(tag, EPOCH);
    s.version = Some(tag.to_string());
    s.config = RuntimeConfig {
        env: vec!["PATH=/usr/bin".into()],
        cmd: Some(vec!["/bin/sh".into()]),
        ..RuntimeConfig::default()
    };
    s
}

fn opts(c: Compression, threads: usize) -> CompressOptions {
    CompressOptions { compression: c, level: None, threads }
}

fn hashed_scan(root: &Path) -> TreeIndex {
    scan_tree(root, &ScanOptions { hash_contents: true, ..ScanOptions::default() }).unwrap().index
}

/// The index with what an image keeps: mtimes clamped, no inode numbers.
fn as_stored(mut idx: TreeIndex, epoch: u64) -> TreeIndex {
    for e in idx.entries.values_mut() {
        e.mtime = kiln_oci::layer::clamp_mtime(e.mtime, epoch) as i64;
        e.inode = None;
    }
    idx
}

fn tar_of(root: &Path) -> Vec<u8> {
    let scan = scan_tree(root, &ScanOptions::default()).unwrap();
    write_tar(&LayerPlan::full(&scan.index, EPOCH), &DirSource::new(root), Vec::new()).unwrap()
}

#[test]
fn listing_of_a_small_tree() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let list = listing(&tar_of(dir.path())[..]).unwrap();
    insta::assert_snapshot!(list.replace(&long_path(), "<200-byte path>"));
    assert!(list.contains(&long_path()));
    // GNU tar reads the same names, modes, owners and links.
    let mut tar = std::process::Command::new("tar")
        .args(["--numeric-owner", "-tvf", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut tar.stdin.take().unwrap(), &tar_of(dir.path())).unwrap();
    let out = tar.wait_with_output().unwrap();
    assert!(out.status.success());
    let gnu = String::from_utf8(out.stdout).unwrap();
    assert!(gnu.contains("-rwsr-xr-x 0/0"), "{gnu}");
    assert!(gnu.contains("usr/bin/python3.11 link to usr/bin/python3"), "{gnu}");
    assert!(gnu.contains("etc/os-release -> ../usr/lib/os-release"), "{gnu}");
    assert!(gnu.contains(&long_path()), "{gnu}");
}

#[test]
fn same_tree_gives_same_digests() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let tree = dir.path();
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let out = tempfile::tempdir().unwrap();
        let a = write_image(tree, &out.path().join("a"), &spec("1"), &opts(c, 1), "kiln").unwrap();
        let b = write_image(tree, &out.path().join("b"), &spec("1"), &opts(c, 3), "kiln").unwrap();
        assert_eq!(a.layer, b.layer, "{c:?}");
        assert_eq!(a.manifest_digest(), b.manifest_digest(), "{c:?}");
        let index_a = std::fs::read(out.path().join("a/index.json")).unwrap();
        let index_b = std::fs::read(out.path().join("b/index.json")).unwrap();
        assert_eq!(index_a, index_b);
    }
    // The tar stream does not depend on the compression: one diff_id for all.
    let raw = tar_of(tree);
    let (_, _, d) = compress_stream(Vec::new(), &opts(Compression::Zstd, 2), |w| w.write_all(&raw)).unwrap();
    assert_eq!(d.diff_id, kiln_oci::Sha256::of(&raw));
}

#[test]
fn streamed_layer_equals_planned_layer() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    // Siblings that sort between a directory and its contents: `a`, `a-b`, `a.d`, `a/c`.
    std::fs::create_dir_all(dir.path().join("opt/a/c")).unwrap();
    std::fs::write(dir.path().join("opt/a-b"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("opt/a.d")).unwrap();
    for c in [Compression::None, Compression::Gzip] {
        let (streamed, layer) =
            kiln_oci::tree_layer::write_tree_layer(dir.path(), EPOCH, &opts(c, 2), Vec::new()).unwrap();
        let scan = scan_tree(dir.path(), &ScanOptions::default()).unwrap();
        let plan = LayerPlan::full(&scan.index, EPOCH);
        let (planned, (), d) = compress_stream(Vec::new(), &opts(c, 2), |w| {
            write_tar(&plan, &DirSource::new(dir.path()), w).map(|_| ())
        })
        .unwrap();
        assert!(streamed == planned, "{c:?}");
        if c == Compression::None {
            let list = listing(&streamed[..]).unwrap();
            let opt: Vec<&str> =
                list.lines().filter_map(|l| l.split(' ').nth(5)).filter(|p| p.starts_with("opt/")).collect();
            assert_eq!(opt, ["opt/", "opt/a/", "opt/a-b", "opt/a.d/", "opt/a/c/"]);
        }
        assert_eq!(layer.digests, d);
        assert_eq!(layer.entries, plan.entries.len());
    }
}

#[test]
fn layout_is_complete_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("img");
    let w = write_image(dir.path(), &target, &spec("2.0"), &opts(Compression::Zstd, 0), "kiln").unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let mut blobs: Vec<String> = std::fs::read_dir(target.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    blobs.sort();
    let mut expected =
        vec![w.layer.digest.hex(), w.documents.config.digest.hex(), w.documents.manifest.digest.hex()];
    expected.sort();
    assert_eq!(blobs, expected, "no stray temporary files");
    // No temporary directory is left next to the layout.
    let leftovers: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["img"]);

    let layout = Layout::open(&target).unwrap();
    assert_eq!(layout.tags(), ["2.0"]);
    let image = layout.find("2.0").unwrap();
    assert_eq!(image.layers().len(), 1);
    assert_eq!(image.diff_ids(), [w.layer.diff_id.to_string()]);
    assert!(matches!(layout.find("nope"), Err(kiln_oci::Error::TagNotFound { .. })));

    // Rewriting replaces the layout in place.
    let again = write_image(dir.path(), &target, &spec("2.1"), &opts(Compression::Gzip, 0), "kiln").unwrap();
    assert_eq!(Layout::open(&target).unwrap().tags(), ["2.1"]);
    assert_ne!(again.layer.digest, w.layer.digest);
}

#[test]
fn corrupt_blob_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("img");
    let w = write_image(dir.path(), &target, &spec("1"), &opts(Compression::Gzip, 0), "kiln").unwrap();
    let blob = target.join("blobs/sha256").join(w.layer.digest.hex());
    let mut bytes = std::fs::read(&blob).unwrap();
    // Change the OS byte of the gzip header: the stream still inflates, only the digest tells.
    bytes[9] = 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let parent = Parent::open(&target, "1", "test").unwrap();
    let err = parent.index().unwrap_err();
    assert!(matches!(err, kiln_oci::Error::DigestMismatch { .. }), "{err}");
}

#[test]
fn unpack_restores_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("img");
    write_image(dir.path(), &target, &spec("1"), &opts(Compression::Zstd, 0), "kiln").unwrap();
    let parent = Parent::open(&target, "1", "oci-layout:img:1").unwrap();
    let dest = out.path().join("rootfs");
    let index = parent.unpack(&dest, &UnpackOptions::default()).unwrap();
    let original = as_stored(hashed_scan(dir.path()), EPOCH);
    let unpacked = as_stored(hashed_scan(&dest), EPOCH);
    assert_eq!(unpacked, original);
    // The index built while unpacking matches the disk, and so does the one built from the layers alone.
    assert_eq!(as_stored(index, EPOCH), original);
    assert_eq!(as_stored(parent.index().unwrap(), EPOCH), original);
    // Hard links are links again, capabilities are back.
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(dest.join("usr/bin/python3")).unwrap();
    let b = std::fs::metadata(dest.join("usr/bin/python3.11")).unwrap();
    assert_eq!(a.ino(), b.ino());
    let ping = &unpacked.entries[&TreePath::new("usr/bin/ping").unwrap()];
    assert_eq!(ping.xattrs.get("security.capability"), Some(&CAP_NET_RAW.to_vec()));
    let null = &unpacked.entries[&TreePath::new("dev/null").unwrap()];
    assert_eq!(null.kind, EntryKind::CharDevice { major: 1, minor: 3 });
}

/// Unpacks `tag` of the layout at `path` into `dest` and returns the listing of its newest layer.
fn top_layer_listing(path: &Path, tag: &str) -> String {
    let layout = Layout::open(path).unwrap();
    let image = layout.find(tag).unwrap();
    let top = image.layers().last().unwrap();
    listing(layout.open_layer(top).unwrap()).unwrap()
}

#[test]
fn derived_image_has_one_new_layer_with_whiteouts() {
    let base_tree = tempfile::tempdir().unwrap();
    build_tree(base_tree.path());
    let out = tempfile::tempdir().unwrap();
    let base_path = out.path().join("base");
    let base =
        write_image(base_tree.path(), &base_path, &spec("1"), &opts(Compression::Gzip, 0), "base").unwrap();

    // kiln's FROM: unpack the parent, change the tree, write the difference.
    let parent = Parent::open(&base_path, "1", "oci-layout:base:1").unwrap();
    let child = out.path().join("child-tree");
    let parent_index = parent.unpack(&child, &UnpackOptions::default()).unwrap();
    std::fs::remove_file(child.join("etc/shadow")).unwrap();
    std::fs::write(child.join("etc/hostname"), b"derived\n").unwrap();
    std::fs::write(child.join("etc/motd"), b"hello\n").unwrap();
    for f in ["pkgcache.bin", "srcpkgcache.bin"] {
        std::fs::remove_file(child.join("var/cache/apt").join(f)).unwrap();
    }
    std::fs::write(child.join("var/cache/apt/fresh.bin"), b"new").unwrap();
    common::touch_all(&child, 1_650_000_000);

    let mut s = spec("2");
    s.epoch = EPOCH + 100;
    let derived_path = out.path().join("derived");
    let derived = write_derived_image(
        &child,
        &derived_path,
        &s,
        &opts(Compression::Zstd, 0),
        "steps",
        &parent,
        &parent_index,
    )
    .unwrap();

    let layout = Layout::open(&derived_path).unwrap();
    let image = layout.find("2").unwrap();
    let base_image = Layout::open(&base_path).unwrap().find("1").unwrap();
    assert_eq!(image.layers().len(), 2);
    assert_eq!(image.layers()[0], base_image.layers()[0], "parent layer kept as is");
    assert_eq!(image.diff_ids()[0], base.layer.diff_id.to_string());
    let ann = image.manifest.annotations().clone().unwrap();
    assert_eq!(ann["org.opencontainers.image.base.name"], "oci-layout:base:1");
    assert_eq!(ann["org.opencontainers.image.base.digest"], base.manifest_digest().to_string());
    assert_eq!(image.config.history().as_ref().unwrap().len(), 2);

    let list = top_layer_listing(&derived_path, "2");
    assert_eq!(
        list,
        format!(
            "d 0755 0:0 0 1650000000 etc/\n\
             w 0000 0:0 0 {e} etc/.wh.shadow\n\
             - 0644 0:0 8 1650000000 etc/hostname\n\
             - 0644 0:0 6 1650000000 etc/motd\n\
             d 0755 0:0 0 1650000000 var/\n\
             d 0755 0:0 0 1650000000 var/cache/\n\
             d 0755 0:0 0 1650000000 var/cache/apt/\n\
             w 0000 0:0 0 {e} var/cache/apt/.wh..wh..opq\n\
             - 0644 0:0 3 1650000000 var/cache/apt/fresh.bin\n",
            e = EPOCH + 100
        )
    );
    assert_eq!(derived.entries, 9);

    // Unpacking the derived image gives the child tree.
    let dest = out.path().join("unpacked");
    Parent::open(&derived_path, "2", "x").unwrap().unpack(&dest, &UnpackOptions::default()).unwrap();
    assert!(!dest.join("etc/shadow").exists());
    assert!(!dest.join("var/cache/apt/pkgcache.bin").exists());
    let mut want = as_stored(hashed_scan(&child), EPOCH + 100);
    let mut got = as_stored(hashed_scan(&dest), EPOCH + 100);
    // Directory mtimes of unchanged parents come from the lower layer; compare the rest.
    for idx in [&mut want, &mut got] {
        for e in idx.entries.values_mut() {
            e.mtime = 0;
        }
    }
    assert_eq!(got, want);
}

#[test]
fn unchanged_child_gives_an_empty_layer() {
    let base_tree = tempfile::tempdir().unwrap();
    build_tree(base_tree.path());
    let out = tempfile::tempdir().unwrap();
    let base_path = out.path().join("base");
    write_image(base_tree.path(), &base_path, &spec("1"), &opts(Compression::Zstd, 0), "base").unwrap();
    let parent = Parent::open(&base_path, "1", "b").unwrap();
    let parent_index = parent.index().unwrap();
    let derived = write_derived_image(
        base_tree.path(),
        &out.path().join("d"),
        &spec("2"),
        &opts(Compression::Zstd, 0),
        "nothing",
        &parent,
        &parent_index,
    )
    .unwrap();
    assert_eq!(derived.entries, 0);
    assert_eq!(derived.layer.uncompressed_size, 1024, "just the end-of-archive blocks");
}

#[test]
fn sockets_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let _l = std::os::unix::net::UnixListener::bind(dir.path().join("run/sock")).unwrap();
    let scan = scan_tree(dir.path(), &ScanOptions::default()).unwrap();
    assert_eq!(scan.skipped_sockets, [TreePath::new("run/sock").unwrap()]);
    assert_eq!(scan.index.len(), 1);
}
