//! Converts YUYV, NV12 and YU12 frames to RGB with yuvutils-rs, which picks
//! SIMD kernels at run time (NEON on ARM, AVX2 or SSE4.1 on x86) and falls
//! back to portable code.
//!
//! Camera YUV is taken as BT.601 with limited range (Y in 16..=235, Cb and
//! Cr in 16..=240). The Linux media documentation ("Colorspace sRGB", the
//! colorspace most webcams report) gives BT.601 as the default Y'CbCr
//! encoding and limited range as the default quantization, and ffmpeg's
//! swscale assumes the same for untagged yuyv422, nv12 and yuv420p. Chroma
//! is upsampled by repeating each sample, which swscale also computes with
//! `-sws_flags neighbor+accurate_rnd+full_chroma_int`. This module does not
//! read the colorspace a driver reports: a camera that sends full-range or
//! BT.709 YUV is converted as BT.601 limited range all the same.
//!
//! Sizes are validated by the caller. This module only lays the planes out.

use yuvutils_rs::{YuvBiPlanarImage, YuvConversionMode, YuvError, YuvPlanarImage, YuvRange, YuvStandardMatrix};

use super::{RawFrame, RgbImage};

/// The matrix of camera YUV: BT.601 (Kr = 0.299, Kb = 0.114).
const MATRIX: YuvStandardMatrix = YuvStandardMatrix::Bt601;
/// The quantization of camera YUV: limited ("TV") range.
const RANGE: YuvRange = YuvRange::Limited;

/// Buffers that a conversion may need, kept from frame to frame.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// The rows of an NV12 chroma plane without their padding.
    rows: Vec<u8>,
    /// The Y, U and V planes of a YUYV frame.
    planes: Vec<u8>,
}

/// Converts a YUYV frame whose size has been validated into `image`.
///
/// yuvutils-rs 0.8.3 converts YUYV to RGB with 6-bit coefficients, which
/// measured 0.8 brighter on average than the BT.601 formula. Its planar
/// 4:2:2 conversion uses 13 bits, so the frame is first split into Y, U and
/// V planes in `scratch.planes`. The split is written here because the
/// crate's `yuyv422_to_yuv422` rejects padded rows, and it left pixels 48 to
/// 63 of 64-pixel rows unwritten in a test on x86-64 with AVX2.
pub(super) fn yuyv_to_rgb(frame: &RawFrame<'_>, image: &mut RgbImage, scratch: &mut Scratch) -> Result<(), YuvError> {
    let width = frame.width as usize;
    let height = frame.height as usize;
    let chroma_width = width.div_ceil(2);

    scratch.planes.resize(width * height + 2 * chroma_width * height, 0);
    let (luma, chroma) = scratch.planes.split_at_mut(width * height);
    let (u_plane, v_plane) = chroma.split_at_mut(chroma_width * height);
    split_yuyv(frame, luma, u_plane, v_plane);

    let planar = YuvPlanarImage {
        y_plane: luma,
        y_stride: frame.width,
        u_plane,
        u_stride: chroma_width as u32,
        v_plane,
        v_stride: chroma_width as u32,
        width: frame.width,
        height: frame.height,
    };
    yuvutils_rs::yuv422_to_rgb(&planar, image, rgb_stride(frame), RANGE, MATRIX)
}

/// Splits the rows of a YUYV frame into unpadded Y, U and V planes. An odd
/// width leaves out the second Y sample of each row's last pair, which is
/// padding.
fn split_yuyv(frame: &RawFrame<'_>, luma: &mut [u8], u_plane: &mut [u8], v_plane: &mut [u8]) {
    let width = frame.width as usize;
    let chroma_width = width.div_ceil(2);
    let full_pairs = width / 2;
    let rows = frame.data.chunks(frame.bytes_per_line as usize);
    let planes = luma
        .chunks_exact_mut(width)
        .zip(u_plane.chunks_exact_mut(chroma_width))
        .zip(v_plane.chunks_exact_mut(chroma_width));

    for (((luma_row, u_row), v_row), row) in planes.zip(rows) {
        // Whole pairs in a loop without branches, which the compiler can
        // vectorise, then the lone pixel of an odd width.
        let (luma_pairs, luma_tail) = luma_row.split_at_mut(2 * full_pairs);
        let pairs = luma_pairs.chunks_exact_mut(2).zip(u_row.iter_mut()).zip(v_row.iter_mut()).zip(row.chunks_exact(4));
        for (((luma_pair, u), v), pair) in pairs {
            luma_pair[0] = pair[0];
            luma_pair[1] = pair[2];
            *u = pair[1];
            *v = pair[3];
        }

        let last_pair = row.get(4 * full_pairs..4 * full_pairs + 4);
        if let (Some(luma), Some(pair), Some(u), Some(v)) =
            (luma_tail.first_mut(), last_pair, u_row.last_mut(), v_row.last_mut())
        {
            *luma = pair[0];
            *u = pair[1];
            *v = pair[3];
        }
    }
}

