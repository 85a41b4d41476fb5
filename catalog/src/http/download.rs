//! Stored files served the way downloaders expect them, shared by every surface that hands out a blob (the
//! JSON API's files and blobs, `/download/…`, the kernels and initrds of `/boot/…`): `ETag` (the sha256),
//! `Digest` (RFC 3230) and `Repr-Digest` (RFC 9530) of the whole file, `Content-Length`,
//! `Accept-Ranges: bytes`, `Last-Modified` when the caller knows it; one byte range (`Range`, 206 with
//! `Content-Range`; a bad or unsatisfiable one is 416 with `Content-Range: bytes */SIZE`), `If-None-Match`
//! (304) and `If-Range`; HEAD answers the headers alone.
//!
//! What to answer is decided purely from the request headers ([`plan`]); [`serve`] then streams the file in
//! large chunks straight from the blob folder (or, for a store that is no local folder, from a reader on a
//! blocking thread).

use std::{path::PathBuf, sync::Arc};

use axum::{
    body::{Body, Bytes},
    http::{header, HeaderMap, HeaderValue, Response, StatusCode},
};
use base64::Engine as _;

use super::problem::Problem;
use crate::{model::Timestamp, store::digest_hex, Catalog, CatalogError};

/// Bytes per chunk of a streamed file: large, so a big download costs few reads and few frames.
const CHUNK: usize = 1 << 20;

/// A stored file to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    pub content_type: &'static str,
    /// When the content became what it is (a version's publication); none for bare blobs.
    pub last_modified: Option<Timestamp>,
    /// A file outside the blob store holding the content (a boot file extracted from a disk); `None`: the
    /// blob `digest`.
    pub path: Option<PathBuf>,
}

/// What a request gets, decided from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// 200, the whole file.
    Full,
    /// 206, bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 304: the client's copy is current.
    NotModified,
    /// 416: the range is malformed or outside the file.
    Unsatisfiable,
}

/// What a `Range` header asks for, against a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No range to honour: another unit, or several ranges (answered with the whole file, as RFC 9110
    /// allows).
    Ignore,
    One {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Parse a `Range` value (`bytes=0-99`, `bytes=100-`, `bytes=-100`).
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some((unit, set)) = value.split_once('=') else {
        return RangeRequest::Unsatisfiable;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Ignore;
    }
    let ranges: Vec<&str> = set.split(',').map(str::trim).filter(|r| !r.is_empty()).collect();
    let [one] = ranges.as_slice() else {
        return if ranges.is_empty() { RangeRequest::Unsatisfiable } else { RangeRequest::Ignore };
    };
    let Some((first, last)) = one.split_once('-') else {
        return RangeRequest::Unsatisfiable;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // `-N`: the last N bytes.
        (true, _, Some(n)) if n > 0 && size > 0 => {
            RangeRequest::One { start: size.saturating_sub(n), end: size - 1 }
        }
        (true, _, _) => RangeRequest::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() && start < size => {
            RangeRequest::One { start, end: size - 1 }
        }
        (false, Some(start), Some(end)) if start <= end && start < size => {
            RangeRequest::One { start, end: end.min(size - 1) }
        }
        _ => RangeRequest::Unsatisfiable,
    }
}

/// Whether an `If-None-Match` / `If-Range` entity-tag list names `etag` (`*` names any). `weak`: `W/"x"`
/// matches `"x"` (RFC 9110's weak comparison, for `If-None-Match`); otherwise weak tags never match.
pub fn etag_matches(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',').map(str::trim).any(|t| {
        if t == "*" {
            return true;
        }
        match t.strip_prefix("W/") {
            Some(w) => weak && w == etag,
            None => t == etag,
        }
    })
}

