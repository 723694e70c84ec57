//! Whole darknet architectures checked against OpenCV DNN's own darknet reader.
//!
//! No trained weights for the big models can be fetched in CI, so each test
//! writes synthetic weights for a cfg from `tests/fixtures/darknet/`. Edgedet
//! and `cv2.dnn.readNetFromDarknet` then run the same cfg, weights file and
//! input tensor (the dog photo, preprocessed by edgedet). The test compares
//! edgedet's decoded anchor rows (`decode::head_rows`) with the rows of
//! OpenCV's YOLO layers. A route that points one layer off must fail the same
//! comparison, which shows that the comparison can fail.
//!
//! Input sizes are smaller than the cfgs' own (608, 640) to keep the suite
//! fast on two cores. They are written into a copy of each cfg, so both
//! readers see the same file.

#[path = "common/python_oracle.rs"]
mod python_oracle;
#[path = "common/synthetic_weights.rs"]
mod synthetic_weights;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use edgedet::decode::{head_rows, AnchorRow};
use edgedet::model::darknet::weights_layout;
use edgedet::model::{winograd, Model, ModelSpec};
use edgedet::preprocess::{load_image, prepare_input, NetworkInput, ResizeMode};

use synthetic_weights::{conv_roles, write_weights, HeaderVersion};

/// Largest absolute difference accepted for any compared value.
const TOLERANCE: f32 = 1e-3;
/// OpenCV's default `thresh` of a darknet `[yolo]` layer: it writes 0 for class
/// scores at or below it. None of the fixture cfgs sets `thresh`.
const OPENCV_CLASS_CUTOFF: f32 = 0.2;
/// Minimum number of class scores above OpenCV's cut-off that a model must
/// produce for the class comparison to count.
const MIN_CLASS_SCORES_COMPARED: usize = 1_000;
/// Minimum standard deviation of objectness across the cells of any one head
/// and anchor. A smaller spread would mean that the output hardly depends on
/// the image, so the comparison would check little more than the biases.
const MIN_OBJECTNESS_STD: f32 = 0.01;
/// Minimum fraction of rows whose objectness lies strictly inside 0.01..0.99.
const MIN_UNSATURATED_OBJECTNESS: f32 = 0.5;

/// Columns of an OpenCV YOLO-layer row before the class scores: x, y, w, h, objectness.
const BOX_COLUMNS: usize = 5;

/// One architecture to check.
struct Case {
    cfg: &'static str,
    /// Network input width and height written into the cfg copy.
    width: u32,
    height: u32,
    seed: u64,
    header: HeaderVersion,
}

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)
}

/// Returns `cfg_text` with the `[net]` section's width and height replaced.
fn with_input_size(cfg_text: &str, width: u32, height: u32) -> String {
    let mut in_net = false;
    let mut replaced = 0;
    let mut lines = Vec::new();
    for line in cfg_text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_net = trimmed == "[net]" || trimmed == "[network]";
        }
        let key = trimmed.split('=').next().unwrap_or("").trim();
        if in_net && trimmed.contains('=') && (key == "width" || key == "height") {
            let value = if key == "width" { width } else { height };
            lines.push(format!("{key}={value}"));
            replaced += 1;
        } else {
            lines.push(line.to_string());
        }
    }
    assert_eq!(replaced, 2, "expected one width and one height line in the [net] section");
    lines.join("\n") + "\n"
}

/// `classes` and the number of `mask` entries of each `[yolo]` section, read from the cfg text.
#[derive(Clone, Copy, Debug, Default)]
struct CfgYolo {
    classes: usize,
    anchors: usize,
}

