//! The OCI image's signature in cosign's format, stored in the image's OCI layout so registry tooling
//! (`cosign verify --key`, `oras discover`, …) finds it once the layout is pushed.
//!
//! For each image manifest the layout's `index.json` lists, signing adds:
//! * the simple-signing payload blob
//!   `{"critical":{"identity":{"docker-reference":REF},"image":{"docker-manifest-digest":DIGEST},
//!   "type":"cosign container image signature"},"optional":null}`, whose ECDSA P-256 signature (base64 DER,
//!   as [`crate::blob`]) is the annotation `dev.cosignproject.cosign/signature` of the layer describing it;
//! * cosign's signature manifest (an OCI image manifest, config as cosign writes it, that one layer of type
//!   `application/vnd.dev.cosign.simplesigning.v1+json`), tagged `sha256-HEX.sig` in `index.json`;
//! * the same signature as an OCI 1.1 referrer: a manifest with `artifactType`
//!   `application/vnd.dev.cosign.artifact.sig.v1+json`, the empty config, the same layer, and `subject` = the
//!   image manifest's descriptor, listed in `index.json` (no tag; found through its subject).
//!
//! The image manifest itself and its blobs do not change, so the image's digest stays what was built and
//! tested; `index.json` does change (which is why `manifest.json` records an OCI layout by its image
//! manifest, not by `index.json`). Signing again replaces kiln's earlier signature of the same image.
//! Documents are built purely ([`signature_documents`], [`add_to_index`]); [`sign_layout`] and
//! [`verify_layout`] do the layout I/O (blobs written content-addressed, `index.json` replaced atomically).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use kiln_oci::{image::canonical_json, Layout};
use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType,
    ANNOTATION_REF_NAME,
};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::{
    blob::{encode_signature, parse_signature},
    keys::{PublicKey, SigningKey},
};

/// Media type of the simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `artifactType` of a cosign signature stored as an OCI 1.1 referrer.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The `critical.type` of a simple-signing payload.
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";
/// The OCI 1.1 empty descriptor's content.
const EMPTY_JSON: &[u8] = b"{}";

