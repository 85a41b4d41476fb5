//! The one blueprint model that both forms (declarative `blueprint.toml`, imperative `Kilnfile`) parse into.
//!
//! Declarative settings (packages, users, services, disk, outputs, contracts, ...) are order-free sets;
//! [`Blueprint::steps`] holds the actions whose order matters (files, copies, run commands), in the order the
//! blueprint gives them. The TOML form lists its `[[groups]]`, `[[users]]`, `[[directories]]` as settings and
//! turns `[[files]]` then `[[run]]` into steps, in that order; the Kilnfile turns COPY/ADD/RUN into steps in
//! file order. So a TOML blueprint and a Kilnfile that say the same thing give the same model, and the same
//! plan (see `plan`).
//!
//! Every value that came from a source file keeps the byte [`Span`] it was written at, so later checks
//! (missing source files, template errors, undefined variables) can point at it. Spans are skipped when the
//! model is serialized or compared for equality of meaning.

use std::{collections::BTreeMap, ops::Range, path::PathBuf, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::diag::SourceFile;

/// `--var NAME=VALUE` overrides of a blueprint's variables, by name.
pub type Vars = BTreeMap<String, String>;

/// A byte range into the blueprint's source file.
pub type Span = Range<usize>;

/// Which of the two forms a blueprint was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// `blueprint.toml`
    Toml,
    /// `Kilnfile`
    Kilnfile,
}

/// A parsed blueprint. Relative paths in it (sources of files and copies, run-script files) are relative
/// to [`Blueprint::dir`], the folder holding the blueprint file.
#[derive(Debug, Clone, Serialize)]
pub struct Blueprint {
    #[serde(skip)]
    pub file: Arc<SourceFile>,
    pub form: Form,
    /// The folder that holds the blueprint file: the root of every relative source path.
    #[serde(skip)]
    pub dir: PathBuf,
    pub name: Spanned<String>,
    pub version: Spanned<semver::Version>,
    pub description: Option<String>,
    pub base: Spanned<Base>,
    pub packages: Packages,
    pub groups: Vec<Spanned<Group>>,
    pub users: Vec<Spanned<User>>,
    pub directories: Vec<Spanned<Directory>>,
    pub services: Services,
    pub system: System,
    pub disk: Disk,
    pub outputs: Vec<Spanned<Output>>,
    pub contracts: Vec<Spanned<ContractRef>>,
    pub lifecycle: LifecyclePolicy,
    /// Variables and their defaults (TOML `[variables]`, Kilnfile `ARG`). `--var k=v` overrides them.
    pub variables: BTreeMap<String, Spanned<String>>,
    /// Runtime configuration of the OCI image (and the default user/workdir of RUN steps).
    pub container: ContainerConfig,
    /// Ordered actions: files, copies, run commands.
    pub steps: Vec<Spanned<Step>>,
}

/// A value with the span it was written at. Serializes and compares as the bare value.
#[derive(Debug, Clone)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Self { value, span }
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Where the image's root tree starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Base {
    /// Packages of a Debian repository. Unset fields default, at build time, from the host's apt sources.
    Debian(DebianBase),
    /// An image already in the catalog: `catalog:FAMILY@VERSION` or `catalog:FAMILY@CHANNEL`.
    Catalog { family: String, selector: CatalogSelector },
    /// An image in an OCI image layout on disk: `oci-layout:PATH:TAG` (PATH relative to the blueprint).
    OciLayout { path: String, tag: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DebianBase {
    pub suite: String,
    /// Empty means "as the host's apt sources say" (usually `main`).
    pub components: Vec<String>,
    pub variant: Variant,
    /// A mirror URL; `None` means the one the host's apt sources name.
    pub mirror: Option<String>,
    /// An OpenPGP keyring path; `None` means the host's Debian archive keyring.
    pub keyring: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// The set `mmdebstrap --variant=minbase` installs: Essential and Priority: required, plus apt.
    #[default]
    Minbase,
    /// minbase plus Priority: important and standard.
    Standard,
}

/// The version part of a catalog reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum CatalogSelector {
    /// An exact version or a semver range, e.g. `1.2.0` or `^1`.
    Version(String),
    /// A channel name, e.g. `stable`.
    Channel(String),
}

