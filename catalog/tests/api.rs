//! The catalog's HTTP API end to end, over real signed bundles (no image build) and a live server:
//! publishing rules, release notes, promotion and lifecycle with their audit, ancestry, resolve, tokens and
//! scopes, and the errors a client gets.

mod support;

use std::collections::BTreeSet;

use kiln_catalog::{
    http::ServeOptions,
    model::{Day, ReleaseNotes, Timestamp},
};
use serde_json::{json, Value};
use support::{sha256, BundleSpec, Bundles, Server, DISK};

fn v(s: &str) -> semver::Version {
    s.parse().unwrap()
}

fn today() -> String {
    Day::of(Timestamp::now()).to_string()
}

/// `at` is an RFC 3339 time within a few minutes of now.
fn assert_recent(at: &Value) {
    let t: Timestamp = at.as_str().unwrap_or_else(|| panic!("not a time: {at}")).parse().unwrap();
    let now = Timestamp::now().0;
    assert!((now - 300..=now + 5).contains(&t.0), "{at} is not now");
}

fn entries<'a>(audit: &'a [Value], action: &str) -> Vec<&'a Value> {
    audit.iter().filter(|e| e["action"] == action).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Publishing.

#[test]
fn publishing_twice_changes_nothing_and_a_version_is_one_image() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let bundle = b.good(&BundleSpec::new("web", "1.0.0"));

    let first = s.publish_raw(&bundle);
    assert_eq!(first.status, 201, "{}", first.text());
    let first = first.json();
    assert_eq!(first["created"], true);
    let record = first["version"].clone();
    assert_eq!(record["manifest_digest"], bundle.manifest_digest());
    assert_eq!(record["signed_by"], b.trusted_public().fingerprint());
    assert_eq!(record["certified"], json!(["base-os@1.0.0"]));
    assert_eq!(record["claimed"], json!(["base-os@^1"]));
    assert_eq!(record["published_by"], "token:admin");
    assert_eq!(record["state"], "candidate");
    assert_recent(&record["published_at"]);

    // What was published is served back byte for byte.
    let m = s.http.get("/api/v1/families/web/versions/1.0.0/manifest", None);
    assert_eq!(m.status, 200);
    assert_eq!(m.body, bundle.read("manifest.json"));
    assert_eq!(m.header("docker-content-digest"), Some(bundle.manifest_digest().as_str()));
    let disk = s.http.get(&format!("/api/v1/families/web/versions/1.0.0/files/{DISK}"), None);
    assert_eq!(disk.status, 200);
    assert_eq!(disk.body, bundle.read(DISK));
    let sig = s.http.get("/api/v1/families/web/versions/1.0.0/files/signatures/manifest.json.sig", None);
    assert_eq!((sig.status, sig.body), (200, bundle.read("signatures/manifest.json.sig")));
    let got = s.http.get("/api/v1/families/web/versions/1.0.0", None).json();
    assert_eq!(got["state"], "candidate");
    assert_eq!(got["manifest_digest"], record["manifest_digest"]);

    let blobs = s.blobs();
    let audit = s.audit();

    // The same bundle again, uploads included: 200, nothing created, nothing changed.
    let again = s.publish_raw(&bundle);
    assert_eq!(again.status, 200, "{}", again.text());
    let again = again.json();
    assert_eq!(again["created"], false);
    assert_eq!(again["version"], record, "the stored record, unchanged");
    // And through the client, which uploads only what the catalog lacks.
    let outcome = s.admin().publish(&bundle.dir, Vec::new(), &kiln_catalog::client::NoProgress).unwrap();
    assert!(!outcome.created);
    assert_eq!(s.blobs(), blobs);
    assert_eq!(s.audit(), audit);
    assert_eq!(entries(&audit, "publish").len(), 1);
    let publish = entries(&audit, "publish")[0];
    assert_eq!((&publish["family"], &publish["version"]), (&json!("web"), &json!("1.0.0")));
    assert_eq!(publish["detail"]["manifest_digest"], bundle.manifest_digest());

    // Another image under the same version: refused, the catalog as it was.
    let other = b.good(&BundleSpec::new("web", "1.0.0").salt("rebuilt"));
    assert_ne!(other.manifest_digest(), bundle.manifest_digest());
    let p = s.publish_raw(&other).problem(409);
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("web@1.0.0 is already published as another image"), "{detail}");
    assert!(
        detail.contains(&bundle.manifest_digest()) && detail.contains(&other.manifest_digest()),
        "{detail}"
    );
    let after = s.http.get("/api/v1/families/web/versions/1.0.0", None).json();
    assert_eq!(after["manifest_digest"], bundle.manifest_digest());
    let disk = s.http.get(&format!("/api/v1/families/web/versions/1.0.0/files/{DISK}"), None);
    assert_eq!(disk.body, bundle.read(DISK));
    let versions = s.http.get("/api/v1/families/web/versions", None).json();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    assert_eq!(s.audit(), audit);
}

