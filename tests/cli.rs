//! Integration tests of the `kiln` binary: exit codes, stdout/stderr discipline, JSON output, generated docs.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("KILN_LOG")
        .output()
        .expect("run kiln")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{name}-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&dir);
    fs_err::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn plan_prints_every_step_and_the_digest() {
    let o = kiln(&["plan", "blueprints/debian-minimal"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for kind in ["base", "packages", "files", "services", "system"] {
        assert!(out.contains(kind), "missing step {kind} in:\n{out}");
    }
    assert!(out.lines().any(|l| l.starts_with("digest: sha256:")), "{out}");
}

#[test]
fn plan_json_is_the_documented_schema_and_stable() {
    let a = kiln(&["--json", "plan", "blueprints/web-role"]);
    assert!(a.status.success(), "{}", stderr(&a));
    let v: serde_json::Value = serde_json::from_slice(&a.stdout).expect("stdout is JSON");
    assert_eq!(v["schema"], "kiln.plan/v1");
    assert_eq!(v["blueprint"]["name"], "web-role");
    assert_eq!(v["blueprint"]["form"], "kilnfile");
    assert_eq!(v["steps"][0]["kind"], "base");
    assert_eq!(v["steps"][0]["inputs"]["kind"], "catalog");
    let b = kiln(&["--json", "plan", "blueprints/web-role/Kilnfile"]);
    let w: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert_eq!(v["digest"], w["digest"], "a folder and its Kilnfile plan the same");
}

#[test]
fn var_overrides_change_the_plan_and_unknown_vars_are_rejected() {
    let base = kiln(&["--json", "plan", "blueprints/web-role"]);
    let over = kiln(&["--json", "plan", "blueprints/web-role", "--var", "site_name=shop.example.org"]);
    assert!(over.status.success(), "{}", stderr(&over));
    let d = |o: &Output| serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["digest"].clone();
    assert_ne!(d(&base), d(&over));

    let bad = kiln(&["plan", "blueprints/web-role", "--var", "no_such=1"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("no_such"), "{}", stderr(&bad));
}

#[test]
fn a_bad_blueprint_exits_2_with_every_problem_located_and_nothing_on_stdout() {
    let dir = scratch("bad");
    fs_err::write(
        dir.join("blueprint.toml"),
        "name = \"x\"\nversion = \"1.0\"\n[base]\nsuite = \"bookworm\"\nfrob = 1\n",
    )
    .unwrap();
    let o = kiln(&["plan", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty(), "stdout must stay clean: {}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("blueprint.toml:2:11"), "{err}");
    assert!(err.contains("blueprint.toml:5:1"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");

    let j = kiln(&["--json", "plan", dir.to_str().unwrap()]);
    assert_eq!(j.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("JSON error on stdout");
    let problems = v["error"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{v}");
    assert_eq!(problems[0]["line"], 2);
    assert_eq!(problems[1]["line"], 5);
    assert_eq!(v["error"]["exit_code"], 2);
}

#[test]
fn missing_blueprint_and_usage_errors_exit_2() {
    let o = kiln(&["plan", "no/such/blueprint"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no/such/blueprint"), "{}", stderr(&o));
    let empty = scratch("empty");
    let o = kiln(&["plan", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("holds neither"), "{}", stderr(&o));
    let o = kiln(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = kiln(&["plan", "blueprints/web-role", "--var", "novalue"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definitions() {
    let o = kiln(&["completions", "bash"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("plan"), "bash completion names the plan command");
    let o = kiln(&["man"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with(".ie") || stdout(&o).contains(".TH kiln"), "roff output");
    let dir = scratch("man");
    let o = kiln(&["man", "--out", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(Path::new(&dir.join("kiln.1")).exists());
    assert!(Path::new(&dir.join("kiln-plan.1")).exists());
}
