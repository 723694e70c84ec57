//! `edgedet export-onnx`: write a darknet model as ONNX.

#[derive(Debug, clap::Args)]
pub struct ExportArgs {}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("in progress")
}