#[test]
fn concurrent_publishes_of_one_version_record_one_image() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let one = b.good(&BundleSpec::new("web", "1.0.0").salt("one"));
    let two = b.good(&BundleSpec::new("web", "1.0.0").salt("two"));
    s.upload(&one, &s.admin_token);
    s.upload(&two, &s.admin_token);
    let answers: Vec<(String, u16)> = std::thread::scope(|scope| {
        let handles: Vec<_> = [&one, &two, &one, &two, &one, &two]
            .into_iter()
            .map(|bundle| {
                let (url, token) = (s.url.clone(), s.admin_token.clone());
                scope.spawn(move || {
                    let http = support::Http::new(&url);
                    let a =
                        http.send("POST", "/api/v1/publish", Some(&token), &json!({"files": bundle.files()}));
                    (bundle.manifest_digest(), a.status)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: Vec<&(String, u16)> = answers.iter().filter(|(_, status)| *status == 201).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let winner = &created[0].0;
    for (digest, status) in &answers {
        let want = if digest == winner { [200, 201] } else { [409, 409] };
        assert!(want.contains(status), "{answers:?}");
    }
    let got = s.http.get("/api/v1/families/web/versions/1.0.0", None).json();
    assert_eq!(&got["manifest_digest"], winner);
    assert_eq!(entries(&s.audit(), "publish").len(), 1);
    assert!(!s.data_files().iter().any(|(p, _)| p.starts_with("staging/")));
}

#[test]
fn bundles_that_are_not_signed_trusted_certified_or_intact_are_rejected() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let spec = BundleSpec::new("web", "1.0.0");
    let cases = [
        ("unsigned", b.unsigned(&spec), vec!["does not verify", "signatures/manifest.json.sig is missing"]),
        ("untrusted key", b.untrusted(&spec), vec!["not signed by a key this catalog trusts"]),
        (
            "failed certification",
            b.good(&spec.clone().failing()),
            vec!["web 1.0.0 did not pass certification", "report/certification.json"],
        ),
        (
            "changed after signing",
            b.changed_after_signing(&spec),
            vec!["does not verify", DISK, "does not match"],
        ),
    ];
    for (what, bundle, needles) in cases {
        let p = s.publish_raw(&bundle).problem(422);
        let detail = p["detail"].as_str().unwrap();
        for n in needles {
            assert!(detail.contains(n), "{what}: `{n}` not in: {detail}");
        }
    }
    // Nothing recorded: no family, no version, no publish in the audit log, no staging left.
    assert_eq!(s.http.get("/api/v1/families", None).json(), json!({"families": []}));
    s.http.get("/api/v1/families/web", None).problem(404);
    s.http.get("/api/v1/families/web/versions/1.0.0", None).problem(404);
    assert!(entries(&s.audit(), "publish").is_empty());
    assert!(!s.data_files().iter().any(|(p, _)| p.starts_with("staging/")));
    // The same catalog takes the good bundle.
    assert_eq!(s.publish_raw(&b.good(&spec)).status, 201);
}

#[test]
fn a_catalog_trusting_no_key_publishes_nothing() {
    let b = Bundles::new();
    let s = Server::start(&[], ServeOptions::default());
    let p = s.publish_raw(&b.good(&BundleSpec::new("web", "1.0.0"))).problem(422);
    assert!(p["detail"].as_str().unwrap().contains("trusts no signing key"), "{p}");
    s.http.get("/api/v1/families/web", None).problem(404);
}

#[test]
fn garbage_collection_keeps_what_versions_refer_to() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let bundle = b.good(&BundleSpec::new("web", "1.0.0"));
    assert_eq!(s.publish_raw(&bundle).status, 201);
    let stray = b"uploaded, never published".to_vec();
    let digest = sha256(&stray);
    assert_eq!(s.http.put_bytes(&format!("/api/v1/blobs/{digest}"), Some(&s.admin_token), stray).status, 201);

    // Young blobs are kept (a publish may be about to name them).
    let r = s.http.request("POST", "/api/v1/gc", Some(&s.admin_token), None).json();
    assert_eq!((&r["blobs_removed"], &r["blobs_kept_young"]), (&json!(0), &json!(1)));
    let r = s.http.request("POST", "/api/v1/gc?grace_secs=0", Some(&s.admin_token), None).json();
    assert_eq!(r["blobs_removed"], 1, "{r}");
    assert_eq!(s.http.request("HEAD", &format!("/api/v1/blobs/{digest}"), None, None).status, 404);
    let kept: BTreeSet<String> = s.blobs().into_iter().collect();
    let referenced: BTreeSet<String> = bundle.files().into_iter().map(|f| f.digest).collect();
    assert_eq!(kept, referenced);
    for f in bundle.files() {
        let a = s.http.get(&format!("/api/v1/families/web/versions/1.0.0/files/{}", f.path), None);
        assert_eq!((a.status, a.body), (200, bundle.read(&f.path)), "{}", f.path);
    }
}

#[test]
fn a_publish_naming_blobs_never_uploaded_is_told_which() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let bundle = b.good(&BundleSpec::new("web", "1.0.0"));
    let files = bundle.files();
    let all: BTreeSet<String> = files.iter().map(|f| f.digest.clone()).collect();

    let p = s.post_publish(&bundle, &s.admin_token).problem(409);
    let missing: BTreeSet<String> =
        p["missing"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_owned()).collect();
    assert_eq!(missing, all);

    // All but the disk uploaded: only the disk is missing.
    let disk = files.iter().find(|f| f.path == DISK).unwrap();
    for f in files.iter().filter(|f| f.path != DISK) {
        let a = s.http.put_bytes(
            &format!("/api/v1/blobs/{}", f.digest),
            Some(&s.admin_token),
            bundle.read(&f.path),
        );
        assert_eq!(a.status, 201);
    }
    let p = s.post_publish(&bundle, &s.admin_token).problem(409);
    assert_eq!(p["missing"], json!([disk.digest]));
    s.http.get("/api/v1/families/web", None).problem(404);

    let a =
        s.http.put_bytes(&format!("/api/v1/blobs/{}", disk.digest), Some(&s.admin_token), bundle.read(DISK));
    assert_eq!(a.status, 201);
    assert_eq!(s.post_publish(&bundle, &s.admin_token).status, 201);
}

// ---------------------------------------------------------------------------------------------------------
// Release notes.

/// The rows of the Packages section of Markdown release notes: (sub-section, cells joined by spaces).
fn markdown_package_rows(md: &str) -> BTreeSet<(String, String)> {
    let section = md.split("\n## Packages\n").nth(1).expect("a Packages section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut current = String::new();
    let mut rows = BTreeSet::new();
    for line in section.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            current = h.split(" (").next().unwrap_or(h).to_owned();
        } else if line.starts_with('|') && !line.starts_with("| Package") && !line.starts_with("| ---") {
            let cells: Vec<String> =
                line.trim().trim_matches('|').split('|').map(|c| c.trim().replace('`', "")).collect();
            rows.insert((current.clone(), cells.join(" ")));
        }
    }
    rows
}

/// The same from HTML release notes.
fn html_package_rows(html: &str) -> BTreeSet<(String, String)> {
    let section = html.split("<h2>Packages</h2>").nth(1).expect("a Packages section");
    let section = section.split("<h2>").next().unwrap_or(section);
    let mut current = String::new();
    let mut rows = BTreeSet::new();
    for line in section.lines() {
        if let Some(h) = line.strip_prefix("<h3>") {
            current = h.split(" (").next().unwrap_or(h).to_owned();
        } else if let Some(row) = line.strip_prefix("<tr><td>") {
            let row = row.trim_end_matches("</td></tr>").replace("<code>", "").replace("</code>", "");
            rows.insert((current.clone(), row.split("</td><td>").collect::<Vec<_>>().join(" ")));
        }
    }
    rows
}

#[test]
fn release_notes_list_exactly_the_packages_that_changed() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let old = BundleSpec::new("web", "1.0.0").packages(&[
        ("base-files", "12.4+deb12u5", "amd64"),
        ("libc6", "2.36-9+deb12u4", "amd64"),
        ("libc6", "2.36-9+deb12u4", "i386"),
        ("libfoo1", "2.0~rc1-1", "amd64"),
        ("openssh-server", "1:9.2p1-2+deb12u2", "amd64"),
        ("vim-tiny", "2:9.0.1378-2", "amd64"),
    ]);
    let new = BundleSpec::new("web", "1.1.0").packages(&[
        ("base-files", "12.4+deb12u5", "amd64"),
        ("curl", "7.88.1-10+deb12u5", "amd64"),
        ("libc6", "2.36-9+deb12u7", "amd64"),
        ("libc6", "2.36-9+deb12u4", "i386"),
        // 2.0-1 is newer than 2.0~rc1-1 in Debian's ordering (not as strings).
        ("libfoo1", "2.0-1", "amd64"),
        ("openssh-server", "1:9.2p1-2+deb12u3", "amd64"),
    ]);
    assert_eq!(s.publish_raw(&b.good(&old)).status, 201);
    assert_eq!(s.publish_raw(&b.good(&new)).status, 201);

    let expected: BTreeSet<(String, String)> = [
        ("Added", "curl 7.88.1-10+deb12u5 amd64"),
        ("Removed", "vim-tiny 2:9.0.1378-2 amd64"),
        ("Upgraded", "libc6 amd64 2.36-9+deb12u4 → 2.36-9+deb12u7"),
        ("Upgraded", "libfoo1 amd64 2.0~rc1-1 → 2.0-1"),
        ("Upgraded", "openssh-server amd64 1:9.2p1-2+deb12u2 → 1:9.2p1-2+deb12u3"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();

    let md = s.http.get("/api/v1/families/web/versions/1.1.0/release-notes", None);
    assert_eq!(md.status, 200);
    assert!(md.content_type().starts_with("text/markdown"), "{}", md.content_type());
    let md = md.text();
    assert!(md.starts_with("# web 1.1.0\n"), "{md}");
    assert!(md.contains("- Compared with: web 1.0.0"), "{md}");
    assert!(md.contains("6 packages: 1 added, 1 removed, 3 upgraded, 0 downgraded, 2 unchanged."), "{md}");
    assert_eq!(markdown_package_rows(&md), expected, "{md}");

    let html = s.http.get("/api/v1/families/web/versions/1.1.0/release-notes?format=html", None);
    assert_eq!(html.status, 200);
    assert!(html.content_type().starts_with("text/html"), "{}", html.content_type());
    let html = html.text();
    assert!(html.contains("<h1>web 1.1.0</h1>"), "{html}");
    assert_eq!(html_package_rows(&html), expected, "{html}");

    // JSON carries both renderings; the client reads the same.
    let j = s.http.get("/api/v1/families/web/versions/1.1.0/release-notes?format=json", None).json();
    assert_eq!((j["markdown"].as_str(), j["html"].as_str()), (Some(md.as_str()), Some(html.as_str())));
    assert_eq!(s.client(None).notes("web", &v("1.1.0"), "markdown").unwrap(), md);

    // The first version lists every package it has.
    let first = s.http.get("/api/v1/families/web/versions/1.0.0/release-notes?format=md", None).text();
    assert!(first.contains("- First version of the family"), "{first}");
    let rows = markdown_package_rows(&first);
    assert_eq!(rows.len(), 6, "{first}");
    assert!(rows.contains(&(String::new(), "vim-tiny 2:9.0.1378-2 amd64".into())), "{rows:?}");

    let p = s.http.get("/api/v1/families/web/versions/1.1.0/release-notes?format=pdf", None).problem(400);
    assert_eq!(p["field"], "format");
    s.http.get("/api/v1/families/web/versions/9.9.9/release-notes", None).problem(404);
}

// ---------------------------------------------------------------------------------------------------------
// Promotion and lifecycle.

fn promote(s: &Server, token: Option<&str>, family: &str, channel: &str, version: &str) -> support::Answer {
    s.http.send(
        "PUT",
        &format!("/api/v1/families/{family}/channels/{channel}"),
        token,
        &json!({ "version": version }),
    )
}

fn lifecycle(s: &Server, token: Option<&str>, family: &str, version: &str, change: Value) -> support::Answer {
    s.http.send("PATCH", &format!("/api/v1/families/{family}/versions/{version}/lifecycle"), token, &change)
}

#[test]
fn promotion_needs_its_scope_is_audited_and_only_moves_to_certified_live_versions() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    for version in ["1.0.0", "1.1.0", "1.2.0"] {
        assert_eq!(s.publish_raw(&b.good(&BundleSpec::new("web", version))).status, 201);
    }
    let publisher = s.token("ci", &["publish"]);
    let releaser = s.token("releaser", &["promote"]);
    let operator = s.token("operator", &["lifecycle"]);

    promote(&s, None, "web", "stable", "1.0.0").problem(401);
    let p = promote(&s, Some(&publisher), "web", "stable", "1.0.0").problem(403);
    assert!(p["detail"].as_str().unwrap().contains("`promote` scope"), "{p}");
    assert_eq!(s.http.get("/api/v1/families/web/channels", None).json()["channels"], json!([]));

    let a = promote(&s, Some(&releaser), "web", "stable", "1.0.0");
    assert_eq!(a.status, 200, "{}", a.text());
    let a = a.json();
    assert_eq!(a["changed"], true);
    assert_eq!(a["move"]["to"], "1.0.0");
    assert!(a["move"].get("from").is_none(), "{a}");
    let got = s.http.get("/api/v1/families/web/versions/1.0.0", None).json();
    assert_eq!(got["state"], "supported");
    assert_eq!(got["lifecycle"]["supported_since"], today());

    let a = promote(&s, Some(&releaser), "web", "stable", "1.1.0").json();
    assert_eq!((&a["move"]["from"], &a["move"]["to"]), (&json!("1.0.0"), &json!("1.1.0")));
    assert_eq!(s.http.get("/api/v1/families/web/versions/1.1.0", None).json()["state"], "supported");
    // Who, when, from, to.
    let audit = s.audit();
    let promotions = entries(&audit, "promote");
    assert_eq!(promotions.len(), 2);
    let last = promotions[1];
    assert_eq!(last["actor"], "token:releaser");
    assert_recent(&last["at"]);
    assert_eq!((&last["family"], &last["version"]), (&json!("web"), &json!("1.1.0")));
    assert_eq!(last["detail"]["channel"], "stable");
    assert_eq!((&last["detail"]["from"], &last["detail"]["to"]), (&json!("1.0.0"), &json!("1.1.0")));

    // Where it already points: nothing changes, nothing is audited.
    let a = promote(&s, Some(&releaser), "web", "stable", "1.1.0").json();
    assert_eq!(a["changed"], false);
    assert_eq!(s.audit(), audit);

    // A revoked version is refused.
    let a = lifecycle(&s, Some(&operator), "web", "1.2.0", json!({"revoke": "CVE-2026-0001"}));
    assert_eq!(a.status, 200, "{}", a.text());
    let p = promote(&s, Some(&releaser), "web", "stable", "1.2.0").problem(409);
    assert!(p["detail"].as_str().unwrap().contains("web@1.2.0 was revoked"), "{p}");
    let p = promote(&s, Some(&releaser), "web", "candidate", "1.2.0").problem(409);
    assert!(p["detail"].as_str().unwrap().contains("CVE-2026-0001"), "{p}");

    // An uncertified version (publishing refuses to make one; here one is put in the store directly, as an
    // older catalog might hold) is refused too.
    let mut uncertified = s.catalog.version("web", &v("1.1.0")).unwrap();
    uncertified.version = v("1.3.0");
    uncertified.certified.clear();
    uncertified.lifecycle = Default::default();
    let notes = ReleaseNotes { markdown: String::new(), html: String::new() };
    s.catalog.meta().write(&mut |tx| Ok(tx.insert_version(&uncertified, &notes)?)).unwrap();
    let p = promote(&s, Some(&releaser), "web", "stable", "1.3.0").problem(409);
    assert!(p["detail"].as_str().unwrap().contains("certified for no contract"), "{p}");

    promote(&s, Some(&releaser), "web", "stable", "4.0.0").problem(409);
    let channels = s.http.get("/api/v1/families/web/channels", None).json();
    let stable = &channels["channels"][0];
    assert_eq!((&stable["name"], &stable["version"]), (&json!("stable"), &json!("1.1.0")));
    let history: Vec<&Value> = stable["history"].as_array().unwrap().iter().map(|m| &m["to"]).collect();
    assert_eq!(history, [&json!("1.0.0"), &json!("1.1.0")]);
    assert_eq!(entries(&s.audit(), "promote").len(), 2);
    assert_eq!(s.http.get("/api/v1/families/web", None).json()["channels"], json!({"stable": "1.1.0"}));
}

#[test]
fn stable_makes_a_version_supported_and_applies_the_family_policy_to_older_ones() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let t = s.admin_token.clone();
    let today = Day::of(Timestamp::now());
    for version in ["1.0.0", "1.1.0", "1.2.0"] {
        let spec = BundleSpec::new("web", version).lifecycle(Some(12), Some(30));
        assert_eq!(s.publish_raw(&b.good(&spec)).status, 201);
    }
    // A version without the policy's deprecation: left as it is.
    let other = BundleSpec::new("web", "0.9.0").lifecycle(Some(1), None);
    assert_eq!(s.publish_raw(&b.good(&other)).status, 201);
    let get = |version: &str| s.http.get(&format!("/api/v1/families/web/versions/{version}"), None).json();

    // Published: a candidate whose end of life is support_months away.
    let v1 = get("1.0.0");
    assert_eq!(v1["state"], "candidate");
    assert_eq!(v1["policy"], json!({"support_months": 12, "deprecate_after_days": 30}));
    assert_eq!(v1["lifecycle"]["end_of_life_on"], today.plus_months(12).to_string());
    assert_eq!(get("0.9.0")["lifecycle"]["end_of_life_on"], today.plus_months(1).to_string());

    assert_eq!(promote(&s, Some(&t), "web", "stable", "1.0.0").status, 200);
    let v1 = get("1.0.0");
    assert_eq!(v1["state"], "supported");
    assert_eq!(v1["lifecycle"]["supported_since"], today.to_string());
    // 1.0.0's policy deprecates what is older, never after its own end of life.
    assert_eq!(
        get("0.9.0")["lifecycle"]["deprecated_on"],
        today.plus_months(1).min(today.plus_days(30)).to_string()
    );
    assert!(get("1.1.0")["lifecycle"].get("deprecated_on").is_none(), "newer versions are left alone");

    // 1.1.0 ends its support early, by hand; then 1.2.0 becomes stable.
    let eol = today.plus_days(10).to_string();
    assert_eq!(lifecycle(&s, Some(&t), "web", "1.1.0", json!({"end_of_life_on": eol})).status, 200);
    let a = promote(&s, Some(&t), "web", "stable", "1.2.0").json();
    assert_eq!((&a["move"]["from"], &a["move"]["to"]), (&json!("1.0.0"), &json!("1.2.0")));
    let v12 = get("1.2.0");
    assert_eq!(
        (&v12["state"], &v12["lifecycle"]["supported_since"]),
        (&json!("supported"), &json!(today.to_string()))
    );
    assert!(v12["lifecycle"].get("deprecated_on").is_none());
    let deprecate_on = today.plus_days(30).to_string();
    assert_eq!(get("1.0.0")["lifecycle"]["deprecated_on"], deprecate_on);
    assert_eq!(get("1.0.0")["state"], "supported", "deprecated only from that day on");
    assert_eq!(get("1.1.0")["lifecycle"]["deprecated_on"], eol, "not after its end of life");
    assert_eq!(get("1.1.0")["state"], "candidate");
    // An earlier deprecation stays.
    assert_eq!(
        get("0.9.0")["lifecycle"]["deprecated_on"],
        today.plus_months(1).min(today.plus_days(30)).to_string()
    );

    // The promotion's audit entry lists what it changed.
    let audit = s.audit();
    let last = *entries(&audit, "promote").last().unwrap();
    let changed: BTreeSet<String> = last["detail"]["lifecycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["version"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(changed, BTreeSet::from(["1.0.0".into(), "1.1.0".into(), "1.2.0".into()]));

    // A consumer asking for support past the deprecations gets 1.2.0 and is told why not the others.
    let until = today.plus_days(60).to_string();
    let r = s
        .http
        .get(&format!("/api/v1/resolve?family=web&channel=stable&supported_until={until}"), None)
        .json();
    assert_eq!(r["chosen"]["version"], "1.2.0");
    let a = lifecycle(&s, Some(&t), "web", "1.2.0", json!({"revoke": "bad build"}));
    assert_eq!(a.status, 200);
    let r = s
        .http
        .get(&format!("/api/v1/resolve?family=web&channel=stable&supported_until={until}"), None)
        .json();
    assert!(r["chosen"].is_null(), "{r}");
    let kinds: Vec<(String, String)> =
        r["passed_over"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| {
                p["reasons"].as_array().unwrap().iter().map(|k| {
                    (p["version"].as_str().unwrap().to_owned(), k["kind"].as_str().unwrap().to_owned())
                })
            })
            .filter(|(_, k)| k != "not-in-channel")
            .collect();
    assert_eq!(
        kinds,
        [
            ("1.2.0", "revoked"),
            ("1.1.0", "deprecated-before"),
            ("1.1.0", "end-of-life-before"),
            ("1.0.0", "deprecated-before"),
            ("0.9.0", "deprecated-before"),
            ("0.9.0", "end-of-life-before")
        ]
        .map(|(v, k)| (v.to_owned(), k.to_owned()))
    );
}

#[test]
fn lifecycle_changes_by_hand_are_audited_and_checked() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    assert_eq!(s.publish_raw(&b.good(&BundleSpec::new("web", "1.0.0"))).status, 201);
    let operator = s.token("operator", &["lifecycle"]);
    let releaser = s.token("releaser", &["promote"]);

    lifecycle(&s, None, "web", "1.0.0", json!({"supported": true})).problem(401);
    lifecycle(&s, Some(&releaser), "web", "1.0.0", json!({"supported": true})).problem(403);

    let a = lifecycle(
        &s,
        Some(&operator),
        "web",
        "1.0.0",
        json!({"supported": true, "deprecated_on": "2099-01-01", "end_of_life_on": "2099-06-01"}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let a = a.json();
    assert_eq!(a["state"], "supported");
    assert_eq!(a["lifecycle"]["deprecated_on"], "2099-01-01");
    assert_eq!(a["flagged"], json!([]));
    let audit = s.audit();
    let change = *entries(&audit, "lifecycle").last().unwrap();
    assert_eq!(change["actor"], "token:operator");
    assert_recent(&change["at"]);
    assert_eq!(change["detail"]["from"]["supported"], false);
    assert_eq!(change["detail"]["to"]["end_of_life_on"], "2099-06-01");

    // Deprecated from today; then the deprecation cleared with null.
    let a = lifecycle(&s, Some(&operator), "web", "1.0.0", json!({"deprecated_on": today()})).json();
    assert_eq!(a["state"], "deprecated");
    let a = lifecycle(&s, Some(&operator), "web", "1.0.0", json!({"deprecated_on": null})).json();
    assert_eq!(a["state"], "supported");
    assert!(a["lifecycle"].get("deprecated_on").is_none(), "{a}");

    // Refused: end of life before deprecation, nothing to change, a bad date, an unknown field.
    let before = s.audit();
    let p = lifecycle(
        &s,
        Some(&operator),
        "web",
        "1.0.0",
        json!({"deprecated_on": "2099-03-01", "end_of_life_on": "2099-02-01"}),
    )
    .problem(409);
    assert!(p["detail"].as_str().unwrap().contains("must not be before deprecation"), "{p}");
    assert_eq!(lifecycle(&s, Some(&operator), "web", "1.0.0", json!({})).problem(400)["field"], "body");
    let p = lifecycle(&s, Some(&operator), "web", "1.0.0", json!({"deprecated_on": "soon"})).problem(400);
    assert_eq!(p["field"], "deprecated_on");
    let p = lifecycle(&s, Some(&operator), "web", "1.0.0", json!({"retired": true})).problem(400);
    assert!(p["detail"].as_str().unwrap().contains("retired"), "{p}");
    lifecycle(&s, Some(&operator), "web", "2.0.0", json!({"supported": true})).problem(404);
    assert_eq!(s.audit(), before);

    // A revocation is final.
    let a = lifecycle(&s, Some(&operator), "web", "1.0.0", json!({"revoke": "key leaked"})).json();
    assert_eq!(a["state"], "revoked");
    assert_eq!(entries(&s.audit(), "revoke").len(), 1);
    let p = lifecycle(&s, Some(&operator), "web", "1.0.0", json!({"supported": true})).problem(409);
    assert!(p["detail"].as_str().unwrap().contains("cannot change any more"), "{p}");
}

#[test]
fn revoking_a_version_flags_the_images_built_from_it_in_other_families() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let base1 = b.good(&BundleSpec::new("base", "1.0.0"));
    let base2 = b.good(&BundleSpec::new("base", "1.1.0"));
    let app = b.good(&BundleSpec::new("app", "1.0.0").parent("base", "1.0.0", &base1.manifest_digest()));
    let app_next = b.good(&BundleSpec::new("app", "1.1.0").parent("base", "1.1.0", &base2.manifest_digest()));
    let web = b.good(&BundleSpec::new("web", "3.0.0").parent("app", "1.0.0", &app.manifest_digest()));
    for bundle in [&base1, &base2, &app, &app_next, &web] {
        assert_eq!(s.publish_raw(bundle).status, 201);
    }
    let got = s.http.get("/api/v1/families/app/versions/1.0.0", None).json();
    assert_eq!(got["parent"]["family"], "base");
    assert_eq!(got["parent"]["version"], "1.0.0");
    assert_eq!(got["parent"]["reference"], "catalog:base@1.0.0");

    let a = lifecycle(&s, Some(&s.admin_token), "base", "1.0.0", json!({"revoke": "CVE-2026-1234"}));
    assert_eq!(a.status, 200, "{}", a.text());
    let flagged: BTreeSet<String> =
        a.json()["flagged"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect();
    assert_eq!(flagged, BTreeSet::from(["app@1.0.0".to_owned(), "web@3.0.0".to_owned()]));

    for (family, version) in [("app", "1.0.0"), ("web", "3.0.0")] {
        let got = s.http.get(&format!("/api/v1/families/{family}/versions/{version}"), None).json();
        assert_eq!(got["state"], "revoked", "{family}@{version}");
        let r = &got["lifecycle"]["revoked"];
        assert_eq!(r["reason"], "CVE-2026-1234");
        assert_eq!(r["inherited_from"], "base@1.0.0", "{family}@{version}");
    }
    for (family, version) in [("base", "1.1.0"), ("app", "1.1.0")] {
        let got = s.http.get(&format!("/api/v1/families/{family}/versions/{version}"), None).json();
        assert_eq!(got["state"], "candidate", "{family}@{version} is not built from base@1.0.0");
    }
    let audit = s.audit();
    let revokes = entries(&audit, "revoke");
    assert_eq!(revokes.len(), 3, "{revokes:?}");
    let inherited: BTreeSet<String> = revokes
        .iter()
        .filter(|e| e["detail"]["inherited_from"] == "base@1.0.0")
        .map(|e| format!("{}@{}", e["family"].as_str().unwrap(), e["version"].as_str().unwrap()))
        .collect();
    assert_eq!(inherited, BTreeSet::from(["app@1.0.0".to_owned(), "web@3.0.0".to_owned()]));

    // Resolving app now skips the flagged version and says why.
    let r = s.http.get("/api/v1/resolve?family=app&contract=base-os@^1", None).json();
    assert_eq!(r["chosen"]["version"], "1.1.0");
    let r = s.http.get("/api/v1/resolve?family=web", None).json();
    assert!(r["chosen"].is_null(), "{r}");
    assert_eq!(r["passed_over"][0]["reasons"][0]["kind"], "revoked");
    assert_eq!(r["passed_over"][0]["reasons"][0]["inherited_from"], "base@1.0.0");
}

// ---------------------------------------------------------------------------------------------------------
// Resolve.

/// The version a resolve query chose (`None`: nothing), and each passed-over version with its reason kinds.
fn resolve(s: &Server, query: &str) -> (Option<String>, Vec<(String, Vec<String>)>) {
    let a = s.http.get(&format!("/api/v1/resolve?family=web&{query}"), None);
    assert_eq!(a.status, 200, "{query}: {}", a.text());
    let r = a.json();
    let chosen = r["chosen"]["version"].as_str().map(str::to_owned);
    let passed = r["passed_over"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let kinds =
                p["reasons"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap().to_owned());
            (p["version"].as_str().unwrap().to_owned(), kinds.collect())
        })
        .collect();
    (chosen, passed)
}

fn passed(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    list.iter().map(|(v, k)| (v.to_string(), k.iter().map(|k| k.to_string()).collect())).collect()
}

#[test]
fn resolve_over_contract_ranges_channels_and_lifecycle_states() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    for (version, certified) in [
        ("1.0.0", &["base-os@1.0.0"][..]),
        ("1.1.0", &["base-os@1.2.0", "ssh-server@1.0.0"]),
        ("2.0.0", &["base-os@2.0.0", "ssh-server@1.1.0"]),
        ("2.1.0", &["base-os@2.1.0"]),
    ] {
        let bundle = b.good(&BundleSpec::new("web", version).certified(certified));
        assert_eq!(s.publish_raw(&bundle).status, 201);
    }
    let t = s.admin_token.clone();
    for version in ["1.0.0", "2.0.0"] {
        assert_eq!(promote(&s, Some(&t), "web", "stable", version).status, 200);
    }

    // Contract ranges.
    assert_eq!(
        resolve(&s, "contract=base-os@^1"),
        (Some("1.1.0".into()), passed(&[("2.1.0", &["missing-contract"]), ("2.0.0", &["missing-contract"])]))
    );
    assert_eq!(resolve(&s, "contract=base-os%40%5E1&contract=ssh-server@^1").0.as_deref(), Some("1.1.0"));
    assert_eq!(resolve(&s, "contract=base-os@~1.0").0.as_deref(), Some("1.0.0"));
    assert_eq!(
        resolve(&s, "contract=ssh-server@^1"),
        (Some("2.0.0".into()), passed(&[("2.1.0", &["missing-contract"])]))
    );
    assert_eq!(resolve(&s, "").0.as_deref(), Some("2.1.0"));

    // Channels: versions the channel ever pointed at.
    assert_eq!(
        resolve(&s, "channel=stable"),
        (Some("2.0.0".into()), passed(&[("2.1.0", &["not-in-channel"])]))
    );
    assert_eq!(
        resolve(&s, "channel=stable&contract=base-os@^1"),
        (
            Some("1.0.0".into()),
            passed(&[
                ("2.1.0", &["missing-contract", "not-in-channel"]),
                ("2.0.0", &["missing-contract"]),
                ("1.1.0", &["not-in-channel"]),
            ])
        )
    );
    let p = s.http.get("/api/v1/resolve?family=web&channel=nightly", None).problem(404);
    assert!(p["detail"].as_str().unwrap().contains("its channels: stable"), "{p}");

    // Lifecycle states: deprecated and revoked versions are left out unless included.
    assert_eq!(lifecycle(&s, Some(&t), "web", "2.1.0", json!({"deprecated_on": today()})).status, 200);
    assert_eq!(resolve(&s, ""), (Some("2.0.0".into()), passed(&[("2.1.0", &["deprecated"])])));
    assert_eq!(resolve(&s, "include=deprecated").0.as_deref(), Some("2.1.0"));
    assert_eq!(lifecycle(&s, Some(&t), "web", "2.0.0", json!({"revoke": "broken sshd"})).status, 200);
    assert_eq!(
        resolve(&s, "channel=stable"),
        (
            Some("1.0.0".into()),
            passed(&[
                ("2.1.0", &["not-in-channel", "deprecated"]),
                ("2.0.0", &["revoked"]),
                ("1.1.0", &["not-in-channel"]),
            ])
        )
    );
    assert_eq!(resolve(&s, "channel=stable&include=revoked,deprecated").0.as_deref(), Some("2.0.0"));
    // Supported until a day: end of life before it passes a version over.
    assert_eq!(lifecycle(&s, Some(&t), "web", "1.1.0", json!({"end_of_life_on": "2098-01-01"})).status, 200);
    assert_eq!(
        resolve(&s, "contract=base-os@^1&supported_until=2099-01-01"),
        (
            Some("1.0.0".into()),
            passed(&[
                ("2.1.0", &["missing-contract", "deprecated", "deprecated-before"]),
                ("2.0.0", &["missing-contract", "revoked"]),
                ("1.1.0", &["end-of-life-before"]),
            ])
        )
    );

    // Nothing matches: no version chosen, every version listed with its reasons, counted by kind.
    let a = s.http.get("/api/v1/resolve?family=web&contract=base-os@^3&limit=2", None);
    assert_eq!(a.status, 200);
    let r = a.json();
    assert!(r["chosen"].is_null(), "{r}");
    assert_eq!(r["passed_over"].as_array().unwrap().len(), 2);
    assert_eq!(r["omitted"], 2);
    assert_eq!(r["reason_counts"]["missing-contract"], 4);
    let first = &r["passed_over"][0]["reasons"][0];
    assert_eq!(first["message"], "not certified for base-os@^3 (certified for base-os@2.1.0)");
    // The client asks the same question the same way.
    let request = kiln_catalog::resolve::ResolveRequest {
        contracts: vec!["base-os@^1".parse().unwrap()],
        channel: Some("stable".into()),
        ..Default::default()
    };
    let r = s.client(None).resolve("web", &request).unwrap();
    assert_eq!(r["chosen"]["version"], "1.0.0");

    s.http.get("/api/v1/resolve?family=nope", None).problem(404);
    let p = s.http.get("/api/v1/resolve?family=web&include=candidate", None).problem(400);
    assert_eq!(p["field"], "include");
}

