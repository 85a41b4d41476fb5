//! What each web page shows, as serializable views computed from the catalog's model (pure: families,
//! versions, release notes, where the catalog is reached and the day in; views out). The templates in
//! `catalog/templates/web/` render them ([`super::render`]); nothing here formats HTML, except that the
//! stored release notes (HTML the catalog rendered and escaped at publish) are cut to their body.

use std::collections::{BTreeSet, VecDeque};

use serde::Serialize;

use super::{
    action::PageError,
    timeline::{self, RowInput, Timeline},
};
use crate::model::{
    ArtifactKind, ArtifactRecord, Day, FamilyState, LifecycleState, ReleaseNotes, Revocation, VersionRecord,
};

/// Versions the family page's timeline draws (the newest); the table lists every version.
pub const TIMELINE_ROWS: usize = 24;

/// Where the catalog is reached, as the browser addressed it, and how it is served: the commands on the
/// version page name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    /// `catalog.example:8080`
    pub host: String,
    /// Reached over HTTPS (a TLS-terminating proxy said so).
    pub tls: bool,
    /// Reads need no token.
    pub public_reads: bool,
}

impl Site {
    /// `http://HOST` or `https://HOST`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.host)
    }
}

/// Percent-encodes a URL path segment (unreserved characters and `+` stay).
fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~+".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a `/`-separated path, segment by segment.
fn enc_path(path: &str) -> String {
    path.split('/').map(enc).collect::<Vec<_>>().join("/")
}

pub fn family_href(family: &str) -> String {
    format!("/families/{}", enc(family))
}

pub fn version_href(family: &str, version: &semver::Version) -> String {
    format!("/families/{}/{}", enc(family), enc(&version.to_string()))
}

/// A file of a version's bundle, through the JSON API.
pub fn file_href(family: &str, version: &semver::Version, path: &str) -> String {
    format!(
        "/api/v1/families/{}/versions/{}/files/{}",
        enc(family),
        enc(&version.to_string()),
        enc_path(path)
    )
}

/// `64.0 KiB`; bytes below 1 KiB as `512 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn day(d: Option<Day>) -> Option<String> {
    d.map(|d| d.to_string())
}

/// A link to a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionLink {
    pub version: String,
    pub href: String,
}

impl VersionLink {
    fn new(family: &str, version: &semver::Version) -> Self {
        Self { version: version.to_string(), href: version_href(family, version) }
    }
}

/// A channel and the version it points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelLink {
    pub name: String,
    pub version: String,
    pub href: String,
}

fn channels(f: &FamilyState) -> Vec<ChannelLink> {
    f.channels
        .values()
        .map(|c| ChannelLink {
            name: c.name.clone(),
            version: c.version.to_string(),
            href: version_href(&f.name, &c.version),
        })
        .collect()
}

/// Names of the channels pointing at `v` now.
fn channels_at(f: &FamilyState, v: &semver::Version) -> Vec<String> {
    f.channels.values().filter(|c| &c.version == v).map(|c| c.name.clone()).collect()
}

/// `family@version` of another image (a parent, an ancestor a revocation came from), linked when this
/// catalog has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageLink {
    pub id: String,
    pub href: Option<String>,
    pub state: Option<LifecycleState>,
}

/// Every family of the catalog, to find other images in.
#[derive(Debug, Clone, Copy)]
pub struct Families<'a>(pub &'a [&'a FamilyState]);

impl<'a> Families<'a> {
    fn get(&self, family: &str, version: &semver::Version) -> Option<&'a VersionRecord> {
        self.0.iter().find(|f| f.name == family).and_then(|f| f.version(version))
    }

    fn link(&self, family: &str, version: &semver::Version, today: Day) -> ImageLink {
        let found = self.get(family, version);
        ImageLink {
            id: format!("{family}@{version}"),
            href: found.map(|_| version_href(family, version)),
            state: found.map(|v| v.lifecycle.state_on(today)),
        }
    }

    /// `family@version` as a revocation names its origin.
    fn link_id(&self, id: &str, today: Day) -> ImageLink {
        match id.rsplit_once('@').and_then(|(f, v)| Some((f, v.parse::<semver::Version>().ok()?))) {
            Some((f, v)) => self.link(f, &v, today),
            None => ImageLink { id: id.to_owned(), href: None, state: None },
        }
    }
}

