//! The `rpicam` source: frames from a Raspberry Pi CSI camera module,
//! captured by the vendor's `rpicam-vid`.
//!
//! On Raspberry Pi OS the V4L2 node of a CSI camera (driver unicam, or
//! rp1-cfe on a Raspberry Pi 5) offers only raw Bayer, and the ISP that
//! turns it into YUV is driven by libcamera. edgedet does not demosaic by
//! hand. This source runs `rpicam-vid` (named `libcamera-vid` before
//! Raspberry Pi OS bookworm) as a child process that writes raw YUV 4:2:0
//! frames to its stdout, reads them one at a time and converts each with
//! [`crate::convert`].
//!
//! The child starts on the first call to [`FrameSource::next_frame`]. When
//! it exits, or sends no frame within the timeout, the call returns an
//! error that counts as transient, the child is killed and reaped, and the
//! next call starts it again. The camera worker's retries with backoff
//! bring the camera back. Dropping the source kills and reaps the child.
//! The last lines of the child's stderr go into the error messages.
//!
//! NOTE: this source has been tested here against a scripted stand-in for
//! rpicam-vid, not on a Raspberry Pi. The frame layout and colour range
//! below come from the sources of rpicam-apps 1.12, libcamera 0.7 and the
//! Raspberry Pi kernel drivers, not from a measurement.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info};

use super::child::{find_program, read_full_within, Filled, FrameProcess, StderrOptions};
use super::{Frame, FrameSource, FrameSourceError};
use crate::config::{CameraConfig, FrameSize};
use crate::convert::{ConvertError, FrameConverter, PixelFormat, RawFrame};

/// Frame size when the camera entry sets none.
pub const DEFAULT_SIZE: FrameSize = FrameSize { width: 640, height: 480 };
/// Name of the program on Raspberry Pi OS bookworm and later.
pub const PROGRAM: &str = "rpicam-vid";
/// Name of the same program on Raspberry Pi OS bullseye, which later
/// releases keep as a symbolic link.
pub const OLD_PROGRAM: &str = "libcamera-vid";
/// Lowest frame rate requested from rpicam-vid. A slower rate would allow
/// exposures as long as the frame interval and delay the detection of a
/// stalled camera by four intervals, while the camera worker takes one frame
/// per interval either way.
pub const MIN_CAMERA_FPS: f64 = 1.0;
/// Shortest wait for a frame before the camera counts as stalled.
pub const MIN_FRAME_TIMEOUT: Duration = Duration::from_secs(2);
/// Frame periods to wait for a frame, when that is longer than [`MIN_FRAME_TIMEOUT`].
const TIMEOUT_FRAMES: u32 = 4;
/// Wait for the first frame after rpicam-vid starts, when that is longer
/// than the frame timeout. It covers loading libcamera and its tuning file,
/// configuring the sensor and the ISP, and the first exposures.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait for rpicam-vid to exit after it closed its stdout, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Number of rpicam-vid stderr lines logged at debug level per run: its
/// start-up report. With `--verbose 2` it writes lines for every frame,
/// which are only kept for error messages.
const LOGGED_STDERR_LINES: usize = 40;
/// Folder with one entry per V4L2 device, whose names identify the ISP.
const VIDEO4LINUX_CLASS: &str = "/sys/class/video4linux";

