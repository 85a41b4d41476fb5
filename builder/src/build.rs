//! `kiln build`: a plan executed into a root tree, the tree normalized and digested, the outputs written, and
//! `manifest.json` listing them, all in a staging folder that replaces the output folder only when everything
//! succeeded. A failed build leaves no output behind (and the previous one, if any, untouched).
//!
//! The package stage (base + packages) is cached by its plan digest and the exact package set resolved from
//! the verified indices: a change to a file of the blueprint, or to a later step, reuses it. Every later step
//! is cached by its chained plan digest ([`crate::stepcache`]): the unchanged steps before the first changed
//! one are replayed from the cache, the rest run.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Instant,
};

use kiln_blueprint::{
    manifest::{Artifact, ArtifactKind, Manifest, Parent as ManifestParent},
    model::{Base, CatalogSelector, DebianBase, OutputKind, Variant},
    plan::{sha256_digest, Plan, PlanStep, StepInputs},
};
use kiln_debian::{Cache, Client, Overrides, RepoSpec, Request};
use kiln_rootfs::{ConfigureOptions, RunCommand, Sandbox, UnpackOptions};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{
    services,
    stepcache::{self, Snapshot, StepCache, StepCacheError},
    steps,
};

/// Version of the way kiln makes a package stage; part of the stage cache key, so that a kiln that makes
/// stages differently never reuses one an older kiln made. Change it with any change to unpack/configure.
pub const STAGE_FORMAT: &str = "kiln.stage/3";

/// Everything a build needs besides the plan.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The output folder (replaced atomically when the build succeeds).
    pub out: PathBuf,
    /// The folder the blueprint's relative paths (keyring, OCI layout bases) are relative to.
    pub blueprint_dir: PathBuf,
    /// kiln's cache: .deb files by digest, package stages by key.
    pub cache_dir: PathBuf,
    /// SOURCE_DATE_EPOCH of the build.
    pub source_date_epoch: i64,
    /// The root whose apt sources and archive keyring give the default mirror (`/`; a folder in tests).
    pub host_root: PathBuf,
    /// Keep the root tree as `OUT/rootfs/` (not an artifact).
    pub keep_tree: bool,
    /// Stop after the normalized tree: keep it as `OUT/rootfs/` and write no image outputs.
    pub tree_only: bool,
    /// Use and fill the package-stage and step caches.
    pub stage_cache: bool,
    /// Let RUN commands reach the network.
    pub network_in_run: bool,
    /// `org.opencontainers.image.revision`: the blueprint's source revision (its git commit).
    pub revision: Option<String>,
    /// `org.opencontainers.image.source`: where the blueprint's source lives (its git remote, else its path
    /// in the repository).
    pub source: Option<String>,
    /// Where `FROM catalog:FAMILY@…` images come from; `None`: such blueprints cannot be built.
    pub catalog: Option<std::sync::Arc<dyn CatalogBases>>,
}

/// Images a blueprint starts FROM (`catalog:FAMILY@VERSION|RANGE|CHANNEL`), out of a catalog.
pub trait CatalogBases: std::fmt::Debug + Send + Sync {
    /// Resolve the reference and write the chosen version's OCI image layout into `dest` (a new folder),
    /// every blob checked against its digest.
    fn fetch(&self, family: &str, selector: &CatalogSelector, dest: &Path) -> Result<FetchedBase, String>;
}