/// Why an image's signature could not be written or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum CosignError {
    #[error("reading the OCI layout")]
    Layout(#[from] kiln_oci::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("OCI document: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("the OCI layout lists no image to sign")]
    NoImage,
    #[error("OCI image {image} has no cosign signature ({what} missing)")]
    Unsigned { image: String, what: &'static str },
    #[error("the cosign signature of OCI image {image} ({what}) is not a valid signature (bad base64/DER): {reason}")]
    BadSignature { image: String, what: &'static str, reason: String },
    #[error("the cosign signature of OCI image {image} ({what}) does not verify with key {key}")]
    WrongKey { image: String, what: &'static str, key: String },
    #[error("the signed payload of OCI image {image} ({what}) is not for it: {reason}")]
    Payload { image: String, what: &'static str, reason: String },
}

/// The simple-signing payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimpleSigning {
    pub critical: Critical,
    /// Free-form claims; kiln writes `null`.
    pub optional: Option<serde_json::Value>,
}

/// What a simple-signing payload vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: ImageId,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageId {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// The payload cosign signs for image `manifest_digest` (`sha256:…`) known as `reference`, byte for byte
/// as cosign writes it (compact, in this key order).
pub fn simple_signing_payload(reference: &str, manifest_digest: &str) -> Vec<u8> {
    let doc = SimpleSigning {
        critical: Critical {
            identity: Identity { docker_reference: reference.to_owned() },
            image: ImageId { docker_manifest_digest: manifest_digest.to_owned() },
            kind: SIMPLE_SIGNING_TYPE.to_owned(),
        },
        optional: None,
    };
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// cosign's tag for the signature of image `manifest_digest`: `sha256:ab…` → `sha256-ab….sig`.
pub fn signature_tag(manifest_digest: &str) -> String {
    format!("{}.sig", manifest_digest.replacen(':', "-", 1))
}

/// A document to store as a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub bytes: Vec<u8>,
    pub descriptor: Descriptor,
}

impl Blob {
    fn new(media_type: MediaType, bytes: Vec<u8>) -> Self {
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
        let descriptor = Descriptor::new(media_type, bytes.len() as u64, digest_of(&digest));
        Self { bytes, descriptor }
    }

    fn json<T: Serialize>(media_type: MediaType, doc: &T) -> Result<Self, CosignError> {
        let bytes = canonical_json(doc)?;
        Ok(Self::new(media_type, bytes))
    }
}

fn digest_of(s: &str) -> oci_spec::image::Digest {
    // Only called with `sha256:` + 64 hex digits, which always parses.
    s.parse().unwrap_or_else(|_| unreachable!("well-formed sha256 digest"))
}

/// Everything signing one image adds to its layout.
#[derive(Debug, Clone)]
pub struct SignatureDocuments {
    /// The signed image manifest's descriptor (the `subject`).
    pub subject: Descriptor,
    pub payload: Blob,
    /// The base64 signature of the payload.
    pub signature: String,
    /// cosign's config of the tagged signature manifest.
    pub config: Blob,
    /// `{}`, the referrer's config.
    pub empty: Blob,
    /// The signature manifest tagged `sha256-HEX.sig`.
    pub tagged: Blob,
    /// The OCI 1.1 referrer manifest.
    pub referrer: Blob,
}

/// Build the signature documents of the image `subject` (its manifest descriptor) as `reference`.
pub fn signature_documents(
    subject: &Descriptor,
    reference: &str,
    key: &SigningKey,
) -> Result<SignatureDocuments, CosignError> {
    let subject = Descriptor::new(subject.media_type().clone(), subject.size(), subject.digest().clone());
    let payload = Blob::new(
        MediaType::Other(SIMPLE_SIGNING_MEDIA_TYPE.into()),
        simple_signing_payload(reference, subject.digest().as_ref()),
    );
    let signature = encode_signature(&key.sign(&payload.bytes));
    let mut layer = payload.descriptor.clone();
    layer.set_annotations(Some(HashMap::from([(SIGNATURE_ANNOTATION.to_owned(), signature.clone())])));

    // cosign's signature image config: no platform, the payload as its one "layer", the zero time.
    let config = Blob::json(
        MediaType::ImageConfig,
        &serde_json::json!({
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [payload.descriptor.digest().to_string()]},
            "config": {}
        }),
    )?;
    let tagged = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor.clone())
        .layers(vec![layer.clone()])
        .build()?;
    let tagged = Blob::json(MediaType::ImageManifest, &tagged)?;

    let empty = Blob::new(MediaType::EmptyJSON, EMPTY_JSON.to_vec());
    let referrer = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(SIGNATURE_ARTIFACT_TYPE.into()))
        .config(empty.descriptor.clone())
        .layers(vec![layer])
        .subject(subject.clone())
        .build()?;
    let referrer = Blob::json(MediaType::ImageManifest, &referrer)?;
    Ok(SignatureDocuments { subject, payload, signature, config, empty, tagged, referrer })
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(ANNOTATION_REF_NAME).map(String::as_str)
}

fn is_signature_entry(d: &Descriptor) -> bool {
    ref_name(d).is_some_and(|t| t.starts_with("sha256-") && t.ends_with(".sig"))
        || d.artifact_type().as_ref().is_some_and(|t| t.to_string() == SIGNATURE_ARTIFACT_TYPE)
}

/// The entries of `index` that are images (not signatures): what [`sign_layout`] signs.
pub fn images(index: &ImageIndex) -> Vec<Descriptor> {
    index
        .manifests()
        .iter()
        .filter(|d| matches!(d.media_type(), MediaType::ImageManifest | MediaType::ImageIndex))
        .filter(|d| !is_signature_entry(d))
        .cloned()
        .collect()
}

