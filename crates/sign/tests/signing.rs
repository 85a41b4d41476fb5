//! Keys, signing and verification of an output folder, checked with tools kiln did not write: the openssl
//! command line for the blob signatures and keys, and the `sigstore` crate (OpenSSL backend) for cosign's
//! encrypted key format and the OCI image's cosign signature.

mod support;

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use kiln_blueprint::manifest::{ArtifactKind, Manifest};
use kiln_sign::{
    blob::parse_signature,
    cosign::{self, SIGNATURE_ANNOTATION, SIGNATURE_ARTIFACT_TYPE, SIMPLE_SIGNING_MEDIA_TYPE},
    keys::{self, write_key_pair, KeyError, KeySource, ENV_KEY, ENV_PASSWORD},
    paths::signature_file,
    sign_dir, sign_files, sign_images, verify_dir, PublicKey, SignOptions, SigningKey,
};
use sigstore::crypto::{signing_key::SigStoreKeyPair, CosignVerificationKey, Signature, SigningScheme};
use support::{openssl_verify, output, sh};

const PASSPHRASE: &[u8] = b"correct horse battery staple";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_writes_an_encrypted_0600_private_key_and_a_pem_public_key() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let files = write_key_pair(&key, PASSPHRASE, &tmp.path().join("cosign"), false).unwrap();
    assert_eq!(files.private, tmp.path().join("cosign.key"));
    assert_eq!(mode(&files.private), 0o600);
    assert_eq!(mode(&files.public), 0o644);
    let private = std::fs::read_to_string(&files.private).unwrap();
    assert!(private.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"), "{private}");

    let loaded = keys::load_signing_key(&KeySource::File(files.private.clone()), Some(PASSPHRASE)).unwrap();
    assert_eq!(loaded.public_key(), key.public_key());
    assert_eq!(keys::load_public_key(&files.public).unwrap(), key.public_key());
    assert!(matches!(
        keys::load_signing_key(&KeySource::File(files.private.clone()), Some(b"wrong")),
        Err(KeyError::WrongPassphrase)
    ));

    // No silent overwrite; an overwrite of a world-readable file still leaves a 0600 key.
    assert!(matches!(
        write_key_pair(&key, PASSPHRASE, &tmp.path().join("cosign"), false),
        Err(KeyError::Exists(_))
    ));
    std::fs::set_permissions(&files.private, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_key_pair(&key, PASSPHRASE, &tmp.path().join("cosign"), true).unwrap();
    assert_eq!(mode(&files.private), 0o600);
    // Nothing left behind but the two keys.
    let mut names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cosign.key", "cosign.pub"]);

    // openssl reads the public key.
    let (ok, text) =
        sh(&format!("openssl pkey -pubin -in '{}' -noout -text", files.public.display()), tmp.path());
    assert!(ok && text.contains("prime256v1"), "{text}");
}

#[test]
fn key_comes_from_the_environment_in_ci() {
    let key = SigningKey::generate();
    let pem = key.to_encrypted_pem(PASSPHRASE);
    let env = |k: &str| match k {
        ENV_KEY => Some(pem.clone()),
        ENV_PASSWORD => Some(String::from_utf8(PASSPHRASE.to_vec()).unwrap()),
        _ => None,
    };
    let source = KeySource::resolve(None, env).unwrap();
    let pass = keys::passphrase_from_env(env).unwrap();
    assert_eq!(
        keys::load_signing_key(&source, Some(pass.as_bytes())).unwrap().public_key(),
        key.public_key()
    );
}

#[test]
fn sigstore_reads_kiln_keys_and_kiln_reads_sigstore_keys() {
    // kiln → sigstore: cosign's encrypted format as another implementation reads it.
    let key = SigningKey::generate();
    let theirs = SigStoreKeyPair::from_encrypted_pem(key.to_encrypted_pem(PASSPHRASE).as_bytes(), PASSPHRASE)
        .expect("sigstore opens kiln's encrypted key");
    assert_eq!(PublicKey::from_pem(&theirs.public_key_to_pem().unwrap()).unwrap(), key.public_key());
    assert!(
        SigStoreKeyPair::from_encrypted_pem(key.to_encrypted_pem(PASSPHRASE).as_bytes(), b"nope").is_err()
    );

    // sigstore → kiln: a key sigstore generated and encrypted, and a signature it made.
    let signer = SigningScheme::ECDSA_P256_SHA256_ASN1.create_signer().unwrap();
    let pair = signer.to_sigstore_keypair().unwrap();
    let pem = pair.private_key_to_encrypted_pem(PASSPHRASE).unwrap();
    let ours = SigningKey::from_pem(&pem, Some(PASSPHRASE)).expect("kiln opens sigstore's encrypted key");
    let public = PublicKey::from_pem(&pair.public_key_to_pem().unwrap()).unwrap();
    assert_eq!(ours.public_key(), public);
    let sig = signer.sign(b"message").unwrap();
    let sig = parse_signature(B64.encode(sig).as_bytes()).unwrap();
    assert!(public.verify(b"message", &sig));
}

#[test]
fn openssl_verifies_every_signature_of_a_signed_output() {
    let out = output();
    let key = SigningKey::generate();
    let report = sign_dir(&out.dir, &key, &SignOptions::default()).unwrap();
    let public = out.dir.parent().unwrap().join("key.pub");
    std::fs::write(&public, key.public_key().to_pem()).unwrap();

    let manifest = Manifest::read(&out.dir).unwrap();
    let mut files: Vec<String> = manifest.artifacts.iter().map(|a| a.digested_file()).collect();
    files.push("manifest.json".into());
    assert_eq!(report.signatures.len(), files.len());
    assert_eq!(report.signatures.last().map(String::as_str), Some("signatures/manifest.json.sig"));
    for file in &files {
        let sig = out.dir.join(signature_file(file));
        let text = std::fs::read(&sig).unwrap();
        assert!(!text.contains(&b'\n'), "{file}: one line, as cosign sign-blob writes");
        let (ok, msg) = openssl_verify(&public, &sig, &out.dir.join(file));
        assert!(ok && msg.contains("Verified OK"), "{file}: {msg}");
    }
    // And a changed file does not verify with openssl either.
    support::flip_byte(&out.dir.join("report/junit.xml"), 3);
    let (ok, msg) = openssl_verify(
        &public,
        &out.dir.join("signatures/report/junit.xml.sig"),
        &out.dir.join("report/junit.xml"),
    );
    assert!(!ok && msg.contains("Verification failure"), "{msg}");
}

#[test]
fn a_signed_output_verifies_and_signing_is_reproducible() {
    let out = output();
    let unsigned = Manifest::read(&out.dir).unwrap();
    let key = SigningKey::generate();
    let first = sign_dir(&out.dir, &key, &SignOptions::default()).unwrap();
    let report = verify_dir(&out.dir, &key.public_key(), Some("debian-minimal")).unwrap();
    assert_eq!(report.name, "debian-minimal");
    assert_eq!(report.key, key.public_key().fingerprint());
    assert_eq!(report.artifacts.len(), 6);
    assert_eq!(report.images, first.images);
    assert_eq!(report.signatures, {
        let mut s = first.signatures.clone();
        s.rotate_right(1);
        s
    });

    // The manifest still records the image manifest it recorded before signing (the image the cosign
    // signature names), and its signature file is named after it.
    let m = Manifest::read(&out.dir).unwrap();
    let oci = m.artifacts.iter().find(|a| a.kind == ArtifactKind::Oci).unwrap();
    assert_eq!(Some(oci), unsigned.artifacts.iter().find(|a| a.kind == ArtifactKind::Oci));
    assert_eq!(oci.sha256, first.images[0].digest);
    let blob = std::fs::read(out.dir.join(oci.digested_file())).unwrap();
    assert_eq!(oci.sha256, format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&blob))));
    assert_eq!(oci.size, blob.len() as u64);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.dir.join("oci/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 3, "the image, its signature tag and referrer");
    assert!(first.signatures.contains(&format!("signatures/oci/blobs/sha256/{}.sig", &oci.sha256[7..])));

    // Signing again with the same key changes nothing: no new signature manifests pile up.
    let snapshot = |d: &Path| {
        let mut files = Vec::new();
        let mut stack = vec![d.to_owned()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap().path();
                if e.is_dir() {
                    stack.push(e);
                } else {
                    files.push((e.strip_prefix(d).unwrap().to_owned(), std::fs::read(&e).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    let before = snapshot(&out.dir);
    let again = sign_dir(&out.dir, &key, &SignOptions::default()).unwrap();
    assert_eq!(again, first);
    assert_eq!(snapshot(&out.dir), before);
}

#[test]
fn openssl_made_keys_sign_and_verify() {
    let out = output();
    let work = out.dir.parent().unwrap();
    let (ok, msg) = sh(
        "openssl ecparam -genkey -name prime256v1 -noout -out ec.pem && \
         openssl pkcs8 -topk8 -nocrypt -in ec.pem -out pkcs8.pem && \
         openssl ec -in ec.pem -pubout -out ec.pub && \
         openssl ecparam -genkey -name prime256v1 -out with-params.pem",
        work,
    );
    assert!(ok, "{msg}");
    let sec1 = std::fs::read_to_string(work.join("ec.pem")).unwrap();
    assert!(sec1.contains("BEGIN EC PRIVATE KEY"));
    let from_sec1 = SigningKey::from_pem(&sec1, None).unwrap();
    let from_pkcs8 =
        SigningKey::from_pem(&std::fs::read_to_string(work.join("pkcs8.pem")).unwrap(), None).unwrap();
    let public = keys::load_public_key(&work.join("ec.pub")).unwrap();
    assert_eq!(from_sec1.public_key(), public);
    assert_eq!(from_pkcs8.public_key(), public);
    // Without -noout, openssl writes an EC PARAMETERS block first.
    let with_params = std::fs::read_to_string(work.join("with-params.pem")).unwrap();
    assert!(with_params.starts_with("-----BEGIN EC PARAMETERS-----"), "{with_params}");
    SigningKey::from_pem(&with_params, None).unwrap();

    sign_dir(&out.dir, &from_pkcs8, &SignOptions::default()).unwrap();
    verify_dir(&out.dir, &public, None).unwrap();
    let (ok, msg) = openssl_verify(
        &work.join("ec.pub"),
        &out.dir.join("signatures/manifest.json.sig"),
        &out.dir.join("manifest.json"),
    );
    assert!(ok, "{msg}");

    // A signature openssl made verifies with kiln.
    let (ok, msg) = sh("openssl dgst -sha256 -sign ec.pem out/disk.qcow2 | base64 -w0 > qcow2.sig", work);
    assert!(ok, "{msg}");
    let sig = parse_signature(&std::fs::read(work.join("qcow2.sig")).unwrap()).unwrap();
    assert!(public.verify(&std::fs::read(out.dir.join("disk.qcow2")).unwrap(), &sig));
}

#[test]
fn keys_on_other_curves_or_of_other_algorithms_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, msg) = sh(
        "openssl ecparam -genkey -name secp384r1 -noout -out p384.pem && \
         openssl pkcs8 -topk8 -nocrypt -in p384.pem -out p384.pk8 && \
         openssl ec -in p384.pem -pubout -out p384.pub && \
         openssl genpkey -algorithm ed25519 -out ed.pem",
        tmp.path(),
    );
    assert!(ok, "{msg}");
    let read = |n: &str| std::fs::read_to_string(tmp.path().join(n)).unwrap();
    for (file, result) in [
        ("p384.pem", SigningKey::from_pem(&read("p384.pem"), None).map(|_| ())),
        ("p384.pk8", SigningKey::from_pem(&read("p384.pk8"), None).map(|_| ())),
        ("p384.pub", PublicKey::from_pem(&read("p384.pub")).map(|_| ())),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, KeyError::WrongCurve { .. }), "{file}: {err}");
        assert!(err.to_string().contains("P-384"), "{err}");
    }
    let err = SigningKey::from_pem(&read("ed.pem"), None).unwrap_err();
    assert!(matches!(err, KeyError::NotEcKey { .. }), "{err}");
}

#[test]
fn the_oci_signature_verifies_with_sigstore_and_has_cosigns_shape() {
    let out = output();
    let key = SigningKey::generate();
    let report =
        sign_dir(&out.dir, &key, &SignOptions { reference: Some("registry.example/debian-minimal".into()) })
            .unwrap();
    let [image] = report.images.as_slice() else { panic!("one image: {:?}", report.images) };
    let layout = kiln_oci::Layout::open(&out.dir.join("oci")).unwrap();
    let built = layout.find("1.0.0").unwrap();
    assert_eq!(
        image.digest,
        built.manifest_descriptor.digest().to_string(),
        "the built image is the signed one"
    );

    let verifier = CosignVerificationKey::from_pem(
        key.public_key().to_pem().as_bytes(),
        &SigningScheme::ECDSA_P256_SHA256_ASN1,
    )
    .unwrap();
    let blob = |digest: &str| std::fs::read(out.dir.join("oci/blobs/sha256").join(&digest[7..])).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.dir.join("oci/index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3);

    // cosign's tag scheme.
    let tag = format!("sha256-{}.sig", &image.digest[7..]);
    let tagged = entries
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag.as_str())
        .expect("the sha256-HEX.sig tag");
    // OCI 1.1 referrer.
    let referrer = entries.iter().find(|e| e["artifactType"] == SIGNATURE_ARTIFACT_TYPE).expect("a referrer");

    for (what, entry) in [("tagged", tagged), ("referrer", referrer)] {
        let m: serde_json::Value = serde_json::from_slice(&blob(entry["digest"].as_str().unwrap())).unwrap();
        assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{what}");
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{what}");
        assert_eq!(layers[0]["mediaType"], SIMPLE_SIGNING_MEDIA_TYPE, "{what}");
        let payload = blob(layers[0]["digest"].as_str().unwrap());
        let sig = layers[0]["annotations"][SIGNATURE_ANNOTATION].as_str().unwrap();
        verifier
            .verify_signature(Signature::Base64Encoded(sig.as_bytes()), &payload)
            .unwrap_or_else(|e| panic!("{what}: sigstore rejects the signature: {e}"));
        let other = CosignVerificationKey::from_pem(
            SigningKey::generate().public_key().to_pem().as_bytes(),
            &SigningScheme::ECDSA_P256_SHA256_ASN1,
        )
        .unwrap();
        assert!(other.verify_signature(Signature::Base64Encoded(sig.as_bytes()), &payload).is_err());

        let p: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            p,
            serde_json::json!({"critical": {
                "identity": {"docker-reference": "registry.example/debian-minimal"},
                "image": {"docker-manifest-digest": image.digest},
                "type": "cosign container image signature"},
             "optional": null})
        );
        if what == "referrer" {
            assert_eq!(m["subject"]["digest"], image.digest.as_str());
            assert_eq!(m["subject"]["size"], built.manifest_descriptor.size());
            assert_eq!(m["artifactType"], SIGNATURE_ARTIFACT_TYPE);
        } else {
            assert!(m.get("subject").is_none());
        }
    }

    // The layout still opens as the one image it was, for readers that pick the linux/amd64 manifest.
    assert_eq!(cosign::images(layout.index()).len(), 1);
    // The blob signatures verify with sigstore as with openssl.
    let manifest = std::fs::read(out.dir.join("manifest.json")).unwrap();
    let sig = std::fs::read(out.dir.join("signatures/manifest.json.sig")).unwrap();
    verifier.verify_signature(Signature::Base64Encoded(&sig), &manifest).unwrap();
}

