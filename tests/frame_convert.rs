//! Camera frames made by Debian's ffmpeg from the fixture photos, converted
//! by `edgedet::convert`, against ffmpeg's own conversion of the same frames
//! and against yolov4-tiny's detections.
//!
//! For each photo ffmpeg first writes a "still": the photo scaled (or kept)
//! to an even size as rgb24. Every frame is made by ffmpeg from that still,
//! so the still is the picture a camera would have seen. A converted frame
//! must stay within a mean absolute error of `MAX_MEAN_ABSOLUTE_ERROR` of
//! ffmpeg's conversion of the same frame, made with these commands:
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
//! yolov4-tiny must also find the same objects in the converted frame as in
//! ffmpeg's conversion of it. The still is not the reference, because each
//! format loses detail, and that alone moves detections. In dog.jpg as
//! 4:2:0 MJPEG, ffmpeg's own decode finds the truck with a box of IoU 0.87
//! to the still's. In zidane.jpg as YUYV, ffmpeg's own conversion finds the
//! tie with a box of IoU 0.71 to the still's.
//!
//! Against ffmpeg's conversion only the tie in zidane.jpg is unstable, so
//! that label is not compared. yolov4-tiny proposes two overlapping tie
//! boxes whose DIoU overlap (0.446 in one frame) sits at the NMS threshold
//! of 0.45, so a mean error of 0.4 decides whether one box or both remain.
//!
//! Run with `--nocapture` to see the error of each format. ffmpeg must be
//! installed (tests/run.sh installs it).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use edgedet::convert::{insert_huffman_tables, to_rgb, ConvertError, FrameConverter, PixelFormat, RawFrame};
use edgedet::detection::{BoundingBox, FrameDetections};
use edgedet::detector::DetectorOptions;
use edgedet::preprocess::RgbImage;

use common::ffmpeg::ffmpeg;
use common::yolo::detector;

/// Largest mean absolute difference, in 8-bit steps over all channels,
/// between a converted frame and ffmpeg's conversion of it.
const MAX_MEAN_ABSOLUTE_ERROR: f64 = 1.5;
/// Smallest IoU between a box found in a converted frame and the same
/// object's box in the reference.
const MIN_IOU: f32 = 0.9;
/// Largest difference in score for the same object.
const MAX_SCORE_DIFFERENCE: f32 = 0.05;

/// swscale flags of ffmpeg's reference conversion of raw YUV, grey and RGB
/// frames: nearest chroma and exact rounding.
const RAW_SWS_FLAGS: &str = "neighbor+accurate_rnd+full_chroma_int";
/// swscale flags of ffmpeg's reference decode of MJPEG frames: interpolated
/// chroma and exact rounding.
const MJPEG_SWS_FLAGS: &str = "accurate_rnd+full_chroma_int";

/// Photos with the even size their still gets, and the labels whose
/// detections are too unstable to compare. dog.jpg (768×576) is scaled down
/// to 640×480, the others keep their size.
const PHOTOS: [(&str, u32, u32, &[&str]); 4] = [
    ("dog.jpg", 640, 480, &[]),
    ("zidane.jpg", 1280, 720, &["tie"]),
    ("bus.jpg", 810, 1080, &[]),
    ("person.jpg", 640, 424, &[]),
];

// ---- ffmpeg -------------------------------------------------------------------

/// ffmpeg's conversion of a raw frame in `pix_fmt` to rgb24, default flags.
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
    let rgb = ffmpeg(
        &[
            "-f",
            "mjpeg",
            "-i",
            "pipe:0",
            "-sws_flags",
            MJPEG_SWS_FLAGS,
            "-pix_fmt",
            "rgb24",
            "-f",
            "rawvideo",
            "pipe:1",
        ],
        jpeg,
    );
    rgb_image(width, height, rgb)
}

fn rgb_image(width: u32, height: u32, rgb: Vec<u8>) -> RgbImage {
    let len = rgb.len();
    RgbImage::from_raw(width, height, rgb).unwrap_or_else(|| {
        panic!("ffmpeg wrote {len} bytes, expected {} for {width}x{height} rgb24", width * height * 3)
    })
}

// ---- scenes -------------------------------------------------------------------

/// One photo as a camera would have seen it.
struct Scene {
    photo: &'static str,
    width: u32,
    height: u32,
    /// Labels left out of detection comparisons.
    unstable_labels: &'static [&'static str],
    still: RgbImage,
}

