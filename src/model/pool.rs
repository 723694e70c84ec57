//! Max pooling and nearest upsampling of NCHW tensors, standing in for
//! tract's ops in optimised plans.
//!
//! In yolov4-tiny int8 at 416×416, tract 0.23.9's `OptMaxPool` and
//! `NearestUpsample` took 3.3 ms of 51 for three 2×2 pools and one upsample.
//! That is as long on two threads as on one, and as long as the matrix
//! product of a 3×3 convolution. The ops here compute a max pool as two one-dimensional
//! passes, down the rows and then along them, in loops the compiler
//! vectorises, and split the planes over tract's threads. The same nodes then
//! took 0.7 ms on one thread.
//!
//! [`replace_plane_ops`] swaps them in for tract's nodes of i8 and f32 tensors
//! in NCHW layout, where every window overlaps the input, together with
//! [`super::pad::PadPlanes`] for tract's constant pads. Other nodes (index
//! outputs, dilation, other layouts and types) keep tract's op.

use tract_core::internal::*;
use tract_core::ops::array::Pad;
use tract_core::ops::cnn::{OptMaxPool, PoolSpec};
use tract_core::ops::nn::{DataFormat, NearestUpsample};
use tract_linalg::multithread::par_chunks_mut;

use super::pad::PadPlanes;

/// Name of [`MaxPoolPlanes`] in model dumps and plans.
pub const MAX_POOL_NAME: &str = "MaxPoolPlanes";
/// Name of [`UpsamplePlanes`] in model dumps and plans.
pub const UPSAMPLE_NAME: &str = "UpsamplePlanes";

/// Max pooling of an NCHW tensor of i8 or f32 values, with a 2-D window,
/// any strides and explicit padding. Padded cells take no part in the
/// maximum, as in tract and darknet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MaxPoolPlanes {
    pub pool_spec: PoolSpec,
}

/// The sizes of one pooling, per axis (height, width).
#[derive(Clone, Copy, Debug)]
struct Windows {
    input: usize,
    output: usize,
    size: usize,
    stride: usize,
    pad_before: usize,
}

impl Windows {
    /// Returns the input cells that window `index` covers, clipped to the input.
    fn cells(&self, index: usize) -> std::ops::Range<usize> {
        let start = (index * self.stride).saturating_sub(self.pad_before);
        let end = (index * self.stride + self.size).saturating_sub(self.pad_before).min(self.input);
        start..end
    }

    /// Checks that no window lies wholly in the padding, where the maximum would have no value.
    fn all_overlap_input(&self) -> bool {
        self.output > 0 && (0..self.output).all(|index| !self.cells(index).is_empty())
    }
}

/// An op on the planes (the last two axes) of one tensor of i8 or f32 values, with one output.
pub(super) trait PlanesOp {
    const NAME: &'static str;

    fn eval_t<T: Datum + Copy + PartialOrd>(&self, input: &Tensor) -> TractResult<Tensor>;
}

/// Runs `op` on its one input with the element type of that input.
pub(super) fn eval_planes<O: PlanesOp>(op: &O, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
    let input = args_1!(inputs);
    let output = match input.datum_type() {
        DatumType::I8 => op.eval_t::<i8>(&input)?,
        DatumType::F32 => op.eval_t::<f32>(&input)?,
        other => bail!("{} takes i8 or f32 values, not {other:?}", O::NAME),
    };
    Ok(tvec!(output.into_tvalue()))
}

