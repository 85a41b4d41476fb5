//! `kiln pipeline`: a blueprint through plan, build, test, sign, publish and promote into a catalog folder,
//! reported as JSON Lines events that follow `runbook/schemas/pipeline-event.v1.schema.json`; a failing stage
//! stops the pipeline with that stage's exit code (a bad blueprint: 2 at plan; a catalog that trusts no key:
//! 1 at publish, nothing published). With `--github`, a fake GitHub API records the failure status a failing
//! stage sets on the blueprint's commit, and the release and success status that follow a publish (also through
//! `kiln publish --github`); without GITHUB_TOKEN nothing runs. Builds need root and the Debian mirror, like
//! tests/build.rs.

use std::{path::Path, process::Command};

use serde_json::Value;

mod common;
use common::{can_build, root_dir};
#[path = "../crates/github/tests/support/fake_github.rs"]
mod fake_github;
use fake_github::FakeGitHub;

const GITHUB_TOKEN: &str = "ghs_pipeline_test";

fn validator() -> jsonschema::Validator {
    let text =
        fs_err::read_to_string(root_dir().join("runbook/schemas/pipeline-event.v1.schema.json")).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("the schema itself is valid")
}

/// `kiln ARGS` in the repository, with no catalog, GitHub token or GitHub API URL from the environment.
fn kiln_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.args(args)
        .current_dir(root_dir())
        .env("KILN_SIGNING_PASSWORD", "pipeline-test")
        .env_remove("KILN_CATALOG")
        .env_remove("KILN_TOKEN")
        .env_remove("GITHUB_TOKEN")
        .env_remove("GITHUB_API_URL");
    c
}

/// `kiln --json pipeline ARGS`: its exit code and events, each checked against the schema.
fn pipeline(args: &[&str]) -> (Option<i32>, Vec<Value>) {
    pipeline_with_token(args, None)
}

