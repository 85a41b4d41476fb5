//! Seeds a catalog folder with one family of many versions, quickly, for `bench/catalog.sh`: the records go
//! in through the public store API (`MetaStore::write` and `Tx::insert_version`, in transactions of a
//! thousand versions) and each version's `manifest.json` is a real blob (`BlobStore::put`), instead of
//! publishing signed bundles one by one.
//!
//! `seed --data DIR [--family NAME] [--versions N]` (defaults: `bench-os`, 10000) prints one JSON line:
//! the family, how many versions, and the version `base-os@^1` in channel `stable` resolves to.
//!
//! The family looks like years of releases, one every 4 hours up to now (SOURCE_DATE_EPOCH when set):
//! - the oldest 90% are certified for `base-os@1.x` (1.0.0 … 1.3.0 as they age), the newest 10% only for
//!   `base-os@2.0.0`; every third is also certified for `ssh-server`;
//! - every version goes to channel `candidate`; every tenth to `stable`, two days after its publish;
//! - stable versions are supported, and deprecated 30 days after their successor became stable, end of
//!   life 90 days later; other versions reach end of life a year after their publish; one in 250 is
//!   revoked;
//! - of the three newest stable 1.x versions the newest is revoked and the next deprecated, so resolving
//!   `base-os@^1` in `stable` walks past the whole 2.x line and some 1.x versions before it answers.

use std::{path::PathBuf, process::ExitCode};

use kiln_blueprint::manifest::{Artifact, ArtifactKind, Manifest, MANIFEST_FILE};
use kiln_catalog::{
    model::{
        ArtifactRecord, ChannelMove, ContractId, Day, FileRecord, Lifecycle, LifecyclePolicy, ReleaseNotes,
        Revocation, Timestamp, VersionRecord,
    },
    store::{blobs::FsBlobs, sqlite::SqliteStore, BlobStore as _, MetaStore as _, NewAudit},
    CatalogError,
};
use sha2::Digest as _;

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;
/// Versions per metadata transaction.
const BATCH: usize = 1000;

fn usage() -> ExitCode {
    eprintln!("usage: seed --data DIR [--family NAME] [--versions N]");
    ExitCode::from(2)
}

fn digest_of(text: &str) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(text.as_bytes())))
}

/// How the family is laid out: which index is which version, and what happened to it.
struct Plan {
    family: String,
    n: usize,
    /// Versions below this index are the 1.x line.
    n1: usize,
    now: i64,
    /// The three newest stable 1.x versions: revoked, deprecated, the answer.
    revoked_stable: usize,
    deprecated_stable: usize,
    answer: usize,
}

impl Plan {
    fn new(family: String, n: usize, now: i64) -> Self {
        let n1 = n - n / 10;
        let revoked_stable = (n1 - 1) / 10 * 10;
        Self {
            family,
            n,
            n1,
            now,
            revoked_stable,
            deprecated_stable: revoked_stable - 10,
            answer: revoked_stable - 20,
        }
    }

    fn version(&self, i: usize) -> semver::Version {
        let (major, j) = if i < self.n1 { (1, i) } else { (2, i - self.n1) };
        semver::Version::new(major, (j / 100) as u64, (j % 100) as u64)
    }

    fn published(&self, i: usize) -> i64 {
        self.now - (self.n - i) as i64 * 4 * HOUR
    }

    fn stable(i: usize) -> bool {
        i % 10 == 0
    }

    fn promoted(&self, i: usize) -> i64 {
        self.published(i) + 2 * DAY
    }

    fn day(t: i64) -> Day {
        Day::of(Timestamp(t))
    }

    fn certified(&self, i: usize) -> Vec<ContractId> {
        let base = if i < self.n1 {
            semver::Version::new(1, (i * 4 / self.n1) as u64, 0)
        } else {
            semver::Version::new(2, 0, 0)
        };
        let mut out = vec![ContractId { name: "base-os".into(), version: base }];
        if i % 3 == 0 {
            let ssh = if i < self.n1 { semver::Version::new(1, 0, 0) } else { semver::Version::new(1, 1, 0) };
            out.push(ContractId { name: "ssh-server".into(), version: ssh });
        }
        out
    }

