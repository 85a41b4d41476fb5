//! Reading a built image's files straight from the artifact that ships, never from a side copy.
//!
//! - [`DiskImage`]: the root file system of `disk.raw`, found in the GPT (the partition of the x86-64 root type)
//!   and read in place as ext4; [`compare_qcow2_with_raw`] tells whether `disk.qcow2` holds the same disk.
//! - [`OciImage`]: an OCI image layout (`index.json` → manifest → config and layers), its layers merged in
//!   order with their whiteouts into an index; file contents are read again from the layer holding them.
//!   [`ImageConfig`] is the image's runtime configuration.
//!
//! Both are a [`RootFs`]: the same read-only view of a root file system, where symbolic links are followed
//! inside the image only (an absolute target starts at the image's root, `..` stops at it), with the same
//! [`Entry`] for every object.

pub mod disk;
pub mod error;
pub mod layers;
pub mod oci;
pub mod resolve;

pub use disk::{compare_qcow2_with_raw, DiskImage, DiskMatch, RootPartition};
pub use error::ImageError;
pub use oci::{ImageConfig, LayerInfo, OciImage};
pub use resolve::{join_link, MAX_SYMLINKS};

/// What kind of object an entry is, with the data of that kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink { target: String },
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
    Socket,
}

impl EntryKind {
    /// A short name for messages: "file", "directory", "symlink", ...
    pub fn name(&self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "directory",
            Self::Symlink { .. } => "symlink",
            Self::CharDevice { .. } => "character device",
            Self::BlockDevice { .. } => "block device",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
        }
    }
}

/// One object of an image's root file system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Absolute path inside the image, `/` for the root, no trailing slash.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits with set-uid, set-gid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of content: the length of a regular file, of a symlink's target; 0 for everything else (so the
    /// same tree gives the same sizes on a disk and in a layer, whatever a directory takes on ext4).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }

    pub fn is_file(&self) -> bool {
        self.kind == EntryKind::File
    }

    /// The target of a symlink.
    pub fn symlink_target(&self) -> Option<&str> {
        match &self.kind {
            EntryKind::Symlink { target } => Some(target),
            _ => None,
        }
    }

    /// The last path component (empty for the root).
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

/// A read-only view of an image's root file system.
///
/// Implementors give the four primitives that take canonical paths (absolute, no `.`/`..`, no symlink in any
/// component but possibly the last, which is not followed); the provided methods take any absolute path and
/// resolve it the same way for every kind of artifact. Paths are UTF-8: an image holding a name that is not
/// gives [`ImageError::NonUtf8`] rather than a silently altered path.
pub trait RootFs {
    /// The artifact read (`disk.raw`, the layout directory), for messages.
    fn artifact(&self) -> &std::path::Path;

    /// Every entry, the root `/` first, sorted by path bytewise.
    fn entries(&self) -> Result<Vec<Entry>, ImageError>;

    /// The entry at the canonical path `path`, without following it if it is a symlink.
    fn lookup(&self, path: &str) -> Result<Option<Entry>, ImageError>;

    /// The entries of the directory at the canonical path `dir`, sorted by name.
    fn list_dir(&self, dir: &str) -> Result<Vec<Entry>, ImageError>;

    /// The content of the regular file `entry` (as given by [`RootFs::lookup`] or [`RootFs::entries`]).
    fn read_file(&self, entry: &Entry) -> Result<Vec<u8>, ImageError>;

    /// Like `lstat`: the entry at `path` with symlinks in its parent components followed, the last not;
    /// `None` when nothing is there.
    fn metadata(&self, path: &str) -> Result<Option<Entry>, ImageError> {
        resolve::resolve(self, path, false)
    }

    /// Like `stat`: the entry at `path` with every symlink followed (inside the image); `None` when nothing
    /// is there, including a dangling link.
    fn metadata_followed(&self, path: &str) -> Result<Option<Entry>, ImageError> {
        resolve::resolve(self, path, true)
    }

    /// The canonical path `path` leads to, every symlink followed inside the image (e.g. `/lib/x` →
    /// `/usr/lib/x` on merged-/usr Debian); `None` when nothing is there.
    fn canonicalize(&self, path: &str) -> Result<Option<String>, ImageError> {
        Ok(self.metadata_followed(path)?.map(|e| e.path))
    }

    fn exists(&self, path: &str) -> Result<bool, ImageError> {
        Ok(self.metadata_followed(path)?.is_some())
    }

    /// The content of the regular file at `path`, symlinks followed inside the image.
    fn read(&self, path: &str) -> Result<Vec<u8>, ImageError> {
        let entry = self
            .metadata_followed(path)?
            .ok_or_else(|| ImageError::NotFound { artifact: self.artifact().into(), path: path.into() })?;
        if !entry.is_file() {
            return Err(ImageError::WrongKind {
                artifact: self.artifact().into(),
                path: path.into(),
                kind: entry.kind.name(),
                expected: "regular file",
            });
        }
        self.read_file(&entry)
    }

    /// The content of the file at `path` as text.
    fn read_to_string(&self, path: &str) -> Result<String, ImageError> {
        String::from_utf8(self.read(path)?).map_err(|e| ImageError::NotText {
            artifact: self.artifact().into(),
            path: path.into(),
            valid_up_to: e.utf8_error().valid_up_to(),
        })
    }

    /// The entries of the directory at `path` (symlinks followed), sorted by name; their paths are under the
    /// directory's canonical path.
    fn read_dir(&self, path: &str) -> Result<Vec<Entry>, ImageError> {
        let entry = self
            .metadata_followed(path)?
            .ok_or_else(|| ImageError::NotFound { artifact: self.artifact().into(), path: path.into() })?;
        if !entry.is_dir() {
            return Err(ImageError::WrongKind {
                artifact: self.artifact().into(),
                path: path.into(),
                kind: entry.kind.name(),
                expected: "directory",
            });
        }
        self.list_dir(&entry.path)
    }
}

/// `dir` joined with `name`, for canonical paths.
pub(crate) fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}