impl Scene {
    fn load(photo: &'static str, width: u32, height: u32, unstable_labels: &'static [&'static str]) -> Scene {
        let path = fixture(photo);
        let scale = format!("scale={width}:{height}");
        let rgb = ffmpeg(
            &[
                "-i",
                path.to_str().expect("fixture path is UTF-8"),
                "-vf",
                &scale,
                "-pix_fmt",
                "rgb24",
                "-f",
                "rawvideo",
                "pipe:1",
            ],
            &[],
        );
        let still = rgb_image(width, height, rgb);
        Scene { photo, width, height, unstable_labels, still }
    }

    /// Converts the still with ffmpeg into a raw frame in `pix_fmt`.
    fn raw_frame(&self, pix_fmt: &str) -> Vec<u8> {
        let size = format!("{}x{}", self.width, self.height);
        ffmpeg(
            &[
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &size, "-i", "pipe:0", "-pix_fmt", pix_fmt, "-f",
                "rawvideo", "pipe:1",
            ],
            self.still.as_raw(),
        )
    }

    /// Encodes the still with ffmpeg as one MJPEG frame in `pix_fmt`
    /// (yuvj420p or yuvj422p). It uses the standard Huffman tables
    /// (`-huffman default`) that webcams leave out, where ffmpeg would
    /// otherwise compute optimal ones per frame.
    fn mjpeg_frame(&self, pix_fmt: &str) -> Vec<u8> {
        let size = format!("{}x{}", self.width, self.height);
        #[rustfmt::skip]
        let args = [
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &size, "-i", "pipe:0",
            "-c:v", "mjpeg", "-huffman", "default", "-pix_fmt", pix_fmt, "-q:v", "2", "-f", "mjpeg", "pipe:1",
        ];
        ffmpeg(&args, self.still.as_raw())
    }

    fn name(&self) -> String {
        format!("{} {}x{}", self.photo, self.width, self.height)
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images").join(name)
}

fn scenes() -> &'static [Scene] {
    static SCENES: OnceLock<Vec<Scene>> = OnceLock::new();
    SCENES.get_or_init(|| {
        PHOTOS.iter().map(|&(photo, width, height, unstable)| Scene::load(photo, width, height, unstable)).collect()
    })
}

fn detect(image: &RgbImage) -> FrameDetections {
    detector().detect(image).unwrap_or_else(|error| panic!("detecting: {error:#}"))
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

/// Lists detections one per line, for assertion messages.
fn describe(frame: &FrameDetections) -> String {
    let lines = frame.detections.iter().map(|detection| {
        let BoundingBox { x, y, w, h } = detection.bbox;
        format!("  {} {:.3} at {x:.1},{y:.1} {w:.1}x{h:.1}\n", detection.label, detection.score)
    });
    lines.collect()
}

/// Detections scoring below this may lack a counterpart. Scores may differ
/// by `MAX_SCORE_DIFFERENCE`, so a detection just above the detector's
/// threshold can fall below it, and out of the list, in the other frame.
fn borderline_score() -> f32 {
    DetectorOptions::default().threshold + MAX_SCORE_DIFFERENCE
}

/// Asserts that `found` and `expected` list the same objects, allowing
/// borderline detections to be missing from either list and leaving out
/// the scene's unstable labels.
fn assert_same_detections(scene: &Scene, found: &FrameDetections, expected: &FrameDetections, context: &str) {
    let stable = |frame: &FrameDetections| FrameDetections {
        detections: frame
            .detections
            .iter()
            .filter(|detection| !scene.unstable_labels.contains(&detection.label.as_str()))
            .cloned()
            .collect(),
        ..frame.clone()
    };
    let (found, expected) = (stable(found), stable(expected));
    assert!(
        expected.detections.iter().any(|detection| detection.score >= borderline_score()),
        "{context}: no detection above {:.2} in ffmpeg's conversion, so nothing to compare",
        borderline_score()
    );

    let lists = format!("found:\n{}expected:\n{}", describe(&found), describe(&expected));
    assert_counterparts(&found, &expected, &format!("{context}: found"), &lists);
    assert_counterparts(&expected, &found, &format!("{context}: expected"), &lists);
}

/// Asserts that each detection of `from` has a counterpart in `to`: the box
/// of the same label that overlaps it most, with an IoU of at least
/// `MIN_IOU` and a score within `MAX_SCORE_DIFFERENCE`. A detection below
/// `borderline_score` may have none, but must match the one it has.
fn assert_counterparts(from: &FrameDetections, to: &FrameDetections, context: &str, lists: &str) {
    for detection in &from.detections {
        let counterpart = to
            .detections
            .iter()
            .filter(|candidate| candidate.label == detection.label)
            .map(|candidate| (iou(&candidate.bbox, &detection.bbox), candidate))
            .max_by(|(a, _), (b, _)| a.total_cmp(b))
            .filter(|&(overlap, _)| overlap >= MIN_IOU);

        let Some((_, counterpart)) = counterpart else {
            assert!(
                detection.score < borderline_score(),
                "{context} {} {:.3} has no box of that label with IoU >= {MIN_IOU} in the other frame\n{lists}",
                detection.label,
                detection.score
            );
            continue;
        };
        assert!(
            (counterpart.score - detection.score).abs() <= MAX_SCORE_DIFFERENCE,
            "{context} {} scores {:.3}, its counterpart {:.3}\n{lists}",
            detection.label,
            detection.score,
            counterpart.score
        );
    }
}

/// Checks a converted frame against ffmpeg's conversion of the same frame:
/// the mean absolute error, which it prints, and the detections.
fn check_frame(label: &str, scene: &Scene, converted: &RgbImage, by_ffmpeg: &RgbImage) {
    let context = format!("{label}, {}", scene.name());
    let error = mean_absolute_error(converted, by_ffmpeg);
    println!("{context}: mean absolute error {error:.3} against ffmpeg");
    assert!(error <= MAX_MEAN_ABSOLUTE_ERROR, "{context}: mean absolute error {error:.3} against ffmpeg");

    assert_same_detections(scene, &detect(converted), &detect(by_ffmpeg), &context);
}

/// Converts every scene as a raw frame of `format` (ffmpeg's `pix_fmt`) and
/// checks it against ffmpeg's conversion.
fn check_raw_format(format: PixelFormat, pix_fmt: &str) {
    for scene in scenes() {
        let raw = scene.raw_frame(pix_fmt);
        let converted = to_rgb(&RawFrame::packed(format, scene.width, scene.height, &raw))
            .unwrap_or_else(|error| panic!("{format}, {}: {error}", scene.name()));
        let by_ffmpeg = ffmpeg_raw_to_rgb(pix_fmt, scene.width, scene.height, &raw);
        check_frame(&format.to_string(), scene, &converted, &by_ffmpeg);
    }
}

// ---- raw formats ------------------------------------------------------------------

#[test]
fn yuyv_frames_match_ffmpeg() {
    check_raw_format(PixelFormat::Yuyv, "yuyv422");
}

#[test]
fn nv12_frames_match_ffmpeg() {
    check_raw_format(PixelFormat::Nv12, "nv12");
}

#[test]
fn yu12_frames_match_ffmpeg() {
    check_raw_format(PixelFormat::Yu12, "yuv420p");
}

#[test]
fn rgb24_frames_are_copied() {
    check_raw_format(PixelFormat::Rgb24, "rgb24");
    for scene in scenes() {
        let converted = to_rgb(&RawFrame::packed(PixelFormat::Rgb24, scene.width, scene.height, scene.still.as_raw()))
            .expect("converting the still");
        assert!(converted == scene.still, "{}: RGB24 copy differs from the still", scene.name());
    }
}

#[test]
fn grey_frames_match_ffmpeg() {
    check_raw_format(PixelFormat::Grey, "gray");
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

        let by_ffmpeg = ffmpeg_raw_to_rgb("yuyv422", scene.width, scene.height, &raw);
        check_frame("YUYV with padded rows", scene, &converted, &by_ffmpeg);
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
fn mjpeg_frames_match_ffmpeg() {
    let mut converter = FrameConverter::new();
    for scene in scenes() {
        for pix_fmt in ["yuvj422p", "yuvj420p"] {
            let jpeg = scene.mjpeg_frame(pix_fmt);
            let converted = converter
                .convert(&mjpeg_frame(scene, &jpeg))
                .unwrap_or_else(|error| panic!("MJPEG {pix_fmt}, {}: {error}", scene.name()));
            let by_ffmpeg = ffmpeg_mjpeg_to_rgb(scene.width, scene.height, &jpeg);
            check_frame(&format!("MJPEG {pix_fmt}"), scene, &converted, &by_ffmpeg);
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

        let by_ffmpeg = ffmpeg_mjpeg_to_rgb(scene.width, scene.height, &jpeg);
        check_frame("MJPEG without DHT", scene, &without_tables, &by_ffmpeg);

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
