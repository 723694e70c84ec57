//! int8 models: calibration, the calibration file, and the int8 tract graph.
//!
//! `edgedet quantize` runs the float model on a folder of frames
//! ([`calibrate`]) and writes the range of every stored value to a JSON file
//! beside the model ([`CalibrationFile`]). Loading an int8 model reads the
//! darknet files and that calibration, derives the scale and zero point of
//! every tensor ([`params`]), quantizes the weights and builds the integer
//! graph ([`graph`]). Weights are quantized at every load rather than stored,
//! so the calibration file stays small and cannot disagree with the weights.

pub mod add;
#[cfg(target_arch = "x86_64")]
pub mod avx2_kernel;
pub mod calibrate;
pub mod equalize;
pub mod graph;
pub mod im2col;
#[cfg(target_arch = "x86_64")]
pub mod lut;
pub mod params;
pub mod pointwise;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use calibrate::Calibrator;
pub use params::{QParams, TensorParams, ValueRange};

use crate::model::darknet::layers::LayerKind;
use crate::model::darknet::Network;
use crate::model::InputSize;

/// The `format` value of a calibration file.
pub const CALIBRATION_FORMAT: &str = "edgedet-int8-calibration";
/// The newest calibration file version this build reads and the one it writes.
pub const CALIBRATION_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no int8 calibration at {path}: make one with `edgedet quantize --model CFG --calibrate FOLDER_OF_FRAMES`, or point [model] quantization at it"
    )]
    CalibrationMissing { path: String },
    #[error("{path} is not a valid calibration file")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
    #[error("{path} was calibrated for another {what} (sha256 {expected}) than {file} (sha256 {found}): run `edgedet quantize` again for these files")]
    Mismatch { path: String, what: &'static str, file: String, expected: String, found: String },
    #[error("{file}:{line}: layer {layer} has no calibrated range: is the calibration file for this cfg?")]
    MissingRange { file: String, layer: usize, line: usize },
    #[error("{file}:{line}: this layer cannot run in int8: {message}")]
    Unsupported { file: String, line: usize, message: String },
    #[error("layer {layer} produced a value that is not finite during calibration: the weights are probably corrupt")]
    NotFinite { layer: usize },
    #[error("building the int8 network")]
    Graph(#[source] anyhow::Error),
}

/// Calibration file written by `edgedet quantize`: the files it calibrated and
/// the measured range of every convolution and shortcut output before its
/// activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationFile {
    pub format: String,
    pub version: u32,
    /// The model's short name, for people reading the file.
    pub model: String,
    pub cfg_sha256: String,
    pub weights_sha256: String,
    /// Network input size during calibration.
    pub input_size: InputSize,
    /// Number of frames calibrated on.
    pub frames: usize,
    /// Method that chose the ranges from the observed values: `minmax`.
    pub method: String,
    /// Whether the weights were equalized across layers ([`equalize`])
    /// before calibration; loading then equalizes them the same way.
    pub equalized: bool,
    pub layers: Vec<LayerRange>,
}

/// The calibrated range of one layer's value before its activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRange {
    /// Index of the layer, counted from 0 as darknet does.
    pub layer: usize,
    /// Line of the layer's section in the cfg.
    pub line: usize,
    /// `convolutional` or `shortcut`.
    pub kind: String,
    pub min: f32,
    pub max: f32,
}

impl CalibrationFile {
    /// Collects the ranges of a finished calibration.
    pub fn new(
        network: &Network,
        hashes: &ModelHashes,
        name: &str,
        calibrator: &Calibrator,
        equalized: bool,
    ) -> CalibrationFile {
        let layers = calibrator
            .ranges()
            .iter()
            .enumerate()
            .filter_map(|(index, range)| {
                let range = (*range)?;
                let layer = &network.layers[index];
                let kind = match layer.kind {
                    LayerKind::Shortcut { .. } => "shortcut",
                    _ => "convolutional",
                };
                Some(LayerRange { layer: index, line: layer.line, kind: kind.into(), min: range.min, max: range.max })
            })
            .collect();
        CalibrationFile {
            format: CALIBRATION_FORMAT.into(),
            version: CALIBRATION_VERSION,
            model: name.into(),
            cfg_sha256: hashes.cfg.clone(),
            weights_sha256: hashes.weights.clone(),
            input_size: InputSize { width: network.width as u32, height: network.height as u32 },
            frames: calibrator.frames(),
            method: "minmax".into(),
            equalized,
            layers,
        }
    }

