//! The real thing, over the network: Debian's Essential packages (named by the host's apt at test time, with
//! what they depend on) downloaded from the host's apt sources, unpacked and configured with test packages on
//! top. dpkg in the image must see every package `ii` with nothing to audit or verify, the maintainer
//! scripts must have run, nothing may be left mounted or running, and two builds must digest the same.
//!
//! Set `KILN_SKIP_NETWORK_TESTS=1` to skip it where no Debian mirror is reachable.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{craft_deb, mounts_under, processes_in, run, Crafted, Pkg};
use kiln_rootfs::{ConfigureOptions, UnpackOptions};

const EPOCH: i64 = 1_700_000_000;

/// Names of the packages marked `Essential: yes` among the host's apt candidates.
fn essential_names() -> BTreeSet<String> {
    let dump = run(Command::new("apt-cache").arg("dumpavail"));
    dump.split("\n\n")
        .filter(|p| p.lines().any(|l| l.eq_ignore_ascii_case("Essential: yes")))
        .filter(|p| p.lines().any(|l| l == "Architecture: amd64" || l == "Architecture: all"))
        .filter_map(|p| p.lines().find_map(|l| l.strip_prefix("Package: ")).map(str::to_owned))
        .collect()
}

/// The Essential set, apt, and everything they depend on, in the order apt would install them, as .deb
/// files downloaded into `dir`.
fn essential_debs(dir: &Path) -> Vec<PathBuf> {
    let mut names = essential_names();
    if names.is_empty() {
        // A fresh machine may have no package lists yet.
        run(Command::new("apt-get").args(["update", "-q"]));
        names = essential_names();
    }
    assert!(names.contains("dpkg") && names.contains("base-files"), "apt knows no Essential set: {names:?}");
    // init-system-helpers depends on `usrmerge | usr-is-merged`: the tree is merged-/usr from the start, so
    // the marker package is the right choice (apt would pick the converter, and perl with it).
    let sim = run(Command::new("apt-get")
        .args(["-s", "-q", "-o", "Dir::State::status=/dev/null", "-o", "Debug::NoLocking=1"])
        .args(["-o", "APT::Install-Recommends=false", "-o", "APT::Architecture=amd64", "install"])
        .args(&names)
        .args(["usr-is-merged", "apt"]));
    let order: Vec<String> = sim
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    assert!(order.len() > names.len(), "apt resolved too little: {order:?}");
    run(Command::new("apt-get").args(["download", "-q"]).args(&order).current_dir(dir));
    let files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    order
        .iter()
        .map(|name| {
            files
                .iter()
                .find(|f| f.file_name().unwrap().to_string_lossy().starts_with(&format!("{name}_")))
                .unwrap_or_else(|| panic!("{name} was not downloaded"))
                .clone()
        })
        .collect()
}

fn test_debs(dir: &Path) -> Vec<PathBuf> {
    let demo = Pkg::new("kiln-demo", "1.0")
        .field("Depends", "base-passwd, coreutils")
        .file("/usr/share/kiln-demo/owned-by-daemon", "data\n")
        .file("/usr/share/kiln-demo/data", "demo\n")
        .hardlink("/usr/share/kiln-demo/data-again", "/usr/share/kiln-demo/data")
        .symlink("/usr/bin/kiln-demo", "../share/kiln-demo/data")
        .conffile("/etc/kiln-demo.conf", "enabled = yes\n")
        .script("preinst", "#!/bin/sh\nset -e\necho \"preinst $1\" >> /var/lib/kiln-demo.markers\n")
        .script(
            "postinst",
            "#!/bin/sh\nset -e\necho \"postinst $1\" >> /var/lib/kiln-demo.markers\n\
             chown daemon:daemon /usr/share/kiln-demo/owned-by-daemon\n",
        )
        .build(dir, "xz");
    let owned = craft_deb(
        dir,
        "kiln-owned",
        &[
            Crafted::Dir { path: "./srv/", mode: 0o755, uid: 0, gid: 0 },
            Crafted::File { path: "./srv/by-1000", content: "mine\n", mode: 0o640, uid: 1000, gid: 1000 },
        ],
    );
    vec![demo, owned]
}

/// Unpack, configure and normalize; the tree's digest.
fn build(debs: &[PathBuf], tree: &Path) -> String {
    let t = Instant::now();
    let unpacked = kiln_rootfs::unpack(debs, tree, &UnpackOptions::default()).unwrap();
    let unpack_time = t.elapsed();
    let t = Instant::now();
    let configured =
        kiln_rootfs::configure(tree, &unpacked, &ConfigureOptions { source_date_epoch: Some(EPOCH) });
    assert!(mounts_under(tree).is_empty(), "mounts left: {:?}", mounts_under(tree));
    configured.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{} packages: unpacked in {unpack_time:?}, configured in {:?}", debs.len(), t.elapsed());
    kiln_rootfs::normalize(tree, EPOCH).unwrap();
    kiln_rootfs::tree_digest(tree).unwrap()
}

