//! A version's release notes, rendered at publish (pure: the bundle's bytes in, Markdown and HTML out; no
//! I/O, no clock).
//!
//! The notes compare the version with the newest older version of its family: the packages of the two
//! SPDX SBOMs (Debian version ordering decides upgrade or downgrade), the contracts and check outcomes of
//! the two certification reports (`kiln.certification/v1`), and the two blueprint texts (a unified diff).
//! They also give the header (publish time, parent image), the lifecycle dates and the known issues
//! selected for the version. [`context`] computes all of that as a serializable [`NotesContext`];
//! [`render`] renders it with the templates in `catalog/templates/` (carried in the binary).

use std::{cmp::Ordering, collections::BTreeMap};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use crate::{
    known_issues::KnownIssue,
    model::{Day, Lifecycle, ParentRef, ReleaseNotes, Timestamp},
};

const MARKDOWN_NAME: &str = "release-notes.md.j2";
const HTML_NAME: &str = "release-notes.html.j2";
const MARKDOWN_TEMPLATE: &str = include_str!("../templates/release-notes.md.j2");
const HTML_TEMPLATE: &str = include_str!("../templates/release-notes.html.j2");

/// The certification report layout the notes read.
pub const CERTIFICATION_SCHEMA: &str = "kiln.certification/v1";
/// SPDX ids of the image's own package and of its parent's (as `kiln-sign` writes them): not installed
/// packages.
const IMAGE_SPDX_IDS: [&str; 2] = ["SPDXRef-Image", "SPDXRef-ParentImage"];
/// `primaryPackagePurpose` values of packages that stand for images, not installed packages.
const IMAGE_PURPOSES: [&str; 2] = ["OPERATING_SYSTEM", "CONTAINER"];

/// What the notes of one version are made from.
#[derive(Debug, Clone)]
pub struct NotesInput<'a> {
    pub family: &'a str,
    pub version: &'a semver::Version,
    pub published_at: Timestamp,
    pub parent: Option<&'a ParentRef>,
    pub lifecycle: &'a Lifecycle,
    pub current: Build<'a>,
    /// The newest older version of the family, if any.
    pub previous: Option<(semver::Version, Build<'a>)>,
    /// Already selected for this family and version.
    pub known_issues: &'a [KnownIssue],
}

/// The files of one version's bundle the notes read.
#[derive(Debug, Clone, Copy)]
pub struct Build<'a> {
    /// `sbom.spdx.json` (SPDX 2.3 JSON).
    pub sbom: &'a [u8],
    /// `report/certification.json` (schema `kiln.certification/v1`).
    pub certification: &'a [u8],
    /// (path, text) of the blueprint, when the bundle has it.
    pub blueprint: Option<(&'a str, &'a str)>,
}

/// Which bundle file could not be read, of which version.
#[derive(Debug, thiserror::Error)]
pub enum NotesError {
    #[error("{file} of {version} is not the JSON document expected")]
    Json {
        version: semver::Version,
        file: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file} of {version}: {field} is `{found}`, expected {expected}")]
    Format {
        version: semver::Version,
        file: &'static str,
        field: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("rendering the release notes template {template}")]
    Template {
        template: &'static str,
        #[source]
        source: minijinja::Error,
    },
}

const SBOM_FILE: &str = "sbom.spdx.json";
const CERTIFICATION_FILE: &str = "report/certification.json";

// ---------------------------------------------------------------------------------------------------------
// The context the templates render.

/// Everything the templates show, computed from a [`NotesInput`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotesContext {
    pub family: String,
    pub version: String,
    pub published_at: String,
    pub parent: Option<ParentContext>,
    /// The version compared with; `None` for the first version of the family.
    pub previous: Option<String>,
    pub packages: PackagesSection,
    pub contracts: ContractsSection,
    /// Only when there is a previous version.
    pub blueprint: Option<BlueprintSection>,
    pub lifecycle: LifecycleSection,
    pub known_issues: Vec<IssueContext>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParentContext {
    pub family: String,
    pub version: String,
    pub digest: String,
    pub reference: String,
}

/// An installed package: `name version arch`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PackageRow {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// A package whose version changed: `old → new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageChange {
    pub name: String,
    pub arch: String,
    pub from: String,
    pub to: String,
}

/// The package diff, each list sorted by name (then architecture).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct PackagesSection {
    /// Installed packages of this version.
    pub total: usize,
    pub added: Vec<PackageRow>,
    pub removed: Vec<PackageRow>,
    pub upgraded: Vec<PackageChange>,
    pub downgraded: Vec<PackageChange>,
    /// Same name, architecture and version in both.
    pub unchanged: usize,
    /// Every package, for the first version of a family (nothing to compare with); else empty.
    pub all: Vec<PackageRow>,
}

/// A contract certified by both versions at different versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContractChange {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// A check whose outcome changed (or a failing check the previous report did not have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckChange {
    /// The contract declaring the requirement in this version's report (`base-os@1.1.0`).
    pub contract: String,
    pub description: String,
    pub artifact: String,
    /// `pass`, `fail`, `skip`, `error`, or `not checked`.
    pub before: String,
    pub now: String,
    /// This version's evidence: the failure's expected/found, the skip's reason, the error.
    pub detail: Option<String>,
}

