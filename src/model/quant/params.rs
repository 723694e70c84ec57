//! From calibrated value ranges to the scale and zero point of every int8 tensor.
//!
//! Activations are asymmetric i8: `real = (q − zero_point) · scale`, with the
//! real 0 exactly representable, because convolution padding and max-pool
//! borders use the zero point as their "0". Weights are symmetric, −127..127
//! with zero point 0, which keeps tract's fused int8 matrix product free of the
//! weight-zero-point correction terms.
//!
//! Some tensors must share parameters: the inputs of a concatenating route
//! and its output (concatenation copies bytes), and a max-pool, upsample or
//! channel slice with its input. [`TensorParams::derive`] unites those with a
//! union-find over layer outputs and gives each group the union of its ranges.

use crate::model::darknet::layers::{Activation, LayerKind, Network};
use crate::model::rounding::round_to_i32;

use super::QuantError;

/// Scale and zero point of one int8 tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
}

/// The network input: RGB 0..1 stored as `round(255 · x) − 128`, which is exact
/// because the preprocessing produces multiples of 1/255.
pub const INPUT_PARAMS: QParams = QParams { scale: 1.0 / 255.0, zero_point: -128 };

/// Quantizes a network input with [`INPUT_PARAMS`], as [`QParams::quantize`]
/// does except that a value exactly halfway between two levels rounds to the
/// even one.
///
/// Every int8 inference converts its 519,168 input values (416×416 RGB) on
/// the calling thread. `QParams::quantize` calls the C library's `roundf` once
/// per value on x86_64 without SSE4.1. Here [`round_to_i32`] rounds and the
/// clamp is done on integers, so the loop vectorises, and yolov4-tiny int8
/// went from 42.3 to 37.5 ms on one thread of the README's AMD EPYC.
pub fn quantize_input(values: &[f32]) -> Vec<i8> {
    let zero_point = INPUT_PARAMS.zero_point;
    values
        .iter()
        .map(|&real| {
            // `round_to_i32` is exact within ±2^22, and the integer clamp
            // below then saturates as `quantize` does.
            let scaled = (real / INPUT_PARAMS.scale).clamp(-4096.0, 4096.0);
            (round_to_i32(scaled) + zero_point).clamp(-128, 127) as i8
        })
        .collect()
}

/// The smallest range width a tensor gets, so that a layer calibrated on
/// constant output (a dead channel group) still has a finite scale.
const MIN_RANGE: f32 = 1e-6;

impl QParams {
    /// Parameters whose 256 levels cover `[min, max]` extended to contain 0.
    pub fn covering(min: f32, max: f32) -> QParams {
        let low = min.min(0.0);
        let high = max.max(0.0).max(low + MIN_RANGE);
        let scale = (high - low) / 255.0;
        let zero_point = (-128.0 - low / scale).round().clamp(-128.0, 127.0) as i32;
        QParams { scale, zero_point }
    }

    pub fn quantize(self, real: f32) -> i8 {
        ((real / self.scale).round() + self.zero_point as f32).clamp(-128.0, 127.0) as i8
    }

    pub fn dequantize(self, q: i8) -> f32 {
        (i32::from(q) - self.zero_point) as f32 * self.scale
    }
}

/// A closed range of real values seen during calibration.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ValueRange {
    pub min: f32,
    pub max: f32,
}

impl ValueRange {
    pub fn union(self, other: ValueRange) -> ValueRange {
        ValueRange { min: self.min.min(other.min), max: self.max.max(other.max) }
    }
}

/// Applies a darknet activation to one real value.
pub fn activate(activation: Activation, x: f32) -> f32 {
    match activation {
        Activation::Linear => x,
        Activation::Leaky => {
            if x > 0.0 {
                x
            } else {
                0.1 * x
            }
        }
        Activation::Relu => x.max(0.0),
        Activation::Logistic => 1.0 / (1.0 + (-x).exp()),
        Activation::Swish => x / (1.0 + (-x).exp()),
        Activation::Mish => x * softplus(x).tanh(),
    }
}

/// `ln(1 + eˣ)` without overflow for large x.
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Builds the i8 → i8 table of an activation between two quantized tensors,
/// indexed by the input's byte (`table[b] = f(b as i8)`), as tract's
/// lookup-table op reads it.
pub fn activation_table(activation: Activation, input: QParams, output: QParams) -> [u8; 256] {
    std::array::from_fn(|byte| {
        let q = byte as u8 as i8;
        output.quantize(activate(activation, input.dequantize(q))) as u8
    })
}

