//! The blueprint's git commit, which a release is tagged on and a status is set on: the one the build
//! recorded (`build/materials.json`, `repository.commit`), else the `HEAD` of the blueprint's folder.

use std::path::Path;

use serde::Deserialize;

/// Where the build records what it used, relative to its output folder.
pub const MATERIALS_FILE: &str = "build/materials.json";

/// The parts of `build/materials.json` this needs.
#[derive(Debug, Deserialize)]
struct Materials {
    blueprint: Option<BlueprintSource>,
    repository: Option<RepositoryAt>,
}

#[derive(Debug, Deserialize)]
struct BlueprintSource {
    path: String,
}

#[derive(Debug, Deserialize)]
struct RepositoryAt {
    commit: String,
}

/// Why the build's record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{path}: not kiln's build materials: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) hexadecimal digits.
pub fn is_commit(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The materials the build in `out` recorded; `None` when the output has none.
fn materials(out: &Path) -> Result<Option<Materials>, CommitError> {
    let path = out.join(MATERIALS_FILE);
    let bytes = match fs_err::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| CommitError::Parse { path: path.display().to_string(), source })
}

impl Materials {
    fn commit(&self) -> Option<&str> {
        self.repository.as_ref().map(|r| r.commit.as_str()).filter(|c| is_commit(c))
    }
}

/// The commit the build in `out` recorded, if it recorded one.
pub fn recorded_commit(out: &Path) -> Result<Option<String>, CommitError> {
    Ok(materials(out)?.and_then(|m| m.commit().map(str::to_owned)))
}

/// `git rev-parse HEAD` in `dir`, when `dir` is in a git work tree.
pub fn git_head(dir: &Path) -> Option<String> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && is_commit(&text)).then_some(text)
}

/// The blueprint's commit for the build output `out`: the one the build recorded; else the `HEAD` of
/// `blueprint_dir` when given, else of the folder of the blueprint path the build recorded.
pub fn blueprint_commit(out: &Path, blueprint_dir: Option<&Path>) -> Result<Option<String>, CommitError> {
    let recorded = materials(out)?;
    if let Some(commit) = recorded.as_ref().and_then(Materials::commit) {
        return Ok(Some(commit.to_owned()));
    }
    let dir = match (blueprint_dir, recorded.and_then(|m| m.blueprint)) {
        (Some(d), _) => d.to_owned(),
        (None, Some(b)) => Path::new(&b.path).parent().map(Path::to_owned).unwrap_or_default(),
        (None, None) => return Ok(None),
    };
    Ok(git_head(&dir))
}
