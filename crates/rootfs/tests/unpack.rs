//! Unpacking: the tree and dpkg database kiln writes are those `dpkg --unpack` writes for the same packages
//! (files, modes, owners, links, device nodes, conffiles as `.dpkg-new`, `status`, `info/*`, trigger
//! interests, overlaps resolved for the later package), whatever the parallelism; bad archives are refused.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{craft_deb, run, Crafted, Pkg};
use kiln_rootfs::{dump_tree, UnpackError, UnpackOptions};

/// Packages that exercise what unpacking must get right, each with another compression.
fn sample_debs(out: &Path) -> Vec<PathBuf> {
    let alpha = Pkg::new("alpha", "1.0-1")
        .field("Depends", "libbeta1 (>= 2), libc6")
        .field("Homepage", "https://example.invalid/alpha")
        .file_mode("/usr/bin/alpha", b"#!/bin/sh\necho alpha\n", 0o755)
        .file_mode("/bin/alpha-sh", b"#!/bin/sh\n", 0o4755)
        .file("/usr/share/alpha/data", "alpha's data\n")
        .hardlink("/usr/share/alpha/data-link", "/usr/share/alpha/data")
        .file("/usr/share/alpha/shared", "alpha's version\n")
        .hardlink("/usr/share/alpha/shared-link", "/usr/share/alpha/shared")
        .symlink("/usr/bin/alpha-link", "alpha")
        .symlink("/usr/lib/alpha-abs", "/usr/share/alpha")
        .dir("/var/lib/alpha", 0o2770)
        .conffile("/etc/alpha/alpha.conf", "setting = 1\n")
        .script("preinst", "#!/bin/sh\necho preinst \"$@\" >> \"$DPKG_ROOT/alpha-preinst\"\n")
        .script("postinst", "#!/bin/sh\necho postinst \"$@\"\n")
        .member("triggers", "interest-noawait /usr/share/alpha/plugins\nactivate-noawait ldconfig\n")
        .build(out, "xz");
    let libbeta = Pkg::new("libbeta1", "2:2.0-1")
        .field("Multi-Arch", "same")
        .field("Section", "libs")
        .field("Priority", "optional")
        .file("/usr/lib/x86_64-linux-gnu/libbeta.so.1", "not really a library\n")
        .member(
            "md5sums",
            &format!("{}  usr/lib/x86_64-linux-gnu/libbeta.so.1\n", md5_hex(b"not really a library\n")),
        )
        .member("shlibs", "libbeta 1 libbeta1 (>= 2)\n")
        .member("triggers", "interest ldconfig-test\n")
        .build(out, "zstd");
    // gamma takes over a file of alpha (`Replaces`), hard-linked in alpha.
    let gamma = Pkg::new("gamma", "0.1")
        .field("Replaces", "alpha (<< 2)")
        .field("Essential", "yes")
        .file("/usr/share/alpha/shared", "gamma's version\n")
        .file("/usr/share/gamma/README", "gamma\n")
        .build(out, "gzip");
    let delta = craft_deb(
        out,
        "delta",
        &[
            Crafted::Dir { path: "./srv/", mode: 0o755, uid: 0, gid: 0 },
            Crafted::Dir { path: "./srv/owned/", mode: 0o2775, uid: 33, gid: 34 },
            Crafted::File { path: "./srv/owned/file", content: "owned\n", mode: 0o640, uid: 1000, gid: 1001 },
            Crafted::Symlink { path: "./srv/owned/link", target: "file" },
            Crafted::Dir { path: "./dev/", mode: 0o755, uid: 0, gid: 0 },
            Crafted::Char { path: "./dev/kiln-null", major: 1, minor: 3, mode: 0o666 },
            Crafted::Fifo { path: "./srv/fifo", mode: 0o600 },
        ],
    );
    vec![alpha, libbeta, gamma, delta]
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

/// What `dpkg --root=REF --unpack` makes of `debs`, in a tree prepared like kiln's (merged /usr).
fn dpkg_reference(debs: &[PathBuf], reference: &Path) {
    std::fs::create_dir_all(reference.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(reference.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(reference.join("var/lib/dpkg/status"), "").unwrap();
    for dir in kiln_rootfs::unpack::merged_usr_dirs("amd64") {
        std::fs::create_dir_all(reference.join("usr").join(dir)).unwrap();
        std::os::unix::fs::symlink(format!("usr/{dir}"), reference.join(dir)).unwrap();
    }
    run(Command::new("dpkg")
        .arg(format!("--root={}", reference.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-unsafe-io",
            "--log=/dev/null",
            "--unpack",
        ])
        .args(debs)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"));
}

/// The tree's listing without what differs by nature between two unpackers: directory times (changed by
/// every entry added) and those of the merged-/usr links (made before unpacking), dpkg's own bookkeeping
/// files, and the preinst's marker (kiln runs preinsts when configuring).
fn comparable_dump(tree: &Path) -> BTreeMap<String, String> {
    dump_tree(tree)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("/var/lib/dpkg") && !l.starts_with("/alpha-preinst"))
        .map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let merged_usr_link = fields[1] == "l" && fields[0].matches('/').count() == 1;
            let line = if fields[1] == "d" || merged_usr_link {
                let mut f = fields.clone();
                f[4] = "-";
                f.join(" ")
            } else {
                l.to_owned()
            };
            (fields[0].to_owned(), line)
        })
        .collect()
}

fn info_files(tree: &Path) -> BTreeMap<String, (String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::read_dir(tree.join("var/lib/dpkg/info"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                (std::fs::read_to_string(&p).unwrap(), mode),
            )
        })
        .collect()
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[test]
fn tree_and_database_are_those_dpkg_unpack_makes() {
    let dir = tempfile::tempdir().unwrap();
    let debs = sample_debs(dir.path());
    let reference = dir.path().join("reference");
    dpkg_reference(&debs, &reference);

    for jobs in [1, 4] {
        let tree = dir.path().join(format!("tree-{jobs}"));
        let opts = UnpackOptions { jobs: Some(jobs), ..UnpackOptions::default() };
        let unpacked = kiln_rootfs::unpack(&debs, &tree, &opts).unwrap();
        assert!(unpacked.owners_preserved, "the tests run as root");
        assert_eq!(
            unpacked.packages.iter().map(|p| p.db_name.as_str()).collect::<Vec<_>>(),
            ["alpha", "libbeta1:amd64", "gamma", "delta"]
        );

        let (ours, theirs) = (comparable_dump(&tree), comparable_dump(&reference));
        for (path, line) in &theirs {
            assert_eq!(ours.get(path), Some(line), "jobs={jobs}: {path} differs from dpkg's");
        }
        assert_eq!(
            ours.len(),
            theirs.len(),
            "jobs={jobs}: extra paths: {:?}",
            ours.keys().filter(|k| !theirs.contains_key(*k)).collect::<Vec<_>>()
        );

        let db = |t: &Path, f: &str| std::fs::read_to_string(t.join("var/lib/dpkg").join(f)).unwrap();
        assert_eq!(db(&tree, "status"), db(&reference, "status"), "jobs={jobs}: status");
        assert_eq!(info_files(&tree), info_files(&reference), "jobs={jobs}: info/");
        for f in ["triggers/File", "triggers/ldconfig-test"] {
            let (a, b) = (tree.join("var/lib/dpkg").join(f), reference.join("var/lib/dpkg").join(f));
            assert_eq!(sorted_lines(&a), sorted_lines(&b), "jobs={jobs}: {f}");
        }
    }
}

#[test]
fn the_later_package_wins_an_overlap_and_the_earlier_list_drops_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let debs = sample_debs(dir.path());
    let tree = dir.path().join("tree");
    kiln_rootfs::unpack(&debs, &tree, &UnpackOptions::default()).unwrap();
    let read = |p: &str| std::fs::read_to_string(tree.join(p)).unwrap();
    assert_eq!(read("usr/share/alpha/shared"), "gamma's version\n");
    assert_eq!(
        read("usr/share/alpha/shared-link"),
        "alpha's version\n",
        "a hard link keeps its package's content"
    );
    let alpha_list = read("var/lib/dpkg/info/alpha.list");
    assert!(!alpha_list.lines().any(|l| l == "/usr/share/alpha/shared"), "{alpha_list}");
    assert!(alpha_list.lines().any(|l| l == "/usr/share/alpha/shared-link"));
    assert!(read("var/lib/dpkg/info/gamma.list").lines().any(|l| l == "/usr/share/alpha/shared"));
    let leftovers: Vec<_> =
        walk(&tree).into_iter().filter(|p| p.to_string_lossy().contains(".kiln-")).collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn list_and_md5sums_follow_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let debs = sample_debs(dir.path());
    let tree = dir.path().join("tree");
    kiln_rootfs::unpack(&debs[..1], &tree, &UnpackOptions::default()).unwrap();
    // `dpkg-deb -c` lists the archive: the `.list` is those paths, in that order, as dpkg spells them.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&debs[0]));
    let expected: String = listing
        .lines()
        .map(|l| {
            let path = l.split_whitespace().nth(5).unwrap();
            let path = path.trim_start_matches('.').trim_end_matches('/');
            format!("{}\n", if path.is_empty() { "/." } else { path })
        })
        .collect();
    let list = std::fs::read_to_string(tree.join("var/lib/dpkg/info/alpha.list")).unwrap();
    assert_eq!(list, expected);
    // alpha ships no md5sums: one is made with every regular file (hard links included), like dpkg does.
    assert!(!run(Command::new("dpkg-deb").arg("-I").arg(&debs[0])).contains(" md5sums"));
    let md5sums = std::fs::read_to_string(tree.join("var/lib/dpkg/info/alpha.md5sums")).unwrap();
    assert!(
        md5sums.contains(&format!("{}  usr/share/alpha/data-link\n", md5_hex(b"alpha's data\n"))),
        "{md5sums}"
    );
    assert!(md5sums.contains(&format!("{}  etc/alpha/alpha.conf\n", md5_hex(b"setting = 1\n"))), "{md5sums}");
    // The conffile waits as `.dpkg-new` for `dpkg --configure`.
    assert!(tree.join("etc/alpha/alpha.conf.dpkg-new").is_file());
    assert!(!tree.join("etc/alpha/alpha.conf").exists());
}

