//! Adaptive detection rate: slow every camera down while the CPU is hot or
//! throttled, and speed it up again once it has cooled.
//!
//! A Raspberry Pi without a heatsink reaches its soft temperature limit
//! (80–85 °C) within minutes of full-load inference and then lowers its clock
//! for everything on the board. Detecting less often before that happens
//! keeps the board responsive and the detection latency steady. The
//! temperature comes from the kernel's thermal zone. On a Pi the firmware's
//! throttling flags (`get_throttled`, as `vcgencmd get_throttled` prints
//! them) count too, so under-voltage and capped clocks slow detection down
//! as heat does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::{info, warn};

/// Settings of `[thermal]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ThermalConfig {
    /// Millidegrees Celsius, as the kernel's thermal zones report them.
    pub temperature_file: PathBuf,
    /// The Pi firmware's throttling flags as a hexadecimal number; ignored when absent.
    pub throttled_file: PathBuf,
    /// Temperature at which detection slows down.
    pub hot_c: f32,
    /// Temperature below which it returns to normal; below `hot_c`, so the
    /// rate does not flap around one value.
    pub cool_c: f32,
    /// Shortest time between two frames of one camera while hot.
    pub hot_interval: Duration,
    /// Time between two readings of the sensors.
    pub poll: Duration,
}

impl Default for ThermalConfig {
    fn default() -> Self {
        ThermalConfig {
            temperature_file: PathBuf::from("/sys/class/thermal/thermal_zone0/temp"),
            throttled_file: PathBuf::from("/sys/devices/platform/soc/soc:firmware/get_throttled"),
            hot_c: 80.0,
            cool_c: 75.0,
            hot_interval: Duration::from_secs(1),
            poll: Duration::from_secs(5),
        }
    }
}

/// Flags of the Pi firmware that mean the CPU is slowed now: bit 0
/// under-voltage, bit 1 ARM frequency capped, bit 2 throttled, bit 3 soft
/// temperature limit. Bits 16–19 record that the same happened since boot and
/// are ignored, because they never clear.
const THROTTLED_NOW: u32 = 0xF;

/// One reading of the sensors.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThermalReading {
    pub temperature_c: Option<f32>,
    pub throttled: Option<u32>,
}

impl ThermalReading {
    /// Reads both files; a file that is missing or unreadable gives `None`.
    pub fn read(config: &ThermalConfig) -> ThermalReading {
        let temperature_c = read_trimmed(&config.temperature_file)
            .and_then(|text| text.parse::<f32>().ok())
            .map(|millidegrees| millidegrees / 1000.0);
        let throttled = read_trimmed(&config.throttled_file)
            .and_then(|text| u32::from_str_radix(text.trim_start_matches("0x"), 16).ok());
        ThermalReading { temperature_c, throttled }
    }

    fn throttled_now(&self) -> bool {
        self.throttled.is_some_and(|flags| flags & THROTTLED_NOW != 0)
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|text| text.trim().to_string())
}

/// The rate limit the cameras obey, and the last reading for the stats.
/// Shared between the governor, the camera workers and the stats reporter.
#[derive(Debug, Default)]
pub struct RateLimit {
    slowed: AtomicBool,
    hot_interval_ms: AtomicU64,
    /// The last temperature in hundredths of a degree, `u32::MAX` when unknown.
    temperature_centi: AtomicU32,
    throttled: AtomicU64,
    enabled: AtomicBool,
}

/// Adaptive-rate state reported in the stats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateState {
    pub slowed: bool,
    /// Shortest time between two frames of a camera while slowed.
    pub min_interval: Option<Duration>,
    pub temperature_c: Option<f32>,
    pub throttled: Option<u32>,
}

impl RateLimit {
    /// The shortest time a camera must leave between two frames now, if any.
    pub fn min_interval(&self) -> Option<Duration> {
        self.slowed.load(Ordering::Relaxed).then(|| Duration::from_millis(self.hot_interval_ms.load(Ordering::Relaxed)))
    }

    /// Returns the state for the stats, or `None` without `[thermal]`.
    pub fn state(&self) -> Option<RateState> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let centi = self.temperature_centi.load(Ordering::Relaxed);
        let throttled = self.throttled.load(Ordering::Relaxed);
        Some(RateState {
            slowed: self.slowed.load(Ordering::Relaxed),
            min_interval: self.min_interval(),
            temperature_c: (centi != u32::MAX).then(|| centi as f32 / 100.0),
            throttled: u32::try_from(throttled).ok(),
        })
    }

    /// Lifts the limit and hides it from the stats, when a reload removes `[thermal]`.
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
        self.slowed.store(false, Ordering::Relaxed);
    }

    fn record(&self, reading: ThermalReading) {
        let centi = reading.temperature_c.map_or(u32::MAX, |c| (c * 100.0).round().clamp(0.0, 1e9) as u32);
        self.temperature_centi.store(centi, Ordering::Relaxed);
        self.throttled.store(reading.throttled.map_or(u64::MAX, u64::from), Ordering::Relaxed);
    }
}

/// Reads the sensors every `poll` and sets the shared [`RateLimit`].
pub struct ThermalGovernor {
    config: ThermalConfig,
    limit: std::sync::Arc<RateLimit>,
    next_poll: Instant,
    warned_unreadable: bool,
}

