//! The `Release` file of a suite (the signed content of `InRelease`): what the suite is, until when it
//! is valid, and the size and SHA256 of every index file below `dists/SUITE/`.
//!
//! Also the choice of which Packages index to fetch for a component and architecture, and from which
//! path (`by-hash/SHA256/...` when the suite offers it).

use std::{collections::BTreeMap, fmt, str::FromStr};

use thiserror::Error;

use crate::control::{self, ControlError};

/// A SHA256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(data).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

/// Text that is not a SHA256 digest in hex.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not a SHA256 digest: {0:?}")]
pub struct BadDigest(pub String);

impl FromStr for Sha256 {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Self, BadDigest> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadDigest(s.to_owned()))?;
        Ok(Self(out))
    }
}

/// The expected size and digest of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileEntry {
    pub size: u64,
    pub sha256: Sha256,
}

/// A problem in a Release file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the Release file is empty")]
    Empty,
    #[error("invalid {field} line {value:?}")]
    BadLine { field: &'static str, value: String },
    #[error("invalid date {value:?} in {field}")]
    BadDate { field: &'static str, value: String },
    #[error("the Release file has no SHA256 list")]
    NoSha256,
}

/// A parsed Release file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub origin: Option<String>,
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub components: Vec<String>,
    pub architectures: Vec<String>,
    /// `Acquire-By-Hash: yes`: index files are also at `by-hash/SHA256/<digest>` next to their path.
    pub acquire_by_hash: bool,
    /// `No-Support-for-Architecture-all: Packages`: `Architecture: all` packages are listed in every
    /// architecture's Packages index rather than in a separate `binary-all` one.
    pub all_in_arch_indices: bool,
    /// Seconds since the epoch.
    pub date: Option<i64>,
    /// Seconds since the epoch; after it the file must not be trusted (replay protection).
    pub valid_until: Option<i64>,
    /// Index files by path relative to `dists/SUITE/`.
    pub files: BTreeMap<String, FileEntry>,
}

/// Compression of an index file, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
}

/// Which file to fetch for a Packages index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexTarget {
    /// Path relative to `dists/SUITE/`, e.g. `main/binary-amd64/Packages.xz`.
    pub path: String,
    /// Where to fetch it from, relative to `dists/SUITE/`: the by-hash path when the suite has them.
    pub fetch_path: String,
    pub entry: FileEntry,
    pub compression: Compression,
}

impl Release {
    /// Parses the (already verified) text of a Release file.
    pub fn parse(text: &str) -> Result<Self, ReleaseError> {
        let para = control::paragraphs(text).next().ok_or(ReleaseError::Empty)??;
        let words = |name| -> Vec<String> {
            para.get(name).unwrap_or("").split_whitespace().map(str::to_owned).collect()
        };
        let date = |field: &'static str| -> Result<Option<i64>, ReleaseError> {
            para.get(field)
                .map(|v| parse_rfc2822(v).ok_or_else(|| ReleaseError::BadDate { field, value: v.to_owned() }))
                .transpose()
        };
        let mut files = BTreeMap::new();
        if para.get("SHA256").is_none() {
            return Err(ReleaseError::NoSha256);
        }
        for line in para.lines("SHA256") {
            let bad = || ReleaseError::BadLine { field: "SHA256", value: line.to_owned() };
            let mut parts = line.split_whitespace();
            let (Some(digest), Some(size), Some(path), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let sha256 = digest.parse().map_err(|_| bad())?;
            let size = size.parse().map_err(|_| bad())?;
            files.insert(path.to_owned(), FileEntry { size, sha256 });
        }
        let yes = |name| para.get(name).is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        Ok(Self {
            origin: para.get("Origin").map(str::to_owned),
            suite: para.get("Suite").map(str::to_owned),
            codename: para.get("Codename").map(str::to_owned),
            components: words("Components"),
            architectures: words("Architectures"),
            acquire_by_hash: yes("Acquire-By-Hash"),
            all_in_arch_indices: para
                .get("No-Support-for-Architecture-all")
                .is_some_and(|v| v.split_whitespace().any(|w| w == "Packages")),
            date: date("Date")?,
            valid_until: date("Valid-Until")?,
            files,
        })
    }

    /// Whether this Release describes `suite` (as its suite or its codename).
    pub fn describes(&self, suite: &str) -> bool {
        let suite = suite.trim_end_matches('/');
        self.suite.as_deref() == Some(suite) || self.codename.as_deref() == Some(suite)
    }

    /// Whether the file has expired at `now` (seconds since the epoch).
    pub fn expired_at(&self, now: i64) -> bool {
        self.valid_until.is_some_and(|until| now > until)
    }

