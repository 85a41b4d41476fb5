//! What goes into the ESP to boot the image with systemd-boot: the newest kernel and its initrd from the
//! tree's `/boot`, systemd-boot itself (from the image's own systemd-boot-efi package) as the removable-media
//! default loader and under `EFI/systemd/`, `loader/loader.conf` and one Boot Loader Specification type #1
//! entry. Choosing files and rendering the texts is pure ([`plan_esp`]); [`esp_files_from_tree`] reads them.

use std::{cmp::Ordering, path::Path};

use crate::{esp::EspFile, DiskError, Result};

/// Where the systemd-boot-efi package installs the x86-64 loader, relative to the tree.
pub const SYSTEMD_BOOT_IN_TREE: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// The firmware's removable-media default loader path in the ESP.
pub const ESP_DEFAULT_LOADER: &str = "EFI/BOOT/BOOTX64.EFI";
/// systemd-boot's own path in the ESP.
pub const ESP_SYSTEMD_BOOT: &str = "EFI/systemd/systemd-bootx64.efi";

/// What the boot entry says besides the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// Entry id prefix (e.g. the image name); the entry file is `loader/entries/ID-KERNELVERSION.conf`.
    pub entry_id: String,
    /// Menu title, e.g. `Debian GNU/Linux 12 (web 1.2.0)`.
    pub title: String,
    /// The argument that finds the root file system, e.g. `root=PARTUUID=…` (see
    /// `DiskLayout::root_cmdline_arg`).
    pub root_arg: String,
    /// The blueprint's kernel command line arguments, in order.
    pub cmdline: Vec<String>,
}

/// A kernel and its initrd in `/boot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// Version as in the file names, e.g. `6.1.0-26-amd64`.
    pub version: String,
    /// File name of the kernel (`vmlinuz-VERSION`).
    pub vmlinuz: String,
    /// File name of the initrd (`initrd.img-VERSION`).
    pub initrd: String,
}

/// A file to copy from the tree into the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedFile {
    /// Path relative to the tree root.
    pub from_tree: String,
    /// Path in the ESP.
    pub to_esp: String,
}

/// The ESP contents for one tree: files to copy from the tree and generated text files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspPlan {
    pub kernel: Kernel,
    pub copies: Vec<CopiedFile>,
    /// `loader/loader.conf` and the entry, as (ESP path, text).
    pub generated: Vec<(String, String)>,
}

impl EspPlan {
    /// The text of the BLS entry.
    pub fn entry_text(&self) -> &str {
        self.generated.iter().find(|(p, _)| p.starts_with("loader/entries/")).map_or("", |(_, t)| t)
    }
}

/// Compares version strings the way people read them: runs of digits as numbers, the rest byte-wise
/// (`6.1.0-10-amd64` is newer than `6.1.0-9-amd64`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let da = trim_zeros(&a[..na]);
                let db = trim_zeros(&b[..nb]);
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z..]
}

/// The newest `vmlinuz-VERSION` among the file names of `/boot`, with its `initrd.img-VERSION`.
/// `Ok(None)` when there is no kernel; an error when the newest kernel has no initrd.
pub fn newest_kernel<S: AsRef<str>>(boot_names: &[S]) -> std::result::Result<Option<Kernel>, String> {
    let newest = boot_names
        .iter()
        .filter_map(|n| n.as_ref().strip_prefix("vmlinuz-"))
        .filter(|v| !v.is_empty())
        .max_by(|a, b| compare_versions(a, b));
    let Some(version) = newest else {
        return Ok(None);
    };
    let initrd = format!("initrd.img-{version}");
    if !boot_names.iter().any(|n| n.as_ref() == initrd) {
        return Err(version.to_owned());
    }
    Ok(Some(Kernel { version: version.to_owned(), vmlinuz: format!("vmlinuz-{version}"), initrd }))
}

/// The kernel command line of the entry: the root argument, `rw` unless the blueprint says `ro` or `rw`, then
/// the blueprint's arguments.
pub fn kernel_options(cfg: &BootConfig) -> String {
    let mut args = vec![cfg.root_arg.clone()];
    if !cfg.cmdline.iter().any(|a| a == "ro" || a == "rw") {
        args.push("rw".to_owned());
    }
    args.extend(cfg.cmdline.iter().cloned());
    args.join(" ")
}

/// A Boot Loader Specification type #1 entry for `kernel` (kernel and initrd at the ESP root).
pub fn render_bls_entry(cfg: &BootConfig, kernel: &Kernel) -> String {
    format!(
        "title {}\nversion {}\nlinux /{}\ninitrd /{}\noptions {}\n",
        cfg.title,
        kernel.version,
        kernel.vmlinuz,
        kernel.initrd,
        kernel_options(cfg)
    )
}

