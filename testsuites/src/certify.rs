//! Certifying a built image: every requirement of the contracts its blueprint claims (with everything they
//! extend) checked against the artifacts themselves, static checks on each root file system (the raw disk's
//! ext4, the OCI layers), runtime checks in one boot of the disk image, and the verdict written as
//! `report/certification.json` and `report/junit.xml`, listed in `manifest.json`.
//!
//! The certified artifacts are exactly the tested ones: their digests are checked against the manifest
//! before the tests and again after them, and nothing writes to them (the VM boots from a throwaway
//! overlay). A qcow2 disk is certified as the same disk as the raw one (`qemu-img compare`). An OCI
//! layout's digest is its image manifest's (see [`Artifact::digested_file`]), and the image the static
//! checks read is that one: signing the layout later adds to its `index.json` but never changes it, so the
//! report's digest is the one the signed `manifest.json` lists.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use kiln_blueprint::{
    manifest::{Artifact, ArtifactKind, Manifest, ManifestError},
    model::ContractRef,
};
use kiln_contract::{model::Severity, ContractId, ContractSet, Requirement, Stage};
use serde::Serialize;

use crate::{
    image::{compare_qcow2_with_raw, DiskImage, DiskMatch, ImageError, OciImage},
    outcome::{CheckError, CheckResult, Outcome},
    runtime::{run_runtime_checks, RuntimeOptions},
    statics::{check_timed, StaticContext},
};

/// Version of the certification report's layout.
pub const CERTIFICATION_SCHEMA: &str = "kiln.certification/v1";
/// Where the reports go inside an output folder.
pub const REPORT_DIR: &str = "report";
pub const CERTIFICATION_FILE: &str = "report/certification.json";
pub const JUNIT_FILE: &str = "report/junit.xml";
pub const CONSOLE_FILE: &str = "report/console.log";

/// Why an image could not be certified at all (a Fail of a check is not an error: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("reading the build's manifest")]
    Manifest(#[from] ManifestError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no contract in the contracts folder satisfies `{request}`")]
    NoContract { request: String },
    #[error("`{0}` is not a contract request (NAME@RANGE, e.g. base-os@^1)")]
    BadRequest(String),
    #[error("the image claims no contract: nothing to certify (name contracts in the blueprint or with --contract)")]
    NothingClaimed,
    #[error(
        "{path}: its sha256 is {found}, but manifest.json says {expected}: the artifact is not the one built"
    )]
    DigestMismatch { path: String, expected: String, found: String },
    #[error(
        "{path}: the image its index.json names is {found}, but manifest.json records image manifest {expected}"
    )]
    OciImageNotRecorded { path: String, expected: String, found: String },
    #[error("{path} changed while it was tested (sha256 {before} before, {after} after)")]
    ChangedDuringTest { path: String, before: String, after: String },
    #[error("the output has no artifact to test (no raw disk, qcow2 or OCI image)")]
    NoArtifacts,
    #[error("reading the image")]
    Image(#[from] ImageError),
}

/// What to certify, how.
#[derive(Debug, Clone)]
pub struct CertifyOptions {
    /// Requests like `base-os@^1`; empty: the ones the manifest lists.
    pub requests: Vec<String>,
    pub runtime: RuntimeOptions,
}

/// The image certified.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRef {
    pub name: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree_digest: Option<String>,
}

/// Counts of outcomes, each check of a requirement on an artifact once (a requirement two claimed contracts
/// share counts once).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
    pub error: usize,
}

/// One requirement checked on one artifact.
#[derive(Debug, Clone, Serialize)]
pub struct ReportedCheck {
    /// The contract that declares the requirement (`base-os@1.0.0` for a requirement ssh-server inherits).
    pub declared_by: String,
    pub description: String,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// The artifact's path in the output folder.
    pub artifact: String,
    #[serde(flatten)]
    pub result: CheckResult,
}

/// One claimed contract's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ContractReport {
    /// As claimed: `ssh-server@^1`.
    pub requested: String,
    /// The contract that answered: `ssh-server@1.0.0`.
    pub contract: String,
    /// Contracts certified along with it (those it extends).
    pub includes: Vec<String>,
    pub passed: bool,
    pub checks: Vec<ReportedCheck>,
}

