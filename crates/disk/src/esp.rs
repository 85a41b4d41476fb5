//! The EFI system partition: a FAT32 file system written with the `fatfs` crate (no mkfs.vfat, no mount),
//! with a fixed volume id and label and every timestamp set to the build's `SOURCE_DATE_EPOCH`, and a text
//! dump of a FAT volume (tree with sizes and times).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read, Seek, SeekFrom, Write},
    sync::{Mutex, OnceLock},
};

use fatfs::{Date, DateTime, Dir, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider};

use crate::{layout::MIB, DiskError, Result};

/// FAT32 needs at least 65525 clusters; at 512-byte clusters that, with the FATs, fits in 33 MiB.
pub const MIN_ESP_SIZE: u64 = 33 * MIB;

/// One file to put into the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspFile {
    /// Path in the ESP, `/`-separated, relative (e.g. `EFI/BOOT/BOOTX64.EFI`).
    pub path: String,
    pub data: Vec<u8>,
}

/// How to format the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspOptions {
    /// Volume label, 1 to 11 ASCII characters (stored upper-case).
    pub label: String,
    /// FAT volume id (serial number), e.g. `ImageIdentity::u32("esp-volume-id")`.
    pub volume_id: u32,
    /// Seconds since the Unix epoch (`SOURCE_DATE_EPOCH`) for every timestamp, as UTC.
    pub epoch: u64,
}

/// A `fatfs` time provider that always answers one fixed time.
#[derive(Debug)]
struct FixedTime(DateTime);

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// `fatfs` wants a `&'static` time provider: keep one per epoch used by this process.
fn time_provider(epoch: u64) -> &'static FixedTime {
    static PROVIDERS: OnceLock<Mutex<BTreeMap<u64, &'static FixedTime>>> = OnceLock::new();
    let mut map = PROVIDERS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    map.entry(epoch).or_insert_with(|| Box::leak(Box::new(FixedTime(fat_date_time(epoch)))))
}

/// The FAT date-time of a Unix time (UTC), clamped to FAT's range 1980-01-01 to 2107-12-31.
pub fn fat_date_time(epoch: u64) -> DateTime {
    const MIN: u64 = 315_532_800; // 1980-01-01T00:00:00Z
    const MAX: u64 = 4_354_819_199; // 2107-12-31T23:59:59Z
    let t = epoch.clamp(MIN, MAX) as i64;
    // In range by the clamp above.
    let t = time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    DateTime {
        date: Date { year: t.year() as u16, month: u8::from(t.month()).into(), day: t.day().into() },
        time: Time { hour: t.hour().into(), min: t.minute().into(), sec: t.second().into(), millis: 0 },
    }
}

/// The largest cluster size (512 to 4096 bytes) that still gives FAT32 its minimum cluster count.
fn cluster_size_for(size: u64) -> Option<u32> {
    [4096u32, 2048, 1024, 512].into_iter().find(|&c| {
        let c = u64::from(c);
        let clusters = size / c;
        // Reserved sectors (32) and two FATs of 4 bytes per cluster, rounded generously.
        let overhead = 32 * 512 + 2 * (clusters * 4).div_ceil(512) * 512 + c;
        size.saturating_sub(overhead) / c >= 65_525 + 16
    })
}

fn fat_err(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> DiskError {
    let action = action.into();
    move |source| DiskError::Fat { action, source }
}

fn label_bytes(label: &str) -> Result<[u8; 11]> {
    if label.is_empty() || label.len() > 11 || !label.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(DiskError::BadFatLabel { label: label.to_owned() });
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.to_ascii_uppercase().as_bytes());
    Ok(out)
}

fn check_path(path: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return Err(DiskError::BadEspPath { path: path.to_owned() });
    }
    Ok(parts)
}

