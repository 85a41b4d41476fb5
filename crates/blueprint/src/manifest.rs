//! The build output's `manifest.json`: what a build produced, schema `kiln.manifest/v1`
//! (`crates/blueprint/schemas/manifest.v1.schema.json`).
//!
//! It names the image (name, version), the blueprint's digest, the parent image for derived builds, and
//! every artifact as `{kind, path, sha256, size}` with `path` relative to the output folder. Later stages
//! (test, sign) add their artifacts to it; signing covers it, so it is the root of trust of an image.
//!
//! An OCI layout artifact (`kind: oci`, `path: oci`) is recorded by its **image manifest**: `sha256` and
//! `size` are those of the image manifest blob the layout's `index.json` lists, the image digest registries
//! and `skopeo inspect` report and cosign signatures attach to. Signing adds entries to `index.json` but
//! never changes the image manifest, so the digest `kiln test` certified is the one `kiln sign` signs.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Version of the manifest schema.
pub const MANIFEST_SCHEMA: &str = "kiln.manifest/v1";
/// The file name inside a build output folder.
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub name: String,
    pub version: String,
    /// `sha256:…` of the blueprint file.
    pub blueprint_digest: String,
    /// `sha256:…` of the build plan.
    pub plan_digest: String,
    /// Digest of the normalized root tree (see `kiln_rootfs::tree_digest`): equal for equal builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
    /// The contracts the blueprint claims, as requests (`base-os@^1`); `kiln test` certifies against them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contracts: Vec<String>,
    /// The blueprint's lifecycle policy, from which the catalog dates the version's support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<crate::model::LifecyclePolicy>,
    pub artifacts: Vec<Artifact>,
}

/// The image a derived build started FROM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parent {
    /// The reference as the blueprint wrote it, e.g. `catalog:debian-minimal@stable`.
    pub reference: String,
    pub name: String,
    pub version: String,
    /// Digest of the parent's OCI manifest.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub kind: ArtifactKind,
    /// Relative to the output folder, `/`-separated.
    pub path: String,
    /// `sha256:…` of the file; for an OCI layout folder, of the image manifest its `index.json` lists.
    pub sha256: String,
    /// Bytes of the file (for an OCI layout folder: of its image manifest).
    pub size: u64,
}

/// File name under an OCI layout's `blobs/sha256/` for an artifact whose `sha256` is no sha256 digest
/// (which [`Manifest::put`] and [`Manifest::from_json`] refuse): no blob has it.
const NOT_A_DIGEST: &str = "not-a-sha256-digest";

impl Artifact {
    /// The file (relative to the output folder) whose sha256 and size the manifest records: the artifact
    /// itself, or for an OCI layout its image manifest blob, `PATH/blobs/sha256/HEX` with HEX from
    /// `sha256`. Hashing this file gives `sha256` exactly when the artifact is as recorded.
    pub fn digested_file(&self) -> String {
        if self.kind != ArtifactKind::Oci {
            return self.path.clone();
        }
        let layout = self.path.trim_end_matches('/');
        let name = sha256_hex(&self.sha256).unwrap_or(NOT_A_DIGEST);
        format!("{layout}/blobs/sha256/{name}")
    }
}

/// The hex part of a digest written as the manifest writes them, `sha256:` and 64 lowercase hex digits;
/// `None` for anything else.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A file's digest as the manifest writes it (`sha256:…`) and its size, read in one pass.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest as _;
    let mut f = fs_err::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let size = std::io::copy(&mut f, &mut h)?;
    Ok((format!("sha256:{}", hex::encode(h.finalize())), size))
}

/// An OCI artifact's digest names the blob [`Artifact::digested_file`] reads: it must be a sha256 digest.
fn check_oci_digest(a: &Artifact) -> Result<(), ManifestError> {
    if a.kind == ArtifactKind::Oci && sha256_hex(&a.sha256).is_none() {
        return Err(ManifestError::BadOciDigest { path: a.path.clone(), digest: a.sha256.clone() });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    Raw,
    Qcow2,
    Oci,
    Sbom,
    /// What the build resolved and used (`build/materials.json`), for the provenance `kiln sign` makes.
    Materials,
    Provenance,
    Report,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read or write the manifest")]
    Io(#[from] std::io::Error),
    #[error("{path}: not a kiln manifest: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("{path}: schema `{found}` is not supported (this kiln reads `{MANIFEST_SCHEMA}`)")]
    Schema { path: String, found: String },
    #[error("artifact path `{0}` must be relative to the output folder and stay inside it")]
    BadPath(String),
    #[error(
        "OCI artifact `{path}`: `{digest}` is not an image manifest digest (sha256: and 64 lowercase hex digits)"
    )]
    BadOciDigest { path: String, digest: String },
}

impl Manifest {
    pub fn new(name: &str, version: &str, blueprint_digest: &str, plan_digest: &str) -> Self {
        Self {
            schema: MANIFEST_SCHEMA.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            blueprint_digest: blueprint_digest.to_owned(),
            plan_digest: plan_digest.to_owned(),
            tree_digest: None,
            parent: None,
            contracts: Vec::new(),
            lifecycle: None,
            artifacts: Vec::new(),
        }
    }

