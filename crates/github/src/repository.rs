//! A GitHub repository named `OWNER/REPO` (what `--github` takes and Actions puts in `github.repository`),
//! checked before anything is sent. Pure.

use std::{fmt, str::FromStr};

use crate::GitHubError;

/// `OWNER/REPO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub owner: String,
    pub name: String,
}

impl FromStr for Repository {
    type Err = GitHubError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || GitHubError::BadRepository(s.to_owned());
        let (owner, name) = s.split_once('/').ok_or_else(bad)?;
        let ok = |part: &str| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !ok(owner) || !ok(name) {
            return Err(bad());
        }
        Ok(Self { owner: owner.to_owned(), name: name.to_owned() })
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_slash_repo_is_taken_and_anything_else_refused() {
        let r: Repository = "example-org/kiln.images_1".parse().unwrap();
        assert_eq!((r.owner.as_str(), r.name.as_str()), ("example-org", "kiln.images_1"));
        assert_eq!(r.to_string(), "example-org/kiln.images_1");
        for bad in ["", "kiln", "/kiln", "org/", "org/kiln/x", "org/..", "org/k i", "org/k?x"] {
            let e = bad.parse::<Repository>().unwrap_err();
            assert!(matches!(&e, GitHubError::BadRepository(s) if s == bad), "{bad}: {e}");
        }
    }
}
