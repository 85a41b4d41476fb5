//! The images as real tools see them: `sfdisk` reads the GPT, `fsck.vfat` checks the ESP, `e2fsck` and
//! `debugfs` check the root file system, `qemu-img` checks and compares the qcow2s; and building twice gives
//! the same bytes. Needs fdisk, dosfstools, e2fsprogs and qemu-utils installed.

mod common;

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    process::Command,
};

use common::{full_tree, identity, set_times, EPOCH};
use kiln_disk::{
    build_raw_image, write_qcow2_file, BuiltDisk, DiskImageRequest, DiskSpec, ExtraPartition, PartitionRole,
    PlannedPartition, Qcow2Compression, Qcow2Options, MIB,
};
use sha2::{Digest, Sha256};

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}); install fdisk dosfstools e2fsprogs qemu-utils")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn request(tree: &Path, work: &Path) -> DiskImageRequest {
    DiskImageRequest {
        tree: tree.to_path_buf(),
        work_dir: work.to_path_buf(),
        spec: DiskSpec {
            size: None,
            esp_size: 33 * MIB,
            extra: vec![ExtraPartition { label: "srv".into(), size: 4 * MIB, role: PartitionRole::Srv }],
        },
        identity: identity(),
        epoch: EPOCH,
        entry_id: "kiln-test".into(),
        title: "kiln test".into(),
        cmdline: vec!["console=ttyS0".into()],
    }
}

fn build(tree: &Path, dir: &Path) -> (PathBuf, BuiltDisk) {
    std::fs::create_dir_all(dir).unwrap();
    let raw = dir.join("disk.raw");
    let built = build_raw_image(&request(tree, dir), &raw).unwrap();
    (raw, built)
}

fn qcow2(raw: &Path, compression: Qcow2Compression) -> PathBuf {
    let name = match compression {
        Qcow2Compression::None => "disk.qcow2",
        Qcow2Compression::Zlib { .. } => "disk-zlib.qcow2",
        Qcow2Compression::Zstd { .. } => "disk-zstd.qcow2",
    };
    let out = raw.with_file_name(name);
    let opts = Qcow2Options { compression, threads: None };
    write_qcow2_file(&mut File::open(raw).unwrap(), File::create(&out).unwrap(), &opts).unwrap();
    out
}

fn extract(raw: &Path, part: &PlannedPartition, to: &Path) {
    let mut src = File::open(raw).unwrap();
    src.seek(SeekFrom::Start(part.start)).unwrap();
    let mut bytes = Vec::new();
    src.take(part.size).read_to_end(&mut bytes).unwrap();
    File::create(to).unwrap().write_all(&bytes).unwrap();
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn real_tools_accept_the_disk_and_its_qcow2s() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    full_tree(&tree);
    let (raw, built) = build(&tree, &tmp.path().join("out"));
    let layout = &built.layout;

    // GPT: sfdisk sees the identity-derived GUIDs and the DPS type GUIDs.
    let dump = run("sfdisk", &["--dump", raw.to_str().unwrap()]);
    let upper = |u: uuid::Uuid| u.hyphenated().to_string().to_uppercase();
    assert!(dump.contains(&format!("label-id: {}", upper(layout.disk_guid))), "{dump}");
    for (p, type_guid) in layout.partitions.iter().zip([
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        "3B8F8425-20E0-4F3B-907F-1A25A76F98E8",
    ]) {
        let line = format!(
            "start={:>12}, size={:>12}, type={type_guid}, uuid={}, name=\"{}\"",
            p.start / 512,
            p.size / 512,
            upper(p.guid),
            p.label
        );
        assert!(dump.contains(&line), "missing {line:?} in\n{dump}");
    }
    assert!(built
        .esp
        .entry_text()
        .contains(&format!("options root=PARTUUID={} rw console=ttyS0", layout.root().guid)));

    // ESP: a clean FAT file system.
    let esp = tmp.path().join("esp.img");
    extract(&raw, layout.esp(), &esp);
    let fsck = run("fsck.vfat", &["-n", esp.to_str().unwrap()]);
    assert!(fsck.contains("ESP") || fsck.contains("files"), "{fsck}");

    // Root: a clean ext4 with the tree's contents, owners, modes and clamped times.
    let root = tmp.path().join("root.img");
    extract(&raw, layout.root(), &root);
    run("e2fsck", &["-fn", root.to_str().unwrap()]);
    let root_s = root.to_str().unwrap();
    assert_eq!(run("debugfs", &["-R", "cat /etc/hostname", root_s]), "kiln\n");
    let stat = run("debugfs", &["-R", "stat /home/user/notes.txt", root_s]);
    assert!(stat.contains("Mode:  0640") && stat.contains("User:  1000   Group:  1000"), "{stat}");
    let mtime = format!("{:#x}", EPOCH - 200);
    for field in [" ctime: ", " atime: ", " mtime: "] {
        assert!(stat.contains(&format!("{field}{mtime}:00000000")), "{field} in {stat}");
    }
    assert!(stat.contains(&format!("crtime: {:#x}:00000000", EPOCH)), "{stat}");
    let link = run("debugfs", &["-R", "stat /bin", root_s]);
    assert!(link.contains("Type: symlink") && link.contains("Fast link dest: \"usr/bin\""), "{link}");

    // qcow2: clean, and the same guest bytes as the raw disk.
    for c in [Qcow2Compression::None, Qcow2Compression::ZLIB, Qcow2Compression::ZSTD] {
        let q = qcow2(&raw, c);
        let check = run("qemu-img", &["check", q.to_str().unwrap()]);
        assert!(check.contains("No errors were found on the image."), "{c:?}: {check}");
        let cmp = run(
            "qemu-img",
            &["compare", "-f", "raw", "-F", "qcow2", raw.to_str().unwrap(), q.to_str().unwrap()],
        );
        assert!(cmp.contains("Images are identical."), "{c:?}: {cmp}");
        let info = run("qemu-img", &["info", q.to_str().unwrap()]);
        if c == Qcow2Compression::ZSTD {
            assert!(info.contains("compression type: zstd"), "{info}");
        }
    }
}

#[test]
fn building_twice_gives_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    full_tree(&tree);
    let (raw1, _) = build(&tree, &tmp.path().join("one"));
    let sums1: Vec<String> = [Qcow2Compression::None, Qcow2Compression::ZLIB, Qcow2Compression::ZSTD]
        .into_iter()
        .map(|c| sha256(&qcow2(&raw1, c)))
        .collect();

    // Reading the tree moved its atimes; move them again, and let a second pass so ctimes differ too.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    set_times(&tree, EPOCH + 5000, EPOCH - 200);
    let (raw2, _) = build(&tree, &tmp.path().join("two"));
    assert_eq!(sha256(&raw1), sha256(&raw2), "raw disks differ");
    let sums2: Vec<String> = [Qcow2Compression::None, Qcow2Compression::ZLIB, Qcow2Compression::ZSTD]
        .into_iter()
        .map(|c| sha256(&qcow2(&raw2, c)))
        .collect();
    assert_eq!(sums1, sums2, "qcow2s differ");
}
