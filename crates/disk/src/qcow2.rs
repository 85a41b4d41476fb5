//! A streaming qcow2 (version 3) writer and a text dump of qcow2 images.
//!
//! The writer reads a raw image once, front to back, and writes the qcow2 front to back: the header cluster,
//! then the data clusters in guest order, then the L2 tables, the L1 table, the refcount blocks and the
//! refcount table, and finally seeks back once to fill in the header. Clusters are 64 KiB, refcounts 16 bits.
//! All-zero clusters are not stored (left unallocated; without a backing file they read as zeros).
//!
//! Compression (optional) is per cluster, as qemu does it: zlib as raw deflate with a 4 KiB window (qemu
//! inflates with `windowBits = -12`), or zstd (`compression_type` header field = 1 and incompatible feature
//! bit 3). A cluster is stored compressed only when that makes it smaller than a cluster. Compressed clusters
//! are packed byte after byte, and a host cluster holding parts of n compressed clusters has refcount n.
//! Compression runs on all cores (scoped threads over batches of clusters); every cluster is compressed on
//! its own, so the output is byte-identical whatever the number of threads.

use std::{
    fmt::Write as _,
    io::{self, BufWriter, Read, Seek, SeekFrom, Write},
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
};

use sha2::{Digest, Sha256};

use crate::{
    raw::{is_zero, read_full, read_full_at},
    DiskError, Result,
};

/// log2 of the cluster size.
pub const CLUSTER_BITS: u32 = 16;
/// Cluster size in bytes (64 KiB).
pub const CLUSTER_SIZE: u64 = 1 << CLUSTER_BITS;
const CS: usize = CLUSTER_SIZE as usize;
/// Entries per L2 table (and per L1 cluster).
const L2_ENTRIES: u64 = CLUSTER_SIZE / 8;
/// refcount_order 4: 16-bit refcounts.
const REFCOUNT_ORDER: u32 = 4;
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER_SIZE * 8 / (1 << REFCOUNT_ORDER);
const HEADER_LENGTH: u32 = 112;

const OFLAG_COPIED: u64 = 1 << 63;
const OFLAG_COMPRESSED: u64 = 1 << 62;
const OFLAG_ZERO: u64 = 1;
const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Compressed cluster descriptor: host offset in bits 0..CSIZE_SHIFT, extra sectors above.
const CSIZE_SHIFT: u32 = 62 - (CLUSTER_BITS - 8);
const CSIZE_MASK: u64 = (1 << (CLUSTER_BITS - 8)) - 1;
const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;

/// Compression of data clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qcow2Compression {
    None,
    /// Raw deflate, level 0 to 9.
    Zlib {
        level: u32,
    },
    /// zstd, level 1 to 22.
    Zstd {
        level: i32,
    },
}

impl Qcow2Compression {
    /// zlib at kiln's default level, 3: on a Debian-like tree within 4% of the size of level 6 (qemu's) at
    /// under 80% of its CPU time; level 1 is another 40% faster but 25% larger.
    pub const ZLIB: Self = Self::Zlib { level: 3 };
    /// zstd at kiln's default level, 3 (also zstd's and qemu's default).
    pub const ZSTD: Self = Self::Zstd { level: 3 };
}

/// How to write a qcow2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qcow2Options {
    pub compression: Qcow2Compression,
    /// Compression threads; `None` means one per core. Does not change the output.
    pub threads: Option<NonZeroUsize>,
}

impl Default for Qcow2Options {
    fn default() -> Self {
        Self { compression: Qcow2Compression::None, threads: None }
    }
}

/// What [`write_qcow2`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Qcow2Stats {
    pub virtual_size: u64,
    /// Guest clusters left unallocated (all zeros).
    pub zero_clusters: u64,
    /// Guest clusters stored as is.
    pub raw_clusters: u64,
    /// Guest clusters stored compressed.
    pub compressed_clusters: u64,
    /// Length of the qcow2 file.
    pub file_size: u64,
}

/// A cluster's contents after compression.
enum Packed {
    Zero,
    Raw,
    Compressed(Vec<u8>),
}

struct Compressor {
    kind: Qcow2Compression,
    zlib: Option<flate2::Compress>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    buf: Vec<u8>,
}

impl Compressor {
    fn new(kind: Qcow2Compression) -> io::Result<Self> {
        let (zlib, zstd) = match kind {
            Qcow2Compression::None => (None, None),
            Qcow2Compression::Zlib { level } => (
                Some(flate2::Compress::new_with_window_bits(
                    flate2::Compression::new(level.min(9)),
                    false,
                    12,
                )),
                None,
            ),
            Qcow2Compression::Zstd { level } => (None, Some(zstd::bulk::Compressor::new(level)?)),
        };
        Ok(Self { kind, zlib, zstd, buf: Vec::with_capacity(CS + 1024) })
    }

