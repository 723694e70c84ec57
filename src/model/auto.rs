//! `precision = "auto"`: time the precisions this CPU and model offer, keep
//! the fastest that agrees with f32, and remember the choice.
//!
//! Which precision is fastest depends on the CPU far more than on the model.
//! int8 takes under half of f32's work on a Cortex-A76 with `sdot`, but more
//! than f32 on a Cortex-A72 without it. On x86 CPUs with AVX2 but no VNNI,
//! int8 took 0.77 to 0.86 of f32's time on the machine of the README. So at
//! first start each
//! candidate is loaded and timed on the model's sample frames, and its
//! detections are compared with f32's ([`super::agreement`]). The choice goes
//! to a cache file whose key contains everything that could change it: the
//! SHA-256 of the model, calibration and sample files, the input size, the
//! thread count, edgedet's and tract's versions and the CPU's instruction
//! sets. Later starts read the file and load one model.
//!
//! NOTE: the first start drops the timed candidates and loads the chosen
//! precision once more; keeping the chosen candidate's model would save that load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::agreement::{self, AgreementRule};
use super::quant::sha256_of;
use super::{precision, Model, ModelError, ModelSpec, Precision};
use crate::detection::Detection;
use crate::detector::{Detector, DetectorOptions};
use crate::preprocess::{load_image, prepare_input, ResizeMode, RgbImage};

/// The tract version edgedet is built with; `Cargo.toml` pins it exactly, and a test checks the two agree.
pub const TRACT_VERSION: &str = "0.23.9";

/// Sample frames compared at most: enough to catch a precision that loses
/// objects, few enough that the first start stays short.
const MAX_SAMPLES: usize = 8;

/// Timed inferences per candidate, after one untimed.
const TIMED_RUNS: usize = 3;

/// A candidate whose untimed first inference takes this many times the
/// fastest median so far is dropped without timing it: on CPUs where tract's
/// int8 kernel is slow, timing it in full would add seconds to the first start.
const GIVE_UP_FACTOR: f64 = 3.0;

const CACHE_FORMAT: &str = "edgedet-precision-choice";

/// Everything the choice depends on. A cache file whose key differs in any field is timed again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChoiceKey {
    pub model_sha256: String,
    pub weights_sha256: Option<String>,
    pub calibration_sha256: Option<String>,
    pub samples_sha256: String,
    pub input_size: Option<String>,
    pub threads: usize,
    pub edgedet: String,
    pub tract: String,
    /// tract's name for the instruction sets it found, such as `avx,fma,avx2`.
    pub cpu: String,
    /// Whether f32 runs its 3×3 convolutions on Winograd's algorithm (`EDGEDET_WINOGRAD`).
    pub winograd: bool,
}

/// The outcome of `auto`: the precision to run and how it was found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub format: String,
    pub key: ChoiceKey,
    pub precision: Precision,
    /// Median inference time of each candidate, in milliseconds.
    pub inference_ms: BTreeMap<Precision, f64>,
    /// The reasons, by precision, why it was no candidate or was dropped.
    pub rejected: BTreeMap<Precision, String>,
    /// Whether this choice was read from the cache rather than timed now.
    #[serde(skip)]
    pub cached: bool,
}

impl Choice {
    /// Describes the timings and rejections in one line: `f32 57.3 ms, int8 40.1 ms; f16: no FP16`.
    pub fn summary(&self) -> String {
        let timed: Vec<String> = self.inference_ms.iter().map(|(p, ms)| format!("{p} {ms:.1} ms")).collect();
        let rejected: Vec<String> = self.rejected.iter().map(|(p, why)| format!("{p}: {why}")).collect();
        if rejected.is_empty() {
            timed.join(", ")
        } else {
            format!("{}; {}", timed.join(", "), rejected.join("; "))
        }
    }
}

