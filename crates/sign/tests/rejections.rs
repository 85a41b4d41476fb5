//! `verify_dir` rejects every way a signed output can be wrong, each with its own error naming the file.

mod support;

use kiln_blueprint::manifest::ArtifactKind;
use kiln_sign::{
    cosign::{self, CosignError},
    sign_dir, verify_dir, PublicKey, SignError, SignOptions, SigningKey, VerifyError,
};
use support::{flip_byte, oci_layer_blobs, output, Output};

/// A signed output and its key.
fn signed() -> (Output, SigningKey) {
    let out = output();
    let key = SigningKey::generate();
    sign_dir(&out.dir, &key, &SignOptions::default()).unwrap();
    verify_dir(&out.dir, &key.public_key(), None).expect("the untouched output verifies");
    (out, key)
}

fn verify(out: &Output, key: &PublicKey) -> VerifyError {
    verify_dir(&out.dir, key, None).expect_err("must be rejected")
}

#[test]
fn a_flipped_byte_in_the_disk_is_a_digest_mismatch_naming_it() {
    let (out, key) = signed();
    flip_byte(&out.dir.join("disk.raw"), 1_234_567);
    let err = verify(&out, &key.public_key());
    let VerifyError::DigestMismatch { path, expected, found } = &err else { panic!("{err}") };
    assert_eq!(path, "disk.raw");
    assert_ne!(expected, found);
    assert_eq!(
        err.to_string(),
        format!("disk.raw: sha256 {found} does not match manifest.json ({expected})")
    );
}

#[test]
fn a_flipped_byte_in_an_oci_layer_is_caught_below_index_json() {
    let (out, key) = signed();
    let layers = oci_layer_blobs(&out.dir);
    flip_byte(&layers[0], 100);
    let err = verify(&out, &key.public_key());
    let VerifyError::OciBlobDigest { path, .. } = &err else { panic!("{err}") };
    assert!(path.starts_with("oci/blobs/sha256/"), "{path}");
    assert!(err.to_string().contains("does not match its OCI descriptor"), "{err}");
}

#[test]
fn a_changed_report_is_caught() {
    let (out, key) = signed();
    flip_byte(&out.dir.join("report/certification.json"), 12);
    let err = verify(&out, &key.public_key());
    assert!(
        matches!(&err, VerifyError::DigestMismatch { path, .. } if path == "report/certification.json"),
        "{err}"
    );
}

#[test]
fn swapped_artifacts_are_named_as_swapped() {
    let (out, key) = signed();
    let (raw, qcow2) = (out.dir.join("disk.raw"), out.dir.join("disk.qcow2"));
    let tmp = out.dir.join("swap");
    std::fs::rename(&raw, &tmp).unwrap();
    std::fs::rename(&qcow2, &raw).unwrap();
    std::fs::rename(&tmp, &qcow2).unwrap();
    let err = verify(&out, &key.public_key());
    let VerifyError::Swapped { path, other, .. } = &err else { panic!("{err}") };
    assert_eq!((path.as_str(), other.as_str()), ("disk.raw", "disk.qcow2"));
    assert!(err.to_string().contains("artifacts swapped"), "{err}");
}

#[test]
fn a_missing_artifact_is_named() {
    let (out, key) = signed();
    std::fs::remove_file(out.dir.join("disk.qcow2")).unwrap();
    let err = verify(&out, &key.public_key());
    assert!(matches!(&err, VerifyError::ArtifactMissing { path } if path == "disk.qcow2"), "{err}");
    assert_eq!(err.to_string(), "disk.qcow2: listed in manifest.json but missing");
}

#[test]
fn another_key_is_a_wrong_key() {
    let (out, _) = signed();
    let other = SigningKey::generate().public_key();
    let err = verify(&out, &other);
    assert!(matches!(&err, VerifyError::WrongKey { file, .. } if file == "manifest.json"), "{err}");
    assert_eq!(
        err.to_string(),
        format!("signature of manifest.json does not verify with key {}", other.fingerprint())
    );
}

#[test]
fn a_truncated_manifest_signature_is_not_a_signature() {
    let (out, key) = signed();
    let sig = out.dir.join("signatures/manifest.json.sig");
    let text = std::fs::read(&sig).unwrap();
    std::fs::write(&sig, &text[..40]).unwrap();
    let err = verify(&out, &key.public_key());
    assert!(matches!(&err, VerifyError::BadSignature { file, .. } if file == "manifest.json"), "{err}");
    assert!(err.to_string().starts_with("signatures/manifest.json.sig is not a valid signature"), "{err}");
    assert!(err.to_string().contains("bad base64/DER"), "{err}");
}

