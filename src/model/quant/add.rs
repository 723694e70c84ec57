//! Addition of two int8 tensors with their own scales: darknet's shortcut layer.
//!
//! tract has a quantized addition only for tensors typed with their
//! parameters (`QI8`), which its lookup-table op does not accept, and building
//! it from plain ops would take six passes over the largest tensors of
//! yolov4. This op reads both inputs and writes the output in one pass.

use tract_core::internal::*;
use tract_linalg::multithread::par_chunks_mut;

use super::params::QParams;
use crate::model::rounding::round_to_i32;

/// `out = quantize(dequantize_a(a) + dequantize_b(b))`, element-wise, same
/// shapes, with halves rounded to even, split across tract's threads.
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
        let (a, b) = (a.as_slice::<i8>()?, b.as_slice::<i8>()?);
        let row = inputs[0].shape().last().copied().unwrap_or(1).max(1);
        let mut target = output.try_as_plain_ram_mut()?;
        let target = target.as_slice_mut::<i8>()?;
        let len = target.len();
        par_chunks_mut(target, row, len, |first_row, target| {
            let start = first_row * row;
            let (a, b) = (&a[start..][..target.len()], &b[start..][..target.len()]);
            for ((out, &x), &y) in target.iter_mut().zip(a).zip(b) {
                // Plain multiply-add: `f32::mul_add` becomes a libm call on x86_64
                // builds without the FMA target feature, dozens of times slower.
                let value = f32::from(x) * scale_a + f32::from(y) * scale_b + offset;
                *out = round_to_i8(value);
            }
            Ok(())
        })?;
        Ok(tvec!(output.into_tvalue()))
    }
}

/// Rounds to the nearest integer, halves to even, and saturates to i8. The
/// sum of two dequantized i8 values is always finite, so NaN needs no case.
///
/// The shortcuts of yolov4 int8 spent most of their time in `f32::round`, a
/// library call on x86_64 without SSE4.1, before they used [`round_to_i32`].
#[inline]
fn round_to_i8(value: f32) -> i8 {
    round_to_i32(value.clamp(-256.0, 256.0)).clamp(-128, 127) as i8
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

    #[test]
    fn rounding_matches_round_ties_even() {
        let values = (-300_000..300_000).map(|i| i as f32 * 0.001).chain([0.5, 1.5, -2.5, 1e30, -1e30]);
        for value in values {
            let expected = value.round_ties_even().clamp(-128.0, 127.0) as i8;
            assert_eq!(round_to_i8(value), expected, "{value}");
        }
    }

    #[test]
    fn threaded_add_matches_one_by_one() {
        let op = QuantizedAdd {
            a: QParams { scale: 0.02, zero_point: 3 },
            b: QParams { scale: 0.03, zero_point: -5 },
            output: QParams { scale: 0.04, zero_point: 1 },
        };
        let shape = [1, 64, 52, 52];
        let count: usize = shape.iter().product();
        let a: Vec<i8> = (0..count).map(|i| (i * 7 % 256) as u8 as i8).collect();
        let b: Vec<i8> = (0..count).map(|i| (i * 13 % 256) as u8 as i8).collect();
        let inputs = tvec!(
            tensor1(&a).into_shape(&shape).unwrap().into_tvalue(),
            tensor1(&b).into_shape(&shape).unwrap().into_tvalue()
        );
        let executor = tract_linalg::multithread::Executor::multithread(2);
        let out = tract_linalg::multithread::multithread_tract_scope(executor, || {
            op.eval(&EvalContext::out_of_plan(), inputs).unwrap()
        });
        let out = out[0].try_as_plain_ram().unwrap();
        let add_one = |x: i8, y: i8| {
            let a = tensor1(&[x]).into_tvalue();
            let b = tensor1(&[y]).into_tvalue();
            let out = op.eval(&EvalContext::out_of_plan(), tvec!(a, b)).unwrap();
            out[0].try_as_plain_ram().unwrap().as_slice::<i8>().unwrap()[0]
        };
        for (index, &value) in out.as_slice::<i8>().unwrap().iter().enumerate() {
            assert_eq!(value, add_one(a[index], b[index]), "value {index}");
        }
    }
}
