//! The kernels tract picks for each precision on the CPU the tests run on,
//! and the detections they give. The tests run natively, and under qemu for
//! aarch64 (tests/arm/run-qemu.sh) once on a Cortex-A72 (Raspberry Pi 4:
//! NEON, no FP16, no dot product) and once on a Cortex-A76 (Raspberry Pi 5:
//! FP16 and dot product). The script names the Cortex-A76 to tract through
//! `TRACT_CPU_AARCH64_KIND`, because qemu shows guests the host's
//! `/proc/cpuinfo`.
//!
//! The int8 model uses the calibration committed in `tests/fixtures/int8/`,
//! and its detections must equal those recorded on x86_64 in the same folder,
//! within the tolerances of the darknet reference test. To record them again
//! after a deliberate change to the int8 graph:
//!
//! ```text
//! edgedet detect --json --precision int8 \
//!     --quantization tests/fixtures/int8/yolov4-tiny.int8.json \
//!     --model models/yolov4-tiny/yolov4-tiny.cfg \
//!     tests/fixtures/images/bus.jpg tests/fixtures/images/zidane.jpg \
//!     > tests/fixtures/int8/yolov4-tiny.int8.x86_64.jsonl
//! ```

use std::path::Path;

use edgedet::detection::{BoundingBox, Detection};
use edgedet::detector::{Detector, DetectorOptions};
use edgedet::model::precision::cpu_has_fp16;
use edgedet::model::{Model, ModelSpec, Precision};
use edgedet::preprocess::load_image;
use serde_json::Value;

/// Two photos: each inference takes seconds under emulation.
const PHOTOS: [&str; 2] = ["bus.jpg", "zidane.jpg"];
/// The tolerances of the darknet reference test.
const SCORE_TOLERANCE: f32 = 0.03;
const MIN_IOU: f32 = 0.9;
/// Detections at or above this score must be on both sides.
const COMPARED_SCORE: f32 = 0.3;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn spec(precision: Precision) -> ModelSpec {
    ModelSpec {
        precision: precision.into(),
        quantization: Some(repo().join("tests/fixtures/int8/yolov4-tiny.int8.json")),
        threads: Some(1),
        ..ModelSpec::new(repo().join("models/yolov4-tiny/yolov4-tiny.cfg"))
    }
}

fn iou(a: &BoundingBox, b: &BoundingBox) -> f32 {
    let w = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
    let h = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
    let inter = w.max(0.0) * h.max(0.0);
    inter / (a.w * a.h + b.w * b.h - inter)
}

fn detect(model: Model, photo: &str) -> Vec<Detection> {
    let detector = Detector::new(model.into(), DetectorOptions::default());
    let image = load_image(&repo().join("tests/fixtures/images").join(photo)).expect("fixture photo");
    detector.detect(&image).expect("inference").detections
}

/// Detections recorded on x86_64, by photo file name.
fn recorded(photo: &str) -> Vec<Detection> {
    let path = repo().join("tests/fixtures/int8/yolov4-tiny.int8.x86_64.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let line = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .find(|line| line["image"].as_str().is_some_and(|image| image.ends_with(photo)))
        .unwrap_or_else(|| panic!("{} has no line for {photo}", path.display()));
    serde_json::from_value(line["detections"].clone()).expect("detections")
}

/// Lists what differs between two detection lists beyond the tolerances.
fn differences(photo: &str, ours: &[Detection], theirs: &[Detection]) -> Vec<String> {
    let mut found = Vec::new();
    for (side, from, to) in [("recorded", theirs, ours), ("found", ours, theirs)] {
        for detection in from.iter().filter(|d| d.score >= COMPARED_SCORE) {
            let matched = to.iter().any(|other| {
                other.label == detection.label
                    && (other.score - detection.score).abs() <= SCORE_TOLERANCE
                    && iou(&other.bbox, &detection.bbox) >= MIN_IOU
            });
            if !matched {
                found.push(format!(
                    "{photo}: {side} {} {:.3} {:?} has no counterpart",
                    detection.label, detection.score, detection.bbox
                ));
            }
        }
    }
    found
}

#[test]
fn int8_kernels_and_detections_match_x86_64() {
    let model = Model::load(&spec(Precision::Int8)).unwrap_or_else(|e| panic!("loading int8 yolov4-tiny: {e:#}"));
    let summary = model.summary();
    println!("int8 kernels on this CPU: {}", summary.kernel_counts());
    assert_eq!(summary.matmuls.len(), 21);
    for matmul in &summary.matmuls {
        assert!(matmul.kernels.iter().all(|k| k.contains("_i32_")), "{}: {:?}", matmul.node, matmul.kernels);
        if cfg!(target_arch = "aarch64") {
            assert!(
                matmul.kernels.iter().all(|k| k.starts_with("arm64simd_mmm_i32")),
                "{}: {:?}",
                matmul.node,
                matmul.kernels
            );
        }
    }
    // The kernel the emulated CPU must get, as run-qemu.sh states it: the
    // dot-product kernel on a Cortex-A76, the multiply-accumulate one on a Cortex-A72.
    if let Ok(expected) = std::env::var("EDGEDET_EXPECT_INT8_KERNEL") {
        let all: Vec<&String> = summary.matmuls.iter().flat_map(|m| &m.kernels).collect();
        assert!(all.iter().all(|k| **k == expected), "expected {expected} everywhere, got {all:?}");
    }

    let detector = Detector::new(model.into(), DetectorOptions::default());
    let mut failures = Vec::new();
    for photo in PHOTOS {
        let image = load_image(&repo().join("tests/fixtures/images").join(photo)).expect("fixture photo");
        let ours = detector.detect(&image).expect("int8 inference").detections;
        failures.extend(differences(photo, &ours, &recorded(photo)));
    }
    assert!(failures.is_empty(), "int8 on this CPU differs from x86_64:\n{}", failures.join("\n"));
}

#[test]
fn f16_uses_half_kernels_or_f32_fallback() {
    let model = Model::load(&spec(Precision::F16)).unwrap_or_else(|e| panic!("loading f16 yolov4-tiny: {e:#}"));
    let summary = model.summary();
    println!("f16 request on this CPU: runs in {}, kernels {}", model.precision(), summary.kernel_counts());
    if !cpu_has_fp16() {
        assert_eq!(model.precision(), Precision::F32, "a CPU without FP16 must fall back to f32");
        assert!(summary.matmuls.iter().flat_map(|m| &m.kernels).all(|k| !k.contains("f16")));
        return;
    }
    assert_eq!(model.precision(), Precision::F16);
    for matmul in &summary.matmuls {
        assert!(
            matmul.kernels.iter().all(|k| k.starts_with("arm64fp16_mmm_f16")),
            "{} runs on {:?}, not tract's FP16 kernels",
            matmul.node,
            matmul.kernels
        );
    }

    // f16 accumulates in half precision: compare with the f32 reference at the int8 bounds.
    let reference = Model::load(&spec(Precision::F32)).expect("loading f32 yolov4-tiny");
    let photo = PHOTOS[0];
    let float = detect(reference, photo);
    let half = detect(model, photo);
    for detection in float.iter().filter(|d| d.score > 0.4) {
        let best = half
            .iter()
            .filter(|d| d.label == detection.label)
            .map(|d| iou(&d.bbox, &detection.bbox))
            .fold(0.0, f32::max);
        assert!(
            best >= 0.85,
            "{photo}: f32 {} {:.3} has no f16 counterpart (best IoU {best:.3}); f16 found {half:?}",
            detection.label,
            detection.score
        );
    }
}
