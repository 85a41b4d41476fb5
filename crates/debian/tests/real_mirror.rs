//! Tests against the real Debian mirror named by the host's apt sources (bookworm, main, amd64).
//! They need the network (the mirror) and, for the comparison, mmdebstrap; they run with the other tests, in
//! CI too, and take seconds.

use std::{collections::BTreeSet, path::Path, process::Command, time::Instant};

use kiln_debian::{
    host_sources,
    repo::{Client, Overrides, RepoSpec},
    Cache, Request, Universe,
};

const SUITE: &str = "bookworm";
const SERVER: [&str; 4] = ["linux-image-amd64", "systemd-sysv", "udev", "openssh-server"];

fn spec() -> RepoSpec {
    let sources = host_sources(Path::new("/")).expect("read the host's apt sources");
    let overrides =
        Overrides { suite: Some(SUITE.into()), components: vec!["main".into()], ..Overrides::default() };
    let spec = RepoSpec::choose(&sources, &overrides, Path::new("/")).expect("a host source for bookworm");
    assert!(spec.mirror.starts_with("http://"), "{}", spec.mirror);
    spec
}

fn universe(spec: &RepoSpec, cache: &Path) -> Universe {
    let client = Client::new(Cache::new(cache));
    let repo = client.open(spec).expect("fetch and verify InRelease");
    assert_eq!(repo.release().codename.as_deref(), Some(SUITE));
    assert!(repo.release().acquire_by_hash);
    repo.universe("amd64").expect("fetch, verify and parse main/binary-amd64/Packages")
}

fn set(r: &kiln_debian::Resolution) -> BTreeSet<String> {
    r.packages.iter().map(|p| format!("{}={}", p.name, p.version)).collect()
}

#[test]
fn resolves_minbase_and_a_server_set_from_the_host_mirror() {
    let start = Instant::now();
    let cache = tempfile::tempdir().unwrap();
    let u = universe(&spec(), cache.path());
    let fetched = start.elapsed();
    assert!(u.packages().len() > 50_000, "{}", u.packages().len());

    let minbase = u.resolve(&Request::default()).unwrap();
    let names: BTreeSet<&str> = minbase.packages.iter().map(|p| p.name.as_str()).collect();
    for wanted in ["apt", "base-files", "bash", "coreutils", "dpkg", "libc6", "gpgv", "mawk", "usrmerge"] {
        assert!(names.contains(wanted), "minbase lacks {wanted}");
    }
    for unwanted in ["systemd", "vim-tiny", "linux-image-amd64"] {
        assert!(!names.contains(unwanted), "minbase has {unwanted}");
    }
    assert_eq!(minbase.install_order.len(), minbase.packages.len());

    let request = Request { include: SERVER.iter().map(|s| s.to_string()).collect(), ..Request::default() };
    let server = u.resolve(&request).unwrap();
    let names: BTreeSet<&str> = server.packages.iter().map(|p| p.name.as_str()).collect();
    assert!(names.is_superset(&minbase.packages.iter().map(|p| p.name.as_str()).collect()));
    for wanted in SERVER.iter().copied().chain(["systemd", "openssh-client", "kmod", "initramfs-tools"]) {
        assert!(names.contains(wanted), "server set lacks {wanted}");
    }
    assert!(names.iter().any(|n| n.starts_with("linux-image-6.")), "no kernel image");
    // Pre-Depends and dependencies come first.
    let pos = |n: &str| server.install_order.iter().position(|x| x == n).unwrap();
    assert!(pos("libc6") < pos("dpkg") && pos("systemd") < pos("systemd-sysv"));
    println!(
        "fetched and verified in {fetched:?}, total {:?}: minbase {} packages, server {} packages",
        start.elapsed(),
        minbase.packages.len(),
        server.packages.len()
    );
}

/// The `Inst name (version ...)` lines of `mmdebstrap --simulate --verbose ARGS` as `name=version`.
fn mmdebstrap_set(spec: &RepoSpec, args: &[String]) -> BTreeSet<String> {
    let out = Command::new("mmdebstrap")
        .args(["--verbose", "--simulate"])
        .args(args)
        .arg(SUITE)
        .arg("/dev/null")
        .arg(format!("deb {} {SUITE} main", spec.mirror))
        .output()
        .expect("run mmdebstrap");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mmdebstrap failed:\n{text}");
    text.lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| {
            let (name, rest) = l.split_once(" (")?;
            Some(format!("{name}={}", rest.split_whitespace().next()?))
        })
        .collect()
}

fn assert_same(what: &str, ours: &BTreeSet<String>, theirs: &BTreeSet<String>) {
    let only_ours: Vec<&String> = ours.difference(theirs).collect();
    let only_theirs: Vec<&String> = theirs.difference(ours).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "{what}: only kiln: {only_ours:?}; only mmdebstrap: {only_theirs:?}"
    );
    println!("{what}: {} packages, the same as mmdebstrap", ours.len());
}

#[test]
fn minbase_matches_mmdebstrap_exactly() {
    let spec = spec();
    let cache = tempfile::tempdir().unwrap();
    let u = universe(&spec, cache.path());

    let ours = set(&u.resolve(&Request::default()).unwrap());
    assert_same("minbase", &ours, &mmdebstrap_set(&spec, &["--variant=minbase".into()]));

    // With extra packages, `--variant=minbase --simulate` is not what a real run installs: a real run
    // installs the Essential set first and the rest in a second apt call, but a simulation installs
    // nothing, so its second call can't count on the Essential packages (e.g. it adds lsb-base, which
    // the Essential sysvinit-utils provides). The same set in one apt call matches a real run.
    let request = Request { include: SERVER.iter().map(|s| s.to_string()).collect(), ..Request::default() };
    let ours = set(&u.resolve(&request).unwrap());
    let args = [
        "--variant=custom".to_owned(),
        "--include=?essential".to_owned(),
        "--include=?priority(required)".to_owned(),
        format!("--include=apt,{}", SERVER.join(",")),
    ];
    assert_same("minbase + server packages", &ours, &mmdebstrap_set(&spec, &args));
}
