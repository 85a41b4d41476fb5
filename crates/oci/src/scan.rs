//! Scanning a root file system tree on disk into a [`TreeIndex`] (the I/O side of the layer writer).
//!
//! The scan keeps what a layer records: kind, permission bits, numeric owners, mtime, symlink targets,
//! device numbers, extended attributes (except `security.selinux`, which belongs to the build host's policy)
//! and `(dev, ino)` of multiply linked files. Sockets cannot be stored in a tar archive and are skipped
//! (counted in [`Scan::skipped_sockets`]). By default the scan stays on the root's file system, like
//! `tar --one-file-system`: mount points are kept as empty directories.

use std::{
    io::Read,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};

use sha2::Digest as _;

use crate::{
    error::Error,
    tree::{Entry, EntryKind, Sha256, TreeIndex, TreePath},
};

/// Extended attributes never copied from a tree: SELinux labels come from the build host.
pub const SKIPPED_XATTRS: &[&str] = &["security.selinux"];

#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Compute the SHA-256 of every regular file (needed to diff the tree against a parent image).
    pub hash_contents: bool,
    /// Do not descend into directories on another file system than the root.
    pub one_file_system: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            hash_contents: false,
            one_file_system: true,
        }
    }
}

/// The result of a scan.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub index: TreeIndex,
    pub skipped_sockets: Vec<TreePath>,
}

/// Scans the tree below `root` (the root directory itself is not an entry).
pub fn scan_tree(root: &Path, opts: &ScanOptions) -> Result<Scan, Error> {
    let root_meta = fs_err::symlink_metadata(root)?;
    if !root_meta.is_dir() {
        return Err(Error::InvalidPath {
            path: root.display().to_string(),
            reason: "the tree root is not a directory",
        });
    }
    let root_dev = root_meta.dev();
    let mut scan = Scan::default();
    let mut xattr_buf = vec![0u8; 65536];
    let mut stack: Vec<(PathBuf, TreePath)> = vec![(root.to_path_buf(), TreePath::root())];
    while let Some((dir_abs, dir_rel)) = stack.pop() {
        for dirent in fs_err::read_dir(&dir_abs)? {
            let dirent = dirent?;
            let name = dirent.file_name();
            let abs = dir_abs.join(&name);
            let rel = dir_rel.join(std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()));
            let meta = fs_err::symlink_metadata(&abs)?;
            let ft = meta.file_type();
            let kind = if ft.is_file() {
                let digest = if opts.hash_contents {
                    Some(hash_file(&abs)?)
                } else {
                    None
                };
                EntryKind::File {
                    size: meta.len(),
                    digest,
                }
            } else if ft.is_dir() {
                if !opts.one_file_system || meta.dev() == root_dev {
                    stack.push((abs.clone(), rel.clone()));
                }
                EntryKind::Dir
            } else if ft.is_symlink() {
                let target = fs_err::read_link(&abs)?;
                EntryKind::Symlink {
                    target: std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec(),
                }
            } else if ft.is_char_device() {
                EntryKind::CharDevice {
                    major: rustix::fs::major(meta.rdev()),
                    minor: rustix::fs::minor(meta.rdev()),
                }
            } else if ft.is_block_device() {
                EntryKind::BlockDevice {
                    major: rustix::fs::major(meta.rdev()),
                    minor: rustix::fs::minor(meta.rdev()),
                }
            } else if ft.is_fifo() {
                EntryKind::Fifo
            } else {
                scan.skipped_sockets.push(rel);
                continue;
            };
            let inode = (ft.is_file() && meta.nlink() > 1).then(|| (meta.dev(), meta.ino()));
            let entry = Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                xattrs: read_xattrs(&abs, &rel, &mut xattr_buf)?,
                inode,
            };
            scan.index.insert(rel, entry);
        }
    }
    Ok(scan)
}

/// SHA-256 of a file's content.
pub fn hash_file(path: &Path) -> Result<Sha256, Error> {
    let mut f = fs_err::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Sha256(h.finalize().into()))
}

fn io_err(abs: &Path, what: &str, e: rustix::io::Errno) -> Error {
    Error::Io(std::io::Error::new(
        std::io::Error::from(e).kind(),
        format!("{what} of {}: {e}", abs.display()),
    ))
}

/// Reads the extended attributes of `abs` (not following a symlink).
fn read_xattrs(
    abs: &Path,
    rel: &TreePath,
    buf: &mut [u8],
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, Error> {
    let mut out = std::collections::BTreeMap::new();
    let n = match rustix::fs::llistxattr(abs, &mut buf[..]) {
        Ok(n) => n,
        // File systems without xattr support have none to keep.
        Err(rustix::io::Errno::NOTSUP) => return Ok(out),
        Err(e) => return Err(io_err(abs, "listing extended attributes", e)),
    };
    if n == 0 {
        return Ok(out);
    }
    let names: Vec<Vec<u8>> = buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    for name in names {
        let name = String::from_utf8(name).map_err(|e| Error::NonUtf8Xattr {
            path: rel.to_string(),
            name: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })?;
        if SKIPPED_XATTRS.contains(&name.as_str()) {
            continue;
        }
        match rustix::fs::lgetxattr(abs, name.as_str(), &mut buf[..]) {
            Ok(len) => {
                out.insert(name, buf[..len].to_vec());
            }
            // Removed between listing and reading.
            Err(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(io_err(abs, "reading an extended attribute", e)),
        }
    }
    Ok(out)
}
