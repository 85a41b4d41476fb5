//! Helpers shared by the integration tests of the `kiln` binary: where the repository and scratch folders
//! are, whether this process may build, the shared .deb/stage cache, running `kiln` (as is, or with a
//! signing password and no catalog from the environment), and a `kiln catalog serve` child stopped when
//! dropped. Each test file uses what it needs.
#![allow(dead_code)]

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
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

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// `kiln ARGS...` run in the repository with the signing password `password`, and without a catalog or
/// token from the environment (the test names its own).
pub fn kiln_with(password: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(root_dir())
        .env("KILN_SIGNING_PASSWORD", password)
        .env_remove("KILN_CATALOG")
        .env_remove("KILN_TOKEN")
        .output()
        .expect("run kiln")
}

/// [`kiln_with`], which must succeed (else the test fails with kiln's output).
pub fn kiln_ok(password: &str, args: &[&str]) -> Output {
    succeeded("kiln", args, kiln_with(password, args))
}

/// `o`, the output of `program args`, which must have succeeded (else the test fails with what it printed).
pub fn succeeded(program: &str, args: &[&str], o: Output) -> Output {
    assert!(
        o.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `kiln catalog serve` on a free loopback port; killed when dropped.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`, as image references name a registry.
    pub host: String,
    pub port: u16,
    /// The catalog's first admin token.
    pub token: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serve the catalog in `data` (made if new), trusting the public key `key`.
pub fn serve(data: &Path, key: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["catalog", "serve", "--data", s(data), "--listen", "127.0.0.1:0", "--trust-key", s(key)])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the catalog");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("the catalog's URL");
    let url = line.trim().to_owned();
    let host = url.strip_prefix("http://127.0.0.1:").map(|port| format!("127.0.0.1:{port}"));
    let port = host.as_deref().and_then(|h| h.rsplit(':').next()?.parse().ok());
    let (Some(host), Some(port)) = (host, port) else {
        let _ = child.kill();
        panic!("kiln catalog serve printed {url:?}, not its URL");
    };
    // From here on the server is stopped however the test ends.
    let mut served = Served { child, url, host, port, token: String::new() };
    served.token =
        fs_err::read_to_string(data.join("admin-token")).expect("the admin token").trim().to_owned();
    served
}
