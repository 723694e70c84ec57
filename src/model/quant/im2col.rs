//! Im2col for int8 convolutions whose matrix kernel reads the `PackedI8K4` layout.
//!
//! tract 0.23.9 lowers every quantized convolution with a kernel larger than
//! 1×1 to an eager `Im2col` node feeding an `OptMatMul`. The int8 kernels that
//! multiply four bytes at a time (tract's for x86 AVX512-VNNI, AVX-VNNI and
//! AMX and for arm64 SDOT and SME, and edgedet's own for x86 AVX2) read their
//! activations as `PackedI8K4`. That layout is made
//! of panels of `r` output pixels, and inside a panel, the 4 consecutive k of
//! one pixel sit side by side.
//! tract's op fills that layout one k at a time across the whole buffer, so
//! each cache line of a buffer of several megabytes is written in four passes.
//! [`Im2colI8K4`] writes the same bytes one panel after the other, and
//! [`replace_im2col`] swaps it in for tract's nodes in an optimized model.
//! The `timing` test at the end of this file runs the 14 im2col layers of
//! yolov4-tiny at 416×416 on one thread. On a Xeon with AVX512-VNNI and AMX
//! shared with other builds, tract's op took 25 ms there and this one 5 to 6 ms.
//! On a 2-core AMD EPYC VM with AVX2 and no VNNI, tract's took 43 ms and
//! this one 6.0 ms (r = 8).
//!
//! Grouped convolutions, kernels that are not 2-D, inputs that are not i8 and
//! nodes packing to tract's `PackedFormat` keep tract's op.

use std::alloc::Layout;

use tract_core::internal::*;
use tract_core::ops::cnn::conv::Im2Col;
use tract_core::ops::cnn::PoolSpec;
use tract_linalg::mmm::{EagerPackedInput, MMMInputValue, PackedExoticFact, PackedMatrixStorage};
use tract_linalg::multithread::par_chunks_mut;
use tract_linalg::pack::PackedI8K4;

/// Name of [`Im2colI8K4`] in model dumps and plans.
pub const OP_NAME: &str = "Im2colI8K4";

/// Bytes the gathered rows of one pass may take. A pass covers as many
/// panels as fit in it, at least one, so the rows stay in the L2 cache
/// between the gather and the interleave. On the Xeon of the module
/// documentation, 64 to 256 KiB gave times within 10 % of each other and
/// 16 KiB was 30 % slower.
const ROWS_BUDGET: usize = 128 * 1024;

/// Bytes past the end of each gathered row that a run of pixels may write,
/// because runs are copied 16 pixels at a time.
const ROW_SLACK: usize = 16;

/// Bytes past the end of the padded input that a run of pixels may read: 16
/// pixels at a stride of 2.
const INPUT_SLACK: usize = 32;

/// The im2col of tract's `Im2Col` for i8 input and `PackedI8K4` output,
/// filled one panel at a time, with an explicit pad value.
///
/// For each batch it produces the same bytes as tract. Pixel `m` and row
/// `k = ci·kh·kw + ky·kw + kx` of the patch matrix sit at byte
/// `(k / 4)·4r + (m % r)·4 + k % 4` of panel `m / r`. k is padded with zeros
/// to a multiple of 4, and the lanes of the last panel past the last pixel are
/// zero. Taps outside the input read `pad_value`.
///
/// The input is first copied into a dense channel-first buffer with the
/// padding written out, so the gather copies runs of pixels without testing
/// taps against the input's edges. Then, for a few panels at a time, every k row of those panels is
/// gathered into a small buffer and each group of 4 rows is interleaved into
/// the output, which is written once, in order. Panels are split across the
/// threads of the tract executor in use.
///
/// The pad value is a field rather than the node's second input. A graph can
/// then give tract an activation zero point of 0 and fold the real zero point
/// into the bias, while this op still pads with the real zero point.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Im2colI8K4 {
    /// Kernel, strides, dilations, padding and data format of the convolution.
    pub pool_spec: PoolSpec,
    /// The layout the matrix kernel reads, from the replaced node's output fact.
    pub packing: PackedI8K4,
    /// The value of taps outside the input: the input's zero point.
    pub pad_value: i8,
}

impl Op for Im2colI8K4 {
    fn name(&self) -> StaticName {
        OP_NAME.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = self.pool_spec.info();
        info.push(format!("packing: {}, pad value: {}", self.packing, self.pad_value));
        Ok(info)
    }

    op_as_typed_op!();
}

impl EvalOp for Im2colI8K4 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.datum_type().unquantized() == i8::datum_type(),
            "{OP_NAME} expects an i8 input, found {:?}",
            input.datum_type()
        );
        let geometry = Geometry::new(&self.pool_spec, input.shape())?;
        let data = input.try_as_plain_ram()?;
        let data = data.as_slice::<i8>()?;

        let mut values: TVec<Box<dyn MMMInputValue>> = tvec!();
        for batch in 0..geometry.batch {
            values.push(Box::new(self.pack_batch(&geometry, data, batch)?));
        }
        let output = PackedMatrixStorage::new_batched(&[geometry.batch, 1], values).into_tensor(input.datum_type());
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Im2colI8K4 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let input_shape = self.pool_spec.data_format.shape(inputs[0].shape.to_tvec())?;
        let output_shape = self.pool_spec.output_shape(&inputs[0].shape)?;
        let packed = PackedExoticFact {
            format: Box::new(self.packing.clone()),
            k: self.k(),
            mn: output_shape.hw_dims().iter().product::<TDim>(),
        };
        let batch = input_shape.n().cloned().unwrap_or_else(|| 1.to_dim());
        Ok(tvec!(inputs[0].datum_type.fact(&[batch, 1.to_dim()]).with_exotic_fact(packed)))
    }

    as_op!();
}

impl Im2colI8K4 {
    /// Rows of the patch matrix: input channels times kernel taps.
    fn k(&self) -> usize {
        self.pool_spec.input_channels * self.pool_spec.kernel_shape.iter().product::<usize>()
    }

