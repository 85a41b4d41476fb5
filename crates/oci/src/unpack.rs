//! Applying layers (uncompressed tar streams) in order, honouring whiteouts: into a [`TreeIndex`] only
//! ([`index_layers`], pure over `Read`), or onto a directory as well ([`unpack_layers`], for `FROM` an image).
//!
//! Whiteout semantics follow the image spec: `.wh.NAME` removes `NAME` of the layers below and
//! `.wh..wh..opq` hides everything the layers below had in its directory; neither touches what the same
//! layer adds. An entry that is not a directory replaces whatever was at its path, including a whole
//! directory. Entries are refused when their path climbs out of the destination (`..`) or passes through a
//! symlink; hard links must point at an existing non-directory inside the tree.

use std::{
    collections::HashSet,
    ffi::OsStr,
    io::{self, Read, Write},
    os::unix::ffi::OsStrExt,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use sha2::Digest as _;

use crate::{
    error::Error,
    layer::{read_entry, LayerKind, ReadEntry},
    tree::{Entry, EntryKind, Sha256, TreeIndex, TreePath},
};

/// How to write unpacked entries to disk.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Set numeric owners from the layers (needs root). When false, files belong to the caller.
    pub same_owner: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self { same_owner: true }
    }
}

/// Replays `layers` (uncompressed tar streams, lowest first) into an index.
pub fn index_layers<R: Read>(layers: impl IntoIterator<Item = R>) -> Result<TreeIndex, Error> {
    let mut index = TreeIndex::new();
    for layer in layers {
        apply_layer(layer, &mut index, None)?;
    }
    Ok(index)
}

