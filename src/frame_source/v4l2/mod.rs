//! The `device` source: frames from a V4L2 capture device such as a USB webcam.
//!
//! [`DeviceSource`] opens the device on its first call, negotiates a format
//! ([`negotiate`]), streams through memory-mapped buffers and converts each
//! buffer to RGB with [`crate::convert`]. It reads only the first
//! `bytes_used` bytes of a buffer and walks rows by the `bytes_per_line`
//! that the driver set. Buffers flagged as corrupt, empty buffers and
//! frames that fail to convert are skipped one at a time.
//!
//! A device that is missing, unplugged or silent for longer than
//! [`DeviceSource::timeout`] makes the source unavailable for that call. It
//! closes the device and opens it again on the next call, so the camera
//! worker's retries with backoff bring it back. This module does not
//! demosaic raw Bayer frames, does not capture multi-planar formats and does
//! not pace frames: the worker applies the configured rate.
//!
//! NOTE: with four buffers queued, a consumer slower than the camera reads
//! frames up to four frame periods old.

pub mod device;
pub mod listing;
pub mod negotiate;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info};

use self::device::{ActiveFormat, CaptureDevice, DequeueError, DeviceOpener, V4l2Opener};
use self::negotiate::{fourcc_text, CaptureRequest, DEFAULT_SIZE};
use super::{Frame, FrameSource, FrameSourceError};
use crate::config::FrameSize;
use crate::convert::{ConvertError, FrameConverter, PixelFormat, RawFrame};

/// Shortest wait for a buffer before the device counts as unavailable. It
/// leaves room for cameras that are slow to deliver their first frame after
/// streaming starts.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Frame periods to wait for a buffer, when that is longer than [`MIN_TIMEOUT`].
const TIMEOUT_FRAMES: u32 = 4;

/// Failure of a `device` source, or one skipped frame.
#[derive(Debug, thiserror::Error)]
pub enum V4l2Error {
    #[error("opening {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{action} on {}", .path.display())]
    Ioctl {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{} ({card}) is {kind}: set path to the camera's video capture node (`edgedet cameras` lists them)", .path.display())]
    NotCapture { path: PathBuf, card: String, kind: &'static str },
    #[error(
        "{} ({card}) supports only multi-planar capture, which edgedet does not read: use a camera with single-planar capture, such as a USB (UVC) camera",
        .path.display()
    )]
    MultiPlanarOnly { path: PathBuf, card: String },
    #[error("{} ({card}) does not support streaming I/O, which edgedet needs", .path.display())]
    NoStreaming { path: PathBuf, card: String },
    #[error(
        "{} ({card}, driver {driver}) offers only raw Bayer formats ({offered}), which edgedet does not demosaic: on a Raspberry Pi, set source = \"rpicam\" and path to the camera's index (\"0\" for the first; `rpicam-hello --list-cameras` lists them), so that rpicam-vid runs the camera through the ISP; elsewhere use a USB (UVC) camera or the board vendor's capture pipeline",
        .path.display()
    )]
    BayerOnly { path: PathBuf, card: String, driver: String, offered: String },
    #[error(
        "{} offers no pixel format that edgedet converts (offered: {offered}; supported: MJPG, JPEG, YUYV, NV12, YU12, RGB3, GREY)",
        .path.display()
    )]
    NoSupportedFormat { path: PathBuf, offered: String },
    #[error("{} does not offer pixel_format {format} (offered: {offered}): remove pixel_format or pick an offered one", .path.display())]
    ForcedFormatAbsent { path: PathBuf, format: PixelFormat, offered: String },
    #[error("{} answered the format request with {fourcc}, which edgedet does not convert: set pixel_format to an offered format", .path.display())]
    UnsupportedAnswer { path: PathBuf, fourcc: String },
    #[error("{} is gone (unplugged or its driver unbound)", .path.display())]
    Gone {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} delivered no frame within {} ms", .path.display(), .waited.as_millis())]
    Timeout { path: PathBuf, waited: Duration },
    #[error("reading a frame from {}", .path.display())]
    Dequeue {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("skipping frame {sequence} of {}: the driver flagged the buffer as corrupt", .path.display())]
    CorruptBuffer { path: PathBuf, sequence: u64 },
    #[error("skipping frame {sequence} of {}: the buffer is empty", .path.display())]
    EmptyBuffer { path: PathBuf, sequence: u64 },
    #[error("skipping frame {sequence} of {}", .path.display())]
    Convert {
        path: PathBuf,
        sequence: u64,
        #[source]
        source: ConvertError,
    },
}

