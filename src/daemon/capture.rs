//! The capture side of one camera: a thread that reads the frame source and
//! hands frames to the camera's inference loop.
//!
//! Capture and inference run on separate threads so that a camera is read at
//! its own pace while the model works. Between them sits a [`FrameSlot`] that
//! contains at most one frame. For a live source (a camera, a realtime stream)
//! a newer frame replaces a waiting one, so inference always takes the
//! newest frame and a slow model skips frames instead of falling behind. For
//! files and video files read as fast as they are taken, the capture thread
//! waits until the slot is free, so no frame is skipped.
//!
//! The capture thread also owns the source's availability: it publishes the
//! camera's `offline` status when the source fails, retries with capped
//! backoff, and publishes `online` when frames flow again. It does not pace
//! frames; the inference loop applies the configured rate.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::error_chain;
use super::shutdown::Shutdown;
use super::stats::CameraCounters;
use super::watchdog::Heartbeat;
use crate::frame_source::{Frame, FrameSource, FrameSourceError};
use crate::publish::{Publisher, Topics};

/// First wait before an unavailable source is read again, unless the
/// camera's frame interval is longer. The wait doubles after each failed
/// attempt, up to [`MAX_RETRY_DELAY`].
const MIN_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Maximum wait between two attempts to read an unavailable source.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// How often a thread waiting on the slot checks for shutdown. The slot has
/// its own condition variable, so shutdown cannot wake it directly.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// Handoff policy of the capture thread when the previous frame is still
/// waiting in the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// Wait until the previous frame is taken: nothing is skipped.
    Every,
    /// Replace the previous frame, which counts as skipped.
    Newest,
}

/// Outcome of [`FrameSlot::put`] for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Put {
    Stored,
    /// Stored in place of a frame that was never taken.
    Replaced,
    /// Dropped, because the inference loop has stopped or shutdown was requested.
    Closed,
}

/// At most one frame on its way from the capture thread to inference.
#[derive(Debug, Default)]
pub struct FrameSlot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    frame: Option<Frame>,
    /// The source has delivered its last frame.
    finished: bool,
    /// The inference loop takes no more frames.
    closed: bool,
}

impl FrameSlot {
    fn put(&self, frame: Frame, handoff: Handoff, shutdown: &Shutdown) -> Put {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.closed || shutdown.is_triggered() {
                return Put::Closed;
            }
            if state.frame.is_none() {
                state.frame = Some(frame);
                self.changed.notify_all();
                return Put::Stored;
            }
            if handoff == Handoff::Newest {
                state.frame = Some(frame);
                self.changed.notify_all();
                return Put::Replaced;
            }
            state = self.changed.wait_timeout(state, SHUTDOWN_POLL).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Marks the source as finished: [`FrameSlot::take`] returns `None` once
    /// the last frame has been taken.
    fn finish(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).finished = true;
        self.changed.notify_all();
    }

    /// Waits for the next frame. Returns `None` when the source has finished
    /// and its last frame was taken, or when shutdown is requested.
    pub fn take(&self, shutdown: &Shutdown) -> Option<Frame> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if shutdown.is_triggered() {
                return None;
            }
            if let Some(frame) = state.frame.take() {
                self.changed.notify_all();
                return Some(frame);
            }
            if state.finished {
                return None;
            }
            state = self.changed.wait_timeout(state, SHUTDOWN_POLL).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Stops taking frames: a waiting capture thread returns, and a frame
    /// still in the slot is dropped and returned so it can be counted.
    pub fn close(&self) -> Option<Frame> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.closed = true;
        self.changed.notify_all();
        state.frame.take()
    }
}

/// One camera's capture thread.
pub struct Capture {
    pub camera: String,
    pub source: Box<dyn FrameSource>,
    /// Shortest wait before retrying: the camera's frame interval, if set.
    pub frame_interval: Option<Duration>,
    pub slot: Arc<FrameSlot>,
    pub counters: Arc<CameraCounters>,
    pub heartbeat: Arc<Heartbeat>,
    pub publisher: Publisher,
    pub topics: Topics,
    pub shutdown: Shutdown,
}

/// An error that repeats call after call, logged when it starts and when it ends.
#[derive(Default)]
struct Incident {
    count: u64,
}

