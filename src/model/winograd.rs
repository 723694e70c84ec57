//! Float 3×3 convolutions of stride 1 by Winograd's minimal filtering, F(m×m, 3×3).
//!
//! tract 0.23.9 runs every float convolution as an im2col and a matrix
//! product, 9 multiply-adds per input channel and output value. In
//! yolov4-tiny, 3×3 convolutions of stride 1 hold 3.1 G of its 3.45 G
//! multiply-adds. OpenCV DNN and ncnn run these with Winograd's algorithm,
//! which is why edgedet f32 was slower than both at the same kernel speed.
//!
//! F(4×4, 3×3) turns each 6×6 tile of the input into 36 transformed values,
//! each 3×3 kernel into 36 values, multiplies them point by point and
//! transforms the 36 sums back into a 4×4 tile of the output. Summed over
//! the input channels, the point-by-point products are 36 matrix products of
//! (output channels × input channels) by (input channels × tiles), which run
//! on tract-linalg's own kernels: 2.25 multiply-adds per input channel and
//! output value instead of 9. F(2×2, 3×3) has 16 points and 4 multiply-adds.
//!
//! The kernel is transformed and packed once, when the model is optimised.
//! It then takes (m + 2)² / 9 times the memory of the 3×3 kernel: 4 times for
//! F(4×4), 1.8 times for F(2×2). [`replace_convolutions`] chooses per layer
//! (see [`Tile::for_input`]).
//!
//! Each of the three steps (input transform, products, output transform) is
//! split over tract's threads, and the products of one point run on one
//! thread. Running bands of tile rows through all three steps on one thread,
//! so that a band's values stay in the L2 cache, was slower on the README's
//! machine: each band reads the whole transformed kernel again, and its
//! products have few columns.
//!
//! On yolov4-tiny at 416×416 on the README's 2-core AMD EPYC, f32 went from
//! 95–99 to 64–68 ms on one thread and from 54–60 to 35 ms on two.
//!
//! NOTE: f16 keeps tract's convolutions: the transforms here are written for
//! f32, and tract-linalg's f16 kernels would need f16 panels. Stride-2 3×3
//! convolutions (yolov4-tiny's first two layers) also keep tract's im2col;
//! splitting the input into its four phases would make them 2×2 convolutions
//! of stride 1, which F(m×m, 2×2) could take.

use std::alloc::Layout;
use std::cell::RefCell;
use std::fmt;
use std::ops::Range;

use rayon::prelude::*;
use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat};
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::nn::{DataFormat, LeakyRelu};
use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputFormat, MMMInputValue, MatMatMul, PackedExoticFact};
use tract_linalg::multithread::{current_tract_executor, Executor};
use tract_linalg::pack::PackedFormat;

use super::mish::{self, Mish};

/// Name of [`WinogradConv`] in model dumps and plans.
pub const OP_NAME: &str = "WinogradConv";

/// The environment variable that turns the replacement off (see [`switched_on`]),
/// for comparing with tract's own convolutions.
pub const SWITCH: &str = "EDGEDET_WINOGRAD";

/// The output tile size m of F(m×m, 3×3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tile {
    /// F(2×2, 3×3): 16 points, 4 multiply-adds per input channel and output value.
    F2,
    /// F(4×4, 3×3): 36 points, 2.25 multiply-adds per input channel and output value.
    F4,
}

impl Tile {
    /// Output values along each side of a tile.
    pub fn outputs(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Input values along each side of a tile, and the side of the transformed tile.
    pub fn points(self) -> usize {
        self.outputs() + 2
    }

    /// Returns the tile for an input of `height` × `width`.
    ///
    /// F(4×4) takes fewer multiply-adds per output value, but its tiles
    /// overrun small inputs: on 13×13, its 16 tiles cover 16×16. Its matrix
    /// products of 16 columns ran slower than F(2×2)'s of 49 there (5.4
    /// against 4.4 ms for yolov4-tiny's 512 × 512 channels on one thread).
    /// On 26×26, F(4×4) took 5.5 ms where F(2×2) took 7.7 (384 → 256
    /// channels). So inputs of at least 36 F(4×4) tiles take F(4×4).
    ///
    /// F(6×6, 3×3) takes a fifth fewer multiply-adds than F(4×4) again. Its transforms of 8×8 values made yolov4-tiny's six
    /// largest layers slower all the same (23.1 against 21.6 ms on one
    /// thread), so it is not offered.
    pub fn for_input(height: usize, width: usize) -> Tile {
        if height.div_ceil(4) * width.div_ceil(4) >= 36 {
            Tile::F4
        } else {
            Tile::F2
        }
    }
}

/// The activation the op applies to each output value after the bias.
#[derive(Clone, Copy, Debug)]
pub enum Activation {
    Linear,
    Leaky(f32),
    Mish,
}

impl Activation {
    /// Returns the name of the activation's op in tract and edgedet, or none for `Linear`.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Activation::Linear => None,
            Activation::Leaky(_) => Some("LeakyRelu"),
            Activation::Mish => Some(mish::OP_NAME),
        }
    }
}

impl PartialEq for Activation {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Activation::Leaky(a), Activation::Leaky(b)) => a.to_bits() == b.to_bits(),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Eq for Activation {}

/// A float 3×3 convolution of stride 1 with one pixel of zero padding on
/// each side, its bias and an activation, on NCHW inputs of batch 1 or CHW inputs.
#[derive(Clone)]
pub struct WinogradConv {
    pub tile: Tile,
    pub input_channels: usize,
    pub output_channels: usize,
    pub activation: Activation,
    bias: Arc<Vec<f32>>,
    /// The transformed kernel: one packed (output channels × input channels) matrix per point.
    kernel: Arc<Vec<Box<dyn MMMInputValue>>>,
    mmm: Box<dyn MatMatMul>,
    packing: usize,
    /// The packing in which the kernel reads the transformed input.
    input_format: PackedFormat,
}

impl PartialEq for WinogradConv {
    fn eq(&self, other: &Self) -> bool {
        self.tile == other.tile
            && self.activation == other.activation
            && Arc::ptr_eq(&self.kernel, &other.kernel)
            && self.bias == other.bias
    }
}

