//! ONNX models on tract: loading, checking the YOLO layout, and writing.
//!
//! A model is accepted when it has one float input `1×C×H×W` and one output
//! per YOLO head, `1 × anchors·(5+classes) × H/s × W/s`, holding the raw
//! output of the convolution that feeds the head, and when its decoding
//! metadata ([`ModelMeta`]) comes either from the ONNX metadata entry
//! [`META_KEY`] or from a TOML file beside it with the same stem
//! (`model.onnx` → `model.toml`). Models that end in decoded boxes or NMS, as
//! many exporters write them, are a different layout and are rejected.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::model::meta::{ModelMeta, META_KEY};
use crate::model::HeadOutput;

/// An optimised tract plan.
pub type Plan = Arc<TypedRunnableModel>;

/// The layout a YOLO ONNX model must have, for error messages.
const EXPECTED_LAYOUT: &str = "one float input 1×C×H×W and one output per YOLO head, each the raw convolution output 1 × anchors·(5+classes) × H/stride × W/stride (as `edgedet export-onnx` writes)";

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a readable ONNX model")]
    Parse {
        path: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("{path} has no {META_KEY:?} metadata entry and no {sidecar} beside it: edgedet needs the anchors, masks, classes and NMS settings of the YOLO heads")]
    MissingMeta { path: String, sidecar: String },
    #[error("{path}: YOLO metadata is invalid: {message}")]
    InvalidMeta { path: String, message: String },
    #[error("{path} has an unsupported layout: {message}; expected {EXPECTED_LAYOUT}")]
    Layout { path: String, message: String },
    #[error("preparing {path} for tract")]
    Optimise {
        path: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("writing {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Reads an ONNX file and its YOLO metadata; `size` replaces the input size.
/// Returns the decluttered model, not yet optimised for a precision and CPU.
///
/// # Errors
/// Unreadable file, missing or invalid metadata, or a layout other than the one described in the module docs.
pub fn load(path: &Path, size: Option<(u32, u32)>) -> Result<(TypedModel, ModelMeta), OnnxError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        action: "reading ONNX model",
        path: name.clone(),
        source,
    })?;
    let proto = ModelProto::decode(bytes.as_slice())
        .map_err(|source| OnnxError::Parse { path: name.clone(), source: source.into() })?;
    let mut meta = read_meta(path, &proto)?;
    if let Some((width, height)) = size {
        meta.width = width;
        meta.height = height;
    }
    let model = typed_from_proto(&proto, &meta, &name, size.is_some())?;
    Ok((model, meta))
}

/// Builds the decluttered tract model of an ONNX model and checks its outputs against `meta`.
///
/// `resized` is true when the input size differs from the one stored in the
/// model, so the stored output shapes are recomputed instead of trusted.
pub fn typed_from_proto(
    proto: &ModelProto,
    meta: &ModelMeta,
    name: &str,
    resized: bool,
) -> Result<TypedModel, OnnxError> {
    let layout = |message: String| OnnxError::Layout { path: name.into(), message };
    let graph = proto.graph.as_ref().ok_or_else(|| layout("the file contains no graph".into()))?;
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph.input.iter().filter(|i| !initializers.contains(&i.name.as_str())).collect();
    if inputs.len() != 1 {
        return Err(layout(format!("it has {} inputs", inputs.len())));
    }
    if graph.output.len() != meta.heads.len() {
        return Err(layout(format!(
            "it has {} outputs but its metadata describes {} YOLO heads",
            graph.output.len(),
            meta.heads.len()
        )));
    }

    let mut model = tract_onnx::onnx()
        .with_ignore_output_shapes(resized)
        .model_for_proto_model(proto)
        .map_err(|source| OnnxError::Parse { path: name.into(), source })?;
    let input_shape = [1, meta.channels as usize, meta.height as usize, meta.width as usize];
    model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), input_shape)).map_err(|source| {
        layout(format!(
            "its input does not accept a 1×{}×{}×{} float tensor ({source})",
            meta.channels, meta.height, meta.width
        ))
    })?;
    let typed = model.into_typed().and_then(|m| m.into_decluttered());
    let typed = typed.map_err(|source| OnnxError::Optimise { path: name.into(), source })?;
    check_outputs(&typed, meta).map_err(layout)?;
    Ok(typed)
}

