//! The catalog's delivery surfaces over a live server and real signed fixture bundles: downloads by version
//! and channel with their identity headers (ETag, Digest, Repr-Digest, Last-Modified), byte ranges, HEAD and
//! conditional requests, the same on the JSON API's files and blobs; lifecycle headers of deprecated
//! versions and the 410 of retired ones unless asked; iPXE scripts whose kernel and initrd come from the
//! bootable disk's ESP; simplestreams documents whose items download with their sha256, read by
//! `sstream-query` when it is installed.

mod support;

use base64::Engine as _;
use serde_json::{json, Value};
use support::{sha256, Answer, Bundle, BundleSpec, Bundles, Server, DISK, SBOM};

/// `method path` with extra request headers.
fn call(s: &Server, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().http_status_as_error(false).allow_non_standard_methods(true).build(),
    );
    let mut req = ureq::http::Request::builder().method(method).uri(format!("{}{path}", s.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Answer::read(method, agent.run(req.body(()).unwrap()).unwrap_or_else(|e| panic!("{method} {path}: {e}")))
}

fn get(s: &Server, path: &str, headers: &[(&str, &str)]) -> Answer {
    call(s, "GET", path, headers)
}

fn b64_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

fn publish(s: &Server, b: &Bundle) {
    let a = s.publish_raw(b);
    assert_eq!(a.status, 201, "{}", a.text());
}

fn promote(s: &Server, family: &str, channel: &str, version: &str) {
    let a = s.http.send(
        "PUT",
        &format!("/api/v1/families/{family}/channels/{channel}"),
        Some(&s.admin_token),
        &json!({ "version": version }),
    );
    assert_eq!(a.status, 200, "{}", a.text());
}

fn lifecycle(s: &Server, family: &str, version: &str, change: Value) {
    let a = s.http.send(
        "PATCH",
        &format!("/api/v1/families/{family}/versions/{version}/lifecycle"),
        Some(&s.admin_token),
        &change,
    );
    assert_eq!(a.status, 200, "{}", a.text());
}

/// Every header a download of `bytes` carries, whatever the range.
fn assert_identity(a: &Answer, bytes: &[u8]) {
    let digest = sha256(bytes);
    assert_eq!(a.header("etag"), Some(format!("\"{digest}\"").as_str()), "{:?}", a.headers);
    assert_eq!(a.header("digest"), Some(format!("sha-256={}", b64_sha256(bytes)).as_str()));
    assert_eq!(a.header("repr-digest"), Some(format!("sha-256=:{}:", b64_sha256(bytes)).as_str()));
    assert_eq!(a.header("accept-ranges"), Some("bytes"));
}

#[test]
fn downloads_carry_digests_and_honour_ranges_head_and_conditionals() {
    let bundles = Bundles::new();
    let s = Server::for_bundles(&bundles);
    let b = bundles.good(&BundleSpec::new("web", "1.0.0").disk_size(300_000));
    publish(&s, &b);
    let disk = b.read(DISK);
    let url = "/download/web/1.0.0/disk.raw";

    let a = get(&s, url, &[]);
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.body == disk, "the disk as published");
    assert_identity(&a, &disk);
    assert_eq!(a.header("content-length"), Some("300000"));
    assert_eq!(a.content_type(), "application/octet-stream");
    let last_modified = a.header("last-modified").unwrap().to_owned();
    assert!(last_modified.ends_with(" GMT") && last_modified.len() == 29, "{last_modified}");
    assert_eq!(a.header("deprecation"), None, "a supported version is not deprecated");

    let h = call(&s, "HEAD", url, &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("300000"), "HEAD says the size: {:?}", h.headers);
    assert_identity(&h, &disk);

    // One range: 206 with that slice; the digests stay those of the whole file.
    for (range, from, to) in [
        ("bytes=100-199", 100, 200),
        ("bytes=299990-", 299_990, 300_000),
        ("bytes=-10", 299_990, 300_000),
        ("bytes=0-999999", 0, 300_000),
    ] {
        let a = get(&s, url, &[("Range", range)]);
        assert_eq!(a.status, 206, "{range}: {}", a.text());
        assert!(a.body == disk[from..to], "{range}");
        assert_eq!(
            a.header("content-range"),
            Some(format!("bytes {from}-{}/300000", to - 1).as_str()),
            "{range}"
        );
        assert_eq!(a.header("content-length"), Some((to - from).to_string().as_str()));
        assert_identity(&a, &disk);
    }
    let h = call(&s, "HEAD", url, &[("Range", "bytes=10-19")]);
    assert_eq!((h.status, h.header("content-length")), (206, Some("10")));
    // Outside the file or malformed: 416 naming the size.
    for range in ["bytes=300000-", "bytes=abc", "bytes=9-3"] {
        let a = get(&s, url, &[("Range", range)]);
        a.problem(416);
        assert_eq!(a.header("content-range"), Some("bytes */300000"), "{range}");
    }
    // Several ranges, or another unit: the whole file.
    assert_eq!(get(&s, url, &[("Range", "bytes=0-1,5-6")]).status, 200);

    // Conditionals: a current copy is 304, If-Range only ranges a current copy.
    let etag = format!("\"{}\"", sha256(&disk));
    let a = get(&s, url, &[("If-None-Match", &etag)]);
    assert_eq!((a.status, a.body.len()), (304, 0));
    assert_eq!(a.header("etag"), Some(etag.as_str()));
    assert_eq!(get(&s, url, &[("If-None-Match", "\"sha256:other\"")]).status, 200);
    let a = get(&s, url, &[("Range", "bytes=0-9"), ("If-Range", &etag)]);
    assert!(a.status == 206 && a.body == disk[..10]);
    let a = get(&s, url, &[("Range", "bytes=0-9"), ("If-Range", "\"sha256:old\"")]);
    assert!(a.status == 200 && a.body == disk, "a changed file comes whole");
    let a = get(&s, url, &[("Range", "bytes=0-9"), ("If-Range", &last_modified)]);
    assert_eq!(a.status, 206, "the Last-Modified date validates too");

    // By channel; any bundle file; the signature beside its file.
    promote(&s, "web", "stable", "1.0.0");
    let a = get(&s, "/download/web/stable/disk.raw", &[("Range", "bytes=5-9")]);
    assert!(a.status == 206 && a.body == disk[5..10]);
    let a = get(&s, &format!("/download/web/stable/{SBOM}"), &[]);
    assert!(a.status == 200 && a.body == b.read(SBOM));
    assert_eq!(a.content_type(), "application/json");
    let a = get(&s, "/download/web/1.0.0/disk.raw.sig", &[]);
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.body == b.read("signatures/disk.raw.sig"));
    assert_eq!(get(&s, "/download/web/1.0.0/signatures/disk.raw.sig", &[]).body, a.body);
    get(&s, "/download/web/1.0.0/disk.qcow2", &[]).problem(404);
    get(&s, "/download/web/2.0.0/disk.raw", &[]).problem(404);
    get(&s, "/download/web/candidate/disk.raw", &[]).problem(404);
    let p = get(&s, "/download/web/1.0.0/disk.raw?colour=red", &[]).problem(400);
    assert_eq!(p["field"], "colour");
    let a = call(&s, "POST", url, &[]);
    a.problem(405);
    assert_eq!(a.header("allow"), Some("GET, HEAD"));
}