    fn pack_batch(&self, geometry: &Geometry, data: &[i8], batch: usize) -> TractResult<EagerPackedInput> {
        let k = self.k();
        let r = self.packing.r;
        ensure!(r > 0, "{OP_NAME}: a packing with r = 0 has no panels");
        let pixels = geometry.pixels();
        let panel_bytes = self.packing.single_panel_len(k);
        let layout = Layout::from_size_align(pixels.div_ceil(r) * panel_bytes, self.packing.alignment())?;
        // SAFETY: the layout is valid and `fill` below writes every byte of
        // the buffer before anything reads it.
        let mut blob = unsafe { Blob::for_layout(layout) };

        if pixels > 0 {
            let padded = PaddedInput::copy(geometry, data, batch, self.pad_value)?;
            let plan = FillPlan::new(geometry, &padded, k, r, panel_bytes);
            let buffer = blob.as_bytes_mut();
            let total = buffer.len();
            par_chunks_mut(buffer, panel_bytes, total, |first_panel, panels| {
                plan.fill(&padded, first_panel, panels);
                Ok(())
            })?;
        }

        Ok(EagerPackedInput {
            fact: PackedExoticFact { format: Box::new(self.packing.clone()), k, mn: pixels.to_dim() },
            packed: Arc::new(blob),
            panel_bytes: if pixels > 0 { panel_bytes } else { 0 },
            mn: pixels,
        })
    }
}

/// The convolution's sizes for one input shape, in elements.
#[derive(Debug)]
struct Geometry {
    batch: usize,
    channels: usize,
    input: [usize; 2],
    output: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pad_before: [usize; 2],
    batch_stride: usize,
    channel_stride: usize,
    /// Distance between neighbours along height and along width.
    spatial_strides: [usize; 2],
}

impl Geometry {
    fn new(pool_spec: &PoolSpec, shape: &[usize]) -> TractResult<Geometry> {
        let format = pool_spec.data_format;
        ensure!(pool_spec.rank() == 2, "{OP_NAME} needs a 2-D kernel, found {:?}", pool_spec.kernel_shape);
        let expected_rank = if format.has_n() { 4 } else { 3 };
        ensure!(shape.len() == expected_rank, "{OP_NAME}: input shape {shape:?} does not match data format {format:?}");
        let strides = pool_spec.strides();
        let dilations = pool_spec.dilations();
        ensure!(
            pool_spec.kernel_shape.iter().chain(&*strides).chain(&*dilations).all(|&size| size > 0),
            "{OP_NAME}: kernel {:?}, strides {strides:?} and dilations {dilations:?} must all be at least 1",
            pool_spec.kernel_shape
        );
        let data_shape = format.shape(shape)?;
        let channels = *data_shape.c();
        ensure!(
            channels > 0 && channels == pool_spec.input_channels,
            "{OP_NAME}: input has {channels} channels, the convolution expects {}",
            pool_spec.input_channels
        );

        let input = [data_shape.hw_dims()[0], data_shape.hw_dims()[1]];
        let padding = pool_spec.computed_padding(&input);
        Ok(Geometry {
            batch: data_shape.n().copied().unwrap_or(1),
            channels,
            input,
            output: [padding[0].convoluted, padding[1].convoluted],
            kernel: [pool_spec.kernel_shape[0], pool_spec.kernel_shape[1]],
            strides: [strides[0], strides[1]],
            dilations: [dilations[0], dilations[1]],
            pad_before: [padding[0].pad_before, padding[1].pad_before],
            batch_stride: data_shape.n_stride().copied().unwrap_or(0),
            channel_stride: *data_shape.c_stride(),
            spatial_strides: [*data_shape.h_stride(), *data_shape.w_stride()],
        })
    }

    fn pixels(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// Height and width of the input region that the output reads, padding included.
    fn reach(&self) -> [usize; 2] {
        [0, 1].map(|axis| {
            (self.output[axis] - 1) * self.strides[axis] + (self.kernel[axis] - 1) * self.dilations[axis] + 1
        })
    }
}

/// One batch of the input in channel, height, width order, with the padding
/// written out: the region the output reads and nothing else.
struct PaddedInput {
    data: Vec<i8>,
    width: usize,
    plane: usize,
}

impl PaddedInput {
    /// Copies batch `batch` of `data`. The geometry must have at least one output pixel.
    fn copy(geometry: &Geometry, data: &[i8], batch: usize, pad_value: i8) -> TractResult<PaddedInput> {
        let [height, width] = geometry.reach();
        let plane = height * width;
        let mut padded = vec![pad_value; geometry.channels * plane + INPUT_SLACK];
        let [pad_top, pad_left] = geometry.pad_before;
        let [input_height, input_width] = geometry.input;
        let [height_stride, width_stride] = geometry.spatial_strides;

        // Padded columns [first, end) come from input columns from 0.
        let first = pad_left.min(width);
        let end = (pad_left + input_width).min(width);
        if input_height > 0 && input_width > 0 {
            let last_read = geometry.batch_stride * batch
                + geometry.channel_stride * (geometry.channels - 1)
                + height_stride * (input_height - 1)
                + width_stride * (input_width - 1);
            ensure!(
                last_read < data.len(),
                "{OP_NAME}: input has {} elements, its shape needs {}",
                data.len(),
                last_read + 1
            );
        }

        for channel in 0..geometry.channels {
            let source = geometry.batch_stride * batch + geometry.channel_stride * channel;
            for row in pad_top.min(height)..(pad_top + input_height).min(height) {
                let source = source + height_stride * (row - pad_top);
                let target = &mut padded[channel * plane + row * width..][first..end];
                if width_stride == 1 {
                    target.copy_from_slice(&data[source..source + target.len()]);
                } else {
                    for (x, value) in target.iter_mut().enumerate() {
                        *value = data[source + x * width_stride];
                    }
                }
            }
        }
        Ok(PaddedInput { data: padded, width, plane })
    }
}

/// The sizes and offsets that filling the panels of one batch reads, shared by all threads.
struct FillPlan {
    r: usize,
    k_blocks: usize,
    panel_bytes: usize,
    pixels: usize,
    output_width: usize,
    strides: [usize; 2],
    padded_width: usize,
    /// Offset of row k of the patch matrix in the padded input, for output pixel (0, 0).
    k_offsets: Vec<usize>,
    panels_per_pass: usize,
}

/// Consecutive output pixels of one output row: their column among the
/// gathered rows, and the padded-input offset of their first pixel.
#[derive(Clone, Copy)]
struct Run {
    column: usize,
    source: usize,
    len: usize,
}

impl FillPlan {
    fn new(geometry: &Geometry, padded: &PaddedInput, k: usize, r: usize, panel_bytes: usize) -> FillPlan {
        let [kernel_height, kernel_width] = geometry.kernel;
        let [dilation_y, dilation_x] = geometry.dilations;
        let mut k_offsets = Vec::with_capacity(k);
        for channel in 0..geometry.channels {
            for ky in 0..kernel_height {
                for kx in 0..kernel_width {
                    k_offsets.push(channel * padded.plane + ky * dilation_y * padded.width + kx * dilation_x);
                }
            }
        }
        FillPlan {
            r,
            k_blocks: k.div_ceil(4),
            panel_bytes,
            pixels: geometry.pixels(),
            output_width: geometry.output[1],
            strides: geometry.strides,
            padded_width: padded.width,
            k_offsets,
            panels_per_pass: (ROWS_BUDGET / panel_bytes).max(1),
        }
    }

