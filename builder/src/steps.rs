//! The blueprint's steps applied to a root tree: accounts, directories, files (and archives), run commands,
//! and system settings (hostname, locale, time zone). Service states are in [`crate::services`].
//!
//! Accounts are made by the image's own `groupadd`/`useradd` in the sandbox (with SOURCE_DATE_EPOCH, which
//! shadow honours for its date fields), so the image's login.defs and skeleton apply as a user expects.
//! Files are written from the host side with owners resolved against the tree's own passwd and group.

use std::{
    io::Write as _,
    os::unix::fs::{symlink, PermissionsExt as _},
    path::{Path, PathBuf},
};

use kiln_blueprint::{
    model::{Directory, Group, Password, User},
    plan::{PlannedFile, PlannedKind, PlannedRun},
};
use kiln_rootfs::{paths::resolve_in_root, sandbox::resolve_user, RunCommand, Sandbox, SandboxError};

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: owner `{owner}`: {message}")]
    Owner { path: String, owner: String, message: String },
    #[error("{what}")]
    Command {
        what: String,
        #[source]
        source: SandboxError,
    },
    #[error("{0}")]
    Setting(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StepError + '_ {
    move |source| StepError::Io { path: path.to_owned(), source }
}

fn run(sandbox: &Sandbox, what: String, cmd: &RunCommand) -> Result<(), StepError> {
    sandbox
        .run(cmd, &mut |line| tracing::debug!(target: "kiln::sandbox", "{line}"))
        .map(|_| ())
        .map_err(|source| StepError::Command { what, source })
}

/// Create groups, then users, with the image's own shadow tools.
pub fn accounts(sandbox: &Sandbox, groups: &[Group], users: &[User], epoch: i64) -> Result<(), StepError> {
    let epoch = epoch.to_string();
    for g in groups {
        let mut argv = vec!["groupadd".to_owned()];
        if let Some(gid) = g.gid {
            argv.extend(["--gid".to_owned(), gid.to_string()]);
        }
        if g.system {
            argv.push("--system".to_owned());
        }
        argv.push(g.name.clone());
        let cmd = RunCommand::new(argv).env("SOURCE_DATE_EPOCH", &epoch);
        run(sandbox, format!("creating group `{}`", g.name), &cmd)?;
    }
    for u in users {
        let mut argv = vec!["useradd".to_owned()];
        if let Some(uid) = u.uid {
            argv.extend(["--uid".to_owned(), uid.to_string()]);
        }
        match &u.primary_group {
            Some(g) => argv.extend(["--gid".to_owned(), g.clone()]),
            None => argv.push("--user-group".to_owned()),
        }
        if !u.groups.is_empty() {
            argv.extend(["--groups".to_owned(), u.groups.join(",")]);
        }
        if let Some(shell) = &u.shell {
            argv.extend(["--shell".to_owned(), shell.clone()]);
        }
        if let Some(home) = &u.home {
            argv.extend(["--home-dir".to_owned(), home.clone()]);
        }
        if let Some(gecos) = &u.gecos {
            argv.extend(["--comment".to_owned(), gecos.clone()]);
        }
        if u.system {
            argv.push("--system".to_owned());
        } else {
            argv.push("--create-home".to_owned());
        }
        argv.push(u.name.clone());
        let cmd = RunCommand::new(argv).env("SOURCE_DATE_EPOCH", &epoch);
        run(sandbox, format!("creating user `{}`", u.name), &cmd)?;
        if let Password::Hashed(hash) = &u.password {
            let cmd = RunCommand::new(["usermod", "--password", hash.as_str(), u.name.as_str()])
                .env("SOURCE_DATE_EPOCH", &epoch);
            run(sandbox, format!("setting the password of `{}`", u.name), &cmd)?;
        }
        if !u.ssh_keys.is_empty() {
            authorized_keys(sandbox.root(), u)?;
        }
    }
    Ok(())
}

fn read_accounts(root: &Path) -> (String, String) {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    (read("etc/passwd"), read("etc/group"))
}

fn authorized_keys(root: &Path, u: &User) -> Result<(), StepError> {
    let (passwd, group) = read_accounts(root);
    let ids = resolve_user(&u.name, &passwd, &group).map_err(|message| StepError::Owner {
        path: "~/.ssh/authorized_keys".into(),
        owner: u.name.clone(),
        message,
    })?;
    let ssh_dir = format!("{}/.ssh", ids.home.trim_end_matches('/'));
    let mut text = u.ssh_keys.join("\n");
    text.push('\n');
    write_entry(root, &ssh_dir, None, 0o700, ids.uid, ids.gid)?;
    write_entry(root, &format!("{ssh_dir}/authorized_keys"), Some(text.as_bytes()), 0o600, ids.uid, ids.gid)
}

