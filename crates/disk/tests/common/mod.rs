//! Shared fixtures of the integration tests: small synthetic root trees and a fixed image identity.

#![allow(dead_code)]

use std::{
    fs::{self, File, FileTimes},
    os::unix::fs::{symlink, PermissionsExt},
    path::Path,
    time::{Duration, SystemTime},
};

use kiln_disk::ImageIdentity;

pub const EPOCH: u64 = 1_700_000_000;

pub fn identity() -> ImageIdentity {
    ImageIdentity::new("kiln-test", "1.0.0", "sha256:0000")
}

pub fn write(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets atime and mtime of every entry under `root` (not following symlinks' targets).
pub fn set_times(root: &Path, atime: u64, mtime: u64) {
    let times = FileTimes::new()
        .set_accessed(SystemTime::UNIX_EPOCH + Duration::from_secs(atime))
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        File::open(&p).unwrap().set_times(times).unwrap();
    }
}

/// The files kiln's ESP takes from a tree: two kernels with initrds, and systemd-boot.
pub fn add_boot_files(root: &Path) {
    write(root, "boot/vmlinuz-6.1.0-9-amd64", b"old kernel", 0o644);
    write(root, "boot/initrd.img-6.1.0-9-amd64", b"old initrd", 0o644);
    write(root, "boot/vmlinuz-6.1.0-26-amd64", &vec![0x4b; 300_000], 0o644);
    write(root, "boot/initrd.img-6.1.0-26-amd64", &vec![0x49; 700_000], 0o644);
    write(root, "boot/config-6.1.0-26-amd64", b"CONFIG_EXT4_FS=y\n", 0o644);
    write(root, "usr/lib/systemd/boot/efi/systemd-bootx64.efi", b"MZ fake systemd-boot", 0o644);
}

/// A small but varied root tree: boot files, text, a private directory, a symlink, a file owned by a user,
/// and a megabyte of incompressible bytes.
pub fn full_tree(root: &Path) {
    add_boot_files(root);
    write(root, "etc/hostname", b"kiln\n", 0o644);
    write(root, "etc/os-release", b"ID=debian\nVERSION_ID=12\n", 0o644);
    write(root, "usr/bin/hello", b"#!/bin/sh\necho hello\n", 0o755);
    let mut x = 0x9e37_79b9u32;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    write(root, "var/lib/noise.bin", &noise, 0o600);
    write(root, "home/user/notes.txt", &b"kiln ".repeat(20_000), 0o640);
    fs::set_permissions(root.join("home/user"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(root.join("home/user/notes.txt"), Some(1000), Some(1000)).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    set_times(root, EPOCH - 100, EPOCH - 200);
}
