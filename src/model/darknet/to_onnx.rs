//! Writes a darknet network with its weights as an ONNX graph (opset 13).
//!
//! The darknet path loads through this graph too: tract reads the in-memory
//! ONNX, so what `export-onnx` writes is exactly what edgedet runs, and ONNX
//! Runtime can check it independently. Batch normalisation is already folded
//! into the convolutions by [`super::weights`].
//!
//! The layout: one input `input` (1×C×H×W, RGB, 0..1); one output per `[yolo]`
//! layer in cfg order, named `yolo0`, `yolo1`, …, holding the raw output of the
//! layer feeding it (before any YOLO-layer activation); the decoding metadata
//! as JSON under [`META_KEY`].

use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

use super::layers::{Activation, LayerKind, Network, Shape};
use super::weights::ConvParams;
use crate::model::meta::{ModelMeta, META_KEY};

/// ONNX opset the graph uses: the newest whose Resize and Slice forms both
/// tract 0.23 and common runtimes read without surprises.
pub const OPSET: i64 = 13;

/// Name of the graph input.
pub const INPUT_NAME: &str = "input";

/// Builds the ONNX model for `network` with `params` (one per convolution, in order).
pub fn build_model(network: &Network, params: &[ConvParams], meta: &ModelMeta) -> ModelProto {
    let mut graph = GraphBuilder::default();
    let input = Shape { channels: network.channels, height: network.height, width: network.width };
    graph.inputs.push(value_info(INPUT_NAME, input));

    let mut outputs: Vec<String> = Vec::with_capacity(network.layers.len());
    let mut params = params.iter();
    let mut heads = 0;
    for (index, layer) in network.layers.iter().enumerate() {
        let previous = if index == 0 { INPUT_NAME.to_string() } else { outputs[index - 1].clone() };
        let name = format!("l{index}");
        let output = match &layer.kind {
            LayerKind::Convolution(conv) => {
                let Some(param) = params.next() else { break };
                let kernel_name = graph.float_initializer(
                    &format!("{name}.weight"),
                    &[conv.filters, conv.input_channels / conv.groups, conv.size, conv.size],
                    &param.kernel,
                );
                let bias_name = graph.float_initializer(&format!("{name}.bias"), &[conv.filters], &param.bias);
                let pad = conv.padding as i64;
                let conv_out = graph.node(
                    "Conv",
                    &conv_output_name(index),
                    &[&previous, &kernel_name, &bias_name],
                    vec![
                        ints("kernel_shape", &[conv.size as i64, conv.size as i64]),
                        ints("strides", &[conv.stride as i64, conv.stride as i64]),
                        ints("pads", &[pad, pad, pad, pad]),
                        ints("dilations", &[1, 1]),
                        int("group", conv.groups as i64),
                    ],
                );
                graph.activation(&name, conv_out, conv.activation)
            }
            LayerKind::Route { inputs, groups, group_id } => {
                let parts: Vec<String> = inputs
                    .iter()
                    .map(|&i| {
                        if *groups == 1 {
                            return outputs[i].clone();
                        }
                        let channels = (network.layers[i].output.channels / groups) as i64;
                        let start = channels * *group_id as i64;
                        graph.channel_slice(&format!("{name}.slice{i}"), &outputs[i], start, start + channels)
                    })
                    .collect();
                if parts.len() == 1 {
                    parts[0].clone()
                } else {
                    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                    graph.node("Concat", &format!("{name}.concat"), &refs, vec![int("axis", 1)])
                }
            }
            LayerKind::Shortcut { from, activation } => {
                let sum = graph.node("Add", &shortcut_output_name(index), &[&previous, &outputs[*from]], vec![]);
                graph.activation(&name, sum, *activation)
            }
            LayerKind::MaxPool { size, stride_y, stride_x, pad_begin, pad_end } => {
                let pads = [pad_begin[0], pad_begin[1], pad_end[0], pad_end[1]].map(|p| p as i64);
                graph.node(
                    "MaxPool",
                    &format!("{name}.maxpool"),
                    &[&previous],
                    vec![
                        ints("kernel_shape", &[*size as i64, *size as i64]),
                        ints("strides", &[*stride_y as i64, *stride_x as i64]),
                        ints("pads", &pads),
                    ],
                )
            }
            LayerKind::Upsample { stride } => {
                let scales = graph.float_initializer(
                    &format!("{name}.scales"),
                    &[4],
                    &[1.0, 1.0, *stride as f32, *stride as f32],
                );
                graph.node(
                    "Resize",
                    &format!("{name}.upsample"),
                    &[&previous, "", &scales],
                    vec![
                        string("mode", "nearest"),
                        string("coordinate_transformation_mode", "asymmetric"),
                        string("nearest_mode", "floor"),
                    ],
                )
            }
            LayerKind::Yolo(_) => {
                let head_name = format!("yolo{heads}");
                heads += 1;
                graph.node_named("Identity", &format!("{name}.head"), &[&previous], vec![], &head_name);
                graph.outputs.push(value_info(&head_name, layer.output));
                previous
            }
        };
        outputs.push(output);
    }

    let json = serde_json::to_string(meta).unwrap_or_default();
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "edgedet".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{} converted from darknet", meta.name),
        graph: Some(GraphProto {
            node: graph.nodes,
            name: meta.name.clone(),
            initializer: graph.initializers,
            input: graph.inputs,
            output: graph.outputs,
            ..GraphProto::default()
        }),
        metadata_props: vec![StringStringEntryProto { key: META_KEY.into(), value: json }],
        ..ModelProto::default()
    }
}