#[test]
fn the_api_serves_files_and_blobs_the_same_way() {
    let bundles = Bundles::new();
    let s = Server::for_bundles(&bundles);
    let b = bundles.good(&BundleSpec::new("web", "1.0.0").disk_size(100_000));
    publish(&s, &b);
    let disk = b.read(DISK);
    let digest = sha256(&disk);
    for url in
        [format!("/api/v1/families/web/versions/1.0.0/files/{DISK}"), format!("/api/v1/blobs/{digest}")]
    {
        let a = get(&s, &url, &[("Range", "bytes=1000-1999")]);
        assert_eq!(a.status, 206, "{url}: {}", a.text());
        assert!(a.body == disk[1000..2000], "{url}");
        assert_eq!(a.header("content-range"), Some("bytes 1000-1999/100000"), "{url}");
        assert_identity(&a, &disk);
        let h = call(&s, "HEAD", &url, &[]);
        assert_eq!((h.status, h.header("content-length")), (200, Some("100000")), "{url}");
        assert_identity(&h, &disk);
        assert_eq!(get(&s, &url, &[("If-None-Match", &format!("\"{digest}\""))]).status, 304, "{url}");
        assert_eq!(get(&s, &url, &[("Range", "bytes=100000-")]).status, 416, "{url}");
    }
    // A version's files are dated by its publication; a bare blob is not.
    let file = call(&s, "HEAD", &format!("/api/v1/families/web/versions/1.0.0/files/{DISK}"), &[]);
    assert!(file.header("last-modified").is_some());
    assert!(call(&s, "HEAD", &format!("/api/v1/blobs/{digest}"), &[]).header("last-modified").is_none());
    assert_eq!(call(&s, "HEAD", &format!("/api/v1/blobs/{}", sha256(b"absent")), &[]).status, 404);
}

