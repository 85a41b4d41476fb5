//! Debian control paragraphs (deb822): parsing a package's `control` member, and writing the paragraph dpkg
//! keeps for it in `var/lib/dpkg/status` — dpkg's field order, its spelling of known field names, its
//! normalization of values (trimmed, relation fields reformatted, a zero epoch dropped) — so that the database
//! written here reads exactly like one written by `dpkg --unpack`.

use std::fmt::Write as _;

/// A problem in a control paragraph.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("the control paragraph has no `{0}` field")]
    MissingField(&'static str),
    #[error("the control member is not UTF-8")]
    NotUtf8,
}

/// One field: its name as written and its value (the first line trimmed, continuation lines kept as written
/// with their leading space, trailing white space of the whole value removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

/// A control paragraph: fields in the order written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Paragraph {
    pub fields: Vec<Field>,
}

impl Paragraph {
    /// Parse a single paragraph (blank lines before and after it are allowed, a second paragraph is not).
    pub fn parse(text: &str) -> Result<Self, ControlError> {
        let mut fields: Vec<Field> = Vec::new();
        let mut ended = false;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            if raw.trim().is_empty() {
                if !fields.is_empty() {
                    ended = true;
                }
                continue;
            }
            if ended {
                return Err(ControlError::Syntax { line: line_no, message: "a second paragraph".to_owned() });
            }
            if raw.starts_with(' ') || raw.starts_with('\t') {
                let Some(last) = fields.last_mut() else {
                    return Err(ControlError::Syntax {
                        line: line_no,
                        message: "a continuation line before any field".to_owned(),
                    });
                };
                last.value.push('\n');
                last.value.push_str(raw);
                continue;
            }
            let Some((name, value)) = raw.split_once(':') else {
                return Err(ControlError::Syntax {
                    line: line_no,
                    message: format!("`{raw}` is not `Name: value`"),
                });
            };
            if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
                return Err(ControlError::Syntax {
                    line: line_no,
                    message: format!("bad field name `{name}`"),
                });
            }
            if fields.iter().any(|f| f.name.eq_ignore_ascii_case(name)) {
                return Err(ControlError::Syntax {
                    line: line_no,
                    message: format!("duplicate field `{name}`"),
                });
            }
            fields.push(Field { name: name.to_owned(), value: value.trim_start().to_owned() });
        }
        for f in &mut fields {
            let trimmed = f.value.trim_end().len();
            f.value.truncate(trimmed);
        }
        Ok(Self { fields })
    }

    /// A field's value; names compare case-insensitively, as dpkg does.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value.as_str())
    }

    /// A field that must be there.
    pub fn require(&self, name: &'static str) -> Result<&str, ControlError> {
        self.get(name).filter(|v| !v.is_empty()).ok_or(ControlError::MissingField(name))
    }
}

/// Known fields of dpkg's status file, in the order dpkg writes them; other fields follow in the order of the
/// package's control file.
const STATUS_ORDER: &[&str] = &[
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Description",
    "Triggers-Pending",
    "Triggers-Awaited",
];

/// Fields whose value is a list of package relations, which dpkg parses and writes back in its own form.
const RELATION_FIELDS: &[&str] = &[
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
];

/// Fields that describe the database state rather than the package: never copied from a control file.
const STATE_FIELDS: &[&str] =
    &["Status", "Config-Version", "Conffiles", "Triggers-Pending", "Triggers-Awaited"];

/// Fields that only the `available` file and repository indices carry.
const INDEX_FIELDS: &[&str] = &["Filename", "Size", "MD5sum", "MSDOS-Filename"];

/// dpkg's status paragraph for a package: its control fields in dpkg's order and form, the given `Status:`
/// value (e.g. `install ok unpacked`) and `Conffiles:` lines (`path hash`, where the hash is `newconffile` for
/// a conffile unpacked but not yet configured). Ends with the blank line that separates paragraphs.
pub fn status_paragraph(control: &Paragraph, status: &str, conffiles: &[(String, String)]) -> String {
    let mut out = String::new();
    for &known in STATUS_ORDER {
        match known {
            "Status" => {
                let _ = writeln!(out, "Status: {status}");
            }
            "Conffiles" => {
                if !conffiles.is_empty() {
                    out.push_str("Conffiles:\n");
                    for (path, hash) in conffiles {
                        let _ = writeln!(out, " {path} {hash}");
                    }
                }
            }
            _ if STATE_FIELDS.contains(&known) => {}
            _ => {
                let Some(value) = control.get(known) else { continue };
                if let Some(value) = status_value(known, value) {
                    let _ = writeln!(out, "{known}: {value}");
                }
            }
        }
    }
    for f in &control.fields {
        let known = STATUS_ORDER.iter().chain(INDEX_FIELDS).any(|k| k.eq_ignore_ascii_case(&f.name));
        if !known {
            let _ = writeln!(out, "{}: {}", f.name, f.value);
        }
    }
    out.push('\n');
    out
}

/// The value dpkg writes for a known field, or `None` when it leaves the field out.
fn status_value(field: &str, value: &str) -> Option<String> {
    match field {
        "Essential" | "Protected" => value.eq_ignore_ascii_case("yes").then(|| "yes".to_owned()),
        "Multi-Arch" => (!value.eq_ignore_ascii_case("no")).then(|| value.to_ascii_lowercase()),
        "Version" => Some(normalize_version(value).to_owned()),
        _ if RELATION_FIELDS.contains(&field) => Some(normalize_relations(value)),
        _ => Some(value.to_owned()),
    }
}

