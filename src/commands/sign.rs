//! `kiln keygen`, `kiln sign` and `kiln verify`: key pairs in cosign's formats, signing a certified build
//! output (OCI signature in the layout, the provenance attestation, a detached signature per file), and
//! checking all of it offline with a public key.

use std::io::BufRead as _;

use anyhow::Context as _;
use kiln_sign::{
    keys::{self, KeySource},
    provenance::write_provenance,
    sign_files, sign_images, verify_dir, SignOptions, SigningKey,
};
use serde_json::json;

use crate::{
    cli::{KeygenArgs, SignArgs, VerifyArgs},
    UsageError,
};

/// The SLSA builder id written into provenance: `KILN_BUILDER_ID`, else a local builder's.
const DEFAULT_BUILDER_ID: &str = "https://kiln.invalid/builders/local";

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// The passphrase: the environment (KILN_SIGNING_PASSWORD, else COSIGN_PASSWORD), else a line of stdin when
/// asked to read it there.
fn passphrase(from_stdin: bool) -> anyhow::Result<Option<String>> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the passphrase from stdin")?;
        return Ok(Some(line.trim_end_matches(['\n', '\r']).to_owned()));
    }
    Ok(keys::passphrase_from_env(env))
}

pub fn keygen(args: &KeygenArgs, json: bool) -> anyhow::Result<()> {
    let pass = passphrase(args.passphrase_stdin)?.ok_or_else(|| {
        UsageError(format!(
            "no passphrase for the private key: set {} (or {}), or pass --passphrase-stdin",
            keys::ENV_PASSWORD,
            keys::ENV_COSIGN_PASSWORD
        ))
    })?;
    let key = SigningKey::generate();
    let files = keys::write_key_pair(&key, pass.as_bytes(), &args.out, args.force)
        .with_context(|| format!("cannot write the key pair {}.key/.pub", args.out.display()))?;
    let fingerprint = key.public_key().fingerprint();
    if json {
        return super::print_json(&json!({
            "private_key": files.private, "public_key": files.public, "fingerprint": fingerprint,
        }));
    }
    println!("private key  {} (encrypted, mode 0600)", files.private.display());
    println!("public key   {}", files.public.display());
    println!("fingerprint  {fingerprint}");
    Ok(())
}

pub fn sign(args: &SignArgs, json: bool) -> anyhow::Result<()> {
    let source = KeySource::resolve(args.key.as_deref(), env).map_err(|_| {
        UsageError(format!("no signing key: pass --key FILE or set {} to the key's PEM text", keys::ENV_KEY))
    })?;
    let pass = passphrase(args.passphrase_stdin)?;
    let key = keys::load_signing_key(&source, pass.as_deref().map(str::as_bytes))
        .context("cannot load the signing key")?;
    let dir = &args.dir;
    if !dir.join(kiln_testsuites::certify::CERTIFICATION_FILE).is_file() {
        tracing::warn!(
            "{} has no certification report: run `kiln test` first (the catalog takes only certified images)",
            dir.display()
        );
    }
    let opts = SignOptions { reference: args.reference.clone() };
    // 1. the OCI images, inside their layouts; 2. the provenance, naming the final digests; 3. every file.
    let images = sign_images(dir, &key, &opts)
        .with_context(|| format!("cannot sign the images of {}", dir.display()))?;
    let builder_id = env("KILN_BUILDER_ID").unwrap_or_else(|| DEFAULT_BUILDER_ID.to_owned());
    let has_materials = kiln_blueprint::manifest::Manifest::read(dir)?
        .artifacts
        .iter()
        .any(|a| a.kind == kiln_blueprint::manifest::ArtifactKind::Materials);
    if has_materials {
        write_provenance(dir, &key, &builder_id)
            .with_context(|| format!("cannot write the provenance of {}", dir.display()))?;
    } else {
        tracing::warn!("{} lists no build materials: no provenance written", dir.display());
    }
    let report = sign_files(dir, &key).with_context(|| format!("cannot sign {}", dir.display()))?;
    if json {
        let images: Vec<_> = images
            .iter()
            .map(|i| json!({"digest": i.digest, "reference": i.reference, "signature_manifest": i.signature_manifest, "referrer": i.referrer}))
            .collect();
        return super::print_json(
            &json!({"key": report.key, "signatures": report.signatures, "images": images, "provenance": has_materials}),
        );
    }
    println!("signed {} with key {}", dir.display(), report.key);
    for i in &images {
        println!("image   {} as {} (signature {})", i.digest, i.reference, i.signature_manifest);
    }
    for s in &report.signatures {
        println!("sig     {s}");
    }
    Ok(())
}