/// Failure of an `rpicam` source, or one skipped frame.
#[derive(Debug, thiserror::Error)]
pub enum RpicamError {
    #[error("{}", program_not_found_message(.program.as_deref()))]
    ProgramNotFound {
        /// The configured program, or `None` when `PATH` was searched for both names.
        program: Option<PathBuf>,
    },
    #[error("starting {} failed", .program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "invalid camera {camera:?}: expected a camera index such as \"0\" (`rpicam-hello --list-cameras` lists them)"
    )]
    InvalidCamera { camera: String },
    #[error("{program} for camera {camera} exited ({status}) after {frames} frames: {message}")]
    Exited { program: String, camera: u32, status: ExitStatus, frames: u64, message: String },
    #[error(
        "{program} for camera {camera} ended in the middle of a frame ({received} of {expected} bytes, {status}): {message}"
    )]
    Truncated { program: String, camera: u32, received: usize, expected: usize, status: ExitStatus, message: String },
    #[error("{program} for camera {camera} sent no frame for {} ms: {message}", .waited.as_millis())]
    Stalled { program: String, camera: u32, waited: Duration, message: String },
    #[error("reading frames of camera {camera} from {program}")]
    Read {
        program: String,
        camera: u32,
        #[source]
        source: io::Error,
    },
    #[error("skipping frame {sequence} of camera {camera}")]
    Convert {
        camera: u32,
        sequence: u64,
        #[source]
        source: ConvertError,
    },
}

fn program_not_found_message(program: Option<&Path>) -> String {
    const INSTALL: &str =
        "(Raspberry Pi OS: apt install rpicam-apps-lite, or rpicam-apps on a desktop; libcamera-apps-lite before bookworm)";
    match program {
        Some(program) => format!("{} not found: install rpicam-vid {INSTALL}", program.display()),
        None => {
            format!("{PROGRAM} not found in PATH, nor {OLD_PROGRAM}, its name before Raspberry Pi OS bookworm: install it {INSTALL}")
        }
    }
}

impl RpicamError {
    /// Returns true when only one frame is lost and the next call goes on reading.
    pub fn is_skipped_frame(&self) -> bool {
        matches!(self, RpicamError::Convert { .. })
    }

    /// Returns true when the camera may come back by itself: rpicam-vid
    /// exited, stalled or could not be read, as it does when the camera is
    /// busy, disconnected or its cable is loose. A missing program or an
    /// invalid camera index stays that way until the system or the config changes.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RpicamError::Exited { .. }
                | RpicamError::Truncated { .. }
                | RpicamError::Stalled { .. }
                | RpicamError::Read { .. }
        )
    }
}

/// Returns the rpicam-vid to run: `program` when set, otherwise `rpicam-vid`
/// from `PATH`, or `libcamera-vid` when there is no `rpicam-vid`.
///
/// # Errors
/// [`RpicamError::ProgramNotFound`] when the program is missing or not executable.
pub fn find_rpicam_vid(program: Option<&Path>) -> Result<PathBuf, RpicamError> {
    match program {
        Some(program) => {
            find_program(program).ok_or_else(|| RpicamError::ProgramNotFound { program: Some(program.to_path_buf()) })
        }
        None => find_program(Path::new(PROGRAM))
            .or_else(|| find_program(Path::new(OLD_PROGRAM)))
            .ok_or(RpicamError::ProgramNotFound { program: None }),
    }
}

/// The image signal processor behind libcamera, which decides how rows are padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isp {
    /// The VC4 ISP of Raspberry Pi 0 to 4 and their compute modules (driver bcm2835-isp).
    Vc4,
    /// The PiSP back end of Raspberry Pi 5 and its compute module (driver pispbe).
    Pisp,
}

impl Isp {
    /// Finds the ISP by the names of the V4L2 devices in `class_dir`
    /// (`/sys/class/video4linux`), as rpicam-apps identifies the platform by
    /// the devices' card names. Returns `None` when neither ISP is there.
    pub fn detect(class_dir: &Path) -> Option<Isp> {
        let entries = std::fs::read_dir(class_dir).ok()?;
        let mut found = None;
        for entry in entries.flatten() {
            let Ok(name) = std::fs::read_to_string(entry.path().join("name")) else {
                continue;
            };
            if name.starts_with("pispbe") {
                return Some(Isp::Pisp);
            }
            if name.starts_with("bcm2835-isp") {
                found = Some(Isp::Vc4);
            }
        }
        found
    }

