//! Messages to the service manager through the sd_notify protocol: start-up
//! progress, readiness, reloads, shutdown and watchdog pings.
//!
//! Under systemd with `Type=notify`, `NOTIFY_SOCKET` names the socket and
//! `WATCHDOG_USEC` the watchdog period when `WatchdogSec` is set. Without
//! them (a shell, a container, tests) every call does nothing. A failed send
//! is logged once: the daemon keeps working without the service manager.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::{debug, warn};
use sd_notify::NotifyState;

use super::shutdown::Shutdown;

/// Start-up time granted at a time while the model loads. The default
/// `TimeoutStartSec` of 90 s is short for a full YOLOv4 on a Raspberry Pi 3.
pub const LOAD_EXTENSION: Duration = Duration::from_secs(60);

/// The daemon's link to the service manager.
#[derive(Debug)]
pub struct ServiceNotifier {
    enabled: bool,
    watchdog: Option<Duration>,
    failed: AtomicBool,
}

impl ServiceNotifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (with `WATCHDOG_PID`, if set,
    /// naming this process) from the environment.
    pub fn from_env() -> ServiceNotifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut usec = 0;
        let watchdog =
            (enabled && sd_notify::watchdog_enabled(false, &mut usec) && usec > 0).then(|| Duration::from_micros(usec));
        ServiceNotifier { enabled, watchdog, failed: AtomicBool::new(false) }
    }

    /// Returns whether a service manager listens.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Returns the watchdog period: without a ping for this long, systemd restarts the daemon.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Runs `work`, such as loading a model, while telling the service
    /// manager that the daemon is alive: it asks for [`LOAD_EXTENSION`] more
    /// start-up (or reload) time, and pings the watchdog if there is one,
    /// until `work` returns.
    pub fn keep_alive<T>(&self, work: impl FnOnce() -> T) -> T {
        if !self.enabled {
            return work();
        }
        let interval = match self.watchdog {
            Some(period) => (LOAD_EXTENSION / 3).min(period / 2),
            None => LOAD_EXTENSION / 3,
        };
        let done = Shutdown::new();
        std::thread::scope(|scope| {
            scope.spawn(|| loop {
                let usec = u32::try_from(LOAD_EXTENSION.as_micros()).unwrap_or(u32::MAX);
                self.send(&[NotifyState::ExtendTimeoutUsec(usec)]);
                if self.watchdog.is_some() {
                    self.send(&[NotifyState::Watchdog]);
                }
                if done.wait_timeout(interval) {
                    return;
                }
            });
            let result = work();
            done.trigger();
            result
        })
    }

    /// Start-up or a reload has finished.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload has started. systemd 253 and newer require the monotonic
    /// time with it; older ones ignore it.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(error) => {
                debug!("reading the monotonic clock for RELOADING=1: {error}");
                self.send(&[NotifyState::Reloading]);
            }
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    // NOTE: sd_notify sends on a blocking datagram socket, so a service
    // manager that stops reading its socket would stall the caller once the
    // socket's queue is full. systemd reads it continuously.
    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(error) = sd_notify::notify(false, states) {
            if !self.failed.swap(true, Ordering::Relaxed) {
                warn!("notifying the service manager failed: {error}; continuing without it");
            }
        }
    }
}
