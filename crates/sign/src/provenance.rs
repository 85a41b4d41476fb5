//! Build provenance: a SLSA v1 provenance predicate in an in-toto Statement v1, signed into a DSSE envelope
//! (`provenance.intoto.jsonl` of a build output, made by `kiln sign`).
//!
//! What the provenance says comes from two files of the output, both listed in `manifest.json`:
//! the manifest itself (the artifacts, which become the statement's subjects, the parent image, the plan
//! and tree digests) and `build/materials.json` ([`Materials`], kind `materials`), which the build writes:
//! the blueprint's path, digest and variables, its git repository and commit, SOURCE_DATE_EPOCH, kiln's
//! version and every `.deb` the build resolved with its archive URL and sha256. The build type
//! `https://kiln.invalid/build/v1` and its parameters are documented in `runbook/provenance.md`.
//!
//! [`provenance_statement`] and [`provenance_envelope`] are pure; [`write_provenance`] reads the output
//! folder, checks the materials against the manifest's digest, and writes the envelope and its manifest
//! entry.

use std::{collections::BTreeMap, path::Path};

use kiln_blueprint::manifest::{Artifact, ArtifactKind, Manifest, ManifestError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{
    dsse::{dsse_sign, Envelope},
    keys::SigningKey,
    sbom::DebInfo,
};

/// Schema of [`Materials`].
pub const MATERIALS_SCHEMA: &str = "kiln.materials/v1";
/// Where the build writes [`Materials`], relative to the output folder.
pub const MATERIALS_FILE: &str = "build/materials.json";
/// Where `kiln sign` writes the provenance envelope, relative to the output folder.
pub const PROVENANCE_FILE: &str = "provenance.intoto.jsonl";
/// The in-toto statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The SLSA provenance v1 predicate type.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// kiln's build type (documented in `runbook/provenance.md`).
pub const BUILD_TYPE: &str = "https://kiln.invalid/build/v1";
/// The DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The builder id when the caller names none: a build on someone's own machine.
pub const DEFAULT_BUILDER_ID: &str = "https://kiln.invalid/builder/local";

/// What a build resolved and used, written by the build as `build/materials.json` for the provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Materials {
    pub schema: String,
    /// The version of the kiln that built the image.
    pub kiln_version: String,
    pub blueprint: BlueprintSource,
    /// The blueprint's git repository, when it is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Repository>,
    pub source_date_epoch: i64,
    /// Every `.deb` the build resolved (base packages and the blueprint's), sorted by name and architecture.
    pub packages: Vec<DebInfo>,
}

/// The blueprint a build ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlueprintSource {
    /// Relative to its repository's top folder when it is in a git repository, else as kiln was given it.
    pub path: String,
    /// `sha256:…` of the blueprint file.
    pub digest: String,
    /// The effective variables (defaults with `--var` overrides).
    pub variables: BTreeMap<String, String>,
}

/// A git repository at a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    /// The remote (`origin`) URL, when the repository has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The commit (`HEAD`) the blueprint was built from.
    pub commit: String,
}

impl Materials {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn from_json(path: &str, bytes: &[u8]) -> Result<Self, ProvenanceError> {
        let m: Self = serde_json::from_slice(bytes)
            .map_err(|source| ProvenanceError::Materials { path: path.to_owned(), source })?;
        if m.schema != MATERIALS_SCHEMA {
            return Err(ProvenanceError::MaterialsSchema { path: path.to_owned(), found: m.schema });
        }
        Ok(m)
    }
}

/// An in-toto Statement v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    pub predicate_type: String,
    pub predicate: Provenance,
}

/// An in-toto ResourceDescriptor (subjects and resolved dependencies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Algorithm → lower-case hex (`sha256`, `gitCommit`).
    pub digest: BTreeMap<String, String>,
}

/// The SLSA v1 provenance predicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: ExternalParameters,
    pub internal_parameters: InternalParameters,
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// What the person building chose: the blueprint and its variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalParameters {
    pub blueprint: String,
    pub variables: BTreeMap<String, String>,
}

/// What the build platform set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InternalParameters {
    pub source_date_epoch: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: Builder,
    pub metadata: BuildMetadata,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Builder {
    pub id: String,
    pub version: BTreeMap<String, String>,
}

/// The build's identity: `urn:kiln:build:` and sha256 of its plan digest, tree digest and
/// SOURCE_DATE_EPOCH, the same for every build that made the same image. kiln writes no start and end
/// times (no wall-clock time in outputs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildMetadata {
    pub invocation_id: String,
}

/// A problem making the provenance of an output folder.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot read or write the provenance")]
    Io(#[from] std::io::Error),
    #[error("{}: the manifest lists no build materials ({MATERIALS_FILE}); rebuild the image with this kiln", dir.display())]
    NoMaterials { dir: std::path::PathBuf },
    #[error(
        "{path}: its sha256 is {found}, the manifest says {expected}: the output was changed after the build"
    )]
    MaterialsChanged { path: String, expected: String, found: String },
    #[error("{path}: not kiln build materials: {source}")]
    Materials { path: String, source: serde_json::Error },
    #[error("{path}: schema `{found}` is not supported (this kiln reads `{MATERIALS_SCHEMA}`)")]
    MaterialsSchema { path: String, found: String },
}

