//! Calibration: the range of every value the int8 network will store, measured
//! by running the float network on real frames.
//!
//! The float network is tract's plan of the same ONNX graph the f32 model runs,
//! with the value before each convolution's or shortcut's activation made an
//! output, so tract cannot fuse it away. Ranges are the minimum and maximum
//! over all frames, the method of ONNX Runtime's default static quantizer.
//! It is sensitive to rare outliers; a percentile or MSE-optimal clipping from
//! histograms would use the 8 bits better if a model ever needs it.

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use super::params::{probe_of, Probe, ValueRange};
use super::QuantError;
use crate::model::darknet::to_onnx;
use crate::model::darknet::Network;
use crate::preprocess::NetworkInput;

/// Runs the float network with every probed value as an output and keeps their ranges.
pub struct Calibrator {
    plan: Arc<TypedRunnableModel>,
    shape: [usize; 4],
    /// Layer index of each plan output.
    probed_layers: Vec<usize>,
    ranges: Vec<Option<ValueRange>>,
    frames: usize,
}

impl Calibrator {
    /// Prepares the probing plan of `network`, whose ONNX graph is `proto`.
    ///
    /// # Errors
    /// tract rejects the graph with the probes as outputs.
    pub fn new(proto: &ModelProto, network: &Network) -> Result<Calibrator, QuantError> {
        let mut probed_layers = Vec::new();
        let mut names = Vec::new();
        for index in 0..network.layers.len() {
            let name = match probe_of(network, index) {
                Some(Probe::Convolution) => to_onnx::conv_output_name(index),
                Some(Probe::Shortcut) => to_onnx::shortcut_output_name(index),
                None => continue,
            };
            probed_layers.push(index);
            names.push(name);
        }
        let shape = [1, network.channels, network.height, network.width];
        let plan = probing_plan(proto, &names, shape).map_err(QuantError::Graph)?;
        Ok(Calibrator { plan, shape, probed_layers, ranges: vec![None; network.layers.len()], frames: 0 })
    }

    /// Runs one frame and widens the ranges by what it produced.
    ///
    /// # Errors
    /// The input has another size than the network, or tract fails.
    pub fn observe(&mut self, input: &NetworkInput) -> Result<(), QuantError> {
        let tensor = Tensor::from_shape(&self.shape, &input.data).map_err(QuantError::Graph)?;
        let outputs = self.plan.run(tvec!(tensor.into())).map_err(QuantError::Graph)?;
        for (output, &layer) in outputs.iter().zip(&self.probed_layers) {
            let values = output.try_as_plain_ram().and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec));
            let values = values.map_err(QuantError::Graph)?;
            let seen = values.iter().fold(ValueRange { min: f32::INFINITY, max: f32::NEG_INFINITY }, |r, &v| {
                ValueRange { min: r.min.min(v), max: r.max.max(v) }
            });
            if !seen.min.is_finite() || !seen.max.is_finite() {
                return Err(QuantError::NotFinite { layer });
            }
            self.ranges[layer] = Some(self.ranges[layer].map_or(seen, |r| r.union(seen)));
        }
        self.frames += 1;
        Ok(())
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Returns the range of each layer with a probe, and `None` for the other layers.
    pub fn ranges(&self) -> &[Option<ValueRange>] {
        &self.ranges
    }
}

fn probing_plan(proto: &ModelProto, names: &[String], shape: [usize; 4]) -> TractResult<Arc<TypedRunnableModel>> {
    let mut model = tract_onnx::onnx().model_for_proto_model(proto)?;
    model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))?;
    model.select_outputs_by_name(names)?;
    model.into_optimized()?.into_runnable()
}
