//! Helpers shared by the integration tests that build real images (`tests/build.rs`, `certify.rs`,
//! `sign.rs`): where the repository and scratch folders are, whether this process may build, the shared
//! .deb/stage cache, and running the `kiln` binary. Each test file uses what it needs.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Command, Output},
};

/// The repository (the `kiln` package's folder).
pub fn root_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `NAME` in the scratch folder of `suite`, without emptying it.
pub fn work_dir(suite: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(suite).join(name)
}

/// `NAME` in the scratch folder of `suite`, removed if it was there (its parent made).
pub fn work(suite: &str, name: &str) -> PathBuf {
    let d = work_dir(suite, name);
    let _ = Command::new("rm").arg("-rf").arg(&d).status();
    fs_err::create_dir_all(d.parent().unwrap()).unwrap();
    d
}

/// The .deb and stage cache the tests share: `KILN_TEST_CACHE`, else `~/.cache/kiln`.
pub fn cache() -> PathBuf {
    std::env::var_os("KILN_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/kiln"))
}

/// Whether this process may build (root); otherwise the test says why it does nothing.
pub fn can_build() -> bool {
    let uid =
        Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.is_ok_and(|u| u == "0") {
        return true;
    }
    eprintln!("SKIP: building images needs root (maintainer scripts run in a chroot); run the tests as root");
    false
}

/// `kiln ARGS...` run in the repository.
pub fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).current_dir(root_dir()).output().expect("run kiln")
}