    /// Add or replace the artifact at `path`, keeping the list sorted by kind then path. The path must stay
    /// inside the output folder, and an OCI artifact's digest must be a sha256 digest (it names a blob).
    pub fn put(&mut self, artifact: Artifact) -> Result<(), ManifestError> {
        let p = Path::new(&artifact.path);
        if artifact.path.is_empty()
            || p.is_absolute()
            || p.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(ManifestError::BadPath(artifact.path));
        }
        check_oci_digest(&artifact)?;
        self.artifacts.retain(|a| a.path != artifact.path);
        self.artifacts.push(artifact);
        self.artifacts.sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn from_json(path: &str, bytes: &[u8]) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        struct Probe {
            schema: Option<String>,
        }
        if let Ok(Probe { schema: Some(found) }) = serde_json::from_slice::<Probe>(bytes) {
            if found != MANIFEST_SCHEMA {
                return Err(ManifestError::Schema { path: path.to_owned(), found });
            }
        }
        let manifest: Self = serde_json::from_slice(bytes)
            .map_err(|source| ManifestError::Parse { path: path.to_owned(), source })?;
        manifest.artifacts.iter().try_for_each(check_oci_digest)?;
        Ok(manifest)
    }

    /// Read `DIR/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = fs_err::read(&path)?;
        Self::from_json(&path.display().to_string(), &bytes)
    }

    /// Write `DIR/manifest.json` atomically (temporary file, fsync, rename): a crash leaves the old
    /// manifest or the new one, never a torn one.
    pub fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        use std::io::Write as _;
        let tmp = dir.join(format!(".{MANIFEST_FILE}.tmp"));
        let mut f = fs_err::File::create(&tmp)?;
        f.write_all(&self.to_json())?;
        f.sync_all()?;
        fs_err::rename(&tmp, dir.join(MANIFEST_FILE))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut m = Manifest::new("debian-minimal", "1.0.0", "sha256:aa", "sha256:bb");
        m.put(Artifact {
            kind: ArtifactKind::Qcow2,
            path: "disk.qcow2".into(),
            sha256: "sha256:01".into(),
            size: 3,
        })
        .unwrap();
        m.put(Artifact {
            kind: ArtifactKind::Raw,
            path: "disk.raw".into(),
            sha256: "sha256:02".into(),
            size: 9,
        })
        .unwrap();
        m
    }

    #[test]
    fn artifacts_stay_sorted_and_unique_by_path() {
        let mut m = sample();
        m.put(Artifact {
            kind: ArtifactKind::Raw,
            path: "disk.raw".into(),
            sha256: "sha256:03".into(),
            size: 1,
        })
        .unwrap();
        let kinds: Vec<_> = m.artifacts.iter().map(|a| (a.kind, a.sha256.as_str())).collect();
        assert_eq!(kinds, [(ArtifactKind::Raw, "sha256:03"), (ArtifactKind::Qcow2, "sha256:01")]);
    }

    #[test]
    fn paths_must_stay_inside_the_output_folder() {
        let mut m = sample();
        for bad in ["/etc/passwd", "../x", "a/../../b", ""] {
            let a =
                Artifact { kind: ArtifactKind::Raw, path: bad.into(), sha256: "sha256:0".into(), size: 0 };
            assert!(matches!(m.put(a), Err(ManifestError::BadPath(_))), "{bad}");
        }
    }

    #[test]
    fn round_trips_and_rejects_other_schemas_and_unknown_fields() {
        let m = sample();
        assert_eq!(Manifest::from_json("m", &m.to_json()).unwrap(), m);
        let other = String::from_utf8(m.to_json()).unwrap().replace("kiln.manifest/v1", "kiln.manifest/v9");
        assert!(matches!(Manifest::from_json("m", other.as_bytes()), Err(ManifestError::Schema { .. })));
        let extra = String::from_utf8(m.to_json()).unwrap().replacen('{', "{\"surprise\": 1,", 1);
        assert!(matches!(Manifest::from_json("m", extra.as_bytes()), Err(ManifestError::Parse { .. })));
    }

    const IMAGE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn oci(sha256: &str) -> Artifact {
        Artifact { kind: ArtifactKind::Oci, path: "oci".into(), sha256: sha256.into(), size: 529 }
    }

    #[test]
    fn an_oci_layout_is_digested_as_its_image_manifest_blob() {
        assert_eq!(oci(IMAGE).digested_file(), format!("oci/blobs/sha256/{}", &IMAGE[7..]));
        let mut nested = oci(IMAGE);
        nested.path = "images/amd64/".into();
        assert_eq!(nested.digested_file(), format!("images/amd64/blobs/sha256/{}", &IMAGE[7..]));
        // Other kinds are their own file.
        let raw =
            Artifact { kind: ArtifactKind::Raw, path: "disk.raw".into(), sha256: IMAGE.into(), size: 1 };
        assert_eq!(raw.digested_file(), "disk.raw");
    }

    #[test]
    fn an_oci_digest_that_is_not_sha256_hex_names_no_file_outside_the_blobs() {
        for bad in ["", "sha256:01", "sha512:00", "sha256:../../../etc/passwd", IMAGE.to_uppercase().as_str()]
        {
            assert_eq!(oci(bad).digested_file(), "oci/blobs/sha256/not-a-sha256-digest", "{bad}");
            let err = sample().put(oci(bad)).unwrap_err();
            assert!(
                matches!(&err, ManifestError::BadOciDigest { path, digest } if path == "oci" && digest == bad)
            );
        }
        let mut m = sample();
        m.put(oci(IMAGE)).unwrap();
        let json = String::from_utf8(m.to_json()).unwrap();
        assert_eq!(Manifest::from_json("m", json.as_bytes()).unwrap(), m);
        let edited = json.replace(IMAGE, "sha256:../../x");
        let err = Manifest::from_json("m", edited.as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::BadOciDigest { .. }), "{err}");
        assert!(err.to_string().contains("sha256:../../x"), "{err}");
    }
}
