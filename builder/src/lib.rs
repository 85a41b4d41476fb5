//! kiln's build: executes a build plan (from `kiln-blueprint`) into a root tree, from Debian packages or a
//! parent image, applies the blueprint's steps, and writes the image outputs and `manifest.json`.

pub mod build;
pub mod outputs;
mod sbom;
pub mod services;
pub mod stepcache;
pub mod steps;

pub use build::{build, BuildError, BuildOptions, BuildReport, CatalogBases, FetchedBase};
