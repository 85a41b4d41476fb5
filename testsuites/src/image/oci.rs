//! An OCI image layout read as shipped: `oci-layout`, `index.json` → manifest → config and layers, every blob
//! checked against its descriptor (size and sha256) and every layer's uncompressed stream against the config's
//! `diff_ids`. The layers are merged in order ([`MergedTree`], whiteouts honoured) when the image is opened;
//! a file's content is read later by decompressing the one layer that holds it again, up to that file. The
//! decompressing reader is kept between reads, so files read in path order (kiln's layer order) cost one
//! pass over each layer, not one per file.
//!
//! Which manifest: the one named by tag ([`OciImage::open_tag`]), else the one for linux/amd64 (a nested
//! index is looked into), else the only one.

use std::{
    collections::BTreeMap,
    fmt,
    io::{self, Read},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use oci_spec::image::{
    Arch, Descriptor, DigestAlgorithm, ImageConfiguration, ImageIndex, ImageManifest, MediaType, OciLayout,
    Os, ANNOTATION_REF_NAME,
};
use sha2::{Digest as _, Sha256};

use super::{
    layers::{ContentReader, LayerError, MergedTree},
    Entry, ImageError, RootFs,
};

/// The runtime configuration of an image (the config's `config` object) with its platform.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `linux`, ...
    pub os: String,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `NAME=VALUE` entries, in order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `PORT/PROTO` (e.g. `80/tcp`), sorted.
    pub exposed_ports: Vec<String>,
    /// Sorted.
    pub volumes: Vec<String>,
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    fn from_oci(c: &ImageConfiguration) -> Self {
        let mut out =
            Self { architecture: c.architecture().to_string(), os: c.os().to_string(), ..Self::default() };
        if let Some(cfg) = c.config() {
            out.user = cfg.user().clone();
            out.entrypoint = cfg.entrypoint().clone();
            out.cmd = cfg.cmd().clone();
            out.env = cfg.env().clone().unwrap_or_default();
            out.working_dir = cfg.working_dir().clone();
            out.labels = cfg.labels().iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
            out.exposed_ports = cfg.exposed_ports().clone().unwrap_or_default();
            out.exposed_ports.sort();
            out.volumes = cfg.volumes().clone().unwrap_or_default();
            out.volumes.sort();
            out.stop_signal = cfg.stop_signal().clone();
        }
        out
    }

    /// The value of environment variable `name` (the last entry wins, as in a container).
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }
}

/// One layer of the image, as the manifest and the config describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// `sha256:…` of the blob.
    pub digest: String,
    pub media_type: String,
    /// Bytes of the blob.
    pub size: u64,
    /// `sha256:…` of the uncompressed tar stream.
    pub diff_id: String,
}

/// An OCI image of a layout, its layers merged.
pub struct OciImage {
    artifact: PathBuf,
    manifest_digest: String,
    oci_config: ImageConfiguration,
    config: ImageConfig,
    layers: Vec<LayerInfo>,
    /// The manifest's layer descriptors, for [`OciImage::layers`] in the same order.
    layer_descriptors: Vec<Descriptor>,
    tree: MergedTree,
    /// The layer stream of the last read, where it stopped.
    cursor: Mutex<Option<(usize, ContentReader<LayerStream>)>>,
}

type LayerStream = Box<dyn Read + Send>;

impl fmt::Debug for OciImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciImage")
            .field("artifact", &self.artifact)
            .field("manifest_digest", &self.manifest_digest)
            .field("layers", &self.layers)
            .field("entries", &self.tree.len())
            .finish_non_exhaustive()
    }
}

/// Counts and hashes the bytes read through it; the state is shared so it outlives a decoder that owns it.
#[derive(Default)]
struct HashState {
    hasher: Sha256,
    count: u64,
}

struct Tap<R> {
    inner: R,
    state: Arc<Mutex<HashState>>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.hasher.update(&buf[..n]);
        s.count += n as u64;
        Ok(n)
    }
}

