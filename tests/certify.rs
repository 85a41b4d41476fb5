//! `kiln test`: real images built from the example blueprints certified against the repository's contracts.
//! debian-minimal passes base-os and ssh-server (static checks on the raw disk and the OCI image, runtime
//! checks in one TCG boot); an image that does not keep a contract fails it with evidence and exit 1; bad
//! contract files are reported located, with exit 2. The artifacts are the same before and after.
//! They need root (building) and the Debian mirror, like tests/build.rs.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

mod common;
use common::{can_build, kiln, root_dir};

fn work(name: &str) -> PathBuf {
    common::work("kiln-certify-tests", name)
}

static BUILDS: Mutex<()> = Mutex::new(());

/// debian-minimal, built once for the tests that need it (certifying it never changes it).
fn minimal() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = work("minimal");
        build("blueprints/debian-minimal", &out);
        out
    })
}

fn build(blueprint: &str, out: &Path) {
    let _guard = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let cache = common::cache();
    let o = kiln(&[
        "-q",
        "build",
        root_dir().join(blueprint).to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "build {blueprint}: {}", String::from_utf8_lossy(&o.stderr));
}

fn sha256(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = fs_err::File::open(path).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Digests of every file of the artifacts (disk images, the whole OCI layout).
fn artifact_digests(out: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs_err::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(out).unwrap().to_string_lossy().into_owned();
            if rel == "manifest.json" || rel.starts_with("report") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push((rel, sha256(&p)));
            }
        }
    }
    files.sort();
    files
}

fn checks<'a>(report: &'a Value, contract: &str) -> &'a Vec<Value> {
    report["contracts"].as_array().unwrap().iter().find(|c| c["contract"] == contract).unwrap()["checks"]
        .as_array()
        .unwrap()
}

#[test]
fn debian_minimal_is_certified_for_the_contracts_it_claims() {
    if !can_build() {
        return;
    }
    let out = minimal();
    let before = artifact_digests(out);

    let o = kiln(&["--json", "test", out.to_str().unwrap()]);
    let report: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&o.stderr)));
    assert!(o.status.success(), "{}\n{report:#}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(report["passed"], true);
    assert_eq!(report["certified"], serde_json::json!(["base-os@1.0.0", "ssh-server@1.0.0"]));
    assert_eq!(report["summary"]["fail"], 0);
    assert_eq!(report["summary"]["error"], 0);
    // The runtime checks ran in a boot of the disk and passed.
    assert_eq!(report["runtime"]["booted"], true);
    let ssh = checks(&report, "ssh-server@1.0.0");
    for (id, kind) in [("ssh-port-listening", "port-listening"), ("sshd-active", "unit-active")] {
        let row = ssh.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no {id}"));
        assert_eq!((row["kind"].as_str(), row["outcome"].as_str()), (Some(kind), Some("pass")), "{row}");
    }
    // Static checks read both the disk and the OCI image.
    let base = checks(&report, "base-os@1.0.0");
    let artifacts: std::collections::BTreeSet<&str> =
        base.iter().filter_map(|c| c["artifact"].as_str()).collect();
    assert!(artifacts.contains("disk.raw") && artifacts.contains("oci"), "{artifacts:?}");
    // The OCI image is certified under its image manifest digest, the one its index.json lists.
    let oci = report["artifacts"].as_array().unwrap().iter().find(|a| a["kind"] == "oci").unwrap();
    let index: Value = serde_json::from_slice(&fs_err::read(out.join("oci/index.json")).unwrap()).unwrap();
    assert_eq!(oci["sha256"], index["manifests"][0]["digest"], "{index}");
    assert_eq!(oci["size"], index["manifests"][0]["size"], "{index}");

    // The report is on disk, listed with its digest in the manifest; the artifacts did not change.
    let on_disk: Value =
        serde_json::from_slice(&fs_err::read(out.join("report/certification.json")).unwrap()).unwrap();
    assert_eq!(on_disk, report);
    let manifest: Value = serde_json::from_slice(&fs_err::read(out.join("manifest.json")).unwrap()).unwrap();
    let listed: Vec<&Value> =
        manifest["artifacts"].as_array().unwrap().iter().filter(|a| a["kind"] == "report").collect();
    assert_eq!(listed.len(), 2, "{manifest:#}");
    for a in listed {
        let path = out.join(a["path"].as_str().unwrap());
        assert_eq!(a["sha256"].as_str().unwrap(), format!("sha256:{}", sha256(&path)));
    }
    let junit = fs_err::read_to_string(out.join("report/junit.xml")).unwrap();
    assert!(
        junit.contains("<testsuite name=\"ssh-server@1.0.0\"") && junit.contains("failures=\"0\""),
        "{junit}"
    );
    assert_eq!(artifact_digests(out), before, "testing changed an artifact");
}

