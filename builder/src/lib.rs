//! kiln's build side: the blueprint model, its two source forms, and the build plan.
//!
//! - [`model`]: the one [`Blueprint`] model both forms parse into.
//! - [`toml_form`]: the declarative, kickstart-like `blueprint.toml`.
//! - [`kilnfile`]: the imperative, Dockerfile-like `Kilnfile`.
//! - [`diag`]: located, multi-problem errors (`file:line:col`, source line and caret).
//! - [`load`]: finding and reading a blueprint from a file or folder (the only I/O here besides the plan's
//!   reading of source files).

pub mod diag;
pub mod kilnfile;
pub mod load;
pub mod manifest;
pub mod model;
pub mod plan;
pub mod toml_form;

pub use diag::{BlueprintError, Diag, SourceFile};
pub use load::{load, LoadError, Vars};
pub use model::Blueprint;
