//! Typed errors of the OCI writers and readers.

use std::{io, path::PathBuf};

/// Everything that can go wrong while scanning a tree, writing or reading an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// File I/O; errors made with `fs-err` carry the path in their message.
    #[error(transparent)]
    Io(#[from] io::Error),

    #[error("invalid path `{path}`: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    #[error("cannot read `{path}` of the tree: {source}")]
    ReadContent {
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("`{path}` changed while the layer was written: expected {expected} bytes, found {found}")]
    FileChanged { path: String, expected: u64, found: u64 },

    #[error("`{path}` has an extended attribute whose name is not UTF-8: {name:?}")]
    NonUtf8Xattr { path: String, name: String },

    #[error("cannot write the layer stream: {0}")]
    Write(#[source] io::Error),

    #[error("malformed layer: {reason}")]
    BadLayer { reason: String },

    #[error("refusing layer entry `{path}`: {reason}")]
    UnsafeEntry { path: String, reason: &'static str },

    #[error("not an OCI image layout at {}: {reason}", path.display())]
    BadLayout { path: PathBuf, reason: String },

    #[error("no manifest tagged `{tag}` in the OCI layout at {}", layout.display())]
    TagNotFound { layout: PathBuf, tag: String },

    #[error("blob {digest} is corrupt: its content hashes to {actual}")]
    DigestMismatch { digest: String, actual: String },

    #[error("blob {digest} has {actual} bytes, its descriptor says {expected}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },

    #[error("unsupported media type `{media_type}`")]
    UnsupportedMediaType { media_type: String },

    #[error("invalid OCI document: {0}")]
    Spec(#[from] oci_spec::OciSpecError),

    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}
