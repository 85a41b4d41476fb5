//! Test support (feature `test-repo`): builds small, real, signed Debian repositories and serves them
//! over loopback HTTP, so tests of this crate and of the crates that unpack packages run hermetically.
//!
//! Packages are built with `dpkg-deb --build --root-owner-group`; the Release file is clear-signed
//! into `InRelease` with a throwaway key made by `gpg --batch --quick-gen-key` in a private
//! `GNUPGHOME`. The layout is a normal mirror: `pool/`, and `dists/SUITE/COMPONENT/binary-ARCH/` with
//! `Packages`, `Packages.gz`, `Packages.xz` and their `by-hash/SHA256/` copies.

use std::{
    fmt::Write as _,
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Component, Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

use crate::release::Sha256;

/// A fixed timestamp for everything generated (2024-01-01T00:00:00Z), so output is reproducible.
pub const EPOCH: i64 = 1_704_067_200;

fn run(cmd: &mut Command) -> io::Result<Vec<u8>> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> io::Result<()> {
    Ok(())
}

/// A throwaway OpenPGP signing key in its own GnuPG home directory. Dropping it stops the GnuPG agent
/// that home directory started.
#[derive(Debug)]
pub struct TestKey {
    home: PathBuf,
    pub fingerprint: String,
    /// The public key as a binary keyring file.
    pub keyring: PathBuf,
}

impl TestKey {
    /// Generates an ed25519 signing key `name <name@kiln.invalid>` under `dir`.
    pub fn generate(dir: &Path, name: &str) -> io::Result<Self> {
        let home = dir.join(format!("gnupg-{name}"));
        fs_err::create_dir_all(&home)?;
        set_mode(&home, 0o700)?;
        let gpg = |args: &[&str]| {
            let mut c = Command::new("gpg");
            c.arg("--homedir").arg(&home).args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ]);
            c.args(args);
            c
        };
        let uid = format!("{name} <{name}@kiln.invalid>");
        run(&mut gpg(&["--quick-gen-key", &uid, "ed25519", "sign", "never"]))?;
        let listing =
            String::from_utf8_lossy(&run(&mut gpg(&["--with-colons", "--list-secret-keys", &uid]))?)
                .into_owned();
        let fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:").map(|r| r.trim_matches(':').to_owned()))
            .ok_or_else(|| io::Error::other("gpg listed no fingerprint"))?;
        let keyring = dir.join(format!("{name}.gpg"));
        let public = run(&mut gpg(&["--export", &fingerprint]))?;
        fs_err::write(&keyring, public)?;
        Ok(Self { home, fingerprint, keyring })
    }

    /// The public key, ASCII-armored.
    pub fn armored(&self) -> io::Result<String> {
        let out = run(Command::new("gpg").arg("--homedir").arg(&self.home).args([
            "--batch",
            "--armor",
            "--export",
            &self.fingerprint,
        ]))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Clear-signs `input` into `output` (as `InRelease` is made from `Release`).
    pub fn clearsign(&self, input: &Path, output: &Path) -> io::Result<()> {
        run(Command::new("gpg")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--batch", "--no-tty", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(["--digest-algo", "SHA256", "--local-user", &self.fingerprint, "--clearsign", "--output"])
            .arg(output)
            .arg(input))?;
        Ok(())
    }
}

impl Drop for TestKey {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--kill", "all"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A package to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebSpec {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Extra control fields in order, e.g. `("Depends", "libc6 (>= 2)")`.
    pub fields: Vec<(String, String)>,
    /// Regular files: absolute path in the package, content.
    pub files: Vec<(String, String)>,
    /// Configuration files (also listed in `DEBIAN/conffiles`).
    pub conffiles: Vec<(String, String)>,
    /// A `postinst` maintainer script body (a `#!/bin/sh` line is added).
    pub postinst: Option<String>,
}

