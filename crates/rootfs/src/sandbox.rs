//! The sandbox that runs commands inside a root tree: maintainer scripts while configuring, and the build's
//! RUN steps later.
//!
//! A command runs chrooted in the tree, in new mount, PID, IPC, UTS and (unless network is allowed) network
//! namespaces made with util-linux `unshare`. Inside the mount namespace a small shell script mounts `/proc`,
//! `/sys` (read-only), a tmpfs `/dev` holding binds of the host's `null zero full random urandom tty`, a private
//! `devpts` instance, `shm`, the `fd`/`stdin`/`stdout`/`stderr` links, and a tmpfs on `/run`; then it chroots
//! (`unshare --root --wd`) and runs the command with only the given environment. Nothing of this is visible
//! on the host, and all of it goes when the namespace's first process exits, which also kills every process
//! left in the PID namespace. kiln's own death takes the sandbox with it: `setpriv --pdeathsig KILL` kills
//! `unshare` when kiln dies, and `unshare --kill-child` kills the namespace with it.
//!
//! As root nothing more is needed. Otherwise the sandbox also makes a user namespace mapping the caller to
//! root (`unshare --map-root-user`), where the kernel allows it; only root can be the command's user then.
//! This isolates builds from each other and from the host's files, processes and network; it is not a
//! security boundary against a hostile root inside.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tracing::{debug, info};

/// `PATH` inside the sandbox.
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where the host's tools are looked up.
const HOST_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Lines of output kept for an error.
const TAIL_LINES: usize = 25;

/// A problem running a command in the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("`{0}` is not installed on the host (util-linux and coreutils provide the sandbox's tools)")]
    MissingTool(&'static str),
    #[error("the tree {0} does not exist")]
    NoTree(PathBuf),
    #[error("running {command}: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("`{command}` {status}; last lines of its output:\n{}", tail.join("\n"))]
    Failed {
        command: String,
        status: ExitKind,
        /// The last lines of the output.
        tail: Vec<String>,
        /// The whole output.
        log: String,
    },
    #[error("user `{spec}`: {reason}")]
    User { spec: String, reason: String },
    #[error("the working directory {0} is not a directory in the tree")]
    Workdir(String),
    #[error("an empty command")]
    EmptyCommand,
    #[error("`{0}` is not a valid environment variable name")]
    EnvName(String),
}

impl SandboxError {
    /// The exit code of a command that ran and failed.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::Failed { status: ExitKind::Code(c), .. } => Some(*c),
            _ => None,
        }
    }
}

/// How a failed command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exited with code {c}"),
            Self::Signal(s) => write!(f, "was killed by signal {s}"),
        }
    }
}

/// A command to run in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCommand {
    /// The program (looked up in the sandbox's `PATH` when it has no `/`) and its arguments.
    pub argv: Vec<String>,
    /// Environment on top of the sandbox's base (`PATH`, `LANG=C.UTF-8`, `HOME`, `DEBIAN_FRONTEND=noninteractive`,
    /// `DEBCONF_NONINTERACTIVE_SEEN=true`); nothing of the host's environment gets in.
    pub env: BTreeMap<String, String>,
    /// Absolute working directory inside the tree.
    pub workdir: String,
    /// `NAME`, `UID`, either followed by `:GROUP` or `:GID`, looked up in the tree's `/etc/passwd` and
    /// `/etc/group`. A user other than root gets its primary group only, no supplementary groups.
    pub user: String,
}

impl RunCommand {
    /// A command run as root in `/`.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            workdir: "/".to_owned(),
            user: "root".to_owned(),
        }
    }

    /// Add an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
}

/// What a successful command wrote (stdout and stderr, interleaved as written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutput {
    pub log: String,
}

/// Runs commands in one root tree; see the module documentation.
#[derive(Debug, Clone)]
pub struct Sandbox {
    root: PathBuf,
    user_namespace: bool,
    network: bool,
    tools: Tools,
}

#[derive(Debug, Clone)]
struct Tools {
    setpriv: PathBuf,
    unshare: PathBuf,
    sh: PathBuf,
    env: PathBuf,
}

impl Sandbox {
    /// A sandbox for the tree at `root`, network off; a user namespace when not running as root.
    pub fn new(root: &Path) -> Result<Self, SandboxError> {
        let root = std::fs::canonicalize(root).map_err(|_| SandboxError::NoTree(root.to_owned()))?;
        let tools = Tools {
            setpriv: tool("setpriv")?,
            unshare: tool("unshare")?,
            sh: tool("sh")?,
            env: tool("env")?,
        };
        Ok(Self { root, user_namespace: !rustix::process::geteuid().is_root(), network: false, tools })
    }

    /// Allow network access: the host's network namespace, and its `resolv.conf` bound read-only over the
    /// tree's (over an empty file made for the run when the tree has none, removed afterwards).
    pub fn with_network(mut self, allow: bool) -> Self {
        self.network = allow;
        self
    }

