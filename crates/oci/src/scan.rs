//! Scanning a root file system tree on disk into a [`TreeIndex`] (the I/O side of the layer writer).
//!
//! The scan keeps what a layer records: kind, permission bits, numeric owners, mtime, symlink targets,
//! device numbers, extended attributes (except `security.selinux`, which belongs to the build host's policy)
//! and `(dev, ino)` of multiply linked files. Sockets cannot be stored in a tar archive and are skipped
//! (counted in [`Scan::skipped_sockets`]). By default the scan stays on the root's file system, like
//! `tar --one-file-system`: mount points are kept as empty directories.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io::Read,
    os::unix::{
        ffi::OsStrExt,
        fs::{FileTypeExt, MetadataExt},
    },
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
        Self { hash_contents: false, one_file_system: true }
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
    let mut index = TreeIndex::new();
    let skipped_sockets = walk_tree(root, opts, |path, entry, _| {
        index.insert(path, entry);
        Ok(())
    })?;
    Ok(Scan { index, skipped_sockets })
}

/// An entry waiting in the walk's frontier, ordered by path only.
struct Pending {
    path: TreePath,
    entry: Entry,
    meta: std::fs::Metadata,
    abs: PathBuf,
    /// Whether to read the directory when the entry is visited (not for other file systems).
    descend: bool,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.path.cmp(&other.path)
    }
}

/// Walks the tree below `root` and calls `visit` for every entry (with its path on disk) in layer order
/// (bytewise by path), as soon as it is known that no smaller path is left, so a layer can be written while
/// the tree is still walked. Returns the sockets that were skipped.
///
/// The frontier is a min-heap of paths: every path is larger than its directory's, so when the smallest
/// pending path is popped, nothing smaller remains unseen.
pub fn walk_tree(
    root: &Path,
    opts: &ScanOptions,
    mut visit: impl FnMut(TreePath, Entry, &Path) -> Result<(), Error>,
) -> Result<Vec<TreePath>, Error> {
    walk_tree_with_metadata(root, opts, |path, entry, abs, _| visit(path, entry, abs))
}

/// [`walk_tree`], also handing `visit` the entry's own `lstat` result (change time, inode, link count,
/// nanoseconds), which an [`Entry`] does not keep: for callers that tell two walks of a tree apart.
pub fn walk_tree_with_metadata(
    root: &Path,
    opts: &ScanOptions,
    mut visit: impl FnMut(TreePath, Entry, &Path, &std::fs::Metadata) -> Result<(), Error>,
) -> Result<Vec<TreePath>, Error> {
    let root_meta = fs_err::symlink_metadata(root)?;
    if !root_meta.is_dir() {
        return Err(Error::InvalidPath {
            path: root.display().to_string(),
            reason: "the tree root is not a directory",
        });
    }
    let root_dev = root_meta.dev();
    let mut skipped = Vec::new();
    let mut xattr_buf = vec![0u8; 65536];
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut read_dir = |dir_abs: &Path,
                        dir_rel: &TreePath,
                        heap: &mut BinaryHeap<Reverse<Pending>>,
                        skipped: &mut Vec<TreePath>|
     -> Result<(), Error> {
        for dirent in fs_err::read_dir(dir_abs)? {
            let dirent = dirent?;
            let name = dirent.file_name();
            let abs = dir_abs.join(&name);
            let rel = dir_rel.join(name.as_bytes());
            match stat_entry(&abs, &rel, opts, &mut xattr_buf)? {
                Some((entry, meta)) => {
                    let descend = entry.is_dir() && (!opts.one_file_system || meta.dev() == root_dev);
                    heap.push(Reverse(Pending { path: rel, entry, meta, abs, descend }));
                }
                None => skipped.push(rel),
            }
        }
        Ok(())
    };
    read_dir(root, &TreePath::root(), &mut heap, &mut skipped)?;
    while let Some(Reverse(p)) = heap.pop() {
        if p.descend {
            read_dir(&p.abs, &p.path, &mut heap, &mut skipped)?;
        }
        visit(p.path, p.entry, &p.abs, &p.meta)?;
    }
    skipped.sort();
    Ok(skipped)
}

/// The entry of one file system object and its `lstat` result; `None` for a socket.
fn stat_entry(
    abs: &Path,
    rel: &TreePath,
    opts: &ScanOptions,
    xattr_buf: &mut [u8],
) -> Result<Option<(Entry, std::fs::Metadata)>, Error> {
    let meta = fs_err::symlink_metadata(abs)?;
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        let digest = if opts.hash_contents { Some(hash_file(abs)?) } else { None };
        EntryKind::File { size: meta.len(), digest }
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        let target = fs_err::read_link(abs)?;
        EntryKind::Symlink { target: target.as_os_str().as_bytes().to_vec() }
    } else if ft.is_char_device() {
        EntryKind::CharDevice { major: rustix::fs::major(meta.rdev()), minor: rustix::fs::minor(meta.rdev()) }
    } else if ft.is_block_device() {
        EntryKind::BlockDevice {
            major: rustix::fs::major(meta.rdev()),
            minor: rustix::fs::minor(meta.rdev()),
        }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        return Ok(None);
    };
    let entry = Entry {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        xattrs: read_xattrs(abs, rel, xattr_buf)?,
        inode: (ft.is_file() && meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
    };
    Ok(Some((entry, meta)))
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
    let names: Vec<Vec<u8>> =
        buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()).map(<[u8]>::to_vec).collect();
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn walk_with_metadata_hands_over_each_entrys_own_lstat() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir(root.join("etc")).unwrap();
        fs_err::write(root.join("etc/a"), b"a").unwrap();
        fs_err::hard_link(root.join("etc/a"), root.join("etc/b")).unwrap();
        fs_err::write(root.join("etc/c"), b"cc").unwrap();
        std::os::unix::fs::symlink("c", root.join("etc/link")).unwrap();
        let mut seen = Vec::new();
        let skipped = walk_tree_with_metadata(root, &ScanOptions::default(), |path, _, abs, meta| {
            let own = std::fs::symlink_metadata(abs).unwrap();
            assert_eq!(
                (meta.ino(), meta.ctime(), meta.ctime_nsec()),
                (own.ino(), own.ctime(), own.ctime_nsec())
            );
            seen.push((path.to_string(), meta.ino(), meta.nlink(), meta.file_type().is_symlink()));
            Ok(())
        })
        .unwrap();
        assert!(skipped.is_empty());
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["etc", "etc/a", "etc/b", "etc/c", "etc/link"]);
        assert_eq!(seen[1].1, seen[2].1, "hard links share their inode");
        assert_eq!(seen[1].2, 2);
        assert_ne!(seen[4].1, seen[3].1, "a symlink's metadata is its own, not its target's");
        assert!(seen[4].3);
    }
}
