//! A root tree's listing and digest: what two builds must agree on to be the same image.
//!
//! [`dump_tree`] lists every entry of the tree, the root included, one line each, sorted by the bytes of the
//! path, after a `kiln-tree/v1` header line:
//!
//! ```text
//! PATH TYPE MODE UID:GID MTIME [size=N sha256=HEX | -> TARGET | dev=MAJOR,MINOR] [xattr.NAME=HEX ...]
//! ```
//!
//! - `PATH`: `/` for the root, `/etc/passwd` otherwise; bytes outside `!`..`~` and `\` are written `\xNN`.
//! - `TYPE`: `d` directory, `f` regular file, `l` symlink, `c`/`b` character/block device, `p` fifo, `s` socket.
//! - `MODE`: permission bits with setuid, setgid and sticky, in octal (`0755`, `4755`).
//! - `UID:GID`: numeric owner.
//! - `MTIME`: seconds since the epoch, with `.NNNNNNNNN` nanoseconds when not zero (after
//!   [`crate::normalize()`] clamping, every entry newer than the epoch is exactly the epoch).
//! - files: size and the sha256 of the content; symlinks: the target as stored (escaped like paths);
//!   devices: major and minor numbers.
//! - `security.capability`, the one extended attribute that changes what a program may do, as hex; other
//!   extended attributes (SELinux labels, ...) depend on the building host and are left out.
//!
//! Not covered: access and change times, hard-link structure (each name is listed with its content), sparse
//! layout, and anything below a mount point's own directory entry (the tree is not expected to have mounts).
//!
//! [`tree_digest`] is `sha256:` and the hex sha256 of that listing.

use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The header line that names the listing's format.
pub const FORMAT: &str = "kiln-tree/v1";

/// A problem reading a tree.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct TreeError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

pub(crate) fn tree_err(path: &Path) -> impl FnOnce(std::io::Error) -> TreeError + '_ {
    move |source| TreeError { path: path.to_owned(), source }
}

/// The listing of the tree described in the module documentation.
pub fn dump_tree(tree: &Path) -> Result<String, TreeError> {
    let mut entries = Vec::new();
    walk(tree, PathBuf::new(), &mut entries)?;
    entries.sort_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));

    // Content hashes, the costly part, on every core.
    let files: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].1.file_type().is_file()).collect();
    let schedule: Vec<usize> = (0..files.len()).collect();
    let hashes = crate::par::run(
        &schedule,
        crate::par::jobs(None),
        |k| {
            let path = tree.join(&entries[files[k]].0);
            sha256_file(&path).map_err(|source| TreeError { path, source })
        },
        Result::is_err,
    );
    let mut content = std::collections::HashMap::new();
    for (k, h) in hashes.into_iter().enumerate() {
        if let Some(h) = h {
            content.insert(files[k], h?);
        }
    }

    let mut out = format!("{FORMAT}\n");
    for (i, (rel, meta)) in entries.iter().enumerate() {
        let path = tree.join(rel);
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            'f'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        let shown = if rel.as_os_str().is_empty() {
            "/".to_owned()
        } else {
            escape(&[b"/", rel.as_os_str().as_bytes()].concat())
        };
        let _ = write!(
            out,
            "{shown} {kind} {:04o} {}:{} {}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
            meta.mtime()
        );
        if meta.mtime_nsec() != 0 {
            let _ = write!(out, ".{:09}", meta.mtime_nsec());
        }
        match kind {
            'f' => {
                let hash = content.get(&i).ok_or_else(|| TreeError {
                    path: path.clone(),
                    source: std::io::Error::other("not hashed"),
                })?;
                let _ = write!(out, " size={} sha256={}", meta.len(), hex::encode(hash));
            }
            'l' => {
                let target = std::fs::read_link(&path).map_err(tree_err(&path))?;
                let _ = write!(out, " -> {}", escape(target.as_os_str().as_bytes()));
            }
            'c' | 'b' => {
                let dev = meta.rdev();
                let _ = write!(out, " dev={},{}", rustix::fs::major(dev), rustix::fs::minor(dev));
            }
            _ => {}
        }
        if let Some(cap) = capability(&path) {
            let _ = write!(out, " xattr.security.capability={}", hex::encode(cap));
        }
        out.push('\n');
    }
    Ok(out)
}

/// `sha256:HEX` of [`dump_tree`].
pub fn tree_digest(tree: &Path) -> Result<String, TreeError> {
    let dump = dump_tree(tree)?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(dump.as_bytes()))))
}

fn walk(tree: &Path, rel: PathBuf, out: &mut Vec<(PathBuf, std::fs::Metadata)>) -> Result<(), TreeError> {
    let path = tree.join(&rel);
    let meta = std::fs::symlink_metadata(&path).map_err(tree_err(&path))?;
    let is_dir = meta.is_dir();
    out.push((rel.clone(), meta));
    if is_dir {
        for entry in std::fs::read_dir(&path).map_err(tree_err(&path))? {
            let entry = entry.map_err(tree_err(&path))?;
            walk(tree, rel.join(entry.file_name()), out)?;
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

fn capability(path: &Path) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    let n = rustix::fs::lgetxattr(path, "security.capability", &mut buf[..]).ok()?;
    Some(buf[..n].to_vec())
}

/// Path bytes as printable ASCII, `\xNN` for the rest (and for `\` itself).
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x21..=0x7e).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_lines_unambiguous() {
        assert_eq!(escape(b"/usr/share/a b\n\\c\xff"), "/usr/share/a\\x20b\\x0a\\x5cc\\xff");
    }
}
