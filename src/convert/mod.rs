//! Camera frames in their pixel formats, converted to 8-bit RGB.
//!
//! A [`RawFrame`] is one buffer as a V4L2 capture device delivers it: MJPEG,
//! packed or planar YUV, RGB24 or grey, with rows that may be padded to
//! `bytes_per_line`. [`FrameConverter`] turns it into an [`RgbImage`], the
//! input of `preprocess::prepare_input` and `Detector::detect`, and keeps its
//! buffers from frame to frame; [`to_rgb`] converts a single frame.
//!
//! Every size is checked against the format before a pixel is read, so a
//! short, truncated or corrupt frame is a [`ConvertError`], never a panic.
//! MJPEG is decoded by libjpeg-turbo and YUV converted by yuvutils-rs, both
//! with SIMD on ARM and x86. RGB24 and grey are copied.
//!
//! This module does not open devices or negotiate formats, and it does not
//! read the colorspace a driver reports: YUV is always converted as BT.601
//! limited range (see `yuv`), MJPEG as JFIF (BT.601 full range).

mod format;
mod huffman;
mod mjpeg;
mod rgb;
mod yuv;

pub use format::PixelFormat;
pub use huffman::insert_huffman_tables;

use std::fmt;

use crate::preprocess::RgbImage;

/// One camera frame as the capture device delivered it, borrowed.
#[derive(Clone, Copy)]
pub struct RawFrame<'a> {
    pub format: PixelFormat,
    /// Width in pixels. For MJPEG the JPEG header must state the same size.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from the start of one row of the first plane to the next,
    /// V4L2's `bytesperline`: at least the bytes of one row, more when the
    /// driver pads rows. The chroma planes of NV12 and YU12 derive their
    /// strides from it as V4L2 does. Ignored for MJPEG.
    pub bytes_per_line: u32,
    /// The planes one after the other as V4L2 lays them out, or one JPEG
    /// image for MJPEG. Bytes after the frame are ignored.
    pub data: &'a [u8],
}

impl<'a> RawFrame<'a> {
    /// Describes a frame whose rows follow each other without padding.
    pub fn packed(format: PixelFormat, width: u32, height: u32, data: &'a [u8]) -> RawFrame<'a> {
        // A width whose row does not fit in u32 gets the largest stride, so
        // that validation reports the buffer as too short.
        let bytes_per_line =
            format.min_bytes_per_line(width).map_or(0, |bytes| u32::try_from(bytes).unwrap_or(u32::MAX));
        RawFrame { format, width, height, bytes_per_line, data }
    }
}

impl fmt::Debug for RawFrame<'_> {
    /// Shows the length of `data` instead of its bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawFrame")
            .field("format", &self.format)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("bytes_per_line", &self.bytes_per_line)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// A camera frame that could not be converted to RGB.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("unsupported V4L2 pixel format {fourcc:?}: expected one of MJPG, JPEG, YUYV, NV12, YU12, RGB3, GREY")]
    UnsupportedFourcc { fourcc: String },
    #[error("invalid {format} frame size {width}x{height}: a frame needs at least one pixel")]
    EmptyFrame { format: PixelFormat, width: u32, height: u32 },
    #[error("{format} frame of {width}x{height} is too large to hold as RGB in memory")]
    TooLarge { format: PixelFormat, width: u32, height: u32 },
    #[error(
        "invalid {format} frame of {width}x{height}: {bytes_per_line} bytes per line is less than the {min_bytes_per_line} bytes of one row"
    )]
    StrideTooSmall { format: PixelFormat, width: u32, height: u32, bytes_per_line: u32, min_bytes_per_line: u64 },
    #[error(
        "{format} frame of {width}x{height} with {bytes_per_line} bytes per line needs {expected} bytes, found {found}"
    )]
    TooShort { format: PixelFormat, width: u32, height: u32, bytes_per_line: u32, expected: u64, found: usize },
    #[error("malformed MJPEG frame: {reason}")]
    MalformedMjpeg { reason: String },
    #[error("MJPEG frame is {found_width}x{found_height}, but the camera announced {width}x{height}")]
    MjpegSizeMismatch { width: u32, height: u32, found_width: usize, found_height: usize },
    #[error("failed to decode a {width}x{height} MJPEG frame")]
    DecodeMjpeg {
        width: u32,
        height: u32,
        #[source]
        source: turbojpeg::Error,
    },
    #[error("failed to convert a {format} frame of {width}x{height} to RGB")]
    Yuv {
        format: PixelFormat,
        width: u32,
        height: u32,
        #[source]
        source: yuvutils_rs::YuvError,
    },
}

