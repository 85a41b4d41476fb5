//! The requests of the delivery surfaces, parsed into typed [`BootAction`]s before anything runs: disk and
//! file downloads (`/download/…`), network boot (`/boot/…`) and simplestreams (`/streams/v1/…`). Pure:
//! method, path, query and the retired-override header in; an action or a [`Problem`] out.

use crate::{
    http::{action::percent_decode, problem::Problem},
    model::is_name,
};

/// Header that lets a download or a boot of an end-of-life or revoked version through (`true`).
pub const ALLOW_RETIRED_HEADER: &str = "kiln-allow-retired";
/// The same override as a query parameter (`allow-retired=1`).
pub const ALLOW_RETIRED_QUERY: &str = "allow-retired";

/// Which version a request names: an exact version, or a channel (`stable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    Version(semver::Version),
    Channel(String),
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Version(v) => write!(f, "{v}"),
            Self::Channel(c) => f.write_str(c),
        }
    }
}

/// A network-boot file of a version, taken from its raw disk's ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFile {
    Kernel,
    Initrd,
}

impl BootFile {
    /// Its name in `/boot/FAMILY/VERSION/NAME`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kernel => "vmlinuz",
            Self::Initrd => "initrd.img",
        }
    }
}

/// A parsed request of these surfaces. `head`: a HEAD request (headers only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAction {
    /// A file of a version's bundle (`disk.qcow2`, `sbom.spdx.json`, `disk.qcow2.sig`, …).
    Download { family: String, reference: Ref, file: String, head: bool, allow_retired: bool },
    /// The iPXE script booting a version's kernel and initrd.
    Ipxe { family: String, reference: Ref, head: bool, allow_retired: bool },
    /// The kernel or initrd of a version's default boot entry.
    BootFile { family: String, reference: Ref, file: BootFile, head: bool, allow_retired: bool },
    /// `streams/v1/index.json`.
    StreamsIndex { head: bool },
    /// `streams/v1/com.kiln:images.json`.
    StreamsProducts { head: bool },
}

/// The simplestreams content id of the catalog's images.
pub const CONTENT_ID: &str = "com.kiln:images";

/// Every route [`parse`] takes: (method, path template as `catalog/openapi.json` writes it).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/download/{family}/{version}/{path}"),
    ("HEAD", "/download/{family}/{version}/{path}"),
    ("GET", "/boot/{family}/{version}.ipxe"),
    ("HEAD", "/boot/{family}/{version}.ipxe"),
    ("GET", "/boot/{family}/{version}/vmlinuz"),
    ("HEAD", "/boot/{family}/{version}/vmlinuz"),
    ("GET", "/boot/{family}/{version}/initrd.img"),
    ("HEAD", "/boot/{family}/{version}/initrd.img"),
    ("GET", "/streams/v1/index.json"),
    ("HEAD", "/streams/v1/index.json"),
    ("GET", "/streams/v1/com.kiln:images.json"),
    ("HEAD", "/streams/v1/com.kiln:images.json"),
];

/// Whether `path` belongs to these surfaces (then [`parse`] answers for it, 404 included).
pub fn handles(path: &str) -> bool {
    ["/download/", "/boot/", "/streams/"].iter().any(|p| path.starts_with(p))
}

fn family(s: &str) -> Result<String, Problem> {
    let s = percent_decode(s, "family")?;
    if is_name(&s) {
        Ok(s)
    } else {
        Err(Problem::bad_request("family", format!("`{s}` is not a family name")))
    }
}

/// A version (`1.2.0`) or a channel name (`stable`).
fn reference(s: &str) -> Result<Ref, Problem> {
    let s = percent_decode(s, "version")?;
    if let Ok(v) = s.parse::<semver::Version>() {
        return Ok(Ref::Version(v));
    }
    if is_name(&s) && !s.starts_with(|c: char| c.is_ascii_digit()) {
        return Ok(Ref::Channel(s));
    }
    Err(Problem::bad_request("version", format!("`{s}` is neither a semantic version nor a channel name")))
}