// ---------------------------------------------------------------------------------------------------------
// Tokens and scopes.

/// Every write, with a body that parses.
fn writes(blob: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("PUT", format!("/api/v1/blobs/{blob}"), None),
        ("POST", "/api/v1/publish".into(), Some(json!({"files": []}))),
        ("PUT", "/api/v1/families/web/channels/stable".into(), Some(json!({"version": "1.0.0"}))),
        ("PATCH", "/api/v1/families/web/versions/1.0.0/lifecycle".into(), Some(json!({"supported": true}))),
        ("GET", "/api/v1/tokens".into(), None),
        ("POST", "/api/v1/tokens".into(), Some(json!({"name": "x", "scopes": ["read"]}))),
        ("DELETE", "/api/v1/tokens/0123456789ab".into(), None),
        ("POST", "/api/v1/gc".into(), None),
    ]
}

#[test]
fn writes_need_a_token_with_their_scope_and_admins_make_tokens() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let bundle = b.good(&BundleSpec::new("web", "1.0.0"));
    assert_eq!(s.publish_raw(&bundle).status, 201);
    let reader = s.token("reader", &["read"]);
    let blob = b"a blob".to_vec();
    let digest = sha256(&blob);

    for (method, path, body) in writes(&digest) {
        let send = |token: Option<&str>| match (&body, method) {
            (Some(b), _) => s.http.send(method, &path, token, b),
            (None, "PUT") => s.http.put_bytes(&path, token, blob.clone()),
            (None, _) => s.http.request(method, &path, token, None),
        };
        let p = send(None).problem(401);
        assert!(p["detail"].as_str().unwrap().contains("token is required"), "{method} {path}: {p}");
        send(Some("kiln_not-a-token")).problem(401);
        let p = send(Some(&reader)).problem(403);
        assert!(p["detail"].as_str().unwrap().contains("lacks the"), "{method} {path}: {p}");
    }
    // None of them did anything.
    assert!(!s.blobs().contains(&digest));
    assert_eq!(s.http.get("/api/v1/families/web", None).json()["channels"], json!({}));
    assert_eq!(s.http.get("/api/v1/families/web/versions/1.0.0", None).json()["state"], "candidate");

    // The admin makes tokens; each works for its scope only; the list never shows a secret.
    let created = s.http.send(
        "POST",
        "/api/v1/tokens",
        Some(&s.admin_token),
        &json!({"name": "ci", "scopes": ["publish", "read", "publish"]}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let ci = created["token"].as_str().unwrap().to_owned();
    assert_eq!(created["record"]["scopes"], json!(["read", "publish"]));
    assert_eq!(created["record"]["created_by"], "token:admin");
    let id = created["record"]["id"].as_str().unwrap().to_owned();
    assert_eq!(s.http.put_bytes(&format!("/api/v1/blobs/{digest}"), Some(&ci), blob.clone()).status, 201);
    assert!(s.blobs().contains(&digest));
    promote(&s, Some(&ci), "web", "stable", "1.0.0").problem(403);
    s.http.get("/api/v1/tokens", Some(&ci)).problem(403);

    let list = s.http.get("/api/v1/tokens", Some(&s.admin_token));
    assert_eq!(list.status, 200);
    let names: BTreeSet<String> = list.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, BTreeSet::from(["admin".to_owned(), "ci".to_owned(), "reader".to_owned()]));
    for t in [&ci, &reader, &s.admin_token] {
        assert!(!list.text().contains(t.as_str()), "a token's secret is listed");
    }
    assert!(!list.text().contains("hash"), "{}", list.text());

    // Revoked: the token no longer works.
    let a = s.http.request("DELETE", &format!("/api/v1/tokens/{id}"), Some(&s.admin_token), None);
    assert_eq!(a.status, 204, "{}", a.text());
    s.http.put_bytes(&format!("/api/v1/blobs/{digest}"), Some(&ci), blob.clone()).problem(401);
    s.http.request("DELETE", &format!("/api/v1/tokens/{id}"), Some(&s.admin_token), None).problem(404);
    let audit = s.audit();
    assert_eq!(entries(&audit, "token-create").len(), 3);
    assert_eq!(entries(&audit, "token-revoke").len(), 1);

    // Creating a token is checked too.
    let p = s.http.send("POST", "/api/v1/tokens", Some(&s.admin_token), &json!({"name": "x", "scopes": []}));
    assert_eq!(p.problem(400)["field"], "scopes");
    let p = s.http.send(
        "POST",
        "/api/v1/tokens",
        Some(&s.admin_token),
        &json!({"name": " ", "scopes": ["read"]}),
    );
    assert_eq!(p.problem(400)["field"], "name");
}

