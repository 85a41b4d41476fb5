//! Configuring an unpacked tree with the tree's own dpkg, in the [`Sandbox`]: each package's
//! `preinst install` in dependency order (the files are already there, as when debootstrap and mmdebstrap
//! install the Essential set over its plain extraction), then `dpkg --configure -a` (which runs the postinsts
//! and processes triggers), then a check that every package is `install ok installed` and `dpkg --audit` is
//! silent. No service starts meanwhile: `usr/sbin/policy-rc.d` answers 101 and is removed afterwards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::control::{relation_names, Paragraph};
use crate::sandbox::{ExitKind, RunCommand, Sandbox, SandboxError};
use crate::unpack::{Unpacked, UnpackedPackage};

/// How to configure.
#[derive(Debug, Clone, Default)]
pub struct ConfigureOptions {
    /// Exported as `SOURCE_DATE_EPOCH` to maintainer scripts, so that tools that stamp dates (shadow's
    /// last-change day, ...) use it instead of the clock.
    pub source_date_epoch: Option<i64>,
}

/// A problem configuring.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("package {package}: maintainer script `{script}` {status}; last lines of output:\n{}", tail.join("\n"))]
    Script { package: String, script: String, status: ExitKind, tail: Vec<String> },
    #[error("dpkg {status}; last lines of output:\n{}", tail.join("\n"))]
    Dpkg { status: ExitKind, tail: Vec<String> },
    #[error("packages not configured: {}", packages.join(", "))]
    NotConfigured { packages: Vec<String> },
    #[error("`dpkg --audit` reports problems:\n{0}")]
    Audit(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Configure the packages of `unpacked` in `tree`.
pub fn configure(tree: &Path, unpacked: &Unpacked, opts: &ConfigureOptions) -> Result<(), ConfigureError> {
    let sandbox = Sandbox::new(tree)?;
    configure_in(&sandbox, unpacked, opts)
}

/// [`configure`] with a given sandbox (e.g. one forced into a user namespace).
pub fn configure_in(
    sandbox: &Sandbox,
    unpacked: &Unpacked,
    opts: &ConfigureOptions,
) -> Result<(), ConfigureError> {
    let tree = sandbox.root();
    let _guard = PolicyRcD::install(tree)?;
    let mut log = |line: &str| tracing::trace!(target: "kiln_rootfs::configure", "{line}");
    let mut base = BTreeMap::new();
    if let Some(epoch) = opts.source_date_epoch {
        base.insert("SOURCE_DATE_EPOCH".to_owned(), epoch.to_string());
    }

    let dpkg_version = unpacked.packages.iter().find(|p| p.name == "dpkg").map(|p| p.version.clone());
    let order = preinst_order(&unpacked.packages);
    for pkg in order.iter().map(|&i| &unpacked.packages[i]).filter(|p| p.has_preinst) {
        info!(package = %pkg.db_name, "running preinst install");
        let mut cmd =
            RunCommand::new([format!("/var/lib/dpkg/info/{}.preinst", pkg.db_name), "install".to_owned()]);
        cmd.env.clone_from(&base);
        cmd = cmd
            .env("DPKG_MAINTSCRIPT_PACKAGE", &pkg.name)
            .env("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1")
            .env("DPKG_MAINTSCRIPT_ARCH", &pkg.architecture)
            .env("DPKG_MAINTSCRIPT_NAME", "preinst")
            .env("DPKG_MAINTSCRIPT_DEBUG", "0")
            .env("DPKG_ADMINDIR", "/var/lib/dpkg")
            .env("DPKG_ROOT", "");
        if let Some(v) = &dpkg_version {
            cmd = cmd.env("DPKG_RUNNING_VERSION", v);
        }
        sandbox.run(&cmd, &mut log).map_err(|e| script_error(e, &pkg.db_name, "preinst"))?;
    }

    info!(packages = unpacked.packages.len(), "dpkg --configure -a");
    let mut cmd = RunCommand::new(["dpkg", "--configure", "-a", "--force-unsafe-io", "--force-confold"]);
    cmd.env.clone_from(&base);
    // A kernel's postinst builds its initramfs (`update-initramfs -c`), and initramfs-tools' trigger then
    // builds it again (`-u`) once everything is configured: the same initramfs twice, the slowest part of
    // configuring a bootable tree. `INITRD=No` is the kernel hooks' own switch to skip the first; `-u` then
    // finds no initramfs to refresh, and kiln builds each one once, after dpkg is done, as `-u` would have.
    let defer_initramfs = tree.join("usr/sbin/update-initramfs").exists();
    if defer_initramfs {
        cmd = cmd.env("INITRD", "No");
    }
    let configured = sandbox.run(&cmd, &mut log);
    let states = read_states(tree)?;
    if let Err(e) = configured {
        // The package dpkg left half-configured is the one whose postinst failed; triggers-pending or
        // -awaited ones had their trigger processing fail.
        let failed =
            states.iter().find(|(_, s)| s.ends_with(" half-configured")).map(|(p, _)| (p, "postinst"));
        let failed = failed.or_else(|| {
            states
                .iter()
                .find(|(_, s)| s.ends_with(" triggers-pending"))
                .map(|(p, _)| (p, "postinst triggered"))
        });
        return Err(match (e, failed) {
            (SandboxError::Failed { status, tail, log, .. }, Some((package, script))) => {
                let name = package.split(':').next().unwrap_or(package);
                let tail = package_excerpt(&log, name).unwrap_or(tail);
                ConfigureError::Script { package: package.clone(), script: script.to_owned(), status, tail }
            }
            (SandboxError::Failed { status, tail, .. }, None) => ConfigureError::Dpkg { status, tail },
            (e, _) => e.into(),
        });
    }
    let not_configured: Vec<String> = states
        .iter()
        .filter(|(_, s)| s.as_str() != "install ok installed")
        .map(|(p, s)| format!("{p} ({s})"))
        .collect();
    if !not_configured.is_empty() {
        return Err(ConfigureError::NotConfigured { packages: not_configured });
    }

    if defer_initramfs {
        let kernels = sandbox.run(&RunCommand::new(["linux-version", "list"]), &mut log);
        if kernels.is_ok_and(|k| !k.log.trim().is_empty()) {
            info!("update-initramfs -c -k all");
            let mut cmd = RunCommand::new(["update-initramfs", "-c", "-k", "all"]);
            cmd.env.clone_from(&base);
            sandbox
                .run(&cmd, &mut log)
                .map_err(|e| script_error(e, "initramfs-tools", "update-initramfs"))?;
        }
    }

    let audit = sandbox.run(&RunCommand::new(["dpkg", "--audit"]), &mut log);
    match audit {
        Ok(out) if out.log.trim().is_empty() => {}
        Ok(out) => return Err(ConfigureError::Audit(out.log)),
        Err(SandboxError::Failed { tail, .. }) => return Err(ConfigureError::Audit(tail.join("\n"))),
        Err(e) => return Err(e.into()),
    }
    info!(packages = states.len(), "configured");
    Ok(())
}

fn script_error(e: SandboxError, package: &str, script: &str) -> ConfigureError {
    match e {
        SandboxError::Failed { status, tail, .. } => {
            ConfigureError::Script { package: package.to_owned(), script: script.to_owned(), status, tail }
        }
        e => e.into(),
    }
}

/// The part of dpkg's output about one package: from its `Setting up NAME ` line (or the last mention of its
/// name before dpkg's error) to the end of dpkg's `error processing package NAME` message.
fn package_excerpt(log: &str, name: &str) -> Option<Vec<String>> {
    let lines: Vec<&str> = log.lines().collect();
    let error =
        lines.iter().position(|l| l.starts_with(&format!("dpkg: error processing package {name} ")))?;
    let start = lines[..error]
        .iter()
        .rposition(|l| {
            l.starts_with(&format!("Setting up {name} ")) || l.starts_with(&format!("Setting up {name}:"))
        })
        .unwrap_or(error.saturating_sub(10));
    let end = (error + 1..lines.len()).find(|&i| !lines[i].starts_with(' ')).unwrap_or(lines.len());
    Some(lines[start..end].iter().map(|l| (*l).to_owned()).collect())
}

/// Each package of the tree's dpkg status file (`NAME` or `NAME:ARCH` for `Multi-Arch: same`) and its
/// `Status:` value.
pub fn read_states(tree: &Path) -> Result<Vec<(String, String)>, ConfigureError> {
    let path = tree.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigureError::Io { path, source })?;
    Ok(parse_states(&text))
}

