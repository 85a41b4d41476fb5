//! Runtime checks: a contract's runtime requirements (a target reached in time, a unit active, a port
//! listening, a command's exit code and output, the kernel command line, no failed units) observed in the
//! image booted under QEMU, each reported as Pass, Skip or Fail with evidence.
//!
//! How the image stays exactly the certified one:
//!
//! - the VM writes to a throwaway qcow2 overlay whose backing file is the artifact ([`crate::vm`]);
//! - the checks come in on a second, read-only virtio disk that holds nothing but the generated script
//!   ([`script::check_script`]), found by its serial number;
//! - systemd runs the script through its `systemd.run=` kernel parameter (systemd-run-generator, in systemd
//!   since 240), so nothing is installed in the image (it has no agent and gets none). To put that parameter on
//!   the command line, the kernel and initrd of the image's default boot entry are read from its ESP
//!   (read-only, [`boot_entry`]) and given to QEMU (`-kernel`, `-initrd`, `-append`) with the entry's own
//!   `options` followed by the parameter, still under the same OVMF firmware. Booting the artifact through its
//!   own loader (systemd-boot) is covered by the disk writer's boot tests; here the loader is the one thing
//!   left out. The kernel-cmdline check judges the entry's options, not what was appended;
//! - systemd-run-generator makes its unit's target the default one, so the script first starts the image's
//!   own default target (read from its unit files); units of that target start once `basic.target` is up,
//!   where most of them start anyway (those ordered before it, e.g. `systemd-networkd`, start a little later
//!   than in a plain boot).
//!
//! The script waits for the boot's jobs to finish (bounded), collects observations and writes them to the
//! second serial port; the host judges them ([`evaluate`]). When the script ends, systemd powers the guest
//! off (the generator's `SuccessAction=exit`); the host has its answers by then. A VM that never gets as far as the script is
//! killed at the timeout, and every check fails with "the image did not boot within N s" and the console's
//! last lines; QEMU exiting early (a guest that powers off or reboots, with `-no-reboot`) is noticed at once.
//! A checker that breaks (QEMU cannot start, an observation is missing) is an error, not a Fail.

pub mod boot_entry;
pub mod evaluate;
pub mod script;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use kiln_blueprint::manifest::ArtifactKind;
use kiln_contract::{Check, Stage};
use serde::Serialize;

use crate::{
    outcome::{CheckError, CheckResult, Outcome},
    vm::{self, Boot, DiskFormat, Drive, Vm, VmError, VmOptions},
};

/// How to run the runtime checks.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where the per-run temporary folder (overlay, kernel, initrd, script disk, serial logs) is made; it is
    /// removed afterwards unless `keep_work_dir`.
    pub scratch_dir: PathBuf,
    pub keep_work_dir: bool,
    /// The whole VM run, boot and checks; then the VM is killed and unanswered checks fail.
    pub timeout: Duration,
    /// How long after the kernel started the guest waits for the boot's jobs before checking anyway (capped
    /// at three quarters of `timeout`).
    pub settle: Duration,
    /// A `command` check is stopped after this long.
    pub command_timeout: Duration,
    pub memory_mib: u32,
    pub cpus: u32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            scratch_dir: std::env::temp_dir(),
            keep_work_dir: false,
            timeout: Duration::from_secs(420),
            settle: Duration::from_secs(240),
            command_timeout: Duration::from_secs(60),
            memory_mib: 1024,
            cpus: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("requirement `{id}`: `{kind}` is a static check, not a runtime one")]
    NotRuntime { id: String, kind: &'static str },
    #[error("a {0:?} artifact is not an image: runtime checks boot raw or qcow2 disks")]
    NotAnImage(ArtifactKind),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("reading the image's boot entry")]
    BootEntry(#[from] boot_entry::BootEntryError),
    #[error("running the VM")]
    Vm(#[from] VmError),
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeReport {
    /// One per check, in the order given.
    pub results: Vec<CheckResult>,
    /// `kvm` or `tcg`.
    pub accelerator: &'static str,
    /// Whether the guest got as far as running the checks.
    pub booted: bool,
    /// Seconds from the kernel's start until the boot's jobs were done (or the wait ran out).
    pub settled_secs: Option<f64>,
    /// Jobs still pending when the wait ran out (empty when the boot finished).
    pub pending_jobs: String,
    /// The image's default target, as its unit files name it.
    pub default_target: Option<String>,
    /// The boot entry and the command line the VM booted with.
    pub boot_entry: Option<String>,
    pub kernel_cmdline: Option<String>,
    /// Seconds the VM ran.
    pub vm_secs: f64,
    /// The whole serial console.
    pub console: String,
}

impl RuntimeReport {
    pub fn result(&self, id: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.id == id)
    }
}

/// Why a VM stopped before the script said it was done.
#[derive(Debug, Clone)]
enum Stopped {
    /// Killed at the timeout (seconds).
    Killed(u64),
    /// The guest powered off or rebooted (QEMU exited on its own, successfully).
    Exited { after_secs: u64, status: String },
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Killed(secs) => write!(f, "the VM was killed at the timeout ({secs} s)"),
            Self::Exited { after_secs, status } => {
                write!(f, "the VM powered off or rebooted {after_secs} s after it started (QEMU {status})")
            }
        }
    }
}

