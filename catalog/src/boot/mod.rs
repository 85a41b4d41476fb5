//! The catalog's delivery surfaces, beside the JSON API: what provisioners, VMs and image mirrors fetch.
//!
//! - `/download/FAMILY/VERSION|CHANNEL/FILE`: any file of a version's bundle (`disk.qcow2`,
//!   `sbom.spdx.json`, …; `FILE.sig` is the bundle's `signatures/FILE.sig`), served by the shared
//!   [`crate::http::download`] (ranges, ETag, digests, HEAD), with the version's lifecycle in the headers
//!   (`Deprecation`, `Sunset`, `Warning`); an end-of-life or revoked version is 410 unless the request
//!   allows it (`Kiln-Allow-Retired: true` or `?allow-retired=1`).
//! - `/boot/FAMILY/VERSION|CHANNEL.ipxe` and `/boot/FAMILY/VERSION/{vmlinuz,initrd.img}`: network boot
//!   ([`ipxe`]), the kernel and initrd of the raw disk's default boot entry, extracted on first use.
//! - `/streams/v1/index.json` and `/streams/v1/com.kiln:images.json`: simplestreams ([`streams`]).
//!
//! Requests are parsed into typed actions first ([`action::parse`]); then they run here.

pub mod action;
pub mod ipxe;
pub mod streams;

use std::sync::Arc;

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, Response},
};

use self::action::{BootAction, BootFile, Ref, ALLOW_RETIRED_QUERY};
use crate::{
    http::{
        blocking, content_type_of,
        download::{self, Served},
        problem::Problem,
        State,
    },
    model::{Day, Timestamp, VersionRecord},
    retired::{verdict, Retired, Verdict},
    Catalog, CatalogError,
};

/// The version a reference names: itself, or where the channel points.
fn resolve(catalog: &Catalog, family: &str, reference: &Ref) -> Result<VersionRecord, CatalogError> {
    match reference {
        Ref::Version(v) => catalog.version(family, v),
        Ref::Channel(c) => {
            let f = catalog.family(family)?;
            let channel =
                f.channels.get(c).ok_or_else(|| CatalogError::not_found(format!("channel {family}@{c}")))?;
            catalog.version(family, &channel.version)
        }
    }
}

/// The lifecycle headers of a version's downloads ([`crate::retired`]), or the 410 refusing a retired one.
fn lifecycle_headers(v: &VersionRecord, today: Day, allow_retired: bool) -> Result<HeaderMap, Problem> {
    match verdict(v, today, allow_retired) {
        Verdict::Serve(headers) => {
            let mut h = HeaderMap::new();
            for (name, value) in headers {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    h.append(name, value);
                }
            }
            Ok(h)
        }
        Verdict::Refuse(Retired { why, .. }) => Err(Problem::new(
            410,
            "Gone",
            format!("{why}; to download it all the same, send `Kiln-Allow-Retired: true` or `?{ALLOW_RETIRED_QUERY}=1`"),
        )),
    }
}

/// `http://HOST` of the request (what a script's URLs start with).
fn base_url(headers: &HeaderMap) -> Result<String, Problem> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b)))
        .ok_or_else(|| {
            Problem::bad_request("Host", "a boot script needs the request's Host (host[:port])")
        })?;
    Ok(format!("http://{host}"))
}

fn boot_problem(e: &ipxe::BootError) -> Problem {
    match e {
        ipxe::BootError::Catalog(c) => Problem::from(c),
        ipxe::BootError::NoRawDisk { .. } | ipxe::BootError::Entry { .. } => {
            Problem::new(404, "Not found", crate::http::problem::chain(e))
        }
        ipxe::BootError::Io { .. } => Problem::new(500, "Internal error", crate::http::problem::chain(e)),
    }
}

fn with_headers(mut r: Response<Body>, extra: HeaderMap) -> Response<Body> {
    for (k, v) in &extra {
        r.headers_mut().append(k, v.clone());
    }
    r
}

