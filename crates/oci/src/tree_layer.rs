//! Writing a whole tree on disk as one compressed layer while the tree is still being walked.
//!
//! A walker thread visits the tree in layer order ([`crate::scan::walk_tree`]) and hands entries over in
//! batches; the calling thread turns them into tar entries ([`crate::layer::Planner`],
//! [`crate::layer::TarWriter`]) and feeds the compressor, whose workers run alongside. The bytes are those of
//! [`crate::layer::LayerPlan::full`] over [`crate::scan::scan_tree`]: only the scheduling differs.
//!
//! The walker also opens the regular files it hands over and asks the kernel to read them ahead
//! (`POSIX_FADV_WILLNEED`), so a tree that is not in the page cache is read from disk while earlier files
//! are compressed, instead of one blocking read at a time. At most `BATCH * (QUEUE + 2)` files are open.

use std::{
    io::{self, Write},
    path::Path,
    sync::mpsc,
    thread,
};

use crate::{
    compress::{compress_stream, CompressOptions, LayerDigests},
    error::Error,
    layer::{ContentSource, DirSource, Planner, TarWriter},
    scan::{walk_tree, ScanOptions},
    tree::{Entry, TreePath},
};

/// Entries handed from the walker to the writer at a time.
const BATCH: usize = 64;
/// Batches waiting for the writer.
const QUEUE: usize = 8;
/// Bytes of each file the walker asks the kernel to read ahead.
const READ_AHEAD: u64 = 8 << 20;

/// An entry with its content already opened, when it is a non-empty regular file that could be opened.
type Item = (TreePath, Entry, Option<std::fs::File>);

/// Opens a regular file for the writer and starts reading it into the page cache.
fn open_ahead(entry: &Entry, abs: &Path) -> Option<std::fs::File> {
    if entry.size() == 0 || !matches!(entry.kind, crate::tree::EntryKind::File { .. }) {
        return None;
    }
    // Failures here are not errors: the writer opens the file again and reports what went wrong.
    let file = std::fs::File::open(abs).ok()?;
    // The head of large files only: the kernel's own readahead follows the sequential read.
    let ahead = std::num::NonZeroU64::new(entry.size().min(READ_AHEAD));
    let _ = rustix::fs::fadvise(&file, 0, ahead, rustix::fs::Advice::WillNeed);
    Some(file)
}

/// Content from files the walker opened, else from the tree.
struct PreOpened<'a> {
    file: std::cell::Cell<Option<std::fs::File>>,
    tree: &'a DirSource,
}

impl ContentSource for PreOpened<'_> {
    fn open(&self, path: &TreePath) -> io::Result<Box<dyn io::Read + '_>> {
        match self.file.take() {
            Some(f) => Ok(Box::new(f)),
            None => self.tree.open(path),
        }
    }
}

/// What [`write_tree_layer`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeLayer {
    pub digests: LayerDigests,
    /// Entries in the layer.
    pub entries: usize,
    /// Sockets of the tree, which a layer cannot hold.
    pub skipped_sockets: Vec<TreePath>,
}

/// Writes the tree at `root` as one layer (mtimes clamped to `epoch`) into `out`, compressed per `opts`.
pub fn write_tree_layer<W: Write>(
    root: &Path,
    epoch: u64,
    opts: &CompressOptions,
    out: W,
) -> Result<(W, TreeLayer), Error> {
    let (tx, rx) = mpsc::sync_channel::<Vec<Item>>(QUEUE);
    thread::scope(|s| {
        let walker = s.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let stopped = || Error::Write(io::Error::other("the layer writer stopped"));
            let skipped = walk_tree(root, &ScanOptions::default(), |path, entry, abs| {
                let file = open_ahead(&entry, abs);
                batch.push((path, entry, file));
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    tx.send(full).map_err(|_| stopped())?;
                }
                Ok(())
            })?;
            if !batch.is_empty() {
                tx.send(batch).map_err(|_| stopped())?;
            }
            Ok::<_, Error>(skipped)
        });
        let source = DirSource::new(root);
        let written = compress_stream(out, opts, |w| {
            // Moved in, so it is dropped when writing stops: a walker still sending then stops too.
            let rx = rx;
            let mut tar = TarWriter::new(w);
            let mut planner = Planner::new(epoch);
            let mut entries = 0;
            for batch in rx.iter() {
                for (path, entry, file) in batch {
                    let content = PreOpened { file: std::cell::Cell::new(file), tree: &source };
                    tar.append(&planner.entry(path, entry), &content)?;
                    entries += 1;
                }
            }
            tar.finish()?;
            Ok::<_, Error>(entries)
        });
        let walked = walker.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let (out, entries, digests) = written?;
        let skipped_sockets = walked?;
        Ok((out, TreeLayer { digests, entries, skipped_sockets }))
    })
}