    /// Packs one full cluster.
    fn pack(&mut self, cluster: &[u8]) -> io::Result<Packed> {
        if is_zero(cluster) {
            return Ok(Packed::Zero);
        }
        self.buf.clear();
        let n = match self.kind {
            Qcow2Compression::None => return Ok(Packed::Raw),
            Qcow2Compression::Zlib { .. } => {
                let z = self.zlib.as_mut().ok_or_else(|| io::Error::other("no zlib stream"))?;
                z.reset();
                // Room for the worst case (zlib-rs wants it); results of a cluster or more are stored raw.
                self.buf.reserve(2 * CS);
                let status = z.compress_vec(cluster, &mut self.buf, flate2::FlushCompress::Finish)?;
                if status != flate2::Status::StreamEnd || self.buf.len() >= CS {
                    return Ok(Packed::Raw);
                }
                self.buf.len()
            }
            Qcow2Compression::Zstd { .. } => {
                let z = self.zstd.as_mut().ok_or_else(|| io::Error::other("no zstd context"))?;
                self.buf.reserve(2 * CS);
                match z.compress_to_buffer(cluster, &mut self.buf) {
                    Ok(n) => n,
                    Err(_) => return Ok(Packed::Raw),
                }
            }
        };
        if n >= CS {
            return Ok(Packed::Raw);
        }
        Ok(Packed::Compressed(self.buf[..n].to_vec()))
    }
}

/// Host space allocation and reference counting.
struct Alloc {
    /// Next free byte in the file.
    next: u64,
    /// Refcount of every host cluster allocated so far.
    refcounts: Vec<u16>,
}

impl Alloc {
    fn touch(&mut self, start: u64, len: u64) {
        let first = start / CLUSTER_SIZE;
        let last = (start + len - 1) / CLUSTER_SIZE;
        if self.refcounts.len() <= last as usize {
            self.refcounts.resize(last as usize + 1, 0);
        }
        for c in first..=last {
            self.refcounts[c as usize] += 1;
        }
    }

    /// Moves `next` to a cluster boundary and returns how many padding bytes that skipped.
    fn align(&mut self) -> u64 {
        let aligned = self.next.div_ceil(CLUSTER_SIZE) * CLUSTER_SIZE;
        let pad = aligned - self.next;
        self.next = aligned;
        pad
    }

    /// Allocates `n` whole clusters with refcount 1.
    fn clusters(&mut self, n: u64) -> u64 {
        debug_assert_eq!(self.next % CLUSTER_SIZE, 0);
        let at = self.next;
        if n > 0 {
            self.touch(at, n * CLUSTER_SIZE);
        }
        self.next += n * CLUSTER_SIZE;
        at
    }
}

static ZEROS: [u8; CS] = [0u8; CS];

/// Clusters per batch without compression: 512 KiB, so a batch read into memory is still in the CPU's cache
/// when it is written out (4 MiB batches cost twice the CPU time).
const CLUSTERS_PER_BATCH: usize = 8;
/// Clusters per compression thread per batch when compressing.
const CLUSTERS_PER_THREAD: usize = 64;

/// Writes `raw` (its whole length is the virtual size) as a qcow2 v3 into `out`, which must be empty.
pub fn write_qcow2<R: Read + Seek + Send, W: Write + Seek>(
    raw: &mut R,
    out: W,
    opts: &Qcow2Options,
) -> Result<Qcow2Stats> {
    let size = raw.seek(SeekFrom::End(0))?;
    let whole = std::iter::once(0..size).collect::<Vec<_>>();
    write_qcow2_extents(Source::Stream(raw), size, &whole, out, opts)
}

/// [`write_qcow2`] for a raw image in a file: holes of a sparse file (found with `SEEK_DATA`/`SEEK_HOLE`)
/// are not read at all, as `qemu-img convert` does. The output is the same as [`write_qcow2`]'s.
pub fn write_qcow2_file<W: Write + Seek>(
    raw: &mut std::fs::File,
    out: W,
    opts: &Qcow2Options,
) -> Result<Qcow2Stats> {
    let size = raw.seek(SeekFrom::End(0))?;
    let extents = data_extents(raw, size)?;
    write_qcow2_extents(Source::<std::fs::File>::File(raw), size, &extents, out, opts)
}

/// Where the guest data comes from: a stream (read by one thread, in order) or a file (read with `pread` by
/// several threads at once, as the copy out of the page cache is the cost of an uncompressed conversion).
enum Source<'a, R> {
    Stream(&'a mut R),
    File(&'a std::fs::File),
}

/// The data ranges of a file, per `SEEK_DATA`/`SEEK_HOLE` (the whole file where those are not supported).
pub fn data_extents(file: &std::fs::File, size: u64) -> Result<Vec<std::ops::Range<u64>>> {
    use rustix::fs::{seek, SeekFrom as Whence};
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(file, Whence::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(DiskError::Io(e.into())),
        };
        let end = seek(file, Whence::Hole(start)).map_err(io::Error::from)?.min(size);
        if end <= start {
            break;
        }
        out.push(start..end);
        pos = end;
    }
    Ok(out)
}