#[test]
fn deprecated_downloads_say_so_and_retired_ones_are_refused_unless_asked() {
    let bundles = Bundles::new();
    let s = Server::for_bundles(&bundles);
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        publish(&s, &bundles.good(&BundleSpec::new("web", v)));
    }
    lifecycle(&s, "web", "1.0.0", json!({"deprecated_on": "2000-01-01", "end_of_life_on": "2999-01-01"}));
    lifecycle(&s, "web", "1.1.0", json!({"deprecated_on": "2000-01-01", "end_of_life_on": "2000-02-01"}));
    lifecycle(&s, "web", "1.2.0", json!({"revoke": "CVE-2099-1"}));

    let a = get(&s, "/download/web/1.0.0/disk.raw", &[]);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("deprecation"), Some("@946684800"), "RFC 9745: 2000-01-01 as a date");
    assert_eq!(a.header("sunset"), Some("Tue, 01 Jan 2999 00:00:00 GMT"), "RFC 8594");
    let w = a.header("warning").unwrap();
    assert!(
        w.starts_with("299 ") && w.contains("web@1.0.0 is deprecated") && w.contains("2999-01-01"),
        "{w}"
    );
    assert!(call(&s, "HEAD", "/download/web/1.0.0/disk.raw", &[]).header("deprecation").is_some());

    for (v, why) in [("1.1.0", "end of life on 2000-02-01"), ("1.2.0", "revoked: CVE-2099-1")] {
        let url = format!("/download/web/{v}/disk.raw");
        let p = get(&s, &url, &[]).problem(410);
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(why) && detail.contains("Kiln-Allow-Retired"), "{detail}");
        assert_eq!(call(&s, "HEAD", &url, &[]).status, 410);
        for a in [
            get(&s, &url, &[("Kiln-Allow-Retired", "true")]),
            get(&s, &format!("{url}?allow-retired=1"), &[]),
        ] {
            assert_eq!(a.status, 200, "{v}: {}", a.text());
            assert!(a.header("warning").is_some_and(|w| w.contains("served as asked")), "{:?}", a.headers);
        }
        assert_eq!(get(&s, &url, &[("Kiln-Allow-Retired", "false")]).status, 410);
    }
    // The JSON API is for managing the catalog: it still hands out what it holds.
    assert_eq!(get(&s, "/api/v1/families/web/versions/1.2.0/files/disk.raw", &[]).status, 200);
}

