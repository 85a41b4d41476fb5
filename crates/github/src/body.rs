//! What kiln tells GitHub about a version, built from what the catalog answered: the release (its tag
//! `FAMILY-VERSION`, its title, and its Markdown body: the release notes, a table of the artifacts with their
//! digests and sizes, the version's identity, the catalog link) and the commit status (its context
//! `kiln/FAMILY` and a description within GitHub's length limit). Pure: no I/O.

use serde::Deserialize;

/// GitHub refuses a release body longer than this many characters.
pub const MAX_BODY_CHARS: usize = 125_000;
/// GitHub refuses a commit status description longer than this many characters.
pub const MAX_DESCRIPTION_CHARS: usize = 140;

/// The line that replaces the end of release notes too long for a GitHub release.
pub const TRUNCATED_NOTE: &str = "*The release notes are cut here: GitHub limits a release's text. The full \
                                  notes are in the catalog.*";

/// A published version as the catalog's version record describes it (the `version` of `kiln --json
/// publish`, `GET /api/v1/families/F/versions/V`): the fields a release shows; the others are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PublishedVersion {
    pub family: String,
    pub version: String,
    /// `sha256:…` of the signed `manifest.json`: the version's identity.
    pub manifest_digest: String,
    /// The OCI image manifest's digest, when the version has an OCI image.
    #[serde(default)]
    pub image_digest: Option<String>,
    /// The contracts the certification certified (`base-os@1.0.0`).
    #[serde(default)]
    pub certified: Vec<String>,
    /// Fingerprint of the key the catalog verified the signatures with.
    #[serde(default)]
    pub signed_by: Option<String>,
    pub artifacts: Vec<PublishedArtifact>,
}

/// One artifact of a version, as its signed manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PublishedArtifact {
    /// `raw`, `qcow2`, `oci`, `sbom`, …
    pub kind: String,
    pub path: String,
    /// `sha256:…` (for an OCI image: its image manifest's digest).
    pub digest: String,
    pub size: u64,
}

impl PublishedVersion {
    /// Read the catalog's version record (unknown fields are ignored).
    pub fn from_json(record: &serde_json::Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(record)
    }

    /// The release's tag: `FAMILY-VERSION`.
    pub fn tag(&self) -> String {
        format!("{}-{}", self.family, self.version)
    }

    /// The release's title: `FAMILY VERSION`.
    pub fn title(&self) -> String {
        format!("{} {}", self.family, self.version)
    }
}

/// The commit status context of a family: `kiln/FAMILY`.
pub fn status_context(family: &str) -> String {
    format!("kiln/{family}")
}

/// Where a catalog shows a version: `CATALOG/families/FAMILY/VERSION` for a catalog reached over HTTP; none
/// for a catalog folder (no one else can open that link).
pub fn catalog_version_url(catalog: &str, family: &str, version: &str) -> Option<String> {
    (catalog.starts_with("http://") || catalog.starts_with("https://"))
        .then(|| format!("{}/families/{family}/{version}", catalog.trim_end_matches('/')))
}

/// A size for people: `512 bytes`, `64.0 KiB (65536 bytes)`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    // Display only: the exact count follows in parentheses.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {} ({bytes} bytes)", UNITS[unit])
}

/// `text` as a Markdown code span that is safe in a table cell.
fn code(text: &str) -> String {
    let text = text.replace('|', "\\|");
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

/// The part of the body after the notes: the artifacts table, the version's identity, the catalog link.
fn facts(v: &PublishedVersion, catalog_url: Option<&str>) -> String {
    let mut out =
        String::from("## Artifacts\n\n| Artifact | Kind | Size | Digest |\n| --- | --- | --- | --- |\n");
    for a in &v.artifacts {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            code(&a.path),
            a.kind.replace('|', "\\|"),
            size(a.size),
            code(&a.digest)
        ));
    }
    out.push('\n');
    out.push_str(&format!("- Signed manifest: {}\n", code(&v.manifest_digest)));
    if let Some(d) = &v.image_digest {
        out.push_str(&format!("- OCI image: {}\n", code(d)));
    }
    if !v.certified.is_empty() {
        let certified: Vec<String> = v.certified.iter().map(|c| code(c)).collect();
        out.push_str(&format!("- Certified: {}\n", certified.join(", ")));
    }
    if let Some(k) = &v.signed_by {
        out.push_str(&format!("- Signed by: {}\n", code(k)));
    }
    if let Some(url) = catalog_url {
        out.push_str(&format!("\n[{} in the catalog]({url})\n", v.title()));
    }
    out
}

