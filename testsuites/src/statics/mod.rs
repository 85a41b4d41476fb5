//! Static checks: requirements decided by reading the image's files from the artifact itself (through a
//! [`RootFs`] over the raw disk's ext4 or the OCI layers) and, for OCI images, its configuration.
//!
//! [`check`] gives, for one [`Check`], an [`Outcome`] (Pass, Skip with the reason, or Fail with what was
//! expected and what was found) or a [`CheckError`] when the image could not be read. Facts read from the
//! image (passwd, group, dpkg status, unit links) are read once per [`StaticContext`].

pub mod elf;
pub mod facts;

use std::{cell::OnceCell, collections::BTreeMap, time::Instant};

use kiln_contract::{model::ConfigFormat, Check, FileKind, Match, PackageState, ServiceState};
use kiln_systemd::{Found, ServiceError, UnitSource, UnitState};

use crate::runtime::evaluate::glob_match;
use crate::{
    image::{Entry, EntryKind, ImageConfig, ImageError, RootFs},
    outcome::{CheckError, CheckResult, Outcome},
};
use facts::{DpkgPackage, GroupEntry, PasswdEntry};

/// Where libraries are looked up by soname (Debian amd64, merged /usr: /lib is /usr/lib).
pub const LIBRARY_DIRS: [&str; 6] =
    ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib"];

/// One image under static test, with the facts read from it so far.
pub struct StaticContext<'a> {
    fs: &'a dyn RootFs,
    oci: Option<&'a ImageConfig>,
    passwd: OnceCell<Vec<PasswdEntry>>,
    group: OnceCell<Vec<GroupEntry>>,
    dpkg: OnceCell<Result<Vec<DpkgPackage>, CheckError>>,
    entries: OnceCell<Result<Vec<Entry>, CheckError>>,
}

impl std::fmt::Debug for StaticContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticContext").field("artifact", &self.fs.artifact()).finish_non_exhaustive()
    }
}

fn image_err(e: ImageError) -> CheckError {
    CheckError::new(e.to_string())
}

impl<'a> StaticContext<'a> {
    /// An image's root file system, and its OCI configuration when it is an OCI image.
    pub fn new(fs: &'a dyn RootFs, oci: Option<&'a ImageConfig>) -> Self {
        Self {
            fs,
            oci,
            passwd: OnceCell::new(),
            group: OnceCell::new(),
            dpkg: OnceCell::new(),
            entries: OnceCell::new(),
        }
    }

