//! Reproducible tar layers: planning (pure), writing over `Write`, reading entries back, and a text listing.
//!
//! A [`LayerPlan`] is the exact list of tar entries of a layer: sorted bytewise by path (a directory sorts
//! before its contents because it is a prefix of them), mtimes clamped to `SOURCE_DATE_EPOCH`, hard links
//! found by `(dev, ino)` (the first path in order carries the content, later ones are tar hard links), and
//! whiteouts as empty files. [`write_tar`] turns a plan into bytes with the `tar` crate: ustar headers with
//! numeric owners and empty user/group names, and PAX extended headers for what ustar cannot hold (paths and
//! link targets over 100 bytes, ids and sizes over the octal limits, `SCHILY.xattr.*` extended attributes).
//! Directory names end in `/`; the root itself is not an entry.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use crate::{
    error::Error,
    tree::{Entry, EntryKind, TreeIndex, TreePath},
};

/// Prefix of a whiteout file: `.wh.NAME` deletes `NAME` of the layers below.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of an opaque-directory marker: hides everything the layers below had in its directory.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// The whiteout entry that deletes `deleted`.
pub fn whiteout_path(deleted: &TreePath) -> TreePath {
    let mut name = WHITEOUT_PREFIX.to_vec();
    name.extend_from_slice(deleted.file_name());
    deleted.parent().unwrap_or_default().join(&name)
}

/// The opaque marker entry of directory `dir`.
pub fn opaque_path(dir: &TreePath) -> TreePath {
    dir.join(OPAQUE_MARKER)
}

/// What a layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerKind {
    /// A regular file whose `size` bytes of content are read from the source at the entry's path.
    File {
        size: u64,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// A tar hard link to an earlier entry of the same layer.
    Hardlink {
        target: TreePath,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// A whiteout or opaque marker: an empty regular file with a `.wh.` name.
    Whiteout,
}

/// One tar entry of a layer, fully decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    pub path: TreePath,
    pub kind: LayerKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Already clamped to the epoch.
    pub mtime: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// The ordered entries of one layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerPlan {
    pub entries: Vec<LayerEntry>,
}

/// `min(mtime, epoch)`, and never before 1970.
pub fn clamp_mtime(mtime: i64, epoch: u64) -> u64 {
    u64::try_from(mtime).unwrap_or(0).min(epoch)
}

/// Turns tree entries, given in layer order, into layer entries: clamps mtimes and makes every later path
/// of a multiply linked inode a hard link to the first one.
#[derive(Debug, Clone)]
pub struct Planner {
    epoch: u64,
    first_link: HashMap<(u64, u64), TreePath>,
}

impl Planner {
    pub fn new(epoch: u64) -> Self {
        Self { epoch, first_link: HashMap::new() }
    }

    /// The layer entry of `entry` at `path` (entries must come in bytewise path order).
    pub fn entry(&mut self, path: TreePath, e: Entry) -> LayerEntry {
        let kind = match e.kind {
            EntryKind::File { size, .. } => match e.inode {
                Some(ino) => match self.first_link.get(&ino) {
                    Some(target) => LayerKind::Hardlink { target: target.clone() },
                    None => {
                        self.first_link.insert(ino, path.clone());
                        LayerKind::File { size }
                    }
                },
                None => LayerKind::File { size },
            },
            EntryKind::Dir => LayerKind::Dir,
            EntryKind::Symlink { target } => LayerKind::Symlink { target },
            EntryKind::CharDevice { major, minor } => LayerKind::CharDevice { major, minor },
            EntryKind::BlockDevice { major, minor } => LayerKind::BlockDevice { major, minor },
            EntryKind::Fifo => LayerKind::Fifo,
        };
        LayerEntry {
            path,
            kind,
            mode: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            mtime: clamp_mtime(e.mtime, self.epoch),
            xattrs: e.xattrs,
        }
    }

    /// A whiteout or opaque marker entry at `path`: an empty file owned by root, mode 0, at the epoch.
    pub fn marker(&self, path: TreePath) -> LayerEntry {
        LayerEntry {
            path,
            kind: LayerKind::Whiteout,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: self.epoch,
            xattrs: BTreeMap::new(),
        }
    }
}

