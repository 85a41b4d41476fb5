//! Unprivileged builds: the whole build runs as root of a user namespace that maps the caller to root and
//! the caller's subordinate ids (`/etc/subuid`, `/etc/subgid`) to the ids above, the way rootless container
//! tools and `mmdebstrap --mode=unshare` do it.
//!
//! A Debian tree needs many ids: base-files gives `/var/mail` to group `mail`, shadow's tools belong to group
//! `shadow`, `_apt` owns apt's partial downloads, and a blueprint makes its own users. A user namespace that
//! maps only the caller cannot own those files, so a build started by an unprivileged user re-executes
//! itself, before any work, through `unshare --user --map-auto --map-root-user` (util-linux, with the setuid
//! `newuidmap`/`newgidmap` of package `uidmap` writing the maps). Inside, kiln is root of its namespace: the
//! same code path as a root build, the same tree and the same digests; the per-command sandboxes nest their
//! mount, PID and network namespaces in it.
//!
//! Files the build leaves in a kept tree or in the stage cache belong to subordinate ids on the host; the
//! caller removes them from inside such a namespace (`unshare --map-auto --map-root-user rm -rf DIR`).

use std::{convert::Infallible, ffi::OsString, path::PathBuf};

/// Set in the re-executed process, so that it never re-executes again.
pub const INSIDE_ENV: &str = "KILN_USER_NAMESPACE";

/// The fewest subordinate ids a build needs: Debian uses ids up to 65534 (`nobody`).
pub const MIN_SUBORDINATE_IDS: u64 = 65_535;

/// Why an unprivileged build cannot start.
#[derive(Debug, thiserror::Error)]
pub enum UserNsError {
    #[error(
        "unprivileged builds need subordinate ids: {file} has no range of at least {MIN_SUBORDINATE_IDS} ids \
         for user `{user}` (uid {uid}); add one as root, e.g. `usermod --add-subuids 100000-165535 \
         --add-subgids 100000-165535 {user}`, or build as root"
    )]
    NoSubordinateIds { file: &'static str, user: String, uid: u32 },
    #[error("unprivileged builds need `{0}` (Debian package `uidmap`), or build as root")]
    MissingTool(&'static str),
    #[error(
        "still not root inside the user namespace (uid {0}); the kernel or `unshare` refused the mapping"
    )]
    NotRootInside(u32),
    #[error("cannot find kiln's own executable: {0}")]
    OwnExecutable(std::io::Error),
    #[error("cannot start `unshare`: {0}")]
    Exec(std::io::Error),
}

/// A range of subordinate ids: `first` and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub first: u64,
    pub count: u64,
}

/// The first range `/etc/subuid`-format `text` gives the user (by name or uid), as `unshare --map-auto`
/// takes it.
pub fn subordinate_range(text: &str, user: &str, uid: u32) -> Option<IdRange> {
    let uid = uid.to_string();
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (owner, first, count) = (fields.next()?, fields.next()?, fields.next()?);
        if owner != user && owner != uid {
            return None;
        }
        Some(IdRange { first: first.parse().ok()?, count: count.parse().ok()? })
    })
}

/// Whether this process is root (of its user namespace, if any).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// As root: returns at once. Otherwise checks that the caller has subordinate ids and the tools, then
/// replaces this process by itself run as root of a new user namespace (same arguments, environment and
/// standard streams); it returns only on error.
pub fn become_root() -> Result<(), UserNsError> {
    if is_root() {
        return Ok(());
    }
    let uid = rustix::process::geteuid().as_raw();
    if std::env::var_os(INSIDE_ENV).is_some() {
        return Err(UserNsError::NotRootInside(uid));
    }
    let user = user_name(uid).unwrap_or_else(|| uid.to_string());
    for (file, tool) in [("/etc/subuid", "newuidmap"), ("/etc/subgid", "newgidmap")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        match subordinate_range(&text, &user, uid) {
            Some(r) if r.count >= MIN_SUBORDINATE_IDS => {}
            _ => return Err(UserNsError::NoSubordinateIds { file, user, uid }),
        }
        if find_tool(tool).is_none() {
            return Err(UserNsError::MissingTool(tool));
        }
    }
    let unshare = find_tool("unshare").ok_or(UserNsError::MissingTool("unshare"))?;
    let exe = std::env::current_exe().map_err(UserNsError::OwnExecutable)?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    tracing::info!(user, "not root: continuing as root of a user namespace with the user's subordinate ids");
    match exec(unshare, exe, args) {
        Ok(never) => match never {},
        Err(e) => Err(e),
    }
}

fn exec(unshare: PathBuf, exe: PathBuf, args: Vec<OsString>) -> Result<Infallible, UserNsError> {
    use std::os::unix::process::CommandExt as _;
    let err = std::process::Command::new(unshare)
        .args(["--user", "--map-auto", "--map-root-user", "--"])
        .arg(exe)
        .args(args)
        .env(INSIDE_ENV, "1")
        .exec();
    Err(UserNsError::Exec(err))
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
    })
}

fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_found_by_name_or_uid_first_entry_first() {
        let text = "alice:100000:65536\n1001:200000:65536\nalice:300000:10\nbad line\n";
        assert_eq!(subordinate_range(text, "alice", 1000), Some(IdRange { first: 100_000, count: 65_536 }));
        assert_eq!(subordinate_range(text, "bob", 1001), Some(IdRange { first: 200_000, count: 65_536 }));
        assert_eq!(subordinate_range(text, "carol", 1002), None);
        assert_eq!(subordinate_range("dave:x:1\n", "dave", 1), None);
    }
}
