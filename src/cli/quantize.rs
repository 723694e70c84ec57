//! `edgedet quantize`: calibrate a darknet model on a folder of frames and
//! write the calibration that int8 inference reads.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::frame_source::files::list_images;
use crate::model::darknet::weights::read_weights;
use crate::model::darknet::{self, read_network, to_onnx};
use crate::model::quant::equalize::equalize;
use crate::model::quant::{default_calibration_path, CalibrationFile, Calibrator, ModelHashes};
use crate::model::InputSize;
use crate::preprocess::{load_image, prepare_input, ResizeMode};

#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// Darknet .cfg file.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Darknet weights [default: the cfg path with .weights].
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,
    /// Folder of JPEG or PNG frames like the ones the camera will see; a few
    /// hundred from the deployment camera calibrate best.
    #[arg(long, value_name = "DIR")]
    pub calibrate: PathBuf,
    /// Output path of the calibration [default: the cfg path with .int8.json,
    /// where int8 models look for it].
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Network input size WIDTHxHEIGHT to calibrate at [default: the model's].
    #[arg(long, value_name = "WxH")]
    pub size: Option<InputSize>,
    /// Use at most this many frames, spread evenly over the folder.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Keep the weights as they are instead of equalizing channel ranges
    /// across layers first (equalizing is exact in float and makes one weight
    /// scale per layer fit much better).
    #[arg(long)]
    pub no_equalize: bool,
}

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let weights = args.weights.clone().unwrap_or_else(|| args.model.with_extension("weights"));
    let out = args.out.clone().unwrap_or_else(|| default_calibration_path(&args.model));
    let size = args.size.map(|s| (s.width as usize, s.height as usize));

    let frames = list_images(&args.calibrate)
        .with_context(|| format!("listing calibration frames in {}", args.calibrate.display()))?;
    if frames.is_empty() {
        bail!("{} has no .jpg, .jpeg or .png files to calibrate on", args.calibrate.display());
    }
    let frames = spread(frames, args.limit);

    let started = Instant::now();
    let network = read_network(&args.model, size).with_context(|| format!("loading {}", args.model.display()))?;
    let mut params = read_weights(&weights, &network)?;
    let equalized = !args.no_equalize;
    if equalized {
        let rescaled = equalize(&network, &mut params);
        log::debug!("equalized the output channels of {rescaled} convolutions");
    }
    let meta = darknet::meta_of(&network, &darknet::model_name(&args.model));
    let proto = to_onnx::build_model(&network, &params, &meta);
    let hashes = ModelHashes::of(&args.model, &weights)?;
    let mut calibrator = Calibrator::new(&proto, &network).context("preparing the float model for calibration")?;
    log::info!(
        "calibrating {} {}x{} on {} frames from {}",
        meta.name,
        meta.width,
        meta.height,
        frames.len(),
        args.calibrate.display()
    );

    let mode = if meta.letter_box { ResizeMode::Letterbox } else { ResizeMode::Stretch };
    let progress = progress_bar(frames.len());
    for frame in &frames {
        progress.set_message(frame.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let image = load_image(frame)?;
        let input = prepare_input(&image, meta.width, meta.height, mode);
        calibrator.observe(&input).with_context(|| format!("calibrating on {}", frame.display()))?;
        progress.inc(1);
    }
    progress.finish_and_clear();

    let calibration = CalibrationFile::new(&network, &hashes, &meta.name, &calibrator, equalized);
    calibration.write(&out)?;
    log::info!(
        "wrote the int8 calibration of {} ({} layers, {} frames) to {} in {:.1} s",
        meta.name,
        calibration.layers.len(),
        calibration.frames,
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// At most `limit` of `frames`, evenly spaced, so a long recording is sampled
/// over its whole length rather than its first minutes.
fn spread(frames: Vec<PathBuf>, limit: Option<usize>) -> Vec<PathBuf> {
    match limit {
        Some(limit) if limit > 0 && limit < frames.len() => {
            (0..limit).map(|i| frames[i * frames.len() / limit].clone()).collect()
        }
        _ => frames,
    }
}

/// Creates a progress bar on stderr. indicatif hides it when stderr is not a
/// terminal, so logs and CI output stay clean.
fn progress_bar(frames: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(frames as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} frames, {eta} left  {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_samples_whole_folder_under_limit() {
        let frames: Vec<PathBuf> = (0..10).map(|i| PathBuf::from(format!("{i}.jpg"))).collect();
        let names: Vec<String> = spread(frames.clone(), Some(4)).iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["0.jpg", "2.jpg", "5.jpg", "7.jpg"]);
        assert_eq!(spread(frames.clone(), Some(20)).len(), 10);
        assert_eq!(spread(frames, None).len(), 10);
    }
}
