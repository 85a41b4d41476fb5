//! Booting straight from a served catalog. debian-minimal is built (with the shared cache), certified, signed,
//! published to `kiln catalog serve` and made stable; then, one boot each:
//! - QEMU boots its qcow2 over HTTP with the curl block driver (`-drive file.driver=http,…,snapshot=on`,
//!   which reads the image with HEAD and byte ranges) under OVMF, to the login prompt on the serial console;
//! - QEMU's iPXE ROM gets `boot/debian-minimal/stable.ipxe` from the catalog as its DHCP boot file (user
//!   networking reaches the host's loopback at 10.0.2.2), fetches the kernel and initrd the script names and
//!   starts the kernel: `Linux version` on the serial console, and the VM is stopped there.
//!
//! They need root (building) and the Debian mirror like tests/build.rs, and qemu-system-x86, qemu-block-extra,
//! ipxe-qemu and ovmf (scripts/lib.sh installs them).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use kiln_testsuites::vm::{kvm_usable, read_serial, tail};
use serde_json::Value;

mod common;
use common::{can_build, kiln_ok, root_dir, s, serve, Served};

const PASSWORD: &str = "boot-test";
const FAMILY: &str = "debian-minimal";
/// Where Debian's `ovmf` puts the firmware (code, variables), newest layout first.
const OVMF: [(&str, &str); 2] = [
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
];
/// Debian `ipxe-qemu`'s ROM for virtio-net (legacy BIOS and EFI images), which QEMU loads into the NIC by
/// default (naming it with `romfile=` keeps this QEMU's SeaBIOS from running it).
const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

fn kiln(args: &[&str]) -> Output {
    kiln_ok(PASSWORD, args)
}

/// A served catalog holding debian-minimal, stable; stopped when dropped.
struct Published {
    catalog: Served,
    version: String,
    work: PathBuf,
}

/// Build, certify, sign and publish debian-minimal, and serve it.
fn publish() -> Published {
    let w = common::work("kiln-boot-tests", "catalog");
    fs_err::create_dir_all(&w).unwrap();
    let (out, cache) = (w.join("out"), common::cache());
    let blueprint = root_dir().join("blueprints").join(FAMILY);
    kiln(&["-q", "build", s(&blueprint), "--out", s(&out), "--cache", s(&cache)]);
    kiln(&["-q", "test", s(&out)]);
    kiln(&["keygen", "--out", s(&w.join("release"))]);
    kiln(&["-q", "sign", s(&out), "--key", s(&w.join("release.key"))]);

    let catalog = serve(&w.join("data"), &w.join("release.pub"));
    let (url, token) = (catalog.url.clone(), catalog.token.clone());
    let o = kiln(&["--json", "publish", s(&out), "--catalog", &url, "--token", &token]);
    let published: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(published["created"], true, "{published}");
    let version = published["version"]["version"].as_str().unwrap().to_owned();
    kiln(&["promote", FAMILY, &version, "--channel", "stable", "--catalog", &url, "--token", &token]);
    Published { catalog, version, work: w }
}

/// QEMU with a serial console in a file; killed when dropped.
struct Qemu {
    child: Child,
    console: PathBuf,
}

