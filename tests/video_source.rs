//! The `stream` frame source on real video: an H.264 MP4 that ffmpeg makes
//! here from the fixture photos, decoded by the source's own ffmpeg process
//! and run through yolov4-tiny, against the same frames as PNG stills. Also
//! the errors a user meets (no ffmpeg, a missing file), and the daemon end
//! to end with mosquitto, including a network stream served by ffmpeg on a
//! loopback port that goes away and comes back.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::mosquitto::{free_port, Mosquitto, Subscriber};
use common::yolo::detector;
use edgedet::config::FrameSize;
use edgedet::detection::Detection;
use edgedet::frame_source::{Frame, FrameSource, FrameSourceError, Programs, StreamError, StreamOptions, StreamSource};
use edgedet::preprocess::{load_image, RgbImage};

const PHOTOS: [&str; 4] = ["bus.jpg", "zidane.jpg", "dog.jpg", "person.jpg"];
/// Frames that each photo is shown for in the test video, at [`VIDEO_FPS`].
const FRAMES_PER_PHOTO: usize = 5;
const VIDEO_FPS: u32 = 5;
const VIDEO_SIZE: FrameSize = FrameSize { width: 1280, height: 720 };

/// Scales a photo to fit 1280x720, centres it on black, as a letterboxed
/// camera picture, and converts it to the video's 4:2:0 pixel format.
///
/// The stills go through this same chain, so they are the frames that the
/// encoder receives. Sizes and offsets are even because the pad filter
/// rounds odd offsets down in 4:2:0 but not in RGB, which shifted the
/// 1086-pixel-wide person.jpg by one pixel between video and still.
const FIT_FILTER: &str = "scale=1280:720:force_original_aspect_ratio=decrease:force_divisible_by=2,\
                          pad=1280:720:trunc((ow-iw)/4)*2:trunc((oh-ih)/4)*2:color=black,setsar=1,format=yuv420p";

/// Detections at or above this score on one side must be found on the
/// other. Below it, compression noise may push a box across the 0.25
/// threshold.
const MIN_MATCHED_SCORE: f32 = 0.30;
const SCORE_TOLERANCE: f32 = 0.05;
const MIN_IOU: f32 = 0.85;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn run_ffmpeg(args: &[&str]) {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("running ffmpeg (Debian: apt install ffmpeg)");
    assert!(output.status.success(), "ffmpeg {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// The test video and its stills, made once per test run.
struct VideoFixture {
    video: PathBuf,
    /// One 1280x720 PNG per photo, in the order of [`PHOTOS`].
    stills: Vec<PathBuf>,
}

fn video_fixture() -> &'static VideoFixture {
    static FIXTURE: OnceLock<VideoFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("video_source");
        std::fs::create_dir_all(&dir).expect("creating the fixture folder");
        let photos: Vec<String> =
            PHOTOS.iter().map(|photo| repo_path("tests/fixtures/images").join(photo).display().to_string()).collect();

        // Each photo becomes 5 frames (1 s at 5 fps), scaled and padded by
        // FIT_FILTER, and the four clips are joined into one H.264 stream.
        let seconds = format!("{}", FRAMES_PER_PHOTO as f64 / f64::from(VIDEO_FPS));
        let fps = VIDEO_FPS.to_string();
        let mut args: Vec<&str> = Vec::new();
        for photo in &photos {
            args.extend(["-loop", "1", "-framerate", &fps, "-t", &seconds, "-i", photo]);
        }
        let mut graph = String::new();
        for index in 0..photos.len() {
            graph.push_str(&format!("[{index}:v]{FIT_FILTER}[v{index}];"));
        }
        for index in 0..photos.len() {
            graph.push_str(&format!("[v{index}]"));
        }
        graph.push_str(&format!("concat=n={}:v=1:a=0[out]", photos.len()));
        let video = dir.join("photos.mp4");
        let video_arg = video.display().to_string();
        args.extend(["-filter_complex", &graph, "-map", "[out]", "-r", &fps]);
        args.extend(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", &video_arg]);
        run_ffmpeg(&args);

        // The stills go through the same filter, straight to RGB PNG.
        let mut stills = Vec::new();
        for (photo, name) in photos.iter().zip(PHOTOS) {
            let still = dir.join(name).with_extension("png");
            let still_arg = still.display().to_string();
            run_ffmpeg(&["-i", photo, "-vf", FIT_FILTER, "-frames:v", "1", "-pix_fmt", "rgb24", &still_arg]);
            stills.push(still);
        }
        VideoFixture { video, stills }
    })
}

