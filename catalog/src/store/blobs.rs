//! The embedded blob store: a folder of files named by their digest (`blobs/sha256/HEX`,
//! `blobs/sha512/HEX`), written through `uploads/` (temporary name, hashed while written, fsynced, renamed
//! into place only when the digest matches), so a blob is either whole and correct or absent. Registry
//! upload sessions are files there too (`uploads/session-ID`), appended chunk by chunk and hashed when
//! finished. Unfinished uploads are swept by age.

use std::{
    collections::HashSet,
    io::{Read, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::SystemTime,
};

use super::{parse_digest, Algorithm, BlobStore, ReadSeek, StoreError, StoredBlob};

static UPLOAD_SEQ: AtomicU64 = AtomicU64::new(0);

/// Blobs under `ROOT/blobs/sha256/` and `ROOT/blobs/sha512/`, uploads under `ROOT/uploads/`.
#[derive(Debug, Clone)]
pub struct FsBlobs {
    root: PathBuf,
    /// Upload sessions a request is appending to (one writer per session).
    busy: Arc<Mutex<HashSet<String>>>,
}

/// Prefix of an upload session's file in `uploads/`.
const SESSION: &str = "session-";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

impl FsBlobs {
    /// Open (creating the folders) the blob store in `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for d in [root.join("blobs/sha256"), root.join("blobs/sha512"), root.join("uploads")] {
            fs_err::create_dir_all(&d).map_err(|e| StoreError::Io { path: d.clone(), source: e })?;
        }
        Ok(Self { root: root.to_owned(), busy: Arc::default() })
    }

    fn path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let (alg, hex) = parse_digest(digest)?;
        Ok(self.root.join("blobs").join(alg.name()).join(hex))
    }

    /// An upload session's file; `None` for an id that is not one (only `[0-9a-z-]`).
    fn session_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        if id.is_empty()
            || id.len() > 128
            || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(StoreError::UploadUnknown { id: id.to_owned() });
        }
        Ok(self.root.join("uploads").join(format!("{SESSION}{id}")))
    }

    /// Mark session `id` as being written until the guard drops.
    fn claim(&self, id: &str, size: u64) -> Result<Claim<'_>, StoreError> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !busy.insert(id.to_owned()) {
            return Err(StoreError::UploadBusy { id: id.to_owned(), size });
        }
        Ok(Claim { store: self, id: id.to_owned() })
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

/// An upload session claimed for writing.
struct Claim<'a> {
    store: &'a FsBlobs,
    id: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.store.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Copy `from` into the file `to` hashing on the way with `alg`; (digest, bytes). Runs of zero blocks
/// become holes (a raw disk image is mostly empty), so a blob takes the space its source took.
fn hash_copy(alg: Algorithm, from: &mut dyn Read, to: &mut std::fs::File) -> std::io::Result<(String, u64)> {
    const BLOCK: usize = 4096;
    let mut h = alg.hasher();
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
    Ok((h.finish(), n))
}

/// The digest of a file's content with `alg`.
fn hash_file(alg: Algorithm, f: &mut std::fs::File) -> std::io::Result<String> {
    f.seek(SeekFrom::Start(0))?;
    let mut h = alg.hasher();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(h.finish())
}

impl BlobStore for FsBlobs {
    fn is_local(&self) -> bool {
        true
    }

