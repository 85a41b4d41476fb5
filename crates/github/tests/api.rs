//! The GitHub client against a fake GitHub REST API on 127.0.0.1 that records every request: the method,
//! path, headers and JSON body of each call (release looked up by tag, created, updated on a re-run; commit
//! statuses), GitHub Enterprise's `/api/v3` prefix, and GitHub's error answers (422 `already_exists`, 401
//! `Bad credentials`, no server at all) as typed errors.

mod support;

use kiln_github::{
    announce_failed, announce_published, body, CommitStatus, GitHub, GitHubError, PublishedVersion,
    Repository, StatusState,
};
use serde_json::{json, Value};
use support::fake_github::{FakeGitHub, Recorded};

const TOKEN: &str = "ghs_test0123456789";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn client(fake: &FakeGitHub) -> GitHub {
    GitHub::new(&fake.url, TOKEN, fake.repository().parse().unwrap()).unwrap()
}

/// The headers every call carries: the token, GitHub's media type and API version, a user agent.
fn assert_github_headers(r: &Recorded) {
    assert_eq!(r.header("authorization"), format!("Bearer {TOKEN}"), "{} {}", r.method, r.path);
    assert_eq!(r.header("accept"), "application/vnd.github+json");
    assert_eq!(r.header("x-github-api-version"), "2022-11-28");
    assert!(!r.header("user-agent").is_empty());
    if r.body != Value::Null {
        assert_eq!(r.header("content-type"), "application/json");
    }
}

fn calls(fake: &FakeGitHub) -> Vec<String> {
    fake.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect()
}

#[test]
fn a_release_is_created_for_a_new_tag_and_updated_in_place_on_a_rerun() {
    let fake = FakeGitHub::start("example-org", "images", TOKEN);
    let gh = client(&fake);

    let first = gh.release("debian-base-1.0.0", "debian-base 1.0.0", "notes v1", Some(SHA)).unwrap();
    assert!(first.created);
    assert_eq!(first.tag, "debian-base-1.0.0");
    assert_eq!(first.url, "https://github.example/example-org/images/releases/tag/debian-base-1.0.0");
    assert_eq!(
        calls(&fake),
        [
            "GET /repos/example-org/images/releases/tags/debian-base-1.0.0",
            "POST /repos/example-org/images/releases"
        ]
    );
    let reqs = fake.requests();
    reqs.iter().for_each(assert_github_headers);
    assert_eq!(reqs[0].body, Value::Null);
    assert_eq!(
        reqs[1].body,
        json!({ "tag_name": "debian-base-1.0.0", "target_commitish": SHA, "name": "debian-base 1.0.0",
                "body": "notes v1" })
    );

    // The same version again (a re-run): found by its tag, its text replaced; no second release.
    let again = gh.release("debian-base-1.0.0", "debian-base 1.0.0", "notes v2", Some(SHA)).unwrap();
    assert!(!again.created);
    assert_eq!(again.id, first.id);
    let reqs = fake.requests();
    assert_eq!(
        calls(&fake)[2..],
        [
            "GET /repos/example-org/images/releases/tags/debian-base-1.0.0".to_owned(),
            format!("PATCH /repos/example-org/images/releases/{}", first.id)
        ]
    );
    reqs[2..].iter().for_each(assert_github_headers);
    assert_eq!(
        (reqs[3].body["name"].as_str(), reqs[3].body["body"].as_str()),
        (Some("debian-base 1.0.0"), Some("notes v2"))
    );
    assert_eq!(reqs[3].body.get("tag_name"), None, "the tag is left as it is");
    let releases = fake.releases();
    assert_eq!(releases.len(), 1);
    assert_eq!((releases[0].body.as_str(), releases[0].target_commitish.as_str()), ("notes v2", SHA));
}

#[test]
fn without_a_commit_the_tag_goes_on_the_default_branch() {
    let fake = FakeGitHub::start("o", "r", TOKEN);
    client(&fake).release("f-1.0.0", "f 1.0.0", "text", None).unwrap();
    let post = &fake.requests()[1];
    assert_eq!(post.body.get("target_commitish"), None);
}

