//! The build's outputs from a finished root tree: the OCI image layout, and the raw GPT disk with its qcow2.

use std::path::Path;

use kiln_blueprint::{
    manifest::{Artifact, ArtifactKind},
    model::{Compression, Output, PartitionRole as BpRole},
    plan::Plan,
};
use kiln_disk::{
    DiskImageRequest, DiskSpec, ExtraPartition, ImageIdentity, PartitionRole, Qcow2Compression, Qcow2Options,
};

use crate::build::{artifact, image_identity, BuildError, ParentImage};

/// Folder of the OCI image layout inside the output folder.
pub const OCI_DIR: &str = "oci";
pub const RAW_FILE: &str = "disk.raw";
pub const QCOW2_FILE: &str = "disk.qcow2";

/// Write the OCI image layout (one new layer over the parent's, for derived images); its artifact is
/// recorded with the digest and size of the layout's image manifest.
pub(crate) fn oci(
    plan: &Plan,
    output: &Output,
    tree: &Path,
    out_dir: &Path,
    opts: &crate::BuildOptions,
    parent: Option<&ParentImage>,
) -> Result<Artifact, BuildError> {
    let epoch = opts.source_date_epoch;
    let c = &plan.image.container;
    let mut spec = kiln_oci::ImageSpec::new(plan.blueprint.version.clone(), epoch.max(0) as u64);
    let mut config = match parent {
        Some(p) => {
            kiln_oci::RuntimeConfig::from_oci(&p.oci.image.config.config().clone().unwrap_or_default())
        }
        None => kiln_oci::RuntimeConfig::default(),
    };
    for (k, v) in &c.env {
        config.env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(k.as_str()));
        config.env.push(format!("{k}={v}"));
    }
    if c.entrypoint.is_some() {
        config.entrypoint.clone_from(&c.entrypoint);
    }
    if c.cmd.is_some() {
        config.cmd.clone_from(&c.cmd);
    }
    config.labels.extend(c.labels.clone());
    config.labels.insert("org.opencontainers.image.title".into(), plan.blueprint.name.clone());
    config.labels.insert("org.opencontainers.image.version".into(), plan.blueprint.version.clone());
    if let Some(d) = &plan.blueprint.description {
        config.labels.insert("org.opencontainers.image.description".into(), d.clone());
    }
    if c.user.is_some() {
        config.user.clone_from(&c.user);
    }
    if c.workdir.is_some() {
        config.workdir.clone_from(&c.workdir);
    }
    for p in &c.exposed_ports {
        if !config.exposed_ports.contains(p) {
            config.exposed_ports.push(p.clone());
        }
    }
    config.exposed_ports.sort();
    spec.config = config;
    spec.version = Some(plan.blueprint.version.clone());
    spec.revision.clone_from(&opts.revision);
    spec.source.clone_from(&opts.source);
    let compression = match output.compression {
        Compression::Zstd => kiln_oci::Compression::Zstd,
        Compression::None => kiln_oci::Compression::None,
        Compression::Gzip | Compression::Zlib => kiln_oci::Compression::Gzip,
    };
    let opts = kiln_oci::CompressOptions::new(compression);
    let created_by = format!("kiln build {} {}", plan.blueprint.name, plan.blueprint.version);
    let dest = out_dir.join(OCI_DIR);
    let written = match parent {
        Some(p) => kiln_oci::write_derived_image(tree, &dest, &spec, &opts, &created_by, &p.oci, &p.index)?,
        None => kiln_oci::write_image(tree, &dest, &spec, &opts, &created_by)?,
    };
    tracing::info!(
        "oci: manifest {} ({} entries in the new layer)",
        written.manifest_digest().to_oci(),
        written.entries
    );
    // The layout is recorded by its image manifest (the one `index.json` lists), not by `index.json`,
    // which signing later extends: the image digest stays the same from build to test to sign.
    let manifest = &written.documents.manifest;
    Ok(Artifact {
        kind: ArtifactKind::Oci,
        path: OCI_DIR.to_owned(),
        sha256: format!("sha256:{}", written.manifest_digest().hex()),
        size: manifest.bytes.len() as u64,
    })
}

/// Write the raw disk (kept when `raw` is an output) and the qcow2 (when `qcow2` is).
pub(crate) fn disks(
    plan: &Plan,
    tree: &Path,
    out_dir: &Path,
    epoch: i64,
    timings: &mut Vec<(String, f64)>,
) -> Result<Vec<Artifact>, BuildError> {
    let started = std::time::Instant::now();
    let disk = &plan.image.disk;
    let spec = DiskSpec {
        size: match disk.size {
            kiln_blueprint::model::DiskSize::Auto => None,
            kiln_blueprint::model::DiskSize::Bytes(b) => Some(b),
        },
        esp_size: disk.esp_size,
        extra: disk
            .partitions
            .iter()
            .map(|p| ExtraPartition {
                label: p.label.clone(),
                size: p.size,
                role: match p.role {
                    BpRole::Home => PartitionRole::Home,
                    BpRole::Srv => PartitionRole::Srv,
                    BpRole::Var => PartitionRole::Var,
                    BpRole::Tmp => PartitionRole::Tmp,
                    BpRole::Swap => PartitionRole::Swap,
                    BpRole::Linux => PartitionRole::Linux,
                },
            })
            .collect(),
    };
    let identity = ImageIdentity::new(&plan.blueprint.name, &plan.blueprint.version, &image_identity(plan));
    let req = DiskImageRequest {
        tree: tree.to_owned(),
        work_dir: out_dir.to_owned(),
        spec,
        identity,
        epoch: epoch.max(0) as u64,
        entry_id: plan.blueprint.name.clone(),
        title: format!("{} {}", plan.blueprint.name, plan.blueprint.version),
        cmdline: plan.image.kernel_cmdline.clone(),
    };
    let raw = out_dir.join(RAW_FILE);
    let built = kiln_disk::build_raw_image(&req, &raw)?;
    tracing::info!(
        "raw disk: {} bytes, root partition {}",
        built.layout.size,
        built.layout.root_cmdline_arg()
    );
    timings.push(("raw".into(), (started.elapsed().as_secs_f64() * 10.0).round() / 10.0));

    let mut artifacts = Vec::new();
    if let Some(q) = plan.image.outputs.iter().find(|o| o.kind == kiln_blueprint::model::OutputKind::Qcow2) {
        let compression = match q.compression {
            Compression::Zlib | Compression::Gzip => Qcow2Compression::ZLIB,
            Compression::Zstd => Qcow2Compression::ZSTD,
            Compression::None => Qcow2Compression::None,
        };
        let mut raw_file =
            fs_err::File::open(&raw).map_err(|e| BuildError::Io { path: raw.clone(), source: e })?;
        let qpath = out_dir.join(QCOW2_FILE);
        let out =
            fs_err::File::create(&qpath).map_err(|e| BuildError::Io { path: qpath.clone(), source: e })?;
        kiln_disk::write_qcow2_file(raw_file.file_mut(), out, &Qcow2Options { compression, threads: None })?;
        artifacts.push(artifact(ArtifactKind::Qcow2, out_dir, QCOW2_FILE)?);
    }
    if plan.image.outputs.iter().any(|o| o.kind == kiln_blueprint::model::OutputKind::Raw) {
        artifacts.push(artifact(ArtifactKind::Raw, out_dir, RAW_FILE)?);
    } else {
        fs_err::remove_file(&raw).map_err(|e| BuildError::Io { path: raw.clone(), source: e })?;
    }
    Ok(artifacts)
}