/// Formats `dev` (the ESP region, `size` bytes, positioned anywhere) as FAT32 and writes `files` into it,
/// directories created as needed. Files are written in path order, so the result does not depend on the
/// order of `files`.
pub fn write_esp<D: Read + Write + Seek>(
    mut dev: D,
    size: u64,
    opts: &EspOptions,
    files: &[EspFile],
) -> Result<()> {
    let cluster = cluster_size_for(size).ok_or(DiskError::EspTooSmall { size })?;
    let label = label_bytes(&opts.label)?;
    let mut sorted: Vec<&EspFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let paths = sorted.iter().map(|f| check_path(&f.path)).collect::<Result<Vec<_>>>()?;

    dev.seek(SeekFrom::Start(0))?;
    let total_sectors = u32::try_from(size / 512).map_err(|_| DiskError::EspTooSmall { size })?;
    let format = FormatVolumeOptions::new()
        .fat_type(FatType::Fat32)
        .bytes_per_cluster(cluster)
        .total_sectors(total_sectors)
        .volume_id(opts.volume_id)
        .volume_label(label);
    fatfs::format_volume(&mut dev, format).map_err(fat_err("formatting the ESP"))?;
    dev.seek(SeekFrom::Start(0))?;
    let fs_opts = FsOptions::new().update_accessed_date(false).time_provider(time_provider(opts.epoch));
    let fs = FileSystem::new(&mut dev, fs_opts).map_err(fat_err("opening the new ESP"))?;

    let stats = fs.stats().map_err(fat_err("reading ESP statistics"))?;
    let csize = u64::from(stats.cluster_size());
    let needed: u64 = sorted.iter().map(|f| (f.data.len() as u64).div_ceil(csize) * csize).sum();
    let available = u64::from(stats.free_clusters()) * csize;
    // Directories take clusters too: keep one cluster per file in reserve.
    if needed + sorted.len() as u64 * csize > available {
        return Err(DiskError::EspFull { needed, available });
    }

    {
        let root = fs.root_dir();
        for (file, parts) in sorted.iter().zip(&paths) {
            let (name, dirs) =
                parts.split_last().ok_or_else(|| DiskError::BadEspPath { path: file.path.clone() })?;
            let mut dir = root.clone();
            for d in dirs {
                dir = dir
                    .create_dir(d)
                    .map_err(fat_err(format!("creating directory {d} for {}", file.path)))?;
            }
            let mut f = dir.create_file(name).map_err(fat_err(format!("creating {}", file.path)))?;
            f.truncate().map_err(fat_err(format!("truncating {}", file.path)))?;
            f.write_all(&file.data).map_err(fat_err(format!("writing {}", file.path)))?;
            f.flush().map_err(fat_err(format!("writing {}", file.path)))?;
        }
    }
    fs.unmount().map_err(fat_err("closing the ESP"))?;
    repair_dot_entries(&mut dev)?;
    dev.flush()?;
    Ok(())
}

/// FAT32 geometry, read from the boot sector.
struct Geometry {
    fat_start: u64,
    data_start: u64,
    cluster_bytes: u64,
    root_cluster: u32,
}

impl Geometry {
    fn read<D: Read + Seek>(dev: &mut D) -> std::io::Result<Self> {
        let mut bs = [0u8; 512];
        dev.seek(SeekFrom::Start(0))?;
        dev.read_exact(&mut bs)?;
        let bytes_per_sector = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
        let sectors_per_cluster = u64::from(bs[13]);
        let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
        let fats = u64::from(bs[16]);
        let sectors_per_fat = u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]]));
        Ok(Self {
            fat_start: reserved * bytes_per_sector,
            data_start: (reserved + fats * sectors_per_fat) * bytes_per_sector,
            cluster_bytes: sectors_per_cluster * bytes_per_sector,
            root_cluster: u32::from_le_bytes([bs[44], bs[45], bs[46], bs[47]]),
        })
    }

    fn offset(&self, cluster: u32) -> u64 {
        self.data_start + u64::from(cluster - 2) * self.cluster_bytes
    }

    /// The byte offsets of every 32-byte entry of the directory starting at `cluster`.
    fn dir_slots<D: Read + Seek>(&self, dev: &mut D, mut cluster: u32) -> std::io::Result<Vec<u64>> {
        let mut slots = Vec::new();
        let mut seen = 0;
        while (2..0x0FFF_FFF8).contains(&cluster) && seen < 1 << 20 {
            let base = self.offset(cluster);
            slots.extend((0..self.cluster_bytes / 32).map(|i| base + i * 32));
            let mut next = [0u8; 4];
            dev.seek(SeekFrom::Start(self.fat_start + u64::from(cluster) * 4))?;
            dev.read_exact(&mut next)?;
            cluster = u32::from_le_bytes(next) & 0x0FFF_FFFF;
            seen += 1;
        }
        Ok(slots)
    }
}

fn entry_cluster(e: &[u8; 32]) -> u32 {
    u32::from(u16::from_le_bytes([e[20], e[21]])) << 16 | u32::from(u16::from_le_bytes([e[26], e[27]]))
}

fn set_entry_cluster(e: &mut [u8; 32], cluster: u32) {
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
}

const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";
const ATTR_LFN: u8 = 0x0F;
const ATTR_DIR: u8 = 0x10;

