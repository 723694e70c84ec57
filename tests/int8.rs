//! int8 yolov4-tiny: calibrated by `edgedet quantize`, checked against the
//! float model on the fixture photos, and inspected for what tract runs.
//!
//! The calibration uses the four fixture photos, the same ones the accuracy
//! test checks. Calibration only measures value ranges (minimum and maximum),
//! it fits nothing to the detections, so this is what a user calibrating on
//! frames from their own camera gets.

mod common;
#[path = "common/synthetic_weights.rs"]
#[allow(dead_code)]
mod synthetic_weights;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use edgedet::detector::{Detector, DetectorOptions};
use edgedet::model::agreement::{self, AgreementRule};
use edgedet::model::quant::CalibrationFile;
use edgedet::model::{Model, ModelSpec, Precision};
use edgedet::preprocess::load_image;

const PHOTOS: [&str; 4] = ["bus.jpg", "dog.jpg", "person.jpg", "zidane.jpg"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cfg() -> PathBuf {
    repo().join("models/yolov4-tiny/yolov4-tiny.cfg")
}

/// The calibration of yolov4-tiny on the fixture photos, made once per test binary.
fn calibration() -> &'static Path {
    static CALIBRATION: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = CALIBRATION.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("yolov4-tiny.int8.json");
        let output = Command::new(env!("CARGO_BIN_EXE_edgedet"))
            .arg("quantize")
            .arg("--model")
            .arg(cfg())
            .arg("--calibrate")
            .arg(repo().join("tests/fixtures/images"))
            .arg("--out")
            .arg(&path)
            .output()
            .expect("running edgedet quantize");
        assert!(output.status.success(), "edgedet quantize failed: {}", String::from_utf8_lossy(&output.stderr));
        (dir, path)
    });
    path
}

fn int8_model() -> &'static Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL.get_or_init(|| {
        let spec = ModelSpec {
            precision: Precision::Int8.into(),
            quantization: Some(calibration().to_path_buf()),
            ..ModelSpec::new(cfg())
        };
        Arc::new(Model::load(&spec).unwrap_or_else(|error| panic!("loading int8 yolov4-tiny: {error:#}")))
    })
}

#[test]
fn int8_detections_match_float_on_photos() {
    let rule = AgreementRule::default();
    let float = Detector::new(Arc::clone(common::yolo::model()), DetectorOptions::default());
    let without_nms = DetectorOptions { nms_threshold: 1.0, ..DetectorOptions::default() };
    let float_candidates = Detector::new(Arc::clone(common::yolo::model()), without_nms);
    let int8 = Detector::new(Arc::clone(int8_model()), DetectorOptions::default());
    assert_eq!(int8.model().precision(), Precision::Int8);
    assert_eq!(rule.nms_threshold, DetectorOptions::default().nms_threshold);

    let mut failures = Vec::new();
    for photo in PHOTOS {
        let image = load_image(&repo().join("tests/fixtures/images").join(photo)).expect("fixture photo");
        let float_found = float.detect(&image).expect("float inference").detections;
        let int8_found = int8.detect(&image).expect("int8 inference").detections;
        let candidates = float_candidates.detect(&image).expect("float inference").detections;
        let agreement = agreement::compare(&rule, &float_found, &candidates, &int8_found);
        assert!(!agreement.notes.is_empty(), "{photo}: no detection above {} to compare", rule.checked_score);
        for note in &agreement.notes {
            println!("{photo}: {note}");
        }
        failures.extend(agreement.failures.iter().map(|failure| format!("{photo}: {failure}")));
        if agreement.unmatched > rule.max_unmatched {
            failures.push(format!(
                "{photo}: {} detections above {} missing or extra",
                agreement.unmatched, rule.checked_score
            ));
        }
    }
    assert!(failures.is_empty(), "int8 disagrees with float:\n{}", failures.join("\n"));
}