impl LayerPlan {
    /// A layer holding every entry of `index`.
    pub fn full(index: &TreeIndex, epoch: u64) -> Self {
        Self::new(index.entries.iter().map(|(p, e)| (p.clone(), e.clone())), std::iter::empty(), epoch)
    }

    /// A layer of the given tree entries plus whiteout/opaque marker paths (as made by [`whiteout_path`] and
    /// [`opaque_path`]), sorted, with hard links and clamped mtimes.
    pub fn new(
        entries: impl IntoIterator<Item = (TreePath, Entry)>,
        markers: impl IntoIterator<Item = TreePath>,
        epoch: u64,
    ) -> Self {
        let mut items: Vec<(TreePath, Option<Entry>)> = entries
            .into_iter()
            .map(|(p, e)| (p, Some(e)))
            .chain(markers.into_iter().map(|p| (p, None)))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        items.dedup_by(|a, b| a.0 == b.0);
        let mut planner = Planner::new(epoch);
        let entries = items
            .into_iter()
            .map(|(path, entry)| match entry {
                Some(e) => planner.entry(path, e),
                None => planner.marker(path),
            })
            .collect();
        Self { entries }
    }

    /// Total bytes of file content in the layer.
    pub fn content_size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                LayerKind::File { size } => size,
                _ => 0,
            })
            .sum()
    }
}

/// Where the content of a layer's regular files comes from.
pub trait ContentSource {
    /// Opens the content of the regular file at `path`.
    fn open(&self, path: &TreePath) -> io::Result<Box<dyn Read + '_>>;
}

/// Content read from a tree on disk.
#[derive(Debug, Clone)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl ContentSource for DirSource {
    fn open(&self, path: &TreePath) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(fs_err::File::open(self.root.join(path.to_path_buf()))?))
    }
}

/// In-memory content, by path (for tests and generated files).
impl ContentSource for BTreeMap<TreePath, Vec<u8>> {
    fn open(&self, path: &TreePath) -> io::Result<Box<dyn Read + '_>> {
        match self.get(path) {
            Some(data) => Ok(Box::new(&data[..])),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }
}

/// Largest ustar octal numbers: 7 digits for ids, 11 for sizes.
const USTAR_MAX_ID: u32 = 0o7_777_777;
const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;
/// Files up to this size are read whole before they are appended (one read, one copy).
const SLURP_LIMIT: u64 = 8 << 20;

fn put_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// The ustar header and PAX records of one entry.
fn header_for(e: &LayerEntry) -> (tar::Header, Vec<(String, Vec<u8>)>) {
    use tar::EntryType;
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let mut h = tar::Header::new_ustar();
    let mut name = e.path.as_bytes().to_vec();
    if e.kind == LayerKind::Dir {
        name.push(b'/');
    }
    if name.len() > 100 {
        pax.push(("path".into(), name.clone()));
    }
    put_field(&mut h.as_old_mut().name, &name);
    let (ty, size) = match &e.kind {
        LayerKind::File { size } => (EntryType::Regular, *size),
        LayerKind::Whiteout => (EntryType::Regular, 0),
        LayerKind::Dir => (EntryType::Directory, 0),
        LayerKind::Symlink { .. } => (EntryType::Symlink, 0),
        LayerKind::Hardlink { .. } => (EntryType::Link, 0),
        LayerKind::CharDevice { .. } => (EntryType::Char, 0),
        LayerKind::BlockDevice { .. } => (EntryType::Block, 0),
        LayerKind::Fifo => (EntryType::Fifo, 0),
    };
    h.set_entry_type(ty);
    let link: Option<&[u8]> = match &e.kind {
        LayerKind::Symlink { target } => Some(target),
        LayerKind::Hardlink { target } => Some(target.as_bytes()),
        _ => None,
    };
    if let Some(link) = link {
        if link.len() > 100 {
            pax.push(("linkpath".into(), link.to_vec()));
        }
        put_field(&mut h.as_old_mut().linkname, link);
    }
    h.set_mode(e.mode & 0o7777);
    for (key, id, field) in [("uid", e.uid, 0), ("gid", e.gid, 1)] {
        let v = if id > USTAR_MAX_ID {
            pax.push((key.into(), id.to_string().into_bytes()));
            0
        } else {
            id
        };
        if field == 0 {
            h.set_uid(v.into());
        } else {
            h.set_gid(v.into());
        }
    }
    if size > USTAR_MAX_SIZE {
        pax.push(("size".into(), size.to_string().into_bytes()));
        h.set_size(0);
    } else {
        h.set_size(size);
    }
    h.set_mtime(e.mtime);
    if let LayerKind::CharDevice { major, minor } | LayerKind::BlockDevice { major, minor } = e.kind {
        if let Some(u) = h.as_ustar_mut() {
            u.set_device_major(major);
            u.set_device_minor(minor);
        }
    }
    for (k, v) in &e.xattrs {
        pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
    }
    h.set_cksum();
    (h, pax)
}

