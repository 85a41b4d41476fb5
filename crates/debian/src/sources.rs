//! The host's apt sources: the deb822 `*.sources` format and the one-line `sources.list` format
//! (sources.list(5)), parsed into one [`Source`] per (URI, suite).
//!
//! The parsers are pure; [`host_sources`] reads the files under a root directory the way apt does:
//! `etc/apt/sources.list`, then `etc/apt/sources.list.d/*.list` and `*.sources` in file-name order.
//! Other files there (`*.disabled`, `*.save`, ...) are ignored, and so are entries that are disabled
//! (`Enabled: no`, or commented out) or not of type `deb`.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::control::{self, ControlError};

/// How a source's Release file must be signed (`Signed-By`, `[signed-by=...]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedBy {
    /// Keyring files, and optionally fingerprints that the signing key must have. With only
    /// fingerprints, the keys are looked up in apt's trusted keyrings.
    Keys { files: Vec<PathBuf>, fingerprints: Vec<String> },
    /// An ASCII-armored public key block written in the deb822 file itself.
    Inline(String),
}

/// One repository entry: a URI and one suite with its components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `deb`, `deb-src`.
    pub types: Vec<String>,
    pub uri: String,
    pub suite: String,
    /// Empty for flat repositories (a suite ending in `/`).
    pub components: Vec<String>,
    /// Architectures the entry is restricted to; empty means all configured ones.
    pub architectures: Vec<String>,
    pub signed_by: Option<SignedBy>,
    pub enabled: bool,
    /// The file the entry was read from (set by [`host_sources`]).
    pub file: Option<PathBuf>,
    /// 1-based line the entry starts on.
    pub line: usize,
}

impl Source {
    /// Whether apt would use this entry for binary packages: enabled and of type `deb`.
    pub fn is_binary(&self) -> bool {
        self.enabled && self.types.iter().any(|t| t == "deb")
    }

    /// A flat repository (`suite/` with no components) rather than a `dists/` one.
    pub fn is_flat(&self) -> bool {
        self.suite.ends_with('/')
    }
}

/// A problem in a sources file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SourcesError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("line {line}: missing field {field}")]
    MissingField { line: usize, field: &'static str },
    #[error("line {line}: invalid {field} {value:?}: {reason}")]
    InvalidValue { line: usize, field: &'static str, value: String, reason: &'static str },
}

/// A problem reading the host's sources.
#[derive(Debug, Error)]
pub enum HostSourcesError {
    #[error("{}: {source}", file.display())]
    Parse { file: PathBuf, source: SourcesError },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn split_list(value: &str) -> Vec<String> {
    value.split_whitespace().map(str::to_owned).collect()
}

/// Parses a `Signed-By` value: an armored key block, or keyring paths and fingerprints separated by
/// commas or whitespace.
fn parse_signed_by(value: &str) -> SignedBy {
    if value.trim_start().starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        // Continuation lines carry one leading space, and a lone `.` stands for an empty line.
        let key: Vec<&str> = value
            .lines()
            .map(|l| {
                let l = l.strip_prefix(' ').unwrap_or(l).trim_end();
                if l == "." {
                    ""
                } else {
                    l
                }
            })
            .collect();
        return SignedBy::Inline(key.join("\n") + "\n");
    }
    let mut files = Vec::new();
    let mut fingerprints = Vec::new();
    for item in value.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()) {
        if item.starts_with('/') {
            files.push(PathBuf::from(item));
        } else {
            fingerprints.push(item.to_owned());
        }
    }
    SignedBy::Keys { files, fingerprints }
}

fn check_suite_components(line: usize, suite: &str, components: &[String]) -> Result<(), SourcesError> {
    if suite.ends_with('/') && !components.is_empty() {
        return Err(SourcesError::InvalidValue {
            line,
            field: "Components",
            value: components.join(" "),
            reason: "a flat repository (suite ending in `/`) has no components",
        });
    }
    if !suite.ends_with('/') && components.is_empty() {
        return Err(SourcesError::MissingField { line, field: "Components" });
    }
    Ok(())
}

