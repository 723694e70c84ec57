//! Constant padding of the height and width of CHW and NCHW tensors, standing in for
//! tract's `Pad` in optimised plans.
//!
//! tract pads the input of a float convolution explicitly before its im2col.
//! tract 0.23.9's `Pad` fills the whole output with the constant, then copies
//! the input through an ndarray view of dynamic rank, on the calling thread.
//! On yolov4 at 416×416 f32, its 40 pads took 8–12 ms on one thread and 12–23
//! ms on two in `bench --profile`. [`PadPlanes`] copies whole rows between
//! constant borders and splits the planes over tract's threads: 3.5 ms.
//!
//! [`PadPlanes::standing_in_for`] takes tract's pads of i8 and f32 tensors
//! with a constant value on the last two axes only. Any other `Pad` keeps
//! tract's op.

use tract_core::internal::*;
use tract_core::ops::array::{Pad, PadMode};
use tract_linalg::multithread::par_chunks_mut;

use super::pool::{eval_planes, PlanesOp};

/// Name of [`PadPlanes`] in model dumps and plans.
pub const PAD_NAME: &str = "PadPlanes";

/// Constant padding of the last two axes (height and width) of a tensor of i8 or f32 values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PadPlanes {
    /// Rows above and below each plane.
    pub rows: (usize, usize),
    /// Columns left and right of each row.
    pub columns: (usize, usize),
    /// The padding value, a scalar of the input's type.
    pub value: Arc<Tensor>,
}

impl PadPlanes {
    /// Returns the op that computes `pad`, or `None` where `pad` is not
    /// constant or pads other axes than the last two. tract's plans often drop
    /// the batch axis, so inputs of two or more axes are taken, and all but
    /// the last two count as planes.
    pub fn standing_in_for(pad: &Pad) -> Option<PadPlanes> {
        let PadMode::Constant(value) = &pad.mode else { return None };
        match pad.pads[..] {
            [ref planes @ .., rows, columns] if value.len() == 1 && planes.iter().all(|&p| p == (0, 0)) => {
                Some(PadPlanes { rows, columns, value: value.clone() })
            }
            _ => None,
        }
    }

    fn output_shape<D: Clone + std::ops::Add<usize, Output = D>>(&self, shape: &[D]) -> TractResult<TVec<D>> {
        let [planes @ .., height, width] = shape else {
            bail!("invalid {PAD_NAME} input: expected two axes or more, found {}", shape.len())
        };
        let mut output: TVec<D> = planes.iter().cloned().collect();
        output.push(height.clone() + (self.rows.0 + self.rows.1));
        output.push(width.clone() + (self.columns.0 + self.columns.1));
        Ok(output)
    }
}

impl PlanesOp for PadPlanes {
    const NAME: &'static str = PAD_NAME;

    fn eval_t<T: Datum + Copy + PartialOrd>(&self, input: &Tensor) -> TractResult<Tensor> {
        let shape = input.shape();
        let output_shape = self.output_shape(shape)?;
        let value = self.value.cast_to_scalar::<T>()?;

        let (height, width) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let output_width = output_shape[output_shape.len() - 1];
        let output_plane = output_shape[output_shape.len() - 2] * output_width;
        let source = input.try_as_plain_ram()?;
        let source = source.as_slice::<T>()?;

        // SAFETY: every value is written below, each plane by one thread.
        let mut output = unsafe { Tensor::uninitialized::<T>(&output_shape)? };
        if output.len() == 0 {
            return Ok(output);
        }
        let mut target = output.try_as_plain_ram_mut()?;
        let target = target.as_slice_mut::<T>()?;
        par_chunks_mut(target, output_plane, target.len(), |first_plane, planes| {
            for (index, plane) in planes.chunks_exact_mut(output_plane).enumerate() {
                let source = &source[(first_plane + index) * height * width..][..height * width];
                let (top, rest) = plane.split_at_mut(self.rows.0 * output_width);
                let (middle, bottom) = rest.split_at_mut(height * output_width);
                top.fill(value);
                bottom.fill(value);
                for (row, source) in middle.chunks_exact_mut(output_width).zip(source.chunks_exact(width)) {
                    let (left, rest) = row.split_at_mut(self.columns.0);
                    let (copy, right) = rest.split_at_mut(width);
                    left.fill(value);
                    copy.copy_from_slice(source);
                    right.fill(value);
                }
            }
            Ok(())
        })?;
        Ok(output)
    }
}