/// `index` with `docs` added: the tag `sha256-HEX.sig` now names `docs.tagged`, and `docs.referrer` is
/// listed; an earlier signature of the same image (same tag, or a referrer `stale_referrers` names) is
/// dropped. Entries keep their order; the new ones go last.
pub fn add_to_index(
    index: &ImageIndex,
    docs: &SignatureDocuments,
    stale_referrers: &[String],
) -> Result<ImageIndex, CosignError> {
    let tag = signature_tag(docs.subject.digest().as_ref());
    let mut manifests: Vec<Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| ref_name(d) != Some(tag.as_str()))
        .filter(|d| !stale_referrers.iter().any(|s| s == d.digest().as_ref()))
        .cloned()
        .collect();
    manifests.push(
        DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(docs.tagged.descriptor.digest().clone())
            .size(docs.tagged.descriptor.size())
            .annotations(HashMap::from([(ANNOTATION_REF_NAME.to_owned(), tag)]))
            .build()?,
    );
    manifests.push(
        DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(docs.referrer.descriptor.digest().clone())
            .size(docs.referrer.descriptor.size())
            .artifact_type(MediaType::Other(SIGNATURE_ARTIFACT_TYPE.into()))
            .build()?,
    );
    let mut out = index.clone();
    out.set_manifests(manifests);
    Ok(out)
}

/// One image signed by [`sign_layout`] or verified by [`verify_layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedImage {
    /// `sha256:…` of the image manifest (or index).
    pub digest: String,
    /// The payload's `docker-reference`.
    pub reference: String,
    /// `sha256:…` of the tagged signature manifest.
    pub signature_manifest: String,
    /// `sha256:…` of the OCI 1.1 referrer.
    pub referrer: String,
}

/// Sign every image of the layout at `root` (as `reference`) and record the signatures in it.
pub fn sign_layout(root: &Path, reference: &str, key: &SigningKey) -> Result<Vec<SignedImage>, CosignError> {
    let layout = Layout::open(root)?;
    let mut index = layout.index().clone();
    let targets = images(&index);
    if targets.is_empty() {
        return Err(CosignError::NoImage);
    }
    let mut signed = Vec::new();
    for subject in targets {
        // The image must be intact before it is vouched for.
        layout.read_blob(&subject)?;
        let docs = signature_documents(&subject, reference, key)?;
        for blob in [&docs.payload, &docs.config, &docs.empty, &docs.tagged, &docs.referrer] {
            write_blob(root, blob)?;
        }
        let stale: Vec<String> = referrers(&layout, &index, subject.digest().as_ref())?
            .into_iter()
            .map(|(d, _)| d.digest().to_string())
            .collect();
        index = add_to_index(&index, &docs, &stale)?;
        signed.push(SignedImage {
            digest: subject.digest().to_string(),
            reference: reference.to_owned(),
            signature_manifest: docs.tagged.descriptor.digest().to_string(),
            referrer: docs.referrer.descriptor.digest().to_string(),
        });
    }
    let json = canonical_json(&index)?;
    crate::keys::write_file_mode(&root.join("index.json"), &json, 0o644)
        .map_err(|source| CosignError::Io { path: root.join("index.json"), source })?;
    Ok(signed)
}

/// Write a blob under its digest (a temporary name, then renamed; kept if already there).
fn write_blob(root: &Path, blob: &Blob) -> Result<(), CosignError> {
    let d = blob.descriptor.digest();
    let dir = root.join("blobs").join(d.algorithm().as_ref());
    let path = dir.join(d.digest());
    let io = |source| CosignError::Io { path: path.clone(), source };
    if fs_err::metadata(&path).is_ok_and(|m| m.len() == blob.bytes.len() as u64) {
        return Ok(());
    }
    fs_err::create_dir_all(&dir).map_err(io)?;
    crate::keys::write_file_mode(&path, &blob.bytes, 0o644).map_err(io)
}