fn detect(image: &RgbImage) -> Vec<Detection> {
    detector().detect(image).unwrap_or_else(|error| panic!("detecting: {error:#}")).detections
}

/// Reads every frame until the source reports its end.
fn read_to_end(source: &mut StreamSource) -> Vec<Frame> {
    let mut frames = Vec::new();
    loop {
        match source.next_frame() {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return frames,
            Err(error) => panic!("frame {} of {}: {error:#?}", frames.len(), source.description()),
        }
    }
}

fn iou(a: &Detection, b: &Detection) -> f32 {
    let (a, b) = (&a.bbox, &b.bbox);
    let overlap_w = ((a.x + a.w).min(b.x + b.w) - a.x.max(b.x)).max(0.0);
    let overlap_h = ((a.y + a.h).min(b.y + b.h) - a.y.max(b.y)).max(0.0);
    let intersection = overlap_w * overlap_h;
    intersection / (a.w * a.h + b.w * b.h - intersection)
}

fn describe(detection: &Detection) -> String {
    let b = &detection.bbox;
    format!("{} {:.3} at [{:.0} {:.0} {:.0} {:.0}]", detection.label, detection.score, b.x, b.y, b.w, b.h)
}

/// Lists the detections of `found` at or above [`MIN_MATCHED_SCORE`] that
/// have no counterpart in `other`: same label, IoU of at least [`MIN_IOU`]
/// and a score within [`SCORE_TOLERANCE`].
fn unmatched(found: &[Detection], other: &[Detection]) -> Vec<String> {
    found
        .iter()
        .filter(|detection| detection.score >= MIN_MATCHED_SCORE)
        .filter(|detection| {
            !other.iter().any(|candidate| {
                candidate.label == detection.label
                    && iou(detection, candidate) >= MIN_IOU
                    && (candidate.score - detection.score).abs() <= SCORE_TOLERANCE
            })
        })
        .map(|detection| {
            let closest = other
                .iter()
                .filter(|candidate| candidate.label == detection.label)
                .max_by(|a, b| iou(detection, a).total_cmp(&iou(detection, b)));
            match closest {
                Some(closest) => format!(
                    "{} (closest: {}, IoU {:.3})",
                    describe(detection),
                    describe(closest),
                    iou(detection, closest)
                ),
                None => format!("{} (no detection with that label)", describe(detection)),
            }
        })
        .collect()
}

/// Mean absolute difference over all bytes of two images of the same size.
fn mean_absolute_error(found: &RgbImage, expected: &RgbImage) -> f64 {
    let total: u64 = found.as_raw().iter().zip(expected.as_raw()).map(|(&a, &b)| u64::from(a.abs_diff(b))).sum();
    total as f64 / found.as_raw().len() as f64
}

// ---- the source on a video file --------------------------------------------------------