fn sha256_string(h: Sha256) -> String {
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn is_amd64_linux(p: Option<&oci_spec::image::Platform>) -> bool {
    p.is_some_and(|p| *p.architecture() == Arch::Amd64 && *p.os() == Os::Linux)
}

/// How a layer's blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn compression(media_type: &str) -> Option<Compression> {
    // OCI (`…layer.v1.tar+gzip`, also non-distributable) and Docker (`…rootfs.diff.tar.gzip`) spellings.
    if media_type.ends_with("tar+gzip") || media_type.ends_with("tar.gzip") {
        Some(Compression::Gzip)
    } else if media_type.ends_with("tar+zstd") || media_type.ends_with("tar.zstd") {
        Some(Compression::Zstd)
    } else if media_type.ends_with(".tar") {
        Some(Compression::None)
    } else {
        None
    }
}

fn decoder<'a, R: Read + Send + 'a>(c: Compression, blob: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match c {
        Compression::None => Box::new(blob),
        Compression::Gzip => {
            Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 16, blob)))
        }
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(blob)?),
    })
}

impl OciImage {
    /// Opens the image of the layout at `layout` (e.g. `OUT/oci`): the linux/amd64 manifest, else the only one.
    pub fn open(layout: &Path) -> Result<Self, ImageError> {
        Self::open_with(layout, None)
    }

    /// Opens the image tagged `tag` (`org.opencontainers.image.ref.name` in `index.json`).
    pub fn open_tag(layout: &Path, tag: &str) -> Result<Self, ImageError> {
        Self::open_with(layout, Some(tag))
    }

    fn open_with(layout: &Path, tag: Option<&str>) -> Result<Self, ImageError> {
        let bad = |reason: String| ImageError::BadLayout { artifact: layout.into(), reason };
        let io_err = |source| ImageError::Io { artifact: layout.into(), source };
        let marker = fs_err::read(layout.join("oci-layout")).map_err(io_err)?;
        let marker = OciLayout::from_reader(&marker[..]).map_err(|e| bad(format!("oci-layout: {e}")))?;
        if !marker.image_layout_version().starts_with("1.") {
            return Err(bad(format!("imageLayoutVersion {} (expected 1.x)", marker.image_layout_version())));
        }
        let index = fs_err::read(layout.join("index.json")).map_err(io_err)?;
        let index = ImageIndex::from_reader(&index[..]).map_err(|e| bad(format!("index.json: {e}")))?;

        let mut image = Self {
            artifact: layout.into(),
            manifest_digest: String::new(),
            oci_config: ImageConfiguration::default(),
            config: ImageConfig::default(),
            layers: Vec::new(),
            layer_descriptors: Vec::new(),
            tree: MergedTree::new(),
            cursor: Mutex::new(None),
        };
        let desc = image.select_manifest(&index, tag)?;
        let manifest = ImageManifest::from_reader(&image.read_blob(&desc)?[..])
            .map_err(|e| bad(format!("manifest {}: {e}", desc.digest())))?;
        let oci_config = ImageConfiguration::from_reader(&image.read_blob(manifest.config())?[..])
            .map_err(|e| bad(format!("config {}: {e}", manifest.config().digest())))?;
        let diff_ids = oci_config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(bad(format!(
                "the manifest has {} layers, the config {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        image.layers = manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(d, diff_id)| LayerInfo {
                digest: d.digest().to_string(),
                media_type: d.media_type().to_string(),
                size: d.size(),
                diff_id: diff_id.clone(),
            })
            .collect();
        image.layer_descriptors = manifest.layers().to_vec();
        image.manifest_digest = desc.digest().to_string();
        image.config = ImageConfig::from_oci(&oci_config);
        image.oci_config = oci_config;
        let mut tree = MergedTree::new();
        for i in 0..image.layers.len() {
            image.apply_layer(i, &mut tree)?;
        }
        image.tree = tree;
        Ok(image)
    }

    /// The manifest descriptor to read: by tag, else linux/amd64, else the only one.
    fn select_manifest(&self, index: &ImageIndex, tag: Option<&str>) -> Result<Descriptor, ImageError> {
        let bad = |reason: String| ImageError::BadLayout { artifact: self.artifact.clone(), reason };
        let mut found: Vec<Descriptor> = Vec::new();
        for d in index.manifests() {
            if let Some(tag) = tag {
                let name = d.annotations().as_ref().and_then(|a| a.get(ANNOTATION_REF_NAME));
                if name.map(String::as_str) != Some(tag) {
                    continue;
                }
            }
            match d.media_type() {
                MediaType::ImageManifest => found.push(d.clone()),
                MediaType::ImageIndex => {
                    let nested = ImageIndex::from_reader(&self.read_blob(d)?[..])
                        .map_err(|e| bad(format!("nested index {}: {e}", d.digest())))?;
                    found.extend(
                        nested
                            .manifests()
                            .iter()
                            .filter(|n| *n.media_type() == MediaType::ImageManifest)
                            .cloned(),
                    );
                }
                _ => {}
            }
        }
        let amd64: Vec<&Descriptor> =
            found.iter().filter(|d| is_amd64_linux(d.platform().as_ref())).collect();
        let what = tag.map(|t| format!("tagged `{t}`")).unwrap_or_else(|| "in index.json".into());
        match (amd64.as_slice(), found.as_slice()) {
            ([one], _) => Ok((*one).clone()),
            ([], [only]) => Ok(only.clone()),
            ([], []) => Err(bad(format!("no image manifest {what}"))),
            (_, _) => Err(bad(format!(
                "{} image manifests {what} ({} for linux/amd64): name one by tag",
                found.len(),
                amd64.len()
            ))),
        }
    }

    /// Path of a blob; only well-formed sha256 digests name one.
    fn blob_path(&self, desc: &Descriptor) -> Result<PathBuf, ImageError> {
        let d = desc.digest();
        let hex = d.digest();
        if *d.algorithm() != DigestAlgorithm::Sha256
            || hex.len() != 64
            || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ImageError::BadBlob {
                artifact: self.artifact.clone(),
                digest: d.to_string(),
                reason: "not a sha256 digest".into(),
            });
        }
        Ok(self.artifact.join("blobs/sha256").join(hex))
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<std::fs::File, ImageError> {
        let path = self.blob_path(desc)?;
        let file = fs_err::File::open(path)
            .map_err(|source| ImageError::Io { artifact: self.artifact.clone(), source })?;
        Ok(file.into_parts().0)
    }

