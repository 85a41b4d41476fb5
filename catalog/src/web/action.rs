//! Requests for the catalog's web pages, parsed into a typed [`PageRequest`] before anything runs: which
//! page, and where the browser reached the catalog (the `Host` header, or `X-Forwarded-Host` and
//! `X-Forwarded-Proto` from a proxy), which the pages' commands name. Pure: method, path, query and those
//! header values in; a request or a [`PageError`] out.

use crate::model::is_name;

/// A page of the web interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// `/`: every family.
    Index,
    /// `/families/FAMILY`: the family's versions, timeline, channels.
    Family { family: String },
    /// `/families/FAMILY/VERSION`: one version.
    Version { family: String, version: semver::Version },
}

/// How the browser reached the catalog: `http://HOST` or `https://HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `name[:port]` or `[v6]:port`, as the `Host` header gave it.
    pub host: String,
    pub tls: bool,
}

/// The request headers that say where the browser reached the catalog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OriginHeaders<'a> {
    pub host: Option<&'a str>,
    /// `X-Forwarded-Host` from a proxy (the first, when a chain of proxies listed several).
    pub forwarded_host: Option<&'a str>,
    /// `X-Forwarded-Proto` from a proxy.
    pub forwarded_proto: Option<&'a str>,
}

/// A parsed page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub page: Page,
    /// `None` when the request had no `Host` header (pages that print commands need one).
    pub origin: Option<Origin>,
}

/// Why a page is not shown; each is an HTML page with its status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("{detail}")]
    NotFound { detail: String },
    #[error("{field}: {detail}")]
    BadRequest { field: String, detail: String },
    #[error("{path} takes GET and HEAD")]
    MethodNotAllowed { path: String },
    #[error("this catalog's pages need a token with the read scope (Authorization: Bearer …)")]
    Unauthorized,
    #[error("this token lacks the read scope")]
    Forbidden,
    #[error("{detail}")]
    Internal { detail: String },
}

impl PageError {
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound { .. } => 404,
            Self::BadRequest { .. } => 400,
            Self::MethodNotAllowed { .. } => 405,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::Internal { .. } => 500,
        }
    }

    pub fn title(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "Not found",
            Self::BadRequest { .. } => "Bad request",
            Self::MethodNotAllowed { .. } => "Method not allowed",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::Internal { .. } => "Internal error",
        }
    }

    fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound { detail: detail.into() }
    }

    fn bad_request(field: &str, detail: impl Into<String>) -> Self {
        Self::BadRequest { field: field.to_owned(), detail: detail.into() }
    }
}

/// Whether `path` is one of the web pages' (the dispatcher sends it here rather than to the JSON API).
pub fn is_page_path(path: &str) -> bool {
    path == "/" || path == "/families" || path.starts_with("/families/")
}

/// Every route of the pages: (path template).
pub const ROUTES: &[&str] = &["/", "/families/{family}", "/families/{family}/{version}"];

/// Decodes `%XX` escapes of a path segment (`+` stays a plus: semver build metadata).
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok())?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn family(segment: &str) -> Result<String, PageError> {
    match percent_decode(segment) {
        Some(name) if is_name(&name) => Ok(name),
        _ => Err(PageError::not_found(format!("there is no family named `{segment}`"))),
    }
}

fn version(family: &str, segment: &str) -> Result<semver::Version, PageError> {
    percent_decode(segment)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| PageError::not_found(format!("{family} has no version `{segment}`")))
}

/// A `Host` header value: a DNS name or IPv4 address, or a bracketed IPv6 address, with an optional port.
fn host(value: &str) -> Result<String, PageError> {
    let bad = || PageError::bad_request("Host", format!("`{value}` is not a host[:port]"));
    if value.is_empty() || value.len() > 255 {
        return Err(bad());
    }
    let (name, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(bad());
        }
        (None, if after.is_empty() { None } else { Some(after.strip_prefix(':').ok_or_else(bad)?) })
    } else {
        match value.rsplit_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(value), None),
        }
    };
    if let Some(n) = name {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return Err(bad());
        }
    }
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err()
        {
            return Err(bad());
        }
    }
    Ok(value.to_ascii_lowercase())
}

/// The first value of a header a chain of proxies may have extended (`a, b`).
fn first(value: Option<&str>) -> Option<&str> {
    value.map(|v| v.split(',').next().unwrap_or("").trim())
}

