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
use crate::model::inspect::NodeTime;
use crate::model::{onnx, InputSize, Model, ModelSpec, Precision};
use crate::motion::{MotionConfig, MotionGate};
use crate::preprocess::{load_image, prepare_input, ResizeMode, RgbImage};

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
    /// Inference workers to time edgedet's precisions with besides one,
    /// comma-separated, each worker on one thread and all sharing one model
    /// [default: one per core]. 1 alone skips them.
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<usize>,
    /// Frames of the mostly static sequence on which the benchmark times
    /// motion gating (an object moves through a tenth of them); 0 skips it.
    #[arg(long, default_value_t = 120)]
    pub motion_frames: usize,
    /// Instead of timing, run each edgedet precision --runs times after the
    /// warm-up, with the first thread count of --threads. Then print the sum
    /// of all nodes' medians and this many nodes of tract's plan with the
    /// largest median times, per precision.
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
    /// Inference workers sharing the model, each on `threads` threads; 0 or 1 for one.
    #[serde(default, skip_serializing_if = "is_one_worker")]
    pub workers: usize,
    /// Inferences per second with every worker busy, measured over the
    /// timed runs; for one worker this is 1000 / the mean of `inference_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_fps: Option<f64>,
}

fn is_one_worker(workers: &usize) -> bool {
    *workers <= 1
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(nodes) = args.profile {
        return profile(&args, nodes);
    }
    if let Some(precision) = args.single {
        let threads = args.threads.first().copied().unwrap_or(1);
        let workers = args.workers.first().copied().unwrap_or(1);
        let result = match workers {
            0 | 1 => time_edgedet(&args, precision, threads)?,
            workers => time_workers(&args, precision, workers)?,
        };
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

    let workers = if args.workers.is_empty() { vec![cores] } else { args.workers.clone() };
    let mut results = Vec::new();
    for &count in &threads {
        for &precision in &args.precisions {
            let result = run_edgedet_variant(&args, precision, count, 1)?;
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
    // Several workers, one thread each: throughput for one camera's consecutive frames.
    for &count in workers.iter().filter(|&&count| count > 1) {
        for &precision in &args.precisions {
            let result = run_edgedet_variant(&args, precision, 1, count)?;
            report_progress(&result);
            results.push(result);
        }
    }

    let motion = match args.motion_frames {
        0 => None,
        frames => Some(time_motion_gating(&args, *threads.last().unwrap_or(&1), frames)?),
    };

    if args.json {
        let mut lines: String = results.iter().map(|r| serde_json::to_string(r).unwrap_or_default() + "\n").collect();
        if let Some(motion) = &motion {
            lines += &(serde_json::to_string(motion)? + "\n");
        }
        write_stdout(&lines)?;
    } else {
        let mut text = table(&results);
        if let Some(motion) = &motion {
            text += &motion.describe();
        }
        write_stdout(&text)?;
    }
    Ok(())
}

/// Motion gating's gain on a mostly static sequence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MotionResult {
    pub runtime: String,
    pub threads: usize,
    pub frames: usize,
    /// Frames in which the synthetic object moves.
    pub moving_frames: usize,
    /// Frames the gate sent to the detector.
    pub detected_frames: usize,
    /// Frames per second of the whole frame path without the gate and with it.
    pub fps_ungated: f64,
    pub fps_gated: f64,
}

impl MotionResult {
    fn describe(&self) -> String {
        format!(
            "motion gating ({} on {} threads), {} frames at a simulated 10 fps, {} of them with a moving object: the detector ran on {} frames; {:.1} fps without the gate, {:.1} fps with it ({:.1}×)\n",
            self.runtime,
            self.threads,
            self.frames,
            self.moving_frames,
            self.detected_frames,
            self.fps_ungated,
            self.fps_gated,
            self.fps_gated / self.fps_ungated
        )
    }
}

/// Frames, counted from the start of the sequence, in which the object moves: a tenth, from 40% on.
fn moving_range(frames: usize) -> std::ops::Range<usize> {
    let start = frames * 2 / 5;
    start..start + (frames / 10).max(1)
}

/// Frame `index` of the sequence: the image, with a grey square crossing it while `index` is in `moving`.
fn sequence_frame(image: &RgbImage, index: usize, moving: &std::ops::Range<usize>) -> RgbImage {
    let mut frame = image.clone();
    if moving.contains(&index) {
        let (width, height) = frame.dimensions();
        let side = (width.min(height) / 6).max(1);
        let steps = (moving.len() as u32).max(1);
        let left = (width - side) * (index - moving.start) as u32 / steps;
        let top = (height - side) / 2;
        for y in top..top + side {
            for x in left..left + side {
                frame.put_pixel(x, y, image::Rgb([200, 200, 200]));
            }
        }
    }
    frame
}

/// Times the whole frame path of edgedet f32 on a sequence made from the
/// bench image, once with every frame detected and once through a motion
/// gate with the default settings, at a simulated 10 frames a second.
fn time_motion_gating(args: &BenchArgs, threads: usize, frames: usize) -> anyhow::Result<MotionResult> {
    let model = Arc::new(Model::load(&spec(args, Precision::F32, threads)).context("loading the model")?);
    let detector = Detector::new(Arc::clone(&model), DetectorOptions::default());
    let image = load_image(&args.image)?;
    let moving = moving_range(frames);
    for _ in 0..args.warmup {
        detector.detect(&image)?;
    }
    let mut gate = MotionGate::new(MotionConfig::default());
    let start = Instant::now();
    let (mut ungated, mut gated, mut detected) = (0.0, 0.0, 0);
    for index in 0..frames {
        let frame = sequence_frame(&image, index, &moving);
        let started = Instant::now();
        detector.detect(&frame)?;
        ungated += started.elapsed().as_secs_f64();

        let camera_time = start + std::time::Duration::from_millis(100 * index as u64);
        let started = Instant::now();
        if gate.check(&frame, camera_time).runs_detector() {
            detector.detect(&frame)?;
            detected += 1;
        }
        gated += started.elapsed().as_secs_f64();
    }
    Ok(MotionResult {
        runtime: "edgedet-f32".into(),
        threads,
        frames,
        moving_frames: moving.len(),
        detected_frames: detected,
        fps_ungated: frames as f64 / ungated,
        fps_gated: frames as f64 / gated,
    })
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
        workers: 1,
        throughput_fps: None,
    })
}

