//! Static checks against images kiln's own writers make: a small Debian-like tree (os-release, dpkg
//! database, accounts, units and their links, sshd and sysctl configuration, the host's real libc.so.6, a
//! setuid file, a world-writable file) written as an OCI image and as a raw disk. For every kind of static
//! requirement one check passes and one, against what this image deliberately gets wrong, fails with the
//! evidence a reader needs; checks that cannot apply are skipped with the reason; a checker that cannot
//! read what it needs is an error, not a Fail. Runs as root (owners); needs e2fsprogs.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{lchown, symlink, PermissionsExt},
    path::Path,
};

use kiln_contract::{model::ConfigFormat, Check, FileKind, Match, PackageState, ServiceState};
use kiln_oci::{write_image, CompressOptions, Compression, ImageSpec, RuntimeConfig};
use kiln_testsuites::{
    image::{DiskImage, OciImage, RootFs},
    outcome::Outcome,
    statics::{check, StaticContext},
};

const EPOCH: u64 = 1_700_000_000;

fn put(root: &Path, rel: &str, data: &[u8], mode: u32, owner: (u32, u32)) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    lchown(&p, Some(owner.0), Some(owner.1)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn link(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, &p).unwrap();
}

fn host_libc() -> Vec<u8> {
    let p = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("a Debian amd64 host has libc.so.6");
    fs::read(p).unwrap()
}

/// The image under test.
fn tree(root: &Path) {
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    link(root, "lib", "usr/lib");
    link(root, "bin", "usr/bin");
    put(
        root,
        "etc/os-release",
        b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        0o644,
        (0, 0),
    );
    put(
        root,
        "var/lib/dpkg/status",
        b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\n\n\
Package: openssh-server\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:9.2p1-2+deb12u3\n\n\
Package: telnetd\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 0.17-44\n",
        0o644,
        (0, 0),
    );
    put(
        root,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\napp:x:1000:1000::/home/app:/bin/bash\n",
        0o644,
        (0, 0),
    );
    put(root, "etc/group", b"root:x:0:\nshadow:x:42:\napp:x:1000:\nweb:x:2000:app\n", 0o644, (0, 0));
    put(
        root,
        "lib/systemd/system/ssh.service",
        b"[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n",
        0o644,
        (0, 0),
    );
    put(
        root,
        "lib/systemd/system/cron.service",
        b"[Service]\nExecStart=/usr/sbin/cron\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
        (0, 0),
    );
    put(
        root,
        "lib/systemd/system/debug-shell.service",
        b"[Service]\nExecStart=/bin/sh\n[Install]\nWantedBy=sysinit.target\n",
        0o644,
        (0, 0),
    );
    link(root, "etc/systemd/system/multi-user.target.wants/ssh.service", "/lib/systemd/system/ssh.service");
    link(root, "etc/systemd/system/sshd.service", "/lib/systemd/system/ssh.service");
    link(root, "etc/systemd/system/debug-shell.service", "/dev/null");
    put(root, "etc/ssh/sshd_config", b"Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication yes\nMatch User app\n  PermitRootLogin yes\n", 0o644, (0, 0));
    put(root, "etc/ssh/sshd_config.d/50-kiln.conf", b"PermitRootLogin no\n", 0o644, (0, 0));
    put(
        root,
        "usr/lib/sysctl.d/50-default.conf",
        b"net.ipv4.ip_forward = 0\nkernel.kptr_restrict = 1\n",
        0o644,
        (0, 0),
    );
    put(root, "etc/sysctl.d/90-kiln.conf", b"kernel.kptr_restrict = 2\n", 0o644, (0, 0));
    put(root, "usr/lib/x86_64-linux-gnu/libc.so.6", &host_libc(), 0o755, (0, 0));
    put(root, "usr/bin/passwd", b"\x7fELF-not-really", 0o4755, (0, 0));
    put(root, "usr/bin/sneaky", b"#!/bin/sh\n", 0o4755, (0, 0));
    put(root, "var/tmp/scratch", b"anyone\n", 0o666, (0, 0));
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    put(root, "etc/motd", b"Welcome to a kiln image\n", 0o644, (0, 0));
    put(root, "home/app/.profile", b"# app\n", 0o600, (1000, 1000));
    // What the disk writer puts on the ESP (stand-ins: nothing boots in this test).
    put(root, "boot/vmlinuz-6.1.0-1-amd64", b"kernel", 0o644, (0, 0));
    put(root, "boot/initrd.img-6.1.0-1-amd64", b"initrd", 0o644, (0, 0));
    put(root, "usr/lib/systemd/boot/efi/systemd-bootx64.efi", b"MZ boot", 0o644, (0, 0));
}

