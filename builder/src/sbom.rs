//! The build's records of what went into the image, written into every output before the tree is removed:
//!
//! - `sbom.spdx.json` (kind `sbom`): the SPDX 2.3 SBOM of the final tree (`kiln_sign::sbom`), from its dpkg
//!   database and copyright files, with the sha256 and archive URL of every `.deb` the build resolved;
//! - `build/materials.json` (kind `materials`): what `kiln sign` needs for the provenance
//!   (`kiln_sign::provenance::Materials`): the blueprint, its repository and commit, SOURCE_DATE_EPOCH,
//!   kiln's version and the resolved `.deb` files;
//! - `build/blueprint/FILE` (kind `materials`): the blueprint file as built, so the catalog's release notes
//!   can show what changed in it from one version to the next.
//!
//! Files of the tree are read as the image sees them: symlinks are followed inside the tree, never out of it.

use std::path::{Path, PathBuf};

use kiln_blueprint::{
    manifest::{Artifact, ArtifactKind, Manifest},
    plan::Plan,
};
use kiln_rootfs::paths::resolve_in_root;
use kiln_sign::{
    provenance::{BlueprintSource, Materials, Repository, MATERIALS_FILE, MATERIALS_SCHEMA},
    sbom::{distro_from_os_release, DebInfo, ImageInfo, Sbom, SBOM_FILE},
};

use crate::build::{artifact, BuildError, BuildOptions};

/// A file of the tree as text (invalid UTF-8 replaced), `None` when it is missing.
fn read_in_tree(tree: &Path, rel: &str) -> Option<String> {
    let path = resolve_in_root(tree, Path::new(rel), true).ok()?;
    std::fs::read(path).ok().map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Where the build output keeps a copy of its blueprint file (kind `materials`).
pub const BLUEPRINT_DIR: &str = "build/blueprint";

/// Write the SBOM of `tree` and the build materials into `out_dir`; their manifest entries.
/// `manifest` names the image (name, version, tree digest, parent); `resolved` are the `.deb` files the
/// build resolved.
pub(crate) fn write(
    tree: &Path,
    out_dir: &Path,
    plan: &Plan,
    opts: &BuildOptions,
    manifest: &Manifest,
    resolved: &[kiln_debian::Package],
) -> Result<Vec<Artifact>, BuildError> {
    let mut debs: Vec<DebInfo> = resolved.iter().map(DebInfo::from).collect();
    debs.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));

    let image = ImageInfo {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        tree_digest: manifest.tree_digest.clone().unwrap_or_default(),
        distro: read_in_tree(tree, "etc/os-release").as_deref().and_then(distro_from_os_release),
        parent: manifest.parent.clone(),
    };
    let status = read_in_tree(tree, "var/lib/dpkg/status").unwrap_or_default();
    let copyright = |name: &str| read_in_tree(tree, &format!("usr/share/doc/{name}/copyright"));
    let sbom = Sbom::from_dpkg(&status, &copyright, &debs, &image, opts.source_date_epoch)?;
    let sbom_path = out_dir.join(SBOM_FILE);
    fs_err::write(&sbom_path, sbom.to_json()).map_err(|source| BuildError::Io { path: sbom_path, source })?;

    let blueprint_path = blueprint_path(&plan.blueprint.path, opts.revision.is_some());
    let repository = opts.revision.as_ref().map(|commit| Repository {
        // The CLI's `source` is the remote's URL, or the blueprint's path in the repository without one.
        uri: opts.source.clone().filter(|s| *s != blueprint_path),
        commit: commit.clone(),
    });
    let materials = Materials {
        schema: MATERIALS_SCHEMA.to_owned(),
        kiln_version: env!("CARGO_PKG_VERSION").to_owned(),
        blueprint: BlueprintSource {
            path: blueprint_path,
            digest: plan.blueprint.digest.clone(),
            variables: plan.blueprint.variables.clone(),
        },
        repository,
        source_date_epoch: opts.source_date_epoch,
        packages: debs,
    };
    let materials_path = out_dir.join(MATERIALS_FILE);
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| BuildError::Io { path, source }
    };
    if let Some(dir) = materials_path.parent() {
        fs_err::create_dir_all(dir).map_err(io(&dir.to_owned()))?;
    }
    fs_err::write(&materials_path, materials.to_json()).map_err(io(&materials_path))?;

    // The blueprint itself (its digest is the manifest's blueprint_digest): release notes diff it against
    // the previous version's.
    let name = plan.blueprint.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let blueprint_rel = format!("{BLUEPRINT_DIR}/{name}");
    let blueprint_copy = out_dir.join(&blueprint_rel);
    if let Some(dir) = blueprint_copy.parent() {
        fs_err::create_dir_all(dir).map_err(io(&dir.to_owned()))?;
    }
    fs_err::copy(&plan.blueprint.path, &blueprint_copy).map_err(io(&blueprint_copy))?;

    Ok(vec![
        artifact(ArtifactKind::Sbom, out_dir, SBOM_FILE)?,
        artifact(ArtifactKind::Materials, out_dir, MATERIALS_FILE)?,
        artifact(ArtifactKind::Materials, out_dir, &blueprint_rel)?,
    ])
}

/// The blueprint's path for the provenance: relative to the top of its git repository when it is in one
/// (the folder holding `.git`), else as kiln was given it.
fn blueprint_path(path: &Path, in_git: bool) -> String {
    if in_git {
        if let Ok(full) = std::fs::canonicalize(path) {
            if let Some(rel) = full
                .ancestors()
                .skip(1)
                .find(|dir| dir.join(".git").exists())
                .and_then(|top| full.strip_prefix(top).ok())
            {
                return rel.to_string_lossy().into_owned();
            }
        }
    }
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blueprint_paths_are_relative_to_their_repository() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(repo.join("blueprints/web")).unwrap();
        let bp = repo.join("blueprints/web/blueprint.toml");
        std::fs::write(&bp, "").unwrap();
        assert_eq!(blueprint_path(&bp, true), "blueprints/web/blueprint.toml");
        assert_eq!(blueprint_path(&bp, false), bp.to_string_lossy());
        let outside = d.path().join("blueprint.toml");
        std::fs::write(&outside, "").unwrap();
        assert_eq!(blueprint_path(&outside, true), outside.to_string_lossy());
    }

    #[test]
    fn tree_files_are_read_through_symlinks_inside_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path();
        std::fs::create_dir_all(tree.join("usr/share/doc/libfoo-common")).unwrap();
        std::fs::write(tree.join("usr/share/doc/libfoo-common/copyright"), "text").unwrap();
        std::os::unix::fs::symlink("libfoo-common", tree.join("usr/share/doc/libfoo1")).unwrap();
        // An absolute link is the tree's own path, not the host's.
        std::os::unix::fs::symlink("/usr/share/doc/libfoo-common", tree.join("usr/share/doc/libfoo2"))
            .unwrap();
        assert_eq!(read_in_tree(tree, "usr/share/doc/libfoo1/copyright").as_deref(), Some("text"));
        assert_eq!(read_in_tree(tree, "usr/share/doc/libfoo2/copyright").as_deref(), Some("text"));
        assert_eq!(read_in_tree(tree, "usr/share/doc/missing/copyright"), None);
    }
}
