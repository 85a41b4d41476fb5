//! Unpacking an ordered list of .deb files into an empty directory, in parallel, then writing dpkg's
//! database for them (see [`crate::dpkgdb`]).
//!
//! Every package's data archive is extracted on its own worker (at most one per core). Files, symlinks and
//! device nodes are written under a temporary name and renamed into place while holding a claim table keyed by
//! the resolved path, so that when two packages ship the same path the one later in the given order wins
//! whatever the timing, as dpkg's `Replaces` handling would leave it; the earlier package's `.list` then
//! leaves the path out. Directories are created by whoever comes first and get the metadata of the first
//! package in order that ships them (as dpkg leaves an existing directory alone). Paths are resolved inside
//! the tree (`bin/sh` through a merged-/usr `bin -> usr/bin` symlink lands in `usr/bin/sh`), never outside.
//! Conffiles are unpacked as `PATH.dpkg-new`, which `dpkg --configure` moves into place. Nothing is synced to
//! disk: the tree is rebuilt, not precious (dpkg's `--force-unsafe-io`).

use std::collections::{HashMap, HashSet};
use std::fs::{OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use filetime::FileTime;
use md5::{Digest, Md5};
use tracing::{debug, info, warn};

use crate::control::relation_names;
use crate::deb::{Deb, DebError};
use crate::dpkgdb::{write_database, DbError, DbPackage};
use crate::paths::{normalize_member, resolve_in_root};

/// How to unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// dpkg's native architecture, written to `var/lib/dpkg/arch`.
    pub arch: String,
    /// Create the merged-/usr symlinks (`bin -> usr/bin`, `sbin`, `lib`, and `lib64` where the architecture
    /// has one) before unpacking, as debootstrap and mmdebstrap do for bookworm and later.
    pub merged_usr: bool,
    /// Give files the numeric owners of the archive. `None`: when running as root. Without it every file
    /// belongs to the caller (who is root inside the sandbox's user namespace) and device nodes are skipped.
    pub preserve_owners: Option<bool>,
    /// Parallel workers; `None`: one per core.
    pub jobs: Option<usize>,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self { arch: "amd64".to_owned(), merged_usr: true, preserve_owners: None, jobs: None }
    }
}

/// A problem unpacking.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error("writing the dpkg database: {0}")]
    Database(#[from] DbError),
    #[error("the target {path} exists and is not an empty directory")]
    TreeNotEmpty { path: PathBuf },
    #[error("{path}: {source}")]
    Tree { path: PathBuf, source: io::Error },
    #[error("package {package}: member `{member}`: {message}")]
    Member { package: String, member: String, message: String },
    #[error("package {package}: member `{member}`: {source}")]
    Io { package: String, member: String, source: io::Error },
    #[error("package {package}: member `{member}` is a {shipped} but the tree has a {found} there")]
    TypeConflict { package: String, member: String, shipped: &'static str, found: &'static str },
    #[error("package {package} is in the list twice ({first} and {second})")]
    Duplicate { package: String, first: PathBuf, second: PathBuf },
}

/// What was unpacked, in the given order.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub arch: String,
    pub packages: Vec<UnpackedPackage>,
    /// Whether files got the archive's owners.
    pub owners_preserved: bool,
    /// Device nodes not created because owners were not preserved (`package: /path`).
    pub skipped_devices: Vec<String>,
}

/// One unpacked package, as configuration needs it.
#[derive(Debug, Clone)]
pub struct UnpackedPackage {
    pub name: String,
    /// dpkg's name for it: `NAME` or `NAME:ARCH` for `Multi-Arch: same`.
    pub db_name: String,
    pub version: String,
    pub architecture: String,
    pub essential: bool,
    pub has_preinst: bool,
    pub pre_depends: String,
    pub depends: String,
    pub provides: String,
}

