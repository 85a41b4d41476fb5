//! `kiln pipeline BLUEPRINT --catalog URL|PATH`: plan → build → test → sign → publish → promote, stopping at
//! the first stage that fails, with its exit code.
//!
//! Each stage is the kiln command of that name run as a child process with `--json` (the same code, flags and
//! exit codes as by hand; a build that re-executes itself in a user namespace does so alone). Its JSON answer
//! becomes the stage's result. With `--json` the pipeline prints one event per line on stdout (schema
//! `kiln.pipeline.event/v1`, `runbook/schemas/pipeline-event.v1.schema.json`); otherwise a line per stage, with a
//! spinner on a terminal. The stages' own logs go to stderr as usual.
//!
//! With `--github OWNER/REPO` (token from `GITHUB_TOKEN`), a successful publish is followed by the GitHub
//! release `FAMILY-VERSION` and the commit status `success` on the blueprint's commit, and a failing stage sets
//! the status `failure`; GitHub's errors never undo a publish: they are reported (`github-failed`) and the
//! pipeline exits 1. `kiln publish --github` shares this code.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{json, Value};

use kiln_catalog::client::Client;
use kiln_github::{commit, Announcement, GitHub, GitHubError, PublishedVersion, Repository};

use crate::{
    cli::{GitHubArgs, PipelineArgs},
    report::Reported,
    ExitStatus, UsageError,
};

fn model_time() -> String {
    kiln_catalog::model::Timestamp::now().to_string()
}

/// The event schema.
pub const EVENT_SCHEMA: &str = "kiln.pipeline.event/v1";

/// The stages, in order.
const STAGES: [&str; 6] = ["plan", "build", "test", "sign", "publish", "promote"];

/// Prints events (JSON Lines) or human lines.
struct Reporter {
    json: bool,
    started: Instant,
}

impl Reporter {
    fn emit(&self, event: &str, fields: Value) -> anyhow::Result<()> {
        if !self.json {
            return Ok(());
        }
        let mut e = json!({ "schema": EVENT_SCHEMA, "event": event, "at": model_time() });
        if let (Some(e), Value::Object(f)) = (e.as_object_mut(), fields) {
            e.extend(f);
        }
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{e}")?;
        out.flush()?;
        Ok(())
    }
}

/// The result of one stage: its JSON answer, or how it failed.
enum StageOutcome {
    Done(Value),
    Failed { code: i32, error: Value },
}

