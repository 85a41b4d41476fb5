//! `manifest.json` as kiln writes it validates against the JSON Schema kept in the repo, and the schema
//! rejects what readers must not accept.

use kiln_blueprint::manifest::{Artifact, ArtifactKind, Manifest, Parent};

fn schema() -> jsonschema::Validator {
    let text =
        fs_err::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/manifest.v1.schema.json"))
            .unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("the schema itself is valid")
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn sample() -> Manifest {
    let mut m = Manifest::new("web-role", "1.2.3", &digest('a'), &digest('b'));
    m.parent = Some(Parent {
        reference: "catalog:debian-minimal@stable".into(),
        name: "debian-minimal".into(),
        version: "1.0.0".into(),
        digest: digest('c'),
    });
    for (kind, path) in [
        (ArtifactKind::Raw, "disk.raw"),
        (ArtifactKind::Oci, "oci"),
        (ArtifactKind::Sbom, "sbom.spdx.json"),
        (ArtifactKind::Materials, "build/materials.json"),
        (ArtifactKind::Provenance, "provenance.intoto.jsonl"),
        (ArtifactKind::Report, "report/certification.json"),
    ] {
        m.put(Artifact { kind, path: path.into(), sha256: digest('d'), size: 42 }).unwrap();
    }
    m
}

#[test]
fn written_manifests_validate() {
    let v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
    let errors: Vec<String> = schema().iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn the_schema_rejects_bad_manifests() {
    let good: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("other schema", Box::new(|v| v["schema"] = "kiln.manifest/v2".into())),
        ("bad version", Box::new(|v| v["version"] = "1.2".into())),
        ("absolute path", Box::new(|v| v["artifacts"][0]["path"] = "/etc/passwd".into())),
        ("escaping path", Box::new(|v| v["artifacts"][0]["path"] = "a/../../x".into())),
        ("unknown kind", Box::new(|v| v["artifacts"][0]["kind"] = "iso".into())),
        ("short digest", Box::new(|v| v["artifacts"][0]["sha256"] = "sha256:abc".into())),
        (
            "missing size",
            Box::new(|v| {
                v["artifacts"][0].as_object_mut().unwrap().remove("size");
            }),
        ),
        ("extra field", Box::new(|v| v["extra"] = 1.into())),
    ];
    let s = schema();
    for (what, mutate) in cases {
        let mut v = good.clone();
        mutate(&mut v);
        assert!(!s.is_valid(&v), "schema accepted a manifest with {what}");
    }
}
