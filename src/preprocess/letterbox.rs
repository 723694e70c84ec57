//! Darknet's letterbox geometry: where an image keeps its aspect ratio inside
//! the network input. The resize itself is in `resize`, and the padding value
//! is `PAD_VALUE`.

use super::InputRegion;

/// Computes the region that `letterbox_image` in darknet's `src/image.c`
/// resizes the image into, with the same float comparison and integer
/// divisions, so the region matches darknet's to the pixel.
///
/// Products are computed in `u64` where darknet uses `int`, which only
/// differs for images whose side times the network side exceeds `i32::MAX`.
pub(super) fn region(image_width: u32, image_height: u32, net_width: u32, net_height: u32) -> InputRegion {
    if image_width == 0 || image_height == 0 {
        return InputRegion { left: 0, top: 0, width: 0, height: 0 };
    }

    let (width, height) = if (net_width as f32 / image_width as f32) < (net_height as f32 / image_height as f32) {
        let height = u64::from(image_height) * u64::from(net_width) / u64::from(image_width);
        (u64::from(net_width), height)
    } else {
        let width = u64::from(image_width) * u64::from(net_height) / u64::from(image_height);
        (width, u64::from(net_height))
    };

    // The float comparison can pick the other branch when both ratios are
    // nearly equal. The result then still fits in the input for any realistic
    // size, but the clamp keeps the region inside the input regardless.
    let width = width.min(u64::from(net_width)) as u32;
    let height = height.min(u64::from(net_height)) as u32;

    InputRegion { left: (net_width - width) / 2, top: (net_height - height) / 2, width, height }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_image_is_centred_vertically() {
        // 1280×720 into 416×416: 416 / 1280 < 416 / 720, so the width fills.
        let region = region(1280, 720, 416, 416);
        assert_eq!(region, InputRegion { left: 0, top: 91, width: 416, height: 234 });
    }

    #[test]
    fn tall_image_is_centred_horizontally() {
        // 810×1080 into 416×416: new_w = 810 * 416 / 1080 = 312.
        let region = region(810, 1080, 416, 416);
        assert_eq!(region, InputRegion { left: 52, top: 0, width: 312, height: 416 });
    }

    #[test]
    fn extreme_aspect_ratio_gives_empty_region() {
        let region = region(10_000, 1, 416, 416);
        assert_eq!(region.height, 0);
        assert!(region.is_empty());
    }

    #[test]
    fn empty_image_gives_empty_region() {
        assert!(region(0, 10, 416, 416).is_empty());
    }
}