/// Error raised inside the content reader, told apart from output errors after `io::copy`.
#[derive(Debug)]
struct ContentError(Error);

impl std::fmt::Display for ContentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ContentError {}

/// Reads exactly `remaining` bytes of a file whose size was recorded by the scan.
struct ExactReader<'a> {
    inner: io::BufReader<Box<dyn Read + 'a>>,
    path: &'a TreePath,
    expected: u64,
    remaining: u64,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want]).map_err(|source| {
            io::Error::other(ContentError(Error::ReadContent { path: self.path.to_string(), source }))
        })?;
        if n == 0 {
            return Err(io::Error::other(ContentError(Error::FileChanged {
                path: self.path.to_string(),
                expected: self.expected,
                found: self.expected - self.remaining,
            })));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn split_copy_error(e: io::Error) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<ContentError>()) {
        let inner = e.into_inner().expect("checked above");
        match inner.downcast::<ContentError>() {
            Ok(c) => c.0,
            Err(other) => Error::Write(io::Error::other(other)),
        }
    } else {
        Error::Write(e)
    }
}

/// Writes layer entries one by one as a tar stream.
pub struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
    buf: Vec<u8>,
}

impl<W: Write> std::fmt::Debug for TarWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarWriter").finish_non_exhaustive()
    }
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        Self { builder: tar::Builder::new(out), buf: Vec::new() }
    }

    /// Appends one entry; a regular file's content is read from `source`.
    pub fn append(&mut self, e: &LayerEntry, source: &dyn ContentSource) -> Result<(), Error> {
        let b = &mut self.builder;
        let (header, pax) = header_for(e);
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(Error::Write)?;
        }
        let size = match e.kind {
            LayerKind::File { size } => size,
            _ => 0,
        };
        if size == 0 {
            return b.append(&header, io::empty()).map_err(Error::Write);
        }
        let read_err = |source| Error::ReadContent { path: e.path.to_string(), source };
        let mut reader = source.open(&e.path).map_err(read_err)?;
        if size <= SLURP_LIMIT {
            let buf = &mut self.buf;
            buf.clear();
            reader.by_ref().take(size + 1).read_to_end(buf).map_err(read_err)?;
            if buf.len() as u64 != size {
                return Err(Error::FileChanged {
                    path: e.path.to_string(),
                    expected: size,
                    found: buf.len() as u64,
                });
            }
            b.append(&header, &buf[..]).map_err(Error::Write)
        } else {
            let mut exact = ExactReader {
                inner: io::BufReader::with_capacity(1 << 20, reader),
                path: &e.path,
                expected: size,
                remaining: size,
            };
            b.append(&header, &mut exact).map_err(split_copy_error)?;
            let mut probe = [0u8; 1];
            if exact.inner.read(&mut probe).map_err(read_err)? != 0 {
                return Err(Error::FileChanged { path: e.path.to_string(), expected: size, found: size + 1 });
            }
            Ok(())
        }
    }

    /// Writes the end-of-archive blocks and returns the output.
    pub fn finish(self) -> Result<W, Error> {
        self.builder.into_inner().map_err(Error::Write)
    }
}

/// Writes the layer as an uncompressed tar stream into `out` and returns `out`.
pub fn write_tar<W: Write>(plan: &LayerPlan, source: &dyn ContentSource, out: W) -> Result<W, Error> {
    let mut w = TarWriter::new(out);
    for e in &plan.entries {
        w.append(e, source)?;
    }
    w.finish()
}

/// A tar entry read back from a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    pub path: TreePath,
    /// The kind; for files the size (the content follows in the stream).
    pub kind: LayerKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Whether the entry is the root directory itself (`./`).
    pub is_root: bool,
}

