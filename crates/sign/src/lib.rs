//! kiln-sign: keys, signatures and their verification for kiln's build outputs, in formats that tools kiln
//! did not write check offline (`openssl dgst`, `cosign verify-blob`, `cosign verify`, in-toto/DSSE
//! verifiers).
//!
//! * [`keys`]: ECDSA P-256 key pairs, PEM public keys, cosign's encrypted private key format, openssl's
//!   private keys, key sources (file, or `KILN_SIGNING_KEY` + `KILN_SIGNING_PASSWORD` in CI);
//! * [`blob`]: detached file signatures as `cosign sign-blob` writes them (base64 DER ECDSA over SHA-256);
//! * [`dsse`]: DSSE v1 envelopes for in-toto attestations (SBOM, provenance);
//! * [`cosign`]: the OCI image's signature in cosign's format (tag `sha256-HEX.sig` and OCI 1.1 referrer)
//!   inside its layout;
//! * [`paths`]: where signatures live in an output folder;
//! * [`sign`]: signing an output folder ([`sign_dir`], or [`sign_images`] then [`sign_files`]);
//!   [`verify`]: checking one ([`verify_dir`]).

pub mod blob;
pub mod cosign;
pub mod dsse;
pub mod keys;
pub mod paths;
pub mod provenance;
pub mod sbom;
pub mod sign;
pub mod verify;

pub use dsse::{dsse_sign, dsse_verify, DsseError, Envelope};
pub use keys::{KeyError, KeySource, PublicKey, SigningKey};
pub use sign::{sign_dir, sign_files, sign_images, SignError, SignOptions, SignReport};
pub use verify::{verify_dir, VerifyError, VerifyReport};
