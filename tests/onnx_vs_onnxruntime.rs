//! `edgedet export-onnx` checked against ONNX Runtime and against edgedet's own darknet path.
//!
//! The tests export the real yolov4-tiny cfg and weights to ONNX. ONNX Runtime
//! (Python, `tests/oracle/onnxruntime_heads.py`) runs the file on the dog
//! photo's input tensor, and its outputs must equal the head outputs of
//! edgedet running the darknet files. The exported file loaded back into
//! edgedet must give the same outputs, and its metadata must contain the
//! cfg's anchors, masks and classes.

#[path = "common/python_oracle.rs"]
mod python_oracle;

use std::path::{Path, PathBuf};
use std::process::Command;

use edgedet::model::meta::META_KEY;
use edgedet::model::{HeadOutput, InputSize, Model, ModelMeta, ModelSpec};
use edgedet::preprocess::{load_image, prepare_input, NetworkInput, ResizeMode};

/// Largest absolute difference accepted between two runs of the same network.
const TOLERANCE: f32 = 1e-4;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Returns the paths of the real yolov4-tiny cfg and weights.
///
/// # Panics
/// When either file is missing, with the command that fetches them.
fn yolov4_tiny() -> (PathBuf, PathBuf) {
    let cfg = repo_path("models/yolov4-tiny/yolov4-tiny.cfg");
    let weights = repo_path("models/yolov4-tiny/yolov4-tiny.weights");
    for path in [&cfg, &weights] {
        assert!(
            path.exists(),
            "{} not found: run `bash tests/run.sh`, which fetches it with models/fetch-yolov4-tiny.sh",
            path.display()
        );
    }
    (cfg, weights)
}

fn darknet_spec(size: Option<InputSize>) -> ModelSpec {
    let (cfg, weights) = yolov4_tiny();
    ModelSpec { weights: Some(weights), size, ..ModelSpec::new(cfg) }
}

/// Exports yolov4-tiny with the `edgedet` binary into `dir`, optionally at another input size.
fn export_onnx(dir: &Path, size: Option<&str>) -> PathBuf {
    let (cfg, weights) = yolov4_tiny();
    let out = dir.join("yolov4-tiny.onnx");
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgedet"));
    command.arg("export-onnx").arg("--model").arg(&cfg).arg("--weights").arg(&weights).arg("--out").arg(&out);
    if let Some(size) = size {
        command.args(["--size", size]);
    }

    let output = command.output().expect("starting the edgedet binary");
    assert!(
        output.status.success(),
        "edgedet export-onnx failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.exists(), "edgedet export-onnx succeeded but wrote no {}", out.display());
    out
}

/// Prepares the dog photo as yolov4-tiny's input, stretched because the cfg has no `letter_box`.
fn dog_input(width: u32, height: u32) -> NetworkInput {
    let image = load_image(&repo_path("tests/fixtures/images/dog.jpg")).expect("loading dog.jpg");
    prepare_input(&image, width, height, ResizeMode::Stretch)
}

fn load(spec: &ModelSpec) -> Model {
    Model::load(spec).unwrap_or_else(|error| panic!("loading {}: {error:#}", spec.path.display()))
}

fn run(model: &Model, input: &NetworkInput) -> Vec<HeadOutput> {
    model.run(input).unwrap_or_else(|error| panic!("running {}: {error:#}", model.description()))
}

/// What ONNX Runtime reported for one run of an exported file.
struct OnnxRuntimeRun {
    input_name: String,
    input_shape: Vec<usize>,
    /// Output name, shape and values, in the model's output order.
    outputs: Vec<(String, Vec<usize>, Vec<f32>)>,
    metadata: serde_json::Map<String, serde_json::Value>,
}

fn run_onnxruntime(dir: &Path, model: &Path, input: &NetworkInput) -> OnnxRuntimeRun {
    let python = python_oracle::python_with(&["onnxruntime", "numpy"]);
    let input_path = dir.join("input.f32");
    let output_path = dir.join("onnxruntime.f32");
    python_oracle::write_f32_le(&input_path, &input.data);

    let report = python_oracle::run_script(
        &python,
        "onnxruntime_heads.py",
        &[
            "--model".as_ref(),
            model.as_os_str(),
            "--input".as_ref(),
            input_path.as_os_str(),
            "--out".as_ref(),
            output_path.as_os_str(),
        ],
    );

    let shape_of = |value: &serde_json::Value| -> Vec<usize> {
        value
            .as_array()
            .expect("a shape is a list")
            .iter()
            .map(|dim| dim.as_u64().expect("a dimension") as usize)
            .collect()
    };
    let values = python_oracle::read_f32_le(&output_path);
    let mut offset = 0;
    let mut outputs = Vec::new();
    for described in report["outputs"].as_array().expect("onnxruntime_heads.py lists its outputs") {
        let shape = shape_of(&described["shape"]);
        let len: usize = shape.iter().product();
        assert!(offset + len <= values.len(), "onnxruntime_heads.py wrote fewer values than it described");
        outputs.push((
            described["name"].as_str().unwrap_or("?").to_string(),
            shape,
            values[offset..offset + len].to_vec(),
        ));
        offset += len;
    }
    assert_eq!(offset, values.len(), "onnxruntime_heads.py wrote more values than it described");

    OnnxRuntimeRun {
        input_name: report["input"]["name"].as_str().unwrap_or("?").to_string(),
        input_shape: shape_of(&report["input"]["shape"]),
        outputs,
        metadata: report["metadata"].as_object().cloned().unwrap_or_default(),
    }
}

/// Returns the largest absolute difference between two equally long slices and its index.
/// A NaN difference counts as infinite.
fn max_difference(actual: &[f32], expected: &[f32]) -> (f32, usize) {
    assert_eq!(actual.len(), expected.len(), "compared outputs differ in length");
    let mut worst = (0.0f32, 0);
    for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
        let difference = (a - e).abs();
        let difference = if difference.is_nan() { f32::INFINITY } else { difference };
        if difference > worst.0 {
            worst = (difference, index);
        }
    }
    worst
}

