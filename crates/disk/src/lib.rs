//! Disk image writers: GPT, FAT32 ESP, ext4 root (via mke2fs -d), qcow2.
//!
//! Everything here is reproducible: GUIDs, UUIDs and volume ids come from an [`ImageIdentity`], timestamps
//! from a `SOURCE_DATE_EPOCH`-style input, and nothing is mounted (no loop devices, no privileges needed).
//! Format writers are functions over `Write + Seek` (or `Read + Write + Seek` where a library needs to read
//! back what it wrote), each with a text dump for snapshot tests. The only tool run is `mke2fs`.
//!
//! The pieces, in the order a build uses them:
//! - [`DiskLayout::plan`] places the ESP, root and extra partitions (1 MiB aligned, DPS type GUIDs);
//! - [`boot::esp_files_from_tree`] picks the newest kernel and initrd of the tree, systemd-boot, and renders
//!   `loader.conf` and the Boot Loader Specification entry (`root=PARTUUID=…`);
//! - [`ext4::make_ext4`] makes the root file system with `mke2fs -d` and normalizes its timestamps;
//! - [`write_raw_disk`] writes GPT, FAT32 ESP and root into one raw image ([`build_raw_image`] does all four);
//! - [`write_qcow2`] / [`write_qcow2_file`] convert the raw image to qcow2, optionally compressed.
//!
//! [`dump_gpt`], [`dump_fat`] and [`dump_qcow2`] describe images as text.

pub mod boot;
pub mod error;
pub mod esp;
pub mod ext4;
pub mod gpt;
pub mod identity;
pub mod image;
pub mod layout;
pub mod qcow2;
pub mod raw;
pub mod sparse;

pub use error::{DiskError, Result};
pub use esp::{dump_fat, write_esp, EspFile, EspOptions};
pub use gpt::{build_gpt, dump_gpt};
pub use identity::ImageIdentity;
pub use image::{build_raw_image, BuiltDisk, DiskImageRequest};
pub use layout::{
    auto_root_size, DiskLayout, DiskSpec, ExtraPartition, PartitionRole, PlannedPartition, MIB,
};
pub use qcow2::{dump_qcow2, write_qcow2, write_qcow2_file, Qcow2Compression, Qcow2Options, Qcow2Stats};
pub use raw::{write_raw_disk, write_raw_disk_file, RawStats};