#[test]
fn ipxe_scripts_boot_the_kernel_and_initrd_of_the_disks_default_entry() {
    let bundles = Bundles::new();
    let s = Server::for_bundles(&bundles);
    let spec = BundleSpec::new("web", "1.0.0").bootable();
    let newer = BundleSpec::new("web", "1.1.0").bootable().salt("newer");
    publish(&s, &bundles.good(&spec));
    publish(&s, &bundles.good(&newer));
    publish(&s, &bundles.good(&BundleSpec::new("web", "2.0.0")));
    promote(&s, "web", "stable", "1.0.0");

    let a = get(&s, "/boot/web/stable.ipxe", &[]);
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.content_type().starts_with("text/plain"));
    let script = a.text();
    let lines: Vec<&str> = script.lines().filter(|l| !l.starts_with('#') || l.starts_with("#!")).collect();
    let base = s.url.clone();
    assert_eq!(
        lines,
        [
            "#!ipxe".to_owned(),
            format!("kernel {base}/boot/web/1.0.0/vmlinuz initrd=initrd.img {}", spec.boot_options()),
            format!("initrd {base}/boot/web/1.0.0/initrd.img"),
            "boot".to_owned(),
        ],
        "{script}"
    );
    // What the script fetches is the default entry's kernel and initrd, as files with digests and ranges.
    let kernel = get(&s, "/boot/web/1.0.0/vmlinuz", &[]);
    assert_eq!(kernel.status, 200, "{}", kernel.text());
    assert!(kernel.body == spec.kernel_bytes(), "the default entry's kernel, not the older one");
    assert_identity(&kernel, &spec.kernel_bytes());
    let initrd = get(&s, "/boot/web/1.0.0/initrd.img", &[("Range", "bytes=0-99")]);
    assert!(initrd.status == 206 && initrd.body == spec.initrd_bytes()[..100]);
    let h = call(&s, "HEAD", "/boot/web/stable/initrd.img", &[]);
    assert_eq!(h.header("content-length"), Some(spec.initrd_bytes().len().to_string().as_str()));
    // Extracted once into the cache, keyed by the disk's digest.
    let cache = s.data.join("boot-cache");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);

    // A version by number; the channel moved: the script follows it.
    let a = get(&s, "/boot/web/1.1.0.ipxe", &[]);
    assert!(a.text().contains(&format!("{base}/boot/web/1.1.0/vmlinuz")), "{}", a.text());
    assert!(get(&s, "/boot/web/1.1.0/vmlinuz", &[]).body == newer.kernel_bytes());
    promote(&s, "web", "stable", "1.1.0");
    assert!(get(&s, "/boot/web/stable.ipxe", &[]).text().contains("/boot/web/1.1.0/initrd.img"));
    // The URLs are the request's host's.
    let a = get(&s, "/boot/web/stable.ipxe", &[("Host", "10.0.2.2:8080")]);
    assert!(a.text().contains("kernel http://10.0.2.2:8080/boot/web/1.1.0/vmlinuz "), "{}", a.text());

    // An image without a bootable raw disk cannot be booted; retired versions need the override, which
    // the script passes on.
    let p = get(&s, "/boot/web/2.0.0.ipxe", &[]).problem(404);
    assert!(p["detail"].as_str().unwrap().contains("web@2.0.0"), "{p}");
    lifecycle(&s, "web", "1.0.0", json!({"revoke": "broken"}));
    get(&s, "/boot/web/1.0.0.ipxe", &[]).problem(410);
    get(&s, "/boot/web/1.0.0/vmlinuz", &[]).problem(410);
    let a = get(&s, "/boot/web/1.0.0.ipxe?allow-retired=1", &[]);
    assert!(a.text().contains("/boot/web/1.0.0/vmlinuz?allow-retired=1 "), "{}", a.text());
    assert_eq!(get(&s, "/boot/web/1.0.0/vmlinuz?allow-retired=1", &[]).status, 200);

    // gc sweeps the cache: the revoked version's files go (and a crashed extraction's folder), the
    // bootable version's stay; booting the revoked one with the override extracts it again.
    let folders = || {
        let mut names: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(folders().len(), 2, "{:?}", folders());
    std::fs::create_dir(cache.join(".0123abcd.1.1")).unwrap();
    let report = s.catalog.gc(std::time::Duration::ZERO).unwrap();
    assert_eq!(report.boot_cache_removed, 2, "{report:?}");
    let kept = folders();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(get(&s, "/boot/web/1.1.0/vmlinuz", &[]).body == newer.kernel_bytes());
    assert_eq!(folders(), kept, "served from the cache kept");
    assert!(get(&s, "/boot/web/1.0.0/vmlinuz?allow-retired=1", &[]).body == spec.kernel_bytes());
    assert_eq!(folders().len(), 2);
}