/// The boot that ran the runtime checks.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeSummary {
    pub artifact: String,
    pub accelerator: &'static str,
    pub booted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_secs: Option<f64>,
    pub vm_secs: f64,
    /// The serial console, in the output folder.
    pub console: String,
}

/// `report/certification.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Certification {
    pub schema: &'static str,
    pub image: ImageRef,
    /// Every artifact tested, with the digest verified before and after the tests (for an OCI layout, that
    /// of its image manifest).
    pub artifacts: Vec<Artifact>,
    pub contracts: Vec<ContractReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSummary>,
    /// Other facts about the artifacts (the qcow2 disk equal to the raw one).
    pub artifact_checks: Vec<CheckResult>,
    pub summary: Summary,
    /// Every claimed contract passed: no Fail and no checker error.
    pub passed: bool,
    /// Contracts certified (`name@version`), those extended included; empty unless `passed`.
    pub certified: Vec<String>,
}

fn sha256_file(path: &Path) -> Result<String, CertifyError> {
    kiln_blueprint::manifest::sha256_file(path)
        .map(|(digest, _)| digest)
        .map_err(|source| CertifyError::Io { path: path.to_owned(), source })
}

fn verify_digests(dir: &Path, artifacts: &[Artifact]) -> Result<Vec<String>, CertifyError> {
    artifacts
        .iter()
        .map(|a| {
            let found = sha256_file(&dir.join(a.digested_file()))?;
            if found != a.sha256 {
                return Err(CertifyError::DigestMismatch {
                    path: a.path.clone(),
                    expected: a.sha256.clone(),
                    found,
                });
            }
            Ok(found)
        })
        .collect()
}