/// Boot `image` (an artifact of kind `format`) and run `checks` (requirement id, runtime check) in it.
/// An OCI image has no kernel to boot: its runtime checks are skipped.
pub fn run_runtime_checks(
    image: &Path,
    format: ArtifactKind,
    checks: &[(&str, &Check)],
    opts: &RuntimeOptions,
) -> Result<RuntimeReport, RuntimeError> {
    for (id, check) in checks {
        if check.stage() != Stage::Runtime {
            return Err(RuntimeError::NotRuntime { id: (*id).to_owned(), kind: check.kind() });
        }
    }
    let accelerator = if vm::kvm_usable() { "kvm" } else { "tcg" };
    let mut report = RuntimeReport {
        results: Vec::new(),
        accelerator,
        booted: false,
        settled_secs: None,
        pending_jobs: String::new(),
        default_target: None,
        boot_entry: None,
        kernel_cmdline: None,
        vm_secs: 0.0,
        console: String::new(),
    };
    let disk_format = match format {
        ArtifactKind::Raw => DiskFormat::Raw,
        ArtifactKind::Qcow2 => DiskFormat::Qcow2,
        ArtifactKind::Oci => {
            report.results = checks
                .iter()
                .map(|(id, c)| CheckResult {
                    id: (*id).to_owned(),
                    kind: c.kind().to_owned(),
                    outcome: Ok(Outcome::skip(
                        "an OCI image is not booted: runtime checks apply to the raw and qcow2 disk images",
                    )),
                    duration: Duration::ZERO,
                })
                .collect();
            return Ok(report);
        }
        other => return Err(RuntimeError::NotAnImage(other)),
    };
    if checks.is_empty() {
        return Ok(report);
    }

    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RuntimeError::Io { path, source }
    };
    fs_err::create_dir_all(&opts.scratch_dir).map_err(io(&opts.scratch_dir))?;
    let work = tempfile::Builder::new()
        .prefix("kiln-runtime-")
        .tempdir_in(&opts.scratch_dir)
        .map_err(io(&opts.scratch_dir))?;
    let (dir, _cleanup) =
        if opts.keep_work_dir { (work.keep(), None) } else { (work.path().to_owned(), Some(work)) };

    let (entry, kernel, initrd) = boot_entry::read_default_entry(image, disk_format, &dir)?;
    let settings = script::ScriptSettings {
        settle_secs: opts.settle.min(opts.timeout * 3 / 4).as_secs(),
        command_timeout_secs: opts.command_timeout.as_secs().max(1),
        ..script::ScriptSettings::default()
    };
    let text = script::check_script(checks, &settings);
    let script_disk = dir.join("checks.img");
    let mut bytes = text.clone().into_bytes();
    bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    fs_err::write(&script_disk, &bytes).map_err(io(&script_disk))?;
    let added = script::run_parameter(text.len());
    let cmdline = format!("{} {added}", entry.options);
    report.boot_entry = Some(entry.name.clone());
    report.kernel_cmdline = Some(cmdline.clone());

    let answers_file = dir.join("answers.log");
    let mut vm_opts = VmOptions::new(image, disk_format, &dir);
    vm_opts.memory_mib = opts.memory_mib;
    vm_opts.cpus = opts.cpus;
    vm_opts.boot = Boot::Kernel { kernel, initrd, cmdline };
    vm_opts.extra_drives.push(Drive {
        path: script_disk,
        format: DiskFormat::Raw,
        serial: Some(script::SCRIPT_DRIVE_SERIAL.to_owned()),
    });
    vm_opts.second_serial = Some(answers_file.clone());

    let started = Instant::now();
    let mut vm = Vm::start(&vm_opts)?;
    // Why the answers stopped short, if they did.
    let stopped = match vm.wait_for_in(&answers_file, "KILN-DONE", opts.timeout) {
        Ok(_) => None,
        Err(VmError::Timeout { .. }) => Some(Stopped::Killed(opts.timeout.as_secs())),
        Err(VmError::Exited { success: true, status, .. }) => {
            Some(Stopped::Exited { after_secs: started.elapsed().as_secs(), status })
        }
        Err(e) => return Err(e.into()),
    };
    report.console = vm.console();
    drop(vm);
    report.vm_secs = (started.elapsed().as_millis() as f64 / 100.0).round() / 10.0;
    let answers = script::parse_answers(&vm::read_serial(&answers_file));

    report.booted = answers.begun.is_some();
    report.settled_secs = answers.settled;
    report.pending_jobs = answers.boot_text("pending-jobs").unwrap_or_default();
    report.default_target = answers.boot_text("default-target").filter(|t| !t.is_empty());
    let ctx = evaluate::Context {
        added_cmdline: &added,
        settled: answers.settled,
        pending_jobs: &report.pending_jobs,
        command_timeout_secs: settings.command_timeout_secs,
    };
    let tail = vm::tail(&report.console, 30);
    for (i, (id, check)) in checks.iter().enumerate() {
        let answer = answers.checks.get(&i).filter(|a| a.span.is_some());
        let outcome = match (answer, &stopped) {
            (Some(a), _) => evaluate::evaluate(check, a, &ctx),
            (None, Some(Stopped::Killed(secs))) if answers.begun.is_none() => Ok(Outcome::fail(
                evaluate::describe(check),
                format!("the image did not boot within {secs} s (the checks never started); last console lines:\n{tail}"),
            )),
            (None, Some(why)) if answers.begun.is_none() => Ok(Outcome::fail(
                evaluate::describe(check),
                format!("the image did not boot: {why} before the checks started; last console lines:\n{tail}"),
            )),
            (None, Some(why)) => Ok(Outcome::fail(
                evaluate::describe(check),
                format!("no answer: {why} before this check finished; last console lines:\n{tail}"),
            )),
            (None, None) => Err(CheckError::new(format!(
                "the guest finished without answering this check{}",
                if answers.garbled.is_empty() { String::new() } else { format!(" (unreadable: {:?})", answers.garbled) }
            ))),
        };
        let duration = answer
            .and_then(|a| a.span)
            .map(|(s, e)| Duration::from_secs_f64((e - s).max(0.0)))
            .unwrap_or_default();
        report.results.push(CheckResult {
            id: (*id).to_owned(),
            kind: check.kind().to_owned(),
            outcome,
            duration,
        });
    }
    Ok(report)
}