#[test]
fn the_web_role_built_from_debian_minimal_is_certified_as_a_web_server() {
    if !can_build() {
        return;
    }
    // web-role starts FROM the catalog's debian-minimal; here FROM the same image's OCI layout.
    let parent = minimal();
    let dir = work("web-role");
    let status =
        Command::new("cp").arg("-a").arg(root_dir().join("blueprints/web-role")).arg(&dir).status().unwrap();
    assert!(status.success());
    let kilnfile = fs_err::read_to_string(dir.join("Kilnfile")).unwrap();
    let from = format!("FROM oci-layout:{}:1.0.0", parent.join("oci").display());
    fs_err::write(dir.join("Kilnfile"), kilnfile.replace("FROM catalog:debian-minimal@stable", &from))
        .unwrap();
    let out = work("web-role-out");
    build(dir.to_str().unwrap(), &out);
    let o = kiln(&["--json", "test", out.to_str().unwrap()]);
    let report: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&o.stderr)));
    assert!(o.status.success(), "{}\n{report:#}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(report["certified"], serde_json::json!(["base-os@1.0.0", "web-server@1.0.0"]));
    let web = checks(&report, "web-server@1.0.0");
    let responds = web.iter().find(|c| c["id"] == "http-responds").expect("http-responds");
    assert_eq!(responds["outcome"], "pass", "{responds}");
}

#[test]
fn an_image_that_breaks_a_contract_fails_it_with_evidence_and_exit_1() {
    if !can_build() {
        return;
    }
    let out = work("base-oci");
    build("blueprints/debian-base-oci", &out);
    let before = artifact_digests(&out);
    // It keeps the contract it claims...
    let o = kiln(&["--json", "test", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["certified"], serde_json::json!(["container-base@1.0.0"]));
    // ...but a container base image is no SSH server: certify it against ssh-server anyway.
    let o = kiln(&["--json", "test", out.to_str().unwrap(), "--contract", "ssh-server@^1"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["certified"], serde_json::json!([]));
    let rows = checks(&report, "ssh-server@1.0.0");
    let pkg = rows
        .iter()
        .find(|c| {
            c["kind"] == "package"
                && c["outcome"] == "fail"
                && c["expected"].as_str().unwrap().contains("openssh-server")
        })
        .unwrap_or_else(|| panic!("no failing openssh-server package check: {rows:#?}"));
    assert_eq!(pkg["found"], "not installed");
    // Runtime checks cannot run on an OCI-only image: skipped, with the reason.
    let runtime = rows.iter().find(|c| c["kind"] == "port-listening").unwrap();
    assert_eq!(runtime["outcome"], "skip");
    assert!(runtime["reason"].as_str().unwrap().contains("OCI"), "{runtime}");
    // Human output names the failures; junit counts them.
    let human = kiln(&["test", out.to_str().unwrap(), "--contract", "ssh-server@^1"]);
    assert_eq!(human.status.code(), Some(1));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("FAIL ssh-server@1.0.0") && text.contains("found not installed"), "{text}");
    let junit = fs_err::read_to_string(out.join("report/junit.xml")).unwrap();
    assert!(junit.contains("<failure type=\"package\""), "{junit}");
    assert_eq!(artifact_digests(&out), before);
}

#[test]
fn bad_contract_files_and_requests_are_usage_errors() {
    let dir = work("bad-contracts");
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::write(
        dir.join("broken.toml"),
        "name = \"broken\"\nversion = \"1.0.0\"\ndescription = \"x\"\n\n[[require]]\nid = \"a\"\ndescription = \"d\"\nseverity = \"severe\"\nkind = \"package\"\nname = \"dpkg\"\n",
    )
    .unwrap();
    let out = work("no-such-output");
    let o = kiln(&["test", out.to_str().unwrap(), "--contracts", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("broken.toml:8:12"), "{err}");
    // A missing output folder (nothing built there) is an error naming it.
    let o = kiln(&["test", out.to_str().unwrap(), "--contract", "base-os@^1"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("manifest.json"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
