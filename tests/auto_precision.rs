//! `precision = "auto"` on yolov4-tiny: every candidate is timed or given a
//! reason, the fastest agreeing one is chosen, the choice is remembered under
//! a key of everything it depends on, and a damaged cache is timed again.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgedet::model::auto::{self, Choice};
use edgedet::model::{ModelSpec, Precision, PrecisionSetting};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cfg() -> PathBuf {
    repo().join("models/yolov4-tiny/yolov4-tiny.cfg")
}

/// yolov4-tiny with the fixture calibration, so int8 is a candidate, on one thread.
fn spec(samples: &Path) -> ModelSpec {
    ModelSpec {
        precision: PrecisionSetting::Auto,
        quantization: Some(repo().join("tests/fixtures/int8/yolov4-tiny.int8.json")),
        threads: Some(1),
        samples: Some(samples.to_path_buf()),
        ..ModelSpec::new(cfg())
    }
}

/// Creates a folder with one sample photo, which keeps the timing short.
fn one_sample() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("tests/fixtures/images/dog.jpg"), dir.path().join("dog.jpg")).unwrap();
    dir
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// Checks that every precision was either timed or rejected with a reason,
/// and that the chosen one is the fastest of those that agreed with f32.
fn assert_consistent(choice: &Choice) {
    for precision in Precision::ALL {
        assert!(
            choice.inference_ms.contains_key(&precision) || choice.rejected.contains_key(&precision),
            "{precision} neither timed nor rejected: {choice:?}"
        );
    }
    let fastest = choice
        .inference_ms
        .iter()
        .filter(|(precision, _)| !choice.rejected.contains_key(precision))
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(precision, _)| *precision);
    assert_eq!(Some(choice.precision), fastest, "{choice:?}");
    if !edgedet::model::precision::cpu_has_fp16() {
        assert_eq!(choice.rejected[&Precision::F16], "this CPU has no FP16 arithmetic");
    }
}

#[test]
fn auto_keeps_fastest_agreeing_precision() {
    let samples = one_sample();
    let cache = tempfile::tempdir().unwrap();
    let first = auto::choose_with_cache(&spec(samples.path()), Some(cache.path())).expect("choosing");
    println!("first start: {} ({})", first.precision, first.summary());
    assert!(!first.cached);
    assert_consistent(&first);
    assert!(first.inference_ms[&Precision::F32] > 0.0);

    let files = cache_files(cache.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("yolov4-tiny."), "{name}");
    assert!(name.ends_with(".json"), "{name}");

    let second = auto::choose_with_cache(&spec(samples.path()), Some(cache.path())).expect("choosing again");
    assert!(second.cached, "the second start timed again");
    assert_eq!(Choice { cached: false, ..second }, first);
}

#[test]
fn another_thread_count_or_calibration_is_timed_again() {
    let samples = one_sample();
    let cache = tempfile::tempdir().unwrap();
    let one_thread = auto::choose_with_cache(&spec(samples.path()), Some(cache.path())).unwrap();
    let two_threads = ModelSpec { threads: Some(2), ..spec(samples.path()) };
    let other = auto::choose_with_cache(&two_threads, Some(cache.path())).unwrap();
    assert!(!other.cached);
    assert_eq!((one_thread.key.threads, other.key.threads), (1, 2));

    // Without a calibration, int8 is no candidate, and the key records that.
    let uncalibrated = ModelSpec { quantization: Some(cache.path().join("none.int8.json")), ..spec(samples.path()) };
    let without_int8 = auto::choose_with_cache(&uncalibrated, Some(cache.path())).unwrap();
    assert!(!without_int8.cached);
    assert_eq!(without_int8.key.calibration_sha256, None);
    assert!(without_int8.rejected[&Precision::Int8].starts_with("no calibration "), "{without_int8:?}");
    assert_eq!(cache_files(cache.path()).len(), 3);
}

/// A first choice made into a new cache: the sample folder, the cache folder,
/// the choice and the path of the one cache file it wrote.
struct Cached {
    samples: tempfile::TempDir,
    cache: tempfile::TempDir,
    first: Choice,
    file: PathBuf,
}

impl Cached {
    fn new() -> Cached {
        let samples = one_sample();
        let cache = tempfile::tempdir().unwrap();
        let first = auto::choose_with_cache(&spec(samples.path()), Some(cache.path())).unwrap();
        let file = cache_files(cache.path()).remove(0);
        Cached { samples, cache, first, file }
    }

