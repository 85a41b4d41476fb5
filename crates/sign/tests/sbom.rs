//! The SBOM of a dpkg database: valid SPDX 2.3 (the official JSON schema, plus the rules the schema cannot
//! say: unique ids, relationships between existing elements, license expressions of known ids or declared
//! `LicenseRef-`s), dependencies resolved through alternatives, provides and architectures, licenses from
//! machine-readable copyright files, the parent of a derived image, and the same bytes for the same inputs.

use std::collections::{BTreeMap, BTreeSet};

use kiln_blueprint::manifest::Parent;
use kiln_sign::sbom::{package_id, DebInfo, ImageInfo, Sbom, IMAGE_ID, PARENT_ID};
use serde_json::Value;

/// A small dpkg database: alternatives (`mawk | gawk` with only gawk installed), a virtual package
/// (`mail-transport-agent`, provided by postfix), a versioned provide (`libbar (= 2.5)` from libbar-compat)
/// satisfying `libbar (>= 2)` where the real libbar is too old, an unversioned provide that cannot satisfy
/// a versioned dependency, a foreign-architecture library, `:any`, and a removed package with its
/// configuration files left.
const STATUS: &str = "\
Package: app
Status: install ok installed
Priority: optional
Maintainer: Jane Doe <jane@example.org>
Architecture: amd64
Source: app-src (2.0-1)
Version: 2.0-1+b1
Pre-Depends: libc6 (>= 2.36)
Depends: mawk | gawk, mail-transport-agent, perl:any, libfoo (>= 1), not-installed | libbar-compat
Homepage: https://app.example.org
Description: an application
 Longer text.

Package: libc6
Status: install ok installed
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries

Package: libc6
Status: install ok installed
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: i386
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries

Package: gawk
Status: install ok installed
Maintainer: Adrian Bunk <bunk@debian.org>
Architecture: amd64
Version: 1:5.2.1-2
Provides: awk
Pre-Depends: libc6 (>= 2.34)
Description: GNU awk

Package: postfix
Status: install ok installed
Maintainer: Debian Postfix Team <team+postfix@tracker.debian.org>
Architecture: amd64
Version: 3.7.11-0+deb12u1
Provides: mail-transport-agent
Depends: libc6 (>= 2.34)
Description: mail server

Package: perl
Status: install ok installed
Maintainer: Niko Tyni <ntyni@debian.org>
Architecture: amd64
Multi-Arch: allowed
Version: 5.36.0-7+deb12u1
Description: Larry Wall's Practical Extraction and Report Language

Package: libfoo
Status: install ok installed
Maintainer: Jane Doe <jane@example.org>
Architecture: amd64
Version: 1.5-1
Depends: libbar (>= 2), virt (>= 1), libc6
Description: foo library

Package: libbar
Status: install ok installed
Maintainer: Jane Doe <jane@example.org>
Architecture: amd64
Version: 1.0-1
Description: bar library (old)

Package: libbar-compat
Status: install ok installed
Maintainer: Jane Doe <jane@example.org>
Architecture: all
Version: 2.5-1
Provides: libbar (= 2.5), virt
Depends: tzdata
Description: bar compatibility

Package: tzdata
Status: install ok installed
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: all
Multi-Arch: foreign
Version: 2024a-0+deb12u1
Description: time zone data

Package: old-tool
Status: deinstall ok config-files
Maintainer: Jane Doe <jane@example.org>
Architecture: amd64
Version: 0.1-1
Description: removed, configuration files left
";

const COPYRIGHT_DEP5: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: app

