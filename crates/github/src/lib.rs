//! kiln's GitHub integration: after a version is published, the GitHub release `FAMILY-VERSION` (release
//! notes, the artifacts' digests and sizes, the catalog link) and a commit status `kiln/FAMILY` on the
//! blueprint's commit; when a pipeline stage fails, a failure status naming the stage.
//!
//! [`body`] builds every text from the catalog's answers (pure); [`GitHub`] sends it through `octocrab`;
//! [`commit`] finds the blueprint's commit.

pub mod body;
mod client;
pub mod commit;
mod error;
mod repository;

use serde::Serialize;

pub use body::PublishedVersion;
pub use client::{CommitStatus, GitHub, Release, StatusState, DEFAULT_API_URL};
pub use error::GitHubError;
pub use repository::Repository;

/// A status kiln set, and on which commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetStatus {
    pub sha: String,
    #[serde(flatten)]
    pub status: CommitStatus,
}

/// What kiln told GitHub, and what failed. Each part is tried even when another failed.
#[derive(Debug, Default, Serialize)]
pub struct Announcement {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<Release>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<SetStatus>,
    #[serde(skip)]
    pub errors: Vec<GitHubError>,
}

impl Announcement {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn set_status(&mut self, gh: &GitHub, commit: Option<&str>, status: CommitStatus) {
        let Some(sha) = commit else {
            self.errors.push(GitHubError::NoCommit);
            return;
        };
        match gh.commit_status(sha, &status) {
            Ok(()) => self.status = Some(SetStatus { sha: sha.to_owned(), status }),
            Err(e) => self.errors.push(e),
        }
    }
}

/// After a successful publish of `version`: the release `FAMILY-VERSION` with [`body::release_body`] (its tag
/// on `commit` when it is new), and the status `success` on `commit` linking to `catalog_url`.
pub fn announce_published(
    gh: &GitHub,
    version: &PublishedVersion,
    notes_markdown: &str,
    catalog_url: Option<&str>,
    commit: Option<&str>,
) -> Announcement {
    let mut a = Announcement::default();
    let text = body::release_body(version, notes_markdown, catalog_url);
    match gh.release(&version.tag(), &version.title(), &text, commit) {
        Ok(r) => a.release = Some(r),
        Err(e) => a.errors.push(e),
    }
    let status = CommitStatus {
        state: StatusState::Success,
        context: body::status_context(&version.family),
        description: body::published_description(version),
        target_url: catalog_url.map(str::to_owned),
    };
    a.set_status(gh, commit, status);
    a
}

/// A stage of the pipeline of `family` failed: the status `failure` on `commit`, saying which and why.
pub fn announce_failed(
    gh: &GitHub,
    family: &str,
    commit: Option<&str>,
    stage: &str,
    message: &str,
) -> Announcement {
    let mut a = Announcement::default();
    let status = CommitStatus {
        state: StatusState::Failure,
        context: body::status_context(family),
        description: body::failed_description(stage, message),
        target_url: None,
    };
    a.set_status(gh, commit, status);
    a
}