#[test]
fn int8_convolutions_use_fused_integer_kernels() {
    let summary = int8_model().summary();
    println!("ops: {:?}", summary.ops);
    println!("kernels: {}", summary.kernel_counts());

    // yolov4-tiny has 21 convolutions; each is one matrix product.
    assert_eq!(summary.matmuls.len(), 21, "{:?}", summary.matmuls);
    for matmul in &summary.matmuls {
        assert!(
            matmul.kernels.iter().all(|k| k.contains("_i32_")),
            "{} runs on {:?}, not an integer kernel",
            matmul.node,
            matmul.kernels
        );
    }
    // What tract adds around an int8 matrix product when it cannot fuse the
    // requantization: none may remain.
    for glue in ["Scale", "QScale", "QSumB", "OffsetU8asI8", "OffsetI8asU8", "Min", "Max", "Add", "Sub"] {
        assert!(!summary.ops.contains_key(glue), "{glue} left in the int8 plan: {:?}", summary.ops);
    }
    // On x86_64 the int8 kernels read their input four values deep: tract's
    // with VNNI or AMX, edgedet's own with AVX2 alone. edgedet's im2col then
    // replaces all 14 of tract's (the 7 1×1 convolutions need none), and the
    // input zero points are in the biases, so tract no longer sums the large
    // kernels on every run (a Cast and a Reduce<Sum> each).
    // A block under `cfg` rather than `if cfg!`, because `is_x86_feature_detected!`
    // does not compile for other targets.
    #[cfg(target_arch = "x86_64")]
    {
        let kernels = summary.matmuls.iter().flat_map(|m| &m.kernels);
        if x86_cpu_has_int8_dot_product() {
            assert!(
                kernels.clone().all(|k| k.contains("vnni") || k.contains("amx")),
                "this CPU has VNNI or AMX, but tract chose {}",
                summary.kernel_counts()
            );
        } else {
            assert!(std::arch::is_x86_feature_detected!("avx2"), "these tests expect an x86 CPU with AVX2");
            assert!(
                kernels.clone().all(|k| k == "edgedet_avx2_i32_8x8"),
                "this CPU has AVX2 without VNNI, but tract chose {}",
                summary.kernel_counts()
            );
        }
        assert_eq!(summary.ops.get("Im2colI8K4"), Some(&14), "{:?}", summary.ops);
        for left in ["Im2col", "Reduce<Sum>"] {
            assert!(!summary.ops.contains_key(left), "{left} left in the int8 plan: {:?}", summary.ops);
        }
        assert_eq!(summary.ops.get("Cast"), Some(&2), "only the two heads cast: {:?}", summary.ops);
    }
    // Activations are lookup tables: 19 hidden convolutions, all leaky.
    assert_eq!(summary.ops.get("LookupTable"), Some(&19), "{:?}", summary.ops);
    // Float appears only where the two heads turn their accumulators into floats.
    // A reshape there is free: the head's pointwise convolution ran over one
    // row of pixels, and tract may restore the H×W shape after the cast.
    let float: Vec<String> = summary.float_nodes.iter().map(|n| format!("{} ({})", n.node, n.op)).collect();
    println!("float nodes: {float:?}");
    let head_convs = ["l29", "l36"];
    let is_head_output = |name: &str, op: &str| {
        head_convs.iter().any(|head| {
            name == format!("{head}.float")
                || name == format!("{head}.head")
                || (name == format!("{head}.conv.as_plane") && op == "IntoShape")
        })
    };
    assert!(
        summary.float_nodes.iter().all(|n| is_head_output(&n.node, &n.op)),
        "float nodes between quantized layers: {float:?}"
    );
    let computing_nodes = summary.float_nodes.iter().filter(|n| n.op != "IntoShape").count();
    assert_eq!(computing_nodes, 4, "{float:?}");
}

/// Reports whether tract found an x86 int8 dot-product extension on this CPU
/// (AVX-512 VNNI, AVX-VNNI or AMX), for which its int8 kernels read the
/// four-deep packing.
#[cfg(target_arch = "x86_64")]
fn x86_cpu_has_int8_dot_product() -> bool {
    use tract_linalg::isa::Isa;
    tract_linalg::isa::native()
        .iter()
        .any(|isa| matches!(isa, Isa::X86_64Avx512Vnni | Isa::X86_64AvxVnni | Isa::X86_64AmxInt8))
}

#[test]
fn calibration_for_other_weights_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut calibration = CalibrationFile::read(calibration()).expect("reading the calibration");
    calibration.weights_sha256 = "0".repeat(64);
    let path = dir.path().join("other.int8.json");
    calibration.write(&path).unwrap();

    let spec =
        ModelSpec { precision: Precision::Int8.into(), quantization: Some(path.clone()), ..ModelSpec::new(cfg()) };
    let error = format!("{:#}", Model::load(&spec).err().expect("a mismatched calibration must not load"));
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("yolov4-tiny.weights"), "{error}");
    assert!(error.contains("run `edgedet quantize` again"), "{error}");
}