/// Unpacks `layers` (uncompressed tar streams, lowest first) onto `dest` (created if missing) and returns the
/// index of the result (with content digests, ready to diff a child tree against).
pub fn unpack_layers<R: Read>(
    layers: impl IntoIterator<Item = R>,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<TreeIndex, Error> {
    fs_err::create_dir_all(dest)?;
    let mut index = TreeIndex::new();
    let mut disk = Disk {
        root: dest.to_path_buf(),
        opts: opts.clone(),
        safe_dirs: HashSet::new(),
        buf: vec![0; 1 << 20],
    };
    for layer in layers {
        apply_layer(layer, &mut index, Some(&mut disk))?;
    }
    Ok(index)
}

fn bad(reason: impl Into<String>) -> Error {
    Error::BadLayer { reason: reason.into() }
}

/// Removes from the index what the layers below put under `path` (and `path` itself unless `keep_self`),
/// keeping everything this layer wrote.
fn hide_lower(index: &mut TreeIndex, path: &TreePath, keep_self: bool, this_layer: &HashSet<TreePath>) {
    let mut doomed: Vec<TreePath> =
        index.descendants(path).map(|(p, _)| p).filter(|p| !this_layer.contains(*p)).cloned().collect();
    if !keep_self && !this_layer.contains(path) {
        doomed.push(path.clone());
    }
    for p in doomed {
        index.entries.remove(&p);
    }
}

fn apply_layer<R: Read>(layer: R, index: &mut TreeIndex, mut disk: Option<&mut Disk>) -> Result<(), Error> {
    let mut archive = tar::Archive::new(layer);
    let mut this_layer: HashSet<TreePath> = HashSet::new();
    let mut dir_times: Vec<(TreePath, i64)> = Vec::new();
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let e = read_entry(&mut entry)?;
        if e.is_root {
            continue;
        }
        match e.whiteout() {
            Some(Ok(dir)) => {
                hide_lower(index, &dir, true, &this_layer);
                if let Some(d) = disk.as_deref_mut() {
                    d.hide_lower_children(&dir, &this_layer)?;
                }
                continue;
            }
            Some(Err(path)) => {
                if !this_layer.contains(&path) {
                    hide_lower(index, &path, false, &this_layer);
                    if let Some(d) = disk.as_deref_mut() {
                        d.remove(&path)?;
                    }
                }
                continue;
            }
            None => {}
        }
        let path = e.path.clone();
        // Implicit parents.
        for anc in path.ancestors() {
            if !index.get(&anc).is_some_and(Entry::is_dir) {
                index.remove_tree(&anc);
                index.insert(anc.clone(), Entry::new(EntryKind::Dir, 0o755));
                this_layer.insert(anc);
            }
        }
        if let Some(d) = disk.as_deref_mut() {
            d.prepare(&path, &e.kind)?;
        }
        let kind = match &e.kind {
            LayerKind::File { size } => {
                let digest = match disk.as_deref_mut() {
                    Some(d) => d.write_file(&path, &mut entry, *size)?,
                    None => hash_content(&path, &mut entry, *size)?,
                };
                EntryKind::File { size: *size, digest: Some(digest) }
            }
            LayerKind::Hardlink { target } => {
                let Some(t) = index.get(target).filter(|t| matches!(t.kind, EntryKind::File { .. })) else {
                    return Err(Error::UnsafeEntry {
                        path: path.to_string(),
                        reason: "hard link to a path that is not a regular file of the tree",
                    });
                };
                let t = t.clone();
                if let Some(d) = disk.as_deref_mut() {
                    d.hard_link(target, &path)?;
                }
                // A hard link shares the inode: its metadata is the target's.
                index.remove_tree(&path);
                index.insert(path.clone(), Entry { inode: None, ..t });
                this_layer.insert(path);
                continue;
            }
            LayerKind::Dir => EntryKind::Dir,
            LayerKind::Symlink { target } => EntryKind::Symlink { target: target.clone() },
            LayerKind::CharDevice { major, minor } => EntryKind::CharDevice { major: *major, minor: *minor },
            LayerKind::BlockDevice { major, minor } => {
                EntryKind::BlockDevice { major: *major, minor: *minor }
            }
            LayerKind::Fifo => EntryKind::Fifo,
            LayerKind::Whiteout => return Err(bad(format!("invalid whiteout name `{path}`"))),
        };
        if let Some(d) = disk.as_deref_mut() {
            d.create_special(&path, &e.kind, e.mode)?;
            d.set_metadata(&path, &e)?;
            if e.kind == LayerKind::Dir {
                dir_times.push((path.clone(), e.mtime));
            }
        }
        let new = Entry {
            kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
            xattrs: e.xattrs,
            inode: None,
        };
        if !new.is_dir() {
            index.remove_descendants(&path);
        }
        index.insert(path.clone(), new);
        this_layer.insert(path);
    }
    // Read to the end so that a verifying reader below checks the blob's digest.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(crate::layout::unwrap_verify)?;
    if let Some(d) = disk {
        for (path, mtime) in dir_times.iter().rev() {
            d.set_mtime(path, *mtime)?;
        }
    }
    Ok(())
}

fn hash_content<R: Read>(path: &TreePath, r: &mut R, size: u64) -> Result<Sha256, Error> {
    let mut h = sha2::Sha256::new();
    let n = io::copy(r, &mut h).map_err(|e| bad(format!("content of `{path}`: {e}")))?;
    if n != size {
        return Err(bad(format!("`{path}` is truncated")));
    }
    Ok(Sha256(h.finalize().into()))
}

/// The destination directory of an unpack.
struct Disk {
    root: PathBuf,
    opts: UnpackOptions,
    /// Directories already checked to be real directories (not symlinks) inside the root.
    safe_dirs: HashSet<TreePath>,
    buf: Vec<u8>,
}

fn io_at(abs: &Path, e: io::Error) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{}: {e}", abs.display())))
}

fn errno(abs: &Path, what: &str, e: rustix::io::Errno) -> Error {
    Error::Io(io::Error::new(io::Error::from(e).kind(), format!("{what} {}: {e}", abs.display())))
}

impl Disk {
    fn abs(&self, p: &TreePath) -> PathBuf {
        self.root.join(p.to_path_buf())
    }

