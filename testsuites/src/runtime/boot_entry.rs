//! The boot entry a disk image boots by default, read (never written) from its ESP: the GPT's EFI system
//! partition, systemd-boot's `loader/loader.conf` `default`, and that Boot Loader Specification entry's
//! kernel, initrd and `options` (the image's own kernel command line).
//!
//! A raw image is read in place through a read-only file handle. A qcow2 image's partition table and ESP
//! are first copied out as raw bytes with `qemu-img dd` (into the caller's scratch folder).
//! Parsing the entry and choosing the default are pure ([`parse_entry`], [`choose_entry`]).

use std::{
    cmp::Ordering,
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    process::Command,
};

use super::evaluate::glob_match;
use crate::vm::DiskFormat;

#[derive(Debug, thiserror::Error)]
pub enum BootEntryError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: no GUID partition table: {message}", image.display())]
    NoGpt { image: PathBuf, message: String },
    #[error("{}: no EFI system partition in its partition table", image.display())]
    NoEsp { image: PathBuf },
    #[error("{}: the ESP is not a readable FAT file system: {source}", image.display())]
    Fat { image: PathBuf, source: io::Error },
    #[error("{}: {message}", image.display())]
    Entry { image: PathBuf, message: String },
    #[error("qemu-img dd failed: {0}")]
    QemuImg(String),
}

/// A Boot Loader Specification type #1 entry (the keys that boot Linux).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// Its file name in `loader/entries/`.
    pub name: String,
    /// ESP paths, e.g. `/vmlinuz-6.1.0-26-amd64`.
    pub linux: String,
    pub initrds: Vec<String>,
    /// The kernel command line (several `options` lines joined with spaces).
    pub options: String,
}

/// Parses an entry's text (`name` is its file name).
pub fn parse_entry(name: &str, text: &str) -> Result<BootEntry, String> {
    let (mut linux, mut initrds, mut options) = (None, Vec::new(), Vec::new());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim();
        match key {
            "linux" => linux = Some(value.to_owned()),
            "initrd" => initrds.push(value.to_owned()),
            "options" => options.push(value.to_owned()),
            "efi" => return Err(format!("entry {name} boots an EFI program (`efi`), not a kernel")),
            _ => {}
        }
    }
    let linux = linux.ok_or_else(|| format!("entry {name} names no kernel (`linux`)"))?;
    Ok(BootEntry { name: name.to_owned(), linux, initrds, options: options.join(" ") })
}

/// Compares names the way people read versions: runs of digits as numbers.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while let (Some(&x), Some(&y)) = (a.first(), b.first()) {
        if x.is_ascii_digit() && y.is_ascii_digit() {
            let (na, nb) = (
                a.iter().take_while(|c| c.is_ascii_digit()).count(),
                b.iter().take_while(|c| c.is_ascii_digit()).count(),
            );
            let trim = |d: &[u8]| d.iter().position(|&c| c != b'0').map_or(0, |p| d.len() - p);
            let (da, db) = (&a[na - trim(&a[..na])..na], &b[nb - trim(&b[..nb])..nb]);
            match da.len().cmp(&db.len()).then_with(|| da.cmp(db)) {
                Ordering::Equal => (a, b) = (&a[na..], &b[nb..]),
                o => return o,
            }
        } else if x != y {
            return x.cmp(&y);
        } else {
            (a, b) = (&a[1..], &b[1..]);
        }
    }
    a.len().cmp(&b.len())
}

/// The entry systemd-boot starts: the first (newest version first) whose name, with or without `.conf`,
/// matches `loader.conf`'s `default` glob; without a default, the newest. `None` when there is no entry.
pub fn choose_entry<'a>(loader_conf: Option<&str>, names: &'a [String]) -> Option<&'a String> {
    let mut entries: Vec<&String> =
        names.iter().filter(|n| n.to_ascii_lowercase().ends_with(".conf")).collect();
    entries.sort_by(|a, b| natural_cmp(b, a));
    let default = loader_conf.and_then(|c| {
        c.lines().find_map(|l| {
            let (k, v) = l.trim().split_once(char::is_whitespace)?;
            (k == "default").then(|| v.trim().to_owned())
        })
    });
    match default {
        Some(d) if !d.starts_with('@') => entries.into_iter().find(|n| {
            let stem = &n[..n.len() - ".conf".len()];
            glob_match(&d, n) || glob_match(&d, stem)
        }),
        _ => entries.into_iter().next(),
    }
}