impl Eq for WinogradConv {}

impl fmt::Debug for WinogradConv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{OP_NAME}({:?}, {}→{} channels, {:?}, {})",
            self.tile,
            self.input_channels,
            self.output_channels,
            self.activation,
            self.mmm.name()
        )
    }
}

/// The kernel transforms `G` of F(2×2, 3×3) and F(4×4, 3×3), with the
/// interpolation points 0, ±1, ±2 and ∞: input `Bᵀ d B`, kernel `G g Gᵀ`,
/// output `Aᵀ M A`.
const KERNEL_2: [[f64; 3]; 4] = [[1., 0., 0.], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0., 0., 1.]];

const KERNEL_4: [[f64; 3]; 6] = [
    [1. / 4., 0., 0.],
    [-1. / 6., -1. / 6., -1. / 6.],
    [-1. / 6., 1. / 6., -1. / 6.],
    [1. / 24., 1. / 12., 1. / 6.],
    [1. / 24., -1. / 12., 1. / 6.],
    [0., 0., 1.],
];
impl WinogradConv {
    /// Returns the name of tract-linalg's matrix kernel that runs the products.
    pub fn kernel_name(&self) -> &str {
        self.mmm.name()
    }

    /// Transforms and packs `kernel` (OIHW, 3×3) for the matrix kernel tract prefers for `tiles` tiles.
    pub fn new(
        kernel: &Tensor,
        bias: Vec<f32>,
        activation: Activation,
        tile: Tile,
        tiles: usize,
    ) -> TractResult<WinogradConv> {
        let &[outputs, inputs, 3, 3] = kernel.shape() else {
            bail!("{OP_NAME} takes an OIHW kernel of 3×3, found shape {:?}", kernel.shape())
        };
        ensure!(bias.len() == outputs, "{OP_NAME}: {} bias values for {outputs} output channels", bias.len());
        let mmm = tract_linalg::MmmDispatch::native()
            .preferred_kernel(f32::datum_type(), Some(outputs), Some(inputs), Some(tiles))
            .context("tract-linalg has no f32 matrix kernel")?;
        let packing = mmm
            .packings()
            .iter()
            .position(|(a, b)| {
                [a, b].iter().all(|f| f.downcast_ref::<PackedFormat>().is_some_and(|p| p.dt == f32::datum_type()))
            })
            .with_context(|| format!("{} has no packing of plain f32 operands", mmm.name()))?;
        let (kernel_format, input_format) = &mmm.packings()[packing];
        let input_format = input_format.downcast_ref::<PackedFormat>().cloned().context("f32 packing")?;

        let points = tile.points();
        let weights = floats(kernel)?;
        let g = match tile {
            Tile::F2 => &KERNEL_2[..],
            Tile::F4 => &KERNEL_4[..],
        };
        // Transformed per (output, input) pair, the pair's A² points side by
        // side, on every core, because yolov4 has millions of pairs.
        let pairs = outputs * inputs;
        // SAFETY: the threads below write every value, each pair's points in turn.
        let mut transformed = unsafe { Tensor::uninitialized::<f32>(&[outputs, inputs, points * points])? };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_thread = pairs.div_ceil(cores).max(1024);
        {
            let mut plain = transformed.try_as_plain_ram_mut()?;
            let values = plain.as_slice_mut::<f32>()?;
            std::thread::scope(|scope| {
                for (taps, target) in
                    weights.chunks(per_thread * 9).zip(values.chunks_mut(per_thread * points * points))
                {
                    scope.spawn(move || transform_kernels(g, taps, target));
                }
            });
        }
        // One (outputs × inputs) matrix per point, packed for the kernel.
        let (shape, strides) = ([outputs, inputs], [(inputs * points * points) as isize, (points * points) as isize]);
        let pack = |point: usize| {
            // SAFETY: the view of point `point` of every pair lies inside the tensor.
            let view =
                unsafe { TensorView::from_bytes(&transformed, (point * size_of::<f32>()) as isize, &shape, &strides) };
            kernel_format.prepare_one_view(&view, 1, 0)
        };
        let kernel: Vec<Box<dyn MMMInputValue>> = std::thread::scope(|scope| {
            let per_thread = (points * points).div_ceil(cores);
            let handles: Vec<_> = (0..points * points)
                .step_by(per_thread)
                .map(|first| {
                    let pack = &pack;
                    scope.spawn(move || {
                        (first..(first + per_thread).min(points * points)).map(pack).collect::<TractResult<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| Err(anyhow::anyhow!("packing a {OP_NAME} kernel panicked")))
                })
                .collect::<TractResult<Vec<Vec<_>>>>()
                .map(|chunks| chunks.into_iter().flatten().collect())
        })?;
        Ok(WinogradConv {
            tile,
            input_channels: inputs,
            output_channels: outputs,
            activation,
            bias: Arc::new(bias),
            kernel: Arc::new(kernel),
            mmm,
            packing,
            input_format,
        })
    }

    fn convolve<const A: usize, const M: usize, T: Transforms<A, M>>(
        &self,
        input: &[f32],
        height: usize,
        width: usize,
    ) -> TractResult<Tensor> {
        let geometry = Geometry::new(self, height, width, M);
        // SAFETY: every value is written by the output transform.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&[self.output_channels, height, width])? };
        {
            let mut plain = output.try_as_plain_ram_mut()?;
            let target = Shared(plain.as_slice_mut::<f32>()?.as_mut_ptr());
            BUFFERS.with_borrow_mut(|buffers| self.run::<A, M, T>(&geometry, input, &target, buffers))?;
        }
        Ok(output)
    }

    /// Runs the three steps, each split over tract's threads: input
    /// transform, one matrix product per point, output transform.
    fn run<const A: usize, const M: usize, T: Transforms<A, M>>(
        &self,
        geometry: &Geometry,
        input: &[f32],
        output: &Shared,
        buffers: &mut Buffers,
    ) -> TractResult<()> {
        let (inputs, outputs, points) = (self.input_channels, self.output_channels, A * A);
        // The transformed input, in the packed layout the matrix kernel
        // reads: per point, panels of `r` tiles with the r values of one
        // input channel side by side.
        let len = points * geometry.point_len;
        let align = self.input_format.alignment().max(size_of::<f32>());
        // SAFETY: every value the kernel reads is written below: the transforms, and zeros in the padding.
        unsafe { buffers.transformed.ensure_size_and_align(len * size_of::<f32>(), align) };
        let bytes = buffers.transformed.as_bytes_mut();
        // SAFETY: the blob is aligned for f32 and has room for at least `len` of them.
        let values = unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<f32>(), len) };
        geometry.zero_padding(values, inputs);
        let transformed = Shared(values.as_mut_ptr());
        let plane_len = geometry.height * geometry.width;
        split_over_threads(inputs, |channels| {
            let mut padded = Vec::new();
            for channel in channels {
                let plane = &input[channel * plane_len..][..plane_len];
                // SAFETY: each channel writes its own values of each panel.
                unsafe { T::transform_input(plane, geometry, channel, &mut padded, &transformed) };
            }
            Ok(())
        })?;