/// A revocation as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokedView {
    pub reason: String,
    pub at: String,
    pub by: String,
    pub inherited_from: Option<ImageLink>,
}

fn revoked(r: &Revocation, all: Families<'_>, today: Day) -> RevokedView {
    RevokedView {
        reason: r.reason.clone(),
        at: r.at.to_string(),
        by: r.by.clone(),
        inherited_from: r.inherited_from.as_deref().map(|id| all.link_id(id, today)),
    }
}

// ---------------------------------------------------------------------------------------------------------
// `/`

/// `/`: every family.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexView {
    pub today: String,
    pub families: Vec<FamilyRow>,
    pub versions: usize,
}

/// A family on the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyRow {
    pub name: String,
    pub href: String,
    pub versions: usize,
    pub latest: Option<VersionLink>,
    /// The newest version's state today.
    pub state: Option<LifecycleState>,
    /// What the newest version is certified for.
    pub contracts: Vec<String>,
    pub channels: Vec<ChannelLink>,
}

pub fn index(families: &[&FamilyState], today: Day) -> IndexView {
    let mut rows: Vec<FamilyRow> = families
        .iter()
        .map(|f| {
            let latest = f.versions.last();
            FamilyRow {
                name: f.name.clone(),
                href: family_href(&f.name),
                versions: f.versions.len(),
                latest: latest.map(|v| VersionLink::new(&f.name, &v.version)),
                state: latest.map(|v| v.lifecycle.state_on(today)),
                contracts: latest
                    .map(|v| v.certified.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                channels: channels(f),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    IndexView { today: today.to_string(), versions: rows.iter().map(|r| r.versions).sum(), families: rows }
}

// ---------------------------------------------------------------------------------------------------------
// `/families/FAMILY`

/// `/families/FAMILY`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FamilyView {
    pub today: String,
    pub name: String,
    pub href: String,
    /// Newest first.
    pub versions: Vec<VersionRow>,
    pub timeline: Timeline,
    /// Versions older than the ones the timeline draws.
    pub timeline_omitted: usize,
    pub channels: Vec<ChannelLink>,
    /// Every channel move, newest first.
    pub history: Vec<MoveRow>,
}

/// A version in the family's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionRow {
    pub version: String,
    pub href: String,
    pub state: LifecycleState,
    pub published: String,
    pub supported_since: Option<String>,
    pub deprecated_on: Option<String>,
    pub end_of_life_on: Option<String>,
    pub revoked: Option<RevokedView>,
    pub contracts: Vec<String>,
    /// Channels pointing here now.
    pub channels: Vec<String>,
    pub parent: Option<ImageLink>,
}

/// One channel move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoveRow {
    pub channel: String,
    pub at: String,
    pub by: String,
    pub from: Option<VersionLink>,
    pub to: VersionLink,
}

fn version_row(f: &FamilyState, v: &VersionRecord, all: Families<'_>, today: Day) -> VersionRow {
    let l = &v.lifecycle;
    VersionRow {
        version: v.version.to_string(),
        href: version_href(&f.name, &v.version),
        state: l.state_on(today),
        published: Day::of(v.published_at).to_string(),
        supported_since: day(l.supported_since),
        deprecated_on: day(l.deprecated_on),
        end_of_life_on: day(l.end_of_life_on),
        revoked: l.revoked.as_ref().map(|r| revoked(r, all, today)),
        contracts: v.certified.iter().map(ToString::to_string).collect(),
        channels: channels_at(f, &v.version),
        parent: v.parent.as_ref().map(|p| all.link(&p.family, &p.version, today)),
    }
}

/// The timeline of `versions` (drawn in the order given).
fn timeline_of(family: &str, versions: &[&VersionRecord], today: Day) -> Timeline {
    let labels: Vec<(String, String)> =
        versions.iter().map(|v| (v.version.to_string(), version_href(family, &v.version))).collect();
    let rows: Vec<RowInput<'_>> = versions
        .iter()
        .zip(&labels)
        .map(|(v, (label, href))| RowInput {
            label,
            href,
            published: Day::of(v.published_at),
            lifecycle: &v.lifecycle,
        })
        .collect();
    timeline::timeline(&rows, today)
}

/// The family page; `all` holds every family (for parents' links), `f` among them or not.
pub fn family(f: &FamilyState, all: Families<'_>, today: Day) -> FamilyView {
    let newest_first: Vec<&VersionRecord> = f.versions.iter().rev().collect();
    let drawn = &newest_first[..newest_first.len().min(TIMELINE_ROWS)];
    let mut history: Vec<MoveRow> = f
        .channels
        .values()
        .flat_map(|c| {
            c.history.iter().rev().map(|m| MoveRow {
                channel: c.name.clone(),
                at: m.at.to_string(),
                by: m.by.clone(),
                from: m.from.as_ref().map(|v| VersionLink::new(&f.name, v)),
                to: VersionLink::new(&f.name, &m.to),
            })
        })
        .collect();
    // Newest first (a stable sort: moves of one channel in the same second stay newest first).
    history.sort_by(|a, b| b.at.cmp(&a.at));
    FamilyView {
        today: today.to_string(),
        name: f.name.clone(),
        href: family_href(&f.name),
        versions: newest_first.iter().map(|v| version_row(f, v, all, today)).collect(),
        timeline: timeline_of(&f.name, drawn, today),
        timeline_omitted: newest_first.len() - drawn.len(),
        channels: channels(f),
        history,
    }
}

// ---------------------------------------------------------------------------------------------------------
// `/families/FAMILY/VERSION`

/// `/families/FAMILY/VERSION`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionView {
    pub today: String,
    pub family: String,
    pub family_href: String,
    pub version: String,
    pub row: VersionRow,
    pub published_at: String,
    pub published_by: String,
    /// Fingerprint of the key every signature of the version verified with at publish.
    pub signed_by: String,
    pub manifest: FileView,
    pub image_digest: Option<String>,
    /// Contract requests the blueprint claims.
    pub claimed: Vec<String>,
    pub artifacts: Vec<ArtifactView>,
    pub parent: Option<ParentView>,
    pub descendants: Vec<DescendantView>,
    pub commands: Vec<Command>,
    /// End of life or revoked: the catalog refuses to hand the version out unless asked to.
    pub retired: bool,
    /// The body of the stored HTML release notes, headings one level down.
    pub notes_html: Option<String>,
    pub notes_markdown_href: String,
    pub api_href: String,
    pub timeline: Timeline,
}

