//! Runtime checks in real boots under QEMU: `debian-minimal` (built here from `blueprints/debian-minimal`)
//! passes its runtime checks while wrong expectations fail with their evidence; an image broken on purpose
//! (`tests/fixtures/broken-units`: a unit that fails, sshd disabled) fails the checks it should; an image
//! that never boots (a copy of `debian-minimal`'s disk with its root file system's superblock wiped) fails
//! every check at the timeout, with the console. The artifacts keep their digests.
//!
//! Three boots, one at a time (with the two builds): about four minutes under TCG. They need root (the
//! builds run maintainer scripts in a chroot), the Debian mirror of the host's apt sources (the package stage
//! is cached in `KILN_TEST_CACHE`, default `~/.cache/kiln`), `qemu-system-x86`, `qemu-utils` and `ovmf`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use kiln_blueprint::manifest::ArtifactKind;
use kiln_contract::{Check, Protocol};
use kiln_testsuites::{
    outcome::{CheckResult, Outcome},
    runtime::{run_runtime_checks, RuntimeError, RuntimeOptions, RuntimeReport},
};
use sha2::{Digest as _, Sha256};

/// Builds and boots run one at a time: two TCG VMs at once on a small machine would slow each other's boot
/// past the time limits under test.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn root_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn work(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-runtime-tests").join(name);
    let _ = Command::new("rm").arg("-rf").arg(&d).status();
    fs_err::create_dir_all(d.parent().unwrap()).unwrap();
    d
}

/// Whether this process can build and boot images; otherwise the test says why it does nothing.
fn can_boot() -> bool {
    let uid =
        Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if !uid.is_ok_and(|u| u == "0") {
        eprintln!(
            "SKIP: building images needs root (maintainer scripts run in a chroot); run the tests as root"
        );
        return false;
    }
    for tool in ["qemu-system-x86_64", "qemu-img"] {
        if Command::new(tool).arg("--version").output().is_err() {
            panic!("{tool} is missing: install qemu-system-x86 and qemu-utils (scripts/test does)");
        }
    }
    true
}

fn build(blueprint: &Path, out: &Path) {
    let _guard = heavy();
    let plan = kiln_blueprint::plan::plan_path(blueprint, &Default::default())
        .unwrap_or_else(|e| panic!("planning {}: {e:?}", blueprint.display()));
    let cache = std::env::var_os("KILN_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/kiln"));
    let opts = kiln_builder::BuildOptions {
        out: out.to_owned(),
        blueprint_dir: blueprint.to_owned(),
        cache_dir: cache,
        source_date_epoch: 1_700_000_000,
        host_root: "/".into(),
        keep_tree: false,
        tree_only: false,
        stage_cache: true,
        network_in_run: false,
        revision: None,
        source: None,
        catalog: None,
    };
    let started = Instant::now();
    let report = kiln_builder::build(&plan, &opts).unwrap_or_else(|e| {
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        panic!("building {}: {chain}", blueprint.display())
    });
    eprintln!(
        "built {} in {:.0} s: {:?}",
        blueprint.display(),
        started.elapsed().as_secs_f64(),
        report.timings
    );
}

/// `blueprints/debian-minimal`, built once for this file.
fn minimal() -> &'static Path {
    static MINIMAL: OnceLock<PathBuf> = OnceLock::new();
    MINIMAL.get_or_init(|| {
        let out = work("debian-minimal");
        build(&root_dir().join("blueprints/debian-minimal"), &out);
        out
    })
}