Files: debian/*
Copyright: 2024 Jane Doe
License: GPL-2+

Files: *
Copyright: 2020 Upstream Author
License: GPL-2+ or Artistic, and Expat and ad-hoc

Files: lib/*
Copyright: 2020 Someone
License: BSD-3-clause

License: ad-hoc
 Permission is granted to use this file for anything.
 .
 No warranty.
";

const COPYRIGHT_PD: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: none
License: public-domain
 This database is in the public domain.
";

const COPYRIGHT_OTHER_PD: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: none
License: public-domain
 Released into the public domain by its authors.
";

const COPYRIGHT_FREE_FORM: &str = "\
This is the Debian packaging of gawk.
It is licensed under the GPL version 3 or later.
";

fn copyright(name: &str) -> Option<String> {
    Some(
        match name {
            "app" => COPYRIGHT_DEP5,
            "tzdata" => COPYRIGHT_PD,
            "libbar-compat" => COPYRIGHT_OTHER_PD,
            "gawk" => COPYRIGHT_FREE_FORM,
            "libc6" => "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: FSF\nLicense: LGPL-2.1+\n",
            "postfix" => "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: Wietse Venema\nLicense: Postfix-custom or EPL-2.0\n",
            _ => return None,
        }
        .to_owned(),
    )
}

const SHA_APP: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const SHA_LIBC: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn debs() -> Vec<DebInfo> {
    let deb = |name: &str, version: &str, arch: &str, sha: &str, path: &str| DebInfo {
        name: name.into(),
        version: version.into(),
        architecture: arch.into(),
        sha256: sha.into(),
        archive_path: path.into(),
        url: format!("http://deb.debian.org/debian/{path}"),
    };
    vec![
        deb("app", "2.0-1+b1", "amd64", SHA_APP, "pool/main/a/app-src/app_2.0-1+b1_amd64.deb"),
        deb("libc6", "2.36-9+deb12u4", "amd64", SHA_LIBC, "pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb"),
        // Another version than the installed one: its digest is not the installed package's.
        deb("perl", "5.36.0-7", "amd64", SHA_APP, "pool/main/p/perl/perl_5.36.0-7_amd64.deb"),
    ]
}

fn image(parent: Option<Parent>) -> ImageInfo {
    ImageInfo {
        name: "web-role".into(),
        version: "1.2.3".into(),
        tree_digest: format!("sha256:{}", "ab".repeat(32)),
        distro: Some("debian-12".into()),
        parent,
    }
}

fn parent() -> Parent {
    Parent {
        reference: "oci-layout:../base/out/oci:1.0.0".into(),
        name: "debian-base-oci".into(),
        version: "1.0.0".into(),
        digest: format!("sha256:{}", "cd".repeat(32)),
    }
}

const EPOCH: i64 = 1_700_000_000;

fn fixture_sbom(parent: Option<Parent>) -> Sbom {
    Sbom::from_dpkg(STATUS, &copyright, &debs(), &image(parent), EPOCH).unwrap()
}

fn json(sbom: &Sbom) -> Value {
    serde_json::from_slice(&sbom.to_json()).unwrap()
}

fn schema() -> jsonschema::Validator {
    let text =
        fs_err::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemas/spdx-schema-2.3.json"))
            .unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap())
        .expect("the SPDX schema is a valid schema")
}

/// Whether `expr` is an SPDX license expression (strict: current ids of the SPDX license list, `AND`, `OR`,
/// `WITH` and parentheses), every `LicenseRef-` in it one of `declared`.
fn valid_license_expression(expr: &str, declared: &BTreeSet<String>) -> Result<(), String> {
    if expr == "NOASSERTION" || expr == "NONE" {
        return Ok(());
    }
    spdx::Expression::parse(expr).map_err(|e| format!("not an SPDX license expression: {expr:?}: {e}"))?;
    let spaced = expr.replace(['(', ')'], " ");
    match spaced.split_whitespace().find(|t| t.starts_with("LicenseRef-") && !declared.contains(*t)) {
        Some(undeclared) => Err(format!("{expr:?}: {undeclared} is not declared")),
        None => Ok(()),
    }
}

/// The SPDX 2.3 JSON schema, and what it cannot say.
fn assert_valid_spdx(doc: &Value) {
    let errors: Vec<String> =
        schema().iter_errors(doc).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "schema: {errors:#?}");

    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["dataLicense"], "CC0-1.0");
    assert_eq!(doc["SPDXID"], "SPDXRef-DOCUMENT");
    let created = doc["creationInfo"]["created"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339).is_ok(),
        "{created}"
    );
    assert!(created.ends_with('Z'), "created is UTC: {created}");
    let ns = doc["documentNamespace"].as_str().unwrap();
    assert!(ns.starts_with("https://") && !ns.contains('#'), "{ns}");

    let mut ids = BTreeSet::from(["SPDXRef-DOCUMENT".to_owned()]);
    let declared: BTreeSet<String> = doc["hasExtractedLicensingInfos"]
        .as_array()
        .map(|a| a.iter().map(|l| l["licenseId"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    for l in doc["hasExtractedLicensingInfos"].as_array().into_iter().flatten() {
        let id = l["licenseId"].as_str().unwrap();
        assert!(
            id.strip_prefix("LicenseRef-").is_some_and(
                |r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            ),
            "{id}"
        );
        assert!(!l["extractedText"].as_str().unwrap().is_empty());
    }
    for p in doc["packages"].as_array().unwrap() {
        let id = p["SPDXID"].as_str().unwrap();
        let rest = id.strip_prefix("SPDXRef-").unwrap_or_else(|| panic!("{id}"));
        assert!(rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'), "{id}");
        assert!(ids.insert(id.to_owned()), "duplicate SPDXID {id}");
        for field in ["licenseDeclared", "licenseConcluded"] {
            let expr = p[field].as_str().unwrap();
            valid_license_expression(expr, &declared).unwrap_or_else(|e| panic!("{id} {field}: {e}"));
        }
        assert_eq!(p["filesAnalyzed"], false);
        for c in p["checksums"].as_array().into_iter().flatten() {
            let v = c["checksumValue"].as_str().unwrap();
            assert!(v.len() == 64 && v.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{id}: {v}");
        }
        for r in p["externalRefs"].as_array().into_iter().flatten() {
            let locator = r["referenceLocator"].as_str().unwrap();
            assert!(!locator.contains(' '), "{locator}");
            if r["referenceType"] == "purl" {
                assert_eq!(r["referenceCategory"], "PACKAGE-MANAGER");
                assert!(locator.starts_with("pkg:"), "{locator}");
            }
        }
        if let Some(s) = p["supplier"].as_str() {
            assert!(s.starts_with("Person: ") || s.starts_with("Organization: "), "{s}");
        }
    }
    for r in doc["relationships"].as_array().unwrap() {
        for end in ["spdxElementId", "relatedSpdxElement"] {
            let id = r[end].as_str().unwrap();
            assert!(ids.contains(id), "relationship {r} names {id}, which is no element");
        }
    }
    let described: Vec<&Value> = doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["relationshipType"] == "DESCRIBES")
        .collect();
    assert_eq!(described.len(), 1);
    assert_eq!(described[0]["spdxElementId"], "SPDXRef-DOCUMENT");
    assert_eq!(described[0]["relatedSpdxElement"], IMAGE_ID);
}

fn relations(sbom: &Sbom, kind: &str) -> BTreeSet<(String, String)> {
    sbom.relationships
        .iter()
        .filter(|r| r.relationship_type == kind)
        .map(|r| (r.spdx_element_id.clone(), r.related_spdx_element.clone()))
        .collect()
}

fn package<'a>(sbom: &'a Sbom, id: &str) -> &'a kiln_sign::sbom::SpdxPackage {
    sbom.packages.iter().find(|p| p.spdx_id == id).unwrap_or_else(|| panic!("no package {id}"))
}

#[test]
fn fixture_sbom_is_valid_spdx_2_3() {
    assert_valid_spdx(&json(&fixture_sbom(None)));
    assert_valid_spdx(&json(&fixture_sbom(Some(parent()))));
}

#[test]
fn the_schema_and_checks_reject_broken_documents() {
    // The checks above must be able to fail: a few broken documents.
    let good = json(&fixture_sbom(None));
    assert!(schema().is_valid(&good));
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("creationInfo");
    assert!(!schema().is_valid(&missing));
    let mut bad_rel = good.clone();
    bad_rel["relationships"][0]["relationshipType"] = "IS_PART_OF_SOMETHING".into();
    assert!(!schema().is_valid(&bad_rel));
    let declared = BTreeSet::from(["LicenseRef-a".to_owned()]);
    for bad in
        ["GPL-2+ or Artistic", "MIT AND", "LicenseRef-b", "(MIT", "MIT WITH LicenseRef-a", "a/b", "GPL-2.0"]
    {
        assert!(valid_license_expression(bad, &declared).is_err(), "{bad}");
    }
    for ok in [
        "MIT",
        "(GPL-2.0-or-later OR Artistic-1.0-Perl) AND LicenseRef-a",
        "GPL-2.0-or-later WITH Classpath-exception-2.0",
        "Apache-2.0+",
    ] {
        assert!(valid_license_expression(ok, &declared).is_ok(), "{ok}");
    }
}

#[test]
fn only_installed_packages_each_contained_in_the_image() {
    let sbom = fixture_sbom(None);
    let names: Vec<(&str, &str)> = sbom
        .packages
        .iter()
        .skip(1)
        .map(|p| (p.name.as_str(), p.spdx_id.rsplit('.').next().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("app", "amd64"),
            ("gawk", "amd64"),
            ("libbar", "amd64"),
            ("libbar-compat", "all"),
            ("libc6", "amd64"),
            ("libc6", "i386"),
            ("libfoo", "amd64"),
            ("perl", "amd64"),
            ("postfix", "amd64"),
            ("tzdata", "all"),
        ]
    );
    let contained: BTreeSet<String> = relations(&sbom, "CONTAINS")
        .into_iter()
        .map(|(from, to)| {
            assert_eq!(from, IMAGE_ID);
            to
        })
        .collect();
    let ids: BTreeSet<String> = sbom.packages.iter().skip(1).map(|p| p.spdx_id.clone()).collect();
    assert_eq!(contained, ids);
    assert!(relations(&sbom, "DESCENDANT_OF").is_empty());
}

#[test]
fn dependencies_resolve_alternatives_provides_and_architectures() {
    let sbom = fixture_sbom(None);
    let id = |n: &str, a: &str| package_id(n, a);
    let want: BTreeSet<(String, String)> = [
        // Pre-Depends libc6: the same architecture only, not libc6:i386.
        (id("app", "amd64"), id("libc6", "amd64")),
        // mawk | gawk: mawk is not installed.
        (id("app", "amd64"), id("gawk", "amd64")),
        // A virtual package, through postfix's Provides.
        (id("app", "amd64"), id("postfix", "amd64")),
        (id("app", "amd64"), id("perl", "amd64")),
        (id("app", "amd64"), id("libfoo", "amd64")),
        (id("app", "amd64"), id("libbar-compat", "all")),
        (id("gawk", "amd64"), id("libc6", "amd64")),
        (id("postfix", "amd64"), id("libc6", "amd64")),
        // libbar (>= 2): the real libbar is 1.0; libbar-compat provides libbar (= 2.5). virt (>= 1) is
        // only provided without a version, which does not satisfy a versioned dependency.
        (id("libfoo", "amd64"), id("libbar-compat", "all")),
        (id("libfoo", "amd64"), id("libc6", "amd64")),
        // An arch-all package may use any architecture; tzdata is all too.
        (id("libbar-compat", "all"), id("tzdata", "all")),
    ]
    .into_iter()
    .collect();
    assert_eq!(relations(&sbom, "DEPENDS_ON"), want);
}

#[test]
fn package_fields_come_from_dpkg_and_the_resolved_debs() {
    let sbom = fixture_sbom(None);
    let app = package(&sbom, &package_id("app", "amd64"));
    assert_eq!(app.version_info.as_deref(), Some("2.0-1+b1"));
    assert_eq!(app.supplier.as_deref(), Some("Person: Jane Doe (jane@example.org)"));
    assert_eq!(
        app.download_location,
        "http://deb.debian.org/debian/pool/main/a/app-src/app_2.0-1+b1_amd64.deb"
    );
    assert_eq!(app.checksums.len(), 1);
    assert_eq!(
        (app.checksums[0].algorithm.as_str(), app.checksums[0].checksum_value.as_str()),
        ("SHA256", SHA_APP)
    );
    assert_eq!(app.source_info.as_deref(), Some("built package from: app-src 2.0-1"));
    assert_eq!(app.homepage.as_deref(), Some("https://app.example.org"));
    assert_eq!(app.summary.as_deref(), Some("an application"));
    assert_eq!(
        app.external_refs[0].reference_locator,
        "pkg:deb/debian/app@2.0-1%2Bb1?arch=amd64&distro=debian-12"
    );

    let libc = package(&sbom, &package_id("libc6", "amd64"));
    assert_eq!(libc.checksums[0].checksum_value, SHA_LIBC);
    assert_eq!(
        libc.supplier.as_deref(),
        Some("Organization: GNU Libc Maintainers (debian-glibc@lists.debian.org)")
    );
    // `Source: glibc` without a version: the binary's.
    assert_eq!(libc.source_info.as_deref(), Some("built package from: glibc 2.36-9+deb12u4"));
    // The i386 library was not among the resolved .debs.
    let libc32 = package(&sbom, &package_id("libc6", "i386"));
    assert!(libc32.checksums.is_empty());
    assert_eq!(libc32.download_location, "NOASSERTION");
    // A resolved .deb of another version than the installed one says nothing about it.
    let perl = package(&sbom, &package_id("perl", "amd64"));
    assert!(perl.checksums.is_empty());
    assert_eq!(perl.download_location, "NOASSERTION");
    assert_eq!(perl.source_info.as_deref(), Some("built package from: perl 5.36.0-7+deb12u1"));

    let img = package(&sbom, IMAGE_ID);
    assert_eq!((img.name.as_str(), img.version_info.as_deref()), ("web-role", Some("1.2.3")));
    assert_eq!(sbom.name, "web-role-1.2.3");
    assert_eq!(
        sbom.document_namespace,
        format!("https://kiln.invalid/spdx/web-role-1.2.3-{}", "ab".repeat(32))
    );
    assert_eq!(sbom.creation_info.created, "2023-11-14T22:13:20Z");
    assert_eq!(sbom.creation_info.creators, [format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))]);
}

#[test]
fn licenses_come_from_the_files_star_paragraph_of_dep5_copyright_files() {
    let sbom = fixture_sbom(None);
    let declared: BTreeMap<&str, &str> =
        sbom.packages.iter().skip(1).map(|p| (p.spdx_id.as_str(), p.license_declared.as_str())).collect();
    let id = |n: &str, a: &str| package_id(n, a);
    // `GPL-2+ or Artistic, and Expat and ad-hoc` of `Files: *` (not the debian/* or lib/* paragraphs).
    assert_eq!(
        declared[id("app", "amd64").as_str()],
        "(GPL-2.0-or-later OR Artistic-1.0-Perl) AND (MIT AND LicenseRef-ad-hoc)"
    );
    assert_eq!(declared[id("libc6", "amd64").as_str()], "LGPL-2.1-or-later");
    assert_eq!(declared[id("postfix", "amd64").as_str()], "LicenseRef-Postfix-custom OR EPL-2.0");
    // Not machine-readable, or no copyright file: no assertion.
    assert_eq!(declared[id("gawk", "amd64").as_str()], "NOASSERTION");
    assert_eq!(declared[id("perl", "amd64").as_str()], "NOASSERTION");
    // Two different public-domain texts are two license references.
    assert_eq!(declared[id("libbar-compat", "all").as_str()], "LicenseRef-public-domain");
    assert_eq!(declared[id("tzdata", "all").as_str()], "LicenseRef-public-domain-2");

    let texts: BTreeMap<&str, &str> = sbom
        .has_extracted_licensing_infos
        .iter()
        .map(|l| (l.license_id.as_str(), l.extracted_text.as_str()))
        .collect();
    assert_eq!(
        texts["LicenseRef-ad-hoc"],
        "Permission is granted to use this file for anything.\n\nNo warranty."
    );
    assert_eq!(texts["LicenseRef-public-domain"], "Released into the public domain by its authors.");
    assert_eq!(texts["LicenseRef-public-domain-2"], "This database is in the public domain.");
    assert!(texts["LicenseRef-Postfix-custom"].contains("`Postfix-custom`"));
    assert_eq!(texts.len(), 4);
    assert!(sbom.packages.iter().all(|p| p.license_concluded == "NOASSERTION"));
}

#[test]
fn a_derived_image_descends_from_its_parent() {
    let sbom = fixture_sbom(Some(parent()));
    let p = package(&sbom, PARENT_ID);
    assert_eq!((p.name.as_str(), p.version_info.as_deref()), ("debian-base-oci", Some("1.0.0")));
    assert_eq!(p.checksums[0].checksum_value, "cd".repeat(32));
    assert_eq!(
        p.external_refs[0].reference_locator,
        format!("pkg:oci/debian-base-oci@sha256%3A{}", "cd".repeat(32))
    );
    assert!(p.comment.as_deref().unwrap().contains("oci-layout:../base/out/oci:1.0.0"));
    assert_eq!(
        relations(&sbom, "DESCENDANT_OF"),
        BTreeSet::from([(IMAGE_ID.to_owned(), PARENT_ID.to_owned())])
    );
    // The image still contains every installed package; the parent contains nothing of this document.
    assert_eq!(relations(&sbom, "CONTAINS").len(), 10);
    assert!(relations(&sbom, "CONTAINS").iter().all(|(from, _)| from == IMAGE_ID));
}

#[test]
fn same_inputs_give_the_same_bytes_in_any_input_order() {
    let a = fixture_sbom(Some(parent())).to_json();
    assert_eq!(a, fixture_sbom(Some(parent())).to_json());
    // The status paragraphs and the .debs in another order.
    let mut paragraphs: Vec<&str> = STATUS.split("\n\n").collect();
    paragraphs.reverse();
    let reordered = paragraphs.join("\n\n");
    let mut debs = debs();
    debs.reverse();
    let b = Sbom::from_dpkg(&reordered, &copyright, &debs, &image(Some(parent())), EPOCH).unwrap().to_json();
    assert_eq!(String::from_utf8(a.clone()).unwrap(), String::from_utf8(b).unwrap());
    // Another epoch changes the date and nothing else.
    let c = Sbom::from_dpkg(STATUS, &copyright, &self::debs(), &image(Some(parent())), EPOCH + 1).unwrap();
    let mut c = json(&c);
    let mut a: Value = serde_json::from_slice(&a).unwrap();
    assert_ne!(a["creationInfo"]["created"], c["creationInfo"]["created"]);
    a["creationInfo"]["created"] = Value::Null;
    c["creationInfo"]["created"] = Value::Null;
    assert_eq!(a, c);
}

#[test]
fn a_broken_dpkg_database_is_an_error() {
    let image = image(None);
    let bad_version =
        "Package: a\nStatus: install ok installed\nArchitecture: all\nVersion: not a version!\n";
    let e = Sbom::from_dpkg(bad_version, &copyright, &[], &image, 0).unwrap_err();
    assert!(e.to_string().contains("package a"), "{e}");
    let bad_depends =
        "Package: a\nStatus: install ok installed\nArchitecture: all\nVersion: 1\nDepends: b (>= \n";
    let e = Sbom::from_dpkg(bad_depends, &copyright, &[], &image, 0).unwrap_err();
    assert!(e.to_string().contains("Depends"), "{e}");
    let no_arch = "Package: a\nStatus: install ok installed\nVersion: 1\n";
    let e = Sbom::from_dpkg(no_arch, &copyright, &[], &image, 0).unwrap_err();
    assert!(e.to_string().contains("Architecture"), "{e}");
}

/// The SBOM of a real Debian tree: this machine's own root (its dpkg database and copyright files, read the
/// way the build reads an image's).
#[test]
fn sbom_of_a_real_debian_tree_is_valid() {
    let Ok(status) = std::fs::read_to_string("/var/lib/dpkg/status") else {
        eprintln!("SKIP: no dpkg database on this machine");
        return;
    };
    let copyright = |name: &str| {
        std::fs::read(format!("/usr/share/doc/{name}/copyright"))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let distro = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| kiln_sign::sbom::distro_from_os_release(&t));
    let image = ImageInfo { distro, ..image(None) };
    let sbom = Sbom::from_dpkg(&status, &copyright, &[], &image, EPOCH).unwrap();
    let doc = json(&sbom);
    assert_valid_spdx(&doc);

    // Every installed package is in it, once.
    let installed: BTreeSet<(String, String)> = status
        .split("\n\n")
        .filter(|p| p.lines().any(|l| l.starts_with("Status:") && l.ends_with(" installed")))
        .map(|p| {
            let field =
                |f: &str| p.lines().find_map(|l| l.strip_prefix(f).map(|v| v.trim().to_owned())).unwrap();
            (field("Package:"), field("Architecture:"))
        })
        .collect();
    let listed: BTreeSet<(String, String)> = sbom
        .packages
        .iter()
        .skip(1)
        .map(|p| (p.name.clone(), p.spdx_id.rsplit('.').next().unwrap().to_owned()))
        .collect();
    assert_eq!(listed, installed);
    // dpkg itself depends on things (Pre-Depends libc6 etc.), and most packages of a Debian system have
    // machine-readable copyright files.
    let dpkg = sbom.packages.iter().find(|p| p.name == "dpkg").expect("dpkg is installed").spdx_id.clone();
    assert!(
        relations(&sbom, "DEPENDS_ON").iter().any(|(from, _)| *from == dpkg),
        "{dpkg} depends on nothing"
    );
    let asserted = sbom.packages.iter().filter(|p| p.license_declared != "NOASSERTION").count();
    assert!(asserted * 2 > installed.len(), "only {asserted} of {} packages have a license", installed.len());
}

/// The SPDX project's own validator (`pyspdxtools`, from PyPI's `spdx-tools`) accepts kiln's SBOMs, the
/// fixture's and this machine's, and rejects a broken one.
#[test]
fn the_spdx_reference_validator_accepts_the_sbom() {
    if std::process::Command::new("pyspdxtools").arg("--help").output().is_err() {
        eprintln!("SKIP: pyspdxtools is not installed (pip install spdx-tools)");
        return;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-sign-sbom");
    fs_err::create_dir_all(&dir).unwrap();
    let validate = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        fs_err::write(&path, bytes).unwrap();
        let out = std::process::Command::new("pyspdxtools").arg("-i").arg(&path).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let sbom = fixture_sbom(Some(parent()));
    let (ok, text) = validate("fixture.spdx.json", &sbom.to_json());
    assert!(ok, "{text}");

    if let Ok(status) = std::fs::read_to_string("/var/lib/dpkg/status") {
        let copyright = |name: &str| {
            std::fs::read(format!("/usr/share/doc/{name}/copyright"))
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let host = Sbom::from_dpkg(&status, &copyright, &[], &image(None), EPOCH).unwrap();
        let (ok, text) = validate("host.spdx.json", &host.to_json());
        assert!(ok, "{text}");
    }

    let mut broken = json(&sbom);
    broken["packages"][2]["licenseDeclared"] = "LicenseRef-undeclared".into();
    let (ok, text) = validate("broken.spdx.json", &serde_json::to_vec(&broken).unwrap());
    assert!(!ok, "a license reference without its text is invalid:\n{text}");
}
