//! `kiln pipeline`: a blueprint through plan, build, test, sign, publish and promote into a catalog folder,
//! reported as JSON Lines events that follow `runbook/schemas/pipeline-event.v1.schema.json`; a failing stage
//! stops the pipeline with that stage's exit code (a bad blueprint: 2 at plan; a catalog that trusts no key:
//! 1 at publish, nothing published). Builds need root and the Debian mirror, like tests/build.rs.

use std::{path::Path, process::Command};

use serde_json::Value;

mod common;
use common::{can_build, root_dir};

fn validator() -> jsonschema::Validator {
    let text =
        fs_err::read_to_string(root_dir().join("runbook/schemas/pipeline-event.v1.schema.json")).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("the schema itself is valid")
}

/// `kiln --json pipeline ARGS`: its exit code and events, each checked against the schema.
fn pipeline(args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--json")
        .arg("-q")
        .arg("pipeline")
        .args(args)
        .current_dir(root_dir())
        .env("KILN_SIGNING_PASSWORD", "pipeline-test")
        .env_remove("KILN_CATALOG")
        .env_remove("KILN_TOKEN")
        .output()
        .expect("run kiln");
    let v = validator();
    let events: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l}: {e}")))
        .collect();
    for e in &events {
        let errors: Vec<String> = v.iter_errors(e).map(|x| format!("{x} at {}", x.instance_path())).collect();
        assert!(errors.is_empty(), "event {e} breaks the schema: {errors:?}");
    }
    (o.status.code(), events)
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["stage"].as_str() {
            Some(s) => format!("{} {s}", e["event"].as_str().unwrap()),
            None => e["event"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_bad_blueprint_stops_the_pipeline_at_plan_with_exit_2() {
    let w = common::work("kiln-pipeline-tests", "bad");
    fs_err::create_dir_all(&w).unwrap();
    fs_err::write(w.join("blueprint.toml"), "name = \"x\"\nversion = \"one\"\n").unwrap();
    let (code, events) = pipeline(&[s(&w), "--catalog", s(&w.join("catalog"))]);
    assert_eq!(code, Some(2));
    assert_eq!(
        kinds(&events),
        ["pipeline-started", "stage-started plan", "stage-failed plan", "pipeline-finished"]
    );
    assert_eq!(events[2]["exit_code"], 2);
    let problems = events[2]["error"]["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["line"] == 2
            && p["column"] == 11
            && p["message"].to_string().contains("semantic version")),
        "the located problem is passed on: {}",
        events[2]
    );
    assert_eq!((events[3]["ok"].as_bool(), events[3]["failed_stage"].as_str()), (Some(false), Some("plan")));
    assert!(!w.join("catalog").exists(), "nothing is written after a failed plan");
}

#[test]
fn a_blueprint_goes_through_every_stage_into_the_catalog() {
    if !can_build() {
        return;
    }
    let w = common::work("kiln-pipeline-tests", "flow");
    fs_err::create_dir_all(&w).unwrap();
    let kiln = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("KILN_SIGNING_PASSWORD", "pipeline-test")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    kiln(&["keygen", "--out", s(&w.join("release"))]);
    let catalog = w.join("catalog");
    kiln(&["catalog", "init", "--data", s(&catalog), "--trust-key", s(&w.join("release.pub"))]);
    let cache = common::cache();
    let key = w.join("release.key");
    let (out1, out2) = (w.join("out1"), w.join("out2"));
    let common_args = ["--key", s(&key), "--cache", s(&cache)];

    // A catalog that trusts no key: everything up to publish runs, publish fails with 1, nothing is published.
    let untrusting = w.join("untrusting");
    let mut args = vec!["blueprints/debian-base-oci", "--catalog", s(&untrusting), "--out", s(&out1)];
    args.extend(common_args);
    let (code, events) = pipeline(&args);
    assert_eq!(code, Some(1), "{events:?}");
    assert_eq!(
        kinds(&events),
        [
            "pipeline-started",
            "stage-started plan",
            "stage-finished plan",
            "stage-started build",
            "stage-finished build",
            "stage-started test",
            "stage-finished test",
            "stage-started sign",
            "stage-finished sign",
            "stage-started publish",
            "stage-failed publish",
            "pipeline-finished"
        ]
    );
    assert!(events[10]["error"]["chain"].to_string().contains("trusts no signing key"), "{}", events[10]);
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["--json", "catalog", "ls", "--catalog", s(&untrusting)])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed["families"], serde_json::json!([]));

    // The catalog that trusts the key: every stage, then the version is on the channel.
    let mut args = vec![
        "blueprints/debian-base-oci",
        "--catalog",
        s(&catalog),
        "--out",
        s(&out2),
        "--channel",
        "candidate",
    ];
    args.extend(common_args);
    let (code, events) = pipeline(&args);
    assert_eq!(code, Some(0), "{events:?}");
    let finished: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "stage-finished")
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(finished, ["plan", "build", "test", "sign", "publish", "promote"]);
    let publish = events.iter().find(|e| e["event"] == "stage-finished" && e["stage"] == "publish").unwrap();
    assert_eq!(publish["result"]["created"], true);
    assert_eq!(publish["result"]["version"]["certified"], serde_json::json!(["container-base@1.0.0"]));
    let last = events.last().unwrap();
    assert_eq!((last["ok"].as_bool(), last["image"]["name"].as_str()), (Some(true), Some("debian-base-oci")));
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["--json", "catalog", "channels", "debian-base-oci", "--catalog", s(&catalog)])
        .output()
        .unwrap();
    let channels: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(channels["channels"][0]["name"], "candidate");
    assert_eq!(channels["channels"][0]["version"], "1.0.0");
}