    /// Fills `output`, whole panels starting with panel `first_panel`.
    fn fill(&self, padded: &PaddedInput, first_panel: usize, output: &mut [u8]) {
        let panels_per_pass = self.panels_per_pass.min(output.len() / self.panel_bytes);
        let pitch = panels_per_pass * self.r + ROW_SLACK;
        // Rows from k to 4·k_blocks are the k padding, so they stay zero.
        let mut rows = vec![0i8; self.k_blocks * 4 * pitch];
        let mut runs = Vec::new();

        for (pass, output) in output.chunks_mut(panels_per_pass * self.panel_bytes).enumerate() {
            let first_pixel = (first_panel + pass * panels_per_pass) * self.r;
            let columns = output.len() / self.panel_bytes * self.r;
            let valid = columns.min(self.pixels - first_pixel);
            self.runs(first_pixel, valid, &mut runs);
            self.gather(padded, &runs, &mut rows, pitch);
            if valid < columns {
                // Only the last panel of the batch is partial. Its lanes past
                // the last pixel are zero in tract's layout.
                for row in rows.chunks_mut(pitch).take(self.k_offsets.len()) {
                    row[valid..columns].fill(0);
                }
            }
            if self.r == 8 {
                // Panels of 8 pixels go two at a time: one 16-byte shuffle
                // per pair of blocks instead of two 8-byte ones, and half the
                // loop overhead. For edgedet's AVX2 kernel (r = 8) this took
                // the `timing` test from 12.8 to 6.0 ms on one thread.
                for (pair, output) in output.chunks_mut(2 * self.panel_bytes).enumerate() {
                    let column = pair * 2 * self.r;
                    if output.len() == 2 * self.panel_bytes {
                        let (first, second) = output.split_at_mut(self.panel_bytes);
                        interleave_panel_pair(&rows, pitch, column, self.k_blocks, first, second);
                    } else {
                        interleave_panel(&rows, pitch, column, self.r, self.k_blocks, output);
                    }
                }
            } else {
                for (panel, output) in output.chunks_mut(self.panel_bytes).enumerate() {
                    let column = panel * self.r;
                    interleave_panel(&rows, pitch, column, self.r, self.k_blocks, output);
                }
            }
        }
    }

    /// Splits `count` output pixels from `first_pixel` on into runs along output rows.
    fn runs(&self, first_pixel: usize, count: usize, runs: &mut Vec<Run>) {
        runs.clear();
        let [stride_y, stride_x] = self.strides;
        let mut pixel = first_pixel;
        while pixel < first_pixel + count {
            let (y, x) = (pixel / self.output_width, pixel % self.output_width);
            let len = (self.output_width - x).min(first_pixel + count - pixel);
            runs.push(Run {
                column: pixel - first_pixel,
                source: y * stride_y * self.padded_width + x * stride_x,
                len,
            });
            pixel += len;
        }
    }

    /// Writes row k of the patch matrix for the pixels of `runs` into row k of `rows`.
    fn gather(&self, padded: &PaddedInput, runs: &[Run], rows: &mut [i8], pitch: usize) {
        let stride_x = self.strides[1];
        for (row, &offset) in rows.chunks_mut(pitch).zip(&self.k_offsets) {
            let source = &padded.data[offset..];
            for run in runs {
                let target = &mut row[run.column..];
                let source = &source[run.source..];
                // Whole blocks of 16 pixels: the slack after each row and
                // after the padded input absorbs the overshoot, which the next
                // run or the zeroing of a partial panel overwrites.
                match stride_x {
                    1 => {
                        for start in (0..run.len).step_by(16) {
                            target[start..][..16].copy_from_slice(&source[start..][..16]);
                        }
                    }
                    2 => {
                        for start in (0..run.len).step_by(16) {
                            simd::even_bytes(&source[2 * start..][..32], &mut target[start..][..16]);
                        }
                    }
                    _ => {
                        let source = source.iter().step_by(stride_x);
                        for (value, source) in target[..run.len].iter_mut().zip(source) {
                            *value = *source;
                        }
                    }
                }
            }
        }
    }
}

/// Writes one panel: for each block of 4 rows, the 4 bytes of each of the `r`
/// pixels from column `column` on, side by side.
fn interleave_panel(rows: &[i8], pitch: usize, column: usize, r: usize, k_blocks: usize, output: &mut [u8]) {
    for (block, output) in output.chunks_exact_mut(4 * r).take(k_blocks).enumerate() {
        let row = |i: usize| &rows[(4 * block + i) * pitch + column..][..r];
        let rows = [row(0), row(1), row(2), row(3)];
        let mut pixel = 0;
        while pixel + 16 <= r {
            let block = rows.map(|row| &row[pixel..][..16]);
            let (first, second) = output[4 * pixel..][..64].split_at_mut(32);
            simd::interleave16(block, first, second);
            pixel += 16;
        }
        if pixel + 8 <= r {
            let block = rows.map(|row| &row[pixel..][..8]);
            simd::interleave8(block, &mut output[4 * pixel..][..32]);
            pixel += 8;
        }
        let block = rows.map(|row| &row[pixel..]);
        portable::interleave(block, &mut output[4 * pixel..]);
    }
}

/// Writes two panels of 8 pixels each, from column `column` on: for each
/// block of 4 rows, pixels 0 to 7 into `first` and 8 to 15 into `second`.
fn interleave_panel_pair(
    rows: &[i8],
    pitch: usize,
    column: usize,
    k_blocks: usize,
    first: &mut [u8],
    second: &mut [u8],
) {
    let blocks = first.chunks_exact_mut(32).zip(second.chunks_exact_mut(32)).take(k_blocks);
    for (block, (first, second)) in blocks.enumerate() {
        let at = 4 * block * pitch + column;
        let row = |i: usize| &rows[at + i * pitch..][..16];
        simd::interleave16([row(0), row(1), row(2), row(3)], first, second);
    }
}

/// The byte shuffles of the fill without SIMD, for CPUs with no version below
/// and as the reference of the tests.
mod portable {
    /// Writes `output[4j + i] = rows[i][j]`.
    pub fn interleave(rows: [&[i8]; 4], output: &mut [u8]) {
        for (pixel, lane) in output.chunks_exact_mut(4).enumerate() {
            lane.copy_from_slice(&rows.map(|row| row[pixel] as u8));
        }
    }

