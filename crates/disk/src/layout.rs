//! Disk layout planning (pure): where the ESP, the root and the extra partitions go, their Discoverable
//! Partitions Specification type GUIDs, and their identity-derived GUIDs.
//!
//! Layout: LBA 0 protective MBR, LBA 1 GPT header, LBAs 2-33 the 128-entry partition array, then the
//! partitions from 1 MiB on, each starting and ending on a 1 MiB boundary, in the order ESP, root, extras.
//! The last MiB of the disk is left free for the backup partition array and header.
//!
//! Sizes: an explicit disk size gives the root partition everything the ESP and the extras leave. With
//! "auto", the root partition is [`auto_root_size`]: the tree's apparent size times 1.3, plus 256 MiB, rounded
//! up to a whole MiB; the disk is then 1 MiB + ESP + root + extras + 1 MiB.

use uuid::Uuid;

use crate::{identity::ImageIdentity, DiskError, Result};

/// One mebibyte: the partition alignment.
pub const MIB: u64 = 1 << 20;
/// The logical sector size kiln's disks use.
pub const SECTOR: u64 = 512;

/// What a partition is for; picks its Discoverable Partitions Specification type GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PartitionRole {
    /// EFI system partition.
    Esp,
    /// Root file system for x86-64.
    Root,
    Home,
    Srv,
    Var,
    Tmp,
    Swap,
    /// Generic Linux data.
    Linux,
}

impl PartitionRole {
    /// The partition type GUID of this role.
    pub fn type_guid(self) -> Uuid {
        let s = match self {
            Self::Esp => "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            Self::Root => "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            Self::Home => "933AC7E1-2EB4-4F13-B844-0E14E2AEF915",
            Self::Srv => "3B8F8425-20E0-4F3B-907F-1A25A76F98E8",
            Self::Var => "4D21B016-B534-45C2-A9FB-5C16E091FD2D",
            Self::Tmp => "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1",
            Self::Swap => "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
            Self::Linux => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        };
        // The strings above are constants that parse.
        Uuid::parse_str(s).unwrap_or_default()
    }

    /// The role of a type GUID, if it is one of kiln's.
    pub fn from_type_guid(guid: Uuid) -> Option<Self> {
        [Self::Esp, Self::Root, Self::Home, Self::Srv, Self::Var, Self::Tmp, Self::Swap, Self::Linux]
            .into_iter()
            .find(|r| r.type_guid() == guid)
    }

    /// Short name, as used in dumps.
    pub fn name(self) -> &'static str {
        match self {
            Self::Esp => "esp",
            Self::Root => "root-x86-64",
            Self::Home => "home",
            Self::Srv => "srv",
            Self::Var => "var",
            Self::Tmp => "tmp",
            Self::Swap => "swap",
            Self::Linux => "linux-generic",
        }
    }
}

/// A partition after the root partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraPartition {
    /// GPT partition name; also seeds the partition GUID, so it must be unique on the disk.
    pub label: String,
    /// Size in bytes, a multiple of 1 MiB.
    pub size: u64,
    pub role: PartitionRole,
}

/// What the caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Total disk size in bytes (a multiple of 1 MiB), or `None` for "auto" (see the module docs).
    pub size: Option<u64>,
    /// ESP size in bytes, a multiple of 1 MiB, at least 33 MiB (FAT32's minimum at 512-byte clusters).
    pub esp_size: u64,
    pub extra: Vec<ExtraPartition>,
}

/// GPT name of the EFI system partition.
pub const ESP_LABEL: &str = "esp";
/// GPT name of the root partition.
pub const ROOT_LABEL: &str = "root";

/// A partition placed on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPartition {
    /// 1-based partition number.
    pub number: u32,
    pub label: String,
    pub role: PartitionRole,
    /// Unique partition GUID (derived from the image identity and the label).
    pub guid: Uuid,
    /// Offset in bytes from the start of the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

impl PlannedPartition {
    /// First LBA.
    pub fn first_lba(&self) -> u64 {
        self.start / SECTOR
    }

    /// Last LBA (inclusive).
    pub fn last_lba(&self) -> u64 {
        (self.start + self.size) / SECTOR - 1
    }
}

/// The planned disk: its GUID, size and partitions (ESP first, root second, extras after).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    pub disk_guid: Uuid,
    pub size: u64,
    pub partitions: Vec<PlannedPartition>,
}

/// The root partition size "auto" picks for a tree of `tree_bytes` apparent size:
/// `tree_bytes * 1.3 + 256 MiB`, rounded up to a whole MiB.
pub fn auto_root_size(tree_bytes: u64) -> u64 {
    let with_headroom = tree_bytes.saturating_add(tree_bytes.div_ceil(10) * 3).saturating_add(256 * MIB);
    with_headroom.div_ceil(MIB) * MIB
}

fn check_aligned(label: &str, size: u64) -> Result<()> {
    if size == 0 || size % MIB != 0 {
        return Err(DiskError::UnalignedPartition { label: label.to_owned(), size });
    }
    if label.encode_utf16().count() > 36 {
        return Err(DiskError::LabelTooLong { label: label.to_owned() });
    }
    Ok(())
}

