//! `kiln publish`, `kiln promote`, `kiln lifecycle`, `kiln resolve` and `kiln catalog …`: the catalog as
//! its users reach it, a URL or a folder on this machine (see `kiln_catalog::client`).

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use kiln_catalog::{
    client::{Client, NoProgress, Progress},
    http::ServeOptions,
    known_issues,
    lifecycle::LifecycleChange,
    model::{Day, Scope, Timestamp},
    resolve::{IncludeState, ResolveRequest},
    store::AuditQuery,
    Catalog,
};
use serde_json::Value;

use crate::{
    cli::{
        CatalogCommand, CatalogTarget, InitArgs, LifecycleArgs, PromoteArgs, PublishArgs, ResolveArgs,
        ServeArgs, TokenCommand,
    },
    UsageError,
};

fn open(target: &CatalogTarget) -> anyhow::Result<Client> {
    Client::open(&target.catalog, target.token.clone())
        .with_context(|| format!("cannot open the catalog {}", target.catalog))
}

fn semver_arg(what: &str, s: &str) -> anyhow::Result<semver::Version> {
    s.parse().map_err(|e| UsageError(format!("{what} `{s}` is not a semantic version: {e}")).into())
}

fn print(value: &Value, json: bool, human: impl FnOnce(&Value)) -> anyhow::Result<()> {
    if json {
        super::print_json(value)
    } else {
        human(value);
        Ok(())
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The elements of the list `v[k]` (none when it is not a list).
fn items<'a>(v: &'a Value, k: &str) -> impl Iterator<Item = &'a Value> {
    v.get(k).and_then(Value::as_array).into_iter().flatten()
}

/// The strings of the list `v[k]`.
fn strs<'a>(v: &'a Value, k: &str) -> Vec<&'a str> {
    items(v, k).filter_map(Value::as_str).collect()
}

/// The known issues for a publish: the given file, else the nearest `runbook/known-issues.toml`.
fn load_known_issues(explicit: Option<&Path>) -> anyhow::Result<Vec<known_issues::KnownIssue>> {
    let path = match explicit {
        Some(p) => Some(p.to_owned()),
        None => std::env::current_dir()?
            .ancestors()
            .map(|d| d.join("runbook/known-issues.toml"))
            .find(|p| p.is_file()),
    };
    let Some(path) = path else { return Ok(Vec::new()) };
    let text = fs_err::read_to_string(&path)?;
    known_issues::parse(&path.display().to_string(), &text).map_err(|e| UsageError(e.to_string()).into())
}

/// A byte progress bar on stderr (hidden when stderr is not a terminal).
struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

pub fn publish(args: &PublishArgs, json: bool) -> anyhow::Result<()> {
    let github = super::pipeline::github_client(&args.github)?;
    let known = load_known_issues(args.known_issues.as_deref())?;
    let client = open(&args.target)?;
    let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "uploading {bytes}/{total_bytes} {wide_bar} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress: Box<dyn Progress> = if json { Box::new(NoProgress) } else { Box::new(Bar(bar)) };
    let outcome = client
        .publish(&args.dir, known, &*progress)
        .with_context(|| format!("cannot publish {} to {}", args.dir.display(), args.target.catalog))?;
    // GitHub after the publish, which stands whatever GitHub answers.
    let github = github.map(|gh| {
        let record = serde_json::to_value(&outcome.version).unwrap_or_default();
        let commit = kiln_github::commit::blueprint_commit(&args.dir, None);
        super::pipeline::announce_publish(&gh, &client, &args.target.catalog, &record, commit)
    });
    let finish = || match &github {
        Some(g) if !g.ok() => Err(crate::report::Reported(crate::ExitStatus::Failure).into()),
        _ => Ok(()),
    };
    if json {
        let mut v = serde_json::to_value(&outcome)?;
        if let Some(g) = &github {
            v["github"] = g.to_json();
        }
        super::print_json(&v)?;
        return finish();
    }
    let v = &outcome.version;
    if outcome.created {
        println!("published {}@{}", v.family, v.version);
    } else {
        println!("{}@{} is already published with this manifest: nothing changed", v.family, v.version);
    }
    println!("  manifest   {}", v.manifest_digest);
    if let Some(d) = &v.image_digest {
        println!("  image      {d}");
    }
    let certified: Vec<String> = v.certified.iter().map(ToString::to_string).collect();
    println!("  certified  {}", certified.join(", "));
    println!("  signed by  {}", v.signed_by);
    if let Some(g) = &github {
        g.print();
    }
    finish()
}

pub fn promote(args: &PromoteArgs, json: bool) -> anyhow::Result<()> {
    let version = semver_arg("version", &args.version)?;
    let client = open(&args.target)?;
    let v = client
        .promote(&args.family, &args.channel, &version)
        .with_context(|| format!("cannot move {} of {} to {version}", args.channel, args.family))?;
    print(&v, json, |v| {
        if v.get("changed").and_then(Value::as_bool) == Some(true) {
            let from = v.pointer("/move/from").and_then(Value::as_str).unwrap_or("(new channel)");
            println!("{} {}: {from} → {version}", args.family, args.channel);
        } else {
            println!("{} {} already points at {version}", args.family, args.channel);
        }
    })
}

