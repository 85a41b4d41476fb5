//! ECDSA P-256 signing keys: generation, PEM encodings, and where a key comes from.
//!
//! * Public keys are PEM `PUBLIC KEY` (PKIX SubjectPublicKeyInfo), the form `openssl` and `cosign` read.
//! * Private keys are written in cosign's encrypted format, so a key made by `kiln keygen` works with
//!   `cosign sign-blob --key` and a key made by `cosign generate-key-pair` works with kiln: PEM type
//!   `ENCRYPTED SIGSTORE PRIVATE KEY` whose body is the JSON document
//!   `{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":B64},
//!     "cipher":{"name":"nacl/secretbox","nonce":B64},"ciphertext":B64}`:
//!   the passphrase through scrypt (32-byte key) seals the key's PKCS#8 DER with NaCl secretbox
//!   (XSalsa20-Poly1305, tag first). The older `ENCRYPTED COSIGN PRIVATE KEY` label is read too.
//! * Unencrypted PKCS#8 `PRIVATE KEY` and SEC1 `EC PRIVATE KEY` files (what `openssl` makes) are read.
//!
//! Parsing and encrypting are pure ([`SigningKey::from_pem`], [`SigningKey::to_encrypted_pem`]); the file
//! side ([`write_key_pair`], [`load_signing_key`]) writes private keys mode 0600 from creation on.

use std::path::{Path, PathBuf};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use p256::{
    ecdsa::{
        signature::hazmat::{PrehashSigner, PrehashVerifier},
        DerSignature, Signature,
    },
    pkcs8::{
        der::{asn1::ObjectIdentifier, Decode as _},
        DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding,
        PrivateKeyInfo, SubjectPublicKeyInfoRef,
    },
};
use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use zeroize::Zeroizing;

/// PEM label of a public key.
pub const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";
/// PEM label of cosign's encrypted private key (the one kiln writes).
pub const ENCRYPTED_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// Older cosign label of the same format.
pub const ENCRYPTED_COSIGN_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// Environment variable holding a private key's PEM text (for CI).
pub const ENV_KEY: &str = "KILN_SIGNING_KEY";
/// Environment variable holding the private key's passphrase.
pub const ENV_PASSWORD: &str = "KILN_SIGNING_PASSWORD";
/// cosign's passphrase variable, accepted when [`ENV_PASSWORD`] is not set.
pub const ENV_COSIGN_PASSWORD: &str = "COSIGN_PASSWORD";

/// scrypt cost parameters of the keys kiln writes (cosign's: N = 2^15, r = 8, p = 1).
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// Largest scrypt N accepted when reading a key (2^20 takes a second and 1 GiB; more is not a key).
const SCRYPT_MAX_LOG_N: u8 = 20;

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// Why a key could not be read, decrypted or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM key: {0}")]
    NotPem(String),
    #[error("PEM block `{found}` is not a key kiln reads (expected {expected})")]
    UnsupportedLabel { found: String, expected: &'static str },
    #[error("the key is not an elliptic-curve key (algorithm {algorithm}); kiln signs with ECDSA P-256")]
    NotEcKey { algorithm: String },
    #[error("the key is on curve {found}, not P-256 (prime256v1); kiln signs with ECDSA P-256")]
    WrongCurve { found: String },
    #[error("the key is malformed: {0}")]
    Malformed(String),
    #[error("wrong passphrase (or a damaged key file): the encrypted key does not open")]
    WrongPassphrase,
    #[error(
        "the private key is encrypted: a passphrase is needed (set {ENV_PASSWORD} or {ENV_COSIGN_PASSWORD})"
    )]
    PassphraseRequired,
    #[error("encrypted key uses {what} `{found}`; kiln reads scrypt + nacl/secretbox (cosign's format)")]
    UnsupportedEncryption { what: &'static str, found: String },
    #[error("no signing key: pass a key file, or set {ENV_KEY} (and {ENV_PASSWORD})")]
    NoKey,
    #[error("{0} already exists (refusing to overwrite a key)")]
    Exists(PathBuf),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// An ECDSA P-256 private key.
#[derive(Clone)]
pub struct SigningKey {
    inner: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("public", &self.public_key().fingerprint()).finish_non_exhaustive()
    }
}

