//! The host's apt sources, read from a root directory laid out like `/etc/apt`.

use std::path::{Path, PathBuf};

use kiln_debian::{
    host_sources,
    repo::{Overrides, RepoSpec},
    sources::{HostSourcesError, SignedBy},
};

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs_err::create_dir_all(path.parent().unwrap()).unwrap();
    fs_err::write(path, text).unwrap();
}

#[test]
fn reads_both_formats_in_apt_order_and_skips_disabled_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "etc/apt/sources.list",
        "# deb http://commented.invalid/debian stable main\n\
         deb [signed-by=/k/one.gpg arch=amd64] http://one.invalid/debian stable main\n\
         deb-src http://one.invalid/debian stable main\n",
    );
    write(
        root,
        "etc/apt/sources.list.d/b.sources",
        "Types: deb\nURIs: http://b.invalid/debian\nSuites: stable stable-updates\nComponents: main contrib\n\
         Signed-By: /k/b.gpg\n\n\
         Types: deb\nURIs: http://off.invalid/debian\nSuites: stable\nComponents: main\nEnabled: no\n\n\
         Types: deb-src\nURIs: http://src.invalid/debian\nSuites: stable\nComponents: main\n",
    );
    write(root, "etc/apt/sources.list.d/a.list", "deb http://a.invalid/debian testing main\n");
    // Not *.list / *.sources: ignored, even though they are valid (or invalid) sources.
    write(
        root,
        "etc/apt/sources.list.d/c.list.disabled-by-admin",
        "deb http://c.invalid/debian stable main\n",
    );
    write(root, "etc/apt/sources.list.d/d.sources.save", "garbage\n");
    write(root, "etc/apt/sources.list.d/e.sources.disabled", "Types: deb\n");

    let sources = host_sources(root).unwrap();
    let got: Vec<(String, String, PathBuf)> =
        sources.iter().map(|s| (s.uri.clone(), s.suite.clone(), s.file.clone().unwrap())).collect();
    let d = root.join("etc/apt/sources.list.d");
    assert_eq!(
        got,
        [
            ("http://one.invalid/debian".into(), "stable".into(), root.join("etc/apt/sources.list")),
            ("http://a.invalid/debian".into(), "testing".into(), d.join("a.list")),
            ("http://b.invalid/debian".into(), "stable".into(), d.join("b.sources")),
            ("http://b.invalid/debian".into(), "stable-updates".into(), d.join("b.sources")),
        ]
    );
    assert_eq!(sources[0].architectures, ["amd64"]);
    assert_eq!(
        sources[0].signed_by,
        Some(SignedBy::Keys { files: vec!["/k/one.gpg".into()], fingerprints: vec![] })
    );
    assert_eq!(sources[2].components, ["main", "contrib"]);

    // The default repository is the first source; a blueprint suite picks its own entry.
    let spec = RepoSpec::choose(&sources, &Overrides::default(), root).unwrap();
    assert_eq!((spec.mirror.as_str(), spec.suite.as_str()), ("http://one.invalid/debian", "stable"));
    assert_eq!(spec.keys.files, [PathBuf::from("/k/one.gpg")]);
    let o = Overrides { suite: Some("stable-updates".into()), ..Overrides::default() };
    let spec = RepoSpec::choose(&sources, &o, root).unwrap();
    assert_eq!(spec.mirror, "http://b.invalid/debian");
    assert_eq!(spec.keys.files, [PathBuf::from("/k/b.gpg")]);
}

#[test]
fn a_broken_file_is_reported_with_its_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "etc/apt/sources.list.d/x.sources", "Types: deb\nURIs: http://x.invalid/\nSuites: s\n");
    match host_sources(dir.path()) {
        Err(e @ HostSourcesError::Parse { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("x.sources") && text.contains("line 1: missing field Components"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_apt_directory_means_no_sources() {
    let dir = tempfile::tempdir().unwrap();
    assert!(host_sources(dir.path()).unwrap().is_empty());
}
