//! Shared fixtures of the integration tests: a small root tree with every kind of entry kiln stores.

#![allow(dead_code)]

use std::{
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

/// `SOURCE_DATE_EPOCH` of the fixtures.
pub const EPOCH: u64 = 1_700_000_000;

/// `cap_net_raw+ep` as stored in `security.capability` (VFS_CAP_REVISION_2).
pub const CAP_NET_RAW: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

pub fn long_path() -> String {
    let p = format!("usr/share/{}/{}", "d".repeat(100), "f".repeat(89));
    assert_eq!(p.len(), 200);
    p
}

pub fn set_mtime(path: &Path, secs: i64) {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let t = Timespec { tv_sec: secs, tv_nsec: 0 };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps { last_access: t, last_modification: t },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn write(root: &Path, rel: &str, content: &[u8], mode: u32) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn mkdir(root: &Path, rel: &str, mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed");
}

/// Builds the fixture tree at `root` (needs root for owners, devices and `security.*` xattrs).
pub fn build_tree(root: &Path) {
    for (d, mode) in [
        ("etc", 0o755),
        ("usr/bin", 0o755),
        ("usr/lib", 0o755),
        ("dev", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("var/cache/apt", 0o755),
        ("home/user", 0o700),
    ] {
        mkdir(root, d, mode);
    }
    write(root, "etc/hostname", b"kiln\n", 0o644);
    let shadow = write(root, "etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640);
    std::os::unix::fs::chown(&shadow, Some(0), Some(42)).unwrap();
    write(root, "usr/lib/os-release", b"ID=debian\n", 0o644);
    symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    let ping = write(root, "usr/bin/ping", b"\x7fELF ping", 0o755);
    rustix::fs::lsetxattr(&ping, "user.kiln", b"note", rustix::fs::XattrFlags::empty()).unwrap();
    rustix::fs::lsetxattr(&ping, "security.capability", &CAP_NET_RAW, rustix::fs::XattrFlags::empty())
        .unwrap();
    write(root, "usr/bin/su", b"\x7fELF su", 0o4755);
    let py = write(root, "usr/bin/python3.11", b"\x7fELF python", 0o755);
    std::fs::hard_link(&py, root.join("usr/bin/python3")).unwrap();
    write(root, "var/cache/apt/pkgcache.bin", &vec![7u8; 100_000], 0o644);
    write(root, "var/cache/apt/srcpkgcache.bin", &vec![9u8; 50_000], 0o644);
    write(root, &long_path(), b"long", 0o644);
    let home = root.join("home/user");
    write(root, "home/user/.profile", b"PS1='$ '\n", 0o644);
    for p in [home.clone(), home.join(".profile")] {
        std::os::unix::fs::lchown(&p, Some(1000), Some(1000)).unwrap();
    }
    run(Command::new("mknod").arg(root.join("dev/null")).args(["c", "1", "3"]));
    run(Command::new("mknod").arg(root.join("dev/loop0")).args(["b", "7", "0"]));
    run(Command::new("mkfifo").arg(root.join("run/initctl")));
    std::fs::set_permissions(root.join("dev/null"), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(root.join("run/initctl"), std::fs::Permissions::from_mode(0o600)).unwrap();
    touch_all(root, 1_600_000_000);
    // One file newer than the epoch: it is clamped.
    set_mtime(&root.join("etc/hostname"), 1_800_000_000);
}

/// Sets every mtime below `root` (not following symlinks) to `secs`.
pub fn touch_all(root: &Path, secs: i64) {
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            all.push(p);
        }
    }
    // Children first, so directory mtimes stay put.
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all {
        set_mtime(&p, secs);
    }
}