/// What [`CatalogBases::fetch`] chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedBase {
    /// The version the reference resolved to.
    pub version: String,
    /// The image's tag in the layout (`org.opencontainers.image.ref.name`).
    pub tag: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("reading the Debian repository")]
    Repo(#[from] kiln_debian::RepoError),
    #[error("resolving packages")]
    Resolve(#[from] kiln_debian::ResolveError),
    #[error("unpacking packages")]
    Unpack(#[from] kiln_rootfs::UnpackError),
    #[error("configuring packages")]
    Configure(#[from] kiln_rootfs::ConfigureError),
    #[error("sandbox")]
    Sandbox(#[from] kiln_rootfs::SandboxError),
    #[error("normalizing the tree")]
    Tree(#[from] kiln_rootfs::TreeError),
    #[error("step {index} ({kind})")]
    Step {
        index: usize,
        kind: &'static str,
        #[source]
        source: Box<steps::StepError>,
    },
    #[error("step {index} (services)")]
    Services {
        index: usize,
        #[source]
        source: services::ServiceError,
    },
    #[error("step {index} ({kind}): replaying it from the step cache")]
    Replay {
        index: usize,
        kind: &'static str,
        #[source]
        source: StepCacheError,
    },
    #[error("looking at the tree for the step cache")]
    Snapshot(#[source] StepCacheError),
    #[error("writing the OCI image")]
    Oci(#[from] kiln_oci::Error),
    #[error("writing the disk image")]
    Disk(#[from] kiln_disk::DiskError),
    #[error("writing the manifest")]
    Manifest(#[from] kiln_blueprint::manifest::ManifestError),
    #[error("writing the SBOM")]
    Sbom(#[from] kiln_sign::sbom::SbomError),
    #[error("FROM {reference}: {message}")]
    Base { reference: String, message: String },
    #[error("{}: exists and is not a kiln build output (no manifest.json); refusing to replace it", path.display())]
    OutputInTheWay { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io { path: path.to_owned(), source }
}

/// What a build did, for the CLI (`--json`) and tests.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub out: PathBuf,
    pub manifest: Manifest,
    pub tree_digest: String,
    /// Installed packages as `name version`, sorted (from the image's dpkg database).
    pub packages: Vec<String>,
    /// Whether the package stage came from the cache.
    pub package_stage_cached: bool,
    /// The blueprint steps (plan positions, from 1, as in errors and logs) replayed from the step cache
    /// instead of run.
    pub cached_steps: Vec<usize>,
    /// Seconds per stage, in order.
    pub timings: Vec<(String, f64)>,
    pub warnings: Vec<String>,
}

/// A staging folder that is removed unless the build commits it.
struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.dir);
        }
    }
}

/// Remove a folder tree, also when it holds read-only folders (as a root tree does).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(_) => {
            let status =
                std::process::Command::new("rm").arg("-rf").arg("--one-file-system").arg(dir).status()?;
            if status.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!("rm -rf {} failed", dir.display())))
            }
        }
    }
}

/// Copy a tree with owners, modes, times, hard links and xattrs (reflinks where the file system has them).
fn copy_tree(from: &Path, to: &Path) -> Result<(), BuildError> {
    let out = std::process::Command::new("cp")
        .args(["-a", "--reflink=auto", "--no-target-directory"])
        .arg(from)
        .arg(to)
        .output()
        .map_err(io(to))?;
    if !out.status.success() {
        return Err(BuildError::Io {
            path: to.to_owned(),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        });
    }
    Ok(())
}

/// Remove staging folders that crashed builds of this output left (their process is gone).
fn clean_stale_staging(out: &Path) {
    let (Some(parent), Some(name)) = (out.parent(), out.file_name()) else { return };
    let prefix = format!(".{}.partial-", name.to_string_lossy());
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = n.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = remove_tree(&e.path());
            }
        }
    }
}

struct Timer {
    timings: Vec<(String, f64)>,
    started: Instant,
}

impl Timer {
    fn lap(&mut self, name: &str) {
        let now = Instant::now();
        let secs = now.duration_since(self.started).as_secs_f64();
        tracing::info!("{name}: {secs:.1}s");
        self.timings.push((name.to_owned(), (secs * 10.0).round() / 10.0));
        self.started = now;
    }
}