pub fn verify(args: &VerifyArgs, json: bool) -> anyhow::Result<()> {
    let key = keys::load_public_key(&args.key)
        .with_context(|| format!("cannot read the public key {}", args.key.display()))?;
    let fetched = if args.target.is_dir() { None } else { Some(fetch_from_catalog(args)?) };
    let dir = fetched.as_ref().map_or(args.target.as_path(), |f| f.0.as_path());
    let report = verify_dir(dir, &key, args.reference.as_deref())
        .with_context(|| format!("{} does not verify", args.target.display()))?;
    drop(fetched);
    if json {
        let artifacts: Vec<_> = report
            .artifacts
            .iter()
            .map(|a| json!({"kind": a.kind, "path": a.path, "sha256": a.sha256, "size": a.size}))
            .collect();
        let images: Vec<_> =
            report.images.iter().map(|i| json!({"digest": i.digest, "reference": i.reference})).collect();
        return super::print_json(&json!({
            "verified": true, "name": report.name, "version": report.version, "key": report.key,
            "artifacts": artifacts, "signatures": report.signatures, "images": images,
        }));
    }
    println!("verified {} {} with key {}", report.name, report.version, report.key);
    for a in &report.artifacts {
        println!(
            "  {:<10} {}  {}",
            serde_json::to_value(a.kind)?.as_str().unwrap_or_default(),
            a.sha256,
            a.path
        );
    }
    for i in &report.images {
        println!("  image      {} signed as {}", i.digest, i.reference);
    }
    Ok(())
}

/// A catalog image downloaded to verify it; removed when dropped.
struct Fetched(std::path::PathBuf);

impl Drop for Fetched {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Download every file of the catalog image `args.target` (`FAMILY@VERSION|RANGE|CHANNEL`).
fn fetch_from_catalog(args: &VerifyArgs) -> anyhow::Result<Fetched> {
    use kiln_catalog::client::{BaseSelector, Client};
    let text = args.target.to_string_lossy();
    let Some((family, sel)) = text.split_once('@') else {
        return Err(UsageError(format!(
            "{text}: neither a build output folder nor a catalog image (FAMILY@VERSION, FAMILY@RANGE or FAMILY@CHANNEL)"
        ))
        .into());
    };
    let catalog = args.catalog.as_deref().ok_or_else(|| {
        UsageError(format!("{text}: a catalog image needs --catalog URL|PATH (or KILN_CATALOG)"))
    })?;
    let selector = if sel.starts_with(|c: char| c.is_ascii_digit() || "^~=<>*".contains(c)) {
        BaseSelector::Version(sel.to_owned())
    } else {
        BaseSelector::Channel(sel.to_owned())
    };
    let client = Client::open(catalog, args.token.clone())
        .with_context(|| format!("cannot open the catalog {catalog}"))?;
    let record =
        client.pick(family, &selector).with_context(|| format!("cannot find {text} in {catalog}"))?;
    let dir = Fetched(std::env::temp_dir().join(format!("kiln-verify-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    tracing::info!("downloading {} from {catalog}", record.id());
    client.download(&record, "", &dir.0).with_context(|| format!("cannot download {}", record.id()))?;
    Ok(dir)
}