fn sha256_file(path: &Path) -> String {
    let mut f = fs_err::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

fn run(image: &Path, format: ArtifactKind, checks: &[(&str, Check)], timeout: Duration) -> RuntimeReport {
    let refs: Vec<(&str, &Check)> = checks.iter().map(|(id, c)| (*id, c)).collect();
    // The run makes (and removes) its own folder in here; tests may share it.
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-runtime-tests");
    let opts = RuntimeOptions { timeout, scratch_dir: scratch, ..RuntimeOptions::default() };
    let _guard = heavy();
    let started = Instant::now();
    let report = run_runtime_checks(image, format, &refs, &opts).unwrap();
    eprintln!(
        "{}: {:.0} s ({}, boot settled at {:?} s)",
        image.display(),
        started.elapsed().as_secs_f64(),
        report.accelerator,
        report.settled_secs
    );
    report
}

fn outcome<'a>(report: &'a RuntimeReport, id: &str) -> &'a Outcome {
    let r: &CheckResult = report.result(id).unwrap_or_else(|| panic!("no result for {id}"));
    match &r.outcome {
        Ok(o) => o,
        Err(e) => panic!("{id}: the checker broke: {e}\nconsole:\n{}", report.console),
    }
}

fn assert_pass(report: &RuntimeReport, id: &str) {
    let o = outcome(report, id);
    assert!(o.is_pass(), "{id}: {o}\nconsole tail:\n{}", kiln_testsuites::vm::tail(&report.console, 40));
}

