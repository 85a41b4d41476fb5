//! A build output folder as a bundle: every regular file under it (hidden scratch files excepted), with
//! its sha256 and size, sorted by path. This is what a publish uploads and names.

use std::path::Path;

use crate::model::FileRecord;

/// Every file of the bundle in `dir`. A symbolic link or special file is an error: a signed output has
/// none, and following one could publish what was never signed.
pub fn scan(dir: &Path) -> std::io::Result<Vec<FileRecord>> {
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<FileRecord>) -> std::io::Result<()> {
    for e in fs_err::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let t = e.file_type()?;
        if t.is_dir() {
            walk(&e.path(), &rel, out)?;
        } else if t.is_file() {
            let (digest, size) = kiln_blueprint::manifest::sha256_file(&e.path())?;
            out.push(FileRecord { path: rel, digest, size });
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a regular file or folder (bundles hold only files)", e.path().display()),
            ));
        }
    }
    Ok(())
}
