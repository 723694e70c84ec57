//! `edgedet check`: validate a config.

#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("in progress")
}
