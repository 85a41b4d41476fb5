//! What can go wrong in the catalog, typed so the HTTP API maps each to a status and a problem document
//! naming the field, and the CLI prints the whole chain.

use crate::store::StoreError;

/// A catalog operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A request field is wrong (`field` as the API names it).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// The request contradicts what the catalog holds (another image under an existing version).
    #[error("{message}")]
    Conflict { message: String },
    /// The bundle is not acceptable: not signed by a trusted key, not certified, not as signed.
    #[error("rejected: {message}")]
    Rejected {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Blobs the publish names are not uploaded.
    #[error("{} blob(s) not uploaded: {}", missing.len(), missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "))]
    MissingBlobs { missing: Vec<String> },
    #[error("a token is required (Authorization: Bearer …)")]
    Unauthenticated,
    #[error("this token lacks the `{scope}` scope")]
    Forbidden { scope: crate::model::Scope },
    #[error(transparent)]
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
    #[error(transparent)]
    Resolve(#[from] crate::resolve::ResolveError),
    #[error("rendering release notes")]
    Notes(#[source] crate::notes::NotesError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CatalogError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    pub fn rejected(message: impl Into<String>) -> Self {
        Self::Rejected { message: message.into(), source: None }
    }
}
