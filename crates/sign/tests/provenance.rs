//! The provenance of a build output: an in-toto Statement v1 whose subjects are the manifest's artifacts and
//! whose SLSA v1 predicate holds the build materials, in a DSSE envelope that verifies with the signer's
//! public key, both through kiln's verifier and through `openssl` over the pre-authentication encoding.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use kiln_blueprint::manifest::{Artifact, ArtifactKind, Manifest, Parent};
use kiln_sign::{
    dsse::{dsse_verify, pae},
    provenance::{
        provenance_envelope, provenance_statement, statement_json, write_provenance, BlueprintSource,
        Materials, ProvenanceError, Repository, Statement, BUILD_TYPE, MATERIALS_FILE, MATERIALS_SCHEMA,
        PAYLOAD_TYPE, PREDICATE_TYPE, PROVENANCE_FILE, STATEMENT_TYPE,
    },
    sbom::DebInfo,
    SigningKey,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn manifest(parent: bool) -> Manifest {
    let mut m = Manifest::new("web-role", "1.2.3", &digest('a'), &digest('b'));
    m.tree_digest = Some(digest('c'));
    if parent {
        m.parent = Some(Parent {
            reference: "oci-layout:../base/out/oci:1.0.0".into(),
            name: "debian-base-oci".into(),
            version: "1.0.0".into(),
            digest: digest('d'),
        });
    }
    for (kind, path, c) in [
        (ArtifactKind::Raw, "disk.raw", '1'),
        (ArtifactKind::Qcow2, "disk.qcow2", '2'),
        (ArtifactKind::Oci, "oci", '3'),
        (ArtifactKind::Sbom, "sbom.spdx.json", '4'),
        (ArtifactKind::Materials, MATERIALS_FILE, '5'),
        (ArtifactKind::Report, "report/certification.json", '6'),
        (ArtifactKind::Provenance, PROVENANCE_FILE, '7'),
    ] {
        m.put(Artifact { kind, path: path.into(), sha256: digest(c), size: 1 }).unwrap();
    }
    m
}

fn materials(repository: Option<Repository>) -> Materials {
    let deb = |name: &str, arch: &str, path: &str, c: char| DebInfo {
        name: name.into(),
        version: "1.0-1".into(),
        architecture: arch.into(),
        sha256: c.to_string().repeat(64),
        archive_path: path.into(),
        url: format!("http://deb.debian.org/debian/{path}"),
    };
    Materials {
        schema: MATERIALS_SCHEMA.into(),
        kiln_version: "0.1.0".into(),
        blueprint: BlueprintSource {
            path: "blueprints/web-role/blueprint.toml".into(),
            digest: digest('a'),
            variables: BTreeMap::from([("port".to_owned(), "8080".to_owned())]),
        },
        repository,
        source_date_epoch: 1_700_000_000,
        packages: vec![
            deb("base-files", "amd64", "pool/main/b/base-files/base-files_1.0-1_amd64.deb", 'e'),
            deb("nginx", "amd64", "pool/main/n/nginx/nginx_1.0-1_amd64.deb", 'f'),
        ],
    }
}

fn repo() -> Option<Repository> {
    Some(Repository { uri: Some("https://git.example.org/images.git".into()), commit: "0123abcd".repeat(5) })
}

const BUILDER: &str = "https://ci.example.org/kiln-builder";

fn hex(c: char) -> String {
    c.to_string().repeat(64)
}

fn sha256_map(h: String) -> BTreeMap<String, String> {
    BTreeMap::from([("sha256".to_owned(), h)])
}

#[test]
fn subjects_are_the_manifests_artifacts_but_the_provenance_itself() {
    let s = provenance_statement(&manifest(false), &materials(repo()), BUILDER);
    assert_eq!(s.type_, STATEMENT_TYPE);
    assert_eq!(s.predicate_type, PREDICATE_TYPE);
    let subjects: Vec<(&str, &str)> =
        s.subject.iter().map(|d| (d.name.as_deref().unwrap(), d.digest["sha256"].as_str())).collect();
    let want: Vec<(&str, String)> = vec![
        ("disk.raw", hex('1')),
        ("disk.qcow2", hex('2')),
        ("oci", hex('3')),
        ("sbom.spdx.json", hex('4')),
        (MATERIALS_FILE, hex('5')),
        ("report/certification.json", hex('6')),
    ];
    let want: Vec<(&str, &str)> = want.iter().map(|(n, h)| (*n, h.as_str())).collect();
    assert_eq!(subjects, want);
    assert!(s.subject.iter().all(|d| d.digest.len() == 1 && d.uri.is_none()));
}

#[test]
fn the_predicate_records_parameters_materials_and_builder() {
    let s = provenance_statement(&manifest(true), &materials(repo()), BUILDER);
    let def = &s.predicate.build_definition;
    assert_eq!(def.build_type, BUILD_TYPE);
    assert_eq!(def.external_parameters.blueprint, "blueprints/web-role/blueprint.toml");
    assert_eq!(def.external_parameters.variables["port"], "8080");
    assert_eq!(def.internal_parameters.source_date_epoch, 1_700_000_000);
    type Dep<'a> = (Option<&'a str>, Option<&'a str>, &'a BTreeMap<String, String>);
    let deps: Vec<Dep> =
        def.resolved_dependencies.iter().map(|d| (d.name.as_deref(), d.uri.as_deref(), &d.digest)).collect();
    let git = BTreeMap::from([("gitCommit".to_owned(), "0123abcd".repeat(5))]);
    let (a, d, e, f) =
        (sha256_map(hex('a')), sha256_map(hex('d')), sha256_map(hex('e')), sha256_map(hex('f')));
    assert_eq!(
        deps,
        vec![
            (Some("blueprint repository"), Some("git+https://git.example.org/images.git"), &git),
            (Some("blueprints/web-role/blueprint.toml"), None, &a),
            (Some("parent image debian-base-oci 1.0.0"), Some("oci-layout:../base/out/oci:1.0.0"), &d),
            (
                Some("pool/main/b/base-files/base-files_1.0-1_amd64.deb"),
                Some("http://deb.debian.org/debian/pool/main/b/base-files/base-files_1.0-1_amd64.deb"),
                &e
            ),
            (
                Some("pool/main/n/nginx/nginx_1.0-1_amd64.deb"),
                Some("http://deb.debian.org/debian/pool/main/n/nginx/nginx_1.0-1_amd64.deb"),
                &f
            ),
        ]
    );
    let run = &s.predicate.run_details;
    assert_eq!(run.builder.id, BUILDER);
    assert_eq!(run.builder.version, BTreeMap::from([("kiln".to_owned(), "0.1.0".to_owned())]));

    // The JSON spells the fields as in-toto and SLSA do.
    let v: Value = serde_json::from_slice(&statement_json(&s)).unwrap();
    assert_eq!(v["_type"], STATEMENT_TYPE);
    assert_eq!(v["predicateType"], PREDICATE_TYPE);
    assert_eq!(v["subject"][0]["name"], "disk.raw");
    assert_eq!(v["subject"][0]["digest"]["sha256"], hex('1'));
    let p = &v["predicate"];
    assert_eq!(p["buildDefinition"]["buildType"], BUILD_TYPE);
    assert_eq!(p["buildDefinition"]["externalParameters"]["blueprint"], "blueprints/web-role/blueprint.toml");
    assert_eq!(p["buildDefinition"]["internalParameters"]["sourceDateEpoch"], 1_700_000_000);
    assert_eq!(p["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"], "0123abcd".repeat(5));
    assert_eq!(p["runDetails"]["builder"]["id"], BUILDER);
    assert_eq!(p["runDetails"]["builder"]["version"]["kiln"], "0.1.0");
    assert!(p["runDetails"]["metadata"]["invocationId"].as_str().unwrap().starts_with("urn:kiln:build:"));
    assert!(p["runDetails"]["metadata"].get("startedOn").is_none(), "no wall-clock time");
}

