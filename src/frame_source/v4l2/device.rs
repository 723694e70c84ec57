//! The seam between the `device` source and a V4L2 capture device.
//!
//! [`CaptureDevice`] is the part of the V4L2 API that the source and
//! `edgedet cameras` use: capabilities, format enumeration, format and frame
//! interval negotiation, and memory-mapped streaming. [`V4l2Device`]
//! implements it with the `v4l` crate; tests implement it with scripted
//! fakes. [`DeviceOpener`] opens a device by path, so that a source can open
//! its device again after it was unplugged.
//!
//! This module does not choose formats or convert pixels.

use std::io;
use std::path::Path;
use std::time::Duration;

/// Identity and capability flags of one device node, from `VIDIOC_QUERYCAP`. The flags come from
/// the node's `device_caps`, not from the capabilities of the whole device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceCaps {
    /// Kernel driver, such as `uvcvideo` or `unicam`.
    pub driver: String,
    /// Device name, such as the USB product name.
    pub card: String,
    /// Location on its bus, such as `usb-0000:01:00.0-1.2`.
    pub bus_info: String,
    /// Single-planar video capture (`V4L2_CAP_VIDEO_CAPTURE`).
    pub video_capture: bool,
    /// Multi-planar video capture (`V4L2_CAP_VIDEO_CAPTURE_MPLANE`).
    pub video_capture_mplane: bool,
    /// Metadata capture, as on the metadata node that uvcvideo creates beside a webcam's video node (`V4L2_CAP_META_CAPTURE`).
    pub meta_capture: bool,
    /// Streaming I/O (`V4L2_CAP_STREAMING`), which memory-mapped buffers need.
    pub streaming: bool,
}

/// One entry of `VIDIOC_ENUM_FMT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatDescription {
    pub fourcc: [u8; 4],
    /// The driver's description, such as `Motion-JPEG`.
    pub description: String,
}

/// One entry of `VIDIOC_ENUM_FRAMESIZES`, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameSizes {
    Discrete {
        width: u32,
        height: u32,
    },
    /// Every size from the minimum to the maximum in the given steps. A
    /// continuous range has steps of 1.
    Stepwise {
        min_width: u32,
        max_width: u32,
        step_width: u32,
        min_height: u32,
        max_height: u32,
        step_height: u32,
    },
}

/// A frame interval in seconds, as V4L2's `numerator / denominator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fraction {
    pub numerator: u32,
    pub denominator: u32,
}

impl Fraction {
    /// Returns the frame rate this interval gives, or `None` for a zero interval.
    pub fn fps(self) -> Option<f64> {
        (self.numerator != 0 && self.denominator != 0).then(|| f64::from(self.denominator) / f64::from(self.numerator))
    }
}

/// One entry of `VIDIOC_ENUM_FRAMEINTERVALS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameIntervals {
    Discrete(Fraction),
    /// Every interval from `min` (the highest rate) to `max` (the lowest).
    Stepwise {
        min: Fraction,
        max: Fraction,
    },
}

/// The format that a driver set in reply to `VIDIOC_S_FMT`, which may
/// differ from the request in fourcc, size and stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveFormat {
    pub width: u32,
    pub height: u32,
    pub fourcc: [u8; 4],
    /// V4L2's `bytesperline`: the stride of the first plane, 0 for compressed formats.
    pub bytes_per_line: u32,
    /// V4L2's `sizeimage`: the buffer size the driver needs for one frame.
    pub size_image: u32,
}

/// One filled buffer, borrowed from the device until the next dequeue.
#[derive(Clone, Copy, Debug)]
pub struct Buffer<'a> {
    /// The whole mapped buffer. Only the first `bytes_used` bytes hold the frame.
    pub data: &'a [u8],
    pub bytes_used: u32,
    /// The driver flagged the data as corrupt (`V4L2_BUF_FLAG_ERROR`).
    pub error_flag: bool,
    /// The driver's frame counter. Gaps show frames the driver dropped.
    pub sequence: u32,
}