#[test]
fn network_essential_base_with_test_packages_is_configured_by_its_own_dpkg() {
    if std::env::var_os("KILN_SKIP_NETWORK_TESTS").is_some() {
        eprintln!("SKIPPED: KILN_SKIP_NETWORK_TESTS is set");
        return;
    }
    if !rustix::process::geteuid().is_root() {
        // Essential maintainer scripts give files to system users (base-files chowns to `staff`), which a
        // user namespace mapping only the caller cannot do.
        eprintln!("SKIPPED: configuring the Essential set needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let downloads = dir.path().join("debs");
    std::fs::create_dir(&downloads).unwrap();
    let t = Instant::now();
    let mut debs = essential_debs(&downloads);
    eprintln!("downloaded {} packages in {:?}", debs.len(), t.elapsed());
    debs.extend(test_debs(dir.path()));

    let tree = dir.path().join("tree");
    let digest = build(&debs, &tree);

    // dpkg of the image, run plainly chrooted (no sandbox: an independent look).
    let chroot = |args: &[&str]| {
        run(Command::new("chroot").arg(&tree).args(args).env_clear().env("PATH", "/usr/sbin:/usr/bin"))
    };
    let states = chroot(&["dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Package}\n"]);
    let names: BTreeSet<&str> = states.lines().map(|l| l.split('|').nth(1).unwrap()).collect();
    assert_eq!(names.len(), debs.len(), "{states}");
    for line in states.lines() {
        assert!(line.starts_with("ii |"), "not installed: {line}");
    }
    assert_eq!(chroot(&["dpkg", "--audit"]), "");
    assert_eq!(chroot(&["dpkg", "--verify"]), "");
    let audit = run(Command::new("dpkg").arg(format!("--root={}", tree.display())).arg("--audit"));
    assert_eq!(audit, "", "the host's dpkg agrees");
    let listed = chroot(&["dpkg", "-L", "kiln-demo"]);
    for path in ["/etc/kiln-demo.conf", "/usr/share/kiln-demo/data-again", "/usr/bin/kiln-demo"] {
        assert!(listed.lines().any(|l| l == path), "dpkg -L lacks {path}: {listed}");
    }
    // apt reads the same database: its dependency check passes and it knows what is installed.
    chroot(&["apt-get", "check", "-q"]);
    let policy = chroot(&["apt-cache", "policy", "kiln-demo"]);
    assert!(policy.contains("Installed: 1.0"), "{policy}");

    let markers = std::fs::read_to_string(tree.join("var/lib/kiln-demo.markers")).unwrap();
    assert_eq!(markers, "preinst install\npostinst configure\n");
    assert_eq!(std::fs::read_to_string(tree.join("etc/kiln-demo.conf")).unwrap(), "enabled = yes\n");
    let leftovers = chroot(&["find", "/etc", "/usr", "-name", "*.dpkg-new"]);
    assert_eq!(leftovers, "", "conffiles all in place");
    use std::os::unix::fs::MetadataExt;
    let daemon_uid = chroot(&["id", "-u", "daemon"]);
    let owned = std::fs::metadata(tree.join("usr/share/kiln-demo/owned-by-daemon")).unwrap();
    assert_eq!(owned.uid().to_string(), daemon_uid.trim(), "the postinst's chown");
    let by_1000 = std::fs::metadata(tree.join("srv/by-1000")).unwrap();
    assert_eq!((by_1000.uid(), by_1000.gid(), by_1000.mode() & 0o7777), (1000, 1000, 0o640));
    assert!(tree.join("etc/ld.so.cache").is_file(), "libc-bin's ldconfig trigger ran");
    assert!(!tree.join("usr/sbin/policy-rc.d").exists());
    assert!(processes_in(&tree).is_empty(), "processes left: {:?}", processes_in(&tree));
    assert_eq!(std::fs::read_to_string(tree.join("etc/machine-id")).unwrap_or_default(), "");

    // The same inputs again: the same tree, bit for bit (what the digest covers).
    let again = dir.path().join("again");
    let second = build(&debs, &again);
    if second != digest {
        let (a, b) = (kiln_rootfs::dump_tree(&tree).unwrap(), kiln_rootfs::dump_tree(&again).unwrap());
        let diff: Vec<_> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).take(20).collect();
        panic!("two builds differ: {diff:#?}");
    }
}