    /// A text file of the image, `None` when absent.
    fn text(&self, path: &str) -> Result<Option<String>, CheckError> {
        match self.fs.metadata_followed(path).map_err(image_err)? {
            Some(e) if e.is_file() => {
                let bytes = self.fs.read_file(&e).map_err(image_err)?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            _ => Ok(None),
        }
    }

    fn passwd(&self) -> Result<&[PasswdEntry], CheckError> {
        if self.passwd.get().is_none() {
            let v = facts::passwd(&self.text("/etc/passwd")?.unwrap_or_default());
            let _ = self.passwd.set(v);
        }
        Ok(self.passwd.get().map(Vec::as_slice).unwrap_or_default())
    }

    fn group(&self) -> Result<&[GroupEntry], CheckError> {
        if self.group.get().is_none() {
            let v = facts::group(&self.text("/etc/group")?.unwrap_or_default());
            let _ = self.group.set(v);
        }
        Ok(self.group.get().map(Vec::as_slice).unwrap_or_default())
    }

    fn dpkg(&self) -> Result<&[DpkgPackage], CheckError> {
        let r = self.dpkg.get_or_init(|| match self.text("/var/lib/dpkg/status") {
            Ok(Some(t)) => Ok(facts::dpkg_status(&t)),
            Ok(None) => Err(CheckError::new("the image has no dpkg database (/var/lib/dpkg/status)")),
            Err(e) => Err(e),
        });
        r.as_deref().map_err(Clone::clone)
    }

    fn entries(&self) -> Result<&[Entry], CheckError> {
        let r = self.entries.get_or_init(|| self.fs.entries().map_err(image_err));
        r.as_deref().map_err(Clone::clone)
    }

    fn user_name(&self, uid: u32) -> String {
        let name = self.passwd().ok().and_then(|p| p.iter().find(|e| e.uid == uid).map(|e| e.name.clone()));
        name.map_or_else(|| uid.to_string(), |n| format!("{n} ({uid})"))
    }

    fn group_name(&self, gid: u32) -> String {
        let name = self.group().ok().and_then(|g| g.iter().find(|e| e.gid == gid).map(|e| e.name.clone()));
        name.map_or_else(|| gid.to_string(), |n| format!("{n} ({gid})"))
    }

    /// A user given by name or number, as a uid.
    fn uid_of(&self, spec: &str) -> Result<Option<u32>, CheckError> {
        if let Ok(n) = spec.parse() {
            return Ok(Some(n));
        }
        Ok(self.passwd()?.iter().find(|e| e.name == spec).map(|e| e.uid))
    }

    fn gid_of(&self, spec: &str) -> Result<Option<u32>, CheckError> {
        if let Ok(n) = spec.parse() {
            return Ok(Some(n));
        }
        Ok(self.group()?.iter().find(|e| e.name == spec).map(|e| e.gid))
    }
}

/// Checks one requirement, timing it.
pub fn check_timed(ctx: &StaticContext<'_>, id: &str, c: &Check) -> CheckResult {
    let started = Instant::now();
    let outcome = check(ctx, c);
    CheckResult { id: id.to_owned(), kind: c.kind().to_owned(), outcome, duration: started.elapsed() }
}

/// Decides one static check. A runtime check is a Skip here (it is decided in a booted VM).
pub fn check(ctx: &StaticContext<'_>, c: &Check) -> Result<Outcome, CheckError> {
    match c {
        Check::OsRelease { field, value } => os_release(ctx, field, value),
        Check::Package { name, state } => package(ctx, name, state),
        Check::File { path, exists, file_type, mode, owner, group, sha256, content } => file(
            ctx,
            FileCheck {
                path,
                exists: *exists,
                file_type: *file_type,
                mode: *mode,
                owner: owner.as_deref(),
                group: group.as_deref(),
                sha256: sha256.as_deref(),
                content: content.as_deref(),
            },
        ),
        Check::User { name, uid, home, shell, groups } => {
            user(ctx, name, *uid, home.as_deref(), shell.as_deref(), groups)
        }
        Check::Group { name, gid, members } => group(ctx, name, *gid, members),
        Check::Service { unit, state } => service(ctx, unit, *state),
        Check::Config { format, key, value } => config(ctx, *format, key, value),
        Check::Library { soname, symbol_versions } => library(ctx, soname, symbol_versions),
        Check::SpecialFiles { setuid, setgid, world_writable, allow } => {
            special_files(ctx, *setuid, *setgid, *world_writable, allow)
        }
        Check::OciConfig { entrypoint, cmd, env, labels, exposed_ports, user } => match ctx.oci {
            None => {
                Ok(Outcome::skip("the artifact is a disk image; OCI configuration applies to OCI images"))
            }
            Some(cfg) => Ok(oci_config(cfg, entrypoint, cmd, env, labels, exposed_ports, user.as_deref())),
        },
        other => Ok(Outcome::skip(format!("`{}` is a runtime check, decided in a booted VM", other.kind()))),
    }
}

/// Whether `found` satisfies `m`; a bad regular expression is the contract's error (parsers reject them).
pub fn matches(m: &Match, found: &str) -> Result<bool, CheckError> {
    match m {
        Match::Equals(s) => Ok(found == s),
        Match::Regex(r) => regex::Regex::new(r)
            .map(|re| re.is_match(found))
            .map_err(|e| CheckError::new(format!("bad regular expression `{r}`: {e}"))),
    }
}

/// How a match reads in evidence: `= "debian"` or `~ /^deb/`.
pub fn describe(m: &Match) -> String {
    match m {
        Match::Equals(s) => format!("\"{s}\""),
        Match::Regex(r) => format!("a value matching /{r}/"),
    }
}

fn os_release(ctx: &StaticContext<'_>, field: &str, value: &Match) -> Result<Outcome, CheckError> {
    let (path, text) = match ctx.text("/etc/os-release")? {
        Some(t) => ("/etc/os-release", t),
        None => match ctx.text("/usr/lib/os-release")? {
            Some(t) => ("/usr/lib/os-release", t),
            None => return Ok(Outcome::fail(format!("{field}={}", describe(value)), "no os-release file")),
        },
    };
    let fields = facts::os_release(&text);
    let expected = format!("{field}={} in {path}", describe(value));
    Ok(match fields.get(field) {
        Some(v) => Outcome::pass_if(matches(value, v)?, expected, format!("{field}=\"{v}\"")),
        None => Outcome::fail(expected, format!("no {field} field")),
    })
}

fn package(ctx: &StaticContext<'_>, name: &str, state: &PackageState) -> Result<Outcome, CheckError> {
    let installed: Vec<&DpkgPackage> =
        ctx.dpkg()?.iter().filter(|p| p.name == name && p.is_installed()).collect();
    let listing = |ps: &[&DpkgPackage]| {
        ps.iter()
            .map(|p| format!("{} {} ({})", p.name, p.version, p.architecture))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(match state {
        PackageState::Absent => Outcome::pass_if(
            installed.is_empty(),
            format!("package {name} not installed"),
            format!("installed: {}", listing(&installed)),
        ),
        PackageState::Present { version: None } => Outcome::pass_if(
            !installed.is_empty(),
            format!("package {name} installed"),
            "not installed".to_owned(),
        ),
        PackageState::Present { version: Some(req) } => {
            let constraint = kiln_contract::parse::version_constraint(req).map_err(CheckError::new)?;
            let expected = format!("package {name} ({constraint}) installed");
            if installed.is_empty() {
                Outcome::fail(expected, "not installed")
            } else {
                let ok = installed
                    .iter()
                    .any(|p| kiln_debian::Version::parse(&p.version).is_ok_and(|v| constraint.matches(&v)));
                Outcome::pass_if(ok, expected, format!("installed: {}", listing(&installed)))
            }
        }
    })
}

struct FileCheck<'c> {
    path: &'c str,
    exists: bool,
    file_type: Option<FileKind>,
    mode: Option<u32>,
    owner: Option<&'c str>,
    group: Option<&'c str>,
    sha256: Option<&'c str>,
    content: Option<&'c str>,
}

fn kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::File => "file",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
    }
}

