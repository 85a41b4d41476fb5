//! Detached signatures of files, in the form `cosign sign-blob --output-signature` writes: the base64
//! (standard alphabet, one line, no trailing newline) of the DER-encoded ECDSA P-256 signature over the
//! file's SHA-256. `openssl dgst -sha256 -verify key.pub -signature <(base64 -d < FILE.sig) FILE` and
//! `cosign verify-blob --key key.pub --signature FILE.sig FILE` check them.
//!
//! Files are hashed as a stream and the digest is signed (ECDSA signs the hash anyway), so a disk image
//! of gigabytes is never in memory. Parsing a signature file is pure ([`parse_signature`]); reading and
//! hashing files is the I/O edge.

use std::{io::Read as _, path::Path};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use p256::ecdsa::Signature;
use sha2::Digest as _;

use crate::keys::{PublicKey, SigningKey};

/// Why a signature file is not a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureFormatError {
    #[error("bad base64: {0}")]
    Base64(String),
    #[error("bad DER: {0}")]
    Der(String),
    #[error("empty")]
    Empty,
}

/// The text of a signature file for `signature`.
pub fn encode_signature(signature: &p256::ecdsa::DerSignature) -> String {
    B64.encode(signature.as_bytes())
}

/// Read a signature file's text (surrounding whitespace, as `echo` or an editor leaves it, is ignored).
pub fn parse_signature(text: &[u8]) -> Result<Signature, SignatureFormatError> {
    let text = text.trim_ascii();
    if text.is_empty() {
        return Err(SignatureFormatError::Empty);
    }
    let der = B64.decode(text).map_err(|e| SignatureFormatError::Base64(e.to_string()))?;
    Signature::from_der(&der).map_err(|e| SignatureFormatError::Der(e.to_string()))
}

/// SHA-256 of a file, read as a stream.
pub fn sha256_file(path: &Path) -> Result<[u8; 32], std::io::Error> {
    let mut f = fs_err::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// `sha256:HEX`, the form manifests and OCI descriptors write digests in.
pub fn sha256_string(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(digest))
}

/// Sign bytes; returns the signature file's text.
pub fn sign_bytes(key: &SigningKey, data: &[u8]) -> String {
    encode_signature(&key.sign(data))
}

/// Sign a file (streamed); returns the signature file's text and the file's SHA-256.
pub fn sign_file(key: &SigningKey, path: &Path) -> Result<(String, [u8; 32]), std::io::Error> {
    let digest = sha256_file(path)?;
    Ok((encode_signature(&key.sign_digest(&digest)), digest))
}

/// Whether `signature` is `key`'s signature of the content whose SHA-256 is `digest`.
pub fn verify_digest(key: &PublicKey, digest: &[u8; 32], signature: &Signature) -> bool {
    key.verify_digest(digest, signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_text_is_one_base64_line_of_der() {
        let key = SigningKey::generate();
        let text = sign_bytes(&key, b"data");
        assert!(!text.contains('\n'));
        let der = B64.decode(&text).unwrap();
        assert_eq!(der[0], 0x30, "a DER SEQUENCE");
        let sig = parse_signature(text.as_bytes()).unwrap();
        assert!(key.public_key().verify(b"data", &sig));
        // As written by `echo` (trailing newline) it still reads.
        assert_eq!(parse_signature(format!("{text}\n").as_bytes()).unwrap(), sig);
    }

    #[test]
    fn streamed_file_signature_equals_the_signature_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs_err::write(&path, &data).unwrap();
        let key = SigningKey::generate();
        let (text, digest) = sign_file(&key, &path).unwrap();
        assert_eq!(digest, <[u8; 32]>::from(sha2::Sha256::digest(&data)));
        // ECDSA here is deterministic (RFC 6979): same key, same message, same signature.
        assert_eq!(text, sign_bytes(&key, &data));
    }

    #[test]
    fn truncated_and_garbled_signatures_are_format_errors() {
        let key = SigningKey::generate();
        let text = sign_bytes(&key, b"data");
        assert!(matches!(parse_signature(b""), Err(SignatureFormatError::Empty)));
        assert!(matches!(parse_signature(b"%%%not base64"), Err(SignatureFormatError::Base64(_))));
        // Cut at a base64 quantum boundary: valid base64, truncated DER.
        assert!(matches!(parse_signature(&text.as_bytes()[..40]), Err(SignatureFormatError::Der(_))));
    }
}
