//! Camera frames made by Debian's ffmpeg from the fixture photos, converted
//! by `edgedet::convert`, against ffmpeg's own conversion of the same frames
//! and against yolov4-tiny's detections on the photo.
//!
//! # The frames
//!
//! For each photo ffmpeg first writes a "still": the photo scaled (or kept)
//! to an even size as rgb24. Every frame is made by ffmpeg from that still,
//! so the still is the picture a camera would have seen:
//!
//! - YUYV, NV12 and YU12 take chroma from the full-resolution still and
//!   halve it with a Lanczos low-pass filter (`CAMERA_SWS_FLAGS`). YUYV is
//!   interleaved here from ffmpeg's yuv422p planes, because swscale's packed
//!   yuyv422 writer truncates where it should round: its luma is on average
//!   0.49 below the BT.601 value (dog.jpg), a bias that a camera does not add.
//! - GREY is ffmpeg's gray, which is full-range BT.601 luma,
//!   0.299 R + 0.587 G + 0.114 B, to within 1 of the rounded value.
//! - MJPEG is ffmpeg's mjpeg encoder at `-q:v 2` with chroma halved as
//!   above, as 4:2:2 (yuvj422p) and as 4:2:0 (yuvj420p).
//!
//! # Pixels against ffmpeg
//!
//! A converted frame must stay within a mean absolute error of
//! `MAX_MEAN_ABSOLUTE_ERROR` of ffmpeg's conversion of the same frame, made
//! with these commands:
//!
//! ```text
//! ffmpeg -f rawvideo -pix_fmt yuyv422 -s WxH -i frame.yuv \
//!     -sws_flags neighbor+accurate_rnd+full_chroma_int -pix_fmt rgb24 -f rawvideo out.rgb
//! ffmpeg -f mjpeg -i frame.mjpeg \
//!     -sws_flags accurate_rnd+full_chroma_int -pix_fmt rgb24 -f rawvideo out.rgb
//! ```
//!
//! The flags matter. With `neighbor+accurate_rnd+full_chroma_int` swscale
//! computes the BT.601 limited-range formula with repeated chroma, the
//! conversion `edgedet::convert` performs, to a mean error of 0.005. With
//! its default flags swscale is 1.1 to 1.7 away from that formula, and
//! converted frames measured up to 1.9 (NV12 of dog.jpg) against it. For
//! MJPEG, `accurate_rnd+full_chroma_int` interpolates chroma as
//! libjpeg-turbo's upsampling does, which brings the error from 0.7–1.2
//! down to 0.2–0.5. These numbers are from ffmpeg 5.1 of Debian 12 on
//! x86-64.
//!
//! # Detections against the photo
//!
//! yolov4-tiny must find in each converted frame what it finds in the still:
//! the same labels, boxes with an IoU of at least `MIN_IOU` and scores
//! within `MAX_SCORE_DIFFERENCE`. For GREY the reference is the still
//! converted to grayscale the same way: BT.601 luma, repeated in R, G and B
//! as `edgedet::convert` does. RGB24 frames convert to the still byte for
//! byte, which the test asserts, so their detections are the still's.
//!
//! Both images are decoded with the default threshold (0.25) lowered by
//! `MAX_SCORE_DIFFERENCE`, to 0.20. Every detection at or above 0.25 in
//! either image needs a counterpart in the other, which covers every
//! detection the detector reports. The counterpart is the box of the same
//! label that overlaps it most, and it must have an IoU of at least 0.9 and
//! a score within 0.05. So a reported detection may drop under the
//! threshold on the other side only by the score tolerance. The lower
//! threshold does not change what is kept above 0.25, because NMS only lets
//! a box suppress weaker ones.
//!
//! NMS is discontinuous, so it gets one exception, and the test prints
//! every use of it. A detection may lack a kept counterpart when the other
//! image proposes one before NMS, with an IoU of at least 0.9 and a score
//! within 0.05, and NMS removed that proposal only narrowly. Every kept box
//! that suppressed it must either overlap it by a DIoU within `NMS_MARGIN`
//! (0.01) of the NMS threshold of 0.45, or score at most 0.05 more. Two
//! objects need the exception:
//!
//! - The right-hand tie of zidane.jpg. yolov4-tiny proposes boxes scoring
//!   0.498, 0.486 and 0.358 there in the still. The third overlaps the first
//!   by a DIoU of 0.450, just over the threshold, so the still drops it,
//!   while the 4:2:0 MJPEG frame keeps it at 0.369. In the 4:2:2 MJPEG frame
//!   the first two swap places: the second scores 0.487 and the first 0.485,
//!   and NMS keeps only the stronger, because they overlap by a DIoU of 0.66.
//! - The truck of dog.jpg in the 4:2:0 MJPEG frame, where two truck boxes
//!   swap places in the same way (0.767 against 0.750 in the frame, 0.779
//!   against 0.764 in the still).
//!
//! Against the still the largest score difference is 0.037 for YUYV, NV12
//! and YU12 (dog.jpg in NV12 and YU12) and 0.040 for MJPEG (bus.jpg in
//! 4:2:0), and the smallest IoU is 0.973. GREY frames differ from the grey
//! still by at most 0.004.
//!
//! # Measured deviation
//!
//! In the 4:2:0 MJPEG frame of dog.jpg the dog scores 0.812, 0.055 below the
//! still (IoU 0.982). `MEASURED_DEVIATIONS` lists it: that label is compared
//! with ffmpeg's decode of the same frame instead, and the test fails once
//! it meets the bounds against the still, so the list cannot go stale. The
//! encoder settings do not remove the deviation. Over `-q:v` 1, 2 and 3 and
//! chroma halved by swscale's default, box, bicubic or Lanczos filter, 11
//! of the 12 settings miss the bounds by the dog, car or bicycle, with a
//! largest score difference of 0.055 to 0.137. Only `-q:v 2` with swscale's
//! default flags stays within them, at 0.029. The 4:2:2 frames of all four
//! photos meet the bounds at `-q:v` 1 and 2 with any of those filters except
//! bicubic at `-q:v 1` (the car of dog.jpg, 0.058). At `-q:v 3` they miss
//! them for dog.jpg (car, up to 0.098) and bus.jpg (truck, up to 0.088).
//!
//! The chroma filter also matters for raw 4:2:0 frames of dog.jpg. With a
//! 2×2 box filter (`area`) or with decimation (`neighbor`) in place of
//! Lanczos, the dog in NV12 and YU12 frames scores 0.065 below the still.
//! `edgedet::convert` repeats each chroma sample. When swscale decodes the
//! box-filtered frame with interpolated chroma instead, the difference is
//! 0.046 (bilinear) or 0.030 (bicubic).
//!
//! Run with `--nocapture` to see the figures of each frame. ffmpeg must be
//! installed (tests/run.sh installs it).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use edgedet::convert::{insert_huffman_tables, to_rgb, ConvertError, FrameConverter, PixelFormat, RawFrame};
use edgedet::decode::{nms::diou, RelativeBox};
use edgedet::detection::{BoundingBox, Detection, FrameDetections};
use edgedet::detector::{Detector, DetectorOptions};
use edgedet::model::NmsKind;
use edgedet::preprocess::RgbImage;