impl Op for PadPlanes {
    fn name(&self) -> StaticName {
        PAD_NAME.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("rows: {:?}, columns: {:?}, value: {:?}", self.rows, self.columns, self.value)])
    }

    op_as_typed_op!();
}

impl EvalOp for PadPlanes {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        eval_planes(self, inputs)
    }
}

impl TypedOp for PadPlanes {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        Ok(tvec!(inputs[0].datum_type.fact(self.output_shape(&shape)?)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tract_pad(input: &Tensor, pads: Vec<(usize, usize)>, value: Tensor) -> Tensor {
        let op = Pad { pads, mode: PadMode::Constant(Arc::new(value)) };
        op.eval(&EvalContext::out_of_plan(), tvec!(input.clone().into_tvalue())).unwrap().remove(0).into_tensor()
    }

    fn edgedet_pad(input: &Tensor, pads: Vec<(usize, usize)>, value: Tensor) -> Tensor {
        let op = PadPlanes::standing_in_for(&Pad { pads, mode: PadMode::Constant(Arc::new(value)) }).unwrap();
        let output = op.eval(&EvalContext::out_of_plan(), tvec!(input.clone().into_tvalue())).unwrap().remove(0);
        output.into_tensor()
    }

    fn counting<T: Datum>(shape: &[usize], make: impl Fn(usize) -> T) -> Tensor {
        let data: Vec<T> = (0..shape.iter().product()).map(make).collect();
        tensor1(&data).into_shape(shape).unwrap()
    }

    #[test]
    fn pads_like_tract() {
        let cases = [
            ([1, 3, 5, 7], [(1, 1), (1, 1)]),
            ([1, 32, 13, 13], [(0, 1), (0, 1)]),
            ([2, 2, 4, 3], [(2, 0), (0, 3)]),
            ([1, 1, 1, 1], [(0, 0), (0, 0)]),
            ([1, 4, 0, 5], [(1, 1), (1, 1)]),
        ];
        let without_batch = [([3, 5, 7], [(1, 1), (1, 1)]), ([4, 6, 6], [(0, 1), (2, 1)])];
        let cases = cases
            .iter()
            .map(|(shape, pads)| (shape.to_vec(), pads))
            .chain(without_batch.iter().map(|(shape, pads)| (shape.to_vec(), pads)));
        for (shape, [rows, columns]) in cases {
            let mut pads = vec![(0, 0); shape.len() - 2];
            pads.extend([*rows, *columns]);
            let floats = counting(&shape, |i| i as f32 * 0.5 - 3.0);
            for value in [0.0f32, -1.25] {
                let expected = tract_pad(&floats, pads.clone(), tensor0(value));
                assert_eq!(edgedet_pad(&floats, pads.clone(), tensor0(value)), expected, "{shape:?} {pads:?} {value}");
            }
            let bytes = counting(&shape, |i| (i % 251) as u8 as i8);
            let expected = tract_pad(&bytes, pads.clone(), tensor0(-7i8));
            assert_eq!(edgedet_pad(&bytes, pads.clone(), tensor0(-7i8)), expected, "{shape:?} {pads:?} i8");
        }
    }

    #[test]
    fn other_pads_stay_with_tract() {
        let zero = || PadMode::Constant(Arc::new(tensor0(0f32)));
        let on_channels = Pad { pads: vec![(0, 0), (1, 0), (1, 1), (1, 1)], mode: zero() };
        assert_eq!(PadPlanes::standing_in_for(&on_channels), None);
        let one_axis = Pad { pads: vec![(1, 1)], mode: zero() };
        assert_eq!(PadPlanes::standing_in_for(&one_axis), None);
        let edge = Pad { pads: vec![(0, 0), (0, 0), (1, 1), (1, 1)], mode: PadMode::Edge };
        assert_eq!(PadPlanes::standing_in_for(&edge), None);
        let plain = Pad { pads: vec![(0, 0), (0, 0), (1, 2), (3, 4)], mode: zero() };
        let op = PadPlanes::standing_in_for(&plain).unwrap();
        assert_eq!((op.rows, op.columns), ((1, 2), (3, 4)));
    }
}