    fn choose_again(&self) -> Choice {
        auto::choose_with_cache(&spec(self.samples.path()), Some(self.cache.path())).unwrap()
    }
}

#[test]
fn damaged_cache_is_timed_again() {
    let cached = Cached::new();
    let (first, file) = (&cached.first, &cached.file);
    std::fs::write(file, "{\"format\": \"edgedet-precision-choice\", \"key\": ").unwrap();

    let again = cached.choose_again();
    assert!(!again.cached);
    assert_eq!(again.precision, first.precision);
    let written: Choice = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).expect("rewritten cache");
    assert_eq!(written.key, first.key);
}

#[test]
fn without_sample_images_only_f32_is_run() {
    let empty = tempfile::tempdir().unwrap();
    let choice = auto::choose_with_cache(&spec(empty.path()), None).unwrap();
    assert_eq!(choice.precision, Precision::F32);
    let reason = &choice.rejected[&Precision::Int8];
    assert_eq!(reason, &format!("no sample images in {} to check it against f32", empty.path().display()));
    assert_eq!(choice.inference_ms.keys().copied().collect::<Vec<_>>(), [Precision::F32]);
}

#[test]
fn missing_samples_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let error = auto::choose_with_cache(&spec(&missing), None).unwrap_err().to_string();
    assert!(error.contains(&missing.display().to_string()), "{error}");
    assert!(error.contains("does not exist"), "{error}");
}

#[test]
fn cached_rejected_precision_is_retimed() {
    let cached = Cached::new();
    let (first, file) = (&cached.first, &cached.file);
    // On x86, f16 is always rejected for want of FP16 arithmetic.
    let Some(&unusable) = first.rejected.keys().next() else {
        println!("every precision was timed and kept on this CPU; nothing to edit in");
        return;
    };
    let edited = Choice { precision: unusable, ..first.clone() };
    std::fs::write(file, serde_json::to_string(&edited).unwrap()).unwrap();

    let again = cached.choose_again();
    assert!(!again.cached);
    assert_eq!(again.precision, first.precision);
}

#[test]
fn detect_auto_reads_cached_choice() {
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_edgedet"))
            .args(["detect", "--precision", "auto", "--threads", "1", "--json", "--model"])
            .arg(cfg())
            .arg("--quantization")
            .arg(repo().join("tests/fixtures/int8/yolov4-tiny.int8.json"))
            .arg(repo().join("tests/fixtures/images/dog.jpg"))
            .env("EDGEDET_CACHE_DIR", cache.path())
            .env("RUST_LOG", "info")
            .output()
            .expect("running edgedet detect");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        (String::from_utf8_lossy(&output.stdout).to_string(), String::from_utf8_lossy(&output.stderr).to_string())
    };
    let (first_json, first_log) = run();
    assert!(first_log.contains("precision auto chose "), "{first_log}");
    assert!(first_log.contains(&format!("remembered in {}", cache.path().display())), "{first_log}");
    let (second_json, second_log) = run();
    assert!(second_log.contains("precision auto runs "), "{second_log}");
    assert!(second_log.contains("as timed at an earlier start"), "{second_log}");
    assert!(!second_log.contains("precision auto chose"), "{second_log}");
    // The same precision ran both times, so the detections are the same.
    let parse = |line: &str| serde_json::from_str::<serde_json::Value>(line).expect("detect --json line");
    let (first, second) = (parse(&first_json), parse(&second_json));
    assert_eq!(first["model"], second["model"]);
    assert_eq!(first["detections"], second["detections"]);
    assert_eq!(first["detections"][0]["label"], "dog", "{first_json}");
}

#[test]
fn precision_setting_parses_auto() {
    assert_eq!("auto".parse::<PrecisionSetting>(), Ok(PrecisionSetting::Auto));
    assert_eq!("int8".parse::<PrecisionSetting>(), Ok(PrecisionSetting::Fixed(Precision::Int8)));
    assert_eq!(
        "fast".parse::<PrecisionSetting>(),
        Err("invalid precision \"fast\": expected f32, f16, int8 or auto".to_string())
    );
}

#[test]
fn tract_version_matches_cargo_pin() {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    for crate_name in ["tract-core", "tract-onnx", "tract-linalg"] {
        let pin = format!("{crate_name} = {{ version = \"={}\"", auto::TRACT_VERSION);
        assert!(manifest.contains(&pin), "Cargo.toml does not pin {pin}");
    }
}
