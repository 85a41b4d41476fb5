//! The semantics of a contract set: which version a request resolves to, which certification satisfies which
//! request (versions and `extends` chains), what a contract requires with everything it extends, and the
//! runbook citation check.

use std::path::PathBuf;

use kiln_blueprint::model::ContractRef;
use kiln_contract::{ContractId, ContractSet, ContractSetError};

/// A contract file: `extends` entries and requirement ids (each a `unit-active` check).
fn contract(name: &str, version: &str, extends: &[&str], reqs: &[&str]) -> (PathBuf, String) {
    let mut text =
        format!("name = \"{name}\"\nversion = \"{version}\"\ndescription = \"{name} {version}\"\n");
    if !extends.is_empty() {
        let list: Vec<String> = extends.iter().map(|e| format!("\"{e}\"")).collect();
        text.push_str(&format!("extends = [{}]\n", list.join(", ")));
    }
    for r in reqs {
        text.push_str(&format!(
            "\n[[require]]\nid = \"{r}\"\ndescription = \"{r}\"\nseverity = \"major\"\nrunbook = \"{r}\"\n\
             kind = \"unit-active\"\nunit = \"{r}.service\"\n"
        ));
    }
    (PathBuf::from(format!("contracts/{name}-{version}.toml")), text)
}

fn request(s: &str) -> ContractRef {
    let (name, req) = s.split_once('@').unwrap();
    ContractRef { name: name.into(), req: req.into() }
}

fn id(s: &str) -> ContractId {
    let (name, version) = s.split_once('@').unwrap();
    ContractId { name: name.into(), version: semver::Version::parse(version).unwrap() }
}

