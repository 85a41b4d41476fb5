//! OCI image layouts on disk: writing one atomically (temporary directory, then rename) and reading one
//! (find a manifest by tag, list and open its layers) for `FROM oci-layout:PATH:TAG`.

use std::{
    io::{self, BufWriter, Read},
    path::{Path, PathBuf},
};

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, ANNOTATION_REF_NAME,
};
use sha2::Digest as _;

use crate::{
    compress::{compress_stream, CompressOptions, LayerDigests},
    error::Error,
    layer::{write_tar, ContentSource, LayerPlan},
    tree::Sha256,
    tree_layer::{write_tree_layer, TreeLayer},
};

/// Content of the `oci-layout` file.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A layout being written into a temporary directory next to its target.
#[derive(Debug)]
pub struct LayoutWriter {
    target: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl LayoutWriter {
    /// Starts a layout that [`LayoutWriter::commit`] will move to `target` (replacing what is there).
    pub fn create(target: &Path) -> Result<Self, Error> {
        let name = target.file_name().ok_or_else(|| Error::InvalidPath {
            path: target.display().to_string(),
            reason: "an image layout needs a directory name",
        })?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs_err::create_dir_all(&parent)?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(".kiln-tmp");
        let tmp = parent.join(tmp_name);
        if tmp.exists() {
            fs_err::remove_dir_all(&tmp)?;
        }
        fs_err::create_dir_all(tmp.join("blobs/sha256"))?;
        Ok(Self { target: target.to_path_buf(), tmp, committed: false })
    }

    fn blob_path(&self, digest: &Sha256) -> PathBuf {
        self.tmp.join("blobs/sha256").join(digest.hex())
    }

    /// Writes a layer blob, compressed as `opts` says, and returns its digests.
    pub fn write_layer(
        &mut self,
        plan: &LayerPlan,
        source: &dyn ContentSource,
        opts: &CompressOptions,
    ) -> Result<LayerDigests, Error> {
        self.layer_file(
            |out| {
                let (out, (), digests) =
                    compress_stream(out, opts, |w| write_tar(plan, source, w).map(|_| ()))?;
                Ok((out, digests))
            },
            |d| d.digest,
        )
    }

    /// Writes the tree at `root` as a layer blob while it is walked (see [`write_tree_layer`]).
    pub fn write_tree_layer(
        &mut self,
        root: &Path,
        epoch: u64,
        opts: &CompressOptions,
    ) -> Result<TreeLayer, Error> {
        self.layer_file(|out| write_tree_layer(root, epoch, opts, out), |l| l.digests.digest)
    }

    /// Runs `write` on a buffered file in the blob directory, then names the file by its digest.
    fn layer_file<T>(
        &mut self,
        write: impl FnOnce(BufWriter<fs_err::File>) -> Result<(BufWriter<fs_err::File>, T), Error>,
        digest: impl FnOnce(&T) -> Sha256,
    ) -> Result<T, Error> {
        let partial = self.tmp.join("blobs/sha256/.layer.partial");
        let file = fs_err::File::create(&partial)?;
        let (out, value) = write(BufWriter::with_capacity(1 << 20, file))?;
        out.into_inner().map_err(|e| e.into_error())?;
        fs_err::rename(&partial, self.blob_path(&digest(&value)))?;
        Ok(value)
    }

    /// Stores a small blob (config, manifest) and returns its digest.
    pub fn add_blob(&mut self, bytes: &[u8]) -> Result<Sha256, Error> {
        let digest = Sha256::of(bytes);
        fs_err::write(self.blob_path(&digest), bytes)?;
        Ok(digest)
    }

    /// Brings a blob of another layout into this one (a hard link when possible, else a copy).
    pub fn copy_blob(&mut self, from: &Layout, desc: &Descriptor) -> Result<(), Error> {
        let digest = sha256_of_descriptor(desc)?;
        let src = from.blob_path(desc);
        let meta = fs_err::metadata(&src)?;
        if meta.len() != desc.size() {
            return Err(Error::SizeMismatch {
                digest: desc.digest().to_string(),
                expected: desc.size(),
                actual: meta.len(),
            });
        }
        let dst = self.blob_path(&digest);
        if dst.exists() {
            return Ok(());
        }
        if std::fs::hard_link(&src, &dst).is_err() {
            fs_err::copy(&src, &dst)?;
        }
        Ok(())
    }

    /// Writes `index.json` and `oci-layout` and moves the layout into place: atomically swapped with an
    /// existing target where the file system supports it.
    pub fn commit(mut self, index_json: &[u8]) -> Result<PathBuf, Error> {
        fs_err::write(self.tmp.join("index.json"), index_json)?;
        fs_err::write(self.tmp.join("oci-layout"), OCI_LAYOUT)?;
        if self.target.exists() {
            use rustix::fs::{renameat_with, RenameFlags, CWD};
            match renameat_with(CWD, &self.tmp, CWD, &self.target, RenameFlags::EXCHANGE) {
                Ok(()) => {
                    // The old layout is now at the temporary path.
                    fs_err::remove_dir_all(&self.tmp)?;
                }
                Err(_) => {
                    let mut old = self.tmp.clone().into_os_string();
                    old.push(".old");
                    fs_err::rename(&self.target, &old)?;
                    fs_err::rename(&self.tmp, &self.target)?;
                    fs_err::remove_dir_all(&old)?;
                }
            }
        } else {
            fs_err::rename(&self.tmp, &self.target)?;
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for LayoutWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

fn sha256_of_descriptor(desc: &Descriptor) -> Result<Sha256, Error> {
    Sha256::parse(desc.digest().as_ref()).ok_or_else(|| Error::UnsupportedMediaType {
        media_type: format!("digest algorithm of {}", desc.digest()),
    })
}

/// An image found in a layout.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest_descriptor: Descriptor,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

impl Image {
    pub fn layers(&self) -> &[Descriptor] {
        self.manifest.layers()
    }

    pub fn diff_ids(&self) -> &[String] {
        self.config.rootfs().diff_ids()
    }
}

/// An OCI image layout opened for reading.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    index: ImageIndex,
}

impl Layout {
    /// Opens the layout at `root` (checks `oci-layout`, reads `index.json`).
    pub fn open(root: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::BadLayout { path: root.to_path_buf(), reason };
        let marker = fs_err::read(root.join("oci-layout"))?;
        let marker: serde_json::Value =
            serde_json::from_slice(&marker).map_err(|e| bad(format!("oci-layout: {e}")))?;
        if marker["imageLayoutVersion"] != "1.0.0" {
            return Err(bad(format!("unsupported imageLayoutVersion {}", marker["imageLayoutVersion"])));
        }
        let index = fs_err::read(root.join("index.json"))?;
        let index = ImageIndex::from_reader(&index[..]).map_err(|e| bad(format!("index.json: {e}")))?;
        Ok(Self { root: root.to_path_buf(), index })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn index(&self) -> &ImageIndex {
        &self.index
    }

    /// The tags (`org.opencontainers.image.ref.name`) of the layout's manifests.
    pub fn tags(&self) -> Vec<String> {
        self.index
            .manifests()
            .iter()
            .filter_map(|d| d.annotations().as_ref()?.get(ANNOTATION_REF_NAME).cloned())
            .collect()
    }

    /// Path of a blob.
    pub fn blob_path(&self, desc: &Descriptor) -> PathBuf {
        let d = desc.digest();
        self.root.join("blobs").join(d.algorithm().as_ref()).join(d.digest())
    }

    /// Reads a whole blob, checking its size and digest.
    pub fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, Error> {
        let mut r = self.open_blob(desc)?;
        let mut v = Vec::new();
        r.read_to_end(&mut v).map_err(unwrap_verify)?;
        Ok(v)
    }

    /// Opens a blob; the reader fails at its end if the size or digest is wrong.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<VerifyingReader<fs_err::File>, Error> {
        let expected = sha256_of_descriptor(desc)?;
        Ok(VerifyingReader {
            inner: fs_err::File::open(self.blob_path(desc))?,
            hasher: sha2::Sha256::new(),
            expected,
            expected_size: desc.size(),
            count: 0,
        })
    }

    /// Finds the image tagged `tag`. A tagged nested index is searched for a linux/amd64 manifest.
    pub fn find(&self, tag: &str) -> Result<Image, Error> {
        let desc = self
            .index
            .manifests()
            .iter()
            .find(|d| {
                d.annotations().as_ref().and_then(|a| a.get(ANNOTATION_REF_NAME)).is_some_and(|t| t == tag)
            })
            .ok_or_else(|| Error::TagNotFound { layout: self.root.clone(), tag: tag.to_string() })?;
        let desc = match desc.media_type() {
            MediaType::ImageIndex => {
                let nested = ImageIndex::from_reader(&self.read_blob(desc)?[..])?;
                nested
                    .manifests()
                    .iter()
                    .find(|d| {
                        d.platform().as_ref().is_some_and(|p| {
                            *p.architecture() == oci_spec::image::Arch::Amd64
                                && *p.os() == oci_spec::image::Os::Linux
                        })
                    })
                    .cloned()
                    .ok_or_else(|| Error::TagNotFound {
                        layout: self.root.clone(),
                        tag: format!("{tag} (linux/amd64)"),
                    })?
            }
            MediaType::ImageManifest => desc.clone(),
            other => return Err(Error::UnsupportedMediaType { media_type: other.to_string() }),
        };
        let manifest = ImageManifest::from_reader(&self.read_blob(&desc)?[..])?;
        let config = ImageConfiguration::from_reader(&self.read_blob(manifest.config())?[..])?;
        Ok(Image { manifest_descriptor: desc, manifest, config })
    }

    /// Opens a layer as an uncompressed tar stream (verified against its digest when read to the end).
    pub fn open_layer(&self, desc: &Descriptor) -> Result<Box<dyn Read>, Error> {
        let blob = self.open_blob(desc)?;
        let mt = desc.media_type().to_string();
        Ok(match mt.as_str() {
            "application/vnd.oci.image.layer.v1.tar" | "application/vnd.docker.image.rootfs.diff.tar" => {
                Box::new(blob)
            }
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 20, blob)))
            }
            "application/vnd.oci.image.layer.v1.tar+zstd" => {
                Box::new(zstd::stream::read::Decoder::new(blob)?)
            }
            _ => return Err(Error::UnsupportedMediaType { media_type: mt }),
        })
    }
}

/// Turns the verification failure of a [`VerifyingReader`] back into its typed error.
pub(crate) fn unwrap_verify(e: io::Error) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        match e.into_inner().map(|i| i.downcast::<Error>()) {
            Some(Ok(err)) => *err,
            Some(Err(other)) => Error::Io(io::Error::other(other)),
            None => Error::Io(io::Error::other("verification failed")),
        }
    } else {
        Error::Io(e)
    }
}

/// A reader that hashes what it reads and fails at the end when size or digest differ from the descriptor.
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    expected: Sha256,
    expected_size: u64,
    count: u64,
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let actual = Sha256(self.hasher.clone().finalize().into());
            if self.count != self.expected_size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    Error::SizeMismatch {
                        digest: self.expected.to_string(),
                        expected: self.expected_size,
                        actual: self.count,
                    },
                ));
            }
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    Error::DigestMismatch { digest: self.expected.to_string(), actual: actual.to_string() },
                ));
            }
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.expected_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Error::SizeMismatch {
                    digest: self.expected.to_string(),
                    expected: self.expected_size,
                    actual: self.count,
                },
            ));
        }
        Ok(n)
    }
}
