//! The contract model: a named, semver-versioned set of requirements, each one check of the image
//! (static: read from the artifact's files; runtime: observed in a booted VM).
//!
//! Parsers build these from `contracts/*.toml`; the runner evaluates each [`Check`] and reports Pass,
//! Skip(reason) or Fail with evidence. The model carries no I/O.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use serde::Serialize;

/// A contract's identity: `base-os@1.3.0`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ContractId {
    pub name: String,
    pub version: semver::Version,
}

impl fmt::Display for ContractId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// One contract file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contract {
    pub id: ContractId,
    pub description: String,
    /// Contracts this one extends (`base-os@^1`): their requirements are part of this one's.
    pub extends: Vec<kiln_blueprint::model::ContractRef>,
    /// This contract's own requirements, in file order (extended ones are not repeated here).
    pub requirements: Vec<Requirement>,
    /// The file it was read from.
    pub path: PathBuf,
}

/// How bad a failure of a requirement is. Every failure fails the certification; severity orders
/// reports and tells a reader what to fix first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Critical,
    Major,
    Minor,
}

impl Severity {
    pub const ALL: [(&'static str, Severity); 3] =
        [("critical", Self::Critical), ("major", Self::Major), ("minor", Self::Minor)];
}

/// One requirement of a contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Requirement {
    /// Unique within the contract and the contracts it extends: `sshd-enabled`.
    pub id: String,
    pub description: String,
    pub severity: Severity,
    /// A runbook entry, `runbook/checks/<id>.md`: why the check exists, the lesson learned.
    pub runbook: Option<String>,
    pub check: Check,
    /// 1-based line of the requirement in its contract file, for reports.
    pub line: usize,
}

/// Whether a check reads the artifact's files or needs the image booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Static,
    Runtime,
}

/// How a found value is compared with the expected one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Match {
    /// Exactly this text.
    Equals(String),
    /// A regular expression (Rust `regex` syntax) that must match somewhere in the value.
    Regex(String),
}

/// A file system entry's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    File,
    Directory,
    Symlink,
}

/// A package's required state. Version constraints use Debian version ordering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageState {
    /// Installed; with `version`, one of Debian's relation operators and a version: `>= 2.36`.
    Present {
        version: Option<String>,
    },
    Absent,
}

/// A systemd unit's enablement, as `systemctl is-enabled` would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    Enabled,
    Disabled,
    Masked,
}

/// Where a configuration value is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigFormat {
    /// `sysctl.d` files in systemd-sysctl's order (/etc, /run, /usr/local/lib, /usr/lib; later files
    /// and later lines win).
    Sysctl,
    /// `sshd_config` with its `Include`s; the first value of a keyword wins (sshd's rule); keywords are
    /// case-insensitive.
    Sshd,
}