/// Works around two bugs of fatfs 0.3.6 (fixed upstream after that release): `create_dir` puts a long-name
/// entry before `.` and before `..` (so they are not the first two slots, as FAT requires), and gives a
/// first-level directory's `..` the root's cluster number instead of 0. Each subdirectory gets `.` and `..` as
/// its first two slots (the two freed slots become deleted entries) and a correct `..` cluster.
fn repair_dot_entries<D: Read + Write + Seek>(dev: &mut D) -> Result<()> {
    let geo = Geometry::read(dev)?;
    // (directory cluster, parent cluster, whether the parent is the root)
    let mut stack = vec![(geo.root_cluster, 0u32, true)];
    let mut visited = std::collections::BTreeSet::new();
    while let Some((dir, parent, is_root)) = stack.pop() {
        if !visited.insert(dir) {
            continue;
        }
        let slots = geo.dir_slots(dev, dir)?;
        let mut entries = Vec::with_capacity(slots.len());
        for &off in &slots {
            let mut e = [0u8; 32];
            dev.seek(SeekFrom::Start(off))?;
            dev.read_exact(&mut e)?;
            if e[0] == 0 {
                break;
            }
            entries.push(e);
        }
        if dir != geo.root_cluster && entries.len() >= 2 {
            let mut fixed: Option<Vec<[u8; 32]>> = None;
            if entries.len() >= 4
                && entries[0][11] == ATTR_LFN
                && &entries[1][..11] == DOT
                && entries[2][11] == ATTR_LFN
                && &entries[3][..11] == DOTDOT
            {
                let mut deleted = [0u8; 32];
                deleted[0] = 0xE5;
                fixed = Some(vec![entries[1], entries[3], deleted, deleted]);
            } else if &entries[0][..11] == DOT && &entries[1][..11] == DOTDOT {
                fixed = Some(vec![entries[0], entries[1]]);
            }
            if let Some(mut head) = fixed {
                let dotdot = if is_root { 0 } else { parent };
                set_entry_cluster(&mut head[1], dotdot);
                if head.iter().zip(&entries).any(|(a, b)| a != b) {
                    for (off, e) in slots.iter().zip(&head) {
                        dev.seek(SeekFrom::Start(*off))?;
                        dev.write_all(e)?;
                    }
                }
            }
        }
        for e in &entries {
            let name = &e[..11];
            if e[0] == 0xE5 || e[11] == ATTR_LFN || e[11] & ATTR_DIR == 0 || name == DOT || name == DOTDOT {
                continue;
            }
            stack.push((entry_cluster(e), dir, dir == geo.root_cluster));
        }
    }
    Ok(())
}

/// A dump of a FAT volume: type, label, volume id, cluster counts, then every entry (in directory order) with
/// its size and modification time.
pub fn dump_fat<D: Read + Write + Seek>(mut dev: D) -> Result<String> {
    dev.seek(SeekFrom::Start(0))?;
    let fs = FileSystem::new(dev, FsOptions::new().update_accessed_date(false))
        .map_err(fat_err("opening the FAT volume"))?;
    let stats = fs.stats().map_err(fat_err("reading FAT statistics"))?;
    let mut out = String::new();
    let _ = writeln!(out, "type: {:?}", fs.fat_type());
    let _ = writeln!(out, "label: {:?}", fs.volume_label());
    let _ = writeln!(out, "volume-id: {:08X}", fs.volume_id());
    let _ = writeln!(
        out,
        "clusters: {} of {} bytes, {} free",
        stats.total_clusters(),
        stats.cluster_size(),
        stats.free_clusters()
    );
    dump_dir(&fs.root_dir(), "/", &mut out)?;
    Ok(out)
}

