//! Darknet's YOLO-layer decode (`forward_yolo_layer`, `get_yolo_box`,
//! `get_yolo_detections`, `correct_yolo_boxes`), on the raw head outputs.

use crate::model::{HeadOutput, ModelMeta, YoloHead};
use crate::preprocess::{InputPlacement, ResizeMode};

/// A box as centre and size, relative to the image (or network input) width and height.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RelativeBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// One anchor of one cell whose objectness passed the threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Relative to the original image.
    pub bbox: RelativeBox,
    pub objectness: f32,
    /// Objectness × class probability per class, 0 where not above the threshold.
    pub scores: Vec<f32>,
}

/// Every anchor of every cell of one head, decoded but not thresholded.
#[derive(Clone, Debug, PartialEq)]
pub struct AnchorRow {
    /// Box centre and size relative to the network input.
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub objectness: f32,
    /// Objectness × class probability per class.
    pub class_scores: Vec<f32>,
}

fn logistic(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Read access to one head's planes: `value(anchor, entry, cell)`.
struct HeadView<'a> {
    output: &'a HeadOutput,
    entries: usize,
    cells: usize,
}

impl HeadView<'_> {
    fn value(&self, anchor: usize, entry: usize, cell: usize) -> f32 {
        self.output.data[(anchor * self.entries + entry) * self.cells + cell]
    }
}

/// The activation darknet applies to an entry inside the YOLO layer: logistic
/// for x, y, objectness and classes, unless `new_coords` means the convolution
/// already applied it.
fn activated(head: &YoloHead, raw: f32) -> f32 {
    if head.new_coords {
        raw
    } else {
        logistic(raw)
    }
}

/// Decodes the box of `anchor` at cell (`column`, `row`), relative to the network input.
fn anchor_box(
    head: &YoloHead,
    view: &HeadView<'_>,
    anchor: usize,
    column: usize,
    row: usize,
    net: (f32, f32),
) -> RelativeBox {
    let cell = row * view.output.grid_width + column;
    let [anchor_w, anchor_h] = head.anchors[head.mask[anchor]];
    let scale = head.scale_x_y;
    let shift = -0.5 * (scale - 1.0);
    let x = activated(head, view.value(anchor, 0, cell)) * scale + shift;
    let y = activated(head, view.value(anchor, 1, cell)) * scale + shift;
    let (tw, th) = (view.value(anchor, 2, cell), view.value(anchor, 3, cell));
    let (w, h) = if head.new_coords {
        (tw * tw * 4.0 * anchor_w / net.0, th * th * 4.0 * anchor_h / net.1)
    } else {
        (tw.exp() * anchor_w / net.0, th.exp() * anchor_h / net.1)
    };
    RelativeBox {
        x: (column as f32 + x) / view.output.grid_width as f32,
        y: (row as f32 + y) / view.output.grid_height as f32,
        w,
        h,
    }
}

fn view<'a>(head: &YoloHead, classes: usize, output: &'a HeadOutput) -> Option<HeadView<'a>> {
    let entries = 5 + classes;
    let cells = output.grid_width * output.grid_height;
    (output.data.len() == head.mask.len() * entries * cells).then_some(HeadView { output, entries, cells })
}

/// Decodes every anchor of one head without thresholds, ordered by cell row,
/// then column, then anchor (the order OpenCV's darknet importer uses).
/// Returns nothing when `output` does not have the head's size.
pub fn head_rows(
    head: &YoloHead,
    classes: usize,
    net_width: u32,
    net_height: u32,
    output: &HeadOutput,
) -> Vec<AnchorRow> {
    let Some(view) = view(head, classes, output) else { return Vec::new() };
    let net = (net_width as f32, net_height as f32);
    let mut rows = Vec::with_capacity(view.cells * head.mask.len());
    for row in 0..output.grid_height {
        for column in 0..output.grid_width {
            let cell = row * output.grid_width + column;
            for anchor in 0..head.mask.len() {
                let b = anchor_box(head, &view, anchor, column, row, net);
                let objectness = activated(head, view.value(anchor, 4, cell));
                let class_scores = (0..classes)
                    .map(|class| objectness * activated(head, view.value(anchor, 5 + class, cell)))
                    .collect();
                rows.push(AnchorRow { x: b.x, y: b.y, w: b.w, h: b.h, objectness, class_scores });
            }
        }
    }
    rows
}

/// Decodes all heads into candidates whose objectness is above `threshold`,
/// with boxes relative to the original image (letterbox undone).
pub fn decode_heads(
    meta: &ModelMeta,
    outputs: &[HeadOutput],
    placement: &InputPlacement,
    threshold: f32,
) -> Vec<Candidate> {
    let net = (meta.width as f32, meta.height as f32);
    let mut candidates = Vec::new();
    for (head, output) in meta.heads.iter().zip(outputs) {
        let Some(view) = view(head, meta.classes, output) else { continue };
        for cell in 0..view.cells {
            let (row, column) = (cell / output.grid_width, cell % output.grid_width);
            for anchor in 0..head.mask.len() {
                let objectness = activated(head, view.value(anchor, 4, cell));
                // A NaN objectness is skipped too, as in darknet.
                if objectness.is_nan() || objectness <= threshold {
                    continue;
                }
                let scores = (0..meta.classes)
                    .map(|class| {
                        let score = objectness * activated(head, view.value(anchor, 5 + class, cell));
                        if score > threshold {
                            score
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let bbox = correct_box(anchor_box(head, &view, anchor, column, row, net), placement);
                candidates.push(Candidate { bbox, objectness, scores });
            }
        }
    }
    candidates
}

/// Maps a box relative to the network input onto the image (darknet's `correct_yolo_boxes`).
fn correct_box(b: RelativeBox, placement: &InputPlacement) -> RelativeBox {
    let (net_w, net_h) = (placement.net_width as i64, placement.net_height as i64);
    let (image_w, image_h) = (placement.image_width.max(1) as i64, placement.image_height.max(1) as i64);
    // Integer division, as darknet sizes the letterboxed image.
    let (new_w, new_h) = match placement.mode {
        ResizeMode::Stretch => (net_w, net_h),
        ResizeMode::Letterbox if (net_w as f32 / image_w as f32) < (net_h as f32 / image_h as f32) => {
            (net_w, image_h * net_w / image_w)
        }
        ResizeMode::Letterbox => (image_w * net_h / image_h, net_h),
    };
    let (net_w, net_h, new_w, new_h) = (net_w as f32, net_h as f32, new_w as f32, new_h as f32);
    RelativeBox {
        x: (b.x - (net_w - new_w) / 2.0 / net_w) / (new_w / net_w),
        y: (b.y - (net_h - new_h) / 2.0 / net_h) / (new_h / net_h),
        w: b.w * net_w / new_w,
        h: b.h * net_h / new_h,
    }
}