impl MaxPoolPlanes {
    /// Computes the windows along height and width for an NCHW input shape.
    fn windows(&self, shape: &[usize]) -> TractResult<[Windows; 2]> {
        ensure!(shape.len() == 4, "{MAX_POOL_NAME} takes NCHW tensors, found shape {shape:?}");
        let input = [shape[2], shape[3]];
        let padding = self.pool_spec.computed_padding(&input);
        let strides = self.pool_spec.strides();
        let windows = [0, 1].map(|axis| Windows {
            input: input[axis],
            output: padding[axis].convoluted,
            size: self.pool_spec.kernel_shape[axis],
            stride: strides[axis],
            pad_before: padding[axis].pad_before,
        });
        ensure!(
            windows.iter().all(Windows::all_overlap_input),
            "{MAX_POOL_NAME}: a window of {:?} lies wholly in the padding of a {input:?} input",
            self.pool_spec.kernel_shape
        );
        Ok(windows)
    }
}

impl PlanesOp for MaxPoolPlanes {
    const NAME: &'static str = MAX_POOL_NAME;

    fn eval_t<T: Datum + Copy + PartialOrd>(&self, input: &Tensor) -> TractResult<Tensor> {
        let shape = input.shape();
        let [rows, columns] = self.windows(shape)?;
        let (plane, output_plane) = (rows.input * columns.input, rows.output * columns.output);
        let source = input.try_as_plain_ram()?;
        let source = source.as_slice::<T>()?;
        // SAFETY: every value is written below, each plane by one thread.
        let mut output = unsafe { Tensor::uninitialized::<T>(&[shape[0], shape[1], rows.output, columns.output])? };
        let mut target = output.try_as_plain_ram_mut()?;
        let target = target.as_slice_mut::<T>()?;
        par_chunks_mut(target, output_plane, source.len(), |first_plane, planes| {
            let mut pooled_rows = Vec::with_capacity(rows.output * columns.input);
            for (index, target) in planes.chunks_exact_mut(output_plane).enumerate() {
                let source = &source[(first_plane + index) * plane..][..plane];
                pool_rows(source, rows, columns.input, &mut pooled_rows);
                pool_columns(&pooled_rows, columns, target);
            }
            Ok(())
        })?;
        Ok(output)
    }
}

/// Returns the larger of two values, written as a select so that loops over it vectorise.
#[inline(always)]
fn larger<T: Copy + PartialOrd>(a: T, b: T) -> T {
    if b > a {
        b
    } else {
        a
    }
}

/// Writes, for each output row, the maximum of the input rows its window covers.
fn pool_rows<T: Copy + PartialOrd>(source: &[T], rows: Windows, width: usize, pooled: &mut Vec<T>) {
    pooled.clear();
    for index in 0..rows.output {
        let cells = rows.cells(index);
        let start = pooled.len();
        pooled.extend_from_slice(&source[cells.start * width..][..width]);
        let maximum = &mut pooled[start..];
        for row in cells.skip(1) {
            for (kept, &value) in maximum.iter_mut().zip(&source[row * width..][..width]) {
                *kept = larger(*kept, value);
            }
        }
    }
}

/// Writes, for each output column, the maximum of the columns its window covers, row by row.
fn pool_columns<T: Copy + PartialOrd>(pooled: &[T], columns: Windows, target: &mut [T]) {
    let max = larger::<T>;
    for (row, target) in pooled.chunks_exact(columns.input).zip(target.chunks_exact_mut(columns.output)) {
        if columns.size == 2 && columns.stride == 2 && columns.pad_before == 0 {
            // The windows of yolov4-tiny's pools: pairs, which the compiler
            // vectorises; an odd last column is a window of its own.
            let pairs = row.chunks_exact(2);
            let single = pairs.remainder().first().copied();
            let mut written = 0;
            for (target, pair) in target.iter_mut().zip(pairs) {
                *target = max(pair[0], pair[1]);
                written += 1;
            }
            if let (Some(target), Some(value)) = (target.get_mut(written), single) {
                *target = value;
            }
            continue;
        }
        for (index, target) in target.iter_mut().enumerate() {
            let cells = &row[columns.cells(index)];
            *target = cells[1..].iter().fold(cells[0], |kept, &value| max(kept, value));
        }
    }
}

