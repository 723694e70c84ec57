//! One frame through the model: preprocess, inference, decode, with timings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::decode;
use crate::detection::{FrameDetections, StageTimings};
use crate::model::{Model, ModelError};
use crate::preprocess::{prepare_input, ResizeMode, RgbImage};

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
    /// Whether the NMS candidate cap was already reported, shared by clones.
    overflow_logged: Arc<AtomicBool>,
}

impl Detector {
    pub fn new(model: Arc<Model>, options: DetectorOptions) -> Detector {
        Detector { model, options, overflow_logged: Arc::new(AtomicBool::new(false)) }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn options(&self) -> DetectorOptions {
        self.options
    }

    /// Detects objects in an already decoded image; `timings_ms.decode` is left at 0.
    ///
    /// # Errors
    /// Inference failed in tract.
    pub fn detect(&self, image: &RgbImage) -> Result<FrameDetections, ModelError> {
        let meta = self.model.meta();
        let mode = if meta.letter_box { ResizeMode::Letterbox } else { ResizeMode::Stretch };

        let started = Instant::now();
        let input = prepare_input(image, meta.width, meta.height, mode);
        let prepared = Instant::now();
        let outputs = self.model.run(&input)?;
        let inferred = Instant::now();

        let threshold = self.options.threshold;
        let mut candidates = decode::decode_heads(meta, &outputs, &input.placement, threshold);
        let overflow =
            decode::suppress(&mut candidates, meta.classes, self.options.nms_threshold, meta.nms_kind, meta.beta_nms);
        if overflow.dropped > 0 && !self.overflow_logged.swap(true, Ordering::Relaxed) {
            log::warn!(
                "{}: {} classes had more than {} candidates each in one frame, so NMS dropped the {} weakest candidates; untrained or broken weights can do this, so check the weights file (this warning is logged once)",
                self.model.description(),
                overflow.classes,
                decode::MAX_CANDIDATES_PER_CLASS,
                overflow.dropped
            );
        }
        let detections =
            decode::to_detections(&candidates, self.model.labels(), image.width(), image.height(), threshold);
        let finished = Instant::now();

        let millis = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1000.0;
        Ok(FrameDetections {
            width: image.width(),
            height: image.height(),
            detections,
            timings_ms: StageTimings {
                decode: 0.0,
                preprocess: millis(started, prepared),
                inference: millis(prepared, inferred),
                postprocess: millis(inferred, finished),
            },
        })
    }
}
