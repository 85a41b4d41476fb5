//! Deterministic parallel compression of layer streams, with the uncompressed digest (diff_id) and the
//! compressed digest and size recorded in the same pass.
//!
//! * zstd: libzstd's multithreaded mode. With one worker or more its output depends only on the level and
//!   the job parameters, not on the number of workers (tested with 1 and 4), so kiln always uses at least
//!   one worker (zero workers would switch to the single-threaded code path and another frame layout).
//! * gzip: done as pigz does. The stream is cut into fixed-size chunks; each chunk is raw-deflated on its
//!   own, primed with the last 32 KiB of the previous chunk as dictionary, and ended with a sync flush (the
//!   last one with a final block). The pieces concatenate into one deflate stream inside one gzip member
//!   with a fixed header (no name, mtime 0) and the CRC-32/size trailer. The bytes depend on the chunk size
//!   and level only, never on the worker count. Workers run in `std::thread::scope`.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    sync::{mpsc, Mutex, PoisonError},
    thread,
};

use sha2::Digest as _;

use crate::tree::Sha256;

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI layer media type.
    pub fn media_type(self) -> oci_spec::image::MediaType {
        use oci_spec::image::MediaType;
        match self {
            Self::None => MediaType::ImageLayer,
            Self::Gzip => MediaType::ImageLayerGzip,
            Self::Zstd => MediaType::ImageLayerZstd,
        }
    }

    /// Default level: gzip 6, zstd 3 (the command-line tools' defaults).
    pub fn default_level(self) -> i32 {
        match self {
            Self::None => 0,
            Self::Gzip => 6,
            Self::Zstd => 3,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            _ => Err(format!("unknown compression `{s}` (expected none, gzip or zstd)")),
        }
    }
}

/// How to compress a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressOptions {
    pub compression: Compression,
    /// `None` for [`Compression::default_level`].
    pub level: Option<i32>,
    /// Compression workers; the output does not depend on it. 0 means one per available core.
    pub threads: usize,
}

impl CompressOptions {
    pub fn new(compression: Compression) -> Self {
        Self { compression, level: None, threads: 0 }
    }

    pub fn level(&self) -> i32 {
        self.level.unwrap_or(self.compression.default_level())
    }

    pub fn workers(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            thread::available_parallelism().map_or(1, usize::from)
        }
    }
}

/// Digests of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDigests {
    /// SHA-256 of the uncompressed tar stream (the config's `rootfs.diff_ids` entry).
    pub diff_id: Sha256,
    /// SHA-256 of the blob as stored.
    pub digest: Sha256,
    /// Size of the blob as stored.
    pub size: u64,
    /// Size of the uncompressed tar stream.
    pub uncompressed_size: u64,
}