#[test]
fn calibration_file_lists_convolution_cfg_lines() {
    let calibration = CalibrationFile::read(calibration()).expect("reading the calibration");
    assert_eq!(calibration.format, "edgedet-int8-calibration");
    assert_eq!(calibration.frames, PHOTOS.len());
    assert!(calibration.equalized);
    assert_eq!(calibration.weights_sha256, "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87");
    assert_eq!(calibration.layers.len(), 21);
    // The first convolution of yolov4-tiny.cfg starts on line 25.
    assert_eq!((calibration.layers[0].layer, calibration.layers[0].line), (0, 25));
    assert!(calibration.layers.iter().all(|l| l.min < 0.0 && l.max > 0.0 && l.kind == "convolutional"));
}

/// Signal-to-quantization-noise ratio of `approx` against `exact`, in dB.
fn sqnr_db(exact: &[f32], approx: &[f32]) -> f64 {
    let signal: f64 = exact.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let noise: f64 = exact.iter().zip(approx).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    10.0 * (signal / noise).log10()
}

/// The full yolov4 (CSP-Darknet53 with mish, SPP, PAN, 23 shortcuts) in int8,
/// with synthetic weights at 256×256: every layer kind of the architecture
/// quantizes, runs on integer kernels, and its raw head outputs follow the
/// float model's.
#[test]
fn yolov4_int8_heads_match_float() {
    use edgedet::model::darknet::weights_layout;
    use edgedet::preprocess::{prepare_input, ResizeMode};
    use synthetic_weights::{conv_roles, write_weights, HeaderVersion};

    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("tests/fixtures/darknet/yolov4.cfg")).unwrap();
    let cfg = dir.path().join("yolov4.cfg");
    std::fs::write(&cfg, text.replace("width=608", "width=256").replace("height=608", "height=256")).unwrap();
    let weights = cfg.with_extension("weights");
    write_weights(&weights, &weights_layout(&cfg).unwrap(), &conv_roles(&text), HeaderVersion::Seen64, 7).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_edgedet"))
        .args(["quantize", "--model"])
        .arg(&cfg)
        .arg("--calibrate")
        .arg(repo().join("tests/fixtures/images"))
        .output()
        .expect("running edgedet quantize");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let float = Model::load(&ModelSpec::new(&cfg)).expect("float yolov4");
    let int8 =
        Model::load(&ModelSpec { precision: Precision::Int8.into(), ..ModelSpec::new(&cfg) }).expect("int8 yolov4");
    let summary = int8.summary();
    println!("ops: {:?}", summary.ops);
    assert_eq!(summary.matmuls.len(), 110, "one integer matrix product per convolution");
    assert!(
        summary.matmuls.iter().flat_map(|m| &m.kernels).all(|k| k.contains("_i32_")),
        "{}",
        summary.kernel_counts()
    );
    assert_eq!(summary.ops.get("QuantizedAddI8"), Some(&23), "the 23 shortcuts: {:?}", summary.ops);
    assert_eq!(summary.float_nodes.len(), 6, "only the three heads leave int8: {:?}", summary.float_nodes);

    let image = load_image(&repo().join("tests/fixtures/images/dog.jpg")).unwrap();
    let input = prepare_input(&image, 256, 256, ResizeMode::Stretch);
    let exact = float.run(&input).expect("float inference");
    let approx = int8.run(&input).expect("int8 inference");
    for (head, (e, a)) in exact.iter().zip(&approx).enumerate() {
        let sqnr = sqnr_db(&e.data, &a.data);
        println!("head {head}: SQNR {sqnr:.1} dB");
        assert!(sqnr > MIN_HEAD_SQNR_DB, "head {head}: SQNR {sqnr:.1} dB");
    }
}

/// Smallest SQNR of a yolov4 head in int8 against float. Measured with these
/// synthetic weights: 26.2 to 27.4 dB; a wrong scale anywhere in the 162
/// layers drops it below 10 dB.
const MIN_HEAD_SQNR_DB: f64 = 24.0;

#[test]
fn missing_calibration_suggests_quantize() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.int8.json");
    let spec =
        ModelSpec { precision: Precision::Int8.into(), quantization: Some(path.clone()), ..ModelSpec::new(cfg()) };
    let error = format!("{:#}", Model::load(&spec).err().expect("a missing calibration must not load"));
    assert!(error.contains(&format!("no int8 calibration at {}", path.display())), "{error}");
    assert!(error.contains("edgedet quantize --model"), "{error}");
}
