//! Errors as RFC 9457 problem documents (`application/problem+json`): status, title, detail, and the
//! request field at fault when there is one.

use serde::Serialize;

use crate::{store::StoreError, CatalogError};

/// A problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `about:blank`: the status and title say what kind of problem it is (RFC 9457 §4.2.1).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The request field at fault (`version`, `files[3].digest`, `scopes[1]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<Box<str>>,
    /// Blobs a publish still needs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// For 405: the methods the route takes (the `Allow` header).
    #[serde(skip)]
    pub allow: Option<Box<str>>,
}

impl Problem {
    pub fn new(status: u16, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title,
            status,
            detail: detail.into(),
            field: None,
            missing: Vec::new(),
            allow: None,
        }
    }

    pub fn bad_request(field: &str, detail: impl std::fmt::Display) -> Self {
        Self { field: Some(field.into()), ..Self::new(400, "Bad request", format!("{field}: {detail}")) }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, "Not found", detail)
    }

    pub fn method_not_allowed(path: &str, allowed: &[&str]) -> Self {
        Self {
            allow: Some(allowed.join(", ").into()),
            ..Self::new(405, "Method not allowed", format!("{path} takes {}", allowed.join(", ")))
        }
    }
}

/// The whole chain of an error, `: `-joined.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

impl From<&CatalogError> for Problem {
    fn from(e: &CatalogError) -> Self {
        let detail = chain(e);
        match e {
            CatalogError::Invalid { field, .. } => {
                Self { field: Some(field.as_str().into()), ..Self::new(400, "Bad request", detail) }
            }
            CatalogError::NotFound { .. } => Self::new(404, "Not found", detail),
            CatalogError::Conflict { .. } => Self::new(409, "Conflict", detail),
            CatalogError::Rejected { .. } => Self::new(422, "Rejected", detail),
            CatalogError::MissingBlobs { missing } => {
                Self { missing: missing.clone(), ..Self::new(409, "Blobs missing", detail) }
            }
            CatalogError::Unauthenticated => Self::new(401, "Unauthorized", detail),
            CatalogError::Forbidden { .. } => Self::new(403, "Forbidden", detail),
            CatalogError::Lifecycle(_) => Self::new(409, "Conflict", detail),
            CatalogError::Resolve(_) => Self::new(404, "Not found", detail),
            CatalogError::Store(StoreError::BlobDigest { .. } | StoreError::BlobSize { .. }) => {
                Self { field: Some("body".into()), ..Self::new(400, "Bad request", detail) }
            }
            CatalogError::Store(StoreError::BlobMissing { .. }) => Self::new(404, "Not found", detail),
            CatalogError::Store(StoreError::BadDigest(_)) => {
                Self { field: Some("digest".into()), ..Self::new(400, "Bad request", detail) }
            }
            CatalogError::Notes(_) | CatalogError::Store(_) => Self::new(500, "Internal error", detail),
        }
    }
}