use common::ffmpeg::ffmpeg;

/// Largest mean absolute difference, in 8-bit steps over all channels,
/// between a converted frame and ffmpeg's conversion of it.
const MAX_MEAN_ABSOLUTE_ERROR: f64 = 1.5;
/// Smallest IoU between a box found in a converted frame and the same
/// object's box in the reference.
const MIN_IOU: f32 = 0.9;
/// Largest difference in score for the same object.
const MAX_SCORE_DIFFERENCE: f32 = 0.05;
/// Largest amount by which the DIoU of a proposal and the kept box that
/// suppressed it may exceed the NMS threshold for the removal to count as a
/// tie. Two tie boxes of zidane.jpg overlap by a DIoU of 0.450 in the still
/// and of 0.441 to 0.455 in frames made with the chroma filters tried.
const NMS_MARGIN: f32 = 0.01;
/// Exponent of the centre-distance term in darknet's DIoU for `greedynms`,
/// the NMS of yolov4-tiny.cfg.
const GREEDY_DIOU_EXPONENT: f32 = 0.6;

/// swscale flags with which ffmpeg makes camera frames from the still:
/// chroma computed at full resolution, halved with a Lanczos filter and
/// rounded exactly.
const CAMERA_SWS_FLAGS: &str = "lanczos+accurate_rnd+full_chroma_inp";
/// swscale flags of ffmpeg's reference conversion of raw YUV, grey and RGB
/// frames: nearest chroma and exact rounding.
const RAW_SWS_FLAGS: &str = "neighbor+accurate_rnd+full_chroma_int";
/// swscale flags of ffmpeg's reference decode of MJPEG frames: interpolated
/// chroma and exact rounding.
const MJPEG_SWS_FLAGS: &str = "accurate_rnd+full_chroma_int";

/// Photos with the even size their still gets. dog.jpg (768×576) is scaled
/// down to 640×480, the others keep their size.
const PHOTOS: [(&str, u32, u32); 4] =
    [("dog.jpg", 640, 480), ("zidane.jpg", 1280, 720), ("bus.jpg", 810, 1080), ("person.jpg", 640, 424)];

/// Labels of a format and photo whose detections do not meet the bounds
/// against the still. The module doc gives the figures.
struct Deviation {
    format: &'static str,
    photo: &'static str,
    labels: &'static [&'static str],
}

const MEASURED_DEVIATIONS: [Deviation; 1] =
    [Deviation { format: "MJPEG yuvj420p", photo: "dog.jpg", labels: &["dog"] }];

// ---- ffmpeg -------------------------------------------------------------------

/// ffmpeg's conversion of a raw frame in `pix_fmt` to rgb24.
fn ffmpeg_raw_to_rgb(pix_fmt: &str, width: u32, height: u32, raw: &[u8]) -> RgbImage {
    let size = format!("{width}x{height}");
    #[rustfmt::skip]
    let args = [
        "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", &size, "-i", "pipe:0",
        "-sws_flags", RAW_SWS_FLAGS, "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1",
    ];
    let rgb = ffmpeg(&args, raw);
    rgb_image(width, height, rgb)
}

/// ffmpeg's decode of an MJPEG frame to rgb24.
fn ffmpeg_mjpeg_to_rgb(width: u32, height: u32, jpeg: &[u8]) -> RgbImage {
    #[rustfmt::skip]
    let args = [
        "-f", "mjpeg", "-i", "pipe:0",
        "-sws_flags", MJPEG_SWS_FLAGS, "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1",
    ];
    let rgb = ffmpeg(&args, jpeg);
    rgb_image(width, height, rgb)
}

