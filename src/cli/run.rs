//! `edgedet run`: the detection daemon under a config file.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::daemon::{self, Control, Echo, RunOptions};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Config file (TOML). `edgedet config --default` prints a commented one.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Also write every detections message to stdout, one JSON object per line.
    #[arg(long)]
    echo: bool,
    /// Exit once every source that does not loop has delivered its last
    /// frame, as `[daemon] exit_when_done = true` does.
    #[arg(long)]
    exit_when_done: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    config.check_files()?;
    crate::frame_source::check_programs(&config.cameras)?;

    let control = Control::default();
    let _signals = daemon::listen_to_signals(&control.shutdown, &control.reload)
        .context("installing the SIGTERM, SIGINT and SIGHUP handlers")?;
    let options =
        RunOptions { echo: if args.echo { Echo::Stdout } else { Echo::Off }, exit_when_done: args.exit_when_done };
    daemon::run(config, options, &control)?;
    Ok(())
}
