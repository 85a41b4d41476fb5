//! The image's software bill of materials: an SPDX 2.3 JSON document made from the image's dpkg database.
//!
//! [`Sbom::from_dpkg`] is pure: it takes the text of `/var/lib/dpkg/status`, a lookup of each package's
//! `/usr/share/doc/NAME/copyright`, the `.deb` files the build resolved (for their sha256 and archive URL)
//! and the image's identity, and gives a document with
//!
//! - one package for the image (`SPDXRef-Image`), described by the document, and for a derived image one for
//!   its parent (`SPDXRef-ParentImage`, with the parent's OCI manifest digest), the image `DESCENDANT_OF` it;
//! - one package per installed dpkg package (`SPDXRef-Package-deb-NAME.ARCH`, a `+` in the name spelled
//!   `PLUS`): version, supplier from `Maintainer`, the archive URL as download location, the `.deb`'s
//!   sha256, a `pkg:deb` purl, the source package, and the license the machine-readable (DEP-5) copyright
//!   file gives its `Files: *` paragraph (else `NOASSERTION`); the image `CONTAINS` each;
//! - `DEPENDS_ON` from each package to the installed packages satisfying its `Pre-Depends` and `Depends`:
//!   per group, the first alternative some installed package satisfies, by its own name and version or by a
//!   `Provides` (a versioned dependency only through a versioned provide), every such package.
//!
//! Nothing in it depends on the clock or on chance: the namespace is made of the image's name, version and
//! tree digest, `created` is SOURCE_DATE_EPOCH, and every list is sorted, so equal inputs give equal bytes.

use std::collections::{BTreeMap, BTreeSet};

use kiln_blueprint::manifest::Parent;
use kiln_debian::{
    control,
    relation::{self, Alternatives, Relation},
    Version,
};
use serde::{Deserialize, Serialize};

/// The SPDX version this module writes.
pub const SPDX_VERSION: &str = "SPDX-2.3";
/// The file name of the SBOM in a build output folder.
pub const SBOM_FILE: &str = "sbom.spdx.json";
/// SPDX id of the image's package.
pub const IMAGE_ID: &str = "SPDXRef-Image";
/// SPDX id of the parent image's package (derived images).
pub const PARENT_ID: &str = "SPDXRef-ParentImage";
const NOASSERTION: &str = "NOASSERTION";

/// A `.deb` the build resolved and installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebInfo {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Hex sha256 of the `.deb` file (as the verified index lists it).
    pub sha256: String,
    /// Path of the `.deb` in the archive, e.g. `pool/main/a/apt/apt_2.6.1_amd64.deb`.
    pub archive_path: String,
    /// The download URL: the mirror joined with [`DebInfo::archive_path`].
    pub url: String,
}

impl From<&kiln_debian::Package> for DebInfo {
    fn from(p: &kiln_debian::Package) -> Self {
        Self {
            name: p.name.clone(),
            version: p.version.to_string(),
            architecture: p.architecture.clone(),
            sha256: p.sha256.to_hex(),
            archive_path: p.filename.clone(),
            url: p.url(),
        }
    }
}

/// What the SBOM says about the image itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub name: String,
    pub version: String,
    /// `sha256:…` of the normalized root tree.
    pub tree_digest: String,
    /// The purl `distro` qualifier, e.g. `debian-12` (see [`distro_from_os_release`]).
    pub distro: Option<String>,
    /// The image a derived build started FROM.
    pub parent: Option<Parent>,
}

