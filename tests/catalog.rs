//! The catalog with real images, end to end over HTTP: two versions of a family built from Debian packages
//! with different package sets are certified, signed and published to a served catalog; the second
//! version's release notes list exactly the package differences of the two SBOMs; a role image built
//! `FROM catalog:FAMILY@stable` records its parent, and revoking the parent flags it; resolve passes the
//! revoked version over and says why. Needs root (building) and the Debian mirror, like tests/build.rs.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Output,
};

use serde_json::Value;

mod common;
use common::{can_build, kiln_ok, kiln_with, root_dir, s, serve, Served};

const PASSWORD: &str = "catalog-test";

fn kiln(args: &[&str]) -> Output {
    kiln_with(PASSWORD, args)
}

fn ok(args: &[&str]) -> Output {
    kiln_ok(PASSWORD, args)
}

fn json(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_slice(&ok(&all).stdout).expect("JSON on stdout")
}

/// A copy of debian-base-oci named `name` at `version`, with `packages` on top of minbase.
fn base_blueprint(dir: &Path, name: &str, version: &str, packages: &[&str]) -> PathBuf {
    let text = fs_err::read_to_string(root_dir().join("blueprints/debian-base-oci/blueprint.toml")).unwrap();
    let include: Vec<String> = packages.iter().map(|p| format!("\"{p}\"")).collect();
    let text = text
        .replace("name = \"debian-base-oci\"", &format!("name = \"{name}\""))
        .replace("version = \"1.0.0\"", &format!("version = \"{version}\""))
        .replace("include = [\"ca-certificates\"]", &format!("include = [{}]", include.join(", ")));
    assert!(text.contains(&format!("name = \"{name}\"")) && text.contains(&include.join(", ")));
    fs_err::create_dir_all(dir).unwrap();
    fs_err::write(dir.join("blueprint.toml"), text).unwrap();
    dir.to_owned()
}

/// Build, certify, sign and publish a blueprint; the output folder.
fn ship(blueprint: &Path, out: &Path, key: &Path, catalog: &Served) {
    let cache = common::cache();
    ok(&[
        "-q",
        "build",
        s(blueprint),
        "--out",
        s(out),
        "--cache",
        s(&cache),
        "--catalog",
        &catalog.url,
        "--token",
        &catalog.token,
    ]);
    ok(&["-q", "test", s(out)]);
    ok(&["-q", "sign", s(out), "--key", s(key)]);
    let published = json(&["publish", s(out), "--catalog", &catalog.url, "--token", &catalog.token]);
    assert_eq!(published["created"], true, "{published}");
}