fn oci_layout(tree: &Path, dir: &Path) -> std::path::PathBuf {
    let mut spec = ImageSpec::new("1.0.0", EPOCH);
    spec.config = RuntimeConfig {
        env: vec!["PATH=/usr/bin:/bin".into(), "LANG=C.UTF-8".into()],
        entrypoint: None,
        cmd: Some(vec!["/bin/bash".into()]),
        labels: [("org.opencontainers.image.title".to_string(), "static-test".to_string())].into(),
        user: None,
        workdir: Some("/".into()),
        exposed_ports: vec!["8080/tcp".into()],
    };
    let layout = dir.join("oci");
    write_image(tree, &layout, &spec, &CompressOptions::new(Compression::Gzip), "test").unwrap();
    layout
}

fn eq(s: &str) -> Match {
    Match::Equals(s.into())
}

fn re(s: &str) -> Match {
    Match::Regex(s.into())
}

/// A `file` check's fields, to vary one or two at a time.
#[derive(Debug, Clone, Default)]
struct F {
    path: &'static str,
    absent: bool,
    file_type: Option<FileKind>,
    mode: Option<u32>,
    owner: Option<&'static str>,
    group: Option<&'static str>,
    sha256: Option<String>,
    content: Option<&'static str>,
}

impl F {
    fn c(self) -> Check {
        Check::File {
            path: self.path.into(),
            exists: !self.absent,
            file_type: self.file_type,
            mode: self.mode,
            owner: self.owner.map(str::to_owned),
            group: self.group.map(str::to_owned),
            sha256: self.sha256,
            content: self.content.map(str::to_owned),
        }
    }
}

fn file_check(path: &'static str) -> F {
    F { path, ..F::default() }
}

/// The Fail's evidence, or a panic saying what came instead.
fn failed(outcome: Result<Outcome, kiln_testsuites::outcome::CheckError>, what: &str) -> (String, String) {
    match outcome {
        Ok(Outcome::Fail { expected, found }) => (expected, found),
        other => panic!("{what}: expected a Fail, got {other:?}"),
    }
}

fn passes(ctx: &StaticContext<'_>, c: Check) {
    let what = format!("{c:?}");
    assert_eq!(check(ctx, &c), Ok(Outcome::Pass), "{what}");
}

fn fails(ctx: &StaticContext<'_>, c: Check, expected_has: &str, found_has: &str) {
    let what = format!("{c:?}");
    let (expected, found) = failed(check(ctx, &c), &what);
    assert!(expected.contains(expected_has), "{what}: expected `{expected}` to mention `{expected_has}`");
    assert!(found.contains(found_has), "{what}: found `{found}` to mention `{found_has}`");
}