    /// Returns the bytes from one Y row to the next for a frame `width` pixels wide.
    ///
    /// The VC4 ISP driver aligns the YUV420 `bytesperline` to 64 bytes. For the
    /// PiSP, libcamera rounds the U and V stride (half the width) up to 64
    /// bytes and takes twice that as the Y stride, so that all three planes
    /// stay aligned. For an even width, that is the width rounded up to 128.
    pub fn luma_stride(self, width: u32) -> u32 {
        match self {
            Isp::Vc4 => width.next_multiple_of(64),
            Isp::Pisp => 2 * (width / 2).next_multiple_of(64),
        }
    }
}

impl std::fmt::Display for Isp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isp::Vc4 => "VC4 ISP",
            Isp::Pisp => "PiSP",
        })
    }
}

/// Position of the planes of one rpicam-vid frame in the bytes it writes.
///
/// With `--codec yuv420`, rpicam-vid writes each libcamera buffer whole: the
/// Y plane, then U, then V, each row padded to the ISP's stride, the chroma
/// rows with half the stride of the Y rows and half as many. Widths of 640,
/// 1280 and 1920 need no padding on either ISP; 416 pixels take 448 bytes
/// per Y row on the VC4 ISP and 512 on the PiSP.
///
/// NOTE: on a Raspberry Pi 5, libcamera 0.7 enlarges the stride further
/// when the ISP cannot downscale enough in hardware and finishes in
/// software, which happens for outputs narrower than about a twelfth of the
/// sensor mode's width. Such frames come out garbled here; a larger width
/// avoids it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Yuv420Layout {
    pub size: FrameSize,
    /// Bytes from one Y row to the next; U and V rows take half.
    pub luma_stride: u32,
}

impl Yuv420Layout {
    pub fn new(size: FrameSize, isp: Isp) -> Yuv420Layout {
        Yuv420Layout { size, luma_stride: isp.luma_stride(size.width) }
    }

    /// Returns the bytes of the Y plane, which the U and V planes follow.
    pub fn luma_len(&self) -> usize {
        self.luma_stride as usize * self.size.height as usize
    }

    /// Returns the bytes of one frame: the Y plane and the two chroma planes of a quarter its size.
    pub fn frame_len(&self) -> usize {
        self.luma_len() * 3 / 2
    }
}

/// Settings of an [`RpicamSource`] from its camera entry.
#[derive(Clone, Debug, PartialEq)]
pub struct RpicamOptions {
    /// Output size, both sides even.
    pub size: FrameSize,
    /// Frame rate requested with `--framerate`, at least [`MIN_CAMERA_FPS`];
    /// rpicam-vid's default (30) when `None`.
    pub fps: Option<f64>,
    /// Further arguments for rpicam-vid, placed before `--output`.
    pub extra_args: Vec<String>,
    /// Program to run instead of looking up `rpicam-vid` and `libcamera-vid` in `PATH`.
    pub program: Option<PathBuf>,
    /// ISP whose row padding the frames have; found in `/sys/class/video4linux` when `None`.
    pub isp: Option<Isp>,
    /// Wait for each frame instead of the one derived from the frame rate.
    /// The first frame of a run gets at least [`STARTUP_TIMEOUT`] either way.
    pub timeout: Option<Duration>,
}

impl Default for RpicamOptions {
    fn default() -> Self {
        RpicamOptions { size: DEFAULT_SIZE, fps: None, extra_args: Vec::new(), program: None, isp: None, timeout: None }
    }
}

impl RpicamOptions {
    /// Takes the size, the frame rate and the extra arguments from a camera
    /// entry; the program, the ISP and the timeout keep their defaults.
    pub fn from_camera(camera: &CameraConfig) -> RpicamOptions {
        RpicamOptions {
            size: camera.frame_size.unwrap_or(DEFAULT_SIZE),
            fps: camera.frame_interval.map(|interval| 1.0 / interval.as_secs_f64()),
            extra_args: camera.rpicam_args.clone(),
            ..RpicamOptions::default()
        }
    }
}

