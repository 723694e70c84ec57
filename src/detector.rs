//! One frame through the model: preprocess, inference, decode, with timings.

use std::sync::Arc;

use crate::detection::FrameDetections;
use crate::model::{Model, ModelError};
use crate::preprocess::RgbImage;

/// Tunables of the detection step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectorOptions {
    /// Minimum objectness × class probability reported (darknet's `-thresh`).
    pub threshold: f32,
    /// Overlap above which NMS suppresses the weaker box of the same class.
    pub nms_threshold: f32,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        DetectorOptions { threshold: 0.25, nms_threshold: 0.45 }
    }
}

/// A model with its decoding settings. Cheap to clone; clones share the model.
#[derive(Clone)]
pub struct Detector {
    model: Arc<Model>,
    options: DetectorOptions,
}

impl Detector {
    pub fn new(model: Arc<Model>, options: DetectorOptions) -> Detector {
        Detector { model, options }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn options(&self) -> DetectorOptions {
        self.options
    }

    /// Detects objects in an already decoded image; `timings_ms.decode` is left at 0.
    pub fn detect(&self, image: &RgbImage) -> Result<FrameDetections, ModelError> {
        let _ = image;
        unimplemented!("in progress")
    }
}