/// base-os 1.0.0, 1.3.0 (one more requirement) and 2.0.0; ssh-server extends base-os@^1; hardened-ssh
/// extends ssh-server@^1; both-ways extends ssh-server@^1 and base-os@^1 (a diamond).
fn set() -> ContractSet {
    ContractSet::from_files([
        contract("base-os", "1.0.0", &[], &["boots"]),
        contract("base-os", "1.3.0", &[], &["boots", "no-failed-units"]),
        contract("base-os", "2.0.0", &[], &["boots-fast"]),
        contract("ssh-server", "1.0.0", &["base-os@^1"], &["sshd"]),
        contract("hardened-ssh", "1.0.0", &["ssh-server@^1"], &["no-root-login"]),
        contract("both-ways", "1.0.0", &["ssh-server@^1", "base-os@^1"], &["extra"]),
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_request_resolves_to_the_highest_matching_version() {
    let set = set();
    let resolved = |r: &str| set.resolve(&request(r)).map(|c| c.id.to_string());
    assert_eq!(resolved("base-os@^1").as_deref(), Some("base-os@1.3.0"));
    assert_eq!(resolved("base-os@^1.1").as_deref(), Some("base-os@1.3.0"));
    assert_eq!(resolved("base-os@~1.0").as_deref(), Some("base-os@1.0.0"));
    assert_eq!(resolved("base-os@*").as_deref(), Some("base-os@2.0.0"));
    assert_eq!(resolved("base-os@^3"), None);
    assert_eq!(resolved("web-server@^1"), None);
}

#[test]
fn a_certification_satisfies_requests_whose_range_holds_its_version() {
    let set = set();
    assert!(set.satisfies(&id("base-os@1.3.0"), &request("base-os@^1.1")));
    assert!(set.satisfies(&id("base-os@1.3.0"), &request("base-os@^1")));
    assert!(!set.satisfies(&id("base-os@2.0.0"), &request("base-os@^1.1")));
    assert!(!set.satisfies(&id("base-os@1.0.0"), &request("base-os@^1.1")));
    assert!(!set.satisfies(&id("base-os@1.3.0"), &request("ssh-server@^1")));
    // A version the set does not hold still answers by name and range.
    assert!(set.satisfies(&id("base-os@1.7.2"), &request("base-os@^1.1")));
}

#[test]
fn a_certification_satisfies_what_its_contract_extends_transitively() {
    let set = set();
    assert!(set.satisfies(&id("ssh-server@1.0.0"), &request("base-os@^1")));
    assert!(set.satisfies(&id("ssh-server@1.0.0"), &request("base-os@^1.1")));
    assert!(set.satisfies(&id("hardened-ssh@1.0.0"), &request("ssh-server@^1")));
    assert!(set.satisfies(&id("hardened-ssh@1.0.0"), &request("base-os@^1.2")));
    assert!(!set.satisfies(&id("hardened-ssh@1.0.0"), &request("base-os@^2")));
    // Not the other way round.
    assert!(!set.satisfies(&id("ssh-server@1.0.0"), &request("hardened-ssh@^1")));
    assert!(!set.satisfies(&id("base-os@1.3.0"), &request("ssh-server@^1")));
    // A contract the set does not hold extends nothing it knows of.
    assert!(!set.satisfies(&id("hardened-ssh@9.0.0"), &request("base-os@^1")));
}

#[test]
fn effective_requirements_are_the_own_then_the_extended_each_tagged_and_once() {
    let set = set();
    let of = |s: &str| {
        let c = set.get(&id(s)).unwrap();
        set.effective(c).into_iter().map(|(id, r)| format!("{id}:{}", r.id)).collect::<Vec<_>>()
    };
    assert_eq!(
        of("hardened-ssh@1.0.0"),
        [
            "hardened-ssh@1.0.0:no-root-login",
            "ssh-server@1.0.0:sshd",
            "base-os@1.3.0:boots",
            "base-os@1.3.0:no-failed-units",
        ]
    );
    // The diamond brings base-os once.
    assert_eq!(
        of("both-ways@1.0.0"),
        [
            "both-ways@1.0.0:extra",
            "ssh-server@1.0.0:sshd",
            "base-os@1.3.0:boots",
            "base-os@1.3.0:no-failed-units",
        ]
    );
    assert_eq!(of("base-os@1.0.0"), ["base-os@1.0.0:boots"]);
    let lineage: Vec<String> =
        set.lineage(set.get(&id("hardened-ssh@1.0.0")).unwrap()).iter().map(|c| c.id.to_string()).collect();
    assert_eq!(lineage, ["hardened-ssh@1.0.0", "ssh-server@1.0.0", "base-os@1.3.0"]);
}

#[test]
fn contracts_are_listed_by_name_then_version() {
    let ids: Vec<String> = set().contracts().iter().map(|c| c.id.to_string()).collect();
    assert_eq!(
        ids,
        [
            "base-os@1.0.0",
            "base-os@1.3.0",
            "base-os@2.0.0",
            "both-ways@1.0.0",
            "hardened-ssh@1.0.0",
            "ssh-server@1.0.0"
        ]
    );
}

#[test]
fn missing_and_cyclic_extends_are_errors_at_the_entry() {
    let err = ContractSet::from_files([
        contract("a", "1.0.0", &["b@^1"], &["ra"]),
        contract("b", "1.0.0", &["a@^1"], &["rb"]),
        contract("c", "1.0.0", &["base-os@^1"], &["rc"]),
    ])
    .unwrap_err();
    let lines: Vec<String> = err.located().iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "contracts/a-1.0.0.toml:4:12: `b@^1` leads back to this contract: a@1.0.0 -> b@1.0.0 -> a@1.0.0",
            "contracts/b-1.0.0.toml:4:12: `a@^1` leads back to this contract: b@1.0.0 -> a@1.0.0 -> b@1.0.0",
            "contracts/c-1.0.0.toml:4:12: no contract matches `base-os@^1`",
        ]
    );
    assert_eq!(err.reports().len(), 3);
    assert!(matches!(err, ContractSetError::Invalid { ref errors } if errors.len() == 3));
}

#[test]
fn every_problem_of_every_file_is_reported_together() {
    let (path, mut text) = contract("a", "1.0.0", &[], &["ra"]);
    text = text.replace("severity = \"major\"", "severity = \"huge\"");
    let err = ContractSet::from_files([
        (path, text),
        (
            PathBuf::from("contracts/b.toml"),
            "name = \"b\"\nversion = \"x\"\ndescription = \"d\"\nextends = [\"a@^1\"]\n".into(),
        ),
        contract("c", "1.0.0", &["a@^1", "b@^1"], &["rc"]),
    ])
    .unwrap_err();
    let lines: Vec<String> = err.located().iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].starts_with("contracts/a-1.0.0.toml:8:12: `require[0].severity`: unknown severity `huge`")
    );
    assert!(lines[1].starts_with("contracts/b.toml:2:11: `version`: `x` is not a semantic version"));
    // c extends a and b, whose files are broken: they are not reported again as missing.
}

#[test]
fn cited_runbook_entries_must_exist() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("runbook-{}", std::process::id()));
    fs_err::create_dir_all(dir.join("checks")).unwrap();
    fs_err::write(dir.join("checks/boots.md"), "# boots\n").unwrap();
    let set =
        ContractSet::from_files([contract("base-os", "1.0.0", &[], &["boots", "no-failed-units"])]).unwrap();
    let missing = set.check_runbooks(&dir).unwrap_err();
    assert_eq!(missing.0.len(), 1);
    let m = &missing.0[0];
    assert_eq!(
        (m.requirement.as_str(), m.runbook.as_str(), m.line),
        ("no-failed-units", "no-failed-units", 13)
    );
    assert_eq!(m.expected, dir.join("checks/no-failed-units.md"));
    assert!(missing
        .to_string()
        .starts_with("contracts/base-os-1.0.0.toml:13: requirement `no-failed-units` of base-os@1.0.0"));
    fs_err::write(dir.join("checks/no-failed-units.md"), "# no-failed-units\n").unwrap();
    assert_eq!(set.check_runbooks(&dir), Ok(()));
    fs_err::remove_dir_all(&dir).unwrap();
}
