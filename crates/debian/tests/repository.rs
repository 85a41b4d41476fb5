//! End-to-end tests against a generated, signed repository served over loopback HTTP: signature and
//! index verification, resolution, and verified downloads into the cache.

mod support;

use std::process::Command;

use kiln_debian::{
    cache::DownloadError,
    host_sources,
    release::{FileEntry, Sha256},
    repo::RepoError,
    repo::{Overrides, RepoSpec},
    resolve::{ResolveError, Variant},
    signature::{Keys, SignatureError},
    testrepo::{TestKey, EPOCH},
    Request,
};
use support::{files_under, Fixture, SUITE};

fn names(r: &kiln_debian::Resolution) -> Vec<String> {
    r.packages.iter().map(|p| format!("{}={}", p.name, p.version)).collect()
}

#[test]
fn resolves_and_downloads_a_verified_package_set() {
    let fx = Fixture::new();
    let client = fx.client();
    let repo = client.open(&fx.spec()).unwrap();
    assert_eq!(repo.signer(), fx.key.fingerprint);
    assert!(repo.release().acquire_by_hash);

    let universe = repo.universe("amd64").unwrap();
    // The index was fetched by hash, xz-compressed.
    let xz = &repo.release().files["main/binary-amd64/Packages.xz"];
    let by_hash = format!("/dists/{SUITE}/main/binary-amd64/by-hash/SHA256/{}", xz.sha256);
    assert!(fx.server.requests().contains(&by_hash), "{:?}", fx.server.requests());
    assert_eq!(universe.versions("libtest1").count(), 3);

    let request = Request { variant: Variant::Minbase, include: vec!["tool".into()], exclude: vec![] };
    let resolution = universe.resolve(&request).unwrap();
    assert_eq!(
        names(&resolution),
        [
            "apt=2.6",
            "base-files=13",
            "dash-lite=0.5-1",
            "editor-lite=7",
            "gpgv-lite=2.2",
            "libtest1=2.0",
            "mawk-lite=1.3",
            "tool=1.0",
        ]
    );
    let order = &resolution.install_order;
    let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
    assert!(pos("libtest1") < pos("dash-lite"), "{order:?}");
    assert!(pos("libtest1") < pos("tool") && pos("editor-lite") < pos("tool"), "{order:?}");

    let paths = client.download(&resolution.packages).unwrap();
    assert_eq!(paths.len(), resolution.packages.len());
    for (p, path) in resolution.packages.iter().zip(&paths) {
        assert_eq!(*path, client.cache().path_for(&p.sha256));
        let bytes = fs_err::read(path).unwrap();
        assert_eq!(Sha256::of(&bytes), p.sha256);
        assert_eq!(bytes, fs_err::read(fx.repo.root.join(&p.filename)).unwrap());
    }
    // A second download is served from the (re-verified) cache without asking the server.
    let before = fx.server.requests().len();
    assert_eq!(client.download(&resolution.packages).unwrap(), paths);
    assert_eq!(fx.server.requests().len(), before);

    // The packages are real: maintainer scripts and conffiles are where dpkg expects them.
    let base = resolution.packages.iter().position(|p| p.name == "base-files").unwrap();
    let info = Command::new("dpkg-deb").arg("--info").arg(&paths[base]).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("postinst") && info.contains("conffiles"), "{info}");
}

#[test]
fn file_mirrors_work_too() {
    let fx = Fixture::new();
    let mut spec = fx.spec();
    spec.mirror = fx.repo.file_url();
    let client = fx.client();
    let repo = client.open(&spec).unwrap();
    let universe = repo.universe("amd64").unwrap();
    let r = universe
        .resolve(&Request { variant: Variant::Custom, include: vec!["tool".into()], exclude: vec![] })
        .unwrap();
    assert_eq!(names(&r), ["editor-lite=7", "libtest1=2.0", "mawk-lite=1.3", "tool=1.0"]);
    let paths = client.download(&r.packages).unwrap();
    assert!(paths.iter().all(|p| p.is_file()));
    assert!(fx.server.requests().is_empty());
}