/// An ECDSA P-256 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: p256::ecdsa::VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PublicKey").field(&self.fingerprint()).finish()
    }
}

impl SigningKey {
    /// A new random key (from the operating system's generator).
    pub fn generate() -> Self {
        Self { inner: p256::ecdsa::SigningKey::random(&mut OsRng) }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey { inner: *self.inner.verifying_key() }
    }

    /// Read a private key from PEM text: cosign's encrypted format (needs `passphrase`), or unencrypted
    /// PKCS#8 `PRIVATE KEY` / SEC1 `EC PRIVATE KEY`.
    pub fn from_pem(pem: &str, passphrase: Option<&[u8]>) -> Result<Self, KeyError> {
        let (label, der) = decode_pem(pem)?;
        match label.as_str() {
            ENCRYPTED_KEY_LABEL | ENCRYPTED_COSIGN_KEY_LABEL => {
                let passphrase = passphrase.ok_or(KeyError::PassphraseRequired)?;
                let pkcs8 = decrypt_cosign(&der, passphrase)?;
                Self::from_pkcs8_der(&pkcs8)
            }
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "EC PRIVATE KEY" => Self::from_sec1_der(&der),
            "ENCRYPTED PRIVATE KEY" => Err(KeyError::UnsupportedEncryption {
                what: "format",
                found: "PKCS#8 ENCRYPTED PRIVATE KEY".into(),
            }),
            _ => Err(KeyError::UnsupportedLabel {
                found: label,
                expected: "ENCRYPTED SIGSTORE PRIVATE KEY, PRIVATE KEY or EC PRIVATE KEY",
            }),
        }
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = PrivateKeyInfo::from_der(der).map_err(|e| KeyError::Malformed(format!("PKCS#8: {e}")))?;
        check_algorithm(info.algorithm.oid, info.algorithm.parameters_oid().ok())?;
        let inner = p256::ecdsa::SigningKey::from_pkcs8_der(der)
            .map_err(|e| KeyError::Malformed(format!("PKCS#8 P-256 key: {e}")))?;
        Ok(Self { inner })
    }

    fn from_sec1_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = sec1::EcPrivateKey::from_der(der).map_err(|e| KeyError::Malformed(format!("SEC1: {e}")))?;
        if let Some(curve) = key.parameters.and_then(|p| p.named_curve()) {
            if curve != OID_P256 {
                return Err(KeyError::WrongCurve { found: curve_name(curve) });
            }
        }
        let secret = p256::SecretKey::from_slice(key.private_key)
            .map_err(|_| KeyError::Malformed("SEC1: the private scalar is not a P-256 key".into()))?;
        Ok(Self { inner: secret.into() })
    }

    /// Unencrypted PKCS#8 PEM (`PRIVATE KEY`), as `openssl pkcs8 -topk8 -nocrypt` writes.
    pub fn to_pkcs8_pem(&self) -> String {
        // Encoding a valid P-256 key as PKCS#8 cannot fail.
        self.inner.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 encoding of a P-256 key").to_string()
    }

    /// cosign's encrypted PEM with a fresh random salt and nonce.
    pub fn to_encrypted_pem(&self, passphrase: &[u8]) -> String {
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut nonce);
        self.to_encrypted_pem_with(passphrase, &salt, &nonce)
    }

    /// cosign's encrypted PEM with the given salt and nonce (deterministic; for tests and known answers).
    pub fn to_encrypted_pem_with(&self, passphrase: &[u8], salt: &[u8; 32], nonce: &[u8; 24]) -> String {
        let der = self.inner.to_pkcs8_der().expect("PKCS#8 encoding of a P-256 key");
        let key = scrypt_key(passphrase, salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
            .expect("scrypt with kiln's constant, valid parameters");
        let ciphertext = secretbox_seal(&key, nonce, der.as_bytes());
        let doc = EncryptedKey {
            kdf: Kdf {
                name: "scrypt".into(),
                params: ScryptParams { n: 1 << SCRYPT_LOG_N, r: SCRYPT_R, p: SCRYPT_P },
                salt: B64.encode(salt),
            },
            cipher: Cipher { name: "nacl/secretbox".into(), nonce: B64.encode(nonce) },
            ciphertext: B64.encode(ciphertext),
        };
        let json = serde_json::to_vec(&doc).expect("a document of strings and numbers serializes");
        encode_pem(ENCRYPTED_KEY_LABEL, &json)
    }

    /// Sign a SHA-256 digest (ECDSA P-256, the signature over the message the digest is of).
    pub fn sign_digest(&self, sha256: &[u8; 32]) -> DerSignature {
        // A 32-byte prehash always signs: the error case of `sign_prehash` is a prehash of the wrong size.
        let sig: Signature =
            self.inner.sign_prehash(sha256).unwrap_or_else(|_| unreachable!("32-byte prehash"));
        sig.to_der()
    }

    /// Sign `message` (ECDSA P-256 over its SHA-256), DER-encoded.
    pub fn sign(&self, message: &[u8]) -> DerSignature {
        self.sign_digest(&sha2::Sha256::digest(message).into())
    }
}

