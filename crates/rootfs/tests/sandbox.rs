//! The sandbox: commands run chrooted in the tree, isolated, with only the given environment, as the given
//! user and directory; failures are typed; nothing (mounts, processes) outlives a run, even when kiln is
//! killed; and the unprivileged path through a user namespace (unpack, configure, run) works where the
//! kernel allows it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{base_deb, eventually, mounts_under, processes_in};
use kiln_rootfs::sandbox::ExitKind;
use kiln_rootfs::{RunCommand, Sandbox, SandboxError, UnpackOptions};

/// A tree with the host-made base package unpacked (no configuration needed: it has no scripts).
fn mini_tree(dir: &Path) -> PathBuf {
    let deb = base_deb(dir);
    let tree = dir.join("tree");
    kiln_rootfs::unpack(&[deb], &tree, &UnpackOptions::default()).unwrap();
    tree
}

fn sh(script: &str) -> RunCommand {
    RunCommand::new(["sh", "-c", script])
}

fn run(sandbox: &Sandbox, cmd: &RunCommand) -> (Result<kiln_rootfs::RunOutput, SandboxError>, Vec<String>) {
    let mut lines = Vec::new();
    let r = sandbox.run(cmd, &mut |l| lines.push(l.to_owned()));
    (r, lines)
}

#[test]
fn commands_run_chrooted_isolated_and_with_only_the_given_environment() {
    let dir = tempfile::tempdir().unwrap();
    let tree = mini_tree(dir.path());
    std::fs::write(tree.join("etc/marker"), "inside the tree\n").unwrap();
    let sandbox = Sandbox::new(&tree).unwrap();
    let cmd = sh("echo pid=$$; cat /etc/marker; echo to-stderr >&2; echo env-start; env; echo env-end; cat /proc/net/dev; echo x > /dev/null; \
                  ls /proc/self/fd >/dev/null && echo proc-ok")
    .env("KILN_TEST", "a value with spaces");
    let (out, lines) = run(&sandbox, &cmd);
    let out = out.unwrap();
    assert_eq!(out.log.lines().collect::<Vec<_>>(), lines, "streamed lines are the captured log");
    assert!(lines.contains(&"pid=1".to_owned()), "the command is the first process of its PID namespace");
    assert!(lines.contains(&"inside the tree".to_owned()));
    assert!(lines.contains(&"to-stderr".to_owned()), "stderr is captured too");
    assert!(lines.contains(&"proc-ok".to_owned()));

    let start = lines.iter().position(|l| l == "env-start").unwrap();
    let end = lines.iter().position(|l| l == "env-end").unwrap();
    let env: Vec<(&str, &str)> = lines[start + 1..end].iter().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    assert_eq!(get("PATH"), Some(kiln_rootfs::sandbox::SANDBOX_PATH));
    assert_eq!(get("LANG"), Some("C.UTF-8"));
    assert_eq!(get("HOME"), Some("/root"));
    assert_eq!(get("DEBIAN_FRONTEND"), Some("noninteractive"));
    assert_eq!(get("DEBCONF_NONINTERACTIVE_SEEN"), Some("true"));
    assert_eq!(get("KILN_TEST"), Some("a value with spaces"));
    let expected =
        ["PATH", "LANG", "HOME", "DEBIAN_FRONTEND", "DEBCONF_NONINTERACTIVE_SEEN", "KILN_TEST", "PWD"];
    let leaked: Vec<_> = env.iter().filter(|(k, _)| !expected.contains(k)).collect();
    assert!(leaked.is_empty(), "host environment leaked in: {leaked:?}");

    let interfaces: Vec<&str> =
        lines[end + 1..].iter().filter_map(|l| l.split_once(':')).map(|(i, _)| i.trim()).collect();
    assert_eq!(interfaces, ["lo"], "no network but loopback by default");
    assert!(mounts_under(&tree).is_empty(), "nothing stays mounted: {:?}", mounts_under(&tree));
}

