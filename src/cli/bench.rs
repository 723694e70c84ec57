//! `edgedet bench`: time edgedet's precisions and thread counts, and the peer
//! runtimes people use today, on the same model, input and machine in one run.
//!
//! Every variant runs in a process of its own, so its peak memory is its own
//! and no variant warms the caches of the next. edgedet's variants are this
//! binary started again with `--single`. The peers are `benches/peers.py`
//! (OpenCV DNN, ONNX Runtime float and int8, ncnn), which prints the same
//! JSON line. Ratios are against edgedet int8 at the same thread count,
//! measured in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::detector::{Detector, DetectorOptions};
use crate::model::darknet;
use crate::model::{onnx, InputSize, Model, ModelSpec, Precision};
use crate::preprocess::{load_image, prepare_input, ResizeMode};

use super::write_stdout;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Darknet .cfg file.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Darknet weights [default: the cfg path with .weights].
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,
    /// The int8 calibration [default: the cfg path with .int8.json].
    #[arg(long, value_name = "PATH")]
    pub quantization: Option<PathBuf>,
    /// The image every variant runs on.
    #[arg(long, value_name = "PATH")]
    pub image: PathBuf,
    /// Network input size WIDTHxHEIGHT [default: the model's].
    #[arg(long, value_name = "WxH")]
    pub size: Option<InputSize>,
    /// edgedet precisions to time, comma-separated; f16 is skipped on CPUs without FP16.
    #[arg(long, value_delimiter = ',', default_values_t = [Precision::F32, Precision::Int8, Precision::F16])]
    pub precisions: Vec<Precision>,
    /// Thread counts to time every variant with, comma-separated [default: 1 and one per core].
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed runs per variant.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// The peers script; without it only edgedet is timed.
    #[arg(long, value_name = "PATH")]
    pub peers: Option<PathBuf>,
    /// Python that runs the peers script.
    #[arg(long, value_name = "PATH", default_value = "python3")]
    pub python: PathBuf,
    /// Peer runtimes to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = ["opencv".to_string(), "ort-f32".to_string(), "ort-int8".to_string(), "ncnn-f32".to_string(), "ncnn-int8".to_string()])]
    pub peer_runtimes: Vec<String>,
    /// Frames for the peers' own int8 calibration (ONNX Runtime's static quantizer).
    #[arg(long, value_name = "DIR")]
    pub calibrate: Option<PathBuf>,
    /// Folder for the exported ONNX model and the peers' quantized models [default: a temporary folder].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Print every result as one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Time one edgedet variant in this process and print its JSON line (what `bench` runs for each variant).
    #[arg(long, hide = true, value_name = "PRECISION")]
    pub single: Option<Precision>,
    /// With --single: run inference only, not the whole frame path, so that
    /// an instruction count of the process covers exactly --warmup + --runs inferences.
    #[arg(long, hide = true, requires = "single")]
    pub inference_only: bool,
    /// Instead of timing, run each edgedet precision once after the warm-up
    /// and print the slowest nodes of tract's plan (this many, per precision).
    #[arg(long, value_name = "NODES")]
    pub profile: Option<usize>,
}

/// One variant's measurements: the JSON line both edgedet and the peers script print.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VariantResult {
    pub runtime: String,
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub load_ms: f64,
    #[serde(default)]
    pub inference_ms: Vec<f64>,
    #[serde(default)]
    pub frame_ms: Vec<f64>,
    #[serde(default)]
    pub peak_rss_mb: f64,
    /// One-off preparation before loading, such as a peer's own quantization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(nodes) = args.profile {
        return profile(&args, nodes);
    }
    if let Some(precision) = args.single {
        let threads = args.threads.first().copied().unwrap_or(1);
        let result = time_edgedet(&args, precision, threads)?;
        write_stdout(&(serde_json::to_string(&result)? + "\n"))?;
        return Ok(());
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = if args.threads.is_empty() { vec![1, cores] } else { args.threads.clone() };
    threads.dedup();
    let work_dir = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            // The peers' converters run in folders of their own, so they get absolute paths.
            WorkDir::Kept(dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?)
        }
        None => WorkDir::Temporary(tempfile::tempdir().context("creating a temporary folder")?),
    };
    let onnx_path = if args.peers.is_some() { Some(export_onnx(&args, work_dir.path())?) } else { None };

    let mut results = Vec::new();
    for &count in &threads {
        for &precision in &args.precisions {
            let result = run_edgedet_variant(&args, precision, count)?;
            report_progress(&result);
            results.push(result);
        }
        if let (Some(script), Some(onnx_path)) = (&args.peers, &onnx_path) {
            for runtime in &args.peer_runtimes {
                let result = run_peer(&args, script, runtime, onnx_path, work_dir.path(), count)?;
                report_progress(&result);
                results.push(result);
            }
        }
    }

    if args.json {
        let lines: String = results.iter().map(|r| serde_json::to_string(r).unwrap_or_default() + "\n").collect();
        write_stdout(&lines)?;
    } else {
        write_stdout(&table(&results))?;
    }
    Ok(())
}