/// A byte range of a file, read-only: writes fail (the FAT and GPT readers want a writable device type).
#[derive(Debug)]
struct ReadOnlySlice {
    file: std::fs::File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for ReadOnlySlice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.file.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for ReadOnlySlice {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

impl Write for ReadOnlySlice {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "the image is read, never written"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn open_slice(path: &Path, start: u64, len: Option<u64>) -> Result<ReadOnlySlice, BootEntryError> {
    let io_err = |source| BootEntryError::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let len = match len {
        Some(l) => l,
        None => file.metadata().map_err(io_err)?.len(),
    };
    Ok(ReadOnlySlice { file, start, len, pos: 0 })
}

/// `qemu-img dd` of `count` blocks of `bs` bytes from `skip` blocks into a raw file.
fn qemu_img_dd(image: &Path, out: &Path, bs: u64, skip: u64, count: u64) -> Result<(), BootEntryError> {
    let _ = std::fs::remove_file(out);
    let o = Command::new("qemu-img")
        .args(["dd", "-f", "qcow2", "-O", "raw"])
        .arg(format!("bs={bs}"))
        .arg(format!("skip={skip}"))
        .arg(format!("count={count}"))
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", out.display()))
        .output()
        .map_err(|source| BootEntryError::Io { path: "qemu-img".into(), source })?;
    if !o.status.success() {
        return Err(BootEntryError::QemuImg(String::from_utf8_lossy(&o.stderr).trim().to_owned()));
    }
    Ok(())
}

/// The ESP of `image` as a readable device: its byte range in place (raw), or a raw copy (qcow2).
fn esp_device(image: &Path, format: DiskFormat, scratch: &Path) -> Result<ReadOnlySlice, BootEntryError> {
    let table_source = match format {
        DiskFormat::Raw => image.to_owned(),
        DiskFormat::Qcow2 => {
            // The protective MBR, the primary GPT header and 128 entries: 34 sectors.
            let head = scratch.join("gpt-head.raw");
            qemu_img_dd(image, &head, 512, 0, 34)?;
            head
        }
    };
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open_from_device(open_slice(&table_source, 0, None)?)
        .map_err(|e| BootEntryError::NoGpt { image: image.to_owned(), message: e.to_string() })?;
    let lb = *disk.logical_block_size();
    let esp = disk
        .partitions()
        .values()
        .find(|p| p.part_type_guid == gpt::partition_types::EFI)
        .ok_or_else(|| BootEntryError::NoEsp { image: image.to_owned() })?;
    let bad = |e: std::io::Error| BootEntryError::NoGpt { image: image.to_owned(), message: e.to_string() };
    let (start, len) = (esp.bytes_start(lb).map_err(bad)?, esp.bytes_len(lb).map_err(bad)?);
    match format {
        DiskFormat::Raw => open_slice(image, start, Some(len)),
        DiskFormat::Qcow2 => {
            let esp_copy = scratch.join("esp.raw");
            // The largest block (up to 1 MiB) that divides both the start and the length.
            let bs = (start | len | (1 << 20)).trailing_zeros().min(20);
            let bs = 1u64 << bs;
            qemu_img_dd(image, &esp_copy, bs, start / bs, len / bs)?;
            open_slice(&esp_copy, 0, None)
        }
    }
}

/// The default entry of `image`, with its kernel and initrd copied into `scratch` (several initrds are
/// concatenated into one, as the kernel accepts them).
pub fn read_default_entry(
    image: &Path,
    format: DiskFormat,
    scratch: &Path,
) -> Result<(BootEntry, PathBuf, Option<PathBuf>), BootEntryError> {
    let device = esp_device(image, format, scratch)?;
    let fat = |source| BootEntryError::Fat { image: image.to_owned(), source };
    let fs = fatfs::FileSystem::new(device, fatfs::FsOptions::new()).map_err(fat)?;
    let root = fs.root_dir();
    let read_text = |path: &str| -> Option<String> {
        let mut s = String::new();
        root.open_file(path).ok()?.read_to_string(&mut s).ok()?;
        Some(s)
    };
    let entry_err = |message: String| BootEntryError::Entry { image: image.to_owned(), message };
    let names: Vec<String> = match root.open_dir("loader/entries") {
        Ok(dir) => dir.iter().filter_map(Result::ok).filter(|e| e.is_file()).map(|e| e.file_name()).collect(),
        Err(_) => Vec::new(),
    };
    let loader_conf = read_text("loader/loader.conf");
    let name = choose_entry(loader_conf.as_deref(), &names)
        .ok_or_else(|| entry_err(format!("no boot loader entry in the ESP's loader/entries/ ({names:?})")))?;
    let text = read_text(&format!("loader/entries/{name}"))
        .ok_or_else(|| entry_err(format!("loader/entries/{name} is unreadable")))?;
    let entry = parse_entry(name, &text).map_err(entry_err)?;
    let copy = |esp_path: &str, to: &Path, append: bool| -> Result<(), BootEntryError> {
        let mut from = root
            .open_file(esp_path.trim_start_matches('/'))
            .map_err(|e| entry_err(format!("{esp_path} (named by {name}): {e}")))?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(to)
            .map_err(|source| BootEntryError::Io { path: to.to_owned(), source })?;
        io::copy(&mut from, &mut io::BufWriter::new(out))
            .map_err(|source| BootEntryError::Io { path: to.to_owned(), source })?;
        Ok(())
    };
    let kernel = scratch.join("kernel");
    copy(&entry.linux, &kernel, false)?;
    let initrd = if entry.initrds.is_empty() {
        None
    } else {
        let path = scratch.join("initrd");
        for (i, p) in entry.initrds.iter().enumerate() {
            copy(p, &path, i > 0)?;
        }
        Some(path)
    };
    Ok((entry, kernel, initrd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_parsed_like_systemd_boot_does() {
        let e = parse_entry(
            "web-6.1.0-26-amd64.conf",
            "title Debian\n# a comment\nversion 6.1.0-26-amd64\nlinux /vmlinuz-6.1.0-26-amd64\n\
             initrd /ucode.img\ninitrd /initrd.img-6.1.0-26-amd64\noptions root=PARTUUID=0b6c rw\noptions  console=ttyS0\n",
        )
        .unwrap();
        assert_eq!(e.linux, "/vmlinuz-6.1.0-26-amd64");
        assert_eq!(e.initrds, ["/ucode.img", "/initrd.img-6.1.0-26-amd64"]);
        assert_eq!(e.options, "root=PARTUUID=0b6c rw console=ttyS0");
        assert!(parse_entry("x.conf", "title x\noptions quiet\n").unwrap_err().contains("no kernel"));
        assert!(parse_entry("uki.conf", "efi /EFI/Linux/a.efi\n").unwrap_err().contains("EFI program"));
    }

    #[test]
    fn the_default_entry_is_the_one_loader_conf_names_else_the_newest() {
        let names: Vec<String> =
            ["web-6.1.0-9-amd64.conf", "web-6.1.0-26-amd64.conf", "other.conf", "notes.txt"]
                .map(String::from)
                .into();
        let conf = |d: &str| format!("timeout 0\ndefault {d}\neditor no\n");
        assert_eq!(
            choose_entry(Some(&conf("web-6.1.0-9-amd64.conf")), &names).unwrap(),
            "web-6.1.0-9-amd64.conf"
        );
        assert_eq!(choose_entry(Some(&conf("other")), &names).unwrap(), "other.conf", "without .conf");
        assert_eq!(
            choose_entry(Some(&conf("web-*")), &names).unwrap(),
            "web-6.1.0-26-amd64.conf",
            "newest match"
        );
        assert_eq!(choose_entry(None, &names).unwrap(), "web-6.1.0-26-amd64.conf");
        assert_eq!(choose_entry(Some(&conf("@saved")), &names).unwrap(), "web-6.1.0-26-amd64.conf");
        assert_eq!(choose_entry(Some(&conf("gone.conf")), &names), None);
        assert_eq!(choose_entry(None, &[]), None);
        assert_eq!(natural_cmp("a-10", "a-9"), Ordering::Greater);
        assert_eq!(natural_cmp("a-010", "a-10"), Ordering::Equal);
    }

    #[test]
    fn the_slice_reads_its_range_and_refuses_writes() {
        let dir = std::env::temp_dir().join(format!("kiln-slice-test-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        let f = dir.join("disk");
        fs_err::write(&f, b"0123456789").unwrap();
        let mut s = open_slice(&f, 2, Some(5)).unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        assert_eq!(all, "23456");
        s.seek(SeekFrom::End(-2)).unwrap();
        let mut two = [0u8; 4];
        assert_eq!(s.read(&mut two).unwrap(), 2);
        assert_eq!(&two[..2], b"56");
        assert_eq!(s.write(b"x").unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(fs_err::read(&f).unwrap(), b"0123456789");
        let _ = fs_err::remove_dir_all(&dir);
    }
}
