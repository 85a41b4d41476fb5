//! The `kiln` command line: argument definitions, logging set-up, and error reporting with exit codes.
//!
//! Conventions every command keeps: data goes to stdout (JSON with `--json`), logs and progress to stderr;
//! exit code 0 is success, 1 a failure, 2 bad input or usage. Errors print their whole cause chain; blueprint
//! problems print as `file:line:col` with the source line and a caret.

pub mod cli;
mod commands;
mod report;

use std::process::ExitCode;

use clap::Parser as _;

pub use report::{ExitStatus, UsageError};

/// Entry point of the `kiln` binary.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { ExitStatus::Usage as u8 } else { 0 });
        }
    };
    init_tracing(cli.global.verbose, cli.global.quiet);
    let json = cli.global.json;
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`kiln … | head`): nothing more to say, as other tools do.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => ExitCode::from(report::report(&err, json) as u8),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}
