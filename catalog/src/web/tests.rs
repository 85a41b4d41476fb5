//! The web pages over a synthetic catalog state on a fixed day: what each view holds, that the HTML
//! escapes what bundles and people wrote, and snapshots of every page's HTML.

use std::collections::BTreeMap;

use super::{
    action::PageError,
    render,
    view::{self, Families, Site},
};
use crate::model::{
    ArtifactKind, ArtifactRecord, Channel, ChannelMove, ContractId, Day, FamilyState, FileRecord, Lifecycle,
    LifecyclePolicy, LifecycleState, ParentRef, ReleaseNotes, Revocation, Timestamp, VersionRecord,
};

const TODAY: &str = "2026-11-22";
const KEY: &str = "sha256:4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee0";

fn today() -> Day {
    TODAY.parse().unwrap()
}

fn day(s: &str) -> Day {
    s.parse().unwrap()
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn v(s: &str) -> semver::Version {
    s.parse().unwrap()
}

/// `sha256:` and 64 hex digits made from `seed`.
fn digest(seed: &str) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(seed.as_bytes())))
}

/// A version with the artifacts a real build has (raw, qcow2, OCI when `oci`, SBOM, report), every file
/// and its signature in the bundle.
fn version(family: &str, ver: &str, published: &str, oci: bool) -> VersionRecord {
    let id = format!("{family}@{ver}");
    let mut artifacts = vec![
        ArtifactRecord {
            kind: ArtifactKind::Raw,
            path: "disk.raw".into(),
            digest: digest(&id),
            size: 2 << 30,
        },
        ArtifactRecord {
            kind: ArtifactKind::Qcow2,
            path: "disk.qcow2".into(),
            digest: digest(&format!("{id} qcow2")),
            size: 412_316_672,
        },
    ];
    if oci {
        artifacts.push(ArtifactRecord {
            kind: ArtifactKind::Oci,
            path: "oci".into(),
            digest: digest(&format!("{id} oci")),
            size: 1_234,
        });
    }
    artifacts.push(ArtifactRecord {
        kind: ArtifactKind::Sbom,
        path: "sbom.spdx.json".into(),
        digest: digest(&format!("{id} sbom")),
        size: 88_100,
    });
    artifacts.push(ArtifactRecord {
        kind: ArtifactKind::Report,
        path: "report/certification.json".into(),
        digest: digest(&format!("{id} report")),
        size: 5_120,
    });
    let mut files = vec![FileRecord {
        path: "manifest.json".into(),
        digest: digest(&format!("{id} manifest")),
        size: 2_048,
    }];
    for a in &artifacts {
        let signed = kiln_blueprint::manifest::Artifact {
            kind: a.kind,
            path: a.path.clone(),
            sha256: a.digest.clone(),
            size: a.size,
        }
        .digested_file();
        files.push(FileRecord { path: signed.clone(), digest: a.digest.clone(), size: a.size });
        files.push(FileRecord {
            path: format!("signatures/{signed}.sig"),
            digest: digest(&format!("{id} {signed} sig")),
            size: 96,
        });
    }
    files.push(FileRecord {
        path: "signatures/manifest.json.sig".into(),
        digest: digest(&format!("{id} manifest sig")),
        size: 96,
    });
    files.sort();
    VersionRecord {
        family: family.into(),
        version: v(ver),
        manifest_digest: digest(&format!("{id} manifest")),
        image_digest: oci.then(|| digest(&format!("{id} oci"))),
        published_at: at(published),
        published_by: "token:ci".into(),
        signed_by: KEY.into(),
        parent: None,
        claimed: vec!["base-os@^1".into(), "ssh-server@^1".into()],
        certified: vec!["base-os@1.0.0".parse::<ContractId>().unwrap(), "ssh-server@1.1.0".parse().unwrap()],
        artifacts,
        files,
        policy: LifecyclePolicy { support_months: Some(12), deprecate_after_days: Some(30) },
        lifecycle: Lifecycle::default(),
    }
}

fn child_of(mut r: VersionRecord, family: &str, ver: &str) -> VersionRecord {
    r.parent = Some(ParentRef {
        family: family.into(),
        version: v(ver),
        digest: digest(&format!("{family}@{ver} oci")),
        reference: format!("catalog:{family}@stable"),
    });
    r.certified = vec!["base-os@1.0.0".parse().unwrap(), "web-server@1.0.0".parse().unwrap()];
    r.claimed = vec!["base-os@^1".into(), "web-server@^1".into()];
    r
}

fn channel(name: &str, moves: &[(&str, Option<&str>, &str)]) -> (String, Channel) {
    let history: Vec<ChannelMove> = moves
        .iter()
        .map(|(when, from, to)| ChannelMove {
            at: at(when),
            by: "token:release".into(),
            from: from.map(v),
            to: v(to),
        })
        .collect();
    let version = history.last().unwrap().to.clone();
    (name.to_owned(), Channel { name: name.into(), version, history })
}