/// Plans the ESP from the file names in the tree's `/boot` (pure: no file is read).
pub fn plan_esp<S: AsRef<str>>(
    boot_names: &[S],
    cfg: &BootConfig,
) -> std::result::Result<EspPlan, PlanError> {
    let kernel = match newest_kernel(boot_names) {
        Ok(Some(k)) => k,
        Ok(None) => return Err(PlanError::NoKernel),
        Err(version) => return Err(PlanError::NoInitrd { version }),
    };
    let entry_name = format!("{}-{}", cfg.entry_id, kernel.version);
    let copies = vec![
        CopiedFile { from_tree: SYSTEMD_BOOT_IN_TREE.into(), to_esp: ESP_DEFAULT_LOADER.into() },
        CopiedFile { from_tree: SYSTEMD_BOOT_IN_TREE.into(), to_esp: ESP_SYSTEMD_BOOT.into() },
        CopiedFile { from_tree: format!("boot/{}", kernel.vmlinuz), to_esp: kernel.vmlinuz.clone() },
        CopiedFile { from_tree: format!("boot/{}", kernel.initrd), to_esp: kernel.initrd.clone() },
    ];
    let generated = vec![
        ("loader/loader.conf".to_owned(), format!("default {entry_name}.conf\ntimeout 0\neditor no\n")),
        (format!("loader/entries/{entry_name}.conf"), render_bls_entry(cfg, &kernel)),
    ];
    Ok(EspPlan { kernel, copies, generated })
}

/// Why [`plan_esp`] found nothing to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    NoKernel,
    NoInitrd { version: String },
}

/// Reads `TREE/boot`, plans the ESP for `cmdline` and reads the files: the list to give to
/// [`crate::write_esp`], and the plan (for the entry text).
pub fn esp_files_from_tree(tree: &Path, cfg: &BootConfig) -> Result<(Vec<EspFile>, EspPlan)> {
    let boot_dir = tree.join("boot");
    let mut names = Vec::new();
    for entry in fs_err::read_dir(&boot_dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    let plan = plan_esp(&names, cfg).map_err(|e| match e {
        PlanError::NoKernel => DiskError::NoKernel { boot_dir: boot_dir.clone() },
        PlanError::NoInitrd { version } => DiskError::NoInitrd { version, boot_dir: boot_dir.clone() },
    })?;
    let loader = tree.join(SYSTEMD_BOOT_IN_TREE);
    if !loader.is_file() {
        return Err(DiskError::NoBootloader { path: loader });
    }
    let mut files = Vec::new();
    for c in &plan.copies {
        files.push(EspFile { path: c.to_esp.clone(), data: fs_err::read(tree.join(&c.from_tree))? });
    }
    for (path, text) in &plan.generated {
        files.push(EspFile { path: path.clone(), data: text.clone().into_bytes() });
    }
    Ok((files, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BootConfig {
        BootConfig {
            entry_id: "web".into(),
            title: "Debian GNU/Linux 12 (web 1.2.0)".into(),
            root_arg: "root=PARTUUID=0b6c1f9e-1111-4222-8333-444455556666".into(),
            cmdline: vec!["console=ttyS0".into(), "quiet".into()],
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("6.1.0-10-amd64", "6.1.0-9-amd64"), Ordering::Greater);
        assert_eq!(compare_versions("6.10.0-1-amd64", "6.9.12-1-amd64"), Ordering::Greater);
        assert_eq!(compare_versions("6.1.0-01", "6.1.0-1"), Ordering::Equal);
        assert_eq!(compare_versions("6.1.0", "6.1.0-1"), Ordering::Less);
    }

    #[test]
    fn picks_newest_kernel_with_its_initrd() {
        let names = [
            "config-6.1.0-9-amd64",
            "vmlinuz-6.1.0-9-amd64",
            "initrd.img-6.1.0-9-amd64",
            "vmlinuz-6.1.0-26-amd64",
            "initrd.img-6.1.0-26-amd64",
            "System.map-6.1.0-26-amd64",
        ];
        let plan = plan_esp(&names, &cfg()).unwrap();
        assert_eq!(plan.kernel.version, "6.1.0-26-amd64");
        let esp_paths: Vec<_> = plan.copies.iter().map(|c| c.to_esp.as_str()).collect();
        assert_eq!(
            esp_paths,
            [ESP_DEFAULT_LOADER, ESP_SYSTEMD_BOOT, "vmlinuz-6.1.0-26-amd64", "initrd.img-6.1.0-26-amd64"]
        );
        assert_eq!(
            plan.entry_text(),
            "title Debian GNU/Linux 12 (web 1.2.0)\nversion 6.1.0-26-amd64\nlinux /vmlinuz-6.1.0-26-amd64\n\
             initrd /initrd.img-6.1.0-26-amd64\n\
             options root=PARTUUID=0b6c1f9e-1111-4222-8333-444455556666 rw console=ttyS0 quiet\n"
        );
        assert_eq!(
            plan.generated[0],
            ("loader/loader.conf".into(), "default web-6.1.0-26-amd64.conf\ntimeout 0\neditor no\n".into())
        );
        assert_eq!(plan.generated[1].0, "loader/entries/web-6.1.0-26-amd64.conf");
    }

    #[test]
    fn missing_kernel_or_initrd_is_an_error() {
        assert_eq!(plan_esp(&["config-1"], &cfg()), Err(PlanError::NoKernel));
        let names = ["vmlinuz-2", "initrd.img-1", "vmlinuz-1"];
        assert_eq!(plan_esp(&names, &cfg()), Err(PlanError::NoInitrd { version: "2".into() }));
    }

    #[test]
    fn explicit_ro_is_kept() {
        let mut c = cfg();
        c.cmdline = vec!["ro".into()];
        assert_eq!(kernel_options(&c), "root=PARTUUID=0b6c1f9e-1111-4222-8333-444455556666 ro");
    }
}