fn rgb_image(width: u32, height: u32, rgb: Vec<u8>) -> RgbImage {
    let len = rgb.len();
    RgbImage::from_raw(width, height, rgb).unwrap_or_else(|| {
        panic!("ffmpeg wrote {len} bytes, expected {} for {width}x{height} rgb24", width * height * 3)
    })
}

// ---- scenes -------------------------------------------------------------------

/// One photo as a camera would have seen it, with the detections that
/// converted frames are compared with.
struct Scene {
    photo: &'static str,
    width: u32,
    height: u32,
    still: RgbImage,
    /// The still as BT.601 luma, repeated in R, G and B.
    grey_still: RgbImage,
    still_detections: OnceLock<Detected<'static>>,
    grey_still_detections: OnceLock<Detected<'static>>,
}

impl Scene {
    fn load(photo: &'static str, width: u32, height: u32) -> Scene {
        let path = fixture(photo);
        let scale = format!("scale={width}:{height}");
        #[rustfmt::skip]
        let args = [
            "-i", path.to_str().expect("fixture path is UTF-8"),
            "-vf", &scale, "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1",
        ];
        let still = rgb_image(width, height, ffmpeg(&args, &[]));
        let grey_still = bt601_grey(&still);
        Scene {
            photo,
            width,
            height,
            still,
            grey_still,
            still_detections: OnceLock::new(),
            grey_still_detections: OnceLock::new(),
        }
    }

    /// Converts the still with ffmpeg into a raw frame in `pix_fmt`, as a
    /// camera would. yuyv422 is interleaved from yuv422p planes, because
    /// swscale's yuyv422 writer truncates.
    fn raw_frame(&self, pix_fmt: &str) -> Vec<u8> {
        let size = format!("{}x{}", self.width, self.height);
        let written_format = if pix_fmt == "yuyv422" { "yuv422p" } else { pix_fmt };
        #[rustfmt::skip]
        let args = [
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &size, "-i", "pipe:0",
            "-sws_flags", CAMERA_SWS_FLAGS, "-pix_fmt", written_format, "-f", "rawvideo", "pipe:1",
        ];
        let frame = ffmpeg(&args, self.still.as_raw());
        if pix_fmt == "yuyv422" {
            interleave_yuyv(&frame, self.width as usize, self.height as usize)
        } else {
            frame
        }
    }

    /// Encodes the still with ffmpeg as one MJPEG frame in `pix_fmt`
    /// (yuvj420p or yuvj422p). It uses the standard Huffman tables
    /// (`-huffman default`) that webcams leave out, where ffmpeg would
    /// otherwise compute optimal ones per frame.
    fn mjpeg_frame(&self, pix_fmt: &str) -> Vec<u8> {
        let size = format!("{}x{}", self.width, self.height);
        #[rustfmt::skip]
        let args = [
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &size, "-i", "pipe:0", "-sws_flags", CAMERA_SWS_FLAGS,
            "-c:v", "mjpeg", "-huffman", "default", "-pix_fmt", pix_fmt, "-q:v", "2", "-f", "mjpeg", "pipe:1",
        ];
        ffmpeg(&args, self.still.as_raw())
    }

    /// Detections on the image that frames of this scene are compared with:
    /// the grey still for GREY frames, the still for all others.
    fn reference(&'static self, grey: bool) -> &'static Detected<'static> {
        if grey {
            self.grey_still_detections.get_or_init(|| Detected::new(&self.grey_still))
        } else {
            self.still_detections.get_or_init(|| Detected::new(&self.still))
        }
    }

    fn name(&self) -> String {
        format!("{} {}x{}", self.photo, self.width, self.height)
    }
}

/// Converts planar 4:2:2 (Y, then U, then V) of an even width into YUYV.
fn interleave_yuyv(planes: &[u8], width: usize, height: usize) -> Vec<u8> {
    let (luma, chroma) = planes.split_at(width * height);
    let (u_plane, v_plane) = chroma.split_at(width / 2 * height);
    let mut yuyv = Vec::with_capacity(2 * width * height);
    for ((luma_pair, &u), &v) in luma.chunks_exact(2).zip(u_plane).zip(v_plane) {
        yuyv.extend_from_slice(&[luma_pair[0], u, luma_pair[1], v]);
    }
    yuyv
}

/// Converts `image` to full-range BT.601 luma, rounded, repeated in R, G
/// and B: what a GREY camera sends and `edgedet::convert` repeats.
fn bt601_grey(image: &RgbImage) -> RgbImage {
    let mut grey = image.clone();
    for pixel in grey.pixels_mut() {
        let [red, green, blue] = pixel.0.map(f64::from);
        let luma = (0.299 * red + 0.587 * green + 0.114 * blue).round() as u8;
        pixel.0 = [luma; 3];
    }
    grey
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images").join(name)
}

fn scenes() -> &'static [Scene] {
    static SCENES: OnceLock<Vec<Scene>> = OnceLock::new();
    SCENES.get_or_init(|| PHOTOS.iter().map(|&(photo, width, height)| Scene::load(photo, width, height)).collect())
}

// ---- detections -----------------------------------------------------------------

/// yolov4-tiny with the default options, except for a threshold lowered by
/// `MAX_SCORE_DIFFERENCE`, once with NMS (`kept`) and once without
/// (`proposed`). Both share one model.
struct Detectors {
    kept: Detector,
    proposed: Detector,
    /// The default threshold: detections at or above it are reported.
    threshold: f32,
    nms_threshold: f32,
}