/// `(name, arch) → version` of the Debian packages in an SBOM.
fn sbom_packages(out: &Path) -> BTreeMap<(String, String), String> {
    let sbom: Value = serde_json::from_slice(&fs_err::read(out.join("sbom.spdx.json")).unwrap()).unwrap();
    sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["primaryPackagePurpose"] != "OPERATING_SYSTEM")
        .map(|p| {
            let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap_or("");
            let arch = purl.split("arch=").nth(1).and_then(|a| a.split('&').next()).unwrap_or("").to_owned();
            ((p["name"].as_str().unwrap().to_owned(), arch), p["versionInfo"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Rows of the Markdown table under `### TITLE (N)` as lines of cells.
fn table(markdown: &str, title: &str) -> Vec<Vec<String>> {
    let Some(start) = markdown.find(&format!("### {title} (")) else { return Vec::new() };
    markdown[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().trim_matches('`').to_owned()).collect())
        .collect()
}

#[test]
fn real_versions_publish_with_exact_release_notes_and_a_derived_image_is_flagged_with_its_revoked_parent() {
    if !can_build() {
        return;
    }
    let w = common::work("kiln-catalog-tests", "flow");
    fs_err::create_dir_all(&w).unwrap();
    ok(&["keygen", "--out", s(&w.join("release"))]);
    let (private, public) = (w.join("release.key"), w.join("release.pub"));
    let catalog = serve(&w.join("catalog"), &public);

    // Two versions: `less` in the first, `nano` instead in the second.
    let v1 = base_blueprint(&w.join("bp/v1"), "notes-base", "1.0.0", &["ca-certificates", "less"]);
    let v2 = base_blueprint(&w.join("bp/v2"), "notes-base", "1.1.0", &["ca-certificates", "nano"]);
    let (out1, out2) = (w.join("out/v1"), w.join("out/v2"));
    ship(&v1, &out1, &private, &catalog);
    ship(&v2, &out2, &private, &catalog);

    // A published image verifies from the catalog, offline-style, with the public key; not with another.
    let verified = json(&["verify", "notes-base@1.0.0", "--catalog", &catalog.url, "--key", s(&public)]);
    assert_eq!((verified["verified"].as_bool(), verified["version"].as_str()), (Some(true), Some("1.0.0")));
    ok(&["keygen", "--out", s(&w.join("other"))]);
    let o =
        kiln(&["verify", "notes-base@1.0.0", "--catalog", &catalog.url, "--key", s(&w.join("other.pub"))]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));

    // The notes list exactly the differences of the two SBOMs.
    let (p1, p2) = (sbom_packages(&out1), sbom_packages(&out2));
    let mut added: Vec<Vec<String>> = p2
        .iter()
        .filter(|(k, _)| !p1.contains_key(k))
        .map(|((n, a), v)| vec![n.clone(), v.clone(), a.clone()])
        .collect();
    let mut removed: Vec<Vec<String>> = p1
        .iter()
        .filter(|(k, _)| !p2.contains_key(k))
        .map(|((n, a), v)| vec![n.clone(), v.clone(), a.clone()])
        .collect();
    let changed: Vec<_> = p1.iter().filter(|(k, v)| p2.get(*k).is_some_and(|v2| v2 != *v)).collect();
    added.sort();
    removed.sort();
    assert!(
        added.iter().any(|r| r[0] == "nano") && removed.iter().any(|r| r[0] == "less"),
        "{added:?} {removed:?}"
    );
    let notes =
        String::from_utf8(ok(&["catalog", "notes", "notes-base", "1.1.0", "--catalog", &catalog.url]).stdout)
            .unwrap();
    let mut listed_added = table(&notes, "Added");
    let mut listed_removed = table(&notes, "Removed");
    listed_added.sort();
    listed_removed.sort();
    assert_eq!(listed_added, added, "{notes}");
    assert_eq!(listed_removed, removed, "{notes}");
    assert_eq!(table(&notes, "Upgraded").len() + table(&notes, "Downgraded").len(), changed.len(), "{notes}");
    assert!(
        notes.contains("# notes-base 1.1.0") && notes.contains("Compared with: notes-base 1.0.0"),
        "{notes}"
    );
    assert!(notes.contains("+include = [\"ca-certificates\", \"nano\"]"), "the blueprint diff: {notes}");
    let html = String::from_utf8(
        ok(&["catalog", "notes", "notes-base", "1.1.0", "--format", "html", "--catalog", &catalog.url])
            .stdout,
    )
    .unwrap();
    assert!(html.contains("<h1>") && added.iter().all(|r| html.contains(&r[0])), "{html}");

    // A role image FROM the stable version records it as its parent.
    ok(&[
        "promote",
        "notes-base",
        "1.1.0",
        "--channel",
        "stable",
        "--catalog",
        &catalog.url,
        "--token",
        &catalog.token,
    ]);
    let role = w.join("bp/role");
    fs_err::create_dir_all(&role).unwrap();
    fs_err::write(
        role.join("Kilnfile"),
        "FROM catalog:notes-base@stable\n\
         LABEL org.opencontainers.image.title=notes-role org.opencontainers.image.version=1.0.0\n\
         RUN echo role > /etc/role\n\
         CONTRACT container-base@^1\n\
         OUTPUT oci\n",
    )
    .unwrap();
    let out_role = w.join("out/role");
    ship(&role, &out_role, &private, &catalog);
    let base = json(&["catalog", "ls", "notes-base", "1.1.0", "--catalog", &catalog.url]);
    let derived = json(&["catalog", "ls", "notes-role", "1.0.0", "--catalog", &catalog.url]);
    assert_eq!(derived["parent"]["family"], "notes-base", "{derived}");
    assert_eq!(derived["parent"]["version"], "1.1.0");
    assert_eq!(derived["parent"]["digest"], base["image_digest"]);
    assert_eq!(derived["parent"]["reference"], "catalog:notes-base@stable");

    // A provisioner fetches the stable image certified for a contract: downloaded, verified, in place.
    let fetched = w.join("fetched");
    let got = json(&[
        "fetch",
        "notes-base@stable",
        "--contract",
        "container-base@^1",
        "--out",
        s(&fetched),
        "--key",
        s(&public),
        "--catalog",
        &catalog.url,
    ]);
    assert_eq!((got["version"].as_str(), got["state"].as_str()), (Some("1.1.0"), Some("supported")), "{got}");
    assert_eq!(
        fs_err::read(fetched.join("manifest.json")).unwrap(),
        fs_err::read(out2.join("manifest.json")).unwrap(),
        "the fetched bundle is the published one"
    );
    let o = kiln(&[
        "fetch",
        "notes-base@stable",
        "--contract",
        "web-server@^1",
        "--out",
        s(&w.join("nothing")),
        "--key",
        s(&public),
        "--catalog",
        &catalog.url,
    ]);
    assert_eq!(o.status.code(), Some(1), "no stable version is certified for web-server");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("certified for web-server@^1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!w.join("nothing").exists());

    // Revoking the parent flags the role image; resolve passes the revoked version over, saying why.
    let revoked = json(&[
        "lifecycle",
        "notes-base",
        "1.1.0",
        "--revoke",
        "broken CA bundle",
        "--catalog",
        &catalog.url,
        "--token",
        &catalog.token,
    ]);
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["flagged"], serde_json::json!(["notes-role@1.0.0"]));
    let derived = json(&["catalog", "ls", "notes-role", "1.0.0", "--catalog", &catalog.url]);
    assert_eq!(derived["state"], "revoked");
    assert_eq!(derived["lifecycle"]["revoked"]["inherited_from"], "notes-base@1.1.0");
    let answer =
        json(&["resolve", "notes-base", "--contract", "container-base@^1", "--catalog", &catalog.url]);
    assert_eq!(answer["chosen"]["version"], "1.0.0", "{answer}");
    assert_eq!(answer["passed_over"][0]["version"], "1.1.0");
    assert_eq!(answer["passed_over"][0]["reasons"][0]["kind"], "revoked", "{answer}");

    // A revoked image is not fetched unless asked; then it is, verified.
    let o = kiln(&[
        "fetch",
        "notes-base@1.1.0",
        "--out",
        s(&w.join("revoked")),
        "--key",
        s(&public),
        "--catalog",
        &catalog.url,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("revoked: broken CA bundle"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!w.join("revoked").exists());
    let got = json(&[
        "fetch",
        "notes-base@1.1.0",
        "--allow-retired",
        "--out",
        s(&w.join("revoked")),
        "--key",
        s(&public),
        "--catalog",
        &catalog.url,
    ]);
    assert_eq!(got["state"], "revoked");

    // The audit log has who did what.
    let audit = json(&["catalog", "audit", "--family", "notes-base", "--catalog", &catalog.url]);
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["revoke", "promote", "publish", "publish"], "{audit}");
    assert!(audit["entries"].as_array().unwrap().iter().all(|e| e["actor"] == "token:admin"));
}