        // One matrix product per point, (outputs × inputs) · (inputs × tiles),
        // into products[output][point][tile]: the output transform of one
        // channel then reads one block of memory.
        let len = outputs * points * geometry.tiles;
        if buffers.products.len() < len {
            // SAFETY: every value read is first written by the products.
            buffers.products = unsafe { Tensor::uninitialized::<f32>(&[len])? };
        }
        let products = &buffers.products;
        let fact =
            PackedExoticFact { format: Box::new(self.input_format.clone()), mn: geometry.tiles.to_dim(), k: inputs };
        let store = unsafe { self.mmm.c_view(Some(0), Some(1)) };
        let (shape, strides) = ([outputs, geometry.tiles], [(points * geometry.tiles) as isize, 1]);
        let first = transformed.0 as usize;
        split_over_threads(points, |range| {
            for point in range {
                let panels = PanelsAt {
                    fact: fact.clone(),
                    address: first + point * geometry.point_len * size_of::<f32>(),
                    panel_bytes: geometry.panel_len * size_of::<f32>(),
                    mn: geometry.tiles,
                };
                // SAFETY: the view of the point's (outputs × tiles) matrix lies inside the buffer.
                let view = unsafe {
                    TensorView::from_bytes(
                        products,
                        (point * geometry.tiles * size_of::<f32>()) as isize,
                        &shape,
                        &strides,
                    )
                };
                // SAFETY: the packed operands hold `outputs` × `inputs` and
                // `inputs` × `tiles` values in the kernel's formats, and
                // each point writes its own values.
                unsafe {
                    self.mmm.run(
                        outputs,
                        geometry.tiles,
                        &[
                            FusedSpec::AddMatMul {
                                a: AsInputValue::Borrowed(&*self.kernel[point]),
                                b: AsInputValue::Borrowed(&panels),
                                packing: self.packing,
                            },
                            FusedSpec::Store(store.wrap(&view)),
                        ],
                    )?;
                }
            }
            Ok(())
        })?;

        let products = products.try_as_plain_ram()?;
        let products = &products.as_slice::<f32>()?[..len];
        split_over_threads(outputs, |channels| {
            for channel in channels {
                let sums = &products[channel * points * geometry.tiles..][..points * geometry.tiles];
                // SAFETY: the plane of `channel` lies inside the output, and
                // each channel's plane is written by one thread.
                unsafe {
                    let plane = output.0.add(channel * plane_len);
                    T::transform_output(sums, geometry, self.bias[channel], self.activation, plane);
                }
            }
            Ok(())
        })
    }
}

thread_local! {
    /// The transformed input and the products of the last convolution on
    /// this thread, kept for the next one. Allocating them anew took page faults
    /// and zeroing of several megabytes per layer.
    static BUFFERS: RefCell<Buffers> = RefCell::default();
}

#[derive(Default)]
struct Buffers {
    transformed: Blob,
    products: Tensor,
}

/// The tiling of one input, and the packed layout of its transformed values.
struct Geometry {
    height: usize,
    width: usize,
    /// Tiles down and across.
    tile_rows: usize,
    tile_columns: usize,
    tiles: usize,
    /// Tiles per panel of the packed layout.
    panel_width: usize,
    /// Values per panel, padding included.
    panel_len: usize,
    /// Values per point of the transformed input.
    point_len: usize,
}

impl Geometry {
    fn new(op: &WinogradConv, height: usize, width: usize, m: usize) -> Geometry {
        let (tile_rows, tile_columns) = (height.div_ceil(m), width.div_ceil(m));
        let tiles = tile_rows * tile_columns;
        let (panel_width, panel_len) = (op.input_format.r, op.input_format.single_panel_len(op.input_channels));
        Geometry {
            height,
            width,
            tile_rows,
            tile_columns,
            tiles,
            panel_width,
            panel_len,
            point_len: tiles.div_ceil(panel_width) * panel_len,
        }
    }

    /// Zeroes what no tile writes: each panel's values past the last input channel.
    fn zero_padding(&self, values: &mut [f32], inputs: usize) {
        for point in values.chunks_exact_mut(self.point_len) {
            for panel in point.chunks_exact_mut(self.panel_len) {
                panel[inputs * self.panel_width..].fill(0.0);
            }
        }
    }
}

/// A buffer that the threads of one convolution write at once, each its own values.
struct Shared(*mut f32);

// SAFETY: the threads write disjoint values, and the convolution joins them
// before it reads the values.
unsafe impl Sync for Shared {}

/// Tiles transformed at once, one per vector lane.
const LANES: usize = 8;

/// One value of `LANES` tiles.
type Lanes = [f32; LANES];

/// Returns `Σ c · v` over the terms, lane by lane.
#[inline(always)]
fn mix<const N: usize>(terms: [(f32, &Lanes); N]) -> Lanes {
    let mut sum = [0.0; LANES];
    for (c, v) in terms {
        sum.iter_mut().zip(v).for_each(|(s, &v)| *s += c * v);
    }
    sum
}