    /// Force a user namespace (the unprivileged path) even as root, or none.
    pub fn with_user_namespace(mut self, on: bool) -> Self {
        self.user_namespace = on;
        self
    }

    /// The tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether commands run in a user namespace.
    pub fn user_namespace(&self) -> bool {
        self.user_namespace
    }

    /// Run a command; every line of its output goes to `on_line` as it comes (and to `tracing` at debug
    /// level). A non-zero exit is [`SandboxError::Failed`] with the exit code and the last lines.
    pub fn run(&self, cmd: &RunCommand, on_line: &mut dyn FnMut(&str)) -> Result<RunOutput, SandboxError> {
        let program = cmd.argv.first().ok_or(SandboxError::EmptyCommand)?;
        let ids = self.ids(&cmd.user)?;
        crate::paths::resolve_in_root(&self.root, Path::new(&cmd.workdir), true)
            .ok()
            .filter(|p| cmd.workdir.starts_with('/') && p.is_dir())
            .ok_or_else(|| SandboxError::Workdir(cmd.workdir.clone()))?;

        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".to_owned(), SANDBOX_PATH.to_owned());
        env.insert("LANG".to_owned(), "C.UTF-8".to_owned());
        env.insert("HOME".to_owned(), ids.home.clone());
        env.insert("DEBIAN_FRONTEND".to_owned(), "noninteractive".to_owned());
        env.insert("DEBCONF_NONINTERACTIVE_SEEN".to_owned(), "true".to_owned());
        for (k, v) in &cmd.env {
            let valid = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(SandboxError::EnvName(k.clone()));
            }
            env.insert(k.clone(), v.clone());
        }

        let summary = cmd.argv.join(" ");
        let _resolv = self.network.then(|| MountPoint::file(&self.root.join("etc/resolv.conf")));
        let spawn_err = |source| SandboxError::Spawn { command: summary.clone(), source };
        let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| spawn_err(io::Error::from(e)))?;
        let mut child = {
            let mut command = Command::new(&self.tools.setpriv);
            command.env_clear().env("PATH", HOST_PATH).env("LC_ALL", "C");
            command.arg("--pdeathsig").arg("KILL").arg("--").arg(&self.tools.unshare);
            if self.user_namespace {
                command.args(["--user", "--map-root-user"]);
            }
            command.args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
                "--ipc",
                "--uts",
            ]);
            if !self.network {
                command.arg("--net");
            }
            command.arg("--").arg(&self.tools.sh).arg("-c").arg(SETUP_SCRIPT).arg("kiln-sandbox");
            command.arg(&self.root);
            command.arg(if self.network { "host" } else { "isolated" });
            command.arg(if self.user_namespace { "userns" } else { "root" });
            command.arg(&self.tools.env).arg("-i").arg("--");
            command.args(env.iter().map(|(k, v)| format!("{k}={v}")));
            command.arg(&self.tools.unshare);
            let mut root_arg = std::ffi::OsString::from("--root=");
            root_arg.push(&self.root);
            command.arg(root_arg);
            command.arg(format!("--wd={}", cmd.workdir));
            if (ids.uid, ids.gid) != (0, 0) {
                command.arg(format!("--setgid={}", ids.gid)).arg(format!("--setuid={}", ids.uid));
            }
            command.arg("--").arg(program).args(&cmd.argv[1..]);
            let out = writer.try_clone().map_err(spawn_err)?;
            command.stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(writer));
            debug!(command = %summary, root = %self.root.display(), "sandbox: run");
            command.spawn().map_err(spawn_err)?
            // `command` and its copies of the pipe's write end are dropped here, so the read below ends when
            // the sandbox's processes are gone.
        };

        let mut log = String::new();
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut reader = BufReader::new(File::from(reader));
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(spawn_err(e));
                }
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\n', '\r']);
            debug!(target: "kiln_rootfs::sandbox", "{line}");
            on_line(line);
            log.push_str(line);
            log.push('\n');
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        }
        let status = child.wait().map_err(spawn_err)?;
        if status.success() {
            return Ok(RunOutput { log });
        }
        let status = match (status.code(), status.signal()) {
            (Some(c), _) => ExitKind::Code(c),
            (None, Some(s)) => ExitKind::Signal(s),
            (None, None) => ExitKind::Code(-1),
        };
        info!(command = %summary, %status, "sandbox: command failed");
        Err(SandboxError::Failed { command: summary, status, tail: tail.into(), log })
    }

    fn ids(&self, spec: &str) -> Result<Ids, SandboxError> {
        let read = |p: &str| std::fs::read_to_string(self.root.join(p)).unwrap_or_default();
        let ids = resolve_user(spec, &read("etc/passwd"), &read("etc/group"))
            .map_err(|reason| SandboxError::User { spec: spec.to_owned(), reason })?;
        if self.user_namespace && (ids.uid, ids.gid) != (0, 0) {
            return Err(SandboxError::User {
                spec: spec.to_owned(),
                reason: "only root can run commands in an unprivileged (user namespace) sandbox".to_owned(),
            });
        }
        Ok(ids)
    }
}

