//! Where signatures live in a build output folder.
//!
//! ```text
//! DIR/manifest.json                  the root of trust: lists every artifact's digest and size
//! DIR/signatures/manifest.json.sig   its signature
//! DIR/signatures/disk.raw.sig        the signature of DIR/disk.raw (one per artifact file)
//! DIR/signatures/report/certification.json.sig
//! DIR/signatures/oci/index.json.sig  an OCI layout artifact: the signature of its index.json
//! DIR/oci/…                          plus the image's cosign signature inside the layout (see `cosign`)
//! ```
//!
//! `signatures/X.sig` is always the signature of `DIR/X`, in `cosign sign-blob`'s format (see `blob`):
//! `openssl dgst -sha256 -verify key.pub -signature <(base64 -d < DIR/signatures/X.sig) DIR/X` checks it.

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

    #[test]
    fn signature_files_mirror_the_signed_paths() {
        let a = |kind, path: &str| Artifact { kind, path: path.into(), sha256: String::new(), size: 0 };
        assert_eq!(
            signature_file(&a(ArtifactKind::Raw, "disk.raw").digested_file()),
            "signatures/disk.raw.sig"
        );
        assert_eq!(
            signature_file(&a(ArtifactKind::Oci, "oci").digested_file()),
            "signatures/oci/index.json.sig"
        );
        assert_eq!(
            signature_file(&a(ArtifactKind::Report, "report/junit.xml").digested_file()),
            "signatures/report/junit.xml.sig"
        );
    }
}
