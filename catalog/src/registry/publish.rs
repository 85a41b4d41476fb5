//! A published kiln version as registry content: its bundle's OCI layout (`oci/`) becomes pullable from
//! the repository named like the family. Its files are already content-addressed blobs of the catalog,
//! so nothing is copied: the manifests the layout's `index.json` lists (the image, cosign's signature
//! manifest, the OCI 1.1 referrer with its `subject`, and the manifests of any index among them), the
//! tags (the version's tag on the image, `sha256-HEX.sig` on the signature manifest) and the layout's
//! blobs as members of the repository are recorded in the publish's own transaction
//! ([`Published::write`]). The family's channels are tags too, resolved when pulled (see
//! `registry::handlers`), so a promotion needs no registry write.

use serde_json::Value;

use super::{action::version_tag, manifest::inspect};
use crate::{
    model::{ArtifactKind, VersionRecord},
    store::{RegistryManifest, StoreError, Tx},
    CatalogError,
};

/// The annotation naming a tag in an OCI layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What a publish adds to the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The repository: the family's name.
    pub repo: String,
    pub manifests: Vec<RegistryManifest>,
    /// (tag, digest).
    pub tags: Vec<(String, String)>,
    pub blobs: Vec<String>,
}

impl Published {
    /// Record it (inside the publish's transaction).
    pub fn write(&self, tx: &mut dyn Tx) -> Result<(), StoreError> {
        for m in &self.manifests {
            tx.registry_put_manifest(m)?;
            tx.registry_add_blob(&m.repo, &m.digest)?;
        }
        for b in &self.blobs {
            tx.registry_add_blob(&self.repo, b)?;
        }
        for (tag, digest) in &self.tags {
            tx.registry_set_tag(&self.repo, tag, digest)?;
        }
        Ok(())
    }
}

fn rejected(path: &str, why: impl std::fmt::Display) -> CatalogError {
    CatalogError::rejected(format!("{path}: {why}"))
}

/// The registry content of `record`'s OCI layouts; `read` reads a file of the bundle by its path.
pub fn published(
    record: &VersionRecord,
    read: &dyn Fn(&str) -> std::io::Result<Vec<u8>>,
) -> Result<Published, CatalogError> {
    let repo = &record.family;
    let mut out = Published { repo: repo.clone(), ..Published::default() };
    for artifact in record.artifacts.iter().filter(|a| a.kind == ArtifactKind::Oci) {
        let root = artifact.path.trim_end_matches('/');
        let prefix = format!("{root}/blobs/sha256/");
        // The layout's blobs, as the bundle's files are already stored (by their sha256).
        for f in &record.files {
            if let Some(hex) = f.path.strip_prefix(&prefix) {
                if f.digest.strip_prefix("sha256:") == Some(hex) {
                    out.blobs.push(f.digest.clone());
                }
            }
        }
        let index_path = format!("{root}/index.json");
        let index: Value = serde_json::from_slice(&read(&index_path).map_err(|e| rejected(&index_path, e))?)
            .map_err(|e| rejected(&index_path, e))?;
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        let mut queue: Vec<(String, String)> = Vec::new();
        for e in &entries {
            let (Some(digest), Some(media_type)) = (e["digest"].as_str(), e["mediaType"].as_str()) else {
                return Err(rejected(&index_path, "a manifest entry without digest or mediaType"));
            };
            queue.push((digest.to_owned(), media_type.to_owned()));
            if let Some(tag) = e["annotations"][REF_NAME].as_str() {
                if tag.starts_with("sha256-") && tag.ends_with(".sig") && super::action::is_tag(tag) {
                    out.tags.push((tag.to_owned(), digest.to_owned()));
                }
            }
        }
        while let Some((digest, media_type)) = queue.pop() {
            if out.manifests.iter().any(|m| m.digest == digest) {
                continue;
            }
            let Some(hex) = digest.strip_prefix("sha256:") else {
                return Err(rejected(&index_path, format!("{digest}: kiln layouts name blobs by sha256")));
            };
            let path = format!("{prefix}{hex}");
            let bytes = read(&path).map_err(|e| rejected(&path, e))?;
            let i = inspect(&bytes, Some(&media_type)).map_err(|e| rejected(&path, e.message))?;
            for child in &i.manifests {
                queue.push((child.digest.clone(), child.media_type.clone()));
            }
            out.manifests.push(RegistryManifest {
                repo: repo.clone(),
                refs: i.refs(),
                digest,
                media_type: i.media_type,
                artifact_type: i.artifact_type,
                subject: i.subject.map(|s| s.digest),
                size: bytes.len() as u64,
                annotations: i.annotations,
            });
        }
    }
    if let Some(image) = &record.image_digest {
        if out.manifests.iter().any(|m| &m.digest == image) {
            out.tags.push((version_tag(&record.version), image.clone()));
        }
    }
    out.manifests.sort_by(|a, b| a.digest.cmp(&b.digest));
    out.blobs.sort();
    out.blobs.dedup();
    out.tags.sort();
    Ok(out)
}