fn detectors() -> &'static Detectors {
    static DETECTORS: OnceLock<Detectors> = OnceLock::new();
    DETECTORS.get_or_init(|| {
        let model = Arc::clone(common::yolo::model());
        assert_eq!(
            model.meta().nms_kind,
            NmsKind::Greedy,
            "yolov4-tiny.cfg no longer uses greedynms, whose DIoU the NMS tie rule computes"
        );

        let defaults = DetectorOptions::default();
        let threshold = defaults.threshold - MAX_SCORE_DIFFERENCE;
        // DIoU never exceeds 1, so nothing is suppressed.
        let without_nms = DetectorOptions { threshold, nms_threshold: 1.0 };
        Detectors {
            kept: Detector::new(Arc::clone(&model), DetectorOptions { threshold, ..defaults }),
            proposed: Detector::new(model, without_nms),
            threshold: defaults.threshold,
            nms_threshold: defaults.nms_threshold,
        }
    })
}

/// Detections on one image: those NMS keeps, and on demand every box
/// proposed before NMS.
struct Detected<'a> {
    image: &'a RgbImage,
    kept: FrameDetections,
    proposed: OnceLock<FrameDetections>,
}

impl<'a> Detected<'a> {
    fn new(image: &'a RgbImage) -> Detected<'a> {
        let kept = detect(&detectors().kept, image);
        Detected { image, kept, proposed: OnceLock::new() }
    }

    fn proposed(&self) -> &FrameDetections {
        self.proposed.get_or_init(|| detect(&detectors().proposed, self.image))
    }

    fn reported(&self) -> impl Iterator<Item = &Detection> {
        self.kept.detections.iter().filter(|detection| detection.score >= detectors().threshold)
    }
}

fn detect(detector: &Detector, image: &RgbImage) -> FrameDetections {
    detector.detect(image).unwrap_or_else(|error| panic!("detecting: {error:#}"))
}

// ---- comparisons ----------------------------------------------------------------

/// Mean absolute difference over all bytes of two images of the same size.
fn mean_absolute_error(found: &RgbImage, expected: &RgbImage) -> f64 {
    assert_eq!(found.dimensions(), expected.dimensions(), "image sizes differ");
    let total: u64 = found.as_raw().iter().zip(expected.as_raw()).map(|(&a, &b)| u64::from(a.abs_diff(b))).sum();
    total as f64 / found.as_raw().len() as f64
}

fn iou(a: &BoundingBox, b: &BoundingBox) -> f32 {
    let overlap_width = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
    let overlap_height = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
    if overlap_width <= 0.0 || overlap_height <= 0.0 {
        return 0.0;
    }
    let overlap = overlap_width * overlap_height;
    overlap / (a.w * a.h + b.w * b.h - overlap)
}

/// DIoU of two detections as NMS computes it, on boxes relative to the
/// image. The reported boxes are clipped to the image, so for a box that
/// crosses the border this differs from the value NMS compared.
fn greedy_diou(a: &Detection, b: &Detection, width: u32, height: u32) -> f32 {
    let relative = |bbox: &BoundingBox| RelativeBox {
        x: (bbox.x + bbox.w / 2.0) / width as f32,
        y: (bbox.y + bbox.h / 2.0) / height as f32,
        w: bbox.w / width as f32,
        h: bbox.h / height as f32,
    };
    diou(&relative(&a.bbox), &relative(&b.bbox), GREEDY_DIOU_EXPONENT)
}

/// Finds the box of `detection`'s label in `candidates` that overlaps it
/// most, and returns it with the IoU.
fn best_overlap<'a>(
    detection: &Detection,
    candidates: impl Iterator<Item = &'a Detection>,
) -> Option<(f32, &'a Detection)> {
    candidates
        .filter(|candidate| candidate.label == detection.label)
        .map(|candidate| (iou(&candidate.bbox, &detection.bbox), candidate))
        .max_by(|(a, _), (b, _)| a.total_cmp(b))
}

/// Lists detections one per line, for assertion messages.
fn describe(frame: &FrameDetections) -> String {
    let lines = frame.detections.iter().map(|detection| {
        let BoundingBox { x, y, w, h } = detection.bbox;
        format!("  {} {:.3} at {x:.1},{y:.1} {w:.1}x{h:.1}\n", detection.label, detection.score)
    });
    lines.collect()
}

/// A reported detection without an acceptable counterpart.
struct Violation {
    label: String,
    message: String,
}

/// The result of matching the reported detections of two images both ways.
struct Matching {
    matched: usize,
    min_iou: f32,
    max_score_difference: f32,
    /// Detections whose counterpart NMS removed within the margins, described.
    nms_ties: Vec<String>,
    violations: Vec<Violation>,
}

impl Matching {
    /// Matches the reported detections of `found` and `expected` whose label
    /// `compared` accepts, both ways. `names` name the two images in messages.
    fn new(
        found: &Detected<'_>,
        expected: &Detected<'_>,
        names: [&str; 2],
        compared: &dyn Fn(&str) -> bool,
    ) -> Matching {
        let mut matching = Matching {
            matched: 0,
            min_iou: 1.0,
            max_score_difference: 0.0,
            nms_ties: Vec::new(),
            violations: Vec::new(),
        };
        matching.match_one_way(found, expected, names, compared);
        matching.match_one_way(expected, found, [names[1], names[0]], compared);
        matching
    }