/// The referrers of `subject` in the layout that are cosign signatures, with their manifests.
fn referrers(
    layout: &Layout,
    index: &ImageIndex,
    subject: &str,
) -> Result<Vec<(Descriptor, ImageManifest)>, CosignError> {
    let mut out = Vec::new();
    for d in index.manifests() {
        if *d.media_type() != MediaType::ImageManifest || ref_name(d).is_some() {
            continue;
        }
        let m = ImageManifest::from_reader(&layout.read_blob(d)?[..])?;
        let is_sig = m.artifact_type().as_ref().is_some_and(|t| t.to_string() == SIGNATURE_ARTIFACT_TYPE);
        if is_sig && m.subject().as_ref().is_some_and(|s| s.digest().as_ref() == subject) {
            out.push((d.clone(), m));
        }
    }
    Ok(out)
}

/// Check every image of the layout at `root`: its tagged cosign signature and its OCI 1.1 referrer
/// both carry a signature by `key` of a simple-signing payload naming the image's digest. When
/// `reference` is given, the payload's `docker-reference` must be it.
pub fn verify_layout(
    root: &Path,
    key: &PublicKey,
    reference: Option<&str>,
) -> Result<Vec<SignedImage>, CosignError> {
    let layout = Layout::open(root)?;
    let index = layout.index();
    let targets = images(index);
    if targets.is_empty() {
        return Err(CosignError::NoImage);
    }
    let mut out = Vec::new();
    for subject in targets {
        let image = subject.digest().to_string();
        let tag = signature_tag(&image);
        let tagged = index
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(tag.as_str()))
            .ok_or_else(|| CosignError::Unsigned { image: image.clone(), what: "tag sha256-….sig" })?;
        let tagged_manifest = ImageManifest::from_reader(&layout.read_blob(tagged)?[..])?;
        let payload =
            verify_signature_manifest(&layout, &tagged_manifest, &image, key, reference, "tagged signature")?;
        let referrer = referrers(&layout, index, &image)?
            .into_iter()
            .find(|(_, m)| verify_signature_manifest(&layout, m, &image, key, reference, "referrer").is_ok());
        let Some((referrer, manifest)) = referrer else {
            // Say why the referrers failed, or that there is none.
            for (_, m) in referrers(&layout, index, &image)? {
                verify_signature_manifest(&layout, &m, &image, key, reference, "referrer")?;
            }
            return Err(CosignError::Unsigned { image, what: "OCI 1.1 referrer" });
        };
        debug_assert!(manifest.subject().is_some());
        out.push(SignedImage {
            digest: image,
            reference: payload.critical.identity.docker_reference,
            signature_manifest: tagged.digest().to_string(),
            referrer: referrer.digest().to_string(),
        });
    }
    Ok(out)
}

