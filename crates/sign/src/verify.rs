//! Verifying a signed build output: `manifest.json`'s signature first (it is the root of trust), then every
//! artifact against the digest and size the manifest lists (an OCI layout by its image manifest, which its
//! `index.json` must list, and down to each blob `index.json` reaches), every artifact's own signature, and
//! the OCI image's cosign signatures.
//!
//! Each way an output can be wrong has its own [`VerifyError`] naming the file: a changed byte, two
//! artifacts swapped, a missing artifact or signature, a signature by another key, a truncated or garbled
//! signature file, a manifest edited after it was signed. [`check_artifacts`] (digests only, no key) is
//! also what signing runs first, so only an output that is as built gets signed.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use kiln_blueprint::manifest::{ArtifactKind, Manifest, ManifestError, MANIFEST_FILE};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use sha2::Digest as _;

use crate::{
    blob::{parse_signature, sha256_file, sha256_string},
    cosign::{self, CosignError, SignedImage},
    keys::PublicKey,
    paths::{signature_file, SIGNATURES_DIR},
};

/// Why an output does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}: no manifest.json (not a kiln build output)")]
    NoManifest(PathBuf),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{file} is not signed: {signature} is missing")]
    SignatureMissing { file: String, signature: String },
    #[error("{signature} is not a valid signature of {file} (bad base64/DER: {reason})")]
    BadSignature { file: String, signature: String, reason: String },
    #[error("signature of {file} does not verify with key {key}")]
    WrongKey { file: String, key: String },
    #[error(
        "manifest.json was changed after it was signed: its signature does not verify with key {key}, \
         which did sign the artifacts"
    )]
    ManifestEdited { key: String },
    #[error("{path}: listed in manifest.json but missing")]
    ArtifactMissing { path: String },
    #[error("{path}: sha256 {found} does not match manifest.json ({expected})")]
    DigestMismatch { path: String, expected: String, found: String },
    #[error(
        "{path}: its content is {other}'s (sha256 {found}), not the {path} manifest.json lists ({expected}): \
         artifacts swapped"
    )]
    Swapped { path: String, other: String, expected: String, found: String },
    #[error("{path}: {found} bytes, manifest.json says {expected}")]
    SizeMismatch { path: String, expected: u64, found: u64 },
    #[error("{path}: listed in the OCI layout but missing")]
    OciBlobMissing { path: String },
    #[error("{path}: sha256 {found} does not match its OCI descriptor ({expected})")]
    OciBlobDigest { path: String, expected: String, found: String },
    #[error("{path}: {found} bytes, its OCI descriptor says {expected}")]
    OciBlobSize { path: String, expected: u64, found: u64 },
    #[error("{path}: not an OCI document: {reason}")]
    OciDocument { path: String, reason: String },
    #[error("{path}: OCI digest `{digest}` is not sha256")]
    OciDigestAlgorithm { path: String, digest: String },
    #[error(
        "{path} does not list the image manifest {digest} that manifest.json records for {layout} \
         (it lists: {listed})"
    )]
    OciImageNotListed { path: String, layout: String, digest: String, listed: String },
    #[error("{artifact}: {source}")]
    Cosign {
        artifact: String,
        #[source]
        source: CosignError,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// An artifact whose digest and size matched the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedArtifact {
    pub kind: ArtifactKind,
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// What [`verify_dir`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub name: String,
    pub version: String,
    /// Fingerprint of the key everything verified with.
    pub key: String,
    pub artifacts: Vec<VerifiedArtifact>,
    /// Signature files checked, relative to the output folder (`signatures/…`).
    pub signatures: Vec<String>,
    /// OCI images whose cosign signatures verified.
    pub images: Vec<SignedImage>,
}

/// Verify the signed output in `dir` with `key`. `reference`, when given, must be the `docker-reference`
/// the OCI image's signatures name.
pub fn verify_dir(dir: &Path, key: &PublicKey, reference: Option<&str>) -> Result<VerifyReport, VerifyError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.exists() {
        return Err(VerifyError::NoManifest(dir.to_owned()));
    }
    let bytes = read(&manifest_path)?;
    let sig = read_signature(dir, MANIFEST_FILE)?;
    if !key.verify(&bytes, &sig) {
        return Err(diagnose_manifest_signature(dir, &bytes, key));
    }
    let manifest = Manifest::from_json(&manifest_path.display().to_string(), &bytes)?;
    let artifacts = check_artifacts(dir, &manifest)?;

    let mut signatures = vec![signature_file(MANIFEST_FILE)];
    for a in &manifest.artifacts {
        let file = a.digested_file();
        let sig = read_signature(dir, &file)?;
        // check_artifacts found the file's digest to be the manifest's.
        if !key.verify_digest(&parse_digest(&a.sha256), &sig) {
            return Err(VerifyError::WrongKey { file, key: key.fingerprint() });
        }
        signatures.push(signature_file(&file));
    }

    let mut images = Vec::new();
    for a in manifest.artifacts.iter().filter(|a| a.kind == ArtifactKind::Oci) {
        let signed = cosign::verify_layout(&dir.join(&a.path), key, reference)
            .map_err(|source| VerifyError::Cosign { artifact: a.path.clone(), source })?;
        images.extend(signed);
    }
    Ok(VerifyReport {
        name: manifest.name,
        version: manifest.version,
        key: key.fingerprint(),
        artifacts,
        signatures,
        images,
    })
}

