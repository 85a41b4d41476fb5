//! `kiln completions` and `kiln man`: shell completions and man pages generated from the clap definitions.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "kiln", &mut std::io::stdout());
    Ok(())
}

pub fn man(out: Option<&Path>) -> anyhow::Result<()> {
    let cmd = Cli::command();
    let Some(dir) = out else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(());
    };
    fs_err::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    Ok(())
}
