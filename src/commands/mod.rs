//! One module per subcommand; each takes its parsed arguments and returns data or an error.

mod build;
mod catalog;
mod docs;
mod fetch;
mod pipeline;
mod plan;
mod sign;
mod test;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.global.json;
    match cli.command {
        Command::Plan(args) => plan::run(&args, json),
        Command::Build(args) => build::run(&args, json),
        Command::Test(args) => test::run(&args, json),
        Command::Keygen(args) => sign::keygen(&args, json),
        Command::Sign(args) => sign::sign(&args, json),
        Command::Verify(args) => sign::verify(&args, json),
        Command::Pipeline(args) => {
            let mut flags = Vec::new();
            if cli.global.quiet {
                flags.push("-q");
            }
            flags.extend(std::iter::repeat_n("-v", usize::from(cli.global.verbose)));
            pipeline::run(&args, json, &flags)
        }
        Command::Fetch(args) => fetch::run(&args, json),
        Command::Publish(args) => catalog::publish(&args, json),
        Command::Promote(args) => catalog::promote(&args, json),
        Command::Lifecycle(args) => catalog::lifecycle(&args, json),
        Command::Resolve(args) => catalog::resolve(&args, json),
        Command::Catalog(cmd) => catalog::catalog(&cmd, json),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { out } => docs::man(out.as_deref()),
    }
}

/// Write a value as pretty JSON with a trailing newline on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}