    fn lifecycle(&self, i: usize) -> Lifecycle {
        let mut l = Lifecycle::default();
        let revoked = i % 250 == 125 || i == self.revoked_stable;
        if revoked {
            l.revoked = Some(Revocation {
                reason: format!("CVE-2024-{:05}: vulnerable openssl in this build", 10_000 + i),
                at: Timestamp(self.published(i) + 3 * DAY),
                by: "token:security".into(),
                inherited_from: None,
            });
        }
        if !Self::stable(i) {
            l.end_of_life_on = Some(Self::day(self.published(i) + 365 * DAY));
            return l;
        }
        l.supported = true;
        l.supported_since = Some(Self::day(self.promoted(i)));
        let last_of_line = if i < self.n1 { i + 10 >= self.n1 } else { i + 10 >= self.n };
        if i == self.deprecated_stable {
            l.deprecated_on = Some(Self::day(self.now - 5 * DAY));
        } else if i == self.answer {
            l.deprecated_on = Some(Self::day(self.now + 90 * DAY));
        } else if !last_of_line && (i < self.answer || i >= self.n1) {
            let deprecated = self.promoted(i + 10) + 30 * DAY;
            l.deprecated_on = Some(Self::day(deprecated));
            if i < self.n1 {
                l.end_of_life_on = Some(Self::day(deprecated + 90 * DAY));
            }
        }
        l
    }