/// Converts camera frames to RGB, keeping the MJPEG decoder and scratch
/// buffers between frames. One converter serves one thread at a time.
#[derive(Debug, Default)]
pub struct FrameConverter {
    mjpeg: mjpeg::MjpegDecoder,
    yuv: yuv::Scratch,
}

impl FrameConverter {
    pub fn new() -> FrameConverter {
        FrameConverter::default()
    }

    /// Converts `frame` into a new RGB image.
    ///
    /// # Errors
    ///
    /// As for [`FrameConverter::convert_into`].
    pub fn convert(&mut self, frame: &RawFrame<'_>) -> Result<RgbImage, ConvertError> {
        let mut image = RgbImage::new(0, 0);
        self.convert_into(frame, &mut image)?;
        Ok(image)
    }

    /// Converts `frame` into `image`, reusing its buffer when it already has
    /// the frame's size and replacing it otherwise.
    ///
    /// After an error, `image` has the frame's size or its old size, and its
    /// pixels are unspecified.
    ///
    /// # Errors
    ///
    /// `EmptyFrame`, `StrideTooSmall`, `TooShort` or `TooLarge` when the
    /// frame's size, stride and buffer do not fit together. For MJPEG,
    /// `MalformedMjpeg` when its marker segments are broken,
    /// `MjpegSizeMismatch` when its header states another size, and
    /// `DecodeMjpeg` when libjpeg-turbo fails or warns, as it does on
    /// truncated or corrupt data. `Yuv` when yuvutils-rs rejects a frame
    /// that passed these checks, which would be a bug here.
    pub fn convert_into(&mut self, frame: &RawFrame<'_>, image: &mut RgbImage) -> Result<(), ConvertError> {
        validate(frame)?;

        // The decoder sizes the image for an MJPEG frame itself, once the
        // JPEG header has been checked against the announced size.
        if frame.format != PixelFormat::Mjpeg {
            fit_image(image, frame.width, frame.height);
        }

        let yuv_error =
            |source| ConvertError::Yuv { format: frame.format, width: frame.width, height: frame.height, source };
        match frame.format {
            PixelFormat::Mjpeg => self.mjpeg.decode_into(frame, image),
            PixelFormat::Yuyv => yuv::yuyv_to_rgb(frame, image, &mut self.yuv).map_err(yuv_error),
            PixelFormat::Nv12 => yuv::nv12_to_rgb(frame, image, &mut self.yuv).map_err(yuv_error),
            PixelFormat::Yu12 => yuv::yu12_to_rgb(frame, image).map_err(yuv_error),
            PixelFormat::Rgb24 => {
                rgb::copy_rgb24(frame, image);
                Ok(())
            }
            PixelFormat::Grey => {
                rgb::replicate_grey(frame, image);
                Ok(())
            }
        }
    }
}

/// Converts one frame to RGB with a converter of its own.
///
/// A capture loop should keep a [`FrameConverter`] instead, which reuses
/// the MJPEG decoder and its buffers.
///
/// # Errors
///
/// As for [`FrameConverter::convert_into`].
pub fn to_rgb(frame: &RawFrame<'_>) -> Result<RgbImage, ConvertError> {
    FrameConverter::new().convert(frame)
}

/// Checks that the frame has pixels, that its RGB image fits in memory, and
/// for uncompressed formats that its stride and buffer hold every row.
fn validate(frame: &RawFrame<'_>) -> Result<(), ConvertError> {
    let RawFrame { format, width, height, bytes_per_line, data } = *frame;
    if width == 0 || height == 0 {
        return Err(ConvertError::EmptyFrame { format, width, height });
    }

    let rgb_len = u64::from(width).checked_mul(u64::from(height)).and_then(|pixels| pixels.checked_mul(3));
    if rgb_len.and_then(|len| usize::try_from(len).ok()).is_none() {
        return Err(ConvertError::TooLarge { format, width, height });
    }

    let (Some(min_bytes_per_line), Some(expected)) =
        (format.min_bytes_per_line(width), format.frame_len(height, bytes_per_line))
    else {
        return Ok(());
    };
    if u64::from(bytes_per_line) < min_bytes_per_line {
        return Err(ConvertError::StrideTooSmall { format, width, height, bytes_per_line, min_bytes_per_line });
    }
    if (data.len() as u64) < expected {
        return Err(ConvertError::TooShort { format, width, height, bytes_per_line, expected, found: data.len() });
    }
    Ok(())
}

