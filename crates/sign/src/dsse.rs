//! DSSE v1 envelopes (Dead Simple Signing Envelope), the wrapper of in-toto statements such as the SBOM
//! and provenance attestations, as `cosign attest-blob` and in-toto tools read them.
//!
//! The signature is ECDSA P-256 over SHA-256 of the pre-authentication encoding
//! `PAE = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body` (lengths in ASCII decimal), DER-encoded and
//! base64'd in the envelope `{"payloadType", "payload" (base64), "signatures": [{"keyid", "sig"}]}`.

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use p256::ecdsa::Signature;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SigningKey};

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// What the payload is, e.g. `application/vnd.in-toto+json`.
    pub payload_type: String,
    /// The payload, base64 (standard alphabet, padded).
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The signer's key, informational only (kiln writes the key's fingerprint, `sha256:HEX` of its
    /// SubjectPublicKeyInfo); verification never trusts it.
    #[serde(default)]
    pub keyid: String,
    /// base64 of the DER ECDSA signature over the PAE.
    pub sig: String,
}

/// Why an envelope does not verify.
#[derive(Debug, thiserror::Error)]
pub enum DsseError {
    #[error("the envelope's payload is not base64: {0}")]
    Payload(base64::DecodeError),
    #[error("the envelope has no signature")]
    Unsigned,
    #[error("the envelope's signature is not a valid signature (bad base64/DER)")]
    Malformed,
    #[error("no signature of the envelope verifies with key {key}")]
    WrongKey { key: String },
    #[error("the envelope's payload type is `{found}`, expected `{expected}`")]
    PayloadType { expected: String, found: String },
}

/// The pre-authentication encoding DSSE signs.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Sign `payload` of type `payload_type` into an envelope with one signature.
pub fn dsse_sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Envelope {
    let sig = key.sign(&pae(payload_type, payload));
    Envelope {
        payload_type: payload_type.to_owned(),
        payload: B64.encode(payload),
        signatures: vec![EnvelopeSignature {
            keyid: key.public_key().fingerprint(),
            sig: B64.encode(sig.as_bytes()),
        }],
    }
}

/// Check that some signature of `envelope` is `key`'s, and return the payload it covers. The payload
/// type is covered by the signature; compare it with [`Envelope::payload_type`] or use
/// [`dsse_verify_type`].
pub fn dsse_verify(envelope: &Envelope, key: &PublicKey) -> Result<Vec<u8>, DsseError> {
    let payload = B64.decode(&envelope.payload).map_err(DsseError::Payload)?;
    if envelope.signatures.is_empty() {
        return Err(DsseError::Unsigned);
    }
    let message = pae(&envelope.payload_type, &payload);
    let mut any_well_formed = false;
    for s in &envelope.signatures {
        let Some(sig) = B64.decode(&s.sig).ok().and_then(|der| Signature::from_der(&der).ok()) else {
            continue;
        };
        any_well_formed = true;
        if key.verify(&message, &sig) {
            return Ok(payload);
        }
    }
    if any_well_formed {
        Err(DsseError::WrongKey { key: key.fingerprint() })
    } else {
        Err(DsseError::Malformed)
    }
}

/// [`dsse_verify`], and the payload type must be `payload_type`.
pub fn dsse_verify_type(
    envelope: &Envelope,
    key: &PublicKey,
    payload_type: &str,
) -> Result<Vec<u8>, DsseError> {
    let payload = dsse_verify(envelope, key)?;
    if envelope.payload_type != payload_type {
        return Err(DsseError::PayloadType {
            expected: payload_type.to_owned(),
            found: envelope.payload_type.clone(),
        });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATEMENT: &str = "application/vnd.in-toto+json";

    #[test]
    fn pae_matches_the_specification_example() {
        // From the DSSE protocol description: PAE("http://example.com/HelloWorld", "hello world").
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn envelope_verifies_with_its_key_and_round_trips_as_json() {
        let key = SigningKey::generate();
        let env = dsse_sign(STATEMENT, b"{\"_type\":\"x\"}", &key);
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["payloadType"], STATEMENT);
        assert_eq!(json["payload"], B64.encode(b"{\"_type\":\"x\"}"));
        assert_eq!(json["signatures"][0]["keyid"], key.public_key().fingerprint());
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(dsse_verify_type(&back, &key.public_key(), STATEMENT).unwrap(), b"{\"_type\":\"x\"}");
        assert!(matches!(
            dsse_verify_type(&back, &key.public_key(), "text/plain"),
            Err(DsseError::PayloadType { .. })
        ));
    }

    #[test]
    fn tampering_and_other_keys_are_rejected() {
        let key = SigningKey::generate();
        let env = dsse_sign(STATEMENT, b"payload", &key);
        let other = SigningKey::generate().public_key();
        assert!(matches!(dsse_verify(&env, &other), Err(DsseError::WrongKey { .. })));

        let mut changed = env.clone();
        changed.payload = B64.encode(b"payloaD");
        assert!(matches!(dsse_verify(&changed, &key.public_key()), Err(DsseError::WrongKey { .. })));

        // The type is signed too.
        let mut retyped = env.clone();
        retyped.payload_type = "text/plain".into();
        assert!(matches!(dsse_verify(&retyped, &key.public_key()), Err(DsseError::WrongKey { .. })));

        let mut garbled = env.clone();
        garbled.signatures[0].sig = "not base64!".into();
        assert!(matches!(dsse_verify(&garbled, &key.public_key()), Err(DsseError::Malformed)));

        let mut unsigned = env;
        unsigned.signatures.clear();
        assert!(matches!(dsse_verify(&unsigned, &key.public_key()), Err(DsseError::Unsigned)));
    }

    #[test]
    fn the_signature_is_over_the_pae_as_an_outside_verifier_computes_it() {
        let key = SigningKey::generate();
        let env = dsse_sign("t", b"body", &key);
        let der = B64.decode(&env.signatures[0].sig).unwrap();
        let sig = Signature::from_der(&der).unwrap();
        assert!(key.public_key().verify(b"DSSEv1 1 t 4 body", &sig));
    }
}
