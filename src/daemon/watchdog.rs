//! The watchdog: pings the service manager only while every camera's
//! pipeline makes progress, so that systemd restarts a daemon whose
//! inference or capture is stuck.
//!
//! Each camera has a [`Heartbeat`] that its two threads update. The capture
//! thread marks when it starts reading the source, when it hands a frame to
//! inference (waiting on inference is not its stall), when the source is
//! unavailable (with the time of the next attempt), and when it ends. The
//! inference loop marks when it starts and finishes a frame. A camera
//! stalls when a read, a retry or an inference runs past the patience: the
//! watchdog period plus two frame intervals, so that a camera limited to a
//! slow rate is not taken for stuck.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::{info, warn};

/// State of a camera's capture thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capturing {
    /// Waiting for the source's next frame since this time.
    Reading { since: Instant },
    /// Handing a frame to inference, which may make it wait.
    Handing,
    /// The source is unavailable; the next attempt is due at this time.
    Retrying { next_attempt: Instant },
    /// The source has delivered its last frame.
    Finished,
}

/// Progress marks of one camera, shared by its threads and the watchdog.
#[derive(Debug)]
pub struct Heartbeat {
    capturing: Mutex<Capturing>,
    /// Start of each inference under way, by the index of the camera's inference worker.
    inferring_since: Mutex<BTreeMap<usize, Instant>>,
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat {
            capturing: Mutex::new(Capturing::Reading { since: Instant::now() }),
            inferring_since: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Heartbeat {
    pub fn reading(&self) {
        self.set_capturing(Capturing::Reading { since: Instant::now() });
    }

    pub fn handing(&self) {
        self.set_capturing(Capturing::Handing);
    }

    /// The source is unavailable and will be tried again at `next_attempt`.
    pub fn retrying(&self, next_attempt: Instant) {
        self.set_capturing(Capturing::Retrying { next_attempt });
    }

    pub fn finished(&self) {
        self.set_capturing(Capturing::Finished);
    }

    pub fn inference_started(&self, worker: usize) {
        self.inferring_since.lock().unwrap_or_else(PoisonError::into_inner).insert(worker, Instant::now());
    }

    pub fn inference_finished(&self, worker: usize) {
        self.inferring_since.lock().unwrap_or_else(PoisonError::into_inner).remove(&worker);
    }

    fn set_capturing(&self, capturing: Capturing) {
        *self.capturing.lock().unwrap_or_else(PoisonError::into_inner) = capturing;
    }

    /// What has been stuck beyond `patience` at `now`, and since how long,
    /// or `None` while the camera progresses.
    fn stall(&self, now: Instant, patience: Duration) -> Option<(&'static str, Duration)> {
        let oldest = self.inferring_since.lock().unwrap_or_else(PoisonError::into_inner).values().min().copied();
        if let Some(since) = oldest.filter(|since| now > *since + patience) {
            return Some(("inference", now - since));
        }
        match *self.capturing.lock().unwrap_or_else(PoisonError::into_inner) {
            Capturing::Reading { since } if now > since + patience => Some(("reading its source", now - since)),
            Capturing::Retrying { next_attempt } if now > next_attempt + patience => {
                Some(("retrying its source", now - next_attempt))
            }
            _ => None,
        }
    }
}

/// One camera's data that the watchdog checks.
pub struct WatchedCamera<'a> {
    pub name: &'a str,
    pub heartbeat: &'a Heartbeat,
    pub frame_interval: Option<Duration>,
}

/// Decides, at each tick, whether to ping the service manager.
#[derive(Debug)]
pub struct Watchdog {
    period: Duration,
    next_ping: Instant,
    /// Camera named in the warning of the stall under way, if any.
    stalled: Option<String>,
}

impl Watchdog {
    /// A watchdog for the service manager's `period` (`WATCHDOG_USEC`),
    /// pinging twice per period, as sd_watchdog_enabled(3) advises.
    pub fn new(period: Duration) -> Watchdog {
        Watchdog { period, next_ping: Instant::now(), stalled: None }
    }

    /// Time between two pings.
    pub fn ping_interval(&self) -> Duration {
        self.period / 2
    }

