//! `catalog/openapi.json` against the live API: every documented operation has a route that answers with a
//! documented status and a body of the documented shape, every operation with an `x-scope` needs a token
//! with that scope, every route the server knows is documented, and the server serves the document itself.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use kiln_catalog::http::action::ROUTES;
use serde_json::{json, Value};
use support::{Answer, Bundle, BundleSpec, Bundles, Server, DISK};

const DOCUMENT: &str = include_str!("../openapi.json");
const METHODS: [&str; 6] = ["get", "head", "put", "post", "patch", "delete"];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
}

/// What `$ref` points at (`#/components/...`), followed until it is no reference.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r}: only local references"));
        v = doc.pointer(pointer).unwrap_or_else(|| panic!("{r} points nowhere"));
    }
    v
}

/// Every operation: (path template, method, operation).
fn operations(doc: &Value) -> Vec<(String, &'static str, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((path.clone(), m, op));
            }
        }
    }
    out
}

/// The parameters of an operation, its path item's first.
fn parameters<'a>(doc: &'a Value, path: &str, op: &'a Value) -> Vec<&'a Value> {
    let item = &doc["paths"][path];
    let list = |v: &'a Value| v.as_array().into_iter().flatten().map(|p| resolve(doc, p));
    list(&item["parameters"]).chain(list(&op["parameters"])).collect()
}

// ---------------------------------------------------------------------------------------------------------
// A small JSON Schema checker: types, enums, required and additional properties, items, oneOf/anyOf.

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown schema type {other}"),
    }
}

/// Where `value` breaks `schema`, one line per problem (empty: it conforms).
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    for key in ["oneOf", "anyOf"] {
        if let Some(alternatives) = schema.get(key).and_then(Value::as_array) {
            let fits = alternatives
                .iter()
                .filter(|s| {
                    let mut e = Vec::new();
                    check(doc, s, value, at, &mut e);
                    e.is_empty()
                })
                .count();
            let ok = if key == "oneOf" { fits == 1 } else { fits >= 1 };
            if !ok {
                errors.push(format!("{at}: {fits} of the {key} alternatives fit {value}"));
            }
        }
    }
    match schema.get("type") {
        Some(Value::String(t)) if !type_matches(t, value) => {
            errors.push(format!("{at}: not a {t}: {value}"));
            return;
        }
        Some(Value::Array(ts)) if !ts.iter().any(|t| type_matches(t.as_str().unwrap_or(""), value)) => {
            errors.push(format!("{at}: none of {ts:?}: {value}"));
            return;
        }
        _ => {}
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(value) {
            errors.push(format!("{at}: {value} is not one of {e:?}"));
        }
    }
    if let Some(obj) = value.as_object() {
        for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                errors.push(format!("{at}: required property `{r}` is missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in obj {
            match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                (Some(s), _) => check(doc, s, v, &format!("{at}.{k}"), errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!("{at}: property `{k}` is not allowed"))
                }
                (None, Some(s)) if s.is_object() => check(doc, s, v, &format!("{at}.{k}"), errors),
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            check(doc, items, v, &format!("{at}[{i}]"), errors);
        }
    }
}

