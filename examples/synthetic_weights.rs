//! Writes a synthetic darknet weights file for a cfg, for timing architectures
//! whose trained weights cannot be downloaded (the full yolov4 in `edgedet bench`).
//! The values are those the tests use: deterministic, and sized so that
//! activations stay of order 1 through the whole network.
//!
//! ```text
//! cargo run --release --example synthetic_weights -- tests/fixtures/darknet/yolov4.cfg target/yolov4.weights
//! ```

#[path = "../tests/common/synthetic_weights.rs"]
#[allow(dead_code)]
mod synthetic_weights;

use std::path::PathBuf;
use std::process::ExitCode;

use synthetic_weights::{conv_roles, write_weights, HeaderVersion};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cfg, out] = args.as_slice() else {
        eprintln!("usage: synthetic_weights CFG OUT.weights");
        return ExitCode::from(2);
    };
    let (cfg, out) = (PathBuf::from(cfg), PathBuf::from(out));
    let result =
        std::fs::read_to_string(&cfg).map_err(|error| format!("reading {}: {error}", cfg.display())).and_then(|text| {
            let layout = edgedet::model::darknet::weights_layout(&cfg).map_err(|error| format!("{error}"))?;
            write_weights(&out, &layout, &conv_roles(&text), HeaderVersion::Seen64, 1)
                .map_err(|error| format!("writing {}: {error}", out.display()))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
