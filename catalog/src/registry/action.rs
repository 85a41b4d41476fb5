//! Every `/v2/…` request parsed into a typed [`Action`] before anything runs: the route, the repository
//! name (the distribution spec's grammar, `/`-separated components), the reference (tag or digest), the
//! digests (sha256 and sha512), the query parameters (`n`/`last`, `digest`, `mount`/`from`,
//! `artifactType`, `tag`) and the headers that shape a request (`Content-Range`, `Range`, `Content-Type`,
//! `Kiln-Allow-Retired`). Pure: method, path, query and those headers in; an action or a
//! [`RegistryError`] out.

use super::error::{Code, RegistryError};
use crate::store::parse_digest;

/// Every route [`parse`] takes: (method, path template as `catalog/openapi.json` writes it). `{name}` is
/// a repository name, which may hold `/`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v2/"),
    ("GET", "/v2/token"),
    ("GET", "/v2/{name}/manifests/{reference}"),
    ("HEAD", "/v2/{name}/manifests/{reference}"),
    ("PUT", "/v2/{name}/manifests/{reference}"),
    ("DELETE", "/v2/{name}/manifests/{reference}"),
    ("GET", "/v2/{name}/blobs/{digest}"),
    ("HEAD", "/v2/{name}/blobs/{digest}"),
    ("DELETE", "/v2/{name}/blobs/{digest}"),
    ("POST", "/v2/{name}/blobs/uploads/"),
    ("GET", "/v2/{name}/blobs/uploads/{id}"),
    ("PATCH", "/v2/{name}/blobs/uploads/{id}"),
    ("PUT", "/v2/{name}/blobs/uploads/{id}"),
    ("DELETE", "/v2/{name}/blobs/uploads/{id}"),
    ("GET", "/v2/{name}/tags/list"),
    ("GET", "/v2/{name}/referrers/{digest}"),
];

/// The header asking for a retired (end-of-life or revoked) version by digest anyway.
pub const ALLOW_RETIRED_HEADER: &str = "Kiln-Allow-Retired";
/// The query parameter doing the same.
pub const ALLOW_RETIRED_QUERY: &str = "allow-retired";

/// Longest repository name taken (clients limit `host/name` to 255 characters).
const MAX_NAME: usize = 255;
/// Most tags one page of `tags/list` returns.
pub const MAX_PAGE: usize = 1000;

/// A manifest reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(String),
}

impl Reference {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Tag(t) | Self::Digest(t) => t,
        }
    }
}

/// A `Range` request header of a blob GET (one range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=FIRST-` or `bytes=FIRST-LAST`.
    From { first: u64, last: Option<u64> },
    /// `bytes=-N`: the last N bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The inclusive byte span of a blob of `total` bytes; `None` when it cannot be satisfied.
    pub fn span(self, total: u64) -> Option<(u64, u64)> {
        match self {
            Self::From { first, last } if first < total => {
                Some((first, last.map_or(total - 1, |l| l.min(total - 1))))
            }
            Self::Suffix(n) if n > 0 && total > 0 => Some((total - n.min(total), total - 1)),
            _ => None,
        }
    }
}

/// How a `POST …/blobs/uploads/` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadStart {
    /// A session for chunks (or one `PUT`).
    Session,
    /// `?digest=`: the body is the whole blob.
    Monolithic { digest: String },
    /// `?mount=DIGEST&from=REPO`: the blob from another repository (or, without `from`, any that has it);
    /// a session when it cannot be mounted.
    Mount { digest: String, from: Option<String> },
}

/// A chunk's place in an upload: `Content-Range` (`FIRST-LAST`) and `Content-Length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Chunk {
    pub start: Option<u64>,
    pub length: Option<u64>,
}

/// What a request needs to be let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The base check and the token endpoint handle credentials themselves.
    Own,
    Pull,
    Push,
}

