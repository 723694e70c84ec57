//! `edgedet run` as systemd runs it: the sd_notify messages it sends to a
//! datagram socket that the test opens (as `NOTIFY_SOCKET`), config reloads
//! on SIGHUP, and the retained `offline` statuses that SIGTERM leaves. The
//! real binary, yolov4-tiny and mosquitto on a loopback port.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::mosquitto::{Mosquitto, Subscriber};

/// Time for the daemon to load the model and become ready.
const STARTUP: Duration = Duration::from_secs(120);
/// Time for a message that is due to arrive.
const SHORT: Duration = Duration::from_secs(15);
/// `WATCHDOG_USEC` given to the daemon: it pings every half period.
const WATCHDOG_PERIOD: Duration = Duration::from_secs(1);
const CLIENT_ID: &str = "edgedet-service-test";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The service manager's end of the notification socket. A thread reads
/// it all the time, as systemd does: a datagram socket that nobody reads
/// fills up, and then the daemon's next notification blocks.
struct NotifySocket {
    path: PathBuf,
    /// The assignments of each message, in order.
    messages: mpsc::Receiver<Vec<String>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let (sender, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(length) = socket.recv(&mut buffer) {
                let message = String::from_utf8_lossy(&buffer[..length]).lines().map(str::to_string).collect();
                if sender.send(message).is_err() {
                    return;
                }
            }
        });
        NotifySocket { path, messages }
    }

    /// Receives until an assignment equal to `wanted` arrives, or `timeout`
    /// passes. Returns the assignments received by this call.
    fn wait_for(&mut self, wanted: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut received = Vec::new();
        while let Ok(message) = self.messages.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let done = message.iter().any(|line| line == wanted);
            received.extend(message);
            if done {
                break;
            }
        }
        received
    }

    /// Collects assignments for `duration`.
    fn collect(&mut self, duration: Duration) -> Vec<String> {
        self.wait_for("\0never", duration)
    }
}

/// The assignments other than watchdog pings, which arrive at any time.
fn without_pings(assignments: &[String]) -> Vec<&str> {
    assignments.iter().map(String::as_str).filter(|line| *line != "WATCHDOG=1").collect()
}

fn count(assignments: &[String], wanted: &str) -> usize {
    assignments.iter().filter(|line| *line == wanted).count()
}

/// A temporary folder with a config file, and the daemon started on it.
struct Service {
    dir: tempfile::TempDir,
    notify: NotifySocket,
    daemon: Child,
}

impl Service {
    /// Starts `edgedet run` on a config whose only camera is `camera` (a
    /// `[[cameras]]` table) and whose threshold is `threshold`.
    fn start(port: u16, threshold: f32, camera: &str) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        std::fs::copy(repo_path("tests/fixtures/images/bus.jpg"), images.join("bus.jpg")).unwrap();
        write_config(dir.path(), port, threshold, camera);
        let notify = NotifySocket::bind(dir.path());
        // systemd sets WATCHDOG_PID to the service's pid, and the daemon
        // ignores WATCHDOG_USEC without it; the shell knows the pid before
        // exec keeps it for edgedet.
        let daemon = Command::new("/bin/sh")
            .arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_edgedet"))
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("edgedet.toml"))
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", WATCHDOG_PERIOD.as_micros().to_string())
            .env("RUST_LOG", "edgedet=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("edgedet.log")).unwrap())
            .spawn()
            .unwrap();
        Service { dir, notify, daemon }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("edgedet.log")).unwrap_or_default()
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.daemon.id()).unwrap();
        // SAFETY: kill(2) with the pid of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn write_config(dir: &Path, port: u16, threshold: impl std::fmt::Display, camera: &str) {
    let config = format!(
        "[device]\nid = \"svc\"\n\n[model]\npath = {model:?}\nthreshold = {threshold}\n\n\
         [mqtt]\nport = {port}\nclient_id = \"{CLIENT_ID}\"\nstats_interval_s = 0\n\n{camera}\n",
        model = repo_path("models/yolov4-tiny/yolov4-tiny.cfg").display().to_string(),
    );
    std::fs::write(dir.join("edgedet.toml"), config).unwrap();
}

