//! A frame source for video files and network streams, decoded by an `ffmpeg` child process.
//!
//! ffmpeg demuxes and decodes every container, codec and protocol it
//! supports (MP4, MKV, RTSP, HTTP MJPEG, ...) and writes raw RGB24 frames to
//! its stdout. This source reads them one frame at a time on the camera's
//! thread. The frame size must be known before the first
//! byte is read: either the config sets `width` and `height`, or ffprobe
//! reads the size of the input's first video stream. In both cases ffmpeg
//! scales its output to that size, so a stream that changes resolution
//! mid-way still yields frames of the expected length.
//!
//! This module does not pace frames or retry: the camera worker does both.
//! It does restart ffmpeg on the call after an error, and at the end of a
//! looping input.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use log::debug;

use super::child::{find_program, hide_secret, last_line, read_full, FrameProcess, StderrOptions};
use super::{Frame, FrameSource, FrameSourceError};
use crate::config::{is_url, FrameSize};
use crate::preprocess::RgbImage;

/// Time after which ffmpeg gives up on a network input that sends nothing.
/// Without it, a stalled camera would block the camera's thread, and with it
/// the daemon's shutdown, until the TCP connection times out.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);

/// Failure of a stream source to produce a frame.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{}", program_not_found_message(.program))]
    ProgramNotFound { program: PathBuf },
    #[error("starting {} failed", .program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("ffprobe could not read the video size of {input}: {message}")]
    Probe { input: Input, message: String },
    #[error("{input} has no video stream")]
    NoVideo { input: Input },
    #[error(
        "{input} has frames of {width}x{height}, outside 1 to {max} pixels a side: set width and height to scale them",
        max = FrameSize::MAX_SIDE
    )]
    InvalidSize { input: Input, width: u64, height: u64 },
    #[error("ffmpeg stopped decoding {input} ({status}): {message}")]
    Exited { input: Input, status: ExitStatus, message: String },
    #[error("ffmpeg ended {input} in the middle of a frame ({received} of {expected} bytes)")]
    Truncated { input: Input, received: usize, expected: usize },
    #[error("{input} ended before its first frame")]
    NoFrames { input: Input },
    #[error("reading frames of {input} from ffmpeg")]
    Read {
        input: Input,
        #[source]
        source: io::Error,
    },
}

fn program_not_found_message(program: &Path) -> String {
    if program.components().count() > 1 {
        format!("{} not found: install ffmpeg (Debian: apt install ffmpeg)", program.display())
    } else {
        format!("{} not found in PATH: install it (Debian: apt install ffmpeg)", program.display())
    }
}

impl StreamError {
    /// Returns true when the failure may go away by itself, so that the
    /// worker should try again even for a source that does not loop. This
    /// covers any failure of a network stream, and an ffmpeg process that was
    /// killed or whose output could not be read. A local file that ffmpeg
    /// rejects stays rejected until it is replaced.
    pub fn is_transient(&self) -> bool {
        match self {
            StreamError::ProgramNotFound { .. } | StreamError::Spawn { .. } | StreamError::InvalidSize { .. } => false,
            StreamError::Read { .. } => true,
            StreamError::Exited { input, status, .. } => input.is_url || status.signal().is_some(),
            StreamError::Probe { input, .. }
            | StreamError::NoVideo { input }
            | StreamError::Truncated { input, .. }
            | StreamError::NoFrames { input } => input.is_url,
        }
    }
}