fn dump_dir<T: fatfs::ReadWriteSeek>(dir: &Dir<'_, T>, prefix: &str, out: &mut String) -> Result<()> {
    for e in dir.iter() {
        let e = e.map_err(fat_err(format!("listing {prefix}")))?;
        let name = e.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let m = e.modified();
        let time = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            m.date.year, m.date.month, m.date.day, m.time.hour, m.time.min, m.time.sec
        );
        let path = format!("{prefix}{name}");
        if e.is_dir() {
            let _ = writeln!(out, "{path}/  {time}");
            dump_dir(&e.to_dir(), &format!("{path}/"), out)?;
        } else {
            let _ = writeln!(out, "{path}  {} bytes  {time}", e.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::SparseBuf;

    #[test]
    fn fat_dates_are_utc_civil_dates() {
        let d = fat_date_time(1_700_000_000); // 2023-11-14T22:13:20Z
        assert_eq!((d.date.year, d.date.month, d.date.day), (2023, 11, 14));
        assert_eq!((d.time.hour, d.time.min, d.time.sec), (22, 13, 20));
        let leap = fat_date_time(951_782_400); // 2000-02-29T00:00:00Z
        assert_eq!((leap.date.year, leap.date.month, leap.date.day), (2000, 2, 29));
        assert_eq!(fat_date_time(0).date.year, 1980);
    }

    #[test]
    fn cluster_size_keeps_fat32_cluster_count() {
        assert_eq!(cluster_size_for(33 * MIB), Some(512));
        assert_eq!(cluster_size_for(256 * MIB), Some(2048));
        assert_eq!(cluster_size_for(512 * MIB), Some(4096));
        assert_eq!(cluster_size_for(32 * MIB), None);
    }

    #[test]
    fn rejects_bad_labels_and_paths() {
        assert!(label_bytes("TOO-LONG-LABEL").is_err());
        assert!(label_bytes("").is_err());
        assert_eq!(&label_bytes("esp").unwrap(), b"ESP        ");
        assert!(check_path("/EFI/x").is_err());
        assert!(check_path("EFI/../x").is_err());
    }

    #[test]
    fn written_files_read_back_with_fixed_times() {
        let size = 40 * MIB;
        let mut dev = SparseBuf::new(size);
        let opts = EspOptions { label: "ESP".into(), volume_id: 0xDEADBEEF, epoch: 1_700_000_000 };
        let files = vec![
            EspFile { path: "loader/loader.conf".into(), data: b"timeout 0\n".to_vec() },
            EspFile { path: "EFI/BOOT/BOOTX64.EFI".into(), data: vec![7u8; 3000] },
        ];
        write_esp(&mut dev, size, &opts, &files).unwrap();
        dev.seek(SeekFrom::Start(0)).unwrap();
        let fs = FileSystem::new(&mut dev, FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), FatType::Fat32);
        assert_eq!(fs.volume_id(), 0xDEADBEEF);
        let mut data = Vec::new();
        fs.root_dir().open_file("EFI/BOOT/BOOTX64.EFI").unwrap().read_to_end(&mut data).unwrap();
        assert_eq!(data, vec![7u8; 3000]);
        let e = fs.root_dir().iter().map(|e| e.unwrap()).find(|e| e.file_name() == "loader").unwrap();
        assert_eq!(e.modified(), fat_date_time(1_700_000_000));
        drop(fs);
        let dump = dump_fat(&mut dev).unwrap();
        assert!(dump.contains("/loader/loader.conf  10 bytes  2023-11-14 22:13:20"), "{dump}");
    }

    #[test]
    fn subdirectories_start_with_dot_and_dotdot() {
        let size = 33 * MIB;
        let mut dev = SparseBuf::new(size);
        let opts = EspOptions { label: "ESP".into(), volume_id: 1, epoch: 1_700_000_000 };
        let files = vec![EspFile { path: "a/b/c".into(), data: b"x".to_vec() }];
        write_esp(&mut dev, size, &opts, &files).unwrap();
        let geo = Geometry::read(&mut dev).unwrap();
        let read = |dev: &mut SparseBuf, off: u64| {
            let mut e = [0u8; 32];
            dev.seek(SeekFrom::Start(off)).unwrap();
            dev.read_exact(&mut e).unwrap();
            e
        };
        // Find /a in the root directory, then /a/b in /a.
        let find = |dev: &mut SparseBuf, dir: u32, name: &[u8; 11]| {
            let slots = geo.dir_slots(dev, dir).unwrap();
            slots.iter().map(|&o| read(dev, o)).find(|e| &e[..11] == name).map(|e| entry_cluster(&e)).unwrap()
        };
        let a = find(&mut dev, geo.root_cluster, b"A          ");
        let b = find(&mut dev, a, b"B          ");
        for (dir, parent) in [(a, 0), (b, a)] {
            let slots = geo.dir_slots(&mut dev, dir).unwrap();
            let (dot, dotdot) = (read(&mut dev, slots[0]), read(&mut dev, slots[1]));
            assert_eq!((&dot[..11], entry_cluster(&dot)), (&DOT[..], dir));
            assert_eq!((&dotdot[..11], entry_cluster(&dotdot)), (&DOTDOT[..], parent));
        }
    }

    #[test]
    fn too_many_bytes_is_esp_full() {
        let size = 33 * MIB;
        let opts = EspOptions { label: "ESP".into(), volume_id: 1, epoch: 0 };
        let files = vec![EspFile { path: "big".into(), data: vec![1u8; 34 * MIB as usize] }];
        let err = write_esp(SparseBuf::new(size), size, &opts, &files).unwrap_err();
        assert!(matches!(err, DiskError::EspFull { .. }), "{err}");
    }
}