impl Qemu {
    fn start(dir: &Path, args: &[String]) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        fs_err::create_dir_all(dir).unwrap();
        let console = dir.join("console.log");
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", if kvm_usable() { "kvm" } else { "tcg" }])
            .args([
                "-m",
                "1024",
                "-smp",
                "2",
                "-nographic",
                "-no-reboot",
                "-display",
                "none",
                "-monitor",
                "none",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu-system-x86_64");
        Self { child, console }
    }

    /// Wait for `pattern` on the console; panics with the console's tail (and QEMU's complaint when it
    /// exited) otherwise.
    fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let console = read_serial(&self.console);
            if console.contains(pattern) {
                return start.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("QEMU exited ({status}) before `{pattern}`: {err}\n{}", tail(&console, 40));
            }
            assert!(start.elapsed() < timeout, "no `{pattern}` within {timeout:?}:\n{}", tail(&console, 40));
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a boot may take: under TCG everything is several times slower.
fn boot_timeout() -> Duration {
    Duration::from_secs(if kvm_usable() { 180 } else { 600 })
}

fn tools_present(what: &str, files: &[&str]) -> bool {
    let missing: Vec<&&str> = files.iter().filter(|f| !Path::new(f).is_file()).collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!("SKIP {what}: missing {missing:?} (scripts/lib.sh installs them)");
    false
}

#[test]
fn qemu_boots_from_the_catalog_over_http_and_with_ipxe() {
    if !can_build() {
        return;
    }
    let Some((code, vars)) = OVMF.iter().find(|(c, v)| Path::new(c).is_file() && Path::new(v).is_file())
    else {
        assert!(tools_present("booting from the catalog", &[OVMF[0].0]));
        return;
    };
    if !tools_present("booting from the catalog", &[IPXE_ROM]) {
        return;
    }
    let p = publish();
    boot_the_qcow2_over_http(&p, code, vars);
    boot_with_ipxe(&p);
}

/// The disk, read over HTTP by QEMU's curl block driver, booted by OVMF to the login prompt.
fn boot_the_qcow2_over_http(p: &Published, code: &str, vars: &str) {
    // The curl driver is a module of qemu-block-extra: an unknown driver without it.
    let url = format!("{}/download/{FAMILY}/stable/disk.qcow2", p.catalog.url);
    let probe = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(format!("json:{{\"file.driver\":\"http\",\"file.url\":\"{url}\"}}"))
        .output()
        .unwrap();
    assert!(probe.status.success(), "qemu-img over HTTP: {}", String::from_utf8_lossy(&probe.stderr));
    let info: Value = serde_json::from_slice(&probe.stdout).unwrap();
    assert_eq!(info["format"], "qcow2", "{info}");

    let dir = p.work.join("vm-http");
    let _ = std::fs::remove_dir_all(&dir);
    fs_err::create_dir_all(&dir).unwrap();
    let vars_copy = dir.join("OVMF_VARS.fd");
    fs_err::copy(vars, &vars_copy).unwrap();
    let url = format!("{}/download/{FAMILY}/{}/disk.qcow2", p.catalog.url, p.version);
    let mut vm = Qemu::start(
        &dir.join("run"),
        &[
            "-machine".into(),
            "q35".into(),
            "-cpu".into(),
            "max".into(),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", vars_copy.display()),
            "-drive".into(),
            format!("file.driver=http,file.url={url},format=qcow2,if=virtio,snapshot=on"),
            "-nic".into(),
            "none".into(),
        ],
    );
    let took = vm.wait_for(&format!("{FAMILY} login:"), boot_timeout());
    eprintln!("HTTP disk: login prompt after {took:?} ({})", if kvm_usable() { "KVM" } else { "TCG" });
}

/// iPXE's ROM, given the catalog's script as its boot file, starts the kernel the script names.
fn boot_with_ipxe(p: &Published) {
    // The script as the VM gets it, through the host's address in user networking.
    let base = format!("http://10.0.2.2:{}", p.catalog.port);
    let mut vm = Qemu::start(
        &p.work.join("vm-ipxe"),
        &[
            "-boot".into(),
            "n".into(),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
            "-netdev".into(),
            format!("user,id=n0,bootfile={base}/boot/{FAMILY}/stable.ipxe"),
        ],
    );
    let took = vm.wait_for("Linux version", boot_timeout());
    eprintln!("iPXE: kernel started after {took:?}");
    let console = read_serial(&vm.console);
    drop(vm);
    // iPXE (which writes to the serial console too) ran the script and fetched the version's kernel and
    // initrd it names, from the catalog.
    for url in [
        format!("{base}/boot/{FAMILY}/stable.ipxe... ok"),
        format!("{base}/boot/{FAMILY}/{}/vmlinuz... ok", p.version),
        format!("{base}/boot/{FAMILY}/{}/initrd.img...", p.version),
    ] {
        assert!(console.contains(&url), "`{url}` not on the console:\n{}", tail(&console, 60));
    }
}
