//! Typed errors of the artifact readers; every variant names the artifact it is about.

use std::path::PathBuf;

/// Everything that can go wrong while reading a built image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// File I/O on the artifact (errors made with `fs-err` also carry the file's path).
    #[error("{}: {source}", artifact.display())]
    Io {
        artifact: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: cannot read the GPT: {reason}", artifact.display())]
    Gpt { artifact: PathBuf, reason: String },

    #[error("{}: {found} partitions have the x86-64 root type {}, expected one", artifact.display(), crate::image::disk::ROOT_X86_64_TYPE)]
    RootPartition { artifact: PathBuf, found: usize },

    #[error("{}: ext4 root file system (partition {partition}){}: {message}", artifact.display(), at_path(path))]
    Ext4 { artifact: PathBuf, partition: u32, path: Option<String>, message: String },

    #[error("{}: `{path}`: no such file or directory", artifact.display())]
    NotFound { artifact: PathBuf, path: String },

    #[error("{}: `{path}` is a {kind}, not a {expected}", artifact.display())]
    WrongKind { artifact: PathBuf, path: String, kind: &'static str, expected: &'static str },

    #[error("{}: `{path}` is not UTF-8 text (invalid byte at {valid_up_to})", artifact.display())]
    NotText { artifact: PathBuf, path: String, valid_up_to: usize },

    #[error("{}: `{path}`: more than {limit} symbolic links to follow", artifact.display())]
    TooManySymlinks { artifact: PathBuf, path: String, limit: usize },

    #[error("{}: `{path}` is not an absolute path", artifact.display())]
    NotAbsolute { artifact: PathBuf, path: String },

    #[error("{}: a path or link target is not UTF-8: {lossy:?}", artifact.display())]
    NonUtf8 { artifact: PathBuf, lossy: String },

    #[error("{}: not a qcow2 image (no `QFI\\xfb` magic)", artifact.display())]
    NotQcow2 { artifact: PathBuf },

    #[error("{}: not a usable OCI image layout: {reason}", artifact.display())]
    BadLayout { artifact: PathBuf, reason: String },

    #[error("{}: blob {digest}: {reason}", artifact.display())]
    BadBlob { artifact: PathBuf, digest: String, reason: String },

    #[error("{}: layer {layer} ({digest}): {source}", artifact.display())]
    BadLayer {
        artifact: PathBuf,
        /// Position in the manifest, from 0 (the lowest layer).
        layer: usize,
        digest: String,
        #[source]
        source: crate::image::layers::LayerError,
    },

    #[error("{}: could not run `{program}`: {source}", artifact.display())]
    Spawn {
        artifact: PathBuf,
        program: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: `{program}` failed ({status}): {stderr}", artifact.display())]
    ToolFailed { artifact: PathBuf, program: String, status: String, stderr: String },
}

fn at_path(path: &Option<String>) -> String {
    path.as_ref().map(|p| format!(" at `{p}`")).unwrap_or_default()
}

impl ImageError {
    /// The artifact the error is about.
    pub fn artifact(&self) -> &std::path::Path {
        match self {
            Self::Io { artifact, .. }
            | Self::Gpt { artifact, .. }
            | Self::RootPartition { artifact, .. }
            | Self::Ext4 { artifact, .. }
            | Self::NotFound { artifact, .. }
            | Self::WrongKind { artifact, .. }
            | Self::NotText { artifact, .. }
            | Self::TooManySymlinks { artifact, .. }
            | Self::NotAbsolute { artifact, .. }
            | Self::NonUtf8 { artifact, .. }
            | Self::NotQcow2 { artifact }
            | Self::BadLayout { artifact, .. }
            | Self::BadBlob { artifact, .. }
            | Self::BadLayer { artifact, .. }
            | Self::Spawn { artifact, .. }
            | Self::ToolFailed { artifact, .. } => artifact,
        }
    }
}