fn file(ctx: &StaticContext<'_>, f: FileCheck<'_>) -> Result<Outcome, CheckError> {
    // A symlink is checked as such when asked for one; otherwise what it leads to.
    let entry = if f.file_type == Some(FileKind::Symlink) {
        ctx.fs.metadata(f.path).map_err(image_err)?
    } else {
        ctx.fs.metadata_followed(f.path).map_err(image_err)?
    };
    let Some(entry) = entry else {
        return Ok(Outcome::pass_if(!f.exists, format!("{} exists", f.path), "nothing there"));
    };
    if !f.exists {
        return Ok(Outcome::fail(format!("no {}", f.path), format!("a {} is there", entry.kind.name())));
    }
    let mut expected = Vec::new();
    let mut found = Vec::new();
    if let Some(k) = f.file_type {
        let ok = matches!(
            (k, &entry.kind),
            (FileKind::File, EntryKind::File)
                | (FileKind::Directory, EntryKind::Dir)
                | (FileKind::Symlink, EntryKind::Symlink { .. })
        );
        if !ok {
            expected.push(format!("a {}", kind_name(k)));
            found.push(format!("a {}", entry.kind.name()));
        }
    }
    if let Some(m) = f.mode {
        if entry.mode & 0o7777 != m & 0o7777 {
            expected.push(format!("mode {:04o}", m));
            found.push(format!("mode {:04o}", entry.mode & 0o7777));
        }
    }
    if let Some(o) = f.owner {
        match ctx.uid_of(o)? {
            Some(uid) if uid == entry.uid => {}
            want => {
                expected.push(format!(
                    "owner {}",
                    want.map_or_else(|| format!("{o} (no such user)"), |u| ctx.user_name(u))
                ));
                found.push(format!("owner {}", ctx.user_name(entry.uid)));
            }
        }
    }
    if let Some(g) = f.group {
        match ctx.gid_of(g)? {
            Some(gid) if gid == entry.gid => {}
            want => {
                expected.push(format!(
                    "group {}",
                    want.map_or_else(|| format!("{g} (no such group)"), |x| ctx.group_name(x))
                ));
                found.push(format!("group {}", ctx.group_name(entry.gid)));
            }
        }
    }
    if f.sha256.is_some() || f.content.is_some() {
        if !entry.is_file() {
            expected.push("a regular file (to read)".to_owned());
            found.push(format!("a {}", entry.kind.name()));
        } else {
            let data = ctx.fs.read_file(&entry).map_err(image_err)?;
            if let Some(want) = f.sha256 {
                use sha2::Digest as _;
                let got = hex::encode(sha2::Sha256::digest(&data));
                let want = want.trim_start_matches("sha256:");
                if !got.eq_ignore_ascii_case(want) {
                    expected.push(format!("sha256 {want}"));
                    found.push(format!("sha256 {got}"));
                }
            }
            if let Some(re) = f.content {
                let text = String::from_utf8_lossy(&data);
                if !matches(&Match::Regex(re.to_owned()), &text)? {
                    expected.push(format!("content matching /{re}/"));
                    found.push(format!("content: {}", excerpt(&text)));
                }
            }
        }
    }
    Ok(if expected.is_empty() {
        Outcome::Pass
    } else {
        Outcome::fail(
            format!("{}: {}", f.path, expected.join(", ")),
            format!("{}: {}", entry.path, found.join(", ")),
        )
    })
}