impl ReadEntry {
    /// The whiteout meaning of the entry: `Some(Ok(dir))` for an opaque marker of `dir`,
    /// `Some(Err(path))` for a whiteout deleting `path`, `None` for a normal entry.
    pub fn whiteout(&self) -> Option<Result<TreePath, TreePath>> {
        let name = self.path.file_name();
        let parent = self.path.parent().unwrap_or_default();
        if name == OPAQUE_MARKER {
            Some(Ok(parent))
        } else {
            name.strip_prefix(WHITEOUT_PREFIX)
                .filter(|rest| !rest.is_empty())
                .map(|rest| Err(parent.join(rest)))
        }
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::BadLayer { reason: reason.into() }
}

/// Decodes the metadata of one entry of a tar stream (PAX path, linkpath, ids, mtime and xattrs honoured).
pub fn read_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<ReadEntry, Error> {
    use tar::EntryType;
    let raw_path = entry.path_bytes().into_owned();
    let path = TreePath::new(&raw_path)?;
    let mut mtime_pax: Option<i64> = None;
    let mut xattrs = BTreeMap::new();
    if let Some(exts) = entry.pax_extensions().map_err(|e| bad(e.to_string()))? {
        for ext in exts {
            let ext = ext.map_err(|e| bad(e.to_string()))?;
            let key = ext.key().map_err(|_| bad("PAX key is not UTF-8"))?;
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
            } else if key == "mtime" {
                let v = ext.value().map_err(|_| bad("PAX mtime is not UTF-8"))?;
                let secs = v.split('.').next().unwrap_or(v);
                mtime_pax = Some(secs.parse().map_err(|_| bad(format!("PAX mtime `{v}`")))?);
            }
        }
    }
    let h = entry.header();
    let num = |r: io::Result<u64>, what: &str| {
        r.map_err(|e| bad(format!("{what} of `{path}`: {e}")))
            .and_then(|v| u32::try_from(v).map_err(|_| bad(format!("{what} of `{path}` too large"))))
    };
    let mode = h.mode().map_err(|e| bad(format!("mode of `{path}`: {e}")))? & 0o7777;
    let uid = num(h.uid(), "uid")?;
    let gid = num(h.gid(), "gid")?;
    let mtime = match mtime_pax {
        Some(m) => m,
        None => {
            let m = h.mtime().map_err(|e| bad(format!("mtime of `{path}`: {e}")))?;
            i64::try_from(m).unwrap_or(i64::MAX)
        }
    };
    let link = || -> Result<Vec<u8>, Error> {
        entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .ok_or_else(|| bad(format!("link `{path}` has no target")))
    };
    let dev = |what| -> Result<(u32, u32), Error> {
        let major = h.device_major().ok().flatten();
        let minor = h.device_minor().ok().flatten();
        match (major, minor) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(bad(format!("{what} `{path}` has no device numbers"))),
        }
    };
    let kind = match h.entry_type() {
        EntryType::Regular | EntryType::Continuous => {
            let is_wh = path.file_name().starts_with(WHITEOUT_PREFIX);
            if is_wh {
                LayerKind::Whiteout
            } else {
                LayerKind::File { size: entry.size() }
            }
        }
        EntryType::Directory => LayerKind::Dir,
        EntryType::Symlink => LayerKind::Symlink { target: link()? },
        EntryType::Link => LayerKind::Hardlink { target: TreePath::new(link()?)? },
        EntryType::Char => {
            let (major, minor) = dev("character device")?;
            LayerKind::CharDevice { major, minor }
        }
        EntryType::Block => {
            let (major, minor) = dev("block device")?;
            LayerKind::BlockDevice { major, minor }
        }
        EntryType::Fifo => LayerKind::Fifo,
        other => return Err(bad(format!("unsupported entry type {other:?} for `{path}`"))),
    };
    Ok(ReadEntry { is_root: path.is_root(), path, kind, mode, uid, gid, mtime, xattrs })
}

/// Escapes bytes for the listing: printable ASCII as is, everything else as `\xNN`.
fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