impl PublicKey {
    /// Read a PEM `PUBLIC KEY` (PKIX SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, der) = decode_pem(pem)?;
        if label != PUBLIC_KEY_LABEL {
            return Err(KeyError::UnsupportedLabel { found: label, expected: "PUBLIC KEY" });
        }
        Self::from_spki_der(&der)
    }

    /// Read a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| KeyError::Malformed(format!("SubjectPublicKeyInfo: {e}")))?;
        check_algorithm(spki.algorithm.oid, spki.algorithm.parameters_oid().ok())?;
        let inner = p256::ecdsa::VerifyingKey::from_public_key_der(der)
            .map_err(|e| KeyError::Malformed(format!("P-256 public key: {e}")))?;
        Ok(Self { inner })
    }

    /// PEM `PUBLIC KEY`, LF line endings.
    pub fn to_pem(&self) -> String {
        self.inner.to_public_key_pem(LineEnding::LF).expect("SPKI encoding of a P-256 key")
    }

    /// DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.inner.to_public_key_der().expect("SPKI encoding of a P-256 key").into_vec()
    }

    /// `sha256:HEX` of the DER SubjectPublicKeyInfo: names the key in messages and as a DSSE `keyid`.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(self.to_spki_der())))
    }

    /// Whether `signature` is this key's signature of the message whose SHA-256 is `sha256`.
    pub fn verify_digest(&self, sha256: &[u8; 32], signature: &Signature) -> bool {
        self.inner.verify_prehash(sha256, signature).is_ok()
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        self.verify_digest(&sha2::Sha256::digest(message).into(), signature)
    }
}

/// Algorithm and curve checks shared by private and public keys.
fn check_algorithm(alg: ObjectIdentifier, curve: Option<ObjectIdentifier>) -> Result<(), KeyError> {
    if alg != OID_EC_PUBLIC_KEY {
        return Err(KeyError::NotEcKey { algorithm: algorithm_name(alg) });
    }
    match curve {
        Some(c) if c == OID_P256 => Ok(()),
        Some(c) => Err(KeyError::WrongCurve { found: curve_name(c) }),
        None => Err(KeyError::Malformed("EC key without a named curve".into())),
    }
}

fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA".into(),
        "1.3.101.112" => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        other => other.into(),
    }
}

fn curve_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.3.132.0.34" => "P-384 (secp384r1)".into(),
        "1.3.132.0.35" => "P-521 (secp521r1)".into(),
        "1.3.132.0.10" => "secp256k1".into(),
        "1.2.840.10045.3.1.1" => "P-192 (prime192v1)".into(),
        other => other.into(),
    }
}

