//! Root trees from .deb files: unpack, dpkg database, configure in an isolated sandbox, normalize, digest.

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

pub use configure::{configure, ConfigureError, ConfigureOptions};
pub use digest::{dump_tree, tree_digest, TreeError};
pub use normalize::{normalize, NormalizeReport};
pub use sandbox::{RunCommand, RunOutput, Sandbox, SandboxError};
pub use unpack::{unpack, UnpackError, UnpackOptions, Unpacked, UnpackedPackage};