fn truthy(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Some(true),
        "0" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// Parse one request of these surfaces; `allow_retired_header` is the `Kiln-Allow-Retired` header's value.
pub fn parse(
    method: &str,
    path: &str,
    query: Option<&str>,
    allow_retired_header: Option<&str>,
) -> Result<BootAction, Problem> {
    let mut allow_retired = match allow_retired_header.map(|h| (h, truthy(h))) {
        None => false,
        Some((_, Some(b))) => b,
        Some((h, None)) => {
            return Err(Problem::bad_request("Kiln-Allow-Retired", format!("`{h}`: true or false")))
        }
    };
    let mut query_retired = false;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k != ALLOW_RETIRED_QUERY {
            return Err(Problem::bad_request(
                &k,
                format!("unknown query parameter (known: {ALLOW_RETIRED_QUERY})"),
            ));
        }
        if query_retired {
            return Err(Problem::bad_request(ALLOW_RETIRED_QUERY, "given more than once"));
        }
        query_retired = true;
        allow_retired |=
            truthy(&v).ok_or_else(|| Problem::bad_request(ALLOW_RETIRED_QUERY, format!("`{v}`: 1 or 0")))?;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let methods = |allowed: &[&str]| -> Result<bool, Problem> {
        if allowed.contains(&method) {
            Ok(method == "HEAD")
        } else {
            Err(Problem::method_not_allowed(path, allowed))
        }
    };
    const READ: &[&str] = &["GET", "HEAD"];
    let action = match segs.as_slice() {
        ["download", f, r, file @ ..] if !file.is_empty() => {
            let head = methods(READ)?;
            let parts = file.iter().map(|s| percent_decode(s, "path")).collect::<Result<Vec<_>, _>>()?;
            if parts.iter().any(|p| p.is_empty() || p == "." || p == ".." || p.contains('/')) {
                return Err(Problem::bad_request("path", "not a path inside the bundle"));
            }
            BootAction::Download {
                family: family(f)?,
                reference: reference(r)?,
                file: parts.join("/"),
                head,
                allow_retired,
            }
        }
        ["boot", f, script] if script.ends_with(".ipxe") => {
            let head = methods(READ)?;
            let r = &script[..script.len() - ".ipxe".len()];
            BootAction::Ipxe { family: family(f)?, reference: reference(r)?, head, allow_retired }
        }
        ["boot", f, r, name @ ("vmlinuz" | "initrd.img")] => {
            let head = methods(READ)?;
            let file = if *name == "vmlinuz" { BootFile::Kernel } else { BootFile::Initrd };
            BootAction::BootFile { family: family(f)?, reference: reference(r)?, file, head, allow_retired }
        }
        ["streams", "v1", "index.json"] => {
            let head = methods(READ)?;
            if query_retired {
                return Err(Problem::bad_request(ALLOW_RETIRED_QUERY, "streams take no query parameters"));
            }
            BootAction::StreamsIndex { head }
        }
        ["streams", "v1", products] if percent_decode(products, "path")? == format!("{CONTENT_ID}.json") => {
            let head = methods(READ)?;
            if query_retired {
                return Err(Problem::bad_request(ALLOW_RETIRED_QUERY, "streams take no query parameters"));
            }
            BootAction::StreamsProducts { head }
        }
        _ => return Err(Problem::not_found(format!("no route {path}"))),
    };
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(m: &str, p: &str, q: Option<&str>) -> BootAction {
        parse(m, p, q, None).unwrap_or_else(|e| panic!("{m} {p}: {e:?}"))
    }

    fn v(s: &str) -> Ref {
        Ref::Version(s.parse().unwrap())
    }

    #[test]
    fn downloads_name_a_version_or_a_channel_and_a_bundle_file() {
        assert_eq!(
            ok("GET", "/download/debian-minimal/stable/disk.qcow2", None),
            BootAction::Download {
                family: "debian-minimal".into(),
                reference: Ref::Channel("stable".into()),
                file: "disk.qcow2".into(),
                head: false,
                allow_retired: false
            }
        );
        assert_eq!(
            ok("HEAD", "/download/a/1.2.0/report/certification.json", Some("allow-retired=1")),
            BootAction::Download {
                family: "a".into(),
                reference: v("1.2.0"),
                file: "report/certification.json".into(),
                head: true,
                allow_retired: true
            }
        );
        let retired = parse("GET", "/download/a/1.2.0/disk.raw", None, Some("true")).unwrap();
        assert!(matches!(retired, BootAction::Download { allow_retired: true, .. }));
        let p = parse("GET", "/download/a/1.2.0/../x", None, None).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("path"));
        let p = parse("GET", "/download/a/1.x/disk.raw", None, None).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("version"));
        let p = parse("GET", "/download/A/1.0.0/disk.raw", None, None).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("family"));
        assert_eq!(parse("GET", "/download/a/1.0.0", None, None).unwrap_err().status, 404);
    }

    #[test]
    fn boot_routes() {
        assert_eq!(
            ok("GET", "/boot/debian-minimal/stable.ipxe", None),
            BootAction::Ipxe {
                family: "debian-minimal".into(),
                reference: Ref::Channel("stable".into()),
                head: false,
                allow_retired: false
            }
        );
        assert!(
            matches!(ok("GET", "/boot/a/1.0.0.ipxe", None), BootAction::Ipxe { reference, .. } if reference == v("1.0.0"))
        );
        assert!(matches!(
            ok("HEAD", "/boot/a/1.0.0/initrd.img", None),
            BootAction::BootFile { file: BootFile::Initrd, head: true, .. }
        ));
        assert!(matches!(
            ok("GET", "/boot/a/stable/vmlinuz", None),
            BootAction::BootFile { file: BootFile::Kernel, .. }
        ));
        assert_eq!(parse("GET", "/boot/a/1.0.0/System.map", None, None).unwrap_err().status, 404);
    }

    #[test]
    fn streams_routes() {
        assert_eq!(ok("GET", "/streams/v1/index.json", None), BootAction::StreamsIndex { head: false });
        assert_eq!(
            ok("HEAD", "/streams/v1/com.kiln:images.json", None),
            BootAction::StreamsProducts { head: true }
        );
        assert_eq!(
            ok("GET", "/streams/v1/com.kiln%3Aimages.json", None),
            BootAction::StreamsProducts { head: false }
        );
        assert_eq!(parse("GET", "/streams/v1/other.json", None, None).unwrap_err().status, 404);
    }

    #[test]
    fn every_route_takes_only_get_and_head_and_no_unknown_query() {
        for (_, template) in ROUTES {
            let path =
                template.replace("{family}", "a").replace("{version}", "1.0.0").replace("{path}", "disk.raw");
            for m in ["GET", "HEAD"] {
                ok(m, &path, None);
            }
            for m in ["PUT", "POST", "PATCH", "DELETE"] {
                let p = parse(m, &path, None, None).unwrap_err();
                assert_eq!((p.status, p.allow.as_deref()), (405, Some("GET, HEAD")), "{m} {path}");
            }
            let p = parse("GET", &path, Some("colour=red"), None).unwrap_err();
            assert_eq!((p.status, p.field.as_deref()), (400, Some("colour")), "{path}");
        }
        let p = parse("GET", "/download/a/1.0.0/disk.raw", Some("allow-retired=maybe"), None).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("allow-retired"));
        let p = parse("GET", "/download/a/1.0.0/disk.raw", None, Some("perhaps")).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("Kiln-Allow-Retired"));
    }
}