/// The first lines of a text, for evidence.
fn excerpt(text: &str) -> String {
    let mut s: String = text.lines().take(5).collect::<Vec<_>>().join("\\n");
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    format!("\"{s}\"")
}

fn user(
    ctx: &StaticContext<'_>,
    name: &str,
    uid: Option<u32>,
    home: Option<&str>,
    shell: Option<&str>,
    groups: &[String],
) -> Result<Outcome, CheckError> {
    let Some(u) = ctx.passwd()?.iter().find(|e| e.name == name).cloned() else {
        return Ok(Outcome::fail(format!("user {name} in /etc/passwd"), "no such user"));
    };
    let mut expected = Vec::new();
    let mut found = Vec::new();
    if let Some(want) = uid.filter(|w| *w != u.uid) {
        expected.push(format!("uid {want}"));
        found.push(format!("uid {}", u.uid));
    }
    if let Some(want) = home.filter(|w| *w != u.home) {
        expected.push(format!("home {want}"));
        found.push(format!("home {}", u.home));
    }
    if let Some(want) = shell.filter(|w| *w != u.shell) {
        expected.push(format!("shell {want}"));
        found.push(format!("shell {}", u.shell));
    }
    let all_groups = ctx.group()?;
    let member_of: Vec<&str> = all_groups
        .iter()
        .filter(|g| g.gid == u.gid || g.members.iter().any(|m| m == name))
        .map(|g| g.name.as_str())
        .collect();
    let missing: Vec<&String> = groups.iter().filter(|g| !member_of.contains(&g.as_str())).collect();
    if !missing.is_empty() {
        expected.push(format!("member of {}", groups.join(", ")));
        found.push(format!("member of {}", member_of.join(", ")));
    }
    Ok(if expected.is_empty() {
        Outcome::Pass
    } else {
        Outcome::fail(
            format!("user {name}: {}", expected.join(", ")),
            format!("user {name}: {}", found.join(", ")),
        )
    })
}

