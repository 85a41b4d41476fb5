//! The build plan: a blueprint normalized into ordered steps, each with the digest of its inputs.
use std::path::Path;

use crate::{load::Vars, BlueprintError, LoadError};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("invalid blueprint")]
    Blueprint(#[from] BlueprintError),
}

/// Plan the blueprint at `path` (file or folder).
pub fn plan_path(path: &Path, vars: &Vars) -> Result<(), PlanError> {
    let _bp = crate::load(path, vars)?;
    Ok(())
}