#[test]
fn network_can_be_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let tree = mini_tree(dir.path());
    let host_interfaces = std::fs::read_to_string("/proc/net/dev").unwrap().lines().count();
    let sandbox = Sandbox::new(&tree).unwrap().with_network(true);
    let (out, lines) = run(&sandbox, &RunCommand::new(["cat", "/proc/net/dev"]));
    out.unwrap();
    assert_eq!(lines.len(), host_interfaces, "the host's interfaces are there: {lines:?}");
    // Name resolution as on the host, without leaving a resolv.conf behind in the tree.
    let (out, lines) = run(&sandbox, &RunCommand::new(["cat", "/etc/resolv.conf"]));
    out.unwrap();
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(lines, host.lines().collect::<Vec<_>>());
    assert!(!tree.join("etc/resolv.conf").exists());
    assert!(mounts_under(&tree).is_empty());
}

#[test]
fn workdir_and_user_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let tree = mini_tree(dir.path());
    let sandbox = Sandbox::new(&tree).unwrap();
    let mut cmd = sh("pwd; id -u; id -g; echo $HOME");
    cmd.workdir = "/home/builder".to_owned();
    cmd.user = "builder".to_owned();
    let (out, lines) = run(&sandbox, &cmd);
    out.unwrap();
    assert_eq!(lines, ["/home/builder", "1000", "1000", "/home/builder"]);

    cmd.user = "builder:root".to_owned();
    let (out, lines) = run(&sandbox, &cmd);
    out.unwrap();
    assert_eq!(lines[1..3], ["1000", "0"]);

    cmd.user = "nobody-here".to_owned();
    assert!(matches!(run(&sandbox, &cmd).0, Err(SandboxError::User { .. })));
    cmd.user = "root".to_owned();
    cmd.workdir = "/no/such/dir".to_owned();
    assert!(matches!(run(&sandbox, &cmd).0, Err(SandboxError::Workdir(w)) if w == "/no/such/dir"));
    let bad_env = sh("true").env("NOT VALID", "x");
    assert!(matches!(run(&sandbox, &bad_env).0, Err(SandboxError::EnvName(_))));
}

#[test]
fn a_failing_command_is_a_typed_error_with_its_code_and_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let tree = mini_tree(dir.path());
    let sandbox = Sandbox::new(&tree).unwrap();
    let (out, lines) =
        run(&sandbox, &sh("i=0; while [ $i -lt 40 ]; do echo line$i; i=$((i+1)); done; exit 7"));
    let err = out.unwrap_err();
    assert_eq!(err.exit_code(), Some(7));
    let SandboxError::Failed { status, tail, log, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*status, ExitKind::Code(7));
    assert_eq!(tail.last().map(String::as_str), Some("line39"));
    assert!(tail.len() < 40 && !tail.is_empty());
    assert_eq!(log.lines().count(), 40);
    assert_eq!(lines.len(), 40);
    assert!(err.to_string().contains("exited with code 7"), "{err}");

    let (out, _) = run(&sandbox, &RunCommand::new(["/no/such/program"]));
    assert!(matches!(out, Err(SandboxError::Failed { .. })));
    assert!(mounts_under(&tree).is_empty());
}

#[test]
fn background_processes_die_with_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let tree = mini_tree(dir.path());
    let sandbox = Sandbox::new(&tree).unwrap();
    let (out, _) = run(&sandbox, &sh("sleep 1000 & sleep 1000 & echo started"));
    out.unwrap();
    assert!(eventually(5, || processes_in(&tree).is_empty()), "left behind: {:?}", processes_in(&tree));
    let (out, _) = run(&sandbox, &sh("sleep 1000 & exit 3"));
    assert_eq!(out.unwrap_err().exit_code(), Some(3));
    assert!(eventually(5, || processes_in(&tree).is_empty()), "left behind: {:?}", processes_in(&tree));
    assert!(mounts_under(&tree).is_empty());
}

/// Run by [`killing_kiln_kills_the_sandbox`] in a child process: a sandboxed command that waits forever.
#[test]
#[ignore = "helper: run by other tests in a child process"]
fn helper_sandbox_that_waits() {
    let Ok(tree) = std::env::var("KILN_ROOTFS_HELPER_TREE") else { return };
    let sandbox = Sandbox::new(Path::new(&tree)).unwrap();
    let _ = sandbox.run(&sh("sleep 1000 & echo up > /tmp/started; sleep 1000"), &mut |_| {});
}