/// Execute `plan` and write its outputs to `opts.out`.
pub fn build(plan: &Plan, opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    if let Ok(meta) = std::fs::symlink_metadata(&opts.out) {
        if !meta.is_dir()
            || (!opts.out.join("manifest.json").is_file()
                && std::fs::read_dir(&opts.out).map_err(io(&opts.out))?.next().is_some())
        {
            return Err(BuildError::OutputInTheWay { path: opts.out.clone() });
        }
    }
    clean_stale_staging(&opts.out);
    let name = opts.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let parent_dir = match opts.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs_err::create_dir_all(&parent_dir)
        .map_err(|e| BuildError::Io { path: parent_dir.clone(), source: e })?;
    let mut staging =
        Staging { dir: parent_dir.join(format!(".{name}.partial-{}", std::process::id())), committed: false };
    remove_tree(&staging.dir).map_err(io(&staging.dir))?;
    fs_err::create_dir(&staging.dir).map_err(|e| BuildError::Io { path: staging.dir.clone(), source: e })?;
    let tree = staging.dir.join("rootfs");

    let mut timer = Timer { timings: Vec::new(), started: Instant::now() };
    let mut warnings = Vec::new();
    let epoch = opts.source_date_epoch;

    // Base and packages.
    let (package_stage_cached, parent, stage_key, resolved) = base_stage(plan, opts, &tree, &mut timer)?;
    let sandbox = Sandbox::new(&tree)?.with_network(opts.network_in_run);

    // The blueprint's own steps: the first ones whose results are all in the step cache are replayed, the
    // rest run (and, with the cache on, their results are stored).
    let later: Vec<(usize, &PlanStep, String)> = plan
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| !matches!(s.inputs, StepInputs::Base(_) | StepInputs::Packages { .. }))
        .map(|(i, s)| (i + 1, s, stepcache::step_key(&stage_key, &s.digest, epoch, opts.network_in_run)))
        .collect();
    let cache = opts.stage_cache.then(|| StepCache::new(opts.cache_dir.join("steps")));
    let mut cached_steps = Vec::new();
    if let Some(cache) = &cache {
        cache.clean_stale();
        let hits: Vec<_> = later.iter().map_while(|(_, _, key)| cache.lookup(key)).collect();
        for (hit, (index, step, _)) in hits.iter().zip(&later) {
            let started = Instant::now();
            hit.replay(&tree).map_err(|source| BuildError::Replay {
                index: *index,
                kind: step.kind,
                source,
            })?;
            warnings.extend(hit.warnings().iter().cloned());
            tracing::info!("step {index} ({}): cached ({:.2}s)", step.kind, started.elapsed().as_secs_f64());
            cached_steps.push(*index);
        }
        if !hits.is_empty() {
            timer.lap("cached steps");
        }
    }
    let to_run = &later[cached_steps.len()..];
    let mut before = match &cache {
        Some(_) if !to_run.is_empty() => Some(Snapshot::take(&tree).map_err(BuildError::Snapshot)?),
        _ => None,
    };
    for (index, step, key) in to_run {
        let started = Instant::now();
        let step_warnings = run_step(*index, step, &tree, &sandbox, epoch)?;
        warnings.extend(step_warnings.iter().cloned());
        if let (Some(cache), Some(snapshot)) = (&cache, &mut before) {
            let after = Snapshot::take(&tree).map_err(BuildError::Snapshot)?;
            match cache.store(key, &tree, snapshot, &after, &step_warnings) {
                Ok(stored) => tracing::debug!(
                    "step {index} ({}): stored {} entries, {} bytes",
                    step.kind,
                    stored.entries,
                    stored.size
                ),
                Err(e) => tracing::warn!("step {index} ({}): not cached: {e}", step.kind),
            }
            *snapshot = after;
        }
        tracing::info!("step {index} ({}): ran ({:.2}s)", step.kind, started.elapsed().as_secs_f64());
    }
    timer.lap("steps");

    let packages = installed_packages(&tree);
    let report = kiln_rootfs::normalize(&tree, epoch)?;
    tracing::debug!("normalized: {report:?}");
    let tree_digest = kiln_rootfs::tree_digest(&tree)?;
    timer.lap("normalize");

    // Outputs.
    let mut manifest =
        Manifest::new(&plan.blueprint.name, &plan.blueprint.version, &plan.blueprint.digest, &plan.digest);
    manifest.tree_digest = Some(tree_digest.clone());
    manifest.parent = parent.as_ref().map(|p| p.manifest.clone());
    manifest.contracts = plan.image.contracts.iter().map(|c| format!("{}@{}", c.name, c.req)).collect();
    let policy = &plan.image.lifecycle;
    if policy.support_months.is_some() || policy.deprecate_after_days.is_some() {
        manifest.lifecycle = Some(policy.clone());
    }
    for artifact in crate::sbom::write(&tree, &staging.dir, plan, opts, &manifest, &resolved)? {
        manifest.put(artifact)?;
    }
    let outputs: &[kiln_blueprint::model::Output] = if opts.tree_only { &[] } else { &plan.image.outputs };
    for output in outputs {
        match output.kind {
            OutputKind::Oci => {
                let artifact = crate::outputs::oci(plan, output, &tree, &staging.dir, opts, parent.as_ref())?;
                manifest.put(artifact)?;
                timer.lap("oci");
            }
            OutputKind::Raw | OutputKind::Qcow2 => {}
        }
    }
    let wants_raw = outputs.iter().any(|o| matches!(o.kind, OutputKind::Raw | OutputKind::Qcow2));
    if wants_raw {
        for artifact in crate::outputs::disks(plan, &tree, &staging.dir, epoch, &mut timer.timings)? {
            manifest.put(artifact)?;
        }
        timer.lap("disk");
    }

    if !opts.keep_tree && !opts.tree_only {
        remove_tree(&tree).map_err(io(&tree))?;
    }
    manifest.write(&staging.dir)?;

    // Commit: swap the staging folder in.
    let old = parent_dir.join(format!(".{name}.old-{}", std::process::id()));
    if opts.out.exists() {
        fs_err::rename(&opts.out, &old).map_err(|e| BuildError::Io { path: opts.out.clone(), source: e })?;
    }
    fs_err::rename(&staging.dir, &opts.out)
        .map_err(|e| BuildError::Io { path: opts.out.clone(), source: e })?;
    staging.committed = true;
    let _ = remove_tree(&old);

    Ok(BuildReport {
        out: opts.out.clone(),
        manifest,
        tree_digest,
        packages,
        package_stage_cached,
        cached_steps,
        timings: timer.timings,
        warnings,
    })
}

