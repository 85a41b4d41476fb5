//! The step cache: the result of every blueprint step after the package stage, stored by a key over the
//! step's chained plan digest, so that a build whose first steps are unchanged replays them instead of
//! running them again (a changed RUN reruns from there on; the steps before it come from the cache).
//!
//! * Key ([`step_key`]): sha256 over [`STEP_FORMAT`], the package stage's key (for a build `FROM` an image:
//!   the parent's manifest digest and the packages installed on it), the step's plan digest (which covers
//!   its inputs and every step before it), SOURCE_DATE_EPOCH and whether RUN may reach the network.
//! * Result: what the step changed in the tree, as a zstd tar layer written by kiln-oci (whiteouts for
//!   removals), plus `meta.json` (layer digest, the exact modification times a tar header rounds to
//!   seconds, the root directory's metadata, the step's warnings). An entry `CACHE/steps/KEY/` is made in
//!   `.KEY.tmp-PID` and renamed into place; `.complete` holds the sha256 of `meta.json`, which holds the
//!   layer's. [`StepCache::lookup`] checks both, so a partial or corrupt entry is never replayed.
//! * Change detection ([`Snapshot`], [`changes`]): two walks of the tree, before and after the step, without
//!   reading any content. A path changed when its entry (kind, size, mode, owner, mtime, symlink target,
//!   device, xattrs) or its stamp (device, inode, link count, mtime and ctime to the nanosecond) differs. The
//!   ctime moves on every write, chmod, chown, link, unlink or rename and user space cannot set it back, so
//!   a change that keeps size and mtime is still seen. Only changed paths (and their parent directories)
//!   go into the layer, so only their content is read. Measured: a walk of a 689 MB, 16 000-entry Debian
//!   tree (warm page cache) takes 0.11 s of CPU in a release build (0.17 s in a debug one), 0.12 to 0.47 s
//!   of wall time on a 2-core machine shared with other builds; a build walks once per step it runs.
//! * A coarse file-system clock could give a write right after a walk the same ctime as the write before
//!   it: [`Snapshot::take`] waits until the clock is [`SETTLE`] past the newest ctime it saw (usually it
//!   already is, the walk itself takes longer).
//!
//! Not kept: sockets (a layer cannot hold them; a step that makes one is not stored), and extended
//! attributes removed from a directory that stays (replay only adds a directory's attributes). Entries are
//! never evicted (like package stages): remove `CACHE/steps` to reclaim the space.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    io::{self, BufWriter},
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use kiln_oci::{
    compress::{compress_stream, CompressOptions, Compression},
    diff::{layer_entries, Change},
    layer::{write_tar, DirSource, LayerPlan},
    scan::{walk_tree_with_metadata, ScanOptions},
    unpack::{unpack_layers, UnpackOptions},
    Entry, TreeIndex, TreePath,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Version of the way kiln runs, records and replays steps; part of every key, so that a kiln whose steps
/// behave differently never replays what an older one stored. Change it with any change to what a step
/// does to the tree (`steps.rs`, service states) or to how its result is recorded here.
pub const STEP_FORMAT: &str = "kiln.step/1";

/// How far past the newest change time of a walk the clock must be before the step may run.
pub const SETTLE: Duration = Duration::from_millis(20);

const LAYER: &str = "layer.tar.zst";
const META: &str = "meta.json";
const COMPLETE: &str = ".complete";

#[derive(Debug, thiserror::Error)]
pub enum StepCacheError {
    /// File I/O through `fs-err` (the path is in the message).
    #[error(transparent)]
    File(#[from] io::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Oci {
        path: PathBuf,
        #[source]
        source: kiln_oci::Error,
    },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("the step made the socket /{path}, which a layer cannot hold")]
    Socket { path: String },
}

fn oci(path: &Path) -> impl FnOnce(kiln_oci::Error) -> StepCacheError + '_ {
    move |source| StepCacheError::Oci { path: path.to_owned(), source }
}