/// The manifest's signature did not verify: a wrong key, or a manifest changed after signing? When some
/// artifact's signature verifies with `key` against the digest the manifest lists, the key is the
/// signer's and the manifest is what changed.
fn diagnose_manifest_signature(dir: &Path, bytes: &[u8], key: &PublicKey) -> VerifyError {
    let edited = VerifyError::ManifestEdited { key: key.fingerprint() };
    let Ok(manifest) = Manifest::from_json(MANIFEST_FILE, bytes) else {
        // Not even a manifest any more; a signature that verifies elsewhere still tells the key.
        return if signed_anything(dir, key) { edited } else { wrong_manifest_key(key) };
    };
    let key_signed_an_artifact = manifest.artifacts.iter().any(|a| {
        let file = a.digested_file();
        let Ok(sig) = read_signature(dir, &file) else { return false };
        key.verify_digest(&parse_digest(&a.sha256), &sig)
    });
    if key_signed_an_artifact || signed_anything(dir, key) {
        edited
    } else {
        wrong_manifest_key(key)
    }
}

fn wrong_manifest_key(key: &PublicKey) -> VerifyError {
    VerifyError::WrongKey { file: MANIFEST_FILE.to_owned(), key: key.fingerprint() }
}

/// Whether any small signed file under `signatures/` (a report, an SBOM, an OCI image manifest) verifies with
/// `key`: evidence the key is the signer's even when the manifest lists other digests.
fn signed_anything(dir: &Path, key: &PublicKey) -> bool {
    const SMALL: u64 = 64 << 20;
    let root = dir.join(SIGNATURES_DIR);
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Some(rel) = p.strip_prefix(&root).ok().and_then(|r| r.to_str()) else { continue };
            let Some(file) = rel.strip_suffix(".sig") else { continue };
            if file == MANIFEST_FILE {
                continue;
            }
            let target = dir.join(file);
            if std::fs::metadata(&target).map_or(true, |m| m.len() > SMALL) {
                continue;
            }
            let (Ok(sig), Ok(digest)) = (read_signature(dir, file), sha256_file(&target)) else { continue };
            if key.verify_digest(&digest, &sig) {
                return true;
            }
        }
    }
    false
}

/// Check every artifact of `manifest` in `dir` against its digest and size (no signature involved): a
/// missing file, two artifacts swapped, changed content; for an OCI layout, its image manifest (the blob
/// [`Artifact::digested_file`] names), listed in its `index.json`, and every blob `index.json` reaches.
///
/// [`Artifact::digested_file`]: kiln_blueprint::manifest::Artifact::digested_file
pub fn check_artifacts(dir: &Path, manifest: &Manifest) -> Result<Vec<VerifiedArtifact>, VerifyError> {
    let mut found = Vec::new();
    for a in &manifest.artifacts {
        // A layout must list the image manifest.json records before that image is looked at.
        let index = match a.kind {
            ArtifactKind::Oci => Some(listing_index(dir, &a.path, &a.sha256)?),
            _ => None,
        };
        let file = a.digested_file();
        let path = dir.join(&file);
        if !path.exists() {
            return Err(match a.kind {
                ArtifactKind::Oci => VerifyError::OciBlobMissing { path: file },
                _ => VerifyError::ArtifactMissing { path: a.path.clone() },
            });
        }
        let digest = sha256_string(&sha256_file(&path).map_err(io(path.clone()))?);
        let size = std::fs::metadata(&path).map_err(io(path.clone()))?.len();
        found.push((a, digest, size, index));
    }
    let mut verified = Vec::new();
    for (a, digest, size, index) in &found {
        if *digest != a.sha256 {
            let other = found.iter().find(|(o, _, _, _)| o.path != a.path && o.sha256 == *digest);
            return Err(match other {
                Some((o, _, _, _)) => VerifyError::Swapped {
                    path: a.path.clone(),
                    other: o.path.clone(),
                    expected: a.sha256.clone(),
                    found: digest.clone(),
                },
                None => VerifyError::DigestMismatch {
                    path: a.path.clone(),
                    expected: a.sha256.clone(),
                    found: digest.clone(),
                },
            });
        }
        if *size != a.size {
            return Err(VerifyError::SizeMismatch { path: a.path.clone(), expected: a.size, found: *size });
        }
        if let Some(index) = index {
            check_layout(dir, &a.path, index)?;
        }
        verified.push(VerifiedArtifact {
            kind: a.kind,
            path: a.path.clone(),
            sha256: a.sha256.clone(),
            size: a.size,
        });
    }
    Ok(verified)
}

