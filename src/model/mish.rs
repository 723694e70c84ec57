//! Mish, `x · tanh(softplus(x))`, as one tract op: the activation of
//! yolov4's backbone and of yolov4-csp.
//!
//! ONNX has no Mish operator before opset 18, so the exported graph spells it
//! as Softplus, Tanh and Mul, and tract runs that as five element-wise nodes
//! (Exp, add 1, Ln, Tanh, Mul) with three transcendental functions per value.
//! On yolov4 at 416×416 those nodes took 92 of 664 ms with two threads. With
//! `e = exp(x)`, `tanh(ln(1 + e)) = n / (n + 2)` where `n = e · (e + 2)`, so
//! one exponential per value suffices. This op computes that in one pass, with
//! an exponential written so that the compiler vectorises the loop, split
//! across tract's threads.

use tract_core::internal::*;
use tract_core::ops::element_wise::{ElementWiseMiniOp, ElementWiseOp};

use super::rounding::{round_ties_even, round_to_i32};

/// Name of the op, as profiles and plan summaries show it.
pub const OP_NAME: &str = "Mish";

/// Element-wise Mish on f32 or f16 tensors, run as tract's `ElementWiseOp`.
/// tract then moves axes through it as through its own activations. A
/// stand-alone op made tract insert layout changes around every Mish, and the
/// matrix products of yolov4 took up to twice as long.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mish;

impl ElementWiseMiniOp for Mish {
    fn name(&self) -> String {
        OP_NAME.to_string()
    }

    fn eval_in_place(&self, tensor: &mut Tensor, _out_dt: Option<DatumType>) -> TractResult<()> {
        let datum_type = tensor.datum_type();
        if datum_type == f16::datum_type() {
            let mut values = tensor.cast_to::<f32>()?.into_owned();
            apply(&mut values)?;
            *tensor = values.cast_to::<f16>()?.into_owned();
            return Ok(());
        }
        ensure!(datum_type == f32::datum_type(), "{OP_NAME} takes f32 or f16, not {datum_type:?}");
        apply(tensor)
    }
}

/// Applies [`mish`] to every value of an f32 tensor, split across tract's threads.
fn apply(tensor: &mut Tensor) -> TractResult<()> {
    let row = tensor.shape().last().copied().unwrap_or(1).max(1);
    let mut plain = tensor.try_as_plain_ram_mut()?;
    let values = plain.as_slice_mut::<f32>()?;
    let len = values.len();
    tract_linalg::multithread::par_chunks_mut(values, row, len, |_, chunk| {
        apply_to_slice(chunk);
        Ok(())
    })
}

/// Applies [`mish`] to a slice, eight values at a time where the CPU has AVX2.
///
/// edgedet is built for the x86_64 baseline, whose vectors hold four f32. The
/// AVX2 version of the same loop took yolov4's 44 million Mish values from
/// 1.4 to 0.75 ns each in a microbenchmark on the README's AMD EPYC. Both
/// versions compute bit-identical results, because Rust never contracts
/// `a * b + c` into a fused multiply-add on its own. With this and the integer
/// exponent in [`exp`], yolov4's 72 Mish nodes went from 258 to 33 ms on one
/// thread (`bench --profile`).
fn apply_to_slice(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has just been checked for AVX2.
        unsafe { apply_avx2(values) };
        return;
    }
    values.iter_mut().for_each(|x| *x = mish(*x));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn apply_avx2(values: &mut [f32]) {
    values.iter_mut().for_each(|x| *x = mish(*x));
}

/// Returns the tract op computing Mish.
pub fn op() -> ElementWiseOp {
    ElementWiseOp(Box::new(Mish), None)
}

/// Computes `x · tanh(ln(1 + e^x))` as `x · n / (n + 2)` with `n = e^x (e^x + 2)`.
///
/// Above 20, `n / (n + 2)` is 1 in f32, and clamping there keeps `n` finite.
/// Below -87, where `e^x` leaves the normal f32 range, the result is that of
/// -87, about -1.4e-36 instead of a value closer to 0.
#[inline]
pub fn mish(x: f32) -> f32 {
    let x = x.max(-87.0);
    let e = exp(x.min(20.0));
    let n = e * (e + 2.0);
    x * (n / (n + 2.0))
}

/// Computes `e^x` for `x` in [-87, 20] to a few ulp, without branches or
/// library calls so that loops over it vectorise (`f32::exp` calls libm).
///
/// `x = k ln 2 + r` with `|r| ≤ ln 2 / 2`; `e^r` is its Taylor polynomial to
/// degree 7, and `2^k` is built in the exponent bits. k comes from
/// [`round_to_i32`] rather than a cast `as i32`, which made this loop twice as
/// slow.
#[inline]
fn exp(x: f32) -> f32 {
    const LN2_HIGH: f32 = 0.693_145_75;
    const LN2_LOW: f32 = 1.428_606_8e-6;
    let in_log2 = x * std::f32::consts::LOG2_E;
    let k = round_ties_even(in_log2);
    let k_bits = round_to_i32(in_log2);
    let r = x - k * LN2_HIGH - k * LN2_LOW;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let scale = f32::from_bits(((k_bits + 127) as u32) << 23);
    p * scale
}