#[test]
fn private_reads_need_a_read_token() {
    let b = Bundles::new();
    let s = Server::start(&[b.trusted_public()], ServeOptions { public_reads: false, ..Default::default() });
    let bundle = b.good(&BundleSpec::new("web", "1.0.0"));
    assert_eq!(s.publish_raw(&bundle).status, 201);
    let reader = s.token("reader", &["read"]);
    let publisher = s.token("ci", &["publish"]);
    let reads = [
        "/api/v1/families".to_owned(),
        "/api/v1/families/web".into(),
        "/api/v1/families/web/versions".into(),
        "/api/v1/families/web/versions/1.0.0".into(),
        "/api/v1/families/web/versions/1.0.0/manifest".into(),
        format!("/api/v1/families/web/versions/1.0.0/files/{DISK}"),
        "/api/v1/families/web/versions/1.0.0/release-notes".into(),
        "/api/v1/families/web/channels".into(),
        "/api/v1/resolve?family=web".into(),
        "/api/v1/audit".into(),
        format!("/api/v1/blobs/{}", bundle.manifest_digest()),
    ];
    for path in &reads {
        s.http.get(path, None).problem(401);
        s.http.get(path, Some(&publisher)).problem(403);
        let a = s.http.get(path, Some(&reader));
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        assert_eq!(s.http.get(path, Some(&s.admin_token)).status, 200, "{path}");
    }
    assert_eq!(
        s.http.request("HEAD", &format!("/api/v1/blobs/{}", bundle.manifest_digest()), None, None).status,
        401
    );
    // Health and the API document stay open.
    assert_eq!(s.http.get("/healthz", None).status, 200);
    assert_eq!(s.http.get("/api/v1/openapi.json", None).status, 200);

    // Public reads (the default) need no token.
    let open = Server::for_bundles(&b);
    assert_eq!(open.publish_raw(&bundle).status, 201);
    for path in &reads {
        assert_eq!(open.http.get(path, None).status, 200, "{path}");
    }
}

