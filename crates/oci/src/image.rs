//! Pure building of an image's JSON documents: config, manifest and `index.json`, as canonical JSON.
//!
//! Canonical JSON here means: object keys sorted bytewise at every level, no insignificant whitespace, UTF-8.
//! `oci-spec` keeps labels and annotations in hash maps, so the documents are re-serialized through a sorted
//! form; the same inputs always give the same bytes and digests. Times come from `SOURCE_DATE_EPOCH`.

use std::collections::BTreeMap;

use oci_spec::image::{
    Arch, Config, ConfigBuilder, Descriptor, DescriptorBuilder, History, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder,
    RootFsBuilder, ANNOTATION_BASE_IMAGE_DIGEST, ANNOTATION_BASE_IMAGE_NAME, ANNOTATION_CREATED,
    ANNOTATION_REF_NAME, ANNOTATION_REVISION, ANNOTATION_SOURCE, ANNOTATION_VERSION,
};
use serde::Serialize;

use crate::{error::Error, tree::Sha256};

/// The runtime configuration of the image (what `docker inspect` shows under `Config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `NAME=VALUE` entries, in order.
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// `PORT/PROTO`, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
}

impl RuntimeConfig {
    /// The runtime configuration of an existing image (e.g. a parent to inherit from).
    pub fn from_oci(c: &Config) -> Self {
        let mut ports = c.exposed_ports().clone().unwrap_or_default();
        ports.sort();
        Self {
            env: c.env().clone().unwrap_or_default(),
            entrypoint: c.entrypoint().clone(),
            cmd: c.cmd().clone(),
            labels: c
                .labels()
                .as_ref()
                .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            user: c.user().clone(),
            workdir: c.working_dir().clone(),
            exposed_ports: ports,
        }
    }

    fn to_oci(&self) -> Result<Config, Error> {
        let mut b = ConfigBuilder::default();
        if !self.env.is_empty() {
            b = b.env(self.env.clone());
        }
        if let Some(e) = &self.entrypoint {
            b = b.entrypoint(e.clone());
        }
        if let Some(c) = &self.cmd {
            b = b.cmd(c.clone());
        }
        if !self.labels.is_empty() {
            b = b.labels(
                self.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        }
        if let Some(u) = &self.user {
            b = b.user(u.clone());
        }
        if let Some(w) = &self.workdir {
            b = b.working_dir(w.clone());
        }
        if !self.exposed_ports.is_empty() {
            b = b.exposed_ports(self.exposed_ports.clone());
        }
        Ok(b.build()?)
    }
}

/// What describes the image besides its layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub architecture: Arch,
    pub os: Os,
    pub config: RuntimeConfig,
    /// `SOURCE_DATE_EPOCH`: the `created` time of the image and its history, and the mtime clamp.
    pub epoch: u64,
    /// The tag, stored as `org.opencontainers.image.ref.name` of the manifest in `index.json`.
    pub tag: String,
    /// `org.opencontainers.image.version`.
    pub version: Option<String>,
    /// `org.opencontainers.image.revision`.
    pub revision: Option<String>,
    /// `org.opencontainers.image.source`.
    pub source: Option<String>,
}

impl ImageSpec {
    /// An amd64/linux image with an empty runtime config.
    pub fn new(tag: impl Into<String>, epoch: u64) -> Self {
        Self {
            architecture: Arch::Amd64,
            os: Os::Linux,
            config: RuntimeConfig::default(),
            epoch,
            tag: tag.into(),
            version: None,
            revision: None,
            source: None,
        }
    }
}

/// The parent of a derived image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// `org.opencontainers.image.base.name`, e.g. `oci-layout:../base:1.0` or a catalog reference.
    pub name: String,
    /// Digest of the parent's manifest (`org.opencontainers.image.base.digest`).
    pub manifest_digest: String,
    /// The parent's layer descriptors, kept as they are.
    pub layers: Vec<Descriptor>,
    /// The parent's `rootfs.diff_ids`.
    pub diff_ids: Vec<String>,
    /// The parent's history, kept as it is.
    pub history: Vec<History>,
}

/// A layer this build wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLayer {
    pub descriptor: Descriptor,
    pub diff_id: Sha256,
    /// The history entry's `created_by`.
    pub created_by: String,
}

/// A small JSON document stored as a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: MediaType,
    pub bytes: Vec<u8>,
    pub digest: Sha256,
}

impl Blob {
    fn new(media_type: MediaType, bytes: Vec<u8>) -> Self {
        let digest = Sha256::of(&bytes);
        Self { media_type, bytes, digest }
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.bytes.len() as u64, self.digest.to_oci())
    }
}