/// bus.jpg again and again, five times a second.
const LOOPING_FOLDER: &str =
    "[[cameras]]\nname = \"yard\"\nsource = \"folder\"\npath = \"images\"\nloop = true\nfps = 5";

/// Scores of the detections messages received so far after message `from`.
fn scores_after(live: &Subscriber, from: usize) -> Vec<Vec<f64>> {
    live.messages[from..]
        .iter()
        .filter(|message| message.topic == "edgedet/svc/yard/detections")
        .map(|message| {
            let json = message.json();
            json["detections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|detection| detection["score"].as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Waits until `count` detections messages have arrived after message `from`.
fn wait_for_detections(live: &mut Subscriber, from: usize, count: usize) -> Vec<Vec<f64>> {
    let deadline = Instant::now() + SHORT;
    while scores_after(live, from).len() < count && Instant::now() < deadline {
        live.wait_for(Duration::from_millis(100), |_| false);
    }
    scores_after(live, from)
}

#[test]
fn ready_without_camera_and_offline_after_sigterm() {
    let broker = Mosquitto::start();
    let camera = "[[cameras]]\nname = \"door\"\nsource = \"device\"\npath = \"/nonexistent/video99\"";
    let mut service = Service::start(broker.port(), 0.25, camera);

    let start = service.notify.wait_for("READY=1", STARTUP);
    assert!(start.contains(&"READY=1".to_string()), "no READY=1: {start:?}\nlog:\n{}", service.log());
    assert_eq!(start[0], "EXTEND_TIMEOUT_USEC=60000000", "{start:?}");
    let status = start.iter().find(|line| line.starts_with("STATUS=")).expect("a STATUS line with READY=1");
    assert_eq!(status, "STATUS=yolov4-tiny 416x416 f32 (threshold 0.25, NMS 0.45), 1 camera");

    // The camera is missing and retried: that counts as progress, so the
    // watchdog keeps being pinged, twice per period.
    let running = service.notify.collect(WATCHDOG_PERIOD * 3);
    assert!(count(&running, "WATCHDOG=1") >= 4, "{running:?}\nlog:\n{}", service.log());

    service.signal(libc::SIGTERM);
    let stopping = service.notify.wait_for("STOPPING=1", SHORT);
    assert!(stopping.contains(&"STOPPING=1".to_string()), "{stopping:?}");
    let status = service.daemon.wait().unwrap();
    assert!(status.success(), "{status}\nlog:\n{}", service.log());

    // A client that connects afterwards sees both statuses as retained `offline`.
    let mut late = Subscriber::connect(broker.port(), &["edgedet/svc/#"]);
    for topic in ["edgedet/svc/status", "edgedet/svc/door/status"] {
        let message = late.wait_for_topic(SHORT, topic).unwrap_or_else(|| panic!("nothing retained on {topic}"));
        assert!(message.retain, "{topic} is not retained");
        assert_eq!(message.text(), "offline", "{topic}");
    }
}

#[test]
fn sighup_reloads_threshold_and_rejects_bad_config() {
    let broker = Mosquitto::start();
    let mut live = Subscriber::connect(broker.port(), &["edgedet/svc/#"]);
    let mut service = Service::start(broker.port(), 0.25, LOOPING_FOLDER);
    let start = service.notify.wait_for("READY=1", STARTUP);
    assert!(start.contains(&"READY=1".to_string()), "{start:?}\nlog:\n{}", service.log());

    // At threshold 0.25, yolov4-tiny finds darknet's six objects in bus.jpg.
    let before = wait_for_detections(&mut live, 0, 2);
    assert!(before.len() >= 2, "no detections:\n{}", live.summary());
    assert!(before.iter().all(|scores| scores.len() == 6), "{before:?}");

    // A config that does not parse: the old one keeps running.
    write_config(service.dir.path(), broker.port(), "\"high\"", LOOPING_FOLDER);
    service.signal(libc::SIGHUP);
    let reload = service.notify.wait_for("READY=1", SHORT);
    assert_eq!(without_pings(&reload).first(), Some(&"RELOADING=1"), "{reload:?}");
    assert!(reload.iter().any(|line| line.starts_with("MONOTONIC_USEC=")), "{reload:?}");
    assert!(reload.contains(&"READY=1".to_string()), "{reload:?}\nlog:\n{}", service.log());
    let log = service.log();
    assert!(log.contains("keeping the running config"), "{log}");
    assert!(log.contains("model.threshold"), "the error names the key:\n{log}");
    let mark = live.messages.len();
    let still = wait_for_detections(&mut live, mark, 2);
    assert!(still.len() >= 2 && still.iter().all(|scores| scores.len() == 6), "{still:?}");

    // Threshold 0.8: three of the six remain (0.99, 0.95 and 0.86).
    write_config(service.dir.path(), broker.port(), 0.8, LOOPING_FOLDER);
    service.signal(libc::SIGHUP);
    let reload = service.notify.wait_for("READY=1", SHORT);
    assert_eq!(without_pings(&reload).first(), Some(&"RELOADING=1"), "{reload:?}");
    let status = reload.iter().find(|line| line.starts_with("STATUS=")).cloned().unwrap_or_default();
    assert_eq!(status, "STATUS=yolov4-tiny 416x416 f32 (threshold 0.8, NMS 0.45), 1 camera");
    // A frame already in inference during the reload may use the old threshold.
    let mark = live.messages.len();
    let after = wait_for_detections(&mut live, mark, 3);
    assert!(after.len() >= 3, "{after:?}");
    assert!(after[1..].iter().all(|scores| scores.len() == 3 && scores.iter().all(|score| *score >= 0.8)), "{after:?}");
    assert!(service.log().contains("cameras: 1 kept, 0 restarted, 0 added, 0 removed"), "{}", service.log());

    // One connection all along, and the camera never went offline.
    let connections =
        broker.log().lines().filter(|line| line.contains("New client connected") && line.contains(CLIENT_ID)).count();
    assert_eq!(connections, 1, "{}", broker.log());
    let statuses: Vec<String> =
        live.messages.iter().filter(|message| message.topic.ends_with("/status")).map(|m| m.text()).collect();
    assert!(statuses.iter().all(|status| status == "online"), "{statuses:?}");
}

#[test]
fn cameras_share_or_own_model_instances() {
    let broker = Mosquitto::start();
    let mut live = Subscriber::connect(broker.port(), &["edgedet/svc/+/detections"]);
    let model = repo_path("models/yolov4-tiny/yolov4-tiny.cfg").display().to_string();
    let cameras = format!(
        "[[cameras]]\nname = \"yard\"\nsource = \"folder\"\npath = \"images\"\n\n\
         [[cameras]]\nname = \"gate\"\nsource = \"folder\"\npath = \"images\"\n\
         [cameras.model]\npath = {model:?}\nthreshold = 0.8\n\n\
         [[cameras]]\nname = \"lane\"\nsource = \"folder\"\npath = \"images\"\n\
         [cameras.model]\npath = {model:?}\nsize = \"320x320\"\n"
    );
    let service = Service::start(broker.port(), 0.25, &cameras);

    let mut payloads = std::collections::BTreeMap::new();
    for camera in ["yard", "gate", "lane"] {
        let topic = format!("edgedet/svc/{camera}/detections");
        let message =
            live.wait_for_topic(STARTUP, &topic).unwrap_or_else(|| panic!("nothing on {topic}\n{}", service.log()));
        payloads.insert(camera, message.json());
    }

    // yard shares [model]; gate names the same files, so it shares the loaded
    // model with its own threshold; lane's input size makes it another model.
    assert_eq!(payloads["yard"]["model"], "yolov4-tiny 416x416 f32");
    assert_eq!(payloads["yard"]["detections"].as_array().unwrap().len(), 6, "{}", payloads["yard"]);
    assert_eq!(payloads["gate"]["model"], "yolov4-tiny 416x416 f32");
    assert_eq!(payloads["gate"]["detections"].as_array().unwrap().len(), 3, "{}", payloads["gate"]);
    assert_eq!(payloads["lane"]["model"], "yolov4-tiny 320x320 f32");
    assert_eq!(payloads["lane"]["input"]["width"], 320);
    let log = service.log();
    assert_eq!(log.matches("loaded model yolov4-tiny 416x416 f32").count(), 1, "{log}");
    assert_eq!(log.matches("loaded model yolov4-tiny 320x320 f32").count(), 1, "{log}");
}