/// Converts an NV12 frame whose size has been validated into `image`.
///
/// yuvutils-rs 0.8.3 rejects an interleaved chroma plane whose rows are
/// padded, so a padded chroma plane is first packed into `scratch.rows`.
/// The luma plane is read in place.
pub(super) fn nv12_to_rgb(frame: &RawFrame<'_>, image: &mut RgbImage, scratch: &mut Scratch) -> Result<(), YuvError> {
    let stride = frame.bytes_per_line as usize;
    let height = frame.height as usize;
    let chroma_height = height.div_ceil(2);
    // One U and one V byte for each pair of pixels.
    let chroma_row_len = (frame.width as usize).div_ceil(2) * 2;

    let (luma, rest) = frame.data.split_at(stride * height);
    let chroma = pack_rows(&rest[..stride * chroma_height], stride, chroma_row_len, chroma_height, &mut scratch.rows);
    let source = YuvBiPlanarImage {
        y_plane: luma,
        y_stride: frame.bytes_per_line,
        uv_plane: chroma,
        uv_stride: chroma_row_len as u32,
        width: frame.width,
        height: frame.height,
    };
    yuvutils_rs::yuv_nv12_to_rgb(&source, image, rgb_stride(frame), RANGE, MATRIX, YuvConversionMode::Balanced)
}

/// Converts a YU12 frame whose size has been validated into `image`; the
/// planes are read in place.
pub(super) fn yu12_to_rgb(frame: &RawFrame<'_>, image: &mut RgbImage) -> Result<(), YuvError> {
    let stride = frame.bytes_per_line as usize;
    let chroma_stride = stride / 2;
    let height = frame.height as usize;
    let chroma_plane_len = chroma_stride * height.div_ceil(2);

    let (luma, rest) = frame.data.split_at(stride * height);
    let (u_plane, rest) = rest.split_at(chroma_plane_len);
    let v_plane = &rest[..chroma_plane_len];
    let source = YuvPlanarImage {
        y_plane: luma,
        y_stride: frame.bytes_per_line,
        u_plane,
        u_stride: chroma_stride as u32,
        v_plane,
        v_stride: chroma_stride as u32,
        width: frame.width,
        height: frame.height,
    };
    yuvutils_rs::yuv420_to_rgb(&source, image, rgb_stride(frame), RANGE, MATRIX)
}

fn rgb_stride(frame: &RawFrame<'_>) -> u32 {
    3 * frame.width
}