#[test]
fn the_checker_finds_what_is_missing_or_wrong() {
    let doc = document();
    let version = json!({"$ref": "#/components/schemas/Version"});
    let mut errors = Vec::new();
    check(
        &doc,
        &version,
        &json!({"family": "web", "files": [{"path": "a", "digest": 1, "size": 2, "x": 0}]}),
        "$",
        &mut errors,
    );
    let text = errors.join("\n");
    for needle in [
        "$: required property `version` is missing",
        "$: required property `state` is missing",
        "$.files[0].digest: not a string",
        "$.files[0]: property `x` is not allowed",
    ] {
        assert!(text.contains(needle), "`{needle}` not in:\n{text}");
    }
    let mut errors = Vec::new();
    let resolution = json!({"$ref": "#/components/schemas/Resolution"});
    check(&doc, &resolution, &json!({"family": "web", "chosen": null, "passed_over": []}), "$", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    check(
        &doc,
        &resolution,
        &json!({"family": "web", "chosen": {"version": 1}, "passed_over": []}),
        "$",
        &mut errors,
    );
    assert!(errors.iter().any(|e| e.contains("0 of the oneOf alternatives")), "{errors:?}");
}

// ---------------------------------------------------------------------------------------------------------
// The live catalog the document is checked against.

/// A catalog with a family `web` (two versions, the newer built FROM `base`, on `stable`, one deprecated),
/// and what a request needs to fill in a documented operation.
struct Live {
    /// Holds the bundles' folder.
    _bundles: Bundles,
    server: Server,
    web: Bundle,
}

impl Live {
    fn new() -> Self {
        let bundles = Bundles::new();
        let server = Server::for_bundles(&bundles);
        let base = bundles.good(&BundleSpec::new("base", "1.0.0"));
        let old = bundles.good(&BundleSpec::new("web", "0.9.0"));
        // Bootable, for the network boot routes.
        let web = bundles.good(&BundleSpec::new("web", "1.0.0").bootable().parent(
            "base",
            "1.0.0",
            &base.manifest_digest(),
        ));
        for b in [&base, &old, &web] {
            assert_eq!(server.publish_raw(b).status, 201);
        }
        let t = server.admin_token.clone();
        for (version, channel) in [("0.9.0", "stable"), ("1.0.0", "candidate")] {
            let a = server.http.send(
                "PUT",
                &format!("/api/v1/families/web/channels/{channel}"),
                Some(&t),
                &json!({ "version": version }),
            );
            assert_eq!(a.status, 200, "{}", a.text());
        }
        let a = server.http.send(
            "PATCH",
            "/api/v1/families/web/versions/0.9.0/lifecycle",
            Some(&t),
            &json!({"deprecated_on": "2000-01-01"}),
        );
        assert_eq!(a.status, 200, "{}", a.text());
        Self { _bundles: bundles, server, web }
    }

    /// A sample value of a parameter, by its name.
    fn param(&self, name: &str, token_id: &str) -> String {
        match name {
            "family" => "web".into(),
            "version" => "1.0.0".into(),
            "path" => DISK.into(),
            "channel" => "stable".into(),
            "digest" => self.web.manifest_digest(),
            "id" => token_id.into(),
            "format" => "json".into(),
            "contract" => "base-os@^1".into(),
            "supported_until" => "2000-06-01".into(),
            "include" => "deprecated".into(),
            "limit" | "before" => "10".into(),
            "grace_secs" => "3600".into(),
            "allow-retired" => "1".into(),
            other => panic!("parameter `{other}` has no sample: add one"),
        }
    }

    /// The URL path (with the query) of an operation, its path parameters filled in; with every optional
    /// query parameter too when `all`.
    fn url(&self, doc: &Value, path: &str, op: &Value, all: bool, token_id: &str) -> String {
        let mut url = path.to_owned();
        let mut query = form_urlencoded::Serializer::new(String::new());
        for p in parameters(doc, path, op) {
            let name = p["name"].as_str().unwrap();
            match p["in"].as_str() {
                Some("path") => url = url.replace(&format!("{{{name}}}"), &self.param(name, token_id)),
                Some("query") if all || p["required"] == true => {
                    query.append_pair(name, &self.param(name, token_id));
                }
                Some("query") => {}
                other => panic!("{path} {name}: parameters in {other:?} are not checked"),
            }
        }
        assert!(!url.contains('{'), "{url}: a path parameter is not declared");
        let query = query.finish();
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }

    /// A request body that parses, built from the schema (and, for a publish, the bundle published).
    fn body(&self, doc: &Value, op: &Value) -> Option<(&'static str, Vec<u8>)> {
        let content = op.pointer("/requestBody/content")?.as_object()?;
        if content.contains_key("application/octet-stream") {
            return Some(("application/octet-stream", self.web.read("manifest.json")));
        }
        let schema = &content.get("application/json").expect("a JSON or octet-stream body")["schema"];
        let value = if op["operationId"] == "publish" {
            json!({ "files": self.web.files() })
        } else {
            sample(doc, schema, "")
        };
        Some(("application/json", serde_json::to_vec(&value).unwrap()))
    }

    fn send(&self, method: &str, url: &str, token: Option<&str>, body: Option<(&str, Vec<u8>)>) -> Answer {
        self.server.http.request(&method.to_ascii_uppercase(), url, token, body)
    }
}

/// A value of `schema` (required properties, or the first ones to reach `minProperties`), named `name`.
fn sample(doc: &Value, schema: &Value, name: &str) -> Value {
    let schema = resolve(doc, schema);
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return e[0].clone();
    }
    let t = match &schema["type"] {
        Value::Array(ts) => ts[0].as_str().unwrap_or(""),
        t => t.as_str().unwrap_or(""),
    };
    match t {
        "object" => {
            let props = schema["properties"].as_object().cloned().unwrap_or_default();
            let mut names: Vec<String> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect();
            let min = schema["minProperties"].as_u64().unwrap_or(0) as usize;
            for k in props.keys() {
                if names.len() >= min {
                    break;
                }
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
            let map = names.iter().map(|k| (k.clone(), sample(doc, &props[k], k))).collect();
            Value::Object(map)
        }
        "array" => {
            let n = schema["minItems"].as_u64().unwrap_or(u64::from(name == "scopes"));
            (0..n).map(|_| sample(doc, &schema["items"], name)).collect()
        }
        "boolean" => true.into(),
        "integer" | "number" => 1.into(),
        "string" => match (name, schema["format"].as_str()) {
            (_, Some("date")) => "2099-01-01".into(),
            ("version", _) => "1.0.0".into(),
            _ => format!("sample-{name}").into(),
        },
        other => panic!("no sample for schema type `{other}`: {schema}"),
    }
}

/// The documented response for `status`, resolved.
fn documented<'a>(doc: &'a Value, op: &'a Value, status: u16) -> Option<&'a Value> {
    op["responses"].get(status.to_string()).map(|r| resolve(doc, r))
}

/// Whether `answer` is as `op` documents it: a documented status, a documented media type, and a JSON
/// body of the documented schema.
fn conforms(doc: &Value, what: &str, op: &Value, answer: &Answer) -> Vec<String> {
    let Some(response) = documented(doc, op, answer.status) else {
        return vec![format!("{what}: status {} is not documented ({})", answer.status, answer.text())];
    };
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        return Vec::new();
    };
    if answer.body.is_empty() {
        return Vec::new();
    }
    let media = answer.content_type().split(';').next().unwrap_or("").trim().to_owned();
    let Some(documented) = content.get(&media) else {
        let listed: Vec<&String> = content.keys().collect();
        return vec![format!("{what}: answered {media}, documented {listed:?}")];
    };
    let mut errors = Vec::new();
    if let Some(schema) = documented.get("schema") {
        check(doc, schema, &answer.json(), what, &mut errors);
    }
    errors
}