/// Packages to install on top of the base (and to keep out of it).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Packages {
    pub include: Vec<Spanned<String>>,
    pub exclude: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    pub gid: Option<u32>,
    /// A system group (gid allocated from the system range when not given).
    pub system: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub name: String,
    pub uid: Option<u32>,
    /// Primary group; `None` means a group of the user's own name.
    pub primary_group: Option<String>,
    /// Supplementary groups.
    pub groups: Vec<String>,
    pub shell: Option<String>,
    pub home: Option<String>,
    pub gecos: Option<String>,
    pub ssh_keys: Vec<String>,
    pub password: Password,
    pub system: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum Password {
    /// No password login (`!` in shadow). The default.
    Locked,
    /// A crypt(3) hash, written to shadow as is.
    Hashed(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Directory {
    pub path: String,
    pub mode: Mode,
    pub owner: String,
    pub group: String,
}

/// A Unix permission mode (e.g. `0o644`); serialized as an octal string like `"0644"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mode(pub u32);

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:04o}", self.0))
    }
}

/// systemd unit states to set, exactly as `systemctl enable/disable/mask` would.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Services {
    pub enable: Vec<Spanned<String>>,
    pub disable: Vec<Spanned<String>>,
    pub mask: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct System {
    pub hostname: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    /// Kernel command line arguments, in order.
    pub kernel_cmdline: Vec<String>,
}

/// Disk layout of the raw/qcow2 outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disk {
    pub size: DiskSize,
    /// Size of the EFI system partition in bytes.
    pub esp_size: u64,
    pub root_fs: RootFs,
    /// Extra partitions after the root partition, in order.
    pub partitions: Vec<Spanned<Partition>>,
}

