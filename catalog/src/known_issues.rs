//! Known issues of published images, kept in the repository (`runbook/known-issues.toml`): what is wrong,
//! which families and versions it affects, and how to live with it. The publisher parses the file, selects
//! the issues of the version it publishes and sends them with the publish request (as JSON); the release
//! notes list them.
//!
//! ```toml
//! [[issue]]
//! id = "KI-0001"
//! title = "..."
//! families = ["debian-minimal"]      # or ["*"]
//! versions = "<1.1.0"                # a semver range; default "*"
//! summary = "..."
//! workaround = "..."                 # optional
//! runbook = "runbook/....md"         # optional
//! ```
//!
//! Pure: the caller reads the file. Every error names the file, line and column; unknown keys are refused.
//! Ranges follow the `semver` crate: a pre-release (`1.1.0-rc.1`) matches only a range naming a
//! pre-release of the same `major.minor.patch`.

use std::{collections::BTreeMap, ops::Range};

use kiln_blueprint::diag::SourceFile;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// One known issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownIssue {
    /// `KI-0001`: unique in the file.
    pub id: String,
    pub title: String,
    /// The families it affects; `*` for every family.
    pub families: Vec<String>,
    /// The versions it affects.
    #[serde(default = "any_version")]
    pub versions: semver::VersionReq,
    /// Plain text (not Markdown: the notes escape it).
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workaround: Option<String>,
    /// Where the runbook says more: a path in the repository (`runbook/....md`) or a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
}

fn any_version() -> semver::VersionReq {
    semver::VersionReq::STAR
}

impl KnownIssue {
    /// Whether the issue affects `version` of `family`.
    pub fn affects(&self, family: &str, version: &semver::Version) -> bool {
        self.families.iter().any(|f| f == "*" || f == family) && self.versions.matches(version)
    }
}

/// What is wrong in a known-issues file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Not TOML, a missing or unknown key, a value of the wrong type (toml's message).
    #[error("{0}")]
    Syntax(String),
    #[error("`versions`: `{range}` is not a semver range ({reason})")]
    BadRange { range: String, reason: String },
    #[error("`{field}` is empty")]
    Empty { field: &'static str },
    #[error("`{id}` is not an issue id (letters, digits, `-`, `_`, `.`)")]
    BadId { id: String },
    #[error("issue `{id}` is defined twice (first on line {first_line})")]
    DuplicateId { id: String, first_line: usize },
    #[error("`{name}` is not a family name (lowercase letters, digits, `-`, `_`, `.`) nor `*`")]
    BadFamily { name: String },
}

/// A problem in a known-issues file, located: `FILE:LINE:COL: problem`. Line and column are 1-based (the
/// column in characters); a problem toml could not place is at 1:1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {problem}")]
pub struct KnownIssuesError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub problem: Problem,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    issue: Vec<RawIssue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssue {
    id: Spanned<String>,
    title: Spanned<String>,
    families: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    versions: Option<Spanned<String>>,
    summary: Spanned<String>,
    #[serde(default)]
    workaround: Option<Spanned<String>>,
    #[serde(default)]
    runbook: Option<Spanned<String>>,
}

struct Locator<'a> {
    file: SourceFile,
    path: &'a str,
}

impl Locator<'_> {
    fn at(&self, span: Range<usize>, problem: Problem) -> KnownIssuesError {
        let (line, column) = self.file.line_col(span.start);
        KnownIssuesError { file: self.path.to_owned(), line, column, problem }
    }

    fn non_empty(&self, field: &'static str, v: Spanned<String>) -> Result<String, KnownIssuesError> {
        if v.get_ref().trim().is_empty() {
            return Err(self.at(v.span(), Problem::Empty { field }));
        }
        Ok(v.into_inner())
    }
}