#[test]
fn a_commit_status_is_posted_with_its_context_description_and_link() {
    let fake = FakeGitHub::start("o", "r", TOKEN);
    let gh = client(&fake);
    let success = CommitStatus {
        state: StatusState::Success,
        context: "kiln/debian-base".into(),
        description: "debian-base 1.0.0 is published in the catalog".into(),
        target_url: Some("https://catalog.example.org/families/debian-base/1.0.0".into()),
    };
    gh.commit_status(SHA, &success).unwrap();
    let failure = CommitStatus {
        state: StatusState::Failure,
        context: "kiln/debian-base".into(),
        description: "test failed: 2 checks failed".into(),
        target_url: None,
    };
    gh.commit_status(SHA, &failure).unwrap();
    let pending = CommitStatus { state: StatusState::Pending, ..failure.clone() };
    gh.commit_status(SHA, &pending).unwrap();

    assert_eq!(calls(&fake), vec![format!("POST /repos/o/r/statuses/{SHA}"); 3]);
    let reqs = fake.requests();
    reqs.iter().for_each(assert_github_headers);
    assert_eq!(
        reqs[0].body,
        json!({ "state": "success", "context": "kiln/debian-base",
                "target_url": "https://catalog.example.org/families/debian-base/1.0.0",
                "description": "debian-base 1.0.0 is published in the catalog" })
    );
    assert_eq!(
        reqs[1].body,
        json!({ "state": "failure", "context": "kiln/debian-base", "description": "test failed: 2 checks failed" })
    );
    assert_eq!(reqs[2].body["state"], "pending");
}

#[test]
fn a_github_enterprise_url_keeps_its_api_path() {
    let fake = FakeGitHub::start_at("/api/v3", "o", "r", TOKEN);
    assert!(fake.url.ends_with("/api/v3"));
    let gh = GitHub::new(&format!("{}/", fake.url), TOKEN, "o/r".parse().unwrap()).unwrap();
    assert_eq!(gh.api_url(), fake.url);
    gh.release("f-1.0.0", "f 1.0.0", "text", None).unwrap();
    gh.commit_status(
        SHA,
        &CommitStatus {
            state: StatusState::Success,
            context: "kiln/f".into(),
            description: "ok".into(),
            target_url: None,
        },
    )
    .unwrap();
    assert_eq!(
        calls(&fake),
        [
            "GET /api/v3/repos/o/r/releases/tags/f-1.0.0".to_owned(),
            "POST /api/v3/repos/o/r/releases".to_owned(),
            format!("POST /api/v3/repos/o/r/statuses/{SHA}")
        ]
    );
}

#[test]
fn a_tag_held_by_a_draft_release_is_a_422_already_exists_error() {
    let fake = FakeGitHub::start("o", "r", TOKEN);
    // GitHub does not find drafts by their tag, and refuses a second release with that tag.
    fake.add_release("f-1.0.0", "draft text", true);
    let e = client(&fake).release("f-1.0.0", "f 1.0.0", "text", None).unwrap_err();
    assert_eq!(e.status(), Some(422));
    assert!(e.has_code("already_exists"), "{e:?}");
    match &e {
        GitHubError::Api { action, message, documentation_url, .. } => {
            assert_eq!(action, "create the release f-1.0.0 of o/r");
            assert_eq!(message, "Validation Failed");
            assert!(documentation_url.as_deref().unwrap_or("").contains("create-a-release"));
        }
        other => panic!("not GitHub's answer: {other:?}"),
    }
    assert_eq!(
        e.to_string(),
        "create the release f-1.0.0 of o/r: GitHub answered 422: Validation Failed (already_exists)"
    );
    assert_eq!(fake.releases().len(), 1, "nothing was changed");
}

#[test]
fn a_wrong_token_is_a_401_error_and_nothing_is_written() {
    let fake = FakeGitHub::start("o", "r", TOKEN);
    let gh = GitHub::new(&fake.url, "ghs_wrong", "o/r".parse().unwrap()).unwrap();
    let e = gh.release("f-1.0.0", "f 1.0.0", "text", None).unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert_eq!(e.to_string(), "look up the release f-1.0.0 of o/r: GitHub answered 401: Bad credentials");
    assert_eq!(calls(&fake), ["GET /repos/o/r/releases/tags/f-1.0.0"], "no create after a refused look-up");
    let status = CommitStatus {
        state: StatusState::Success,
        context: "kiln/f".into(),
        description: "ok".into(),
        target_url: None,
    };
    let e = gh.commit_status(SHA, &status).unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(e.to_string().starts_with(&format!("set the status kiln/f on o/r@{SHA}: GitHub answered 401")));
    assert!(fake.releases().is_empty() && fake.statuses().is_empty());
}

#[test]
fn another_repository_is_a_404_error() {
    let fake = FakeGitHub::start("o", "r", TOKEN);
    let gh = GitHub::new(&fake.url, TOKEN, "o/elsewhere".parse().unwrap()).unwrap();
    let status = CommitStatus {
        state: StatusState::Success,
        context: "kiln/f".into(),
        description: "ok".into(),
        target_url: None,
    };
    let e = gh.commit_status(SHA, &status).unwrap_err();
    assert_eq!((e.status(), e.has_code("already_exists")), (Some(404), false));
    assert!(e.to_string().ends_with("GitHub answered 404: Not Found"), "{e}");
}

