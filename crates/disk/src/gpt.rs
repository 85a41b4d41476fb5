//! The GPT of a [`DiskLayout`], written with the `gpt` crate into a [`SparseBuf`] the size of the disk (so only
//! the protective MBR, the two headers and the two partition arrays take memory), and a text dump of any
//! disk's GPT in the style of `sfdisk --dump`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, Read, Seek, SeekFrom, Write},
};

use gpt::{
    disk::LogicalBlockSize, mbr::ProtectiveMBR, partition::Partition, partition_types::Type, GptConfig,
};

use crate::{
    layout::{DiskLayout, PartitionRole, SECTOR},
    sparse::SparseBuf,
    DiskError, Result,
};

fn gpt_err(action: &'static str) -> impl FnOnce(gpt::GptError) -> DiskError {
    move |e| DiskError::Gpt { action, message: e.to_string() }
}

/// Writes the protective MBR, primary and backup GPT of `layout` into a sparse buffer the size of the disk.
pub fn build_gpt(layout: &DiskLayout) -> Result<SparseBuf> {
    let mut dev = SparseBuf::new(layout.size);
    let sectors = layout.size / SECTOR;
    let mbr = ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut dev)
        .map_err(|e| DiskError::Gpt { action: "writing the protective MBR", message: e.to_string() })?;

    let mut disk = GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(dev, Some(layout.disk_guid))
        .map_err(gpt_err("creating the partition table"))?;
    let parts: BTreeMap<u32, Partition> = layout
        .partitions
        .iter()
        .map(|p| {
            let entry = Partition {
                part_type_guid: Type {
                    guid: p.role.type_guid(),
                    os: gpt::partition_types::OperatingSystem::None,
                },
                part_guid: p.guid,
                first_lba: p.first_lba(),
                last_lba: p.last_lba(),
                flags: 0,
                name: p.label.clone(),
            };
            (p.number, entry)
        })
        .collect();
    disk.update_partitions(parts).map_err(gpt_err("adding the partitions"))?;
    let mut dev = disk.write().map_err(gpt_err("writing the partition table"))?;
    dev.seek(SeekFrom::Start(0))?;
    Ok(dev)
}

/// Adapts a reader for the `gpt` crate, which asks for `Write` even to read.
#[derive(Debug)]
struct ReadOnly<'a, R>(&'a mut R);

impl<R: Read> Read for ReadOnly<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Seek> Seek for ReadOnly<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl<R> Write for ReadOnly<'_, R> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A dump of a disk's GPT in the style of `sfdisk --dump` (GUIDs upper-case, as sfdisk prints them), with
/// the DPS role of each partition's type as a trailing comment.
pub fn dump_gpt<R: Read + Seek + std::fmt::Debug>(disk: &mut R) -> Result<String> {
    let gpt = GptConfig::new()
        .writable(false)
        .logical_block_size(LogicalBlockSize::Lb512)
        .only_valid_headers(true)
        .open_from_device(ReadOnly(disk))
        .map_err(gpt_err("reading the partition table"))?;
    let h = gpt
        .primary_header()
        .map_err(|e| DiskError::Gpt { action: "reading the primary header", message: e.to_string() })?;
    let mut out = String::new();
    let _ = writeln!(out, "label: gpt");
    let _ = writeln!(out, "label-id: {}", upper(gpt.guid()));
    let _ = writeln!(out, "unit: sectors");
    let _ = writeln!(out, "first-lba: {}", h.first_usable);
    let _ = writeln!(out, "last-lba: {}", h.last_usable);
    let _ = writeln!(out, "table-length: {}", h.num_parts);
    let _ = writeln!(out, "sector-size: {SECTOR}");
    let _ = writeln!(out);
    for (n, p) in gpt.partitions().iter().filter(|(_, p)| p.is_used()) {
        let role = PartitionRole::from_type_guid(p.part_type_guid.guid).map_or("?", PartitionRole::name);
        let size = p.last_lba + 1 - p.first_lba;
        let _ = writeln!(
            out,
            "part{n} : start={}, size={size}, type={}, uuid={}, name=\"{}\"{}  # {role}",
            p.first_lba,
            upper(&p.part_type_guid.guid),
            upper(&p.part_guid),
            p.name,
            if p.flags != 0 { format!(", attrs=0x{:x}", p.flags) } else { String::new() },
        );
    }
    Ok(out)
}

fn upper(u: &uuid::Uuid) -> String {
    u.hyphenated().to_string().to_uppercase()
}