/// Resolve `owner` and `group` names (or numbers) against the tree's passwd and group.
fn owner_ids(root: &Path, path: &str, owner: &str, group: &str) -> Result<(u32, u32), StepError> {
    let (passwd, groups) = read_accounts(root);
    let ids = resolve_user(&format!("{owner}:{group}"), &passwd, &groups).map_err(|message| {
        StepError::Owner { path: path.to_owned(), owner: format!("{owner}:{group}"), message }
    })?;
    Ok((ids.uid, ids.gid))
}

/// Where an absolute image path is in the tree (resolving symlinks inside the tree, never leaving it).
fn host_path(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf, StepError> {
    let rel = Path::new(path.trim_start_matches('/'));
    resolve_in_root(root, rel, follow_last).map_err(|source| StepError::Io { path: root.join(rel), source })
}

/// Create missing parent folders of an image path (root-owned, 0755, as `install -D` would).
fn parents(root: &Path, path: &str) -> Result<(), StepError> {
    if let Some(parent) = Path::new(path).parent() {
        let host = host_path(root, &parent.display().to_string(), true)?;
        fs_err::create_dir_all(&host).map_err(|e| StepError::Io { path: host.clone(), source: e })?;
    }
    Ok(())
}

/// Write a file (content given) or a folder (no content) with mode and numeric owner.
fn write_entry(
    root: &Path,
    path: &str,
    content: Option<&[u8]>,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), StepError> {
    parents(root, path)?;
    let host = host_path(root, path, false)?;
    match content {
        Some(bytes) => {
            if let Ok(meta) = std::fs::symlink_metadata(&host) {
                if meta.is_dir() {
                    return Err(StepError::Setting(format!(
                        "{path}: the image has a folder there, not a file"
                    )));
                }
                fs_err::remove_file(&host).map_err(|e| StepError::Io { path: host.clone(), source: e })?;
            }
            let mut f =
                fs_err::File::create(&host).map_err(|e| StepError::Io { path: host.clone(), source: e })?;
            f.write_all(bytes).map_err(io(&host))?;
        }
        None => {
            if !host.is_dir() {
                fs_err::create_dir(&host).map_err(|e| StepError::Io { path: host.clone(), source: e })?;
            }
        }
    }
    std::os::unix::fs::lchown(&host, Some(uid), Some(gid)).map_err(io(&host))?;
    fs_err::set_permissions(&host, std::fs::Permissions::from_mode(mode))
        .map_err(|e| StepError::Io { path: host.clone(), source: e })?;
    Ok(())
}

/// Create the blueprint's directories.
pub fn directories(root: &Path, dirs: &[Directory]) -> Result<(), StepError> {
    for d in dirs {
        let (uid, gid) = owner_ids(root, &d.path, &d.owner, &d.group)?;
        write_entry(root, &d.path, None, d.mode.0, uid, gid)?;
    }
    Ok(())
}

/// Write planned files, folders and archives.
pub fn files(root: &Path, files: &[PlannedFile]) -> Result<(), StepError> {
    for f in files {
        let (uid, gid) = owner_ids(root, &f.path, &f.owner, &f.group)?;
        match f.kind {
            PlannedKind::File => {
                let content = f.content.as_deref().map(Vec::as_slice).unwrap_or_default();
                write_entry(root, &f.path, Some(content), f.mode.0, uid, gid)?;
            }
            PlannedKind::Directory => write_entry(root, &f.path, None, f.mode.0, uid, gid)?,
            PlannedKind::Archive => unpack_archive(root, f)?,
        }
    }
    Ok(())
}

/// ADD of a local tar archive: unpacked at the destination with GNU tar, which recognizes the compression,
/// refuses members that would leave the destination, and keeps the archive's owners (we run as root).
fn unpack_archive(root: &Path, f: &PlannedFile) -> Result<(), StepError> {
    let dest = host_path(root, &f.path, true)?;
    fs_err::create_dir_all(&dest).map_err(|e| StepError::Io { path: dest.clone(), source: e })?;
    let content = f.content.as_deref().map(Vec::as_slice).unwrap_or_default();
    let mut child = std::process::Command::new("tar")
        .args(["-x", "--no-same-permissions", "--same-owner", "-f", "-", "-C"])
        .arg(&dest)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(io(&dest))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(content).map_err(io(&dest))?;
    }
    let out = child.wait_with_output().map_err(io(&dest))?;
    if !out.status.success() {
        return Err(StepError::Setting(format!(
            "unpacking an archive into {}: {}",
            f.path,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Run a command in the sandbox.
pub fn run_command(sandbox: &Sandbox, r: &PlannedRun, epoch: i64) -> Result<(), StepError> {
    let mut cmd = RunCommand::new(r.argv.clone());
    cmd.env = r.env.clone();
    cmd.env.entry("SOURCE_DATE_EPOCH".to_owned()).or_insert_with(|| epoch.to_string());
    cmd.workdir.clone_from(&r.workdir);
    cmd.user.clone_from(&r.user);
    let shown: String =
        r.argv.last().map(|s| s.lines().next().unwrap_or_default().to_owned()).unwrap_or_default();
    run(sandbox, format!("RUN `{shown}`"), &cmd)
}

/// Hostname, locale and time zone, as `hostnamectl`, `localectl` and `timedatectl` would leave them.
pub fn system(
    sandbox: &Sandbox,
    hostname: Option<&str>,
    locale: Option<&str>,
    timezone: Option<&str>,
) -> Result<(), StepError> {
    let root = sandbox.root();
    if let Some(h) = hostname {
        write_entry(root, "/etc/hostname", Some(format!("{h}\n").as_bytes()), 0o644, 0, 0)?;
        let hosts_path = host_path(root, "/etc/hosts", true)?;
        let hosts = std::fs::read_to_string(&hosts_path).unwrap_or_else(|_| {
            "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n".to_owned()
        });
        let mut lines: Vec<String> =
            hosts.lines().filter(|l| !l.starts_with("127.0.1.1")).map(str::to_owned).collect();
        let at = lines.iter().position(|l| l.starts_with("127.0.0.1")).map_or(0, |i| i + 1);
        lines.insert(at, format!("127.0.1.1\t{h}"));
        write_entry(root, "/etc/hosts", Some(format!("{}\n", lines.join("\n")).as_bytes()), 0o644, 0, 0)?;
    }
    if let Some(l) = locale {
        let builtin = matches!(l, "C" | "POSIX" | "C.UTF-8" | "C.utf8");
        if !builtin {
            let supported = host_path(root, "/usr/share/i18n/SUPPORTED", true)?;
            let Ok(list) = std::fs::read_to_string(&supported) else {
                return Err(StepError::Setting(format!(
                    "locale `{l}` needs the `locales` package in the image (add it to the packages); only C.UTF-8 is built in"
                )));
            };
            let Some(entry) = list.lines().find(|e| e.split_whitespace().next() == Some(l)) else {
                return Err(StepError::Setting(format!(
                    "locale `{l}` is not in the image's list of supported locales"
                )));
            };
            let gen_path = host_path(root, "/etc/locale.gen", true)?;
            let mut gen = std::fs::read_to_string(&gen_path).unwrap_or_default();
            if !gen.lines().any(|x| x.trim() == entry) {
                gen.push_str(entry);
                gen.push('\n');
            }
            write_entry(root, "/etc/locale.gen", Some(gen.as_bytes()), 0o644, 0, 0)?;
            run(sandbox, format!("generating locale `{l}`"), &RunCommand::new(["locale-gen"]))?;
        }
        write_entry(root, "/etc/default/locale", Some(format!("LANG={l}\n").as_bytes()), 0o644, 0, 0)?;
    }
    if let Some(tz) = timezone {
        let zone = format!("/usr/share/zoneinfo/{tz}");
        let zone_host = host_path(root, &zone, true)?;
        if !zone_host.is_file() {
            return Err(StepError::Setting(format!(
                "time zone `{tz}`: the image has no {zone} (the `tzdata` package provides the zone files)"
            )));
        }
        let localtime = host_path(root, "/etc/localtime", false)?;
        if std::fs::symlink_metadata(&localtime).is_ok() {
            fs_err::remove_file(&localtime)
                .map_err(|e| StepError::Io { path: localtime.clone(), source: e })?;
        }
        symlink(&zone, &localtime).map_err(io(&localtime))?;
        write_entry(root, "/etc/timezone", Some(format!("{tz}\n").as_bytes()), 0o644, 0, 0)?;
    }
    Ok(())
}