enum WorkDir {
    Kept(PathBuf),
    Temporary(tempfile::TempDir),
}

impl WorkDir {
    fn path(&self) -> &Path {
        match self {
            WorkDir::Kept(path) => path,
            WorkDir::Temporary(dir) => dir.path(),
        }
    }
}

fn spec(args: &BenchArgs, precision: Precision, threads: usize) -> ModelSpec {
    ModelSpec {
        weights: args.weights.clone(),
        size: args.size,
        precision: precision.into(),
        quantization: args.quantization.clone(),
        threads: Some(threads),
        ..ModelSpec::new(&args.model)
    }
}

/// Loads the model and times it on the image in this process.
fn time_edgedet(args: &BenchArgs, precision: Precision, threads: usize) -> anyhow::Result<VariantResult> {
    let runtime = format!("edgedet-{precision}");
    if precision == Precision::F16 && !crate::model::precision::cpu_has_fp16() {
        return Ok(VariantResult {
            runtime,
            threads,
            skipped: Some("this CPU has no FP16 arithmetic".into()),
            ..VariantResult::default()
        });
    }
    let started = Instant::now();
    let model = Arc::new(Model::load(&spec(args, precision, threads)).context("loading the model")?);
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;

    let image = load_image(&args.image)?;
    let meta = model.meta();
    let mode = if meta.letter_box { ResizeMode::Letterbox } else { ResizeMode::Stretch };
    let input = prepare_input(&image, meta.width, meta.height, mode);
    let detector = Detector::new(Arc::clone(&model), DetectorOptions::default());
    for _ in 0..args.warmup {
        model.run(&input)?;
    }
    let mut inference_ms = Vec::with_capacity(args.runs);
    let mut frame_ms = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let started = Instant::now();
        model.run(&input)?;
        inference_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if args.inference_only {
            continue;
        }
        let started = Instant::now();
        detector.detect(&image)?;
        frame_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(VariantResult {
        runtime,
        threads,
        load_ms,
        inference_ms,
        frame_ms,
        peak_rss_mb: peak_rss_mb().unwrap_or(0.0),
        prepare_ms: None,
        version: Some(env!("CARGO_PKG_VERSION").into()),
        skipped: None,
        notes: Some(format!("kernels: {}", model.summary().kernel_counts())),
    })
}

/// Prints, for each precision, the nodes of tract's plan that took the most time in one inference.
fn profile(args: &BenchArgs, nodes: usize) -> anyhow::Result<()> {
    let threads = args.threads.first().copied().unwrap_or(1);
    let image = load_image(&args.image)?;
    let mut text = String::new();
    for &precision in &args.precisions {
        if precision == Precision::F16 && !crate::model::precision::cpu_has_fp16() {
            continue;
        }
        let model = Model::load(&spec(args, precision, threads)).context("loading the model")?;
        let meta = model.meta();
        let mode = if meta.letter_box { ResizeMode::Letterbox } else { ResizeMode::Stretch };
        let input = prepare_input(&image, meta.width, meta.height, mode);
        for _ in 0..args.warmup {
            model.run(&input)?;
        }
        let times = model.profile(&input)?;
        let total: f64 = times.iter().map(|t| t.millis).sum();
        text += &format!("{} on {threads} thread(s): {total:.1} ms in {} nodes\n", model.description(), times.len());
        for time in times.iter().take(nodes) {
            text += &format!(
                "{:>9.2} ms {:>5.1}%  {:<28} {}\n",
                time.millis,
                100.0 * time.millis / total,
                time.op,
                time.node
            );
        }
    }
    write_stdout(&text)?;
    Ok(())
}

fn run_edgedet_variant(args: &BenchArgs, precision: Precision, threads: usize) -> anyhow::Result<VariantResult> {
    let exe = std::env::current_exe().context("finding the edgedet executable")?;
    let mut command = Command::new(exe);
    command
        .args(["bench", "--single", precision.as_str(), "--threads", &threads.to_string()])
        .args(["--warmup", &args.warmup.to_string(), "--runs", &args.runs.to_string()])
        .arg("--model")
        .arg(&args.model)
        .arg("--image")
        .arg(&args.image);
    if let Some(weights) = &args.weights {
        command.arg("--weights").arg(weights);
    }
    if let Some(quantization) = &args.quantization {
        command.arg("--quantization").arg(quantization);
    }
    if let Some(size) = args.size {
        command.arg("--size").arg(size.to_string());
    }
    one_json_line(&mut command, &format!("edgedet {precision}"))
}