/// A text listing of an uncompressed tar stream, one line per entry:
/// `TYPE MODE UID:GID SIZE MTIME PATH [-> SYMLINK | => HARDLINK | MAJOR,MINOR]`, with extended attributes on
/// indented lines below. Types: `-` file, `d` directory, `l` symlink, `h` hard link, `c`/`b` devices,
/// `p` fifo, `w` whiteout.
pub fn listing<R: Read>(tar_stream: R) -> Result<String, Error> {
    let mut archive = tar::Archive::new(tar_stream);
    let mut out = String::new();
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let e = read_entry(&mut entry)?;
        let (t, size, tail) = match &e.kind {
            LayerKind::File { size } => ('-', *size, String::new()),
            LayerKind::Whiteout => ('w', 0, String::new()),
            LayerKind::Dir => ('d', 0, String::new()),
            LayerKind::Symlink { target } => ('l', 0, format!(" -> {}", escape(target))),
            LayerKind::Hardlink { target } => ('h', 0, format!(" => {}", escape(target.as_bytes()))),
            LayerKind::CharDevice { major, minor } => ('c', 0, format!(" {major},{minor}")),
            LayerKind::BlockDevice { major, minor } => ('b', 0, format!(" {major},{minor}")),
            LayerKind::Fifo => ('p', 0, String::new()),
        };
        let name = escape(&entry.path_bytes());
        let _ = writeln!(out, "{t} {:04o} {}:{} {size} {} {name}{tail}", e.mode, e.uid, e.gid, e.mtime);
        for (k, v) in &e.xattrs {
            let _ = writeln!(out, "    xattr {k}={}", escape(v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TreePath {
        TreePath::new(s).unwrap()
    }

    fn file(size: u64, mode: u32) -> Entry {
        Entry::new(EntryKind::File { size, digest: None }, mode)
    }

    fn dir() -> Entry {
        Entry::new(EntryKind::Dir, 0o755)
    }

    /// Writes `plan` with contents `files` and returns the listing.
    fn roundtrip(plan: &LayerPlan, files: &BTreeMap<TreePath, Vec<u8>>) -> (Vec<u8>, String) {
        let tar = write_tar(plan, files, Vec::new()).unwrap();
        let list = listing(&tar[..]).unwrap();
        (tar, list)
    }

    fn names(list: &str) -> Vec<String> {
        list.lines()
            .filter(|l| !l.starts_with(' '))
            .map(|l| l.split(' ').nth(5).unwrap().to_string())
            .collect()
    }

    #[test]
    fn entries_are_sorted_bytewise_with_directories_first() {
        let mut idx = TreeIndex::new();
        for (path, e) in [
            ("b", file(0, 0o644)),
            ("a/z", file(0, 0o644)),
            ("a-b", file(0, 0o644)),
            ("a", dir()),
            ("a/c", dir()),
            ("a/c/d", file(0, 0o644)),
            ("B", file(0, 0o644)),
        ] {
            idx.insert(p(path), e);
        }
        let plan = LayerPlan::full(&idx, 10);
        let (_, list) = roundtrip(&plan, &BTreeMap::new());
        assert_eq!(names(&list), ["B", "a/", "a-b", "a/c/", "a/c/d", "a/z", "b"]);
        let paths: Vec<&[u8]> = plan.entries.iter().map(|e| e.path.as_bytes()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
    }

    #[test]
    fn long_paths_and_link_targets_use_pax() {
        let long_dir = "d".repeat(120);
        let long = format!("{long_dir}/{}", "f".repeat(79));
        assert_eq!(long.len(), 200);
        let mut idx = TreeIndex::new();
        idx.insert(p(&long_dir), dir());
        idx.insert(p(&long), file(5, 0o600));
        let target = format!("/{long}");
        idx.insert(p("link"), Entry::new(EntryKind::Symlink { target: target.clone().into_bytes() }, 0o777));
        let files = BTreeMap::from([(p(&long), b"hello".to_vec())]);
        let (tar, list) = roundtrip(&LayerPlan::full(&idx, 0), &files);
        assert!(list.contains(&format!("- 0600 0:0 5 0 {long}\n")), "{list}");
        assert!(list.contains(&format!("d 0755 0:0 0 0 {long_dir}/\n")), "{list}");
        assert!(list.contains(&format!("link -> {target}\n")), "{list}");
        // PAX records, not GNU long-name entries.
        assert!(tar.windows(5).any(|w| w == b"path="));
        assert!(!tar.windows(13).any(|w| w == b"././@LongLink"));
        // GNU tar agrees when it is present.
        if let Ok(out) = tar_tv(&tar) {
            assert!(out.contains(&long), "{out}");
        }
    }

    fn tar_tv(tar: &[u8]) -> io::Result<String> {
        let mut child = std::process::Command::new("tar")
            .args(["-tvf", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().unwrap().write_all(tar)?;
        let out = child.wait_with_output()?;
        assert!(out.status.success(), "GNU tar rejected the archive");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn xattrs_are_schily_pax_records() {
        let mut e = file(0, 0o755);
        let cap = vec![1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        e.xattrs.insert("security.capability".into(), cap.clone());
        e.xattrs.insert("user.note".into(), b"x=y".to_vec());
        let idx = TreeIndex { entries: BTreeMap::from([(p("usr/bin/ping"), e)]) };
        let (tar, _) = roundtrip(&LayerPlan::full(&idx, 0), &BTreeMap::new());
        let mut a = tar::Archive::new(&tar[..]);
        let mut entry = a.entries().unwrap().next().unwrap().unwrap();
        let read = read_entry(&mut entry).unwrap();
        assert_eq!(read.xattrs.get("security.capability"), Some(&cap));
        assert_eq!(read.xattrs.get("user.note").map(Vec::as_slice), Some(&b"x=y"[..]));
        let key = b"SCHILY.xattr.security.capability=";
        assert!(tar.windows(key.len()).any(|w| w == key));
    }

    #[test]
    fn hardlinks_point_at_the_first_path_in_order() {
        let mut idx = TreeIndex::new();
        for name in ["z", "a", "m"] {
            let mut e = file(3, 0o644);
            e.inode = Some((1, 42));
            idx.insert(p(name), e);
        }
        let files = BTreeMap::from([(p("a"), b"abc".to_vec())]);
        let (_, list) = roundtrip(&LayerPlan::full(&idx, 0), &files);
        assert_eq!(list, "- 0644 0:0 3 0 a\nh 0644 0:0 0 0 m => a\nh 0644 0:0 0 0 z => a\n");
    }

    #[test]
    fn mtimes_are_clamped_to_the_epoch() {
        let mut idx = TreeIndex::new();
        for (name, mtime) in [("new", 2_000_000_000), ("old", 1_000), ("neg", -5)] {
            let mut e = dir();
            e.mtime = mtime;
            idx.insert(p(name), e);
        }
        let (_, list) = roundtrip(&LayerPlan::full(&idx, 1_700_000_000), &BTreeMap::new());
        assert_eq!(list, "d 0755 0:0 0 0 neg/\nd 0755 0:0 0 1700000000 new/\nd 0755 0:0 0 1000 old/\n");
    }

    #[test]
    fn owners_stay_numeric_and_large_ids_use_pax() {
        let mut e = file(0, 0o4755);
        e.uid = 1000;
        e.gid = 5_000_000;
        let idx = TreeIndex { entries: BTreeMap::from([(p("x"), e)]) };
        let (tar, list) = roundtrip(&LayerPlan::full(&idx, 0), &BTreeMap::new());
        assert_eq!(list, "- 4755 1000:5000000 0 0 x\n");
        // Empty user and group names in the ustar header of the entry (after the PAX header + records).
        let h = &tar[1024..1536];
        assert_eq!(&h[257..263], b"ustar\0");
        assert!(h[265..265 + 64].iter().all(|&b| b == 0));
    }

    #[test]
    fn file_that_changed_size_is_an_error() {
        let idx = TreeIndex { entries: BTreeMap::from([(p("f"), file(4, 0o644))]) };
        let files = BTreeMap::from([(p("f"), b"abc".to_vec())]);
        let err = write_tar(&LayerPlan::full(&idx, 0), &files, Vec::new()).unwrap_err();
        assert!(matches!(err, Error::FileChanged { expected: 4, found: 3, .. }), "{err}");
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(whiteout_path(&p("etc/motd")), p("etc/.wh.motd"));
        assert_eq!(whiteout_path(&p("top")), p(".wh.top"));
        assert_eq!(opaque_path(&p("var/cache")), p("var/cache/.wh..wh..opq"));
    }
}