fn cfg_yolo_sections(cfg_text: &str) -> Vec<CfgYolo> {
    let mut sections = Vec::new();
    let mut in_yolo = false;
    for line in cfg_text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_yolo = line == "[yolo]";
            if in_yolo {
                sections.push(CfgYolo::default());
            }
        } else if let (true, Some((key, value)), Some(section)) = (in_yolo, line.split_once('='), sections.last_mut()) {
            match key.trim() {
                "classes" => section.classes = value.trim().parse().expect("classes is a whole number"),
                "mask" => section.anchors = value.split(',').count(),
                _ => {}
            }
        }
    }
    sections
}

/// A cfg and weights file in a temporary directory, and the input tensor for them.
struct Prepared {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    weights: PathBuf,
    input: NetworkInput,
}

/// Writes the resized cfg and synthetic weights for `case` and prepares the dog photo.
fn prepare(case: &Case) -> Prepared {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let cfg_text = std::fs::read_to_string(fixture(&format!("darknet/{}.cfg", case.cfg))).expect("reading the cfg");
    let cfg = dir.path().join(format!("{}.cfg", case.cfg));
    std::fs::write(&cfg, with_input_size(&cfg_text, case.width, case.height)).expect("writing the cfg copy");

    let layout = weights_layout(&cfg).unwrap_or_else(|error| panic!("weights_layout({}): {error}", cfg.display()));
    let weights = dir.path().join(format!("{}.weights", case.cfg));
    write_weights(&weights, &layout, &conv_roles(&cfg_text), case.header, case.seed)
        .expect("writing synthetic weights");

    let letter_box = cfg_text.lines().any(|line| line.replace(' ', "") == "letter_box=1");
    let mode = if letter_box { ResizeMode::Letterbox } else { ResizeMode::Stretch };
    let image = load_image(&fixture("images/dog.jpg")).expect("loading dog.jpg");
    let input = prepare_input(&image, case.width, case.height, mode);
    assert_eq!(input.data.len(), 3 * (case.width * case.height) as usize, "input tensor size");

    Prepared { dir, cfg, weights, input }
}

/// Runs the model with edgedet and decodes every head into anchor rows.
fn edgedet_rows(cfg: &Path, weights: &Path, input: &NetworkInput) -> Vec<Vec<AnchorRow>> {
    let spec = ModelSpec {
        weights: Some(weights.to_path_buf()),
        names: Some(fixture("darknet/coco.names")),
        ..ModelSpec::new(cfg)
    };
    let model = Model::load(&spec).unwrap_or_else(|error| panic!("loading {}: {error:#}", cfg.display()));
    // Every Mish runs as edgedet's one-pass op or inside a Winograd
    // convolution, which calls the same function, so the comparison checks it.
    let cfg_text = std::fs::read_to_string(cfg).expect("reading the cfg");
    let mish_layers = cfg_text.lines().filter(|line| line.replace(' ', "") == "activation=mish").count();
    let summary = model.summary();
    let ops = &summary.ops;
    let mish_ops = ops.get("Mish").copied().unwrap_or(0);
    let fused = summary.fused_activations.get("Mish").copied().unwrap_or(0);
    assert_eq!(mish_ops + fused, mish_layers, "{}: {ops:?}, fused {:?}", cfg.display(), summary.fused_activations);
    if mish_layers > 0 {
        assert!(fused > 0, "{}: no Mish inside a Winograd convolution: {ops:?}", cfg.display());
        assert!(!ops.contains_key("Tanh"), "{}: a Mish left unfused: {ops:?}", cfg.display());
    }
    // Every cfg here has 3×3 convolutions of stride 1, which run on Winograd's algorithm in f32.
    assert!(ops.get(winograd::OP_NAME).is_some_and(|&n| n > 0), "{}: no Winograd convolution: {ops:?}", cfg.display());
    let heads = model.run(input).unwrap_or_else(|error| panic!("running {}: {error:#}", cfg.display()));

    let meta = model.meta();
    assert_eq!(heads.len(), meta.heads.len(), "edgedet returned one output per [yolo] layer");
    meta.heads
        .iter()
        .zip(&heads)
        .map(|(head, output)| head_rows(head, meta.classes, meta.width, meta.height, output))
        .collect()
}