/// Runs one blueprint step on `tree`; its warnings.
fn run_step(
    index: usize,
    step: &PlanStep,
    tree: &Path,
    sandbox: &Sandbox,
    epoch: i64,
) -> Result<Vec<String>, BuildError> {
    let fail = |source| BuildError::Step { index, kind: step.kind, source: Box::new(source) };
    match &step.inputs {
        StepInputs::Base(_) | StepInputs::Packages { .. } => {}
        StepInputs::Accounts { groups, users } => {
            steps::accounts(sandbox, groups, users, epoch).map_err(fail)?
        }
        StepInputs::Directories(dirs) => steps::directories(tree, dirs).map_err(fail)?,
        StepInputs::Files(files) => steps::files(tree, files).map_err(fail)?,
        StepInputs::Run(run) => steps::run_command(sandbox, run, epoch).map_err(fail)?,
        StepInputs::Services { enable, disable, mask } => {
            return services::set_states(tree, enable, disable, mask)
                .map_err(|source| BuildError::Services { index, source });
        }
        StepInputs::System { hostname, locale, timezone } => {
            steps::system(sandbox, hostname.as_deref(), locale.as_deref(), timezone.as_deref())
                .map_err(fail)?
        }
    }
    Ok(Vec::new())
}

/// The parent image of a derived build: its manifest entry, its index, and the layout to layer on.
pub(crate) struct ParentImage {
    pub manifest: ManifestParent,
    pub oci: kiln_oci::Parent,
    pub index: kiln_oci::TreeIndex,
    /// The layout fetched from a catalog, kept until the outputs reuse its layers.
    pub _fetched: Option<FetchedLayout>,
}

