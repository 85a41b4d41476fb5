//! Real builds of the example blueprints from the mirror the host's apt sources name, checked with the real
//! tools (dpkg, sfdisk, e2fsck, fsck.vfat, qemu-img, skopeo), rebuilt for reproducibility, and booted under
//! QEMU. They need root (the package stage runs maintainer scripts in a chroot) and the Debian mirror.
//!
//! Builds share one .deb cache (`KILN_TEST_CACHE`, default `~/.cache/kiln`) and run one at a time.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use kiln_testsuites::vm::{DiskFormat, Vm, VmOptions};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

static BUILDS: Mutex<()> = Mutex::new(());

mod common;
use common::{cache, can_build, kiln, root_dir};

fn work(name: &str) -> PathBuf {
    common::work("kiln-build-tests", name)
}

/// A folder of [`work`], without emptying it.
fn work_dir(name: &str) -> PathBuf {
    common::work_dir("kiln-build-tests", name)
}

/// The layer digests of the only image of an OCI layout.
fn oci_layers(layout: &Path) -> Vec<String> {
    let read = |p: PathBuf| -> Value { serde_json::from_slice(&fs_err::read(p).unwrap()).unwrap() };
    let index = read(layout.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().unwrap().replace(':', "/");
    let manifest = read(layout.join("blobs").join(digest));
    manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()).collect()
}

/// `kiln --json build BLUEPRINT --out OUT ...`, asserting success; the report.
fn build(blueprint: &Path, out: &Path, extra: &[&str]) -> Value {
    build_with_cache(&cache(), blueprint, out, extra)
}