// ---------------------------------------------------------------------------------------------------------
// The tests.

#[test]
fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("openapi");
    assert!(version.starts_with("3.1."), "{version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        resolve(&doc, &json!({ "$ref": r }));
    }
    let mut ids = BTreeSet::new();
    for (path, method, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(ids.insert(id), "operationId {id} twice");
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{id}: no responses");
        if let Some(scope) = op.get("x-scope") {
            let scope = scope.as_str().unwrap();
            assert!(scope.parse::<kiln_catalog::model::Scope>().is_ok(), "{id}: x-scope {scope}");
            assert!(op["responses"].get("401").is_some(), "{id}: needs a token, 401 not documented");
            assert!(op["responses"].get("403").is_some(), "{id}: needs a scope, 403 not documented");
        }
        // Every `{param}` of the template is declared, and every declared path parameter is in it.
        let declared: BTreeSet<String> = parameters(&doc, &path, op)
            .into_iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        // `{name}` anywhere in a segment (`/boot/{family}/{version}.ipxe`).
        let used: BTreeSet<String> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}').map(|(name, _)| name.to_owned()))
            .collect();
        assert_eq!(declared, used, "{id}");
    }
}

#[test]
fn the_server_serves_the_document() {
    let b = Bundles::new();
    let s = Server::for_bundles(&b);
    let a = s.http.get("/api/v1/openapi.json", None);
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type(), "application/json");
    assert_eq!(a.text(), DOCUMENT);
}

