//! Loads a YOLO model (darknet cfg/weights or ONNX) into a tract plan and runs it.

pub mod darknet;
pub mod meta;
pub mod onnx;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use meta::{ModelMeta, NmsKind, YoloHead};

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
        if size.width == 0 || size.height == 0 || size.width % 32 != 0 || size.height % 32 != 0 {
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

/// The files a model is loaded from: a darknet `.cfg` (weights beside it by default) or an `.onnx` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub path: PathBuf,
    pub weights: Option<PathBuf>,
    pub names: Option<PathBuf>,
    pub size: Option<InputSize>,
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
    #[error("running the model")]
    Inference(#[source] anyhow::Error),
}

/// A loaded, optimised model ready to run on network inputs. Shareable between threads.
pub struct Model {
    meta: ModelMeta,
    labels: Vec<String>,
    plan: onnx::Plan,
}

/// COCO's 80 class names, used when a model has 80 classes and no names file is given.
const COCO_NAMES: &str = include_str!("coco.names");

impl Model {
    /// Loads and optimises the model described by `spec`.
    ///
    /// # Errors
    /// A missing or malformed cfg, weights, ONNX or names file, named in the error.
    pub fn load(spec: &ModelSpec) -> Result<Model, ModelError> {
        let size = spec.size.map(|size| (size.width, size.height));
        let is_onnx = spec.path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("onnx"));
        let (plan, meta) = if is_onnx {
            onnx::load(&spec.path, size)?
        } else {
            let weights = spec.weights.clone().unwrap_or_else(|| spec.path.with_extension("weights"));
            let size = size.map(|(w, h)| (w as usize, h as usize));
            let (proto, meta) = darknet::load_as_onnx(&spec.path, &weights, size)?;
            let plan = onnx::plan_from_proto(&proto, &meta, &spec.path.display().to_string(), false)?;
            (plan, meta)
        };
        let labels = read_labels(spec.names.as_deref(), meta.classes)?;
        Ok(Model { meta, labels, plan })
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// Class names, indexed by class id.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Numeric precision of the weights and activations the plan runs in.
    pub fn precision(&self) -> &'static str {
        "f32"
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
        onnx::run(&self.plan, &self.meta, &input.data).map_err(ModelError::Inference)
    }
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
