//! Merging OCI layers (uncompressed tar streams, lowest first) into one index of the image's root file system
//! (pure over `Read`), with where each regular file's bytes are in its layer's uncompressed stream, and
//! reading them back from such a stream ([`ContentReader`]).
//!
//! The rules are the image spec's: `.wh.NAME` deletes `NAME` (and what is below it) of the layers below;
//! `.wh..wh..opq` hides everything the layers below had in its directory; neither touches what its own layer
//! adds, whatever the order inside the layer. A directory entry over a directory keeps the children and
//! takes the new metadata; any other entry replaces whatever was at its path, a whole directory included.
//! Missing parents are made as `0755 0:0` directories. A hard link is a regular file sharing its target's
//! metadata and content. Paths with `..` are refused.
//!
//! This is kiln's second, independent reading of the layer format: the writers in `crates/oci` are checked
//! against it, not against themselves.

use std::{
    collections::{BTreeMap, HashSet},
    io::{self, Read},
};

use super::{child_path, Entry, EntryKind};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What is wrong with a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("reading the tar stream: {0}")]
    Tar(#[source] io::Error),
    #[error("entry {ordinal} `{path}`: {reason}")]
    BadEntry { ordinal: u64, path: String, reason: String },
    #[error("hard link `{path}` points at `{target}`, which is not a regular file of the image")]
    HardlinkTarget { path: String, target: String },
    #[error("the stream ends before the {size} bytes of `{path}` at offset {offset}")]
    Truncated { path: String, offset: u64, size: u64 },
    #[error("blob has {actual} bytes, its descriptor says {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("blob content hashes to {actual}, its descriptor says {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("uncompressed content hashes to {actual}, the config's diff_id says {expected}")]
    DiffIdMismatch { expected: String, actual: String },
    #[error("unsupported layer media type `{0}`")]
    MediaType(String),
}

/// Where a regular file's content is: layer `layer` (from 0, the lowest), at byte `offset` of its
/// uncompressed tar stream (the content of the `ordinal`-th member, from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    pub layer: usize,
    pub ordinal: u64,
    pub offset: u64,
}

/// An entry of the merged tree with where its content is (regular files only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub entry: Entry,
    pub content: Option<Location>,
}

/// The merged tree of the layers applied so far, by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedTree {
    nodes: BTreeMap<String, Node>,
}

impl Default for MergedTree {
    fn default() -> Self {
        Self::new()
    }
}

fn implicit_dir(path: &str) -> Node {
    Node {
        entry: Entry {
            path: path.into(),
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
        },
        content: None,
    }
}

/// The parent of a canonical path other than `/`.
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The canonical form of a tar member name: `./a/b/`, `/a/b` and `a//b` are all `/a/b`; `./` is `/`.
fn canonical_member(raw: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(raw).map_err(|_| "name is not UTF-8".to_string())?;
    let mut out = String::new();
    for c in s.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            return Err("name climbs out of the root with `..`".into());
        }
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

impl MergedTree {
    /// An empty image: just the root directory.
    pub fn new() -> Self {
        Self { nodes: BTreeMap::from([("/".to_string(), implicit_dir("/"))]) }
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Every node, `/` first, by path.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Paths strictly below `dir`.
    fn descendants<'a>(&'a self, dir: &str) -> impl Iterator<Item = &'a String> + 'a {
        let prefix = if dir == "/" { "/".to_string() } else { format!("{dir}/") };
        // Every path below `dir` starts with `prefix`, and they sort together right after it.
        self.nodes.range(prefix.clone()..).map(|(p, _)| p).take_while(move |p| p.starts_with(&prefix))
    }

