//! Normalization and the tree digest: two builds that differ only in when they ran digest the same after
//! normalization; any change an image's user could notice (content, mode, owner, link target, capability,
//! presence, an old mtime) changes the digest; machine-specific and volatile files are handled.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use filetime::FileTime;
use kiln_rootfs::{dump_tree, normalize, tree_digest};
use sha2::{Digest, Sha256};

const EPOCH: i64 = 1_700_000_000;

fn write(tree: &Path, rel: &str, content: &str) {
    let p = tree.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A small tree, every entry stamped `mtime`.
fn make_tree(tree: &Path, mtime: i64) {
    write(tree, "etc/hostname", "kiln\n");
    write(tree, "usr/bin/tool", "#!/bin/sh\n");
    std::fs::set_permissions(tree.join("usr/bin/tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("tool", tree.join("usr/bin/tool-link")).unwrap();
    std::os::unix::fs::symlink("usr/bin", tree.join("bin")).unwrap();
    std::fs::create_dir_all(tree.join("var/empty")).unwrap();
    stamp(tree, mtime);
}

fn stamp(dir: &Path, mtime: i64) {
    let t = FileTime::from_unix_time(mtime, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            stamp(&p, mtime);
        }
        filetime::set_symlink_file_times(&p, t, t).unwrap();
    }
    filetime::set_symlink_file_times(dir, t, t).unwrap();
}

#[test]
fn builds_that_differ_only_in_time_digest_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    make_tree(&a, EPOCH + 10);
    make_tree(&b, EPOCH + 99_999);
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_ne!(tree_digest(&a).unwrap(), tree_digest(&b).unwrap(), "mtimes are covered");
    normalize(&a, EPOCH).unwrap();
    let report = normalize(&b, EPOCH).unwrap();
    assert_eq!(report.clamped, 10, "every entry, symlinks and the root included: {report:?}");
    assert_eq!(tree_digest(&a).unwrap(), tree_digest(&b).unwrap());
    assert_eq!(
        std::fs::symlink_metadata(b.join("bin")).unwrap().mtime(),
        EPOCH,
        "symlinks are clamped themselves"
    );
    assert_eq!(std::fs::metadata(b.join("usr/bin")).unwrap().mtime(), EPOCH);

    // Normalizing again changes nothing.
    let before = tree_digest(&a).unwrap();
    assert_eq!(normalize(&a, EPOCH).unwrap().clamped, 0);
    assert_eq!(tree_digest(&a).unwrap(), before);
}

#[test]
fn every_visible_change_changes_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    make_tree(&base, EPOCH);
    let digest = tree_digest(&base).unwrap();
    type Change = fn(&Path);
    let changes: [(&str, Change); 8] = [
        ("content", |t| write(t, "etc/hostname", "kiln2\n")),
        ("mode", |t| {
            std::fs::set_permissions(t.join("usr/bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap()
        }),
        ("owner", |t| std::os::unix::fs::lchown(t.join("etc/hostname"), Some(1000), None).unwrap()),
        ("link target", |t| {
            std::fs::remove_file(t.join("usr/bin/tool-link")).unwrap();
            std::os::unix::fs::symlink("./tool", t.join("usr/bin/tool-link")).unwrap();
        }),
        ("new empty file", |t| write(t, "var/empty/file", "")),
        ("file becomes a directory", |t| {
            std::fs::remove_file(t.join("etc/hostname")).unwrap();
            std::fs::create_dir(t.join("etc/hostname")).unwrap();
        }),
        ("an mtime older than the epoch", |t| {
            let old = FileTime::from_unix_time(EPOCH - 1, 0);
            filetime::set_symlink_file_times(t.join("etc/hostname"), old, old).unwrap();
        }),
        ("a file capability", |t| {
            // struct vfs_cap_data, revision 2, effective, permitted = cap_net_raw.
            let cap = [1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            rustix::fs::lsetxattr(
                t.join("usr/bin/tool"),
                "security.capability",
                &cap,
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
        }),
    ];
    for (what, change) in changes {
        let tree = dir.path().join(what.replace(' ', "-"));
        make_tree(&tree, EPOCH);
        std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let same = tree_digest(&tree).unwrap();
        assert_eq!(same, tree_digest(&base).unwrap(), "{what}: identical trees first");
        change(&tree);
        normalize(&tree, EPOCH).unwrap();
        assert_ne!(tree_digest(&tree).unwrap(), digest, "{what} must change the digest");
    }
}

#[test]
fn the_listing_says_what_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    write(&tree, "a b", "hello\n");
    std::os::unix::fs::symlink("a b", tree.join("link")).unwrap();
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755)).unwrap();
    stamp(&tree, EPOCH);
    let dump = dump_tree(&tree).unwrap();
    let sha = hex::encode(Sha256::digest(b"hello\n"));
    let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
    assert_eq!(
        dump,
        format!(
            "kiln-tree/v1\n/ d 0755 {uid}:{gid} {EPOCH}\n/a\\x20b f 0644 {uid}:{gid} {EPOCH} size=6 sha256={sha}\n\
             /link l 0777 {uid}:{gid} {EPOCH} -> a\\x20b\n"
        )
    );
    assert_eq!(
        tree_digest(&tree).unwrap(),
        format!("sha256:{}", hex::encode(Sha256::digest(dump.as_bytes())))
    );
}

#[test]
fn machine_specific_and_volatile_files_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    for (path, content) in [
        ("etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
        ("var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n"),
        ("var/log/dpkg.log", "log\n"),
        ("var/log/alternatives.log", "log\n"),
        ("var/log/apt/term.log", "log\n"),
        ("var/log/apt/history.log", "log\n"),
        ("var/log/wtmp", "binary records\n"),
        ("var/log/journal/0123/system.journal", "journal\n"),
        ("var/cache/apt/pkgcache.bin", "cache\n"),
        ("var/cache/apt/archives/lock", ""),
        ("var/cache/ldconfig/aux-cache", "cache\n"),
        ("var/cache/debconf/config.dat-old", "old\n"),
        ("var/cache/debconf/config.dat", "current\n"),
        ("var/lib/dpkg/status-old", "old\n"),
        ("var/lib/dpkg/status", "current\n"),
        ("var/cache/man/index.db", "db\n"),
        ("var/cache/man/fr/index.db", "db\n"),
        ("etc/ssh/ssh_host_ed25519_key", "secret\n"),
        ("etc/ssh/ssh_host_ed25519_key.pub", "public\n"),
        ("etc/ssh/sshd_config", "config\n"),
        ("lib/systemd/system/ssh.service", "[Service]\n"),
        ("run/lock/x", "x\n"),
        ("tmp/scratch/file", "x\n"),
    ] {
        write(t, path, content);
    }
    let report = normalize(t, EPOCH).unwrap();
    let gone = [
        "var/lib/dbus/machine-id",
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/log/apt/term.log",
        "var/log/apt/history.log",
        "var/log/journal/0123",
        "var/cache/apt/pkgcache.bin",
        "var/cache/ldconfig/aux-cache",
        "var/cache/debconf/config.dat-old",
        "var/lib/dpkg/status-old",
        "var/cache/man/index.db",
        "var/cache/man/fr/index.db",
        "etc/ssh/ssh_host_ed25519_key",
        "etc/ssh/ssh_host_ed25519_key.pub",
        "run/lock",
        "tmp/scratch",
    ];
    for path in gone {
        assert!(std::fs::symlink_metadata(t.join(path)).is_err(), "{path} should be gone");
        assert!(report.removed.contains(&format!("/{path}")), "{path} not reported: {report:?}");
    }
    for path in ["etc/machine-id", "var/log/wtmp"] {
        assert_eq!(std::fs::metadata(t.join(path)).unwrap().len(), 0, "{path} is emptied, not removed");
    }
    for path in [
        "var/cache/debconf/config.dat",
        "var/lib/dpkg/status",
        "etc/ssh/sshd_config",
        "var/cache/apt/archives/lock",
    ] {
        assert!(t.join(path).exists(), "{path} is kept");
    }
    assert!(t.join("run").is_dir() && t.join("tmp").is_dir());
    // Debian's ssh.service does not make missing host keys: kiln's oneshot does, before it.
    let unit = std::fs::read_to_string(t.join("etc/systemd/system/kiln-ssh-host-keys.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/ssh-keygen -A") && unit.contains("Before=ssh.service"),
        "{unit}"
    );
    let wants = t.join("etc/systemd/system/ssh.service.wants/kiln-ssh-host-keys.service");
    assert_eq!(
        std::fs::read_link(wants).unwrap(),
        Path::new("/etc/systemd/system/kiln-ssh-host-keys.service")
    );
}
