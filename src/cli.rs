//! The command-line interface of `kiln`, defined with clap's derive API. Shell completions and the man page
//! are generated from these definitions (`kiln completions SHELL`, `kiln man`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// kiln: build versioned, signed OS images from blueprints, certify them against service contracts, and
/// publish them to a catalog.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Print machine-readable JSON on stdout (errors too).
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v debug, -vv trace). KILN_LOG overrides, e.g. KILN_LOG=kiln_blueprint=trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the normalized build plan of a blueprint: ordered steps with the digest of their inputs.
    ///
    /// Works offline: the mirror and catalog references are shown as written and resolved by `build`.
    Plan(PlanArgs),
    /// Build a blueprint into a root tree and its outputs (raw, qcow2, OCI) with `DIR/manifest.json`.
    ///
    /// A failed build leaves no output (and an earlier build in DIR untouched).
    Build(BuildArgs),
    /// Certify a built image against the contracts its blueprint claims: static checks on the artifacts'
    /// files, runtime checks in a VM booted from a throwaway overlay.
    ///
    /// Writes DIR/report/certification.json and DIR/report/junit.xml and lists them in DIR/manifest.json;
    /// exits 1 when a check fails (or a checker breaks). The artifacts themselves are never changed.
    Test(TestArgs),
    /// Make an ECDSA P-256 key pair: PREFIX.key (cosign's encrypted format, mode 0600) and PREFIX.pub (PEM).
    ///
    /// The passphrase comes from KILN_SIGNING_PASSWORD (or COSIGN_PASSWORD), or a line of stdin.
    Keygen(KeygenArgs),
    /// Sign a build output: its OCI images (cosign's format, in the layout), a SLSA provenance attestation,
    /// and every file (signatures/FILE.sig, as `cosign sign-blob` writes them), manifest.json last.
    Sign(SignArgs),
    /// Check a signed build output offline: every signature, digest and the OCI image signatures.
    Verify(VerifyArgs),
    /// Take a blueprint through every stage: plan, build, test, sign, publish, promote.
    ///
    /// Stops at the first stage that fails, with that stage's exit code. `--json` prints one event per line
    /// (schema kiln.pipeline.event/v1).
    Pipeline(PipelineArgs),
    /// Publish a signed, certified build output to a catalog (a URL, or a catalog folder on this machine).
    ///
    /// Uploads the files the catalog lacks, then records the version in one transaction: all of it or
    /// nothing. Publishing the same image again changes nothing; another image under a published version
    /// is refused. The catalog verifies the signatures with its trusted keys and the certification report.
    Publish(PublishArgs),
    /// Move a family's channel (`stable`, `candidate`, custom) to a version; audited.
    Promote(PromoteArgs),
    /// Change a version's lifecycle by hand (supported, deprecation and end-of-life dates, revocation);
    /// audited. Revoking flags every image built FROM the version.
    Lifecycle(LifecycleArgs),
    /// The newest version of a family certified for every requested contract range, and why newer ones
    /// were passed over.
    Resolve(ResolveArgs),
    /// Download an image from a catalog for provisioning: resolve it (by channel, version or range, and
    /// contract), refuse it when end-of-life or revoked unless told, verify every digest and signature with
    /// the key, and only then place it at DIR.
    Fetch(FetchArgs),
    /// Run and administer a catalog: serve it, list what it holds, tokens, audit log, garbage collection.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Print a shell completion script for kiln.
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print kiln's man page (roff) on stdout, or write one page per command into a folder.
    Man {
        /// Write `kiln.1` and `kiln-COMMAND.1` into this folder instead of printing `kiln.1`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// A blueprint and the values of its variables.
#[derive(Debug, Args)]
pub struct BlueprintArgs {
    /// A `blueprint.toml` or `Kilnfile`, or a folder holding one of them.
    #[arg(value_name = "BLUEPRINT")]
    pub blueprint: PathBuf,
    /// Set a blueprint variable: `--var NAME=VALUE` (repeatable); overrides its default.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub blueprint: BlueprintArgs,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub blueprint: BlueprintArgs,
    /// The output folder; replaced as a whole when the build succeeds.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// kiln's cache of .deb files and package stages [default: $XDG_CACHE_HOME/kiln or ~/.cache/kiln].
    #[arg(long, value_name = "DIR", env = "KILN_CACHE")]
    pub cache: Option<PathBuf>,
    /// Timestamp for every file and date of the build [default: $SOURCE_DATE_EPOCH, else the last git
    /// commit of the blueprint's folder, else 0].
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
    /// Keep the root tree as DIR/rootfs (for inspection; not an artifact).
    #[arg(long)]
    pub keep_tree: bool,
    /// Stop after the root tree (kept as DIR/rootfs): no disk or OCI outputs; manifest.json has the tree
    /// digest and no artifacts.
    #[arg(long)]
    pub tree_only: bool,
    /// Build without the caches: neither reuse nor store the package stage or any step's result.
    #[arg(long)]
    pub no_cache: bool,
    /// Let RUN commands use the network (they run without it by default).
    #[arg(long)]
    pub network: bool,
    /// The catalog `FROM catalog:FAMILY@…` images come from: a URL or a catalog folder.
    #[arg(long, value_name = "URL|PATH", env = "KILN_CATALOG")]
    pub catalog: Option<String>,
    /// A token for a catalog URL whose reads are not public.
    #[arg(long, value_name = "TOKEN", env = "KILN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A build output folder (with manifest.json).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The folder of contract files [default: the nearest `contracts/` in the current folder or above].
    #[arg(long, value_name = "DIR", env = "KILN_CONTRACTS")]
    pub contracts: Option<PathBuf>,
    /// Certify against this contract request (NAME@RANGE, repeatable) instead of those the manifest lists.
    #[arg(long = "contract", value_name = "NAME@RANGE")]
    pub requests: Vec<String>,
    /// Seconds the VM may take to boot and run the runtime checks before it is killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 420)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write PREFIX.key and PREFIX.pub.
    #[arg(long, value_name = "PREFIX", default_value = "kiln")]
    pub out: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
    /// Read the passphrase from the first line of stdin instead of the environment.
    #[arg(long)]
    pub passphrase_stdin: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// A build output folder (with manifest.json), certified by `kiln test`.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The private key file [default: the PEM text in KILN_SIGNING_KEY].
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The repository the OCI image is published as (the signature's docker-reference) [default: its name].
    #[arg(long, value_name = "REF")]
    pub reference: Option<String>,
    /// Read the key's passphrase from the first line of stdin instead of the environment.
    #[arg(long)]
    pub passphrase_stdin: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A signed build output folder, or an image in a catalog: FAMILY@VERSION, FAMILY@RANGE or
    /// FAMILY@CHANNEL (with --catalog).
    #[arg(value_name = "DIR|REF")]
    pub target: PathBuf,
    /// The catalog a REF is in: its URL or its folder.
    #[arg(long, value_name = "URL|PATH", env = "KILN_CATALOG")]
    pub catalog: Option<String>,
    /// A token for a catalog URL whose reads are not public.
    #[arg(long, value_name = "TOKEN", env = "KILN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The public key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Require the OCI signature to name this repository.
    #[arg(long, value_name = "REF")]
    pub reference: Option<String>,
}

/// Where the catalog is.
#[derive(Debug, Args)]
pub struct CatalogTarget {
    /// The catalog: its URL (`http://host:port`) or its data folder on this machine.
    #[arg(long, value_name = "URL|PATH", env = "KILN_CATALOG")]
    pub catalog: String,
    /// A token for a catalog URL (scopes: read, publish, promote, lifecycle, admin).
    #[arg(long, value_name = "TOKEN", env = "KILN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Where to report a publish on GitHub.
#[derive(Debug, Args)]
pub struct GitHubArgs {
    /// After a successful publish, create (or update) the GitHub release FAMILY-VERSION with the release notes
    /// and the artifacts' digests, and set the commit status kiln/FAMILY on the blueprint's commit. The token
    /// comes from GITHUB_TOKEN.
    #[arg(long, value_name = "OWNER/REPO")]
    pub github: Option<String>,
    /// GitHub's REST API: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise.
    #[arg(long, value_name = "URL", env = "GITHUB_API_URL", default_value = kiln_github::DEFAULT_API_URL)]
    pub github_api: String,
}

#[derive(Debug, Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub blueprint: BlueprintArgs,
    #[command(flatten)]
    pub catalog: CatalogTarget,
    /// The channel to move to the published version.
    #[arg(long, default_value = "candidate")]
    pub channel: String,
    /// The build output folder [default: .kiln-out/NAME].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The signing key file [default: the PEM text in KILN_SIGNING_KEY].
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The contracts folder [default: the nearest `contracts/`].
    #[arg(long, value_name = "DIR", env = "KILN_CONTRACTS")]
    pub contracts: Option<PathBuf>,
    /// kiln's cache of .deb files and package stages.
    #[arg(long, value_name = "DIR", env = "KILN_CACHE")]
    pub cache: Option<PathBuf>,
    // With --github, a failing stage also sets the status failure on the blueprint's commit.
    #[command(flatten)]
    pub github: GitHubArgs,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// FAMILY@CHANNEL, FAMILY@VERSION or FAMILY@RANGE (e.g. `debian-minimal@stable`, `web-role@^1`).
    #[arg(value_name = "FAMILY@REF")]
    pub reference: String,
    /// A contract range the image must be certified for (repeatable): `base-os@^1`.
    #[arg(long = "contract", value_name = "NAME@RANGE")]
    pub contracts: Vec<String>,
    /// Where to put the image's files (replaced when the fetch succeeds).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The public key (PEM) its signatures must verify with.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Fetch an end-of-life or revoked image too.
    #[arg(long)]
    pub allow_retired: bool,
    #[command(flatten)]
    pub target: CatalogTarget,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// A signed build output folder whose certification passed.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub target: CatalogTarget,
    /// Known issues to attach to the release notes [default: the nearest `runbook/known-issues.toml`].
    #[arg(long, value_name = "FILE")]
    pub known_issues: Option<PathBuf>,
    #[command(flatten)]
    pub github: GitHubArgs,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    pub family: String,
    #[arg(id = "image_version", value_name = "VERSION")]
    pub version: String,
    /// The channel to move.
    #[arg(long, default_value = "stable")]
    pub channel: String,
    #[command(flatten)]
    pub target: CatalogTarget,
}

#[derive(Debug, Args)]
pub struct LifecycleArgs {
    pub family: String,
    #[arg(id = "image_version", value_name = "VERSION")]
    pub version: String,
    /// Declare the version supported (`--supported=false`: back to candidate).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub supported: Option<bool>,
    /// Deprecated from this day (YYYY-MM-DD), or `none` to clear.
    #[arg(long, value_name = "DATE|none")]
    pub deprecate_on: Option<String>,
    /// End of life from this day (YYYY-MM-DD), or `none` to clear.
    #[arg(long, value_name = "DATE|none")]
    pub end_of_life_on: Option<String>,
    /// Revoke the version for this reason (flags every image built FROM it). Cannot be undone.
    #[arg(long, value_name = "REASON")]
    pub revoke: Option<String>,
    #[command(flatten)]
    pub target: CatalogTarget,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    pub family: String,
    /// A contract range the answer must be certified for (repeatable): `base-os@^1`.
    #[arg(long = "contract", value_name = "NAME@RANGE")]
    pub contracts: Vec<String>,
    /// Only versions this channel ever pointed at.
    #[arg(long)]
    pub channel: Option<String>,
    /// Still supported on this day (YYYY-MM-DD): neither deprecated nor end of life by then.
    #[arg(long, value_name = "DATE")]
    pub supported_until: Option<String>,
    /// Also accept versions in these states (deprecated, end-of-life, revoked; comma-separated).
    #[arg(long, value_name = "STATES")]
    pub include: Option<String>,
    /// List at most this many passed-over versions.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[command(flatten)]
    pub target: CatalogTarget,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Serve a catalog's HTTP API. A new catalog writes its first admin token to DATA/admin-token (0600).
    /// Replicas behind a load balancer share one catalog through --postgres and --blob-registry, each
    /// with a data folder of its own (trusted keys, staging).
    Serve(ServeArgs),
    /// Create a catalog folder (or add trusted keys to one) without serving it.
    Init(InitArgs),
    /// List families; with FAMILY its versions; with FAMILY VERSION one version.
    Ls {
        family: Option<String>,
        #[arg(id = "image_version", value_name = "VERSION")]
        version: Option<String>,
        #[command(flatten)]
        target: CatalogTarget,
    },
    /// A family's channels and their history.
    Channels {
        family: String,
        #[command(flatten)]
        target: CatalogTarget,
    },
    /// A version's release notes.
    Notes {
        family: String,
        #[arg(id = "image_version", value_name = "VERSION")]
        version: String,
        /// markdown, html or json.
        #[arg(long, default_value = "markdown")]
        format: String,
        #[command(flatten)]
        target: CatalogTarget,
    },
    /// The audit log, newest first.
    Audit {
        #[arg(long)]
        family: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        target: CatalogTarget,
    },
    /// Tokens: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Remove blobs, uploads and staging folders no version refers to, older than the grace period.
    Gc {
        /// Minimum age in seconds of what is removed (a publish in progress keeps its blobs younger).
        #[arg(long, default_value_t = 3600)]
        grace: u64,
        #[command(flatten)]
        target: CatalogTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once.
    Create {
        name: String,
        /// read, publish, promote, lifecycle or admin (repeatable, or comma-separated).
        #[arg(long = "scope", value_name = "SCOPE", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        #[command(flatten)]
        target: CatalogTarget,
    },
    List {
        #[command(flatten)]
        target: CatalogTarget,
    },
    Revoke {
        id: String,
        #[command(flatten)]
        target: CatalogTarget,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The catalog's data folder (SQLite database, blobs, trusted keys).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Trust this public key (PEM) for publishing (repeatable; kept in DATA/trusted-keys).
    #[arg(long = "trust-key", value_name = "PUB")]
    pub trust_keys: Vec<PathBuf>,
    /// Keep the metadata in this PostgreSQL database (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`) instead
    /// of DATA/catalog.db: replicas sharing it (and --blob-registry) serve one catalog.
    #[arg(long, value_name = "URL", env = "KILN_POSTGRES_URL", hide_env_values = true)]
    pub postgres: Option<String>,
    /// Keep the blobs in this OCI registry (`http[s]://[USER:PASSWORD@]HOST[:PORT]`) instead of DATA/blobs
    /// (needs --postgres, which holds their ledger).
    #[arg(
        long,
        value_name = "URL",
        env = "KILN_BLOB_REGISTRY",
        hide_env_values = true,
        requires = "postgres"
    )]
    pub blob_registry: Option<String>,
    /// The registry's repository for the blobs [default: kiln-blobs].
    #[arg(long, value_name = "NAME", requires = "blob_registry")]
    pub blob_repository: Option<String>,
}

impl InitArgs {
    /// The stores these flags name.
    pub fn backends(&self) -> kiln_catalog::store::Backends {
        kiln_catalog::store::Backends {
            postgres: self.postgres.clone(),
            blob_registry: self.blob_registry.clone(),
            blob_repository: self.blob_repository.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub init: InitArgs,
    /// Address to listen on (port 0: any free port; the address is printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Reads need a token with the `read` scope (default: reads are public).
    #[arg(long)]
    pub private_reads: bool,
    /// Seconds between garbage collections (and the age below which unreferenced blobs are kept).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub gc_every: u64,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected NAME=VALUE"))?;
    if k.is_empty() {
        return Err(format!("`{s}`: the variable name is empty"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

impl BlueprintArgs {
    pub fn vars(&self) -> kiln_blueprint::Vars {
        self.vars.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every command (unique argument names, valid defaults, …),
    /// which otherwise only fire when a command is run.
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