impl V4l2Error {
    /// Returns true when only one frame is lost and the next call goes on streaming.
    pub fn is_skipped_frame(&self) -> bool {
        matches!(self, V4l2Error::CorruptBuffer { .. } | V4l2Error::EmptyBuffer { .. } | V4l2Error::Convert { .. })
    }

    /// Returns true when the device may come back by itself: it is missing,
    /// unplugged, busy or silent. A device that offers nothing usable stays
    /// that way until the config or the hardware changes.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            V4l2Error::Open { .. }
                | V4l2Error::Ioctl { .. }
                | V4l2Error::Gone { .. }
                | V4l2Error::Timeout { .. }
                | V4l2Error::Dequeue { .. }
        )
    }
}

/// Settings of a [`DeviceSource`] from its camera entry.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DeviceOptions {
    /// Requested frame size; [`DEFAULT_SIZE`] when `None`.
    pub size: Option<FrameSize>,
    /// Requested frame rate in frames per second; the driver's when `None`.
    pub fps: Option<f64>,
    /// Pixel format to use instead of the preference order.
    pub pixel_format: Option<PixelFormat>,
}

/// An open, streaming device and the format its driver set.
struct Streaming {
    device: Box<dyn CaptureDevice>,
    format: ActiveFormat,
    pixel_format: PixelFormat,
    timeout: Duration,
}

/// Frames of a V4L2 capture device. It always counts as looping: a live
/// camera has no last frame, so errors are retried rather than ending it.
pub struct DeviceSource {
    path: PathBuf,
    options: DeviceOptions,
    opener: Box<dyn DeviceOpener>,
    streaming: Option<Streaming>,
    converter: FrameConverter,
    frame_name: String,
    next_sequence: u64,
    skipped: u64,
}

impl DeviceSource {
    /// Describes a source of the device at `path` without opening it.
    pub fn new(path: &Path, options: DeviceOptions) -> DeviceSource {
        DeviceSource::with_opener(path, options, Box::new(V4l2Opener))
    }

    /// Describes a source that opens its device through `opener`, such as a fake for tests.
    pub fn with_opener(path: &Path, options: DeviceOptions, opener: Box<dyn DeviceOpener>) -> DeviceSource {
        let frame_name = path.file_name().unwrap_or(path.as_os_str()).to_string_lossy().into_owned();
        DeviceSource {
            path: path.to_path_buf(),
            options,
            opener,
            streaming: None,
            converter: FrameConverter::new(),
            frame_name,
            next_sequence: 0,
            skipped: 0,
        }
    }

    /// Returns the number of buffers skipped so far: corrupt, empty or not convertible.
    pub fn skipped_frames(&self) -> u64 {
        self.skipped
    }

    /// Returns the format the driver set, once the device is streaming.
    pub fn active_format(&self) -> Option<ActiveFormat> {
        self.streaming.as_ref().map(|streaming| streaming.format)
    }

    /// Returns the wait for one buffer, once the device is streaming.
    pub fn timeout(&self) -> Option<Duration> {
        self.streaming.as_ref().map(|streaming| streaming.timeout)
    }

