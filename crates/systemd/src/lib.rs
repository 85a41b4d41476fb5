//! systemd unit states in a root tree: enable, disable and mask, exactly as `systemctl --root=TREE` would,
//! from the units' `[Install]` sections (WantedBy=, RequiredBy=, UpheldBy=, Alias=, Also=, DefaultInstance=).
//!
//! The logic is pure: [`plan_enable`] and friends read unit files through [`UnitSource`] and return the
//! symlinks to create or remove; [`apply`] carries them out in a tree. kiln does not run `systemctl` itself
//! because the image may not have it at that point, and the host's may differ from the image's.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Where systemd looks for unit files, in priority order, relative to the root (as systemctl --root does
/// for the system manager; `/run` is left out: nothing is running).
pub const UNIT_PATHS: [&str; 4] =
    ["etc/systemd/system", "usr/local/lib/systemd/system", "lib/systemd/system", "usr/lib/systemd/system"];

/// The directory enablement symlinks go into.
pub const ETC_UNITS: &str = "etc/systemd/system";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceError {
    #[error("unit `{0}` not found in the image (looked in /etc/systemd/system, /lib/systemd/system, /usr/lib/systemd/system)")]
    NotFound(String),
    #[error("unit `{unit}` is masked; it cannot be enabled")]
    Masked { unit: String },
    #[error("unit `{unit}`: template without an instance and without DefaultInstance=")]
    NoInstance { unit: String },
    #[error("cannot read unit `{unit}`: {message}")]
    Read { unit: String, message: String },
    #[error("cannot change `{path}`: {message}")]
    Write { path: String, message: String },
}

/// Read access to the unit files of a tree.
pub trait UnitSource {
    /// The unit file's absolute path in the image (e.g. `/lib/systemd/system/ssh.service`) and its text, for
    /// the first unit path that has `name`. A symlink to `/dev/null` is reported as masked.
    fn find(&self, name: &str) -> Result<Option<Found>, ServiceError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    File { path: String, text: String },
    Masked,
}

/// A change to the tree, paths absolute in the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Link { at: String, target: String },
    Remove { at: String },
}

/// The `[Install]` section of a unit file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub upheld_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,
    pub default_instance: Option<String>,
}

impl Install {
    pub fn is_empty(&self) -> bool {
        self.wanted_by.is_empty()
            && self.required_by.is_empty()
            && self.upheld_by.is_empty()
            && self.alias.is_empty()
            && self.also.is_empty()
    }
}

/// Parse the `[Install]` section: list settings split on whitespace, an empty assignment resets the list,
/// line continuations with `\`, comments with `#` or `;`.
pub fn parse_install(text: &str) -> Install {
    let mut install = Install::default();
    let mut in_install = false;
    let mut logical = String::new();
    let mut lines: Vec<String> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end();
        if let Some(stripped) = line.strip_suffix('\\') {
            logical.push_str(stripped);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        lines.push(std::mem::take(&mut logical));
    }
    if !logical.is_empty() {
        lines.push(logical);
    }
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let list = match key.trim() {
            "WantedBy" => &mut install.wanted_by,
            "RequiredBy" => &mut install.required_by,
            "UpheldBy" => &mut install.upheld_by,
            "Alias" => &mut install.alias,
            "Also" => &mut install.also,
            "DefaultInstance" => {
                let v = value.trim();
                install.default_instance = (!v.is_empty()).then(|| v.to_owned());
                continue;
            }
            _ => continue,
        };
        let value = value.trim();
        if value.is_empty() {
            list.clear();
        } else {
            list.extend(value.split_whitespace().map(str::to_owned));
        }
    }
    install
}

/// `name@instance.type` → (`name@.type`, Some(instance)); a plain unit → (itself, None).
fn template_of(unit: &str) -> (String, Option<String>) {
    if let Some((prefix, rest)) = unit.split_once('@') {
        if let Some(dot) = rest.rfind('.') {
            let (instance, suffix) = rest.split_at(dot);
            if !instance.is_empty() {
                return (format!("{prefix}@{suffix}"), Some(instance.to_owned()));
            }
        }
    }
    (unit.to_owned(), None)
}

