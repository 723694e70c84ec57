//! Copies frames that are already RGB or grey into an RGB image, dropping
//! row padding. Grey is replicated into R, G and B without any range or
//! gamma change, as `GREY` carries luminance on the full 0..=255 scale.
//!
//! Sizes are validated by the caller. This module only walks the rows.

use super::{RawFrame, RgbImage};

/// Copies an RGB24 frame whose size has been validated into `image`.
pub(super) fn copy_rgb24(frame: &RawFrame<'_>, image: &mut RgbImage) {
    let row_len = 3 * frame.width as usize;
    let rows = frame.data.chunks(frame.bytes_per_line as usize);
    for (output, input) in image.chunks_exact_mut(row_len).zip(rows) {
        output.copy_from_slice(&input[..row_len]);
    }
}

/// Replicates a GREY frame whose size has been validated into `image`.
pub(super) fn replicate_grey(frame: &RawFrame<'_>, image: &mut RgbImage) {
    let width = frame.width as usize;
    let rows = frame.data.chunks(frame.bytes_per_line as usize);
    for (output, input) in image.chunks_exact_mut(3 * width).zip(rows) {
        for (pixel, &luma) in output.chunks_exact_mut(3).zip(&input[..width]) {
            pixel.fill(luma);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::PixelFormat;

    #[test]
    fn rgb24_padding_is_dropped() {
        // Two rows of two pixels, each row padded by 2 bytes of 0xEE.
        let data = [1, 2, 3, 4, 5, 6, 0xEE, 0xEE, 7, 8, 9, 10, 11, 12, 0xEE, 0xEE];
        let frame = RawFrame { format: PixelFormat::Rgb24, width: 2, height: 2, bytes_per_line: 8, data: &data };
        let mut image = RgbImage::new(2, 2);
        copy_rgb24(&frame, &mut image);
        assert_eq!(image.as_raw(), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn grey_is_replicated_without_range_change() {
        let data = [0, 16, 0xEE, 235, 255, 0xEE];
        let frame = RawFrame { format: PixelFormat::Grey, width: 2, height: 2, bytes_per_line: 3, data: &data };
        let mut image = RgbImage::new(2, 2);
        replicate_grey(&frame, &mut image);
        assert_eq!(image.as_raw(), &[0, 0, 0, 16, 16, 16, 235, 235, 235, 255, 255, 255]);
    }
}
