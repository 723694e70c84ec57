//! Whether a faster precision finds what f32 finds on the same image.
//!
//! int8 and f16 round every layer, so their scores move by a few hundredths
//! and their boxes by a pixel or two. What matters to a user is that the same
//! objects are reported in the same places. The rule: every f32 detection
//! above [`AgreementRule::checked_score`] has a detection of the same label
//! at IoU [`AgreementRule::min_iou`] or more, and no more than
//! [`AgreementRule::max_unmatched`] detections above that score are missing
//! or extra. `precision = "auto"` keeps only precisions that pass it on the
//! model's sample frames, and the int8 accuracy test applies it to the
//! fixture photos.

use crate::detection::{BoundingBox, Detection};

/// The bounds within which another precision's detections agree with f32's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AgreementRule {
    /// f32 detections above this score must be found again.
    pub checked_score: f32,
    /// Smallest IoU between an f32 detection and its counterpart.
    pub min_iou: f32,
    /// Detections above `checked_score` that may be missing or extra, per image.
    pub max_unmatched: usize,
    /// An f32 detection won NMS by a near-tie when a suppressed f32 candidate
    /// of its class scored within this much of it. Which of the two survives
    /// is then a coin toss that any rounding can flip: bus.jpg's bus scores
    /// 0.736 and 0.711 for two boxes at IoU 0.76 in f32, 0.711 and 0.782 in int8.
    pub near_tie: f32,
    /// The NMS threshold the detections were made with, which decides
    /// whether two boxes competed in NMS.
    pub nms_threshold: f32,
}

impl Default for AgreementRule {
    fn default() -> Self {
        AgreementRule { checked_score: 0.4, min_iou: 0.85, max_unmatched: 1, near_tie: 0.05, nms_threshold: 0.45 }
    }
}

/// The outcome of comparing one image's detections.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Agreement {
    /// One line per checked detection, saying how it was matched, for logs and test output.
    pub notes: Vec<String>,
    /// f32 detections whose counterpart overlaps too little.
    pub failures: Vec<String>,
    /// Detections above the checked score that are missing or extra.
    pub unmatched: usize,
}

impl Agreement {
    pub fn agrees(&self, rule: &AgreementRule) -> bool {
        self.failures.is_empty() && self.unmatched <= rule.max_unmatched
    }
}

