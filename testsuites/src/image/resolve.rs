//! Path resolution inside an image root, the same for every kind of artifact: symbolic links are followed
//! component by component, an absolute target starts again at the image's root and `..` stops at the root, so
//! no path ever leads outside the image (as in a chroot). [`join_link`] is the lexical form of one link.

use super::{Entry, EntryKind, ImageError, RootFs};

/// Symbolic links followed for one path before giving up (Linux's limit).
pub const MAX_SYMLINKS: usize = 40;

/// The components of a path that name something: no empty ones, no `.`.
fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

fn canonical(parts: &[String]) -> String {
    format!("/{}", parts.join("/"))
}

/// Where the symlink at `link` (an absolute path) with `target` points, worked out lexically: a relative
/// target starts in the link's directory, an absolute one at the image root, `..` never climbs above the root.
/// E.g. `join_link("/lib", "usr/lib")` is `/usr/lib`, `join_link("/usr/bin/x", "../../../y")` is `/y`.
/// Symlinks among the components are not followed: [`RootFs::canonicalize`] does that.
pub fn join_link(link: &str, target: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        parts.extend(components(link));
        parts.pop();
    }
    for c in components(target) {
        if c == ".." {
            parts.pop();
        } else {
            parts.push(c);
        }
    }
    format!("/{}", parts.join("/"))
}