/// Parses the known-issues file `text`; `path_for_errors` names it in errors. Issues keep the file's order.
pub fn parse(path_for_errors: &str, text: &str) -> Result<Vec<KnownIssue>, KnownIssuesError> {
    let loc = Locator {
        file: SourceFile { path: path_for_errors.into(), text: text.to_owned() },
        path: path_for_errors,
    };
    let raw: RawFile = toml::from_str(text)
        .map_err(|e| loc.at(e.span().unwrap_or(0..0), Problem::Syntax(e.message().trim().to_owned())))?;
    let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
    let mut issues = Vec::with_capacity(raw.issue.len());
    for r in raw.issue {
        let id_span = r.id.span();
        let id = loc.non_empty("id", r.id)?;
        if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(loc.at(id_span, Problem::BadId { id }));
        }
        let line = loc.file.line_col(id_span.start).0;
        if let Some(&first) = first_line.get(&id) {
            return Err(loc.at(id_span, Problem::DuplicateId { id, first_line: first }));
        }
        first_line.insert(id.clone(), line);

        let families_span = r.families.span();
        let mut families = Vec::new();
        for f in r.families.into_inner() {
            if f.get_ref() != "*" && !crate::model::is_name(f.get_ref()) {
                return Err(loc.at(f.span(), Problem::BadFamily { name: f.into_inner() }));
            }
            families.push(f.into_inner());
        }
        if families.is_empty() {
            return Err(loc.at(families_span, Problem::Empty { field: "families" }));
        }
        let versions = match r.versions {
            None => any_version(),
            Some(v) => semver::VersionReq::parse(v.get_ref()).map_err(|e| {
                loc.at(v.span(), Problem::BadRange { range: v.get_ref().clone(), reason: e.to_string() })
            })?,
        };
        let title = loc.non_empty("title", r.title)?;
        let summary = loc.non_empty("summary", r.summary)?;
        let workaround = r.workaround.map(|w| loc.non_empty("workaround", w)).transpose()?;
        let runbook = r.runbook.map(|w| loc.non_empty("runbook", w)).transpose()?;
        issues.push(KnownIssue { id, title, families, versions, summary, workaround, runbook });
    }
    Ok(issues)
}