/// One run of rpicam-vid.
struct Run {
    process: FrameProcess,
    /// File name of the program, for messages.
    program: String,
    layout: Yuv420Layout,
    frames: u64,
}

/// Frames of a Raspberry Pi camera module, captured by rpicam-vid. It always
/// counts as looping: a live camera has no last frame, so errors are retried
/// rather than ending it.
pub struct RpicamSource {
    /// The camera's `path`, which must be a camera index.
    camera: String,
    options: RpicamOptions,
    isp: Option<Isp>,
    run: Option<Run>,
    /// Bytes of the frame being read, kept between frames.
    buffer: Vec<u8>,
    converter: FrameConverter,
    frame_name: String,
    next_sequence: u64,
    /// Whether a run has delivered a frame yet, after which each restart is
    /// logged at debug level only, as restarts repeat while a camera fails.
    announced: bool,
}

impl RpicamSource {
    /// Describes a source of the camera whose index is `camera`, such as `0`, without starting anything.
    pub fn new(camera: &Path, options: RpicamOptions) -> RpicamSource {
        let camera = camera.to_string_lossy().into_owned();
        RpicamSource {
            frame_name: format!("camera{camera}"),
            camera,
            isp: options.isp,
            options,
            run: None,
            buffer: Vec::new(),
            converter: FrameConverter::new(),
            next_sequence: 0,
            announced: false,
        }
    }

    /// Returns the process id of the running rpicam-vid, if one runs.
    pub fn process_id(&self) -> Option<u32> {
        self.run.as_ref().map(|run| run.process.id())
    }

    /// Returns the wait for the next frame of a run that has delivered `frames` frames.
    pub fn frame_timeout(&self, frames: u64) -> Duration {
        let timeout = self.options.timeout.unwrap_or_else(|| {
            let per_frame = match self.camera_fps() {
                Some(fps) if fps > 0.0 => {
                    Duration::try_from_secs_f64(f64::from(TIMEOUT_FRAMES) / fps).unwrap_or(Duration::MAX)
                }
                _ => Duration::ZERO,
            };
            per_frame.max(MIN_FRAME_TIMEOUT)
        });
        if frames == 0 {
            timeout.max(STARTUP_TIMEOUT)
        } else {
            timeout
        }
    }

    /// Returns the frame rate requested from rpicam-vid, if any.
    fn camera_fps(&self) -> Option<f64> {
        self.options.fps.map(|fps| fps.max(MIN_CAMERA_FPS))
    }

    /// Returns the arguments that rpicam-vid gets for camera `camera`.
    pub fn arguments(&self, camera: u32) -> Vec<OsString> {
        let size = self.options.size;
        let mut arguments: Vec<OsString> = vec![
            "--camera".into(),
            camera.to_string().into(),
            "--width".into(),
            size.width.to_string().into(),
            "--height".into(),
            size.height.to_string().into(),
        ];
        if let Some(fps) = self.camera_fps() {
            arguments.extend(["--framerate".into(), format_rate(fps).into()]);
        }
        // --flush writes each frame out as soon as it is complete. Without
        // it, stdio keeps the end of a frame buffered until the next frame.
        let fixed = ["--codec", "yuv420", "--timeout", "0", "--nopreview", "--flush"];
        arguments.extend(fixed.into_iter().map(OsString::from));
        arguments.extend(self.options.extra_args.iter().map(OsString::from));
        arguments.extend(["--output".into(), "-".into()]);
        arguments
    }

    fn camera_index(&self) -> Result<u32, RpicamError> {
        let digits = !self.camera.is_empty() && self.camera.bytes().all(|byte| byte.is_ascii_digit());
        digits
            .then(|| self.camera.parse().ok())
            .flatten()
            .ok_or_else(|| RpicamError::InvalidCamera { camera: self.camera.clone() })
    }