/// The release body: the release notes (Markdown, as the catalog renders them), then the artifacts with their
/// digests and sizes, the manifest and image digests, the certified contracts, the signing key and the link
/// to the version in the catalog. Notes too long for GitHub are cut at a line, with a note saying so; the
/// table and the link are always whole.
pub fn release_body(v: &PublishedVersion, notes_markdown: &str, catalog_url: Option<&str>) -> String {
    let notes = notes_markdown.trim_end();
    let facts = facts(v, catalog_url);
    let whole = |notes: &str| if notes.is_empty() { facts.clone() } else { format!("{notes}\n\n{facts}") };
    let body = whole(notes);
    if body.chars().count() <= MAX_BODY_CHARS {
        return body;
    }
    let budget = MAX_BODY_CHARS.saturating_sub(facts.chars().count() + TRUNCATED_NOTE.chars().count() + 4);
    let mut kept = String::new();
    let mut used = 0;
    for line in notes.lines() {
        let n = line.chars().count() + 1;
        if used + n > budget {
            break;
        }
        kept.push_str(line);
        kept.push('\n');
        used += n;
    }
    format!("{kept}\n{TRUNCATED_NOTE}\n\n{facts}")
}

/// A commit status description: one line (runs of white space become one space) of at most
/// [`MAX_DESCRIPTION_CHARS`] characters, ending with `…` when it was cut.
pub fn status_description(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= MAX_DESCRIPTION_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(MAX_DESCRIPTION_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// The description of a version's successful publish.
pub fn published_description(v: &PublishedVersion) -> String {
    status_description(&format!("{} {} is published in the catalog", v.family, v.version))
}

/// The description of a failed pipeline stage: `STAGE failed: MESSAGE`.
pub fn failed_description(stage: &str, message: &str) -> String {
    status_description(&format!("{stage} failed: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> serde_json::Value {
        serde_json::json!({
            "family": "debian-base",
            "version": "1.2.0",
            "manifest_digest": "sha256:aaaa",
            "image_digest": "sha256:bbbb",
            "published_at": "2026-01-02T03:04:05Z",
            "published_by": "local:root",
            "signed_by": "SHA256:key",
            "claimed": ["base-os@^1"],
            "certified": ["base-os@1.0.0", "ssh-server@1.1.0"],
            "artifacts": [
                { "kind": "raw", "path": "disk.raw", "digest": "sha256:1111", "size": 2_147_483_648_u64 },
                { "kind": "oci", "path": "oci", "digest": "sha256:bbbb", "size": 1000 },
                { "kind": "sbom", "path": "odd|name`.json", "digest": "sha256:2222", "size": 65536 }
            ],
            "files": [],
            "policy": {},
            "lifecycle": { "supported": false }
        })
    }

    #[test]
    fn the_record_names_the_tag_title_and_context() {
        let v = PublishedVersion::from_json(&record()).unwrap();
        assert_eq!(v.tag(), "debian-base-1.2.0");
        assert_eq!(v.title(), "debian-base 1.2.0");
        assert_eq!(status_context(&v.family), "kiln/debian-base");
        assert_eq!(v.artifacts.len(), 3);
    }

    #[test]
    fn a_record_without_artifacts_is_refused() {
        let mut r = record();
        r.as_object_mut().unwrap().remove("artifacts");
        let e = PublishedVersion::from_json(&r).unwrap_err();
        assert!(e.to_string().contains("artifacts"), "{e}");
    }

    #[test]
    fn the_body_has_the_notes_then_every_artifact_with_digest_and_size_and_the_link() {
        let v = PublishedVersion::from_json(&record()).unwrap();
        let url = catalog_version_url("https://catalog.example.org/", "debian-base", "1.2.0");
        assert_eq!(url.as_deref(), Some("https://catalog.example.org/families/debian-base/1.2.0"));
        let body = release_body(&v, "# debian-base 1.2.0\n\n- First version of the family\n", url.as_deref());
        assert!(body.starts_with("# debian-base 1.2.0\n\n- First version of the family\n\n## Artifacts\n"));
        assert!(
            body.contains("| `disk.raw` | raw | 2.0 GiB (2147483648 bytes) | `sha256:1111` |\n"),
            "{body}"
        );
        assert!(body.contains("| `oci` | oci | 1000 bytes | `sha256:bbbb` |\n"), "{body}");
        // A `|` would end the cell, a backquote the code span.
        assert!(body.contains("| `` odd\\|name`.json `` | sbom | 64.0 KiB (65536 bytes) | `sha256:2222` |"));
        assert!(body.contains("- Signed manifest: `sha256:aaaa`\n- OCI image: `sha256:bbbb`\n"));
        assert!(
            body.contains("- Certified: `base-os@1.0.0`, `ssh-server@1.1.0`\n- Signed by: `SHA256:key`\n")
        );
        assert!(body.ends_with(
            "\n[debian-base 1.2.0 in the catalog](https://catalog.example.org/families/debian-base/1.2.0)\n"
        ));
    }

    #[test]
    fn a_catalog_folder_gets_no_link() {
        assert_eq!(catalog_version_url("/srv/catalog", "f", "1.0.0"), None);
        let v = PublishedVersion::from_json(&record()).unwrap();
        let body = release_body(&v, "", None);
        assert!(body.starts_with("## Artifacts\n"));
        assert!(!body.contains("in the catalog]"));
    }

    #[test]
    fn notes_too_long_for_github_are_cut_at_a_line_and_the_digests_stay() {
        let v = PublishedVersion::from_json(&record()).unwrap();
        let notes: String =
            (0..20_000).map(|i| format!("| pkg{i} | `1.{i}-1` | amd64 é |\n")).collect::<String>();
        assert!(notes.chars().count() > MAX_BODY_CHARS);
        let body = release_body(&v, &notes, Some("http://c/families/debian-base/1.2.0"));
        assert!(body.chars().count() <= MAX_BODY_CHARS, "{} characters", body.chars().count());
        assert!(body.starts_with("| pkg0 | `1.0-1` | amd64 é |\n"));
        let before_note = body.split(TRUNCATED_NOTE).next().unwrap();
        assert!(before_note.ends_with("|\n\n"), "cut at a line end");
        assert!(body.contains("`sha256:1111`") && body.contains("`sha256:2222`"));
        assert!(body.ends_with("(http://c/families/debian-base/1.2.0)\n"));
        // Short notes are never cut.
        assert!(!release_body(&v, "short", None).contains(TRUNCATED_NOTE));
    }

    #[test]
    fn descriptions_are_one_line_within_the_limit() {
        assert_eq!(
            failed_description("build", "cannot fetch\n  InRelease"),
            "build failed: cannot fetch InRelease"
        );
        let long = failed_description("publish", &"é".repeat(300));
        assert_eq!(long.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(long.starts_with("publish failed: éé") && long.ends_with('…'));
        let exact = "x".repeat(MAX_DESCRIPTION_CHARS);
        assert_eq!(status_description(&exact), exact);
        let v = PublishedVersion::from_json(&record()).unwrap();
        assert_eq!(published_description(&v), "debian-base 1.2.0 is published in the catalog");
    }
}
