//! Plans of the example blueprints under `blueprints/` (snapshots), and the equivalence of the two forms.

use std::path::{Path, PathBuf};

use kiln_blueprint::{plan::plan_path, Vars};

fn examples() -> Vec<PathBuf> {
    // Relative to the crate, so snapshot paths are the same on every checkout.
    let root = Path::new("../../blueprints");
    let mut dirs: Vec<PathBuf> =
        fs_err::read_dir(root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

#[test]
fn every_example_blueprint_plans_as_snapshotted() {
    let dirs = examples();
    assert!(dirs.len() >= 3, "expected the example blueprints, found {dirs:?}");
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let plan = plan_path(&dir, &Vars::new()).unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        insta::assert_json_snapshot!(format!("plan-{name}"), plan);
        insta::assert_snapshot!(format!("plan-{name}-text"), plan.render());
    }
}

#[test]
fn toml_and_kilnfile_of_the_same_image_give_the_same_plan_digest() {
    let t = plan_path(Path::new("tests/equivalent/toml"), &Vars::new()).unwrap();
    let k = plan_path(Path::new("tests/equivalent/kilnfile"), &Vars::new()).unwrap();
    let steps = |p: &kiln_blueprint::plan::Plan| -> Vec<(String, String)> {
        p.steps.iter().map(|s| (s.kind.to_owned(), s.digest.clone())).collect()
    };
    assert_eq!(steps(&t), steps(&k), "step digests differ");
    assert_eq!(
        serde_json::to_value(&t.image).unwrap(),
        serde_json::to_value(&k.image).unwrap(),
        "image settings differ"
    );
    assert_eq!(t.digest, k.digest);
    // ...and the digest does depend on what the image is: another variable value changes it.
    let vars: Vars = [("site".to_owned(), "other.example".to_owned())].into();
    let t2 = plan_path(Path::new("tests/equivalent/toml"), &vars).unwrap();
    assert_ne!(t.digest, t2.digest);
}

#[test]
fn changing_a_file_keeps_the_digests_of_the_package_stage() {
    let dir = tempdir();
    copy_dir(Path::new("../../blueprints/debian-minimal"), &dir);
    let before = plan_path(&dir, &Vars::new()).unwrap();
    fs_err::write(dir.join("files/80-dhcp.network"), "[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n").unwrap();
    let after = plan_path(&dir, &Vars::new()).unwrap();
    for kind in ["base", "packages"] {
        assert_eq!(before.step(kind).unwrap().digest, after.step(kind).unwrap().digest, "{kind} changed");
    }
    let files = |p: &kiln_blueprint::plan::Plan| {
        p.steps.iter().filter(|s| s.kind == "files").map(|s| s.digest.clone()).collect::<Vec<_>>()
    };
    assert_ne!(files(&before), files(&after));
    assert_ne!(before.digest, after.digest);
}

#[test]
fn a_var_override_renders_into_the_template() {
    let vars: Vars = [("owner_team".to_owned(), "platform".to_owned())].into();
    let plan = plan_path(Path::new("../../blueprints/debian-minimal"), &vars).unwrap();
    let motd = plan
        .steps
        .iter()
        .filter_map(|s| match &s.inputs {
            kiln_blueprint::plan::StepInputs::Files(f) => f.iter().find(|f| f.path == "/etc/motd"),
            _ => None,
        })
        .next()
        .expect("a /etc/motd file step");
    let content = String::from_utf8(motd.content.as_ref().unwrap().to_vec()).unwrap();
    assert_eq!(content, "This is a kiln core image, maintained by platform.\n");
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-plan-test-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&dir);
    fs_err::create_dir_all(&dir).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).unwrap();
    for e in fs_err::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs_err::copy(e.path(), &target).unwrap();
        }
    }
}