    /// A whole small blob (index, manifest, config), checked against its descriptor.
    fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let mut data = Vec::new();
        self.open_blob(desc)?
            .read_to_end(&mut data)
            .map_err(|source| ImageError::Io { artifact: self.artifact.clone(), source })?;
        let bad = |reason: String| ImageError::BadBlob {
            artifact: self.artifact.clone(),
            digest: desc.digest().to_string(),
            reason,
        };
        if data.len() as u64 != desc.size() {
            return Err(bad(format!("{} bytes, its descriptor says {}", data.len(), desc.size())));
        }
        let actual = sha256_string(Sha256::new_with_prefix(&data));
        if actual != desc.digest().to_string() {
            return Err(bad(format!("content hashes to {actual}")));
        }
        Ok(data)
    }

    fn layer_err(&self, layer: usize, source: LayerError) -> ImageError {
        ImageError::BadLayer {
            artifact: self.artifact.clone(),
            layer,
            digest: self.layers[layer].digest.clone(),
            source,
        }
    }

    fn layer_descriptor(&self, layer: usize) -> Result<(Descriptor, Compression), ImageError> {
        let info = &self.layers[layer];
        let c = compression(&info.media_type)
            .ok_or_else(|| self.layer_err(layer, LayerError::MediaType(info.media_type.clone())))?;
        Ok((self.layer_descriptors[layer].clone(), c))
    }

    /// Merges layer `layer` into `tree`, checking the blob's size and digest and the uncompressed diff_id in
    /// the same pass.
    fn apply_layer(&self, layer: usize, tree: &mut MergedTree) -> Result<(), ImageError> {
        let (desc, c) = self.layer_descriptor(layer)?;
        let file = self.open_blob(&desc)?;
        let blob_state = Arc::new(Mutex::new(HashState::default()));
        let tar_state = Arc::new(Mutex::new(HashState::default()));
        let err = |e: LayerError| self.layer_err(layer, e);
        let merged = (|| -> Result<(), LayerError> {
            let blob = Tap { inner: &file, state: Arc::clone(&blob_state) };
            let mut tar =
                Tap { inner: decoder(c, blob).map_err(LayerError::Tar)?, state: Arc::clone(&tar_state) };
            tree.apply_layer(layer, &mut tar)?;
            // The end-of-archive blocks and any padding belong to the diff_id too.
            io::copy(&mut tar, &mut io::sink()).map_err(LayerError::Tar)?;
            Ok(())
        })();
        // Whatever the decoder left unread of the blob still counts (same file position: same handle).
        let rest = io::copy(&mut Tap { inner: &file, state: Arc::clone(&blob_state) }, &mut io::sink());
        rest.map_err(|source| ImageError::Io { artifact: self.artifact.clone(), source })?;
        let blob = std::mem::take(&mut *blob_state.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        // A corrupt blob is reported as such, before whatever it made the decoder or tar reader stumble on.
        if blob.count != desc.size() {
            return Err(err(LayerError::SizeMismatch { expected: desc.size(), actual: blob.count }));
        }
        let actual = sha256_string(blob.hasher);
        if actual != self.layers[layer].digest {
            return Err(err(LayerError::DigestMismatch {
                expected: self.layers[layer].digest.clone(),
                actual,
            }));
        }
        merged.map_err(err)?;
        let tar = std::mem::take(&mut *tar_state.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let diff_id = sha256_string(tar.hasher);
        if diff_id != self.layers[layer].diff_id {
            return Err(err(LayerError::DiffIdMismatch {
                expected: self.layers[layer].diff_id.clone(),
                actual: diff_id,
            }));
        }
        Ok(())
    }

    /// The image's runtime configuration.
    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    /// The whole config document (history, creation time, rootfs).
    pub fn oci_config(&self) -> &ImageConfiguration {
        &self.oci_config
    }

    /// The layers, lowest first.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    /// `sha256:…` of the manifest read.
    pub fn manifest_digest(&self) -> &str {
        &self.manifest_digest
    }

    /// The layer (index into [`OciImage::layers`]) holding the content of the regular file at the canonical
    /// path `path`.
    pub fn layer_of(&self, path: &str) -> Option<usize> {
        self.tree.get(path)?.content.map(|l| l.layer)
    }
}

impl RootFs for OciImage {
    fn artifact(&self) -> &Path {
        &self.artifact
    }

    fn entries(&self) -> Result<Vec<Entry>, ImageError> {
        Ok(self.tree.nodes().map(|n| n.entry.clone()).collect())
    }

    fn lookup(&self, path: &str) -> Result<Option<Entry>, ImageError> {
        Ok(self.tree.get(path).map(|n| n.entry.clone()))
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<Entry>, ImageError> {
        Ok(self.tree.children(dir).map(|n| n.entry.clone()).collect())
    }

    fn read_file(&self, entry: &Entry) -> Result<Vec<u8>, ImageError> {
        let location = self.tree.get(&entry.path).and_then(|n| n.content).ok_or_else(|| {
            ImageError::NotFound { artifact: self.artifact.clone(), path: entry.path.clone() }
        })?;
        let layer = location.layer;
        // The layer was checked against its digest when the image was opened.
        let mut cursor = self.cursor.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let reader = match &mut *cursor {
            Some((l, r)) if *l == layer && r.position() <= location.offset => r,
            slot => {
                let (desc, c) = self.layer_descriptor(layer)?;
                let stream = decoder(c, self.open_blob(&desc)?)
                    .map_err(|e| self.layer_err(layer, LayerError::Tar(e)))?;
                &mut slot.insert((layer, ContentReader::new(stream))).1
            }
        };
        let read = reader.read_at(location.offset, entry);
        if read.is_err() {
            *cursor = None;
        }
        read.map_err(|e| self.layer_err(layer, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_pick_the_decompressor() {
        assert_eq!(compression("application/vnd.oci.image.layer.v1.tar+gzip"), Some(Compression::Gzip));
        assert_eq!(compression("application/vnd.oci.image.layer.v1.tar+zstd"), Some(Compression::Zstd));
        assert_eq!(compression("application/vnd.oci.image.layer.v1.tar"), Some(Compression::None));
        assert_eq!(compression("application/vnd.docker.image.rootfs.diff.tar.gzip"), Some(Compression::Gzip));
        assert_eq!(
            compression("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(compression("application/vnd.oci.image.config.v1+json"), None);
    }

    #[test]
    fn env_var_last_entry_wins() {
        let c = ImageConfig {
            env: vec!["PATH=/usr/bin".into(), "LANG=C".into(), "PATH=/bin".into(), "PATHX=1".into()],
            ..ImageConfig::default()
        };
        assert_eq!(c.env_var("PATH"), Some("/bin"));
        assert_eq!(c.env_var("LANG"), Some("C"));
        assert_eq!(c.env_var("LAN"), None);
    }
}
