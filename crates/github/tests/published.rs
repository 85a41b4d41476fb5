//! End to end through the library, as `kiln publish --github` and `kiln pipeline --github` do it: signed
//! fixture bundles (the catalog tests' own fixtures, no image build) published over HTTP to a served catalog,
//! then the catalog's version record and release notes announced to a fake GitHub: the release carries the
//! notes and every artifact's digest and size as the bundle's files have them, the status links to the
//! version in the catalog; publishing again updates the same release.

#[path = "../../../catalog/tests/support/mod.rs"]
mod catalog_support;
mod support;

use catalog_support::{sha256, BundleSpec, Bundles, Server};
use kiln_github::{announce_published, body, GitHub, PublishedVersion};
use support::fake_github::FakeGitHub;

const TOKEN: &str = "ghs_published";
const SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";

#[test]
fn a_published_version_gets_a_release_with_its_notes_and_digests_and_a_success_status() {
    let bundles = Bundles::new();
    let server = Server::for_bundles(&bundles);
    server.publish(&bundles.good(&BundleSpec::new("debian-base", "1.0.0")));
    let spec = BundleSpec::new("debian-base", "1.1.0").packages(&[
        ("base-files", "12.4+deb12u6", "amd64"),
        ("libc6", "2.36-9+deb12u4", "amd64"),
        ("openssh-server", "1:9.2p1-2+deb12u3", "amd64"),
    ]);
    let bundle = bundles.good(&spec);
    let outcome = server.publish(&bundle);
    assert!(outcome.created);

    // What kiln has after a publish: the version record (the `version` of `kiln --json publish`) and the notes.
    let record = serde_json::to_value(&outcome.version).unwrap();
    let version: semver::Version = "1.1.0".parse().unwrap();
    let notes = server.admin().notes("debian-base", &version, "markdown").unwrap();
    assert!(notes.contains("openssh-server"), "the notes list the added package: {notes}");

    let fake = FakeGitHub::start("example-org", "images", TOKEN);
    let gh = GitHub::new(&fake.url, TOKEN, fake.repository().parse().unwrap()).unwrap();
    let v = PublishedVersion::from_json(&record).unwrap();
    let url = body::catalog_version_url(&server.url, &v.family, &v.version).unwrap();
    assert_eq!(url, format!("{}/families/debian-base/1.1.0", server.url));
    let a = announce_published(&gh, &v, &notes, Some(&url), Some(SHA));
    assert!(a.ok(), "{:?}", a.errors);

    let releases = fake.releases();
    assert_eq!(releases.len(), 1);
    let r = &releases[0];
    assert_eq!(
        (r.tag.as_str(), r.name.as_str(), r.target_commitish.as_str()),
        ("debian-base-1.1.0", "debian-base 1.1.0", SHA)
    );
    assert!(r.body.starts_with(notes.trim_end()), "the notes come first, whole");
    // Every artifact of the signed manifest, with the digest and size of the file in the bundle.
    let manifest: serde_json::Value = serde_json::from_slice(&bundle.read("manifest.json")).unwrap();
    let artifacts = manifest["artifacts"].as_array().unwrap();
    assert!(artifacts.len() >= 3);
    for a in artifacts {
        let path = a["path"].as_str().unwrap();
        let bytes = bundle.read(path);
        let row = format!("| `{path}` | {} |", a["kind"].as_str().unwrap());
        let line = r
            .body
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("no row {row}:\n{}", r.body));
        assert!(line.contains(&format!("`{}`", sha256(&bytes))), "{line}");
        assert!(line.contains(&format!("{} bytes", bytes.len())), "{line}");
    }
    assert!(r.body.contains(&format!("- Signed manifest: `{}`", bundle.manifest_digest())));
    assert!(r.body.contains("- Certified: `base-os@1.0.0`"));
    assert!(r.body.trim_end().ends_with(&format!("[debian-base 1.1.0 in the catalog]({url})")));

    let statuses = fake.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].sha, SHA);
    assert_eq!(statuses[0].body["state"], "success");
    assert_eq!(statuses[0].body["context"], "kiln/debian-base");
    assert_eq!(statuses[0].body["target_url"], url.as_str());

    // Publishing the same bundle again changes nothing in the catalog; the release is updated, not doubled.
    let again = server.publish(&bundle);
    assert!(!again.created);
    let v = PublishedVersion::from_json(&serde_json::to_value(&again.version).unwrap()).unwrap();
    let a = announce_published(&gh, &v, &notes, Some(&url), Some(SHA));
    assert!(a.ok(), "{:?}", a.errors);
    assert_eq!(a.release.as_ref().map(|r| r.created), Some(false));
    assert_eq!(fake.releases().len(), 1);
    assert_eq!(fake.releases()[0].body, r.body);
}