/// What a requirement checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Check {
    // ---- static: read from the artifact ----
    /// A field of `/etc/os-release` (falling back to `/usr/lib/os-release`).
    OsRelease { field: String, value: Match },
    /// A package in the image's dpkg database.
    Package { name: String, state: PackageState },
    /// A path in the image. `exists = false` requires it to be absent (then nothing else is checked).
    File {
        path: String,
        exists: bool,
        file_type: Option<FileKind>,
        /// Permission bits, e.g. 0o644 (with setuid/setgid/sticky bits when given).
        mode: Option<u32>,
        /// User and group: names (looked up in the image's passwd/group) or numbers.
        owner: Option<String>,
        group: Option<String>,
        sha256: Option<String>,
        /// A regular expression the content must match.
        content: Option<String>,
    },
    /// A user account in the image's passwd (and shadow).
    User { name: String, uid: Option<u32>, home: Option<String>, shell: Option<String>, groups: Vec<String> },
    /// A group in the image's group file.
    Group { name: String, gid: Option<u32>, members: Vec<String> },
    /// A systemd unit's enablement, from the unit files and links in the image.
    Service { unit: String, state: ServiceState },
    /// A configuration value.
    Config { format: ConfigFormat, key: String, value: Match },
    /// A shared library by soname (found in the image's library directories), optionally providing
    /// symbol versions (`GLIBC_2.36`).
    Library { soname: String, symbol_versions: Vec<String> },
    /// No setuid/setgid executables and no world-writable files or directories (sticky directories
    /// such as /tmp excepted) outside the allowlist (exact paths or globs with `*` and `?`).
    SpecialFiles { setuid: bool, setgid: bool, world_writable: bool, allow: Vec<String> },
    /// The OCI image configuration. Skipped (with the reason) for disk images.
    OciConfig {
        entrypoint: Option<Vec<String>>,
        cmd: Option<Vec<String>>,
        /// Variables that must be set, with their values.
        env: BTreeMap<String, Match>,
        labels: BTreeMap<String, Match>,
        /// `80/tcp`-style ports that must be exposed.
        exposed_ports: Vec<String>,
        user: Option<String>,
    },

    // ---- runtime: observed in the booted image ----
    /// A systemd target is reached within `within_secs` of boot (kernel start to the target's activation).
    BootTarget { target: String, within_secs: u64 },
    /// A unit is active.
    UnitActive { unit: String },
    /// Something listens on a port.
    PortListening { port: u16, protocol: Protocol },
    /// A shell command exits with `exit_code` and (when given) its output matches `output`.
    Command { run: String, exit_code: i32, output: Option<String> },
    /// The kernel command line the image boots with holds every `contains` word and none of `absent`.
    KernelCmdline { contains: Vec<String>, absent: Vec<String> },
    /// No unit is in the failed state (except those allowed).
    NoFailedUnits { allow: Vec<String> },
}

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Check {
    /// Whether the check reads files or needs a boot.
    pub fn stage(&self) -> Stage {
        match self {
            Check::OsRelease { .. }
            | Check::Package { .. }
            | Check::File { .. }
            | Check::User { .. }
            | Check::Group { .. }
            | Check::Service { .. }
            | Check::Config { .. }
            | Check::Library { .. }
            | Check::SpecialFiles { .. }
            | Check::OciConfig { .. } => Stage::Static,
            Check::BootTarget { .. }
            | Check::UnitActive { .. }
            | Check::PortListening { .. }
            | Check::Command { .. }
            | Check::KernelCmdline { .. }
            | Check::NoFailedUnits { .. } => Stage::Runtime,
        }
    }

    /// The kind's name as written in contract files (`kind = "package"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Check::OsRelease { .. } => "os-release",
            Check::Package { .. } => "package",
            Check::File { .. } => "file",
            Check::User { .. } => "user",
            Check::Group { .. } => "group",
            Check::Service { .. } => "service",
            Check::Config { .. } => "config",
            Check::Library { .. } => "library",
            Check::SpecialFiles { .. } => "special-files",
            Check::OciConfig { .. } => "oci-config",
            Check::BootTarget { .. } => "boot-target",
            Check::UnitActive { .. } => "unit-active",
            Check::PortListening { .. } => "port-listening",
            Check::Command { .. } => "command",
            Check::KernelCmdline { .. } => "kernel-cmdline",
            Check::NoFailedUnits { .. } => "no-failed-units",
        }
    }
}

impl Protocol {
    pub const ALL: [(&'static str, Protocol); 2] = [("tcp", Self::Tcp), ("udp", Self::Udp)];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FileKind {
    pub const ALL: [(&'static str, FileKind); 3] =
        [("file", Self::File), ("directory", Self::Directory), ("symlink", Self::Symlink)];
}

impl ServiceState {
    pub const ALL: [(&'static str, ServiceState); 3] =
        [("enabled", Self::Enabled), ("disabled", Self::Disabled), ("masked", Self::Masked)];
}

impl ConfigFormat {
    pub const ALL: [(&'static str, ConfigFormat); 2] = [("sysctl", Self::Sysctl), ("sshd", Self::Sshd)];
}

impl Match {
    /// Whether `value` is the expected one: equal to it, or matched (anywhere) by the regular expression.
    /// A regular expression that does not compile matches nothing (the parser accepts only ones that do).
    pub fn is_match(&self, value: &str) -> bool {
        match self {
            Match::Equals(s) => s == value,
            Match::Regex(r) => regex::Regex::new(r).is_ok_and(|re| re.is_match(value)),
        }
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Equals(s) => write!(f, "= {s:?}"),
            Match::Regex(r) => write!(f, "~ /{r}/"),
        }
    }
}

impl PackageState {
    /// The version constraint of [`PackageState::Present`], parsed (`>= 2.36`); `None` when there is none.
    /// The parser accepts only constraints that parse.
    pub fn constraint(&self) -> Option<kiln_debian::relation::Constraint> {
        match self {
            PackageState::Present { version: Some(v) } => crate::parse::version_constraint(v).ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_compare_exactly_or_search_with_the_regex() {
        assert!(Match::Equals("debian".into()).is_match("debian"));
        assert!(!Match::Equals("debian".into()).is_match("debian "));
        assert!(Match::Regex("^1[0-9]$".into()).is_match("12"));
        assert!(Match::Regex("bian".into()).is_match("debian"));
        assert!(!Match::Regex("^bian".into()).is_match("debian"));
        assert!(!Match::Regex("(".into()).is_match("("));
    }

    #[test]
    fn package_constraints_use_debian_ordering() {
        let state = PackageState::Present { version: Some(">= 2.36".into()) };
        let c = state.constraint().unwrap();
        let v = |s| kiln_debian::Version::parse(s).unwrap();
        assert!(c.matches(&v("2.36-9+deb12u10")));
        assert!(!c.matches(&v("2.36~rc1-1")));
        assert!(c.matches(&v("2.41-6")));
        assert!(PackageState::Present { version: None }.constraint().is_none());
        assert!(PackageState::Absent.constraint().is_none());
    }
}