impl Op for MaxPoolPlanes {
    fn name(&self) -> StaticName {
        MAX_POOL_NAME.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(self.pool_spec.info())
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPoolPlanes {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        eval_planes(self, inputs)
    }
}

impl TypedOp for MaxPoolPlanes {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.pool_spec.output_facts(inputs)
    }

    as_op!();
}

/// Nearest upsampling of the height and width of an NCHW tensor of i8 or f32
/// values by whole factors.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpsamplePlanes {
    /// Factors along height and width.
    pub scales: [usize; 2],
}

impl PlanesOp for UpsamplePlanes {
    const NAME: &'static str = UPSAMPLE_NAME;

    fn eval_t<T: Datum + Copy + PartialOrd>(&self, input: &Tensor) -> TractResult<Tensor> {
        let shape = input.shape();
        ensure!(shape.len() == 4, "{UPSAMPLE_NAME} takes NCHW tensors, found shape {shape:?}");
        let [scale_y, scale_x] = self.scales;
        let (height, width) = (shape[2], shape[3]);
        let output_width = width * scale_x;
        let source = input.try_as_plain_ram()?;
        let source = source.as_slice::<T>()?;
        // SAFETY: every value is written below, each plane by one thread.
        let mut output = unsafe { Tensor::uninitialized::<T>(&[shape[0], shape[1], height * scale_y, output_width])? };
        if output.len() == 0 {
            return Ok(output);
        }
        let mut target = output.try_as_plain_ram_mut()?;
        let target = target.as_slice_mut::<T>()?;
        // One output row per source row, then copies of it for the other scale_y − 1 rows.
        par_chunks_mut(target, output_width * scale_y, target.len(), |first_row, rows| {
            for (index, rows) in rows.chunks_exact_mut(output_width * scale_y).enumerate() {
                let source = &source[(first_row + index) * width..][..width];
                let (first, copies) = rows.split_at_mut(output_width);
                for (targets, &value) in first.chunks_exact_mut(scale_x).zip(source) {
                    targets.fill(value);
                }
                for copy in copies.chunks_exact_mut(output_width) {
                    copy.copy_from_slice(first);
                }
            }
            Ok(())
        })?;
        Ok(output)
    }
}

impl Op for UpsamplePlanes {
    fn name(&self) -> StaticName {
        UPSAMPLE_NAME.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("scales: {:?}", self.scales)])
    }

    op_as_typed_op!();
}

impl EvalOp for UpsamplePlanes {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        eval_planes(self, inputs)
    }
}

impl TypedOp for UpsamplePlanes {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let [scale_y, scale_x] = self.scales;
        let shape = &inputs[0].shape;
        ensure!(shape.len() == 4, "{UPSAMPLE_NAME} takes NCHW tensors, found shape {shape:?}");
        let output = [shape[0].clone(), shape[1].clone(), shape[2].clone() * scale_y, shape[3].clone() * scale_x];
        Ok(tvec!(inputs[0].datum_type.fact(output)))
    }

    as_op!();
}

