//! Finding and reading a blueprint: BLUEPRINT is a `blueprint.toml` or `Kilnfile`, or a folder holding
//! exactly one of them. `--var k=v` overrides are checked against the variables the blueprint declares.

use std::path::{Path, PathBuf};

use crate::{diag::SourceFile, model::Blueprint, BlueprintError};

pub use crate::model::Vars;

pub const TOML_NAME: &str = "blueprint.toml";
pub const KILNFILE_NAME: &str = "Kilnfile";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read blueprint")]
    Io(#[from] std::io::Error),
    #[error("{}: holds neither `{TOML_NAME}` nor `{KILNFILE_NAME}`", dir.display())]
    NoBlueprint { dir: PathBuf },
    #[error("{}: holds both `{TOML_NAME}` and `{KILNFILE_NAME}`; name the one to use", dir.display())]
    Ambiguous { dir: PathBuf },
    #[error("{}: not a blueprint file (expected `{TOML_NAME}`, a `*.toml` file, or `{KILNFILE_NAME}`)", path.display())]
    UnknownForm { path: PathBuf },
    #[error("--var {name}: {} declares no such variable (declared: {})", path.display(), if declared.is_empty() { "none".to_owned() } else { declared.join(", ") })]
    UnknownVar { name: String, path: PathBuf, declared: Vec<String> },
    #[error("invalid blueprint")]
    Blueprint(#[from] BlueprintError),
}

/// Which file a BLUEPRINT argument names.
pub fn locate(path: &Path) -> Result<PathBuf, LoadError> {
    if fs_err::metadata(path)?.is_dir() {
        let toml = path.join(TOML_NAME);
        let kiln = path.join(KILNFILE_NAME);
        return match (toml.is_file(), kiln.is_file()) {
            (true, false) => Ok(toml),
            (false, true) => Ok(kiln),
            (true, true) => Err(LoadError::Ambiguous { dir: path.to_owned() }),
            (false, false) => Err(LoadError::NoBlueprint { dir: path.to_owned() }),
        };
    }
    Ok(path.to_owned())
}

/// Parse a blueprint text of either form; the form is chosen by the file name.
pub fn parse(path: &Path, text: String, vars: &Vars) -> Result<Blueprint, LoadError> {
    let file = SourceFile::new(path, text);
    let dir = path.parent().map(Path::to_owned).unwrap_or_default();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let bp = if name == KILNFILE_NAME || name.ends_with(".Kilnfile") {
        crate::kilnfile::parse(file, dir, vars)?
    } else if name.ends_with(".toml") {
        crate::toml_form::parse(file, dir, vars)?
    } else {
        return Err(LoadError::UnknownForm { path: path.to_owned() });
    };
    if let Some(name) = vars.keys().find(|k| !bp.variables.contains_key(*k)) {
        return Err(LoadError::UnknownVar {
            name: name.clone(),
            path: path.to_owned(),
            declared: bp.variables.keys().cloned().collect(),
        });
    }
    Ok(bp)
}

/// Locate, read and parse a blueprint.
pub fn load(path: &Path, vars: &Vars) -> Result<Blueprint, LoadError> {
    let file = locate(path)?;
    let text = fs_err::read_to_string(&file)?;
    parse(&file, text, vars)
}
