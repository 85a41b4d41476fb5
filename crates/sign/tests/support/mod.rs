//! A small build output folder standing in for a real one: raw and qcow2 "disks" (patterned bytes), an OCI
//! layout written with kiln-oci from a tiny tree, a report and an SBOM, and the manifest listing them (the
//! OCI layout by its image manifest, as the builder records it).
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use kiln_blueprint::manifest::{Artifact, ArtifactKind, Manifest};
use sha2::Digest as _;

pub struct Output {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

fn artifact(dir: &Path, kind: ArtifactKind, path: &str, digested: &str) -> Artifact {
    let bytes = std::fs::read(dir.join(digested)).unwrap();
    Artifact {
        kind,
        path: path.into(),
        sha256: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
        size: bytes.len() as u64,
    }
}

/// A fresh unsigned output folder.
pub fn output() -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    std::fs::create_dir_all(dir.join("report")).unwrap();
    // Big enough to be read in several chunks.
    let raw: Vec<u8> = (0..2_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.join("disk.raw"), &raw).unwrap();
    let qcow2: Vec<u8> = b"QFI\xfb".iter().copied().chain((0..70_000u32).map(|i| (i % 7) as u8)).collect();
    std::fs::write(dir.join("disk.qcow2"), qcow2).unwrap();
    std::fs::write(
        dir.join("report/certification.json"),
        b"{\"schema\":\"kiln.certification/v1\",\"passed\":true}\n",
    )
    .unwrap();
    std::fs::write(dir.join("report/junit.xml"), b"<testsuites tests=\"1\" failures=\"0\"/>\n").unwrap();
    std::fs::write(dir.join("sbom.spdx.json"), b"{\"spdxVersion\":\"SPDX-2.3\"}\n").unwrap();

    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/os-release"), b"ID=debian\nVERSION_ID=12\n").unwrap();
    std::fs::write(tree.join("etc/hostname"), b"kiln\n").unwrap();
    let spec = kiln_oci::ImageSpec::new("1.0.0", 1_700_000_000);
    let written = kiln_oci::write_image(
        &tree,
        &dir.join("oci"),
        &spec,
        &kiln_oci::CompressOptions::new(kiln_oci::Compression::Gzip),
        "kiln test fixture",
    )
    .unwrap();

    let mut m = Manifest::new("debian-minimal", "1.0.0", "sha256:aa", "sha256:bb");
    for a in [
        artifact(&dir, ArtifactKind::Raw, "disk.raw", "disk.raw"),
        artifact(&dir, ArtifactKind::Qcow2, "disk.qcow2", "disk.qcow2"),
        // An OCI layout is recorded by its image manifest blob.
        artifact(&dir, ArtifactKind::Oci, "oci", &image_manifest_blob(&written)),
        artifact(&dir, ArtifactKind::Sbom, "sbom.spdx.json", "sbom.spdx.json"),
        artifact(&dir, ArtifactKind::Report, "report/certification.json", "report/certification.json"),
        artifact(&dir, ArtifactKind::Report, "report/junit.xml", "report/junit.xml"),
    ] {
        m.put(a).unwrap();
    }
    m.write(&dir).unwrap();
    Output { _tmp: tmp, dir }
}

/// The image manifest blob of a layout kiln-oci wrote, relative to the output folder.
fn image_manifest_blob(written: &kiln_oci::WrittenImage) -> String {
    format!("oci/blobs/sha256/{}", written.manifest_digest().hex())
}

/// Flip one bit of the byte at `offset` of `path`.
pub fn flip_byte(path: &Path, offset: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[offset] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

/// Run a shell command line; its status and both outputs.
pub fn sh(script: &str, cwd: &Path) -> (bool, String) {
    let out = Command::new("bash").arg("-c").arg(script).current_dir(cwd).output().expect("bash runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `openssl dgst -sha256 -verify PUB -signature <(base64 -d SIG) FILE`, as a consumer would run it.
pub fn openssl_verify(public_pem: &Path, sig: &Path, file: &Path) -> (bool, String) {
    sh(
        &format!(
            "openssl dgst -sha256 -verify '{}' -signature <(base64 -d '{}') '{}'",
            public_pem.display(),
            sig.display(),
            file.display()
        ),
        Path::new("/"),
    )
}

/// The layer blob files of the output's OCI image.
pub fn oci_layer_blobs(dir: &Path) -> Vec<PathBuf> {
    let layout = kiln_oci::Layout::open(&dir.join("oci")).unwrap();
    let image = layout.find("1.0.0").unwrap();
    image.layers().iter().map(|d| layout.blob_path(d)).collect()
}
