//! Booting an image under QEMU for runtime checks: UEFI (OVMF) on a q35 machine, KVM when it works (probed:
//! see [`kvm_usable`]) and TCG otherwise, the serial console captured to a file, and the image itself never written to.
//!
//! The VM boots from a throwaway qcow2 overlay whose backing file is the artifact (`qemu-img create -b`), so
//! the certified artifact keeps its digest. The VM is killed when its [`Vm`] is dropped, so a test that fails
//! or a checker that panics leaves no QEMU behind.
//!
//! The firmware boots the disk's own loader, or (with [`Boot::Kernel`]) a kernel and initrd given to QEMU
//! with a command line of the caller's choosing, still under OVMF (the kernel runs as an EFI stub, as it does
//! from systemd-boot). Extra read-only drives (with a serial number, so the guest finds them under
//! `/dev/disk/by-id/virtio-SERIAL`) and a second serial port written to a file (the guest's `ttyS1`) let a
//! caller hand data in and read answers out without touching the image.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Where Debian's `ovmf` package puts the firmware, newest layout first.
const OVMF_PAIRS: [(&str, &str); 2] = [
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
];

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("no OVMF firmware found (install the `ovmf` package)")]
    NoFirmware,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu-img create of the overlay failed: {0}")]
    Overlay(String),
    #[error(
        "`{pattern}` did not appear on the serial console within {seconds} s; last console lines:\n{tail}"
    )]
    Timeout { pattern: String, seconds: u64, tail: String },
    /// QEMU stopped: with success when the guest powered off or (under `-no-reboot`) rebooted, else QEMU
    /// itself failed.
    #[error("QEMU exited ({status}) before `{pattern}` appeared; last console lines:\n{tail}")]
    Exited { pattern: String, status: String, success: bool, tail: String },
}

/// The format of the image to boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

/// What the firmware starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// The disk's own boot loader (the firmware's boot order, e.g. the ESP's `EFI/BOOT/BOOTX64.EFI`).
    Disk,
    /// This kernel and initrd with this command line (QEMU `-kernel`, `-initrd`, `-append`).
    Kernel { kernel: PathBuf, initrd: Option<PathBuf>, cmdline: String },
}

/// A further drive, attached read-only as a virtio disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    pub path: PathBuf,
    pub format: DiskFormat,
    /// The virtio serial number: the guest sees the disk as `/dev/disk/by-id/virtio-SERIAL` (at most 20
    /// bytes, QEMU's limit for virtio-blk).
    pub serial: Option<String>,
}

/// How to boot.
#[derive(Debug, Clone)]
pub struct VmOptions {
    pub image: PathBuf,
    pub format: DiskFormat,
    /// A folder for the overlay, firmware variables and console log.
    pub work_dir: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub boot: Boot,
    /// Extra read-only drives, e.g. a disk that hands checks in; they come after the image's disk.
    pub extra_drives: Vec<Drive>,
    /// A second serial port (the guest's `ttyS1`) whose output QEMU writes to this file.
    pub second_serial: Option<PathBuf>,
}

impl VmOptions {
    pub fn new(image: impl Into<PathBuf>, format: DiskFormat, work_dir: impl Into<PathBuf>) -> Self {
        Self {
            image: image.into(),
            format,
            work_dir: work_dir.into(),
            memory_mib: 1024,
            cpus: 2,
            boot: Boot::Disk,
            extra_drives: Vec::new(),
            second_serial: None,
        }
    }
}

/// A running VM; killed on drop.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    console: PathBuf,
    started: Instant,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// A QEMU that sets up a vCPU under KVM with kiln's machine and CPU model, and then waits (`-S`).
const KVM_PROBE: [&str; 10] =
    ["-accel", "kvm", "-machine", "q35", "-cpu", "max", "-display", "none", "-nodefaults", "-S"];