/// debian-minimal 1.0.0 (deprecated), 1.1.0 (supported, stable), 1.2.0 (candidate); web-role 1.0.0 (FROM
/// debian-minimal 1.0.0, revoked) and 1.1.0 (FROM 1.1.0); web-edge 1.0.0 (FROM web-role 1.1.0).
fn state() -> Vec<FamilyState> {
    let mut v100 = version("debian-minimal", "1.0.0", "2026-01-10T09:00:00Z", true);
    v100.lifecycle = Lifecycle {
        supported: true,
        supported_since: Some(day("2026-01-20")),
        deprecated_on: Some(day("2026-07-01")),
        end_of_life_on: Some(day("2027-01-10")),
        revoked: None,
    };
    let mut v110 = version("debian-minimal", "1.1.0", "2026-06-01T09:00:00Z", true);
    v110.lifecycle = Lifecycle {
        supported: true,
        supported_since: Some(day("2026-06-01")),
        deprecated_on: None,
        end_of_life_on: Some(day("2027-06-01")),
        revoked: None,
    };
    let v120 = version("debian-minimal", "1.2.0", "2026-11-02T09:00:00Z", true);
    let minimal = FamilyState {
        name: "debian-minimal".into(),
        versions: vec![v100, v110, v120],
        channels: BTreeMap::from([
            channel(
                "stable",
                &[("2026-01-20T10:00:00Z", None, "1.0.0"), ("2026-06-01T10:00:00Z", Some("1.0.0"), "1.1.0")],
            ),
            channel("candidate", &[("2026-11-02T10:00:00Z", None, "1.2.0")]),
        ]),
        revision: 7,
    };
    let mut w100 =
        child_of(version("web-role", "1.0.0", "2026-02-01T12:00:00Z", false), "debian-minimal", "1.0.0");
    w100.lifecycle = Lifecycle {
        supported: true,
        supported_since: Some(day("2026-02-03")),
        deprecated_on: None,
        end_of_life_on: Some(day("2027-02-01")),
        revoked: Some(Revocation {
            reason: "CVE-2026-1234: nginx <script>alert(1)</script>".into(),
            at: at("2026-08-14T16:30:00Z"),
            by: "token:security".into(),
            inherited_from: None,
        }),
    };
    let mut w110 =
        child_of(version("web-role", "1.1.0", "2026-06-03T12:00:00Z", false), "debian-minimal", "1.1.0");
    w110.lifecycle.supported = true;
    w110.lifecycle.supported_since = Some(day("2026-06-05"));
    let web = FamilyState {
        name: "web-role".into(),
        versions: vec![w100, w110],
        channels: BTreeMap::from([channel("stable", &[("2026-06-05T08:00:00Z", None, "1.1.0")])]),
        revision: 3,
    };
    let edge = FamilyState {
        name: "web-edge".into(),
        versions: vec![child_of(
            version("web-edge", "1.0.0", "2026-09-01T12:00:00Z", false),
            "web-role",
            "1.1.0",
        )],
        channels: BTreeMap::new(),
        revision: 1,
    };
    vec![web, minimal, edge]
}

/// Release notes as the catalog stores them (the notes template's shape).
fn notes() -> ReleaseNotes {
    ReleaseNotes {
        markdown: "# debian-minimal 1.1.0\n".into(),
        html: "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<title>debian-minimal 1.1.0: release notes</title>\n</head>\n<body>\n<h1>debian-minimal 1.1.0</h1>\n<ul>\n<li>Published: 2026-06-01T09:00:00Z</li>\n<li>Compared with: debian-minimal 1.0.0</li>\n</ul>\n<h2>Packages</h2>\n<p>212 packages: 1 added, 0 removed, 2 upgraded, 0 downgraded, 209 unchanged.</p>\n<h3>Upgraded (2)</h3>\n<table>\n<tr><td>openssl</td><td>amd64</td><td><code>3.0.13-1~deb12u1</code> → <code>3.0.15-1~deb12u1</code></td></tr>\n</table>\n<h2>Known issues</h2>\n<h3 id=\"KI-7\">KI-7: slow first boot &lt;on&gt; arm</h3>\n</body>\n</html>\n".into(),
    }
}

fn site() -> Site {
    Site { host: "catalog.example:8080".into(), tls: false, public_reads: true }
}

fn version_view(all: &[&FamilyState], family: &str, ver: &str, site: &Site) -> view::VersionView {
    let f = all.iter().find(|f| f.name == family).unwrap();
    let notes = notes();
    let input = view::VersionInput {
        family: f,
        version: f.version(&v(ver)).unwrap(),
        notes: Some(&notes),
        all: Families(all),
        site,
    };
    view::version(&input, today())
}