// The one-dimensional transforms, written out so that every coefficient is a
// constant. Loops over the matrices left the compiler a branch per zero
// coefficient and loops a few tiles long: the transforms of the first
// version took twice as long as the matrix products.

/// The one-dimensional transforms of one F(m, 3), with `A = m + 2` points.
trait Transforms<const A: usize, const M: usize> {
    /// `Bᵀ d`.
    fn input(d: &[Lanes; A], out: &mut [Lanes; A]);
    /// `Aᵀ m`.
    fn output(m: &[Lanes; A], out: &mut [Lanes; M]);

    /// Runs [`transform_input`] with the widest vectors of this CPU.
    ///
    /// # Safety
    /// As for [`transform_input`].
    unsafe fn transform_input(
        plane: &[f32],
        geometry: &Geometry,
        channel: usize,
        padded: &mut Vec<f32>,
        target: &Shared,
    ) where
        Self: Sized,
    {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, and the caller keeps the rest.
            return unsafe { transform_input_avx2::<A, M, Self>(plane, geometry, channel, padded, target) };
        }
        // SAFETY: as for this function.
        unsafe { transform_input::<A, M, Self>(plane, geometry, channel, padded, target) }
    }

    /// Runs [`transform_output`] with the widest vectors of this CPU.
    ///
    /// # Safety
    /// As for [`transform_output`].
    unsafe fn transform_output(sums: &[f32], geometry: &Geometry, bias: f32, activation: Activation, plane: *mut f32)
    where
        Self: Sized,
    {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, and the caller keeps the rest.
            return unsafe { transform_output_avx2::<A, M, Self>(sums, geometry, bias, activation, plane) };
        }
        // SAFETY: as for this function.
        unsafe { transform_output::<A, M, Self>(sums, geometry, bias, activation, plane) }
    }
}

