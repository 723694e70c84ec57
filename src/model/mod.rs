//! Loads a YOLO model (darknet cfg/weights or ONNX) into a tract plan and runs it.

pub mod agreement;
pub mod auto;
pub mod darknet;
pub mod digest;
pub mod inspect;
pub mod meta;
pub mod mish;
pub mod onnx;
pub mod pad;
pub mod pool;
pub mod precision;
pub mod quant;
pub mod rounding;
pub mod winograd;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use meta::{ModelMeta, NmsKind, YoloHead};
pub use precision::{Precision, PrecisionSetting};

use tract_core::knobs::KnobScope;
use tract_core::prelude::*;
use tract_linalg::multithread::Executor;

use crate::preprocess::NetworkInput;

/// Network input size in pixels, written `WIDTHxHEIGHT` (e.g. `416x416`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InputSize {
    pub width: u32,
    pub height: u32,
}

impl FromStr for InputSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (w, h) = text
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("invalid input size {text:?}: expected WIDTHxHEIGHT, such as 416x416"))?;
        let parse = |part: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("invalid input size {text:?}: expected WIDTHxHEIGHT, such as 416x416"))
        };
        let size = InputSize { width: parse(w)?, height: parse(h)? };
        if size.width == 0 || size.height == 0 || !size.width.is_multiple_of(32) || !size.height.is_multiple_of(32) {
            return Err(format!(
                "invalid input size {text}: width and height must be non-zero multiples of 32 (the networks downsample by 32), such as 416x416 or 608x608"
            ));
        }
        Ok(size)
    }
}

impl TryFrom<String> for InputSize {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<InputSize> for String {
    fn from(size: InputSize) -> String {
        size.to_string()
    }
}

impl fmt::Display for InputSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// The files a model is loaded from: a darknet `.cfg` (weights beside it by
/// default) or an `.onnx` file, and the precision to run it in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub path: PathBuf,
    pub weights: Option<PathBuf>,
    pub names: Option<PathBuf>,
    pub size: Option<InputSize>,
    pub precision: PrecisionSetting,
    /// The int8 calibration [default: beside the cfg, `NAME.int8.json`].
    pub quantization: Option<PathBuf>,
    /// Threads one inference uses [default: one per core].
    pub threads: Option<usize>,
    /// Images on which `precision = "auto"` checks each precision against f32
    /// [default: the `samples` folder beside the model].
    pub samples: Option<PathBuf>,
}

impl ModelSpec {
    /// Creates the spec of a float model at `path`, with every other setting at its default.
    pub fn new(path: impl Into<PathBuf>) -> ModelSpec {
        ModelSpec { path: path.into(), ..ModelSpec::default() }
    }

    /// Returns the path of a darknet model's weights file.
    pub fn weights_path(&self) -> PathBuf {
        self.weights.clone().unwrap_or_else(|| self.path.with_extension("weights"))
    }

    /// Returns the path of the calibration file that an int8 model reads.
    pub fn quantization_path(&self) -> PathBuf {
        self.quantization.clone().unwrap_or_else(|| quant::default_calibration_path(&self.path))
    }

    /// Returns the number of threads one inference uses: as configured, else one per core.
    pub fn thread_count(&self) -> usize {
        self.threads.filter(|&n| n > 0).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Returns the folder of the images that `precision = "auto"` compares precisions on.
    pub fn samples_dir(&self) -> PathBuf {
        self.samples.clone().unwrap_or_else(|| self.path.with_file_name("samples"))
    }

    pub fn is_onnx(&self) -> bool {
        self.path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("onnx"))
    }
}