    fn match_one_way(
        &mut self,
        from: &Detected<'_>,
        to: &Detected<'_>,
        names: [&str; 2],
        compared: &dyn Fn(&str) -> bool,
    ) {
        let [from_name, to_name] = names;
        for detection in from.reported().filter(|detection| compared(&detection.label)) {
            let violation = |message: String| Violation {
                label: detection.label.clone(),
                message: format!("{} {:.3} in {from_name}: {message}", detection.label, detection.score),
            };

            match best_overlap(detection, to.kept.detections.iter()) {
                Some((overlap, counterpart)) if overlap >= MIN_IOU => {
                    let difference = (counterpart.score - detection.score).abs();
                    self.matched += 1;
                    self.min_iou = self.min_iou.min(overlap);
                    self.max_score_difference = self.max_score_difference.max(difference);
                    if difference > MAX_SCORE_DIFFERENCE {
                        self.violations.push(violation(format!(
                            "its counterpart in {to_name} scores {:.3} (IoU {overlap:.3})",
                            counterpart.score
                        )));
                    }
                }
                nearest => match nms_tie(detection, to) {
                    Ok(tie) => {
                        self.nms_ties.push(format!("{} {:.3} in {from_name}: {tie}", detection.label, detection.score))
                    }
                    Err(reason) => {
                        let nearest = nearest.map_or("none".to_owned(), |(overlap, nearest_box)| {
                            format!("score {:.3} at IoU {overlap:.3}", nearest_box.score)
                        });
                        self.violations.push(violation(format!(
                            "no box of that label with IoU >= {MIN_IOU} in {to_name} (nearest: {nearest}), {reason}"
                        )));
                    }
                },
            }
        }
    }
}

/// Checks whether NMS removed `detection`'s counterpart from `to` within
/// the margins, and describes the figures either way.
fn nms_tie(detection: &Detection, to: &Detected<'_>) -> Result<String, String> {
    let Some((overlap, proposal)) = best_overlap(detection, to.proposed().detections.iter()) else {
        return Err("and no such box proposed before NMS".to_owned());
    };
    let difference = (proposal.score - detection.score).abs();
    if overlap < MIN_IOU || difference > MAX_SCORE_DIFFERENCE {
        return Err(format!(
            "and the nearest box proposed before NMS scores {:.3} at IoU {overlap:.3}",
            proposal.score
        ));
    }

    let Detectors { nms_threshold, .. } = *detectors();
    let (width, height) = to.image.dimensions();
    let suppressors: Vec<(f32, &Detection)> = to
        .kept
        .detections
        .iter()
        .filter(|kept| kept.label == detection.label && kept.score >= proposal.score)
        .map(|kept| (greedy_diou(kept, proposal, width, height), kept))
        .filter(|&(overlap, _)| overlap > nms_threshold)
        .collect();
    let figures = suppressors
        .iter()
        .map(|(overlap, kept)| format!("{:.3} at DIoU {overlap:.3}", kept.score))
        .collect::<Vec<_>>()
        .join(", ");
    let description = format!("its counterpart {:.3} (IoU {overlap:.3}) was removed by {figures}", proposal.score);

    let marginal = |&(overlap, kept): &(f32, &Detection)| {
        overlap <= nms_threshold + NMS_MARGIN || kept.score - proposal.score <= MAX_SCORE_DIFFERENCE
    };
    if !suppressors.is_empty() && suppressors.iter().all(marginal) {
        Ok(description)
    } else {
        Err(format!("and {description}, beyond the NMS margins"))
    }
}

/// Checks a converted frame against ffmpeg's conversion of the same frame
/// by mean absolute error, which it prints.
fn check_pixels(context: &str, converted: &RgbImage, by_ffmpeg: &RgbImage) {
    let error = mean_absolute_error(converted, by_ffmpeg);
    println!("{context}: mean absolute error {error:.3} against ffmpeg");
    assert!(error <= MAX_MEAN_ABSOLUTE_ERROR, "{context}: mean absolute error {error:.3} against ffmpeg");
}

/// Checks the detections on a converted frame against those on the still,
/// or on the grey still when `grey`, and prints the figures. Labels in
/// `MEASURED_DEVIATIONS` are compared with ffmpeg's conversion instead.
fn check_detections(format: &str, scene: &'static Scene, grey: bool, converted: &RgbImage, by_ffmpeg: &RgbImage) {
    let context = format!("{format}, {}", scene.name());
    let photo_name = if grey { "the grey still" } else { "the still" };
    let deviating = MEASURED_DEVIATIONS
        .iter()
        .find(|deviation| deviation.format == format && deviation.photo == scene.photo)
        .map_or(&[][..], |deviation| deviation.labels);

    let found = Detected::new(converted);
    let photo = scene.reference(grey);
    assert!(photo.reported().next().is_some(), "{context}: nothing reported in {photo_name}, so nothing to compare");
    let lists = format!("frame:\n{}{photo_name}:\n{}", describe(&found.kept), describe(&photo.kept));

    let matching = Matching::new(&found, photo, ["the frame", photo_name], &|label| !deviating.contains(&label));
    println!(
        "{context}: against {photo_name}, {} matches both ways, smallest IoU {:.3}, largest score difference {:.3}",
        matching.matched, matching.min_iou, matching.max_score_difference
    );
    for tie in &matching.nms_ties {
        println!("{context}: NMS tie: {tie}");
    }
    let messages: Vec<&str> = matching.violations.iter().map(|violation| violation.message.as_str()).collect();
    assert!(messages.is_empty(), "{context}:\n{}\n{lists}", messages.join("\n"));

    if deviating.is_empty() {
        return;
    }
    let deviation = Matching::new(&found, photo, ["the frame", photo_name], &|label| deviating.contains(&label));
    for label in deviating {
        let violations: Vec<&str> =
            deviation.violations.iter().filter(|v| v.label == *label).map(|v| v.message.as_str()).collect();
        println!("{context}: measured deviation: {}", violations.join("; "));
        assert!(
            !violations.is_empty(),
            "{context}: {label} meets the bounds against {photo_name} now, \
             so remove it from MEASURED_DEVIATIONS\n{lists}"
        );
    }
    let by_ffmpeg = Detected::new(by_ffmpeg);
    let against_ffmpeg =
        Matching::new(&found, &by_ffmpeg, ["the frame", "ffmpeg's conversion"], &|label| deviating.contains(&label));
    let messages: Vec<&str> = against_ffmpeg.violations.iter().map(|violation| violation.message.as_str()).collect();
    assert!(messages.is_empty(), "{context}, against ffmpeg's conversion:\n{}\n{lists}", messages.join("\n"));
}

