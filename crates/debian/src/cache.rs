//! The download cache: files keyed by their SHA256 (`ROOT/sha256/ab/abcdef...`), shared by all builds.
//!
//! A file only ever enters the cache after its size and digest matched what a verified index says: it
//! is written to a temporary file in the same directory and renamed into place after the check, so a
//! failed or tampered download leaves nothing behind. Every cache hit is hashed again; an entry that no
//! longer matches is removed and fetched anew.

use std::{
    ffi::OsString,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
};

use sha2::Digest;
use thiserror::Error;

use crate::{
    packages::Package,
    release::{FileEntry, Sha256},
    transport::{FetchError, Transport},
};

/// A download that failed or did not match its index.
#[derive(Debug, Error)]
pub enum DownloadError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    DigestMismatch(Box<Mismatch>),
    #[error("{what}: {url} is larger than the {expected_size} bytes the index gives")]
    TooLarge { what: String, url: String, expected_size: u64 },
    #[error("download cache: {0}")]
    Io(#[from] io::Error),
}

/// A downloaded file that is not what its index says.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{what}: {url} does not match the index: expected SHA256 {} ({} bytes), got {} ({} bytes)",
    expected.sha256, expected.size, actual.sha256, actual.size
)]
pub struct Mismatch {
    /// What was downloaded, e.g. `apt 2.6.1 amd64` or `main/binary-amd64/Packages.xz`.
    pub what: String,
    pub url: String,
    pub expected: FileEntry,
    pub actual: FileEntry,
}

/// A content-addressed file cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$XDG_CACHE_HOME/kiln`, else `$HOME/.cache/kiln`, from an environment lookup (normally
    /// `std::env::var_os`).
    pub fn default_root(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
        if let Some(xdg) = var("XDG_CACHE_HOME").filter(|v| Path::new(v).is_absolute()) {
            return Some(PathBuf::from(xdg).join("kiln"));
        }
        var("HOME").filter(|v| !v.is_empty()).map(|home| PathBuf::from(home).join(".cache/kiln"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a file with this digest lives.
    pub fn path_for(&self, digest: &Sha256) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }

    /// The cached file for `expected`, after checking it again; a mismatching entry is removed.
    pub fn lookup(&self, expected: FileEntry) -> Result<Option<PathBuf>, io::Error> {
        let path = self.path_for(&expected.sha256);
        let file = match fs_err::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let (size, digest) = hash_copy(&mut file.take(expected.size + 1), &mut io::sink())?;
        if size == expected.size && digest == expected.sha256 {
            return Ok(Some(path));
        }
        match fs_err::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(None),
        }
    }

    /// The file at `url`, from the cache or downloaded into it; it always matches `expected`.
    pub fn fetch(
        &self,
        transport: &Transport,
        url: &str,
        expected: FileEntry,
        what: &str,
    ) -> Result<PathBuf, DownloadError> {
        if let Some(path) = self.lookup(expected)? {
            return Ok(path);
        }
        let dest = self.path_for(&expected.sha256);
        let dir = dest.parent().unwrap_or(&self.root);
        fs_err::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new().prefix(".partial-").tempfile_in(dir)?;
        let mut body = transport.open(url)?.take(expected.size + 1);
        let (size, actual) = hash_copy(&mut body, tmp.as_file_mut())
            .map_err(|source| FetchError::Io { url: url.to_owned(), source })?;
        if size > expected.size {
            return Err(DownloadError::TooLarge {
                what: what.to_owned(),
                url: url.to_owned(),
                expected_size: expected.size,
            });
        }
        if size != expected.size || actual != expected.sha256 {
            return Err(DownloadError::DigestMismatch(Box::new(Mismatch {
                what: what.to_owned(),
                url: url.to_owned(),
                expected,
                actual: FileEntry { size, sha256: actual },
            })));
        }
        tmp.as_file_mut().flush()?;
        make_readable(tmp.path())?;
        tmp.persist(&dest).map_err(|e| e.error)?;
        Ok(dest)
    }

    /// Downloads the `.deb` files of `packages` into the cache, at most `parallel` at once, and
    /// returns their cache paths in the same order. The first failure (in list order) is returned,
    /// and no download starts after a failure.
    pub fn download_all(
        &self,
        transport: &Transport,
        packages: &[Package],
        parallel: usize,
    ) -> Result<Vec<PathBuf>, DownloadError> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<PathBuf, DownloadError>>>> =
            Mutex::new(packages.iter().map(|_| None).collect());
        let workers = parallel.clamp(1, packages.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = packages.get(i) else { break };
                    let entry = FileEntry { size: p.size, sha256: p.sha256 };
                    let result =
                        self.fetch(transport, &p.url(), entry, &format!("{} {}", p.id(), p.architecture));
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut r) = results.lock() {
                        r[i] = Some(result);
                    }
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|poison| poison.into_inner());
        let mut paths = Vec::with_capacity(packages.len());
        let mut first_error = None;
        for r in results {
            match r {
                Some(Ok(path)) => paths.push(path),
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                None => {}
            }
        }
        match first_error {
            Some(e) => Err(e),
            None if paths.len() == packages.len() => Ok(paths),
            None => Err(DownloadError::Io(io::Error::other("a download worker stopped unexpectedly"))),
        }
    }
}

