//! One call from a root tree to a bootable raw disk image: plan the layout, make the ext4 root with
//! `mke2fs -d`, collect the ESP (systemd-boot, kernel, initrd, loader config, BLS entry) and write the disk.

use std::path::{Path, PathBuf};

use crate::{
    boot::{esp_files_from_tree, BootConfig, EspPlan},
    esp::EspOptions,
    ext4::{make_ext4, tree_apparent_size, Ext4Options},
    identity::ImageIdentity,
    layout::{DiskLayout, DiskSpec},
    raw::{write_raw_disk_file, RawStats},
    Result,
};

/// Everything a raw disk image is made from.
#[derive(Debug, Clone)]
pub struct DiskImageRequest {
    /// The image's root tree (built as root, so owners are real).
    pub tree: PathBuf,
    /// A directory for the intermediate root file system image.
    pub work_dir: PathBuf,
    pub spec: DiskSpec,
    pub identity: ImageIdentity,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
    /// Boot entry id prefix, e.g. the image name.
    pub entry_id: String,
    /// Boot menu title.
    pub title: String,
    /// The blueprint's kernel command line arguments.
    pub cmdline: Vec<String>,
}

/// What [`build_raw_image`] made.
#[derive(Debug, Clone)]
pub struct BuiltDisk {
    pub layout: DiskLayout,
    pub esp: EspPlan,
    pub stats: RawStats,
}

/// Label of the ESP's FAT volume.
pub const ESP_FAT_LABEL: &str = "ESP";
/// Label of the root ext4 file system.
pub const ROOT_FS_LABEL: &str = "root";

/// Builds the raw disk image `out` (created or truncated) from `req`.
pub fn build_raw_image(req: &DiskImageRequest, out: &Path) -> Result<BuiltDisk> {
    let tree_bytes = if req.spec.size.is_none() { tree_apparent_size(&req.tree)? } else { 0 };
    let layout = DiskLayout::plan(&req.spec, tree_bytes, &req.identity)?;
    let boot = BootConfig {
        entry_id: req.entry_id.clone(),
        title: req.title.clone(),
        root_arg: layout.root_cmdline_arg(),
        cmdline: req.cmdline.clone(),
    };
    let (esp_files, esp_plan) = esp_files_from_tree(&req.tree, &boot)?;

    let root_image = req.work_dir.join("root.ext4");
    let ext4 = Ext4Options {
        size: layout.root().size,
        uuid: req.identity.uuid("fs:root"),
        hash_seed: req.identity.uuid("fs:root:hash-seed"),
        label: ROOT_FS_LABEL.into(),
        epoch: req.epoch,
    };
    make_ext4(&req.tree, &root_image, &ext4)?;

    let esp_opts = EspOptions {
        label: ESP_FAT_LABEL.into(),
        volume_id: req.identity.u32("esp-volume-id"),
        epoch: req.epoch,
    };
    let out_file = fs_err::File::create(out)?;
    let root = fs_err::File::open(&root_image)?;
    let stats = write_raw_disk_file(out_file, &layout, &esp_files, &esp_opts, root.file())?;
    drop(root);
    fs_err::remove_file(&root_image)?;
    Ok(BuiltDisk { layout, esp: esp_plan, stats })
}