impl DebSpec {
    /// An `amd64` package with one file under `/usr/share/doc/NAME/`.
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            arch: "amd64".to_owned(),
            fields: Vec::new(),
            files: vec![(format!("/usr/share/doc/{name}/README"), format!("{name} {version}\n"))],
            conffiles: Vec::new(),
            postinst: None,
        }
    }

    #[must_use]
    pub fn arch(mut self, arch: &str) -> Self {
        arch.clone_into(&mut self.arch);
        self
    }

    #[must_use]
    pub fn field(mut self, name: &str, value: &str) -> Self {
        self.fields.push((name.to_owned(), value.to_owned()));
        self
    }

    #[must_use]
    pub fn file(mut self, path: &str, content: &str) -> Self {
        self.files.push((path.to_owned(), content.to_owned()));
        self
    }

    #[must_use]
    pub fn conffile(mut self, path: &str, content: &str) -> Self {
        self.conffiles.push((path.to_owned(), content.to_owned()));
        self
    }

    #[must_use]
    pub fn postinst(mut self, script: &str) -> Self {
        self.postinst = Some(script.to_owned());
        self
    }

    fn control(&self) -> String {
        let mut c =
            format!("Package: {}\nVersion: {}\nArchitecture: {}\n", self.name, self.version, self.arch);
        c.push_str("Maintainer: kiln tests <tests@kiln.invalid>\n");
        for (k, v) in &self.fields {
            let _ = writeln!(c, "{k}: {v}");
        }
        let _ = writeln!(c, "Description: test package {}", self.name);
        c
    }

    /// `pool/main/n/name/name_version_arch.deb` (the version without its epoch).
    pub fn pool_path(&self, component: &str) -> String {
        let version = self.version.split_once(':').map_or(self.version.as_str(), |(_, v)| v);
        let first = &self.name[..1];
        format!("pool/{component}/{first}/{}/{}_{version}_{}.deb", self.name, self.name, self.arch)
    }

    fn build(&self, staging: &Path, out: &Path) -> io::Result<()> {
        let debian = staging.join("DEBIAN");
        fs_err::create_dir_all(&debian)?;
        fs_err::write(debian.join("control"), self.control())?;
        if let Some(script) = &self.postinst {
            let path = debian.join("postinst");
            fs_err::write(&path, format!("#!/bin/sh\nset -e\n{script}\n"))?;
            set_mode(&path, 0o755)?;
        }
        if !self.conffiles.is_empty() {
            let list: String = self.conffiles.iter().map(|(p, _)| format!("{p}\n")).collect();
            fs_err::write(debian.join("conffiles"), list)?;
        }
        for (path, content) in self.files.iter().chain(&self.conffiles) {
            let target = staging.join(path.trim_start_matches('/'));
            if let Some(parent) = target.parent() {
                fs_err::create_dir_all(parent)?;
            }
            fs_err::write(&target, content)?;
            set_mode(&target, 0o644)?;
        }
        if let Some(parent) = out.parent() {
            fs_err::create_dir_all(parent)?;
        }
        run(Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(staging)
            .arg(out)
            .env("SOURCE_DATE_EPOCH", EPOCH.to_string()))?;
        Ok(())
    }
}

/// A built package as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltDeb {
    pub spec: DebSpec,
    /// Path relative to the repository root (the `Filename` field).
    pub filename: String,
    pub size: u64,
    pub sha256: Sha256,
}

/// A generated repository on disk.
#[derive(Debug)]
pub struct TestRepo {
    pub root: PathBuf,
    pub suite: String,
    pub codename: String,
    pub component: String,
    pub arch: String,
    pub debs: Vec<BuiltDeb>,
    /// `Valid-Until` to write into the Release file (seconds since the epoch), if any.
    pub valid_until: Option<i64>,
}

impl TestRepo {
    /// Builds the packages into `root/pool`, writes the indices and signs the Release file with `key`.
    pub fn build(root: &Path, suite: &str, packages: &[DebSpec], key: &TestKey) -> io::Result<Self> {
        let component = "main";
        let staging = root.join(".staging");
        let mut debs = Vec::new();
        for (n, spec) in packages.iter().enumerate() {
            let filename = spec.pool_path(component);
            let out = root.join(&filename);
            spec.build(&staging.join(n.to_string()), &out)?;
            let bytes = fs_err::read(&out)?;
            debs.push(BuiltDeb {
                spec: spec.clone(),
                filename,
                size: bytes.len() as u64,
                sha256: Sha256::of(&bytes),
            });
        }
        fs_err::remove_dir_all(&staging)?;
        let repo = Self {
            root: root.to_owned(),
            suite: suite.to_owned(),
            codename: suite.to_owned(),
            component: component.to_owned(),
            arch: "amd64".to_owned(),
            debs,
            valid_until: None,
        };
        repo.write_indices(key)?;
        Ok(repo)
    }

    /// The `dists/SUITE` directory.
    pub fn dists(&self) -> PathBuf {
        self.root.join("dists").join(&self.suite)
    }

    /// The Packages index text.
    pub fn packages_text(&self) -> String {
        let mut out = String::new();
        for deb in &self.debs {
            let control = deb.spec.control();
            let (head, description) = control.split_at(control.find("Description:").unwrap_or(control.len()));
            out.push_str(head);
            let _ = write!(
                out,
                "Filename: {}\nSize: {}\nSHA256: {}\n{description}\n",
                deb.filename, deb.size, deb.sha256
            );
        }
        out
    }

