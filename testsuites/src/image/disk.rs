//! The root file system of a raw GPT disk (`disk.raw`), read in place: the GPT (both headers must be valid)
//! gives the one partition of the Discoverable Partitions Specification's x86-64 root type, and `ext4-view`
//! reads the ext4 file system inside it through a reader bounded to that partition. Nothing is mounted,
//! copied or converted.
//!
//! `ext4-view` gives type, mode, owner, size, times and link targets, but not the device numbers of device
//! nodes: those alone come from `debugfs -R stat` on the same partition (`disk.raw?offset=N`), once per
//! device node. A qcow2 artifact is not read here: [`compare_qcow2_with_raw`] asks `qemu-img compare` whether
//! it holds the same disk as the raw one.

use std::{
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::Command,
};

use ext4_view::{Ext4, Ext4Error, Ext4Read, Metadata};

use super::{child_path, Entry, EntryKind, ImageError, RootFs};

/// Partition type GUID of an x86-64 root file system (Discoverable Partitions Specification).
pub const ROOT_X86_64_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

/// The root partition found in the GPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPartition {
    /// 1-based partition number.
    pub number: u32,
    /// Unique partition GUID, lower-case (what `root=PARTUUID=` names).
    pub guid: String,
    /// GPT partition name.
    pub name: String,
    /// Offset from the start of the disk, bytes.
    pub start: u64,
    /// Size, bytes.
    pub size: u64,
}

/// Reads of the file system, kept inside its partition of the disk file.
struct PartitionReader {
    file: std::fs::File,
    start: u64,
    size: u64,
}

impl Ext4Read for PartitionReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let end = start_byte.checked_add(dst.len() as u64).filter(|&e| e <= self.size);
        if end.is_none() {
            return Err(format!(
                "read of {} bytes at {start_byte} goes past the end of the {}-byte partition",
                dst.len(),
                self.size
            )
            .into());
        }
        self.file.read_exact_at(dst, self.start + start_byte)?;
        Ok(())
    }
}

/// The root file system of a raw disk image, opened for reading. Not `Send`: `ext4-view` shares its block
/// cache through an `Rc`, so a thread that wants one opens its own (opening reads only the superblock, the
/// group descriptors and the journal).
pub struct DiskImage {
    artifact: PathBuf,
    partition: RootPartition,
    fs: Ext4,
}

impl std::fmt::Debug for DiskImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskImage")
            .field("artifact", &self.artifact)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

/// Finds the one x86-64 root partition in the GPT of `disk` (512-byte sectors, as kiln writes).
pub fn find_root_partition(disk: &Path) -> Result<RootPartition, ImageError> {
    let gpt_err = |e: gpt::GptError| ImageError::Gpt { artifact: disk.into(), reason: e.to_string() };
    let io_err = |source| ImageError::Io { artifact: disk.into(), source };
    let file = fs_err::File::open(disk).map_err(io_err)?;
    let lb = gpt::disk::LogicalBlockSize::Lb512;
    let table = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(lb)
        .only_valid_headers(true)
        .open_from_device(file.into_parts().0)
        .map_err(gpt_err)?;
    let roots: Vec<RootPartition> = table
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used() && p.part_type_guid.guid.hyphenated().to_string() == ROOT_X86_64_TYPE)
        .map(|(&number, p)| -> Result<RootPartition, ImageError> {
            Ok(RootPartition {
                number,
                guid: p.part_guid.hyphenated().to_string(),
                name: p.name.clone(),
                start: p.bytes_start(lb).map_err(io_err)?,
                size: p.bytes_len(lb).map_err(io_err)?,
            })
        })
        .collect::<Result<_, _>>()?;
    match <[RootPartition; 1]>::try_from(roots) {
        Ok([root]) => Ok(root),
        Err(roots) => Err(ImageError::RootPartition { artifact: disk.into(), found: roots.len() }),
    }
}