/// Gives `image` the size `width`×`height`, allocating only when it changes.
fn fit_image(image: &mut RgbImage, width: u32, height: u32) {
    if image.dimensions() != (width, height) {
        *image = RgbImage::new(width, height);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffer_names_format_and_sizes() {
        let data = vec![0; 1000];
        let frame = RawFrame::packed(PixelFormat::Yuyv, 640, 480, &data);
        let error = to_rgb(&frame).unwrap_err();
        assert_eq!(error.to_string(), "YUYV frame of 640x480 with 1280 bytes per line needs 614400 bytes, found 1000");
    }

    #[test]
    fn short_chroma_plane_is_an_error() {
        // The luma plane is complete, the chroma plane misses its last byte.
        let data = vec![128; 640 * 480 * 3 / 2 - 1];
        for format in [PixelFormat::Nv12, PixelFormat::Yu12] {
            let error = to_rgb(&RawFrame::packed(format, 640, 480, &data)).unwrap_err();
            assert!(matches!(error, ConvertError::TooShort { expected: 460_800, found: 460_799, .. }), "{error}");
        }
    }

    #[test]
    fn stride_shorter_than_row_is_an_error() {
        let data = vec![0; 4096];
        let frame = RawFrame { format: PixelFormat::Rgb24, width: 10, height: 2, bytes_per_line: 29, data: &data };
        assert_eq!(
            to_rgb(&frame).unwrap_err().to_string(),
            "invalid RGB24 frame of 10x2: 29 bytes per line is less than the 30 bytes of one row"
        );
    }

    #[test]
    fn empty_frame_is_an_error() {
        let frame = RawFrame::packed(PixelFormat::Grey, 0, 480, &[]);
        assert_eq!(
            to_rgb(&frame).unwrap_err().to_string(),
            "invalid GREY frame size 0x480: a frame needs at least one pixel"
        );
    }

    #[test]
    fn huge_frame_is_an_error() {
        let frame = RawFrame::packed(PixelFormat::Rgb24, u32::MAX, u32::MAX, &[]);
        let error = to_rgb(&frame).unwrap_err();
        assert!(matches!(error, ConvertError::TooLarge { .. } | ConvertError::TooShort { .. }), "{error}");
    }

    #[test]
    fn image_buffer_is_reused_for_same_size() {
        let data = [7u8; 4 * 3];
        let frame = RawFrame::packed(PixelFormat::Grey, 4, 3, &data);
        let mut converter = FrameConverter::new();
        let mut image = RgbImage::new(4, 3);
        let buffer = image.as_ptr();
        converter.convert_into(&frame, &mut image).unwrap();
        assert_eq!(image.as_ptr(), buffer);
        assert!(image.pixels().all(|pixel| pixel.0 == [7, 7, 7]));
    }

    #[test]
    fn image_is_resized_to_frame() {
        let data = [9u8; 2 * 2 * 3];
        let mut image = RgbImage::new(5, 5);
        FrameConverter::new().convert_into(&RawFrame::packed(PixelFormat::Rgb24, 2, 2, &data), &mut image).unwrap();
        assert_eq!(image.dimensions(), (2, 2));
        assert_eq!(image.as_raw(), &data);
    }

    #[test]
    fn converter_can_move_to_capture_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<FrameConverter>();
    }

    #[test]
    fn garbage_mjpeg_is_an_error() {
        let frame = RawFrame::packed(PixelFormat::Mjpeg, 640, 480, b"not a jpeg");
        assert_eq!(
            to_rgb(&frame).unwrap_err().to_string(),
            "malformed MJPEG frame: it does not start with a JPEG start-of-image marker (FF D8)"
        );
    }
}
