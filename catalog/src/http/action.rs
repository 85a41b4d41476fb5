//! Every HTTP request the catalog answers, parsed into a typed [`Action`] before anything runs: the route,
//! the path and query parameters, and the JSON body, each checked with an error that names the field.
//! Pure: method, path, query and body bytes in; an action or a [`Problem`] out.

use serde::de::DeserializeOwned;

use super::problem::Problem;
use crate::{
    lifecycle::LifecycleChange,
    model::{is_name, Scope},
    resolve::ResolveRequest,
    service::PublishRequest,
    store::digest_hex,
};

/// The API's prefix.
pub const API: &str = "/api/v1";

/// Release notes' rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotesFormat {
    Markdown,
    Html,
    Json,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Health,
    OpenApi,
    ListFamilies,
    GetFamily {
        family: String,
    },
    ListVersions {
        family: String,
    },
    GetVersion {
        family: String,
        version: semver::Version,
    },
    /// The version's signed `manifest.json`, as published.
    GetManifest {
        family: String,
        version: semver::Version,
    },
    /// One file of the version's bundle (`disk.qcow2`, `sbom.spdx.json`, `signatures/…`).
    GetFile {
        family: String,
        version: semver::Version,
        path: String,
    },
    GetReleaseNotes {
        family: String,
        version: semver::Version,
        format: NotesFormat,
    },
    ListChannels {
        family: String,
    },
    Promote {
        family: String,
        channel: String,
        version: semver::Version,
    },
    ChangeLifecycle {
        family: String,
        version: semver::Version,
        change: LifecycleChange,
    },
    Resolve {
        family: String,
        request: ResolveRequest,
    },
    Audit {
        family: Option<String>,
        version: Option<semver::Version>,
        before: Option<u64>,
        limit: usize,
    },
    HeadBlob {
        digest: String,
    },
    GetBlob {
        digest: String,
    },
    /// The body is the blob; the handler streams it.
    PutBlob {
        digest: String,
    },
    Publish {
        request: PublishRequest,
    },
    ListTokens,
    CreateToken {
        name: String,
        scopes: Vec<Scope>,
    },
    RevokeToken {
        id: String,
    },
    Gc {
        grace_secs: u64,
    },
}

impl Action {
    /// The scope the action needs; `None` for reads (public or `read`, by configuration) — see
    /// [`Action::is_read`].
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Self::PutBlob { .. } | Self::Publish { .. } => Some(Scope::Publish),
            Self::Promote { .. } => Some(Scope::Promote),
            Self::ChangeLifecycle { .. } => Some(Scope::Lifecycle),
            Self::ListTokens | Self::CreateToken { .. } | Self::RevokeToken { .. } | Self::Gc { .. } => {
                Some(Scope::Admin)
            }
            _ => None,
        }
    }

    /// Reads of catalog content (not health or the API document, which are always open).
    pub fn is_read(&self) -> bool {
        self.scope().is_none() && !matches!(self, Self::Health | Self::OpenApi)
    }
}

/// `limit` when the audit query gives none, and its maximum.
const AUDIT_LIMIT: usize = 100;
const AUDIT_MAX: usize = 1000;

pub(crate) fn percent_decode(segment: &str, field: &str) -> Result<String, Problem> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return Err(Problem::bad_request(field, format!("bad percent-encoding in `{segment}`")));
            };
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Problem::bad_request(field, format!("`{segment}` is not UTF-8")))
}

fn family(s: &str) -> Result<String, Problem> {
    let s = percent_decode(s, "family")?;
    if is_name(&s) {
        Ok(s)
    } else {
        Err(Problem::bad_request(
            "family",
            format!("`{s}` is not a family name (lowercase letters, digits, `-_.`)"),
        ))
    }
}

fn version(s: &str) -> Result<semver::Version, Problem> {
    let s = percent_decode(s, "version")?;
    s.parse().map_err(|e| Problem::bad_request("version", format!("`{s}` is not a semantic version: {e}")))
}

fn digest(s: &str) -> Result<String, Problem> {
    let s = percent_decode(s, "digest")?;
    digest_hex(&s).map_err(|_| Problem::bad_request("digest", format!("`{s}` is not sha256:<64 hex>")))?;
    Ok(s)
}