impl DiskImage {
    /// Opens the root file system of the raw disk image `disk` (e.g. `OUT/disk.raw`).
    pub fn open(disk: &Path) -> Result<Self, ImageError> {
        let partition = find_root_partition(disk)?;
        let file =
            fs_err::File::open(disk).map_err(|source| ImageError::Io { artifact: disk.into(), source })?;
        let len = file.metadata().map_err(|source| ImageError::Io { artifact: disk.into(), source })?.len();
        if partition.start + partition.size > len {
            return Err(ImageError::Gpt {
                artifact: disk.into(),
                reason: format!(
                    "root partition {} ends at byte {}, past the end of the {len}-byte file",
                    partition.number,
                    partition.start + partition.size
                ),
            });
        }
        let reader =
            PartitionReader { file: file.into_parts().0, start: partition.start, size: partition.size };
        let fs = Ext4::load(Box::new(reader)).map_err(|e| ImageError::Ext4 {
            artifact: disk.into(),
            partition: partition.number,
            path: None,
            message: e.to_string(),
        })?;
        Ok(Self { artifact: disk.into(), partition, fs })
    }

    /// The root partition the file system was read from.
    pub fn partition(&self) -> &RootPartition {
        &self.partition
    }

    /// The file system's UUID (lower-case, hyphenated) and label.
    pub fn fs_uuid(&self) -> String {
        self.fs.uuid().to_string()
    }

    pub fn fs_label(&self) -> String {
        self.fs.label().display().to_string()
    }

    fn ext4_err(&self, path: &str, e: Ext4Error) -> ImageError {
        ImageError::Ext4 {
            artifact: self.artifact.clone(),
            partition: self.partition.number,
            path: Some(path.into()),
            message: e.to_string(),
        }
    }

    fn utf8(&self, bytes: &[u8]) -> Result<String, ImageError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| ImageError::NonUtf8 {
            artifact: self.artifact.clone(),
            lossy: String::from_utf8_lossy(bytes).into_owned(),
        })
    }

    /// The entry for `path` from its inode's metadata.
    fn entry(&self, path: &str, m: &Metadata) -> Result<Entry, ImageError> {
        let t = m.file_type();
        let kind = if t.is_regular_file() {
            EntryKind::File
        } else if t.is_dir() {
            EntryKind::Dir
        } else if t.is_symlink() {
            let target = self.fs.read_link(path).map_err(|e| self.ext4_err(path, e))?;
            EntryKind::Symlink { target: self.utf8(target.as_ref())? }
        } else if t.is_char_dev() || t.is_block_dev() {
            let (major, minor) = self.device_numbers(path)?;
            if t.is_char_dev() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        } else if t.is_fifo() {
            EntryKind::Fifo
        } else {
            EntryKind::Socket
        };
        let size = match &kind {
            EntryKind::File => m.len(),
            EntryKind::Symlink { target } => target.len() as u64,
            _ => 0,
        };
        Ok(Entry {
            path: path.to_string(),
            kind,
            mode: u32::from(m.mode()),
            uid: m.uid(),
            gid: m.gid(),
            size,
            mtime: m.modified().seconds(),
        })
    }

    /// The device numbers of the device node at `path`: `ext4-view` does not expose them, so this asks
    /// `debugfs` (read-only, on the same partition of the same file).
    fn device_numbers(&self, path: &str) -> Result<(u32, u32), ImageError> {
        let tool_err = |stderr: String| ImageError::ToolFailed {
            artifact: self.artifact.clone(),
            program: "debugfs".into(),
            status: "no device numbers".into(),
            stderr,
        };
        if path.contains('"') {
            return Err(tool_err(format!("cannot quote `{path}` for debugfs")));
        }
        let mut device = self.artifact.clone().into_os_string();
        device.push(format!("?offset={}", self.partition.start));
        let out =
            Command::new("debugfs").arg("-R").arg(format!("stat \"{path}\"")).arg(&device).output().map_err(
                |source| ImageError::Spawn {
                    artifact: self.artifact.clone(),
                    program: "debugfs".into(),
                    source,
                },
            )?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        parse_device_numbers(&stdout).ok_or_else(|| {
            tool_err(format!("{}{}", stdout.trim(), String::from_utf8_lossy(&out.stderr).trim()))
        })
    }
}