#[test]
fn the_index_lists_every_family_with_its_newest_version() {
    let state = state();
    let all: Vec<&FamilyState> = state.iter().collect();
    let index = view::index(&all, today());
    let names: Vec<_> = index.families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["debian-minimal", "web-edge", "web-role"]);
    assert_eq!(index.versions, 6);
    let m = &index.families[0];
    assert_eq!(m.latest.as_ref().unwrap().version, "1.2.0");
    assert_eq!(m.latest.as_ref().unwrap().href, "/families/debian-minimal/1.2.0");
    assert_eq!(m.state, Some(LifecycleState::Candidate));
    assert_eq!(m.contracts, ["base-os@1.0.0", "ssh-server@1.1.0"]);
    let channels: Vec<_> = m.channels.iter().map(|c| format!("{}={}", c.name, c.version)).collect();
    assert_eq!(channels, ["candidate=1.2.0", "stable=1.1.0"]);
    assert_eq!(index.families[2].state, Some(LifecycleState::Supported), "web-role 1.1.0");
}

#[test]
fn the_family_page_lists_versions_newest_first_with_their_state_today() {
    let state = state();
    let all: Vec<&FamilyState> = state.iter().collect();
    let f = view::family(&state[1], Families(&all), today());
    let rows: Vec<_> = f.versions.iter().map(|r| (r.version.as_str(), r.state)).collect();
    assert_eq!(
        rows,
        [
            ("1.2.0", LifecycleState::Candidate),
            ("1.1.0", LifecycleState::Supported),
            ("1.0.0", LifecycleState::Deprecated)
        ]
    );
    assert_eq!(f.versions[1].channels, ["stable"]);
    assert_eq!(f.versions[2].end_of_life_on.as_deref(), Some("2027-01-10"));
    // Every move of every channel, newest first, with where it came from.
    let moves: Vec<_> = f
        .history
        .iter()
        .map(|m| {
            format!("{} {} {:?}->{}", m.at, m.channel, m.from.as_ref().map(|x| &x.version), m.to.version)
        })
        .collect();
    assert_eq!(
        moves,
        [
            "2026-11-02T10:00:00Z candidate None->1.2.0",
            "2026-06-01T10:00:00Z stable Some(\"1.0.0\")->1.1.0",
            "2026-01-20T10:00:00Z stable None->1.0.0",
        ]
    );
    let labels: Vec<_> = f.timeline.rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["1.2.0", "1.1.0", "1.0.0"]);
    assert_eq!(f.timeline_omitted, 0);
    // A version whose parent is in the catalog links to it.
    let web = view::family(&state[0], Families(&all), today());
    let parent = web.versions[0].parent.as_ref().unwrap();
    assert_eq!(parent.href.as_deref(), Some("/families/debian-minimal/1.1.0"));
    assert_eq!(web.versions[1].state, LifecycleState::Revoked);
}

#[test]
fn the_version_page_has_signed_artifacts_lineage_notes_and_commands() {
    let state = state();
    let all: Vec<&FamilyState> = state.iter().collect();
    let page = version_view(&all, "debian-minimal", "1.1.0", &site());
    let oci = page.artifacts.iter().find(|a| a.kind == ArtifactKind::Oci).unwrap();
    let hex = &oci.digest["sha256:".len()..];
    assert_eq!(oci.href, None, "a layout folder is pulled, not downloaded");
    assert_eq!(oci.signature.as_ref().unwrap().path, format!("signatures/oci/blobs/sha256/{hex}.sig"));
    let raw = page.artifacts.iter().find(|a| a.kind == ArtifactKind::Raw).unwrap();
    assert_eq!(raw.href.as_deref(), Some("/api/v1/families/debian-minimal/versions/1.1.0/files/disk.raw"));
    assert_eq!(
        raw.signature.as_ref().unwrap().href,
        "/api/v1/families/debian-minimal/versions/1.1.0/files/signatures/disk.raw.sig"
    );
    assert_eq!(raw.size_human, "2.0 GiB");
    assert_eq!(page.manifest.signature.as_ref().unwrap().path, "signatures/manifest.json.sig");
    // web-role 1.1.0 was built from it, web-edge 1.0.0 from that.
    let lineage: Vec<_> = page
        .descendants
        .iter()
        .map(|d| format!("{} <- {} ({})", d.image.id, d.built_from, d.generation))
        .collect();
    assert_eq!(
        lineage,
        ["web-role@1.1.0 <- debian-minimal@1.1.0 (1)", "web-edge@1.0.0 <- web-role@1.1.0 (2)"]
    );
    // The notes' body, without their title, headings under the page's.
    let notes = page.notes_html.as_deref().unwrap();
    assert!(notes.starts_with("<ul>") && !notes.contains("<h1>") && !notes.contains("<body>"), "{notes}");
    assert!(notes.contains("<h3>Packages</h3>") && notes.contains("<h4 id=\"KI-7\">"), "{notes}");
    let commands: BTreeMap<_, _> = page.commands.iter().map(|c| (c.id, c.text.as_str())).collect();
    assert_eq!(
        commands["skopeo"],
        "skopeo copy --src-tls-verify=false docker://catalog.example:8080/debian-minimal:1.1.0 oci-archive:debian-minimal-1.1.0.tar"
    );
    assert_eq!(
        commands["podman"],
        "podman pull --tls-verify=false catalog.example:8080/debian-minimal:1.1.0"
    );
    assert!(
        commands["qemu"].contains(
            "format=qcow2,snapshot=on,file.driver=http,file.url=http://catalog.example:8080/download/debian-minimal/1.1.0/disk.qcow2"
        ),
        "{}",
        commands["qemu"]
    );
    assert_eq!(commands["ipxe"], "chain http://catalog.example:8080/boot/debian-minimal/1.1.0.ipxe");
    assert_eq!(
        commands["verify"],
        "kiln verify debian-minimal@1.1.0 --catalog http://catalog.example:8080 --key release.pub"
    );
}

