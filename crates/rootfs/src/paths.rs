//! Paths inside a root tree: archive member names made canonical (`./usr/bin/` is `usr/bin`), and
//! resolution of a path the way the tree's own programs would see it after `chroot` — symlinks in it are
//! followed, absolute ones from the tree's root, and `..` never climbs out of the tree.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};

/// The canonical form of an archive member name: relative, no `.` or empty components, no trailing slash;
/// the tree's root is `""`. `None` when the name climbs with `..`.
pub fn normalize_member(name: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// How dpkg spells a canonical member in its `.list` files: `/.` for the root, `/usr/bin` otherwise.
pub fn dpkg_path(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        "/.".to_owned()
    } else {
        format!("/{}", rel.display())
    }
}

/// Most symlinks followed while resolving one path, as the kernel's limit.
const MAX_LINKS: usize = 40;

/// The host path of `rel` inside the tree at `root`, following symlinks met on the way as the tree would
/// see them (absolute targets restart at `root`, `..` stops at `root`). The last component is followed too
/// when `follow_last`; missing components are kept as they are.
pub fn resolve_in_root(root: &Path, rel: &Path, follow_last: bool) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components(rel).collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        if pending.is_empty() && !follow_last {
            resolved.push(part);
            break;
        }
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links at {}",
                        candidate.display()
                    )));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(c);
                }
            }
            Ok(_) => resolved.push(part),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                resolved.push(part)
            }
            Err(e) => return Err(e),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(p) => Some(p.to_owned()),
        Component::ParentDir => Some(OsStr::new("..").to_owned()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_made_canonical() {
        assert_eq!(normalize_member(Path::new("./usr/bin/")), Some(PathBuf::from("usr/bin")));
        assert_eq!(normalize_member(Path::new("./")), Some(PathBuf::new()));
        assert_eq!(normalize_member(Path::new("/etc//x")), Some(PathBuf::from("etc/x")));
        assert_eq!(normalize_member(Path::new("./a/../../etc")), None);
        assert_eq!(dpkg_path(Path::new("")), "/.");
        assert_eq!(dpkg_path(Path::new("usr/bin")), "/usr/bin");
    }

    #[test]
    fn resolution_stays_in_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("usr/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let r = |p: &str, follow| resolve_in_root(root, Path::new(p), follow).unwrap();
        assert_eq!(r("bin/sh", false), root.join("usr/bin/sh"));
        assert_eq!(r("bin", false), root.join("bin"));
        assert_eq!(r("bin", true), root.join("usr/bin"));
        assert_eq!(r("abs/bin/x", false), root.join("usr/bin/x"));
        assert_eq!(r("usr/up/etc/passwd", false), root.join("etc/passwd"));
        assert_eq!(r("missing/dir/x", false), root.join("missing/dir/x"));
        assert!(resolve_in_root(root, Path::new("loop/x"), false).is_err());
    }
}