/// Replaces every Mish that the darknet converter wrote as Softplus, Tanh and
/// Mul with one [`Mish`] op, in a decluttered model, and returns how many.
///
/// The converter names that Mul `{layer}.mish` and the Tanh `{layer}.mish_tanh`,
/// and tract keeps these names as prefixes when it splits a node. A Mul is
/// replaced only when one input comes from a Tanh so named and both inputs
/// have the same shape, so a model from elsewhere is left as it is.
///
/// # Errors
/// tract fails to apply a patch.
pub fn fuse_mish(model: &mut TypedModel) -> TractResult<usize> {
    // (Mul node, the input that is x) of every Mish found.
    let mut found = Vec::new();
    for node in model.nodes() {
        // tract renames the nodes it splits: `l8.mish.split-over-0.0..64`.
        let Some((layer, rest)) = node.name.split_once(".mish") else { continue };
        if !(rest.is_empty() || rest.starts_with('.')) {
            continue;
        }
        if node.inputs.len() != 2 {
            continue;
        }
        // tract may have swapped the operands of the multiplication.
        let is_tanh = |outlet: OutletId| {
            let producer = model.node(outlet.node);
            producer.name.starts_with(&format!("{layer}.mish_tanh")) && producer.op.name() == "Tanh"
        };
        let x = match (is_tanh(node.inputs[0]), is_tanh(node.inputs[1])) {
            (false, true) => node.inputs[0],
            (true, false) => node.inputs[1],
            _ => continue,
        };
        if model.outlet_fact(node.inputs[0])?.shape == model.outlet_fact(node.inputs[1])?.shape {
            found.push((node.id, x));
        }
    }
    for &(id, x) in &found {
        let node = model.node(id);
        let patch = TypedModelPatch::replace_single_op(model, node, &[x], op())
            .with_context(|| format!("fusing {} into one {OP_NAME}", node.name))?;
        patch.apply(model)?;
    }
    // The Softplus and Tanh nodes left without consumers go away here.
    model.compact()?;
    Ok(found.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: f64) -> f64 {
        x * (x.exp().ln_1p()).tanh()
    }

    #[test]
    fn matches_the_definition_across_the_range() {
        let mut worst: f64 = 0.0;
        for step in -120_000..=120_000 {
            let x = step as f32 / 1000.0;
            let expected = reference(f64::from(x));
            let error = (f64::from(mish(x)) - expected).abs() / expected.abs().max(1e-3);
            worst = worst.max(error);
        }
        assert!(worst < 2e-6, "largest relative error {worst:e}");
    }

    #[test]
    fn slices_match_scalar_bit_for_bit() {
        // 1003 is not a multiple of any vector width, so the loop's tail runs too.
        let inputs: Vec<f32> = (0..1003).map(|i| (i as f32 - 501.0) * 0.19).chain([f32::MAX, -1e30, 0.0]).collect();
        let mut outputs = inputs.clone();
        apply_to_slice(&mut outputs);
        for (x, y) in inputs.iter().zip(&outputs) {
            assert_eq!(y.to_bits(), mish(*x).to_bits(), "mish({x})");
        }
    }

    #[test]
    fn extremes_stay_finite() {
        assert_eq!(mish(1e30), 1e30);
        assert_eq!(mish(f32::MAX), f32::MAX);
        assert!(mish(-1e30).abs() < 1e-35, "{}", mish(-1e30));
        assert!(mish(-90.0).abs() < 1e-35, "{}", mish(-90.0));
        assert_eq!(mish(0.0), 0.0);
    }

    #[test]
    fn op_evaluates_f32_and_f16() {
        let input = tensor1(&[-3.0f32, -0.5, 0.0, 0.5, 3.0, 30.0]);
        let output = op().eval(&EvalContext::out_of_plan(), tvec!(input.clone().into_tvalue())).unwrap().remove(0);
        let output = output.try_as_plain_ram().unwrap();
        let input = input.try_as_plain_ram().unwrap();
        for (x, y) in input.as_slice::<f32>().unwrap().iter().zip(output.as_slice::<f32>().unwrap()) {
            assert!((f64::from(*y) - reference(f64::from(*x))).abs() < 1e-5, "mish({x}) = {y}");
        }
        let half = tensor1(&[3.0f32]).cast_to::<f16>().unwrap().into_owned();
        let output = op().eval(&EvalContext::out_of_plan(), tvec!(half.into_tvalue())).unwrap().remove(0);
        assert_eq!(output.datum_type(), f16::datum_type());
        assert_eq!(output.try_as_plain_ram().unwrap().as_slice::<f16>().unwrap()[0], f16::from_f32(mish(3.0)));
    }
}
