//! Root trees from .deb files: unpack, dpkg database, configure in an isolated sandbox, normalize, digest.

pub mod configure;
pub mod control;
pub mod deb;
pub mod dpkgdb;
mod par;
pub mod paths;
pub mod sandbox;
pub mod unpack;

pub use configure::{configure, ConfigureError, ConfigureOptions};
pub use sandbox::{RunCommand, RunOutput, Sandbox, SandboxError};
pub use unpack::{unpack, UnpackError, UnpackOptions, Unpacked, UnpackedPackage};
