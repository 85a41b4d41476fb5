//! The catalog as an OCI registry, over a live in-process server: pushes (monolithic, chunked with an
//! out-of-order chunk refused, cross-repository mounts, sha512), manifests by tag and digest, tags with
//! pagination, the referrers API with its filter and `OCI-Subject`, deletes, the spec's error bodies, the
//! token flow, and a published kiln family pulled by version, channel and digest under its lifecycle.

mod support;

use std::path::Path;

use kiln_blueprint::manifest::{Artifact, ArtifactKind, Manifest};
use kiln_catalog::http::ServeOptions;
use serde_json::{json, Value};
use support::{sha256, Answer, Bundle, BundleSpec, Bundles, Server};

/// Raw HTTP with any headers.
struct Client {
    base: String,
    agent: ureq::Agent,
    auth: Option<String>,
}

impl Client {
    fn new(server: &Server, auth: Option<String>) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(std::time::Duration::from_secs(60)))
            .build();
        Self { base: server.url.clone(), agent: ureq::Agent::new_with_config(config), auth }
    }

    fn bearer(server: &Server, token: &str) -> Self {
        Self::new(server, Some(format!("Bearer {token}")))
    }

    fn basic(server: &Server, user: &str, password: &str) -> Self {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Self::new(server, Some(format!("Basic {b}")))
    }

    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .agent
            .run(req.body(body.to_vec()).unwrap())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        Answer::read(method, resp)
    }

    fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], b"")
    }

    /// Push a blob in one POST.
    fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = sha256(bytes);
        let r = self.send("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], bytes);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("location"), Some(format!("/v2/{repo}/blobs/{d}").as_str()));
        d
    }

    fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, doc: &Value) -> Answer {
        let bytes = serde_json::to_vec(doc).unwrap();
        self.send(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            &bytes,
        )
    }
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(bytes), "size": bytes.len() })
}

/// An image manifest over `config` and `layers` (pushed to `repo` first).
fn image(c: &Client, repo: &str, config: &[u8], layers: &[&[u8]]) -> Value {
    c.push_blob(repo, config);
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| {
            c.push_blob(repo, l);
            descriptor("application/vnd.oci.image.layer.v1.tar", l)
        })
        .collect();
    json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers,
    })
}

fn digest_of(v: &Value) -> String {
    sha256(&serde_json::to_vec(v).unwrap())
}