    fn isp(&mut self) -> Isp {
        if let Some(isp) = self.isp {
            return isp;
        }
        let isp = match Isp::detect(Path::new(VIDEO4LINUX_CLASS)) {
            Some(isp) => {
                debug!("camera {}: frames are laid out for the {isp}", self.camera);
                isp
            }
            None => {
                // rpicam-vid will most likely fail without an ISP. Should it
                // run, the VC4 rule is the guess, and it matches the PiSP
                // for widths that are multiples of 128.
                debug!(
                    "camera {}: no bcm2835-isp or pispbe device in {VIDEO4LINUX_CLASS}; assuming the {}",
                    self.camera,
                    Isp::Vc4
                );
                Isp::Vc4
            }
        };
        self.isp = Some(isp);
        isp
    }

    fn start(&mut self) -> Result<Run, RpicamError> {
        let camera = self.camera_index()?;
        let program_path = find_rpicam_vid(self.options.program.as_deref())?;
        let program = program_path.file_name().unwrap_or(program_path.as_os_str()).to_string_lossy().into_owned();
        let layout = Yuv420Layout::new(self.options.size, self.isp());

        let mut command = Command::new(&program_path);
        command.args(self.arguments(camera));
        let stderr = StderrOptions {
            label: format!("{program} on camera {camera}"),
            secret: None,
            logged_lines: LOGGED_STDERR_LINES,
        };
        let process = FrameProcess::spawn(&mut command, stderr).map_err(|source| spawn_error(&program_path, source))?;
        debug!(
            "camera {camera}: started {} (pid {}) for {} YUV 4:2:0 frames of {} bytes",
            program_path.display(),
            process.id(),
            layout.size,
            layout.frame_len()
        );
        Ok(Run { process, program, layout, frames: 0 })
    }

    /// Ends a run whose stdout closed after `received` bytes of a frame, and
    /// turns rpicam-vid's exit into the error of this call.
    fn finish(run: &mut Run, camera: u32, received: usize) -> RpicamError {
        let status = match run.process.wait_or_kill(EXIT_GRACE) {
            Ok(status) => status,
            Err(source) => return RpicamError::Read { program: run.program.clone(), camera, source },
        };
        let message = stderr_message(&run.process);
        let program = run.program.clone();
        if received > 0 {
            let expected = run.layout.frame_len();
            RpicamError::Truncated { program, camera, received, expected, status, message }
        } else {
            RpicamError::Exited { program, camera, status, frames: run.frames, message }
        }
    }

    fn read_frame(&mut self) -> Result<Frame, RpicamError> {
        let started = Instant::now();
        let mut run = match self.run.take() {
            Some(run) => run,
            None => self.start()?,
        };
        let camera = self.camera_index()?;
        let timeout = self.frame_timeout(run.frames);

        // Dropping `run` on any error below kills and reaps rpicam-vid.
        self.buffer.resize(run.layout.frame_len(), 0);
        match read_full_within(run.process.stdout(), &mut self.buffer, timeout) {
            Ok(Filled::Complete) => {}
            Ok(Filled::Ended(received)) => return Err(RpicamSource::finish(&mut run, camera, received)),
            Ok(Filled::TimedOut(_)) => {
                run.process.stop();
                let message = stderr_message(&run.process);
                return Err(RpicamError::Stalled { program: run.program, camera, waited: timeout, message });
            }
            Err(source) => return Err(RpicamError::Read { program: run.program, camera, source }),
        }
        let captured_at = SystemTime::now();
        if run.frames == 0 {
            let (program, size, stride) = (&run.program, run.layout.size, run.layout.luma_stride);
            if self.announced {
                debug!("camera {camera}: {program} delivers frames again");
            } else {
                info!("camera {camera}: {program} delivers {size} frames ({stride} bytes per Y row)");
                self.announced = true;
            }
        }
        run.frames += 1;
        let layout = run.layout;
        self.run = Some(run);
        let sequence = self.next_sequence;
        self.next_sequence += 1;

        full_to_limited_range(&mut self.buffer, layout.luma_len());
        let raw = RawFrame {
            format: PixelFormat::Yu12,
            width: layout.size.width,
            height: layout.size.height,
            bytes_per_line: layout.luma_stride,
            data: &self.buffer,
        };
        match self.converter.convert(&raw) {
            Ok(image) => Ok(Frame {
                image,
                sequence,
                captured_at,
                name: self.frame_name.clone(),
                decode_time: started.elapsed(),
            }),
            Err(source) => Err(RpicamError::Convert { camera, sequence, source }),
        }
    }
}