#[test]
fn video_frames_match_stills() {
    let fixture = video_fixture();
    let mut source = StreamSource::new(&fixture.video, StreamOptions::default());
    let frames = read_to_end(&mut source);

    assert_eq!(frames.len(), PHOTOS.len() * FRAMES_PER_PHOTO, "frames decoded from {}", fixture.video.display());
    for (index, frame) in frames.iter().enumerate() {
        assert_eq!(frame.image.dimensions(), (VIDEO_SIZE.width, VIDEO_SIZE.height), "size of frame {index}");
        assert_eq!(frame.sequence, index as u64, "sequence of frame {index}");
        assert_eq!(frame.name, "photos.mp4");
    }

    let mut failures = Vec::new();
    for (photo_index, still_path) in fixture.stills.iter().enumerate() {
        let still = load_image(still_path).unwrap_or_else(|error| panic!("reading {}: {error}", still_path.display()));
        let expected = detect(&still);
        assert!(!expected.is_empty(), "no detections on {}", still_path.display());

        for offset in 0..FRAMES_PER_PHOTO {
            let index = photo_index * FRAMES_PER_PHOTO + offset;
            let frame = &frames[index].image;
            let difference = mean_absolute_error(frame, &still);
            // H.264 at CRF 18 measured 0.58 to 0.63 per byte on these frames.
            assert!(difference < 1.5, "frame {index} differs from {} by {difference:.2} per byte", PHOTOS[photo_index]);

            let found = detect(frame);
            for missing in unmatched(&expected, &found) {
                failures.push(format!("frame {index} ({}) lacks still's {missing}", PHOTOS[photo_index]));
            }
            for extra in unmatched(&found, &expected) {
                failures.push(format!("frame {index} ({}) has {extra}, not on the still", PHOTOS[photo_index]));
            }
        }
    }
    assert!(failures.is_empty(), "video detections differ from the stills':\n{}", failures.join("\n"));
}

#[test]
fn video_end_is_reported_again() {
    let fixture = video_fixture();
    let mut source =
        StreamSource::new(&fixture.video, StreamOptions { size: Some(VIDEO_SIZE), ..StreamOptions::default() });
    let frames = read_to_end(&mut source);
    assert_eq!(frames.len(), PHOTOS.len() * FRAMES_PER_PHOTO);

    assert!(matches!(source.next_frame(), Ok(None)), "second call after the end");
    assert!(!source.is_looping());
}

#[test]
fn configured_size_scales_frames() {
    let fixture = video_fixture();
    let size = FrameSize::new(320, 180).expect("valid size");
    let mut source = StreamSource::new(&fixture.video, StreamOptions { size: Some(size), ..StreamOptions::default() });

    let frame = source.next_frame().expect("first frame").expect("the video has frames");
    assert_eq!(frame.image.dimensions(), (320, 180));
    assert_eq!(source.description(), format!("stream {} scaled to 320x180", fixture.video.display()));
}

#[test]
fn looping_video_starts_over() {
    let fixture = video_fixture();
    let mut source = StreamSource::new(
        &fixture.video,
        StreamOptions { looping: true, size: Some(VIDEO_SIZE), ..StreamOptions::default() },
    );
    let total = PHOTOS.len() * FRAMES_PER_PHOTO;

    let mut first_pass = Vec::new();
    for _ in 0..total {
        first_pass.push(source.next_frame().expect("frame of the first pass").expect("a looping source never ends"));
    }
    let restarted = source.next_frame().expect("first frame after the restart").expect("a looping source never ends");

    assert_eq!(restarted.sequence, total as u64, "sequence numbers go on across restarts");
    assert_eq!(
        mean_absolute_error(&restarted.image, &first_pass[0].image),
        0.0,
        "the video should start over with its first frame"
    );
}

#[test]
fn realtime_source_keeps_the_video_rate() {
    let fixture = video_fixture();
    let mut source = StreamSource::new(
        &fixture.video,
        StreamOptions { realtime: true, size: Some(VIDEO_SIZE), ..StreamOptions::default() },
    );

    let started = Instant::now();
    let frames = read_to_end(&mut source);
    let elapsed = started.elapsed();

    // 20 frames at 5 fps last 4 s; -re may let the first frames through at once.
    assert_eq!(frames.len(), PHOTOS.len() * FRAMES_PER_PHOTO);
    assert!(elapsed >= Duration::from_millis(3000), "20 frames at 5 fps took only {elapsed:?}");
}