/// Returns the folder where `auto` keeps its choices: `$EDGEDET_CACHE_DIR`,
/// else the `CacheDirectory=` that systemd gives the service
/// (`$CACHE_DIRECTORY`), else `$XDG_CACHE_HOME/edgedet`, else `~/.cache/edgedet`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    var("EDGEDET_CACHE_DIR")
        .or_else(|| {
            // systemd separates several cache directories with colons; the first is the unit's own.
            let list = var("CACHE_DIRECTORY")?;
            list.to_str().and_then(|text| text.split(':').next()).map(PathBuf::from)
        })
        .or_else(|| var("XDG_CACHE_HOME").map(|dir| dir.join("edgedet")))
        .or_else(|| var("HOME").map(|home| home.join(".cache/edgedet")))
}

/// Chooses the precision for `spec` with the cache in [`default_cache_dir`].
///
/// # Errors
/// As [`choose_with_cache`].
pub fn choose(spec: &ModelSpec) -> Result<Choice, ModelError> {
    choose_with_cache(spec, default_cache_dir().as_deref())
}

/// Chooses the precision for `spec`, reading and writing the choice in
/// `cache_dir` (no caching when `None`). A cache that cannot be read or
/// written costs a warning and a new timing, never the start.
///
/// # Errors
/// The model files cannot be read, a samples folder given in `spec` does not
/// exist, or f32 itself fails to load or run.
pub fn choose_with_cache(spec: &ModelSpec, cache_dir: Option<&Path>) -> Result<Choice, ModelError> {
    let name = spec.path.display().to_string();
    if let Some(dir) = spec.samples.as_ref().filter(|dir| !dir.is_dir()) {
        return Err(ModelError::SamplesMissing { path: dir.display().to_string() });
    }
    let samples = sample_paths(&spec.samples_dir());
    let key = choice_key(spec, &samples)?;
    let cache_path = cache_dir.map(|dir| dir.join(cache_file_name(spec, &key)));
    if let Some(path) = &cache_path {
        if let Some(choice) = read_cache(path, &key) {
            log::info!(
                "{name}: precision auto runs {} as timed at an earlier start ({}), from {}",
                choice.precision,
                choice.summary(),
                path.display()
            );
            return Ok(choice);
        }
    }

    let started = Instant::now();
    let choice = measure(spec, &samples, key)?;
    let cached = match &cache_path {
        Some(path) => match write_cache(path, &choice) {
            Ok(()) => format!("remembered in {}", path.display()),
            Err(error) => {
                log::warn!(
                    "{name}: writing the precision choice to {} failed: {error}; the next start times again",
                    path.display()
                );
                "not remembered".to_string()
            }
        },
        None => "not remembered: no cache folder (set EDGEDET_CACHE_DIR)".to_string(),
    };
    log::info!(
        "{name}: precision auto chose {} in {:.1} s ({}); {cached}",
        choice.precision,
        started.elapsed().as_secs_f64(),
        choice.summary()
    );
    Ok(choice)
}

/// Lists the JPEG and PNG files of `dir`, sorted, at most [`MAX_SAMPLES`].
fn sample_paths(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension()
                .and_then(|ext| ext.to_str())
                .is_some_and(|ext| ["jpg", "jpeg", "png"].contains(&ext.to_ascii_lowercase().as_str()))
        })
        .collect();
    paths.sort();
    paths.truncate(MAX_SAMPLES);
    paths
}

fn choice_key(spec: &ModelSpec, samples: &[PathBuf]) -> Result<ChoiceKey, ModelError> {
    let hash = |path: &Path| sha256_of(path).map_err(ModelError::from);
    let calibration = spec.quantization_path();
    let int8_possible = !spec.is_onnx() && calibration.is_file();
    let mut samples_digest = String::new();
    for sample in samples {
        samples_digest += &hash(sample)?;
    }
    Ok(ChoiceKey {
        model_sha256: hash(&spec.path)?,
        weights_sha256: if spec.is_onnx() { None } else { Some(hash(&spec.weights_path())?) },
        calibration_sha256: if int8_possible { Some(hash(&calibration)?) } else { None },
        samples_sha256: super::quant::sha256_hex(samples_digest.as_bytes()),
        input_size: spec.size.map(|size| size.to_string()),
        threads: spec.thread_count(),
        edgedet: env!("CARGO_PKG_VERSION").to_string(),
        tract: TRACT_VERSION.to_string(),
        cpu: format!("{:?}", tract_linalg::isa::native()),
        winograd: super::winograd::switched_on(),
    })
}

