//! Debian package versions, `[epoch:]upstream[-revision]`, and their ordering (Debian Policy 5.6.12, the
//! algorithm of dpkg's `verrevcmp`): epochs compare as numbers; upstream and revision alternate
//! non-digit and digit runs, where letters sort before non-letters and `~` sorts before everything,
//! even the end of the string; digit runs compare as numbers.

use std::{cmp::Ordering, fmt, str::FromStr};

use thiserror::Error;

/// A version string that is not a valid Debian version.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid version {version:?}: {reason}")]
pub struct VersionError {
    pub version: String,
    pub reason: &'static str,
}

/// A parsed Debian version. Equality follows the ordering, so `1.0` equals `0:1.0` and `1.0-0`;
/// [`Version::as_str`] gives the text as written.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    epoch: u64,
    /// Byte range of the upstream part in `text`.
    upstream: (usize, usize),
    /// Byte offset of the revision in `text` (after the last `-`), if there is one.
    revision: Option<usize>,
}

impl Version {
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let err = |reason| VersionError { version: text.to_owned(), reason };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(err("empty version"));
        }
        if trimmed.contains(char::is_whitespace) {
            return Err(err("contains whitespace"));
        }
        let (epoch, upstream_start) = match trimmed.find(':') {
            Some(i) => {
                let e = &trimmed[..i];
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("epoch is not a number"));
                }
                (e.parse::<u64>().map_err(|_| err("epoch is too large"))?, i + 1)
            }
            None => (0, 0),
        };
        let rest = &trimmed[upstream_start..];
        let (upstream_len, revision) = match rest.rfind('-') {
            Some(i) => (i, Some(upstream_start + i + 1)),
            None => (rest.len(), None),
        };
        let upstream = &rest[..upstream_len];
        if upstream.is_empty() {
            return Err(err("empty upstream version"));
        }
        if !upstream.bytes().all(|b| b.is_ascii_alphanumeric() || b"+.~-:".contains(&b)) {
            return Err(err("invalid character in upstream version"));
        }
        if let Some(r) = revision {
            let rev = &trimmed[r..];
            if rev.is_empty() {
                return Err(err("empty revision"));
            }
            if !rev.bytes().all(|b| b.is_ascii_alphanumeric() || b"+.~".contains(&b)) {
                return Err(err("invalid character in revision"));
            }
        }
        Ok(Self {
            text: trimmed.to_owned(),
            epoch,
            upstream: (upstream_start, upstream_start + upstream_len),
            revision,
        })
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn upstream(&self) -> &str {
        &self.text[self.upstream.0..self.upstream.1]
    }

    /// The Debian revision; empty when the version has none (which compares equal to `0`).
    pub fn revision(&self) -> &str {
        self.revision.map_or("", |r| &self.text[r..])
    }
}

/// Sort weight of one non-digit character: `~` first, then the end of the part, then letters, then
/// everything else in ASCII order.
fn weight(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: compares an upstream version or a revision.
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit prefix, character by character.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let wa = weight(a.get(i).copied());
            let wb = weight(b.get(j).copied());
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        // Digit run, as a number: skip leading zeros, then the longer run is bigger, else the first
        // differing digit decides.
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let sa = i;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        let sb = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[sa..i], &b[sb..j]);
        let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream().as_bytes(), other.upstream().as_bytes()))
            .then_with(|| verrevcmp(self.revision().as_bytes(), other.revision().as_bytes()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn ordering_follows_policy() {
        use Ordering::*;
        // (a, b, a.cmp(b)); examples from Policy 5.6.12 and dpkg's own test suite.
        let table = [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0-0", Equal),
            ("0:1.0", "1.0", Equal),
            ("1.0", "1.1", Less),
            ("1.2", "1.10", Less),
            ("1.0~rc1", "1.0", Less),
            ("~~", "~~a", Less),
            ("~~a", "~", Less),
            ("1.0~", "1.0", Less),
            ("1.0~beta", "1.0~rc", Less),
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0+", Less),
            ("1.0+", "1.0.", Less),
            ("1:0.1", "2.0", Greater),
            ("1.0-1", "1.0-2", Less),
            ("1.0-1", "1.0-1~bpo1", Greater),
            ("1.0-10", "1.0-9", Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
            ("1.0-1.1", "1.0-1", Greater),
            ("1.001", "1.1", Equal),
            ("1.0-a", "1.0-1", Greater),
            ("7.4.052-1", "7.4-1", Greater),
            ("1:2.30.2-1", "2:1.0", Less),
            ("3.0.2-0ubuntu1", "3.0.9-1", Less),
            ("a", "b", Less),
            ("1-2-3", "1-2-4", Less),
        ];
        for (a, b, want) in table {
            assert_eq!(v(a).cmp(&v(b)), want, "{a} vs {b}");
            assert_eq!(v(b).cmp(&v(a)), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn parts() {
        let x = v("2:1.2-3-4");
        assert_eq!((x.epoch(), x.upstream(), x.revision()), (2, "1.2-3", "4"));
        let y = v("1.0");
        assert_eq!((y.epoch(), y.upstream(), y.revision()), (0, "1.0", ""));
        assert_eq!(y.to_string(), "1.0");
    }

    #[test]
    fn invalid_versions_are_rejected() {
        for bad in ["", " ", "a:1", ":1", "1.0-", "1.0 2", "1_0", "1.0-a_b", "1:"] {
            assert!(Version::parse(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn sorting_a_list() {
        let mut list: Vec<Version> =
            ["1.0", "1.0~rc1", "1:0.5", "1.0-1", "0.9", "1.0+b1"].iter().map(|s| v(s)).collect();
        list.sort();
        let got: Vec<&str> = list.iter().map(Version::as_str).collect();
        assert_eq!(got, ["0.9", "1.0~rc1", "1.0", "1.0-1", "1.0+b1", "1:0.5"]);
    }
}