#[test]
fn repository_and_parent_appear_only_when_known() {
    let local = Repository { uri: None, commit: "f".repeat(40) };
    let s = provenance_statement(&manifest(false), &materials(Some(local)), BUILDER);
    let first = &s.predicate.build_definition.resolved_dependencies[0];
    assert_eq!((first.name.as_deref(), first.uri.as_deref()), (Some("blueprint repository"), None));
    assert_eq!(first.digest["gitCommit"], "f".repeat(40));

    let s = provenance_statement(&manifest(false), &materials(None), BUILDER);
    let deps = &s.predicate.build_definition.resolved_dependencies;
    assert_eq!(deps[0].name.as_deref(), Some("blueprints/web-role/blueprint.toml"));
    assert_eq!(deps.len(), 3, "the blueprint and two .debs: {deps:?}");
}

#[test]
fn the_invocation_id_is_the_builds_identity() {
    let id = |m: &Manifest, mat: &Materials| {
        provenance_statement(m, mat, BUILDER).predicate.run_details.metadata.invocation_id
    };
    let (m, mat) = (manifest(false), materials(repo()));
    assert_eq!(id(&m, &mat), id(&manifest(false), &materials(repo())));
    let mut other_tree = manifest(false);
    other_tree.tree_digest = Some(digest('9'));
    assert_ne!(id(&m, &mat), id(&other_tree, &mat));
    let mut other_epoch = materials(repo());
    other_epoch.source_date_epoch += 1;
    assert_ne!(id(&m, &mat), id(&m, &other_epoch));
}