// ---- errors ---------------------------------------------------------------------------

#[test]
fn missing_ffmpeg_says_what_to_install() {
    let fixture = video_fixture();
    let programs = Programs { ffmpeg: PathBuf::from("/nonexistent/bin/ffmpeg"), ffprobe: PathBuf::from("ffprobe") };
    let mut source = StreamSource::new(
        &fixture.video,
        StreamOptions { looping: true, size: Some(VIDEO_SIZE), programs: programs.clone(), ..StreamOptions::default() },
    );

    let error = source.next_frame().expect_err("ffmpeg cannot start");
    assert_eq!(error.to_string(), "/nonexistent/bin/ffmpeg not found: install ffmpeg (Debian: apt install ffmpeg)");
    assert!(!error.is_transient(), "a missing program does not come back by itself");
    assert!(matches!(programs.check(false), Err(StreamError::ProgramNotFound { .. })));
}

#[test]
fn missing_ffprobe_says_what_to_install() {
    let fixture = video_fixture();
    let programs = Programs { ffmpeg: PathBuf::from("ffmpeg"), ffprobe: PathBuf::from("edgedet-no-such-ffprobe") };
    let mut source = StreamSource::new(&fixture.video, StreamOptions { programs, ..StreamOptions::default() });

    let error = source.next_frame().expect_err("ffprobe cannot start");
    assert_eq!(error.to_string(), "edgedet-no-such-ffprobe not found in PATH: install it (Debian: apt install ffmpeg)");
}

#[test]
fn missing_video_file_is_named() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let missing = dir.path().join("no-such-video.mp4");
    let shown = missing.display().to_string();

    // Without a size, ffprobe meets the missing file first.
    let mut probed = StreamSource::new(&missing, StreamOptions::default());
    let message = probed.next_frame().expect_err("the file is missing").to_string();
    assert!(message.starts_with(&format!("ffprobe could not read the video size of {shown}: ")), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");

    // With a size, ffmpeg does.
    let mut sized = StreamSource::new(&missing, StreamOptions { size: Some(VIDEO_SIZE), ..StreamOptions::default() });
    let error = sized.next_frame().expect_err("the file is missing");
    let message = error.to_string();
    assert!(message.starts_with(&format!("ffmpeg stopped decoding {shown} (exit status: 1): ")), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");
    assert!(!error.is_transient(), "a missing local file is not retried unless the source loops");
}

#[test]
fn text_file_fails_to_decode() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "not a video").expect("writing a text file");

    let mut source = StreamSource::new(&text, StreamOptions { size: Some(VIDEO_SIZE), ..StreamOptions::default() });
    match source.next_frame() {
        Err(FrameSourceError::Stream(StreamError::Exited { message, .. })) => {
            assert!(message.contains("Invalid data found when processing input"), "{message}");
        }
        other => panic!("expected ffmpeg to fail on a text file, got {other:?}"),
    }
}

// ---- the command line and the daemon -------------------------------------------------

/// A temporary folder with a config whose only camera is a `stream` source.
struct Setup {
    dir: tempfile::TempDir,
}

const DEVICE: &str = "testdev";
const CAMERA: &str = "yard";

impl Setup {
    fn new(port: u16, camera_keys: &str) -> Setup {
        let dir = tempfile::tempdir().expect("creating a temporary folder");
        let config = format!(
            r#"[device]
id = "{DEVICE}"

[model]
path = "{model}"

[mqtt]
port = {port}
stats_interval_s = 1
keep_alive_s = 5

[[cameras]]
name = "{CAMERA}"
source = "stream"
{camera_keys}
"#,
            model = repo_path("models/yolov4-tiny/yolov4-tiny.cfg").display(),
        );
        std::fs::write(dir.path().join("edgedet.toml"), config).expect("writing the config");
        Setup { dir }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("edgedet.toml")
    }