/// The issues affecting `version` of `family`, in the file's order.
pub fn select<'a>(issues: &'a [KnownIssue], family: &str, version: &semver::Version) -> Vec<&'a KnownIssue> {
    issues.iter().filter(|i| i.affects(family, version)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "runbook/known-issues.toml";

    fn v(s: &str) -> semver::Version {
        s.parse().unwrap()
    }

    fn err(text: &str) -> KnownIssuesError {
        parse(FILE, text).unwrap_err()
    }

    const TWO: &str = r#"
[[issue]]
id = "KI-0001"
title = "Old kernels miss a fix"
families = ["debian-minimal", "web-role"]
versions = "<1.1.0"
summary = "Fixed in 1.1.0."
workaround = "Upgrade."
runbook = "runbook/checks/kernel-cmdline.md"

[[issue]]
id = "KI-0002"
title = "Everywhere"
families = ["*"]
summary = "All of them."
"#;

    #[test]
    fn parses_issues_with_defaults() {
        let issues = parse(FILE, TWO).unwrap();
        assert_eq!(issues.len(), 2);
        assert_eq!(issues[0].versions, semver::VersionReq::parse("<1.1.0").unwrap());
        assert_eq!(issues[0].runbook.as_deref(), Some("runbook/checks/kernel-cmdline.md"));
        assert_eq!(issues[1].versions, semver::VersionReq::STAR);
        assert_eq!(issues[1].workaround, None);
        assert!(parse(FILE, "").unwrap().is_empty());
    }

    #[test]
    fn selects_by_family_and_range() {
        let issues = parse(FILE, TWO).unwrap();
        let ids = |family: &str, version: &str| -> Vec<&str> {
            select(&issues, family, &v(version)).iter().map(|i| i.id.as_str()).collect()
        };
        assert_eq!(ids("debian-minimal", "1.0.3"), ["KI-0001", "KI-0002"]);
        assert_eq!(ids("web-role", "1.0.0"), ["KI-0001", "KI-0002"]);
        assert_eq!(ids("debian-minimal", "1.1.0"), ["KI-0002"]);
        assert_eq!(ids("debian-base-oci", "1.0.0"), ["KI-0002"]);
    }

    #[test]
    fn round_trips_as_json_for_the_publish_request() {
        let issues = parse(FILE, TWO).unwrap();
        let json = serde_json::to_value(&issues[0]).unwrap();
        assert_eq!(json["versions"], "<1.1.0");
        let back: Vec<KnownIssue> = serde_json::from_str(&serde_json::to_string(&issues).unwrap()).unwrap();
        assert_eq!(back, issues);
        // A publisher leaving out the optional keys gets the defaults.
        let minimal: KnownIssue =
            serde_json::from_str(r#"{"id":"KI-9","title":"t","families":["*"],"summary":"s"}"#).unwrap();
        assert!(minimal.affects("any", &v("9.9.9")));
    }

    #[test]
    fn bad_range_is_named_at_its_value() {
        let e = err("[[issue]]\nid = \"KI-1\"\ntitle = \"t\"\nfamilies = [\"*\"]\nversions = \"<<1\"\nsummary = \"s\"\n");
        assert_eq!((e.line, e.column), (5, 12));
        assert!(matches!(&e.problem, Problem::BadRange { range, .. } if range == "<<1"), "{e}");
        assert!(e
            .to_string()
            .starts_with("runbook/known-issues.toml:5:12: `versions`: `<<1` is not a semver range"));
    }

    #[test]
    fn unknown_key_is_refused_where_it_is() {
        let e = err("[[issue]]\nid = \"KI-1\"\ntitle = \"t\"\nfamilies = [\"*\"]\nsummary = \"s\"\n  severity = \"high\"\n");
        assert_eq!((e.line, e.column), (6, 3), "{e}");
        assert!(e.to_string().contains("severity"), "{e}");
    }

    #[test]
    fn missing_key_and_bad_toml_are_located() {
        let e = err("[[issue]]\nid = \"KI-1\"\ntitle = \"t\"\nsummary = \"s\"\n");
        assert_eq!(e.line, 1, "{e}");
        assert!(e.to_string().contains("families"), "{e}");
        let e = err("[[issue]]\nid = \"KI-1\"\ntitle = t\n");
        assert_eq!((e.line, e.column), (3, 9), "{e}");
        assert!(matches!(e.problem, Problem::Syntax(_)));
    }

    #[test]
    fn bad_values_are_located() {
        let base = "[[issue]]\nid = \"KI-1\"\ntitle = \"t\"\nfamilies = [\"*\"]\nsummary = \"s\"\n";
        let e = err(&format!(
            "{base}[[issue]]\nid = \"KI-1\"\ntitle = \"u\"\nfamilies = [\"*\"]\nsummary = \"s\"\n"
        ));
        assert_eq!((e.line, e.column), (7, 6));
        assert_eq!(e.problem, Problem::DuplicateId { id: "KI-1".into(), first_line: 2 });

        let e = err(&base.replace("[\"*\"]", "[\"debian-minimal\", \"Web Role\"]"));
        assert_eq!((e.line, e.column), (4, 31));
        assert_eq!(e.problem, Problem::BadFamily { name: "Web Role".into() });

        let e = err(&base.replace("[\"*\"]", "[]"));
        assert_eq!((e.line, e.problem), (4, Problem::Empty { field: "families" }));

        let e = err(&base.replace("\"s\"", "\"  \""));
        assert_eq!((e.line, e.column, e.problem), (5, 11, Problem::Empty { field: "summary" }));

        let e = err(&base.replace("KI-1", "KI 1"));
        assert_eq!((e.line, e.problem), (2, Problem::BadId { id: "KI 1".into() }));
    }

    #[test]
    fn the_repository_file_parses() {
        let text = include_str!("../../runbook/known-issues.toml");
        let issues = parse(FILE, text).unwrap();
        assert!(!issues.is_empty());
        for i in &issues {
            if let Some(r) = &i.runbook {
                if !r.contains("://") {
                    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(r);
                    assert!(path.is_file(), "{}: runbook {r} does not exist", i.id);
                }
            }
        }
    }
}
