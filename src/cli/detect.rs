//! `edgedet detect`: run the model on image files.

#[derive(Debug, clap::Args)]
pub struct DetectArgs {}

pub fn run(args: DetectArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("in progress")
}
