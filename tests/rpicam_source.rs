//! The `rpicam` frame source against a scripted stand-in for rpicam-vid, as
//! no Raspberry Pi camera is attached here.
//!
//! The stand-in is a shell script that records its arguments and writes
//! frames made by Debian's ffmpeg from a fixture photo. The frames are laid
//! out as rpicam-vid writes them with `--codec yuv420`: full-range YUV 4:2:0
//! with each row padded to the ISP's stride, the padding filled with junk.
//! After them, the stand-in exits with an error message, stalls, or stops
//! in the middle of a frame.
//! A converted frame must stay within a mean absolute error of
//! `MAX_MEAN_ABSOLUTE_ERROR` of ffmpeg's conversion of the same unpadded
//! frame:
//!
//! ```text
//! ffmpeg -f rawvideo -pix_fmt yuvj420p -s WxH -i frame.yuv \
//!     -sws_flags neighbor+accurate_rnd+full_chroma_int -pix_fmt rgb24 -f rawvideo out.rgb
//! ```
//!
//! `yuvj420p` is ffmpeg's name for full-range yuv420p. The flags are those
//! of tests/frame_convert.rs: nearest chroma and exact rounding.
//!
//! Each test gets a folder of its own with a symbolic link `rpicam-vid` to
//! one shared script, which reads what to do from files next to the link.
//! The script is written once and run once before any test uses it, so
//! that no test executes a file that another thread may still hold open for
//! writing (which fails with "Text file busy").

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::ffmpeg::ffmpeg;
use common::mosquitto::{Mosquitto, Subscriber};
use edgedet::config::{Config, FrameSize};
use edgedet::frame_source::{FrameSource, FrameSourceError, Isp, RpicamError, RpicamOptions, RpicamSource};
use edgedet::preprocess::RgbImage;

/// Largest mean absolute difference, in 8-bit steps over all channels,
/// between a converted frame and ffmpeg's conversion of it.
const MAX_MEAN_ABSOLUTE_ERROR: f64 = 1.5;
/// swscale flags of ffmpeg's reference conversion, as in tests/frame_convert.rs.
const RAW_SWS_FLAGS: &str = "neighbor+accurate_rnd+full_chroma_int";
/// Value of the padding bytes at the end of each row, far from any sample
/// of the photo's rows next to it, so that a frame read with the wrong
/// stride is far off.
const PADDING: u8 = 0xE7;

/// Stands in for rpicam-vid. It runs from a symbolic link, and the folder of
/// the link contains the frame to write (`frame.yuv`), how often (`count`),
/// what to do afterwards (`ending`: `exit CODE`, `stall` or `partial BYTES`)
/// and the lines to write to stderr before that (`stderr`). It appends a
/// line `run` and then its arguments, one per line, to `calls`, and its
/// process id to `pids`.
const FAKE_RPICAM_VID: &str = r#"#!/bin/sh
# The tests that run edgedet give it a PATH of their own folder only.
PATH=/usr/bin:/bin
dir=$(dirname "$0")
[ -f "$dir/frame.yuv" ] || exit 0
{ echo run; printf '%s\n' "$@"; } >> "$dir/calls"
echo "$$" >> "$dir/pids"
count=$(cat "$dir/count")
i=0
while [ "$i" -lt "$count" ]; do
    cat "$dir/frame.yuv" || exit 2
    i=$((i + 1))
done
[ -f "$dir/stderr" ] && cat "$dir/stderr" >&2
set -- $(cat "$dir/ending")
case "$1" in
    stall) exec sleep 60 ;;
    partial) head -c "$2" "$dir/frame.yuv"; exit 0 ;;
    linger) sleep "$3"; exit "$2" ;;
    *) exit "$2" ;;
