//! One camera's inference loop: take the newest frame, detect, publish, repeat.
//!
//! The worker starts the camera's capture thread ([`super::capture`]) and
//! takes frames from it at the configured rate. When the source ends or
//! shutdown is requested, it stops the capture thread, counts a frame left
//! waiting as skipped and publishes the camera's `offline`.

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use super::capture::{Capture, FrameSlot};
use super::error_chain;
use super::shutdown::Shutdown;
use super::stats::CameraCounters;
use super::watchdog::Heartbeat;
use crate::config::CameraConfig;
use crate::detector::Detector;
use crate::frame_source::{Frame, FrameSource};
use crate::motion::MotionGate;
use crate::publish::payload::{DetectionsPayload, FrameInfo, InputSize};
use crate::publish::{Publisher, Topics};
use crate::thermal::RateLimit;

/// Maximum wait for the capture thread to stop once inference has stopped.
/// A source blocked in a read (a device waiting out its timeout, a stalled
/// stream) may take this long; after it the thread is left to end on its own.
const CAPTURE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Output of `--echo`: each detections payload as one line of JSON on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    Off,
    Stdout,
}

/// Everything one camera's threads need.
pub struct CameraWorker {
    pub camera: CameraConfig,
    pub source: Box<dyn FrameSource>,
    pub detector: SharedDetector,
    pub publisher: Publisher,
    pub topics: Topics,
    pub counters: Arc<CameraCounters>,
    pub heartbeat: Arc<Heartbeat>,
    pub shutdown: Shutdown,
    pub echo: Echo,
    /// The least time between two frames that `[thermal]` requires while the CPU is hot.
    pub rate_limit: Arc<RateLimit>,
}

/// The detector that the cameras use. A reload that changes the model or
/// its thresholds replaces it, and each camera takes the new one with its
/// next frame, without stopping.
#[derive(Clone)]
pub struct SharedDetector(Arc<Mutex<Detector>>);

impl SharedDetector {
    pub fn new(detector: Detector) -> SharedDetector {
        SharedDetector(Arc::new(Mutex::new(detector)))
    }

    /// Returns the current detector, a cheap clone that shares the model.
    pub fn get(&self) -> Detector {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn replace(&self, detector: Detector) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = detector;
    }
}

/// An error that repeats frame after frame, logged when it starts and when it ends.
#[derive(Default)]
struct Incident {
    count: u64,
}

impl CameraWorker {
    /// Runs until the source ends or shutdown is requested, then publishes the camera's `offline`.
    pub fn run(self) {
        let CameraWorker {
            camera,
            source,
            detector,
            publisher,
            topics,
            counters,
            heartbeat,
            shutdown,
            echo,
            rate_limit,
        } = self;
        let name = camera.name.clone();
        let status_topic = topics.camera_status(&name);
        let rate = match camera.frame_interval {
            Some(interval) => format!("one frame every {} ms at most", interval.as_millis()),
            None => "no rate limit".to_string(),
        };
        let looping = if source.is_looping() { "looping" } else { "once" };
        let handoff = if source.is_live() { "newest frame first" } else { "every frame" };
        let current = detector.get();
        info!(
            "camera {name}: started on {} ({looping}, {handoff}, {rate}) with model {} on {} (threshold {}, NMS threshold {})",
            source.description(),
            current.model().description(),
            match camera.workers {
                0 | 1 => "one inference worker".to_string(),
                n => format!("{n} inference workers"),
            },
            current.options().threshold,
            current.options().nms_threshold
        );
        counters.set_online(true);
        publisher.set_status(&status_topic, true);

        let slot = Arc::new(FrameSlot::default());
        let capture = Capture {
            camera: name.clone(),
            source,
            frame_interval: camera.frame_interval,
            slot: Arc::clone(&slot),
            counters: Arc::clone(&counters),
            heartbeat: Arc::clone(&heartbeat),
            publisher: publisher.clone(),
            topics: topics.clone(),
            shutdown: shutdown.clone(),
        };
        let (capture_done, capture_finished) = mpsc::channel::<()>();
        let capture_thread = thread::Builder::new().name(format!("capture-{name}")).spawn(move || {
            capture.run();
            // The receiver may be gone after a timed-out wait; nothing to tell then.
            let _ = capture_done.send(());
        });

        match capture_thread {
            Ok(handle) => {
                let workers = camera.workers.max(1);
                let shared = Arc::new(Dispatch {
                    slot: Arc::clone(&slot),
                    pacing: Mutex::new(Pacing {
                        next_due: Instant::now(),
                        next_ticket: 0,
                        motion: camera.motion.map(MotionGate::new),
                    }),
                    order: PublishOrder::default(),
                });
                let inference = InferenceLoop {
                    camera,
                    worker: 0,
                    rate_limit,
                    detector,
                    publisher: publisher.clone(),
                    topics,
                    counters: Arc::clone(&counters),
                    heartbeat,
                    shutdown,
                    echo,
                };
                // Workers beyond the first run on threads of their own, on
                // the same model; each inference keeps its own tract state.
                let helpers: Vec<_> = (1..workers)
                    .filter_map(|worker| {
                        let mut helper = InferenceLoop { worker, ..inference.clone() };
                        let shared = Arc::clone(&shared);
                        thread::Builder::new()
                            .name(format!("infer-{name}-{worker}"))
                            .spawn(move || helper.run(&shared))
                            .map_err(|error| {
                                error!("camera {name}: starting inference worker {worker} failed: {error}")
                            })
                            .ok()
                    })
                    .collect();
                let mut inference = inference;
                inference.run(&shared);
                for helper in helpers {
                    if helper.join().is_err() {
                        error!("camera {name}: an inference worker panicked");
                    }
                }
                if slot.close().is_some() {
                    counters.count_lost();
                }
                stop_capture(&name, handle, &capture_finished);
            }
            Err(error) => error!("camera {name}: starting its capture thread failed: {error}"),
        }

        counters.set_online(false);
        publisher.set_status(&status_topic, false);
        info!(
            "camera {name}: stopped after {} frames captured, {} processed, {} skipped, {} without motion",
            counters.captured(),
            counters.processed(),
            counters.skipped(),
            counters.without_motion()
        );
    }
}