impl FrameSource for RpicamSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameSourceError> {
        Ok(Some(self.read_frame()?))
    }

    fn is_looping(&self) -> bool {
        true
    }

    fn is_live(&self) -> bool {
        true
    }

    fn description(&self) -> String {
        let mut text = format!("rpicam camera {} at {}", self.camera, self.options.size);
        if let Some(fps) = self.camera_fps() {
            text.push_str(&format!(", {} fps", format_rate(fps)));
        }
        text
    }
}

fn spawn_error(program: &Path, source: io::Error) -> RpicamError {
    if source.kind() == io::ErrorKind::NotFound {
        RpicamError::ProgramNotFound { program: Some(program.to_path_buf()) }
    } else {
        RpicamError::Spawn { program: program.to_path_buf(), source }
    }
}

/// Returns the last line of the child's stderr, or a note that there was none.
fn stderr_message(process: &FrameProcess) -> String {
    process.last_stderr_line().unwrap_or_else(|| "no message on stderr".to_string())
}

/// Writes a frame rate as rpicam-vid's `--framerate` takes it: at most three
/// decimals, without trailing zeros.
fn format_rate(fps: f64) -> String {
    let text = format!("{fps:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// Maps full-range YUV samples to limited range in place: the first
/// `luma_len` bytes as Y, the rest as U and V.
///
/// rpicam-vid sets libcamera's sYCC colour space for `--codec yuv420`, which
/// is BT.601 with full range (Y, Cb and Cr from 0 to 255), while
/// [`crate::convert`] reads all YUV as limited range.
///
/// NOTE: the mapping rounds each sample to the coarser limited-range grid,
/// up to 0.6 of an 8-bit step in RGB. A range setting in
/// `convert::RawFrame` would let this source hand full range over directly
/// and drop this pass.
fn full_to_limited_range(frame: &mut [u8], luma_len: usize) {
    let (luma, chroma) = frame.split_at_mut(luma_len.min(frame.len()));
    for sample in luma {
        *sample = LUMA_TO_LIMITED[usize::from(*sample)];
    }
    for sample in chroma {
        *sample = CHROMA_TO_LIMITED[usize::from(*sample)];
    }
}

/// Full-range Y (0..=255) to limited range (16..=235), rounded.
static LUMA_TO_LIMITED: [u8; 256] = range_table(0, 16, 219);
/// Full-range Cb or Cr (0..=255, 128 for grey) to limited range (16..=240), rounded.
static CHROMA_TO_LIMITED: [u8; 256] = range_table(128, 128, 224);

/// Builds the table of `offset + (sample - origin) * span / 255`, rounded:
/// `origin` maps to `offset`, and the 255 steps of full range shrink to `span`.
const fn range_table(origin: i32, offset: i32, span: i32) -> [u8; 256] {
    let mut table = [0_u8; 256];
    let mut sample = 0;
    while sample < 256 {
        // The numerator stays positive, so adding half the divisor rounds.
        let numerator = offset * 255 + (sample - origin) * span;
        table[sample as usize] = ((numerator + 127) / 255) as u8;
        sample += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_follow_each_isp() {
        for (width, vc4, pisp) in [(640, 640, 640), (1280, 1280, 1280), (1920, 1920, 1920), (416, 448, 512)] {
            assert_eq!(Isp::Vc4.luma_stride(width), vc4, "VC4 at {width}");
            assert_eq!(Isp::Pisp.luma_stride(width), pisp, "PiSP at {width}");
        }
        // libcamera-vid on a Raspberry Pi 4 with an HQ camera wrote frames of
        // 18,677,760 bytes at 4056x3040, a stride of 4096, as a user reported
        // on the rpicam-apps issue tracker.
        let layout = Yuv420Layout::new(FrameSize { width: 4056, height: 3040 }, Isp::Vc4);
        assert_eq!(layout.frame_len(), 18_677_760);
        assert_eq!(Isp::Pisp.luma_stride(800), 896);
    }

    #[test]
    fn range_tables_map_the_ends() {
        assert_eq!((LUMA_TO_LIMITED[0], LUMA_TO_LIMITED[255]), (16, 235));
        assert_eq!((CHROMA_TO_LIMITED[0], CHROMA_TO_LIMITED[128], CHROMA_TO_LIMITED[255]), (16, 128, 240));
        // 16 + 100 × 219 / 255 = 101.88
        assert_eq!(LUMA_TO_LIMITED[100], 102);
    }

    #[test]
    fn frame_rates_are_written_briefly() {
        assert_eq!(format_rate(30.0), "30");
        assert_eq!(format_rate(2.5), "2.5");
        assert_eq!(format_rate(1000.0 / 300.0), "3.333");
    }

    #[test]
    fn camera_must_be_an_index() {
        for camera in ["front", "", "-1", "0x1"] {
            let source = RpicamSource::new(Path::new(camera), RpicamOptions::default());
            let error = source.camera_index().expect_err(camera);
            assert!(!error.is_transient(), "{camera}");
        }
        assert_eq!(RpicamSource::new(Path::new("1"), RpicamOptions::default()).camera_index().unwrap(), 1);
    }

    #[test]
    fn timeouts_grow_with_the_frame_period() {
        let source = RpicamSource::new(Path::new("0"), RpicamOptions::default());
        assert_eq!(source.frame_timeout(0), STARTUP_TIMEOUT);
        assert_eq!(source.frame_timeout(1), MIN_FRAME_TIMEOUT);
        let slow = RpicamSource::new(Path::new("0"), RpicamOptions { fps: Some(1.25), ..RpicamOptions::default() });
        assert_eq!(slow.frame_timeout(0), STARTUP_TIMEOUT);
        assert_eq!(slow.frame_timeout(5), Duration::from_millis(3200));
        // Rates below 1 fps are requested as 1 fps, four frames of which take 4 s.
        let slower = RpicamSource::new(Path::new("0"), RpicamOptions { fps: Some(0.2), ..RpicamOptions::default() });
        assert_eq!(slower.frame_timeout(5), Duration::from_secs(4));
        assert_eq!(slower.arguments(0)[6..8], ["--framerate", "1"]);
        let quick = Duration::from_millis(300);
        let fixed =
            RpicamSource::new(Path::new("0"), RpicamOptions { timeout: Some(quick), ..RpicamOptions::default() });
        assert_eq!(fixed.frame_timeout(0), STARTUP_TIMEOUT);
        assert_eq!(fixed.frame_timeout(1), quick);
    }

    #[test]
    fn isp_is_found_by_device_name() {
        let dir = tempfile::tempdir().expect("temporary folder");
        assert_eq!(Isp::detect(dir.path()), None);
        let add = |node: &str, name: &str| {
            std::fs::create_dir(dir.path().join(node)).expect("creating a device folder");
            std::fs::write(dir.path().join(node).join("name"), format!("{name}\n")).expect("writing a name");
        };
        add("video0", "unicam-image");
        add("video13", "bcm2835-isp-output0");
        assert_eq!(Isp::detect(dir.path()), Some(Isp::Vc4));
        add("video20", "pispbe-output0");
        assert_eq!(Isp::detect(dir.path()), Some(Isp::Pisp));
        assert_eq!(Isp::detect(&dir.path().join("missing")), None);
    }
}
