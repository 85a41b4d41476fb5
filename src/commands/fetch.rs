//! `kiln fetch FAMILY@CHANNEL|VERSION|RANGE --out DIR --key PUB`: what a provisioning script calls. Resolves
//! the image (with `--contract`, the newest one certified for every range), refuses an end-of-life or revoked
//! one unless told, downloads its bundle, verifies every digest and signature with the key, and only then
//! puts it at DIR (a failed fetch leaves no DIR and an earlier one untouched).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kiln_catalog::{
    client::{BaseSelector, Client},
    model::{ContractRequest, Day, LifecycleState, Timestamp, VersionRecord},
    resolve::{IncludeState, ResolveRequest},
};
use serde_json::{json, Value};

use crate::{cli::FetchArgs, UsageError};

/// A folder being filled; removed unless kept.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn parse_ref(text: &str) -> anyhow::Result<(String, BaseSelector)> {
    let (family, sel) = text.split_once('@').ok_or_else(|| {
        UsageError(format!("`{text}`: expected FAMILY@CHANNEL, FAMILY@VERSION or FAMILY@RANGE"))
    })?;
    let selector = if sel.starts_with(|c: char| c.is_ascii_digit() || "^~=<>*".contains(c)) {
        BaseSelector::Version(sel.to_owned())
    } else {
        BaseSelector::Channel(sel.to_owned())
    };
    Ok((family.to_owned(), selector))
}

/// The version to fetch: `pick`'s answer, or with contracts the resolver's (a channel's history) or the
/// picked version checked against them.
fn choose(
    client: &Client,
    family: &str,
    selector: &BaseSelector,
    contracts: &[ContractRequest],
    allow_retired: bool,
) -> anyhow::Result<VersionRecord> {
    if contracts.is_empty() {
        return Ok(client.pick(family, selector)?);
    }
    match selector {
        BaseSelector::Channel(channel) => {
            let include = if allow_retired {
                vec![IncludeState::Deprecated, IncludeState::EndOfLife, IncludeState::Revoked]
            } else {
                vec![IncludeState::Deprecated]
            };
            let req = ResolveRequest {
                contracts: contracts.to_vec(),
                channel: Some(channel.clone()),
                include,
                limit: 5,
                ..ResolveRequest::default()
            };
            let answer = client.resolve(family, &req)?;
            let Some(version) = answer.pointer("/chosen/version").and_then(Value::as_str) else {
                let reasons: Vec<String> = answer["passed_over"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let why: Vec<&str> = p["reasons"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|r| r["message"].as_str())
                            .collect();
                        format!("{}: {}", p["version"].as_str().unwrap_or("?"), why.join("; "))
                    })
                    .collect();
                anyhow::bail!(
                    "no version of {family} in channel {channel} is certified for {}{}",
                    contracts.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                    if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(" / ")) }
                );
            };
            Ok(client.pick(family, &BaseSelector::Version(version.to_owned()))?)
        }
        BaseSelector::Version(_) => {
            let record = client.pick(family, selector)?;
            let missing: Vec<String> =
                contracts.iter().filter(|c| !record.certifies(c)).map(ToString::to_string).collect();
            if !missing.is_empty() {
                anyhow::bail!(
                    "{} is not certified for {} (it is for {})",
                    record.id(),
                    missing.join(", "),
                    record.certified.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                );
            }
            Ok(record)
        }
    }
}

pub fn run(args: &FetchArgs, json: bool) -> anyhow::Result<()> {
    let (family, selector) = parse_ref(&args.reference)?;
    let contracts = args
        .contracts
        .iter()
        .map(|c| c.parse().map_err(|e: String| UsageError(format!("--contract {e}"))))
        .collect::<Result<Vec<ContractRequest>, _>>()?;
    let key = kiln_sign::keys::load_public_key(&args.key)
        .with_context(|| format!("cannot read the public key {}", args.key.display()))?;
    let client = Client::open(&args.target.catalog, args.target.token.clone())
        .with_context(|| format!("cannot open the catalog {}", args.target.catalog))?;
    let record = choose(&client, &family, &selector, &contracts, args.allow_retired)
        .with_context(|| format!("cannot resolve {}", args.reference))?;

    let today = Day::of(Timestamp::now());
    let state = record.lifecycle.state_on(today);
    match state {
        LifecycleState::EndOfLife | LifecycleState::Revoked if !args.allow_retired => {
            let why = match &record.lifecycle.revoked {
                Some(r) => format!("revoked: {}", r.reason),
                None => format!(
                    "end of life since {}",
                    record.lifecycle.end_of_life_on.map(|d| d.to_string()).unwrap_or_default()
                ),
            };
            anyhow::bail!("{} is {why}; pass --allow-retired to fetch it anyway", record.id());
        }
        LifecycleState::Deprecated => tracing::warn!(
            "{} is deprecated{}",
            record.id(),
            record.lifecycle.end_of_life_on.map(|d| format!(" (end of life on {d})")).unwrap_or_default()
        ),
        _ => {}
    }

    // Download next to DIR, verify, then put it in place.
    let out = &args.out;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs_err::create_dir_all(parent)?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "fetch".into());
    let partial = Partial(parent.join(format!(".{name}.partial-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&partial.0);
    tracing::info!("downloading {} from {}", record.id(), args.target.catalog);
    client.download(&record, "", &partial.0).with_context(|| format!("cannot download {}", record.id()))?;
    let verified = kiln_sign::verify_dir(&partial.0, &key, None)
        .with_context(|| format!("{} from {} does not verify", record.id(), args.target.catalog))?;
    if verified.name != record.family || verified.version != record.version.to_string() {
        anyhow::bail!(
            "the catalog answered {}@{} with a bundle of {} {}",
            record.family,
            record.version,
            verified.name,
            verified.version
        );
    }
    if out.exists() {
        fs_err::remove_dir_all(out)?;
    }
    fs_err::rename(&partial.0, out)?;

    let answer = json!({
        "family": record.family,
        "version": record.version,
        "state": state,
        "out": out,
        "manifest_digest": record.manifest_digest,
        "image_digest": record.image_digest,
        "certified": record.certified,
        "key": verified.key,
        "artifacts": verified.artifacts.iter().map(|a| json!({"kind": a.kind, "path": a.path, "sha256": a.sha256, "size": a.size})).collect::<Vec<_>>(),
    });
    if json {
        return super::print_json(&answer);
    }
    println!("fetched {} ({state}) into {}, verified with key {}", record.id(), out.display(), verified.key);
    for a in &verified.artifacts {
        println!(
            "  {:<10} {}  {}",
            serde_json::to_value(a.kind)?.as_str().unwrap_or_default(),
            a.sha256,
            a.path
        );
    }
    Ok(())
}