    /// Makes sure every ancestor of `path` is a real directory below the root, creating missing ones.
    fn check_parents(&mut self, path: &TreePath) -> Result<(), Error> {
        for anc in path.ancestors() {
            if self.safe_dirs.contains(&anc) {
                continue;
            }
            let abs = self.abs(&anc);
            match std::fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::UnsafeEntry {
                        path: path.to_string(),
                        reason: "a parent directory is a symlink",
                    })
                }
                Ok(_) => {
                    return Err(Error::UnsafeEntry {
                        path: path.to_string(),
                        reason: "a parent directory is not a directory",
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs_err::create_dir(&abs)?;
                }
                Err(e) => return Err(io_at(&abs, e)),
            }
            self.safe_dirs.insert(anc);
        }
        Ok(())
    }

    /// Removes `path` (and everything below it) if it exists.
    fn remove(&mut self, path: &TreePath) -> Result<(), Error> {
        self.check_parents(path)?;
        let abs = self.abs(path);
        match std::fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() => {
                fs_err::remove_dir_all(&abs)?;
                self.safe_dirs.clear();
            }
            Ok(_) => fs_err::remove_file(&abs)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&abs, e)),
        }
        Ok(())
    }

    /// Removes what the layers below put in directory `dir`, keeping this layer's entries.
    fn hide_lower_children(&mut self, dir: &TreePath, this_layer: &HashSet<TreePath>) -> Result<(), Error> {
        self.check_parents(dir)?;
        let abs = self.abs(dir);
        let Ok(rd) = std::fs::read_dir(&abs) else {
            return Ok(());
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        for d in rd {
            let d = d?;
            names.push(d.file_name().as_bytes().to_vec());
        }
        for name in names {
            let child = dir.join(&name);
            if this_layer.contains(&child) {
                let is_dir = std::fs::symlink_metadata(self.abs(&child)).is_ok_and(|m| m.is_dir());
                if is_dir {
                    self.hide_lower_children(&child, this_layer)?;
                }
            } else {
                self.remove(&child)?;
            }
        }
        Ok(())
    }

    /// Clears the way for a new entry of `kind` at `path`.
    fn prepare(&mut self, path: &TreePath, kind: &LayerKind) -> Result<(), Error> {
        self.check_parents(path)?;
        let abs = self.abs(path);
        match std::fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() && *kind == LayerKind::Dir => {}
            Ok(m) if m.is_dir() => {
                fs_err::remove_dir_all(&abs)?;
                self.safe_dirs.clear();
            }
            Ok(_) => fs_err::remove_file(&abs)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&abs, e)),
        }
        Ok(())
    }

    fn write_file<R: Read>(&mut self, path: &TreePath, r: &mut R, size: u64) -> Result<Sha256, Error> {
        let abs = self.abs(path);
        let mut f = fs_err::File::create(&abs)?;
        let mut h = sha2::Sha256::new();
        let mut n_total = 0u64;
        loop {
            let n = r.read(&mut self.buf).map_err(|e| bad(format!("content of `{path}`: {e}")))?;
            if n == 0 {
                break;
            }
            h.update(&self.buf[..n]);
            f.write_all(&self.buf[..n])?;
            n_total += n as u64;
        }
        if n_total != size {
            return Err(bad(format!("`{path}` is truncated")));
        }
        Ok(Sha256(h.finalize().into()))
    }

    fn hard_link(&mut self, target: &TreePath, path: &TreePath) -> Result<(), Error> {
        self.check_parents(target)?;
        let t = self.abs(target);
        let meta = fs_err::symlink_metadata(&t)?;
        if !meta.is_file() {
            return Err(Error::UnsafeEntry {
                path: path.to_string(),
                reason: "hard link target is not a regular file",
            });
        }
        fs_err::hard_link(&t, self.abs(path))?;
        Ok(())
    }

    fn create_special(&mut self, path: &TreePath, kind: &LayerKind, mode: u32) -> Result<(), Error> {
        use rustix::fs::{FileType, Mode, CWD};
        let abs = self.abs(path);
        let mk = |ft: FileType, dev: u64| {
            rustix::fs::mknodat(CWD, &abs, ft, Mode::from_raw_mode(mode & 0o7777), dev)
                .map_err(|e| errno(&abs, "creating", e))
        };
        match kind {
            LayerKind::Dir => {
                if !abs.is_dir() {
                    fs_err::create_dir(&abs)?;
                }
            }
            LayerKind::Symlink { target } => {
                fs_err::os::unix::fs::symlink(OsStr::from_bytes(target), &abs)?;
            }
            LayerKind::CharDevice { major, minor } => {
                mk(FileType::CharacterDevice, rustix::fs::makedev(*major, *minor))?;
            }
            LayerKind::BlockDevice { major, minor } => {
                mk(FileType::BlockDevice, rustix::fs::makedev(*major, *minor))?;
            }
            LayerKind::Fifo => mk(FileType::Fifo, 0)?,
            LayerKind::File { .. } | LayerKind::Hardlink { .. } | LayerKind::Whiteout => {}
        }
        Ok(())
    }

    fn set_metadata(&mut self, path: &TreePath, e: &ReadEntry) -> Result<(), Error> {
        let abs = self.abs(path);
        let is_link = matches!(e.kind, LayerKind::Symlink { .. });
        if self.opts.same_owner {
            fs_err::os::unix::fs::lchown(&abs, Some(e.uid), Some(e.gid))?;
        }
        // After chown, which clears set-id bits and file capabilities.
        if !is_link {
            fs_err::set_permissions(&abs, std::fs::Permissions::from_mode(e.mode & 0o7777))?;
        }
        for (name, value) in &e.xattrs {
            rustix::fs::lsetxattr(&abs, name.as_str(), value, rustix::fs::XattrFlags::empty())
                .map_err(|err| errno(&abs, &format!("setting xattr {name} on"), err))?;
        }
        if e.kind != LayerKind::Dir {
            self.set_mtime(path, e.mtime)?;
        }
        Ok(())
    }

    fn set_mtime(&mut self, path: &TreePath, mtime: i64) -> Result<(), Error> {
        use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
        let abs = self.abs(path);
        let t = Timespec { tv_sec: mtime, tv_nsec: 0 };
        let times = Timestamps { last_access: t, last_modification: t };
        rustix::fs::utimensat(CWD, &abs, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| errno(&abs, "setting the mtime of", e))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::layer::{opaque_path, whiteout_path, write_tar, LayerPlan};

    fn p(s: &str) -> TreePath {
        TreePath::new(s).unwrap()
    }

    fn file(content: &str) -> Entry {
        Entry::new(EntryKind::File { size: content.len() as u64, digest: None }, 0o644)
    }

    fn dir() -> Entry {
        Entry::new(EntryKind::Dir, 0o755)
    }

    /// A tar layer of `files` (path → content; a trailing `/` makes a directory) and `markers`.
    fn layer(files: &[(&str, &str)], markers: &[TreePath]) -> Vec<u8> {
        let mut content = BTreeMap::new();
        let entries: Vec<(TreePath, Entry)> = files
            .iter()
            .map(|(path, data)| {
                if let Some(d) = path.strip_suffix('/') {
                    (p(d), dir())
                } else {
                    content.insert(p(path), data.as_bytes().to_vec());
                    (p(path), file(data))
                }
            })
            .collect();
        let plan = LayerPlan::new(entries, markers.to_vec(), 0);
        write_tar(&plan, &content, Vec::new()).unwrap()
    }

    fn paths(index: &TreeIndex) -> Vec<String> {
        index.entries.keys().map(ToString::to_string).collect()
    }

    fn lower() -> Vec<u8> {
        layer(
            &[
                ("etc/", ""),
                ("etc/a", "a"),
                ("etc/b", "b"),
                ("var/", ""),
                ("var/cache/", ""),
                ("var/cache/old", "o"),
                ("var/cache/sub/", ""),
                ("var/cache/sub/deep", "d"),
                ("srv", "was a file"),
            ],
            &[],
        )
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers_only() {
        // `-early` sorts before the opaque marker of its directory but belongs to the same layer.
        let upper = layer(
            &[
                ("var/cache/", ""),
                ("var/cache/-early", "e"),
                ("var/cache/new", "n"),
                ("srv/", ""),
                ("srv/www", "w"),
            ],
            &[whiteout_path(&p("etc/a")), opaque_path(&p("var/cache"))],
        );
        assert!(b"-early".as_slice() < b".wh..wh..opq".as_slice());
        let index = index_layers([&lower()[..], &upper[..]]).unwrap();
        assert_eq!(
            paths(&index),
            ["etc", "etc/b", "srv", "srv/www", "var", "var/cache", "var/cache/-early", "var/cache/new"]
        );
        let b = &index.entries[&p("etc/b")];
        assert_eq!(b.kind, EntryKind::File { size: 1, digest: Some(Sha256::of(b"b")) });
    }

    #[test]
    fn file_replacing_a_directory_hides_its_contents() {
        let upper = layer(&[("var/cache", "now a file")], &[]);
        let index = index_layers([&lower()[..], &upper[..]]).unwrap();
        assert!(!paths(&index).iter().any(|x| x.starts_with("var/cache/")));
        assert!(matches!(index.entries[&p("var/cache")].kind, EntryKind::File { .. }));
    }

    #[test]
    fn unpack_matches_the_index() {
        let upper = layer(
            &[("var/cache/", ""), ("var/cache/-early", "e"), ("var/cache/new", "n")],
            &[whiteout_path(&p("etc/a")), opaque_path(&p("var/cache"))],
        );
        let dir = tempfile::tempdir().unwrap();
        let index = unpack_layers([&lower()[..], &upper[..]], dir.path(), &UnpackOptions::default()).unwrap();
        let on_disk = crate::scan::scan_tree(
            dir.path(),
            &crate::scan::ScanOptions { hash_contents: true, ..Default::default() },
        )
        .unwrap()
        .index;
        assert_eq!(paths(&on_disk), paths(&index));
        assert_eq!(fs_err::read(dir.path().join("var/cache/new")).unwrap(), b"n");
        assert_eq!(fs_err::read(dir.path().join("var/cache/-early")).unwrap(), b"e");
        assert!(!dir.path().join("etc/a").exists());
        assert!(!dir.path().join("var/cache/sub").exists());
    }

    #[test]
    fn entries_through_symlinks_are_refused() {
        let mut content = BTreeMap::new();
        content.insert(p("evil/passwd"), b"x".to_vec());
        let first = write_tar(
            &LayerPlan::new(
                [(p("evil"), Entry::new(EntryKind::Symlink { target: b"/etc".to_vec() }, 0o777))],
                [],
                0,
            ),
            &content,
            Vec::new(),
        )
        .unwrap();
        let second =
            write_tar(&LayerPlan::new([(p("evil/passwd"), file("x"))], [], 0), &content, Vec::new()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err =
            unpack_layers([&first[..], &second[..]], dir.path(), &UnpackOptions::default()).unwrap_err();
        assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    }

    #[test]
    fn hard_link_to_a_missing_target_is_refused() {
        let mut e = file("x");
        e.inode = Some((1, 1));
        let plan = LayerPlan::new([(p("a"), e.clone()), (p("b"), e)], [], 0);
        let content = BTreeMap::from([(p("a"), b"x".to_vec())]);
        let tar = write_tar(&plan, &content, Vec::new()).unwrap();
        // Drop the first entry (header + one data block): `b` now links to nothing.
        let err = index_layers([&tar[1024..]]).unwrap_err();
        assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    }
}
