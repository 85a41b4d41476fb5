//! Snapshot tests of the three dumps (GPT, FAT, qcow2) for a small synthetic disk with a fixed identity.
//!
//! The root tree has one entry per directory, so `mke2fs -d` sees the same order on any host file system.

mod common;

use std::io::{Cursor, Read, Seek, SeekFrom};

use common::{add_boot_files, identity, set_times, write, EPOCH};
use kiln_disk::{
    boot::{esp_files_from_tree, BootConfig},
    dump_fat, dump_gpt, dump_qcow2,
    ext4::{make_ext4, Ext4Options},
    write_qcow2_file, write_raw_disk, DiskLayout, DiskSpec, EspOptions, ExtraPartition, PartitionRole,
    Qcow2Compression, Qcow2Options, MIB,
};

#[test]
fn dumps_of_a_small_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let boot_tree = tmp.path().join("boot-tree");
    add_boot_files(&boot_tree);
    let root_tree = tmp.path().join("root-tree");
    write(&root_tree, "etc/hostname", b"kiln\n", 0o644);
    set_times(&root_tree, EPOCH - 10, EPOCH - 20);

    let id = identity();
    let spec = DiskSpec {
        size: Some(64 * MIB),
        esp_size: 33 * MIB,
        extra: vec![
            ExtraPartition { label: "home".into(), size: 2 * MIB, role: PartitionRole::Home },
            ExtraPartition { label: "swap".into(), size: MIB, role: PartitionRole::Swap },
        ],
    };
    let layout = DiskLayout::plan(&spec, 0, &id).unwrap();
    let boot = BootConfig {
        entry_id: "kiln-test".into(),
        title: "Debian GNU/Linux 12 (kiln-test 1.0.0)".into(),
        root_arg: layout.root_cmdline_arg(),
        cmdline: vec!["console=ttyS0".into()],
    };
    let (esp_files, plan) = esp_files_from_tree(&boot_tree, &boot).unwrap();
    insta::assert_snapshot!("bls_entry", plan.entry_text());

    let root_img = tmp.path().join("root.ext4");
    let ext4 = Ext4Options {
        size: layout.root().size,
        uuid: id.uuid("fs:root"),
        hash_seed: id.uuid("fs:root:hash-seed"),
        label: "root".into(),
        epoch: EPOCH,
    };
    make_ext4(&root_tree, &root_img, &ext4).unwrap();

    let raw_path = tmp.path().join("disk.raw");
    let esp_opts = EspOptions { label: "ESP".into(), volume_id: id.u32("esp-volume-id"), epoch: EPOCH };
    write_raw_disk(
        std::fs::File::create(&raw_path).unwrap(),
        &layout,
        &esp_files,
        &esp_opts,
        &mut std::fs::File::open(&root_img).unwrap(),
    )
    .unwrap();

    let mut raw = std::fs::File::open(&raw_path).unwrap();
    insta::assert_snapshot!("gpt", dump_gpt(&mut raw).unwrap());

    let esp = layout.esp();
    let mut region = vec![0u8; esp.size as usize];
    raw.seek(SeekFrom::Start(esp.start)).unwrap();
    raw.read_exact(&mut region).unwrap();
    insta::assert_snapshot!("fat", dump_fat(Cursor::new(region)).unwrap());

    let mut qcow2 = Cursor::new(Vec::new());
    let opts = Qcow2Options { compression: Qcow2Compression::ZLIB, threads: None };
    write_qcow2_file(&mut raw, &mut qcow2, &opts).unwrap();
    insta::assert_snapshot!("qcow2_zlib", dump_qcow2(&mut qcow2).unwrap());
}