fn group(
    ctx: &StaticContext<'_>,
    name: &str,
    gid: Option<u32>,
    members: &[String],
) -> Result<Outcome, CheckError> {
    let Some(g) = ctx.group()?.iter().find(|e| e.name == name).cloned() else {
        return Ok(Outcome::fail(format!("group {name} in /etc/group"), "no such group"));
    };
    let mut expected = Vec::new();
    let mut found = Vec::new();
    if let Some(want) = gid.filter(|w| *w != g.gid) {
        expected.push(format!("gid {want}"));
        found.push(format!("gid {}", g.gid));
    }
    // Members: listed in the group, or having it as their primary group.
    let primary: Vec<String> =
        ctx.passwd()?.iter().filter(|u| u.gid == g.gid).map(|u| u.name.clone()).collect();
    let missing: Vec<&String> =
        members.iter().filter(|m| !g.members.contains(m) && !primary.contains(m)).collect();
    if !missing.is_empty() {
        expected.push(format!("members {}", members.join(", ")));
        let mut all: Vec<String> = g.members.clone();
        all.extend(primary);
        found.push(format!("members {}", if all.is_empty() { "(none)".to_owned() } else { all.join(", ") }));
    }
    Ok(if expected.is_empty() {
        Outcome::Pass
    } else {
        Outcome::fail(
            format!("group {name}: {}", expected.join(", ")),
            format!("group {name}: {}", found.join(", ")),
        )
    })
}

/// Unit files read from the image, for kiln-systemd.
struct ImageUnits<'c, 'a>(&'c StaticContext<'a>);

impl UnitSource for ImageUnits<'_, '_> {
    fn find(&self, name: &str) -> Result<Option<Found>, ServiceError> {
        let err = |e: ImageError| ServiceError::Read { unit: name.to_owned(), message: e.to_string() };
        for dir in kiln_systemd::UNIT_PATHS {
            let path = format!("/{dir}/{name}");
            let Some(entry) = self.0.fs.metadata(&path).map_err(err)? else { continue };
            if let Some(target) = entry.symlink_target() {
                if target == "/dev/null" {
                    return Ok(Some(Found::Masked));
                }
                if dir == kiln_systemd::ETC_UNITS {
                    continue;
                }
            }
            let Some(followed) = self.0.fs.metadata_followed(&path).map_err(err)? else { continue };
            if !followed.is_file() {
                continue;
            }
            let text = String::from_utf8_lossy(&self.0.fs.read_file(&followed).map_err(err)?).into_owned();
            return Ok(Some(Found::File { path, text }));
        }
        Ok(None)
    }
}

/// Symlinks under /etc/systemd/system: (path, target).
fn etc_unit_links(ctx: &StaticContext<'_>) -> Result<Vec<(String, String)>, CheckError> {
    let prefix = format!("/{}/", kiln_systemd::ETC_UNITS);
    Ok(ctx
        .entries()?
        .iter()
        .filter(|e| e.path.starts_with(&prefix))
        .filter_map(|e| e.symlink_target().map(|t| (e.path.clone(), t.to_owned())))
        .collect())
}

