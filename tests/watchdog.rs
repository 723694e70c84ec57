//! The systemd watchdog follows the pipeline's progress. The daemon runs in
//! this process with a scripted source. It pings while frames flow, stops
//! pinging when the source hangs in a read (as a wedged driver would), and
//! pings again once frames flow. The test is the service manager: it sets
//! `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` for this process, so
//! this file holds a single test, and nothing else in this process reads
//! the environment meanwhile.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::mosquitto::Mosquitto;
use edgedet::config::{CameraConfig, Config};
use edgedet::daemon::{Control, Echo, RunOptions};
use edgedet::frame_source::{Frame, FrameSource, FrameSourceError};
use edgedet::preprocess::{load_image, RgbImage};

const WATCHDOG_PERIOD: Duration = Duration::from_secs(1);

/// A source that delivers bus.jpg ten times a second while its gate is
/// open, and blocks in `next_frame` while it is closed.
#[derive(Clone)]
struct GatedSource {
    open: Arc<(Mutex<bool>, Condvar)>,
    image: RgbImage,
    sequence: u64,
}

impl GatedSource {
    fn set_open(&self, open: bool) {
        let (gate, changed) = &*self.open;
        *gate.lock().unwrap() = open;
        changed.notify_all();
    }
}

impl FrameSource for GatedSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameSourceError> {
        {
            let (gate, changed) = &*self.open;
            let _open = changed.wait_while(gate.lock().unwrap(), |open| !*open).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        self.sequence += 1;
        Ok(Some(Frame {
            image: self.image.clone(),
            sequence: self.sequence,
            captured_at: SystemTime::now(),
            name: "bus.jpg".to_string(),
            decode_time: Duration::ZERO,
        }))
    }

    fn is_looping(&self) -> bool {
        true
    }

    fn is_live(&self) -> bool {
        true
    }

    fn description(&self) -> String {
        "gated test source".to_string()
    }
}

/// Receives for `duration` and counts `WATCHDOG=1` messages.
fn pings_within(socket: &UnixDatagram, duration: Duration) -> usize {
    let deadline = Instant::now() + duration;
    let mut pings = 0;
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return pings;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        if let Ok(length) = socket.recv(&mut buffer) {
            pings += String::from_utf8_lossy(&buffer[..length]).lines().filter(|line| *line == "WATCHDOG=1").count();
        }
    }
}

/// Discards the messages waiting in the socket.
fn drain(socket: &UnixDatagram) {
    socket.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 4096];
    while socket.recv(&mut buffer).is_ok() {}
    socket.set_nonblocking(false).unwrap();
}

#[test]
fn watchdog_pings_follow_pipeline_progress() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // SAFETY: this test binary holds one test, and no other thread reads or
    // writes the environment while these are set.
    unsafe {
        std::env::set_var("NOTIFY_SOCKET", &socket_path);
        std::env::set_var("WATCHDOG_USEC", WATCHDOG_PERIOD.as_micros().to_string());
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    }

    let broker = Mosquitto::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config_path = dir.path().join("edgedet.toml");
    let config = format!(
        "[device]\nid = \"wd\"\n\n[model]\npath = {model:?}\n\n[mqtt]\nport = {port}\n\n\
         [[cameras]]\nname = \"gate\"\nsource = \"image\"\npath = \"unused.jpg\"\n",
        model = root.join("models/yolov4-tiny/yolov4-tiny.cfg").display().to_string(),
        port = broker.port(),
    );
    std::fs::write(&config_path, config).unwrap();
    let config = Config::load(&config_path).unwrap();

    let source = GatedSource {
        open: Arc::new((Mutex::new(true), Condvar::new())),
        image: load_image(&root.join("tests/fixtures/images/bus.jpg")).unwrap(),
        sequence: 0,
    };
    let control = Control::default();
    let daemon = {
        let (source, control) = (source.clone(), control.clone());
        std::thread::spawn(move || {
            let open_source = move |_: &CameraConfig| -> Box<dyn FrameSource> { Box::new(source.clone()) };
            let options = RunOptions { echo: Echo::Off, exit_when_done: false };
            edgedet::daemon::run_with_sources(config, options, &control, &open_source)
        })
    };

    // Frames flow: a ping every half period.
    let mut buffer = [0u8; 4096];
    socket.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let length = socket.recv(&mut buffer).expect("the daemon's first message");
    assert!(String::from_utf8_lossy(&buffer[..length]).starts_with("EXTEND_TIMEOUT_USEC="));
    let flowing = pings_within(&socket, WATCHDOG_PERIOD * 3);
    assert!(flowing >= 4, "{flowing} pings while frames flow");

    // The source hangs: after the patience (one period) the pings stop.
    source.set_open(false);
    std::thread::sleep(WATCHDOG_PERIOD * 2);
    drain(&socket);
    let hung = pings_within(&socket, WATCHDOG_PERIOD * 2);
    assert_eq!(hung, 0, "pings while the source hangs");

    // Frames flow again: so do the pings.
    source.set_open(true);
    let resumed = pings_within(&socket, WATCHDOG_PERIOD * 3);
    assert!(resumed >= 4, "{resumed} pings after frames resumed");

    control.shutdown.trigger();
    // The capture thread is released by the open gate, so shutdown is quick.
    daemon.join().unwrap().unwrap();
}
