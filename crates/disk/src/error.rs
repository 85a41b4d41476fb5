//! The typed errors of the disk writers.

use std::path::PathBuf;

/// Everything that can go wrong while planning or writing a disk image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An I/O error with the path it happened on, from `fs-err`.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// An explicit disk size leaves no room for the root partition.
    #[error(
        "disk size {disk_size} bytes is too small: the GPT, the ESP ({esp_size} bytes) and the extra partitions \
         ({extra_size} bytes) already need {needed} bytes, with no room left for the root partition"
    )]
    DiskTooSmall { disk_size: u64, esp_size: u64, extra_size: u64, needed: u64 },

    /// A partition size is not a positive multiple of the 1 MiB alignment.
    #[error("partition {label:?}: size {size} bytes is not a positive multiple of 1 MiB")]
    UnalignedPartition { label: String, size: u64 },

    /// Two partitions share a label (labels name partitions and seed their GUIDs).
    #[error("two partitions are labelled {label:?}")]
    DuplicateLabel { label: String },

    /// A GPT partition name longer than the 36 UTF-16 units the entry holds.
    #[error("partition label {label:?} is longer than 36 UTF-16 code units")]
    LabelTooLong { label: String },

    /// The ESP is too small to hold a FAT32 file system (65525 clusters of 512 bytes at least).
    #[error("ESP size {size} bytes is too small for FAT32 (at least 33 MiB is needed)")]
    EspTooSmall { size: u64 },

    /// A path in the ESP that FAT cannot hold.
    #[error("ESP path {path:?} is not a relative path of non-empty components")]
    BadEspPath { path: String },

    /// The files given for the ESP do not fit into it.
    #[error("ESP files need {needed} bytes but the ESP holds {available}")]
    EspFull { needed: u64, available: u64 },

    /// A FAT label must be at most 11 ASCII characters.
    #[error("FAT volume label {label:?} must be 1 to 11 ASCII characters")]
    BadFatLabel { label: String },

    /// An error reported by the `fatfs` crate while formatting or filling the ESP.
    #[error("FAT file system error while {action}: {source}")]
    Fat { action: String, source: std::io::Error },

    /// An error reported by the `gpt` crate.
    #[error("GPT error while {action}: {message}")]
    Gpt { action: &'static str, message: String },

    /// `TREE/boot` holds no `vmlinuz-VERSION`.
    #[error("no kernel (vmlinuz-VERSION) found in {boot_dir}")]
    NoKernel { boot_dir: PathBuf },

    /// The newest kernel has no `initrd.img-VERSION` beside it.
    #[error("kernel {version} has no initrd.img-{version} in {boot_dir}")]
    NoInitrd { version: String, boot_dir: PathBuf },

    /// The tree has no systemd-boot EFI binary.
    #[error("no systemd-boot EFI binary at {path} (is systemd-boot-efi installed in the image?)")]
    NoBootloader { path: PathBuf },

    /// `mke2fs` could not be started.
    #[error("could not run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },

    /// `mke2fs` exited with an error.
    #[error("{program} failed ({status}): {stderr}")]
    ToolFailed { program: String, status: String, stderr: String },

    /// The ext4 image is not one this crate can read (when fixing its timestamps).
    #[error("not a supported ext4 image: {reason}")]
    BadExt4 { reason: String },

    /// The root file system image is larger than its partition.
    #[error("root file system image is {image} bytes but the root partition holds {partition}")]
    RootTooLarge { image: u64, partition: u64 },

    /// The disk writer skips zero ranges by seeking, so it needs an empty output.
    #[error("the output already holds {len} bytes; the disk writer needs an empty output")]
    OutputNotEmpty { len: u64 },

    /// A qcow2 image this crate cannot read (for dumps).
    #[error("not a supported qcow2 image: {reason}")]
    BadQcow2 { reason: String },
}

/// Result alias of this crate.
pub type Result<T, E = DiskError> = std::result::Result<T, E>;