/// Expand the specifiers systemctl expands in [Install] values (`%n %N %p %i %j %%`).
fn expand(value: &str, unit: &str) -> String {
    let (prefix, instance) = match unit.split_once('@') {
        Some((p, rest)) => {
            (p.to_owned(), rest.rsplit_once('.').map(|(i, _)| i.to_owned()).unwrap_or_default())
        }
        None => (unit.rsplit_once('.').map(|(p, _)| p.to_owned()).unwrap_or_default(), String::new()),
    };
    let name_no_suffix = unit.rsplit_once('.').map(|(n, _)| n.to_owned()).unwrap_or_else(|| unit.to_owned());
    let last = prefix.rsplit('-').next().unwrap_or(&prefix).to_owned();
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(unit),
            Some('N') => out.push_str(&name_no_suffix),
            Some('p') => out.push_str(&prefix),
            Some('i') => out.push_str(&instance),
            Some('j') => out.push_str(&last),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// A unit's file: its own, else (for an instance `name@i.type`) its template's. Also the instance, if any.
fn find_unit(src: &dyn UnitSource, unit: &str) -> Result<(Option<Found>, Option<String>), ServiceError> {
    let (template, instance) = template_of(unit);
    let found = match src.find(unit)? {
        Some(f) => Some(f),
        None if instance.is_some() => src.find(&template)?,
        None => None,
    };
    Ok((found, instance))
}

/// The symlinks `systemctl enable UNIT...` creates.
pub fn plan_enable(
    units: &[String],
    src: &dyn UnitSource,
) -> Result<(Vec<Change>, Vec<String>), ServiceError> {
    let mut changes = BTreeSet::new();
    let mut warnings = Vec::new();
    let mut seen = BTreeSet::new();
    let mut queue: Vec<String> = units.to_vec();
    while let Some(unit) = queue.pop() {
        if !seen.insert(unit.clone()) {
            continue;
        }
        let (found, _) = find_unit(src, &unit)?;
        let (path, text) = match found {
            Some(Found::File { path, text }) => (path, text),
            Some(Found::Masked) => return Err(ServiceError::Masked { unit }),
            None => return Err(ServiceError::NotFound(unit)),
        };
        let install = parse_install(&text);
        let is_template = unit.contains("@.");
        let instance_name = if is_template {
            match &install.default_instance {
                Some(i) => Some(unit.replacen("@.", &format!("@{i}."), 1)),
                None if install.wanted_by.is_empty()
                    && install.required_by.is_empty()
                    && install.upheld_by.is_empty() =>
                {
                    None
                }
                None => return Err(ServiceError::NoInstance { unit }),
            }
        } else {
            None
        };
        let link_name = instance_name.clone().unwrap_or_else(|| unit.clone());
        if install.is_empty() {
            warnings.push(format!(
                "unit `{unit}` has no [Install] section: it is static and enabling it changes nothing"
            ));
        }
        for (dir_suffix, targets) in [
            (".wants", &install.wanted_by),
            (".requires", &install.required_by),
            (".upholds", &install.upheld_by),
        ] {
            for t in targets {
                let t = expand(t, &link_name);
                changes.insert(Change::Link {
                    at: format!("/{ETC_UNITS}/{t}{dir_suffix}/{link_name}"),
                    target: path.clone(),
                });
            }
        }
        for a in &install.alias {
            let a = expand(a, &link_name);
            if a != link_name {
                changes.insert(Change::Link { at: format!("/{ETC_UNITS}/{a}"), target: path.clone() });
            }
        }
        for also in &install.also {
            queue.push(expand(also, &link_name));
        }
    }
    Ok((changes.into_iter().collect(), warnings))
}

/// The symlinks `systemctl mask UNIT...` creates.
pub fn plan_mask(units: &[String]) -> Vec<Change> {
    units
        .iter()
        .map(|u| Change::Link { at: format!("/{ETC_UNITS}/{u}"), target: "/dev/null".to_owned() })
        .collect()
}

/// `systemctl disable UNIT...`: every symlink under /etc/systemd/system that names the unit (or one of its
/// aliases or Also= units) or points to its unit file. `links` lists the symlinks present: (path, target).
pub fn plan_disable(
    units: &[String],
    src: &dyn UnitSource,
    links: &[(String, String)],
) -> Result<Vec<Change>, ServiceError> {
    let mut names = BTreeSet::new();
    let mut targets = BTreeSet::new();
    let mut queue: Vec<String> = units.to_vec();
    while let Some(unit) = queue.pop() {
        if !names.insert(unit.clone()) {
            continue;
        }
        let (found, instance) = find_unit(src, &unit)?;
        if let Some(Found::File { path, text }) = found {
            let install = parse_install(&text);
            for a in &install.alias {
                names.insert(expand(a, &unit));
            }
            for also in &install.also {
                queue.push(expand(also, &unit));
            }
            if instance.is_none() {
                targets.insert(path);
            }
        } else if found.is_none() {
            return Err(ServiceError::NotFound(unit));
        }
    }
    let mut out = Vec::new();
    for (at, target) in links {
        let base = at.rsplit('/').next().unwrap_or(at);
        let in_dep_dir = at
            .rsplit('/')
            .nth(1)
            .is_some_and(|d| d.ends_with(".wants") || d.ends_with(".requires") || d.ends_with(".upholds"));
        let names_unit = names.contains(base);
        let points_to = targets.contains(target);
        // A mask (-> /dev/null) is not undone by disable, as with systemctl.
        if target == "/dev/null" {
            continue;
        }
        // Links in .wants/.requires/.upholds go by name or target; aliases elsewhere by target.
        if points_to || (in_dep_dir && names_unit) {
            out.push(Change::Remove { at: at.clone() });
        }
    }
    out.sort();
    Ok(out)
}

/// A unit's enablement, as `systemctl is-enabled` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    /// At least one of the links its `[Install]` section asks for is present.
    Enabled,
    /// It has an `[Install]` section, and none of its links is present.
    Disabled,
    /// It has no `[Install]` section: it is started only as a dependency of another unit.
    Static,
    /// Linked to `/dev/null`.
    Masked,
}