#[test]
fn commands_follow_the_scheme_the_artifacts_and_private_reads() {
    let state = state();
    let all: Vec<&FamilyState> = state.iter().collect();
    let tls = Site { host: "images.example".into(), tls: true, public_reads: false };
    let page = version_view(&all, "web-role", "1.1.0", &tls);
    let ids: Vec<_> = page.commands.iter().map(|c| c.id).collect();
    assert_eq!(ids, ["qemu", "ipxe", "verify"], "no OCI image, no registry commands");
    let text = |id| page.commands.iter().find(|c| c.id == id).unwrap().text.clone();
    assert!(text("qemu")
        .contains("file.driver=https,file.url=https://images.example/download/web-role/1.1.0/disk.qcow2"));
    assert_eq!(
        text("verify"),
        "kiln verify web-role@1.1.0 --catalog https://images.example --token \"$KILN_TOKEN\" --key release.pub"
    );
    let parent = page.parent.as_ref().unwrap();
    assert_eq!(parent.image.href.as_deref(), Some("/families/debian-minimal/1.1.0"));
    assert_eq!(parent.image.state, Some(LifecycleState::Supported));
    assert!(!page.retired);
    assert!(version_view(&all, "web-role", "1.0.0", &tls).retired, "revoked");
    assert!(page.descendants.iter().any(|d| d.image.id == "web-edge@1.0.0"));
}

#[test]
fn what_people_and_bundles_wrote_is_escaped() {
    let state = state();
    let all: Vec<&FamilyState> = state.iter().collect();
    let family = render::family(&view::family(&state[0], Families(&all), today())).unwrap();
    assert!(family.contains("nginx &lt;script&gt;alert(1)&lt;/script&gt;"), "{family}");
    assert!(!family.contains("<script"), "{family}");
    let page = render::version(&version_view(&all, "web-role", "1.0.0", &site())).unwrap();
    assert!(!page.contains("<script"));
    assert!(page.contains("web-role 1.0.0 is revoked: the catalog refuses"), "{page}");
    // The stored notes are markup the catalog escaped at publish: kept as they are.
    assert!(page.contains("KI-7: slow first boot &lt;on&gt; arm</h4>"), "{page}");
}

#[test]
fn notes_without_a_body_are_not_shown() {
    assert_eq!(view::notes_body("just text"), None);
    assert_eq!(view::notes_body("<body><h1>t</h1>\n<h2>a</h2></body>").as_deref(), Some("<h3>a</h3>"));
}

#[test]
fn sizes_read_as_people_write_them() {
    assert_eq!(view::human_size(512), "512 B");
    assert_eq!(view::human_size(64 << 10), "64.0 KiB");
    assert_eq!(view::human_size(412_316_672), "393.2 MiB");
}

#[test]
fn index_html() {
    let state = state();
    let all: Vec<&FamilyState> = state.iter().collect();
    insta::assert_snapshot!(render::index(&view::index(&all, today())).unwrap());
}

#[test]
fn family_html() {
    let state = state();
    let all: Vec<&FamilyState> = state.iter().collect();
    insta::assert_snapshot!(render::family(&view::family(&state[1], Families(&all), today())).unwrap());
}

#[test]
fn version_html() {
    let state = state();
    let all: Vec<&FamilyState> = state.iter().collect();
    insta::assert_snapshot!(render::version(&version_view(&all, "debian-minimal", "1.1.0", &site())).unwrap());
}

#[test]
fn not_found_html() {
    let e = PageError::NotFound { detail: "there is no family named `nope`".into() };
    insta::assert_snapshot!(render::error(&view::error(&e, today())).unwrap());
}
