//! The artifact readers against kiln's own writers: a small tree with every kind of entry (modes with
//! set-uid/set-gid/sticky bits, several owners, symlinks relative, absolute and climbing out, a hard link,
//! an empty directory, devices, a fifo, odd bytes) is written as a raw GPT disk (ext4 root by `mke2fs -d`),
//! a qcow2 and OCI layouts (gzip and zstd, and a derived image with whiteouts and an opaque directory), then
//! read back through `RootFs` and compared, entry by entry and byte by byte, with the tree itself.
//! Corrupt or absent artifacts give typed errors naming them. Runs as root (owners, device nodes); needs
//! e2fsprogs (mke2fs, debugfs) and qemu-utils.

use std::{
    fs,
    os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use kiln_disk::{
    build_raw_image, write_qcow2_file, DiskImageRequest, DiskSpec, ImageIdentity, PartitionRole,
    Qcow2Options, MIB,
};
use kiln_oci::{
    layer::listing, unpack::UnpackOptions, write_derived_image, write_image, CompressOptions, Compression,
    ImageSpec, Layout, Parent, RuntimeConfig,
};
use kiln_testsuites::image::{
    compare_qcow2_with_raw, layers::LayerError, DiskImage, DiskMatch, Entry, EntryKind, ImageError, OciImage,
    RootFs,
};

/// `SOURCE_DATE_EPOCH` of the images.
const EPOCH: u64 = 1_700_000_000;
/// Modification time of every entry of the source trees (before the epoch, so kept as is).
const MTIME: i64 = 1_600_000_000;

fn run(program: &str, args: &[&str]) {
    let out =
        Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn put(root: &Path, rel: &str, data: &[u8], mode: u32, owner: (u32, u32)) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    // Owner first: chown clears the set-uid and set-gid bits.
    lchown(&p, Some(owner.0), Some(owner.1)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn dir(root: &Path, rel: &str, mode: u32, owner: (u32, u32)) {
    let p = root.join(rel);
    fs::create_dir_all(&p).unwrap();
    lchown(&p, Some(owner.0), Some(owner.1)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn link(root: &Path, rel: &str, target: &str, owner: (u32, u32)) {
    let p = root.join(rel);
    symlink(target, &p).unwrap();
    lchown(&p, Some(owner.0), Some(owner.1)).unwrap();
}

/// Sets the modification time of every entry under `root`, symlinks included, without opening anything.
fn touch_all(root: &Path) {
    let mut paths = vec![root.to_path_buf()];
    let mut i = 0;
    while i < paths.len() {
        if fs::symlink_metadata(&paths[i]).unwrap().is_dir() {
            for e in fs::read_dir(&paths[i]).unwrap() {
                paths.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    for chunk in paths.chunks(200) {
        let mut args: Vec<String> = vec!["-h".into(), "-d".into(), format!("@{MTIME}")];
        args.extend(chunk.iter().map(|p| p.to_str().unwrap().to_owned()));
        run("touch", &args.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// Bytes of every value, then incompressible noise; longer than three 4 KiB blocks.
fn odd_bytes() -> Vec<u8> {
    let mut data: Vec<u8> = (0..=255u8).collect();
    let mut x = 0x2545_f491u32;
    data.extend((0..3 * 4096 + 17).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    data
}

/// The source tree at `root` (created here).
fn source_tree(root: &Path) {
    dir(root, "", 0o755, (0, 0));
    for d in ["etc", "usr/bin", "usr/lib/systemd/boot/efi", "usr/share/zoneinfo", "boot", "dev", "run"] {
        dir(root, d, 0o755, (0, 0));
    }
    dir(root, "home/user", 0o750, (1000, 1000));
    dir(root, "var/lib/app", 0o750, (0, 42));
    dir(root, "srv/empty", 0o700, (0, 0));
    dir(root, "tmp", 0o1777, (0, 0));

    // What the disk writer's ESP takes from the tree.
    put(root, "boot/vmlinuz-6.1.0-1-amd64", b"kernel", 0o644, (0, 0));
    put(root, "boot/initrd.img-6.1.0-1-amd64", b"initrd", 0o644, (0, 0));
    put(root, "usr/lib/systemd/boot/efi/systemd-bootx64.efi", b"MZ boot", 0o644, (0, 0));

    put(
        root,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        0o644,
        (0, 0),
    );
    put(root, "etc/group", b"root:x:0:\nstaff:x:42:\n", 0o644, (0, 0));
    put(root, "etc/empty", b"", 0o644, (0, 0));
    put(root, "etc/odd name \u{2713}.txt", b"a name with a space and a check mark\n", 0o644, (0, 0));
    put(root, "usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755, (0, 0));
    put(root, "usr/bin/su", b"\x7fELF set-uid", 0o4755, (0, 0));
    put(root, "usr/bin/wall", b"\x7fELF set-gid", 0o2755, (0, 5));
    put(root, "usr/lib/libx.so.1", b"\x7fELF library", 0o644, (0, 0));
    put(root, "usr/share/zoneinfo/UTC", b"TZif2\0\0\0UTC", 0o644, (0, 0));
    put(root, "home/user/notes.txt", b"private\n", 0o600, (1000, 1000));
    put(root, "var/lib/app/data.bin", &odd_bytes(), 0o640, (0, 42));
    put(root, "var/lib/app/state", b"1\n", 0o640, (0, 42));

    link(root, "lib", "usr/lib", (0, 0));
    link(root, "usr/lib/libx.so", "libx.so.1", (0, 0));
    link(root, "etc/localtime", "/usr/share/zoneinfo/UTC", (0, 0));
    // Climbs far above the tree: on the host this is the host's /etc/passwd, in the image the image's.
    link(root, "usr/share/escape", "../../../../../../../../etc/passwd", (0, 0));
    link(root, "home/user/notes", "notes.txt", (1000, 1000));
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-alias")).unwrap();
    run("mknod", &["-m", "0666", root.join("dev/null").to_str().unwrap(), "c", "1", "3"]);
    run("mknod", &["-m", "0660", root.join("dev/loop0").to_str().unwrap(), "b", "7", "0"]);
    run("mkfifo", &["-m", "0600", root.join("run/initctl").to_str().unwrap()]);
    touch_all(root);
}

/// The entries of the tree at `root` as an image of it must show them (device numbers split the way glibc
/// does), sorted by path.
fn expected_entries(root: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let m = fs::symlink_metadata(&abs).unwrap();
        let ft = m.file_type();
        let rdev = m.rdev();
        let major = (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as u32;
        let minor = ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32;
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            for e in fs::read_dir(&abs).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else if ft.is_symlink() {
            EntryKind::Symlink { target: fs::read_link(&abs).unwrap().to_str().unwrap().to_owned() }
        } else if ft.is_char_device() {
            EntryKind::CharDevice { major, minor }
        } else if ft.is_block_device() {
            EntryKind::BlockDevice { major, minor }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            EntryKind::Socket
        };
        let size = match &kind {
            EntryKind::File => m.len(),
            EntryKind::Symlink { target } => target.len() as u64,
            _ => 0,
        };
        out.push(Entry {
            path: format!("/{}", rel.to_str().unwrap()),
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size,
            mtime: m.mtime().min(EPOCH as i64),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Every entry of `image` is the tree's, and every regular file holds the tree's bytes. Entries at `extra`
/// are the image's own; the root directory has the time `root_mtime`, as neither format takes the tree root's
/// (mke2fs makes the root at its creation time, kiln's layers have no `./` member).
fn assert_same_as_tree(image: &dyn RootFs, tree: &Path, extra: &[&str], root_mtime: i64) {
    let mut want = expected_entries(tree);
    assert_eq!(want[0].path, "/");
    want[0].mtime = root_mtime;
    let mut got = image.entries().unwrap();
    got.retain(|e| !extra.contains(&e.path.as_str()));
    assert_eq!(
        got.len(),
        want.len(),
        "entry count: got {:#?}",
        got.iter().map(|e| &e.path).collect::<Vec<_>>()
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
        assert_eq!(image.metadata(&w.path).unwrap().as_ref(), Some(w), "metadata of {}", w.path);
        if w.is_file() {
            let bytes = fs::read(tree.join(&w.path[1..])).unwrap();
            assert_eq!(image.read(&w.path).unwrap(), bytes, "content of {}", w.path);
        }
    }
    // Every directory lists its own children, through a symlink too.
    for d in want.iter().filter(|e| e.is_dir()) {
        let listed: Vec<Entry> = image.read_dir(&d.path).unwrap();
        let children: Vec<&Entry> = want
            .iter()
            .filter(|e| {
                e.path != "/"
                    && e.path.rsplit_once('/').map(|(p, _)| if p.is_empty() { "/" } else { p })
                        == Some(&d.path)
            })
            .collect();
        assert_eq!(listed.iter().filter(|e| !extra.contains(&e.path.as_str())).collect::<Vec<_>>(), children);
    }
    assert_links_stay_inside(image);
}

/// Symlinks are followed inside the image, never to the host.
fn assert_links_stay_inside(image: &dyn RootFs) {
    let lib = image.read("/usr/lib/libx.so.1").unwrap();
    assert_eq!(image.read("/lib/libx.so").unwrap(), lib, "through /lib -> usr/lib and libx.so -> libx.so.1");
    assert_eq!(image.canonicalize("/lib/libx.so").unwrap().as_deref(), Some("/usr/lib/libx.so.1"));
    assert_eq!(
        image.read("/etc/localtime").unwrap(),
        b"TZif2\0\0\0UTC",
        "absolute target from the image root"
    );
    assert_eq!(image.read("/usr/share/escape").unwrap(), image.read("/etc/passwd").unwrap());
    let via_link = image.read_dir("/lib").unwrap();
    assert!(via_link.iter().any(|e| e.path == "/usr/lib/libx.so.1"), "{via_link:?}");
    let lstat = image.metadata("/lib").unwrap().unwrap();
    assert_eq!(lstat.symlink_target(), Some("usr/lib"));
    assert_eq!(image.metadata("/lib/libx.so").unwrap().unwrap().path, "/usr/lib/libx.so");
    assert_eq!(image.metadata("/lib/nothing").unwrap(), None);
    let err = image.read("/srv/empty").unwrap_err();
    assert!(matches!(err, ImageError::WrongKind { kind: "directory", .. }), "{err}");
    let err = image.read("/dev/null").unwrap_err();
    assert!(matches!(err, ImageError::WrongKind { kind: "character device", .. }), "{err}");
}

fn identity() -> ImageIdentity {
    ImageIdentity::new("reader-test", "1.0.0", "sha256:0000")
}

/// Writes `tree` as a raw disk in `dir` the way a build does.
fn raw_disk(tree: &Path, dir: &Path) -> (PathBuf, kiln_disk::BuiltDisk) {
    let work = dir.join("work");
    fs::create_dir_all(&work).unwrap();
    let req = DiskImageRequest {
        tree: tree.to_path_buf(),
        work_dir: work,
        spec: DiskSpec { size: Some(80 * MIB), esp_size: 33 * MIB, extra: vec![] },
        identity: identity(),
        epoch: EPOCH,
        entry_id: "reader".into(),
        title: "reader".into(),
        cmdline: vec![],
    };
    let raw = dir.join("disk.raw");
    let built = build_raw_image(&req, &raw).unwrap();
    (raw, built)
}

fn qcow2_of(raw: &Path, out: &Path) {
    let mut src = fs::File::open(raw).unwrap();
    write_qcow2_file(&mut src, fs::File::create(out).unwrap(), &Qcow2Options::default()).unwrap();
}

fn tree_in(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    source_tree(&tree);
    tree
}

#[test]
fn raw_disk_root_reads_back_the_source_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tree_in(tmp.path());
    let (raw, built) = raw_disk(&tree, tmp.path());

    let disk = DiskImage::open(&raw).unwrap();
    assert_eq!(disk.partition().guid, built.layout.root().guid.hyphenated().to_string());
    assert_eq!(disk.partition().start, built.layout.root().start);
    assert_eq!(
        PartitionRole::Root.type_guid().hyphenated().to_string(),
        kiln_testsuites::image::disk::ROOT_X86_64_TYPE,
        "the type the reader looks for is the one the writer gives the root"
    );
    assert_eq!(disk.fs_label(), kiln_disk::image::ROOT_FS_LABEL);
    assert_eq!(disk.fs_uuid(), identity().uuid("fs:root").hyphenated().to_string());

    // mke2fs adds lost+found: in the image, not in the tree.
    let lost = disk.metadata("/lost+found").unwrap().unwrap();
    assert_eq!((lost.kind, lost.mode, lost.uid), (EntryKind::Dir, 0o700, 0));
    assert_same_as_tree(&disk, &tree, &["/lost+found"], EPOCH as i64);
}

#[test]
fn qcow2_is_compared_with_the_raw_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tree_in(tmp.path());
    let (raw, built) = raw_disk(&tree, tmp.path());
    let qcow2 = tmp.path().join("disk.qcow2");
    qcow2_of(&raw, &qcow2);
    assert_eq!(compare_qcow2_with_raw(&qcow2, &raw).unwrap(), DiskMatch::Same);

    // One byte of a file's content changed in another raw disk.
    let changed = tmp.path().join("changed.raw");
    fs::copy(&raw, &changed).unwrap();
    let disk = DiskImage::open(&raw).unwrap();
    let data = disk.read("/var/lib/app/data.bin").unwrap();
    drop(disk);
    let bytes = fs::read(&changed).unwrap();
    let at = built.layout.root().start as usize
        + bytes[built.layout.root().start as usize..].windows(data.len()).position(|w| w == data).unwrap();
    let mut bytes = bytes;
    bytes[at + 300] ^= 0xff;
    fs::write(&changed, &bytes).unwrap();
    // qemu-img names the first sector that differs.
    let sector = (at + 300) / 512 * 512;
    assert_eq!(
        compare_qcow2_with_raw(&qcow2, &changed).unwrap(),
        DiskMatch::Differs(format!("Content mismatch at offset {sector}!"))
    );
    // Same content but a longer disk is not the same disk.
    let longer = tmp.path().join("longer.raw");
    fs::copy(&raw, &longer).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&longer)
        .unwrap()
        .set_len(fs::metadata(&raw).unwrap().len() + MIB)
        .unwrap();
    assert!(
        matches!(compare_qcow2_with_raw(&qcow2, &longer).unwrap(), DiskMatch::Differs(s) if s.contains("virtual size"))
    );

    let err = compare_qcow2_with_raw(&raw, &raw).unwrap_err();
    assert!(matches!(&err, ImageError::NotQcow2 { artifact } if *artifact == raw), "{err}");
    let missing = tmp.path().join("missing.qcow2");
    let err = compare_qcow2_with_raw(&missing, &raw).unwrap_err();
    assert!(matches!(&err, ImageError::Io { artifact, .. } if *artifact == missing), "{err}");
}

fn spec(tag: &str) -> ImageSpec {
    let mut s = ImageSpec::new(tag, EPOCH);
    s.config = RuntimeConfig {
        env: vec!["PATH=/usr/bin:/bin".into(), "LANG=C.UTF-8".into()],
        entrypoint: Some(vec!["/usr/bin/tool".into()]),
        cmd: Some(vec!["--serve".into(), "0.0.0.0:8080".into()]),
        labels: [("org.example.role".to_string(), "web".to_string())].into(),
        user: Some("1000:1000".into()),
        workdir: Some("/home/user".into()),
        exposed_ports: vec!["443/tcp".into(), "8080/tcp".into()],
    };
    s
}

#[test]
fn oci_image_reads_back_the_source_tree_and_its_config() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tree_in(tmp.path());
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let layout = tmp.path().join(format!("oci-{compression:?}"));
        let written =
            write_image(&tree, &layout, &spec("1.0"), &CompressOptions::new(compression), "test").unwrap();
        let image = OciImage::open(&layout).unwrap();
        assert_eq!(image.manifest_digest(), written.manifest_digest().to_string());
        assert_eq!(image.layers().len(), 1);
        assert_eq!(image.layers()[0].diff_id, written.layer.diff_id.to_string());
        assert_same_as_tree(&image, &tree, &[], 0);
        assert_eq!(image.layer_of("/usr/bin/tool-alias"), Some(0));

        let c = image.config();
        assert_eq!((c.architecture.as_str(), c.os.as_str()), ("amd64", "linux"));
        assert_eq!(c.entrypoint.as_deref(), Some(&["/usr/bin/tool".to_string()][..]));
        assert_eq!(c.cmd.as_ref().unwrap(), &["--serve", "0.0.0.0:8080"]);
        assert_eq!(c.env_var("LANG"), Some("C.UTF-8"));
        assert_eq!(c.env, ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]);
        assert_eq!(c.labels.get("org.example.role").map(String::as_str), Some("web"));
        assert_eq!(c.exposed_ports, ["443/tcp", "8080/tcp"]);
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.working_dir.as_deref(), Some("/home/user"));
        assert_eq!(OciImage::open_tag(&layout, "1.0").unwrap().manifest_digest(), image.manifest_digest());
        let err = OciImage::open_tag(&layout, "2.0").unwrap_err();
        assert!(matches!(&err, ImageError::BadLayout { artifact, .. } if *artifact == layout), "{err}");
    }
}

#[test]
fn derived_oci_image_reads_as_the_merged_result() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tree_in(tmp.path());
    let base = tmp.path().join("base");
    write_image(&tree, &base, &spec("1"), &CompressOptions::new(Compression::Gzip), "base").unwrap();

    let parent = Parent::open(&base, "1", "oci-layout:base:1").unwrap();
    let child = tmp.path().join("child");
    let parent_index = parent.unpack(&child, &UnpackOptions::default()).unwrap();
    // A deleted file (whiteout), a directory whose old content is all gone and that has new (opaque), a
    // changed file and a new one.
    fs::remove_file(child.join("etc/group")).unwrap();
    fs::remove_file(child.join("var/lib/app/data.bin")).unwrap();
    fs::remove_file(child.join("var/lib/app/state")).unwrap();
    put(&child, "var/lib/app/fresh", b"fresh\n", 0o600, (0, 42));
    put(&child, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644, (0, 0));
    put(&child, "etc/motd", b"derived\n", 0o644, (0, 0));
    touch_all(&child);

    let derived = tmp.path().join("derived");
    write_derived_image(
        &child,
        &derived,
        &spec("2"),
        &CompressOptions::new(Compression::Zstd),
        "steps",
        &parent,
        &parent_index,
    )
    .unwrap();
    // The top layer really holds a whiteout and an opaque marker.
    let layout = Layout::open(&derived).unwrap();
    let found = layout.find("2").unwrap();
    let top = listing(layout.open_layer(found.layers().last().unwrap()).unwrap()).unwrap();
    assert!(top.contains("etc/.wh.group") && top.contains("var/lib/app/.wh..wh..opq"), "{top}");

    let image = OciImage::open(&derived).unwrap();
    assert_eq!(image.layers().len(), 2);
    assert_eq!(image.layers()[1].media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
    assert_same_as_tree(&image, &child, &[], 0);
    assert_eq!(image.metadata("/etc/group").unwrap(), None);
    assert_eq!(image.metadata("/var/lib/app/data.bin").unwrap(), None);
    assert_eq!(image.read("/etc/passwd").unwrap(), b"root:x:0:0:root:/root:/bin/sh\n");
    assert_eq!(image.layer_of("/etc/passwd"), Some(1));
    assert_eq!(image.layer_of("/usr/bin/tool"), Some(0));
    assert_eq!(image.layer_of("/var/lib/app/fresh"), Some(1));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn absent_and_corrupt_artifacts_give_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tree_in(tmp.path());

    // Disks.
    let missing = tmp.path().join("missing.raw");
    let err = DiskImage::open(&missing).unwrap_err();
    assert!(matches!(&err, ImageError::Io { artifact, .. } if *artifact == missing), "{err}");
    assert!(err.to_string().contains("missing.raw"), "{err}");

    let zeros = tmp.path().join("zeros.raw");
    fs::File::create(&zeros).unwrap().set_len(4 * MIB).unwrap();
    let err = DiskImage::open(&zeros).unwrap_err();
    assert!(matches!(&err, ImageError::Gpt { artifact, .. } if *artifact == zeros), "{err}");

    let (raw, built) = raw_disk(&tree, tmp.path());
    let original = fs::read(&raw).unwrap();
    let corrupt = tmp.path().join("corrupt.raw");
    let mut bytes = original.clone();
    bytes[512 + 0x38] ^= 1; // the disk GUID in the primary GPT header, covered by its CRC
    fs::write(&corrupt, &bytes).unwrap();
    let err = DiskImage::open(&corrupt).unwrap_err();
    assert!(matches!(&err, ImageError::Gpt { artifact, .. } if *artifact == corrupt), "{err}");

    let mut bytes = original;
    let magic = built.layout.root().start as usize + 1024 + 0x38;
    assert_eq!(&bytes[magic..magic + 2], &[0x53, 0xef], "ext4 superblock magic");
    bytes[magic] = 0;
    fs::write(&corrupt, &bytes).unwrap();
    let err = DiskImage::open(&corrupt).unwrap_err();
    assert!(matches!(&err, ImageError::Ext4 { artifact, partition: 2, .. } if *artifact == corrupt), "{err}");

    // OCI layouts.
    let err = OciImage::open(&tmp.path().join("no-layout")).unwrap_err();
    assert!(matches!(err, ImageError::Io { .. }), "{err}");
    let good = tmp.path().join("oci");
    let written =
        write_image(&tree, &good, &spec("1"), &CompressOptions::new(Compression::Gzip), "t").unwrap();
    let blob = |layout: &Path| layout.join("blobs/sha256").join(written.layer.digest.hex());

    let flipped = tmp.path().join("flipped");
    copy_dir(&good, &flipped);
    let mut layer = fs::read(blob(&flipped)).unwrap();
    let mid = layer.len() / 2;
    layer[mid] ^= 0x55;
    fs::write(blob(&flipped), &layer).unwrap();
    let err = OciImage::open(&flipped).unwrap_err();
    assert!(
        matches!(&err, ImageError::BadLayer { artifact, layer: 0, source: LayerError::DigestMismatch { .. }, .. } if *artifact == flipped),
        "{err}"
    );

    let truncated = tmp.path().join("truncated");
    copy_dir(&good, &truncated);
    fs::write(blob(&truncated), &layer[..mid]).unwrap();
    let err = OciImage::open(&truncated).unwrap_err();
    assert!(matches!(&err, ImageError::BadLayer { source: LayerError::SizeMismatch { .. }, .. }), "{err}");

    let no_blob = tmp.path().join("no-blob");
    copy_dir(&good, &no_blob);
    fs::remove_file(blob(&no_blob)).unwrap();
    let err = OciImage::open(&no_blob).unwrap_err();
    assert!(matches!(&err, ImageError::Io { artifact, .. } if *artifact == no_blob), "{err}");

    let bad_index = tmp.path().join("bad-index");
    copy_dir(&good, &bad_index);
    fs::write(bad_index.join("index.json"), b"{\"schemaVersion\": 2, \"manifests\": 7}").unwrap();
    let err = OciImage::open(&bad_index).unwrap_err();
    assert!(matches!(&err, ImageError::BadLayout { artifact, .. } if *artifact == bad_index), "{err}");
}
