//! Turns raw YOLO head outputs into labelled boxes on the original image,
//! computed as darknet's `detector test` does: decode each head
//! ([`yolo`]), undo the letterbox, suppress overlaps per class ([`nms`]), and
//! report every class above the threshold.
//!
//! Boxes stay in darknet's relative coordinates (0..1 of the image width and
//! height) until the last step, because darknet compares them there and the
//! DIoU penalty of NMS depends on the scale of each axis.

pub mod nms;
pub mod yolo;

pub use nms::{suppress, Overflow, MAX_CANDIDATES_PER_CLASS};
pub use yolo::{decode_heads, head_rows, AnchorRow, Candidate, RelativeBox};

use crate::detection::{BoundingBox, Detection};

/// Converts surviving candidates into detections in image pixels: one per class
/// whose score is above `threshold`, strongest first, boxes clipped to the image.
pub fn to_detections(
    candidates: &[Candidate],
    labels: &[String],
    image_width: u32,
    image_height: u32,
    threshold: f32,
) -> Vec<Detection> {
    let (width, height) = (image_width as f32, image_height as f32);
    let mut detections = Vec::new();
    for candidate in candidates {
        let b = candidate.bbox;
        let left = ((b.x - b.w / 2.0) * width).clamp(0.0, width);
        let right = ((b.x + b.w / 2.0) * width).clamp(0.0, width);
        let top = ((b.y - b.h / 2.0) * height).clamp(0.0, height);
        let bottom = ((b.y + b.h / 2.0) * height).clamp(0.0, height);
        if right <= left || bottom <= top {
            continue;
        }
        let bbox = BoundingBox { x: left, y: top, w: right - left, h: bottom - top };
        for (class_id, &score) in candidate.scores.iter().enumerate() {
            if score > threshold {
                let label = labels.get(class_id).cloned().unwrap_or_else(|| format!("class{class_id}"));
                detections.push(Detection { label, class_id, score, bbox });
            }
        }
    }
    detections.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.class_id.cmp(&b.class_id)));
    detections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_clipped_to_the_image_and_split_per_class() {
        let candidate = Candidate {
            bbox: RelativeBox { x: 0.05, y: 0.5, w: 0.2, h: 0.5 },
            objectness: 0.9,
            scores: vec![0.0, 0.8, 0.3],
        };
        let labels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let detections = to_detections(&[candidate], &labels, 200, 100, 0.25);
        assert_eq!(detections.len(), 2);
        assert_eq!(detections[0].label, "b");
        assert_eq!(detections[1].label, "c");
        let bbox = detections[0].bbox;
        assert_eq!(bbox.x, 0.0);
        assert!((bbox.w - 30.0).abs() < 1e-4, "{bbox:?}");
        assert!((bbox.y - 25.0).abs() < 1e-4, "{bbox:?}");
        assert!((bbox.h - 50.0).abs() < 1e-4, "{bbox:?}");
    }
}