impl UnpackedPackage {
    fn from_deb(deb: &Deb) -> Self {
        let field = |name| deb.control.get(name).unwrap_or("").to_owned();
        Self {
            name: deb.name.clone(),
            db_name: deb.db_name(),
            version: deb.version.clone(),
            architecture: deb.architecture.clone(),
            essential: deb.control.get("Essential").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            has_preinst: deb.member("preinst").is_some(),
            pre_depends: field("Pre-Depends"),
            depends: field("Depends"),
            provides: field("Provides"),
        }
    }
}

/// Unpack `debs` (in the order where later packages win overlapping paths) into `tree`, which must be missing
/// or empty, and write dpkg's database: every package ends `install ok unpacked`, ready for
/// [`crate::configure()`].
pub fn unpack(debs: &[PathBuf], tree: &Path, opts: &UnpackOptions) -> Result<Unpacked, UnpackError> {
    let tree_err = |path: &Path| {
        let path = path.to_owned();
        move |source| UnpackError::Tree { path, source }
    };
    if std::fs::read_dir(tree).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(UnpackError::TreeNotEmpty { path: tree.to_owned() });
    }
    prepare_tree(tree, opts).map_err(tree_err(tree))?;
    let tree = &fs_err::canonicalize(tree).map_err(tree_err(tree))?;
    let preserve_owners = opts.preserve_owners.unwrap_or_else(|| rustix::process::geteuid().is_root());
    let jobs = crate::par::jobs(opts.jobs);
    info!(packages = debs.len(), jobs, tree = %tree.display(), "unpacking packages");

    // Control archives first: small, and every later step needs them.
    let schedule: Vec<usize> = (0..debs.len()).collect();
    let opened = crate::par::run(&schedule, jobs, |i| Deb::open(&debs[i]), Result::is_err);
    let packages = opened.into_iter().flatten().collect::<Result<Vec<Deb>, DebError>>()?;
    let mut names: HashMap<String, &Path> = HashMap::new();
    for deb in &packages {
        if let Some(first) = names.insert(deb.db_name(), &deb.path) {
            return Err(UnpackError::Duplicate {
                package: deb.db_name(),
                first: first.to_owned(),
                second: deb.path.clone(),
            });
        }
    }

    // Largest archives first, so that no worker is left with a big one at the end.
    let mut schedule = schedule;
    let size = |i: usize| std::fs::metadata(&debs[i]).map_or(0, |m| m.len());
    schedule.sort_by_key(|&i| std::cmp::Reverse(size(i)));
    let shared = Shared {
        root: tree,
        preserve_owners,
        state: Mutex::new(State::default()),
        skipped: Mutex::new(Vec::new()),
    };
    let results = crate::par::run(&schedule, jobs, |i| shared.extract(i, &packages[i]), Result::is_err);
    let mut extracted = Vec::with_capacity(packages.len());
    // A `None` is a job not started after a failure; the first failure in package order is reported.
    for r in results.into_iter().flatten() {
        extracted.push(r?);
    }
    // Hard links last, in package order, from each package's own copy of the target.
    for (idx, (deb, ex)) in packages.iter().zip(&extracted).enumerate() {
        for (n, link) in ex.hardlinks.iter().enumerate() {
            shared.hardlink(idx, n, &deb.name, link)?;
        }
    }
    let State { claims, retained } = shared.state.into_inner().unwrap_or_else(|e| e.into_inner());
    for path in retained.values() {
        std::fs::remove_file(path).map_err(tree_err(path))?;
    }
    let mut skipped_devices = shared.skipped.into_inner().unwrap_or_else(|e| e.into_inner());
    skipped_devices.sort();
    report_overlaps(&packages, &claims);

    // Directory metadata: the first package in order that ships a directory sets it.
    let mut seen = HashSet::new();
    let mut dir_times = Vec::new();
    for (pkg, ex) in packages.iter().zip(&extracted) {
        for dir in &ex.dirs {
            if !seen.insert(dir.host.clone()) {
                continue;
            }
            let meta = match std::fs::symlink_metadata(&dir.host) {
                Ok(m) if m.is_dir() => m,
                _ => continue, // a symlink to a directory (merged /usr): dpkg leaves it alone
            };
            let io =
                |source| UnpackError::Io { package: pkg.name.clone(), member: dir.member.clone(), source };
            if preserve_owners {
                std::os::unix::fs::chown(&dir.host, Some(dir.uid), Some(dir.gid)).map_err(io)?;
            }
            if meta.permissions().mode() & 0o7777 != dir.mode || preserve_owners {
                std::fs::set_permissions(&dir.host, Permissions::from_mode(dir.mode)).map_err(io)?;
            }
            dir_times.push((dir.host.clone(), dir.mtime));
        }
    }

    let db: Vec<DbPackage<'_>> = packages
        .iter()
        .zip(extracted)
        .enumerate()
        .map(|(i, (deb, ex))| {
            let owned = |e: &Listed| match &e.claim {
                None => true,
                Some(key) => claims.get(key).is_some_and(|c| c.pkg == i),
            };
            // The list: what the package still owns, symlinks last, as dpkg writes it.
            let (symlinks, others): (Vec<&Listed>, Vec<&Listed>) =
                ex.listed.iter().filter(|e| owned(e)).partition(|e| e.symlink);
            let list = others.into_iter().chain(symlinks).map(|e| e.rel.clone()).collect();
            // Generated md5sums are written when the package is unpacked: every file it shipped.
            let md5 = ex.listed.iter().filter_map(|e| e.md5.map(|m| (e.rel.clone(), m))).collect();
            DbPackage { deb, list, md5 }
        })
        .collect();
    write_database(tree, &db, &opts.arch)?;
    for (path, mtime) in dir_times {
        let t = FileTime::from_unix_time(mtime, 0);
        filetime::set_symlink_file_times(&path, t, t).map_err(tree_err(&path))?;
    }

    info!(packages = packages.len(), "unpacked");
    Ok(Unpacked {
        arch: opts.arch.clone(),
        packages: packages.iter().map(UnpackedPackage::from_deb).collect(),
        owners_preserved: preserve_owners,
        skipped_devices,
    })
}

