//! The GitHub REST API as kiln uses it, through `octocrab`: create or update a release by its tag, set a
//! commit status. Blocking calls (kiln's commands are synchronous) on a small runtime of its own; the API base
//! URL is a setting, so GitHub Enterprise (`https://HOST/api/v3`) works as github.com does.

use std::time::Duration;

use serde::Serialize;

use crate::{GitHubError, Repository};

/// github.com's API, and what `GITHUB_API_URL` holds in its Actions.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// A release after kiln made it so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    pub id: u64,
    pub tag: String,
    /// The release's page.
    pub url: String,
    /// `true`: made now; `false`: the release with that tag existed and was updated.
    pub created: bool,
}

/// A commit status's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    Pending,
    Success,
    Failure,
}

impl std::fmt::Display for StatusState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Success => "success",
            Self::Failure => "failure",
        })
    }
}

impl From<StatusState> for octocrab::models::StatusState {
    fn from(s: StatusState) -> Self {
        match s {
            StatusState::Pending => Self::Pending,
            StatusState::Success => Self::Success,
            StatusState::Failure => Self::Failure,
        }
    }
}

/// A commit status to set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitStatus {
    pub state: StatusState,
    /// `kiln/FAMILY`: a new status of the same context replaces the last one on the commit.
    pub context: String,
    /// One line, at most 140 characters ([`crate::body::status_description`]).
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
}

/// A repository on a GitHub (github.com or an Enterprise server), with a token.
pub struct GitHub {
    runtime: tokio::runtime::Runtime,
    octocrab: octocrab::Octocrab,
    repository: Repository,
    api: String,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("GitHub").field("api", &self.api).field("repository", &self.repository).finish()
    }
}

impl GitHub {
    /// A client of `repository` at `api_base_url` (`https://api.github.com`, `https://HOST/api/v3`)
    /// authenticated with `token` (`Authorization: Bearer TOKEN`).
    pub fn new(api_base_url: &str, token: &str, repository: Repository) -> Result<Self, GitHubError> {
        let bad =
            |reason: &str| GitHubError::BadApiUrl { url: api_base_url.to_owned(), reason: reason.into() };
        let api = api_base_url.trim().trim_end_matches('/');
        let Some(rest) = api.strip_prefix("https://").or_else(|| api.strip_prefix("http://")) else {
            return Err(bad("expected an http:// or https:// URL"));
        };
        if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#']) {
            return Err(bad("expected http(s)://HOST[:PORT][/PATH]"));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(GitHubError::EmptyToken);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| GitHubError::Setup(e.to_string()))?;
        // The client's request queue is a task of the runtime it is made in.
        let octocrab = {
            let _in_runtime = runtime.enter();
            octocrab::Octocrab::builder()
                .base_uri(api)
                .map_err(|_| bad("not a URI"))?
                .personal_token(token.to_owned())
                .add_header(http::header::ACCEPT, "application/vnd.github+json".into())
                .set_connect_timeout(Some(Duration::from_secs(15)))
                .set_read_timeout(Some(Duration::from_secs(60)))
                .set_write_timeout(Some(Duration::from_secs(60)))
                .build()
                .map_err(|e| GitHubError::Setup(e.to_string()))?
        };
        Ok(Self { runtime, octocrab, repository, api: api.to_owned() })
    }

    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// The API base URL requests go to.
    pub fn api_url(&self) -> &str {
        &self.api
    }

    /// Make the release `tag` say `name` and `body`: created (its tag on `commit`, when given, else on the
    /// default branch) when no release has that tag, else updated in place, so a re-run changes the text
    /// and nothing else.
    pub fn release(
        &self,
        tag: &str,
        name: &str,
        body: &str,
        commit: Option<&str>,
    ) -> Result<Release, GitHubError> {
        let repo = &self.repository;
        let repos = self.octocrab.repos(&repo.owner, &repo.name);
        let releases = repos.releases();
        self.runtime.block_on(async {
            let found = match releases.get_by_tag(tag).await {
                Ok(r) => Some(r),
                Err(e) => {
                    let e = GitHubError::from_octocrab(format!("look up the release {tag} of {repo}"), e);
                    if e.status() != Some(404) {
                        return Err(e);
                    }
                    None
                }
            };
            let (release, created) = match found {
                Some(existing) => {
                    let r =
                        releases.update(existing.id.0).name(name).body(body).send().await.map_err(|e| {
                            GitHubError::from_octocrab(format!("update the release {tag} of {repo}"), e)
                        })?;
                    (r, false)
                }
                None => {
                    let mut create = releases.create(tag).name(name).body(body);
                    if let Some(c) = commit {
                        create = create.target_commitish(c);
                    }
                    let r = create.send().await.map_err(|e| {
                        GitHubError::from_octocrab(format!("create the release {tag} of {repo}"), e)
                    })?;
                    (r, true)
                }
            };
            Ok(Release {
                id: release.id.0,
                tag: release.tag_name,
                url: release.html_url.to_string(),
                created,
            })
        })
    }

    /// Set `status` on the commit `sha`.
    pub fn commit_status(&self, sha: &str, status: &CommitStatus) -> Result<(), GitHubError> {
        let repo = &self.repository;
        let repos = self.octocrab.repos(&repo.owner, &repo.name);
        let mut req = repos
            .create_status(sha.to_owned(), status.state.into())
            .context(status.context.clone())
            .description(status.description.clone());
        if let Some(url) = &status.target_url {
            req = req.target(url.clone());
        }
        self.runtime.block_on(req.send()).map(drop).map_err(|e| {
            GitHubError::from_octocrab(format!("set the status {} on {repo}@{sha}", status.context), e)
        })
    }
}