/// Outcome counts of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CheckCounts {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
    pub error: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ContractsSection {
    /// What this version's report certified (`base-os@1.0.0`), as written.
    pub certified: Vec<String>,
    pub counts: Option<CheckCounts>,
    /// Contracts certified now whose name the previous version did not certify (`name@version`), sorted.
    pub added: Vec<String>,
    /// Contracts the previous version certified whose name this one does not (`name@version`), sorted.
    pub dropped: Vec<String>,
    pub changed: Vec<ContractChange>,
    pub now_failing: Vec<CheckChange>,
    pub now_passing: Vec<CheckChange>,
    pub now_skipped: Vec<CheckChange>,
    /// Checks this report has and the previous had not, and the other way round.
    pub new_checks: usize,
    pub gone_checks: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlueprintStatus {
    /// One of the two bundles has no blueprint text.
    NotInBundle,
    Unchanged,
    Changed,
}

/// One line of the diff, for the HTML's colours: `header`, `hunk`, `add`, `del`, `context`, `note`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffLine {
    pub kind: &'static str,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlueprintSection {
    pub status: BlueprintStatus,
    /// The unified diff (`--- 1.0.0/PATH`, `+++ 1.1.0/PATH`), when changed.
    pub diff: String,
    pub lines: Vec<DiffLine>,
    /// A Markdown code fence longer than any backtick run in the diff.
    pub fence: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokedContext {
    pub reason: String,
    pub at: String,
    pub by: String,
    pub inherited_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleSection {
    /// The state on the publish day.
    pub state: String,
    pub supported_since: Option<String>,
    pub deprecated_on: Option<String>,
    pub end_of_life_on: Option<String>,
    pub revoked: Option<RevokedContext>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssueContext {
    pub id: String,
    pub title: String,
    pub summary: String,
    pub workaround: Option<String>,
    pub runbook: Option<String>,
}

// ---------------------------------------------------------------------------------------------------------
// Reading the bundle files.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpdxDocument {
    spdx_version: String,
    #[serde(default)]
    packages: Vec<SpdxPackage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpdxPackage {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(default)]
    version_info: Option<String>,
    #[serde(default)]
    primary_package_purpose: Option<String>,
    #[serde(default)]
    external_refs: Vec<SpdxExternalRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpdxExternalRef {
    reference_type: String,
    reference_locator: String,
}

impl SpdxPackage {
    fn is_image(&self) -> bool {
        IMAGE_SPDX_IDS.contains(&self.spdx_id.as_str())
            || self.primary_package_purpose.as_deref().is_some_and(|p| IMAGE_PURPOSES.contains(&p))
    }

    /// The architecture: the `arch` qualifier of the package's `pkg:deb` purl, else the suffix of its SPDX
    /// id (`SPDXRef-Package-deb-NAME.ARCH`), else empty.
    fn arch(&self) -> String {
        let from_purl = self.external_refs.iter().find_map(|r| {
            if r.reference_type != "purl" || !r.reference_locator.starts_with("pkg:deb/") {
                return None;
            }
            let query = r.reference_locator.split_once('?')?.1;
            let query = query.split('#').next().unwrap_or(query);
            query.split('&').find_map(|q| q.strip_prefix("arch=")).map(str::to_owned)
        });
        from_purl
            .or_else(|| {
                self.spdx_id
                    .strip_prefix("SPDXRef-Package-deb-")
                    .and_then(|rest| rest.rsplit_once('.'))
                    .map(|(_, arch)| arch.to_owned())
            })
            .unwrap_or_default()
    }
}

/// Installed packages: (name, arch) → version.
type Installed = BTreeMap<(String, String), String>;

fn read_sbom(version: &semver::Version, bytes: &[u8]) -> Result<Installed, NotesError> {
    let doc: SpdxDocument = serde_json::from_slice(bytes).map_err(|source| NotesError::Json {
        version: version.clone(),
        file: SBOM_FILE,
        source,
    })?;
    if !doc.spdx_version.starts_with("SPDX-2.") {
        return Err(NotesError::Format {
            version: version.clone(),
            file: SBOM_FILE,
            field: "spdxVersion",
            found: doc.spdx_version,
            expected: "SPDX-2.x",
        });
    }
    let mut installed = Installed::new();
    for p in doc.packages.iter().filter(|p| !p.is_image()) {
        installed
            .entry((p.name.clone(), p.arch()))
            .or_insert_with(|| p.version_info.clone().unwrap_or_default());
    }
    Ok(installed)
}

#[derive(Deserialize)]
struct Report {
    schema: String,
    #[serde(default)]
    certified: Vec<String>,
    #[serde(default)]
    contracts: Vec<ReportContract>,
    #[serde(default)]
    summary: Option<CheckCounts>,
}

#[derive(Deserialize)]
struct ReportContract {
    #[serde(default)]
    checks: Vec<ReportCheck>,
}

#[derive(Deserialize)]
struct ReportCheck {
    declared_by: String,
    description: String,
    artifact: String,
    outcome: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    expected: Option<String>,
    #[serde(default)]
    found: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

impl ReportCheck {
    fn detail(&self) -> Option<String> {
        match self.outcome.as_str() {
            "fail" => Some(format!(
                "expected {}; found {}",
                self.expected.as_deref().unwrap_or("?"),
                self.found.as_deref().unwrap_or("?")
            )),
            "skip" => self.reason.clone(),
            "error" => self.error.clone(),
            _ => None,
        }
    }
}

fn read_report(version: &semver::Version, bytes: &[u8]) -> Result<Report, NotesError> {
    let report: Report = serde_json::from_slice(bytes).map_err(|source| NotesError::Json {
        version: version.clone(),
        file: CERTIFICATION_FILE,
        source,
    })?;
    if report.schema != CERTIFICATION_SCHEMA {
        return Err(NotesError::Format {
            version: version.clone(),
            file: CERTIFICATION_FILE,
            field: "schema",
            found: report.schema,
            expected: CERTIFICATION_SCHEMA,
        });
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------------------
// Comparing.

/// Debian version ordering (Policy 5.6.12); a version that does not parse compares as a plain string.
fn compare_debian(a: &str, b: &str) -> Ordering {
    match (kiln_debian::version::Version::parse(a), kiln_debian::version::Version::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

fn diff_packages(current: &Installed, previous: Option<&Installed>) -> PackagesSection {
    let row = |((name, arch), version): (&(String, String), &String)| PackageRow {
        name: name.clone(),
        version: version.clone(),
        arch: arch.clone(),
    };
    let mut s = PackagesSection { total: current.len(), ..Default::default() };
    let Some(previous) = previous else {
        s.all = current.iter().map(row).collect();
        return s;
    };
    for (key, version) in current {
        let Some(old) = previous.get(key) else {
            s.added.push(row((key, version)));
            continue;
        };
        let change = || PackageChange {
            name: key.0.clone(),
            arch: key.1.clone(),
            from: old.clone(),
            to: version.clone(),
        };
        match compare_debian(old, version) {
            Ordering::Less => s.upgraded.push(change()),
            Ordering::Greater => s.downgraded.push(change()),
            Ordering::Equal => s.unchanged += 1,
        }
    }
    s.removed = previous.iter().filter(|(k, _)| !current.contains_key(*k)).map(row).collect();
    s
}

/// `name@version` → (name, version); a string without `@` is all name.
fn split_contract(c: &str) -> (&str, &str) {
    c.split_once('@').unwrap_or((c, ""))
}

/// The outcome class a reader cares about: an error is a failure of the check.
fn class(outcome: &str) -> &str {
    match outcome {
        "fail" | "error" => "failing",
        other => other,
    }
}

/// Checks by (declaring contract's name, description, artifact): the contract's version is left out so a
/// check still matches across a contract version change. The first of duplicates counts.
fn checks_by_key(report: &Report) -> BTreeMap<(&str, &str, &str), &ReportCheck> {
    let mut map = BTreeMap::new();
    for c in report.contracts.iter().flat_map(|c| &c.checks) {
        let key = (split_contract(&c.declared_by).0, c.description.as_str(), c.artifact.as_str());
        map.entry(key).or_insert(c);
    }
    map
}

fn diff_contracts(current: &Report, previous: Option<&Report>) -> ContractsSection {
    let mut s = ContractsSection {
        certified: current.certified.clone(),
        counts: current.summary,
        ..Default::default()
    };
    let Some(previous) = previous else { return s };

    let by_name = |r: &Report| -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in &r.certified {
            let (name, version) = split_contract(c);
            m.entry(name.to_owned()).or_default().push(version.to_owned());
        }
        m.values_mut().for_each(|v| v.sort());
        m
    };
    let (now, before) = (by_name(current), by_name(previous));
    for (name, versions) in &now {
        match before.get(name) {
            None => s.added.extend(versions.iter().map(|v| format!("{name}@{v}"))),
            Some(old) if old != versions => s.changed.push(ContractChange {
                name: name.clone(),
                from: old.join(", "),
                to: versions.join(", "),
            }),
            Some(_) => {}
        }
    }
    for (name, versions) in &before {
        if !now.contains_key(name) {
            s.dropped.extend(versions.iter().map(|v| format!("{name}@{v}")));
        }
    }

    let (now, before) = (checks_by_key(current), checks_by_key(previous));
    for (key, check) in &now {
        let change = |before: &str| CheckChange {
            contract: check.declared_by.clone(),
            description: check.description.clone(),
            artifact: check.artifact.clone(),
            before: before.to_owned(),
            now: check.outcome.clone(),
            detail: check.detail(),
        };
        let Some(old) = before.get(key) else {
            s.new_checks += 1;
            if class(&check.outcome) == "failing" {
                s.now_failing.push(change("not checked"));
            }
            continue;
        };
        if class(&old.outcome) == class(&check.outcome) {
            continue;
        }
        match class(&check.outcome) {
            "failing" => s.now_failing.push(change(&old.outcome)),
            "pass" => s.now_passing.push(change(&old.outcome)),
            "skip" => s.now_skipped.push(change(&old.outcome)),
            _ => {}
        }
    }
    s.gone_checks = before.keys().filter(|k| !now.contains_key(*k)).count();
    s
}

fn diff_blueprints(
    previous_version: &semver::Version,
    previous: Option<(&str, &str)>,
    version: &semver::Version,
    current: Option<(&str, &str)>,
) -> BlueprintSection {
    let section = |status, diff: String| {
        let lines = diff
            .lines()
            .map(|l| {
                let kind = if l.starts_with("--- ") || l.starts_with("+++ ") {
                    "header"
                } else if l.starts_with("@@") {
                    "hunk"
                } else if l.starts_with('+') {
                    "add"
                } else if l.starts_with('-') {
                    "del"
                } else if l.starts_with('\\') {
                    "note"
                } else {
                    "context"
                };
                DiffLine { kind, text: l.to_owned() }
            })
            .collect();
        let longest = diff.split(|c| c != '`').map(str::len).max().unwrap_or(0);
        BlueprintSection { status, fence: "`".repeat(longest.max(2) + 1), lines, diff }
    };
    let (Some((old_path, old)), Some((new_path, new))) = (previous, current) else {
        return section(BlueprintStatus::NotInBundle, String::new());
    };
    if old == new {
        return section(BlueprintStatus::Unchanged, String::new());
    }
    let mut diff = similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{previous_version}/{old_path}"), &format!("{version}/{new_path}"))
        .to_string();
    if !diff.ends_with('\n') {
        diff.push('\n');
    }
    section(BlueprintStatus::Changed, diff)
}

fn lifecycle_section(l: &Lifecycle, published_at: Timestamp) -> LifecycleSection {
    let day = |d: Option<Day>| d.map(|d| d.to_string());
    LifecycleSection {
        state: l.state_on(Day::of(published_at)).to_string(),
        supported_since: day(l.supported_since),
        deprecated_on: day(l.deprecated_on),
        end_of_life_on: day(l.end_of_life_on),
        revoked: l.revoked.as_ref().map(|r| RevokedContext {
            reason: r.reason.clone(),
            at: r.at.to_string(),
            by: r.by.clone(),
            inherited_from: r.inherited_from.clone(),
        }),
    }
}

/// Computes what the notes show.
pub fn context(input: &NotesInput<'_>) -> Result<NotesContext, NotesError> {
    let current_packages = read_sbom(input.version, input.current.sbom)?;
    let current_report = read_report(input.version, input.current.certification)?;
    let (packages, contracts, blueprint) = match &input.previous {
        None => (diff_packages(&current_packages, None), diff_contracts(&current_report, None), None),
        Some((pv, pb)) => {
            let previous_packages = read_sbom(pv, pb.sbom)?;
            let previous_report = read_report(pv, pb.certification)?;
            (
                diff_packages(&current_packages, Some(&previous_packages)),
                diff_contracts(&current_report, Some(&previous_report)),
                Some(diff_blueprints(pv, pb.blueprint, input.version, input.current.blueprint)),
            )
        }
    };
    Ok(NotesContext {
        family: input.family.to_owned(),
        version: input.version.to_string(),
        published_at: input.published_at.to_string(),
        parent: input.parent.map(|p| ParentContext {
            family: p.family.clone(),
            version: p.version.to_string(),
            digest: p.digest.clone(),
            reference: p.reference.clone(),
        }),
        previous: input.previous.as_ref().map(|(v, _)| v.to_string()),
        packages,
        contracts,
        blueprint,
        lifecycle: lifecycle_section(input.lifecycle, input.published_at),
        known_issues: input
            .known_issues
            .iter()
            .map(|i| IssueContext {
                id: i.id.clone(),
                title: i.title.clone(),
                summary: i.summary.clone(),
                workaround: i.workaround.clone(),
                runbook: i.runbook.clone(),
            })
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------------------
// Rendering.

/// Markdown-escapes text for one line (a table cell, a list item, a paragraph): newlines become spaces and
/// every character Markdown could read as markup is backslash-escaped.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last_space = false;
    for c in s.trim().chars() {
        if c == '\n' || c == '\r' {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
            continue;
        }
        last_space = c == ' ';
        if "\\`*_~[]<>|#".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|name| if name == HTML_NAME { AutoEscape::Html } else { AutoEscape::None });
    env.add_filter("md", |s: String| md(&s));
    env.set_formatter(html_formatter);
    env
}

/// A minijinja formatter that HTML-escapes strings like minijinja's own, but leaves `/` alone (paths,
/// digests, URLs); the release notes and the web pages render with it.
pub(crate) fn html_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    match value.as_str() {
        Some(s) if state.auto_escape() == AutoEscape::Html && !value.is_safe() => {
            out.write_str(&html_escape(s)).map_err(minijinja::Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values (`/` stays).
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn render_one(
    env: &mut Environment<'static>,
    name: &'static str,
    source: &'static str,
    ctx: &NotesContext,
) -> Result<String, NotesError> {
    let err = |source| NotesError::Template { template: name, source };
    env.add_template(name, source).map_err(err)?;
    env.get_template(name).and_then(|t| t.render(ctx)).map_err(err)
}

/// Renders the release notes of a version, as Markdown and as a small self-contained HTML page.
pub fn render(input: &NotesInput<'_>) -> Result<ReleaseNotes, NotesError> {
    let ctx = context(input)?;
    let mut env = environment();
    Ok(ReleaseNotes {
        markdown: render_one(&mut env, MARKDOWN_NAME, MARKDOWN_TEMPLATE, &ctx)?,
        html: render_one(&mut env, HTML_NAME, HTML_TEMPLATE, &ctx)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::model::Revocation;

    fn v(s: &str) -> semver::Version {
        s.parse().unwrap()
    }

    /// A small SPDX 2.3 document as kiln-sign writes it: the image package, optionally its parent, and
    /// one package per (name, version, arch).
    fn sbom(packages: &[(&str, &str, &str)], parent: bool) -> Vec<u8> {
        let mut list = vec![json!({
            "SPDXID": "SPDXRef-Image", "name": "debian-minimal", "versionInfo": "1.0.0",
            "downloadLocation": "NOASSERTION", "primaryPackagePurpose": "OPERATING_SYSTEM"
        })];
        if parent {
            list.push(json!({
                "SPDXID": "SPDXRef-ParentImage", "name": "debian-base", "versionInfo": "2.0.0",
                "downloadLocation": "NOASSERTION", "primaryPackagePurpose": "CONTAINER"
            }));
        }
        for (name, version, arch) in packages {
            list.push(json!({
                "SPDXID": format!("SPDXRef-Package-deb-{}.{arch}", name.replace('+', "PLUS")),
                "name": name, "versionInfo": version, "downloadLocation": "NOASSERTION",
                "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                    "referenceLocator": format!("pkg:deb/debian/{name}@{version}?arch={arch}&distro=debian-12")}]
            }));
        }
        serde_json::to_vec(
            &json!({"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "packages": list}),
        )
        .unwrap()
    }

    /// One check: (declared_by, description, artifact, outcome).
    type Check<'a> = (&'a str, &'a str, &'a str, &'a str);

    fn check(c: &Check<'_>) -> Value {
        let mut v = json!({"declared_by": c.0, "description": c.1, "severity": "major", "artifact": c.2,
            "id": "x", "kind": "file", "outcome": c.3, "duration_secs": 0.0});
        match c.3 {
            "fail" => {
                v["expected"] = "mode 0640".into();
                v["found"] = "mode 0644".into();
            }
            "skip" => v["reason"] = "no runtime on an OCI image".into(),
            "error" => v["error"] = "no answer from the VM".into(),
            _ => {}
        }
        v
    }

    /// A certification report: `contracts` is (requested, contract, checks).
    fn report(certified: &[&str], contracts: &[(&str, &str, &[Check<'_>])]) -> Vec<u8> {
        let count = |o: &str| contracts.iter().flat_map(|c| c.2.iter()).filter(|c| c.3 == o).count();
        let contracts: Vec<Value> = contracts
            .iter()
            .map(|(requested, contract, checks)| {
                json!({"requested": requested, "contract": contract, "includes": [contract],
                    "passed": !checks.iter().any(|c| c.3 == "fail" || c.3 == "error"),
                    "checks": checks.iter().map(check).collect::<Vec<_>>()})
            })
            .collect();
        serde_json::to_vec(&json!({
            "schema": "kiln.certification/v1",
            "image": {"name": "debian-minimal", "version": "1.0.0"},
            "artifacts": [], "contracts": contracts, "artifact_checks": [],
            "summary": {"pass": count("pass"), "fail": count("fail"), "skip": count("skip"), "error": count("error")},
            "passed": count("fail") + count("error") == 0,
            "certified": certified,
        }))
        .unwrap()
    }

    const BLUEPRINT_1: &str = "name = \"debian-minimal\"\nversion = \"1.0.0\"\n\n[packages]\ninclude = [\"openssh-server\", \"vim-tiny\"]\n";
    const BLUEPRINT_2: &str = "name = \"debian-minimal\"\nversion = \"1.1.0\"\n\n[packages]\ninclude = [\"openssh-server\", \"curl\"]\n";

    /// Two versions of a family: the bytes each build is made of.
    struct Fixture {
        sbom: [Vec<u8>; 2],
        report: [Vec<u8>; 2],
        lifecycle: Lifecycle,
        issues: Vec<KnownIssue>,
        parent: ParentRef,
    }

    fn fixture() -> Fixture {
        let old = sbom(
            &[
                ("base-files", "12.4+deb12u5", "amd64"),
                ("libc6", "2.36-9+deb12u4", "amd64"),
                ("libc6", "2.36-9+deb12u4", "i386"),
                ("libssl3", "3.0.11-1~deb12u2", "amd64"),
                ("openssh-server", "1:9.2p1-2+deb12u2", "amd64"),
                ("tzdata", "2024a-0+deb12u1", "all"),
                ("vim-tiny", "2:9.0.1378-2", "amd64"),
            ],
            true,
        );
        let new = sbom(
            &[
                ("base-files", "12.4+deb12u5", "amd64"),
                ("curl", "7.88.1-10+deb12u5", "amd64"),
                ("libc6", "2.36-9+deb12u7", "amd64"),
                ("libc6", "2.36-9+deb12u4", "i386"),
                ("libssl3", "3.0.13-1~deb12u1", "amd64"),
                ("openssh-server", "1:9.2p1-2+deb12u3", "amd64"),
                ("tzdata", "2023c-5+deb12u1", "all"),
            ],
            true,
        );
        let base = "base-os@1.0.0";
        let old_report = report(
            &["base-os@1.0.0", "ssh-server@1.0.0", "legacy@2.0.0"],
            &[
                (
                    "base-os@^1",
                    base,
                    &[
                        (base, "/etc/os-release says the system is Debian", "disk.raw", "pass"),
                        (base, "/etc/shadow is not world-readable", "disk.raw", "fail"),
                        (base, "The system reaches multi-user.target in time", "disk.raw", "skip"),
                        (base, "No unit is failed after boot", "disk.raw", "pass"),
                        (base, "Gone in 1.1.0", "oci", "pass"),
                    ],
                ),
                (
                    "ssh-server@^1",
                    "ssh-server@1.0.0",
                    &[("ssh-server@1.0.0", "sshd is enabled", "disk.raw", "pass")],
                ),
                ("legacy@^2", "legacy@2.0.0", &[]),
            ],
        );
        let base = "base-os@1.1.0";
        let new_report = report(
            &["base-os@1.1.0", "ssh-server@1.0.0", "web@1.0.0"],
            &[
                (
                    "base-os@^1",
                    base,
                    &[
                        (base, "/etc/os-release says the system is Debian", "disk.raw", "pass"),
                        (base, "/etc/shadow is not world-readable", "disk.raw", "pass"),
                        (base, "The system reaches multi-user.target in time", "disk.raw", "pass"),
                        (base, "No unit is failed after boot", "disk.raw", "error"),
                        (base, "New in base-os 1.1.0 | with a pipe", "oci", "fail"),
                        (base, "Another new one", "oci", "pass"),
                    ],
                ),
                (
                    "ssh-server@^1",
                    "ssh-server@1.0.0",
                    &[("ssh-server@1.0.0", "sshd is enabled", "disk.raw", "skip")],
                ),
                ("web@^1", "web@1.0.0", &[]),
            ],
        );
        let lifecycle = Lifecycle {
            supported: false,
            supported_since: None,
            deprecated_on: None,
            end_of_life_on: Some("2028-11-22".parse().unwrap()),
            revoked: None,
        };
        let issues = crate::known_issues::parse(
            "known-issues.toml",
            r#"
[[issue]]
id = "KI-0007"
title = "Root <fs> does not grow"
families = ["debian-minimal"]
summary = """
The root partition keeps its size *as built*.
Enlarge it by hand."""
workaround = "Grow partition 2, then run resize2fs."
runbook = "runbook/blueprints.md"

[[issue]]
id = "KI-0008"
title = "Serial console only"
families = ["*"]
summary = "Boot messages go to ttyS0."
"#,
        )
        .unwrap();
        let parent = ParentRef {
            family: "debian-base".into(),
            version: v("2.0.0"),
            digest: "sha256:0a4afcd63c0233db97245ccd7bb67d4f8aa6ad0eeec17aca6c088f0fb804d56f".into(),
            reference: "catalog:debian-base@stable".into(),
        };
        Fixture { sbom: [old, new], report: [old_report, new_report], lifecycle, issues, parent }
    }

    impl Fixture {
        fn input(&self, version: &'static semver::Version) -> NotesInput<'_> {
            NotesInput {
                family: "debian-minimal",
                version,
                published_at: "2026-11-22T08:00:00Z".parse().unwrap(),
                parent: Some(&self.parent),
                lifecycle: &self.lifecycle,
                current: Build {
                    sbom: &self.sbom[1],
                    certification: &self.report[1],
                    blueprint: Some(("blueprints/debian-minimal/blueprint.toml", BLUEPRINT_2)),
                },
                previous: Some((
                    v("1.0.0"),
                    Build {
                        sbom: &self.sbom[0],
                        certification: &self.report[0],
                        blueprint: Some(("blueprints/debian-minimal/blueprint.toml", BLUEPRINT_1)),
                    },
                )),
                known_issues: &self.issues,
            }
        }
    }

    fn v110() -> &'static semver::Version {
        static V: std::sync::OnceLock<semver::Version> = std::sync::OnceLock::new();
        V.get_or_init(|| v("1.1.0"))
    }

    fn row(name: &str, version: &str, arch: &str) -> PackageRow {
        PackageRow { name: name.into(), version: version.into(), arch: arch.into() }
    }

    fn change(name: &str, arch: &str, from: &str, to: &str) -> PackageChange {
        PackageChange { name: name.into(), arch: arch.into(), from: from.into(), to: to.into() }
    }

    #[test]
    fn debian_ordering_decides_upgrades() {
        use Ordering::*;
        assert_eq!(compare_debian("1.2.3-1", "1.2.3-1+deb12u1"), Less);
        assert_eq!(compare_debian("1:1.0", "2.0"), Greater);
        assert_eq!(compare_debian("1.0~rc1-1", "1.0-1"), Less);
        assert_eq!(compare_debian("1.0", "1.0-0"), Equal);
        // Not Debian versions: plain string order, no failure.
        assert_eq!(compare_debian("not a version", "1.0"), Greater);
        assert_eq!(compare_debian("b c", "a c"), Greater);

        let installed = |p: &[(&str, &str)]| -> Installed {
            p.iter().map(|(n, v)| ((n.to_string(), "amd64".to_string()), v.to_string())).collect()
        };
        let old =
            installed(&[("a", "1.2.3-1"), ("b", "1:1.0"), ("c", "1.0~rc1-1"), ("d", "1.0"), ("e", "x y")]);
        let new = installed(&[
            ("a", "1.2.3-1+deb12u1"),
            ("b", "2.0"),
            ("c", "1.0-1"),
            ("d", "1.0-0"),
            ("e", "x z"),
        ]);
        let d = diff_packages(&new, Some(&old));
        assert_eq!(
            d.upgraded,
            [
                change("a", "amd64", "1.2.3-1", "1.2.3-1+deb12u1"),
                change("c", "amd64", "1.0~rc1-1", "1.0-1"),
                change("e", "amd64", "x y", "x z"),
            ]
        );
        assert_eq!(d.downgraded, [change("b", "amd64", "1:1.0", "2.0")]);
        assert_eq!(d.unchanged, 1);
    }

    #[test]
    fn package_diff_lists_exactly_what_changed() {
        let f = fixture();
        let ctx = context(&f.input(v110())).unwrap();
        let p = &ctx.packages;
        assert_eq!(p.total, 7, "the image and its parent are not packages");
        assert_eq!(p.added, [row("curl", "7.88.1-10+deb12u5", "amd64")]);
        assert_eq!(p.removed, [row("vim-tiny", "2:9.0.1378-2", "amd64")]);
        assert_eq!(
            p.upgraded,
            [
                change("libc6", "amd64", "2.36-9+deb12u4", "2.36-9+deb12u7"),
                change("libssl3", "amd64", "3.0.11-1~deb12u2", "3.0.13-1~deb12u1"),
                change("openssh-server", "amd64", "1:9.2p1-2+deb12u2", "1:9.2p1-2+deb12u3"),
            ]
        );
        assert_eq!(p.downgraded, [change("tzdata", "all", "2024a-0+deb12u1", "2023c-5+deb12u1")]);
        assert_eq!(p.unchanged, 2, "base-files, and libc6:i386 (keyed by name and architecture)");
        assert!(p.all.is_empty());
    }

    #[test]
    fn architecture_comes_from_the_purl_or_the_spdx_id() {
        let doc = json!({"spdxVersion": "SPDX-2.3", "packages": [
            {"SPDXID": "SPDXRef-Package-deb-libstdcPLUSPLUS6.arm64", "name": "libstdc++6", "versionInfo": "12.2.0-14"},
            {"SPDXID": "SPDXRef-Other", "name": "odd", "versionInfo": "1", "externalRefs": [
                {"referenceType": "purl", "referenceLocator": "pkg:deb/debian/odd@1?distro=debian-12&arch=riscv64#sub"}]},
        ]});
        let installed = read_sbom(&v("1.0.0"), &serde_json::to_vec(&doc).unwrap()).unwrap();
        let keys: Vec<_> = installed.keys().map(|(n, a)| format!("{n}:{a}")).collect();
        assert_eq!(keys, ["libstdc++6:arm64", "odd:riscv64"]);
    }

    #[test]
    fn first_version_lists_every_package() {
        let f = fixture();
        let input = NotesInput { previous: None, ..f.input(v110()) };
        let ctx = context(&input).unwrap();
        assert_eq!(ctx.previous, None);
        assert_eq!(ctx.packages.total, 7);
        assert_eq!(ctx.packages.all.len(), 7);
        assert_eq!(ctx.packages.all[0], row("base-files", "12.4+deb12u5", "amd64"));
        assert!(ctx.packages.added.is_empty() && ctx.packages.upgraded.is_empty());
        assert_eq!(ctx.blueprint, None);
        assert!(ctx.contracts.added.is_empty() && ctx.contracts.now_failing.is_empty());
        let notes = render(&input).unwrap();
        assert!(notes.markdown.contains("First version of the family"), "{}", notes.markdown);
        assert!(notes.html.contains("<li>First version of the family</li>"), "{}", notes.html);
        assert!(notes.markdown.contains("| tzdata | `2023c-5+deb12u1` | all |"), "{}", notes.markdown);
    }

    #[test]
    fn contract_changes_and_check_outcomes() {
        let f = fixture();
        let c = context(&f.input(v110())).unwrap().contracts;
        assert_eq!(c.certified, ["base-os@1.1.0", "ssh-server@1.0.0", "web@1.0.0"]);
        assert_eq!(c.counts, Some(CheckCounts { pass: 4, fail: 1, skip: 1, error: 1 }));
        assert_eq!(c.added, ["web@1.0.0"]);
        assert_eq!(c.dropped, ["legacy@2.0.0"]);
        assert_eq!(
            c.changed,
            [ContractChange { name: "base-os".into(), from: "1.0.0".into(), to: "1.1.0".into() }]
        );

        let brief = |rows: &[CheckChange]| -> Vec<String> {
            rows.iter()
                .map(|r| format!("{} [{}] {} -> {}", r.description, r.artifact, r.before, r.now))
                .collect()
        };
        // Matched across base-os 1.0.0 → 1.1.0; an error counts as failing; a new failing check is listed.
        assert_eq!(
            brief(&c.now_failing),
            [
                "New in base-os 1.1.0 | with a pipe [oci] not checked -> fail",
                "No unit is failed after boot [disk.raw] pass -> error",
            ]
        );
        assert_eq!(c.now_failing[0].detail.as_deref(), Some("expected mode 0640; found mode 0644"));
        assert_eq!(c.now_failing[1].detail.as_deref(), Some("no answer from the VM"));
        assert_eq!(c.now_failing[1].contract, "base-os@1.1.0");
        assert_eq!(
            brief(&c.now_passing),
            [
                "/etc/shadow is not world-readable [disk.raw] fail -> pass",
                "The system reaches multi-user.target in time [disk.raw] skip -> pass",
            ]
        );
        assert_eq!(brief(&c.now_skipped), ["sshd is enabled [disk.raw] pass -> skip"]);
        assert_eq!(c.now_skipped[0].detail.as_deref(), Some("no runtime on an OCI image"));
        assert_eq!((c.new_checks, c.gone_checks), (2, 1));
    }

    #[test]
    fn a_failure_that_stays_a_failure_is_not_news() {
        let check = |o| report(&[], &[("a@^1", "a@1.0.0", &[("a@1.0.0", "d", "disk.raw", o)])]);
        let (old, new) = (
            read_report(&v("1.0.0"), &check("fail")).unwrap(),
            read_report(&v("1.1.0"), &check("error")).unwrap(),
        );
        let c = diff_contracts(&new, Some(&old));
        assert!(c.now_failing.is_empty() && c.now_passing.is_empty() && c.now_skipped.is_empty());
        assert_eq!((c.new_checks, c.gone_checks), (0, 0));
    }

    #[test]
    fn blueprint_diff_or_why_not() {
        let (old, new) = (v("1.0.0"), v("1.1.0"));
        let path = "blueprint.toml";
        let d = diff_blueprints(&old, Some((path, BLUEPRINT_1)), &new, Some((path, BLUEPRINT_2)));
        assert_eq!(d.status, BlueprintStatus::Changed);
        assert!(
            d.diff.starts_with("--- 1.0.0/blueprint.toml\n+++ 1.1.0/blueprint.toml\n@@ -1,5 +1,5 @@\n"),
            "{}",
            d.diff
        );
        assert!(d.diff.contains("\n-version = \"1.0.0\"\n+version = \"1.1.0\"\n"), "{}", d.diff);
        assert!(d.diff.contains("\n-include = [\"openssh-server\", \"vim-tiny\"]\n+include"), "{}", d.diff);
        let kinds: Vec<&str> = d.lines.iter().map(|l| l.kind).collect();
        assert_eq!(
            kinds,
            ["header", "header", "hunk", "context", "del", "add", "context", "context", "del", "add"]
        );
        assert_eq!(d.fence, "```");

        for (a, b) in [(None, Some((path, BLUEPRINT_2))), (Some((path, BLUEPRINT_1)), None), (None, None)] {
            assert_eq!(diff_blueprints(&old, a, &new, b).status, BlueprintStatus::NotInBundle);
        }
        assert_eq!(
            diff_blueprints(&old, Some((path, BLUEPRINT_1)), &new, Some((path, BLUEPRINT_1))).status,
            BlueprintStatus::Unchanged
        );

        // A Kilnfile with a Markdown fence in it gets a longer fence.
        let d = diff_blueprints(
            &old,
            Some(("Kilnfile", "RUN echo\n")),
            &new,
            Some(("Kilnfile", "RUN echo ````\n")),
        );
        assert_eq!(d.fence, "`````");
        // Without a final newline the diff still ends with one (the Markdown fence goes on its own line).
        let d = diff_blueprints(
            &old,
            Some(("Kilnfile", "RUN a\nRUN b")),
            &new,
            Some(("Kilnfile", "RUN a\nRUN c")),
        );
        assert!(d.diff.ends_with("+RUN c\n\\ No newline at end of file\n"), "{:?}", d.diff);
    }

    #[test]
    fn bad_bundle_files_are_named_with_their_version() {
        let f = fixture();
        let mut input = f.input(v110());
        let bad_sbom = b"{\"spdxVersion\": \"SPDX-2.3\", \"packages\": [{\"name\": 1}]}".to_vec();
        input.previous.as_mut().unwrap().1.sbom = &bad_sbom;
        let e = render(&input).unwrap_err();
        assert!(
            matches!(&e, NotesError::Json { version, file: "sbom.spdx.json", .. } if *version == v("1.0.0")),
            "{e}"
        );

        let mut input = f.input(v110());
        let old_schema = String::from_utf8(f.report[1].clone())
            .unwrap()
            .replace("kiln.certification/v1", "kiln.certification/v0");
        input.current.certification = old_schema.as_bytes();
        let e = render(&input).unwrap_err();
        assert_eq!(e.to_string(), "report/certification.json of 1.1.0: schema is `kiln.certification/v0`, expected kiln.certification/v1");

        let mut input = f.input(v110());
        let cyclone = br#"{"bomFormat": "CycloneDX", "spdxVersion": "CycloneDX-1.5"}"#;
        input.current.sbom = cyclone;
        assert!(matches!(render(&input), Err(NotesError::Format { field: "spdxVersion", .. })));
    }

    #[test]
    fn lifecycle_dates_and_revocation() {
        let f = fixture();
        let lifecycle = Lifecycle {
            supported: true,
            supported_since: Some("2026-11-20".parse().unwrap()),
            deprecated_on: Some("2027-03-01".parse().unwrap()),
            end_of_life_on: Some("2028-11-22".parse().unwrap()),
            revoked: Some(Revocation {
                reason: "CVE-2026-0001 in <openssl>".into(),
                at: "2026-12-01T10:00:00Z".parse().unwrap(),
                by: "security".into(),
                inherited_from: Some("debian-base@2.0.0".into()),
            }),
        };
        let input = NotesInput { lifecycle: &lifecycle, ..f.input(v110()) };
        let notes = render(&input).unwrap();
        for line in [
            "- State at publication: revoked\n",
            "- Supported since: 2026-11-20\n",
            "- Deprecated on: 2027-03-01\n",
            "- End of life on: 2028-11-22\n",
            "- **Revoked** 2026-12-01T10:00:00Z by security: CVE-2026-0001 in \\<openssl\\> (inherited from debian-base@2.0.0)\n",
        ] {
            assert!(notes.markdown.contains(line), "{line:?} not in:\n{}", notes.markdown);
        }
        assert!(notes.html.contains("CVE-2026-0001 in &lt;openssl&gt;"), "{}", notes.html);
        // Unrevoked, before its dates: the stage.
        let plain = Lifecycle { revoked: None, ..lifecycle.clone() };
        let input = NotesInput { lifecycle: &plain, ..f.input(v110()) };
        assert_eq!(context(&input).unwrap().lifecycle.state, "supported");
    }

    #[test]
    fn free_text_is_escaped_in_both_forms() {
        assert_eq!(md("a | b\n*c* <d>"), "a \\| b \\*c\\* \\<d\\>");
        assert_eq!(md("  two\n\nlines \n"), "two lines");
        let f = fixture();
        let notes = render(&f.input(v110())).unwrap();
        assert!(notes.html.contains("Root &lt;fs&gt; does not grow"), "{}", notes.html);
        assert!(!notes.html.contains("<fs>"));
        assert!(notes.markdown.contains("### KI-0007: Root \\<fs\\> does not grow"), "{}", notes.markdown);
        assert!(notes.markdown.contains("| New in base-os 1.1.0 \\| with a pipe |"), "{}", notes.markdown);
    }

    #[test]
    fn skips_empty_sections() {
        let f = fixture();
        let same = NotesInput {
            previous: Some((v("1.0.0"), Build { blueprint: None, ..f.input(v110()).current })),
            known_issues: &[],
            parent: None,
            ..f.input(v110())
        };
        let notes = render(&same).unwrap();
        let md = &notes.markdown;
        assert!(md.contains("7 packages, the same as in 1.0.0."), "{md}");
        assert!(md.contains("Same contracts and check outcomes as 1.0.0."), "{md}");
        assert!(md.contains("Blueprint text not in the bundle."), "{md}");
        for absent in
            ["### Added", "### Upgraded", "### Checks now", "## Known issues", "Built from", "<details>"]
        {
            assert!(!md.contains(absent), "{absent} in:\n{md}");
        }
        assert!(!notes.html.contains("<h2>Known issues</h2>"));
        assert!(!md.contains("\n\n\n"), "no run of blank lines:\n{md}");
    }

    #[test]
    fn two_versions_markdown() {
        let f = fixture();
        insta::assert_snapshot!(render(&f.input(v110())).unwrap().markdown);
    }

    #[test]
    fn two_versions_html() {
        let f = fixture();
        insta::assert_snapshot!(render(&f.input(v110())).unwrap().html);
    }
}