/// A bundle file with its digest and its signature file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileView {
    pub path: String,
    pub href: String,
    pub digest: String,
    pub size: u64,
    pub size_human: String,
    pub signature: Option<FileLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileLink {
    pub path: String,
    pub href: String,
}

/// An artifact of the version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactView {
    pub kind: ArtifactKind,
    pub path: String,
    /// The file to download; `None` for an OCI layout (a folder: pull it from the registry).
    pub href: Option<String>,
    /// `sha256:…` (an OCI image's manifest digest).
    pub digest: String,
    pub size: u64,
    pub size_human: String,
    /// The signature file of what the digest covers, when the bundle has it.
    pub signature: Option<FileLink>,
}

/// The image this version was built FROM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParentView {
    pub image: ImageLink,
    pub digest: String,
    /// As the blueprint wrote it (`catalog:debian-minimal@stable`).
    pub reference: String,
}

/// An image built FROM this version, directly or through others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DescendantView {
    pub image: ImageLink,
    /// `family@version` of its parent.
    pub built_from: String,
    /// 1: built FROM this version; 2: FROM one of those; …
    pub generation: usize,
}

/// A command to copy from the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    pub id: &'static str,
    pub title: &'static str,
    pub text: String,
    pub note: Option<String>,
}

fn file_link(v: &VersionRecord, path: &str) -> Option<FileLink> {
    v.file(path).map(|f| FileLink { path: f.path.clone(), href: file_href(&v.family, &v.version, &f.path) })
}