    /// The direct children of the directory `dir`, by name.
    pub fn children<'a>(&'a self, dir: &str) -> impl Iterator<Item = &'a Node> + 'a {
        let dir = dir.to_string();
        self.descendants(&dir)
            .filter(move |p| parent(p) == dir && p.as_str() != "/")
            .filter_map(|p| self.nodes.get(p))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Removes what is below `path` (and `path` itself unless `keep_self`), except what `keep` holds.
    fn hide(&mut self, path: &str, keep_self: bool, keep: &HashSet<String>) {
        let mut doomed: Vec<String> =
            self.descendants(path).filter(|p| !keep.contains(*p)).cloned().collect();
        if !keep_self && !keep.contains(path) {
            doomed.push(path.to_string());
        }
        for p in doomed {
            self.nodes.remove(&p);
        }
    }

    /// Applies one layer, the uncompressed tar stream `tar`, as layer number `layer`.
    pub fn apply_layer<R: Read>(&mut self, layer: usize, tar: R) -> Result<(), LayerError> {
        let mut archive = tar::Archive::new(tar);
        let mut added: HashSet<String> = HashSet::new();
        for (ordinal, member) in archive.entries().map_err(LayerError::Tar)?.enumerate() {
            let ordinal = ordinal as u64;
            let mut member = member.map_err(LayerError::Tar)?;
            let raw = member.path_bytes().into_owned();
            let bad = |reason: String| LayerError::BadEntry {
                ordinal,
                path: String::from_utf8_lossy(&raw).into_owned(),
                reason,
            };
            let path = canonical_member(&raw).map_err(bad)?;
            let name = path.rsplit('/').next().unwrap_or("");
            if name == OPAQUE_MARKER {
                self.hide(parent(&path), true, &added);
                continue;
            }
            if let Some(deleted) = name.strip_prefix(WHITEOUT_PREFIX) {
                if !deleted.is_empty() {
                    let deleted = child_path(parent(&path), deleted);
                    if !added.contains(&deleted) {
                        self.hide(&deleted, false, &added);
                    }
                    continue;
                }
            }
            let node = read_node(&mut member, &path, layer, ordinal).map_err(bad)?;
            let node = match node {
                Member::Node(n) => n,
                Member::Hardlink(target) => {
                    let t = self.nodes.get(&target).filter(|n| n.entry.is_file()).ok_or_else(|| {
                        LayerError::HardlinkTarget { path: path.clone(), target: target.clone() }
                    })?;
                    Node { entry: Entry { path: path.clone(), ..t.entry.clone() }, content: t.content }
                }
            };
            self.make_parents(&path, &mut added);
            let keep_children =
                node.entry.is_dir() && self.nodes.get(&path).is_some_and(|n| n.entry.is_dir());
            if !keep_children {
                self.hide(&path, false, &HashSet::new());
            }
            self.nodes.insert(path.clone(), node);
            added.insert(path);
        }
        Ok(())
    }

    /// Makes every missing (or non-directory) ancestor of `path` a directory.
    fn make_parents(&mut self, path: &str, added: &mut HashSet<String>) {
        let mut ancestors = Vec::new();
        let mut p = path;
        while p != "/" {
            p = parent(p);
            ancestors.push(p);
        }
        for anc in ancestors.into_iter().rev() {
            if !self.nodes.get(anc).is_some_and(|n| n.entry.is_dir()) {
                self.hide(anc, false, &HashSet::new());
                self.nodes.insert(anc.to_string(), implicit_dir(anc));
                added.insert(anc.to_string());
            }
        }
    }
}

enum Member {
    Node(Node),
    /// A hard link to this canonical path.
    Hardlink(String),
}

/// A PAX record's value as a number (`mtime` may have a fraction, which is dropped).
fn pax_number(value: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(value).ok()?;
    s.split('.').next()?.parse().ok()
}

/// Decodes the metadata of one tar member.
fn read_node<R: Read>(
    member: &mut tar::Entry<'_, R>,
    path: &str,
    layer: usize,
    ordinal: u64,
) -> Result<Member, String> {
    use tar::EntryType;
    let (mut uid, mut gid, mut mtime) = (None, None, None);
    if let Some(exts) = member.pax_extensions().map_err(|e| format!("PAX header: {e}"))? {
        for ext in exts {
            let ext = ext.map_err(|e| format!("PAX header: {e}"))?;
            match ext.key_bytes() {
                b"uid" => uid = pax_number(ext.value_bytes()),
                b"gid" => gid = pax_number(ext.value_bytes()),
                b"mtime" => mtime = pax_number(ext.value_bytes()),
                _ => {}
            }
        }
    }
    let h = member.header();
    let id = |pax: Option<i64>, field: io::Result<u64>, what: &str| -> Result<u32, String> {
        let v = match pax {
            Some(v) => u64::try_from(v).map_err(|_| format!("negative {what}"))?,
            None => field.map_err(|e| format!("{what}: {e}"))?,
        };
        u32::try_from(v).map_err(|_| format!("{what} {v} too large"))
    };
    let uid = id(uid, h.uid(), "uid")?;
    let gid = id(gid, h.gid(), "gid")?;
    let mtime = match mtime {
        Some(m) => m,
        None => i64::try_from(h.mtime().map_err(|e| format!("mtime: {e}"))?).unwrap_or(i64::MAX),
    };
    let mode = h.mode().map_err(|e| format!("mode: {e}"))? & 0o7777;
    let utf8 = |b: Option<std::borrow::Cow<'_, [u8]>>| -> Result<String, String> {
        let b = b.ok_or("link without a target")?;
        String::from_utf8(b.into_owned()).map_err(|_| "link target is not UTF-8".to_string())
    };
    let dev = || -> Result<(u32, u32), String> {
        match (h.device_major(), h.device_minor()) {
            (Ok(Some(a)), Ok(Some(b))) => Ok((a, b)),
            _ => Err("device without device numbers".into()),
        }
    };
    let mut content = None;
    let mut size = 0;
    let kind = match h.entry_type() {
        EntryType::Regular | EntryType::Continuous => {
            size = member.size();
            content = Some(Location { layer, ordinal, offset: member.raw_file_position() });
            EntryKind::File
        }
        EntryType::Directory => EntryKind::Dir,
        EntryType::Symlink => {
            let target = utf8(member.link_name_bytes())?;
            size = target.len() as u64;
            EntryKind::Symlink { target }
        }
        EntryType::Link => {
            let target = utf8(member.link_name_bytes())?;
            return Ok(Member::Hardlink(canonical_member(target.as_bytes())?));
        }
        EntryType::Char => {
            let (major, minor) = dev()?;
            EntryKind::CharDevice { major, minor }
        }
        EntryType::Block => {
            let (major, minor) = dev()?;
            EntryKind::BlockDevice { major, minor }
        }
        EntryType::Fifo => EntryKind::Fifo,
        other => return Err(format!("unsupported entry type {other:?}")),
    };
    let entry = Entry { path: path.to_string(), kind, mode, uid, gid, size, mtime };
    Ok(Member::Node(Node { entry, content }))
}