/// One YOLO layer's output from OpenCV: `rows × columns` values, row-major.
struct OpenCvOutput {
    name: String,
    rows: usize,
    columns: usize,
    data: Vec<f32>,
}

impl OpenCvOutput {
    fn row(&self, index: usize) -> &[f32] {
        &self.data[index * self.columns..(index + 1) * self.columns]
    }
}

/// Runs the model with OpenCV DNN; returns its version and the YOLO-layer outputs in cfg order.
fn opencv_outputs(dir: &Path, cfg: &Path, weights: &Path, input: &NetworkInput) -> (String, Vec<OpenCvOutput>) {
    let python = python_oracle::python_with(&["cv2", "numpy"]);
    let input_path = dir.join("input.f32");
    let output_path = dir.join("opencv.f32");
    python_oracle::write_f32_le(&input_path, &input.data);

    let width = input.placement.net_width.to_string();
    let height = input.placement.net_height.to_string();
    let report = python_oracle::run_script(
        &python,
        "opencv_darknet.py",
        &[
            "--cfg".as_ref(),
            cfg.as_os_str(),
            "--weights".as_ref(),
            weights.as_os_str(),
            "--input".as_ref(),
            input_path.as_os_str(),
            "--width".as_ref(),
            width.as_ref(),
            "--height".as_ref(),
            height.as_ref(),
            "--out".as_ref(),
            output_path.as_os_str(),
        ],
    );

    let values = python_oracle::read_f32_le(&output_path);
    let mut offset = 0;
    let mut outputs = Vec::new();
    for described in report["outputs"].as_array().expect("opencv_darknet.py lists its outputs") {
        let rows = described["rows"].as_u64().expect("rows") as usize;
        let columns = described["columns"].as_u64().expect("columns") as usize;
        assert!(offset + rows * columns <= values.len(), "opencv_darknet.py wrote fewer values than it described");
        let data = values[offset..offset + rows * columns].to_vec();
        offset += rows * columns;
        outputs.push(OpenCvOutput { name: described["name"].as_str().unwrap_or("?").to_string(), rows, columns, data });
    }
    assert_eq!(offset, values.len(), "opencv_darknet.py wrote more values than it described");
    (report["opencv"].as_str().unwrap_or("?").to_string(), outputs)
}

/// Where the largest difference of one kind was found.
#[derive(Clone, Debug, Default)]
struct Worst {
    difference: f32,
    edgedet: f32,
    opencv: f32,
    location: String,
}

impl Worst {
    fn update(&mut self, edgedet: f32, opencv: f32, location: impl FnOnce() -> String) {
        let difference = (edgedet - opencv).abs();
        // A NaN on either side counts as the worst possible difference.
        let difference = if difference.is_nan() { f32::INFINITY } else { difference };
        if difference > self.difference || self.location.is_empty() {
            *self = Worst { difference, edgedet, opencv, location: location() };
        }
    }
}

impl fmt::Display for Worst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2e} (edgedet {}, OpenCV {} at {})", self.difference, self.edgedet, self.opencv, self.location)
    }
}

/// The result of comparing edgedet's anchor rows with OpenCV's YOLO-layer rows.
#[derive(Debug, Default)]
struct Comparison {
    /// Heads or rows whose count or width differ, which stops the value comparison.
    structure_errors: Vec<String>,
    rows: usize,
    box_worst: Worst,
    objectness_worst: Worst,
    class_worst: Worst,
    /// Class scores above OpenCV's cut-off, compared value for value.
    class_scores_compared: usize,
    /// Class scores that OpenCV zeroed but edgedet puts above the cut-off by more than the tolerance.
    zeroed_above_cutoff: usize,
    zeroed_example: Option<String>,
    /// OpenCV's objectness, one series per head and anchor, over the cells.
    objectness: Vec<Vec<f32>>,
}

