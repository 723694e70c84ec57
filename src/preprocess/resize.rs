//! Darknet's bilinear `resize_image`, computed from 8-bit RGB straight into a
//! planar `f32` canvas.
//!
//! Darknet converts each byte to `(float)v / 255.`, then resizes in two
//! passes with corner-aligned sampling: a horizontal pass over every source
//! row into a temporary image, then a vertical pass. No image crate samples
//! this way (they align pixel centres), so the resize is written here by hand.
//! It performs the same `f32` operations in the same order as the C code and
//! therefore gives the same values, but it is faster for three reasons:
//!
//! - the per-column source index and weight are computed once per resize,
//!   not once per row and channel;
//! - the horizontal pass runs only on the source rows that the vertical pass
//!   reads (at most two per output row). Every horizontally resampled row is
//!   computed exactly as darknet computes it, so skipping the rows darknet
//!   computes and never reads does not change the output;
//! - the byte-to-float conversion is a lookup table inside the horizontal
//!   pass, and the vertical pass is a plain loop over slices that the
//!   compiler vectorises.
//!
//! This module does not choose the output size or fill the padding, which
//! `prepare_input` and `letterbox` do.

use super::{InputRegion, RgbImage};

/// Darknet's byte-to-float conversion, `(float)data[i]/255.` in
/// `load_image_stb`: the division is in `double` and rounded once to `float`.
const BYTE_TO_UNIT: [f32; 256] = {
    let mut table = [0.0f32; 256];
    let mut value = 0;
    while value < 256 {
        table[value] = (value as f64 / 255.0) as f32;
        value += 1;
    }
    table
};

/// A planar RGB `f32` buffer (channel, row, column) being written.
pub(super) struct PlanarCanvas<'a> {
    data: &'a mut [f32],
    width: usize,
    height: usize,
}

impl<'a> PlanarCanvas<'a> {
    /// Wraps `data`, which must hold `3 * width * height` values.
    pub(super) fn new(data: &'a mut [f32], width: usize, height: usize) -> Self {
        debug_assert_eq!(data.len(), 3 * width * height);
        PlanarCanvas { data, width, height }
    }

    /// Returns the `len` values of `channel` starting at column `left` of `row`.
    fn row_mut(&mut self, channel: usize, row: usize, left: usize, len: usize) -> &mut [f32] {
        let start = (channel * self.height + row) * self.width + left;
        &mut self.data[start..start + len]
    }
}

/// Source pixels and weights for one output column of the horizontal pass.
#[derive(Clone, Copy, Debug)]
struct ColumnTap {
    /// Byte offset of the left source pixel within a row.
    left: usize,
    /// Byte offset of the right source pixel within a row.
    right: usize,
    /// `1 - dx`, computed as darknet computes it.
    left_weight: f32,
    /// `dx`.
    right_weight: f32,
}

/// Computes the horizontal pass's taps for `dst_width` output columns.
///
/// Darknet copies the last source pixel into the last output column (and
/// into every column when the source is one pixel wide). Here that is a tap
/// with weights 1 and 0 on the last pixel, which gives the same value because
/// `1 * p + 0 * p == p` for every finite `p`.
fn column_taps(src_width: usize, dst_width: usize) -> Vec<ColumnTap> {
    let last_pixel = 3 * (src_width - 1);
    let copy_last = ColumnTap { left: last_pixel, right: last_pixel, left_weight: 1.0, right_weight: 0.0 };

    // Darknet divides by zero here when `dst_width` is 1, but then every
    // column is the last one and the scale is never used.
    let w_scale = (src_width - 1) as f32 / (dst_width - 1) as f32;

    (0..dst_width)
        .map(|column| {
            if column == dst_width - 1 || src_width == 1 {
                return copy_last;
            }
            let sx = column as f32 * w_scale;
            let ix = sx as usize;
            let dx = sx - ix as f32;

            // `ix + 1` stays inside the row except for upscales so extreme
            // that `sx` rounds up to the last pixel. Then `dx` is 0, darknet
            // reads past the row, and the clamp only keeps the read inside.
            ColumnTap {
                left: 3 * ix.min(src_width - 1),
                right: 3 * (ix + 1).min(src_width - 1),
                left_weight: 1.0 - dx,
                right_weight: dx,
            }
        })
        .collect()
}

/// One source row after the horizontal pass, planar: red, green, blue, each
/// `taps.len()` values long.
struct ResampledRow {
    source_row: Option<usize>,
    values: Vec<f32>,
}

impl ResampledRow {
    fn new(width: usize) -> Self {
        ResampledRow { source_row: None, values: vec![0.0; 3 * width] }
    }

    /// Runs darknet's horizontal pass on source row `row` of `image`.
    fn resample(&mut self, image: &RgbImage, row: usize, taps: &[ColumnTap]) {
        let row_bytes = 3 * image.width() as usize;
        let pixels = &image.as_raw()[row * row_bytes..(row + 1) * row_bytes];

        let (red, rest) = self.values.split_at_mut(taps.len());
        let (green, blue) = rest.split_at_mut(taps.len());
        for (((tap, red), green), blue) in taps.iter().zip(red).zip(green).zip(blue) {
            let p = &pixels[tap.left..tap.left + 3];
            let q = &pixels[tap.right..tap.right + 3];
            *red = tap.left_weight * BYTE_TO_UNIT[p[0] as usize] + tap.right_weight * BYTE_TO_UNIT[q[0] as usize];
            *green = tap.left_weight * BYTE_TO_UNIT[p[1] as usize] + tap.right_weight * BYTE_TO_UNIT[q[1] as usize];
            *blue = tap.left_weight * BYTE_TO_UNIT[p[2] as usize] + tap.right_weight * BYTE_TO_UNIT[q[2] as usize];
        }
        self.source_row = Some(row);
    }