/// A stream source's input as it appears in messages: a file path, or a URL
/// with its password replaced by `***`.
#[derive(Clone, Debug)]
pub struct Input {
    shown: String,
    is_url: bool,
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The programs that a stream source runs, by default `ffmpeg` and `ffprobe` from `PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programs {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

impl Default for Programs {
    fn default() -> Self {
        Programs { ffmpeg: PathBuf::from("ffmpeg"), ffprobe: PathBuf::from("ffprobe") }
    }
}

impl Programs {
    /// Checks that ffmpeg, and ffprobe when `probe` is true, can be run, so
    /// that a missing program is reported at start rather than by the camera.
    ///
    /// # Errors
    /// [`StreamError::ProgramNotFound`] naming the first missing program.
    pub fn check(&self, probe: bool) -> Result<(), StreamError> {
        let mut programs = vec![&self.ffmpeg];
        if probe {
            programs.push(&self.ffprobe);
        }
        for program in programs {
            if find_program(program).is_none() {
                return Err(StreamError::ProgramNotFound { program: program.clone() });
            }
        }
        Ok(())
    }
}

/// Settings of a [`StreamSource`]: looping, pacing, frame size and the programs it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// Start ffmpeg again at the end of the input instead of ending.
    pub looping: bool,
    /// Read the input at its own frame rate (ffmpeg's `-re`).
    pub realtime: bool,
    /// Size that frames are scaled to. With `None`, ffprobe reads the
    /// input's size each time ffmpeg starts.
    pub size: Option<FrameSize>,
    pub programs: Programs,
}

/// Frames of a video file or network stream, decoded by ffmpeg.
///
/// ffmpeg starts on the first call to [`FrameSource::next_frame`] and again
/// on the call after an error. At the end of the input, a looping source
/// starts ffmpeg again, so a video file plays from the start and a URL is
/// reconnected, and a source that does not loop ends. Sequence numbers go
/// on across restarts. A frame's `decode_time` is the time spent waiting for
/// ffmpeg's output, which for a live or realtime input includes the wait for
/// the frame to arrive.
pub struct StreamSource {
    /// Argument of ffmpeg's `-i`: the URL, or `file:` followed by the path,
    /// so that ffmpeg reads names containing `:` or starting with `-` as files.
    ffmpeg_input: OsString,
    input: Input,
    /// Name given to every frame: the file name, or the URL without password.
    frame_name: String,
    /// Password of the URL, hidden wherever ffmpeg repeats the URL.
    password: Option<String>,
    looping: bool,
    realtime: bool,
    configured_size: Option<FrameSize>,
    programs: Programs,
    decoder: Option<Decoder>,
    frames_in_run: u64,
    ended: bool,
    next_sequence: u64,
}

impl StreamSource {
    /// Describes a source of `path`, a file path or URL, without starting anything.
    pub fn new(path: &Path, options: StreamOptions) -> StreamSource {
        let StreamOptions { looping, realtime, size, programs } = options;
        let url = is_url(path);
        let (shown, password) =
            if url { hide_password(&path.to_string_lossy()) } else { (path.display().to_string(), None) };
        let ffmpeg_input = if url {
            path.as_os_str().to_owned()
        } else {
            let mut input = OsString::from("file:");
            input.push(path.as_os_str());
            input
        };
        let frame_name = if url {
            shown.clone()
        } else {
            path.file_name().unwrap_or(path.as_os_str()).to_string_lossy().into_owned()
        };
        StreamSource {
            ffmpeg_input,
            input: Input { shown, is_url: url },
            frame_name,
            password,
            looping,
            realtime,
            configured_size: size,
            programs,
            decoder: None,
            frames_in_run: 0,
            ended: false,
            next_sequence: 0,
        }
    }

    fn is_rtsp(&self) -> bool {
        let text = self.ffmpeg_input.to_string_lossy();
        text.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("rtsp://"))
            || text.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("rtsps://"))
    }

    /// Options that go before `-i` in both ffprobe and ffmpeg.
    fn input_options(&self) -> Vec<OsString> {
        let timeout = NETWORK_TIMEOUT.as_micros().to_string();
        if self.is_rtsp() {
            // UDP loses packets and so whole frames on busy networks; TCP
            // gets through firewalls and NAT too. The RTSP demuxer takes its
            // socket timeout as `-timeout`.
            vec!["-rtsp_transport".into(), "tcp".into(), "-timeout".into(), timeout.into()]
        } else if self.input.is_url {
            vec!["-rw_timeout".into(), timeout.into()]
        } else {
            Vec::new()
        }
    }

    /// Reads the size of the input's first video stream with ffprobe.
    fn probe_size(&self) -> Result<FrameSize, StreamError> {
        let program = &self.programs.ffprobe;
        let output = Command::new(program)
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0"])
            .args(self.input_options())
            .arg("-i")
            .arg(&self.ffmpeg_input)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| spawn_error(program, source))?;

        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message = last_line(stderr.lines()).unwrap_or_else(|| output.status.to_string());
            return Err(StreamError::Probe { input: self.input.clone(), message: self.hide(&message) });
        }

        let stdout = String::from_utf8_lossy(&output.stdout);
        let Some(line) = stdout.lines().map(str::trim).find(|line| !line.is_empty()) else {
            return Err(StreamError::NoVideo { input: self.input.clone() });
        };
        let mut numbers = line.split(',').filter(|field| !field.is_empty()).map(str::parse::<u64>);
        match (numbers.next(), numbers.next()) {
            (Some(Ok(width)), Some(Ok(height))) => {
                let size = u32::try_from(width).ok().zip(u32::try_from(height).ok());
                size.and_then(|(width, height)| FrameSize::new(width, height)).ok_or(StreamError::InvalidSize {
                    input: self.input.clone(),
                    width,
                    height,
                })
            }
            _ => Err(StreamError::Probe {
                input: self.input.clone(),
                message: format!("expected \"width,height\", found {line:?}"),
            }),
        }
    }

    fn start(&mut self) -> Result<Decoder, StreamError> {
        let size = match self.configured_size {
            Some(size) => size,
            None => self.probe_size()?,
        };

        let mut command = Command::new(&self.programs.ffmpeg);
        command.args(["-nostdin", "-loglevel", "error"]);
        if self.realtime {
            command.arg("-re");
        }
        command
            .args(self.input_options())
            .arg("-i")
            .arg(&self.ffmpeg_input)
            .args(["-map", "0:v:0", "-an", "-sn", "-dn"])
            .args(["-s", &size.to_string()])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]);
        let stderr = StderrOptions {
            label: format!("ffmpeg on {}", self.input),
            secret: self.password.clone(),
            logged_lines: usize::MAX,
        };
        let child =
            FrameProcess::spawn(&mut command, stderr).map_err(|source| spawn_error(&self.programs.ffmpeg, source))?;
        debug!("started ffmpeg (pid {}) on {} at {size}", child.id(), self.input);
        self.frames_in_run = 0;
        Ok(Decoder { child, size })
    }

    fn hide(&self, text: &str) -> String {
        hide_secret(text, self.password.as_deref())
    }

    /// Ends the current run of ffmpeg after its stdout closed or failed,
    /// and turns its exit into the result of this call.
    fn finish_run(&mut self, mut decoder: Decoder, received: usize) -> Result<Option<Frame>, StreamError> {
        let status = decoder.wait();
        let message = decoder.last_stderr_line();
        let input = self.input.clone();

        match status {
            Ok(status) if !status.success() => {
                let message = message.unwrap_or_else(|| "no error message".to_string());
                Err(StreamError::Exited { input, status, message })
            }
            Err(source) => Err(StreamError::Read { input, source }),
            Ok(_) if received > 0 => Err(StreamError::Truncated { input, received, expected: decoder.frame_len() }),
            Ok(_) if self.frames_in_run == 0 => Err(StreamError::NoFrames { input }),
            Ok(_) => {
                debug!("{} ended after {} frames", self.input, self.frames_in_run);
                if !self.looping {
                    self.ended = true;
                }
                Ok(None)
            }
        }
    }

    fn read_frame(&mut self) -> Result<Option<Frame>, StreamError> {
        let mut decoder = match self.decoder.take() {
            Some(decoder) => decoder,
            None => self.start()?,
        };

        let started = Instant::now();
        let mut buffer = vec![0_u8; decoder.frame_len()];
        let received = match read_full(decoder.child.stdout(), &mut buffer) {
            Ok(received) => received,
            Err(source) => {
                // Dropping the decoder kills and reaps ffmpeg.
                return Err(StreamError::Read { input: self.input.clone(), source });
            }
        };
        if received < buffer.len() {
            return self.finish_run(decoder, received);
        }

        let captured_at = SystemTime::now();
        let size = decoder.size;
        self.decoder = Some(decoder);
        self.frames_in_run += 1;
        let sequence = self.next_sequence;
        self.next_sequence += 1;

        // The buffer contains exactly width × height × 3 bytes, which is what
        // `from_raw` checks, so this error is not expected to occur.
        let image = RgbImage::from_raw(size.width, size.height, buffer).ok_or_else(|| StreamError::Read {
            input: self.input.clone(),
            source: io::Error::other(format!("{received} bytes are not one {size} RGB frame")),
        })?;
        Ok(Some(Frame { image, sequence, captured_at, name: self.frame_name.clone(), decode_time: started.elapsed() }))
    }
}

impl FrameSource for StreamSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameSourceError> {
        if self.ended {
            return Ok(None);
        }
        // One restart at the end of a looping input; a second end in a row
        // without frames is reported by `finish_run` as `NoFrames`.
        for _ in 0..2 {
            match self.read_frame()? {
                Some(frame) => return Ok(Some(frame)),
                None if self.ended => return Ok(None),
                None => continue,
            }
        }
        Err(StreamError::NoFrames { input: self.input.clone() }.into())
    }

    fn is_looping(&self) -> bool {
        self.looping
    }

    fn is_live(&self) -> bool {
        self.realtime || self.input.is_url
    }

    fn description(&self) -> String {
        match self.configured_size {
            Some(size) => format!("stream {} scaled to {size}", self.input),
            None => format!("stream {}", self.input),
        }
    }
}

fn spawn_error(program: &Path, source: io::Error) -> StreamError {
    if source.kind() == io::ErrorKind::NotFound {
        StreamError::ProgramNotFound { program: program.to_path_buf() }
    } else {
        StreamError::Spawn { program: program.to_path_buf(), source }
    }
}

/// A running ffmpeg process and the size of its frames. Dropping it kills and reaps the process.
struct Decoder {
    child: FrameProcess,
    size: FrameSize,
}

impl Decoder {
    fn frame_len(&self) -> usize {
        // Both sides are at most FrameSize::MAX_SIDE, so this is at most
        // 805,306,368, which fits in a 32-bit usize too.
        self.size.width as usize * self.size.height as usize * 3
    }

    /// Waits for ffmpeg to exit, then for its stderr to be read to the end.
    fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait()
    }

    fn last_stderr_line(&self) -> Option<String> {
        self.child.last_stderr_line()
    }
}

/// Splits a URL into the text to show, with the password replaced by
/// `***`, and the password itself.
fn hide_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return (url.to_string(), None);
    };
    let user_info = &authority[..at];
    let Some((user, password)) = user_info.split_once(':') else {
        return (url.to_string(), None);
    };
    if password.is_empty() {
        return (url.to_string(), None);
    }
    let shown = format!("{scheme}://{user}:***{}", &rest[at..]);
    (shown, Some(password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_hidden_in_url() {
        let (shown, password) = hide_password("rtsp://admin:s3cret@192.0.2.10:554/stream1?x=1");
        assert_eq!(shown, "rtsp://admin:***@192.0.2.10:554/stream1?x=1");
        assert_eq!(password.as_deref(), Some("s3cret"));
    }

    #[test]
    fn url_without_password_is_unchanged() {
        for url in ["http://192.0.2.10/video.mjpg", "rtsp://admin@192.0.2.10/stream", "http://host/a@b"] {
            assert_eq!(hide_password(url), (url.to_string(), None), "{url}");
        }
    }

    #[test]
    fn frame_name_of_file_is_its_file_name() {
        let source = StreamSource::new(Path::new("/videos/yard.mp4"), StreamOptions::default());
        assert_eq!(source.frame_name, "yard.mp4");
        assert_eq!(source.ffmpeg_input, OsString::from("file:/videos/yard.mp4"));
        assert_eq!(source.description(), "stream /videos/yard.mp4");
    }

    #[test]
    fn rtsp_url_is_read_over_tcp() {
        let options = StreamOptions { size: FrameSize::new(640, 480), ..StreamOptions::default() };
        let source = StreamSource::new(Path::new("RTSP://admin:pw@192.0.2.10/stream"), options);
        let options: Vec<OsString> =
            ["-rtsp_transport", "tcp", "-timeout", "10000000"].into_iter().map(OsString::from).collect();
        assert_eq!(source.input_options(), options);
        assert_eq!(source.description(), "stream RTSP://admin:***@192.0.2.10/stream scaled to 640x480");
    }

    #[test]
    fn missing_program_message_says_what_to_install() {
        let error = StreamError::ProgramNotFound { program: PathBuf::from("ffmpeg") };
        assert_eq!(error.to_string(), "ffmpeg not found in PATH: install it (Debian: apt install ffmpeg)");
        assert!(!error.is_transient());
    }

    #[test]
    fn read_full_stops_at_end_of_stream() {
        let mut buffer = [0_u8; 8];
        assert_eq!(read_full(&mut &b"abc"[..], &mut buffer).expect("reading from a slice"), 3);
        assert_eq!(&buffer[..3], b"abc");
    }

    #[test]
    fn drop_kills_and_reaps_ffmpeg() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let video = dir.path().join("pattern.mkv");
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5"])
            .args(["-frames:v", "50", "-c:v", "ffv1"])
            .arg(&video)
            .status()
            .expect("running ffmpeg (Debian: apt install ffmpeg)");
        assert!(status.success(), "ffmpeg could not write the test pattern");

        let options = StreamOptions { size: FrameSize::new(64, 48), ..StreamOptions::default() };
        let mut source = StreamSource::new(&video, options);
        let frame = source.next_frame().expect("first frame").expect("the video has frames");
        assert_eq!(frame.image.dimensions(), (64, 48));
        let pid = source.decoder.as_ref().expect("ffmpeg is running").child.id();
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "ffmpeg {pid} runs while frames are read");

        // ffmpeg has 49 frames left to write, so only the kill ends it. A
        // process that is killed but not reaped would stay in /proc as a zombie.
        drop(source);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "ffmpeg {pid} is still in /proc after the drop");
    }
}
