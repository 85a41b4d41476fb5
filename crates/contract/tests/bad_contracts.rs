//! The corpus of bad contracts under `tests/bad/`: each case is a folder of contract files (`*.toml`,
//! loaded as a contract folder) and an `expected` file with one line per problem the folder must be
//! rejected with: `LINE:COL: MESSAGE-FRAGMENT`, or `FILE:LINE:COL: MESSAGE-FRAGMENT` in cases of several
//! files. The test asserts exactly those problems are reported, at those places, all at once.

use std::path::Path;

use kiln_contract::{ContractSet, ContractSetError};

struct Expected {
    file: Option<String>,
    line: usize,
    col: usize,
    fragment: String,
}

fn parse_expected(text: &str) -> Vec<Expected> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (file, rest) = match l.split_once(':') {
                Some((f, rest)) if f.ends_with(".toml") => (Some(f.to_owned()), rest),
                _ => (None, l),
            };
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().and_then(|s| s.trim().parse().ok()).expect("LINE");
            let col = parts.next().and_then(|s| s.trim().parse().ok()).expect("COL");
            let fragment = parts.next().expect("MESSAGE").trim().to_owned();
            Expected { file, line, col, fragment }
        })
        .collect()
}

fn check_case(dir: &Path) -> Result<(), String> {
    let expected = parse_expected(&fs_err::read_to_string(dir.join("expected")).map_err(|e| e.to_string())?);
    let err = match ContractSet::load(dir) {
        Ok(_) => return Err("was accepted".to_owned()),
        Err(e @ ContractSetError::Io(_)) => return Err(format!("failed without a location: {e}")),
        Err(e) => e,
    };
    // Every problem is also in the error's text, one `FILE:LINE:COL: message` line each.
    let text = err.to_string();
    let got = err.located();
    let got_lines: Vec<String> = got
        .iter()
        .map(|l| {
            let name = l.file.file_name().unwrap_or_default().to_string_lossy();
            format!("{name}:{}:{}: {}", l.line, l.column, l.message)
        })
        .collect();
    if got.len() != expected.len() {
        return Err(format!(
            "expected {} problems, got {}:\n  {}",
            expected.len(),
            got.len(),
            got_lines.join("\n  ")
        ));
    }
    for e in &expected {
        let hit = got.iter().any(|l| {
            let name = l.file.file_name().unwrap_or_default().to_string_lossy();
            e.file.as_deref().is_none_or(|f| f == name)
                && l.line == e.line
                && l.column == e.col
                && l.message.contains(e.fragment.as_str())
        });
        if !hit {
            let file = e.file.as_deref().map(|f| format!("{f}:")).unwrap_or_default();
            return Err(format!(
                "no problem `{file}{}:{}: …{}…`; got:\n  {}",
                e.line,
                e.col,
                e.fragment,
                got_lines.join("\n  ")
            ));
        }
    }
    for l in &got {
        let line = format!("{}:{}:{}: {}", l.file.display(), l.line, l.column, l.message);
        if !text.contains(&line) {
            return Err(format!("the error's text lacks `{line}`:\n{text}"));
        }
    }
    Ok(())
}

#[test]
fn every_bad_contract_is_rejected_at_the_right_place() {
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
}