/// A writer that hashes and counts what goes through it.
#[derive(Debug)]
pub struct HashWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, hasher: sha2::Sha256::new(), count: 0 }
    }

    pub fn finish(self) -> (W, Sha256, u64) {
        (self.inner, Sha256(self.hasher.finalize().into()), self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Runs `produce`, which writes an uncompressed stream, compresses that stream into `out`, and returns
/// `out`, `produce`'s value and the digests of both streams.
pub fn compress_stream<W, T, E, F>(
    out: W,
    opts: &CompressOptions,
    produce: F,
) -> Result<(W, T, LayerDigests), E>
where
    W: Write,
    E: From<io::Error>,
    F: FnOnce(&mut dyn Write) -> Result<T, E>,
{
    let compressed = HashWriter::new(out);
    let workers = opts.workers();
    let level = opts.level();
    let (compressed, value, diff_id, uncompressed_size) = match opts.compression {
        Compression::None => hashed(compressed, produce)?,
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(compressed, level)?;
            enc.multithread(u32::try_from(workers).unwrap_or(u32::MAX))?;
            enc.include_checksum(true)?;
            let (enc, value, d, n) = hashed(enc, produce)?;
            (enc.finish()?, value, d, n)
        }
        Compression::Gzip => {
            let level = u32::try_from(level.clamp(0, 9)).unwrap_or(6);
            let (compressed, (value, d, n)) = gzip_parallel(compressed, level, workers, GZIP_CHUNK, |w| {
                let (_, value, d, n) = hashed(w, produce)?;
                Ok::<_, E>((value, d, n))
            })?;
            (compressed, value, d, n)
        }
    };
    let (mut out, digest, size) = compressed.finish();
    out.flush()?;
    Ok((out, value, LayerDigests { diff_id, digest, size, uncompressed_size }))
}

/// Runs `produce` on a buffered, hashing writer over `inner`: the compressors get large writes whatever
/// the producer's write sizes.
fn hashed<W, T, E, F>(inner: W, produce: F) -> Result<(W, T, Sha256, u64), E>
where
    W: Write,
    E: From<io::Error>,
    F: FnOnce(&mut dyn Write) -> Result<T, E>,
{
    let mut w = io::BufWriter::with_capacity(1 << 20, HashWriter::new(inner));
    let value = produce(&mut w)?;
    let (inner, digest, n) = w.into_inner().map_err(io::IntoInnerError::into_error)?.finish();
    Ok((inner, value, digest, n))
}

/// Uncompressed bytes per gzip chunk.
pub const GZIP_CHUNK: usize = 1 << 20;
/// Deflate window: the dictionary carried from one chunk to the next.
const WINDOW: usize = 32 * 1024;

/// Raw-deflates one chunk primed with `dict`; `last` ends the deflate stream, otherwise the chunk ends with
/// a sync flush so the next chunk's output can follow it.
fn deflate_chunk(
    c: &mut flate2::Compress,
    dict: &[u8],
    data: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    use flate2::{FlushCompress, Status};
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    out.clear();
    out.reserve(data.len() + data.len() / 8 + 1024);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    let start = c.total_in();
    loop {
        let consumed = usize::try_from(c.total_in() - start).unwrap_or(usize::MAX);
        let status = c.compress_vec(&data[consumed..], out, flush).map_err(io::Error::other)?;
        let consumed = usize::try_from(c.total_in() - start).unwrap_or(usize::MAX);
        let room = out.capacity() - out.len();
        let done = match status {
            Status::StreamEnd => true,
            _ => !last && consumed == data.len() && room > 0,
        };
        if done {
            return Ok(());
        }
        out.reserve(64 * 1024);
    }
}

/// The fixed gzip member header: deflate, no flags, mtime 0, no extra flags, OS unix.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

struct Job {
    seq: u64,
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

struct Done {
    seq: u64,
    out: io::Result<Vec<u8>>,
    data: Vec<u8>,
}

/// The write side of the parallel gzip compressor: cuts the stream into chunks and hands them to workers.
struct ParGz<'a, W: Write> {
    out: W,
    chunk_size: usize,
    buf: Vec<u8>,
    dict: Vec<u8>,
    seq: u64,
    next_out: u64,
    in_flight: usize,
    max_in_flight: usize,
    jobs: Option<mpsc::Sender<Job>>,
    done: &'a mpsc::Receiver<Done>,
    pending: BTreeMap<u64, Vec<u8>>,
    spare: Vec<Vec<u8>>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> ParGz<'_, W> {
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let fresh = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(self.chunk_size));
        let data = std::mem::replace(&mut self.buf, fresh);
        let dict = std::mem::take(&mut self.dict);
        self.dict = data[data.len().saturating_sub(WINDOW)..].to_vec();
        let job = Job { seq: self.seq, dict, data, last };
        self.seq += 1;
        self.jobs
            .as_ref()
            .expect("jobs are only closed by finish")
            .send(job)
            .map_err(|_| io::Error::other("gzip worker stopped"))?;
        self.in_flight += 1;
        while self.in_flight >= self.max_in_flight {
            self.receive()?;
        }
        Ok(())
    }

    /// Waits for one finished chunk and writes out everything that is now in order.
    fn receive(&mut self) -> io::Result<()> {
        let done = self.done.recv().map_err(|_| io::Error::other("gzip worker stopped"))?;
        self.in_flight -= 1;
        let mut data = done.data;
        data.clear();
        self.spare.push(data);
        self.pending.insert(done.seq, done.out?);
        while let Some(out) = self.pending.remove(&self.next_out) {
            self.out.write_all(&out)?;
            self.next_out += 1;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        self.jobs = None;
        while self.in_flight > 0 {
            self.receive()?;
        }
        self.out.write_all(&self.crc.clone().finalize().to_le_bytes())?;
        // ISIZE is the length modulo 2^32.
        self.out.write_all(&(self.len as u32).to_le_bytes())?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParGz<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.chunk_size - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        self.len += n as u64;
        if self.buf.len() == self.chunk_size {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Gzip-compresses what `produce` writes into `out` with `workers` threads (at least one), in chunks of
/// `chunk_size` bytes (the output depends on `chunk_size` and `level`, not on `workers`).
pub fn gzip_parallel<W, T, E, F>(
    mut out: W,
    level: u32,
    workers: usize,
    chunk_size: usize,
    produce: F,
) -> Result<(W, T), E>
where
    W: Write,
    E: From<io::Error>,
    F: FnOnce(&mut dyn Write) -> Result<T, E>,
{
    assert!(chunk_size >= WINDOW, "gzip chunks must hold a whole window");
    let workers = workers.max(1);
    out.write_all(&GZIP_HEADER)?;
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    thread::scope(|s| {
        for _ in 0..workers {
            let job_rx = &job_rx;
            let done_tx = done_tx.clone();
            s.spawn(move || {
                loop {
                    let job = job_rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok(job) = job else { break };
                    // A fresh compressor per chunk: a reset one keeps state that depends on the chunks this
                    // worker happened to compress before, and so on thread timing.
                    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
                    let mut out = Vec::new();
                    let res = deflate_chunk(&mut c, &job.dict, &job.data, job.last, &mut out);
                    let done = Done { seq: job.seq, out: res.map(|()| out), data: job.data };
                    if done_tx.send(done).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut gz = ParGz {
            out,
            chunk_size,
            buf: Vec::with_capacity(chunk_size),
            dict: Vec::new(),
            seq: 0,
            next_out: 0,
            in_flight: 0,
            max_in_flight: 2 * workers + 1,
            jobs: Some(job_tx),
            done: &done_rx,
            pending: BTreeMap::new(),
            spare: Vec::new(),
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        let value = produce(&mut gz)?;
        let out = gz.finish()?;
        Ok((out, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Pseudo-random but compressible test data (an LCG over a small alphabet, with repeats).
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let word = b"kiln image layer tar zstd gzip deflate chunk ";
            let start = (x >> 33) as usize % word.len();
            v.extend_from_slice(&word[start..]);
            v.push((x >> 56) as u8);
        }
        v.truncate(len);
        v
    }

    fn compress(c: Compression, threads: usize, input: &[u8]) -> (Vec<u8>, LayerDigests) {
        let opts = CompressOptions { compression: c, level: None, threads };
        let (out, (), d) = compress_stream(Vec::new(), &opts, |w| {
            // Odd write sizes: chunking must not depend on how the producer writes.
            for piece in input.chunks(7919) {
                w.write_all(piece)?;
            }
            Ok::<_, io::Error>(())
        })
        .unwrap();
        (out, d)
    }

    #[test]
    fn gzip_is_independent_of_worker_count_and_standard() {
        let input = data(5 * GZIP_CHUNK + 12345, 1);
        let (one, d1) = compress(Compression::Gzip, 1, &input);
        let (four, d4) = compress(Compression::Gzip, 4, &input);
        assert_eq!(one, four);
        assert_eq!(d1, d4);
        assert_eq!(d1.diff_id, Sha256::of(&input));
        assert_eq!(d1.digest, Sha256::of(&one));
        assert_eq!(d1.size, one.len() as u64);
        assert_eq!(d1.uncompressed_size, input.len() as u64);
        assert!(one.len() < input.len() / 2, "compressed {} of {}", one.len(), input.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, input);
    }

    #[test]
    fn gzip_edge_sizes_decode() {
        for len in [0, 1, WINDOW, GZIP_CHUNK, 2 * GZIP_CHUNK, GZIP_CHUNK + 1] {
            let input = data(len, len as u64);
            let (gz, _) = compress(Compression::Gzip, 3, &input);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
            assert_eq!(back, input, "length {len}");
        }
    }

    #[test]
    fn gzip_accepted_by_gzip_tool() {
        let input = data(3 * GZIP_CHUNK + 7, 9);
        let (gz, _) = compress(Compression::Gzip, 2, &input);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer.gz");
        std::fs::write(&path, &gz).unwrap();
        let test =
            std::process::Command::new("gzip").arg("-t").arg(&path).status().expect("gzip is installed");
        assert!(test.success());
        let cat = std::process::Command::new("zcat").arg(&path).output().unwrap();
        assert!(cat.status.success());
        assert_eq!(cat.stdout, input);
    }

    #[test]
    fn zstd_is_independent_of_worker_count() {
        // Large enough for several zstd jobs.
        let input = data(40 << 20, 3);
        let (one, d1) = compress(Compression::Zstd, 1, &input);
        let (four, d4) = compress(Compression::Zstd, 4, &input);
        assert_eq!(one.len(), four.len());
        assert!(one == four, "zstd output differs between 1 and 4 workers");
        assert_eq!(d1, d4);
        assert_eq!(d1.diff_id, Sha256::of(&input));
        assert_eq!(zstd::stream::decode_all(&one[..]).unwrap(), input);
    }

    #[test]
    fn none_passes_through() {
        let input = data(1000, 5);
        let (out, d) = compress(Compression::None, 0, &input);
        assert_eq!(out, input);
        assert_eq!(d.diff_id, d.digest);
        assert_eq!(d.size, 1000);
    }

    #[test]
    fn producer_error_stops_workers() {
        let opts = CompressOptions { compression: Compression::Gzip, level: None, threads: 2 };
        let res: Result<(Vec<u8>, (), _), io::Error> = compress_stream(Vec::new(), &opts, |w| {
            w.write_all(&data(3 * GZIP_CHUNK, 1))?;
            Err(io::Error::other("tree vanished"))
        });
        assert_eq!(res.unwrap_err().to_string(), "tree vanished");
    }

    /// Chunks of very different compressibility, so a compressor that carried state from one chunk to the
    /// next (on whichever worker took it) would show in the output.
    fn mixed(len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        let mut x: u64 = 7;
        let mut i = 0usize;
        while v.len() < len {
            let run = 5_000 + (i * 7_919) % 200_000;
            for _ in 0..run {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let b = match i % 3 {
                    0 => (x >> 56) as u8,
                    1 => b"abcabcabd"[(x >> 60) as usize % 9],
                    _ => 0,
                };
                v.push(b);
            }
            i += 1;
        }
        v.truncate(len);
        v
    }

    #[test]
    fn gzip_output_does_not_depend_on_which_worker_compressed_a_chunk() {
        let input = mixed(24 * GZIP_CHUNK / 4);
        let run = |workers: usize| {
            let (out, ()) =
                gzip_parallel(Vec::new(), 6, workers, GZIP_CHUNK / 4, |w| w.write_all(&input)).unwrap();
            out
        };
        let one = run(1);
        for _ in 0..4 {
            assert!(run(3) == one, "3 workers gave other bytes than 1");
        }
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..]).read_to_end(&mut back).unwrap();
        assert!(back == input);
    }
}