fn date_or_none(flag: &str, s: Option<&str>) -> anyhow::Result<Option<Option<Day>>> {
    match s {
        None => Ok(None),
        Some("none") => Ok(Some(None)),
        Some(d) => {
            d.parse::<Day>().map(|d| Some(Some(d))).map_err(|e| UsageError(format!("--{flag}: {e}")).into())
        }
    }
}

pub fn lifecycle(args: &LifecycleArgs, json: bool) -> anyhow::Result<()> {
    let version = semver_arg("version", &args.version)?;
    let change = LifecycleChange {
        supported: args.supported,
        deprecated_on: date_or_none("deprecate-on", args.deprecate_on.as_deref())?,
        end_of_life_on: date_or_none("end-of-life-on", args.end_of_life_on.as_deref())?,
        revoke: args.revoke.clone(),
    };
    if change.is_empty() {
        return Err(UsageError(
            "nothing to change: give --supported, --deprecate-on, --end-of-life-on or --revoke".into(),
        )
        .into());
    }
    let client = open(&args.target)?;
    let v = client
        .lifecycle(&args.family, &version, &change)
        .with_context(|| format!("cannot change the lifecycle of {}@{version}", args.family))?;
    print(&v, json, |v| {
        println!("{}@{version}: {}", args.family, s(v, "state"));
        if let Some(l) = v.get("lifecycle").and_then(Value::as_object) {
            for (k, val) in l {
                if k != "supported" {
                    println!("  {k}: {}", val.as_str().map_or_else(|| val.to_string(), str::to_owned));
                }
            }
        }
        for f in items(v, "flagged") {
            println!("  flagged {} (built FROM it)", f.as_str().unwrap_or(""));
        }
    })
}