fn prepare_tree(tree: &Path, opts: &UnpackOptions) -> io::Result<()> {
    match std::fs::symlink_metadata(tree) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs_err::create_dir_all(tree)?,
        Err(e) => return Err(e),
    }
    std::fs::set_permissions(tree, Permissions::from_mode(0o755))?;
    if opts.merged_usr {
        for dir in merged_usr_dirs(&opts.arch) {
            fs_err::create_dir_all(tree.join("usr").join(dir))?;
            fs_err::os::unix::fs::symlink(format!("usr/{dir}"), tree.join(dir))?;
        }
    }
    Ok(())
}

/// The top-level directories that merged /usr turns into symlinks into `usr/`.
pub fn merged_usr_dirs(arch: &str) -> Vec<&'static str> {
    let mut dirs = vec!["bin", "sbin", "lib"];
    if matches!(arch, "amd64" | "ppc64el" | "loong64") {
        dirs.push("lib64");
    }
    dirs
}

/// A path the package's `.list` names.
#[derive(Debug)]
struct Listed {
    rel: PathBuf,
    /// The claim key of a non-directory: ownership is decided by the claim table.
    claim: Option<PathBuf>,
    md5: Option<[u8; 16]>,
    /// dpkg creates symlinks after everything else, and lists them last.
    symlink: bool,
}