/// A JSON body into `T`; serde's error names the field (`scopes[1]: unknown variant …`).
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.is_empty() {
        return Err(Problem::bad_request("body", "a JSON body is required"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        // Where the JSON itself breaks, the path ends in segments serde could not name (`?`).
        let path = e.path().to_string();
        let known = path.trim_end_matches(['?', '.']);
        Problem::bad_request(if known.is_empty() { "body" } else { known }, e.inner().to_string())
    })?;
    // One JSON document, nothing after it.
    de.end().map_err(|e| Problem::bad_request("body", e))?;
    Ok(value)
}

/// The query string as a JSON object: a repeated key becomes a list.
fn query_object(query: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let v = serde_json::Value::String(v.into_owned());
        match map.get_mut(k.as_ref()) {
            None => {
                map.insert(k.into_owned(), v);
            }
            Some(serde_json::Value::Array(list)) => list.push(v),
            Some(first) => {
                let first = first.take();
                map.insert(k.into_owned(), serde_json::Value::Array(vec![first, v]));
            }
        }
    }
    map
}

fn only_keys(q: &serde_json::Map<String, serde_json::Value>, allowed: &[&str]) -> Result<(), Problem> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => {
            Err(Problem::bad_request(k, format!("unknown query parameter (known: {})", allowed.join(", "))))
        }
        None => Ok(()),
    }
}

fn single<'a>(
    q: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<&'a str>, Problem> {
    match q.get(key) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Problem::bad_request(key, "given more than once")),
    }
}

fn number(q: &serde_json::Map<String, serde_json::Value>, key: &str) -> Result<Option<u64>, Problem> {
    single(q, key)?
        .map(|s| {
            s.parse::<u64>().map_err(|_| Problem::bad_request(key, format!("`{s}` is not a whole number")))
        })
        .transpose()
}

/// Every route `parse` takes: (method, path template as `catalog/openapi.json` writes it).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/families"),
    ("GET", "/api/v1/families/{family}"),
    ("GET", "/api/v1/families/{family}/versions"),
    ("GET", "/api/v1/families/{family}/versions/{version}"),
    ("GET", "/api/v1/families/{family}/versions/{version}/manifest"),
    ("GET", "/api/v1/families/{family}/versions/{version}/files/{path}"),
    ("HEAD", "/api/v1/families/{family}/versions/{version}/files/{path}"),
    ("GET", "/api/v1/families/{family}/versions/{version}/release-notes"),
    ("PATCH", "/api/v1/families/{family}/versions/{version}/lifecycle"),
    ("GET", "/api/v1/families/{family}/channels"),
    ("PUT", "/api/v1/families/{family}/channels/{channel}"),
    ("GET", "/api/v1/resolve"),
    ("GET", "/api/v1/audit"),
    ("HEAD", "/api/v1/blobs/{digest}"),
    ("GET", "/api/v1/blobs/{digest}"),
    ("PUT", "/api/v1/blobs/{digest}"),
    ("POST", "/api/v1/publish"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/{id}"),
    ("POST", "/api/v1/gc"),
];