    /// The version's signed manifest (as a build writes it) and its record.
    fn record(&self, i: usize) -> (Vec<u8>, VersionRecord) {
        let version = self.version(i);
        let v = version.to_string();
        let mut m = Manifest::new(
            &self.family,
            &v,
            &digest_of(&format!("blueprint {v}")),
            &digest_of(&format!("plan {v}")),
        );
        m.contracts = vec![if i < self.n1 { "base-os@^1".into() } else { "base-os@^2".into() }];
        m.tree_digest = Some(digest_of(&format!("tree {v}")));
        let artifacts = [
            (ArtifactKind::Raw, "disk.raw", 2u64 << 30),
            (ArtifactKind::Qcow2, "disk.qcow2", 412 << 20),
            (ArtifactKind::Oci, "oci", 1_391),
            (ArtifactKind::Sbom, "sbom.spdx.json", 281_733),
            (ArtifactKind::Materials, "build/materials.json", 64_220),
            (ArtifactKind::Provenance, "provenance.intoto.jsonl", 91_004),
            (ArtifactKind::Report, "report/certification.json", 38_410),
            (ArtifactKind::Report, "report/junit.xml", 22_871),
        ];
        for (kind, path, size) in artifacts {
            let sha256 = digest_of(&format!("{v} {path}"));
            m.put(Artifact { kind, path: path.into(), sha256, size }).expect("a valid artifact");
        }
        let json = m.to_json();
        let manifest_digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&json)));
        let mut files = vec![FileRecord {
            path: MANIFEST_FILE.into(),
            digest: manifest_digest.clone(),
            size: json.len() as u64,
        }];
        for a in &m.artifacts {
            files.push(FileRecord { path: a.digested_file(), digest: a.sha256.clone(), size: a.size });
            let sig = format!("signatures/{}.sig", a.digested_file());
            files.push(FileRecord { digest: digest_of(&format!("{v} {sig}")), path: sig, size: 96 });
        }
        files.push(FileRecord {
            path: "signatures/manifest.json.sig".into(),
            digest: digest_of(&format!("{v} manifest signature")),
            size: 96,
        });
        files.sort();
        let record = VersionRecord {
            family: self.family.clone(),
            version,
            manifest_digest,
            image_digest: m.artifacts.iter().find(|a| a.kind == ArtifactKind::Oci).map(|a| a.sha256.clone()),
            published_at: Timestamp(self.published(i)),
            published_by: "token:ci".into(),
            signed_by: "SHA256:seeded-release-key".into(),
            parent: None,
            claimed: m.contracts.clone(),
            certified: self.certified(i),
            artifacts: m.artifacts.iter().map(ArtifactRecord::from).collect(),
            files,
            policy: LifecyclePolicy { support_months: None, deprecate_after_days: Some(30) },
            lifecycle: self.lifecycle(i),
        };
        (json, record)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut data, mut family, mut n) = (None, "bench-os".to_owned(), 10_000usize);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--data", Some(d)) => data = Some(PathBuf::from(d)),
            ("--family", Some(f)) => family = f.clone(),
            ("--versions", Some(v)) => match v.parse() {
                Ok(v) if v >= 100 => n = v,
                _ => return usage(),
            },
            _ => return usage(),
        }
    }
    let Some(data) = data else { return usage() };
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Timestamp::now().0);
    match seed(&data, Plan::new(family, n, now)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("seed: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn seed(data: &std::path::Path, plan: Plan) -> Result<(), CatalogError> {
    fs_err::create_dir_all(data)
        .map_err(|source| kiln_catalog::store::StoreError::Io { path: data.into(), source })?;
    let meta = SqliteStore::open(&data.join("catalog.db"))?;
    let blobs = FsBlobs::open(data)?;
    let mut previous_stable = None;
    for start in (0..plan.n).step_by(BATCH) {
        let batch: Vec<(usize, Vec<u8>, VersionRecord)> = (start..(start + BATCH).min(plan.n))
            .map(|i| {
                let (json, record) = plan.record(i);
                (i, json, record)
            })
            .collect();
        // The manifests first, on a few threads (each blob is fsynced), then the records that name them.
        std::thread::scope(|s| {
            let workers: Vec<_> = batch
                .chunks(batch.len().div_ceil(8))
                .map(|chunk| {
                    let blobs = &blobs;
                    s.spawn(move || {
                        chunk.iter().try_for_each(|(_, json, r)| {
                            blobs.put(&r.manifest_digest, Some(json.len() as u64), &mut &json[..]).map(|_| ())
                        })
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| w.join().expect("a blob writer panicked"))
        })?;
        meta.write(&mut |tx| {
            let mut prev = previous_stable.clone();
            for (i, _, r) in &batch {
                let notes = ReleaseNotes {
                    markdown: format!("# {} {}\n\nCertified for {:?}.\n", r.family, r.version, r.certified),
                    html: format!("<h1>{} {}</h1>\n", r.family, r.version),
                };
                tx.insert_version(r, &notes)?;
                tx.append_audit(&NewAudit {
                    at: r.published_at,
                    actor: r.published_by.clone(),
                    action: "publish",
                    family: Some(r.family.clone()),
                    version: Some(r.version.clone()),
                    detail: serde_json::json!({"manifest_digest": r.manifest_digest, "certified": r.certified}),
                })?;
                let at = r.published_at;
                tx.move_channel(
                    &r.family,
                    "candidate",
                    &ChannelMove {
                        at,
                        by: "token:ci".into(),
                        from: (*i > 0).then(|| plan.version(i - 1)),
                        to: r.version.clone(),
                    },
                )?;
                if Plan::stable(*i) {
                    let at = Timestamp(plan.promoted(*i));
                    let mv = ChannelMove { at, by: "token:release".into(), from: prev.clone(), to: r.version.clone() };
                    tx.move_channel(&r.family, "stable", &mv)?;
                    prev = Some(r.version.clone());
                }
            }
            previous_stable = prev;
            Ok(())
        })?;
    }
    println!(
        "{}",
        serde_json::json!({
            "family": plan.family,
            "versions": plan.n,
            "resolves_to": plan.version(plan.answer).to_string(),
            "newest": plan.version(plan.n - 1).to_string(),
        })
    );
    Ok(())
}
