//! Package relationship fields (Debian Policy 7.1): `Depends`, `Pre-Depends`, `Conflicts`, `Breaks`,
//! `Provides`. A field is a comma-separated list of groups; a group is a `|`-separated list of
//! alternatives; each alternative is `name[:archqual] [(op version)] [[arch ...]] [<profile ...>]`.

use std::fmt;

use thiserror::Error;

use crate::version::{Version, VersionError};

/// A malformed relationship field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid relationship {input:?}: {reason}")]
pub struct RelationError {
    /// The part of the field that failed to parse.
    pub input: String,
    pub reason: String,
}

/// A version comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `<<`
    Lt,
    /// `<=` (and the obsolete `<`)
    Le,
    /// `=`
    Eq,
    /// `>=` (and the obsolete `>`)
    Ge,
    /// `>>`
    Gt,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }

    /// Whether `version OP wanted` holds.
    pub fn holds(self, version: &Version, wanted: &Version) -> bool {
        use std::cmp::Ordering::*;
        let ord = version.cmp(wanted);
        match self {
            Op::Lt => ord == Less,
            Op::Le => ord != Greater,
            Op::Eq => ord == Equal,
            Op::Ge => ord != Less,
            Op::Gt => ord == Greater,
        }
    }
}

/// A version constraint, e.g. `>= 1.2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub op: Op,
    pub version: Version,
}

impl Constraint {
    pub fn matches(&self, version: &Version) -> bool {
        self.op.holds(version, &self.version)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.version)
    }
}

/// An architecture restriction entry, `amd64` or `!i386`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchSpec {
    pub negated: bool,
    pub arch: String,
}

/// One alternative of a relationship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    /// `any`, `native` or an architecture name after a colon.
    pub arch_qualifier: Option<String>,
    pub constraint: Option<Constraint>,
    /// `[amd64 !i386]` restrictions (source packages mostly; empty when absent).
    pub arches: Vec<ArchSpec>,
    /// `<!nocheck>` build-profile formulas, kept as written (each inner list is one `<...>` group).
    pub profiles: Vec<Vec<String>>,
}

impl Relation {
    /// Whether the relation applies on architecture `arch` (its `[...]` restriction list allows it).
    pub fn applies_to(&self, arch: &str) -> bool {
        if self.arches.is_empty() {
            return true;
        }
        let negated = self.arches.iter().all(|a| a.negated);
        if negated {
            !self.arches.iter().any(|a| a.arch == arch)
        } else {
            self.arches.iter().any(|a| a.arch == arch)
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(q) = &self.arch_qualifier {
            write!(f, ":{q}")?;
        }
        if let Some(c) = &self.constraint {
            write!(f, " ({c})")?;
        }
        if !self.arches.is_empty() {
            let list: Vec<String> = self
                .arches
                .iter()
                .map(|a| format!("{}{}", if a.negated { "!" } else { "" }, a.arch))
                .collect();
            write!(f, " [{}]", list.join(" "))?;
        }
        for p in &self.profiles {
            write!(f, " <{}>", p.join(" "))?;
        }
        Ok(())
    }
}

/// A group of alternatives (`a | b`): satisfied when any one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternatives(pub Vec<Relation>);

impl fmt::Display for Alternatives {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            r.fmt(f)?;
        }
        Ok(())
    }
}

/// A `Provides` entry: a virtual package name and, for versioned provides, its version (`= v` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provide {
    pub name: String,
    pub version: Option<Version>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_')
}

/// Parses one alternative, e.g. `libc6 (>= 2.36)` or `python3:any`.
pub fn parse_relation(text: &str) -> Result<Relation, RelationError> {
    let err = |reason: &str| RelationError { input: text.trim().to_owned(), reason: reason.to_owned() };
    let mut rest = text.trim();
    let name_len = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
    let name = &rest[..name_len];
    if name.is_empty() {
        return Err(err("missing package name"));
    }
    rest = &rest[name_len..];
    let mut arch_qualifier = None;
    if let Some(r) = rest.strip_prefix(':') {
        let len = r.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap_or(r.len());
        if len == 0 {
            return Err(err("empty architecture qualifier"));
        }
        arch_qualifier = Some(r[..len].to_owned());
        rest = &r[len..];
    }
    rest = rest.trim_start();
    let mut constraint = None;
    if let Some(r) = rest.strip_prefix('(') {
        let close = r.find(')').ok_or_else(|| err("unclosed `(`"))?;
        let inner = r[..close].trim();
        let (op, ver) = [
            ("<<", Op::Lt),
            ("<=", Op::Le),
            (">=", Op::Ge),
            (">>", Op::Gt),
            ("=", Op::Eq),
            ("<", Op::Le),
            (">", Op::Ge),
        ]
        .iter()
        .find_map(|(s, op)| inner.strip_prefix(s).map(|v| (*op, v)))
        .ok_or_else(|| err("expected a version operator (<<, <=, =, >=, >>)"))?;
        let version = Version::parse(ver.trim()).map_err(|e: VersionError| err(&e.to_string()))?;
        constraint = Some(Constraint { op, version });
        rest = r[close + 1..].trim_start();
    }
    let mut arches = Vec::new();
    if let Some(r) = rest.strip_prefix('[') {
        let close = r.find(']').ok_or_else(|| err("unclosed `[`"))?;
        for a in r[..close].split_whitespace() {
            let (negated, arch) = match a.strip_prefix('!') {
                Some(x) => (true, x),
                None => (false, a),
            };
            arches.push(ArchSpec { negated, arch: arch.to_owned() });
        }
        if arches.is_empty() {
            return Err(err("empty architecture list"));
        }
        if arches.iter().any(|a| a.negated) != arches.iter().all(|a| a.negated) {
            return Err(err("architecture list mixes negated and plain entries"));
        }
        rest = r[close + 1..].trim_start();
    }
    let mut profiles = Vec::new();
    while let Some(r) = rest.strip_prefix('<') {
        let close = r.find('>').ok_or_else(|| err("unclosed `<`"))?;
        profiles.push(r[..close].split_whitespace().map(str::to_owned).collect());
        rest = r[close + 1..].trim_start();
    }
    if !rest.is_empty() {
        return Err(err(&format!("unexpected {rest:?}")));
    }
    Ok(Relation { name: name.to_owned(), arch_qualifier, constraint, arches, profiles })
}

