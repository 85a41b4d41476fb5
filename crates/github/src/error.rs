//! Why talking to GitHub failed: a bad setting (repository, API URL, token), an answer GitHub gave (its HTTP
//! status, message and error codes, such as 422 `already_exists` or 401 `Bad credentials`), or no answer.

/// An error of the GitHub integration.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("`{0}` is not a GitHub repository: expected OWNER/REPO")]
    BadRepository(String),
    #[error("`{url}` is not a GitHub API URL: {reason}")]
    BadApiUrl { url: String, reason: String },
    #[error("the GitHub token is empty")]
    EmptyToken,
    #[error("cannot set up the GitHub client: {0}")]
    Setup(String),
    #[error(
        "no commit status: the blueprint's commit is not known (the build recorded none and its folder is not in \
         a git repository)"
    )]
    NoCommit,
    /// GitHub answered with an error.
    #[error("{action}: GitHub answered {status}: {message}{}", codes_suffix(.codes))]
    Api {
        /// What kiln was doing (`create the release debian-base-1.0.0 in o/r`).
        action: String,
        /// The HTTP status.
        status: u16,
        /// GitHub's `message`.
        message: String,
        /// The `code` of each of GitHub's `errors` (`already_exists`, `invalid`, `missing_field`, …).
        codes: Vec<String>,
        documentation_url: Option<String>,
    },
    /// No usable answer: the connection, a time-out, or an answer that is not what GitHub sends.
    #[error("{action}: {source}")]
    Request {
        action: String,
        #[source]
        source: Box<octocrab::Error>,
    },
}

fn codes_suffix(codes: &[String]) -> String {
    if codes.is_empty() {
        String::new()
    } else {
        format!(" ({})", codes.join(", "))
    }
}

impl GitHubError {
    /// The HTTP status GitHub answered with, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether GitHub's answer carries this error `code` (`already_exists`).
    pub fn has_code(&self, code: &str) -> bool {
        matches!(self, Self::Api { codes, .. } if codes.iter().any(|c| c == code))
    }

    /// Whether the error is in kiln's settings (repository, URL, token) rather than in talking to GitHub.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::BadRepository(_) | Self::BadApiUrl { .. } | Self::EmptyToken)
    }

    /// `octocrab`'s error for `action`, with GitHub's answer taken apart when there is one.
    pub(crate) fn from_octocrab(action: impl Into<String>, e: octocrab::Error) -> Self {
        let action = action.into();
        match e {
            octocrab::Error::GitHub { source, .. } => {
                let codes = source
                    .errors
                    .iter()
                    .flatten()
                    .filter_map(|e| e.get("code").and_then(serde_json::Value::as_str))
                    .map(str::to_owned)
                    .collect();
                Self::Api {
                    action,
                    status: source.status_code.as_u16(),
                    message: source.message.clone(),
                    codes,
                    documentation_url: source.documentation_url.clone(),
                }
            }
            other => Self::Request { action, source: Box::new(other) },
        }
    }
}