impl Default for Disk {
    fn default() -> Self {
        Self {
            size: DiskSize::Auto,
            esp_size: 256 * 1024 * 1024,
            root_fs: RootFs::Ext4,
            partitions: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "bytes", rename_all = "kebab-case")]
pub enum DiskSize {
    /// Content plus headroom.
    Auto,
    Bytes(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootFs {
    Ext4,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Partition {
    /// GPT partition label.
    pub label: String,
    pub size: u64,
    /// Discoverable Partitions Specification role, which picks the type GUID.
    pub role: PartitionRole,
    /// File system to create, if any (`None` leaves the partition empty).
    pub fs: Option<RootFs>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionRole {
    Home,
    Srv,
    Var,
    Tmp,
    Swap,
    /// Generic Linux data partition.
    Linux,
}

impl PartitionRole {
    pub const ALL: [(&'static str, PartitionRole); 6] = [
        ("home", Self::Home),
        ("srv", Self::Srv),
        ("var", Self::Var),
        ("tmp", Self::Tmp),
        ("swap", Self::Swap),
        ("linux", Self::Linux),
    ];
}

/// An output format and its compression.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    pub kind: OutputKind,
    pub compression: Compression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    Raw,
    Qcow2,
    Oci,
}

impl OutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Oci => "oci",
        }
    }

    /// Compressions this output accepts; the first is the default.
    pub fn compressions(self) -> &'static [Compression] {
        match self {
            Self::Raw => &[Compression::None],
            Self::Qcow2 => &[Compression::None, Compression::Zlib, Compression::Zstd],
            Self::Oci => &[Compression::Gzip, Compression::Zstd, Compression::None],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    Gzip,
    Zlib,
    Zstd,
}

impl Compression {
    pub const ALL: [(&'static str, Compression); 4] =
        [("none", Self::None), ("gzip", Self::Gzip), ("zlib", Self::Zlib), ("zstd", Self::Zstd)];
}

/// A claimed contract: `base-os@^1` (name and semver requirement).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContractRef {
    pub name: String,
    pub req: String,
}

impl ContractRef {
    pub fn req(&self) -> semver::VersionReq {
        // Parsers only build a ContractRef from a requirement that parsed.
        semver::VersionReq::parse(&self.req).unwrap_or(semver::VersionReq::STAR)
    }
}

/// How the catalog sets lifecycle dates for this family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LifecyclePolicy {
    /// Months a version stays supported after it is published.
    pub support_months: Option<u32>,
    /// Days after a successor becomes stable that a version is deprecated.
    pub deprecate_after_days: Option<u32>,
}

/// OCI image runtime configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ContainerConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// Environment of the image (Kilnfile ENV; also applied to later RUN steps).
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Exposed ports as `PORT/PROTO`, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
}

/// An ordered action on the root tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    /// Write one file (TOML `[[files]]`).
    File(FileStep),
    /// Copy files from the blueprint folder (Kilnfile COPY/ADD).
    Copy(CopyStep),
    /// Run a command in the image's sandbox (TOML `[[run]]`, Kilnfile RUN).
    Run(RunStep),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileStep {
    /// Absolute path in the image.
    pub path: String,
    pub source: FileSource,
    pub mode: Mode,
    pub owner: String,
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum FileSource {
    /// Text given in the blueprint itself.
    Inline(String),
    /// A file in the blueprint folder, copied as is.
    Path(String),
    /// A minijinja template in the blueprint folder, rendered with the blueprint's variables.
    Template(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopyStep {
    /// Sources relative to the blueprint folder (files or folders).
    pub sources: Vec<String>,
    /// Destination in the image; a trailing `/` (or several sources) means a directory.
    pub dest: String,
    /// `--chown=user[:group]`
    pub chown: Option<String>,
    /// `--chmod=0644`; `None` keeps the source file's mode.
    pub chmod: Option<Mode>,
    /// `--template`: render each source as a minijinja template.
    pub template: bool,
    /// Written as ADD (local tar archives are unpacked).
    pub add: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStep {
    pub command: Command,
    /// Environment of this command: the ARG values in scope, overridden by the ENV values in force.
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum Command {
    /// Run by `/bin/sh -c`.
    Shell(String),
    /// argv, run directly.
    Exec(Vec<String>),
    /// A script file from the blueprint folder, run by `/bin/sh`.
    ScriptFile(String),
}

/// Shared value syntax of both forms. Each returns a message (without location) on bad input; the parser
/// that calls it adds the span.
pub mod syntax {
    use super::{Base, CatalogSelector, Compression, ContractRef, Mode, Output, OutputKind};

    /// A size: `auto` is handled by callers; this takes bytes as a plain number or with a binary unit
    /// suffix `K`, `M`, `G`, `T` (optionally followed by `iB` or `B`), e.g. `512M`, `4GiB`, `1073741824`.
    pub fn size(s: &str) -> Result<u64, String> {
        let t = s.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits_end);
        if num.is_empty() {
            return Err(format!(
                "invalid size `{s}`: expected a number with an optional unit, e.g. `512M` or `4G`"
            ));
        }
        let n: u64 = num.parse().map_err(|_| format!("invalid size `{s}`: number too large"))?;
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            other => return Err(format!("invalid size `{s}`: unknown unit `{other}` (use K, M, G or T)")),
        };
        n.checked_mul(1u64 << shift).ok_or_else(|| format!("invalid size `{s}`: too large"))
    }

    /// An octal mode such as `0644`, `644` or `0o755`; at most `07777`.
    pub fn mode(s: &str) -> Result<Mode, String> {
        let t = s.trim();
        let digits = t.strip_prefix("0o").unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(format!("invalid mode `{s}`: expected octal digits, e.g. `0644`"));
        }
        let m = u32::from_str_radix(digits, 8).map_err(|_| format!("invalid mode `{s}`"))?;
        if m > 0o7777 {
            return Err(format!("invalid mode `{s}`: larger than 07777"));
        }
        Ok(Mode(m))
    }

    /// A base image reference: `catalog:FAMILY@VERSION|RANGE|CHANNEL` or `oci-layout:PATH:TAG`.
    pub fn base_ref(s: &str) -> Result<Base, String> {
        if let Some(rest) = s.strip_prefix("catalog:") {
            let (family, sel) = rest.split_once('@').ok_or_else(|| {
                format!("invalid catalog reference `{s}`: expected `catalog:FAMILY@VERSION` or `catalog:FAMILY@CHANNEL`")
            })?;
            if !is_name(family) {
                return Err(format!(
                    "invalid catalog reference `{s}`: `{family}` is not a valid family name"
                ));
            }
            if sel.is_empty() {
                return Err(format!("invalid catalog reference `{s}`: missing version or channel after `@`"));
            }
            let starts_like_version = sel.starts_with(|c: char| c.is_ascii_digit() || "^~=<>*".contains(c));
            let selector = if starts_like_version {
                semver::VersionReq::parse(sel)
                    .map_err(|e| format!("invalid catalog reference `{s}`: bad version `{sel}`: {e}"))?;
                CatalogSelector::Version(sel.to_owned())
            } else if is_name(sel) {
                CatalogSelector::Channel(sel.to_owned())
            } else {
                return Err(format!(
                    "invalid catalog reference `{s}`: `{sel}` is neither a version nor a channel name"
                ));
            };
            return Ok(Base::Catalog { family: family.to_owned(), selector });
        }
        if let Some(rest) = s.strip_prefix("oci-layout:") {
            let (path, tag) = rest
                .rsplit_once(':')
                .filter(|(p, t)| !p.is_empty() && !t.is_empty() && !t.contains('/'))
                .ok_or_else(|| {
                    format!("invalid OCI layout reference `{s}`: expected `oci-layout:PATH:TAG`")
                })?;
            return Ok(Base::OciLayout { path: path.to_owned(), tag: tag.to_owned() });
        }
        Err(format!("invalid base reference `{s}`: expected `catalog:FAMILY@VERSION|CHANNEL` or `oci-layout:PATH:TAG`"))
    }

    /// A claimed contract: `NAME@REQ`, e.g. `base-os@^1`.
    pub fn contract_ref(s: &str) -> Result<ContractRef, String> {
        let (name, req) = s.split_once('@').ok_or_else(|| {
            format!("invalid contract `{s}`: expected `NAME@VERSION-RANGE`, e.g. `base-os@^1`")
        })?;
        if !is_name(name) {
            return Err(format!("invalid contract `{s}`: `{name}` is not a valid contract name"));
        }
        semver::VersionReq::parse(req)
            .map_err(|e| format!("invalid contract `{s}`: bad version range `{req}`: {e}"))?;
        Ok(ContractRef { name: name.to_owned(), req: req.to_owned() })
    }

    /// An output: `KIND` or `KIND:COMPRESSION`, e.g. `raw`, `qcow2:zstd`, `oci:gzip`.
    pub fn output(s: &str) -> Result<Output, String> {
        let (kind, comp) = match s.split_once(':') {
            Some((k, c)) => (k, Some(c)),
            None => (s, None),
        };
        let kind = match kind {
            "raw" => OutputKind::Raw,
            "qcow2" => OutputKind::Qcow2,
            "oci" => OutputKind::Oci,
            other => return Err(format!("unknown output `{other}`: expected `raw`, `qcow2` or `oci`")),
        };
        output_with(kind, comp)
    }

    /// An output of a known kind with an optional compression name.
    pub fn output_with(kind: OutputKind, comp: Option<&str>) -> Result<Output, String> {
        let allowed = kind.compressions();
        let compression = match comp {
            None => allowed[0],
            Some(c) => {
                let found = Compression::ALL.iter().find(|(n, _)| *n == c).map(|(_, v)| *v);
                match found {
                    Some(v) if allowed.contains(&v) => v,
                    _ => {
                        let names: Vec<&str> = Compression::ALL
                            .iter()
                            .filter(|(_, v)| allowed.contains(v))
                            .map(|(n, _)| *n)
                            .collect();
                        return Err(format!(
                            "compression `{c}` is not available for `{}` outputs (use {})",
                            kind.as_str(),
                            names.join(", ")
                        ));
                    }
                }
            }
        };
        Ok(Output { kind, compression })
    }

    /// A family, contract, channel or variable-like name: lowercase ASCII letters, digits, `-`, `_`, `.`,
    /// starting with a letter or digit, at most 128 bytes.
    pub fn is_name(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 128
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    }

    /// A Debian package name (Policy 5.6.1): lowercase letters, digits, `+`, `-`, `.`, at least two
    /// characters, starting with a letter or digit.
    pub fn is_package_name(s: &str) -> bool {
        s.len() >= 2
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    }

    /// A systemd unit name with its type suffix, e.g. `ssh.service`, `getty@ttyS0.service`.
    pub fn is_unit_name(s: &str) -> bool {
        const SUFFIXES: [&str; 11] = [
            ".service",
            ".socket",
            ".target",
            ".timer",
            ".mount",
            ".automount",
            ".path",
            ".slice",
            ".scope",
            ".swap",
            ".device",
        ];
        SUFFIXES.iter().any(|suf| s.len() > suf.len() && s.ends_with(suf))
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
    }

    /// A user or group name as `useradd` accepts it by default.
    pub fn is_account_name(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 32
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
    }

    /// An environment variable (or blueprint variable) name: ASCII letters, digits and `_`, not starting
    /// with a digit, e.g. `PATH`, `site_name`.
    pub fn is_env_name(s: &str) -> bool {
        s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    }

    /// A path relative to the blueprint folder that stays inside it: not absolute, and no `..` that leads
    /// out of the folder (`a/../b` is fine, `../b` is not).
    pub fn relative_path(s: &str) -> Result<(), String> {
        if s.is_empty() {
            return Err("empty path".to_owned());
        }
        if s.starts_with('/') {
            return Err(format!("`{s}` is absolute; name a file in the blueprint folder by a relative path"));
        }
        if s.contains('\0') {
            return Err(format!("`{}` contains a NUL character", s.escape_debug()));
        }
        let mut depth = 0usize;
        for part in s.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or_else(|| format!("`{s}` leads out of the blueprint folder"))?;
                }
                _ => depth += 1,
            }
        }
        Ok(())
    }