/// Parses a deb822 `.sources` file. Every stanza expands to one entry per URI and suite.
pub fn parse_deb822(text: &str) -> Result<Vec<Source>, SourcesError> {
    let mut out = Vec::new();
    for para in control::paragraphs(text) {
        let para = para?;
        let line = para.line;
        let field =
            |name: &'static str| para.get(name).ok_or(SourcesError::MissingField { line, field: name });
        let types = split_list(field("Types")?);
        let uris = split_list(field("URIs")?);
        let suites = split_list(field("Suites")?);
        let components = split_list(para.get("Components").unwrap_or(""));
        let enabled = match para.get("Enabled").map(str::to_ascii_lowercase).as_deref() {
            None | Some("yes") => true,
            Some("no") => false,
            Some(other) => {
                return Err(SourcesError::InvalidValue {
                    line,
                    field: "Enabled",
                    value: other.to_owned(),
                    reason: "expected yes or no",
                })
            }
        };
        let architectures = split_list(para.get("Architectures").unwrap_or(""));
        let signed_by = para.get("Signed-By").map(parse_signed_by);
        for (name, list) in [("Types", &types), ("URIs", &uris), ("Suites", &suites)] {
            if list.is_empty() {
                return Err(SourcesError::InvalidValue {
                    line,
                    field: name,
                    value: String::new(),
                    reason: "empty list",
                });
            }
        }
        for uri in &uris {
            for suite in &suites {
                check_suite_components(line, suite, &components)?;
                out.push(Source {
                    types: types.clone(),
                    uri: uri.clone(),
                    suite: suite.clone(),
                    components: components.clone(),
                    architectures: architectures.clone(),
                    signed_by: signed_by.clone(),
                    enabled,
                    file: None,
                    line,
                });
            }
        }
    }
    Ok(out)
}

/// Parses a one-line `sources.list` file: `deb [ option=value ... ] URI SUITE [COMPONENT ...]`.
/// Comments (`#` to the end of the line) and blank lines are skipped.
pub fn parse_one_line(text: &str) -> Result<Vec<Source>, SourcesError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let invalid =
            |reason| SourcesError::InvalidValue { line, field: "entry", value: content.to_owned(), reason };
        let (kind, rest) =
            content.split_once(char::is_whitespace).ok_or_else(|| invalid("expected TYPE URI SUITE"))?;
        if kind != "deb" && kind != "deb-src" {
            return Err(invalid("the type must be deb or deb-src"));
        }
        let mut rest = rest.trim_start();
        let mut architectures = Vec::new();
        let mut signed_by = None;
        if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').ok_or_else(|| invalid("unclosed `[`"))?;
            for opt in r[..close].split_whitespace() {
                let (key, value) =
                    opt.split_once('=').ok_or_else(|| invalid("an option must be key=value"))?;
                let key = key.trim_end_matches(['+', '-']);
                match key {
                    "arch" => architectures = value.split(',').map(str::to_owned).collect(),
                    "signed-by" => signed_by = Some(parse_signed_by(value)),
                    _ => {}
                }
            }
            rest = &r[close + 1..];
        }
        let mut words = rest.split_whitespace();
        let uri = words.next().ok_or_else(|| invalid("missing URI"))?.to_owned();
        let suite = words.next().ok_or_else(|| invalid("missing suite"))?.to_owned();
        let components: Vec<String> = words.map(str::to_owned).collect();
        check_suite_components(line, &suite, &components)?;
        out.push(Source {
            types: vec![kind.to_owned()],
            uri,
            suite,
            components,
            architectures,
            signed_by,
            enabled: true,
            file: None,
            line,
        });
    }
    Ok(out)
}