impl DiskLayout {
    /// Plans a disk. `tree_bytes` is the root tree's apparent size, used only when `spec.size` is auto.
    pub fn plan(spec: &DiskSpec, tree_bytes: u64, identity: &ImageIdentity) -> Result<Self> {
        check_aligned(ESP_LABEL, spec.esp_size)?;
        if spec.esp_size < crate::esp::MIN_ESP_SIZE {
            return Err(DiskError::EspTooSmall { size: spec.esp_size });
        }
        let mut labels = std::collections::BTreeSet::from([ESP_LABEL, ROOT_LABEL]);
        for p in &spec.extra {
            check_aligned(&p.label, p.size)?;
            if !labels.insert(&p.label) {
                return Err(DiskError::DuplicateLabel { label: p.label.clone() });
            }
        }
        let extra_size: u64 = spec.extra.iter().map(|p| p.size).sum();
        // 1 MiB before the first partition, 1 MiB after the last.
        let fixed = 2 * MIB + spec.esp_size + extra_size;
        let (size, root_size) = match spec.size {
            Some(size) => {
                check_aligned("disk", size)?;
                if size <= fixed {
                    return Err(DiskError::DiskTooSmall {
                        disk_size: size,
                        esp_size: spec.esp_size,
                        extra_size,
                        needed: fixed + MIB,
                    });
                }
                (size, size - fixed)
            }
            None => {
                let root = auto_root_size(tree_bytes);
                (fixed + root, root)
            }
        };

        let mut partitions = Vec::with_capacity(2 + spec.extra.len());
        let mut start = MIB;
        let mut push = |label: &str, role: PartitionRole, size: u64| {
            let number = partitions.len() as u32 + 1;
            let guid = identity.uuid(&format!("partition:{label}"));
            partitions.push(PlannedPartition { number, label: label.to_owned(), role, guid, start, size });
            start += size;
        };
        push(ESP_LABEL, PartitionRole::Esp, spec.esp_size);
        push(ROOT_LABEL, PartitionRole::Root, root_size);
        for p in &spec.extra {
            push(&p.label, p.role, p.size);
        }
        Ok(Self { disk_guid: identity.uuid("gpt-disk"), size, partitions })
    }

    /// The EFI system partition.
    pub fn esp(&self) -> &PlannedPartition {
        &self.partitions[0]
    }

    /// The root partition.
    pub fn root(&self) -> &PlannedPartition {
        &self.partitions[1]
    }

    /// The kernel command line argument that finds the root partition.
    pub fn root_cmdline_arg(&self) -> String {
        format!("root=PARTUUID={}", self.root().guid.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ImageIdentity {
        ImageIdentity::new("t", "1.0.0", "d")
    }

    #[test]
    fn auto_size_rule() {
        assert_eq!(auto_root_size(0), 256 * MIB);
        assert_eq!(auto_root_size(1000 * MIB), (1300 + 256) * MIB);
        // Rounded up to a whole MiB.
        assert_eq!(auto_root_size(1), 257 * MIB);
    }

    #[test]
    fn explicit_size_gives_root_the_rest_and_partitions_are_aligned() {
        let spec = DiskSpec {
            size: Some(1024 * MIB),
            esp_size: 64 * MIB,
            extra: vec![ExtraPartition { label: "home".into(), size: 100 * MIB, role: PartitionRole::Home }],
        };
        let l = DiskLayout::plan(&spec, 0, &id()).unwrap();
        let starts: Vec<_> = l.partitions.iter().map(|p| (p.start / MIB, p.size / MIB)).collect();
        assert_eq!(starts, [(1, 64), (65, 1024 - 64 - 100 - 2), (1024 - 101, 100)]);
        assert_eq!(l.root().role, PartitionRole::Root);
        assert_eq!(l.partitions[2].role.type_guid().to_string(), "933ac7e1-2eb4-4f13-b844-0e14e2aef915");
        assert_eq!(l.root_cmdline_arg(), format!("root=PARTUUID={}", l.root().guid));
    }

    #[test]
    fn auto_size_adds_gpt_room() {
        let spec = DiskSpec { size: None, esp_size: 64 * MIB, extra: vec![] };
        let l = DiskLayout::plan(&spec, 100 * MIB, &id()).unwrap();
        assert_eq!(l.root().size, auto_root_size(100 * MIB));
        assert_eq!(l.size, 2 * MIB + 64 * MIB + l.root().size);
    }

    #[test]
    fn rejects_bad_specs() {
        let small = DiskSpec { size: Some(66 * MIB), esp_size: 64 * MIB, extra: vec![] };
        assert!(matches!(DiskLayout::plan(&small, 0, &id()), Err(DiskError::DiskTooSmall { .. })));
        let unaligned = DiskSpec { size: None, esp_size: 64 * MIB + 1, extra: vec![] };
        assert!(matches!(DiskLayout::plan(&unaligned, 0, &id()), Err(DiskError::UnalignedPartition { .. })));
        let dup = DiskSpec {
            size: None,
            esp_size: 64 * MIB,
            extra: vec![ExtraPartition { label: "root".into(), size: MIB, role: PartitionRole::Linux }],
        };
        assert!(matches!(DiskLayout::plan(&dup, 0, &id()), Err(DiskError::DuplicateLabel { .. })));
    }
}