#[derive(Debug)]
struct DirMeta {
    member: String,
    host: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// A hard link, made once every package is extracted.
#[derive(Debug)]
struct HardLink {
    member: String,
    /// Claim key (resolved path) of the link and of its target.
    key: PathBuf,
    target: PathBuf,
}

#[derive(Debug)]
struct Extracted {
    listed: Vec<Listed>,
    dirs: Vec<DirMeta>,
    hardlinks: Vec<HardLink>,
}

#[derive(Debug)]
struct Claim {
    pkg: usize,
    /// Where the winning file was written (`.dpkg-new` for a conffile).
    written: PathBuf,
    earlier: Vec<usize>,
}

/// Who owns which path, and the copies of paths that packages lost to later ones (kept until the hard links
/// are made, then removed).
#[derive(Debug, Default)]
struct State {
    claims: HashMap<PathBuf, Claim>,
    /// (package, claim key) -> where that package's copy is, when not in place.
    retained: HashMap<(usize, PathBuf), PathBuf>,
}

struct Shared<'a> {
    root: &'a Path,
    preserve_owners: bool,
    state: Mutex<State>,
    /// Device nodes listed but not created (no owners preserved, so not root).
    skipped: Mutex<Vec<String>>,
}

/// What a tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Fifo,
}

impl Kind {
    fn of(t: tar::EntryType) -> Option<Self> {
        use tar::EntryType as T;
        Some(match t {
            T::Directory => Self::Dir,
            T::Regular | T::Continuous => Self::File,
            T::Link => Self::HardLink,
            T::Symlink => Self::Symlink,
            T::Char => Self::Char,
            T::Block => Self::Block,
            T::Fifo => Self::Fifo,
            _ => return None,
        })
    }
    fn noun(self) -> &'static str {
        match self {
            Self::Dir => "directory",
            Self::File | Self::HardLink => "file",
            Self::Symlink => "symlink",
            Self::Char | Self::Block => "device node",
            Self::Fifo => "fifo",
        }
    }
}