#[test]
fn an_unsatisfiable_request_explains_why() {
    let fx = Fixture::new();
    let universe = fx.client().open(&fx.spec()).unwrap().universe("amd64").unwrap();
    let request = Request { variant: Variant::Minbase, include: vec!["needs-new".into()], exclude: vec![] };
    let err = universe.resolve(&request).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsatisfiable: needs-new 1.0 depends on libtest1 (>= 3.0), but the repository has only libtest1 1.0, \
         2.0~rc1, 2.0\n  needs-new 1.0 is wanted because it is in the include list"
    );

    // Excluding a package that apt and an Essential package need (apt comes first in name order).
    let request = Request { variant: Variant::Minbase, include: vec![], exclude: vec!["libtest1".into()] };
    assert_eq!(
        universe.resolve(&request).unwrap_err().to_string(),
        "unsatisfiable: apt 2.6 depends on libtest1 (>= 2.0), but libtest1 is excluded by the request\n  \
         apt 2.6 is wanted because the variant includes it"
    );

    let request = Request { variant: Variant::Minbase, include: vec!["conflicting".into()], exclude: vec![] };
    match universe.resolve(&request).unwrap_err() {
        ResolveError::Conflicts(pairs) => {
            assert_eq!(pairs.len(), 1);
            assert_eq!(
                pairs[0].to_string(),
                "conflicting 1.0 conflicts with base-files 13 (Conflicts: base-files)"
            );
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_tampered_deb_is_rejected_and_not_cached() {
    let fx = Fixture::new();
    let client = fx.client();
    let universe = client.open(&fx.spec()).unwrap().universe("amd64").unwrap();
    let tool = universe.candidate("tool").unwrap().clone();

    // Change bytes of the file after it was indexed (same size).
    let path = fx.repo.deb_path("tool").unwrap();
    let mut bytes = fs_err::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    fs_err::write(&path, &bytes).unwrap();

    match client.download(std::slice::from_ref(&tool)) {
        Err(RepoError::Download(DownloadError::DigestMismatch(m))) => {
            assert_eq!(m.what, "tool 1.0 amd64");
            assert_eq!(m.expected, FileEntry { size: tool.size, sha256: tool.sha256 });
            assert_eq!(m.actual, FileEntry { size: n as u64, sha256: Sha256::of(&bytes) });
            assert!(m.url.ends_with(&fx.repo.deb("tool").unwrap().filename));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(!client.cache().path_for(&tool.sha256).exists());
    // Only the indices are in the cache: no partial or rejected .deb.
    let cached = files_under(client.cache().root());
    assert!(cached.iter().all(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        *universe.candidate("tool").unwrap().sha256.to_hex() != *name && !name.starts_with('.')
    }));
    assert_eq!(cached.len(), 1, "{cached:?}");

    // A bigger file is cut off and rejected as well.
    bytes.extend_from_slice(b"trailing junk");
    fs_err::write(&path, &bytes).unwrap();
    assert!(matches!(
        client.download(std::slice::from_ref(&tool)),
        Err(RepoError::Download(DownloadError::TooLarge { .. }))
    ));
    assert_eq!(files_under(client.cache().root()).len(), 1);
}

#[test]
fn a_release_signed_by_another_key_is_rejected() {
    let fx = Fixture::new();
    let other = TestKey::generate(fx.path(), "intruder").unwrap();
    fx.repo.write_indices(&other).unwrap();
    match fx.client().open(&fx.spec()) {
        Err(RepoError::Signature { source: SignatureError::UnknownKey { keys, .. }, url }) => {
            assert!(url.ends_with("/InRelease"));
            assert!(other.fingerprint.ends_with(&keys[0]), "{keys:?} vs {}", other.fingerprint);
        }
        other => panic!("expected an unknown-key error, got {other:?}"),
    }
    // Trusting the other key (and only that one) makes it pass.
    let mut spec = fx.spec();
    spec.keys = Keys { files: vec![other.keyring.clone()], ..Keys::default() };
    assert_eq!(fx.client().open(&spec).unwrap().signer(), other.fingerprint);
}

#[test]
fn a_release_edited_after_signing_is_rejected() {
    let fx = Fixture::new();
    let path = fx.repo.dists().join("InRelease");
    let text = fs_err::read_to_string(&path).unwrap();
    assert!(text.contains("Label: kiln-test"));
    fs_err::write(&path, text.replace("Label: kiln-test", "Label: kiln-evil")).unwrap();
    assert!(matches!(
        fx.client().open(&fx.spec()),
        Err(RepoError::Signature { source: SignatureError::BadSignature { .. }, .. })
    ));
}

#[test]
fn unsigned_text_around_the_signed_part_is_not_trusted() {
    let fx = Fixture::new();
    let path = fx.repo.dists().join("InRelease");
    let text = fs_err::read_to_string(&path).unwrap();
    // Text before the armor is not covered by the signature; it must not reach the parser.
    fs_err::write(&path, format!("Valid-Until: Thu, 01 Jan 1970 00:00:00 UTC\n\n{text}")).unwrap();
    match fx.client().open(&fx.spec()) {
        Ok(repo) => assert_eq!(repo.release().valid_until, None),
        Err(RepoError::Signature { .. }) => {}
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn a_packages_index_that_does_not_match_release_is_rejected() {
    let fx = Fixture::new();
    let client = fx.client();
    let repo = client.open(&fx.spec()).unwrap();
    let entry = repo.release().files["main/binary-amd64/Packages.xz"];
    let dir = fx.repo.dists().join("main/binary-amd64");
    // Swap in another (valid, signed-for-nothing) index at both paths.
    let forged = fs_err::read(dir.join("Packages.gz")).unwrap();
    fs_err::write(dir.join("Packages.xz"), &forged).unwrap();
    fs_err::write(dir.join("by-hash/SHA256").join(entry.sha256.to_hex()), &forged).unwrap();
    match repo.universe("amd64") {
        Err(RepoError::Download(DownloadError::DigestMismatch(m))) => {
            assert_eq!(m.what, "main/binary-amd64/Packages.xz");
            assert_eq!(m.expected, entry);
            assert_eq!(m.actual.sha256, Sha256::of(&forged));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(files_under(client.cache().root()).is_empty());
}

#[test]
fn by_hash_falls_back_to_the_plain_path_and_checks_it() {
    let fx = Fixture::new();
    let by_hash = fx.repo.dists().join("main/binary-amd64/by-hash");
    fs_err::remove_dir_all(&by_hash).unwrap();
    let repo = fx.client().open(&fx.spec()).unwrap();
    assert!(repo.universe("amd64").unwrap().candidate("tool").is_some());
    let requests = fx.server.requests();
    assert!(requests.contains(&format!("/dists/{SUITE}/main/binary-amd64/Packages.xz")), "{requests:?}");
}

#[test]
fn expired_or_foreign_releases_are_rejected() {
    let mut fx = Fixture::new();
    fx.repo.valid_until = Some(EPOCH + 86_400);
    fx.repo.write_indices(&fx.key).unwrap();
    let client = fx.client();
    let spec = fx.spec();
    assert_eq!(client.open_at(&spec, EPOCH + 3600).unwrap().release().valid_until, Some(EPOCH + 86_400));
    match client.open_at(&spec, EPOCH + 86_401) {
        Err(RepoError::Expired { valid_until, now, .. }) => {
            assert_eq!((valid_until, now), (EPOCH + 86_400, EPOCH + 86_401))
        }
        other => panic!("expected an expired Release, got {other:?}"),
    }

    // A properly signed Release of one suite served as another suite is refused.
    let dists = fx.repo.root.join("dists");
    let status =
        Command::new("cp").arg("-r").arg(dists.join(SUITE)).arg(dists.join("other")).status().unwrap();
    assert!(status.success());
    let other = RepoSpec { suite: "other".into(), ..fx.spec() };
    match client.open_at(&other, EPOCH) {
        Err(RepoError::WrongSuite { requested, found, .. }) => {
            assert_eq!((requested.as_str(), found.as_str()), ("other", SUITE))
        }
        other => panic!("expected a suite mismatch, got {other:?}"),
    }
}

#[test]
fn armored_and_inline_keys_verify() {
    let fx = Fixture::new();
    let armored = fx.key.armored().unwrap();
    let asc = fx.path().join("archive.asc");
    fs_err::write(&asc, &armored).unwrap();
    let spec = RepoSpec { keys: Keys { files: vec![asc], ..Keys::default() }, ..fx.spec() };
    assert_eq!(fx.client().open(&spec).unwrap().signer(), fx.key.fingerprint);

    // The same key inline in a deb822 sources file, found through the host sources of a root.
    let root = fx.path().join("root");
    let sources_d = root.join("etc/apt/sources.list.d");
    fs_err::create_dir_all(&sources_d).unwrap();
    let inline: String = armored
        .lines()
        .map(|l| if l.trim().is_empty() { " .\n".to_owned() } else { format!(" {l}\n") })
        .collect();
    fs_err::write(
        sources_d.join("test.sources"),
        format!(
            "Types: deb\nURIs: {}\nSuites: {SUITE}\nComponents: main\nSigned-By:\n{inline}",
            fx.server.url()
        ),
    )
    .unwrap();
    let host = host_sources(&root).unwrap();
    let spec = RepoSpec::choose(&host, &Overrides::default(), &root).unwrap();
    assert!(spec.keys.files.is_empty() && spec.keys.armored.len() == 1);
    assert_eq!(fx.client().open(&spec).unwrap().signer(), fx.key.fingerprint);

    // A fingerprint restriction that the signer does not meet fails.
    let spec = RepoSpec {
        keys: Keys { fingerprints: vec!["0123456789ABCDEF0123456789ABCDEF01234567".into()], ..spec.keys },
        ..spec
    };
    assert!(matches!(
        fx.client().open(&spec),
        Err(RepoError::Signature { source: SignatureError::WrongSigner { .. }, .. })
    ));
}