/// Copies `from` into `to`, returning the byte count and SHA256 of what was copied.
fn hash_copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<(u64, Sha256)> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        size += n as u64;
    }
    Ok((size, Sha256(hasher.finalize().into())))
}

/// Cache entries are shared by all builds: readable by everyone, like apt's archive cache.
#[cfg(unix)]
fn make_readable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn make_readable(_: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_root_prefers_xdg_cache_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(v))
        };
        assert_eq!(
            Cache::default_root(env(&[("XDG_CACHE_HOME", "/c"), ("HOME", "/h")])),
            Some(PathBuf::from("/c/kiln"))
        );
        // A relative XDG_CACHE_HOME is invalid per the XDG spec and ignored.
        assert_eq!(
            Cache::default_root(env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/kiln"))
        );
        assert_eq!(Cache::default_root(env(&[])), None);
    }

    #[test]
    fn entries_are_keyed_by_digest_and_rechecked() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs_err::write(&src, b"payload").unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let entry = FileEntry { size: 7, sha256: Sha256::of(b"payload") };
        let url = format!("file://{}", src.display());
        let t = Transport::new();
        let path = cache.fetch(&t, &url, entry, "payload").unwrap();
        let hex = entry.sha256.to_hex();
        assert_eq!(path, dir.path().join("cache/sha256").join(&hex[..2]).join(&hex));
        assert_eq!(fs_err::read(&path).unwrap(), b"payload");

        // A corrupted entry is not returned: it is dropped and fetched again.
        fs_err::write(&path, b"PAYLOAD").unwrap();
        assert_eq!(cache.lookup(entry).unwrap(), None);
        assert!(!path.exists());
        let again = cache.fetch(&t, &url, entry, "payload").unwrap();
        assert_eq!(fs_err::read(again).unwrap(), b"payload");
    }

    #[test]
    fn mismatching_downloads_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs_err::write(&src, b"payload").unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let url = format!("file://{}", src.display());
        let t = Transport::new();
        let wrong = FileEntry { size: 7, sha256: Sha256::of(b"other!!") };
        match cache.fetch(&t, &url, wrong, "thing 1.0") {
            Err(DownloadError::DigestMismatch(m)) => {
                assert_eq!(m.what, "thing 1.0");
                assert_eq!(m.expected, wrong);
                assert_eq!(m.actual, FileEntry { size: 7, sha256: Sha256::of(b"payload") });
            }
            other => panic!("{other:?}"),
        }
        let short = FileEntry { size: 3, sha256: Sha256::of(b"pay") };
        assert!(matches!(
            cache.fetch(&t, &url, short, "x"),
            Err(DownloadError::TooLarge { expected_size: 3, .. })
        ));
        let leftovers: Vec<_> = walk(&dir.path().join("cache"));
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    out.extend(walk(&p));
                } else {
                    out.push(p);
                }
            }
        }
        out
    }
}
