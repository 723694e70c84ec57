//! Draws detections onto an image for people to look at (`detect --draw`).
// Skeleton: the preprocessing owner replaces this.

use crate::detection::Detection;
use image::RgbImage;

/// Draws each detection's box and label onto `image`.
pub fn draw_detections(image: &mut RgbImage, detections: &[Detection]) {
    let _ = (image, detections);
}
