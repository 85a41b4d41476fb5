//! Network boot of a published image: its kernel, initrd and command line, from the default Boot Loader
//! Specification entry in the ESP of the version's raw disk, and the iPXE script that boots them.
//!
//! The files are extracted on demand, the first time a version is booted, into a cache beside the blobs:
//! `ROOT/boot-cache/HEX/` where HEX is the raw disk's sha256 (`vmlinuz`, `initrd.img`, and `entry.json`
//! saying what they are: the entry, its options, each file's sha256 and size). The raw disk never changes
//! under its digest, so a cached folder is never stale; it is written in a temporary folder and renamed into
//! place, so readers see all of it or none. On demand rather than at publish: publishing stays as it was
//! (no extra blobs recorded with a version, no model change), versions published before this existed boot
//! too, and only images that are network-booted spend the space. The ESP is read in place, through the
//! reader the runtime checks use (`kiln_testsuites::runtime::boot_entry`).
//!
//! The catalog's gc sweeps the cache ([`sweep`]): it keeps the folders of versions that can still be booted
//! and removes the others (end of life, revoked, or of no version at all); a retired version booted with
//! the override is extracted again.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::SystemTime,
};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::{
    model::{ArtifactKind, Day, FileRecord, LifecycleState, VersionRecord},
    store::digest_hex,
    Catalog, CatalogError,
};

/// The cache folder under the catalog's root.
pub const CACHE_DIR: &str = "boot-cache";
const ENTRY_FILE: &str = "entry.json";
pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRD_FILE: &str = "initrd.img";

/// A file extracted from the ESP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extracted {
    /// `sha256:…`
    pub digest: String,
    pub size: u64,
}

/// What a version boots with over the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    /// The entry's file name in `loader/entries/`.
    pub entry: String,
    /// Its kernel and initrd paths in the ESP.
    pub linux: String,
    pub initrds: Vec<String>,
    /// The kernel command line (`options`).
    pub options: String,
    pub kernel: Extracted,
    /// Several initrds are concatenated into one, as the kernel accepts them.
    pub initrd: Option<Extracted>,
}

/// Why a version cannot be booted over the network.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{id} has no raw disk image to boot from")]
    NoRawDisk { id: String },
    #[error("{id} cannot be booted over the network: {source}")]
    Entry {
        id: String,
        #[source]
        source: kiln_testsuites::runtime::boot_entry::BootEntryError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BootError + '_ {
    move |source| BootError::Io { path: path.to_owned(), source }
}

/// One extraction at a time: two first boots of a version do the work once.
static EXTRACTING: Mutex<()> = Mutex::new(());
static SEQ: AtomicU64 = AtomicU64::new(0);

/// The boot files of `v` (extracting them on first use) and the folder that holds them.
pub fn boot_files(catalog: &Catalog, v: &VersionRecord) -> Result<(BootInfo, PathBuf), BootError> {
    let raw = raw_disk(v).ok_or_else(|| BootError::NoRawDisk { id: v.id() })?;
    let hex = digest_hex(&raw.digest).map_err(CatalogError::from)?;
    let cache = catalog.root().join(CACHE_DIR);
    let dir = cache.join(hex);
    if let Some(info) = read_info(&dir)? {
        return Ok((info, dir));
    }
    let _one = EXTRACTING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(info) = read_info(&dir)? {
        return Ok((info, dir));
    }
    let tmp = cache.join(format!(".{hex}.{}.{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let result = extract(catalog, v, &raw.digest, &tmp).and_then(|()| {
        fs_err::rename(&tmp, &dir).map_err(io(&dir))?;
        read_info(&dir)?.ok_or_else(|| BootError::Io {
            path: dir.join(ENTRY_FILE),
            source: std::io::ErrorKind::NotFound.into(),
        })
    });
    let _ = std::fs::remove_dir_all(&tmp);
    Ok((result?, dir))
}

/// The raw disk of `v`, as the bundle file that holds it.
fn raw_disk(v: &VersionRecord) -> Option<&FileRecord> {
    v.artifacts.iter().find(|a| a.kind == ArtifactKind::Raw).and_then(|a| v.file(&a.path))
}

/// Remove the cached boot files of versions that cannot be booted without the override any more (end of
/// life or revoked on `today`) or of no version at all, and extraction folders left before `cutoff` by a
/// crash. Returns how many folders were removed.
pub fn sweep(catalog: &Catalog, today: Day, cutoff: SystemTime) -> Result<usize, CatalogError> {
    let cache = catalog.root().join(CACHE_DIR);
    let entries = match std::fs::read_dir(&cache) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(CatalogError::Store(crate::store::StoreError::Io { path: cache, source })),
    };
    let mut live = BTreeSet::new();
    for summary in catalog.meta().families()? {
        for v in &catalog.family(&summary.name)?.versions {
            let retired =
                matches!(v.lifecycle.state_on(today), LifecycleState::EndOfLife | LifecycleState::Revoked);
            if let (false, Some(raw)) = (retired, raw_disk(v)) {
                live.insert(digest_hex(&raw.digest)?.to_owned());
            }
        }
    }
    // No extraction renames a folder into place while the sweep looks.
    let _one = EXTRACTING.lock().unwrap_or_else(|e| e.into_inner());
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = if name.starts_with('.') {
            e.metadata().and_then(|m| m.modified()).map(|t| t < cutoff).unwrap_or(true)
        } else {
            !live.contains(&name)
        };
        if stale && std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

