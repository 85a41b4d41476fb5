//! The ext4 root file system: made by `mke2fs -t ext4 -d TREE` into a file of the partition's size, with a
//! fixed UUID, hash seed, label and time (`E2FSPROGS_FAKE_TIME`), then made reproducible by
//! [`normalize_ext4_times`], which rewrites every inode's timestamps (mke2fs 1.47.0 copies atime and ctime
//! from the tree, and reading the tree moves atimes).
//!
//! Owners and modes come from the tree as they are on disk (the tree is built as root). Known limit of
//! mke2fs 1.47.0: it adds directory entries in the order the host's `readdir` returns them, so two copies of
//! a tree on different host file systems may give different inode numbers; the same tree gives the same
//! image.

use std::{
    collections::HashSet,
    ffi::OsString,
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::MetadataExt,
    path::Path,
    process::Command,
};

use uuid::Uuid;

use crate::{DiskError, Result};

/// How to make the root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Options {
    /// File system size in bytes (the partition size).
    pub size: u64,
    pub uuid: Uuid,
    /// Seed of the directory index hashes.
    pub hash_seed: Uuid,
    /// Volume label, at most 16 bytes.
    pub label: String,
    /// `SOURCE_DATE_EPOCH`: the file system's creation time, and the latest timestamp any inode keeps.
    pub epoch: u64,
}

/// A command to run: program, arguments and extra environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCommand {
    pub program: String,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
}

/// The `mke2fs` invocation that fills `image` (an existing file of the file system's size) from `tree`.
pub fn mke2fs_command(tree: &Path, image: &Path, opts: &Ext4Options) -> ToolCommand {
    let mut args: Vec<OsString> =
        ["-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-L"].into_iter().map(OsString::from).collect();
    args.push(opts.label.clone().into());
    args.push("-U".into());
    args.push(opts.uuid.hyphenated().to_string().into());
    args.push("-E".into());
    args.push(
        format!(
            "hash_seed={},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard",
            opts.hash_seed.hyphenated()
        )
        .into(),
    );
    args.push("-d".into());
    args.push(tree.as_os_str().to_owned());
    args.push(image.as_os_str().to_owned());
    ToolCommand {
        program: "mke2fs".into(),
        args,
        env: vec![("E2FSPROGS_FAKE_TIME".into(), opts.epoch.to_string())],
    }
}