/// The device numbers in `debugfs stat` output: `Device major/minor number: 01:03 (hex 01:03)` (decimal first).
fn parse_device_numbers(stat: &str) -> Option<(u32, u32)> {
    let line = stat.lines().find_map(|l| l.trim().strip_prefix("Device major/minor number:"))?;
    let (major, rest) = line.trim().split_once(':')?;
    let minor = rest.split_whitespace().next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

impl RootFs for DiskImage {
    fn artifact(&self) -> &Path {
        &self.artifact
    }

    fn entries(&self) -> Result<Vec<Entry>, ImageError> {
        let root = self.fs.symlink_metadata("/").map_err(|e| self.ext4_err("/", e))?;
        let mut out = vec![self.entry("/", &root)?];
        let mut dirs = vec!["/".to_string()];
        while let Some(dir) = dirs.pop() {
            for e in self.list_dir(&dir)? {
                if e.is_dir() {
                    dirs.push(e.path.clone());
                }
                out.push(e);
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn lookup(&self, path: &str) -> Result<Option<Entry>, ImageError> {
        match self.fs.symlink_metadata(path) {
            Ok(m) => self.entry(path, &m).map(Some),
            Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => Ok(None),
            Err(e) => Err(self.ext4_err(path, e)),
        }
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<Entry>, ImageError> {
        let mut out = Vec::new();
        for item in self.fs.read_dir(dir).map_err(|e| self.ext4_err(dir, e))? {
            let item = item.map_err(|e| self.ext4_err(dir, e))?;
            let name = item.file_name();
            let name = name.as_ref();
            if name == b"." || name == b".." {
                continue;
            }
            let path = child_path(dir, &self.utf8(name)?);
            let m = item.metadata().map_err(|e| self.ext4_err(&path, e))?;
            out.push(self.entry(&path, &m)?);
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn read_file(&self, entry: &Entry) -> Result<Vec<u8>, ImageError> {
        self.fs.read(entry.path.as_str()).map_err(|e| self.ext4_err(&entry.path, e))
    }
}

/// What `qemu-img compare` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskMatch {
    /// The two images hold the same disk content.
    Same,
    /// They differ; what `qemu-img` said (the first differing offset).
    Differs(String),
}

/// Whether the qcow2 image `qcow2` holds the same disk as the raw image `raw`: the same virtual size (read
/// from the qcow2 header) and the same guest content by `qemu-img compare` (so allocation and compression do
/// not matter).
pub fn compare_qcow2_with_raw(qcow2: &Path, raw: &Path) -> Result<DiskMatch, ImageError> {
    let raw_size =
        fs_err::metadata(raw).map_err(|source| ImageError::Io { artifact: raw.into(), source })?.len();
    let qcow2_size = qcow2_virtual_size(qcow2)?;
    if qcow2_size != raw_size {
        return Ok(DiskMatch::Differs(format!(
            "virtual size {qcow2_size} bytes, the raw disk has {raw_size} bytes"
        )));
    }
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "raw"])
        .arg(qcow2)
        .arg(raw)
        .output()
        .map_err(|source| ImageError::Spawn { artifact: qcow2.into(), program: "qemu-img".into(), source })?;
    let said = || {
        let mut s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.trim().is_empty() {
            s.push_str(err.trim());
        }
        s
    };
    // Exit codes: 0 identical, 1 different, 2 an image could not be opened, 3 an error while checking.
    match out.status.code() {
        Some(0) => Ok(DiskMatch::Same),
        Some(1) => Ok(DiskMatch::Differs(said())),
        _ => Err(ImageError::ToolFailed {
            artifact: qcow2.into(),
            program: "qemu-img compare".into(),
            status: out.status.to_string(),
            stderr: said(),
        }),
    }
}

/// The virtual disk size in a qcow2 header: magic `QFI\xfb`, then the size as a big-endian u64 at byte 24.
fn qcow2_virtual_size(qcow2: &Path) -> Result<u64, ImageError> {
    let file =
        fs_err::File::open(qcow2).map_err(|source| ImageError::Io { artifact: qcow2.into(), source })?;
    let mut header = [0u8; 32];
    file.file()
        .read_exact_at(&mut header, 0)
        .map_err(|source| ImageError::Io { artifact: qcow2.into(), source })?;
    if &header[..4] != b"QFI\xfb" {
        return Err(ImageError::NotQcow2 { artifact: qcow2.into() });
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&header[24..32]);
    Ok(u64::from_be_bytes(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_from_debugfs_stat() {
        let stat = "Inode: 13   Type: character special    Mode:  0644   Flags: 0x0\n\
                    Size of extra inode fields: 32\n\
                    Device major/minor number: 01:03 (hex 01:03)\n";
        assert_eq!(parse_device_numbers(stat), Some((1, 3)));
        let stat = "Device major/minor number: 259:65536 (hex 103:10000)\n";
        assert_eq!(parse_device_numbers(stat), Some((259, 65536)));
        assert_eq!(parse_device_numbers("Inode: 12   Type: regular\n"), None);
    }
}
