//! The repository client: which repository to use (host apt sources plus blueprint overrides), its
//! signed `InRelease`, its Packages indices, and downloading the resolved `.deb` files.
//!
//! Trust flows one way: the keyring verifies `InRelease`; the verified Release gives the size and SHA256
//! of each Packages index; a verified index gives the size and SHA256 of each `.deb`. Nothing is parsed
//! or cached before its check.

use std::{
    io::{self, Read},
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use thiserror::Error;

use crate::{
    cache::{Cache, DownloadError},
    packages::{parse_packages, Package, PackagesError},
    release::{Compression, Release, ReleaseError},
    resolve::Universe,
    signature::{verify_clearsigned, Keys, SignatureError},
    sources::{SignedBy, Source},
    transport::{FetchError, Transport},
};

/// The host's Debian archive keyring, relative to the root.
pub const DEFAULT_KEYRING: &str = "usr/share/keyrings/debian-archive-keyring.gpg";

/// Upper bound for an `InRelease` file (Debian's are ~150 KiB).
const MAX_INRELEASE: u64 = 64 * 1024 * 1024;

/// A problem talking to a repository.
#[derive(Debug, Error)]
pub enum RepoError {
    #[error("no apt source for suite {suite} and no mirror given")]
    NoSource { suite: String },
    #[error("no suite given and the host's apt sources name none")]
    NoSuite,
    #[error("{uri}: flat repositories (suite {suite:?}) are not supported")]
    FlatRepository { uri: String, suite: String },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{url}: {source}")]
    Signature { url: String, source: SignatureError },
    #[error("{url}: {source}")]
    Release { url: String, source: ReleaseError },
    #[error("{url}: the signed Release file is for suite {found:?}, not {requested}")]
    WrongSuite { url: String, requested: String, found: String },
    #[error(
        "{url}: the Release file expired (Valid-Until {valid_until}, now {now}, seconds since the epoch)"
    )]
    Expired { url: String, valid_until: i64, now: i64 },
    #[error("suite {suite} has no Packages index for {component}/binary-{arch}")]
    MissingIndex { suite: String, component: String, arch: String },
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error("{url}: cannot decompress: {source}")]
    Decompress { url: String, source: io::Error },
    #[error("{url}: {source}")]
    Packages { url: String, source: PackagesError },
}

/// Blueprint settings that override the host's apt sources (each `None`/empty keeps the host's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub mirror: Option<String>,
    pub suite: Option<String>,
    pub components: Vec<String>,
    pub keyring: Option<PathBuf>,
}

/// One repository to read: mirror URL, suite, components and the keys its Release must be signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSpec {
    pub mirror: String,
    pub suite: String,
    pub components: Vec<String>,
    pub keys: Keys,
}

impl RepoSpec {
    /// Picks the repository from the host's (binary) sources and the overrides.
    ///
    /// The suite is the override, else the first source's. The source used for defaults is the first
    /// one with that suite, else the first whose suite has no `-updates`/`-security`-style suffix, else
    /// the first. The keys are the override keyring, else the source's `Signed-By` (when the mirror is
    /// that source's), else `ROOT/usr/share/keyrings/debian-archive-keyring.gpg`.
    pub fn choose(sources: &[Source], overrides: &Overrides, root: &Path) -> Result<Self, RepoError> {
        let usable: Vec<&Source> = sources.iter().filter(|s| s.is_binary()).collect();
        let suite = match (&overrides.suite, usable.first()) {
            (Some(s), _) => s.clone(),
            (None, Some(first)) => first.suite.clone(),
            (None, None) => return Err(RepoError::NoSuite),
        };
        let source = usable
            .iter()
            .find(|s| s.suite == suite)
            .or_else(|| usable.iter().find(|s| !s.suite.contains('-') && !s.suite.contains('/')))
            .or_else(|| usable.first())
            .copied();
        let mirror = match (&overrides.mirror, source) {
            (Some(m), _) => m.clone(),
            (None, Some(s)) => s.uri.clone(),
            (None, None) => return Err(RepoError::NoSource { suite }),
        };
        if suite.ends_with('/') {
            return Err(RepoError::FlatRepository { uri: mirror, suite });
        }
        let components = if !overrides.components.is_empty() {
            overrides.components.clone()
        } else {
            source
                .map(|s| s.components.clone())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| vec!["main".into()])
        };
        let same_mirror = source.is_some_and(|s| same_url(&s.uri, &mirror));
        let keys = if let Some(k) = &overrides.keyring {
            Keys { files: vec![k.clone()], ..Keys::default() }
        } else {
            match source.filter(|_| same_mirror).and_then(|s| s.signed_by.as_ref()) {
                Some(SignedBy::Inline(block)) => Keys { armored: vec![block.clone()], ..Keys::default() },
                Some(SignedBy::Keys { files, fingerprints }) if !files.is_empty() => {
                    Keys { files: files.clone(), fingerprints: fingerprints.clone(), ..Keys::default() }
                }
                Some(SignedBy::Keys { fingerprints, .. }) => Keys {
                    files: trusted_keyrings(root),
                    fingerprints: fingerprints.clone(),
                    ..Keys::default()
                },
                None => Keys { files: vec![root.join(DEFAULT_KEYRING)], ..Keys::default() },
            }
        };
        Ok(Self { mirror, suite, components, keys })
    }

    fn dists_url(&self, path: &str) -> String {
        format!("{}/dists/{}/{}", self.mirror.trim_end_matches('/'), self.suite, path)
    }
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// apt's trusted keyrings (for a `Signed-By` with fingerprints only): `etc/apt/trusted.gpg` and
/// `etc/apt/trusted.gpg.d/*.{gpg,asc}`, falling back to the Debian archive keyring.
fn trusted_keyrings(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let main = root.join("etc/apt/trusted.gpg");
    if main.is_file() {
        out.push(main);
    }
    if let Ok(rd) = std::fs::read_dir(root.join("etc/apt/trusted.gpg.d")) {
        let mut more: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "gpg" || e == "asc"))
            .collect();
        more.sort();
        out.extend(more);
    }
    if out.is_empty() {
        out.push(root.join(DEFAULT_KEYRING));
    }
    out
}

