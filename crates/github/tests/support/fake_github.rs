//! A fake GitHub REST API on `127.0.0.1:0` for tests (shared by kiln's own tests): it records every request
//! (method, path, headers, JSON body) and answers the calls kiln makes as GitHub does: releases looked up by
//! tag (drafts are not found that way), created (201; 422 `already_exists` when the tag has a release),
//! updated (200), commit statuses created (201); a wrong token gets 401 `Bad credentials`, another
//! repository 404. Plain `std` networking, one connection at a time, `Connection: close`.

// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde_json::{json, Value};

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// With the query, if any.
    pub path: String,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
}

impl Recorded {
    /// The values of header `name`.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(k, _)| *k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The one value of header `name` (panics when absent or repeated).
    pub fn header(&self, name: &str) -> &str {
        match self.header_values(name).as_slice() {
            [v] => v,
            other => panic!("{} {}: header {name}: {other:?}", self.method, self.path),
        }
    }
}

/// A release the fake holds.
#[derive(Debug, Clone)]
pub struct FakeRelease {
    pub id: u64,
    pub tag: String,
    pub name: String,
    pub body: String,
    pub target_commitish: String,
    pub draft: bool,
}

/// A commit status the fake holds.
#[derive(Debug, Clone)]
pub struct FakeStatus {
    pub sha: String,
    pub body: Value,
}

#[derive(Debug, Default)]
struct State {
    requests: Vec<Recorded>,
    releases: Vec<FakeRelease>,
    statuses: Vec<FakeStatus>,
    /// Answer the next request with this status and body instead (once).
    next_failure: Option<(u16, Value)>,
}

