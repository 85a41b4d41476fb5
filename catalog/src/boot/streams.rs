//! The catalog as simplestreams (the format cloud image mirrors and `sstream-query` read): an index
//! (`streams/v1/index.json`, `index:1.0`) naming one products document (`streams/v1/com.kiln:images.json`,
//! `products:1.0`). Each family is a product; each live version (not end of life, not revoked, on the day
//! asked) lists its artifacts as items (`ftype` raw, qcow2, oci, spdx; `path` under `download/` relative to
//! the catalog's root, `size`, `sha256`), its end of life as `support_eol` and the channels pointing at it
//! as `aliases`. Pure: families in, JSON out. `updated` is the newest publication, so the documents change
//! only with the catalog (never with the clock).

use serde_json::{json, Map, Value};

use super::action::CONTENT_ID;
use crate::{
    http::download::http_date,
    model::{ArtifactKind, Day, FamilyState, LifecycleState, Timestamp, VersionRecord},
};

/// Where the products document is, relative to the catalog's root.
pub fn products_path() -> String {
    format!("streams/v1/{CONTENT_ID}.json")
}

/// The architecture of kiln's images (x86_64 disks booted under OVMF).
const ARCH: &str = "amd64";

/// The product name of a family.
pub fn product_name(family: &str) -> String {
    format!("{CONTENT_ID}:{family}:{ARCH}")
}

fn updated(families: &[&FamilyState]) -> String {
    let newest = families.iter().flat_map(|f| f.versions.iter().map(|v| v.published_at)).max();
    http_date(newest.unwrap_or(Timestamp(0))).replace("GMT", "+0000")
}

fn live(v: &VersionRecord, today: Day) -> bool {
    !matches!(v.lifecycle.state_on(today), LifecycleState::EndOfLife | LifecycleState::Revoked)
}

/// The items of a version: its downloadable artifacts.
fn items(v: &VersionRecord) -> Map<String, Value> {
    let mut items = Map::new();
    for a in &v.artifacts {
        let (ftype, path) = match a.kind {
            ArtifactKind::Raw => ("raw", a.path.clone()),
            ArtifactKind::Qcow2 => ("qcow2", a.path.clone()),
            // The OCI image by its image manifest, a file of the layout.
            ArtifactKind::Oci => {
                ("oci", format!("{}/blobs/sha256/{}", a.path, a.digest.trim_start_matches("sha256:")))
            }
            ArtifactKind::Sbom => ("spdx", a.path.clone()),
            _ => continue,
        };
        let Some(file) = v.file(&path) else { continue };
        items.insert(
            ftype.to_owned(),
            json!({
                "ftype": ftype,
                "path": format!("download/{}/{}/{}", v.family, v.version, path),
                "size": file.size,
                "sha256": file.digest.trim_start_matches("sha256:"),
            }),
        );
    }
    items
}

/// The products document (`products:1.0`) of `families` on `today`.
pub fn products(families: &[&FamilyState], today: Day) -> Value {
    let mut products = Map::new();
    for f in families {
        let mut versions = Map::new();
        for v in f.versions.iter().filter(|v| live(v, today)) {
            let items = items(v);
            if items.is_empty() {
                continue;
            }
            let aliases: Vec<&str> =
                f.channels.values().filter(|c| c.version == v.version).map(|c| c.name.as_str()).collect();
            let mut entry = json!({
                "version": v.version.to_string(),
                "pubname": format!("{}-{}", v.family, v.version),
                "state": v.lifecycle.state_on(today),
                "published_at": v.published_at,
                "items": items,
            });
            if !aliases.is_empty() {
                entry["aliases"] = aliases.join(",").into();
            }
            if let Some(eol) = v.lifecycle.end_of_life_on {
                entry["support_eol"] = eol.to_string().into();
            }
            if let Some(d) = v.lifecycle.deprecated_on {
                entry["deprecated_on"] = d.to_string().into();
            }
            versions.insert(v.version.to_string(), entry);
        }
        if versions.is_empty() {
            continue;
        }
        let mut product = json!({
            "arch": ARCH,
            "os": "debian",
            "release": f.name,
            "aliases": f.name,
            "versions": versions,
        });
        if let Some(stable) = f.channels.get("stable") {
            product["version"] = stable.version.to_string().into();
            if let Some(eol) = f.version(&stable.version).and_then(|v| v.lifecycle.end_of_life_on) {
                product["support_eol"] = eol.to_string().into();
            }
        }
        products.insert(product_name(&f.name), product);
    }
    json!({
        "content_id": CONTENT_ID,
        "datatype": "image-downloads",
        "format": "products:1.0",
        "updated": updated(families),
        "products": products,
    })
}