fn service(ctx: &StaticContext<'_>, unit: &str, want: ServiceState) -> Result<Outcome, CheckError> {
    let want_str = match want {
        ServiceState::Enabled => "enabled",
        ServiceState::Disabled => "disabled",
        ServiceState::Masked => "masked",
    };
    let links = etc_unit_links(ctx)?;
    let expected = format!("{unit} {want_str}");
    match kiln_systemd::unit_state(unit, &ImageUnits(ctx), &links) {
        Ok(state) => {
            let ok = matches!(
                (want, state),
                (ServiceState::Enabled, UnitState::Enabled)
                    | (ServiceState::Disabled, UnitState::Disabled | UnitState::Static)
                    | (ServiceState::Masked, UnitState::Masked)
            );
            Ok(Outcome::pass_if(ok, expected, format!("{unit} {}", state.as_str())))
        }
        Err(ServiceError::NotFound(_)) => Ok(Outcome::fail(expected, format!("no unit file for {unit}"))),
        Err(e) => Err(CheckError::new(e.to_string())),
    }
}

fn config(
    ctx: &StaticContext<'_>,
    format: ConfigFormat,
    key: &str,
    value: &Match,
) -> Result<Outcome, CheckError> {
    let found = match format {
        ConfigFormat::Sshd => {
            let read = |p: &str| ctx.text(p).ok().flatten();
            let glob = |pattern: &str| -> Vec<String> {
                let dir = pattern.rsplit_once('/').map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
                let mut out: Vec<String> = ctx
                    .fs
                    .read_dir(dir)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| e.path)
                    .filter(|p| glob_match(pattern, p))
                    .collect();
                out.sort();
                out
            };
            facts::sshd_value(key, &read, &glob)
        }
        ConfigFormat::Sysctl => {
            let mut files = Vec::new();
            for dir in facts::SYSCTL_DIRS {
                let Ok(entries) = ctx.fs.read_dir(dir) else { continue };
                for e in entries {
                    let name = e.file_name().to_owned();
                    if let Some(text) = ctx.text(&format!("{dir}/{name}"))? {
                        files.push((dir.to_owned(), name, text));
                    }
                }
            }
            let conf = ctx.text("/etc/sysctl.conf")?;
            facts::sysctl_value(key, &files, conf.as_deref())
        }
    };
    let what = match format {
        ConfigFormat::Sshd => "sshd_config",
        ConfigFormat::Sysctl => "sysctl.d",
    };
    let expected = format!("{what} {key} = {}", describe(value));
    Ok(match found {
        Some((v, source)) => {
            Outcome::pass_if(matches(value, &v)?, expected, format!("{key} = \"{v}\" (from {source})"))
        }
        None => Outcome::fail(expected, format!("{key} is not set")),
    })
}

