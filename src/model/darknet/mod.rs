//! Darknet's own model files: the `.cfg` network description and the `.weights` blob.
//!
//! Reading goes cfg text ([`cfg`]) → typed layers with shapes ([`layers`]) →
//! parameters with batch norm folded ([`weights`]) → an ONNX graph
//! ([`to_onnx`]) that tract loads and `export-onnx` writes.

pub mod cfg;
pub mod layers;
pub mod to_onnx;
pub mod weights;

use std::path::Path;

pub use layers::{read_network, Network};
pub use weights::{ConvParams, ConvParamsLayout};

use crate::model::meta::{ModelMeta, META_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum DarknetError {
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Syntax { file: String, line: usize, message: String },
    #[error(transparent)]
    Value(Box<InvalidValue>),
    #[error("{file}:{line}: [{section}] key {key:?} is not supported; it would change inference, so the model is not loaded")]
    UnsupportedKey { file: String, line: usize, section: String, key: String },
    #[error("{file}:{line}: [{section}] {message}")]
    Layer { file: String, line: usize, section: String, message: String },
    #[error(
        "{file} has {found} bytes but {cfg} needs {expected} bytes of weights (header included): is this the weights file for this cfg?"
    )]
    WeightsSize { file: String, cfg: String, expected: usize, found: usize },
}

/// A cfg value that does not parse or is out of range.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: [{section}] {key}={value:?} is invalid: expected {expected}")]
pub struct InvalidValue {
    pub file: String,
    pub line: usize,
    pub section: String,
    pub key: String,
    pub value: String,
    pub expected: String,
}

/// The parameter layout of every convolution in a cfg, in file order; what a
/// weights file for it must contain after the header.
///
/// # Errors
/// As [`read_network`].
pub fn weights_layout(cfg_path: &Path) -> Result<Vec<ConvParamsLayout>, DarknetError> {
    Ok(weights::layout(&read_network(cfg_path, None)?))
}

/// Builds the decoding metadata of a network; `name` is the model's short name.
pub fn meta_of(network: &Network, name: &str) -> ModelMeta {
    let heads = network
        .layers
        .iter()
        .filter_map(|layer| match &layer.kind {
            layers::LayerKind::Yolo(head) => Some(head.clone()),
            _ => None,
        })
        .collect();
    ModelMeta {
        version: META_VERSION,
        name: name.into(),
        width: network.width as u32,
        height: network.height as u32,
        channels: network.channels as u32,
        classes: network.classes,
        letter_box: network.letter_box,
        nms_kind: network.nms_kind,
        beta_nms: network.beta_nms,
        heads,
    }
}

/// Returns the short name of a model: its cfg's file name without extension.
pub fn model_name(cfg_path: &Path) -> String {
    cfg_path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_else(|| "darknet".into())
}

/// Reads a cfg and its weights and returns the equivalent ONNX model with its metadata.
///
/// # Errors
/// Anything wrong with either file, named with its path (and line for the cfg).
pub fn load_as_onnx(
    cfg_path: &Path,
    weights_path: &Path,
    size: Option<(usize, usize)>,
) -> Result<(tract_onnx::pb::ModelProto, ModelMeta), DarknetError> {
    let network = read_network(cfg_path, size)?;
    let params = weights::read_weights(weights_path, &network)?;
    let meta = meta_of(&network, &model_name(cfg_path));
    Ok((to_onnx::build_model(&network, &params, &meta), meta))
}