esac
"#;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Returns the shared script, written and run once.
fn fake_script() -> &'static Path {
    static SCRIPT: OnceLock<PathBuf> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rpicam_source");
        std::fs::create_dir_all(&dir).expect("creating the script folder");
        let script = dir.join("fake-rpicam-vid");
        std::fs::write(&script, FAKE_RPICAM_VID).expect("writing the script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("making the script executable");

        // A thread that forks while the script is open for writing passes the
        // open file to its child until that child runs its own program, and
        // running the script meanwhile fails with ETXTBSY. Once one run
        // succeeds, no writer is left.
        for _ in 0..100 {
            match Command::new(&script).stdin(Stdio::null()).status() {
                Ok(status) => {
                    assert!(status.success(), "the script without a frame file exits with 0, not {status}");
                    return script;
                }
                Err(error) if error.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error) => panic!("running {}: {error}", script.display()),
            }
        }
        panic!("{} stayed busy", script.display());
    })
}

/// What the stand-in does after its frames.
enum Ending {
    Exit(i32),
    /// Waits this many milliseconds with the pipe open, then exits with the code.
    Linger(i32, u32),
    Stall,
    /// Writes this many bytes of one more frame, then exits with 0.
    Partial(usize),
}

/// A folder with a `rpicam-vid` link to the shared script and its instructions.
struct FakeCamera {
    dir: tempfile::TempDir,
}

impl FakeCamera {
    fn new(frame: &[u8], count: usize, stderr: &str, ending: Ending) -> FakeCamera {
        let dir = tempfile::tempdir().expect("creating a temporary folder");
        std::os::unix::fs::symlink(fake_script(), dir.path().join("rpicam-vid")).expect("linking rpicam-vid");
        std::fs::write(dir.path().join("frame.yuv"), frame).expect("writing the frame");
        std::fs::write(dir.path().join("count"), count.to_string()).expect("writing the count");
        std::fs::write(dir.path().join("stderr"), stderr).expect("writing the stderr lines");
        let ending = match ending {
            Ending::Exit(code) => format!("exit {code}"),
            Ending::Linger(code, milliseconds) => format!("linger {code} {}", f64::from(milliseconds) / 1000.0),
            Ending::Stall => "stall".to_string(),
            Ending::Partial(bytes) => format!("partial {bytes}"),
        };
        std::fs::write(dir.path().join("ending"), ending).expect("writing the ending");
        FakeCamera { dir }
    }

    fn program(&self) -> PathBuf {
        self.dir.path().join("rpicam-vid")
    }

    /// Returns the process ids of the runs so far.
    fn pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.dir.path().join("pids")).unwrap_or_default();
        text.lines().map(|line| line.parse().expect("a process id")).collect()
    }

    /// Returns the arguments of each run so far.
    fn calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default();
        let mut calls: Vec<Vec<String>> = Vec::new();
        for line in text.lines() {
            if line == "run" {
                calls.push(Vec::new());
            } else if let Some(call) = calls.last_mut() {
                call.push(line.to_string());
            }
        }
        calls
    }
}

/// A photo as the camera saw it and as rpicam-vid would write it.
struct Scene {
    size: FrameSize,
    /// Full-range YUV 4:2:0 without padding, made by ffmpeg.
    frame: Vec<u8>,
    /// ffmpeg's conversion of `frame` to RGB.
    by_ffmpeg: RgbImage,
}

impl Scene {
    fn new(photo: &str, width: u32, height: u32) -> Scene {
        let photo = repo_path("tests/fixtures/images").join(photo);
        let scale = format!("scale={width}:{height}");
        #[rustfmt::skip]
        let frame = ffmpeg(
            &[
                "-i", photo.to_str().expect("UTF-8 fixture path"), "-vf", &scale,
                "-pix_fmt", "yuvj420p", "-f", "rawvideo", "pipe:1",
            ],
            &[],
        );
        assert_eq!(frame.len(), (width * height * 3 / 2) as usize, "ffmpeg's frame of {width}x{height}");

        let size_text = format!("{width}x{height}");
        #[rustfmt::skip]
        let rgb = ffmpeg(
            &[
                "-f", "rawvideo", "-pix_fmt", "yuvj420p", "-s", &size_text, "-i", "pipe:0",
                "-sws_flags", RAW_SWS_FLAGS, "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1",
            ],
            &frame,
        );
        let by_ffmpeg = RgbImage::from_raw(width, height, rgb).expect("ffmpeg's RGB frame has the frame's size");
        Scene { size: FrameSize { width, height }, frame, by_ffmpeg }
    }