#[test]
fn every_route_the_server_knows_is_documented() {
    let doc = document();
    let documented: BTreeSet<(String, String)> =
        operations(&doc).into_iter().map(|(p, m, _)| (m.to_ascii_uppercase(), p)).collect();
    let known: BTreeSet<(String, String)> = ROUTES
        .iter()
        .chain(kiln_catalog::boot::action::ROUTES)
        .chain(kiln_catalog::registry::ROUTES)
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let undocumented: Vec<_> = known.difference(&documented).collect();
    assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
    let unknown: Vec<_> = documented.difference(&known).collect();
    assert!(unknown.is_empty(), "documented operations the server has no route for: {unknown:?}");
}

#[test]
fn every_documented_operation_answers_as_documented() {
    let doc = document();
    let live = Live::new();
    let s = &live.server;
    let admin = s.admin_token.clone();
    let mut errors = Vec::new();
    let mut by_path: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (path, method, op) in operations(&doc) {
        // The registry's requests depend on each other: `registry_operations_answer_as_documented`.
        if path.starts_with("/v2") {
            continue;
        }
        by_path.entry(path.clone()).or_default().insert(method);
        let id = op["operationId"].as_str().unwrap();
        // A revocation needs a token that exists: one made for it.
        let throwaway = s.token(&format!("for-{id}"), &["read"]);
        let token_id = s.catalog.authenticate(&throwaway).unwrap().id;
        // The required parameters only, then every documented one.
        for all in [false, true] {
            if all && method == "delete" {
                continue;
            }
            let url = live.url(&doc, &path, op, all, &token_id);
            let what = format!("{id}: {} {url}", method.to_ascii_uppercase());
            let a = live.send(method, &url, Some(&admin), live.body(&doc, op));
            if a.status == 404 && a.text().contains("no route") || a.status == 405 {
                errors.push(format!("{what}: no route: {} {}", a.status, a.text()));
                continue;
            }
            if !(200..300).contains(&a.status) {
                errors.push(format!("{what}: {} {}", a.status, a.text()));
                continue;
            }
            errors.extend(conforms(&doc, &what, op, &a));
        }
    }
    // The methods a path does not document are refused with the documented ones in `Allow`.
    for (path, methods) in &by_path {
        let op = &doc["paths"][path][*methods.iter().next().unwrap()];
        let url = live.url(&doc, path, op, false, "0123456789ab");
        let want: BTreeSet<String> = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        for m in METHODS.iter().filter(|m| !methods.contains(*m)) {
            let a = live.send(m, &url, Some(&admin), None);
            let allow: BTreeSet<String> =
                a.header("allow").unwrap_or("").split(',').map(|s| s.trim().to_owned()).collect();
            if a.status != 405 || allow != want {
                errors.push(format!("{m} {url}: {} with Allow {allow:?}, documented {want:?}", a.status));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn operations_with_a_scope_need_a_token_with_that_scope() {
    let doc = document();
    let live = Live::new();
    let s = &live.server;
    // A token with every scope but admin, which implies the others.
    let scopes = ["read", "publish", "promote", "lifecycle"];
    let mut errors = Vec::new();
    let mut scoped = 0;
    for (path, method, op) in operations(&doc) {
        // The registry's requests depend on each other: `registry_operations_answer_as_documented`.
        if path.starts_with("/v2") {
            continue;
        }
        let id = op["operationId"].as_str().unwrap();
        let url = live.url(&doc, &path, op, false, "0123456789ab");
        let what = format!("{id}: {} {url}", method.to_ascii_uppercase());
        let Some(scope) = op.get("x-scope").and_then(Value::as_str) else {
            // Public reads: no token needed.
            if method != "get" && method != "head" {
                errors.push(format!("{what}: a write without x-scope"));
            }
            let a = live.send(method, &url, None, live.body(&doc, op));
            if a.status == 401 || a.status == 403 {
                errors.push(format!("{what}: {} without a token, but no x-scope", a.status));
            }
            continue;
        };
        scoped += 1;
        let a = live.send(method, &url, None, live.body(&doc, op));
        if a.status != 401 || documented(&doc, op, 401).is_none() {
            errors.push(format!("{what}: {} without a token: {}", a.status, a.text()));
        } else {
            errors.extend(conforms(&doc, &what, op, &a));
        }
        // Every scope but this one (admin aside) is not enough.
        let others: Vec<&str> = scopes.iter().copied().filter(|s| *s != scope).collect();
        let token = s.token(&format!("not-{id}"), &others);
        let a = live.send(method, &url, Some(&token), live.body(&doc, op));
        if a.status != 403 || !a.text().contains(&format!("`{scope}` scope")) {
            errors.push(format!("{what}: {} with scopes {others:?}: {}", a.status, a.text()));
        }
        // Its own scope is.
        let token = s.token(&format!("only-{id}"), &[scope]);
        let a = live.send(method, &url, Some(&token), live.body(&doc, op));
        if a.status == 401 || a.status == 403 {
            errors.push(format!("{what}: {} with scope {scope}: {}", a.status, a.text()));
        }
    }
    assert!(scoped >= 8, "only {scoped} operations with x-scope");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The registry's operations (`/v2`, skipped by the tests above: their requests depend on each other —
/// an upload's id, a pushed digest) in one push-and-pull session: each documented operation is called
/// and answers a documented status with a body of the documented schema, every one of them is called,
/// the methods a path does not document get 405 with the documented ones in `Allow`, and every write
/// needs a token with its `x-scope`.
#[test]
fn registry_operations_answer_as_documented() {
    let doc = document();
    let bundles = Bundles::new();
    let s = Server::for_bundles(&bundles);
    let admin = s.admin_token.clone();
    let send = |method: &str, url: &str, token: Option<&str>, body: Option<&[u8]>| {
        s.http.request(method, url, token, body.map(|b| ("application/octet-stream", b.to_vec())))
    };
    let registry: Vec<(String, &str, &Value)> =
        operations(&doc).into_iter().filter(|(p, _, _)| p.starts_with("/v2")).collect();
    let op = |method: &str, path: &str| -> &Value {
        registry
            .iter()
            .find(|(p, m, _)| p == path && m.eq_ignore_ascii_case(method))
            .map(|(_, _, op)| *op)
            .unwrap_or_else(|| panic!("{method} {path} is not documented"))
    };
    let mut errors = Vec::new();
    let mut called = BTreeSet::new();
    let mut check = |method: &str, path: &str, a: &Answer, want: u16| {
        called.insert((method.to_ascii_lowercase(), path.to_owned()));
        let what = format!("{method} {path}");
        if a.status != want {
            errors.push(format!("{what}: {} (want {want}) {}", a.status, a.text()));
        }
        errors.extend(conforms(&doc, &what, op(method, path), a));
    };
    let repo = "docs/app";
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let digest = support::sha256(config);
    check("GET", "/v2/", &send("GET", "/v2/", Some(&admin), None), 200);
    check(
        "GET",
        "/v2/token",
        &send("GET", "/v2/token?service=kiln&scope=repository:docs/app:push,pull", Some(&admin), None),
        200,
    );
    let started = send("POST", &format!("/v2/{repo}/blobs/uploads/"), Some(&admin), None);
    check("POST", "/v2/{name}/blobs/uploads/", &started, 202);
    let upload = started.header("location").unwrap_or_default().to_owned();
    let session = "/v2/{name}/blobs/uploads/{id}";
    check("GET", session, &send("GET", &upload, Some(&admin), None), 204);
    check("PATCH", session, &send("PATCH", &upload, Some(&admin), Some(config)), 202);
    check("PUT", session, &send("PUT", &format!("{upload}?digest={digest}"), Some(&admin), None), 201);
    let blob = "/v2/{name}/blobs/{digest}";
    check("HEAD", blob, &send("HEAD", &format!("/v2/{repo}/blobs/{digest}"), Some(&admin), None), 200);
    check("GET", blob, &send("GET", &format!("/v2/{repo}/blobs/{digest}"), None, None), 200);
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len()},
        "layers": [],
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let m = "/v2/{name}/manifests/{reference}";
    let pushed = s.http.request(
        "PUT",
        &format!("/v2/{repo}/manifests/v1"),
        Some(&admin),
        Some(("application/vnd.oci.image.manifest.v1+json", bytes.clone())),
    );
    check("PUT", m, &pushed, 201);
    let md = support::sha256(&bytes);
    check("GET", m, &send("GET", &format!("/v2/{repo}/manifests/v1"), None, None), 200);
    check("HEAD", m, &send("HEAD", &format!("/v2/{repo}/manifests/{md}"), None, None), 200);
    check(
        "GET",
        "/v2/{name}/tags/list",
        &send("GET", &format!("/v2/{repo}/tags/list?n=10"), None, None),
        200,
    );
    let referrers = send("GET", &format!("/v2/{repo}/referrers/{md}"), None, None);
    check("GET", "/v2/{name}/referrers/{digest}", &referrers, 200);
    let other = send("POST", &format!("/v2/{repo}/blobs/uploads/"), Some(&admin), None);
    let other = other.header("location").unwrap_or_default().to_owned();
    check("DELETE", session, &send("DELETE", &other, Some(&admin), None), 204);
    check("DELETE", m, &send("DELETE", &format!("/v2/{repo}/manifests/v1"), Some(&admin), None), 202);
    check("DELETE", blob, &send("DELETE", &format!("/v2/{repo}/blobs/{digest}"), Some(&admin), None), 202);
    // An error answer is documented too.
    check("GET", m, &send("GET", &format!("/v2/{repo}/manifests/v1"), None, None), 404);

    let documented: BTreeSet<(String, String)> =
        registry.iter().map(|(p, m, _)| (m.to_string(), p.clone())).collect();
    assert_eq!(called, documented, "every registry operation is called");

    // Undocumented methods: 405 with the documented ones in `Allow`.
    let sample = |path: &str| {
        path.replace("{name}", repo)
            .replace("{reference}", "v1")
            .replace("{digest}", &digest)
            .replace("{id}", "00ff")
    };
    let mut by_path: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (p, m, _) in &registry {
        by_path.entry(p).or_default().insert(m.to_ascii_uppercase());
    }
    for (path, methods) in &by_path {
        for m in METHODS.iter().map(|m| m.to_ascii_uppercase()).filter(|m| !methods.contains(m)) {
            let a = send(&m, &sample(path), Some(&admin), None);
            let allow: BTreeSet<String> =
                a.header("allow").unwrap_or("").split(',').map(|s| s.trim().to_owned()).collect();
            if a.status != 405 || &allow != methods {
                errors.push(format!("{m} {path}: {} with Allow {allow:?}, documented {methods:?}", a.status));
            }
        }
    }

    // Writes need their scope: 401 without a token (the token flow's challenge), 403 without the scope.
    let reader = s.token("reader", &["read"]);
    for (path, method, op) in &registry {
        let is_write = !matches!(*method, "get" | "head");
        let Some(scope) = op.get("x-scope").and_then(Value::as_str) else {
            if is_write {
                errors.push(format!("{method} {path}: a write without x-scope"));
            }
            continue;
        };
        let mut url = sample(path);
        if *method == "put" && path.ends_with("{id}") {
            url.push_str(&format!("?digest={digest}"));
        }
        let a = send(&method.to_ascii_uppercase(), &url, None, None);
        if a.status != 401 || !a.header("www-authenticate").is_some_and(|c| c.starts_with("Bearer realm=")) {
            errors.push(format!("{method} {url}: {} without a token: {}", a.status, a.text()));
        }
        errors.extend(conforms(&doc, &format!("{method} {url}"), op, &a));
        let a = send(&method.to_ascii_uppercase(), &url, Some(&reader), None);
        if a.status != 403 || !a.text().contains(&format!("`{scope}` scope")) {
            errors.push(format!("{method} {url}: {} with a read token: {}", a.status, a.text()));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
