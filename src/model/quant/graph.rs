//! The int8 network as a tract graph, built layer by layer from the darknet network.
//!
//! The graph is built with tract-core's ops directly rather than through ONNX
//! `QLinearConv` or Q/DQ nodes, because tract 0.23 turns Q/DQ convolutions
//! into float convolutions. It also fuses requantization into its integer
//! matrix kernels only for per-tensor scales, int8 weights with zero point 0
//! and int8 activations. Every hidden convolution here has exactly that form, so after
//! optimisation it is one integer matrix product whose kernel adds the bias,
//! rescales, adds the output zero point and saturates to i8.
//!
//! Activations become 256-entry lookup tables between two i8 tensors. The
//! convolutions that feed YOLO heads keep per-channel weight scales and 32-bit
//! accumulators, converted to float by one multiplication per channel, so the
//! boxes and scores are not rounded to 8 bits before decoding.

use tract_core::internal::*;
use tract_core::ops::array::{Slice, TypedConcat};
use tract_core::ops::cast::cast;
use tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec};
use tract_core::ops::math::mul;
use tract_core::ops::nn::{DataFormat, NearestUpsample};
use tract_core::ops::quant::lookup_table;

use super::add::QuantizedAdd;
use super::params::{activation_table, is_head, QParams, TensorParams, INPUT_PARAMS};
use super::QuantError;
use crate::model::darknet::layers::{Activation, Convolution, LayerKind, Network};
use crate::model::darknet::ConvParams;
use crate::model::rounding::round_to_i32;

/// Name of the graph's input, which takes `round(255 · x) − 128` as i8.
pub const INPUT_NAME: &str = "input";

/// Placement of the input zero point of each convolution.
///
/// tract subtracts `x0 · Σw` from every output when given the input zero point
/// `x0`, and for kernels above 1 M weights (many in yolov4) it recomputes
/// `Σw` on every run. Folding that constant into the bias instead is exact in
/// i32, but then tract's im2col would pad with 0 rather than with the zero
/// point. edgedet's own im2col ([`super::im2col`]) pads with the zero point,
/// so folding is only correct where that op replaces tract's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroPoints {
    /// `x0 = 0` for tract, `bias − x0 · Σw` in the bias, padding from [`Int8Graph::im2col_pads`].
    InBias,
    /// `x0` given to tract, which pads with it in its own im2col.
    ToTract,
}

/// The int8 graph and what its im2col nodes must pad with.
pub struct Int8Graph {
    pub model: TypedModel,
    /// For [`ZeroPoints::InBias`]: the name tract gives each convolution's
    /// im2col node (`{conv}.im2col`) and the zero point it must pad with.
    pub im2col_pads: Vec<(String, i8)>,
}

/// Builds the int8 graph of `network` with its float parameters (one per
/// convolution, in order) and the tensor parameters derived from calibration.
///
/// # Errors
/// A layer the int8 graph cannot express, named with its cfg line, or a tract
/// error while wiring.
pub fn build(
    network: &Network,
    conv_params: &[ConvParams],
    tensors: &TensorParams,
    zero_points: ZeroPoints,
) -> Result<Int8Graph, QuantError> {
    let mut builder = Builder { model: TypedModel::default(), network, tensors, zero_points, im2col_pads: Vec::new() };
    builder.wire_layers(conv_params).map_err(|source| match source.downcast::<QuantError>() {
        Ok(error) => error,
        Err(source) => QuantError::Graph(source),
    })?;
    Ok(Int8Graph { model: builder.model, im2col_pads: builder.im2col_pads })
}

struct Builder<'a> {
    model: TypedModel,
    network: &'a Network,
    tensors: &'a TensorParams,
    zero_points: ZeroPoints,
    im2col_pads: Vec<(String, i8)>,
}

/// An i8 tensor of the graph with its parameters.
#[derive(Clone, Copy)]
struct Quantized {
    outlet: OutletId,
    params: QParams,
}