    /// Lays the frame out with Y rows of `stride` bytes and U and V rows of
    /// half that, as rpicam-vid writes it, the padding filled with [`PADDING`].
    fn padded(&self, stride: u32) -> Vec<u8> {
        let (width, height) = (self.size.width as usize, self.size.height as usize);
        let stride = stride as usize;
        let (luma, chroma) = self.frame.split_at(width * height);
        let mut padded = Vec::with_capacity(stride * height * 3 / 2);
        pad_rows(&mut padded, luma, width, stride);
        for plane in chroma.chunks(width / 2 * (height / 2)) {
            pad_rows(&mut padded, plane, width / 2, stride / 2);
        }
        padded
    }
}

/// Appends the rows of `plane`, each `row_len` bytes, padded to `stride` bytes.
fn pad_rows(padded: &mut Vec<u8>, plane: &[u8], row_len: usize, stride: usize) {
    for row in plane.chunks(row_len) {
        padded.extend_from_slice(row);
        padded.resize(padded.len() + stride - row_len, PADDING);
    }
}

fn dog_640() -> &'static Scene {
    static SCENE: OnceLock<Scene> = OnceLock::new();
    SCENE.get_or_init(|| Scene::new("dog.jpg", 640, 480))
}

fn dog_416() -> &'static Scene {
    static SCENE: OnceLock<Scene> = OnceLock::new();
    SCENE.get_or_init(|| Scene::new("dog.jpg", 416, 312))
}

fn mean_absolute_error(found: &RgbImage, expected: &RgbImage) -> f64 {
    assert_eq!(found.dimensions(), expected.dimensions(), "image sizes differ");
    let total: u64 = found.as_raw().iter().zip(expected.as_raw()).map(|(&a, &b)| u64::from(a.abs_diff(b))).sum();
    total as f64 / found.as_raw().len() as f64
}

fn options(fake: &FakeCamera, size: FrameSize, isp: Isp) -> RpicamOptions {
    RpicamOptions { size, program: Some(fake.program()), isp: Some(isp), ..RpicamOptions::default() }
}

fn is_running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn rpicam_error(error: FrameSourceError) -> RpicamError {
    match error {
        FrameSourceError::Rpicam(error) => error,
        other => panic!("expected an rpicam error, got {other:?}"),
    }
}

// ---- arguments and frames -------------------------------------------------------------

#[test]
fn camera_entry_becomes_rpicam_vid_arguments() {
    let scene = dog_416();
    let text = r#"
[model]
path = "yolov4-tiny.cfg"

[[cameras]]
name = "pi"
source = "rpicam"
path = "1"
width = 416
height = 312
fps = 7.5
rpicam_args = ["--awb", "daylight", "--rotation", "180"]
"#;
    let config = Config::from_text(Path::new("/etc/edgedet/edgedet.toml"), text).expect("the config is valid");
    let fake = FakeCamera::new(&scene.padded(448), 1, "", Ending::Stall);
    let mut options = RpicamOptions::from_camera(&config.cameras[0]);
    options.program = Some(fake.program());
    options.isp = Some(Isp::Vc4);
    let mut source = RpicamSource::new(&config.cameras[0].path, options);

    let frame = source.next_frame().expect("a frame").expect("a live camera has no end");
    assert_eq!(frame.image.dimensions(), (416, 312));
    assert_eq!(frame.name, "camera1");
    #[rustfmt::skip]
    let expected = [
        "--camera", "1", "--width", "416", "--height", "312", "--framerate", "7.5",
        "--codec", "yuv420", "--timeout", "0", "--nopreview", "--flush",
        "--awb", "daylight", "--rotation", "180", "--output", "-",
    ];
    assert_eq!(fake.calls(), [expected.map(String::from).to_vec()]);
    assert_eq!(source.description(), "rpicam camera 1 at 416x312, 7.5 fps");
    assert!(source.is_live());
    assert!(source.is_looping());
}

