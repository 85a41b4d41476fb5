//! Root trees from .deb files: unpack, dpkg database, configure in an isolated sandbox, normalize, digest.
//!
//! kiln builds a Debian root file system in a plain directory, without loop devices or mounted images:
//!
//! 1. [`unpack()`] takes an ordered list of verified .deb files (see `kiln-debian`) and extracts them in
//!    parallel into an empty directory, laid out for merged /usr, then writes dpkg's database with every
//!    package `install ok unpacked`: the same tree and database `dpkg --unpack` would leave (the tests compare
//!    them). Where two packages ship a path, the later one in the list wins.
//! 2. [`configure()`] runs, with the tree's own dpkg and inside a [`Sandbox`], each `preinst install` in
//!    dependency order and then `dpkg --configure -a`, and checks that dpkg is content (`dpkg --audit`).
//! 3. Later build steps run their commands in the same [`Sandbox`] ([`Sandbox::run`]).
//! 4. [`normalize()`] removes what must not be in an image (machine id, logs, caches, SSH host keys) and clamps
//!    modification times to `SOURCE_DATE_EPOCH`; [`tree_digest()`] then names the tree's content.
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let debs: Vec<PathBuf> = vec!["/cache/base-files_12.4_amd64.deb".into() /* ... */];
//! let tree = Path::new("/build/tree");
//! let unpacked = kiln_rootfs::unpack(&debs, tree, &kiln_rootfs::UnpackOptions::default())?;
//! let epoch = 1_700_000_000;
//! kiln_rootfs::configure(tree, &unpacked, &kiln_rootfs::ConfigureOptions { source_date_epoch: Some(epoch) })?;
//! let sandbox = kiln_rootfs::Sandbox::new(tree)?;
//! sandbox.run(&kiln_rootfs::RunCommand::new(["sh", "-c", "echo hello"]), &mut |line| println!("{line}"))?;
//! kiln_rootfs::normalize(tree, epoch)?;
//! println!("{}", kiln_rootfs::tree_digest(tree)?);
//! # Ok(())
//! # }
//! ```
//!
//! kiln runs as root. An unprivileged build re-executes itself as root of a user namespace mapping the
//! caller's subordinate ids ([`userns::become_root`]), where everything above works unchanged. Called
//! directly without root, [`unpack()`] gives every file to the caller and the sandbox maps the caller alone to
//! root, which is enough to run commands but not for maintainer scripts that give files to other users. Progress is reported as `tracing` events.

pub mod configure;
pub mod control;
pub mod deb;
pub mod digest;
pub mod dpkgdb;
pub mod normalize;
mod par;
pub mod paths;
pub mod sandbox;
pub mod unpack;
pub mod userns;

pub use configure::{configure, ConfigureError, ConfigureOptions};
pub use digest::{dump_tree, tree_digest, TreeError};
pub use normalize::{normalize, NormalizeReport};
pub use sandbox::{RunCommand, RunOutput, Sandbox, SandboxError};
pub use unpack::{unpack, UnpackError, UnpackOptions, Unpacked, UnpackedPackage};