fn hex_of(digest: &str) -> String {
    digest.strip_prefix("sha256:").unwrap_or(digest).to_owned()
}

fn sha256_map(hex: String) -> BTreeMap<String, String> {
    BTreeMap::from([("sha256".to_owned(), hex)])
}

/// The provenance statement of a build output: every artifact of `manifest` except the provenance itself
/// as a subject (named by its path), the materials as parameters and resolved dependencies.
pub fn provenance_statement(manifest: &Manifest, materials: &Materials, builder_id: &str) -> Statement {
    let subject = manifest
        .artifacts
        .iter()
        .filter(|a| a.kind != ArtifactKind::Provenance)
        .map(|a| ResourceDescriptor {
            name: Some(a.path.clone()),
            uri: None,
            digest: sha256_map(hex_of(&a.sha256)),
        })
        .collect();

    let mut deps = Vec::new();
    if let Some(repo) = &materials.repository {
        deps.push(ResourceDescriptor {
            name: Some("blueprint repository".to_owned()),
            uri: repo
                .uri
                .as_ref()
                .map(|u| if u.starts_with("git+") { u.clone() } else { format!("git+{u}") }),
            digest: BTreeMap::from([("gitCommit".to_owned(), repo.commit.clone())]),
        });
    }
    deps.push(ResourceDescriptor {
        name: Some(materials.blueprint.path.clone()),
        uri: None,
        digest: sha256_map(hex_of(&materials.blueprint.digest)),
    });
    if let Some(parent) = &manifest.parent {
        deps.push(ResourceDescriptor {
            name: Some(format!("parent image {} {}", parent.name, parent.version)),
            uri: Some(parent.reference.clone()),
            digest: sha256_map(hex_of(&parent.digest)),
        });
    }
    deps.extend(materials.packages.iter().map(|d| ResourceDescriptor {
        name: Some(d.archive_path.clone()),
        uri: Some(d.url.clone()),
        digest: sha256_map(d.sha256.clone()),
    }));

    let identity = format!(
        "{}\n{}\n{}",
        manifest.plan_digest,
        manifest.tree_digest.as_deref().unwrap_or(""),
        materials.source_date_epoch
    );
    Statement {
        type_: STATEMENT_TYPE.to_owned(),
        subject,
        predicate_type: PREDICATE_TYPE.to_owned(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.to_owned(),
                external_parameters: ExternalParameters {
                    blueprint: materials.blueprint.path.clone(),
                    variables: materials.blueprint.variables.clone(),
                },
                internal_parameters: InternalParameters { source_date_epoch: materials.source_date_epoch },
                resolved_dependencies: deps,
            },
            run_details: RunDetails {
                builder: Builder {
                    id: builder_id.to_owned(),
                    version: BTreeMap::from([("kiln".to_owned(), materials.kiln_version.clone())]),
                },
                metadata: BuildMetadata {
                    invocation_id: format!(
                        "urn:kiln:build:{}",
                        hex::encode(Sha256::digest(identity.as_bytes()))
                    ),
                },
            },
        },
    }
}

/// The statement as compact JSON (the DSSE payload).
pub fn statement_json(statement: &Statement) -> Vec<u8> {
    serde_json::to_vec(statement).unwrap_or_default()
}

/// The statement signed with `key` into a DSSE envelope of type `application/vnd.in-toto+json`.
pub fn provenance_envelope(statement: &Statement, key: &SigningKey) -> Envelope {
    dsse_sign(PAYLOAD_TYPE, &statement_json(statement), key)
}

/// Make the provenance of the output folder `dir`: read its manifest and build materials (checked against
/// the manifest's digest), sign the statement with `key`, write [`PROVENANCE_FILE`] (the envelope on one
/// line) and list it in the manifest (written back). The manifest's own signature comes after this.
pub fn write_provenance(dir: &Path, key: &SigningKey, builder_id: &str) -> Result<Manifest, ProvenanceError> {
    let mut manifest = Manifest::read(dir)?;
    let entry = manifest
        .artifacts
        .iter()
        .find(|a| a.kind == ArtifactKind::Materials && a.path == MATERIALS_FILE)
        .ok_or_else(|| ProvenanceError::NoMaterials { dir: dir.to_owned() })?;
    let path = dir.join(&entry.path);
    let bytes = fs_err::read(&path)?;
    let found = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let shown = path.display().to_string();
    if found != entry.sha256 {
        return Err(ProvenanceError::MaterialsChanged { path: shown, expected: entry.sha256.clone(), found });
    }
    let materials = Materials::from_json(&shown, &bytes)?;
    let statement = provenance_statement(&manifest, &materials, builder_id);
    let mut line = serde_json::to_vec(&provenance_envelope(&statement, key)).unwrap_or_default();
    line.push(b'\n');
    fs_err::write(dir.join(PROVENANCE_FILE), &line)?;
    manifest.put(Artifact {
        kind: ArtifactKind::Provenance,
        path: PROVENANCE_FILE.to_owned(),
        sha256: format!("sha256:{}", hex::encode(Sha256::digest(&line))),
        size: line.len() as u64,
    })?;
    manifest.write(dir)?;
    Ok(manifest)
}