#[test]
fn default_entry_requests_640x480() {
    let scene = dog_640();
    let text = "[model]\npath = \"m.cfg\"\n\n[[cameras]]\nname = \"pi\"\nsource = \"rpicam\"\npath = \"0\"\n";
    let config = Config::from_text(Path::new("/etc/edgedet/edgedet.toml"), text).expect("the config is valid");
    let fake = FakeCamera::new(&scene.frame, 1, "", Ending::Stall);
    let mut options = RpicamOptions::from_camera(&config.cameras[0]);
    options.program = Some(fake.program());
    options.isp = Some(Isp::Pisp);
    let mut source = RpicamSource::new(&config.cameras[0].path, options);

    source.next_frame().expect("a frame");
    #[rustfmt::skip]
    let expected = [
        "--camera", "0", "--width", "640", "--height", "480",
        "--codec", "yuv420", "--timeout", "0", "--nopreview", "--flush", "--output", "-",
    ];
    assert_eq!(fake.calls(), [expected.map(String::from).to_vec()]);
}

/// Reads two frames of `scene` written with `stride` bytes per Y row and
/// compares each with ffmpeg's conversion.
fn check_frames(scene: &Scene, isp: Isp, stride: u32) {
    let padded = scene.padded(stride);
    assert_eq!(padded.len(), (stride * scene.size.height * 3 / 2) as usize);
    let fake = FakeCamera::new(&padded, 2, "", Ending::Stall);
    let mut source = RpicamSource::new(Path::new("0"), options(&fake, scene.size, isp));

    for sequence in 0..2 {
        let frame = source.next_frame().expect("a frame").expect("a live camera has no end");
        assert_eq!(frame.sequence, sequence);
        assert_eq!(frame.image.dimensions(), (scene.size.width, scene.size.height));
        let error = mean_absolute_error(&frame.image, &scene.by_ffmpeg);
        println!("{} on the {isp}, stride {stride}: mean absolute error {error:.3}", scene.size);
        assert!(
            error <= MAX_MEAN_ABSOLUTE_ERROR,
            "{} on the {isp}, frame {sequence}: mean absolute error {error:.3} against ffmpeg",
            scene.size
        );
    }
}

#[test]
fn unpadded_frames_match_ffmpeg() {
    check_frames(dog_640(), Isp::Vc4, 640);
    check_frames(dog_640(), Isp::Pisp, 640);
}

#[test]
fn vc4_padded_frames_match_ffmpeg() {
    // 416 rounded up to a multiple of 64.
    check_frames(dog_416(), Isp::Vc4, 448);
}

#[test]
fn pisp_padded_frames_match_ffmpeg() {
    // Twice 208 rounded up to a multiple of 64.
    check_frames(dog_416(), Isp::Pisp, 512);
}

#[test]
fn wrong_stride_gives_far_off_frames() {
    // The check above must be able to fail: the VC4 layout read as PiSP
    // frames gives a frame length that ends mid-frame and rows that drift.
    let scene = dog_416();
    let fake = FakeCamera::new(&scene.padded(448), 4, "", Ending::Stall);
    let mut source = RpicamSource::new(Path::new("0"), options(&fake, scene.size, Isp::Pisp));
    let frame = source.next_frame().expect("a frame").expect("a live camera has no end");
    let error = mean_absolute_error(&frame.image, &scene.by_ffmpeg);
    assert!(error > 10.0 * MAX_MEAN_ABSOLUTE_ERROR, "mean absolute error {error:.3} with the wrong stride");
}

