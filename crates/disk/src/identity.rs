//! Image identity: the one input every "unique" ID of a disk is derived from (GPT disk and partition GUIDs,
//! file system UUIDs, the FAT volume id), so the same image inputs always give the same bytes.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A 32-byte digest that names one image build, e.g. `sha256(name, version, blueprint digest)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageIdentity([u8; 32]);

impl ImageIdentity {
    /// An identity from a digest computed by the caller.
    pub fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The identity of an image: sha256 over name, version and blueprint digest, each length-prefixed so that
    /// no two different triples hash the same bytes.
    pub fn new(name: &str, version: &str, blueprint_digest: &str) -> Self {
        let mut h = Sha256::new();
        for part in [name, version, blueprint_digest] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        Self(h.finalize().into())
    }

    /// The raw digest.
    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(b"kiln-disk:");
        h.update(purpose.as_bytes());
        h.finalize().into()
    }

    /// A UUID for `purpose` (e.g. `"gpt-disk"`, `"partition:root"`): the first 16 bytes of
    /// `sha256(identity, purpose)` with the version (4) and variant (RFC 4122) bits set, so it is shaped like a
    /// random v4 UUID without being random.
    pub fn uuid(&self, purpose: &str) -> Uuid {
        let d = self.derive(purpose);
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Uuid::from_bytes(b)
    }

    /// A 32-bit number for `purpose` (e.g. the FAT volume id).
    pub fn u32(&self, purpose: &str) -> u32 {
        let d = self.derive(purpose);
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_shaped_stable_and_distinct_per_purpose() {
        let id = ImageIdentity::new("web", "1.2.0", "sha256:abc");
        let a = id.uuid("gpt-disk");
        assert_eq!(a.get_version_num(), 4);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(a, ImageIdentity::new("web", "1.2.0", "sha256:abc").uuid("gpt-disk"));
        assert_ne!(a, id.uuid("partition:root"));
        assert_ne!(a, ImageIdentity::new("web", "1.2.1", "sha256:abc").uuid("gpt-disk"));
    }

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(ImageIdentity::new("ab", "c", "d"), ImageIdentity::new("a", "bc", "d"));
    }
}