/// Decide the answer from the request's conditional and range headers (RFC 9110 §13.2.2 order).
pub fn plan(headers: &HeaderMap, etag: &str, last_modified: Option<&str>, size: u64) -> Plan {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if text(header::IF_NONE_MATCH).is_some_and(|l| etag_matches(l, etag, true)) {
        return Plan::NotModified;
    }
    let Some(range) = text(header::RANGE) else {
        return Plan::Full;
    };
    // If-Range: the range only while the client's copy is this one (a strong tag or the exact date).
    if let Some(validator) = text(header::IF_RANGE) {
        let v = validator.trim();
        let current = if v.starts_with('"') || v.starts_with("W/") {
            etag_matches(v, etag, false) && v != "*"
        } else {
            last_modified == Some(v)
        };
        if !current {
            return Plan::Full;
        }
    }
    match parse_range(range, size) {
        RangeRequest::Ignore => Plan::Full,
        RangeRequest::One { start, end } => Plan::Partial { start, end },
        RangeRequest::Unsatisfiable => Plan::Unsatisfiable,
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form of `Last-Modified` and `Sunset`.
pub fn http_date(t: Timestamp) -> String {
    let dt = time::OffsetDateTime::from_unix_timestamp(t.0).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let day = match dt.weekday() {
        time::Weekday::Monday => "Mon",
        time::Weekday::Tuesday => "Tue",
        time::Weekday::Wednesday => "Wed",
        time::Weekday::Thursday => "Thu",
        time::Weekday::Friday => "Fri",
        time::Weekday::Saturday => "Sat",
        time::Weekday::Sunday => "Sun",
    };
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{day}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        dt.day(),
        MONTHS[usize::from(u8::from(dt.month()) - 1)],
        dt.year(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// The file's identity headers: `ETag`, `Digest`, `Repr-Digest`, `Accept-Ranges`, `Last-Modified`.
fn identity_headers(h: &mut HeaderMap, file: &Served, etag: &str, last_modified: Option<&str>) {
    let b64 = digest_hex(&file.digest)
        .ok()
        .and_then(|hex| hex::decode(hex).ok())
        .map(|raw| base64::engine::general_purpose::STANDARD.encode(raw));
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("etag", etag.to_owned());
    if let Some(b64) = b64 {
        put("digest", format!("sha-256={b64}"));
        put("repr-digest", format!("sha-256=:{b64}:"));
    }
    put("accept-ranges", "bytes".to_owned());
    if let Some(lm) = last_modified {
        put("last-modified", lm.to_owned());
    }
    put("docker-content-digest", file.digest.clone());
}

/// Answer a request for `file` (`head`: headers only), honouring its range and conditional headers.
pub async fn serve(
    catalog: &Arc<Catalog>,
    file: &Served,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response<Body>, Problem> {
    let etag = format!("\"{}\"", file.digest);
    let last_modified = file.last_modified.map(http_date);
    let decided = plan(headers, &etag, last_modified.as_deref(), file.size);
    let (status, range) = match decided {
        Plan::Full => (StatusCode::OK, (0, file.size)),
        Plan::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, (start, end - start + 1)),
        Plan::NotModified => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            identity_headers(r.headers_mut(), file, &etag, last_modified.as_deref());
            return Ok(r);
        }
        Plan::Unsatisfiable => {
            let mut r = super::problem_response(&Problem::new(
                416,
                "Range not satisfiable",
                format!("the file has {} bytes; ask for one range inside it (bytes=START-END)", file.size),
            ));
            identity_headers(r.headers_mut(), file, &etag, last_modified.as_deref());
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", file.size)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let (start, len) = range;
    let body = if head || len == 0 { Body::empty() } else { body(catalog, file, start, len).await? };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(file.content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    identity_headers(h, file, &etag, last_modified.as_deref());
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{}", start + len - 1, file.size)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(r)
}

/// `len` bytes of a blob from `start`, streamed.
async fn body(catalog: &Arc<Catalog>, file: &Served, start: u64, len: u64) -> Result<Body, Problem> {
    stream_blob(catalog, file.path.clone(), &file.digest, start, len).await.map_err(|e| match e {
        StreamError::Missing => Problem::from(&CatalogError::not_found(format!("blob {}", file.digest))),
        StreamError::Failed(message) => Problem::new(500, "Internal error", message),
    })
}

/// Why a blob could not be streamed.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// The blob is not stored.
    Missing,
    /// Reading it failed (what, where).
    Failed(String),
}

/// `len` bytes from `start` of the blob `digest`, streamed in 1 MiB chunks: from the file `path` (an
/// extracted boot file) or the blob store's local file, else read from the store on a blocking thread.
/// What the downloads and the registry's blob GETs serve.
pub(crate) async fn stream_blob(
    catalog: &Arc<Catalog>,
    path: Option<std::path::PathBuf>,
    digest: &str,
    start: u64,
    len: u64,
) -> Result<Body, StreamError> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    if let Some(path) = path.or_else(|| catalog.blobs().local_path(digest)) {
        let mut f = tokio::fs::File::open(&path).await.map_err(|_| StreamError::Missing)?;
        if start > 0 {
            f.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| StreamError::Failed(format!("{}: {e}", path.display())))?;
        }
        return Ok(Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f.take(len), CHUNK)));
    }
    // A store that is no local folder: read on a blocking thread, hand the chunks over.
    let reader = {
        let c = Arc::clone(catalog);
        let d = digest.to_owned();
        tokio::task::spawn_blocking(move || c.blobs().open(&d))
            .await
            .map_err(|e| StreamError::Failed(e.to_string()))?
            .map_err(|e| match e {
                crate::store::StoreError::BlobMissing { .. } => StreamError::Missing,
                e => StreamError::Failed(crate::http::problem::chain(&e)),
            })?
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Seek as _};
        let mut reader = reader;
        if let Err(e) = reader.seek(std::io::SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut reader = reader.take(len);
        loop {
            let mut buf = vec![0u8; CHUNK];
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Ok(Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-99", 1000), One { start: 0, end: 99 });
        assert_eq!(parse_range("bytes=900-", 1000), One { start: 900, end: 999 });
        assert_eq!(parse_range("bytes=-100", 1000), One { start: 900, end: 999 });
        assert_eq!(
            parse_range("bytes=-5000", 1000),
            One { start: 0, end: 999 },
            "a suffix longer than the file"
        );
        assert_eq!(parse_range("bytes=990-5000", 1000), One { start: 990, end: 999 }, "an end past the file");
        assert_eq!(parse_range("BYTES = 1-1", 1000), One { start: 1, end: 1 });
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable, "starts at the end");
        assert_eq!(parse_range("bytes=5-4", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=abc", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=1-x", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=+1-2", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=", 1000), Unsatisfiable);
        assert_eq!(parse_range("0-1", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable, "nothing in an empty file");
        assert_eq!(parse_range("items=0-1", 1000), Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Ignore, "several ranges: the whole file");
    }

    #[test]
    fn conditionals_decide_before_ranges() {
        let etag = "\"sha256:ab\"";
        let lm = "Sun, 22 Nov 2026 08:00:00 GMT";
        let plan = |h: &[(&'static str, &str)]| plan(&headers(h), etag, Some(lm), 1000);
        assert_eq!(plan(&[]), Plan::Full);
        assert_eq!(plan(&[("if-none-match", "\"other\", \"sha256:ab\"")]), Plan::NotModified);
        assert_eq!(plan(&[("if-none-match", "W/\"sha256:ab\"")]), Plan::NotModified, "weak comparison");
        assert_eq!(plan(&[("if-none-match", "*")]), Plan::NotModified);
        assert_eq!(
            plan(&[("if-none-match", "\"other\""), ("range", "bytes=0-9")]),
            Plan::Partial { start: 0, end: 9 }
        );
        assert_eq!(
            plan(&[("range", "bytes=10-19"), ("if-range", etag)]),
            Plan::Partial { start: 10, end: 19 }
        );
        assert_eq!(
            plan(&[("range", "bytes=10-19"), ("if-range", "\"old\"")]),
            Plan::Full,
            "changed: all of it"
        );
        assert_eq!(
            plan(&[("range", "bytes=10-19"), ("if-range", "W/\"sha256:ab\"")]),
            Plan::Full,
            "weak never"
        );
        assert_eq!(plan(&[("range", "bytes=10-19"), ("if-range", lm)]), Plan::Partial { start: 10, end: 19 });
        assert_eq!(
            plan(&[("range", "bytes=10-19"), ("if-range", "Sat, 21 Nov 2026 08:00:00 GMT")]),
            Plan::Full
        );
        assert_eq!(plan(&[("range", "bytes=2000-")]), Plan::Unsatisfiable);
        let no_date = super::plan(&headers(&[("range", "bytes=0-1"), ("if-range", lm)]), etag, None, 1000);
        assert_eq!(no_date, Plan::Full, "a date validator without a Last-Modified is not current");
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(http_date(Timestamp(784_111_777)), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date("2026-11-22T08:00:00Z".parse().unwrap()), "Sun, 22 Nov 2026 08:00:00 GMT");
    }
}
