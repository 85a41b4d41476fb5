//! kiln-sign: keys, signatures and their verification for kiln's build outputs.
//!
//! * [`keys`]: ECDSA P-256 key pairs, PEM public keys, cosign's encrypted private key format, key sources
//!   (file, or `KILN_SIGNING_KEY` + `KILN_SIGNING_PASSWORD` in CI);
//! * [`dsse`]: DSSE v1 envelopes for in-toto attestations (SBOM, provenance).

pub mod dsse;
pub mod keys;

pub use dsse::{dsse_sign, dsse_verify, DsseError, Envelope};
pub use keys::{KeyError, KeySource, PublicKey, SigningKey};