/// Times `workers` threads that share one loaded model and run inferences
/// back to back, each with its own tract state and one inference thread.
/// This is the throughput a camera gets when its consecutive frames go to
/// several workers, with the latency each frame then has.
fn time_workers(args: &BenchArgs, precision: Precision, workers: usize) -> anyhow::Result<VariantResult> {
    let runtime = format!("edgedet-{precision}");
    if precision == Precision::F16 && !crate::model::precision::cpu_has_fp16() {
        let skipped = Some("this CPU has no FP16 arithmetic".into());
        return Ok(VariantResult { runtime, threads: 1, workers, skipped, ..VariantResult::default() });
    }
    let started = Instant::now();
    let model = Model::load(&spec(args, precision, 1)).context("loading the model")?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let image = load_image(&args.image)?;
    let meta = model.meta();
    let mode = if meta.letter_box { ResizeMode::Letterbox } else { ResizeMode::Stretch };
    let input = prepare_input(&image, meta.width, meta.height, mode);

    let ready = std::sync::Barrier::new(workers + 1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (inference_ms, elapsed) = std::thread::scope(|scope| -> anyhow::Result<(Vec<f64>, f64)> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<Vec<f64>> {
                    let warmed = (0..args.warmup).try_for_each(|_| model.run(&input).map(drop));
                    ready.wait();
                    warmed?;
                    let mut times = Vec::new();
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < args.runs {
                        let started = Instant::now();
                        model.run(&input)?;
                        times.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(times)
                })
            })
            .collect();
        ready.wait();
        let started = Instant::now();
        let mut times = Vec::new();
        for handle in handles {
            let worker = handle.join().map_err(|_| anyhow::anyhow!("an inference worker panicked"))?;
            times.extend(worker?);
        }
        Ok((times, started.elapsed().as_secs_f64()))
    })?;
    Ok(VariantResult {
        runtime,
        threads: 1,
        workers,
        load_ms,
        throughput_fps: Some(inference_ms.len() as f64 / elapsed),
        inference_ms,
        peak_rss_mb: peak_rss_mb().unwrap_or(0.0),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        notes: Some(format!("kernels: {}", model.summary().kernel_counts())),
        ..VariantResult::default()
    })
}

