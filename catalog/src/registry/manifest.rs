//! What the registry reads from a manifest it is given (pushed, or in a published bundle's OCI layout):
//! its kind and media type, what it refers to (config and layers, or an index's manifests), its
//! `subject`, the artifact type the referrers API lists it as, and its annotations. Pure: bytes in.

use serde_json::Value;

use super::error::{Code, RegistryError};
use crate::store::parse_digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest taken (the spec's suggested limit).
pub const MAX_MANIFEST: usize = 4 << 20;

/// A descriptor a manifest holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// Layers that are not to be pushed (non-distributable, or with `urls`): not required to be present.
    pub foreign: bool,
}

/// A manifest, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub media_type: String,
    /// An index (its `manifests` are manifests) rather than an image manifest.
    pub is_index: bool,
    /// Config and layers (image manifest).
    pub blobs: Vec<Descriptor>,
    /// The manifests of an index.
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    /// The `annotations` object, as compact JSON.
    pub annotations: Option<String>,
}

impl Inspected {
    /// Every digest it refers to (what garbage collection keeps while it exists), sorted, once each.
    pub fn refs(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.blobs.iter().chain(&self.manifests).map(|d| d.digest.clone()).collect();
        out.sort();
        out.dedup();
        out
    }
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::new(Code::ManifestInvalid, message)
}

fn descriptor(v: &Value, at: &str) -> Result<Descriptor, RegistryError> {
    let o = v.as_object().ok_or_else(|| invalid(format!("{at}: not a descriptor")))?;
    let media_type = o
        .get("mediaType")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at}.mediaType: missing")))?
        .to_owned();
    let digest =
        o.get("digest").and_then(Value::as_str).ok_or_else(|| invalid(format!("{at}.digest: missing")))?;
    if parse_digest(digest).is_err() {
        return Err(RegistryError::new(
            Code::DigestInvalid,
            format!("{at}.digest: `{digest}` is not sha256:<64 hex> or sha512:<128 hex>"),
        ));
    }
    let size = o.get("size").and_then(Value::as_u64).ok_or_else(|| invalid(format!("{at}.size: missing")))?;
    let has_urls = o.get("urls").and_then(Value::as_array).is_some_and(|u| !u.is_empty());
    let foreign = has_urls || media_type.contains("nondistributable") || media_type.contains(".foreign.");
    Ok(Descriptor { media_type, digest: digest.to_owned(), size, foreign })
}

fn descriptors(v: Option<&Value>, at: &str) -> Result<Vec<Descriptor>, RegistryError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => {
            list.iter().enumerate().map(|(i, d)| descriptor(d, &format!("{at}[{i}]"))).collect()
        }
        Some(_) => Err(invalid(format!("{at}: not a list"))),
    }
}

/// Read a manifest. `declared` is the media type it is pushed as (`Content-Type`) or listed as; it must
/// agree with the document's own `mediaType` when both are there.
pub fn inspect(bytes: &[u8], declared: Option<&str>) -> Result<Inspected, RegistryError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let o = doc.as_object().ok_or_else(|| invalid("not a JSON object"))?;
    let own = o.get("mediaType").and_then(Value::as_str);
    let media_type = match (own, declared) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(format!("the manifest's mediaType is {a}, but it was sent as {b}")))
        }
        (Some(t), _) | (None, Some(t)) => t.to_owned(),
        (None, None) if o.contains_key("manifests") => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    if o.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let is_index = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        other => return Err(invalid(format!("media type {other} is not a manifest this registry takes"))),
    };
    let (blobs, manifests) = if is_index {
        let m = descriptors(o.get("manifests"), "manifests")?;
        if !o.contains_key("manifests") {
            return Err(invalid("manifests: missing"));
        }
        (Vec::new(), m)
    } else {
        let config = descriptor(o.get("config").ok_or_else(|| invalid("config: missing"))?, "config")?;
        let mut blobs = vec![config];
        blobs.extend(descriptors(o.get("layers"), "layers")?);
        (blobs, Vec::new())
    };
    let subject = o.get("subject").map(|s| descriptor(s, "subject")).transpose()?;
    let artifact_type = o
        .get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| (!is_index).then(|| blobs[0].media_type.clone()));
    let annotations = match o.get("annotations") {
        Some(a @ Value::Object(m)) if !m.is_empty() => Some(a.to_string()),
        _ => None,
    };
    Ok(Inspected { media_type, is_index, blobs, manifests, subject, artifact_type, annotations })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn an_image_manifest_names_its_blobs_subject_and_artifact_type() {
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": d('a'), "size": 2},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d('b'), "size": 9},
                {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar", "digest": d('c'), "size": 1, "urls": ["https://x.invalid/c"]}
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": d('e'), "size": 100},
            "artifactType": "application/vnd.example.sbom",
            "annotations": {"org.example": "1"}
        });
        let i = inspect(m.to_string().as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert!(!i.is_index);
        assert_eq!(i.refs(), vec![d('a'), d('b'), d('c')]);
        assert!(i.blobs[2].foreign && !i.blobs[1].foreign);
        assert_eq!(i.subject.as_ref().map(|s| s.digest.clone()), Some(d('e')));
        assert_eq!(i.artifact_type.as_deref(), Some("application/vnd.example.sbom"));
        assert_eq!(i.annotations.as_deref(), Some(r#"{"org.example":"1"}"#));
        // Without artifactType, the config's media type.
        let mut plain = m.clone();
        plain.as_object_mut().unwrap().remove("artifactType");
        let i = inspect(plain.to_string().as_bytes(), None).unwrap();
        assert_eq!(i.artifact_type.as_deref(), Some("application/vnd.oci.empty.v1+json"));
    }

    #[test]
    fn an_index_names_its_manifests() {
        let m = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": d('f'), "size": 3}]});
        let i = inspect(m.to_string().as_bytes(), Some(OCI_INDEX)).unwrap();
        assert!(i.is_index);
        assert_eq!(i.refs(), vec![d('f')]);
        assert_eq!(i.artifact_type, None);
    }

    #[test]
    fn bad_manifests_are_refused() {
        let e = inspect(b"{", None).unwrap_err();
        assert_eq!(e.code, Code::ManifestInvalid);
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
        let e = inspect(m.to_string().as_bytes(), Some(OCI_MANIFEST)).unwrap_err();
        assert!(e.message.contains("sent as"), "{}", e.message);
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": "x", "digest": "sha256:1", "size": 1}});
        assert_eq!(inspect(m.to_string().as_bytes(), None).unwrap_err().code, Code::DigestInvalid);
        let m = serde_json::json!({"schemaVersion": 1, "mediaType": OCI_MANIFEST});
        assert_eq!(inspect(m.to_string().as_bytes(), None).unwrap_err().code, Code::ManifestInvalid);
    }
}