/// The binary (enabled, `deb`) sources configured under `root` (`/` for the host), in apt's order.
pub fn host_sources(root: &Path) -> Result<Vec<Source>, HostSourcesError> {
    let apt = root.join("etc/apt");
    let mut files = Vec::new();
    let list = apt.join("sources.list");
    if list.is_file() {
        files.push(list);
    }
    let dir = apt.join("sources.list.d");
    if dir.is_dir() {
        let mut names = Vec::new();
        for entry in fs_err::read_dir(&dir)? {
            let path = entry?.path();
            let ok = path.extension().is_some_and(|e| e == "list" || e == "sources");
            if ok && path.is_file() {
                names.push(path);
            }
        }
        names.sort();
        files.extend(names);
    }
    let mut out = Vec::new();
    for file in files {
        let text = fs_err::read_to_string(&file)?;
        let parsed = if file.extension().is_some_and(|e| e == "sources") {
            parse_deb822(&text)
        } else {
            parse_one_line(&text)
        };
        let parsed = parsed.map_err(|source| HostSourcesError::Parse { file: file.clone(), source })?;
        out.extend(parsed.into_iter().filter(Source::is_binary).map(|mut s| {
            s.file = Some(file.clone());
            s
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_expands_uris_and_suites() {
        let text = "Types: deb deb-src\nURIs: http://a.invalid/debian http://b.invalid/debian\n\
                    Suites: stable stable-updates\nComponents: main contrib\n\
                    Signed-By: /usr/share/keyrings/k.gpg\n\n\
                    # a comment\nTypes: deb\nURIs: file:///srv/repo\nSuites: flat/\nEnabled: no\n";
        let s = parse_deb822(text).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(
            s.iter().map(|s| (s.uri.as_str(), s.suite.as_str())).collect::<Vec<_>>(),
            [
                ("http://a.invalid/debian", "stable"),
                ("http://a.invalid/debian", "stable-updates"),
                ("http://b.invalid/debian", "stable"),
                ("http://b.invalid/debian", "stable-updates"),
                ("file:///srv/repo", "flat/"),
            ]
        );
        assert_eq!(s[0].components, ["main", "contrib"]);
        assert_eq!(
            s[0].signed_by,
            Some(SignedBy::Keys { files: vec!["/usr/share/keyrings/k.gpg".into()], fingerprints: vec![] })
        );
        assert!(s[0].is_binary());
        assert!(!s[4].enabled && !s[4].is_binary() && s[4].is_flat());
        assert_eq!(s[4].line, 8);
    }

    #[test]
    fn deb822_inline_key_and_fingerprints() {
        let text = "Types: deb\nURIs: http://a.invalid/\nSuites: x\nComponents: main\nSigned-By:\n \
                    -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mDMEZ\n -----END PGP PUBLIC KEY BLOCK-----\n\n\
                    Types: deb\nURIs: http://b.invalid/\nSuites: y\nComponents: main\n\
                    Signed-By: ABCD1234ABCD1234, /etc/k.gpg\n";
        let s = parse_deb822(text).unwrap();
        assert_eq!(
            s[0].signed_by,
            Some(SignedBy::Inline(
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n-----END PGP PUBLIC KEY BLOCK-----\n".into()
            ))
        );
        assert_eq!(
            s[1].signed_by,
            Some(SignedBy::Keys {
                files: vec!["/etc/k.gpg".into()],
                fingerprints: vec!["ABCD1234ABCD1234".into()]
            })
        );
    }

    #[test]
    fn deb822_errors() {
        assert_eq!(
            parse_deb822("Types: deb\nSuites: x\nComponents: main\n").unwrap_err(),
            SourcesError::MissingField { line: 1, field: "URIs" }
        );
        assert!(matches!(
            parse_deb822(
                "Types: deb\nURIs: http://a.invalid/\nSuites: x\nComponents: main\nEnabled: maybe\n"
            ),
            Err(SourcesError::InvalidValue { field: "Enabled", .. })
        ));
        assert_eq!(
            parse_deb822("Types: deb\nURIs: http://a.invalid/\nSuites: x\n").unwrap_err(),
            SourcesError::MissingField { line: 1, field: "Components" }
        );
    }

    #[test]
    fn one_line_entries_with_options() {
        let text = "# comment\n\ndeb [arch=amd64,arm64 signed-by=/k/a.gpg] http://a.invalid/debian stable main contrib # trailing\n\
                    deb-src http://a.invalid/debian stable main\n\
                    deb file:/srv/flat ./\n";
        let s = parse_one_line(text).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].uri, "http://a.invalid/debian");
        assert_eq!(s[0].suite, "stable");
        assert_eq!(s[0].components, ["main", "contrib"]);
        assert_eq!(s[0].architectures, ["amd64", "arm64"]);
        assert_eq!(
            s[0].signed_by,
            Some(SignedBy::Keys { files: vec!["/k/a.gpg".into()], fingerprints: vec![] })
        );
        assert_eq!(s[0].line, 3);
        assert!(s[0].is_binary());
        assert!(!s[1].is_binary());
        assert!(s[2].is_flat() && s[2].components.is_empty());
    }

    #[test]
    fn one_line_errors() {
        for bad in [
            "deb",
            "deb http://a.invalid/",
            "rpm http://a.invalid/ x main",
            "deb [arch=amd64 http://a.invalid/ x main",
            "deb http://a.invalid/ x",
        ] {
            assert!(parse_one_line(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