/// Reads file contents out of one uncompressed layer stream, forwards only: each read skips to the file's
/// offset, so reading files in layer order (which is path order for kiln's layers) decompresses the layer once.
pub struct ContentReader<R> {
    stream: R,
    pos: u64,
}

impl<R> std::fmt::Debug for ContentReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentReader").field("pos", &self.pos).finish_non_exhaustive()
    }
}

impl<R: Read> ContentReader<R> {
    pub fn new(stream: R) -> Self {
        Self { stream, pos: 0 }
    }

    /// Where the next read can start: reads of content before it need a new reader.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The `entry.size` bytes at `offset` (at or after [`ContentReader::position`]).
    pub fn read_at(&mut self, offset: u64, entry: &Entry) -> Result<Vec<u8>, LayerError> {
        let truncated = || LayerError::Truncated { path: entry.path.clone(), offset, size: entry.size };
        let skip = offset.checked_sub(self.pos).ok_or_else(truncated)?;
        let skipped =
            io::copy(&mut (&mut self.stream).take(skip), &mut io::sink()).map_err(LayerError::Tar)?;
        self.pos += skipped;
        if skipped != skip {
            return Err(truncated());
        }
        let mut data = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        let n = (&mut self.stream).take(entry.size).read_to_end(&mut data).map_err(LayerError::Tar)?;
        self.pos += n as u64;
        if n as u64 != entry.size {
            return Err(truncated());
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar member for a hand-made layer.
    enum M<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8]),
        Link(&'a str, &'a str),
        Hard(&'a str, &'a str),
    }

    fn layer(members: &[M<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for m in members {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(5);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mode(0);
            let (path, data): (&str, &[u8]) = match m {
                M::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o750);
                    (p, b"")
                }
                M::File(p, d) => {
                    h.set_mode(0o644);
                    h.set_uid(1000);
                    h.set_gid(42);
                    (p, d)
                }
                M::Link(p, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_link_name(t).unwrap();
                    (p, b"")
                }
                M::Hard(p, t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_link_name(t).unwrap();
                    (p, b"")
                }
            };
            h.set_size(data.len() as u64);
            h.set_path(path).unwrap();
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn paths(t: &MergedTree) -> Vec<&str> {
        t.nodes().map(|n| n.entry.path.as_str()).collect()
    }

    fn merged(layers: &[Vec<u8>]) -> MergedTree {
        let mut t = MergedTree::new();
        for (i, l) in layers.iter().enumerate() {
            t.apply_layer(i, &l[..]).unwrap();
        }
        t
    }

    #[test]
    fn whiteouts_and_opaque_markers_hide_lower_layers_only() {
        let base = layer(&[
            M::Dir("./"),
            M::Dir("etc/"),
            M::File("etc/shadow", b"x"),
            M::File("etc/hosts", b"h"),
            M::Dir("var/cache/"),
            M::File("var/cache/old.bin", b"old"),
            M::Dir("var/cache/sub/"),
            M::File("var/cache/sub/deep", b"d"),
            M::Dir("gone/"),
            M::File("gone/file", b"f"),
        ]);
        let top = layer(&[
            M::File("etc/.wh.shadow", b""),
            M::File("var/cache/new.bin", b"new"),
            // The marker after an entry of its own layer does not hide that entry.
            M::File("var/cache/.wh..wh..opq", b""),
            M::File("./.wh.gone", b""),
            // A whiteout of something this layer adds does nothing.
            M::File("etc/motd", b"m"),
            M::File("etc/.wh.motd", b""),
        ]);
        let t = merged(&[base, top]);
        assert_eq!(
            paths(&t),
            ["/", "/etc", "/etc/hosts", "/etc/motd", "/var", "/var/cache", "/var/cache/new.bin"]
        );
        let at = |p: &str| t.get(p).unwrap().content.map(|l| (l.layer, l.ordinal));
        assert_eq!(at("/var/cache/new.bin"), Some((1, 1)));
        assert_eq!(at("/etc/hosts"), Some((0, 3)));
        // `var/` had no entry: an implicit directory.
        assert_eq!(t.get("/var").unwrap().entry.mode, 0o755);
        assert_eq!(t.get("/var/cache").unwrap().entry.mode, 0o750);
    }

    #[test]
    fn replacing_a_directory_with_a_file_or_link_drops_its_children() {
        let base =
            layer(&[M::Dir("lib/"), M::File("lib/a", b"a"), M::Dir("usr/lib/"), M::File("usr/lib/b", b"")]);
        let top = layer(&[M::Link("lib", "usr/lib"), M::Dir("usr/lib/")]);
        let t = merged(&[base, top]);
        assert_eq!(paths(&t), ["/", "/lib", "/usr", "/usr/lib", "/usr/lib/b"]);
        assert_eq!(t.get("/lib").unwrap().entry.symlink_target(), Some("usr/lib"));
        assert_eq!(t.get("/lib").unwrap().entry.size, 7);
    }

    #[test]
    fn hard_links_share_content_and_metadata() {
        let l = layer(&[M::File("bin/python3.11", b"elf"), M::Hard("bin/python3", "./bin/python3.11")]);
        let t = merged(std::slice::from_ref(&l));
        let a = t.get("/bin/python3.11").unwrap();
        let b = t.get("/bin/python3").unwrap();
        assert_eq!(b.content, a.content);
        assert_eq!((b.entry.uid, b.entry.gid, b.entry.mode, b.entry.size), (1000, 42, 0o644, 3));
        let offset = a.content.unwrap().offset;
        assert_eq!(ContentReader::new(&l[..]).read_at(offset, &b.entry).unwrap(), b"elf");

        let dangling = layer(&[M::Hard("bin/x", "bin/none")]);
        let err = MergedTree::new().apply_layer(0, &dangling[..]).unwrap_err();
        assert!(matches!(err, LayerError::HardlinkTarget { .. }), "{err}");
    }

    #[test]
    fn names_climbing_out_are_refused() {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        // `set_path` refuses `..`, so write the name field directly.
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &[][..]).unwrap();
        let l = b.into_inner().unwrap();
        let err = MergedTree::new().apply_layer(0, &l[..]).unwrap_err();
        assert!(matches!(&err, LayerError::BadEntry { path, .. } if path == "../escape"), "{err}");
    }

    #[test]
    fn contents_are_read_forwards_from_their_offsets() {
        let l = layer(&[
            M::Dir("d/"),
            M::File("d/a", b"first"),
            M::File("d/b", &[7u8; 1000]),
            M::File("d/c", b""),
        ]);
        let t = merged(std::slice::from_ref(&l));
        let node = |p: &str| t.get(p).unwrap();
        let mut r = ContentReader::new(&l[..]);
        for (p, want) in [("/d/a", &b"first"[..]), ("/d/b", &[7u8; 1000][..]), ("/d/c", &b""[..])] {
            let n = node(p);
            assert_eq!(r.read_at(n.content.unwrap().offset, &n.entry).unwrap(), want, "{p}");
        }
        // Going back needs a new reader; a size past the end of the stream is caught.
        let a = node("/d/a");
        assert!(matches!(r.read_at(a.content.unwrap().offset, &a.entry), Err(LayerError::Truncated { .. })));
        let mut big = a.entry.clone();
        big.size = l.len() as u64;
        let err = ContentReader::new(&l[..]).read_at(a.content.unwrap().offset, &big).unwrap_err();
        assert!(matches!(err, LayerError::Truncated { .. }), "{err}");
        assert_eq!(t.children("/").map(|n| n.entry.path.as_str()).collect::<Vec<_>>(), ["/d"]);
        assert_eq!(
            t.children("/d").map(|n| n.entry.path.as_str()).collect::<Vec<_>>(),
            ["/d/a", "/d/b", "/d/c"]
        );
    }
}
