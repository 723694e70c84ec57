//! `edgedet run`: the daemon.

#[derive(Debug, clap::Args)]
pub struct RunArgs {}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("in progress")
}
