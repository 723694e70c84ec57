//! The result types that leave the detector: what was found, where, and how long each step took.

use serde::{Deserialize, Serialize};

/// An axis-aligned box in pixels of the original image: top-left corner, width and height.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoundingBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// One labelled object. A box that scores above the threshold for several
/// classes is reported once per class, as darknet does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub label: String,
    pub class_id: usize,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: BoundingBox,
}

/// Milliseconds spent in each step of one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    pub decode: f64,
    pub preprocess: f64,
    pub inference: f64,
    pub postprocess: f64,
}

/// Everything the detector found in one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameDetections {
    /// Size of the frame the boxes refer to.
    pub width: u32,
    pub height: u32,
    pub detections: Vec<Detection>,
    pub timings_ms: StageTimings,
}