fn parse_states(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|para| Paragraph::parse(para).ok())
        .filter_map(|p| {
            let name = p.get("Package")?;
            let same = p.get("Multi-Arch").is_some_and(|m| m.eq_ignore_ascii_case("same"));
            let name = match (same, p.get("Architecture")) {
                (true, Some(arch)) => format!("{name}:{arch}"),
                _ => name.to_owned(),
            };
            Some((name, p.get("Status")?.to_owned()))
        })
        .collect()
}

/// The order in which to run preinsts: a package after what it depends or pre-depends on (directly or through
/// `Provides`), the given order where that leaves a choice, and the given order again to break cycles.
pub fn preinst_order(packages: &[UnpackedPackage]) -> Vec<usize> {
    let mut providers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in packages.iter().enumerate() {
        providers.entry(p.name.as_str()).or_default().push(i);
        for v in relation_names(&p.provides) {
            providers.entry(v).or_default().push(i);
        }
    }
    let deps: Vec<HashSet<usize>> = packages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            relation_names(&p.pre_depends)
                .chain(relation_names(&p.depends))
                .flat_map(|n| providers.get(n).into_iter().flatten().copied())
                .filter(|&j| j != i)
                .collect()
        })
        .collect();
    let mut placed = vec![false; packages.len()];
    let mut order = Vec::with_capacity(packages.len());
    while order.len() < packages.len() {
        let ready = (0..packages.len()).find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d]));
        let next = ready.unwrap_or_else(|| {
            // Stuck: every package left waits for another. Walk the waits from the first one left until a
            // package repeats; that closes a cycle, whose first package in the given order goes first.
            let mut walk: Vec<usize> = Vec::new();
            let mut cur = (0..packages.len()).find(|&i| !placed[i]).unwrap_or_default();
            loop {
                if let Some(pos) = walk.iter().position(|&w| w == cur) {
                    let first = walk[pos..].iter().copied().min().unwrap_or(cur);
                    warn!(package = %packages[first].name, "dependency cycle: running its preinst first");
                    break first;
                }
                walk.push(cur);
                match deps[cur].iter().copied().filter(|&d| !placed[d]).min() {
                    Some(d) => cur = d,
                    None => break cur,
                }
            }
        });
        placed[next] = true;
        order.push(next);
    }
    order
}