    fn ioctl_error(&self, action: &'static str) -> impl FnOnce(io::Error) -> V4l2Error + '_ {
        move |source| V4l2Error::Ioctl { path: self.path.clone(), action, source }
    }

    /// Opens the device, negotiates a format and allocates its buffers.
    fn start(&mut self) -> Result<Streaming, V4l2Error> {
        let mut device =
            self.opener.open(&self.path).map_err(|source| V4l2Error::Open { path: self.path.clone(), source })?;

        let profile = negotiate::probe(device.as_ref()).map_err(self.ioctl_error("querying formats"))?;
        let request = CaptureRequest {
            size: self.options.size.unwrap_or(DEFAULT_SIZE),
            fps: self.options.fps,
            pixel_format: self.options.pixel_format,
        };
        let choice = negotiate::choose(&profile, &request, &self.path)?;

        let format = device
            .set_format(choice.width, choice.height, choice.fourcc)
            .map_err(self.ioctl_error("setting the format"))?;
        let pixel_format = PixelFormat::from_fourcc(format.fourcc).map_err(|_| V4l2Error::UnsupportedAnswer {
            path: self.path.clone(),
            fourcc: fourcc_text(format.fourcc),
        })?;

        // Drivers without frame rate control reject this, and the camera then
        // runs at its own rate; the worker still applies the configured one.
        let mut frame_period = None;
        if let Some(interval) = choice.interval {
            match device.set_frame_interval(interval) {
                Ok(set) => frame_period = set.fps().map(|fps| Duration::from_secs_f64(1.0 / fps)),
                Err(error) => debug!("{}: setting the frame interval failed: {error}", self.path.display()),
            }
        }
        let timeout = frame_period.map_or(MIN_TIMEOUT, |period| period.saturating_mul(TIMEOUT_FRAMES).max(MIN_TIMEOUT));

        device.start().map_err(self.ioctl_error("allocating capture buffers"))?;
        info!(
            "{} ({}): capturing {} {}x{} ({} bytes per line), waiting up to {} ms per frame",
            self.path.display(),
            profile.caps.card,
            pixel_format,
            format.width,
            format.height,
            format.bytes_per_line,
            timeout.as_millis()
        );
        Ok(Streaming { device, format, pixel_format, timeout })
    }
}

impl FrameSource for DeviceSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameSourceError> {
        if self.streaming.is_none() {
            self.streaming = Some(self.start()?);
        }
        let Some(streaming) = self.streaming.as_mut() else {
            return Ok(None);
        };

        let started = Instant::now();
        let buffer = match streaming.device.dequeue(streaming.timeout) {
            Ok(buffer) => buffer,
            Err(error) => {
                // The buffer queue is in an unknown state after any error, so
                // the next call opens the device again.
                self.streaming = None;
                let path = self.path.clone();
                return Err(match error {
                    DequeueError::Gone(source) => V4l2Error::Gone { path, source },
                    DequeueError::Timeout(waited) => V4l2Error::Timeout { path, waited },
                    DequeueError::Other(source) => V4l2Error::Dequeue { path, source },
                }
                .into());
            }
        };
        let captured_at = SystemTime::now();
        let sequence = self.next_sequence;
        self.next_sequence += 1;

        let skip = if buffer.error_flag {
            Some(V4l2Error::CorruptBuffer { path: self.path.clone(), sequence })
        } else if buffer.bytes_used == 0 {
            Some(V4l2Error::EmptyBuffer { path: self.path.clone(), sequence })
        } else {
            None
        };
        if let Some(error) = skip {
            self.skipped += 1;
            return Err(error.into());
        }

        let used = usize::try_from(buffer.bytes_used).unwrap_or(usize::MAX).min(buffer.data.len());
        let format = streaming.format;
        let bytes_per_line = if format.bytes_per_line == 0 {
            RawFrame::packed(streaming.pixel_format, format.width, format.height, &[]).bytes_per_line
        } else {
            format.bytes_per_line
        };
        let raw = RawFrame {
            format: streaming.pixel_format,
            width: format.width,
            height: format.height,
            bytes_per_line,
            data: &buffer.data[..used],
        };
        match self.converter.convert(&raw) {
            Ok(image) => Ok(Some(Frame {
                image,
                sequence,
                captured_at,
                name: self.frame_name.clone(),
                decode_time: started.elapsed(),
            })),
            Err(source) => {
                self.skipped += 1;
                Err(V4l2Error::Convert { path: self.path.clone(), sequence, source }.into())
            }
        }
    }

    fn is_looping(&self) -> bool {
        true
    }

    fn is_live(&self) -> bool {
        true
    }

    fn description(&self) -> String {
        format!("device {}", self.path.display())
    }
}