    /// (Re)writes `Packages{,.gz,.xz}`, their by-hash copies, `Release` and the signed `InRelease`.
    pub fn write_indices(&self, key: &TestKey) -> io::Result<()> {
        let dir_rel = format!("{}/binary-{}", self.component, self.arch);
        let dir = self.dists().join(&dir_rel);
        let by_hash = dir.join("by-hash/SHA256");
        fs_err::create_dir_all(&by_hash)?;
        let plain = self.packages_text().into_bytes();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain)?;
        let gz = gz.finish()?;
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&plain)?;
        let xz = xz.finish()?;
        let mut sums = String::new();
        for (name, data) in [("Packages", &plain), ("Packages.gz", &gz), ("Packages.xz", &xz)] {
            fs_err::write(dir.join(name), data)?;
            let digest = Sha256::of(data);
            fs_err::write(by_hash.join(digest.to_hex()), data)?;
            let _ = writeln!(sums, " {digest} {} {dir_rel}/{name}", data.len());
        }
        let date = rfc2822(EPOCH);
        let mut release = format!(
            "Origin: kiln-test\nLabel: kiln-test\nSuite: {}\nCodename: {}\nDate: {date}\n",
            self.suite, self.codename
        );
        if let Some(until) = self.valid_until {
            let _ = writeln!(release, "Valid-Until: {}", rfc2822(until));
        }
        let _ = write!(
            release,
            "Acquire-By-Hash: yes\nNo-Support-for-Architecture-all: Packages\nArchitectures: {}\nComponents: {}\n\
             Description: kiln test repository\nSHA256:\n{sums}",
            self.arch, self.component
        );
        let release_path = self.dists().join("Release");
        fs_err::write(&release_path, release)?;
        key.clearsign(&release_path, &self.dists().join("InRelease"))
    }

    /// The built package of a name (the first if several versions exist).
    pub fn deb(&self, name: &str) -> Option<&BuiltDeb> {
        self.debs.iter().find(|d| d.spec.name == name)
    }

    /// The absolute path of a package file.
    pub fn deb_path(&self, name: &str) -> Option<PathBuf> {
        self.deb(name).map(|d| self.root.join(&d.filename))
    }

    /// The `file://` URL of the repository.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

/// A timestamp as Debian's Release files write dates: RFC 2822 with the zone spelled `UTC`,
/// `Mon, 01 Jan 2024 00:00:00 UTC`.
pub fn rfc2822(t: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc2822).ok())
        .unwrap_or_default();
    match date.strip_suffix(" +0000") {
        Some(rest) => format!("{rest} UTC"),
        None => date,
    }
}

/// A static HTTP/1.1 file server on `127.0.0.1`, one thread per connection, for tests. It answers
/// `GET` and `HEAD` with `200` or `404` and closes each connection after one response. Dropping it
/// stops it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves the files under `root` on a free loopback port.
    pub fn serve(root: &Path) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let root = root.to_owned();
        let thread = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (root, log) = (root.clone(), log.clone());
                    std::thread::spawn(move || {
                        let _ = handle(stream, &root, &log);
                    });
                }
            })
        };
        Ok(Self { addr, stop, log, thread: Some(thread) })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request paths served so far, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(stream: TcpStream, root: &Path, log: &Mutex<Vec<String>>) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if let Ok(mut l) = log.lock() {
        l.push(path.to_owned());
    }
    let file = resolve_path(root, path).filter(|p| p.is_file());
    let mut out = stream;
    match (method, file) {
        ("GET" | "HEAD", Some(file)) => {
            let mut body = Vec::new();
            fs_err::File::open(&file)?.read_to_end(&mut body)?;
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if method == "GET" {
                out.write_all(&body)?;
            }
        }
        ("GET" | "HEAD", None) => {
            out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        }
        _ => out.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
    }
    out.flush()
}

/// Maps a request path to a file under `root`, refusing anything that would leave it.
fn resolve_path(root: &Path, path: &str) -> Option<PathBuf> {
    let decoded = crate::transport::file_url_path(&format!("file://{path}"))?;
    let mut out = root.to_owned();
    for c in decoded.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2822_round_trips() {
        assert_eq!(rfc2822(EPOCH), "Mon, 01 Jan 2024 00:00:00 UTC");
        for t in [0, 951_825_600, EPOCH, 1_783_764_997] {
            assert_eq!(crate::release::parse_rfc2822(&rfc2822(t)), Some(t));
        }
    }

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/srv/r");
        assert_eq!(resolve_path(root, "/dists/x/InRelease"), Some(PathBuf::from("/srv/r/dists/x/InRelease")));
        assert_eq!(resolve_path(root, "/a%20b"), Some(PathBuf::from("/srv/r/a b")));
        assert_eq!(resolve_path(root, "/../etc/passwd"), None);
    }
}