impl Builder<'_> {
    fn wire_layers(&mut self, conv_params: &[ConvParams]) -> TractResult<()> {
        let network = self.network;
        let shape = [1, network.channels, network.height, network.width];
        let input = self.model.add_source(INPUT_NAME, i8::fact(shape))?;
        let input = Quantized { outlet: input, params: INPUT_PARAMS };

        // Per layer, its i8 output; `None` for heads and YOLO layers.
        let mut outputs: Vec<Option<Quantized>> = Vec::with_capacity(network.layers.len());
        let mut heads = Vec::new();
        let mut conv_params = conv_params.iter();
        for (index, layer) in network.layers.iter().enumerate() {
            let name = format!("l{index}");
            let unsupported =
                |message: String| QuantError::Unsupported { file: network.file.clone(), line: layer.line, message };
            let quantized_input = |of: usize| -> TractResult<Quantized> {
                outputs.get(of).copied().flatten().ok_or_else(|| {
                    unsupported(format!("it reads layer {of}, whose output is the float input of a YOLO head")).into()
                })
            };
            let previous = if index == 0 { Ok(input) } else { quantized_input(index - 1) };
            let output = self.tensors.output[index];

            let wired = match &layer.kind {
                LayerKind::Convolution(conv) => {
                    let params =
                        conv_params.next().ok_or_else(|| unsupported("the weights end before this layer".into()))?;
                    if is_head(network, index) {
                        heads.push(self.wire_head(&name, previous?, conv, params)?);
                        None
                    } else {
                        let pre = self.tensors.pre_activation[index]
                            .ok_or_else(|| unsupported("no calibrated range".into()))?;
                        let z = self.wire_conv(&name, previous?, conv, params, pre)?;
                        Some(self.wire_activation(&name, z, conv.activation, output)?)
                    }
                }
                LayerKind::Shortcut { from, activation } => {
                    let pre =
                        self.tensors.pre_activation[index].ok_or_else(|| unsupported("no calibrated range".into()))?;
                    let (a, b) = (previous?, quantized_input(*from)?);
                    let op = QuantizedAdd { a: a.params, b: b.params, output: pre };
                    let sum = self.model.wire_node(format!("{name}.add"), op, &[a.outlet, b.outlet])?[0];
                    Some(self.wire_activation(&name, Quantized { outlet: sum, params: pre }, *activation, output)?)
                }
                LayerKind::Route { inputs, groups, group_id } => {
                    let mut parts = Vec::with_capacity(inputs.len());
                    for &from in inputs {
                        let source = quantized_input(from)?;
                        if *groups == 1 {
                            parts.push(source.outlet);
                            continue;
                        }
                        let channels = network.layers[from].output.channels / groups;
                        let start = channels * group_id;
                        let slice = Slice::new(1, start, start + channels);
                        parts.push(self.model.wire_node(format!("{name}.slice{from}"), slice, &[source.outlet])?[0]);
                    }
                    let outlet = if parts.len() == 1 {
                        parts[0]
                    } else {
                        self.model.wire_node(format!("{name}.concat"), TypedConcat::new(1), &parts)?[0]
                    };
                    Some(Quantized { outlet, params: shared(output, unsupported)? })
                }
                LayerKind::MaxPool { size, stride_y, stride_x, pad_begin, pad_end } => {
                    let x = previous?;
                    let channels = layer.output.channels;
                    let pool_spec = PoolSpec {
                        data_format: DataFormat::NCHW,
                        kernel_shape: tvec![*size, *size],
                        padding: PaddingSpec::Explicit(
                            tvec![pad_begin[0], pad_begin[1]],
                            tvec![pad_end[0], pad_end[1]],
                        ),
                        dilations: None,
                        strides: Some(tvec![*stride_y, *stride_x]),
                        input_channels: channels,
                        output_channels: channels,
                    };
                    let op = MaxPool { pool_spec, with_index_outputs: None };
                    let outlet = self.model.wire_node(format!("{name}.maxpool"), op, &[x.outlet])?[0];
                    Some(Quantized { outlet, params: x.params })
                }
                LayerKind::Upsample { stride } => {
                    let x = previous?;
                    let op = NearestUpsample { scales: tvec![1, 1, *stride, *stride] };
                    let outlet = self.model.wire_node(format!("{name}.upsample"), op, &[x.outlet])?[0];
                    Some(Quantized { outlet, params: x.params })
                }
                LayerKind::Yolo(_) => None,
            };
            outputs.push(wired);
        }
        self.model.select_output_outlets(&heads)?;
        Ok(())
    }

    /// Wires a hidden convolution: i8 in, i8 out at the pre-activation
    /// parameters `z`, with all requantization inside tract's integer kernel.
    fn wire_conv(
        &mut self,
        name: &str,
        x: Quantized,
        conv: &Convolution,
        params: &ConvParams,
        z: QParams,
    ) -> TractResult<Quantized> {
        let weight_scale = symmetric_scale(&params.kernel);
        let kernel: Vec<i8> = params.kernel.iter().map(|&w| quantize_weight(w, weight_scale)).collect();
        let bias_scale = weight_scale * x.params.scale;
        let bias: Vec<i32> = params.bias.iter().map(|&b| (b / bias_scale).round() as i32).collect();
        let (bias, x0) = self.place_zero_point(name, &kernel, bias, x.params.zero_point);
        let inputs = [
            x.outlet,
            self.kernel_const(name, conv, kernel)?,
            self.model.add_const(format!("{name}.bias"), tensor1(&bias))?,
            self.model.add_const(format!("{name}.x0"), tensor0(x0))?,
            self.model.add_const(format!("{name}.x_scale"), tensor0(x.params.scale))?,
            self.model.add_const(format!("{name}.k0"), tensor0(0i32))?,
            self.model.add_const(format!("{name}.k_scale"), tensor0(weight_scale))?,
            self.model.add_const(format!("{name}.y0"), tensor0(z.zero_point))?,
            self.model.add_const(format!("{name}.y_scale"), tensor0(z.scale))?,
        ];
        let op = Conv {
            pool_spec: pool_spec(conv),
            kernel_fmt: KernelFormat::OIHW,
            group: conv.groups,
            q_params: Some(i8::datum_type()),
        };
        let outlet = self.model.wire_node(format!("{name}.conv"), op, &inputs)?[0];
        Ok(Quantized { outlet, params: z })
    }

    /// Wires a convolution that feeds a YOLO head: per-channel weight scales,
    /// i32 accumulators, then `acc · x_scale · w_scale[c]` as float.
    fn wire_head(
        &mut self,
        name: &str,
        x: Quantized,
        conv: &Convolution,
        params: &ConvParams,
    ) -> TractResult<OutletId> {
        let per_filter = params.kernel.len() / conv.filters;
        let mut kernel = Vec::with_capacity(params.kernel.len());
        let mut bias = Vec::with_capacity(conv.filters);
        let mut output_scale = Vec::with_capacity(conv.filters);
        for (weights, &b) in params.kernel.chunks(per_filter).zip(&params.bias) {
            let weight_scale = symmetric_scale(weights);
            kernel.extend(weights.iter().map(|&w| quantize_weight(w, weight_scale)));
            let scale = weight_scale * x.params.scale;
            bias.push((b / scale).round() as i32);
            output_scale.push(scale);
        }

        let (bias, x0) = self.place_zero_point(name, &kernel, bias, x.params.zero_point);
        let inputs = [
            x.outlet,
            self.kernel_const(name, conv, kernel)?,
            self.model.add_const(format!("{name}.bias"), tensor1(&bias))?,
            self.model.add_const(format!("{name}.x0"), tensor0(x0))?,
            self.model.add_const(format!("{name}.x_scale"), tensor0(1f32))?,
            self.model.add_const(format!("{name}.k0"), tensor0(0i32))?,
            self.model.add_const(format!("{name}.k_scale"), tensor0(1f32))?,
            self.model.add_const(format!("{name}.y0"), tensor0(0i32))?,
            self.model.add_const(format!("{name}.y_scale"), tensor0(1f32))?,
        ];

        let op = Conv {
            pool_spec: pool_spec(conv),
            kernel_fmt: KernelFormat::OIHW,
            group: conv.groups,
            q_params: Some(i32::datum_type()),
        };
        let accumulators = self.model.wire_node(format!("{name}.conv"), op, &inputs)?[0];

        let float = self.model.wire_node(format!("{name}.float"), cast(f32::datum_type()), &[accumulators])?[0];
        let scale = tensor1(&output_scale).into_shape(&[1, conv.filters, 1, 1])?;
        let scale = self.model.add_const(format!("{name}.scale"), scale)?;
        Ok(self.model.wire_node(format!("{name}.head"), mul(), &[float, scale])?[0])
    }

    /// Wires the activation as a lookup table from `z` to the layer's output parameters.
    fn wire_activation(
        &mut self,
        name: &str,
        z: Quantized,
        activation: Activation,
        output: Option<QParams>,
    ) -> TractResult<Quantized> {
        let output = output.ok_or_else(|| format_err!("{name} has no output parameters"))?;
        if activation == Activation::Linear {
            ensure!(output == z.params, "{name}: a linear layer's output must keep its pre-activation parameters");
            return Ok(z);
        }
        let table = activation_table(activation, z.params, output);
        let lut = lookup_table(tract_linalg::routines::lut_u8(&table)?);
        let outlet = self.model.wire_node(format!("{name}.activation"), lut, &[z.outlet])?[0];
        Ok(Quantized { outlet, params: output })
    }

    /// Computes the bias and the `x0` to give tract for a convolution whose
    /// input has zero point `zero_point`, as [`ZeroPoints`] describes.
    fn place_zero_point(&mut self, name: &str, kernel: &[i8], bias: Vec<i32>, zero_point: i32) -> (Vec<i32>, i32) {
        match self.zero_points {
            ZeroPoints::ToTract => (bias, zero_point),
            ZeroPoints::InBias => {
                let per_filter = kernel.len() / bias.len();
                let folded = kernel
                    .chunks(per_filter)
                    .zip(&bias)
                    .map(|(weights, &b)| b - zero_point * weights.iter().map(|&w| i32::from(w)).sum::<i32>())
                    .collect();
                // The zero point came from QParams, which keeps it within i8.
                self.im2col_pads.push((format!("{name}.conv.im2col"), zero_point as i8));
                (folded, 0)
            }
        }
    }

    fn kernel_const(&mut self, name: &str, conv: &Convolution, kernel: Vec<i8>) -> TractResult<OutletId> {
        let shape = [conv.filters, conv.input_channels / conv.groups, conv.size, conv.size];
        let tensor = tensor1(&kernel).into_shape(&shape)?;
        self.model.add_const(format!("{name}.weight"), tensor)
    }
}