fn artifact(v: &VersionRecord, a: &ArtifactRecord) -> ArtifactView {
    let manifest_artifact = kiln_blueprint::manifest::Artifact {
        kind: a.kind,
        path: a.path.clone(),
        sha256: a.digest.clone(),
        size: a.size,
    };
    let signed = manifest_artifact.digested_file();
    ArtifactView {
        kind: a.kind,
        path: a.path.clone(),
        href: (a.kind != ArtifactKind::Oci && v.file(&a.path).is_some())
            .then(|| file_href(&v.family, &v.version, &a.path)),
        digest: a.digest.clone(),
        size: a.size,
        size_human: human_size(a.size),
        signature: file_link(v, &kiln_sign::paths::signature_file(&signed)),
    }
}

/// Images built FROM `v`, breadth first (each once), with the image each was built from.
fn descendants(v: &VersionRecord, all: Families<'_>, today: Day) -> Vec<DescendantView> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::from([(v.family.clone(), v.version.clone())]);
    let mut queue = VecDeque::from([(v.family.clone(), v.version.clone(), 1)]);
    while let Some((family, version, generation)) = queue.pop_front() {
        for f in all.0 {
            for child in &f.versions {
                let Some(p) = &child.parent else { continue };
                if p.family != family || p.version != version {
                    continue;
                }
                if !seen.insert((child.family.clone(), child.version.clone())) {
                    continue;
                }
                out.push(DescendantView {
                    image: all.link(&child.family, &child.version, today),
                    built_from: format!("{family}@{version}"),
                    generation,
                });
                queue.push_back((child.family.clone(), child.version.clone(), generation + 1));
            }
        }
    }
    out
}

/// Shell commands that fetch, boot and verify the version from this catalog.
pub fn commands(v: &VersionRecord, site: &Site) -> Vec<Command> {
    let base = site.base_url();
    let (f, ver) = (&v.family, v.version.to_string());
    let image = format!("{}/{}:{}", site.host, f, ver);
    let mut out = Vec::new();
    if v.artifacts.iter().any(|a| a.kind == ArtifactKind::Oci) {
        let (src_tls, tls) =
            if site.tls { ("", "") } else { (" --src-tls-verify=false", " --tls-verify=false") };
        out.push(Command {
            id: "skopeo",
            title: "Copy the OCI image",
            text: format!("skopeo copy{src_tls} docker://{image} oci-archive:{f}-{ver}.tar"),
            note: None,
        });
        out.push(Command {
            id: "podman",
            title: "Pull with podman",
            text: format!("podman pull{tls} {image}"),
            note: None,
        });
    }
    let disk = v
        .artifacts
        .iter()
        .find(|a| a.kind == ArtifactKind::Qcow2)
        .or_else(|| v.artifacts.iter().find(|a| a.kind == ArtifactKind::Raw));
    if let Some(d) = disk {
        let format = if d.kind == ArtifactKind::Qcow2 { "qcow2" } else { "raw" };
        let driver = if site.tls { "https" } else { "http" };
        let url = format!("{base}/download/{}/{}/{}", enc(f), enc(&ver), enc_path(&d.path));
        out.push(Command {
            id: "qemu",
            title: "Boot the disk in QEMU, streamed over HTTP",
            text: format!(
                "qemu-system-x86_64 -machine q35,accel=kvm:tcg -m 2G -smp 2 -nographic \\\n  \
                 -bios /usr/share/ovmf/OVMF.fd \\\n  \
                 -drive if=virtio,format={format},snapshot=on,file.driver={driver},file.url={url}"
            ),
            note: Some(
                "QEMU's curl block driver reads it (Debian: qemu-block-extra); snapshot=on keeps writes in \
                 memory, the image in the catalog never changes."
                    .into(),
            ),
        });
        out.push(Command {
            id: "ipxe",
            title: "Network boot with iPXE",
            text: format!("chain {base}/boot/{}/{}.ipxe", enc(f), enc(&ver)),
            note: Some("At the iPXE prompt (Ctrl-B), or as the last line of an iPXE script.".into()),
        });
    }
    let token = if site.public_reads { "" } else { " --token \"$KILN_TOKEN\"" };
    out.push(Command {
        id: "verify",
        title: "Verify signatures and digests",
        text: format!("kiln verify {f}@{ver} --catalog {base}{token} --key release.pub"),
        note: Some(format!(
            "release.pub: the public key with fingerprint {} \
             (openssl pkey -pubin -in release.pub -outform DER | sha256sum).",
            v.signed_by
        )),
    });
    out
}