#[test]
fn an_attestation_added_between_image_and_file_signing_is_signed_too() {
    let out = output();
    let key = SigningKey::generate();
    let unsigned = std::fs::read(out.dir.join("manifest.json")).unwrap();
    let images = sign_images(&out.dir, &key, &SignOptions::default()).unwrap();
    // Signing the image leaves manifest.json as it was: it records the image the signature names.
    assert_eq!(std::fs::read(out.dir.join("manifest.json")).unwrap(), unsigned);
    // What a provenance step does: read the final digests, write a file, list it.
    let m = Manifest::read(&out.dir).unwrap();
    let oci = m.artifacts.iter().find(|a| a.kind == ArtifactKind::Oci).unwrap();
    assert_eq!(oci.sha256, images[0].digest);
    let statement = format!("{{\"subject\":[{{\"digest\":\"{}\"}}]}}\n", images[0].digest);
    std::fs::write(out.dir.join("provenance.json"), &statement).unwrap();
    let mut m2 = m.clone();
    m2.put(kiln_blueprint::manifest::Artifact {
        kind: ArtifactKind::Provenance,
        path: "provenance.json".into(),
        sha256: format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(statement.as_bytes()))
        ),
        size: statement.len() as u64,
    })
    .unwrap();
    m2.write(&out.dir).unwrap();
    let report = sign_files(&out.dir, &key).unwrap();
    assert!(report.signatures.contains(&"signatures/provenance.json.sig".to_owned()));
    let verified = verify_dir(&out.dir, &key.public_key(), None).unwrap();
    assert_eq!(verified.images, images);
    assert!(verified.artifacts.iter().any(|a| a.path == "provenance.json"));
    assert_eq!(
        Manifest::read(&out.dir).unwrap().artifacts.iter().find(|a| a.kind == ArtifactKind::Oci),
        Some(oci)
    );
}