/// Returns `rows` rows of `row_len` bytes without the padding of `stride`:
/// `plane` itself when it has none, otherwise a packed copy in `scratch`.
fn pack_rows<'a>(plane: &'a [u8], stride: usize, row_len: usize, rows: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    if stride == row_len {
        return &plane[..row_len * rows];
    }
    scratch.clear();
    for row in plane.chunks(stride).take(rows) {
        scratch.extend_from_slice(&row[..row_len]);
    }
    scratch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::PixelFormat;

    /// BT.601 limited range to RGB in `f64`, rounded and clamped: the formula
    /// that yuvutils-rs approximates in fixed point.
    fn reference_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
        let (kr, kb) = (0.299, 0.114);
        let kg = 1.0 - kr - kb;
        let luma = (f64::from(y) - 16.0) * 255.0 / 219.0;
        let cb = (f64::from(u) - 128.0) * 255.0 / 224.0;
        let cr = (f64::from(v) - 128.0) * 255.0 / 224.0;
        let red = luma + 2.0 * (1.0 - kr) * cr;
        let blue = luma + 2.0 * (1.0 - kb) * cb;
        let green = luma - (2.0 * kb * (1.0 - kb) * cb + 2.0 * kr * (1.0 - kr) * cr) / kg;
        [red, green, blue].map(|value| value.round().clamp(0.0, 255.0) as u8)
    }

    /// Largest difference per channel to the formula: the worst case measured
    /// with these tests' samples, while a wrong plane layout is off by far more.
    ///
    /// yuvutils-rs 0.8.3 on x86-64 with AVX2 is off by 2 in some pixels next
    /// to saturated channels. Its aarch64 NEON kernels multiply with
    /// `vqrdmulh`, which rounds, only where the CPU has the RDM extension
    /// (ARMv8.1). Elsewhere they use `vqdmulh`, which truncates. Green, the
    /// sum of three such products, was off by 3 in either direction under
    /// qemu 7.2 with `-cpu cortex-a53`, `cortex-a57` and `cortex-a72`, the
    /// cores of the Raspberry Pi 3 and 4 and the Jetson Nano. With `-cpu max`,
    /// which has RDM, it was off by 2. The NEON kernels also convert the ends
    /// of rows, so the 7-pixel-wide frame was off by 3 as well. On armv7 the
    /// crate has no NEON kernels and runs its portable code, and these tests
    /// have not been run there yet.
    #[cfg(target_arch = "aarch64")]
    const MAX_DEVIATION: u8 = 3;
    #[cfg(not(target_arch = "aarch64"))]
    const MAX_DEVIATION: u8 = 2;

    /// A small xorshift generator of samples in 16..=235, so the test needs
    /// no extra crate and always gets the same bytes. Samples stay in the
    /// limited range because yuvutils-rs clamps luma below 16 to 16, where
    /// the formula (and swscale) would go on darkening.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                16 + (state >> 24) as u8 % 220
            })
            .collect()
    }

    /// Largest difference of any channel between `image` and the reference
    /// formula applied to the samples that `sample` picks for each pixel.
    fn max_deviation(image: &RgbImage, sample: impl Fn(usize, usize) -> (u8, u8, u8)) -> u8 {
        let mut worst = 0;
        for (x, y, pixel) in image.enumerate_pixels() {
            let (luma, u, v) = sample(x as usize, y as usize);
            let expected = reference_rgb(luma, u, v);
            for (&found, &wanted) in pixel.0.iter().zip(&expected) {
                worst = worst.max(found.abs_diff(wanted));
            }
        }
        worst
    }

    fn min_stride(format: PixelFormat, width: u32) -> usize {
        format.min_bytes_per_line(width).unwrap() as usize
    }

    /// Sizes with odd sides, padding, and widths beyond one SIMD block.
    const SIZES: [(u32, u32, u32); 5] = [(2, 2, 0), (7, 5, 3), (64, 3, 0), (97, 9, 10), (130, 4, 64)];

    #[test]
    fn yuyv_matches_bt601_formula() {
        for (width, height, padding) in SIZES {
            let stride = min_stride(PixelFormat::Yuyv, width) + padding as usize;
            let data = noise(stride * height as usize, u64::from(width * height));
            let frame =
                RawFrame { format: PixelFormat::Yuyv, width, height, bytes_per_line: stride as u32, data: &data };
            let mut image = RgbImage::new(width, height);
            yuyv_to_rgb(&frame, &mut image, &mut Scratch::default()).unwrap();

            let worst = max_deviation(&image, |x, y| {
                let pair = &data[y * stride + (x / 2) * 4..][..4];
                (pair[(x % 2) * 2], pair[1], pair[3])
            });
            assert!(worst <= MAX_DEVIATION, "{width}x{height} + {padding}: off by {worst}");
        }
    }

    #[test]
    fn nv12_matches_bt601_formula() {
        for (width, height, padding) in SIZES {
            let stride = min_stride(PixelFormat::Nv12, width) + padding as usize;
            let chroma_start = stride * height as usize;
            let data = noise(chroma_start + stride * (height as usize).div_ceil(2), u64::from(width + height));
            let frame =
                RawFrame { format: PixelFormat::Nv12, width, height, bytes_per_line: stride as u32, data: &data };
            let mut image = RgbImage::new(width, height);
            nv12_to_rgb(&frame, &mut image, &mut Scratch::default()).unwrap();

            let worst = max_deviation(&image, |x, y| {
                let chroma = &data[chroma_start + (y / 2) * stride + (x / 2) * 2..][..2];
                (data[y * stride + x], chroma[0], chroma[1])
            });
            assert!(worst <= MAX_DEVIATION, "{width}x{height} + {padding}: off by {worst}");
        }
    }

    #[test]
    fn yu12_matches_bt601_formula() {
        for (width, height, padding) in SIZES {
            // YU12 pads in steps of two, so that half the stride keeps whole bytes.
            let stride = min_stride(PixelFormat::Yu12, width) + 2 * padding as usize;
            let chroma_stride = stride / 2;
            let u_start = stride * height as usize;
            let v_start = u_start + chroma_stride * (height as usize).div_ceil(2);
            let data = noise(v_start + (v_start - u_start), u64::from(width * 31 + height));
            let frame =
                RawFrame { format: PixelFormat::Yu12, width, height, bytes_per_line: stride as u32, data: &data };
            let mut image = RgbImage::new(width, height);
            yu12_to_rgb(&frame, &mut image).unwrap();

            let worst = max_deviation(&image, |x, y| {
                let chroma = (y / 2) * chroma_stride + x / 2;
                (data[y * stride + x], data[u_start + chroma], data[v_start + chroma])
            });
            assert!(worst <= MAX_DEVIATION, "{width}x{height} + {padding}: off by {worst}");
        }
    }

    #[test]
    fn reference_formula_maps_limited_range_ends() {
        assert_eq!(reference_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(reference_rgb(235, 128, 128), [255, 255, 255]);
        // Full blue, RGB (0, 0, 255), in BT.601 limited range.
        assert_eq!(reference_rgb(41, 240, 110), [0, 0, 255]);
    }
}