#[test]
fn full_range_is_not_read_as_limited() {
    // The same frame converted by ffmpeg as limited range differs by more
    // than the allowed error, so the range matters to the comparison.
    let scene = dog_640();
    let size = format!("{}x{}", scene.size.width, scene.size.height);
    #[rustfmt::skip]
    let limited = ffmpeg(
        &[
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", &size, "-i", "pipe:0",
            "-sws_flags", RAW_SWS_FLAGS, "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1",
        ],
        &scene.frame,
    );
    let limited = RgbImage::from_raw(scene.size.width, scene.size.height, limited).expect("ffmpeg's RGB frame");
    let error = mean_absolute_error(&limited, &scene.by_ffmpeg);
    assert!(error > 3.0 * MAX_MEAN_ABSOLUTE_ERROR, "limited and full range differ by only {error:.3}");
}

// ---- failures -----------------------------------------------------------------------

#[test]
fn exit_makes_camera_unavailable_until_restart() {
    let scene = dog_640();
    let stderr = "[0:00:01.1] [812]  INFO Camera camera_manager.cpp:330 libcamera v0.7.1\n\
                  ERROR: *** failed to start camera ***\n";
    let fake = FakeCamera::new(&scene.frame, 3, stderr, Ending::Exit(1));
    let mut source = RpicamSource::new(Path::new("0"), options(&fake, scene.size, Isp::Vc4));

    for sequence in 0..3 {
        let frame = source.next_frame().expect("a frame").expect("a live camera has no end");
        assert_eq!(frame.sequence, sequence);
    }
    let pid = source.process_id().expect("rpicam-vid runs");

    let error = source.next_frame().expect_err("rpicam-vid exited");
    assert!(error.is_transient(), "an exit is retried: {error}");
    assert!(!error.is_skipped_frame(), "an exit makes the camera unavailable: {error}");
    assert_eq!(
        error.to_string(),
        "rpicam-vid for camera 0 exited (exit status: 1) after 3 frames: ERROR: *** failed to start camera ***"
    );
    match rpicam_error(error) {
        RpicamError::Exited { status, frames, .. } => {
            assert_eq!(status.code(), Some(1));
            assert_eq!(frames, 3);
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(!is_running(pid), "rpicam-vid {pid} was reaped");
    assert_eq!(source.process_id(), None);

    // The next call starts rpicam-vid again, and sequence numbers go on.
    let frame = source.next_frame().expect("a frame after the restart").expect("a live camera has no end");
    assert_eq!(frame.sequence, 3);
    assert_eq!(fake.calls().len(), 2, "rpicam-vid runs twice");
    assert_ne!(source.process_id(), Some(pid));
}

#[test]
fn stall_makes_camera_unavailable() {
    let scene = dog_640();
    let stderr = "ERROR: Device timeout detected, attempting a restart!!!\n";
    let fake = FakeCamera::new(&scene.frame, 1, stderr, Ending::Stall);
    let options = RpicamOptions { timeout: Some(Duration::from_millis(300)), ..options(&fake, scene.size, Isp::Vc4) };
    let mut source = RpicamSource::new(Path::new("0"), options);

    source.next_frame().expect("a frame");
    let pid = source.process_id().expect("rpicam-vid runs");
    let started = Instant::now();
    let error = source.next_frame().expect_err("rpicam-vid stalled");
    let waited = started.elapsed();

    assert!(waited >= Duration::from_millis(300), "gave up after {waited:?}");
    assert!(waited < Duration::from_secs(5), "gave up only after {waited:?}");
    assert!(error.is_transient(), "a stall is retried: {error}");
    assert_eq!(
        error.to_string(),
        "rpicam-vid for camera 0 sent no frame for 300 ms: ERROR: Device timeout detected, attempting a restart!!!"
    );
    assert!(!is_running(pid), "the stalled rpicam-vid {pid} was killed and reaped");
}

#[test]
fn truncated_frame_is_reported() {
    let scene = dog_640();
    let fake = FakeCamera::new(&scene.frame, 1, "", Ending::Partial(1000));
    let mut source = RpicamSource::new(Path::new("0"), options(&fake, scene.size, Isp::Vc4));

    source.next_frame().expect("a frame");
    let error = source.next_frame().expect_err("the second frame is cut off");
    assert!(error.is_transient(), "{error}");
    assert_eq!(
        error.to_string(),
        "rpicam-vid for camera 0 ended in the middle of a frame (1000 of 460800 bytes, exit status: 0): no message on stderr"
    );
}

#[test]
fn drop_kills_and_reaps_rpicam_vid() {
    let scene = dog_640();
    let fake = FakeCamera::new(&scene.frame, 1, "", Ending::Stall);
    let mut source = RpicamSource::new(Path::new("0"), options(&fake, scene.size, Isp::Vc4));
    source.next_frame().expect("a frame");
    let pid = source.process_id().expect("rpicam-vid runs");
    assert!(is_running(pid), "rpicam-vid {pid} runs while frames are read");

    // The stand-in sleeps for 60 s, so only the kill ends it. A process that
    // is killed but not reaped would stay in /proc as a zombie.
    drop(source);
    assert!(!is_running(pid), "rpicam-vid {pid} is still in /proc after the drop");
}

#[test]
fn missing_program_says_what_to_install() {
    let options = RpicamOptions { program: Some(PathBuf::from("/nonexistent/rpicam-vid")), ..RpicamOptions::default() };
    let mut source = RpicamSource::new(Path::new("0"), options);
    let error = source.next_frame().expect_err("the program is missing");
    assert_eq!(
        error.to_string(),
        "/nonexistent/rpicam-vid not found: install rpicam-vid (Raspberry Pi OS: apt install rpicam-apps-lite, \
         or rpicam-apps on a desktop; libcamera-apps-lite before bookworm)"
    );
    assert!(!error.is_transient(), "a missing program does not come back by itself");
}

#[test]
fn invalid_camera_index_is_named() {
    let fake = FakeCamera::new(&dog_640().frame, 1, "", Ending::Stall);
    let mut source = RpicamSource::new(Path::new("front"), options(&fake, dog_640().size, Isp::Vc4));
    let error = source.next_frame().expect_err("front is no index");
    assert_eq!(
        error.to_string(),
        "invalid camera \"front\": expected a camera index such as \"0\" (`rpicam-hello --list-cameras` lists them)"
    );
    assert!(fake.calls().is_empty(), "rpicam-vid does not run for an invalid index");
}

// ---- the command line -----------------------------------------------------------------

/// Writes a config whose only camera is an `rpicam` source into `dir` and
/// runs `edgedet <command>` on it with `PATH` set to `path` alone.
fn run_edgedet(dir: &Path, command: &str, path: &Path) -> Output {
    let config = dir.join("edgedet.toml");
    let text = format!(
        "[device]\nid = \"testdev\"\n\n[model]\npath = {:?}\n\n[mqtt]\nport = 1\n\n\
         [[cameras]]\nname = \"pi\"\nsource = \"rpicam\"\npath = \"0\"\nfps = 2.0\n",
        repo_path("models/yolov4-tiny/yolov4-tiny.cfg").display().to_string()
    );
    std::fs::write(&config, text).expect("writing the config");
    Command::new(env!("CARGO_BIN_EXE_edgedet"))
        .arg(command)
        .arg("--config")
        .arg(&config)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("running edgedet {command}: {error}"))
}

#[test]
fn check_and_run_report_missing_rpicam_vid() {
    let dir = tempfile::tempdir().expect("creating a temporary folder");
    let empty = dir.path().join("empty-bin");
    std::fs::create_dir(&empty).expect("creating an empty folder");

    for command in ["check", "run"] {
        let output = run_edgedet(dir.path(), command, &empty);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "edgedet {command} without rpicam-vid: {stderr}");
        assert!(output.status.signal().is_none(), "edgedet {command} was killed: {stderr}");
        assert!(
            stderr.contains(
                "rpicam-vid not found in PATH, nor libcamera-vid, its name before Raspberry Pi OS bookworm: \
                 install it (Raspberry Pi OS: apt install rpicam-apps-lite, or rpicam-apps on a desktop; \
                 libcamera-apps-lite before bookworm)"
            ),
            "edgedet {command}: {stderr}"
        );
    }
}