/// Asserts that two sets of head outputs have the same shapes and values within [`TOLERANCE`].
fn assert_heads_equal(label: &str, actual: &[HeadOutput], expected: &[HeadOutput]) {
    assert_eq!(actual.len(), expected.len(), "{label}: number of heads");
    for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_eq!((a.grid_width, a.grid_height), (e.grid_width, e.grid_height), "{label}: head {index} grid size");
        let (difference, at) = max_difference(&a.data, &e.data);
        println!("{label}: head {index} ({}x{}) max |difference| {difference:.2e}", a.grid_width, a.grid_height);
        assert!(
            difference <= TOLERANCE,
            "{label}: head {index} differs by {difference} at value {at} ({} against {})",
            a.data[at],
            e.data[at]
        );
    }
}

/// Checks ONNX Runtime's outputs of an exported file against edgedet's darknet heads.
fn assert_onnxruntime_matches(run: &OnnxRuntimeRun, heads: &[HeadOutput], input_size: (usize, usize)) {
    assert_eq!(run.input_name, "input", "name of the exported model's input");
    assert_eq!(run.input_shape, vec![1, 3, input_size.1, input_size.0], "shape of the exported model's input");
    assert_eq!(run.outputs.len(), heads.len(), "the export has one output per [yolo] layer");

    for (index, ((name, shape, values), head)) in run.outputs.iter().zip(heads).enumerate() {
        let channels = head.data.len() / (head.grid_width * head.grid_height);
        assert_eq!(shape, &vec![1, channels, head.grid_height, head.grid_width], "shape of output {index} ({name})");
        let (difference, at) = max_difference(values, &head.data);
        println!("ONNX Runtime against darknet: output {index} ({name}, {shape:?}) max |difference| {difference:.2e}");
        assert!(
            difference <= TOLERANCE,
            "ONNX Runtime output {index} ({name}) differs from edgedet's darknet head by {difference} at value {at} \
             ({} against {})",
            values[at],
            head.data[at]
        );
    }
}

#[test]
fn onnxruntime_matches_darknet_heads() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let onnx = export_onnx(dir.path(), None);

    let model = load(&darknet_spec(None));
    let (width, height) = (model.meta().width, model.meta().height);
    assert_eq!((width, height), (416, 416), "yolov4-tiny.cfg input size");
    let input = dog_input(width, height);
    let heads = run(&model, &input);

    let onnxruntime = run_onnxruntime(dir.path(), &onnx, &input);
    assert_onnxruntime_matches(&onnxruntime, &heads, (width as usize, height as usize));
}

