//! `kiln build`: plan a blueprint, then build it into an output folder.

use std::path::Path;

use anyhow::Context as _;

use crate::cli::BuildArgs;

/// SOURCE_DATE_EPOCH: the flag, else the environment, else the last git commit touching the blueprint's
/// folder, else 0 (with a warning: the build is still reproducible, but its dates say 1970).
fn source_date_epoch(flag: Option<i64>, blueprint_dir: &Path) -> anyhow::Result<i64> {
    if let Some(e) = flag {
        return Ok(e);
    }
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH=`{v}` is not a whole number of seconds"));
    }
    let dir = if blueprint_dir.as_os_str().is_empty() { Path::new(".") } else { blueprint_dir };
    let git = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["log", "-1", "--format=%ct", "--", "."])
        .output();
    if let Ok(out) = git {
        if let Ok(e) = String::from_utf8_lossy(&out.stdout).trim().parse::<i64>() {
            return Ok(e);
        }
    }
    tracing::warn!("no SOURCE_DATE_EPOCH and the blueprint is not in a git repository: using 0 (1970-01-01)");
    Ok(0)
}

/// `git -C DIR ARGS...`'s output, if DIR is in a git work tree and git answers.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The blueprint's source revision (git commit) and source (the remote `origin`, else the blueprint's path in
/// its repository), for the image's annotations.
fn provenance(blueprint: &Path) -> (Option<String>, Option<String>) {
    let dir = blueprint.parent().unwrap_or(Path::new(""));
    let revision = git(dir, &["rev-parse", "HEAD"]);
    let source = git(dir, &["remote", "get-url", "origin"]).or_else(|| {
        let name = blueprint.file_name()?.to_string_lossy().into_owned();
        let prefix = git(dir, &["rev-parse", "--show-prefix"]).unwrap_or_default();
        revision.as_ref().map(|_| format!("{prefix}{name}"))
    });
    (revision, source)
}

pub fn run(args: &BuildArgs, json: bool) -> anyhow::Result<()> {
    // Not root: continue as root of a user namespace with the caller's subordinate ids (this call does not
    // return then), so that the tree can hold files of every user the image has.
    kiln_rootfs::userns::become_root().context("cannot build without root")?;
    let path = &args.blueprint.blueprint;
    let plan = kiln_blueprint::plan::plan_path(path, &args.blueprint.vars())
        .with_context(|| format!("cannot plan {}", path.display()))?;
    let blueprint_dir = plan.blueprint.path.parent().map(Path::to_owned).unwrap_or_default();
    let cache_dir = match &args.cache {
        Some(c) => c.clone(),
        None => kiln_debian::Cache::default_root(|k| std::env::var_os(k))
            .context("no cache folder: set --cache, KILN_CACHE, XDG_CACHE_HOME or HOME")?,
    };
    let (revision, source) = provenance(&plan.blueprint.path);
    let opts = kiln_builder::BuildOptions {
        revision,
        source,
        out: args.out.clone(),
        blueprint_dir: blueprint_dir.clone(),
        cache_dir,
        source_date_epoch: source_date_epoch(args.source_date_epoch, &blueprint_dir)?,
        host_root: "/".into(),
        keep_tree: args.keep_tree,
        tree_only: args.tree_only,
        stage_cache: !args.no_cache,
        network_in_run: args.network,
        catalog: match &args.catalog {
            Some(target) => Some(std::sync::Arc::new(CatalogBases(
                kiln_catalog::client::Client::open(target, args.token.clone())
                    .with_context(|| format!("cannot open the catalog {target}"))?,
            ))),
            None => None,
        },
    };
    tracing::info!("building {} {} into {}", plan.blueprint.name, plan.blueprint.version, args.out.display());
    let report = kiln_builder::build(&plan, &opts)
        .with_context(|| format!("cannot build {} {}", plan.blueprint.name, plan.blueprint.version))?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    if json {
        return super::print_json(&report);
    }
    println!("built {} {} in {}", report.manifest.name, report.manifest.version, report.out.display());
    println!("tree    {}", report.tree_digest);
    if report.package_stage_cached || !report.cached_steps.is_empty() {
        let mut from_cache = Vec::new();
        if report.package_stage_cached {
            from_cache.push("package stage".to_owned());
        }
        from_cache.extend(report.cached_steps.iter().map(|i| format!("step {i}")));
        println!("cached  {}", from_cache.join(", "));
    }
    for a in &report.manifest.artifacts {
        let kind = serde_json::to_value(a.kind)?.as_str().unwrap_or_default().to_owned();
        println!("{kind:<7} {}  {:>12}  {}", a.sha256, a.size, a.path);
    }
    Ok(())
}

/// Images built FROM `catalog:…` come from the catalog the build was given.
#[derive(Debug)]
struct CatalogBases(kiln_catalog::client::Client);

impl kiln_builder::CatalogBases for CatalogBases {
    fn fetch(
        &self,
        family: &str,
        selector: &kiln_blueprint::model::CatalogSelector,
        dest: &std::path::Path,
    ) -> Result<kiln_builder::FetchedBase, String> {
        use kiln_blueprint::model::CatalogSelector as S;
        use kiln_catalog::client::BaseSelector;
        let selector = match selector {
            S::Version(v) => BaseSelector::Version(v.clone()),
            S::Channel(c) => BaseSelector::Channel(c.clone()),
        };
        let got = self
            .0
            .fetch_layout(family, &selector, dest)
            .map_err(|e| kiln_catalog::http::problem::chain(&e))?;
        Ok(kiln_builder::FetchedBase { version: got.version.to_string(), tag: got.tag })
    }
}
