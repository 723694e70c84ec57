//! A shutdown request shared by every thread of the daemon, a reload
//! request, and the signal handlers that raise them: SIGTERM and SIGINT
//! stop the daemon, SIGHUP reloads its config.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

/// A one-way flag that threads poll between units of work and wait on
/// instead of sleeping, so that a request to stop ends every wait at once.
/// Clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    state: Arc<(Mutex<bool>, Condvar)>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Requests shutdown and wakes every waiting thread. Later calls do nothing.
    pub fn trigger(&self) {
        let (requested, changed) = &*self.state;
        *requested.lock().unwrap_or_else(PoisonError::into_inner) = true;
        changed.notify_all();
    }

    pub fn is_triggered(&self) -> bool {
        *self.state.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until shutdown is requested or `timeout` has passed, and
    /// returns whether shutdown was requested.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (requested, changed) = &*self.state;
        let mut requested = requested.lock().unwrap_or_else(PoisonError::into_inner);
        while !*requested {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            requested = changed.wait_timeout(requested, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }

    /// Waits until shutdown is requested.
    pub fn wait(&self) {
        let (requested, changed) = &*self.state;
        let mut requested = requested.lock().unwrap_or_else(PoisonError::into_inner);
        while !*requested {
            requested = changed.wait(requested).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A request to read the config file again, raised by SIGHUP. Clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct ReloadRequest {
    requested: Arc<AtomicBool>,
}

impl ReloadRequest {
    pub fn new() -> ReloadRequest {
        ReloadRequest::default()
    }

    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
    }

    /// Returns whether a reload was requested since the last call, and clears the request.
    pub fn take(&self) -> bool {
        self.requested.swap(false, Ordering::AcqRel)
    }
}

/// Triggers `shutdown` on SIGTERM or SIGINT and raises `reload` on SIGHUP,
/// from a background thread. Drop the returned guard to stop listening.
///
/// # Errors
/// The I/O error of registering the handlers or starting the thread.
pub fn listen_to_signals(shutdown: &Shutdown, reload: &ReloadRequest) -> std::io::Result<SignalListener> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let handle = signals.handle();
    let (shutdown, reload) = (shutdown.clone(), reload.clone());
    thread::Builder::new().name("signals".to_string()).spawn(move || {
        for signal in signals.forever() {
            if signal == SIGHUP {
                log::info!("received SIGHUP, reloading the config");
                reload.request();
                continue;
            }
            let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
            if shutdown.is_triggered() {
                log::warn!("received {name} again; shutdown is already under way");
            } else {
                log::info!("received {name}, shutting down");
                shutdown.trigger();
            }
        }
    })?;
    Ok(SignalListener { handle })
}

/// Keeps the signal handlers of [`Shutdown::trigger_on_signals`] installed while it lives.
#[derive(Debug)]
pub struct SignalListener {
    handle: Handle,
}

impl Drop for SignalListener {
    fn drop(&mut self) {
        self.handle.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_timeout_returns_false_without_trigger() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.wait_timeout(Duration::from_millis(10)));
    }

    #[test]
    fn trigger_wakes_waiting_thread() {
        let shutdown = Shutdown::new();
        let waiter = {
            let shutdown = shutdown.clone();
            thread::spawn(move || shutdown.wait_timeout(Duration::from_secs(60)))
        };
        shutdown.trigger();
        assert!(waiter.join().expect("waiter thread"));
        assert!(shutdown.is_triggered());
    }
}