/// Every static kind, once passing and once failing with its evidence, on one image view.
fn every_kind(ctx: &StaticContext<'_>) {
    // os-release
    passes(ctx, Check::OsRelease { field: "ID".into(), value: eq("debian") });
    passes(ctx, Check::OsRelease { field: "PRETTY_NAME".into(), value: re("bookworm") });
    fails(
        ctx,
        Check::OsRelease { field: "VERSION_ID".into(), value: eq("13") },
        "VERSION_ID=\"13\"",
        "VERSION_ID=\"12\"",
    );
    fails(
        ctx,
        Check::OsRelease { field: "VARIANT_ID".into(), value: eq("x") },
        "VARIANT_ID",
        "no VARIANT_ID field",
    );

    // package
    let present = |v: Option<&str>| PackageState::Present { version: v.map(str::to_owned) };
    passes(ctx, Check::Package { name: "libc6".into(), state: present(Some(">= 2.36")) });
    passes(ctx, Check::Package { name: "openssh-server".into(), state: present(None) });
    passes(ctx, Check::Package { name: "telnetd".into(), state: PackageState::Absent });
    fails(
        ctx,
        Check::Package { name: "libc6".into(), state: present(Some(">= 2.40")) },
        ">= 2.40",
        "libc6 2.36-9+deb12u4",
    );
    fails(ctx, Check::Package { name: "python3".into(), state: present(None) }, "python3", "not installed");
    fails(
        ctx,
        Check::Package { name: "openssh-server".into(), state: PackageState::Absent },
        "not installed",
        "1:9.2p1-2+deb12u3",
    );

    // file
    passes(
        ctx,
        F {
            mode: Some(0o644),
            owner: Some("root"),
            group: Some("0"),
            content: Some("kiln"),
            file_type: Some(FileKind::File),
            ..file_check("/etc/motd")
        }
        .c(),
    );
    passes(ctx, F { file_type: Some(FileKind::Symlink), ..file_check("/lib") }.c());
    passes(ctx, F { file_type: Some(FileKind::Directory), ..file_check("/lib/systemd") }.c());
    passes(ctx, F { absent: true, ..file_check("/etc/shadow") }.c());
    passes(
        ctx,
        F { owner: Some("app"), group: Some("app"), mode: Some(0o600), ..file_check("/home/app/.profile") }
            .c(),
    );
    fails(ctx, F { mode: Some(0o600), ..file_check("/etc/motd") }.c(), "mode 0600", "mode 0644");
    fails(ctx, F { owner: Some("app"), ..file_check("/etc/motd") }.c(), "owner app (1000)", "owner root (0)");
    fails(ctx, file_check("/etc/shadow").c(), "/etc/shadow exists", "nothing there");
    fails(ctx, F { absent: true, ..file_check("/etc/motd") }.c(), "no /etc/motd", "a file is there");
    fails(
        ctx,
        F { content: Some("^Goodbye"), ..file_check("/etc/motd") }.c(),
        "/^Goodbye/",
        "Welcome to a kiln image",
    );
    fails(ctx, F { sha256: Some("00".repeat(32)), ..file_check("/etc/motd") }.c(), "sha256 0000", "sha256 ");
    fails(
        ctx,
        F { file_type: Some(FileKind::Directory), ..file_check("/etc/motd") }.c(),
        "a directory",
        "a file",
    );

    // user and group
    passes(
        ctx,
        Check::User {
            name: "app".into(),
            uid: Some(1000),
            home: Some("/home/app".into()),
            shell: Some("/bin/bash".into()),
            groups: vec!["web".into(), "app".into()],
        },
    );
    fails(
        ctx,
        Check::User {
            name: "app".into(),
            uid: None,
            home: None,
            shell: Some("/bin/sh".into()),
            groups: vec![],
        },
        "shell /bin/sh",
        "shell /bin/bash",
    );
    fails(
        ctx,
        Check::User { name: "app".into(), uid: None, home: None, shell: None, groups: vec!["shadow".into()] },
        "member of shadow",
        "member of app, web",
    );
    fails(
        ctx,
        Check::User { name: "nobody".into(), uid: None, home: None, shell: None, groups: vec![] },
        "nobody",
        "no such user",
    );
    passes(ctx, Check::Group { name: "web".into(), gid: Some(2000), members: vec!["app".into()] });
    passes(ctx, Check::Group { name: "app".into(), gid: None, members: vec!["app".into()] });
    fails(ctx, Check::Group { name: "web".into(), gid: Some(3000), members: vec![] }, "gid 3000", "gid 2000");
    fails(
        ctx,
        Check::Group { name: "shadow".into(), gid: None, members: vec!["app".into()] },
        "members app",
        "(none)",
    );

    // service
    passes(ctx, Check::Service { unit: "ssh.service".into(), state: ServiceState::Enabled });
    passes(ctx, Check::Service { unit: "cron.service".into(), state: ServiceState::Disabled });
    passes(ctx, Check::Service { unit: "debug-shell.service".into(), state: ServiceState::Masked });
    fails(
        ctx,
        Check::Service { unit: "cron.service".into(), state: ServiceState::Enabled },
        "cron.service enabled",
        "cron.service disabled",
    );
    fails(
        ctx,
        Check::Service { unit: "debug-shell.service".into(), state: ServiceState::Enabled },
        "enabled",
        "masked",
    );
    fails(
        ctx,
        Check::Service { unit: "nginx.service".into(), state: ServiceState::Enabled },
        "nginx.service",
        "no unit file",
    );

    // config
    let sshd = |key: &str, value: Match| Check::Config { format: ConfigFormat::Sshd, key: key.into(), value };
    let sysctl =
        |key: &str, value: Match| Check::Config { format: ConfigFormat::Sysctl, key: key.into(), value };
    passes(ctx, sshd("PermitRootLogin", re("^(no|prohibit-password)$")));
    passes(ctx, sshd("pubkeyauthentication", eq("yes")));
    fails(
        ctx,
        sshd("PasswordAuthentication", eq("no")),
        "PasswordAuthentication",
        "\"yes\" (from /etc/ssh/sshd_config:2)",
    );
    fails(ctx, sshd("PermitRootLogin", eq("yes")), "\"yes\"", "/etc/ssh/sshd_config.d/50-kiln.conf:1");
    passes(ctx, sysctl("kernel.kptr_restrict", eq("2")));
    fails(
        ctx,
        sysctl("net/ipv4/ip_forward", eq("1")),
        "net/ipv4/ip_forward",
        "\"0\" (from /usr/lib/sysctl.d/50-default.conf:1)",
    );
    fails(ctx, sysctl("vm.swappiness", eq("10")), "vm.swappiness", "is not set");

    // library
    passes(
        ctx,
        Check::Library {
            soname: "libc.so.6".into(),
            symbol_versions: vec!["GLIBC_2.2.5".into(), "GLIBC_2.34".into()],
        },
    );
    fails(
        ctx,
        Check::Library { soname: "libc.so.6".into(), symbol_versions: vec!["GLIBC_9.99".into()] },
        "GLIBC_9.99",
        "lacks GLIBC_9.99",
    );
    fails(
        ctx,
        Check::Library { soname: "libnope.so.1".into(), symbol_versions: vec![] },
        "libnope.so.1",
        "not found",
    );

    // special files
    let special = |allow: &[&str]| Check::SpecialFiles {
        setuid: true,
        setgid: true,
        world_writable: true,
        allow: allow.iter().map(|s| s.to_string()).collect(),
    };
    passes(ctx, special(&["/usr/bin/passwd", "/usr/bin/sneaky", "/var/tmp/*"]));
    let (_, found) = failed(check(ctx, &special(&["/usr/bin/passwd"])), "special files");
    assert!(found.contains("/usr/bin/sneaky (4755 setuid)"), "{found}");
    assert!(found.contains("/var/tmp/scratch (0666 world-writable)"), "{found}");
    assert!(
        !found.contains("/usr/bin/passwd") && !found.contains("/tmp ("),
        "allowlisted and sticky: {found}"
    );

    // runtime kinds are not decided here
    let runtime = Check::UnitActive { unit: "ssh.service".into() };
    assert!(matches!(check(ctx, &runtime), Ok(Outcome::Skip { reason }) if reason.contains("runtime")));
}

