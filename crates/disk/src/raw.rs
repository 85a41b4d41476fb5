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
    mut out: W,
    layout: &DiskLayout,
    esp_files: &[EspFile],
    esp_opts: &EspOptions,
    root_ext4: &mut R,
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
    let mut buf = vec![0u8; CHUNK];
    let mut root_bytes = 0u64;
    loop {
        let n = read_full(root_ext4, &mut buf)?;
        if n == 0 {
            break;
        }
        if root_bytes + n as u64 > root.size {
            return Err(DiskError::RootTooLarge { image: root_bytes + n as u64, partition: root.size });
        }
        let chunk = &buf[..n];
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
            put(&mut out, root.start + root_bytes + i as u64, &chunk[i..j])?;
            i = j;
        }
        root_bytes += n as u64;
    }

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

/// Whether every byte is zero (compared against a zero page, which is a `memcmp`, fast even unoptimized).
pub(crate) fn is_zero(b: &[u8]) -> bool {
    static ZERO_PAGE: [u8; 64 * 1024] = [0; 64 * 1024];
    b.chunks(ZERO_PAGE.len()).all(|c| c == &ZERO_PAGE[..c.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

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