/// The `index.json` of the layout `DIR/rel`, which must list the image manifest `image` (`sha256:…`, as
/// manifest.json records it) as an image manifest entry (not inside a nested index).
fn listing_index(dir: &Path, rel: &str, image: &str) -> Result<ImageIndex, VerifyError> {
    if !dir.join(rel).exists() {
        return Err(VerifyError::ArtifactMissing { path: rel.to_owned() });
    }
    let index_path = format!("{rel}/index.json");
    let index = read(&dir.join(&index_path))?;
    let index = ImageIndex::from_reader(&index[..])
        .map_err(|e| VerifyError::OciDocument { path: index_path.clone(), reason: e.to_string() })?;
    let lists_image =
        |d: &Descriptor| *d.media_type() == MediaType::ImageManifest && d.digest().to_string() == image;
    if index.manifests().iter().any(lists_image) {
        return Ok(index);
    }
    let entries: Vec<String> =
        index.manifests().iter().map(|d| format!("{} {}", d.media_type(), d.digest())).collect();
    Err(VerifyError::OciImageNotListed {
        path: index_path,
        layout: rel.to_owned(),
        digest: image.to_owned(),
        listed: if entries.is_empty() { "nothing".to_owned() } else { entries.join(", ") },
    })
}

/// Every blob the layout `DIR/rel`'s `index` reaches (manifests, nested indexes, configs, layers), present
/// with its descriptor's size and digest.
fn check_layout(dir: &Path, rel: &str, index: &ImageIndex) -> Result<(), VerifyError> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<Descriptor> = index.manifests().clone();
    while let Some(d) = todo.pop() {
        if !seen.insert(d.digest().to_string()) {
            continue;
        }
        let blob_rel = blob_path(rel, &d)?;
        let bytes = check_blob(dir, &blob_rel, &d)?;
        let bad = |e: oci_spec::OciSpecError| VerifyError::OciDocument {
            path: blob_rel.clone(),
            reason: e.to_string(),
        };
        match d.media_type() {
            MediaType::ImageManifest => {
                let m = ImageManifest::from_reader(&bytes.unwrap_or_default()[..]).map_err(bad)?;
                todo.push(m.config().clone());
                todo.extend(m.layers().iter().cloned());
            }
            MediaType::ImageIndex => {
                let i = ImageIndex::from_reader(&bytes.unwrap_or_default()[..]).map_err(bad)?;
                todo.extend(i.manifests().iter().cloned());
            }
            _ => {}
        }
    }
    Ok(())
}

fn blob_path(rel: &str, d: &Descriptor) -> Result<String, VerifyError> {
    let digest = d.digest();
    let hex = digest.digest();
    if digest.algorithm().as_ref() != "sha256"
        || hex.len() != 64
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(VerifyError::OciDigestAlgorithm {
            path: format!("{rel}/index.json"),
            digest: digest.to_string(),
        });
    }
    Ok(format!("{rel}/blobs/sha256/{hex}"))
}

/// Check one blob; returns its bytes when it is a document to descend into.
fn check_blob(dir: &Path, rel: &str, d: &Descriptor) -> Result<Option<Vec<u8>>, VerifyError> {
    let path = dir.join(rel);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VerifyError::OciBlobMissing { path: rel.to_owned() })
        }
        Err(e) => return Err(VerifyError::Io { path, source: e }),
    };
    let is_document = matches!(d.media_type(), MediaType::ImageManifest | MediaType::ImageIndex);
    let (digest, bytes) = if is_document {
        let bytes = read(&path)?;
        (sha256_string(&sha2::Sha256::digest(&bytes).into()), Some(bytes))
    } else {
        (sha256_string(&sha256_file(&path).map_err(io(path.clone()))?), None)
    };
    if digest != d.digest().to_string() {
        return Err(VerifyError::OciBlobDigest {
            path: rel.to_owned(),
            expected: d.digest().to_string(),
            found: digest,
        });
    }
    if meta.len() != d.size() {
        return Err(VerifyError::OciBlobSize { path: rel.to_owned(), expected: d.size(), found: meta.len() });
    }
    Ok(bytes)
}

/// Read and parse `signatures/FILE.sig`.
fn read_signature(dir: &Path, file: &str) -> Result<p256::ecdsa::Signature, VerifyError> {
    let signature = signature_file(file);
    let text = match std::fs::read(dir.join(&signature)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VerifyError::SignatureMissing { file: file.to_owned(), signature })
        }
        Err(e) => return Err(VerifyError::Io { path: dir.join(&signature), source: e }),
    };
    parse_signature(&text).map_err(|e| VerifyError::BadSignature {
        file: file.to_owned(),
        signature,
        reason: e.to_string(),
    })
}

/// The bytes of a manifest digest (`sha256:HEX`); an unparsable one gives zeros (which nothing signed).
fn parse_digest(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(h) = s.strip_prefix("sha256:") {
        let _ = hex::decode_to_slice(h, &mut out);
    }
    out
}

fn read(path: &Path) -> Result<Vec<u8>, VerifyError> {
    std::fs::read(path).map_err(io(path.to_owned()))
}

fn io(path: PathBuf) -> impl FnOnce(std::io::Error) -> VerifyError {
    move |source| VerifyError::Io { path, source }
}
