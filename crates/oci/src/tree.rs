//! In-memory index of a root file system tree: paths, entry kinds and the metadata a layer records.
//!
//! Both sides of an image build meet here: a tree on disk is scanned into a [`TreeIndex`]
//! (see [`crate::scan`]), and a parent image's layers are replayed into one (see [`crate::unpack`]).
//! The layer planner and the diff work on indexes only, so they are pure and testable without a disk.

use std::{collections::BTreeMap, fmt, ops::Bound, os::unix::ffi::OsStrExt, path::PathBuf};

use crate::error::Error;

/// A normalized path inside a tree: bytes, relative, `/`-separated, without `.`/`..` or empty components.
/// The root of the tree is the empty path. Ordering is bytewise on the whole path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TreePath(Vec<u8>);

impl TreePath {
    /// The root of the tree (the empty path).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Normalizes `raw` (leading `/` or `./`, repeated or trailing `/` and `.` components are dropped) and
    /// rejects `..` components and NUL bytes.
    pub fn new(raw: impl AsRef<[u8]>) -> Result<Self, Error> {
        let raw = raw.as_ref();
        let invalid = |reason: &'static str| Error::InvalidPath {
            path: String::from_utf8_lossy(raw).into_owned(),
            reason,
        };
        if raw.contains(&0) {
            return Err(invalid("contains a NUL byte"));
        }
        let mut out = Vec::with_capacity(raw.len());
        for comp in raw.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => return Err(invalid("contains a `..` component")),
                c => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(c);
                }
            }
        }
        Ok(Self(out))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path as a relative [`PathBuf`] (empty for the root).
    pub fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(std::ffi::OsStr::from_bytes(&self.0))
    }

    /// The parent directory (the root for a top-level entry); `None` for the root itself.
    pub fn parent(&self) -> Option<TreePath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => Self(self.0[..i].to_vec()),
            None => Self::root(),
        })
    }

    /// The last component (empty for the root).
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// This path with one more component. `name` must be a single component (no `/`).
    pub fn join(&self, name: &[u8]) -> TreePath {
        debug_assert!(!name.contains(&b'/') && !name.is_empty());
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        Self(v)
    }

    /// Whether `self` lies strictly below the directory `dir`.
    pub fn is_below(&self, dir: &TreePath) -> bool {
        if dir.is_root() {
            return !self.is_root();
        }
        self.0.len() > dir.0.len() && self.0.starts_with(&dir.0) && self.0[dir.0.len()] == b'/'
    }

    /// All proper ancestors, outermost first, excluding the root.
    pub fn ancestors(&self) -> impl Iterator<Item = TreePath> + '_ {
        self.0.iter().enumerate().filter(|(_, &b)| b == b'/').map(|(i, _)| Self(self.0[..i].to_vec()))
    }

    /// Bounds of this directory's descendants, for range queries over a bytewise ordered map.
    pub(crate) fn descendant_bounds(&self) -> (Bound<TreePath>, Bound<TreePath>) {
        if self.is_root() {
            return (Bound::Excluded(Self::root()), Bound::Unbounded);
        }
        let mut lo = self.0.clone();
        lo.push(b'/');
        let mut hi = self.0.clone();
        hi.push(b'/' + 1);
        (Bound::Included(Self(lo)), Bound::Excluded(Self(hi)))
    }
}

impl fmt::Display for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// A SHA-256 digest, shown as `sha256:<hex>` like OCI digests.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(data).into())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Option<Self> {
        let h = s.strip_prefix("sha256:")?;
        if h.len() != 64 || h.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(h, &mut out).ok()?;
        Some(Self(out))
    }

    /// The digest as the `oci-spec` type.
    pub fn to_oci(&self) -> oci_spec::image::Digest {
        let hex: oci_spec::image::Sha256Digest =
            self.hex().parse().expect("64 lowercase hex digits are a valid sha256 digest");
        hex.into()
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What an entry is, with the data that belongs to its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file; `digest` is the SHA-256 of its content when known (needed to diff trees).
    File {
        size: u64,
        digest: Option<Sha256>,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
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
}

/// One file system object of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits including set-uid, set-gid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes, by name.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// `(device, inode)` of a regular file with more than one link, so that hard links can be found.
    pub inode: Option<(u64, u64)>,
}

impl Entry {
    /// A plain entry of `kind` with `mode`, owned by root, at time 0.
    pub fn new(kind: EntryKind, mode: u32) -> Self {
        Self { kind, mode, uid: 0, gid: 0, mtime: 0, xattrs: BTreeMap::new(), inode: None }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Dir)
    }

    /// Size of the content a layer stores (0 for everything but regular files).
    pub fn size(&self) -> u64 {
        match self.kind {
            EntryKind::File { size, .. } => size,
            _ => 0,
        }
    }

    /// Whether `self` and `other` are the same object for an image: same kind, content, mode, owner and
    /// xattrs. Modification times are ignored (they are clamped on output anyway), and so are inode numbers.
    /// Regular files whose digests are not both known are never the same.
    pub fn same_as(&self, other: &Entry) -> bool {
        let kind_same = match (&self.kind, &other.kind) {
            (
                EntryKind::File { size: a, digest: Some(da) },
                EntryKind::File { size: b, digest: Some(db) },
            ) => a == b && da == db,
            (EntryKind::File { .. }, _) => false,
            (a, b) => a == b,
        };
        kind_same
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.xattrs == other.xattrs
    }
}