#[test]
fn the_envelope_verifies_with_the_public_key() {
    let key = SigningKey::generate();
    let statement = provenance_statement(&manifest(true), &materials(repo()), BUILDER);
    let env = provenance_envelope(&statement, &key);
    assert_eq!(env.payload_type, PAYLOAD_TYPE);
    let payload = dsse_verify(&env, &key.public_key()).expect("verifies with the signer's key");
    let back: Statement = serde_json::from_slice(&payload).unwrap();
    assert_eq!(back, statement);

    assert!(dsse_verify(&env, &SigningKey::generate().public_key()).is_err(), "another key");
    let mut tampered = env.clone();
    let mut changed = statement.clone();
    changed.subject[0].digest.insert("sha256".into(), hex('0'));
    tampered.payload = B64.encode(statement_json(&changed));
    assert!(dsse_verify(&tampered, &key.public_key()).is_err(), "a changed statement");
    let mut retyped = env.clone();
    retyped.payload_type = "application/json".into();
    assert!(dsse_verify(&retyped, &key.public_key()).is_err(), "a changed payload type");
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-sign-provenance").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn openssl_verify(dir: &Path, public_pem: &str, signature_der: &[u8], message: &[u8]) -> (bool, String) {
    std::fs::write(dir.join("key.pub"), public_pem).unwrap();
    std::fs::write(dir.join("sig.der"), signature_der).unwrap();
    std::fs::write(dir.join("pae.bin"), message).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify", "key.pub", "-signature", "sig.der", "pae.bin"])
        .current_dir(dir)
        .output()
        .expect("openssl (package openssl) runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn openssl_verifies_the_envelope_over_its_pae() {
    let dir = scratch("openssl");
    let key = SigningKey::generate();
    let statement = provenance_statement(&manifest(true), &materials(repo()), BUILDER);
    let env = provenance_envelope(&statement, &key);
    let payload = B64.decode(&env.payload).unwrap();
    assert_eq!(payload, statement_json(&statement));
    let sig = B64.decode(&env.signatures[0].sig).unwrap();
    let message = pae(PAYLOAD_TYPE, &payload);
    assert!(message
        .starts_with(format!("DSSEv1 {} {PAYLOAD_TYPE} {} ", PAYLOAD_TYPE.len(), payload.len()).as_bytes()));
    let (ok, text) = openssl_verify(&dir, &key.public_key().to_pem(), &sig, &message);
    assert!(ok && text.contains("Verified OK"), "{text}");
    // The signature covers the PAE, not the bare payload, and not another key.
    let (ok, _) = openssl_verify(&dir, &key.public_key().to_pem(), &sig, &payload);
    assert!(!ok);
    let (ok, _) = openssl_verify(&dir, &SigningKey::generate().public_key().to_pem(), &sig, &message);
    assert!(!ok);
}

fn file_artifact(dir: &Path, kind: ArtifactKind, path: &str) -> Artifact {
    let bytes = std::fs::read(dir.join(path)).unwrap();
    Artifact {
        kind,
        path: path.into(),
        sha256: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        size: bytes.len() as u64,
    }
}

/// An output folder as the build leaves it: a disk, the SBOM, the materials and the manifest.
fn output(name: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(dir.join("build")).unwrap();
    std::fs::write(dir.join("disk.raw"), b"a disk image").unwrap();
    std::fs::write(dir.join("sbom.spdx.json"), b"{\"spdxVersion\": \"SPDX-2.3\"}\n").unwrap();
    std::fs::write(dir.join(MATERIALS_FILE), materials(repo()).to_json()).unwrap();
    let mut m = manifest(false);
    m.artifacts.clear();
    for (kind, path) in [
        (ArtifactKind::Raw, "disk.raw"),
        (ArtifactKind::Sbom, "sbom.spdx.json"),
        (ArtifactKind::Materials, MATERIALS_FILE),
    ] {
        m.put(file_artifact(&dir, kind, path)).unwrap();
    }
    m.write(&dir).unwrap();
    dir
}

#[test]
fn signing_an_output_writes_the_envelope_and_lists_it_in_the_manifest() {
    let dir = output("write");
    let key = SigningKey::generate();
    let before = Manifest::read(&dir).unwrap();
    let after = write_provenance(&dir, &key, BUILDER).unwrap();
    assert_eq!(after, Manifest::read(&dir).unwrap(), "the manifest on disk is the one returned");

    let bytes = std::fs::read(dir.join(PROVENANCE_FILE)).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "one envelope on one line (JSON Lines)");
    assert!(text.ends_with('\n'));
    assert_eq!(
        after.artifacts.iter().find(|a| a.kind == ArtifactKind::Provenance),
        Some(&file_artifact(&dir, ArtifactKind::Provenance, PROVENANCE_FILE))
    );
    assert_eq!(after.artifacts.len(), before.artifacts.len() + 1);

    let env: kiln_sign::Envelope = serde_json::from_str(text.trim_end()).unwrap();
    let statement: Statement =
        serde_json::from_slice(&dsse_verify(&env, &key.public_key()).unwrap()).unwrap();
    let names: Vec<&str> = statement.subject.iter().map(|s| s.name.as_deref().unwrap()).collect();
    let listed: Vec<&str> = before.artifacts.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(names, listed);
    assert_eq!(statement.predicate.build_definition.resolved_dependencies.len(), 4);

    // Signing again (e.g. after `kiln test` added its report) leaves out the old provenance and gives the
    // same statement for the same artifacts.
    write_provenance(&dir, &key, BUILDER).unwrap();
    let again: kiln_sign::Envelope =
        serde_json::from_slice(&std::fs::read(dir.join(PROVENANCE_FILE)).unwrap()).unwrap();
    assert_eq!(again.payload, env.payload);
}