/// Failure to dequeue a buffer.
#[derive(Debug, thiserror::Error)]
pub enum DequeueError {
    /// The device was unplugged or its driver unbound (`ENODEV`).
    #[error("the device is gone")]
    Gone(#[source] io::Error),
    /// No buffer arrived in time, or the driver returned `EAGAIN`.
    #[error("no frame arrived within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("dequeuing a buffer failed")]
    Other(#[source] io::Error),
}

impl DequeueError {
    /// Sorts an I/O error of `VIDIOC_DQBUF` or `poll` into a kind.
    pub fn from_io(error: io::Error, timeout: Duration) -> DequeueError {
        match error.raw_os_error() {
            Some(code) if code == libc::ENODEV || code == libc::ENXIO => DequeueError::Gone(error),
            Some(code) if code == libc::EAGAIN => DequeueError::Timeout(timeout),
            _ if error.kind() == io::ErrorKind::TimedOut => DequeueError::Timeout(timeout),
            _ => DequeueError::Other(error),
        }
    }
}

/// The V4L2 operations that the `device` source and `edgedet cameras` use.
pub trait CaptureDevice: Send {
    /// # Errors
    /// The error of `VIDIOC_QUERYCAP`.
    fn capabilities(&self) -> io::Result<DeviceCaps>;

    /// Lists the single-planar capture formats.
    ///
    /// # Errors
    /// The error of `VIDIOC_ENUM_FMT`.
    fn formats(&self) -> io::Result<Vec<FormatDescription>>;

    /// Lists the frame sizes of one format.
    ///
    /// # Errors
    /// The error of `VIDIOC_ENUM_FRAMESIZES`; many drivers that do not enumerate sizes return `ENOTTY` or `EINVAL`.
    fn frame_sizes(&self, fourcc: [u8; 4]) -> io::Result<Vec<FrameSizes>>;

    /// Lists the frame intervals of one format at one size.
    ///
    /// # Errors
    /// The error of `VIDIOC_ENUM_FRAMEINTERVALS`.
    fn frame_intervals(&self, fourcc: [u8; 4], width: u32, height: u32) -> io::Result<Vec<FrameIntervals>>;

    /// Requests a format and returns the one the driver set.
    ///
    /// # Errors
    /// The error of `VIDIOC_S_FMT`, such as `EBUSY` when another program streams from the device.
    fn set_format(&mut self, width: u32, height: u32, fourcc: [u8; 4]) -> io::Result<ActiveFormat>;

    /// Requests a frame interval and returns the one the driver set.
    ///
    /// # Errors
    /// The error of `VIDIOC_S_PARM`. Drivers without frame rate control,
    /// such as the Raspberry Pi's `unicam`, fail here, and that is normal.
    fn set_frame_interval(&mut self, interval: Fraction) -> io::Result<Fraction>;

    /// Allocates the buffers; streaming starts with the first dequeue.
    ///
    /// # Errors
    /// The error of `VIDIOC_REQBUFS` or of mapping a buffer.
    fn start(&mut self) -> io::Result<()>;

    /// Waits at most `timeout` for the next filled buffer.
    ///
    /// # Errors
    /// [`DequeueError`] by kind. After any error the caller should drop the
    /// device and open it again, because the buffer queue is in an unknown state.
    fn dequeue(&mut self, timeout: Duration) -> Result<Buffer<'_>, DequeueError>;
}

/// Opens capture devices by path, such as `/dev/video0` or a stable
/// `/dev/v4l/by-id/...` symlink.
pub trait DeviceOpener: Send {
    /// # Errors
    /// The error of `open(2)`, such as `ENOENT` for a camera that is not plugged in.
    fn open(&mut self, path: &Path) -> io::Result<Box<dyn CaptureDevice>>;
}

/// Opens real devices through the `v4l` crate.
#[derive(Clone, Copy, Debug, Default)]
pub struct V4l2Opener;

impl DeviceOpener for V4l2Opener {
    fn open(&mut self, path: &Path) -> io::Result<Box<dyn CaptureDevice>> {
        Ok(Box::new(V4l2Device::open(path)?))
    }
}

/// A V4L2 device node, streaming through four memory-mapped buffers.
///
/// NOTE: `v4l` 0.14 panics when dropping a stream whose `VIDIOC_STREAMOFF`
/// fails with an error other than `ENODEV`. No driver is known to do that,
/// but the panic would end the camera's thread.
pub struct V4l2Device {
    device: v4l::Device,
    stream: Option<v4l::io::mmap::Stream<'static>>,
}

/// Buffers requested from the driver: one being read, one being filled, and two spare.
const BUFFER_COUNT: u32 = 4;

impl V4l2Device {
    /// Opens the device node at `path`.
    ///
    /// # Errors
    /// The error of `open(2)`.
    pub fn open(path: &Path) -> io::Result<V4l2Device> {
        Ok(V4l2Device { device: v4l::Device::with_path(path)?, stream: None })
    }
}

fn fourcc_of(fourcc: v4l::FourCC) -> [u8; 4] {
    fourcc.repr
}

fn fraction_of(fraction: v4l::Fraction) -> Fraction {
    Fraction { numerator: fraction.numerator, denominator: fraction.denominator }
}

/// Reads a NUL-padded string of `v4l2_capability`. The kernel may cut a
/// USB product name in the middle of a UTF-8 sequence, so this does not
/// insist on valid UTF-8 as `v4l::Device::query_caps` 0.14 does.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&byte| byte == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl CaptureDevice for V4l2Device {
    fn capabilities(&self) -> io::Result<DeviceCaps> {
        use v4l::v4l_sys::v4l2_capability;

        // SAFETY: v4l2_capability is plain old data for which all zeroes is
        // valid, and VIDIOC_QUERYCAP writes at most its size.
        let caps = unsafe {
            let mut caps: v4l2_capability = std::mem::zeroed();
            v4l::v4l2::ioctl(
                self.device.handle().fd(),
                v4l::v4l2::vidioc::VIDIOC_QUERYCAP,
                std::ptr::from_mut(&mut caps).cast(),
            )?;
            caps
        };
        // device_caps describes this node; it is valid when V4L2_CAP_DEVICE_CAPS is set.
        const DEVICE_CAPS: u32 = 0x8000_0000;
        let flags = if caps.capabilities & DEVICE_CAPS != 0 { caps.device_caps } else { caps.capabilities };
        Ok(DeviceCaps {
            driver: c_string(&caps.driver),
            card: c_string(&caps.card),
            bus_info: c_string(&caps.bus_info),
            video_capture: flags & 0x0000_0001 != 0,
            video_capture_mplane: flags & 0x0000_1000 != 0,
            meta_capture: flags & 0x0080_0000 != 0,
            streaming: flags & 0x0400_0000 != 0,
        })
    }

    fn formats(&self) -> io::Result<Vec<FormatDescription>> {
        use v4l::video::Capture;

        let formats = Capture::enum_formats(&self.device)?;
        Ok(formats
            .into_iter()
            .map(|format| FormatDescription { fourcc: fourcc_of(format.fourcc), description: format.description })
            .collect())
    }

    fn frame_sizes(&self, fourcc: [u8; 4]) -> io::Result<Vec<FrameSizes>> {
        use v4l::framesize::FrameSizeEnum;
        use v4l::video::Capture;

        let sizes = Capture::enum_framesizes(&self.device, v4l::FourCC::new(&fourcc))?;
        Ok(sizes
            .into_iter()
            .map(|size| match size.size {
                FrameSizeEnum::Discrete(size) => FrameSizes::Discrete { width: size.width, height: size.height },
                FrameSizeEnum::Stepwise(range) => FrameSizes::Stepwise {
                    min_width: range.min_width,
                    max_width: range.max_width,
                    step_width: range.step_width,
                    min_height: range.min_height,
                    max_height: range.max_height,
                    step_height: range.step_height,
                },
            })
            .collect())
    }

    fn frame_intervals(&self, fourcc: [u8; 4], width: u32, height: u32) -> io::Result<Vec<FrameIntervals>> {
        use v4l::frameinterval::FrameIntervalEnum;
        use v4l::video::Capture;

        let intervals = Capture::enum_frameintervals(&self.device, v4l::FourCC::new(&fourcc), width, height)?;
        Ok(intervals
            .into_iter()
            .map(|interval| match interval.interval {
                FrameIntervalEnum::Discrete(fraction) => FrameIntervals::Discrete(fraction_of(fraction)),
                FrameIntervalEnum::Stepwise(range) => {
                    FrameIntervals::Stepwise { min: fraction_of(range.min), max: fraction_of(range.max) }
                }
            })
            .collect())
    }

    fn set_format(&mut self, width: u32, height: u32, fourcc: [u8; 4]) -> io::Result<ActiveFormat> {
        use v4l::video::Capture;

        let requested = v4l::Format::new(width, height, v4l::FourCC::new(&fourcc));
        let set = Capture::set_format(&self.device, &requested)?;
        Ok(ActiveFormat {
            width: set.width,
            height: set.height,
            fourcc: fourcc_of(set.fourcc),
            bytes_per_line: set.stride,
            size_image: set.size,
        })
    }

    fn set_frame_interval(&mut self, interval: Fraction) -> io::Result<Fraction> {
        use v4l::video::Capture;

        let requested =
            v4l::video::capture::Parameters::new(v4l::Fraction::new(interval.numerator, interval.denominator));
        let set = Capture::set_params(&self.device, &requested)?;
        Ok(fraction_of(set.interval))
    }

    fn start(&mut self) -> io::Result<()> {
        let stream = v4l::io::mmap::Stream::with_buffers(&self.device, v4l::buffer::Type::VideoCapture, BUFFER_COUNT)?;
        self.stream = Some(stream);
        Ok(())
    }

    fn dequeue(&mut self, timeout: Duration) -> Result<Buffer<'_>, DequeueError> {
        use v4l::io::traits::CaptureStream;

        let Some(stream) = self.stream.as_mut() else {
            return Err(DequeueError::Other(io::Error::other("streaming was not started")));
        };
        stream.set_timeout(timeout);
        let (data, meta) = CaptureStream::next(stream).map_err(|error| DequeueError::from_io(error, timeout))?;
        Ok(Buffer {
            data,
            bytes_used: meta.bytesused,
            error_flag: meta.flags.contains(v4l::buffer::Flags::ERROR),
            sequence: meta.sequence,
        })
    }
}