#[test]
fn a_garbled_artifact_signature_is_not_a_signature() {
    let (out, key) = signed();
    let sig = out.dir.join("signatures/disk.raw.sig");
    let mut text = std::fs::read(&sig).unwrap();
    text[10] = b'*';
    std::fs::write(&sig, &text).unwrap();
    let err = verify(&out, &key.public_key());
    assert!(matches!(&err, VerifyError::BadSignature { file, .. } if file == "disk.raw"), "{err}");
}

#[test]
fn a_well_formed_but_wrong_artifact_signature_does_not_verify() {
    let (out, key) = signed();
    // The signature of another file, in the right format.
    std::fs::copy(out.dir.join("signatures/disk.qcow2.sig"), out.dir.join("signatures/disk.raw.sig"))
        .unwrap();
    let err = verify(&out, &key.public_key());
    assert!(matches!(&err, VerifyError::WrongKey { file, .. } if file == "disk.raw"), "{err}");
}

#[test]
fn a_missing_signature_is_named() {
    let (out, key) = signed();
    std::fs::remove_file(out.dir.join("signatures/report/junit.xml.sig")).unwrap();
    let err = verify(&out, &key.public_key());
    assert!(
        matches!(&err, VerifyError::SignatureMissing { file, .. } if file == "report/junit.xml"),
        "{err}"
    );
    assert_eq!(err.to_string(), "report/junit.xml is not signed: signatures/report/junit.xml.sig is missing");
}

#[test]
fn a_manifest_edited_after_signing_is_told_apart_from_a_wrong_key() {
    let (out, key) = signed();
    let path = out.dir.join("manifest.json");
    let text =
        std::fs::read_to_string(&path).unwrap().replace("\"version\": \"1.0.0\"", "\"version\": \"1.0.1\"");
    std::fs::write(&path, text).unwrap();
    let err = verify(&out, &key.public_key());
    assert!(matches!(err, VerifyError::ManifestEdited { .. }), "{err}");
    assert!(err.to_string().starts_with("manifest.json was changed after it was signed"), "{err}");
}

#[test]
fn a_manifest_whose_digest_was_edited_to_match_a_changed_disk_is_still_rejected() {
    let (out, key) = signed();
    flip_byte(&out.dir.join("disk.qcow2"), 5);
    let mut m = kiln_blueprint::manifest::Manifest::read(&out.dir).unwrap();
    let bytes = std::fs::read(out.dir.join("disk.qcow2")).unwrap();
    let a = m.artifacts.iter_mut().find(|a| a.path == "disk.qcow2").unwrap();
    a.sha256 = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
    m.write(&out.dir).unwrap();
    let err = verify(&out, &key.public_key());
    assert!(matches!(err, VerifyError::ManifestEdited { .. }), "{err}");
}

#[test]
fn an_unsigned_output_is_not_verified() {
    let out = output();
    let err = verify(&out, &SigningKey::generate().public_key());
    assert!(matches!(&err, VerifyError::SignatureMissing { file, .. } if file == "manifest.json"), "{err}");
}

#[test]
fn an_oci_image_without_its_cosign_signature_is_rejected() {
    let (out, key) = signed();
    // Drop the tagged signature from the layout (as if it had never been pushed).
    let root = out.dir.join("oci");
    let index = std::fs::read_to_string(root.join("index.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&index).unwrap();
    v["manifests"].as_array_mut().unwrap().retain(|e| {
        !e["annotations"]["org.opencontainers.image.ref.name"].as_str().is_some_and(|t| t.ends_with(".sig"))
    });
    std::fs::write(root.join("index.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    let err = cosign::verify_layout(&root, &key.public_key(), None).unwrap_err();
    assert!(matches!(err, CosignError::Unsigned { what: "tag sha256-….sig", .. }), "{err}");
    // manifest.json records the image manifest, which is untouched: verify_dir gets as far as the
    // cosign signature, and refuses the layout there.
    let err = verify(&out, &key.public_key());
    assert!(
        matches!(&err, VerifyError::Cosign { artifact, source: CosignError::Unsigned { .. } } if artifact == "oci"),
        "{err}"
    );
}

/// `index.json` of the output's layout, parsed.
fn read_index(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.dir.join("oci/index.json")).unwrap()).unwrap()
}

fn write_index(out: &Output, index: &serde_json::Value) {
    std::fs::write(out.dir.join("oci/index.json"), serde_json::to_vec(index).unwrap()).unwrap();
}

/// The OCI artifact's digest as manifest.json records it.
fn recorded_image(out: &Output) -> String {
    let m = kiln_blueprint::manifest::Manifest::read(&out.dir).unwrap();
    m.artifacts.into_iter().find(|a| a.kind == ArtifactKind::Oci).unwrap().sha256
}

/// Make the layout's tagged image another one: a copy of its manifest with one more annotation, written as
/// a blob and named by the image's `index.json` entry. Every blob `index.json` reaches stays intact, and
/// the recorded manifest blob stays in place. Returns the new image's digest.
fn repoint_image(out: &Output) -> String {
    let recorded = recorded_image(out);
    let blobs = out.dir.join("oci/blobs/sha256");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&recorded[7..])).unwrap()).unwrap();
    manifest["annotations"] = serde_json::json!({"org.example.replaced": "yes"});
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    std::fs::write(blobs.join(&hex), &bytes).unwrap();
    let mut index = read_index(out);
    let entry =
        index["manifests"].as_array_mut().unwrap().iter_mut().find(|e| e["digest"] == recorded.as_str());
    let entry = entry.expect("index.json lists the recorded image");
    entry["digest"] = format!("sha256:{hex}").into();
    entry["size"] = bytes.len().into();
    write_index(out, &index);
    format!("sha256:{hex}")
}

