//! Debian repository client: apt sources, signed indices, dependency resolution, verified downloads.
//!
//! The way from a blueprint to `.deb` files in the cache:
//!
//! 1. [`sources::host_sources`] reads the host's apt sources; [`RepoSpec::choose`] combines them with
//!    the blueprint's overrides into one repository (mirror, suite, components, keys).
//! 2. [`Client::open`] fetches `dists/SUITE/InRelease` and verifies its signature
//!    ([`signature`]); [`Repository::universe`] fetches the Packages indices the verified
//!    [`Release`] lists, checks them against it and parses them.
//! 3. [`Universe::resolve`] (pure) picks the package set for a variant and include/exclude lists.
//! 4. [`Client::download`] fetches the `.deb` files, in parallel, into the content-addressed
//!    [`Cache`], each checked against its index entry.
//!
//! The parsers ([`control`], [`version`], [`relation`], [`sources`], [`release`], [`packages`]) and the
//! resolver do no I/O.
//!
//! Verifying signatures needs the `gpgv` program (as apt does). The integration tests build a signed
//! repository with `dpkg-deb` and `gpg` (package `gnupg`) through the `test-repo` feature
//! (module `testrepo`); `tests/real_mirror.rs` checks the resolver against the host's real mirror and
//! mmdebstrap.

pub mod cache;
pub mod control;
pub mod packages;
pub mod relation;
pub mod release;
pub mod repo;
pub mod resolve;
pub mod signature;
pub mod sources;
#[cfg(feature = "test-repo")]
pub mod testrepo;
pub mod transport;
pub mod version;

pub use cache::{Cache, DownloadError, Mismatch};
pub use packages::{Package, Priority};
pub use release::{Release, Sha256};
pub use repo::{Client, Overrides, RepoError, RepoSpec, Repository};
pub use resolve::{Request, Resolution, ResolveError, Universe, Variant};
pub use sources::{host_sources, Source};
pub use version::Version;