/// Whether KVM works for the VMs kiln starts: `/dev/kvm` opens read-write, and QEMU with `-accel kvm` and
/// this machine and CPU model stays up (on some hosts `/dev/kvm` opens but QEMU aborts setting up the vCPU,
/// e.g. "failed to set MSR"). Probed once per process; TCG is used otherwise.
pub fn kvm_usable() -> bool {
    static KVM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KVM.get_or_init(|| {
        if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
            return false;
        }
        let child = Command::new("qemu-system-x86_64")
            .args(KVM_PROBE)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else { return false };
        let deadline = Instant::now() + Duration::from_secs(3);
        let works = loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break false,
                Ok(None) if Instant::now() >= deadline => break true,
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        works
    })
}

impl Vm {
    /// Boot `opts.image` from an overlay.
    pub fn start(opts: &VmOptions) -> Result<Self, VmError> {
        let (code, vars_template) = OVMF_PAIRS
            .iter()
            .find(|(c, v)| Path::new(c).is_file() && Path::new(v).is_file())
            .ok_or(VmError::NoFirmware)?;
        fs_err::create_dir_all(&opts.work_dir).map_err(io("creating the VM's work folder"))?;
        let vars = opts.work_dir.join("OVMF_VARS.fd");
        fs_err::copy(vars_template, &vars).map_err(io("copying the firmware variables"))?;
        let overlay = opts.work_dir.join("overlay.qcow2");
        let _ = std::fs::remove_file(&overlay);
        let image = fs_err::canonicalize(&opts.image).map_err(io("finding the image"))?;
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", opts.format.as_str(), "-b"])
            .arg(&image)
            .arg(&overlay)
            .output()
            .map_err(io("running qemu-img"))?;
        if !out.status.success() {
            return Err(VmError::Overlay(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
        let console = opts.work_dir.join("console.log");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "q35", "-cpu", "max", "-nographic", "-no-reboot", "-display", "none"]);
        cmd.args(["-accel", if kvm_usable() { "kvm" } else { "tcg" }]);
        cmd.arg("-smp").arg(opts.cpus.to_string()).arg("-m").arg(opts.memory_mib.to_string());
        cmd.arg("-drive").arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"));
        cmd.arg("-drive").arg(format!("if=pflash,format=raw,unit=1,file={}", vars.display()));
        if let Boot::Kernel { kernel, initrd, cmdline } = &opts.boot {
            cmd.arg("-kernel").arg(kernel);
            if let Some(initrd) = initrd {
                cmd.arg("-initrd").arg(initrd);
            }
            cmd.arg("-append").arg(cmdline);
        }
        // The image's disk first, so that the guest names it as a plain boot does (`vda`).
        cmd.arg("-drive").arg(format!("if=none,id=disk0,format=qcow2,file={}", qemu_path(&overlay)));
        cmd.args(["-device", "virtio-blk-pci,drive=disk0"]);
        for (i, d) in opts.extra_drives.iter().enumerate() {
            let mut device = format!("virtio-blk-pci,drive=extra{i}");
            if let Some(serial) = &d.serial {
                device.push_str(&format!(",serial={serial}"));
            }
            cmd.arg("-drive").arg(format!(
                "if=none,id=extra{i},format={},readonly=on,file={}",
                d.format.as_str(),
                qemu_path(&d.path)
            ));
            cmd.arg("-device").arg(device);
        }
        cmd.arg("-serial").arg(format!("file:{}", console.display()));
        if let Some(second) = &opts.second_serial {
            cmd.arg("-serial").arg(format!("file:{}", second.display()));
        }
        cmd.args(["-monitor", "none", "-nic", "user,model=virtio-net-pci"]);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let child = cmd.spawn().map_err(io("starting qemu-system-x86_64"))?;
        Ok(Self { child, console, started: Instant::now() })
    }

    /// The serial console so far, with terminal control sequences and carriage returns removed.
    pub fn console(&self) -> String {
        read_serial(&self.console)
    }

    /// Seconds since the VM started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Wait until `pattern` appears on the serial console; the VM's exit or the timeout is an error carrying
    /// the console's last lines.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<Duration, VmError> {
        let console = self.console.clone();
        self.wait_for_in(&console, pattern, timeout)
    }