/// The cache key of one step's result (hex sha256).
pub fn step_key(stage_key: &str, step_digest: &str, source_date_epoch: i64, network_in_run: bool) -> String {
    let text = format!(
        "{STEP_FORMAT}\nstage={stage_key}\nstep={step_digest}\nSOURCE_DATE_EPOCH={source_date_epoch}\n\
         network={network_in_run}\n"
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What tells two states of one path apart besides its [`Entry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    nlink: u64,
    size: u64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
            size: m.size(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }
}

/// The root directory's own metadata (a layer has no entry for the root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RootMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: i64,
}

/// The metadata of every path of a tree at one moment; no content is read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    index: TreeIndex,
    stamps: BTreeMap<TreePath, Stamp>,
    root: RootMeta,
    sockets: Vec<TreePath>,
}

impl Snapshot {
    /// Walks the tree at `tree` (then waits, if need be, until the clock is [`SETTLE`] past the newest change
    /// time seen, so that the next change gets a later one).
    pub fn take(tree: &Path) -> Result<Self, StepCacheError> {
        let root_meta = fs_err::symlink_metadata(tree)?;
        let root = RootMeta {
            mode: root_meta.mode() & 0o7777,
            uid: root_meta.uid(),
            gid: root_meta.gid(),
            mtime: root_meta.mtime(),
            mtime_nsec: root_meta.mtime_nsec(),
        };
        let mut newest = (root_meta.ctime(), root_meta.ctime_nsec());
        let mut index = TreeIndex::new();
        let mut stamps = BTreeMap::new();
        let opts = ScanOptions { hash_contents: false, ..ScanOptions::default() };
        let sockets = walk_tree_with_metadata(tree, &opts, |path, entry, _, meta| {
            newest = newest.max((meta.ctime(), meta.ctime_nsec()));
            stamps.insert(path.clone(), Stamp::of(meta));
            index.insert(path, entry);
            Ok(())
        })
        .map_err(oci(tree))?;
        settle(newest);
        Ok(Self { index, stamps, root, sockets })
    }

    /// Entries of the tree (the root not counted).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// Sleeps until the wall clock is [`SETTLE`] past `newest` (seconds, nanoseconds), at most [`SETTLE`].
fn settle(newest: (i64, i64)) {
    let (Ok(secs), Ok(nanos)) = (u64::try_from(newest.0), u32::try_from(newest.1)) else { return };
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else { return };
    if let Some(wait) = (Duration::new(secs, nanos) + SETTLE).checked_sub(now) {
        std::thread::sleep(wait.min(SETTLE));
    }
}

/// The changes that turn `before` into `after`, sorted by path: a path only in `after` is added, one in
/// both whose entry or stamp differs is modified, one only in `before` is deleted unless a deleted ancestor
/// or a parent that is no longer a directory already covers it.
pub fn changes(before: &Snapshot, after: &Snapshot) -> Vec<Change> {
    let mut out = Vec::new();
    for (path, entry) in &after.index.entries {
        match before.index.get(path) {
            None => out.push(Change::Added(path.clone())),
            Some(old) if old != entry || before.stamps.get(path) != after.stamps.get(path) => {
                out.push(Change::Modified(path.clone()));
            }
            Some(_) => {}
        }
    }
    let mut gone: BTreeSet<TreePath> = BTreeSet::new();
    for path in before.index.entries.keys() {
        if after.index.entries.contains_key(path) {
            continue;
        }
        let parent = path.parent().unwrap_or_default();
        let covered = path.ancestors().any(|a| gone.contains(&a))
            || (!parent.is_root() && !after.index.get(&parent).is_some_and(Entry::is_dir));
        if !covered {
            out.push(Change::Deleted(path.clone()));
        }
        gone.insert(path.clone());
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// A layer's identity, as `meta.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LayerMeta {
    /// `sha256:HEX` of `layer.tar.zst` as stored.
    digest: String,
    size: u64,
    /// `sha256:HEX` of the uncompressed tar stream.
    diff_id: String,
    entries: usize,
}

/// `meta.json` of a cache entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    format: String,
    key: String,
    layer: LayerMeta,
    root: RootMeta,
    /// Modification times of the layer's entries to the nanosecond (a tar header keeps whole seconds):
    /// hex of the path, seconds, nanoseconds.
    times: Vec<(String, i64, i64)>,
    /// What the step warned about when it ran (repeated when it is replayed).
    warnings: Vec<String>,
}

/// What [`StepCache::store`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Entries in the layer (changed paths, their parent directories and whiteouts).
    pub entries: usize,
    /// Bytes of the compressed layer.
    pub size: u64,
}

/// A complete, verified cache entry.
#[derive(Debug, Clone)]
pub struct CachedStep {
    dir: PathBuf,
    meta: Meta,
}

impl CachedStep {
    /// The warnings the step gave when it ran.
    pub fn warnings(&self) -> &[String] {
        &self.meta.warnings
    }

    /// Applies the step's change to `tree`, which must be the tree the step ran on.
    pub fn replay(&self, tree: &Path) -> Result<(), StepCacheError> {
        let layer = self.dir.join(LAYER);
        let file = fs_err::File::open(&layer)?;
        let decoder = zstd::stream::read::Decoder::new(file)
            .map_err(|source| StepCacheError::Io { path: layer.clone(), source })?;
        unpack_layers([decoder], tree, &UnpackOptions::default()).map_err(oci(&layer))?;
        for (hex_path, secs, nanos) in &self.meta.times {
            let rel = hex::decode(hex_path)
                .ok()
                .and_then(|b| TreePath::new(b).ok())
                .filter(|p| !p.is_root())
                .ok_or_else(|| StepCacheError::Corrupt {
                    path: self.dir.join(META),
                    reason: format!("bad path `{hex_path}`"),
                })?;
            set_times(&tree.join(OsStr::from_bytes(rel.as_bytes())), *secs, *nanos)?;
        }
        let root = &self.meta.root;
        let io_err = |source| StepCacheError::Io { path: tree.to_owned(), source };
        std::os::unix::fs::lchown(tree, Some(root.uid), Some(root.gid)).map_err(io_err)?;
        std::fs::set_permissions(tree, std::os::unix::fs::PermissionsExt::from_mode(root.mode))
            .map_err(io_err)?;
        set_times(tree, root.mtime, root.mtime_nsec)
    }
}

/// Sets access and modification time of `path` (not following a symlink).
fn set_times(path: &Path, secs: i64, nanos: i64) -> Result<(), StepCacheError> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let t = Timespec { tv_sec: secs, tv_nsec: nanos };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps { last_access: t, last_modification: t },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| StepCacheError::Io { path: path.to_owned(), source: e.into() })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The step cache in one folder (`CACHE/steps`).
#[derive(Debug, Clone)]
pub struct StepCache {
    dir: PathBuf,
}

