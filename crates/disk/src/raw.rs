//! Raw GPT disk assembly: the GPT, the ESP (FAT32 built in memory) and the root file system image are
//! written at their offsets into one `Write + Seek` output. All-zero ranges are skipped by seeking, so a file
//! output stays sparse; the output must therefore start empty.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::{
    esp::{write_esp, EspFile, EspOptions},
    gpt::build_gpt,
    layout::DiskLayout,
    sparse::SparseBuf,
    DiskError, Result,
};

/// Granularity of zero detection when copying the root image.
const BLOCK: usize = 4096;
const CHUNK: usize = 1 << 20;

/// What [`write_raw_disk`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawStats {
    /// Disk size in bytes.
    pub size: u64,
    /// Bytes actually written (the rest is holes).
    pub written: u64,
    /// Bytes of the root file system image copied.
    pub root_bytes: u64,
}

/// Writes a whole raw disk: the GPT of `layout`, a FAT32 ESP holding `esp_files`, and the root file system
/// image read from `root_ext4` (at most the root partition's size) into the root partition. Extra partitions
/// are left zeroed. `out` must be empty (a new file or an empty buffer).
pub fn write_raw_disk<W: Write + Seek, R: Read>(
    out: W,
    layout: &DiskLayout,
    esp_files: &[EspFile],
    esp_opts: &EspOptions,
    root_ext4: &mut R,
) -> Result<RawStats> {
    write_disk(out, layout, esp_files, esp_opts, RootSource::Stream(root_ext4))
}

/// [`write_raw_disk`] with the root file system image in a file: its holes (found with `SEEK_DATA`) are not
/// read at all. Same output.
pub fn write_raw_disk_file<W: Write + Seek>(
    out: W,
    layout: &DiskLayout,
    esp_files: &[EspFile],
    esp_opts: &EspOptions,
    root_ext4: &std::fs::File,
) -> Result<RawStats> {
    write_disk(out, layout, esp_files, esp_opts, RootSource::<std::fs::File>::File(root_ext4))
}