/// Find a simple-signing layer of `manifest` whose signature verifies with `key` and whose payload
/// names `image`.
fn verify_signature_manifest(
    layout: &Layout,
    manifest: &ImageManifest,
    image: &str,
    key: &PublicKey,
    reference: Option<&str>,
    what: &'static str,
) -> Result<SimpleSigning, CosignError> {
    let mut first_error = None;
    for layer in manifest.layers() {
        if layer.media_type().to_string() != SIMPLE_SIGNING_MEDIA_TYPE {
            continue;
        }
        let Some(sig) = layer.annotations().as_ref().and_then(|a| a.get(SIGNATURE_ANNOTATION)) else {
            continue;
        };
        let result = (|| {
            let sig = parse_signature(sig.as_bytes()).map_err(|e| CosignError::BadSignature {
                image: image.to_owned(),
                what,
                reason: e.to_string(),
            })?;
            let payload = layout.read_blob(layer)?;
            if !key.verify(&payload, &sig) {
                return Err(CosignError::WrongKey { image: image.to_owned(), what, key: key.fingerprint() });
            }
            let bad = |reason: String| CosignError::Payload { image: image.to_owned(), what, reason };
            let doc: SimpleSigning = serde_json::from_slice(&payload)
                .map_err(|e| bad(format!("not a simple-signing payload: {e}")))?;
            if doc.critical.kind != SIMPLE_SIGNING_TYPE {
                return Err(bad(format!("type `{}`", doc.critical.kind)));
            }
            if doc.critical.image.docker_manifest_digest != image {
                return Err(bad(format!("it names image {}", doc.critical.image.docker_manifest_digest)));
            }
            if let Some(r) = reference {
                if doc.critical.identity.docker_reference != r {
                    return Err(bad(format!("it names {}, not {r}", doc.critical.identity.docker_reference)));
                }
            }
            Ok(doc)
        })();
        match result {
            Ok(doc) => return Ok(doc),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(CosignError::Unsigned { image: image.to_owned(), what }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn payload_is_cosigns_simple_signing_document_byte_for_byte() {
        assert_eq!(
            String::from_utf8(simple_signing_payload("registry.example/debian-minimal", DIGEST)).unwrap(),
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"registry.example/debian-minimal\"}},\
                 \"image\":{{\"docker-manifest-digest\":\"{DIGEST}\"}},\
                 \"type\":\"cosign container image signature\"}},\"optional\":null}}"
            )
        );
        assert_eq!(signature_tag(DIGEST), format!("sha256-{}.sig", &DIGEST[7..]));
    }

    #[test]
    fn documents_link_payload_signature_and_subject() {
        let key = SigningKey::generate();
        let subject = Descriptor::new(MediaType::ImageManifest, 1234, digest_of(DIGEST));
        let docs = signature_documents(&subject, "img", &key).unwrap();
        let sig = parse_signature(docs.signature.as_bytes()).unwrap();
        assert!(key.public_key().verify(&docs.payload.bytes, &sig));

        let tagged: serde_json::Value = serde_json::from_slice(&docs.tagged.bytes).unwrap();
        assert_eq!(tagged["layers"][0]["mediaType"], SIMPLE_SIGNING_MEDIA_TYPE);
        assert_eq!(tagged["layers"][0]["digest"], docs.payload.descriptor.digest().to_string());
        assert_eq!(tagged["layers"][0]["annotations"][SIGNATURE_ANNOTATION], docs.signature);
        assert!(tagged.get("subject").is_none());

        let referrer: serde_json::Value = serde_json::from_slice(&docs.referrer.bytes).unwrap();
        assert_eq!(referrer["artifactType"], SIGNATURE_ARTIFACT_TYPE);
        assert_eq!(referrer["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
        assert_eq!(
            referrer["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(
            referrer["subject"],
            serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST, "size": 1234})
        );
        assert_eq!(referrer["layers"], tagged["layers"]);
    }

    #[test]
    fn signing_again_replaces_the_tag_and_the_stale_referrer() {
        let key = SigningKey::generate();
        let mut image = Descriptor::new(MediaType::ImageManifest, 10, digest_of(DIGEST));
        image.set_annotations(Some(HashMap::from([(ANNOTATION_REF_NAME.to_owned(), "1.0.0".to_owned())])));
        let index: ImageIndex = oci_spec::image::ImageIndexBuilder::default()
            .schema_version(2u32)
            .manifests(vec![image.clone()])
            .build()
            .unwrap();
        let first = signature_documents(&image, "a", &key).unwrap();
        let once = add_to_index(&index, &first, &[]).unwrap();
        assert_eq!(once.manifests().len(), 3);
        assert_eq!(images(&once), vec![image.clone()]);
        let second = signature_documents(&image, "b", &key).unwrap();
        let twice = add_to_index(&once, &second, &[first.referrer.descriptor.digest().to_string()]).unwrap();
        let digests: Vec<String> = twice.manifests().iter().map(|d| d.digest().to_string()).collect();
        assert_eq!(
            digests,
            [
                DIGEST.to_owned(),
                second.tagged.descriptor.digest().to_string(),
                second.referrer.descriptor.digest().to_string()
            ]
        );
    }
}
