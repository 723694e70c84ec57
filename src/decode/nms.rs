//! Per-class non-maximum suppression as darknet runs it (`do_nms_sort` and
//! `diounms_sort`), on boxes relative to the image.

use super::yolo::{Candidate, RelativeBox};
use crate::model::NmsKind;

/// Darknet's `box_diou` raises the normalised centre distance to this fixed
/// power for `greedynms` (`diounms` uses the cfg's `beta_nms` instead).
const GREEDY_DIOU_EXPONENT: f32 = 0.6;

fn overlap_1d(center_a: f32, size_a: f32, center_b: f32, size_b: f32) -> f32 {
    let left = (center_a - size_a / 2.0).max(center_b - size_b / 2.0);
    let right = (center_a + size_a / 2.0).min(center_b + size_b / 2.0);
    right - left
}

/// Intersection over union.
pub fn iou(a: &RelativeBox, b: &RelativeBox) -> f32 {
    let w = overlap_1d(a.x, a.w, b.x, b.w);
    let h = overlap_1d(a.y, a.h, b.y, b.h);
    if w < 0.0 || h < 0.0 {
        return 0.0;
    }
    let intersection = w * h;
    let union = a.w * a.h + b.w * b.h - intersection;
    if union <= 0.0 {
        return 0.0;
    }
    intersection / union
}

/// IoU minus (centre distance² / enclosing diagonal²) ^ `exponent`.
pub fn diou(a: &RelativeBox, b: &RelativeBox, exponent: f32) -> f32 {
    let left = (a.x - a.w / 2.0).min(b.x - b.w / 2.0);
    let right = (a.x + a.w / 2.0).max(b.x + b.w / 2.0);
    let top = (a.y - a.h / 2.0).min(b.y - b.h / 2.0);
    let bottom = (a.y + a.h / 2.0).max(b.y + b.h / 2.0);
    let diagonal = (right - left) * (right - left) + (bottom - top) * (bottom - top);
    let overlap = iou(a, b);
    if diagonal == 0.0 {
        return overlap;
    }
    let distance = (a.x - b.x) * (a.x - b.x) + (a.y - b.y) * (a.y - b.y);
    overlap - (distance / diagonal).powf(exponent)
}

/// Computes the overlap measure that `kind` compares with the NMS threshold.
fn overlap(kind: NmsKind, beta: f32, a: &RelativeBox, b: &RelativeBox) -> f32 {
    match kind {
        NmsKind::Default | NmsKind::Corners => iou(a, b),
        NmsKind::Greedy => diou(a, b, GREEDY_DIOU_EXPONENT),
        NmsKind::Diou => diou(a, b, beta),
    }
}

/// Maximum candidates of one class that NMS compares pairwise in a frame.
/// yolov4-tiny's trained weights give a few dozen per class on the test
/// photos. Untrained or broken weights can make all of yolov4's 10,647 boxes
/// candidates of every class, and the pairwise comparison then takes seconds
/// a frame. Past this many, the weakest candidates of the class are dropped.
pub const MAX_CANDIDATES_PER_CLASS: usize = 1000;

/// The candidates that [`suppress`] dropped unseen because a class had more
/// than [`MAX_CANDIDATES_PER_CLASS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overflow {
    /// Classes with more candidates than the cap.
    pub classes: usize,
    /// Candidates dropped over all those classes.
    pub dropped: usize,
}