/// `usr/sbin/policy-rc.d` answering 101 ("action forbidden") while configuring; whatever was there is put
/// back when dropped.
struct PolicyRcD {
    path: PathBuf,
    previous: Option<(Vec<u8>, u32)>,
}

impl PolicyRcD {
    fn install(tree: &Path) -> Result<Self, ConfigureError> {
        let path = tree.join("usr/sbin/policy-rc.d");
        let io = |source| ConfigureError::Io { path: path.clone(), source };
        let previous = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Some((std::fs::read(&path).map_err(io)?, m.permissions().mode())),
            _ => None,
        };
        std::fs::create_dir_all(tree.join("usr/sbin")).map_err(io)?;
        let _ = std::fs::remove_file(&path);
        std::fs::write(
            &path,
            "#!/bin/sh\n# Installed by kiln while configuring: no service starts.\nexit 101\n",
        )
        .map_err(io)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        Ok(Self { path, previous })
    }
}

impl Drop for PolicyRcD {
    fn drop(&mut self) {
        let restored = match &self.previous {
            None => std::fs::remove_file(&self.path),
            Some((bytes, mode)) => std::fs::write(&self.path, bytes)
                .and_then(|()| std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(*mode))),
        };
        if let Err(e) = restored {
            warn!(path = %self.path.display(), error = %e, "could not restore policy-rc.d");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, pre_depends: &str, depends: &str, provides: &str) -> UnpackedPackage {
        UnpackedPackage {
            name: name.to_owned(),
            db_name: name.to_owned(),
            version: "1".to_owned(),
            architecture: "amd64".to_owned(),
            essential: false,
            has_preinst: true,
            pre_depends: pre_depends.to_owned(),
            depends: depends.to_owned(),
            provides: provides.to_owned(),
        }
    }

    #[test]
    fn preinsts_run_after_their_dependencies() {
        let pkgs = [
            pkg("app", "", "libfoo (>= 1), mail-transport-agent", ""),
            pkg("libfoo", "libc6", "", ""),
            pkg("postfix", "", "libc6", "mail-transport-agent"),
            pkg("libc6", "", "libgcc-s1", ""),
            pkg("libgcc-s1", "", "libc6", ""),
        ];
        let order: Vec<&str> = preinst_order(&pkgs).into_iter().map(|i| pkgs[i].name.as_str()).collect();
        // libc6 and libgcc-s1 depend on each other: the given order breaks the cycle (not with `app`, which
        // only waits for it); then each package comes as soon as what it needs is there.
        assert_eq!(order, ["libc6", "libfoo", "postfix", "app", "libgcc-s1"]);
    }

    #[test]
    fn the_excerpt_of_a_failed_package_holds_its_script_output() {
        let log = "Setting up a (1) ...\nSetting up base-files (12) ...\nchown: invalid group\n\
                   dpkg: error processing package base-files (--configure):\n installed base-files package \
                   post-installation script subprocess returned error exit status 1\nSetting up b (1) ...\n";
        let excerpt = package_excerpt(log, "base-files").unwrap();
        assert_eq!(excerpt.first().map(String::as_str), Some("Setting up base-files (12) ..."));
        assert!(excerpt.iter().any(|l| l == "chown: invalid group"));
        assert!(excerpt.last().unwrap().contains("returned error exit status 1"));
        assert_eq!(package_excerpt(log, "other"), None);
    }

    #[test]
    fn states_name_multi_arch_same_packages_with_their_architecture() {
        let text = "Package: a\nStatus: install ok installed\nVersion: 1\n\n\
                    Package: libb\nStatus: install ok half-configured\nMulti-Arch: same\nArchitecture: amd64\n\n";
        assert_eq!(
            parse_states(text),
            [
                ("a".to_owned(), "install ok installed".to_owned()),
                ("libb:amd64".to_owned(), "install ok half-configured".to_owned())
            ]
        );
    }
}