    fn channel(&self, channel: usize) -> &[f32] {
        let width = self.values.len() / 3;
        &self.values[channel * width..(channel + 1) * width]
    }
}

/// Resizes `image` to the size of `region` and writes it there in `canvas`.
///
/// `region` must lie inside the canvas and `image` must have pixels.
pub(super) fn resize_into(image: &RgbImage, canvas: &mut PlanarCanvas<'_>, region: InputRegion) {
    let src_width = image.width() as usize;
    let src_height = image.height() as usize;
    let left = region.left as usize;
    let top = region.top as usize;
    let width = region.width as usize;
    let height = region.height as usize;
    if src_width == 0 || src_height == 0 || width == 0 || height == 0 {
        return;
    }

    if src_width == width && src_height == height {
        copy_into(image, canvas, left, top);
        return;
    }

    let taps = column_taps(src_width, width);

    // Darknet divides by zero here when `height` is 1 and then reads from an
    // undefined row. With any finite scale the only output row samples
    // source row 0, so that is what this does.
    let h_scale = if height > 1 { (src_height - 1) as f32 / (height - 1) as f32 } else { 0.0 };

    // Output rows read source rows in non-decreasing order, so two buffers
    // suffice: the lower row of one output row is often the upper row of the
    // next one.
    let mut upper = ResampledRow::new(width);
    let mut lower = ResampledRow::new(width);

    for r in 0..height {
        let sy = r as f32 * h_scale;
        let iy = (sy as usize).min(src_height - 1);
        let dy = sy - iy as f32;

        if upper.source_row != Some(iy) {
            if lower.source_row == Some(iy) {
                std::mem::swap(&mut upper, &mut lower);
            } else {
                upper.resample(image, iy, &taps);
            }
        }

        // Darknet's last output row takes only `(1 - dy)` times the upper row,
        // even when `dy` is not 0, and so does every row of a one-row source.
        // NOTE: for some sizes, such as 720 rows into 544 or 480 into 832,
        // `(height - 1) * h_scale` rounds to just below the last source row.
        // Then `dy` is nearly 1 and the last row is nearly black, as in
        // darknet. It is kept because matching darknet's input is the goal.
        let upper_weight = 1.0 - dy;
        if r == height - 1 || src_height == 1 {
            for channel in 0..3 {
                let out = canvas.row_mut(channel, top + r, left, width);
                for (out, &a) in out.iter_mut().zip(upper.channel(channel)) {
                    *out = upper_weight * a;
                }
            }
            continue;
        }

        // As with columns, the clamp only matters when `dy` is 0.
        let next = (iy + 1).min(src_height - 1);
        if lower.source_row != Some(next) {
            lower.resample(image, next, &taps);
        }
        for channel in 0..3 {
            let out = canvas.row_mut(channel, top + r, left, width);
            for ((out, &a), &b) in out.iter_mut().zip(upper.channel(channel)).zip(lower.channel(channel)) {
                *out = upper_weight * a + dy * b;
            }
        }
    }
}

/// Converts `image` to floats at (`left`, `top`) of `canvas`, as darknet's
/// `resize_image` copies an image that already has the requested size.
fn copy_into(image: &RgbImage, canvas: &mut PlanarCanvas<'_>, left: usize, top: usize) {
    let width = image.width() as usize;
    for (r, pixels) in image.as_raw().chunks_exact(3 * width).enumerate() {
        for channel in 0..3 {
            let out = canvas.row_mut(channel, top + r, left, width);
            for (out, pixel) in out.iter_mut().zip(pixels.chunks_exact(3)) {
                *out = BYTE_TO_UNIT[pixel[channel] as usize];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_matches_double_division() {
        assert_eq!(BYTE_TO_UNIT[0], 0.0);
        assert_eq!(BYTE_TO_UNIT[255], 1.0);
        assert_eq!(BYTE_TO_UNIT[128], (128.0f64 / 255.0) as f32);
    }

    #[test]
    fn last_column_copies_last_pixel() {
        let taps = column_taps(5, 3);
        let last = taps[2];
        assert_eq!((last.left, last.right), (12, 12));
        assert_eq!((last.left_weight, last.right_weight), (1.0, 0.0));
    }

    #[test]
    fn taps_stay_inside_row() {
        for (src_width, dst_width) in [(1, 7), (2, 1000), (1920, 416), (416, 1920), (3, 2)] {
            for tap in column_taps(src_width, dst_width) {
                assert!(tap.left + 3 <= 3 * src_width, "{src_width}->{dst_width}: {tap:?}");
                assert!(tap.right + 3 <= 3 * src_width, "{src_width}->{dst_width}: {tap:?}");
            }
        }
    }
}
