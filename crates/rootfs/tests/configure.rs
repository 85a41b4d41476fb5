//! Configuring with the tree's own dpkg in the sandbox, on a small base made of the host's shell, coreutils
//! and dpkg: preinsts run first, then postinsts and triggers; conffiles land; no service may start; a failing
//! maintainer script is a typed error naming the package and the script; nothing stays mounted or running.

mod common;

use std::path::Path;

use common::{base_deb, mounts_under, processes_in, Pkg};
use kiln_rootfs::configure::read_states;
use kiln_rootfs::{ConfigureError, ConfigureOptions, UnpackOptions};

const LOG: &str = "/var/log/kiln-test.log";

fn logging_script(what: &str) -> String {
    format!("#!/bin/sh\nset -e\necho \"{what} $* pkg=$DPKG_MAINTSCRIPT_PACKAGE epoch=$SOURCE_DATE_EPOCH\" >> {LOG}\n")
}

fn build(dir: &Path, pkgs: &[Pkg]) -> (std::path::PathBuf, Result<(), ConfigureError>) {
    let mut debs = vec![base_deb(dir)];
    debs.extend(pkgs.iter().map(|p| p.build(dir, "gzip")));
    let tree = dir.join("tree");
    let unpacked = kiln_rootfs::unpack(&debs, &tree, &UnpackOptions::default()).unwrap();
    let result = kiln_rootfs::configure(
        &tree,
        &unpacked,
        &ConfigureOptions { source_date_epoch: Some(1_700_000_000) },
    );
    (tree, result)
}

fn assert_nothing_left(tree: &Path) {
    assert!(mounts_under(tree).is_empty(), "mounts left: {:?}", mounts_under(tree));
    assert!(
        common::eventually(5, || processes_in(tree).is_empty()),
        "processes left: {:?}",
        processes_in(tree)
    );
    assert!(!tree.join("usr/sbin/policy-rc.d").exists(), "policy-rc.d is removed afterwards");
}

#[test]
fn preinsts_postinsts_and_triggers_run_and_conffiles_land() {
    let dir = tempfile::tempdir().unwrap();
    let app = Pkg::new("app", "1.0")
        .field("Depends", "watcher")
        .conffile("/etc/app.conf", "answer = 42\n")
        .script("preinst", &logging_script("app preinst"))
        .script(
            "postinst",
            &format!(
                "{}/usr/sbin/policy-rc.d x start || echo \"policy-rc.d says $?\" >> {LOG}\n",
                logging_script("app postinst")
            ),
        )
        .member("triggers", "activate-noawait watch-trigger\n");
    let watcher = Pkg::new("watcher", "1.0")
        .script("postinst", &logging_script("watcher postinst"))
        .member("triggers", "interest-noawait watch-trigger\n");
    let (tree, result) = build(dir.path(), &[app, watcher]);
    result.unwrap();

    let log = std::fs::read_to_string(tree.join(LOG.trim_start_matches('/'))).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "app preinst install pkg=app epoch=1700000000",
            "watcher postinst configure  pkg=watcher epoch=1700000000",
            "app postinst configure  pkg=app epoch=1700000000",
            "policy-rc.d says 101",
            "watcher postinst triggered watch-trigger pkg=watcher epoch=1700000000",
        ],
        "{log}"
    );
    let states = read_states(&tree).unwrap();
    assert_eq!(states.len(), 3);
    assert!(states.iter().all(|(_, s)| s == "install ok installed"), "{states:?}");
    assert_eq!(std::fs::read_to_string(tree.join("etc/app.conf")).unwrap(), "answer = 42\n");
    assert!(!tree.join("etc/app.conf.dpkg-new").exists());
    let status = std::fs::read_to_string(tree.join("var/lib/dpkg/status")).unwrap();
    use md5::Digest;
    let hash = hex::encode(md5::Md5::digest(b"answer = 42\n"));
    assert!(status.contains(&format!("Conffiles:\n /etc/app.conf {hash}\n")), "{status}");
    assert!(!status.contains("newconffile"), "configured conffiles carry their hash: {status}");
    assert_nothing_left(&tree);
}

#[test]
fn a_failing_postinst_names_its_package_and_script() {
    let dir = tempfile::tempdir().unwrap();
    let broken =
        Pkg::new("broken", "1.0").script("postinst", "#!/bin/sh\necho 'cannot set up broken' >&2\nexit 3\n");
    let (tree, result) = build(dir.path(), &[broken]);
    let err = result.unwrap_err();
    let ConfigureError::Script { package, script, tail, .. } = &err else { panic!("{err:?}") };
    assert_eq!((package.as_str(), script.as_str()), ("broken", "postinst"));
    assert!(tail.iter().any(|l| l == "cannot set up broken"), "{tail:?}");
    assert!(tail.iter().any(|l| l.contains("returned error exit status 3")), "{tail:?}");
    assert!(err.to_string().contains("package broken: maintainer script `postinst`"), "{err}");
    assert_nothing_left(&tree);
}

#[test]
fn a_failing_preinst_names_its_package_and_script() {
    let dir = tempfile::tempdir().unwrap();
    let broken = Pkg::new("early", "1.0").script("preinst", "#!/bin/sh\necho \"refusing $1\"\nexit 5\n");
    let (tree, result) = build(dir.path(), &[broken]);
    let err = result.unwrap_err();
    let ConfigureError::Script { package, script, status, tail } = &err else { panic!("{err:?}") };
    assert_eq!((package.as_str(), script.as_str()), ("early", "preinst"));
    assert_eq!(*status, kiln_rootfs::sandbox::ExitKind::Code(5));
    assert_eq!(tail, &["refusing install"]);
    assert_nothing_left(&tree);
}