fn document(value: &serde_json::Value, head: bool) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    text(body, "application/json", head)
}

fn text(body: Vec<u8>, content_type: &'static str, head: bool) -> Response<Body> {
    let len = body.len() as u64;
    let mut r = Response::new(if head { Body::empty() } else { Body::from(body) });
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// Run a parsed action.
pub(crate) async fn run(
    state: &State,
    action: BootAction,
    headers: &HeaderMap,
) -> Result<Response<Body>, Problem> {
    let catalog = &state.catalog;
    let today = Day::of(Timestamp::now());
    match action {
        BootAction::Download { family, reference, file, head, allow_retired } => {
            let c = Arc::clone(catalog);
            let v = blocking(move || resolve(&c, &family, &reference)).await?;
            let extra = lifecycle_headers(&v, today, allow_retired)?;
            let record = v
                .file(&file)
                .or_else(|| file.ends_with(".sig").then(|| v.file(&format!("signatures/{file}"))).flatten())
                .ok_or_else(|| Problem::not_found(format!("{} has no file {file}", v.id())))?;
            let served = Served {
                digest: record.digest.clone(),
                size: record.size,
                content_type: content_type_of(&file),
                last_modified: Some(v.published_at),
                path: None,
            };
            Ok(with_headers(download::serve(catalog, &served, head, headers).await?, extra))
        }
        BootAction::Ipxe { family, reference, head, allow_retired } => {
            let base = base_url(headers)?;
            let c = Arc::clone(catalog);
            let v = blocking(move || resolve(&c, &family, &reference)).await?;
            let extra = lifecycle_headers(&v, today, allow_retired)?;
            let (info, _) = boot_info(catalog, &v).await?;
            let suffix = if allow_retired { format!("?{ALLOW_RETIRED_QUERY}=1") } else { String::new() };
            let s = ipxe::script(&base, &v.family, &v.version, &info, &suffix);
            Ok(with_headers(text(s.into_bytes(), "text/plain; charset=utf-8", head), extra))
        }
        BootAction::BootFile { family, reference, file, head, allow_retired } => {
            let c = Arc::clone(catalog);
            let v = blocking(move || resolve(&c, &family, &reference)).await?;
            let extra = lifecycle_headers(&v, today, allow_retired)?;
            let (info, dir) = boot_info(catalog, &v).await?;
            let extracted = match file {
                BootFile::Kernel => Some(&info.kernel),
                BootFile::Initrd => info.initrd.as_ref(),
            }
            .ok_or_else(|| {
                Problem::not_found(format!("{}'s boot entry {} has no initrd", v.id(), info.entry))
            })?;
            let served = Served {
                digest: extracted.digest.clone(),
                size: extracted.size,
                content_type: "application/octet-stream",
                last_modified: Some(v.published_at),
                path: Some(dir.join(file.name())),
            };
            Ok(with_headers(download::serve(catalog, &served, head, headers).await?, extra))
        }
        BootAction::StreamsIndex { head } | BootAction::StreamsProducts { head } => {
            let is_index = matches!(action, BootAction::StreamsIndex { .. });
            let c = Arc::clone(catalog);
            let families = blocking(move || {
                let names = c.meta().families()?;
                names.iter().map(|f| c.family(&f.name)).collect::<Result<Vec<_>, _>>()
            })
            .await?;
            let refs: Vec<&crate::model::FamilyState> = families.iter().map(|f| &**f).collect();
            let doc = if is_index { streams::index(&refs, today) } else { streams::products(&refs, today) };
            Ok(document(&doc, head))
        }
    }
}

async fn boot_info(
    catalog: &Arc<Catalog>,
    v: &VersionRecord,
) -> Result<(ipxe::BootInfo, std::path::PathBuf), Problem> {
    let c = Arc::clone(catalog);
    let v = v.clone();
    match tokio::task::spawn_blocking(move || ipxe::boot_files(&c, &v)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(boot_problem(&e)),
        Err(e) => Err(Problem::new(500, "Internal error", e.to_string())),
    }
}
