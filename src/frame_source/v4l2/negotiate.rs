//! Choosing a capture format among those a device offers.
//!
//! [`probe`] reads what a device offers into a [`DeviceProfile`], and
//! [`choose`] picks one format, size and frame interval from it. The
//! preference order is fixed, not measured per board:
//!
//! 1. raw YUV (NV12, then YU12, then YUYV) when the requested size is offered
//!    raw at the requested frame rate, because converting it is cheaper than
//!    decoding a JPEG of the same size;
//! 2. MJPEG, which USB cameras offer at sizes and rates that USB 2 cannot
//!    carry raw;
//! 3. raw YUV at another size or a lower rate;
//! 4. RGB24, then GREY.
//!
//! The size is the requested one when offered, else the smallest offered
//! size that covers it, else the largest offered size. A forced pixel format
//! skips the preference order. A device offering only raw Bayer formats,
//! only multi-planar capture, or no capture at all is an error that names
//! the reason.
//!
//! This module does not set formats on the device: the source does that and
//! then uses what the driver answered.

use std::io;

use super::device::{CaptureDevice, DeviceCaps, FormatDescription, Fraction, FrameIntervals, FrameSizes};
use super::V4l2Error;
use crate::config::FrameSize;
use crate::convert::PixelFormat;

/// Size requested when the config sets none. YOLO inputs are 416 to 608
/// pixels a side, so larger frames only cost transfer and conversion time.
pub const DEFAULT_SIZE: FrameSize = FrameSize { width: 640, height: 480 };

/// Everything a device offers, as read by [`probe`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceProfile {
    pub caps: DeviceCaps,
    /// Empty for a device without single-planar capture.
    pub formats: Vec<OfferedFormat>,
}

/// One pixel format with its sizes and, for discrete sizes, their frame intervals.
#[derive(Clone, Debug, PartialEq)]
pub struct OfferedFormat {
    pub description: FormatDescription,
    /// Empty when the driver does not enumerate sizes.
    pub sizes: Vec<FrameSizes>,
    /// Intervals per discrete size as `(width, height, intervals)`.
    pub intervals: Vec<(u32, u32, Vec<FrameIntervals>)>,
}

impl OfferedFormat {
    fn intervals_at(&self, width: u32, height: u32) -> &[FrameIntervals] {
        self.intervals
            .iter()
            .find(|(w, h, _)| *w == width && *h == height)
            .map_or(&[], |(_, _, intervals)| intervals.as_slice())
    }
}

/// Format, size and rate that the config requests from a device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CaptureRequest {
    pub size: FrameSize,
    /// Frames per second; `None` keeps the driver's rate.
    pub fps: Option<f64>,
    /// A pixel format that the config forces.
    pub pixel_format: Option<PixelFormat>,
}

/// The format, size and frame interval to request from the device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    /// The fourcc as the device lists it (`JPEG` or `MJPG` for MJPEG).
    pub fourcc: [u8; 4],
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// `None` when no rate was requested.
    pub interval: Option<Fraction>,
}

/// Reads capabilities, formats, sizes and intervals. A format whose sizes
/// or intervals cannot be enumerated is kept with empty lists, as many
/// drivers do not implement these ioctls.
///
/// # Errors
/// The error of `VIDIOC_QUERYCAP` or `VIDIOC_ENUM_FMT`.
pub fn probe(device: &dyn CaptureDevice) -> io::Result<DeviceProfile> {
    let caps = device.capabilities()?;
    if !caps.video_capture {
        return Ok(DeviceProfile { caps, formats: Vec::new() });
    }

    let mut formats = Vec::new();
    for description in device.formats()? {
        let sizes = device.frame_sizes(description.fourcc).unwrap_or_default();
        let mut intervals = Vec::new();
        for size in &sizes {
            if let FrameSizes::Discrete { width, height } = *size {
                let found = device.frame_intervals(description.fourcc, width, height).unwrap_or_default();
                intervals.push((width, height, found));
            }
        }
        formats.push(OfferedFormat { description, sizes, intervals });
    }
    Ok(DeviceProfile { caps, formats })
}

