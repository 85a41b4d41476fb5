//! The build plan: a blueprint normalized into ordered steps, each with the digest of its inputs.
//!
//! The plan is what `kiln plan` prints and what `kiln build` executes. It is made offline: the base image
//! and the mirror are shown as written and resolved by the build. Each step's digest chains the previous
//! step's digest with the step's own inputs, so it is the cache key of the step's result: changing a file
//! of the blueprint changes the digests from that file's step on, and leaves the base and package stages
//! (and their cached results) as they were.
//!
//! Steps, in order: `base`, `packages`, `accounts` (groups, users), `directories`, then the blueprint's
//! ordered actions (`files` for every file or copy, `run` for every command), `services`, `system`. The
//! image's outputs, disk, boot and container settings form the plan's `image` part. File contents (inline,
//! copied, rendered from templates) are read here and carried in the plan, digested, so the build writes
//! exactly what was planned.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    diag::{Diag, SourceFile},
    model::Vars,
    model::{
        Base, Blueprint, Command, ContainerConfig, ContractRef, CopyStep, Disk, FileSource, FileStep, Form,
        LifecyclePolicy, Mode, Output, Password, RunStep, Step,
    },
    BlueprintError, LoadError,
};

/// Version of the plan's JSON form, printed as its `schema` field.
pub const PLAN_SCHEMA: &str = "kiln.plan/v1";

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("invalid blueprint")]
    Blueprint(#[from] BlueprintError),
    #[error("cannot read {}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// A normalized, digested build plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub schema: &'static str,
    pub blueprint: BlueprintInfo,
    pub steps: Vec<PlanStep>,
    pub image: ImageSpec,
    /// Digest of the whole plan: every step and the image settings.
    pub digest: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlueprintInfo {
    pub path: PathBuf,
    pub form: Form,
    pub name: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// sha256 of the blueprint file's bytes.
    pub digest: String,
    /// Effective variables (defaults with `--var` overrides applied).
    pub variables: BTreeMap<String, String>,
}

/// One step of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanStep {
    /// Stable kind of the step: `base`, `packages`, `accounts`, `directories`, `files`, `run`,
    /// `services`, `system`.
    pub kind: &'static str,
    /// One line for people.
    pub summary: String,
    /// What the step does, in full; digested.
    pub inputs: StepInputs,
    /// Cache key: sha256 over the previous step's digest, the kind and the inputs.
    pub digest: String,
}

/// The inputs of a step.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum StepInputs {
    Base(Base),
    Packages { include: Vec<String>, exclude: Vec<String> },
    Accounts { groups: Vec<crate::model::Group>, users: Vec<crate::model::User> },
    Directories(Vec<crate::model::Directory>),
    Files(Vec<PlannedFile>),
    Run(PlannedRun),
    Services { enable: Vec<String>, disable: Vec<String>, mask: Vec<String> },
    System { hostname: Option<String>, locale: Option<String>, timezone: Option<String> },
}

/// A file, directory or archive the build writes into the tree.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedFile {
    /// Absolute path in the image.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: PlannedKind,
    pub mode: Mode,
    pub owner: String,
    pub group: String,
    /// sha256 of the content (files and archives).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The bytes to write (files and archives); not serialized, covered by `sha256`.
    #[serde(skip)]
    pub content: Option<Arc<Vec<u8>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlannedKind {
    File,
    Directory,
    /// A local tar archive (ADD) unpacked at the path.
    Archive,
}

/// A command to run in the image's sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRun {
    /// argv: `["/bin/sh", "-c", SCRIPT]` for shell commands and scripts, as given for exec form.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub user: String,
    /// sha256 of the script file, when the command came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_sha256: Option<String>,
}

/// Settings of the image as a whole: how it is written and what it claims.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSpec {
    pub outputs: Vec<Output>,
    pub disk: Disk,
    pub kernel_cmdline: Vec<String>,
    pub container: ContainerConfig,
    /// Claimed contracts, sorted by name.
    pub contracts: Vec<ContractRef>,
    pub lifecycle: LifecyclePolicy,
}

