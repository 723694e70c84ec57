//! `edgedet config --default`: print the commented default config.

use std::io::Write;

use anyhow::Context;

use crate::config::DEFAULT_CONFIG;

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Print the default config, every key with a comment, to stdout.
    #[arg(long, required = true)]
    default: bool,
}

pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    debug_assert!(args.default, "clap requires --default");
    std::io::stdout().write_all(DEFAULT_CONFIG.as_bytes()).context("writing the default config to stdout")?;
    Ok(())
}
