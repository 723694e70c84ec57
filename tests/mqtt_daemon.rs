//! The `edgedet run` daemon end to end: the real binary, the real
//! yolov4-tiny model and a real broker (mosquitto, or the embedded one) on
//! loopback ports chosen per test.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::mosquitto::{free_port, Message, Mosquitto, Subscriber};
use serde_json::Value;

/// Time for the daemon to load the model and process its first frames.
const STARTUP: Duration = Duration::from_secs(120);
/// Time for a message that is due to arrive.
const SHORT: Duration = Duration::from_secs(15);

const DEVICE: &str = "testdev";
const CAMERA: &str = "front";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn topic(suffix: &str) -> String {
    format!("edgedet/{DEVICE}/{suffix}")
}

/// A temporary folder with a config and a folder of sample images.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// Copies bus.jpg and zidane.jpg into `images/` and writes a config for
    /// the broker port, with `camera_extra` and `mqtt_extra` appended to
    /// their tables.
    fn new(port: u16, camera_extra: &str, mqtt_extra: &str) -> Setup {
        let dir = tempfile::tempdir().expect("creating a temporary folder");
        let images = dir.path().join("images");
        std::fs::create_dir(&images).expect("creating the images folder");
        for name in ["bus.jpg", "zidane.jpg"] {
            let from = repo_path("models/yolov4-tiny/samples").join(name);
            std::fs::copy(&from, images.join(name)).unwrap_or_else(|error| {
                panic!(
                    "copying {}: {error} (models/fetch-yolov4-tiny.sh downloads the model and samples)",
                    from.display()
                )
            });
        }

        let config = format!(
            r#"[device]
id = "{DEVICE}"

[model]
path = "{model}"

[mqtt]
port = {port}
stats_interval_s = 1
keep_alive_s = 5
{mqtt_extra}

[[cameras]]
name = "{CAMERA}"
source = "folder"
path = "images"
{camera_extra}
"#,
            model = repo_path("models/yolov4-tiny/yolov4-tiny.cfg").display(),
        );
        std::fs::write(dir.path().join("edgedet.toml"), config).expect("writing the config");
        Setup { dir }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("edgedet.toml")
    }
}

/// A running `edgedet run`, killed when dropped. Its stdout lines arrive on
/// a channel; its stderr (the log) goes to a file for assertion messages.
struct Daemon {
    child: Child,
    stdout_lines: mpsc::Receiver<String>,
    log_path: PathBuf,
}

impl Daemon {
    fn start(setup: &Setup, extra_args: &[&str]) -> Daemon {
        let log_path = setup.dir.path().join("edgedet.log");
        let log = std::fs::File::create(&log_path).expect("creating the daemon log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgedet"))
            .arg("run")
            .arg("--config")
            .arg(setup.config_path())
            .args(extra_args)
            .env("RUST_LOG", "edgedet=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting edgedet run");

        let stdout = child.stdout.take().expect("stdout is piped");
        let (line_tx, stdout_lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line_tx.send(line).is_err() {
                    return;
                }
            }
        });
        Daemon { child, stdout_lines, log_path }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit; `None` when it is still running after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the daemon") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn next_stdout_line(&self, timeout: Duration) -> Option<String> {
        self.stdout_lines.recv_timeout(timeout).ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_detections_of(message: &Message, image: &str) -> bool {
    message.topic == topic(&format!("{CAMERA}/detections")) && message.json()["image"] == image
}

// ---- comparison with darknet ------------------------------------------------

/// Reads the box of a detection as [x, y, w, h].
fn box_of(detection: &Value) -> [f64; 4] {
    let field = |name: &str| detection["box"][name].as_f64().unwrap_or_else(|| panic!("box.{name} in {detection}"));
    [field("x"), field("y"), field("w"), field("h")]
}

fn reference_box(detection: &Value) -> [f64; 4] {
    let values: Vec<f64> = detection["box_xywh"]
        .as_array()
        .expect("box_xywh is an array")
        .iter()
        .map(|value| value.as_f64().expect("box_xywh holds numbers"))
        .collect();
    [values[0], values[1], values[2], values[3]]
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let overlap_w = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let overlap_h = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let intersection = overlap_w * overlap_h;
    intersection / (a[2] * a[3] + b[2] * b[3] - intersection)
}