/// Fetches and verifies repository data, and keeps downloads in a [`Cache`].
#[derive(Debug, Clone)]
pub struct Client {
    transport: Transport,
    cache: Cache,
    parallel: usize,
}

impl Client {
    /// A client with at most 8 downloads at once.
    pub fn new(cache: Cache) -> Self {
        Self { transport: Transport::new(), cache, parallel: 8 }
    }

    #[must_use]
    pub fn with_parallelism(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Fetches `dists/SUITE/InRelease`, verifies its signature and that it is the requested suite and
    /// not expired (against the current time).
    pub fn open(&self, spec: &RepoSpec) -> Result<Repository, RepoError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        self.open_at(spec, now)
    }

    /// [`Client::open`] at a given time (seconds since the epoch), for `Valid-Until`.
    pub fn open_at(&self, spec: &RepoSpec, now: i64) -> Result<Repository, RepoError> {
        let url = spec.dists_url("InRelease");
        let signed = self.transport.get(&url, MAX_INRELEASE)?;
        let verified = verify_clearsigned(&signed, &spec.keys)
            .map_err(|source| RepoError::Signature { url: url.clone(), source })?;
        let text = String::from_utf8_lossy(&verified.content);
        let release =
            Release::parse(&text).map_err(|source| RepoError::Release { url: url.clone(), source })?;
        if !release.describes(&spec.suite) {
            let found = release.codename.clone().or_else(|| release.suite.clone()).unwrap_or_default();
            return Err(RepoError::WrongSuite { url, requested: spec.suite.clone(), found });
        }
        if let Some(valid_until) = release.valid_until.filter(|_| release.expired_at(now)) {
            return Err(RepoError::Expired { url, valid_until, now });
        }
        Ok(Repository {
            client: self.clone(),
            spec: spec.clone(),
            release,
            signer: verified.signer,
            mirror: Arc::from(spec.mirror.trim_end_matches('/')),
        })
    }

    /// Downloads the `.deb` files of `packages` into the cache (verified against their index entries),
    /// returning their cache paths in the same order.
    pub fn download(&self, packages: &[Package]) -> Result<Vec<PathBuf>, RepoError> {
        Ok(self.cache.download_all(&self.transport, packages, self.parallel)?)
    }
}

/// A repository whose `InRelease` has been verified.
#[derive(Debug, Clone)]
pub struct Repository {
    client: Client,
    spec: RepoSpec,
    release: Release,
    signer: String,
    mirror: Arc<str>,
}

impl Repository {
    pub fn spec(&self) -> &RepoSpec {
        &self.spec
    }

    pub fn release(&self) -> &Release {
        &self.release
    }

    /// The fingerprint of the key that signed the Release file.
    pub fn signer(&self) -> &str {
        &self.signer
    }

    /// The packages of one component for one architecture (plus `binary-all` when the suite keeps
    /// `Architecture: all` packages separately).
    pub fn packages(&self, component: &str, arch: &str) -> Result<Vec<Package>, RepoError> {
        let missing = || RepoError::MissingIndex {
            suite: self.spec.suite.clone(),
            component: component.to_owned(),
            arch: arch.to_owned(),
        };
        let mut out = self.index(component, arch)?.ok_or_else(missing)?;
        if arch != "all" && !self.release.all_in_arch_indices {
            if let Some(all) = self.index(component, "all")? {
                out.extend(all);
            }
        }
        Ok(out)
    }

