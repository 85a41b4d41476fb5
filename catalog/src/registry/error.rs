//! The registry's errors as the distribution spec writes them: an HTTP status and a body
//! `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"…","detail":…}]}`, plus the headers some of them
//! carry (`WWW-Authenticate` on 401, `Range` on 416, `Allow` on 405).

use serde::Serialize;

use crate::{store::StoreError, CatalogError};

/// The error codes of the distribution spec (`code` of an error body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
}

impl Code {
    /// The status the spec gives the code (callers override it where the spec says so: 416, 410).
    pub fn status(self) -> u16 {
        match self {
            Self::BlobUnknown | Self::BlobUploadUnknown | Self::ManifestUnknown | Self::NameUnknown => 404,
            Self::Unauthorized => 401,
            Self::Denied => 403,
            Self::Unsupported => 405,
            Self::TooManyRequests => 429,
            Self::BlobUploadInvalid
            | Self::DigestInvalid
            | Self::ManifestBlobUnknown
            | Self::ManifestInvalid
            | Self::NameInvalid
            | Self::SizeInvalid => 400,
        }
    }
}

/// A registry request's failure.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryError {
    pub status: u16,
    pub code: Code,
    pub message: String,
    pub detail: Option<Box<serde_json::Value>>,
    /// Headers the answer carries (`Range`, `Allow`, `WWW-Authenticate`).
    pub headers: Vec<(&'static str, String)>,
}

impl RegistryError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { status: code.status(), code, message: message.into(), detail: None, headers: Vec::new() }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(Box::new(detail));
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// 405 for a method the route does not take, with the ones it does in `Allow`.
    pub fn method(path: &str, allowed: &[&str]) -> Self {
        Self::new(Code::Unsupported, format!("{path} takes {}", allowed.join(", ")))
            .with_header("Allow", allowed.join(", "))
    }

    /// 416 for a chunk that does not continue the upload (`size` bytes received so far).
    pub fn out_of_order(message: impl Into<String>, size: u64) -> Self {
        Self::new(Code::BlobUploadInvalid, message).with_status(416).with_header("Range", upload_range(size))
    }

    /// The body: `{"errors":[…]}`.
    pub fn body(&self) -> serde_json::Value {
        let mut e = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(d) = &self.detail {
            e["detail"] = (**d).clone();
        }
        serde_json::json!({ "errors": [e] })
    }
}

/// The `Range` header of an upload that has `size` bytes: `0-LAST` (`0-0` while empty, as the reference
/// registry writes it).
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

impl From<&CatalogError> for RegistryError {
    fn from(e: &CatalogError) -> Self {
        let message = crate::http::problem::chain(e);
        match e {
            CatalogError::Store(s) => Self::from_store(s, message),
            CatalogError::Unauthenticated => Self::new(Code::Unauthorized, message),
            CatalogError::Forbidden { .. } => Self::new(Code::Denied, message),
            CatalogError::NotFound { .. } => Self::new(Code::NameUnknown, message),
            CatalogError::Invalid { .. } => Self::new(Code::Unsupported, message).with_status(400),
            _ => Self::new(Code::Unsupported, message).with_status(500),
        }
    }
}

impl From<CatalogError> for RegistryError {
    fn from(e: CatalogError) -> Self {
        Self::from(&e)
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        let message = crate::http::problem::chain(&e);
        Self::from_store(&e, message)
    }
}

impl RegistryError {
    fn from_store(e: &StoreError, message: String) -> Self {
        match e {
            StoreError::BlobMissing { .. } => Self::new(Code::BlobUnknown, message),
            StoreError::BlobDigest { .. } | StoreError::BadDigest(_) => {
                Self::new(Code::DigestInvalid, message)
            }
            StoreError::BlobSize { .. } | StoreError::UploadLength { .. } => {
                Self::new(Code::SizeInvalid, message)
            }
            StoreError::UploadUnknown { .. } => Self::new(Code::BlobUploadUnknown, message),
            StoreError::UploadRange { size, .. } | StoreError::UploadBusy { size, .. } => {
                Self::out_of_order(message, *size)
            }
            _ => Self::new(Code::Unsupported, message).with_status(500),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_the_specs() {
        let e = RegistryError::new(Code::ManifestUnknown, "no manifest latest in a/b")
            .with_detail(serde_json::json!({"tag": "latest"}));
        assert_eq!(e.status, 404);
        assert_eq!(
            e.body(),
            serde_json::json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no manifest latest in a/b", "detail": {"tag": "latest"}}]})
        );
        let e = RegistryError::out_of_order("chunk at 10", 5);
        assert_eq!((e.status, e.code), (416, Code::BlobUploadInvalid));
        assert_eq!(e.headers, vec![("Range", "0-4".to_owned())]);
        assert_eq!(upload_range(0), "0-0");
        let e = RegistryError::from(StoreError::UploadUnknown { id: "x".into() });
        assert_eq!((e.status, e.code), (404, Code::BlobUploadUnknown));
    }
}