/// The key block of PEM `text`: its label and DER body. An `EC PARAMETERS` block before it (what
/// `openssl ecparam -genkey` writes without `-noout`) is skipped.
fn decode_pem(text: &str) -> Result<(String, Zeroizing<Vec<u8>>), KeyError> {
    let mut rest = text;
    loop {
        let (label, body, after) = next_pem_block(rest)?;
        if label == "EC PARAMETERS" {
            rest = after;
            continue;
        }
        if body.contains(':') {
            // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`): openssl's legacy encrypted PEM.
            return Err(KeyError::UnsupportedEncryption {
                what: "format",
                found: "legacy PEM encryption".into(),
            });
        }
        let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der =
            B64.decode(b64).map_err(|e| KeyError::NotPem(format!("{label} body is not base64: {e}")))?;
        return Ok((label.to_owned(), Zeroizing::new(der)));
    }
}

/// The first PEM block of `text`: label, body, and the text after it.
fn next_pem_block(text: &str) -> Result<(&str, &str, &str), KeyError> {
    let begin = text.find("-----BEGIN ").ok_or_else(|| KeyError::NotPem("no -----BEGIN line".into()))?;
    let rest = &text[begin + "-----BEGIN ".len()..];
    let label_end = rest.find("-----").ok_or_else(|| KeyError::NotPem("unterminated BEGIN line".into()))?;
    let label = &rest[..label_end];
    let body_and_end = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let end =
        body_and_end.find(&end_marker).ok_or_else(|| KeyError::NotPem(format!("no {end_marker} line")))?;
    Ok((label, &body_and_end[..end], &body_and_end[end + end_marker.len()..]))
}