    /// An exposed port: `PORT` or `PORT/tcp` or `PORT/udp`, normalized to `PORT/PROTO` (default `tcp`).
    pub fn port(s: &str) -> Result<String, String> {
        let (num, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        if !matches!(proto, "tcp" | "udp") {
            return Err(format!("invalid port `{s}`: protocol `{proto}` is neither `tcp` nor `udp`"));
        }
        let valid = !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit());
        match num.parse::<u16>() {
            Ok(n) if valid && n > 0 => Ok(format!("{n}/{proto}")),
            _ => Err(format!(
                "invalid port `{s}`: expected a number from 1 to 65535, optionally with `/tcp` or `/udp`"
            )),
        }
    }

    /// `USER[:GROUP]` as `USER` and `--chown` take it: each part an account name or a numeric id.
    pub fn user_spec(s: &str) -> Result<String, String> {
        let part_ok =
            |p: &str| is_account_name(p) || (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let ok = match s.split_once(':') {
            Some((u, g)) => part_ok(u) && part_ok(g),
            None => part_ok(s),
        };
        if ok {
            Ok(s.to_owned())
        } else {
            Err(format!("`{s}` is not a user (expected `NAME`, `UID`, or either followed by `:GROUP`)"))
        }
    }

    /// An RFC 1123 host name: dot-separated labels of letters, digits and `-`, each 1 to 63 characters, not
    /// starting or ending with `-`.
    pub fn is_hostname(s: &str) -> bool {
        s.len() <= 253
            && s.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    }

    /// A locale name such as `C.UTF-8` or `en_US.UTF-8`.
    pub fn is_locale(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b))
    }