/// The evidence of a check that must fail.
fn failed<'a>(report: &'a RuntimeReport, id: &str) -> (&'a str, &'a str) {
    match outcome(report, id) {
        Outcome::Fail { expected, found } => (expected, found),
        other => panic!("{id} should fail, got {other}"),
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn debian_minimal_passes_its_runtime_checks_and_wrong_expectations_fail_with_evidence() {
    if !can_boot() {
        return;
    }
    let out = minimal();
    let (qcow2, raw) = (out.join("disk.qcow2"), out.join("disk.raw"));
    let before = (sha256_file(&qcow2), sha256_file(&raw));
    let checks = [
        // What debian-minimal promises.
        ("multi-user", Check::BootTarget { target: "multi-user.target".into(), within_secs: 120 }),
        ("sshd-active", Check::UnitActive { unit: "ssh.service".into() }),
        ("ssh-port", Check::PortListening { port: 22, protocol: Protocol::Tcp }),
        (
            "hostname",
            Check::Command {
                run: "cat /etc/hostname".into(),
                exit_code: 0,
                output: Some("^debian-minimal$".into()),
            },
        ),
        (
            "cmdline",
            Check::KernelCmdline {
                contains: words(&["root=", "console=ttyS0"]),
                absent: words(&["quiet", "systemd.run="]),
            },
        ),
        ("no-failed", Check::NoFailedUnits { allow: vec![] }),
        // Expectations the image does not meet, in the same boot.
        ("fast-boot", Check::BootTarget { target: "multi-user.target".into(), within_secs: 1 }),
        ("no-target", Check::BootTarget { target: "kiln-nonexistent.target".into(), within_secs: 120 }),
        ("rescue-active", Check::UnitActive { unit: "rescue.service".into() }),
        ("telnet-port", Check::PortListening { port: 23, protocol: Protocol::Tcp }),
        ("wrong-exit", Check::Command { run: "echo bye; exit 3".into(), exit_code: 0, output: None }),
        (
            "wrong-output",
            Check::Command { run: "uname -s".into(), exit_code: 0, output: Some("^FreeBSD$".into()) },
        ),
        ("no-rw", Check::KernelCmdline { contains: words(&["quiet"]), absent: words(&["rw"]) }),
    ];
    let report = run(&qcow2, ArtifactKind::Qcow2, &checks, Duration::from_secs(420));
    assert!(report.booted, "console:\n{}", report.console);
    assert_eq!(report.results.len(), checks.len());
    assert_eq!(
        report.default_target.as_deref(),
        Some("graphical.target"),
        "Debian's default, from the image"
    );
    assert!(report.console.contains("Linux version"), "the console is kept");
    for id in ["multi-user", "sshd-active", "ssh-port", "hostname", "cmdline", "no-failed"] {
        assert_pass(&report, id);
    }

    let (expected, found) = failed(&report, "fast-boot");
    assert_eq!(expected, "multi-user.target reached within 1 s of boot");
    let secs: f64 =
        found.strip_prefix("reached after ").and_then(|s| s.strip_suffix(" s")).unwrap().parse().unwrap();
    assert!(secs > 1.0 && secs <= 120.0, "{found}");
    let (_, found) = failed(&report, "no-target");
    assert_eq!(found, "no such unit (LoadState=not-found)");
    let (expected, found) = failed(&report, "rescue-active");
    assert_eq!(expected, "rescue.service active");
    assert!(
        found.starts_with("inactive; systemctl status:\n") && found.contains("rescue.service"),
        "{found}"
    );
    let (expected, found) = failed(&report, "telnet-port");
    assert_eq!(expected, "something listening on tcp port 23");
    assert_eq!(found, "nothing on tcp port 23; listening tcp ports: 22");
    let (expected, found) = failed(&report, "wrong-exit");
    assert_eq!(expected, "`echo bye; exit 3` exits with 0");
    assert_eq!(found, "exit code 3; output:\nbye");
    let (_, found) = failed(&report, "wrong-output");
    assert_eq!(found, "exit code 0, output not matching; output:\nLinux");
    let (expected, found) = failed(&report, "no-rw");
    assert_eq!(expected, "a kernel command line with quiet and without rw");
    assert!(found.starts_with("missing quiet, present rw in `root=PARTUUID="), "{found}");
    assert!(!found.contains("systemd.run"), "only the image's own command line is judged: {found}");

    // Every result has a duration and the report serializes with its evidence.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["results"][9]["found"], "nothing on tcp port 23; listening tcp ports: 22");

    // The OCI artifact has no kernel: its runtime checks are skipped, with the reason.
    let refs: Vec<(&str, &Check)> = checks.iter().map(|(id, c)| (*id, c)).collect();
    let oci =
        run_runtime_checks(&out.join("oci"), ArtifactKind::Oci, &refs, &RuntimeOptions::default()).unwrap();
    assert!(oci
        .results
        .iter()
        .all(|r| matches!(&r.outcome, Ok(Outcome::Skip { reason }) if reason.contains("OCI"))));

    assert_eq!((sha256_file(&qcow2), sha256_file(&raw)), before, "checking must not change the artifacts");
}

#[test]
fn a_failing_unit_and_a_disabled_service_fail_with_their_evidence() {
    if !can_boot() {
        return;
    }
    let out = work("broken-units");
    build(&root_dir().join("testsuites/tests/fixtures/broken-units"), &out);
    let raw = out.join("disk.raw");
    let before = sha256_file(&raw);
    let checks = [
        ("no-failed", Check::NoFailedUnits { allow: vec![] }),
        ("no-failed-but-known", Check::NoFailedUnits { allow: vec!["kiln-*.service".into()] }),
        ("sshd-active", Check::UnitActive { unit: "ssh.service".into() }),
        ("ssh-port", Check::PortListening { port: 22, protocol: Protocol::Tcp }),
        ("multi-user", Check::BootTarget { target: "multi-user.target".into(), within_secs: 120 }),
    ];
    let report = run(&raw, ArtifactKind::Raw, &checks, Duration::from_secs(420));
    let (expected, found) = failed(&report, "no-failed");
    assert_eq!(expected, "no failed units");
    assert!(found.starts_with("failed: kiln-fails.service; systemctl status:\n"), "{found}");
    assert!(
        found.contains("kiln-fails: giving up on purpose"),
        "the unit's own log is in the evidence: {found}"
    );
    assert_pass(&report, "no-failed-but-known");
    let (_, found) = failed(&report, "sshd-active");
    assert!(found.starts_with("inactive; systemctl status:\n"), "{found}");
    assert!(found.contains("ssh.service; disabled;"), "the status says why: {found}");
    let (_, found) = failed(&report, "ssh-port");
    assert_eq!(found, "nothing on tcp port 22; listening tcp ports: none");
    assert_pass(&report, "multi-user");
    assert_eq!(sha256_file(&raw), before);
}

#[test]
fn an_image_that_never_boots_fails_every_check_at_the_timeout_with_the_console() {
    if !can_boot() {
        return;
    }
    let artifact = minimal().join("disk.raw");
    let before = sha256_file(&artifact);
    // A copy whose root file system has no superblock: the kernel starts, the initramfs cannot mount the root
    // and waits in its rescue shell. The copy is a fixture, not an artifact.
    let dir = work("never-boots");
    fs_err::create_dir_all(&dir).unwrap();
    let broken = dir.join("disk.raw");
    let cp =
        Command::new("cp").args(["--sparse=always", "--reflink=auto"]).arg(&artifact).arg(&broken).status();
    assert!(cp.unwrap().success());
    let table = Command::new("sfdisk").arg("--json").arg(&broken).output().unwrap();
    let table: serde_json::Value = serde_json::from_slice(&table.stdout).unwrap();
    let root_start = table["partitiontable"]["partitions"][1]["start"].as_u64().unwrap() * 512;
    {
        use std::io::{Seek as _, SeekFrom, Write as _};
        let mut f = fs_err::OpenOptions::new().write(true).open(&broken).unwrap();
        f.seek(SeekFrom::Start(root_start + 1024)).unwrap();
        f.write_all(&[0u8; 1024]).unwrap();
    }
    let checks = [
        ("sshd-active", Check::UnitActive { unit: "ssh.service".into() }),
        ("cmdline", Check::KernelCmdline { contains: words(&["root="]), absent: vec![] }),
    ];
    // Long enough for the initramfs to give up on the root (about 20 s after QEMU starts, under TCG), short
    // of a full boot.
    let timeout = Duration::from_secs(45);
    let report = run(&broken, ArtifactKind::Raw, &checks, timeout);
    assert!(report.vm_secs >= 45.0 && report.vm_secs < 55.0, "killed at the timeout: {} s", report.vm_secs);
    assert!(!report.booted);
    for (id, expected) in
        [("sshd-active", "ssh.service active"), ("cmdline", "a kernel command line with root=")]
    {
        let (e, found) = failed(&report, id);
        assert_eq!(e, expected);
        let why = "the image did not boot within 45 s (the checks never started); last console lines:\n";
        assert!(found.starts_with(why), "{found}");
        assert!(
            found.contains("Failed to mount /dev/vda2 as root file system."),
            "the console's tail: {found}"
        );
    }
    assert_eq!(sha256_file(&artifact), before);
}

#[test]
fn misrouted_checks_and_unbootable_files_are_errors_not_failures() {
    let statik = Check::Package { name: "openssh-server".into(), state: kiln_contract::PackageState::Absent };
    let err = run_runtime_checks(
        Path::new("/nonexistent"),
        ArtifactKind::Raw,
        &[("pkg", &statik)],
        &Default::default(),
    );
    assert!(
        matches!(err, Err(RuntimeError::NotRuntime { ref id, kind: "package" }) if id == "pkg"),
        "{err:?}"
    );

    let unit = Check::UnitActive { unit: "ssh.service".into() };
    let err = run_runtime_checks(
        Path::new("/nonexistent"),
        ArtifactKind::Sbom,
        &[("u", &unit)],
        &Default::default(),
    );
    assert!(matches!(err, Err(RuntimeError::NotAnImage(ArtifactKind::Sbom))), "{err:?}");

    // A file with no partition table: nothing to boot, and no VM is started.
    let dir = work("no-gpt");
    fs_err::create_dir_all(&dir).unwrap();
    let blank = dir.join("blank.raw");
    fs_err::write(&blank, vec![0u8; 64 * 1024]).unwrap();
    let opts = RuntimeOptions { scratch_dir: dir.clone(), ..Default::default() };
    let err = run_runtime_checks(&blank, ArtifactKind::Raw, &[("u", &unit)], &opts).unwrap_err();
    assert!(format!("{err:?}").contains("NoGpt"), "{err:?}");
    assert_eq!(fs_err::read_dir(&dir).unwrap().count(), 1, "the run's scratch folder is removed");
}