/// Returns whether a fourcc is a raw Bayer format: 8-bit (`BA81`, `GBRG`,
/// `GRBG`, `RGGB`), 10 to 16-bit (`BG10`, `GB12`, `BA10`, `RG16`, ...), or
/// MIPI-packed (`pBAA`, `pRAA`, `pgCC`, ...).
pub fn is_bayer(fourcc: [u8; 4]) -> bool {
    let eight_bit = [b"BA81", b"GBRG", b"GRBG", b"RGGB"];
    if eight_bit.iter().any(|code| **code == fourcc) {
        return true;
    }
    let [a, b, c, d] = fourcc;
    let wide = matches!([a, b], [b'B', b'G'] | [b'G', b'B'] | [b'B', b'A'] | [b'R', b'G'])
        && c == b'1'
        && matches!(d, b'0' | b'2' | b'4' | b'6');
    let packed = a == b'p'
        && matches!(b, b'B' | b'G' | b'g' | b'R')
        && matches!([c, d], [b'A', b'A'] | [b'C', b'C'] | [b'E', b'E']);
    wide || packed
}

/// Writes fourccs as `YUYV, MJPG`, for messages.
pub fn fourcc_list<'a>(fourccs: impl IntoIterator<Item = &'a [u8; 4]>) -> String {
    let names: Vec<String> = fourccs.into_iter().map(|code| fourcc_text(*code)).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Writes a fourcc as its characters, trimmed of the spaces some codes end with.
pub fn fourcc_text(fourcc: [u8; 4]) -> String {
    String::from_utf8_lossy(&fourcc).trim_end().to_string()
}

/// Checks that the device can stream single-planar frames in at least one
/// format that edgedet converts.
///
/// # Errors
/// `NotCapture`, `MultiPlanarOnly`, `NoStreaming`, `BayerOnly` or
/// `NoSupportedFormat`, each naming `path`.
pub fn check_usable(profile: &DeviceProfile, path: &std::path::Path) -> Result<(), V4l2Error> {
    let caps = &profile.caps;
    let device = || path.to_path_buf();
    if !caps.video_capture {
        if caps.video_capture_mplane {
            return Err(V4l2Error::MultiPlanarOnly { path: device(), card: caps.card.clone() });
        }
        let kind = if caps.meta_capture { "a metadata node" } else { "not a video capture device" };
        return Err(V4l2Error::NotCapture { path: device(), card: caps.card.clone(), kind });
    }
    if !caps.streaming {
        return Err(V4l2Error::NoStreaming { path: device(), card: caps.card.clone() });
    }

    let fourccs: Vec<[u8; 4]> = profile.formats.iter().map(|format| format.description.fourcc).collect();
    if fourccs.iter().any(|code| PixelFormat::from_fourcc(*code).is_ok()) {
        return Ok(());
    }
    if !fourccs.is_empty() && fourccs.iter().all(|code| is_bayer(*code)) {
        return Err(V4l2Error::BayerOnly {
            path: device(),
            card: caps.card.clone(),
            driver: caps.driver.clone(),
            offered: fourcc_list(&fourccs),
        });
    }
    Err(V4l2Error::NoSupportedFormat { path: device(), offered: fourcc_list(&fourccs) })
}

/// Chooses format, size and interval as the module documentation describes.
///
/// # Errors
/// As [`check_usable`], and `ForcedFormatAbsent` when the request forces a
/// pixel format that the device does not offer.
pub fn choose(profile: &DeviceProfile, request: &CaptureRequest, path: &std::path::Path) -> Result<Choice, V4l2Error> {
    check_usable(profile, path)?;

    let supported = profile.formats.iter().filter_map(|offered| {
        PixelFormat::from_fourcc(offered.description.fourcc).ok().map(|format| (format, offered))
    });

    let mut best: Option<(u8, Choice)> = None;
    for (format, offered) in supported {
        if request.pixel_format.is_some_and(|forced| forced != format) {
            continue;
        }
        let (width, height) = pick_size(&offered.sizes, request.size);
        let exact = (width, height) == (request.size.width, request.size.height);
        let intervals = offered.intervals_at(width, height);
        let fast_enough = request.fps.is_none_or(|fps| reaches_rate(intervals, fps));
        let rank = match format {
            PixelFormat::Nv12 | PixelFormat::Yu12 | PixelFormat::Yuyv if exact && fast_enough => 0,
            PixelFormat::Mjpeg => 10,
            PixelFormat::Nv12 | PixelFormat::Yu12 | PixelFormat::Yuyv => 20,
            PixelFormat::Rgb24 => 30,
            PixelFormat::Grey => 40,
        } + yuv_order(format);
        let choice = Choice {
            fourcc: offered.description.fourcc,
            format,
            width,
            height,
            interval: request.fps.map(|fps| pick_interval(intervals, fps)),
        };
        if best.is_none_or(|(best_rank, _)| rank < best_rank) {
            best = Some((rank, choice));
        }
    }

    match (best, request.pixel_format) {
        (Some((_, choice)), _) => Ok(choice),
        (None, Some(forced)) => Err(V4l2Error::ForcedFormatAbsent {
            path: path.to_path_buf(),
            format: forced,
            offered: fourcc_list(profile.formats.iter().map(|format| &format.description.fourcc)),
        }),
        // check_usable found a supported format, so only a forced one can be missing.
        (None, None) => Err(V4l2Error::NoSupportedFormat {
            path: path.to_path_buf(),
            offered: fourcc_list(profile.formats.iter().map(|format| &format.description.fourcc)),
        }),
    }
}

/// Orders the raw YUV formats by bytes per pixel: NV12 and YU12 carry 12
/// bits, YUYV 16.
fn yuv_order(format: PixelFormat) -> u8 {
    match format {
        PixelFormat::Nv12 => 0,
        PixelFormat::Yu12 => 1,
        _ => 2,
    }
}

/// Returns the requested size when offered, else the smallest offered size
/// that covers it, else the largest. Without enumerated sizes, returns the
/// requested size and leaves the choice to the driver.
fn pick_size(sizes: &[FrameSizes], requested: FrameSize) -> (u32, u32) {
    let requested_size = (requested.width, requested.height);
    let mut candidates = Vec::new();
    for size in sizes {
        match *size {
            FrameSizes::Discrete { width, height } => candidates.push((width, height)),
            FrameSizes::Stepwise { min_width, max_width, step_width, min_height, max_height, step_height } => {
                let width = step_up(requested.width, min_width, max_width, step_width);
                let height = step_up(requested.height, min_height, max_height, step_height);
                candidates.push((width, height));
                candidates.push((max_width, max_height));
            }
        }
    }
    if candidates.is_empty() || candidates.contains(&requested_size) {
        return requested_size;
    }

    let area = |(width, height): (u32, u32)| u64::from(width) * u64::from(height);
    let covering =
        candidates.iter().copied().filter(|&(width, height)| width >= requested_size.0 && height >= requested_size.1);
    match covering.min_by_key(|&size| area(size)) {
        Some(size) => size,
        None => candidates.iter().copied().max_by_key(|&size| area(size)).unwrap_or(requested_size),
    }
}

/// Rounds `value` up to the next step of a stepwise range, within the range.
fn step_up(value: u32, min: u32, max: u32, step: u32) -> u32 {
    if value <= min {
        return min;
    }
    let step = step.max(1);
    let steps = (value - min).div_ceil(step);
    min.saturating_add(steps.saturating_mul(step)).min(max)
}

/// Whether any interval reaches `fps`. Unknown intervals count as reaching
/// it, so that a driver that does not enumerate them is not ranked down.
fn reaches_rate(intervals: &[FrameIntervals], fps: f64) -> bool {
    // Drivers list 30 fps as 1/30 and sometimes as 333333/10000000; allow for rounding.
    let reaches = |fraction: Fraction| fraction.fps().is_some_and(|rate| rate >= fps * 0.99);
    intervals.is_empty()
        || intervals.iter().any(|interval| match *interval {
            FrameIntervals::Discrete(fraction) => reaches(fraction),
            FrameIntervals::Stepwise { min, .. } => reaches(min),
        })
}

/// Returns the listed interval whose rate is the lowest at or above `fps`,
/// else the fastest listed, else `fps` itself as a fraction of milliseconds.
fn pick_interval(intervals: &[FrameIntervals], fps: f64) -> Fraction {
    let as_fraction =
        Fraction { numerator: 1000, denominator: (fps * 1000.0).round().clamp(1.0, f64::from(u32::MAX)) as u32 };
    let mut listed = Vec::new();
    for interval in intervals {
        match *interval {
            FrameIntervals::Discrete(fraction) => listed.push(fraction),
            FrameIntervals::Stepwise { min, max } => {
                let in_range =
                    min.fps().is_some_and(|fastest| fastest >= fps) && max.fps().is_some_and(|slowest| slowest <= fps);
                if in_range {
                    return as_fraction;
                }
                listed.push(min);
            }
        }
    }
    let rate = |fraction: &Fraction| fraction.fps().unwrap_or(0.0);
    let fast_enough = listed.iter().filter(|fraction| rate(fraction) >= fps * 0.99);
    if let Some(slowest) = fast_enough.min_by(|a, b| rate(a).total_cmp(&rate(b))) {
        return *slowest;
    }
    listed.into_iter().max_by(|a, b| rate(a).total_cmp(&rate(b))).unwrap_or(as_fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(width: u32, height: u32) -> FrameSize {
        FrameSize::new(width, height).unwrap()
    }

    #[test]
    fn bayer_fourccs_are_recognised() {
        for code in [b"BA81", b"RGGB", b"GRBG", b"BG10", b"RG10", b"GB12", b"BA16", b"pRAA", b"pgAA", b"pBCC"] {
            assert!(is_bayer(*code), "{}", fourcc_text(*code));
        }
        for code in [b"YUYV", b"MJPG", b"GREY", b"RGB3", b"BGR3", b"Y10 ", b"pRA1"] {
            assert!(!is_bayer(*code), "{}", fourcc_text(*code));
        }
    }

    #[test]
    fn stepwise_size_rounds_up_to_step() {
        let sizes = [FrameSizes::Stepwise {
            min_width: 16,
            max_width: 1920,
            step_width: 16,
            min_height: 16,
            max_height: 1080,
            step_height: 8,
        }];
        assert_eq!(pick_size(&sizes, size(640, 480)), (640, 480));
        assert_eq!(pick_size(&sizes, size(641, 479)), (656, 480));
        assert_eq!(pick_size(&sizes, size(4000, 3000)), (1920, 1080));
    }

    #[test]
    fn size_falls_back_to_largest_offered() {
        let sizes =
            [FrameSizes::Discrete { width: 320, height: 240 }, FrameSizes::Discrete { width: 640, height: 360 }];
        assert_eq!(pick_size(&sizes, size(1280, 720)), (640, 360));
    }

    #[test]
    fn unlisted_sizes_keep_the_request() {
        assert_eq!(pick_size(&[], size(800, 600)), (800, 600));
    }

    #[test]
    fn interval_is_slowest_reaching_rate() {
        let listed = [30, 15, 5].map(|rate| FrameIntervals::Discrete(Fraction { numerator: 1, denominator: rate }));
        assert_eq!(pick_interval(&listed, 10.0), Fraction { numerator: 1, denominator: 15 });
        assert_eq!(pick_interval(&listed, 60.0), Fraction { numerator: 1, denominator: 30 });
        assert!(reaches_rate(&listed, 29.97));
        assert!(!reaches_rate(&listed, 60.0));
    }

    #[test]
    fn stepwise_interval_takes_requested_rate() {
        let range = [FrameIntervals::Stepwise {
            min: Fraction { numerator: 1, denominator: 60 },
            max: Fraction { numerator: 1, denominator: 1 },
        }];
        assert_eq!(pick_interval(&range, 12.5), Fraction { numerator: 1000, denominator: 12_500 });
    }

    #[test]
    fn grey_ranks_below_rgb() {
        let offered = |fourcc: &[u8; 4]| OfferedFormat {
            description: FormatDescription { fourcc: *fourcc, description: String::new() },
            sizes: vec![FrameSizes::Discrete { width: 640, height: 480 }],
            intervals: Vec::new(),
        };
        let profile = DeviceProfile {
            caps: DeviceCaps { video_capture: true, streaming: true, ..DeviceCaps::default() },
            formats: vec![offered(b"GREY"), offered(b"RGB3")],
        };
        let request = CaptureRequest { size: size(640, 480), fps: None, pixel_format: None };
        let choice = choose(&profile, &request, std::path::Path::new("/dev/video0")).unwrap();
        assert_eq!(choice.format, PixelFormat::Rgb24);
        assert_eq!(choice.interval, None);
    }

    #[test]
    fn unsupported_formats_are_listed() {
        let profile = DeviceProfile {
            caps: DeviceCaps { video_capture: true, streaming: true, ..DeviceCaps::default() },
            formats: vec![OfferedFormat {
                description: FormatDescription { fourcc: *b"UYVY", description: String::new() },
                sizes: Vec::new(),
                intervals: Vec::new(),
            }],
        };
        let error = check_usable(&profile, std::path::Path::new("/dev/video2")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/dev/video2 offers no pixel format that edgedet converts (offered: UYVY; supported: MJPG, JPEG, YUYV, NV12, YU12, RGB3, GREY)"
        );
    }
}