    /// The Packages index to fetch for `component` and `arch` (`xz`, then `gz`, then uncompressed), or
    /// `None` when the Release file lists none.
    pub fn packages_index(&self, component: &str, arch: &str) -> Option<IndexTarget> {
        let dir = format!("{component}/binary-{arch}");
        [
            ("Packages.xz", Compression::Xz),
            ("Packages.gz", Compression::Gzip),
            ("Packages", Compression::None),
        ]
        .into_iter()
        .find_map(|(name, compression)| {
            let path = format!("{dir}/{name}");
            let entry = *self.files.get(&path)?;
            let fetch_path = if self.acquire_by_hash {
                format!("{dir}/by-hash/SHA256/{}", entry.sha256)
            } else {
                path.clone()
            };
            Some(IndexTarget { path, fetch_path, entry, compression })
        })
    }
}

/// Parses an RFC 2822 date as Release files write it, `Sat, 11 Jul 2026 10:16:37 UTC` (also with a
/// numeric zone like `+0000`), into seconds since the epoch. Debian writes the zone as `UTC`, which RFC 2822
/// does not list; it is read as `+0000`.
pub fn parse_rfc2822(text: &str) -> Option<i64> {
    let text = text.trim();
    let text = match text.strip_suffix(" UTC") {
        Some(rest) => format!("{rest} +0000"),
        None => text.to_owned(),
    };
    time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc2822)
        .ok()
        .map(|d| d.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "Origin: Test\nSuite: stable\nCodename: rocky\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n\
Valid-Until: Sat, 18 Jul 2026 10:16:37 +0000\nAcquire-By-Hash: yes\nArchitectures: amd64 all\nComponents: main\n\
No-Support-for-Architecture-all: Packages\nMD5Sum:\n 0123 1 main/binary-amd64/Packages\nSHA256:\n \
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 100 main/binary-amd64/Packages\n \
bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb 40 main/binary-amd64/Packages.gz\n";

    #[test]
    fn parses_fields_and_sha256_list() {
        let r = Release::parse(RELEASE).unwrap();
        assert_eq!(r.suite.as_deref(), Some("stable"));
        assert!(r.describes("rocky") && r.describes("stable") && !r.describes("other"));
        assert!(r.acquire_by_hash && r.all_in_arch_indices);
        assert_eq!(r.components, ["main"]);
        assert_eq!(r.files.len(), 2);
        assert_eq!(r.files["main/binary-amd64/Packages"].size, 100);
        // 2026-07-11T10:16:37Z, as `date -u -d 2026-07-11T10:16:37Z +%s` gives it.
        let date = 1_783_764_997;
        assert_eq!(r.date, Some(date));
        assert_eq!(r.valid_until, Some(date + 7 * 86_400));
        assert!(!r.expired_at(date + 7 * 86_400));
        assert!(r.expired_at(date + 7 * 86_400 + 1));
    }

    #[test]
    fn picks_the_best_compression_and_by_hash_path() {
        let r = Release::parse(RELEASE).unwrap();
        let t = r.packages_index("main", "amd64").unwrap();
        assert_eq!(t.path, "main/binary-amd64/Packages.gz");
        assert_eq!(t.compression, Compression::Gzip);
        assert_eq!(t.fetch_path, format!("main/binary-amd64/by-hash/SHA256/{}", "b".repeat(64)));
        assert!(r.packages_index("contrib", "amd64").is_none());
        let plain = Release::parse(&RELEASE.replace("Acquire-By-Hash: yes\n", "")).unwrap();
        assert_eq!(
            plain.packages_index("main", "amd64").unwrap().fetch_path,
            "main/binary-amd64/Packages.gz"
        );
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(matches!(
            Release::parse("Suite: x\nSHA256:\n zz 1 main/p\n"),
            Err(ReleaseError::BadLine { field: "SHA256", .. })
        ));
        assert_eq!(Release::parse("Suite: x\n"), Err(ReleaseError::NoSha256));
        assert!(matches!(
            Release::parse("Suite: x\nDate: yesterday\nSHA256:\n"),
            Err(ReleaseError::BadDate { field: "Date", .. })
        ));
    }

    #[test]
    fn rfc2822_dates() {
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 01:00:00 +0100"), Some(0));
        assert_eq!(parse_rfc2822("29 Feb 2000 12:00:00 UTC"), Some(951_825_600));
        assert_eq!(parse_rfc2822("Sat, 10 Jun 2023 08:52:53 UTC"), Some(1_686_387_173));
        assert_eq!(parse_rfc2822("Sat, 10 Foo 2023 08:52:53 UTC"), None);
        assert_eq!(parse_rfc2822("Sat, 10 Jun 2023"), None);
    }
}
