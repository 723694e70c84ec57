//! Pointwise int8 convolutions as one matrix product over the whole image.
//!
//! A 1×1 convolution of stride 1 without padding multiplies its weights with
//! every pixel. tract 0.23.9 merges a float one's H and W axes into one axis
//! of H·W pixels, so it becomes one matrix product. Its merging rule only
//! takes einsums of two inputs, and a quantized einsum has nine (the two
//! matrices, the bias, and the zero points and scales). So a quantized
//! pointwise convolution keeps H as a batch axis and runs as H matrix
//! products of W pixels each. With a multi-thread executor, each of those
//! starts and joins the threads on its own. On two threads, yolov4-tiny's
//! 104×104 one (64 channels in and out) took 2.6 ms against 0.9 ms on one
//! thread.
//!
//! [`rows_as_one`] gives those einsums their input as one row of H·W pixels
//! and restores the H×W shape after them. It must run after tract's
//! declutter passes, whose axis propagation would remove the two reshapes
//! again, and before the codegen passes that turn einsums into matrix
//! products.

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;

/// Reshapes the input of every quantized pointwise einsum of `model` from
/// `N×C×H×W` to `N×C×1×(H·W)`, and its output back. Returns how many it changed.
///
/// # Errors
/// tract fails to apply a patch.
pub fn rows_as_one(model: &mut TypedModel) -> TractResult<usize> {
    let mut changed = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(op) = node.op_as::<EinSum>() else { continue };
        if op.q_params.is_none() || !is_pointwise_image(model, node, op)? {
            continue;
        }
        let shape = model.outlet_fact(node.inputs[0])?.shape.to_tvec();
        let plane: TVec<TDim> = tvec![shape[2].clone(), shape[3].clone()];
        let row: TVec<TDim> = tvec![1.to_dim(), shape[2].clone() * &shape[3]];
        let mut patch = TypedModelPatch::new("pointwise einsum over one row");
        let mut taps = patch.taps(model, &node.inputs)?;
        taps[0] = patch.wire_node(
            format!("{}.as_row", node.name),
            AxisOp::Reshape(2, plane.clone(), row.clone()),
            &[taps[0]],
        )?[0];
        let product = patch.wire_node(&node.name, op.clone(), &taps)?[0];
        let output = patch.wire_node(format!("{}.as_plane", node.name), AxisOp::Reshape(2, row, plane), &[product])?[0];
        patch.shunt_outside(model, id.into(), output)?;
        patch.apply(model)?;
        changed += 1;
    }
    Ok(changed)
}

/// Checks whether `node` is a pointwise convolution that tract would run one
/// image row at a time. It reads an `N×C×H×W` image with H > 1 as its first
/// input and writes `N×C'×H×W`, and its H and W axes come from that image alone.
fn is_pointwise_image(model: &TypedModel, node: &TypedNode, op: &EinSum) -> TractResult<bool> {
    let input = model.outlet_fact(node.inputs[0])?;
    let output = &node.outputs[0].fact;
    if input.rank() != 4 || output.rank() != 4 || input.shape[2].as_i64().is_none_or(|h| h < 2) {
        return Ok(false);
    }
    for position in [2, 3] {
        let axis = op.axes.axis((InOut::In(0), position))?;
        let only_image = axis.inputs.iter().skip(1).all(|positions| positions.is_empty());
        if !only_image || axis.outputs[0].as_slice() != [position] || input.shape[position] != output.shape[position] {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
    use tract_core::ops::matmul::optimized::OptMatMul;
    use tract_core::ops::nn::DataFormat;

    use super::*;

    /// Builds an int8 convolution of `size`×`size` from 8 to 16 channels on a 1×8×6×5 image.
    fn int8_conv(size: usize) -> TypedModel {
        let mut model = TypedModel::default();
        let input = model.add_source("input", i8::fact([1, 8, 6, 5])).unwrap();
        let weights: Vec<i8> = (0..16 * 8 * size * size).map(|i| ((i * 37) % 255) as i8).collect();
        let bias: Vec<i32> = (0..16).map(|i| i * 100 - 700).collect();
        let mut constant = |name: &str, tensor: Tensor| model.add_const(name, tensor).unwrap();
        let inputs = [
            input,
            constant("weight", tensor1(&weights).into_shape(&[16, 8, size, size]).unwrap()),
            constant("bias", tensor1(&bias)),
            constant("x0", tensor0(3i32)),
            constant("x_scale", tensor0(0.05f32)),
            constant("k0", tensor0(0i32)),
            constant("k_scale", tensor0(0.01f32)),
            constant("y0", tensor0(-5i32)),
            constant("y_scale", tensor0(0.2f32)),
        ];
        let pool_spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![size, size],
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: None,
            input_channels: 8,
            output_channels: 16,
        };
        let op = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: 1, q_params: Some(i8::datum_type()) };
        let output = model.wire_node("conv", op, &inputs).unwrap()[0];
        model.select_output_outlets(&[output]).unwrap();
        model
    }

    fn image() -> Tensor {
        let values: Vec<i8> = (0..8 * 6 * 5).map(|i| ((i * 53) % 251) as i8).collect();
        tensor1(&values).into_shape(&[1, 8, 6, 5]).unwrap()
    }

    fn run(model: TypedModel) -> Tensor {
        let plan = model.into_runnable().unwrap();
        plan.run(tvec![image().into()]).unwrap().remove(0).into_tensor()
    }

    /// Returns the output shape of every matrix product of `model`.
    fn product_shapes(model: &TypedModel) -> Vec<TVec<usize>> {
        model
            .nodes()
            .iter()
            .filter(|node| node.op_is::<OptMatMul>())
            .map(|node| node.outputs[0].fact.shape.as_concrete().unwrap().into())
            .collect()
    }

    #[test]
    fn pointwise_conv_becomes_one_product() {
        let reference = run(int8_conv(1).into_optimized().unwrap());

        let mut model = int8_conv(1);
        model.declutter().unwrap();
        assert_eq!(rows_as_one(&mut model).unwrap(), 1);
        model.optimize().unwrap();
        // One product over the 30 pixels, not one per image row.
        assert_eq!(product_shapes(&model), vec![tvec![1, 16, 1, 30]]);
        let output = run(model);

        assert_eq!(output.shape(), &[1, 16, 6, 5]);
        assert_eq!(output, reference);
        // The output is not constant, so the comparison above can fail.
        let plain = output.try_as_plain_ram().unwrap();
        let values = plain.as_slice::<i8>().unwrap();
        assert!(values.iter().any(|&v| v != values[0]));
    }

    #[test]
    fn larger_and_float_convs_unchanged() {
        let mut model = int8_conv(3);
        model.declutter().unwrap();
        assert_eq!(rows_as_one(&mut model).unwrap(), 0);

        let mut model = TypedModel::default();
        let input = model.add_source("input", f32::fact([1, 8, 6, 5])).unwrap();
        let weights = model.add_const("weight", Tensor::zero::<f32>(&[16, 8, 1, 1]).unwrap()).unwrap();
        let bias = model.add_const("bias", Tensor::zero::<f32>(&[16]).unwrap()).unwrap();
        let pool_spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![1, 1],
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: None,
            input_channels: 8,
            output_channels: 16,
        };
        let op = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: 1, q_params: None };
        let output = model.wire_node("conv", op, &[input, weights, bias]).unwrap()[0];
        model.select_output_outlets(&[output]).unwrap();
        model.declutter().unwrap();
        assert_eq!(rows_as_one(&mut model).unwrap(), 0);
    }
}