    /// Writes `output[j] = source[2j]`.
    #[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), allow(dead_code))]
    pub fn even_bytes(source: &[i8], output: &mut [i8]) {
        for (value, source) in output.iter_mut().zip(source.iter().step_by(2)) {
            *value = *source;
        }
    }
}

/// SSE2, which every x86_64 CPU has.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Writes `first[4j + i] = rows[i][j]` for pixels 0 to 7 and the same
    /// into `second` for pixels 8 to 15: rows of 16 bytes, 32 bytes out to each.
    pub fn interleave16(rows: [&[i8]; 4], first: &mut [u8], second: &mut [u8]) {
        assert!(rows.iter().all(|row| row.len() == 16));
        assert!(first.len() == 32);
        assert!(second.len() == 32);
        // SAFETY: SSE2 is part of x86_64, and the lengths checked above
        // cover every load and store.
        unsafe {
            let [a, b, c, d] = rows.map(|row| _mm_loadu_si128(row.as_ptr().cast()));
            let (ab_low, ab_high) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
            let (cd_low, cd_high) = (_mm_unpacklo_epi8(c, d), _mm_unpackhi_epi8(c, d));
            let (first, second) = (first.as_mut_ptr().cast::<__m128i>(), second.as_mut_ptr().cast::<__m128i>());
            _mm_storeu_si128(first, _mm_unpacklo_epi16(ab_low, cd_low));
            _mm_storeu_si128(first.add(1), _mm_unpackhi_epi16(ab_low, cd_low));
            _mm_storeu_si128(second, _mm_unpacklo_epi16(ab_high, cd_high));
            _mm_storeu_si128(second.add(1), _mm_unpackhi_epi16(ab_high, cd_high));
        }
    }

    /// [`interleave16`] for 8 pixels: rows of 8 bytes, 32 bytes out.
    pub fn interleave8(rows: [&[i8]; 4], output: &mut [u8]) {
        assert!(rows.iter().all(|row| row.len() == 8));
        assert!(output.len() == 32);
        // SAFETY: as in `interleave16`.
        unsafe {
            let [a, b, c, d] = rows.map(|row| _mm_loadl_epi64(row.as_ptr().cast()));
            let (ab, cd) = (_mm_unpacklo_epi8(a, b), _mm_unpacklo_epi8(c, d));
            let output = output.as_mut_ptr().cast::<__m128i>();
            _mm_storeu_si128(output, _mm_unpacklo_epi16(ab, cd));
            _mm_storeu_si128(output.add(1), _mm_unpackhi_epi16(ab, cd));
        }
    }

    /// Writes `output[j] = source[2j]`: 32 bytes in, 16 out.
    pub fn even_bytes(source: &[i8], output: &mut [i8]) {
        assert!(source.len() == 32);
        assert!(output.len() == 16);
        // SAFETY: as in `interleave16`.
        unsafe {
            let low_bytes = _mm_set1_epi16(0x00ff);
            let first = _mm_and_si128(_mm_loadu_si128(source.as_ptr().cast()), low_bytes);
            let second = _mm_and_si128(_mm_loadu_si128(source.as_ptr().add(16).cast()), low_bytes);
            // Every 16-bit lane is in 0..=255, so the saturating pack keeps it whole.
            _mm_storeu_si128(output.as_mut_ptr().cast(), _mm_packus_epi16(first, second));
        }
    }
}

/// NEON, which every aarch64 CPU has.
#[cfg(target_arch = "aarch64")]
mod simd {
    use std::arch::aarch64::*;

    /// Writes `first[4j + i] = rows[i][j]` for pixels 0 to 7 and the same
    /// into `second` for pixels 8 to 15: rows of 16 bytes, 32 bytes out to each.
    pub fn interleave16(rows: [&[i8]; 4], first: &mut [u8], second: &mut [u8]) {
        assert!(rows.iter().all(|row| row.len() == 16));
        assert!(first.len() == 32);
        assert!(second.len() == 32);
        // SAFETY: NEON is part of aarch64, and the lengths checked above
        // cover every load and store.
        unsafe {
            let [a, b, c, d] = rows.map(|row| vld1q_u8(row.as_ptr().cast()));
            vst4_u8(first.as_mut_ptr(), uint8x8x4_t(vget_low_u8(a), vget_low_u8(b), vget_low_u8(c), vget_low_u8(d)));
            vst4_u8(
                second.as_mut_ptr(),
                uint8x8x4_t(vget_high_u8(a), vget_high_u8(b), vget_high_u8(c), vget_high_u8(d)),
            );
        }
    }

    /// [`interleave16`] for 8 pixels: rows of 8 bytes, 32 bytes out.
    pub fn interleave8(rows: [&[i8]; 4], output: &mut [u8]) {
        assert!(rows.iter().all(|row| row.len() == 8));
        assert!(output.len() == 32);
        // SAFETY: as in `interleave16`.
        unsafe {
            let [a, b, c, d] = rows.map(|row| vld1_u8(row.as_ptr().cast()));
            vst4_u8(output.as_mut_ptr(), uint8x8x4_t(a, b, c, d));
        }
    }