#[test]
fn no_server_is_a_request_error_naming_what_was_done() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gh = GitHub::new(&format!("http://127.0.0.1:{port}"), TOKEN, "o/r".parse().unwrap()).unwrap();
    let e = gh.release("f-1.0.0", "f 1.0.0", "text", None).unwrap_err();
    assert!(matches!(e, GitHubError::Request { .. }), "{e:?}");
    assert_eq!(e.status(), None);
    assert!(e.to_string().starts_with("look up the release f-1.0.0 of o/r: "), "{e}");
}

#[test]
fn bad_settings_are_refused_before_any_request() {
    let repo = || "o/r".parse::<Repository>().unwrap();
    for url in ["api.github.com", "ftp://api.github.com", "https://", "https:///api", "http://h/x?y=1"] {
        let e = GitHub::new(url, TOKEN, repo()).unwrap_err();
        assert!(matches!(&e, GitHubError::BadApiUrl { url: u, .. } if u == url), "{url}: {e:?}");
        assert!(e.is_usage());
    }
    let e = GitHub::new("https://api.github.com", "  ", repo()).unwrap_err();
    assert!(matches!(e, GitHubError::EmptyToken) && e.is_usage());
    assert!("o".parse::<Repository>().unwrap_err().is_usage());
}

fn version_record() -> Value {
    json!({
        "family": "debian-base", "version": "1.0.0", "manifest_digest": "sha256:aaaa",
        "signed_by": "SHA256:key", "certified": ["base-os@1.0.0"],
        "artifacts": [
            { "kind": "raw", "path": "disk.raw", "digest": "sha256:1111", "size": 65536 },
            { "kind": "qcow2", "path": "disk.qcow2", "digest": "sha256:2222", "size": 4096 }
        ]
    })
}

#[test]
fn a_publish_is_announced_with_a_release_and_a_success_status() {
    let fake = FakeGitHub::start("o", "r", TOKEN);
    let v = PublishedVersion::from_json(&version_record()).unwrap();
    let url = body::catalog_version_url("http://catalog:8080", &v.family, &v.version);
    let a = announce_published(&client(&fake), &v, "# debian-base 1.0.0\n", url.as_deref(), Some(SHA));
    assert!(a.ok(), "{:?}", a.errors);
    let release = a.release.as_ref().unwrap();
    assert_eq!((release.tag.as_str(), release.created), ("debian-base-1.0.0", true));
    let status = a.status.as_ref().unwrap();
    assert_eq!(status.sha, SHA);
    assert_eq!(
        serde_json::to_value(&a).unwrap()["status"],
        json!({ "sha": SHA, "state": "success", "context": "kiln/debian-base",
                "description": "debian-base 1.0.0 is published in the catalog",
                "target_url": "http://catalog:8080/families/debian-base/1.0.0" })
    );
    let posted = &fake.requests()[1].body;
    assert_eq!(posted["name"], "debian-base 1.0.0");
    assert_eq!(posted["body"], body::release_body(&v, "# debian-base 1.0.0\n", url.as_deref()));
    assert_eq!(fake.statuses()[0].body["target_url"], "http://catalog:8080/families/debian-base/1.0.0");
}

#[test]
fn a_failed_release_still_sets_the_status_and_is_reported() {
    let fake = FakeGitHub::start("o", "r", TOKEN);
    fake.fail_next(500, json!({ "message": "Server Error" }));
    let v = PublishedVersion::from_json(&version_record()).unwrap();
    let a = announce_published(&client(&fake), &v, "notes", None, Some(SHA));
    assert!(a.release.is_none());
    assert_eq!(a.errors.len(), 1);
    assert_eq!(a.errors[0].status(), Some(500));
    assert_eq!(a.status.as_ref().map(|s| s.status.state), Some(StatusState::Success));
    assert_eq!(fake.statuses().len(), 1);
}

#[test]
fn a_failed_stage_sets_a_failure_status_and_without_a_commit_nothing_is_sent() {
    let fake = FakeGitHub::start("o", "r", TOKEN);
    let gh = client(&fake);
    let a = announce_failed(&gh, "debian-base", Some(SHA), "test", "2 checks failed:\nssh listens");
    assert!(a.ok(), "{:?}", a.errors);
    assert_eq!(
        fake.statuses()[0].body,
        json!({ "state": "failure", "context": "kiln/debian-base",
                "description": "test failed: 2 checks failed: ssh listens" })
    );
    let a = announce_failed(&gh, "debian-base", None, "plan", "bad");
    assert!(matches!(a.errors.as_slice(), [GitHubError::NoCommit]));
    assert_eq!(fake.requests().len(), 1);
}