/// Parse a page request. `path` is the URL path (still percent-encoded), `query` the part after `?`.
pub fn parse(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: OriginHeaders<'_>,
) -> Result<PageRequest, PageError> {
    if method != "GET" && method != "HEAD" {
        return Err(PageError::MethodNotAllowed { path: path.to_owned() });
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let page = match segs.as_slice() {
        [""] | ["families"] => Page::Index,
        ["families", f] => Page::Family { family: family(f)? },
        ["families", f, v] => {
            let family = family(f)?;
            let version = version(&family, v)?;
            Page::Version { family, version }
        }
        _ => return Err(PageError::not_found(format!("there is no page {path}"))),
    };
    if let Some((key, _)) = form_urlencoded::parse(query.unwrap_or("").as_bytes()).next() {
        return Err(PageError::bad_request(&key, "the pages take no query parameters"));
    }
    let tls = match first(headers.forwarded_proto) {
        None => false,
        Some(p) if p.eq_ignore_ascii_case("http") => false,
        Some(p) if p.eq_ignore_ascii_case("https") => true,
        Some(p) => {
            return Err(PageError::bad_request("X-Forwarded-Proto", format!("`{p}` is not http or https")))
        }
    };
    let (field, value) = match first(headers.forwarded_host) {
        Some(h) => ("X-Forwarded-Host", Some(h)),
        None => ("Host", headers.host.map(str::trim)),
    };
    let origin = value
        .map(|h| host(h).map_err(|_| PageError::bad_request(field, format!("`{h}` is not a host[:port]"))))
        .transpose()?
        .map(|host| Origin { host, tls });
    Ok(PageRequest { page, origin })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(path: &str) -> Result<Page, PageError> {
        parse("GET", path, None, OriginHeaders { host: Some("cat.example:8080"), ..Default::default() })
            .map(|r| r.page)
    }

    #[test]
    fn routes_parse_into_pages() {
        assert_eq!(page("/"), Ok(Page::Index));
        assert_eq!(page("/families"), Ok(Page::Index));
        assert_eq!(page("/families/debian-minimal"), Ok(Page::Family { family: "debian-minimal".into() }));
        assert_eq!(
            page("/families/debian-minimal/1.2.0+b1"),
            Ok(Page::Version { family: "debian-minimal".into(), version: "1.2.0+b1".parse().unwrap() })
        );
        assert_eq!(
            page("/families/debian%2Dminimal/1.2.0%2Bb1"),
            Ok(Page::Version { family: "debian-minimal".into(), version: "1.2.0+b1".parse().unwrap() })
        );
        for path in ROUTES {
            let sample = path.replace("{family}", "a").replace("{version}", "1.0.0");
            assert!(is_page_path(&sample) && page(&sample).is_ok(), "{sample}");
        }
    }

    #[test]
    fn unknown_names_and_pages_are_not_found() {
        for path in ["/families/Bad_Name", "/families/a/1.x", "/families/a/1.0.0/more", "/families/", "/x"] {
            assert_eq!(page(path).map_err(|e| e.status()), Err(404), "{path}");
        }
        assert!(!is_page_path("/api/v1/families") && !is_page_path("/familiesx"));
    }

    #[test]
    fn only_reads_and_no_query() {
        let e = parse("POST", "/", None, OriginHeaders::default()).unwrap_err();
        assert_eq!(e.status(), 405);
        let e = parse("GET", "/families/a", Some("utm=x"), OriginHeaders::default()).unwrap_err();
        assert_eq!(
            e,
            PageError::BadRequest {
                field: "utm".into(),
                detail: "the pages take no query parameters".into()
            }
        );
        assert!(parse("HEAD", "/", None, OriginHeaders::default()).is_ok());
    }

    #[test]
    fn the_origin_comes_from_host_or_a_proxy() {
        let origin = |host, forwarded_host, forwarded_proto| {
            parse("GET", "/", None, OriginHeaders { host, forwarded_host, forwarded_proto }).map(|r| r.origin)
        };
        let o = |host: &str, tls| Ok(Some(Origin { host: host.into(), tls }));
        assert_eq!(origin(Some("Cat.Example:8080"), None, None), o("cat.example:8080", false));
        assert_eq!(origin(Some("[::1]:3000"), None, Some("https")), o("[::1]:3000", true));
        assert_eq!(
            origin(Some("10.0.0.5:8080"), Some("images.example, proxy.internal"), Some("https, http")),
            o("images.example", true)
        );
        assert_eq!(origin(None, None, None), Ok(None));
        for bad in ["a b", "x:99999", "x:", "<script>", "[zz]:1", "a/b", ""] {
            let e = origin(Some(bad), None, None).unwrap_err();
            assert_eq!((e.status(), e.to_string()), (400, format!("Host: `{bad}` is not a host[:port]")));
            let e = origin(Some("ok"), Some(bad), None).unwrap_err();
            assert!(e.to_string().starts_with("X-Forwarded-Host: "), "{e}");
        }
        assert_eq!(origin(Some("x"), None, Some("gopher")).unwrap_err().status(), 400);
    }
}
