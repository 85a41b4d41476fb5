//! Parsers for the files static checks read from an image: os-release, dpkg's status database, passwd and
//! group, `sshd_config` (with `Include`s, first value wins), `sysctl.d` (systemd-sysctl's order). Pure text in,
//! typed facts out; reading the files is the caller's business.

use std::collections::BTreeMap;

/// `KEY=value` lines of os-release(5): shell-like quoting (`"..."`, `'...'`) with `\` escapes in double
/// quotes; comments and blank lines skipped.
pub fn os_release(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else { continue };
        let value = if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            let mut v = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        v.push(n);
                    }
                } else {
                    v.push(c);
                }
            }
            v
        } else if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            inner.to_owned()
        } else {
            raw.to_owned()
        };
        out.insert(key.trim().to_owned(), value);
    }
    out
}

/// One package of dpkg's status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpkgPackage {
    pub name: String,
    pub architecture: String,
    pub version: String,
    /// `install ok installed`, ...
    pub status: String,
}

impl DpkgPackage {
    /// Installed (fully, or with only configuration left to do it would say otherwise).
    pub fn is_installed(&self) -> bool {
        self.status.ends_with(" installed")
    }
}

/// The stanzas of `/var/lib/dpkg/status`.
pub fn dpkg_status(text: &str) -> Vec<DpkgPackage> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut p = DpkgPackage {
            name: String::new(),
            architecture: String::new(),
            version: String::new(),
            status: String::new(),
        };
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else { continue };
            let v = v.trim().to_owned();
            match k {
                "Package" => p.name = v,
                "Architecture" => p.architecture = v,
                "Version" => p.version = v,
                "Status" => p.status = v,
                _ => {}
            }
        }
        if !p.name.is_empty() {
            out.push(p);
        }
    }
    out
}

/// A passwd(5) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

pub fn passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 7).then_some(())?;
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
                shell: f[6].to_owned(),
            })
        })
        .collect()
}

/// A group(5) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

pub fn group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4).then_some(())?;
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: f[3].split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file and line.
    File { path: String, line: usize },
    /// The program's built-in default.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File { path, line } => write!(f, "{path}:{line}"),
            Source::Default => write!(f, "the built-in default"),
        }
    }
}

/// sshd's built-in defaults (OpenSSH 9.x, sshd_config(5)) of keywords contracts commonly ask about, used
/// when no file sets the keyword. Lowercase keywords.
pub const SSHD_DEFAULTS: [(&str, &str); 8] = [
    ("permitrootlogin", "prohibit-password"),
    ("passwordauthentication", "yes"),
    ("pubkeyauthentication", "yes"),
    ("permitemptypasswords", "no"),
    ("kbdinteractiveauthentication", "yes"),
    ("x11forwarding", "no"),
    ("port", "22"),
    ("usepam", "no"),
];

/// The effective global value of `keyword` in an sshd configuration, as sshd reads it: lines in order,
/// `Include` (globs, relative to /etc/ssh) expanded where it stands, the first value of a keyword wins,
/// keywords case-insensitive, the global section ends at the first `Match`. `read` gives a file's text
/// (`None`: missing) and `glob` the paths a pattern names (sorted).
pub fn sshd_value(
    keyword: &str,
    read: &dyn Fn(&str) -> Option<String>,
    glob: &dyn Fn(&str) -> Vec<String>,
) -> Option<(String, Source)> {
    fn walk(
        path: &str,
        keyword: &str,
        read: &dyn Fn(&str) -> Option<String>,
        glob: &dyn Fn(&str) -> Vec<String>,
        depth: usize,
    ) -> Result<Option<(String, Source)>, ()> {
        // Err(()) means a `Match` ended the global section.
        let text = match read(path) {
            Some(t) if depth < 16 => t,
            _ => return Ok(None),
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, rest) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
                Some((k, r)) => (k, r.trim_start_matches(|c: char| c.is_whitespace() || c == '=').trim()),
                None => (line, ""),
            };
            let key = key.to_ascii_lowercase();
            if key == "match" {
                return Err(());
            }
            if key == "include" {
                for pattern in rest.split_whitespace() {
                    let pattern = if pattern.starts_with('/') {
                        pattern.to_owned()
                    } else {
                        format!("/etc/ssh/{pattern}")
                    };
                    for file in glob(&pattern) {
                        if let Some(found) = walk(&file, keyword, read, glob, depth + 1)? {
                            return Ok(Some(found));
                        }
                    }
                }
                continue;
            }
            if key == keyword {
                let value = rest.split_whitespace().next().unwrap_or("").trim_matches('"').to_owned();
                return Ok(Some((value, Source::File { path: path.to_owned(), line: i + 1 })));
            }
        }
        Ok(None)
    }
    let keyword = keyword.to_ascii_lowercase();
    match walk("/etc/ssh/sshd_config", &keyword, read, glob, 0) {
        Ok(Some(found)) => Some(found),
        Ok(None) | Err(()) => {
            SSHD_DEFAULTS.iter().find(|(k, _)| *k == keyword).map(|(_, v)| ((*v).to_owned(), Source::Default))
        }
    }
}