    /// Returns whether a ping is due now and every camera progresses. Logs
    /// once when a stall starts withholding pings and once when it ends.
    pub fn should_ping<'a>(&mut self, cameras: impl IntoIterator<Item = WatchedCamera<'a>>) -> bool {
        let now = Instant::now();
        if now < self.next_ping {
            return false;
        }
        self.next_ping = now + self.ping_interval();

        let stall = cameras.into_iter().find_map(|camera| {
            let patience = self.period + camera.frame_interval.unwrap_or_default() * 2;
            camera.heartbeat.stall(now, patience).map(|(what, stalled)| (camera.name.to_string(), what, stalled))
        });
        match (stall, self.stalled.take()) {
            (Some((camera, what, stalled)), None) => {
                warn!(
                    "camera {camera}: {what} has taken {:.1} s; withholding the watchdog ping so that the service manager restarts edgedet",
                    stalled.as_secs_f64()
                );
                self.stalled = Some(camera);
                false
            }
            (Some((camera, _, _)), Some(_)) => {
                self.stalled = Some(camera);
                false
            }
            (None, Some(camera)) => {
                info!("camera {camera}: progressing again; watchdog pings resume");
                true
            }
            (None, None) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: Duration = Duration::from_secs(10);
    const LATER: Duration = Duration::from_secs(15);

    #[test]
    fn a_read_within_the_patience_is_progress() {
        let heartbeat = Heartbeat::default();
        heartbeat.reading();
        assert_eq!(heartbeat.stall(Instant::now() + Duration::from_secs(9), PATIENCE), None);
    }

    #[test]
    fn a_read_longer_than_the_patience_is_a_stall() {
        let heartbeat = Heartbeat::default();
        heartbeat.reading();
        let (what, stalled) = heartbeat.stall(Instant::now() + LATER, PATIENCE).expect("stalled");
        assert_eq!(what, "reading its source");
        assert!(stalled >= Duration::from_secs(14), "{stalled:?}");
    }

    #[test]
    fn an_inference_longer_than_the_patience_is_a_stall() {
        let heartbeat = Heartbeat::default();
        heartbeat.handing();
        heartbeat.inference_started(0);
        heartbeat.inference_started(1);
        assert_eq!(heartbeat.stall(Instant::now() + LATER, PATIENCE).map(|(what, _)| what), Some("inference"));
        heartbeat.inference_finished(1);
        assert_eq!(heartbeat.stall(Instant::now() + LATER, PATIENCE).map(|(what, _)| what), Some("inference"));
        heartbeat.inference_finished(0);
        assert_eq!(heartbeat.stall(Instant::now() + LATER, PATIENCE), None, "waiting on inference is no stall");
    }

    #[test]
    fn a_retry_is_progress_until_the_patience_after_it_is_due() {
        let heartbeat = Heartbeat::default();
        let next_attempt = Instant::now() + Duration::from_secs(30);
        heartbeat.retrying(next_attempt);
        assert_eq!(heartbeat.stall(next_attempt + PATIENCE, PATIENCE), None);
        let late = next_attempt + PATIENCE + Duration::from_secs(1);
        assert_eq!(heartbeat.stall(late, PATIENCE).map(|(what, _)| what), Some("retrying its source"));
    }

    #[test]
    fn a_finished_source_never_stalls() {
        let heartbeat = Heartbeat::default();
        heartbeat.finished();
        assert_eq!(heartbeat.stall(Instant::now() + Duration::from_secs(3600), PATIENCE), None);
    }

    #[test]
    fn one_stalled_camera_withholds_the_ping() {
        let (moving, stuck) = (Heartbeat::default(), Heartbeat::default());
        stuck.set_capturing(Capturing::Reading { since: Instant::now() - Duration::from_secs(60) });
        let mut watchdog = Watchdog::new(Duration::from_secs(2));
        let cameras = || {
            [
                WatchedCamera { name: "moving", heartbeat: &moving, frame_interval: None },
                WatchedCamera { name: "stuck", heartbeat: &stuck, frame_interval: None },
            ]
        };
        assert!(!watchdog.should_ping(cameras()));
        assert_eq!(watchdog.stalled.as_deref(), Some("stuck"));

        stuck.reading();
        watchdog.next_ping = Instant::now();
        assert!(watchdog.should_ping(cameras()));
        assert!(!watchdog.should_ping(cameras()), "the next ping is due half a period later");
    }
}