/// [`pipeline`] with GITHUB_TOKEN set to `token`.
fn pipeline_with_token(args: &[&str], token: Option<&str>) -> (Option<i32>, Vec<Value>) {
    let mut all = vec!["--json", "-q", "pipeline"];
    all.extend_from_slice(args);
    let mut cmd = kiln_cmd(&all);
    if let Some(t) = token {
        cmd.env("GITHUB_TOKEN", t);
    }
    let o = cmd.output().expect("run kiln");
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

/// A git repository in `dir` holding everything in it, committed; the commit.
fn commit_all(dir: &Path) -> String {
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=kiln", "-c", "user.email=kiln@example.invalid"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "blueprints"]);
    git(&["rev-parse", "HEAD"])
}

#[test]
fn a_bad_github_setting_stops_the_pipeline_before_any_stage_with_exit_2() {
    let w = common::work("kiln-pipeline-tests", "github-usage");
    fs_err::create_dir_all(&w).unwrap();
    fs_err::write(w.join("blueprint.toml"), "name = \"x\"\nversion = \"1.0.0\"\n").unwrap();
    let catalog = w.join("catalog");
    let cases: [(&[&str], Option<&str>, &str); 3] = [
        (&["--github", "example-org/images"], None, "GITHUB_TOKEN"),
        (&["--github", "example-org"], Some(GITHUB_TOKEN), "OWNER/REPO"),
        (&["--github", "o/r", "--github-api", "api.github.com"], Some(GITHUB_TOKEN), "--github-api"),
    ];
    for (github, token, says) in cases {
        let mut args = vec!["--json", "pipeline", s(&w), "--catalog", s(&catalog)];
        args.extend_from_slice(github);
        let mut cmd = kiln_cmd(&args);
        if let Some(t) = token {
            cmd.env("GITHUB_TOKEN", t);
        }
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{github:?}: {}", String::from_utf8_lossy(&o.stderr));
        let answer: Value = serde_json::from_slice(&o.stdout).expect("one JSON document, no event");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{github:?}: {message}");
        assert!(!w.join(".kiln-out").exists() && !catalog.exists(), "no stage ran");
    }
}

#[test]
fn a_failing_stage_sets_the_failure_status_on_the_blueprint_commit() {
    let w = common::work("kiln-pipeline-tests", "github-failure");
    let bp = w.join("web-role");
    fs_err::create_dir_all(&bp).unwrap();
    fs_err::write(bp.join("blueprint.toml"), "name = \"web-role\"\nversion = \"one\"\n").unwrap();
    let head = commit_all(&w);
    let fake = FakeGitHub::start("example-org", "images", GITHUB_TOKEN);
    let catalog = w.join("catalog");
    let args =
        [s(&bp), "--catalog", s(&catalog), "--github", "example-org/images", "--github-api", &fake.url];

    let (code, events) = pipeline_with_token(&args, Some(GITHUB_TOKEN));
    assert_eq!(code, Some(2), "the stage's exit code: {events:?}");
    assert_eq!(
        kinds(&events),
        [
            "pipeline-started",
            "stage-started plan",
            "stage-failed plan",
            "github-finished",
            "pipeline-finished"
        ]
    );
    assert_eq!(events[0]["github"], "example-org/images");
    let status = &events[3]["status"];
    assert_eq!((events[3]["after"].as_str(), status["sha"].as_str()), (Some("plan"), Some(head.as_str())));
    assert_eq!(
        (status["state"].as_str(), status["context"].as_str()),
        (Some("failure"), Some("kiln/web-role"))
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1, "one status, no release: {reqs:?}");
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.clone()),
        ("POST", format!("/repos/example-org/images/statuses/{head}"))
    );
    assert_eq!(reqs[0].header("authorization"), format!("Bearer {GITHUB_TOKEN}"));
    let description = reqs[0].body["description"].as_str().unwrap();
    assert!(
        description.starts_with("plan failed: cannot plan ") && description.chars().count() <= 140,
        "{description}"
    );
    assert_eq!(reqs[0].body.get("target_url"), None);

    // GitHub refusing the token is reported; the exit code stays the failed stage's.
    let (code, events) = pipeline_with_token(&args, Some("ghs_revoked"));
    assert_eq!(code, Some(2));
    assert_eq!(kinds(&events)[3], "github-failed");
    assert_eq!(events[3]["errors"][0]["http_status"], 401);
    assert!(events[3]["errors"][0]["message"].as_str().unwrap().contains("Bad credentials"));
    assert_eq!(fake.statuses().len(), 1);
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
    let fake = FakeGitHub::start("example-org", "images", GITHUB_TOKEN);
    let github_args = ["--github", "example-org/images", "--github-api", fake.url.as_str()];

    // A catalog that trusts no key: everything up to publish runs, publish fails with 1, nothing is published;
    // the failure status goes on the commit the build recorded.
    let untrusting = w.join("untrusting");
    let mut args = vec!["blueprints/debian-base-oci", "--catalog", s(&untrusting), "--out", s(&out1)];
    args.extend(common_args);
    args.extend(github_args);
    let (code, events) = pipeline_with_token(&args, Some(GITHUB_TOKEN));
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
            "github-finished",
            "pipeline-finished"
        ]
    );
    assert!(events[10]["error"]["chain"].to_string().contains("trusts no signing key"), "{}", events[10]);
    let materials: Value =
        serde_json::from_slice(&fs_err::read(out1.join("build/materials.json")).unwrap()).unwrap();
    let built_from = materials["repository"]["commit"].as_str().expect("the build recorded its commit");
    assert_eq!(events[11]["status"]["sha"], built_from);
    assert_eq!(events[11]["status"]["state"], "failure");
    assert!(events[11]["status"]["description"].as_str().unwrap().starts_with("publish failed: "));
    assert!(fake.releases().is_empty(), "no release without a publish");
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
    args.extend(github_args);
    let (code, events) = pipeline_with_token(&args, Some(GITHUB_TOKEN));
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

    // GitHub, right after the publish: the release with the notes and every artifact's digest, the success
    // status on the commit the build recorded (no link: the catalog is a folder).
    let after: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    let at = after.iter().position(|e| *e == "github-finished").expect("a github-finished event");
    assert_eq!(
        (events[at - 1]["event"].as_str(), events[at - 1]["stage"].as_str()),
        (Some("stage-finished"), Some("publish"))
    );
    assert_eq!(events[at]["release"]["tag"], "debian-base-oci-1.0.0");
    assert_eq!(events[at]["release"]["created"], true);
    let materials: Value =
        serde_json::from_slice(&fs_err::read(out2.join("build/materials.json")).unwrap()).unwrap();
    let built_from = materials["repository"]["commit"].as_str().unwrap();
    assert_eq!(events[at]["status"]["sha"], built_from);
    assert_eq!(events[at]["status"]["state"], "success");
    assert_eq!(events[at]["status"].get("target_url"), None);
    let releases = fake.releases();
    assert_eq!(releases.len(), 1);
    assert_eq!(
        (releases[0].tag.as_str(), releases[0].target_commitish.as_str()),
        ("debian-base-oci-1.0.0", built_from)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["catalog", "notes", "debian-base-oci", "1.0.0", "--catalog", s(&catalog)])
        .output()
        .unwrap();
    let notes = String::from_utf8(o.stdout).unwrap();
    assert!(!notes.trim().is_empty());
    assert!(releases[0].body.starts_with(notes.trim_end()), "the release notes open the release");
    for a in publish["result"]["version"]["artifacts"].as_array().unwrap() {
        let digest = a["digest"].as_str().unwrap();
        assert!(releases[0].body.contains(&format!("`{digest}`")), "{digest} in\n{}", releases[0].body);
    }

    // kiln publish --github on the same output: nothing changes in the catalog, the release is updated.
    let o = kiln_cmd(&[
        "--json",
        "publish",
        s(&out2),
        "--catalog",
        s(&catalog),
        "--github",
        "example-org/images",
    ])
    .env("GITHUB_TOKEN", GITHUB_TOKEN)
    .env("GITHUB_API_URL", &fake.url)
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(answer["created"], false);
    assert_eq!(answer["github"]["release"]["created"], false);
    assert_eq!(answer["github"]["status"]["sha"], built_from);
    let last: Vec<String> =
        fake.requests().iter().rev().take(3).map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(
        last,
        [
            format!("POST /repos/example-org/images/statuses/{built_from}"),
            format!("PATCH /repos/example-org/images/releases/{}", releases[0].id),
            "GET /repos/example-org/images/releases/tags/debian-base-oci-1.0.0".to_owned(),
        ]
    );
    assert_eq!(fake.releases().len(), 1);
}