    /// Every configured component's packages for `arch`, ready for resolution.
    pub fn universe(&self, arch: &str) -> Result<Universe, RepoError> {
        let mut all = Vec::new();
        for component in &self.spec.components {
            all.extend(self.packages(component, arch)?);
        }
        Ok(Universe::new(arch, all))
    }

    fn index(&self, component: &str, arch: &str) -> Result<Option<Vec<Package>>, RepoError> {
        let Some(target) = self.release.packages_index(component, arch) else {
            return Ok(None);
        };
        let (cache, transport) = (&self.client.cache, &self.client.transport);
        let url = self.spec.dists_url(&target.fetch_path);
        let path = match cache.fetch(transport, &url, target.entry, &target.path) {
            // A mirror that lags behind may not have the by-hash copy yet; the plain path is checked
            // against the same digest.
            Err(DownloadError::Fetch(e)) if e.is_not_found() && target.fetch_path != target.path => {
                cache.fetch(transport, &self.spec.dists_url(&target.path), target.entry, &target.path)?
            }
            other => other?,
        };
        let text = decompress(&path, target.compression)
            .map_err(|source| RepoError::Decompress { url: url.clone(), source })?;
        let packages =
            parse_packages(&text, &self.mirror).map_err(|source| RepoError::Packages { url, source })?;
        Ok(Some(packages))
    }
}

fn decompress(path: &Path, compression: Compression) -> io::Result<String> {
    let file = io::BufReader::new(fs_err::File::open(path)?);
    let mut reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(file)),
    };
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{parse_deb822, parse_one_line};

    fn host() -> Vec<Source> {
        let mut s = parse_deb822(
            "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: stable stable-updates\nComponents: main contrib\n\
             Signed-By: /k/archive.gpg\n\n\
             Types: deb\nURIs: http://security.invalid/debian-security\nSuites: stable-security\nComponents: main\n",
        )
        .unwrap();
        s.extend(parse_one_line("deb-src http://src.invalid/debian stable main\n").unwrap());
        s
    }

    #[test]
    fn defaults_come_from_the_host_sources() {
        let spec = RepoSpec::choose(&host(), &Overrides::default(), Path::new("/root")).unwrap();
        assert_eq!(spec.mirror, "http://mirror.invalid/debian");
        assert_eq!(spec.suite, "stable");
        assert_eq!(spec.components, ["main", "contrib"]);
        assert_eq!(spec.keys.files, [PathBuf::from("/k/archive.gpg")]);
    }

    #[test]
    fn a_suite_picks_its_own_source() {
        let o = Overrides { suite: Some("stable-security".into()), ..Overrides::default() };
        let spec = RepoSpec::choose(&host(), &o, Path::new("/r")).unwrap();
        assert_eq!(spec.mirror, "http://security.invalid/debian-security");
        assert_eq!(spec.components, ["main"]);
        // No Signed-By there: the archive keyring under the root.
        assert_eq!(spec.keys.files, [PathBuf::from("/r").join(DEFAULT_KEYRING)]);
        // A suite the host doesn't list uses the main archive's mirror.
        let o = Overrides { suite: Some("testing".into()), ..Overrides::default() };
        assert_eq!(
            RepoSpec::choose(&host(), &o, Path::new("/r")).unwrap().mirror,
            "http://mirror.invalid/debian"
        );
    }

    #[test]
    fn overrides_win() {
        let o = Overrides {
            mirror: Some("http://127.0.0.1:9/repo".into()),
            suite: Some("rocky".into()),
            components: vec!["main".into(), "extra".into()],
            keyring: Some("/keys/test.gpg".into()),
        };
        let spec = RepoSpec::choose(&host(), &o, Path::new("/")).unwrap();
        assert_eq!(spec.mirror, "http://127.0.0.1:9/repo");
        assert_eq!(spec.suite, "rocky");
        assert_eq!(spec.components, ["main", "extra"]);
        assert_eq!(spec.keys.files, [PathBuf::from("/keys/test.gpg")]);
        // Another mirror does not inherit the host source's Signed-By.
        let o = Overrides { mirror: Some("http://127.0.0.1:9/repo".into()), ..Overrides::default() };
        let spec = RepoSpec::choose(&host(), &o, Path::new("/r")).unwrap();
        assert_eq!(spec.keys.files, [PathBuf::from("/r").join(DEFAULT_KEYRING)]);
    }

    #[test]
    fn nothing_to_go_on_is_an_error() {
        assert!(matches!(
            RepoSpec::choose(&[], &Overrides::default(), Path::new("/")),
            Err(RepoError::NoSuite)
        ));
        let o = Overrides { suite: Some("x".into()), ..Overrides::default() };
        assert!(matches!(RepoSpec::choose(&[], &o, Path::new("/")), Err(RepoError::NoSource { .. })));
    }
}