/// Checks that output `i` is head `i`'s raw tensor of the expected size.
fn check_outputs(model: &TypedModel, meta: &ModelMeta) -> Result<(), String> {
    for (index, head) in meta.heads.iter().enumerate() {
        let fact = model.output_fact(index).map_err(|e| format!("output {index}: {e}"))?;
        if fact.datum_type != f32::datum_type() {
            return Err(format!("output {index} is {:?}, not float", fact.datum_type));
        }
        let shape = fact.shape.as_concrete().ok_or_else(|| format!("output {index} has no fixed shape"))?;
        let channels = head.mask.len() * (5 + meta.classes);
        let fits = |grid: usize, extent: u32| grid > 0 && (extent as usize).is_multiple_of(grid);
        let ok = shape.len() == 4
            && shape[0] == 1
            && shape[1] == channels
            && fits(shape[2], meta.height)
            && fits(shape[3], meta.width);
        if !ok {
            return Err(format!(
                "output {index} has shape {shape:?}, but head {index} needs [1, {channels}, H/stride, W/stride] ({} anchors × (5 + {} classes))",
                head.mask.len(),
                meta.classes
            ));
        }
    }
    Ok(())
}

/// Reads the YOLO metadata from the model's metadata entry, else from the sidecar TOML file.
fn read_meta(path: &Path, proto: &ModelProto) -> Result<ModelMeta, OnnxError> {
    let name = path.display().to_string();
    let invalid = |message: String| OnnxError::InvalidMeta { path: name.clone(), message };
    let sidecar = sidecar_path(path);
    let meta: ModelMeta = if let Some(entry) = proto.metadata_props.iter().find(|p| p.key == META_KEY) {
        serde_json::from_str(&entry.value).map_err(|e| invalid(format!("entry {META_KEY:?}: {e}")))?
    } else if sidecar.exists() {
        let text = std::fs::read_to_string(&sidecar).map_err(|source| OnnxError::Io {
            action: "reading YOLO metadata",
            path: sidecar.display().to_string(),
            source,
        })?;
        toml::from_str(&text)
            .map_err(|e| OnnxError::InvalidMeta { path: sidecar.display().to_string(), message: e.to_string() })?
    } else {
        return Err(OnnxError::MissingMeta { path: name, sidecar: sidecar.display().to_string() });
    };
    meta.validate().map_err(invalid)?;
    Ok(meta)
}

/// Returns the sidecar metadata path: `model.onnx` → `model.toml`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    path.with_extension("toml")
}

/// Runs `plan` on one CHW input and copies out every head's tensor as f32.
pub fn run(plan: &Plan, input: Tensor) -> TractResult<Vec<HeadOutput>> {
    let outputs = plan.run(tvec!(input.into()))?;
    outputs
        .iter()
        .map(|output| {
            let output = output.cast_to::<f32>()?;
            let view = output.to_plain_array_view::<f32>()?;
            let dims = view.shape();
            let (grid_height, grid_width) = (dims[2], dims[3]);
            let data = view.as_slice().map(<[f32]>::to_vec).unwrap_or_else(|| view.iter().copied().collect());
            Ok(HeadOutput { data, grid_width, grid_height })
        })
        .collect()
}

/// Writes `proto` to `path`.
pub fn write(proto: &ModelProto, path: &Path) -> Result<(), OnnxError> {
    std::fs::write(path, proto.encode_to_vec())
        .map_err(|source| OnnxError::Write { path: path.display().to_string(), source })
}
