//! Binary package records of a `Packages` index: the fields that dependency resolution and downloading
//! need, parsed and checked.

use std::{fmt, sync::Arc};

use thiserror::Error;

use crate::{
    control::{self, ControlError},
    relation::{self, Alternatives, Provide, Relation, RelationError},
    release::Sha256,
    version::{Version, VersionError},
};

/// `Priority:` of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Required,
    Important,
    Standard,
    Optional,
    Extra,
}

impl Priority {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "required" => Self::Required,
            "important" => Self::Important,
            "standard" => Self::Standard,
            "optional" => Self::Optional,
            "extra" => Self::Extra,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Important => "important",
            Self::Standard => "standard",
            Self::Optional => "optional",
            Self::Extra => "extra",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Multi-Arch:` of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultiArch {
    #[default]
    No,
    Same,
    Foreign,
    Allowed,
}

/// One binary package of an index.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    pub name: String,
    pub version: Version,
    pub architecture: String,
    pub multi_arch: MultiArch,
    pub essential: bool,
    pub priority: Option<Priority>,
    pub pre_depends: Vec<Alternatives>,
    pub depends: Vec<Alternatives>,
    pub conflicts: Vec<Relation>,
    pub breaks: Vec<Relation>,
    pub provides: Vec<Provide>,
    /// Path of the `.deb` relative to the mirror root, e.g. `pool/main/a/apt/apt_2.6.1_amd64.deb`.
    pub filename: String,
    pub size: u64,
    pub sha256: Sha256,
    /// The mirror the package was listed by (the base of [`Package::filename`]).
    pub mirror: Arc<str>,
}

impl Package {
    /// `name version`, for messages.
    pub fn id(&self) -> String {
        format!("{} {}", self.name, self.version)
    }

    /// The download URL of the `.deb`.
    pub fn url(&self) -> String {
        format!("{}/{}", self.mirror.trim_end_matches('/'), self.filename.trim_start_matches('/'))
    }
}

/// A problem in a Packages index.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PackagesError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("line {line}: package record without a Package field")]
    NoName { line: usize },
    #[error("line {line}: package {package}: missing field {field}")]
    MissingField { line: usize, package: String, field: &'static str },
    #[error("line {line}: package {package}: {source}")]
    Version { line: usize, package: String, source: VersionError },
    #[error("line {line}: package {package}: field {field}: {source}")]
    Relation { line: usize, package: String, field: &'static str, source: RelationError },
    #[error("line {line}: package {package}: invalid {field} {value:?}")]
    Invalid { line: usize, package: String, field: &'static str, value: String },
}

/// Parses a Packages index. `mirror` is the base URL its `Filename` fields are relative to.
pub fn parse_packages(text: &str, mirror: &Arc<str>) -> Result<Vec<Package>, PackagesError> {
    let mut out = Vec::new();
    for para in control::paragraphs(text) {
        let para = para?;
        let name = para.get("Package").ok_or(PackagesError::NoName { line: para.line })?;
        let line = para.line;
        let package = || name.to_owned();
        let required = |field: &'static str| {
            para.get(field).ok_or_else(|| PackagesError::MissingField { line, package: package(), field })
        };
        let invalid = |field: &'static str, value: &str| PackagesError::Invalid {
            line,
            package: package(),
            field,
            value: value.to_owned(),
        };
        let version = Version::parse(required("Version")?).map_err(|source| PackagesError::Version {
            line,
            package: package(),
            source,
        })?;
        let rel_err = |field: &'static str| {
            move |source| PackagesError::Relation { line, package: package(), field, source }
        };
        let groups = |field: &'static str| {
            relation::parse_relations(para.get(field).unwrap_or("")).map_err(rel_err(field))
        };
        let list = |field: &'static str| {
            relation::parse_relation_list(para.get(field).unwrap_or("")).map_err(rel_err(field))
        };
        let multi_arch = match para.get("Multi-Arch").map(str::to_ascii_lowercase).as_deref() {
            None | Some("no") => MultiArch::No,
            Some("same") => MultiArch::Same,
            Some("foreign") => MultiArch::Foreign,
            Some("allowed") => MultiArch::Allowed,
            Some(other) => return Err(invalid("Multi-Arch", other)),
        };
        let essential = match para.get("Essential").map(str::to_ascii_lowercase).as_deref() {
            None | Some("no") => false,
            Some("yes") => true,
            Some(other) => return Err(invalid("Essential", other)),
        };
        let size_text = required("Size")?;
        let sha_text = required("SHA256")?;
        out.push(Package {
            name: name.to_owned(),
            version,
            architecture: required("Architecture")?.to_owned(),
            multi_arch,
            essential,
            priority: para.get("Priority").and_then(Priority::parse),
            pre_depends: groups("Pre-Depends")?,
            depends: groups("Depends")?,
            conflicts: list("Conflicts")?,
            breaks: list("Breaks")?,
            provides: relation::parse_provides(para.get("Provides").unwrap_or(""))
                .map_err(rel_err("Provides"))?,
            filename: required("Filename")?.to_owned(),
            size: size_text.parse().map_err(|_| invalid("Size", size_text))?,
            sha256: sha_text.parse().map_err(|_| invalid("SHA256", sha_text))?,
            mirror: mirror.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    fn mirror() -> Arc<str> {
        Arc::from("http://127.0.0.1:1/debian/")
    }

    #[test]
    fn parses_a_record() {
        let text = format!(
            "Package: foo\nVersion: 1:2.0-1\nArchitecture: amd64\nMulti-Arch: allowed\nEssential: yes\n\
             Priority: required\nPre-Depends: libc6 (>= 2.34)\nDepends: a | b, c:any\nConflicts: old-foo (<< 1)\n\
             Breaks: bar\nProvides: foo-virtual (= 2.0)\nFilename: pool/main/f/foo/foo_2.0-1_amd64.deb\n\
             Size: 1234\nSHA256: {SHA}\nDescription: a\n multi-line text\n\nPackage: bar\nVersion: 1\n\
             Architecture: all\nFilename: pool/b.deb\nSize: 1\nSHA256: {SHA}\n"
        );
        let p = parse_packages(&text, &mirror()).unwrap();
        assert_eq!(p.len(), 2);
        let foo = &p[0];
        assert_eq!(foo.id(), "foo 1:2.0-1");
        assert!(foo.essential);
        assert_eq!(foo.priority, Some(Priority::Required));
        assert_eq!(foo.multi_arch, MultiArch::Allowed);
        assert_eq!(foo.pre_depends.len(), 1);
        assert_eq!(foo.depends.len(), 2);
        assert_eq!(foo.depends[0].0.len(), 2);
        assert_eq!(foo.conflicts[0].name, "old-foo");
        assert_eq!(foo.breaks[0].name, "bar");
        assert_eq!(foo.provides[0].version.as_ref().unwrap().as_str(), "2.0");
        assert_eq!(foo.size, 1234);
        assert_eq!(foo.sha256.to_hex(), SHA);
        assert_eq!(foo.url(), "http://127.0.0.1:1/debian/pool/main/f/foo/foo_2.0-1_amd64.deb");
        assert!(!p[1].essential);
        assert_eq!(p[1].priority, None);
    }

    #[test]
    fn errors_name_the_package_and_field() {
        let e =
            parse_packages("Package: foo\nVersion: 1\nArchitecture: all\nFilename: f\nSize: 1\n", &mirror())
                .unwrap_err();
        assert_eq!(e, PackagesError::MissingField { line: 1, package: "foo".into(), field: "SHA256" });
        let e = parse_packages(
            &format!("\nPackage: foo\nVersion: 1\nArchitecture: all\nDepends: a (>= \nFilename: f\nSize: 1\nSHA256: {SHA}\n"),
            &mirror(),
        )
        .unwrap_err();
        assert!(matches!(e, PackagesError::Relation { line: 2, field: "Depends", .. }), "{e:?}");
        let e = parse_packages(
            &format!("Package: foo\nVersion: 1\nArchitecture: all\nFilename: f\nSize: big\nSHA256: {SHA}\n"),
            &mirror(),
        )
        .unwrap_err();
        assert!(matches!(e, PackagesError::Invalid { field: "Size", .. }));
    }
}