/// A version as dpkg prints it: a zero epoch is dropped (`0:1.0` is `1.0`).
pub fn normalize_version(version: &str) -> &str {
    match version.split_once(':') {
        Some((epoch, rest)) if !epoch.is_empty() && epoch.bytes().all(|b| b == b'0') => rest,
        _ => version,
    }
}

/// A relation field as dpkg writes it back: `a, b (>= 1) | c:any`, one space around operators and
/// separators; the obsolete operators `<` and `>` become `<=` and `>=`, as dpkg reads them.
pub fn normalize_relations(value: &str) -> String {
    let groups: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|group| {
            group.split('|').map(|alt| normalize_relation(alt.trim())).collect::<Vec<_>>().join(" | ")
        })
        .collect();
    groups.join(", ")
}

fn normalize_relation(rel: &str) -> String {
    let (name, rest) = match rel.find(|c: char| c.is_whitespace() || c == '(' || c == '[' || c == '<') {
        Some(i) => (&rel[..i], rel[i..].trim()),
        None => (rel, ""),
    };
    let mut out = name.to_owned();
    if let Some(inner) = rest.strip_prefix('(').and_then(|r| r.split_once(')')) {
        let (constraint, tail) = inner;
        let constraint = constraint.trim();
        let op_len = constraint.find(|c: char| !matches!(c, '<' | '>' | '=')).unwrap_or(constraint.len());
        let (op, version) = constraint.split_at(op_len);
        let op = match op {
            "<" => "<=",
            ">" => ">=",
            other => other,
        };
        let _ = write!(out, " ({op} {})", normalize_version(version.trim()));
        let tail = tail.trim();
        if !tail.is_empty() {
            out.push(' ');
            out.push_str(tail);
        }
    } else if !rest.is_empty() {
        out.push(' ');
        out.push_str(rest);
    }
    out
}

/// The package names a relation field mentions, alternatives included, without architecture qualifiers or
/// version constraints.
pub fn relation_names(value: &str) -> impl Iterator<Item = &str> {
    value.split([',', '|']).filter_map(|rel| {
        let rel = rel.trim();
        let end =
            rel.find(|c: char| c.is_whitespace() || c == '(' || c == '[' || c == '<').unwrap_or(rel.len());
        let name = rel[..end].split(':').next().unwrap_or("");
        (!name.is_empty()).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_continuations_and_rejects_garbage() {
        let p =
            Paragraph::parse("\nPackage: a\nDescription: short\n long\n .\n more  \nX-Y:  v \n\n").unwrap();
        assert_eq!(p.get("package"), Some("a"));
        assert_eq!(p.get("Description"), Some("short\n long\n .\n more"));
        assert_eq!(p.get("X-Y"), Some("v"));
        assert!(matches!(Paragraph::parse(" lead\n"), Err(ControlError::Syntax { line: 1, .. })));
        assert!(matches!(Paragraph::parse("A: 1\n\nB: 2\n"), Err(ControlError::Syntax { line: 3, .. })));
        assert!(matches!(Paragraph::parse("A: 1\na: 2\n"), Err(ControlError::Syntax { line: 2, .. })));
        assert!(matches!(Paragraph::parse("novalue\n"), Err(ControlError::Syntax { .. })));
        assert_eq!(p.require("Version"), Err(ControlError::MissingField("Version")));
    }

    #[test]
    fn status_paragraph_uses_dpkg_order_and_forms() {
        // Reference: what dpkg 1.21 writes to its status file after `dpkg --unpack` of this control file.
        let control = Paragraph::parse(
            "Package: qq\nDescription: d\n long\nHomepage: https://h\nVcs-Git: https://v\nBreaks: x (<1), y (>2)\n\
             Depends: a,b (>=1)|c:any ,  d  ( <<  2 )\nVersion: 0:1.0-1\nMulti-Arch: same\nArchitecture: amd64\n\
             Maintainer: M <m@e>\nInstalled-Size:  12\nSection: libs\nProtected: no\nEssential: yes\nTag: a::b\n",
        )
        .unwrap();
        let conffiles = vec![("/etc/qq.conf".to_owned(), "newconffile".to_owned())];
        let expected = "Package: qq\nEssential: yes\nStatus: install ok unpacked\nSection: libs\nInstalled-Size: 12\n\
             Maintainer: M <m@e>\nArchitecture: amd64\nMulti-Arch: same\nVersion: 1.0-1\n\
             Depends: a, b (>= 1) | c:any, d (<< 2)\nBreaks: x (<= 1), y (>= 2)\nConffiles:\n /etc/qq.conf newconffile\n\
             Description: d\n long\nHomepage: https://h\nVcs-Git: https://v\nTag: a::b\n\n";
        assert_eq!(status_paragraph(&control, "install ok unpacked", &conffiles), expected);
    }

    #[test]
    fn relation_names_strip_versions_and_qualifiers() {
        let names: Vec<_> = relation_names("libc6 (>= 2.36), perl:any | awk, foo [amd64]").collect();
        assert_eq!(names, ["libc6", "perl", "awk", "foo"]);
    }
}
