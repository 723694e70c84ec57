//! `edgedet detect`: run the model on image files and print what it finds.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::detection::{Detection, StageTimings};
use crate::detector::{Detector, DetectorOptions};
use crate::model::{InputSize, Model, ModelSpec, PrecisionSetting};
use crate::preprocess::load_image;

use super::{write_stdout, Stdout};

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Report objects whose objectness × class probability is above this.
    #[arg(long, default_value_t = 0.25)]
    pub threshold: f32,
    /// Overlap above which the weaker of two boxes of the same class is dropped.
    #[arg(long, default_value_t = 0.45)]
    pub nms_threshold: f32,
    /// Print one JSON object per image and line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write each image with its boxes drawn into this folder (PNG for PNG input, JPEG otherwise).
    #[arg(long, value_name = "DIR")]
    pub draw: Option<PathBuf>,
    /// JPEG or PNG files.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

/// The options that select a model; shared by the subcommands that load one.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Darknet .cfg or .onnx file.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Darknet weights [default: the cfg path with .weights].
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,
    /// Class names, one a line [default: COCO's for 80-class models].
    #[arg(long, value_name = "PATH")]
    pub names: Option<PathBuf>,
    /// Network input size WIDTHxHEIGHT, multiples of 32 [default: the model's].
    #[arg(long, value_name = "WxH")]
    pub size: Option<InputSize>,
    /// Number format to run in: f32, f16 (CPUs with FP16 arithmetic), int8 (needs `edgedet quantize` first)
    /// or auto (the fastest that agrees with f32 on this CPU, timed once and cached).
    #[arg(long, default_value_t = PrecisionSetting::default(), value_name = "PRECISION")]
    pub precision: PrecisionSetting,
    /// The int8 calibration file [default: the cfg path with .int8.json].
    #[arg(long, value_name = "PATH")]
    pub quantization: Option<PathBuf>,
    /// Threads one inference uses [default: one per core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Images on which --precision auto compares precisions with f32 [default: the samples folder beside the model].
    #[arg(long, value_name = "DIR")]
    pub samples: Option<PathBuf>,
}

impl ModelArgs {
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            path: self.model.clone(),
            weights: self.weights.clone(),
            names: self.names.clone(),
            size: self.size,
            precision: self.precision,
            quantization: self.quantization.clone(),
            threads: self.threads,
            samples: self.samples.clone(),
        }
    }

    /// Loads the model, with the path in the error context.
    pub fn load(&self) -> anyhow::Result<Model> {
        let started = Instant::now();
        let model = Model::load(&self.spec()).with_context(|| format!("loading model {}", self.model.display()))?;
        log::info!("loaded {} in {:.0} ms", model.description(), started.elapsed().as_secs_f64() * 1000.0);
        Ok(model)
    }
}

/// One line of `detect --json` output.
#[derive(Debug, Serialize)]
struct ImageReport<'a> {
    image: String,
    width: u32,
    height: u32,
    model: &'a str,
    detections: &'a [Detection],
    timings_ms: StageTimings,
}

pub fn run(args: DetectArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.threshold) {
        anyhow::bail!("--threshold must be between 0 and 1, got {}", args.threshold);
    }
    if !(0.0..=1.0).contains(&args.nms_threshold) {
        anyhow::bail!("--nms-threshold must be between 0 and 1, got {}", args.nms_threshold);
    }
    if let Some(dir) = &args.draw {
        std::fs::create_dir_all(dir).with_context(|| format!("creating output folder {}", dir.display()))?;
    }

    let model = Arc::new(args.model.load()?);
    let description = model.description();
    let options = DetectorOptions { threshold: args.threshold, nms_threshold: args.nms_threshold };
    let detector = Detector::new(model, options);

    let mut failures = 0;
    let mut drawn = HashSet::new();
    for path in &args.images {
        match detect_one(&detector, &description, path, &args, &mut drawn) {
            Ok(Stdout::Open) => {}
            Ok(Stdout::Closed) => return Ok(()),
            Err(error) => {
                eprintln!("error: {error:#}");
                failures += 1;
            }
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} of {} images failed", args.images.len());
    }
    Ok(())
}

/// Detects objects in one image, prints them and draws them.
///
/// `drawn` contains the files written so far, so that inputs with the same name do not overwrite each other.
fn detect_one(
    detector: &Detector,
    model: &str,
    path: &Path,
    args: &DetectArgs,
    drawn: &mut HashSet<PathBuf>,
) -> anyhow::Result<Stdout> {
    let started = Instant::now();
    let image = load_image(path)?;
    let decode_ms = started.elapsed().as_secs_f64() * 1000.0;

    let mut found = detector.detect(&image).with_context(|| format!("detecting objects in {}", path.display()))?;
    found.timings_ms.decode = decode_ms;
    found.timings_ms = round_timings(found.timings_ms);

    let text = if args.json {
        let report = ImageReport {
            image: path.display().to_string(),
            width: found.width,
            height: found.height,
            model,
            detections: &found.detections,
            timings_ms: found.timings_ms,
        };
        serde_json::to_string(&report)? + "\n"
    } else {
        text_report(path, &found.detections)
    };
    let stdout = write_stdout(&text).context("writing to stdout")?;

    if let Some(dir) = &args.draw {
        let mut canvas = image;
        crate::draw::draw_detections(&mut canvas, &found.detections);
        let name = path.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("image.jpg"));
        let is_png = name.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("png"));
        let name = if is_png { name } else { name.with_extension("jpg") };
        let mut out = dir.join(&name);
        // Never overwrite an input image or an earlier drawing of this run.
        let taken = |out: &Path| drawn.contains(out) || args.images.iter().any(|image| same_file(out, image));
        for copy in 2.. {
            if !taken(&out) {
                break;
            }
            let stem = name.file_stem().unwrap_or_default().to_string_lossy();
            let extension = name.extension().unwrap_or_default().to_string_lossy();
            out = dir.join(format!("{stem}-{copy}.{extension}"));
        }
        canvas.save(&out).with_context(|| format!("writing {}", out.display()))?;
        drawn.insert(out);
    }
    Ok(stdout)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Rounds to microseconds, as the MQTT payloads do; finer digits are noise.
fn round_timings(timings: StageTimings) -> StageTimings {
    let round = |ms: f64| (ms * 1000.0).round() / 1000.0;
    StageTimings {
        decode: round(timings.decode),
        preprocess: round(timings.preprocess),
        inference: round(timings.inference),
        postprocess: round(timings.postprocess),
    }
}

fn text_report(path: &Path, detections: &[Detection]) -> String {
    let mut text = format!("{}: {} objects\n", path.display(), detections.len());
    for d in detections {
        text += &format!(
            "  {:<16} {:.2}  x={:.0} y={:.0} w={:.0} h={:.0}\n",
            d.label, d.score, d.bbox.x, d.bbox.y, d.bbox.w, d.bbox.h
        );
    }
    text
}