/// Certify the build output in `dir` against `contracts`, and write the reports into it.
pub fn certify(
    dir: &Path,
    contracts: &ContractSet,
    opts: &CertifyOptions,
) -> Result<Certification, CertifyError> {
    let mut manifest = Manifest::read(dir)?;
    let requests: Vec<String> =
        if opts.requests.is_empty() { manifest.contracts.clone() } else { opts.requests.clone() };
    if requests.is_empty() {
        return Err(CertifyError::NothingClaimed);
    }
    // Resolve every request before touching anything.
    let mut claimed = Vec::new();
    for r in &requests {
        let request: ContractRef = kiln_blueprint::model::syntax::contract_ref(r)
            .map_err(|_| CertifyError::BadRequest(r.clone()))?;
        let contract =
            contracts.resolve(&request).ok_or_else(|| CertifyError::NoContract { request: r.clone() })?;
        claimed.push((r.clone(), contract));
    }

    let images: Vec<Artifact> = manifest
        .artifacts
        .iter()
        .filter(|a| matches!(a.kind, ArtifactKind::Raw | ArtifactKind::Qcow2 | ArtifactKind::Oci))
        .cloned()
        .collect();
    if images.is_empty() {
        return Err(CertifyError::NoArtifacts);
    }
    let before = verify_digests(dir, &images)?;

    // Every requirement once (a requirement inherited by two claimed contracts is checked once).
    let mut requirements: BTreeMap<(ContractId, String), &Requirement> = BTreeMap::new();
    for (_, c) in &claimed {
        for (declared_by, req) in contracts.effective(c) {
            requirements.entry((declared_by, req.id.clone())).or_insert(req);
        }
    }
    let raw = images.iter().find(|a| a.kind == ArtifactKind::Raw);
    let qcow2 = images.iter().find(|a| a.kind == ArtifactKind::Qcow2);
    let oci = images.iter().find(|a| a.kind == ArtifactKind::Oci);

    // Results by (declaring contract, requirement id) → rows (artifact, result).
    let mut rows: BTreeMap<(ContractId, String), Vec<(String, CheckResult)>> = BTreeMap::new();
    let statics: Vec<(&(ContractId, String), &&Requirement)> =
        requirements.iter().filter(|(_, r)| r.check.stage() == Stage::Static).collect();
    let mut artifact_checks = Vec::new();

    if let Some(a) = raw {
        let disk = DiskImage::open(&dir.join(&a.path))?;
        let ctx = StaticContext::new(&disk, None);
        for (key, req) in &statics {
            rows.entry((*key).clone())
                .or_default()
                .push((a.path.clone(), check_timed(&ctx, &req.id, &req.check)));
        }
    }
    if let (Some(q), Some(r)) = (qcow2, raw) {
        let started = Instant::now();
        let outcome = match compare_qcow2_with_raw(&dir.join(&q.path), &dir.join(&r.path)) {
            Ok(DiskMatch::Same) => Ok(Outcome::Pass),
            Ok(DiskMatch::Differs(how)) => {
                Ok(Outcome::fail(format!("{} holds the same disk as {}", q.path, r.path), how))
            }
            Err(e) => Err(CheckError::new(e.to_string())),
        };
        artifact_checks.push(CheckResult {
            id: "qcow2-equals-raw".into(),
            kind: "qemu-img-compare".into(),
            outcome,
            duration: started.elapsed(),
        });
    }
    if let Some(a) = oci {
        let image = OciImage::open(&dir.join(&a.path))?;
        if image.manifest_digest() != a.sha256 {
            return Err(CertifyError::OciImageNotRecorded {
                path: a.path.clone(),
                expected: a.sha256.clone(),
                found: image.manifest_digest().to_owned(),
            });
        }
        let ctx = StaticContext::new(&image, Some(image.config()));
        for (key, req) in &statics {
            rows.entry((*key).clone())
                .or_default()
                .push((a.path.clone(), check_timed(&ctx, &req.id, &req.check)));
        }
    }

    // Runtime: one boot of the disk image (the raw one, else the qcow2) for every runtime requirement.
    let runtime_reqs: Vec<(&(ContractId, String), &&Requirement)> =
        requirements.iter().filter(|(_, r)| r.check.stage() == Stage::Runtime).collect();
    let mut runtime = None;
    if !runtime_reqs.is_empty() {
        let boot = raw.or(qcow2);
        match boot {
            None => {
                for (key, req) in &runtime_reqs {
                    let artifact = oci.map_or_else(String::new, |a| a.path.clone());
                    rows.entry((*key).clone()).or_default().push((
                        artifact,
                        CheckResult {
                            id: req.id.clone(),
                            kind: req.check.kind().into(),
                            outcome: Ok(Outcome::skip("the image has no disk to boot (OCI only): runtime checks need a raw or qcow2 disk")),
                            duration: Duration::ZERO,
                        },
                    ));
                }
            }
            Some(a) => {
                // Ids may repeat across contracts: the VM gets unique positions, results go back by position.
                let checks: Vec<(String, &kiln_contract::Check)> =
                    runtime_reqs.iter().map(|((c, id), r)| (format!("{}/{id}", c.name), &r.check)).collect();
                let refs: Vec<(&str, &kiln_contract::Check)> =
                    checks.iter().map(|(id, c)| (id.as_str(), *c)).collect();
                match run_runtime_checks(&dir.join(&a.path), a.kind, &refs, &opts.runtime) {
                    Ok(report) => {
                        write_file(dir, CONSOLE_FILE, report.console.as_bytes())?;
                        for (((key, req), (_, _)), result) in
                            runtime_reqs.iter().zip(&checks).zip(report.results.iter())
                        {
                            let mut result = result.clone();
                            result.id = req.id.clone();
                            rows.entry((*key).clone()).or_default().push((a.path.clone(), result));
                        }
                        runtime = Some(RuntimeSummary {
                            artifact: a.path.clone(),
                            accelerator: report.accelerator,
                            booted: report.booted,
                            settled_secs: report.settled_secs,
                            vm_secs: report.vm_secs,
                            console: CONSOLE_FILE.into(),
                        });
                    }
                    Err(e) => {
                        // The VM could not be run: every runtime check's checker broke; none is a Fail.
                        let message = error_chain(&e);
                        for (key, req) in &runtime_reqs {
                            rows.entry((*key).clone()).or_default().push((
                                a.path.clone(),
                                CheckResult {
                                    id: req.id.clone(),
                                    kind: req.check.kind().into(),
                                    outcome: Err(CheckError::new(message.clone())),
                                    duration: Duration::ZERO,
                                },
                            ));
                        }
                    }
                }
            }
        }
    }

    // Contract by contract.
    let mut reports = Vec::new();
    let mut summary = Summary::default();
    let count = |s: &mut Summary, r: &CheckResult| match &r.outcome {
        Ok(Outcome::Pass) => s.pass += 1,
        Ok(Outcome::Skip { .. }) => s.skip += 1,
        Ok(Outcome::Fail { .. }) => s.fail += 1,
        Err(_) => s.error += 1,
    };
    // Each check once, however many claimed contracts include its requirement.
    for r in artifact_checks.iter().chain(rows.values().flatten().map(|(_, r)| r)) {
        count(&mut summary, r);
    }
    let artifact_ok =
        artifact_checks.iter().all(|r| matches!(r.outcome, Ok(Outcome::Pass | Outcome::Skip { .. })));
    let mut certified = Vec::new();
    for (requested, contract) in &claimed {
        let mut checks = Vec::new();
        for (declared_by, req) in contracts.effective(contract) {
            for (artifact, result) in rows.get(&(declared_by.clone(), req.id.clone())).into_iter().flatten() {
                checks.push(ReportedCheck {
                    declared_by: declared_by.to_string(),
                    description: req.description.clone(),
                    severity: req.severity,
                    runbook: req.runbook.clone(),
                    artifact: artifact.clone(),
                    result: result.clone(),
                });
            }
        }
        let passed = artifact_ok
            && checks.iter().all(|c| matches!(c.result.outcome, Ok(Outcome::Pass | Outcome::Skip { .. })));
        let includes: Vec<String> = contracts.lineage(contract).iter().map(|c| c.id.to_string()).collect();
        if passed {
            certified.extend(includes.iter().cloned());
        }
        reports.push(ContractReport {
            requested: requested.clone(),
            contract: contract.id.to_string(),
            includes,
            passed,
            checks,
        });
    }
    let passed = reports.iter().all(|r| r.passed);
    certified.sort();
    certified.dedup();
    if !passed {
        certified.clear();
    }

    // The artifacts are what they were.
    let after = verify_digests(dir, &images).map_err(|e| match e {
        CertifyError::DigestMismatch { path, expected, found } => {
            CertifyError::ChangedDuringTest { path, before: expected, after: found }
        }
        other => other,
    })?;
    debug_assert_eq!(before, after);

    let cert = Certification {
        schema: CERTIFICATION_SCHEMA,
        image: ImageRef {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            tree_digest: manifest.tree_digest.clone(),
        },
        artifacts: images,
        contracts: reports,
        runtime,
        artifact_checks,
        summary,
        passed,
        certified,
    };
    let mut json = serde_json::to_vec_pretty(&cert)
        .map_err(|e| CertifyError::Io { path: dir.join(CERTIFICATION_FILE), source: e.into() })?;
    json.push(b'\n');
    write_file(dir, CERTIFICATION_FILE, &json)?;
    write_file(dir, JUNIT_FILE, crate::junit::junit_xml(&cert).as_bytes())?;
    for rel in [CERTIFICATION_FILE, JUNIT_FILE] {
        let path = dir.join(rel);
        let size =
            std::fs::metadata(&path).map_err(|source| CertifyError::Io { path: path.clone(), source })?.len();
        manifest.put(Artifact {
            kind: ArtifactKind::Report,
            path: rel.into(),
            sha256: sha256_file(&path)?,
            size,
        })?;
    }
    manifest.write(dir)?;
    Ok(cert)
}

/// An error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Write `dir/rel` atomically.
fn write_file(dir: &Path, rel: &str, data: &[u8]) -> Result<(), CertifyError> {
    let path = dir.join(rel);
    let io = |source| CertifyError::Io { path: path.clone(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(())
}