/// Run `kiln --json ARGS` as a stage.
fn run_stage(
    stage: &str,
    args: &[String],
    human: bool,
    log_flags: &[&str],
) -> anyhow::Result<(StageOutcome, f64)> {
    let exe = std::env::current_exe().context("cannot find the kiln executable")?;
    let started = Instant::now();
    let spinner = human.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(stage.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let output = Command::new(&exe)
        .arg("--json")
        .args(log_flags)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run the {stage} stage"))?;
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    // A stage prints one JSON document (its answer, or `{"error": …}`).
    let text = String::from_utf8_lossy(&output.stdout);
    let value: Value = serde_json::from_str(text.trim()).unwrap_or_else(|_| json!({ "output": text.trim() }));
    if output.status.success() {
        Ok((StageOutcome::Done(value), seconds))
    } else {
        let code = output.status.code().unwrap_or(1);
        let error = value.get("error").cloned().unwrap_or(value);
        Ok((StageOutcome::Failed { code, error }, seconds))
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn vars(args: &PipelineArgs) -> Vec<String> {
    args.blueprint.vars.iter().flat_map(|(k, v)| ["--var".to_owned(), format!("{k}={v}")]).collect()
}

/// The strings of the array `v[key]` (none when it is missing or not an array).
fn strings<'v>(v: &'v Value, key: &str) -> Vec<&'v str> {
    v.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

/// A short human summary of a stage's answer.
fn summary(stage: &str, v: &Value) -> String {
    let str_of = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
    match stage {
        "plan" => format!("{} {}", str_of("/blueprint/name"), str_of("/blueprint/version")),
        "build" => format!("tree {}", str_of("/tree_digest")),
        "test" => {
            format!("certified {}", strings(v, "certified").join(", "))
        }
        "sign" => format!("key {}", str_of("/key")),
        "publish" => format!(
            "{} {}",
            if v.get("created") == Some(&Value::Bool(true)) { "published" } else { "already published" },
            str_of("/version/manifest_digest")
        ),
        "promote" => {
            let to = str_of("/move/to");
            if to.is_empty() {
                "channel already there".into()
            } else {
                format!("→ {to}")
            }
        }
        _ => String::new(),
    }
}

/// The GitHub client of `--github OWNER/REPO`, made before anything runs: a bad repository or API URL, or no
/// token in `GITHUB_TOKEN`, is a usage error.
pub(super) fn github_client(args: &GitHubArgs) -> anyhow::Result<Option<GitHub>> {
    let Some(repo) = &args.github else { return Ok(None) };
    let repository: Repository =
        repo.parse().map_err(|e: GitHubError| UsageError(format!("--github: {e}")))?;
    let token = std::env::var("GITHUB_TOKEN").unwrap_or_default();
    if token.trim().is_empty() {
        return Err(UsageError(
            "--github needs a GitHub token in GITHUB_TOKEN (allowed to write releases and commit statuses)"
                .into(),
        )
        .into());
    }
    match GitHub::new(&args.github_api, &token, repository) {
        Ok(gh) => Ok(Some(gh)),
        Err(e) if e.is_usage() => Err(UsageError(format!("--github-api: {e}")).into()),
        Err(e) => Err(e.into()),
    }
}

/// What the GitHub step did (the release, the status) and what failed.
pub(super) struct GitHubStep {
    repository: String,
    done: Announcement,
    /// Failures outside GitHub's answers (the notes, the commit).
    other_errors: Vec<String>,
}

impl GitHubStep {
    fn new(gh: &GitHub, done: Announcement, other_errors: Vec<String>) -> Self {
        Self { repository: gh.repository().to_string(), done, other_errors }
    }

    pub(super) fn ok(&self) -> bool {
        self.done.ok() && self.other_errors.is_empty()
    }

    /// Every failure: `{message, http_status?}`.
    fn errors(&self) -> Vec<Value> {
        let github = self.done.errors.iter().map(|e| {
            let mut v = json!({ "message": e.to_string() });
            if let Some(status) = e.status() {
                v["http_status"] = status.into();
            }
            v
        });
        github.chain(self.other_errors.iter().map(|m| json!({ "message": m }))).collect()
    }

    /// The step as JSON: the repository, the release and status made, the errors.
    pub(super) fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.done).unwrap_or_else(|_| json!({}));
        v["repository"] = self.repository.clone().into();
        if !self.ok() {
            v["errors"] = self.errors().into();
        }
        v
    }

    /// Human lines: what was done on stdout, each failure on stderr.
    pub(super) fn print(&self) {
        if let Some(r) = &self.done.release {
            let how = if r.created { "created" } else { "updated" };
            println!("  GitHub release {} {how}: {}", r.tag, r.url);
        }
        if let Some(s) = &self.done.status {
            let short = s.sha.get(..12).unwrap_or(&s.sha);
            println!("  GitHub status {} {} on {short}", s.status.context, s.status.state);
        }
        for e in self.errors() {
            eprintln!("error: GitHub: {}", e["message"].as_str().unwrap_or(""));
        }
    }
}

/// After a successful publish: the release `FAMILY-VERSION` (the catalog's release notes, the digests of
/// `record`, the version's catalog link) and the status `success` on `commit`.
pub(super) fn announce_publish(
    gh: &GitHub,
    catalog: &Client,
    catalog_target: &str,
    record: &Value,
    commit: Result<Option<String>, commit::CommitError>,
) -> GitHubStep {
    let mut other = Vec::new();
    let version = match PublishedVersion::from_json(record) {
        Ok(v) => v,
        Err(e) => {
            other.push(format!("the publish answered no version record: {e}"));
            return GitHubStep::new(gh, Announcement::default(), other);
        }
    };
    let notes = match version.version.parse::<semver::Version>() {
        Ok(semver) => catalog.notes(&version.family, &semver, "markdown").unwrap_or_else(|e| {
            other.push(format!(
                "cannot read the release notes of {}@{}: {e}",
                version.family, version.version
            ));
            String::new()
        }),
        Err(e) => {
            other.push(format!("version `{}`: {e}", version.version));
            String::new()
        }
    };
    let commit = commit.unwrap_or_else(|e| {
        other.push(format!("cannot find the blueprint's commit: {e}"));
        None
    });
    let url = kiln_github::body::catalog_version_url(catalog_target, &version.family, &version.version);
    let done = kiln_github::announce_published(gh, &version, &notes, url.as_deref(), commit.as_deref());
    GitHubStep::new(gh, done, other)
}

