//! Signing a build output folder (`kiln sign DIR --key K`):
//! 1. every artifact is checked against `manifest.json` (digest and size, every OCI blob, the image
//!    manifest listed in `index.json`): only an output that is as built and tested gets signed;
//! 2. each OCI image is signed in cosign's format inside its layout (see [`crate::cosign`]). That adds
//!    blobs and `index.json` entries, but the image manifest and its blobs do not change, and
//!    `manifest.json` records the OCI artifact by its image manifest digest: the digest the tests certified
//!    is the one signed, and `manifest.json` is not touched;
//! 3. each artifact gets `signatures/FILE.sig` (FILE as [`Artifact::digested_file`] names it: for an OCI
//!    layout its image manifest blob), and `manifest.json` gets `signatures/manifest.json.sig`, last (see
//!    [`crate::paths`]).
//!
//! [`sign_dir`] does it all; [`sign_images`] (1–2) and [`sign_files`] (1, 3) let a caller add artifacts
//! that name the signed image (a provenance attestation) in between.
//!
//! The signatures folder is written aside and swapped in, so an interrupted signing leaves the earlier
//! signatures or the new ones. Signing is deterministic (RFC 6979): the same output and key give the same
//! files.
//!
//! [`Artifact::digested_file`]: kiln_blueprint::manifest::Artifact::digested_file

use std::path::{Path, PathBuf};

use kiln_blueprint::manifest::{ArtifactKind, Manifest, ManifestError, MANIFEST_FILE};

use crate::{
    blob::encode_signature,
    cosign::{self, CosignError, SignedImage},
    keys::SigningKey,
    paths::{signature_file, SIGNATURES_DIR},
    verify::{check_artifacts, VerifyError},
};

/// Why an output could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("refusing to sign: the output is not what its manifest.json lists")]
    NotAsBuilt(#[source] VerifyError),
    #[error("signing the OCI image {artifact}")]
    Cosign {
        artifact: String,
        #[source]
        source: CosignError,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// How to sign.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// The `docker-reference` the OCI image's signature names (the repository it is published as);
    /// default: the image name from `manifest.json`.
    pub reference: Option<String>,
}

/// What [`sign_dir`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignReport {
    /// Fingerprint of the signing key's public key.
    pub key: String,
    /// Signature files written, relative to the output folder, `signatures/manifest.json.sig` last.
    pub signatures: Vec<String>,
    /// OCI images signed in their layouts.
    pub images: Vec<SignedImage>,
}

/// Sign the build output in `dir` with `key`: [`sign_images`], then [`sign_files`].
pub fn sign_dir(dir: &Path, key: &SigningKey, opts: &SignOptions) -> Result<SignReport, SignError> {
    let images = sign_images(dir, key, opts)?;
    // sign_images has just checked every artifact; signing the images changed none of them.
    let mut report = write_signatures(dir, key)?;
    report.images = images;
    Ok(report)
}

/// Steps 1–2: check the output and sign each OCI image inside its layout. `manifest.json` is left as it
/// is: it records each layout's image manifest, which signing does not change. A caller that adds
/// artifacts naming the signed images (an attestation) does so between this and [`sign_files`].
pub fn sign_images(dir: &Path, key: &SigningKey, opts: &SignOptions) -> Result<Vec<SignedImage>, SignError> {
    let manifest = Manifest::read(dir)?;
    check_artifacts(dir, &manifest).map_err(SignError::NotAsBuilt)?;
    let reference = opts.reference.clone().unwrap_or_else(|| manifest.name.clone());
    let mut images = Vec::new();
    for a in manifest.artifacts.iter().filter(|a| a.kind == ArtifactKind::Oci) {
        let signed = cosign::sign_layout(&dir.join(&a.path), &reference, key)
            .map_err(|source| SignError::Cosign { artifact: a.path.clone(), source })?;
        images.extend(signed);
    }
    Ok(images)
}

/// Step 3: check the output again, then write `signatures/FILE.sig` for every artifact file and
/// `signatures/manifest.json.sig` last. The report's `images` is empty (see [`sign_images`]).
pub fn sign_files(dir: &Path, key: &SigningKey) -> Result<SignReport, SignError> {
    check_artifacts(dir, &Manifest::read(dir)?).map_err(SignError::NotAsBuilt)?;
    write_signatures(dir, key)
}

/// The signature files of an output whose artifacts match its manifest.
fn write_signatures(dir: &Path, key: &SigningKey) -> Result<SignReport, SignError> {
    let manifest = Manifest::read(dir)?;
    // All signature files into a fresh folder beside the old one, then swapped in.
    let staging = dir.join(format!(".{SIGNATURES_DIR}.tmp-{}", std::process::id()));
    if staging.exists() {
        fs_err::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let mut signatures = Vec::new();
    let mut write = |file: &str, text: String| -> Result<(), SignError> {
        let rel = signature_file(file);
        let path = staging.join(rel.strip_prefix(&format!("{SIGNATURES_DIR}/")).unwrap_or(&rel));
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent).map_err(io(parent))?;
        }
        crate::keys::write_file_mode(&path, text.as_bytes(), 0o644).map_err(io(&path))?;
        signatures.push(rel);
        Ok(())
    };
    for a in &manifest.artifacts {
        // The digests were checked against the files: sign them rather than hash the files again.
        let mut digest = [0u8; 32];
        hex::decode_to_slice(a.sha256.trim_start_matches("sha256:"), &mut digest).map_err(|_| {
            SignError::NotAsBuilt(VerifyError::DigestMismatch {
                path: a.path.clone(),
                expected: a.sha256.clone(),
                found: "(not a sha256 digest)".into(),
            })
        })?;
        write(&a.digested_file(), encode_signature(&key.sign_digest(&digest)))?;
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest_bytes = std::fs::read(&manifest_path).map_err(io(&manifest_path))?;
    write(MANIFEST_FILE, encode_signature(&key.sign(&manifest_bytes)))?;

    let target = dir.join(SIGNATURES_DIR);
    let old = dir.join(format!(".{SIGNATURES_DIR}.old-{}", std::process::id()));
    if target.exists() {
        fs_err::rename(&target, &old).map_err(io(&target))?;
    }
    fs_err::rename(&staging, &target).map_err(io(&target))?;
    if old.exists() {
        fs_err::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(SignReport { key: key.public_key().fingerprint(), signatures, images: Vec::new() })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SignError + '_ {
    move |source| SignError::Io { path: path.to_owned(), source }
}