impl ThermalGovernor {
    pub fn new(config: ThermalConfig, limit: std::sync::Arc<RateLimit>) -> ThermalGovernor {
        limit.hot_interval_ms.store(config.hot_interval.as_millis() as u64, Ordering::Relaxed);
        limit.enabled.store(true, Ordering::Relaxed);
        ThermalGovernor { config, limit, next_poll: Instant::now(), warned_unreadable: false }
    }

    /// Reads the sensors when a poll is due and updates the limit; logs each change once.
    pub fn tick(&mut self, now: Instant) {
        if now < self.next_poll {
            return;
        }
        self.next_poll = now + self.config.poll;
        let reading = ThermalReading::read(&self.config);
        self.apply(reading);
    }

    /// Updates the limit from one reading.
    pub fn apply(&mut self, reading: ThermalReading) {
        self.limit.record(reading);
        if reading.temperature_c.is_none() && reading.throttled.is_none() {
            if !self.warned_unreadable {
                warn!(
                    "thermal: neither {} nor {} is readable; the detection rate stays as configured",
                    self.config.temperature_file.display(),
                    self.config.throttled_file.display()
                );
                self.warned_unreadable = true;
            }
            return;
        }
        self.warned_unreadable = false;
        let slowed = self.limit.slowed.load(Ordering::Relaxed);
        let hot = reading.temperature_c.is_some_and(|t| t >= self.config.hot_c) || reading.throttled_now();
        let cool = reading.temperature_c.is_none_or(|t| t <= self.config.cool_c) && !reading.throttled_now();
        let describe = |r: &ThermalReading| {
            let temperature = r.temperature_c.map_or("unknown".to_string(), |t| format!("{t:.1} °C"));
            match r.throttled {
                Some(flags) => format!("{temperature}, throttling flags 0x{flags:x}"),
                None => temperature,
            }
        };
        if !slowed && hot {
            self.limit.slowed.store(true, Ordering::Relaxed);
            warn!(
                "thermal: CPU at {} (limit {:.1} °C): each camera detects at most once every {} ms until it cools to {:.1} °C",
                describe(&reading),
                self.config.hot_c,
                self.config.hot_interval.as_millis(),
                self.config.cool_c
            );
        } else if slowed && cool {
            self.limit.slowed.store(false, Ordering::Relaxed);
            info!("thermal: CPU cooled to {}; cameras detect at their configured rates again", describe(&reading));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn governor(dir: &Path) -> (ThermalGovernor, Arc<RateLimit>) {
        let config = ThermalConfig {
            temperature_file: dir.join("temp"),
            throttled_file: dir.join("get_throttled"),
            hot_c: 80.0,
            cool_c: 75.0,
            hot_interval: Duration::from_millis(1500),
            poll: Duration::from_secs(5),
        };
        let limit = Arc::new(RateLimit::default());
        (ThermalGovernor::new(config, Arc::clone(&limit)), limit)
    }

    #[test]
    fn heat_slows_cameras_until_the_cool_temperature() {
        let dir = tempfile::tempdir().unwrap();
        let (mut governor, limit) = governor(dir.path());
        let start = Instant::now();
        let mut at = |millidegrees: &str, seconds: u64| {
            std::fs::write(dir.path().join("temp"), millidegrees).unwrap();
            governor.tick(start + Duration::from_secs(seconds));
            limit.min_interval()
        };
        assert_eq!(at("62000\n", 0), None);
        assert_eq!(at("81500\n", 5), Some(Duration::from_millis(1500)));
        // Between the two limits the state holds.
        assert_eq!(at("78000\n", 10), Some(Duration::from_millis(1500)));
        assert_eq!(at("74900\n", 15), None);
        let state = limit.state().expect("enabled");
        assert_eq!((state.slowed, state.temperature_c, state.throttled), (false, Some(74.9), None));
    }

    #[test]
    fn readings_between_polls_are_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (mut governor, limit) = governor(dir.path());
        let start = Instant::now();
        std::fs::write(dir.path().join("temp"), "50000").unwrap();
        governor.tick(start);
        std::fs::write(dir.path().join("temp"), "90000").unwrap();
        governor.tick(start + Duration::from_secs(4));
        assert_eq!(limit.min_interval(), None);
        governor.tick(start + Duration::from_secs(5));
        assert!(limit.min_interval().is_some());
    }

    #[test]
    fn pi_throttling_flags_slow_down_at_any_temperature() {
        let dir = tempfile::tempdir().unwrap();
        let (mut governor, limit) = governor(dir.path());
        std::fs::write(dir.path().join("temp"), "60000").unwrap();
        // Throttling happened since boot only: no slowdown.
        std::fs::write(dir.path().join("get_throttled"), "0x50000").unwrap();
        governor.apply(ThermalReading::read(&governor.config));
        assert_eq!(limit.min_interval(), None);
        // Soft temperature limit active now.
        std::fs::write(dir.path().join("get_throttled"), "0x80008").unwrap();
        governor.apply(ThermalReading::read(&governor.config));
        assert!(limit.min_interval().is_some());
        assert_eq!(limit.state().unwrap().throttled, Some(0x80008));
    }

    #[test]
    fn without_readable_sensors_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut governor, limit) = governor(dir.path());
        governor.tick(Instant::now());
        assert_eq!(limit.min_interval(), None);
        let state = limit.state().expect("enabled");
        assert_eq!((state.temperature_c, state.throttled), (None, None));
    }
}