/// Returns the intersection over union of two boxes.
pub fn iou(a: &BoundingBox, b: &BoundingBox) -> f32 {
    let w = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
    let h = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
    let inter = w.max(0.0) * h.max(0.0);
    let union = a.w * a.h + b.w * b.h - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Finds the detection of the same label in `others` that overlaps `detection` most, with its IoU.
fn counterpart<'a>(detection: &Detection, others: &'a [Detection]) -> Option<(&'a Detection, f32)> {
    others
        .iter()
        .filter(|d| d.class_id == detection.class_id)
        .map(|d| (d, iou(&d.bbox, &detection.bbox)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Compares `other`'s detections of one image with f32's.
///
/// `f32_candidates` are f32's detections of the same image before NMS (NMS
/// threshold 1). They distinguish a near-tie from a real disagreement.
pub fn compare(
    rule: &AgreementRule,
    f32_found: &[Detection],
    f32_candidates: &[Detection],
    other: &[Detection],
) -> Agreement {
    // The detection of `other` matching an f32 candidate that lost to `winner` by a near-tie.
    let near_tie = |winner: &Detection| {
        f32_candidates
            .iter()
            .filter(|c| c.class_id == winner.class_id && c.score >= winner.score - rule.near_tie)
            .filter(|c| c.bbox != winner.bbox && iou(&c.bbox, &winner.bbox) > rule.nms_threshold)
            .find_map(|c| counterpart(c, other).filter(|(_, overlap)| *overlap >= rule.min_iou).map(|m| (c, m)))
    };

    let mut agreement = Agreement::default();
    for detection in f32_found.iter().filter(|d| d.score > rule.checked_score) {
        let label = &detection.label;
        match counterpart(detection, other) {
            Some((found, overlap)) if overlap >= rule.min_iou => agreement
                .notes
                .push(format!("{label} f32 {:.3}, other {:.3}, IoU {overlap:.3}", detection.score, found.score)),
            Some((found, overlap)) if overlap > 0.5 => match near_tie(detection) {
                Some((runner_up, (tie_match, tie_overlap))) => agreement.notes.push(format!(
                    "{label} f32 {:.3} won NMS by a near-tie over an f32 {:.3} box, which the other keeps at {:.3}, IoU {tie_overlap:.3}",
                    detection.score, runner_up.score, tie_match.score
                )),
                None => agreement.failures.push(format!(
                    "{label} f32 {:.3} has {:.3} at IoU {overlap:.3}, below {}",
                    detection.score, found.score, rule.min_iou
                )),
            },
            _ => {
                agreement.unmatched += 1;
                agreement.notes.push(format!("{label} f32 {:.3} is missing", detection.score));
            }
        }
    }
    for detection in other.iter().filter(|d| d.score > rule.checked_score) {
        let matched = counterpart(detection, f32_found).is_some_and(|(_, overlap)| overlap > 0.5);
        if !matched {
            agreement.unmatched += 1;
            agreement.notes.push(format!("{} {:.3} is extra", detection.label, detection.score));
        }
    }
    agreement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(class_id: usize, score: f32, x: f32) -> Detection {
        Detection {
            label: format!("class{class_id}"),
            class_id,
            score,
            bbox: BoundingBox { x, y: 10.0, w: 100.0, h: 100.0 },
        }
    }

    #[test]
    fn shifted_box_within_the_bound_agrees() {
        let rule = AgreementRule::default();
        // 100×100 boxes 4 pixels apart: IoU 96/104 = 0.923.
        let agreement = compare(&rule, &[found(1, 0.8, 0.0)], &[], &[found(1, 0.75, 4.0)]);
        assert!(agreement.agrees(&rule), "{agreement:?}");
        assert_eq!(agreement.unmatched, 0);
    }

    #[test]
    fn moved_box_and_relabel_disagree() {
        let rule = AgreementRule::default();
        // 20 pixels apart: IoU 80/120 = 0.667, above 0.5 but below 0.85.
        let moved = compare(&rule, &[found(1, 0.8, 0.0)], &[], &[found(1, 0.8, 20.0)]);
        assert_eq!(moved.failures.len(), 1, "{moved:?}");
        assert!(!moved.agrees(&rule));

        let relabelled = compare(&rule, &[found(1, 0.8, 0.0), found(2, 0.9, 300.0)], &[], &[found(3, 0.8, 0.0)]);
        // Two f32 detections missing, one extra.
        assert_eq!(relabelled.unmatched, 3, "{relabelled:?}");
        assert!(!relabelled.agrees(&rule));
    }

    #[test]
    fn one_missing_detection_is_tolerated() {
        let rule = AgreementRule::default();
        let agreement = compare(&rule, &[found(1, 0.8, 0.0), found(2, 0.3, 300.0)], &[], &[]);
        assert_eq!(agreement.unmatched, 1);
        assert!(agreement.agrees(&rule));
    }

    #[test]
    fn near_tie_runner_up_agrees() {
        let rule = AgreementRule::default();
        let winner = found(1, 0.736, 0.0);
        let runner_up = found(1, 0.711, 25.0); // IoU 75/125 = 0.6 with the winner, above NMS's 0.45
        let candidates = [winner.clone(), runner_up];
        let agreement = compare(&rule, std::slice::from_ref(&winner), &candidates, &[found(1, 0.782, 25.0)]);
        assert!(agreement.agrees(&rule), "{agreement:?}");
        assert!(agreement.notes[0].contains("near-tie"), "{:?}", agreement.notes);
    }
}