    /// Runs `edgedet <command> --config ...` with `PATH` set to an empty folder.
    fn run_without_path(&self, command: &str) -> Output {
        let empty = self.dir.path().join("empty-bin");
        std::fs::create_dir_all(&empty).expect("creating an empty folder");
        Command::new(env!("CARGO_BIN_EXE_edgedet"))
            .arg(command)
            .arg("--config")
            .arg(self.config_path())
            .env("PATH", &empty)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("running edgedet {command}: {error}"))
    }
}

#[test]
fn check_and_run_report_missing_ffmpeg() {
    let fixture = video_fixture();
    let setup = Setup::new(free_port(), &format!("path = {:?}", fixture.video.display().to_string()));

    for command in ["check", "run"] {
        let output = setup.run_without_path(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // 78 (EX_CONFIG): the unit's RestartPreventExitStatus stops restarts that cannot help.
        assert_eq!(output.status.code(), Some(78), "edgedet {command} without ffmpeg: {stderr}");
        assert!(
            stderr.contains("ffmpeg not found in PATH: install it (Debian: apt install ffmpeg)"),
            "edgedet {command}: {stderr}"
        );
    }
}

#[test]
fn check_describes_stream_camera() {
    let fixture = video_fixture();
    let keys = format!("path = {:?}\nwidth = 640\nheight = 360\nrealtime = true", fixture.video.display().to_string());
    let setup = Setup::new(free_port(), &keys);

    let output = Command::new(env!("CARGO_BIN_EXE_edgedet"))
        .arg("check")
        .arg("--config")
        .arg(setup.config_path())
        .output()
        .expect("running edgedet check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "edgedet check failed: {}", String::from_utf8_lossy(&output.stderr));
    let expected = format!("camera {CAMERA}: stream {} scaled to 640x360, once", fixture.video.display());
    assert!(stdout.contains(&expected), "{stdout}");
}

/// A running `edgedet run`, killed when dropped, with its log in a file.
struct Daemon {
    child: Child,
    log_path: PathBuf,
}

impl Daemon {
    fn start(setup: &Setup) -> Daemon {
        let log_path = setup.dir.path().join("edgedet.log");
        let log = std::fs::File::create(&log_path).expect("creating the daemon log file");
        let child = Command::new(env!("CARGO_BIN_EXE_edgedet"))
            .arg("run")
            .arg("--config")
            .arg(setup.config_path())
            .env("RUST_LOG", "edgedet=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting edgedet run");
        Daemon { child, log_path }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Time for the daemon to load the model and process its first frames.
const STARTUP: Duration = Duration::from_secs(120);
/// Time for a message that is due to arrive.
const SHORT: Duration = Duration::from_secs(20);

fn topic(suffix: &str) -> String {
    format!("edgedet/{DEVICE}/{suffix}")
}

#[test]
fn daemon_publishes_detections_of_video() {
    let fixture = video_fixture();
    let broker = Mosquitto::start();
    let mut live = Subscriber::connect(broker.port(), &["edgedet/#"]);
    let setup = Setup::new(broker.port(), &format!("path = {:?}", fixture.video.display().to_string()));
    let daemon = Daemon::start(&setup);

    let detections_topic = topic(&format!("{CAMERA}/detections"));
    let first = live
        .wait_for(STARTUP, |message| message.topic == detections_topic && message.json()["frame"] == 0)
        .unwrap_or_else(|| panic!("no detections of frame 0; log:\n{}", daemon.log()));
    let payload = first.json();
    assert_eq!(payload["camera"], CAMERA);
    assert_eq!(payload["image"], "photos.mp4");
    assert_eq!(payload["width"], 1280, "{payload}");
    assert_eq!(payload["height"], 720, "{payload}");

    // Frame 0 shows bus.jpg: the payload's detections are the still's.
    let still = load_image(&fixture.stills[0]).expect("reading the bus still");
    let expected = detect(&still);
    let published: Vec<Detection> = serde_json::from_value(payload["detections"].clone())
        .unwrap_or_else(|error| panic!("detections in {payload}: {error}"));
    assert!(!published.is_empty(), "{payload}");
    assert_eq!(unmatched(&expected, &published), Vec::<String>::new(), "still detections missing from {payload}");
    assert_eq!(unmatched(&published, &expected), Vec::<String>::new(), "published detections not on the still");

    let last = (PHOTOS.len() * FRAMES_PER_PHOTO - 1) as u64;
    live.wait_for(STARTUP, |message| message.topic == detections_topic && message.json()["frame"] == last)
        .unwrap_or_else(|| panic!("no detections of the last frame {last}; log:\n{}", daemon.log()));
    live.wait_for(SHORT, |message| message.topic == topic(&format!("{CAMERA}/status")) && message.text() == "offline")
        .unwrap_or_else(|| panic!("the camera did not go offline at the end; log:\n{}", daemon.log()));
    assert!(daemon.log().contains("source finished"), "{}", daemon.log());
}

/// An ffmpeg that serves the test video as HTTP multipart JPEG to one
/// client on a loopback port, as an MJPEG network camera does.
struct MjpegServer {
    child: Child,
}

impl MjpegServer {
    fn start(video: &Path, port: u16) -> MjpegServer {
        let child = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i"])
            .arg(video)
            .args(["-c:v", "mjpeg", "-q:v", "3", "-f", "mpjpeg", "-listen", "1"])
            .arg(format!("http://127.0.0.1:{port}/camera.mjpg"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the ffmpeg MJPEG server");
        MjpegServer { child }
    }
}

impl Drop for MjpegServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn network_stream_goes_offline_and_recovers() {
    let fixture = video_fixture();
    let broker = Mosquitto::start();
    let camera_port = free_port();
    let url = format!("http://127.0.0.1:{camera_port}/camera.mjpg");
    // With width and height set, the daemon connects once, without ffprobe,
    // which suits a server that takes one client at a time.
    let setup = Setup::new(broker.port(), &format!("path = {url:?}\nwidth = 1280\nheight = 720\nloop = true"));

    let server = MjpegServer::start(&fixture.video, camera_port);
    let mut live = Subscriber::connect(broker.port(), &["edgedet/#"]);
    let daemon = Daemon::start(&setup);
    let detections_topic = topic(&format!("{CAMERA}/detections"));
    let status_topic = topic(&format!("{CAMERA}/status"));

    let before = live
        .wait_for(STARTUP, |message| message.topic == detections_topic)
        .unwrap_or_else(|| panic!("no detections from {url}; log:\n{}", daemon.log()));
    assert_eq!(before.json()["image"], url.as_str());

    // The camera disappears: the daemon marks it offline and keeps trying.
    drop(server);
    live.wait_for(SHORT, |message| message.topic == status_topic && message.text() == "offline")
        .unwrap_or_else(|| panic!("the camera did not go offline; log:\n{}", daemon.log()));
    assert!(daemon.log().contains("offline, trying again in"), "{}", daemon.log());

    // It comes back: a fresh subscriber first gets the retained offline, then online.
    let _server = MjpegServer::start(&fixture.video, camera_port);
    let mut after = Subscriber::connect(broker.port(), &["edgedet/#"]);
    after
        .wait_for(Duration::from_secs(60), |message| message.topic == status_topic && message.text() == "online")
        .unwrap_or_else(|| panic!("the camera did not come back online; log:\n{}", daemon.log()));
    after
        .wait_for(SHORT, |message| message.topic == detections_topic)
        .unwrap_or_else(|| panic!("no detections after the camera came back; log:\n{}", daemon.log()));
    assert!(daemon.log().contains("source available again"), "{}", daemon.log());
}
