//! dpkg's database for packages unpacked here, written as `dpkg --unpack` leaves it: `status` (each
//! package `install ok unpacked`, conffiles `newconffile`), `info/PKG.list`, `info/PKG.md5sums` (the package's
//! own or, like dpkg, generated), every other control member as `info/PKG.MEMBER`, trigger interests
//! (`triggers/File`, `triggers/NAME`), and the empty `available`, `diversions`, `statoverride` files and the
//! `arch` file. `PKG` is `NAME:ARCH` for `Multi-Arch: same` packages.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::control::status_paragraph;
use crate::deb::Deb;
use crate::paths::dpkg_path;

/// A problem writing the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("package {package}: triggers member, line {line}: {message}")]
    Triggers { package: String, line: usize, message: String },
}

/// What the database records of one unpacked package.
#[derive(Debug)]
pub struct DbPackage<'a> {
    pub deb: &'a Deb,
    /// Canonical paths the package owns, in archive order, directories included; files a later package took
    /// over are left out, as dpkg does for `Replaces`.
    pub list: Vec<PathBuf>,
    /// md5 of each regular file, in archive order, for packages that ship no `md5sums` member.
    pub md5: Vec<(PathBuf, [u8; 16])>,
}

/// The `.list` file: one dpkg path a line.
pub fn list_file(paths: &[PathBuf]) -> String {
    let mut out = String::new();
    for p in paths {
        out.push_str(&dpkg_path(p));
        out.push('\n');
    }
    out
}

/// An `md5sums` file as dpkg generates it for a package without one: `HASH  PATH` (relative).
pub fn md5sums_file(entries: &[(PathBuf, [u8; 16])]) -> String {
    let mut out = String::new();
    for (path, md5) in entries {
        let _ = writeln!(out, "{}  {}", hex::encode(md5), path.display());
    }
    out
}

/// A directive of a package's `triggers` member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerDirective {
    /// `interest`, `interest-await`, `interest-noawait`, `activate`, `activate-await` or `activate-noawait`.
    pub directive: String,
    /// A trigger name, or an absolute path for a file trigger.
    pub trigger: String,
}

impl TriggerDirective {
    fn is_interest(&self) -> bool {
        self.directive.starts_with("interest")
    }
    fn noawait(&self) -> bool {
        self.directive.ends_with("-noawait")
    }
}

/// Parse a `triggers` member (deb-triggers(5)): `DIRECTIVE NAME` lines, `#` comments, blank lines.
pub fn parse_triggers(text: &str) -> Result<Vec<TriggerDirective>, (usize, String)> {
    const DIRECTIVES: &[&str] =
        &["interest", "interest-await", "interest-noawait", "activate", "activate-await", "activate-noawait"];
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(directive), Some(trigger), None) = (words.next(), words.next(), words.next()) else {
            return Err((i + 1, format!("`{line}` is not `DIRECTIVE TRIGGER`")));
        };
        if !DIRECTIVES.contains(&directive) {
            return Err((i + 1, format!("unknown directive `{directive}`")));
        }
        out.push(TriggerDirective { directive: directive.to_owned(), trigger: trigger.to_owned() });
    }
    Ok(out)
}

/// Trigger interests as dpkg's trigger database holds them: the `triggers/File` text (`PATH PKG[/noawait]`
/// lines) and, per explicit trigger name, the `triggers/NAME` text (`PKG[/noawait]` lines).
pub fn trigger_interests(packages: &[(String, Vec<TriggerDirective>)]) -> (String, BTreeMap<String, String>) {
    let mut file = String::new();
    let mut explicit: BTreeMap<String, String> = BTreeMap::new();
    for (db_name, directives) in packages {
        for d in directives.iter().filter(|d| d.is_interest()) {
            let suffix = if d.noawait() { "/noawait" } else { "" };
            if d.trigger.starts_with('/') {
                let _ = writeln!(file, "{} {db_name}{suffix}", d.trigger);
            } else {
                let _ = writeln!(explicit.entry(d.trigger.clone()).or_default(), "{db_name}{suffix}");
            }
        }
    }
    (file, explicit)
}

/// The whole `status` file for packages just unpacked: paragraphs sorted by name and architecture.
pub fn status_file(packages: &[&Deb]) -> String {
    let mut sorted: Vec<&&Deb> = packages.iter().collect();
    sorted.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    sorted
        .into_iter()
        .map(|deb| {
            let conffiles: Vec<(String, String)> = deb
                .conffiles()
                .into_iter()
                .filter(|c| !c.remove_on_upgrade)
                .map(|c| (c.path, "newconffile".to_owned()))
                .collect();
            status_paragraph(&deb.control, "install ok unpacked", &conffiles)
        })
        .collect()
}