#[test]
fn simplestreams_list_live_versions_whose_items_download_with_their_sha256() {
    let bundles = Bundles::new();
    let s = Server::for_bundles(&bundles);
    let old = bundles.good(&BundleSpec::new("web", "0.9.0"));
    let b = bundles.good(&BundleSpec::new("web", "1.0.0"));
    publish(&s, &old);
    publish(&s, &b);
    publish(&s, &bundles.good(&BundleSpec::new("base", "3.0.0")));
    promote(&s, "web", "stable", "1.0.0");
    lifecycle(&s, "web", "1.0.0", json!({"end_of_life_on": "2999-06-01"}));
    lifecycle(&s, "web", "0.9.0", json!({"revoke": "CVE"}));

    let index = get(&s, "/streams/v1/index.json", &[]);
    assert_eq!(index.status, 200);
    let index = index.json();
    assert_eq!(index["format"], "index:1.0");
    let entry = &index["index"]["com.kiln:images"];
    assert_eq!(entry["format"], "products:1.0");
    assert_eq!(entry["products"], json!(["com.kiln:images:base:amd64", "com.kiln:images:web:amd64"]));

    let a = get(&s, &format!("/{}", entry["path"].as_str().unwrap()), &[]);
    assert_eq!(a.status, 200, "{}", a.text());
    let doc = a.json();
    assert_eq!(
        (doc["format"].as_str(), doc["content_id"].as_str()),
        (Some("products:1.0"), Some("com.kiln:images"))
    );
    let web = &doc["products"]["com.kiln:images:web:amd64"];
    assert_eq!(web["version"], "1.0.0", "the stable version");
    let versions: Vec<&String> = web["versions"].as_object().unwrap().keys().collect();
    assert_eq!(versions, ["1.0.0"], "the revoked version is left out");
    let v = &web["versions"]["1.0.0"];
    assert_eq!(v["support_eol"], "2999-06-01");
    assert_eq!(v["aliases"], "stable");
    let raw = &v["items"]["raw"];
    assert_eq!(raw["path"], "download/web/1.0.0/disk.raw");
    assert_eq!(raw["size"], b.read(DISK).len());
    // Each item downloads from the catalog's root with the sha256 it lists.
    for (ftype, item) in v["items"].as_object().unwrap() {
        let a = get(&s, &format!("/{}", item["path"].as_str().unwrap()), &[]);
        assert_eq!(a.status, 200, "{ftype}");
        assert_eq!(sha256(&a.body), format!("sha256:{}", item["sha256"].as_str().unwrap()), "{ftype}");
        assert_eq!(a.body.len() as u64, item["size"].as_u64().unwrap(), "{ftype}");
    }
    assert_eq!(call(&s, "HEAD", "/streams/v1/index.json", &[]).status, 200);

    // The simplestreams client reads it too.
    let Some(query) = sstream_query() else {
        eprintln!("SKIP sstream-query: not installed (scripts/lib.sh installs it)");
        return;
    };
    let o = std::process::Command::new(&query)
        .args(["--json", &format!("{}/streams/v1/index.json", s.url), "release=web"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let items: Value = serde_json::from_slice(&o.stdout).expect("sstream-query --json prints JSON");
    let raw = items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ftype"] == "raw")
        .unwrap_or_else(|| panic!("no raw item: {items:#}"));
    assert_eq!(raw["version"], "1.0.0", "{raw:#}");
    assert_eq!(format!("sha256:{}", raw["sha256"].as_str().unwrap()), sha256(&b.read(DISK)));
    assert_eq!(raw["item_url"], format!("{}/download/web/1.0.0/disk.raw", s.url));
    assert!(items.as_array().unwrap().iter().all(|i| i["release"] == "web"), "{items:#}");
}

/// `sstream-query` on PATH or where scripts/lib.sh installs it.
fn sstream_query() -> Option<std::path::PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("sstream-query"));
    on_path
        .chain([std::path::PathBuf::from("/opt/kiln-tools/simplestreams/bin/sstream-query")])
        .find(|p| p.is_file())
}