/// Waits up to [`CAPTURE_STOP_TIMEOUT`] for the capture thread to end, then
/// joins it; a thread still blocked in its source is left to end by itself.
fn stop_capture(camera: &str, handle: thread::JoinHandle<()>, finished: &mpsc::Receiver<()>) {
    match finished.recv_timeout(CAPTURE_STOP_TIMEOUT) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            if handle.join().is_err() {
                error!("camera {camera}: capture thread panicked");
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => warn!(
            "camera {camera}: the capture thread is still waiting on its source after {} s; leaving it to end by itself",
            CAPTURE_STOP_TIMEOUT.as_secs()
        ),
    }
}

/// The state a camera's inference workers share: the frame slot, the pacing
/// and motion gate that must see frames in order, and the order of publication.
struct Dispatch {
    slot: Arc<FrameSlot>,
    pacing: Mutex<Pacing>,
    order: PublishOrder,
}

struct Pacing {
    next_due: Instant,
    /// Position of the next frame taken, which orders the publications.
    next_ticket: u64,
    motion: Option<MotionGate>,
}

/// Makes workers publish in the order they took their frames: a worker that
/// finishes frame 8 before another finishes frame 7 waits for it.
#[derive(Default)]
struct PublishOrder {
    done: Mutex<u64>,
    turn: Condvar,
}

impl PublishOrder {
    /// Runs `publish` once every earlier ticket is done, then marks `ticket` done.
    fn in_turn(&self, ticket: u64, publish: impl FnOnce()) {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        while *done < ticket {
            done = self.turn.wait(done).unwrap_or_else(PoisonError::into_inner);
        }
        publish();
        *done = ticket + 1;
        self.turn.notify_all();
    }
}

/// A detected frame's place in the order of publication. Dropping it
/// unpublished (the model failed, or tract panicked) still gives the turn to
/// the next frame, so no worker waits forever.
struct Ticket<'a> {
    order: &'a PublishOrder,
    number: u64,
    used: bool,
}

impl Ticket<'_> {
    fn publish(mut self, publish: impl FnOnce()) {
        self.used = true;
        self.order.in_turn(self.number, publish);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.order.in_turn(self.number, || {});
        }
    }
}

/// One inference worker of a camera: takes frames in turn, detects and publishes.
#[derive(Clone)]
struct InferenceLoop {
    camera: CameraConfig,
    /// Index of this worker among the camera's, for the watchdog.
    worker: usize,
    rate_limit: Arc<RateLimit>,
    detector: SharedDetector,
    publisher: Publisher,
    topics: Topics,
    counters: Arc<CameraCounters>,
    heartbeat: Arc<Heartbeat>,
    shutdown: Shutdown,
    echo: Echo,
}

impl InferenceLoop {
    fn run(&mut self, dispatch: &Dispatch) {
        let mut model_failures = Incident::default();
        loop {
            // One worker at a time waits for its turn and the next frame, so
            // the rate limit and the motion gate see frames in order.
            let mut pacing = dispatch.pacing.lock().unwrap_or_else(PoisonError::into_inner);
            if self.shutdown.wait_timeout(pacing.next_due.saturating_duration_since(Instant::now())) {
                return;
            }
            let Some(frame) = dispatch.slot.take(&self.shutdown) else {
                return;
            };
            self.counters.count_captured();
            let interval = match (self.camera.frame_interval, self.rate_limit.min_interval()) {
                (Some(own), Some(hot)) => Some(own.max(hot)),
                (own, hot) => own.or(hot),
            };
            if let Some(interval) = interval {
                pacing.next_due = Instant::now() + interval;
            }
            if let Some(gate) = &mut pacing.motion {
                let decision = gate.check(&frame.image, Instant::now());
                if !decision.runs_detector() {
                    self.counters.count_without_motion();
                    continue;
                }
                debug!("camera {}: frame {} goes to the detector: {decision:?}", self.camera.name, frame.sequence);
            }
            let ticket = Ticket { order: &dispatch.order, number: pacing.next_ticket, used: false };
            pacing.next_ticket += 1;
            drop(pacing);
            self.process(frame, ticket, &mut model_failures);
        }
    }

    fn process(&mut self, frame: Frame, ticket: Ticket<'_>, model_failures: &mut Incident) {
        let detector = self.detector.get();
        self.heartbeat.inference_started(self.worker);
        let detected = detector.detect(&frame.image);
        self.heartbeat.inference_finished(self.worker);
        let mut result = match detected {
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

        let model = detector.model();
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

        let topic = self.topics.detections(&self.camera.name);
        ticket.publish(|| {
            if self.echo == Echo::Stdout {
                self.echo_line(&json);
            }
            self.publisher.publish(&topic, json);
        });
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
