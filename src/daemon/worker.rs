//! One camera's loop on its own thread: read a frame, detect, publish, repeat.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use super::error_chain;
use super::shutdown::Shutdown;
use super::stats::CameraCounters;
use crate::config::CameraConfig;
use crate::detector::Detector;
use crate::frame_source::{Frame, FrameSource, FrameSourceError};
use crate::publish::payload::{DetectionsPayload, FrameInfo, InputSize};
use crate::publish::{Publisher, Topics};

/// First wait before an unavailable source is read again, unless the
/// camera's frame interval is longer. The wait doubles after each failed
/// attempt, up to [`MAX_RETRY_DELAY`].
const MIN_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Maximum wait between two attempts to read an unavailable source.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Output of `--echo`: each detections payload as one line of JSON on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    Off,
    Stdout,
}

/// Everything one camera's thread needs.
pub struct CameraWorker {
    pub camera: CameraConfig,
    pub source: Box<dyn FrameSource>,
    pub detector: Detector,
    pub publisher: Publisher,
    pub topics: Topics,
    pub counters: Arc<CameraCounters>,
    pub shutdown: Shutdown,
    pub echo: Echo,
}

/// An error that repeats frame after frame, logged when it starts and when it ends.
#[derive(Default)]
struct Incident {
    count: u64,
}

impl CameraWorker {
    /// Runs until the source ends or shutdown is requested, then publishes the camera's `offline`.
    pub fn run(mut self) {
        let name = self.camera.name.clone();
        let status_topic = self.topics.camera_status(&name);
        let rate = match self.camera.frame_interval {
            Some(interval) => format!("one frame every {} ms at most", interval.as_millis()),
            None => "no rate limit".to_string(),
        };
        let looping = if self.source.is_looping() { "looping" } else { "once" };
        info!("camera {name}: started on {} ({looping}, {rate})", self.source.description());
        self.counters.set_online(true);
        self.publisher.set_status(&status_topic, true);

        self.run_frames();

        self.counters.set_online(false);
        self.publisher.set_status(&status_topic, false);
        info!(
            "camera {name}: stopped after {} frames captured, {} processed, {} skipped",
            self.counters.captured(),
            self.counters.processed(),
            self.counters.skipped()
        );
    }

    fn run_frames(&mut self) {
        let mut next_due = Instant::now();
        let mut unavailable = Incident::default();
        let mut model_failures = Incident::default();

        loop {
            if let Some(interval) = self.camera.frame_interval {
                let wait = next_due.saturating_duration_since(Instant::now());
                if self.shutdown.wait_timeout(wait) {
                    return;
                }
                next_due = Instant::now() + interval;
            } else if self.shutdown.is_triggered() {
                return;
            }

            match self.source.next_frame() {
                Ok(Some(frame)) => {
                    self.end_unavailable(&mut unavailable);
                    self.process(frame, &mut model_failures);
                }
                Ok(None) => {
                    info!("camera {}: source finished", self.camera.name);
                    return;
                }
                Err(error) if error.is_skipped_frame() => {
                    self.counters.count_captured();
                    self.counters.count_skipped();
                    warn!("camera {}: {}", self.camera.name, error_chain(&error));
                }
                Err(error) => {
                    if !self.source.is_looping() && !error.is_transient() {
                        warn!(
                            "camera {}: {}; the source does not loop, so it ends",
                            self.camera.name,
                            error_chain(&error)
                        );
                        return;
                    }
                    if self.wait_for_source(&error, &mut unavailable) {
                        return;
                    }
                }
            }
        }
    }

    /// Marks the camera offline when an incident starts, logs it once, and
    /// waits before the next attempt, twice as long after each failed one.
    /// Returns whether shutdown was requested meanwhile.
    fn wait_for_source(&self, error: &FrameSourceError, unavailable: &mut Incident) -> bool {
        let first_delay = self.camera.frame_interval.unwrap_or_default().max(MIN_RETRY_DELAY);
        let doublings = u32::try_from(unavailable.count).unwrap_or(u32::MAX).min(16);
        let delay = first_delay.saturating_mul(1 << doublings).min(MAX_RETRY_DELAY.max(first_delay));
        if unavailable.count == 0 {
            self.counters.set_online(false);
            self.publisher.set_status(&self.topics.camera_status(&self.camera.name), false);
            warn!(
                "camera {}: {}; offline, trying again in {} ms, then at growing intervals up to {} s",
                self.camera.name,
                error_chain(error),
                delay.as_millis(),
                MAX_RETRY_DELAY.max(first_delay).as_secs()
            );
        } else {
            debug!(
                "camera {}: attempt {} failed: {}; trying again in {} ms",
                self.camera.name,
                unavailable.count,
                error_chain(error),
                delay.as_millis()
            );
        }
        unavailable.count += 1;
        self.shutdown.wait_timeout(delay)
    }

    fn end_unavailable(&self, unavailable: &mut Incident) {
        if unavailable.count > 0 {
            info!("camera {}: source available again after {} failed attempts", self.camera.name, unavailable.count);
            unavailable.count = 0;
            self.counters.set_online(true);
            self.publisher.set_status(&self.topics.camera_status(&self.camera.name), true);
        }
    }

    fn process(&mut self, frame: Frame, model_failures: &mut Incident) {
        self.counters.count_captured();

        let mut result = match self.detector.detect(&frame.image) {
            Ok(result) => result,
            Err(error) => {
                self.counters.count_skipped();
                if model_failures.count == 0 {
                    error!(
                        "camera {}: model failed on frame {} ({}): {}; counting failures until a frame succeeds",
                        self.camera.name,
                        frame.sequence,
                        frame.name,
                        error_chain(&error)
                    );
                }
                model_failures.count += 1;
                return;
            }
        };
        if model_failures.count > 0 {
            info!("camera {}: model works again after failing on {} frames", self.camera.name, model_failures.count);
            model_failures.count = 0;
        }

        result.timings_ms.decode = frame.decode_time.as_secs_f64() * 1000.0;
        self.counters.count_processed(result.timings_ms.inference);
        debug!(
            "camera {}: frame {} ({}): {} detections, inference {:.1} ms",
            self.camera.name,
            frame.sequence,
            frame.name,
            result.detections.len(),
            result.timings_ms.inference
        );

        let model = self.detector.model();
        let input = InputSize { width: model.meta().width, height: model.meta().height };
        let info = FrameInfo {
            camera: &self.camera.name,
            image: &frame.name,
            sequence: frame.sequence,
            captured_at: frame.captured_at,
        };
        let payload = DetectionsPayload::new(info, &model.description(), input, result);
        let json = match serde_json::to_vec(&payload) {
            Ok(json) => json,
            Err(error) => {
                error!(
                    "camera {}: encoding the detections of frame {} as JSON: {error}",
                    self.camera.name, frame.sequence
                );
                return;
            }
        };

        if self.echo == Echo::Stdout {
            self.echo_line(&json);
        }
        self.publisher.publish(&self.topics.detections(&self.camera.name), json);
    }

    /// Writes one payload line to stdout; stops echoing if stdout is closed.
    fn echo_line(&mut self, json: &[u8]) {
        let mut stdout = std::io::stdout().lock();
        let written = stdout.write_all(json).and_then(|()| stdout.write_all(b"\n")).and_then(|()| stdout.flush());
        if let Err(error) = written {
            warn!("camera {}: writing detections to stdout failed: {error}; no longer echoing", self.camera.name);
            self.echo = Echo::Off;
        }
    }
}