/// Replaces tract's max pools, nearest upsamples and constant pads of an
/// optimised model with [`MaxPoolPlanes`], [`UpsamplePlanes`] and
/// [`PadPlanes`] where they can stand in, and returns how many nodes were
/// replaced.
///
/// # Errors
/// tract fails to apply a patch.
pub fn replace_plane_ops(model: &mut TypedModel) -> TractResult<usize> {
    let mut replacements: Vec<(usize, Box<dyn TypedOp>)> = Vec::new();
    for node in model.nodes() {
        let Some(fact) = node.inputs.first().map(|input| model.outlet_fact(*input)).transpose()? else { continue };
        if !matches!(fact.datum_type, DatumType::I8 | DatumType::F32) {
            continue;
        }
        if let Some(pad) = node.op_as::<Pad>().and_then(PadPlanes::standing_in_for) {
            if pad.value.datum_type() == fact.datum_type {
                replacements.push((node.id, Box::new(pad)));
            }
            continue;
        }
        if fact.rank() != 4 {
            continue;
        }
        if let Some(pool) = node.op_as::<OptMaxPool>() {
            let spec = &pool.pool_spec;
            let fits = pool.with_index_outputs.is_none()
                && spec.data_format == DataFormat::NCHW
                && spec.rank() == 2
                && spec.dilations().iter().all(|&d| d == 1);
            let Some(shape) = fact.shape.as_concrete() else { continue };
            let op = MaxPoolPlanes { pool_spec: spec.clone() };
            if fits && op.windows(shape).is_ok() {
                replacements.push((node.id, Box::new(op)));
            }
        } else if let Some(upsample) = node.op_as::<NearestUpsample>() {
            if let [1, 1, scale_y, scale_x] = upsample.scales[..] {
                if scale_y > 0 && scale_x > 0 {
                    replacements.push((node.id, Box::new(UpsamplePlanes { scales: [scale_y, scale_x] })));
                }
            }
        }
    }
    for (id, op) in &replacements {
        let node = model.node(*id);
        let name = node.name.clone();
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op.clone())
            .with_context(|| format!("replacing {name} with {}", op.name()))?;
        patch.apply(model).with_context(|| format!("replacing {name} with {}", op.name()))?;
    }
    if !replacements.is_empty() {
        // The replaced nodes stay behind as placeholders until compaction.
        model.compact()?;
    }
    Ok(replacements.len())
}

#[cfg(test)]
mod tests {
    use super::super::pad::PAD_NAME;
    use super::*;
    use tract_core::ops::array::PadMode;
    use tract_core::ops::cnn::{MaxPool, PaddingSpec};