/// A whole tree: every entry but the root, by path (bytewise order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeIndex {
    pub entries: BTreeMap<TreePath, Entry>,
}

impl TreeIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, path: &TreePath) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn insert(&mut self, path: TreePath, entry: Entry) {
        self.entries.insert(path, entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries strictly below directory `dir`, in order.
    pub fn descendants<'a>(&'a self, dir: &TreePath) -> impl Iterator<Item = (&'a TreePath, &'a Entry)> + 'a {
        self.entries.range(dir.descendant_bounds())
    }

    /// Direct children of directory `dir`, in order.
    pub fn children<'a>(&'a self, dir: &'a TreePath) -> impl Iterator<Item = (&'a TreePath, &'a Entry)> + 'a {
        self.descendants(dir).filter(move |(p, _)| p.parent().as_ref() == Some(dir))
    }

    /// Removes `path` and everything below it.
    pub fn remove_tree(&mut self, path: &TreePath) {
        self.remove_descendants(path);
        self.entries.remove(path);
    }

    /// Removes everything below `dir` (keeping `dir`).
    pub fn remove_descendants(&mut self, dir: &TreePath) {
        let doomed: Vec<TreePath> = self.descendants(dir).map(|(p, _)| p.clone()).collect();
        for p in doomed {
            self.entries.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TreePath {
        TreePath::new(s).unwrap()
    }

    #[test]
    fn paths_are_normalized_and_dotdot_rejected() {
        assert_eq!(p("./usr//bin/").as_bytes(), b"usr/bin");
        assert_eq!(p("/etc/./passwd").as_bytes(), b"etc/passwd");
        assert!(p("./").is_root());
        assert!(TreePath::new("a/../b").is_err());
        assert!(TreePath::new(b"a\0b").is_err());
    }

    #[test]
    fn parent_name_join_and_below() {
        let x = p("usr/lib/os-release");
        assert_eq!(x.parent(), Some(p("usr/lib")));
        assert_eq!(p("usr").parent(), Some(TreePath::root()));
        assert_eq!(TreePath::root().parent(), None);
        assert_eq!(x.file_name(), b"os-release");
        assert_eq!(p("usr/lib").join(b"os-release"), x);
        assert!(x.is_below(&p("usr")));
        assert!(!p("usr-local/x").is_below(&p("usr")));
        assert!(!p("usr").is_below(&p("usr")));
        let anc: Vec<_> = x.ancestors().collect();
        assert_eq!(anc, vec![p("usr"), p("usr/lib")]);
    }

    #[test]
    fn descendants_use_bytewise_ranges() {
        let mut t = TreeIndex::new();
        for s in ["a", "a-b", "a/c", "a/c/d", "a0", "b"] {
            t.insert(p(s), Entry::new(EntryKind::Dir, 0o755));
        }
        let d: Vec<_> = t.descendants(&p("a")).map(|(k, _)| k.to_string()).collect();
        assert_eq!(d, ["a/c", "a/c/d"]);
        let c: Vec<_> = t.children(&TreePath::root()).map(|(k, _)| k.to_string()).collect();
        assert_eq!(c, ["a", "a-b", "a0", "b"]);
        t.remove_tree(&p("a"));
        let left: Vec<_> = t.entries.keys().map(|k| k.to_string()).collect();
        assert_eq!(left, ["a-b", "a0", "b"]);
    }

    #[test]
    fn sha256_round_trips_through_text() {
        let d = Sha256::of(b"");
        let s = d.to_string();
        assert_eq!(s, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(Sha256::parse(&s), Some(d));
        assert_eq!(d.to_oci().to_string(), s);
        assert_eq!(Sha256::parse("sha256:abc"), None);
    }

    #[test]
    fn same_as_ignores_mtime_but_not_content_or_owner() {
        let f =
            |digest: u8| Entry::new(EntryKind::File { size: 3, digest: Some(Sha256([digest; 32])) }, 0o644);
        let mut a = f(1);
        let mut b = f(1);
        b.mtime = 99;
        assert!(a.same_as(&b));
        b.uid = 1;
        assert!(!a.same_as(&b));
        assert!(!a.same_as(&f(2)));
        a.kind = EntryKind::File { size: 3, digest: None };
        assert!(!a.same_as(&a.clone()), "unknown content is never assumed equal");
    }
}