/// A parsed registry request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET /v2/`: the API is there and the credentials (if any) are good.
    Base,
    /// `GET /v2/token`: the token flow.
    Token {
        scopes: Vec<String>,
    },
    GetManifest {
        name: String,
        reference: Reference,
        head: bool,
        allow_retired: bool,
    },
    PutManifest {
        name: String,
        reference: Reference,
        media_type: Option<String>,
        tags: Vec<String>,
    },
    DeleteManifest {
        name: String,
        reference: Reference,
    },
    GetBlob {
        name: String,
        digest: String,
        head: bool,
        range: Option<ByteRange>,
    },
    DeleteBlob {
        name: String,
        digest: String,
    },
    StartUpload {
        name: String,
        start: UploadStart,
        length: Option<u64>,
    },
    UploadStatus {
        name: String,
        id: String,
    },
    PatchUpload {
        name: String,
        id: String,
        chunk: Chunk,
    },
    /// The final `PUT` (with or without a last chunk).
    FinishUpload {
        name: String,
        id: String,
        digest: String,
        chunk: Chunk,
    },
    CancelUpload {
        name: String,
        id: String,
    },
    ListTags {
        name: String,
        n: Option<usize>,
        last: Option<String>,
    },
    Referrers {
        name: String,
        digest: String,
        artifact_type: Option<String>,
    },
}

impl Action {
    pub fn access(&self) -> Access {
        match self {
            Self::Base | Self::Token { .. } => Access::Own,
            Self::GetManifest { .. }
            | Self::GetBlob { .. }
            | Self::ListTags { .. }
            | Self::Referrers { .. } => Access::Pull,
            _ => Access::Push,
        }
    }

    /// The repository the request is about.
    pub fn repo(&self) -> Option<&str> {
        match self {
            Self::Base | Self::Token { .. } => None,
            Self::GetManifest { name, .. }
            | Self::PutManifest { name, .. }
            | Self::DeleteManifest { name, .. }
            | Self::GetBlob { name, .. }
            | Self::DeleteBlob { name, .. }
            | Self::StartUpload { name, .. }
            | Self::UploadStatus { name, .. }
            | Self::PatchUpload { name, .. }
            | Self::FinishUpload { name, .. }
            | Self::CancelUpload { name, .. }
            | Self::ListTags { name, .. }
            | Self::Referrers { name, .. } => Some(name),
        }
    }
}

/// The request headers the registry reads (values as sent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers<'a> {
    pub content_type: Option<&'a str>,
    pub content_length: Option<&'a str>,
    pub content_range: Option<&'a str>,
    pub range: Option<&'a str>,
    pub allow_retired: Option<&'a str>,
}

/// Whether `s` is a repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub fn is_repo_name(s: &str) -> bool {
    s.len() <= MAX_NAME && !s.is_empty() && s.split('/').all(is_component)
}

fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__` or a run of `-`, between alphanumerics.
        let sep_start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == sep_start || !b.get(i).copied().is_some_and(alnum) {
            return false;
        }
    }
    true
}

/// Whether `s` is a tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// The tag a kiln version is pulled by: its semantic version, with `+` (not allowed in tags) as `_`.
pub fn version_tag(version: &semver::Version) -> String {
    version.to_string().replace('+', "_")
}

fn digest(s: &str) -> Result<String, RegistryError> {
    parse_digest(s).map(|_| s.to_owned()).map_err(|_| {
        RegistryError::new(
            Code::DigestInvalid,
            format!("`{s}` is not a digest this registry takes (sha256:<64 hex> or sha512:<128 hex>)"),
        )
        .with_detail(serde_json::json!({ "digest": s }))
    })
}

fn reference(s: &str) -> Result<Reference, RegistryError> {
    if s.contains(':') {
        digest(s).map(Reference::Digest)
    } else if is_tag(s) {
        Ok(Reference::Tag(s.to_owned()))
    } else {
        Err(RegistryError::new(Code::ManifestInvalid, format!("`{s}` is neither a tag nor a digest"))
            .with_status(400)
            .with_detail(serde_json::json!({ "reference": s })))
    }
}

fn name(s: &str) -> Result<String, RegistryError> {
    if is_repo_name(s) {
        Ok(s.to_owned())
    } else {
        Err(RegistryError::new(
            Code::NameInvalid,
            format!("`{s}` is not a repository name (lowercase letters and digits, with `.`, `_`, `__`, `-` between them, components separated by `/`)"),
        )
        .with_detail(serde_json::json!({ "name": s })))
    }
}

/// An upload session id as the registry hands them out (lowercase hex); anything else is unknown.
fn upload_id(s: &str) -> Result<String, RegistryError> {
    if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(s.to_owned())
    } else {
        Err(RegistryError::new(Code::BlobUploadUnknown, format!("no upload {s}")))
    }
}

/// `Content-Range` of an upload chunk: `FIRST-LAST` (also `bytes FIRST-LAST/TOTAL` and `bytes=FIRST-LAST`);
/// (first, length).
pub fn content_range(s: &str) -> Result<(u64, u64), RegistryError> {
    let bad = || {
        RegistryError::new(Code::BlobUploadInvalid, format!("Content-Range `{s}` is not FIRST-LAST"))
            .with_status(416)
    };
    let t = s.trim();
    let t = t.strip_prefix("bytes=").or_else(|| t.strip_prefix("bytes ")).unwrap_or(t);
    let t = t.split_once('/').map_or(t, |(r, _)| r);
    let (a, b) = t.split_once('-').ok_or_else(bad)?;
    let first: u64 = a.trim().parse().map_err(|_| bad())?;
    let last: u64 = b.trim().parse().map_err(|_| bad())?;
    if last < first {
        return Err(bad());
    }
    Ok((first, last - first + 1))
}

/// `Range` of a blob GET: one range in bytes.
pub fn byte_range(s: &str) -> Result<ByteRange, RegistryError> {
    let bad = || {
        RegistryError::new(
            Code::BlobUploadInvalid,
            format!("Range `{s}` is not one byte range (bytes=FIRST-LAST)"),
        )
        .with_status(416)
    };
    let spec = s.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return b.parse().map(ByteRange::Suffix).map_err(|_| bad());
    }
    let first: u64 = a.parse().map_err(|_| bad())?;
    let last = if b.is_empty() { None } else { Some(b.parse::<u64>().map_err(|_| bad())?) };
    if last.is_some_and(|l| l < first) {
        return Err(bad());
    }
    Ok(ByteRange::From { first, last })
}

/// The query string as (key, value) pairs, decoded.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn one<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn truthy(v: Option<&str>) -> bool {
    v.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

fn length(h: &Headers<'_>) -> Result<Option<u64>, RegistryError> {
    h.content_length
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                RegistryError::new(Code::SizeInvalid, format!("Content-Length `{v}` is not a number"))
            })
        })
        .transpose()
}

fn chunk(h: &Headers<'_>) -> Result<Chunk, RegistryError> {
    let length = length(h)?;
    let Some(range) = h.content_range else {
        return Ok(Chunk { start: None, length });
    };
    let (start, span) = content_range(range)?;
    if length.is_some_and(|l| l != span) {
        return Err(RegistryError::new(
            Code::BlobUploadInvalid,
            format!("Content-Range {range} covers {span} bytes, Content-Length says {}", length.unwrap_or(0)),
        )
        .with_status(416));
    }
    Ok(Chunk { start: Some(start), length: Some(span) })
}

/// Split `/v2/NAME/ROUTE…` into the name and the route's segments: the route is found from the end, so a
/// name may hold `/` (even `blobs` or `manifests` components).
fn split_route(rest: &str) -> Option<(&str, Vec<&str>)> {
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let cut = |k: usize| -> Option<(&str, Vec<&str>)> {
        let name_len: usize = segs[..n - k].iter().map(|s| s.len() + 1).sum::<usize>().checked_sub(1)?;
        Some((&rest[..name_len], segs[n - k..].to_vec()))
    };
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        return cut(3);
    }
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return cut(2);
    }
    if n >= 3 && (segs[n - 2] == "manifests" || segs[n - 2] == "blobs" || segs[n - 2] == "referrers") {
        return cut(2);
    }
    None
}

fn expect(method: &str, allowed: &[&str], path: &str) -> Result<(), RegistryError> {
    if allowed.contains(&method) {
        Ok(())
    } else {
        Err(RegistryError::method(path, allowed))
    }
}

/// Parse one request under `/v2`. `path` is the URL path, `query` the part after `?`.
pub fn parse(
    method: &str,
    path: &str,
    query: Option<&str>,
    h: &Headers<'_>,
) -> Result<Action, RegistryError> {
    let q = query_pairs(query);
    let m = method;
    if path == "/v2" || path == "/v2/" {
        expect(m, &["GET"], path)?;
        return Ok(Action::Base);
    }
    if path == "/v2/token" {
        expect(m, &["GET"], path)?;
        let scopes = q
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' '))
            .map(str::to_owned)
            .collect();
        return Ok(Action::Token { scopes });
    }
    let not_found = || RegistryError::new(Code::NameUnknown, format!("no route {path}")).with_status(404);
    let rest = path.strip_prefix("/v2/").ok_or_else(not_found)?;
    let (raw_name, route) = split_route(rest).ok_or_else(not_found)?;
    let name = name(raw_name)?;
    let action = match route.as_slice() {
        ["manifests", r] => {
            expect(m, &["GET", "HEAD", "PUT", "DELETE"], path)?;
            let reference = reference(r)?;
            match m {
                "GET" | "HEAD" => Action::GetManifest {
                    name,
                    reference,
                    head: m == "HEAD",
                    allow_retired: truthy(h.allow_retired) || truthy(one(&q, ALLOW_RETIRED_QUERY)),
                },
                "PUT" => {
                    let tags: Vec<String> =
                        q.iter().filter(|(k, _)| k == "tag").map(|(_, v)| v.clone()).collect();
                    if let Some(bad) = tags.iter().find(|t| !is_tag(t)) {
                        return Err(RegistryError::new(
                            Code::ManifestInvalid,
                            format!("`{bad}` is not a tag"),
                        )
                        .with_detail(serde_json::json!({ "tag": bad })));
                    }
                    let media_type =
                        h.content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_owned());
                    Action::PutManifest {
                        name,
                        reference,
                        media_type: media_type.filter(|c| !c.is_empty()),
                        tags,
                    }
                }
                _ => Action::DeleteManifest { name, reference },
            }
        }
        ["blobs", d] => {
            expect(m, &["GET", "HEAD", "DELETE"], path)?;
            let digest = digest(d)?;
            match m {
                "DELETE" => Action::DeleteBlob { name, digest },
                _ => Action::GetBlob {
                    name,
                    digest,
                    head: m == "HEAD",
                    range: h.range.map(byte_range).transpose()?,
                },
            }
        }
        ["blobs", "uploads", ""] => {
            expect(m, &["POST"], path)?;
            let start = match (one(&q, "digest"), one(&q, "mount")) {
                (_, Some(mount)) => {
                    let from = one(&q, "from").map(self::name).transpose()?;
                    UploadStart::Mount { digest: digest(mount)?, from }
                }
                (Some(d), None) => UploadStart::Monolithic { digest: digest(d)? },
                (None, None) => UploadStart::Session,
            };
            Action::StartUpload { name, start, length: length(h)? }
        }
        ["blobs", "uploads", id] => {
            expect(m, &["GET", "PATCH", "PUT", "DELETE"], path)?;
            let id = upload_id(id)?;
            match m {
                "GET" => Action::UploadStatus { name, id },
                "PATCH" => Action::PatchUpload { name, id, chunk: chunk(h)? },
                "PUT" => {
                    let d = one(&q, "digest").ok_or_else(|| {
                        RegistryError::new(Code::DigestInvalid, "the final PUT of an upload needs ?digest=")
                    })?;
                    Action::FinishUpload { name, id, digest: digest(d)?, chunk: chunk(h)? }
                }
                _ => Action::CancelUpload { name, id },
            }
        }
        ["tags", "list"] => {
            expect(m, &["GET"], path)?;
            let n = one(&q, "n")
                .map(|v| {
                    v.parse::<usize>().map_err(|_| {
                        RegistryError::new(Code::Unsupported, format!("n=`{v}` is not a whole number"))
                            .with_status(400)
                    })
                })
                .transpose()?;
            Action::ListTags { name, n: n.map(|n| n.min(MAX_PAGE)), last: one(&q, "last").map(str::to_owned) }
        }
        ["referrers", d] => {
            expect(m, &["GET"], path)?;
            Action::Referrers {
                name,
                digest: digest(d)?,
                artifact_type: one(&q, "artifactType").map(str::to_owned),
            }
        }
        _ => return Err(not_found()),
    };
    Ok(action)
}

/// One page of `tags` (sorted): at most `n` after `last`; and whether more follow.
pub fn page<'a>(tags: &'a [String], n: Option<usize>, last: Option<&str>) -> (&'a [String], bool) {
    let from = last.map_or(0, |l| tags.partition_point(|t| t.as_str() <= l));
    let rest = &tags[from..];
    match n {
        Some(n) if n < rest.len() => (&rest[..n], true),
        _ => (rest, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(m: &str, p: &str, q: Option<&str>) -> Action {
        parse(m, p, q, &Headers::default()).unwrap_or_else(|e| panic!("{m} {p}: {e:?}"))
    }

    fn err(m: &str, p: &str, q: Option<&str>, h: &Headers<'_>) -> RegistryError {
        parse(m, p, q, h).expect_err("should not parse")
    }

    const D256: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn d512() -> String {
        format!("sha512:{}", "ab".repeat(64))
    }

    #[test]
    fn repository_names_follow_the_grammar() {
        for good in ["a", "library/debian", "a/b/c", "a.b", "a_b", "a__b", "a---b", "x0/y-1.z__2"] {
            assert!(is_repo_name(good), "{good}");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "-a", "a-", "a..b", "a___b", "a_.b", "a.-b", "a b", "ä"] {
            assert!(!is_repo_name(bad), "{bad}");
        }
        assert!(!is_repo_name(&"a".repeat(256)));
    }

    #[test]
    fn names_with_slashes_and_route_words_split_from_the_end() {
        assert_eq!(
            ok("GET", "/v2/team/app/manifests/latest", None),
            Action::GetManifest {
                name: "team/app".into(),
                reference: Reference::Tag("latest".into()),
                head: false,
                allow_retired: false
            }
        );
        // A repository whose components are route words.
        assert_eq!(
            ok("HEAD", &format!("/v2/blobs/manifests/blobs/{D256}"), None),
            Action::GetBlob { name: "blobs/manifests".into(), digest: D256.into(), head: true, range: None }
        );
        assert_eq!(
            ok("GET", "/v2/a/tags/list/tags/list", Some("n=2&last=b")),
            Action::ListTags { name: "a/tags/list".into(), n: Some(2), last: Some("b".into()) }
        );
        assert!(matches!(
            ok("POST", "/v2/a/b/blobs/uploads/", None),
            Action::StartUpload { start: UploadStart::Session, .. }
        ));
        assert_eq!(ok("GET", "/v2/", None), Action::Base);
        assert_eq!(ok("GET", "/v2", None), Action::Base);
    }

    #[test]
    fn references_and_digests() {
        let Action::GetManifest { reference, .. } = ok("GET", &format!("/v2/a/manifests/{}", d512()), None)
        else {
            panic!()
        };
        assert_eq!(reference, Reference::Digest(d512()));
        for bad in [
            "sha256:abc",
            "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "md5:00",
        ] {
            let e = err("GET", &format!("/v2/a/manifests/{bad}"), None, &Headers::default());
            assert_eq!((e.status, e.code), (400, Code::DigestInvalid), "{bad}");
        }
        let e = err("GET", "/v2/a/manifests/-bad", None, &Headers::default());
        assert_eq!(e.status, 400);
        assert!(is_tag("v1.0_rc-2") && is_tag("_x") && !is_tag(".x") && !is_tag(&"a".repeat(129)));
        assert_eq!(version_tag(&"1.2.3+build.5".parse().unwrap()), "1.2.3_build.5");
        let e = err("GET", "/v2/Bad/manifests/latest", None, &Headers::default());
        assert_eq!((e.status, e.code), (400, Code::NameInvalid));
    }

    #[test]
    fn uploads_parse_their_query_and_ranges() {
        assert_eq!(
            ok("POST", "/v2/a/blobs/uploads/", Some(&format!("mount={D256}&from=b/c"))),
            Action::StartUpload {
                name: "a".into(),
                start: UploadStart::Mount { digest: D256.into(), from: Some("b/c".into()) },
                length: None
            }
        );
        assert!(matches!(
            ok("POST", "/v2/a/blobs/uploads/", Some(&format!("digest={}", d512()))),
            Action::StartUpload { start: UploadStart::Monolithic { .. }, .. }
        ));
        let h = Headers { content_range: Some("10-19"), content_length: Some("10"), ..Default::default() };
        assert_eq!(
            parse("PATCH", "/v2/a/blobs/uploads/00ff", None, &h).unwrap(),
            Action::PatchUpload {
                name: "a".into(),
                id: "00ff".into(),
                chunk: Chunk { start: Some(10), length: Some(10) }
            }
        );
        let h = Headers { content_range: Some("10-19"), content_length: Some("9"), ..Default::default() };
        assert_eq!(err("PATCH", "/v2/a/blobs/uploads/00ff", None, &h).status, 416);
        let h = Headers { content_range: Some("19-10"), ..Default::default() };
        assert_eq!(err("PATCH", "/v2/a/blobs/uploads/00ff", None, &h).status, 416);
        assert_eq!(content_range("bytes 0-4/5").unwrap(), (0, 5));
        assert_eq!(content_range("bytes=3-3").unwrap(), (3, 1));
        let e = err("PUT", "/v2/a/blobs/uploads/00ff", None, &Headers::default());
        assert_eq!(e.code, Code::DigestInvalid);
        let e = err("GET", "/v2/a/blobs/uploads/not-hex", None, &Headers::default());
        assert_eq!((e.status, e.code), (404, Code::BlobUploadUnknown));
    }

    #[test]
    fn blob_ranges() {
        assert_eq!(byte_range("bytes=0-9").unwrap(), ByteRange::From { first: 0, last: Some(9) });
        assert_eq!(byte_range("bytes=5-").unwrap().span(8), Some((5, 7)));
        assert_eq!(byte_range("bytes=-3").unwrap().span(8), Some((5, 7)));
        assert_eq!(byte_range("bytes=-30").unwrap().span(8), Some((0, 7)));
        assert_eq!(byte_range("bytes=2-100").unwrap().span(8), Some((2, 7)));
        assert_eq!(byte_range("bytes=8-").unwrap().span(8), None);
        assert!(byte_range("bytes=0-1,4-5").is_err());
        assert!(byte_range("items=0-1").is_err());
        assert!(byte_range("bytes=5-2").is_err());
    }

    #[test]
    fn tags_paginate_after_last() {
        let tags: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
        assert_eq!(page(&tags, Some(2), None), (&tags[0..2], true));
        assert_eq!(page(&tags, Some(2), Some("b")), (&tags[2..4], true));
        assert_eq!(page(&tags, Some(2), Some("d")), (&tags[4..5], false));
        assert_eq!(page(&tags, None, Some("bb")), (&tags[2..5], false));
        assert_eq!(page(&tags, Some(0), None), (&tags[0..0], true));
        assert_eq!(page(&tags, Some(9), Some("e")), (&tags[5..5], false));
        let e = err("GET", "/v2/a/tags/list", Some("n=many"), &Headers::default());
        assert_eq!(e.status, 400);
    }

    #[test]
    fn methods_and_access() {
        let e = err("POST", "/v2/a/manifests/latest", None, &Headers::default());
        assert_eq!((e.status, e.code), (405, Code::Unsupported));
        assert_eq!(e.headers, vec![("Allow", "GET, HEAD, PUT, DELETE".to_owned())]);
        assert_eq!(ok("GET", "/v2/a/manifests/latest", None).access(), Access::Pull);
        assert_eq!(ok("DELETE", "/v2/a/manifests/latest", None).access(), Access::Push);
        assert_eq!(
            ok("GET", "/v2/token", Some("scope=repository:a:pull&service=kiln")).access(),
            Access::Own
        );
        let Action::GetManifest { allow_retired, .. } =
            ok("GET", &format!("/v2/a/manifests/{D256}"), Some("allow-retired=1"))
        else {
            panic!()
        };
        assert!(allow_retired);
        assert_eq!(err("GET", "/v2/a/nothing", None, &Headers::default()).status, 404);
    }

    #[test]
    fn every_route_parses_and_takes_only_its_methods() {
        const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"];
        for (method, template) in ROUTES {
            let path = template
                .replace("{name}", "a/b")
                .replace("{reference}", "latest")
                .replace("{digest}", D256)
                .replace("{id}", "00ff");
            let query = (template.ends_with("{id}") && *method == "PUT").then(|| format!("digest={D256}"));
            parse(method, &path, query.as_deref(), &Headers::default())
                .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
            let allowed: Vec<&str> = ROUTES.iter().filter(|(_, t)| t == template).map(|(m, _)| *m).collect();
            for other in METHODS.iter().filter(|m| !allowed.contains(m)) {
                let e = err(other, &path, query.as_deref(), &Headers::default());
                assert_eq!(e.status, 405, "{other} {path}");
            }
        }
    }
}