/// The writer proper: only the guest ranges in `extents` are read; everything else is zero.
fn write_qcow2_extents<R: Read + Seek + Send, W: Write + Seek>(
    source: Source<'_, R>,
    virtual_size: u64,
    extents: &[std::ops::Range<u64>],
    out: W,
    opts: &Qcow2Options,
) -> Result<Qcow2Stats> {
    let mut out = out;
    let existing = out.seek(SeekFrom::End(0))?;
    if existing != 0 {
        return Err(DiskError::OutputNotEmpty { len: existing });
    }
    let guest_clusters = virtual_size.div_ceil(CLUSTER_SIZE);
    let threads = match opts.compression {
        Qcow2Compression::None => 1,
        _ => opts.threads.or_else(|| std::thread::available_parallelism().ok()).map_or(1, NonZeroUsize::get),
    };

    // Small buffer: runs of raw clusters are larger and go straight through.
    let mut w = BufWriter::with_capacity(256 << 10, out);
    w.seek(SeekFrom::Start(CLUSTER_SIZE))?;
    let mut alloc = Alloc { next: CLUSTER_SIZE, refcounts: vec![1] };
    let mut l2 = vec![0u64; guest_clusters as usize];
    let mut stats = Qcow2Stats { virtual_size, ..Default::default() };

    let mut compressors =
        (0..threads).map(|_| Compressor::new(opts.compression)).collect::<io::Result<Vec<_>>>()?;
    let batch_clusters = match opts.compression {
        Qcow2Compression::None => CLUSTERS_PER_BATCH,
        _ => threads * CLUSTERS_PER_THREAD,
    };
    // (first guest cluster, cluster count) of every batch, in guest order.
    let mut batches = Vec::new();
    for range in cluster_ranges(extents, guest_clusters) {
        let mut guest = range.start;
        while guest < range.end {
            let n = (range.end - guest).min(batch_clusters as u64);
            batches.push((guest, n as usize));
            guest += n;
        }
    }

    // Reader threads fill batches while this thread packs and writes earlier ones, so reading and writing
    // overlap. Reader k of n reads batches k, k + n, ...; buffers go back to their reader for reuse.
    let readers = match source {
        Source::Stream(_) => 1,
        Source::File(_) => 2,
    };
    std::thread::scope(|s| -> Result<()> {
        let mut full_rxs = Vec::new();
        let mut empty_txs = Vec::new();
        let (mut stream, file) = match source {
            Source::Stream(r) => (Some(r), None),
            Source::File(f) => (None, Some(f)),
        };
        for k in 0..readers {
            let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
            let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
            for _ in 0..2 {
                let _ = empty_tx.send(vec![0u8; batch_clusters * CS]);
            }
            full_rxs.push(full_rx);
            empty_txs.push(empty_tx);
            let mine: Vec<(u64, usize)> = batches.iter().copied().skip(k).step_by(readers).collect();
            let mut stream = stream.take();
            s.spawn(move || {
                let mut pos = None;
                for (guest, clusters) in mine {
                    let Ok(mut buf) = empty_rx.recv() else { return };
                    buf.resize(clusters * CS, 0);
                    let offset = guest * CLUSTER_SIZE;
                    let read = match (&mut stream, file) {
                        (Some(r), _) => (|| {
                            if pos != Some(offset) {
                                r.seek(SeekFrom::Start(offset))?;
                            }
                            let n = read_full(*r, &mut buf)?;
                            pos = Some(offset + n as u64);
                            Ok(n)
                        })(),
                        (None, Some(f)) => read_full_at(f, &mut buf, offset),
                        (None, None) => Ok(0),
                    };
                    let msg = read.map(|n| {
                        // Past the end of the input (a last partial cluster) reads as zeros.
                        buf[n..].fill(0);
                        buf
                    });
                    let failed = msg.is_err();
                    if full_tx.send(msg).is_err() || failed {
                        return;
                    }
                }
            });
        }

        for (j, &(guest, _)) in batches.iter().enumerate() {
            let data =
                full_rxs[j % readers].recv().map_err(|_| io::Error::other("a reader thread stopped"))??;
            let packed = pack_batch(&mut compressors, &data)?;
            // Consecutive raw clusters are written with one call, straight from the read buffer.
            let mut run = 0..0;
            for (i, p) in packed.into_iter().enumerate() {
                let g = (guest + i as u64) as usize;
                match p {
                    Packed::Zero => {}
                    Packed::Raw => {
                        if run.end != i || run.is_empty() {
                            w.write_all(&data[run.start * CS..run.end * CS])?;
                            let pad = alloc.align();
                            w.write_all(&ZEROS[..pad as usize])?;
                            run = i..i;
                        }
                        run.end = i + 1;
                        let at = alloc.clusters(1);
                        l2[g] = at | OFLAG_COPIED;
                        stats.raw_clusters += 1;
                    }
                    Packed::Compressed(bytes) => {
                        w.write_all(&data[run.start * CS..run.end * CS])?;
                        run = 0..0;
                        let at = alloc.next;
                        let len = bytes.len() as u64;
                        alloc.touch(at, len);
                        alloc.next += len;
                        w.write_all(&bytes)?;
                        let extra_sectors = ((at + len - 1) >> 9) - (at >> 9);
                        l2[g] = OFLAG_COMPRESSED | (extra_sectors << CSIZE_SHIFT) | at;
                        stats.compressed_clusters += 1;
                    }
                }
            }
            w.write_all(&data[run.start * CS..run.end * CS])?;
            let _ = empty_txs[j % readers].send(data);
        }
        Ok(())
    })?;
    stats.zero_clusters = guest_clusters - stats.raw_clusters - stats.compressed_clusters;
    let pad = alloc.align();
    w.write_all(&ZEROS[..pad as usize])?;

    // L2 tables for the ranges that hold data, then the L1 table.
    let l1_size = guest_clusters.div_ceil(L2_ENTRIES);
    let mut l1 = vec![0u64; l1_size as usize];
    for (i, table) in l2.chunks(L2_ENTRIES as usize).enumerate() {
        if table.iter().all(|&e| e == 0) {
            continue;
        }
        let at = alloc.clusters(1);
        let mut bytes = vec![0u8; CS];
        for (j, e) in table.iter().enumerate() {
            bytes[j * 8..j * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        w.write_all(&bytes)?;
        l1[i] = at | OFLAG_COPIED;
    }
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER_SIZE).max(1);
    let l1_offset = alloc.clusters(l1_clusters);
    let mut bytes = vec![0u8; (l1_clusters * CLUSTER_SIZE) as usize];
    for (j, e) in l1.iter().enumerate() {
        bytes[j * 8..j * 8 + 8].copy_from_slice(&e.to_be_bytes());
    }
    w.write_all(&bytes)?;

    // Refcount blocks and table must count themselves: find the fixed point.
    let before = alloc.next / CLUSTER_SIZE;
    let (mut blocks, mut table) = (0u64, 0u64);
    loop {
        let total = before + blocks + table;
        let nb = total.div_ceil(REFCOUNTS_PER_BLOCK);
        let nt = (nb * 8).div_ceil(CLUSTER_SIZE);
        if (nb, nt) == (blocks, table) {
            break;
        }
        (blocks, table) = (nb, nt);
    }
    let blocks_offset = alloc.clusters(blocks);
    let table_offset = alloc.clusters(table);
    let total_clusters = alloc.next / CLUSTER_SIZE;
    alloc.refcounts.resize(total_clusters as usize, 0);
    let mut block = vec![0u8; CS];
    for b in 0..blocks {
        block.fill(0);
        let first = (b * REFCOUNTS_PER_BLOCK) as usize;
        let last = (first + REFCOUNTS_PER_BLOCK as usize).min(alloc.refcounts.len());
        for (j, rc) in alloc.refcounts[first..last].iter().enumerate() {
            block[j * 2..j * 2 + 2].copy_from_slice(&rc.to_be_bytes());
        }
        w.write_all(&block)?;
    }
    let mut bytes = vec![0u8; (table * CLUSTER_SIZE) as usize];
    for b in 0..blocks {
        let off = blocks_offset + b * CLUSTER_SIZE;
        bytes[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&off.to_be_bytes());
    }
    w.write_all(&bytes)?;

    let header = Header {
        size: virtual_size,
        l1_size: l1_size as u32,
        l1_table_offset: l1_offset,
        refcount_table_offset: table_offset,
        refcount_table_clusters: table as u32,
        incompatible: if matches!(opts.compression, Qcow2Compression::Zstd { .. }) {
            INCOMPAT_COMPRESSION_TYPE
        } else {
            0
        },
        compression_type: u8::from(matches!(opts.compression, Qcow2Compression::Zstd { .. })),
    };
    w.seek(SeekFrom::Start(0))?;
    w.write_all(&header.to_bytes())?;
    let mut out = w.into_inner().map_err(|e| e.into_error())?;
    out.flush()?;
    stats.file_size = alloc.next;
    Ok(stats)
}

/// Byte ranges widened to whole clusters, merged, and cut at the last guest cluster.
fn cluster_ranges(extents: &[std::ops::Range<u64>], guest_clusters: u64) -> Vec<std::ops::Range<u64>> {
    let mut out: Vec<std::ops::Range<u64>> = Vec::new();
    for e in extents.iter().filter(|e| e.end > e.start) {
        let start = e.start / CLUSTER_SIZE;
        let end = e.end.div_ceil(CLUSTER_SIZE).min(guest_clusters);
        if start >= end {
            continue;
        }
        match out.last_mut() {
            Some(last) if start <= last.end => last.end = last.end.max(end),
            _ => out.push(start..end),
        }
    }
    out
}

/// Packs the clusters of `data` on `compressors.len()` threads. Threads take clusters one at a time from a
/// shared counter, so a thread the OS schedules less (on a busy machine) just packs fewer of them; results
/// are put back in cluster order, so the output does not depend on who packed what.
fn pack_batch(compressors: &mut [Compressor], data: &[u8]) -> io::Result<Vec<Packed>> {
    let clusters = data.len() / CS;
    if compressors.len() == 1 || clusters <= 1 {
        let c = &mut compressors[0];
        return data.chunks(CS).map(|cl| c.pack(cl)).collect();
    }
    let next = AtomicUsize::new(0);
    let work = |c: &mut Compressor| -> io::Result<Vec<(usize, Packed)>> {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= clusters {
                return Ok(done);
            }
            done.push((i, c.pack(&data[i * CS..(i + 1) * CS])?));
        }
    };
    let mut results: Vec<(usize, Packed)> = std::thread::scope(|s| {
        let (first, rest) = compressors.split_first_mut().ok_or_else(|| io::Error::other("no compressor"))?;
        let handles: Vec<_> = rest.iter_mut().map(|c| s.spawn(|| work(c))).collect();
        let mut all = work(first)?;
        for h in handles {
            all.extend(h.join().map_err(|_| io::Error::other("compression thread panicked"))??);
        }
        Ok::<_, io::Error>(all)
    })?;
    results.sort_unstable_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, p)| p).collect())
}

