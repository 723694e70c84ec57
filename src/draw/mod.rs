//! Draws detections onto an image for people to look at (`detect --draw`).
//!
//! Each detection gets a rectangle outline and a `"{label} {score:.2}"` tag on
//! a filled background, both in a colour chosen by class id. Boxes are
//! clipped to the image the way darknet's `draw_box_width` clamps them, so a
//! box that runs off the image is drawn along the image edge. The module only
//! annotates pixels: the published detections never depend on it, and line
//! width, text size and colours may change without notice.

use font8x8::{UnicodeFonts, BASIC_FONTS, GREEK_FONTS, LATIN_FONTS};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut};
use imageproc::rect::Rect;

use crate::detection::{BoundingBox, Detection};

/// Side of a font8x8 glyph, in pixels before scaling.
const GLYPH_SIDE: u32 = 8;

/// Draws each detection's box and label onto `image`.
///
/// Boxes with a non-finite coordinate, and boxes entirely outside the image,
/// are skipped.
pub fn draw_detections(image: &mut RgbImage, detections: &[Detection]) {
    if image.width() == 0 || image.height() == 0 {
        return;
    }
    let style = Style::for_image(image.width(), image.height());

    // A box with several labels gets one caption listing them all, strongest
    // first, so that no label is drawn over another.
    let mut captions: Vec<(&Detection, String)> = Vec::new();
    for detection in detections {
        let text = format!("{} {:.2}", detection.label, detection.score);
        match captions.iter_mut().find(|(first, _)| first.bbox == detection.bbox) {
            Some((_, caption)) => *caption = format!("{caption}, {text}"),
            None => captions.push((detection, text)),
        }
    }

    for (detection, caption) in &captions {
        let Some(bounds) = clip_to_image(&detection.bbox, image.width(), image.height()) else {
            continue;
        };
        let colour = class_colour(detection.class_id);
        draw_outline(image, bounds, style.line_width, colour);
        draw_label(image, bounds, caption, style.text_scale, colour);
    }
}

/// Line width and text size, growing with the image so that annotations stay
/// readable on large frames without hiding small ones.
struct Style {
    line_width: u32,
    /// Pixels per font8x8 dot.
    text_scale: u32,
}

impl Style {
    fn for_image(width: u32, height: u32) -> Self {
        let short_side = width.min(height);
        Style { line_width: if short_side >= 720 { 3 } else { 2 }, text_scale: (short_side / 300).clamp(1, 4) }
    }
}

/// A box in whole pixels, edges inclusive, inside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PixelBox {
    left: u32,
    top: u32,
    right: u32,
    bottom: u32,
}

/// Rounds `bbox` to pixels and clamps it into a `width`×`height` image.
fn clip_to_image(bbox: &BoundingBox, width: u32, height: u32) -> Option<PixelBox> {
    let coordinates = [bbox.x, bbox.y, bbox.w, bbox.h];
    if coordinates.iter().any(|value| !value.is_finite()) {
        return None;
    }

    // `f64` keeps `x + w` exact enough and free of overflow for any finite `f32`.
    let left = f64::from(bbox.x).round();
    let top = f64::from(bbox.y).round();
    let right = (f64::from(bbox.x) + f64::from(bbox.w)).round();
    let bottom = (f64::from(bbox.y) + f64::from(bbox.h)).round();

    let max_x = f64::from(width - 1);
    let max_y = f64::from(height - 1);
    if right < 0.0 || bottom < 0.0 || left > max_x || top > max_y || right < left || bottom < top {
        return None;
    }

    Some(PixelBox {
        left: left.clamp(0.0, max_x) as u32,
        top: top.clamp(0.0, max_y) as u32,
        right: right.clamp(0.0, max_x) as u32,
        bottom: bottom.clamp(0.0, max_y) as u32,
    })
}

/// Draws `line_width` nested outlines inward from the edges of `bounds`, as
/// darknet's `draw_box_width` does; a box too small for that is filled.
fn draw_outline(image: &mut RgbImage, bounds: PixelBox, line_width: u32, colour: Rgb<u8>) {
    for inset in 0..line_width {
        let width = (bounds.right - bounds.left + 1).saturating_sub(2 * inset);
        let height = (bounds.bottom - bounds.top + 1).saturating_sub(2 * inset);
        if width == 0 || height == 0 {
            break;
        }
        let rect = Rect::at(to_i32(bounds.left + inset), to_i32(bounds.top + inset)).of_size(width, height);
        draw_hollow_rect_mut(image, rect, colour);
    }
}

/// Draws `text` on a filled background, just above `bounds` when there is
/// room and otherwise just inside its top edge.
fn draw_label(image: &mut RgbImage, bounds: PixelBox, text: &str, scale: u32, background: Rgb<u8>) {
    let padding = scale;
    let glyph_side = GLYPH_SIDE * scale;
    let char_count = u32::try_from(text.chars().count()).unwrap_or(u32::MAX);
    let label_width = char_count.saturating_mul(glyph_side).saturating_add(2 * padding);
    let label_height = glyph_side + 2 * padding;

    // Shift the label left when it would run off the right edge, unless it
    // is wider than the image, in which case it starts at the left edge.
    let left = bounds.left.min(image.width().saturating_sub(label_width));
    let top = if bounds.top >= label_height { bounds.top - label_height } else { bounds.top };

    // `Rect` panics on sizes beyond `i32::MAX`, so only the visible part of
    // a very long label is passed to it.
    let visible_width = label_width.min(image.width() - left);
    let background_rect = Rect::at(to_i32(left), to_i32(top)).of_size(visible_width, label_height);
    draw_filled_rect_mut(image, background_rect, background);

    let ink = text_colour(background);
    let mut glyph_left = left + padding;
    for character in text.chars() {
        if glyph_left >= image.width() {
            break;
        }
        draw_glyph(image, glyph_left, top + padding, glyph(character), scale, ink);
        glyph_left = glyph_left.saturating_add(glyph_side);
    }
}