    /// A time zone: `UTC`, or `Area/City` (more parts allowed, e.g. `America/Argentina/Salta`, `Etc/GMT+5`).
    pub fn is_timezone(s: &str) -> bool {
        if s == "UTC" {
            return true;
        }
        let parts: Vec<&str> = s.split('/').collect();
        parts.len() >= 2
            && parts.iter().all(|p| {
                p.starts_with(|c: char| c.is_ascii_alphabetic())
                    && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+-".contains(&b))
            })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn users_hosts_locales_and_time_zones() {
            assert_eq!(user_spec("www-data:adm"), Ok("www-data:adm".to_owned()));
            for good in ["1000", "app:1000", "_svc"] {
                assert!(user_spec(good).is_ok(), "{good}");
            }
            for bad in ["", "Root", "a:", ":g", "a:b:c"] {
                assert!(user_spec(bad).is_err(), "{bad}");
            }
            assert!(is_hostname("web-1.example.org"));
            for bad in ["-web", "web-", "a..b", "a_b", ""] {
                assert!(!is_hostname(bad), "{bad}");
            }
            assert!(!is_hostname(&"a".repeat(64)));
            assert!(is_locale("en_US.UTF-8") && is_locale("C.UTF-8") && is_locale("de_DE@euro"));
            assert!(!is_locale("en US") && !is_locale(""));
            for good in ["UTC", "Etc/UTC", "Etc/GMT+5", "America/Argentina/Salta"] {
                assert!(is_timezone(good), "{good}");
            }
            for bad in ["Berlin", "Europe/../etc", "/Europe/Berlin", "Europe/", "Etc/1"] {
                assert!(!is_timezone(bad), "{bad}");
            }
        }

        #[test]
        fn sizes() {
            assert_eq!(size("512M"), Ok(512 << 20));
            assert_eq!(size("4GiB"), Ok(4 << 30));
            assert_eq!(size("1024"), Ok(1024));
            assert!(size("4X").is_err());
            assert!(size("G").is_err());
            assert!(size("99999999999T").is_err());
        }

        #[test]
        fn modes() {
            assert_eq!(mode("0644"), Ok(Mode(0o644)));
            assert_eq!(mode("755"), Ok(Mode(0o755)));
            assert!(mode("0999").is_err());
            assert!(mode("17777").is_err());
        }

        #[test]
        fn base_refs() {
            assert_eq!(
                base_ref("catalog:debian-minimal@stable"),
                Ok(Base::Catalog {
                    family: "debian-minimal".into(),
                    selector: CatalogSelector::Channel("stable".into())
                })
            );
            assert_eq!(
                base_ref("catalog:debian-minimal@^1.2"),
                Ok(Base::Catalog {
                    family: "debian-minimal".into(),
                    selector: CatalogSelector::Version("^1.2".into())
                })
            );
            assert_eq!(
                base_ref("oci-layout:../out/oci:1.0.0"),
                Ok(Base::OciLayout { path: "../out/oci".into(), tag: "1.0.0".into() })
            );
            assert!(base_ref("catalog:x").is_err());
            assert!(base_ref("catalog:x@1.x.y.z").is_err());
            assert!(base_ref("docker://x").is_err());
        }

        #[test]
        fn env_names_paths_and_ports() {
            assert!(is_env_name("PATH") && is_env_name("_x1") && is_env_name("site_name"));
            assert!(!is_env_name("") && !is_env_name("1A") && !is_env_name("A-B") && !is_env_name("A=B"));
            assert_eq!(relative_path("files/motd"), Ok(()));
            assert_eq!(relative_path("a/../b"), Ok(()));
            assert!(relative_path("../b").is_err());
            assert!(relative_path("a/../../b").is_err());
            assert!(relative_path("/etc/motd").is_err());
            assert!(relative_path("").is_err());
            assert_eq!(port("80"), Ok("80/tcp".to_owned()));
            assert_eq!(port("53/udp"), Ok("53/udp".to_owned()));
            assert!(port("0").is_err());
            assert!(port("70000").is_err());
            assert!(port("+80").is_err());
            assert!(port("80/sctp").is_err());
        }

        #[test]
        fn outputs_and_contracts() {
            assert_eq!(output("qcow2:zstd").unwrap().compression, Compression::Zstd);
            assert_eq!(output("oci").unwrap().compression, Compression::Gzip);
            assert!(output("raw:zstd").is_err());
            assert!(output("iso").is_err());
            assert_eq!(contract_ref("base-os@^1").unwrap().req, "^1");
            assert!(contract_ref("base-os").is_err());
            assert!(contract_ref("base-os@one").is_err());
        }
    }
}