    /// Wait until `pattern` appears in `file` (e.g. the second serial port's); the VM's exit or the timeout is
    /// an error carrying the console's last lines. QEMU's exit is noticed within a quarter of a second.
    pub fn wait_for_in(
        &mut self,
        file: &Path,
        pattern: &str,
        timeout: Duration,
    ) -> Result<Duration, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            if read_serial(file).contains(pattern) {
                return Ok(self.elapsed());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(VmError::Exited {
                    pattern: pattern.to_owned(),
                    success: status.success(),
                    status: format!(
                        "{status}{}",
                        if err.is_empty() { String::new() } else { format!(": {}", err.trim()) }
                    ),
                    tail: tail(&self.console(), 30),
                });
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    pattern: pattern.to_owned(),
                    seconds: timeout.as_secs(),
                    tail: tail(&self.console(), 30),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A serial port's output so far (empty when there is none yet), cleaned as [`strip_controls`] does.
pub fn read_serial(file: &Path) -> String {
    let raw = std::fs::read(file).unwrap_or_default();
    strip_controls(&String::from_utf8_lossy(&raw))
}

/// A path for a QEMU `-drive` option, whose values end at a comma unless it is doubled.
fn qemu_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The last `n` non-empty lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Remove ANSI escape sequences and carriage returns from console output.
pub fn strip_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    while let Some(&n) = chars.peek() {
                        chars.next();
                        if n.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_text_is_cleaned_of_escape_sequences() {
        assert_eq!(strip_controls("\u{1b}[0;32m  OK  \u{1b}[0m] ok\r\nlogin: "), "  OK  ] ok\nlogin: ");
        assert_eq!(tail("a\n\nb\nc\n", 2), "b\nc");
    }

    #[test]
    fn a_qemu_that_exits_is_noticed_at_once_not_at_the_timeout() {
        if !OVMF_PAIRS.iter().any(|(c, _)| Path::new(c).is_file())
            || Command::new("qemu-img").output().is_err()
        {
            eprintln!("SKIP: needs qemu-system-x86, qemu-utils and ovmf");
            return;
        }
        let dir = std::env::temp_dir().join(format!("kiln-vm-exit-test-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        let (disk, kernel, answers) = (dir.join("disk.raw"), dir.join("not-a-kernel"), dir.join("ttyS1.log"));
        fs_err::write(&disk, vec![0u8; 1 << 20]).unwrap();
        fs_err::write(&kernel, b"not a kernel").unwrap();
        let mut opts = VmOptions::new(&disk, DiskFormat::Raw, &dir);
        opts.boot = Boot::Kernel { kernel, initrd: None, cmdline: "console=ttyS0".into() };
        opts.extra_drives.push(Drive {
            path: disk.clone(),
            format: DiskFormat::Raw,
            serial: Some("extra".into()),
        });
        opts.second_serial = Some(answers.clone());
        let mut vm = Vm::start(&opts).unwrap();
        let err = vm.wait_for_in(&answers, "never", Duration::from_secs(120)).unwrap_err();
        assert!(vm.elapsed() < Duration::from_secs(10), "noticed after {:?}", vm.elapsed());
        assert!(
            matches!(&err, VmError::Exited { success: false, status, .. } if status.contains("kernel")),
            "QEMU's own complaint is kept: {err}"
        );
        drop(vm);
        let _ = fs_err::remove_dir_all(&dir);
    }

    #[test]
    fn kvm_is_only_used_where_qemu_can_run_with_it() {
        // Whatever the host, the probe must agree with QEMU itself: where it says yes, a KVM QEMU stays up.
        if !kvm_usable() {
            eprintln!("KVM not usable here: VMs run under TCG");
            return;
        }
        let mut c = Command::new("qemu-system-x86_64").args(KVM_PROBE).spawn().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        assert!(c.try_wait().unwrap().is_none(), "QEMU with KVM exited although the probe said KVM works");
        let _ = c.kill();
        let _ = c.wait();
    }
}