impl StepCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The entry of `key` if it is complete and intact. A corrupt one is removed (with a warning).
    pub fn lookup(&self, key: &str) -> Option<CachedStep> {
        let dir = self.dir.join(key);
        if !dir.join(COMPLETE).is_file() {
            return None;
        }
        match verify(key, &dir) {
            Ok(step) => Some(step),
            Err(e) => {
                tracing::warn!("step cache entry {}: {e}; removing it", dir.display());
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
        }
    }

    /// Stores what a step changed in `tree` (from `before` to `after`) under `key`.
    pub fn store(
        &self,
        key: &str,
        tree: &Path,
        before: &Snapshot,
        after: &Snapshot,
        warnings: &[String],
    ) -> Result<Stored, StepCacheError> {
        if let Some(s) = after.sockets.iter().find(|s| !before.sockets.contains(s)) {
            return Err(StepCacheError::Socket { path: s.to_string() });
        }
        let changes = changes(before, after);
        let (entries, markers) = layer_entries(&changes, &after.index);
        let times = entries
            .iter()
            .map(|(p, e)| {
                let nanos = after.stamps.get(p).map_or(0, |s| s.mtime_nsec);
                (hex::encode(p.as_bytes()), e.mtime, nanos)
            })
            .collect();
        // No clamping: the tree is normalized after the last step, replayed or not.
        let plan = LayerPlan::new(entries, markers, u64::MAX);

        fs_err::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{key}.tmp-{}", std::process::id()));
        if tmp.exists() {
            fs_err::remove_dir_all(&tmp)?;
        }
        fs_err::create_dir(&tmp)?;
        let result = write_entry(key, tree, &tmp, &plan, after, times, warnings);
        let stored = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let entry = self.dir.join(key);
        if entry.exists() {
            if self.lookup(key).is_some() {
                // Another build stored the same step meanwhile.
                let _ = std::fs::remove_dir_all(&tmp);
                return Ok(stored);
            }
            let _ = std::fs::remove_dir_all(&entry);
        }
        fs_err::rename(&tmp, &entry)?;
        Ok(stored)
    }

    /// Removes entries that killed builds left half-written (`.KEY.tmp-PID` of a process that is gone).
    pub fn clean_stale(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.rsplit_once(".tmp-").and_then(|(_, pid)| pid.parse::<u32>().ok());
            if let Some(pid) = pid.filter(|_| name.starts_with('.')) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

/// Writes the layer, `meta.json` and `.complete` of an entry into its temporary folder `tmp`.
fn write_entry(
    key: &str,
    tree: &Path,
    tmp: &Path,
    plan: &LayerPlan,
    after: &Snapshot,
    times: Vec<(String, i64, i64)>,
    warnings: &[String],
) -> Result<Stored, StepCacheError> {
    let layer_path = tmp.join(LAYER);
    let out = BufWriter::with_capacity(1 << 20, fs_err::File::create(&layer_path)?);
    let opts = CompressOptions { compression: Compression::Zstd, level: None, threads: 0 };
    let (_, (), digests) =
        compress_stream(out, &opts, |w| write_tar(plan, &DirSource::new(tree), w).map(|_| ()))
            .map_err(oci(&layer_path))?;
    let meta = Meta {
        format: STEP_FORMAT.to_owned(),
        key: key.to_owned(),
        layer: LayerMeta {
            digest: digests.digest.to_string(),
            size: digests.size,
            diff_id: digests.diff_id.to_string(),
            entries: plan.entries.len(),
        },
        root: after.root,
        times,
        warnings: warnings.to_vec(),
    };
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| StepCacheError::File(e.into()))?;
    fs_err::write(tmp.join(META), &bytes)?;
    fs_err::write(tmp.join(COMPLETE), sha256_hex(&bytes))?;
    Ok(Stored { entries: plan.entries.len(), size: digests.size })
}

/// Reads and checks an entry: `.complete` matches `meta.json`, which matches the key and the layer.
fn verify(key: &str, dir: &Path) -> Result<CachedStep, StepCacheError> {
    let corrupt = |reason: String| StepCacheError::Corrupt { path: dir.to_owned(), reason };
    let complete = fs_err::read_to_string(dir.join(COMPLETE))?;
    let bytes = fs_err::read(dir.join(META))?;
    if sha256_hex(&bytes) != complete.trim() {
        return Err(corrupt(format!("{META} does not match {COMPLETE}")));
    }
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("{META}: {e}")))?;
    if meta.format != STEP_FORMAT || meta.key != key {
        return Err(corrupt(format!("{META} is for {} {}", meta.format, meta.key)));
    }
    let mut file = fs_err::File::open(dir.join(LAYER))?;
    let mut h = Sha256::new();
    let size = io::copy(&mut file, &mut h)?;
    let digest = format!("sha256:{}", hex::encode(h.finalize()));
    if size != meta.layer.size || digest != meta.layer.digest {
        return Err(corrupt(format!(
            "{LAYER} is {digest} ({size} bytes), {META} says {}",
            meta.layer.digest
        )));
    }
    Ok(CachedStep { dir: dir.to_owned(), meta })
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Seek as _, Write as _},
        os::unix::fs::{symlink, PermissionsExt as _},
        process::Command,
    };

    use super::*;

    fn p(s: &str) -> TreePath {
        TreePath::new(s).unwrap()
    }

    /// A small root tree: folders, files (one with a nanosecond mtime), a symlink, a hard link pair, a
    /// nested folder to remove.
    fn make_tree(root: &Path) {
        for d in ["etc", "usr/bin", "var/cache/old/deep", "srv/site", "opt"] {
            fs_err::create_dir_all(root.join(d)).unwrap();
        }
        let files = [
            ("etc/motd", "hello, world\n"),
            ("etc/hostname", "box\n"),
            ("usr/bin/tool", "#!/bin/sh\necho tool\n"),
            ("var/cache/old/a", "a"),
            ("var/cache/old/deep/b", "b"),
            ("srv/site/index.html", "<p>hi</p>\n"),
            ("opt/keep", "kept"),
        ];
        for (path, content) in files {
            fs_err::write(root.join(path), content).unwrap();
        }
        fs_err::set_permissions(root.join("usr/bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        fs_err::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-again")).unwrap();
        symlink("motd", root.join("etc/greeting")).unwrap();
        set_times(&root.join("etc/hostname"), 1_600_000_000, 123_456_789).unwrap();
    }

    /// Copies a tree with everything (times to the nanosecond, owners, hard links, xattrs).
    fn copy(from: &Path, to: &Path) {
        let ok = Command::new("cp").args(["-a", "--no-target-directory"]).arg(from).arg(to).status().unwrap();
        assert!(ok.success());
    }

    fn dump(tree: &Path) -> String {
        kiln_rootfs::dump_tree(tree).unwrap()
    }

    struct RoundTrip {
        _dir: tempfile::TempDir,
        /// The tree the step ran on.
        ran: PathBuf,
        /// A copy of the tree before the step, the step replayed onto it.
        replayed: PathBuf,
        changes: Vec<String>,
        stored: Stored,
    }

    /// Runs `step` on a fresh tree between two snapshots, stores the change, replays it onto a copy of the
    /// tree as it was before, and checks both trees are the same (listing, times to the nanosecond, root
    /// included).
    fn round_trip(step: impl FnOnce(&Path)) -> RoundTrip {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        let replayed = dir.path().join("replayed");
        fs_err::create_dir(&ran).unwrap();
        make_tree(&ran);
        copy(&ran, &replayed);
        assert_eq!(dump(&ran), dump(&replayed));
        let before = Snapshot::take(&ran).unwrap();
        step(&ran);
        let after = Snapshot::take(&ran).unwrap();
        let changes = changes(&before, &after)
            .iter()
            .map(|c| match c {
                Change::Added(p) => format!("A {p}"),
                Change::Modified(p) => format!("M {p}"),
                Change::Deleted(p) => format!("D {p}"),
                Change::Opaque(p) => format!("O {p}"),
            })
            .collect();
        let cache = StepCache::new(dir.path().join("cache"));
        let key = step_key("stage", "step", 0, false);
        let stored = cache.store(&key, &ran, &before, &after, &["a warning".to_owned()]).unwrap();
        let hit = cache.lookup(&key).expect("the stored step is found");
        assert_eq!(hit.warnings(), ["a warning"]);
        hit.replay(&replayed).unwrap();
        assert_eq!(dump(&replayed), dump(&ran), "the replayed tree differs from the one the step ran on");
        assert_eq!(kiln_rootfs::tree_digest(&replayed).unwrap(), kiln_rootfs::tree_digest(&ran).unwrap());
        RoundTrip { _dir: dir, ran, replayed, changes, stored }
    }

    fn meta(path: &Path) -> std::fs::Metadata {
        fs_err::symlink_metadata(path).unwrap()
    }

    #[test]
    fn added_files_folders_and_symlinks_are_replayed() {
        let rt = round_trip(|t| {
            fs_err::create_dir_all(t.join("srv/new/deeper")).unwrap();
            fs_err::write(t.join("srv/new/deeper/file"), "new\n").unwrap();
            fs_err::write(t.join("top-level"), "at the root\n").unwrap();
            symlink("/srv/new", t.join("etc/new-link")).unwrap();
        });
        assert_eq!(
            rt.changes,
            [
                "M etc",
                "A etc/new-link",
                "M srv",
                "A srv/new",
                "A srv/new/deeper",
                "A srv/new/deeper/file",
                "A top-level"
            ]
        );
        assert_eq!(fs_err::read_to_string(rt.replayed.join("srv/new/deeper/file")).unwrap(), "new\n");
    }

    #[test]
    fn a_change_in_place_with_the_same_size_and_mtime_is_seen_by_its_ctime() {
        let rt = round_trip(|t| {
            let path = t.join("etc/motd");
            let old = meta(&path);
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.rewind().unwrap();
            f.write_all(b"HELLO").unwrap();
            drop(f);
            // Put the modification time back: only the change time tells.
            set_times(&path, old.mtime(), old.mtime_nsec()).unwrap();
            assert_eq!((meta(&path).len(), meta(&path).mtime_nsec()), (old.len(), old.mtime_nsec()));
        });
        // Only the file: the folder did not change, and nothing else is copied.
        assert_eq!(rt.changes, ["M etc/motd"]);
        // etc/motd plus its folder.
        assert_eq!(rt.stored.entries, 2);
        assert_eq!(fs_err::read_to_string(rt.replayed.join("etc/motd")).unwrap(), "HELLO, world\n");
    }

    #[test]
    fn chmod_and_chown_alone_are_replayed() {
        let root = kiln_rootfs::userns::is_root();
        let rt = round_trip(|t| {
            fs_err::set_permissions(t.join("etc/hostname"), std::fs::Permissions::from_mode(0o600)).unwrap();
            fs_err::set_permissions(t.join("srv/site"), std::fs::Permissions::from_mode(0o2750)).unwrap();
            if root {
                std::os::unix::fs::lchown(t.join("srv/site/index.html"), Some(33), Some(33)).unwrap();
                std::os::unix::fs::lchown(t.join("etc/greeting"), Some(7), Some(8)).unwrap();
            }
        });
        let mut want = vec!["M etc/hostname", "M srv/site"];
        if root {
            want.insert(0, "M etc/greeting");
            want.push("M srv/site/index.html");
        }
        assert_eq!(rt.changes, want);
        assert_eq!(meta(&rt.replayed.join("srv/site")).mode() & 0o7777, 0o2750);
        if root {
            let m = meta(&rt.replayed.join("srv/site/index.html"));
            assert_eq!((m.uid(), m.gid()), (33, 33));
        }
    }

    #[test]
    fn removed_files_and_folders_become_whiteouts() {
        let rt = round_trip(|t| {
            fs_err::remove_file(t.join("etc/hostname")).unwrap();
            fs_err::remove_dir_all(t.join("var/cache/old")).unwrap();
        });
        // One whiteout for the whole folder.
        assert_eq!(rt.changes, ["M etc", "D etc/hostname", "M var/cache", "D var/cache/old"]);
        assert!(!rt.replayed.join("etc/hostname").exists());
        assert!(!rt.replayed.join("var/cache/old").exists());
    }

    #[test]
    fn a_folder_replaced_by_a_file_and_a_file_by_a_folder() {
        let rt = round_trip(|t| {
            fs_err::remove_dir_all(t.join("var/cache/old")).unwrap();
            fs_err::write(t.join("var/cache/old"), "now a file").unwrap();
            fs_err::remove_file(t.join("opt/keep")).unwrap();
            fs_err::create_dir(t.join("opt/keep")).unwrap();
            fs_err::write(t.join("opt/keep/inside"), "x").unwrap();
        });
        assert_eq!(
            rt.changes,
            ["M opt", "M opt/keep", "A opt/keep/inside", "M var/cache", "M var/cache/old"]
        );
        assert!(meta(&rt.replayed.join("var/cache/old")).is_file());
    }

    #[test]
    fn a_folder_made_again_loses_its_old_entries() {
        let rt = round_trip(|t| {
            fs_err::remove_dir_all(t.join("var/cache/old")).unwrap();
            fs_err::create_dir(t.join("var/cache/old")).unwrap();
            fs_err::write(t.join("var/cache/old/a"), "a again").unwrap();
        });
        assert_eq!(
            rt.changes,
            ["M var/cache", "M var/cache/old", "M var/cache/old/a", "D var/cache/old/deep"]
        );
        assert!(!rt.replayed.join("var/cache/old/deep").exists());
    }

    #[test]
    fn a_retargeted_symlink_is_replayed() {
        let rt = round_trip(|t| {
            let link = t.join("etc/greeting");
            let old = meta(&link);
            fs_err::remove_file(&link).unwrap();
            // A target of the same length, at the same modification time: the inode tells.
            symlink("MOTD", &link).unwrap();
            set_times(&link, old.mtime(), old.mtime_nsec()).unwrap();
        });
        assert_eq!(rt.changes, ["M etc", "M etc/greeting"]);
        assert_eq!(fs_err::read_link(rt.replayed.join("etc/greeting")).unwrap(), Path::new("MOTD"));
    }

    #[test]
    fn hard_links_are_replayed_as_hard_links() {
        let rt = round_trip(|t| {
            fs_err::hard_link(t.join("etc/motd"), t.join("srv/site/motd")).unwrap();
            // A write through one name of a linked pair changes both.
            let mut f = std::fs::OpenOptions::new().append(true).open(t.join("usr/bin/tool-again")).unwrap();
            f.write_all(b"exit 0\n").unwrap();
        });
        assert_eq!(
            rt.changes,
            ["M etc/motd", "M srv/site", "A srv/site/motd", "M usr/bin/tool", "M usr/bin/tool-again"]
        );
        for tree in [&rt.ran, &rt.replayed] {
            assert_eq!(meta(&tree.join("etc/motd")).ino(), meta(&tree.join("srv/site/motd")).ino());
            assert_eq!(meta(&tree.join("usr/bin/tool")).ino(), meta(&tree.join("usr/bin/tool-again")).ino());
            assert_eq!(meta(&tree.join("usr/bin/tool")).nlink(), 2);
        }
        assert!(fs_err::read_to_string(rt.replayed.join("usr/bin/tool")).unwrap().ends_with("exit 0\n"));
    }

    #[test]
    fn an_untouched_tree_stores_an_empty_change() {
        let rt = round_trip(|_| {});
        assert!(rt.changes.is_empty());
        assert_eq!(rt.stored.entries, 0);
    }

    #[test]
    fn steps_replayed_in_order_give_the_last_tree() {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        let replayed = dir.path().join("replayed");
        fs_err::create_dir(&ran).unwrap();
        make_tree(&ran);
        copy(&ran, &replayed);
        let cache = StepCache::new(dir.path().join("cache"));
        let steps: [&dyn Fn(&Path); 3] = [
            &|t| fs_err::write(t.join("etc/motd"), "first\n").unwrap(),
            &|t| {
                fs_err::remove_file(t.join("etc/motd")).unwrap();
                fs_err::create_dir(t.join("etc/motd")).unwrap();
            },
            &|t| fs_err::write(t.join("etc/motd/part"), "third\n").unwrap(),
        ];
        let mut before = Snapshot::take(&ran).unwrap();
        for (i, step) in steps.iter().enumerate() {
            step(&ran);
            let after = Snapshot::take(&ran).unwrap();
            cache.store(&step_key("stage", &i.to_string(), 0, false), &ran, &before, &after, &[]).unwrap();
            before = after;
        }
        for i in 0..steps.len() {
            cache.lookup(&step_key("stage", &i.to_string(), 0, false)).unwrap().replay(&replayed).unwrap();
        }
        assert_eq!(dump(&replayed), dump(&ran));
    }

    #[test]
    fn corrupt_or_partial_entries_are_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs_err::create_dir(&tree).unwrap();
        make_tree(&tree);
        let cache = StepCache::new(dir.path().join("cache"));
        let before = Snapshot::take(&tree).unwrap();
        fs_err::write(tree.join("etc/motd"), "changed\n").unwrap();
        let after = Snapshot::take(&tree).unwrap();
        let store = |key: &str| {
            cache.store(key, &tree, &before, &after, &[]).unwrap();
            dir.path().join("cache").join(key)
        };

        // A flipped byte in the layer.
        let key = step_key("stage", "layer", 0, false);
        let entry = store(&key);
        let layer = entry.join(LAYER);
        let mut bytes = fs_err::read(&layer).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs_err::write(&layer, bytes).unwrap();
        assert!(cache.lookup(&key).is_none());
        assert!(!entry.exists(), "a corrupt entry is removed");

        // meta.json edited after the fact.
        let key = step_key("stage", "meta", 0, false);
        let entry = store(&key);
        let text = fs_err::read_to_string(entry.join(META)).unwrap();
        fs_err::write(entry.join(META), text.replace("\"warnings\": []", "\"warnings\": [\"x\"]")).unwrap();
        assert!(cache.lookup(&key).is_none());

        // An entry under another key's name.
        let key = step_key("stage", "moved", 0, false);
        let entry = store(&key);
        let other = step_key("stage", "other", 0, false);
        fs_err::rename(&entry, dir.path().join("cache").join(&other)).unwrap();
        assert!(cache.lookup(&other).is_none());

        // No `.complete`: a half-written entry.
        let key = step_key("stage", "partial", 0, false);
        let entry = store(&key);
        fs_err::remove_file(entry.join(COMPLETE)).unwrap();
        assert!(cache.lookup(&key).is_none());

        // A temporary folder of a process that is gone is cleaned away; a live one's is not.
        let stale = dir.path().join("cache").join(format!(".{key}.tmp-{}", u32::MAX));
        let live = dir.path().join("cache").join(format!(".{key}.tmp-{}", std::process::id()));
        fs_err::create_dir_all(&stale).unwrap();
        fs_err::create_dir_all(&live).unwrap();
        cache.clean_stale();
        assert!(!stale.exists());
        assert!(live.exists());
    }

    #[test]
    fn a_step_that_makes_a_socket_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs_err::create_dir(&tree).unwrap();
        make_tree(&tree);
        let before = Snapshot::take(&tree).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(tree.join("etc/sock")).unwrap();
        let after = Snapshot::take(&tree).unwrap();
        let cache = StepCache::new(dir.path().join("cache"));
        let err = cache.store("k", &tree, &before, &after, &[]).unwrap_err();
        assert!(matches!(err, StepCacheError::Socket { ref path } if path == "etc/sock"), "{err}");
        assert!(cache.lookup("k").is_none());
    }

    #[test]
    fn every_input_of_the_key_changes_it() {
        let base = step_key("stage", "step", 1_700_000_000, false);
        assert_eq!(base, step_key("stage", "step", 1_700_000_000, false));
        for other in [
            step_key("stage2", "step", 1_700_000_000, false),
            step_key("stage", "step2", 1_700_000_000, false),
            step_key("stage", "step", 1_600_000_000, false),
            step_key("stage", "step", 1_700_000_000, true),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(base.len(), 64);
    }

    #[test]
    fn the_change_list_is_pure_over_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path());
        let a = Snapshot::take(dir.path()).unwrap();
        let b = Snapshot::take(dir.path()).unwrap();
        assert!(changes(&a, &b).is_empty(), "walking a tree changes nothing");
        assert!(a.index.get(&p("etc/motd")).is_some());
        assert_eq!(a.len(), b.len());
    }
}