/// Prints, for each precision, the nodes of tract's plan that took the most time in one inference.
fn profile(args: &BenchArgs, nodes: usize) -> anyhow::Result<()> {
    let threads = args.threads.first().copied().unwrap_or(1);
    let image = load_image(&args.image)?;
    let mut text = String::new();
    for &precision in &args.precisions {
        if precision == Precision::F16 && !crate::model::precision::cpu_has_fp16() {
            text += "f16: skipped, this CPU has no FP16 arithmetic\n";
            continue;
        }
        let model = Model::load(&spec(args, precision, threads)).context("loading the model")?;
        let meta = model.meta();
        let mode = if meta.letter_box { ResizeMode::Letterbox } else { ResizeMode::Stretch };
        let input = prepare_input(&image, meta.width, meta.height, mode);
        for _ in 0..args.warmup {
            model.run(&input)?;
        }
        let runs = args.runs.max(1);
        let mut profiles = Vec::with_capacity(runs);
        for _ in 0..runs {
            profiles.push(model.profile(&input)?);
        }
        let times = median_node_times(&profiles);
        let total: f64 = times.iter().map(|t| t.millis).sum();
        text += &format!(
            "{} on {threads} thread(s): {total:.1} ms in {} nodes (per-node medians of {runs} runs)\n",
            model.description(),
            times.len()
        );
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

/// Returns each node's median time over several profiled inferences, slowest first.
/// On a virtual machine, one inference can put a node far from its usual time.
fn median_node_times(profiles: &[Vec<NodeTime>]) -> Vec<NodeTime> {
    let mut by_node: Vec<(NodeTime, Vec<f64>)> = Vec::new();
    for profile in profiles {
        for time in profile {
            match by_node.iter_mut().find(|(node, _)| node.node == time.node) {
                Some((_, samples)) => samples.push(time.millis),
                None => by_node.push((time.clone(), vec![time.millis])),
            }
        }
    }
    let mut times: Vec<NodeTime> = by_node
        .into_iter()
        .map(|(node, mut samples)| {
            samples.sort_by(f64::total_cmp);
            NodeTime { millis: samples[samples.len() / 2], ..node }
        })
        .collect();
    times.sort_by(|a, b| b.millis.total_cmp(&a.millis));
    times
}

fn run_edgedet_variant(
    args: &BenchArgs,
    precision: Precision,
    threads: usize,
    workers: usize,
) -> anyhow::Result<VariantResult> {
    let exe = std::env::current_exe().context("finding the edgedet executable")?;
    let mut command = Command::new(exe);
    command
        .args(["bench", "--single", precision.as_str(), "--threads", &threads.to_string()])
        .args(["--workers", &workers.to_string(), "--motion-frames", "0"])
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
    let variant = match result.workers {
        0 | 1 => format!("{} ×{}", result.runtime, result.threads),
        workers => format!("{} ×{} on {workers} workers", result.runtime, result.threads),
    };
    match &result.skipped {
        Some(reason) => log::info!("{variant}: skipped, {reason}"),
        None => log::info!("{variant}: median {:.1} ms", percentile(&result.inference_ms, 0.5)),
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

/// Formats the results as a text table with each runtime's ratio to edgedet
/// int8 at the same thread and worker count.
fn table(results: &[VariantResult]) -> String {
    let mut text = format!(
        "{:<16} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7} {:>10} {:>9} {:>11}\n",
        "runtime", "threads", "workers", "load ms", "median", "p95", "fps", "frame ms", "peak MB", "÷ int8"
    );
    let workers = |result: &VariantResult| result.workers.max(1);
    for result in results {
        if let Some(reason) = &result.skipped {
            text += &format!("{:<16} {:>7} {:>7} skipped: {reason}\n", result.runtime, result.threads, workers(result));
            continue;
        }
        let median = percentile(&result.inference_ms, 0.5);
        let int8 = results
            .iter()
            .find(|r| {
                r.runtime == "edgedet-int8"
                    && r.threads == result.threads
                    && workers(r) == workers(result)
                    && r.skipped.is_none()
            })
            .map(|r| percentile(&r.inference_ms, 0.5));
        let ratio = int8.map_or("-".to_string(), |int8| format!("{:.2}", median / int8));
        let frame = match result.frame_ms.is_empty() {
            true => "-".to_string(),
            false => format!("{:.1}", percentile(&result.frame_ms, 0.5)),
        };
        text += &format!(
            "{:<16} {:>7} {:>7} {:>9.0} {:>9.1} {:>9.1} {:>7.1} {:>10} {:>9.0} {:>11}\n",
            result.runtime,
            result.threads,
            workers(result),
            result.load_ms,
            median,
            percentile(&result.inference_ms, 0.95),
            result.throughput_fps.unwrap_or(1000.0 / median),
            frame,
            result.peak_rss_mb,
            ratio
        );
    }
    text += "median and p95: latency of one inference; fps: inferences per second with every worker busy; frame ms: decoded image to detections; ÷ int8: median over edgedet int8's at the same threads and workers\n";
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
    fn motion_sequence_moves_only_the_object() {
        let image = RgbImage::from_fn(320, 240, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 60]));
        let moving = moving_range(120);
        assert_eq!(moving, 48..60);
        assert!(sequence_frame(&image, 47, &moving) == image);
        assert!(sequence_frame(&image, 60, &moving) == image);
        let first = sequence_frame(&image, 48, &moving);
        let last = sequence_frame(&image, 59, &moving);
        assert!(first != image);
        assert!(last != image);
        assert!(first != last);

        // The gate at a simulated 10 frames a second, as the benchmark runs it:
        // the first frame, the moving ones and the frames while the averaged
        // background still shows the object, and one refresh after 10 s.
        let mut gate = MotionGate::new(MotionConfig::default());
        let start = Instant::now();
        let ran: Vec<usize> = (0..120)
            .filter(|&i| {
                let now = start + std::time::Duration::from_millis(100 * i as u64);
                gate.check(&sequence_frame(&image, i, &moving), now).runs_detector()
            })
            .collect();
        assert_eq!(ran[0], 0);
        assert!(moving.clone().all(|i| ran.contains(&i)), "{ran:?}");
        assert!(ran.iter().all(|&i| i == 0 || i >= moving.start), "a still frame before the object ran: {ran:?}");
        assert!(ran.len() < 30, "{} of 120 frames ran: {ran:?}", ran.len());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&values, 0.5), 3.0);
        assert_eq!(percentile(&values, 0.95), 5.0);
        assert_eq!(percentile(&values, 0.0), 1.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