/// `yolov4-tiny.1f2e3d4c5b6a7980.json`: one file per model and key, so a
/// reload with other settings does not throw away the previous choice.
fn cache_file_name(spec: &ModelSpec, key: &ChoiceKey) -> String {
    let stem = spec.path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let key_text = serde_json::to_string(key).unwrap_or_default();
    format!("{stem}.{}.json", &super::quant::sha256_hex(key_text.as_bytes())[..16])
}

/// Reads a cached choice, or `None` when there is none or it does not fit `key`.
fn read_cache(path: &Path, key: &ChoiceKey) -> Option<Choice> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            log::warn!("reading the precision choice {} failed: {error}; timing again", path.display());
            return None;
        }
    };
    match serde_json::from_str::<Choice>(&text) {
        Ok(choice) if choice.format != CACHE_FORMAT || choice.key != *key => None,
        // A choice must be one of the precisions that were timed and kept.
        Ok(choice)
            if !choice.inference_ms.contains_key(&choice.precision)
                || choice.rejected.contains_key(&choice.precision) =>
        {
            log::warn!(
                "{} chooses {}, which it did not time or rejected; timing again",
                path.display(),
                choice.precision
            );
            None
        }
        Ok(choice) => Some(Choice { cached: true, ..choice }),
        Err(error) => {
            log::warn!("{} is not a precision choice ({error}); timing again", path.display());
            None
        }
    }
}

/// Writes the choice through a temporary file, so a crash never leaves half a file.
fn write_cache(path: &Path, choice: &Choice) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(
        &mut file,
        serde_json::to_string_pretty(choice).map_err(std::io::Error::other)?.as_bytes(),
    )?;
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// One candidate's timing and detections on the samples.
struct Run {
    median_ms: f64,
    detections: Vec<Vec<Detection>>,
    /// The detections before NMS, which tell a near-tie from a disagreement; kept for f32 only.
    before_nms: Vec<Vec<Detection>>,
}

/// Loads and times every candidate and compares its detections with f32's.
fn measure(spec: &ModelSpec, sample_paths: &[PathBuf], key: ChoiceKey) -> Result<Choice, ModelError> {
    let mut rejected = BTreeMap::new();
    let mut samples: Vec<(String, RgbImage)> = Vec::new();
    for path in sample_paths {
        match load_image(path) {
            Ok(image) => samples.push((path.display().to_string(), image)),
            Err(error) => log::warn!("precision auto: skipping sample {}: {error:#}", path.display()),
        }
    }

    let mut candidates = vec![Precision::F32];
    if !precision::cpu_has_fp16() {
        rejected.insert(Precision::F16, "this CPU has no FP16 arithmetic".to_string());
    } else {
        candidates.push(Precision::F16);
    }
    if spec.is_onnx() {
        rejected.insert(Precision::Int8, "int8 needs a darknet cfg and weights".to_string());
    } else if key.calibration_sha256.is_none() {
        let calibration = spec.quantization_path();
        rejected.insert(Precision::Int8, format!("no calibration {} (edgedet quantize)", calibration.display()));
    } else {
        candidates.push(Precision::Int8);
    }
    if samples.is_empty() {
        let dir = spec.samples_dir();
        for precision in candidates.drain(1..) {
            rejected.insert(precision, format!("no sample images in {} to check it against f32", dir.display()));
        }
    }

    // f32 is the reference: its failure is the model's failure.
    // With f32 alone there is nothing to compare, so its samples are not run.
    let compared = if candidates.len() > 1 { samples.as_slice() } else { &[] };
    let reference = run_candidate(spec, Precision::F32, compared, None)?
        .ok_or_else(|| ModelError::Inference(anyhow::anyhow!("f32 gave up timing without a limit")))?;
    let rule = AgreementRule { nms_threshold: DetectorOptions::default().nms_threshold, ..AgreementRule::default() };
    let mut inference_ms = BTreeMap::from([(Precision::F32, reference.median_ms)]);
    let mut chosen = (Precision::F32, reference.median_ms);

    for &precision in &candidates[1..] {
        let run = match run_candidate(spec, precision, &samples, Some(chosen.1 * GIVE_UP_FACTOR)) {
            Ok(Some(run)) => run,
            Ok(None) => {
                rejected
                    .insert(precision, format!("its first inference took over {GIVE_UP_FACTOR}× {:.1} ms", chosen.1));
                continue;
            }
            Err(error) => {
                rejected.insert(precision, format!("failed: {error}"));
                continue;
            }
        };
        inference_ms.insert(precision, run.median_ms);
        let disagreement = samples.iter().enumerate().find_map(|(index, (path, _))| {
            let found = agreement::compare(
                &rule,
                &reference.detections[index],
                &reference.before_nms[index],
                &run.detections[index],
            );
            (!found.agrees(&rule)).then(|| {
                let failures = found.failures.join("; ");
                format!("disagrees with f32 on {path}: {} missing or extra {failures}", found.unmatched)
            })
        });
        match disagreement {
            Some(why) => {
                rejected.insert(precision, why);
            }
            None if run.median_ms < chosen.1 => chosen = (precision, run.median_ms),
            None => {}
        }
    }
    Ok(Choice { format: CACHE_FORMAT.to_string(), key, precision: chosen.0, inference_ms, rejected, cached: false })
}