impl Comparison {
    /// Describes every way the two outputs disagree beyond [`TOLERANCE`]. The list is empty when they agree.
    fn mismatches(&self) -> Vec<String> {
        let mut found = self.structure_errors.clone();
        if !found.is_empty() {
            return found;
        }
        for (kind, worst) in
            [("box", &self.box_worst), ("objectness", &self.objectness_worst), ("class score", &self.class_worst)]
        {
            // `Worst::update` stores NaN differences as infinity, so this catches them.
            if worst.difference > TOLERANCE {
                found.push(format!("{kind} differs by {worst}"));
            }
        }
        if self.zeroed_above_cutoff > 0 {
            found.push(format!(
                "{} class scores are 0 in OpenCV (at or below {OPENCV_CLASS_CUTOFF}) but above it in edgedet, e.g. {}",
                self.zeroed_above_cutoff,
                self.zeroed_example.as_deref().unwrap_or("?")
            ));
        }
        found
    }

    /// Smallest standard deviation across cells of any one head and anchor.
    fn min_objectness_std(&self) -> f32 {
        self.objectness.iter().map(|series| standard_deviation(series)).fold(f32::INFINITY, f32::min)
    }

    fn unsaturated_objectness_fraction(&self) -> f32 {
        let all = || self.objectness.iter().flatten();
        let inside = all().filter(|&&value| value > 0.01 && value < 0.99).count();
        inside as f32 / all().count().max(1) as f32
    }

    fn summary(&self) -> String {
        format!(
            "{} rows, max |difference| box {:.2e}, objectness {:.2e}, class score {:.2e} over {} class scores; \
             objectness std across cells at least {:.3}",
            self.rows,
            self.box_worst.difference,
            self.objectness_worst.difference,
            self.class_worst.difference,
            self.class_scores_compared,
            self.min_objectness_std()
        )
    }
}

fn standard_deviation(values: &[f32]) -> f32 {
    let count = values.len().max(1) as f64;
    let mean = values.iter().map(|&value| value as f64).sum::<f64>() / count;
    let variance = values.iter().map(|&value| (value as f64 - mean).powi(2)).sum::<f64>() / count;
    variance.sqrt() as f32
}

/// Compares edgedet's rows with OpenCV's, for heads with the classes and anchor counts in `cfg_heads`.
fn compare(edgedet: &[Vec<AnchorRow>], opencv: &[OpenCvOutput], cfg_heads: &[CfgYolo]) -> Comparison {
    let mut comparison = Comparison::default();
    if edgedet.len() != opencv.len() || edgedet.len() != cfg_heads.len() {
        comparison.structure_errors.push(format!(
            "edgedet has {} heads, OpenCV {}, the cfg {}",
            edgedet.len(),
            opencv.len(),
            cfg_heads.len()
        ));
        return comparison;
    }

    for (head, ((rows, reference), cfg_head)) in edgedet.iter().zip(opencv).zip(cfg_heads).enumerate() {
        let classes = cfg_head.classes;
        let series_start = comparison.objectness.len();
        comparison.objectness.extend((0..cfg_head.anchors).map(|_| Vec::new()));
        if rows.len() != reference.rows {
            comparison.structure_errors.push(format!(
                "head {head}: edgedet has {} rows, OpenCV {} has {}",
                rows.len(),
                reference.name,
                reference.rows
            ));
            continue;
        }
        if reference.columns != BOX_COLUMNS + classes {
            comparison.structure_errors.push(format!(
                "head {head}: OpenCV {} has {} columns, expected {} for {classes} classes",
                reference.name,
                reference.columns,
                BOX_COLUMNS + classes
            ));
            continue;
        }

        for (index, row) in rows.iter().enumerate() {
            let expected = reference.row(index);
            let at = |what: &str| format!("head {head} ({}) row {index} {what}", reference.name);
            comparison.rows += 1;

            for (column, (name, value)) in
                [("x", row.x), ("y", row.y), ("w", row.w), ("h", row.h)].into_iter().enumerate()
            {
                comparison.box_worst.update(value, expected[column], || at(name));
            }
            comparison.objectness_worst.update(row.objectness, expected[4], || at("objectness"));
            // Rows run over cells, then anchors, so the anchor is the row index modulo the anchor count.
            comparison.objectness[series_start + index % cfg_head.anchors.max(1)].push(expected[4]);

            if row.class_scores.len() != classes {
                comparison.structure_errors.push(format!(
                    "{}: edgedet has {} class scores, expected {classes}",
                    at("class scores"),
                    row.class_scores.len()
                ));
                return comparison;
            }
            for (class, (&score, &reference_score)) in row.class_scores.iter().zip(&expected[BOX_COLUMNS..]).enumerate()
            {
                if reference_score != 0.0 {
                    comparison.class_scores_compared += 1;
                    comparison.class_worst.update(score, reference_score, || at(&format!("class {class}")));
                } else if score.is_nan() || score > OPENCV_CLASS_CUTOFF + TOLERANCE {
                    comparison.zeroed_above_cutoff += 1;
                    if comparison.zeroed_example.is_none() {
                        comparison.zeroed_example = Some(format!("{} = {score}", at(&format!("class {class}"))));
                    }
                }
            }
        }
    }
    comparison
}