// edgedet is built for the x86_64 baseline, whose vectors hold four f32.
// Compiled for AVX2, the transforms run on eight at a time.

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transform_input_avx2<const A: usize, const M: usize, T: Transforms<A, M>>(
    plane: &[f32],
    geometry: &Geometry,
    channel: usize,
    padded: &mut Vec<f32>,
    target: &Shared,
) {
    // SAFETY: as for this function.
    unsafe { transform_input::<A, M, T>(plane, geometry, channel, padded, target) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transform_output_avx2<const A: usize, const M: usize, T: Transforms<A, M>>(
    sums: &[f32],
    geometry: &Geometry,
    bias: f32,
    activation: Activation,
    plane: *mut f32,
) {
    // SAFETY: as for this function.
    unsafe { transform_output::<A, M, T>(sums, geometry, bias, activation, plane) }
}

/// F(2, 3).
struct F2;

impl Transforms<4, 2> for F2 {
    #[inline(always)]
    fn input(d: &[Lanes; 4], out: &mut [Lanes; 4]) {
        *out = [
            mix([(1., &d[0]), (-1., &d[2])]),
            mix([(1., &d[1]), (1., &d[2])]),
            mix([(-1., &d[1]), (1., &d[2])]),
            mix([(1., &d[1]), (-1., &d[3])]),
        ];
    }

    #[inline(always)]
    fn output(m: &[Lanes; 4], out: &mut [Lanes; 2]) {
        *out = [mix([(1., &m[0]), (1., &m[1]), (1., &m[2])]), mix([(1., &m[1]), (-1., &m[2]), (-1., &m[3])])];
    }
}

/// F(4, 3).
struct F4;

impl Transforms<6, 4> for F4 {
    #[inline(always)]
    fn input(d: &[Lanes; 6], out: &mut [Lanes; 6]) {
        *out = [
            mix([(4., &d[0]), (-5., &d[2]), (1., &d[4])]),
            mix([(-4., &d[1]), (-4., &d[2]), (1., &d[3]), (1., &d[4])]),
            mix([(4., &d[1]), (-4., &d[2]), (-1., &d[3]), (1., &d[4])]),
            mix([(-2., &d[1]), (-1., &d[2]), (2., &d[3]), (1., &d[4])]),
            mix([(2., &d[1]), (-1., &d[2]), (-2., &d[3]), (1., &d[4])]),
            mix([(4., &d[1]), (-5., &d[3]), (1., &d[5])]),
        ];
    }

    #[inline(always)]
    fn output(m: &[Lanes; 6], out: &mut [Lanes; 4]) {
        *out = [
            mix([(1., &m[0]), (1., &m[1]), (1., &m[2]), (1., &m[3]), (1., &m[4])]),
            mix([(1., &m[1]), (-1., &m[2]), (2., &m[3]), (-2., &m[4])]),
            mix([(1., &m[1]), (1., &m[2]), (4., &m[3]), (4., &m[4])]),
            mix([(1., &m[1]), (-1., &m[2]), (8., &m[3]), (-8., &m[4]), (1., &m[5])]),
        ];
    }
}

/// Applies `T`'s one-dimensional transforms down the columns of a tile, then
/// along its rows: `Bᵀ d B` for the input, `Aᵀ m A` for the output.
///
/// A macro rather than a function taking the transform: the compiler did not
/// inline a transform passed as a function value, and the calls and the
/// copies of their arrays took more time than the arithmetic.
macro_rules! transform_2d {
    ($one:expr, $x:expr, $out:expr, $a:expr, $b:expr) => {{
        let (x, out) = ($x, $out);
        let mut column = [[0.0; LANES]; $a];
        let mut transformed = [[0.0; LANES]; $b];
        // middle[a][j]: row a of the columns' transforms.
        let mut middle = [[[0.0; LANES]; $a]; $b];
        for j in 0..$a {
            for i in 0..$a {
                column[i] = x[i][j];
            }
            $one(&column, &mut transformed);
            for a in 0..$b {
                middle[a][j] = transformed[a];
            }
        }
        for a in 0..$b {
            $one(&middle[a], &mut out[a]);
        }
    }};
}

/// Transforms the tiles of one input channel and writes the points into their panels.
///
/// # Safety
/// `target` must hold `A²` points of `geometry.point_len` values, and no other
/// thread may write this channel's values.
#[inline(always)]
unsafe fn transform_input<const A: usize, const M: usize, T: Transforms<A, M>>(
    plane: &[f32],
    geometry: &Geometry,
    channel: usize,
    padded: &mut Vec<f32>,
    target: &Shared,
) {
    let Geometry { width, tile_rows, tile_columns, panel_width, panel_len, .. } = *geometry;
    // The plane with its zero border and zeros past the last tile, so that no
    // tile needs a bounds test, split by column into M phases: padded column
    // x is value x / M of phase x % M. Value j of a tile's row then comes
    // from phase j % M at the tile's column + j / M. So the same value of
    // consecutive tiles sits in consecutive memory, one vector load for all
    // lanes. Gathering value by value took half the transform's time.
    let (rows, phase_width) = (tile_rows * M + 2, tile_columns + 1);
    let phase_len = rows * phase_width;
    padded.clear();
    padded.resize(M * phase_len, 0.0);
    for (y, source) in plane.chunks_exact(width).enumerate() {
        for (x, &value) in source.iter().enumerate() {
            let x = x + 1;
            padded[x % M * phase_len + (y + 1) * phase_width + x / M] = value;
        }
    }
    // Where value (i, j) of the tile at (row, column) is.
    let at = |row: usize, column: usize, i: usize, j: usize| {
        j % M * phase_len + (row * M + i) * phase_width + column + j / M
    };
    let tiles = geometry.tiles;
    // Tiles go through in runs that never cross a panel, so that each point
    // of a run is one store of consecutive values. Stores lane by lane took
    // half the time of this function.
    for first in (0..tiles.div_ceil(panel_width) * panel_width).step_by(panel_width) {
        for start in (first..first + panel_width).step_by(LANES) {
            let count = (first + panel_width - start).min(LANES);

            // Lanes past the last tile repeat it. Their values go to the
            // panel's lanes past the last tile, where they meet only
            // products that no output reads.
            let last = (start + LANES - 1).min(tiles - 1);
            let (row, column) = (start / tile_columns, start % tile_columns);
            let mut tile = [[[0.0; LANES]; A]; A];
            if last / tile_columns == row && start + LANES - 1 == last {
                for (i, values) in tile.iter_mut().enumerate() {
                    for (j, lanes) in values.iter_mut().enumerate() {
                        let first = at(row, column, i, j);
                        lanes.copy_from_slice(&padded[first..first + LANES]);
                    }
                }
            } else {
                let tiles: [(usize, usize); LANES] = std::array::from_fn(|lane| {
                    let tile = (start + lane).min(last);
                    (tile / tile_columns, tile % tile_columns)
                });
                for (i, values) in tile.iter_mut().enumerate() {
                    for (j, lanes) in values.iter_mut().enumerate() {
                        for (lane, &(row, column)) in lanes.iter_mut().zip(&tiles) {
                            *lane = padded[at(row, column, i, j)];
                        }
                    }
                }
            }

            let mut points = [[[0.0; LANES]; A]; A];
            transform_2d!(T::input, &tile, &mut points, A, A);

            let offset = first / panel_width * panel_len + channel * panel_width + (start - first);
            // SAFETY: each point's run lies in its panel, at this channel's values.
            unsafe {
                let target = target.0.add(offset);
                match count {
                    LANES => store_runs::<A, LANES>(&points, target, geometry.point_len),
                    4 => store_runs::<A, 4>(&points, target, geometry.point_len),
                    _ => {
                        for (index, point) in points.iter().flatten().enumerate() {
                            std::ptr::copy_nonoverlapping(
                                point.as_ptr(),
                                target.add(index * geometry.point_len),
                                count,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Stores the first `N` lanes of every point, point `i` at `target + i · point_len`.
///
/// # Safety
/// Every run must lie inside the transformed input.
#[inline(always)]
unsafe fn store_runs<const A: usize, const N: usize>(points: &[[Lanes; A]; A], target: *mut f32, point_len: usize) {
    for (index, point) in points.iter().flatten().enumerate() {
        // SAFETY: as for this function; N ≤ LANES.
        unsafe { std::ptr::copy_nonoverlapping(point.as_ptr(), target.add(index * point_len), N) };
    }
}

/// Transforms the products of one output channel back into its plane, with
/// bias and activation.
///
/// # Safety
/// `plane` must point to the channel's plane of `height × width` values, and
/// no other thread may write it.
#[inline(always)]
unsafe fn transform_output<const A: usize, const M: usize, T: Transforms<A, M>>(
    sums: &[f32],
    geometry: &Geometry,
    bias: f32,
    activation: Activation,
    plane: *mut f32,
) {
    let Geometry { height, width, tile_columns, .. } = *geometry;
    let tiles = geometry.tiles;
    for first in (0..tiles).step_by(LANES) {
        let count = (tiles - first).min(LANES);
        let mut values = [[[0.0; LANES]; A]; A];
        for (a, row) in values.iter_mut().enumerate() {
            for (b, lanes) in row.iter_mut().enumerate() {
                let source = &sums[(a * A + b) * tiles + first..];
                match source.first_chunk::<LANES>() {
                    Some(all) if count == LANES => *lanes = *all,
                    _ => lanes[..count].copy_from_slice(&source[..count]),
                }
            }
        }
        let mut tile = [[[0.0; LANES]; M]; M];
        transform_2d!(T::output, &values, &mut tile, A, M);
        for values in tile.iter_mut().flatten() {
            match activation {
                Activation::Linear => values.iter_mut().for_each(|v| *v += bias),
                Activation::Leaky(alpha) => values.iter_mut().for_each(|v| {
                    let x = *v + bias;
                    *v = if x < 0.0 { x * alpha } else { x };
                }),
                Activation::Mish => values.iter_mut().for_each(|v| *v = mish::mish(*v + bias)),
            }
        }
        for lane in 0..count {
            let tile_row = (first + lane) / tile_columns;
            let x = (first + lane) % tile_columns * M;
            let columns = (width - x).min(M);
            for (r, row) in tile.iter().enumerate() {
                let y = tile_row * M + r;
                if y >= height {
                    break;
                }
                // SAFETY: (y, x..x + columns) lies inside the plane.
                let target = unsafe { std::slice::from_raw_parts_mut(plane.add(y * width + x), columns) };
                target.iter_mut().zip(row).for_each(|(t, values)| *t = values[lane]);
            }
        }
    }
}

/// Runs `work` on `count` items, one contiguous range per thread of tract's executor.
fn split_over_threads(count: usize, work: impl Fn(Range<usize>) -> TractResult<()> + Sync) -> TractResult<()> {
    match current_tract_executor() {
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 && count > 1 => {
            let parts = pool.current_num_threads().min(count);
            pool.install(|| {
                (0..parts).into_par_iter().try_for_each(|part| work(count * part / parts..count * (part + 1) / parts))
            })
        }
        _ => work(0..count),
    }
}

/// Packed panels inside a buffer the convolution owns, which tract's
/// `EagerPackedInput` (an `Arc<Blob>` per operand) cannot borrow.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct PanelsAt {
    fact: PackedExoticFact,
    address: usize,
    panel_bytes: usize,
    mn: usize,
}

impl fmt::Display for PanelsAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Winograd points {} (mn={} k={})", self.fact.format, self.mn, self.fact.k)
    }
}

impl MMMInputValue for PanelsAt {
    fn format(&self) -> &dyn MMMInputFormat {
        &*self.fact.format
    }

    fn scratch_panel_buffer_layout(&self) -> Option<Layout> {
        None
    }

    fn panel_bytes(&self, i: usize, _buffer: Option<*mut u8>) -> TractResult<*const u8> {
        Ok((self.address + i * self.panel_bytes) as *const u8)
    }

    fn mn(&self) -> usize {
        self.mn
    }

    fn k(&self) -> usize {
        self.fact.k
    }

    fn exotic_fact(&self) -> &dyn ExoticFact {
        &self.fact
    }

    fn extract_at_mn_f16(&self, _mn: usize, _slice: &mut [f16]) -> TractResult<()> {
        bail!("{OP_NAME} reads its transformed input as packed panels only")
    }

    fn extract_at_mn_f32(&self, _mn: usize, _slice: &mut [f32]) -> TractResult<()> {
        bail!("{OP_NAME} reads its transformed input as packed panels only")
    }
}

impl Op for WinogradConv {
    fn name(&self) -> StaticName {
        OP_NAME.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?}, {}→{} channels, {:?}, kernel {}",
            self.tile,
            self.input_channels,
            self.output_channels,
            self.activation,
            self.mmm.name()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for WinogradConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let (&[1, channels, height, width] | &[channels, height, width]) = input.shape() else {
            bail!("{OP_NAME} takes NCHW inputs of batch 1 or CHW inputs, found shape {:?}", input.shape())
        };
        ensure!(
            channels == self.input_channels,
            "{OP_NAME}: input of {channels} channels, expected {}",
            self.input_channels
        );
        let values = input.try_as_plain_ram()?;
        let values = values.as_slice::<f32>()?;
        let mut output = match self.tile {
            Tile::F2 => self.convolve::<4, 2, F2>(values, height, width)?,
            Tile::F4 => self.convolve::<6, 4, F4>(values, height, width)?,
        };
        if input.rank() == 4 {
            output.insert_axis(0)?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for WinogradConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        ensure!(matches!(shape.rank(), 3 | 4), "{OP_NAME} takes NCHW or CHW inputs, found {:?}", inputs[0]);
        let mut output: TVec<TDim> = shape.iter().cloned().collect();
        output[shape.rank() - 3] = self.output_channels.to_dim();
        Ok(tvec!(f32::fact(output)))
    }

    as_op!();
}

/// Returns whether the environment leaves the replacement on (see [`reads_on`]).
pub fn switched_on() -> bool {
    std::env::var_os(SWITCH).is_none_or(|value| reads_on(&value.to_string_lossy()))
}

/// Returns whether a value of `EDGEDET_WINOGRAD` leaves the replacement on:
/// `off`, `0`, `false` and `no` turn it off. Another value than these and
/// `on`, `1`, `true`, `yes` logs a warning once and leaves it on.
fn reads_on(value: &str) -> bool {
    let value = value.trim().to_ascii_lowercase();
    match value.as_str() {
        "off" | "0" | "false" | "no" => false,
        "" | "on" | "1" | "true" | "yes" => true,
        _ => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                log::warn!(
                    "invalid {SWITCH}={value:?}: expected off (or 0, false, no) to keep tract's convolutions, or on; Winograd stays on"
                );
            });
            true
        }
    }
}

/// Replaces every float 3×3 convolution of stride 1 with padding 1 with a
/// [`WinogradConv`], in a decluttered f32 model. The input must be NCHW of
/// batch 1 or CHW. A leaky or Mish activation that only the convolution
/// feeds goes into the op.
/// Returns how many it replaced. Grouped, dilated and strided convolutions,
/// other kernels, paddings and layouts keep tract's op.
///
/// # Errors
/// A kernel that cannot be transformed, or tract fails to apply a patch.
pub fn replace_convolutions(model: &mut TypedModel) -> TractResult<usize> {
    if !switched_on() {
        return Ok(0);
    }
    let mut found = Vec::new();
    for node in model.nodes() {
        let Some(conv) = node.op_as::<Conv>() else { continue };
        let Some(op) = winograd_for(model, node, conv)? else { continue };
        // The activation goes into the op when the convolution feeds nothing else.
        let output = OutletId::new(node.id, 0);
        let successors = model.outlet_successors(output);
        let activation = match successors {
            [only] if !model.output_outlets()?.contains(&output) => {
                let next = model.node(only.node);
                activation_of(next).map(|activation| (activation, OutletId::new(next.id, 0)))
            }
            _ => None,
        };
        found.push((node.id, op, activation));
    }
    for (id, op, activation) in &found {
        let node = model.node(*id);
        let (op, last) = match activation {
            Some((activation, outlet)) => (WinogradConv { activation: *activation, ..op.clone() }, *outlet),
            None => (op.clone(), OutletId::new(*id, 0)),
        };
        let name = node.name.clone();
        let mut patch = TypedModelPatch::new(format!("{name} as {OP_NAME}"));
        let tap = patch.tap_model(model, node.inputs[0])?;
        let wired = patch.wire_node(format!("{name}.winograd"), op, &[tap])?;
        patch.shunt_outside(model, last, wired[0])?;
        patch.apply(model).with_context(|| format!("replacing {name} with {OP_NAME}"))?;
    }
    model.compact()?;
    Ok(found.len())
}

/// Returns the activation of a node that [`WinogradConv`] can take in.
fn activation_of(node: &TypedNode) -> Option<Activation> {
    let op = node.op_as::<ElementWiseOp>()?;
    if let Some(leaky) = op.0.downcast_ref::<LeakyRelu>() {
        Some(Activation::Leaky(leaky.alpha))
    } else {
        op.0.downcast_ref::<Mish>().map(|_| Activation::Mish)
    }
}

/// Returns the op standing in for `conv`, or none where it does not fit.
fn winograd_for(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<WinogradConv>> {
    let spec = &conv.pool_spec;
    let input = model.outlet_fact(node.inputs[0])?;
    let fits = conv.q_params.is_none()
        && conv.group == 1
        && conv.kernel_fmt == KernelFormat::OIHW
        && matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        && spec.kernel_shape[..] == [3, 3]
        && spec.strides().iter().all(|&s| s == 1)
        && spec.dilations().iter().all(|&d| d == 1)
        && input.datum_type == f32::datum_type()
        && node.inputs.len() == 3;
    if !fits {
        return Ok(None);
    }

    let (Some(&[1, channels, height, width]) | Some(&[channels, height, width])) = input.shape.as_concrete() else {
        return Ok(None);
    };
    if input.rank() != if spec.data_format == DataFormat::NCHW { 4 } else { 3 } {
        return Ok(None);
    }
    let padding = spec.computed_padding(&[height, width]);
    if padding.iter().any(|dim| dim.pad_before != 1 || dim.pad_after != 1) {
        return Ok(None);
    }

    let (Some(kernel), Some(bias)) =
        (model.outlet_fact(node.inputs[1])?.konst.clone(), model.outlet_fact(node.inputs[2])?.konst.clone())
    else {
        return Ok(None);
    };
    let outputs = spec.output_channels;
    if kernel.shape() != [outputs, channels, 3, 3] || kernel.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let bias = floats(&bias)?;
    let bias = match bias.len() {
        1 => vec![bias[0]; outputs],
        n if n == outputs => bias,
        _ => return Ok(None),
    };

    let tile = Tile::for_input(height, width);
    let tiles = height.div_ceil(tile.outputs()) * width.div_ceil(tile.outputs());
    WinogradConv::new(&kernel, bias, Activation::Linear, tile, tiles).map(Some)
}

/// Transforms 3×3 kernels into `G g Gᵀ`, each kernel's points side by side.
///
/// In f64, so that the kernel's own rounding is the only one.
fn transform_kernels(g: &[[f64; 3]], taps: &[f32], target: &mut [f32]) {
    let points = g.len();
    for (taps, target) in taps.chunks_exact(9).zip(target.chunks_exact_mut(points * points)) {
        let mut left = [[0f64; 3]; 6];
        for (row, g_row) in left.iter_mut().zip(g) {
            for (x, value) in row.iter_mut().enumerate() {
                *value = (0..3).map(|y| g_row[y] * f64::from(taps[y * 3 + x])).sum();
            }
        }
        for (a, row) in left[..points].iter().enumerate() {
            for (b, g_row) in g.iter().enumerate() {
                target[a * points + b] = (0..3).map(|x| row[x] * g_row[x]).sum::<f64>() as f32;
            }
        }
    }
}

/// Returns the values of a tensor of any number type, as f32.
fn floats(tensor: &Tensor) -> TractResult<Vec<f32>> {
    let tensor = tensor.cast_to::<f32>()?;
    let plain = tensor.try_as_plain_ram()?;
    Ok(plain.as_slice::<f32>()?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::cnn::{PaddingSpec, PoolSpec};
    use tract_linalg::multithread::multithread_tract_scope;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0).collect()
    }

    /// One float convolution with bias as darknet's converter writes it, and
    /// the activation `then` wires after it.
    struct Layer {
        inputs: usize,
        outputs: usize,
        height: usize,
        width: usize,
        kernel: usize,
        stride: usize,
        batch_axis: bool,
    }

    impl Layer {
        fn new(inputs: usize, outputs: usize, height: usize, width: usize) -> Layer {
            Layer { inputs, outputs, height, width, kernel: 3, stride: 1, batch_axis: true }
        }

        fn input_shape(&self) -> Vec<usize> {
            let chw = [self.inputs, self.height, self.width];
            if self.batch_axis {
                [&[1], &chw[..]].concat()
            } else {
                chw.to_vec()
            }
        }

        fn model(&self, then: impl FnOnce(&mut TypedModel, OutletId) -> OutletId) -> TypedModel {
            let mut model = TypedModel::default();
            let input = model.add_source("input", f32::fact(self.input_shape())).unwrap();
            let k = self.kernel;
            let kernel = tensor1(&values(self.outputs * self.inputs * k * k, 1))
                .into_shape(&[self.outputs, self.inputs, k, k])
                .unwrap();
            let kernel = model.add_const("l0.weight", kernel).unwrap();
            let bias = model.add_const("l0.bias", tensor1(&values(self.outputs, 2))).unwrap();
            let pool_spec = PoolSpec {
                data_format: if self.batch_axis { DataFormat::NCHW } else { DataFormat::CHW },
                kernel_shape: tvec![k, k],
                padding: PaddingSpec::Explicit(tvec![k / 2, k / 2], tvec![k / 2, k / 2]),
                dilations: None,
                strides: Some(tvec![self.stride, self.stride]),
                input_channels: self.inputs,
                output_channels: self.outputs,
            };
            let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: 1, q_params: None };
            let output = model.wire_node("l0.conv", conv, &[input, kernel, bias]).unwrap()[0];
            let output = then(&mut model, output);
            model.select_output_outlets(&[output]).unwrap();
            model.into_decluttered().unwrap()
        }

        fn input(&self) -> Tensor {
            let shape = self.input_shape();
            tensor1(&values(shape.iter().product(), 3)).into_shape(&shape).unwrap()
        }
    }

    fn leaky(model: &mut TypedModel, x: OutletId) -> OutletId {
        model.wire_node("l0.leaky", tract_core::ops::nn::leaky_relu(0.1), &[x]).unwrap()[0]
    }

    fn run(model: TypedModel, input: &Tensor, threads: usize) -> Tensor {
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let executor = if threads > 1 { Executor::multithread(threads) } else { Executor::SingleThread };
        let outputs = multithread_tract_scope(executor, || plan.run(tvec![input.clone().into()])).unwrap();
        outputs[0].clone().into_tensor()
    }

    /// Runs `layer` through tract's convolution and through [`WinogradConv`],
    /// on one and two threads, and returns the largest difference and the
    /// largest magnitude of tract's output.
    fn compare(layer: &Layer, then: impl Fn(&mut TypedModel, OutletId) -> OutletId + Copy, tile: Tile) -> (f32, f32) {
        let input = layer.input();
        let expected = run(layer.model(then), &input, 1);
        let mut model = layer.model(then);
        assert_eq!(replace_convolutions(&mut model).unwrap(), 1);
        let op = model.nodes().iter().find_map(|node| node.op_as::<WinogradConv>()).expect("a WinogradConv");
        assert_eq!(op.tile, tile);
        let mut worst = 0f32;
        for threads in [1, 2] {
            let found = run(model.clone(), &input, threads);
            assert_eq!(found.shape(), expected.shape());
            let (found, expected) = (found.try_as_plain_ram().unwrap(), expected.try_as_plain_ram().unwrap());
            let pairs = found.as_slice::<f32>().unwrap().iter().zip(expected.as_slice::<f32>().unwrap());
            worst = pairs.fold(worst, |worst, (a, b)| worst.max((a - b).abs()));
        }
        let plain = expected.try_as_plain_ram().unwrap();
        let largest = plain.as_slice::<f32>().unwrap().iter().fold(0f32, |m, v| m.max(v.abs()));
        (worst, largest)
    }

    #[test]
    fn matches_tract_convolution() {
        let cases = [
            // F(4×4) on a larger plane: 13×13 tiles with a partial last row and column.
            (Layer::new(11, 19, 52, 50), Tile::F4),
            // F(4×4): 7×7 tiles, channel counts that fill no panel.
            (Layer::new(20, 13, 26, 26), Tile::F4),
            // F(4×4) with a partial last tile row and column.
            (Layer::new(9, 17, 25, 30), Tile::F4),
            // F(2×2): 7×7 tiles on 13×13, as in yolov4-tiny's last layers.
            (Layer::new(16, 24, 13, 13), Tile::F2),
            // F(2×2) on a plane smaller than one panel of tiles.
            (Layer::new(5, 3, 5, 7), Tile::F2),
            (Layer { batch_axis: false, ..Layer::new(12, 8, 24, 24) }, Tile::F4),
        ];
        for (layer, tile) in &cases {
            for (name, then) in [
                ("linear", (|_: &mut TypedModel, x| x) as fn(&mut TypedModel, OutletId) -> OutletId),
                ("leaky", leaky),
                ("mish", |model, x| model.wire_node("l0.mish", mish::op(), &[x]).unwrap()[0]),
            ] {
                let (worst, largest) = compare(layer, then, *tile);
                let shape = layer.input_shape();
                assert!(largest > 1.0, "{shape:?} {name}: outputs too small to test ({largest})");
                assert!(
                    worst <= 2e-5 * largest,
                    "{shape:?} {name}: differs from tract by {worst} (outputs up to {largest})"
                );
            }
        }
    }

    #[test]
    fn takes_in_the_activation_it_alone_feeds() {
        let layer = Layer::new(8, 8, 16, 16);
        let mut model = layer.model(leaky);
        replace_convolutions(&mut model).unwrap();
        let names: Vec<&str> = model.nodes().iter().map(|node| node.name.as_str()).collect();
        assert_eq!(names, ["input", "l0.conv.winograd"]);
        let op = model.nodes()[1].op_as::<WinogradConv>().unwrap();
        assert_eq!(op.activation, Activation::Leaky(0.1));

        // A convolution that also feeds another node keeps its activation apart.
        let mut model = layer.model(|model, x| {
            let activated = leaky(model, x);
            model.wire_node("l1.add", tract_core::ops::math::add(), &[x, activated]).unwrap()[0]
        });
        replace_convolutions(&mut model).unwrap();
        let op = model.nodes().iter().find_map(|node| node.op_as::<WinogradConv>()).unwrap();
        assert_eq!(op.activation, Activation::Linear);
        assert!(model.nodes().iter().any(|node| node.op_as::<ElementWiseOp>().is_some()));
    }

    #[test]
    fn other_convolutions_stay_with_tract() {
        let strided = Layer { stride: 2, ..Layer::new(8, 8, 16, 16) };
        let pointwise = Layer { kernel: 1, ..Layer::new(8, 8, 16, 16) };
        for layer in [strided, pointwise] {
            let mut model = layer.model(leaky);
            assert_eq!(replace_convolutions(&mut model).unwrap(), 0);
            assert!(!model.nodes().iter().any(|node| node.op_is::<WinogradConv>()));
        }
    }

    #[test]
    fn switch_reads_off_and_on() {
        for value in ["off", "OFF", " Off ", "0", "false", "no"] {
            assert!(!reads_on(value), "{SWITCH}={value:?}");
        }
        for value in ["on", "1", "true", "yes", "", "bogus"] {
            assert!(reads_on(value), "{SWITCH}={value:?}");
        }
    }

    #[test]
    fn tile_follows_the_input_size() {
        assert_eq!(Tile::for_input(13, 13), Tile::F2);
        assert_eq!(Tile::for_input(20, 20), Tile::F2);
        assert_eq!(Tile::for_input(24, 24), Tile::F4);
        assert_eq!(Tile::for_input(26, 26), Tile::F4);
        assert_eq!(Tile::for_input(104, 104), Tile::F4);
    }
}