/// Kind of value that calibration measures at a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The convolution's output before its activation.
    Convolution,
    /// The sum of a shortcut before its activation.
    Shortcut,
}

/// Returns the probe of layer `index`, or `None` for layers whose output is
/// derived from other layers' (routes, pools, upsampling) or that are heads.
pub fn probe_of(network: &Network, index: usize) -> Option<Probe> {
    match network.layers[index].kind {
        LayerKind::Convolution(_) => Some(Probe::Convolution),
        LayerKind::Shortcut { .. } => Some(Probe::Shortcut),
        _ => None,
    }
}

/// Checks whether convolution `index` feeds a YOLO head directly. Such layers keep
/// 32-bit accumulators and per-channel weight scales, and their output is
/// float, so the decoder gets no int8 rounding error.
pub fn is_head(network: &Network, index: usize) -> bool {
    matches!(network.layers.get(index + 1).map(|l| &l.kind), Some(LayerKind::Yolo(_)))
}

/// The parameters of every layer's int8 tensors.
#[derive(Clone, Debug)]
pub struct TensorParams {
    /// Per layer: the parameters of its output (after its activation);
    /// `None` for heads and YOLO layers, whose outputs stay float.
    pub output: Vec<Option<QParams>>,
    /// Per layer with a probe: the parameters of the value before its
    /// activation, which the convolution or addition writes. Equal to
    /// `output` for linear layers.
    pub pre_activation: Vec<Option<QParams>>,
}

impl TensorParams {
    /// Derives every tensor's parameters from the calibrated pre-activation
    /// ranges (`ranges[i]` for each layer with a [`Probe`]).
    ///
    /// # Errors
    /// A layer with a probe lacks its range, or the network shares a tensor
    /// between a head and another layer, which the int8 graph cannot express.
    pub fn derive(network: &Network, ranges: &[Option<ValueRange>]) -> Result<TensorParams, QuantError> {
        let count = network.layers.len();
        let mut groups = UnionFind::new(count);
        let mut own_range: Vec<Option<ValueRange>> = vec![None; count];
        let mut pre_activation = vec![None; count];

        for (index, layer) in network.layers.iter().enumerate() {
            match &layer.kind {
                LayerKind::Convolution(_) | LayerKind::Shortcut { .. } => {
                    let range = ranges.get(index).copied().flatten().ok_or_else(|| QuantError::MissingRange {
                        file: network.file.clone(),
                        layer: index,
                        line: layer.line,
                    })?;
                    if is_head(network, index) {
                        continue;
                    }
                    let activation = activation_of(&layer.kind);
                    let z = QParams::covering(range.min, range.max);
                    pre_activation[index] = Some(z);
                    own_range[index] =
                        Some(if activation == Activation::Linear { range } else { activated_range(activation, z) });
                }
                LayerKind::MaxPool { .. } | LayerKind::Upsample { .. } => groups.unite(index, index - 1),
                LayerKind::Route { inputs, .. } => {
                    for &input in inputs {
                        if is_head(network, input) {
                            return Err(QuantError::Unsupported {
                                file: network.file.clone(),
                                line: layer.line,
                                message: format!("the route reads layer {input}, which feeds a YOLO head"),
                            });
                        }
                        groups.unite(index, input);
                    }
                }
                LayerKind::Yolo(_) => {}
            }
        }

        let mut group_range: Vec<Option<ValueRange>> = vec![None; count];
        for (index, range) in own_range.iter().enumerate() {
            if let Some(range) = *range {
                let root = groups.find(index);
                group_range[root] = Some(group_range[root].map_or(range, |r| r.union(range)));
            }
        }
        let output: Vec<Option<QParams>> = (0..count)
            .map(|index| {
                let is_float = matches!(network.layers[index].kind, LayerKind::Yolo(_)) || is_head(network, index);
                if is_float {
                    return None;
                }
                group_range[groups.find(index)].map(|r| QParams::covering(r.min, r.max))
            })
            .collect();

        // A linear layer writes its output directly, so its pre-activation
        // parameters are those of its (possibly united) output.
        for index in 0..count {
            if pre_activation[index].is_some() && activation_of(&network.layers[index].kind) == Activation::Linear {
                pre_activation[index] = output[index];
            }
        }
        Ok(TensorParams { output, pre_activation })
    }
}

