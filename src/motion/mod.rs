//! Motion gating: run the detector only on frames where something moved.
//!
//! On a CPU the detector is the expensive step, and most frames of a fixed
//! camera show nothing new. The gate keeps a grayscale copy of the scene,
//! averaged over recent frames and shrunk to a few thousand cells. It compares
//! each new frame with that copy, and when enough cells differ by more than a
//! threshold, the frame goes to the detector. A full pass also runs at a fixed
//! interval whatever the gate decides, so an object that stopped moving is still
//! reported. The detector then runs on the whole frame rather than on crops
//! around the moving regions, so its detections equal those of an ungated run.
//!
//! Written here rather than taken from a crate: the one step needed (a shrunk
//! running-average difference) is a few dozen lines, and the image crates
//! with motion detection bring OpenCV or whole video pipelines.

use std::time::{Duration, Instant};

use crate::preprocess::RgbImage;

/// Settings of a camera's motion gate (`[cameras.motion]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MotionConfig {
    /// Brightness difference, 0 to 255, above which a cell counts as changed.
    pub threshold: u8,
    /// Share of cells, 0 to 1, that must change for a frame to count as motion.
    pub min_area: f32,
    /// Maximum time between two detector runs, motion or not.
    pub refresh: Duration,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig { threshold: 25, min_area: 0.005, refresh: Duration::from_secs(10) }
    }
}

/// Width of the shrunk grayscale frame the gate compares; the height follows
/// the frame's aspect ratio. 96 cells over a 1280-pixel frame is about 13
/// pixels a cell: a person at 10 m still covers several cells.
const CELLS_ACROSS: u32 = 96;

/// Weight of the newest frame in the averaged background. Lower values
/// remember the scene longer, so slow changes (clouds, dusk) count less.
const BACKGROUND_ALPHA: f32 = 0.2;

/// Decision of the gate for one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GateDecision {
    /// The first frame, or one after the frame size changed: no background yet.
    First,
    /// Enough cells changed; `changed` is their share.
    Motion { changed: f32 },
    /// Nothing moved, but the refresh interval has passed since the last run.
    Refresh,
    /// Nothing moved; the detector can skip this frame.
    Still { changed: f32 },
}

impl GateDecision {
    pub fn runs_detector(self) -> bool {
        !matches!(self, GateDecision::Still { .. })
    }
}

/// One camera's gate; feed it every frame in order.
pub struct MotionGate {
    config: MotionConfig,
    background: Vec<f32>,
    /// Frame size the background was built for.
    frame_size: (u32, u32),
    last_run: Option<Instant>,
}

impl MotionGate {
    pub fn new(config: MotionConfig) -> MotionGate {
        MotionGate { config, background: Vec::new(), frame_size: (0, 0), last_run: None }
    }

    /// Decides whether `frame`, taken at `now`, goes to the detector, and
    /// folds it into the background.
    pub fn check(&mut self, frame: &RgbImage, now: Instant) -> GateDecision {
        let cells = shrink_to_gray(frame);
        let decision = if self.frame_size != frame.dimensions() || self.background.len() != cells.len() {
            self.frame_size = frame.dimensions();
            self.background = cells.clone();
            GateDecision::First
        } else {
            let threshold = f32::from(self.config.threshold);
            let changed = cells.iter().zip(&self.background).filter(|(c, b)| (*c - *b).abs() > threshold).count();
            let changed = changed as f32 / cells.len() as f32;
            let due = self.last_run.is_none_or(|last| now.duration_since(last) >= self.config.refresh);
            if changed >= self.config.min_area {
                GateDecision::Motion { changed }
            } else if due {
                GateDecision::Refresh
            } else {
                GateDecision::Still { changed }
            }
        };
        for (background, cell) in self.background.iter_mut().zip(&cells) {
            *background += BACKGROUND_ALPHA * (cell - *background);
        }
        if decision.runs_detector() {
            self.last_run = Some(now);
        }
        decision
    }
}

/// Shrinks the frame to mean brightness per cell, `CELLS_ACROSS` cells wide.
fn shrink_to_gray(frame: &RgbImage) -> Vec<f32> {
    let (width, height) = frame.dimensions();
    let across = CELLS_ACROSS.min(width).max(1);
    let cell = (width / across).max(1);
    let down = (height / cell).max(1);
    let mut cells = vec![0f32; (across * down) as usize];
    let mut counts = vec![0u32; cells.len()];
    for (x, y, pixel) in frame.enumerate_pixels() {
        let (cx, cy) = ((x / cell).min(across - 1), (y / cell).min(down - 1));
        let index = (cy * across + cx) as usize;
        let [r, g, b] = pixel.0;
        // ITU-R BT.601 luma, the brightness cameras encode.
        cells[index] += 0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b);
        counts[index] += 1;
    }
    cells.iter_mut().zip(&counts).for_each(|(sum, &count)| *sum /= count.max(1) as f32);
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn scene(square_at: Option<(u32, u32)>) -> RgbImage {
        let mut frame = RgbImage::from_pixel(640, 480, Rgb([90, 110, 70]));
        if let Some((left, top)) = square_at {
            for y in top..top + 60 {
                for x in left..left + 60 {
                    frame.put_pixel(x, y, Rgb([240, 240, 220]));
                }
            }
        }
        frame
    }

    #[test]
    fn gate_skips_still_scene_until_refresh() {
        let mut gate = MotionGate::new(MotionConfig { refresh: Duration::from_secs(10), ..MotionConfig::default() });
        let start = Instant::now();
        assert_eq!(gate.check(&scene(None), start), GateDecision::First);
        for second in 1..10 {
            let decision = gate.check(&scene(None), start + Duration::from_secs(second));
            assert_eq!(decision, GateDecision::Still { changed: 0.0 }, "second {second}");
        }
        assert_eq!(gate.check(&scene(None), start + Duration::from_secs(10)), GateDecision::Refresh);
        assert!(!gate.check(&scene(None), start + Duration::from_secs(11)).runs_detector());
    }

    #[test]
    fn gate_runs_detector_on_entering_object() {
        let mut gate = MotionGate::new(MotionConfig::default());
        let start = Instant::now();
        gate.check(&scene(None), start);
        assert!(!gate.check(&scene(None), start + Duration::from_millis(100)).runs_detector());
        // A 60×60 square in a 640×480 frame covers about 1.2% of it.
        match gate.check(&scene(Some((300, 200))), start + Duration::from_millis(200)) {
            GateDecision::Motion { changed } => assert!((0.01..0.03).contains(&changed), "{changed}"),
            other => panic!("expected motion, got {other:?}"),
        }
    }

    #[test]
    fn camera_noise_below_the_threshold_is_still() {
        let mut gate = MotionGate::new(MotionConfig::default());
        let start = Instant::now();
        gate.check(&scene(None), start);
        let mut noisy = scene(None);
        for (x, y, pixel) in noisy.enumerate_pixels_mut() {
            let jitter = ((x * 7 + y * 13) % 21) as u8; // ±10 around the scene's colours
            pixel.0 = pixel.0.map(|c| c.saturating_add(jitter).saturating_sub(10));
        }
        assert!(!gate.check(&noisy, start + Duration::from_millis(100)).runs_detector());
    }
}
