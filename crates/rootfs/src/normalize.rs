//! Making a configured tree reproducible: remove or empty what differs from one build to the next or must
//! be unique per machine, then clamp every modification time to the build's `SOURCE_DATE_EPOCH`.
//!
//! - `/etc/machine-id` is emptied (systemd makes one at first boot) and `/var/lib/dbus/machine-id` removed;
//! - logs: `dpkg.log`, `alternatives.log`, `bootstrap.log`, `apt/{history,term}.log`, `apt/eipp.log.xz` and
//!   the journal are removed, every other file under `/var/log` (`lastlog`, `wtmp`, ...) is emptied;
//! - caches: `/var/cache/apt/*.bin`, `/var/cache/ldconfig/aux-cache`, `/var/cache/debconf/*-old`,
//!   `/var/lib/dpkg/*-old`, man-db's `index.db` files under `/var/cache/man` are removed (`/etc/ld.so.cache`
//!   stays: ldconfig writes it in a stable order);
//! - `/etc/ssh/ssh_host_*` keys are removed; as Debian's `ssh.service` does not make missing keys, a
//!   `kiln-ssh-host-keys.service` oneshot (`ssh-keygen -A` before `ssh.service`) is installed and enabled
//!   when the tree has OpenSSH's server;
//! - the contents of `/run` and `/tmp` are removed;
//! - then every entry newer than the epoch gets the epoch as modification (and access) time, symlinks
//!   included (without following them).

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use filetime::FileTime;
use tracing::{debug, info};

use crate::digest::{tree_err, TreeError};
use crate::paths::resolve_in_root;

/// What [`normalize`] changed, as paths in the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NormalizeReport {
    pub removed: Vec<String>,
    pub emptied: Vec<String>,
    pub added: Vec<String>,
    /// How many entries got the epoch as modification time.
    pub clamped: usize,
}

const REMOVED_LOGS: &[&str] = &[
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/bootstrap.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
];

const SSH_KEYS_UNIT: &str = "\
# Installed by kiln: the image carries no SSH host keys, so that every machine gets its own.
[Unit]
Description=Generate missing SSH host keys
Before=ssh.service
ConditionPathExists=/usr/bin/ssh-keygen

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=ssh.service
";

/// Normalize the tree at `tree` for a build at `source_date_epoch`; see the module documentation.
pub fn normalize(tree: &Path, source_date_epoch: i64) -> Result<NormalizeReport, TreeError> {
    let mut report = NormalizeReport::default();
    let mut n = Normalizer { tree, report: &mut report };

    n.empty("etc/machine-id")?;
    n.remove("var/lib/dbus/machine-id")?;
    for log in REMOVED_LOGS {
        n.remove(log)?;
    }
    n.remove_matching("var/log/journal", |_| true, true)?;
    n.empty_all("var/log")?;
    n.remove_matching("var/cache/apt", |name| name.ends_with(".bin"), false)?;
    n.remove("var/cache/ldconfig/aux-cache")?;
    n.remove_matching("var/cache/debconf", |name| name.ends_with("-old"), false)?;
    n.remove_matching("var/lib/dpkg", |name| name.ends_with("-old"), false)?;
    n.remove_named_below("var/cache/man", "index.db")?;
    let had_keys = n.remove_matching("etc/ssh", |name| name.starts_with("ssh_host_"), false)?;
    n.remove_matching("run", |_| true, true)?;
    n.remove_matching("tmp", |_| true, true)?;
    let sshd = ["lib/systemd/system/ssh.service", "usr/lib/systemd/system/ssh.service"]
        .iter()
        .any(|p| resolve_in_root(tree, Path::new(p), true).is_ok_and(|p| p.is_file()));
    if sshd {
        n.install_ssh_keys_unit()?;
    }
    if had_keys && !sshd {
        debug!("SSH host keys removed; no ssh.service in the tree");
    }

    report.clamped = clamp(tree, source_date_epoch)?;
    info!(
        removed = report.removed.len(),
        emptied = report.emptied.len(),
        clamped = report.clamped,
        "tree normalized"
    );
    Ok(report)
}

struct Normalizer<'a> {
    tree: &'a Path,
    report: &'a mut NormalizeReport,
}