#[test]
fn owners_devices_and_modes_come_from_the_archive() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = tempfile::tempdir().unwrap();
    let debs = sample_debs(dir.path());
    let tree = dir.path().join("tree");
    kiln_rootfs::unpack(&debs[3..], &tree, &UnpackOptions::default()).unwrap();
    let meta = |p: &str| std::fs::symlink_metadata(tree.join(p)).unwrap();
    let file = meta("srv/owned/file");
    assert_eq!((file.uid(), file.gid(), file.mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!(file.mtime(), common::CRAFTED_MTIME as i64);
    let owned = meta("srv/owned");
    assert_eq!((owned.uid(), owned.gid(), owned.mode() & 0o7777), (33, 34, 0o2775));
    assert_eq!(owned.mtime(), common::CRAFTED_MTIME as i64, "directory times are set last");
    let dev = meta("dev/kiln-null");
    assert!(dev.file_type().is_char_device());
    assert_eq!((rustix::fs::major(dev.rdev()), rustix::fs::minor(dev.rdev())), (1, 3));
    assert!(meta("srv/fifo").file_type().is_fifo());
    assert_eq!(std::fs::read_link(tree.join("srv/owned/link")).unwrap(), Path::new("file"));
    assert_eq!(meta("srv/owned/link").mtime(), common::CRAFTED_MTIME as i64);
    // No md5sums member: dpkg would make one, and so does kiln.
    let md5sums = std::fs::read_to_string(tree.join("var/lib/dpkg/info/delta.md5sums")).unwrap();
    assert_eq!(md5sums, format!("{}  srv/owned/file\n", md5_hex(b"owned\n")));
}

#[test]
fn bad_archives_and_targets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let escape = craft_deb(dir.path(), "escape", &[Crafted::RawFile { name: "./../outside", content: "x" }]);
    let tree = dir.path().join("tree");
    let err = kiln_rootfs::unpack(&[escape], &tree, &UnpackOptions::default()).unwrap_err();
    assert!(matches!(&err, UnpackError::Member { package, .. } if package == "escape"), "{err}");
    assert!(!dir.path().join("outside").exists());

    let not_a_deb = dir.path().join("junk.deb");
    std::fs::write(&not_a_deb, "this is not an ar archive").unwrap();
    let err =
        kiln_rootfs::unpack(&[not_a_deb], &dir.path().join("tree2"), &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::Deb(_)), "{err}");

    let twice = [debs_dir_deb(dir.path()), debs_dir_deb(dir.path())];
    let err = kiln_rootfs::unpack(&twice, &dir.path().join("tree3"), &UnpackOptions::default()).unwrap_err();
    assert!(matches!(&err, UnpackError::Duplicate { package, .. } if package == "once"), "{err}");

    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("something"), "").unwrap();
    let debs = sample_debs(dir.path());
    let err = kiln_rootfs::unpack(&debs, &full, &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::TreeNotEmpty { .. }), "{err}");
}

fn debs_dir_deb(dir: &Path) -> PathBuf {
    let out = tempfile::tempdir_in(dir).unwrap().keep();
    Pkg::new("once", "1").file("/usr/share/once", "once\n").build(&out, "gzip")
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