    /// Reads a calibration file and checks its format.
    ///
    /// # Errors
    /// Unreadable file, invalid JSON, another format or a newer version.
    pub fn read(path: &Path) -> Result<CalibrationFile, QuantError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => QuantError::CalibrationMissing { path: name.clone() },
            _ => QuantError::Io { action: "reading calibration file", path: name.clone(), source },
        })?;
        let file: CalibrationFile =
            serde_json::from_str(&text).map_err(|source| QuantError::Parse { path: name.clone(), source })?;
        if file.format != CALIBRATION_FORMAT {
            return Err(QuantError::Format {
                path: name,
                message: format!("\"format\" is {:?}, expected {CALIBRATION_FORMAT:?}", file.format),
            });
        }
        if file.version > CALIBRATION_VERSION {
            return Err(QuantError::Format {
                path: name,
                message: format!(
                    "version {} is newer than this edgedet reads ({CALIBRATION_VERSION}): upgrade edgedet or quantize again",
                    file.version
                ),
            });
        }
        Ok(file)
    }

    /// Writes the file as indented JSON.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write(&self, path: &Path) -> Result<(), QuantError> {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        std::fs::write(path, text).map_err(|source| QuantError::Io {
            action: "writing calibration file",
            path: path.display().to_string(),
            source,
        })
    }

    /// Checks that the file belongs to these model files.
    ///
    /// # Errors
    /// [`QuantError::Mismatch`] naming the file that differs.
    pub fn check_model(&self, path: &Path, hashes: &ModelHashes) -> Result<(), QuantError> {
        let checks = [
            ("cfg", &self.cfg_sha256, &hashes.cfg, &hashes.cfg_path),
            ("weights file", &self.weights_sha256, &hashes.weights, &hashes.weights_path),
        ];
        for (what, expected, found, file) in checks {
            if expected != found {
                return Err(QuantError::Mismatch {
                    path: path.display().to_string(),
                    what,
                    file: file.display().to_string(),
                    expected: expected.clone(),
                    found: found.clone(),
                });
            }
        }
        Ok(())
    }

    /// Returns the ranges indexed by layer, as [`TensorParams::derive`] takes them.
    pub fn ranges(&self, layers: usize) -> Vec<Option<ValueRange>> {
        let mut ranges = vec![None; layers];
        for range in &self.layers {
            if let Some(slot) = ranges.get_mut(range.layer) {
                *slot = Some(ValueRange { min: range.min, max: range.max });
            }
        }
        ranges
    }
}

/// SHA-256 of a model's cfg and weights, which tie a calibration to them.
#[derive(Clone, Debug)]
pub struct ModelHashes {
    pub cfg_path: PathBuf,
    pub cfg: String,
    pub weights_path: PathBuf,
    pub weights: String,
}

impl ModelHashes {
    /// Hashes both files.
    ///
    /// # Errors
    /// Either file cannot be read.
    pub fn of(cfg_path: &Path, weights_path: &Path) -> Result<ModelHashes, QuantError> {
        Ok(ModelHashes {
            cfg_path: cfg_path.into(),
            cfg: sha256_of(cfg_path)?,
            weights_path: weights_path.into(),
            weights: sha256_of(weights_path)?,
        })
    }
}

/// Returns the SHA-256 of `bytes` in lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Returns the SHA-256 of a file's contents in lowercase hex, remembered
/// in the cache folder for large files ([`crate::model::digest`]).
pub(crate) fn sha256_of(path: &Path) -> Result<String, QuantError> {
    let cache_dir = crate::model::auto::default_cache_dir();
    crate::model::digest::sha256_of(path, cache_dir.as_deref()).map_err(|source| QuantError::Io {
        action: "reading",
        path: path.display().to_string(),
        source,
    })
}

/// Returns the default calibration path of a darknet cfg:
/// `yolov4-tiny.cfg` → `yolov4-tiny.int8.json`.
pub fn default_calibration_path(cfg_path: &Path) -> PathBuf {
    cfg_path.with_extension("int8.json")
}

/// A darknet network ready to become an int8 tract plan.
pub struct Int8Network {
    network: Network,
    params: Vec<crate::model::darknet::ConvParams>,
    tensors: TensorParams,
}