/// Resolves `path` in `fs`: every symlink in a parent component is followed, the last one only when
/// `follow_last`. `None` when a component is missing, a parent is not a directory, or a link is empty.
pub(crate) fn resolve<R: RootFs + ?Sized>(
    fs: &R,
    path: &str,
    follow_last: bool,
) -> Result<Option<Entry>, ImageError> {
    if !path.starts_with('/') {
        return Err(ImageError::NotAbsolute { artifact: fs.artifact().into(), path: path.into() });
    }
    // Components still to walk, the next one last.
    let mut pending: Vec<String> = components(path).rev().map(str::to_owned).collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    let mut current: Option<Entry> = None;
    while let Some(c) = pending.pop() {
        if c == ".." {
            done.pop();
            current = None;
            continue;
        }
        done.push(c);
        let Some(entry) = fs.lookup(&canonical(&done))? else {
            return Ok(None);
        };
        let is_last = pending.is_empty();
        match &entry.kind {
            EntryKind::Symlink { target } if !is_last || follow_last => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ImageError::TooManySymlinks {
                        artifact: fs.artifact().into(),
                        path: path.into(),
                        limit: MAX_SYMLINKS,
                    });
                }
                if target.is_empty() {
                    return Ok(None);
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                pending.extend(components(target).rev().map(str::to_owned));
                current = None;
            }
            EntryKind::Dir => current = Some(entry),
            _ if !is_last => return Ok(None),
            _ => current = Some(entry),
        }
    }
    match current {
        Some(e) => Ok(Some(e)),
        None => fs.lookup(&canonical(&done)),
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::Path};

    use super::*;

    /// A root file system held in a map, for the resolution rules alone.
    struct MemFs(BTreeMap<String, Entry>);

    fn entry(path: &str, kind: EntryKind) -> (String, Entry) {
        let size = match &kind {
            EntryKind::Symlink { target } => target.len() as u64,
            _ => 0,
        };
        (path.to_owned(), Entry { path: path.to_owned(), kind, mode: 0o755, uid: 0, gid: 0, size, mtime: 0 })
    }

    fn link(path: &str, target: &str) -> (String, Entry) {
        entry(path, EntryKind::Symlink { target: target.to_owned() })
    }

    impl RootFs for MemFs {
        fn artifact(&self) -> &Path {
            Path::new("mem")
        }
        fn entries(&self) -> Result<Vec<Entry>, ImageError> {
            Ok(self.0.values().cloned().collect())
        }
        fn lookup(&self, path: &str) -> Result<Option<Entry>, ImageError> {
            Ok(self.0.get(path).cloned())
        }
        fn list_dir(&self, _: &str) -> Result<Vec<Entry>, ImageError> {
            unreachable!()
        }
        fn read_file(&self, e: &Entry) -> Result<Vec<u8>, ImageError> {
            Ok(e.path.as_bytes().to_vec())
        }
    }

    /// A merged-/usr tree with links of every shape.
    fn fs() -> MemFs {
        MemFs(BTreeMap::from([
            entry("/", EntryKind::Dir),
            entry("/usr", EntryKind::Dir),
            entry("/usr/lib", EntryKind::Dir),
            entry("/usr/lib/libc.so.6", EntryKind::File),
            entry("/etc", EntryKind::Dir),
            entry("/etc/passwd", EntryKind::File),
            link("/lib", "usr/lib"),
            link("/etc/abs", "/usr/lib/libc.so.6"),
            link("/etc/escape", "../../../../etc/passwd"),
            link("/etc/chain", "abs"),
            link("/etc/dangling", "nowhere"),
            link("/etc/loop", "loop"),
            link("/etc/empty", ""),
            link("/etc/dot", "."),
        ]))
    }

    fn followed(path: &str) -> Option<String> {
        fs().canonicalize(path).unwrap()
    }

    #[test]
    fn links_are_followed_inside_the_image() {
        assert_eq!(followed("/lib/libc.so.6").as_deref(), Some("/usr/lib/libc.so.6"));
        assert_eq!(followed("/etc/abs").as_deref(), Some("/usr/lib/libc.so.6"));
        assert_eq!(followed("/etc/chain").as_deref(), Some("/usr/lib/libc.so.6"));
        // `..` stops at the image root instead of leaving it.
        assert_eq!(followed("/etc/escape").as_deref(), Some("/etc/passwd"));
        assert_eq!(followed("/../../etc/./passwd").as_deref(), Some("/etc/passwd"));
        // As in the kernel, `..` applies after following /lib: /lib/.. is /usr, not /.
        assert_eq!(followed("/lib/..").as_deref(), Some("/usr"));
        assert_eq!(followed("/lib/../etc"), None);
        assert_eq!(followed("/usr/lib/..").as_deref(), Some("/usr"));
        assert_eq!(followed("/etc/dot/passwd").as_deref(), Some("/etc/passwd"));
        assert_eq!(followed("/").as_deref(), Some("/"));
    }

    #[test]
    fn missing_dangling_and_not_a_directory_give_none() {
        assert_eq!(followed("/etc/dangling"), None);
        assert_eq!(followed("/etc/empty"), None);
        assert_eq!(followed("/etc/passwd/x"), None);
        assert_eq!(followed("/etc/passwd/.."), None);
        assert_eq!(followed("/nope/passwd"), None);
    }

    #[test]
    fn metadata_keeps_the_last_link_but_follows_parents() {
        let fs = fs();
        let m = fs.metadata("/etc/dangling").unwrap().unwrap();
        assert_eq!(m.symlink_target(), Some("nowhere"));
        let m = fs.metadata("/lib").unwrap().unwrap();
        assert_eq!(m.path, "/lib");
        assert_eq!(m.symlink_target(), Some("usr/lib"));
        let m = fs.metadata("/lib/libc.so.6").unwrap().unwrap();
        assert_eq!(m.path, "/usr/lib/libc.so.6");
        assert_eq!(fs.read("/lib/libc.so.6").unwrap(), b"/usr/lib/libc.so.6");
    }

    #[test]
    fn loops_and_relative_paths_are_errors() {
        let err = fs().canonicalize("/etc/loop").unwrap_err();
        assert!(matches!(err, ImageError::TooManySymlinks { limit: MAX_SYMLINKS, .. }), "{err}");
        // lstat of a loop is fine: the link is not followed.
        assert!(fs().metadata("/etc/loop").unwrap().is_some());
        let err = fs().metadata("etc/passwd").unwrap_err();
        assert!(matches!(err, ImageError::NotAbsolute { .. }), "{err}");
    }

    #[test]
    fn reading_a_directory_or_a_missing_file_is_a_typed_error() {
        let err = fs().read("/lib").unwrap_err();
        assert!(matches!(err, ImageError::WrongKind { kind: "directory", .. }), "{err}");
        let err = fs().read("/etc/dangling").unwrap_err();
        assert!(matches!(&err, ImageError::NotFound { path, .. } if path == "/etc/dangling"), "{err}");
        assert!(err.to_string().starts_with("mem: "), "names the artifact: {err}");
    }

    #[test]
    fn lexical_join() {
        assert_eq!(join_link("/lib", "usr/lib"), "/usr/lib");
        assert_eq!(join_link("/usr/bin/python3", "python3.11"), "/usr/bin/python3.11");
        assert_eq!(join_link("/usr/bin/x", "../../../y"), "/y");
        assert_eq!(
            join_link("/etc/localtime", "/usr/share/zoneinfo/./Etc/UTC"),
            "/usr/share/zoneinfo/Etc/UTC"
        );
        assert_eq!(join_link("/a", "/"), "/");
    }
}