/// Runs `case` through edgedet (reading `edgedet_cfg_text`, or the same cfg as OpenCV
/// when `None`) and through OpenCV, and compares the decoded rows.
fn run_case(case: &Case, edgedet_cfg_text: Option<String>) -> Comparison {
    let started = Instant::now();
    let prepared = prepare(case);
    let label = match edgedet_cfg_text {
        Some(_) => format!("{} with an edited cfg for edgedet", case.cfg),
        None => case.cfg.to_string(),
    };

    let edgedet_cfg = match edgedet_cfg_text {
        Some(text) => {
            let path = prepared.dir.path().join(format!("{}-edgedet.cfg", case.cfg));
            std::fs::write(&path, with_input_size(&text, case.width, case.height)).expect("writing the edgedet cfg");
            path
        }
        None => prepared.cfg.clone(),
    };
    let rows = edgedet_rows(&edgedet_cfg, &prepared.weights, &prepared.input);
    let (opencv_version, outputs) =
        opencv_outputs(prepared.dir.path(), &prepared.cfg, &prepared.weights, &prepared.input);

    let cfg_text = std::fs::read_to_string(&prepared.cfg).expect("reading the cfg copy");
    let comparison = compare(&rows, &outputs, &cfg_yolo_sections(&cfg_text));
    println!(
        "{label} {}x{} against OpenCV {opencv_version}: {} ({:.1} s)",
        case.width,
        case.height,
        comparison.summary(),
        started.elapsed().as_secs_f32()
    );
    comparison
}

/// Asserts that edgedet and OpenCV agree on `case` and that the comparison covered enough values.
fn check_against_opencv(case: Case) {
    let comparison = run_case(&case, None);

    let mismatches = comparison.mismatches();
    assert!(mismatches.is_empty(), "{} differs from OpenCV:\n  {}", case.cfg, mismatches.join("\n  "));

    let std = comparison.min_objectness_std();
    assert!(
        std > MIN_OBJECTNESS_STD,
        "{}: objectness std across cells {std} is too small for a meaningful comparison",
        case.cfg
    );
    let unsaturated = comparison.unsaturated_objectness_fraction();
    assert!(
        unsaturated >= MIN_UNSATURATED_OBJECTNESS,
        "{}: only {:.1}% of objectness values lie inside 0.01..0.99",
        case.cfg,
        unsaturated * 100.0
    );
    assert!(
        comparison.class_scores_compared >= MIN_CLASS_SCORES_COMPARED,
        "{}: only {} class scores above OpenCV's cut-off {OPENCV_CLASS_CUTOFF} were compared",
        case.cfg,
        comparison.class_scores_compared
    );
}