/// Name of the output of layer `index`'s convolution, before its activation.
pub fn conv_output_name(index: usize) -> String {
    format!("l{index}.conv")
}

/// Name of the sum of shortcut layer `index`, before its activation.
pub fn shortcut_output_name(index: usize) -> String {
    format!("l{index}.add")
}

#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
}

impl GraphBuilder {
    /// Adds a node with one output named after the node; returns that output's name.
    fn node(&mut self, op: &str, name: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        self.node_named(op, name, inputs, attributes, name)
    }

    fn node_named(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
        output: &str,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: name.into(),
            op_type: op.into(),
            attribute: attributes,
            ..NodeProto::default()
        });
        output.to_string()
    }

    fn float_initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..TensorProto::default()
        });
        name.into()
    }

    fn int_initializer(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..TensorProto::default()
        });
        name.into()
    }

    /// Channels `start..end` of `input`.
    fn channel_slice(&mut self, name: &str, input: &str, start: i64, end: i64) -> String {
        let starts = self.int_initializer(&format!("{name}.starts"), &[start]);
        let ends = self.int_initializer(&format!("{name}.ends"), &[end]);
        let axes = self.int_initializer(&format!("{name}.axes"), &[1]);
        self.node("Slice", name, &[input, &starts, &ends, &axes], vec![])
    }

    /// Applies a darknet activation to `input`; returns the result's name.
    fn activation(&mut self, layer: &str, input: String, activation: Activation) -> String {
        match activation {
            Activation::Linear => input,
            Activation::Leaky => {
                self.node("LeakyRelu", &format!("{layer}.leaky"), &[&input], vec![float("alpha", 0.1)])
            }
            Activation::Relu => self.node("Relu", &format!("{layer}.relu"), &[&input], vec![]),
            Activation::Logistic => self.node("Sigmoid", &format!("{layer}.logistic"), &[&input], vec![]),
            Activation::Swish => {
                let sigmoid = self.node("Sigmoid", &format!("{layer}.swish_sigmoid"), &[&input], vec![]);
                self.node("Mul", &format!("{layer}.swish"), &[&input, &sigmoid], vec![])
            }
            // x · tanh(softplus(x)); the Mish operator only exists from opset 18.
            Activation::Mish => {
                let softplus = self.node("Softplus", &format!("{layer}.mish_softplus"), &[&input], vec![]);
                let tanh = self.node("Tanh", &format!("{layer}.mish_tanh"), &[&softplus], vec![]);
                self.node("Mul", &format!("{layer}.mish"), &[&input, &tanh], vec![])
            }
        }
    }
}

fn value_info(name: &str, shape: Shape) -> ValueInfoProto {
    let dims = [1, shape.channels, shape.height, shape.width].map(|d| tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
        ..Default::default()
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim: dims.to_vec() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: value, ..Default::default() }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: value, ..Default::default() }
}

fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}
