//! kiln's blueprint side, pure logic: the blueprint model, its two source forms, the build plan, and the
//! build output's manifest. The build itself (which does the I/O) is the `kiln-builder` crate.
//!
//! - [`model`]: the one [`Blueprint`] model both forms parse into.
//! - [`toml_form`]: the declarative, kickstart-like `blueprint.toml`.
//! - [`kilnfile`]: the imperative, Dockerfile-like `Kilnfile`.
//! - [`tomlread`]: span-aware TOML reading with located problems, shared by [`toml_form`] and the
//!   contract parser (`kiln-contract`).
//! - [`diag`]: located, multi-problem errors (`file:line:col`, source line and caret).
//! - [`load`](mod@load): finding and reading a blueprint from a file or folder (the only I/O here besides the plan's
//!   reading of source files through its `Sources` trait).
//! - [`plan`]: the normalized build plan with chained step digests.
//! - [`manifest`]: `manifest.json` of a build output (schema `kiln.manifest/v1`).

pub mod diag;
pub mod kilnfile;
pub mod load;
pub mod manifest;
pub mod model;
pub mod plan;
pub mod toml_form;
pub mod tomlread;

pub use diag::{BlueprintError, Diag, SourceFile};
pub use load::{load, LoadError};
pub use model::Blueprint;
pub use model::Vars;