/// A problem with the inputs of the SBOM.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("dpkg status: {0}")]
    Status(#[from] control::ControlError),
    #[error("dpkg status, line {line}: package record without a {field} field")]
    MissingField { line: usize, field: &'static str },
    #[error("dpkg status: package {package}: version {version:?}: {source}")]
    Version { package: String, version: String, source: kiln_debian::version::VersionError },
    #[error("dpkg status: package {package}: field {field}: {source}")]
    Relation { package: String, field: &'static str, source: relation::RelationError },
    #[error("SOURCE_DATE_EPOCH {0} is not a representable date")]
    Epoch(i64),
}

/// An SPDX 2.3 document (the subset of fields kiln writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sbom {
    #[serde(rename = "spdxVersion")]
    pub spdx_version: String,
    pub data_license: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    pub packages: Vec<SpdxPackage>,
    pub relationships: Vec<Relationship>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub has_extracted_licensing_infos: Vec<ExtractedLicense>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationInfo {
    /// ISO 8601 UTC, from SOURCE_DATE_EPOCH.
    pub created: String,
    pub creators: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpdxPackage {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier: Option<String>,
    pub download_location: String,
    pub files_analyzed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_info: Option<String>,
    pub license_concluded: String,
    pub license_declared: String,
    pub copyright_text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_package_purpose: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    pub algorithm: String,
    pub checksum_value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    pub reference_category: String,
    pub reference_type: String,
    pub reference_locator: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: String,
    pub related_spdx_element: String,
}

/// A `LicenseRef-…`: a license a copyright file names that has no SPDX identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractedLicense {
    pub license_id: String,
    pub name: String,
    pub extracted_text: String,
}

/// One installed package of the dpkg database.
#[derive(Debug)]
struct Installed {
    name: String,
    version: Version,
    arch: String,
    multi_arch_foreign: bool,
    maintainer: Option<String>,
    source: Option<(String, String)>,
    homepage: Option<String>,
    summary: Option<String>,
    depends: Vec<Alternatives>,
    provides: Vec<relation::Provide>,
}

impl Sbom {
    /// The SBOM of an image; see the module documentation. `copyright(name)` gives the text of
    /// `/usr/share/doc/NAME/copyright` in the image, if it has one; `created` is SOURCE_DATE_EPOCH.
    pub fn from_dpkg(
        status: &str,
        copyright: &dyn Fn(&str) -> Option<String>,
        debs: &[DebInfo],
        image: &ImageInfo,
        created: i64,
    ) -> Result<Self, SbomError> {
        let created = time::OffsetDateTime::from_unix_timestamp(created)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .ok_or(SbomError::Epoch(created))?;
        let mut installed = parse_status(status)?;
        installed.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
        let debs: BTreeMap<(&str, &str, &str), &DebInfo> = debs
            .iter()
            .map(|d| ((d.name.as_str(), d.version.as_str(), d.architecture.as_str()), d))
            .collect();

        let mut licenses = LicenseRefs::default();
        let mut packages = vec![image_package(image)];
        let mut relationships = vec![rel("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE_ID)];
        if let Some(parent) = &image.parent {
            packages.push(parent_package(parent));
            relationships.push(rel(IMAGE_ID, "DESCENDANT_OF", PARENT_ID));
        }
        for p in &installed {
            let deb = debs.get(&(p.name.as_str(), p.version.as_str(), p.arch.as_str()));
            let declared = copyright(&p.name)
                .and_then(|text| dep5_license(&text))
                .map(|(expr, texts)| licenses.expression(&expr, &texts))
                .unwrap_or_else(|| NOASSERTION.to_owned());
            packages.push(deb_package(p, deb.copied(), image.distro.as_deref(), declared));
            relationships.push(rel(IMAGE_ID, "CONTAINS", &package_id(&p.name, &p.arch)));
        }
        let mut depends = BTreeSet::new();
        for p in &installed {
            let id = package_id(&p.name, &p.arch);
            for group in &p.depends {
                // A package that provides what it depends on satisfies itself: no relationship.
                for target in satisfying(&installed, p, group).into_iter().filter(|t| *t != id) {
                    depends.insert(rel(&id, "DEPENDS_ON", &target));
                }
            }
        }
        relationships.extend(depends);

        Ok(Self {
            spdx_version: SPDX_VERSION.to_owned(),
            data_license: "CC0-1.0".to_owned(),
            spdx_id: "SPDXRef-DOCUMENT".to_owned(),
            name: format!("{}-{}", image.name, image.version),
            document_namespace: format!(
                "https://kiln.invalid/spdx/{}-{}-{}",
                image.name,
                image.version,
                image.tree_digest.trim_start_matches("sha256:")
            ),
            creation_info: CreationInfo {
                created,
                creators: vec![format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
            },
            packages,
            relationships,
            has_extracted_licensing_infos: licenses.into_list(),
        })
    }

    /// The document as pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// The purl `distro` qualifier from an `os-release` file: `ID-VERSION_ID` (`debian-12`), else
/// `ID-VERSION_CODENAME` (testing has no version number), else `None`.
pub fn distro_from_os_release(text: &str) -> Option<String> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let v = l.trim().strip_prefix(name)?.strip_prefix('=')?.trim();
            let v = v.trim_matches(|c| c == '"' || c == '\'');
            (!v.is_empty()).then(|| v.to_owned())
        })
    };
    let id = field("ID")?;
    let version = field("VERSION_ID").or_else(|| field("VERSION_CODENAME"))?;
    Some(format!("{id}-{version}"))
}

/// The SPDX id of an installed package: `SPDXRef-Package-deb-NAME.ARCH`. Debian names are lower case
/// letters, digits and `+-.`: `+` (not allowed in an SPDX id) becomes `PLUS`, which no name has; the
/// architecture has no `.`, so the id is unique per name and architecture.
pub fn package_id(name: &str, arch: &str) -> String {
    format!("SPDXRef-Package-deb-{}.{arch}", name.replace('+', "PLUS"))
}

/// The package URL of a Debian package.
pub fn purl(name: &str, version: &str, arch: &str, distro: Option<&str>) -> String {
    let mut s = format!("pkg:deb/debian/{}@{}?arch={}", pct(name), pct(version), pct(arch));
    if let Some(d) = distro {
        s.push_str("&distro=");
        s.push_str(&pct(d));
    }
    s
}

/// Percent-encoding of everything but the unreserved characters (RFC 3986), as purl components want.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn rel(from: &str, kind: &str, to: &str) -> Relationship {
    Relationship {
        spdx_element_id: from.to_owned(),
        relationship_type: kind.to_owned(),
        related_spdx_element: to.to_owned(),
    }
}

fn image_package(image: &ImageInfo) -> SpdxPackage {
    SpdxPackage {
        spdx_id: IMAGE_ID.to_owned(),
        name: image.name.clone(),
        version_info: Some(image.version.clone()),
        supplier: None,
        download_location: NOASSERTION.to_owned(),
        files_analyzed: false,
        checksums: Vec::new(),
        homepage: None,
        source_info: None,
        license_concluded: NOASSERTION.to_owned(),
        license_declared: NOASSERTION.to_owned(),
        copyright_text: NOASSERTION.to_owned(),
        summary: None,
        comment: Some(format!("kiln image; digest of its normalized root tree: {}", image.tree_digest)),
        external_refs: Vec::new(),
        primary_package_purpose: Some("OPERATING_SYSTEM".to_owned()),
    }
}

fn parent_package(parent: &Parent) -> SpdxPackage {
    let hex = parent.digest.trim_start_matches("sha256:");
    SpdxPackage {
        spdx_id: PARENT_ID.to_owned(),
        name: parent.name.clone(),
        version_info: Some(parent.version.clone()),
        supplier: None,
        download_location: NOASSERTION.to_owned(),
        files_analyzed: false,
        checksums: vec![Checksum { algorithm: "SHA256".into(), checksum_value: hex.to_owned() }],
        homepage: None,
        source_info: None,
        license_concluded: NOASSERTION.to_owned(),
        license_declared: NOASSERTION.to_owned(),
        copyright_text: NOASSERTION.to_owned(),
        summary: None,
        comment: Some(format!(
            "parent image {}; the checksum is its OCI manifest's digest",
            parent.reference
        )),
        external_refs: vec![ExternalRef {
            reference_category: "PACKAGE-MANAGER".into(),
            reference_type: "purl".into(),
            reference_locator: format!("pkg:oci/{}@{}", pct(&parent.name), pct(&parent.digest)),
        }],
        primary_package_purpose: Some("CONTAINER".to_owned()),
    }
}

fn deb_package(p: &Installed, deb: Option<&DebInfo>, distro: Option<&str>, declared: String) -> SpdxPackage {
    let (src, src_version) = p.source.clone().unwrap_or_else(|| (p.name.clone(), p.version.to_string()));
    SpdxPackage {
        spdx_id: package_id(&p.name, &p.arch),
        name: p.name.clone(),
        version_info: Some(p.version.to_string()),
        supplier: p.maintainer.as_deref().map(supplier),
        download_location: deb.map(|d| d.url.clone()).unwrap_or_else(|| NOASSERTION.to_owned()),
        files_analyzed: false,
        checksums: deb
            .map(|d| vec![Checksum { algorithm: "SHA256".into(), checksum_value: d.sha256.clone() }])
            .unwrap_or_default(),
        homepage: p.homepage.clone(),
        source_info: Some(format!("built package from: {src} {src_version}")),
        license_concluded: NOASSERTION.to_owned(),
        license_declared: declared,
        copyright_text: NOASSERTION.to_owned(),
        summary: p.summary.clone(),
        comment: None,
        external_refs: vec![ExternalRef {
            reference_category: "PACKAGE-MANAGER".into(),
            reference_type: "purl".into(),
            reference_locator: purl(&p.name, p.version.as_str(), &p.arch, distro),
        }],
        primary_package_purpose: None,
    }
}

/// SPDX's `Person: NAME (EMAIL)` or, for a team or mailing list, `Organization: NAME (EMAIL)`, from a
/// `Maintainer` field (`Name <email>`).
fn supplier(maintainer: &str) -> String {
    let (name, email) = match maintainer.split_once('<') {
        Some((n, rest)) => (n.trim(), rest.trim_end().trim_end_matches('>').trim()),
        None => (maintainer.trim(), ""),
    };
    let lower = maintainer.to_ascii_lowercase();
    let team = ["team", "maintainers", "group", "project", "developers", "committee", "@lists.", "pkg-"]
        .iter()
        .any(|w| lower.contains(w));
    let kind = if team { "Organization" } else { "Person" };
    if email.is_empty() {
        format!("{kind}: {name}")
    } else {
        format!("{kind}: {name} ({email})")
    }
}

fn parse_status(status: &str) -> Result<Vec<Installed>, SbomError> {
    let mut out = Vec::new();
    for para in control::paragraphs(status) {
        let para = para?;
        let Some(state) = para.get("Status") else { continue };
        if state.split_whitespace().nth(2) != Some("installed") {
            continue;
        }
        let line = para.line;
        let get = |field: &'static str| para.get(field).ok_or(SbomError::MissingField { line, field });
        let name = get("Package")?.to_owned();
        let version_text = get("Version")?;
        let version = Version::parse(version_text).map_err(|source| SbomError::Version {
            package: name.clone(),
            version: version_text.to_owned(),
            source,
        })?;
        let relations =
            |field: &'static str| {
                relation::parse_relations(para.get(field).unwrap_or(""))
                    .map_err(|source| SbomError::Relation { package: name.clone(), field, source })
            };
        let mut depends = relations("Pre-Depends")?;
        depends.extend(relations("Depends")?);
        let provides = relation::parse_provides(para.get("Provides").unwrap_or(""))
            .map_err(|source| SbomError::Relation { package: name.clone(), field: "Provides", source })?;
        // `Source: NAME` or `Source: NAME (VERSION)` when the source version differs from the binary's.
        let source = para.get("Source").map(|s| match s.split_once('(') {
            Some((n, v)) => (n.trim().to_owned(), v.trim().trim_end_matches(')').trim().to_owned()),
            None => (s.trim().to_owned(), version.to_string()),
        });
        out.push(Installed {
            arch: get("Architecture")?.to_owned(),
            multi_arch_foreign: para.get("Multi-Arch").is_some_and(|m| m.eq_ignore_ascii_case("foreign")),
            maintainer: para.get("Maintainer").map(str::to_owned),
            source,
            homepage: para.get("Homepage").map(str::to_owned),
            summary: para.get("Description").and_then(|d| d.lines().next()).map(|l| l.trim().to_owned()),
            name,
            version,
            depends,
            provides,
        });
    }
    Ok(out)
}