/// Converts every scene as a raw frame of `format` (ffmpeg's `pix_fmt`) and
/// checks it against ffmpeg's conversion and against the still.
fn check_raw_format(format: PixelFormat, pix_fmt: &str) {
    for scene in scenes() {
        let raw = scene.raw_frame(pix_fmt);
        let converted = to_rgb(&RawFrame::packed(format, scene.width, scene.height, &raw))
            .unwrap_or_else(|error| panic!("{format}, {}: {error}", scene.name()));
        let by_ffmpeg = ffmpeg_raw_to_rgb(pix_fmt, scene.width, scene.height, &raw);
        let label = format.to_string();
        check_pixels(&format!("{label}, {}", scene.name()), &converted, &by_ffmpeg);
        check_detections(&label, scene, format == PixelFormat::Grey, &converted, &by_ffmpeg);
    }
}

// ---- raw formats ------------------------------------------------------------------

#[test]
fn yuyv_frames_match_ffmpeg_and_photo() {
    check_raw_format(PixelFormat::Yuyv, "yuyv422");
}

#[test]
fn nv12_frames_match_ffmpeg_and_photo() {
    check_raw_format(PixelFormat::Nv12, "nv12");
}

#[test]
fn yu12_frames_match_ffmpeg_and_photo() {
    check_raw_format(PixelFormat::Yu12, "yuv420p");
}

#[test]
fn rgb24_frames_are_copied() {
    for scene in scenes() {
        let raw = scene.raw_frame("rgb24");
        let converted = to_rgb(&RawFrame::packed(PixelFormat::Rgb24, scene.width, scene.height, &raw))
            .unwrap_or_else(|error| panic!("RGB24, {}: {error}", scene.name()));
        let by_ffmpeg = ffmpeg_raw_to_rgb("rgb24", scene.width, scene.height, &raw);
        check_pixels(&format!("RGB24, {}", scene.name()), &converted, &by_ffmpeg);

        // A copy of the still has the still's detections, so they are not
        // compared.
        assert!(converted == scene.still, "{}: RGB24 copy differs from the still", scene.name());
    }
}

#[test]
fn grey_frames_match_ffmpeg_and_photo() {
    check_raw_format(PixelFormat::Grey, "gray");

    // The grey still is the reference only if it is the picture a GREY
    // camera sends: ffmpeg's gray must be the same BT.601 luma.
    for scene in scenes() {
        let raw = scene.raw_frame("gray");
        let converted = to_rgb(&RawFrame::packed(PixelFormat::Grey, scene.width, scene.height, &raw)).unwrap();
        let differences = converted.as_raw().iter().zip(scene.grey_still.as_raw()).map(|(&a, &b)| a.abs_diff(b));
        let largest = differences.max().unwrap_or(0);
        assert!(largest <= 1, "{}: GREY frame differs from the grey still by up to {largest}", scene.name());
    }
}

/// Copies the rows of a tightly packed plane into rows of `stride` bytes,
/// filling the padding with a value that would show up if it were read.
fn pad_rows(plane: &[u8], row_len: usize, stride: usize) -> Vec<u8> {
    let mut padded = Vec::with_capacity(plane.len() / row_len * stride);
    for row in plane.chunks(row_len) {
        padded.extend_from_slice(row);
        padded.resize(padded.len() + stride - row_len, 0xEE);
    }
    padded
}

#[test]
fn padded_yuyv_frames_match_unpadded() {
    for scene in scenes() {
        let raw = scene.raw_frame("yuyv422");
        let row_len = 2 * scene.width as usize;
        // 64 bytes of padding per row, as a driver aligning rows would add.
        let stride = row_len + 64;
        let padded = pad_rows(&raw, row_len, stride);
        let frame = RawFrame {
            format: PixelFormat::Yuyv,
            width: scene.width,
            height: scene.height,
            bytes_per_line: stride as u32,
            data: &padded,
        };

        let converted = to_rgb(&frame).unwrap_or_else(|error| panic!("padded YUYV, {}: {error}", scene.name()));
        let unpadded = to_rgb(&RawFrame::packed(PixelFormat::Yuyv, scene.width, scene.height, &raw)).unwrap();
        assert!(converted == unpadded, "{}: padded YUYV converts differently from unpadded", scene.name());

        // The frame converts as the unpadded one, whose detections
        // yuyv_frames_match_ffmpeg_and_photo compares.
        let by_ffmpeg = ffmpeg_raw_to_rgb("yuyv422", scene.width, scene.height, &raw);
        check_pixels(&format!("YUYV with padded rows, {}", scene.name()), &converted, &by_ffmpeg);
    }
}