/// Zeroes, class by class, the score of every candidate that overlaps a
/// stronger candidate of the same class by more than `threshold`, and returns
/// what the per-class cap dropped.
///
/// Equal scores are ordered by box position, so the result does not depend on
/// the order of `candidates`.
pub fn suppress(candidates: &mut [Candidate], classes: usize, threshold: f32, kind: NmsKind, beta: f32) -> Overflow {
    let mut overflow = Overflow::default();
    let mut order: Vec<usize> = Vec::with_capacity(candidates.len());
    for class in 0..classes {
        order.clear();
        order.extend((0..candidates.len()).filter(|&i| candidates[i].scores.get(class).is_some_and(|&s| s > 0.0)));
        order.sort_by(|&i, &j| {
            let (a, b) = (&candidates[i], &candidates[j]);
            b.scores[class]
                .total_cmp(&a.scores[class])
                .then(a.bbox.x.total_cmp(&b.bbox.x))
                .then(a.bbox.y.total_cmp(&b.bbox.y))
                .then(a.bbox.w.total_cmp(&b.bbox.w))
                .then(a.bbox.h.total_cmp(&b.bbox.h))
        });
        if order.len() > MAX_CANDIDATES_PER_CLASS {
            overflow.classes += 1;
            overflow.dropped += order.len() - MAX_CANDIDATES_PER_CLASS;
            for &weak in &order[MAX_CANDIDATES_PER_CLASS..] {
                candidates[weak].scores[class] = 0.0;
            }
            order.truncate(MAX_CANDIDATES_PER_CLASS);
        }
        for (position, &keeper) in order.iter().enumerate() {
            if candidates[keeper].scores[class] == 0.0 {
                continue;
            }
            let kept = candidates[keeper].bbox;
            for &other in &order[position + 1..] {
                let bbox = &candidates[other].bbox;
                // DIoU is IoU minus a penalty of at least 0, so a pair whose IoU
                // is at or below the threshold stays; skipping its `powf` keeps
                // NMS fast when a scene yields thousands of candidates.
                if iou(&kept, bbox) <= threshold {
                    continue;
                }
                if overlap(kind, beta, &kept, bbox) > threshold {
                    candidates[other].scores[class] = 0.0;
                }
            }
        }
    }
    overflow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(x: f32, y: f32, w: f32, h: f32, scores: Vec<f32>) -> Candidate {
        Candidate { bbox: RelativeBox { x, y, w, h }, objectness: 1.0, scores }
    }

    #[test]
    fn iou_of_half_shifted_boxes() {
        let a = RelativeBox { x: 0.5, y: 0.5, w: 0.2, h: 0.2 };
        let b = RelativeBox { x: 0.6, y: 0.5, w: 0.2, h: 0.2 };
        assert!((iou(&a, &b) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&a, &RelativeBox { x: 0.9, ..a }), 0.0);
    }

    #[test]
    fn diou_penalises_centre_distance() {
        let a = RelativeBox { x: 0.5, y: 0.5, w: 0.2, h: 0.2 };
        let b = RelativeBox { x: 0.6, y: 0.5, w: 0.2, h: 0.2 };
        // Enclosing box 0.3 × 0.2: diagonal² 0.13; centre distance² 0.01.
        let expected = 1.0 / 3.0 - (0.01f32 / 0.13).powf(0.6);
        assert!((diou(&a, &b, 0.6) - expected).abs() < 1e-5);
        assert!((diou(&a, &a, 0.6) - 1.0).abs() < 1e-6, "identical boxes have no distance penalty");
    }

    #[test]
    fn weaker_overlapping_box_of_same_class_is_suppressed() {
        let mut candidates = vec![
            candidate(0.5, 0.5, 0.2, 0.2, vec![0.6, 0.0]),
            candidate(0.51, 0.5, 0.2, 0.2, vec![0.9, 0.7]),
            candidate(0.9, 0.9, 0.1, 0.1, vec![0.5, 0.0]),
        ];
        suppress(&mut candidates, 2, 0.45, NmsKind::Greedy, 0.6);
        assert_eq!(candidates[0].scores, vec![0.0, 0.0]);
        assert_eq!(candidates[1].scores, vec![0.9, 0.7]);
        assert_eq!(candidates[2].scores, vec![0.5, 0.0]);
    }

    #[test]
    fn class_overflow_keeps_strongest() {
        // Disjoint boxes, so NMS alone would keep them all. Class 0 has 5
        // candidates more than the cap, and class 1 has 10.
        let count = MAX_CANDIDATES_PER_CLASS + 5;
        let mut candidates: Vec<Candidate> = (0..count)
            .map(|i| {
                let x = (i % 40) as f32 / 40.0;
                let y = (i / 40) as f32 / 40.0;
                let class_1 = if i < 10 { 0.5 } else { 0.0 };
                candidate(x, y, 0.01, 0.01, vec![0.3 + i as f32 * 1e-4, class_1])
            })
            .collect();

        let overflow = suppress(&mut candidates, 2, 0.45, NmsKind::Default, 0.6);

        assert_eq!(overflow, Overflow { classes: 1, dropped: 5 });
        // The 5 weakest of class 0 are the first 5 built.
        let kept: Vec<bool> = candidates.iter().map(|c| c.scores[0] > 0.0).collect();
        assert!(kept[..5].iter().all(|&k| !k), "{:?}", &kept[..5]);
        assert!(kept[5..].iter().all(|&k| k));
        let class_1 = candidates.iter().filter(|c| c.scores[1] > 0.0).count();
        assert_eq!(class_1, 10);
    }

    #[test]
    fn result_does_not_depend_on_input_order() {
        let boxes = vec![
            candidate(0.5, 0.5, 0.2, 0.2, vec![0.6]),
            candidate(0.52, 0.5, 0.2, 0.2, vec![0.6]),
            candidate(0.55, 0.52, 0.22, 0.2, vec![0.8]),
            candidate(0.3, 0.3, 0.1, 0.1, vec![0.4]),
        ];
        let mut forward = boxes.clone();
        suppress(&mut forward, 1, 0.45, NmsKind::Default, 0.6);
        let mut backward: Vec<Candidate> = boxes.into_iter().rev().collect();
        suppress(&mut backward, 1, 0.45, NmsKind::Default, 0.6);
        backward.reverse();
        assert_eq!(forward, backward);
        assert_eq!(forward.iter().filter(|c| c.scores[0] > 0.0).count(), 2);
    }
}