/// The fields of a qcow2 v3 header this crate writes and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    size: u64,
    l1_size: u32,
    l1_table_offset: u64,
    refcount_table_offset: u64,
    refcount_table_clusters: u32,
    incompatible: u64,
    compression_type: u8,
}

impl Header {
    fn to_bytes(self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LENGTH as usize + 8];
        b[0..4].copy_from_slice(b"QFI\xfb");
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        // backing_file_offset (8..16) and backing_file_size (16..20) stay 0.
        b[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
        b[24..32].copy_from_slice(&self.size.to_be_bytes());
        // crypt_method (32..36) stays 0.
        b[36..40].copy_from_slice(&self.l1_size.to_be_bytes());
        b[40..48].copy_from_slice(&self.l1_table_offset.to_be_bytes());
        b[48..56].copy_from_slice(&self.refcount_table_offset.to_be_bytes());
        b[56..60].copy_from_slice(&self.refcount_table_clusters.to_be_bytes());
        // nb_snapshots (60..64), snapshots_offset (64..72) stay 0.
        b[72..80].copy_from_slice(&self.incompatible.to_be_bytes());
        // compatible (80..88), autoclear (88..96) features stay 0.
        b[96..100].copy_from_slice(&REFCOUNT_ORDER.to_be_bytes());
        b[100..104].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
        b[104] = self.compression_type;
        // 105..112 padding; then the end-of-extensions marker (type 0, length 0): 8 zero bytes.
        b
    }
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3], b[o + 4], b[o + 5], b[o + 6], b[o + 7]])
}