/// Parses a relationship field such as `Depends`. An empty field is an empty list.
pub fn parse_relations(text: &str) -> Result<Vec<Alternatives>, RelationError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|group| {
            if group.trim().is_empty() {
                return Err(RelationError { input: text.trim().to_owned(), reason: "empty entry".into() });
            }
            group.split('|').map(parse_relation).collect::<Result<Vec<_>, _>>().map(Alternatives)
        })
        .collect()
}

/// Parses a field without alternatives (`Conflicts`, `Breaks`, `Replaces`).
pub fn parse_relation_list(text: &str) -> Result<Vec<Relation>, RelationError> {
    parse_relations(text)?
        .into_iter()
        .map(|g| {
            let mut alts = g.0;
            if alts.len() != 1 {
                return Err(RelationError {
                    input: Alternatives(alts).to_string(),
                    reason: "alternatives are not allowed in this field".into(),
                });
            }
            Ok(alts.remove(0))
        })
        .collect()
}

/// Parses a `Provides` field: names with an optional `(= version)`.
pub fn parse_provides(text: &str) -> Result<Vec<Provide>, RelationError> {
    parse_relation_list(text)?
        .into_iter()
        .map(|r| match r.constraint {
            None => Ok(Provide { name: r.name, version: None }),
            Some(Constraint { op: Op::Eq, version }) => Ok(Provide { name: r.name, version: Some(version) }),
            Some(c) => Err(RelationError {
                input: format!("{} ({c})", r.name),
                reason: "a provided version must use `=`".into(),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups_alternatives_constraints_and_qualifiers() {
        let deps = parse_relations(
            "libc6 (>= 2.34), perl:any, debconf (>= 0.5) | debconf-2.0,\n libfoo (<< 2~) [amd64] <!nocheck>",
        )
        .unwrap();
        assert_eq!(deps.len(), 4);
        assert_eq!(deps[0].0[0].name, "libc6");
        assert_eq!(deps[0].0[0].constraint.as_ref().unwrap().op, Op::Ge);
        assert_eq!(deps[0].0[0].constraint.as_ref().unwrap().version.as_str(), "2.34");
        assert_eq!(deps[1].0[0].arch_qualifier.as_deref(), Some("any"));
        assert_eq!(deps[2].0.len(), 2);
        assert_eq!(deps[2].0[1].name, "debconf-2.0");
        assert_eq!(deps[3].0[0].arches, vec![ArchSpec { negated: false, arch: "amd64".into() }]);
        assert_eq!(deps[3].0[0].profiles, vec![vec!["!nocheck".to_owned()]]);
        assert_eq!(deps[2].to_string(), "debconf (>= 0.5) | debconf-2.0");
        assert_eq!(deps[3].to_string(), "libfoo (<< 2~) [amd64] <!nocheck>");
    }

    #[test]
    fn operators_and_their_meaning() {
        let v = |s| Version::parse(s).unwrap();
        let c = |s: &str| parse_relation(s).unwrap().constraint.unwrap();
        assert!(c("a (<< 2)").matches(&v("1.9")));
        assert!(!c("a (<< 2)").matches(&v("2")));
        assert!(c("a (<= 2)").matches(&v("2")));
        assert!(c("a (= 2)").matches(&v("2-0")));
        assert!(c("a (>= 2)").matches(&v("2")));
        assert!(!c("a (>> 2)").matches(&v("2")));
        assert!(c("a (>> 2)").matches(&v("2.0.1")));
        // Obsolete single-character operators mean <= and >=.
        assert_eq!(c("a (< 2)").op, Op::Le);
        assert_eq!(c("a (> 2)").op, Op::Ge);
        assert_eq!(c("a(>=1.0)").version.as_str(), "1.0");
    }

    #[test]
    fn arch_restrictions() {
        let r = parse_relation("a [!i386 !arm64]").unwrap();
        assert!(r.applies_to("amd64"));
        assert!(!r.applies_to("i386"));
        let r = parse_relation("a [i386]").unwrap();
        assert!(!r.applies_to("amd64"));
    }

    #[test]
    fn provides_may_be_versioned_with_equals_only() {
        let p = parse_provides("editor, awk (= 1.3), libfoo-abi-2").unwrap();
        assert_eq!(p[1].name, "awk");
        assert_eq!(p[1].version.as_ref().unwrap().as_str(), "1.3");
        assert!(p[0].version.is_none());
        assert!(parse_provides("awk (>= 1)").is_err());
        assert!(parse_provides("a | b").is_err());
    }

    #[test]
    fn malformed_fields_are_errors() {
        for bad in
            ["a (>= 1", "a (~ 1)", "a (>= )", "a b", ", a", "a,,b", "a |", "(>= 1)", "a [i386 !amd64]", "a:"]
        {
            assert!(parse_relations(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_relations("  ").unwrap().is_empty());
    }
}