/// Reference detections at or above this score must be found; below it,
/// small numeric differences may push a box across the 0.25 threshold.
const REFERENCE_MIN_SCORE: f64 = 0.30;
const SCORE_TOLERANCE: f64 = 0.03;
const MIN_IOU: f64 = 0.9;

fn matches(ours: &Value, reference: &Value) -> bool {
    ours["label"] == reference["label"]
        && (ours["score"].as_f64().unwrap_or(-1.0) - reference["score"].as_f64().unwrap_or(2.0)).abs()
            <= SCORE_TOLERANCE
        && iou(box_of(ours), reference_box(reference)) >= MIN_IOU
}

/// Checks detections against darknet's for the same image, both ways:
/// every confident reference detection is found, and every confident
/// detection of ours is in the reference.
fn assert_matches_darknet(detections: &[Value], reference_file: &str) {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path(reference_file)).expect("reading the darknet reference"),
    )
    .expect("the darknet reference is JSON");
    let expected = reference["detections"].as_array().expect("reference detections");

    for wanted in expected.iter().filter(|d| d["score"].as_f64().unwrap_or(0.0) >= REFERENCE_MIN_SCORE) {
        assert!(
            detections.iter().any(|ours| matches(ours, wanted)),
            "darknet's {wanted} has no match among {detections:#?}"
        );
    }
    for ours in
        detections.iter().filter(|d| d["score"].as_f64().unwrap_or(0.0) >= REFERENCE_MIN_SCORE + SCORE_TOLERANCE)
    {
        assert!(expected.iter().any(|wanted| matches(ours, wanted)), "{ours} is not among darknet's {expected:#?}");
    }
}

// ---- tests ----------------------------------------------------------------

#[test]
fn daemon_publishes_detections_statuses_and_stats() {
    let broker = Mosquitto::start();
    let setup = Setup::new(broker.port(), "loop = true\ninterval_ms = 300", "");
    let mut live = Subscriber::connect(broker.port(), &["edgedet/#"]);
    let daemon = Daemon::start(&setup, &[]);

    let bus = live
        .wait_for(STARTUP, |message| is_detections_of(message, "bus.jpg"))
        .unwrap_or_else(|| panic!("no detections for bus.jpg; received:\n{}\nlog:\n{}", live.summary(), daemon.log()));
    let payload = bus.json();
    assert_eq!(payload["version"], 1);
    assert_eq!(payload["camera"], CAMERA);
    assert_eq!(payload["image"], "bus.jpg");
    assert_eq!(payload["model"], "yolov4-tiny 416x416 f32");
    assert_eq!(payload["input"]["width"], 416);
    assert_eq!(payload["input"]["height"], 416);
    assert_eq!(payload["width"], 810);
    assert_eq!(payload["height"], 1080);
    assert!(payload["frame"].is_u64(), "{payload}");
    assert!(payload["timestamp_ms"].as_u64().unwrap_or(0) > 1_600_000_000_000, "{payload}");
    let timestamp = payload["timestamp"].as_str().expect("timestamp is a string");
    assert!(timestamp.ends_with('Z'), "{timestamp}");
    assert_eq!(timestamp.len(), "2024-05-01T12:00:00.123Z".len(), "{timestamp}");
    for stage in ["decode", "preprocess", "inference", "postprocess"] {
        assert!(payload["timings_ms"][stage].as_f64().is_some_and(|ms| ms >= 0.0), "timings_ms.{stage} in {payload}");
    }
    assert!(payload["timings_ms"]["inference"].as_f64().unwrap_or(0.0) > 0.0, "{payload}");
    assert_matches_darknet(
        payload["detections"].as_array().expect("detections is an array"),
        "tests/fixtures/reference/bus.json",
    );

    let zidane = live
        .wait_for(SHORT, |message| is_detections_of(message, "zidane.jpg"))
        .unwrap_or_else(|| panic!("no detections for zidane.jpg; received:\n{}", live.summary()));
    assert_eq!(zidane.json()["width"], 1280);
    assert_eq!(zidane.json()["height"], 720);

    let stats = live
        .wait_for(SHORT, |message| {
            message.topic == topic("stats") && message.json()["cameras"][CAMERA]["frames_processed"].as_u64() >= Some(2)
        })
        .unwrap_or_else(|| panic!("no stats message with 2 processed frames; received:\n{}", live.summary()));
    let stats = stats.json();
    assert_eq!(stats["version"], 1);
    assert_eq!(stats["model"], "yolov4-tiny 416x416 f32");
    assert_eq!(stats["precision"], "f32");
    assert!(stats["uptime_s"].is_u64(), "{stats}");
    let camera = &stats["cameras"][CAMERA];
    assert_eq!(camera["status"], "online");
    assert!(camera["frames_captured"].as_u64() >= Some(2), "{stats}");
    assert_eq!(camera["frames_skipped"], 0);
    assert!(stats["mqtt"]["published"].as_u64() >= Some(3), "{stats}");
    assert_eq!(stats["mqtt"]["dropped"], 0);

    // A client that connects now gets the statuses as retained messages.
    let mut late = Subscriber::connect(broker.port(), &[&topic("status"), &topic(&format!("{CAMERA}/status"))]);
    let device_status = late.wait_for_topic(SHORT, &topic("status")).expect("a retained device status");
    assert_eq!(device_status.text(), "online");
    assert!(device_status.retain, "the device status is retained");
    let camera_status =
        late.wait_for_topic(SHORT, &topic(&format!("{CAMERA}/status"))).expect("a retained camera status");
    assert_eq!(camera_status.text(), "online");
    assert!(camera_status.retain, "the camera status is retained");

    // SIGKILL gives no chance to say goodbye: the broker publishes the last will.
    daemon.signal("KILL");
    let will =
        live.wait_for(SHORT, |message| message.topic == topic("status") && message.text() == "offline").unwrap_or_else(
            || panic!("no offline after SIGKILL; received:\n{}\nmosquitto:\n{}", live.summary(), broker.log()),
        );
    assert_eq!(will.text(), "offline");
    let mut after = Subscriber::connect(broker.port(), &[&topic("status")]);
    let retained = after.wait_for_topic(SHORT, &topic("status")).expect("a retained device status after SIGKILL");
    assert_eq!(retained.text(), "offline");
    assert!(retained.retain, "the last will is retained");
}