/// The documents of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Documents {
    pub config: Blob,
    pub manifest: Blob,
    /// The descriptor of the manifest as listed in `index.json`.
    pub manifest_descriptor: Descriptor,
    /// Content of `index.json`.
    pub index: Vec<u8>,
}

impl Documents {
    /// A readable dump for snapshots: each document with its digest, pretty-printed.
    pub fn dump(&self) -> String {
        format!(
            "config {}\n{}\nmanifest {}\n{}\nindex.json\n{}\n",
            self.config.digest,
            pretty(&self.config.bytes),
            self.manifest.digest,
            pretty(&self.manifest.bytes),
            pretty(&self.index),
        )
    }
}

/// Pretty-prints a JSON document keeping its key order (for dumps).
pub fn pretty(json: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(json).into_owned(),
    }
}

fn sorted(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let entries: BTreeMap<String, Value> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Serializes `value` as canonical JSON (sorted keys, compact).
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    Ok(serde_json::to_vec(&sorted(serde_json::to_value(value)?))?)
}

/// RFC 3339 UTC time of `epoch` seconds, e.g. `2024-05-01T12:00:00Z` (clamped to the year 9999).
pub fn rfc3339(epoch: u64) -> String {
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z, the largest time RFC 3339 can write
    let secs = i64::try_from(epoch).unwrap_or(MAX).min(MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The `org.opencontainers.image.*` annotations of the manifest (without `ref.name`).
pub fn annotations(spec: &ImageSpec, base: Option<&BaseImage>) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert(ANNOTATION_CREATED.to_string(), rfc3339(spec.epoch));
    for (key, value) in [
        (ANNOTATION_VERSION, &spec.version),
        (ANNOTATION_REVISION, &spec.revision),
        (ANNOTATION_SOURCE, &spec.source),
    ] {
        if let Some(v) = value {
            a.insert(key.to_string(), v.clone());
        }
    }
    if let Some(b) = base {
        a.insert(ANNOTATION_BASE_IMAGE_NAME.to_string(), b.name.clone());
        a.insert(ANNOTATION_BASE_IMAGE_DIGEST.to_string(), b.manifest_digest.clone());
    }
    a
}

/// Builds config, manifest and `index.json` of an image made of `base`'s layers (if any) plus `layers`.
pub fn build_documents(
    spec: &ImageSpec,
    base: Option<&BaseImage>,
    layers: &[NewLayer],
) -> Result<Documents, Error> {
    let created = rfc3339(spec.epoch);
    let mut diff_ids: Vec<String> = base.map(|b| b.diff_ids.clone()).unwrap_or_default();
    diff_ids.extend(layers.iter().map(|l| l.diff_id.to_string()));
    let mut history: Vec<History> = base.map(|b| b.history.clone()).unwrap_or_default();
    if let Some(b) = base {
        // Tools pair history entries that are not `empty_layer` with layers: keep the count right when the
        // parent recorded less history than it has layers.
        let with_layer = history.iter().filter(|h| h.empty_layer() != Some(true)).count();
        for _ in with_layer..b.diff_ids.len() {
            history.push(HistoryBuilder::default().comment(format!("layer of {}", b.name)).build()?);
        }
    }
    for l in layers {
        history.push(
            HistoryBuilder::default().created(created.clone()).created_by(l.created_by.clone()).build()?,
        );
    }
    let config: ImageConfiguration = ImageConfigurationBuilder::default()
        .created(created.clone())
        .architecture(spec.architecture.clone())
        .os(spec.os.clone())
        .config(spec.config.to_oci()?)
        .rootfs(RootFsBuilder::default().typ("layers").diff_ids(diff_ids).build()?)
        .history(history)
        .build()?;
    let config = Blob::new(MediaType::ImageConfig, canonical_json(&config)?);

    let mut layer_descs: Vec<Descriptor> = base.map(|b| b.layers.clone()).unwrap_or_default();
    layer_descs.extend(layers.iter().map(|l| l.descriptor.clone()));
    let ann = annotations(spec, base);
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor())
        .layers(layer_descs)
        .annotations(ann.clone().into_iter().collect::<std::collections::HashMap<_, _>>())
        .build()?;
    let manifest = Blob::new(MediaType::ImageManifest, canonical_json(&manifest)?);

    let mut index_ann = ann;
    index_ann.insert(ANNOTATION_REF_NAME.to_string(), spec.tag.clone());
    let manifest_descriptor = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(manifest.digest.to_oci())
        .size(manifest.bytes.len() as u64)
        .platform(
            PlatformBuilder::default().architecture(spec.architecture.clone()).os(spec.os.clone()).build()?,
        )
        .annotations(index_ann.into_iter().collect::<std::collections::HashMap<_, _>>())
        .build()?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor.clone()])
        .build()?;
    Ok(Documents { config, manifest, manifest_descriptor, index: canonical_json(&index)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_epochs() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = serde_json::json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": null}});
        assert_eq!(
            String::from_utf8(canonical_json(&v).unwrap()).unwrap(),
            r#"{"a":{"c":null,"z":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    fn layer(n: u8) -> NewLayer {
        NewLayer {
            descriptor: Descriptor::new(
                MediaType::ImageLayerZstd,
                100 + u64::from(n),
                Sha256([n; 32]).to_oci(),
            ),
            diff_id: Sha256([n + 100; 32]),
            created_by: format!("kiln layer {n}"),
        }
    }

    fn spec() -> ImageSpec {
        let mut s = ImageSpec::new("1.2.0", 1_700_000_000);
        s.version = Some("1.2.0".into());
        s.revision = Some("abc123".into());
        s.source = Some("https://example.invalid/kiln".into());
        s.config = RuntimeConfig {
            env: vec!["PATH=/usr/bin:/bin".into(), "LANG=C.UTF-8".into()],
            entrypoint: Some(vec!["/usr/bin/tini".into(), "--".into()]),
            cmd: Some(vec!["bash".into()]),
            labels: BTreeMap::from([
                ("org.example.team".into(), "images".into()),
                ("a.first".into(), "1".into()),
            ]),
            user: Some("1000:1000".into()),
            workdir: Some("/srv".into()),
            exposed_ports: vec!["8080/tcp".into(), "53/udp".into()],
        };
        s
    }

    #[test]
    fn documents_are_deterministic_and_digests_match_bytes() {
        let a = build_documents(&spec(), None, &[layer(1)]).unwrap();
        let b = build_documents(&spec(), None, &[layer(1)]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.config.digest, Sha256::of(&a.config.bytes));
        assert_eq!(a.manifest.digest, Sha256::of(&a.manifest.bytes));
        let index: serde_json::Value = serde_json::from_slice(&a.index).unwrap();
        assert_eq!(index["manifests"][0]["digest"], a.manifest.digest.to_string());
        assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "1.2.0");
        assert!(index["manifests"][0]["annotations"].get("org.opencontainers.image.base.name").is_none());
        // Round trip through oci-spec's own types.
        let cfg = ImageConfiguration::from_reader(&a.config.bytes[..]).unwrap();
        assert_eq!(cfg.rootfs().diff_ids(), &vec![Sha256([101; 32]).to_string()]);
        assert_eq!(cfg.created().as_deref(), Some("2023-11-14T22:13:20Z"));
    }

    #[test]
    fn derived_image_keeps_parent_layers_and_history() {
        let parent = build_documents(&spec(), None, &[layer(1)]).unwrap();
        let pcfg = ImageConfiguration::from_reader(&parent.config.bytes[..]).unwrap();
        let base = BaseImage {
            name: "oci-layout:base:1.2.0".into(),
            manifest_digest: parent.manifest.digest.to_string(),
            layers: vec![layer(1).descriptor],
            diff_ids: pcfg.rootfs().diff_ids().clone(),
            history: pcfg.history().clone().unwrap_or_default(),
        };
        let mut s = spec();
        s.epoch = 1_800_000_000;
        let child = build_documents(&s, Some(&base), &[layer(2)]).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&child.manifest.bytes).unwrap();
        assert_eq!(m["layers"].as_array().unwrap().len(), 2);
        assert_eq!(m["layers"][0]["digest"], Sha256([1; 32]).to_string());
        assert_eq!(
            m["annotations"]["org.opencontainers.image.base.digest"],
            parent.manifest.digest.to_string()
        );
        let c: serde_json::Value = serde_json::from_slice(&child.config.bytes).unwrap();
        assert_eq!(c["history"][0]["created"], "2023-11-14T22:13:20Z");
        assert_eq!(c["history"][1]["created"], rfc3339(1_800_000_000));
        assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);

        // A parent without history still gets one entry per layer.
        let bare = BaseImage { history: Vec::new(), ..base };
        let child = build_documents(&s, Some(&bare), &[layer(2)]).unwrap();
        let c: serde_json::Value = serde_json::from_slice(&child.config.bytes).unwrap();
        assert_eq!(c["history"][0]["comment"], "layer of oci-layout:base:1.2.0");
        assert_eq!(c["history"][1]["created_by"], "kiln layer 2");
    }

    #[test]
    fn documents_snapshot() {
        let docs = build_documents(&spec(), None, &[layer(1)]).unwrap();
        insta::assert_snapshot!(docs.dump());
    }
}