/// The body of a stored HTML release notes page without its title (the page has its own), with headings
/// one level down so they nest under the page's "Release notes" heading. The notes were rendered with
/// escaping at publish, so a tag in them is markup the template wrote, never text from a bundle.
pub fn notes_body(html: &str) -> Option<String> {
    let start = html.find("<body>")? + "<body>".len();
    let end = html.rfind("</body>")?;
    let mut body = html.get(start..end)?.trim().to_owned();
    if let (Some(a), Some(b)) = (body.find("<h1>"), body.find("</h1>")) {
        if a < b {
            body.replace_range(a..b + "</h1>".len(), "");
        }
    }
    let body = body
        .replace("<h4", "<h5")
        .replace("</h4>", "</h5>")
        .replace("<h3", "<h4")
        .replace("</h3>", "</h4>")
        .replace("<h2", "<h3")
        .replace("</h2>", "</h3>");
    Some(body.trim().to_owned())
}

/// What the version page is made from.
#[derive(Debug, Clone, Copy)]
pub struct VersionInput<'a> {
    pub family: &'a FamilyState,
    pub version: &'a VersionRecord,
    pub notes: Option<&'a ReleaseNotes>,
    /// Every family (parents, descendants and revocations' origins are looked up here).
    pub all: Families<'a>,
    pub site: &'a Site,
}

pub fn version(input: &VersionInput<'_>, today: Day) -> VersionView {
    let (f, v, all) = (input.family, input.version, input.all);
    let manifest_file = v.file(kiln_blueprint::manifest::MANIFEST_FILE);
    VersionView {
        today: today.to_string(),
        family: f.name.clone(),
        family_href: family_href(&f.name),
        version: v.version.to_string(),
        row: version_row(f, v, all, today),
        published_at: v.published_at.to_string(),
        published_by: v.published_by.clone(),
        signed_by: v.signed_by.clone(),
        manifest: FileView {
            path: kiln_blueprint::manifest::MANIFEST_FILE.to_owned(),
            href: format!(
                "/api/v1/families/{}/versions/{}/manifest",
                enc(&f.name),
                enc(&v.version.to_string())
            ),
            digest: v.manifest_digest.clone(),
            size: manifest_file.map_or(0, |m| m.size),
            size_human: human_size(manifest_file.map_or(0, |m| m.size)),
            signature: file_link(
                v,
                &kiln_sign::paths::signature_file(kiln_blueprint::manifest::MANIFEST_FILE),
            ),
        },
        image_digest: v.image_digest.clone(),
        claimed: v.claimed.clone(),
        artifacts: v.artifacts.iter().map(|a| artifact(v, a)).collect(),
        parent: v.parent.as_ref().map(|p| ParentView {
            image: all.link(&p.family, &p.version, today),
            digest: p.digest.clone(),
            reference: p.reference.clone(),
        }),
        descendants: descendants(v, all, today),
        commands: commands(v, input.site),
        retired: matches!(v.lifecycle.state_on(today), LifecycleState::EndOfLife | LifecycleState::Revoked),
        notes_html: input.notes.and_then(|n| notes_body(&n.html)),
        notes_markdown_href: format!(
            "/api/v1/families/{}/versions/{}/release-notes?format=markdown",
            enc(&f.name),
            enc(&v.version.to_string())
        ),
        api_href: format!("/api/v1/families/{}/versions/{}", enc(&f.name), enc(&v.version.to_string())),
        timeline: timeline_of(&f.name, &[v], today),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Errors

/// A page saying why the one asked for is not shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorView {
    pub today: String,
    pub status: u16,
    pub title: &'static str,
    pub detail: String,
}

pub fn error(e: &PageError, today: Day) -> ErrorView {
    ErrorView { today: today.to_string(), status: e.status(), title: e.title(), detail: e.to_string() }
}