/// Parse one request. `path` is the URL path (still percent-encoded), `query` the part after `?`.
pub fn parse(method: &str, path: &str, query: Option<&str>, body_bytes: &[u8]) -> Result<Action, Problem> {
    let q = query_object(query.unwrap_or(""));
    let no_query = |q: &serde_json::Map<String, serde_json::Value>| only_keys(q, &[]);
    if path == "/healthz" {
        return expect(method, &["GET"], path).map(|()| Action::Health);
    }
    let Some(rest) = path.strip_prefix(API) else {
        return Err(Problem::not_found(format!("no route {path}")));
    };
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let m = method;
    let action = match segs.as_slice() {
        ["openapi.json"] => expect(m, &["GET"], path).map(|()| Action::OpenApi)?,
        ["families"] => {
            expect(m, &["GET"], path)?;
            no_query(&q)?;
            Action::ListFamilies
        }
        ["families", f] => {
            expect(m, &["GET"], path)?;
            Action::GetFamily { family: family(f)? }
        }
        ["families", f, "versions"] => {
            expect(m, &["GET"], path)?;
            Action::ListVersions { family: family(f)? }
        }
        ["families", f, "versions", v] => {
            expect(m, &["GET"], path)?;
            Action::GetVersion { family: family(f)?, version: version(v)? }
        }
        ["families", f, "versions", v, "manifest"] => {
            expect(m, &["GET"], path)?;
            Action::GetManifest { family: family(f)?, version: version(v)? }
        }
        ["families", f, "versions", v, "files", file @ ..] if !file.is_empty() => {
            expect(m, &["GET", "HEAD"], path)?;
            let parts = file.iter().map(|s| percent_decode(s, "path")).collect::<Result<Vec<_>, _>>()?;
            if parts.iter().any(|p| p.is_empty() || p == "." || p == ".." || p.contains('/')) {
                return Err(Problem::bad_request("path", "not a path inside the bundle"));
            }
            Action::GetFile { family: family(f)?, version: version(v)?, path: parts.join("/") }
        }
        ["families", f, "versions", v, "release-notes"] => {
            expect(m, &["GET"], path)?;
            only_keys(&q, &["format"])?;
            let format = match single(&q, "format")? {
                None | Some("markdown") | Some("md") => NotesFormat::Markdown,
                Some("html") => NotesFormat::Html,
                Some("json") => NotesFormat::Json,
                Some(other) => {
                    return Err(Problem::bad_request(
                        "format",
                        format!("`{other}`: one of markdown, html, json"),
                    ))
                }
            };
            Action::GetReleaseNotes { family: family(f)?, version: version(v)?, format }
        }
        ["families", f, "versions", v, "lifecycle"] => {
            expect(m, &["PATCH"], path)?;
            let change: LifecycleChange = body(body_bytes)?;
            if change.is_empty() {
                return Err(Problem::bad_request(
                    "body",
                    "nothing to change (supported, deprecated_on, end_of_life_on, revoke)",
                ));
            }
            Action::ChangeLifecycle { family: family(f)?, version: version(v)?, change }
        }
        ["families", f, "channels"] => {
            expect(m, &["GET"], path)?;
            Action::ListChannels { family: family(f)? }
        }
        ["families", f, "channels", c] => {
            expect(m, &["PUT"], path)?;
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                version: String,
            }
            let b: Body = body(body_bytes)?;
            let channel = percent_decode(c, "channel")?;
            if !is_name(&channel) {
                return Err(Problem::bad_request("channel", format!("`{channel}` is not a channel name")));
            }
            let version = b.version.parse().map_err(|e| {
                Problem::bad_request("version", format!("`{}` is not a semantic version: {e}", b.version))
            })?;
            Action::Promote { family: family(f)?, channel, version }
        }
        ["resolve"] => {
            expect(m, &["GET"], path)?;
            only_keys(&q, &["family", "contract", "channel", "supported_until", "include", "limit"])?;
            let fam = single(&q, "family")?.ok_or_else(|| Problem::bad_request("family", "required"))?;
            let fam = family(fam)?;
            let mut rest = q.clone();
            rest.remove("family");
            if let Some(serde_json::Value::String(l)) = rest.get("limit") {
                let n: u64 = l
                    .parse()
                    .map_err(|_| Problem::bad_request("limit", format!("`{l}` is not a whole number")))?;
                rest.insert("limit".into(), n.into());
            }
            let request: ResolveRequest = body(serde_json::Value::Object(rest).to_string().as_bytes())?;
            Action::Resolve { family: fam, request }
        }
        ["audit"] => {
            expect(m, &["GET"], path)?;
            only_keys(&q, &["family", "version", "before", "limit"])?;
            let limit = number(&q, "limit")?.map_or(AUDIT_LIMIT, |n| (n as usize).min(AUDIT_MAX));
            Action::Audit {
                family: single(&q, "family")?.map(family).transpose()?,
                version: single(&q, "version")?.map(version).transpose()?,
                before: number(&q, "before")?,
                limit,
            }
        }
        ["blobs", d] => {
            expect(m, &["GET", "HEAD", "PUT"], path)?;
            let digest = digest(d)?;
            match m {
                "HEAD" => Action::HeadBlob { digest },
                "PUT" => Action::PutBlob { digest },
                _ => Action::GetBlob { digest },
            }
        }
        ["publish"] => {
            expect(m, &["POST"], path)?;
            Action::Publish { request: body(body_bytes)? }
        }
        ["tokens"] => {
            expect(m, &["GET", "POST"], path)?;
            if m == "GET" {
                Action::ListTokens
            } else {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    name: String,
                    scopes: Vec<Scope>,
                }
                let b: Body = body(body_bytes)?;
                if b.name.trim().is_empty() {
                    return Err(Problem::bad_request("name", "a token needs a name"));
                }
                if b.scopes.is_empty() {
                    return Err(Problem::bad_request("scopes", "a token needs at least one scope"));
                }
                Action::CreateToken { name: b.name, scopes: b.scopes }
            }
        }
        ["tokens", id] => {
            expect(m, &["DELETE"], path)?;
            Action::RevokeToken { id: percent_decode(id, "id")? }
        }
        ["gc"] => {
            expect(m, &["POST"], path)?;
            only_keys(&q, &["grace_secs"])?;
            Action::Gc { grace_secs: number(&q, "grace_secs")?.unwrap_or(3600) }
        }
        _ => return Err(Problem::not_found(format!("no route {path}"))),
    };
    // The routes with query parameters checked theirs above; the others take none.
    if !matches!(
        action,
        Action::GetReleaseNotes { .. } | Action::Resolve { .. } | Action::Audit { .. } | Action::Gc { .. }
    ) {
        no_query(&q)?;
    }
    Ok(action)
}

