//! What the stores keep for the OCI registry (`catalog/src/registry`): the digest algorithms blobs are
//! named by, a manifest's record in its repository, and an upload session.

use sha2::Digest as _;

use crate::model::Timestamp;

/// A digest algorithm the catalog stores blobs by (`blobs/sha256/HEX`, `blobs/sha512/HEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Self::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Self::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// `ALG:HEX` of `bytes`.
    pub fn digest(self, bytes: &[u8]) -> String {
        let mut h = self.hasher();
        h.update(bytes);
        h.finish()
    }
}

/// A running digest of one of the [`Algorithm`]s.
#[derive(Debug, Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    /// `ALG:HEX`.
    pub fn finish(self) -> String {
        match self {
            Self::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Self::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// A manifest (image manifest or index) in a repository; its bytes are the blob `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryManifest {
    pub repo: String,
    pub digest: String,
    pub media_type: String,
    /// What the referrers API lists it as: its `artifactType`, else (an image manifest) its config's
    /// media type.
    pub artifact_type: Option<String>,
    /// The digest of its `subject`, when it refers to another manifest.
    pub subject: Option<String>,
    pub size: u64,
    /// Its `annotations` object as JSON, when it has any (the referrers API repeats them).
    pub annotations: Option<String>,
    /// The blobs and manifests it refers to (config, layers, an index's manifests): kept by garbage
    /// collection while it exists.
    pub refs: Vec<String>,
}

/// A blob upload in progress (its bytes are in the blob store's upload `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub id: String,
    pub repo: String,
    pub started_at: Timestamp,
}