#[test]
fn onnxruntime_matches_darknet_heads_at_other_size() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let onnx = export_onnx(dir.path(), Some("320x320"));

    let size = InputSize { width: 320, height: 320 };
    let model = load(&darknet_spec(Some(size)));
    assert_eq!((model.meta().width, model.meta().height), (320, 320), "input size after --size");
    let input = dog_input(320, 320);
    let heads = run(&model, &input);
    let grids: Vec<(usize, usize)> = heads.iter().map(|head| (head.grid_width, head.grid_height)).collect();
    assert_eq!(grids, vec![(10, 10), (20, 20)], "yolov4-tiny grids at 320x320");

    let onnxruntime = run_onnxruntime(dir.path(), &onnx, &input);
    assert_onnxruntime_matches(&onnxruntime, &heads, (320, 320));
}

#[test]
fn exported_onnx_loads_back_with_same_heads() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let onnx = export_onnx(dir.path(), None);

    let darknet = load(&darknet_spec(None));
    let exported = load(&ModelSpec::new(onnx.clone()));
    assert_eq!(exported.meta(), darknet.meta(), "metadata of the exported model loaded back");

    let input = dog_input(darknet.meta().width, darknet.meta().height);
    let darknet_heads = run(&darknet, &input);
    let exported_heads = run(&exported, &input);
    assert_heads_equal("exported ONNX against darknet", &exported_heads, &darknet_heads);
}

/// One `[yolo]` section of a cfg, read directly from the text.
#[derive(Debug)]
struct CfgYolo {
    anchors: Vec<[f32; 2]>,
    mask: Vec<usize>,
    classes: usize,
    scale_x_y: f32,
}

fn cfg_yolo_sections(cfg_text: &str) -> Vec<CfgYolo> {
    let mut sections = Vec::new();
    let mut current: Option<CfgYolo> = None;
    for line in cfg_text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            sections.extend(current.take());
            if line == "[yolo]" {
                current = Some(CfgYolo { anchors: Vec::new(), mask: Vec::new(), classes: 0, scale_x_y: 1.0 });
            }
            continue;
        }
        let (Some(section), Some((key, value))) = (current.as_mut(), line.split_once('=')) else { continue };
        let numbers = || value.split(',').map(|number| number.trim().parse::<f32>().expect("a number"));
        match key.trim() {
            "anchors" => {
                let values: Vec<f32> = numbers().collect();
                section.anchors = values.chunks_exact(2).map(|pair| [pair[0], pair[1]]).collect();
            }
            "mask" => section.mask = numbers().map(|number| number as usize).collect(),
            "classes" => section.classes = value.trim().parse().expect("classes is a number"),
            "scale_x_y" => section.scale_x_y = value.trim().parse().expect("scale_x_y is a number"),
            _ => {}
        }
    }
    sections.extend(current);
    sections
}

#[test]
fn exported_onnx_metadata_has_cfg_heads() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let onnx = export_onnx(dir.path(), None);
    let input = dog_input(416, 416);
    let onnxruntime = run_onnxruntime(dir.path(), &onnx, &input);

    let json = onnxruntime.metadata.get(META_KEY).and_then(|value| value.as_str()).unwrap_or_else(|| {
        panic!("the exported model has no metadata entry {META_KEY:?}; entries: {:?}", onnxruntime.metadata.keys())
    });
    let meta: ModelMeta = serde_json::from_str(json)
        .unwrap_or_else(|error| panic!("metadata {META_KEY:?} is not valid ({error}): {json}"));
    meta.validate().unwrap_or_else(|error| panic!("metadata {META_KEY:?} is inconsistent: {error}"));

    let (cfg, _) = yolov4_tiny();
    let cfg_heads = cfg_yolo_sections(&std::fs::read_to_string(&cfg).expect("reading yolov4-tiny.cfg"));
    assert_eq!(cfg_heads.len(), 2, "yolov4-tiny.cfg has two [yolo] sections");
    assert_eq!((meta.width, meta.height, meta.channels), (416, 416, 3), "input size in the metadata");
    assert_eq!(meta.classes, cfg_heads[0].classes, "classes in the metadata");
    assert_eq!(meta.heads.len(), cfg_heads.len(), "heads in the metadata");
    for (index, (head, expected)) in meta.heads.iter().zip(&cfg_heads).enumerate() {
        assert_eq!(head.anchors, expected.anchors, "anchors of head {index}");
        assert_eq!(head.mask, expected.mask, "mask of head {index}");
        assert_eq!(head.scale_x_y, expected.scale_x_y, "scale_x_y of head {index}");
        assert!(!head.new_coords, "head {index}: yolov4-tiny does not use new_coords");
    }
}