fn expect(method: &str, allowed: &[&str], path: &str) -> Result<(), Problem> {
    if allowed.contains(&method) {
        Ok(())
    } else {
        Err(Problem::method_not_allowed(path, allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(m: &str, p: &str, q: Option<&str>, b: &str) -> Action {
        parse(m, p, q, b.as_bytes()).unwrap_or_else(|e| panic!("{m} {p}: {e:?}"))
    }

    fn err(m: &str, p: &str, q: Option<&str>, b: &str) -> Problem {
        parse(m, p, q, b.as_bytes()).expect_err("should not parse")
    }

    #[test]
    fn routes_parse_into_actions() {
        assert_eq!(ok("GET", "/api/v1/families", None, ""), Action::ListFamilies);
        assert_eq!(
            ok("GET", "/api/v1/families/debian-minimal/versions/1.2.0", None, ""),
            Action::GetVersion { family: "debian-minimal".into(), version: "1.2.0".parse().unwrap() }
        );
        assert_eq!(
            ok("GET", "/api/v1/families/a/versions/1.0.0/files/signatures/disk.raw.sig", None, ""),
            Action::GetFile {
                family: "a".into(),
                version: "1.0.0".parse().unwrap(),
                path: "signatures/disk.raw.sig".into()
            }
        );
        assert_eq!(
            ok("PUT", "/api/v1/families/a/channels/stable", None, r#"{"version":"1.0.0"}"#),
            Action::Promote {
                family: "a".into(),
                channel: "stable".into(),
                version: "1.0.0".parse().unwrap()
            }
        );
        let Action::Resolve { family, request } = ok(
            "GET",
            "/api/v1/resolve",
            Some("family=a&contract=base-os%40%5E1&contract=ssh-server@^1&channel=stable&supported_until=2027-06-01&limit=5"),
            "",
        ) else {
            panic!()
        };
        assert_eq!(family, "a");
        assert_eq!(request.contracts.len(), 2);
        assert_eq!(request.channel.as_deref(), Some("stable"));
        assert_eq!(request.limit, 5);
        assert!(matches!(
            ok("HEAD", &format!("/api/v1/blobs/sha256:{}", "a".repeat(64)), None, ""),
            Action::HeadBlob { .. }
        ));
    }

    #[test]
    fn bad_requests_name_the_field() {
        let p = err("GET", "/api/v1/families/Bad_Name", None, "");
        assert_eq!((p.status, p.field.as_deref()), (400, Some("family")));
        let p = err("GET", "/api/v1/families/a/versions/1.x", None, "");
        assert_eq!(p.field.as_deref(), Some("version"));
        let p = err("PUT", "/api/v1/families/a/channels/stable", None, r#"{"version":"one"}"#);
        assert_eq!(p.field.as_deref(), Some("version"));
        let p = err("PUT", "/api/v1/families/a/channels/stable", None, r#"{"versoin":"1.0.0"}"#);
        assert_eq!(p.status, 400);
        let p = err("POST", "/api/v1/tokens", None, r#"{"name":"ci","scopes":["read","fly"]}"#);
        assert_eq!(p.field.as_deref(), Some("scopes[1]"));
        let p = err("GET", "/api/v1/resolve", Some("family=a&contract=base-os@banana"), "");
        assert_eq!(p.field.as_deref(), Some("contract"));
        let p = err("GET", "/api/v1/resolve", Some("family=a&supported_until=June"), "");
        assert_eq!(p.field.as_deref(), Some("supported_until"));
        let p = err("GET", "/api/v1/resolve", Some("contract=base-os"), "");
        assert_eq!(p.field.as_deref(), Some("family"));
        let p = err("GET", "/api/v1/resolve", Some("family=a&colour=red"), "");
        assert_eq!(p.field.as_deref(), Some("colour"));
        let p = err(
            "PATCH",
            "/api/v1/families/a/versions/1.0.0/lifecycle",
            None,
            r#"{"deprecated_on":"tomorrow"}"#,
        );
        assert_eq!(p.field.as_deref(), Some("deprecated_on"));
        let p = err("PATCH", "/api/v1/families/a/versions/1.0.0/lifecycle", None, "{}");
        assert_eq!(p.field.as_deref(), Some("body"));
        let p = err("PUT", "/api/v1/blobs/sha256:xyz", None, "");
        assert_eq!(p.field.as_deref(), Some("digest"));
        let p = err("GET", "/api/v1/families/a/versions/1.0.0/files/../secret", None, "");
        assert_eq!(p.field.as_deref(), Some("path"));
    }

    #[test]
    fn unknown_routes_and_methods() {
        assert_eq!(err("GET", "/api/v1/nope", None, "").status, 404);
        assert_eq!(err("GET", "/elsewhere", None, "").status, 404);
        let p = err("DELETE", "/api/v1/families", None, "");
        assert_eq!(p.status, 405);
        assert_eq!(p.allow.as_deref(), Some("GET"));
    }

    /// A request of each route in [`ROUTES`] with sample parameters and body; `None` for its query.
    fn sample(method: &str, template: &str) -> (String, Option<&'static str>, &'static str) {
        let path = template
            .replace("{family}", "debian-minimal")
            .replace("{version}", "1.2.0")
            .replace("{path}", "signatures/disk.raw.sig")
            .replace("{channel}", "stable")
            .replace("{digest}", &format!("sha256:{}", "a".repeat(64)))
            .replace("{id}", "0123456789ab");
        assert!(!path.contains('{'), "{template}: a parameter without a sample");
        let query = (template == "/api/v1/resolve").then_some("family=debian-minimal");
        let body = match (method, template.rsplit('/').next()) {
            ("PATCH", _) => r#"{"supported":true}"#,
            ("PUT", Some("{channel}")) => r#"{"version":"1.2.0"}"#,
            ("POST", Some("publish")) => r#"{"files":[]}"#,
            ("POST", Some("tokens")) => r#"{"name":"ci","scopes":["publish"]}"#,
            _ => "",
        };
        (path, query, body)
    }

    #[test]
    fn every_route_parses_and_takes_only_its_methods() {
        const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"];
        for (method, template) in ROUTES {
            let (path, query, body) = sample(method, template);
            assert!(METHODS.contains(method), "{method}");
            ok(method, &path, query, body);
            let allowed: Vec<&str> = ROUTES.iter().filter(|(_, t)| t == template).map(|(m, _)| *m).collect();
            for other in METHODS.iter().filter(|m| !allowed.contains(m)) {
                let p = err(other, &path, query, body);
                assert_eq!(p.status, 405, "{other} {path}: {p:?}");
                let mut allow: Vec<&str> = p.allow.as_deref().unwrap_or("").split(", ").collect();
                allow.sort_unstable();
                let mut want = allowed.clone();
                want.sort_unstable();
                assert_eq!(allow, want, "{other} {path}");
            }
        }
    }

    #[test]
    fn unknown_query_parameters_are_refused_everywhere() {
        for (method, template) in ROUTES.iter().filter(|(_, t)| *t != "/healthz") {
            let (path, query, body) = sample(method, template);
            let query = match query {
                Some(q) => format!("{q}&colour=red"),
                None => "colour=red".to_owned(),
            };
            let p = err(method, &path, Some(&query), body);
            assert_eq!((p.status, p.field.as_deref()), (400, Some("colour")), "{method} {path}");
        }
    }

    #[test]
    fn a_body_is_one_json_document() {
        let p = err("PUT", "/api/v1/families/a/channels/stable", None, r#"{"version":"1.0.0"} {}"#);
        assert_eq!(p.field.as_deref(), Some("body"));
        let p = err("POST", "/api/v1/tokens", None, r#"{"name":"ci","#);
        assert_eq!(p.field.as_deref(), Some("body"));
    }

    #[test]
    fn scopes_of_actions() {
        assert_eq!(ok("POST", "/api/v1/gc", None, "").scope(), Some(Scope::Admin));
        assert_eq!(ok("GET", "/api/v1/families", None, "").scope(), None);
        assert!(ok("GET", "/api/v1/families", None, "").is_read());
        assert!(!ok("GET", "/healthz", None, "").is_read());
    }
}