fn run_peer(
    args: &BenchArgs,
    script: &Path,
    runtime: &str,
    onnx_path: &Path,
    work_dir: &Path,
    threads: usize,
) -> anyhow::Result<VariantResult> {
    let weights = args.weights.clone().unwrap_or_else(|| args.model.with_extension("weights"));
    let size = match args.size {
        Some(size) => size.width,
        None => darknet::read_network(&args.model, None)?.width as u32,
    };
    let mut command = Command::new(&args.python);
    command
        .arg(script)
        .args(["--runtime", runtime, "--threads", &threads.to_string(), "--size", &size.to_string()])
        .args(["--warmup", &args.warmup.to_string(), "--runs", &args.runs.to_string()])
        .arg("--cfg")
        .arg(&args.model)
        .arg("--weights")
        .arg(weights)
        .arg("--onnx")
        .arg(onnx_path)
        .arg("--image")
        .arg(&args.image)
        .arg("--work-dir")
        .arg(work_dir);
    if let Some(dir) = &args.calibrate {
        command.arg("--calibrate").arg(dir);
    }
    let mut result = one_json_line(&mut command, runtime)?;
    // A skipped runtime's line has no thread count; the table groups by it.
    result.threads = threads;
    Ok(result)
}

/// Runs a variant's process and reads the JSON line it prints.
fn one_json_line(command: &mut Command, what: &str) -> anyhow::Result<VariantResult> {
    let output = command.output().with_context(|| format!("starting the {what} benchmark"))?;
    if !output.status.success() {
        bail!("the {what} benchmark failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("reading the {what} benchmark's result line {line:?}"))
}

fn export_onnx(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<PathBuf> {
    let weights = args.weights.clone().unwrap_or_else(|| args.model.with_extension("weights"));
    let size = args.size.map(|s| (s.width as usize, s.height as usize));
    let (proto, meta) = darknet::load_as_onnx(&args.model, &weights, size)
        .with_context(|| format!("loading darknet model {}", args.model.display()))?;
    let path = work_dir.join(format!("{}.onnx", meta.name));
    onnx::write(&proto, &path)?;
    Ok(path)
}

fn report_progress(result: &VariantResult) {
    match &result.skipped {
        Some(reason) => log::info!("{} ×{}: skipped, {reason}", result.runtime, result.threads),
        None => {
            log::info!("{} ×{}: median {:.1} ms", result.runtime, result.threads, percentile(&result.inference_ms, 0.5))
        }
    }
}

/// Returns the value below which `share` of `values` lie (nearest rank).
pub fn percentile(values: &[f64], share: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((share * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Formats the results as a text table with each runtime's ratio to edgedet int8 at the same thread count.
fn table(results: &[VariantResult]) -> String {
    let mut text = format!(
        "{:<16} {:>7} {:>9} {:>9} {:>9} {:>7} {:>10} {:>9} {:>11}\n",
        "runtime", "threads", "load ms", "median", "p95", "fps", "frame ms", "peak MB", "÷ int8"
    );
    for result in results {
        if let Some(reason) = &result.skipped {
            text += &format!("{:<16} {:>7} skipped: {reason}\n", result.runtime, result.threads);
            continue;
        }
        let median = percentile(&result.inference_ms, 0.5);
        let int8 = results
            .iter()
            .find(|r| r.runtime == "edgedet-int8" && r.threads == result.threads && r.skipped.is_none())
            .map(|r| percentile(&r.inference_ms, 0.5));
        let ratio = int8.map_or("-".to_string(), |int8| format!("{:.2}", median / int8));
        text += &format!(
            "{:<16} {:>7} {:>9.0} {:>9.1} {:>9.1} {:>7.1} {:>10.1} {:>9.0} {:>11}\n",
            result.runtime,
            result.threads,
            result.load_ms,
            median,
            percentile(&result.inference_ms, 0.95),
            1000.0 / median,
            percentile(&result.frame_ms, 0.5),
            result.peak_rss_mb,
            ratio
        );
    }
    text += "median and p95: inference only; frame ms: decoded image to detections; ÷ int8: median over edgedet int8's at the same thread count\n";
    text
}

/// Reads the process's peak resident memory in MB (`VmHWM`), on Linux.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kilobytes: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&values, 0.5), 3.0);
        assert_eq!(percentile(&values, 0.95), 5.0);
        assert_eq!(percentile(&values, 0.0), 1.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