/// PEM with 64-column base64 lines, LF endings.
fn encode_pem(label: &str, body: &[u8]) -> String {
    let b64 = B64.encode(body);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[derive(Serialize, Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn scrypt_key(
    passphrase: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let params = scrypt::Params::new(log_n, r, p, 32)
        .map_err(|e| KeyError::Malformed(format!("scrypt parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(passphrase, salt, &params, key.as_mut())
        .map_err(|e| KeyError::Malformed(format!("scrypt: {e}")))?;
    Ok(key)
}

fn secretbox_seal(key: &[u8; 32], nonce: &[u8; 24], plaintext: &[u8]) -> Vec<u8> {
    use crypto_secretbox::{aead::Aead as _, KeyInit as _, XSalsa20Poly1305};
    let cipher = XSalsa20Poly1305::new(key.into());
    // XSalsa20-Poly1305 fails only for messages of more than 256 GiB.
    cipher.encrypt(nonce.into(), plaintext).expect("secretbox of a key-sized message")
}

/// Open cosign's encrypted key document (the PEM body) into the PKCS#8 DER inside.
fn decrypt_cosign(json: &[u8], passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    use crypto_secretbox::{aead::Aead as _, KeyInit as _, XSalsa20Poly1305};
    let doc: EncryptedKey = serde_json::from_slice(json)
        .map_err(|e| KeyError::Malformed(format!("encrypted key document: {e}")))?;
    if doc.kdf.name != "scrypt" {
        return Err(KeyError::UnsupportedEncryption { what: "key derivation", found: doc.kdf.name });
    }
    if doc.cipher.name != "nacl/secretbox" {
        return Err(KeyError::UnsupportedEncryption { what: "cipher", found: doc.cipher.name });
    }
    let n = doc.kdf.params.n;
    if !n.is_power_of_two() || n < 2 || n.trailing_zeros() > u32::from(SCRYPT_MAX_LOG_N) {
        return Err(KeyError::Malformed(format!(
            "scrypt N = {n} (a power of two up to 2^{SCRYPT_MAX_LOG_N})"
        )));
    }
    let b64 = |what: &str, s: &str| B64.decode(s).map_err(|e| KeyError::Malformed(format!("{what}: {e}")));
    let salt = b64("salt", &doc.kdf.salt)?;
    let nonce = b64("nonce", &doc.cipher.nonce)?;
    let ciphertext = b64("ciphertext", &doc.ciphertext)?;
    if nonce.len() != 24 {
        return Err(KeyError::Malformed(format!("secretbox nonce of {} bytes (24 expected)", nonce.len())));
    }
    let log_n = n.trailing_zeros() as u8;
    let key = scrypt_key(passphrase, &salt, log_n, doc.kdf.params.r, doc.kdf.params.p)?;
    let cipher = XSalsa20Poly1305::new((&*key).into());
    let plain = cipher
        .decrypt(nonce.as_slice().into(), ciphertext.as_slice())
        .map_err(|_| KeyError::WrongPassphrase)?;
    Ok(Zeroizing::new(plain))
}

/// Where a signing key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A PEM file.
    File(PathBuf),
    /// PEM text (e.g. from [`ENV_KEY`]).
    Pem(String),
}

impl KeySource {
    /// The key file if given, else [`ENV_KEY`] from `env` (a lookup such as `|k| std::env::var(k).ok()`).
    pub fn resolve(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, KeyError> {
        match path {
            Some(p) => Ok(Self::File(p.to_owned())),
            None => env(ENV_KEY).filter(|s| !s.trim().is_empty()).map(Self::Pem).ok_or(KeyError::NoKey),
        }
    }
}

/// The passphrase from [`ENV_PASSWORD`], else [`ENV_COSIGN_PASSWORD`].
pub fn passphrase_from_env(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    env(ENV_PASSWORD).or_else(|| env(ENV_COSIGN_PASSWORD))
}

/// Read a signing key from `source`, decrypting it with `passphrase` when it is encrypted.
pub fn load_signing_key(source: &KeySource, passphrase: Option<&[u8]>) -> Result<SigningKey, KeyError> {
    match source {
        KeySource::File(p) => SigningKey::from_pem(&fs_err::read_to_string(p)?, passphrase),
        KeySource::Pem(text) => SigningKey::from_pem(text, passphrase),
    }
}

/// Read a public key file.
pub fn load_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    PublicKey::from_pem(&fs_err::read_to_string(path)?)
}

/// The two files [`write_key_pair`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    pub private: PathBuf,
    pub public: PathBuf,
}

/// Write `key` as `PREFIX.key` (cosign's encrypted format, mode 0600) and `PREFIX.pub` (PEM, mode 0644),
/// the names `cosign generate-key-pair --output-key-prefix` uses. An existing file is an error unless
/// `overwrite`. Each file is created under a temporary name with its final mode (so the private key is
/// never readable by others, not even while it is written), synced, then renamed into place.
pub fn write_key_pair(
    key: &SigningKey,
    passphrase: &[u8],
    prefix: &Path,
    overwrite: bool,
) -> Result<KeyFiles, KeyError> {
    let with_ext = |ext: &str| {
        let mut s = prefix.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    let files = KeyFiles { private: with_ext(".key"), public: with_ext(".pub") };
    if !overwrite {
        for p in [&files.private, &files.public] {
            if p.exists() {
                return Err(KeyError::Exists(p.clone()));
            }
        }
    }
    write_file_mode(&files.private, key.to_encrypted_pem(passphrase).as_bytes(), 0o600)?;
    write_file_mode(&files.public, key.public_key().to_pem().as_bytes(), 0o644)?;
    Ok(files)
}

/// Write `data` to `path` atomically, the file created with `mode` from the start.
pub(crate) fn write_file_mode(path: &Path, data: &[u8], mode: u32) -> Result<(), std::io::Error> {
    use fs_err::os::unix::fs::OpenOptionsExt as _;
    use std::io::Write as _;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs_err::remove_file(&tmp);
    let mut f = fs_err::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    let written = f.write_all(data).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| fs_err::rename(&tmp, path)) {
        let _ = fs_err::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\n\
             MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg8hJ/vAF5BfHxExvx\n\
             ZUcGxfLhUdviE7gd0vXhoasbxryhRANCAAToqRgFJkIbUQ4WcIHk+ZMEJp5nfiNf\n\
             UEcTrO7BmwsseJ6DN04uS9kVL6ITys2ScjiwoAmrHKQOqdVMEUozgoT3\n\
             -----END PRIVATE KEY-----\n",
            None,
        )
        .unwrap()
    }

    #[test]
    fn encrypted_key_round_trips_with_its_passphrase_only() {
        let k = key();
        let pem = k.to_encrypted_pem_with(b"hunter2", &[7; 32], &[9; 24]);
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        let back = SigningKey::from_pem(&pem, Some(b"hunter2")).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        assert!(matches!(SigningKey::from_pem(&pem, Some(b"hunter3")), Err(KeyError::WrongPassphrase)));
        assert!(matches!(SigningKey::from_pem(&pem, None), Err(KeyError::PassphraseRequired)));
        // The document is cosign's: scrypt N=32768 r=8 p=1, nacl/secretbox, 24-byte nonce.
        let (_, body) = decode_pem(&pem).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&body[..]).unwrap();
        assert_eq!(doc["kdf"]["params"], serde_json::json!({"N": 32768, "r": 8, "p": 1}));
        assert_eq!(doc["cipher"]["name"], "nacl/secretbox");
        assert_eq!(B64.decode(doc["cipher"]["nonce"].as_str().unwrap()).unwrap(), [9; 24]);
        // secretbox: 16-byte tag + the PKCS#8 DER.
        let ct = B64.decode(doc["ciphertext"].as_str().unwrap()).unwrap();
        assert_eq!(ct.len(), 16 + k.inner.to_pkcs8_der().unwrap().as_bytes().len());
    }

    #[test]
    fn fresh_encryptions_differ_but_open_to_the_same_key() {
        let k = SigningKey::generate();
        let (a, b) = (k.to_encrypted_pem(b"pw"), k.to_encrypted_pem(b"pw"));
        assert_ne!(a, b, "salt and nonce are random");
        assert_eq!(SigningKey::from_pem(&b, Some(b"pw")).unwrap().public_key(), k.public_key());
    }

    #[test]
    fn public_key_pem_round_trips_and_signatures_verify() {
        let k = key();
        let p = PublicKey::from_pem(&k.public_key().to_pem()).unwrap();
        let sig = k.sign(b"hello");
        let sig = Signature::from_der(sig.as_bytes()).unwrap();
        assert!(p.verify(b"hello", &sig));
        assert!(!p.verify(b"hellp", &sig));
        assert!(!SigningKey::generate().public_key().verify(b"hello", &sig));
    }

    #[test]
    fn other_pem_blocks_and_garbage_are_not_keys() {
        assert!(matches!(SigningKey::from_pem("hello", None), Err(KeyError::NotPem(_))));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(SigningKey::from_pem(cert, None), Err(KeyError::UnsupportedLabel { .. })));
        assert!(matches!(PublicKey::from_pem(cert), Err(KeyError::UnsupportedLabel { .. })));
        let bad = "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n";
        assert!(matches!(SigningKey::from_pem(bad, None), Err(KeyError::NotPem(_))));
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(SigningKey::from_pem(junk, None), Err(KeyError::Malformed(_))));
    }

    #[test]
    fn key_source_prefers_the_file_then_the_environment() {
        let env = |k: &str| match k {
            ENV_KEY => Some("PEM".to_owned()),
            ENV_COSIGN_PASSWORD => Some("cosign-pw".to_owned()),
            _ => None,
        };
        assert_eq!(
            KeySource::resolve(Some(Path::new("k.key")), env).unwrap(),
            KeySource::File("k.key".into())
        );
        assert_eq!(KeySource::resolve(None, env).unwrap(), KeySource::Pem("PEM".into()));
        assert!(matches!(KeySource::resolve(None, |_| None), Err(KeyError::NoKey)));
        assert_eq!(passphrase_from_env(env).as_deref(), Some("cosign-pw"));
        let both = |k: &str| Some(k.to_owned());
        assert_eq!(passphrase_from_env(both).as_deref(), Some(ENV_PASSWORD));
    }
}
