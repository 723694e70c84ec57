//! The pixel formats that USB webcams and capture devices deliver, their
//! V4L2 fourcc codes, and the buffer layout V4L2 defines for each.
//!
//! This module only describes and validates buffers. It converts no pixels.

use std::fmt;
use std::str::FromStr;

use super::ConvertError;

/// A camera pixel format, named after its V4L2 definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Motion JPEG: one complete JPEG image per frame, often without Huffman
    /// tables (fourcc `MJPG`, and `JPEG` for the same data).
    Mjpeg,
    /// Packed 4:2:2 YUV, bytes Y0 U Y1 V for each pair of pixels (`YUYV`).
    Yuyv,
    /// A Y plane followed by one plane of interleaved U and V samples at half
    /// resolution in both directions (`NV12`).
    Nv12,
    /// A Y plane followed by a U plane and a V plane, each at half resolution
    /// in both directions, also called I420 (`YU12`).
    Yu12,
    /// Packed 8-bit RGB, bytes R G B per pixel (`RGB3`).
    Rgb24,
    /// 8-bit luminance only (`GREY`).
    Grey,
}

/// The fourccs that parse, with `JPEG` as a second name for MJPEG data.
const FOURCCS: [(&[u8; 4], PixelFormat); 7] = [
    (b"MJPG", PixelFormat::Mjpeg),
    (b"JPEG", PixelFormat::Mjpeg),
    (b"YUYV", PixelFormat::Yuyv),
    (b"NV12", PixelFormat::Nv12),
    (b"YU12", PixelFormat::Yu12),
    (b"RGB3", PixelFormat::Rgb24),
    (b"GREY", PixelFormat::Grey),
];

impl PixelFormat {
    /// Returns the V4L2 fourcc as its four characters (`MJPG` for MJPEG).
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Yu12 => *b"YU12",
            PixelFormat::Rgb24 => *b"RGB3",
            PixelFormat::Grey => *b"GREY",
        }
    }

    /// Returns the fourcc as the little-endian `u32` of V4L2 structures
    /// (`v4l2_fourcc(a, b, c, d)` in `videodev2.h`).
    pub fn v4l2_code(self) -> u32 {
        u32::from_le_bytes(self.fourcc())
    }

    /// Looks up the format of a V4L2 fourcc given as four characters.
    ///
    /// # Errors
    ///
    /// `UnsupportedFourcc` for any code not listed on [`PixelFormat`].
    pub fn from_fourcc(code: [u8; 4]) -> Result<PixelFormat, ConvertError> {
        FOURCCS
            .iter()
            .find(|(known, _)| **known == code)
            .map(|(_, format)| *format)
            .ok_or_else(|| ConvertError::UnsupportedFourcc { fourcc: String::from_utf8_lossy(&code).into_owned() })
    }

    /// Looks up the format of a V4L2 fourcc given as the `u32` of V4L2
    /// structures.
    ///
    /// # Errors
    ///
    /// `UnsupportedFourcc` for any code not listed on [`PixelFormat`].
    pub fn from_v4l2_code(code: u32) -> Result<PixelFormat, ConvertError> {
        PixelFormat::from_fourcc(code.to_le_bytes())
    }

    /// Returns the minimum `bytes_per_line`: the bytes of one unpadded row
    /// of the first plane. MJPEG has no rows and returns `None`.
    ///
    /// Subsampled formats cover an odd last column with a chroma sample of
    /// its own, so their rows round the width up to even. YU12 also needs
    /// `bytes_per_line / 2` to hold a chroma row, because V4L2 derives the
    /// chroma stride that way.
    pub fn min_bytes_per_line(self, width: u32) -> Option<u64> {
        let width = u64::from(width);
        let even_width = width.div_ceil(2) * 2;
        match self {
            PixelFormat::Mjpeg => None,
            PixelFormat::Yuyv => Some(2 * even_width),
            PixelFormat::Nv12 | PixelFormat::Yu12 => Some(even_width),
            PixelFormat::Rgb24 => Some(3 * width),
            PixelFormat::Grey => Some(width),
        }
    }

    /// Returns the bytes a frame of this format needs, V4L2's `sizeimage`:
    /// `height` rows of `bytes_per_line` bytes and the chroma planes after
    /// them. MJPEG frames vary in size and return `None`.
    ///
    /// V4L2 gives NV12's interleaved chroma plane the luma stride, and
    /// YU12's two chroma planes half of it.
    pub fn frame_len(self, height: u32, bytes_per_line: u32) -> Option<u64> {
        let height = u64::from(height);
        let chroma_height = height.div_ceil(2);
        let stride = u64::from(bytes_per_line);
        match self {
            PixelFormat::Mjpeg => None,
            PixelFormat::Yuyv | PixelFormat::Rgb24 | PixelFormat::Grey => Some(stride * height),
            PixelFormat::Nv12 => Some(stride * (height + chroma_height)),
            PixelFormat::Yu12 => Some(stride * height + 2 * (stride / 2) * chroma_height),
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            PixelFormat::Mjpeg => "MJPEG",
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Yu12 => "YU12",
            PixelFormat::Rgb24 => "RGB24",
            PixelFormat::Grey => "GREY",
        };
        f.write_str(name)
    }
}

