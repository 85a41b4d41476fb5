//! The contracts of the repository (`contracts/*.toml`): each parses, their `extends` resolve, every
//! requirement cites a runbook entry that exists, the blueprints' claims name contracts that exist, and the
//! parsed model of each is pinned by a snapshot.

use std::path::{Path, PathBuf};

use kiln_contract::{parse::KINDS, ContractSet};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's contract files, named relative to the repository root (as in messages and snapshots).
fn files() -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = fs_err::read_dir(repo().join("contracts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .map(|n| {
            let text = fs_err::read_to_string(repo().join("contracts").join(&n)).unwrap();
            (PathBuf::from("contracts").join(n), text)
        })
        .collect();
    files.sort();
    files
}

fn set() -> ContractSet {
    ContractSet::from_files(files()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_repository_contracts_load_and_their_extends_resolve() {
    // Through the folder loader too, as `kiln test` reads them.
    let loaded = ContractSet::load(&repo().join("contracts")).unwrap_or_else(|e| panic!("{e}"));
    let set = set();
    let ids: Vec<String> = set.contracts().iter().map(|c| c.id.to_string()).collect();
    assert_eq!(ids, ["base-os@1.0.0", "container-base@1.0.0", "ssh-server@1.0.0", "web-server@1.0.0"]);
    assert_eq!(loaded.contracts().len(), set.contracts().len());
    for c in set.contracts() {
        for r in &c.extends {
            assert!(set.resolve(r).is_some(), "{}: extends {}@{} resolves to nothing", c.id, r.name, r.req);
        }
    }
}

#[test]
fn every_requirement_cites_a_runbook_entry_that_exists() {
    let set = set();
    for c in set.contracts() {
        for r in &c.requirements {
            assert!(r.runbook.is_some(), "{}: requirement `{}` cites no runbook entry", c.id, r.id);
        }
    }
    if let Err(missing) = set.check_runbooks(&repo().join("runbook")) {
        panic!("{missing}");
    }
}

#[test]
fn role_contracts_extend_base_os() {
    let set = set();
    for name in ["ssh-server", "web-server"] {
        let c = set.contracts().iter().find(|c| c.id.name == name).unwrap();
        let base = set.contracts().iter().find(|c| c.id.name == "base-os").unwrap();
        assert!(set.satisfies(
            &c.id,
            &kiln_blueprint::model::ContractRef { name: "base-os".into(), req: "^1".into() }
        ));
        let effective = set.effective(c);
        assert_eq!(effective.len(), c.requirements.len() + base.requirements.len());
        assert!(effective.iter().any(|(id, r)| *id == base.id && r.id == "boots-to-multi-user"));
    }
}

#[test]
fn the_example_blueprints_claim_contracts_that_exist() {
    let set = set();
    for bp in ["debian-minimal", "debian-base-oci", "web-role"] {
        let blueprint =
            kiln_blueprint::load(&repo().join("blueprints").join(bp), &kiln_blueprint::Vars::new())
                .unwrap_or_else(|e| panic!("{bp}: {e}"));
        assert!(!blueprint.contracts.is_empty(), "{bp} claims no contract");
        for claim in &blueprint.contracts {
            assert!(
                set.resolve(&claim.value).is_some(),
                "{bp} claims {}@{}, which no contract answers",
                claim.value.name,
                claim.value.req
            );
        }
    }
}

#[test]
fn the_format_documentation_covers_every_kind() {
    let doc = fs_err::read_to_string(repo().join("runbook/contracts.md")).unwrap();
    for kind in KINDS {
        assert!(doc.contains(&format!("### `{kind}`")), "runbook/contracts.md has no section `### `{kind}``");
    }
}

#[test]
fn parsed_models() {
    for (path, text) in files() {
        let c = kiln_contract::parse(&path, text).unwrap_or_else(|e| panic!("{e}"));
        insta::assert_json_snapshot!(format!("contract-{}", c.id.name), c);
    }
}