/// Draws one font8x8 glyph with its top-left corner at (`left`, `top`),
/// each dot as a `scale`×`scale` square; dots outside the image are skipped.
fn draw_glyph(image: &mut RgbImage, left: u32, top: u32, rows: [u8; 8], scale: u32, ink: Rgb<u8>) {
    for (row_index, row) in (0u32..).zip(rows) {
        for column in 0..GLYPH_SIDE {
            // font8x8 stores the leftmost dot in the lowest bit.
            if row & (1 << column) == 0 {
                continue;
            }
            let x = left.saturating_add(column * scale);
            let y = top.saturating_add(row_index * scale);
            let dot = Rect::at(to_i32(x), to_i32(y)).of_size(scale, scale);
            draw_filled_rect_mut(image, dot, ink);
        }
    }
}

/// Looks `character` up in the font8x8 tables, falling back to `?`.
fn glyph(character: char) -> [u8; 8] {
    BASIC_FONTS
        .get(character)
        .or_else(|| LATIN_FONTS.get(character))
        .or_else(|| GREEK_FONTS.get(character))
        .or_else(|| BASIC_FONTS.get('?'))
        .unwrap_or([0; 8])
}

/// Clamps a pixel coordinate into `i32` for `imageproc::rect::Rect`;
/// anything that large is off the image anyway.
fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Picks a colour for `class_id`: hues step by the golden ratio, so classes
/// with neighbouring ids get clearly different colours.
fn class_colour(class_id: usize) -> Rgb<u8> {
    const GOLDEN_RATIO_CONJUGATE: f64 = 0.618_033_988_749_895;
    let hue = (class_id as f64 * GOLDEN_RATIO_CONJUGATE).fract();
    hsv_to_rgb(hue, 0.75, 0.95)
}

/// Converts a colour from HSV (each component in 0..1) to 8-bit RGB.
fn hsv_to_rgb(hue: f64, saturation: f64, value: f64) -> Rgb<u8> {
    let sector = hue * 6.0;
    let chroma = value * saturation;
    let rising = chroma * (1.0 - (sector % 2.0 - 1.0).abs());
    let (red, green, blue) = match sector as u32 {
        0 => (chroma, rising, 0.0),
        1 => (rising, chroma, 0.0),
        2 => (0.0, chroma, rising),
        3 => (0.0, rising, chroma),
        4 => (rising, 0.0, chroma),
        _ => (chroma, 0.0, rising),
    };
    let offset = value - chroma;
    let to_byte = |component: f64| ((component + offset) * 255.0).round().clamp(0.0, 255.0) as u8;
    Rgb([to_byte(red), to_byte(green), to_byte(blue)])
}

/// Chooses black or white text, whichever contrasts more with `background`.
fn text_colour(background: Rgb<u8>) -> Rgb<u8> {
    let [red, green, blue] = background.0.map(f32::from);
    // Rec. 601 luma weights.
    let luma = 0.299 * red + 0.587 * green + 0.114 * blue;
    if luma > 140.0 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbox(x: f32, y: f32, w: f32, h: f32) -> BoundingBox {
        BoundingBox { x, y, w, h }
    }

    #[test]
    fn clip_clamps_box_running_off_image() {
        let clipped = clip_to_image(&bbox(-20.0, 90.0, 50.0, 40.0), 100, 100);
        assert_eq!(clipped, Some(PixelBox { left: 0, top: 90, right: 30, bottom: 99 }));
    }

    #[test]
    fn clip_skips_box_outside_image() {
        assert_eq!(clip_to_image(&bbox(150.0, 10.0, 20.0, 20.0), 100, 100), None);
        assert_eq!(clip_to_image(&bbox(10.0, -50.0, 20.0, 20.0), 100, 100), None);
    }

    #[test]
    fn clip_skips_non_finite_box() {
        assert_eq!(clip_to_image(&bbox(f32::NAN, 10.0, 20.0, 20.0), 100, 100), None);
        assert_eq!(clip_to_image(&bbox(10.0, 10.0, f32::INFINITY, 20.0), 100, 100), None);
    }

    #[test]
    fn neighbouring_classes_get_different_colours() {
        for class_id in 0..80 {
            assert_ne!(class_colour(class_id), class_colour(class_id + 1), "class {class_id}");
        }
    }

    #[test]
    fn hsv_primaries() {
        assert_eq!(hsv_to_rgb(0.0, 1.0, 1.0), Rgb([255, 0, 0]));
        assert_eq!(hsv_to_rgb(1.0 / 3.0, 1.0, 1.0), Rgb([0, 255, 0]));
        assert_eq!(hsv_to_rgb(2.0 / 3.0, 1.0, 1.0), Rgb([0, 0, 255]));
    }
}