#[test]
fn changed_or_missing_materials_are_refused() {
    let key = SigningKey::generate();
    let dir = output("changed");
    let mut other = materials(repo());
    other.packages.pop();
    std::fs::write(dir.join(MATERIALS_FILE), other.to_json()).unwrap();
    let e = write_provenance(&dir, &key, BUILDER).unwrap_err();
    assert!(matches!(e, ProvenanceError::MaterialsChanged { .. }), "{e}");
    assert!(!dir.join(PROVENANCE_FILE).exists());

    let dir = output("missing");
    let mut m = Manifest::read(&dir).unwrap();
    m.artifacts.retain(|a| a.kind != ArtifactKind::Materials);
    m.write(&dir).unwrap();
    let e = write_provenance(&dir, &key, BUILDER).unwrap_err();
    assert!(matches!(e, ProvenanceError::NoMaterials { .. }), "{e}");

    let dir = output("schema");
    let text = String::from_utf8(materials(repo()).to_json())
        .unwrap()
        .replace(MATERIALS_SCHEMA, "kiln.materials/v9");
    std::fs::write(dir.join(MATERIALS_FILE), &text).unwrap();
    let mut m = Manifest::read(&dir).unwrap();
    m.put(file_artifact(&dir, ArtifactKind::Materials, MATERIALS_FILE)).unwrap();
    m.write(&dir).unwrap();
    let e = write_provenance(&dir, &key, BUILDER).unwrap_err();
    assert!(matches!(e, ProvenanceError::MaterialsSchema { .. }), "{e}");
}

#[test]
fn materials_round_trip_and_reject_unknown_fields() {
    let m = materials(repo());
    assert_eq!(Materials::from_json("m", &m.to_json()).unwrap(), m);
    let extra = String::from_utf8(m.to_json()).unwrap().replacen('{', "{\"surprise\": 1,", 1);
    assert!(matches!(Materials::from_json("m", extra.as_bytes()), Err(ProvenanceError::Materials { .. })));
}