/// Reads a darknet model and its calibration and derives every int8 tensor's parameters.
///
/// A layer the int8 graph cannot express fails later, in
/// [`Int8Network::optimised`], with its cfg line: building the graph here
/// only to check it cost a third of a second on yolov4.
///
/// # Errors
/// Anything wrong with the three files, or a calibration made for other files.
pub fn load_int8(
    cfg_path: &Path,
    weights_path: &Path,
    calibration_path: &Path,
    size: Option<(usize, usize)>,
) -> Result<(Int8Network, crate::model::ModelMeta), crate::model::ModelError> {
    let network = crate::model::darknet::read_network(cfg_path, size)?;
    let calibration = CalibrationFile::read(calibration_path)?;
    // Hashing the weights, which the calibration names, runs beside reading
    // and equalizing them. It took 0.2 s for yolov4's 258 MB on the README's
    // x86 machine, and takes longer on CPUs without SHA instructions.
    let params = std::thread::scope(|scope| -> Result<_, crate::model::ModelError> {
        let hashes = scope.spawn(|| ModelHashes::of(cfg_path, weights_path));
        let mut params = crate::model::darknet::weights::read_weights(weights_path, &network)?;
        if calibration.equalized {
            equalize::equalize(&network, &mut params);
        }
        let hashes = hashes.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        calibration.check_model(calibration_path, &hashes)?;
        Ok(params)
    })?;
    let size = InputSize { width: network.width as u32, height: network.height as u32 };
    if calibration.input_size != size {
        log::warn!(
            "{}: calibrated at {} but the model runs at {size}; ranges may differ, quantize again at this size if detections suffer",
            calibration_path.display(),
            calibration.input_size
        );
    }
    let tensors = TensorParams::derive(&network, &calibration.ranges(network.layers.len()))?;
    let meta = crate::model::darknet::meta_of(&network, &crate::model::darknet::model_name(cfg_path));
    Ok((Int8Network { network, params, tensors }, meta))
}

impl Int8Network {
    /// Builds the int8 graph optimised for this CPU, with edgedet's im2col in place of tract's.
    ///
    /// Some int8 kernels pack their input four values deep: tract's on arm64
    /// with `sdot` and on x86 with VNNI or AMX, and edgedet's own on x86 with
    /// AVX2 alone (`avx2_kernel`). With those, every im2col is replaced and
    /// the input zero points are folded into the biases. On CPUs whose kernel
    /// takes another packing (arm64 without the dot product, as the
    /// Cortex-A72 of the Pi 4), tract's own im2col is fast already and stays,
    /// with the zero points given to tract.
    ///
    /// # Errors
    /// tract fails to optimise the graph.
    pub fn optimised(&self) -> Result<tract_core::prelude::TypedModel, QuantError> {
        if !im2col::cpu_has_k4_kernel() {
            return self.optimised_on_tract_im2col();
        }
        let built = graph::build(&self.network, &self.params, &self.tensors, graph::ZeroPoints::InBias)?;
        let mut model = optimise(built.model)?;
        let pads = built.im2col_pads;
        let replaced = im2col::replace_im2col_with_pad(&mut model, |name, tract_pad| {
            pads.iter().find(|(node, _)| node == name).map_or(tract_pad, |(_, pad)| *pad)
        })
        .map_err(QuantError::Graph)?;
        // The replaced nodes stay behind as placeholders until compaction.
        model.compact().map_err(QuantError::Graph)?;
        if im2col::tract_im2col_nodes(&model).is_empty() {
            log::debug!("int8: {replaced} convolutions on edgedet's im2col");
            return Ok(model);
        }

        // Some kernel reads the four-deep layout, but tract chose another one for these layers.
        self.optimised_on_tract_im2col()
    }

    /// Builds the int8 graph with the input zero points given to tract and optimises it with tract's own im2col.
    ///
    fn optimised_on_tract_im2col(&self) -> Result<tract_core::prelude::TypedModel, QuantError> {
        let built = graph::build(&self.network, &self.params, &self.tensors, graph::ZeroPoints::ToTract)?;
        let model = optimise(built.model)?;
        log::debug!(
            "int8: this CPU's kernel packs its input another way; {} convolutions on tract's im2col",
            im2col::tract_im2col_nodes(&model).len()
        );
        Ok(model)
    }
}

/// Declutters and optimises an int8 graph, with its pointwise convolutions
/// made one matrix product each in between ([`pointwise`]).
fn optimise(mut model: tract_core::prelude::TypedModel) -> Result<tract_core::prelude::TypedModel, QuantError> {
    model.declutter().map_err(QuantError::Graph)?;
    let rows = pointwise::rows_as_one(&mut model).map_err(QuantError::Graph)?;
    log::debug!("int8: {rows} pointwise convolutions run over whole images");
    model.optimize().map_err(QuantError::Graph)?;
    Ok(model)
}
