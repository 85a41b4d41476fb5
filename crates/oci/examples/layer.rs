//! Writes one layer blob of a tree: `layer TREE OUT [--compression zstd|gzip|none] [--level N]
//! [--threads N] [--epoch SECONDS]`, then prints the digests. Used by `bench/oci.sh`.

use std::{io::BufWriter, path::PathBuf, process::ExitCode, time::Instant};

use kiln_oci::{
    compress::{CompressOptions, Compression},
    tree_layer::write_tree_layer,
};

const USAGE: &str =
    "usage: layer TREE OUT [--compression zstd|gzip|none] [--level N] [--threads N] [--epoch SECONDS]";

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut positional: Vec<String> = Vec::new();
    let mut opts = CompressOptions::new(Compression::Zstd);
    let mut epoch: Option<u64> = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.parse().ok());
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--compression" => opts.compression = value("--compression")?.parse()?,
            "--level" => opts.level = Some(value("--level")?.parse().map_err(|e| format!("--level: {e}"))?),
            "--threads" => {
                opts.threads = value("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?
            }
            "--epoch" => epoch = Some(value("--epoch")?.parse().map_err(|e| format!("--epoch: {e}"))?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}\n{USAGE}")),
            _ => positional.push(a),
        }
    }
    let [tree, out] = <[String; 2]>::try_from(positional).map_err(|_| USAGE.to_string())?;
    let (tree, out) = (PathBuf::from(tree), PathBuf::from(out));
    // Without SOURCE_DATE_EPOCH nothing is clamped.
    let epoch = epoch.unwrap_or(u64::MAX >> 1);

    let start = Instant::now();
    let file = std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (w, layer) = write_tree_layer(&tree, epoch, &opts, BufWriter::with_capacity(1 << 20, file))
        .map_err(|e| e.to_string())?;
    w.into_inner().map_err(|e| e.error().to_string())?;
    eprintln!("{} entries in {:.2}s", layer.entries, start.elapsed().as_secs_f64());
    let d = layer.digests;
    println!("diff_id {}", d.diff_id);
    println!("digest {}", d.digest);
    println!("size {}", d.size);
    println!("uncompressed_size {}", d.uncompressed_size);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layer: {e}");
            ExitCode::FAILURE
        }
    }
}
