//! Where signatures live in a build output folder.
//!
//! ```text
//! DIR/manifest.json                  the root of trust: lists every artifact's digest and size
//! DIR/signatures/manifest.json.sig   its signature
//! DIR/signatures/disk.raw.sig        the signature of DIR/disk.raw (one per artifact file)
//! DIR/signatures/report/certification.json.sig
//! DIR/signatures/oci/blobs/sha256/HEX.sig
//!                                    an OCI layout artifact: the signature of its image manifest blob,
//!                                    HEX = the image digest manifest.json records for it
//! DIR/oci/…                          plus the image's cosign signature inside the layout (see `cosign`)
//! ```
//!
//! `signatures/X.sig` is always the signature of `DIR/X`, in `cosign sign-blob`'s format (see `blob`):
//! `openssl dgst -sha256 -verify key.pub -signature <(base64 -d < DIR/signatures/X.sig) DIR/X` checks it.
//! X is what [`Artifact::digested_file`] names, the file whose digest the manifest records.
//!
//! For an OCI layout that is the image manifest blob, so its signature is named by the image digest
//! rather than by a fixed name such as `oci.sig`: the rule above holds without exception (the openssl
//! line works on it as on any other file, and nothing maps names back and forth), and the name is as
//! stable as what it signs: the image digest, which signing the image does not change. A reader finds it
//! from `manifest.json` (`signatures/` + `digested_file()` + `.sig`), which it needs anyway for the
//! digest, or as the only `.sig` under `signatures/oci/blobs/sha256/`.
//!
//! [`Artifact::digested_file`]: kiln_blueprint::manifest::Artifact::digested_file

/// The folder of signature files inside a build output.
pub const SIGNATURES_DIR: &str = "signatures";

/// The signature file (relative to the output folder) of the file `rel`.
pub fn signature_file(rel: &str) -> String {
    format!("{SIGNATURES_DIR}/{rel}.sig")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_blueprint::manifest::{Artifact, ArtifactKind};

    const IMAGE: &str = "sha256:5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592";

    #[test]
    fn signature_files_mirror_the_signed_paths() {
        let a = |kind, path: &str| Artifact { kind, path: path.into(), sha256: IMAGE.into(), size: 0 };
        assert_eq!(
            signature_file(&a(ArtifactKind::Raw, "disk.raw").digested_file()),
            "signatures/disk.raw.sig"
        );
        // An OCI layout: its image manifest blob, named by the image digest.
        assert_eq!(
            signature_file(&a(ArtifactKind::Oci, "oci").digested_file()),
            format!("signatures/oci/blobs/sha256/{}.sig", &IMAGE["sha256:".len()..])
        );
        assert_eq!(
            signature_file(&a(ArtifactKind::Report, "report/junit.xml").digested_file()),
            "signatures/report/junit.xml.sig"
        );
    }
}