impl UnitState {
    /// The word `systemctl is-enabled` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Static => "static",
            Self::Masked => "masked",
        }
    }
}

/// `systemctl is-enabled UNIT` read from unit files and the symlinks present under /etc/systemd/system
/// (`links`: (path, target), as [`etc_links`] lists them): the same links [`plan_enable`] would make,
/// looked for instead of made.
pub fn unit_state(
    unit: &str,
    src: &dyn UnitSource,
    links: &[(String, String)],
) -> Result<UnitState, ServiceError> {
    let (found, _) = find_unit(src, unit)?;
    let (path, text) = match found {
        Some(Found::File { path, text }) => (path, text),
        Some(Found::Masked) => return Ok(UnitState::Masked),
        None => return Err(ServiceError::NotFound(unit.to_owned())),
    };
    let install = parse_install(&text);
    if install.wanted_by.is_empty()
        && install.required_by.is_empty()
        && install.upheld_by.is_empty()
        && install.alias.is_empty()
    {
        return Ok(UnitState::Static);
    }
    let (changes, _) = match plan_enable(&[unit.to_owned()], src) {
        Ok(planned) => planned,
        // A template without a default instance: enabled when some instance is linked.
        Err(ServiceError::NoInstance { .. }) => {
            let enabled = links.iter().any(|(_, target)| *target == path);
            return Ok(if enabled { UnitState::Enabled } else { UnitState::Disabled });
        }
        Err(e) => return Err(e),
    };
    let present = changes.iter().any(|c| match c {
        Change::Link { at, target } => *target == path && links.iter().any(|(a, t)| a == at && t == target),
        Change::Remove { .. } => false,
    });
    Ok(if present { UnitState::Enabled } else { UnitState::Disabled })
}

/// Unit files of a tree on disk.
#[derive(Debug)]
pub struct TreeUnits<'a> {
    pub root: &'a Path,
}