#[test]
fn any_repository_is_pushed_and_pulled() {
    let bundles = Bundles::new();
    let s = Server::for_bundles(&bundles);
    let c = Client::bearer(&s, &s.token("pusher", &["publish"]));
    let repo = "team/app";

    // Monolithic blob, then HEAD and a range of it.
    let blob = b"0123456789abcdef".to_vec();
    let d = c.push_blob(repo, &blob);
    let r = c.send("HEAD", &format!("/v2/{repo}/blobs/{d}"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("16"));
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(r.header("docker-distribution-api-version"), Some("registry/2.0"));
    let r = c.send("GET", &format!("/v2/{repo}/blobs/{d}"), &[("Range", "bytes=2-5")], b"");
    assert_eq!((r.status, r.body.as_slice()), (206, &b"2345"[..]));
    assert_eq!(r.header("content-range"), Some("bytes 2-5/16"));
    let r = c.send("GET", &format!("/v2/{repo}/blobs/{d}"), &[("Range", "bytes=16-")], b"");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */16"));

    // Chunked upload; a chunk that does not continue it is refused with 416 and the upload's range.
    let r = c.send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_eq!(r.status, 202);
    let session = r.header("location").unwrap().to_owned();
    assert!(session.starts_with(&format!("/v2/{repo}/blobs/uploads/")), "{session}");
    let r = c.send(
        "PATCH",
        &session,
        &[("Content-Range", "0-4"), ("Content-Type", "application/octet-stream")],
        b"hello",
    );
    assert_eq!((r.status, r.header("range")), (202, Some("0-4")));
    let r = c.send("PATCH", &session, &[("Content-Range", "10-14")], b"later");
    assert_eq!(r.registry_error(416), "BLOB_UPLOAD_INVALID");
    assert_eq!(r.header("range"), Some("0-4"));
    let r = c.get(&session);
    assert_eq!((r.status, r.header("range")), (204, Some("0-4")));
    let r = c.send("PATCH", &session, &[("Content-Range", "5-10")], b" world");
    assert_eq!((r.status, r.header("range")), (202, Some("0-10")));
    let whole = b"hello world!";
    let wd = sha256(whole);
    let r = c.send("PUT", &format!("{session}?digest={wd}"), &[("Content-Range", "11-11")], b"!");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("docker-content-digest"), Some(wd.as_str()));
    assert_eq!(c.get(&format!("/v2/{repo}/blobs/{wd}")).body, whole);
    assert_eq!(c.get(&session).registry_error(404), "BLOB_UPLOAD_UNKNOWN");
    // A session finished under the wrong digest stores nothing.
    let r = c.send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    let other = r.header("location").unwrap().to_owned();
    let r = c.send("PUT", &format!("{other}?digest={}", sha256(b"not this")), &[], b"this");
    assert_eq!(r.registry_error(400), "DIGEST_INVALID");
    assert_eq!(c.get(&format!("/v2/{repo}/blobs/{}", sha256(b"this"))).registry_error(404), "BLOB_UNKNOWN");
    // Cancelled.
    let r = c.send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    let cancelled = r.header("location").unwrap().to_owned();
    assert_eq!(c.send("DELETE", &cancelled, &[], b"").status, 204);
    assert_eq!(c.get(&cancelled).registry_error(404), "BLOB_UPLOAD_UNKNOWN");

    // sha512.
    use sha2::Digest as _;
    let d512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(b"long digest")));
    let r = c.send("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d512}"), &[], b"long digest");
    assert_eq!(r.status, 201);
    let r = c.get(&format!("/v2/{repo}/blobs/{d512}"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"long digest"[..]));
    assert!(s.data.join("blobs/sha512").join(&d512[7..]).is_file());

    // Manifests by tag and by digest; one naming a blob the repository lacks is refused.
    let m = image(&c, repo, br#"{"architecture":"amd64","os":"linux"}"#, &[b"layer one", b"layer two"]);
    let md = digest_of(&m);
    let r = c.put_manifest(repo, "v1", MANIFEST, &m);
    assert_eq!(r.status, 201);
    assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
    assert_eq!(r.header("location"), Some(format!("/v2/{repo}/manifests/{md}").as_str()));
    for reference in ["v1", md.as_str()] {
        let r = c.get(&format!("/v2/{repo}/manifests/{reference}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, serde_json::to_vec(&m).unwrap());
        assert_eq!(r.header("content-type"), Some(MANIFEST));
        assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
    }
    let mut missing = m.clone();
    missing["layers"][0]["digest"] = sha256(b"never pushed").into();
    let r = c.put_manifest(repo, "broken", MANIFEST, &missing);
    assert_eq!(r.registry_error(400), "MANIFEST_BLOB_UNKNOWN");
    let r = c.put_manifest(repo, &sha256(b"other"), MANIFEST, &m);
    assert_eq!(r.registry_error(400), "DIGEST_INVALID");
    assert_eq!(c.get(&format!("/v2/{repo}/manifests/nope")).registry_error(404), "MANIFEST_UNKNOWN");
    assert_eq!(c.get("/v2/Bad/manifests/v1").registry_error(400), "NAME_INVALID");
    // A sha512 manifest, pushed by its digest.
    let bytes = serde_json::to_vec(&m).unwrap();
    let m512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&bytes)));
    let r = c.send("PUT", &format!("/v2/{repo}/manifests/{m512}"), &[("Content-Type", MANIFEST)], &bytes);
    assert_eq!(r.status, 201);
    assert_eq!(c.get(&format!("/v2/{repo}/manifests/{m512}")).body, bytes);

    // Cross-repository mount: from a repository that has the blob, 201; from one that lacks it, a session.
    let layer = sha256(b"layer one");
    let r = c.send("POST", &format!("/v2/mirror/blobs/uploads/?mount={layer}&from={repo}"), &[], b"");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some(format!("/v2/mirror/blobs/{layer}").as_str()));
    assert_eq!(c.send("HEAD", &format!("/v2/mirror/blobs/{layer}"), &[], b"").status, 200);
    let r = c.send("POST", &format!("/v2/third/blobs/uploads/?mount={layer}&from=empty/repo"), &[], b"");
    assert_eq!(r.status, 202);
    assert_eq!(c.send("HEAD", &format!("/v2/third/blobs/{layer}"), &[], b"").status, 404);

    // Tags, a page at a time, in order, with Link to the next page.
    for t in ["v5", "v3", "v2", "v4"] {
        assert_eq!(c.put_manifest(repo, t, MANIFEST, &m).status, 201);
    }
    let mut seen = Vec::new();
    let mut next = Some(format!("/v2/{repo}/tags/list?n=2"));
    while let Some(url) = next.take() {
        let r = c.get(&url);
        assert_eq!(r.status, 200);
        let page: Vec<String> = serde_json::from_value(r.json()["tags"].clone()).unwrap();
        assert!(page.len() <= 2);
        seen.extend(page);
        next = r.header("link").map(|l| {
            assert!(l.ends_with(">; rel=\"next\""), "{l}");
            l.trim_start_matches('<').split('>').next().unwrap().to_owned()
        });
    }
    assert_eq!(seen, ["v1", "v2", "v3", "v4", "v5"]);
    assert_eq!(c.get(&format!("/v2/{repo}/tags/list?last=v3")).json()["tags"], json!(["v4", "v5"]));
    assert_eq!(c.get("/v2/never/pushed/tags/list").registry_error(404), "NAME_UNKNOWN");

    // Referrers: two artifacts about the image, filtered by artifact type.
    let empty = c.push_blob(repo, b"{}");
    let artifact = |kind: &str, note: &str| {
        let layer = note.as_bytes();
        c.push_blob(repo, layer);
        json!({
            "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [descriptor("text/plain", layer)],
            "subject": {"mediaType": MANIFEST, "digest": md, "size": bytes.len()},
            "annotations": {"org.example.note": note},
        })
    };
    let sbom = artifact("application/vnd.example.sbom", "an sbom");
    let sig = artifact("application/vnd.example.sig", "a signature");
    for a in [&sbom, &sig] {
        let r = c.put_manifest(repo, &digest_of(a), MANIFEST, a);
        assert_eq!(r.status, 201);
        assert_eq!(r.header("oci-subject"), Some(md.as_str()));
    }
    let r = c.get(&format!("/v2/{repo}/referrers/{md}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(INDEX));
    assert_eq!(r.header("oci-filters-applied"), None);
    let index = r.json();
    assert_eq!(index["mediaType"], INDEX);
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let r = c.get(&format!("/v2/{repo}/referrers/{md}?artifactType=application/vnd.example.sbom"));
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let only = r.json()["manifests"].clone();
    assert_eq!(
        only,
        json!([{
            "mediaType": MANIFEST, "digest": digest_of(&sbom), "size": serde_json::to_vec(&sbom).unwrap().len(),
            "artifactType": "application/vnd.example.sbom", "annotations": {"org.example.note": "an sbom"},
        }])
    );
    assert_eq!(c.get(&format!("/v2/{repo}/referrers/{}", sha256(b"none"))).json()["manifests"], json!([]));

    // Deletes: a tag, a manifest (its tags go with it), a blob.
    assert_eq!(c.send("DELETE", &format!("/v2/{repo}/manifests/v5"), &[], b"").status, 202);
    assert_eq!(c.get(&format!("/v2/{repo}/manifests/v5")).registry_error(404), "MANIFEST_UNKNOWN");
    assert_eq!(c.get(&format!("/v2/{repo}/manifests/v4")).status, 200);
    assert_eq!(c.send("DELETE", &format!("/v2/{repo}/manifests/{md}"), &[], b"").status, 202);
    assert_eq!(c.get(&format!("/v2/{repo}/manifests/v4")).registry_error(404), "MANIFEST_UNKNOWN");
    assert_eq!(c.get(&format!("/v2/{repo}/tags/list")).json()["tags"], json!([]));
    assert_eq!(
        c.send("DELETE", &format!("/v2/{repo}/manifests/{md}"), &[], b"").registry_error(404),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(c.send("DELETE", &format!("/v2/{repo}/blobs/{d}"), &[], b"").status, 202);
    assert_eq!(c.send("HEAD", &format!("/v2/{repo}/blobs/{d}"), &[], b"").status, 404);
    let r = c.send("POST", &format!("/v2/{repo}/manifests/x"), &[], b"");
    assert_eq!(r.registry_error(405), "UNSUPPORTED");
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, DELETE"));

    // Garbage collection keeps what manifests refer to and drops what nothing refers to any more.
    assert_eq!(c.send("DELETE", &format!("/v2/{repo}/manifests/{m512}"), &[], b"").status, 202);
    s.catalog.gc(std::time::Duration::ZERO).unwrap();
    assert_eq!(
        c.get(&format!("/v2/mirror/blobs/{layer}")).status,
        404,
        "only the deleted manifests referred to it"
    );
    let kept = image(&c, "kept", b"{\"kept\":1}", &[b"kept layer"]);
    assert_eq!(c.put_manifest("kept", "v1", MANIFEST, &kept).status, 201);
    let r = c.send("POST", "/v2/kept/blobs/uploads/", &[], b"");
    let abandoned = r.header("location").unwrap().to_owned();
    c.send("PATCH", &abandoned, &[], b"half a blob");
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.catalog.gc(std::time::Duration::ZERO).unwrap();
    // An upload older than the grace period is swept with its bytes.
    assert_eq!(c.get(&abandoned).registry_error(404), "BLOB_UPLOAD_UNKNOWN");
    let r = c.get("/v2/kept/manifests/v1");
    assert_eq!(r.status, 200);
    assert_eq!(c.get(&format!("/v2/kept/blobs/{}", sha256(b"kept layer"))).body, b"kept layer");
}

#[test]
fn credentials_come_as_registry_clients_give_them() {
    let bundles = Bundles::new();
    let s = Server::for_bundles(&bundles);
    let token = s.token("pusher", &["publish"]);
    let anonymous = Client::new(&s, None);

    // The ping challenges with the token flow.
    let r = anonymous.get("/v2/");
    assert_eq!(r.registry_error(401), "UNAUTHORIZED");
    let challenge = r.header("www-authenticate").unwrap();
    assert_eq!(challenge, format!("Bearer realm=\"{}/v2/token\",service=\"kiln\"", s.url));
    // A push without credentials names its scope.
    let r = anonymous.send("POST", "/v2/team/app/blobs/uploads/", &[], b"");
    assert_eq!(r.registry_error(401), "UNAUTHORIZED");
    assert!(r.header("www-authenticate").unwrap().ends_with(",scope=\"repository:team/app:push,pull\""));
    // Public reads: pulls need nothing.
    assert_eq!(anonymous.get("/v2/team/app/tags/list").registry_error(404), "NAME_UNKNOWN");

    // The token flow: Basic credentials (any user, the catalog token as password) for a bearer token.
    let basic = Client::basic(&s, "anyone", &token);
    let r = basic.get("/v2/token?service=kiln&scope=repository:team/app:push,pull");
    assert_eq!(r.status, 200);
    let t = r.json();
    assert_eq!(t["token"], token.as_str());
    assert_eq!(t["access_token"], token.as_str());
    let bearer = Client::bearer(&s, t["token"].as_str().unwrap());
    assert_eq!(bearer.get("/v2/").status, 200);
    assert_eq!(bearer.send("POST", "/v2/team/app/blobs/uploads/", &[], b"").status, 202);
    // Basic directly.
    assert_eq!(basic.get("/v2/").status, 200);
    basic.push_blob("team/app", b"by basic");
    // A wrong password, a token without the publish scope.
    let r = Client::basic(&s, "anyone", "kiln_wrong").get("/v2/token?service=kiln");
    assert_eq!(r.status, 401);
    let reader = Client::bearer(&s, &s.token("reader", &["read"]));
    let r = reader.send("POST", "/v2/team/app/blobs/uploads/", &[], b"");
    assert_eq!(r.registry_error(403), "DENIED");
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("`publish` scope"));
    // Without credentials the token endpoint hands out the anonymous token: reads only.
    let r = anonymous.get("/v2/token?service=kiln&scope=repository:team/app:pull");
    assert_eq!(r.json()["token"], "anonymous");
    let anon = Client::bearer(&s, "anonymous");
    assert_eq!(anon.get("/v2/").status, 200);
    assert_eq!(anon.get("/v2/team/app/tags/list").status, 200);
    assert_eq!(
        anon.send("POST", "/v2/team/app/blobs/uploads/", &[], b"").registry_error(401),
        "UNAUTHORIZED"
    );

    // Private reads: pulls need a token too, and there is no anonymous token.
    let private = Server::start(
        &[bundles.trusted_public()],
        ServeOptions { public_reads: false, ..Default::default() },
    );
    let anonymous = Client::new(&private, None);
    let r = anonymous.get("/v2/team/app/tags/list");
    assert_eq!(r.registry_error(401), "UNAUTHORIZED");
    assert!(r.header("www-authenticate").unwrap().ends_with(",scope=\"repository:team/app:pull\""));
    let r = anonymous.get("/v2/token?service=kiln");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    let pusher = Client::bearer(&private, &private.token("pusher", &["publish"]));
    pusher.push_blob("team/app", b"private");
    assert_eq!(pusher.get("/v2/team/app/tags/list").status, 200);
    let other = Client::bearer(&private, &private.token("promoter", &["promote"]));
    assert_eq!(other.get("/v2/team/app/tags/list").registry_error(403), "DENIED");
}

/// A bundle whose output has an OCI layout (one image, its config and a layer) next to the fixture
/// disk, signed as `kiln sign` signs (cosign signature tag and OCI 1.1 referrer in the layout).
fn with_image(bundles: &Bundles, spec: &BundleSpec) -> (Bundle, String) {
    let b = bundles.unsigned(spec);
    let oci = b.dir.join("oci");
    let blob = |bytes: &[u8]| {
        let d = sha256(bytes);
        fs_err::create_dir_all(oci.join("blobs/sha256")).unwrap();
        fs_err::write(oci.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
        d
    };
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Labels":{{"v":"{}"}}}}}}"#,
        spec.version
    );
    let layer = format!("layer of {} {}", spec.name, spec.version).into_bytes();
    blob(config.as_bytes());
    blob(&layer);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config.as_bytes()),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    }))
    .unwrap();
    let md = blob(&manifest);
    let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [{
        "mediaType": MANIFEST, "digest": md, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": spec.version},
    }]});
    fs_err::write(oci.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs_err::write(oci.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut m = Manifest::read(&b.dir).unwrap();
    m.put(Artifact {
        kind: ArtifactKind::Oci,
        path: "oci".into(),
        sha256: md.clone(),
        size: manifest.len() as u64,
    })
    .unwrap();
    m.write(&b.dir).unwrap();
    kiln_sign::sign_dir(&b.dir, &bundles.trusted, &Default::default()).unwrap();
    let b = Bundle { dir: b.dir.clone(), manifest: Manifest::read(&b.dir).unwrap() };
    (b, md)
}

fn oci_index(dir: &Path) -> Value {
    serde_json::from_slice(&fs_err::read(dir.join("oci/index.json")).unwrap()).unwrap()
}

#[test]
fn a_published_family_is_pulled_by_version_channel_and_digest_under_its_lifecycle() {
    let bundles = Bundles::new();
    let s = Server::for_bundles(&bundles);
    let (b, image_digest) = with_image(&bundles, &BundleSpec::new("web", "1.0.0"));
    assert_eq!(s.publish_raw(&b).status, 201);
    let c = Client::new(&s, None);
    // The publish recorded the image in the registry; a catalog from before the registry has no such
    // records, and gets them from the bundle's blobs when the family is first pulled from.
    assert!(s.catalog.meta().registry_manifest("web", &image_digest).unwrap().is_some());
    let db = rusqlite::Connection::open(s.data.join("catalog.db")).unwrap();
    for table in ["registry_manifests", "registry_refs", "registry_tags", "registry_blobs"] {
        db.execute(&format!("DELETE FROM {table}"), []).unwrap();
    }
    assert!(s.catalog.meta().registry_manifest("web", &image_digest).unwrap().is_none());

    // By version tag and by digest: the image kiln built and signed.
    let by_tag = c.get("/v2/web/manifests/1.0.0");
    assert_eq!(by_tag.status, 200, "{}", String::from_utf8_lossy(&by_tag.body));
    assert_eq!(by_tag.header("docker-content-digest"), Some(image_digest.as_str()));
    assert_eq!(by_tag.body, b.read(&format!("oci/blobs/sha256/{}", &image_digest[7..])));
    assert_eq!(by_tag.header("deprecation"), None);
    assert_eq!(c.get(&format!("/v2/web/manifests/{image_digest}")).body, by_tag.body);
    let m = by_tag.json();
    for d in [&m["config"]["digest"], &m["layers"][0]["digest"]] {
        let d = d.as_str().unwrap();
        assert_eq!(
            c.get(&format!("/v2/web/blobs/{d}")).body,
            b.read(&format!("oci/blobs/sha256/{}", &d[7..]))
        );
    }
    // cosign's signature: its tag and the OCI 1.1 referrer.
    let sig_tag = format!("sha256-{}.sig", &image_digest[7..]);
    let tags = c.get("/v2/web/tags/list").json()["tags"].clone();
    assert_eq!(tags, json!(["1.0.0", sig_tag]));
    let index = oci_index(&b.dir);
    let tagged = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == sig_tag.as_str())
        .unwrap();
    assert_eq!(
        c.get(&format!("/v2/web/manifests/{sig_tag}")).header("docker-content-digest"),
        tagged["digest"].as_str()
    );
    let referrers = c.get(&format!("/v2/web/referrers/{image_digest}")).json();
    let listed = referrers["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{referrers}");
    assert_eq!(listed[0]["artifactType"], "application/vnd.dev.cosign.artifact.sig.v1+json");

    // A family's repository is the catalog's: pushes are refused.
    let pusher = Client::bearer(&s, &s.admin_token);
    let r = pusher.send("POST", "/v2/web/blobs/uploads/", &[], b"");
    assert_eq!(r.registry_error(403), "DENIED");
    assert_eq!(pusher.send("DELETE", "/v2/web/manifests/1.0.0", &[], b"").registry_error(403), "DENIED");

    // Channels are tags.
    let t = s.admin_token.clone();
    let a =
        s.http.send("PUT", "/api/v1/families/web/channels/stable", Some(&t), &json!({"version": "1.0.0"}));
    assert_eq!(a.status, 200, "{}", a.text());
    let r = c.get("/v2/web/manifests/stable");
    assert_eq!(r.header("docker-content-digest"), Some(image_digest.as_str()));
    assert_eq!(c.get("/v2/web/tags/list").json()["tags"], json!(["1.0.0", sig_tag, "stable"]));
    assert_eq!(c.get("/v2/web/tags/list?n=1&last=1.0.0").json()["tags"], json!([sig_tag]));

    // Deprecated: the dates and a warning.
    let lifecycle = |change: Value| {
        let a = s.http.send("PATCH", "/api/v1/families/web/versions/1.0.0/lifecycle", Some(&t), &change);
        assert_eq!(a.status, 200, "{}", a.text());
    };
    lifecycle(json!({"deprecated_on": "2020-01-01", "end_of_life_on": "2099-01-01"}));
    let r = c.get("/v2/web/manifests/stable");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("deprecation"), Some("@1577836800"));
    assert_eq!(r.header("sunset"), Some("Thu, 01 Jan 2099 00:00:00 GMT"));
    let warning = r.header("warning").unwrap();
    assert!(warning.starts_with("299 - \"web@1.0.0 is deprecated since 2020-01-01"), "{warning}");

    // End of life: refused by tag, and by digest unless the override is given.
    lifecycle(json!({"end_of_life_on": "2021-01-01"}));
    let r = c.get("/v2/web/manifests/1.0.0");
    assert_eq!(r.registry_error(410), "DENIED");
    let e = &r.json()["errors"][0];
    assert!(e["message"].as_str().unwrap().contains("end of life on 2021-01-01"), "{e}");
    assert_eq!(e["detail"]["state"], "end-of-life");
    assert_eq!(c.send("GET", "/v2/web/manifests/1.0.0", &[("Kiln-Allow-Retired", "true")], b"").status, 410);
    assert_eq!(c.get(&format!("/v2/web/manifests/{image_digest}")).status, 410);
    let r =
        c.send("GET", &format!("/v2/web/manifests/{image_digest}"), &[("Kiln-Allow-Retired", "true")], b"");
    assert_eq!(r.status, 200);
    assert!(r.header("warning").unwrap().contains("end of life"));
    assert_eq!(
        c.send("HEAD", &format!("/v2/web/manifests/{image_digest}?allow-retired=1"), &[], b"").status,
        200
    );

    // Revoked: the same, with the reason.
    lifecycle(json!({"end_of_life_on": null, "deprecated_on": null, "revoke": "CVE-2099-0001"}));
    let r = c.get(&format!("/v2/web/manifests/{image_digest}"));
    assert_eq!(r.registry_error(410), "DENIED");
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("CVE-2099-0001"));

    // Garbage collection keeps every blob of the published image.
    s.catalog.gc(std::time::Duration::ZERO).unwrap();
    for d in [&m["config"]["digest"], &m["layers"][0]["digest"]] {
        assert_eq!(c.get(&format!("/v2/web/blobs/{}", d.as_str().unwrap())).status, 200);
    }
}