    fn check(&self) -> Result<(), StoreError> {
        let m = std::fs::metadata(&self.root).map_err(io(&self.root))?;
        if m.is_dir() {
            Ok(())
        } else {
            Err(io(&self.root)(std::io::ErrorKind::NotADirectory.into()))
        }
    }

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
        let (alg, hex) = parse_digest(digest)?;
        let tmp = self.upload_path(hex);
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let written = hash_copy(alg, content, &mut f).and_then(|r| f.sync_all().map(|()| r));
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
        let mut out = Vec::new();
        for alg in Algorithm::ALL {
            let dir = self.root.join("blobs").join(alg.name());
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&dir)(e)),
            };
            for e in entries {
                let e = e.map_err(io(&dir))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let digest = format!("{}:{name}", alg.name());
                if parse_digest(&digest).is_err() {
                    continue;
                }
                let m = e.metadata().map_err(io(&e.path()))?;
                out.push(StoredBlob {
                    digest,
                    size: m.len(),
                    modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
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

    fn upload_create(&self, id: &str) -> Result<(), StoreError> {
        let path = self.session_path(id)?;
        std::fs::File::options().write(true).create_new(true).open(&path).map_err(io(&path))?;
        Ok(())
    }

    fn upload_size(&self, id: &str) -> Result<Option<u64>, StoreError> {
        let Ok(path) = self.session_path(id) else { return Ok(None) };
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn upload_append(
        &self,
        id: &str,
        start: Option<u64>,
        length: Option<u64>,
        content: &mut dyn Read,
    ) -> Result<u64, StoreError> {
        let path = self.session_path(id)?;
        let unknown = || StoreError::UploadUnknown { id: id.to_owned() };
        let mut f = match std::fs::File::options().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(io(&path)(e)),
        };
        let seen = f.metadata().map_err(io(&path))?.len();
        let _claim = self.claim(id, seen)?;
        // Read again under the claim: another request may have appended since.
        let size = f.metadata().map_err(io(&path))?.len();
        if let Some(start) = start.filter(|s| *s != size) {
            return Err(StoreError::UploadRange { id: id.to_owned(), size, start });
        }
        f.seek(SeekFrom::End(0)).map_err(io(&path))?;
        let copied = std::io::copy(content, &mut f);
        let found = f.metadata().map_err(io(&path))?.len() - size;
        let bad_length = length.filter(|l| *l != found);
        if copied.is_err() || bad_length.is_some() {
            // Nothing of a broken chunk stays: the session is as it was before it.
            f.set_len(size).map_err(io(&path))?;
            copied.map_err(io(&path))?;
            if let Some(expected) = bad_length {
                return Err(StoreError::UploadLength { id: id.to_owned(), expected, found });
            }
        }
        let _ = f.set_modified(SystemTime::now());
        Ok(size + found)
    }

    fn upload_finish(&self, id: &str, digest: &str) -> Result<u64, StoreError> {
        let (alg, _) = parse_digest(digest)?;
        let path = self.session_path(id)?;
        let mut f = match std::fs::File::options().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::UploadUnknown { id: id.to_owned() })
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let _claim = self.claim(id, f.metadata().map_err(io(&path))?.len())?;
        let size = f.metadata().map_err(io(&path))?.len();
        let found = hash_file(alg, &mut f).and_then(|d| f.sync_all().map(|()| d));
        drop(f);
        let found = match found {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(io(&path)(e));
            }
        };
        if found == digest {
            if let Some(have) = self.refresh(digest)? {
                let _ = std::fs::remove_file(&path);
                return Ok(have);
            }
        }
        self.commit(digest, &path, found, size, None)
    }

    fn upload_cancel(&self, id: &str) -> Result<bool, StoreError> {
        let Ok(path) = self.session_path(id) else { return Ok(false) };
        let _claim = self.claim(id, 0)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(data: &[u8]) -> String {
        Algorithm::Sha256.digest(data)
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
    fn sha512_blobs_live_beside_sha256_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsBlobs::open(dir.path()).unwrap();
        let d512 = Algorithm::Sha512.digest(b"hello");
        assert_eq!(d512.len(), "sha512:".len() + 128);
        // The sha256 of the content is not its sha512 name.
        assert!(matches!(
            s.put(&d512.replace('a', "b"), None, &mut &b"hello"[..]),
            Err(StoreError::BlobDigest { .. } | StoreError::BadDigest(_))
        ));
        assert_eq!(s.put(&d512, Some(5), &mut &b"hello"[..]).unwrap(), 5);
        assert!(dir.path().join("blobs/sha512").join(&d512[7..]).is_file());
        s.put(&digest(b"hello"), None, &mut &b"hello"[..]).unwrap();
        let listed: Vec<String> = s.list().unwrap().into_iter().map(|b| b.digest).collect();
        assert_eq!(listed, vec![digest(b"hello"), d512.clone()]);
        assert!(matches!(s.stat("sha512:abc"), Err(StoreError::BadDigest(_))));
        assert!(matches!(s.stat("md5:00"), Err(StoreError::BadDigest(_))));
    }

    #[test]
    fn upload_sessions_take_chunks_in_order_and_finish_only_on_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsBlobs::open(dir.path()).unwrap();
        s.upload_create("abc").unwrap();
        assert_eq!(s.upload_size("abc").unwrap(), Some(0));
        assert_eq!(s.upload_append("abc", Some(0), Some(5), &mut &b"hello"[..]).unwrap(), 5);
        // Out of order: nothing appended.
        assert!(matches!(
            s.upload_append("abc", Some(3), None, &mut &b"xx"[..]),
            Err(StoreError::UploadRange { size: 5, start: 3, .. })
        ));
        // Shorter than announced: nothing of it kept.
        assert!(matches!(
            s.upload_append("abc", Some(5), Some(9), &mut &b" wor"[..]),
            Err(StoreError::UploadLength { expected: 9, found: 4, .. })
        ));
        assert_eq!(s.upload_size("abc").unwrap(), Some(5));
        assert_eq!(s.upload_append("abc", None, None, &mut &b" world"[..]).unwrap(), 11);
        let d = digest(b"hello world");
        assert_eq!(s.upload_finish("abc", &d).unwrap(), 11);
        assert_eq!(s.upload_size("abc").unwrap(), None);
        let mut back = String::new();
        s.open(&d).unwrap().read_to_string(&mut back).unwrap();
        assert_eq!(back, "hello world");
        // A session finished under another digest stores nothing.
        s.upload_create("def").unwrap();
        s.upload_append("def", None, None, &mut &b"bytes"[..]).unwrap();
        assert!(matches!(s.upload_finish("def", &digest(b"other")), Err(StoreError::BlobDigest { .. })));
        assert_eq!(s.stat(&digest(b"other")).unwrap(), None);
        assert!(matches!(
            s.upload_append("nope", None, None, &mut &b""[..]),
            Err(StoreError::UploadUnknown { .. })
        ));
        assert!(matches!(s.upload_size("../x"), Ok(None)));
        s.upload_create("ghi").unwrap();
        assert!(s.upload_cancel("ghi").unwrap());
        assert!(!s.upload_cancel("ghi").unwrap());
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