#[test]
fn check_accepts_libcamera_vid() {
    let dir = tempfile::tempdir().expect("creating a temporary folder");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("creating a program folder");
    std::os::unix::fs::symlink(fake_script(), bin.join("libcamera-vid")).expect("linking libcamera-vid");

    let output = run_edgedet(dir.path(), "check", &bin);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("camera pi: rpicam camera 0 at 640x480, 2 fps, "), "{stdout}");
}

// ---- the daemon -------------------------------------------------------------------

/// Status texts of camera `pi` received so far.
fn statuses(live: &Subscriber) -> Vec<String> {
    live.messages.iter().filter(|message| message.topic == "edgedet/testdev/pi/status").map(|m| m.text()).collect()
}

#[test]
fn daemon_reports_camera_offline_and_online() {
    let broker = Mosquitto::start();
    let mut live = Subscriber::connect(broker.port(), &["edgedet/#"]);
    // Every run writes five frames and exits with an error, so the camera
    // keeps going offline and, after the daemon's retry delay, online again.
    // The run stays 0.5 s before it exits: the retained status is the
    // camera's current state, and the daemon looks at it every 100 ms, so an
    // online spell shorter than that can pass unpublished.
    let stderr = "ERROR: *** failed to start camera ***\n";
    let fake = FakeCamera::new(&dog_640().frame, 5, stderr, Ending::Linger(1, 500));
    let config = fake.dir.path().join("edgedet.toml");
    let text = format!(
        "[device]\nid = \"testdev\"\n\n[model]\npath = {:?}\n\n[mqtt]\nport = {}\n\n\
         [[cameras]]\nname = \"pi\"\nsource = \"rpicam\"\npath = \"0\"\n",
        repo_path("models/yolov4-tiny/yolov4-tiny.cfg").display().to_string(),
        broker.port()
    );
    std::fs::write(&config, text).expect("writing the config");
    let log_path = fake.dir.path().join("edgedet.log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_edgedet"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("PATH", fake.dir.path())
        .env("RUST_LOG", "edgedet=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("creating the log file"))
        .spawn()
        .expect("starting edgedet run");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let detections = live
        .wait_for(Duration::from_secs(120), |message| message.topic == "edgedet/testdev/pi/detections")
        .unwrap_or_else(|| panic!("no detections; log:\n{}", log()));
    assert_eq!(detections.json()["image"], "camera0");
    let deadline = Instant::now() + Duration::from_secs(30);
    while statuses(&live).len() < 3 && Instant::now() < deadline {
        live.wait_for(Duration::from_millis(100), |_| false);
    }
    let seen = statuses(&live);
    assert!(seen.len() >= 3, "statuses {seen:?} after 30 s\n{}\nlog:\n{}", live.summary(), log());
    assert_eq!(seen[..3], ["online", "offline", "online"], "{}\nlog:\n{}", live.summary(), log());
    assert!(
        log().contains(
            "rpicam-vid for camera 0 exited (exit status: 1) after 5 frames: ERROR: *** failed to start camera ***; \
             offline, trying again in 1000 ms"
        ),
        "{}",
        log()
    );

    // SIGTERM shuts the daemon down, which ends the camera's rpicam-vid.
    // SAFETY: kill(2) with the id of the child started above and a valid signal.
    assert_eq!(unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = daemon.try_wait().expect("waiting for edgedet") {
            break status;
        }
        assert!(Instant::now() < deadline, "edgedet did not stop after SIGTERM; log:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "edgedet ended with {status}; log:\n{}", log());
    let runs = fake.pids();
    assert!(runs.len() >= 2, "rpicam-vid ran {} times", runs.len());
    for pid in runs {
        assert!(!is_running(pid), "rpicam-vid {pid} outlived the daemon");
    }
}