#[test]
fn padded_planar_frames_match_unpadded() {
    let scene = &scenes()[0];
    let (width, height) = (scene.width as usize, scene.height as usize);
    let luma_len = width * height;

    // NV12: the interleaved chroma plane has the luma stride.
    let nv12 = scene.raw_frame("nv12");
    let stride = width + 32;
    let mut padded = pad_rows(&nv12[..luma_len], width, stride);
    padded.extend(pad_rows(&nv12[luma_len..], width, stride));
    let frame = RawFrame {
        format: PixelFormat::Nv12,
        width: scene.width,
        height: scene.height,
        bytes_per_line: stride as u32,
        data: &padded,
    };
    let converted = to_rgb(&frame).expect("converting padded NV12");
    let unpadded = to_rgb(&RawFrame::packed(PixelFormat::Nv12, scene.width, scene.height, &nv12)).unwrap();
    assert!(converted == unpadded, "padded NV12 converts differently from unpadded");

    // YU12: both chroma planes have half the luma stride.
    let yu12 = scene.raw_frame("yuv420p");
    let stride = width + 64;
    let chroma_len = luma_len / 4;
    let mut padded = pad_rows(&yu12[..luma_len], width, stride);
    padded.extend(pad_rows(&yu12[luma_len..luma_len + chroma_len], width / 2, stride / 2));
    padded.extend(pad_rows(&yu12[luma_len + chroma_len..], width / 2, stride / 2));
    let frame = RawFrame {
        format: PixelFormat::Yu12,
        width: scene.width,
        height: scene.height,
        bytes_per_line: stride as u32,
        data: &padded,
    };
    let converted = to_rgb(&frame).expect("converting padded YU12");
    let unpadded = to_rgb(&RawFrame::packed(PixelFormat::Yu12, scene.width, scene.height, &yu12)).unwrap();
    assert!(converted == unpadded, "padded YU12 converts differently from unpadded");
}

#[test]
fn too_short_buffers_are_errors() {
    let cases = [
        (PixelFormat::Yuyv, 1280, 614_400),
        (PixelFormat::Nv12, 640, 460_800),
        (PixelFormat::Yu12, 640, 460_800),
        (PixelFormat::Rgb24, 1920, 921_600),
        (PixelFormat::Grey, 640, 307_200),
    ];
    for (format, bytes_per_line, needed) in cases {
        let data = vec![0; needed - 1];
        let frame = RawFrame { format, width: 640, height: 480, bytes_per_line, data: &data };
        let error = to_rgb(&frame).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{format} frame of 640x480 with {bytes_per_line} bytes per line needs {needed} bytes, found {}",
                needed - 1
            )
        );
    }
}

// ---- MJPEG ------------------------------------------------------------------------

/// Marker segments before the first scan: (marker byte, start, end), where
/// the range covers the marker and the segment.
fn header_segments(jpeg: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut segments = Vec::new();
    let mut position = 2;
    loop {
        assert_eq!(jpeg[position], 0xFF, "expected a marker at byte {position}");
        let marker = jpeg[position + 1];
        let length = usize::from(u16::from_be_bytes([jpeg[position + 2], jpeg[position + 3]]));
        segments.push((marker, position, position + 2 + length));
        if marker == 0xDA {
            return segments;
        }
        position += 2 + length;
    }
}

/// Removes every DHT segment before the first scan, as many webcams send
/// their frames, and returns the frame and the removed segments.
fn strip_huffman_tables(jpeg: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut stripped = Vec::with_capacity(jpeg.len());
    let mut removed = Vec::new();
    let mut copied_up_to = 0;
    for (marker, start, end) in header_segments(jpeg) {
        if marker == 0xC4 {
            stripped.extend_from_slice(&jpeg[copied_up_to..start]);
            removed.push(jpeg[start..end].to_vec());
            copied_up_to = end;
        }
    }
    stripped.extend_from_slice(&jpeg[copied_up_to..]);
    (stripped, removed)
}

fn mjpeg_frame<'a>(scene: &Scene, jpeg: &'a [u8]) -> RawFrame<'a> {
    RawFrame::packed(PixelFormat::Mjpeg, scene.width, scene.height, jpeg)
}

#[test]
fn mjpeg_frames_match_ffmpeg_and_photo() {
    let mut converter = FrameConverter::new();
    for scene in scenes() {
        for pix_fmt in ["yuvj422p", "yuvj420p"] {
            let jpeg = scene.mjpeg_frame(pix_fmt);
            let converted = converter
                .convert(&mjpeg_frame(scene, &jpeg))
                .unwrap_or_else(|error| panic!("MJPEG {pix_fmt}, {}: {error}", scene.name()));
            let by_ffmpeg = ffmpeg_mjpeg_to_rgb(scene.width, scene.height, &jpeg);
            let format = format!("MJPEG {pix_fmt}");
            check_pixels(&format!("{format}, {}", scene.name()), &converted, &by_ffmpeg);
            check_detections(&format, scene, false, &converted, &by_ffmpeg);
        }
    }
}