impl FromStr for PixelFormat {
    type Err = ConvertError;

    /// Parses a fourcc such as `YUYV` or `MJPG`; letter case must match.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match <[u8; 4]>::try_from(text.as_bytes()) {
            Ok(code) => PixelFormat::from_fourcc(code),
            Err(_) => Err(ConvertError::UnsupportedFourcc { fourcc: text.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [PixelFormat; 6] = [
        PixelFormat::Mjpeg,
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Yu12,
        PixelFormat::Rgb24,
        PixelFormat::Grey,
    ];

    #[test]
    fn fourcc_round_trips() {
        for format in ALL {
            assert_eq!(PixelFormat::from_fourcc(format.fourcc()).unwrap(), format);
            assert_eq!(PixelFormat::from_v4l2_code(format.v4l2_code()).unwrap(), format);
        }
    }

    #[test]
    fn v4l2_codes_match_videodev2() {
        // V4L2_PIX_FMT_YUYV and V4L2_PIX_FMT_MJPEG as videodev2.h computes them.
        assert_eq!(PixelFormat::Yuyv.v4l2_code(), 0x5659_5559);
        assert_eq!(PixelFormat::Mjpeg.v4l2_code(), 0x4750_4A4D);
    }

    #[test]
    fn jpeg_fourcc_is_mjpeg() {
        assert_eq!("JPEG".parse::<PixelFormat>().unwrap(), PixelFormat::Mjpeg);
        assert_eq!(PixelFormat::Mjpeg.fourcc(), *b"MJPG");
    }

    #[test]
    fn unknown_fourcc_is_rejected_by_name() {
        let error = "UYVY".parse::<PixelFormat>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unsupported V4L2 pixel format \"UYVY\": expected one of MJPG, JPEG, YUYV, NV12, YU12, RGB3, GREY"
        );
        assert!("YUYV2".parse::<PixelFormat>().is_err());
        assert!("yuyv".parse::<PixelFormat>().is_err());
    }

    #[test]
    fn frame_len_follows_v4l2_sizeimage() {
        assert_eq!(PixelFormat::Yuyv.frame_len(480, 1280), Some(614_400));
        assert_eq!(PixelFormat::Nv12.frame_len(480, 640), Some(460_800));
        assert_eq!(PixelFormat::Yu12.frame_len(480, 640), Some(460_800));
        // Odd heights round the chroma rows up.
        assert_eq!(PixelFormat::Nv12.frame_len(3, 4), Some(4 * 3 + 4 * 2));
        assert_eq!(PixelFormat::Yu12.frame_len(3, 4), Some(4 * 3 + 2 * 2 * 2));
        assert_eq!(PixelFormat::Mjpeg.frame_len(480, 0), None);
    }

    #[test]
    fn odd_widths_round_chroma_up() {
        assert_eq!(PixelFormat::Yuyv.min_bytes_per_line(5), Some(12));
        assert_eq!(PixelFormat::Nv12.min_bytes_per_line(5), Some(6));
        assert_eq!(PixelFormat::Rgb24.min_bytes_per_line(5), Some(15));
        assert_eq!(PixelFormat::Grey.min_bytes_per_line(5), Some(5));
    }
}
