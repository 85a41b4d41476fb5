//! Shared fixture of the integration tests: a signed test repository (built with the crate's
//! `test-repo` generator) served over loopback HTTP, and a client with an empty cache.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kiln_debian::{
    repo::{Client, RepoSpec},
    signature::Keys,
    testrepo::{DebSpec, Server, TestKey, TestRepo},
    Cache,
};
use tempfile::TempDir;

pub const SUITE: &str = "rocky";

/// The test repository's packages:
///
/// - `base-files` (Essential, required) with a conffile and a postinst script;
/// - `dash-lite` (Essential, required) pre-depending on `libtest1 (>= 1.5)`;
/// - `libtest1` in three versions, `1.0`, `2.0~rc1` and `2.0`;
/// - `mawk-lite` (required) providing the virtual `awk`;
/// - `apt` depending on `libtest1 (>= 2.0)` and `gpgv-missing | gpgv-lite` (an alternative whose first
///   choice does not exist);
/// - `editor-lite` providing `editor (= 1.2)` (a versioned virtual package);
/// - `tool` pre-depending on `libtest1` and depending on `editor (>= 1.0), awk`;
/// - `needs-new` wanting `libtest1 (>= 3.0)`, which nothing fits;
/// - `conflicting`, which conflicts with `base-files`;
/// - `optional-extra`, which nothing pulls in.
pub fn packages() -> Vec<DebSpec> {
    vec![
        DebSpec::new("base-files", "13")
            .field("Essential", "yes")
            .field("Priority", "required")
            .conffile("/etc/kiln-release", "kiln test release\n")
            .postinst("echo base-files configured > /dev/null"),
        DebSpec::new("dash-lite", "0.5-1")
            .field("Essential", "yes")
            .field("Priority", "required")
            .field("Pre-Depends", "libtest1 (>= 1.5)"),
        DebSpec::new("libtest1", "1.0").field("Priority", "optional"),
        DebSpec::new("libtest1", "2.0~rc1").field("Priority", "optional"),
        DebSpec::new("libtest1", "2.0").field("Priority", "optional"),
        DebSpec::new("mawk-lite", "1.3").field("Priority", "required").field("Provides", "awk"),
        DebSpec::new("apt", "2.6")
            .field("Priority", "important")
            .field("Depends", "libtest1 (>= 2.0), gpgv-missing | gpgv-lite"),
        DebSpec::new("gpgv-lite", "2.2").field("Priority", "optional"),
        DebSpec::new("editor-lite", "7")
            .arch("all")
            .field("Priority", "optional")
            .field("Provides", "editor (= 1.2)"),
        DebSpec::new("tool", "1.0")
            .field("Priority", "optional")
            .field("Pre-Depends", "libtest1")
            .field("Depends", "editor (>= 1.0), awk")
            .postinst("echo tool configured > /dev/null"),
        DebSpec::new("needs-new", "1.0").field("Depends", "libtest1 (>= 3.0)"),
        DebSpec::new("conflicting", "1.0").field("Conflicts", "base-files"),
        DebSpec::new("optional-extra", "1.0").field("Priority", "optional"),
    ]
}

/// A repository in a temporary directory, its signing key, and a server for it.
pub struct Fixture {
    pub key: TestKey,
    pub repo: TestRepo,
    pub server: Server,
    pub cache_dir: PathBuf,
    // Last, so everything above is dropped (agent stopped, server joined) before the files go.
    pub dir: TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("kiln-debian-test").tempdir().expect("temp dir");
        let key = TestKey::generate(dir.path(), "archive").expect("generate a signing key");
        let root = dir.path().join("mirror");
        let repo = TestRepo::build(&root, SUITE, &packages(), &key).expect("build the test repository");
        let server = Server::serve(&root).expect("serve the repository");
        let cache_dir = dir.path().join("cache");
        Self { key, repo, server, cache_dir, dir }
    }

    pub fn client(&self) -> Client {
        Client::new(Cache::new(&self.cache_dir))
    }

    /// The repository over HTTP, trusting the fixture's key.
    pub fn spec(&self) -> RepoSpec {
        RepoSpec {
            mirror: self.server.url(),
            suite: SUITE.to_owned(),
            components: vec!["main".to_owned()],
            keys: Keys { files: vec![self.key.keyring.clone()], ..Keys::default() },
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