/// The directories systemd-sysctl reads, highest priority first.
pub const SYSCTL_DIRS: [&str; 5] =
    ["/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d"];

/// The value systemd-sysctl would set for `key` (dots or slashes), from `files`: the `*.conf` files of
/// [`SYSCTL_DIRS`] as (directory, name, text). A name in a higher-priority directory hides the same name
/// in lower ones; the files are applied in name order, then `/etc/sysctl.conf`; later assignments win.
pub fn sysctl_value(
    key: &str,
    files: &[(String, String, String)],
    etc_sysctl_conf: Option<&str>,
) -> Option<(String, Source)> {
    let norm = |k: &str| k.trim().trim_start_matches('-').replace('/', ".");
    let wanted = norm(key);
    let mut chosen: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for dir in SYSCTL_DIRS {
        for (d, name, text) in files {
            if d == dir && name.ends_with(".conf") {
                chosen.entry(name.as_str()).or_insert((d.as_str(), text.as_str()));
            }
        }
    }
    let mut ordered: Vec<(String, &str)> =
        chosen.into_iter().map(|(name, (dir, text))| (format!("{dir}/{name}"), text)).collect();
    if let Some(text) = etc_sysctl_conf {
        ordered.push(("/etc/sysctl.conf".to_owned(), text));
    }
    let mut found = None;
    for (path, text) in ordered {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else { continue };
            if norm(k) == wanted {
                found = Some((v.trim().to_owned(), Source::File { path: path.clone(), line: i + 1 }));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::evaluate::glob_match;

    #[test]
    fn os_release_quoting() {
        let m = os_release(
            "# c\nID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nX='a b'\nY=\"q\\\"x\"\n",
        );
        assert_eq!(m["ID"], "debian");
        assert_eq!(m["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(m["X"], "a b");
        assert_eq!(m["Y"], "q\"x");
    }

    #[test]
    fn dpkg_status_stanzas() {
        let s = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\nDescription: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n";
        let p = dpkg_status(s);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str(), p[0].is_installed()),
            ("libc6", "2.36-9", true)
        );
        assert!(!p[1].is_installed());
    }

    #[test]
    fn accounts() {
        let u =
            passwd("root:x:0:0:root:/root:/bin/bash\nbad\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n");
        assert_eq!(u.len(), 2);
        assert_eq!((u[1].uid, u[1].gid, u[1].shell.as_str()), (42, 65534, "/usr/sbin/nologin"));
        let g = group("sudo:x:27:alice,bob\nshadow:x:42:\n");
        assert_eq!(g[0].members, ["alice", "bob"]);
        assert!(g[1].members.is_empty());
    }

    #[test]
    fn sshd_first_value_wins_through_includes_until_match() {
        let files: BTreeMap<&str, &str> = [
            ("/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin yes\nPort 22\nMatch User x\n  X11Forwarding yes\n"),
            ("/etc/ssh/sshd_config.d/10-kiln.conf", "permitrootlogin=no\n"),
        ]
        .into();
        let read = |p: &str| files.get(p).map(|s| s.to_string());
        let glob =
            |p: &str| files.keys().filter(|k| glob_match(p, k)).map(|k| k.to_string()).collect::<Vec<_>>();
        let (v, src) = sshd_value("PermitRootLogin", &read, &glob).unwrap();
        assert_eq!((v.as_str(), src.to_string().as_str()), ("no", "/etc/ssh/sshd_config.d/10-kiln.conf:1"));
        assert_eq!(sshd_value("port", &read, &glob).unwrap().0, "22");
        // Inside a Match block: not global; the default applies.
        assert_eq!(sshd_value("X11Forwarding", &read, &glob), Some(("no".into(), Source::Default)));
        assert_eq!(sshd_value("Banner", &read, &glob), None);
    }

    #[test]
    fn sysctl_order_and_overrides() {
        let files = vec![
            (
                "/usr/lib/sysctl.d".to_owned(),
                "50-default.conf".to_owned(),
                "net.ipv4.ip_forward = 0\nkernel.x=1\n".to_owned(),
            ),
            ("/etc/sysctl.d".to_owned(), "50-default.conf".to_owned(), "kernel.x = 2\n".to_owned()),
            ("/etc/sysctl.d".to_owned(), "90-kiln.conf".to_owned(), "-net/ipv4/ip_forward=1\n".to_owned()),
        ];
        assert_eq!(sysctl_value("kernel.x", &files, None).unwrap().0, "2");
        // The /usr/lib file of the same name is hidden, so ip_forward comes only from 90-kiln.conf.
        let (v, src) = sysctl_value("net.ipv4.ip_forward", &files, None).unwrap();
        assert_eq!((v.as_str(), src.to_string().as_str()), ("1", "/etc/sysctl.d/90-kiln.conf:1"));
        assert_eq!(sysctl_value("kernel.x", &files, Some("kernel.x=3\n")).unwrap().0, "3");
        assert_eq!(sysctl_value("vm.swappiness", &files, None), None);
    }
}