    fn values<T: Datum>(count: usize, seed: u32, make: impl Fn(u32) -> T) -> Tensor {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let data: Vec<T> = (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                make(state)
            })
            .collect();
        tensor1(&data)
    }

    fn pool_spec(channels: usize, size: usize, stride: usize, before: usize, after: usize) -> PoolSpec {
        PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![size, size],
            padding: PaddingSpec::Explicit(tvec![before, before], tvec![after, after]),
            dilations: None,
            strides: Some(tvec![stride, stride]),
            input_channels: channels,
            output_channels: channels,
        }
    }

    /// Runs `op` and tract's op for the same node through optimised models and
    /// returns both outputs.
    fn both(input: &Tensor, ours: Box<dyn TypedOp>, tract: Box<dyn TypedOp>) -> (Tensor, Tensor) {
        let run = |op: Box<dyn TypedOp>| {
            let mut model = TypedModel::default();
            let source = model.add_source("x", input.datum_type().fact(input.shape())).unwrap();
            let output = model.wire_node("op", op, &[source]).unwrap();
            model.select_output_outlets(&output).unwrap();
            let plan = model.into_runnable().unwrap();
            plan.run(tvec!(input.clone().into_tvalue())).unwrap().remove(0).into_tensor()
        };
        (run(ours), run(tract))
    }

    #[test]
    fn max_pool_matches_tract() {
        // (height, width, size, stride, pad before, pad after): yolov4-tiny's
        // 2×2 pools on even and odd sizes, yolov3-tiny's stride-1 pool, and
        // yolov4's SPP pools of 5, 9 and 13.
        let cases = [
            (104, 104, 2, 2, 0, 1),
            (13, 13, 2, 2, 0, 1),
            (13, 13, 2, 1, 0, 1),
            (13, 13, 5, 1, 2, 2),
            (13, 13, 9, 1, 4, 4),
            (13, 13, 13, 1, 6, 6),
            (11, 7, 3, 2, 1, 1),
        ];
        for (index, &(height, width, size, stride, before, after)) in cases.iter().enumerate() {
            let channels = 3;
            let spec = pool_spec(channels, size, stride, before, after);
            let shape = [2, channels, height, width];
            let count = shape.iter().product();
            let bytes = values(count, index as u32, |v| (v % 256) as u8 as i8).into_shape(&shape).unwrap();
            let floats = values(count, index as u32, |v| (v % 10_000) as f32 / 77.0 - 60.0).into_shape(&shape).unwrap();
            for input in [bytes, floats] {
                let ours = Box::new(MaxPoolPlanes { pool_spec: spec.clone() });
                let tract = Box::new(MaxPool { pool_spec: spec.clone(), with_index_outputs: None });
                let (ours, tract) = both(&input, ours, tract);
                assert_eq!(ours.shape(), tract.shape(), "case {index}");
                assert_eq!(ours, tract, "case {index}: {:?}", input.datum_type());
            }
        }
    }

    #[test]
    fn upsample_matches_tract() {
        let shape = [1, 3, 13, 7];
        let count = shape.iter().product();
        let bytes = values(count, 9, |v| (v % 256) as u8 as i8).into_shape(&shape).unwrap();
        let floats = values(count, 9, |v| v as f32 / 1e6).into_shape(&shape).unwrap();
        for input in [bytes, floats] {
            for scales in [[2, 2], [3, 1]] {
                let ours = Box::new(UpsamplePlanes { scales });
                let tract = Box::new(NearestUpsample { scales: tvec![1, 1, scales[0], scales[1]] });
                let (ours, tract) = both(&input, ours, tract);
                assert_eq!(ours, tract, "{:?} by {scales:?}", input.datum_type());
            }
        }
        // One row of the source by hand: each value twice, and the row twice.
        let input = tensor1(&[1i8, -2, 3]).into_shape(&[1, 1, 1, 3]).unwrap();
        let (ours, _) = both(
            &input,
            Box::new(UpsamplePlanes { scales: [2, 2] }),
            Box::new(NearestUpsample { scales: tvec![1, 1, 2, 2] }),
        );
        assert_eq!(
            ours.try_as_plain_ram().unwrap().as_slice::<i8>().unwrap(),
            &[1, 1, -2, -2, 3, 3, 1, 1, -2, -2, 3, 3]
        );
    }

    #[test]
    fn replaces_only_what_it_can_stand_in_for() {
        let mut model = TypedModel::default();
        let source = model.add_source("x", i8::fact([1, 4, 26, 26])).unwrap();
        let pooled = model
            .wire_node("pool", MaxPool { pool_spec: pool_spec(4, 2, 2, 0, 1), with_index_outputs: None }, &[source])
            .unwrap();
        let up = model.wire_node("up", NearestUpsample { scales: tvec![1, 1, 2, 2] }, &pooled).unwrap();
        // A window wholly in the padding: tract's op stays.
        let odd = model
            .wire_node("odd", MaxPool { pool_spec: pool_spec(4, 2, 2, 0, 4), with_index_outputs: None }, &up)
            .unwrap();
        let zero = || PadMode::Constant(Arc::new(tensor0(-3i8)));
        let padded =
            model.wire_node("pad", Pad { pads: vec![(0, 0), (0, 0), (1, 1), (1, 1)], mode: zero() }, &odd).unwrap();
        // Padding the channels: tract's op stays.
        let channels = Pad { pads: vec![(0, 0), (1, 0), (0, 0), (0, 0)], mode: zero() };
        let padded = model.wire_node("pad_channels", channels, &padded).unwrap();
        model.select_output_outlets(&padded).unwrap();
        let mut model = model.into_optimized().unwrap();
        assert_eq!(replace_plane_ops(&mut model).unwrap(), 3);
        let names: Vec<String> = model.nodes().iter().map(|node| node.op.name().to_string()).collect();
        for name in [MAX_POOL_NAME, UPSAMPLE_NAME, PAD_NAME, "OptMaxPool", "Pad"] {
            assert!(names.contains(&name.to_string()), "{name} missing from {names:?}");
        }
    }
}