#[test]
fn a_layout_whose_index_no_longer_lists_the_recorded_image_is_rejected() {
    let (out, key) = signed();
    let recorded = recorded_image(&out);
    let other = repoint_image(&out);
    let err = verify(&out, &key.public_key());
    let VerifyError::OciImageNotListed { path, layout, digest, listed } = &err else { panic!("{err}") };
    assert_eq!(
        (path.as_str(), layout.as_str(), digest.as_str()),
        ("oci/index.json", "oci", recorded.as_str())
    );
    assert!(listed.contains(&other), "{listed}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "oci/index.json does not list the image manifest {recorded} that manifest.json records for oci"
        )),
        "{text}"
    );

    // Nor is such a layout signed.
    let out = output();
    repoint_image(&out);
    let err = sign_dir(&out.dir, &SigningKey::generate(), &SignOptions::default()).unwrap_err();
    assert!(matches!(err, SignError::NotAsBuilt(VerifyError::OciImageNotListed { .. })), "{err}");
    assert!(!out.dir.join("signatures").exists());
}

#[test]
fn a_layout_listing_no_image_at_all_is_rejected() {
    let (out, key) = signed();
    let mut index = read_index(&out);
    index["manifests"] = serde_json::json!([]);
    write_index(&out, &index);
    let err = verify(&out, &key.public_key());
    assert!(matches!(&err, VerifyError::OciImageNotListed { listed, .. } if listed == "nothing"), "{err}");
}

#[test]
fn a_changed_or_missing_image_manifest_blob_is_caught() {
    let (out, key) = signed();
    let blob = out.dir.join("oci/blobs/sha256").join(&recorded_image(&out)[7..]);
    flip_byte(&blob, 20);
    let err = verify(&out, &key.public_key());
    assert!(matches!(&err, VerifyError::DigestMismatch { path, .. } if path == "oci"), "{err}");

    std::fs::remove_file(&blob).unwrap();
    let err = verify(&out, &key.public_key());
    let VerifyError::OciBlobMissing { path } = &err else { panic!("{err}") };
    assert_eq!(out.dir.join(path), blob);
}

#[test]
fn an_oci_signature_by_another_key_or_for_another_reference_is_rejected() {
    let (out, key) = signed();
    let root = out.dir.join("oci");
    let other = SigningKey::generate().public_key();
    let err = cosign::verify_layout(&root, &other, None).unwrap_err();
    assert!(matches!(err, CosignError::WrongKey { .. }), "{err}");
    let err = cosign::verify_layout(&root, &key.public_key(), Some("registry.example/other")).unwrap_err();
    assert!(matches!(err, CosignError::Payload { .. }), "{err}");
    assert!(err.to_string().contains("registry.example/other"), "{err}");
}

#[test]
fn signing_refuses_an_output_that_is_not_as_built() {
    let out = output();
    flip_byte(&out.dir.join("disk.raw"), 7);
    let err = sign_dir(&out.dir, &SigningKey::generate(), &SignOptions::default()).unwrap_err();
    assert!(matches!(err, SignError::NotAsBuilt(VerifyError::DigestMismatch { .. })), "{err}");
    assert!(!out.dir.join("signatures").exists());
}