impl UnitSource for TreeUnits<'_> {
    fn find(&self, name: &str) -> Result<Option<Found>, ServiceError> {
        for dir in UNIT_PATHS {
            let rel = PathBuf::from(dir).join(name);
            let full = self.root.join(&rel);
            let Ok(meta) = std::fs::symlink_metadata(&full) else { continue };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&full)
                    .map_err(|e| ServiceError::Read { unit: name.to_owned(), message: e.to_string() })?;
                if target == Path::new("/dev/null") {
                    return Ok(Some(Found::Masked));
                }
                if dir == ETC_UNITS {
                    // An enablement alias in /etc, not a unit file: keep looking in the vendor paths.
                    continue;
                }
            }
            let resolved = kiln_rootfs::paths::resolve_in_root(self.root, &rel, true)
                .map_err(|e| ServiceError::Read { unit: name.to_owned(), message: e.to_string() })?;
            let text = fs_err::read_to_string(&resolved)
                .map_err(|e| ServiceError::Read { unit: name.to_owned(), message: e.to_string() })?;
            return Ok(Some(Found::File { path: format!("/{}", rel.display()), text }));
        }
        Ok(None)
    }
}

/// Every symlink under /etc/systemd/system of a tree: (path in the image, target).
pub fn etc_links(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(ETC_UNITS)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
            if meta.file_type().is_symlink() {
                if let (Ok(target), Ok(rel)) = (std::fs::read_link(&p), p.strip_prefix(root)) {
                    out.push((format!("/{}", rel.display()), target.display().to_string()));
                }
            } else if meta.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Carry out changes in a tree.
pub fn apply(root: &Path, changes: &[Change]) -> Result<(), ServiceError> {
    let err = |path: &Path, e: std::io::Error| ServiceError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    for c in changes {
        match c {
            Change::Link { at, target } => {
                let full = root.join(at.trim_start_matches('/'));
                if let Some(parent) = full.parent() {
                    fs_err::create_dir_all(parent).map_err(|e| err(parent, e))?;
                }
                match std::fs::symlink_metadata(&full) {
                    Ok(m) if m.file_type().is_symlink() || m.is_file() => {
                        fs_err::remove_file(&full).map_err(|e| err(&full, e))?
                    }
                    _ => {}
                }
                std::os::unix::fs::symlink(target, &full).map_err(|e| err(&full, e))?;
            }
            Change::Remove { at } => {
                let full = root.join(at.trim_start_matches('/'));
                if std::fs::symlink_metadata(&full).is_ok() {
                    fs_err::remove_file(&full).map_err(|e| err(&full, e))?;
                }
                // Leave an emptied .wants/ directory away, as systemctl does.
                if let Some(parent) = full.parent() {
                    if parent != root.join(ETC_UNITS)
                        && std::fs::read_dir(parent).is_ok_and(|mut d| d.next().is_none())
                    {
                        let _ = std::fs::remove_dir(parent);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Set unit states in a tree: disable, then enable, then mask (so a unit in several lists ends as the
/// strongest says; the blueprint parsers already reject such conflicts). Returns warnings.
pub fn set_states(
    root: &Path,
    enable: &[String],
    disable: &[String],
    mask: &[String],
) -> Result<Vec<String>, ServiceError> {
    let src = TreeUnits { root };
    let mut warnings = Vec::new();
    if !disable.is_empty() {
        let changes = plan_disable(disable, &src, &etc_links(root))?;
        apply(root, &changes)?;
    }
    if !enable.is_empty() {
        let (changes, w) = plan_enable(enable, &src)?;
        warnings.extend(w);
        apply(root, &changes)?;
    }
    if !mask.is_empty() {
        apply(root, &plan_mask(mask))?;
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_sections_parse_like_systemd() {
        let i = parse_install(
            "[Unit]\nWantedBy=ignored.target\n[Install]\nWantedBy=a.target \\\n  b.target\n# c\nAlias=x.service\nAlias=\nAlias=y.service\nDefaultInstance=tty1\n",
        );
        assert_eq!(i.wanted_by, ["a.target", "b.target"]);
        assert_eq!(i.alias, ["y.service"]);
        assert_eq!(i.default_instance.as_deref(), Some("tty1"));
    }

    #[test]
    fn specifiers_expand() {
        assert_eq!(expand("%p-%i.target", "getty@ttyS0.service"), "getty-ttyS0.target");
        assert_eq!(expand("%n", "ssh.service"), "ssh.service");
        assert_eq!(expand("100%%", "x.service"), "100%");
    }
}
