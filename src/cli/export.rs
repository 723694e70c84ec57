//! `edgedet export-onnx`: write a darknet model as ONNX with its YOLO metadata.

use std::path::PathBuf;

use anyhow::Context;

use crate::model::darknet;
use crate::model::onnx;
use crate::model::InputSize;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Darknet .cfg file.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Darknet weights [default: the cfg path with .weights].
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,
    /// Network input size WIDTHxHEIGHT, multiples of 32 [default: the cfg's].
    #[arg(long, value_name = "WxH")]
    pub size: Option<InputSize>,
    /// Output path of the ONNX file.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let weights = args.weights.clone().unwrap_or_else(|| args.model.with_extension("weights"));
    let size = args.size.map(|s| (s.width as usize, s.height as usize));
    let (proto, meta) = darknet::load_as_onnx(&args.model, &weights, size)
        .with_context(|| format!("loading darknet model {}", args.model.display()))?;

    // Loading the result through tract checks the graph before anyone else trusts the file.
    onnx::typed_from_proto(&proto, &meta, &args.out.display().to_string(), false)
        .context("checking the exported graph")?;
    onnx::write(&proto, &args.out)?;
    log::info!(
        "wrote {} ({}x{}, {} heads, {} classes) to {}",
        meta.name,
        meta.width,
        meta.height,
        meta.heads.len(),
        meta.classes,
        args.out.display()
    );
    Ok(())
}