impl Shared<'_> {
    fn extract(&self, idx: usize, deb: &Deb) -> Result<Extracted, UnpackError> {
        let package = deb.name.as_str();
        let conffiles: HashSet<String> = deb.conffiles().into_iter().map(|c| c.path).collect();
        let want_md5 = deb.member("md5sums").is_none();
        let mut out = Extracted { listed: Vec::new(), dirs: Vec::new(), hardlinks: Vec::new() };
        let mut md5_of: HashMap<PathBuf, [u8; 16]> = HashMap::new();
        let mut counter = 0usize;
        // Where the package's directories resolve to: most entries share a parent with the one before.
        let mut parents: HashMap<PathBuf, PathBuf> = HashMap::new();
        debug!(package, "extracting");
        deb.with_data(|tar| {
            let entries = tar.entries().map_err(|e| UnpackError::Io {
                package: package.to_owned(),
                member: "data.tar".to_owned(),
                source: e,
            })?;
            for entry in entries {
                let mut entry = entry.map_err(|e| UnpackError::Io {
                    package: package.to_owned(),
                    member: "data.tar".to_owned(),
                    source: e,
                })?;
                let raw = entry.path().map(|p| p.into_owned()).unwrap_or_default();
                let member = raw.display().to_string();
                let io = |source: io::Error| UnpackError::Io {
                    package: package.to_owned(),
                    member: member.clone(),
                    source,
                };
                let bad = |message: String| UnpackError::Member {
                    package: package.to_owned(),
                    member: member.clone(),
                    message,
                };
                let rel = normalize_member(&raw).ok_or_else(|| bad("the path leaves the tree".to_owned()))?;
                let header = entry.header().clone();
                let kind = Kind::of(header.entry_type())
                    .ok_or_else(|| bad(format!("unsupported tar entry type {:?}", header.entry_type())))?;
                let mode = header.mode().map_err(io)? & 0o7777;
                let uid = u32::try_from(header.uid().map_err(io)?).map_err(|_| bad("uid out of range".to_owned()))?;
                let gid = u32::try_from(header.gid().map_err(io)?).map_err(|_| bad("gid out of range".to_owned()))?;
                let mtime = i64::try_from(header.mtime().map_err(io)?).unwrap_or(i64::MAX);

                if rel.as_os_str().is_empty() {
                    if kind != Kind::Dir {
                        return Err(bad("the tree's root is not a directory".to_owned()));
                    }
                    out.listed.push(Listed { rel, claim: None, md5: None, symlink: false });
                    continue;
                }
                let (Some(parent_rel), Some(name)) = (rel.parent(), rel.file_name()) else {
                    return Err(bad("no file name".to_owned()));
                };
                let parent = match parents.get(parent_rel) {
                    Some(p) => p.clone(),
                    None => {
                        let parent = resolve_in_root(self.root, parent_rel, true).map_err(io)?;
                        match std::fs::symlink_metadata(&parent) {
                            Ok(m) if m.is_dir() => {}
                            Ok(_) => {
                                return Err(UnpackError::TypeConflict {
                                    package: package.to_owned(),
                                    member: parent_rel.display().to_string(),
                                    shipped: "directory",
                                    found: "file",
                                })
                            }
                            Err(_) => std::fs::create_dir_all(&parent).map_err(io)?,
                        }
                        parents.insert(parent_rel.to_owned(), parent.clone());
                        parent
                    }
                };
                let host = parent.join(name);

                if kind == Kind::Dir {
                    self.make_dir(&host).map_err(|e| match e {
                        DirProblem::Io(source) => UnpackError::Io {
                            package: package.to_owned(),
                            member: member.clone(),
                            source,
                        },
                        DirProblem::NotADir(found) => UnpackError::TypeConflict {
                            package: package.to_owned(),
                            member: member.clone(),
                            shipped: "directory",
                            found,
                        },
                    })?;
                    out.dirs.push(DirMeta { member: member.clone(), host, mode, uid, gid, mtime });
                    out.listed.push(Listed { rel, claim: None, md5: None, symlink: false });
                    continue;
                }

                counter += 1;
                let temp = parent.join(format!(".kiln-{idx}-{counter}"));
                let dest = if kind == Kind::File && conffiles.contains(&crate::paths::dpkg_path(&rel)) {
                    let mut n = name.to_os_string();
                    n.push(".dpkg-new");
                    parent.join(n)
                } else {
                    host.clone()
                };
                let owner = self.preserve_owners.then_some((uid, gid));
                let mut md5 = None;
                match kind {
                    Kind::File => {
                        let digest = write_file(&mut entry, &temp, mode, owner, mtime, want_md5).map_err(io)?;
                        if let Some(d) = digest {
                            md5_of.insert(rel.clone(), d);
                            md5 = Some(d);
                        }
                    }
                    Kind::HardLink => {
                        let link = entry.link_name().map_err(io)?.ok_or_else(|| bad("hard link without target".to_owned()))?;
                        let target_rel =
                            normalize_member(&link).ok_or_else(|| bad("hard link target leaves the tree".to_owned()))?;
                        let target = resolve_in_root(self.root, &target_rel, false).map_err(io)?;
                        md5 = md5_of.get(&target_rel).copied();
                        if let Some(d) = md5 {
                            md5_of.insert(rel.clone(), d);
                        }
                        out.hardlinks.push(HardLink { member: member.clone(), key: host.clone(), target });
                        out.listed.push(Listed { rel, claim: Some(host), md5, symlink: false });
                        continue;
                    }
                    Kind::Symlink => {
                        let target = entry.link_name().map_err(io)?.ok_or_else(|| bad("symlink without target".to_owned()))?;
                        std::os::unix::fs::symlink(&target, &temp).map_err(io)?;
                        if let Some((u, g)) = owner {
                            std::os::unix::fs::lchown(&temp, Some(u), Some(g)).map_err(io)?;
                        }
                        let t = FileTime::from_unix_time(mtime, 0);
                        filetime::set_symlink_file_times(&temp, t, t).map_err(io)?;
                    }
                    Kind::Char | Kind::Block | Kind::Fifo => {
                        if kind != Kind::Fifo && owner.is_none() {
                            warn!(package, path = %crate::paths::dpkg_path(&rel), "device node skipped: not running as root");
                            let entry = format!("{package}: {}", crate::paths::dpkg_path(&rel));
                            self.skipped.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
                            out.listed.push(Listed { rel, claim: None, md5: None, symlink: false });
                            continue;
                        }
                        let (major, minor) = if kind == Kind::Fifo {
                            (0, 0)
                        } else {
                            let major = header.device_major().map_err(io)?.unwrap_or(0);
                            (major, header.device_minor().map_err(io)?.unwrap_or(0))
                        };
                        make_node(&temp, kind, mode, major, minor, owner, mtime).map_err(io)?;
                    }
                    Kind::Dir => unreachable!("handled above"),
                }
                self.commit(idx, host.clone(), &temp, dest).map_err(|e| match e {
                    DirProblem::Io(source) => UnpackError::Io { package: package.to_owned(), member: member.clone(), source },
                    DirProblem::NotADir(_) => UnpackError::TypeConflict {
                        package: package.to_owned(),
                        member: member.clone(),
                        shipped: kind.noun(),
                        found: "directory",
                    },
                })?;
                out.listed.push(Listed { rel, claim: Some(host), md5, symlink: kind == Kind::Symlink });
            }
            Ok(())
        })?;
        debug!(package, entries = out.listed.len(), "extracted");
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make a hard link from the package's own copy of its target: in place if the package still owns the
    /// target, the copy it lost to a later package otherwise (so the link has this package's content, as with
    /// dpkg, which unpacks packages one after the other).
    fn hardlink(&self, idx: usize, n: usize, package: &str, link: &HardLink) -> Result<(), UnpackError> {
        let io =
            |source| UnpackError::Io { package: package.to_owned(), member: link.member.clone(), source };
        let source = {
            let state = self.lock();
            match state.claims.get(&link.target) {
                Some(c) if c.pkg == idx => Some(c.written.clone()),
                _ => state.retained.get(&(idx, link.target.clone())).cloned(),
            }
        };
        let source = source.ok_or_else(|| UnpackError::Member {
            package: package.to_owned(),
            member: link.member.clone(),
            message: format!("hard link to {}, which the package does not ship", link.target.display()),
        })?;
        let parent = link.key.parent().unwrap_or(self.root);
        let temp = parent.join(format!(".kiln-{idx}-link-{n}"));
        std::fs::hard_link(&source, &temp).map_err(io)?;
        self.commit(idx, link.key.clone(), &temp, link.key.clone()).map_err(|e| match e {
            DirProblem::Io(source) => io(source),
            DirProblem::NotADir(_) => UnpackError::TypeConflict {
                package: package.to_owned(),
                member: link.member.clone(),
                shipped: "file",
                found: "directory",
            },
        })
    }

    /// Create a directory the package ships, or accept what is there when it is (or links to) a directory.
    fn make_dir(&self, host: &Path) -> Result<(), DirProblem> {
        match std::fs::symlink_metadata(host) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(m) if m.file_type().is_symlink() => {
                let rel = host.strip_prefix(self.root).unwrap_or(host);
                let target = resolve_in_root(self.root, rel, true).map_err(DirProblem::Io)?;
                match std::fs::metadata(target) {
                    Ok(t) if t.is_dir() => Ok(()),
                    _ => Err(DirProblem::NotADir("symlink to a non-directory")),
                }
            }
            Ok(_) => Err(DirProblem::NotADir("file")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(host) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.make_dir(host),
                Err(e) => Err(DirProblem::Io(e)),
            },
            Err(e) => Err(DirProblem::Io(e)),
        }
    }

    /// Move a written entry into place unless a later package already owns the path. A copy that loses (this
    /// one, or the earlier package's one it replaces) is kept aside until the hard links are made.
    fn commit(&self, idx: usize, key: PathBuf, temp: &Path, dest: PathBuf) -> Result<(), DirProblem> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut earlier = Vec::new();
        if let Some(c) = state.claims.get_mut(&key) {
            if c.pkg > idx {
                c.earlier.push(idx);
                state.retained.insert((idx, key), temp.to_owned());
                return Ok(());
            }
            let aside = temp.with_file_name(format!(".kiln-{}-replaced-{}", c.pkg, state.retained.len()));
            match std::fs::rename(&c.written, &aside) {
                Ok(()) if c.pkg != idx => {
                    state.retained.insert((c.pkg, key.clone()), aside);
                }
                Ok(()) => std::fs::remove_file(&aside).map_err(DirProblem::Io)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(DirProblem::Io(e)),
            }
            earlier = std::mem::take(&mut c.earlier);
            if c.pkg != idx {
                earlier.push(c.pkg);
            }
        }
        if let Err(e) = std::fs::rename(temp, &dest) {
            let _ = std::fs::remove_file(temp);
            return Err(if dest.is_dir() { DirProblem::NotADir("directory") } else { DirProblem::Io(e) });
        }
        state.claims.insert(key, Claim { pkg: idx, written: dest, earlier });
        Ok(())
    }
}