#[test]
fn daemon_waits_for_broker_that_starts_later() {
    let port = free_port();
    let setup = Setup::new(port, "loop = true\ninterval_ms = 200", "reconnect_max_s = 1\nmax_queued = 2");
    let mut daemon = Daemon::start(&setup, &["--echo"]);

    // Without a broker, the daemon keeps detecting: --echo shows the frames.
    let first = daemon
        .next_stdout_line(STARTUP)
        .unwrap_or_else(|| panic!("no detections on stdout without a broker; log:\n{}", daemon.log()));
    let first: Value = serde_json::from_str(&first).expect("echoed detections are JSON");
    assert_eq!(first["camera"], CAMERA);
    // Five frames overflow the queue of 2, so some must be dropped.
    for _ in 0..4 {
        let line = daemon.next_stdout_line(SHORT).expect("more frames without a broker");
        assert!(serde_json::from_str::<Value>(&line).is_ok(), "{line}");
    }
    assert_eq!(daemon.wait_exit(Duration::ZERO), None, "the daemon exited without a broker:\n{}", daemon.log());

    let broker = Mosquitto::start_on(port);
    let mut subscriber = Subscriber::connect(port, &["edgedet/#"]);
    subscriber
        .wait_for(SHORT, |message| message.topic == topic(&format!("{CAMERA}/detections")))
        .unwrap_or_else(|| panic!("no detections after the broker started; received:\n{}", subscriber.summary()));

    // The statuses set during the outage were published on connecting.
    let mut late = Subscriber::connect(port, &[&topic("status"), &topic(&format!("{CAMERA}/status"))]);
    let device = late.wait_for_topic(SHORT, &topic("status")).expect("a retained device status");
    assert_eq!(device.text(), "online");
    assert!(device.retain, "the device status is retained");
    let camera = late.wait_for_topic(SHORT, &topic(&format!("{CAMERA}/status"))).expect("a retained camera status");
    assert_eq!(camera.text(), "online");

    // Stats queued during the outage were built before the drops, so wait for a later one.
    subscriber
        .wait_for(SHORT, |message| {
            message.topic == topic("stats") && message.json()["mqtt"]["dropped"].as_u64() > Some(0)
        })
        .unwrap_or_else(|| {
            panic!("no stats counting drops; received:\n{}\nmosquitto:\n{}", subscriber.summary(), broker.log())
        });
}