/// [`build`] with another cache folder.
fn build_with_cache(cache: &Path, blueprint: &Path, out: &Path, extra: &[&str]) -> Value {
    let _guard = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let mut args = vec!["--json", "build", blueprint.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--cache", cache.to_str().unwrap()]);
    args.extend(extra);
    let o = kiln(&args);
    assert!(
        o.status.success(),
        "kiln build {} failed:\n{}",
        blueprint.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("build report on stdout")
}

fn sha256_file(path: &Path) -> String {
    let mut f = fs_err::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn artifacts(report: &Value) -> Vec<(String, String, String)> {
    report["manifest"]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_owned(),
                a["path"].as_str().unwrap().to_owned(),
                a["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct Built {
    out: PathBuf,
    report: Value,
}

/// `blueprints/debian-minimal`, built once for the tests of this file (with its root tree kept).
fn minimal() -> Option<&'static Built> {
    static MINIMAL: OnceLock<Built> = OnceLock::new();
    if !can_build() {
        return None;
    }
    Some(MINIMAL.get_or_init(|| {
        let out = work("minimal");
        let report = build(&root_dir().join("blueprints/debian-minimal"), &out, &["--keep-tree"]);
        Built { out, report }
    }))
}

#[test]
fn debian_minimal_has_kernel_systemd_sshd_and_a_consistent_dpkg_database() {
    let Some(b) = minimal() else { return };
    let tree = b.out.join("rootfs");
    let boot: Vec<String> = fs_err::read_dir(tree.join("boot"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(boot.iter().any(|n| n.starts_with("vmlinuz-")), "no kernel in /boot: {boot:?}");
    assert!(boot.iter().any(|n| n.starts_with("initrd.img-")), "no initrd in /boot: {boot:?}");
    for path in ["usr/lib/systemd/systemd", "usr/sbin/sshd", "usr/lib/systemd/boot/efi/systemd-bootx64.efi"] {
        assert!(tree.join(path).exists(), "missing /{path}");
    }
    // dpkg's own audit of the database is clean, and every package is fully installed.
    let audit = run(Command::new("dpkg").arg("--root").arg(&tree).arg("--audit"));
    assert_eq!(audit.trim(), "", "dpkg --audit found problems");
    let states = run(Command::new("dpkg-query").arg("--admindir").arg(tree.join("var/lib/dpkg")).args([
        "-W",
        "-f",
        "${db:Status-Abbrev} ${Package}\n",
    ]));
    let not_ii: Vec<&str> = states.lines().filter(|l| !l.starts_with("ii ")).collect();
    assert!(not_ii.is_empty(), "packages not installed: {not_ii:?}");
    let packages: Vec<&str> =
        b.report["packages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(packages.len(), states.lines().count());
    assert!(packages.iter().any(|p| p.starts_with("openssh-server ")));

    // The blueprint's steps are in the tree.
    assert_eq!(fs_err::read_to_string(tree.join("etc/hostname")).unwrap(), "debian-minimal\n");
    assert_eq!(
        fs_err::read_to_string(tree.join("etc/motd")).unwrap(),
        "This is a kiln core image, maintained by core-build.\n"
    );
    let ssh = fs_err::read_link(tree.join("etc/systemd/system/multi-user.target.wants/ssh.service")).unwrap();
    assert!(ssh.ends_with("ssh.service"), "{ssh:?}");
    assert!(tree.join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service").exists());
    assert_eq!(
        fs_err::read_link(tree.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Etc/UTC")
    );
    // Build-time noise is gone: machine-id empty, no host keys baked in.
    assert_eq!(fs_err::metadata(tree.join("etc/machine-id")).unwrap().len(), 0);
    assert!(!tree.join("etc/ssh/ssh_host_ed25519_key").exists(), "host keys must be made at first boot");
}

#[test]
fn debian_minimal_artifacts_pass_the_real_tools() {
    let Some(b) = minimal() else { return };
    let arts = artifacts(&b.report);
    let kinds: Vec<&str> = arts.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["raw", "qcow2", "oci", "sbom", "materials", "materials"],
        "materials: the blueprint and materials.json"
    );
    for (kind, path, sha) in &arts {
        // An OCI layout is recorded by its image manifest blob, the one index.json lists.
        let file = if kind == "oci" {
            b.out.join(path).join("blobs/sha256").join(sha.strip_prefix("sha256:").unwrap())
        } else {
            b.out.join(path)
        };
        assert_eq!(&sha256_file(&file), sha, "{kind} digest in manifest.json");
    }
    // The blueprint as built is kept beside the materials, byte for byte.
    assert_eq!(
        fs_err::read(b.out.join("build/blueprint/blueprint.toml")).unwrap(),
        fs_err::read(root_dir().join("blueprints/debian-minimal/blueprint.toml")).unwrap()
    );
    // The SBOM lists every installed package with the digest of the .deb the build resolved for it.
    let read = |p: &str| -> Value { serde_json::from_slice(&fs_err::read(b.out.join(p)).unwrap()).unwrap() };
    let (sbom, materials) = (read("sbom.spdx.json"), read("build/materials.json"));
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let debs = sbom["packages"].as_array().unwrap().iter().filter(|p| p["SPDXID"] != "SPDXRef-Image");
    let listed: Vec<String> =
        debs.clone().map(|p| format!("{} {}", p["name"], p["versionInfo"]).replace('"', "")).collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(
        listed_sorted,
        b.report["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    );
    let resolved: std::collections::BTreeMap<String, String> = materials["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["sha256"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(resolved.len(), listed.len(), "a debian base installs exactly what it resolved");
    for p in debs {
        assert_eq!(
            p["checksums"][0]["checksumValue"],
            resolved[p["name"].as_str().unwrap()],
            "{}",
            p["name"]
        );
    }
    let on_disk: Value = serde_json::from_slice(&fs_err::read(b.out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(on_disk, b.report["manifest"]);

    let raw = b.out.join("disk.raw");
    let table: Value = serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(&raw))).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "ESP type GUID");
    assert_eq!(parts[1]["type"], "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "x86-64 root type GUID");
    let scratch = work("minimal-parts");
    fs_err::create_dir_all(&scratch).unwrap();
    for (i, checker) in [(0usize, "fsck.vfat"), (1, "e2fsck")] {
        let start = parts[i]["start"].as_u64().unwrap();
        let size = parts[i]["size"].as_u64().unwrap();
        let img = scratch.join(format!("part{i}.img"));
        run(Command::new("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", img.display()))
            .args(["bs=4M", "conv=sparse", "status=none", "iflag=count_bytes,skip_bytes"])
            .arg(format!("skip={}", start * 512))
            .arg(format!("count={}", size * 512)));
        let args: &[&str] = if checker == "e2fsck" { &["-fn"] } else { &["-n"] };
        run(Command::new(checker).args(args).arg(&img));
    }
    let _ = Command::new("rm").arg("-rf").arg(&scratch).status();

    let qcow2 = b.out.join("disk.qcow2");
    run(Command::new("qemu-img").args(["check", "-q"]).arg(&qcow2));
    let same =
        run(Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "qcow2"]).arg(&raw).arg(&qcow2));
    assert!(same.contains("identical"), "{same}");

    let inspect: Value = serde_json::from_str(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:1.0.0", b.out.join("oci").display()))))
    .unwrap();
    assert_eq!(inspect["Labels"]["org.opencontainers.image.title"], "debian-minimal");
    // manifest.json's OCI digest is the image digest as skopeo (and a registry) reports it, and the image
    // manifest index.json lists.
    let (_, _, oci_digest) = arts.iter().find(|(k, _, _)| k == "oci").unwrap();
    assert_eq!(inspect["Digest"].as_str(), Some(oci_digest.as_str()), "{inspect}");
    let index: Value = serde_json::from_slice(&fs_err::read(b.out.join("oci/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"].as_str(), Some(oci_digest.as_str()));
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(ann["org.opencontainers.image.ref.name"], "1.0.0");
    assert_eq!(ann["org.opencontainers.image.version"], "1.0.0");
    let head = run(Command::new("git").arg("-C").arg(root_dir()).args(["rev-parse", "HEAD"]));
    assert_eq!(ann["org.opencontainers.image.revision"], head.trim(), "revision is the blueprint's commit");
    assert!(ann["org.opencontainers.image.source"].as_str().is_some_and(|s| !s.is_empty()), "{ann}");
    assert!(ann["org.opencontainers.image.created"].as_str().is_some_and(|c| c.ends_with('Z')), "{ann}");
}

#[test]
fn debian_minimal_boots_to_a_login_prompt_from_raw_and_from_qcow2() {
    let Some(b) = minimal() else { return };
    for (file, format) in [("disk.raw", DiskFormat::Raw), ("disk.qcow2", DiskFormat::Qcow2)] {
        let image = b.out.join(file);
        let before = sha256_file(&image);
        let vm_dir = work(&format!("vm-{file}"));
        let mut vm = Vm::start(&VmOptions::new(&image, format, &vm_dir)).unwrap();
        // TCG here reaches a login prompt in about a minute; allow for a loaded machine.
        let took = vm
            .wait_for("debian-minimal login:", Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let console = vm.console();
        drop(vm);
        eprintln!("{file}: login prompt after {:.0} s", took.as_secs_f64());
        assert!(console.contains("Linux version"), "the kernel printed nothing");
        assert_eq!(sha256_file(&image), before, "booting must not change the artifact");
    }
}

#[test]
fn rebuilding_debian_minimal_gives_identical_artifacts() {
    let Some(first) = minimal() else { return };
    let out = work("minimal-again");
    let again = build(&root_dir().join("blueprints/debian-minimal"), &out, &[]);
    assert_eq!(again["package_stage_cached"], true, "the package stage should come from the cache");
    assert_eq!(again["tree_digest"], first.report["tree_digest"]);
    assert_eq!(artifacts(&again), artifacts(&first.report));
    let _ = Command::new("rm").arg("-rf").arg(&out).status();
}

fn copy_dir(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-r").arg(from).arg(to));
}

#[test]
fn debian_base_oci_is_reproducible_cached_or_not_and_a_changed_file_reuses_the_package_stage() {
    if !can_build() {
        return;
    }
    let bp = root_dir().join("blueprints/debian-base-oci");
    let epoch = ["--source-date-epoch", "1700000000"];
    let (a, b) = (work("base-a"), work("base-b"));
    let ra = build(&bp, &a, &["--no-cache", epoch[0], epoch[1]]);
    let rb = build(&bp, &b, &["--no-cache", epoch[0], epoch[1]]);
    assert_eq!(ra["tree_digest"], rb["tree_digest"], "two uncached builds differ");
    assert_eq!(artifacts(&ra), artifacts(&rb));
    assert_eq!(ra["package_stage_cached"], false);

    // Through the stage cache (filled by the first build, reused by the second) the image is the same.
    let _ = build(&bp, &work("base-warm"), &epoch);
    let rw = build(&bp, &work("base-warm"), &epoch);
    assert_eq!(rw["package_stage_cached"], true);
    assert_eq!(rw["tree_digest"], ra["tree_digest"], "a cached package stage changes the image");
    assert_eq!(artifacts(&rw), artifacts(&ra));
    // Under another SOURCE_DATE_EPOCH the cache (which holds stages of other epochs) gives the image an
    // uncached build gives: maintainer scripts write the date into the tree, so a stage is per epoch.
    let other_epoch = ["--source-date-epoch", "1600000000"];
    let other = build(&bp, &work("base-other-epoch"), &other_epoch);
    let other_fresh = build(&bp, &work("base-other-epoch"), &["--no-cache", other_epoch[0], other_epoch[1]]);
    assert_eq!(other["tree_digest"], other_fresh["tree_digest"], "a stage of another epoch was reused");
    assert_eq!(artifacts(&other), artifacts(&other_fresh));

    // The same blueprint with one more file: the package stage is reused, the image differs.
    let dir = work("base-changed");
    copy_dir(&bp, &dir);
    let text = fs_err::read_to_string(dir.join("blueprint.toml")).unwrap();
    fs_err::write(
        dir.join("blueprint.toml"),
        format!("{text}\n[[files]]\npath = \"/etc/kiln-test\"\ncontent = \"changed\\n\"\n"),
    )
    .unwrap();
    let out = work("base-changed-out");
    let rc = build(&dir, &out, &epoch);
    assert_eq!(rc["package_stage_cached"], true);
    assert_ne!(rc["tree_digest"], ra["tree_digest"]);
    for d in [a, b, out, work("base-warm"), work("base-other-epoch")] {
        let _ = Command::new("rm").arg("-rf").arg(d).status();
    }
}

/// The user the test set-up (`scripts/test`) makes for unprivileged builds, with subordinate ids.
const UNPRIVILEGED_USER: &str = "kiln-unprivileged";

#[test]
fn an_unprivileged_build_makes_the_same_image_as_root() {
    if !can_build() {
        return;
    }
    let known = Command::new("getent").args(["passwd", UNPRIVILEGED_USER]).output().unwrap();
    assert!(
        known.status.success(),
        "user {UNPRIVILEGED_USER} is missing: scripts/test makes it (with subordinate ids in /etc/subuid)"
    );
    let bp = root_dir().join("blueprints/debian-base-oci");
    let epoch = ["--source-date-epoch", "1700000000"];
    let root = build(&bp, &work("unpriv-root"), &["--no-cache", epoch[0], epoch[1]]);
    assert_eq!(root["package_stage_cached"], false);

    // The user's own folder (outside root's home, which it cannot enter): kiln's binary, the blueprint, the
    // cache and the output.
    let home = std::env::temp_dir().join(format!("kiln-unprivileged-build-{}", std::process::id()));
    let _ = Command::new("rm").arg("-rf").arg(&home).status();
    fs_err::create_dir_all(&home).unwrap();
    fs_err::copy(env!("CARGO_BIN_EXE_kiln"), home.join("kiln")).unwrap();
    copy_dir(&bp, &home.join("bp"));
    run(Command::new("chown").args(["-R", &format!("{UNPRIVILEGED_USER}:")]).arg(&home));
    let o = {
        let _guard = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        Command::new("runuser")
            .args(["-u", UNPRIVILEGED_USER, "--", "env"])
            .arg(format!("HOME={}", home.display()))
            .arg(home.join("kiln"))
            .args(["--json", "build", "bp", "--out", "out", "--cache", "cache", epoch[0], epoch[1]])
            .current_dir(&home)
            .output()
            .unwrap()
    };
    assert!(o.status.success(), "unprivileged build failed:\n{}", String::from_utf8_lossy(&o.stderr));
    let unprivileged: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(unprivileged["tree_digest"], root["tree_digest"], "the unprivileged tree differs");
    // The same layers (the manifests differ: the root build ran in the repository, so its annotations name
    // the git revision).
    assert_eq!(oci_layers(&home.join("out/oci")), oci_layers(&work_dir("unpriv-root").join("oci")));
    // What it wrote belongs to the user (the stage cache holds files of the image's users: subordinate ids).
    let meta = fs_err::metadata(home.join("out/manifest.json")).unwrap();
    let uid = String::from_utf8(Command::new("id").args(["-u", UNPRIVILEGED_USER]).output().unwrap().stdout);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta).to_string(), uid.unwrap().trim());
    let _ = Command::new("rm").arg("-rf").arg(&home).arg(work_dir("unpriv-root")).status();
}

#[test]
fn a_failing_build_leaves_no_output_and_exits_1() {
    if !can_build() {
        return;
    }
    let dir = work("failing");
    copy_dir(&root_dir().join("blueprints/debian-base-oci"), &dir);
    let text = fs_err::read_to_string(dir.join("blueprint.toml")).unwrap();
    fs_err::write(
        dir.join("blueprint.toml"),
        format!("{text}\n[[run]]\ncommand = \"echo about to fail; exit 3\"\n"),
    )
    .unwrap();
    let out = work("failing-out");
    let cache = cache();
    let o = {
        let _guard = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        kiln(&[
            "build",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
            "--source-date-epoch",
            "0",
        ])
    };
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("exit 3") || err.contains("code 3"), "{err}");
    assert!(!out.exists(), "a failed build must leave no output");
    let leftovers: Vec<String> = fs_err::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".failing-out."))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

#[test]
fn a_derived_image_builds_from_an_oci_layout_with_one_new_layer_and_its_parent_recorded() {
    if !can_build() {
        return;
    }
    let base_out = work("derived-base");
    let base = build(&root_dir().join("blueprints/debian-base-oci"), &base_out, &[]);
    let dir = work("derived");
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::write(
        dir.join("blueprint.toml"),
        format!(
            "name = \"derived\"\nversion = \"0.1.0\"\noutputs = [\"oci\"]\n\n[base]\nfrom = \"oci-layout:{}:1.0.0\"\n\n\
             [packages]\ninclude = [\"hello\"]\n\n[[files]]\npath = \"/etc/derived\"\ncontent = \"from a parent\\n\"\n\n\
             [[run]]\ncommand = \"rm /etc/issue.net && hello > /etc/greeting\"\n\n\
             [[groups]]\nname = \"web\"\ngid = 2000\n\n\
             [[users]]\nname = \"deploy\"\nuid = 2001\ngroups = [\"web\"]\nshell = \"/bin/bash\"\n\
             ssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKilnTestKeyOnlyForTests deploy@kiln\"]\n\n\
             [[directories]]\npath = \"/srv/www\"\nmode = \"0750\"\nowner = \"deploy\"\ngroup = \"web\"\n",
            base_out.join("oci").display()
        ),
    )
    .unwrap();
    let out = work("derived-out");
    let report = build(&dir, &out, &["--keep-tree", "--source-date-epoch", "1700000000"]);

    // The parent is recorded with its manifest digest.
    let parent_index: Value =
        serde_json::from_slice(&fs_err::read(base_out.join("oci/index.json")).unwrap()).unwrap();
    let parent_digest = parent_index["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(report["manifest"]["parent"]["digest"], parent_digest);
    assert_eq!(report["manifest"]["parent"]["name"], "debian-base-oci");
    let _ = base;

    // The tree has the parent's files, the new package (installed by the image's dpkg), the steps' changes.
    let tree = out.join("rootfs");
    assert!(tree.join("usr/bin/hello").is_file());
    assert_eq!(fs_err::read_to_string(tree.join("etc/greeting")).unwrap(), "Hello, world!\n");
    assert!(!tree.join("etc/issue.net").exists());
    let status = run(Command::new("dpkg-query").arg("--admindir").arg(tree.join("var/lib/dpkg")).args([
        "-W",
        "-f",
        "${db:Status-Abbrev}",
        "hello",
    ]));
    assert_eq!(status.trim(), "ii");

    // Accounts made by the image's own shadow tools, and what belongs to them.
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let passwd = fs_err::read_to_string(tree.join("etc/passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("deploy:x:2001:") && l.ends_with(":/home/deploy:/bin/bash")),
        "{passwd}"
    );
    let group = fs_err::read_to_string(tree.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l == "web:x:2000:deploy"), "{group}");
    let shadow = fs_err::read_to_string(tree.join("etc/shadow")).unwrap();
    let entry = shadow.lines().find(|l| l.starts_with("deploy:")).unwrap();
    assert!(entry.starts_with("deploy:!"), "the account is locked: {entry}");
    assert_eq!(
        entry.split(':').nth(2),
        Some((1_700_000_000 / 86_400).to_string().as_str()),
        "last change from SOURCE_DATE_EPOCH"
    );
    let keys = fs_err::metadata(tree.join("home/deploy/.ssh/authorized_keys")).unwrap();
    assert_eq!((keys.uid(), keys.permissions().mode() & 0o777), (2001, 0o600));
    let www = fs_err::metadata(tree.join("srv/www")).unwrap();
    assert_eq!((www.uid(), www.gid(), www.permissions().mode() & 0o7777), (2001, 2000, 0o750));

    // The image is the parent's layers plus one, whose whiteout removes /etc/issue.net for real tools.
    let image = format!("oci:{}:0.1.0", out.join("oci").display());
    let inspect: Value =
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &image]))).unwrap();
    let layers = inspect["Layers"].as_array().unwrap();
    let parent_inspect: Value = serde_json::from_str(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:1.0.0", base_out.join("oci").display()))))
    .unwrap();
    let parent_layers = parent_inspect["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), parent_layers.len() + 1);
    assert_eq!(&layers[..parent_layers.len()], &parent_layers[..]);
    let index: Value = serde_json::from_slice(&fs_err::read(out.join("oci/index.json")).unwrap()).unwrap();
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(ann["org.opencontainers.image.base.digest"], parent_digest, "{ann}");
    assert!(
        ann["org.opencontainers.image.base.name"].as_str().is_some_and(|n| n.starts_with("oci-layout:")),
        "{ann}"
    );
    // umoci cannot read zstd layers (the base's): skopeo, which reads them, copies the image as gzip first.
    let bundle = work("derived-bundle");
    let gzip_layout = work("derived-gzip");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-compress-format", "gzip", &image])
        .arg(format!("oci:{}:0.1.0", gzip_layout.display())));
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:0.1.0", gzip_layout.display()))
        .arg(&bundle));
    assert!(bundle.join("rootfs/etc/derived").is_file());
    assert!(bundle.join("rootfs/usr/bin/hello").is_file());
    assert!(!bundle.join("rootfs/etc/issue.net").exists(), "the whiteout must hide the parent's file");
    for d in [base_out, out, bundle, gzip_layout] {
        let _ = Command::new("rm").arg("-rf").arg(d).status();
    }
}

#[test]
fn unchanged_steps_are_replayed_from_the_step_cache_and_a_changed_run_reruns_only_itself() {
    if !can_build() {
        return;
    }
    // A cache of its own for the step results (so that no earlier run of this test stored them), sharing
    // the .debs and package stages of the common cache.
    let step_cache = work("steps-cache");
    fs_err::create_dir_all(&step_cache).unwrap();
    for shared in ["debs", "stages"] {
        fs_err::create_dir_all(cache().join(shared)).unwrap();
        std::os::unix::fs::symlink(cache().join(shared), step_cache.join(shared)).unwrap();
    }
    let dir = work("steps");
    copy_dir(&root_dir().join("blueprints/debian-base-oci"), &dir);
    let text = fs_err::read_to_string(dir.join("blueprint.toml")).unwrap();
    // Each RUN writes the time it ran, to the nanosecond: a step that runs again writes another value.
    let with_steps = |second: &str| {
        format!(
            "{text}\n[[run]]\ncommand = \"date +%s.%N > /etc/first-run\"\n\n\
             [[files]]\npath = \"/etc/kiln-step-cache\"\ncontent = \"between the runs\\n\"\n\n\
             [[run]]\ncommand = \"{second}\"\n"
        )
    };
    fs_err::write(dir.join("blueprint.toml"), with_steps("date +%s.%N > /etc/second-run")).unwrap();
    // The plan positions of the blueprint's own steps (after base and packages).
    let plan: Value =
        serde_json::from_slice(&kiln(&["--json", "plan", dir.to_str().unwrap()]).stdout).unwrap();
    let own: Vec<(usize, String)> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, s)| s["kind"] != "base" && s["kind"] != "packages")
        .map(|(i, s)| (i + 1, s["kind"].as_str().unwrap().to_owned()))
        .collect();
    let kinds: Vec<&str> = own.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(kinds, ["files", "run", "run"], "{plan}");
    let positions: Vec<Value> = own.iter().map(|(i, _)| Value::from(*i)).collect();

    let build_here = |out: &Path, extra: &[&str]| {
        let mut args = vec!["--source-date-epoch", "1700000000", "--keep-tree"];
        args.extend(extra);
        build_with_cache(&step_cache, &dir, out, &args)
    };
    let read = |out: &Path, file: &str| fs_err::read_to_string(out.join("rootfs/etc").join(file)).unwrap();
    let stored = || fs_err::read_dir(step_cache.join("steps")).map(Iterator::count).unwrap_or(0);

    let (first, second, changed) = (work("steps-first"), work("steps-second"), work("steps-changed"));
    let r1 = build_here(&first, &[]);
    assert_eq!(r1["cached_steps"], Value::Array(vec![]), "nothing was cached yet");
    assert_eq!(stored(), 3, "one entry per step");

    // The same blueprint again: every step is replayed, and the image is the same.
    let r2 = build_here(&second, &[]);
    assert_eq!(r2["cached_steps"], Value::Array(positions.clone()));
    assert_eq!(r2["tree_digest"], r1["tree_digest"], "the replayed tree differs from the one the steps made");
    assert_eq!(artifacts(&r2), artifacts(&r1));
    assert_eq!(read(&second, "first-run"), read(&first, "first-run"));
    assert_eq!(read(&second, "second-run"), read(&first, "second-run"));

    // The second RUN changed: the steps before it are replayed, it runs again.
    let rerun = "date +%s.%N > /etc/second-run; echo changed >> /etc/second-run";
    fs_err::write(dir.join("blueprint.toml"), with_steps(rerun)).unwrap();
    let r3 = build_here(&changed, &[]);
    assert_eq!(r3["cached_steps"], Value::Array(positions[..2].to_vec()));
    assert_eq!(read(&changed, "first-run"), read(&first, "first-run"), "the first RUN ran again");
    assert_eq!(read(&changed, "kiln-step-cache"), "between the runs\n");
    let second_run = read(&changed, "second-run");
    assert!(second_run.ends_with("\nchanged\n"), "{second_run}");
    assert_ne!(
        second_run.lines().next(),
        read(&first, "second-run").lines().next(),
        "the second RUN did not run"
    );
    assert_ne!(r3["tree_digest"], r1["tree_digest"]);
    assert_eq!(stored(), 4);

    // --no-cache neither replays nor stores step results.
    fs_err::write(dir.join("blueprint.toml"), with_steps("echo uncached > /etc/second-run")).unwrap();
    let uncached = work("steps-uncached");
    let r4 = build_here(&uncached, &["--no-cache"]);
    assert_eq!(r4["cached_steps"], Value::Array(vec![]));
    assert_ne!(read(&uncached, "first-run"), read(&first, "first-run"), "--no-cache replayed a step");
    assert_eq!(stored(), 4, "--no-cache stored a step");
    for d in [first, second, changed, uncached, dir, step_cache] {
        let _ = Command::new("rm").arg("-rf").arg(d).status();
    }
}