/// The base and packages: whether they came from the cache, the parent image of a derived build, the
/// key of the stage for the step cache (the package stage's cache key; for a parent image, its manifest
/// digest and the packages installed on it), and the packages resolved from the repository.
fn base_stage(
    plan: &Plan,
    opts: &BuildOptions,
    tree: &Path,
    timer: &mut Timer,
) -> Result<(bool, Option<ParentImage>, String, Vec<kiln_debian::Package>), BuildError> {
    let base = match plan.steps.first().map(|s| &s.inputs) {
        Some(StepInputs::Base(b)) => b.clone(),
        _ => unreachable!("a plan starts with its base"),
    };
    let (include, exclude) = match plan.step("packages").map(|s| &s.inputs) {
        Some(StepInputs::Packages { include, exclude }) => (include.clone(), exclude.clone()),
        _ => (Vec::new(), Vec::new()),
    };
    let stage_digest = plan.step("packages").unwrap_or(&plan.steps[0]).digest.clone();
    match &base {
        Base::Debian(d) => {
            let (cached, key, resolved) =
                debian_base(d, &include, &exclude, &stage_digest, opts, tree, timer)?;
            Ok((cached, None, key, resolved))
        }
        Base::OciLayout { .. } | Base::Catalog { .. } => {
            let (reference, layout_path, tag, fetched) = match &base {
                Base::OciLayout { path, tag } => {
                    (format!("oci-layout:{path}:{tag}"), opts.blueprint_dir.join(path), tag.clone(), None)
                }
                Base::Catalog { family, selector } => {
                    let reference = match selector {
                        CatalogSelector::Version(v) | CatalogSelector::Channel(v) => {
                            format!("catalog:{family}@{v}")
                        }
                    };
                    let catalog = opts.catalog.as_ref().ok_or_else(|| BuildError::Base {
                        reference: reference.clone(),
                        message: "no catalog to take it from: pass --catalog URL|PATH (or set KILN_CATALOG)"
                            .into(),
                    })?;
                    let dir = FetchedLayout(opts.cache_dir.join("parents").join(format!(
                        "{}-{}",
                        std::process::id(),
                        FETCH_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    )));
                    let _ = std::fs::remove_dir_all(&dir.0);
                    let got = catalog
                        .fetch(family, selector, &dir.0)
                        .map_err(|message| BuildError::Base { reference: reference.clone(), message })?;
                    tracing::info!("{reference}: version {}", got.version);
                    (reference, dir.0.clone(), got.tag, Some(dir))
                }
                Base::Debian(_) => unreachable!("matched above"),
            };
            let tag = &tag;
            let path = layout_path.display().to_string();
            let parent = kiln_oci::Parent::open(&layout_path, tag, reference.clone())
                .map_err(|e| BuildError::Base { reference: reference.clone(), message: format!("{e:#}") })?;
            fs_err::create_dir(tree).map_err(|e| BuildError::Io { path: tree.to_owned(), source: e })?;
            let index = parent.unpack(tree, &kiln_oci::unpack::UnpackOptions::default())?;
            let digest = parent.image.manifest_descriptor.digest().to_string();
            // Name and version as the parent says them: its config's OCI labels, else its index annotations,
            // else the tag and the layout's folder name.
            let annotations = parent.image.manifest_descriptor.annotations().clone().unwrap_or_default();
            let labels =
                parent.image.config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
            let label = |k: &str| labels.get(k).or_else(|| annotations.get(k)).cloned();
            let version = label("org.opencontainers.image.version").unwrap_or_else(|| tag.clone());
            let pname = label("org.opencontainers.image.title").unwrap_or_else(|| match &base {
                Base::Catalog { family, .. } => family.clone(),
                _ => {
                    Path::new(&path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                }
            });
            timer.lap("parent image");
            let mut installed = String::new();
            let mut resolved = Vec::new();
            if !include.is_empty() {
                (installed, resolved) = install_into_image(&include, &exclude, opts, tree)?;
                timer.lap("packages");
            }
            let key = hex::encode(Sha256::digest(
                format!("{STAGE_FORMAT}\nparent={digest}\npackages={stage_digest}\n{installed}").as_bytes(),
            ));
            Ok((
                false,
                Some(ParentImage {
                    manifest: ManifestParent { reference, name: pname, version, digest },
                    oci: parent,
                    index,
                    _fetched: fetched,
                }),
                key,
                resolved,
            ))
        }
    }
}

static FETCH_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A parent image fetched from a catalog for one build; removed when the build is done with it.
#[derive(Debug)]
pub(crate) struct FetchedLayout(PathBuf);

impl Drop for FetchedLayout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Debian repository of a base: the host's apt sources with the blueprint's overrides.
fn open_repo(
    d: Option<&DebianBase>,
    opts: &BuildOptions,
) -> Result<(Client, kiln_debian::Repository), BuildError> {
    let sources = kiln_debian::host_sources(&opts.host_root).map_err(|e| BuildError::Base {
        reference: "the host's apt sources".into(),
        message: e.to_string(),
    })?;
    let overrides = Overrides {
        mirror: d.and_then(|d| d.mirror.clone()),
        suite: d.map(|d| d.suite.clone()),
        components: d.map(|d| d.components.clone()).unwrap_or_default(),
        keyring: d.and_then(|d| d.keyring.as_ref()).map(|k| opts.blueprint_dir.join(k)),
    };
    let spec = RepoSpec::choose(&sources, &overrides, &opts.host_root)?;
    tracing::info!("repository {} {} ({})", spec.mirror, spec.suite, spec.components.join(" "));
    let client = Client::new(Cache::new(opts.cache_dir.join("debs")));
    let repo = client.open(&spec)?;
    Ok((client, repo))
}

#[allow(clippy::too_many_arguments)]
fn debian_base(
    d: &DebianBase,
    include: &[String],
    exclude: &[String],
    stage_digest: &str,
    opts: &BuildOptions,
    tree: &Path,
    timer: &mut Timer,
) -> Result<(bool, String, Vec<kiln_debian::Package>), BuildError> {
    let (client, repo) = open_repo(Some(d), opts)?;
    let universe = repo.universe("amd64")?;
    let variant = match d.variant {
        Variant::Minbase => kiln_debian::Variant::Minbase,
        Variant::Standard => kiln_debian::Variant::Standard,
    };
    let resolution =
        universe.resolve(&Request { variant, include: include.to_vec(), exclude: exclude.to_vec() })?;
    timer.lap("resolve");
    tracing::info!("{} packages resolved", resolution.packages.len());

    // The stage's key: how kiln makes stages, its plan digest, the exact packages it installs, and
    // SOURCE_DATE_EPOCH, which maintainer scripts write into the tree (the password-change date of the
    // accounts they make, in /etc/shadow).
    let mut h = Sha256::new();
    h.update(STAGE_FORMAT.as_bytes());
    h.update(stage_digest.as_bytes());
    h.update(format!("\nSOURCE_DATE_EPOCH={}", opts.source_date_epoch).as_bytes());
    for p in &resolution.packages {
        h.update(format!("\n{} {} {}", p.name, p.version, p.sha256.to_hex()).as_bytes());
    }
    let key = hex::encode(h.finalize());
    let cached_tree = opts.cache_dir.join("stages").join(&key);
    if opts.stage_cache && cached_tree.join(".complete").is_file() {
        copy_tree(&cached_tree.join("rootfs"), tree)?;
        timer.lap("package stage (cached)");
        return Ok((true, key, resolution.packages));
    }

    let paths = client.download(&resolution.packages)?;
    timer.lap("download");
    let by_name: BTreeMap<&str, &PathBuf> =
        resolution.packages.iter().map(|p| p.name.as_str()).zip(paths.iter()).collect();
    let ordered: Vec<PathBuf> = resolution
        .install_order
        .iter()
        .filter_map(|n| by_name.get(n.as_str()).map(|p| (*p).clone()))
        .collect();
    fs_err::create_dir(tree).map_err(|e| BuildError::Io { path: tree.to_owned(), source: e })?;
    let unpacked = kiln_rootfs::unpack(&ordered, tree, &UnpackOptions::default())?;
    timer.lap("unpack");
    kiln_rootfs::configure(
        tree,
        &unpacked,
        &ConfigureOptions { source_date_epoch: Some(opts.source_date_epoch) },
    )?;
    timer.lap("configure");

    if opts.stage_cache {
        let tmp = opts.cache_dir.join("stages").join(format!(".{key}.tmp-{}", std::process::id()));
        let _ = remove_tree(&tmp);
        fs_err::create_dir_all(&tmp).map_err(|e| BuildError::Io { path: tmp.clone(), source: e })?;
        copy_tree(tree, &tmp.join("rootfs"))?;
        fs_err::write(tmp.join(".complete"), key.as_bytes())
            .map_err(|e| BuildError::Io { path: tmp.clone(), source: e })?;
        let _ = remove_tree(&cached_tree);
        fs_err::rename(&tmp, &cached_tree)
            .map_err(|e| BuildError::Io { path: cached_tree.clone(), source: e })?;
        timer.lap("cache package stage");
    }
    Ok((false, key, resolution.packages))
}

/// Packages on top of a parent image: resolved against the host's repository, downloaded and verified by
/// kiln, then installed by the image's own dpkg (which keeps its database right). Returns the resolved set,
/// one `name version sha256` line each, and the resolved packages.
fn install_into_image(
    include: &[String],
    exclude: &[String],
    opts: &BuildOptions,
    tree: &Path,
) -> Result<(String, Vec<kiln_debian::Package>), BuildError> {
    let (client, repo) = open_repo(None, opts)?;
    let universe = repo.universe("amd64")?;
    let resolution = universe.resolve(&Request {
        variant: kiln_debian::Variant::Custom,
        include: include.to_vec(),
        exclude: exclude.to_vec(),
    })?;
    let resolved: String = resolution
        .packages
        .iter()
        .map(|p| format!("{} {} {}\n", p.name, p.version, p.sha256.to_hex()))
        .collect();
    let installed: BTreeMap<String, String> = installed_packages(tree)
        .into_iter()
        .filter_map(|l| l.split_once(' ').map(|(n, v)| (n.to_owned(), v.to_owned())))
        .collect();
    let wanted: Vec<_> = resolution
        .packages
        .iter()
        .filter(|p| installed.get(&p.name).map(String::as_str) != Some(&p.version.to_string()))
        .cloned()
        .collect();
    if wanted.is_empty() {
        return Ok((resolved, resolution.packages));
    }
    let paths = client.download(&wanted)?;
    let inbox = tree.join("var/cache/kiln-debs");
    fs_err::create_dir_all(&inbox).map_err(|e| BuildError::Io { path: inbox.clone(), source: e })?;
    let by_name: BTreeMap<&str, &PathBuf> =
        wanted.iter().map(|p| p.name.as_str()).zip(paths.iter()).collect();
    let mut argv = vec![
        "dpkg".to_owned(),
        "--install".to_owned(),
        "--force-unsafe-io".to_owned(),
        "--force-confold".to_owned(),
    ];
    for name in &resolution.install_order {
        if let Some(p) = by_name.get(name.as_str()) {
            let file = format!("{name}.deb");
            fs_err::copy(p, inbox.join(&file))
                .map_err(|e| BuildError::Io { path: inbox.clone(), source: e })?;
            argv.push(format!("/var/cache/kiln-debs/{file}"));
        }
    }
    let sandbox = Sandbox::new(tree)?;
    let policy = tree.join("usr/sbin/policy-rc.d");
    let had_policy = policy.exists();
    if !had_policy {
        fs_err::write(&policy, "#!/bin/sh\nexit 101\n")
            .map_err(|e| BuildError::Io { path: policy.clone(), source: e })?;
        use std::os::unix::fs::PermissionsExt as _;
        fs_err::set_permissions(&policy, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| BuildError::Io { path: policy.clone(), source: e })?;
    }
    let result = sandbox.run(
        &RunCommand::new(argv).env("SOURCE_DATE_EPOCH", opts.source_date_epoch.to_string()),
        &mut |line| tracing::debug!(target: "kiln::dpkg", "{line}"),
    );
    if !had_policy {
        let _ = fs_err::remove_file(&policy);
    }
    let _ = remove_tree(&inbox);
    result?;
    Ok((resolved, resolution.packages))
}

/// `name version` of every installed package, from the tree's dpkg status.
pub fn installed_packages(tree: &Path) -> Vec<String> {
    let status = std::fs::read_to_string(tree.join("var/lib/dpkg/status")).unwrap_or_default();
    let mut out = Vec::new();
    for para in status.split("\n\n") {
        let field = |name: &str| {
            para.lines().find_map(|l| {
                l.strip_prefix(name).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_owned())
            })
        };
        if let (Some(p), Some(v), Some(s)) = (field("Package"), field("Version"), field("Status")) {
            if s.ends_with(" installed") {
                out.push(format!("{p} {v}"));
            }
        }
    }
    out.sort();
    out
}

/// sha256 and size of a file, as a manifest artifact.
pub(crate) fn artifact(kind: ArtifactKind, dir: &Path, rel: &str) -> Result<Artifact, BuildError> {
    let path = dir.join(rel);
    let (sha256, size) = kiln_blueprint::manifest::sha256_file(&path).map_err(io(&path))?;
    Ok(Artifact { kind, path: rel.to_owned(), sha256, size })
}

/// The digest kiln records for the build's blueprint-independent identity (used for disk GUIDs).
pub(crate) fn image_identity(plan: &Plan) -> String {
    sha256_digest(format!("{}\n{}\n{}", plan.blueprint.name, plan.blueprint.version, plan.digest).as_bytes())
}