/// The fake server; stops when dropped.
#[derive(Debug)]
pub struct FakeGitHub {
    /// `http://127.0.0.1:PORT` plus the API prefix.
    pub url: String,
    pub owner: String,
    pub repo: String,
    pub token: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl FakeGitHub {
    /// GitHub's API at the root of the server (as api.github.com).
    pub fn start(owner: &str, repo: &str, token: &str) -> Self {
        Self::start_at("", owner, repo, token)
    }

    /// The API under `prefix` (`/api/v3`, as a GitHub Enterprise server has it).
    pub fn start_at(prefix: &str, owner: &str, repo: &str, token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let api = Api {
            prefix: prefix.to_owned(),
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            token: token.to_owned(),
            base: format!("http://{addr}{prefix}"),
        };
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let _ = serve_one(conn, &api, &state);
                    }
                }
            })
        };
        Self {
            url: format!("http://{addr}{prefix}"),
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            token: token.to_owned(),
            state,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    /// `OWNER/REPO`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn releases(&self) -> Vec<FakeRelease> {
        self.state.lock().unwrap().releases.clone()
    }

    pub fn statuses(&self) -> Vec<FakeStatus> {
        self.state.lock().unwrap().statuses.clone()
    }

    /// A release that exists already (a draft is not found by its tag, as on GitHub).
    pub fn add_release(&self, tag: &str, body: &str, draft: bool) -> u64 {
        let mut s = self.state.lock().unwrap();
        let id = 1000 + s.releases.len() as u64;
        s.releases.push(FakeRelease {
            id,
            tag: tag.into(),
            name: tag.into(),
            body: body.into(),
            target_commitish: "main".into(),
            draft,
        });
        id
    }

    /// Answer the next request with `status` and `body`, whatever it is.
    pub fn fail_next(&self, status: u16, body: Value) {
        self.state.lock().unwrap().next_failure = Some((status, body));
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Api {
    prefix: String,
    owner: String,
    repo: String,
    token: String,
    base: String,
}

fn release_json(base: &str, owner: &str, repo: &str, r: &FakeRelease) -> Value {
    let web = format!("https://github.example/{owner}/{repo}");
    json!({
        "url": format!("{base}/repos/{owner}/{repo}/releases/{}", r.id),
        "html_url": format!("{web}/releases/tag/{}", r.tag),
        "assets_url": format!("{base}/repos/{owner}/{repo}/releases/{}/assets", r.id),
        "upload_url": format!("{base}/repos/{owner}/{repo}/releases/{}/assets{{?name,label}}", r.id),
        "tarball_url": format!("{base}/repos/{owner}/{repo}/tarball/{}", r.tag),
        "zipball_url": format!("{base}/repos/{owner}/{repo}/zipball/{}", r.tag),
        "id": r.id,
        "node_id": format!("RE_{}", r.id),
        "tag_name": r.tag,
        "target_commitish": r.target_commitish,
        "name": r.name,
        "body": r.body,
        "draft": r.draft,
        "prerelease": false,
        "created_at": "2026-01-02T03:04:05Z",
        "published_at": if r.draft { Value::Null } else { json!("2026-01-02T03:04:05Z") },
        "author": null,
        "assets": []
    })
}

fn not_found() -> (u16, Value) {
    (404, json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" }))
}

/// GitHub's answer to one request.
fn answer(api: &Api, req: &Recorded, state: &mut State) -> (u16, Value) {
    if let Some(f) = state.next_failure.take() {
        return f;
    }
    let auth = req.header_values("authorization");
    if auth != [format!("Bearer {}", api.token)] && auth != [format!("token {}", api.token)] {
        return (
            401,
            json!({ "message": "Bad credentials", "documentation_url": "https://docs.github.com/rest" }),
        );
    }
    let Some(path) = req.path.strip_prefix(&api.prefix) else { return not_found() };
    let Some(rest) = path.strip_prefix(&format!("/repos/{}/{}/", api.owner, api.repo)) else {
        return not_found();
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let str_of = |k: &str| req.body.get(k).and_then(Value::as_str).map(str::to_owned);
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["releases", "tags", tag]) => {
            match state.releases.iter().find(|r| r.tag == *tag && !r.draft) {
                Some(r) => (200, release_json(&api.base, &api.owner, &api.repo, r)),
                None => not_found(),
            }
        }
        ("POST", ["releases"]) => {
            let Some(tag) = str_of("tag_name") else {
                return (
                    422,
                    json!({ "message": "Validation Failed",
                        "errors": [{ "resource": "Release", "code": "missing_field", "field": "tag_name" }] }),
                );
            };
            if state.releases.iter().any(|r| r.tag == tag) {
                return (
                    422,
                    json!({ "message": "Validation Failed",
                        "errors": [{ "resource": "Release", "code": "already_exists", "field": "tag_name" }],
                        "documentation_url": "https://docs.github.com/rest/releases/releases#create-a-release" }),
                );
            }
            let r = FakeRelease {
                id: 1000 + state.releases.len() as u64,
                name: str_of("name").unwrap_or_else(|| tag.clone()),
                body: str_of("body").unwrap_or_default(),
                target_commitish: str_of("target_commitish").unwrap_or_else(|| "main".into()),
                draft: req.body.get("draft").and_then(Value::as_bool).unwrap_or(false),
                tag,
            };
            let v = release_json(&api.base, &api.owner, &api.repo, &r);
            state.releases.push(r);
            (201, v)
        }
        ("PATCH", ["releases", id]) => {
            let Some(r) = state.releases.iter_mut().find(|r| r.id.to_string() == *id) else {
                return not_found();
            };
            if let Some(n) = str_of("name") {
                r.name = n;
            }
            if let Some(b) = str_of("body") {
                r.body = b;
            }
            let r = r.clone();
            (200, release_json(&api.base, &api.owner, &api.repo, &r))
        }
        ("POST", ["statuses", sha]) => {
            let Some(s) = str_of("state") else {
                return (422, json!({ "message": "Validation Failed" }));
            };
            state.statuses.push(FakeStatus { sha: (*sha).to_owned(), body: req.body.clone() });
            let n = state.statuses.len();
            (
                201,
                json!({
                    "url": format!("{}/repos/{}/{}/statuses/{sha}", api.base, api.owner, api.repo),
                    "id": n, "node_id": format!("SC_{n}"), "state": s,
                    "description": req.body.get("description"), "target_url": req.body.get("target_url"),
                    "context": req.body.get("context").cloned().unwrap_or(json!("default")),
                    "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-01-02T03:04:05Z"
                }),
            )
        }
        _ => not_found(),
    }
}

fn serve_one(conn: TcpStream, api: &Api, state: &Mutex<State>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or("").to_owned(), words.next().unwrap_or("").to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|e| json!({ "not JSON": e.to_string() }))
    };
    let req = Recorded { method, path, headers, body };
    let (status, answer) = {
        let mut s = state.lock().unwrap();
        s.requests.push(req.clone());
        answer(api, &req, &mut s)
    };
    let text = answer.to_string();
    let reason = match status {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        _ => "Error",
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n\
         x-github-media-type: github.v3; format=json\r\nconnection: close\r\n\r\n{text}",
        text.len()
    )?;
    conn.flush()?;
    Ok(())
}
