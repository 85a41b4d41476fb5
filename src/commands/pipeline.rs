//! `kiln pipeline BLUEPRINT --catalog URL|PATH`: plan → build → test → sign → publish → promote, stopping at
//! the first stage that fails, with its exit code.
//!
//! Each stage is the kiln command of that name run as a child process with `--json` (the same code, flags and
//! exit codes as by hand; a build that re-executes itself in a user namespace does so alone). Its JSON answer
//! becomes the stage's result. With `--json` the pipeline prints one event per line on stdout (schema
//! `kiln.pipeline.event/v1`, `runbook/schemas/pipeline-event.v1.schema.json`); otherwise a line per stage, with a
//! spinner on a terminal. The stages' own logs go to stderr as usual.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::{cli::PipelineArgs, report::Reported, ExitStatus};

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

/// A short human summary of a stage's answer.
fn summary(stage: &str, v: &Value) -> String {
    let str_of = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
    match stage {
        "plan" => format!("{} {}", str_of("/blueprint/name"), str_of("/blueprint/version")),
        "build" => format!("tree {}", str_of("/tree_digest")),
        "test" => {
            let certified: Vec<&str> = v
                .get("certified")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!("certified {}", certified.join(", "))
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

/// Run the pipeline; `log_flags` (`-q`, `-v`) are passed on to every stage.
pub fn run(args: &PipelineArgs, json: bool, log_flags: &[&str]) -> anyhow::Result<()> {
    let r = Reporter { json, started: Instant::now() };
    let human = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let blueprint = s(&args.blueprint.blueprint);
    let catalog = args.catalog.catalog.clone();
    let mut token_args = Vec::new();
    if let Some(t) = &args.catalog.token {
        token_args = vec!["--token".to_owned(), t.clone()];
    }
    r.emit(
        "pipeline-started",
        json!({ "blueprint": blueprint, "catalog": catalog, "channel": args.channel, "stages": STAGES }),
    )?;

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
    r.emit(
        "pipeline-finished",
        json!({
            "ok": true,
            "seconds": r.started.elapsed().as_secs_f64(),
            "image": { "name": name, "version": version, "out": s(&out) },
            "channel": args.channel,
        }),
    )?;
    if !json {
        println!("{name} {version} is in {catalog} on channel {}", args.channel);
    }
    Ok(())
}