#[test]
fn every_static_kind_passes_and_fails_with_evidence_on_an_oci_image() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    tree(&root);
    let layout = oci_layout(&root, tmp.path());
    let image = OciImage::open(&layout).unwrap();
    let ctx = StaticContext::new(&image, Some(image.config()));
    every_kind(&ctx);

    let oci = |cmd: Option<Vec<String>>, labels: &[(&str, Match)], ports: &[&str]| Check::OciConfig {
        entrypoint: None,
        cmd,
        env: BTreeMap::from([("LANG".to_string(), eq("C.UTF-8"))]),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        exposed_ports: ports.iter().map(|s| s.to_string()).collect(),
        user: None,
    };
    passes(
        &ctx,
        oci(Some(vec!["/bin/bash".into()]), &[("org.opencontainers.image.title", re("."))], &["8080/tcp"]),
    );
    fails(&ctx, oci(None, &[], &["80/tcp"]), "port 80/tcp exposed", "exposed: 8080/tcp");
    fails(
        &ctx,
        oci(None, &[("org.opencontainers.image.version", re("."))], &[]),
        "org.opencontainers.image.version",
        "no label",
    );
    fails(&ctx, oci(Some(vec!["/bin/sh".into()]), &[], &[]), "cmd [\"/bin/sh\"]", "cmd [\"/bin/bash\"]");
}

#[test]
fn every_static_kind_passes_and_fails_with_evidence_on_a_raw_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    tree(&root);
    let work = tmp.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let req = kiln_disk::DiskImageRequest {
        tree: root.clone(),
        work_dir: work,
        spec: kiln_disk::DiskSpec {
            size: Some(80 * kiln_disk::MIB),
            esp_size: 33 * kiln_disk::MIB,
            extra: vec![],
        },
        identity: kiln_disk::ImageIdentity::new("static-test", "1.0.0", "sha256:0000"),
        epoch: EPOCH,
        entry_id: "static".into(),
        title: "static".into(),
        cmdline: vec![],
    };
    let raw = tmp.path().join("disk.raw");
    kiln_disk::build_raw_image(&req, &raw).unwrap();
    let disk = DiskImage::open(&raw).unwrap();
    let ctx = StaticContext::new(&disk, None);
    every_kind(&ctx);
    let oci = Check::OciConfig {
        entrypoint: None,
        cmd: None,
        env: BTreeMap::new(),
        labels: BTreeMap::new(),
        exposed_ports: vec![],
        user: None,
    };
    assert!(matches!(check(&ctx, &oci), Ok(Outcome::Skip { reason }) if reason.contains("disk image")));
}

#[test]
fn a_checker_that_cannot_read_what_it_needs_is_an_error_not_a_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    put(&root, "etc/os-release", b"ID=debian\n", 0o644, (0, 0));
    let layout = oci_layout(&root, tmp.path());
    let image = OciImage::open(&layout).unwrap();
    let ctx = StaticContext::new(&image, Some(image.config()));
    let c = Check::Package { name: "libc6".into(), state: PackageState::Present { version: None } };
    let err = check(&ctx, &c).unwrap_err();
    assert!(err.message.contains("dpkg database"), "{err}");
    // A bad regular expression in a contract (parsers reject them; this is the checker's guard).
    let bad = Check::OsRelease { field: "ID".into(), value: Match::Regex("(".into()) };
    assert!(check(&ctx, &bad).unwrap_err().message.contains("regular expression"));
    let _ = image.artifact();
}