/// The index (`index:1.0`) naming the products document and what it holds.
pub fn index(families: &[&FamilyState], today: Day) -> Value {
    let products = products(families, today);
    let names: Vec<&String> =
        products["products"].as_object().map(|p| p.keys().collect()).unwrap_or_default();
    json!({
        "format": "index:1.0",
        "updated": updated(families),
        "index": {
            CONTENT_ID: {
                "datatype": "image-downloads",
                "format": "products:1.0",
                "path": products_path(),
                "updated": updated(families),
                "products": names,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ArtifactRecord, Channel, FileRecord, Lifecycle, LifecyclePolicy};

    fn version(v: &str, lifecycle: Lifecycle, at: i64) -> VersionRecord {
        let digest = |s: &str| format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(s)));
        let files = vec![
            FileRecord { path: "disk.qcow2".into(), digest: digest(&format!("q{v}")), size: 10 },
            FileRecord { path: "disk.raw".into(), digest: digest(&format!("r{v}")), size: 20 },
            FileRecord { path: "manifest.json".into(), digest: digest(&format!("m{v}")), size: 5 },
        ];
        VersionRecord {
            family: "web".into(),
            version: v.parse().unwrap(),
            manifest_digest: files[2].digest.clone(),
            image_digest: None,
            published_at: Timestamp(at),
            published_by: "ci".into(),
            signed_by: "key".into(),
            parent: None,
            claimed: vec![],
            certified: vec![],
            artifacts: vec![
                ArtifactRecord {
                    kind: ArtifactKind::Raw,
                    path: "disk.raw".into(),
                    digest: files[1].digest.clone(),
                    size: 20,
                },
                ArtifactRecord {
                    kind: ArtifactKind::Qcow2,
                    path: "disk.qcow2".into(),
                    digest: files[0].digest.clone(),
                    size: 10,
                },
            ],
            files,
            policy: LifecyclePolicy::default(),
            lifecycle,
        }
    }

    #[test]
    fn live_versions_are_products_with_their_items_aliases_and_end_of_life() {
        let day = |s: &str| s.parse::<Day>().unwrap();
        let supported =
            Lifecycle { supported: true, end_of_life_on: Some(day("2028-01-01")), ..Default::default() };
        let eol = Lifecycle { end_of_life_on: Some(day("2026-01-01")), ..Default::default() };
        let mut f = FamilyState { name: "web".into(), ..Default::default() };
        f.versions = vec![version("0.9.0", eol, 100), version("1.0.0", supported, 200_000)];
        f.channels.insert(
            "stable".into(),
            Channel { name: "stable".into(), version: "1.0.0".parse().unwrap(), history: vec![] },
        );
        let doc = products(&[&f], day("2027-01-01"));
        let p = &doc["products"]["com.kiln:images:web:amd64"];
        assert_eq!(p["version"], "1.0.0");
        assert_eq!(p["support_eol"], "2028-01-01");
        let versions = p["versions"].as_object().unwrap();
        assert_eq!(versions.keys().collect::<Vec<_>>(), ["1.0.0"], "the end-of-life version is left out");
        let v = &versions["1.0.0"];
        assert_eq!(v["aliases"], "stable");
        assert_eq!(v["support_eol"], "2028-01-01");
        assert_eq!(v["items"]["qcow2"]["path"], "download/web/1.0.0/disk.qcow2");
        assert_eq!(v["items"]["raw"]["size"], 20);
        assert_eq!(
            format!("sha256:{}", v["items"]["raw"]["sha256"].as_str().unwrap()),
            f.versions[1].files[1].digest
        );
        assert_eq!(doc["updated"], "Sat, 03 Jan 1970 07:33:20 +0000", "the newest publication");
        let idx = index(&[&f], day("2027-01-01"));
        assert_eq!(idx["index"]["com.kiln:images"]["path"], "streams/v1/com.kiln:images.json");
        assert_eq!(idx["index"]["com.kiln:images"]["products"], json!(["com.kiln:images:web:amd64"]));
    }
}
