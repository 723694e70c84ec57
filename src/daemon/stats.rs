//! Counters of each camera and the periodic stats message built from them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use crate::publish::payload::{self, CameraStats, Latency, StatsPayload, ThermalStats, PAYLOAD_VERSION};
use crate::publish::Publisher;
use crate::thermal::RateLimit;

/// Inference times kept between two stats messages. At 30 frames per second
/// this covers more than two minutes; beyond it, later frames are left out
/// of the percentiles until the next message.
const MAX_LATENCY_SAMPLES: usize = 4096;

/// Counters that a camera worker updates and the stats reporter reads.
#[derive(Debug, Default)]
pub struct CameraCounters {
    online: AtomicBool,
    captured: AtomicU64,
    processed: AtomicU64,
    skipped: AtomicU64,
    without_motion: AtomicU64,
    /// Inference milliseconds since the previous stats message.
    inference_ms: Mutex<Vec<f64>>,
}

impl CameraCounters {
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }

    pub fn count_captured(&self) {
        self.captured.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a frame that the motion gate kept from the detector.
    pub fn count_without_motion(&self) {
        self.without_motion.fetch_add(1, Ordering::Relaxed);
    }

    pub fn without_motion(&self) -> u64 {
        self.without_motion.load(Ordering::Relaxed)
    }

    /// Counts a frame that was captured and skipped before reaching the model.
    pub fn count_lost(&self) {
        self.count_captured();
        self.count_skipped();
    }

    pub fn count_processed(&self, inference_ms: f64) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.inference_ms.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() < MAX_LATENCY_SAMPLES {
            samples.push(inference_ms);
        }
    }

    pub fn captured(&self) -> u64 {
        self.captured.load(Ordering::Relaxed)
    }

    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Reads the counters and starts a new latency window.
    fn take_stats(&self) -> CameraStats {
        let samples = std::mem::take(&mut *self.inference_ms.lock().unwrap_or_else(PoisonError::into_inner));
        CameraStats {
            status: if self.online.load(Ordering::Relaxed) { payload::ONLINE } else { payload::OFFLINE }.to_string(),
            frames_captured: self.captured(),
            frames_processed: self.processed(),
            frames_skipped: self.skipped(),
            frames_without_motion: self.without_motion(),
            inference_ms: latency(samples),
        }
    }
}

/// Builds stats messages for the whole daemon. A reload may change the
/// model and the cameras it reports.
pub struct StatsReporter {
    started: Instant,
    /// Description and precision of the model.
    model: Mutex<(String, String)>,
    cameras: Mutex<Vec<(String, Arc<CameraCounters>)>>,
    publisher: Publisher,
    rate_limit: Arc<RateLimit>,
}

impl StatsReporter {
    pub fn new(model: String, precision: String, publisher: Publisher, rate_limit: Arc<RateLimit>) -> StatsReporter {
        StatsReporter {
            started: Instant::now(),
            model: Mutex::new((model, precision)),
            cameras: Mutex::default(),
            publisher,
            rate_limit,
        }
    }

    pub fn set_model(&self, model: String, precision: String) {
        *self.model.lock().unwrap_or_else(PoisonError::into_inner) = (model, precision);
    }

    pub fn set_cameras(&self, cameras: Vec<(String, Arc<CameraCounters>)>) {
        *self.cameras.lock().unwrap_or_else(PoisonError::into_inner) = cameras;
    }

    /// Builds the next stats message; each call starts a new latency window.
    pub fn report(&self) -> StatsPayload {
        let cameras: BTreeMap<String, CameraStats> = self
            .cameras
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, counters)| (name.clone(), counters.take_stats()))
            .collect();
        let (model, precision) = self.model.lock().unwrap_or_else(PoisonError::into_inner).clone();
        StatsPayload {
            version: PAYLOAD_VERSION,
            timestamp: payload::timestamp_fields(SystemTime::now()).0,
            uptime_s: self.started.elapsed().as_secs(),
            model,
            precision,
            cameras,
            mqtt: self.publisher.stats(),
            thermal: self.rate_limit.state().map(|state| ThermalStats {
                temperature_c: state.temperature_c,
                throttled: state.throttled.map(|flags| format!("0x{flags:x}")),
                slowed: state.slowed,
                min_interval_ms: state.min_interval.map(|interval| interval.as_millis() as u64),
            }),
        }
    }
}

/// Median and 95th percentile by the nearest-rank method; `None` without samples.
fn latency(mut samples: Vec<f64>) -> Option<Latency> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = |percent: f64| {
        let index = ((percent / 100.0) * samples.len() as f64).ceil() as usize;
        samples[index.clamp(1, samples.len()) - 1]
    };
    Some(Latency { p50: round_to_microseconds(rank(50.0)), p95: round_to_microseconds(rank(95.0)) })
}

fn round_to_microseconds(milliseconds: f64) -> f64 {
    (milliseconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::latency;

    #[test]
    fn latency_of_no_samples_is_none() {
        assert_eq!(latency(Vec::new()), None);
    }

    #[test]
    fn latency_uses_nearest_rank() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let latency = latency(samples).expect("samples are present");
        assert_eq!(latency.p50, 50.0);
        assert_eq!(latency.p95, 95.0);
    }

    #[test]
    fn latency_of_one_sample_is_that_sample() {
        let latency = latency(vec![12.5]).expect("one sample");
        assert_eq!(latency.p50, 12.5);
        assert_eq!(latency.p95, 12.5);
    }
}