fn activation_of(kind: &LayerKind) -> Activation {
    match kind {
        LayerKind::Convolution(conv) => conv.activation,
        LayerKind::Shortcut { activation, .. } => *activation,
        _ => Activation::Linear,
    }
}

/// Computes the range of `f(x)` over the 256 levels of `input`.
fn activated_range(activation: Activation, input: QParams) -> ValueRange {
    (-128..=127i8).map(|q| activate(activation, input.dequantize(q))).fold(
        ValueRange { min: f32::INFINITY, max: f32::NEG_INFINITY },
        |r, v| ValueRange { min: r.min.min(v), max: r.max.max(v) },
    )
}

struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(count: usize) -> UnionFind {
        UnionFind { parent: (0..count).collect() }
    }

    fn find(&mut self, mut index: usize) -> usize {
        while self.parent[index] != index {
            self.parent[index] = self.parent[self.parent[index]];
            index = self.parent[index];
        }
        index
    }

    fn unite(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.parent[b] = a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_exact_and_the_range_is_covered() {
        let params = QParams::covering(-1.5, 6.0);
        assert_eq!(params.dequantize(params.quantize(0.0)), 0.0);
        assert!((params.dequantize(-128) - -1.5).abs() <= params.scale / 2.0 + 1e-6);
        assert!((params.dequantize(127) - 6.0).abs() <= params.scale / 2.0 + 1e-6);
    }

    #[test]
    fn covering_extends_positive_range_to_zero() {
        let params = QParams::covering(2.0, 10.0);
        assert_eq!(params.zero_point, -128);
        assert!((params.scale - 10.0 / 255.0).abs() < 1e-7);
    }

    #[test]
    fn input_parameters_reproduce_the_preprocessed_pixels() {
        for pixel in 0..=255u8 {
            let real = f32::from(pixel) / 255.0;
            let q = INPUT_PARAMS.quantize(real);
            assert_eq!(i32::from(q), i32::from(pixel) - 128);
            assert!((INPUT_PARAMS.dequantize(q) - real).abs() < 1e-6);
        }
    }

    #[test]
    fn input_quantization_matches_quantize() {
        let mut values: Vec<f32> = (0..=255u8).map(|pixel| f32::from(pixel) / 255.0).collect();
        // Interpolated pixels, darknet's grey letterbox fill and values beyond
        // the range, which saturate.
        values.extend((0..20_000).map(|i| i as f32 * 0.000_051_3 - 0.013));
        values.extend([0.5, -1.0, 2.0, -1e30, 1e30, f32::MAX, f32::MIN]);
        let levels = quantize_input(&values);
        for (real, level) in values.iter().zip(&levels) {
            assert_eq!(*level, INPUT_PARAMS.quantize(*real), "{real}");
        }
        assert_eq!(
            levels[..256].iter().map(|&q| i32::from(q) + 128).collect::<Vec<_>>(),
            (0..=255).collect::<Vec<_>>()
        );
    }

    #[test]
    fn input_quantization_rounds_halves_to_even() {
        let mut ties = 0;
        for level in 0..255 {
            let real = (level as f32 + 0.5) * INPUT_PARAMS.scale;
            let scaled = real / INPUT_PARAMS.scale;
            if scaled.fract().abs() != 0.5 {
                continue;
            }
            ties += 1;
            let even = if scaled.floor() as i32 % 2 == 0 { scaled.floor() } else { scaled.ceil() };
            assert_eq!(i32::from(quantize_input(&[real])[0]), even as i32 - 128, "{real}");
        }
        assert!(ties > 50, "only {ties} exact halves");
    }

    #[test]
    fn leaky_table_maps_each_level_through_the_activation() {
        let input = QParams::covering(-4.0, 4.0);
        let output = QParams::covering(-0.4, 4.0);
        let table = activation_table(Activation::Leaky, input, output);
        for q in [-128i8, -50, 0, 1, 60, 127] {
            let expected = output.quantize(activate(Activation::Leaky, input.dequantize(q)));
            assert_eq!(table[q as u8 as usize] as i8, expected, "level {q}");
        }
        assert_eq!(table[input.zero_point as i8 as u8 as usize] as i8 as i32, output.zero_point);
    }

    #[test]
    fn mish_range_includes_its_negative_dip() {
        let range = activated_range(Activation::Mish, QParams::covering(-5.0, 5.0));
        assert!((range.min - -0.3088).abs() < 0.01, "{range:?}");
        assert!((range.max - 5.0).abs() < 0.05, "{range:?}");
    }
}
