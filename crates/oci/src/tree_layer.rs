//! Writing a whole tree on disk as one compressed layer while the tree is still being walked.
//!
//! A walker thread visits the tree in layer order ([`crate::scan::walk_tree`]) and hands entries over in
//! batches; the calling thread turns them into tar entries ([`crate::layer::Planner`],
//! [`crate::layer::TarWriter`]) and feeds the compressor, whose workers run alongside. The bytes are those of
//! [`crate::layer::LayerPlan::full`] over [`crate::scan::scan_tree`]: only the scheduling differs.

use std::{
    io::{self, Write},
    path::Path,
    sync::mpsc,
    thread,
};

use crate::{
    compress::{compress_stream, CompressOptions, LayerDigests},
    error::Error,
    layer::{DirSource, Planner, TarWriter},
    scan::{walk_tree, ScanOptions},
    tree::{Entry, TreePath},
};

/// Entries handed from the walker to the writer at a time.
const BATCH: usize = 256;

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
    let (tx, rx) = mpsc::sync_channel::<Vec<(TreePath, Entry)>>(64);
    thread::scope(|s| {
        let walker = s.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let stopped = || Error::Write(io::Error::other("the layer writer stopped"));
            let skipped = walk_tree(root, &ScanOptions::default(), |path, entry| {
                batch.push((path, entry));
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
                for (path, entry) in batch {
                    tar.append(&planner.entry(path, entry), &source)?;
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