fn library(ctx: &StaticContext<'_>, soname: &str, versions: &[String]) -> Result<Outcome, CheckError> {
    let mut location = None;
    for dir in LIBRARY_DIRS {
        let path = format!("{dir}/{soname}");
        if let Some(e) = ctx.fs.metadata_followed(&path).map_err(image_err)? {
            if e.is_file() {
                location = Some((path, e));
                break;
            }
        }
    }
    let Some((path, entry)) = location else {
        return Ok(Outcome::fail(
            format!("{soname} in the library directories"),
            format!("not found in {}", LIBRARY_DIRS.join(", ")),
        ));
    };
    let data = ctx.fs.read_file(&entry).map_err(image_err)?;
    let lib = match elf::library_facts(&data) {
        Ok(f) => f,
        Err(e) => {
            return Ok(Outcome::fail(format!("{soname}: an ELF shared library"), format!("{path}: {e}")))
        }
    };
    let missing: Vec<&String> = versions.iter().filter(|v| !lib.versions.contains(v)).collect();
    Ok(if missing.is_empty() {
        Outcome::Pass
    } else {
        let newest: Vec<&String> = lib.versions.iter().rev().take(5).collect();
        Outcome::fail(
            format!("{soname} defining {}", versions.join(", ")),
            format!(
                "{path} ({}) lacks {}; its newest versions: {}",
                entry.path,
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                newest.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

fn special_files(
    ctx: &StaticContext<'_>,
    setuid: bool,
    setgid: bool,
    world_writable: bool,
    allow: &[String],
) -> Result<Outcome, CheckError> {
    let allowed = |p: &str| allow.iter().any(|a| glob_match(a, p));
    let mut offenders = Vec::new();
    for e in ctx.entries()? {
        if allowed(&e.path) {
            continue;
        }
        let m = e.mode;
        let mut why = Vec::new();
        if setuid && e.is_file() && m & 0o4000 != 0 {
            why.push("setuid");
        }
        if setgid && e.is_file() && m & 0o2000 != 0 {
            why.push("setgid");
        }
        let sticky_dir = e.is_dir() && m & 0o1000 != 0;
        if world_writable && m & 0o002 != 0 && e.symlink_target().is_none() && !sticky_dir {
            why.push("world-writable");
        }
        if !why.is_empty() {
            offenders.push(format!("{} ({:04o} {})", e.path, m & 0o7777, why.join("+")));
        }
    }
    let mut kinds = Vec::new();
    for (on, k) in [(setuid, "setuid"), (setgid, "setgid"), (world_writable, "world-writable")] {
        if on {
            kinds.push(k);
        }
    }
    let expected = format!("no {} files outside the allowlist", kinds.join("/"));
    Ok(if offenders.is_empty() {
        Outcome::Pass
    } else {
        let n = offenders.len();
        let mut shown: Vec<String> = offenders.into_iter().take(20).collect();
        if n > shown.len() {
            shown.push(format!("and {} more", n - 20));
        }
        Outcome::fail(expected, format!("{n}: {}", shown.join(", ")))
    })
}

#[allow(clippy::too_many_arguments)]
fn oci_config(
    cfg: &ImageConfig,
    entrypoint: &Option<Vec<String>>,
    cmd: &Option<Vec<String>>,
    env: &BTreeMap<String, Match>,
    labels: &BTreeMap<String, Match>,
    exposed_ports: &[String],
    user: Option<&str>,
) -> Outcome {
    let mut expected = Vec::new();
    let mut found = Vec::new();
    let show = |v: &Option<Vec<String>>| v.as_ref().map_or_else(|| "none".to_owned(), |v| format!("{v:?}"));
    if entrypoint.is_some() && entrypoint != &cfg.entrypoint {
        expected.push(format!("entrypoint {}", show(entrypoint)));
        found.push(format!("entrypoint {}", show(&cfg.entrypoint)));
    }
    if cmd.is_some() && cmd != &cfg.cmd {
        expected.push(format!("cmd {}", show(cmd)));
        found.push(format!("cmd {}", show(&cfg.cmd)));
    }
    for (k, m) in env {
        let got = cfg.env_var(k);
        let ok = got.is_some_and(|v| matches(m, v).unwrap_or(false));
        if !ok {
            expected.push(format!("env {k}={}", describe(m)));
            found.push(got.map_or_else(|| format!("{k} unset"), |v| format!("{k}=\"{v}\"")));
        }
    }
    for (k, m) in labels {
        let got = cfg.labels.get(k);
        let ok = got.is_some_and(|v| matches(m, v).unwrap_or(false));
        if !ok {
            expected.push(format!("label {k}={}", describe(m)));
            found.push(got.map_or_else(|| format!("no label {k}"), |v| format!("{k}=\"{v}\"")));
        }
    }
    for p in exposed_ports {
        if !cfg.exposed_ports.contains(p) {
            expected.push(format!("port {p} exposed"));
            found.push(format!(
                "exposed: {}",
                if cfg.exposed_ports.is_empty() { "none".to_owned() } else { cfg.exposed_ports.join(", ") }
            ));
        }
    }
    if let Some(u) = user {
        if cfg.user.as_deref() != Some(u) {
            expected.push(format!("user {u}"));
            found.push(format!("user {}", cfg.user.as_deref().unwrap_or("(unset: root)")));
        }
    }
    if expected.is_empty() {
        Outcome::Pass
    } else {
        Outcome::fail(expected.join(", "), found.join(", "))
    }
}