impl Normalizer<'_> {
    /// The host path of a tree path, its parent resolved inside the tree.
    fn host(&self, rel: &str) -> Result<PathBuf, TreeError> {
        resolve_in_root(self.tree, Path::new(rel), false).map_err(tree_err(self.tree))
    }

    fn shown(&self, path: &Path) -> String {
        format!("/{}", path.strip_prefix(self.tree).unwrap_or(path).display())
    }

    fn remove(&mut self, rel: &str) -> Result<(), TreeError> {
        let path = self.host(rel)?;
        self.remove_path(&path)
    }

    fn remove_path(&mut self, path: &Path) -> Result<(), TreeError> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(tree_err(path)(e)),
        };
        if meta.is_dir() {
            std::fs::remove_dir_all(path).map_err(tree_err(path))?;
        } else {
            std::fs::remove_file(path).map_err(tree_err(path))?;
        }
        self.report.removed.push(self.shown(path));
        Ok(())
    }

    fn empty(&mut self, rel: &str) -> Result<(), TreeError> {
        let path = self.host(rel)?;
        self.empty_path(&path)
    }

    fn empty_path(&mut self, path: &Path) -> Result<(), TreeError> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_file() && m.len() > 0 => {
                std::fs::OpenOptions::new().write(true).truncate(true).open(path).map_err(tree_err(path))?;
                self.report.emptied.push(self.shown(path));
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(tree_err(path)(e)),
        }
    }

    /// Empty every regular file below `rel`.
    fn empty_all(&mut self, rel: &str) -> Result<(), TreeError> {
        let dir = self.host(rel)?;
        for path in sorted_children(&dir)? {
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    let sub = path.strip_prefix(self.tree).unwrap_or(&path).to_string_lossy().into_owned();
                    self.empty_all(&sub)?;
                }
                _ => self.empty_path(&path)?,
            }
        }
        Ok(())
    }

    /// Remove the entries of directory `rel` whose names match (directories too when `dirs`); whether any was.
    fn remove_matching(
        &mut self,
        rel: &str,
        matches: impl Fn(&str) -> bool,
        dirs: bool,
    ) -> Result<bool, TreeError> {
        let dir = self.host(rel)?;
        let dir = if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            resolve_in_root(self.tree, Path::new(rel), true).map_err(tree_err(self.tree))?
        } else {
            dir
        };
        let mut any = false;
        for path in sorted_children(&dir)? {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if matches(&name) && (dirs || !is_dir) {
                self.remove_path(&path)?;
                any = true;
            }
        }
        Ok(any)
    }

    /// Remove every file named `name` below `rel`.
    fn remove_named_below(&mut self, rel: &str, name: &str) -> Result<(), TreeError> {
        let dir = self.host(rel)?;
        for path in sorted_children(&dir)? {
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                let sub = path.strip_prefix(self.tree).unwrap_or(&path).to_string_lossy().into_owned();
                self.remove_named_below(&sub, name)?;
            } else if path.file_name().is_some_and(|n| n == name) {
                self.remove_path(&path)?;
            }
        }
        Ok(())
    }

    fn install_ssh_keys_unit(&mut self) -> Result<(), TreeError> {
        let unit = self.host("etc/systemd/system/kiln-ssh-host-keys.service")?;
        let wants = self.host("etc/systemd/system/ssh.service.wants")?;
        let parent = unit.parent().unwrap_or(self.tree);
        std::fs::create_dir_all(parent).map_err(tree_err(parent))?;
        std::fs::create_dir_all(&wants).map_err(tree_err(&wants))?;
        std::fs::write(&unit, SSH_KEYS_UNIT).map_err(tree_err(&unit))?;
        let link = wants.join("kiln-ssh-host-keys.service");
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("/etc/systemd/system/kiln-ssh-host-keys.service", &link)
                .map_err(tree_err(&link))?;
        }
        self.report.added.push(self.shown(&unit));
        self.report.added.push(self.shown(&link));
        Ok(())
    }
}

/// The entries of a directory, sorted; none when it does not exist.
fn sorted_children(dir: &Path) -> Result<Vec<PathBuf>, TreeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return Ok(Vec::new()),
        Err(e) => return Err(tree_err(dir)(e)),
    };
    let mut out =
        entries.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>().map_err(tree_err(dir))?;
    out.sort();
    Ok(out)
}

/// Give every entry newer than `epoch` the epoch as its times; how many were.
fn clamp(tree: &Path, epoch: i64) -> Result<usize, TreeError> {
    let mut count = 0;
    let mut stack = vec![tree.to_path_buf()];
    let t = FileTime::from_unix_time(epoch, 0);
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(tree_err(&path))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(tree_err(&path))? {
                stack.push(entry.map_err(tree_err(&path))?.path());
            }
        }
        if (meta.mtime(), meta.mtime_nsec()) > (epoch, 0) {
            filetime::set_symlink_file_times(&path, t, t).map_err(tree_err(&path))?;
            count += 1;
        }
    }
    Ok(count)
}