impl Plan {
    /// The step of a kind, if the plan has one (the first).
    pub fn step(&self, kind: &str) -> Option<&PlanStep> {
        self.steps.iter().find(|s| s.kind == kind)
    }

    /// Human-readable rendering: one line per step, then the image settings and the digest.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let b = &self.blueprint;
        let _ = writeln!(s, "plan {} {} ({}, {})", b.name, b.version, b.path.display(), b.digest);
        for (i, step) in self.steps.iter().enumerate() {
            let _ = writeln!(s, "{:>3}. {:<12} {}  {}", i + 1, step.kind, short(&step.digest), step.summary);
        }
        let outputs: Vec<String> = self
            .image
            .outputs
            .iter()
            .map(|o| format!("{}:{}", o.kind.as_str(), serde_plain(&o.compression)))
            .collect();
        let _ = writeln!(s, "outputs: {}", outputs.join(", "));
        if !self.image.contracts.is_empty() {
            let c: Vec<String> =
                self.image.contracts.iter().map(|c| format!("{}@{}", c.name, c.req)).collect();
            let _ = writeln!(s, "contracts: {}", c.join(", "));
        }
        let _ = writeln!(s, "digest: {}", self.digest);
        s
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn serde_plain<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// `sha256:` + lowercase hex of the bytes' SHA-256.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn chain(prev: &str, kind: &str, inputs: &impl Serialize) -> String {
    let mut h = Sha256::new();
    h.update(PLAN_SCHEMA.as_bytes());
    h.update([0]);
    h.update(prev.as_bytes());
    h.update([0]);
    h.update(kind.as_bytes());
    h.update([0]);
    // Serializing plain data structures cannot fail.
    h.update(serde_json::to_vec(inputs).unwrap_or_default());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Read access to the files a blueprint refers to. The planner is pure over this; [`DirSources`] reads the
/// blueprint's folder, tests may give an in-memory one.
pub trait Sources {
    /// Kind, mode and (for files) bytes of a path relative to the blueprint folder.
    fn entry(&self, rel: &str) -> std::io::Result<SourceEntry>;
    /// Names in a source folder (relative path), sorted.
    fn list(&self, rel: &str) -> std::io::Result<Vec<String>>;
    /// Where a relative path lives, for messages.
    fn display(&self, rel: &str) -> PathBuf;
}

#[derive(Debug, Clone)]
pub enum SourceEntry {
    File { mode: u32, bytes: Vec<u8> },
    Dir { mode: u32 },
}

/// Sources read from the blueprint's folder on disk.
#[derive(Debug, Clone)]
pub struct DirSources {
    pub root: PathBuf,
}

impl Sources for DirSources {
    fn entry(&self, rel: &str) -> std::io::Result<SourceEntry> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.root.join(rel);
        let meta = fs_err::metadata(&path)?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            Ok(SourceEntry::Dir { mode })
        } else {
            Ok(SourceEntry::File { mode, bytes: fs_err::read(&path)? })
        }
    }

    fn list(&self, rel: &str) -> std::io::Result<Vec<String>> {
        let mut names: Vec<String> = fs_err::read_dir(self.root.join(rel))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn display(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// Load and plan the blueprint at `path` (a file, or a folder holding one).
pub fn plan_path(path: &Path, vars: &Vars) -> Result<Plan, PlanError> {
    let bp = crate::load(path, vars)?;
    let sources = DirSources { root: bp.dir.clone() };
    plan(&bp, &sources)
}

/// Plan a parsed blueprint, reading the files it refers to through `sources`.
pub fn plan(bp: &Blueprint, sources: &dyn Sources) -> Result<Plan, PlanError> {
    let variables: BTreeMap<String, String> =
        bp.variables.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect();
    let mut planner =
        Planner { bp, sources, variables: &variables, diags: Vec::new(), template_errors: Vec::new() };

    let mut raw_steps: Vec<(&'static str, String, StepInputs)> = Vec::new();
    raw_steps.push(("base", base_summary(&bp.base), StepInputs::Base(bp.base.value.clone())));

    let mut include: Vec<String> = bp.packages.include.iter().map(|p| p.value.clone()).collect();
    let mut exclude: Vec<String> = bp.packages.exclude.iter().map(|p| p.value.clone()).collect();
    include.sort();
    include.dedup();
    exclude.sort();
    exclude.dedup();
    if !include.is_empty() || !exclude.is_empty() {
        let mut summary = format!("install {}", count(include.len(), "package"));
        if !include.is_empty() {
            summary.push_str(&format!(": {}", list_preview(&include)));
        }
        if !exclude.is_empty() {
            summary.push_str(&format!("; exclude {}", list_preview(&exclude)));
        }
        raw_steps.push(("packages", summary, StepInputs::Packages { include, exclude }));
    }

    if !bp.groups.is_empty() || !bp.users.is_empty() {
        let groups: Vec<_> = bp.groups.iter().map(|g| g.value.clone()).collect();
        let users: Vec<_> = bp.users.iter().map(|u| u.value.clone()).collect();
        let names: Vec<String> = users
            .iter()
            .map(|u| match u.password {
                Password::Locked => u.name.clone(),
                Password::Hashed(_) => format!("{} (password)", u.name),
            })
            .collect();
        let summary = format!(
            "{}, {}{}",
            count(groups.len(), "group"),
            count(users.len(), "user"),
            preview_suffix(&names)
        );
        raw_steps.push(("accounts", summary, StepInputs::Accounts { groups, users }));
    }

    if !bp.directories.is_empty() {
        let dirs: Vec<_> = bp.directories.iter().map(|d| d.value.clone()).collect();
        let names: Vec<String> = dirs.iter().map(|d| d.path.clone()).collect();
        raw_steps.push((
            "directories",
            format!("create {}", list_preview(&names)),
            StepInputs::Directories(dirs),
        ));
    }

    for step in &bp.steps {
        match &step.value {
            Step::File(f) => {
                if let Some(file) = planner.file_step(f, &step.span) {
                    raw_steps.push(("files", format!("write {}", f.path), StepInputs::Files(vec![file])));
                }
            }
            Step::Copy(c) => {
                if let Some(files) = planner.copy_step(c, &step.span) {
                    let summary = match files.as_slice() {
                        [one] => format!("write {}", one.path),
                        many => format!("write {} under {}", count(many.len(), "entry"), c.dest),
                    };
                    raw_steps.push(("files", summary, StepInputs::Files(files)));
                }
            }
            Step::Run(r) => {
                if let Some(run) = planner.run_step(r, &step.span) {
                    let summary = format!("run {}", one_line(&run.argv));
                    raw_steps.push(("run", summary, StepInputs::Run(run)));
                }
            }
        }
    }

    let sorted = |v: &[crate::model::Spanned<String>]| {
        let mut v: Vec<String> = v.iter().map(|s| s.value.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let (enable, disable, mask) =
        (sorted(&bp.services.enable), sorted(&bp.services.disable), sorted(&bp.services.mask));
    if !enable.is_empty() || !disable.is_empty() || !mask.is_empty() {
        let mut parts = Vec::new();
        for (verb, units) in [("enable", &enable), ("disable", &disable), ("mask", &mask)] {
            if !units.is_empty() {
                parts.push(format!("{verb} {}", list_preview(units)));
            }
        }
        raw_steps.push(("services", parts.join("; "), StepInputs::Services { enable, disable, mask }));
    }

    let sys = &bp.system;
    if sys.hostname.is_some() || sys.locale.is_some() || sys.timezone.is_some() {
        let mut parts = Vec::new();
        for (k, v) in [("hostname", &sys.hostname), ("locale", &sys.locale), ("timezone", &sys.timezone)] {
            if let Some(v) = v {
                parts.push(format!("{k} {v}"));
            }
        }
        raw_steps.push((
            "system",
            parts.join(", "),
            StepInputs::System {
                hostname: sys.hostname.clone(),
                locale: sys.locale.clone(),
                timezone: sys.timezone.clone(),
            },
        ));
    }

    if let Some(err) = planner.into_error() {
        return Err(err);
    }

    let mut prev = String::new();
    let steps: Vec<PlanStep> = raw_steps
        .into_iter()
        .map(|(kind, summary, inputs)| {
            let digest = chain(&prev, kind, &inputs);
            prev.clone_from(&digest);
            PlanStep { kind, summary, inputs, digest }
        })
        .collect();

    let mut contracts: Vec<ContractRef> = bp.contracts.iter().map(|c| c.value.clone()).collect();
    contracts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut outputs: Vec<Output> = bp.outputs.iter().map(|o| o.value.clone()).collect();
    outputs.sort_by_key(|o| o.kind);
    let image = ImageSpec {
        outputs,
        disk: bp.disk.clone(),
        kernel_cmdline: bp.system.kernel_cmdline.clone(),
        container: bp.container.clone(),
        contracts,
        lifecycle: bp.lifecycle.clone(),
    };

    let identity = serde_json::json!({
        "name": bp.name.value,
        "version": bp.version.value.to_string(),
        "description": bp.description,
        "last_step": prev,
        "image": image,
    });
    let digest = chain("", "plan", &identity);

    Ok(Plan {
        schema: PLAN_SCHEMA,
        blueprint: BlueprintInfo {
            path: bp.file.path.clone(),
            form: bp.form,
            name: bp.name.value.clone(),
            version: bp.version.value.to_string(),
            description: bp.description.clone(),
            digest: sha256_digest(bp.file.text.as_bytes()),
            variables,
        },
        steps,
        image,
        digest,
    })
}

struct Planner<'a> {
    bp: &'a Blueprint,
    sources: &'a dyn Sources,
    variables: &'a BTreeMap<String, String>,
    /// Problems located in the blueprint file.
    diags: Vec<Diag>,
    /// Problems located in template files.
    template_errors: Vec<BlueprintError>,
}

impl Planner<'_> {
    fn into_error(self) -> Option<PlanError> {
        if !self.diags.is_empty() {
            return Some(PlanError::Blueprint(BlueprintError::new(self.bp.file.clone(), self.diags)));
        }
        self.template_errors.into_iter().next().map(PlanError::Blueprint)
    }

    fn missing(&mut self, rel: &str, span: &std::ops::Range<usize>, err: &std::io::Error) {
        let shown = self.sources.display(rel);
        let msg = if err.kind() == std::io::ErrorKind::NotFound {
            format!("source `{rel}` does not exist ({})", shown.display())
        } else {
            format!("cannot read source `{rel}` ({}): {err}", shown.display())
        };
        self.diags.push(Diag::new(span.clone(), msg).with_label("referred to here"));
    }

    fn read_file(&mut self, rel: &str, span: &std::ops::Range<usize>) -> Option<(u32, Vec<u8>)> {
        match self.sources.entry(rel) {
            Ok(SourceEntry::File { mode, bytes }) => Some((mode, bytes)),
            Ok(SourceEntry::Dir { .. }) => {
                self.diags
                    .push(Diag::new(span.clone(), format!("source `{rel}` is a directory, expected a file")));
                None
            }
            Err(e) => {
                self.missing(rel, span, &e);
                None
            }
        }
    }

    /// Render a template file with the blueprint's variables; undefined variables are errors.
    fn render(&mut self, rel: &str, bytes: Vec<u8>) -> Option<Vec<u8>> {
        let shown = self.sources.display(rel);
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                let file = SourceFile::new(shown, String::new());
                self.template_errors
                    .push(BlueprintError::new(file, vec![Diag::new(0..0, "template is not UTF-8 text")]));
                return None;
            }
        };
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        let result = env
            .template_from_named_str(rel, &text)
            .and_then(|t| t.render(minijinja::Value::from_serialize(self.variables)));
        match result {
            Ok(out) => Some(out.into_bytes()),
            Err(e) => {
                let file = SourceFile::new(shown, text);
                let span = template_error_span(&file, &e);
                let mut msg = format!("template error: {}", e.kind());
                if let Some(detail) = e.detail() {
                    msg.push_str(&format!(": {detail}"));
                }
                if e.kind() == minijinja::ErrorKind::UndefinedError {
                    let name = file.text.get(span.clone()).unwrap_or_default().trim();
                    let declared: Vec<&str> = self.variables.keys().map(String::as_str).collect();
                    let declared = if declared.is_empty() { "none".to_owned() } else { declared.join(", ") };
                    msg = if name.is_empty() {
                        format!("template error: undefined variable (declared variables: {declared})")
                    } else {
                        format!(
                            "template error: undefined variable `{name}` (declared variables: {declared})"
                        )
                    };
                }
                self.template_errors.push(BlueprintError::new(file, vec![Diag::new(span, msg)]));
                None
            }
        }
    }

    fn file_step(&mut self, f: &FileStep, span: &std::ops::Range<usize>) -> Option<PlannedFile> {
        let bytes = match &f.source {
            FileSource::Inline(text) => text.clone().into_bytes(),
            FileSource::Path(rel) => self.read_file(rel, span)?.1,
            FileSource::Template(rel) => {
                let (_, bytes) = self.read_file(rel, span)?;
                self.render(rel, bytes)?
            }
        };
        Some(planned_file(f.path.clone(), f.mode, &f.owner, &f.group, bytes, PlannedKind::File))
    }

    fn copy_step(&mut self, c: &CopyStep, span: &std::ops::Range<usize>) -> Option<Vec<PlannedFile>> {
        let (owner, group) = match &c.chown {
            Some(s) => match s.split_once(':') {
                Some((u, g)) => (u.to_owned(), g.to_owned()),
                None => (s.clone(), s.clone()),
            },
            None => ("root".to_owned(), "root".to_owned()),
        };
        let into_dir = c.dest.ends_with('/') || c.sources.len() > 1;
        let dest = c.dest.trim_end_matches('/');
        let mut out = Vec::new();
        let mut ok = true;
        for src in &c.sources {
            let entry = match self.sources.entry(src) {
                Ok(e) => e,
                Err(e) => {
                    self.missing(src, span, &e);
                    ok = false;
                    continue;
                }
            };
            match entry {
                SourceEntry::File { mode, bytes } => {
                    let base = src.rsplit('/').next().unwrap_or(src);
                    let path = if into_dir { format!("{dest}/{base}") } else { dest.to_owned() };
                    let mode = c.chmod.unwrap_or(Mode(mode));
                    let is_archive = c.add && is_tar_name(base);
                    if is_archive {
                        out.push(planned_file(
                            dest.to_owned(),
                            mode,
                            &owner,
                            &group,
                            bytes,
                            PlannedKind::Archive,
                        ));
                    } else if c.template {
                        let Some(bytes) = self.render(src, bytes) else {
                            ok = false;
                            continue;
                        };
                        out.push(planned_file(path, mode, &owner, &group, bytes, PlannedKind::File));
                    } else {
                        out.push(planned_file(path, mode, &owner, &group, bytes, PlannedKind::File));
                    }
                }
                SourceEntry::Dir { .. } => {
                    // Like Docker: a folder's contents are copied into the destination folder.
                    if !self.copy_dir(src, dest, c, &owner, &group, &mut out, span) {
                        ok = false;
                    }
                }
            }
        }
        ok.then_some(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_dir(
        &mut self,
        src: &str,
        dest: &str,
        c: &CopyStep,
        owner: &str,
        group: &str,
        out: &mut Vec<PlannedFile>,
        span: &std::ops::Range<usize>,
    ) -> bool {
        let names = match self.sources.list(src) {
            Ok(n) => n,
            Err(e) => {
                self.missing(src, span, &e);
                return false;
            }
        };
        let mut ok = true;
        for name in names {
            let rel = format!("{}/{name}", src.trim_end_matches('/'));
            let target = format!("{dest}/{name}");
            match self.sources.entry(&rel) {
                Ok(SourceEntry::Dir { mode }) => {
                    let mode = c.chmod.unwrap_or(Mode(mode));
                    out.push(PlannedFile {
                        path: target.clone(),
                        kind: PlannedKind::Directory,
                        mode,
                        owner: owner.to_owned(),
                        group: group.to_owned(),
                        sha256: None,
                        size: None,
                        content: None,
                    });
                    ok &= self.copy_dir(&rel, &target, c, owner, group, out, span);
                }
                Ok(SourceEntry::File { mode, bytes }) => {
                    let mode = c.chmod.unwrap_or(Mode(mode));
                    let bytes = if c.template {
                        match self.render(&rel, bytes) {
                            Some(b) => b,
                            None => {
                                ok = false;
                                continue;
                            }
                        }
                    } else {
                        bytes
                    };
                    out.push(planned_file(target, mode, owner, group, bytes, PlannedKind::File));
                }
                Err(e) => {
                    self.missing(&rel, span, &e);
                    ok = false;
                }
            }
        }
        ok
    }

    fn run_step(&mut self, r: &RunStep, span: &std::ops::Range<usize>) -> Option<PlannedRun> {
        let (argv, script_sha256) = match &r.command {
            Command::Shell(s) => (vec!["/bin/sh".to_owned(), "-c".to_owned(), s.clone()], None),
            Command::Exec(argv) => (argv.clone(), None),
            Command::ScriptFile(rel) => {
                let (_, bytes) = self.read_file(rel, span)?;
                let text = String::from_utf8_lossy(&bytes).into_owned();
                (vec!["/bin/sh".to_owned(), "-c".to_owned(), text], Some(sha256_digest(&bytes)))
            }
        };
        Some(PlannedRun {
            argv,
            env: r.env.clone(),
            workdir: r.workdir.clone().unwrap_or_else(|| "/".to_owned()),
            user: r.user.clone().unwrap_or_else(|| "root".to_owned()),
            script_sha256,
        })
    }
}

fn planned_file(
    path: String,
    mode: Mode,
    owner: &str,
    group: &str,
    bytes: Vec<u8>,
    kind: PlannedKind,
) -> PlannedFile {
    PlannedFile {
        path,
        kind,
        mode,
        owner: owner.to_owned(),
        group: group.to_owned(),
        sha256: Some(sha256_digest(&bytes)),
        size: Some(bytes.len() as u64),
        content: Some(Arc::new(bytes)),
    }
}

fn is_tar_name(name: &str) -> bool {
    [".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tar.bz2"].iter().any(|s| name.ends_with(s))
}

/// Where in the template a minijinja error points (its byte range, else its line), else the start.
fn template_error_span(file: &SourceFile, e: &minijinja::Error) -> std::ops::Range<usize> {
    if let Some(r) = e.range() {
        return r;
    }
    if let Some(line) = e.line() {
        let start: usize = file.text.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum();
        return start..start;
    }
    0..0
}

fn base_summary(base: &Base) -> String {
    match base {
        Base::Debian(d) => {
            let comps =
                if d.components.is_empty() { "host's components".to_owned() } else { d.components.join(",") };
            let mirror = d.mirror.clone().unwrap_or_else(|| "host's mirror".to_owned());
            format!("debian {} ({}, {comps}, {mirror})", d.suite, serde_plain(&d.variant))
        }
        Base::Catalog { family, selector } => {
            let sel = match selector {
                crate::model::CatalogSelector::Version(v) | crate::model::CatalogSelector::Channel(v) => v,
            };
            format!("from catalog {family}@{sel} (resolved at build)")
        }
        Base::OciLayout { path, tag } => format!("from OCI layout {path}:{tag}"),
    }
}

fn count(n: usize, what: &str) -> String {
    match (n, what) {
        (1, _) => format!("1 {what}"),
        (_, "entry") => format!("{n} entries"),
        _ => format!("{n} {what}s"),
    }
}

fn list_preview(items: &[String]) -> String {
    const SHOWN: usize = 6;
    if items.len() <= SHOWN {
        items.join(", ")
    } else {
        format!("{}, … (+{})", items[..SHOWN].join(", "), items.len() - SHOWN)
    }
}

fn preview_suffix(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(": {}", list_preview(items))
    }
}

fn one_line(argv: &[String]) -> String {
    let joined = if argv.len() == 3 && argv[0] == "/bin/sh" && argv[1] == "-c" {
        argv[2].clone()
    } else {
        argv.join(" ")
    };
    let first = joined.lines().next().unwrap_or_default();
    let mut s: String = first.chars().take(60).collect();
    if s.len() < joined.len() {
        s.push('…');
    }
    s
}