/// Whether the installed package `candidate` can satisfy a relation of `from` as to architecture.
fn arch_fits(from: &Installed, r: &Relation, candidate: &Installed) -> bool {
    match r.arch_qualifier.as_deref() {
        Some("any") => true,
        Some(q) if q != "native" => candidate.arch == q,
        _ => {
            candidate.arch == from.arch
                || candidate.arch == "all"
                || from.arch == "all"
                || candidate.multi_arch_foreign
        }
    }
}

/// The SPDX ids of the installed packages satisfying one dependency group of `from`: those satisfying its
/// first alternative that any installed package satisfies (by name and version, or by a provide).
fn satisfying(installed: &[Installed], from: &Installed, group: &Alternatives) -> Vec<String> {
    for r in &group.0 {
        let found: Vec<String> = installed
            .iter()
            .filter(|c| arch_fits(from, r, c))
            .filter(|c| {
                let real = c.name == r.name && r.constraint.as_ref().is_none_or(|k| k.matches(&c.version));
                let provided = c.provides.iter().any(|pr| {
                    pr.name == r.name
                        && match (&r.constraint, &pr.version) {
                            (None, _) => true,
                            (Some(k), Some(v)) => k.matches(v),
                            (Some(_), None) => false,
                        }
                });
                real || provided
            })
            .map(|c| package_id(&c.name, &c.arch))
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

/// The license expression of a machine-readable copyright file's `Files: *` paragraph (its `License:`
/// first line), with the texts the file gives for license names (standalone `License:` paragraphs, or the
/// body under a single-license `Files: *` line). `None` for a file that is not machine-readable (no
/// `Format:` in its header) or has no `Files: *` paragraph.
pub fn dep5_license(text: &str) -> Option<(String, BTreeMap<String, String>)> {
    let paras = control::parse(text).ok()?;
    paras.first()?.get("Format")?;
    let mut texts = BTreeMap::new();
    let mut expression = None;
    for p in &paras[1..] {
        let Some(license) = p.get("License") else { continue };
        let (first, body) = license.split_once('\n').unwrap_or((license, ""));
        let first = first.trim();
        let body = license_body(body);
        match p.get("Files").map(|files| files.split_whitespace().any(|f| f == "*")) {
            Some(true) if expression.is_none() => {
                if !body.is_empty() {
                    texts.entry(first.to_owned()).or_insert(body);
                }
                expression = Some(first.to_owned());
            }
            Some(_) => {}
            None if !body.is_empty() => {
                texts.insert(first.to_owned(), body);
            }
            None => {}
        }
    }
    let expression = expression?;
    (!expression.is_empty()).then_some((expression, texts))
}

/// A multi-line field's body as text: the one leading space of each line removed, ` .` lines empty.
fn license_body(body: &str) -> String {
    let lines: Vec<&str> = body
        .lines()
        .map(|l| {
            let l = l.strip_prefix(' ').or_else(|| l.strip_prefix('\t')).unwrap_or(l);
            if l.trim() == "." {
                ""
            } else {
                l.trim_end()
            }
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

/// Debian's short names (copyright-format 1.0) that differ from SPDX's.
const DEBIAN_NAMES: &[(&str, &str)] = &[
    ("Expat", "MIT"),
    ("Artistic", "Artistic-1.0-Perl"),
    ("OpenLDAP-2.8", "OLDAP-2.8"),
    ("WTFPL-2", "WTFPL"),
    ("CC0", "CC0-1.0"),
    ("Python", "Python-2.0"),
    ("PSF-2", "PSF-2.0"),
];

/// SPDX license exceptions, by the words Debian copyright files use before `exception` (otherwise the words
/// must be an SPDX exception id).
const EXCEPTIONS: &[(&str, &str)] = &[
    ("classpath", "Classpath-exception-2.0"),
    ("font", "Font-exception-2.0"),
    ("llvm", "LLVM-exception"),
    ("libtool", "Libtool-exception"),
];

/// An SPDX exception id for the words between `with` and `exception`.
fn spdx_exception(words: &str) -> Option<&'static str> {
    EXCEPTIONS.iter().find(|(w, _)| w.eq_ignore_ascii_case(words)).map(|(_, e)| *e).or_else(|| {
        spdx::identifiers::EXCEPTIONS
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(words) && e.flags & spdx::flags::IS_DEPRECATED == 0)
            .map(|e| e.name)
    })
}

/// A GNU license name as Debian writes it (`GPL-2+`, `LGPL-2.1`, `GFDL-NIV-1.3+`, `GPL-2.0+`, `LGPL2.1`) as
/// its SPDX id (`GPL-2.0-or-later`, `LGPL-2.1-only`, `GFDL-1.3-no-invariants-or-later`, …). A name without
/// a version (`GPL`) is any version: `-or-later` of the first.
fn gnu_license(name: &str) -> Option<String> {
    let (name, plus) = match name.strip_suffix('+') {
        Some(n) => (n, true),
        None => (name, false),
    };
    let upper = name.to_ascii_uppercase();
    let (family, rest) = ["GFDL-NIV", "AGPL", "LGPL", "GPL", "GFDL"]
        .iter()
        .find_map(|f| upper.strip_prefix(f).map(|r| (*f, r)))?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let (versions, default): (&[(&str, &str)], &str) = match family {
        "GPL" => (
            &[("1", "1.0"), ("1.0", "1.0"), ("2", "2.0"), ("2.0", "2.0"), ("3", "3.0"), ("3.0", "3.0")],
            "1.0",
        ),
        "LGPL" => (&[("2", "2.0"), ("2.0", "2.0"), ("2.1", "2.1"), ("3", "3.0"), ("3.0", "3.0")], "2.0"),
        "AGPL" => (&[("1", "1.0"), ("1.0", "1.0"), ("3", "3.0"), ("3.0", "3.0")], "3.0"),
        _ => (&[("1.1", "1.1"), ("1.2", "1.2"), ("1.3", "1.3")], "1.1"),
    };
    let (version, plus) =
        if rest.is_empty() { (default, true) } else { (versions.iter().find(|(v, _)| *v == rest)?.1, plus) };
    let suffix = if plus { "or-later" } else { "only" };
    Some(match family {
        "GFDL-NIV" => format!("GFDL-{version}-no-invariants-{suffix}"),
        _ => format!("{family}-{version}-{suffix}"),
    })
}

/// The SPDX id of one license name of a copyright file: a GNU name ([`gnu_license`]), one of Debian's own
/// names ([`DEBIAN_NAMES`]), or an id of the SPDX license list (case-insensitively, not deprecated), with
/// a `+` kept; `None` for any other name.
fn spdx_license(name: &str) -> Option<String> {
    if let Some(id) = gnu_license(name) {
        return Some(id);
    }
    let (base, plus) = match name.strip_suffix('+') {
        Some(b) => (b, "+"),
        None => (name, ""),
    };
    let known =
        DEBIAN_NAMES.iter().find(|(d, _)| d.eq_ignore_ascii_case(base)).map(|(_, s)| *s).or_else(|| {
            spdx::identifiers::LICENSES
                .iter()
                .find(|l| l.name.eq_ignore_ascii_case(base) && l.flags & spdx::flags::IS_DEPRECATED == 0)
                .map(|l| l.name)
        })?;
    Some(format!("{known}{plus}"))
}

/// The `LicenseRef-…` ids a document uses, one per distinct (name, text).
#[derive(Debug, Default)]
struct LicenseRefs {
    by_key: BTreeMap<(String, String), String>,
    ids: BTreeSet<String>,
}

impl LicenseRefs {
    /// The id of a license name kiln has no SPDX id for, with the text the copyright file gives for it.
    fn reference(&mut self, name: &str, text: Option<&String>) -> String {
        let text = text.cloned().unwrap_or_else(|| {
            format!("The license a Debian copyright file names `{name}` (the file gives no text for it).")
        });
        if let Some(id) = self.by_key.get(&(name.to_owned(), text.clone())) {
            return id.clone();
        }
        let mut stem = String::from("LicenseRef-");
        for c in name.chars() {
            match c {
                'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '-' => stem.push(c),
                '+' => stem.push_str("plus"),
                _ if !stem.ends_with('-') => stem.push('-'),
                _ => {}
            }
        }
        let stem = stem.trim_end_matches('-').to_owned();
        let mut id = stem.clone();
        let mut n = 1;
        while self.ids.contains(&id) {
            n += 1;
            id = format!("{stem}-{n}");
        }
        self.ids.insert(id.clone());
        self.by_key.insert((name.to_owned(), text), id.clone());
        id
    }

    /// A copyright file's license expression in SPDX syntax: `and`/`or` as `AND`/`OR`, comma-separated
    /// parts grouped, `NAME with WORDS exception` as `ID WITH EXCEPTION` when both are known, every name
    /// kiln has no SPDX id for (or a term it cannot read) as a `LicenseRef-`.
    fn expression(&mut self, expr: &str, texts: &BTreeMap<String, String>) -> String {
        let mut parts = Vec::new();
        for (i, part) in expr.split(',').enumerate() {
            let mut words: Vec<&str> = part.split_whitespace().collect();
            let mut joiner = None;
            if i > 0 {
                if let Some(first) = words.first().filter(|w| is_op(w)) {
                    joiner = Some(first.to_ascii_uppercase());
                    words.remove(0);
                }
            }
            let mut out = Vec::new();
            let mut term: Vec<&str> = Vec::new();
            for w in words.iter().copied().chain([""]) {
                if w.is_empty() || is_op(w) {
                    if !term.is_empty() {
                        out.push(self.term(&term.join(" "), texts));
                        term.clear();
                    }
                    if !w.is_empty() {
                        out.push(w.to_ascii_uppercase());
                    }
                } else {
                    term.push(w);
                }
            }
            // Terms and operators must alternate, a term first and last; otherwise the part is one name.
            let alternates =
                out.len() % 2 == 1 && out.iter().enumerate().all(|(i, w)| is_op(w) == (i % 2 == 1));
            if !alternates {
                out = vec![self.term(part.trim(), texts)];
            }
            parts.push((joiner, out));
        }
        let many = parts.len() > 1;
        let mut s = String::new();
        for (i, (joiner, out)) in parts.into_iter().enumerate() {
            if i > 0 {
                s.push(' ');
                s.push_str(joiner.as_deref().unwrap_or("AND"));
                s.push(' ');
            }
            if many && out.len() > 1 {
                s.push_str(&format!("({})", out.join(" ")));
            } else {
                s.push_str(&out.join(" "));
            }
        }
        s
    }

    /// One license term: a name, or `NAME with … exception`.
    fn term(&mut self, term: &str, texts: &BTreeMap<String, String>) -> String {
        let words: Vec<&str> = term.split_whitespace().collect();
        if let [name] = words[..] {
            return spdx_license(name).unwrap_or_else(|| self.reference(name, texts.get(name)));
        }
        if let [name, with, rest @ ..] = &words[..] {
            if with.eq_ignore_ascii_case("with") {
                let rest = rest.join(" ");
                let words = rest.strip_suffix(" exception").unwrap_or(&rest);
                let exception = spdx_exception(words);
                if let (Some(id), Some(e)) = (spdx_license(name), exception) {
                    return format!("{id} WITH {e}");
                }
            }
        }
        self.reference(term, texts.get(term))
    }

    fn into_list(self) -> Vec<ExtractedLicense> {
        let mut list: Vec<ExtractedLicense> = self
            .by_key
            .into_iter()
            .map(|((name, extracted_text), license_id)| ExtractedLicense { license_id, name, extracted_text })
            .collect();
        list.sort_by(|a, b| a.license_id.cmp(&b.license_id));
        list
    }
}

fn is_op(w: &str) -> bool {
    w.eq_ignore_ascii_case("and") || w.eq_ignore_ascii_case("or")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spdx(expr: &str) -> (String, Vec<ExtractedLicense>) {
        let mut refs = LicenseRefs::default();
        let s = refs.expression(expr, &BTreeMap::new());
        (s, refs.into_list())
    }

    #[test]
    fn debian_license_names_become_spdx_expressions() {
        for (debian, want) in [
            ("GPL-2+", "GPL-2.0-or-later"),
            ("GPL-2", "GPL-2.0-only"),
            ("GPL-2.0+", "GPL-2.0-or-later"),
            ("LGPL-2.1+", "LGPL-2.1-or-later"),
            ("LGPL2.1", "LGPL-2.1-only"),
            ("GPL", "GPL-1.0-or-later"),
            ("GFDL-NIV-1.3+", "GFDL-1.3-no-invariants-or-later"),
            ("Expat", "MIT"),
            ("expat", "MIT"),
            ("BSD-3-clause", "BSD-3-Clause"),
            ("Apache-2.0+", "Apache-2.0+"),
            ("Artistic or GPL-1+", "Artistic-1.0-Perl OR GPL-1.0-or-later"),
            ("GPL-2+ and LGPL-2.1+", "GPL-2.0-or-later AND LGPL-2.1-or-later"),
            ("GPL-2+ or AFL-2.1, and Expat and ISC", "(GPL-2.0-or-later OR AFL-2.1) AND (MIT AND ISC)"),
            ("GPL with Classpath exception", "GPL-1.0-or-later WITH Classpath-exception-2.0"),
        ] {
            let (got, refs) = spdx(debian);
            assert_eq!(got, want, "{debian}");
            assert!(refs.is_empty(), "{debian}: {refs:?}");
        }
    }

    #[test]
    fn unknown_names_become_license_refs_with_unique_ids() {
        let (got, refs) = spdx("public-domain and MIT/X11 or LPGL-2.1+");
        assert_eq!(got, "LicenseRef-public-domain AND LicenseRef-MIT-X11 OR LicenseRef-LPGL-2.1plus");
        assert_eq!(refs.len(), 3);
        let (got, _) = spdx("GPL-2+ with OpenSSL exception");
        assert_eq!(got, "LicenseRef-GPL-2plus-with-OpenSSL-exception");
        let (got, _) = spdx("LGPL2.1 (see COPYING-LGPL2.1)");
        assert_eq!(got, "LicenseRef-LGPL2.1-see-COPYING-LGPL2.1");
        let (got, _) = spdx("Apache-2.0 and/or Expat");
        assert_eq!(got, "LicenseRef-Apache-2.0-and-or-Expat");
        let (got, _) = spdx("or");
        assert_eq!(got, "LicenseRef-or");

        let mut refs = LicenseRefs::default();
        let a = refs.reference("public-domain", Some(&"text one".to_owned()));
        let b = refs.reference("public-domain", Some(&"text two".to_owned()));
        let a2 = refs.reference("public-domain", Some(&"text one".to_owned()));
        let c = refs.reference("public/domain", None);
        assert_eq!(
            (a.as_str(), b.as_str(), c.as_str()),
            ("LicenseRef-public-domain", "LicenseRef-public-domain-2", "LicenseRef-public-domain-3")
        );
        assert_eq!(a, a2);
    }

    #[test]
    fn suppliers_are_people_or_organizations() {
        assert_eq!(
            supplier("Santiago Vila <sanvila@debian.org>"),
            "Person: Santiago Vila (sanvila@debian.org)"
        );
        assert_eq!(
            supplier("GNU Libc Maintainers <debian-glibc@lists.debian.org>"),
            "Organization: GNU Libc Maintainers (debian-glibc@lists.debian.org)"
        );
        assert_eq!(supplier("Debian Perl Group"), "Organization: Debian Perl Group");
    }

    #[test]
    fn distro_and_purls() {
        let os = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n";
        assert_eq!(distro_from_os_release(os).as_deref(), Some("debian-12"));
        let testing = "ID=debian\nVERSION_CODENAME=trixie\n";
        assert_eq!(distro_from_os_release(testing).as_deref(), Some("debian-trixie"));
        assert_eq!(distro_from_os_release("NAME=x\n"), None);
        assert_eq!(
            purl("libstdc++6", "1:12.2.0-14", "amd64", Some("debian-12")),
            "pkg:deb/debian/libstdc%2B%2B6@1%3A12.2.0-14?arch=amd64&distro=debian-12"
        );
        assert_eq!(package_id("libstdc++6", "amd64"), "SPDXRef-Package-deb-libstdcPLUSPLUS6.amd64");
    }
}