#[test]
fn sigterm_publishes_offline_and_exits_zero() {
    let broker = Mosquitto::start();
    let setup = Setup::new(broker.port(), "loop = true\ninterval_ms = 200", "");
    let mut live = Subscriber::connect(broker.port(), &["edgedet/#"]);
    let mut daemon = Daemon::start(&setup, &[]);

    live.wait_for(STARTUP, |message| message.topic == topic(&format!("{CAMERA}/detections")))
        .unwrap_or_else(|| panic!("no detections; received:\n{}\nlog:\n{}", live.summary(), daemon.log()));

    daemon.signal("TERM");
    let status =
        daemon.wait_exit(SHORT).unwrap_or_else(|| panic!("still running after SIGTERM; log:\n{}", daemon.log()));
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("disconnected from MQTT broker"), "{log}");

    let mut after = Subscriber::connect(broker.port(), &[&topic("status"), &topic(&format!("{CAMERA}/status"))]);
    let device = after.wait_for_topic(SHORT, &topic("status")).expect("a retained device status");
    assert_eq!(device.text(), "offline");
    let camera = after.wait_for_topic(SHORT, &topic(&format!("{CAMERA}/status"))).expect("a retained camera status");
    assert_eq!(camera.text(), "offline");
}

#[test]
fn several_workers_publish_every_frame_in_order() {
    let broker = Mosquitto::start();
    let setup = Setup::new(broker.port(), "workers = 3", "");
    // Ten frames alternating the two photos, so that three workers overlap.
    let images = setup.dir.path().join("images");
    let names: Vec<String> = (0..10).map(|i| format!("{i:02}.jpg")).collect();
    for (i, name) in names.iter().enumerate() {
        let photo = if i % 2 == 0 { "bus.jpg" } else { "zidane.jpg" };
        std::fs::copy(images.join(photo), images.join(name)).unwrap();
    }
    std::fs::remove_file(images.join("bus.jpg")).unwrap();
    std::fs::remove_file(images.join("zidane.jpg")).unwrap();
    let mut live = Subscriber::connect(broker.port(), &["edgedet/#"]);
    let mut daemon = Daemon::start(&setup, &["--exit-when-done", "--echo"]);

    let status = daemon.wait_exit(STARTUP).unwrap_or_else(|| panic!("did not exit when done; log:\n{}", daemon.log()));
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(daemon.log().contains("on 3 inference workers"), "log:\n{}", daemon.log());

    let lines: Vec<Value> = std::iter::from_fn(|| daemon.next_stdout_line(Duration::from_secs(1)))
        .map(|line| serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let echoed: Vec<&str> = lines.iter().map(|line| line["image"].as_str().unwrap_or("?")).collect();
    assert_eq!(echoed, names);
    let frames: Vec<u64> = lines.iter().map(|line| line["frame"].as_u64().unwrap_or(u64::MAX)).collect();
    assert_eq!(frames, (0..10).collect::<Vec<u64>>());
    // The same photo gives the same detections, whichever worker ran it.
    assert_eq!(lines[0]["detections"], lines[8]["detections"]);
    assert_eq!(lines[1]["detections"], lines[9]["detections"]);

    live.wait_for(SHORT, |message| is_detections_of(message, "09.jpg"))
        .unwrap_or_else(|| panic!("no detections for 09.jpg; received:\n{}", live.summary()));
    let published: Vec<String> = live
        .messages
        .iter()
        .filter(|message| message.topic == topic(&format!("{CAMERA}/detections")))
        .map(|message| message.json()["image"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(published, names);
}

#[test]
fn exit_when_done_processes_folder_once_and_exits() {
    let broker = Mosquitto::start();
    let setup = Setup::new(broker.port(), "", "");
    let mut live = Subscriber::connect(broker.port(), &["edgedet/#"]);
    let mut daemon = Daemon::start(&setup, &["--exit-when-done", "--echo"]);

    let status = daemon.wait_exit(STARTUP).unwrap_or_else(|| panic!("did not exit when done; log:\n{}", daemon.log()));
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());

    let lines: Vec<Value> = std::iter::from_fn(|| daemon.next_stdout_line(Duration::from_secs(1)))
        .map(|line| serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let images: Vec<&str> = lines.iter().map(|line| line["image"].as_str().unwrap_or("?")).collect();
    assert_eq!(images, ["bus.jpg", "zidane.jpg"]);

    for image in ["bus.jpg", "zidane.jpg"] {
        live.wait_for(SHORT, |message| is_detections_of(message, image))
            .unwrap_or_else(|| panic!("no detections for {image}; received:\n{}", live.summary()));
    }
    let last_stats = live
        .wait_for(SHORT, |message| {
            message.topic == topic("stats") && message.json()["cameras"][CAMERA]["frames_processed"] == 2
        })
        .unwrap_or_else(|| panic!("no final stats; received:\n{}", live.summary()));
    assert_eq!(last_stats.json()["cameras"][CAMERA]["frames_captured"], 2);
    live.wait_for(SHORT, |message| message.topic == topic(&format!("{CAMERA}/status")) && message.text() == "offline")
        .unwrap_or_else(|| panic!("no camera offline; received:\n{}", live.summary()));
    live.wait_for(SHORT, |message| message.topic == topic("status") && message.text() == "offline")
        .unwrap_or_else(|| panic!("no device offline; received:\n{}", live.summary()));
}

#[test]
#[cfg_attr(not(feature = "embedded-broker"), ignore = "built without the embedded-broker feature")]
fn embedded_broker_serves_detections_and_statuses() {
    let port = free_port();
    let setup = Setup::new(port, "loop = true\ninterval_ms = 200", "embedded_broker = true");
    let mut daemon = Daemon::start(&setup, &[]);

    // The broker starts after the model has loaded; wait until it listens.
    let deadline = Instant::now() + STARTUP;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the embedded broker never listened on {port}; log:\n{}", daemon.log());
        assert_eq!(daemon.wait_exit(Duration::ZERO), None, "the daemon exited; log:\n{}", daemon.log());
        thread::sleep(Duration::from_millis(100));
    }

    let mut subscriber = Subscriber::connect(port, &["edgedet/#"]);
    let detections = subscriber
        .wait_for(STARTUP, |message| is_detections_of(message, "bus.jpg"))
        .unwrap_or_else(|| panic!("no detections; received:\n{}\nlog:\n{}", subscriber.summary(), daemon.log()));
    assert_eq!(detections.json()["width"], 810);

    let mut late = Subscriber::connect(port, &[&topic("status")]);
    let status = late.wait_for_topic(SHORT, &topic("status")).expect("a retained device status");
    assert_eq!(status.text(), "online");
    assert!(status.retain, "the embedded broker keeps retained messages");

    daemon.signal("TERM");
    let exit = daemon.wait_exit(SHORT).unwrap_or_else(|| panic!("still running after SIGTERM; log:\n{}", daemon.log()));
    assert_eq!(exit.code(), Some(0), "log:\n{}", daemon.log());
}

#[test]
fn motion_gate_skips_a_still_scene_and_detects_the_dog_that_enters() {
    let broker = Mosquitto::start();
    let setup = Setup::new(broker.port(), "[cameras.motion]\nrefresh_s = 3600", "");
    // Five frames of dog.jpg with the dog painted over, then five of the real photo.
    let images = setup.dir.path().join("images");
    for name in ["bus.jpg", "zidane.jpg"] {
        std::fs::remove_file(images.join(name)).expect("removing the default frames");
    }
    let photo = image::open(repo_path("tests/fixtures/images/dog.jpg")).expect("reading dog.jpg").to_rgb8();
    let mut empty = photo.clone();
    for y in 180..560 {
        for x in 110..340 {
            empty.put_pixel(x, y, image::Rgb([128, 128, 128]));
        }
    }
    for index in 0..10 {
        let frame = if index < 5 { &empty } else { &photo };
        frame.save(images.join(format!("{index:03}.png"))).expect("writing a frame");
    }

    let mut live = Subscriber::connect(broker.port(), &["edgedet/#"]);
    let mut daemon = Daemon::start(&setup, &["--exit-when-done", "--echo"]);
    let status = daemon.wait_exit(STARTUP).unwrap_or_else(|| panic!("did not exit when done; log:\n{}", daemon.log()));
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());

    let lines: Vec<Value> = std::iter::from_fn(|| daemon.next_stdout_line(Duration::from_secs(1)))
        .map(|line| serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let detected: Vec<&str> = lines.iter().map(|line| line["image"].as_str().unwrap_or("?")).collect();
    // The first frame builds the background and runs; the still frames after it do not.
    assert_eq!(detected.first(), Some(&"000.png"), "detected frames: {detected:?}");
    assert_eq!(detected.get(1), Some(&"005.png"), "detected frames: {detected:?}");
    let labels = |line: &Value| -> Vec<String> {
        line["detections"].as_array().expect("detections").iter().map(|d| d["label"].to_string()).collect()
    };
    assert!(!labels(&lines[0]).contains(&"\"dog\"".to_string()), "{}", lines[0]);
    assert!(labels(&lines[1]).contains(&"\"dog\"".to_string()), "{}", lines[1]);

    let gated = 10 - detected.len() as u64;
    assert!(gated >= 4, "detected frames: {detected:?}");
    // A periodic stats message can catch the tenth frame captured but not yet
    // run, so wait for the final one, which accounts for every captured frame.
    let settled = |m: &Message| {
        if m.topic != topic("stats") {
            return false;
        }
        let camera = &m.json()["cameras"][CAMERA];
        let count = |field: &str| camera[field].as_u64().unwrap_or(0);
        count("frames_captured") == 10
            && count("frames_processed") + count("frames_without_motion") + count("frames_skipped") == 10
    };
    let stats =
        live.wait_for(SHORT, settled).unwrap_or_else(|| panic!("no final stats; received:\n{}", live.summary()));
    let camera = &stats.json()["cameras"][CAMERA];
    assert_eq!(camera["frames_processed"], detected.len() as u64, "{camera}");
    assert_eq!(camera["frames_without_motion"], gated, "{camera}");
    assert_eq!(camera["frames_skipped"], 0, "{camera}");
}

#[test]
fn a_hot_cpu_slows_detection_and_stats_say_so_until_it_cools() {
    let broker = Mosquitto::start();
    let thermal = "\n[thermal]\ntemperature_file = \"temp\"\nthrottled_file = \"no-such-file\"\nhot_c = 80.0\ncool_c = 75.0\nhot_interval_ms = 1500\npoll_s = 1";
    let setup = Setup::new(broker.port(), "loop = true", thermal);
    let sensor = setup.dir.path().join("temp");
    std::fs::write(&sensor, "55000\n").unwrap();
    let mut live = Subscriber::connect(broker.port(), &["edgedet/#"]);
    let daemon = Daemon::start(&setup, &[]);
    let detections = topic(&format!("{CAMERA}/detections"));
    let thermal_of = |m: &Message| m.json()["thermal"].clone();

    let cool = live
        .wait_for(STARTUP, |m| m.topic == topic("stats") && thermal_of(m)["temperature_c"] == 55.0)
        .unwrap_or_else(|| panic!("no stats with the temperature; log:\n{}", daemon.log()));
    assert_eq!(
        thermal_of(&cool),
        serde_json::json!({"temperature_c": 55.0, "throttled": null, "slowed": false, "min_interval_ms": null})
    );
    live.wait_for(SHORT, |m| m.topic == detections).expect("detections at full rate");

    std::fs::write(&sensor, "83500\n").unwrap();
    let hot = live
        .wait_for(SHORT, |m| m.topic == topic("stats") && thermal_of(m)["slowed"] == true)
        .unwrap_or_else(|| panic!("stats never reported the slowdown; received:\n{}", live.summary()));
    assert_eq!(
        thermal_of(&hot),
        serde_json::json!({"temperature_c": 83.5, "throttled": null, "slowed": true, "min_interval_ms": 1500})
    );
    // At most one frame per 1.5 s now: count the frames published in a 4.5 s window.
    let last_frame = |live: &mut Subscriber| {
        let mut newest = -1;
        while let Some(m) =
            live.wait_for(Duration::ZERO, |m| m.topic == detections && m.json()["frame"].as_i64() > Some(newest))
        {
            newest = m.json()["frame"].as_i64().unwrap_or(newest);
        }
        newest
    };
    let before = last_frame(&mut live);
    thread::sleep(Duration::from_millis(4500));
    let frames = last_frame(&mut live) - before;
    assert!((2..=4).contains(&frames), "{frames} frames in 4.5 s while slowed to one per 1.5 s");
    assert!(daemon.log().contains("thermal: CPU at 83.5 °C (limit 80.0 °C)"), "log:\n{}", daemon.log());

    std::fs::write(&sensor, "70000\n").unwrap();
    let cooled = live
        .wait_for(SHORT, |m| m.topic == topic("stats") && thermal_of(m)["temperature_c"] == 70.0)
        .unwrap_or_else(|| panic!("stats never reported the recovery; received:\n{}", live.summary()));
    assert_eq!(thermal_of(&cooled)["slowed"], false);
    assert!(daemon.log().contains("thermal: CPU cooled to 70.0 °C"), "log:\n{}", daemon.log());
}