/// What a failed stage said, in a line: its error chain, or what its certification found.
fn failure_message(error: &Value) -> String {
    let chain = strings(error, "chain");
    if !chain.is_empty() {
        return chain.join(": ");
    }
    if let Some(summary) = error.get("summary") {
        let n = |k: &str| summary.get(k).and_then(Value::as_u64).unwrap_or(0);
        return format!("{} check(s) failed, {} error(s)", n("fail"), n("error"));
    }
    error.get("message").and_then(Value::as_str).unwrap_or("failed").to_owned()
}

/// The folder of the blueprint argument (a blueprint file or a folder holding one).
fn blueprint_dir(blueprint: &Path) -> PathBuf {
    if blueprint.is_dir() {
        blueprint.to_owned()
    } else {
        blueprint.parent().map(Path::to_owned).unwrap_or_default()
    }
}

/// Emit the GitHub step as `github-finished` or `github-failed`, after `stage`.
fn report_github(r: &Reporter, step: &GitHubStep, after: &str) -> anyhow::Result<()> {
    if !r.json {
        println!("{} github   after {after}", if step.ok() { "ok  " } else { "FAIL" });
        step.print();
    }
    let mut fields = step.to_json();
    fields["after"] = after.into();
    r.emit(if step.ok() { "github-finished" } else { "github-failed" }, fields)
}

