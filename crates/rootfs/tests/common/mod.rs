//! Shared test helpers: building .deb files (with `dpkg-deb`, or crafted with the `tar` and `ar` crates
//! for what `dpkg-deb --root-owner-group` cannot express), a small self-contained base package made of the
//! host's own shell, coreutils and dpkg (so that the sandbox and dpkg run in a tree without any download),
//! and probes for leaked mounts and processes.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A package to build with `dpkg-deb --build --root-owner-group`.
#[derive(Debug, Clone)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    pub fields: Vec<(String, String)>,
    files: Vec<(String, Vec<u8>, u32)>,
    dirs: Vec<(String, u32)>,
    symlinks: Vec<(String, String)>,
    hardlinks: Vec<(String, String)>,
    conffiles: Vec<String>,
    members: Vec<(String, String, u32)>,
}

impl Pkg {
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            fields: vec![
                ("Architecture".to_owned(), "amd64".to_owned()),
                ("Maintainer".to_owned(), "kiln tests <tests@example.invalid>".to_owned()),
                ("Description".to_owned(), format!("{name} for kiln's tests\n Built by the test suite.")),
            ],
            files: Vec::new(),
            dirs: Vec::new(),
            symlinks: Vec::new(),
            hardlinks: Vec::new(),
            conffiles: Vec::new(),
            members: Vec::new(),
        }
    }
    pub fn field(mut self, name: &str, value: &str) -> Self {
        self.fields.retain(|(n, _)| n != name);
        self.fields.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn file(self, path: &str, content: &str) -> Self {
        self.file_mode(path, content.as_bytes(), 0o644)
    }
    pub fn file_mode(mut self, path: &str, content: &[u8], mode: u32) -> Self {
        self.files.push((path.to_owned(), content.to_vec(), mode));
        self
    }
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.dirs.push((path.to_owned(), mode));
        self
    }
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.symlinks.push((path.to_owned(), target.to_owned()));
        self
    }
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.hardlinks.push((path.to_owned(), target.to_owned()));
        self
    }
    pub fn conffile(mut self, path: &str, content: &str) -> Self {
        self.conffiles.push(path.to_owned());
        self.file(path, content)
    }
    /// A maintainer script (`preinst`, `postinst`, ...), executable.
    pub fn script(mut self, name: &str, body: &str) -> Self {
        self.members.push((name.to_owned(), body.to_owned(), 0o755));
        self
    }
    /// Another control member (`triggers`, `templates`, `md5sums`, ...).
    pub fn member(mut self, name: &str, body: &str) -> Self {
        self.members.push((name.to_owned(), body.to_owned(), 0o644));
        self
    }

    /// Build `NAME_VERSION_amd64.deb` in `out` with `dpkg-deb -Z<compression>`.
    pub fn build(&self, out: &Path, compression: &str) -> PathBuf {
        let stage = tempfile::tempdir().unwrap();
        let root = stage.path().join("root");
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        for (path, mode) in &self.dirs {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        for (path, content, mode) in &self.files {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        for (path, target) in &self.symlinks {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, &p).unwrap();
        }
        for (path, target) in &self.hardlinks {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::hard_link(root.join(target.trim_start_matches('/')), &p).unwrap();
        }
        let mut control = format!("Package: {}\nVersion: {}\n", self.name, self.version);
        for (k, v) in &self.fields {
            control.push_str(&format!("{k}: {v}\n"));
        }
        std::fs::write(root.join("DEBIAN/control"), control).unwrap();
        if !self.conffiles.is_empty() {
            std::fs::write(root.join("DEBIAN/conffiles"), self.conffiles.join("\n") + "\n").unwrap();
        }
        for (name, body, mode) in &self.members {
            let p = root.join("DEBIAN").join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        let deb = out.join(format!("{}_{}_amd64.deb", self.name, self.version));
        run(Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group", &format!("-Z{compression}"), "-z1"])
            .arg(&root)
            .arg(&deb));
        deb
    }
}

/// An entry of a crafted data archive.
#[derive(Debug, Clone)]
pub enum Crafted {
    Dir {
        path: &'static str,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    File {
        path: &'static str,
        content: &'static str,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    Symlink {
        path: &'static str,
        target: &'static str,
    },
    Char {
        path: &'static str,
        major: u32,
        minor: u32,
        mode: u32,
    },
    Fifo {
        path: &'static str,
        mode: u32,
    },
    /// A raw member name, written as is (for paths that `tar::Builder` refuses, like `../x`).
    RawFile {
        name: &'static str,
        content: &'static str,
    },
}

pub const CRAFTED_MTIME: u64 = 1_600_000_000;

/// A .deb assembled with the `tar` and `ar` crates: numeric owners, device nodes, an uncompressed
/// `data.tar`, no md5sums member (so the reader must make one).
pub fn craft_deb(out: &Path, name: &str, entries: &[Crafted]) -> PathBuf {
    let mut data = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(CRAFTED_MTIME);
        h.set_size(size);
        h
    };
    let mut root = header(tar::EntryType::Directory, 0o755, 0, 0, 0);
    data.append_data(&mut root, "./", std::io::empty()).unwrap();
    for e in entries {
        match e {
            Crafted::Dir { path, mode, uid, gid } => {
                let mut h = header(tar::EntryType::Directory, *mode, *uid, *gid, 0);
                data.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Crafted::File { path, content, mode, uid, gid } => {
                let mut h = header(tar::EntryType::Regular, *mode, *uid, *gid, content.len() as u64);
                data.append_data(&mut h, path, content.as_bytes()).unwrap();
            }
            Crafted::Symlink { path, target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
                data.append_link(&mut h, path, target).unwrap();
            }
            Crafted::Char { path, major, minor, mode } => {
                let mut h = header(tar::EntryType::Char, *mode, 0, 0, 0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                data.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Crafted::Fifo { path, mode } => {
                let mut h = header(tar::EntryType::Fifo, *mode, 0, 0, 0);
                data.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Crafted::RawFile { name, content } => {
                let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, content.len() as u64);
                let raw = &mut h.as_old_mut().name;
                raw[..name.len()].copy_from_slice(name.as_bytes());
                h.set_cksum();
                data.append(&h, content.as_bytes()).unwrap();
            }
        }
    }
    let data = data.into_inner().unwrap();

    let control_text = format!(
        "Package: {name}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: kiln tests <t@example.invalid>\n\
         Description: crafted\n"
    );
    let mut control = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0o755, 0, 0, 0);
    control.append_data(&mut h, "./", std::io::empty()).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, control_text.len() as u64);
    control.append_data(&mut h, "./control", control_text.as_bytes()).unwrap();
    let control = control.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&control).unwrap();
    let control = gz.finish().unwrap();

    let path = out.join(format!("{name}_1.0_amd64.deb"));
    let mut ar = ar::Builder::new(std::fs::File::create(&path).unwrap());
    for (member, bytes) in
        [("debian-binary", b"2.0\n".to_vec()), ("control.tar.gz", control), ("data.tar", data)]
    {
        let mut h = ar::Header::new(member.as_bytes().to_vec(), bytes.len() as u64);
        h.set_mode(0o644);
        ar.append(&h, bytes.as_slice()).unwrap();
    }
    path
}

