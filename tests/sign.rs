//! `kiln keygen`, `kiln sign`, `kiln verify` on a real, certified build (debian-base-oci from the mirror):
//! the key pair in cosign's formats, signatures openssl checks, the OCI signature and the provenance in the
//! output, the OCI image's digest the same in the certification report and the signed manifest, `kiln verify`
//! passing, then failing with its own message on a flipped byte, a wrong key and a layout whose index.json
//! no longer lists the recorded image.
//! Needs root (building) and the Debian mirror, like tests/build.rs; openssl checks the signatures.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

mod common;
use common::{can_build, root_dir};

fn work(name: &str) -> PathBuf {
    common::work("kiln-sign-tests", name)
}

const PASSPHRASE: &str = "correct horse battery staple";

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(root_dir())
        .env("KILN_SIGNING_PASSWORD", PASSPHRASE)
        .env_remove("KILN_SIGNING_KEY")
        .output()
        .expect("run kiln")
}

fn ok(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

/// `openssl dgst -sha256 -verify PUB -signature DER FILE` with the base64 signature decoded first.
fn openssl_verifies(public: &Path, sig_b64: &Path, file: &Path) -> bool {
    let der = sig_b64.with_extension("der");
    let decoded = Command::new("base64").arg("-d").arg(sig_b64).output().unwrap();
    assert!(decoded.status.success());
    fs_err::write(&der, decoded.stdout).unwrap();
    Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(&der)
        .arg(file)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_certified_build_is_signed_and_verified_and_tampering_is_caught() {
    if !can_build() {
        return;
    }
    let out = work("base-oci");
    let cache = common::cache();
    let bp = root_dir().join("blueprints/debian-base-oci");
    ok(
        kiln(&[
            "-q",
            "build",
            bp.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ]),
        "build",
    );
    ok(kiln(&["-q", "test", out.to_str().unwrap()]), "test");
    let read_json =
        |rel: &str| -> Value { serde_json::from_slice(&fs_err::read(out.join(rel)).unwrap()).unwrap() };
    let oci_of = |artifacts: &Value| -> Value {
        artifacts.as_array().unwrap().iter().find(|a| a["kind"] == "oci").expect("an oci artifact").clone()
    };
    let certified_oci = oci_of(&read_json("report/certification.json")["artifacts"]);
    let tested_oci = oci_of(&read_json("manifest.json")["artifacts"]);
    assert_eq!(certified_oci, tested_oci);

    let keys = work("keys");
    fs_err::create_dir_all(&keys).unwrap();
    let prefix = keys.join("release");
    let o = ok(kiln(&["--json", "keygen", "--out", prefix.to_str().unwrap()]), "keygen");
    let generated: Value = serde_json::from_slice(&o.stdout).unwrap();
    let private = keys.join("release.key");
    let public = keys.join("release.pub");
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs_err::metadata(&private).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the private key is not world-readable");
    assert!(fs_err::read_to_string(&private)
        .unwrap()
        .starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    // A second keygen does not overwrite it.
    assert_eq!(kiln(&["keygen", "--out", prefix.to_str().unwrap()]).status.code(), Some(1));

    let o = ok(kiln(&["--json", "sign", out.to_str().unwrap(), "--key", private.to_str().unwrap()]), "sign");
    let signed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(signed["key"], generated["fingerprint"]);
    assert_eq!(signed["provenance"], true);
    assert_eq!(signed["images"].as_array().unwrap().len(), 1);

    // The OCI image keeps one identity through test and sign: the digest the certification report lists
    // is the one the signed manifest.json lists, the image the cosign signature names.
    let signed_oci = oci_of(&read_json("manifest.json")["artifacts"]);
    assert_eq!(signed_oci, certified_oci, "signing changed the OCI artifact's digest");
    assert_eq!(signed["images"][0]["digest"], certified_oci["sha256"]);

    // The manifest lists the SBOM, the provenance and the certification; openssl checks each signature.
    let manifest: Value = serde_json::from_slice(&fs_err::read(out.join("manifest.json")).unwrap()).unwrap();
    let kinds: Vec<&str> =
        manifest["artifacts"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
    for k in ["oci", "sbom", "provenance", "report"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert!(openssl_verifies(&public, &out.join("signatures/manifest.json.sig"), &out.join("manifest.json")));
    for a in manifest["artifacts"].as_array().unwrap() {
        let path = a["path"].as_str().unwrap();
        // An OCI layout's signed file is its image manifest blob.
        let file = if a["kind"] == "oci" {
            format!("{path}/blobs/sha256/{}", a["sha256"].as_str().unwrap().strip_prefix("sha256:").unwrap())
        } else {
            path.to_owned()
        };
        let sig = out.join("signatures").join(format!("{file}.sig"));
        assert!(openssl_verifies(&public, &sig, &out.join(&file)), "openssl rejects the signature of {file}");
    }

    let o =
        ok(kiln(&["--json", "verify", out.to_str().unwrap(), "--key", public.to_str().unwrap()]), "verify");
    let verified: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(verified["verified"], true);
    assert_eq!(verified["images"].as_array().unwrap().len(), 1);
    assert_eq!(verified["images"][0]["digest"], certified_oci["sha256"]);
    assert!(verified["artifacts"].as_array().unwrap().iter().any(|a| a["kind"] == "oci"
        && a["sha256"] == certified_oci["sha256"]
        && a["size"] == certified_oci["size"]));

    // Another key: refused, saying so.
    let other = work("other-keys").join("other");
    fs_err::create_dir_all(other.parent().unwrap()).unwrap();
    ok(kiln(&["keygen", "--out", other.to_str().unwrap()]), "keygen other");
    let o = kiln(&["verify", out.to_str().unwrap(), "--key", other.with_extension("pub").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("manifest.json"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // One flipped byte in the SBOM: refused, naming the file.
    let sbom = out.join("sbom.spdx.json");
    let mut bytes = fs_err::read(&sbom).unwrap();
    bytes[10] ^= 1;
    fs_err::write(&sbom, bytes).unwrap();
    let o = kiln(&["verify", out.to_str().unwrap(), "--key", public.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sbom.spdx.json"), "{err}");
    bytes = fs_err::read(&sbom).unwrap();
    bytes[10] ^= 1;
    fs_err::write(&sbom, bytes).unwrap();
    ok(kiln(&["verify", out.to_str().unwrap(), "--key", public.to_str().unwrap()]), "verify, SBOM restored");

    // The layout's index.json no longer lists the image manifest.json records: refused, saying so.
    let mut index = read_json("oci/index.json");
    index["manifests"].as_array_mut().unwrap().retain(|e| e["digest"] != certified_oci["sha256"]);
    fs_err::write(out.join("oci/index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let o = kiln(&["verify", out.to_str().unwrap(), "--key", public.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let recorded = certified_oci["sha256"].as_str().unwrap();
    assert!(err.contains(&format!("oci/index.json does not list the image manifest {recorded}")), "{err}");
}
