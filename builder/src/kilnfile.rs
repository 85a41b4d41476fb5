//! The imperative, Dockerfile-like `Kilnfile` form.
use std::{path::PathBuf, sync::Arc};

use crate::{diag::SourceFile, load::Vars, model::Blueprint, BlueprintError};

/// Parse a `Kilnfile`. `vars` are `--var` overrides of `ARG` defaults.
pub fn parse(file: Arc<SourceFile>, dir: PathBuf, vars: &Vars) -> Result<Blueprint, BlueprintError> {
    let _ = (dir, vars);
    Err(BlueprintError::new(file, vec![crate::Diag::new(0..0, "the Kilnfile form is not implemented yet")]))
}