enum DirProblem {
    Io(io::Error),
    NotADir(&'static str),
}

/// Write a regular file's content, owner, mode and mtime; its md5 when asked.
fn write_file(
    content: &mut impl Read,
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
    want_md5: bool,
) -> io::Result<Option<[u8; 16]>> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    let digest = if want_md5 {
        let mut w = Md5Writer { inner: &mut file, md5: Md5::new() };
        io::copy(content, &mut w)?;
        Some(w.md5.finalize().into())
    } else {
        io::copy(content, &mut file)?;
        None
    };
    if let Some((u, g)) = owner {
        std::os::unix::fs::fchown(&file, Some(u), Some(g))?;
    }
    file.set_permissions(Permissions::from_mode(mode))?;
    file.set_modified(unix_time(mtime))?;
    Ok(digest)
}

fn make_node(
    path: &Path,
    kind: Kind,
    mode: u32,
    major: u32,
    minor: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
) -> io::Result<()> {
    use rustix::fs::FileType;
    let file_type = match kind {
        Kind::Char => FileType::CharacterDevice,
        Kind::Block => FileType::BlockDevice,
        _ => FileType::Fifo,
    };
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        file_type,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(major, minor),
    )?;
    if let Some((u, g)) = owner {
        std::os::unix::fs::lchown(path, Some(u), Some(g))?;
    }
    std::fs::set_permissions(path, Permissions::from_mode(mode))?;
    let t = FileTime::from_unix_time(mtime, 0);
    filetime::set_symlink_file_times(path, t, t)
}

fn unix_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

struct Md5Writer<'a, W> {
    inner: &'a mut W,
    md5: Md5,
}

impl<W: Write> Write for Md5Writer<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.md5.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Tell which paths a later package took over from an earlier one, and warn when it does not say `Replaces`.
fn report_overlaps(packages: &[Deb], claims: &HashMap<PathBuf, Claim>) {
    let mut keys: Vec<&PathBuf> = claims.keys().filter(|k| !claims[*k].earlier.is_empty()).collect();
    keys.sort();
    for key in keys {
        let claim = &claims[key];
        let winner = &packages[claim.pkg];
        for &e in &claim.earlier {
            let loser = &packages[e];
            let replaces =
                winner.control.get("Replaces").is_some_and(|r| relation_names(r).any(|n| n == loser.name));
            if replaces {
                info!(path = %key.display(), package = %winner.name, replaces = %loser.name, "file taken over");
            } else {
                warn!(path = %key.display(), package = %winner.name, earlier = %loser.name,
                    "file shipped by two packages without Replaces; the later one wins");
            }
        }
    }
}