/// Run a command, panicking with its output when it fails; its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lines of `/proc/self/mountinfo` whose mount point is inside `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&needle)))
        .map(str::to_owned)
        .collect()
}

/// Processes whose root directory is `dir` (chrooted there).
pub fn processes_in(dir: &Path) -> Vec<u32> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == dir))
        .collect()
}

/// Wait up to `secs` for `f` to hold.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    f()
}

/// Host programs the small base carries: a shell, coreutils, and what dpkg needs to configure packages.
const BASE_PROGRAMS: &[&str] = &[
    "dash",
    "cat",
    "env",
    "sleep",
    "id",
    "ls",
    "mkdir",
    "touch",
    "rm",
    "chown",
    "chmod",
    "ln",
    "mv",
    "cp",
    "tr",
    "head",
    "tail",
    "wc",
    "readlink",
    "stat",
    "true",
    "false",
    "dpkg",
    "dpkg-deb",
    "dpkg-query",
    "dpkg-trigger",
    "dpkg-divert",
    "tar",
    "diff",
    "ldconfig",
    "start-stop-daemon",
];

/// `kiln-test-base`: a package of the host's own shell, coreutils subset and dpkg with every library they
/// load (as `ldd` reports), laid out for merged /usr, with `/etc/passwd` (root and `builder`, 1000), `/etc/group`
/// and the usual top-level directories. Enough for the sandbox and for `dpkg --configure`.
pub fn base_pkg() -> Pkg {
    let mut pkg = Pkg::new("kiln-test-base", "1.0").field("Essential", "yes");
    let mut libs = BTreeSet::new();
    for prog in BASE_PROGRAMS {
        let host = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(prog))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("the host has no {prog}"));
        let bytes = std::fs::read(&host).unwrap();
        let dir = if host.to_string_lossy().contains("sbin") { "/usr/sbin" } else { "/usr/bin" };
        pkg = pkg.file_mode(&format!("{dir}/{prog}"), &bytes, 0o755);
        let ldd = Command::new("ldd").arg(&host).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                libs.insert(p.to_owned());
            }
        }
    }
    for lib in libs {
        let bytes = std::fs::read(&lib).unwrap();
        let merged = ["/lib64/", "/lib/"]
            .iter()
            .find_map(|top| lib.strip_prefix(top).map(|rest| format!("/usr{top}{rest}")))
            .unwrap_or(lib.clone());
        pkg = pkg.file_mode(&merged, &bytes, 0o755);
    }
    pkg.symlink("/usr/bin/sh", "dash")
        .file(
            "/etc/passwd",
            "root:x:0:0:root:/root:/usr/bin/sh\nbuilder:x:1000:1000:builder:/home/builder:/usr/bin/sh\n",
        )
        .file("/etc/group", "root:x:0:\ntty:x:5:\nbuilder:x:1000:\n")
        .dir("/etc/dpkg/dpkg.cfg.d", 0o755)
        .dir("/root", 0o700)
        .dir("/home/builder", 0o755)
        .dir("/tmp", 0o1777)
        .dir("/proc", 0o555)
        .dir("/sys", 0o555)
        .dir("/dev", 0o755)
        .dir("/run", 0o755)
        .dir("/var/log", 0o755)
}

/// [`base_pkg`] built into `dir`, readable by everyone (tests also unpack it as an unprivileged user).
pub fn base_deb(dir: &Path) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let deb = base_pkg().build(dir, "gzip");
    std::fs::set_permissions(&deb, std::fs::Permissions::from_mode(0o644)).unwrap();
    deb
}