/// Raw output of the convolution that feeds one `[yolo]` layer:
/// `anchors × (5 + classes)` planes of `grid_height × grid_width`.
#[derive(Clone, Debug)]
pub struct HeadOutput {
    pub data: Vec<f32>,
    pub grid_width: usize,
    pub grid_height: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Darknet(#[from] darknet::DarknetError),
    #[error(transparent)]
    Onnx(#[from] onnx::OnnxError),
    #[error("reading class names from {path}")]
    Names {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} lists {found} class names but the model has {expected} classes")]
    NamesCount { path: String, found: usize, expected: usize },
    #[error(transparent)]
    Quant(#[from] quant::QuantError),
    #[error("{path}: int8 needs a darknet cfg and weights; ONNX models are run as they are (f32 or f16)")]
    Int8NeedsDarknet { path: String },
    #[error("optimising {path} in {precision}")]
    Optimise {
        path: String,
        precision: Precision,
        #[source]
        source: anyhow::Error,
    },
    #[error("running the model")]
    Inference(#[source] anyhow::Error),
    #[error("the samples folder {path} for precision auto does not exist: give a folder of JPEG or PNG frames, or leave it out to use the samples folder beside the model")]
    SamplesMissing { path: String },
}

/// A loaded, optimised model ready to run on network inputs. Shareable between threads.
pub struct Model {
    meta: ModelMeta,
    labels: Vec<String>,
    plan: onnx::Plan,
    /// The precision the plan runs in, which may differ from the one asked for (f16 on a CPU without FP16).
    precision: Precision,
    threads: usize,
}

/// COCO's 80 class names, used when a model has 80 classes and no names file is given.
const COCO_NAMES: &str = include_str!("coco.names");

impl Model {
    /// Loads and optimises the model described by `spec`.
    ///
    /// # Errors
    /// A missing or malformed cfg, weights, ONNX or names file, named in the error.
    pub fn load(spec: &ModelSpec) -> Result<Model, ModelError> {
        Model::load_with(spec, true)
    }

    /// Loads a candidate of `precision = "auto"`, which measures int8's speed
    /// instead of warning about it.
    pub(crate) fn load_candidate(spec: &ModelSpec) -> Result<Model, ModelError> {
        Model::load_with(spec, false)
    }

    fn load_with(spec: &ModelSpec, warn_slow_int8: bool) -> Result<Model, ModelError> {
        prefer_wide_int8_tiles();
        let size = spec.size.map(|size| (size.width, size.height));
        let name = spec.path.display().to_string();
        let requested = match spec.precision {
            PrecisionSetting::Fixed(precision) => precision,
            PrecisionSetting::Auto => auto::choose(spec)?.precision,
        };
        let precision = match requested {
            Precision::F16 if !precision::cpu_has_fp16() => {
                log::info!(
                    "{name}: this CPU has no FP16 arithmetic that tract uses, so the model runs in f32 instead of f16"
                );
                Precision::F32
            }
            precision => precision,
        };
        let threads = spec.thread_count();
        let started = Instant::now();
        let mut read = Duration::ZERO;
        let mut optimise = |typed, name: &str| {
            read = started.elapsed();
            optimise(typed, precision, threads, name)
        };
        let (plan, meta) = match (spec.is_onnx(), precision) {
            (true, Precision::Int8) => return Err(ModelError::Int8NeedsDarknet { path: name }),
            (true, _) => {
                let (typed, meta) = onnx::load(&spec.path, size)?;
                (optimise(typed, &name)?, meta)
            }
            (false, Precision::Int8) => {
                let size = size.map(|(w, h)| (w as usize, h as usize));
                let (network, meta) =
                    quant::load_int8(&spec.path, &spec.weights_path(), &spec.quantization_path(), size)?;
                read = started.elapsed();
                if warn_slow_int8 && !quant::im2col::cpu_has_k4_kernel() {
                    log::warn!(
                        "{name}: this CPU has no int8 kernel that reads four values at once (arm64 sdot; x86 AVX2, VNNI or AMX), so int8 may run slower than f32 here; precision = \"auto\" measures both"
                    );
                }
                (plan(network.optimised()?, precision, threads, &name)?, meta)
            }
            (false, _) => {
                let size = size.map(|(w, h)| (w as usize, h as usize));
                let (proto, meta) = darknet::load_as_onnx(&spec.path, &spec.weights_path(), size)?;
                let typed = onnx::typed_from_proto(&proto, &meta, &name, false)?;
                (optimise(typed, &name)?, meta)
            }
        };
        let labels = read_labels(spec.names.as_deref(), meta.classes)?;
        let model = Model { meta, labels, plan, precision, threads };
        let summary = model.summary();
        let winograd = match summary.ops.get(winograd::OP_NAME) {
            Some(count) => format!(", {count} of them for 3x3 convolutions on Winograd's algorithm"),
            None => String::new(),
        };
        log::info!(
            "{}: loaded in {} ms ({} ms reading, {} ms optimising), matrix kernels {}{winograd}",
            model.description(),
            started.elapsed().as_millis(),
            read.as_millis(),
            (started.elapsed() - read).as_millis(),
            summary.kernel_counts()
        );
        Ok(model)
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// Class names, indexed by class id.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Numeric precision of the weights and activations the plan runs in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Lists the kernels and ops that tract chose for this model on this CPU.
    pub fn summary(&self) -> inspect::PlanSummary {
        inspect::PlanSummary::of(self.plan.model())
    }

    /// Threads one inference uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Name, input size and precision, as logs and payloads show it: `yolov4-tiny 416x416 f32`.
    pub fn description(&self) -> String {
        format!("{} {}x{} {}", self.meta.name, self.meta.width, self.meta.height, self.precision())
    }

    /// Runs the network on one input and returns the raw output of every YOLO head, in cfg order.
    ///
    /// # Errors
    /// The input does not have the network's size, or tract fails.
    pub fn run(&self, input: &NetworkInput) -> Result<Vec<HeadOutput>, ModelError> {
        let tensor = self.input_tensor(input)?;
        onnx::run(&self.plan, tensor).map_err(ModelError::Inference)
    }

    /// Runs the network once on `input` and returns the time each node of the plan took, slowest first.
    ///
    /// # Errors
    /// The input does not have the network's size, or tract fails.
    pub fn profile(&self, input: &NetworkInput) -> Result<Vec<inspect::NodeTime>, ModelError> {
        let tensor = self.input_tensor(input)?;
        inspect::profile(&self.plan, tensor).map_err(ModelError::Inference)
    }

    /// Converts a prepared input to the tensor the plan takes, in the plan's precision.
    fn input_tensor(&self, input: &NetworkInput) -> Result<Tensor, ModelError> {
        let placement = &input.placement;
        if (placement.net_width, placement.net_height) != (self.meta.width, self.meta.height) {
            return Err(ModelError::Inference(anyhow::anyhow!(
                "input is {}x{} but the model expects {}x{}",
                placement.net_width,
                placement.net_height,
                self.meta.width,
                self.meta.height
            )));
        }
        let shape = [1, self.meta.channels as usize, self.meta.height as usize, self.meta.width as usize];
        let tensor = match self.precision {
            Precision::F32 => Tensor::from_shape(&shape, &input.data),
            Precision::F16 => {
                let halves: Vec<f16> = input.data.iter().map(|&x| f16::from_f32(x)).collect();
                Tensor::from_shape(&shape, &halves)
            }
            Precision::Int8 => {
                let bytes = quant::params::quantize_input(&input.data);
                Tensor::from_shape(&shape, &bytes)
            }
        };
        tensor.map_err(ModelError::Inference)
    }
}

/// Converts a decluttered model to `precision`, optimises it for this CPU and
/// makes a plan that runs its matrix products on `threads` threads.
fn optimise(model: TypedModel, precision: Precision, threads: usize, name: &str) -> Result<onnx::Plan, ModelError> {
    let failed = |source: anyhow::Error| ModelError::Optimise { path: name.into(), precision, source };
    let mut model = model;
    let fused = mish::fuse_mish(&mut model).map_err(failed)?;
    if fused > 0 {
        log::debug!("{name}: {fused} Mish activations fused into one op each");
    }
    if precision == Precision::F32 {
        let replaced = winograd::replace_convolutions(&mut model).map_err(failed)?;
        log::debug!("{name}: {replaced} 3x3 convolutions on {}", winograd::OP_NAME);
    }
    if precision == Precision::F16 {
        let transform = tract_core::transform::get_transform("f32_to_f16")
            .map_err(failed)?
            .ok_or_else(|| failed(anyhow::anyhow!("this tract has no f32_to_f16 transform")))?;
        transform.transform(&mut model).map_err(failed)?;
    }
    let knobs = float_convolution_knobs().map_err(failed)?;
    let optimised = knobs.enter(|| model.into_optimized()).map_err(failed)?;
    plan(optimised, precision, threads, name)
}

/// tract's settings for optimising a float model on this CPU.
///
/// On x86_64, tract 0.23.9 runs float convolutions of up to 576 inputs per
/// output value on long rows as `DirectSpatialConv`, on the calling thread
/// only. On yolov4 at 416×416 that op took 85–120 ms for layer 1 on one
/// thread, and an im2col with a matrix product 47 ms (with
/// [`pad::PadPlanes`]). Without it, `edgedet bench` on the README's AMD EPYC
/// ran yolov4 f32 in 840–845 ms instead of 900–920 on one thread, and 466–474
/// instead of 484–526 on two. yolov4-tiny's time stayed the same. On ARM
/// tract's choice stays, because it was not measured there. A
/// `TRACT_DISABLE_DIRECT_SPATIAL` set in the environment is left to decide.
fn float_convolution_knobs() -> TractResult<KnobScope> {
    const DIRECT_SPATIAL: &str = "TRACT_DISABLE_DIRECT_SPATIAL";
    if cfg!(target_arch = "x86_64") && std::env::var_os(DIRECT_SPATIAL).is_none() {
        KnobScope::new([(DIRECT_SPATIAL, "true")])
    } else {
        Ok(KnobScope::default())
    }
}

/// Lets tract choose its zmm 16×16 AVX-512 VNNI int8 kernel on AMD CPUs.
///
/// tract 0.23.9 times 512-bit against 256-bit VNNI instructions once per
/// process, and on cores that run 512-bit ones at half rate (Zen 4 among
/// them) it chooses the ymm 8×8 kernel. On the README's AMD EPYC (Zen 4), the
/// 16×16 kernel ran yolov4-tiny int8 in 29.6–30.8 ms instead of 35.3–36.5 on
/// one thread, and 18.7–19.4 instead of 20.7–23.0 on two. So on AMD CPUs
/// edgedet sets tract's `TRACT_AVX512_FMA_UNITS` knob to 2 process-wide,
/// below the environment, which still decides when it sets the knob.
/// NOTE: Intel CPUs with one 512-bit port keep tract's choice, because
/// tract's authors measured the wide kernel slower on one of them and no
/// Intel CPU was measured here.
/// The knob must be set before any load, because tract memoises its first probe result.
fn prefer_wide_int8_tiles() {
    #[cfg(target_arch = "x86_64")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // CPUID leaf 0 spells the vendor in EBX, EDX, ECX.
            #[allow(unused_unsafe)]
            // SAFETY: CPUID leaf 0 exists on every x86_64 CPU.
            let id = unsafe { std::arch::x86_64::__cpuid(0) };
            let vendor = [id.ebx, id.edx, id.ecx].map(u32::to_le_bytes).concat();
            if vendor != b"AuthenticAMD" {
                return;
            }
            if let Err(error) = tract_core::knobs::set_config_global("TRACT_AVX512_FMA_UNITS", "2") {
                log::warn!(
                    "setting tract's TRACT_AVX512_FMA_UNITS to 2 failed: {error}; int8 keeps tract's kernel choice"
                );
            }
        });
    }
}

/// Builds a runnable plan of an optimised model that uses `threads` threads.
fn plan(optimised: TypedModel, precision: Precision, threads: usize, name: &str) -> Result<onnx::Plan, ModelError> {
    let failed = |source: anyhow::Error| ModelError::Optimise { path: name.into(), precision, source };
    let mut optimised = optimised;
    let replaced = pool::replace_plane_ops(&mut optimised).map_err(failed)?;
    log::debug!("{name} {precision}: {replaced} pooling, upsampling and padding nodes on edgedet's ops");
    // The executor's threads split tract's matrix products and element-wise
    // ops, and edgedet's im2col, shortcuts, padding, pooling and upsampling.
    // tract's concatenation stays on the calling thread.
    let executor = (threads > 1).then(|| Executor::multithread_with_name(threads, "edgedet-infer"));
    let options = RunOptions { executor, ..RunOptions::default() };
    optimised.into_runnable_with_options(&options).map_err(failed)
}

/// Class names from a file with one name a line, or COCO's for 80-class models, or `class<N>`.
fn read_labels(path: Option<&std::path::Path>, classes: usize) -> Result<Vec<String>, ModelError> {
    let text = match path {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| ModelError::Names { path: path.display().to_string(), source })?,
        None if classes == 80 => COCO_NAMES.to_string(),
        None => return Ok((0..classes).map(|id| format!("class{id}")).collect()),
    };
    let labels: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if labels.len() != classes {
        let path = path.map(|p| p.display().to_string()).unwrap_or_else(|| "the built-in COCO names".into());
        return Err(ModelError::NamesCount { path, found: labels.len(), expected: classes });
    }
    Ok(labels)
}
