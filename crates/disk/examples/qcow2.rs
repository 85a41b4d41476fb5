//! Converts a raw image to qcow2 with kiln's writer: `qcow2 IN OUT [--compress zlib|zstd] [--level N]
//! [--threads N]`. Used by `bench/disk.sh` and handy for trying the writer by hand.

use std::{num::NonZeroUsize, process::ExitCode};

use kiln_disk::{write_qcow2_file, Qcow2Compression, Qcow2Options};

fn usage() -> ExitCode {
    eprintln!("usage: qcow2 IN OUT [--compress zlib|zstd] [--level N] [--threads N]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut positional, mut compress, mut level, mut threads) = (Vec::new(), None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--compress" => compress = it.next().cloned(),
            "--level" => level = it.next().and_then(|l| l.parse::<i32>().ok()),
            "--threads" => {
                threads = it.next().and_then(|t| t.parse::<usize>().ok()).and_then(NonZeroUsize::new)
            }
            _ if a.starts_with("--") => return usage(),
            _ => positional.push(a.clone()),
        }
    }
    let [input, output] = positional.as_slice() else { return usage() };
    let compression = match (compress.as_deref(), level) {
        (None, _) => Qcow2Compression::None,
        (Some("zlib"), None) => Qcow2Compression::ZLIB,
        (Some("zlib"), Some(l)) => Qcow2Compression::Zlib { level: l.clamp(0, 9) as u32 },
        (Some("zstd"), None) => Qcow2Compression::ZSTD,
        (Some("zstd"), Some(l)) => Qcow2Compression::Zstd { level: l },
        _ => return usage(),
    };
    let run = || -> kiln_disk::Result<kiln_disk::Qcow2Stats> {
        let mut raw = fs_err::File::open(input)?.into_parts().0;
        let out = fs_err::File::create(output)?;
        write_qcow2_file(&mut raw, out, &Qcow2Options { compression, threads })
    };
    match run() {
        Ok(s) => {
            eprintln!(
                "{output}: {} bytes ({} raw, {} compressed, {} zero clusters)",
                s.file_size, s.raw_clusters, s.compressed_clusters, s.zero_clusters
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