/// An empty file made as a mount point for one run, removed afterwards.
struct MountPoint(Option<PathBuf>);

impl MountPoint {
    /// Make `path` unless something is there already (or its directory is missing).
    fn file(path: &Path) -> Self {
        let missing =
            matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound);
        let parent_is_dir =
            path.parent().is_some_and(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
        if missing && parent_is_dir && std::fs::File::create_new(path).is_ok() {
            Self(Some(path.to_owned()))
        } else {
            Self(None)
        }
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Runs inside the new namespaces, on the host's root: sets up the tree's API file systems, then runs
/// `"$@"` (`env -i VARS... unshare --root=TREE --wd=DIR -- COMMAND...`).
const SETUP_SCRIPT: &str = r#"set -eu
root=$1; net=$2; mode=$3; shift 3
for d in proc sys dev run; do [ -d "$root/$d" ] || mkdir -p "$root/$d"; done
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
if [ "$net" = isolated ]; then
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
else
  mount --rbind /sys "$root/sys"
  if [ -f "$root/etc/resolv.conf" ] && [ ! -L "$root/etc/resolv.conf" ] && [ -f /etc/resolv.conf ]; then
    mount --bind -o ro /etc/resolv.conf "$root/etc/resolv.conf"
  fi
fi
mount -t tmpfs -o mode=0755,nosuid,size=16m tmpfs "$root/dev"
for n in null zero full random urandom tty; do
  : > "$root/dev/$n"
  mount --bind "/dev/$n" "$root/dev/$n"
done
mkdir "$root/dev/pts" "$root/dev/shm"
if [ "$mode" = userns ]; then
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
else
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
fi
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
exec "$@"
"#;

fn tool(name: &'static str) -> Result<PathBuf, SandboxError> {
    HOST_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .ok_or(SandboxError::MissingTool(name))
}

/// Numeric identity of a command's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Resolve `NAME`, `UID`, `NAME:GROUP`, `UID:GID` (and mixes) against the text of `/etc/passwd` and
/// `/etc/group`. A numeric user without an entry gets group 0 and home `/`; root is known even before the
/// tree has a `passwd` file.
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<Ids, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_owned).collect())
            .collect()
    };
    let users = entries(passwd);
    let by_name = users.iter().find(|e| e.len() >= 6 && e[0] == user);
    let (uid, entry) = match (user.parse::<u32>(), by_name) {
        (_, Some(e)) => {
            (e[2].parse::<u32>().map_err(|_| format!("bad uid in passwd entry of `{user}`"))?, Some(e))
        }
        (Ok(uid), None) => (uid, users.iter().find(|e| e.len() >= 6 && e[2] == uid.to_string())),
        (Err(_), None) if user == "root" => (0, None),
        (Err(_), None) if user.is_empty() => return Err("no user name".to_owned()),
        (Err(_), None) => return Err(format!("no user `{user}` in the tree's /etc/passwd")),
    };
    let default_gid = match entry {
        Some(e) => e[3].parse::<u32>().map_err(|_| format!("bad gid in passwd entry of `{user}`"))?,
        None => 0,
    };
    let home =
        entry.map_or_else(|| if uid == 0 { "/root".to_owned() } else { "/".to_owned() }, |e| e[5].clone());
    let gid = match grp {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entries(group)
                .iter()
                .find(|e| e.len() >= 3 && e[0] == g)
                .map(|e| e[2].parse::<u32>().map_err(|_| format!("bad gid in group entry of `{g}`")))
                .transpose()?
                .or_else(|| (g == "root").then_some(0))
                .ok_or_else(|| format!("no group `{g}` in the tree's /etc/group"))?,
        },
    };
    Ok(Ids { uid, gid, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:\nwww-data:x:33:\n";

    #[test]
    fn users_resolve_against_the_trees_files() {
        let ids = |s| resolve_user(s, PASSWD, GROUP);
        assert_eq!(ids("root"), Ok(Ids { uid: 0, gid: 0, home: "/root".to_owned() }));
        assert_eq!(ids("www-data"), Ok(Ids { uid: 33, gid: 33, home: "/var/www".to_owned() }));
        assert_eq!(ids("www-data:adm").map(|i| i.gid), Ok(4));
        assert_eq!(ids("33:0").map(|i| (i.uid, i.gid)), Ok((33, 0)));
        assert_eq!(ids("1000"), Ok(Ids { uid: 1000, gid: 0, home: "/".to_owned() }));
        assert!(ids("nobody").unwrap_err().contains("no user `nobody`"));
        assert!(ids("root:staff").unwrap_err().contains("no group `staff`"));
        assert_eq!(resolve_user("root", "", "").map(|i| i.uid), Ok(0));
    }
}
