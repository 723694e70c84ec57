//! The model facts the decoder needs besides the weights: input size,
//! classes, and how each YOLO head turns its raw output into boxes.
//!
//! It travels with exported ONNX files as JSON in the metadata entry
//! [`META_KEY`], or in a TOML file beside the ONNX file (same fields).

use serde::{Deserialize, Serialize};

/// ONNX `metadata_props` key that contains the model's [`ModelMeta`] as JSON.
pub const META_KEY: &str = "edgedet.yolo";

/// Version of the metadata layout; bumped when a field changes meaning.
pub const META_VERSION: u32 = 1;

/// Darknet's `nms_kind`: which overlap measure suppresses a box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NmsKind {
    /// Plain IoU (darknet `DEFAULT_NMS`, used when the cfg sets no `nms_kind`).
    #[serde(rename = "default")]
    Default,
    /// DIoU with darknet's fixed exponent 0.6 on the centre-distance term (`greedynms`).
    #[serde(rename = "greedynms")]
    Greedy,
    /// DIoU with the cfg's `beta_nms` as exponent (`diounms`).
    #[serde(rename = "diounms")]
    Diou,
    /// IoU, as darknet's `cornersnms` suppresses (it only differs in training).
    #[serde(rename = "cornersnms")]
    Corners,
}

/// One `[yolo]` layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YoloHead {
    /// All anchors of the layer as (width, height) in network-input pixels.
    pub anchors: Vec<[f32; 2]>,
    /// Indices into `anchors` that this head predicts, in output order.
    pub mask: Vec<usize>,
    /// Darknet's `scale_x_y` (1.0 when absent).
    pub scale_x_y: f32,
    /// Darknet's `new_coords`: the head's inputs are already logistic and sizes are `(2·x)²·anchor`.
    pub new_coords: bool,
}

impl YoloHead {
    /// Returns the anchors this head predicts, in output order.
    pub fn masked_anchors(&self) -> impl Iterator<Item = [f32; 2]> + '_ {
        self.mask.iter().map(|&i| self.anchors[i])
    }
}

/// Everything about a model that is not a weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMeta {
    pub version: u32,
    /// Short name for logs and payloads, such as `yolov4-tiny`.
    pub name: String,
    /// Network input size in pixels.
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub classes: usize,
    /// Fit images into the input with preserved aspect ratio (`letter_box=1`) rather than stretched.
    pub letter_box: bool,
    pub nms_kind: NmsKind,
    /// Exponent of the DIoU term for [`NmsKind::Diou`].
    pub beta_nms: f32,
    /// One entry per `[yolo]` layer, in cfg order, matching the model's outputs.
    pub heads: Vec<YoloHead>,
}

impl ModelMeta {
    /// Checks the invariants the decoder relies on; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != META_VERSION {
            return Err(format!("version is {}, expected {META_VERSION}", self.version));
        }
        if self.heads.is_empty() {
            return Err("heads is empty: a YOLO model has at least one head".into());
        }
        if self.classes == 0 {
            return Err("classes is 0".into());
        }
        for (i, head) in self.heads.iter().enumerate() {
            if head.mask.is_empty() {
                return Err(format!("heads[{i}].mask is empty"));
            }
            if let Some(bad) = head.mask.iter().find(|&&m| m >= head.anchors.len()) {
                return Err(format!(
                    "heads[{i}].mask refers to anchor {bad} but the head has {} anchors",
                    head.anchors.len()
                ));
            }
            if !(head.scale_x_y.is_finite() && head.scale_x_y > 0.0) {
                return Err(format!("heads[{i}].scale_x_y must be a positive number"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sidecar example of the README, integers where floats are expected included.
    const SIDECAR: &str = r#"
version = 1
name = "yolov4-tiny"
width = 416
height = 416
channels = 3
classes = 80
letter_box = false
nms_kind = "greedynms"
beta_nms = 0.6

[[heads]]
anchors = [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]]
mask = [3, 4, 5]
scale_x_y = 1.05
new_coords = false

[[heads]]
anchors = [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]]
mask = [1, 2, 3]
scale_x_y = 1.05
new_coords = false
"#;

    #[test]
    fn sidecar_example_parses_and_validates() {
        let meta: ModelMeta = toml::from_str(SIDECAR).unwrap();
        assert_eq!(meta.validate(), Ok(()));
        assert_eq!(meta.nms_kind, NmsKind::Greedy);
        assert_eq!(meta.heads.len(), 2);
        assert_eq!(
            meta.heads[0].masked_anchors().collect::<Vec<_>>(),
            vec![[81.0, 82.0], [135.0, 169.0], [344.0, 319.0]]
        );
        assert_eq!(meta.heads[1].scale_x_y, 1.05);
    }

    #[test]
    fn mask_beyond_the_anchors_is_invalid() {
        let mut meta: ModelMeta = toml::from_str(SIDECAR).unwrap();
        meta.heads[1].mask = vec![1, 6];
        assert_eq!(meta.validate(), Err("heads[1].mask refers to anchor 6 but the head has 6 anchors".to_string()));
    }
}