/// Run the pipeline; `log_flags` (`-q`, `-v`) are passed on to every stage.
pub fn run(args: &PipelineArgs, json: bool, log_flags: &[&str]) -> anyhow::Result<()> {
    // Before any stage: a --github without its token is a usage error.
    let github = github_client(&args.github)?;
    let r = Reporter { json, started: Instant::now() };
    let human = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let blueprint = s(&args.blueprint.blueprint);
    let blueprint_dir = blueprint_dir(&args.blueprint.blueprint);
    let catalog = args.catalog.catalog.clone();
    let mut token_args = Vec::new();
    if let Some(t) = &args.catalog.token {
        token_args = vec!["--token".to_owned(), t.clone()];
    }
    let mut started =
        json!({ "blueprint": blueprint, "catalog": catalog, "channel": args.channel, "stages": STAGES });
    if let Some(gh) = &github {
        started["github"] = gh.repository().to_string().into();
    }
    r.emit("pipeline-started", started)?;
    let mut github_failed = false;

    let mut name = String::new();
    let mut version = String::new();
    let mut out: PathBuf = args.out.clone().unwrap_or_default();
    let mut results = serde_json::Map::new();
    for stage in STAGES {
        let mut a: Vec<String> = vec![stage.to_owned()];
        match stage {
            "plan" => {
                a.push(blueprint.clone());
                a.extend(vars(args));
            }
            "build" => {
                a.push(blueprint.clone());
                a.extend(vars(args));
                a.extend(["--out".into(), s(&out), "--catalog".into(), catalog.clone()]);
                a.extend(token_args.iter().cloned());
                if let Some(c) = &args.cache {
                    a.extend(["--cache".into(), s(c)]);
                }
            }
            "test" => {
                a.push(s(&out));
                if let Some(c) = &args.contracts {
                    a.extend(["--contracts".into(), s(c)]);
                }
            }
            "sign" => {
                a.push(s(&out));
                if let Some(k) = &args.key {
                    a.extend(["--key".into(), s(k)]);
                }
            }
            "publish" => {
                a.extend([s(&out), "--catalog".into(), catalog.clone()]);
                a.extend(token_args.iter().cloned());
            }
            "promote" => {
                a.extend([name.clone(), version.clone(), "--channel".into(), args.channel.clone()]);
                a.extend(["--catalog".into(), catalog.clone()]);
                a.extend(token_args.iter().cloned());
            }
            _ => unreachable!(),
        }
        r.emit("stage-started", json!({ "stage": stage }))?;
        let (outcome, seconds) = run_stage(stage, &a, human, log_flags)?;
        match outcome {
            StageOutcome::Done(value) => {
                if stage == "plan" {
                    let get = |k: &str| {
                        value.pointer(&format!("/blueprint/{k}")).and_then(Value::as_str).unwrap_or("")
                    };
                    name = get("name").to_owned();
                    version = get("version").to_owned();
                    if args.out.is_none() {
                        out = PathBuf::from(".kiln-out").join(&name);
                    }
                }
                if !json {
                    println!("ok   {stage:<8} {seconds:>7.1}s  {}", summary(stage, &value));
                }
                r.emit("stage-finished", json!({ "stage": stage, "seconds": seconds, "result": value }))?;
                if let (Some(gh), "publish") = (&github, stage) {
                    let step = match Client::open(&catalog, args.catalog.token.clone()) {
                        Ok(client) => {
                            let record = value.get("version").cloned().unwrap_or(Value::Null);
                            let commit = commit::blueprint_commit(&out, Some(&blueprint_dir));
                            announce_publish(gh, &client, &catalog, &record, commit)
                        }
                        Err(e) => GitHubStep::new(
                            gh,
                            kiln_github::Announcement::default(),
                            vec![format!("cannot open the catalog {catalog}: {e}")],
                        ),
                    };
                    github_failed |= !step.ok();
                    report_github(&r, &step, stage)?;
                }
                results.insert(stage.to_owned(), value);
            }
            StageOutcome::Failed { code, error } => {
                if !json {
                    let chain: Vec<&str> = error
                        .get("chain")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let message = if chain.is_empty() { "failed".to_owned() } else { chain.join(": ") };
                    println!("FAIL {stage:<8} {seconds:>7.1}s  {message} (exit {code})");
                }
                r.emit(
                    "stage-failed",
                    json!({ "stage": stage, "seconds": seconds, "exit_code": code, "error": error }),
                )?;
                if let Some(gh) = &github {
                    // Before its plan, the family is known by the blueprint's folder; before a build that
                    // succeeded, an earlier build's record in the output folder does not count.
                    let family = if name.is_empty() {
                        blueprint_dir
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    } else {
                        name.clone()
                    };
                    let (commit, other) = match stage {
                        "plan" | "build" => (commit::git_head(&blueprint_dir), Vec::new()),
                        _ => match commit::blueprint_commit(&out, Some(&blueprint_dir)) {
                            Ok(c) => (c, Vec::new()),
                            Err(e) => (None, vec![format!("cannot find the blueprint's commit: {e}")]),
                        },
                    };
                    let message = failure_message(&error);
                    let done = kiln_github::announce_failed(gh, &family, commit.as_deref(), stage, &message);
                    let step = GitHubStep::new(gh, done, other);
                    report_github(&r, &step, stage)?;
                }
                r.emit(
                    "pipeline-finished",
                    json!({ "ok": false, "failed_stage": stage, "exit_code": code, "seconds": r.started.elapsed().as_secs_f64() }),
                )?;
                let status =
                    if code == ExitStatus::Usage as i32 { ExitStatus::Usage } else { ExitStatus::Failure };
                return Err(Reported(status).into());
            }
        }
    }
    let mut finished = json!({
        "ok": !github_failed,
        "seconds": r.started.elapsed().as_secs_f64(),
        "image": { "name": name, "version": version, "out": s(&out) },
        "channel": args.channel,
    });
    if github_failed {
        // The version is published and on its channel; what GitHub refused is in the github-failed event.
        finished["failed_stage"] = "github".into();
        finished["exit_code"] = (ExitStatus::Failure as i32).into();
    }
    r.emit("pipeline-finished", finished)?;
    if !json {
        println!("{name} {version} is in {catalog} on channel {}", args.channel);
    }
    if github_failed {
        return Err(Reported(ExitStatus::Failure).into());
    }
    Ok(())
}
