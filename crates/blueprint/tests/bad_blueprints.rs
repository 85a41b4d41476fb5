//! The corpus of bad blueprints under `tests/bad/`: each case is a folder holding one `blueprint.toml` or
//! `Kilnfile` and an `expected` file with one line per problem the blueprint must be rejected with:
//! `LINE:COL: MESSAGE-FRAGMENT`. The test loads each case and asserts exactly those problems are reported,
//! at those places (several at once where a case has several lines).

use std::path::Path;

use kiln_blueprint::{LoadError, Vars};

fn check_case(dir: &Path) -> Result<(), String> {
    let expected = fs_err::read_to_string(dir.join("expected")).map_err(|e| e.to_string())?;
    let expected: Vec<(usize, usize, String)> = expected
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.splitn(3, ':');
            let line = parts.next().and_then(|s| s.trim().parse().ok()).expect("LINE");
            let col = parts.next().and_then(|s| s.trim().parse().ok()).expect("COL");
            let msg = parts.next().expect("MESSAGE").trim().to_owned();
            (line, col, msg)
        })
        .collect();
    let err = match kiln_blueprint::plan::plan_path(dir, &Vars::new()) {
        Ok(_) => return Err("was accepted".to_owned()),
        Err(kiln_blueprint::plan::PlanError::Load(LoadError::Blueprint(e)))
        | Err(kiln_blueprint::plan::PlanError::Blueprint(e)) => e,
        Err(other) => return Err(format!("failed without a location: {other}")),
    };
    let got = err.located();
    let got_lines: Vec<String> =
        got.iter().map(|l| format!("{}:{}: {}", l.line, l.column, l.message)).collect();
    if got.len() != expected.len() {
        return Err(format!(
            "expected {} problems, got {}:\n  {}",
            expected.len(),
            got.len(),
            got_lines.join("\n  ")
        ));
    }
    for (line, col, msg) in &expected {
        let hit = got.iter().any(|l| l.line == *line && l.column == *col && l.message.contains(msg.as_str()));
        if !hit {
            return Err(format!("no problem `{line}:{col}: …{msg}…`; got:\n  {}", got_lines.join("\n  ")));
        }
    }
    Ok(())
}

#[test]
fn every_bad_blueprint_is_rejected_at_the_right_place() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut cases: Vec<_> =
        fs_err::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = check_case(case) {
            failures.push(format!("{}: {e}", case.file_name().unwrap().to_string_lossy()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(cases.len() >= 30, "the corpus must hold at least 30 cases, has {}", cases.len());
    for form in ["toml-", "kiln-"] {
        let n = cases.iter().filter(|c| c.file_name().unwrap().to_string_lossy().starts_with(form)).count();
        assert!(n >= 15, "the corpus must hold at least 15 `{form}*` cases, has {n}");
    }
}