#[test]
fn killing_kiln_kills_the_sandbox() {
    for signal in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        let dir = tempfile::tempdir().unwrap();
        let tree = mini_tree(dir.path());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "helper_sandbox_that_waits", "--ignored", "--nocapture"])
            .env("KILN_ROOTFS_HELPER_TREE", &tree)
            .spawn()
            .unwrap();
        assert!(eventually(30, || tree.join("tmp/started").exists()), "the sandboxed command did not start");
        assert!(!processes_in(&tree).is_empty());
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(
            eventually(10, || processes_in(&tree).is_empty()),
            "after {signal:?}, processes are left in the tree: {:?}",
            processes_in(&tree)
        );
        assert!(mounts_under(&tree).is_empty());
    }
}

/// Whether an unprivileged user can make a user namespace here; why not otherwise.
fn unprivileged_userns() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("the tests do not run as root, so cannot switch to an unprivileged user".to_owned());
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "unshare",
            "--user",
            "--map-root-user",
            "true",
        ])
        .output()
        .map_err(|e| format!("setpriv: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "the kernel refuses user namespaces to unprivileged users: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Run by [`unprivileged_users_get_a_user_namespace`] as an unprivileged user.
#[test]
#[ignore = "helper: run by other tests in a child process"]
fn helper_unprivileged_unpack_and_run() {
    let Ok(dir) = std::env::var("KILN_ROOTFS_HELPER_DIR") else { return };
    let dir = Path::new(&dir);
    assert!(!rustix::process::geteuid().is_root());
    let deb = dir.join(std::env::var("KILN_ROOTFS_HELPER_DEB").unwrap());
    let app = dir.join(std::env::var("KILN_ROOTFS_HELPER_APP").unwrap());
    let tree = dir.join("tree");
    let unpacked = kiln_rootfs::unpack(&[deb, app], &tree, &UnpackOptions::default()).unwrap();
    assert!(!unpacked.owners_preserved);
    let sandbox = Sandbox::new(&tree).unwrap();
    assert!(sandbox.user_namespace());
    // dpkg configures as root of the user namespace.
    kiln_rootfs::configure::configure_in(&sandbox, &unpacked, &kiln_rootfs::ConfigureOptions::default())
        .unwrap();
    assert_eq!(std::fs::read_to_string(tree.join("var/lib/unpriv-app")).unwrap(), "configured as 0\n");
    let mut lines = Vec::new();
    sandbox
        .run(&sh("echo pid=$$; id -u; touch /root/made-inside; ls -ld /root"), &mut |l| {
            lines.push(l.to_owned())
        })
        .unwrap();
    assert_eq!(lines[..2], ["pid=1", "0"], "{lines:?}");
    assert!(tree.join("root/made-inside").exists());
    let err = sandbox.run(&sh("exit 4"), &mut |_| {}).unwrap_err();
    assert_eq!(err.exit_code(), Some(4));
    let mut as_user = sh("true");
    as_user.user = "builder".to_owned();
    assert!(matches!(sandbox.run(&as_user, &mut |_| {}), Err(SandboxError::User { .. })));
    println!("helper-ok");
}

#[test]
fn unprivileged_users_get_a_user_namespace() {
    if let Err(why) = unprivileged_userns() {
        eprintln!("SKIPPED unprivileged_users_get_a_user_namespace: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = base_deb(dir.path());
    let app = common::Pkg::new("unpriv-app", "1.0")
        .script("postinst", "#!/bin/sh\necho \"configured as $(id -u)\" > /var/lib/unpriv-app\n")
        .build(dir.path(), "gzip");
    std::fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(65534), Some(65534)).unwrap();
    // The test binary lives under the building user's home, out of the unprivileged user's reach: copy it.
    let exe = dir.path().join("test-binary");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args(["--exact", "helper_unprivileged_unpack_and_run", "--ignored", "--nocapture"])
        .env("KILN_ROOTFS_HELPER_DIR", &work)
        .env("KILN_ROOTFS_HELPER_DEB", deb.canonicalize().unwrap())
        .env("KILN_ROOTFS_HELPER_APP", app.canonicalize().unwrap())
        .env("HOME", &work)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("helper-ok"), "{text}");
    let tree = work.join("tree");
    let meta = std::fs::metadata(tree.join("etc/passwd")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534, "files belong to the unprivileged user");
    assert!(mounts_under(&tree).is_empty());
    assert!(processes_in(&tree).is_empty());
}
