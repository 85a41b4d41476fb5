//! An in-memory sparse device: a `Read + Write + Seek` of a fixed apparent length whose memory use is only the
//! pages written with non-zero bytes. The GPT and FAT libraries write into it; the disk writer then copies out
//! the written pages and skips the rest.

use std::{
    collections::BTreeMap,
    io::{self, Read, Seek, SeekFrom, Write},
};

const PAGE: u64 = 64 * 1024;

/// See the module docs. Reads of never-written bytes give zeros.
#[derive(Debug, Clone, Default)]
pub struct SparseBuf {
    len: u64,
    pos: u64,
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl SparseBuf {
    /// An all-zero device of `len` bytes.
    pub fn new(len: u64) -> Self {
        Self { len, pos: 0, pages: BTreeMap::new() }
    }

    /// Apparent length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the apparent length is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The written pages in offset order, as `(offset, bytes)`; everything else is zero. The last page is cut
    /// at the apparent length.
    pub fn pages(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.pages.iter().map(|(&i, p)| {
            let off = i * PAGE;
            let n = (self.len - off).min(PAGE) as usize;
            (off, &p[..n])
        })
    }

    /// The bytes of `range` (zeros where never written).
    pub fn read_range(&self, start: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut done = 0usize;
        while done < len {
            let off = start + done as u64;
            let in_page = (off % PAGE) as usize;
            let n = (len - done).min(PAGE as usize - in_page);
            if let Some(p) = self.pages.get(&(off / PAGE)) {
                out[done..done + n].copy_from_slice(&p[in_page..in_page + n]);
            }
            done += n;
        }
        out
    }
}

impl Read for SparseBuf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let in_page = (self.pos % PAGE) as usize;
        let n = buf.len().min(PAGE as usize - in_page).min((self.len - self.pos) as usize);
        match self.pages.get(&(self.pos / PAGE)) {
            Some(p) => buf[..n].copy_from_slice(&p[in_page..in_page + n]),
            None => buf[..n].fill(0),
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for SparseBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let in_page = (self.pos % PAGE) as usize;
        let n = buf.len().min(PAGE as usize - in_page);
        let data = &buf[..n];
        let index = self.pos / PAGE;
        if let Some(p) = self.pages.get_mut(&index) {
            p[in_page..in_page + n].copy_from_slice(data);
        } else if data.iter().any(|&b| b != 0) {
            let mut p = vec![0u8; PAGE as usize].into_boxed_slice();
            p[in_page..in_page + n].copy_from_slice(data);
            self.pages.insert(index, p);
        }
        self.pos += n as u64;
        self.len = self.len.max(self.pos);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SparseBuf {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_writes_and_zeros_elsewhere() {
        let mut d = SparseBuf::new(1 << 20);
        d.seek(SeekFrom::Start(PAGE - 2)).unwrap();
        d.write_all(b"abcd").unwrap();
        d.seek(SeekFrom::Start(10)).unwrap();
        d.write_all(&[0; 100]).unwrap();
        assert_eq!(d.pages().count(), 2);
        assert_eq!(d.read_range(PAGE - 3, 6), b"\0abcd\0");
        let mut all = Vec::new();
        d.seek(SeekFrom::Start(0)).unwrap();
        d.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 1 << 20);
        assert_eq!(&all[PAGE as usize - 2..PAGE as usize + 2], b"abcd");
        assert_eq!(d.seek(SeekFrom::End(0)).unwrap(), 1 << 20);
    }
}
