//! Addition of two int8 tensors with their own scales: darknet's shortcut layer.
//!
//! tract has a quantized addition only for tensors typed with their
//! parameters (`QI8`), which its lookup-table op does not accept, and building
//! it from plain ops would take six passes over the largest tensors of
//! yolov4. This op reads both inputs and writes the output in one pass.

use tract_core::internal::*;

use super::params::QParams;

/// `out = quantize(dequantize_a(a) + dequantize_b(b))`, element-wise, same shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedAdd {
    pub a: QParams,
    pub b: QParams,
    pub output: QParams,
}

impl Eq for QuantizedAdd {}

impl Op for QuantizedAdd {
    fn name(&self) -> StaticName {
        "QuantizedAddI8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("a: {:?} b: {:?} out: {:?}", self.a, self.b, self.output)])
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizedAdd {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        ensure!(a.shape() == b.shape(), "shortcut inputs differ in shape: {:?} and {:?}", a.shape(), b.shape());
        let a = a.try_as_plain_ram()?;
        let b = b.try_as_plain_ram()?;
        let mut output = unsafe { Tensor::uninitialized::<i8>(inputs[0].shape())? };
        // Each side's contribution in output steps, offsets folded in.
        let scale_a = self.a.scale / self.output.scale;
        let scale_b = self.b.scale / self.output.scale;
        let offset =
            self.output.zero_point as f32 - self.a.zero_point as f32 * scale_a - self.b.zero_point as f32 * scale_b;
        let mut target = output.try_as_plain_ram_mut()?;
        for ((out, &x), &y) in target.as_slice_mut::<i8>()?.iter_mut().zip(a.as_slice::<i8>()?).zip(b.as_slice::<i8>()?)
        {
            // Plain multiply-add: `f32::mul_add` becomes a libm call on x86_64
            // builds without the FMA target feature, dozens of times slower.
            let value = f32::from(x) * scale_a + f32::from(y) * scale_b + offset;
            *out = value.round().clamp(-128.0, 127.0) as i8;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for QuantizedAdd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].shape == inputs[1].shape, "shortcut inputs differ in shape");
        Ok(tvec!(i8::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_in_real_values_and_saturates() {
        let op = QuantizedAdd {
            a: QParams { scale: 0.1, zero_point: -10 },
            b: QParams { scale: 0.05, zero_point: 20 },
            output: QParams { scale: 0.2, zero_point: 0 },
        };
        let a = tensor1(&[-10i8, 0, 127, -128]);
        let b = tensor1(&[20i8, 40, 127, -128]);
        let out = op.eval(&EvalContext::out_of_plan(), tvec!(a.into_tvalue(), b.into_tvalue())).unwrap();
        // Reals: a = 0, 1, 13.7, -11.8; b = 0, 1, 5.35, -7.4; sums / 0.2 = 0, 10, 95.25, -96.
        assert_eq!(out[0].try_as_plain_ram().unwrap().as_slice::<i8>().unwrap(), &[0, 10, 95, -96]);
    }
}