impl Capture {
    /// Reads frames until the source ends, the slot is closed or shutdown is
    /// requested. The slot is marked finished when the source ends.
    pub fn run(mut self) {
        let handoff = if self.source.is_live() { Handoff::Newest } else { Handoff::Every };
        let mut unavailable = Incident::default();
        loop {
            if self.shutdown.is_triggered() {
                return;
            }
            self.heartbeat.reading();
            match self.source.next_frame() {
                Ok(Some(frame)) => {
                    self.end_unavailable(&mut unavailable);
                    self.heartbeat.handing();
                    // A frame counts as captured once it leaves the slot:
                    // taken by inference, replaced, or dropped at the end.
                    // So captured is processed plus skipped, but for the
                    // frame in inference.
                    match self.slot.put(frame, handoff, &self.shutdown) {
                        Put::Stored => {}
                        Put::Replaced => self.counters.count_lost(),
                        Put::Closed => {
                            self.counters.count_lost();
                            return;
                        }
                    }
                }
                Ok(None) => {
                    info!("camera {}: source finished", self.camera);
                    self.heartbeat.finished();
                    self.slot.finish();
                    return;
                }
                Err(error) if error.is_skipped_frame() => {
                    self.counters.count_lost();
                    warn!("camera {}: {}", self.camera, error_chain(&error));
                }
                Err(error) => {
                    if !self.source.is_looping() && !error.is_transient() {
                        warn!("camera {}: {}; the source does not loop, so it ends", self.camera, error_chain(&error));
                        self.heartbeat.finished();
                        self.slot.finish();
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
        let first_delay = self.frame_interval.unwrap_or_default().max(MIN_RETRY_DELAY);
        let max_delay = MAX_RETRY_DELAY.max(first_delay);
        let doublings = u32::try_from(unavailable.count).unwrap_or(u32::MAX).min(16);
        let delay = first_delay.saturating_mul(1 << doublings).min(max_delay);
        if unavailable.count == 0 {
            self.counters.set_online(false);
            self.publisher.set_status(&self.topics.camera_status(&self.camera), false);
            warn!(
                "camera {}: {}; offline, trying again in {} ms, then at growing intervals up to {} s",
                self.camera,
                error_chain(error),
                delay.as_millis(),
                max_delay.as_secs()
            );
        } else {
            debug!(
                "camera {}: attempt {} failed: {}; trying again in {} ms",
                self.camera,
                unavailable.count,
                error_chain(error),
                delay.as_millis()
            );
        }
        unavailable.count += 1;
        self.heartbeat.retrying(Instant::now() + delay);
        self.shutdown.wait_timeout(delay)
    }

    fn end_unavailable(&self, unavailable: &mut Incident) {
        if unavailable.count > 0 {
            info!("camera {}: source available again after {} failed attempts", self.camera, unavailable.count);
            unavailable.count = 0;
            self.counters.set_online(true);
            self.publisher.set_status(&self.topics.camera_status(&self.camera), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::SystemTime;

    use super::*;
    use crate::preprocess::RgbImage;

    fn frame(sequence: u64) -> Frame {
        Frame {
            image: RgbImage::new(2, 2),
            sequence,
            captured_at: SystemTime::UNIX_EPOCH,
            name: format!("frame {sequence}"),
            decode_time: Duration::ZERO,
        }
    }

    #[test]
    fn newest_handoff_replaces_the_waiting_frame() {
        let slot = FrameSlot::default();
        let shutdown = Shutdown::new();
        assert_eq!(slot.put(frame(0), Handoff::Newest, &shutdown), Put::Stored);
        assert_eq!(slot.put(frame(1), Handoff::Newest, &shutdown), Put::Replaced);
        assert_eq!(slot.put(frame(2), Handoff::Newest, &shutdown), Put::Replaced);
        assert_eq!(slot.take(&shutdown).map(|frame| frame.sequence), Some(2));
    }

    #[test]
    fn every_handoff_waits_until_the_frame_is_taken() {
        let slot = Arc::new(FrameSlot::default());
        let shutdown = Shutdown::new();
        let producer = {
            let (slot, shutdown) = (Arc::clone(&slot), shutdown.clone());
            thread::spawn(move || {
                (0..5).map(|sequence| slot.put(frame(sequence), Handoff::Every, &shutdown)).collect::<Vec<_>>()
            })
        };
        let taken: Vec<u64> = (0..5).filter_map(|_| slot.take(&shutdown)).map(|frame| frame.sequence).collect();
        assert_eq!(taken, [0, 1, 2, 3, 4]);
        assert_eq!(producer.join().unwrap(), vec![Put::Stored; 5]);
    }

    #[test]
    fn take_drains_the_last_frame_before_reporting_the_end() {
        let slot = FrameSlot::default();
        let shutdown = Shutdown::new();
        slot.put(frame(7), Handoff::Every, &shutdown);
        slot.finish();
        assert_eq!(slot.take(&shutdown).map(|frame| frame.sequence), Some(7));
        assert!(slot.take(&shutdown).is_none());
    }

    #[test]
    fn close_releases_a_waiting_producer_and_returns_the_frame() {
        let slot = Arc::new(FrameSlot::default());
        let shutdown = Shutdown::new();
        slot.put(frame(0), Handoff::Every, &shutdown);
        let producer = {
            let (slot, shutdown) = (Arc::clone(&slot), shutdown.clone());
            thread::spawn(move || slot.put(frame(1), Handoff::Every, &shutdown))
        };
        thread::sleep(Duration::from_millis(100));
        assert_eq!(slot.close().map(|frame| frame.sequence), Some(0));
        assert_eq!(producer.join().unwrap(), Put::Closed);
    }

    #[test]
    fn shutdown_ends_a_waiting_take() {
        let slot = Arc::new(FrameSlot::default());
        let shutdown = Shutdown::new();
        let consumer = {
            let (slot, shutdown) = (Arc::clone(&slot), shutdown.clone());
            thread::spawn(move || slot.take(&shutdown).is_none())
        };
        thread::sleep(Duration::from_millis(100));
        shutdown.trigger();
        assert!(consumer.join().unwrap());
    }
}