/// Creates `image` with the size of the file system, runs `mke2fs -d tree` on it and normalizes its
/// timestamps.
pub fn make_ext4(tree: &Path, image: &Path, opts: &Ext4Options) -> Result<()> {
    let file = fs_err::File::create(image)?;
    file.set_len(opts.size)?;
    drop(file);
    let cmd = mke2fs_command(tree, image, opts);
    let output = Command::new(&cmd.program)
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|source| DiskError::Spawn { program: cmd.program.clone(), source })?;
    if !output.status.success() {
        return Err(DiskError::ToolFailed {
            program: cmd.program,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let mut f = fs_err::OpenOptions::new().read(true).write(true).open(image)?;
    normalize_ext4_times(&mut f, opts.epoch)?;
    f.sync_all()?;
    Ok(())
}

/// The tree's apparent size: the sum of the lengths `lstat` reports for every entry (files, directories,
/// symlinks), hard links counted once. This is what the "auto" disk size grows from.
pub fn tree_apparent_size(tree: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs_err::read_dir(&dir)? {
            let entry = entry?;
            let meta = fs_err::symlink_metadata(entry.path())?;
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            total += meta.len();
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

const SB_OFFSET: u64 = 1024;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const BG_INODE_UNINIT: u16 = 0x1;
/// An inode holding a large extended attribute value: its atime field is the value's hash, not a time.
const EA_INODE_FL: u32 = 0x0020_0000;

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn put16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

/// crc32c as ext4 computes it: no pre- or post-inversion around the running value.
fn ext4_crc32c(crc: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!crc, data)
}

fn bad(reason: impl Into<String>) -> DiskError {
    DiskError::BadExt4 { reason: reason.into() }
}

/// What [`normalize_ext4_times`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NormalizeStats {
    /// In-use inodes looked at.
    pub inodes: u64,
    /// Inodes rewritten.
    pub changed: u64,
}

/// Gives every in-use inode (but extended attribute value inodes) of an ext4 image the timestamps `mtime' = min(mtime, epoch)`,
/// `atime = ctime = mtime'`, `crtime = epoch`, all with zero nanoseconds, and recomputes the inode checksums
/// (metadata_csum). Everything else is left as it is.
pub fn normalize_ext4_times<D: Read + Write + Seek>(dev: &mut D, epoch: u64) -> Result<NormalizeStats> {
    let mut sb = [0u8; 1024];
    dev.seek(SeekFrom::Start(SB_OFFSET))?;
    dev.read_exact(&mut sb)?;
    if le16(&sb, 0x38) != 0xEF53 {
        return Err(bad("no ext2/3/4 superblock magic"));
    }
    let log_bs = le32(&sb, 0x18);
    if log_bs > 6 {
        return Err(bad(format!("block size exponent {log_bs}")));
    }
    let block_size = 1024u64 << log_bs;
    let blocks = u64::from(le32(&sb, 0x4)) | (u64::from(le32(&sb, 0x150)) << 32);
    let first_data_block = u64::from(le32(&sb, 0x14));
    let blocks_per_group = u64::from(le32(&sb, 0x20));
    let inodes_per_group = le32(&sb, 0x28) as usize;
    let inode_size = if le32(&sb, 0x4C) == 0 { 128 } else { le16(&sb, 0x58) as usize };
    let incompat = le32(&sb, 0x60);
    let ro_compat = le32(&sb, 0x64);
    if blocks_per_group == 0 || inodes_per_group == 0 || inode_size < 128 {
        return Err(bad("zero blocks or inodes per group"));
    }
    let desc_size = if incompat & INCOMPAT_64BIT != 0 { le16(&sb, 0xFE) as usize } else { 32 };
    if desc_size < 32 {
        return Err(bad(format!("group descriptor size {desc_size}")));
    }
    let metadata_csum = ro_compat & RO_COMPAT_METADATA_CSUM != 0;
    let itable_unused_valid = ro_compat & (RO_COMPAT_METADATA_CSUM | RO_COMPAT_GDT_CSUM) != 0;
    let csum_seed =
        if incompat & INCOMPAT_CSUM_SEED != 0 { le32(&sb, 0x270) } else { ext4_crc32c(!0, &sb[0x68..0x78]) };

    let groups = (blocks - first_data_block).div_ceil(blocks_per_group) as usize;
    let mut gdt = vec![0u8; groups * desc_size];
    dev.seek(SeekFrom::Start((first_data_block + 1) * block_size))?;
    dev.read_exact(&mut gdt)?;

    let target_epoch = i64::try_from(epoch).map_err(|_| bad("epoch out of range"))?;
    let mut stats = NormalizeStats::default();
    let mut table = vec![0u8; inodes_per_group * inode_size];
    for g in 0..groups {
        let d = &gdt[g * desc_size..(g + 1) * desc_size];
        let flags = le16(d, 0x12);
        if itable_unused_valid && flags & BG_INODE_UNINIT != 0 {
            continue;
        }
        let mut table_block = u64::from(le32(d, 0x8));
        let mut unused = u32::from(le16(d, 0x1C));
        if desc_size >= 64 {
            table_block |= u64::from(le32(d, 0x28)) << 32;
            unused |= u32::from(le16(d, 0x32)) << 16;
        }
        let used = if itable_unused_valid {
            inodes_per_group.saturating_sub(unused as usize)
        } else {
            inodes_per_group
        };
        let bytes = &mut table[..used * inode_size];
        let pos = table_block * block_size;
        dev.seek(SeekFrom::Start(pos))?;
        dev.read_exact(bytes)?;
        let mut dirty = false;
        for (i, inode) in bytes.chunks_exact_mut(inode_size).enumerate() {
            if le16(inode, 0x1A) == 0 {
                continue; // not linked: free
            }
            if le32(inode, 0x20) & EA_INODE_FL != 0 {
                continue;
            }
            stats.inodes += 1;
            let ino = (g * inodes_per_group + i + 1) as u32;
            if normalize_inode(inode, ino, target_epoch, metadata_csum.then_some(csum_seed)) {
                stats.changed += 1;
                dirty = true;
            }
        }
        if dirty {
            dev.seek(SeekFrom::Start(pos))?;
            dev.write_all(bytes)?;
        }
    }
    dev.flush()?;
    Ok(stats)
}

/// Splits seconds into ext4's low 32 bits and the 2 epoch bits kept in the `_extra` field.
fn split_time(t: i64) -> (u32, u32) {
    let lo = t as u32;
    let hi = ((t - i64::from(lo as i32)) >> 32) as u32 & 3;
    (lo, hi)
}

fn normalize_inode(inode: &mut [u8], ino: u32, epoch: i64, csum_seed: Option<u32>) -> bool {
    let size = inode.len();
    let extra_isize = if size > 128 { le16(inode, 0x80) as usize } else { 0 };
    let has = |end: usize| size > 128 && 128 + extra_isize >= end;
    let mtime_extra = if has(0x8C) { le32(inode, 0x88) } else { 0 };
    let mtime = i64::from(le32(inode, 0x10) as i32) + (i64::from(mtime_extra & 3) << 32);
    let t = mtime.min(epoch);
    let before = inode.to_vec();
    let (lo, hi) = split_time(t);
    for off in [0x8, 0xC, 0x10] {
        put32(inode, off, lo);
    }
    for (off, end) in [(0x84, 0x88), (0x88, 0x8C), (0x8C, 0x90)] {
        if has(end) {
            put32(inode, off, hi);
        }
    }
    if has(0x98) {
        let (clo, chi) = split_time(epoch);
        put32(inode, 0x90, clo);
        put32(inode, 0x94, chi);
    }
    if let Some(seed) = csum_seed {
        let has_hi = has(0x84);
        put16(inode, 0x7C, 0);
        if has_hi {
            put16(inode, 0x82, 0);
        }
        let generation = le32(inode, 0x64);
        let mut crc = ext4_crc32c(seed, &ino.to_le_bytes());
        crc = ext4_crc32c(crc, &generation.to_le_bytes());
        crc = ext4_crc32c(crc, inode);
        put16(inode, 0x7C, crc as u16);
        if has_hi {
            put16(inode, 0x82, (crc >> 16) as u16);
        }
    }
    before != inode
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mke2fs_gets_fixed_ids_and_time() {
        let opts = Ext4Options {
            size: 64 << 20,
            uuid: Uuid::from_u128(0x11111111_2222_4333_8444_555555555555),
            hash_seed: Uuid::from_u128(0x66666666_7777_4888_9999_aaaaaaaaaaaa),
            label: "root".into(),
            epoch: 1_700_000_000,
        };
        let cmd = mke2fs_command(Path::new("/t"), Path::new("/i.ext4"), &opts);
        let args: Vec<_> = cmd.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args.join(" "),
            "-q -F -t ext4 -b 4096 -I 256 -L root -U 11111111-2222-4333-8444-555555555555 \
             -E hash_seed=66666666-7777-4888-9999-aaaaaaaaaaaa,root_owner=0:0,lazy_itable_init=0,\
             lazy_journal_init=0,nodiscard -d /t /i.ext4"
        );
        assert_eq!(cmd.env, [("E2FSPROGS_FAKE_TIME".to_owned(), "1700000000".to_owned())]);
    }

    #[test]
    fn split_time_keeps_epoch_bits() {
        assert_eq!(split_time(1_700_000_000), (1_700_000_000, 0));
        assert_eq!(split_time(1 << 31), (1 << 31, 1));
        assert_eq!(split_time(-1), (u32::MAX, 0));
    }

    #[test]
    fn inode_times_are_clamped_and_checksummed() {
        let mut inode = vec![0u8; 256];
        put16(&mut inode, 0x1A, 1);
        put32(&mut inode, 0x8, 1_800_000_000);
        put32(&mut inode, 0xC, 1_800_000_000);
        put32(&mut inode, 0x10, 1_600_000_000);
        put16(&mut inode, 0x80, 32);
        put32(&mut inode, 0x88, 12345 << 2);
        assert!(normalize_inode(&mut inode, 12, 1_700_000_000, Some(0xabcd)));
        for off in [0x8, 0xC, 0x10] {
            assert_eq!(le32(&inode, off), 1_600_000_000);
        }
        assert_eq!(le32(&inode, 0x88), 0);
        assert_eq!(le32(&inode, 0x90), 1_700_000_000);
        // Second run: nothing left to change, same checksum.
        assert!(!normalize_inode(&mut inode, 12, 1_700_000_000, Some(0xabcd)));
    }
}