/// The `arch` file: the native architecture, then the foreign ones packages are built for, as
/// `dpkg --add-architecture` would have recorded them.
pub fn arch_file(native: &str, packages: &[&Deb]) -> String {
    let mut foreign: Vec<&str> =
        packages.iter().map(|d| d.architecture.as_str()).filter(|a| *a != native && *a != "all").collect();
    foreign.sort_unstable();
    foreign.dedup();
    std::iter::once(native).chain(foreign).map(|a| format!("{a}\n")).collect()
}

/// Write the database of `packages` under `tree/var/lib/dpkg`; `arch` is dpkg's native architecture.
pub fn write_database(tree: &Path, packages: &[DbPackage<'_>], arch: &str) -> Result<(), DbError> {
    let admin = tree.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers", "alternatives", "parts"] {
        fs_err::create_dir_all(admin.join(dir))?;
    }
    let mut triggers = Vec::new();
    for pkg in packages {
        let deb = pkg.deb;
        let db_name = deb.db_name();
        let info = |suffix: &str| admin.join("info").join(format!("{db_name}.{suffix}"));
        write(&info("list"), list_file(&pkg.list).as_bytes(), 0o644)?;
        if deb.member("md5sums").is_none() {
            write(&info("md5sums"), md5sums_file(&pkg.md5).as_bytes(), 0o644)?;
        }
        for member in &deb.members {
            write(&info(&member.name), &member.data, member.mode)?;
        }
        if let Some(member) = deb.member("triggers") {
            let text = String::from_utf8_lossy(&member.data);
            let directives = parse_triggers(&text).map_err(|(line, message)| DbError::Triggers {
                package: db_name.clone(),
                line,
                message,
            })?;
            triggers.push((db_name.clone(), directives));
        }
    }
    write(&admin.join("info/format"), b"1\n", 0o644)?;

    let debs: Vec<&Deb> = packages.iter().map(|p| p.deb).collect();
    write(&admin.join("status"), status_file(&debs).as_bytes(), 0o644)?;
    for empty in ["available", "diversions", "statoverride"] {
        write(&admin.join(empty), b"", 0o644)?;
    }
    write(&admin.join("arch"), arch_file(arch, &debs).as_bytes(), 0o644)?;

    let (file, explicit) = trigger_interests(&triggers);
    write(&admin.join("triggers/File"), file.as_bytes(), 0o644)?;
    write(&admin.join("triggers/Unincorp"), b"", 0o644)?;
    for (name, text) in explicit {
        write(&admin.join("triggers").join(name), text.as_bytes(), 0o644)?;
    }
    Ok(())
}

fn write(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    fs_err::write(path, data)?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_md5sums_look_like_dpkg() {
        let paths = [PathBuf::new(), PathBuf::from("etc"), PathBuf::from("etc/a b")];
        assert_eq!(list_file(&paths), "/.\n/etc\n/etc/a b\n");
        let md5 = [(PathBuf::from("usr/share/x"), [0xab; 16])];
        assert_eq!(md5sums_file(&md5), format!("{}  usr/share/x\n", "ab".repeat(16)));
    }

    #[test]
    fn the_arch_file_lists_native_then_foreign_architectures() {
        let deb = |arch: &str| Deb {
            path: PathBuf::from(format!("p_{arch}.deb")),
            control: crate::control::Paragraph::default(),
            members: Vec::new(),
            data_compression: crate::deb::Compression::Xz,
            name: "p".to_owned(),
            version: "1".to_owned(),
            architecture: arch.to_owned(),
        };
        let (a, b, c, d) = (deb("amd64"), deb("all"), deb("i386"), deb("arm64"));
        assert_eq!(arch_file("amd64", &[&a, &b]), "amd64\n");
        assert_eq!(arch_file("amd64", &[&c, &a, &d, &c]), "amd64\narm64\ni386\n");
    }

    #[test]
    fn triggers_are_parsed_and_registered() {
        let libc_bin = parse_triggers("# comment\n\ninterest-await ldconfig\n").unwrap();
        let man = parse_triggers("interest-noawait /usr/share/man\nactivate-noawait ldconfig\n").unwrap();
        let lib = parse_triggers("activate-noawait ldconfig\n").unwrap();
        let (file, explicit) = trigger_interests(&[
            ("libc-bin".to_owned(), libc_bin),
            ("man-db".to_owned(), man),
            ("libfoo1:amd64".to_owned(), lib),
        ]);
        assert_eq!(file, "/usr/share/man man-db/noawait\n");
        assert_eq!(explicit.len(), 1);
        assert_eq!(explicit["ldconfig"], "libc-bin\n");
        assert_eq!(parse_triggers("interest").unwrap_err().0, 1);
        assert_eq!(parse_triggers("\nfrobnicate x").unwrap_err().0, 2);
    }
}