enum RootSource<'a, R> {
    Stream(&'a mut R),
    File(&'a std::fs::File),
}

fn write_disk<W: Write + Seek, R: Read>(
    mut out: W,
    layout: &DiskLayout,
    esp_files: &[EspFile],
    esp_opts: &EspOptions,
    root_ext4: RootSource<'_, R>,
) -> Result<RawStats> {
    let len = out.seek(SeekFrom::End(0))?;
    if len != 0 {
        return Err(DiskError::OutputNotEmpty { len });
    }
    let gpt = build_gpt(layout)?;
    let esp_part = layout.esp();
    let mut esp = SparseBuf::new(esp_part.size);
    write_esp(&mut esp, esp_part.size, esp_opts, esp_files)?;

    let mut written = 0u64;
    let mut put = |out: &mut W, offset: u64, data: &[u8]| -> io::Result<()> {
        out.seek(SeekFrom::Start(offset))?;
        out.write_all(data)?;
        written += data.len() as u64;
        Ok(())
    };
    let first = esp_part.start;
    for (off, page) in gpt.pages().filter(|(off, _)| *off < first) {
        put(&mut out, off, page)?;
    }
    for (off, page) in esp.pages() {
        put(&mut out, esp_part.start + off, page)?;
    }

    let root = layout.root();
    // Writes the non-zero runs of `chunk`, which is at `offset` in the root image.
    let mut copy = |out: &mut W, offset: u64, chunk: &[u8]| -> io::Result<()> {
        let n = chunk.len();
        let mut i = 0;
        while i < n {
            let end = (i + BLOCK).min(n);
            if is_zero(&chunk[i..end]) {
                i = end;
                continue;
            }
            // Extend the run over following non-zero blocks.
            let mut j = end;
            while j < n && !is_zero(&chunk[j..(j + BLOCK).min(n)]) {
                j = (j + BLOCK).min(n);
            }
            put(out, root.start + offset + i as u64, &chunk[i..j])?;
            i = j;
        }
        Ok(())
    };
    let too_large = |image: u64| DiskError::RootTooLarge { image, partition: root.size };
    let mut buf = vec![0u8; CHUNK];
    let root_bytes = match root_ext4 {
        RootSource::Stream(r) => {
            let mut done = 0u64;
            loop {
                let n = read_full(r, &mut buf)?;
                if n == 0 {
                    break done;
                }
                if done + n as u64 > root.size {
                    return Err(too_large(done + n as u64));
                }
                copy(&mut out, done, &buf[..n])?;
                done += n as u64;
            }
        }
        RootSource::File(f) => {
            let len = f.metadata()?.len();
            if len > root.size {
                return Err(too_large(len));
            }
            for extent in crate::qcow2::data_extents(f, len)? {
                let mut off = extent.start;
                while off < extent.end {
                    let want = ((extent.end - off) as usize).min(CHUNK);
                    let n = read_full_at(f, &mut buf[..want], off)?;
                    if n == 0 {
                        break;
                    }
                    copy(&mut out, off, &buf[..n])?;
                    off += n as u64;
                }
            }
            len
        }
    };

    let last_end = layout.partitions.iter().map(|p| p.start + p.size).max().unwrap_or(first);
    for (off, page) in gpt.pages().filter(|(off, _)| *off >= last_end) {
        put(&mut out, off, page)?;
    }
    // The backup GPT header is the disk's last sector, so the output now has the disk's full length.
    out.flush()?;
    Ok(RawStats { size: layout.size, written, root_bytes })
}

/// Reads until `buf` is full or the input ends.
pub(crate) fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads from `file` at `offset` until `buf` is full or the file ends.
pub(crate) fn read_full_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether every byte is zero (compared against a zero page, which is a `memcmp`, fast even unoptimized).
pub(crate) fn is_zero(b: &[u8]) -> bool {
    static ZERO_PAGE: [u8; 64 * 1024] = [0; 64 * 1024];
    b.chunks(ZERO_PAGE.len()).all(|c| c == &ZERO_PAGE[..c.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        layout::{DiskSpec, MIB},
        ImageIdentity,
    };
    use std::io::Cursor;

    fn layout(size: u64) -> DiskLayout {
        let spec = DiskSpec { size: Some(size), esp_size: 33 * MIB, extra: vec![] };
        DiskLayout::plan(&spec, 0, &ImageIdentity::new("t", "1", "d")).unwrap()
    }

    fn esp() -> (Vec<EspFile>, EspOptions) {
        (
            vec![EspFile { path: "loader/loader.conf".into(), data: b"timeout 0\n".to_vec() }],
            EspOptions { label: "ESP".into(), volume_id: 7, epoch: 0 },
        )
    }

    #[test]
    fn root_lands_in_its_partition_the_same_from_a_stream_or_a_sparse_file() {
        let l = layout(40 * MIB);
        let (files, opts) = esp();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root");
        let mut f = std::fs::File::create(&path).unwrap();
        f.set_len(3 * MIB).unwrap();
        f.seek(SeekFrom::Start(MIB + 5)).unwrap();
        f.write_all(b"root data").unwrap();
        drop(f);

        let mut from_stream = Cursor::new(Vec::new());
        let stats =
            write_raw_disk(&mut from_stream, &l, &files, &opts, &mut std::fs::File::open(&path).unwrap())
                .unwrap();
        assert_eq!(stats.root_bytes, 3 * MIB);
        let mut from_file = Cursor::new(Vec::new());
        write_raw_disk_file(&mut from_file, &l, &files, &opts, &std::fs::File::open(&path).unwrap()).unwrap();
        let disk = from_stream.into_inner();
        assert_eq!(disk, from_file.into_inner());
        assert_eq!(disk.len() as u64, 40 * MIB);
        let at = (l.root().start + MIB + 5) as usize;
        assert_eq!(&disk[at..at + 9], b"root data");
        // The backup GPT header ends the disk.
        assert_eq!(&disk[disk.len() - 512..disk.len() - 504], b"EFI PART");
    }

    #[test]
    fn refuses_a_root_larger_than_its_partition_and_a_non_empty_output() {
        let l = layout(40 * MIB);
        let (files, opts) = esp();
        let big = vec![1u8; (l.root().size + 1) as usize];
        let err = write_raw_disk(Cursor::new(Vec::new()), &l, &files, &opts, &mut &big[..]).unwrap_err();
        assert!(matches!(err, DiskError::RootTooLarge { .. }), "{err}");
        let err = write_raw_disk(Cursor::new(vec![0u8]), &l, &files, &opts, &mut &[][..]).unwrap_err();
        assert!(matches!(err, DiskError::OutputNotEmpty { len: 1 }), "{err}");
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0; 4096]));
        assert!(is_zero(&[]));
        let mut b = vec![0u8; 4097];
        b[4096] = 1;
        assert!(!is_zero(&b));
        b[4096] = 0;
        b[17] = 1;
        assert!(!is_zero(&b));
    }
}