fn bad(reason: impl Into<String>) -> DiskError {
    DiskError::BadQcow2 { reason: reason.into() }
}

fn read_at<R: Read + Seek>(r: &mut R, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    r.seek(SeekFrom::Start(offset))?;
    r.read_exact(&mut b)?;
    Ok(b)
}

/// A dump of a qcow2 image (as this crate writes them: v3, no snapshots, no backing file): header fields,
/// L1/L2 summary, refcount summary with a check of every refcount against the references found, and the
/// sha256 of the guest data (decompressing compressed clusters).
pub fn dump_qcow2<R: Read + Seek>(img: &mut R) -> Result<String> {
    let h = read_at(img, 0, 112)?;
    if &h[0..4] != b"QFI\xfb" {
        return Err(bad("no QFI magic"));
    }
    let version = be32(&h, 4);
    let cluster_bits = be32(&h, 20);
    if version != 3 || cluster_bits != CLUSTER_BITS {
        return Err(bad(format!(
            "version {version}, cluster_bits {cluster_bits}: only v3 with 64 KiB clusters"
        )));
    }
    let size = be64(&h, 24);
    let l1_size = be32(&h, 36) as u64;
    let l1_offset = be64(&h, 40);
    let rt_offset = be64(&h, 48);
    let rt_clusters = be32(&h, 56) as u64;
    let incompatible = be64(&h, 72);
    let refcount_order = be32(&h, 96);
    let header_length = be32(&h, 100);
    let compression_type = if header_length > 104 { h[104] } else { 0 };
    if refcount_order != REFCOUNT_ORDER {
        return Err(bad(format!("refcount_order {refcount_order}")));
    }
    let file_size = img.seek(SeekFrom::End(0))?;

    let mut out = String::new();
    let _ = writeln!(out, "version: {version}");
    let _ = writeln!(out, "cluster-size: {}", 1u64 << cluster_bits);
    let _ = writeln!(out, "virtual-size: {size}");
    let _ = writeln!(out, "file-size: {file_size}");
    let _ = writeln!(out, "backing-file-offset: {}", be64(&h, 8));
    let _ = writeln!(out, "crypt-method: {}", be32(&h, 32));
    let _ = writeln!(out, "l1-size: {l1_size}");
    let _ = writeln!(out, "l1-table-offset: {l1_offset:#x}");
    let _ = writeln!(out, "refcount-table-offset: {rt_offset:#x}");
    let _ = writeln!(out, "refcount-table-clusters: {rt_clusters}");
    let _ = writeln!(out, "nb-snapshots: {}", be32(&h, 60));
    let _ = writeln!(out, "incompatible-features: {incompatible:#x}");
    let _ = writeln!(out, "compatible-features: {:#x}", be64(&h, 80));
    let _ = writeln!(out, "autoclear-features: {:#x}", be64(&h, 88));
    let _ = writeln!(out, "refcount-order: {refcount_order}");
    let _ = writeln!(out, "header-length: {header_length}");
    let _ = writeln!(
        out,
        "compression-type: {}",
        match compression_type {
            0 => "zlib",
            1 => "zstd",
            _ => "unknown",
        }
    );

    // References every host cluster should have.
    let host_clusters = file_size.div_ceil(CLUSTER_SIZE);
    let mut expected = vec![0u32; host_clusters as usize];
    let mut reference = |start: u64, len: u64| -> Result<()> {
        let last = (start + len - 1) / CLUSTER_SIZE;
        if last >= host_clusters {
            return Err(bad(format!("reference to {start:#x}+{len} past the end of the file")));
        }
        for c in start / CLUSTER_SIZE..=last {
            expected[c as usize] += 1;
        }
        Ok(())
    };
    reference(0, CLUSTER_SIZE)?;
    reference(l1_offset, (l1_size * 8).max(1))?;
    reference(rt_offset, rt_clusters * CLUSTER_SIZE)?;

    let l1 = read_at(img, l1_offset, (l1_size * 8) as usize)?;
    let (mut l2_tables, mut unallocated, mut normal, mut compressed, mut zero_flag) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let guest_clusters = size.div_ceil(CLUSTER_SIZE);
    let mut hasher = Sha256::new();
    let mut cluster = vec![0u8; CS];
    for i in 0..l1_size {
        let e = be64(&l1, (i * 8) as usize);
        let l2_offset = e & L2_OFFSET_MASK;
        let entries = (guest_clusters - i * L2_ENTRIES).min(L2_ENTRIES);
        if l2_offset == 0 {
            unallocated += entries;
            for j in 0..entries {
                hash_guest(&mut hasher, &ZEROS, i * L2_ENTRIES + j, size);
            }
            continue;
        }
        l2_tables += 1;
        reference(l2_offset, CLUSTER_SIZE)?;
        let table = read_at(img, l2_offset, CS)?;
        for j in 0..entries {
            let e = be64(&table, (j * 8) as usize);
            let guest = i * L2_ENTRIES + j;
            if e & OFLAG_COMPRESSED != 0 {
                compressed += 1;
                let sectors = ((e >> CSIZE_SHIFT) & CSIZE_MASK) + 1;
                let offset = e & ((1 << CSIZE_SHIFT) - 1);
                let start = offset & !511;
                reference(start, sectors * 512)?;
                let avail = (sectors * 512 - (offset - start)).min(file_size - offset);
                let data = read_at(img, offset, avail as usize)?;
                decompress(compression_type, &data, &mut cluster)?;
                hash_guest(&mut hasher, &cluster, guest, size);
            } else if e & L2_OFFSET_MASK != 0 {
                normal += 1;
                let offset = e & L2_OFFSET_MASK;
                reference(offset, CLUSTER_SIZE)?;
                let data = read_at(img, offset, CS)?;
                hash_guest(&mut hasher, &data, guest, size);
            } else {
                if e & OFLAG_ZERO != 0 {
                    zero_flag += 1;
                } else {
                    unallocated += 1;
                }
                hash_guest(&mut hasher, &ZEROS, guest, size);
            }
        }
    }

    // Refcounts as stored.
    let rt = read_at(img, rt_offset, (rt_clusters * CLUSTER_SIZE) as usize)?;
    let mut stored = vec![0u32; host_clusters as usize];
    let mut blocks = 0u64;
    for b in 0..rt_clusters * CLUSTER_SIZE / 8 {
        let off = be64(&rt, (b * 8) as usize);
        if off == 0 {
            continue;
        }
        blocks += 1;
        reference(off, CLUSTER_SIZE)?;
        let block = read_at(img, off, CS)?;
        for k in 0..REFCOUNTS_PER_BLOCK {
            let c = b * REFCOUNTS_PER_BLOCK + k;
            let rc = u32::from(u16::from_be_bytes([block[(k * 2) as usize], block[(k * 2 + 1) as usize]]));
            if c < host_clusters {
                stored[c as usize] = rc;
            } else if rc != 0 {
                return Err(bad(format!("refcount {rc} for cluster {c} past the end of the file")));
            }
        }
    }
    let mismatches = stored.iter().zip(&expected).filter(|(s, e)| s != e).count();
    let mut histogram = std::collections::BTreeMap::new();
    for rc in &stored {
        *histogram.entry(*rc).or_insert(0u64) += 1;
    }

    let _ = writeln!(out, "l2-tables: {l2_tables}");
    let _ = writeln!(out, "guest-clusters: {guest_clusters}");
    let _ = writeln!(out, "  unallocated: {unallocated}");
    let _ = writeln!(out, "  zero-flag: {zero_flag}");
    let _ = writeln!(out, "  normal: {normal}");
    let _ = writeln!(out, "  compressed: {compressed}");
    let _ = writeln!(out, "host-clusters: {host_clusters}");
    let _ = writeln!(out, "refcount-blocks: {blocks}");
    let hist: Vec<String> = histogram.iter().map(|(rc, n)| format!("{rc}x{n}")).collect();
    let _ = writeln!(out, "refcounts: {}", hist.join(" "));
    let _ = writeln!(out, "refcount-mismatches: {mismatches}");
    let _ = writeln!(out, "guest-sha256: {}", hex(&hasher.finalize()));
    Ok(out)
}