/// Loads `spec` in `precision`, times it on the first sample (or on a grey
/// frame when `samples` is empty) and detects on every sample. Returns `None`
/// when the untimed first inference takes longer than `give_up_ms`.
fn run_candidate(
    spec: &ModelSpec,
    precision: Precision,
    samples: &[(String, RgbImage)],
    give_up_ms: Option<f64>,
) -> Result<Option<Run>, ModelError> {
    let fixed = ModelSpec { precision: precision.into(), ..spec.clone() };
    let model = Arc::new(Model::load_candidate(&fixed)?);
    let meta = model.meta();
    let mode = if meta.letter_box { ResizeMode::Letterbox } else { ResizeMode::Stretch };
    let grey = RgbImage::from_pixel(meta.width, meta.height, image::Rgb([127, 127, 127]));
    let timed = samples.first().map_or(&grey, |(_, image)| image);
    let input = prepare_input(timed, meta.width, meta.height, mode);
    let started = Instant::now();
    model.run(&input)?;
    if give_up_ms.is_some_and(|limit| started.elapsed().as_secs_f64() * 1000.0 > limit) {
        return Ok(None);
    }
    let mut times = Vec::with_capacity(TIMED_RUNS);
    for _ in 0..TIMED_RUNS {
        let started = Instant::now();
        model.run(&input)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let detect_all = |options: DetectorOptions| -> Result<Vec<Vec<Detection>>, ModelError> {
        let detector = Detector::new(Arc::clone(&model), options);
        samples.iter().map(|(_, image)| detector.detect(image).map(|found| found.detections)).collect()
    };
    let detections = detect_all(DetectorOptions::default())?;
    let before_nms = match precision {
        Precision::F32 => detect_all(DetectorOptions { nms_threshold: 1.0, ..DetectorOptions::default() })?,
        _ => Vec::new(),
    };
    Ok(Some(Run { median_ms: times[TIMED_RUNS / 2], detections, before_nms }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_timings_read_back_exactly() {
        let key = ChoiceKey {
            model_sha256: "0".repeat(64),
            weights_sha256: None,
            calibration_sha256: None,
            samples_sha256: "1".repeat(64),
            input_size: None,
            threads: 1,
            edgedet: "0.1.0".into(),
            tract: TRACT_VERSION.into(),
            cpu: "x86_64".into(),
            winograd: true,
        };
        // serde_json without `float_roundtrip` read this value back one unit
        // in the last place off, and a cached choice then differed from the timed one.
        let timings = [(Precision::F32, 176.236534), (Precision::Int8, 377.515_861_999_999_97)];
        let choice = Choice {
            format: CACHE_FORMAT.into(),
            key: key.clone(),
            precision: Precision::F32,
            inference_ms: timings.into_iter().collect(),
            rejected: BTreeMap::new(),
            cached: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("choice.json");

        write_cache(&path, &choice).unwrap();
        let read = read_cache(&path, &key).expect("the cached choice");

        assert!(read.cached);
        assert_eq!(read.inference_ms, choice.inference_ms);
    }
}