fn read_info(dir: &Path) -> Result<Option<BootInfo>, BootError> {
    let path = dir.join(ENTRY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| BootError::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Extract the default entry's kernel and initrd of the raw disk blob `digest` into `tmp`.
fn extract(catalog: &Catalog, v: &VersionRecord, digest: &str, tmp: &Path) -> Result<(), BootError> {
    use kiln_testsuites::{runtime::boot_entry::read_default_entry, vm::DiskFormat};
    fs_err::create_dir_all(tmp).map_err(io(tmp))?;
    let disk = match catalog.blobs().local_path(digest).filter(|p| p.is_file()) {
        Some(p) => p,
        None => {
            // A store that is no local folder: a copy to read the ESP from.
            let copy = tmp.join("disk.raw");
            let mut from = catalog.blobs().open(digest).map_err(CatalogError::from)?;
            let mut to = fs_err::File::create(&copy).map_err(io(&copy))?;
            std::io::copy(&mut from, &mut to).map_err(io(&copy))?;
            copy
        }
    };
    let (entry, kernel, initrd) = read_default_entry(&disk, DiskFormat::Raw, tmp)
        .map_err(|source| BootError::Entry { id: v.id(), source })?;
    let _ = std::fs::remove_file(tmp.join("disk.raw"));
    let place = |from: &Path, name: &str| -> Result<Extracted, BootError> {
        let to = tmp.join(name);
        fs_err::rename(from, &to).map_err(io(&to))?;
        let mut h = sha2::Sha256::new();
        let mut f = fs_err::File::open(&to).map_err(io(&to))?;
        let size = std::io::copy(&mut f, &mut h).map_err(io(&to))?;
        Ok(Extracted { digest: format!("sha256:{}", hex::encode(h.finalize())), size })
    };
    let info = BootInfo {
        entry: entry.name.clone(),
        linux: entry.linux.clone(),
        initrds: entry.initrds.clone(),
        options: entry.options.clone(),
        kernel: place(&kernel, KERNEL_FILE)?,
        initrd: initrd.map(|p| place(&p, INITRD_FILE)).transpose()?,
    };
    let path = tmp.join(ENTRY_FILE);
    let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
    fs_err::write(&path, json).map_err(io(&path))?;
    Ok(())
}

/// The iPXE script booting `info` of `family@version`: the kernel (with the entry's command line) and
/// initrd fetched from `base` (`http://HOST`), each URL ending in `suffix` (a query, or nothing). The
/// kernel's command line names the initrd (`initrd=initrd.img`), which a kernel started as an EFI program
/// by iPXE needs to find it.
pub fn script(base: &str, family: &str, version: &semver::Version, info: &BootInfo, suffix: &str) -> String {
    let url = |name: &str| format!("{base}/boot/{family}/{version}/{name}{suffix}");
    let mut s = format!("#!ipxe\n# {family} {version}: {} from its ESP\n", info.entry);
    let options = info.options.replace(['\n', '\r'], " ");
    let mut args = Vec::new();
    if info.initrd.is_some() {
        args.push(format!("initrd={INITRD_FILE}"));
    }
    if !options.trim().is_empty() {
        args.push(options.trim().to_owned());
    }
    s.push_str(&format!("kernel {} {}\n", url(KERNEL_FILE), args.join(" ")).replace(" \n", "\n"));
    if info.initrd.is_some() {
        s.push_str(&format!("initrd {}\n", url(INITRD_FILE)));
    }
    s.push_str("boot\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(initrd: bool) -> BootInfo {
        let f = Extracted { digest: format!("sha256:{}", "0".repeat(64)), size: 1 };
        BootInfo {
            entry: "debian-minimal-6.1.0-26-amd64.conf".into(),
            linux: "/vmlinuz-6.1.0-26-amd64".into(),
            initrds: vec!["/initrd.img-6.1.0-26-amd64".into()],
            options: "root=PARTUUID=0b6c console=ttyS0 rw".into(),
            kernel: f.clone(),
            initrd: initrd.then_some(f),
        }
    }

    #[test]
    fn the_script_boots_the_kernel_and_initrd_with_the_entrys_command_line() {
        let v: semver::Version = "1.2.0".parse().unwrap();
        let s = script("http://10.0.2.2:8080", "debian-minimal", &v, &info(true), "");
        assert_eq!(
            s,
            "#!ipxe\n# debian-minimal 1.2.0: debian-minimal-6.1.0-26-amd64.conf from its ESP\n\
             kernel http://10.0.2.2:8080/boot/debian-minimal/1.2.0/vmlinuz initrd=initrd.img root=PARTUUID=0b6c console=ttyS0 rw\n\
             initrd http://10.0.2.2:8080/boot/debian-minimal/1.2.0/initrd.img\n\
             boot\n"
        );
        let s = script("http://h", "a", &v, &info(false), "?allow-retired=1");
        assert!(
            s.contains(
                "kernel http://h/boot/a/1.2.0/vmlinuz?allow-retired=1 root=PARTUUID=0b6c console=ttyS0 rw\n"
            ),
            "{s}"
        );
        assert!(!s.contains("initrd"), "{s}");
    }
}