    /// Writes `output[j] = source[2j]`: 32 bytes in, 16 out.
    pub fn even_bytes(source: &[i8], output: &mut [i8]) {
        assert!(source.len() == 32);
        assert!(output.len() == 16);
        // SAFETY: as in `interleave16`.
        unsafe {
            let pairs = vld2q_u8(source.as_ptr().cast());
            vst1q_u8(output.as_mut_ptr().cast(), pairs.0);
        }
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod simd {
    pub use super::portable::{even_bytes, interleave as interleave8};

    pub fn interleave16(rows: [&[i8]; 4], first: &mut [u8], second: &mut [u8]) {
        super::portable::interleave(rows.map(|row| &row[..8]), first);
        super::portable::interleave(rows.map(|row| &row[8..]), second);
    }
}

/// Replaces every tract `Im2col` node of an optimized model that [`Im2colI8K4`]
/// can stand in for, padding with the value tract's node would use.
/// Returns how many nodes were replaced.
///
/// A node is replaced when its group count is 1, its kernel is 2-D, its
/// input is i8, its output packs to `PackedI8K4`, and its pad value input is
/// absent (pad 0) or a constant. Other nodes keep tract's op.
///
/// # Errors
/// A constant pad value outside the i8 range, or a failed patch.
pub fn replace_im2col(model: &mut TypedModel) -> TractResult<usize> {
    replace_im2col_with_pad(model, |_, pad_value| pad_value)
}

/// Like [`replace_im2col`], but the pad value of each replaced node is
/// `pad_value(node name, pad value of tract's node)`. tract names the node
/// `{convolution name}.im2col`.
///
/// # Errors
/// As [`replace_im2col`].
pub fn replace_im2col_with_pad(
    model: &mut TypedModel,
    mut pad_value: impl FnMut(&str, i8) -> i8,
) -> TractResult<usize> {
    let mut replacements = vec![];
    for node in model.nodes() {
        if let Some(op) = replacement_for(model, node)? {
            replacements.push((node.name.clone(), op));
        }
    }

    for (name, mut op) in replacements.iter().cloned() {
        op.pad_value = pad_value(&name, op.pad_value);
        let node = model.node_by_name(&name)?;
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs[0..1], op)
            .with_context(|| format!("replacing {name} with {OP_NAME}"))?;
        patch.apply(model).with_context(|| format!("replacing {name} with {OP_NAME}"))?;
    }
    Ok(replacements.len())
}

/// Checks whether this CPU runs any integer matrix kernel that reads its
/// activations as `PackedI8K4`: only then can [`Im2colI8K4`] stand in for
/// tract's im2col. Asked before optimising, because optimising yolov4 costs
/// more than a second and would be thrown away on other CPUs.
pub fn cpu_has_k4_kernel() -> bool {
    tract_linalg::mmm_routines::runnable_for(&tract_linalg::isa::native()).iter().any(|kernel| {
        kernel.internal_type() == DatumType::I32
            && kernel.packings().iter().any(|(_, b)| b.downcast_ref::<PackedI8K4>().is_some())
    })
}

/// Names of the tract `Im2col` nodes left in `model`, for a caller that needs
/// every padded convolution to go through [`Im2colI8K4`].
pub fn tract_im2col_nodes(model: &TypedModel) -> Vec<String> {
    model.nodes().iter().filter(|node| node.op_is::<Im2Col>()).map(|node| node.name.clone()).collect()
}

/// Builds the op that replaces `node`, or `None` when `node` is not a tract
/// `Im2Col` that [`Im2colI8K4`] can stand in for.
fn replacement_for(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Im2colI8K4>> {
    let Some(im2col) = node.op_as::<Im2Col>() else { return Ok(None) };
    if im2col.group != 1 || im2col.pool_spec.rank() != 2 {
        return Ok(None);
    }
    let input_fact = model.outlet_fact(node.inputs[0])?;
    if input_fact.datum_type.unquantized() != i8::datum_type() {
        return Ok(None);
    }
    let packed = node.outputs[0].fact.exotic_fact().and_then(|fact| fact.downcast_ref::<PackedExoticFact>());
    let Some(packing) = packed.and_then(|packed| packed.format.downcast_ref::<PackedI8K4>()) else {
        return Ok(None);
    };
    let pad_value = match node.inputs.get(1) {
        None => 0,
        Some(&outlet) => match model.outlet_fact(outlet)?.konst.as_ref() {
            Some(value) if value.len() == 1 => {
                let value = value.cast_to_scalar::<i32>()?;
                i8::try_from(value)
                    .map_err(|_| format_err!("{}: pad value {value} is outside the i8 range", node.name))?
            }
            _ => return Ok(None),
        },
    };

    // The matrix product was planned for the exact fact of tract's node.
    let op = Im2colI8K4 { pool_spec: im2col.pool_spec.clone(), packing: packing.clone(), pad_value };
    let fact = op.output_facts(&[input_fact])?.remove(0);
    let expected = &node.outputs[0].fact;
    let same_packing = fact.exotic_fact().and_then(|f| f.downcast_ref::<PackedExoticFact>()) == packed;
    if fact.datum_type != expected.datum_type || fact.shape != expected.shape || !same_packing {
        return Ok(None);
    }
    Ok(Some(op))
}

#[cfg(test)]
mod tests {
    use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
    use tract_core::ops::nn::DataFormat;
    use tract_linalg::mmm::MMMInputFormat;
    use tract_linalg::multithread::{multithread_tract_scope, Executor};
    use tract_linalg::pack::PackedFormat;

    use super::*;

    /// The input zero point, which padded taps read.
    const ZERO_POINT: i8 = -37;

    /// One quantized convolution: channels in and out, input size, square
    /// kernel, stride, padding before and after (height, width), dilation.
    #[derive(Clone, Copy, Debug)]
    struct Case {
        channels: usize,
        filters: usize,
        height: usize,
        width: usize,
        kernel: usize,
        stride: usize,
        pad_before: [usize; 2],
        pad_after: [usize; 2],
        dilation: usize,
    }

    const fn case(channels: usize, size: usize, kernel: usize, stride: usize, pad: usize) -> Case {
        Case {
            channels,
            filters: 8,
            height: size,
            width: size,
            kernel,
            stride,
            pad_before: [pad, pad],
            pad_after: [pad, pad],
            dilation: 1,
        }
    }

    /// Shapes of yolov4-tiny and yolov4 with fewer channels, plus the edges
    /// of the geometry: k and pixel counts that are not multiples of 4 or r,
    /// odd sizes, asymmetric padding, no padding, dilation.
    const CASES: [Case; 11] = [
        // yolov4-tiny's first layer, whole: k = 27, 208×208 outputs.
        Case { filters: 32, ..case(3, 416, 3, 2, 1) },
        case(3, 26, 3, 2, 1),
        case(8, 13, 3, 1, 1),
        case(16, 26, 3, 1, 1),
        case(4, 52, 3, 1, 1),
        case(5, 13, 3, 2, 1),
        case(7, 8, 3, 1, 1),
        Case { height: 10, width: 7, ..case(6, 0, 3, 1, 0) },
        Case { pad_before: [0, 0], pad_after: [1, 1], ..case(3, 12, 3, 2, 0) },
        case(2, 9, 5, 1, 2),
        Case { dilation: 2, ..case(3, 11, 3, 1, 2) },
    ];

    impl Case {
        fn pool_spec(&self, data_format: DataFormat) -> PoolSpec {
            PoolSpec {
                data_format,
                kernel_shape: tvec![self.kernel, self.kernel],
                padding: PaddingSpec::Explicit(self.pad_before[..].into(), self.pad_after[..].into()),
                dilations: Some(tvec![self.dilation, self.dilation]),
                strides: Some(tvec![self.stride, self.stride]),
                input_channels: self.channels,
                output_channels: self.filters,
            }
        }

        fn output(&self) -> [usize; 2] {
            let reach = (self.kernel - 1) * self.dilation + 1;
            [
                (self.height + self.pad_before[0] + self.pad_after[0] - reach) / self.stride + 1,
                (self.width + self.pad_before[1] + self.pad_after[1] - reach) / self.stride + 1,
            ]
        }

        fn k(&self) -> usize {
            self.channels * self.kernel * self.kernel
        }

        /// Generates the input, in channel, height, width order.
        fn input(&self, seed: u32) -> Vec<i8> {
            pseudo_random(seed, self.channels * self.height * self.width, 256)
        }
    }

    /// Deterministic bytes spread over `range` values centred on 0.
    fn pseudo_random(seed: u32, len: usize, range: u32) -> Vec<i8> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((state >> 16) % range) as i32 - (range / 2) as i32
            })
            .map(|value| value as i8)
            .collect()
    }

    /// Packs the patch matrix of one CHW input from the layout's definition,
    /// one byte at a time.
    fn reference_packing(case: &Case, input: &[i8], r: usize, pad_value: i8) -> Vec<u8> {
        let [output_height, output_width] = case.output();
        let pixels = output_height * output_width;
        let k = case.k();
        let panel_bytes = k.div_ceil(4) * 4 * r;
        let mut packed = vec![0u8; pixels.div_ceil(r) * panel_bytes];
        for pixel in 0..pixels {
            let (oy, ox) = (pixel / output_width, pixel % output_width);
            for channel in 0..case.channels {
                for ky in 0..case.kernel {
                    for kx in 0..case.kernel {
                        let row = (channel * case.kernel + ky) * case.kernel + kx;
                        let y = (oy * case.stride + ky * case.dilation) as isize - case.pad_before[0] as isize;
                        let x = (ox * case.stride + kx * case.dilation) as isize - case.pad_before[1] as isize;
                        let inside = (0..case.height as isize).contains(&y) && (0..case.width as isize).contains(&x);
                        let value = if inside {
                            input[(channel * case.height + y as usize) * case.width + x as usize]
                        } else {
                            pad_value
                        };
                        packed[(pixel / r) * panel_bytes + (row / 4) * 4 * r + (pixel % r) * 4 + row % 4] = value as u8;
                    }
                }
            }
        }
        packed
    }

    /// Extracts the packed values of an im2col output, one per batch.
    fn packed_values(output: &Tensor) -> Vec<EagerPackedInput> {
        let storage = output.try_storage_as::<PackedMatrixStorage>().expect("im2col output is packed");
        storage
            .values()
            .iter()
            .map(|value| value.downcast_ref::<EagerPackedInput>().expect("im2col output is eager").clone())
            .collect()
    }

    fn eval_op(op: &Im2colI8K4, input: Tensor) -> Vec<EagerPackedInput> {
        let outputs = op.eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue())).unwrap();
        packed_values(&outputs[0])
    }

    #[test]
    fn packing_matches_layout_definition() {
        for case in &CASES {
            let input = case.input(1);
            // 8 and 16 are the r of tract's x86 and arm64 kernels, 32 of its
            // SME kernel; 4 and 12 take the paths for other widths.
            for r in [4, 8, 12, 16, 32] {
                let op = Im2colI8K4 {
                    pool_spec: case.pool_spec(DataFormat::NCHW),
                    packing: PackedI8K4::new(r),
                    pad_value: ZERO_POINT,
                };
                let tensor = tensor1(&input).into_shape(&[1, case.channels, case.height, case.width]).unwrap();
                let values = eval_op(&op, tensor);
                assert_eq!(values.len(), 1, "{case:?}");
                let [output_height, output_width] = case.output();
                assert_eq!(values[0].mn, output_height * output_width, "{case:?} r={r}");
                assert_eq!(values[0].fact.k, case.k(), "{case:?} r={r}");
                assert_eq!(values[0].panel_bytes, case.k().div_ceil(4) * 4 * r, "{case:?} r={r}");
                let expected = reference_packing(case, &input, r, ZERO_POINT);
                assert!(values[0].packed.as_bytes() == expected.as_slice(), "{case:?} r={r}: packed bytes differ");
            }
        }
    }

    #[test]
    fn packing_reads_channel_last_and_batched_inputs() {
        let case = case(5, 13, 3, 2, 1);
        let first = case.input(2);
        let second = case.input(3);
        let expected =
            [reference_packing(&case, &first, 16, ZERO_POINT), reference_packing(&case, &second, 16, ZERO_POINT)];
        let op = |data_format| Im2colI8K4 {
            pool_spec: case.pool_spec(data_format),
            packing: PackedI8K4::new(16),
            pad_value: ZERO_POINT,
        };

        let chw = tensor1(&[first.clone(), second.clone()].concat())
            .into_shape(&[2, case.channels, case.height, case.width])
            .unwrap();
        let batched = eval_op(&op(DataFormat::NCHW), chw.clone());
        assert_eq!(batched.len(), 2);
        assert!(batched[0].packed.as_bytes() == expected[0].as_slice(), "NCHW batch 0 differs");
        assert!(batched[1].packed.as_bytes() == expected[1].as_slice(), "NCHW batch 1 differs");

        let hwc = chw.permute_axes(&[0, 2, 3, 1]).unwrap();
        let batched = eval_op(&op(DataFormat::NHWC), hwc.clone());
        assert!(batched[0].packed.as_bytes() == expected[0].as_slice(), "NHWC batch 0 differs");
        assert!(batched[1].packed.as_bytes() == expected[1].as_slice(), "NHWC batch 1 differs");

        let single = hwc.slice(0, 1, 2).unwrap().into_shape(&[case.height, case.width, case.channels]).unwrap();
        let values = eval_op(&op(DataFormat::HWC), single);
        assert_eq!(values.len(), 1);
        assert!(values[0].packed.as_bytes() == expected[1].as_slice(), "HWC differs");
    }

    #[test]
    fn packing_is_the_same_on_two_threads() {
        let case = case(4, 52, 3, 1, 1);
        let input = case.input(4);
        let op = Im2colI8K4 { pool_spec: case.pool_spec(DataFormat::CHW), packing: PackedI8K4::new(8), pad_value: 12 };
        let tensor = || tensor1(&input).into_shape(&[case.channels, case.height, case.width]).unwrap();
        let threaded = multithread_tract_scope(Executor::multithread(2), || eval_op(&op, tensor()));
        let expected = reference_packing(&case, &input, 8, 12);
        assert!(threaded[0].packed.as_bytes() == expected.as_slice(), "two-thread packing differs");
    }

    #[test]
    fn simd_shuffles_match_portable_ones() {
        let bytes = pseudo_random(8, 64, 256);
        let rows: [&[i8]; 4] = [0, 1, 2, 3].map(|i| &bytes[16 * i..][..16]);
        let (mut simd, mut portable) = ([0u8; 64], [0u8; 64]);
        let (first, second) = simd.split_at_mut(32);
        simd::interleave16(rows, first, second);
        portable::interleave(rows, &mut portable);
        assert_eq!(simd, portable);

        let rows = rows.map(|row| &row[..8]);
        let (mut simd, mut portable) = ([0u8; 32], [0u8; 32]);
        simd::interleave8(rows, &mut simd);
        portable::interleave(rows, &mut portable);
        assert_eq!(simd, portable);
        assert_eq!(
            portable[..8],
            [bytes[0], bytes[16], bytes[32], bytes[48], bytes[1], bytes[17], bytes[33], bytes[49]].map(|b| b as u8)
        );

        let (mut simd, mut portable) = ([0i8; 16], [0i8; 16]);
        simd::even_bytes(&bytes[..32], &mut simd);
        portable::even_bytes(&bytes[..32], &mut portable);
        assert_eq!(simd, portable);
        assert_eq!(portable[..3], [bytes[0], bytes[2], bytes[4]]);
    }

    /// Builds and optimizes a model of one quantized convolution, wired as
    /// edgedet's int8 graph wires it: i8 input with zero point
    /// `input_zero_point`, i8 weights with zero point 0, per-tensor scales, i8
    /// output.
    fn conv_model(case: &Case, input_zero_point: i32, bias_offset: &[i32]) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", i8::fact([1, case.channels, case.height, case.width])).unwrap();
        let weights = pseudo_random(5, case.filters * case.k(), 64);
        let kernel = tensor1(&weights).into_shape(&[case.filters, case.channels, case.kernel, case.kernel]).unwrap();
        let bias: Vec<i32> = (0..case.filters).map(|f| (f as i32 * 997) % 4000 - 2000 + bias_offset[f]).collect();

        // The root mean square of an accumulator, with |x| ≈ 74 and |w| ≈ 18
        // over k products, becomes about 40 output steps, so outputs vary
        // without saturating.
        let (x_scale, k_scale) = (0.02f32, 0.01f32);
        let y_scale = x_scale * k_scale * (case.k() as f32).sqrt() * 74.0 * 18.0 / 40.0;

        let mut constant = |name: &str, value: Tensor| model.add_const(name, value).unwrap();
        let inputs = [
            x,
            constant("kernel", kernel),
            constant("bias", tensor1(&bias)),
            constant("x0", tensor0(input_zero_point)),
            constant("x_scale", tensor0(x_scale)),
            constant("k0", tensor0(0i32)),
            constant("k_scale", tensor0(k_scale)),
            constant("y0", tensor0(5i32)),
            constant("y_scale", tensor0(y_scale)),
        ];
        let op = Conv {
            pool_spec: case.pool_spec(DataFormat::NCHW),
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: Some(i8::datum_type()),
        };
        let y = model.wire_node("conv", op, &inputs).unwrap();
        model.select_output_outlets(&y).unwrap();
        model.into_optimized().unwrap()
    }

    /// Reads the packing of the only tract `Im2col` node of `model`.
    fn tract_packing(model: &TypedModel) -> Box<dyn MMMInputFormat> {
        let names = tract_im2col_nodes(model);
        assert_eq!(names.len(), 1, "expected one Im2col node, found {names:?}");
        let fact = &model.node_by_name(&names[0]).unwrap().outputs[0].fact;
        let packed = fact.exotic_fact().and_then(|fact| fact.downcast_ref::<PackedExoticFact>()).expect("packed fact");
        packed.format.clone()
    }

    /// Runs `model` with the im2col node's output as a second output: the
    /// convolution's output and the packed bytes.
    fn run_with_im2col(model: &TypedModel, im2col: &str, input: &[i8], case: &Case) -> (Tensor, Vec<u8>) {
        let mut model = model.clone();
        let conv = model.output_outlets().unwrap()[0];
        let packed = OutletId::new(model.node_id_by_name(im2col).unwrap(), 0);
        model.select_output_outlets(&[conv, packed]).unwrap();
        let plan = model.into_runnable().unwrap();
        let x = tensor1(input).into_shape(&[1, case.channels, case.height, case.width]).unwrap();
        let outputs = plan.run(tvec!(x.into_tvalue())).unwrap();
        let values = packed_values(&outputs[1]);
        assert_eq!(values.len(), 1);
        (outputs[0].clone().into_tensor(), values[0].packed.as_bytes().to_vec())
    }

    fn plan_op_names(model: &TypedModel) -> Vec<String> {
        let plan = model.clone().into_runnable().unwrap();
        plan.order_without_consts().iter().map(|&id| plan.model().node(id).op.name().to_string()).collect()
    }

    fn distinct_values(tensor: &Tensor) -> usize {
        let mut values = tensor.try_as_plain_ram().unwrap().as_slice::<i8>().unwrap().to_vec();
        values.sort_unstable();
        values.dedup();
        values.len()
    }

    #[test]
    fn replacement_matches_tract_im2col() {
        for case in &CASES {
            let mut model = conv_model(case, ZERO_POINT.into(), &[0; 32]);
            let input = case.input(6);
            let format = tract_packing(&model);
            let im2col = tract_im2col_nodes(&model).remove(0);
            let (tract_output, tract_packed) = run_with_im2col(&model, &im2col, &input, case);
            assert!(distinct_values(&tract_output) >= 16, "{case:?}: output is nearly constant");

            let Some(packing) = format.downcast_ref::<PackedI8K4>() else {
                // tract's int8 kernel on this CPU packs to another layout:
                // the node must be left to tract.
                assert!(format.downcast_ref::<PackedFormat>().is_some(), "unexpected packing {format:?}");
                assert_eq!(replace_im2col(&mut model).unwrap(), 0);
                assert_eq!(tract_im2col_nodes(&model), vec![im2col]);
                continue;
            };
            let expected = reference_packing(case, &input, packing.r, ZERO_POINT);
            assert!(tract_packed == expected, "{case:?}: tract's packing differs from the layout definition");

            assert_eq!(replace_im2col(&mut model).unwrap(), 1, "{case:?}");
            assert!(tract_im2col_nodes(&model).is_empty(), "{case:?}");
            assert!(plan_op_names(&model).iter().any(|name| name == OP_NAME), "{case:?}: {OP_NAME} is not in the plan");
            let (output, packed) = run_with_im2col(&model, &im2col, &input, case);
            assert!(packed == tract_packed, "{case:?} {packing}: packed bytes differ from tract's");
            assert_eq!(output, tract_output, "{case:?} {packing}: convolution outputs differ");
        }
    }

    #[test]
    fn pointwise_convolution_is_left_alone() {
        let case = case(16, 13, 1, 1, 0);
        let mut model = conv_model(&case, ZERO_POINT.into(), &[0; 8]);
        let before = plan_op_names(&model);
        assert!(tract_im2col_nodes(&model).is_empty(), "tract now lowers a 1×1 convolution through Im2col: {before:?}");
        assert_eq!(replace_im2col(&mut model).unwrap(), 0);
        assert_eq!(plan_op_names(&model), before);
    }

    /// A graph that gives tract an input zero point of 0, adds
    /// `−zero_point · Σw` to the bias and pads with the real zero point in
    /// the im2col must compute the plain graph's output.
    #[test]
    fn zero_point_folded_into_bias_gives_same_output() {
        let case = case(16, 26, 3, 1, 1);
        let plain = conv_model(&case, ZERO_POINT.into(), &[0; 8]);
        let weights = pseudo_random(5, case.filters * case.k(), 64);
        let folded: Vec<i32> = weights
            .chunks(case.k())
            .map(|filter| -i32::from(ZERO_POINT) * filter.iter().map(|&w| i32::from(w)).sum::<i32>())
            .collect();
        let mut model = conv_model(&case, 0, &folded);
        let input = case.input(7);
        let im2col = tract_im2col_nodes(&model).remove(0);
        let (expected, _) = run_with_im2col(&plain, &im2col, &input, &case);

        let replaced = replace_im2col_with_pad(&mut model, |name, pad_value| {
            assert_eq!(name, "conv.im2col");
            assert_eq!(pad_value, 0);
            ZERO_POINT
        })
        .unwrap();
        let Some(packing) = tract_packing(&plain).downcast_ref::<PackedI8K4>().cloned() else {
            // Without the replacement the folded graph would pad with 0.
            assert_eq!(replaced, 0);
            return;
        };
        assert_eq!(replaced, 1);
        let (output, packed) = run_with_im2col(&model, &im2col, &input, &case);
        assert!(packed == reference_packing(&case, &input, packing.r, ZERO_POINT), "padding is not the zero point");
        assert!(distinct_values(&expected) >= 16, "output is nearly constant");
        assert_eq!(output, expected);
    }
}