#[test]
fn yolov4_matches_opencv() {
    check_against_opencv(Case { cfg: "yolov4", width: 320, height: 320, seed: 4, header: HeaderVersion::Seen64 });
}

#[test]
fn yolov4_csp_matches_opencv() {
    check_against_opencv(Case { cfg: "yolov4-csp", width: 320, height: 320, seed: 5, header: HeaderVersion::Seen64 });
}

#[test]
fn yolov4_tiny_3l_matches_opencv() {
    check_against_opencv(Case {
        cfg: "yolov4-tiny-3l",
        width: 416,
        height: 416,
        seed: 6,
        header: HeaderVersion::Seen64,
    });
}

#[test]
fn yolov4x_mish_matches_opencv() {
    check_against_opencv(Case { cfg: "yolov4x-mish", width: 256, height: 256, seed: 7, header: HeaderVersion::Seen64 });
}

#[test]
fn yolov3_tiny_matches_opencv() {
    // Older darknet files store `seen` in 32 bits; this covers that header. The
    // input is taller than wide, so a swapped width and height shows.
    check_against_opencv(Case { cfg: "yolov3-tiny", width: 288, height: 416, seed: 8, header: HeaderVersion::Seen32 });
}

#[test]
fn yolov7_tiny_matches_opencv() {
    // Wider than tall, so a swapped width and height shows.
    check_against_opencv(Case { cfg: "yolov7-tiny", width: 416, height: 288, seed: 9, header: HeaderVersion::Seen64 });
}

/// In yolov4-tiny-3l the first CSP block concatenates its two 32-channel convolutions
/// (`layers = -1,-2`). Pointing the route at the 32-channel group slice one layer
/// earlier keeps every shape and the weights layout, but changes the network.
#[test]
fn miswired_route_fails_comparison() {
    let case = Case { cfg: "yolov4-tiny-3l", width: 416, height: 416, seed: 6, header: HeaderVersion::Seen64 };
    let original = std::fs::read_to_string(fixture("darknet/yolov4-tiny-3l.cfg")).expect("reading the cfg");
    let miswired = original.replacen("layers = -1,-2", "layers = -1,-3", 1);
    assert_ne!(miswired, original, "the cfg no longer contains the route `layers = -1,-2`");

    // Both cfgs must read the weights file the same way, or a mismatch would prove nothing about the graph.
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let original_path = dir.path().join("original.cfg");
    let miswired_path = dir.path().join("miswired.cfg");
    std::fs::write(&original_path, &original).expect("writing the cfg");
    std::fs::write(&miswired_path, &miswired).expect("writing the cfg");
    let layout = |path: &Path| -> Vec<(usize, bool, usize)> {
        weights_layout(path)
            .unwrap_or_else(|error| panic!("weights_layout({}): {error}", path.display()))
            .iter()
            .map(|conv| (conv.filters, conv.batch_normalize, conv.weights))
            .collect()
    };
    assert_eq!(layout(&miswired_path), layout(&original_path), "the miswired cfg changed the weights layout");

    let comparison = run_case(&case, Some(miswired));
    assert!(comparison.structure_errors.is_empty(), "shapes differ: {:?}", comparison.structure_errors);
    assert!(
        comparison.box_worst.difference > TOLERANCE,
        "boxes of the miswired network match OpenCV's: largest difference {}",
        comparison.box_worst
    );
    assert!(
        comparison.objectness_worst.difference > TOLERANCE,
        "objectness of the miswired network matches OpenCV's: largest difference {}",
        comparison.objectness_worst
    );
    assert!(!comparison.mismatches().is_empty(), "the comparison reported no mismatch for the miswired network");
}