fn hash_guest(h: &mut Sha256, cluster: &[u8], guest: u64, size: u64) {
    let start = guest * CLUSTER_SIZE;
    let n = (size - start).min(CLUSTER_SIZE) as usize;
    h.update(&cluster[..n]);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decompress(compression_type: u8, data: &[u8], out: &mut [u8]) -> Result<()> {
    match compression_type {
        0 => {
            let mut d = flate2::Decompress::new_with_window_bits(false, 12);
            d.decompress(data, out, flate2::FlushDecompress::Finish)
                .map_err(|e| bad(format!("inflate: {e}")))?;
            if d.total_out() != CLUSTER_SIZE {
                return Err(bad(format!("a compressed cluster inflates to {} bytes", d.total_out())));
            }
        }
        1 => {
            let mut d = zstd::stream::read::Decoder::new(data)?.single_frame();
            d.read_exact(out).map_err(|e| bad(format!("zstd: {e}")))?;
        }
        t => return Err(bad(format!("compression type {t}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn sample(len: usize) -> Vec<u8> {
        // Zero clusters, text-like (compressible) clusters and pseudo-random (incompressible) clusters.
        let mut v = vec![0u8; len];
        let mut x = 0x1234_5678u32;
        for (i, c) in v.chunks_mut(CS).enumerate() {
            match i % 4 {
                1 => c.iter_mut().enumerate().for_each(|(j, b)| *b = b"kiln disk image "[j % 16]),
                2 => c.iter_mut().for_each(|b| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *b = x as u8;
                }),
                3 => c[100] = 1,
                _ => {}
            }
        }
        v
    }

    fn guest_sha(raw: &[u8]) -> String {
        hex(&Sha256::digest(raw))
    }

    fn write(raw: &[u8], compression: Qcow2Compression, threads: usize) -> (Vec<u8>, Qcow2Stats) {
        let mut out = Cursor::new(Vec::new());
        let opts = Qcow2Options { compression, threads: NonZeroUsize::new(threads) };
        let stats = write_qcow2(&mut Cursor::new(raw), &mut out, &opts).unwrap();
        (out.into_inner(), stats)
    }

    #[test]
    fn round_trips_and_keeps_refcounts_consistent() {
        // Not a multiple of the cluster size.
        let raw = sample(300 * CS + 4096);
        for c in [Qcow2Compression::None, Qcow2Compression::ZLIB, Qcow2Compression::ZSTD] {
            let (img, stats) = write(&raw, c, 3);
            assert_eq!(stats.file_size, img.len() as u64);
            let dump = dump_qcow2(&mut Cursor::new(&img)).unwrap();
            assert!(dump.contains("refcount-mismatches: 0\n"), "{c:?}\n{dump}");
            assert!(dump.contains(&format!("guest-sha256: {}\n", guest_sha(&raw))), "{c:?}\n{dump}");
            assert_eq!(stats.zero_clusters, 76);
            if c == Qcow2Compression::None {
                assert_eq!(stats.compressed_clusters, 0);
            } else {
                // Text and nearly-zero clusters compress, random ones do not.
                assert_eq!(stats.compressed_clusters, 150);
                assert_eq!(stats.raw_clusters, 75);
            }
        }
    }

    #[test]
    fn spans_several_l2_tables() {
        let mut raw = vec![0u8; (2 * L2_ENTRIES as usize + 5) * CS];
        for g in [0, 3, L2_ENTRIES as usize * 2 + 4] {
            raw[g * CS + 7] = 0xAA;
        }
        let (img, stats) = write(&raw, Qcow2Compression::None, 1);
        assert_eq!(stats.raw_clusters, 3);
        let dump = dump_qcow2(&mut Cursor::new(&img)).unwrap();
        // The middle L2 range holds only zeros, so it gets no table.
        assert!(dump.contains("l1-size: 3\n") && dump.contains("l2-tables: 2\n"), "{dump}");
        assert!(dump.contains("refcount-mismatches: 0\n"), "{dump}");
        assert!(dump.contains(&format!("guest-sha256: {}\n", guest_sha(&raw))), "{dump}");
    }

    #[test]
    fn output_does_not_depend_on_thread_count() {
        let raw = sample(200 * CS);
        for c in [Qcow2Compression::ZLIB, Qcow2Compression::ZSTD] {
            let one = write(&raw, c, 1).0;
            assert_eq!(one, write(&raw, c, 2).0);
            assert_eq!(one, write(&raw, c, 7).0);
        }
    }

    #[test]
    fn zstd_sets_the_compression_type() {
        let (img, _) = write(&sample(8 * CS), Qcow2Compression::ZSTD, 1);
        let dump = dump_qcow2(&mut Cursor::new(&img)).unwrap();
        assert!(
            dump.contains("incompatible-features: 0x8\n") && dump.contains("compression-type: zstd\n"),
            "{dump}"
        );
    }

    #[test]
    fn empty_and_all_zero_inputs() {
        let (img, stats) = write(&vec![0u8; 3 * CS], Qcow2Compression::None, 1);
        assert_eq!(stats.zero_clusters, 3);
        let dump = dump_qcow2(&mut Cursor::new(&img)).unwrap();
        assert!(dump.contains("l2-tables: 0\n") && dump.contains("refcount-mismatches: 0\n"), "{dump}");
        let (img, _) = write(&[], Qcow2Compression::None, 1);
        assert!(dump_qcow2(&mut Cursor::new(&img)).unwrap().contains("virtual-size: 0\n"));
    }

    #[test]
    fn cluster_ranges_widen_and_merge() {
        let c = CLUSTER_SIZE;
        let r = cluster_ranges(&[0..1, c + 5..2 * c + 1, 2 * c + 3..2 * c + 9, 10 * c..20 * c], 12);
        assert_eq!(r, [0..3, 10..12]);
    }

    #[test]
    fn sparse_files_skip_holes_with_the_same_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw");
        let mut f = std::fs::File::create(&path).unwrap();
        f.set_len(40 * CLUSTER_SIZE + 512).unwrap();
        let data = sample(6 * CS);
        f.seek(SeekFrom::Start(17 * CLUSTER_SIZE + 100)).unwrap();
        f.write_all(&data).unwrap();
        drop(f);
        let raw = std::fs::read(&path).unwrap();
        for c in [Qcow2Compression::None, Qcow2Compression::ZSTD] {
            let opts = Qcow2Options { compression: c, threads: None };
            let mut from_file = Cursor::new(Vec::new());
            let stats =
                write_qcow2_file(&mut std::fs::File::open(&path).unwrap(), &mut from_file, &opts).unwrap();
            assert_eq!(from_file.into_inner(), write(&raw, c, 2).0);
            assert_eq!(stats.zero_clusters + stats.raw_clusters + stats.compressed_clusters, 41);
        }
    }

    #[test]
    fn refuses_a_non_empty_output() {
        let mut out = Cursor::new(vec![1u8]);
        let err =
            write_qcow2(&mut Cursor::new(vec![0u8; 512]), &mut out, &Qcow2Options::default()).unwrap_err();
        assert!(matches!(err, DiskError::OutputNotEmpty { len: 1 }));
    }
}
