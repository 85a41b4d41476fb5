//! Finding the blueprint's commit: the one the build recorded in `build/materials.json`, else the git `HEAD`
//! of the blueprint's folder (given, or as the build recorded its path), else none.

use std::{path::Path, process::Command};

use kiln_github::commit::{blueprint_commit, git_head, is_commit, recorded_commit, CommitError};

const RECORDED: &str = "1111111111111111111111111111111111111111";

fn materials(out: &Path, repository: Option<&str>, blueprint_path: &str) {
    fs_err::create_dir_all(out.join("build")).unwrap();
    let mut m = serde_json::json!({
        "schema": "kiln.materials/v1", "kiln_version": "0.1.0",
        "blueprint": { "path": blueprint_path, "digest": "sha256:00", "variables": {} },
        "source_date_epoch": 0, "packages": []
    });
    if let Some(c) = repository {
        m["repository"] = serde_json::json!({ "uri": "https://example.invalid/images.git", "commit": c });
    }
    fs_err::write(out.join("build/materials.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// A git repository in `dir` with one commit; its id.
fn git_repo(dir: &Path) -> String {
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
    fs_err::create_dir_all(dir.join("blueprints/base")).unwrap();
    fs_err::write(dir.join("blueprints/base/blueprint.toml"), "name = \"base\"\n").unwrap();
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "blueprint"]);
    git(&["rev-parse", "HEAD"])
}

#[test]
fn the_commit_the_build_recorded_comes_first() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let head = git_repo(&repo);
    let out = t.path().join("out");
    materials(&out, Some(RECORDED), "blueprints/base/blueprint.toml");
    assert_eq!(recorded_commit(&out).unwrap().as_deref(), Some(RECORDED));
    // Even when the blueprint's folder is now at another commit.
    assert_ne!(head, RECORDED);
    assert_eq!(
        blueprint_commit(&out, Some(&repo.join("blueprints/base"))).unwrap().as_deref(),
        Some(RECORDED)
    );
}

#[test]
fn without_a_recorded_commit_the_head_of_the_blueprint_folder_is_used() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let head = git_repo(&repo);
    assert!(is_commit(&head));
    assert_eq!(git_head(&repo.join("blueprints/base")).as_deref(), Some(head.as_str()));

    // No materials at all (a plan or build that failed): the folder given.
    let none = t.path().join("no-output");
    assert_eq!(blueprint_commit(&none, Some(&repo.join("blueprints/base"))).unwrap(), Some(head.clone()));
    assert_eq!(blueprint_commit(&none, None).unwrap(), None);

    // Materials without a repository: the folder of the blueprint path they name.
    let out = t.path().join("out");
    let bp = repo.join("blueprints/base/blueprint.toml");
    materials(&out, None, bp.to_str().unwrap());
    assert_eq!(recorded_commit(&out).unwrap(), None);
    assert_eq!(blueprint_commit(&out, None).unwrap(), Some(head));

    // Outside any git repository there is none.
    let plain = t.path().join("plain");
    fs_err::create_dir_all(&plain).unwrap();
    assert_eq!(git_head(&plain), None);
    materials(&out, None, plain.join("blueprint.toml").to_str().unwrap());
    assert_eq!(blueprint_commit(&out, None).unwrap(), None);
}

#[test]
fn a_recorded_value_that_is_no_commit_id_is_not_taken_and_broken_materials_are_an_error() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    materials(&out, Some("main"), "blueprint.toml");
    assert_eq!(recorded_commit(&out).unwrap(), None);
    fs_err::write(out.join("build/materials.json"), "{ not json").unwrap();
    let e = recorded_commit(&out).unwrap_err();
    assert!(matches!(&e, CommitError::Parse { path, .. } if path.ends_with("build/materials.json")), "{e}");
}
