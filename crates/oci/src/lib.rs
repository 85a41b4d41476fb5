//! OCI image writers: reproducible tar layers, config, manifest, index, image layout.
//!
//! The pieces, from pure to I/O:
//! * [`tree`]: the index of a root tree (paths, kinds, owners, modes, xattrs, content digests);
//! * [`layer`]: planning a layer from an index (sorted, hard links, clamped mtimes, whiteouts), writing it
//!   as tar over `Write`, reading it back, and a text listing;
//! * [`compress`]: deterministic parallel gzip/zstd with both digests in one pass;
//! * [`diff`]: parent index vs child index → changes → the layer of a derived image;
//! * [`image`]: config, manifest and `index.json` as canonical JSON;
//! * [`scan`], [`tree_layer`], [`unpack`], [`layout`]: the disk side (scan a tree, write it as a layer while
//!   it is walked, apply layers onto a directory, write a layout atomically, read one by tag).
//!
//! [`write_image`] and [`write_derived_image`] put them together for kiln's `oci` output.

pub mod compress;
pub mod diff;
pub mod error;
pub mod image;
pub mod layer;
pub mod layout;
pub mod scan;
pub mod tree;
pub mod tree_layer;
pub mod unpack;

use std::path::{Path, PathBuf};

pub use compress::{CompressOptions, Compression, LayerDigests};
pub use error::Error;
pub use image::{BaseImage, ImageSpec, RuntimeConfig};
pub use layout::{Image, Layout};
pub use tree::{Entry, EntryKind, Sha256, TreeIndex, TreePath};

use crate::{
    diff::diff_layer,
    image::{build_documents, Documents, NewLayer},
    layer::DirSource,
    layout::LayoutWriter,
    scan::{scan_tree, ScanOptions},
};

/// What [`write_image`] and [`write_derived_image`] produced.
#[derive(Debug, Clone)]
pub struct WrittenImage {
    pub layout: PathBuf,
    /// The layer this build added.
    pub layer: LayerDigests,
    pub documents: Documents,
    /// Entries in the new layer.
    pub entries: usize,
    /// Sockets of the tree that a layer cannot hold.
    pub skipped_sockets: Vec<TreePath>,
}

impl WrittenImage {
    pub fn manifest_digest(&self) -> Sha256 {
        self.documents.manifest.digest
    }
}

fn finish(
    mut writer: LayoutWriter,
    spec: &ImageSpec,
    base: Option<&BaseImage>,
    layer: LayerDigests,
    opts: &CompressOptions,
    created_by: &str,
) -> Result<(PathBuf, Documents), Error> {
    let new = NewLayer {
        descriptor: oci_spec::image::Descriptor::new(
            opts.compression.media_type(),
            layer.size,
            layer.digest.to_oci(),
        ),
        diff_id: layer.diff_id,
        created_by: created_by.to_string(),
    };
    let docs = build_documents(spec, base, &[new])?;
    writer.add_blob(&docs.config.bytes)?;
    writer.add_blob(&docs.manifest.bytes)?;
    let path = writer.commit(&docs.index)?;
    Ok((path, docs))
}

/// Writes the tree at `tree` as a one-layer image into the layout directory `out` (replaced atomically).
/// `created_by` is the history entry of the layer.
pub fn write_image(
    tree: &Path,
    out: &Path,
    spec: &ImageSpec,
    opts: &CompressOptions,
    created_by: &str,
) -> Result<WrittenImage, Error> {
    let mut writer = LayoutWriter::create(out)?;
    let written = writer.write_tree_layer(tree, spec.epoch, opts)?;
    let (layout, documents) = finish(writer, spec, None, written.digests, opts, created_by)?;
    Ok(WrittenImage {
        layout,
        layer: written.digests,
        documents,
        entries: written.entries,
        skipped_sockets: written.skipped_sockets,
    })
}

/// The parent of a derived image, read from a layout.
#[derive(Debug, Clone)]
pub struct Parent {
    pub layout: Layout,
    pub image: Image,
    /// The reference recorded as `org.opencontainers.image.base.name`.
    pub name: String,
}

impl Parent {
    /// Opens `tag` of the layout at `path`; `name` is how the image was referred to.
    pub fn open(path: &Path, tag: &str, name: impl Into<String>) -> Result<Self, Error> {
        let layout = Layout::open(path)?;
        let image = layout.find(tag)?;
        Ok(Self { layout, image, name: name.into() })
    }

    fn layer_streams(&self) -> Result<Vec<Box<dyn std::io::Read>>, Error> {
        self.image.layers().iter().map(|d| self.layout.open_layer(d)).collect()
    }

    /// The parent's tree, replayed from its layers (with content digests).
    pub fn index(&self) -> Result<TreeIndex, Error> {
        unpack::index_layers(self.layer_streams()?)
    }

    /// Unpacks the parent's layers onto `dest` (kiln's starting tree for `FROM` an image) and returns the
    /// parent's index.
    pub fn unpack(&self, dest: &Path, opts: &unpack::UnpackOptions) -> Result<TreeIndex, Error> {
        unpack::unpack_layers(self.layer_streams()?, dest, opts)
    }

    /// The base description recorded in the derived image.
    pub fn base_image(&self) -> BaseImage {
        BaseImage {
            name: self.name.clone(),
            manifest_digest: self.image.manifest_descriptor.digest().to_string(),
            layers: self.image.layers().to_vec(),
            diff_ids: self.image.diff_ids().to_vec(),
            history: self.image.config.history().clone().unwrap_or_default(),
        }
    }
}

/// Writes an image made of `parent`'s layers plus ONE new layer with the differences between
/// `parent_index` (see [`Parent::index`] or [`Parent::unpack`]) and the tree at `tree`.
pub fn write_derived_image(
    tree: &Path,
    out: &Path,
    spec: &ImageSpec,
    opts: &CompressOptions,
    created_by: &str,
    parent: &Parent,
    parent_index: &TreeIndex,
) -> Result<WrittenImage, Error> {
    let scan = scan_tree(tree, &ScanOptions { hash_contents: true, ..ScanOptions::default() })?;
    let (_, plan) = diff_layer(parent_index, &scan.index, spec.epoch);
    let mut writer = LayoutWriter::create(out)?;
    for desc in parent.image.layers() {
        writer.copy_blob(&parent.layout, desc)?;
    }
    let layer = writer.write_layer(&plan, &DirSource::new(tree), opts)?;
    let base = parent.base_image();
    let (layout, documents) = finish(writer, spec, Some(&base), layer, opts, created_by)?;
    Ok(WrittenImage {
        layout,
        layer,
        documents,
        entries: plan.entries.len(),
        skipped_sockets: scan.skipped_sockets,
    })
}
