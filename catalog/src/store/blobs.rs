//! The embedded blob store: a folder of files named by their sha256 (`blobs/sha256/HEX`), written through
//! `uploads/` (temporary name, hashed while written, fsynced, renamed into place only when the digest
//! matches), so a blob is either whole and correct or absent. Unfinished uploads are swept by age.

use std::{
    io::{Read, Write as _},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::SystemTime,
};

use sha2::Digest as _;

use super::{digest_hex, BlobStore, ReadSeek, StoreError, StoredBlob};

static UPLOAD_SEQ: AtomicU64 = AtomicU64::new(0);

/// Blobs under `ROOT/blobs/sha256/`, uploads under `ROOT/uploads/`.
#[derive(Debug, Clone)]
pub struct FsBlobs {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

impl FsBlobs {
    /// Open (creating the folders) the blob store in `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for d in [root.join("blobs/sha256"), root.join("uploads")] {
            fs_err::create_dir_all(&d).map_err(|e| StoreError::Io { path: d.clone(), source: e })?;
        }
        Ok(Self { root: root.to_owned() })
    }

    fn path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    fn upload_path(&self, hex: &str) -> PathBuf {
        let n = UPLOAD_SEQ.fetch_add(1, Ordering::Relaxed);
        self.root.join("uploads").join(format!("{hex}.{}.{n}", std::process::id()))
    }

    /// Move a finished upload into place (after checking it), or drop it when the blob is there already.
    fn commit(
        &self,
        digest: &str,
        tmp: &Path,
        found: String,
        size: u64,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        let cleanup = |e: StoreError| {
            let _ = std::fs::remove_file(tmp);
            e
        };
        if found != digest {
            return Err(cleanup(StoreError::BlobDigest { expected: digest.to_owned(), found }));
        }
        if let Some(expected) = expected.filter(|e| *e != size) {
            return Err(cleanup(StoreError::BlobSize { digest: digest.to_owned(), expected, found: size }));
        }
        let dest = self.path(digest)?;
        std::fs::rename(tmp, &dest).map_err(io(&dest)).map_err(cleanup)?;
        sync_dir(dest.parent().unwrap_or(&self.root))?;
        Ok(size)
    }

    fn refresh(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path(digest)?;
        match std::fs::File::options().append(true).open(&path) {
            Ok(f) => {
                let _ = f.set_modified(SystemTime::now());
                Ok(Some(f.metadata().map_err(io(&path))?.len()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Copy `from` into the file `to` hashing on the way; (digest, bytes). Runs of zero blocks become holes
/// (a raw disk image is mostly empty), so a blob takes the space its source took.
fn hash_copy(from: &mut dyn Read, to: &mut std::fs::File) -> std::io::Result<(String, u64)> {
    use std::io::{Seek, SeekFrom};
    const BLOCK: usize = 4096;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let mut k = 0;
        while k < buf.len() {
            match from.read(&mut buf[k..]) {
                Ok(0) => break,
                Ok(r) => k += r,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        for block in buf[..k].chunks(BLOCK) {
            if block.iter().all(|b| *b == 0) {
                to.seek(SeekFrom::Current(block.len() as i64))?;
            } else {
                to.write_all(block)?;
            }
        }
        n += k as u64;
    }
    to.set_len(n)?;
    Ok((format!("sha256:{}", hex::encode(h.finalize())), n))
}

impl BlobStore for FsBlobs {
    fn stat(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path(digest)?;
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn touch(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        self.refresh(digest)
    }

    fn put(&self, digest: &str, size: Option<u64>, content: &mut dyn Read) -> Result<u64, StoreError> {
        let hex = digest_hex(digest)?.to_owned();
        let tmp = self.upload_path(&hex);
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let written = hash_copy(content, &mut f).and_then(|r| f.sync_all().map(|()| r));
        drop(f);
        let (found, n) = match written {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io(&tmp)(e));
            }
        };
        if found == digest {
            if let Some(have) = self.refresh(digest)? {
                let _ = std::fs::remove_file(&tmp);
                return Ok(have);
            }
        }
        self.commit(digest, &tmp, found, n, size)
    }

    fn put_file(&self, digest: &str, path: &Path) -> Result<u64, StoreError> {
        if let Some(have) = self.refresh(digest)? {
            return Ok(have);
        }
        let mut src = std::fs::File::open(path).map_err(io(path))?;
        let size = src.metadata().map_err(io(path))?.len();
        self.put(digest, Some(size), &mut src)
    }

    fn open(&self, digest: &str) -> Result<Box<dyn ReadSeek>, StoreError> {
        let path = self.path(digest)?;
        match std::fs::File::open(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::BlobMissing { digest: digest.to_owned() })
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn local_path(&self, digest: &str) -> Option<PathBuf> {
        self.path(digest).ok()
    }

    fn list(&self) -> Result<Vec<StoredBlob>, StoreError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let digest = format!("sha256:{name}");
            if digest_hex(&digest).is_err() {
                continue;
            }
            let m = e.metadata().map_err(io(&e.path()))?;
            out.push(StoredBlob {
                digest,
                size: m.len(),
                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    fn delete(&self, digest: &str) -> Result<(), StoreError> {
        let path = self.path(digest)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn sweep_uploads(&self, older_than: SystemTime) -> Result<usize, StoreError> {
        let dir = self.root.join("uploads");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            let old = e.metadata().and_then(|m| m.modified()).map(|t| t < older_than).unwrap_or(true);
            if old && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
    }

    #[test]
    fn a_blob_is_stored_only_when_its_digest_and_size_match() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsBlobs::open(dir.path()).unwrap();
        let d = digest(b"hello");
        assert!(matches!(s.put(&d, None, &mut &b"hellO"[..]), Err(StoreError::BlobDigest { .. })));
        assert!(matches!(s.put(&d, Some(4), &mut &b"hello"[..]), Err(StoreError::BlobSize { .. })));
        assert_eq!(s.stat(&d).unwrap(), None);
        assert_eq!(s.put(&d, Some(5), &mut &b"hello"[..]).unwrap(), 5);
        assert_eq!(s.stat(&d).unwrap(), Some(5));
        let mut back = String::new();
        s.open(&d).unwrap().read_to_string(&mut back).unwrap();
        assert_eq!(back, "hello");
        // Failed uploads leave nothing behind.
        assert_eq!(std::fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
        assert_eq!(s.list().unwrap().len(), 1);
        // Zero runs become holes, and read back as zeros.
        let mut sparse = vec![0u8; 3 << 20];
        sparse[5000] = 7;
        let sd = digest(&sparse);
        s.put(&sd, None, &mut &sparse[..]).unwrap();
        let mut back = Vec::new();
        s.open(&sd).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, sparse);
        assert!(matches!(s.open(&digest(b"other")), Err(StoreError::BlobMissing { .. })));
        assert!(matches!(s.stat("sha256:../../etc"), Err(StoreError::BadDigest(_))));
    }

    #[test]
    fn stale_uploads_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsBlobs::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("uploads/abandoned.1.0"), b"x").unwrap();
        assert_eq!(s.sweep_uploads(SystemTime::UNIX_EPOCH).unwrap(), 0);
        assert_eq!(s.sweep_uploads(SystemTime::now() + std::time::Duration::from_secs(1)).unwrap(), 1);
    }
}