#[test]
fn mjpeg_without_huffman_tables_decodes_the_same() {
    let mut converter = FrameConverter::new();
    for scene in scenes() {
        let jpeg = scene.mjpeg_frame("yuvj422p");
        let (stripped, removed) = strip_huffman_tables(&jpeg);
        assert_eq!(removed.len(), 1, "{}: ffmpeg wrote {} DHT segments", scene.name(), removed.len());

        let with_tables = converter.convert(&mjpeg_frame(scene, &jpeg)).unwrap();
        let without_tables = converter
            .convert(&mjpeg_frame(scene, &stripped))
            .unwrap_or_else(|error| panic!("MJPEG without DHT, {}: {error}", scene.name()));
        assert!(without_tables == with_tables, "{}: frame without DHT decodes differently", scene.name());

        // The frame decodes as the one with tables, whose detections
        // mjpeg_frames_match_ffmpeg_and_photo compares.
        let by_ffmpeg = ffmpeg_mjpeg_to_rgb(scene.width, scene.height, &jpeg);
        check_pixels(&format!("MJPEG without DHT, {}", scene.name()), &without_tables, &by_ffmpeg);

        // The inserted segment is byte for byte the one ffmpeg wrote from
        // the same T.81 tables.
        let completed = insert_huffman_tables(&stripped).unwrap();
        let inserted: Vec<Vec<u8>> = header_segments(&completed)
            .into_iter()
            .filter(|&(marker, _, _)| marker == 0xC4)
            .map(|(_, start, end)| completed[start..end].to_vec())
            .collect();
        assert_eq!(inserted, removed, "{}: inserted DHT segment", scene.name());
    }
}

#[test]
fn completed_mjpeg_decodes_with_image_crate() {
    // zune-jpeg, behind the `image` crate, uses the standard tables only
    // for frames with an AVI1 APP0 segment, which ffmpeg does not write.
    let scene = &scenes()[0];
    let (stripped, _) = strip_huffman_tables(&scene.mjpeg_frame("yuvj422p"));
    let decode = |jpeg: &[u8]| image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg);
    assert!(decode(&stripped).is_err(), "the image crate decoded a JPEG without Huffman tables");

    let completed = insert_huffman_tables(&stripped).unwrap();
    let decoded = decode(&completed).expect("decoding the completed frame with the image crate").to_rgb8();
    assert_eq!(decoded.dimensions(), (scene.width, scene.height));
}

#[test]
fn truncated_mjpeg_is_an_error() {
    let scene = &scenes()[0];
    let jpeg = scene.mjpeg_frame("yuvj422p");
    let (stripped, _) = strip_huffman_tables(&jpeg);

    for frame in [&jpeg, &stripped] {
        // Cut inside the entropy-coded data: libjpeg-turbo runs out of data.
        let half = &frame[..frame.len() / 2];
        let error = to_rgb(&mjpeg_frame(scene, half)).unwrap_err();
        assert_eq!(error.to_string(), format!("failed to decode a {}x{} MJPEG frame", scene.width, scene.height));
        let source = std::error::Error::source(&error).expect("the decode error keeps libjpeg-turbo's message");
        assert_eq!(source.to_string(), "TurboJPEG error: Premature end of JPEG file");

        // Cut before the end-of-image marker only.
        let error = to_rgb(&mjpeg_frame(scene, &frame[..frame.len() - 2])).unwrap_err();
        assert!(matches!(error, ConvertError::DecodeMjpeg { .. }), "{error}");
    }

    // Cut inside the headers, in the Huffman tables.
    let (_, tables_start, _) =
        *header_segments(&jpeg).iter().find(|&&(marker, _, _)| marker == 0xC4).expect("a DHT segment");
    let cut = tables_start + 10;
    let error = to_rgb(&mjpeg_frame(scene, &jpeg[..cut])).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("malformed MJPEG frame: it ends after {cut} bytes, inside segment 0xC4 at byte {tables_start}, which needs 418 bytes")
    );
}

#[test]
fn corrupt_mjpeg_is_an_error() {
    let scene = &scenes()[0];
    let jpeg = scene.mjpeg_frame("yuvj422p");
    let (_, _, scan_data_start) = *header_segments(&jpeg).last().expect("a scan header");

    // An end-of-image marker in the middle of the entropy-coded data.
    let mut cut_short = jpeg.clone();
    let middle = scan_data_start + (jpeg.len() - scan_data_start) / 2;
    cut_short[middle..middle + 2].copy_from_slice(&[0xFF, 0xD9]);
    let error = to_rgb(&mjpeg_frame(scene, &cut_short)).unwrap_err();
    assert!(matches!(error, ConvertError::DecodeMjpeg { .. }), "{error}");

    // A frame header that states another size than the camera announced.
    let (_, frame_start, _) =
        *header_segments(&jpeg).iter().find(|&&(marker, _, _)| marker == 0xC0).expect("a baseline frame header");
    let mut resized = jpeg.clone();
    resized[frame_start + 5..frame_start + 9].copy_from_slice(&[0x00, 0x10, 0x00, 0x20]);
    let error = to_rgb(&mjpeg_frame(scene, &resized)).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("MJPEG frame is 32x16, but the camera announced {}x{}", scene.width, scene.height)
    );

    // Not a JPEG at all.
    let error = to_rgb(&mjpeg_frame(scene, &scene.still.as_raw()[..4096])).unwrap_err();
    assert!(matches!(error, ConvertError::MalformedMjpeg { .. }), "{error}");
}