/// Times tract's `Im2col` against [`Im2colI8K4`] on the convolutions of
/// yolov4-tiny at 416×416 that go through im2col. Run with
/// `cargo test --release --lib quant::im2col::timing -- --ignored --nocapture`.
#[cfg(test)]
mod timing {
    use std::time::{Duration, Instant};

    use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
    use tract_core::ops::nn::DataFormat;
    use tract_linalg::multithread::{multithread_tract_scope, Executor};

    use super::*;

    /// Input channels, input size, output channels and stride of the 3×3 layers.
    const YOLOV4_TINY_416: [(usize, usize, usize, usize); 14] = [
        (3, 416, 32, 2),
        (32, 208, 64, 2),
        (64, 104, 64, 1),
        (32, 104, 32, 1),
        (32, 104, 32, 1),
        (128, 52, 128, 1),
        (64, 52, 64, 1),
        (64, 52, 64, 1),
        (256, 26, 256, 1),
        (128, 26, 128, 1),
        (128, 26, 128, 1),
        (512, 13, 512, 1),
        (256, 13, 512, 1),
        (384, 26, 256, 1),
    ];

    fn fastest(runs: usize, mut run: impl FnMut()) -> Duration {
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                run();
                start.elapsed()
            })
            .min()
            .unwrap_or_default()
    }

    fn bytes(outputs: &TVec<TValue>) -> Vec<u8> {
        let storage = outputs[0].try_storage_as::<PackedMatrixStorage>().unwrap();
        storage.values()[0].downcast_ref::<EagerPackedInput>().unwrap().packed.as_bytes().to_vec()
    }

    #[test]
    #[ignore = "timing: run in release with --ignored --nocapture"]
    fn yolov4_tiny_layers() {
        let mut totals = [Duration::ZERO; 3];
        println!("layer  input        k     pixels  packing   tract ms  ours ms  ours 2 threads ms");
        for (index, &(channels, size, filters, stride)) in YOLOV4_TINY_416.iter().enumerate() {
            let pool_spec = PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![3, 3],
                padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
                dilations: None,
                strides: Some(tvec![stride, stride]),
                input_channels: channels,
                output_channels: filters,
            };
            let mut model = TypedModel::default();
            let x = model.add_source("x", i8::fact([1, channels, size, size])).unwrap();
            let kernel = Tensor::zero::<i8>(&[filters, channels, 3, 3]).unwrap();
            let mut constant = |name: &str, value: Tensor| model.add_const(name, value).unwrap();
            let inputs = [
                x,
                constant("kernel", kernel),
                constant("bias", Tensor::zero::<i32>(&[filters]).unwrap()),
                constant("x0", tensor0(-37i32)),
                constant("x_scale", tensor0(0.02f32)),
                constant("k0", tensor0(0i32)),
                constant("k_scale", tensor0(0.01f32)),
                constant("y0", tensor0(0i32)),
                constant("y_scale", tensor0(0.1f32)),
            ];
            let op = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: 1, q_params: Some(i8::datum_type()) };
            let y = model.wire_node("conv", op, &inputs).unwrap();
            model.select_output_outlets(&y).unwrap();
            let model = model.into_optimized().unwrap();

            let node = model.node_by_name("conv.im2col").unwrap();
            let pad = model.outlet_fact(node.inputs[1]).unwrap().konst.clone().unwrap().into_tvalue();
            let ours = replacement_for(&model, node).unwrap().expect("replaceable");
            let input = Tensor::from_shape(
                &[1, channels, size, size],
                &(0..channels * size * size).map(|i| (i * 7 % 251) as i8).collect::<Vec<_>>(),
            )
            .unwrap()
            .into_tvalue();

            let tract_run = || node.op.eval_out_of_plan(tvec!(input.clone(), pad.clone())).unwrap().unwrap();
            let ours_run = || ours.eval_out_of_plan(tvec!(input.clone())).unwrap().unwrap();
            assert!(bytes(&tract_run()) == bytes(&ours_run()), "layer {index}: packed bytes differ");
            let times = [
                fastest(10, || drop(tract_run())),
                fastest(10, || drop(ours_run())),
                multithread_tract_scope(Executor::multithread(2), || fastest(10, || drop(ours_run()))),
            ];
            for (total, time) in totals.iter_mut().zip(times) {
                *total += time;
            }
            println!(
                "{index:>5}  {channels:>3}×{size:>3}×{size:<3} {:>5} {:>8}  {:<8} {:>8.2} {:>8.2} {:>8.2}",
                ours.k(),
                (size / stride) * (size / stride),
                ours.packing.to_string(),
                times[0].as_secs_f64() * 1e3,
                times[1].as_secs_f64() * 1e3,
                times[2].as_secs_f64() * 1e3,
            );
        }
        println!(
            "total{:>39} {:>8.2} {:>8.2} {:>8.2}",
            "",
            totals[0].as_secs_f64() * 1e3,
            totals[1].as_secs_f64() * 1e3,
            totals[2].as_secs_f64() * 1e3
        );
    }
}