pub fn resolve(args: &ResolveArgs, json: bool) -> anyhow::Result<()> {
    let contracts = args
        .contracts
        .iter()
        .map(|c| c.parse().map_err(|e: String| UsageError(format!("--contract {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let include = match &args.include {
        Some(list) => list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.trim().parse::<IncludeState>().map_err(|e| UsageError(format!("--include: {e}"))))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let supported_until = args
        .supported_until
        .as_deref()
        .map(|d| d.parse::<Day>().map_err(|e| UsageError(format!("--supported-until: {e}"))))
        .transpose()?;
    let req = ResolveRequest {
        contracts,
        channel: args.channel.clone(),
        supported_until,
        include,
        limit: args.limit,
    };
    let client = open(&args.target)?;
    let v = client.resolve(&args.family, &req).with_context(|| format!("cannot resolve {}", args.family))?;
    let chosen = v.get("chosen").filter(|c| !c.is_null()).cloned();
    print(&v, json, |v| {
        match &chosen {
            Some(c) => println!("{}@{} ({})", args.family, s(c, "version"), s(c, "state")),
            None => println!("no version of {} matches", args.family),
        }
        for p in items(v, "passed_over") {
            let reasons: Vec<&str> = items(p, "reasons").map(|r| s(r, "message")).collect();
            eprintln!("  passed over {}: {}", s(p, "version"), reasons.join("; "));
        }
        if let Some(n) = v.get("omitted").and_then(Value::as_u64).filter(|n| *n > 0) {
            eprintln!("  … and {n} more passed over");
        }
    })?;
    if chosen.is_none() {
        return Err(crate::report::Reported(crate::ExitStatus::Failure).into());
    }
    Ok(())
}

fn init(args: &InitArgs) -> anyhow::Result<Catalog> {
    let mut catalog = Catalog::open_with(&args.data, &args.backends())
        .with_context(|| format!("cannot open the catalog {}", args.data.display()))?;
    for k in &args.trust_keys {
        let key = kiln_sign::keys::load_public_key(k)
            .with_context(|| format!("cannot read the key {}", k.display()))?;
        catalog.trust(key)?;
    }
    if let Some(path) = catalog.ensure_admin_token(Timestamp::now())? {
        tracing::info!("new catalog: admin token written to {}", path.display());
    }
    Ok(catalog)
}

fn serve(args: &ServeArgs, json: bool) -> anyhow::Result<()> {
    let catalog = init(&args.init)?;
    if catalog.trusted_keys().is_empty() {
        tracing::warn!(
            "this catalog trusts no signing key: publishing is refused until one is given with --trust-key"
        );
    }
    let every = Duration::from_secs(args.gc_every.max(1));
    let opts = ServeOptions { public_reads: !args.private_reads, gc_every: every, gc_grace: every };
    let catalog = Arc::new(catalog);
    kiln_catalog::http::run_blocking(catalog, &args.listen, opts, |addr| {
        if json {
            println!(
                "{}",
                serde_json::json!({ "listen": addr.to_string(), "url": format!("http://{addr}") })
            );
        } else {
            println!("http://{addr}");
        }
        tracing::info!("catalog {} serving on http://{addr}", args.init.data.display());
    })
    .with_context(|| format!("cannot serve on {}", args.listen))
}

pub fn catalog(cmd: &CatalogCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        CatalogCommand::Serve(args) => serve(args, json),
        CatalogCommand::Init(args) => {
            let c = init(args)?;
            let v = serde_json::json!({
                "data": args.data, "trusted_keys": c.trusted_keys(),
                "admin_token": args.data.join(kiln_catalog::service::ADMIN_TOKEN_FILE),
            });
            print(&v, json, |_| {
                println!("catalog {}", args.data.display());
                for k in c.trusted_keys() {
                    println!("  trusts {k}");
                }
            })
        }
        CatalogCommand::Ls { family, version, target } => {
            let client = open(target)?;
            match (family, version) {
                (None, _) => {
                    let v = client.families()?;
                    print(&v, json, |v| {
                        for f in items(v, "families") {
                            let channels: Vec<String> = f
                                .get("channels")
                                .and_then(Value::as_object)
                                .into_iter()
                                .flatten()
                                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                                .collect();
                            println!(
                                "{:<24} {:>4} version(s)  latest {:<10} {}",
                                s(f, "name"),
                                f.get("versions").and_then(Value::as_u64).unwrap_or(0),
                                s(f, "latest"),
                                channels.join(" ")
                            );
                        }
                    })
                }
                (Some(f), None) => {
                    let v = client.versions(f)?;
                    print(&v, json, |v| {
                        for x in items(v, "versions") {
                            let certified = strs(x, "certified");
                            println!(
                                "{:<12} {:<12} {}  {}",
                                s(x, "version"),
                                s(x, "state"),
                                s(x, "published_at"),
                                certified.join(",")
                            );
                        }
                    })
                }
                (Some(f), Some(ver)) => {
                    let v = client.version(f, &semver_arg("version", ver)?)?;
                    print(&v, json, |v| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()))
                }
            }
        }
        CatalogCommand::Channels { family, target } => {
            let v = open(target)?.channels(family)?;
            print(&v, json, |v| {
                for c in items(v, "channels") {
                    println!("{:<12} {}", s(c, "name"), s(c, "version"));
                    for m in items(c, "history") {
                        println!("  {} {} {} → {}", s(m, "at"), s(m, "by"), s(m, "from"), s(m, "to"));
                    }
                }
            })
        }
        CatalogCommand::Notes { family, version, format, target } => {
            if !["markdown", "md", "html", "json"].contains(&format.as_str()) {
                return Err(UsageError(format!("--format `{format}`: one of markdown, html, json")).into());
            }
            let text = open(target)?.notes(family, &semver_arg("version", version)?, format)?;
            print!("{text}");
            Ok(())
        }
        CatalogCommand::Audit { family, limit, target } => {
            let v = open(target)?.audit(&AuditQuery {
                family: family.clone(),
                version: None,
                before: None,
                limit: *limit,
            })?;
            print(&v, json, |v| {
                for e in items(v, "entries") {
                    let what = [s(e, "family"), s(e, "version")]
                        .iter()
                        .filter(|x| !x.is_empty())
                        .copied()
                        .collect::<Vec<_>>()
                        .join("@");
                    println!(
                        "{:>5} {} {:<14} {:<24} {} {}",
                        e["seq"],
                        s(e, "at"),
                        s(e, "action"),
                        s(e, "actor"),
                        what,
                        e["detail"]
                    );
                }
            })
        }
        CatalogCommand::Token(t) => match t {
            TokenCommand::Create { name, scopes, target } => {
                let scopes = scopes
                    .iter()
                    .map(|s| s.parse::<Scope>().map_err(|e| UsageError(format!("--scope {e}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                let v = open(target)?.create_token(name, &scopes)?;
                print(&v, json, |v| println!("{}", s(v, "token")))
            }
            TokenCommand::List { target } => {
                let v = open(target)?.tokens()?;
                print(&v, json, |v| {
                    for t in items(v, "tokens") {
                        let scopes = strs(t, "scopes");
                        println!(
                            "{}  {:<16} {:<30} {}",
                            s(t, "id"),
                            s(t, "name"),
                            scopes.join(","),
                            s(t, "created_at")
                        );
                    }
                })
            }
            TokenCommand::Revoke { id, target } => {
                open(target)?.revoke_token(id)?;
                print(&serde_json::json!({ "revoked": id }), json, |_| println!("revoked {id}"))
            }
        },
        CatalogCommand::Gc { grace, target } => {
            let v = open(target)?.gc(Duration::from_secs(*grace))?;
            print(&v, json, |v| {
                println!(
                    "removed {} blob(s) ({} bytes), {} upload(s), {} staging folder(s), {} boot cache folder(s); kept {} young unreferenced blob(s)",
                    v["blobs_removed"], v["bytes_removed"], v["uploads_removed"], v["staging_removed"], v["boot_cache_removed"], v["blobs_kept_young"]
                )
            })
        }
    }
}