/// Returns the parameters a route shares with its inputs.
fn shared(output: Option<QParams>, unsupported: impl Fn(String) -> QuantError) -> Result<QParams, QuantError> {
    output.ok_or_else(|| unsupported("the route has no int8 parameters".into()))
}

fn pool_spec(conv: &Convolution) -> PoolSpec {
    let pad = conv.padding;
    PoolSpec {
        data_format: DataFormat::NCHW,
        kernel_shape: tvec![conv.size, conv.size],
        padding: PaddingSpec::Explicit(tvec![pad, pad], tvec![pad, pad]),
        dilations: None,
        strides: Some(tvec![conv.stride, conv.stride]),
        input_channels: conv.input_channels,
        output_channels: conv.filters,
    }
}

/// Computes the scale that maps the largest weight magnitude to 127.
fn symmetric_scale(weights: &[f32]) -> f32 {
    let largest = weights.iter().fold(0f32, |m, w| m.max(w.abs()));
    if largest > 0.0 {
        largest / 127.0
    } else {
        1.0
    }
}

/// Rounds `weight / scale` to the nearest integer, ties to even, within −127..127.
///
/// Rounding the 64 million weights of yolov4 with `f32::round`, a library call
/// on x86_64 CPUs without SSE4.1, took 0.1 s of its load; [`round_to_i32`] does not call it.
fn quantize_weight(weight: f32, scale: f32) -> i8 {
    round_to_i32((weight / scale).clamp(-127.0, 127.0)) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_to_nearest_even() {
        let cases = [
            (2.5, 2),
            (3.5, 4),
            (-2.5, -2),
            (-3.5, -4),
            (0.49999997, 0),
            (-0.49999997, 0),
            (0.50000006, 1),
            (126.6, 127),
            (-126.4, -126),
        ];
        for (scaled, expected) in cases {
            assert_eq!(quantize_weight(scaled, 1.0), expected, "{scaled}");
        }
    }

    #[test]
    fn weights_saturate_at_127() {
        assert_eq!(quantize_weight(200.0, 1.0), 127);
        assert_eq!(quantize_weight(-1000.0, 1.0), -127);
        assert_eq!(quantize_weight(0.3, 0.002), 127);
        let largest = 0.66;
        assert_eq!(quantize_weight(largest, symmetric_scale(&[0.1, -largest, 0.2])), 127);
        assert_eq!(quantize_weight(-largest, symmetric_scale(&[0.1, -largest, 0.2])), -127);
    }
}
