//! Frame sources: where the daemon's images come from, one source per camera.
//!
//! A [`FrameSource`] hands out decoded frames one at a time, each with a
//! sequence number, a name and the time it was captured. This module has the
//! file-based sources: one image file, and the JPEG and PNG files of a folder,
//! each optionally looping, and the `stream` source for video files and
//! network cameras, which reads frames decoded by an `ffmpeg` process.
//! [`v4l2`] has the `device` source for V4L2 capture devices such as USB
//! webcams, and [`rpicam`] the `rpicam` source for Raspberry Pi camera
//! modules, which reads frames captured by an `rpicam-vid` process. Sources
//! do not pace themselves: the camera worker applies the configured frame
//! rate, so that its waits can be cut short by shutdown.

mod child;
pub mod files;
pub mod rpicam;
mod stream;
pub mod v4l2;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use files::{list_images, FileSource};
pub use rpicam::{Isp, RpicamError, RpicamOptions, RpicamSource};
pub use stream::{Programs, StreamError, StreamOptions, StreamSource};
pub use v4l2::{DeviceOptions, DeviceSource, V4l2Error};

use crate::config::{CameraConfig, SourceKind};
use crate::preprocess::{PreprocessError, RgbImage};

/// One decoded frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub image: RgbImage,
    /// Position in the source, from 0. A frame that could not be decoded
    /// still uses up its number, so gaps show skipped frames.
    pub sequence: u64,
    /// When the frame was read; for files, when reading started.
    pub captured_at: SystemTime,
    /// Name of the frame within its source, such as the file name `bus.jpg`.
    pub name: String,
    /// Time spent reading and decoding the frame.
    pub decode_time: Duration,
}

/// Reason why a source produced no frame on this call.
#[derive(Debug, thiserror::Error)]
pub enum FrameSourceError {
    /// One frame could not be read or decoded. The source goes on with the
    /// next frame, and does not return this error again for the same
    /// unchanged file.
    #[error("skipping frame {name}")]
    Skipped {
        name: String,
        #[source]
        source: Box<PreprocessError>,
    },
    /// The folder of a folder source could not be listed.
    #[error("listing folder {path}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A whole pass over the source produced no frame: no JPEG or PNG files,
    /// or only files that have failed before.
    #[error("{path} has no JPEG or PNG image that can be decoded")]
    Empty { path: PathBuf },
    /// A `stream` source's ffmpeg could not start, failed or ended early.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A `device` source's device is missing, unusable or silent, or one of
    /// its buffers was skipped.
    #[error(transparent)]
    Device(#[from] V4l2Error),
    /// An `rpicam` source's rpicam-vid could not start, exited or stalled, or
    /// one of its frames was skipped.
    #[error(transparent)]
    Rpicam(#[from] RpicamError),
}

impl FrameSourceError {
    /// Returns true when only one frame is lost and the source can go on at
    /// once, and false when the source as a whole is unavailable for now.
    pub fn is_skipped_frame(&self) -> bool {
        match self {
            FrameSourceError::Skipped { .. } => true,
            FrameSourceError::Device(error) => error.is_skipped_frame(),
            FrameSourceError::Rpicam(error) => error.is_skipped_frame(),
            _ => false,
        }
    }

    /// Returns true when the source may recover by itself, such as a network
    /// camera whose connection dropped, so that it is worth retrying even a
    /// source that does not loop.
    pub fn is_transient(&self) -> bool {
        match self {
            FrameSourceError::Stream(error) => error.is_transient(),
            FrameSourceError::Device(error) => error.is_transient(),
            FrameSourceError::Rpicam(error) => error.is_transient(),
            _ => false,
        }
    }
}

/// A stream of frames from one camera or file set.
pub trait FrameSource: Send {
    /// Returns the next frame, `Ok(None)` once a source that does not loop
    /// has delivered its last frame, or an error for this call only.
    ///
    /// # Errors
    /// [`FrameSourceError::Skipped`] loses one frame, and the next call goes
    /// on. Other errors mean the source is unavailable; a looping source may
    /// recover on a later call, so callers should wait before retrying.
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameSourceError>;

    /// Returns whether the source starts over after its last frame instead of ending.
    fn is_looping(&self) -> bool;

    /// Returns whether frames arrive in real time whether or not they are
    /// taken, as from a camera, so that a slow consumer must skip to the
    /// newest frame. Files and non-realtime video files wait for the reader
    /// instead, and none of their frames is skipped.
    fn is_live(&self) -> bool;

    /// Kind and location for logs, such as `folder /var/lib/edgedet/images`.
    fn description(&self) -> String;
}

/// Opens the source that a camera entry describes. Opening does no I/O:
/// a missing path shows up as an error from the first
/// [`FrameSource::next_frame`].
pub fn open(camera: &CameraConfig) -> Box<dyn FrameSource> {
    match camera.source {
        SourceKind::Image => Box::new(FileSource::image(camera.path.clone(), camera.looping)),
        SourceKind::Folder => Box::new(FileSource::folder(camera.path.clone(), camera.looping)),
        SourceKind::Stream => Box::new(StreamSource::new(
            &camera.path,
            StreamOptions {
                looping: camera.looping,
                realtime: camera.realtime,
                size: camera.frame_size,
                programs: Programs::default(),
            },
        )),
        SourceKind::Device => Box::new(DeviceSource::new(
            &camera.path,
            DeviceOptions {
                size: camera.frame_size,
                fps: camera.frame_interval.map(|interval| 1.0 / interval.as_secs_f64()),
                pixel_format: camera.pixel_format,
            },
        )),
        SourceKind::Rpicam => Box::new(RpicamSource::new(&camera.path, RpicamOptions::from_camera(camera))),
    }
}

/// Checks that the programs the cameras' sources run are installed, so that
/// `edgedet check` and `edgedet run` report a missing ffmpeg or rpicam-vid
/// before starting.
///
/// # Errors
/// [`StreamError::ProgramNotFound`] or [`RpicamError::ProgramNotFound`]
/// naming the first missing program.
pub fn check_programs(cameras: &[CameraConfig]) -> Result<(), FrameSourceError> {
    let programs = Programs::default();
    for camera in cameras {
        match camera.source {
            SourceKind::Stream => programs.check(camera.frame_size.is_none())?,
            SourceKind::Rpicam => {
                rpicam::find_rpicam_vid(None)?;
            }
            SourceKind::Image | SourceKind::Folder | SourceKind::Device => {}
        }
    }
    Ok(())
}