#[test]
fn the_database_never_holds_a_token_in_clear() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let mut tokens = vec![(s.admin_token.clone(), 200)];
    for (name, scopes, status) in
        [("reader", &["read"][..], 403), ("ci", &["publish", "promote"], 403), ("ops", &["admin"], 200)]
    {
        tokens.push((s.token(name, scopes), status));
    }
    // Used, so every path that looks a token up has run.
    assert_eq!(s.publish_raw(&b.good(&BundleSpec::new("web", "1.0.0"))).status, 201);
    for (t, status) in &tokens {
        assert_eq!(s.http.get("/api/v1/tokens", Some(t)).status, *status);
    }
    let files = s.data_files();
    let db: Vec<&(String, Vec<u8>)> = files.iter().filter(|(p, _)| p.starts_with("catalog.db")).collect();
    assert!(!db.is_empty(), "{:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    let contains = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    for (t, _) in &tokens {
        assert!(t.starts_with("kiln_") && t.len() > 40, "{t}");
        let secret = t.trim_start_matches("kiln_");
        for (path, bytes) in files.iter().filter(|(p, _)| p != "admin-token") {
            assert!(!contains(bytes, secret), "{path} holds a token in clear");
        }
        // What is stored is the hash, which the search finds: the search reads what the store wrote.
        let hash = kiln_catalog::service::token_hash(t);
        assert!(
            db.iter().any(|(_, bytes)| contains(bytes, &hash)),
            "the hash of a token is not in the database"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Errors.

#[test]
fn bad_requests_are_problems_naming_the_field() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    assert_eq!(s.publish_raw(&b.good(&BundleSpec::new("web", "1.0.0"))).status, 201);
    let t = s.admin_token.clone();
    let cases: Vec<(&str, String, Option<Value>, &str)> = vec![
        ("GET", "/api/v1/families/web/versions/1.x".into(), None, "version"),
        ("GET", "/api/v1/families/web/versions/1.0.0/release-notes?format=pdf".into(), None, "format"),
        ("GET", "/api/v1/families/Web".into(), None, "family"),
        ("GET", "/api/v1/blobs/sha256:xyz".into(), None, "digest"),
        ("GET", format!("/api/v1/blobs/md5:{}", "0".repeat(32)), None, "digest"),
        ("GET", "/api/v1/families?colour=red".into(), None, "colour"),
        ("GET", "/api/v1/resolve?family=web&colour=red".into(), None, "colour"),
        ("GET", "/api/v1/audit?colour=red".into(), None, "colour"),
        ("GET", "/api/v1/families/web/versions?colour=red".into(), None, "colour"),
        ("GET", format!("/api/v1/families/web/versions/1.0.0/files/{DISK}?offset=5"), None, "offset"),
        (
            "PUT",
            "/api/v1/families/web/channels/stable?force=1".into(),
            Some(json!({"version": "1.0.0"})),
            "force",
        ),
        ("GET", "/api/v1/audit?limit=ten".into(), None, "limit"),
        ("GET", "/api/v1/resolve?contract=base-os@^1".into(), None, "family"),
        ("GET", "/api/v1/resolve?family=web&contract=base-os@banana".into(), None, "contract"),
        ("GET", "/api/v1/resolve?family=web&supported_until=June".into(), None, "supported_until"),
        ("PUT", "/api/v1/families/web/channels/stable".into(), Some(json!({"version": "one"})), "version"),
        ("PUT", "/api/v1/families/web/channels/Stable".into(), Some(json!({"version": "1.0.0"})), "channel"),
        (
            "POST",
            "/api/v1/tokens".into(),
            Some(json!({"name": "ci", "scopes": ["read", "fly"]})),
            "scopes[1]",
        ),
        (
            "POST",
            "/api/v1/publish".into(),
            Some(json!({"files": [{"path": "../etc/passwd", "digest": sha256(b""), "size": 0}]})),
            "files[0].path",
        ),
        (
            "POST",
            "/api/v1/publish".into(),
            Some(json!({"files": [{"path": "manifest.json", "digest": "sha256:00", "size": 0}]})),
            "files[0].digest",
        ),
        ("POST", "/api/v1/publish".into(), Some(json!({"files": [{"path": "a", "size": 1}]})), "files[0]"),
        ("POST", "/api/v1/publish".into(), Some(json!({"files": [], "signed": true})), "signed"),
        ("POST", "/api/v1/publish".into(), Some(json!({"files": []})), "files"),
    ];
    for (method, path, body, field) in cases {
        let a = match &body {
            Some(b) => s.http.send(method, &path, Some(&t), b),
            None => s.http.request(method, &path, Some(&t), None),
        };
        let p = a.problem(400);
        assert_eq!(p["field"], field, "{method} {path}: {p}");
        assert!(p["detail"].as_str().unwrap().starts_with(field), "{method} {path}: {p}");
    }
    // A body that is not JSON at all.
    let a =
        s.http.request("POST", "/api/v1/publish", Some(&t), Some(("application/json", b"{files".to_vec())));
    assert_eq!(a.problem(400)["field"], "body");
    let a = s.http.request("POST", "/api/v1/publish", Some(&t), None);
    assert_eq!(a.problem(400)["field"], "body");
    // One JSON document and nothing after it: the channel does not move on a half-understood request.
    let a = s.http.request(
        "PUT",
        "/api/v1/families/web/channels/stable",
        Some(&t),
        Some(("application/json", br#"{"version": "1.0.0"} {"version": "2.0.0"}"#.to_vec())),
    );
    assert_eq!(a.problem(400)["field"], "body");
    assert_eq!(s.http.get("/api/v1/families/web", None).json()["channels"], json!({}));
}

#[test]
fn unknown_things_are_404_and_wrong_methods_405_with_allow() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    assert_eq!(s.publish_raw(&b.good(&BundleSpec::new("web", "1.0.0"))).status, 201);
    for path in [
        "/api/v1/families/nope".to_owned(),
        "/api/v1/families/nope/versions".into(),
        "/api/v1/families/nope/channels".into(),
        "/api/v1/families/web/versions/9.0.0".into(),
        "/api/v1/families/web/versions/9.0.0/manifest".into(),
        "/api/v1/families/web/versions/1.0.0/files/nope.raw".into(),
        format!("/api/v1/blobs/{}", sha256(b"never uploaded")),
        "/api/v1/nope".into(),
        "/api/v2/families".into(),
    ] {
        let p = s.http.get(&path, None).problem(404);
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{path}");
    }
    assert_eq!(
        s.http.request("HEAD", &format!("/api/v1/blobs/{}", sha256(b"never")), None, None).status,
        404
    );

    for (method, path, allow) in [
        ("DELETE", "/api/v1/families", "GET"),
        ("POST", "/api/v1/families/web/versions/1.0.0", "GET"),
        ("GET", "/api/v1/publish", "POST"),
        ("PUT", "/api/v1/families/web/versions/1.0.0/lifecycle", "PATCH"),
        ("DELETE", "/api/v1/families/web/channels/stable", "PUT"),
        ("DELETE", "/api/v1/tokens", "GET, POST"),
        ("POST", &format!("/api/v1/blobs/{}", sha256(b"x")), "GET, HEAD, PUT"),
    ] {
        let a = s.http.request(method, path, Some(&s.admin_token), None);
        a.problem(405);
        assert_eq!(a.header("allow"), Some(allow), "{method} {path}");
    }
}

#[test]
fn a_blob_upload_is_stored_only_when_its_digest_matches() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let t = s.admin_token.clone();
    let content = b"the real content".to_vec();
    let claimed = sha256(b"something else");

    let p = s.http.put_bytes(&format!("/api/v1/blobs/{claimed}"), Some(&t), content.clone()).problem(400);
    assert_eq!(p["field"], "body");
    assert!(p["detail"].as_str().unwrap().contains(&sha256(&content)), "{p}");
    assert!(s.blobs().is_empty(), "{:?}", s.blobs());
    assert!(!s.data_files().iter().any(|(p, _)| p.starts_with("uploads/")), "an upload was left behind");
    assert_eq!(s.http.request("HEAD", &format!("/api/v1/blobs/{claimed}"), None, None).status, 404);
    s.http.get(&format!("/api/v1/blobs/{}", sha256(&content)), None).problem(404);

    // The right digest: stored, its size announced by HEAD, its bytes served.
    let digest = sha256(&content);
    let a = s.http.put_bytes(&format!("/api/v1/blobs/{digest}"), Some(&t), content.clone());
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(a.json(), json!({"digest": digest, "size": content.len()}));
    let head = s.http.request("HEAD", &format!("/api/v1/blobs/{digest}"), None, None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(content.len().to_string().as_str()));
    let got = s.http.get(&format!("/api/v1/blobs/{digest}"), None);
    assert_eq!((got.status, got.body), (200, content));
    assert_eq!(s.blobs(), vec![digest]);
}

#[test]
fn a_publish_whose_file_list_is_no_bundle_is_a_bad_request_naming_the_entry() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let bundle = b.good(&BundleSpec::new("web", "1.0.0"));
    s.upload(&bundle, &s.admin_token);
    let files = bundle.files();
    let disk_at = files.iter().position(|f| f.path == DISK).unwrap();
    let entry = |path: &str| kiln_catalog::model::FileRecord { path: path.into(), ..files[disk_at].clone() };
    // Extra entries first, then the bundle's files: sorting would move them, the field names each where
    // the client sent it.
    let cases = [
        (vec![entry("b.raw"), entry("a/../disk.raw")], "files[1].path".to_owned(), "not a relative path"),
        (vec![entry("z.raw"), entry("/etc/passwd")], "files[1].path".into(), "not a relative path"),
        (
            vec![entry("z.raw"), entry(DISK)],
            format!("files[{}].path", 2 + disk_at),
            "listed twice (also files[1])",
        ),
        // The disk listed as a file and as a folder.
        (vec![entry(&format!("{DISK}/inner"))], "files[0].path".into(), "which files["),
    ];
    for (extra, field, needle) in cases {
        let list: Vec<_> = extra.into_iter().chain(files.iter().cloned()).collect();
        let a = s.http.send("POST", "/api/v1/publish", Some(&s.admin_token), &json!({ "files": list }));
        let p = a.problem(400);
        assert_eq!(p["field"], field.as_str(), "{p}");
        assert!(p["detail"].as_str().unwrap().contains(needle), "{p}");
    }
    s.http.get("/api/v1/families/web", None).problem(404);
    assert!(!s.data_files().iter().any(|(p, _)| p.starts_with("staging/")));
    // The bundle as it is publishes.
    assert_eq!(s.post_publish(&bundle, &s.admin_token).status, 201);
}
