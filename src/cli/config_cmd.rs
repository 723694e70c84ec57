//! `edgedet config --default`: print the commented default config.

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {}

pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("in progress")
}
